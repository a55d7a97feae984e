"""test_named_weights.py: "weights": "imagenet" and manifest names through the
daemon, against a loopback HTTP mirror the test starts (docs/api.md, "Weights";
docs/weights.md, "Named weights"). Nothing leaves the machine.

Run from the repository root with Debian's Python (standard library only):
    /usr/bin/python3 -m unittest -v tests/api/test_named_weights.py
Binaries come from $RESNETD_BUILD_DIR (tests/run.sh sets it; default build/).

A first daemon pretrains a tiny job and its exported model becomes the mirror's
"ImageNet" file (torchvision-v1 of a test manifest, pinned by its SHA-256). A
second daemon, with --weights-manifest pointing at the test manifest:
- lists the manifest under GET /api/weights "named" (state available) and in
  /api/info;
- takes a job with "weights": "imagenet": 201 in state "fetching" with the
  resolved weights_name and weights_file, shows the download's progress in the
  job ("fetch") and its event stream ("fetch" events, then "queued"), downloads
  once for two such jobs, then runs them; a job from the same file by job:ID with
  the same seed records the same losses;
- POST /api/weights/pull installs a name (202 fetching, then 200 cached, listed);
- `resnetd train` with "imagenet" pulls it once into its weights folder, then trains;
- a job whose download fails (404, a tampered byte) ends failed with the reason;
  cancelling a job whose download stalls stops it (cancelled); a daemon stopped
  during a download leaves the job fetching with its part file, and the next
  one on the same data resumes it with a Range request and runs the job;
- an entry that pins no hash and an unknown name are refused at submit (400,
  path weights), as is a "variant" that contradicts the weights (path variant).
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tools"))
import test_api  # noqa: E402
from test_api import ApiCase, job_spec  # noqa: E402
from test_weights_pull import LoopbackServer  # noqa: E402


def setUpModule():
    test_api.setUpModule()


def tearDownModule():
    test_api.tearDownModule()


def fine_tune(weights, seed=3, name="ft", **extra):
    return {"name": name, "dataset": "fm", "weights": weights, "preprocess": "torch",
            "input_size": 32, "batch_size": 8, "seed": seed,
            "phases": [{"name": "head", "epochs": 2, "train": "head",
                        "optimizer": {"type": "adam", "lr": 0.01}}], **extra}


def entry(url, file, data, sha256=True):
    return {"url": url, "file": file, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest() if sha256 else None, "md5": None,
            "format": "safetensors", "variant": "torchvision", "preprocess": "torch",
            "classes": 3, "top1": None, "description": "test file"}


class NamedWeights(ApiCase):
    @classmethod
    def setUpClass(cls):
        pre = cls.start()
        assert pre.post_json("/api/datasets", {"name": "fm", "path": "fm"}).status == 201
        r = pre.post_json("/api/jobs", job_spec(scratch=1, head=0, name="pretrain"))
        assert r.status == 201, r
        assert pre.wait_job(r.json()["id"])["state"] == "completed", pre.log_tail()
        cls.model = pre.get(f"/api/jobs/{r.json()['id']}/weights").body
        pre.stop()

        cls.mirror = LoopbackServer()
        cls.addClassCleanup(cls.mirror.stop)
        m = cls.mirror
        tampered = bytearray(cls.model)
        tampered[len(tampered) // 2] ^= 1
        for path, data in (("/tv1", cls.model), ("/copy", cls.model), ("/bad", bytes(tampered)),
                           ("/stall", cls.model), ("/unpinned", cls.model)):
            m.files[path] = data
        m.modes["/tv1"] = ["slow"]
        m.modes["/stall"] = ["stall"] * 5
        manifest = {"weights": {
            "torchvision-v1": entry(m.url("/tv1"), "torchvision-v1.safetensors", cls.model),
            "keras": dict(entry(m.url("/none"), "keras.h5", b"x"), format="h5",
                          variant="keras", preprocess="caffe"),
            "copy": entry(m.url("/copy"), "copy.safetensors", cls.model),
            "gone": entry(m.url("/gone"), "gone.safetensors", cls.model),
            "bad": entry(m.url("/bad"), "bad.safetensors", cls.model),
            "stalls": entry(m.url("/stall"), "stalls.safetensors", cls.model),
            "unpinned": entry(m.url("/unpinned"), "unpinned.safetensors", cls.model,
                              sha256=False)}}
        cls.manifest = os.path.join(test_api.TMP, "manifest.json")
        with open(cls.manifest, "w") as f:
            json.dump(manifest, f)
        cls.d = d = cls.start("--weights-manifest", cls.manifest)
        assert d.post_json("/api/datasets", {"name": "fm", "path": "fm"}).status == 201

    def named(self):
        return {w["name"]: w for w in self.d.get("/api/weights").json()["named"]}

    def test_1_imagenet_fetches_once_then_runs(self):
        named = self.named()
        self.assertEqual(named["torchvision-v1"]["state"], "available")
        self.assertEqual(named["torchvision-v1"]["aliases"], ["imagenet"])
        self.assertEqual(named["unpinned"]["pinned"], False)
        info = self.d.get("/api/info").json()["named_weights"]
        self.assertEqual((info["manifest"], info["count"]), (self.manifest, 7))

        r1 = self.d.post_json("/api/jobs", fine_tune("imagenet", name="in1"))
        self.assertStatus(r1, 201)
        j1 = r1.json()
        self.assertEqual(j1["state"], "fetching")
        stream = {}
        reader = threading.Thread(target=lambda: stream.update(
            events=self.d.events(j1["id"])[1]))
        reader.start()
        self.assertEqual((j1["resolved"]["weights_name"], j1["resolved"]["weights_file"]),
                         ("torchvision-v1", "torchvision-v1.safetensors"))
        r2 = self.d.post_json("/api/jobs", fine_tune("torchvision-v1", name="in2"))
        self.assertStatus(r2, 201)
        self.assertEqual(r2.json()["state"], "fetching")
        # progress shows in the job while the slow mirror sends the file
        seen = None
        deadline = time.time() + 30
        while time.time() < deadline and not seen:
            j = self.d.get(f"/api/jobs/{j1['id']}").json()
            if j["state"] != "fetching":
                break
            if j["fetch"] and j["fetch"]["done"] > 0:
                seen = j["fetch"]
            time.sleep(0.02)
        self.assertIsNotNone(seen, "no download progress seen in the job")
        self.assertEqual((seen["weights"], seen["total"]), ("torchvision-v1", len(self.model)))
        reader.join(timeout=120)
        events = stream["events"]
        done1 = self.d.wait_job(j1["id"])
        done2 = self.d.wait_job(r2.json()["id"])
        self.assertEqual((done1["state"], done2["state"]), ("completed", "completed"),
                         self.d.log_tail())
        self.assertEqual(len(self.mirror.requests_for("/tv1")), 1)  # one download for both
        with open(os.path.join(self.d.weights_dir, "torchvision-v1.safetensors"), "rb") as f:
            self.assertEqual(f.read(), self.model)
        self.assertEqual(self.named()["torchvision-v1"]["state"], "cached")
        states = [data["state"] for ev, data in events if ev == "state"]
        self.assertEqual(states[0], "fetching")
        self.assertIn("queued", states)
        self.assertEqual(states[-1], "completed")
        fetches = [data for ev, data in events if ev == "fetch"]
        self.assertTrue(fetches, events[:5])
        self.assertEqual(fetches[0]["weights"], "torchvision-v1")
        # a third job finds the file there: queued at once, no new request
        r3 = self.d.post_json("/api/jobs", fine_tune("imagenet", name="in3"))
        self.assertEqual(r3.json()["state"], "queued")
        self.d.wait_job(r3.json()["id"])
        self.assertEqual(len(self.mirror.requests_for("/tv1")), 1)
        losses = [[(e["train_loss"], e["val_loss"])
                   for e in self.d.get(f"/api/jobs/{i}/metrics").json()["epochs"]]
                  for i in (j1["id"], r3.json()["id"])]
        self.assertEqual(losses[0], losses[1])

    def test_2_pull_route(self):
        r = self.d.post_json("/api/weights/pull", {"name": "copy"})
        self.assertIn(r.status, (200, 202), r)
        deadline = time.time() + 60
        while time.time() < deadline and self.named()["copy"]["state"] != "cached":
            time.sleep(0.05)
        self.assertEqual(self.named()["copy"]["state"], "cached")
        r = self.d.post_json("/api/weights/pull", {"name": "copy"})
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["state"], "cached")
        files = [w["name"] for w in self.d.get("/api/weights").json()["weights"]]
        self.assertIn("copy.safetensors", files)
        self.assertError(self.d.post_json("/api/weights/pull", {"name": "nope"}), 400,
                         "bad_request", path="name")
        self.assertError(self.d.post_json("/api/weights/pull", {"name": "unpinned"}), 400,
                         "bad_request", path="name")
        self.assertError(self.d.post_json("/api/weights/pull", {"nam": "copy"}), 400,
                         "bad_request", path="nam")

    def test_3_failed_downloads_fail_the_job(self):
        for name, words in (("gone", "HTTP 404"), ("bad", "expected")):
            r = self.d.post_json("/api/jobs", fine_tune(name, name=name))
            self.assertStatus(r, 201)
            j = self.d.wait_job(r.json()["id"])
            self.assertEqual(j["state"], "failed")
            self.assertIn(f"weights {name}", j["error"])
            self.assertIn(words, j["error"])
            self.assertFalse(os.path.exists(os.path.join(self.d.weights_dir,
                                                         f"{name}.safetensors")))

    def test_4_cancel_a_fetching_job(self):
        r = self.d.post_json("/api/jobs", fine_tune("stalls", name="stalls"))
        self.assertStatus(r, 201)
        jid = r.json()["id"]
        self.assertEqual(r.json()["state"], "fetching")
        r = self.d.request("POST", f"/api/jobs/{jid}/cancel")
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["state"], "cancelled")
        deadline = time.time() + 10
        while time.time() < deadline and self.d.get(f"/api/jobs/{jid}").json()["fetch"]:
            time.sleep(0.05)
        self.assertIsNone(self.d.get(f"/api/jobs/{jid}").json()["fetch"])
        self.assertEqual(self.d.get(f"/api/jobs/{jid}").json()["state"], "cancelled")

    def test_5_refused_at_submit(self):
        before = len(self.d.get("/api/jobs").json()["jobs"])
        for weights, words in (("unpinned", "pins no SHA-256"), ("no-such-name", "not a file")):
            e = self.assertError(self.d.post_json("/api/jobs", fine_tune(weights)), 400,
                                 "bad_request", path="weights")
            self.assertIn(words, e["message"])
        e = self.assertError(self.d.post_json("/api/jobs", fine_tune("copy",
                                                                     variant="keras")),
                             400, "bad_request", path="variant")
        self.assertIn("torchvision", e["message"])
        self.assertEqual(len(self.d.get("/api/jobs").json()["jobs"]), before)
        # "imagenet" with "variant": "keras" names the Keras file of the manifest
        r = self.d.post_json("/api/jobs", fine_tune("imagenet", variant="keras",
                                                    preprocess="caffe"))
        self.assertStatus(r, 201)
        self.assertEqual((r.json()["resolved"]["weights_name"], r.json()["resolved"]["variant"]),
                         ("keras", "keras"))
        self.d.request("POST", f"/api/jobs/{r.json()['id']}/cancel")
        self.d.wait_job(r.json()["id"])

    def test_7_restart_resumes_a_download(self):
        """SIGTERM while a job's download stalls: the job stays fetching with its part
        file; the next daemon on the same data resumes the download with a Range
        request and runs the job."""
        self.mirror.files["/later"] = self.model
        self.mirror.modes["/later"] = ["stall"]
        manifest = os.path.join(test_api.TMP, "manifest-later.json")
        with open(self.manifest) as f:
            m = json.load(f)
        m["weights"]["later"] = entry(self.mirror.url("/later"), "later.safetensors", self.model)
        with open(manifest, "w") as f:
            json.dump(m, f)
        d1 = test_api.Daemon("--weights-manifest", manifest)
        self.addCleanup(d1.stop)
        self.assertStatus(d1.post_json("/api/datasets", {"name": "fm", "path": "fm"}), 201, d1)
        r = d1.post_json("/api/jobs", fine_tune("later", name="later"))
        self.assertStatus(r, 201, d1)
        jid = r.json()["id"]
        deadline = time.time() + 30
        while time.time() < deadline and not (d1.get(f"/api/jobs/{jid}").json()["fetch"] or
                                              {}).get("done"):
            time.sleep(0.05)
        self.assertGreater(d1.get(f"/api/jobs/{jid}").json()["fetch"]["done"], 0)
        d1.stop()
        self.assertTrue(os.path.exists(os.path.join(d1.weights_dir, ".later.safetensors.part")),
                        os.listdir(d1.weights_dir))
        d2 = test_api.Daemon("--weights-manifest", manifest, reuse_dir=d1.dir)
        self.addCleanup(d2.stop)
        j = d2.wait_job(jid)
        self.assertEqual(j["state"], "completed", d2.log_tail())
        ranges = [q["range"] for q in self.mirror.requests_for("/later")]
        self.assertEqual(len(ranges), 2, ranges)
        self.assertIsNone(ranges[0])
        self.assertRegex(ranges[1] or "", r"^bytes=[1-9]\d*-$")
        self.assertIn("download again", d2.log())

    def test_6_train_cli_pulls_then_trains(self):
        """`resnetd train` takes "imagenet" too: downloaded once into the weights
        folder of its configuration (RESNETD_WEIGHTS_DIR, RESNETD_WEIGHTS_MANIFEST)."""
        wdir = os.path.join(test_api.TMP, "cli-weights")
        spec = dict(fine_tune("imagenet", name="cli"), dataset=test_api.FM)
        path = os.path.join(test_api.TMP, "cli.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        env = test_api.clean_env(RESNETD_WEIGHTS_DIR=wdir, RESNETD_WEIGHTS_MANIFEST=self.manifest)
        before = len(self.mirror.requests_for("/tv1"))
        for run in range(2):
            r = subprocess.run([test_api.RESNETD, "train", path], env=env, capture_output=True,
                               text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(len([ln for ln in r.stdout.splitlines()
                                  if ln.startswith("epoch ")]), 2, r.stdout)
            self.assertEqual(len(self.mirror.requests_for("/tv1")), before + 1, r.stderr)
            if run == 0:
                self.assertIn("pulling torchvision-v1", r.stderr)
        with open(os.path.join(wdir, "torchvision-v1.safetensors"), "rb") as f:
            self.assertEqual(f.read(), self.model)
        # a name the manifest does not have stays a path, and fails as one
        spec["weights"] = "no-such.safetensors"
        with open(path, "w") as f:
            json.dump(spec, f)
        r = subprocess.run([test_api.RESNETD, "train", path], env=env, capture_output=True,
                           text=True, timeout=300)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no-such.safetensors", r.stderr)


if __name__ == "__main__":
    unittest.main()
