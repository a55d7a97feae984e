#!/usr/bin/python3
"""pth_to_safetensors.py: converts a torchvision/timm ResNet50 .pth to safetensors.

    /usr/bin/python3 tools/pth_to_safetensors.py IN.pth OUT.safetensors

Input: a state dict saved with torch.save (torchvision's resnet50-0676ba61.pth,
timm's resnet50 checkpoints), or a checkpoint dict holding it under "state_dict"
or "model"; a "module." prefix (DataParallel) is stripped. Output: the same names
and layouts (conv OIHW, fc (out, in)) as F32, without num_batches_tracked, with
metadata format=pt, variant=torchvision, preprocess=torch, source=<basename>.
All 265 backbone tensors must be present with ResNet50's shapes; fc.weight and
fc.bias are optional (any class count). Missing, unexpected or misshapen tensors
are listed and the exit status is 1. See docs/weights.md.
"""

import argparse
import os
import pickle
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

BLOCKS = (3, 4, 6, 3)
PLANES = (64, 128, 256, 512)
FEATURES = 2048


class ConversionError(Exception):
    """The input is not a usable ResNet50 checkpoint; the message says why."""


def backbone_shapes():
    """The 265 torchvision ResNet50 backbone tensors (no fc, no
    num_batches_tracked) in state-dict order: dict name -> shape tuple."""
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, c):
        for k in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{k}"] = (c,)

    bn("bn1", 64)
    inplanes = 64
    for layer, (nblocks, p) in enumerate(zip(BLOCKS, PLANES), start=1):
        for b in range(nblocks):
            pre = f"layer{layer}.{b}"
            cin = inplanes if b == 0 else 4 * p
            shapes[f"{pre}.conv1.weight"] = (p, cin, 1, 1)
            bn(f"{pre}.bn1", p)
            shapes[f"{pre}.conv2.weight"] = (p, p, 3, 3)
            bn(f"{pre}.bn2", p)
            shapes[f"{pre}.conv3.weight"] = (4 * p, p, 1, 1)
            bn(f"{pre}.bn3", 4 * p)
            if b == 0:
                shapes[f"{pre}.downsample.0.weight"] = (4 * p, cin, 1, 1)
                bn(f"{pre}.downsample.1", 4 * p)
        inplanes = 4 * p
    return shapes


def load_state_dict(path, allow_pickle=False):
    """Loads path with torch.load on the CPU and returns the flat state dict
    (dict name -> torch.Tensor), unwrapped from "state_dict"/"model" and with any
    "module." prefix stripped. Without allow_pickle only tensors and plain
    containers are unpickled (torch's weights_only mode). Raises ConversionError."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        hint = "" if allow_pickle else (
            "; if it is a checkpoint you trust that pickles objects other than tensors "
            "and plain containers, rerun with --allow-pickle")
        raise ConversionError(f"{path}: cannot load with torch.load: {e}{hint}") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for bad files
        raise ConversionError(f"{path}: cannot load with torch.load: {e}") from None

    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
            break
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a state dict, found {type(obj).__name__}")

    sd = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise ConversionError(f"{path}: state dict key {name!r} is not a string")
        if name.startswith("module."):
            name = name[len("module."):]
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{path}: '{name}' is a {type(value).__name__}, not a tensor")
        if name in sd:
            raise ConversionError(f"{path}: '{name}' appears twice (with and without 'module.')")
        sd[name] = value
    return sd


def _is_bn_counter(name, want):
    """True for a BatchNorm's num_batches_tracked (dropped from the output)."""
    suffix = ".num_batches_tracked"
    return name.endswith(suffix) and name[:-len(suffix)] + ".running_var" in want


def _fmt(names, limit=20):
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def check_state_dict(sd, source):
    """Validates the names and shapes of sd (name -> tensor or array) against
    ResNet50. Returns the list of names to write, in sd's order. Raises
    ConversionError listing every missing, unexpected or misshapen tensor."""
    want = backbone_shapes()
    missing = [n for n in want if n not in sd]
    wrong = []
    unexpected = []
    for name, value in sd.items():
        shape = tuple(value.shape)
        if _is_bn_counter(name, want):
            continue
        if name in want:
            if shape != want[name]:
                wrong.append(f"{name} is {shape}, expected {want[name]}")
        elif name not in ("fc.weight", "fc.bias"):
            unexpected.append(name)
    if ("fc.weight" in sd) != ("fc.bias" in sd):
        wrong.append("fc.weight and fc.bias must both be present or both absent")
    elif "fc.weight" in sd:
        w, b = tuple(sd["fc.weight"].shape), tuple(sd["fc.bias"].shape)
        if len(w) != 2 or w[1] != FEATURES or b != (w[0],):
            wrong.append(f"fc.weight is {w} and fc.bias is {b}, expected (C, {FEATURES}) and (C,)")
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors: {_fmt(missing)}")
    if wrong:
        problems.append("wrong shape: " + "; ".join(wrong))
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors: {_fmt(unexpected)}")
    if problems:
        raise ConversionError(f"{source}: not a torchvision ResNet50 state dict:\n  "
                              + "\n  ".join(problems))
    return [n for n in sd if not _is_bn_counter(n, want)]


def convert(src, dst, allow_pickle=False):
    """Converts the checkpoint src to the safetensors file dst. Returns the number
    of tensors written. Raises ConversionError (nothing is written then)."""
    sd = load_state_dict(src, allow_pickle)
    names = check_state_dict(sd, src)
    tensors = {}
    for n in names:
        t = sd[n].detach()
        if not t.is_floating_point():
            raise ConversionError(f"{src}: '{n}' has dtype {t.dtype}, expected floating point")
        tensors[n] = np.asarray(t.float().numpy(), dtype="<f4", order="C")
    meta = {"format": "pt", "variant": "torchvision", "preprocess": "torch",
            "source": os.path.basename(src)}
    st_io.save(dst, tensors, meta)
    return len(tensors)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="torchvision/timm ResNet50 .pth")
    ap.add_argument("output", help="safetensors file to write")
    ap.add_argument("--allow-pickle", action="store_true",
                    help="unpickle arbitrary objects (only for files you trust)")
    args = ap.parse_args(argv)
    try:
        n = convert(args.input, args.output, args.allow_pickle)
    except (ConversionError, OSError, st_io.SafetensorsError) as e:
        print(f"pth_to_safetensors: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {n} tensors (variant torchvision, preprocess torch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
