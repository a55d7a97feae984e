/*
 * test_preprocess.c: unit tests of core/preprocess (cmocka).
 *
 * Evidence, as STYLE.md asks:
 *  - against torch / torchvision (tests/reference/make_preprocess_reference.py):
 *    the bilinear resize (F.interpolate + round + clamp, which the oracle checks
 *    equals torchvision's uint8 resize with antialias=False) for up-, down- and
 *    mixed scaling, odd and non-square sizes and 1-pixel sources; the crop
 *    policy's base size (torchvision Resize); the whole validation pipeline and
 *    stage 2 alone for every normalisation mode against the Keras / torchvision
 *    formulas; resized crops of given boxes; RandomResizedCrop.get_params driven
 *    by the same splitmix64 draws;
 *  - the optimised resampler against a naive per-value one, bit for bit, for
 *    random sizes and crops (blocks, span limits and row caching included);
 *  - properties: seeded augmentation is reproducible and varies with the seed,
 *    crops stay inside the base, the flip is the exact mirror, augmentation
 *    settings without an Rng change no byte of the output;
 *  - InputStats against a direct two-pass computation, and the spread of caffe
 *    inputs against the "double scaling" mistake (REFERENCE.md).
 * Outputs carry a guard tail and are pre-filled with NaN, so an element left
 * unwritten or a write past the end shows up.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preprocess.h"
#include "rng.h"
#include "safetensors.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------ */

#define GUARD 16
#define GUARD_BYTE 0xA5
#define GUARD_FLOAT 12345.0f

static float *falloc(size_t n)
{
    float *p = malloc((n + GUARD) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    for (size_t i = 0; i < GUARD; i++)
        p[n + i] = GUARD_FLOAT;
    return p;
}

static void fguard_check(const float *p, size_t n, const char *what)
{
    for (size_t i = 0; i < GUARD; i++)
        if (p[n + i] != GUARD_FLOAT)
            fail_msg("%s: write past the end (float %zu after the buffer)", what, i);
}

static uint8_t *balloc(size_t n)
{
    uint8_t *p = malloc(n + GUARD);
    assert_non_null(p);
    memset(p, 0x5A, n);
    memset(p + n, GUARD_BYTE, GUARD);
    return p;
}

static void bguard_check(const uint8_t *p, size_t n, const char *what)
{
    for (size_t i = 0; i < GUARD; i++)
        if (p[n + i] != GUARD_BYTE)
            fail_msg("%s: write past the end (byte %zu after the buffer)", what, i);
}

/* A w x h RGB8 image: a gradient plus noise, both extremes present. */
static uint8_t *make_image(int w, int h, uint64_t seed)
{
    uint8_t *img = balloc((size_t)w * h * 3);
    Rng r;
    rng_seed(&r, seed);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                float v = 127.5f * ((float)x / (float)(w > 1 ? w - 1 : 1) +
                                    (float)y / (float)(h > 1 ? h - 1 : 1)) +
                          60.0f * rng_normal(&r);
                v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
                img[((size_t)y * w + x) * 3 + c] = (uint8_t)lrintf(v);
            }
    img[0] = 0;
    img[(size_t)w * h * 3 - 1] = 255;
    return img;
}

/* The same image mirrored left-right. */
static uint8_t *mirror_image(const uint8_t *img, int w, int h)
{
    uint8_t *m = balloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(m + ((size_t)y * w + x) * 3, img + ((size_t)y * w + (w - 1 - x)) * 3, 3);
    return m;
}

static Preprocess preprocess_default(int size, ResizePolicy resize, const char *mode)
{
    Preprocess p;
    memset(&p, 0, sizeof p);
    p.size = size;
    p.resize = resize;
    Error err;
    if (preprocess_norm_from_name(&p.norm, mode, &err))
        fail_msg("%s", err.msg);
    return p;
}

/* The custom normalisation the oracle uses (make_preprocess_reference.py CUSTOM). */
static Normalization custom_norm(void)
{
    Normalization n = {NORM_CUSTOM, 1.0f / 255.0f, {0.5f, 0.4f, 0.3f}, {0.2f, 0.25f, 0.3f}, 1};
    return n;
}

/* Normalisation that leaves 0..255 levels as they are. */
static Normalization identity_norm(void)
{
    Normalization n = {NORM_CUSTOM, 1.0f, {0.0f, 0.0f, 0.0f}, {1.0f, 1.0f, 1.0f}, 0};
    return n;
}

static Normalization norm_by_name(const char *mode)
{
    if (!strcmp(mode, "custom"))
        return custom_norm();
    Normalization n;
    Error err;
    if (preprocess_norm_from_name(&n, mode, &err))
        fail_msg("%s", err.msg);
    return n;
}

/* Size of one 0..255 level after normalisation, per output channel. */
static void level_step(const Normalization *n, double step[3])
{
    for (int c = 0; c < 3; c++) {
        switch (n->mode) {
        case NORM_CAFFE: step[c] = 1.0; break;
        case NORM_TORCH: step[c] = 1.0 / (255.0 * (c == 0 ? 0.229 : c == 1 ? 0.224 : 0.225)); break;
        case NORM_TF: step[c] = 1.0 / 127.5; break;
        case NORM_CUSTOM: step[c] = (double)n->rescale / (double)n->std[c]; break;
        }
    }
}

typedef struct {
    SafeTensors st;
} Ref;

static void ref_open(Ref *r, const char *file)
{
    Error err;
    if (safetensors_open(&r->st, testutil_ref_path(file), &err))
        fail_msg("%s (run tests/reference/make_preprocess_reference.py through tests/run.sh)",
                 err.msg);
}

/* Tensor name as floats (malloc'd), its shape in shape[0..ndim). */
static float *ref_get(Ref *r, const char *name, int64_t *shape, int *ndim)
{
    const StTensor *t = safetensors_find(&r->st, name);
    if (!t)
        fail_msg("reference tensor %s missing", name);
    float *buf = malloc((size_t)safetensors_numel(t) * sizeof(float) + 4);
    assert_non_null(buf);
    Error err;
    if (safetensors_read_f32(&r->st, t, buf, &err))
        fail_msg("%s", err.msg);
    if (shape)
        memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    if (ndim)
        *ndim = t->ndim;
    return buf;
}

/* An image tensor (h, w, 3) of 0..255 values as RGB8 (with a guard tail). */
static uint8_t *ref_image(Ref *r, const char *name, int *w, int *h)
{
    int64_t shape[SAFETENSORS_MAX_DIMS];
    int ndim;
    float *f = ref_get(r, name, shape, &ndim);
    assert_int_equal(ndim, 3);
    assert_int_equal(shape[2], 3);
    *h = (int)shape[0];
    *w = (int)shape[1];
    size_t n = (size_t)*w * *h * 3;
    uint8_t *img = balloc(n);
    for (size_t i = 0; i < n; i++) {
        assert_true(f[i] >= 0.0f && f[i] <= 255.0f && f[i] == floorf(f[i]));
        img[i] = (uint8_t)f[i];
    }
    free(f);
    return img;
}

/* Level differences of got against want (n values): max and exact fraction. */
typedef struct {
    double max_diff;
    size_t exact, n;
} LevelDiff;

static void level_diff_add(LevelDiff *d, double diff_levels, double exact_tol)
{
    if (diff_levels > d->max_diff)
        d->max_diff = diff_levels;
    if (diff_levels <= exact_tol)
        d->exact++;
    d->n++;
}

static void level_diff_assert(const LevelDiff *d, const char *what)
{
    double frac = d->n ? (double)d->exact / (double)d->n : 1.0;
    print_message("  %-40s max |diff| %.4g level, %.3f%% exact (%zu of %zu)\n", what,
                  d->max_diff, 100.0 * frac, d->exact, d->n);
    if (d->max_diff > 1.0 + 1e-3)
        fail_msg("%s: max |diff| %.4g levels > 1", what, d->max_diff);
    if (frac < 0.99)
        fail_msg("%s: only %.3f%% of values exact (< 99%%)", what, 100.0 * frac);
}

/* ---- names and validation ---------------------------------------------------------- */

static void test_norm_names(void **state)
{
    (void)state;
    Normalization n;
    Error err;
    assert_int_equal(preprocess_norm_from_name(&n, "caffe", &err), 0);
    assert_int_equal(n.mode, NORM_CAFFE);
    assert_true(n.bgr && n.rescale == 1.0f && n.mean[0] == 103.939f && n.mean[2] == 123.68f);
    assert_int_equal(preprocess_norm_from_name(&n, "torch", &err), 0);
    assert_int_equal(n.mode, NORM_TORCH);
    assert_true(!n.bgr && n.mean[1] == 0.456f && n.std[2] == 0.225f);
    assert_int_equal(preprocess_norm_from_name(&n, "tf", &err), 0);
    assert_int_equal(n.mode, NORM_TF);
    n.mode = NORM_CAFFE;
    assert_int_equal(preprocess_norm_from_name(&n, "Caffe", &err), -1);
    assert_non_null(strstr(err.msg, "'Caffe'"));
    assert_int_equal(n.mode, NORM_CAFFE); /* untouched on failure */
    assert_int_equal(preprocess_norm_from_name(&n, "custom", &err), -1);
    assert_non_null(strstr(err.msg, "custom"));
    assert_int_equal(preprocess_norm_from_name(&n, "nope", NULL), -1);
    assert_string_equal(preprocess_norm_name(NORM_CAFFE), "caffe");
    assert_string_equal(preprocess_norm_name(NORM_TORCH), "torch");
    assert_string_equal(preprocess_norm_name(NORM_TF), "tf");
    assert_string_equal(preprocess_norm_name(NORM_CUSTOM), "custom");
}

static void expect_invalid(const Preprocess *p, const char *field)
{
    Error err;
    memset(&err, 0, sizeof err);
    assert_int_equal(preprocess_validate(p, &err), -1);
    if (!strstr(err.msg, field))
        fail_msg("error '%s' does not name '%s'", err.msg, field);
    assert_int_equal(preprocess_validate(p, NULL), -1);
}

static void test_validate(void **state)
{
    (void)state;
    Error err;
    Preprocess p = preprocess_default(224, RESIZE_CROP, "caffe");
    assert_int_equal(preprocess_validate(&p, &err), 0);
    p.size = 32;
    assert_int_equal(preprocess_validate(&p, &err), 0);
    p.size = 31;
    assert_int_equal(preprocess_validate(&p, &err), -1);
    assert_true(!strncmp(err.msg, "input_size must be >= 32", strlen("input_size must be >= 32")));
    p.size = 0;
    expect_invalid(&p, "input_size");
    p.size = PREPROCESS_MAX_SIZE + 1;
    expect_invalid(&p, "input_size");
    p.size = 64;
    p.resize = (ResizePolicy)7;
    expect_invalid(&p, "resize");
    p.resize = RESIZE_SQUASH;
    p.norm.mode = (NormMode)9;
    expect_invalid(&p, "normalization");

    p.norm = custom_norm();
    assert_int_equal(preprocess_validate(&p, &err), 0);
    const float bad[] = {0.0f, -1.0f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p.norm = custom_norm();
        p.norm.rescale = bad[i];
        expect_invalid(&p, "rescale");
        for (int c = 0; c < 3; c++) {
            p.norm = custom_norm();
            p.norm.std[c] = bad[i];
            char field[24];
            snprintf(field, sizeof field, "std[%d]", c);
            expect_invalid(&p, field);
        }
    }
    p.norm = custom_norm();
    p.norm.mean[1] = NAN;
    expect_invalid(&p, "mean[1]");
    /* a caffe/torch/tf mode ignores the custom numbers */
    p.norm.mode = NORM_TORCH;
    assert_int_equal(preprocess_validate(&p, &err), 0);

    p = preprocess_default(64, RESIZE_SQUASH, "torch");
    p.augment.hflip = 1;
    p.augment.crop_min = 0.08f;
    p.augment.crop_max = 1.0f;
    assert_int_equal(preprocess_validate(&p, &err), 0);
    p.augment.crop_min = p.augment.crop_max = 0.5f;
    assert_int_equal(preprocess_validate(&p, &err), 0);
    p.augment.crop_min = 0.0f;
    p.augment.crop_max = 0.0f;
    assert_int_equal(preprocess_validate(&p, &err), 0); /* off */
    p.augment.crop_max = 0.5f;
    expect_invalid(&p, "crop_min");
    p.augment.crop_min = -0.1f;
    expect_invalid(&p, "crop_min");
    p.augment.crop_min = NAN;
    expect_invalid(&p, "crop_min");
    p.augment.crop_min = 0.5f;
    p.augment.crop_max = 0.4f;
    expect_invalid(&p, "crop_max");
    p.augment.crop_max = 1.5f;
    expect_invalid(&p, "crop_max");
    p.augment.crop_min = 0.3f;
    p.augment.crop_max = 0.0f;
    expect_invalid(&p, "crop_max");
}

/* ---- stage 1 ------------------------------------------------------------------------ */

static void test_base_size_vs_torchvision(void **state)
{
    (void)state;
    Ref r;
    ref_open(&r, "preprocess_base_size.safetensors");
    int64_t shape[SAFETENSORS_MAX_DIMS];
    float *rows = ref_get(&r, "rows", shape, NULL);
    assert_int_equal(shape[1], 5);
    for (int64_t i = 0; i < shape[0]; i++) {
        const float *row = rows + i * 5;
        int w = (int)row[0], h = (int)row[1], size = (int)row[2];
        Preprocess p = preprocess_default(size, RESIZE_CROP, "torch");
        int bw, bh;
        preprocess_base_size(&p, w, h, &bw, &bh);
        if (bw != (int)row[3] || bh != (int)row[4])
            fail_msg("size %d, %dx%d: base %dx%d, torchvision Resize %dx%d", size, w, h, bw, bh,
                     (int)row[3], (int)row[4]);
        p.resize = RESIZE_SQUASH;
        preprocess_base_size(&p, w, h, &bw, &bh);
        assert_true(bw == size && bh == size);
    }
    print_message("  %lld sizes agree with torchvision Resize\n", (long long)shape[0]);
    free(rows);
    safetensors_close(&r.st);
    /* 224 -> 256, as torchvision's evaluation recipe */
    Preprocess p = preprocess_default(224, RESIZE_CROP, "torch");
    int bw, bh;
    preprocess_base_size(&p, 500, 375, &bw, &bh);
    assert_true(bw == 341 && bh == 256);
}

static void test_check_source(void **state)
{
    (void)state;
    Error err;
    Preprocess p = preprocess_default(224, RESIZE_CROP, "torch");
    assert_int_equal(preprocess_check_source(&p, 500, 375, &err), 0);
    assert_int_equal(preprocess_check_source(&p, 1, 1, &err), 0);
    assert_int_equal(preprocess_check_source(&p, 0, 10, &err), -1);
    assert_non_null(strstr(err.msg, "0 x 10"));
    assert_int_equal(preprocess_check_source(&p, 1, 50000000, &err), -1);
    assert_non_null(strstr(err.msg, "1 x 50000000"));
    int bw, bh; /* saturated, no overflow */
    preprocess_base_size(&p, 1, 50000000, &bw, &bh);
    assert_true(bw == 256 && bh > 0);
    p.resize = RESIZE_SQUASH;
    assert_int_equal(preprocess_check_source(&p, 1, 50000000, &err), 0);
}

static void test_resize_vs_torch(void **state)
{
    (void)state;
    Ref r;
    ref_open(&r, "preprocess_resize.safetensors");
    LevelDiff all = {0, 0, 0};
    int cases = 0;
    for (int i = 0; i < r.st.n_tensors; i++) {
        const char *name = r.st.tensors[i].name;
        size_t len = strlen(name);
        if (len < 4 || strcmp(name + len - 4, "/src"))
            continue;
        char case_name[256], want_name[262];
        snprintf(case_name, sizeof case_name, "%.*s", (int)(len - 4), name);
        snprintf(want_name, sizeof want_name, "%s/want", case_name);
        int w, h;
        uint8_t *src = ref_image(&r, name, &w, &h);
        int64_t shape[SAFETENSORS_MAX_DIMS];
        float *want = ref_get(&r, want_name, shape, NULL);
        int bh = (int)shape[0], bw = (int)shape[1];
        size_t n = (size_t)bw * bh * 3;
        uint8_t *dst = balloc(n);
        preprocess_resize(dst, bw, bh, src, w, h);
        bguard_check(dst, n, case_name);
        LevelDiff d = {0, 0, 0};
        for (size_t j = 0; j < n; j++) {
            double diff = fabs((double)dst[j] - (double)want[j]);
            level_diff_add(&d, diff, 0.0);
            level_diff_add(&all, diff, 0.0);
        }
        char what[300];
        snprintf(what, sizeof what, "%s (%dx%d -> %dx%d)", case_name, w, h, bw, bh);
        level_diff_assert(&d, what);
        free(src);
        free(want);
        free(dst);
        cases++;
    }
    assert_true(cases >= 8);
    level_diff_assert(&all, "all resize cases");
    safetensors_close(&r.st);
}

static void test_resize_properties(void **state)
{
    (void)state;
    /* same size: an exact copy */
    uint8_t *img = make_image(37, 23, 1);
    uint8_t *dst = balloc(37 * 23 * 3);
    preprocess_resize(dst, 37, 23, img, 37, 23);
    assert_memory_equal(dst, img, 37 * 23 * 3);
    bguard_check(dst, 37 * 23 * 3, "identity");
    free(dst);
    /* one axis unchanged: columns (rows) resampled independently of each other */
    dst = balloc(37 * 50 * 3);
    preprocess_resize(dst, 37, 50, img, 37, 23);
    uint8_t *col = balloc(1 * 23 * 3), *col_dst = balloc(1 * 50 * 3);
    for (int x = 0; x < 37; x += 9) {
        for (int y = 0; y < 23; y++)
            memcpy(col + y * 3, img + ((size_t)y * 37 + x) * 3, 3);
        preprocess_resize(col_dst, 1, 50, col, 1, 23);
        for (int y = 0; y < 50; y++)
            assert_memory_equal(col_dst + y * 3, dst + ((size_t)y * 37 + x) * 3, 3);
    }
    free(col);
    free(col_dst);
    free(dst);
    free(img);
    /* a constant image stays constant at any size */
    uint8_t flat[13 * 7 * 3];
    for (size_t i = 0; i < sizeof flat; i += 3) {
        flat[i] = 77;
        flat[i + 1] = 0;
        flat[i + 2] = 255;
    }
    int sizes[][2] = {{50, 3}, {1, 1}, {300, 2}, {6, 40}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int bw = sizes[k][0], bh = sizes[k][1];
        dst = balloc((size_t)bw * bh * 3);
        preprocess_resize(dst, bw, bh, flat, 13, 7);
        for (int i = 0; i < bw * bh; i++)
            assert_true(dst[i * 3] == 77 && dst[i * 3 + 1] == 0 && dst[i * 3 + 2] == 255);
        bguard_check(dst, (size_t)bw * bh * 3, "constant");
        free(dst);
    }
}

/* The naive bilinear resampler, one output value at a time, straight from the
 * contract in preprocess.h (torch 1.13's taps: scale in float, coordinate and
 * weights in double then float; blend in float, horizontal first; round half to
 * even, clamp). The optimised one (blocks, span limits, cached rows, gathers)
 * must give the same bits. Region (x0, y0, cw, ch) of a bw-wide RGB8 image. */
static void naive_tap(int o, int in, int out, int *i0, int *i1, float *w0, float *w1)
{
    if (in == out) {
        *i0 = *i1 = o;
        *w0 = 1.0f;
        *w1 = 0.0f;
        return;
    }
    double real = (double)((float)in / (float)out) * (o + 0.5) - 0.5;
    real = real < 0.0 ? 0.0 : real;
    int i = (int)floor(real);
    i = i > in - 1 ? in - 1 : i;
    double l = real - i;
    *i0 = i;
    *i1 = i < in - 1 ? i + 1 : i;
    *w0 = (float)(1.0 - l);
    *w1 = (float)l;
}

static float naive_bilinear(const uint8_t *img, int bw, int x0, int y0, int cw, int ch, int dw,
                            int dh, int x, int y, int c)
{
    int xa, xb, ya, yb;
    float wa, wb, ha, hb;
    naive_tap(x, cw, dw, &xa, &xb, &wa, &wb);
    naive_tap(y, ch, dh, &ya, &yb, &ha, &hb);
#define PX(yy, xx) ((float)img[((size_t)(y0 + (yy)) * bw + (size_t)(x0 + (xx))) * 3 + c])
    float t0 = PX(ya, xa) * wa + PX(ya, xb) * wb;
    float t1 = PX(yb, xa) * wa + PX(yb, xb) * wb;
#undef PX
    float v = nearbyintf(t0 * ha + t1 * hb);
    return v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
}

static void test_resize_vs_naive(void **state)
{
    (void)state;
    Rng r;
    rng_seed(&r, 77);
    /* span-limited blocks (downscales of 5x and more), block boundaries, 1 pixel */
    const int fixed[][4] = {{2500, 2, 3, 5}, {3000, 30, 40, 17}, {5000, 2, 1000, 3},
                            {4100, 3, 700, 2}, {1030, 4, 1100, 3}, {1, 1, 300, 2},
                            {257, 3, 256, 7}, {600, 20, 520, 40}};
    const int nfixed = (int)(sizeof fixed / sizeof fixed[0]);
    for (int t = 0; t < 40; t++) {
        int w, h, bw, bh;
        if (t < nfixed) {
            w = fixed[t][0]; h = fixed[t][1]; bw = fixed[t][2]; bh = fixed[t][3];
        } else {
            w = 1 + (int)rng_below(&r, 700);
            h = 1 + (int)rng_below(&r, 60);
            bw = 1 + (int)rng_below(&r, 700);
            bh = 1 + (int)rng_below(&r, 60);
        }
        uint8_t *img = make_image(w, h, 1000 + (uint64_t)t);
        uint8_t *dst = balloc((size_t)bw * bh * 3);
        preprocess_resize(dst, bw, bh, img, w, h);
        bguard_check(dst, (size_t)bw * bh * 3, "resize");
        for (int y = 0; y < bh; y++)
            for (int x = 0; x < bw; x++)
                for (int c = 0; c < 3; c++) {
                    float want = naive_bilinear(img, w, 0, 0, w, h, bw, bh, x, y, c);
                    if ((float)dst[((size_t)y * bw + x) * 3 + c] != want)
                        fail_msg("%dx%d -> %dx%d at (%d, %d, %d): %d, naive %g", w, h, bw, bh,
                                 x, y, c, dst[((size_t)y * bw + x) * 3 + c], (double)want);
                }
        free(dst);
        /* a crop of it resized to size x size, flipped or not (stage 2) */
        if (w >= 2 && h >= 2) {
            Preprocess p = preprocess_default(32, RESIZE_SQUASH, "torch");
            p.norm = identity_norm();
            PreprocessCrop c;
            c.w = 1 + (int)rng_below(&r, (uint64_t)w);
            c.h = 1 + (int)rng_below(&r, (uint64_t)h);
            c.x = (int)rng_below(&r, (uint64_t)(w - c.w + 1));
            c.y = (int)rng_below(&r, (uint64_t)(h - c.h + 1));
            c.flip = t & 1;
            size_t n = (size_t)p.size * p.size * 3;
            float *out = falloc(n);
            preprocess_finish_crop(out, img, w, h, &p, &c);
            fguard_check(out, n, "finish_crop");
            for (int y = 0; y < p.size; y++)
                for (int x = 0; x < p.size; x++)
                    for (int ch = 0; ch < 3; ch++) {
                        int sx = c.flip ? p.size - 1 - x : x;
                        float want = c.w == p.size && c.h == p.size
                            ? (float)img[((size_t)(c.y + y) * w + c.x + sx) * 3 + ch]
                            : naive_bilinear(img, w, c.x, c.y, c.w, c.h, p.size, p.size, sx, y, ch);
                        if (out[((size_t)y * p.size + x) * 3 + ch] != want)
                            fail_msg("crop %d,%d %dx%d of %dx%d at (%d, %d, %d): %g, naive %g",
                                     c.x, c.y, c.w, c.h, w, h, x, y, ch,
                                     (double)out[((size_t)y * p.size + x) * 3 + ch], (double)want);
                    }
            free(out);
        }
        free(img);
    }
}

/* ---- stage 2 and the whole pipeline ---------------------------------------------- */

static const char *const MODES[] = {"caffe", "torch", "tf", "custom"};

static void test_pipeline_vs_torchvision(void **state)
{
    (void)state;
    Ref r;
    ref_open(&r, "preprocess_pipeline.safetensors");
    const char *images[] = {"A", "B", "C"};
    const char *policies[] = {"squash", "crop"};
    for (int pi = 0; pi < 2; pi++)
        for (int mi = 0; mi < 4; mi++) {
            LevelDiff d = {0, 0, 0};
            for (int ii = 0; ii < 3; ii++) {
                char name[64];
                snprintf(name, sizeof name, "src/%s", images[ii]);
                int w, h;
                uint8_t *src = ref_image(&r, name, &w, &h);
                snprintf(name, sizeof name, "%s/%s/%s", policies[pi], MODES[mi], images[ii]);
                int64_t shape[SAFETENSORS_MAX_DIMS];
                float *want = ref_get(&r, name, shape, NULL);
                Preprocess p = preprocess_default((int)shape[0],
                                                  pi ? RESIZE_CROP : RESIZE_SQUASH, "torch");
                p.norm = norm_by_name(MODES[mi]);
                assert_int_equal(preprocess_validate(&p, NULL), 0);
                int bw, bh;
                preprocess_base_size(&p, w, h, &bw, &bh);
                uint8_t *scratch = balloc((size_t)bw * bh * 3);
                size_t n = (size_t)p.size * p.size * 3;
                float *out = falloc(n);
                preprocess_image(out, src, w, h, &p, NULL, scratch);
                fguard_check(out, n, name);
                bguard_check(scratch, (size_t)bw * bh * 3, name);
                double step[3];
                level_step(&p.norm, step);
                for (size_t j = 0; j < n; j++)
                    level_diff_add(&d, fabs((double)out[j] - (double)want[j]) / step[j % 3],
                                   1e-3);
                free(src);
                free(want);
                free(scratch);
                free(out);
            }
            char what[64];
            snprintf(what, sizeof what, "pipeline %s/%s (3 images)", policies[pi], MODES[mi]);
            level_diff_assert(&d, what);
        }
    safetensors_close(&r.st);
}

static void test_finish_formulas(void **state)
{
    (void)state;
    Ref r;
    ref_open(&r, "preprocess_pipeline.safetensors");
    int bw, bh;
    uint8_t *base = ref_image(&r, "finish/base", &bw, &bh);
    for (int mi = 0; mi < 4; mi++) {
        char name[64];
        snprintf(name, sizeof name, "finish/%s", MODES[mi]);
        int64_t shape[SAFETENSORS_MAX_DIMS];
        float *want = ref_get(&r, name, shape, NULL);
        Preprocess p = preprocess_default((int)shape[0], RESIZE_CROP, "torch");
        p.norm = norm_by_name(MODES[mi]);
        size_t n = (size_t)p.size * p.size * 3;
        float *out = falloc(n);
        preprocess_finish(out, base, bw, bh, &p, NULL);
        fguard_check(out, n, name);
        double worst = 0.0;
        for (size_t j = 0; j < n; j++) {
            double d = fabs((double)out[j] - (double)want[j]);
            worst = d > worst ? d : worst;
        }
        print_message("  %-14s max |diff| %.3g\n", name, worst);
        if (p.norm.mode == NORM_CAFFE)
            assert_memory_equal(out, want, n * sizeof(float)); /* x - mean, bit for bit */
        else if (worst > 2e-6)
            fail_msg("%s: max |diff| %.3g > 2e-6", name, worst);
        /* the preset's numbers through the custom path give the same tensor */
        if (p.norm.mode != NORM_CUSTOM) {
            float *alt = falloc(n);
            p.norm.mode = NORM_CUSTOM;
            assert_int_equal(preprocess_validate(&p, NULL), 0);
            preprocess_finish(alt, base, bw, bh, &p, NULL);
            for (size_t j = 0; j < n; j++)
                if (fabsf(alt[j] - out[j]) > 2e-6f)
                    fail_msg("%s as custom: element %zu %g vs %g", name, j, (double)alt[j],
                             (double)out[j]);
            free(alt);
        }
        free(want);
        free(out);
    }
    free(base);
    safetensors_close(&r.st);
}

static void test_centre_crop_offsets(void **state)
{
    (void)state;
    /* torchvision: int(round((bw - size) / 2.0)), Python rounding ties to even */
    const int cases[][3] = {{32, 32, 0}, {33, 32, 0}, {34, 32, 1}, {35, 32, 2}, {36, 32, 2},
                            {37, 32, 2}, {38, 32, 3}, {39, 32, 4}, {292, 256, 18}, {293, 256, 18}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Preprocess p = preprocess_default(cases[i][1], RESIZE_CROP, "torch");
        PreprocessCrop c;
        preprocess_crop_draw(&c, &p, cases[i][0], cases[i][0] + 3, NULL);
        assert_int_equal(c.x, cases[i][2]);
        assert_int_equal(c.w, cases[i][1]);
        assert_int_equal(c.h, cases[i][1]);
        assert_int_equal(c.flip, 0);
    }
    Preprocess p = preprocess_default(32, RESIZE_CROP, "torch");
    PreprocessCrop c;
    preprocess_crop_draw(&c, &p, 32, 35, NULL);
    assert_true(c.x == 0 && c.y == 2);
}

/* ---- augmentation ------------------------------------------------------------------ */

static void test_rrc_resize_vs_torch(void **state)
{
    (void)state;
    Ref r;
    ref_open(&r, "preprocess_rrc.safetensors");
    int bw, bh;
    uint8_t *base = ref_image(&r, "rrc/base", &bw, &bh);
    int64_t shape[SAFETENSORS_MAX_DIMS];
    float *boxes = ref_get(&r, "rrc/boxes", shape, NULL);
    LevelDiff all = {0, 0, 0};
    for (int64_t k = 0; k < shape[0]; k++) {
        const float *b = boxes + k * 5;
        PreprocessCrop c = {(int)b[0], (int)b[1], (int)b[2], (int)b[3], (int)b[4]};
        char name[32];
        snprintf(name, sizeof name, "rrc/%lld", (long long)k);
        int64_t wshape[SAFETENSORS_MAX_DIMS];
        float *want = ref_get(&r, name, wshape, NULL);
        Preprocess p = preprocess_default((int)wshape[0], RESIZE_SQUASH, "torch");
        p.norm = identity_norm();
        size_t n = (size_t)p.size * p.size * 3;
        float *out = falloc(n);
        preprocess_finish_crop(out, base, bw, bh, &p, &c);
        fguard_check(out, n, name);
        LevelDiff d = {0, 0, 0};
        for (size_t j = 0; j < n; j++) {
            double diff = fabs((double)out[j] - (double)want[j]);
            level_diff_add(&d, diff, 0.0);
            level_diff_add(&all, diff, 0.0);
        }
        char what[96];
        snprintf(what, sizeof what, "crop %d,%d %dx%d%s -> %d", c.x, c.y, c.w, c.h,
                 c.flip ? " flipped" : "", p.size);
        level_diff_assert(&d, what);
        free(want);
        free(out);
    }
    level_diff_assert(&all, "all resized crops");
    free(boxes);
    free(base);
    safetensors_close(&r.st);
}

static void test_rrc_draw_vs_torchvision(void **state)
{
    (void)state;
    Ref r;
    ref_open(&r, "preprocess_rrc.safetensors");
    int64_t shape[SAFETENSORS_MAX_DIMS];
    float *rows = ref_get(&r, "draw/cases", shape, NULL);
    assert_int_equal(shape[1], 11);
    int fallbacks = 0;
    for (int64_t i = 0; i < shape[0]; i++) {
        const float *row = rows + i * 11;
        Preprocess p = preprocess_default(32, RESIZE_SQUASH, "torch");
        p.augment.crop_min = row[3];
        p.augment.crop_max = row[4];
        p.augment.hflip = (int)row[5];
        int bw = (int)row[1], bh = (int)row[2];
        Rng rng;
        rng_seed(&rng, (uint64_t)row[0]);
        PreprocessCrop c;
        preprocess_crop_draw(&c, &p, bw, bh, &rng);
        if (c.x != (int)row[6] || c.y != (int)row[7] || c.w != (int)row[8] ||
            c.h != (int)row[9] || c.flip != (int)row[10])
            fail_msg("seed %d, base %dx%d, scale %g..%g: crop %d,%d %dx%d flip %d; torchvision "
                     "%d,%d %dx%d flip %d", (int)row[0], bw, bh, (double)row[3], (double)row[4],
                     c.x, c.y, c.w, c.h, c.flip, (int)row[6], (int)row[7], (int)row[8],
                     (int)row[9], (int)row[10]);
        if (bw == 400 || bw == 30)
            fallbacks++;
    }
    print_message("  %lld draws agree with RandomResizedCrop.get_params (%d fallbacks)\n",
                  (long long)shape[0], fallbacks);
    free(rows);
    safetensors_close(&r.st);
}

static float *run_finish(const uint8_t *base, int bw, int bh, const Preprocess *p, Rng *rng)
{
    size_t n = (size_t)p->size * p->size * 3;
    float *out = falloc(n);
    preprocess_finish(out, base, bw, bh, p, rng);
    fguard_check(out, n, "preprocess_finish");
    for (size_t j = 0; j < n; j++)
        if (!isfinite(out[j]))
            fail_msg("element %zu not written", j);
    return out;
}

static void test_augment_seeded(void **state)
{
    (void)state;
    const int bw = 73, bh = 73;
    uint8_t *base = make_image(bw, bh, 7);
    Preprocess p = preprocess_default(64, RESIZE_CROP, "torch");
    p.augment.hflip = 1;
    p.augment.crop_min = 0.08f;
    p.augment.crop_max = 1.0f;
    size_t n = (size_t)p.size * p.size * 3;
    Rng a, b;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    float *x = run_finish(base, bw, bh, &p, &a);
    float *y = run_finish(base, bw, bh, &p, &b);
    assert_memory_equal(x, y, n * sizeof(float));
    assert_true(a.state == b.state);
    free(y);
    for (uint64_t seed = 0; seed < 20; seed++) {
        Rng c;
        rng_seed(&c, seed);
        y = run_finish(base, bw, bh, &p, &c);
        if (!memcmp(x, y, n * sizeof(float)))
            fail_msg("seed %llu gives the same tensor as seed 42", (unsigned long long)seed);
        free(y);
    }
    free(x);
    free(base);
}

static void test_crops_inside(void **state)
{
    (void)state;
    const int bases[][2] = {{73, 73}, {341, 256}, {256, 341}, {32, 32}, {400, 40}};
    const float ranges[][2] = {{0.08f, 1.0f}, {0.5f, 0.5f}, {1.0f, 1.0f}};
    int flips = 0, draws = 0;
    for (size_t bi = 0; bi < sizeof bases / sizeof bases[0]; bi++)
        for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++) {
            int bw = bases[bi][0], bh = bases[bi][1];
            Preprocess p = preprocess_default(32, RESIZE_CROP, "torch");
            p.augment.hflip = 1;
            p.augment.crop_min = ranges[ri][0];
            p.augment.crop_max = ranges[ri][1];
            int xmin = bw, xmax = 0;
            for (uint64_t seed = 0; seed < 400; seed++) {
                Rng rng;
                rng_seed(&rng, seed * 7919 + bi);
                PreprocessCrop c;
                preprocess_crop_draw(&c, &p, bw, bh, &rng);
                if (c.x < 0 || c.y < 0 || c.w < 1 || c.h < 1 || c.x + c.w > bw || c.y + c.h > bh)
                    fail_msg("base %dx%d: crop %d,%d %dx%d outside", bw, bh, c.x, c.y, c.w, c.h);
                double ratio = (double)c.w / c.h;
                double scale = (double)c.w * c.h / ((double)bw * bh);
                int fallback = bw == 400 || (ranges[ri][0] == 1.0f && bw != bh);
                if (!fallback) {
                    /* rounding w and h moves them by half a pixel at most */
                    double slack = 1.0 / c.w + 1.0 / c.h;
                    if (ratio < 0.75 * (1 - slack) || ratio > 4.0 / 3.0 * (1 + slack))
                        fail_msg("base %dx%d: crop %dx%d ratio %g", bw, bh, c.w, c.h, ratio);
                    if (scale < ranges[ri][0] * (1 - slack) || scale > ranges[ri][1] * (1 + slack))
                        fail_msg("base %dx%d: crop %dx%d scale %g", bw, bh, c.w, c.h, scale);
                }
                xmin = c.x < xmin ? c.x : xmin;
                xmax = c.x + c.w > xmax ? c.x + c.w : xmax;
                flips += c.flip;
                draws++;
            }
            if (bw > 32 && ranges[ri][0] < 1.0f && bw != 400) /* placement spans the base */
                assert_true(xmin <= bw / 10 && xmax >= bw - bw / 10);
        }
    double frac = (double)flips / draws;
    print_message("  %d draws inside the base, %.3f flipped\n", draws, frac);
    assert_true(frac > 0.46 && frac < 0.54);
}

static void test_flip_is_exact_mirror(void **state)
{
    (void)state;
    const int bw = 40, bh = 36; /* bw - size even: the centre crop is symmetric */
    uint8_t *base = make_image(bw, bh, 11);
    uint8_t *mirrored = mirror_image(base, bw, bh);
    Preprocess p = preprocess_default(32, RESIZE_CROP, "caffe");
    p.augment.hflip = 1;
    size_t n = (size_t)p.size * p.size * 3;
    /* the Rng path: find a seed that flips and one that does not */
    int seen[2] = {0, 0};
    for (uint64_t seed = 0; seed < 64 && !(seen[0] && seen[1]); seed++) {
        Rng rng, probe;
        rng_seed(&rng, seed);
        probe = rng;
        PreprocessCrop c;
        preprocess_crop_draw(&c, &p, bw, bh, &probe);
        float *got = run_finish(base, bw, bh, &p, &rng);
        assert_true(rng.state == probe.state);
        float *want = run_finish(c.flip ? mirrored : base, bw, bh, &p, NULL);
        assert_memory_equal(got, want, n * sizeof(float));
        seen[c.flip] = 1;
        free(got);
        free(want);
    }
    assert_true(seen[0] && seen[1]);
    /* forced flips: any box, copy path (exact) and resize path (one level) */
    p.norm = identity_norm();
    const PreprocessCrop boxes[] = {{3, 1, 32, 32, 1}, {0, 4, 32, 32, 1}, {8, 4, 32, 32, 1},
                                    {2, 3, 21, 30, 1}, {5, 0, 35, 36, 1}};
    for (size_t k = 0; k < sizeof boxes / sizeof boxes[0]; k++) {
        PreprocessCrop c = boxes[k], m = boxes[k];
        m.flip = 0;
        m.x = bw - c.x - c.w;
        float *got = falloc(n), *want = falloc(n);
        preprocess_finish_crop(got, base, bw, bh, &p, &c);
        preprocess_finish_crop(want, mirrored, bw, bh, &p, &m);
        if (c.w == p.size && c.h == p.size) {
            assert_memory_equal(got, want, n * sizeof(float));
        } else {
            LevelDiff d = {0, 0, 0};
            for (size_t j = 0; j < n; j++)
                level_diff_add(&d, fabs((double)got[j] - (double)want[j]), 0.0);
            level_diff_assert(&d, "flipped resized crop vs mirrored input");
        }
        /* and the flip mirrors the unflipped output exactly */
        PreprocessCrop u = c;
        u.flip = 0;
        preprocess_finish_crop(want, base, bw, bh, &p, &u);
        for (int y = 0; y < p.size; y++)
            for (int x = 0; x < p.size; x++)
                assert_memory_equal(got + ((size_t)y * p.size + x) * 3,
                                    want + ((size_t)y * p.size + (p.size - 1 - x)) * 3,
                                    3 * sizeof(float));
        free(got);
        free(want);
    }
    free(base);
    free(mirrored);
}

/* Train with augmentation off and val give identical bytes; augmentation settings
 * without an Rng change nothing; an Rng with augmentation off is not consumed. */
static void test_no_rng_is_identical(void **state)
{
    (void)state;
    const int sizes[][2] = {{50, 37}, {29, 41}, {32, 32}, {64, 64}};
    for (int policy = 0; policy < 2; policy++)
        for (int mi = 0; mi < 4; mi++)
            for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
                int w = sizes[si][0], h = sizes[si][1];
                uint8_t *img = make_image(w, h, 100 + si);
                Preprocess plain = preprocess_default(32, policy ? RESIZE_CROP : RESIZE_SQUASH,
                                                      "torch");
                plain.norm = norm_by_name(MODES[mi]);
                Preprocess aug = plain;
                aug.augment.hflip = 1;
                aug.augment.crop_min = 0.08f;
                aug.augment.crop_max = 1.0f;
                int bw, bh;
                preprocess_base_size(&plain, w, h, &bw, &bh);
                uint8_t *scratch = balloc((size_t)bw * bh * 3);
                size_t n = (size_t)plain.size * plain.size * 3;
                float *a = falloc(n), *b = falloc(n), *c = falloc(n);
                preprocess_image(a, img, w, h, &plain, NULL, scratch);
                preprocess_image(b, img, w, h, &aug, NULL, scratch);
                assert_memory_equal(a, b, n * sizeof(float));
                Rng rng;
                rng_seed(&rng, 5);
                uint64_t before = rng.state;
                preprocess_image(c, img, w, h, &plain, &rng, scratch);
                assert_memory_equal(a, c, n * sizeof(float));
                assert_true(rng.state == before);
                /* stage 2 on its own, from the base */
                preprocess_resize(scratch, bw, bh, img, w, h);
                preprocess_finish(c, scratch, bw, bh, &aug, NULL);
                assert_memory_equal(a, c, n * sizeof(float));
                fguard_check(a, n, "plain");
                fguard_check(b, n, "aug");
                fguard_check(c, n, "finish");
                free(a);
                free(b);
                free(c);
                free(scratch);
                free(img);
            }
}

/* ---- input statistics ----------------------------------------------------------- */

static void test_input_stats_direct(void **state)
{
    (void)state;
    const int64_t n = 1237;
    float *x = malloc((size_t)n * 3 * sizeof(float));
    assert_non_null(x);
    Rng r;
    rng_seed(&r, 3);
    for (int64_t i = 0; i < n; i++) {
        x[i * 3 + 0] = 100.0f + 50.0f * rng_normal(&r);
        x[i * 3 + 1] = -3.0f + 0.01f * rng_normal(&r);
        x[i * 3 + 2] = rng_uniform(&r);
    }
    InputStats s;
    input_stats_reset(&s);
    double mean[3], std[3];
    input_stats_get(&s, mean, std);
    assert_true(mean[0] == 0.0 && std[2] == 0.0 && s.count == 0);
    /* uneven pieces: every tail length of the 4-pixel lanes */
    const int64_t pieces[] = {1, 2, 3, 4, 5, 7, 100, 0, 615};
    int64_t at = 0;
    for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
        input_stats_add(&s, x + at * 3, pieces[k]);
        at += pieces[k];
    }
    input_stats_add(&s, x + at * 3, n - at);
    assert_int_equal(s.count, n);
    input_stats_get(&s, mean, std);
    for (int c = 0; c < 3; c++) {
        double m = 0.0, v = 0.0;
        float mn = INFINITY, mx = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            m += x[i * 3 + c];
            mn = x[i * 3 + c] < mn ? x[i * 3 + c] : mn;
            mx = x[i * 3 + c] > mx ? x[i * 3 + c] : mx;
        }
        m /= (double)n;
        for (int64_t i = 0; i < n; i++)
            v += (x[i * 3 + c] - m) * (x[i * 3 + c] - m);
        double sd = sqrt(v / (double)n);
        print_message("  channel %d: mean %.9g (direct %.9g), std %.9g (direct %.9g)\n", c,
                      mean[c], m, std[c], sd);
        assert_true(fabs(mean[c] - m) <= 1e-12 * (1.0 + fabs(m)));
        assert_true(fabs(std[c] - sd) <= 1e-9 * (1.0 + fabs(m)));
        assert_true(s.min[c] == mn && s.max[c] == mx);
    }
    input_stats_reset(&s);
    assert_true(s.count == 0 && s.sum[0] == 0.0 && isinf(s.min[0]) && s.min[0] > 0);
    free(x);
}

/* Model-input statistics of a batch of preprocessed images. */
static InputStats stats_of(const Preprocess *p, int count)
{
    InputStats s;
    input_stats_reset(&s);
    size_t n = (size_t)p->size * p->size * 3;
    float *out = falloc(n);
    for (int i = 0; i < count; i++) {
        int w = 60 + 13 * i, h = 48 + 7 * i, bw, bh;
        uint8_t *img = make_image(w, h, 500 + (uint64_t)i);
        preprocess_base_size(p, w, h, &bw, &bh);
        uint8_t *scratch = balloc((size_t)bw * bh * 3);
        preprocess_image(out, img, w, h, p, NULL, scratch);
        input_stats_add(&s, out, (int64_t)p->size * p->size);
        free(scratch);
        free(img);
    }
    free(out);
    return s;
}

static void test_input_stats_double_scaling(void **state)
{
    (void)state;
    Preprocess caffe = preprocess_default(32, RESIZE_CROP, "caffe");
    /* the mistake: rescale=1/255 before caffe's preprocess_input */
    Preprocess twice = caffe;
    twice.norm.mode = NORM_CUSTOM;
    twice.norm.rescale = 1.0f / 255.0f;
    twice.norm.bgr = 1;
    for (int c = 0; c < 3; c++) {
        twice.norm.mean[c] = (float[]){103.939f, 116.779f, 123.68f}[c];
        twice.norm.std[c] = 1.0f;
    }
    assert_int_equal(preprocess_validate(&twice, NULL), 0);
    InputStats ok = stats_of(&caffe, 4), bad = stats_of(&twice, 4);
    double mok[3], sok[3], mbad[3], sbad[3];
    input_stats_get(&ok, mok, sok);
    input_stats_get(&bad, mbad, sbad);
    const float mean_bgr[3] = {103.939f, 116.779f, 123.68f};
    for (int c = 0; c < 3; c++) {
        print_message("  channel %d (BGR): caffe [%.3f, %.3f] mean %.3f std %.3f | /255 + caffe "
                      "[%.4f, %.4f] mean %.4f std %.4f\n", c, (double)ok.min[c],
                      (double)ok.max[c], mok[c], sok[c], (double)bad.min[c], (double)bad.max[c],
                      mbad[c], sbad[c]);
        /* caffe: 0..255 minus the mean, a range about 255 wide */
        assert_true(ok.max[c] - ok.min[c] > 250.0f && ok.max[c] - ok.min[c] <= 255.0f + 1e-3f);
        assert_true(ok.min[c] >= -mean_bgr[c] - 1e-3f && ok.max[c] <= 255.0f - mean_bgr[c] + 1e-3f);
        assert_true(sok[c] > 30.0);
        /* double scaling: about 1 wide, inside [-123.68, -102.939] */
        assert_true(bad.max[c] - bad.min[c] > 0.95f && bad.max[c] - bad.min[c] <= 1.0f + 1e-4f);
        assert_true(bad.min[c] >= -mean_bgr[c] - 1e-4f && bad.max[c] <= 1.0f - mean_bgr[c] + 1e-4f);
        assert_true(sbad[c] < 0.5);
    }
    assert_true(bad.min[2] >= -123.681f && bad.max[0] <= -102.938f);
}

/* auto follows the weights; a contradicting mode needs the override and is flagged. */
static void test_resolve_norm(void **state)
{
    (void)state;
    Normalization n;
    Error err;
    int over = -1;
    assert_int_equal(preprocess_resolve_norm(&n, "auto", "caffe", 0, &over, &err), 0);
    assert_int_equal(n.mode, NORM_CAFFE);
    assert_int_equal(over, 0);
    assert_int_equal(preprocess_resolve_norm(&n, "auto", "torch", 0, &over, &err), 0);
    assert_int_equal(n.mode, NORM_TORCH);
    assert_int_equal(preprocess_resolve_norm(&n, "torch", "torch", 0, &over, &err), 0);
    assert_int_equal(over, 0);
    assert_int_equal(preprocess_resolve_norm(&n, "auto", NULL, 0, &over, &err), -1);
    assert_non_null(strstr(err.msg, "declare none"));
    assert_int_equal(preprocess_resolve_norm(&n, "tf", "caffe", 0, &over, &err), -1);
    assert_non_null(strstr(err.msg, "\"tf\" contradicts the weights"));
    assert_non_null(strstr(err.msg, "\"caffe\""));
    assert_int_equal(preprocess_resolve_norm(&n, "tf", "caffe", 1, &over, &err), 0);
    assert_int_equal(n.mode, NORM_TF);
    assert_int_equal(over, 1);
    /* random weights declare nothing: any named mode is fine */
    assert_int_equal(preprocess_resolve_norm(&n, "caffe", "", 0, &over, &err), 0);
    assert_int_equal(over, 0);
    assert_int_equal(preprocess_resolve_norm(&n, "bogus", "caffe", 1, &over, &err), -1);
    /* custom: numbers set by the caller, checked against the declaration */
    memset(&n, 0, sizeof n);
    n.mode = NORM_CUSTOM;
    n.rescale = 1.0f / 255;
    n.std[0] = n.std[1] = n.std[2] = 1.0f;
    assert_int_equal(preprocess_resolve_norm(&n, NULL, "caffe", 0, &over, &err), -1);
    assert_int_equal(preprocess_resolve_norm(&n, NULL, "caffe", 1, &over, &err), 0);
    assert_int_equal(over, 1);
    assert_int_equal(n.mode, NORM_CUSTOM);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_norm),
        cmocka_unit_test(test_norm_names),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_base_size_vs_torchvision),
        cmocka_unit_test(test_check_source),
        cmocka_unit_test(test_resize_vs_torch),
        cmocka_unit_test(test_resize_properties),
        cmocka_unit_test(test_resize_vs_naive),
        cmocka_unit_test(test_pipeline_vs_torchvision),
        cmocka_unit_test(test_finish_formulas),
        cmocka_unit_test(test_centre_crop_offsets),
        cmocka_unit_test(test_rrc_resize_vs_torch),
        cmocka_unit_test(test_rrc_draw_vs_torchvision),
        cmocka_unit_test(test_augment_seeded),
        cmocka_unit_test(test_crops_inside),
        cmocka_unit_test(test_flip_is_exact_mirror),
        cmocka_unit_test(test_no_rng_is_identical),
        cmocka_unit_test(test_input_stats_direct),
        cmocka_unit_test(test_input_stats_double_scaling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
