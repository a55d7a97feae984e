"""test_weights_api.py: weights over the API and one job starting from another,
black box over HTTP on loopback (docs/api.md, "Weights").

Run from the repository root with Debian's Python (standard library only):
    /usr/bin/python3 -m unittest -v tests/api/test_weights_api.py
Binaries come from $RESNETD_BUILD_DIR (tests/run.sh sets it; default build/).
The daemon and data are test_api.py's (a tiny Fashion-MNIST set, 3 classes).

- A pretraining job from random weights completes; its exported model is then
  uploaded with PUT /api/weights/NAME (201, Location, listed with its variant and
  head), downloaded back byte for byte with GET, and refused when the name is
  taken (409), badly formed (400), of the wrong format for its extension (400),
  truncated (400 naming the upload, not a temporary file), of another media
  type (415) or over --upload-limit (413); no temporary file is left behind.
- "weights": "job:ID" starts from that job's exported model: a fine-tune from
  job:1 and one from the uploaded copy of the same file, with the same seed,
  record the same losses, unlike the same spec from random weights. job:ID of an
  unknown, unfinished or malformed id is refused at submit (400, path weights).
- DELETE /api/weights/NAME: 409 while a queued job uses the file, 204 once none
  does, then 404.
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_api  # noqa: E402
from test_api import ApiCase, job_spec  # noqa: E402


def setUpModule():
    test_api.setUpModule()


def tearDownModule():
    test_api.tearDownModule()


def fine_tune(weights, seed=3, name="ft"):
    """A head-only fine-tune of 2 epochs (a new 3-class head on the given weights)."""
    return {"name": name, "dataset": "fm", "weights": weights, "preprocess": "torch",
            "input_size": 32, "batch_size": 8, "seed": seed,
            "phases": [{"name": "head", "epochs": 2, "train": "head",
                        "optimizer": {"type": "adam", "lr": 0.01}}]}


class WeightsApi(ApiCase):
    @classmethod
    def setUpClass(cls):
        cls.d = d = cls.start("--upload-limit", "200M")
        r = d.post_json("/api/datasets", {"name": "fm", "path": "fm"})
        assert r.status == 201, r
        r = d.post_json("/api/jobs", job_spec(scratch=1, head=0, name="pretrain"))
        assert r.status == 201, r
        cls.pre = r.json()["id"]
        assert d.wait_job(cls.pre)["state"] == "completed", d.log_tail()
        r = d.get(f"/api/jobs/{cls.pre}/weights")
        assert r.status == 200, r
        cls.model = r.body

    def put(self, name, data, ctype="application/octet-stream", d=None):
        return (d or self.d).request("PUT", f"/api/weights/{name}", body=data,
                                     headers={"Content-Type": ctype} if ctype else {})

    def assertNoTemporaryFiles(self, d=None):
        d = d or self.d
        deadline = time.time() + 5
        while time.time() < deadline:
            hidden = [f for f in os.listdir(d.weights_dir) if f.startswith(".")]
            if not hidden:
                return
            time.sleep(0.02)
        self.fail(f"left in the weights folder: {hidden}")

    def wait_final(self, job_id):
        j = self.d.wait_job(job_id)
        self.assertEqual(j["state"], "completed", self.d.log_tail())
        return j

    def losses(self, job_id):
        return [(e["train_loss"], e["val_loss"])
                for e in self.d.get(f"/api/jobs/{job_id}/metrics").json()["epochs"]]

    def test_1_upload_download_and_refusals(self):
        r = self.put("pre.safetensors", self.model, ctype=None)
        self.assertStatus(r, 201)
        self.assertEqual(r.headers.get("Location"), "/api/weights/pre.safetensors")
        entry = r.json()
        self.assertEqual((entry["name"], entry["size"], entry["format"], entry["variant"],
                          entry["head_classes"]),
                         ("pre.safetensors", len(self.model), "safetensors", "torchvision", 3))
        self.assertIn(entry, self.d.get("/api/weights").json()["weights"])
        r = self.d.get("/api/weights/pre.safetensors")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, self.model)
        self.assertEqual(r.headers.get("Content-Type"), "application/octet-stream")

        self.assertError(self.put("pre.safetensors", self.model), 409, "conflict")
        for bad in (".hidden.safetensors", "pre.bin", "a%20b.safetensors"):
            self.assertError(self.put(bad, self.model), 400, "bad_request")
        e = self.assertError(self.put("pre.h5", self.model), 400, "bad_request")
        self.assertIn("not HDF5", e["message"])
        e = self.assertError(self.put("cut.safetensors", self.model[:len(self.model) // 2]),
                             400, "bad_request")
        self.assertIn("cut.safetensors", e["message"])
        self.assertIn("truncated", e["message"])
        self.assertNotIn(".upload-", e["message"])
        self.assertError(self.put("x.safetensors", self.model, ctype="image/png"), 415,
                         "unsupported_media_type")
        small = self.start_own("--upload-limit", "1M")
        self.assertError(self.put("big.safetensors", self.model, d=small), 413, "too_large",
                         d=small)
        self.assertNoTemporaryFiles(small)
        self.assertNoTemporaryFiles()
        names = [w["name"] for w in self.d.get("/api/weights").json()["weights"]]
        self.assertEqual(names, ["pre.safetensors"])
        self.assertError(self.d.get("/api/weights/nope.safetensors"), 404, "not_found")

    def test_2_job_from_job_and_from_upload(self):
        if self.put("copy.safetensors", self.model).status != 201:
            self.fail(self.d.log_tail())
        ids = {}
        for key, weights in (("job", f"job:{self.pre}"), ("file", "copy.safetensors"),
                             ("random", "random")):
            r = self.d.post_json("/api/jobs", fine_tune(weights, name=key))
            self.assertStatus(r, 201)
            ids[key] = r.json()["id"]
            resolved = r.json()["resolved"]
            if key == "job":
                self.assertEqual(resolved["weights_job"], self.pre)
            if key == "file":
                self.assertEqual(resolved["weights_file"], "copy.safetensors")
        for key in ids:
            self.wait_final(ids[key])
        # the same file, reached two ways, with the same seed: the same run
        self.assertEqual(self.losses(ids["job"]), self.losses(ids["file"]))
        self.assertNotEqual(self.losses(ids["job"]), self.losses(ids["random"]))
        # the resolved weights survive the job's start and end
        self.assertEqual(self.d.get(f"/api/jobs/{ids['job']}").json()["resolved"]["weights_job"],
                         self.pre)

    def test_3_job_refs_refused_at_submit(self):
        before = len(self.d.get("/api/jobs").json()["jobs"])
        for weights, words in (("job:999", "no job 999"), ("job:x", "job:ID"),
                               ("job:0", "job:ID"), ("job:", "job:ID")):
            e = self.assertError(self.d.post_json("/api/jobs", fine_tune(weights)), 400,
                                 "bad_request", path="weights")
            self.assertIn(words, e["message"])
        # a job that has not completed: a long one, cancelled afterwards
        long = job_spec(scratch=30, head=0, name="long")
        r = self.d.post_json("/api/jobs", long)
        self.assertStatus(r, 201)
        running = r.json()["id"]
        e = self.assertError(self.d.post_json("/api/jobs", fine_tune(f"job:{running}")), 400,
                             "bad_request", path="weights")
        self.assertRegex(e["message"], r"is (queued|running)")
        self.d.request("POST", f"/api/jobs/{running}/cancel")
        self.d.wait_job(running)
        self.assertEqual(len(self.d.get("/api/jobs").json()["jobs"]), before + 1)

    def test_4_delete_refused_while_in_use(self):
        if self.put("gone.safetensors", self.model).status != 201:
            self.fail(self.d.log_tail())
        # one long job runs, so the next one waits queued with the file
        r = self.d.post_json("/api/jobs", job_spec(scratch=30, head=0, name="blocker"))
        self.assertStatus(r, 201)
        blocker = r.json()["id"]
        r = self.d.post_json("/api/jobs", fine_tune("gone.safetensors", name="user"))
        self.assertStatus(r, 201)
        user = r.json()["id"]
        e = self.assertError(self.d.request("DELETE", "/api/weights/gone.safetensors"), 409,
                             "conflict")
        self.assertIn(f"job {user}", e["message"])
        self.assertTrue(os.path.exists(os.path.join(self.d.weights_dir, "gone.safetensors")))
        for job in (user, blocker):
            self.d.request("POST", f"/api/jobs/{job}/cancel")
            self.d.wait_job(job)
        r = self.d.request("DELETE", "/api/weights/gone.safetensors")
        self.assertStatus(r, 204)
        self.assertFalse(os.path.exists(os.path.join(self.d.weights_dir, "gone.safetensors")))
        self.assertError(self.d.request("DELETE", "/api/weights/gone.safetensors"), 404,
                         "not_found")


if __name__ == "__main__":
    unittest.main()
