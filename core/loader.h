/*
 * loader.h: batches of model input from a dataset split, prepared by decode
 * threads while the model computes.
 *
 * Worker threads build whole batches into a ring of queue_depth buffers; the
 * consumer (the training thread) takes them in order. Each image goes through
 * image_load and preprocess_resize once; the resized uint8 "base" images are kept
 * in memory within cache_bytes, so later epochs skip decoding. The order of an
 * epoch is a permutation drawn from (seed, epoch) when shuffling, and each
 * image's augmentation draws from an Rng seeded by (seed, epoch, position), so
 * batches are reproducible whatever the thread timing or cache state.
 *
 * Threading: one consumer thread calls loader_* (except loader_create/free,
 * which must not race with it); workers are internal.
 */
#ifndef RESNETD_LOADER_H
#define RESNETD_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "error.h"
#include "preprocess.h"

typedef struct {
    int batch;              /* images per batch (the last one may be smaller) */
    int shuffle;            /* new order every epoch (training) */
    int augment;            /* apply the Preprocess augmentation (training) */
    uint64_t seed;
    size_t cache_bytes;     /* budget for cached base images; 0 disables the cache */
    int threads;            /* worker threads; <= 0: one per core */
    int queue_depth;        /* batches prepared ahead; <= 0: 2 */
    uint64_t max_pixels;    /* passed to image_load; 0 = no limit */
    int stats_batches;      /* input statistics over the first N batches of epoch 0 */
} LoaderOptions;

typedef struct {
    const float *x;         /* n x size x size x 3, NHWC */
    const int *labels;      /* n */
    const int *items;       /* n indices into the dataset's items */
    int n;
    int index;              /* batch number within the epoch */
} Batch;

typedef struct {
    int64_t images;          /* images prepared */
    int64_t decoded;         /* of which decoded from file (cache misses) */
    size_t cached_bytes;     /* bytes held by the cache */
    int cached_images;
    double wait_seconds;     /* consumer time spent waiting for batches */
} LoaderStats;

typedef struct Loader Loader;

/* Defaults: batch 32, no shuffle, no augmentation, seed 0, cache 1 GiB,
 * threads 0, queue_depth 2, max_pixels 50,000,000, stats_batches 4. */
LoaderOptions loader_default_options(void);

/* A loader over the items of ds in split (borrowed: ds must outlive the loader).
 * Fails when the split is empty or the options are invalid. */
int loader_create(Loader **out, const Dataset *ds, int split, const Preprocess *p,
                  const LoaderOptions *opt, Error *err);

/* Starts epoch `epoch` (0-based): fixes its order and sets the workers going.
 * Any batches of the previous epoch not yet taken are discarded. */
int loader_start_epoch(Loader *l, int epoch, Error *err);

/* Like loader_start_epoch, but the epoch's first first_batch batches are
 * skipped (not decoded): resuming an epoch that stopped part-way. */
int loader_start_epoch_at(Loader *l, int epoch, int first_batch, Error *err);

/* Waits for the next batch of the current epoch. Returns 1 with *b filled (valid
 * until the next call), 0 at the end of the epoch, -1 when an image could not be
 * prepared (err names the file). */
int loader_next(Loader *l, Batch *b, Error *err);

/* The item order of epoch `epoch` (loader_size entries into order): what
 * loader_start_epoch would hand out, for callers that replay an epoch from their
 * own cache. */
void loader_epoch_order(const Loader *l, int epoch, int *order);

int loader_batches_per_epoch(const Loader *l);
int loader_size(const Loader *l);   /* images per epoch */
LoaderStats loader_stats(const Loader *l);

/* Per-channel statistics of the tensors handed out in the first stats_batches
 * batches of epoch 0 (what the model actually saw). */
const InputStats *loader_input_stats(const Loader *l);

/* Stops the workers and frees everything. Accepts NULL. */
void loader_free(Loader *l);

#endif
