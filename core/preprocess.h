/*
 * preprocess.h: the one path from a decoded image to the model's input.
 *
 * preprocess_image() is the single function train and val both go through; they
 * differ only by augmentation, which runs only when an Rng is passed (training).
 * It is two stages so the loader can cache the first:
 *   stage 1 (preprocess_resize): RGB8 of any size -> RGB8 "base" image:
 *     squash: bilinear to size x size (Keras image_dataset_from_directory default)
 *     crop:   shorter side to round(size * 256 / 224), aspect kept (torchvision's
 *             eval Resize(256) for 224)
 *   stage 2 (preprocess_finish): base -> float NHWC size x size x 3:
 *     crop: centre crop; random resized crop (scale range, aspect 3/4..4/3) and
 *     horizontal flip when augmenting; then normalisation.
 * Bilinear resizing uses half-pixel centres without antialiasing, as
 * torch.nn.functional.interpolate(mode="bilinear", align_corners=False) and
 * tf.image.resize do.
 *
 * Normalisation modes (applied to 0..255 RGB input):
 *   caffe:  BGR order, subtract 103.939, 116.779, 123.68 (B, G, R), no scaling
 *   torch:  /255, subtract 0.485, 0.456, 0.406, divide by 0.229, 0.224, 0.225 (RGB)
 *   tf:     /127.5 - 1
 *   custom: x * rescale, then (x - mean[c]) / std[c], channel order rgb or bgr
 * (the mean/std of custom apply after rescale and in the output channel order).
 */
#ifndef RESNETD_PREPROCESS_H
#define RESNETD_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "rng.h"

typedef enum { NORM_CAFFE, NORM_TORCH, NORM_TF, NORM_CUSTOM } NormMode;
typedef enum { RESIZE_SQUASH, RESIZE_CROP } ResizePolicy;

typedef struct {
    NormMode mode;
    float rescale;       /* custom: multiply 0..255 by this first */
    float mean[3];       /* custom: per output channel */
    float std[3];        /* custom: per output channel, > 0 */
    int bgr;             /* custom: output channel order BGR */
} Normalization;

typedef struct {
    int hflip;                 /* flip horizontally with probability 1/2 */
    float crop_min, crop_max;  /* random resized crop scale range; 0,0 = off */
} Augment;

typedef struct {
    int size;              /* model input: size x size, 32..PREPROCESS_MAX_SIZE */
    ResizePolicy resize;
    Normalization norm;
    Augment augment;       /* used only when an Rng is given */
} Preprocess;

/* Largest input size preprocess_validate accepts (keeps size*size*3 and the
 * base images far from int overflow). */
#define PREPROCESS_MAX_SIZE 4096
/* Largest base image (pixels) preprocess_check_source accepts: the crop policy keeps
 * the aspect ratio, so a 1 x 50,000,000 strip would otherwise need a base of
 * 256 x 12,800,000,000. 2^26 pixels is 192 MiB of RGB8. */
#define PREPROCESS_MAX_BASE_PIXELS (1LL << 26)

/* "caffe", "torch", "tf" -> n (custom needs its numbers: use the struct).
 * Besides n->mode it fills rescale, mean, std and bgr with the numbers of that
 * mode (caffe: 1, (103.939, 116.779, 123.68) in BGR order, std 1, bgr; torch:
 * 1/255, ImageNet mean/std, rgb; tf: 1/127.5, mean 1, std 1), so switching
 * mode to NORM_CUSTOM afterwards gives the same tensors (to float rounding). */
int preprocess_norm_from_name(Normalization *n, const char *name, Error *err);
const char *preprocess_norm_name(NormMode m);
int preprocess_validate(const Preprocess *p, Error *err);

/* Chooses the normalisation for a job. requested is "auto", "caffe", "torch" or
 * "tf" ("custom" comes with its numbers: pass NULL and set *n beforehand);
 * declared is what the weights file declares (its "preprocess" metadata; NULL or
 * "" for weights that declare nothing, e.g. random ones).
 *   auto: takes the declared mode (an error when nothing is declared);
 *   a mode different from the declared one: an error, unless override is set, in
 *   which case it is allowed and *overridden is set so the job can record it.
 * On success *n holds the mode's numbers. */
int preprocess_resolve_norm(Normalization *n, const char *requested, const char *declared,
                            int override, int *overridden, Error *err);

/* Base image size stage 1 produces for a w x h source (w, h >= 1):
 *   squash: size x size;
 *   crop:   the shorter side becomes s = round(size * 256 / 224) and the longer
 *           int(s * longer / shorter) (truncated, as torchvision's
 *           _compute_resized_output_size computes Resize(s)); a square stays square.
 * The longer side saturates at INT_MAX / 4 for absurd aspect ratios: call
 * preprocess_check_source first for sources from outside. */
void preprocess_base_size(const Preprocess *p, int w, int h, int *bw, int *bh);

/* Fails (naming the sizes) when a w x h source cannot be preprocessed: w or h < 1,
 * or a base image over PREPROCESS_MAX_BASE_PIXELS (an extreme aspect ratio under
 * the crop policy). The loader calls this before allocating the base image. */
int preprocess_check_source(const Preprocess *p, int w, int h, Error *err);

/* Stage 1: bilinear resize of src (w x h RGB8) to dst (bw x bh RGB8).
 * Matches torch.nn.functional.interpolate(x.float(), size=(bh, bw),
 * mode="bilinear", align_corners=False) on an NCHW float tensor (torch 1.13's
 * CPU kernel: scale in / out in float, source coordinate (i + 0.5) * scale - 0.5
 * floored at 0 and its two weights in double then rounded to float, the edge
 * pixel repeated, the blend in float),
 * then rounded to nearest with ties to even (torch.round) and clamped to 0..255:
 * torchvision 0.14's resize of a uint8 tensor with antialias=False. Agrees with
 * torch to within one level (float rounding order), exactly for >= 99% of pixels.
 * Same size in and out is an exact copy. dst and src must not overlap. */
void preprocess_resize(uint8_t *dst, int bw, int bh, const uint8_t *src, int w, int h);

/* The region of the base image stage 2 uses, and whether it is mirrored. */
typedef struct {
    int x, y, w, h;        /* inside the base: 0 <= x, x + w <= bw, likewise y */
    int flip;              /* mirror left-right (after the crop) */
} PreprocessCrop;

/* The crop stage 2 applies to a bw x bh base. Without rng, or with rng but
 * crop_min = crop_max = 0: the size x size centre crop at torchvision
 * CenterCrop's offsets (int(round((bw - size) / 2.0)), Python's round: ties to
 * even), which needs bw, bh >= size (true of every base preprocess_base_size
 * gives). With rng and a crop range: torchvision RandomResizedCrop.get_params
 * (0.14) with scale (crop_min, crop_max) of the base area and aspect ratio
 * log-uniform in (3/4, 4/3): up to 10 draws of (scale, ratio), w and h rounded
 * half to even, the first that fits is placed uniformly (y, then x); else the
 * fallback: the whole base, trimmed to the nearest ratio bound, centred. Draws
 * use rng_uniform for the scale and log ratio (in double) and rng_below for
 * the position; then, when hflip is set, rng_uniform() < 0.5 flips. rng is not
 * touched when augmentation is off, so it is NULL-equivalent then. */
void preprocess_crop_draw(PreprocessCrop *c, const Preprocess *p, int bw, int bh, Rng *rng);

/* Stage 2 for a given crop: the crop of base (bw x bh RGB8), bilinearly resized
 * to size x size when it is not that size already (as preprocess_resize,
 * rounded to levels), mirrored when c->flip, normalised into
 * out[size][size][3] (NHWC float, overwritten). */
void preprocess_finish_crop(float *out, const uint8_t *base, int bw, int bh, const Preprocess *p,
                            const PreprocessCrop *c);

/* Stage 2: base image (bw x bh RGB8) -> out[size][size][3] float. rng NULL: no
 * augmentation (val, or train with augmentation off): then the output is the
 * same bytes whatever p->augment holds. Equivalent to preprocess_crop_draw and
 * preprocess_finish_crop. Thread-safe (rng is per call). */
void preprocess_finish(float *out, const uint8_t *base, int bw, int bh, const Preprocess *p,
                       Rng *rng);

/* Both stages; scratch must hold the base image (bw*bh*3 bytes, see
 * preprocess_base_size) . When the base is the source's own size, scratch is not
 * used. */
void preprocess_image(float *out, const uint8_t *rgb, int w, int h, const Preprocess *p,
                      Rng *rng, uint8_t *scratch);

/* Running per-channel statistics of tensors actually fed to the model. */
typedef struct {
    int64_t count;         /* values per channel seen */
    double sum[3], sumsq[3];
    float min[3], max[3];
} InputStats;

/* Empty statistics: count 0, sums 0, min +inf, max -inf. */
void input_stats_reset(InputStats *s);
/* Adds n pixels of x (n x 3 floats, channel-last). Sums are in double. */
void input_stats_add(InputStats *s, const float *x, int64_t n);
/* Per-channel mean and population standard deviation (0 and 0 when empty). */
void input_stats_get(const InputStats *s, double mean[3], double std[3]);

#endif
