"""Writes the reference data for core/schedule.c.

    /usr/bin/python3 tests/reference/make_schedule_reference.py OUT_DIR

tests/unit/test_schedule.c reads OUT_DIR/schedule_reference.json:
  {"cases": [{"name", "type": "constant" | "step" | "cosine" | "plateau",
              "epochs", "base_lr", "warmup_epochs", "step_epochs", "gamma",
              "min_lr", "factor", "patience",
              "val_loss": [epochs] (plateau: what each epoch end reports),
              "lr": [epochs] the lr used during each epoch}, ...]}

The lr after warmup comes from torch.optim.lr_scheduler, driving one dummy
parameter's SGD optimizer and stepping the scheduler once at each epoch end:
  step     StepLR(step_size=step_epochs, gamma)
  cosine   CosineAnnealingLR(T_max=epochs - warmup_epochs, eta_min=min_lr)
           (torch's recursive form; the C code uses the closed form, and this
           script asserts the two agree within 1e-6 relative)
  plateau  ReduceLROnPlateau(mode='min', factor, patience, threshold=1e-4,
           threshold_mode='rel', cooldown=0, min_lr), stepped with the val_loss
           of each epoch after warmup
  constant no scheduler: the optimizer's lr
Warmup is resnetd's own rule (torch has no equivalent), restated here by its
formula: for e < warmup_epochs, lr = base_lr * (0.1 + 0.9 * e / warmup_epochs);
the scheduler is created when warmup ends, so it counts its epochs from 0 then.
Every float parameter is rounded to float32 first, since the C side holds them
as floats; the numbers in the JSON are the exact doubles the C code receives.

The stamp schedule_reference.stamp holds the hash of this script and the torch
version; the file is regenerated only when it changes.
"""
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refdata  # noqa: E402
import torch


def f32(x):
    return float(np.float32(x))


# Plateau val_loss sequences. Improvements below the rel threshold (1e-4) count
# as stalls: 0.99995 after 1.0 is not below 1.0 * (1 - 1e-4) = 0.9999.
PLATEAU_LOSSES = [
    1.0, 0.8, 0.8, 0.79995, 0.7999, 0.7, 0.70001, 0.699999, 0.69995, 0.65,
    0.65, 0.6499, 0.64995, 0.6499, 0.64985, 0.6, 0.6, 0.6, 0.6, 0.6,
    0.6, 0.6, 0.6, 0.6, 0.59,
]
# The warmup epochs (the first two) report losses no later epoch beats: a
# scheduler that saw them would reduce from epoch 3 on.
PLATEAU_WARMUP_LOSSES = [0.1, 0.2, 1.0, 1.0, 0.5, 0.5, 0.5, 0.49999, 0.4, 0.4, 0.4, 0.4]

# name, type, epochs, base_lr, warmup, step_epochs, gamma, min_lr, factor, patience, losses
CASES = [
    ("constant", "constant", 5, 0.01, 0, 1, 0.1, 0.0, 0.1, 2, None),
    ("constant_epochs1", "constant", 1, 0.003, 0, 1, 0.1, 0.0, 0.1, 2, None),
    ("constant_warmup_mostly", "constant", 6, 0.05, 5, 1, 0.1, 0.0, 0.1, 2, None),
    ("step_s3_g05", "step", 10, 0.1, 0, 3, 0.5, 0.0, 0.1, 2, None),
    ("step_warmup2_s4_g01", "step", 14, 1e-3, 2, 4, 0.1, 0.0, 0.1, 2, None),
    ("step_s1_g07", "step", 30, 0.02, 0, 1, 0.7, 0.0, 0.1, 2, None),
    ("step_gamma1", "step", 8, 0.01, 1, 1, 1.0, 0.0, 0.1, 2, None),
    ("step_epochs1", "step", 1, 0.01, 0, 1, 0.1, 0.0, 0.1, 2, None),
    ("cosine", "cosine", 20, 0.01, 0, 1, 0.1, 1e-6, 0.1, 2, None),
    ("cosine_warmup3", "cosine", 15, 3e-4, 3, 1, 0.1, 0.0, 0.1, 2, None),
    ("cosine_long", "cosine", 200, 0.1, 5, 1, 0.1, 1e-4, 0.1, 2, None),
    ("cosine_tmax1", "cosine", 4, 0.01, 3, 1, 0.1, 1e-5, 0.1, 2, None),
    ("cosine_epochs1", "cosine", 1, 0.01, 0, 1, 0.1, 0.0, 0.1, 2, None),
    ("plateau", "plateau", 25, 0.01, 0, 1, 0.1, 1e-4, 0.5, 2, PLATEAU_LOSSES),
    ("plateau_floor", "plateau", 25, 0.01, 0, 1, 0.1, 2e-3, 0.3, 1, PLATEAU_LOSSES),
    ("plateau_warmup2", "plateau", 12, 0.1, 2, 1, 0.1, 0.0, 0.1, 1, PLATEAU_WARMUP_LOSSES),
    # lr near torch's eps=1e-8: a reduction of 1.8e-8 happens, one of 1.8e-9 is skipped
    ("plateau_eps", "plateau", 10, 2e-8, 0, 1, 0.1, 0.0, 0.1, 1, [1.0] * 10),
]


def run_case(case):
    (name, kind, epochs, base_lr, warmup, step_epochs, gamma, min_lr, factor, patience,
     losses) = case
    base_lr, gamma, min_lr, factor = f32(base_lr), f32(gamma), f32(min_lr), f32(factor)
    if losses is None:
        losses = [0.0] * epochs
    assert len(losses) == epochs, name
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base_lr)
    sched = None
    lrs = []
    closed = []
    for e in range(epochs):
        if e < warmup:
            lrs.append(base_lr * (0.1 + 0.9 * e / warmup))
            continue
        t = e - warmup
        if sched is None:
            if kind == "step":
                sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_epochs, gamma=gamma)
            elif kind == "cosine":
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                    opt, T_max=epochs - warmup, eta_min=min_lr)
            elif kind == "plateau":
                sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                    opt, mode="min", factor=factor, patience=patience, threshold=1e-4,
                    threshold_mode="rel", cooldown=0, min_lr=min_lr)
        lr = opt.param_groups[0]["lr"]
        lrs.append(lr)
        if kind == "cosine":
            t_max = epochs - warmup
            closed.append((lr, min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * t / t_max)) / 2))
        opt.step()  # a no-op (no gradient); keeps torch's step-order check quiet
        if kind == "plateau":
            sched.step(losses[e])
        elif sched is not None:
            sched.step()
    for torch_lr, closed_lr in closed:
        assert abs(torch_lr - closed_lr) <= 1e-6 * abs(torch_lr), (name, torch_lr, closed_lr)
    return dict(name=name, type=kind, epochs=epochs, base_lr=base_lr, warmup_epochs=warmup,
                step_epochs=step_epochs, gamma=gamma, min_lr=min_lr, factor=factor,
                patience=patience, val_loss=[float(v) for v in losses], lr=lrs)


def check(cases):
    """The plateau cases must do what they are there for."""
    by_name = {c["name"]: c for c in cases}
    p = by_name["plateau"]["lr"]
    assert len(set(p)) >= 3, p                          # reduced at least twice
    fl = by_name["plateau_floor"]
    assert fl["lr"][-1] == fl["min_lr"], fl["lr"]       # reached the floor and stayed
    eps = by_name["plateau_eps"]["lr"]
    assert eps[-1] == eps[0] * f32(0.1), eps            # one reduction, then skipped
    w = by_name["plateau_warmup2"]["lr"]
    assert w[2] == by_name["plateau_warmup2"]["base_lr"], w


def main():
    out = sys.argv[1]
    stamp = refdata.Stamp(out, "schedule_reference", __file__, "torch " + torch.__version__)
    if stamp.fresh():
        print("schedule reference data up to date in", out)
        return
    cases = [run_case(c) for c in CASES]
    check(cases)
    for c in cases:
        print("case %-24s lr %s" % (c["name"], " ".join("%.4g" % v for v in c["lr"][:12])))
    stamp.write_json("schedule_reference.json", {"cases": cases})


if __name__ == "__main__":
    main()
