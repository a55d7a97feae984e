/*
 * schedule.h: the learning rate of each epoch of one training phase, with
 * PyTorch's semantics for schedulers stepped once per epoch (at epoch end).
 *
 * Epochs are 0-based within the phase. With W = cfg->warmup_epochs:
 *   warmup (resnetd's own rule, any type), e < W:
 *       lr = base_lr * (0.1 + 0.9 * e / W)
 *     a linear ramp from base_lr/10 at epoch 0 towards base_lr, which epoch W
 *     reaches; torch has no built-in equivalent. After it the chosen schedule
 *     counts its own epochs from t = e - W = 0:
 *   constant  lr = base_lr
 *   step      StepLR(step_size=step_epochs, gamma):
 *                 lr = base_lr * gamma^floor(t / step_epochs)
 *   cosine    CosineAnnealingLR(T_max = epochs - W, eta_min = min_lr), closed form
 *                 lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T_max)) / 2
 *             (torch computes it recursively; the two agree to ~1e-15 relative)
 *   plateau   ReduceLROnPlateau(mode='min', factor, patience, threshold=1e-4,
 *             threshold_mode='rel', cooldown=0, min_lr, eps=1e-8), fed the
 *             val_loss of every epoch t >= 0 (the val_losses of warmup epochs are
 *             not shown to it): starts at base_lr; val_loss improves when it is
 *             below best * (1 - 1e-4) (any finite value improves on the initial
 *             best of +inf; NaN never improves); after more than `patience`
 *             epochs in a row without improving, lr = max(lr * factor, min_lr),
 *             skipped when that changes lr by 1e-8 or less, and the count restarts.
 * Arithmetic is in double like Python's floats; the lr is returned as float.
 * tests/reference/make_schedule_reference.py computes the same values with
 * torch.optim.lr_scheduler.
 *
 * An LrScheduler is plain data (no pointers, no handles): a checkpoint saves it
 * by copying its bytes and restores it by copying them back, which resumes a
 * plateau schedule exactly where it was. A scheduler belongs to one caller; its
 * functions are not for concurrent use on the same scheduler.
 */
#ifndef RESNETD_SCHEDULE_H
#define RESNETD_SCHEDULE_H

#include "jobspec.h"

typedef struct {
    LrSchedule cfg;     /* copy of the phase's schedule */
    double base_lr;     /* the optimizer's lr for the phase */
    int epochs;         /* epochs in the phase */
    double lr;          /* plateau: the lr after warmup, as reduced so far */
    int bad_epochs;     /* plateau: epochs in a row without improvement */
    double best;        /* plateau: best val_loss so far (+inf before the first) */
    int epochs_done;    /* schedule_epoch_end calls so far (any type) */
} LrScheduler;

/* Starts the schedule of a phase of `epochs` epochs whose optimizer lr is
 * base_lr. cfg is copied (borrowed only during the call) and must be valid as
 * jobspec_parse leaves it: 0 <= warmup_epochs < epochs, step_epochs >= 1 for
 * step, gamma > 0, 0 < factor < 1, patience >= 0, min_lr >= 0; violations are
 * programmer errors (assert). */
void schedule_init(LrScheduler *s, const LrSchedule *cfg, float base_lr, int epochs);

/* The lr to use during epoch `epoch` (0-based, >= 0; epochs past the phase
 * continue the formula). For constant, step and cosine it depends on epoch
 * alone. For plateau it is the warmup value while epoch < warmup_epochs and
 * otherwise the current reduced lr, so it is the lr of epoch `epoch` once
 * epochs 0 .. epoch-1 have been reported with schedule_epoch_end. */
float schedule_lr(const LrScheduler *s, int epoch);

/* Reports the end of the next epoch (the first call ends epoch 0) with its
 * validation loss. Plateau: warmup epochs only advance the count; later ones
 * step ReduceLROnPlateau as described above. Other types: only advances the
 * count, val_loss is ignored. */
void schedule_epoch_end(LrScheduler *s, double val_loss);

#endif
