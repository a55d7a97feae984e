"""Writes the PyTorch reference data the C tests compare against.

    /usr/bin/python3 tests/reference/make_reference.py OUT_DIR

For every case (variant x trainable part x head x loss options) it writes
  CASE_init.safetensors      the seeded random weights, in resnetd's naming/layout
  CASE_io.safetensors        x (NHWC), labels, class_weight, logits, loss; the case's
                             settings in the metadata
  CASE_grads.safetensors     d loss / d parameter of every trainable parameter
  CASE_step.safetensors      all tensors after the training-mode forward (BN running stats)
  CASE_OPT.safetensors       all tensors after 3 steps of optimizer OPT on the same batch
Files are regenerated only when this script or resnet_torch.py changed.
"""
import copy
import hashlib
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import resnet_torch as rt  # noqa: E402
import st_io  # noqa: E402

BATCH, SIZE, CLASSES = 4, 64, 5

# name, variant, first trainable module path (None: everything), hidden, bn policy,
# class weights, label smoothing
CASES = [
    ("tv_full", "torchvision", None, 0, "train", [1.0, 2.0, 0.5, 1.5, 1.0], 0.0),
    ("tv_frozen", "torchvision", "layer3", 32, "train", None, 0.1),
    ("keras_full", "keras", None, 0, "train", [0.5, 1.0, 3.0, 1.0, 2.0], 0.1),
    ("keras_frozen", "keras", "layer3.4.conv2", 0, "frozen", [1.0, 1.0, 2.0, 1.0, 1.0], 0.0),
]

# Adam's eps is 1e-6 rather than 1e-8: float32 gradients carry noise of ~1e-8 (a
# Keras conv bias before a batch-statistics BN has an exact gradient of 0), and
# with eps below the noise Adam turns noise into full-size updates of random sign.
OPTIMIZERS = [
    ("sgd", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adam", lambda p: torch.optim.Adam(p, lr=1e-3, eps=1e-6, weight_decay=1e-4)),
    ("adamw", lambda p: torch.optim.AdamW(p, lr=1e-3, eps=1e-6, weight_decay=0.05)),
]


def module_order(model):
    """Module paths (net. prefix stripped) in forward order: convs, BNs, linears."""
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            out.append((name[4:] if name.startswith("net.") else name, mod))
    return out


def configure(model, first_trainable, bn_policy):
    """Trainable from module `first_trainable` on (forward order); frozen modules'
    BN in eval mode; trainable BN in train mode unless bn_policy is 'frozen'."""
    model.train()
    trainable = first_trainable is None
    for path, mod in module_order(model):
        if not trainable and (path == first_trainable or path.startswith(first_trainable + ".")):
            trainable = True
        for p in mod.parameters(recurse=False):
            p.requires_grad_(trainable)
        if isinstance(mod, nn.BatchNorm2d) and (not trainable or bn_policy == "frozen"):
            mod.eval()


def randomize_bn(model, gen):
    """Random BN parameters and statistics, with the last BN of each residual
    branch scaled down (gamma in [0.025, 0.075]). A deep ResNet at random init with
    unit gammas has exploding gradients (conv1's gradient ~300x layer4's), where
    float32 itself keeps only ~2 digits (torch float32 vs float64: 1.7e-2 relative);
    small residual gammas, as in pretrained ResNets and torchvision's
    zero_init_residual, keep the problem well conditioned so 1e-3 is meaningful."""
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                scale = 0.05 if name.endswith("bn3") else 1.0
                mod.weight.copy_(scale * (0.5 + torch.rand(c, generator=gen)))
                mod.bias.copy_(0.1 * torch.randn(c, generator=gen))
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            elif isinstance(mod, (nn.Conv2d, nn.Linear)) and mod.bias is not None:
                mod.bias.copy_(0.05 * torch.randn(mod.bias.shape, generator=gen))


def relu_inputs(model, x, first, bn_policy):
    """(weight, input) of every ReLU, from a training-mode forward of a copy. The
    weight is the number of values per channel over 16 (layer4's count at batch 4,
    64x64): a flip moves its channel's gradient by about 1/(values per channel).
    The stem's ReLU weighs 1: the max pool after it breaks ties between zeros by
    position, so one flip there reroutes a whole gradient element."""
    m = copy.deepcopy(model)
    configure(m, first, bn_policy)
    vals = []
    for name, mod in m.named_modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
            stem = name in ("relu", "net.relu")
            mod.register_forward_hook(lambda mod, i, o, stem=stem: vals.append(
                (1.0 if stem else i[0].numel() / i[0].shape[1] / 16.0,
                 i[0].detach().double())))
    with torch.no_grad():
        m(x)
    return vals


def kink_margin(model64, x, first, bn_policy):
    """min over ReLU inputs of |v| / (float32 rounding error of v), times the
    layer's weight (see relu_inputs).
    A ReLU input closer to 0 than float32 rounding can land on either side of the
    kink, and in layer4 (2x2 maps, 16 values per channel at batch 4) one such flip
    moves a whole channel's gradient by ~1/16: the data are chosen to avoid it."""
    m32 = copy.deepcopy(model64).float()
    v32 = relu_inputs(m32, x.float(), first, bn_policy)
    v64 = relu_inputs(model64, x, first, bn_policy)
    return min(w * (b.abs() / ((a - b).abs() + 1e-6 * b.std())).min().item()
               for (w, a), (_, b) in zip(v32, v64))


def choose_input(model64, first, bn_policy, tries=60, want=6.0):
    best = None
    for attempt in range(tries):
        gen = torch.Generator().manual_seed(1000 + attempt)
        x = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen).double()  # float32 values
        r = kink_margin(model64, x, first, bn_policy)
        if best is None or r > best[0]:
            best = (r, attempt, x)
        if r >= want:
            break
    return best


def dump(model, variant, path, meta=None, which="params"):
    tensors = {name: a for name, a, _, _ in rt.named_tensors(model, variant, which)}
    st_io.save(path, tensors, meta)


def run_case(out, case):
    name, variant, first, hidden, bn_policy, cw, smoothing = case
    torch.manual_seed(1234)
    gen = torch.Generator().manual_seed(99)
    model = rt.build(variant, CLASSES, hidden)
    randomize_bn(model, gen)
    # The oracle computes in float64: torch's own float32 result differs from the
    # exact one by up to 1e-3 on these cases; files are written as float32.
    model = model.double()
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    dump(model, variant, os.path.join(out, name + "_init.safetensors"))

    margin, attempt, x = choose_input(model, first, bn_policy)
    print("%s: input seed %d, ReLU kink margin %.1f" % (name, 1000 + attempt, margin))
    labels = torch.tensor([i % CLASSES for i in range(BATCH)])
    weight = torch.tensor(cw, dtype=torch.float64) if cw else None

    def loss_of(logits):
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing)

    configure(model, first, bn_policy)
    logits = model(x)
    loss = loss_of(logits)
    loss.backward()
    meta = {"variant": variant, "classes": str(CLASSES), "hidden": str(hidden),
            "bn_policy": bn_policy, "smoothing": repr(smoothing),
            "first_trainable": first or "", "kink_margin": "%.2f" % margin, "batch": str(BATCH), "size": str(SIZE)}
    # x is stored as float32 and the oracle uses exactly those values
    io = {"x": x.permute(0, 2, 3, 1).contiguous().numpy(),
          "labels": labels.float().numpy(),
          "logits": logits.detach().numpy(),
          "loss": np.array([loss.item()], dtype=np.float32)}
    if weight is not None:
        io["class_weight"] = weight.numpy()
    st_io.save(os.path.join(out, name + "_io.safetensors"), io, meta)
    dump(model, variant, os.path.join(out, name + "_grads.safetensors"), which="grads")
    dump(model, variant, os.path.join(out, name + "_step.safetensors"))

    for opt_name, make in OPTIMIZERS:
        model.load_state_dict(init_state)
        configure(model, first, bn_policy)
        opt = make([p for p in model.parameters() if p.requires_grad])
        for _ in range(3):
            opt.zero_grad()
            loss_of(model(x)).backward()
            opt.step()
        dump(model, variant, os.path.join(out, "%s_%s.safetensors" % (name, opt_name)))


SIZES = [32, 33, 47, 63, 64, 65, 97, 224, 225]


def write_sizes(out):
    """Final feature-map size of each variant for each input size, as torch computes it."""
    res = {}
    with torch.no_grad():
        for variant in ("torchvision", "keras"):
            m = rt.build(variant, 2).eval()
            body = m.net if variant == "torchvision" else m
            res[variant] = {}
            for s in SIZES:
                x = torch.zeros(1, 3, s, s)
                if variant == "torchvision":
                    y = body.layer4(body.layer3(body.layer2(body.layer1(
                        body.maxpool(body.relu(body.bn1(body.conv1(x))))))))
                else:
                    y = body.layer4(body.layer3(body.layer2(body.layer1(
                        body.pool(body.relu(body.bn1(body.conv1(x))))))))
                res[variant][str(s)] = y.shape[-1]
    with open(os.path.join(out, "sizes.json"), "w") as f:
        json.dump(res, f)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    h = hashlib.sha256()
    for f in (__file__, rt.__file__, st_io.__file__):
        with open(f, "rb") as fh:
            h.update(fh.read())
    stamp = os.path.join(out, "reference.stamp")
    digest = h.hexdigest() + " torch " + torch.__version__
    if os.path.exists(stamp) and open(stamp).read() == digest:
        print("reference data up to date in", out)
        return
    torch.set_num_threads(2)
    write_sizes(out)
    for case in CASES:
        run_case(out, case)
        print("wrote case", case[0])
    with open(stamp, "w") as f:
        f.write(digest)
    json.dump({"cases": [c[0] for c in CASES], "optimizers": [o[0] for o in OPTIMIZERS]},
              open(os.path.join(out, "cases.json"), "w"))


if __name__ == "__main__":
    main()
