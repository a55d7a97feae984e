/*
 * test_weights.c: core/weights.c against the torchvision and Keras ResNet50 layouts.
 *
 * - Sizes: 25,557,032 parameters and 267 (+53 num_batches_tracked = 320) state-dict
 *   entries for torchvision; for Keras 25,583,592 weights and biases, which with the
 *   53,120 BN moving statistics make the 25,636,712 of Keras's model.summary().
 * - Round trips in both namings are bit-exact, with a hidden head layer and with
 *   heads larger than the biggest backbone tensor; weights_probe describes files.
 * - Layouts in the file: torch conv OIHW and dense (out, in), Keras HWIO and (in, out),
 *   checked element by element against the model's internal HWIO / (in, out).
 * - Backbone-only files and heads of another class count.
 * - Every rejected file (missing, misshapen, unexpected tensors, truncated, not
 *   safetensors, empty, absent, wrong variant, contradicting metadata) fails with a
 *   message naming the problem and leaves the model's parameters bit-identical.
 * - Accepted variations: Keras h5-style names, I64 num_batches_tracked entries, F16
 *   and BF16 data (written here byte by byte, independently of core/safetensors.c).
 * - Keras 2 HDF5 files (written here with libhdf5's C API as save_weights lays them
 *   out): probed and loaded bit-exactly like safetensors, found by their signature
 *   whatever their name; a tensor whose data cannot be read fails the load naming it
 *   and leaves the model untouched; threads probing while another loads all succeed
 *   (core/h5weights.c serialises libhdf5). tests/tools/test_h5_native.py compares the
 *   reader with tools/h5_to_safetensors.py on files that h5py writes.
 *
 * Every model is filled with seeded random values in every tensor (BN statistics and
 * biases included) so that a swapped, transposed or skipped tensor changes the result.
 */
#include "testutil.h"

#include <dirent.h>
#include <hdf5.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resnet.h"
#include "safetensors.h"
#include "weights.h"

#define TV_PARAMS 25557032u
/* Keras's model.summary() for ResNet50 prints "Total params: 25,636,712" and
 * "Non-trainable params: 53,120": Keras counts the BN moving statistics as
 * parameters. resnet_param_count counts weights and biases only (as torchvision's
 * 25,557,032 does), which is Keras's trainable count. */
#define KERAS_PARAMS 25583592u
#define KERAS_TOTAL 25636712u
#define TV_ENTRIES 267
#define BN_LAYERS 53

/* ---- models ------------------------------------------------------------------ */

static Resnet *model_new(ResnetVariant v, int classes, int hidden)
{
    Error err;
    ResnetConfig cfg = {v, classes, hidden, 0.0f};
    Resnet *m = NULL;
    if (resnet_create(&m, &cfg, &err))
        fail_msg("resnet_create: %s", err.msg);
    return m;
}

/* resnet_init_random, then every tensor that init leaves constant (BN gamma/beta,
 * running statistics, biases) gets its own seeded values too. */
static void randomize(Resnet *m, uint64_t seed)
{
    resnet_init_random(m, seed);
    for (int pi = 0; pi < m->n_params; pi++) {
        const ParamInfo *p = &m->params[pi];
        const Layer *l = &m->layers[p->layer];
        if (p->role == PARAM_WEIGHT && l->kind != LAYER_BN)
            continue;
        float lo = p->role == PARAM_RUNNING_VAR ? 0.25f : -1.0f;
        testutil_fill_uniform(m->param_data + p->offset, p->numel, seed * 1000 + (uint64_t)pi,
                              lo, 2.0f);
    }
}

static int is_head(const Resnet *m, int pi)
{
    int l = m->params[pi].layer;
    return l == m->out_fc || l == m->hidden_fc;
}

/* Asserts that the parameters of a selected by which (0 backbone, 1 head, 2 all) are
 * bit-identical to b's tensors of the same name, naming the first one that differs. */
enum { BACKBONE, HEAD, ALL };
static void assert_params_same(const Resnet *a, const Resnet *b, int which, const char *what)
{
    if (which == ALL)
        assert_int_equal(a->n_params, b->n_params);
    for (int pi = 0; pi < a->n_params; pi++) {
        int h = is_head(a, pi);
        if ((which == BACKBONE && h) || (which == HEAD && !h))
            continue;
        const ParamInfo *p = &a->params[pi];
        int bi = resnet_find_param(b, p->name);
        if (bi < 0)
            fail_msg("%s: tensor %s is not in the other model", what, p->name);
        assert_int_equal(p->numel, b->params[bi].numel);
        if (memcmp(a->param_data + p->offset, b->param_data + b->params[bi].offset,
                   p->numel * sizeof(float)))
            fail_msg("%s: tensor %s differs", what, p->name);
    }
}

/* ---- files -------------------------------------------------------------------- */

static long file_size(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (long)sb.st_size;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    long n = file_size(path);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* The tensors of a file as owned F32 copies, to be edited and written again. */
typedef struct {
    int n, cap;
    StEntry *e;
    char **names;
    float **data;
} TensorList;

static void tl_add(TensorList *tl, const char *name, int ndim, const int64_t *shape,
                   float *data /* owned by tl */)
{
    if (tl->n == tl->cap) {
        tl->cap = tl->cap ? 2 * tl->cap : 512;
        tl->e = realloc(tl->e, (size_t)tl->cap * sizeof *tl->e);
        tl->names = realloc(tl->names, (size_t)tl->cap * sizeof *tl->names);
        tl->data = realloc(tl->data, (size_t)tl->cap * sizeof *tl->data);
        assert_true(tl->e && tl->names && tl->data);
    }
    StEntry *e = &tl->e[tl->n];
    memset(e, 0, sizeof *e);
    tl->names[tl->n] = strdup(name);
    tl->data[tl->n] = data;
    e->name = tl->names[tl->n];
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        e->shape[d] = shape[d];
    e->data = data;
    tl->n++;
}

static void tl_load(TensorList *tl, const char *path)
{
    Error err;
    SafeTensors st;
    memset(tl, 0, sizeof *tl);
    if (safetensors_open(&st, path, &err))
        fail_msg("%s", err.msg);
    for (int i = 0; i < st.n_tensors; i++) {
        const StTensor *t = &st.tensors[i];
        float *d = malloc((size_t)safetensors_numel(t) * sizeof(float) + 4);
        assert_non_null(d);
        if (safetensors_read_f32(&st, t, d, &err))
            fail_msg("%s", err.msg);
        tl_add(tl, t->name, t->ndim, t->shape, d);
    }
    safetensors_close(&st);
}

static int tl_index(const TensorList *tl, const char *name)
{
    for (int i = 0; i < tl->n; i++)
        if (!strcmp(tl->names[i], name))
            return i;
    fail_msg("tensor %s not in the list", name);
    return -1;
}

static void tl_remove(TensorList *tl, const char *name)
{
    int i = tl_index(tl, name);
    free(tl->names[i]);
    free(tl->data[i]);
    memmove(&tl->e[i], &tl->e[i + 1], (size_t)(tl->n - i - 1) * sizeof *tl->e);
    memmove(&tl->names[i], &tl->names[i + 1], (size_t)(tl->n - i - 1) * sizeof *tl->names);
    memmove(&tl->data[i], &tl->data[i + 1], (size_t)(tl->n - i - 1) * sizeof *tl->data);
    tl->n--;
}

static void tl_rename(TensorList *tl, int i, const char *name)
{
    free(tl->names[i]);
    tl->names[i] = strdup(name);
    tl->e[i].name = tl->names[i];
}

static void tl_write(const TensorList *tl, const char *path, const char *const *meta, int n_meta)
{
    Error err;
    if (safetensors_write(path, tl->e, tl->n, meta, n_meta, &err))
        fail_msg("%s", err.msg);
}

static void tl_free(TensorList *tl)
{
    for (int i = 0; i < tl->n; i++) {
        free(tl->names[i]);
        free(tl->data[i]);
    }
    free(tl->e);
    free(tl->names);
    free(tl->data);
    memset(tl, 0, sizeof *tl);
}

/* A safetensors writer for any dtype, independent of core/safetensors.c, following
 * the format: u64 LE header length, JSON header padded with spaces to a multiple of
 * 8, then the data in entry order. Names must not need JSON escaping. */
typedef struct {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[4];
    const void *bytes;
    size_t nbytes;
} RawEntry;

static void raw_write(const char *path, const RawEntry *e, int n, const char *meta_json)
{
    size_t cap = 256 + (size_t)n * 200, len = 0;
    char *h = malloc(cap);
    assert_non_null(h);
    len += (size_t)snprintf(h + len, cap - len, "{");
    if (meta_json)
        len += (size_t)snprintf(h + len, cap - len, "\"__metadata__\":%s", meta_json);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(h + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                (i || meta_json) ? "," : "", e[i].name, e[i].dtype);
        for (int d = 0; d < e[i].ndim; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "",
                                    (long long)e[i].shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%llu,%llu]}",
                                (unsigned long long)off,
                                (unsigned long long)(off + e[i].nbytes));
        off += e[i].nbytes;
        assert_true(len < cap - 8);
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8)
        h[len++] = ' ';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char n8[8];
    for (int i = 0; i < 8; i++)
        n8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    assert_int_equal(fwrite(n8, 1, 8, f), 8);
    assert_int_equal(fwrite(h, 1, len, f), len);
    for (int i = 0; i < n; i++)
        if (e[i].nbytes)
            assert_int_equal(fwrite(e[i].bytes, 1, e[i].nbytes, f), e[i].nbytes);
    assert_int_equal(fclose(f), 0);
    free(h);
}

/* IEEE binary16 and bfloat16, round to nearest even (subnormals included). */
static uint32_t f32_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static float bits_f32(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

static uint16_t f32_to_f16(float x)
{
    uint32_t u = f32_bits(x), sign = (u >> 16) & 0x8000u;
    float a = fabsf(x);
    if (a >= 65520.0f)
        return (uint16_t)(sign | 0x7c00u);
    if (a < 6.103515625e-05f) { /* subnormal: units of 2^-24 */
        float q = nearbyintf(a * 16777216.0f);
        return (uint16_t)(sign | (uint32_t)q);
    }
    uint32_t m = u & 0x7fffffffu;
    uint32_t rounded = m + 0xfffu + ((m >> 13) & 1u); /* RNE at bit 13 */
    return (uint16_t)(sign | ((rounded >> 13) - ((127u - 15u) << 10)));
}

static float f16_to_f32(uint16_t h)
{
    int e = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float v = e == 0 ? ldexpf((float)mant, -24) : ldexpf((float)(mant | 0x400), e - 25);
    return (h & 0x8000) ? -v : v; /* no infinities in these tests' data */
}

static uint16_t f32_to_bf16(float x)
{
    uint32_t u = f32_bits(x);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

/* ---- fixture: a torchvision and a Keras model and their files ------------------- */

typedef struct {
    Resnet *tv, *keras;     /* the models the files were written from */
    char tv_path[4096], keras_path[4096];
    char keras_h5_path[4096]; /* keras as a Keras 2 HDF5 file, once a test asks (keras_h5) */
} Fixture;

static int group_setup(void **state)
{
    Error err;
    Fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->tv = model_new(RESNET_TORCHVISION, 1000, 0);
    fx->keras = model_new(RESNET_KERAS, 1000, 0);
    randomize(fx->tv, 11);
    randomize(fx->keras, 12);
    snprintf(fx->tv_path, sizeof fx->tv_path, "%s", testutil_tmp_path("tv.safetensors"));
    snprintf(fx->keras_path, sizeof fx->keras_path, "%s",
             testutil_tmp_path("keras.safetensors"));
    if (weights_save(fx->tv, fx->tv_path, NAMING_TORCH, WEIGHTS_PARAMS, NULL, NULL, 0, &err) ||
        weights_save(fx->keras, fx->keras_path, NAMING_KERAS, WEIGHTS_PARAMS, NULL, NULL, 0,
                     &err))
        fail_msg("%s", err.msg);
    *state = fx;
    return 0;
}

/* The scratch directory (testutil_tmpdir) and its weight files are removed when
 * the process exits. */
static int group_teardown(void **state)
{
    Fixture *fx = *state;
    resnet_free(fx->tv);
    resnet_free(fx->keras);
    free(fx);
    return 0;
}

/* A fresh model of the fixture's shape with other random values (seed 99). */
static Resnet *fresh_like(const Resnet *src)
{
    Resnet *m = model_new(src->cfg.variant, src->cfg.num_classes, src->cfg.hidden);
    randomize(m, 99);
    return m;
}

/* Loading path into m must fail with every needle in the message, leaving m as it was. */
static void expect_load_error(Resnet *m, const char *path, int load_head,
                              const char *const *needles, int n_needles)
{
    Error err;
    memset(&err, 0, sizeof err);
    float *before = malloc(m->n_floats * sizeof(float));
    assert_non_null(before);
    memcpy(before, m->param_data, m->n_floats * sizeof(float));
    int rc = weights_load(m, path, load_head, &err);
    if (rc == 0)
        fail_msg("loading %s succeeded, expected an error with '%s'", path, needles[0]);
    print_message("  error: %s\n", err.msg);
    for (int i = 0; i < n_needles; i++)
        if (!strstr(err.msg, needles[i]))
            fail_msg("error message lacks '%s': %s", needles[i], err.msg);
    if (memcmp(before, m->param_data, m->n_floats * sizeof(float)))
        fail_msg("the failed load of %s changed the model's parameters", path);
    free(before);
}
#define EXPECT_LOAD_ERROR(m, path, load_head, ...)                                     \
    do {                                                                               \
        const char *const needles_[] = {__VA_ARGS__};                                  \
        expect_load_error(m, path, load_head, needles_,                                \
                          (int)(sizeof needles_ / sizeof needles_[0]));                \
    } while (0)

/* ---- sizes ---------------------------------------------------------------------- */

static void test_param_counts(void **state)
{
    (void)state;
    Resnet *tv = model_new(RESNET_TORCHVISION, 1000, 0);
    assert_int_equal(resnet_param_count(tv), TV_PARAMS);
    size_t counted = 0;
    int bn = 0, entries = 0;
    for (int pi = 0; pi < tv->n_params; pi++) {
        if (tv->params[pi].role == PARAM_WEIGHT || tv->params[pi].role == PARAM_BIAS)
            counted += tv->params[pi].numel;
        entries++;
    }
    for (int li = 0; li < tv->n_layers; li++)
        bn += tv->layers[li].kind == LAYER_BN;
    assert_int_equal(counted, TV_PARAMS);
    assert_int_equal(entries, TV_ENTRIES);
    assert_int_equal(bn, BN_LAYERS);
    assert_int_equal(entries + bn, 320); /* torchvision's state_dict() length */

    Resnet *k = model_new(RESNET_KERAS, 1000, 0);
    assert_int_equal(resnet_param_count(k), KERAS_PARAMS);
    assert_int_equal(k->n_params, TV_ENTRIES + 53); /* + one bias per conv */
    /* the difference is exactly the 53 conv biases: sum of conv output channels */
    size_t biases = 0;
    for (int li = 0; li < k->n_layers; li++)
        if (k->layers[li].kind == LAYER_CONV)
            biases += (size_t)k->layers[li].cout;
    assert_int_equal(biases, KERAS_PARAMS - TV_PARAMS);
    size_t stats = 0;
    for (int pi = 0; pi < k->n_params; pi++)
        if (k->params[pi].role == PARAM_RUNNING_MEAN || k->params[pi].role == PARAM_RUNNING_VAR)
            stats += k->params[pi].numel;
    assert_int_equal(stats, 53120);
    assert_int_equal(resnet_param_count(k) + stats, KERAS_TOTAL);
    resnet_free(tv);
    resnet_free(k);
}

/* ---- round trips and probe ------------------------------------------------------ */

static void test_round_trip_torch(void **state)
{
    Fixture *fx = *state;
    Error err;
    Resnet *m = fresh_like(fx->tv);
    if (weights_load(m, fx->tv_path, 1, &err))
        fail_msg("%s", err.msg);
    assert_params_same(m, fx->tv, ALL, "torch round trip");
    resnet_free(m);
}

static void test_round_trip_keras(void **state)
{
    Fixture *fx = *state;
    Error err;
    Resnet *m = fresh_like(fx->keras);
    if (weights_load(m, fx->keras_path, 1, &err))
        fail_msg("%s", err.msg);
    assert_params_same(m, fx->keras, ALL, "keras round trip");
    resnet_free(m);
}

static void test_probe_defaults(void **state)
{
    Fixture *fx = *state;
    Error err;
    WeightsInfo info;
    if (weights_probe(fx->tv_path, &info, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(info.variant, RESNET_TORCHVISION);
    assert_int_equal(info.naming, NAMING_TORCH);
    assert_string_equal(info.preprocess, "torch");
    assert_int_equal(info.has_head, 1);
    assert_int_equal(info.head_classes, 1000);
    assert_int_equal(info.head_hidden, 0);
    assert_int_equal(info.n_tensors, TV_ENTRIES);
    assert_int_equal(info.n_params, TV_PARAMS);
    assert_null(info.classes);

    if (weights_probe(fx->keras_path, &info, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(info.variant, RESNET_KERAS);
    assert_int_equal(info.naming, NAMING_KERAS);
    assert_string_equal(info.preprocess, "caffe");
    assert_int_equal(info.has_head, 1);
    assert_int_equal(info.head_classes, 1000);
    assert_int_equal(info.head_hidden, 0);
    assert_int_equal(info.n_tensors, TV_ENTRIES + 53);
    assert_int_equal(info.n_params, KERAS_PARAMS);
}

/* A small head with a hidden layer, a preprocess value and class names, both namings. */
static void check_custom_head(ResnetVariant v, WeightsNaming naming, const char *file)
{
    Error err;
    WeightsInfo info;
    const char *meta[] = {"classes", "[\"cat\",\"dog\",\"emu\"]", "note", "x"};
    Resnet *src = model_new(v, 3, 64);
    randomize(src, 21 + (uint64_t)v);
    const char *path = testutil_tmp_path(file);
    if (weights_save(src, path, naming, WEIGHTS_PARAMS, "tf", meta, 2, &err))
        fail_msg("%s", err.msg);
    if (weights_probe(path, &info, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(info.variant, v);
    assert_int_equal(info.naming, naming);
    assert_string_equal(info.preprocess, "tf");
    assert_int_equal(info.has_head, 1);
    assert_int_equal(info.head_classes, 3);
    assert_int_equal(info.head_hidden, 64);
    assert_int_equal(info.n_tensors, src->n_params);
    assert_int_equal(info.n_params, resnet_param_count(src));
    assert_int_equal(info.n_params, (v == RESNET_KERAS ? KERAS_PARAMS : TV_PARAMS) -
                                        (2048u * 1000 + 1000) + (2048u * 64 + 64) + (64 * 3 + 3));
    assert_string_equal(info.classes, "[\"cat\",\"dog\",\"emu\"]");
    weights_info_free(&info);

    Resnet *m = fresh_like(src);
    if (weights_load(m, path, 1, &err))
        fail_msg("%s", err.msg);
    assert_params_same(m, src, ALL, "custom head round trip");
    resnet_free(m);
    resnet_free(src);
}

/* 1000 ImageNet-length class names (about 20 KB of metadata) come back whole. */
static void test_probe_long_class_list(void **state)
{
    (void)state;
    Error err;
    WeightsInfo info;
    size_t cap = 1000 * 32 + 8, len = 0;
    char *classes = malloc(cap);
    classes[len++] = '[';
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(classes + len, cap - len, "%s\"imagenet_class_%04d\"",
                                i ? "," : "", i);
    classes[len++] = ']';
    classes[len] = '\0';
    const char *meta[] = {"classes", classes};
    Resnet *src = model_new(RESNET_TORCHVISION, 1000, 0);
    const char *path = testutil_tmp_path("long-classes.safetensors");
    if (weights_save(src, path, NAMING_TORCH, WEIGHTS_PARAMS, NULL, meta, 1, &err))
        fail_msg("%s", err.msg);
    if (weights_probe(path, &info, &err))
        fail_msg("%s", err.msg);
    assert_non_null(info.classes);
    assert_int_equal(strlen(info.classes), len);
    assert_string_equal(info.classes, classes);
    weights_info_free(&info);
    weights_info_free(&info); /* idempotent */
    free(classes);
    resnet_free(src);
}

static void test_probe_custom_head_torch(void **state)
{
    (void)state;
    check_custom_head(RESNET_TORCHVISION, NAMING_TORCH, "custom_tv.safetensors");
}

static void test_probe_custom_head_keras(void **state)
{
    (void)state;
    check_custom_head(RESNET_KERAS, NAMING_KERAS, "custom_keras.safetensors");
}

/* Heads whose tensors are larger than any backbone tensor (3x3x512x512 = 2.4M floats):
 * 2048 x 2500 hidden and 2500 x 3000 output. */
static void test_round_trip_large_head(void **state)
{
    (void)state;
    Error err;
    Resnet *src = model_new(RESNET_TORCHVISION, 3000, 2500);
    randomize(src, 31);
    const char *path = testutil_tmp_path("large_head.safetensors");
    if (weights_save(src, path, NAMING_TORCH, WEIGHTS_PARAMS, NULL, NULL, 0, &err))
        fail_msg("%s", err.msg);
    Resnet *m = fresh_like(src);
    if (weights_load(m, path, 1, &err))
        fail_msg("%s", err.msg);
    assert_params_same(m, src, ALL, "large head round trip");
    resnet_free(m);
    resnet_free(src);
}

/* A Keras model written with torch names (or the reverse) would carry metadata that
 * contradicts its names, a file no reader accepts: the writer refuses it. */
static void test_save_naming_must_match_variant(void **state)
{
    Fixture *fx = *state;
    Error err;
    const char *path = testutil_tmp_path("mismatch.safetensors");
    assert_int_not_equal(weights_save(fx->keras, path, NAMING_TORCH, WEIGHTS_PARAMS, NULL,
                                      NULL, 0, &err), 0);
    print_message("  error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "naming"));
    assert_int_not_equal(weights_save(fx->tv, path, NAMING_KERAS, WEIGHTS_PARAMS, NULL, NULL,
                                      0, &err), 0);
    struct stat sb;
    assert_int_not_equal(stat(path, &sb), 0); /* nothing written */
}

static void test_save_grads(void **state)
{
    (void)state;
    Error err;
    Resnet *m = model_new(RESNET_TORCHVISION, 10, 0);
    testutil_fill_uniform(m->grad_data, m->n_floats, 41, -1.0f, 1.0f);
    const char *path = testutil_tmp_path("grads.safetensors");
    if (weights_save(m, path, NAMING_TORCH, WEIGHTS_GRADS, NULL, NULL, 0, &err))
        fail_msg("%s", err.msg);
    SafeTensors st;
    if (safetensors_open(&st, path, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(st.n_tensors, TV_ENTRIES - 2 * BN_LAYERS);
    assert_null(safetensors_find(&st, "bn1.running_mean"));
    const Layer *l = &m->layers[resnet_find_layer(m, "layer1.0.bn2")];
    const StTensor *t = safetensors_find(&st, "layer1.0.bn2.bias");
    assert_non_null(t);
    float got[64];
    if (safetensors_read_f32(&st, t, got, &err))
        fail_msg("%s", err.msg);
    assert_memory_equal(got, l->db, sizeof got);
    safetensors_close(&st);
    resnet_free(m);
}

/* ---- layouts -------------------------------------------------------------------- */

static float *read_named(const SafeTensors *st, const char *name, int ndim, const int64_t *shape)
{
    Error err;
    const StTensor *t = safetensors_find(st, name);
    if (!t)
        fail_msg("tensor %s not in the file", name);
    assert_int_equal(t->dtype, ST_F32);
    assert_int_equal(t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d])
            fail_msg("%s: dim %d is %lld, expected %lld", name, d, (long long)t->shape[d],
                     (long long)shape[d]);
    float *buf = malloc((size_t)safetensors_numel(t) * sizeof(float));
    assert_non_null(buf);
    if (safetensors_read_f32(st, t, buf, &err))
        fail_msg("%s", err.msg);
    return buf;
}

/* File tensor [o][i][y][x] (OIHW) against the model's w[y][x][i][o] (HWIO). */
static void check_oihw(const SafeTensors *st, const Resnet *m, const char *layer,
                       const char *tensor)
{
    const Layer *l = &m->layers[resnet_find_layer(m, layer)];
    const int co = l->cout, ci = l->cin, k = l->k;
    int64_t shape[4] = {co, ci, k, k};
    float *f = read_named(st, tensor, 4, shape);
    for (int o = 0; o < co; o++)
        for (int i = 0; i < ci; i++)
            for (int y = 0; y < k; y++)
                for (int x = 0; x < k; x++) {
                    float a = f[(((size_t)o * ci + i) * k + y) * k + x];
                    float b = l->w[(((size_t)y * k + x) * ci + i) * co + o];
                    if (memcmp(&a, &b, sizeof a))
                        fail_msg("%s[%d][%d][%d][%d] = %g, model HWIO value %g", tensor, o, i,
                                 y, x, a, b);
                }
    free(f);
}

static void test_layout_torch(void **state)
{
    Fixture *fx = *state;
    Error err;
    SafeTensors st;
    if (safetensors_open(&st, fx->tv_path, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(st.n_tensors, TV_ENTRIES);
    assert_string_equal(safetensors_meta(&st, "variant"), "torchvision");
    assert_string_equal(safetensors_meta(&st, "preprocess"), "torch");
    check_oihw(&st, fx->tv, "layer1.0.conv2", "layer1.0.conv2.weight");
    check_oihw(&st, fx->tv, "conv1", "conv1.weight");
    check_oihw(&st, fx->tv, "layer2.0.downsample.0", "layer2.0.downsample.0.weight");

    const Layer *fc = &fx->tv->layers[fx->tv->out_fc];
    int64_t fshape[2] = {1000, 2048};
    float *f = read_named(&st, "fc.weight", 2, fshape);
    for (int o = 0; o < 1000; o++)
        for (int i = 0; i < 2048; i++)
            if (f[(size_t)o * 2048 + i] != fc->w[(size_t)i * 1000 + o])
                fail_msg("fc.weight[%d][%d] is not the model's w[%d][%d]", o, i, i, o);
    free(f);
    int64_t bshape[1] = {1000};
    f = read_named(&st, "fc.bias", 1, bshape);
    assert_memory_equal(f, fc->b, 1000 * sizeof(float));
    free(f);
    const Layer *bn = &fx->tv->layers[resnet_find_layer(fx->tv, "layer3.2.bn2")];
    int64_t cshape[1] = {256};
    f = read_named(&st, "layer3.2.bn2.running_var", 1, cshape);
    assert_memory_equal(f, bn->rvar, 256 * sizeof(float));
    free(f);
    assert_null(safetensors_find(&st, "layer1.0.conv2.bias"));
    safetensors_close(&st);
}

static void test_layout_keras(void **state)
{
    Fixture *fx = *state;
    Error err;
    SafeTensors st;
    if (safetensors_open(&st, fx->keras_path, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(safetensors_meta(&st, "variant"), "keras");
    assert_string_equal(safetensors_meta(&st, "preprocess"), "caffe");
    const Resnet *m = fx->keras;
    const Layer *c = &m->layers[resnet_find_layer(m, "layer1.0.conv2")];
    assert_string_equal(c->keras_name, "conv2_block1_2_conv");
    int64_t kshape[4] = {3, 3, 64, 64};
    float *f = read_named(&st, "conv2_block1_2_conv.kernel", 4, kshape);
    assert_memory_equal(f, c->w, 3 * 3 * 64 * 64 * sizeof(float)); /* HWIO both sides */
    free(f);
    int64_t bshape[1] = {64};
    f = read_named(&st, "conv2_block1_2_conv.bias", 1, bshape);
    assert_memory_equal(f, c->b, 64 * sizeof(float));
    free(f);
    const Layer *stem = &m->layers[m->stem_conv];
    int64_t sshape[4] = {7, 7, 3, 64};
    f = read_named(&st, "conv1_conv.kernel", 4, sshape);
    assert_memory_equal(f, stem->w, 7 * 7 * 3 * 64 * sizeof(float));
    free(f);
    const Layer *bn = &m->layers[resnet_find_layer(m, "conv4_block3_1_bn")];
    int64_t nshape[1] = {256};
    f = read_named(&st, "conv4_block3_1_bn.moving_variance", 1, nshape);
    assert_memory_equal(f, bn->rvar, 256 * sizeof(float));
    free(f);
    f = read_named(&st, "conv4_block3_1_bn.gamma", 1, nshape);
    assert_memory_equal(f, bn->w, 256 * sizeof(float));
    free(f);
    const Layer *fc = &m->layers[m->out_fc];
    int64_t pshape[2] = {2048, 1000};
    f = read_named(&st, "predictions.kernel", 2, pshape);
    assert_memory_equal(f, fc->w, 2048 * 1000 * sizeof(float)); /* (in, out) both sides */
    free(f);
    safetensors_close(&st);
}

/* ---- heads ---------------------------------------------------------------------- */

static void test_backbone_only(void **state)
{
    Fixture *fx = *state;
    Error err;
    TensorList tl;
    tl_load(&tl, fx->tv_path);
    tl_remove(&tl, "fc.weight");
    tl_remove(&tl, "fc.bias");
    const char *path = testutil_tmp_path("backbone.safetensors");
    tl_write(&tl, path, NULL, 0);
    tl_free(&tl);

    WeightsInfo info;
    if (weights_probe(path, &info, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(info.has_head, 0);
    assert_int_equal(info.n_tensors, TV_ENTRIES - 2);
    assert_int_equal(info.n_params, TV_PARAMS - (2048u * 1000 + 1000));

    Resnet *m = fresh_like(fx->tv);
    Resnet *orig = fresh_like(fx->tv);
    EXPECT_LOAD_ERROR(m, path, 1, path, "no classifier head", "fc.weight");
    if (weights_load(m, path, 0, &err))
        fail_msg("%s", err.msg);
    assert_params_same(m, fx->tv, BACKBONE, "backbone-only load");
    assert_params_same(m, orig, HEAD, "head kept by a backbone-only load");
    resnet_free(m);
    resnet_free(orig);
}

static void test_head_of_other_class_count(void **state)
{
    Fixture *fx = *state;
    Error err;
    Resnet *src = model_new(RESNET_TORCHVISION, 10, 0);
    randomize(src, 51);
    const char *path = testutil_tmp_path("ten_classes.safetensors");
    if (weights_save(src, path, NAMING_TORCH, WEIGHTS_PARAMS, NULL, NULL, 0, &err))
        fail_msg("%s", err.msg);
    Resnet *m = fresh_like(fx->tv), *orig = fresh_like(fx->tv);
    EXPECT_LOAD_ERROR(m, path, 1, "'fc.weight'", "[10, 2048]", "expected [1000, 2048]");
    if (weights_load(m, path, 0, &err))
        fail_msg("%s", err.msg);
    assert_params_same(m, src, BACKBONE, "backbone from a 10-class file");
    assert_params_same(m, orig, HEAD, "head kept when the file's head is ignored");
    resnet_free(m);
    resnet_free(orig);
    resnet_free(src);
}

/* A hidden layer in the file but not in the model is unexpected when loading the
 * head, ignored when not. */
static void test_head_with_unexpected_hidden(void **state)
{
    Fixture *fx = *state;
    Error err;
    Resnet *src = model_new(RESNET_TORCHVISION, 1000, 32);
    randomize(src, 52);
    const char *path = testutil_tmp_path("hidden32.safetensors");
    if (weights_save(src, path, NAMING_TORCH, WEIGHTS_PARAMS, NULL, NULL, 0, &err))
        fail_msg("%s", err.msg);
    Resnet *m = fresh_like(fx->tv);
    EXPECT_LOAD_ERROR(m, path, 1, "'fc.weight'", "[1000, 32]", "expected [1000, 2048]");
    if (weights_load(m, path, 0, &err))
        fail_msg("%s", err.msg);
    assert_params_same(m, src, BACKBONE, "backbone from a file with a hidden layer");
    resnet_free(m);
    resnet_free(src);
}

/* ---- rejected files --------------------------------------------------------------- */

/* The fixture's torchvision file with one edit, written to name. */
typedef void (*EditFn)(TensorList *tl);

static const char *edited_tv(const Fixture *fx, const char *name, EditFn edit,
                             const char *const *meta, int n_meta)
{
    static char path[4096];
    TensorList tl;
    tl_load(&tl, fx->tv_path);
    edit(&tl);
    snprintf(path, sizeof path, "%s", testutil_tmp_path(name));
    tl_write(&tl, path, meta, n_meta);
    tl_free(&tl);
    return path;
}

static void drop_last_running_var(TensorList *tl) { tl_remove(tl, "layer4.2.bn3.running_var"); }

static void test_missing_tensor(void **state)
{
    Fixture *fx = *state;
    const char *path = edited_tv(fx, "missing.safetensors", drop_last_running_var, NULL, 0);
    Resnet *m = fresh_like(fx->tv);
    EXPECT_LOAD_ERROR(m, path, 1, path, "'layer4.2.bn3.running_var'", "missing");
    EXPECT_LOAD_ERROR(m, path, 0, "'layer4.2.bn3.running_var'", "missing");
    resnet_free(m);
}

static void transpose_last_conv(TensorList *tl)
{
    StEntry *e = &tl->e[tl_index(tl, "layer4.2.conv3.weight")];
    assert_int_equal(e->shape[0], 2048);
    e->shape[0] = 512; /* same element count, O and I swapped */
    e->shape[1] = 2048;
}

static void test_wrong_shape(void **state)
{
    Fixture *fx = *state;
    const char *path = edited_tv(fx, "shape.safetensors", transpose_last_conv, NULL, 0);
    Resnet *m = fresh_like(fx->tv);
    EXPECT_LOAD_ERROR(m, path, 1, "'layer4.2.conv3.weight'", "shape [512, 2048, 1, 1]",
                      "expected [2048, 512, 1, 1]");
    resnet_free(m);
}

static void add_conv_bias(TensorList *tl)
{
    int64_t shape[1] = {64};
    float *d = calloc(64, sizeof(float));
    tl_add(tl, "layer1.0.conv2.bias", 1, shape, d);
}

static void add_stray(TensorList *tl)
{
    int64_t shape[2] = {2, 3};
    float *d = calloc(6, sizeof(float));
    tl_add(tl, "extra.weight", 2, shape, d);
}

static void test_unexpected_tensor(void **state)
{
    Fixture *fx = *state;
    Resnet *m = fresh_like(fx->tv);
    const char *path = edited_tv(fx, "extra1.safetensors", add_conv_bias, NULL, 0);
    EXPECT_LOAD_ERROR(m, path, 1, "unexpected tensor 'layer1.0.conv2.bias'", "torchvision");
    EXPECT_LOAD_ERROR(m, path, 0, "unexpected tensor 'layer1.0.conv2.bias'");
    path = edited_tv(fx, "extra2.safetensors", add_stray, NULL, 0);
    EXPECT_LOAD_ERROR(m, path, 1, "unexpected tensor 'extra.weight'");
    resnet_free(m);
}

static void test_truncated_file(void **state)
{
    Fixture *fx = *state;
    size_t len;
    unsigned char *buf = read_all(fx->tv_path, &len);
    Resnet *m = fresh_like(fx->tv);
    const char *path = testutil_tmp_path("truncated.safetensors");
    /* in the data section: the last tensors lose their bytes */
    testutil_write_file(path, buf, len - 4000);
    EXPECT_LOAD_ERROR(m, path, 1, path, "4000 bytes missing", "truncated");
    WeightsInfo info;
    Error err;
    assert_int_not_equal(weights_probe(path, &info, &err), 0);
    assert_non_null(strstr(err.msg, "truncated"));
    /* inside the header */
    testutil_write_file(path, buf, 100);
    EXPECT_LOAD_ERROR(m, path, 1, path, "file is 100 bytes", "header says 8 +");
    /* inside the 8-byte length */
    testutil_write_file(path, buf, 5);
    EXPECT_LOAD_ERROR(m, path, 1, path, "5 bytes", "shorter than the 8-byte");
    free(buf);
    resnet_free(m);
}

static void test_not_safetensors(void **state)
{
    Fixture *fx = *state;
    Resnet *m = fresh_like(fx->tv);
    const char *path = testutil_tmp_path("random.bin");
    unsigned char noise[4096];
    uint64_t s = 0x1234567u;
    for (size_t i = 0; i < sizeof noise; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        noise[i] = (unsigned char)(s >> 32);
    }
    noise[7] = 0x5a; /* a header length far over the limit, whatever the seed gives */
    testutil_write_file(path, noise, sizeof noise);
    EXPECT_LOAD_ERROR(m, path, 1, path, "header length", "over the limit");

    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0,
                                        13, 'I', 'H', 'D', 'R', 0, 0, 0, 1, 0, 0, 0, 1};
    path = testutil_tmp_path("image.png");
    testutil_write_file(path, png, sizeof png);
    EXPECT_LOAD_ERROR(m, path, 1, path, "header length", "over the limit");

    /* a small header length followed by text that is not JSON */
    static const char text[] = "\x10\0\0\0\0\0\0\0hello, world....";
    path = testutil_tmp_path("text.safetensors");
    testutil_write_file(path, text, sizeof text - 1);
    EXPECT_LOAD_ERROR(m, path, 1, path, "not valid UTF-8 JSON");

    /* a valid safetensors file holding something else */
    float v[4] = {1, 2, 3, 4};
    StEntry e = {"embeddings.weight", 2, {2, 2}, v};
    Error err;
    path = testutil_tmp_path("other.safetensors");
    if (safetensors_write(path, &e, 1, NULL, 0, &err))
        fail_msg("%s", err.msg);
    EXPECT_LOAD_ERROR(m, path, 1, path, "not ResNet50 weights", "conv1.weight");
    resnet_free(m);
}

static void test_empty_and_absent_file(void **state)
{
    Fixture *fx = *state;
    Resnet *m = fresh_like(fx->tv);
    const char *path = testutil_tmp_path("empty.safetensors");
    testutil_write_file(path, "", 0);
    EXPECT_LOAD_ERROR(m, path, 1, path, "0 bytes", "shorter than the 8-byte");
    path = testutil_tmp_path("does-not-exist.safetensors");
    EXPECT_LOAD_ERROR(m, path, 1, path, "cannot open", "No such file");
    WeightsInfo info;
    Error err;
    assert_int_not_equal(weights_probe(path, &info, &err), 0);
    assert_non_null(strstr(err.msg, "No such file"));
    resnet_free(m);
}

static void test_variant_mismatch(void **state)
{
    Fixture *fx = *state;
    Resnet *tv = fresh_like(fx->tv), *k = fresh_like(fx->keras);
    EXPECT_LOAD_ERROR(tv, fx->keras_path, 1, "keras-variant", "the model is torchvision");
    EXPECT_LOAD_ERROR(tv, fx->keras_path, 0, "keras-variant", "the model is torchvision");
    EXPECT_LOAD_ERROR(k, fx->tv_path, 0, "torchvision-variant", "the model is keras");
    resnet_free(tv);
    resnet_free(k);
}

static void no_edit(TensorList *tl) { (void)tl; }

static void test_metadata_contradicts_names(void **state)
{
    Fixture *fx = *state;
    const char *meta[] = {"format", "pt", "variant", "keras"};
    const char *path = edited_tv(fx, "liar.safetensors", no_edit, meta, 2);
    Resnet *tv = fresh_like(fx->tv), *k = fresh_like(fx->keras);
    EXPECT_LOAD_ERROR(tv, path, 1, "metadata says variant 'keras'", "torch-style");
    EXPECT_LOAD_ERROR(k, path, 1, "metadata says variant 'keras'", "torch-style");
    WeightsInfo info;
    Error err;
    assert_int_not_equal(weights_probe(path, &info, &err), 0);
    assert_non_null(strstr(err.msg, "metadata says variant"));
    resnet_free(tv);
    resnet_free(k);
}

/* A dense kernel whose input size is not the backbone's 2048 features is not a head
 * this graph can have: probe must not report a class count for it. */
static void narrow_fc(TensorList *tl)
{
    StEntry *e = &tl->e[tl_index(tl, "fc.weight")];
    e->shape[0] = 2000; /* (2000, 1024): the element count of (1000, 2048) */
    e->shape[1] = 1024;
}

static void test_probe_rejects_misshapen_head(void **state)
{
    Fixture *fx = *state;
    const char *path = edited_tv(fx, "narrow_fc.safetensors", narrow_fc, NULL, 0);
    WeightsInfo info;
    Error err;
    assert_int_not_equal(weights_probe(path, &info, &err), 0);
    print_message("  error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "'fc.weight'"));
    assert_non_null(strstr(err.msg, "[2000, 1024]"));
    assert_non_null(strstr(err.msg, "2048"));
}

/* ---- accepted variations ----------------------------------------------------------- */

static void check_h5_names(const Fixture *fx, int repeat_group, const char *file)
{
    Error err;
    TensorList tl;
    tl_load(&tl, fx->keras_path);
    for (int i = 0; i < tl.n; i++) {
        char layer[128], name[300];
        snprintf(layer, sizeof layer, "%s", tl.names[i]);
        char *dot = strrchr(layer, '.');
        assert_non_null(dot);
        *dot = '\0';
        if (repeat_group)
            snprintf(name, sizeof name, "%s/%s/%s:0", layer, layer, dot + 1);
        else
            snprintf(name, sizeof name, "%s/%s", layer, dot + 1);
        tl_rename(&tl, i, name);
    }
    /* the names Keras's h5 files use (tl_index fails the test when absent) */
    tl_index(&tl, repeat_group ? "conv1_conv/conv1_conv/kernel:0" : "conv1_conv/kernel");
    tl_index(&tl, repeat_group ? "predictions/predictions/bias:0" : "predictions/bias");
    const char *path = testutil_tmp_path(file);
    tl_write(&tl, path, NULL, 0);
    tl_free(&tl);
    WeightsInfo info;
    if (weights_probe(path, &info, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(info.variant, RESNET_KERAS);
    assert_int_equal(info.head_classes, 1000);
    Resnet *m = fresh_like(fx->keras);
    if (weights_load(m, path, 1, &err))
        fail_msg("%s", err.msg);
    assert_params_same(m, fx->keras, ALL, "h5-style names");
    resnet_free(m);
}

static void test_keras_h5_names(void **state)
{
    check_h5_names(*state, 1, "h5_full.safetensors");
    check_h5_names(*state, 0, "h5_short.safetensors");
}

/* The fixture's torchvision file rewritten with raw_write; with counters, every BN
 * gets an I64 num_batches_tracked scalar after its running_var, as torch saves it. */
enum { AS_F32, AS_F16, AS_BF16 };
static const char *rewrite_tv(const Fixture *fx, const char *file, int dtype, int counters,
                              float **decoded /* out: what the file holds, as floats */)
{
    static char path[4096];
    TensorList tl;
    tl_load(&tl, fx->tv_path);
    RawEntry *re = calloc((size_t)tl.n * 2, sizeof *re);
    char (*names)[128] = calloc((size_t)tl.n, sizeof *names);
    void **bufs = calloc((size_t)tl.n, sizeof *bufs);
    size_t total = 0;
    for (int i = 0; i < tl.n; i++) {
        size_t n = 1;
        for (int d = 0; d < tl.e[i].ndim; d++)
            n *= (size_t)tl.e[i].shape[d];
        total += n;
    }
    float *dec = malloc(total * sizeof(float));
    assert_true(re && names && bufs && dec);
    static const int64_t counter = 123456789012LL;
    int nr = 0;
    size_t at = 0;
    for (int i = 0; i < tl.n; i++) {
        size_t n = 1;
        for (int d = 0; d < tl.e[i].ndim; d++)
            n *= (size_t)tl.e[i].shape[d];
        RawEntry *r = &re[nr++];
        r->name = tl.names[i];
        r->ndim = tl.e[i].ndim;
        memcpy(r->shape, tl.e[i].shape, sizeof r->shape);
        const float *src = tl.data[i];
        if (dtype == AS_F32) {
            r->dtype = "F32";
            r->bytes = src;
            r->nbytes = n * 4;
            memcpy(dec + at, src, n * 4);
        } else {
            uint16_t *h = malloc(n * 2 + 2);
            assert_non_null(h);
            for (size_t j = 0; j < n; j++) {
                h[j] = dtype == AS_F16 ? f32_to_f16(src[j]) : f32_to_bf16(src[j]);
                dec[at + j] = dtype == AS_F16 ? f16_to_f32(h[j]) : bf16_to_f32(h[j]);
            }
            bufs[i] = h;
            r->dtype = dtype == AS_F16 ? "F16" : "BF16";
            r->bytes = h;
            r->nbytes = n * 2;
        }
        at += n;
        size_t len = strlen(tl.names[i]);
        const char *rv = ".running_var";
        if (counters && len > strlen(rv) && !strcmp(tl.names[i] + len - strlen(rv), rv)) {
            snprintf(names[i], sizeof names[i], "%.*s.num_batches_tracked",
                     (int)(len - strlen(rv)), tl.names[i]);
            RawEntry *c = &re[nr++];
            c->name = names[i];
            c->dtype = "I64";
            c->ndim = 0;
            c->bytes = &counter;
            c->nbytes = 8;
        }
    }
    snprintf(path, sizeof path, "%s", testutil_tmp_path(file));
    raw_write(path, re, nr, "{\"format\":\"pt\"}");
    for (int i = 0; i < tl.n; i++)
        free(bufs[i]);
    free(bufs);
    free(names);
    free(re);
    tl_free(&tl);
    *decoded = dec;
    return path;
}

static void test_num_batches_tracked_i64(void **state)
{
    Fixture *fx = *state;
    Error err;
    float *dec;
    const char *path = rewrite_tv(fx, "with_counters.safetensors", AS_F32, 1, &dec);
    free(dec);
    SafeTensors st;
    if (safetensors_open(&st, path, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(st.n_tensors, 320);
    const StTensor *t = safetensors_find(&st, "layer2.3.bn1.num_batches_tracked");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_I64);
    safetensors_close(&st);
    WeightsInfo info;
    if (weights_probe(path, &info, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(info.n_tensors, 320);
    assert_int_equal(info.n_params, TV_PARAMS);
    Resnet *m = fresh_like(fx->tv);
    if (weights_load(m, path, 1, &err))
        fail_msg("%s", err.msg);
    assert_params_same(m, fx->tv, ALL, "file with num_batches_tracked");
    resnet_free(m);
}

/* Every parameter equals the file's half value decoded here, and lies within half
 * precision (relative 2^-11 for F16, 2^-8 for BF16) of the original float. */
static void check_half(const Fixture *fx, int dtype, const char *file, double rel, double abs)
{
    Error err;
    float *dec;
    const char *path = rewrite_tv(fx, file, dtype, dtype == AS_BF16, &dec);
    Resnet *m = fresh_like(fx->tv);
    if (weights_load(m, path, 1, &err))
        fail_msg("%s", err.msg);
    /* dec is in the order and layout of the fixture's file; saving m again gives
     * the same order and layout to compare with */
    const char *again = testutil_tmp_path("half_again.safetensors");
    if (weights_save(m, again, NAMING_TORCH, WEIGHTS_PARAMS, NULL, NULL, 0, &err))
        fail_msg("%s", err.msg);
    TensorList got, orig;
    tl_load(&got, again);
    tl_load(&orig, fx->tv_path);
    assert_int_equal(got.n, orig.n);
    size_t at = 0, differ = 0, total = 0;
    for (int i = 0; i < orig.n; i++) {
        assert_string_equal(got.names[i], orig.names[i]);
        size_t n = 1;
        for (int d = 0; d < orig.e[i].ndim; d++)
            n *= (size_t)orig.e[i].shape[d];
        for (size_t j = 0; j < n; j++) {
            float g = got.data[i][j], x = orig.data[i][j], want = dec[at + j];
            if (memcmp(&g, &want, 4))
                fail_msg("%s[%zu] = %.9g, the file holds %.9g", orig.names[i], j, g, want);
            if (!(fabs((double)g - x) <= fmax(rel * fabs(x), abs)))
                fail_msg("%s[%zu] = %.9g, original %.9g: not within half precision",
                         orig.names[i], j, g, x);
            differ += g != x;
        }
        at += n;
        total += n;
    }
    /* the file really held rounded values: most of them differ from the original */
    assert_true(differ > total / 2);
    tl_free(&got);
    tl_free(&orig);
    free(dec);
    resnet_free(m);
}

static void test_f16(void **state)
{
    check_half(*state, AS_F16, "f16.safetensors", 1.0 / 2048, 1.0 / (1 << 25));
}

static void test_bf16_with_counters(void **state)
{
    check_half(*state, AS_BF16, "bf16.safetensors", 1.0 / 256, 0);
}

/* The half codecs above against known values, so that check_half cannot pass on a
 * codec bug shared with the reader. */
static void test_half_codecs(void **state)
{
    (void)state;
    assert_int_equal(f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(f32_to_f16(5.9604645e-08f), 0x0001);      /* smallest subnormal */
    assert_int_equal(f32_to_f16(6.097555e-05f), 0x03ff);       /* largest subnormal */
    assert_int_equal(f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);  /* tie to even, down */
    assert_int_equal(f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);  /* tie to even, up */
    assert_int_equal(f32_to_f16(1.0f + 1.5f / 2048), 0x3c01);  /* above the tie */
    assert_true(f16_to_f32(0x3555) == 0.333251953125f);
    assert_true(f16_to_f32(0x0001) == 5.9604644775390625e-08f);
    assert_true(f16_to_f32(0x8400) == -6.103515625e-05f);
    assert_int_equal(f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(f32_to_bf16(3.140625f), 0x4049);
    assert_true(bf16_to_f32(0xc049) == -3.140625f);
}

/* ---- Keras 2 HDF5 files -------------------------------------------------------- */

/* A list of strings as a fixed-length, null-padded string attribute (as h5py
 * stores Keras's numpy arrays of byte strings). */
static void h5_write_names(hid_t loc, const char *attr, char (*names)[96], int n)
{
    size_t width = 1;
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) > width)
            width = strlen(names[i]);
    char *buf = calloc((size_t)n + 1, width);
    assert_non_null(buf);
    for (int i = 0; i < n; i++)
        memcpy(buf + (size_t)i * width, names[i], strlen(names[i]));
    hid_t t = H5Tcopy(H5T_C_S1);
    assert_true(t >= 0 && H5Tset_size(t, width) >= 0 && H5Tset_strpad(t, H5T_STR_NULLPAD) >= 0);
    hsize_t dim = (hsize_t)n;
    hid_t sp = H5Screate_simple(1, &dim, NULL);
    hid_t a = H5Acreate2(loc, attr, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(sp >= 0 && a >= 0 && H5Awrite(a, t, buf) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    free(buf);
}

/* Writes m (Keras variant) as Keras 2's save_weights does: root attribute
 * layer_names, a group per layer with weight_names "LAYER/kernel:0", ... and the
 * datasets at those paths. Parameter `external` (or -1) gets no data in the file:
 * its dataset's storage is the file external_path, which the caller leaves absent. */
static void write_keras_h5(const Resnet *m, const char *path, int external,
                           const char *external_path)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    assert_true(f >= 0 && lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0);
    char (*layers)[96] = calloc((size_t)m->n_layers, sizeof *layers);
    assert_non_null(layers);
    for (int li = 0; li < m->n_layers; li++) {
        const Layer *l = &m->layers[li];
        snprintf(layers[li], sizeof layers[li], "%s", l->keras_name);
        hid_t g = H5Gcreate2(f, l->keras_name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(g >= 0);
        char wnames[4][96];
        int nw = 0;
        for (int pi = 0; pi < m->n_params; pi++) {
            const ParamInfo *p = &m->params[pi];
            if (p->layer != li)
                continue;
            char full[128];
            weights_file_name(m, pi, NAMING_KERAS, full, sizeof full);
            snprintf(wnames[nw], sizeof wnames[nw], "%s/%s:0", l->keras_name,
                     strchr(full, '.') + 1);
            hsize_t dims[4];
            for (int d = 0; d < p->ndim; d++)
                dims[d] = (hsize_t)p->shape[d];
            hid_t sp = H5Screate_simple(p->ndim, dims, NULL);
            hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
            assert_true(sp >= 0 && dcpl >= 0);
            if (pi == external)
                assert_true(H5Pset_external(dcpl, external_path, 0,
                                            (hsize_t)(p->numel * sizeof(float))) >= 0);
            hid_t d = H5Dcreate2(g, wnames[nw], H5T_IEEE_F32LE, sp, lcpl, dcpl, H5P_DEFAULT);
            assert_true(d >= 0);
            if (pi != external)
                assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                     m->param_data + p->offset) >= 0);
            H5Dclose(d);
            H5Pclose(dcpl);
            H5Sclose(sp);
            nw++;
        }
        h5_write_names(g, "weight_names", wnames, nw);
        H5Gclose(g);
    }
    h5_write_names(f, "layer_names", layers, m->n_layers);
    free(layers);
    H5Pclose(lcpl);
    assert_true(H5Fclose(f) >= 0);
}

/* The fixture's Keras model as an HDF5 file, written on first use. Named without
 * .h5: the reader goes by the signature. */
static const char *keras_h5(Fixture *fx)
{
    if (!fx->keras_h5_path[0]) {
        snprintf(fx->keras_h5_path, sizeof fx->keras_h5_path, "%s",
                 testutil_tmp_path("keras_h5.weights"));
        write_keras_h5(fx->keras, fx->keras_h5_path, -1, NULL);
    }
    return fx->keras_h5_path;
}

static void test_keras_hdf5(void **state)
{
    Fixture *fx = *state;
    Error err;
    const char *path = keras_h5(fx);
    WeightsInfo info;
    if (weights_probe(path, &info, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(info.variant, RESNET_KERAS);
    assert_int_equal(info.naming, NAMING_KERAS);
    assert_string_equal(info.preprocess, "caffe");
    assert_int_equal(info.n_tensors, 320);
    assert_int_equal(info.n_params, KERAS_PARAMS);
    assert_true(info.has_head && info.head_classes == 1000 && info.head_hidden == 0);
    assert_null(info.classes);
    assert_true(info.hdf5);
    weights_info_free(&info);
    if (weights_probe(fx->keras_path, &info, &err))
        fail_msg("%s", err.msg);
    assert_false(info.hdf5);
    weights_info_free(&info);
    Resnet *m = fresh_like(fx->keras);
    if (weights_load(m, path, 1, &err))
        fail_msg("%s", err.msg);
    assert_params_same(m, fx->keras, ALL, "Keras HDF5");
    for (int li = 0; li < m->n_layers; li++)
        assert_true(m->layers[li].loaded);
    /* a torchvision model cannot take Keras weights */
    Resnet *tv = fresh_like(fx->tv);
    EXPECT_LOAD_ERROR(tv, path, 1, path, "keras-variant weights", "the model is torchvision");
    resnet_free(tv);
    resnet_free(m);
}

static void test_keras_hdf5_unreadable_tensor(void **state)
{
    Fixture *fx = *state;
    /* the last BN's gamma: everything before it is read (and staged) first */
    int pi = resnet_find_param(fx->keras, "layer4.2.bn3.weight");
    assert_true(pi >= 0);
    char gone[4096], path[4096];
    snprintf(gone, sizeof gone, "%s", testutil_tmp_path("absent-external.bin"));
    unlink(gone);
    snprintf(path, sizeof path, "%s", testutil_tmp_path("external.h5"));
    write_keras_h5(fx->keras, path, pi, gone);
    Error err;
    WeightsInfo info;
    if (weights_probe(path, &info, &err)) /* the metadata is fine */
        fail_msg("%s", err.msg);
    weights_info_free(&info);
    Resnet *m = fresh_like(fx->keras);
    EXPECT_LOAD_ERROR(m, path, 1, path, "cannot read 'conv5_block3_3_bn/conv5_block3_3_bn/gamma:0'");
    resnet_free(m);
}

static void test_hdf5_truncated_and_listing(void **state)
{
    Fixture *fx = *state;
    size_t len;
    unsigned char *buf = read_all(keras_h5(fx), &len);
    char path[4096];
    snprintf(path, sizeof path, "%s", testutil_tmp_path("truncated.h5"));
    testutil_write_file(path, buf, len / 2);
    Resnet *m = fresh_like(fx->keras);
    EXPECT_LOAD_ERROR(m, path, 1, path, "cannot open as HDF5", "truncated file");
    testutil_write_file(path, buf, 7);
    EXPECT_LOAD_ERROR(m, path, 1, path, "no HDF5 signature");
    free(buf);
    resnet_free(m);
    assert_true(weights_file_listable("resnet50.safetensors"));
    assert_true(weights_file_listable("resnet50_weights_tf_dim_ordering_tf_kernels.h5"));
    assert_true(weights_file_listable("model.hdf5"));
    assert_false(weights_file_listable(".hidden.h5"));
    assert_false(weights_file_listable("x.h5.tmp.ab12"));
    assert_false(weights_file_listable("notes.txt"));
    assert_false(weights_file_listable("h5"));
}

typedef struct {
    const char *path;
    int ok;
    char msg[ERROR_MSG_MAX];
} ProbeRun;

static void *probe_repeatedly(void *arg)
{
    ProbeRun *r = arg;
    for (int i = 0; i < 4; i++) {
        WeightsInfo info;
        Error err;
        if (weights_probe(r->path, &info, &err)) {
            snprintf(r->msg, sizeof r->msg, "%s", err.msg);
            continue;
        }
        r->ok += info.n_tensors == 320 && info.head_classes == 1000;
        weights_info_free(&info);
    }
    return NULL;
}

static void test_hdf5_probe_while_loading(void **state)
{
    Fixture *fx = *state;
    const char *path = keras_h5(fx);
    enum { THREADS = 4 };
    pthread_t th[THREADS];
    ProbeRun runs[THREADS];
    memset(runs, 0, sizeof runs);
    for (int i = 0; i < THREADS; i++) {
        runs[i].path = path;
        assert_int_equal(pthread_create(&th[i], NULL, probe_repeatedly, &runs[i]), 0);
    }
    Resnet *m = fresh_like(fx->keras);
    Error err;
    for (int k = 0; k < 2; k++)
        if (weights_load(m, path, 1, &err))
            fail_msg("load %d: %s", k, err.msg);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        if (runs[i].ok != 4)
            fail_msg("thread %d: %d of 4 probes right; last error: %s", i, runs[i].ok,
                     runs[i].msg);
    }
    assert_params_same(m, fx->keras, ALL, "Keras HDF5 loaded beside probes");
    resnet_free(m);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_counts),
        cmocka_unit_test(test_half_codecs),
        cmocka_unit_test(test_round_trip_torch),
        cmocka_unit_test(test_round_trip_keras),
        cmocka_unit_test(test_probe_defaults),
        cmocka_unit_test(test_probe_long_class_list),
        cmocka_unit_test(test_probe_custom_head_torch),
        cmocka_unit_test(test_probe_custom_head_keras),
        cmocka_unit_test(test_round_trip_large_head),
        cmocka_unit_test(test_save_naming_must_match_variant),
        cmocka_unit_test(test_save_grads),
        cmocka_unit_test(test_layout_torch),
        cmocka_unit_test(test_layout_keras),
        cmocka_unit_test(test_backbone_only),
        cmocka_unit_test(test_head_of_other_class_count),
        cmocka_unit_test(test_head_with_unexpected_hidden),
        cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_wrong_shape),
        cmocka_unit_test(test_unexpected_tensor),
        cmocka_unit_test(test_truncated_file),
        cmocka_unit_test(test_not_safetensors),
        cmocka_unit_test(test_empty_and_absent_file),
        cmocka_unit_test(test_variant_mismatch),
        cmocka_unit_test(test_metadata_contradicts_names),
        cmocka_unit_test(test_probe_rejects_misshapen_head),
        cmocka_unit_test(test_keras_h5_names),
        cmocka_unit_test(test_num_batches_tracked_i64),
        cmocka_unit_test(test_f16),
        cmocka_unit_test(test_bf16_with_counters),
        cmocka_unit_test(test_keras_hdf5),
        cmocka_unit_test(test_keras_hdf5_unreadable_tensor),
        cmocka_unit_test(test_hdf5_truncated_and_listing),
        cmocka_unit_test(test_hdf5_probe_while_loading),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
