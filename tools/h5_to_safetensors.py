#!/usr/bin/python3
"""h5_to_safetensors.py: converts Keras ResNet50 weights (.h5) to safetensors.

    /usr/bin/python3 tools/h5_to_safetensors.py IN.h5 OUT.safetensors

Input: a Keras 2 HDF5 weights file such as
resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5 (root attribute
`layer_names`, one group per layer whose attribute `weight_names` lists datasets
such as `conv1_conv/kernel:0`), or a full-model save whose weights sit under a
`model_weights` group. Output: tensors named `<layer>.<weight>` (conv1_conv.kernel,
conv1_bn.gamma, conv2_block1_0_conv.bias, ..., predictions.kernel) with Keras
layouts kept (conv kernel HWIO, dense kernel (in, out)) as F32, with metadata
format=keras, variant=keras, preprocess=caffe, source=<basename>. The 53 convs
(kernel + bias) and 53 BNs (gamma, beta, moving_mean, moving_variance) must be
present with ResNet50's shapes; `predictions` is optional (any class count).
Problems are listed and the exit status is 1. See docs/weights.md.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

STAGES = ((2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512))  # (stage, blocks, filters)
FEATURES = 2048
BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


class ConversionError(Exception):
    """The input is not a usable Keras ResNet50 weights file; the message says why."""


def backbone_shapes():
    """The 318 Keras ResNet50 backbone tensors (53 convs with kernel and bias, 53
    BNs with 4 vectors each, no predictions): dict name -> shape tuple."""
    shapes = {}

    def conv(layer, k, cin, cout):
        shapes[f"{layer}.kernel"] = (k, k, cin, cout)
        shapes[f"{layer}.bias"] = (cout,)

    def bn(layer, c):
        for w in BN_WEIGHTS:
            shapes[f"{layer}.{w}"] = (c,)

    conv("conv1_conv", 7, 3, 64)
    bn("conv1_bn", 64)
    cin = 64
    for stage, nblocks, f in STAGES:
        for b in range(1, nblocks + 1):
            pre = f"conv{stage}_block{b}"
            if b == 1:
                conv(f"{pre}_0_conv", 1, cin, 4 * f)
                bn(f"{pre}_0_bn", 4 * f)
            conv(f"{pre}_1_conv", 1, cin if b == 1 else 4 * f, f)
            bn(f"{pre}_1_bn", f)
            conv(f"{pre}_2_conv", 3, f, f)
            bn(f"{pre}_2_bn", f)
            conv(f"{pre}_3_conv", 1, f, 4 * f)
            bn(f"{pre}_3_bn", 4 * f)
        cin = 4 * f
    return shapes


def _decode(x):
    return x.decode("utf-8") if isinstance(x, (bytes, np.bytes_)) else str(x)


def _attr_list(group, name):
    """A list-of-strings attribute as Keras writes it: whole under `name`, or, when
    it was too large for one HDF5 header, split into `name0`, `name1`, ...
    Returns None when the attribute is absent."""
    if name in group.attrs:
        return [_decode(x) for x in np.atleast_1d(group.attrs[name])]
    parts, i = [], 0
    while f"{name}{i}" in group.attrs:
        parts.extend(_decode(x) for x in np.atleast_1d(group.attrs[f"{name}{i}"]))
        i += 1
    return parts if i else None


def read_weights(path):
    """Reads every layer weight of the Keras HDF5 file path in file order.
    Returns dict `<layer>.<weight>` -> float32 array. Raises ConversionError for a
    file that is not HDF5 or not in Keras's layer_names/weight_names layout."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ConversionError(f"{path}: cannot open as HDF5: {e}") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        layers = _attr_list(root, "layer_names")
        if layers is None:
            hint = (" (this looks like a Keras 3 .weights.h5; save it with the legacy h5 "
                    "format or load it in Keras and call save_weights('x.h5'))"
                    if "layers" in f or "vars" in f else "")
            raise ConversionError(f"{path}: no 'layer_names' attribute: not a Keras HDF5 "
                                  f"weights file{hint}")
        out = {}
        for layer in layers:
            if layer not in root:
                raise ConversionError(f"{path}: layer '{layer}' is listed in layer_names "
                                      "but has no group")
            g = root[layer]
            names = _attr_list(g, "weight_names") or []
            for wn in names:
                if wn not in g:
                    raise ConversionError(f"{path}: layer '{layer}': weight '{wn}' is listed "
                                          "in weight_names but has no dataset")
                short = wn.split("/")[-1].split(":")[0]
                key = f"{layer}.{short}"
                if key in out:
                    raise ConversionError(f"{path}: layer '{layer}' has two weights named "
                                          f"'{short}'")
                a = np.asarray(g[wn][()])
                if a.dtype.kind != "f":
                    raise ConversionError(f"{path}: '{layer}/{wn}' has dtype {a.dtype}, "
                                          "expected floating point")
                out[key] = np.asarray(a, dtype="<f4", order="C")
        return out


def _fmt(names, limit=20):
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def check_weights(w, source):
    """Validates names and shapes of w (name -> array) against Keras ResNet50.
    Raises ConversionError naming every missing, unexpected or misshapen tensor
    (and so the layer it belongs to)."""
    want = backbone_shapes()
    missing = [n for n in want if n not in w]
    wrong, unexpected = [], []
    for name, a in w.items():
        if name in want:
            if tuple(a.shape) != want[name]:
                wrong.append(f"{name} is {tuple(a.shape)}, expected {want[name]}")
        elif name not in ("predictions.kernel", "predictions.bias"):
            unexpected.append(name)
    if ("predictions.kernel" in w) != ("predictions.bias" in w):
        wrong.append("predictions.kernel and predictions.bias must both be present or both absent")
    elif "predictions.kernel" in w:
        k, b = tuple(w["predictions.kernel"].shape), tuple(w["predictions.bias"].shape)
        if len(k) != 2 or k[0] != FEATURES or b != (k[1],):
            wrong.append(f"predictions.kernel is {k} and predictions.bias is {b}, expected "
                         f"({FEATURES}, C) and (C,)")
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors: {_fmt(missing)}")
    if wrong:
        problems.append("wrong shape: " + "; ".join(wrong))
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors: {_fmt(unexpected)}")
    if problems:
        raise ConversionError(f"{source}: not Keras ResNet50 weights:\n  " + "\n  ".join(problems))


def convert(src, dst):
    """Converts the Keras weights file src to the safetensors file dst. Returns
    the number of tensors written. Raises ConversionError (nothing is written)."""
    w = read_weights(src)
    check_weights(w, src)
    meta = {"format": "keras", "variant": "keras", "preprocess": "caffe",
            "source": os.path.basename(src)}
    st_io.save(dst, w, meta)
    return len(w)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="Keras ResNet50 weights .h5")
    ap.add_argument("output", help="safetensors file to write")
    args = ap.parse_args(argv)
    try:
        n = convert(args.input, args.output)
    except (ConversionError, OSError, st_io.SafetensorsError) as e:
        print(f"h5_to_safetensors: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {n} tensors (variant keras, preprocess caffe)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
