/*
 * The one pseudo-random generator: splitmix64. Cheap and good enough for
 * balancing decisions, backoff jitter and ids; not for secrets.
 *
 * Ownership: whoever embeds a struct slb_rng owns it; not thread-safe (one
 * per loop).
 */
#ifndef SLB_RNG_H
#define SLB_RNG_H

#include <stdint.h>
#include <time.h>
#include <unistd.h>

struct slb_rng {
    uint64_t state;
};

static inline void slb_rng_seed(struct slb_rng *r, uint64_t seed)
{
    r->state = seed;
}

static inline uint64_t slb_rng_next(struct slb_rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) from the top 32 bits of a random, without a division (Lemire); n > 0. */
static inline uint64_t slb_rng_bounded(uint64_t random, uint64_t n)
{
    return ((random >> 32) * n) >> 32;
}

/* Uniform in [0, 1). */
static inline double slb_rng_unit(struct slb_rng *r)
{
    return (double)(slb_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static inline uint64_t slb_rng_seed_from_os(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)time(NULL) ^ ((uint64_t)ts.tv_nsec << 20) ^ ((uint64_t)getpid() << 40);
}

#endif
