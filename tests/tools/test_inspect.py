"""test_inspect.py: `resnetd inspect` and `resnetd version`, run as a user runs them.

Run from the repository root with Debian's Python (it has torch and torchvision):
    /usr/bin/python3 -m unittest -v tests/tools/test_inspect.py
The binary is $RESNETD_BUILD_DIR/resnetd (tests/run.sh sets it; default build/resnetd).

- A seeded torchvision resnet50 state dict (torch.save), converted with
  tools/pth_to_safetensors.py: variant torchvision, 267 tensors, 25,557,032
  parameters, a 1000-class head.
- A Keras-layout file written with tools/st_io.py from the torch re-implementation of
  Keras's ResNet50 (tests/reference/resnet_torch.py): variant keras, 320 tensors,
  25,583,592 parameters (Keras's summary says 25,636,712 because it also counts the
  53,120 BN moving statistics).
- A backbone-only file, a head with a hidden layer and class names.
- Truncated, absent and non-weight files: exit status 1 and stderr naming the problem.
- `version` takes its threads from RESNETD_THREADS and refuses a bad value (the
  kernel it names: test_blas.py).
"""

import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

import st_io  # noqa: E402

BUILD = os.environ.get("RESNETD_BUILD_DIR") or os.path.join(ROOT, "build")
RESNETD = os.path.join(BUILD, "resnetd")

TV_PARAMS = 25_557_032
KERAS_PARAMS = 25_583_592        # weights and biases
KERAS_SUMMARY_TOTAL = 25_636_712  # Keras's model.summary(): + BN moving statistics
BN_STATS = 53_120


def run(*args, env=None):
    """Runs resnetd with args; returns the CompletedProcess (text mode)."""
    return subprocess.run([RESNETD, *args], capture_output=True, text=True, timeout=120,
                          env=env)


def parse_inspect(stdout):
    """'key:   value' lines -> dict."""
    out = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


class InspectTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(RESNETD, os.X_OK):
            raise RuntimeError(f"{RESNETD} is missing: build it first (make build/resnetd)")
        import torch
        import torchvision

        import resnet_torch

        cls._tmp = tempfile.TemporaryDirectory(prefix="resnetd-inspect-")
        tmp = cls._tmp.name
        cls.tmp = tmp

        # torchvision: a real state dict through the converter
        torch.manual_seed(0)
        tv = torchvision.models.resnet50(weights=None)
        cls.tv_params = sum(p.numel() for p in tv.parameters())
        cls.tv_state_entries = len(tv.state_dict())
        pth = os.path.join(tmp, "resnet50.pth")
        torch.save(tv.state_dict(), pth)
        cls.tv_path = os.path.join(tmp, "tv.safetensors")
        cls.convert = subprocess.run(
            [sys.executable, os.path.join(ROOT, "tools", "pth_to_safetensors.py"), pth,
             cls.tv_path], capture_output=True, text=True, timeout=300)

        # the same without the classifier: a backbone-only checkpoint
        sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
        pth_bb = os.path.join(tmp, "backbone.pth")
        torch.save(sd, pth_bb)
        cls.backbone_path = os.path.join(tmp, "backbone.safetensors")
        cls.convert_bb = subprocess.run(
            [sys.executable, os.path.join(ROOT, "tools", "pth_to_safetensors.py"), pth_bb,
             cls.backbone_path], capture_output=True, text=True, timeout=300)

        # Keras layout, names and HWIO / (in, out) kernels from the reference module
        torch.manual_seed(1)
        keras = resnet_torch.KerasResNet50(1000)
        cls.keras_params = sum(p.numel() for p in keras.parameters())
        cls.keras_bn_stats = sum(b.numel() for n, b in keras.named_buffers() if "running" in n)
        tensors = {name: a for name, a, _, _ in resnet_torch.named_tensors(keras, "keras")}
        cls.keras_tensors = len(tensors)
        cls.keras_path = os.path.join(tmp, "keras.safetensors")
        st_io.save(cls.keras_path, tensors, {"format": "keras"})

        # a fine-tuned torchvision model: 3 classes after a hidden layer of 128 units
        torch.manual_seed(2)
        small = resnet_torch.TorchvisionResNet50(3, 128)
        cls.small_params = sum(p.numel() for p in small.parameters())
        tensors = {name: a for name, a, _, _ in
                   resnet_torch.named_tensors(small, "torchvision")}
        cls.small_tensors = len(tensors)
        cls.small_path = os.path.join(tmp, "small.safetensors")
        cls.classes = '["cat","dog","emu"]'
        st_io.save(cls.small_path, tensors, {"format": "pt", "variant": "torchvision",
                                             "preprocess": "tf", "classes": cls.classes})

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def inspect_ok(self, path):
        r = run("inspect", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        info = parse_inspect(r.stdout)
        self.assertEqual(info["file"], path)
        return info

    def inspect_fails(self, path, *needles):
        r = run("inspect", path)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertTrue(r.stderr.startswith("resnetd inspect: " + path), r.stderr)
        for n in needles:
            self.assertIn(n, r.stderr)
        return r.stderr

    def test_torchvision_converted(self):
        self.assertEqual(self.convert.returncode, 0, self.convert.stderr)
        self.assertIn("267 tensors", self.convert.stdout)
        # 320 state-dict entries in, 267 out: the 53 num_batches_tracked are dropped
        self.assertEqual(self.tv_state_entries, 320)
        self.assertEqual(len(st_io.load(self.tv_path)[0]), 267)
        info = self.inspect_ok(self.tv_path)
        self.assertEqual(info["variant"], "torchvision")
        self.assertEqual(info["naming"], "torch")
        self.assertEqual(info["preprocess"], "torch")
        self.assertEqual(info["tensors"], "267")
        self.assertEqual(self.tv_params, TV_PARAMS)
        self.assertEqual(info["parameters"], str(TV_PARAMS))
        self.assertEqual(info["head"], "1000 classes")
        self.assertNotIn("classes", info)

    def test_backbone_only(self):
        self.assertEqual(self.convert_bb.returncode, 0, self.convert_bb.stderr)
        info = self.inspect_ok(self.backbone_path)
        self.assertEqual(info["variant"], "torchvision")
        self.assertEqual(info["tensors"], "265")
        self.assertEqual(info["parameters"], str(TV_PARAMS - (2048 * 1000 + 1000)))
        self.assertEqual(info["head"], "none (backbone only)")

    def test_keras_layout(self):
        info = self.inspect_ok(self.keras_path)
        self.assertEqual(info["variant"], "keras")
        self.assertEqual(info["naming"], "keras")
        self.assertEqual(info["preprocess"], "caffe")  # the Keras default
        self.assertEqual(info["tensors"], str(self.keras_tensors))
        self.assertEqual(self.keras_tensors, 320)  # 267 + a bias for each of 53 convs
        self.assertEqual(self.keras_params, KERAS_PARAMS)
        self.assertEqual(self.keras_params + self.keras_bn_stats, KERAS_SUMMARY_TOTAL)
        self.assertEqual(self.keras_bn_stats, BN_STATS)
        self.assertEqual(info["parameters"], str(KERAS_PARAMS))
        self.assertEqual(info["head"], "1000 classes")

    def test_hidden_head_and_classes(self):
        info = self.inspect_ok(self.small_path)
        self.assertEqual(info["variant"], "torchvision")
        self.assertEqual(info["preprocess"], "tf")
        self.assertEqual(info["tensors"], str(self.small_tensors))
        self.assertEqual(info["parameters"], str(self.small_params))
        self.assertEqual(self.small_params,
                         TV_PARAMS - (2048 * 1000 + 1000) + (2048 * 128 + 128) + (128 * 3 + 3))
        self.assertEqual(info["head"], "3 classes, hidden layer of 128")
        self.assertEqual(info["classes"], self.classes)

    def test_truncated(self):
        with open(self.tv_path, "rb") as f:
            buf = f.read()
        path = os.path.join(self.tmp, "truncated.safetensors")
        with open(path, "wb") as f:
            f.write(buf[:-1000])
        self.inspect_fails(path, "1000 bytes missing", "truncated")
        with open(path, "wb") as f:
            f.write(buf[:64])
        self.inspect_fails(path, "file is 64 bytes but header says 8 +")

    def test_not_weights(self):
        self.inspect_fails(os.path.join(self.tmp, "absent.safetensors"), "No such file")
        path = os.path.join(self.tmp, "image.png")
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + bytes(64))
        self.inspect_fails(path, "header length", "over the limit")
        path = os.path.join(self.tmp, "other.safetensors")
        st_io.save(path, {"embeddings.weight": [[1.0, 2.0]]})
        self.inspect_fails(path, "not ResNet50 weights")
        path = os.path.join(self.tmp, "liar.safetensors")
        tensors, _ = st_io.load(self.tv_path)
        st_io.save(path, tensors, {"variant": "keras"})
        self.inspect_fails(path, "metadata says variant 'keras'", "torch-style")

    def test_usage(self):
        r = run("inspect")
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: resnetd inspect", r.stderr)
        r = run("inspect", self.tv_path, self.keras_path)
        self.assertEqual(r.returncode, 2)
        r = run("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", r.stderr)


class VersionTest(unittest.TestCase):
    def clean_env(self, **extra):
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_CORETYPE", "RESNETD_BLAS_REEXEC")}
        env.update(extra)
        return env

    def test_threads_from_environment(self):
        r = run("version", env=self.clean_env(RESNETD_THREADS="1"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(", 1 threads", r.stdout)
        for bad in ("two", "-1", "", "3x"):
            r = run("version", env=self.clean_env(RESNETD_THREADS=bad))
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn("RESNETD_THREADS: expected a whole number from 0 to 1024 "
                          f"(got '{bad}')", r.stderr)


if __name__ == "__main__":
    unittest.main()
