/*
 * Load-balancing policies: distribution over many picks, weights, the tried
 * set, one backend, none usable, unusable skipped, table refresh on set
 * changes, consistent-hash stability, least_request, slow start, panic mode.
 *
 * Statistical bounds. Picks use a fixed-seed struct slb_rng, so every run sees
 * the same numbers; the bounds are still set wide enough to hold for any
 * seed (>= 5 standard deviations unless stated):
 *  - uniform policies, 10 backends x 100,000 picks: chi-square with 9 degrees
 *    of freedom below 27.88 (the 99.9 % quantile);
 *  - 3:1 weights, 40,000 picks: the heavy backend's share in 75 % +- 2 points
 *    (binomial sigma 0.22 points), +- 5 points for ring_hash, whose arc
 *    shares vary by about 1/sqrt(points) (256 and 768 points here: 6 %);
 *  - ring_hash, 10 equal backends: each share within +-30 % of 1/10 (arc
 *    shares with 160 points each vary by ~8 % relative: ~4 sigma); maglev within +-5 %
 *    (its table is even to one slot, only sampling noise remains);
 *  - adding one backend to N=10 moves a fraction of keys in [0.5/(N+1), 1.5/(N+1)].
 */
#include <arpa/inet.h>
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "lb.h"

#define MAXB 64
#define NOW  1000000

static const char *const all_policies[] = {
    "pick_first",     "round_robin", "random", "weighted_round_robin", "weighted_random", "least_request",
    "source_ip_hash", "ring_hash",   "maglev",
};

static struct slb_backend_set set;
static struct slb_backend *bes[MAXB]; /* by id = port - 10000 */
static struct slb_lb_options opts;
static struct slb_lb lb;
static struct slb_rng rng;

static uint64_t rnd(void)
{
    return slb_rng_next(&rng);
}

static int id_of(const struct slb_backend *be)
{
    return ntohs(((const struct sockaddr_in *)&be->addr)->sin_port) - 10000;
}

static struct slb_backend *add_backend(int id, uint32_t weight)
{
    char name[32];
    snprintf(name, sizeof(name), "127.0.0.1:%d", 10000 + id);
    struct slb_backend *be = slb_backend_new(name, weight);
    ck_assert_ptr_nonnull(be);
    be->state = SLB_BACKEND_READY;
    ck_assert_int_eq(slb_backend_set_add(&set, be), 0);
    slb_backend_unref(be); /* the set holds it */
    bes[id] = be;
    return be;
}

/* n backends with weights w[i] (NULL: all 1) under policy. */
static void setup(const char *policy, int n, const uint32_t *w)
{
    slb_backend_set_init(&set);
    for (int i = 0; i < n; i++)
        add_backend(i, w ? w[i] : 1);
    ck_assert_int_eq(slb_lb_init(&lb, policy, &opts, &set), 0);
}

static void teardown(void)
{
    slb_lb_dispose(&lb);
    slb_backend_set_dispose(&set);
}

static struct slb_backend *pick_at(uint64_t now, const struct slb_tried *tried)
{
    struct slb_pick_ctx ctx = {.now_ms = now, .random = rnd(), .hash = rnd(), .has_hash = 1, .tried = tried};
    return slb_lb_pick(&lb, &ctx);
}

static struct slb_backend *pick(const struct slb_tried *tried)
{
    return pick_at(NOW, tried);
}

static void count_picks(int picks, unsigned *counts)
{
    for (int i = 0; i < picks; i++) {
        struct slb_backend *be = pick(NULL);
        ck_assert_ptr_nonnull(be);
        counts[id_of(be)]++;
    }
}

static double chi_square(const unsigned *counts, int n, int picks)
{
    double e = (double)picks / n, x = 0;
    for (int i = 0; i < n; i++)
        x += (counts[i] - e) * (counts[i] - e) / e;
    return x;
}

static void fresh_opts(void)
{
    slb_lb_options_default(&opts);
}

static void check_setup(void)
{
    fresh_opts();
    slb_rng_seed(&rng, 42);
    memset(bes, 0, sizeof(bes));
}

START_TEST(test_registry)
{
    for (size_t i = 0; i < sizeof(all_policies) / sizeof(all_policies[0]); i++) {
        const struct slb_lb_ops *ops = slb_lb_find(all_policies[i]);
        ck_assert_ptr_nonnull(ops);
        ck_assert_str_eq(ops->name, all_policies[i]);
        ck_assert_ptr_nonnull(strstr(slb_lb_names(), all_policies[i]));
    }
    ck_assert_ptr_null(slb_lb_find("nope"));
    ck_assert_ptr_null(slb_lb_find(NULL));
    ck_assert_int_eq(slb_lb_find("ring_hash")->uses_hash, 1);
    ck_assert_int_eq(slb_lb_find("round_robin")->uses_hash, 0);
    ck_assert_uint_eq(opts.choice_count, 2);
    ck_assert_uint_eq(opts.min_ring_size, 1024);
    ck_assert_uint_eq(opts.max_ring_size, 1048576);
    ck_assert_uint_eq(opts.maglev_table_size, 65537);
    slb_backend_set_init(&set);
    ck_assert_int_eq(slb_lb_init(&lb, "nope", &opts, &set), SLB_ECONFIG);
}
END_TEST

START_TEST(test_hash64)
{
    /* xxHash's own sanity vectors (xsum_sanity_check.c), seed 0, over its generated buffer */
    static const struct {
        size_t len;
        uint64_t h;
    } official[] = {
        {0, 0xEF46DB3751D8E999ULL},  {1, 0xE934A84ADB052768ULL},   {4, 0x9136A0DCA57457EEULL},
        {14, 0x8282DCC4994E35C8ULL}, {222, 0xB641AE8CB691C174ULL},
    };
    uint8_t buf[222];
    uint64_t gen = 2654435761U; /* PRIME32 */
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)(gen >> 56);
        gen *= 11400714785074694797ULL; /* PRIME64 */
    }
    for (size_t i = 0; i < SLB_ARRAY_SIZE(official); i++)
        ck_assert_uint_eq(slb_hash64(buf, official[i].len), official[i].h);

    /* Known values, computed with the hand-written XXH64 that lib/lb.c had
     * before libxxhash: ring points and maglev permutations derive from them. */
    char hundred[101];
    for (int i = 0; i < 100; i++)
        hundred[i] = (char)('a' + i % 26);
    hundred[100] = '\0';
    static const struct {
        const char *key;
        uint64_t h;
    } known[] = {
        {"", 0xEF46DB3751D8E999ULL},
        {"a", 0xD24EC4F1A98C6E5BULL},
        {"abc", 0x44BC2CF5AD770999ULL},
        {"127.0.0.1:50051", 0xA210BDD4D2A541F5ULL},
        {"10.0.0.1:8080-1", 0x1C8759002B13E7FEULL},
    };
    for (size_t i = 0; i < SLB_ARRAY_SIZE(known); i++)
        ck_assert_uint_eq(slb_hash64(known[i].key, strlen(known[i].key)), known[i].h);
    ck_assert_uint_eq(slb_hash64(hundred, 100), 0x79C9FA152BB53C71ULL); /* "abc...zabc...": all four lanes */
}
END_TEST

/* Every policy: the behaviours that do not depend on the algorithm. */
START_TEST(test_empty_and_one)
{
    const char *p = all_policies[_i];
    slb_backend_set_init(&set);
    ck_assert_int_eq(slb_lb_init(&lb, p, &opts, &set), 0);
    ck_assert_ptr_null(pick(NULL));
    add_backend(0, 1);
    for (int i = 0; i < 1000; i++)
        ck_assert_ptr_eq(pick(NULL), bes[0]);
    /* A retry with the only backend tried still gets it: a tried usable one beats none. */
    struct slb_tried t = {0};
    slb_tried_add(&t, bes[0]);
    ck_assert_ptr_eq(pick(&t), bes[0]);
    teardown();
}
END_TEST

START_TEST(test_none_usable)
{
    setup(all_policies[_i], 5, NULL);
    bes[0]->state = SLB_BACKEND_TRANSIENT_FAILURE;
    bes[1]->health = SLB_HEALTH_NOT_SERVING;
    bes[2]->ejected_until_ms = NOW + 1;
    bes[3]->draining = 1;
    bes[4]->state = SLB_BACKEND_SHUTDOWN;
    for (int i = 0; i < 1000; i++)
        ck_assert_ptr_null(pick(NULL));
    /* The ejection ends: only bes[2] is usable again. */
    for (int i = 0; i < 1000; i++)
        ck_assert_ptr_eq(pick_at(NOW + 1, NULL), bes[2]);
    teardown();
}
END_TEST

/* gRFC A17 in every policy: a backend whose health check has not answered
 * (PENDING) is never picked while one known SERVING is there; one without a
 * health service (UNIMPLEMENTED) is picked like a SERVING one. */
START_TEST(test_health_pending_and_unimplemented)
{
    int seen[3] = {0};

    setup(all_policies[_i], 3, NULL);
    bes[0]->health = SLB_HEALTH_PENDING;
    bes[1]->health = SLB_HEALTH_SERVING;
    bes[2]->health = SLB_HEALTH_PENDING;
    for (int i = 0; i < 1000; i++)
        ck_assert_ptr_eq(pick(NULL), bes[1]);
    bes[1]->health = SLB_HEALTH_PENDING;
    ck_assert(!slb_backend_usable(bes[1], NOW));
    for (int i = 0; i < 100; i++)
        ck_assert_ptr_null(pick(NULL));
    bes[0]->health = bes[1]->health = SLB_HEALTH_UNIMPLEMENTED;
    bes[2]->health = SLB_HEALTH_SERVING;
    for (int i = 0; i < 3000; i++) {
        struct slb_tried t = {0};
        struct slb_backend *be;
        /* a call with a key and its retries: every usable backend may come up */
        slb_tried_add(&t, bes[i % 3]);
        be = pick(&t);
        ck_assert_ptr_nonnull(be);
        seen[be->index]++;
    }
    for (int k = 0; k < 3; k++)
        ck_assert_int_gt(seen[k], 0);
    teardown();
}
END_TEST

START_TEST(test_unusable_skipped)
{
    unsigned counts[MAXB] = {0};
    setup(all_policies[_i], 6, NULL);
    bes[1]->state = SLB_BACKEND_TRANSIENT_FAILURE;
    bes[3]->ejected_until_ms = NOW + 5000;
    bes[5]->draining = 1;
    bes[0]->state = SLB_BACKEND_IDLE; /* IDLE and CONNECTING are usable: the pick triggers the connect */
    bes[2]->state = SLB_BACKEND_CONNECTING;
    count_picks(10000, counts);
    ck_assert_uint_eq(counts[1] + counts[3] + counts[5], 0);
    ck_assert_uint_eq(counts[0] + counts[2] + counts[4], 10000);
    teardown();
}
END_TEST

/* An operator's drain (admin or etcd) is skipped by every policy, in panic mode too. */
START_TEST(test_drained_skipped)
{
    unsigned counts[MAXB] = {0};
    fresh_opts();
    opts.panic_threshold_percent = 90; /* 4 of 6 usable: panic, which spreads over unhealthy but never drained ones */
    setup(all_policies[_i], 6, NULL);
    bes[1]->drained = SLB_DRAIN_ADMIN;
    bes[4]->drained = SLB_DRAIN_ETCD;
    set.usable_version++;
    count_picks(10000, counts);
    ck_assert_uint_eq(lb._panic, 1);
    ck_assert_uint_eq(counts[1] + counts[4], 0);
    ck_assert_uint_eq(counts[0] + counts[2] + counts[3] + counts[5], 10000);
    bes[1]->drained = 0;
    bes[4]->drained = 0;
    set.usable_version++;
    count_picks(10000, counts);
    if (strcmp(all_policies[_i], "pick_first") != 0) /* pick_first stays on its current choice */
        ck_assert_uint_gt(counts[1], 0);
    teardown();
    fresh_opts();
}
END_TEST

START_TEST(test_tried)
{
    setup(all_policies[_i], 3, NULL);
    for (int i = 0; i < 2000; i++) {
        struct slb_tried t = {0};
        struct slb_backend *a = pick(NULL), *b, *c;
        ck_assert_ptr_nonnull(a);
        slb_tried_add(&t, a);
        b = pick(&t);
        ck_assert_ptr_nonnull(b);
        ck_assert_ptr_ne(a, b); /* a retry goes elsewhere */
        slb_tried_add(&t, b);
        c = pick(&t);
        ck_assert_ptr_nonnull(c);
        ck_assert_ptr_ne(c, a);
        ck_assert_ptr_ne(c, b);
        slb_tried_add(&t, c);
        ck_assert_ptr_nonnull(pick(&t)); /* all tried: a tried one rather than none */
    }
    /* Tried + unusable: the only untried one is down, so a tried usable one. */
    struct slb_tried t = {0};
    slb_tried_add(&t, bes[0]);
    slb_tried_add(&t, bes[1]);
    bes[2]->state = SLB_BACKEND_TRANSIENT_FAILURE;
    for (int i = 0; i < 100; i++) {
        struct slb_backend *be = pick(&t);
        ck_assert(be == bes[0] || be == bes[1]);
    }
    teardown();
}
END_TEST

/* Set changes are seen on the next pick; a removed backend is never returned. */
START_TEST(test_update)
{
    unsigned counts[MAXB] = {0};
    setup(all_policies[_i], 4, NULL);
    count_picks(100, counts);
    struct slb_backend *gone = bes[1];
    slb_backend_ref(gone);
    slb_backend_set_remove(&set, gone);
    add_backend(7, 1);
    memset(counts, 0, sizeof(counts));
    for (int i = 0; i < 5000; i++) {
        struct slb_backend *be = pick(NULL);
        ck_assert_ptr_ne(be, gone);
        ck_assert_uint_lt(be->index, set.n);
        counts[id_of(be)]++;
    }
    ck_assert_uint_eq(lb.set_version, set.version);
    if (strcmp(all_policies[_i], "pick_first") != 0)
        ck_assert_uint_gt(counts[7], 0);
    slb_backend_unref(gone);
    teardown();
}
END_TEST

/*
 * A health flip (only usable_version moves) rebuilds no table, so a
 * flapping backend never costs a ring rebuild; a weight change or a new
 * backend (version) does. Either re-evaluates panic mode at once.
 */
START_TEST(test_usable_change_keeps_tables)
{
    const char *p = all_policies[_i];
    int builds = slb_lb_find(p)->update != NULL; /* policies without tables build nothing */
    struct slb_tried none = {0};

    opts.panic_threshold_percent = 50;
    setup(p, 10, NULL);
    ck_assert_uint_eq(lb.updates, builds);
    ck_assert_ptr_nonnull(pick(&none));

    /* six of ten go unhealthy: no rebuild, but panic (and picks of the unhealthy) within the same ms */
    for (int i = 0; i < 6; i++)
        bes[i]->health = SLB_HEALTH_NOT_SERVING;
    set.usable_version++;
    unsigned unhealthy = 0;
    for (int i = 0; i < 2000; i++)
        unhealthy += id_of(pick(NULL)) < 6;
    ck_assert_uint_eq(lb.updates, builds);
    ck_assert_uint_eq(lb._panic, 1);
    if (strcmp(p, "pick_first") != 0)
        ck_assert_uint_gt(unhealthy, 0);

    /* they recover: still no rebuild, panic ends at once */
    for (int i = 0; i < 6; i++)
        bes[i]->health = SLB_HEALTH_SERVING;
    set.usable_version++;
    ck_assert_ptr_nonnull(pick(NULL));
    ck_assert_uint_eq(lb.updates, builds);
    ck_assert_uint_eq(lb._panic, 0);

    /* a weight change rebuilds once */
    bes[3]->weight = 4;
    set.version++;
    for (int i = 0; i < 10; i++)
        ck_assert_ptr_nonnull(pick(NULL));
    ck_assert_uint_eq(lb.updates, 2 * builds);

    /* and so does a new backend */
    add_backend(10, 1);
    ck_assert_ptr_nonnull(pick(NULL));
    ck_assert_uint_eq(lb.updates, 3 * builds);
    teardown();
}
END_TEST

START_TEST(test_round_robin_exact)
{
    unsigned counts[MAXB] = {0};
    setup("round_robin", 3, NULL);
    count_picks(300, counts);
    ck_assert_uint_eq(counts[0], 100);
    ck_assert_uint_eq(counts[1], 100);
    ck_assert_uint_eq(counts[2], 100);
    teardown();

    memset(counts, 0, sizeof(counts));
    setup("round_robin", 7, NULL);
    count_picks(10000, counts); /* 10000 = 7 * 1428 + 4: every count is 1428 or 1429 */
    for (int i = 0; i < 7; i++)
        ck_assert(counts[i] == 1428 || counts[i] == 1429);
    teardown();
}
END_TEST

/* Equal weights: chi-square over 10 backends x 100,000 picks. */
START_TEST(test_uniform)
{
    static const char *const uniform[] = {"random",         "weighted_random", "least_request",
                                          "source_ip_hash", "maglev",          "weighted_round_robin"};
    unsigned counts[MAXB] = {0};
    setup(uniform[_i], 10, NULL);
    count_picks(100000, counts);
    ck_assert_msg(chi_square(counts, 10, 100000) < 27.88, "%s: chi2 %.2f", uniform[_i], chi_square(counts, 10, 100000));
    teardown();
}
END_TEST

START_TEST(test_ring_even)
{
    unsigned counts[MAXB] = {0};
    setup("ring_hash", 10, NULL);
    count_picks(100000, counts);
    for (int i = 0; i < 10; i++)
        ck_assert_msg(counts[i] > 7000 && counts[i] < 13000, "backend %d: %u", i, counts[i]);
    teardown();
}
END_TEST

/* 3:1 weights -> 75/25. */
START_TEST(test_weights)
{
    static const char *const weighted[] = {"weighted_round_robin", "weighted_random", "source_ip_hash", "maglev",
                                           "ring_hash"};
    static const uint32_t w[] = {3, 1};
    unsigned counts[MAXB] = {0};
    double tol = strcmp(weighted[_i], "ring_hash") == 0 ? 5.0 : 2.0;
    setup(weighted[_i], 2, w);
    count_picks(40000, counts);
    double share = 100.0 * counts[0] / 40000;
    ck_assert_msg(share > 75 - tol && share < 75 + tol, "%s: %.2f%%", weighted[_i], share);
    teardown();
}
END_TEST

START_TEST(test_wrr_smooth)
{
    /*
     * 5:1:1. Every 7 picks hold exactly 5/1/1, and after any t picks each
     * backend's count is within one of t * w / W (Webster apportionment; nginx
     * keeps the same bound, though its exact order, a a b a c a a, differs
     * from ours, a a a b c a a).
     */
    static const uint32_t w[] = {5, 1, 1};
    unsigned counts[MAXB] = {0};
    setup("weighted_round_robin", 3, w);
    for (int t = 1; t <= 7000; t++) {
        counts[id_of(pick(NULL))]++;
        for (int i = 0; i < 3; i++) {
            double lag = (double)t * w[i] / 7 - counts[i];
            ck_assert_msg(lag > -1 && lag < 1, "t=%d backend %d lag %.2f", t, i, lag);
        }
        if (t % 7 == 0)
            ck_assert(counts[0] == (unsigned)t / 7 * 5 && counts[1] == (unsigned)t / 7);
    }
    teardown();
}
END_TEST

/* Weighted least_request under load: with equal latencies picks follow 3:1. */
START_TEST(test_least_request_weights)
{
    static const uint32_t w[] = {3, 1};
    struct slb_backend *inflight[40] = {0};
    unsigned counts[MAXB] = {0};
    setup("least_request", 2, w);
    for (int i = 0; i < 40000; i++) {
        struct slb_backend **slot = &inflight[i % 40];
        if (*slot != NULL)
            (*slot)->outstanding--; /* the oldest call completes */
        *slot = pick(NULL);
        (*slot)->outstanding++;
        counts[id_of(*slot)]++;
    }
    double share = 100.0 * counts[0] / 40000;
    ck_assert_msg(share > 70 && share < 80, "%.2f%%", share);
    teardown();
}
END_TEST

START_TEST(test_least_request_prefers_less_loaded)
{
    unsigned counts[MAXB] = {0};
    setup("least_request", 3, NULL);
    bes[0]->outstanding = 0;
    bes[1]->outstanding = 5;
    bes[2]->outstanding = 10;
    count_picks(30000, counts);
    /* two distinct choices: the busiest never wins, the idlest wins 2 of 3 pairs */
    ck_assert_uint_eq(counts[2], 0);
    ck_assert_msg(counts[0] > 19000 && counts[0] < 21000, "%u", counts[0]);
    teardown();

    opts.choice_count = 0; /* full scan */
    memset(counts, 0, sizeof(counts));
    setup("least_request", 10, NULL);
    for (int i = 0; i < 10; i++)
        bes[i]->outstanding = 10 + i;
    bes[6]->outstanding = 3;
    count_picks(1000, counts);
    ck_assert_uint_eq(counts[6], 1000);
    teardown();

    /* weights: 4 in flight on weight 4 beats 2 in flight on weight 1 */
    static const uint32_t w[] = {4, 1};
    setup("least_request", 2, w);
    bes[0]->outstanding = 4;
    bes[1]->outstanding = 2;
    for (int i = 0; i < 100; i++)
        ck_assert_ptr_eq(pick(NULL), bes[0]);
    teardown();
}
END_TEST

/* Maps 100,000 random keys; each key's backend id. */
static void map_keys(int *out, int nkeys)
{
    struct slb_rng keys;
    slb_rng_seed(&keys, 7);
    for (int k = 0; k < nkeys; k++) {
        struct slb_pick_ctx ctx = {.now_ms = NOW, .random = 1, .hash = slb_rng_next(&keys), .has_hash = 1};
        out[k] = id_of(slb_lb_pick(&lb, &ctx));
    }
}

#define NKEYS 100000
static int before_keys[NKEYS], after_keys[NKEYS];

START_TEST(test_consistent_add)
{
    static const char *const hashes[] = {"ring_hash", "maglev"};
    int moved = 0, moved_elsewhere = 0;
    setup(hashes[_i], 10, NULL);
    map_keys(before_keys, NKEYS);
    add_backend(10, 1);
    map_keys(after_keys, NKEYS);
    for (int k = 0; k < NKEYS; k++) {
        if (before_keys[k] != after_keys[k]) {
            moved++;
            moved_elsewhere += after_keys[k] != 10;
        }
    }
    double f = (double)moved / NKEYS;
    ck_assert_msg(f > 0.5 / 11 && f < 1.5 / 11, "%s: moved %.4f", hashes[_i], f);
    /* ring: only keys taken by the newcomer move; maglev: nearly only those */
    if (_i == 0)
        ck_assert_int_eq(moved_elsewhere, 0);
    else
        ck_assert_msg(moved_elsewhere < NKEYS / 100, "maglev moved %d between old backends", moved_elsewhere);
    teardown();
}
END_TEST

START_TEST(test_consistent_remove)
{
    static const char *const hashes[] = {"ring_hash", "maglev"};
    int changed = 0, on_gone = 0;
    setup(hashes[_i], 10, NULL);
    map_keys(before_keys, NKEYS);
    slb_backend_set_remove(&set, bes[3]);
    map_keys(after_keys, NKEYS);
    for (int k = 0; k < NKEYS; k++) {
        ck_assert_int_ne(after_keys[k], 3);
        if (before_keys[k] == 3)
            on_gone++;
        else if (before_keys[k] != after_keys[k])
            changed++;
    }
    double f = (double)on_gone / NKEYS;
    ck_assert_msg(f > 0.5 / 10 && f < 1.5 / 10, "%.4f", f);
    if (_i == 0)
        ck_assert_int_eq(changed, 0); /* keys of the survivors stay put */
    else
        ck_assert_msg(changed < NKEYS / 100, "maglev: %d keys of survivors moved", changed);
    teardown();
}
END_TEST

/* Same key -> same backend, whatever order the set was built in. */
START_TEST(test_hash_same_key)
{
    static const char *const hashes[] = {"ring_hash", "maglev", "source_ip_hash"};
    setup(hashes[_i], 8, NULL);
    map_keys(before_keys, 10000);
    map_keys(after_keys, 10000);
    ck_assert_mem_eq(before_keys, after_keys, 10000 * sizeof(int));
    teardown();

    slb_backend_set_init(&set);
    for (int i = 7; i >= 0; i--) /* reverse discovery order */
        add_backend(i, 1);
    ck_assert_int_eq(slb_lb_init(&lb, hashes[_i], &opts, &set), 0);
    map_keys(after_keys, 10000);
    ck_assert_mem_eq(before_keys, after_keys, 10000 * sizeof(int));

    /* The key's backend goes down: the key walks on; it comes back: the key returns. */
    struct slb_backend *owner = bes[before_keys[0]];
    struct slb_pick_ctx ctx = {.now_ms = NOW, .random = 1, .has_hash = 1};
    struct slb_rng keys;
    slb_rng_seed(&keys, 7);
    ctx.hash = slb_rng_next(&keys);
    ck_assert_ptr_eq(slb_lb_pick(&lb, &ctx), owner);
    owner->state = SLB_BACKEND_TRANSIENT_FAILURE;
    struct slb_backend *other = slb_lb_pick(&lb, &ctx);
    ck_assert_ptr_nonnull(other);
    ck_assert_ptr_ne(other, owner);
    ck_assert_ptr_eq(slb_lb_pick(&lb, &ctx), other); /* stable while it is down */
    owner->state = SLB_BACKEND_READY;
    ck_assert_ptr_eq(slb_lb_pick(&lb, &ctx), owner);
    teardown();
}
END_TEST

static void peer_v4(struct sockaddr_in *sa, const char *ip, uint16_t port)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    ck_assert_int_eq(inet_pton(AF_INET, ip, &sa->sin_addr), 1);
}

static void peer_v6(struct sockaddr_in6 *sa, const char *ip, uint16_t port)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(port);
    ck_assert_int_eq(inet_pton(AF_INET6, ip, &sa->sin6_addr), 1);
}

/* The per-connection keys: address alone (as before hash_on), address and port. */
START_TEST(test_peer_keys)
{
    struct sockaddr_in a, b, c;
    struct sockaddr_in6 d, e, f;
    struct slb_lb_peer_keys ka, kb, kc, kd, ke, kf;

    peer_v4(&a, "127.0.0.1", 40000);
    peer_v4(&b, "127.0.0.1", 40001);
    peer_v4(&c, "10.1.2.3", 40000);
    peer_v6(&d, "::1", 40000);
    peer_v6(&e, "::1", 40001);
    peer_v6(&f, "::ffff:127.0.0.2", 40000);
    slb_lb_peer_keys_init(&ka, (struct sockaddr *)&a);
    slb_lb_peer_keys_init(&kb, (struct sockaddr *)&b);
    slb_lb_peer_keys_init(&kc, (struct sockaddr *)&c);
    slb_lb_peer_keys_init(&kd, (struct sockaddr *)&d);
    slb_lb_peer_keys_init(&ke, (struct sockaddr *)&e);
    slb_lb_peer_keys_init(&kf, (struct sockaddr *)&f);

    /* two apps of one host: one address key, two connection keys */
    ck_assert_uint_eq(ka.ip, kb.ip);
    ck_assert_uint_ne(ka.ip_port, kb.ip_port);
    ck_assert_uint_eq(kd.ip, ke.ip);
    ck_assert_uint_ne(kd.ip_port, ke.ip_port);
    ck_assert_uint_ne(ka.ip, kc.ip);
    ck_assert_uint_ne(ka.ip_port, kc.ip_port);
    /* the address key is what source_ip_hash always hashed (XXH64 of the raw
     * address), so an upgrade keeps every app on its backend */
    ck_assert_uint_eq(ka.ip, slb_hash64(&a.sin_addr, 4));
    ck_assert_uint_eq(kd.ip, slb_hash64(&d.sin6_addr, 16));
    uint8_t raw[6];
    memcpy(raw, &b.sin_addr, 4);
    memcpy(raw + 4, &b.sin_port, 2);
    ck_assert_uint_eq(kb.ip_port, slb_hash64(raw, 6));
    ck_assert_int_eq(ka.loopback, 1);
    ck_assert_int_eq(kc.loopback, 0);
    ck_assert_int_eq(kd.loopback, 1);
    ck_assert_int_eq(kf.loopback, 1);
    peer_v6(&f, "2001:db8::1", 1);
    slb_lb_peer_keys_init(&kf, (struct sockaddr *)&f);
    ck_assert_int_eq(kf.loopback, 0);

    /* no address (getpeername failed): zeros, not garbage */
    memset(&kf, 0xff, sizeof(kf));
    slb_lb_peer_keys_init(&kf, NULL);
    ck_assert_uint_eq(kf.ip, 0);
    ck_assert_uint_eq(kf.ip_port, 0);
    ck_assert_int_eq(kf.loopback, 0);
}
END_TEST

/* hash_on picks the call's key: the address, the connection, or a header (absent: no key). */
START_TEST(test_hash_key_selection)
{
    struct slb_lb_peer_keys peer = {.ip = 111, .ip_port = 222, .loopback = 1};
    const uint8_t v[] = "alice";
    uint64_t key = 0;

    ck_assert_int_eq(opts.hash_on, SLB_LB_HASH_ON_SOURCE_IP); /* the default */
    ck_assert_int_eq(slb_lb_hash_key(&opts, &peer, NULL, 0, &key), 1);
    ck_assert_uint_eq(key, 111);
    opts.hash_on = SLB_LB_HASH_ON_SOURCE_IP_PORT;
    ck_assert_int_eq(slb_lb_hash_key(&opts, &peer, v, 5, &key), 1); /* a header does not matter */
    ck_assert_uint_eq(key, 222);
    opts.hash_on = SLB_LB_HASH_ON_HEADER;
    ck_assert_int_eq(slb_lb_hash_key(&opts, &peer, v, 5, &key), 1);
    ck_assert_uint_eq(key, slb_hash64("alice", 5));
    key = 7;
    ck_assert_int_eq(slb_lb_hash_key(&opts, &peer, NULL, 0, &key), 0); /* no header: random pick */
    ck_assert_uint_eq(key, 7);
    ck_assert_int_eq(slb_lb_hash_key(&opts, &peer, v, 0, &key), 1); /* an empty value is a key */
    ck_assert_uint_eq(key, slb_hash64("", 0));

    ck_assert_str_eq(slb_lb_hash_on_name(SLB_LB_HASH_ON_SOURCE_IP), "source_ip");
    ck_assert_str_eq(slb_lb_hash_on_name(SLB_LB_HASH_ON_SOURCE_IP_PORT), "source_ip_port");
    ck_assert_str_eq(slb_lb_hash_on_name(SLB_LB_HASH_ON_HEADER), "header");
    ck_assert_ptr_null(slb_lb_hash_on_name(3));
    ck_assert_ptr_null(slb_lb_hash_on_name(-1));
    ck_assert_int_eq(slb_lb_hash_on_parse("source_ip_port"), SLB_LB_HASH_ON_SOURCE_IP_PORT);
    ck_assert_int_eq(slb_lb_hash_on_parse("header"), SLB_LB_HASH_ON_HEADER);
    ck_assert_int_eq(slb_lb_hash_on_parse("source_port"), -1);
    ck_assert_int_eq(slb_lb_hash_on_parse(NULL), -1);
}
END_TEST

/*
 * 12 apps of one host (127.0.0.1, ports 40000..40011) through each hash
 * policy with 3 backends: keyed on the address they all share one backend;
 * keyed on address and port each app sticks to one backend and together they
 * use all three (deterministic: the keys are fixed).
 */
START_TEST(test_hash_on_spreads_one_host)
{
    static const char *const hashes[] = {"source_ip_hash", "ring_hash", "maglev"};
    int by_ip[12], by_port[12], used[3] = {0};

    setup(hashes[_i], 3, NULL);
    for (int on = SLB_LB_HASH_ON_SOURCE_IP; on <= SLB_LB_HASH_ON_SOURCE_IP_PORT; on++) {
        opts.hash_on = (uint8_t)on;
        for (int app = 0; app < 12; app++) {
            struct sockaddr_in sa;
            struct slb_lb_peer_keys k;
            struct slb_pick_ctx ctx = {.now_ms = NOW};
            peer_v4(&sa, "127.0.0.1", (uint16_t)(40000 + app));
            slb_lb_peer_keys_init(&k, (struct sockaddr *)&sa);
            for (int call = 0; call < 5; call++) {
                ctx.random = rnd();
                ctx.has_hash = (uint8_t)slb_lb_hash_key(&opts, &k, NULL, 0, &ctx.hash);
                int id = id_of(slb_lb_pick(&lb, &ctx));
                int *where = on == SLB_LB_HASH_ON_SOURCE_IP ? by_ip : by_port;
                if (call == 0)
                    where[app] = id;
                ck_assert_int_eq(id, where[app]); /* every call of the app: one backend */
            }
        }
    }
    for (int app = 0; app < 12; app++) {
        ck_assert_int_eq(by_ip[app], by_ip[0]);
        used[by_port[app]]++;
    }
    ck_assert_msg(used[0] > 0 && used[1] > 0 && used[2] > 0, "%s: %d %d %d", hashes[_i], used[0], used[1], used[2]);
    teardown();
}
END_TEST

/*
 * Every sidecar, of every version, must build the same ring and table: these
 * owners of the first keys were computed with the code of before lib/rng.h
 * and libxxhash (hand-written splitmix64 and XXH64). 10 backends, weights 1..3.
 */
START_TEST(test_hash_tables_pinned)
{
    static const char *const hashes[] = {"ring_hash", "maglev"};
    static const int owners[][24] = {
        {6, 8, 9, 8, 1, 1, 1, 4, 2, 0, 8, 3, 6, 5, 5, 6, 3, 0, 5, 8, 1, 2, 8, 5},
        {3, 5, 5, 6, 1, 0, 1, 4, 8, 5, 4, 2, 7, 5, 5, 2, 8, 8, 5, 4, 9, 3, 8, 8},
    };
    int keys[24];
    slb_backend_set_init(&set);
    for (int i = 0; i < 10; i++)
        add_backend(i, 1 + i % 3);
    ck_assert_int_eq(slb_lb_init(&lb, hashes[_i], NULL, &set), 0);
    map_keys(keys, 24);
    for (int k = 0; k < 24; k++)
        ck_assert_msg(keys[k] == owners[_i][k], "%s: key %d -> %d, was %d", hashes[_i], k, keys[k], owners[_i][k]);
    teardown();
}
END_TEST

START_TEST(test_pick_first)
{
    setup("pick_first", 3, NULL);
    struct slb_backend *first = pick(NULL);
    for (int i = 0; i < 100; i++)
        ck_assert_ptr_eq(pick(NULL), first);
    first->state = SLB_BACKEND_TRANSIENT_FAILURE;
    struct slb_backend *second = pick(NULL);
    ck_assert_ptr_ne(second, first);
    first->state = SLB_BACKEND_READY; /* sticks to the one that works */
    for (int i = 0; i < 100; i++)
        ck_assert_ptr_eq(pick(NULL), second);
    teardown();
}
END_TEST

START_TEST(test_slow_start_weight)
{
    opts.slow_start_ms = 10000;
    setup("weighted_round_robin", 1, (const uint32_t[]){10});
    struct slb_backend *be = bes[0];
    ck_assert_uint_eq(slb_lb_effective_weight(&lb, be, NOW), 10); /* usable_since 0: no ramp */
    be->usable_since_ms = NOW;
    ck_assert_uint_eq(slb_lb_effective_weight(&lb, be, NOW), 1);        /* 10 % floor */
    ck_assert_uint_eq(slb_lb_effective_weight(&lb, be, NOW + 5000), 5); /* linear */
    ck_assert_uint_eq(slb_lb_effective_weight(&lb, be, NOW + 10000), 10);
    opts.slow_start_aggression = 2.0; /* (t/window)^(1/2) */
    ck_assert_uint_eq(slb_lb_effective_weight(&lb, be, NOW + 2500), 5);
    opts.slow_start_min_weight_percent = 60;
    ck_assert_uint_eq(slb_lb_effective_weight(&lb, be, NOW + 2500), 6);
    opts.slow_start_ms = 0;
    ck_assert_uint_eq(slb_lb_effective_weight(&lb, be, NOW), 10);
    teardown();
}
END_TEST

/* A backend that just joined gets 10 %, then half, then a full share of picks. */
START_TEST(test_slow_start_ramp)
{
    static const char *const ramped[] = {"weighted_round_robin", "weighted_random", "least_request", "round_robin",
                                         "random"};
    static const uint64_t at[] = {0, 5000, 10000};
    static const double expect[] = {0.1 / 1.1, 0.5 / 1.5, 0.5};
    opts.slow_start_ms = 10000;
    setup(ramped[_i], 2, NULL);
    bes[1]->usable_since_ms = NOW;
    set.usable_version++; /* as the cluster does when it sets usable_since_ms */
    for (int s = 0; s < 3; s++) {
        unsigned c[2] = {0};
        struct slb_backend *inflight[400] = {0}; /* many in flight, so the +1 bias is small */
        for (int i = 0; i < 40000; i++) {
            struct slb_backend *be = pick_at(NOW + at[s], NULL);
            if (strcmp(ramped[_i], "least_request") == 0) { /* needs load to tell them apart */
                if (inflight[i % 400] != NULL)
                    inflight[i % 400]->outstanding--;
                inflight[i % 400] = be;
                be->outstanding++;
            }
            c[id_of(be)]++;
        }
        for (int i = 0; i < 400; i++)
            if (inflight[i] != NULL)
                inflight[i]->outstanding--;
        double share = (double)c[1] / 40000;
        ck_assert_msg(share > expect[s] - 0.04 && share < expect[s] + 0.04, "%s at %llu: %.3f", ramped[_i],
                      (unsigned long long)at[s], share);
    }
    teardown();
}
END_TEST

/*
 * round_robin and random are weighted while a backend ramps: one new backend
 * among ten, at its 10 % floor, gets 0.1 / 9.1 of the picks (1.1 %), not a
 * tenth; the nine others share the rest evenly. 91,000 picks: the new one's
 * expected count is 1,000 (sigma ~31), bounds +-20 %.
 */
START_TEST(test_slow_start_share_of_ten)
{
    static const char *const unweighted[] = {"round_robin", "random"};
    unsigned counts[MAXB] = {0};
    opts.slow_start_ms = 30000;
    setup(unweighted[_i], 10, NULL);
    bes[3]->usable_since_ms = NOW;
    set.usable_version++;
    count_picks(91000, counts);
    ck_assert_msg(counts[3] > 800 && counts[3] < 1200, "%s: the ramping backend got %u of 91000", unweighted[_i],
                  counts[3]);
    for (int i = 0; i < 10; i++)
        if (i != 3)
            ck_assert_msg(counts[i] > 9500 && counts[i] < 10500, "%s: backend %d got %u", unweighted[_i], i, counts[i]);
    teardown();
}
END_TEST

/* Once the ramp is over, round_robin is exact again (the plain walk), with no set change in between. */
START_TEST(test_slow_start_round_robin_exact_after)
{
    unsigned counts[MAXB] = {0};
    opts.slow_start_ms = 10000;
    setup("round_robin", 3, NULL);
    bes[2]->usable_since_ms = NOW;
    set.usable_version++;
    for (int i = 0; i < 3000; i++)
        counts[id_of(pick_at(NOW + 1000, NULL))]++;
    ck_assert_uint_lt(counts[2], 500); /* ~0.19 / 2.19 of 3000 = 260 */
    memset(counts, 0, sizeof(counts));
    for (int i = 0; i < 300; i++)
        counts[id_of(pick_at(NOW + 10000, NULL))]++;
    ck_assert_uint_eq(counts[0], 100);
    ck_assert_uint_eq(counts[1], 100);
    ck_assert_uint_eq(counts[2], 100);
    teardown();
}
END_TEST

/*
 * Every backend ramping from one time (the table sidelb starts with): equal
 * factors, so the plain pick (round_robin exact); ramping from two times but
 * at the same factor (both at the floor): still even. The tried set is
 * honoured while ramping.
 */
START_TEST(test_slow_start_all_ramping)
{
    static const char *const unweighted[] = {"round_robin", "random"};
    unsigned counts[MAXB] = {0};
    opts.slow_start_ms = 10000;
    setup(unweighted[_i], 10, NULL);
    for (int i = 0; i < 10; i++)
        bes[i]->usable_since_ms = NOW;
    set.usable_version++;
    count_picks(100000, counts);
    for (int i = 0; i < 10 && _i == 0; i++)
        ck_assert_uint_eq(counts[i], 10000);
    ck_assert_msg(chi_square(counts, 10, 100000) < 27.88, "%s: chi-square %.1f", unweighted[_i],
                  chi_square(counts, 10, 100000));
    bes[0]->usable_since_ms = NOW - 1; /* apart, but both factors at the 10 % floor */
    set.usable_version++;
    memset(counts, 0, sizeof(counts));
    count_picks(100000, counts);
    ck_assert_msg(chi_square(counts, 10, 100000) < 27.88, "%s: chi-square %.1f", unweighted[_i],
                  chi_square(counts, 10, 100000));
    struct slb_tried tried = {0};
    for (int i = 0; i < SLB_MAX_ATTEMPTS; i++)
        slb_tried_add(&tried, bes[i]);
    for (int i = 0; i < 100; i++)
        ck_assert_int_ge(id_of(pick(&tried)), SLB_MAX_ATTEMPTS);
    teardown();
}
END_TEST

/* The ramp of a backend registered at a wall-clock time, in loop time. */
START_TEST(test_slow_start_ramp_start)
{
    const uint64_t wall = 1700000000000ULL; /* wall clock now */
    opts.slow_start_ms = 30000;
    ck_assert_uint_eq(slb_lb_ramp_start(&opts, NOW, wall, wall - 10000), NOW - 10000); /* a third through */
    ck_assert_uint_eq(slb_lb_ramp_start(&opts, NOW, wall, wall), NOW);
    ck_assert_uint_eq(slb_lb_ramp_start(&opts, NOW, wall, wall + 60000), NOW); /* future (skew): from now */
    ck_assert_uint_eq(slb_lb_ramp_start(&opts, NOW, wall, wall - 30000), 0);   /* ramp over: none */
    ck_assert_uint_eq(slb_lb_ramp_start(&opts, NOW, wall, wall - 3600000), 0);
    ck_assert_uint_eq(slb_lb_ramp_start(&opts, 5000, wall, wall - 20000), 1); /* before loop time 0 */
    opts.slow_start_ms = 0;
    ck_assert_uint_eq(slb_lb_ramp_start(&opts, NOW, wall, wall - 10000), NOW);
    /* and the weight it gets */
    opts.slow_start_ms = 30000;
    setup("weighted_round_robin", 1, (const uint32_t[]){100});
    bes[0]->usable_since_ms = slb_lb_ramp_start(&opts, NOW, wall, wall - 15000);
    ck_assert_uint_eq(slb_lb_effective_weight(&lb, bes[0], NOW), 50);
    teardown();
}
END_TEST

START_TEST(test_panic)
{
    unsigned counts[MAXB] = {0};
    opts.panic_threshold_percent = 50;
    setup(all_policies[_i], 10, NULL);
    for (int i = 0; i < 4; i++)
        bes[i]->state = SLB_BACKEND_TRANSIENT_FAILURE;
    count_picks(5000, counts); /* 60 % usable: normal */
    for (int i = 0; i < 4; i++)
        ck_assert_uint_eq(counts[i], 0);

    for (int i = 4; i < 6; i++)
        bes[i]->ejected_until_ms = NOW + 100000; /* 40 % usable: panic */
    bes[9]->draining = 1;
    bes[8]->health = SLB_HEALTH_PENDING;
    memset(counts, 0, sizeof(counts));
    for (int i = 0; i < 5000; i++)
        counts[id_of(pick_at(NOW + 1, NULL))]++;
    ck_assert_uint_eq(counts[9], 0); /* draining: never, even in panic */
    ck_assert_uint_eq(counts[8], 0); /* health not known yet: never, even in panic */
    if (strcmp(all_policies[_i], "pick_first") != 0) {
        unsigned unusable = 0;
        for (int i = 0; i < 6; i++)
            unusable += counts[i];
        ck_assert_uint_gt(unusable, 0);
    }
    teardown();
}
END_TEST

Suite *lb_suite(void)
{
    Suite *s = suite_create("lb");
    TCase *tc = tcase_create("policies");
    int np = (int)(sizeof(all_policies) / sizeof(all_policies[0]));

    tcase_add_checked_fixture(tc, check_setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_registry);
    tcase_add_test(tc, test_hash64);
    tcase_add_loop_test(tc, test_empty_and_one, 0, np);
    tcase_add_loop_test(tc, test_none_usable, 0, np);
    tcase_add_loop_test(tc, test_unusable_skipped, 0, np);
    tcase_add_loop_test(tc, test_drained_skipped, 0, np);
    tcase_add_loop_test(tc, test_health_pending_and_unimplemented, 0, np);
    tcase_add_loop_test(tc, test_tried, 0, np);
    tcase_add_loop_test(tc, test_update, 0, np);
    tcase_add_loop_test(tc, test_panic, 0, np);
    tcase_add_loop_test(tc, test_usable_change_keeps_tables, 0, np);
    tcase_add_test(tc, test_round_robin_exact);
    tcase_add_loop_test(tc, test_uniform, 0, 6);
    tcase_add_test(tc, test_ring_even);
    tcase_add_loop_test(tc, test_weights, 0, 5);
    tcase_add_test(tc, test_wrr_smooth);
    tcase_add_test(tc, test_least_request_weights);
    tcase_add_test(tc, test_least_request_prefers_less_loaded);
    tcase_add_loop_test(tc, test_consistent_add, 0, 2);
    tcase_add_loop_test(tc, test_consistent_remove, 0, 2);
    tcase_add_loop_test(tc, test_hash_same_key, 0, 3);
    tcase_add_loop_test(tc, test_hash_tables_pinned, 0, 2);
    tcase_add_test(tc, test_peer_keys);
    tcase_add_test(tc, test_hash_key_selection);
    tcase_add_loop_test(tc, test_hash_on_spreads_one_host, 0, 3);
    tcase_add_test(tc, test_pick_first);
    tcase_add_test(tc, test_slow_start_weight);
    tcase_add_loop_test(tc, test_slow_start_ramp, 0, 5);
    tcase_add_loop_test(tc, test_slow_start_share_of_ten, 0, 2);
    tcase_add_test(tc, test_slow_start_round_robin_exact_after);
    tcase_add_loop_test(tc, test_slow_start_all_ramping, 0, 2);
    tcase_add_test(tc, test_slow_start_ramp_start);
    suite_add_tcase(s, tc);
    return s;
}
