"""test_acceptance.py: a small version of the transfer-learning acceptance run.

Run from the repository root with Debian's Python:
    /usr/bin/python3 -m unittest -v tests/e2e/test_acceptance.py

tools/fmnist_acceptance.sh with small numbers (200 images per class, 4 epochs of
pretraining from scratch on Fashion-MNIST classes 0-4 at 32x32; 40 images per
class of classes 5-9 for fine-tuning, a head phase then stage:5):
- the run fine-tuned from the pretrained weights ends with a higher best val
  accuracy than the same schedule from random weights (by at least 0.1: about
  0.6 against 0.3 here);
- in the head phase, the first epoch runs every image through the network and
  the later epochs start from the cached frozen part: they are marked "(cached)",
  and the job database has cached = 1 for them. The speed-up is printed (the
  full-size run's figure is in the README); it is measured, not asserted.
"""

import os
import re
import sqlite3
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("RESNETD_BUILD_DIR") or os.path.join(ROOT, "build")

LINE = re.compile(r"^epoch (\d+)/(\d+) \[(\w+)\] .* val loss ([\d.na-]+) acc ([\d.]+) .*"
                  r"\| [\d.]+ s, ([\d.]+) img/s( \(cached\))?")


def epochs(log):
    out = []
    with open(log) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                out.append({"epoch": int(m[1]), "phase": m[3], "acc": float(m[5]),
                            "ips": float(m[6]), "cached": bool(m[7])})
    return out


class Acceptance(unittest.TestCase):
    def test_finetuned_beats_random_and_head_phase_is_cached(self):
        with tempfile.TemporaryDirectory(prefix="resnetd-acceptance-") as tmp:
            out = os.path.join(tmp, "acc")
            env = dict(os.environ, PER_PRETRAIN="200", PER_FINETUNE="40", PRETRAIN_EPOCHS="4")
            r = subprocess.run([os.path.join(ROOT, "tools", "fmnist_acceptance.sh"), BUILD, out],
                               capture_output=True, text=True, env=env, timeout=900)
            self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
            ft = epochs(os.path.join(out, "finetune.log"))
            scratch = epochs(os.path.join(out, "scratch.log"))
            self.assertEqual(len(ft), 7)
            self.assertEqual(len(scratch), 7)
            best_ft = max(e["acc"] for e in ft)
            best_scratch = max(e["acc"] for e in scratch)
            print(f"\n  best val accuracy: fine-tuned {best_ft:.3f}, from random "
                  f"{best_scratch:.3f}")
            self.assertGreaterEqual(best_ft, best_scratch + 0.1)

            head = [e for e in ft if e["phase"] == "head"]
            self.assertEqual([e["cached"] for e in head], [False, True, True])
            stage5 = [e for e in ft if e["phase"] == "stage5"]
            self.assertEqual([e["cached"] for e in stage5], [False, True, True, True])
            speedup = min(e["ips"] for e in head[1:]) / head[0]["ips"]
            print(f"  head phase: {head[0]['ips']:.0f} img/s in the first epoch, "
                  f"{min(e['ips'] for e in head[1:]):.0f} img/s cached ({speedup:.1f}x)")
            con = sqlite3.connect(os.path.join(out, "acceptance.db"))
            rows = con.execute("SELECT j.name, e.epoch, e.cached FROM epochs e JOIN jobs j"
                               " ON j.id = e.job_id WHERE j.name = 'finetune' AND"
                               " e.phase_name = 'head' ORDER BY e.epoch").fetchall()
            self.assertEqual(rows, [("finetune", 0, 1), ("finetune", 1, 1), ("finetune", 2, 1)])
            states = con.execute("SELECT name, state FROM jobs ORDER BY id").fetchall()
            self.assertEqual(states, [("fmnist-pretrain", "completed"),
                                      ("finetune", "completed"), ("scratch", "completed")])
            con.close()


if __name__ == "__main__":
    unittest.main()
