"""Writes the PyTorch / torchvision reference data for core/preprocess.c.

    /usr/bin/python3 tests/reference/make_preprocess_reference.py OUT_DIR

tests/unit/test_preprocess.c reads these files (all F32; uint8 images are stored
as their 0..255 values):

  preprocess_resize.safetensors
      NAME/src (h, w, 3) and NAME/want (bh, bw, 3) for each resize case:
      torch.nn.functional.interpolate(x.float(), (bh, bw), mode="bilinear",
      align_corners=False), torch.round, clamp 0..255. The script also checks that
      torchvision's F.resize of the uint8 tensor (antialias=False) gives the same.
  preprocess_base_size.safetensors
      rows (w, h, size, bw, bh): the crop policy's base size, torchvision's
      Resize(round(size * 256 / 224)) output size (read from the resized tensor and
      checked against F._compute_resized_output_size).
  preprocess_pipeline.safetensors
      src/A, src/B, ...: source images; POLICY/MODE/IMAGE: the model input (size,
      size, 3) NHWC float of the whole validation pipeline:
        squash: Resize((size, size)); crop: Resize(round(size*256/224)) +
        CenterCrop(size) (torchvision, uint8 tensors, antialias=False), then
        caffe:  Keras imagenet_utils: x[..., ::-1] - [103.939, 116.779, 123.68]
        torch:  (x / 255 - mean) / std  (ToTensor + Normalize)
        tf:     x / 127.5 - 1
        custom: CUSTOM below
      finish/base (bh, bw, 3) and finish/MODE: stage 2 alone on that base
      (CenterCrop(size) + the normalisation), so the formulas are tested without
      any resize in between.
  preprocess_rrc.safetensors
      rrc/base, rrc/boxes (n, 5: x, y, w, h, flip) and rrc/K: F.resized_crop(base,
      y, x, h, w, (size, size), bilinear, antialias=False), then F.hflip when flip,
      as 0..255 levels.
      draw/cases (n, 11: seed, bw, bh, crop_min, crop_max, hflip, x, y, w, h, flip):
      torchvision 0.14's RandomResizedCrop.get_params (copied line for line below)
      driven by a Python port of resnetd's splitmix64 Rng, then the flip draw.

The stamp preprocess_reference.stamp holds the hash of this script, st_io.py and
the torch/torchvision versions; the files are regenerated only when it changes.
"""
import hashlib
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as TF

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import st_io  # noqa: E402

SIZE = 32
CAFFE_MEAN_BGR = [103.939, 116.779, 123.68]
TORCH_MEAN = [0.485, 0.456, 0.406]
TORCH_STD = [0.229, 0.224, 0.225]
# the custom normalisation the C test uses too (test_preprocess.c: custom_norm)
CUSTOM = {"rescale": 1.0 / 255.0, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "bgr": True}

# name: (w, h, bw, bh)
RESIZE_CASES = {
    "up_7x5_to_32x32": (7, 5, 32, 32),
    "down_100x60_to_64x64": (100, 60, 64, 64),
    "up_64x64_to_73x73": (64, 64, 73, 73),       # crop policy base for size 64
    "up_1x1_to_32x32": (1, 1, 32, 32),
    "down_37x23_to_19x11": (37, 23, 19, 11),
    "down_300x200_to_37x25": (300, 200, 37, 25),
    "mixed_40x90_to_77x33": (40, 90, 77, 33),
    "strip_1x50_to_36x72": (1, 50, 36, 72),
    "crop_base_500x375_to_341x256": (500, 375, 341, 256),
    "wide_block_600x20_to_520x40": (600, 20, 520, 40),  # more than one column block
    "long_span_3000x30_to_40x17": (3000, 30, 40, 17),    # blocks cut by the source span
    "near_1100x3_to_1030x5": (1100, 3, 1030, 5),
}

# (w, h) for the base size table, each with sizes 32, 64, 224, 299
BASE_SOURCES = [(1, 1), (7, 5), (5, 7), (64, 64), (100, 60), (60, 100), (500, 375), (375, 500),
                (333, 500), (640, 427), (1, 1000), (1000, 3), (225, 224), (257, 256),
                (4000, 2999), (31, 32)]
BASE_SIZES = [32, 64, 224, 299]

PIPE_IMAGES = {"A": (50, 37), "B": (29, 41), "C": (32, 32)}  # name: (w, h)
FINISH_BASE = (45, 40)  # (w, h): crop offsets (6, 4) with torchvision's rounding

RRC_BASE = (48, 40)
RRC_BOXES = [(0, 0, 48, 40, 0), (5, 3, 20, 30, 1), (10, 7, 32, 32, 1), (47, 39, 1, 1, 0),
             (2, 1, 45, 11, 0), (0, 0, 17, 40, 1)]

# (bw, bh, crop_min, crop_max, hflip) x seeds 0..19; the last two mostly fall back
DRAW_CONFIGS = [(73, 73, 0.08, 1.0, 1), (341, 256, 0.25, 0.75, 0), (32, 32, 0.5, 1.0, 1),
                (400, 40, 0.9, 1.0, 1), (30, 400, 1.0, 1.0, 0)]
DRAW_SEEDS = 20

MASK64 = (1 << 64) - 1


class SplitMix64:
    """core/rng.c, bit for bit."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self):  # float32 in [0, 1) with 24 bits (exact in double)
        return (self.next() >> 40) * (1.0 / 16777216.0)

    def below(self, n):
        limit = MASK64 - MASK64 % n
        while True:
            x = self.next()
            if x < limit:
                return x % n


def rrc_get_params(height, width, scale, ratio, rng):
    """torchvision 0.14 RandomResizedCrop.get_params with its torch draws replaced:
    uniform_(a, b) -> a + (b - a) * rng.uniform() (in double, as resnetd), randint
    -> rng.below. Everything else as in torchvision."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * rng.uniform())
        aspect_ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * rng.uniform())
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = rng.below(height - h + 1)
            j = rng.below(width - w + 1)
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w = width
        h = height
    i = (height - h) // 2
    j = (width - w) // 2
    return i, j, h, w


def image(w, h, seed):
    """A deterministic RGB8 image, (h, w, 3) uint8: noise over a gradient, with
    both extremes present."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx * 255.0 / max(w - 1, 1) * 0.5 + yy * 255.0 / max(h - 1, 1) * 0.5)[..., None]
    img = np.clip(base + g.normal(0, 60, (h, w, 3)), 0, 255).round().astype(np.uint8)
    img.flat[0] = 0
    img.flat[-1] = 255
    return img


def to_chw(img):  # (h, w, 3) uint8 numpy -> (3, h, w) uint8 tensor, contiguous
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def to_hwc(t):  # (3, h, w) tensor -> (h, w, 3) float32 numpy
    return t.permute(1, 2, 0).contiguous().numpy().astype(np.float32)


def interp(img, bw, bh):
    """Bilinear resize, torch semantics, rounded and clamped: (bh, bw, 3) float32."""
    x = to_chw(img)[None].float().contiguous()
    y = F.interpolate(x, size=(bh, bw), mode="bilinear", align_corners=False)
    y = torch.round(y).clamp(0, 255)
    return to_hwc(y[0])


def tv_resize(img_t, size):
    return TF.resize(img_t, size, interpolation=T.InterpolationMode.BILINEAR, antialias=False)


def crop_short(size):
    return int(round(size * 256 / 224))


def normalise(x, mode):
    """x: (h, w, 3) float32 0..255 RGB -> the model input, each mode's own formula."""
    x = np.asarray(x, dtype=np.float32)
    if mode == "caffe":  # keras.applications.imagenet_utils, mode="caffe"
        x = x[..., ::-1].copy()
        x[..., 0] -= CAFFE_MEAN_BGR[0]
        x[..., 1] -= CAFFE_MEAN_BGR[1]
        x[..., 2] -= CAFFE_MEAN_BGR[2]
        return x
    if mode == "torch":  # transforms.ToTensor + transforms.Normalize
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))) / 255.0
        t = TF.normalize(t, TORCH_MEAN, TORCH_STD)
        return to_hwc(t)
    if mode == "tf":  # keras.applications.imagenet_utils, mode="tf"
        x = x / np.float32(127.5)
        x -= 1.0
        return x
    if mode == "custom":
        x = x * np.float32(CUSTOM["rescale"])
        if CUSTOM["bgr"]:
            x = x[..., ::-1]
        return ((x - np.array(CUSTOM["mean"], np.float32)) / np.array(CUSTOM["std"], np.float32))
    raise ValueError(mode)


def write_resize(out):
    tensors = {}
    for k, (name, (w, h, bw, bh)) in enumerate(RESIZE_CASES.items()):
        img = image(w, h, 100 + k)
        want = interp(img, bw, bh)
        tv = to_hwc(tv_resize(to_chw(img), [bh, bw]).float())
        if not np.array_equal(tv, want):
            raise SystemExit(f"{name}: torchvision resize (antialias=False) differs from "
                             "interpolate + round")
        tensors[name + "/src"] = img.astype(np.float32)
        tensors[name + "/want"] = want
    st_io.save(os.path.join(out, "preprocess_resize.safetensors"), tensors,
               {"torch": torch.__version__, "torchvision": torchvision.__version__})


def write_base_sizes(out):
    rows = []
    for size in BASE_SIZES:
        s = crop_short(size)
        for w, h in BASE_SOURCES:
            nh, nw = TF._compute_resized_output_size((h, w), [s])
            if w * h <= 4_000_000:  # read it from Resize itself too
                got = T.Resize(s, antialias=False)(torch.zeros(3, h, w, dtype=torch.uint8))
                if tuple(got.shape[1:]) != (nh, nw):
                    raise SystemExit(f"Resize({s}) of {w}x{h} gave {tuple(got.shape)}, "
                                     f"_compute_resized_output_size {(nh, nw)}")
            rows.append([w, h, size, nw, nh])
    st_io.save(os.path.join(out, "preprocess_base_size.safetensors"),
               {"rows": np.array(rows, np.float32)})


def write_pipeline(out):
    tensors = {}
    for k, (name, (w, h)) in enumerate(PIPE_IMAGES.items()):
        img = image(w, h, 200 + k)
        tensors["src/" + name] = img.astype(np.float32)
        t = to_chw(img)
        squash = tv_resize(t, [SIZE, SIZE])
        crop = TF.center_crop(tv_resize(t, crop_short(SIZE)), [SIZE, SIZE])
        for policy, y in (("squash", squash), ("crop", crop)):
            levels = to_hwc(y.float())
            for mode in ("caffe", "torch", "tf", "custom"):
                tensors[f"{policy}/{mode}/{name}"] = normalise(levels, mode)
    w, h = FINISH_BASE
    base = image(w, h, 300)
    tensors["finish/base"] = base.astype(np.float32)
    levels = to_hwc(TF.center_crop(to_chw(base), [SIZE, SIZE]).float())
    for mode in ("caffe", "torch", "tf", "custom"):
        tensors["finish/" + mode] = normalise(levels, mode)
    st_io.save(os.path.join(out, "preprocess_pipeline.safetensors"), tensors)


def write_rrc(out):
    tensors = {}
    w, h = RRC_BASE
    base = image(w, h, 400)
    tensors["rrc/base"] = base.astype(np.float32)
    tensors["rrc/boxes"] = np.array(RRC_BOXES, np.float32)
    t = to_chw(base)
    for k, (x, y, bw, bh, flip) in enumerate(RRC_BOXES):
        r = TF.resized_crop(t, y, x, bh, bw, [SIZE, SIZE],
                            interpolation=T.InterpolationMode.BILINEAR, antialias=False)
        if flip:
            r = TF.hflip(r)
        tensors[f"rrc/{k}"] = to_hwc(r.float())
    rows = []
    for bw, bh, cmin, cmax, hflip in DRAW_CONFIGS:
        # the C test passes float crop_min/crop_max: use exactly those values
        fmin, fmax = float(np.float32(cmin)), float(np.float32(cmax))
        for seed in range(DRAW_SEEDS):
            rng = SplitMix64(seed)
            i, j, ch, cw = rrc_get_params(bh, bw, (fmin, fmax), (3.0 / 4.0, 4.0 / 3.0), rng)
            flip = int(rng.uniform() < 0.5) if hflip else 0
            rows.append([seed, bw, bh, fmin, fmax, hflip, j, i, cw, ch, flip])
    tensors["draw/cases"] = np.array(rows, np.float32)
    st_io.save(os.path.join(out, "preprocess_rrc.safetensors"), tensors)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_preprocess_reference.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    h = hashlib.sha256()
    for f in (__file__, st_io.__file__):
        with open(f, "rb") as fh:
            h.update(fh.read())
    digest = f"{h.hexdigest()} torch {torch.__version__} torchvision {torchvision.__version__}"
    stamp = os.path.join(out, "preprocess_reference.stamp")
    if os.path.exists(stamp) and open(stamp).read() == digest:
        print("preprocess reference data up to date in", out)
        return
    torch.set_num_threads(2)
    write_resize(out)
    write_base_sizes(out)
    write_pipeline(out)
    write_rrc(out)
    with open(stamp, "w") as f:
        f.write(digest)
    print("wrote preprocess reference data to", out)


if __name__ == "__main__":
    main()
