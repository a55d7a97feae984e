"""test_docs_examples.py: every shell example of docs/api.md works as written.

Run from the repository root with Debian's Python:
    /usr/bin/python3 -m unittest -v tests/api/test_docs_examples.py

The examples are run in order with bash against a daemon started as the page
says (`--data-root /tmp`), with three substitutions only: the daemon's port for
8080 (a free one), a temporary folder for /tmp, and the build folder for build/.
`<!-- docs-test: wait for job 1 -->` in the page makes the test wait for job 1 to
complete before the next example (the page's metrics examples assume a finished
job). Every block must exit 0; every JSON line it prints (a response, or an
event's data) must parse and must not be an error ({"error": {...}}).
"""

import json
import os
import re
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("RESNETD_BUILD_DIR") or os.path.join(ROOT, "build"))
DOC = os.path.join(ROOT, "docs", "api.md")


def blocks(text):
    """[('sh', code) | ('wait', job)] in page order."""
    out = []
    for m in re.finditer(r"```sh\n(.*?)```|<!-- docs-test: wait for job (\d+) -->", text, re.S):
        out.append(("sh", m[1]) if m[1] is not None else ("wait", int(m[2])))
    return out


class DocsExamples(unittest.TestCase):
    def test_every_example_runs(self):
        with open(DOC) as f:
            page = f.read()
        steps = blocks(page)
        self.assertGreater(len([s for s in steps if s[0] == "sh"]), 10)
        with tempfile.TemporaryDirectory(prefix="resnetd-docs-") as tmp:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            log = open(os.path.join(tmp, "daemon.log"), "wb")
            d = subprocess.Popen([os.path.join(BUILD, "resnetd"), "serve", "--listen",
                                  f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "var"),
                                  "--data-root", tmp], stdout=log, stderr=log, cwd=tmp)
            try:
                base = f"http://127.0.0.1:{port}"
                for _ in range(100):
                    try:
                        urllib.request.urlopen(base + "/api/health", timeout=5)
                        break
                    except OSError:
                        time.sleep(0.1)
                for kind, code in steps:
                    if kind == "wait":
                        deadline = time.time() + 300
                        while time.time() < deadline:
                            with urllib.request.urlopen(f"{base}/api/jobs/{code}") as r:
                                state = json.load(r)["state"]
                            if state not in ("queued", "running"):
                                break
                            time.sleep(0.5)
                        self.assertEqual(state, "completed")
                        continue
                    script = (code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
                              .replace("/tmp", tmp)
                              .replace("build/", BUILD.rstrip("/") + "/"))
                    r = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=ROOT,
                                       capture_output=True, text=True, timeout=300)
                    self.assertEqual(r.returncode, 0, f"{script}\n{r.stdout}\n{r.stderr}")
                    for line in r.stdout.splitlines():
                        line = line[len("data: "):] if line.startswith("data: ") else line
                        if not line.startswith("{"):
                            continue
                        v = json.loads(line)
                        self.assertFalse(isinstance(v.get("error"), dict), f"{script}\n{line}")
            finally:
                d.terminate()
                d.wait(timeout=30)
                log.close()


if __name__ == "__main__":
    unittest.main()
