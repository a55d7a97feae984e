"""test_train_cli.py: `resnetd train` and `resnetd predict` run as a user runs them.

Run from the repository root with Debian's Python:
    /usr/bin/python3 -m unittest -v tests/e2e/test_train_cli.py
Binaries come from $RESNETD_BUILD_DIR (tests/run.sh sets it; default build/).

A tiny Fashion-MNIST set (3 classes x 16 images, 32x32, from tools/fmnist_to_png)
and a head phase then a stage:5 phase from random weights:
- --db FILE records the job (spec, state, classes), one row per epoch with the
  values printed on stdout, per-class rows whose support adds up to the val split,
  a confusion matrix that sums to it, and one row per training step.
- SIGINT after the first epoch with --checkpoint: a checkpoint at the batch it
  stopped at; then --resume with the same --db: the same job row continues from
  that batch, every epoch and step appears exactly once, and the resumed epochs
  equal an uninterrupted run's to 2% (the resumed head phase runs its remaining
  steps without the frozen-prefix cache, another float order that the chaotic
  stage:5 phase then amplifies: `--no-cache` alone moved the last val loss by
  1e-4 with 2 threads, the resume by 2.5e-3 with 1 thread on another CPU;
  test_train checks resuming to 1e-5 where the order is the same).
- --export then `predict --json` gives each image's top-k over the class names.
- A bad spec is refused with the JSON path of the bad field; a bad --db path with
  the database error; neither leaves a job row behind.
"""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import RESNETD, fmnist  # noqa: E402

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) \[(\w+)\] train loss ([\d.]+) acc ([\d.]+) \| "
                        r"val loss ([\d.]+) acc ([\d.]+)")


def spec(dataset, epochs_head=2, epochs_stage5=1):
    """From random weights: one epoch of everything (BN in train mode, so that its
    statistics fit the data), then the usual head and stage:5 phases."""
    return {"name": "cli-test", "dataset": dataset, "weights": "random",
            "preprocess": "torch", "input_size": 32, "batch_size": 8, "seed": 3,
            "phases": [{"name": "scratch", "epochs": 1, "train": "all", "bn": "train",
                        "optimizer": {"type": "adam", "lr": 0.001}},
                       {"name": "head", "epochs": epochs_head, "train": "head",
                        "optimizer": {"type": "adam", "lr": 0.01}},
                       {"name": "stage5", "epochs": epochs_stage5, "train": "stage:5",
                        "optimizer": {"type": "sgd", "lr": 0.01, "momentum": 0.9}}]}


def epochs_of(stdout):
    """[(epoch, phase, train_loss, val_loss, val_acc)] from resnetd train's stdout."""
    out = []
    for line in stdout.splitlines():
        m = EPOCH_LINE.match(line)
        if m:
            out.append((int(m[1]), m[3], float(m[4]), float(m[6]), float(m[7])))
    return out


class TrainCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="resnetd-train-cli-")
        cls.data = fmnist(os.path.join(cls.tmp.name, "fm"), "--classes", "0,1,7",
                          "--per-class", "16", "--size", "32")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def write_spec(self, name, s):
        p = self.path(name)
        with open(p, "w") as f:
            json.dump(s, f)
        return p

    def train(self, *args, timeout=300):
        return subprocess.run([RESNETD, "train", *args], capture_output=True, text=True,
                              timeout=timeout)

    def test_db_records_the_job(self):
        sp = self.write_spec("db.json", spec(self.data))
        db = self.path("db.sqlite")
        r = self.train(sp, "--db", db)
        self.assertEqual(r.returncode, 0, r.stderr)
        printed = epochs_of(r.stdout)
        self.assertEqual([e[0] for e in printed], [1, 2, 3, 4])
        con = sqlite3.connect(db)
        self.assertEqual(con.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        jobs = con.execute("SELECT id, name, state, error, epochs_total, epochs_done, classes,"
                           " spec, started, finished FROM jobs").fetchall()
        self.assertEqual(len(jobs), 1)
        jid, name, state, error, total, done, classes, spec_text, started, finished = jobs[0]
        self.assertEqual((name, state, error, total, done), ("cli-test", "completed", None, 4, 4))
        self.assertEqual(json.loads(classes), sorted(os.listdir(self.data)))
        self.assertEqual(len(json.loads(classes)), 3)
        self.assertEqual(json.loads(spec_text)["name"], "cli-test")
        self.assertLessEqual(started, finished)
        rows = con.execute("SELECT epoch, phase, phase_name, train_loss, val_loss, val_acc,"
                           " confusion, predicted, grad_norm, cached FROM epochs"
                           " ORDER BY epoch").fetchall()
        self.assertEqual([row[0] for row in rows], [0, 1, 2, 3])
        self.assertEqual([row[2] for row in rows], ["scratch", "head", "head", "stage5"])
        n_val = None
        for row, shown in zip(rows, printed):
            self.assertAlmostEqual(row[3], shown[2], places=4)
            self.assertAlmostEqual(row[4], shown[3], places=4)
            self.assertAlmostEqual(row[5], shown[4], places=4)
            conf = json.loads(row[6])
            self.assertEqual(len(conf), 3)
            n_val = sum(map(sum, conf))
            correct = sum(conf[i][i] for i in range(3))
            self.assertAlmostEqual(row[5], correct / n_val, places=6)
            self.assertEqual(json.loads(row[7]), [sum(conf[t][p] for t in range(3))
                                                  for p in range(3)])
            grads = json.loads(row[8])
            self.assertEqual(len(grads), 6)
            self.assertGreater(grads[5], 0)  # the head always trains
        # head phase: the stem to conv5 frozen and cached; stage:5 phase cached below conv5
        self.assertEqual([row[9] for row in rows], [0, 1, 1, 1])
        self.assertEqual([row[0] for row in rows if json.loads(row[8])[4] > 0], [0, 3])
        self.assertEqual([row[0] for row in rows if json.loads(row[8])[0] > 0], [0])
        supports = con.execute("SELECT epoch, sum(support), count(*) FROM class_metrics"
                               " GROUP BY epoch").fetchall()
        self.assertEqual(supports, [(e, n_val, 3) for e in range(4)])
        steps = con.execute("SELECT epoch, count(*), max(steps), min(loss) > 0 FROM steps"
                            " GROUP BY epoch").fetchall()
        n_train = 48 - n_val
        per_epoch = -(-n_train // 8)
        self.assertEqual(steps, [(e, per_epoch, per_epoch, 1) for e in range(4)])
        con.close()

    def test_interrupt_and_resume_continue_the_same_job(self):
        s = spec(self.data, epochs_head=2, epochs_stage5=2)
        sp = self.write_spec("resume.json", s)
        db, ck = self.path("resume.sqlite"), self.path("resume.ckpt")
        straight = self.train(sp)
        self.assertEqual(straight.returncode, 0, straight.stderr)
        want = epochs_of(straight.stdout)
        self.assertEqual(len(want), 5)

        p = subprocess.Popen([RESNETD, "train", sp, "--db", db, "--checkpoint", ck,
                              "--checkpoint-interval", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = ""  # findings come first (before training), then epoch 1's line
        while not first.startswith("epoch "):
            first = p.stdout.readline()
            self.assertTrue(first, "resnetd train ended before its first epoch")
        self.assertTrue(first.startswith("epoch 1/5"), first)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 130, err)
        self.assertIn("cancelled", err)
        con = sqlite3.connect(db)
        self.assertEqual(con.execute("SELECT state FROM jobs").fetchone()[0], "cancelled")
        con.close()

        r = self.train(sp, "--db", db, "--checkpoint", ck, "--resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stderr, r"resuming at epoch 2, step \d+ from the checkpoint")
        got = epochs_of(first + out + r.stdout)
        self.assertEqual([e[0] for e in got][-4:], [2, 3, 4, 5])
        con = sqlite3.connect(db)
        self.assertEqual(con.execute("SELECT count(*), max(state) FROM jobs").fetchone(),
                         (1, "completed"))
        rows = con.execute("SELECT epoch, train_loss, val_loss FROM epochs ORDER BY epoch"
                           ).fetchall()
        self.assertEqual([row[0] for row in rows], [0, 1, 2, 3, 4])
        for row, w in zip(rows, want):
            self.assertAlmostEqual(row[1], w[2], delta=2e-2 * max(1.0, w[2]))
            self.assertAlmostEqual(row[2], w[3], delta=2e-2 * max(1.0, w[3]))
        # every step of every epoch once
        dup = con.execute("SELECT count(*) FROM (SELECT epoch, step FROM steps"
                          " GROUP BY epoch, step HAVING count(*) > 1)").fetchone()[0]
        self.assertEqual(dup, 0)
        self.assertEqual(con.execute("SELECT count(DISTINCT epoch) FROM steps").fetchone()[0], 5)
        con.close()

    def test_export_and_predict_json(self):
        sp = self.write_spec("export.json", spec(self.data, 1, 1))
        out = self.path("model.safetensors")
        r = self.train(sp, "--export", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        classes = sorted(os.listdir(os.path.join(self.data)))
        img_dir = os.path.join(self.data, classes[0])
        imgs = [os.path.join(img_dir, f) for f in sorted(os.listdir(img_dir))[:2]]
        p = subprocess.run([RESNETD, "predict", out, *imgs, "--top", "2", "--json"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        res = json.loads(p.stdout)
        self.assertEqual(len(res), 2)
        for top in res:
            self.assertEqual(len(top), 2)
            self.assertIn(top[0]["class"], classes)
            self.assertGreaterEqual(top[0]["prob"], top[1]["prob"])
            self.assertEqual(classes[top[0]["index"]], top[0]["class"])

    def test_bad_inputs(self):
        s = spec(self.data)
        s["phases"][1]["optimizer"]["lr"] = -1
        sp = self.write_spec("bad.json", s)
        db = self.path("bad.sqlite")
        r = self.train(sp, "--db", db)
        self.assertEqual(r.returncode, 1)
        self.assertIn("phases[1].optimizer.lr", r.stderr)
        self.assertFalse(os.path.exists(db))
        good = self.write_spec("good.json", spec(self.data))
        r = self.train(good, "--db", self.path("no/such/dir/x.sqlite"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("--db: cannot open database", r.stderr)
        r = self.train(good, "--resume")
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: resnetd train", r.stderr)


if __name__ == "__main__":
    unittest.main()
