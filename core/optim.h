/*
 * optim.h: optimizers with PyTorch's exact update rules (torch.optim 1.13,
 * single-tensor code paths): SGD (momentum, dampening, Nesterov, L2 weight decay),
 * Adam (L2 weight decay added to the gradient) and AdamW (decoupled decay).
 *
 * State (momentum / moments) is one allocation in the model's parameter layout,
 * owned by the Optimizer. Only parameters of trainable layers are updated; BN
 * running statistics never are.
 */
#ifndef RESNETD_OPTIM_H
#define RESNETD_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "resnet.h"

typedef enum { OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW } OptimType;

typedef struct {
    OptimType type;
    float lr;
    float momentum;      /* SGD */
    float dampening;     /* SGD */
    int nesterov;        /* SGD */
    float weight_decay;
    float beta1, beta2;  /* Adam/AdamW */
    float eps;           /* Adam/AdamW */
} OptimConfig;

typedef struct {
    OptimConfig cfg;
    size_t n;            /* floats per state buffer (= model n_floats) */
    float *m, *v;        /* SGD momentum buffer in m; Adam moments in m and v */
    unsigned char *started; /* per parameter: SGD momentum buffer initialised */
    int n_params;
    int64_t step;
} Optimizer;

/* PyTorch's defaults for the type: SGD momentum 0; Adam/AdamW betas (0.9, 0.999),
 * eps 1e-8; AdamW weight decay 0.01. lr must be set by the caller. */
OptimConfig optim_defaults(OptimType type);

/* Allocates zeroed state for model m. o is owned by the caller (optim_free). */
int optim_init(Optimizer *o, const OptimConfig *cfg, const Resnet *m, Error *err);
void optim_free(Optimizer *o);

/* One update of every trainable parameter of m from its gradient, with learning
 * rate lr (the schedule's value for this step; cfg.lr is the base). */
void optim_step(Optimizer *o, Resnet *m, float lr);

const char *optim_type_name(OptimType t);

#endif
