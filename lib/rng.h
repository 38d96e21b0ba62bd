/*
 * The one pseudo-random generator of sidelb: policy picks, retry and
 * reconnect jitter, registration backoff. splitmix64 (Steele, Lea and Flood,
 * "Fast splittable pseudorandom number generators", 2014; Vigna's reference
 * code): the state is a counter stepped by the golden ratio and each output
 * is a mix of it, so every seed, 0 included, gives a full-period stream.
 * Fast and well spread; not cryptographic.
 *
 * ring_hash derives a backend's ring points from slb_rng_next() seeded with
 * the hash of its name, so the sequence for a given seed is part of the ring
 * format: every sidecar must build the same ring. Never change it.
 */
#ifndef SLB_RNG_H
#define SLB_RNG_H

#include <stdint.h>
#include <sys/random.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Owner: whoever embeds it; not thread-safe. */
struct slb_rng {
    uint64_t state;
};

/* The state is the seed itself (ring points depend on that); seed 0 is fine. */
static inline void slb_rng_seed(struct slb_rng *r, uint64_t seed)
{
    r->state = seed;
}

/* One splitmix64 step. */
static inline uint64_t slb_rng_next(struct slb_rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/*
 * Maps a 64-bit random value to [0, n), n > 0, by multiply-shift (Lemire,
 * "Fast random integer generation in an interval", 2019) without the
 * rejection step: no division, and a bias below n / 2^64.
 */
static inline uint64_t slb_rng_bounded(uint64_t random, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)random * n) >> 64);
}

/* Uniform in [0, 1): the top 53 bits of one step. */
static inline double slb_rng_unit(struct slb_rng *r)
{
    return (double)(slb_rng_next(r) >> 11) * 0x1.0p-53;
}

/* A seed that differs between processes and calls: getrandom(), else time ^ pid ^ a stack address. */
static inline uint64_t slb_rng_seed_from_os(void)
{
    uint64_t seed;
    struct timespec ts;

    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed))
        return seed;
    /* no entropy pool yet (early boot) or no syscall: still distinct, only not secret */
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return seed ^ (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)&seed;
}

#endif
