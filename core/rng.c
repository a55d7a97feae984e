/* rng.c: splitmix64 (see rng.h). */
#include "rng.h"

#include <math.h>

void rng_seed(Rng *r, uint64_t seed)
{
    r->state = seed;
}

uint64_t rng_next(Rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

float rng_uniform(Rng *r)
{
    return (float)((rng_next(r) >> 40) * (1.0 / 16777216.0));
}

float rng_normal(Rng *r)
{
    double u1 = ((rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
    double u2 = (rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

uint64_t rng_below(Rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = rng_next(r); while (x >= limit);
    return x % n;
}

/* splitmix64's finaliser: a bijection of 64-bit values that mixes every bit. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t rng_derive(uint64_t seed, RngPurpose purpose, uint64_t a, uint64_t b)
{
    uint64_t h = mix64(seed + 0x9E3779B97F4A7C15ULL);
    h = mix64(h ^ ((uint64_t)purpose * 0xD1B54A32D192ED03ULL));
    h = mix64(h ^ (a + 0x8CB92BA72F3D8DD7ULL));
    return mix64(h ^ (b + 0xC2B2AE3D27D4EB4FULL));
}

void rng_stream(Rng *r, uint64_t seed, RngPurpose purpose, uint64_t a, uint64_t b)
{
    rng_seed(r, rng_derive(seed, purpose, a, b));
}
