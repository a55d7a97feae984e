/*
 * resnet.c: ResNet50 (torchvision v1.5 and Keras v1) forward and backward over
 * the kernels in kernels.c (see resnet.h for the contract).
 */
#include "resnet.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int STAGE_BLOCKS[4] = {3, 4, 6, 3};
static const int STAGE_FILTERS[4] = {64, 128, 256, 512};
#define BN_MOMENTUM 0.1f
#define FEATURES 2048

const char *resnet_variant_name(ResnetVariant v)
{
    return v == RESNET_KERAS ? "keras" : "torchvision";
}

/* ---- building the graph ------------------------------------------------- */

static int add_layer(Resnet *m, LayerKind kind, const char *name, const char *keras_name)
{
    Layer *l = &m->layers[m->n_layers];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    snprintf(l->name, sizeof l->name, "%s", name);
    snprintf(l->keras_name, sizeof l->keras_name, "%s", keras_name);
    return m->n_layers++;
}

static void add_param(Resnet *m, int layer, ParamRole role, const char *suffix, int ndim,
                      int d0, int d1, int d2, int d3)
{
    ParamInfo *p = &m->params[m->n_params++];
    memset(p, 0, sizeof *p);
    char lname[sizeof m->layers[layer].name];
    memcpy(lname, m->layers[layer].name, sizeof lname);
    snprintf(p->name, sizeof p->name, "%s.%s", lname, suffix);
    p->role = role;
    p->layer = layer;
    p->ndim = ndim;
    int dims[4] = {d0, d1, d2, d3};
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = dims[i];
        p->numel *= (size_t)dims[i];
    }
    p->offset = m->n_floats;
    m->n_floats += (p->numel + 15) & ~(size_t)15; /* 64-byte aligned views */
}

static int add_conv(Resnet *m, const char *name, const char *keras_name, int k, int stride,
                    int pad, int cin, int cout)
{
    int li = add_layer(m, LAYER_CONV, name, keras_name);
    Layer *l = &m->layers[li];
    l->k = k; l->stride = stride; l->pad = pad; l->cin = cin; l->cout = cout;
    l->has_bias = m->cfg.variant == RESNET_KERAS;
    add_param(m, li, PARAM_WEIGHT, "weight", 4, k, k, cin, cout);
    if (l->has_bias)
        add_param(m, li, PARAM_BIAS, "bias", 1, cout, 0, 0, 0);
    return li;
}

static int add_bn(Resnet *m, const char *name, const char *keras_name, int c)
{
    int li = add_layer(m, LAYER_BN, name, keras_name);
    Layer *l = &m->layers[li];
    l->cin = l->cout = c;
    l->eps = m->cfg.variant == RESNET_KERAS ? 1.001e-5f : 1e-5f;
    add_param(m, li, PARAM_WEIGHT, "weight", 1, c, 0, 0, 0);
    add_param(m, li, PARAM_BIAS, "bias", 1, c, 0, 0, 0);
    add_param(m, li, PARAM_RUNNING_MEAN, "running_mean", 1, c, 0, 0, 0);
    add_param(m, li, PARAM_RUNNING_VAR, "running_var", 1, c, 0, 0, 0);
    return li;
}

static int add_dense(Resnet *m, const char *name, const char *keras_name, int in, int out)
{
    int li = add_layer(m, LAYER_DENSE, name, keras_name);
    Layer *l = &m->layers[li];
    l->cin = in; l->cout = out; l->has_bias = 1;
    add_param(m, li, PARAM_WEIGHT, "weight", 2, in, out, 0, 0);
    add_param(m, li, PARAM_BIAS, "bias", 1, out, 0, 0, 0);
    return li;
}

static void bind_views(Resnet *m)
{
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->params[i];
        Layer *l = &m->layers[p->layer];
        float *v = m->param_data + p->offset, *g = m->grad_data + p->offset;
        switch (p->role) {
        case PARAM_WEIGHT: l->w = v; l->dw = g; break;
        case PARAM_BIAS: l->b = v; l->db = g; break;
        case PARAM_RUNNING_MEAN: l->rmean = v; break;
        case PARAM_RUNNING_VAR: l->rvar = v; break;
        }
    }
}

int resnet_create(Resnet **out, const ResnetConfig *cfg, Error *err)
{
    *out = NULL;
    if (cfg->num_classes < 1)
        return error_set(err, "num_classes must be >= 1 (got %d)", cfg->num_classes);
    if (cfg->hidden < 0)
        return error_set(err, "hidden must be >= 0 (got %d)", cfg->hidden);
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return error_set(err, "dropout must be in [0, 1) (got %g)", cfg->dropout);
    Resnet *m = calloc(1, sizeof *m);
    if (!m)
        return error_set(err, "out of memory allocating the model");
    m->cfg = *cfg;
    const int keras = cfg->variant == RESNET_KERAS;

    m->stem_conv = add_conv(m, "conv1", "conv1_conv", 7, 2, 3, 3, 64);
    m->stem_bn = add_bn(m, "bn1", "conv1_bn", 64);
    int cin = 64, bi = 0;
    for (int s = 0; s < 4; s++) {
        int f = STAGE_FILTERS[s];
        for (int b = 0; b < STAGE_BLOCKS[s]; b++, bi++) {
            Block *blk = &m->blocks[bi];
            int stride = (b == 0 && s > 0) ? 2 : 1;
            char tv[80], kn[80], base_tv[32], base_k[32];
            snprintf(base_tv, sizeof base_tv, "layer%d.%d", s + 1, b);
            snprintf(base_k, sizeof base_k, "conv%d_block%d", s + 2, b + 1);
#define NAMES(tsuf, ksuf) (snprintf(tv, sizeof tv, "%s.%s", base_tv, tsuf), \
                           snprintf(kn, sizeof kn, "%s_%s", base_k, ksuf), tv), kn
            blk->c1 = add_conv(m, NAMES("conv1", "1_conv"), 1, keras ? stride : 1, 0, cin, f);
            blk->b1 = add_bn(m, NAMES("bn1", "1_bn"), f);
            blk->c2 = add_conv(m, NAMES("conv2", "2_conv"), 3, keras ? 1 : stride, 1, f, f);
            blk->b2 = add_bn(m, NAMES("bn2", "2_bn"), f);
            blk->c3 = add_conv(m, NAMES("conv3", "3_conv"), 1, 1, 0, f, 4 * f);
            blk->b3 = add_bn(m, NAMES("bn3", "3_bn"), 4 * f);
            if (b == 0) {
                blk->cd = add_conv(m, NAMES("downsample.0", "0_conv"), 1, stride, 0, cin, 4 * f);
                blk->bd = add_bn(m, NAMES("downsample.1", "0_bn"), 4 * f);
            } else {
                blk->cd = blk->bd = -1;
            }
#undef NAMES
            cin = 4 * f;
        }
    }
    int head_in = FEATURES;
    m->hidden_fc = -1;
    if (cfg->hidden > 0) {
        m->hidden_fc = add_dense(m, "head.hidden", "head_hidden", FEATURES, cfg->hidden);
        head_in = cfg->hidden;
    }
    m->out_fc = add_dense(m, "fc", "predictions", head_in, cfg->num_classes);

    m->param_data = aligned_alloc(64, m->n_floats * sizeof(float));
    m->grad_data = aligned_alloc(64, m->n_floats * sizeof(float));
    if (!m->param_data || !m->grad_data) {
        size_t nf = m->n_floats;
        resnet_free(m);
        return error_set(err, "out of memory allocating %zu parameters", nf);
    }
    memset(m->param_data, 0, m->n_floats * sizeof(float));
    memset(m->grad_data, 0, m->n_floats * sizeof(float));
    bind_views(m);
    for (int i = 0; i < m->n_layers; i++) {
        Layer *l = &m->layers[i];
        if (l->kind == LAYER_BN)
            for (int c = 0; c < l->cout; c++) {
                l->w[c] = 1.0f;
                l->rvar[c] = 1.0f;
            }
    }
    rng_seed(&m->dropout_rng, 0x5eed);
    resnet_set_trainable_all(m, 1, 1);
    *out = m;
    return 0;
}

void resnet_free(Resnet *m)
{
    if (!m)
        return;
    free(m->param_data);
    free(m->grad_data);
    free(m->fold_data);
    free(m->arena);
    free(m->pool_arg);
    free(m);
}

/* A head dense layer as the variant's framework initialises a new one:
 * torchvision's nn.Linear draws weight and bias from U(-1/sqrt(fan_in),
 * 1/sqrt(fan_in)); Keras's Dense draws its kernel from glorot_uniform,
 * U(-sqrt(6/(fan_in + fan_out)), +), with a zero bias. */
static void init_head_dense(Layer *l, ResnetVariant variant, Rng *r)
{
    size_t n = (size_t)l->cin * l->cout;
    if (variant == RESNET_KERAS) {
        float lim = sqrtf(6.0f / (float)(l->cin + l->cout));
        for (size_t j = 0; j < n; j++) l->w[j] = lim * (2.0f * rng_uniform(r) - 1.0f);
        memset(l->b, 0, (size_t)l->cout * sizeof(float));
    } else {
        float lim = 1.0f / sqrtf((float)l->cin);
        for (size_t j = 0; j < n; j++) l->w[j] = lim * (2.0f * rng_uniform(r) - 1.0f);
        for (int j = 0; j < l->cout; j++) l->b[j] = lim * (2.0f * rng_uniform(r) - 1.0f);
    }
    l->loaded = 0;
}

void resnet_init_head(Resnet *m, uint64_t seed, uint64_t salt)
{
    const int head[2] = {m->hidden_fc, m->out_fc};
    for (int h = 0; h < 2; h++) {
        if (head[h] < 0)
            continue;
        Rng r;
        rng_stream(&r, seed, RNG_HEAD, (uint64_t)h, salt);
        init_head_dense(&m->layers[head[h]], m->cfg.variant, &r);
    }
}

void resnet_init_random(Resnet *m, uint64_t seed)
{
    for (int i = 0; i < m->n_layers; i++) {
        Layer *l = &m->layers[i];
        l->loaded = 0;
        if (i == m->out_fc || i == m->hidden_fc)
            continue;
        if (l->kind == LAYER_CONV) {
            /* torchvision's kaiming_normal_(mode="fan_out"), from the layer's own stream */
            Rng r;
            rng_stream(&r, seed, RNG_INIT, (uint64_t)i, 0);
            float std = sqrtf(2.0f / (float)((size_t)l->k * l->k * l->cout));
            size_t n = (size_t)l->k * l->k * l->cin * l->cout;
            for (size_t j = 0; j < n; j++) l->w[j] = std * rng_normal(&r);
            if (l->b) memset(l->b, 0, (size_t)l->cout * sizeof(float));
        } else {
            for (int c = 0; c < l->cout; c++) {
                l->w[c] = 1.0f; l->b[c] = 0.0f; l->rmean[c] = 0.0f; l->rvar[c] = 1.0f;
            }
        }
    }
    resnet_init_head(m, seed, 0);
}

uint64_t resnet_backbone_fingerprint(const Resnet *m)
{
    uint64_t h = 0xCBF29CE484222325ULL;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        if (p->layer == m->out_fc || p->layer == m->hidden_fc)
            continue;
        const uint32_t *v = (const uint32_t *)(const void *)(m->param_data + p->offset);
        for (size_t j = 0; j < p->numel; j++)
            h = (h ^ v[j]) * 0x100000001B3ULL;
    }
    return h;
}

void resnet_set_trainable_all(Resnet *m, int trainable, int bn_batch_stats)
{
    for (int i = 0; i < m->n_layers; i++) {
        m->layers[i].trainable = trainable;
        m->layers[i].batch_stats = m->layers[i].kind == LAYER_BN && trainable && bn_batch_stats;
    }
}

int resnet_find_layer(const Resnet *m, const char *name)
{
    for (int i = 0; i < m->n_layers; i++)
        if (!strcmp(m->layers[i].name, name) || !strcmp(m->layers[i].keras_name, name))
            return i;
    return -1;
}

int resnet_find_param(const Resnet *m, const char *name)
{
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name))
            return i;
    return -1;
}

size_t resnet_param_count(const Resnet *m)
{
    size_t n = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].role == PARAM_WEIGHT || m->params[i].role == PARAM_BIAS)
            n += m->params[i].numel;
    return n;
}

void resnet_zero_grad(Resnet *m)
{
    memset(m->grad_data, 0, m->n_floats * sizeof(float));
}

/* ---- planning ------------------------------------------------------------ */

typedef struct {
    size_t total;
} ArenaPlan;

/* Reserves n floats (64-byte aligned) and returns the offset. */
static size_t reserve(ArenaPlan *p, size_t n)
{
    size_t off = p->total;
    p->total += (n + 15) & ~(size_t)15;
    return off;
}

static int plan_conv(Layer *l, int n, int h, int w, Error *err)
{
    if (conv_shape_init(&l->shape, n, h, w, l->cin, l->cout, l->k, l->stride, l->pad))
        return error_set(err, "%s: input %dx%d is too small for a %dx%d kernel", l->name, h, w,
                         l->k, l->k);
    return 0;
}

static size_t max_sz(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* Plans activations for `batch` images of size x size. A training plan keeps
 * every activation backward needs; an inference plan keeps only what the next
 * layer reads, in a few rotating buffers (BN, ReLU and the residual add run in
 * place there). */
static int plan(Resnet *m, int batch, int size, int training, size_t *dry_bytes, Error *err)
{
    if (m->arena && m->batch == batch && m->size == size && m->plan_training == training)
        return 0;
    if (batch < 1)
        return error_set(err, "batch size must be >= 1 (got %d)", batch);
    if (size < 32)
        return error_set(err, "input size must be >= 32 (got %d): ResNet50 downsamples 32x", size);
    free(m->arena);
    free(m->pool_arg);
    m->arena = NULL;
    m->pool_arg = NULL;

    /* geometry */
    const int n = batch;
    Layer *L = m->layers;
    if (plan_conv(&L[m->stem_conv], n, size, size, err))
        return -1;
    m->s1 = L[m->stem_conv].shape.oh;
    m->s2 = (m->s1 + 2 - 3) / 2 + 1;
    size_t stem_sz = (size_t)n * m->s1 * m->s1 * 64, pool_sz = (size_t)n * m->s2 * m->s2 * 64;
    size_t sz1[RESNET_BLOCKS], sz2[RESNET_BLOCKS], sz3[RESNET_BLOCKS];
    size_t max_act = max_sz(stem_sz, pool_sz), max1 = 0, max2 = 0, max3 = pool_sz, maxd = 0;
    size_t max_ws = 0;
    int h = m->s2;
    for (int b = 0; b < RESNET_BLOCKS; b++) {
        Block *k = &m->blocks[b];
        k->h = k->w = h;
        if (plan_conv(&L[k->c1], n, h, h, err)) return -1;
        int h1 = L[k->c1].shape.oh;
        if (plan_conv(&L[k->c2], n, h1, h1, err)) return -1;
        int h2 = L[k->c2].shape.oh;
        if (plan_conv(&L[k->c3], n, h2, h2, err)) return -1;
        k->oh = k->ow = L[k->c3].shape.oh;
        if (k->cd >= 0 && plan_conv(&L[k->cd], n, h, h, err)) return -1;
        sz1[b] = (size_t)n * h1 * h1 * L[k->c1].cout;
        sz2[b] = (size_t)n * h2 * h2 * L[k->c2].cout;
        sz3[b] = (size_t)n * k->oh * k->ow * L[k->c3].cout;
        max1 = max_sz(max1, sz1[b]);
        max2 = max_sz(max2, sz2[b]);
        max3 = max_sz(max3, sz3[b]);
        if (k->cd >= 0) maxd = max_sz(maxd, sz3[b]);
        max_act = max_sz(max_act, max_sz(max_sz(sz1[b], sz2[b]), sz3[b]));
        h = k->oh;
    }
    m->feat_hw = h;
    for (int i = 0; i < m->n_layers; i++)
        if (L[i].kind == LAYER_CONV)
            max_ws = max_sz(max_ws, conv_workspace_floats(&L[i].shape));

    /* offsets */
    ArenaPlan ap = {0};
    size_t o_stem_z, o_stem_a, o_pool, o_blk[RESNET_BLOCKS][7], o_g[3];
    if (training) {
        o_stem_z = reserve(&ap, stem_sz);
        o_stem_a = reserve(&ap, stem_sz);
        o_pool = reserve(&ap, pool_sz);
        for (int b = 0; b < RESNET_BLOCKS; b++) {
            o_blk[b][0] = reserve(&ap, sz1[b]); o_blk[b][1] = reserve(&ap, sz1[b]);
            o_blk[b][2] = reserve(&ap, sz2[b]); o_blk[b][3] = reserve(&ap, sz2[b]);
            o_blk[b][4] = reserve(&ap, sz3[b]);
            o_blk[b][5] = m->blocks[b].cd >= 0 ? reserve(&ap, sz3[b]) : 0;
            o_blk[b][6] = reserve(&ap, sz3[b]);
        }
        for (int i = 0; i < 3; i++) o_g[i] = reserve(&ap, max_act);
    } else {
        o_stem_z = o_stem_a = reserve(&ap, stem_sz);
        size_t rot[2] = {reserve(&ap, max3), reserve(&ap, max3)};
        size_t t1 = reserve(&ap, max1), t2 = reserve(&ap, max2), td = reserve(&ap, maxd);
        o_pool = rot[0];
        for (int b = 0; b < RESNET_BLOCKS; b++) {
            o_blk[b][0] = o_blk[b][1] = t1;
            o_blk[b][2] = o_blk[b][3] = t2;
            o_blk[b][4] = o_blk[b][6] = rot[(b + 1) & 1];
            o_blk[b][5] = td;
        }
        o_g[0] = o_g[1] = o_g[2] = td; /* forward's only scratch: the shortcut BN, in place */
    }
    int head_in = m->cfg.hidden > 0 ? m->cfg.hidden : FEATURES;
    size_t o_feat = reserve(&ap, (size_t)n * FEATURES);
    size_t o_hid = reserve(&ap, (size_t)n * (m->cfg.hidden > 0 ? m->cfg.hidden : 1));
    size_t o_drop_in = reserve(&ap, (size_t)n * head_in);
    size_t o_mask = reserve(&ap, (size_t)n * head_in);
    size_t o_logits = reserve(&ap, (size_t)n * m->cfg.num_classes);
    size_t o_probs = reserve(&ap, (size_t)n * m->cfg.num_classes);
    size_t o_dlogits = reserve(&ap, (size_t)n * m->cfg.num_classes);
    size_t o_dfeat = reserve(&ap, (size_t)n * FEATURES);
    size_t o_dhid = reserve(&ap, (size_t)n * head_in);
    size_t o_ws = reserve(&ap, max_ws ? max_ws : 1);
    size_t o_bn[RESNET_MAX_LAYERS];
    for (int i = 0; i < m->n_layers; i++)
        o_bn[i] = L[i].kind == LAYER_BN ? reserve(&ap, 2 * (size_t)L[i].cout) : 0;

    if (dry_bytes) {
        *dry_bytes = ap.total * sizeof(float) + pool_sz * sizeof(int32_t);
        return 0;
    }
    m->arena = aligned_alloc(64, ap.total * sizeof(float));
    m->pool_arg = malloc(pool_sz * sizeof(int32_t));
    if (!m->arena || !m->pool_arg) {
        free(m->arena); free(m->pool_arg);
        m->arena = NULL; m->pool_arg = NULL;
        return error_set(err, "out of memory planning %s activations for batch %d at %dx%d "
                         "(%.1f MiB)", training ? "training" : "inference", batch, size, size,
                         ap.total * 4.0 / 1048576.0);
    }
    memset(m->arena, 0, ap.total * sizeof(float));
    m->arena_floats = ap.total;
    float *A = m->arena;
    m->stem_z = A + o_stem_z; m->stem_a = A + o_stem_a; m->pool = A + o_pool;
    for (int b = 0; b < RESNET_BLOCKS; b++) {
        Block *k = &m->blocks[b];
        k->z1 = A + o_blk[b][0]; k->a1 = A + o_blk[b][1];
        k->z2 = A + o_blk[b][2]; k->a2 = A + o_blk[b][3];
        k->z3 = A + o_blk[b][4]; k->zd = k->cd >= 0 ? A + o_blk[b][5] : NULL;
        k->out = A + o_blk[b][6];
    }
    m->feat = A + o_feat; m->hid = A + o_hid; m->drop_in = A + o_drop_in;
    m->drop_mask = A + o_mask; m->logits = A + o_logits; m->probs = A + o_probs;
    m->dlogits = A + o_dlogits; m->dfeat = A + o_dfeat; m->dhid = A + o_dhid;
    for (int i = 0; i < 3; i++) m->g[i] = A + o_g[i];
    m->ws = A + o_ws;
    for (int i = 0; i < m->n_layers; i++)
        if (L[i].kind == LAYER_BN) {
            L[i].mean = A + o_bn[i];
            L[i].invstd = A + o_bn[i] + L[i].cout;
        }
    m->batch = batch;
    m->size = size;
    m->cur_n = batch;
    m->plan_training = training;
    return 0;
}

int resnet_plan(Resnet *m, int batch, int size, Error *err)
{
    return plan(m, batch, size, 1, NULL, err);
}

int resnet_plan_bytes(Resnet *m, int batch, int size, size_t *bytes, Error *err)
{
    return plan(m, batch, size, 1, bytes, err);
}

int resnet_plan_inference(Resnet *m, int batch, int size, Error *err)
{
    return plan(m, batch, size, 0, NULL, err);
}

/* ---- forward --------------------------------------------------------------- */

static void set_batch(Resnet *m, int n)
{
    if (m->cur_n == n)
        return;
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i].kind == LAYER_CONV)
            m->layers[i].shape.n = n;
    m->cur_n = n;
}

static void conv_fwd(Resnet *m, Layer *l, float *y, const float *x)
{
    conv2d_forward(y, x, l->w, l->b, &l->shape, m->ws);
}

/* A folded conv+BN pair (resnet_fold_frozen): y = act(conv(x, fw) + fb + residual). */
static void conv_fused_fwd(Resnet *m, Layer *l, float *y, const float *x, const float *residual,
                           int relu)
{
    assert(l->folded);
    conv2d_forward_fused(y, x, l->fw, l->fb, residual, relu, &l->shape, m->ws);
}

/* Fills l->mean/l->invstd with the statistics this forward uses, and updates the
 * running statistics when they come from the batch. */
static void bn_stats(Layer *l, const float *x, int64_t rows, int use_batch)
{
    const int c = l->cout;
    if (use_batch) {
        float *var = l->invstd; /* reuse as scratch before inverting */
        batchnorm_stats(l->mean, var, x, rows, c);
        double unbias = rows > 1 ? (double)rows / (double)(rows - 1) : 1.0;
        for (int j = 0; j < c; j++) {
            l->rmean[j] = (1.0f - BN_MOMENTUM) * l->rmean[j] + BN_MOMENTUM * l->mean[j];
            l->rvar[j] = (1.0f - BN_MOMENTUM) * l->rvar[j] +
                         BN_MOMENTUM * (float)(var[j] * unbias);
            l->invstd[j] = 1.0f / sqrtf(var[j] + l->eps);
        }
    } else {
        for (int j = 0; j < c; j++) {
            l->mean[j] = l->rmean[j];
            l->invstd[j] = 1.0f / sqrtf(l->rvar[j] + l->eps);
        }
    }
}

static void bn_fwd(Layer *l, float *y, const float *x, int64_t rows, int training, int relu)
{
    bn_stats(l, x, rows, training && l->batch_stats);
    batchnorm_apply(y, x, l->mean, l->invstd, l->w, l->b, rows, l->cout, relu);
}

static int64_t rows_of(const Layer *conv)
{
    return (int64_t)conv->shape.n * conv->shape.oh * conv->shape.ow;
}

/* Blocks start..15 on their input `in`, then the head. A folded conv writes its
 * BN's output directly and leaves the conv output (z1, z2, z3) and the BN's
 * mean/invstd unwritten: only the frozen prefix folds, and backward never reads
 * it. Inference plan aliasing (z1 == a1, z2 == a2, z3 == out, g[0] == zd, in and
 * out the two rotating buffers): a fused conv writes a1 from in, a2 from a1, zd from
 * in, out from a2 and the residual (zd or in), so none writes a buffer it reads. */
static void forward_rest(Resnet *m, int start, const float *in, int n, int training)
{
    Layer *L = m->layers;
    for (int b = start; b < RESNET_BLOCKS; b++) {
        Block *k = &m->blocks[b];
        Layer *c1 = &L[k->c1], *c2 = &L[k->c2], *c3 = &L[k->c3];
        if (c1->folded) {
            conv_fused_fwd(m, c1, k->a1, in, NULL, 1);
        } else {
            conv_fwd(m, c1, k->z1, in);
            bn_fwd(&L[k->b1], k->a1, k->z1, rows_of(c1), training, 1);
        }
        if (c2->folded) {
            conv_fused_fwd(m, c2, k->a2, k->a1, NULL, 1);
        } else {
            conv_fwd(m, c2, k->z2, k->a1);
            bn_fwd(&L[k->b2], k->a2, k->z2, rows_of(c2), training, 1);
        }
        int64_t rows = rows_of(c3);
        const float *residual = in;
        if (k->cd >= 0 && L[k->cd].folded) {
            conv_fused_fwd(m, &L[k->cd], k->zd, in, NULL, 0);
            residual = k->zd;
        } else if (k->cd >= 0) {
            conv_fwd(m, &L[k->cd], k->zd, in);
            bn_fwd(&L[k->bd], m->g[0], k->zd, rows, training, 0);
            residual = m->g[0];
        }
        if (c3->folded) {
            conv_fused_fwd(m, c3, k->out, k->a2, residual, 1);
        } else {
            conv_fwd(m, c3, k->z3, k->a2);
            Layer *b3 = &L[k->b3];
            bn_stats(b3, k->z3, rows, training && b3->batch_stats);
            batchnorm_apply_add_relu(k->out, k->z3, b3->mean, b3->invstd, b3->w, b3->b,
                                     residual, rows, b3->cout);
        }
        in = k->out;
    }
    if (start < RESNET_BLOCKS) { /* from the head on, m->feat already holds the features */
        int hw = m->feat_hw * m->feat_hw;
        avgpool_forward(m->feat, in, n, hw, FEATURES);
    }
    const float *head_in = m->feat;
    int head_dim = FEATURES;
    if (m->hidden_fc >= 0) {
        Layer *hl = &L[m->hidden_fc];
        dense_forward(m->hid, m->feat, hl->w, hl->b, n, hl->cin, hl->cout);
        relu_forward(m->hid, m->hid, (int64_t)n * hl->cout);
        head_in = m->hid;
        head_dim = hl->cout;
    }
    float p = training ? m->cfg.dropout : 0.0f;
    dropout_forward(m->drop_in, m->drop_mask, head_in, (int64_t)n * head_dim, p,
                    &m->dropout_rng);
    Layer *fc = &L[m->out_fc];
    dense_forward(m->logits, m->drop_in, fc->w, fc->b, n, fc->cin, fc->cout);
}

void resnet_forward(Resnet *m, const float *x, int n, int training)
{
    assert(m->plan_training || !training); /* an inference plan cannot train */
    Layer *L = m->layers;
    set_batch(m, n);
    m->input = x;
    m->trained_forward = training;
    Layer *sc = &L[m->stem_conv];
    if (sc->folded) { /* the inference plan's stem_z == stem_a is never read here */
        conv_fused_fwd(m, sc, m->stem_a, x, NULL, 1);
    } else {
        conv_fwd(m, sc, m->stem_z, x);
        bn_fwd(&L[m->stem_bn], m->stem_a, m->stem_z, rows_of(sc), training, 1);
    }
    maxpool_forward(m->pool, m->pool_arg, m->stem_a, n, m->s1, m->s1, 64, 3, 2, 1, m->s2, m->s2);
    forward_rest(m, 0, m->pool, n, training);
}

int resnet_lowest_trainable_unit(const Resnet *m)
{
    if (m->layers[m->stem_conv].trainable || m->layers[m->stem_bn].trainable)
        return -1;
    for (int b = 0; b < RESNET_BLOCKS; b++) {
        const Block *k = &m->blocks[b];
        const int ids[8] = {k->c1, k->b1, k->c2, k->b2, k->c3, k->b3, k->cd, k->bd};
        for (int i = 0; i < 8; i++)
            if (ids[i] >= 0 && m->layers[ids[i]].trainable)
                return b;
    }
    return RESNET_HEAD_UNIT;
}

/* ---- BatchNorm folding ------------------------------------------------------ */

/* The (conv, BN) pairs of the frozen prefix that fold (see resnet_fold_frozen);
 * returns their number. */
static int frozen_pairs(const Resnet *m, int (*pairs)[2])
{
    int unit = resnet_lowest_trainable_unit(m), np = 0;
    if (unit > -1) {
        pairs[np][0] = m->stem_conv;
        pairs[np++][1] = m->stem_bn;
    }
    for (int b = 0; b < unit && b < RESNET_BLOCKS; b++) {
        const Block *k = &m->blocks[b];
        const int ids[4][2] = {{k->c1, k->b1}, {k->c2, k->b2}, {k->c3, k->b3}, {k->cd, k->bd}};
        for (int i = 0; i < 4; i++)
            if (ids[i][0] >= 0) {
                pairs[np][0] = ids[i][0];
                pairs[np++][1] = ids[i][1];
            }
    }
    int kept = 0; /* a BN that uses batch statistics in training forwards stays as it is */
    for (int i = 0; i < np; i++)
        if (!m->layers[pairs[i][1]].batch_stats) {
            pairs[kept][0] = pairs[i][0];
            pairs[kept++][1] = pairs[i][1];
        }
    return kept;
}

static size_t fold_floats_of(const Layer *conv)
{
    size_t nw = (size_t)conv->k * conv->k * conv->cin * conv->cout;
    return ((nw + 15) & ~(size_t)15) + (((size_t)conv->cout + 15) & ~(size_t)15);
}

/* Writes conv's folded weight and bias into conv->fw and conv->fb. */
static void fold_pair(Layer *conv, const Layer *bn)
{
    const int c = conv->cout;
    assert(c == bn->cout && c <= KERNEL_MAX_CHANNELS);
    float scale[KERNEL_MAX_CHANNELS];
    for (int o = 0; o < c; o++) {
        double s = (double)bn->w[o] / sqrt((double)bn->rvar[o] + (double)bn->eps);
        double bias = conv->has_bias ? (double)conv->b[o] : 0.0;
        scale[o] = (float)s;
        conv->fb[o] = (float)((double)bn->b[o] + (bias - (double)bn->rmean[o]) * s);
    }
    const int64_t rows = (int64_t)conv->k * conv->k * conv->cin; /* HWIO: cout innermost */
    const float *w = conv->w;
    float *fw = conv->fw;
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int o = 0; o < c; o++)
            fw[r * c + o] = w[r * c + o] * scale[o];
}

int resnet_fold_frozen(Resnet *m, Error *err)
{
    resnet_unfold(m);
    int pairs[RESNET_MAX_LAYERS][2];
    const int np = frozen_pairs(m, pairs);
    size_t need = 0;
    for (int i = 0; i < np; i++)
        need += fold_floats_of(&m->layers[pairs[i][0]]);
    /* grow when short; shrink when more than half would sit unused */
    if (need > m->fold_floats || need < m->fold_floats / 2) {
        float *data = NULL;
        if (need && !(data = aligned_alloc(64, need * sizeof(float))))
            return error_set(err, "out of memory folding BatchNorm into %d frozen convolutions "
                             "(%.1f MiB)", np, need * 4.0 / 1048576.0);
        free(m->fold_data);
        m->fold_data = data;
        m->fold_floats = need;
    }
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        Layer *conv = &m->layers[pairs[i][0]];
        size_t nw = (size_t)conv->k * conv->k * conv->cin * conv->cout;
        conv->fw = m->fold_data + off;
        conv->fb = m->fold_data + off + ((nw + 15) & ~(size_t)15);
        off += fold_floats_of(conv);
        fold_pair(conv, &m->layers[pairs[i][1]]);
        conv->folded = 1;
    }
    return 0;
}

void resnet_unfold(Resnet *m)
{
    for (int i = 0; i < m->n_layers; i++) {
        m->layers[i].folded = 0;
        m->layers[i].fw = m->layers[i].fb = NULL;
    }
}

/* The buffer that holds unit's input in a training plan. */
static float *unit_input(const Resnet *m, int unit)
{
    if (unit == RESNET_HEAD_UNIT)
        return m->feat;
    return unit == 0 ? m->pool : m->blocks[unit - 1].out;
}

size_t resnet_unit_input_floats(const Resnet *m, int unit)
{
    if (unit == RESNET_HEAD_UNIT)
        return FEATURES;
    const Block *k = &m->blocks[unit];
    return (size_t)k->h * k->w * m->layers[k->c1].cin;
}

const float *resnet_unit_input(const Resnet *m, int unit)
{
    return unit_input(m, unit);
}

void resnet_forward_from(Resnet *m, int unit, const float *act, int n, int training)
{
    assert(m->plan_training && unit >= 0 && unit <= RESNET_HEAD_UNIT);
    set_batch(m, n);
    m->input = NULL; /* the stem is not run: backward must not reach it */
    m->trained_forward = training;
    float *dst = unit_input(m, unit);
    memcpy(dst, act, (size_t)n * resnet_unit_input_floats(m, unit) * sizeof(float));
    if (unit == RESNET_HEAD_UNIT)
        forward_rest(m, RESNET_BLOCKS, NULL, n, training);
    else
        forward_rest(m, unit, dst, n, training);
}

double resnet_loss(Resnet *m, const int *labels, const float *class_weight, float smoothing)
{
    return softmax_xent(m->dlogits, m->probs, m->logits, labels, class_weight, m->cur_n,
                        m->cfg.num_classes, smoothing);
}

/* ---- backward -------------------------------------------------------------- */

static int layer_has_trainable(const Resnet *m, int li)
{
    return li >= 0 && m->layers[li].trainable;
}

static int block_has_trainable(const Resnet *m, const Block *k)
{
    return layer_has_trainable(m, k->c1) || layer_has_trainable(m, k->b1) ||
           layer_has_trainable(m, k->c2) || layer_has_trainable(m, k->b2) ||
           layer_has_trainable(m, k->c3) || layer_has_trainable(m, k->b3) ||
           layer_has_trainable(m, k->cd) || layer_has_trainable(m, k->bd);
}

static void bn_bwd(Resnet *m, Layer *l, float *dx, const float *dy, const float *relu_out,
                   const float *x, int64_t rows)
{
    batchnorm_backward(dx, l->trainable ? l->dw : NULL, l->trainable ? l->db : NULL, dy,
                       relu_out, x, l->mean, l->invstd, l->w, rows, l->cout,
                       m->trained_forward && l->batch_stats);
}

static void conv_bwd(Resnet *m, Layer *l, float *dx, const float *dy, const float *x,
                     int accumulate)
{
    conv2d_backward(dx, l->trainable ? l->dw : NULL, l->trainable && l->b ? l->db : NULL, dy,
                    x, l->w, &l->shape, m->ws, accumulate);
}

/* Backward through block k. dout (the gradient of k->out) is in *ga and is
 * overwritten. When need_in, the gradient of the block input is left in the
 * buffer returned. Scratch: the three buffers m->g rotate. */
static float *block_backward(Resnet *m, Block *k, const float *in, float *ga, float *gb,
                             float *gc, int need_in)
{
    Layer *L = m->layers;
    Layer *c1 = &L[k->c1], *b1 = &L[k->b1], *c2 = &L[k->c2], *b2 = &L[k->b2];
    Layer *c3 = &L[k->c3], *b3 = &L[k->b3];
    int64_t r1 = rows_of(c1), r2 = rows_of(c2), r3 = rows_of(c3);

    /* which gradients are needed, from the bottom of the block up */
    int need_z1 = c1->trainable || need_in;              /* d z1 */
    int need_a1 = b1->trainable || need_z1;              /* d a1 */
    int need_z2 = c2->trainable || need_a1;
    int need_a2 = b2->trainable || need_z2;
    int need_z3 = c3->trainable || need_a2;
    int main_path = b3->trainable || need_z3;
    int has_down = k->cd >= 0;
    int need_zd = has_down && (L[k->cd].trainable || need_in);
    int down_path = has_down && (L[k->bd].trainable || need_zd);

    relu_mask(ga, k->out, r3 * c3->cout); /* ga = d(pre-activation sum) */
    if (main_path) {
        bn_bwd(m, b3, need_z3 ? gb : NULL, ga, NULL, k->z3, r3);
        if (need_z3) {
            conv_bwd(m, c3, need_a2 ? gc : NULL, gb, k->a2, 0);
            if (need_a2) {
                bn_bwd(m, b2, need_z2 ? gc : NULL, gc, k->a2, k->z2, r2);
                if (need_z2) {
                    conv_bwd(m, c2, need_a1 ? gb : NULL, gc, k->a1, 0);
                    if (need_a1) {
                        bn_bwd(m, b1, need_z1 ? gb : NULL, gb, k->a1, k->z1, r1);
                        if (need_z1)
                            conv_bwd(m, c1, need_in ? gc : NULL, gb, in, 0);
                    }
                }
            }
        }
    }
    if (!need_in) {
        if (down_path) {
            bn_bwd(m, &L[k->bd], need_zd ? gb : NULL, ga, NULL, k->zd, r3);
            if (need_zd)
                conv_bwd(m, &L[k->cd], NULL, gb, in, 0);
        }
        return NULL;
    }
    /* gc holds d(in) from the main path (or nothing if the main path was frozen all
     * the way: then need_in alone made need_z1 true, so it does hold it). */
    if (has_down) {
        bn_bwd(m, &L[k->bd], gb, ga, NULL, k->zd, r3);
        conv_bwd(m, &L[k->cd], gc, gb, in, 1);
    } else {
        int64_t nin = r3 * c3->cout;
        #pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < nin; i++)
            gc[i] += ga[i];
    }
    return gc;
}

/* Whether a conv of a unit >= lowest (-1 the stem) runs folded: backward would then
 * read conv outputs and BN statistics that the forward did not write. */
static int folded_at_or_above(const Resnet *m, int lowest)
{
    if (lowest < 0 && m->layers[m->stem_conv].folded)
        return 1;
    for (int b = lowest < 0 ? 0 : lowest; b < RESNET_BLOCKS; b++) {
        const Block *k = &m->blocks[b];
        if (m->layers[k->c1].folded || m->layers[k->c2].folded || m->layers[k->c3].folded ||
            (k->cd >= 0 && m->layers[k->cd].folded))
            return 1;
    }
    return 0;
}

void resnet_backward(Resnet *m)
{
    assert(m->plan_training);
    Layer *L = m->layers;
    const int n = m->cur_n;

    /* lowest unit with something trainable: -1 stem, 0..15 blocks, 16 head */
    int lowest = RESNET_BLOCKS;
    if (layer_has_trainable(m, m->stem_conv) || layer_has_trainable(m, m->stem_bn))
        lowest = -1;
    else
        for (int b = 0; b < RESNET_BLOCKS; b++)
            if (block_has_trainable(m, &m->blocks[b])) { lowest = b; break; }
    /* the trainable flags changed since resnet_fold_frozen without a refold */
    int stale_fold = folded_at_or_above(m, lowest);
    assert(!stale_fold);
    (void)stale_fold;

    /* head */
    Layer *fc = &L[m->out_fc];
    int head_dim = fc->cin;
    int need_below_fc = m->hidden_fc >= 0 ? (L[m->hidden_fc].trainable ||
                                             lowest < RESNET_BLOCKS)
                                          : lowest < RESNET_BLOCKS;
    dense_backward(need_below_fc ? m->dhid : NULL, fc->trainable ? fc->dw : NULL,
                   fc->trainable ? fc->db : NULL, m->dlogits, m->drop_in, fc->w, n, fc->cin,
                   fc->cout);
    if (!need_below_fc)
        return;
    for (int64_t i = 0; i < (int64_t)n * head_dim; i++)
        m->dhid[i] *= m->drop_mask[i];
    if (m->hidden_fc >= 0) {
        Layer *hl = &L[m->hidden_fc];
        relu_mask(m->dhid, m->hid, (int64_t)n * hl->cout);
        int need_feat = lowest < RESNET_BLOCKS;
        dense_backward(need_feat ? m->dfeat : NULL, hl->trainable ? hl->dw : NULL,
                       hl->trainable ? hl->db : NULL, m->dhid, m->feat, hl->w, n, hl->cin,
                       hl->cout);
        if (!need_feat)
            return;
    } else {
        memcpy(m->dfeat, m->dhid, (size_t)n * FEATURES * sizeof(float));
    }

    float *ga = m->g[0], *gb = m->g[1], *gc = m->g[2];
    int hw = m->feat_hw * m->feat_hw;
    avgpool_backward(ga, m->dfeat, n, hw, FEATURES);
    int stop = lowest < 0 ? 0 : lowest;
    for (int b = RESNET_BLOCKS - 1; b >= stop; b--) {
        Block *k = &m->blocks[b];
        const float *in = b > 0 ? m->blocks[b - 1].out : m->pool;
        int need_in = b > lowest;  /* something trainable lies below this block */
        float *gin = block_backward(m, k, in, ga, gb, gc, need_in);
        if (!need_in)
            break;
        /* the input gradient (always in gc) feeds the next block down; the old
         * output gradient's buffer becomes scratch */
        gc = ga;
        ga = gin;
    }
    if (lowest >= 0)
        return;
    /* stem: ga holds d(pool output) */
    Layer *sc = &L[m->stem_conv], *sb = &L[m->stem_bn];
    maxpool_backward(gb, ga, m->pool_arg, n, m->s1, m->s1, 64, m->s2, m->s2);
    bn_bwd(m, sb, sc->trainable ? gb : NULL, gb, m->stem_a, m->stem_z, rows_of(sc));
    if (sc->trainable)
        conv_bwd(m, sc, NULL, gb, m->input, 0);
}
