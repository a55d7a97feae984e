"""test_weights_pull.py: `resnetd weights pull|list` against a loopback HTTP server.

Run from the repository root with Debian's Python:
    /usr/bin/python3 -m unittest -v tests/tools/test_weights_pull.py
The binary is $RESNETD_BUILD_DIR/resnetd (tests/run.sh sets it; default build/resnetd).

The test starts its own server (http.server in a thread, 127.0.0.1, a free port)
that honours Range requests and, per file, can cut the connection mid-file,
stall, ignore Range, answer slowly, 404 or serve a tampered byte; it records
every request (path, Range header, proxy form). A manifest written by the test
points at it. Nothing leaves the machine: the names under weights.invalid are
reached through the mirror or the test's own proxy, never resolved.

- torchvision-v1: a valid weights file (torchvision names and shapes, F16, with
  the 1000-class head) downloads, is verified and `resnetd inspect` reads it;
  a second pull makes no request; a tampered byte is refused, nothing installed
  and the part file removed; the wrong size too.
- resume: a connection cut mid-file is resumed with a Range request (within
  one pull, and by a second pull after --retries 0), and a server that ignores
  Range restarts cleanly; either way the file is byte-identical.
- a 404, a stalled server (--stall-timeout 1), a port nobody listens on (the
  message says which URL to fetch, its hash and where to put it), an entry
  without a hash (refused, no request).
- two pulls of the same name at once (two processes): one download; Ctrl-C
  keeps the part file and the next pull resumes it.
- --mirror and RESNETD_WEIGHTS_MIRROR, http_proxy, a CA bundle from
  CURL_CA_BUNDLE / SSL_CERT_FILE for an https server with a self-signed
  certificate (when the openssl command exists), MD5-pinned .h5, "imagenet",
  `weights list`.
"""

import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("RESNETD_BUILD_DIR") or os.path.join(ROOT, "build")
RESNETD = os.path.join(BUILD, "resnetd")

TV_PARAMS = 25_557_032


def torchvision_shapes(classes=1000):
    """(name, shape) of torchvision's resnet50 state dict without
    num_batches_tracked, in its order (docs/weights.md)."""
    out = [("conv1.weight", (64, 3, 7, 7))]
    out += [(f"bn1.{k}", (64,)) for k in ("weight", "bias", "running_mean", "running_var")]
    cin = 64
    for layer, (blocks, p) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512)), start=1):
        for b in range(blocks):
            pre = f"layer{layer}.{b}."
            convs = [("conv1", (p, cin, 1, 1)), ("conv2", (p, p, 3, 3)), ("conv3", (4 * p, p, 1, 1))]
            for i, (conv, shape) in enumerate(convs, start=1):
                out.append((pre + conv + ".weight", shape))
                out += [(f"{pre}bn{i}.{k}", (shape[0],))
                        for k in ("weight", "bias", "running_mean", "running_var")]
            if b == 0:
                out.append((pre + "downsample.0.weight", (4 * p, cin, 1, 1)))
                out += [(f"{pre}downsample.1.{k}", (4 * p,))
                        for k in ("weight", "bias", "running_mean", "running_var")]
            cin = 4 * p
    out += [("fc.weight", (classes, 2048)), ("fc.bias", (classes,))]
    return out


def safetensors_f16(shapes, seed=0):
    """A valid safetensors file (bytes) of F16 tensors with the given shapes; the
    values are a deterministic byte pattern (resnetd inspect reads the header)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes:
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    data = bytes((i * 7 + seed) % 251 for i in range(65536)) * (offset // 65536 + 1)
    return struct.pack("<Q", len(text)) + text + data[:offset]


def random_bytes(n, seed):
    return (hashlib.sha256(str(seed).encode()).digest() * (n // 32 + 1))[:n]


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 whose answers the test sets per path.

    files: path -> bytes. modes: path -> list of per-request modes, consumed in
    order ("normal" once the list is empty): "cut" (the headers of the whole
    answer, half the body, then the connection closes), "stall" (1000 bytes, then
    nothing until the server stops), "ignore-range" (200 and the whole file even
    to a Range request), "slow" (the body in 32 pieces over about 1.5 s)."""

    def __init__(self, tls_context=None):
        self.files, self.modes, self.requests = {}, {}, []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.answer(self)

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that hung up on purpose (a size mismatch, a stall)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls_context:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path, scheme="http"):
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def requests_for(self, path):
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def answer(self, h):
        absolute = h.path.startswith("http://")
        path = urllib.parse.urlsplit(h.path).path if absolute else h.path
        rng = h.headers.get("Range")
        with self.lock:
            self.requests.append({"path": path, "range": rng, "absolute": absolute,
                                  "host": h.headers.get("Host")})
            modes = self.modes.get(path) or []
            mode = modes.pop(0) if modes else "normal"
            data = self.files.get(path)
        if data is None:
            body = b"not here\n"
            h.send_response(404)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and mode != "ignore-range":
            start = int(m.group(1))
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        body = data[start:]
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if mode == "cut":
            h.wfile.write(body[:len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
        elif mode == "stall":
            h.wfile.write(body[:1000])
            h.wfile.flush()
            self.stopping.wait(60)
            h.close_connection = True
        elif mode == "slow":
            step = len(body) // 32 + 1
            for i in range(0, len(body), step):
                h.wfile.write(body[i:i + step])
                h.wfile.flush()
                time.sleep(0.05)
        else:
            h.wfile.write(body)

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def clean_env(**extra):
    """The environment of a pull: no proxy and no resnetd configuration from the
    caller's, so that every request stays on this machine."""
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and not k.startswith("RESNETD_")
           and k not in ("CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")}
    env.update(extra)
    return env


def entry(url, file, data, fmt="safetensors", sha256=True, md5=False, size=None, variant=None):
    return {"url": url, "file": file, "size": len(data) if size is None else size,
            "sha256": hashlib.sha256(data).hexdigest() if sha256 else None,
            "md5": hashlib.md5(data).hexdigest() if md5 else None,
            "format": fmt, "variant": variant or ("keras" if fmt == "h5" else "torchvision"),
            "preprocess": "caffe" if fmt == "h5" else "torch", "classes": 1000, "top1": None}


class WeightsPullTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(RESNETD, os.X_OK):
            raise RuntimeError(f"{RESNETD} is missing: build it first (make build/resnetd)")
        cls._tmp = tempfile.TemporaryDirectory(prefix="resnetd-pull-")
        cls.tmp = cls._tmp.name
        cls.server = LoopbackServer()
        s = cls.server
        cls.valid = safetensors_f16(torchvision_shapes())
        cls.blob = random_bytes(3_000_000, 1)
        cls.h5 = random_bytes(200_000, 2)
        # a port nobody listens on: bound, then closed
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        cls.closed_port = probe.getsockname()[1]
        probe.close()

        files = {"/hub/tv1/model.safetensors": cls.valid,
                 "/hub/blob/model.safetensors": cls.blob,
                 "/keras/w.h5": cls.h5,
                 "/mirror/mirrored.safetensors": cls.blob,
                 "/proxied/model.safetensors": cls.blob}
        tampered = bytearray(cls.valid)
        tampered[len(tampered) // 2] ^= 0x01
        files["/hub/tampered/model.safetensors"] = bytes(tampered)
        files["/hub/short/model.safetensors"] = cls.blob[:-10]
        s.files.update(files)
        for name in ("cut", "cut2", "ignore", "stall", "slow", "slow2"):
            s.files[f"/hub/{name}/model.safetensors"] = cls.blob

        w = {"torchvision-v1": entry(s.url("/hub/tv1/model.safetensors"),
                                     "torchvision-v1.safetensors", cls.valid),
             "tampered": entry(s.url("/hub/tampered/model.safetensors"), "tampered.safetensors",
                               cls.valid),
             "short": entry(s.url("/hub/short/model.safetensors"), "short.safetensors",
                            cls.blob),
             "missing": entry(s.url("/hub/missing/model.safetensors"), "missing.safetensors",
                              cls.blob),
             "offline": entry(f"http://127.0.0.1:{cls.closed_port}/hub/model.safetensors",
                              "offline.safetensors", cls.blob),
             "nohash": entry(s.url("/hub/blob/model.safetensors"), "nohash.safetensors",
                             cls.blob, sha256=False),
             "keras": entry(s.url("/keras/w.h5"), "keras.h5", cls.h5, fmt="h5", sha256=False,
                            md5=True),
             "mirrored": entry("http://weights.invalid/never/model.safetensors",
                               "mirrored.safetensors", cls.blob),
             "proxied": entry("http://weights.invalid/proxied/model.safetensors",
                              "proxied.safetensors", cls.blob),
             "tls": entry("https://127.0.0.1:1/tls/model.safetensors", "tls.safetensors",
                          cls.blob)}
        for name in ("cut", "cut2", "ignore", "stall", "slow", "slow2"):
            w[name] = entry(s.url(f"/hub/{name}/model.safetensors"), f"{name}.safetensors",
                            cls.blob)
        cls.manifest = os.path.join(cls.tmp, "weights.json")
        with open(cls.manifest, "w") as f:
            json.dump({"about": "test manifest", "weights": w}, f, indent=1)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls._tmp.cleanup()

    def setUp(self):
        self.wdir = tempfile.mkdtemp(prefix="w-", dir=self.tmp)

    def pull(self, name, *args, env=None, manifest=True, timeout=120):
        cmd = [RESNETD, "weights", "pull", name]
        if manifest:
            cmd += ["--manifest", self.manifest]
        cmd += ["--weights-dir", self.wdir, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=env or clean_env())

    def path(self, file):
        return os.path.join(self.wdir, file)

    def assert_installed(self, r, file, data):
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, self.path(file) + "\n")
        with open(self.path(file), "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual([n for n in os.listdir(self.wdir) if n.endswith(".part")], [])

    def assert_not_installed(self, file):
        self.assertFalse(os.path.exists(self.path(file)))
        self.assertFalse(os.path.exists(self.path("." + file + ".part")))

    def test_download_verify_inspect_and_cache(self):
        path = "/hub/tv1/model.safetensors"
        before = len(self.server.requests_for(path))
        r = self.pull("torchvision-v1")
        self.assert_installed(r, "torchvision-v1.safetensors", self.valid)
        self.assertIn("SHA-256 verified", r.stderr)
        reqs = self.server.requests_for(path)[before:]
        self.assertEqual(len(reqs), 1)
        self.assertIsNone(reqs[0]["range"])
        ins = subprocess.run([RESNETD, "inspect", self.path("torchvision-v1.safetensors")],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(ins.returncode, 0, ins.stderr)
        self.assertIn("variant:     torchvision", ins.stdout)
        self.assertIn("tensors:     267", ins.stdout)
        self.assertIn(f"parameters:  {TV_PARAMS}", ins.stdout)
        self.assertIn("head:        1000 classes", ins.stdout)
        # the cache: no request the second time
        r = self.pull("torchvision-v1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, self.path("torchvision-v1.safetensors") + "\n")
        self.assertIn("already in the weights folder", r.stderr)
        self.assertEqual(len(self.server.requests_for(path)), before + 1)

    def test_tampered_byte_refused(self):
        r = self.pull("tampered")
        self.assertEqual(r.returncode, 1, r.stderr)
        good = hashlib.sha256(self.valid).hexdigest()
        bad = hashlib.sha256(self.server.files["/hub/tampered/model.safetensors"]).hexdigest()
        self.assertIn(f"tampered: SHA-256 mismatch: expected {good}, got {bad} from "
                      f"{self.server.url('/hub/tampered/model.safetensors')}; the download was "
                      "removed", r.stderr)
        self.assertEqual(r.stdout, "")
        self.assert_not_installed("tampered.safetensors")

    def test_size_mismatch(self):
        r = self.pull("short")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"short: size mismatch: the manifest expects {len(self.blob)} bytes, the "
                      f"server's file has {len(self.blob) - 10}", r.stderr)
        self.assertIn("the partial file was removed", r.stderr)
        self.assert_not_installed("short.safetensors")

    def test_404(self):
        r = self.pull("missing")
        self.assertEqual(r.returncode, 1, r.stderr)
        url = self.server.url("/hub/missing/model.safetensors")
        self.assertIn(f"missing: HTTP 404 (Not Found) from {url}\n", r.stderr)
        self.assert_not_installed("missing.safetensors")

    def test_resume_after_cut_in_one_pull(self):
        path = "/hub/cut/model.safetensors"
        self.server.modes[path] = ["cut"]
        r = self.pull("cut")
        self.assert_installed(r, "cut.safetensors", self.blob)
        reqs = self.server.requests_for(path)
        self.assertEqual(len(reqs), 2)
        half = len(self.blob) // 2
        self.assertIsNone(reqs[0]["range"])
        self.assertEqual(reqs[1]["range"], f"bytes={half}-")
        self.assertIn(f"attempt 2, resuming at byte {half}", r.stderr)

    def test_resume_in_a_second_pull(self):
        path = "/hub/cut2/model.safetensors"
        self.server.modes[path] = ["cut"]
        r = self.pull("cut2", "--retries", "0")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cut2: cannot download it: transfer closed with", r.stderr)
        half = len(self.blob) // 2
        part = self.path(".cut2.safetensors.part")
        self.assertEqual(os.path.getsize(part), half)  # kept for the next pull
        r = self.pull("cut2")
        self.assert_installed(r, "cut2.safetensors", self.blob)
        reqs = self.server.requests_for(path)
        self.assertEqual([q["range"] for q in reqs], [None, f"bytes={half}-"])

    def test_server_that_ignores_range_restarts_cleanly(self):
        path = "/hub/ignore/model.safetensors"
        self.server.modes[path] = ["cut", "ignore-range"]
        r = self.pull("ignore", "--retries", "0")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(os.path.getsize(self.path(".ignore.safetensors.part")),
                         len(self.blob) // 2)
        r = self.pull("ignore")
        self.assert_installed(r, "ignore.safetensors", self.blob)
        reqs = self.server.requests_for(path)
        self.assertEqual(len(reqs), 2)
        self.assertEqual(reqs[1]["range"], f"bytes={len(self.blob) // 2}-")  # asked, got 200

    def test_stalled_server_times_out(self):
        path = "/hub/stall/model.safetensors"
        self.server.modes[path] = ["stall"]
        t0 = time.monotonic()
        r = self.pull("stall", "--stall-timeout", "1", "--retries", "0")
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertLess(took, 20)
        self.assertIn(f"stall: the server sent nothing for 1 s (stalled; the limit is the stall "
                      f"timeout). Without network access here, fetch {self.server.url(path)} on "
                      "another machine", r.stderr)
        # what arrived is kept for a resume
        self.assertEqual(os.path.getsize(self.path(".stall.safetensors.part")), 1000)
        self.assertFalse(os.path.exists(self.path("stall.safetensors")))

    def test_offline_message(self):
        r = self.pull("offline", "--retries", "0")
        self.assertEqual(r.returncode, 1, r.stderr)
        url = f"http://127.0.0.1:{self.closed_port}/hub/model.safetensors"
        sha = hashlib.sha256(self.blob).hexdigest()
        self.assertIn("offline: cannot download it: Failed to connect to 127.0.0.1 port "
                      f"{self.closed_port}", r.stderr)
        self.assertIn(f". Without network access here, fetch {url} on another machine, check "
                      f"that its sha256 is {sha}, and copy it to "
                      f"{self.path('offline.safetensors')}\n", r.stderr)
        self.assert_not_installed("offline.safetensors")

    def test_entry_without_hash_is_refused(self):
        before = len(self.server.requests_for("/hub/blob/model.safetensors"))
        r = self.pull("nohash")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("nohash: the manifest pins no hash for it (neither sha256 nor md5), and "
                      "resnetd never installs an unverified file", r.stderr)
        self.assertEqual(len(self.server.requests_for("/hub/blob/model.safetensors")), before)
        self.assert_not_installed("nohash.safetensors")

    def test_two_pulls_at_once_download_once(self):
        path = "/hub/slow/model.safetensors"
        self.server.modes[path] = ["slow"]
        cmd = [RESNETD, "weights", "pull", "slow", "--manifest", self.manifest,
               "--weights-dir", self.wdir]
        a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=clean_env())
        deadline = time.monotonic() + 30
        while not self.server.requests_for(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(len(self.server.requests_for(path)), 1)
        b = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=clean_env())
        out_a, err_a = a.communicate(timeout=120)
        self.assertEqual(a.returncode, 0, err_a)
        self.assertEqual(b.returncode, 0, b.stderr)
        self.assertEqual(out_a, self.path("slow.safetensors") + "\n")
        self.assertEqual(b.stdout, out_a)
        self.assertIn("installed by another download", b.stderr)
        self.assertEqual(len(self.server.requests_for(path)), 1)
        with open(self.path("slow.safetensors"), "rb") as f:
            self.assertEqual(f.read(), self.blob)

    def test_interrupt_keeps_the_part_file_and_the_next_pull_resumes(self):
        path = "/hub/slow2/model.safetensors"
        self.server.modes[path] = ["slow"]
        before = len(self.server.requests_for(path))
        cmd = [RESNETD, "weights", "pull", "slow2", "--manifest", self.manifest,
               "--weights-dir", self.wdir]
        a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=clean_env())
        part = self.path(".slow2.safetensors.part")
        deadline = time.monotonic() + 30
        while (not os.path.exists(part) or os.path.getsize(part) == 0) and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        a.send_signal(signal.SIGINT)
        out, err = a.communicate(timeout=60)
        self.assertEqual(a.returncode, 130, err)
        self.assertEqual(out, "")
        kept = os.path.getsize(part)
        self.assertGreater(kept, 0)
        self.assertLess(kept, len(self.blob))
        self.assertIn(f"slow2: cancelled; {kept} bytes are kept in {part} and the next pull "
                      "resumes from there", err)
        r = self.pull("slow2")
        self.assert_installed(r, "slow2.safetensors", self.blob)
        reqs = self.server.requests_for(path)[before:]
        self.assertEqual([q["range"] for q in reqs], [None, f"bytes={kept}-"])

    def test_mirror_flag_and_environment(self):
        r = self.pull("mirrored", "--mirror", self.server.url("/mirror"))
        self.assert_installed(r, "mirrored.safetensors", self.blob)
        os.remove(self.path("mirrored.safetensors"))
        r = self.pull("mirrored", env=clean_env(RESNETD_WEIGHTS_MIRROR=self.server.url("/mirror/")))
        self.assert_installed(r, "mirrored.safetensors", self.blob)
        reqs = self.server.requests_for("/mirror/mirrored.safetensors")
        self.assertEqual(len(reqs), 2)
        self.assertEqual(self.server.requests_for("/never/model.safetensors"), [])
        r = self.pull("mirrored", "--mirror", "ftp://x")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--weights-mirror: expected an http://, https:// or file:// URL", r.stderr)

    def test_manifest_from_the_environment(self):
        r = self.pull("keras", manifest=False, env=clean_env(RESNETD_WEIGHTS_MANIFEST=self.manifest))
        self.assert_installed(r, "keras.h5", self.h5)
        self.assertIn("MD5 verified", r.stderr)

    def test_http_proxy(self):
        r = self.pull("proxied", env=clean_env(http_proxy=self.server.url("")))
        self.assert_installed(r, "proxied.safetensors", self.blob)
        reqs = self.server.requests_for("/proxied/model.safetensors")
        self.assertEqual(len(reqs), 1)
        self.assertTrue(reqs[0]["absolute"])  # the proxy form: GET http://weights.invalid/...
        self.assertEqual(reqs[0]["host"], "weights.invalid")

    def test_imagenet_alias_and_md5(self):
        r = self.pull("imagenet", "--variant", "keras")
        self.assert_installed(r, "keras.h5", self.h5)
        r = self.pull("imagenet")
        self.assert_installed(r, "torchvision-v1.safetensors", self.valid)

    def test_list(self):
        os.makedirs(self.wdir, exist_ok=True)
        with open(self.path("keras.h5"), "wb") as f:
            f.write(self.h5)
        r = subprocess.run([RESNETD, "weights", "list", "--manifest", self.manifest,
                            "--weights-dir", self.wdir], capture_output=True, text=True,
                           timeout=60, env=clean_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = {line.split()[0]: line.split() for line in r.stdout.splitlines()[3:-1]}
        self.assertEqual(lines["keras"][-1], "yes")
        self.assertEqual(lines["keras"][-2], "md5")
        self.assertEqual(lines["torchvision-v1"][-1], "no")
        self.assertEqual(lines["nohash"][-2], "none")
        # without --manifest: the shipped config/weights.json beside the build folder
        r = subprocess.run([RESNETD, "weights", "list", "--weights-dir", self.wdir],
                           capture_output=True, text=True, timeout=60, env=clean_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines()[0],
                         "manifest:       " + os.path.realpath(os.path.join(ROOT, "config",
                                                                            "weights.json")))
        for name in ("torchvision-v1", "torchvision-v2", "timm-a1", "keras", "keras-notop"):
            self.assertIn("\n" + name + " ", r.stdout)

    def test_https_with_a_ca_bundle(self):
        openssl = shutil.which("openssl")
        if not openssl:
            self.skipTest("no openssl command to make a certificate")
        key, cert = os.path.join(self.tmp, "key.pem"), os.path.join(self.tmp, "cert.pem")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        tls = LoopbackServer(ctx)
        try:
            tls.files["/tls/tls.safetensors"] = self.blob
            mirror = tls.url("/tls", scheme="https")
            # a certificate nobody vouches for is refused
            r = self.pull("tls", "--mirror", mirror, "--retries", "0")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("certificate", r.stderr.lower())
            self.assert_not_installed("tls.safetensors")
            for var in ("CURL_CA_BUNDLE", "SSL_CERT_FILE"):
                r = self.pull("tls", "--mirror", mirror, env=clean_env(**{var: cert}))
                self.assert_installed(r, "tls.safetensors", self.blob)
                os.remove(self.path("tls.safetensors"))
        finally:
            tls.stop()


if __name__ == "__main__":
    unittest.main()
