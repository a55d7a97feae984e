"""PyTorch's side of `make bench`: the same ResNet50 training step (forward,
cross-entropy, backward, SGD momentum update) or inference forward as
bench_train.c, with Debian's python3-torch on 2 threads, channels_last, fp32.
Prints one JSON object. Run with /usr/bin/python3.

    torch_bench.py --mode train|infer --size S --batch N [--steps K] [--warmup W]
                   [--threads T] [--freeze none|head|stage5]
"""
import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="train")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--freeze", default="none")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(42)
    model = torchvision.models.resnet50(weights=None).to(memory_format=torch.channels_last)
    x = torch.randn(a.batch, 3, a.size, a.size).to(memory_format=torch.channels_last)
    labels = torch.arange(a.batch) % 1000
    train = a.mode == "train"
    if train:
        model.train()
        if a.freeze != "none":
            keep = ("fc.",) if a.freeze == "head" else ("fc.", "layer4.")
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith(keep))
            # same semantics as resnetd's frozen layers (BN in inference mode), computed
            # naively: the whole forward runs at every step
            for name, mod in model.named_modules():
                if isinstance(mod, torch.nn.BatchNorm2d) and not name.startswith(keep):
                    mod.eval()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    else:
        model.eval()
    t0 = 0.0
    for s in range(a.warmup + a.steps):
        if s == a.warmup:
            t0 = time.perf_counter()
        if train:
            opt.zero_grad()
            F.cross_entropy(model(x), labels).backward()
            opt.step()
        else:
            with torch.no_grad():
                model(x)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"impl": "pytorch", "mode": a.mode, "size": a.size, "batch": a.batch,
                      "steps": a.steps, "threads": a.threads, "torch": torch.__version__,
                      "images_per_s": round(a.steps * a.batch / dt, 3),
                      "peak_rss_mib": round(rss, 1)}))


if __name__ == "__main__":
    main()
