/*
 * select.c: the `train` selectors (see select.h for the contract).
 *
 * A selection is computed into a local mask first and applied only when the
 * whole selector parsed, so a bad selector leaves the model as it was.
 */
#include "select.h"

#include <stdio.h>
#include <string.h>

/* Blocks per stage, Keras conv2..conv5 = torchvision layer1..layer4. */
static const int STAGE_BLOCKS[4] = {3, 4, 6, 3};

#define SELECTOR_EXPECTED "expected head, all, stage:2..5, from:BLOCK, keras_last:1..175"

/* Suffixes of a block's layers in Keras's model.layers order (REFERENCE.md): the
 * shortcut conv and BN sit between _2_relu and _3_bn in the first block of a stage. */
static const char *const KERAS_SHORTCUT_BLOCK[] = {
    "1_conv", "1_bn", "1_relu", "2_conv", "2_bn", "2_relu",
    "0_conv", "3_conv", "0_bn", "3_bn", "add", "out",
};
static const char *const KERAS_IDENTITY_BLOCK[] = {
    "1_conv", "1_bn", "1_relu", "2_conv", "2_bn", "2_relu",
    "3_conv", "3_bn", "add", "out",
};
/* The input layer has no weights; Keras 3 calls it "input_layer" (Keras 2 "input_1"). */
static const char *const KERAS_STEM[] = {
    "input_layer", "conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad",
    "pool1_pool",
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

int select_keras_layer_names(char names[][SELECT_NAME_MAX], int max)
{
    int n = 0;
    for (int i = 0; i < COUNT(KERAS_STEM); i++, n++)
        if (n < max)
            snprintf(names[n], SELECT_NAME_MAX, "%s", KERAS_STEM[i]);
    for (int s = 0; s < 4; s++)
        for (int b = 0; b < STAGE_BLOCKS[s]; b++) {
            const char *const *suf = b == 0 ? KERAS_SHORTCUT_BLOCK : KERAS_IDENTITY_BLOCK;
            int ns = b == 0 ? COUNT(KERAS_SHORTCUT_BLOCK) : COUNT(KERAS_IDENTITY_BLOCK);
            for (int i = 0; i < ns; i++, n++)
                if (n < max)
                    snprintf(names[n], SELECT_NAME_MAX, "conv%d_block%d_%s", s + 2, b + 1,
                             suf[i]);
        }
    return n;
}

/* Parses a whole string of decimal digits (no sign, no spaces) into *v, saturating
 * at 1000000 so that huge numbers read as out of range rather than overflow.
 * Returns 0, or -1 when s is empty or holds anything but digits. */
static int parse_count(const char *s, long *v)
{
    if (!*s)
        return -1;
    long x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (x < 1000000)
            x = x * 10 + (*s - '0');
    }
    *v = x;
    return 0;
}

/* Splits s at the first occurrence of sep into two whole numbers ("4_block6" at
 * "_block", "3.5" at "."). Returns 0 or -1. */
static int parse_pair(const char *s, const char *sep, long *a, long *b)
{
    const char *p = strstr(s, sep);
    char first[16];
    if (!p || (size_t)(p - s) >= sizeof first)
        return -1;
    memcpy(first, s, (size_t)(p - s));
    first[p - s] = '\0';
    return parse_count(first, a) || parse_count(p + strlen(sep), b) ? -1 : 0;
}

static void mark_block(const Block *blk, int *mask)
{
    mask[blk->c1] = mask[blk->b1] = 1;
    mask[blk->c2] = mask[blk->b2] = 1;
    mask[blk->c3] = mask[blk->b3] = 1;
    if (blk->cd >= 0)
        mask[blk->cd] = 1;
    if (blk->bd >= 0)
        mask[blk->bd] = 1;
}

static void mark_blocks_from(const Resnet *m, int first_block, int *mask)
{
    for (int bi = first_block; bi < RESNET_BLOCKS; bi++)
        mark_block(&m->blocks[bi], mask);
}

/* Index into m->blocks of the first block of Keras stage `stage` (2..5). */
static int stage_first_block(int stage)
{
    int bi = 0;
    for (int s = 0; s < stage - 2; s++)
        bi += STAGE_BLOCKS[s];
    return bi;
}

/* Block index named by a from: argument, or -1 (stem), or -2 (no such block). */
static int parse_block(const char *arg)
{
    long stage, blk;
    if (!strcmp(arg, "conv1") || !strcmp(arg, "stem"))
        return -1;
    if (!strncmp(arg, "conv", 4) && !parse_pair(arg + 4, "_block", &stage, &blk)) {
        /* Keras: convS_blockB, S in 2..5, B from 1 */
        if (stage >= 2 && stage <= 5 && blk >= 1 && blk <= STAGE_BLOCKS[stage - 2])
            return stage_first_block((int)stage) + (int)blk - 1;
    } else if (!strncmp(arg, "layer", 5) && !parse_pair(arg + 5, ".", &stage, &blk)) {
        /* torchvision: layerL.B, L in 1..4, B from 0 */
        if (stage >= 1 && stage <= 4 && blk < STAGE_BLOCKS[stage - 1])
            return stage_first_block((int)stage + 1) + (int)blk;
    }
    return -2;
}

/* Marks the conv/BN layers whose Keras name is among the last n of model.layers. */
static void mark_keras_last(const Resnet *m, int n, int *mask)
{
    char names[SELECT_KERAS_LAYERS][SELECT_NAME_MAX];
    int total = select_keras_layer_names(names, SELECT_KERAS_LAYERS);
    for (int i = 0; i < m->n_layers; i++) {
        if (m->layers[i].kind == LAYER_DENSE)
            continue;
        for (int j = total - n; j < total; j++)
            if (!strcmp(m->layers[i].keras_name, names[j])) {
                mask[i] = 1;
                break;
            }
    }
}

int select_trainable(Resnet *m, const char *selector, BnMode bn, int *n_selected,
                     Error *err)
{
    int mask[RESNET_MAX_LAYERS] = {0};
    long n;
    if (!selector)
        return error_set(err, "train: no selector given (" SELECTOR_EXPECTED ")");

    if (!strcmp(selector, "head")) {
        /* the head is marked below, whatever the selector */
    } else if (!strcmp(selector, "all")) {
        for (int i = 0; i < m->n_layers; i++)
            mask[i] = 1;
    } else if (!strncmp(selector, "stage:", 6)) {
        if (parse_count(selector + 6, &n))
            return error_set(err, "train: %s: expected stage:N with N in 2..5", selector);
        if (n < 2 || n > 5)
            return error_set(err, "train: %s is out of range 2..5", selector);
        mark_blocks_from(m, stage_first_block((int)n), mask);
    } else if (!strncmp(selector, "from:", 5)) {
        int bi = parse_block(selector + 5);
        if (bi == -2)
            return error_set(err, "train: %s: no such block (expected from:conv1, from:stem, "
                             "from:convS_blockB as conv2_block1..conv5_block3 or "
                             "from:layerL.B as layer1.0..layer4.2)", selector);
        if (bi == -1) {
            for (int i = 0; i < m->n_layers; i++)
                mask[i] = 1;
        } else {
            mark_blocks_from(m, bi, mask);
        }
    } else if (!strncmp(selector, "keras_last:", 11)) {
        if (parse_count(selector + 11, &n))
            return error_set(err, "train: %s: expected keras_last:N with N in 1..%d", selector,
                             SELECT_KERAS_LAYERS);
        if (n < 1 || n > SELECT_KERAS_LAYERS)
            return error_set(err, "train: %s is out of range 1..%d", selector,
                             SELECT_KERAS_LAYERS);
        mark_keras_last(m, (int)n, mask);
    } else {
        return error_set(err, "train: unknown selector '%s' (" SELECTOR_EXPECTED ")", selector);
    }

    mask[m->out_fc] = 1;
    if (m->hidden_fc >= 0)
        mask[m->hidden_fc] = 1;

    int count = 0;
    for (int i = 0; i < m->n_layers; i++) {
        Layer *l = &m->layers[i];
        l->trainable = mask[i];
        l->batch_stats = l->kind == LAYER_BN && mask[i] &&
                         (bn == BN_TRAIN || (bn == BN_AUTO && !l->loaded));
        count += mask[i];
    }
    if (n_selected)
        *n_selected = count;
    return 0;
}

const char *select_describe(const Resnet *m, char *buf, size_t len)
{
    int n_train = 0, n_bs = 0, lowest = -1;
    size_t p_train = 0, p_all = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const Layer *l = &m->layers[i];
        if (l->trainable) {
            n_train++;
            if (lowest < 0)
                lowest = i;
        }
        n_bs += l->batch_stats;
    }
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        if (p->role != PARAM_WEIGHT && p->role != PARAM_BIAS)
            continue;
        p_all += p->numel;
        if (m->layers[p->layer].trainable)
            p_train += p->numel;
    }
    if (len == 0)
        return buf;
    int w = snprintf(buf, len, "%d of %d layers trainable (%d BN with batch statistics), "
                     "%zu of %zu parameters", n_train, m->n_layers, n_bs, p_train, p_all);
    if (lowest >= 0 && w >= 0 && (size_t)w < len)
        snprintf(buf + w, len - (size_t)w, ", lowest %s (%s)", m->layers[lowest].keras_name,
                 m->layers[lowest].name);
    return buf;
}

int select_frozen_random_bn(const Resnet *m)
{
    int n = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const Layer *l = &m->layers[i];
        n += l->kind == LAYER_BN && l->trainable && !l->loaded && !l->batch_stats;
    }
    return n;
}

const char *select_bn_name(BnMode bn)
{
    return bn == BN_TRAIN ? "train" : bn == BN_FROZEN ? "frozen" : "auto";
}
