"""test_api.py: the REST API of `resnetd serve` (docs/api.md), black box, over HTTP
on loopback.

Run from the repository root with Debian's Python (standard library only):
    /usr/bin/python3 -m unittest -v tests/api/test_api.py
Binaries come from $RESNETD_BUILD_DIR (tests/run.sh sets it; default build/).

Every daemon runs on a free port with its own data folder, is awaited on
/api/health, and is stopped in the cleanup (SIGTERM, then SIGKILL); a daemon that
dies early fails the test with its log. The data: a tiny Fashion-MNIST set (3
classes x 16 PNGs, 32x32, from tools/fmnist_to_png) under --data-root; jobs are a
random-weights "all" epoch (BN training) followed by "head" epochs.

- Health and info: the version, the limits equal the flags the daemon got, the
  data root, auth, the queue, the BLAS kernel (who chose it, the best for this
  CPU). Under OPENBLAS_CORETYPE=Haswell the daemon runs Haswell and, on an
  AVX-512 CPU, logs one warning naming SkylakeX and blas_kernel = auto; with
  --blas-kernel auto it runs the best kernel.
- Datasets: a folder registers (201, Location, the report's classes and counts are
  the generated set's), relative to data_root too; list, get by id and by name;
  DELETE 204 then 404; a name in use 409. Uploads as a tar.gz raw body (?name=), a
  hand-built multipart form and a zip (flat) register the same set under
  data_dir/datasets/ and DELETE removes their files. Refused: a folder outside
  data_root (absolute, "..", a symlink: 403 forbidden, path "path"); an upload
  over --upload-limit (declared or chunked: 413, nothing left in
  data_dir/datasets); zip-slip, absolute and symlink entries (400 naming the
  entry, nothing written anywhere); a file that is not an archive (400); a wrong
  Content-Type (415); an upload without a name (400).
- Weights: an empty folder lists nothing; a junk file is listed with "error"; a
  model exported by a job is listed with its variant, tensors and head classes.
- Jobs: submit (201, Location, every field of the job object), a bad spec (400 with
  the JSON path of the field: lr range, unknown fields, wrong types, missing and
  unregistered dataset, unknown weights file; no job row is created), FIFO (a second
  job waits queued and starts after the first finishes), the finished job object,
  metrics (one entry per epoch, per-stage norms, predicted histogram), steps (every
  step in order, ?after=N), classes (supports and the confusion matrix add up to
  the val split), diagnosis, the SSE stream (state, step and epoch events that
  match /metrics and /steps, ending with state completed), weights (409 before
  completion; then a safetensors file whose metadata names the classes), predict
  (raw PNG and multipart: top-k sorted over the dataset's classes, probabilities
  summing to at most 1; junk 415, a broken PNG 400, a bad top 400).
- Cancel: a queued job at once (200, cancelled, never started), a running one
  within a batch (202 with cancel_requested, then cancelled, and its event stream
  ends with it), a finished one 409; a dataset used by a job cannot be deleted
  (409).
- Bad requests: a full queue (--max-jobs-queued: 503), malformed JSON, JSON nested 40 deep (32 is fine), a body over
  --body-limit (declared or chunked), a wrong Content-Type, unknown routes, wrong
  methods (405 with Allow), non-numeric and unknown job ids; the daemon answers
  /api/health after each.
- curl's defaults: a JSON object sent as application/x-www-form-urlencoded
  (curl -d without -H) registers a dataset and submits a job; a real form, an
  empty body or JSON that is not an object under that type is 415 with what to
  send; application/json with parameters, any case, works. Numbers come back
  as written (0.9, 1e-4 as 0.0001) in the answers and in the stored spec.
- Auth (--token): POST and DELETE without or with a wrong token get 401 with
  WWW-Authenticate and change nothing; the right token works; reads need none.
- Listening on 0.0.0.0 without a token refuses to start and says why; --insecure
  starts.
- Load: 200 concurrent clients, each on its own connection, read a training job's
  metrics: all answered 200 with valid JSON.
"""

import http.client
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
import unittest
import uuid
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("RESNETD_BUILD_DIR") or os.path.join(ROOT, "build")
RESNETD = os.path.join(BUILD, "resnetd")
FMNIST = os.path.join(BUILD, "tools", "fmnist_to_png")

TMP = None        # module temp folder
DATA_ROOT = None  # --data-root of every daemon
FM = None         # DATA_ROOT/fm: 3 classes x 16 images
CLASSES = None    # sorted class folder names
PER_CLASS = 16
TGZ = None        # FM as a tar.gz with top folder "fm"
ZIP_FLAT = None   # FM as a zip without a top folder
FINAL = ("completed", "failed", "cancelled")


def setUpModule():
    global TMP, DATA_ROOT, FM, CLASSES, TGZ, ZIP_FLAT
    TMP = tempfile.mkdtemp(prefix="resnetd-api-")
    DATA_ROOT = os.path.join(TMP, "root")
    os.mkdir(DATA_ROOT)
    FM = os.path.join(DATA_ROOT, "fm")
    subprocess.run([FMNIST, FM, "--classes", "0,1,7", "--per-class", str(PER_CLASS),
                    "--size", "32"], check=True, capture_output=True)
    CLASSES = sorted(os.listdir(FM))
    assert len(CLASSES) == 3, CLASSES
    # a folder outside the data root, and a symlink inside it that points there
    outside = os.path.join(TMP, "outside")
    shutil.copytree(FM, os.path.join(outside, "fm"))
    os.symlink(os.path.join(outside, "fm"), os.path.join(DATA_ROOT, "link"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(FM, arcname="fm")
    TGZ = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for c in CLASSES:
            for f in sorted(os.listdir(os.path.join(FM, c))):
                z.write(os.path.join(FM, c, f), arcname=f"{c}/{f}")
    ZIP_FLAT = buf.getvalue()


def tearDownModule():
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def clean_env(**extra):
    """The environment without RESNETD_* options (a developer's RESNETD_TOKEN must
    not change what a test sees)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESNETD_")}
    env.update(extra)
    return env


def version_kernel(**env):
    """(kernel, origin, best or None) as `resnetd version` names them under
    clean_env(**env): what /api/info must show for a daemon with that environment
    (tests/tools/test_blas.py checks them against the CPU)."""
    out = subprocess.run([RESNETD, "version"], env=clean_env(**env), capture_output=True,
                         text=True, check=True, timeout=60).stdout
    m = re.search(r"OpenBLAS kernel (\S+) \(chosen by (\w+)\), \d+ threads; "
                  r"best for this CPU: (\S+)", out)
    assert m, out
    return m[1], m[2], None if m[3] == "none" else m[3]


def info_kernel(info):
    return info["blas_kernel"], info["blas_kernel_origin"], info["blas_kernel_best"]


def job_spec(dataset="fm", scratch=1, head=2, batch=8, name="api-test", seed=1):
    """Random weights: `scratch` epochs of everything (BN in train mode), then
    `head` epochs of the head alone."""
    phases = [{"name": "scratch", "epochs": scratch, "train": "all", "bn": "train",
               "optimizer": {"type": "adam", "lr": 0.001}}]
    if head:
        phases.append({"name": "head", "epochs": head, "train": "head",
                       "optimizer": {"type": "adam", "lr": 0.001}})
    return {"name": name, "dataset": dataset, "weights": "random", "preprocess": "torch",
            "input_size": 32, "batch_size": batch, "seed": seed, "phases": phases}


def multipart(fields, boundary=None):
    """(body, content type) of a multipart/form-data form. fields: [(name, value)]
    or [(name, (filename, content type, bytes))]."""
    boundary = boundary or "resnetd-test-" + uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields:
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            filename, ctype, data = value
            out.write(f'Content-Disposition: form-data; name="{name}"; '
                      f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode())
            out.write(data)
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
            out.write(value.encode())
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def chunks(data, size=16384):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def parse_sse(lines):
    """[(event, data as JSON)] from the lines of an event stream; comments skipped."""
    events, name, data = [], None, []
    for line in lines:
        if line == "":
            if name or data:
                events.append((name or "message", json.loads("\n".join(data))))
            name, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    return events


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"HTTP {self.status} {self.body[:2000]!r}"


class Daemon:
    """One `resnetd serve` on a free loopback port with its own data folder (or
    reuse_dir: another daemon's, to restart on its data)."""

    def __init__(self, *flags, host="127.0.0.1", token=None, data_root=None, wait=True,
                 env=None, reuse_dir=None):
        self.host, self.port = host, free_port(host)
        self.dir = reuse_dir or tempfile.mkdtemp(prefix="daemon-", dir=TMP)
        self.data_dir = os.path.join(self.dir, "var")
        self.weights_dir = os.path.join(self.dir, "weights")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.token = token
        args = [RESNETD, "serve", "--listen", f"{host}:{self.port}", "--data-dir",
                self.data_dir, "--data-root", data_root or DATA_ROOT, "--weights-dir",
                self.weights_dir, *flags]
        if token:
            args += ["--token", token]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env or clean_env())
        if wait:
            self.wait_ready()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def check_alive(self, grace=0.0):
        """Fails with the daemon's log when it has exited (waiting up to `grace`
        seconds for a daemon that is going down)."""
        try:
            rc = self.proc.wait(timeout=grace) if grace else self.proc.poll()
        except subprocess.TimeoutExpired:
            rc = None
        if rc is not None:
            raise AssertionError(f"resnetd serve exited with {rc}; its log:\n{self.log()}")

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.check_alive()
            try:
                r = self.request("GET", "/api/health", timeout=2, grace=0)
                if r.status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise AssertionError(f"resnetd serve did not answer /api/health in {timeout} s; "
                             f"its log:\n{self.log()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # the last resort
                self.proc.wait()

    def request(self, method, path, body=None, headers=None, timeout=60, auth=True, grace=2):
        """One request on a new connection. A body the daemon refuses before reading
        it (401, 413, 415) may break the pipe: the answer is still read."""
        headers = dict(headers or {})
        if auth and self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            try:
                conn.request(method, path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                pass
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        except (ConnectionError, http.client.HTTPException):
            self.check_alive(grace)
            raise
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post_json(self, path, obj, **kw):
        body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        if isinstance(body, str):
            body = body.encode()
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.request("POST", path, body=body, headers=headers, **kw)

    def upload(self, name, data, ctype="application/gzip", **kw):
        path = "/api/datasets" + (f"?name={name}" if name is not None else "")
        headers = {"Content-Type": ctype, **kw.pop("headers", {})}
        return self.request("POST", path, body=data, headers=headers, **kw)

    def wait_job(self, job_id, states=FINAL, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.get(f"/api/jobs/{job_id}")
            if r.status != 200:
                raise AssertionError(f"GET /api/jobs/{job_id}: {r}")
            j = r.json()
            if j["state"] in states:
                return j
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not {states} after {timeout} s: {j}\n"
                             f"daemon log:\n{self.log_tail()}")

    def events(self, job_id, timeout=120, on_open=None):
        """(content type, [(event, data)]) of a job's event stream, read to its end.
        on_open() runs once the stream's headers are in."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", f"/api/jobs/{job_id}/events")
            resp = conn.getresponse()
            if resp.status != 200:
                raise AssertionError(f"events: HTTP {resp.status} {resp.read()!r}")
            if on_open:
                on_open()
            lines = []
            deadline = time.time() + timeout
            while time.time() < deadline:
                line = resp.readline()
                if not line:
                    break
                lines.append(line.decode().rstrip("\r\n"))
            return resp.getheader("Content-Type"), parse_sse(lines)
        finally:
            conn.close()


class ApiCase(unittest.TestCase):
    """Helpers shared by the test classes; `self.d` is the class's daemon."""

    d = None

    @classmethod
    def start(cls, *flags, **kw):
        d = Daemon(*flags, **kw)
        cls.addClassCleanup(d.stop)
        return d

    def start_own(self, *flags, **kw):
        """A daemon for this test alone, stopped in its cleanup."""
        d = Daemon(*flags, wait=False, **kw)
        self.addCleanup(d.stop)
        d.wait_ready()
        return d

    def assertStatus(self, r, status, d=None):
        d = d or self.d
        self.assertEqual(r.status, status, f"{r}\ndaemon log (tail):\n{d.log_tail() if d else ''}")

    def assertError(self, r, status, code, path=None, d=None, has_path=None):
        """An error answer: status, code, message, and `path` when given (has_path
        False: no path)."""
        self.assertStatus(r, status, d)
        self.assertEqual(r.headers.get("Content-Type"), "application/json")
        e = r.json()["error"]
        self.assertEqual(e["code"], code, r)
        self.assertIsInstance(e["message"], str)
        self.assertTrue(e["message"], r)
        if path is not None:
            self.assertEqual(e.get("path"), path, r)
        if has_path is False:
            self.assertNotIn("path", e, r)
        return e

    def assertHealthy(self, d=None):
        d = d or self.d
        r = d.get("/api/health")
        self.assertStatus(r, 200, d)
        self.assertEqual(r.json()["status"], "ok")

    def assertReport(self, report, root=None):
        """The scan report of the generated set."""
        self.assertEqual(report["classes"], CLASSES)
        self.assertEqual(report["images"], len(CLASSES) * PER_CLASS)
        self.assertEqual(sorted(report["counts"]), CLASSES)
        for c in CLASSES:
            counts = report["counts"][c]
            self.assertEqual(counts["train"] + counts["val"], PER_CLASS, c)
            self.assertGreater(counts["val"], 0, c)
        self.assertEqual(report["totals"]["train"],
                         sum(report["counts"][c]["train"] for c in CLASSES))
        self.assertEqual(report["totals"]["val"],
                         sum(report["counts"][c]["val"] for c in CLASSES))
        self.assertEqual(report["problem_count"], 0)
        self.assertEqual(report["problems"], [])
        self.assertEqual(report["sizes"]["width"], [32, 32, 32])
        self.assertEqual(report["sizes"]["height"], [32, 32, 32])
        self.assertEqual(report["cross_split_duplicates"], 0)
        if root is not None:
            self.assertEqual(os.path.realpath(report["root"]), os.path.realpath(root))

    def uploads_dir(self, d=None):
        return os.path.join((d or self.d).data_dir, "datasets")

    def uploads_listing(self, d=None):
        return sorted(os.listdir(self.uploads_dir(d)))

    def assertUploadsAre(self, want, d=None, timeout=5):
        """data_dir/datasets holds `want` once the request has ended: the daemon
        removes an upload's temporary file after its answer has gone out."""
        deadline = time.time() + timeout
        while self.uploads_listing(d) != want and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.uploads_listing(d), want)


# ---------------------------------------------------------------------------
class Basics(ApiCase):
    """Health, info, bad requests and routing on one daemon with small limits."""

    BODY_LIMIT = 4096
    UPLOAD_LIMIT = 256 * 1024
    MAX_PIXELS = 5000000
    CACHE = 64 << 20
    MAX_QUEUED = 7

    def setUp(self):
        self.d = self.start_own("--body-limit", "4K", "--upload-limit", "256K", "--max-pixels",
                                str(self.MAX_PIXELS), "--cache-bytes", "64M",
                                "--max-jobs-queued", str(self.MAX_QUEUED), "--threads", "2")
        self.assertStatus(self.d.post_json("/api/datasets", {"name": "fm", "path": FM}), 201)

    def test_health(self):
        r = self.d.get("/api/health")
        self.assertStatus(r, 200)
        self.assertEqual(r.headers.get("Content-Type"), "application/json")
        body = r.json()
        self.assertEqual(set(body), {"status", "version"})
        self.assertEqual(body["status"], "ok")
        self.assertRegex(body["version"], r"^\d+\.\d+\.\d+$")

    def test_info_shows_the_limits_it_was_started_with(self):
        r = self.d.get("/api/info")
        self.assertStatus(r, 200)
        info = r.json()
        self.assertEqual(info["version"], self.d.get("/api/health").json()["version"])
        self.assertEqual(info["limits"], {"body_limit": self.BODY_LIMIT,
                                          "upload_limit": self.UPLOAD_LIMIT,
                                          "max_pixels": self.MAX_PIXELS,
                                          "cache_bytes": self.CACHE,
                                          "max_jobs_queued": self.MAX_QUEUED})
        self.assertEqual(os.path.realpath(info["data_root"]), os.path.realpath(DATA_ROOT))
        self.assertIs(info["auth"], False)
        self.assertEqual(info["queue"], {"running": None, "queued": 0})
        self.assertEqual(sorted(info["variants"]), ["keras", "torchvision"])
        self.assertEqual(info["threads"], 2)
        # the kernel, who chose it and the best for this CPU, as `resnetd version`
        # says them in the daemon's environment
        self.assertNotEqual(info["blas_kernel"], "unknown")
        self.assertIn(info["blas_kernel_origin"], ("user", "resnetd", "openblas"))
        self.assertEqual(info_kernel(info), version_kernel())

    def test_malformed_json(self):
        for path in ("/api/jobs", "/api/datasets"):
            for body in (b'{"name": ', b"{'name': 1}", b"", b"\xff\xfe{}", b'{"a": 1} x'):
                with self.subTest(path=path, body=body):
                    r = self.d.post_json(path, body)
                    self.assertError(r, 400, "bad_request")
        # valid JSON that is not an object
        e = self.assertError(self.d.post_json("/api/jobs", b"[1, 2]"), 400, "bad_request")
        self.assertIn("object", e["message"])
        # a key twice
        self.assertError(self.d.post_json("/api/datasets",
                                          b'{"name": "a", "name": "b", "path": "fm"}'),
                         400, "bad_request")
        self.assertHealthy()

    def test_json_nested_too_deep(self):
        deep = '{"a": ' + "[" * 39 + "]" * 39 + "}"   # 40 levels
        e = self.assertError(self.d.post_json("/api/jobs", deep), 400, "bad_request")
        self.assertIn("32", e["message"])
        self.assertError(self.d.post_json("/api/datasets", deep), 400, "bad_request")
        # 32 levels parse: the answer is then about the unknown field
        ok = '{"a": ' + "[" * 31 + "]" * 31 + "}"
        self.assertError(self.d.post_json("/api/jobs", ok), 400, "bad_request", path="a")
        # brackets inside strings do not count: the answer is about the dataset
        s = dict(job_spec(), dataset="[{" * 50)
        e = self.assertError(self.d.post_json("/api/jobs", s), 400, "bad_request",
                             path="dataset")
        self.assertIn("[{[{", e["message"])
        # much deeper than the parser's own stack would like
        self.assertError(self.d.post_json("/api/jobs", "[" * 2000 + "]" * 2000), 400,
                         "bad_request")
        self.assertHealthy()

    def test_body_over_limit_declared(self):
        big = json.dumps(dict(job_spec(), name="x" * (self.BODY_LIMIT + 10))).encode()
        e = self.assertError(self.d.post_json("/api/jobs", big), 413, "too_large")
        self.assertIn(str(self.BODY_LIMIT), e["message"])
        # folder registration is JSON too
        r = self.d.post_json("/api/datasets", {"name": "big", "path": "x" * 5000})
        self.assertError(r, 413, "too_large")
        self.assertEqual(self.d.get("/api/jobs").json()["jobs"], [])
        self.assertHealthy()

    def test_body_over_limit_streamed(self):
        # without Content-Length (chunked): counted while it streams
        big = json.dumps(dict(job_spec(), name="x" * (self.BODY_LIMIT + 10))).encode()
        r = self.d.request("POST", "/api/jobs", body=chunks(big, 1000),
                           headers={"Content-Type": "application/json"})
        e = self.assertError(r, 413, "too_large")
        self.assertIn(str(self.BODY_LIMIT), e["message"])
        self.assertEqual(self.d.get("/api/jobs").json()["jobs"], [])
        # just under the limit is read (and refused for its content, not its size)
        under = json.dumps({"name": "u", "path": "y" * (self.BODY_LIMIT - 100)}).encode()
        self.assertLess(len(under), self.BODY_LIMIT)
        r = self.d.request("POST", "/api/datasets", body=chunks(under, 1000),
                           headers={"Content-Type": "application/json"})
        self.assertError(r, 400, "bad_request", path="path")
        self.assertHealthy()

    def test_wrong_content_type(self):
        body = json.dumps(job_spec()).encode()
        for ctype in ("text/plain", "image/png", "multipart/form-data; boundary=x"):
            with self.subTest(ctype=ctype):
                r = self.d.request("POST", "/api/jobs", body=body,
                                   headers={"Content-Type": ctype})
                self.assertError(r, 415, "unsupported_media_type")
        r = self.d.request("POST", "/api/datasets", body=TGZ, headers={"Content-Type": "text/plain"})
        self.assertError(r, 415, "unsupported_media_type")
        # parameters and case do not matter
        r = self.d.request("POST", "/api/jobs", body=b"{",
                           headers={"Content-Type": "Application/JSON; charset=utf-8"})
        self.assertError(r, 400, "bad_request")
        self.assertHealthy()

    def test_curl_default_content_type(self):
        """`curl -d '{...}'` without -H sends application/x-www-form-urlencoded: a
        JSON object is taken as JSON; a real form (or other JSON) gets 415 saying
        what to send; malformed JSON the usual 400."""
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = self.d.request("POST", "/api/datasets", headers=form,
                           body=json.dumps({"name": "curl-fm", "path": FM}).encode())
        self.assertStatus(r, 201)
        self.assertEqual(r.json()["name"], "curl-fm")
        self.assertReport(r.json()["report"], FM)
        spec = job_spec(scratch=1, head=0, name="curl-job")
        r = self.d.request("POST", "/api/jobs", headers=form, body=json.dumps(spec).encode())
        self.assertStatus(r, 201)
        self.assertEqual(r.json()["spec"], spec)
        self.assertEqual(self.d.get(r.headers["Location"]).json()["name"], "curl-job")
        # what curl sends for -d @spec.json: the file as it is, newlines and all
        r = self.d.request("POST", "/api/jobs", headers=form,
                           body=("\n  " + json.dumps(spec, indent=2) + "\n").encode())
        self.assertStatus(r, 201)
        before = self.d.get("/api/jobs").json()["jobs"]
        for path in ("/api/jobs", "/api/datasets"):
            for body in (b"name=fm2&path=fm", b"a=1&b=2", b"", b"[1, 2]", b'"fm"'):
                with self.subTest(path=path, body=body):
                    e = self.assertError(self.d.request("POST", path, body=body, headers=form),
                                         415, "unsupported_media_type")
                    self.assertIn("not a JSON object", e["message"])
                    self.assertIn("Content-Type: application/json", e["message"])
            with self.subTest(path=path, body="malformed"):
                self.assertError(self.d.request("POST", path, body=b'{"name": ', headers=form),
                                 400, "bad_request")
        self.assertEqual(self.d.get("/api/jobs").json()["jobs"], before)
        # parameters and case of application/json
        for ctype in ("application/json; charset=utf-8", "Application/JSON;Charset=UTF-8"):
            with self.subTest(ctype=ctype):
                r = self.d.request("POST", "/api/jobs", body=json.dumps(spec).encode(),
                                   headers={"Content-Type": ctype})
                self.assertStatus(r, 201)
        # an archive is no JSON object (and one over body_limit is too large to
        # be one); images keep their own types
        r = self.d.request("POST", "/api/datasets?name=form-tgz", body=TGZ[:1000], headers=form)
        self.assertError(r, 415, "unsupported_media_type")
        r = self.d.request("POST", "/api/datasets?name=form-tgz", body=TGZ, headers=form)
        self.assertError(r, 413, "too_large")
        r = self.d.request("POST", "/api/jobs/1/predict", body=b"\x89PNG\r\n\x1a\n",
                           headers=form)
        self.assertError(r, 415, "unsupported_media_type")
        self.assertEqual([d["name"] for d in self.d.get("/api/datasets").json()["datasets"]],
                         ["fm", "curl-fm"])
        self.assertHealthy()

    def test_numbers_echo_as_written(self):
        """The stored and echoed spec shows a number as the user wrote it (0.9, not
        0.90000000000000002); 1e-4 in its shortest decimal form, 0.0001. Checked
        on the raw text of the answers and of the stored spec."""
        spec = job_spec(scratch=1, head=1, name="numbers")
        spec["phases"][0]["optimizer"]["lr"] = 0.9
        spec["phases"][1]["optimizer"]["lr"] = 0.123456789012345
        text = json.dumps(spec).replace("0.123456789012345", "1e-4")
        self.assertIn('"lr": 1e-4', text)
        r = self.d.request("POST", "/api/jobs", body=text.encode(),
                           headers={"Content-Type": "application/json"})
        self.assertStatus(r, 201)
        job_id = r.json()["id"]
        answers = {"POST": r.body.decode(),
                   "GET": self.d.get(f"/api/jobs/{job_id}").body.decode()}
        with sqlite3.connect(os.path.join(self.d.data_dir, "resnetd.db")) as db:
            answers["stored"] = db.execute("SELECT spec FROM jobs WHERE id = ?",
                                           (job_id,)).fetchone()[0]
        for where, raw in answers.items():
            with self.subTest(where=where):
                compact = raw.replace(" ", "")
                self.assertIn('"lr":0.9}', compact)
                self.assertIn('"lr":0.0001}', compact)
                self.assertNotIn("0.9000000", compact)
                self.assertNotIn("0.000100000", compact)
        # 15 significant digits come back as written too
        spec["phases"][1]["optimizer"]["lr"] = 0.123456789012345
        r = self.d.post_json("/api/jobs", spec)
        self.assertStatus(r, 201)
        self.assertIn('"lr":0.123456789012345}', r.body.decode())
        self.assertEqual(r.json()["spec"], spec)

    def test_unknown_routes(self):
        for path in ("/api/nope", "/api", "/api/", "/api/jobs/1/nope", "/api/health/x",
                     "/api/datasets/fm/x", "/api/jobs/1/metrics/x/y", "/api//jobs",
                     "/api/datasets/no-such-set", "/api/jobs/999999",
                     "/api/jobs/999999/metrics", "/api/jobs/999999/events",
                     "/api/jobs/999999/weights"):
            with self.subTest(path=path):
                self.assertError(self.d.get(path), 404, "not_found")
        self.assertError(self.d.request("POST", "/api/jobs/999999/cancel"), 404, "not_found")
        self.assertError(self.d.request("DELETE", "/api/datasets/no-such-set"), 404,
                         "not_found")
        self.assertHealthy()

    def test_wrong_method(self):
        cases = [("PUT", "/api/jobs", "GET, POST"), ("DELETE", "/api/jobs", "GET, POST"),
                 ("POST", "/api/health", "GET"), ("DELETE", "/api/info", "GET"),
                 ("POST", "/api/weights", "GET"), ("PATCH", "/api/datasets", "GET, POST"),
                 ("PUT", "/api/datasets/fm", "GET, DELETE"), ("POST", "/api/datasets/fm",
                                                             "GET, DELETE"),
                 ("DELETE", "/api/jobs/1", "GET"), ("GET", "/api/jobs/1/cancel", "POST"),
                 ("GET", "/api/jobs/1/predict", "POST"), ("POST", "/api/jobs/1/metrics", "GET"),
                 ("POST", "/api/jobs/1/events", "GET"), ("DELETE", "/api/jobs/1/weights", "GET")]
        for method, path, allow in cases:
            with self.subTest(method=method, path=path):
                headers = {"Content-Type": "application/json"} if method != "GET" else {}
                r = self.d.request(method, path, body=b"{}" if method != "GET" else None,
                                   headers=headers)
                self.assertError(r, 405, "method_not_allowed")
                self.assertEqual(r.headers.get("Allow"), allow)
        self.assertHealthy()

    def test_non_numeric_job_ids(self):
        for key in ("abc", "-1", "0", "1.5", "1e3", "0x10", "%20", "99999999999999999999"):
            for sub in ("", "/metrics", "/steps", "/classes", "/diagnosis", "/events",
                        "/weights"):
                with self.subTest(path=f"/api/jobs/{key}{sub}"):
                    self.assertError(self.d.get(f"/api/jobs/{key}{sub}"), 404, "not_found")
            with self.subTest(path=f"/api/jobs/{key}/cancel"):
                self.assertError(self.d.request("POST", f"/api/jobs/{key}/cancel"), 404,
                                 "not_found")
        self.assertHealthy()

    def test_bad_job_specs(self):
        before = self.d.get("/api/jobs").json()["jobs"]

        def phase0(**kw):
            s = job_spec()
            s["phases"][0].update(kw)
            return s

        def opt0(**kw):
            s = job_spec()
            s["phases"][0]["optimizer"].update(kw)
            return s

        def without(key):
            s = job_spec()
            del s[key]
            return s

        cases = [
            (opt0(lr=-1), "phases[0].optimizer.lr"),
            (opt0(lr=0), "phases[0].optimizer.lr"),
            (opt0(lr="0.1"), "phases[0].optimizer.lr"),
            (opt0(beta=3), "phases[0].optimizer.beta"),
            (opt0(type="rmsprop"), "phases[0].optimizer.type"),
            (dict(job_spec(), bogus=1), "bogus"),
            (dict(job_spec(), batch_size="16"), "batch_size"),
            (dict(job_spec(), batch_size=0), "batch_size"),
            (dict(job_spec(), input_size=32.5), "input_size"),
            (dict(job_spec(), name=1), "name"),
            (dict(job_spec(), phases=[]), "phases"),
            (dict(job_spec(), phases={}), "phases"),
            (phase0(epochs="1"), "phases[0].epochs"),
            (phase0(epochs=0), "phases[0].epochs"),
            (phase0(train="everything"), "phases[0].train"),
            (phase0(extra=True), "phases[0].extra"),
            (without("dataset"), "dataset"),
            (dict(job_spec(), dataset=5), "dataset"),
            (dict(job_spec(), dataset="not-registered"), "dataset"),
            (dict(job_spec(), weights="missing.safetensors"), "weights"),
            (dict(job_spec(), weights="../resnetd.db"), "weights"),
        ]
        for spec, path in cases:
            with self.subTest(path=path, spec=json.dumps(spec)[:200]):
                r = self.d.post_json("/api/jobs", spec)
                e = self.assertError(r, 400, "bad_request", path=path)
                self.assertTrue(e["message"].startswith(path), e)
                self.assertIsNone(r.headers.get("Location"))
        e = self.assertError(self.d.post_json("/api/jobs", dict(job_spec(), dataset="nope")),
                             400, "bad_request", path="dataset")
        self.assertIn("nope", e["message"])
        self.assertEqual(self.d.get("/api/jobs").json()["jobs"], before)
        self.assertHealthy()

    def write_weights(self, name, tensors, truncate=0):
        """A safetensors file of F32 tensors {name: shape} in the weights folder."""
        header, data = {}, b""
        for t, shape in tensors.items():
            n = 1
            for d in shape:
                n *= d
            header[t] = {"dtype": "F32", "shape": shape,
                         "data_offsets": [len(data), len(data) + 4 * n]}
            data += b"\0" * (4 * n)
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        blob = struct.pack("<Q", len(h)) + h + data
        path = os.path.join(self.d.weights_dir, name)
        with open(path, "wb") as f:
            f.write(blob[:len(blob) - truncate])
        return path

    def test_submit_time_checks(self):
        """What needs no training is refused at submit with the JSON path, and
        nothing is queued."""
        before = self.d.get("/api/jobs").json()["jobs"]
        self.write_weights("notresnet.safetensors", {"x.weight": [4, 4]})
        self.write_weights("truncated.safetensors", {"conv1.weight": [64, 3, 7, 7]},
                           truncate=100)
        many = dict(job_spec(), input_size=1024, batch_size=4096)
        cases = [
            (dict(job_spec(), weights="notresnet.safetensors"), "weights", "conv1.weight"),
            (dict(job_spec(), weights="truncated.safetensors"), "weights", "truncated"),
            (dict(job_spec(), class_weight={CLASSES[0]: 2.0, "zebra": 3.0}),
             "class_weight.zebra", "zebra"),
            (many, "batch_size", "GiB"),
        ]
        for spec, path, words in cases:
            with self.subTest(path=path):
                r = self.d.post_json("/api/jobs", spec)
                e = self.assertError(r, 400, "bad_request", path=path)
                self.assertTrue(e["message"].startswith(path.split(".")[0]), e)
                self.assertIn(words, e["message"])
        self.assertEqual(self.d.get("/api/jobs").json()["jobs"], before)
        # random weights without a preprocess: torch's, said in the resolved spec
        spec = job_spec(scratch=1, head=0, name="auto")
        del spec["preprocess"]
        spec["class_weight"] = {CLASSES[1]: 2.0}
        r = self.d.post_json("/api/jobs", spec)
        self.assertStatus(r, 201)
        res = r.json()["resolved"]
        self.assertEqual((res["preprocess"], res["preprocess_from"], res["variant"]),
                         ("torch", "default for random weights", "torchvision"))
        self.assertEqual(res["bn"], ["train"])
        self.assertGreater(res["memory_estimate_bytes"], 100e6)
        self.assertGreater(res["memory_limit_bytes"], res["memory_estimate_bytes"])
        self.assertEqual(self.d.get(r.headers["Location"]).json()["resolved"], res)
        job = self.d.wait_job(r.json()["id"])
        self.assertEqual(job["state"], "completed", job)
        self.assertHealthy()

    def test_full_queue_is_unavailable(self):
        d = self.start_own("--max-jobs-queued", "1")
        self.assertStatus(d.post_json("/api/datasets", {"name": "fm", "path": FM}), 201, d)
        first = d.post_json("/api/jobs", job_spec(scratch=20, head=0, name="runs"))
        self.assertStatus(first, 201, d)
        d.wait_job(first.json()["id"], states=("running",) + FINAL, timeout=30)
        self.assertStatus(d.post_json("/api/jobs", job_spec(name="waits")), 201, d)
        r = d.post_json("/api/jobs", job_spec(name="refused"))
        e = self.assertError(r, 503, "unavailable", d=d)
        self.assertIn("queue", e["message"])
        self.assertEqual([j["name"] for j in d.get("/api/jobs").json()["jobs"]],
                         ["waits", "runs"])
        for j in d.get("/api/jobs").json()["jobs"]:
            d.request("POST", f"/api/jobs/{j['id']}/cancel")
        self.assertHealthy(d)

    def test_weights_list(self):
        listing = self.d.get("/api/weights").json()
        self.assertEqual(listing["weights"], [])
        # the shipped manifest's names, none downloaded (test_named_weights.py
        # downloads them from a loopback mirror)
        named = {w["name"]: w for w in listing["named"]}
        self.assertLessEqual({"torchvision-v1", "keras", "keras-notop"}, set(named))
        self.assertEqual(named["torchvision-v1"]["aliases"], ["imagenet"])
        self.assertEqual({w["state"] for w in named.values()}, {"available"})
        with open(os.path.join(self.d.weights_dir, "junk.safetensors"), "wb") as f:
            f.write(b"this is not a safetensors file")
        with open(os.path.join(self.d.weights_dir, "notes.txt"), "w") as f:
            f.write("not listed")
        try:
            r = self.d.get("/api/weights")
            self.assertStatus(r, 200)
            w = r.json()["weights"]
            self.assertEqual([x["name"] for x in w], ["junk.safetensors"])
            self.assertEqual(w[0]["size"], 30)
            self.assertIsInstance(w[0]["error"], str)
            self.assertTrue(w[0]["error"])
            self.assertNotIn("variant", w[0])
            # a junk file cannot be a job's weights either: refused at submit
            r = self.d.post_json("/api/jobs", dict(job_spec(), weights="junk.safetensors"))
            e = self.assertError(r, 400, "bad_request", path="weights")
            self.assertIn("junk.safetensors", e["message"])
        finally:
            os.unlink(os.path.join(self.d.weights_dir, "junk.safetensors"))
            os.unlink(os.path.join(self.d.weights_dir, "notes.txt"))
        self.assertHealthy()


# ---------------------------------------------------------------------------
class Datasets(ApiCase):
    """Registration, uploads and their refusals (--upload-limit 256K)."""

    UPLOAD_LIMIT = 256 * 1024

    def setUp(self):
        self.d = self.start_own("--upload-limit", "256K", "--body-limit", "4K")

    def assertNoLeftovers(self, before):
        self.assertUploadsAre(before)
        found = []
        for dirpath, dirnames, filenames in os.walk(TMP):
            found += [os.path.join(dirpath, f) for f in filenames if "evil" in f]
        self.assertEqual(found, [])

    def test_register_folder(self):
        t0 = time.time()
        r = self.d.post_json("/api/datasets", {"name": "fm-folder", "path": FM})
        self.assertStatus(r, 201)
        d = r.json()
        self.assertEqual(r.headers.get("Location"), f"/api/datasets/{d['id']}")
        self.assertEqual((d["name"], d["source"]), ("fm-folder", "folder"))
        self.assertEqual(os.path.realpath(d["path"]), os.path.realpath(FM))
        self.assertLessEqual(abs(d["created"] - t0), 60)
        self.assertEqual(d["report"]["layout"], "class_folders")
        self.assertReport(d["report"], FM)
        # by id, by name, in the list
        one = self.d.get(r.headers["Location"])
        self.assertStatus(one, 200)
        self.assertEqual(one.json(), d)
        self.assertEqual(self.d.get("/api/datasets/fm-folder").json(), d)
        listed = [x for x in self.d.get("/api/datasets").json()["datasets"]
                  if x["id"] == d["id"]]
        self.assertEqual(len(listed), 1)
        self.assertEqual(listed[0]["name"], "fm-folder")
        self.assertEqual(listed[0]["source"], "folder")
        self.assertEqual(listed[0]["classes"], CLASSES)
        self.assertEqual(listed[0]["images"], len(CLASSES) * PER_CLASS)
        # relative to data_root
        r = self.d.post_json("/api/datasets", {"name": "fm-relative", "path": "fm"})
        self.assertStatus(r, 201)
        self.assertEqual(os.path.realpath(r.json()["path"]), os.path.realpath(FM))
        self.assertReport(r.json()["report"], FM)
        # a name in use
        self.assertError(self.d.post_json("/api/datasets", {"name": "fm-folder", "path": FM}),
                         409, "conflict", path="name")

    def test_register_refusals(self):
        cases = [({"path": FM}, "name"), ({"name": "", "path": FM}, "name"),
                 ({"name": "a/b", "path": FM}, "name"), ({"name": "x" * 65, "path": FM}, "name"),
                 ({"name": 3, "path": FM}, "name"), ({"name": "ok"}, "path"),
                 ({"name": "ok", "path": ""}, "path"),
                 ({"name": "ok", "path": os.path.join(TMP, "missing-root", "x")}, None)]
        for body, path in cases:
            with self.subTest(body=body):
                r = self.d.post_json("/api/datasets", body)
                self.assertIn(r.status, (400, 403), r)
                if path:
                    self.assertError(r, 400, "bad_request", path=path)
        self.assertNotIn("ok", [x["name"] for x in
                                self.d.get("/api/datasets").json()["datasets"]])
        self.assertHealthy()

    def test_register_unknown_field(self):
        for key in ("x", "a", "extra", "bogus_field_name", "x" * 30):
            for body in ({key: 1}, {"name": "ok", "path": "fm", key: 1}):
                with self.subTest(body=body):
                    e = self.assertError(self.d.post_json("/api/datasets", body), 400,
                                         "bad_request", path=key)
                    self.assertTrue(e["message"].startswith(f"{key}: unknown field"), e)
        self.assertHealthy()

    def test_folder_outside_data_root_is_forbidden(self):
        for path in ("/etc", "../x", "../outside/fm", os.path.join(TMP, "outside", "fm"),
                     "link", "fm/../../outside/fm", "/"):
            with self.subTest(path=path):
                r = self.d.post_json("/api/datasets", {"name": "outside", "path": path})
                self.assertError(r, 403, "forbidden", path="path")
        self.assertError(self.d.get("/api/datasets/outside"), 404, "not_found")
        self.assertHealthy()

    def test_delete(self):
        r = self.d.post_json("/api/datasets", {"name": "fm-delete", "path": FM})
        self.assertStatus(r, 201)
        did = r.json()["id"]
        r = self.d.request("DELETE", "/api/datasets/fm-delete")
        self.assertStatus(r, 204)
        self.assertEqual(r.body, b"")
        self.assertError(self.d.get(f"/api/datasets/{did}"), 404, "not_found")
        self.assertError(self.d.get("/api/datasets/fm-delete"), 404, "not_found")
        self.assertError(self.d.request("DELETE", f"/api/datasets/{did}"), 404, "not_found")
        self.assertNotIn(did, [x["id"] for x in self.d.get("/api/datasets").json()["datasets"]])
        self.assertTrue(os.path.isdir(FM))  # a registered folder is never removed
        # by id too
        r = self.d.post_json("/api/datasets", {"name": "fm-delete", "path": FM})
        self.assertStatus(r, 201)
        self.assertStatus(self.d.request("DELETE", r.headers["Location"]), 204)
        self.assertError(self.d.get(r.headers["Location"]), 404, "not_found")

    def check_upload(self, r, name, root_under_dest):
        self.assertStatus(r, 201)
        d = r.json()
        self.assertEqual(r.headers.get("Location"), f"/api/datasets/{d['id']}")
        self.assertEqual((d["name"], d["source"]), (name, "upload"))
        dest = os.path.join(self.uploads_dir(), name)
        want_root = os.path.join(dest, root_under_dest) if root_under_dest else dest
        self.assertEqual(os.path.realpath(d["path"]), os.path.realpath(want_root))
        self.assertReport(d["report"], want_root)
        for c in CLASSES:
            self.assertEqual(sorted(os.listdir(os.path.join(want_root, c))),
                             sorted(os.listdir(os.path.join(FM, c))))
        self.assertEqual(self.d.get(f"/api/datasets/{name}").json(), d)
        self.assertUploadsAre([name])  # and no temporary file
        # DELETE removes the unpacked files
        self.assertStatus(self.d.request("DELETE", f"/api/datasets/{name}"), 204)
        self.assertFalse(os.path.exists(dest))
        self.assertError(self.d.get(f"/api/datasets/{name}"), 404, "not_found")

    def test_upload_tar_gz(self):
        r = self.d.upload("up-tgz", TGZ, "application/gzip")
        self.check_upload(r, "up-tgz", "fm")
        for ctype in ("application/x-gzip", "application/octet-stream"):
            with self.subTest(ctype=ctype):
                self.check_upload(self.d.upload("up-tgz2", TGZ, ctype), "up-tgz2", "fm")
        # a plain tar, streamed without Content-Length
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(FM, arcname="fm")
        r = self.d.request("POST", "/api/datasets?name=up-tar", body=chunks(buf.getvalue()),
                           headers={"Content-Type": "application/x-tar"})
        self.check_upload(r, "up-tar", "fm")

    def test_upload_multipart(self):
        body, ctype = multipart([("name", "up-form"),
                                 ("file", ("fm.tar.gz", "application/gzip", TGZ))])
        r = self.d.request("POST", "/api/datasets", body=body, headers={"Content-Type": ctype})
        self.check_upload(r, "up-form", "fm")
        # the file first, then the name
        body, ctype = multipart([("file", ("fm.zip", "application/zip", ZIP_FLAT)),
                                 ("name", "up-form2")])
        r = self.d.request("POST", "/api/datasets", body=body, headers={"Content-Type": ctype})
        self.check_upload(r, "up-form2", None)
        # no file field
        body, ctype = multipart([("name", "up-form3")])
        r = self.d.request("POST", "/api/datasets", body=body, headers={"Content-Type": ctype})
        self.assertError(r, 400, "bad_request", path="file")
        self.assertHealthy()

    def test_upload_zip(self):
        self.check_upload(self.d.upload("up-zip", ZIP_FLAT, "application/zip"), "up-zip", None)

    def test_upload_needs_a_valid_free_name(self):
        before = self.uploads_listing()
        for name in (None, "", "a%2Fb", "..", "x" * 65):
            with self.subTest(name=name):
                self.assertError(self.d.upload(name, TGZ), 400, "bad_request", path="name")
        self.assertStatus(self.d.post_json("/api/datasets", {"name": "taken", "path": FM}), 201)
        self.assertError(self.d.upload("taken", TGZ), 409, "conflict", path="name")
        self.assertUploadsAre(before)
        self.assertHealthy()

    def test_upload_over_limit_declared(self):
        before = self.uploads_listing()
        big = os.urandom(self.UPLOAD_LIMIT + 4096)
        e = self.assertError(self.d.upload("too-big", big), 413, "too_large")
        self.assertIn(str(self.UPLOAD_LIMIT), e["message"])
        self.assertUploadsAre(before)
        self.assertError(self.d.get("/api/datasets/too-big"), 404, "not_found")
        self.assertHealthy()

    def test_upload_over_limit_streamed(self):
        before = self.uploads_listing()
        big = os.urandom(self.UPLOAD_LIMIT + 4096)
        # without Content-Length (chunked): stopped by counting
        r = self.d.request("POST", "/api/datasets?name=too-big", body=chunks(big),
                           headers={"Content-Type": "application/gzip"})
        e = self.assertError(r, 413, "too_large")
        self.assertIn(str(self.UPLOAD_LIMIT), e["message"])
        self.assertUploadsAre(before)
        # as a form
        body, ctype = multipart([("name", "too-big2"),
                                 ("file", ("x.tar.gz", "application/gzip", big))])
        r = self.d.request("POST", "/api/datasets", body=chunks(body),
                           headers={"Content-Type": ctype})
        self.assertError(r, 413, "too_large")
        self.assertUploadsAre(before)
        for name in ("too-big", "too-big2"):
            self.assertError(self.d.get(f"/api/datasets/{name}"), 404, "not_found")
        # an archive under the limit still goes through
        self.assertStatus(self.d.upload("fits", TGZ), 201)
        self.assertHealthy()

    def test_zip_slip_is_refused(self):
        before = self.uploads_listing()
        png = os.path.join(FM, CLASSES[0], sorted(os.listdir(os.path.join(FM, CLASSES[0])))[0])
        for entry in ("../evil.txt", "../../evil.txt", "fm/../../evil.txt",
                      os.path.join(TMP, "abs-evil.txt")):
            with self.subTest(kind="zip", entry=entry):
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w") as z:
                    z.write(png, arcname=f"fm/{CLASSES[0]}/a.png")
                    z.writestr(entry, "owned")
                r = self.d.upload("slip", buf.getvalue(), "application/zip")
                e = self.assertError(r, 400, "bad_request")
                self.assertIn(entry, e["message"])
                self.assertNoLeftovers(before)
            with self.subTest(kind="tar", entry=entry):
                buf = io.BytesIO()
                with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                    tar.add(png, arcname=f"fm/{CLASSES[0]}/a.png")
                    ti = tarfile.TarInfo(entry)
                    ti.size = 5
                    tar.addfile(ti, io.BytesIO(b"owned"))
                r = self.d.upload("slip", buf.getvalue(), "application/gzip")
                e = self.assertError(r, 400, "bad_request")
                self.assertIn(entry, e["message"])
                self.assertNoLeftovers(before)
        self.assertError(self.d.get("/api/datasets/slip"), 404, "not_found")
        self.assertHealthy()

    def test_links_in_archives_are_refused(self):
        before = self.uploads_listing()
        png = os.path.join(FM, CLASSES[0], sorted(os.listdir(os.path.join(FM, CLASSES[0])))[0])
        for kind in ("symlink", "hardlink", "fifo"):
            with self.subTest(kind=kind):
                buf = io.BytesIO()
                with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                    tar.add(png, arcname=f"fm/{CLASSES[0]}/a.png")
                    ti = tarfile.TarInfo(f"fm/{CLASSES[1]}/evil-link.png")
                    if kind == "symlink":
                        ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
                    elif kind == "hardlink":
                        ti.type, ti.linkname = tarfile.LNKTYPE, f"fm/{CLASSES[0]}/a.png"
                    else:
                        ti.type = tarfile.FIFOTYPE
                    tar.addfile(ti)
                r = self.d.upload("links", buf.getvalue(), "application/gzip")
                e = self.assertError(r, 400, "bad_request")
                self.assertIn("evil-link.png", e["message"])
                self.assertNoLeftovers(before)
        with self.subTest(kind="zip symlink"):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.write(png, arcname=f"fm/{CLASSES[0]}/a.png")
                zi = zipfile.ZipInfo(f"fm/{CLASSES[1]}/evil-link.png")
                zi.create_system = 3
                zi.external_attr = 0o120777 << 16
                z.writestr(zi, "/etc/passwd")
            r = self.d.upload("links", buf.getvalue(), "application/zip")
            e = self.assertError(r, 400, "bad_request")
            self.assertIn("evil-link.png", e["message"])
            self.assertNoLeftovers(before)
        self.assertHealthy()

    def test_not_an_archive(self):
        before = self.uploads_listing()
        for data in (os.urandom(5000), b"", TGZ[: len(TGZ) // 2], b"PK\x03\x04" + os.urandom(100)):
            with self.subTest(size=len(data)):
                r = self.d.upload("junk", data, "application/octet-stream")
                self.assertError(r, 400, "bad_request")
                self.assertUploadsAre(before)
        # an archive of no images is not a dataset
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            ti = tarfile.TarInfo("readme.txt")
            ti.size = 2
            tar.addfile(ti, io.BytesIO(b"hi"))
        self.assertError(self.d.upload("junk", buf.getvalue()), 400, "bad_request")
        self.assertUploadsAre(before)
        self.assertError(self.d.get("/api/datasets/junk"), 404, "not_found")
        self.assertHealthy()


# ---------------------------------------------------------------------------
class CompletedJobs(ApiCase):
    """Two tiny jobs submitted back to back: the first's event stream is read from
    submission to its end; every test looks at the finished jobs."""

    @classmethod
    def setUpClass(cls):
        d = cls.d = cls.start()
        r = d.post_json("/api/datasets", {"name": "fm", "path": FM})
        assert r.status == 201, r
        cls.report = r.json()["report"]
        cls.spec1 = job_spec(scratch=1, head=2, batch=8, name="first")
        cls.spec2 = job_spec(scratch=1, head=1, batch=16, name="second", seed=2)
        cls.t_submit = time.time()
        cls.submit1 = d.post_json("/api/jobs", cls.spec1)
        cls.submit2 = d.post_json("/api/jobs", cls.spec2)
        assert cls.submit1.status == 201, cls.submit1
        assert cls.submit2.status == 201, cls.submit2
        cls.id1, cls.id2 = cls.submit1.json()["id"], cls.submit2.json()["id"]
        # before completion
        cls.early_weights = d.get(f"/api/jobs/{cls.id1}/weights")
        cls.early_predict = d.request("POST", f"/api/jobs/{cls.id1}/predict", body=cls.png(),
                                      headers={"Content-Type": "image/png"})
        cls.early_info = d.get("/api/info").json()
        cls.early_state2 = d.get(f"/api/jobs/{cls.id2}").json()["state"]
        cls.events_type, cls.events = d.events(cls.id1)
        cls.job1 = d.wait_job(cls.id1)
        cls.job2 = d.wait_job(cls.id2)

    @staticmethod
    def png(cls_index=0, i=0):
        folder = os.path.join(FM, CLASSES[cls_index])
        with open(os.path.join(folder, sorted(os.listdir(folder))[i]), "rb") as f:
            return f.read()

    def metrics(self, job_id=None):
        r = self.d.get(f"/api/jobs/{job_id or self.id1}/metrics")
        self.assertStatus(r, 200)
        return r.json()

    def steps_per_epoch(self, batch):
        return math.ceil(self.report["totals"]["train"] / batch)

    def test_submit_answer(self):
        r = self.submit1
        j = r.json()
        self.assertEqual(r.headers.get("Location"), f"/api/jobs/{j['id']}")
        self.assertEqual(set(j), {"id", "name", "state", "error", "created", "started",
                                  "finished", "epochs_total", "epochs_done", "phase",
                                  "phase_name", "classes", "progress", "best",
                                  "cancel_requested", "spec", "resolved", "fetch"})
        self.assertEqual(j["resolved"]["variant"], "torchvision")
        self.assertEqual(j["resolved"]["preprocess"], "torch")
        self.assertEqual(j["resolved"]["preprocess_from"], "job")
        self.assertEqual(j["name"], "first")
        self.assertIn(j["state"], ("queued", "running"))
        self.assertIsNone(j["error"])
        self.assertIsNone(j["finished"])
        self.assertLess(abs(j["created"] - self.t_submit), 60)
        self.assertEqual((j["epochs_total"], j["epochs_done"]), (3, 0))
        self.assertIs(j["cancel_requested"], False)
        self.assertIsNone(j["best"])
        self.assertEqual(j["spec"], self.spec1)
        j2 = self.submit2.json()
        self.assertEqual(j2["id"], j["id"] + 1)
        self.assertEqual(j2["state"], "queued")
        self.assertEqual((j2["started"], j2["epochs_total"], j2["progress"]), (None, 2, None))
        self.assertEqual(self.submit2.headers.get("Location"), f"/api/jobs/{j2['id']}")

    def test_fifo(self):
        self.assertEqual(self.early_state2, "queued")
        self.assertEqual(self.early_info["queue"], {"running": self.id1, "queued": 1})
        j1, j2 = self.job1, self.job2
        self.assertEqual((j1["state"], j2["state"]), ("completed", "completed"),
                         self.d.log_tail())
        self.assertLessEqual(j1["created"], j2["created"])
        self.assertLessEqual(j1["started"], j1["finished"])
        self.assertGreaterEqual(j2["started"], j1["finished"])
        self.assertLessEqual(j2["started"], j2["finished"])
        jobs = self.d.get("/api/jobs").json()["jobs"]
        self.assertEqual([j["id"] for j in jobs], [self.id2, self.id1])  # newest first
        self.assertEqual(jobs[1], self.d.get(f"/api/jobs/{self.id1}").json())
        self.assertEqual(self.d.get("/api/info").json()["queue"], {"running": None, "queued": 0})

    def test_finished_job(self):
        j = self.d.get(f"/api/jobs/{self.id1}").json()
        self.assertEqual(j["state"], "completed")
        self.assertIsNone(j["error"])
        self.assertEqual((j["epochs_total"], j["epochs_done"]), (3, 3))
        self.assertEqual((j["phase"], j["phase_name"]), (1, "head"))
        self.assertEqual(j["classes"], CLASSES)
        self.assertIs(j["cancel_requested"], False)
        self.assertEqual(j["spec"], self.spec1)
        # what the submit resolved survives the start and the end of the job
        self.assertEqual(j["resolved"], self.submit1.json()["resolved"])
        epochs = self.metrics()["epochs"]
        best = min(epochs, key=lambda e: (e["val_loss"], e["epoch"]))
        self.assertEqual(j["best"]["epoch"], best["epoch"])
        self.assertAlmostEqual(j["best"]["val_loss"], best["val_loss"], places=9)
        self.assertAlmostEqual(j["best"]["val_acc"], best["val_acc"], places=9)

    def test_metrics(self):
        m = self.metrics()
        self.assertEqual(m["job"], self.id1)
        epochs = m["epochs"]
        self.assertEqual(len(epochs), self.job1["epochs_total"])
        self.assertEqual([e["epoch"] for e in epochs], [0, 1, 2])
        self.assertEqual([e["phase"] for e in epochs], [0, 1, 1])
        self.assertEqual([e["phase_name"] for e in epochs], ["scratch", "head", "head"])
        self.assertEqual([e["phase_epoch"] for e in epochs], [0, 0, 1])
        n_val = self.report["totals"]["val"]
        for e in epochs:
            with self.subTest(epoch=e["epoch"]):
                self.assertAlmostEqual(e["lr"], 0.001, places=6)
                for k in ("train_loss", "val_loss"):
                    self.assertGreater(e[k], 0)
                for k in ("train_acc", "val_acc", "val_balanced_acc"):
                    self.assertGreaterEqual(e[k], 0)
                    self.assertLessEqual(e[k], 1)
                self.assertGreater(e["seconds"], 0)
                self.assertGreater(e["images_per_second"], 0)
                self.assertIsInstance(e["best"], bool)
                self.assertIsInstance(e["cached"], bool)
                self.assertEqual(len(e["grad_norm"]), 6)
                self.assertEqual(len(e["weight_change"]), 6)
                self.assertGreater(e["grad_norm"][5], 0)  # the head always trains
                self.assertEqual(len(e["predicted"]), 3)
                self.assertEqual(sum(e["predicted"]), n_val)
        self.assertIs(epochs[0]["cached"], False)
        self.assertGreater(epochs[0]["grad_norm"][0], 0)      # scratch: everything trains
        self.assertEqual(epochs[1]["grad_norm"][0], 0)        # head: conv1 frozen
        self.assertIs(epochs[0]["best"], True)                # first of its phase
        self.assertIs(epochs[1]["best"], True)
        # the second job's epochs are its own
        m2 = self.metrics(self.id2)
        self.assertEqual(m2["job"], self.id2)
        self.assertEqual([e["epoch"] for e in m2["epochs"]], [0, 1])

    def test_steps(self):
        r = self.d.get(f"/api/jobs/{self.id1}/steps")
        self.assertStatus(r, 200)
        s = r.json()
        self.assertEqual(s["job"], self.id1)
        steps = s["steps"]
        per = self.steps_per_epoch(8)
        self.assertEqual(len(steps), 3 * per)
        self.assertEqual([x["index"] for x in steps], list(range(3 * per)))
        self.assertEqual([(x["epoch"], x["step"]) for x in steps],
                         [(e, k) for e in range(3) for k in range(per)])
        for x in steps:
            self.assertEqual(x["steps"], per)
            self.assertGreater(x["loss"], 0)
            self.assertAlmostEqual(x["lr"], 0.001, places=6)
        after = self.d.get(f"/api/jobs/{self.id1}/steps?after=10").json()["steps"]
        self.assertEqual(after, steps[11:])
        self.assertEqual(self.d.get(f"/api/jobs/{self.id1}/steps?after=-1").json()["steps"],
                         steps)
        self.assertEqual(self.d.get(f"/api/jobs/{self.id1}/steps?after={3 * per - 1}")
                         .json()["steps"], [])
        self.assertEqual(self.d.get(f"/api/jobs/{self.id1}/steps?after=100000").json()["steps"],
                         [])
        for bad in ("x", "", "1.5", "3a"):
            with self.subTest(after=bad):
                self.assertError(self.d.get(f"/api/jobs/{self.id1}/steps?after={bad}"), 400,
                                 "bad_request", path="after")
        steps2 = self.d.get(f"/api/jobs/{self.id2}/steps").json()["steps"]
        self.assertEqual(len(steps2), 2 * self.steps_per_epoch(16))
        self.assertEqual(steps2[0]["index"], 0)

    def test_classes(self):
        n_val = self.report["totals"]["val"]
        metrics = self.metrics()["epochs"]
        for query, epoch in (("", 2), ("?epoch=0", 0), ("?epoch=1", 1), ("?epoch=2", 2)):
            with self.subTest(query=query):
                r = self.d.get(f"/api/jobs/{self.id1}/classes{query}")
                self.assertStatus(r, 200)
                c = r.json()
                self.assertEqual((c["job"], c["epoch"]), (self.id1, epoch))
                self.assertEqual([x["class"] for x in c["classes"]], [0, 1, 2])
                self.assertEqual([x["name"] for x in c["classes"]], CLASSES)
                self.assertEqual([x["support"] for x in c["classes"]],
                                 [self.report["counts"][k]["val"] for k in CLASSES])
                self.assertEqual(sum(x["support"] for x in c["classes"]), n_val)
                conf = c["confusion"]
                self.assertEqual([len(row) for row in conf], [3, 3, 3])
                self.assertEqual(sum(map(sum, conf)), n_val)
                self.assertEqual([sum(row) for row in conf],
                                 [x["support"] for x in c["classes"]])
                self.assertEqual([sum(conf[t][p] for t in range(3)) for p in range(3)],
                                 [x["predicted"] for x in c["classes"]])
                self.assertEqual(metrics[epoch]["predicted"],
                                 [x["predicted"] for x in c["classes"]])
                self.assertAlmostEqual(metrics[epoch]["val_acc"],
                                       sum(conf[i][i] for i in range(3)) / n_val, places=6)
                for x in c["classes"]:
                    if x["support"]:
                        self.assertAlmostEqual(x["recall"],
                                               conf[x["class"]][x["class"]] / x["support"],
                                               places=6)
        self.assertError(self.d.get(f"/api/jobs/{self.id1}/classes?epoch=3"), 404, "not_found")
        for bad in ("x", "-1", ""):
            with self.subTest(epoch=bad):
                self.assertError(self.d.get(f"/api/jobs/{self.id1}/classes?epoch={bad}"), 400,
                                 "bad_request", path="epoch")

    def test_diagnosis(self):
        r = self.d.get(f"/api/jobs/{self.id1}/diagnosis")
        self.assertStatus(r, 200)
        diag = r.json()
        self.assertEqual(set(diag), {"job", "findings"})
        self.assertEqual(diag["job"], self.id1)
        self.assertIsInstance(diag["findings"], list)
        for f in diag["findings"]:
            self.assertIsInstance(f, dict)

    def test_events(self):
        self.assertTrue(self.events_type.startswith("text/event-stream"), self.events_type)
        ev = self.events
        kinds = [k for k, _ in ev]
        self.assertEqual(kinds[0], "state", ev[:3])
        self.assertEqual(ev[0][1]["job"], self.id1)
        self.assertIn(ev[0][1]["state"], ("queued", "running"))
        self.assertEqual(ev[-1], ("state", {"job": self.id1, "state": "completed",
                                            "error": None}))
        self.assertTrue(set(kinds) <= {"state", "step", "epoch", "finding"}, set(kinds))
        # epochs: all three, equal to /metrics
        metrics = self.metrics()["epochs"]
        epochs = [d for k, d in ev if k == "epoch"]
        self.assertEqual([e["epoch"] for e in epochs], [0, 1, 2])
        for e, m in zip(epochs, metrics):
            for key in ("phase", "phase_name", "phase_epoch", "train_loss", "val_loss",
                        "val_acc", "predicted"):
                if isinstance(m[key], float):
                    self.assertAlmostEqual(e[key], m[key], places=9, msg=key)
                else:
                    self.assertEqual(e[key], m[key], key)
        # steps: in order, each equal to /steps; every step of epochs 1 and 2 (the
        # stream opened before the first epoch ended)
        steps = {(x["epoch"], x["step"]): x
                 for x in self.d.get(f"/api/jobs/{self.id1}/steps").json()["steps"]}
        seen = [(d["epoch"], d["step"]) for k, d in ev if k == "step"]
        self.assertEqual(seen, sorted(set(seen)))
        per = self.steps_per_epoch(8)
        self.assertEqual([s for s in seen if s[0] >= 1], [(e, k) for e in (1, 2)
                                                           for k in range(per)])
        for k, d in ev:
            if k == "step":
                self.assertEqual(d["job"], self.id1)
                self.assertEqual(d["steps"], per)
                self.assertAlmostEqual(d["loss"], steps[(d["epoch"], d["step"])]["loss"],
                                       places=9)
        # each epoch event follows that epoch's last step
        order = [(k, d.get("epoch"), d.get("step")) for k, d in ev if k in ("step", "epoch")]
        for i, (k, e, _) in enumerate(order):
            if k == "epoch" and e >= 1:
                self.assertEqual(order[i - 1], ("step", e, per - 1))
        # a finished job's stream: its state, then the end
        _, ev2 = self.d.events(self.id2, timeout=20)
        self.assertEqual(ev2, [("state", {"job": self.id2, "state": "completed",
                                          "error": None})])

    def test_weights_download(self):
        self.assertError(self.early_weights, 409, "conflict")
        r = self.d.get(f"/api/jobs/{self.id1}/weights")
        self.assertStatus(r, 200)
        self.assertEqual(r.headers.get("Content-Type"), "application/octet-stream")
        data = r.body
        self.assertEqual(int(r.headers["Content-Length"]), len(data))
        (n,) = struct.unpack("<Q", data[:8])
        self.assertLess(8 + n, len(data))
        header = json.loads(data[8:8 + n])
        meta = header["__metadata__"]
        self.assertEqual(json.loads(meta["classes"]), CLASSES)
        self.assertEqual(meta["input_size"], "32")
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        self.assertGreater(len(tensors), 100)
        end = max(v["data_offsets"][1] for v in tensors.values())
        self.assertEqual(8 + n + end, len(data))
        heads = [v for k, v in tensors.items() if v["shape"] and v["shape"][0] == 3 and
                 len(v["shape"]) == 2]
        self.assertEqual(len(heads), 1, "one 3-class head weight")
        # dropped into weights_dir, the file is listed
        with open(os.path.join(self.d.weights_dir, "fm.safetensors"), "wb") as f:
            f.write(data)
        w = self.d.get("/api/weights").json()["weights"]
        self.assertEqual(len(w), 1, w)
        self.assertEqual((w[0]["name"], w[0]["size"], w[0]["variant"], w[0]["head_classes"],
                          w[0]["tensors"]),
                         ("fm.safetensors", len(data), "torchvision", 3, len(tensors)))
        self.assertNotIn("error", w[0])
        self.assertGreater(w[0]["parameters"], 20_000_000)
        self.assertEqual(w[0]["preprocess"], "torch")

    def test_predict(self):
        self.assertError(self.early_predict, 409, "conflict")
        url = f"/api/jobs/{self.id1}/predict"
        r = self.d.request("POST", url + "?top=3", body=self.png(0),
                           headers={"Content-Type": "image/png"})
        self.assertStatus(r, 200)
        p = r.json()
        self.assertEqual(p["job"], self.id1)
        top = p["top"]
        self.assertEqual(len(top), 3)
        self.assertEqual(sorted(x["class"] for x in top), CLASSES)
        for x in top:
            self.assertEqual(CLASSES[x["index"]], x["class"])
            self.assertGreaterEqual(x["prob"], 0)
            self.assertLessEqual(x["prob"], 1)
        probs = [x["prob"] for x in top]
        self.assertEqual(probs, sorted(probs, reverse=True))
        self.assertLessEqual(sum(probs), 1 + 1e-6)
        self.assertGreater(sum(probs), 0.99)  # all three classes
        # the default top is 5: all 3 classes
        r = self.d.request("POST", url, body=self.png(0), headers={"Content-Type": "image/png"})
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["top"], top)
        r = self.d.request("POST", url + "?top=1", body=self.png(0),
                           headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.json()["top"], top[:1])
        # multipart
        body, ctype = multipart([("file", ("a.png", "image/png", self.png(0)))])
        r = self.d.request("POST", url + "?top=3", body=body, headers={"Content-Type": ctype})
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["top"], top)
        # another class's image gives its own answer, over the same classes
        r = self.d.request("POST", url + "?top=2", body=self.png(2, 3),
                           headers={"Content-Type": "image/png"})
        self.assertStatus(r, 200)
        self.assertEqual(len(r.json()["top"]), 2)
        self.assertTrue({x["class"] for x in r.json()["top"]} <= set(CLASSES))
        # refusals
        self.assertError(self.d.request("POST", url, body=os.urandom(2000),
                                        headers={"Content-Type": "image/png"}),
                         415, "unsupported_media_type")
        self.assertError(self.d.request("POST", url, body=b"",
                                        headers={"Content-Type": "image/png"}),
                         415, "unsupported_media_type")
        broken = self.png(0)[:60]
        self.assertError(self.d.request("POST", url, body=broken,
                                        headers={"Content-Type": "image/png"}),
                         400, "bad_request")
        for bad in ("0", "1001", "x", "-1"):
            with self.subTest(top=bad):
                self.assertError(self.d.request("POST", f"{url}?top={bad}", body=self.png(0),
                                                headers={"Content-Type": "image/png"}),
                                 400, "bad_request", path="top")
        self.assertHealthy()

    def test_zz_predict_refuses_other_media_types(self):
        # (named to run last in its class: these are answered before the body is read)
        url = f"/api/jobs/{self.id1}/predict"
        for ctype in ("text/plain", "application/json", "image/gif"):
            with self.subTest(ctype=ctype):
                self.assertError(self.d.request("POST", url, body=self.png(0),
                                                headers={"Content-Type": ctype}),
                                 415, "unsupported_media_type")
        self.assertHealthy()

    def test_cancel_finished_job(self):
        for jid in (self.id1, self.id2):
            e = self.assertError(self.d.request("POST", f"/api/jobs/{jid}/cancel"), 409,
                                 "conflict")
            self.assertIn("completed", e["message"])
            self.assertEqual(self.d.get(f"/api/jobs/{jid}").json()["state"], "completed")
        self.assertHealthy()


# ---------------------------------------------------------------------------
class RunningJob(ApiCase):
    """A long job (30 epochs of everything) that trains while the tests run; they
    run in name order, and test_d cancels it."""

    EPOCHS = 30

    @classmethod
    def setUpClass(cls):
        d = cls.d = cls.start()
        r = d.post_json("/api/datasets", {"name": "fm", "path": FM})
        assert r.status == 201, r
        r = d.post_json("/api/jobs", job_spec(scratch=cls.EPOCHS, head=0, batch=16,
                                              name="long"))
        assert r.status == 201, r
        cls.long_id = r.json()["id"]
        deadline = time.time() + 60
        while time.time() < deadline:
            j = d.get(f"/api/jobs/{cls.long_id}").json()
            if j["state"] == "running" and j["progress"]:
                break
            assert j["state"] in ("queued", "running"), f"{j}\n{d.log_tail()}"
            time.sleep(0.05)

    def assertTraining(self):
        j = self.d.get(f"/api/jobs/{self.long_id}").json()
        self.assertEqual(j["state"], "running", self.d.log_tail())
        return j

    def test_a_concurrent_reads_while_training(self):
        self.assertTraining()
        n = 200
        barrier = threading.Barrier(n, timeout=60)
        results = [None] * n

        def client(i):
            try:
                barrier.wait()
                conn = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=60)
                try:
                    conn.request("GET", f"/api/jobs/{self.long_id}/metrics")
                    resp = conn.getresponse()
                    body = resp.read()
                    results[i] = (resp.status, json.loads(body))
                finally:
                    conn.close()
            except Exception as e:  # reported below
                results[i] = ("error", repr(e))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        elapsed = time.time() - t0
        bad = [r for r in results if r is None or r[0] != 200]
        self.assertEqual(bad, [], f"{len(bad)} of {n} failed\n{self.d.log_tail()}")
        for status, body in results:
            self.assertEqual(body["job"], self.long_id)
            self.assertIsInstance(body["epochs"], list)
            self.assertEqual([e["epoch"] for e in body["epochs"]],
                             list(range(len(body["epochs"]))))
        self.assertLess(elapsed, 60)
        self.assertTraining()
        self.assertHealthy()

    def test_b_queued_job_cancels_at_once(self):
        self.assertTraining()
        r = self.d.post_json("/api/jobs", job_spec(name="waiting"))
        self.assertStatus(r, 201)
        jid = r.json()["id"]
        self.assertEqual(r.json()["state"], "queued")
        self.assertEqual(self.d.get("/api/info").json()["queue"],
                         {"running": self.long_id, "queued": 1})
        r = self.d.request("POST", f"/api/jobs/{jid}/cancel")
        self.assertStatus(r, 200)
        j = r.json()
        self.assertEqual((j["id"], j["state"], j["started"]), (jid, "cancelled", None))
        self.assertIsNotNone(j["finished"])
        self.assertEqual(self.d.get(f"/api/jobs/{jid}").json()["state"], "cancelled")
        self.assertEqual(self.d.get("/api/info").json()["queue"],
                         {"running": self.long_id, "queued": 0})
        # its stream is just the final state
        _, ev = self.d.events(jid, timeout=20)
        self.assertEqual(ev, [("state", {"job": jid, "state": "cancelled", "error": None})])
        self.assertError(self.d.request("POST", f"/api/jobs/{jid}/cancel"), 409, "conflict")
        self.assertError(self.d.get(f"/api/jobs/{jid}/weights"), 409, "conflict")
        self.assertTraining()

    def test_c_dataset_in_use_cannot_be_deleted(self):
        self.assertTraining()
        self.assertError(self.d.request("DELETE", "/api/datasets/fm"), 409, "conflict")
        self.assertError(self.d.request("DELETE", "/api/datasets/1"), 409, "conflict")
        self.assertStatus(self.d.get("/api/datasets/fm"), 200)
        self.assertError(self.d.get(f"/api/jobs/{self.long_id}/weights"), 409, "conflict")
        self.assertHealthy()

    def test_d_running_job_cancels_within_a_batch(self):
        j = self.assertTraining()
        self.assertIsNotNone(j["progress"])
        self.assertIsNotNone(j["started"])
        answers = []

        def cancel():
            answers.append((time.time(), self.d.request("POST",
                                                         f"/api/jobs/{self.long_id}/cancel")))

        _, ev = self.d.events(self.long_id, timeout=60, on_open=cancel)
        t_end = time.time()
        t_cancel, r = answers[0]
        self.assertStatus(r, 202)
        c = r.json()
        self.assertEqual((c["id"], c["state"], c["cancel_requested"]),
                         (self.long_id, "running", True))
        self.assertLess(t_end - t_cancel, 10, "the stream ended long after the cancel")
        self.assertEqual(ev[0][0], "state")
        self.assertEqual(ev[-1], ("state", {"job": self.long_id, "state": "cancelled",
                                            "error": None}))
        j = self.d.wait_job(self.long_id, timeout=10)
        self.assertEqual(j["state"], "cancelled")
        self.assertIsNotNone(j["finished"])
        self.assertLess(j["epochs_done"], self.EPOCHS)
        self.assertEqual(len(self.d.get(f"/api/jobs/{self.long_id}/metrics").json()["epochs"]),
                         j["epochs_done"])
        self.assertError(self.d.request("POST", f"/api/jobs/{self.long_id}/cancel"), 409,
                         "conflict")
        self.assertError(self.d.get(f"/api/jobs/{self.long_id}/weights"), 409, "conflict")
        self.assertEqual(self.d.get("/api/info").json()["queue"], {"running": None, "queued": 0})
        # the queue moves on: the cancelled queued job never starts, a new one does
        r = self.d.post_json("/api/jobs", job_spec(scratch=1, head=0, batch=16, name="after"))
        self.assertStatus(r, 201)
        after = self.d.wait_job(r.json()["id"], timeout=120)
        self.assertEqual(after["state"], "completed", self.d.log_tail())
        self.assertGreaterEqual(after["started"], j["finished"])
        for job in self.d.get("/api/jobs").json()["jobs"]:
            if job["name"] == "waiting":
                self.assertEqual((job["state"], job["started"]), ("cancelled", None))
        # now the dataset is free
        self.assertStatus(self.d.request("DELETE", "/api/datasets/fm"), 204)


# ---------------------------------------------------------------------------
class BlasKernel(ApiCase):
    """The OpenBLAS kernel in /api/info and the start-up log: a user's
    OPENBLAS_CORETYPE stands by default, with one warning when this CPU has a
    faster kernel; --blas-kernel auto lets resnetd pick the best over it."""

    def setUp(self):
        self.best = version_kernel()[2]
        if self.best is None:
            self.skipTest("this CPU has no AVX2: the Haswell kernel cannot run")

    def info(self, *flags):
        d = self.start_own(*flags, env=clean_env(OPENBLAS_CORETYPE="Haswell"))
        return d, info_kernel(d.get("/api/info").json())

    def test_the_environment_wins_by_default(self):
        d, kernel = self.info()
        self.assertEqual(kernel, ("Haswell", "user", self.best))
        warnings = [line for line in d.log().splitlines() if "OpenBLAS kernel" in line]
        if self.best == "SkylakeX":
            self.assertEqual(len(warnings), 1, d.log())
            for words in (" warn ", "Haswell (chosen by user) is slower than SkylakeX",
                          "blas_kernel = auto", "RESNETD_BLAS_KERNEL=auto",
                          "--blas-kernel auto"):
                self.assertIn(words, warnings[0])
        else:
            self.assertEqual(warnings, [], d.log())
        self.assertIn("Haswell kernel", d.log())

    def test_auto_picks_the_best_over_the_environment(self):
        d, kernel = self.info("--blas-kernel", "auto")
        # on an AVX2 CPU the environment's Haswell is already the best: no re-exec
        origin = "resnetd" if self.best != "Haswell" else "user"
        self.assertEqual(kernel, (self.best, origin, self.best))
        self.assertEqual(kernel, version_kernel(OPENBLAS_CORETYPE="Haswell",
                                                RESNETD_BLAS_KERNEL="auto"))
        self.assertNotIn("is slower than", d.log())


# ---------------------------------------------------------------------------
class Auth(ApiCase):
    """--token secret: every POST and DELETE needs it; reads do not."""

    def setUp(self):
        self.d = self.start_own(token="secret")

    def assertUnauthorized(self, r):
        self.assertError(r, 401, "unauthorized")
        self.assertTrue(r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers)

    def test_right_token_is_accepted(self):
        r = self.d.post_json("/api/datasets", {"name": "fm-auth", "path": FM},
                             headers={"Authorization": "Bearer secret"})
        self.assertStatus(r, 201)
        self.assertEqual(r.headers.get("Location"), f"/api/datasets/{r.json()['id']}")
        r = self.d.upload("up-auth", TGZ, headers={"Authorization": "Bearer secret"})
        self.assertStatus(r, 201)
        r = self.d.post_json("/api/jobs", job_spec(dataset="fm-auth", name="auth"),
                             headers={"Authorization": "Bearer secret"})
        self.assertStatus(r, 201)
        jid = r.json()["id"]
        self.assertIn(self.d.request("POST", f"/api/jobs/{jid}/cancel").status, (200, 202))
        self.assertEqual(self.d.wait_job(jid, timeout=60)["state"], "cancelled")
        self.assertStatus(self.d.request("DELETE", "/api/datasets/fm-auth"), 204)
        self.assertStatus(self.d.request("DELETE", "/api/datasets/up-auth",
                                         headers={"Authorization": "Bearer secret"}), 204)
        self.assertHealthy()

    def test_missing_or_wrong_token_is_refused(self):
        self.assertStatus(self.d.post_json("/api/datasets", {"name": "fm", "path": FM}), 201)
        body = json.dumps({"name": "fm-auth", "path": FM}).encode()
        bad_headers = [{}, {"Authorization": "Bearer wrong"},
                       {"Authorization": "Bearer secretx"}, {"Authorization": "Bearer secre"},
                       {"Authorization": "secret"}, {"Authorization": "Bearer "},
                       {"Authorization": "Basic c2VjcmV0"}, {"Authorization": "bearer  secret"}]
        for h in bad_headers:
            with self.subTest(headers=h):
                r = self.d.request("POST", "/api/datasets", body=body, auth=False,
                                   headers={"Content-Type": "application/json", **h})
                self.assertUnauthorized(r)
        self.assertEqual([x["name"] for x in
                          self.d.get("/api/datasets", auth=False).json()["datasets"]], ["fm"])
        # an upload is refused before its body is read, and leaves no file
        r = self.d.request("POST", "/api/datasets?name=up", body=TGZ, auth=False,
                           headers={"Content-Type": "application/gzip"})
        self.assertUnauthorized(r)
        self.assertUploadsAre([])
        # jobs, cancel, predict, delete
        spec = json.dumps(job_spec(name="auth")).encode()
        r = self.d.request("POST", "/api/jobs", body=spec, auth=False,
                           headers={"Content-Type": "application/json"})
        self.assertUnauthorized(r)
        self.assertEqual(self.d.get("/api/jobs", auth=False).json()["jobs"], [])
        self.assertUnauthorized(self.d.request("POST", "/api/jobs/1/cancel", auth=False))
        self.assertUnauthorized(self.d.request("POST", "/api/jobs/1/predict", auth=False,
                                               body=b"x", headers={"Content-Type": "image/png"}))
        self.assertUnauthorized(self.d.request("DELETE", "/api/datasets/fm", auth=False))
        self.assertStatus(self.d.get("/api/datasets/fm", auth=False), 200)
        self.assertHealthy()

    def test_reads_need_no_token(self):
        for path in ("/api/health", "/api/info", "/api/datasets", "/api/jobs", "/api/weights"):
            with self.subTest(path=path):
                self.assertStatus(self.d.get(path, auth=False), 200)
        self.assertIs(self.d.get("/api/info", auth=False).json()["auth"], True)
        self.assertError(self.d.get("/api/jobs/77", auth=False), 404, "not_found")


# ---------------------------------------------------------------------------
class Listen(ApiCase):
    """The token rule: a non-loopback address needs a token or --insecure."""

    def test_any_address_without_token_refuses_to_start(self):
        port = free_port("0.0.0.0")
        data = tempfile.mkdtemp(prefix="refuse-", dir=TMP)
        try:
            r = subprocess.run([RESNETD, "serve", "--listen", f"0.0.0.0:{port}", "--data-dir",
                                data, "--data-root", DATA_ROOT], capture_output=True,
                               text=True, timeout=20, env=clean_env())
        except subprocess.TimeoutExpired as e:
            self.fail(f"resnetd serve started on 0.0.0.0 without a token: {e.stderr!r}")
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"listening on 0.0.0.0:{port} requires a token", r.stderr)
        self.assertIn("--insecure", r.stderr)
        with socket.socket() as s:
            self.assertNotEqual(s.connect_ex(("127.0.0.1", port)), 0)

    def test_any_address_with_insecure_or_token_starts(self):
        d = self.start_own("--insecure", host="0.0.0.0")
        self.assertIs(d.get("/api/info").json()["auth"], False)
        self.assertHealthy(d)
        d = self.start_own(host="0.0.0.0", token="t0ken")
        self.assertIs(d.get("/api/info").json()["auth"], True)
        self.assertHealthy(d)


if __name__ == "__main__":
    unittest.main()
