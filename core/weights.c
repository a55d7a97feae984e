/*
 * weights.c: mapping between Resnet parameters and weight files (safetensors, and
 * Keras HDF5 through h5weights.c) in the torchvision and Keras naming schemes and
 * layouts (see weights.h).
 */
#include "weights.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5weights.h"
#include "safetensors.h"

const char *weights_naming_name(WeightsNaming n)
{
    return n == NAMING_KERAS ? "keras" : "torch";
}

static const char *keras_suffix(ParamRole role, LayerKind kind)
{
    switch (role) {
    case PARAM_WEIGHT: return kind == LAYER_BN ? "gamma" : "kernel";
    case PARAM_BIAS: return kind == LAYER_BN ? "beta" : "bias";
    case PARAM_RUNNING_MEAN: return "moving_mean";
    case PARAM_RUNNING_VAR: return "moving_variance";
    }
    return "?";
}

void weights_file_name(const Resnet *m, int param, WeightsNaming naming, char *out, size_t len)
{
    const ParamInfo *p = &m->params[param];
    const Layer *l = &m->layers[p->layer];
    if (naming == NAMING_TORCH)
        snprintf(out, len, "%s", p->name);
    else
        snprintf(out, len, "%s.%s", l->keras_name, keras_suffix(p->role, l->kind));
}

/* File shape of parameter p (torch: OIHW / (out,in); keras: as internal). */
static int file_shape(const ParamInfo *p, const Layer *l, WeightsNaming naming, int64_t *shape)
{
    if (naming == NAMING_TORCH && p->role == PARAM_WEIGHT && l->kind == LAYER_CONV) {
        shape[0] = l->cout; shape[1] = l->cin; shape[2] = l->k; shape[3] = l->k;
        return 4;
    }
    if (naming == NAMING_TORCH && p->role == PARAM_WEIGHT && l->kind == LAYER_DENSE) {
        shape[0] = l->cout; shape[1] = l->cin;
        return 2;
    }
    for (int i = 0; i < p->ndim; i++) shape[i] = p->shape[i];
    return p->ndim;
}

/* Copies one tensor between the internal layout and the file layout of naming:
 * to_file != 0 writes dst in file layout from internal src, else the reverse. */
static void convert_layout(float *dst, const float *src, const ParamInfo *p, const Layer *l,
                           WeightsNaming naming, int to_file)
{
    if (naming == NAMING_TORCH && p->role == PARAM_WEIGHT && l->kind == LAYER_CONV) {
        const int co = l->cout, ci = l->cin, k = l->k;
        for (int o = 0; o < co; o++)
            for (int i = 0; i < ci; i++)
                for (int y = 0; y < k; y++)
                    for (int x = 0; x < k; x++) {
                        size_t hwio = (((size_t)y * k + x) * ci + i) * co + o;
                        size_t oihw = (((size_t)o * ci + i) * k + y) * k + x;
                        if (to_file) dst[oihw] = src[hwio];
                        else dst[hwio] = src[oihw];
                    }
    } else if (naming == NAMING_TORCH && p->role == PARAM_WEIGHT && l->kind == LAYER_DENSE) {
        for (int o = 0; o < l->cout; o++)
            for (int i = 0; i < l->cin; i++) {
                size_t io = (size_t)i * l->cout + o, oi = (size_t)o * l->cin + i;
                if (to_file) dst[oi] = src[io];
                else dst[io] = src[oi];
            }
    } else {
        memcpy(dst, src, p->numel * sizeof(float));
    }
}

/* Canonical form of a file tensor name for lookup: Keras h5-style paths
 * ("conv1_conv/conv1_conv/kernel:0", "conv1_conv/kernel") become "conv1_conv.kernel". */
static void normalize_name(const char *in, char *out, size_t len)
{
    snprintf(out, len, "%s", in);
    size_t n = strlen(out);
    if (n > 2 && out[n - 2] == ':' && out[n - 1] == '0')
        out[n - 2] = '\0';
    char *last = strrchr(out, '/');
    if (last) {
        char *first = strchr(out, '/');
        memmove(first + 1, last + 1, strlen(last + 1) + 1);
        *first = '.';
    }
}

/* One tensor of a file, whatever its format: views into the reader's table. */
typedef struct {
    const char *name;     /* as in the file */
    int ndim;
    const int64_t *shape;
} FileTensor;

/* A weights file opened by the reader of its format: a safetensors file (st), or
 * a Keras HDF5 file (h5 not NULL). */
typedef struct {
    SafeTensors st;
    H5Weights *h5;
    int n;
    FileTensor *tensors;
    char (*names)[128]; /* normalized names, parallel to tensors */
    unsigned char *used;
} FileIndex;

static void index_free(FileIndex *fi)
{
    safetensors_close(&fi->st);
    h5weights_close(fi->h5);
    free(fi->tensors);
    free(fi->names);
    free(fi->used);
    memset(fi, 0, sizeof *fi);
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

int weights_file_listable(const char *name)
{
    return name[0] != '.' && (has_suffix(name, ".safetensors") || has_suffix(name, ".h5") ||
                              has_suffix(name, ".hdf5"));
}

/* Opens path with the reader its first bytes call for (the HDF5 signature, else
 * safetensors). */
static int index_open(FileIndex *fi, const char *path, Error *err)
{
    memset(fi, 0, sizeof *fi);
    if (h5weights_is_hdf5(path)) {
        if (h5weights_open(&fi->h5, path, err))
            return -1;
        fi->n = h5weights_count(fi->h5);
    } else if (safetensors_open(&fi->st, path, err)) {
        /* a damaged .h5 would get a safetensors reason it has nothing to do with */
        if ((has_suffix(path, ".h5") || has_suffix(path, ".hdf5")) && access(path, R_OK) == 0)
            error_set(err, "%s: cannot open as HDF5: no HDF5 signature at byte 0, 512, "
                      "1024, ... (and not a safetensors file either)", path);
        return -1;
    } else {
        fi->n = fi->st.n_tensors;
    }
    fi->tensors = calloc((size_t)fi->n + 1, sizeof *fi->tensors);
    fi->names = calloc((size_t)fi->n + 1, sizeof *fi->names);
    fi->used = calloc((size_t)fi->n + 1, 1);
    if (!fi->tensors || !fi->names || !fi->used) {
        index_free(fi);
        return error_set(err, "%s: out of memory", path);
    }
    for (int i = 0; i < fi->n; i++) {
        FileTensor *t = &fi->tensors[i];
        if (fi->h5) {
            const H5Tensor *h = h5weights_tensor(fi->h5, i);
            *t = (FileTensor){h->name, h->ndim, h->shape};
        } else {
            const StTensor *s = &fi->st.tensors[i];
            *t = (FileTensor){s->name, s->ndim, s->shape};
        }
        normalize_name(t->name, fi->names[i], sizeof fi->names[i]);
    }
    return 0;
}

/* Metadata value of key, or NULL (an HDF5 file carries none). */
static const char *index_meta(const FileIndex *fi, const char *key)
{
    return fi->h5 ? NULL : safetensors_meta(&fi->st, key);
}

/* Tensor i as float into out (its element count of floats). */
static int index_read_f32(FileIndex *fi, int i, float *out, const char *path, Error *err)
{
    if (fi->h5)
        return h5weights_read_f32(fi->h5, i, out, err);
    if (safetensors_read_f32(&fi->st, &fi->st.tensors[i], out, err))
        return error_wrap(err, "%s", path);
    return 0;
}

static int index_find(const FileIndex *fi, const char *name)
{
    for (int i = 0; i < fi->n; i++)
        if (!strcmp(fi->names[i], name))
            return i;
    return -1;
}

static void shape_str(char *out, size_t len, const int64_t *shape, int ndim)
{
    size_t o = 0;
    o += (size_t)snprintf(out + o, len - o, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(out + o, len - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < len)
        snprintf(out + o, len - o, "]");
}

/* Features the backbone hands to the head. */
#define BACKBONE_FEATURES 2048

/* The output size of a head dense kernel t (torch (out, in), Keras (in, out)) whose
 * input size must be `in`; a kernel of any other shape is not a head this graph can
 * have, and a class count read from it would be wrong. */
static int dense_dims(const FileTensor *t, int keras, int64_t in, int *out, const char *path,
                      Error *err)
{
    int64_t o = t->ndim == 2 ? t->shape[keras ? 1 : 0] : 0;
    int64_t i = t->ndim == 2 ? t->shape[keras ? 0 : 1] : 0;
    if (t->ndim != 2 || i != in || o < 1 || o > INT_MAX) {
        char got[96];
        shape_str(got, sizeof got, t->shape, t->ndim);
        return error_set(err, "%s: tensor '%s' has shape %s, expected %s with %lld inputs",
                         path, t->name, got, keras ? "(in, out)" : "(out, in)", (long long)in);
    }
    *out = (int)o;
    return 0;
}

static int detect(const FileIndex *fi, const char *path, WeightsInfo *info, Error *err)
{
    memset(info, 0, sizeof *info);
    info->n_tensors = fi->n;
    info->hdf5 = fi->h5 != NULL;
    if (index_find(fi, "conv1.weight") >= 0) {
        info->naming = NAMING_TORCH;
        info->variant = RESNET_TORCHVISION;
    } else if (index_find(fi, "conv1_conv.kernel") >= 0) {
        info->naming = NAMING_KERAS;
        info->variant = RESNET_KERAS;
    } else {
        return error_set(err, "%s: not ResNet50 weights: neither 'conv1.weight' (torchvision) "
                         "nor 'conv1_conv.kernel' (Keras) is in the file", path);
    }
    const char *v = index_meta(fi, "variant");
    if (v && strcmp(v, resnet_variant_name(info->variant)))
        return error_set(err, "%s: metadata says variant '%s' but the tensor names are %s-style",
                         path, v, weights_naming_name(info->naming));
    const char *pp = index_meta(fi, "preprocess");
    snprintf(info->preprocess, sizeof info->preprocess, "%s",
             pp ? pp : (info->variant == RESNET_KERAS ? "caffe" : "torch"));
    const char *classes = index_meta(fi, "classes");
    if (classes && !(info->classes = strdup(classes)))
        return error_set(err, "%s: out of memory", path);

    /* head: the output layer, and a hidden layer before it when present */
    int keras = info->naming == NAMING_KERAS;
    int fc = index_find(fi, keras ? "predictions.kernel" : "fc.weight");
    int hid = index_find(fi, keras ? "head_hidden.kernel" : "head.hidden.weight");
    if (fc >= 0) {
        int64_t in = BACKBONE_FEATURES;
        if (hid >= 0) {
            if (dense_dims(&fi->tensors[hid], keras, in, &info->head_hidden, path, err))
                return -1;
            in = info->head_hidden;
        }
        if (dense_dims(&fi->tensors[fc], keras, in, &info->head_classes, path, err))
            return -1;
        info->has_head = 1;
    }
    return 0;
}

void weights_info_free(WeightsInfo *info)
{
    if (!info)
        return;
    free(info->classes);
    info->classes = NULL;
}

int weights_probe(const char *path, WeightsInfo *info, Error *err)
{
    FileIndex fi;
    if (index_open(&fi, path, err))
        return -1;
    int rc = detect(&fi, path, info, err);
    if (rc == 0) {
        ResnetConfig cfg = {info->variant, info->has_head ? info->head_classes : 1,
                            info->head_hidden, 0.0f};
        Resnet *m = NULL;
        if (resnet_create(&m, &cfg, err)) {
            error_wrap(err, "%s", path);
            weights_info_free(info);
            index_free(&fi);
            return -1;
        }
        info->n_params = resnet_param_count(m);
        if (!info->has_head) {
            const Layer *fc = &m->layers[m->out_fc];
            info->n_params -= (size_t)fc->cin * fc->cout + fc->cout;
        }
        resnet_free(m);
    } else {
        weights_info_free(info);
    }
    index_free(&fi);
    return rc;
}

static int is_head_layer(const Resnet *m, int layer)
{
    return layer == m->out_fc || layer == m->hidden_fc;
}

static int is_ignored(const char *name)
{
    const char *s = strstr(name, "num_batches_tracked");
    return s && s[strlen("num_batches_tracked")] == '\0';
}

int weights_load(Resnet *m, const char *path, int load_head, Error *err)
{
    FileIndex fi;
    WeightsInfo info = {0};
    float *staged = NULL, *tmp = NULL;
    int rc = -1;
    if (index_open(&fi, path, err))
        return -1;
    if (detect(&fi, path, &info, err))
        goto fail;
    if (info.variant != m->cfg.variant) {
        error_set(err, "%s: holds %s-variant weights but the model is %s", path,
                  resnet_variant_name(info.variant), resnet_variant_name(m->cfg.variant));
        goto fail;
    }
    if (load_head && !info.has_head) {
        error_set(err, "%s: has no classifier head ('%s') to load", path,
                  info.naming == NAMING_KERAS ? "predictions.kernel" : "fc.weight");
        goto fail;
    }
    /* stage every tensor first so that a bad file leaves m untouched; tmp holds one
     * tensor in the file's layout, and the largest is a backbone conv (3x3x512x512)
     * or, with many classes or hidden units, a head kernel */
    size_t max_numel = 0;
    for (int pi = 0; pi < m->n_params; pi++)
        if (m->params[pi].numel > max_numel)
            max_numel = m->params[pi].numel;
    staged = malloc(m->n_floats * sizeof(float));
    tmp = malloc(max_numel * sizeof(float));
    if (!staged || !tmp) {
        error_set(err, "%s: out of memory", path);
        goto fail;
    }
    memcpy(staged, m->param_data, m->n_floats * sizeof(float));
    for (int pi = 0; pi < m->n_params; pi++) {
        const ParamInfo *p = &m->params[pi];
        const Layer *l = &m->layers[p->layer];
        if (is_head_layer(m, p->layer) && !load_head)
            continue;
        char name[128];
        weights_file_name(m, pi, info.naming, name, sizeof name);
        int ti = index_find(&fi, name);
        if (ti < 0) {
            error_set(err, "%s: tensor '%s' is missing", path, name);
            goto fail;
        }
        fi.used[ti] = 1;
        const FileTensor *t = &fi.tensors[ti];
        int64_t want[4];
        int nd = file_shape(p, l, info.naming, want);
        int same = t->ndim == nd;
        for (int d = 0; same && d < nd; d++)
            same = t->shape[d] == want[d];
        if (!same) {
            char got_s[96], want_s[96];
            shape_str(got_s, sizeof got_s, t->shape, t->ndim);
            shape_str(want_s, sizeof want_s, want, nd);
            error_set(err, "%s: tensor '%s' has shape %s, expected %s", path, t->name, got_s,
                      want_s);
            goto fail;
        }
        if (index_read_f32(&fi, ti, tmp, path, err))
            goto fail;
        convert_layout(staged + p->offset, tmp, p, l, info.naming, 0);
    }
    for (int i = 0; i < fi.n; i++) {
        if (fi.used[i] || is_ignored(fi.names[i]))
            continue;
        const char *nm = fi.names[i];
        int head_name = !strncmp(nm, "fc.", 3) || !strncmp(nm, "predictions.", 12) ||
                        !strncmp(nm, "head.", 5) || !strncmp(nm, "head_hidden.", 12);
        if (head_name && !load_head)
            continue;
        error_set(err, "%s: unexpected tensor '%s' (not part of a %s ResNet50%s)", path,
                  fi.tensors[i].name, resnet_variant_name(info.variant),
                  load_head ? " with this head" : "");
        goto fail;
    }
    memcpy(m->param_data, staged, m->n_floats * sizeof(float));
    for (int i = 0; i < m->n_layers; i++)
        if (load_head || !is_head_layer(m, i))
            m->layers[i].loaded = 1;
    rc = 0;
fail:
    free(staged);
    free(tmp);
    weights_info_free(&info);
    index_free(&fi);
    return rc;
}

int weights_save(const Resnet *m, const char *path, WeightsNaming naming, WeightsSource source,
                 const char *preprocess, const char *const *meta_kv, int n_meta, Error *err)
{
    /* readers take the variant from the naming (weights.h): any other pairing makes
     * a file whose metadata contradicts its names, which no reader accepts */
    if ((naming == NAMING_KERAS) != (m->cfg.variant == RESNET_KERAS))
        return error_set(err, "%s: cannot write a %s-variant model with %s naming: the "
                         "naming decides the variant when the file is read", path,
                         resnet_variant_name(m->cfg.variant), weights_naming_name(naming));
    StEntry *entries = calloc((size_t)m->n_params, sizeof *entries);
    char (*names)[128] = calloc((size_t)m->n_params, sizeof *names);
    float *data = malloc(m->n_floats * sizeof(float));
    const char **meta = calloc((size_t)(n_meta + 3) * 2, sizeof *meta);
    int rc = -1, ne = 0;
    if (!entries || !names || !data || !meta) {
        error_set(err, "%s: out of memory", path);
        goto done;
    }
    const float *src = source == WEIGHTS_GRADS ? m->grad_data : m->param_data;
    for (int pi = 0; pi < m->n_params; pi++) {
        const ParamInfo *p = &m->params[pi];
        const Layer *l = &m->layers[p->layer];
        if (source == WEIGHTS_GRADS &&
            (p->role == PARAM_RUNNING_MEAN || p->role == PARAM_RUNNING_VAR))
            continue;
        StEntry *e = &entries[ne++];
        weights_file_name(m, pi, naming, names[pi], sizeof names[pi]);
        e->name = names[pi];
        e->ndim = file_shape(p, l, naming, e->shape);
        convert_layout(data + p->offset, src + p->offset, p, l, naming, 1);
        e->data = data + p->offset;
    }
    int nm = 0;
    meta[nm++] = "format"; meta[nm++] = naming == NAMING_KERAS ? "keras" : "pt";
    meta[nm++] = "variant"; meta[nm++] = resnet_variant_name(m->cfg.variant);
    meta[nm++] = "preprocess";
    meta[nm++] = preprocess ? preprocess : (m->cfg.variant == RESNET_KERAS ? "caffe" : "torch");
    for (int i = 0; i < 2 * n_meta; i++)
        meta[nm++] = meta_kv[i];
    rc = safetensors_write(path, entries, ne, meta, nm / 2, err);
done:
    free(entries);
    free(names);
    free(data);
    free(meta);
    return rc;
}
