/*
 * Micro-benchmark of the load-balancing policies: ns per slb_lb_pick() for
 * each policy at 10 and at 10,000 backends, all usable, no tried set, a fresh
 * random value and hash key per pick (as the router passes them). Also the
 * time of one update() (table build) at each size. Then the policies that
 * take slow_start, with a 30 s window: with no backend ramping (the common
 * case, which should cost what it costs without slow start) and with one
 * backend of the set halfway through its ramp. A benchmark, not a test: it
 * prints a table and always exits 0.
 *
 *   make BUILD=build-lb build-lb/lb_bench && build-lb/lb_bench [picks]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend.h"
#include "lb.h"

static const char *const policies[] = {"pick_first",           "round_robin",     "random",
                                       "weighted_round_robin", "weighted_random", "least_request",
                                       "source_ip_hash",       "ring_hash",       "maglev"};

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ns per pick of policy over n backends; ramping: how many of them are halfway through a 30 s ramp. */
static double bench_pick(const char *policy, const struct slb_lb_options *opts, uint32_t n, uint32_t ramping,
                         long picks, double *update_ms)
{
    struct slb_backend_set set;
    struct slb_lb lb;
    struct slb_rng rng;
    volatile uintptr_t sink = 0;
    double t0, t1;

    slb_backend_set_init(&set);
    for (uint32_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof(name), "10.%u.%u.%u:50051", i >> 16 & 255, i >> 8 & 255, i & 255);
        struct slb_backend *be = slb_backend_new(name, 1 + i % 3);
        be->state = SLB_BACKEND_READY;
        be->outstanding = i % 7;
        be->usable_since_ms = i < ramping ? 1000000 - 15000 : 0;
        slb_backend_set_add(&set, be);
        slb_backend_unref(be);
    }
    t0 = now_ns();
    if (slb_lb_init(&lb, policy, opts, &set) != 0) {
        fprintf(stderr, "init %s failed\n", policy);
        exit(1);
    }
    t1 = now_ns();
    if (update_ms != NULL)
        *update_ms = (t1 - t0) / 1e6;
    slb_rng_seed(&rng, 12345);
    t0 = now_ns();
    for (long i = 0; i < picks; i++) {
        struct slb_pick_ctx ctx = {.now_ms = 1000000, .has_hash = 1};
        ctx.random = slb_rng_next(&rng);
        ctx.hash = slb_rng_next(&rng);
        sink += (uintptr_t)slb_lb_pick(&lb, &ctx);
    }
    t1 = now_ns();
    slb_lb_dispose(&lb);
    slb_backend_set_dispose(&set);
    (void)sink;
    return (t1 - t0) / (double)picks;
}

int main(int argc, char **argv)
{
    static const uint32_t sizes[] = {10, 10000};
    static const char *const slow_policies[] = {"round_robin", "random", "weighted_round_robin", "weighted_random",
                                                "least_request"};
    long picks = argc > 1 ? atol(argv[1]) : 2000000;
    struct slb_lb_options opts;

    slb_lb_options_default(&opts);
    printf("%-22s %12s %12s %14s %14s\n", "policy", "ns/pick@10", "ns/pick@10k", "update_ms@10", "update_ms@10k");
    for (size_t p = 0; p < sizeof(policies) / sizeof(policies[0]); p++) {
        double pick_ns[2], update_ms[2];
        for (int s = 0; s < 2; s++)
            pick_ns[s] = bench_pick(policies[p], &opts, sizes[s], 0, picks, &update_ms[s]);
        printf("%-22s %12.1f %12.1f %14.3f %14.3f\n", policies[p], pick_ns[0], pick_ns[1], update_ms[0], update_ms[1]);
    }
    printf("(%ld picks per cell; weights 1..3; includes 2 splitmix64 draws per pick, ~2 ns)\n", picks);

    opts.slow_start_ms = 30000;
    printf("\nslow_start window 30 s: ns/pick with no backend ramping, and with one halfway through its ramp\n");
    printf("%-22s %12s %12s %12s %12s\n", "policy", "idle@10", "idle@10k", "ramping@10", "ramping@10k");
    for (size_t p = 0; p < sizeof(slow_policies) / sizeof(slow_policies[0]); p++) {
        double ns[4];
        for (int s = 0; s < 2; s++) {
            ns[s] = bench_pick(slow_policies[p], &opts, sizes[s], 0, picks, NULL);
            ns[2 + s] = bench_pick(slow_policies[p], &opts, sizes[s], 1, picks, NULL);
        }
        printf("%-22s %12.1f %12.1f %12.1f %12.1f\n", slow_policies[p], ns[0], ns[1], ns[2], ns[3]);
    }
    return 0;
}
