/*
 * kernels.c: convolution (im2col + sgemm), BatchNorm, ReLU, pooling, dense,
 * dropout and softmax cross-entropy, forward and backward (see kernels.h).
 */
#include "kernels.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Hot loops (KERNEL_CLONES) are compiled for AVX-512, AVX2 and baseline x86-64 and
 * picked at load time (GCC target_clones): Debian builds for the baseline, whose
 * 4-wide SSE loops are half the speed of these memory-bound passes. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KERNEL_CLONES
#endif

/* Rows of im2col per workspace chunk: large enough for efficient sgemm, small
 * enough that the column buffer stays in the last-level cache's neighbourhood. */
#define CONV_CHUNK_FLOATS (4u << 20)

int conv_shape_init(ConvShape *s, int n, int h, int w, int cin, int cout, int k, int stride,
                    int pad)
{
    s->n = n; s->h = h; s->w = w; s->cin = cin;
    s->cout = cout; s->k = k; s->stride = stride; s->pad = pad;
    s->oh = (h + 2 * pad - k) / stride + 1;
    s->ow = (w + 2 * pad - k) / stride + 1;
    if (h + 2 * pad < k || w + 2 * pad < k || s->oh <= 0 || s->ow <= 0)
        return -1;
    return 0;
}

static int conv_is_pointwise(const ConvShape *s)
{
    return s->k == 1 && s->stride == 1 && s->pad == 0;
}

/* Images per workspace chunk (at least one). */
static int conv_chunk_images(const ConvShape *s)
{
    size_t per_image = (size_t)s->oh * s->ow * s->k * s->k * s->cin;
    size_t imgs = CONV_CHUNK_FLOATS / (per_image ? per_image : 1);
    if (imgs < 1) imgs = 1;
    if (imgs > (size_t)s->n) imgs = (size_t)s->n;
    return (int)imgs;
}

size_t conv_workspace_floats(const ConvShape *s)
{
    if (conv_is_pointwise(s))
        return 0;
    return (size_t)conv_chunk_images(s) * s->oh * s->ow * s->k * s->k * s->cin;
}

/* col[(img, oh, ow)][(i, j, ci)] for images n0 .. n0+nimg-1 of x. */
static void im2col(float *col, const float *x, const ConvShape *s, int n0, int nimg)
{
    const int k = s->k, cin = s->cin, K = k * k * cin;
    const size_t rowbytes = (size_t)cin * sizeof(float);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int img = 0; img < nimg; img++) {
        for (int oy = 0; oy < s->oh; oy++) {
            const float *xi = x + (size_t)(n0 + img) * s->h * s->w * cin;
            float *row = col + ((size_t)img * s->oh + oy) * s->ow * K;
            for (int ox = 0; ox < s->ow; ox++, row += K) {
                for (int i = 0; i < k; i++) {
                    int iy = oy * s->stride - s->pad + i;
                    float *dst = row + (size_t)i * k * cin;
                    if (iy < 0 || iy >= s->h) {
                        memset(dst, 0, rowbytes * k);
                        continue;
                    }
                    for (int j = 0; j < k; j++) {
                        int ix = ox * s->stride - s->pad + j;
                        if (ix < 0 || ix >= s->w)
                            memset(dst + (size_t)j * cin, 0, rowbytes);
                        else
                            memcpy(dst + (size_t)j * cin, xi + ((size_t)iy * s->w + ix) * cin,
                                   rowbytes);
                    }
                }
            }
        }
    }
}

KERNEL_CLONES
static void vec_add(float *restrict d, const float *restrict src, int n)
{
    for (int c = 0; c < n; c++)
        d[c] += src[c];
}

/* dx (images n0..) = gather-sum of dcol; each input pixel sums the columns that
 * read it, so threads never write the same element. */
static void col2im(float *dx, const float *dcol, const ConvShape *s, int n0, int nimg,
                   int accumulate)
{
    const int k = s->k, cin = s->cin, K = k * k * cin, st = s->stride;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int img = 0; img < nimg; img++) {
        for (int iy = 0; iy < s->h; iy++) {
            float *dxi = dx + ((size_t)(n0 + img) * s->h + iy) * s->w * cin;
            const float *dci = dcol + (size_t)img * s->oh * s->ow * K;
            for (int ix = 0; ix < s->w; ix++) {
                float *d = dxi + (size_t)ix * cin;
                if (!accumulate)
                    memset(d, 0, (size_t)cin * sizeof(float));
                for (int i = 0; i < k; i++) {
                    int ty = iy + s->pad - i;
                    if (ty < 0 || ty % st) continue;
                    int oy = ty / st;
                    if (oy >= s->oh) continue;
                    for (int j = 0; j < k; j++) {
                        int tx = ix + s->pad - j;
                        if (tx < 0 || tx % st) continue;
                        int ox = tx / st;
                        if (ox >= s->ow) continue;
                        const float *src = dci + ((size_t)oy * s->ow + ox) * K +
                                           ((size_t)i * k + j) * cin;
                        vec_add(d, src, cin);
                    }
                }
            }
        }
    }
}

static void add_bias_rows(float *y, const float *b, int64_t m, int c)
{
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; r++)
        memcpy(y + r * c, b, (size_t)c * sizeof(float));
}

/* y = conv(x, w) + beta * y: the im2col (or, for 1x1 stride 1, direct) sgemm that
 * both forward entry points share. */
static void conv_gemm(float *y, const float *x, const float *w, const ConvShape *s, float *ws,
                      float beta)
{
    const int K = s->k * s->k * s->cin;
    const int64_t m = (int64_t)s->n * s->oh * s->ow;
    if (conv_is_pointwise(s)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, s->cout, K, 1.0f, x, K,
                    w, s->cout, beta, y, s->cout);
        return;
    }
    const int chunk = conv_chunk_images(s);
    const int64_t rows_per_img = (int64_t)s->oh * s->ow;
    for (int n0 = 0; n0 < s->n; n0 += chunk) {
        int nimg = s->n - n0 < chunk ? s->n - n0 : chunk;
        im2col(ws, x, s, n0, nimg);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(nimg * rows_per_img),
                    s->cout, K, 1.0f, ws, K, w, s->cout, beta,
                    y + n0 * rows_per_img * s->cout, s->cout);
    }
}

void conv2d_forward(float *y, const float *x, const float *w, const float *b,
                    const ConvShape *s, float *ws)
{
    float beta = 0.0f;
    if (b) {
        add_bias_rows(y, b, (int64_t)s->n * s->oh * s->ow, s->cout);
        beta = 1.0f;
    }
    conv_gemm(y, x, w, s, ws, beta);
}

/* y = act(y + b + residual) over rows of c channels, in place; residual may be
 * NULL, b may not (conv2d_forward_fused passes zeros). One loop per case, so that
 * each element is read and written once and every loop vectorises. */
KERNEL_CLONES
static void rows_epilogue(float *restrict y, const float *restrict b,
                          const float *restrict residual, int64_t rows, int c, int relu)
{
    for (int64_t r = 0; r < rows; r++) {
        float *yr = y + r * c;
        const float *rr = residual ? residual + r * c : NULL;
        if (rr && relu) {
            for (int j = 0; j < c; j++) {
                float v = yr[j] + b[j] + rr[j];
                yr[j] = v > 0.0f ? v : 0.0f;
            }
        } else if (rr) {
            for (int j = 0; j < c; j++)
                yr[j] = yr[j] + b[j] + rr[j];
        } else if (relu) {
            for (int j = 0; j < c; j++) {
                float v = yr[j] + b[j];
                yr[j] = v > 0.0f ? v : 0.0f;
            }
        } else {
            for (int j = 0; j < c; j++)
                yr[j] += b[j];
        }
    }
}

/* The bias of a fused convolution without one. */
static const float ZERO_BIAS[KERNEL_MAX_CHANNELS];

/* Rows per epilogue task: a few rows of up to 2048 channels, many tasks per thread. */
#define EPILOGUE_ROWS 64

void conv2d_forward_fused(float *y, const float *x, const float *w, const float *b,
                          const float *residual, int relu, const ConvShape *s, float *ws)
{
    conv_gemm(y, x, w, s, ws, 0.0f);
    if (!b && !residual && !relu)
        return;
    const int64_t m = (int64_t)s->n * s->oh * s->ow;
    const int c = s->cout;
    assert(b || c <= KERNEL_MAX_CHANNELS);
    if (!b)
        b = ZERO_BIAS;
    const int64_t nchunks = (m + EPILOGUE_ROWS - 1) / EPILOGUE_ROWS;
    #pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < nchunks; ch++) {
        int64_t r0 = ch * EPILOGUE_ROWS, r1 = r0 + EPILOGUE_ROWS < m ? r0 + EPILOGUE_ROWS : m;
        rows_epilogue(y + r0 * c, b, residual ? residual + r0 * c : NULL, r1 - r0, c, relu);
    }
}

/* db[c] += sum over rows of dy[r][c]. */
static void sum_rows_add(float *db, const float *dy, int64_t m, int c)
{
    double *acc = calloc((size_t)c, sizeof(double));
    if (!acc) { /* fall back to float accumulation: correct, slightly less precise */
        for (int64_t r = 0; r < m; r++)
            for (int j = 0; j < c; j++)
                db[j] += dy[r * c + j];
        return;
    }
    for (int64_t r = 0; r < m; r++) {
        const float *row = dy + r * c;
        for (int j = 0; j < c; j++)
            acc[j] += row[j];
    }
    for (int j = 0; j < c; j++)
        db[j] += (float)acc[j];
    free(acc);
}

void conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, const ConvShape *s, float *ws, int accumulate_dx)
{
    const int K = s->k * s->k * s->cin;
    const int64_t m = (int64_t)s->n * s->oh * s->ow;
    if (db)
        sum_rows_add(db, dy, m, s->cout);
    if (conv_is_pointwise(s)) {
        if (dw)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, s->cout, (int)m, 1.0f, x, K,
                        dy, s->cout, 1.0f, dw, s->cout);
        if (dx)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, K, s->cout, 1.0f, dy,
                        s->cout, w, s->cout, accumulate_dx ? 1.0f : 0.0f, dx, K);
        return;
    }
    const int chunk = conv_chunk_images(s);
    const int64_t rows_per_img = (int64_t)s->oh * s->ow;
    for (int n0 = 0; n0 < s->n; n0 += chunk) {
        int nimg = s->n - n0 < chunk ? s->n - n0 : chunk;
        int rows = (int)(nimg * rows_per_img);
        const float *dyc = dy + n0 * rows_per_img * s->cout;
        if (dw) {
            im2col(ws, x, s, n0, nimg);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, s->cout, rows, 1.0f, ws, K,
                        dyc, s->cout, 1.0f, dw, s->cout);
        }
        if (dx) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, K, s->cout, 1.0f, dyc,
                        s->cout, w, s->cout, 0.0f, ws, K);
            col2im(dx, ws, s, n0, nimg, accumulate_dx);
        }
    }
}

/* Rows per float partial sum: short enough that float accumulation stays exact to
 * ~1e-7 relative, long enough to vectorise; partials are combined in double. */
#define BN_CHUNK 64

/* acc[j] += sum over rows of x[r][j]. */
KERNEL_CLONES
static void rows_sum(float *restrict acc, const float *restrict x, int64_t rows, int c)
{
    for (int64_t r = 0; r < rows; r++)
        for (int j = 0; j < c; j++)
            acc[j] += x[r * c + j];
}

/* sd[j] += sum (x - mu), sq[j] += sum (x - mu)^2 over rows. */
KERNEL_CLONES
static void rows_dev(float *restrict sd, float *restrict sq, const float *restrict x,
                     const float *restrict mu, int64_t rows, int c)
{
    for (int64_t r = 0; r < rows; r++)
        for (int j = 0; j < c; j++) {
            float d = x[r * c + j] - mu[j];
            sd[j] += d;
            sq[j] += d * d;
        }
}

void batchnorm_stats(float *mean, float *var, const float *x, int64_t m, int c)
{
    assert(c <= KERNEL_MAX_CHANNELS);
    double sum[KERNEL_MAX_CHANNELS], sd[KERNEL_MAX_CHANNELS], sq[KERNEL_MAX_CHANNELS];
    float meanf[KERNEL_MAX_CHANNELS];
    memset(sum, 0, (size_t)c * sizeof(double));
    memset(sd, 0, (size_t)c * sizeof(double));
    memset(sq, 0, (size_t)c * sizeof(double));
    const int64_t nchunks = (m + BN_CHUNK - 1) / BN_CHUNK;
    #pragma omp parallel
    {
        double ld[KERNEL_MAX_CHANNELS], ld2[KERNEL_MAX_CHANNELS];
        float lf[KERNEL_MAX_CHANNELS], lf2[KERNEL_MAX_CHANNELS];
        memset(ld, 0, (size_t)c * sizeof(double));
        #pragma omp for schedule(static)
        for (int64_t ch = 0; ch < nchunks; ch++) {
            int64_t r0 = ch * BN_CHUNK, r1 = r0 + BN_CHUNK < m ? r0 + BN_CHUNK : m;
            memset(lf, 0, (size_t)c * sizeof(float));
            rows_sum(lf, x + r0 * c, r1 - r0, c);
            for (int j = 0; j < c; j++)
                ld[j] += lf[j];
        }
        #pragma omp critical
        for (int j = 0; j < c; j++)
            sum[j] += ld[j];
        #pragma omp barrier
        #pragma omp single
        for (int j = 0; j < c; j++)
            meanf[j] = (float)(sum[j] / (double)m);
        /* second pass around the float mean: d = x - meanf is nearly exact, so
         * sum d corrects the mean and sum d^2 gives the variance */
        memset(ld, 0, (size_t)c * sizeof(double));
        memset(ld2, 0, (size_t)c * sizeof(double));
        #pragma omp for schedule(static)
        for (int64_t ch = 0; ch < nchunks; ch++) {
            int64_t r0 = ch * BN_CHUNK, r1 = r0 + BN_CHUNK < m ? r0 + BN_CHUNK : m;
            memset(lf, 0, (size_t)c * sizeof(float));
            memset(lf2, 0, (size_t)c * sizeof(float));
            rows_dev(lf, lf2, x + r0 * c, meanf, r1 - r0, c);
            for (int j = 0; j < c; j++) {
                ld[j] += lf[j];
                ld2[j] += lf2[j];
            }
        }
        #pragma omp critical
        for (int j = 0; j < c; j++) {
            sd[j] += ld[j];
            sq[j] += ld2[j];
        }
    }
    for (int j = 0; j < c; j++) {
        double dm = sd[j] / (double)m;
        mean[j] = (float)(meanf[j] + dm);
        var[j] = (float)(sq[j] / (double)m - dm * dm);
    }
}

/* scale/shift (c floats each) with y = x * scale + shift. */
static void bn_scale_shift(float *scale, float *shift, const float *mean, const float *invstd,
                           const float *gamma, const float *beta, int c)
{
    for (int j = 0; j < c; j++) {
        scale[j] = gamma[j] * invstd[j];
        shift[j] = beta[j] - mean[j] * scale[j];
    }
}

KERNEL_CLONES
static void rows_affine(float *y, const float *x, const float *restrict scale,
                        const float *restrict shift, const float *residual, int64_t rows, int c,
                        int relu)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        if (residual) {
            const float *rr = residual + r * c;
            for (int j = 0; j < c; j++) {
                float v = xr[j] * scale[j] + shift[j] + rr[j];
                yr[j] = v > 0.0f ? v : 0.0f;
            }
        } else if (relu) {
            for (int j = 0; j < c; j++) {
                float v = xr[j] * scale[j] + shift[j];
                yr[j] = v > 0.0f ? v : 0.0f;
            }
        } else {
            for (int j = 0; j < c; j++)
                yr[j] = xr[j] * scale[j] + shift[j];
        }
    }
}

static void bn_affine(float *y, const float *x, const float *mean, const float *invstd,
                      const float *gamma, const float *beta, const float *residual, int64_t m,
                      int c, int relu)
{
    assert(c <= KERNEL_MAX_CHANNELS);
    float scale[KERNEL_MAX_CHANNELS], shift[KERNEL_MAX_CHANNELS];
    bn_scale_shift(scale, shift, mean, invstd, gamma, beta, c);
    const int64_t nchunks = (m + BN_CHUNK - 1) / BN_CHUNK;
    #pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < nchunks; ch++) {
        int64_t r0 = ch * BN_CHUNK, r1 = r0 + BN_CHUNK < m ? r0 + BN_CHUNK : m;
        rows_affine(y + r0 * c, x + r0 * c, scale, shift, residual ? residual + r0 * c : NULL,
                    r1 - r0, c, relu);
    }
}

void batchnorm_apply(float *y, const float *x, const float *mean, const float *invstd,
                     const float *gamma, const float *beta, int64_t m, int c, int relu)
{
    bn_affine(y, x, mean, invstd, gamma, beta, NULL, m, c, relu);
}

void batchnorm_apply_add_relu(float *out, const float *x, const float *mean, const float *invstd,
                              const float *gamma, const float *beta, const float *residual,
                              int64_t m, int c)
{
    bn_affine(out, x, mean, invstd, gamma, beta, residual, m, c, 1);
}

/* f1 += sum g, f2 += sum g * (x - mean), g = dy masked by relu_out > 0 when given. */
KERNEL_CLONES
static void rows_bn_sums(float *restrict f1, float *restrict f2, const float *restrict dy,
                         const float *restrict relu_out, const float *restrict x,
                         const float *restrict mean, int64_t rows, int c)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * c, *xr = x + r * c;
        if (relu_out) {
            const float *yr = relu_out + r * c;
            for (int j = 0; j < c; j++) {
                float g = yr[j] > 0.0f ? dyr[j] : 0.0f;
                f1[j] += g;
                f2[j] += g * (xr[j] - mean[j]);
            }
        } else {
            for (int j = 0; j < c; j++) {
                f1[j] += dyr[j];
                f2[j] += dyr[j] * (xr[j] - mean[j]);
            }
        }
    }
}

/* dx = k1 * (g - k2 - (x - mean) * k3); dx may alias dy. */
KERNEL_CLONES
static void rows_bn_dx(float *dx, const float *dy, const float *restrict relu_out,
                       const float *restrict x, const float *restrict mean,
                       const float *restrict k1, const float *restrict k2,
                       const float *restrict k3, int64_t rows, int c)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * c, *xr = x + r * c;
        float *dxr = dx + r * c;
        if (relu_out) {
            const float *yr = relu_out + r * c;
            for (int j = 0; j < c; j++) {
                float g = yr[j] > 0.0f ? dyr[j] : 0.0f;
                dxr[j] = k1[j] * (g - k2[j] - (xr[j] - mean[j]) * k3[j]);
            }
        } else {
            for (int j = 0; j < c; j++)
                dxr[j] = k1[j] * (dyr[j] - k2[j] - (xr[j] - mean[j]) * k3[j]);
        }
    }
}

void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                        const float *relu_out, const float *x, const float *mean,
                        const float *invstd, const float *gamma, int64_t m, int c,
                        int batch_stats)
{
    /* s1 = sum g, s2 = sum g * xhat; float partials per BN_CHUNK rows, in double */
    assert(c <= KERNEL_MAX_CHANNELS);
    double s1[KERNEL_MAX_CHANNELS], s2[KERNEL_MAX_CHANNELS];
    memset(s1, 0, (size_t)c * sizeof(double));
    memset(s2, 0, (size_t)c * sizeof(double));
    const int64_t nchunks = (m + BN_CHUNK - 1) / BN_CHUNK;
    #pragma omp parallel
    {
        double l1[KERNEL_MAX_CHANNELS], l2[KERNEL_MAX_CHANNELS];
        float f1[KERNEL_MAX_CHANNELS], f2[KERNEL_MAX_CHANNELS];
        memset(l1, 0, (size_t)c * sizeof(double));
        memset(l2, 0, (size_t)c * sizeof(double));
        #pragma omp for schedule(static)
        for (int64_t ch = 0; ch < nchunks; ch++) {
            int64_t r0 = ch * BN_CHUNK, r1 = r0 + BN_CHUNK < m ? r0 + BN_CHUNK : m;
            memset(f1, 0, (size_t)c * sizeof(float));
            memset(f2, 0, (size_t)c * sizeof(float));
            rows_bn_sums(f1, f2, dy + r0 * c, relu_out ? relu_out + r0 * c : NULL, x + r0 * c,
                         mean, r1 - r0, c);
            for (int j = 0; j < c; j++) {
                l1[j] += f1[j];
                l2[j] += f2[j];
            }
        }
        #pragma omp critical
        for (int j = 0; j < c; j++) {
            s1[j] += l1[j];
            s2[j] += l2[j] * invstd[j];
        }
    }
    if (dgamma)
        for (int j = 0; j < c; j++)
            dgamma[j] += (float)s2[j];
    if (dbeta)
        for (int j = 0; j < c; j++)
            dbeta[j] += (float)s1[j];
    if (!dx)
        return;
    float k1[KERNEL_MAX_CHANNELS], k2[KERNEL_MAX_CHANNELS], k3[KERNEL_MAX_CHANNELS];
    for (int j = 0; j < c; j++) {
        /* train mode: dx = gamma*invstd * (g - s1/m - xhat * s2/m) */
        k1[j] = gamma[j] * invstd[j];
        k2[j] = batch_stats ? (float)(s1[j] / (double)m) : 0.0f;
        k3[j] = batch_stats ? (float)(s2[j] / (double)m) * invstd[j] : 0.0f;
    }
    #pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < nchunks; ch++) {
        int64_t r0 = ch * BN_CHUNK, r1 = r0 + BN_CHUNK < m ? r0 + BN_CHUNK : m;
        rows_bn_dx(dx + r0 * c, dy + r0 * c, relu_out ? relu_out + r0 * c : NULL, x + r0 * c,
                   mean, k1, k2, k3, r1 - r0, c);
    }
}

KERNEL_CLONES
static void elems_relu(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

KERNEL_CLONES
static void elems_relu_bwd(float *dx, const float *dy, const float *restrict y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

#define ELEM_CHUNK 16384

void relu_forward(float *y, const float *x, int64_t n)
{
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += ELEM_CHUNK)
        elems_relu(y + i, x + i, n - i < ELEM_CHUNK ? n - i : ELEM_CHUNK);
}

void relu_backward(float *dx, const float *dy, const float *y, int64_t n)
{
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += ELEM_CHUNK)
        elems_relu_bwd(dx + i, dy + i, y + i, n - i < ELEM_CHUNK ? n - i : ELEM_CHUNK);
}

void relu_mask(float *d, const float *y, int64_t n)
{
    relu_backward(d, d, y, n);
}

void maxpool_forward(float *y, int32_t *argmax, const float *x, int n, int h, int w, int c,
                     int k, int s, int p, int oh, int ow)
{
    #pragma omp parallel for collapse(2) schedule(static)
    for (int img = 0; img < n; img++) {
        for (int oy = 0; oy < oh; oy++) {
            const float *xi = x + (size_t)img * h * w * c;
            for (int ox = 0; ox < ow; ox++) {
                size_t o = (((size_t)img * oh + oy) * ow + ox) * c;
                for (int ch = 0; ch < c; ch++) {
                    float best = -INFINITY;
                    int32_t bi = -1;
                    for (int i = 0; i < k; i++) {
                        int iy = oy * s - p + i;
                        if (iy < 0 || iy >= h) continue;
                        for (int j = 0; j < k; j++) {
                            int ix = ox * s - p + j;
                            if (ix < 0 || ix >= w) continue;
                            int32_t idx = (int32_t)(((size_t)iy * w + ix) * c + ch);
                            float v = xi[idx];
                            /* first maximum wins, as in PyTorch; NaN propagates */
                            if (v > best || isnan(v) || bi < 0) {
                                best = v;
                                bi = idx;
                                if (isnan(v)) goto done;
                            }
                        }
                    }
                done:
                    y[o + ch] = best;
                    argmax[o + ch] = bi;
                }
            }
        }
    }
}

void maxpool_backward(float *dx, const float *dy, const int32_t *argmax, int n, int h, int w,
                      int c, int oh, int ow)
{
    #pragma omp parallel for schedule(static)
    for (int img = 0; img < n; img++) {
        float *dxi = dx + (size_t)img * h * w * c;
        memset(dxi, 0, (size_t)h * w * c * sizeof(float));
        const float *dyi = dy + (size_t)img * oh * ow * c;
        const int32_t *ai = argmax + (size_t)img * oh * ow * c;
        for (size_t o = 0; o < (size_t)oh * ow * c; o++)
            dxi[ai[o]] += dyi[o];
    }
}

void avgpool_forward(float *y, const float *x, int n, int hw, int c)
{
    #pragma omp parallel for schedule(static)
    for (int img = 0; img < n; img++) {
        float *yi = y + (size_t)img * c;
        const float *xi = x + (size_t)img * hw * c;
        for (int j = 0; j < c; j++) yi[j] = 0.0f;
        for (int p = 0; p < hw; p++)
            for (int j = 0; j < c; j++)
                yi[j] += xi[(size_t)p * c + j];
        for (int j = 0; j < c; j++) yi[j] /= (float)hw;
    }
}

void avgpool_backward(float *dx, const float *dy, int n, int hw, int c)
{
    #pragma omp parallel for schedule(static)
    for (int img = 0; img < n; img++) {
        const float *dyi = dy + (size_t)img * c;
        float *dxi = dx + (size_t)img * hw * c;
        for (int p = 0; p < hw; p++)
            for (int j = 0; j < c; j++)
                dxi[(size_t)p * c + j] = dyi[j] / (float)hw;
    }
}

void dense_forward(float *y, const float *x, const float *w, const float *b, int n, int in,
                   int out)
{
    float beta = 0.0f;
    if (b) {
        add_bias_rows(y, b, n, out);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, out, in, 1.0f, x, in, w, out,
                beta, y, out);
}

void dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                    const float *w, int n, int in, int out)
{
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, in, out, n, 1.0f, x, in, dy, out,
                    1.0f, dw, out);
    if (db)
        sum_rows_add(db, dy, n, out);
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, in, out, 1.0f, dy, out, w, out,
                    0.0f, dx, in);
}

void dropout_forward(float *y, float *mask, const float *x, int64_t n, float p, Rng *rng)
{
    if (p <= 0.0f) {
        for (int64_t i = 0; i < n; i++) {
            mask[i] = 1.0f;
            y[i] = x[i];
        }
        return;
    }
    const float keep_scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++) {
        mask[i] = rng_uniform(rng) < p ? 0.0f : keep_scale;
        y[i] = x[i] * mask[i];
    }
}

double softmax_xent(float *dlogits, float *probs, const float *logits, const int *labels,
                    const float *class_weight, int n, int c, float smoothing)
{
    double wsum = 0.0, nll = 0.0, smooth = 0.0;
    double cw_total = 0.0;
    for (int j = 0; j < c; j++)
        cw_total += class_weight ? class_weight[j] : 1.0;
    for (int i = 0; i < n; i++)
        wsum += class_weight ? class_weight[labels[i]] : 1.0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * c;
        double mx = z[0];
        for (int j = 1; j < c; j++) if (z[j] > mx) mx = z[j];
        double se = 0.0;
        for (int j = 0; j < c; j++) se += exp((double)z[j] - mx);
        double lse = mx + log(se);
        int y = labels[i];
        double wy = class_weight ? class_weight[y] : 1.0;
        nll += wy * (lse - z[y]);
        for (int j = 0; j < c; j++)
            smooth += (class_weight ? class_weight[j] : 1.0) * (lse - z[j]);
        for (int j = 0; j < c; j++) {
            double pj = exp((double)z[j] - lse);
            if (probs) probs[(size_t)i * c + j] = (float)pj;
            if (dlogits) {
                double wj = class_weight ? class_weight[j] : 1.0;
                double g = (1.0 - smoothing) * wy * (pj - (j == y ? 1.0 : 0.0));
                g += smoothing / c * (pj * cw_total - wj);
                dlogits[(size_t)i * c + j] = (float)(g / wsum);
            }
        }
    }
    return (1.0 - smoothing) * nll / wsum + smoothing / c * smooth / wsum;
}

void conv2d_forward_naive(float *y, const float *x, const float *w, const float *b,
                          const ConvShape *s)
{
    for (int img = 0; img < s->n; img++)
        for (int oy = 0; oy < s->oh; oy++)
            for (int ox = 0; ox < s->ow; ox++)
                for (int co = 0; co < s->cout; co++) {
                    double acc = b ? b[co] : 0.0;
                    for (int i = 0; i < s->k; i++)
                        for (int j = 0; j < s->k; j++) {
                            int iy = oy * s->stride - s->pad + i, ix = ox * s->stride - s->pad + j;
                            if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                            for (int ci = 0; ci < s->cin; ci++)
                                acc += (double)x[(((size_t)img * s->h + iy) * s->w + ix) * s->cin + ci] *
                                       w[(((size_t)i * s->k + j) * s->cin + ci) * s->cout + co];
                        }
                    y[(((size_t)img * s->oh + oy) * s->ow + ox) * s->cout + co] = (float)acc;
                }
}

void conv2d_backward_naive(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const ConvShape *s)
{
    if (dx) memset(dx, 0, (size_t)s->n * s->h * s->w * s->cin * sizeof(float));
    for (int img = 0; img < s->n; img++)
        for (int oy = 0; oy < s->oh; oy++)
            for (int ox = 0; ox < s->ow; ox++)
                for (int co = 0; co < s->cout; co++) {
                    float g = dy[(((size_t)img * s->oh + oy) * s->ow + ox) * s->cout + co];
                    if (db) db[co] += g;
                    for (int i = 0; i < s->k; i++)
                        for (int j = 0; j < s->k; j++) {
                            int iy = oy * s->stride - s->pad + i, ix = ox * s->stride - s->pad + j;
                            if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                            for (int ci = 0; ci < s->cin; ci++) {
                                size_t xi = (((size_t)img * s->h + iy) * s->w + ix) * s->cin + ci;
                                size_t wi = (((size_t)i * s->k + j) * s->cin + ci) * s->cout + co;
                                if (dw) dw[wi] += g * x[xi];
                                if (dx) dx[xi] += g * w[wi];
                            }
                        }
                }
}
