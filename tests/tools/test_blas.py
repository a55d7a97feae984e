"""test_blas.py: which OpenBLAS kernel resnetd runs, who chose it, and what it says
when this CPU has a faster one (core/blas.c, server/main.c, docs/configuration.md).

Run from the repository root with Debian's Python:
    /usr/bin/python3 -m unittest -v tests/tools/test_blas.py
The binary is $RESNETD_BUILD_DIR/resnetd (tests/run.sh sets it; default build/resnetd).

The tests hold on any x86-64 CPU: the best kernel is read from /proc/cpuinfo
(SkylakeX with AVX-512 F, BW, VL and DQ; Haswell with AVX2 and FMA), and what
needs AVX-512 or AVX2 is skipped without it.

- `version` with nothing set: the best kernel, chosen by resnetd.
- OPENBLAS_CORETYPE stands by default (Nehalem, Haswell: chosen by user); with
  Haswell on an AVX-512 CPU, `version` names the faster SkylakeX and how to let
  resnetd choose (blas_kernel = auto, RESNETD_BLAS_KERNEL=auto, --blas-kernel
  auto), and so does `train`, once, on stderr.
- RESNETD_BLAS_KERNEL=auto (or `train --blas-kernel auto`) runs the best kernel
  over OPENBLAS_CORETYPE, without the warning; a bad value is refused (exit 2).
- The re-exec never loops: a process that finds RESNETD_BLAS_REEXEC naming the
  kernel in OPENBLAS_CORETYPE is the re-exec, and runs on.
"""

import os
import re
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("RESNETD_BUILD_DIR") or os.path.join(ROOT, "build")
RESNETD = os.path.join(BUILD, "resnetd")

# resnetd version's second line
KERNEL = re.compile(r"^blas: OpenBLAS kernel (\S+) \(chosen by (\w+)\), (\d+) threads; "
                    r"best for this CPU: (\S+)", re.M)
SLOWER = "is slower than"


def best_kernel():
    """The OpenBLAS kernel resnetd picks on this CPU (core/blas.c), or None."""
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^flags\s*:(.*)$", f.read(), re.M)
    flags = set(m.group(1).split()) if m else set()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def clean_env(**extra):
    """The environment without a kernel choice or resnetd options, plus extra."""
    env = {k: v for k, v in os.environ.items()
           if k != "OPENBLAS_CORETYPE" and not k.startswith("RESNETD_")}
    env.update(extra)
    return env


def run(*args, **env):
    return subprocess.run([RESNETD, *args], capture_output=True, text=True, timeout=60,
                          env=clean_env(**env))


class KernelTest(unittest.TestCase):
    def version(self, **env):
        """(kernel, origin, best, stdout) of `resnetd version` under env."""
        r = run("version", **env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^resnetd \d+\.\d+\.\d+\n")
        m = KERNEL.search(r.stdout)
        self.assertIsNotNone(m, r.stdout)
        self.assertTrue(1 <= int(m[3]) <= os.cpu_count(), r.stdout)
        return m[1], m[2], m[4], r.stdout

    def need(self, kernel):
        want = best_kernel()
        if kernel == "SkylakeX" and want != "SkylakeX":
            self.skipTest("this CPU has no AVX-512")
        if kernel == "Haswell" and want is None:
            self.skipTest("this CPU has no AVX2")

    def test_default_is_the_best(self):
        kernel, origin, best, out = self.version()
        self.assertNotEqual(kernel, "unknown")
        want = best_kernel()
        self.assertEqual(best, want or "none")
        if want:
            # resnetd re-execs unless OpenBLAS picked that very kernel itself
            self.assertEqual(kernel, want, out)
            self.assertIn(origin, ("resnetd", "openblas"), out)
        else:
            self.assertEqual(origin, "openblas", out)
        self.assertNotIn(SLOWER, out)

    def test_user_choice_wins(self):
        kernel, origin, _, out = self.version(OPENBLAS_CORETYPE="Nehalem")
        self.assertEqual((kernel, origin), ("Nehalem", "user"), out)
        if best_kernel():
            self.assertIn(f"Nehalem (chosen by user) {SLOWER} {best_kernel()}", out)

    def test_haswell_from_the_environment_says_what_it_costs(self):
        self.need("Haswell")
        kernel, origin, best, out = self.version(OPENBLAS_CORETYPE="Haswell")
        self.assertEqual((kernel, origin, best), ("Haswell", "user", best_kernel()), out)
        if best_kernel() != "SkylakeX":
            self.assertNotIn(SLOWER, out)
            return
        advice = [line for line in out.splitlines() if SLOWER in line]
        self.assertEqual(len(advice), 1, out)
        for words in ("OpenBLAS kernel Haswell (chosen by user) is slower than SkylakeX",
                      "blas_kernel = auto", "RESNETD_BLAS_KERNEL=auto", "--blas-kernel auto",
                      "unset OPENBLAS_CORETYPE"):
            self.assertIn(words, advice[0])

    def test_auto_picks_the_best_over_the_environment(self):
        self.need("SkylakeX")
        kernel, origin, _, out = self.version(OPENBLAS_CORETYPE="Haswell",
                                              RESNETD_BLAS_KERNEL="auto")
        self.assertEqual((kernel, origin), ("SkylakeX", "resnetd"), out)
        self.assertNotIn(SLOWER, out)
        # env, any case, is the default: the environment's kernel again
        kernel, origin, _, out = self.version(OPENBLAS_CORETYPE="Haswell",
                                              RESNETD_BLAS_KERNEL="ENV")
        self.assertEqual((kernel, origin), ("Haswell", "user"), out)

    def test_bad_policy_is_refused(self):
        for bad in ("SkylakeX", "fast", ""):
            with self.subTest(value=bad):
                r = run("version", RESNETD_BLAS_KERNEL=bad)
                self.assertEqual(r.returncode, 2, r.stdout)
                self.assertIn(f"RESNETD_BLAS_KERNEL: expected env or auto (got '{bad}')",
                              r.stderr)

    def test_reexec_never_loops(self):
        """A process that finds the mark naming OPENBLAS_CORETYPE's kernel is the
        re-exec: even under auto it runs on the kernel it has."""
        self.need("SkylakeX")
        kernel, origin, _, out = self.version(OPENBLAS_CORETYPE="Haswell",
                                              RESNETD_BLAS_REEXEC="Haswell",
                                              RESNETD_BLAS_KERNEL="auto")
        self.assertEqual((kernel, origin), ("Haswell", "resnetd"), out)
        # a mark left over from another kernel does not count
        kernel, origin, _, out = self.version(OPENBLAS_CORETYPE="Haswell",
                                              RESNETD_BLAS_REEXEC="SkylakeX")
        self.assertEqual((kernel, origin), ("Haswell", "user"), out)

    def test_train_warns_once_and_takes_the_flag(self):
        self.need("SkylakeX")
        with tempfile.TemporaryDirectory(prefix="resnetd-blas-") as tmp:
            missing = os.path.join(tmp, "no-such-spec.json")
            r = run("train", missing, OPENBLAS_CORETYPE="Haswell")
            self.assertEqual(r.returncode, 1, r.stderr)
            warnings = [line for line in r.stderr.splitlines() if SLOWER in line]
            self.assertEqual(len(warnings), 1, r.stderr)
            self.assertTrue(warnings[0].startswith("resnetd train: warning: OpenBLAS kernel "
                                                   "Haswell (chosen by user)"), r.stderr)
            self.assertIn("--blas-kernel auto", warnings[0])
            self.assertIn("no-such-spec.json", r.stderr)
            for how in ({"args": ["--blas-kernel", "auto"]},
                        {"env": {"RESNETD_BLAS_KERNEL": "auto"}}):
                with self.subTest(**how):
                    r = run("train", missing, *how.get("args", []), OPENBLAS_CORETYPE="Haswell",
                            **how.get("env", {}))
                    self.assertEqual(r.returncode, 1, r.stderr)
                    self.assertNotIn(SLOWER, r.stderr)
            r = run("train", missing, "--blas-kernel", "Haswell")
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("--blas-kernel: expected env or auto (got 'Haswell')", r.stderr)


if __name__ == "__main__":
    unittest.main()
