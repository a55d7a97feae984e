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

#endif
