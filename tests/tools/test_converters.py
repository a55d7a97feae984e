"""test_converters.py: tests of tools/st_io.py and the weight converters.

Run from the repository root with Debian's Python (it has torch, torchvision,
h5py): /usr/bin/python3 -m unittest -v tests/tools/test_converters.py

- st_io: round trip, the exact header bytes (the same literal the C test
  tests/unit/test_safetensors.c checks against core/safetensors.c), header
  structure, F16/BF16 reading, rejection of malformed files.
- pth_to_safetensors: a seeded torchvision resnet50 state dict converts bit for
  bit (plain and wrapped in {"state_dict": {"module." ...}}); missing, misshapen
  and unexpected tensors fail with messages naming them.
- h5_to_safetensors: a synthetic file with the structure of Keras's
  resnet50_weights_tf_dim_ordering_tf_kernels.h5 (and of a full-model save)
  converts with names and HWIO layouts kept; a wrong shape fails naming the layer.
"""

import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)

import h5_to_safetensors  # noqa: E402
import pth_to_safetensors  # noqa: E402
import st_io  # noqa: E402


def same_bits(a, b):
    """True when a and b have the same shape and identical float32 bytes."""
    a = np.ascontiguousarray(a, dtype="<f4")
    b = np.ascontiguousarray(b, dtype="<f4")
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def write_raw(path, header: bytes, data: bytes):
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header + data)


class TmpDirCase(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="resnetd-conv-")
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp, name)


class StIoTest(TmpDirCase):
    def test_round_trip(self):
        rng = np.random.default_rng(1)
        tensors = {
            "conv.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),
            "scalar": np.float32(2.5),
            "empty": np.zeros((0, 7), np.float32),
            "from_f64": np.array([1.0 / 3.0, -1e-40, np.inf]),  # converted to float32
            "strided": np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not C-contiguous
        }
        meta = {"format": "pt", "classes": '["cat","dog"]'}
        p = self.path("rt.safetensors")
        st_io.save(p, tensors, meta)
        got, got_meta = st_io.load(p)
        self.assertEqual(list(got), list(tensors))
        self.assertEqual(got_meta, meta)
        for name, want in tensors.items():
            self.assertEqual(got[name].dtype, np.float32, name)
            self.assertTrue(same_bits(got[name], np.asarray(want, np.float32)), name)
        self.assertEqual(got["scalar"].shape, ())
        self.assertEqual(got["empty"].shape, (0, 7))
        self.assertEqual(got["from_f64"][1], np.float32(-1e-40))
        self.assertEqual(os.stat(p).st_mode & 0o777, 0o644)
        self.assertEqual(os.listdir(self.tmp), ["rt.safetensors"])  # no temp file left

    def test_exact_bytes_match_c_writer(self):
        # Same literal as test_header_exact_bytes in tests/unit/test_safetensors.c.
        p = self.path("exact.safetensors")
        st_io.save(p, {"w": np.array([1.0, 2.0], np.float32)}, {"format": "pt"})
        with open(p, "rb") as f:
            buf = f.read()
        want = (b'{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],'
                b'"data_offsets":[0,8]}}')
        self.assertEqual(len(want), 85)
        self.assertEqual(buf[:8], (88).to_bytes(8, "little"))
        self.assertEqual(buf[8:8 + 88], want + b"   ")
        self.assertEqual(buf[96:], np.array([1.0, 2.0], "<f4").tobytes())
        self.assertEqual(len(buf), 104)

    def test_header_structure(self):
        p = self.path("pad.safetensors")
        pads = set()
        for n in range(1, 17):
            st_io.save(p, {"x" * n: np.ones(3, np.float32)})
            with open(p, "rb") as f:
                buf = f.read()
            hlen = int.from_bytes(buf[:8], "little")
            self.assertEqual(hlen % 8, 0)
            self.assertEqual(len(buf), 8 + hlen + 12)
            text = buf[8:8 + hlen]
            stripped = text.rstrip(b" ")
            self.assertTrue(stripped.endswith(b"}"))
            self.assertNotIn(b"__metadata__", text)  # no metadata given, none written
            pads.add(len(text) - len(stripped))
        self.assertEqual(pads, set(range(8)))

    def test_reads_f16_and_bf16(self):
        f16 = np.array([0x3C00, 0xC000, 0x0001, 0x03FF, 0x7C00, 0x8000], "<u2")
        bf16 = np.array([0x3F80, 0xC0A0, 0x4049, 0xFF80], "<u2")
        header = (b'{"h":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},'
                  b'"b":{"dtype":"BF16","shape":[4],"data_offsets":[12,20]}}')
        p = self.path("half.safetensors")
        write_raw(p, header, f16.tobytes() + bf16.tobytes())
        got, meta = st_io.load(p)
        self.assertEqual(meta, {})
        want_h = np.array([[1.0, -2.0, 2.0 ** -24], [1023 * 2.0 ** -24, np.inf, -0.0]], np.float32)
        self.assertTrue(same_bits(got["h"], want_h))
        self.assertTrue(same_bits(got["b"], np.array([1.0, -5.0, 3.140625, -np.inf], np.float32)))

    def test_rejects_malformed(self):
        one = b'{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
        gap = (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
               b'"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}')
        dup = (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
               b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}')
        size = b'{"t":{"dtype":"F32","shape":[64,64,1,1],"data_offsets":[0,100]}}'
        cases = [
            (one, b"\0" * 7, "data section is 7 bytes: 3 trailing bytes"),
            (one, b"\0" * 2, "2 bytes missing"),
            (gap, b"\0" * 12, "gap of 4 bytes"),
            (dup, b"\0" * 8, "duplicate key 'a'"),
            (size, b"\0" * 100, "hold 100 bytes but shape [64,64,1,1] F32 needs 16384"),
            (b'{"t":{"dtype":"X","shape":[],"data_offsets":[0,0]}}', b"", "unknown dtype 'X'"),
            (b"[]", b"", "not a JSON object"),
        ]
        p = self.path("bad.safetensors")
        for header, data, msg in cases:
            write_raw(p, header, data)
            with self.assertRaises(st_io.SafetensorsError) as cm:
                st_io.load(p)
            self.assertIn(msg, str(cm.exception))
        with open(p, "wb") as f:
            f.write(b"\x01\0\0")
        with self.assertRaisesRegex(st_io.SafetensorsError, "file is 3 bytes"):
            st_io.load(p)

    def test_save_rejects_bad_input(self):
        p = self.path("x.safetensors")
        with self.assertRaisesRegex(st_io.SafetensorsError, "tensor 'n'.*not floating point"):
            st_io.save(p, {"n": np.arange(3)})
        with self.assertRaisesRegex(st_io.SafetensorsError, "__metadata__"):
            st_io.save(p, {"__metadata__": np.ones(1)})
        with self.assertRaisesRegex(st_io.SafetensorsError, "must be str"):
            st_io.save(p, {}, {"k": 3})
        self.assertEqual(os.listdir(self.tmp), [])


class PthTest(TmpDirCase):
    @classmethod
    def setUpClass(cls):
        import torch
        import torchvision

        torch.manual_seed(1234)
        model = torchvision.models.resnet50(weights=None)
        g = torch.Generator().manual_seed(99)
        with torch.no_grad():  # non-trivial BN statistics, so every tensor is checked
            for name, buf in model.named_buffers():
                if name.endswith("running_mean"):
                    buf.copy_(torch.randn(buf.shape, generator=g))
                elif name.endswith("running_var"):
                    buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
                elif name.endswith("num_batches_tracked"):
                    buf.fill_(7)
        cls.sd = model.state_dict()
        cls.torch = torch

    def expected_names(self):
        return [k for k in self.sd if not k.endswith("num_batches_tracked")]

    def assert_converted(self, out, source):
        got, meta = st_io.load(out)
        self.assertEqual(list(got), self.expected_names())
        self.assertEqual(len(got), 267)
        for name, arr in got.items():
            want = self.sd[name].numpy()
            self.assertEqual(arr.shape, want.shape, name)
            self.assertTrue(same_bits(arr, want), name)
        self.assertEqual(meta, {"format": "pt", "variant": "torchvision",
                                "preprocess": "torch", "source": source})

    def test_backbone_spec(self):
        shapes = pth_to_safetensors.backbone_shapes()
        self.assertEqual(len(shapes), 265)
        model_shapes = {k: tuple(v.shape) for k, v in self.sd.items()
                        if not k.endswith("num_batches_tracked") and not k.startswith("fc.")}
        self.assertEqual(shapes, model_shapes)
        self.assertEqual(list(shapes), list(model_shapes))

    def test_plain_state_dict(self):
        src, out = self.path("resnet50-test.pth"), self.path("tv.safetensors")
        self.torch.save(self.sd, src)
        r = subprocess.run([sys.executable, os.path.join(TOOLS, "pth_to_safetensors.py"), src, out],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("267 tensors", r.stdout)
        self.assert_converted(out, "resnet50-test.pth")

    def test_wrapped_with_module_prefix(self):
        src, out = self.path("ckpt.pth"), self.path("tv.safetensors")
        wrapped = {"epoch": 3, "state_dict": {"module." + k: v for k, v in self.sd.items()}}
        self.torch.save(wrapped, src)
        self.assertEqual(pth_to_safetensors.convert(src, out), 267)
        self.assert_converted(out, "ckpt.pth")

    def test_model_key_without_fc(self):
        src, out = self.path("notop.pth"), self.path("notop.safetensors")
        sd = {k: v for k, v in self.sd.items() if not k.startswith("fc.")}
        self.torch.save({"model": sd}, src)
        self.assertEqual(pth_to_safetensors.convert(src, out), 265)
        got, _ = st_io.load(out)
        self.assertNotIn("fc.weight", got)
        name = "layer4.2.conv3.weight"
        self.assertTrue(same_bits(got[name], sd[name].numpy()))

    def test_pickled_module_needs_allow_pickle(self):
        import torchvision

        model = torchvision.models.resnet50(weights=None)
        model.load_state_dict(self.sd)
        src, out = self.path("module.pth"), self.path("module.safetensors")
        self.torch.save({"model": model}, src)
        with self.assertRaisesRegex(pth_to_safetensors.ConversionError, "--allow-pickle"):
            pth_to_safetensors.convert(src, out)
        self.assertFalse(os.path.exists(out))
        self.assertEqual(pth_to_safetensors.convert(src, out, allow_pickle=True), 267)
        self.assert_converted(out, "module.pth")

    def test_missing_tensor_fails(self):
        src, out = self.path("missing.pth"), self.path("missing.safetensors")
        sd = dict(self.sd)
        del sd["layer3.4.bn2.running_var"]
        self.torch.save(sd, src)
        r = subprocess.run([sys.executable, os.path.join(TOOLS, "pth_to_safetensors.py"), src, out],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing 1 tensors: layer3.4.bn2.running_var", r.stderr)
        self.assertIn("missing.pth", r.stderr)
        self.assertFalse(os.path.exists(out))

    def test_wrong_shape_and_unexpected(self):
        sd = {k: v.numpy() for k, v in self.sd.items()}
        sd["layer2.0.downsample.0.weight"] = np.zeros((512, 256, 3, 3), np.float32)
        sd["head.weight"] = np.zeros((2, 2048), np.float32)
        sd["fc.weight"] = np.zeros((10, 1024), np.float32)
        with self.assertRaises(pth_to_safetensors.ConversionError) as cm:
            pth_to_safetensors.check_state_dict(sd, "x.pth")
        msg = str(cm.exception)
        self.assertIn("layer2.0.downsample.0.weight is (512, 256, 3, 3), expected (512, 256, 1, 1)",
                      msg)
        self.assertIn("unexpected 1 tensors: head.weight", msg)
        self.assertIn("fc.weight is (10, 1024)", msg)

    def test_not_a_checkpoint(self):
        src = self.path("junk.pth")
        with open(src, "wb") as f:
            f.write(b"not a torch file")
        with self.assertRaisesRegex(pth_to_safetensors.ConversionError, "junk.pth: cannot load"):
            pth_to_safetensors.convert(src, self.path("o.safetensors"))


def keras_layer_order(top=True):
    """Keras ResNet50 model.layers names in order (175 without top, 177 with)."""
    names = ["input_1", "conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad",
             "pool1_pool"]
    for stage, nblocks, _ in h5_to_safetensors.STAGES:
        for b in range(1, nblocks + 1):
            p = f"conv{stage}_block{b}"
            main = [f"{p}_1_conv", f"{p}_1_bn", f"{p}_1_relu", f"{p}_2_conv", f"{p}_2_bn",
                    f"{p}_2_relu"]
            if b == 1:
                names += main + [f"{p}_0_conv", f"{p}_3_conv", f"{p}_0_bn", f"{p}_3_bn"]
            else:
                names += main + [f"{p}_3_conv", f"{p}_3_bn"]
            names += [f"{p}_add", f"{p}_out"]
    if top:
        names += ["avg_pool", "predictions"]
    return names


def keras_weights(rng, classes=1000, top=True):
    """Random weights per layer in Keras's weight order: {layer: [(short, array)]}."""
    shapes = h5_to_safetensors.backbone_shapes()
    per_layer = {}
    for name, shape in shapes.items():
        layer, short = name.split(".")
        per_layer.setdefault(layer, []).append((short, rng.standard_normal(shape).astype("<f4")))
    if top:
        per_layer["predictions"] = [
            ("kernel", rng.standard_normal((2048, classes)).astype("<f4")),
            ("bias", rng.standard_normal(classes).astype("<f4"))]
    return per_layer


def write_keras_h5(path, per_layer, layers, full_model=False):
    """Writes per_layer in the HDF5 layout of Keras 2's save_weights (or, with
    full_model, of model.save: the same under a "model_weights" group)."""
    import h5py

    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        if full_model:
            f.attrs["model_config"] = b"{}"
        root.attrs["layer_names"] = np.array([n.encode() for n in layers])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.2.4"
        for layer in layers:
            g = root.create_group(layer)
            ws = per_layer.get(layer, [])
            if not ws:
                g.attrs["weight_names"] = []
                continue
            g.attrs["weight_names"] = np.array([f"{layer}/{s}:0".encode() for s, _ in ws])
            for s, a in ws:
                g.create_dataset(f"{layer}/{s}:0", data=a)


class H5Test(TmpDirCase):
    def test_layer_order_helper(self):
        self.assertEqual(len(keras_layer_order(top=False)), 175)
        self.assertEqual(len(keras_layer_order(top=True)), 177)

    def test_backbone_spec(self):
        shapes = h5_to_safetensors.backbone_shapes()
        self.assertEqual(len(shapes), 318)
        convs = [n for n in shapes if n.endswith(".kernel")]
        bns = [n for n in shapes if n.endswith(".gamma")]
        self.assertEqual((len(convs), len(bns)), (53, 53))
        self.assertEqual(shapes["conv1_conv.kernel"], (7, 7, 3, 64))
        self.assertEqual(shapes["conv2_block1_0_conv.kernel"], (1, 1, 64, 256))
        self.assertEqual(shapes["conv3_block1_1_conv.kernel"], (1, 1, 256, 128))
        self.assertEqual(shapes["conv4_block3_2_conv.kernel"], (3, 3, 256, 256))
        self.assertEqual(shapes["conv5_block1_0_conv.kernel"], (1, 1, 1024, 2048))
        self.assertEqual(shapes["conv5_block3_3_conv.kernel"], (1, 1, 512, 2048))
        self.assertEqual(shapes["conv5_block3_3_bn.moving_variance"], (2048,))
        params = sum(int(np.prod(s)) for s in shapes.values()) + 2048 * 1000 + 1000
        # Keras ResNet50 total (trainable + non-trainable) = 25,636,712
        self.assertEqual(params, 25636712)

    def check_output(self, out, per_layer, layers, source):
        got, meta = st_io.load(out)
        want_names = [f"{layer}.{s}" for layer in layers for s, _ in per_layer.get(layer, [])]
        self.assertEqual(list(got), want_names)
        for layer in layers:
            for s, a in per_layer.get(layer, []):
                self.assertTrue(same_bits(got[f"{layer}.{s}"], a), f"{layer}.{s}")
        self.assertEqual(meta, {"format": "keras", "variant": "keras", "preprocess": "caffe",
                                "source": source})
        return got

    def test_weights_file_with_top(self):
        rng = np.random.default_rng(5)
        per_layer, layers = keras_weights(rng), keras_layer_order(top=True)
        src = self.path("resnet50_weights_tf_dim_ordering_tf_kernels.h5")
        out = self.path("keras.safetensors")
        write_keras_h5(src, per_layer, layers)
        r = subprocess.run([sys.executable, os.path.join(TOOLS, "h5_to_safetensors.py"), src, out],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("320 tensors", r.stdout)
        got = self.check_output(out, per_layer, layers, os.path.basename(src))
        self.assertEqual(len(got), 320)
        self.assertEqual(got["conv1_conv.kernel"].shape, (7, 7, 3, 64))  # HWIO kept
        self.assertEqual(got["predictions.kernel"].shape, (2048, 1000))  # (in, out) kept

    def test_full_model_save_notop(self):
        rng = np.random.default_rng(6)
        per_layer, layers = keras_weights(rng, top=False), keras_layer_order(top=False)
        src, out = self.path("model.h5"), self.path("notop.safetensors")
        write_keras_h5(src, per_layer, layers, full_model=True)
        self.assertEqual(h5_to_safetensors.convert(src, out), 318)
        got = self.check_output(out, per_layer, layers, "model.h5")
        self.assertNotIn("predictions.kernel", got)

    def test_wrong_shape_fails(self):
        rng = np.random.default_rng(7)
        per_layer, layers = keras_weights(rng, top=False), keras_layer_order(top=False)
        per_layer["conv4_block2_2_conv"][0] = ("kernel", np.zeros((3, 3, 256, 128), "<f4"))
        src, out = self.path("bad.h5"), self.path("bad.safetensors")
        write_keras_h5(src, per_layer, layers)
        r = subprocess.run([sys.executable, os.path.join(TOOLS, "h5_to_safetensors.py"), src, out],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("conv4_block2_2_conv.kernel is (3, 3, 256, 128), expected (3, 3, 256, 256)",
                      r.stderr)
        self.assertFalse(os.path.exists(out))

    def test_missing_layer_fails(self):
        rng = np.random.default_rng(8)
        layers = [n for n in keras_layer_order(top=False) if n != "conv3_block2_1_bn"]
        per_layer = keras_weights(rng, top=False)
        src = self.path("missing.h5")
        write_keras_h5(src, per_layer, layers)
        with self.assertRaises(h5_to_safetensors.ConversionError) as cm:
            h5_to_safetensors.convert(src, self.path("m.safetensors"))
        self.assertIn("missing 4 tensors: conv3_block2_1_bn.gamma, conv3_block2_1_bn.beta",
                      str(cm.exception))

    def test_not_keras(self):
        import h5py

        src = self.path("plain.h5")
        with h5py.File(src, "w") as f:
            f.create_dataset("x", data=np.ones(3))
        with self.assertRaisesRegex(h5_to_safetensors.ConversionError, "no 'layer_names'"):
            h5_to_safetensors.convert(src, self.path("p.safetensors"))


if __name__ == "__main__":
    unittest.main()
