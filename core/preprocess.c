/*
 * preprocess.c: decoded RGB8 image -> model input tensor (see preprocess.h).
 *
 * Stage 1 (bilinear resize to the base image) and the resize inside a random
 * resized crop share one resampler that follows PyTorch's CPU bilinear kernel
 * (aten/src/ATen/native/UpSample.h, cpu/UpSampleKernel.cpp): the same taps and
 * weights, blended in float in the same order, so its results agree with torch
 * to the last bit except where torch's build contracts a multiply-add into an
 * FMA (a level apart after rounding, rarely). Stage 2 writes pixel
 * levels (0..255, RGB) into the output and then normalises them in place with
 * one per-channel multiply-add.
 */
#include "preprocess.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* Hot per-pixel loops are compiled for AVX-512, AVX2 and baseline x86-64 and
 * picked at load time, as in kernels.c. The C11 build does not contract a*b+c
 * into FMA, so every clone computes the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PREPROCESS_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PREPROCESS_CLONES
#endif

/* Output columns per block of precomputed horizontal taps, and the most source
 * columns one block may read (stack arrays: under 40 KiB in all). */
#define RESIZE_BLOCK 256
#define RESIZE_SPAN 1024

/* Adding and subtracting 1.5 * 2^23 rounds a float in [-2^22, 2^22] to an integer,
 * ties to even (the default rounding mode), as torch.round does; unlike rintf it
 * is no library call on baseline x86-64 and it vectorises. */
#define ROUND_MAGIC 12582912.0f

static const float CAFFE_MEAN_BGR[3] = {103.939f, 116.779f, 123.68f};
static const float TORCH_MEAN[3] = {0.485f, 0.456f, 0.406f};
static const float TORCH_STD[3] = {0.229f, 0.224f, 0.225f};

/* ---- names and validation ------------------------------------------------------ */

const char *preprocess_norm_name(NormMode m)
{
    switch (m) {
    case NORM_CAFFE: return "caffe";
    case NORM_TORCH: return "torch";
    case NORM_TF: return "tf";
    case NORM_CUSTOM: return "custom";
    }
    return "unknown";
}

int preprocess_norm_from_name(Normalization *n, const char *name, Error *err)
{
    Normalization r;
    memset(&r, 0, sizeof r);
    if (!strcmp(name, "caffe")) {
        r.mode = NORM_CAFFE;
        r.rescale = 1.0f;
        for (int c = 0; c < 3; c++) {
            r.mean[c] = CAFFE_MEAN_BGR[c];
            r.std[c] = 1.0f;
        }
        r.bgr = 1;
    } else if (!strcmp(name, "torch")) {
        r.mode = NORM_TORCH;
        r.rescale = 1.0f / 255.0f;
        memcpy(r.mean, TORCH_MEAN, sizeof r.mean);
        memcpy(r.std, TORCH_STD, sizeof r.std);
    } else if (!strcmp(name, "tf")) {
        r.mode = NORM_TF;
        r.rescale = 1.0f / 127.5f;
        for (int c = 0; c < 3; c++) {
            r.mean[c] = 1.0f;
            r.std[c] = 1.0f;
        }
    } else if (!strcmp(name, "custom")) {
        return error_set(err, "normalization 'custom' has no preset: set rescale, mean, std "
                              "and bgr");
    } else {
        return error_set(err, "unknown normalization '%s' (caffe, torch or tf)", name);
    }
    *n = r;
    return 0;
}

int preprocess_validate(const Preprocess *p, Error *err)
{
    if (p->size < 32)
        return error_set(err, "input_size must be >= 32 (got %d): ResNet50 downsamples 32x",
                         p->size);
    if (p->size > PREPROCESS_MAX_SIZE)
        return error_set(err, "input_size must be <= %d (got %d)", PREPROCESS_MAX_SIZE, p->size);
    if (p->resize != RESIZE_SQUASH && p->resize != RESIZE_CROP)
        return error_set(err, "resize must be squash or crop (got %d)", (int)p->resize);
    const Normalization *n = &p->norm;
    switch (n->mode) {
    case NORM_CAFFE: case NORM_TORCH: case NORM_TF:
        break;
    case NORM_CUSTOM:
        /* !(x > 0) also refuses NaN */
        if (!(n->rescale > 0.0f) || isinf(n->rescale))
            return error_set(err, "rescale must be > 0 and finite (got %g)", (double)n->rescale);
        for (int c = 0; c < 3; c++) {
            if (!(n->std[c] > 0.0f) || isinf(n->std[c]))
                return error_set(err, "std[%d] must be > 0 and finite (got %g)", c,
                                 (double)n->std[c]);
            if (!isfinite(n->mean[c]))
                return error_set(err, "mean[%d] must be finite (got %g)", c, (double)n->mean[c]);
        }
        break;
    default:
        return error_set(err, "normalization mode %d is not caffe, torch, tf or custom",
                         (int)n->mode);
    }
    const Augment *a = &p->augment;
    if (a->crop_min != 0.0f || a->crop_max != 0.0f) {
        if (!(a->crop_min > 0.0f))
            return error_set(err, "crop_min must be > 0 (got %g; crop_min = crop_max = 0 "
                                  "turns the random crop off)", (double)a->crop_min);
        if (!(a->crop_max <= 1.0f))
            return error_set(err, "crop_max must be <= 1 (got %g)", (double)a->crop_max);
        if (!(a->crop_min <= a->crop_max))
            return error_set(err, "crop_min (%g) must be <= crop_max (%g)", (double)a->crop_min,
                             (double)a->crop_max);
    }
    return 0;
}

/* ---- base size ------------------------------------------------------------------ */

/* round(size * 256 / 224): size * 8 / 7 is never a tie, so rounding up from 0.5
 * agrees with Python's round. */
static int crop_short_side(int size)
{
    return (int)(((int64_t)size * 256 + 112) / 224);
}

void preprocess_base_size(const Preprocess *p, int w, int h, int *bw, int *bh)
{
    assert(w >= 1 && h >= 1);
    if (p->resize == RESIZE_SQUASH) {
        *bw = p->size;
        *bh = p->size;
        return;
    }
    int s = crop_short_side(p->size);
    int shorter = w <= h ? w : h, longer = w <= h ? h : w;
    /* Python: int(s * long / short), an exact integer product then one correctly
     * rounded division, then truncation: the same in double (products < 2^53). */
    double l = (double)((int64_t)s * longer) / (double)shorter;
    int nl = l >= (double)(INT_MAX / 4) ? INT_MAX / 4 : (int)l;
    *bw = w <= h ? s : nl;
    *bh = w <= h ? nl : s;
}

int preprocess_check_source(const Preprocess *p, int w, int h, Error *err)
{
    if (w < 1 || h < 1)
        return error_set(err, "image is %d x %d pixels", w, h);
    int bw, bh;
    preprocess_base_size(p, w, h, &bw, &bh);
    if ((int64_t)bw * bh > PREPROCESS_MAX_BASE_PIXELS)
        return error_set(err, "a %d x %d image would be resized to %d x %d (aspect ratio too "
                              "extreme for the crop policy; at most %lld pixels)",
                         w, h, bw, bh, (long long)PREPROCESS_MAX_BASE_PIXELS);
    return 0;
}

/* ---- bilinear resampling --------------------------------------------------------- */

/* Taps of output positions out0 .. out0+n-1 along one axis (align_corners=False):
 * source positions i0 <= i1 (i1 = i0 + 1 except at the last pixel) with weights
 * w0, w1. The precision follows torch 1.13's CPU kernel, matched weight for
 * weight against it: the scale in/out in float, the source coordinate
 * (o + 0.5) * scale - 0.5 (floored at 0) and the weights in double, then the
 * weights rounded to float. An all-float coordinate would be off by up to 3e-5
 * at 600 pixels and round 1.5% of the pixels differently. */
static void linear_taps(int *i0, int *i1, float *w0, float *w1, int out0, int n, int in_size,
                        int out_size)
{
    const double scale = (double)((float)in_size / (float)out_size);
    for (int k = 0; k < n; k++) {
        int o = out0 + k;
        if (in_size == out_size) {
            i0[k] = o;
            i1[k] = o;
            w0[k] = 1.0f;
            w1[k] = 0.0f;
            continue;
        }
        double real = scale * ((double)o + 0.5) - 0.5;
        if (real < 0.0)
            real = 0.0;
        int idx = (int)real; /* floor: real >= 0 */
        if (idx > in_size - 1)
            idx = in_size - 1;
        double lambda = real - (double)idx;
        lambda = lambda < 0.0 ? 0.0 : lambda > 1.0 ? 1.0 : lambda;
        i0[k] = idx;
        i1[k] = idx + (idx < in_size - 1 ? 1 : 0);
        w1[k] = (float)lambda;
        w0[k] = (float)(1.0 - lambda);
    }
}

/* Horizontal pass over one source row: h[j] = f[ga[j]] * wa[j] + f[gb[j]] * wb[j]
 * for j < m, where f is the row as floats and the tables hold, per output value
 * (pixel, channel), the offsets of its two taps and their weights. A plain
 * indexed loop, so the AVX2 / AVX-512 clones vectorise it with gathers. */
PREPROCESS_CLONES
static void bilinear_h(float *restrict h, const float *restrict f, const int *restrict ga,
                       const int *restrict gb, const float *restrict wa,
                       const float *restrict wb, int m)
{
    for (int j = 0; j < m; j++)
        h[j] = f[ga[j]] * wa[j] + f[gb[j]] * wb[j];
}

/* Vertical pass: row[j] = h0[j] * wa + h1[j] * wb, rounded half to even and
 * clamped to 0..255 (torch.round, then clamp). */
PREPROCESS_CLONES
static void bilinear_v(float *restrict row, const float *restrict h0, const float *restrict h1,
                       float wa, float wb, int m)
{
    for (int j = 0; j < m; j++) {
        float v = h0[j] * wa + h1[j] * wb;
        v = (v + ROUND_MAGIC) - ROUND_MAGIC;
        v = v < 0.0f ? 0.0f : v;
        row[j] = v > 255.0f ? 255.0f : v;
    }
}

PREPROCESS_CLONES
static void u8_to_float(float *restrict dst, const uint8_t *restrict src, int n)
{
    for (int j = 0; j < n; j++)
        dst[j] = (float)src[j];
}

PREPROCESS_CLONES
static void levels_to_u8(uint8_t *restrict dst, const float *restrict row, int n)
{
    for (int j = 0; j < n; j++)
        dst[j] = (uint8_t)row[j];
}

/* Pixels k < n of row, written in reverse pixel order (channels kept) ending at dst. */
static void store_mirrored(float *restrict dst_last, const float *restrict row, int n)
{
    for (int k = 0; k < n; k++) {
        dst_last[-3 * k + 0] = row[3 * k + 0];
        dst_last[-3 * k + 1] = row[3 * k + 1];
        dst_last[-3 * k + 2] = row[3 * k + 2];
    }
}

/* The horizontal taps of one block of output columns and the source span they read. */
typedef struct {
    int n;                              /* output columns in the block */
    int lo, span;                       /* source columns lo .. lo+span-1 (of the region) */
    int ga[RESIZE_BLOCK * 3], gb[RESIZE_BLOCK * 3];   /* float offsets into the span */
    float wa[RESIZE_BLOCK * 3], wb[RESIZE_BLOCK * 3];
} HTaps;

/* Taps for output columns bx.. of a cw -> dw resize: as many as RESIZE_BLOCK
 * allows while the source span stays within RESIZE_SPAN pixels. */
static void htaps_init(HTaps *t, int bx, int dw, int cw)
{
    int i0[RESIZE_BLOCK], i1[RESIZE_BLOCK];
    float w0[RESIZE_BLOCK], w1[RESIZE_BLOCK];
    int n = dw - bx < RESIZE_BLOCK ? dw - bx : RESIZE_BLOCK;
    linear_taps(i0, i1, w0, w1, bx, n, cw, dw);
    int lo = i0[0], k = 1;
    while (k < n && i1[k] - lo < RESIZE_SPAN) /* i1[0] - lo <= 1: one column always fits */
        k++;
    t->n = k;
    t->lo = lo;
    t->span = i1[k - 1] - lo + 1;
    for (int j = 0; j < k; j++)
        for (int c = 0; c < 3; c++) {
            t->ga[3 * j + c] = (i0[j] - lo) * 3 + c;
            t->gb[3 * j + c] = (i1[j] - lo) * 3 + c;
            t->wa[3 * j + c] = w0[j];
            t->wb[3 * j + c] = w1[j];
        }
}

/* Bilinear resample of the cw x ch region at (x0, y0) of src (RGB8 rows of
 * stride sstride bytes) to dw x dh levels. Exactly one of dst8 (RGB8, dw*3 bytes
 * a row) and dstf (float levels, dw*3 a row; mirrored left-right when mirror)
 * is written. The region is resampled as an image of its own: taps are clamped
 * to it, as torch does when it interpolates a cropped tensor.
 * Horizontal pass first, then vertical, which is torch's order of operations
 * ((r0[a]*wa + r0[b]*wb)*h0 + (r1[a]*wa + r1[b]*wb)*h1); the two horizontal
 * rows are kept, so an upscale computes each source row's pass once per block. */
static void resize_region(uint8_t *dst8, float *dstf, int mirror, int dw, int dh,
                          const uint8_t *src, size_t sstride, int x0, int y0, int cw, int ch)
{
    HTaps t;
    float f[RESIZE_SPAN * 3];
    float hrow[2][RESIZE_BLOCK * 3];
    float row[RESIZE_BLOCK * 3];
    for (int bx = 0; bx < dw; bx += t.n) {
        htaps_init(&t, bx, dw, cw);
        const int m = t.n * 3;
        int held[2] = {-1, -1}; /* source row in each hrow slot */
        for (int y = 0; y < dh; y++) {
            int ya, yb;
            float ha, hb;
            linear_taps(&ya, &yb, &ha, &hb, y, 1, ch, dh);
            int slot[2];
            const int need[2] = {ya, yb};
            for (int i = 0; i < 2; i++) {
                if (held[0] == need[i] || held[1] == need[i]) {
                    slot[i] = held[0] == need[i] ? 0 : 1;
                    continue;
                }
                /* evict the slot the other needed row is not in */
                int other = need[1 - i];
                int sl = held[0] == other ? 1 : 0;
                const uint8_t *r = src + (size_t)(y0 + need[i]) * sstride + (size_t)(x0 + t.lo) * 3;
                u8_to_float(f, r, t.span * 3);
                bilinear_h(hrow[sl], f, t.ga, t.gb, t.wa, t.wb, m);
                held[sl] = need[i];
                slot[i] = sl;
            }
            bilinear_v(row, hrow[slot[0]], hrow[slot[1]], ha, hb, m);
            if (dst8)
                levels_to_u8(dst8 + ((size_t)y * dw + bx) * 3, row, m);
            else if (!mirror)
                memcpy(dstf + ((size_t)y * dw + bx) * 3, row, (size_t)m * sizeof(float));
            else
                store_mirrored(dstf + ((size_t)y * dw + (dw - 1 - bx)) * 3, row, t.n);
        }
    }
}

void preprocess_resize(uint8_t *dst, int bw, int bh, const uint8_t *src, int w, int h)
{
    assert(bw >= 1 && bh >= 1 && w >= 1 && h >= 1);
    if (bw == w && bh == h) {
        memcpy(dst, src, (size_t)w * h * 3);
        return;
    }
    resize_region(dst, NULL, 0, bw, bh, src, (size_t)w * 3, 0, 0, w, h);
}

/* ---- stage 2 ------------------------------------------------------------------------ */

/* torchvision CenterCrop's offset int(round(d / 2.0)), d >= 0: Python rounds the
 * tie (odd d) to the even neighbour. */
static int centre_offset(int d)
{
    int q = d / 2;
    if ((d & 1) && (q & 1))
        q++;
    return q;
}

static int random_crop_on(const Augment *a)
{
    return a->crop_min != 0.0f || a->crop_max != 0.0f;
}

/* torchvision.transforms.RandomResizedCrop.get_params (0.14), ratio (3/4, 4/3). */
static void random_resized_crop(PreprocessCrop *c, int bw, int bh, float cmin, float cmax,
                                Rng *rng)
{
    const double area = (double)bw * bh;
    const double rmin = 3.0 / 4.0, rmax = 4.0 / 3.0;
    const double lo = log(rmin), hi = log(rmax);
    for (int attempt = 0; attempt < 10; attempt++) {
        double scale = (double)cmin + ((double)cmax - (double)cmin) * (double)rng_uniform(rng);
        double target = area * scale;
        double ratio = exp(lo + (hi - lo) * (double)rng_uniform(rng));
        double w = rint(sqrt(target * ratio)), h = rint(sqrt(target / ratio));
        if (w > 0.0 && w <= (double)bw && h > 0.0 && h <= (double)bh) {
            c->w = (int)w;
            c->h = (int)h;
            c->y = (int)rng_below(rng, (uint64_t)(bh - c->h + 1));
            c->x = (int)rng_below(rng, (uint64_t)(bw - c->w + 1));
            return;
        }
    }
    double in_ratio = (double)bw / (double)bh;
    if (in_ratio < rmin) {
        c->w = bw;
        c->h = (int)rint((double)bw / rmin);
    } else if (in_ratio > rmax) {
        c->h = bh;
        c->w = (int)rint((double)bh * rmax);
    } else {
        c->w = bw;
        c->h = bh;
    }
    c->y = (bh - c->h) / 2;
    c->x = (bw - c->w) / 2;
}

void preprocess_crop_draw(PreprocessCrop *c, const Preprocess *p, int bw, int bh, Rng *rng)
{
    const Augment *a = &p->augment;
    if (rng && random_crop_on(a)) {
        random_resized_crop(c, bw, bh, a->crop_min, a->crop_max, rng);
    } else {
        assert(bw >= p->size && bh >= p->size);
        c->w = p->size;
        c->h = p->size;
        c->x = centre_offset(bw - p->size);
        c->y = centre_offset(bh - p->size);
    }
    c->flip = rng && a->hflip ? rng_uniform(rng) < 0.5f : 0;
}

static void u8_to_levels_mirrored(float *restrict dst, const uint8_t *restrict src, int npix)
{
    for (int k = 0; k < npix; k++) {
        const uint8_t *s = src + (size_t)(npix - 1 - k) * 3;
        dst[3 * k + 0] = (float)s[0];
        dst[3 * k + 1] = (float)s[1];
        dst[3 * k + 2] = (float)s[2];
    }
}

/* Per output channel x * scale[c] + shift[c] of the input channel (RGB, or BGR
 * when *bgr), computed in double from the mode's constants. */
static void norm_coefficients(const Normalization *n, float scale[3], float shift[3], int *bgr)
{
    double rescale, mean[3], std[3];
    switch (n->mode) {
    case NORM_CAFFE:
        /* x - mean exactly as Keras computes it in float32 (scale 1, shift -mean) */
        rescale = 1.0;
        for (int c = 0; c < 3; c++) {
            mean[c] = CAFFE_MEAN_BGR[c];
            std[c] = 1.0;
        }
        *bgr = 1;
        break;
    case NORM_TORCH:
        rescale = 1.0 / 255.0;
        for (int c = 0; c < 3; c++) {
            mean[c] = TORCH_MEAN[c];
            std[c] = TORCH_STD[c];
        }
        *bgr = 0;
        break;
    case NORM_TF:
        rescale = 1.0 / 127.5;
        for (int c = 0; c < 3; c++) {
            mean[c] = 1.0;
            std[c] = 1.0;
        }
        *bgr = 0;
        break;
    default:
        rescale = n->rescale;
        for (int c = 0; c < 3; c++) {
            mean[c] = n->mean[c];
            std[c] = n->std[c];
        }
        *bgr = n->bgr != 0;
        break;
    }
    for (int c = 0; c < 3; c++) {
        scale[c] = (float)(rescale / std[c]);
        shift[c] = (float)(-mean[c] / std[c]);
    }
}

/* x[i][c] = x[i][c] * scale[c] + shift[c] for n pixels, in place. Four pixels
 * (12 floats) per step so that the coefficients repeat with the vector lanes. */
PREPROCESS_CLONES
static void affine_rgb(float *restrict x, int64_t n, const float *restrict scale12,
                       const float *restrict shift12)
{
    int64_t groups = n / 4;
    for (int64_t g = 0; g < groups; g++)
        for (int k = 0; k < 12; k++)
            x[g * 12 + k] = x[g * 12 + k] * scale12[k] + shift12[k];
    for (int64_t j = groups * 12; j < n * 3; j++)
        x[j] = x[j] * scale12[j % 3] + shift12[j % 3];
}

/* As affine_rgb, reversing each pixel's channel order (RGB levels -> BGR). */
PREPROCESS_CLONES
static void affine_bgr(float *restrict x, int64_t n, const float *restrict scale,
                       const float *restrict shift)
{
    for (int64_t i = 0; i < n; i++) {
        float r = x[3 * i], g = x[3 * i + 1], b = x[3 * i + 2];
        x[3 * i + 0] = b * scale[0] + shift[0];
        x[3 * i + 1] = g * scale[1] + shift[1];
        x[3 * i + 2] = r * scale[2] + shift[2];
    }
}

static void normalise_levels(float *x, int64_t n, const Normalization *norm)
{
    float scale[3], shift[3];
    int bgr;
    norm_coefficients(norm, scale, shift, &bgr);
    if (bgr) {
        affine_bgr(x, n, scale, shift);
        return;
    }
    float scale12[12], shift12[12];
    for (int k = 0; k < 12; k++) {
        scale12[k] = scale[k % 3];
        shift12[k] = shift[k % 3];
    }
    affine_rgb(x, n, scale12, shift12);
}

void preprocess_finish_crop(float *out, const uint8_t *base, int bw, int bh, const Preprocess *p,
                            const PreprocessCrop *c)
{
    const int s = p->size;
    assert(c->x >= 0 && c->y >= 0 && c->w >= 1 && c->h >= 1);
    assert(c->x + c->w <= bw && c->y + c->h <= bh);
    const size_t stride = (size_t)bw * 3;
    if (c->w == s && c->h == s) {
        for (int y = 0; y < s; y++) {
            const uint8_t *row = base + (size_t)(c->y + y) * stride + (size_t)c->x * 3;
            if (c->flip)
                u8_to_levels_mirrored(out + (size_t)y * s * 3, row, s);
            else
                u8_to_float(out + (size_t)y * s * 3, row, s * 3);
        }
    } else {
        resize_region(NULL, out, c->flip, s, s, base, stride, c->x, c->y, c->w, c->h);
    }
    normalise_levels(out, (int64_t)s * s, &p->norm);
}

void preprocess_finish(float *out, const uint8_t *base, int bw, int bh, const Preprocess *p,
                       Rng *rng)
{
    PreprocessCrop c;
    preprocess_crop_draw(&c, p, bw, bh, rng);
    preprocess_finish_crop(out, base, bw, bh, p, &c);
}

void preprocess_image(float *out, const uint8_t *rgb, int w, int h, const Preprocess *p,
                      Rng *rng, uint8_t *scratch)
{
    int bw, bh;
    preprocess_base_size(p, w, h, &bw, &bh);
    if (bw == w && bh == h) {
        preprocess_finish(out, rgb, w, h, p, rng); /* the resize would be a copy */
        return;
    }
    preprocess_resize(scratch, bw, bh, rgb, w, h);
    preprocess_finish(out, scratch, bw, bh, p, rng);
}

/* ---- input statistics -------------------------------------------------------------- */

void input_stats_reset(InputStats *s)
{
    memset(s, 0, sizeof *s);
    for (int c = 0; c < 3; c++) {
        s->min[c] = INFINITY;
        s->max[c] = -INFINITY;
    }
}

/* Sums, sums of squares (double) and extremes over 12 lanes (4 pixels x 3
 * channels), so the loop vectorises without reassociating a reduction. */
PREPROCESS_CLONES
static void stats_lanes(double *restrict sum, double *restrict sumsq, float *restrict mn,
                        float *restrict mx, const float *restrict x, int64_t groups)
{
    for (int64_t g = 0; g < groups; g++)
        for (int k = 0; k < 12; k++) {
            float v = x[g * 12 + k];
            sum[k] += (double)v;
            sumsq[k] += (double)v * (double)v;
            mn[k] = v < mn[k] ? v : mn[k];
            mx[k] = v > mx[k] ? v : mx[k];
        }
}

void input_stats_add(InputStats *s, const float *x, int64_t n)
{
    double sum[12] = {0}, sumsq[12] = {0};
    float mn[12], mx[12];
    for (int k = 0; k < 12; k++) {
        mn[k] = s->min[k % 3];
        mx[k] = s->max[k % 3];
    }
    int64_t groups = n / 4;
    stats_lanes(sum, sumsq, mn, mx, x, groups);
    for (int64_t j = groups * 12; j < n * 3; j++) {
        int k = (int)(j % 3);
        float v = x[j];
        sum[k] += (double)v;
        sumsq[k] += (double)v * (double)v;
        mn[k] = v < mn[k] ? v : mn[k];
        mx[k] = v > mx[k] ? v : mx[k];
    }
    for (int k = 0; k < 12; k++) {
        int c = k % 3;
        s->sum[c] += sum[k];
        s->sumsq[c] += sumsq[k];
        s->min[c] = mn[k] < s->min[c] ? mn[k] : s->min[c];
        s->max[c] = mx[k] > s->max[c] ? mx[k] : s->max[c];
    }
    s->count += n;
}

void input_stats_get(const InputStats *s, double mean[3], double std[3])
{
    for (int c = 0; c < 3; c++) {
        if (s->count <= 0) {
            mean[c] = 0.0;
            std[c] = 0.0;
            continue;
        }
        double m = s->sum[c] / (double)s->count;
        double var = s->sumsq[c] / (double)s->count - m * m;
        mean[c] = m;
        std[c] = var > 0.0 ? sqrt(var) : 0.0;
    }
}

int preprocess_resolve_norm(Normalization *n, const char *requested, const char *declared,
                            int override, int *overridden, Error *err)
{
    *overridden = 0;
    const int has_declared = declared && *declared;
    if (requested && !strcmp(requested, "auto")) {
        if (!has_declared)
            return error_set(err, "preprocess \"auto\" needs weights that declare their "
                             "preprocessing; these declare none: name a mode (caffe, torch, "
                             "tf or custom)");
        if (!strcmp(declared, "custom"))
            return error_set(err, "the weights declare custom preprocessing: give its numbers "
                             "as {\"mode\": \"custom\", ...}");
        return preprocess_norm_from_name(n, declared, err);
    }
    if (requested && preprocess_norm_from_name(n, requested, err))
        return -1;
    const char *chosen = preprocess_norm_name(n->mode);
    if (has_declared && strcmp(chosen, declared)) {
        if (!override)
            return error_set(err, "preprocess \"%s\" contradicts the weights, which were "
                             "trained with \"%s\": use \"auto\", or set the override if "
                             "you really mean it", chosen, declared);
        *overridden = 1;
    }
    return 0;
}
