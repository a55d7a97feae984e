/*
 * resnet.h: the ResNet50 graph, forward and backward, with a replaceable head.
 *
 * Two variants share one graph (REFERENCE.md):
 *   RESNET_TORCHVISION  v1.5: stride on the 3x3 conv, no conv bias, BN eps 1e-5
 *   RESNET_KERAS        v1:   stride on the first 1x1 conv, conv bias, BN eps 1.001e-5
 * Head: global average pool -> [dense(hidden) -> ReLU] -> dropout -> dense(classes).
 *
 * Memory: parameters (with BN running statistics), gradients, and activations
 * each live in one allocation with named views. Activations are planned once per
 * (batch, input size) by resnet_plan. Convolutions with their BatchNorm folded in
 * (resnet_fold_frozen) have their weights in a fourth.
 *
 * Names: every parameter has a canonical torchvision-style name
 * ("layer1.0.conv1.weight", "bn1.running_mean", "fc.weight", "head.hidden.weight",
 * and for the Keras variant also "layer1.0.conv1.bias"); every layer also knows its
 * Keras name ("conv2_block1_1_conv"). Internal layouts: conv weights HWIO
 * (k, k, cin, cout), dense weights (in, out).
 *
 * Threading: a Resnet is used by one thread at a time.
 */
#ifndef RESNETD_RESNET_H
#define RESNETD_RESNET_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "kernels.h"
#include "rng.h"

typedef enum { RESNET_TORCHVISION = 0, RESNET_KERAS = 1 } ResnetVariant;

typedef struct {
    ResnetVariant variant;
    int num_classes;   /* >= 1 */
    int hidden;        /* units of the hidden dense layer; 0 for none */
    float dropout;     /* dropout before the last dense layer, in [0, 1) */
} ResnetConfig;

typedef enum { LAYER_CONV, LAYER_BN, LAYER_DENSE } LayerKind;

typedef struct {
    char name[40];        /* torchvision-style: "layer1.0.conv1", "bn1", "fc" */
    char keras_name[40];  /* "conv2_block1_1_conv", "conv1_bn", "predictions" */
    LayerKind kind;
    int trainable;        /* parameters receive gradients and optimizer updates */
    int batch_stats;      /* BN only: use batch statistics when training (train mode) */
    int loaded;           /* its parameters came from a weights file (weights_load), not
                           * from a random initialisation */
    int k, stride, pad, cin, cout, has_bias; /* conv; dense uses cin/cout/has_bias */
    float eps;                               /* BN */
    float *w, *b;         /* conv/dense weight and bias; BN gamma and beta */
    float *dw, *db;       /* their gradients */
    float *rmean, *rvar;  /* BN running statistics */
    float *mean, *invstd; /* BN statistics used by the last forward (activation arena) */
    ConvShape shape;      /* conv geometry for the planned batch and size */
    int folded;           /* conv: runs with its BN folded in (resnet_fold_frozen) */
    float *fw, *fb;       /* conv, when folded: weight and bias with the BN folded in
                           * (views into Resnet.fold_data) */
} Layer;

typedef enum {
    PARAM_WEIGHT, PARAM_BIAS, PARAM_RUNNING_MEAN, PARAM_RUNNING_VAR
} ParamRole;

typedef struct {
    char name[56];        /* canonical name, e.g. "layer1.0.bn1.running_var" */
    ParamRole role;
    int layer;            /* index into Resnet.layers */
    int ndim;
    int shape[4];         /* internal layout */
    size_t offset, numel; /* into Resnet.param_data and Resnet.grad_data */
} ParamInfo;

typedef struct {
    int c1, b1, c2, b2, c3, b3, cd, bd; /* layer indices; cd/bd are -1 without a shortcut conv */
    int h, w, oh, ow;                   /* input and output spatial size */
    float *z1, *a1, *z2, *a2, *z3, *zd, *out;
} Block;

#define RESNET_MAX_LAYERS 112
#define RESNET_MAX_PARAMS 336
#define RESNET_BLOCKS 16

typedef struct Resnet {
    ResnetConfig cfg;
    int n_layers;
    Layer layers[RESNET_MAX_LAYERS];
    int n_params;
    ParamInfo params[RESNET_MAX_PARAMS];
    float *param_data;   /* every parameter and running statistic, one allocation */
    float *grad_data;    /* same layout; running statistics have no gradient */
    size_t n_floats;
    float *fold_data;    /* folded conv weights and biases (resnet_fold_frozen), owned */
    size_t fold_floats;
    Block blocks[RESNET_BLOCKS];
    int stem_conv, stem_bn, hidden_fc, out_fc; /* layer indices (hidden_fc -1 if none) */

    /* plan */
    int batch, size, cur_n;
    int plan_training;   /* the plan keeps what backward needs */
    float *arena;
    size_t arena_floats;
    int s1, s2;          /* stem conv output size, pool output size */
    int feat_hw;         /* spatial size of the last feature map */
    float *stem_z, *stem_a, *pool;
    int32_t *pool_arg;
    float *feat, *hid, *drop_in, *drop_mask, *logits, *probs, *dlogits, *dfeat, *dhid;
    float *g[3];         /* backward scratch, each the size of the largest activation */
    float *ws;           /* conv workspace */
    const float *input;  /* borrowed from resnet_forward until resnet_backward */
    int trained_forward; /* last forward ran in training mode */
    Rng dropout_rng;
} Resnet;

/* Builds the graph and allocates parameters (zeros; BN gamma 1, running var 1).
 * *out is owned by the caller and freed with resnet_free. */
int resnet_create(Resnet **out, const ResnetConfig *cfg, Error *err);
void resnet_free(Resnet *m);

/* Seeded random initialisation, each layer from its own stream of the seed
 * (rng.h), so no two layers share draws: convs N(0, 2/fan_out) as torchvision
 * initialises them (kaiming_normal_, mode "fan_out"), conv biases 0, BN gamma 1,
 * beta 0, running mean 0 and running var 1, and the head as resnet_init_head(m,
 * seed, 0). Clears every layer's `loaded`. The same seed gives the same weights. */
void resnet_init_random(Resnet *m, uint64_t seed);

/* Initialises the head's dense layers as the variant's framework initialises a
 * new layer: torchvision (nn.Linear) weight and bias U(+-1/sqrt(fan_in)); Keras
 * (Dense) glorot_uniform kernel, zero bias. The draws come from the seed's head
 * stream mixed with salt, and do not depend on the backbone: a job that loads a
 * backbone passes its resnet_backbone_fingerprint, so that fine-tuning weights
 * pretrained with the same seed does not start from the pretraining's own
 * initial head. */
void resnet_init_head(Resnet *m, uint64_t seed, uint64_t salt);

/* A 64-bit hash (FNV-1a over the bits) of every backbone parameter and running
 * statistic: equal backbones give equal fingerprints. */
uint64_t resnet_backbone_fingerprint(const Resnet *m);

/* Allocates activations for training (forward in either mode, and backward) for
 * up to `batch` images of size x size (>= 32). Calling it again with the same
 * values does nothing. */
int resnet_plan(Resnet *m, int batch, int size, Error *err);

/* The bytes resnet_plan(m, batch, size) would allocate, without allocating
 * them; m is left unplanned (as before a first resnet_plan). Errors as
 * resnet_plan's (batch < 1, size < 32). */
int resnet_plan_bytes(Resnet *m, int batch, int size, size_t *bytes, Error *err);

/* Like resnet_plan, but keeps only what a forward needs (no backward, no training
 * forward): a few rotating buffers instead of every activation. */
int resnet_plan_inference(Resnet *m, int batch, int size, Error *err);

/* Forward pass of n <= planned batch images x[n][size][size][3] (preprocessed).
 * training: dropout is active and BN layers with batch_stats use (and update the
 * running statistics from) the batch; otherwise every BN uses running statistics.
 * x is borrowed until resnet_backward returns. Logits in m->logits ([n][classes]). */
void resnet_forward(Resnet *m, const float *x, int n, int training);

/* Units for starting a forward part-way: blocks 0..15, then the head (global
 * pool onward). -1 stands for the stem. */
#define RESNET_HEAD_UNIT RESNET_BLOCKS

/* The lowest unit with a trainable layer (-1: the stem; RESNET_HEAD_UNIT: only
 * the head trains). Everything below it is frozen and runs BN in inference mode,
 * so its output for an image never changes: it can be computed once and cached. */
int resnet_lowest_trainable_unit(const Resnet *m);

/* Floats per image of the input of unit (block input h*w*c, or 2048 features). */
size_t resnet_unit_input_floats(const Resnet *m, int unit);

/* After a forward (training plan): the activation that fed unit, n images. */
const float *resnet_unit_input(const Resnet *m, int unit);

/* Forward from unit on, given its input act[n][resnet_unit_input_floats]
 * (captured earlier with resnet_unit_input). Training plan only; nothing below
 * unit may be trainable for a following resnet_backward. */
void resnet_forward_from(Resnet *m, int unit, const float *act, int n, int training);

/* Softmax cross-entropy of the last forward (see softmax_xent); fills m->probs and
 * m->dlogits. class_weight may be NULL. */
double resnet_loss(Resnet *m, const int *labels, const float *class_weight, float smoothing);

/* Adds d loss / d parameter into the gradients of trainable layers, from
 * m->dlogits down to the lowest trainable layer; nothing below it is computed. */
void resnet_backward(Resnet *m);

void resnet_zero_grad(Resnet *m);

/* Sets every layer's trainable flag (and batch_stats for BN to bn_batch_stats
 * where trainable, 0 elsewhere). Does not refold: see resnet_fold_frozen. */
void resnet_set_trainable_all(Resnet *m, int trainable, int bn_batch_stats);

/* BatchNorm folding of the frozen prefix. Every conv of a unit strictly below
 * resnet_lowest_trainable_unit (the stem conv, and all convs of the blocks below)
 * gets its BN (running statistics, inference mode) folded into a weight and bias
 * of its own, w'[..][o] = w[..][o] * s[o] and b'[o] = beta[o] + (bias[o] - mean[o]) * s[o]
 * with s[o] = gamma[o] / sqrt(var[o] + eps); forwards (both plans, training or not)
 * then run each such conv+BN pair as one fused convolution. A pair whose BN has
 * batch_stats set is left unfolded (a training forward would use the batch's
 * statistics there). The folded weights live in m->fold_data; the parameters are
 * never modified. Every call recomputes from the current parameters and flags.
 *
 * The folded weights are a snapshot: after any change to the parameters or running
 * statistics of a folded layer (loading weights, initialising), or to the
 * trainable/batch_stats flags (resnet_set_trainable_all, select_trainable, a new
 * phase), the caller must call resnet_fold_frozen again, or resnet_unfold; nothing
 * refolds automatically. resnet_backward asserts that no folded conv lies at or
 * above the lowest trainable unit.
 *
 * Returns 0, or -1 with a message when out of memory (then nothing is folded). */
int resnet_fold_frozen(Resnet *m, Error *err);

/* Clears every folded mark: forwards run each conv and BN on the parameters again.
 * The folded weights' memory is kept for the next resnet_fold_frozen. */
void resnet_unfold(Resnet *m);

/* Index of the layer / parameter with this canonical (or Keras, for layers) name, or -1. */
int resnet_find_layer(const Resnet *m, const char *name);
int resnet_find_param(const Resnet *m, const char *name);

/* Total number of parameters (weights and biases, not running statistics). */
size_t resnet_param_count(const Resnet *m);

const char *resnet_variant_name(ResnetVariant v);

#endif
