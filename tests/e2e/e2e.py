"""e2e.py: what the end-to-end tests share: where the binaries are, 8-bit gray PNG
files written and read in pure Python, Fashion-MNIST sets from tools/fmnist_to_png,
and a deterministic pretrained ResNet50 (make_pretrained).

Why a deterministic fixture and not a pretraining run: training from random
weights is chaotic. Another CPU, OpenBLAS kernel or thread count sums in another
order, and after a few dozen steps the weights, the losses and every finding that
reads them differ (issue 12: four tests that passed on one CPU failed on the
next). make_pretrained builds its weights without training anything of the
backbone: a seeded torchvision ResNet50, BatchNorm statistics measured on the
images, and a head fitted to them by L2-regularised logistic regression, a
strictly convex problem with one optimum that any summation order reaches. Its
behaviour on Fashion-MNIST (val accuracy about 0.98 on classes it was fitted to,
one class by a wide margin on blank images) is far from every diagnosis
threshold, on every CPU. Jobs that fine-tune only its head stay convex, so
their trajectories do not diverge either.
"""

import json
import math
import os
import struct
import subprocess
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("RESNETD_BUILD_DIR") or os.path.join(ROOT, "build")
RESNETD = os.path.join(BUILD, "resnetd")
FMNIST = os.path.join(BUILD, "tools", "fmnist_to_png")

CAFFE_MEAN_BGR = [103.939, 116.779, 123.68]
TORCH_MEAN = [0.485, 0.456, 0.406]
TORCH_STD = [0.229, 0.224, 0.225]


# ---- PNG files (8-bit grayscale, as fmnist_to_png writes them) ------------------

def write_png(path, rows):
    """rows: list of lists of 0..255 levels."""
    h, w = len(rows), len(rows[0])
    raw = b"".join(b"\x00" + bytes(r) for r in rows)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def read_png(path):
    """rows of an 8-bit grayscale, non-interlaced PNG (any filter)."""
    with open(path, "rb") as f:
        data = f.read()
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, color, interlace) == (8, 0, 0), path
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    rows, prev = [], [0] * w
    for y in range(h):
        ft, line = raw[y * (w + 1)], list(raw[y * (w + 1) + 1:(y + 1) * (w + 1)])
        for x in range(w):
            a = line[x - 1] if x else 0
            b, c = prev[x], prev[x - 1] if x else 0
            if ft == 1:
                line[x] = (line[x] + a) & 255
            elif ft == 2:
                line[x] = (line[x] + b) & 255
            elif ft == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ft == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return rows


def pngs(folder):
    """Every .png under folder, sorted."""
    out = []
    for d, _, files in os.walk(folder):
        out += [os.path.join(d, f) for f in files if f.endswith(".png")]
    return sorted(out)


def split_stats(folder):
    """(images, mean, population std, population std of the images' own means) of
    the pixels of every PNG under folder, as the dataset scan computes a split's
    per-channel statistics (gray: all equal)."""
    n = s = sq = 0
    means = []
    for p in pngs(folder):
        rows = read_png(p)
        px = sum(len(r) for r in rows)
        tot = sum(sum(r) for r in rows)
        n += px
        s += tot
        sq += sum(v * v for r in rows for v in r)
        means.append(tot / px)
    mean = s / n
    m1 = sum(means) / len(means)
    m2 = sum(m * m for m in means) / len(means)
    return (len(means), mean, math.sqrt(max(sq / n - mean * mean, 0.0)),
            math.sqrt(max(m2 - m1 * m1, 0.0)))


def fmnist(out, *args):
    """A Fashion-MNIST set made by tools/fmnist_to_png OUT ARGS; returns out."""
    subprocess.run([FMNIST, out, *args], check=True, capture_output=True)
    return out


# ---- a deterministic pretrained ResNet50 -----------------------------------------

def make_pretrained(path, dataset, seed=0, branch_gamma=0.3, l2=1e-2):
    """Writes a torchvision-layout ResNet50 with a head for the classes of the
    class-folder dataset (64x64 gray PNGs; preprocess torch, resize squash, as
    resnetd's own export declares them) to path, without training the backbone:

    - conv and fc weights drawn by torchvision's initialisation under
      torch.manual_seed(seed); the last BatchNorm of each residual branch gets
      gamma branch_gamma (a small residual branch, as the reference oracle uses,
      keeps 16 random blocks from washing out the image: measured val accuracy
      about 0.98 on other images of the same classes, about 0.8 with gamma 1);
    - every BatchNorm's running mean and variance: those of the whole dataset in
      one batch (momentum None), so inference mode fits the images;
    - the head: logistic regression on the inference-mode features, L2 weight l2,
      in float64 to convergence (L-BFGS), the unique optimum of a strictly convex
      loss.

    Returns {"classes", "train_accuracy"} (the head on the dataset itself).
    Needs Debian's python3-torch and python3-torchvision."""
    import sys

    import numpy as np
    import torch
    import torchvision
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import st_io

    torch.set_num_threads(2)
    classes = sorted(os.listdir(dataset))
    images, labels = [], []
    for i, c in enumerate(classes):
        for p in pngs(os.path.join(dataset, c)):
            images.append(read_png(p))
            labels.append(i)
    x = np.asarray(images, dtype=np.float64)[:, None, :, :] / 255.0
    x = (x - np.array(TORCH_MEAN)[None, :, None, None]) / np.array(TORCH_STD)[None, :, None, None]
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(labels)

    torch.manual_seed(seed)
    model = torchvision.models.resnet50(num_classes=len(classes))
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative: one batch gives its exact statistics
            m.reset_running_stats()
            if name.endswith("bn3"):
                torch.nn.init.constant_(m.weight, branch_gamma)
    fc, model.fc = model.fc, torch.nn.Identity()
    with torch.no_grad():
        model.train()
        model(x)
        model.eval()
        features = model(x).double()
    w = torch.zeros(len(classes), features.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=1000, tolerance_grad=1e-10,
                            line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        v = torch.nn.functional.cross_entropy(features @ w.T + b, y) + l2 * (w * w).sum()
        v.backward()
        return v
    opt.step(loss)
    with torch.no_grad():
        fc.weight.copy_(w)
        fc.bias.copy_(b)
        accuracy = ((features @ w.T + b).argmax(1) == y).double().mean().item()
    model.fc = fc
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    st_io.save(path, tensors, {"format": "pt", "variant": "torchvision", "preprocess": "torch",
                               "classes": json.dumps(classes), "input_size": "64",
                               "resize": "squash", "source": "tests/e2e/e2e.py make_pretrained"})
    return {"classes": classes, "train_accuracy": accuracy}
