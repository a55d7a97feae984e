/*
 * schedule.c: per-epoch learning rates (see schedule.h for the formulas and
 * which torch scheduler each one restates).
 */
#include "schedule.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* ReduceLROnPlateau's defaults that the job spec does not expose. */
#define PLATEAU_THRESHOLD 1e-4
#define PLATEAU_EPS 1e-8

void schedule_init(LrScheduler *s, const LrSchedule *cfg, float base_lr, int epochs)
{
    assert(s && cfg);
    assert(epochs >= 1 && cfg->warmup_epochs >= 0 && cfg->warmup_epochs < epochs);
    assert(cfg->type != LR_STEP || (cfg->step_epochs >= 1 && cfg->gamma > 0));
    assert(cfg->type != LR_PLATEAU || (cfg->factor > 0 && cfg->factor < 1 && cfg->patience >= 0));
    assert(cfg->min_lr >= 0);
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->base_lr = base_lr;
    s->epochs = epochs;
    s->lr = base_lr;
    s->bad_epochs = 0;
    s->best = INFINITY;
    s->epochs_done = 0;
}

float schedule_lr(const LrScheduler *s, int epoch)
{
    assert(epoch >= 0);
    const LrSchedule *c = &s->cfg;
    int w = c->warmup_epochs;
    if (epoch < w)
        return (float)(s->base_lr * (0.1 + 0.9 * epoch / w));
    int t = epoch - w;
    switch (c->type) {
    case LR_CONSTANT:
        return (float)s->base_lr;
    case LR_STEP:
        return (float)(s->base_lr * pow(c->gamma, t / c->step_epochs));
    case LR_COSINE: {
        /* schedule_init guarantees T_max >= 1 */
        double eta_min = c->min_lr;
        double t_max = s->epochs - w;
        return (float)(eta_min + (s->base_lr - eta_min) * (1 + cos(M_PI * t / t_max)) / 2);
    }
    case LR_PLATEAU:
        return (float)s->lr;
    }
    assert(!"unknown LrScheduleType");
    return (float)s->base_lr;
}

void schedule_epoch_end(LrScheduler *s, double val_loss)
{
    int epoch = s->epochs_done++;
    if (s->cfg.type != LR_PLATEAU || epoch < s->cfg.warmup_epochs)
        return;
    /* torch's is_better for mode 'min', threshold_mode 'rel' */
    if (val_loss < s->best * (1 - PLATEAU_THRESHOLD)) {
        s->best = val_loss;
        s->bad_epochs = 0;
    } else {
        s->bad_epochs++;
    }
    if (s->bad_epochs > s->cfg.patience) {
        double reduced = fmax(s->lr * (double)s->cfg.factor, (double)s->cfg.min_lr);
        if (s->lr - reduced > PLATEAU_EPS)
            s->lr = reduced;
        s->bad_epochs = 0;
    }
}
