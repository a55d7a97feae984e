/* optim.c: SGD, Adam and AdamW as torch.optim computes them (see optim.h). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *optim_type_name(OptimType t)
{
    switch (t) {
    case OPTIM_SGD: return "sgd";
    case OPTIM_ADAM: return "adam";
    case OPTIM_ADAMW: return "adamw";
    }
    return "?";
}

OptimConfig optim_defaults(OptimType type)
{
    OptimConfig c;
    memset(&c, 0, sizeof c);
    c.type = type;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    if (type == OPTIM_ADAMW)
        c.weight_decay = 0.01f;
    return c;
}

int optim_init(Optimizer *o, const OptimConfig *cfg, const Resnet *m, Error *err)
{
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->n = m->n_floats;
    o->n_params = m->n_params;
    o->m = calloc(o->n, sizeof(float));
    if (cfg->type != OPTIM_SGD)
        o->v = calloc(o->n, sizeof(float));
    o->started = calloc((size_t)m->n_params, 1);
    if (!o->m || (cfg->type != OPTIM_SGD && !o->v) || !o->started) {
        optim_free(o);
        return error_set(err, "out of memory allocating optimizer state (%zu floats)", m->n_floats);
    }
    return 0;
}

void optim_free(Optimizer *o)
{
    if (!o)
        return;
    free(o->m);
    free(o->v);
    free(o->started);
    memset(o, 0, sizeof *o);
}

void optim_step(Optimizer *o, Resnet *m, float lr)
{
    const OptimConfig *c = &o->cfg;
    o->step++;
    const double bc1 = 1.0 - pow((double)c->beta1, (double)o->step);
    const double bc2 = 1.0 - pow((double)c->beta2, (double)o->step);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    for (int pi = 0; pi < m->n_params; pi++) {
        const ParamInfo *info = &m->params[pi];
        if (info->role == PARAM_RUNNING_MEAN || info->role == PARAM_RUNNING_VAR)
            continue;
        if (!m->layers[info->layer].trainable)
            continue;
        float *p = m->param_data + info->offset;
        const float *g = m->grad_data + info->offset;
        float *s1 = o->m + info->offset;
        float *s2 = o->v ? o->v + info->offset : NULL;
        const size_t n = info->numel;
        switch (c->type) {
        case OPTIM_SGD: {
            const int first = !o->started[pi];
            o->started[pi] = 1;
            #pragma omp parallel for schedule(static) if (n > 65536)
            for (size_t i = 0; i < n; i++) {
                float d = g[i];
                if (c->weight_decay != 0.0f) d += c->weight_decay * p[i];
                if (c->momentum != 0.0f) {
                    float b = first ? d : s1[i] * c->momentum + (1.0f - c->dampening) * d;
                    s1[i] = b;
                    d = c->nesterov ? d + c->momentum * b : b;
                }
                p[i] -= lr * d;
            }
            break;
        }
        case OPTIM_ADAM:
        case OPTIM_ADAMW: {
            const int decoupled = c->type == OPTIM_ADAMW;
            const float decay = decoupled ? 1.0f - lr * c->weight_decay : 1.0f;
            #pragma omp parallel for schedule(static) if (n > 65536)
            for (size_t i = 0; i < n; i++) {
                float d = g[i];
                if (decoupled)
                    p[i] *= decay;
                else if (c->weight_decay != 0.0f)
                    d += c->weight_decay * p[i];
                s1[i] = s1[i] * c->beta1 + (1.0f - c->beta1) * d;
                s2[i] = s2[i] * c->beta2 + (1.0f - c->beta2) * d * d;
                float denom = sqrtf(s2[i]) / bc2_sqrt + c->eps;
                p[i] -= step_size * (s1[i] / denom);
            }
            break;
        }
        }
    }
}
