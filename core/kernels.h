/*
 * kernels.h: the numerical kernels of the engine, forward and backward.
 *
 * Layout: NHWC, fp32, contiguous. "m" is the number of rows (n*h*w) of a 2-D view
 * whose columns are the channels. Conventions (STYLE.md): outputs first, then
 * inputs, then sizes. Backward functions ADD into weight gradients (+=) and say
 * whether they overwrite or add into the input gradient. Every kernel that takes
 * NULL for a gradient skips computing it.
 *
 * Threading: kernels parallelise internally (OpenMP and OpenBLAS) and must be
 * called from one thread at a time per model.
 */
#ifndef RESNETD_KERNELS_H
#define RESNETD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

/* Geometry of one convolution; oh/ow follow PyTorch: floor((h + 2p - k) / s) + 1. */
typedef struct {
    int n, h, w, cin;   /* input  x[n][h][w][cin] */
    int cout, k, stride, pad;
    int oh, ow;         /* output y[n][oh][ow][cout] */
} ConvShape;

/* Fills s; returns 0, or -1 when the output would be empty. */
int conv_shape_init(ConvShape *s, int n, int h, int w, int cin, int cout, int k, int stride,
                    int pad);

/* Floats of workspace conv2d_forward/backward need for s (0 for 1x1 stride 1). */
size_t conv_workspace_floats(const ConvShape *s);

/* y[n,oh,ow,cout] = sum x[n, oh*s-p+i, ow*s-p+j, ci] * w[i][j][ci][cout] + b[cout].
 * w is HWIO (k, k, cin, cout); b may be NULL. Overwrites y. ws: workspace of
 * conv_workspace_floats(s) floats (may be NULL when that is 0). */
void conv2d_forward(float *y, const float *x, const float *w, const float *b,
                    const ConvShape *s, float *ws);

/* y[n,oh,ow,cout] = act(conv(x, w) + b[cout] + residual[n,oh,ow,cout]), act = max(., 0)
 * when relu, else identity: a convolution with its BatchNorm folded into w and b
 * (inference mode) and the block's epilogue, in one sgemm and one pass over y.
 * b and residual may be NULL (without b, cout <= KERNEL_MAX_CHANNELS). Overwrites y,
 * which must alias neither x nor residual. ws as for conv2d_forward. */
void conv2d_forward_fused(float *y, const float *x, const float *w, const float *b,
                          const float *residual, int relu, const ConvShape *s, float *ws);

/* Given dy[n,oh,ow,cout]: dw[k,k,cin,cout] += im2col(x)^T dy (when dw); db += sum of
 * dy over rows (when db); dx = dy w^T scattered back (when dx): overwrites dx, or
 * adds into it when accumulate_dx is non-zero. */
void conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, const ConvShape *s, float *ws, int accumulate_dx);

/* The most channels a BatchNorm kernel takes (per-channel scratch lives on the
 * stack); ResNet50 has at most 2048. */
#define KERNEL_MAX_CHANNELS 4096

/* Batch statistics over m rows of c channels: mean and biased variance. */
void batchnorm_stats(float *mean, float *var, const float *x, int64_t m, int c);

/* y = (x - mean) * invstd * gamma + beta, then max(., 0) when relu. y may alias x. */
void batchnorm_apply(float *y, const float *x, const float *mean, const float *invstd,
                     const float *gamma, const float *beta, int64_t m, int c, int relu);

/* out = max(0, (x - mean) * invstd * gamma + beta + residual). */
void batchnorm_apply_add_relu(float *out, const float *x, const float *mean, const float *invstd,
                              const float *gamma, const float *beta, const float *residual,
                              int64_t m, int c);

/* Backward of y = relu?((x-mean)*invstd*gamma+beta). dy is the gradient of the
 * output; when relu_out is not NULL it is the forward output and dy is masked by
 * relu_out > 0. batch_stats: mean/invstd were the batch's own (train mode), so the
 * gradient flows through them; otherwise they were constants (inference mode).
 * dgamma, dbeta: added into (when not NULL). dx: overwritten (when not NULL); it
 * may alias dy. */
void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                        const float *relu_out, const float *x, const float *mean,
                        const float *invstd, const float *gamma, int64_t m, int c,
                        int batch_stats);

/* y = max(x, 0) (y may alias x); dx = dy * (y > 0) (dx may alias dy). */
void relu_forward(float *y, const float *x, int64_t n);
void relu_backward(float *dx, const float *dy, const float *y, int64_t n);

/* d = d * (y > 0): in-place ReLU mask of a gradient by the ReLU's output. */
void relu_mask(float *d, const float *y, int64_t n);

/* Max pooling k x k, stride s, padding p (padding never wins). argmax records,
 * per output element, the input element's index within its image (h*w*c). */
void maxpool_forward(float *y, int32_t *argmax, const float *x, int n, int h, int w, int c,
                     int k, int s, int p, int oh, int ow);
/* dx (overwritten) = scatter of dy by argmax. */
void maxpool_backward(float *dx, const float *dy, const int32_t *argmax, int n, int h, int w,
                      int c, int oh, int ow);

/* y[n][c] = mean over hw of x[n][hw][c]; dx[n][hw][c] = dy[n][c] / hw (overwrites). */
void avgpool_forward(float *y, const float *x, int n, int hw, int c);
void avgpool_backward(float *dx, const float *dy, int n, int hw, int c);

/* y[n][out] = x[n][in] w[in][out] + b[out] (b may be NULL). Overwrites y. */
void dense_forward(float *y, const float *x, const float *w, const float *b, int n, int in,
                   int out);
/* dw += x^T dy, db += sum dy, dx = dy w^T (overwritten); each when not NULL. */
void dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                    const float *w, int n, int in, int out);

/* Inverted dropout: mask[i] = 0 with probability p, else 1/(1-p), drawn from rng
 * (advanced); y = x * mask. p = 0 leaves y = x and mask = 1 (rng untouched).
 * y may alias x. */
void dropout_forward(float *y, float *mask, const float *x, int64_t n, float p, Rng *rng);

/* Softmax cross-entropy on logits[n][c] with integer labels, PyTorch semantics:
 * class weights (may be NULL) give a weighted mean (sum w[y_i] l_i / sum w[y_i]);
 * label smoothing eps mixes in the (weighted) mean over classes as
 * torch.nn.functional.cross_entropy does. Returns the loss. probs (n*c, may be
 * NULL) receives the softmax; dlogits (may be NULL) is overwritten with
 * d loss / d logits. */
double softmax_xent(float *dlogits, float *probs, const float *logits, const int *labels,
                    const float *class_weight, int n, int c, float smoothing);

/* Naive reference versions for tests: direct loops, no BLAS, no workspace. */
void conv2d_forward_naive(float *y, const float *x, const float *w, const float *b,
                          const ConvShape *s);
void conv2d_backward_naive(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const ConvShape *s);

#endif
