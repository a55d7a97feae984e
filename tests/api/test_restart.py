"""test_restart.py: the daemon's restart safety, over real HTTP on loopback.

Run from the repository root with Debian's Python:
    /usr/bin/python3 -m unittest -v tests/api/test_restart.py

- kill -9 in the middle of a job, restart on the same data folder: the job
  resumes from its last checkpoint and completes; every epoch appears exactly
  once in /metrics (0..N-1) and every training step exactly once in /steps.
- SIGTERM in the middle of an epoch: the daemon exits 0 within a few seconds and
  leaves a checkpoint; the job stays "running" in the store, and the next daemon
  resumes it at the next batch; again every epoch and step exactly once.
- A damaged checkpoint: the restarted daemon fails that job with an error that
  names the checkpoint, and keeps serving (a new job runs to completion).
"""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("RESNETD_BUILD_DIR") or os.path.join(ROOT, "build")
RESNETD = os.path.join(BUILD, "resnetd")
FMNIST = os.path.join(BUILD, "tools", "fmnist_to_png")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, data_dir, data_root, *flags):
        self.port = free_port()
        self.log = open(os.path.join(data_dir + ".log"), "ab")
        self.proc = subprocess.Popen(
            [RESNETD, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", data_dir,
             "--data-root", data_root, *flags], stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"resnetd serve exited with {self.proc.returncode}")
            try:
                self.get("/api/health")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("resnetd serve did not answer within 20 s")

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path):
        return self.request("GET", path)[1]

    def wait(self, pred, what, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = pred()
            if v:
                return v
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def kill(self, sig=signal.SIGKILL, timeout=30):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()


JOB = {"name": "restart", "dataset": "fm", "weights": "random", "preprocess": "torch",
       "input_size": 32, "batch_size": 8, "seed": 5,
       "phases": [{"name": "scratch", "epochs": 3, "train": "all", "bn": "train",
                   "optimizer": {"type": "adam", "lr": 0.001}},
                  {"name": "head", "epochs": 2, "train": "head",
                   "optimizer": {"type": "adam", "lr": 0.001}}]}


class Restart(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="resnetd-restart-")
        cls.root = os.path.join(cls.tmp.name, "data")
        os.mkdir(cls.root)
        subprocess.run([FMNIST, os.path.join(cls.root, "fm"), "--classes", "0,1,7",
                        "--per-class", "16", "--size", "32"], check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def start(self, name, *flags):
        d = Daemon(os.path.join(self.tmp.name, name), self.root, *flags)
        self.addCleanup(lambda: d.proc.poll() is None and d.kill())
        return d

    def submit(self, d):
        st, ds = d.request("POST", "/api/datasets", {"name": "fm", "path": "fm"})
        if st != 409:
            self.assertEqual(st, 201, ds)
        st, job = d.request("POST", "/api/jobs", JOB)
        self.assertEqual(st, 201, job)
        return job["id"]

    def assert_each_epoch_and_step_once(self, d, jid):
        job = d.get(f"/api/jobs/{jid}")
        self.assertEqual(job["state"], "completed", job)
        self.assertEqual(job["epochs_done"], 5)
        epochs = d.get(f"/api/jobs/{jid}/metrics")["epochs"]
        self.assertEqual([e["epoch"] for e in epochs], [0, 1, 2, 3, 4])
        self.assertEqual([e["phase_name"] for e in epochs], ["scratch"] * 3 + ["head"] * 2)
        steps = d.get(f"/api/jobs/{jid}/steps")["steps"]
        per_epoch = steps[0]["steps"]
        self.assertEqual([(s["epoch"], s["step"]) for s in steps],
                         [(e, k) for e in range(5) for k in range(per_epoch)])
        self.assertEqual([s["index"] for s in steps], list(range(5 * per_epoch)))

    def test_kill_9_then_restart_resumes(self):
        # a checkpoint after every epoch: the restart resumes after the last one
        d = self.start("kill9", "--checkpoint-interval", "0")
        jid = self.submit(d)
        d.wait(lambda: d.get(f"/api/jobs/{jid}")["epochs_done"] >= 2, "two epochs")
        d.kill(signal.SIGKILL)
        d2 = self.start("kill9", "--checkpoint-interval", "0")
        d2.wait(lambda: d2.get(f"/api/jobs/{jid}")["state"] in ("completed", "failed"),
                "the resumed job to finish")
        self.assert_each_epoch_and_step_once(d2, jid)
        with open(os.path.join(self.tmp.name, "kill9.log")) as f:
            self.assertRegex(f.read(), r"resuming at epoch [2-5], step 1 from its checkpoint")

    def test_kill_9_before_the_first_checkpoint_starts_over(self):
        # the default interval (60 s) is longer than this job: no checkpoint yet,
        # so the restarted job runs from its first epoch and replaces the rows
        # the killed run wrote; each epoch and step is still recorded once
        d = self.start("kill9-default")
        jid = self.submit(d)
        d.wait(lambda: d.get(f"/api/jobs/{jid}")["epochs_done"] >= 2, "two epochs")
        d.kill(signal.SIGKILL)
        ckpt = os.path.join(self.tmp.name, "kill9-default", "jobs", str(jid),
                            "checkpoint.safetensors")
        self.assertFalse(os.path.exists(ckpt))
        d2 = self.start("kill9-default")
        d2.wait(lambda: d2.get(f"/api/jobs/{jid}")["state"] in ("completed", "failed"),
                "the restarted job to finish")
        self.assert_each_epoch_and_step_once(d2, jid)

    def test_sigterm_exits_0_with_a_checkpoint_and_resumes(self):
        d = self.start("term")
        jid = self.submit(d)

        def mid_epoch():
            p = d.get(f"/api/jobs/{jid}").get("progress")
            return p and p["epoch"] == 1 and 1 <= p["step"] < p["steps"] - 2
        d.wait(mid_epoch, "the middle of epoch 2")
        t0 = time.time()
        rc = d.kill(signal.SIGTERM)
        self.assertEqual(rc, 0)
        self.assertLess(time.time() - t0, 10)
        data = os.path.join(self.tmp.name, "term")
        self.assertTrue(os.path.exists(os.path.join(data, "jobs", str(jid),
                                                    "checkpoint.safetensors")))
        con = sqlite3.connect(os.path.join(data, "resnetd.db"))
        self.assertEqual(con.execute("SELECT state FROM jobs WHERE id = ?", (jid,)).fetchone(),
                         ("running",))
        con.close()
        with open(data + ".log") as f:
            log = f.read()
        self.assertIn("SIGTERM: stopping", log)
        self.assertIn("stopped", log)
        d2 = self.start("term")
        d2.wait(lambda: d2.get(f"/api/jobs/{jid}")["state"] in ("completed", "failed"),
                "the resumed job to finish")
        self.assert_each_epoch_and_step_once(d2, jid)
        with open(data + ".log") as f:
            self.assertIn("resuming at epoch 2, step", f.read())

    def test_damaged_checkpoint_fails_that_job_only(self):
        d = self.start("damaged")
        jid = self.submit(d)
        d.wait(lambda: d.get(f"/api/jobs/{jid}")["epochs_done"] >= 1, "one epoch")
        self.assertEqual(d.kill(signal.SIGTERM), 0)
        ckpt = os.path.join(self.tmp.name, "damaged", "jobs", str(jid), "checkpoint.safetensors")
        size = os.path.getsize(ckpt)
        with open(ckpt, "r+b") as f:
            f.truncate(size // 3)
        d2 = self.start("damaged")
        job = d2.wait(lambda: (lambda j: j if j["state"] != "running" else None)(
            d2.get(f"/api/jobs/{jid}")), "the job to fail")
        self.assertEqual(job["state"], "failed")
        self.assertIn("checkpoint", job["error"])
        self.assertEqual(d2.get("/api/health")["status"], "ok")
        small = dict(JOB, phases=[dict(JOB["phases"][1], epochs=1)])
        st, j2 = d2.request("POST", "/api/jobs", small)
        self.assertEqual(st, 201)
        d2.wait(lambda: d2.get(f"/api/jobs/{j2['id']}")["state"] == "completed", "a new job")


if __name__ == "__main__":
    unittest.main()
