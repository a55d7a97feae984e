"""test_container.py: the container image (Dockerfile) built and run with podman,
as an operator runs it.

Run from the repository root with Debian's Python, as root:
    /usr/bin/python3 -m unittest -v tests/container/test_container.py
Needs podman, buildah, runc and debootstrap (tools/debian-packages.txt; installed
here with tools/deps.sh when missing and root) and Debian's archive (the image's
RUN steps install packages). No Docker Hub: tools/container-base.sh makes the
debian:bookworm and debian:bookworm-slim base images with debootstrap (once; they
are kept, like pulled images). Podman runs with runc and ulimits under this
machine's hard limits (a CONTAINERS_CONF written here). build/resnetd and
build/tools/fmnist_to_png come from $RESNETD_BUILD_DIR (default build/).
Skipped, with the reason, only where podman cannot run a container at all.

- The image (`podman build --format docker --pull=never`, timed, size printed):
  no compiler, no headers, no -dev packages; user 10001; the volume
  /var/lib/resnetd, port 8080, a HEALTHCHECK on /api/health, STOPSIGNAL SIGTERM,
  entrypoint `resnetd serve`; the default config at /etc/resnetd/resnetd.conf and
  the dashboard's files at /usr/share/resnetd/web.
- `resnetd version` inside shows the OpenBLAS kernel, and who chose it, as outside.
- Listening on 0.0.0.0:8080 without a token the container stops with the token
  rule's message; with RESNETD_INSECURE=1 the configuration is accepted; the
  RESNETD_* variables of the image are the effective configuration.
- The service, on a named volume, with a token, a read-only dataset folder and
  (third container) a read-only weights folder mounted:
  - health through the image's own HEALTHCHECK (`podman healthcheck run`);
  - PID 1 is `resnetd serve` (after its OpenBLAS re-exec) running as uid 10001,
    and /api/info reports the same kernel as outside; GET / serves web/index.html
    and /vendor/uPlot.iife.min.js the uPlot of web/package-lock.json;
  - POST and DELETE without the token or with a wrong one: 401; reads: 200;
  - a dataset uploaded as tar.gz with curl, one registered from the mounted folder;
  - a 2-epoch job at input_size 32; `podman stop` (SIGTERM) in its first epoch:
    exit code 0, "SIGTERM: stopping" in `podman logs`, the job's checkpoint in the
    volume, owned by uid 10001;
  - a second container on the same volume (token from --env-file) resumes the job
    to completion, every epoch and step exactly once; its weights downloaded;
  - a third container finds the job, the same metrics and both datasets, and
    lists the downloaded weights from its read-only weights mount.
- Cleanup, also after a failure: the containers, the volume, the image and the
  intermediate images its build made.
"""

import json
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("RESNETD_BUILD_DIR") or os.path.join(ROOT, "build")
RESNETD = os.path.join(BUILD, "resnetd")
FMNIST = os.path.join(BUILD, "tools", "fmnist_to_png")
BASE_IMAGES = ["docker.io/library/debian:bookworm", "docker.io/library/debian:bookworm-slim"]
UID = 10001

JOB = {"name": "container", "dataset": "fm", "weights": "random", "preprocess": "torch",
       "input_size": 32, "batch_size": 16, "seed": 7,
       "phases": [{"name": "scratch", "epochs": 2, "train": "all", "bn": "train",
                   "optimizer": {"type": "adam", "lr": 0.001}}]}

KERNEL = re.compile(r"OpenBLAS kernel (\S+) \(chosen by (\w+)\)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def containers_conf(path):
    """runc, and ulimits runc can set: podman's defaults as root (1048576 open
    files, the most processes) are above this machine's hard limits, and the
    container fails to start ("error setting rlimit type 7"). 16384, as
    tools/containers.conf (nproc above 32768 fails here too), or less."""
    def limit(kind):
        hard = resource.getrlimit(kind)[1]
        return 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    with open(path, "w") as f:
        f.write("[containers]\n"
                f'default_ulimits = ["nofile={limit(resource.RLIMIT_NOFILE)}:'
                f'{limit(resource.RLIMIT_NOFILE)}", "nproc={limit(resource.RLIMIT_NPROC)}:'
                f'{limit(resource.RLIMIT_NPROC)}"]\n'
                "[engine]\nruntime = \"runc\"\n")


class Podman:
    def __init__(self, env):
        self.env = env

    def __call__(self, *args, check=True, timeout=600):
        r = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited with {r.returncode}:\n"
                                 f"{r.stdout[-3000:]}{r.stderr[-3000:]}")
        return r

    def images(self):
        r = self("images", "-a", "-q", "--no-trunc")
        return set(r.stdout.split())


class Container(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="resnetd-container-")
        cls.addClassCleanup(cls.tmp.cleanup)
        cls.prefix = f"resnetd-test-{os.getpid()}-{secrets.token_hex(3)}"
        cls.image = f"localhost/{cls.prefix}:latest"
        conf = os.path.join(cls.tmp.name, "containers.conf")
        containers_conf(conf)
        env = dict(os.environ, CONTAINERS_CONF=conf)
        cls.podman = Podman(env)
        for tool in (RESNETD, FMNIST):
            if not os.access(tool, os.X_OK):
                raise AssertionError(f"{tool} is missing: make build/resnetd "
                                     "build/tools/fmnist_to_png")
        root = os.geteuid() == 0
        if not (shutil.which("podman") and shutil.which("runc")):
            if not root:
                raise unittest.SkipTest("podman or runc is not installed, and installing them "
                                        "needs root (sudo tools/deps.sh)")
            subprocess.run([os.path.join(ROOT, "tools", "deps.sh")], check=True)
        t0 = time.time()
        r = subprocess.run([os.path.join(ROOT, "tools", "container-base.sh")], env=env,
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            if not root:
                raise unittest.SkipTest("no debian:bookworm base images, and debootstrap needs "
                                        f"root (sudo tools/container-base.sh): {r.stderr.strip()}")
            raise AssertionError(f"tools/container-base.sh failed:\n{r.stdout}{r.stderr}")
        print(f"\n[container] base images ready in {time.time() - t0:.0f} s", flush=True)
        probe = cls.podman("run", "--rm", "--network", "none", BASE_IMAGES[1], "true",
                           check=False, timeout=120)
        if probe.returncode != 0:
            raise unittest.SkipTest("podman cannot start a container here (runc): "
                                    + probe.stderr.strip()[-500:])

        before = cls.podman.images()
        cls.addClassCleanup(cls.remove_images, before)
        t0 = time.time()
        r = cls.podman("build", "--pull=never", "--format", "docker", "-t", cls.image,
                       "-f", os.path.join(ROOT, "Dockerfile"), ROOT, check=False, timeout=1800)
        cls.build_seconds = time.time() - t0
        if r.returncode != 0:
            raise AssertionError(f"podman build failed:\n{r.stdout[-6000:]}{r.stderr[-3000:]}")
        cls.inspect = json.loads(cls.podman("image", "inspect", cls.image).stdout)[0]
        print(f"[container] image built in {cls.build_seconds:.0f} s, "
              f"{cls.inspect['Size'] / 1e6:.0f} MB", flush=True)

    @classmethod
    def remove_images(cls, before):
        cls.podman("rmi", cls.image, check=False)
        # the build's intermediate images (its stages and cached steps), newest first
        for _ in range(3):
            new = cls.podman.images() - before
            if not new:
                return
            for image in new:
                cls.podman("rmi", image, check=False)

    # ---- helpers ----------------------------------------------------------------

    def run_container(self, name, *args):
        """Starts the image detached as NAME with ARGS before the image name; returns
        the URL of its published port 8080. Removed after the test."""
        self.addCleanup(self.podman, "rm", "-f", "-t", "0", "-v", name, check=False)
        port = free_port()
        self.podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", *args,
                    self.image)
        return f"http://127.0.0.1:{port}"

    def wait_healthy(self, name, timeout=90):
        """Runs the image's HEALTHCHECK until it passes (podman here has no systemd
        to run it on its interval)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if state != "running":
                self.fail(f"container {name} is {state}:\n{self.logs(name, 3000)}")
            if self.podman("healthcheck", "run", name, check=False).returncode == 0:
                health = self.podman("inspect", "--format", "{{.State.Health.Status}}",
                                     name).stdout.strip()
                self.assertEqual(health, "healthy")
                return
            time.sleep(0.5)
        self.fail(f"container {name} not healthy within {timeout} s:\n{self.logs(name, 3000)}")

    def logs(self, name, tail=None):
        r = self.podman("logs", name, check=False)
        out = r.stdout + r.stderr
        return out[-tail:] if tail else out

    def assert_logged(self, text, name):
        log = self.logs(name)
        self.assertTrue(text in log, f"{text!r} not in the logs of {name}:\n{log[-3000:]}")

    def stop(self, name):
        """`podman stop` (the image's STOPSIGNAL, SIGTERM); returns the exit code."""
        t0 = time.time()
        self.podman("stop", "-t", "60", name, timeout=120)
        self.assertLess(time.time() - t0, 60, "the daemon did not stop on SIGTERM")
        return int(self.podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout)

    def curl(self, url, method, path, token=None, body=None, upload=None, out=None, raw=False):
        """(status, JSON or None, or the bytes with raw) of one request made with curl."""
        dest = out or os.path.join(self.tmp.name, "body")
        cmd = ["curl", "-sS", "-X", method, "-o", dest, "-w", "%{http_code}", url + path]
        if token:
            cmd += ["-H", f"Authorization: Bearer {token}"]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        if upload:
            cmd += ["-H", "Content-Type: application/gzip", "--data-binary", "@" + upload]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, f"curl {method} {path}: {r.stderr}")
        if out:
            return int(r.stdout), None
        with open(dest, "rb") as f:
            data = f.read()
        if raw:
            return int(r.stdout), data
        return int(r.stdout), json.loads(data) if data else None

    def get(self, url, path):
        status, v = self.curl(url, "GET", path)
        self.assertEqual(status, 200, f"GET {path}: {v}")
        return v

    def wait(self, pred, what, timeout=600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = pred()
            if v:
                return v
            time.sleep(0.25)
        self.fail(f"timed out waiting for {what}")

    def host_kernel(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_CORETYPE", "RESNETD_BLAS_REEXEC")}
        out = subprocess.run([RESNETD, "version"], env=env, capture_output=True, text=True,
                             check=True).stdout
        m = KERNEL.search(out)
        self.assertIsNotNone(m, out)
        return m.groups()

    def fmnist(self, dest, per_class):
        subprocess.run([FMNIST, dest, "--classes", "0,1,7", "--per-class", str(per_class),
                        "--size", "32"], check=True, capture_output=True)

    # ---- tests --------------------------------------------------------------------

    def test_image_is_slim_and_declares_the_service(self):
        cfg = self.inspect["Config"]
        self.assertEqual(cfg["User"], f"{UID}:{UID}")
        self.assertEqual(cfg["Entrypoint"], ["/usr/bin/resnetd", "serve"])
        self.assertEqual(list(cfg["Volumes"]), ["/var/lib/resnetd"])
        self.assertEqual(list(cfg["ExposedPorts"]), ["8080/tcp"])
        self.assertEqual(cfg["StopSignal"], "SIGTERM")
        env = dict(e.split("=", 1) for e in cfg["Env"])
        self.assertEqual(env["RESNETD_LISTEN"], "0.0.0.0:8080")
        self.assertEqual(env["RESNETD_DATA_DIR"], "/var/lib/resnetd")
        self.assertNotIn("RESNETD_TOKEN", env)
        self.assertNotIn("RESNETD_INSECURE", env)
        health = self.inspect["Healthcheck"]["Test"]
        self.assertIn("/api/health", " ".join(health))
        script = r"""
            for c in gcc cc c++ cpp ld as make; do command -v $c && echo "compiler: $c"; done
            find / -xdev \( -name '*.h' -o -name '*.a' \) -print | head -5
            dpkg-query -W -f '${Package}\n' |
              grep -E -- '-dev$|^(gcc|g\+\+|cpp)(-[0-9]+)?$|^(binutils.*|build-essential|make)$' || true
            echo "user: $(id -u)"
            test -f /etc/resnetd/resnetd.conf && echo conf
            test -x /usr/bin/resnetd && echo binary
            test -d /usr/share/resnetd/web && echo web
            stat -c 'volume: %u' /var/lib/resnetd
        """
        r = self.podman("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh",
                        self.image, "-c", script)
        lines = r.stdout.split("\n")
        self.assertEqual([l for l in lines if l and not l.startswith(
            ("user:", "conf", "binary", "web", "volume:"))], [],
            "the runtime image holds build tools, headers or -dev packages")
        self.assertIn(f"user: {UID}", lines)
        self.assertIn(f"volume: {UID}", lines)
        for what in ("conf", "binary", "web"):
            self.assertIn(what, lines)

    def test_openblas_kernel_as_outside(self):
        r = self.podman("run", "--rm", "--network", "none", "--entrypoint", "/usr/bin/resnetd",
                        self.image, "version")
        m = KERNEL.search(r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        self.assertEqual(m.groups(), self.host_kernel(), r.stdout)

    def test_token_required_unless_insecure(self):
        r = self.podman("run", "--rm", "--network", "none", self.image, check=False,
                        timeout=120)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("listening on 0.0.0.0:8080 requires a token", r.stdout + r.stderr)
        r = self.podman("run", "--rm", "--network", "none", "-e", "RESNETD_INSECURE=1",
                        self.image, "--print-config")
        cfg = {}
        for line in r.stdout.splitlines():
            m = re.match(r"(\w+) = (.*?)\s+# (.*)$", line)
            if m:
                cfg[m[1]] = (m[2], m[3])
        self.assertIn("config file: /etc/resnetd/resnetd.conf", r.stdout)
        self.assertEqual(cfg["insecure"], ("true", "RESNETD_INSECURE"))
        self.assertEqual(cfg["listen"], ("0.0.0.0:8080", "RESNETD_LISTEN"))
        self.assertEqual(cfg["data_dir"], ("/var/lib/resnetd", "RESNETD_DATA_DIR"))
        self.assertEqual(cfg["data_root"], ("/var/lib/resnetd/datasets", "RESNETD_DATA_ROOT"))
        self.assertEqual(cfg["token"][0], "(none)")

    def test_service_keeps_its_data_across_containers(self):
        tmp = self.tmp.name
        token = secrets.token_hex(16)
        volume = self.prefix + "-data"
        self.podman("volume", "create", volume)
        self.addCleanup(self.podman, "volume", "rm", "-f", volume, check=False)
        mount = f"{volume}:/var/lib/resnetd"
        # the job's dataset, uploaded; a small one in a host folder, mounted read-only
        self.fmnist(os.path.join(tmp, "fm"), 100)
        upload = os.path.join(tmp, "fm.tar.gz")
        with tarfile.open(upload, "w:gz") as t:
            t.add(os.path.join(tmp, "fm"), arcname="fm")
        shared = os.path.join(tmp, "shared")
        self.fmnist(shared, 10)
        weights = os.path.join(tmp, "weights")
        os.mkdir(weights)
        for d in (shared, weights):
            os.chmod(d, 0o755)
        env_file = os.path.join(tmp, "resnetd.env")
        with open(env_file, "w") as f:
            f.write(f"RESNETD_TOKEN={token}\n")
        kernel = self.host_kernel()[0]

        # -- the first container: health, user, token, datasets, a job, SIGTERM
        c1 = self.prefix + "-1"
        url = self.run_container(c1, "-v", mount, "-v",
                                 f"{shared}:/var/lib/resnetd/datasets/shared:ro",
                                 "-e", f"RESNETD_TOKEN={token}")
        self.wait_healthy(c1)
        status = self.podman("exec", c1, "cat", "/proc/1/status").stdout
        self.assertRegex(status, rf"\nUid:\s+{UID}\s+{UID}\s+{UID}\s+{UID}\n")
        self.assertRegex(status, rf"\nGid:\s+{UID}\s+{UID}\s+{UID}\s+{UID}\n")
        cmdline = self.podman("exec", c1, "cat", "/proc/1/cmdline").stdout
        self.assertEqual(cmdline.split("\0")[:2], ["/usr/bin/resnetd", "serve"])
        self.assertEqual(self.get(url, "/api/health")["status"], "ok")
        info = self.get(url, "/api/info")
        self.assertEqual(info["blas_kernel"], kernel)
        self.assertTrue(info["auth"])
        self.assertEqual(info["data_root"], "/var/lib/resnetd/datasets")
        # the dashboard, found by the binary in /usr/share/resnetd/web, with the
        # uPlot that web/package-lock.json pins (fetched and checked by the build)
        st, page = self.curl(url, "GET", "/", raw=True)
        self.assertEqual(st, 200)
        with open(os.path.join(ROOT, "web", "index.html"), "rb") as f:
            self.assertEqual(page, f.read())
        st, js = self.curl(url, "GET", "/vendor/uPlot.iife.min.js", raw=True)
        self.assertEqual(st, 200)
        with open(os.path.join(ROOT, "web", "node_modules", "uplot", "dist",
                               "uPlot.iife.min.js"), "rb") as f:
            self.assertEqual(js, f.read())
        for tok in (None, "wrong-" + token):
            self.assertEqual(self.curl(url, "POST", "/api/jobs", tok, body=JOB)[0], 401)
            self.assertEqual(self.curl(url, "POST", "/api/datasets?name=x", tok,
                                       upload=upload)[0], 401)
            self.assertEqual(self.curl(url, "DELETE", "/api/datasets/1", tok)[0], 401)
        self.assertEqual(self.get(url, "/api/datasets")["datasets"], [])

        st, ds = self.curl(url, "POST", "/api/datasets?name=fm", token, upload=upload)
        self.assertEqual(st, 201, ds)
        self.assertEqual(ds["report"]["images"], 300)
        st, ds = self.curl(url, "POST", "/api/datasets", token,
                           body={"name": "mounted", "path": "shared"})
        self.assertEqual(st, 201, ds)
        self.assertEqual(ds["report"]["images"], 30)
        st, job = self.curl(url, "POST", "/api/jobs", token, body=JOB)
        self.assertEqual(st, 201, job)
        jid = job["id"]

        def in_first_epoch():
            p = self.get(url, f"/api/jobs/{jid}")["progress"]
            if p and (p["epoch"] > 0 or p["step"] >= p["steps"] - 3):
                self.fail(f"the job ran past its first epoch before the test could stop it: {p}")
            return p and p["step"] >= 1
        self.wait(in_first_epoch, "the job's first steps")
        self.assertEqual(self.stop(c1), 0, self.logs(c1, 3000))
        self.assert_logged("SIGTERM: stopping", c1)
        self.assert_logged("the next start resumes it from its checkpoint", c1)
        log = self.logs(c1)
        self.assertRegex(log[-2000:], r"(?m) stopped$", "the daemon's last line is not 'stopped'")
        data = self.podman("volume", "inspect", "--format", "{{.Mountpoint}}",
                           volume).stdout.strip()
        ckpt = os.path.join(data, "jobs", str(jid), "checkpoint.safetensors")
        self.assertTrue(os.path.isfile(ckpt), f"no checkpoint at {ckpt}")
        self.assertEqual(os.stat(ckpt).st_uid, UID)
        self.assertEqual(os.stat(os.path.join(data, "resnetd.db")).st_uid, UID)

        # -- a second container on the same volume resumes and completes the job
        c2 = self.prefix + "-2"
        url = self.run_container(c2, "-v", mount, "--env-file", env_file)
        self.wait_healthy(c2)
        done = self.wait(lambda: self.get(url, f"/api/jobs/{jid}")["state"] in
                         ("completed", "failed", "cancelled") and
                         self.get(url, f"/api/jobs/{jid}"), "the resumed job to finish")
        self.assertEqual(done["state"], "completed", done)
        self.assertEqual(done["epochs_done"], 2)
        # the log counts epochs from 1
        self.assert_logged(f"job {jid}: resuming at epoch 1, step", c2)
        metrics = self.get(url, f"/api/jobs/{jid}/metrics")
        self.assertEqual([e["epoch"] for e in metrics["epochs"]], [0, 1])
        steps = self.get(url, f"/api/jobs/{jid}/steps")["steps"]
        n = steps[0]["steps"]
        self.assertEqual([(s["epoch"], s["step"]) for s in steps],
                         [(e, k) for e in range(2) for k in range(n)])
        self.assertEqual([s["index"] for s in steps], list(range(2 * n)))
        st, _ = self.curl(url, "GET", f"/api/jobs/{jid}/weights",
                          out=os.path.join(weights, "container-job.safetensors"))
        self.assertEqual(st, 200)
        os.chmod(os.path.join(weights, "container-job.safetensors"), 0o644)
        self.assertEqual(self.stop(c2), 0, self.logs(c2, 3000))

        # -- a third: the job, its metrics, the datasets; weights from a read-only mount
        c3 = self.prefix + "-3"
        url = self.run_container(c3, "-v", mount, "-v",
                                 f"{weights}:/var/lib/resnetd/weights:ro",
                                 "-e", f"RESNETD_TOKEN={token}")
        self.wait_healthy(c3)
        job = self.get(url, f"/api/jobs/{jid}")
        self.assertEqual((job["state"], job["epochs_done"]), ("completed", 2))
        self.assertEqual(self.get(url, f"/api/jobs/{jid}/metrics"), metrics)
        self.assertEqual(self.get(url, f"/api/jobs/{jid}/steps")["steps"], steps)
        names = sorted(d["name"] for d in self.get(url, "/api/datasets")["datasets"])
        self.assertEqual(names, ["fm", "mounted"])
        listed = {w["name"]: w for w in self.get(url, "/api/weights")["weights"]}
        self.assertIn("container-job.safetensors", listed)
        w = listed["container-job.safetensors"]
        self.assertNotIn("error", w)
        self.assertEqual((w["variant"], w["head_classes"]), ("torchvision", 3))
        self.assertEqual(self.curl(url, "POST", "/api/jobs", None, body=JOB)[0], 401)
        self.assertEqual(self.stop(c3), 0, self.logs(c3, 3000))


if __name__ == "__main__":
    unittest.main()
