/*
 * test_kernels.c: unit tests of core/kernels (cmocka).
 *
 * Three kinds of evidence, as STYLE.md asks:
 *  - the optimised convolution (im2col + sgemm, pointwise sgemm, chunked workspace)
 *    against the naive direct loops for every ResNet50 geometry, forward and backward,
 *    including the overwrite / accumulate / skip (NULL) contracts of the header;
 *  - every backward kernel against double-precision central differences of a scalar
 *    loss L = sum(y * r) (r random) evaluated through the forward kernels;
 *  - hand-computed values: the softmax cross-entropy formula (PyTorch semantics),
 *    two-pass batch statistics, max pooling's tie and padding rules, dropout's rate
 *    and scale.
 * Output buffers carry a guard tail that must survive every call, and scratch or
 * overwritten buffers are pre-filled with NaN so that an element a kernel forgets to
 * write (or a read of uninitialised workspace) shows up as a mismatch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "rng.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------- */

#define GUARD 16
#define GUARD_VALUE 12345.0f

/* n floats followed by GUARD sentinel floats (see guard_check). */
static float *falloc(size_t n)
{
    float *p = malloc((n + GUARD) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < GUARD; i++)
        p[n + i] = GUARD_VALUE;
    return p;
}

static void guard_check(const float *p, size_t n, const char *what)
{
    for (size_t i = 0; i < GUARD; i++)
        if (p[n + i] != GUARD_VALUE)
            fail_msg("%s: write past the end (element %zu after the buffer)", what, i);
}

static float *falloc_uniform(size_t n, uint64_t seed, float lo, float hi)
{
    float *p = falloc(n);
    testutil_fill_uniform(p, n, seed, lo, hi);
    return p;
}

static float *fdup(const float *src, size_t n)
{
    float *p = falloc(n);
    memcpy(p, src, n * sizeof(float));
    return p;
}

static void fill_value(float *p, size_t n, float v)
{
    for (size_t i = 0; i < n; i++)
        p[i] = v;
}

static void assert_unchanged(const float *got, const float *orig, size_t n, const char *what)
{
    if (memcmp(got, orig, n * sizeof(float)))
        fail_msg("%s: an input the kernel takes as const was modified", what);
}

/* sum_i y_i r_i in double. */
static double dot(const float *y, const float *r, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)y[i] * r[i];
    return s;
}

/* FNV-1a over bytes: a signature of a piecewise function's branch (ReLU mask,
 * argmax) so that finite differences straddling a kink can be recognised. */
static uint64_t fnv(uint64_t hsh, const void *data, size_t len)
{
    const unsigned char *b = data;
    for (size_t i = 0; i < len; i++) {
        hsh ^= b[i];
        hsh *= 0x100000001b3ULL;
    }
    return hsh;
}

static uint64_t mask_sig(const float *y, size_t n)
{
    uint64_t hsh = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char pos = y[i] > 0.0f;
        hsh = fnv(hsh, &pos, 1);
    }
    return hsh;
}

/* Tolerance of every finite-difference comparison. With a step of 1e-2 on O(1)
 * inputs the observed errors are 1e-6 .. 2e-5 (float rounding of the loss and, for
 * BatchNorm, the O(h^2) truncation), so 1e-3 leaves a wide margin while still
 * catching a gradient term that is off by a fraction of a percent. */
#define FD_TOL 1e-3

/* A scalar loss of the parameters held in ctx; *sig receives the branch signature
 * (0 for smooth functions). */
typedef double (*LossFn)(void *ctx, uint64_t *sig);

/* Compares analytic[i] with the central difference (L(p+h) - L(p-h)) / (2h) for every
 * element of p (perturbed in place and restored). The step actually taken is the
 * float-rounded one. An element whose +-h evaluations change the branch signature
 * is skipped; at most half may be. Asserts max|analytic - fd| / max(max|fd|, 1e-3) <= tol. */
static void check_fd(float *p, size_t n, const float *analytic, LossFn f, void *ctx, double h,
                     double tol, const char *what)
{
    uint64_t base, sp, sm;
    f(ctx, &base);
    float *got = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    assert_non_null(got);
    assert_non_null(want);
    size_t used = 0, skipped = 0;
    for (size_t i = 0; i < n; i++) {
        const float p0 = p[i];
        const float pp = (float)(p0 + h), pm = (float)(p0 - h);
        p[i] = pp;
        double lp = f(ctx, &sp);
        p[i] = pm;
        double lm = f(ctx, &sm);
        p[i] = p0;
        if (sp != base || sm != base) {
            skipped++;
            continue;
        }
        got[used] = analytic[i];
        want[used] = (float)((lp - lm) / ((double)pp - (double)pm));
        used++;
    }
    if (skipped)
        print_message("  %s: %zu of %zu elements skipped (step crosses a kink)\n", what, skipped,
                      n);
    assert_true(used > 0);
    assert_true(skipped * 2 <= n);
    testutil_assert_close(got, want, used, tol, 1e-3, what);
    free(got);
    free(want);
}

/* ---- convolution against the naive kernel -------------------------------------- */

/* Runs conv2d_forward and conv2d_backward on one geometry and compares with the
 * naive kernels: y (overwritten: pre-filled with NaN), dx overwritten, dx added into,
 * dw and db added into pre-filled buffers, each gradient alone with the others NULL
 * (db alone with no workspace at all). Also checks that x, w and dy are not modified
 * and that nothing is written past any output or the workspace. Returns the
 * workspace size. */
static size_t check_conv(int n, int h, int w, int cin, int cout, int k, int stride, int pad,
                         int bias, uint64_t seed, double tol)
{
    char geo[160], msg[256];
    ConvShape s;
    assert_int_equal(conv_shape_init(&s, n, h, w, cin, cout, k, stride, pad), 0);
    assert_int_equal(s.oh, (h + 2 * pad - k) / stride + 1);
    assert_int_equal(s.ow, (w + 2 * pad - k) / stride + 1);
    const size_t nx = (size_t)n * h * w * cin, nw = (size_t)k * k * cin * cout;
    const size_t ny = (size_t)n * s.oh * s.ow * cout;
    const size_t nws = conv_workspace_floats(&s);
    const size_t full_cols = (size_t)n * s.oh * s.ow * k * k * cin;
    if (k == 1 && stride == 1 && pad == 0)
        assert_int_equal(nws, 0);
    else
        assert_true(nws > 0 && nws <= full_cols);

    float *x = falloc_uniform(nx, seed, -1.0f, 1.0f);
    float *wt = falloc_uniform(nw, seed + 1, -1.0f, 1.0f);
    float *b = falloc_uniform((size_t)cout, seed + 2, -1.0f, 1.0f);
    float *dy = falloc_uniform(ny, seed + 3, -1.0f, 1.0f);
    float *x0 = fdup(x, nx), *w0 = fdup(wt, nw), *dy0 = fdup(dy, ny);
    float *ws = nws ? falloc(nws) : NULL;
    float *y = falloc(ny), *yref = falloc(ny);
    snprintf(geo, sizeof geo, "n%d %dx%dx%d->%d k%d s%d p%d%s", n, h, w, cin, cout, k, stride,
             pad, bias ? " bias" : "");

    /* forward */
    fill_value(y, ny, NAN);
    if (ws) fill_value(ws, nws, NAN);
    conv2d_forward(y, x, wt, bias ? b : NULL, &s, ws);
    conv2d_forward_naive(yref, x, wt, bias ? b : NULL, &s);
    snprintf(msg, sizeof msg, "%s: forward y", geo);
    testutil_assert_close(y, yref, ny, tol, 1e-6, msg);
    guard_check(y, ny, msg);
    if (ws) guard_check(ws, nws, "forward workspace");

    /* expected gradients: naive, dw/db added into the same pre-filled values */
    float *pre_x = falloc_uniform(nx, seed + 4, -1.0f, 1.0f);
    float *pre_w = falloc_uniform(nw, seed + 5, -1.0f, 1.0f);
    float *pre_b = falloc_uniform((size_t)cout, seed + 6, -1.0f, 1.0f);
    float *dx_ref = falloc(nx), *dw_ref = fdup(pre_w, nw), *db_ref = fdup(pre_b, (size_t)cout);
    conv2d_backward_naive(dx_ref, dw_ref, db_ref, dy, x, wt, &s);
    float *dxacc_ref = falloc(nx);
    for (size_t i = 0; i < nx; i++)
        dxacc_ref[i] = pre_x[i] + dx_ref[i];

    /* all three gradients, dx overwritten (pre-filled with NaN) */
    float *dx = falloc(nx), *dw = fdup(pre_w, nw), *db = fdup(pre_b, (size_t)cout);
    fill_value(dx, nx, NAN);
    if (ws) fill_value(ws, nws, NAN);
    conv2d_backward(dx, dw, bias ? db : NULL, dy, x, wt, &s, ws, 0);
    snprintf(msg, sizeof msg, "%s: dx (overwrite)", geo);
    testutil_assert_close(dx, dx_ref, nx, tol, 1e-6, msg);
    guard_check(dx, nx, msg);
    snprintf(msg, sizeof msg, "%s: dw (+= pre-filled)", geo);
    testutil_assert_close(dw, dw_ref, nw, tol, 1e-6, msg);
    guard_check(dw, nw, msg);
    if (bias) {
        snprintf(msg, sizeof msg, "%s: db (+= pre-filled)", geo);
        testutil_assert_close(db, db_ref, (size_t)cout, tol, 1e-6, msg);
        guard_check(db, (size_t)cout, msg);
    }

    /* dx alone, added into pre-filled values; dw and db skipped */
    memcpy(dx, pre_x, nx * sizeof(float));
    if (ws) fill_value(ws, nws, NAN);
    conv2d_backward(dx, NULL, NULL, dy, x, wt, &s, ws, 1);
    snprintf(msg, sizeof msg, "%s: dx (accumulate)", geo);
    testutil_assert_close(dx, dxacc_ref, nx, tol, 1e-6, msg);
    guard_check(dx, nx, msg);

    /* dw alone, dx and db skipped */
    memcpy(dw, pre_w, nw * sizeof(float));
    if (ws) fill_value(ws, nws, NAN);
    conv2d_backward(NULL, dw, NULL, dy, x, wt, &s, ws, 0);
    snprintf(msg, sizeof msg, "%s: dw alone", geo);
    testutil_assert_close(dw, dw_ref, nw, tol, 1e-6, msg);

    /* db alone: needs no workspace */
    memcpy(db, pre_b, (size_t)cout * sizeof(float));
    conv2d_backward(NULL, NULL, db, dy, x, wt, &s, NULL, 0);
    snprintf(msg, sizeof msg, "%s: db alone", geo);
    testutil_assert_close(db, db_ref, (size_t)cout, tol, 1e-6, msg);

    assert_unchanged(x, x0, nx, "x");
    assert_unchanged(wt, w0, nw, "w");
    assert_unchanged(dy, dy0, ny, "dy");
    if (ws) guard_check(ws, nws, "backward workspace");

    float *bufs[] = {x, wt, b, dy, x0, w0, dy0, ws, y, yref, pre_x, pre_w, pre_b,
                     dx_ref, dw_ref, db_ref, dxacc_ref, dx, dw, db};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    return nws;
}

static void test_conv_shape_init(void **state)
{
    (void)state;
    ConvShape s;
    assert_int_equal(conv_shape_init(&s, 2, 224, 224, 3, 64, 7, 2, 3), 0);
    assert_int_equal(s.oh, 112);
    assert_int_equal(s.ow, 112);
    assert_int_equal(conv_shape_init(&s, 2, 56, 56, 64, 64, 3, 2, 1), 0);
    assert_int_equal(s.oh, 28);
    assert_int_equal(conv_shape_init(&s, 2, 9, 7, 8, 8, 1, 2, 0), 0);
    assert_int_equal(s.oh, 5);
    assert_int_equal(s.ow, 4);
    assert_int_equal(conv_shape_init(&s, 2, 9, 7, 3, 8, 7, 2, 3), 0);
    assert_int_equal(s.oh, 5);
    assert_int_equal(s.ow, 4);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.cin, 3);
    assert_int_equal(s.cout, 8);
    /* a 7x7 kernel without padding does not fit in 5x5 */
    assert_int_equal(conv_shape_init(&s, 1, 5, 5, 3, 8, 7, 2, 0), -1);
    assert_int_equal(conv_shape_init(&s, 1, 1, 1, 3, 8, 3, 1, 0), -1);
}

/* Odd spatial sizes and 1x1 inputs (where the geometry is legal), batch 2 and 3,
 * every conv geometry of ResNet50, with and without bias. */
static void test_conv_stem_7x7_s2(void **state)
{
    (void)state;
    for (int bias = 0; bias < 2; bias++) {
        check_conv(2, 9, 7, 3, 8, 7, 2, 3, bias, 100 + bias, 1e-5);
        check_conv(3, 5, 5, 3, 6, 7, 2, 3, bias, 110 + bias, 1e-5);
        check_conv(2, 1, 1, 3, 5, 7, 2, 3, bias, 120 + bias, 1e-5);
        check_conv(2, 10, 8, 3, 4, 7, 2, 3, bias, 130 + bias, 1e-5);
    }
}

static void test_conv_3x3_s1(void **state)
{
    (void)state;
    for (int bias = 0; bias < 2; bias++) {
        check_conv(2, 9, 7, 5, 6, 3, 1, 1, bias, 200 + bias, 1e-5);
        check_conv(3, 5, 5, 4, 7, 3, 1, 1, bias, 210 + bias, 1e-5);
        check_conv(2, 1, 1, 6, 3, 3, 1, 1, bias, 220 + bias, 1e-5);
    }
}

static void test_conv_3x3_s2(void **state)
{
    (void)state;
    for (int bias = 0; bias < 2; bias++) {
        check_conv(2, 9, 7, 5, 6, 3, 2, 1, bias, 300 + bias, 1e-5);
        check_conv(3, 5, 5, 4, 7, 3, 2, 1, bias, 310 + bias, 1e-5);
        check_conv(2, 1, 1, 6, 3, 3, 2, 1, bias, 320 + bias, 1e-5);
        check_conv(2, 8, 6, 3, 5, 3, 2, 1, bias, 330 + bias, 1e-5);
    }
}

static void test_conv_1x1_s1_pointwise(void **state)
{
    (void)state;
    for (int bias = 0; bias < 2; bias++) {
        check_conv(2, 9, 7, 5, 6, 1, 1, 0, bias, 400 + bias, 1e-5);
        check_conv(3, 5, 5, 8, 3, 1, 1, 0, bias, 410 + bias, 1e-5);
        check_conv(2, 1, 1, 7, 9, 1, 1, 0, bias, 420 + bias, 1e-5);
    }
}

/* The projection shortcut: every other pixel is read, so the unread ones must get
 * dx = 0 (overwrite) or keep their value (accumulate). */
static void test_conv_1x1_s2_shortcut(void **state)
{
    (void)state;
    for (int bias = 0; bias < 2; bias++) {
        check_conv(2, 9, 7, 5, 6, 1, 2, 0, bias, 500 + bias, 1e-5);
        check_conv(3, 5, 5, 8, 3, 1, 2, 0, bias, 510 + bias, 1e-5);
        check_conv(2, 1, 1, 7, 9, 1, 2, 0, bias, 520 + bias, 1e-5);
        check_conv(2, 6, 4, 4, 4, 1, 2, 0, bias, 530 + bias, 1e-5);
    }
}

/* Large enough that the im2col workspace holds fewer images than the batch, so the
 * chunk loop runs more than once (and its last chunk is partial). */
static void test_conv_chunked_workspace(void **state)
{
    (void)state;
    ConvShape s;
    assert_int_equal(conv_shape_init(&s, 3, 56, 56, 64, 16, 3, 1, 1), 0);
    size_t full = (size_t)s.n * s.oh * s.ow * s.k * s.k * s.cin;
    size_t nws = conv_workspace_floats(&s);
    print_message("  3x3 on 56x56x64, n=3: workspace %zu floats, whole batch %zu\n", nws, full);
    assert_true(nws < full);
    assert_int_equal(check_conv(3, 56, 56, 64, 16, 3, 1, 1, 1, 600, 1e-5), nws);

    /* the stem at full resolution */
    assert_int_equal(conv_shape_init(&s, 3, 224, 224, 3, 8, 7, 2, 3), 0);
    full = (size_t)s.n * s.oh * s.ow * s.k * s.k * s.cin;
    nws = conv_workspace_floats(&s);
    print_message("  7x7/2 on 224x224x3, n=3: workspace %zu floats, whole batch %zu\n", nws,
                  full);
    assert_true(nws < full);
    check_conv(3, 224, 224, 3, 8, 7, 2, 3, 0, 610, 1e-5);
}

/* ---- fused convolution (folded BatchNorm) against naive + manual epilogue ----- */

/* conv2d_forward_fused on one geometry, for every combination of bias, residual and
 * ReLU, against conv2d_forward_naive followed by the epilogue written out by hand.
 * y and the workspace are pre-filled with NaN; x, w, b and the residual must come
 * back unchanged and nothing may be written past y or the workspace. */
static void check_conv_fused(int n, int h, int w, int cin, int cout, int k, int stride, int pad,
                             uint64_t seed)
{
    char msg[200];
    ConvShape s;
    assert_int_equal(conv_shape_init(&s, n, h, w, cin, cout, k, stride, pad), 0);
    const size_t nx = (size_t)n * h * w * cin, nw = (size_t)k * k * cin * cout;
    const size_t ny = (size_t)n * s.oh * s.ow * cout, nws = conv_workspace_floats(&s);
    float *x = falloc_uniform(nx, seed, -1.0f, 1.0f);
    float *wt = falloc_uniform(nw, seed + 1, -1.0f, 1.0f);
    float *b = falloc_uniform((size_t)cout, seed + 2, -2.0f, 2.0f);
    float *res = falloc_uniform(ny, seed + 3, -2.0f, 2.0f);
    float *x0 = fdup(x, nx), *w0 = fdup(wt, nw), *b0 = fdup(b, (size_t)cout);
    float *res0 = fdup(res, ny);
    float *conv = falloc(ny), *want = falloc(ny), *y = falloc(ny);
    float *ws = nws ? falloc(nws) : NULL;
    conv2d_forward_naive(conv, x, wt, NULL, &s);
    for (int combo = 0; combo < 8; combo++) {
        const int bias = combo & 1, residual = (combo >> 1) & 1, relu = (combo >> 2) & 1;
        size_t clipped = 0;
        for (size_t i = 0; i < ny; i++) {
            float v = conv[i];
            if (bias) v += b[i % (size_t)cout];
            if (residual) v += res[i];
            if (relu && v < 0.0f) { v = 0.0f; clipped++; }
            want[i] = v;
        }
        if (relu) /* the ReLU must actually have work to do */
            assert_true(clipped > ny / 8 && clipped < ny - ny / 8);
        fill_value(y, ny, NAN);
        if (ws) fill_value(ws, nws, NAN);
        conv2d_forward_fused(y, x, wt, bias ? b : NULL, residual ? res : NULL, relu, &s, ws);
        snprintf(msg, sizeof msg, "fused n%d %dx%dx%d->%d k%d s%d p%d%s%s%s", n, h, w, cin, cout,
                 k, stride, pad, bias ? " bias" : "", residual ? " residual" : "",
                 relu ? " relu" : "");
        testutil_assert_close(y, want, ny, 1e-5, 1e-6, msg);
        guard_check(y, ny, msg);
        if (ws) guard_check(ws, nws, msg);
    }
    assert_unchanged(x, x0, nx, "fused x");
    assert_unchanged(wt, w0, nw, "fused w");
    assert_unchanged(b, b0, (size_t)cout, "fused b");
    assert_unchanged(res, res0, ny, "fused residual");
    float *bufs[] = {x, wt, b, res, x0, w0, b0, res0, conv, want, y, ws};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
}

static void test_conv_fused(void **state)
{
    (void)state;
    check_conv_fused(2, 9, 7, 5, 6, 1, 1, 0, 700);    /* 1x1 stride 1: the direct sgemm */
    check_conv_fused(3, 5, 5, 8, 33, 1, 1, 0, 710);   /* channels not a multiple of 16 */
    check_conv_fused(2, 9, 7, 5, 6, 3, 2, 1, 720);    /* 3x3 stride 2 pad 1 */
    check_conv_fused(3, 8, 6, 4, 7, 3, 2, 1, 730);
    check_conv_fused(2, 9, 7, 3, 8, 7, 2, 3, 740);    /* 7x7 stride 2 pad 3: the stem */
    check_conv_fused(2, 10, 8, 3, 4, 7, 2, 3, 750);
    check_conv_fused(2, 6, 4, 4, 9, 1, 2, 0, 760);    /* 1x1 stride 2: the shortcut */
    check_conv_fused(3, 56, 56, 64, 16, 3, 1, 1, 770); /* chunked workspace, many rows */
}

/* ---- convolution: finite differences ------------------------------------------ */

typedef struct {
    ConvShape s;
    float *x, *w, *b, *y, *r, *ws;
} ConvCtx;

static double conv_loss(void *p, uint64_t *sig)
{
    ConvCtx *c = p;
    conv2d_forward(c->y, c->x, c->w, c->b, &c->s, c->ws);
    *sig = 0;
    return dot(c->y, c->r, (size_t)c->s.n * c->s.oh * c->s.ow * c->s.cout);
}

static void test_conv_fd(void **state)
{
    (void)state;
    static const int geo[][3] = {{3, 2, 1}, {1, 2, 0}, {3, 1, 1}}; /* k, stride, pad */
    for (size_t g = 0; g < sizeof geo / sizeof geo[0]; g++) {
        ConvCtx c;
        assert_int_equal(conv_shape_init(&c.s, 2, 5, 4, 2, 3, geo[g][0], geo[g][1], geo[g][2]),
                         0);
        size_t nx = 2 * 5 * 4 * 2, nw = (size_t)geo[g][0] * geo[g][0] * 2 * 3;
        size_t ny = (size_t)2 * c.s.oh * c.s.ow * 3, nws = conv_workspace_floats(&c.s);
        c.x = falloc_uniform(nx, 700 + g, -1.0f, 1.0f);
        c.w = falloc_uniform(nw, 710 + g, -1.0f, 1.0f);
        c.b = falloc_uniform(3, 720 + g, -1.0f, 1.0f);
        c.r = falloc_uniform(ny, 730 + g, -1.0f, 1.0f);
        c.y = falloc(ny);
        c.ws = nws ? falloc(nws) : NULL;
        float *dx = falloc(nx), *dw = falloc(nw), *db = falloc(3);
        fill_value(dw, nw, 0.0f);
        fill_value(db, 3, 0.0f);
        conv2d_backward(dx, dw, db, c.r, c.x, c.w, &c.s, c.ws, 0);
        check_fd(c.x, nx, dx, conv_loss, &c, 1e-2, FD_TOL, "conv dx");
        check_fd(c.w, nw, dw, conv_loss, &c, 1e-2, FD_TOL, "conv dw");
        check_fd(c.b, 3, db, conv_loss, &c, 1e-2, FD_TOL, "conv db");
        float *bufs[] = {c.x, c.w, c.b, c.r, c.y, c.ws, dx, dw, db};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            free(bufs[i]);
    }
}

/* ---- batch normalisation ------------------------------------------------------ */

#define BN_EPS 1e-5f

typedef struct {
    int64_t m;
    int c, relu, batch_stats, add_relu;
    float *x, *gamma, *beta, *residual, *r, *y;
    float *mean, *var, *invstd; /* inference mode: fixed; train mode: recomputed */
} BnCtx;

static void bn_invstd(float *invstd, const float *var, int c)
{
    for (int j = 0; j < c; j++)
        invstd[j] = 1.0f / sqrtf(var[j] + BN_EPS);
}

static void bn_forward(BnCtx *b)
{
    if (b->batch_stats) {
        batchnorm_stats(b->mean, b->var, b->x, b->m, b->c);
        bn_invstd(b->invstd, b->var, b->c);
    }
    if (b->add_relu)
        batchnorm_apply_add_relu(b->y, b->x, b->mean, b->invstd, b->gamma, b->beta, b->residual,
                                 b->m, b->c);
    else
        batchnorm_apply(b->y, b->x, b->mean, b->invstd, b->gamma, b->beta, b->m, b->c, b->relu);
}

static double bn_loss(void *p, uint64_t *sig)
{
    BnCtx *b = p;
    bn_forward(b);
    size_t n = (size_t)b->m * b->c;
    *sig = (b->relu || b->add_relu) ? mask_sig(b->y, n) : 0;
    return dot(b->y, b->r, n);
}

static void bn_ctx_init(BnCtx *b, int64_t m, int c, int relu, int batch_stats, int add_relu,
                        uint64_t seed)
{
    size_t n = (size_t)m * c;
    memset(b, 0, sizeof *b);
    b->m = m; b->c = c; b->relu = relu; b->batch_stats = batch_stats; b->add_relu = add_relu;
    /* per-channel offsets and scales so that mean and variance matter */
    b->x = falloc_uniform(n, seed, -1.0f, 1.0f);
    for (size_t i = 0; i < n; i++)
        b->x[i] = b->x[i] * (1.0f + 0.5f * (float)(i % c)) + 0.3f * (float)(i % c);
    b->gamma = falloc_uniform((size_t)c, seed + 1, 0.5f, 1.5f);
    b->beta = falloc_uniform((size_t)c, seed + 2, -0.5f, 0.5f);
    b->residual = falloc_uniform(n, seed + 3, -1.0f, 1.0f);
    b->r = falloc_uniform(n, seed + 4, -1.0f, 1.0f);
    b->y = falloc(n);
    b->mean = falloc_uniform((size_t)c, seed + 5, -0.5f, 0.5f);
    b->var = falloc_uniform((size_t)c, seed + 6, 0.5f, 2.0f);
    b->invstd = falloc((size_t)c);
    bn_invstd(b->invstd, b->var, c);
}

static void bn_ctx_free(BnCtx *b)
{
    float *bufs[] = {b->x, b->gamma, b->beta, b->residual, b->r, b->y, b->mean, b->var,
                     b->invstd};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
}

/* Gradients of bn_loss by batchnorm_backward (dgamma/dbeta added into pre-filled
 * values, which are subtracted again) against finite differences. */
static void check_bn_fd(int relu, int batch_stats, uint64_t seed)
{
    const int64_t m = 12; /* n=2, 3x2 */
    const int c = 3;
    const size_t n = (size_t)m * c;
    char what[96];
    const char *mode = batch_stats ? "train" : "inference";
    BnCtx b;
    bn_ctx_init(&b, m, c, relu, batch_stats, 0, seed);
    bn_forward(&b);
    if (relu) { /* the mask must matter */
        size_t zeros = 0;
        for (size_t i = 0; i < n; i++)
            zeros += b.y[i] == 0.0f;
        assert_true(zeros > 0 && zeros < n);
    }
    float *x0 = fdup(b.x, n), *dy0 = fdup(b.r, n);
    float *dx = falloc(n), *dg = falloc_uniform((size_t)c, seed + 7, -1.0f, 1.0f);
    float *dbt = falloc_uniform((size_t)c, seed + 8, -1.0f, 1.0f);
    float *dg0 = fdup(dg, (size_t)c), *dbt0 = fdup(dbt, (size_t)c);
    fill_value(dx, n, NAN);
    batchnorm_backward(dx, dg, dbt, b.r, relu ? b.y : NULL, b.x, b.mean, b.invstd, b.gamma, m, c,
                       batch_stats);
    guard_check(dx, n, "bn dx");
    guard_check(dg, (size_t)c, "bn dgamma");
    assert_unchanged(b.x, x0, n, "bn x");
    assert_unchanged(b.r, dy0, n, "bn dy");
    for (int j = 0; j < c; j++) {
        dg[j] -= dg0[j];
        dbt[j] -= dbt0[j];
    }
    if (batch_stats) {
        /* through the batch mean, the input gradient sums to zero per channel
         * (dx = g*is * (dy' - mean(dy') - xhat * mean(dy' xhat)) and sum xhat = 0) */
        for (int j = 0; j < c; j++) {
            double sum = 0.0;
            for (int64_t r = 0; r < m; r++)
                sum += dx[r * c + j];
            assert_true(fabs(sum) < 1e-5);
        }
    }
    snprintf(what, sizeof what, "bn %s%s dx", mode, relu ? "+relu" : "");
    check_fd(b.x, n, dx, bn_loss, &b, 1e-2, FD_TOL, what);
    snprintf(what, sizeof what, "bn %s%s dgamma", mode, relu ? "+relu" : "");
    check_fd(b.gamma, (size_t)c, dg, bn_loss, &b, 1e-2, FD_TOL, what);
    snprintf(what, sizeof what, "bn %s%s dbeta", mode, relu ? "+relu" : "");
    check_fd(b.beta, (size_t)c, dbt, bn_loss, &b, 1e-2, FD_TOL, what);

    /* dx may alias dy, and NULL dgamma/dbeta are skipped */
    bn_forward(&b);
    float *alias = fdup(b.r, n);
    batchnorm_backward(alias, NULL, NULL, alias, relu ? b.y : NULL, b.x, b.mean, b.invstd,
                       b.gamma, m, c, batch_stats);
    snprintf(what, sizeof what, "bn %s%s dx aliasing dy", mode, relu ? "+relu" : "");
    testutil_assert_close(alias, dx, n, 1e-6, 1e-6, what);

    float *bufs[] = {x0, dy0, dx, dg, dbt, dg0, dbt0, alias};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    bn_ctx_free(&b);
}

static void test_batchnorm_train_fd(void **state)
{
    (void)state;
    check_bn_fd(0, 1, 800);
    check_bn_fd(1, 1, 810);
}

static void test_batchnorm_inference_fd(void **state)
{
    (void)state;
    check_bn_fd(0, 0, 820);
    check_bn_fd(1, 0, 830);
}

/* out = relu(bn(x) + residual), batch statistics: the residual gets dy masked by
 * out > 0 (relu_backward), the BN branch the same masked gradient (relu_out = out). */
static void test_batchnorm_add_relu_fd(void **state)
{
    (void)state;
    const int64_t m = 12;
    const int c = 3;
    const size_t n = (size_t)m * c;
    BnCtx b;
    bn_ctx_init(&b, m, c, 0, 1, 1, 900);
    bn_forward(&b);
    /* the forward value itself */
    for (size_t i = 0; i < n; i++) {
        int j = (int)(i % c);
        double v = ((double)b.x[i] - b.mean[j]) * b.invstd[j] * b.gamma[j] + b.beta[j] +
                   b.residual[i];
        assert_true(fabs(b.y[i] - (v > 0 ? v : 0.0)) < 1e-5);
    }
    size_t zeros = 0;
    for (size_t i = 0; i < n; i++)
        zeros += b.y[i] == 0.0f;
    assert_true(zeros > 0 && zeros < n); /* the mask matters */

    float *dres = falloc(n), *dx = falloc(n), *dg = falloc((size_t)c), *dbt = falloc((size_t)c);
    fill_value(dg, (size_t)c, 0.0f);
    fill_value(dbt, (size_t)c, 0.0f);
    relu_backward(dres, b.r, b.y, (int64_t)n);
    batchnorm_backward(dx, dg, dbt, b.r, b.y, b.x, b.mean, b.invstd, b.gamma, m, c, 1);
    check_fd(b.residual, n, dres, bn_loss, &b, 1e-2, FD_TOL, "add_relu dresidual");
    check_fd(b.x, n, dx, bn_loss, &b, 1e-2, FD_TOL, "add_relu dx");
    check_fd(b.gamma, (size_t)c, dg, bn_loss, &b, 1e-2, FD_TOL, "add_relu dgamma");
    check_fd(b.beta, (size_t)c, dbt, bn_loss, &b, 1e-2, FD_TOL, "add_relu dbeta");
    free(dres);
    free(dx);
    free(dg);
    free(dbt);
    bn_ctx_free(&b);
}

/* Compares batchnorm_stats with two passes in double over the same float values:
 * the mean within one float ulp plus 1e-3 standard deviations, the biased variance
 * within 1e-4 relative. */
static void check_stats(const float *x, int64_t m, int c, const char *what)
{
    float *mean = falloc((size_t)c), *var = falloc((size_t)c);
    batchnorm_stats(mean, var, x, m, c);
    guard_check(mean, (size_t)c, "mean");
    guard_check(var, (size_t)c, "var");
    for (int j = 0; j < c; j++) {
        double mu = 0.0, v = 0.0;
        for (int64_t r = 0; r < m; r++)
            mu += x[r * c + j];
        mu /= (double)m;
        for (int64_t r = 0; r < m; r++) {
            double d = x[r * c + j] - mu;
            v += d * d;
        }
        v /= (double)m; /* biased */
        /* the mean may be off by one float ulp (it is returned as a float) plus
         * 1e-3 standard deviations: the error of x - mean relative to the spread */
        double ulp = nextafterf((float)fabs(mu), INFINITY) - (float)fabs(mu);
        double mean_tol = ulp + 1e-3 * sqrt(v);
        double mean_err = fabs(mean[j] - mu), var_err = fabs(var[j] - v) / v;
        if (!(mean_err <= mean_tol) || !(var_err <= 1e-4))
            fail_msg("%s, m=%lld, channel %d: mean %.9g (want %.9g, error %.2g, allowed %.2g), "
                     "var %.6g (want %.6g, relative error %.2e)", what, (long long)m, j, mean[j],
                     mu, mean_err, mean_tol, var[j], v, var_err);
        if (m > 1) /* the biased estimate, not the unbiased one (factor m/(m-1)) */
            assert_true(fabs(var[j] - v * (double)m / (double)(m - 1)) > 0.5 * v / (double)m);
    }
    free(mean);
    free(var);
}

/* Values 1000 + noise of 1 down to 1e-3 (variance down to 3e-7): a one-pass float
 * E[x^2] - E[x]^2 returns noise, and a mean that is off by a few float ulps (6e-5
 * each at 1000) shows up squared in the variance. */
static void test_batchnorm_stats_precision(void **state)
{
    (void)state;
    static const float noise[] = {1.0f, 1e-1f, 3e-2f, 1e-2f, 3e-3f, 1e-3f};
    const int c = (int)(sizeof noise / sizeof noise[0]);
    static const int64_t ms[] = {37, 20011};
    for (size_t k = 0; k < sizeof ms / sizeof ms[0]; k++) {
        const size_t n = (size_t)ms[k] * c;
        float *x = falloc_uniform(n, 1000 + k, -1.0f, 1.0f);
        for (size_t i = 0; i < n; i++)
            x[i] = 1000.0f + 0.37f * (float)(i % c) + x[i] * noise[i % c];
        check_stats(x, ms[k], c, "offset 1000");
        /* and centred data, for contrast */
        for (size_t i = 0; i < n; i++)
            x[i] -= 1000.0f;
        check_stats(x, ms[k], c, "centred");
        free(x);
    }

    /* a single row: variance 0, mean the row */
    float one[3] = {1000.25f, -3.5f, 0.0f}, mean[3], var[3];
    batchnorm_stats(mean, var, one, 1, 3);
    for (int j = 0; j < 3; j++) {
        assert_true(mean[j] == one[j]);
        assert_true(var[j] == 0.0f);
    }
}

static void test_relu(void **state)
{
    (void)state;
    float x[6] = {-2.0f, -0.0f, 0.0f, 1e-30f, 3.0f, -1e-30f}, y[6], dy[6], dx[6];
    const float want[6] = {0.0f, 0.0f, 0.0f, 1e-30f, 3.0f, 0.0f};
    relu_forward(y, x, 6);
    for (int i = 0; i < 6; i++) {
        assert_true(y[i] == want[i]);
        dy[i] = (float)(i + 1);
    }
    relu_backward(dx, dy, y, 6);
    const float wantd[6] = {0.0f, 0.0f, 0.0f, 4.0f, 5.0f, 0.0f}; /* strict y > 0 */
    for (int i = 0; i < 6; i++)
        assert_true(dx[i] == wantd[i]);
    relu_mask(dy, y, 6);
    for (int i = 0; i < 6; i++)
        assert_true(dy[i] == wantd[i]);
    relu_forward(x, x, 6); /* in place */
    for (int i = 0; i < 6; i++)
        assert_true(x[i] == want[i]);
}

/* ---- pooling ------------------------------------------------------------------ */

/* Reference max pooling: scan the window row by row, strict > (first max wins),
 * padding positions skipped. */
static void maxpool_ref(float *y, int32_t *arg, const float *x, int n, int h, int w, int c,
                        int k, int s, int p, int oh, int ow)
{
    for (int img = 0; img < n; img++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int ch = 0; ch < c; ch++) {
                    int best = -1;
                    for (int i = 0; i < k; i++)
                        for (int j = 0; j < k; j++) {
                            int iy = oy * s - p + i, ix = ox * s - p + j;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                            int idx = (iy * w + ix) * c + ch;
                            if (best < 0 || x[(size_t)img * h * w * c + idx] >
                                                x[(size_t)img * h * w * c + best])
                                best = idx;
                        }
                    size_t o = (((size_t)img * oh + oy) * ow + ox) * c + ch;
                    arg[o] = best;
                    y[o] = x[(size_t)img * h * w * c + best];
                }
}

static int pool_out(int h, int k, int s, int p)
{
    return (h + 2 * p - k) / s + 1;
}

/* kind 0: distinct random values; 1: values in {0, 1, 2} (ties everywhere);
 * 2: all equal; 3: all negative (zero padding would win if padding counted). */
static void check_maxpool_exact(int n, int h, int w, int c, int kind, uint64_t seed)
{
    const int k = 3, s = 2, p = 1, oh = pool_out(h, k, s, p), ow = pool_out(w, k, s, p);
    const size_t nx = (size_t)n * h * w * c, ny = (size_t)n * oh * ow * c;
    float *x = falloc_uniform(nx, seed, 0.0f, 1.0f);
    for (size_t i = 0; i < nx; i++) {
        if (kind == 1) x[i] = floorf(x[i] * 3.0f);
        if (kind == 2) x[i] = 0.5f;
        if (kind == 3) x[i] = -1.0f - x[i];
    }
    float *y = falloc(ny), *yref = falloc(ny);
    int32_t *arg = malloc(ny * sizeof(int32_t)), *aref = malloc(ny * sizeof(int32_t));
    assert_non_null(arg);
    assert_non_null(aref);
    fill_value(y, ny, NAN);
    maxpool_forward(y, arg, x, n, h, w, c, k, s, p, oh, ow);
    maxpool_ref(yref, aref, x, n, h, w, c, k, s, p, oh, ow);
    guard_check(y, ny, "maxpool y");
    for (size_t o = 0; o < ny; o++) {
        if (arg[o] != aref[o] || y[o] != yref[o])
            fail_msg("maxpool %dx%d kind %d: output %zu: got %g at %d, want %g at %d", h, w, kind,
                     o, y[o], arg[o], yref[o], aref[o]);
        if (kind == 3)
            assert_true(y[o] < -1.0f + 1e-7f);
        if (kind == 2) {
            /* all equal: the top-left valid position of the window */
            size_t r = o / c;
            int ox = (int)(r % ow), oy = (int)(r / ow % oh), ch = (int)(o % c);
            int iy = oy * s - p < 0 ? 0 : oy * s - p, ix = ox * s - p < 0 ? 0 : ox * s - p;
            assert_int_equal(arg[o], (iy * w + ix) * c + ch);
        }
    }
    /* backward: the gradient goes to the recorded position only (dx overwritten) */
    float *dy = falloc_uniform(ny, seed + 1, -1.0f, 1.0f), *dx = falloc(nx), *dxref = falloc(nx);
    fill_value(dx, nx, NAN);
    memset(dxref, 0, nx * sizeof(float));
    for (size_t o = 0; o < ny; o++) {
        size_t img = o / ((size_t)oh * ow * c);
        dxref[img * h * w * c + (size_t)aref[o]] += dy[o];
    }
    maxpool_backward(dx, dy, arg, n, h, w, c, oh, ow);
    guard_check(dx, nx, "maxpool dx");
    testutil_assert_close(dx, dxref, nx, 1e-6, 1e-6, "maxpool dx scatter");
    free(x); free(y); free(yref); free(arg); free(aref); free(dy); free(dx); free(dxref);
}

static void test_maxpool_ties_and_padding(void **state)
{
    (void)state;
    static const int sizes[][2] = {{7, 5}, {6, 6}, {1, 1}, {2, 3}, {9, 9}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (int kind = 0; kind < 4; kind++)
            check_maxpool_exact(2, sizes[i][0], sizes[i][1], 3, kind, 1100 + i * 4 + kind);

    /* a hand-made tie: 3x3 input, one channel, 3 at (0,1) and (1,0); the output
     * at (0,0) covers rows/cols -1..1, so scan order meets (0,1) first */
    float x[9] = {1, 3, 0, 3, 2, 0, 0, 0, 0}, y[4];
    int32_t arg[4];
    maxpool_forward(y, arg, x, 1, 3, 3, 1, 3, 2, 1, 2, 2);
    assert_true(y[0] == 3.0f);
    assert_int_equal(arg[0], 1);
    assert_true(y[1] == 3.0f); /* window rows -1..1, cols 1..3 */
    assert_int_equal(arg[1], 1);
    assert_true(y[2] == 3.0f); /* rows 1..3, cols -1..1 */
    assert_int_equal(arg[2], 3);
    assert_true(y[3] == 2.0f);
    assert_int_equal(arg[3], 4);
}

typedef struct {
    int n, h, w, c, oh, ow;
    float *x, *y, *r;
    int32_t *arg;
} PoolCtx;

static double maxpool_loss(void *p, uint64_t *sig)
{
    PoolCtx *q = p;
    maxpool_forward(q->y, q->arg, q->x, q->n, q->h, q->w, q->c, 3, 2, 1, q->oh, q->ow);
    size_t ny = (size_t)q->n * q->oh * q->ow * q->c;
    *sig = fnv(0xcbf29ce484222325ULL, q->arg, ny * sizeof(int32_t));
    return dot(q->y, q->r, ny);
}

static double avgpool_loss(void *p, uint64_t *sig)
{
    PoolCtx *q = p;
    avgpool_forward(q->y, q->x, q->n, q->h * q->w, q->c);
    *sig = 0;
    return dot(q->y, q->r, (size_t)q->n * q->c);
}

/* Distinct values 0.05 apart in random order: a step of 1e-2 never changes the
 * argmax, so no element is skipped. */
static void test_maxpool_fd(void **state)
{
    (void)state;
    static const int sizes[][2] = {{7, 5}, {4, 4}, {1, 1}};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        PoolCtx q = {.n = 2, .h = sizes[si][0], .w = sizes[si][1], .c = 3};
        q.oh = pool_out(q.h, 3, 2, 1);
        q.ow = pool_out(q.w, 3, 2, 1);
        size_t nx = (size_t)q.n * q.h * q.w * q.c, ny = (size_t)q.n * q.oh * q.ow * q.c;
        float *key = falloc_uniform(nx, 1200 + si, 0.0f, 1.0f);
        q.x = falloc(nx);
        for (size_t i = 0; i < nx; i++) { /* rank of key[i]: a random permutation */
            size_t rank = 0;
            for (size_t j = 0; j < nx; j++)
                rank += key[j] < key[i] || (key[j] == key[i] && j < i);
            q.x[i] = 0.05f * (float)rank - 1.0f;
        }
        q.y = falloc(ny);
        q.r = falloc_uniform(ny, 1210 + si, -1.0f, 1.0f);
        q.arg = malloc(ny * sizeof(int32_t));
        assert_non_null(q.arg);
        float *dx = falloc(nx);
        uint64_t sig;
        maxpool_loss(&q, &sig);
        maxpool_backward(dx, q.r, q.arg, q.n, q.h, q.w, q.c, q.oh, q.ow);
        check_fd(q.x, nx, dx, maxpool_loss, &q, 1e-2, FD_TOL, "maxpool dx");
        free(key); free(q.x); free(q.y); free(q.r); free(q.arg); free(dx);
    }
}

static void test_avgpool_fd(void **state)
{
    (void)state;
    PoolCtx q = {.n = 2, .h = 5, .w = 1, .c = 3};
    size_t nx = 2 * 5 * 3, ny = 2 * 3;
    q.x = falloc_uniform(nx, 1300, -1.0f, 1.0f);
    q.y = falloc(ny);
    q.r = falloc_uniform(ny, 1301, -1.0f, 1.0f);
    float *dx = falloc(nx);
    fill_value(dx, nx, NAN);
    avgpool_backward(dx, q.r, q.n, q.h * q.w, q.c);
    guard_check(dx, nx, "avgpool dx");
    check_fd(q.x, nx, dx, avgpool_loss, &q, 1e-2, FD_TOL, "avgpool dx");
    /* the forward value: image 1, channel 2 */
    uint64_t sig;
    avgpool_loss(&q, &sig);
    double mean = 0.0;
    for (int p = 0; p < 5; p++)
        mean += q.x[(5 + p) * 3 + 2];
    assert_true(fabs(q.y[5] - mean / 5.0) < 1e-6);
    guard_check(q.y, ny, "avgpool y");
    free(q.x); free(q.y); free(q.r); free(dx);
}

/* ---- dense -------------------------------------------------------------------- */

typedef struct {
    int n, in, out;
    float *x, *w, *b, *y, *r;
} DenseCtx;

static double dense_loss(void *p, uint64_t *sig)
{
    DenseCtx *d = p;
    dense_forward(d->y, d->x, d->w, d->b, d->n, d->in, d->out);
    *sig = 0;
    return dot(d->y, d->r, (size_t)d->n * d->out);
}

static void test_dense_fd(void **state)
{
    (void)state;
    DenseCtx d = {.n = 3, .in = 4, .out = 5};
    size_t nx = 12, nw = 20, ny = 15;
    d.x = falloc_uniform(nx, 1400, -1.0f, 1.0f);
    d.w = falloc_uniform(nw, 1401, -1.0f, 1.0f);
    d.b = falloc_uniform(5, 1402, -1.0f, 1.0f);
    d.r = falloc_uniform(ny, 1403, -1.0f, 1.0f);
    d.y = falloc(ny);
    /* forward value of one element, overwrite semantics (y pre-filled with NaN) */
    fill_value(d.y, ny, NAN);
    dense_forward(d.y, d.x, d.w, d.b, 3, 4, 5);
    double y12 = d.b[2];
    for (int i = 0; i < 4; i++)
        y12 += (double)d.x[2 * 4 + i] * d.w[i * 5 + 2];
    assert_true(fabs(d.y[2 * 5 + 2] - y12) < 1e-6);
    fill_value(d.y, ny, NAN);
    dense_forward(d.y, d.x, d.w, NULL, 3, 4, 5);
    assert_true(fabs(d.y[2 * 5 + 2] - (y12 - d.b[2])) < 1e-6);
    guard_check(d.y, ny, "dense y");

    float *dx = falloc(nx), *dw = falloc_uniform(nw, 1404, -1.0f, 1.0f);
    float *db = falloc_uniform(5, 1405, -1.0f, 1.0f);
    float *dw0 = fdup(dw, nw), *db0 = fdup(db, 5);
    fill_value(dx, nx, NAN);
    dense_backward(dx, dw, db, d.r, d.x, d.w, 3, 4, 5);
    guard_check(dx, nx, "dense dx");
    guard_check(dw, nw, "dense dw");
    guard_check(db, 5, "dense db");
    for (size_t i = 0; i < nw; i++) dw[i] -= dw0[i]; /* added into */
    for (size_t i = 0; i < 5; i++) db[i] -= db0[i];
    check_fd(d.x, nx, dx, dense_loss, &d, 1e-2, FD_TOL, "dense dx");
    check_fd(d.w, nw, dw, dense_loss, &d, 1e-2, FD_TOL, "dense dw");
    check_fd(d.b, 5, db, dense_loss, &d, 1e-2, FD_TOL, "dense db");

    /* NULL gradients are skipped: dx alone equals the dx above */
    float *dx2 = falloc(nx);
    dense_backward(dx2, NULL, NULL, d.r, d.x, d.w, 3, 4, 5);
    testutil_assert_close(dx2, dx, nx, 1e-6, 1e-6, "dense dx alone");
    free(d.x); free(d.w); free(d.b); free(d.r); free(d.y);
    free(dx); free(dw); free(db); free(dw0); free(db0); free(dx2);
}

/* ---- softmax cross-entropy ---------------------------------------------------- */

/* The loss by the definition, in double (PyTorch cross_entropy, reduction mean,
 * weight, label_smoothing), after subtracting `shift` from every logit. */
static double xent_ref(const float *logits, const int *labels, const float *cw, int n, int c,
                       double eps, double shift)
{
    double wsum = 0.0, nll = 0.0, smooth = 0.0;
    for (int i = 0; i < n; i++) {
        double se = 0.0;
        for (int j = 0; j < c; j++)
            se += exp((double)logits[i * c + j] - shift);
        double wy = cw ? cw[labels[i]] : 1.0;
        wsum += wy;
        nll += wy * -(((double)logits[i * c + labels[i]] - shift) - log(se));
        for (int j = 0; j < c; j++)
            smooth += (cw ? cw[j] : 1.0) * -(((double)logits[i * c + j] - shift) - log(se));
    }
    return (1.0 - eps) * nll / wsum + eps / c * smooth / wsum;
}

static void test_softmax_xent_value(void **state)
{
    (void)state;
    enum { N = 3, C = 4 };
    const float logits[N * C] = {1.0f, -0.5f, 2.0f, 0.25f,   0.0f, 0.0f, 3.0f, -1.0f,
                                 -2.0f, 1.5f, 0.5f, 0.75f};
    const int labels[N] = {1, 0, 3}; /* sum of w[y_i] = 4, not N */
    const float cw[C] = {0.5f, 2.0f, 1.0f, 1.5f};
    float probs[N * C], dl[N * C];

    double want = xent_ref(logits, labels, cw, N, C, 0.1, 0.0);
    double got = softmax_xent(dl, probs, logits, labels, cw, N, C, 0.1f);
    print_message("  loss %.10f, want %.10f\n", got, want);
    assert_true(fabs(got - want) <= 1e-6 * want);
    /* without weights or smoothing: the plain mean of -log p[label] */
    double plain = xent_ref(logits, labels, NULL, N, C, 0.0, 0.0);
    assert_true(fabs(softmax_xent(NULL, NULL, logits, labels, NULL, N, C, 0.0f) - plain) <=
                1e-6 * plain);
    /* weights change the answer, smoothing changes the answer */
    assert_true(fabs(xent_ref(logits, labels, cw, N, C, 0.0, 0.0) - plain) > 1e-2);
    assert_true(fabs(xent_ref(logits, labels, cw, N, C, 0.1, 0.0) -
                     xent_ref(logits, labels, cw, N, C, 0.0, 0.0)) > 1e-3);

    for (int i = 0; i < N; i++) {
        double sum = 0.0, se = 0.0;
        for (int j = 0; j < C; j++) {
            sum += probs[i * C + j];
            se += exp((double)logits[i * C + j]);
        }
        assert_true(fabs(sum - 1.0) < 1e-6);
        for (int j = 0; j < C; j++)
            assert_true(fabs(probs[i * C + j] - exp((double)logits[i * C + j]) / se) < 1e-7);
    }

    /* all logits equal: -log p = log C for every class, so the weighted mean of the
     * NLL and the unweighted smoothed loss are both log C */
    float flat[N * C];
    fill_value(flat, N * C, 0.7f);
    assert_true(fabs(softmax_xent(NULL, NULL, flat, labels, cw, N, C, 0.0f) - log(C)) < 1e-7);
    assert_true(fabs(softmax_xent(NULL, NULL, flat, labels, NULL, N, C, 0.1f) - log(C)) < 1e-7);

    /* logits near 1000: exp would overflow without the max subtraction */
    float big[N * C], dbig[N * C];
    for (int i = 0; i < N * C; i++)
        big[i] = 1000.0f + logits[i];
    double want_big = xent_ref(big, labels, cw, N, C, 0.1, 1000.0);
    double got_big = softmax_xent(dbig, probs, big, labels, cw, N, C, 0.1f);
    print_message("  logits ~1000: loss %.10f, want %.10f\n", got_big, want_big);
    assert_true(isfinite(got_big));
    assert_true(fabs(got_big - want_big) <= 1e-6 * want_big);
    for (int i = 0; i < N * C; i++) {
        assert_true(isfinite(dbig[i]) && isfinite(probs[i]));
        assert_true(fabs(dbig[i] - dl[i]) < 1e-5); /* shift-invariant (up to float rounding) */
    }
    /* and far from each other: one logit 1000 above the rest */
    float far[C] = {1000.0f, 0.0f, 0.0f, 0.0f};
    int lab0 = 0, lab1 = 1;
    assert_true(fabs(softmax_xent(NULL, NULL, far, &lab0, NULL, 1, C, 0.0f)) < 1e-12);
    assert_true(fabs(softmax_xent(NULL, NULL, far, &lab1, NULL, 1, C, 0.0f) - 1000.0) < 1e-9);
}

typedef struct {
    float *logits;
    const int *labels;
    const float *cw;
    int n, c;
    float eps;
} XentCtx;

static double xent_loss(void *p, uint64_t *sig)
{
    XentCtx *x = p;
    *sig = 0;
    return softmax_xent(NULL, NULL, x->logits, x->labels, x->cw, x->n, x->c, x->eps);
}

static void test_softmax_xent_fd(void **state)
{
    (void)state;
    enum { N = 4, C = 5 };
    const int labels[N] = {1, 4, 0, 1};
    const float cw[C] = {0.5f, 2.0f, 1.0f, 1.5f, 0.8f};
    float logits[N * C], dl[N * C];
    testutil_fill_uniform(logits, N * C, 1500, -2.0f, 2.0f);
    const struct { const float *cw; float eps; const char *what; } cases[] = {
        {cw, 0.1f, "xent dlogits, weights + smoothing 0.1"},
        {NULL, 0.0f, "xent dlogits, plain"},
        {cw, 0.0f, "xent dlogits, weights"},
        {cw, 0.3f, "xent dlogits, weights + smoothing 0.3"},
        {NULL, 0.2f, "xent dlogits, smoothing 0.2"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        XentCtx x = {logits, labels, cases[k].cw, N, C, cases[k].eps};
        fill_value(dl, N * C, NAN);
        softmax_xent(dl, NULL, logits, labels, cases[k].cw, N, C, cases[k].eps);
        check_fd(logits, N * C, dl, xent_loss, &x, 1e-2, FD_TOL, cases[k].what);
    }
}

/* ---- dropout ------------------------------------------------------------------ */

static void test_dropout(void **state)
{
    (void)state;
    const int64_t n = 100000;
    float *x = falloc_uniform((size_t)n, 1600, 0.5f, 1.5f);
    float *y = falloc((size_t)n), *mask = falloc((size_t)n), *mask2 = falloc((size_t)n);
    Rng rng;

    rng_seed(&rng, 42);
    dropout_forward(y, mask, x, n, 0.0f, &rng);
    for (int64_t i = 0; i < n; i++) {
        assert_true(mask[i] == 1.0f);
        assert_true(y[i] == x[i]);
    }
    Rng fresh;
    rng_seed(&fresh, 42);
    assert_true(rng.state == fresh.state); /* p = 0 draws nothing */

    const float p = 0.3f, scale = 1.0f / (1.0f - p);
    dropout_forward(y, mask, x, n, p, &rng);
    guard_check(y, (size_t)n, "dropout y");
    guard_check(mask, (size_t)n, "dropout mask");
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; i++) {
        if (mask[i] == 0.0f) {
            dropped++;
            assert_true(y[i] == 0.0f);
        } else {
            assert_true(mask[i] == scale);
            assert_true(fabsf(y[i] - x[i] / (1.0f - p)) <= 1e-6f * fabsf(y[i]));
        }
    }
    double frac = (double)dropped / (double)n;
    print_message("  p=0.3: dropped %.4f\n", frac);
    assert_true(fabs(frac - 0.3) <= 0.01);
    assert_true(rng.state != fresh.state);

    /* the same seed gives the same mask; another seed another one */
    rng_seed(&rng, 42);
    dropout_forward(y, mask2, x, n, p, &rng);
    assert_int_equal(memcmp(mask, mask2, (size_t)n * sizeof(float)), 0);
    rng_seed(&rng, 43);
    dropout_forward(y, mask2, x, n, p, &rng);
    assert_int_not_equal(memcmp(mask, mask2, (size_t)n * sizeof(float)), 0);

    /* in place (y aliasing x) */
    float *xi = fdup(x, (size_t)n);
    rng_seed(&rng, 42);
    dropout_forward(xi, mask2, xi, n, p, &rng);
    for (int64_t i = 0; i < n; i++)
        assert_true(xi[i] == x[i] * mask[i]);
    free(x); free(y); free(mask); free(mask2); free(xi);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_shape_init),
        cmocka_unit_test(test_conv_stem_7x7_s2),
        cmocka_unit_test(test_conv_3x3_s1),
        cmocka_unit_test(test_conv_3x3_s2),
        cmocka_unit_test(test_conv_1x1_s1_pointwise),
        cmocka_unit_test(test_conv_1x1_s2_shortcut),
        cmocka_unit_test(test_conv_chunked_workspace),
        cmocka_unit_test(test_conv_fused),
        cmocka_unit_test(test_conv_fd),
        cmocka_unit_test(test_batchnorm_train_fd),
        cmocka_unit_test(test_batchnorm_inference_fd),
        cmocka_unit_test(test_batchnorm_add_relu_fd),
        cmocka_unit_test(test_batchnorm_stats_precision),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_maxpool_ties_and_padding),
        cmocka_unit_test(test_maxpool_fd),
        cmocka_unit_test(test_avgpool_fd),
        cmocka_unit_test(test_dense_fd),
        cmocka_unit_test(test_softmax_xent_value),
        cmocka_unit_test(test_softmax_xent_fd),
        cmocka_unit_test(test_dropout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
