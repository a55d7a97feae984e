"""test_h5_native.py: resnetd reads Keras 2 HDF5 weights (.h5) itself, exactly as
tools/h5_to_safetensors.py converts them.

Run from the repository root with Debian's Python (it has h5py and numpy):
    /usr/bin/python3 -m unittest -v tests/tools/test_h5_native.py
Binaries come from $RESNETD_BUILD_DIR (tests/run.sh sets it; default build/):
resnetd, tools/h5_to_safetensors (core/h5weights.c behind a command line) and
tools/fmnist_to_png.

Files are written with h5py in the layout Keras 2 writes (save_weights, and
model.save with the weights under model_weights; byte-string attributes split
into NAME0, NAME1, ... as save_attributes_to_hdf5_group splits them) from one
seeded ResNet50 with values of a trained network's scale, then:
- for each of them (top-level layer_names with fixed-length strings; a full-model
  save with variable-length strings; split layer_names0/1 and weight_names0/1; a
  notop file whose datasets are f16, f64, big-endian, gzip-chunked and long
  double, with NaN payloads, infinities, subnormals, halfway cases and overflow),
  the C reader's output (build/tools/h5_to_safetensors) is the same bytes as the
  Python converter's, and `resnetd inspect` prints the same for the .h5 and the
  converted file (with the expected figures);
- `resnetd train` (a head phase and a stage:5 phase on a few Fashion-MNIST
  images, one thread, seed fixed) from the .h5 and from its converted file prints
  the same losses, accuracies, gradient norms and preflight findings, and exports
  the same bytes;
- every malformed file (truncated, no HDF5 signature, not Keras, Keras 3 layout,
  a missing layer or group or dataset, a wrong shape, a non-float dataset, two
  weights of one name, unexpected tensors, a head of the wrong shape, a dataset
  whose data cannot be read) makes resnetd exit 1 with the converter's message
  (or, where libhdf5 or the data read is involved, a message naming the problem),
  and bytes flipped through a file's metadata never crash it.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import h5_to_safetensors  # noqa: E402
from e2e import fmnist  # noqa: E402
from test_converters import keras_layer_order as keras_layers  # noqa: E402
from test_inspect import parse_inspect  # noqa: E402

BUILD = os.environ.get("RESNETD_BUILD_DIR") or os.path.join(ROOT, "build")
RESNETD = os.path.join(BUILD, "resnetd")
C_READER = os.path.join(BUILD, "tools", "h5_to_safetensors")
CONVERTER = os.path.join(ROOT, "tools", "h5_to_safetensors.py")
PYTHON = "/usr/bin/python3"

KERAS_PARAMS = 25_583_592  # weights and biases of Keras ResNet50 with its 1000-class top
TOP_PARAMS = 2048 * 1000 + 1000


def run(*cmd, env=None, timeout=600):
    # errors="replace": a damaged file's names may not be UTF-8, and messages quote them
    return subprocess.run(list(cmd), capture_output=True, text=True, errors="replace",
                          timeout=timeout, env=env)


def model_weights(seed, classes):
    """{layer: [(weight, float32 array)]} in Keras's weight order: kernels of He
    scale (conv1's for 0..255 inputs), BN statistics and affine parameters near what
    training leaves (small gamma on each residual branch's last BN, so that 16
    blocks of random weights keep the image's signal), small biases."""
    rng = np.random.default_rng(seed)
    per_layer = {}
    for name, shape in h5_to_safetensors.backbone_shapes().items():
        layer, w = name.split(".")
        n = shape[0]
        if w == "kernel":
            scale = np.sqrt(2.0 / np.prod(shape[:3])) / (64.0 if layer == "conv1_conv" else 1.0)
            a = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
        elif w == "gamma":
            a = rng.uniform(0.1, 0.3, n) if layer.endswith("_3_bn") else rng.uniform(0.5, 1.0, n)
        elif w == "moving_variance":
            a = rng.uniform(0.5, 1.5, n)
        else:  # bias, beta, moving_mean
            a = rng.normal(0.0, 0.05, n)
        per_layer.setdefault(layer, []).append((w, np.asarray(a, "<f4")))
    if classes:
        per_layer["predictions"] = [
            ("kernel", rng.standard_normal((2048, classes), dtype=np.float32) * np.float32(0.05)),
            ("bias", rng.normal(0.0, 0.01, classes).astype("<f4"))]
    return per_layer


def shapes_only(per_layer):
    """The same structure with (shape, dtype) in place of the arrays: written as
    datasets without storage (they read as zeros), for small malformed files."""
    return {layer: [(w, (a.shape, a.dtype)) for w, a in ws] for layer, ws in per_layer.items()}


def save_attributes(group, name, data, vlen=False, parts=1):
    """Keras 2's save_attributes_to_hdf5_group for a list of byte strings: one
    attribute (a numpy array of fixed-length byte strings, or with vlen of
    variable-length strings), or np.array_split into NAME0, NAME1, ... (Keras splits
    when the list outgrows an object header; parts forces it on a small list).
    An empty list is an empty float array, as h5py stores Keras's []."""
    import h5py

    if not data:
        group.attrs[name] = np.array([])
        return
    arr = (np.array([d.decode() for d in data], dtype=h5py.string_dtype()) if vlen
           else np.array(data))
    if parts > 1:
        for i, part in enumerate(np.array_split(arr, parts)):
            group.attrs[f"{name}{i}"] = part
    else:
        group.attrs[name] = arr


def write_keras(path, per_layer, layers, full_model=False, vlen=False, parts=1, stored=None,
                weight_names=None, userblock=0):
    """Writes per_layer as Keras 2 does: layer_names lists every layer (those without
    weights too); one group per layer, created in name order, with weight_names
    ["LAYER/kernel:0", ...] and a dataset at each of those paths (so nested in a
    second LAYER group). full_model: under model_weights with the model's config
    beside it. stored: {"layer.weight": callable(array) -> h5py create_dataset
    kwargs} for other dtypes, filters or storage. weight_names: {layer: [names]}
    to list other names than those written."""
    import h5py

    stored = stored or {}
    with h5py.File(path, "w", userblock_size=userblock) as f:
        if full_model:
            f.attrs["keras_version"] = b"2.13.1"
            f.attrs["backend"] = b"tensorflow"
            f.attrs["model_config"] = json.dumps({"class_name": "Functional",
                                                  "config": {"name": "resnet50"}}).encode()
            root = f.create_group("model_weights")
        else:
            root = f
        save_attributes(root, "layer_names", [n.encode() for n in layers], vlen, parts)
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.13.1"
        for layer in sorted(set(layers)):
            g = root.create_group(layer)
            ws = per_layer.get(layer, [])
            names = [f"{layer}/{w}:0".encode() for w, _ in ws]
            listed = [n.encode() for n in weight_names[layer]] if (
                weight_names and layer in weight_names) else names
            save_attributes(g, "weight_names", listed, vlen, parts if len(listed) > 1 else 1)
            for (w, a), n in zip(ws, names):
                if isinstance(a, tuple):
                    g.create_dataset(n.decode(), shape=a[0], dtype=a[1])
                elif f"{layer}.{w}" in stored:
                    g.create_dataset(n.decode(), **stored[f"{layer}.{w}"](a))
                else:
                    g.create_dataset(n.decode(), data=a)


# special values, written into BN vectors of the dtype file
HALF_BITS = [0x7C01, 0x7E00, 0xFE01, 0xFC00, 0x7C00, 0x0001, 0x03FF, 0x8001, 0x8000, 0x7BFF,
             0x3C00, 0x3555]
DOUBLES = [np.nan, -np.inf, np.inf, 1e39, -1e39, 3.4028235677973366e38, 1 + 2.0 ** -24,
           1 + 3 * 2.0 ** -24, 2.0 ** -149 * 1.5, 2.0 ** -150, 2.0 ** -150 * 1.0000001, 1e-46,
           -0.0, 0.1, 1.0 / 3.0]


def dtype_variants(per_layer):
    """per_layer with special values, and the `stored` map that writes some tensors
    as f16, f64, big-endian, gzip-chunked or long double."""
    pl = {layer: list(ws) for layer, ws in per_layer.items()}

    def put(layer, i, values):
        w, a = pl[layer][i]
        a = a.astype(np.float64)
        a[:len(values)] = values
        pl[layer][i] = (w, a)

    half_values = np.array(HALF_BITS, "<u2").view("<f2").astype(np.float64)
    put("conv1_bn", 0, half_values)             # gamma, stored f16
    put("conv1_bn", 1, DOUBLES)                 # beta, stored f64
    put("conv1_bn", 2, DOUBLES)                 # moving_mean, stored >f8
    put("conv2_block1_1_bn", 1, DOUBLES[3:])    # beta, stored long double
    stored = {
        "conv1_bn.gamma": lambda a: {"data": a.astype("<f2")},
        "conv1_bn.beta": lambda a: {"data": a.astype("<f8")},
        "conv1_bn.moving_mean": lambda a: {"data": a.astype(">f8")},
        "conv1_bn.moving_variance": lambda a: {"data": a.astype(">f4")},
        "conv1_conv.kernel": lambda a: {"data": a.astype("<f2")},
        "conv2_block1_2_conv.kernel": lambda a: {"data": a.astype(">f2")},
        "conv2_block1_1_conv.kernel": lambda a: {"data": a, "chunks": (1, 1, 16, 16),
                                                 "compression": "gzip"},
        "conv5_block3_3_conv.kernel": lambda a: {"data": a.astype("<f8") / 3.0},
        "conv2_block1_1_bn.beta": lambda a: {"data": a.astype(np.longdouble)},
    }
    return pl, stored


class H5Native(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for exe in (RESNETD, C_READER):
            if not os.access(exe, os.X_OK):
                raise RuntimeError(f"{exe} is missing: build it first (make all)")
        cls._tmp = tempfile.TemporaryDirectory(prefix="resnetd-h5-")
        cls.tmp = cls._tmp.name
        cls.top = model_weights(13, 1000)
        cls.small = dict(cls.top, predictions=model_weights(14, 10)["predictions"])
        cls.notop = {k: v for k, v in cls.top.items() if k != "predictions"}
        cls.files = {}
        cls.data = fmnist(cls.path("fm"), "--classes", "0,1", "--per-class", "10", "--size", "32")
        variants = {
            "keras_top.h5": (cls.top, keras_layers(True), {}),
            "full_model.h5": (cls.small, keras_layers(True), {"full_model": True, "vlen": True}),
            "split.h5": (cls.small, keras_layers(True), {"parts": 2}),
        }
        pl, stored = dtype_variants(cls.notop)
        variants["notop_dtypes.h5"] = (pl, keras_layers(False), {"stored": stored,
                                                                 "userblock": 512})
        for name, (per_layer, layers, kw) in variants.items():
            path = cls.path(name)
            write_keras(path, per_layer, layers, **kw)
            cls.files[name] = path

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    @classmethod
    def path(cls, name):
        return os.path.join(cls.tmp, name)

    def convert(self, h5, out):
        r = run(PYTHON, CONVERTER, h5, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    # ---- the same tensors, the same description ----------------------------------

    def test_c_reader_writes_the_converters_bytes(self):
        for name, h5 in self.files.items():
            with self.subTest(name):
                py, c = self.path(name + ".py.safetensors"), self.path(name + ".c.safetensors")
                pyr = self.convert(h5, py)
                cr = run(C_READER, h5, c)
                self.assertEqual(cr.returncode, 0, cr.stderr)
                self.assertEqual(cr.stdout.replace(c, py), pyr.stdout)
                with open(py, "rb") as f:
                    want = f.read()
                with open(c, "rb") as f:
                    got = f.read()
                self.assertGreater(len(want), 90_000_000)
                self.assertTrue(got == want, f"{name}: the C reader's tensors differ from the "
                                f"converter's ({len(got)} against {len(want)} bytes)")

    def test_special_values_survive_as_numpy_converts_them(self):
        # the comparison above is only as strong as these values are there
        sys.path.insert(0, os.path.join(ROOT, "tools"))
        import st_io

        out = self.path("dtypes.c.safetensors")
        r = run(C_READER, self.files["notop_dtypes.h5"], out)
        self.assertEqual(r.returncode, 0, r.stderr)
        t, _ = st_io.load(out)
        self.assertEqual(len(t), 318)
        gamma = t["conv1_bn.gamma"][:len(HALF_BITS)].view("<u4")
        halves = np.array(HALF_BITS, "<u2").view("<f2").astype("<f4").view("<u4")
        self.assertEqual(gamma.tolist(), halves.tolist())
        # NaN payloads kept (a signalling one too), infinities, 2^-24 (half's
        # smallest subnormal, a float32 normal)
        self.assertEqual([hex(x) for x in gamma[:6]], ["0x7f802000", "0x7fc00000", "0xffc02000",
                                                      "0xff800000", "0x7f800000", "0x33800000"])
        beta = t["conv1_bn.beta"][:len(DOUBLES)]
        with np.errstate(over="ignore"):
            want = np.array(DOUBLES).astype("<f4")
        self.assertEqual(beta.view("<u4").tolist(), want.view("<u4").tolist())
        # overflow to infinity, halfway cases to even, subnormals rounded
        self.assertTrue(np.isinf(beta[3]) and beta[6] == 1.0 and beta[7] == np.float32(1 + 2 ** -22))
        self.assertEqual(beta[8:11].view("<u4").tolist(), [2, 0, 1])
        mean = t["conv1_bn.moving_mean"][:len(DOUBLES)]  # the same, big-endian
        self.assertEqual(mean.view("<u4").tolist(), want.view("<u4").tolist())

    def test_inspect_same_as_converted(self):
        want = {"keras_top.h5": ("320", str(KERAS_PARAMS), "1000 classes"),
                "full_model.h5": ("320", str(KERAS_PARAMS - TOP_PARAMS + 2048 * 10 + 10),
                                  "10 classes"),
                "split.h5": ("320", str(KERAS_PARAMS - TOP_PARAMS + 2048 * 10 + 10),
                             "10 classes"),
                "notop_dtypes.h5": ("318", str(KERAS_PARAMS - TOP_PARAMS),
                                    "none (backbone only)")}
        for name, h5 in self.files.items():
            with self.subTest(name):
                st = self.path(name + ".inspect.safetensors")
                self.convert(h5, st)
                a, b = run(RESNETD, "inspect", h5), run(RESNETD, "inspect", st)
                self.assertEqual((a.returncode, a.stderr), (0, ""))
                self.assertEqual((b.returncode, b.stderr), (0, ""))
                self.assertEqual(a.stdout.replace(h5, "F"), b.stdout.replace(st, "F"))
                info = parse_inspect(a.stdout)
                self.assertEqual((info["variant"], info["naming"], info["preprocess"]),
                                 ("keras", "keras", "caffe"))
                self.assertEqual((info["tensors"], info["parameters"], info["head"]), want[name])

    def test_train_from_h5_same_as_converted(self):
        data = self.data
        env = dict(os.environ, RESNETD_THREADS="1", OMP_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1")
        h5 = self.files["keras_top.h5"]
        st = self.path("train.safetensors")
        self.convert(h5, st)
        outs = []
        for weights in (h5, st):
            spec = {"name": "h5-native", "dataset": data, "weights": weights, "input_size": 32,
                    "batch_size": 8, "seed": 11,
                    "phases": [{"name": "head", "epochs": 1, "train": "head",
                                "optimizer": {"type": "adam", "lr": 0.01}},
                               {"name": "stage5", "epochs": 1, "train": "stage:5",
                                "optimizer": {"type": "sgd", "lr": 0.01, "momentum": 0.9}}]}
            spec_path = self.path(os.path.basename(weights) + ".json")
            export = self.path(os.path.basename(weights) + ".export.safetensors")
            with open(spec_path, "w") as f:
                json.dump(spec, f)
            r = run(RESNETD, "train", spec_path, "--export", export, "--no-cache", env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            # the timing of each epoch differs from run to run, nothing else may
            stdout = re.sub(r"\| [\d.]+ s, [\d.]+ img/s", "| T", r.stdout)
            with open(export, "rb") as f:
                outs.append((stdout, f.read()))
        (h5_out, h5_export), (st_out, st_export) = outs
        epochs = [line for line in h5_out.splitlines() if line.startswith("epoch ")]
        self.assertEqual(len(epochs), 2, h5_out)
        losses = [float(x) for x in re.findall(r"train loss ([\d.]+)", h5_out)]
        self.assertTrue(all(0 < x < 10 for x in losses), h5_out)
        self.assertEqual(h5_out, st_out)
        self.assertTrue(h5_export == st_export, "the exported weights differ")

    # ---- malformed files ------------------------------------------------------------

    def write_bad(self, name, per_layer=None, layers=None, **kw):
        path = self.path(name)
        write_keras(path, shapes_only(self.notop if per_layer is None else per_layer),
                    layers if layers is not None else keras_layers(False), **kw)
        return path

    def both_refuse(self, path):
        """resnetd inspect's and the converter's messages (without their prefixes)."""
        r = run(RESNETD, "inspect", path)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "")
        prefix = "resnetd inspect: "
        self.assertTrue(r.stderr.startswith(prefix + path), r.stderr)
        c = run(PYTHON, CONVERTER, path, self.path("refused.safetensors"))
        self.assertEqual(c.returncode, 1, c.stdout + c.stderr)
        self.assertTrue(c.stderr.startswith("h5_to_safetensors: "), c.stderr)
        return r.stderr[len(prefix):], c.stderr[len("h5_to_safetensors: "):]

    def assert_same_message(self, path, *needles):
        got, want = self.both_refuse(path)
        self.assertEqual(got, want)
        for n in needles:
            self.assertIn(n, got)

    def test_structural_problems_same_messages(self):
        import h5py

        layers = [n for n in keras_layers(False) if n != "conv3_block2_1_bn"]
        self.assert_same_message(self.write_bad("missing.h5", layers=layers),
                                 "not Keras ResNet50 weights:\n  missing 4 tensors: "
                                 "conv3_block2_1_bn.gamma, conv3_block2_1_bn.beta, "
                                 "conv3_block2_1_bn.moving_mean, conv3_block2_1_bn.moving_variance")

        pl = dict(self.notop)
        pl["conv4_block2_2_conv"] = [("kernel", np.zeros((3, 3, 256, 128), "<f4"))] + \
            pl["conv4_block2_2_conv"][1:]
        self.assert_same_message(self.write_bad("shape.h5", pl),
                                 "wrong shape: conv4_block2_2_conv.kernel is (3, 3, 256, 128), "
                                 "expected (3, 3, 256, 256)")

        pl = dict(self.notop, head_dense=[("kernel", np.zeros((2048, 5), "<f4"))],
                  predictions=[("kernel", np.zeros((1024, 10), "<f4")),
                               ("bias", np.zeros(10, "<f4"))])
        path = self.write_bad("unexpected.h5", pl,
                              keras_layers(False) + ["head_dense", "predictions"])
        self.assert_same_message(path, "unexpected 1 tensors: head_dense.kernel",
                                 "predictions.kernel is (1024, 10) and predictions.bias is (10,), "
                                 "expected (2048, C) and (C,)")

        pl = dict(self.notop, predictions=[("kernel", np.zeros((2048, 10), "<f4"))])
        self.assert_same_message(self.write_bad("half_head.h5", pl, keras_layers(True)),
                                 "predictions.kernel and predictions.bias must both be present")

        pl = dict(self.notop)
        pl["conv1_bn"] = [(w, np.zeros(64, "<i4") if w == "moving_mean" else a)
                          for w, a in pl["conv1_bn"]]
        self.assert_same_message(self.write_bad("int.h5", pl), "'conv1_bn/conv1_bn/moving_mean:0' has dtype int32, "
                                 "expected floating point")

        path = self.write_bad("no_group.h5", layers=keras_layers(False))
        with h5py.File(path, "a") as f:
            del f["conv3_block1_2_bn"]
        self.assert_same_message(path, "layer 'conv3_block1_2_bn' is listed in layer_names but "
                                 "has no group")

        path = self.write_bad("no_dataset.h5")
        with h5py.File(path, "a") as f:
            del f["conv2_block1_0_conv/conv2_block1_0_conv/bias:0"]
        self.assert_same_message(path, "layer 'conv2_block1_0_conv': weight "
                                 "'conv2_block1_0_conv/bias:0' is listed in weight_names but "
                                 "has no dataset")

        names = {"conv1_bn": ["conv1_bn/gamma:0", "conv1_bn/beta:0", "conv1_bn/moving_mean:0",
                              "conv1_bn/moving_variance:0", "conv1_bn/gamma:0"]}
        self.assert_same_message(self.write_bad("twice.h5", weight_names=names),
                                 "layer 'conv1_bn' has two weights named 'gamma'")

        path = self.path("plain.h5")
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=np.ones(3))
        self.assert_same_message(path, "no 'layer_names' attribute: not a Keras HDF5 weights file")

        path = self.path("keras3.weights.h5")
        with h5py.File(path, "w") as f:
            f.create_dataset("layers/conv1_conv/vars/0", data=np.ones((7, 7, 3, 64), "<f4"))
            f.create_group("vars")
            f.create_group("optimizer/vars")
        self.assert_same_message(path, "this looks like a Keras 3 .weights.h5")

    def test_many_problems_shortened_to_fit(self):
        got, want = self.both_refuse(self.write_bad("empty.h5", per_layer={}, layers=[]))
        self.assertTrue(want.endswith("... (318 in all)\n"), want)
        self.assertIn("missing 318 tensors: conv1_conv.kernel, conv1_conv.bias, ", got)
        self.assertTrue(got.endswith("... (318 in all)\n"), got)
        self.assertLess(len(got), 512)
        shown = got[:-len(" ... (318 in all)\n")]
        self.assertTrue(want.startswith(shown + ", "), (got, want))

    def test_truncated_and_damaged(self):
        with open(self.files["keras_top.h5"], "rb") as f:
            whole = f.read()
        for keep in (len(whole) - 1, len(whole) // 2, 100):
            path = self.path(f"truncated-{keep}.h5")
            with open(path, "wb") as f:
                f.write(whole[:keep])
            got, want = self.both_refuse(path)
            self.assertEqual(got, want)
            self.assertIn(f"cannot open as HDF5: Unable to open file (truncated file: eof = {keep}",
                          got)
        path = self.path("seven.h5")
        with open(path, "wb") as f:
            f.write(whole[:7])
        got, _ = self.both_refuse(path)
        self.assertIn("seven.h5: cannot open as HDF5: no HDF5 signature at byte 0, 512", got)

        # a job from a truncated file fails before training, naming it
        spec = self.path("truncated.json")
        with open(spec, "w") as f:
            json.dump({"name": "t", "dataset": self.data,
                       "weights": self.path(f"truncated-{len(whole) // 2}.h5"),
                       "input_size": 32, "batch_size": 4,
                       "phases": [{"name": "h", "epochs": 1, "train": "head",
                                   "optimizer": {"type": "adam", "lr": 0.01}}]}, f)
        r = run(RESNETD, "train", spec)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("truncated file", r.stderr)

        # bytes flipped anywhere in the metadata of a file: a message or a success
        # (a byte libhdf5 does not check), never a crash
        src = self.write_bad("flip.h5")
        with open(src, "rb") as f:
            good = f.read()
        rng = np.random.default_rng(3)
        flips = sorted(set(rng.integers(0, len(good), 120).tolist()) | set(range(0, 96, 3)))
        outcomes = {0: 0, 1: 0}
        path = self.path("flipped.h5")
        # under a sanitizer build (make asan), for libhdf5's sake: it leaks a block of
        # its metadata cache on some damaged files (H5Fopen -> H5G_mkroot ->
        # H5C_protect), and asks malloc for sizes read from them (exabytes), which
        # it handles when malloc returns NULL
        supp = self.path("lsan.supp")
        with open(supp, "w") as f:
            f.write("leak:libhdf5\n")
        asan = os.environ.get("ASAN_OPTIONS", "")
        env = dict(os.environ, LSAN_OPTIONS=f"suppressions={supp}",
                   ASAN_OPTIONS=(asan + ":" if asan else "") + "allocator_may_return_null=1")
        for at in flips:
            bad = bytearray(good)
            bad[at] ^= 0xFF
            with open(path, "wb") as f:
                f.write(bad)
            r = run(RESNETD, "inspect", path, env=env, timeout=60)
            self.assertIn(r.returncode, (0, 1), f"byte {at}: {r.returncode} {r.stderr}")
            outcomes[r.returncode] += 1
            if r.returncode:  # (a sanitizer build may add its own lines)
                self.assertIn("\nresnetd inspect: " + path + ": ", "\n" + r.stderr)
        self.assertGreater(outcomes[1], 20, outcomes)

    def test_unreadable_data_fails_the_job(self):
        # the metadata is fine (inspect accepts it); the data of one tensor lives in
        # an external file that is not there, so loading fails on that tensor
        pl, layers = self.notop, keras_layers(False)
        path = self.path("external.h5")
        stored = {"conv5_block3_3_bn.gamma": lambda a: {
            "shape": a.shape, "dtype": a.dtype,
            "external": [(self.path("gone.bin"), 0, a.nbytes)]}}
        write_keras(path, pl, layers, stored=stored)
        r = run(RESNETD, "inspect", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        data = self.data
        spec = self.path("external.json")
        with open(spec, "w") as f:
            json.dump({"name": "x", "dataset": data, "weights": path, "input_size": 32,
                       "batch_size": 4, "phases": [{"name": "h", "epochs": 1, "train": "head",
                                                    "optimizer": {"type": "adam", "lr": 0.01}}]},
                      f)
        r = run(RESNETD, "train", spec)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{path}: cannot read 'conv5_block3_3_bn/conv5_block3_3_bn/gamma:0': ",
                      r.stderr)


if __name__ == "__main__":
    unittest.main()
