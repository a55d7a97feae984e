/*
 * rng.h: a small seeded random generator (splitmix64) for initialisation,
 * dropout, shuffling and augmentation. Reproducible across platforms; the state
 * is a plain value the caller owns (and can checkpoint).
 */
#ifndef RESNETD_RNG_H
#define RESNETD_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_next(Rng *r);
/* Uniform in [0, 1) with 24 random bits. */
float rng_uniform(Rng *r);
/* Standard normal (Box-Muller, one value per call). */
float rng_normal(Rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t rng_below(Rng *r, uint64_t n);

/* What a stream is for. A job's seed gives each purpose (and each index within
 * it: a layer, an epoch, a class) its own stream, so that no two share draws and
 * adding draws to one (a larger backbone, another epoch) never shifts another. */
typedef enum {
    RNG_INIT = 1,   /* backbone initialisation; index: the layer */
    RNG_HEAD,       /* the new head's initialisation; index: 0 hidden, 1 output */
    RNG_SPLIT,      /* the train/val split; index: the class */
    RNG_SHUFFLE,    /* an epoch's order; index: the epoch */
    RNG_AUGMENT,    /* an image's augmentation; index: epoch and position */
    RNG_DROPOUT,    /* dropout masks */
    RNG_PROBE       /* preflight sampling and checks */
} RngPurpose;

/* The seed of stream (purpose, a, b) of seed: a hash of all four, so streams of
 * different purposes, indices or seeds are unrelated. */
uint64_t rng_derive(uint64_t seed, RngPurpose purpose, uint64_t a, uint64_t b);

/* Seeds r with rng_derive(seed, purpose, a, b). */
void rng_stream(Rng *r, uint64_t seed, RngPurpose purpose, uint64_t a, uint64_t b);

#endif
