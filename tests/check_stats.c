/* Per-call counters: histogram bucket edges (lib/stats.h) and the per-method cap (lib/method_stats.c). */
#include <check.h>
#include <string.h>
#include <stdio.h>

#include "method_stats.h"
#include "stats.h"

/* A value equal to a bound falls in that bound's bucket (Prometheus le); one ns more, in the next. */
START_TEST(hist_bucket_edges)
{
    struct slb_stats_hist h;

    memset(&h, 0, sizeof(h));
    slb_stats_observe(&h, 0);
    slb_stats_observe(&h, 100000); /* 100 µs: le 0.0001 */
    slb_stats_observe(&h, 100001);
    slb_stats_observe(&h, 30000000000ull); /* 30 s: le 30 */
    slb_stats_observe(&h, 30000000001ull); /* +Inf */
    ck_assert_uint_eq(h.counts[0], 2);
    ck_assert_uint_eq(h.counts[1], 1);
    ck_assert_uint_eq(h.counts[SLB_STATS_BUCKETS - 1], 1);
    ck_assert_uint_eq(h.counts[SLB_STATS_BUCKETS], 1);
    ck_assert_uint_eq(h.sum_ns, 100000 + 100001 + 30000000000ull + 30000000001ull);
    ck_assert_uint_eq(slb_stats_bucket_ns[0], 100000);
    ck_assert_uint_eq(slb_stats_bucket_ns[SLB_STATS_BUCKETS - 1], 30000000000ull);
    for (int i = 1; i < SLB_STATS_BUCKETS; i++)
        ck_assert(slb_stats_bucket_ns[i] > slb_stats_bucket_ns[i - 1]);
}
END_TEST

START_TEST(code_out_of_range_is_unknown)
{
    ck_assert_uint_eq(slb_stats_code(0), 0);
    ck_assert_uint_eq(slb_stats_code(16), 16);
    ck_assert_uint_eq(slb_stats_code(17), 2);
    ck_assert_uint_eq(slb_stats_code(-1), 2);
}
END_TEST

#define P(s) (const uint8_t *)(s), strlen(s)

START_TEST(methods_past_the_cap_are_other)
{
    struct slb_method_stats ms;
    char name[32];

    ck_assert_int_eq(slb_method_stats_init(&ms, 3), 0);
    ck_assert_uint_eq(slb_method_stats_slot(&ms, P("/a.S/A")), 1);
    ck_assert_uint_eq(slb_method_stats_slot(&ms, P("/a.S/B")), 2);
    ck_assert_uint_eq(slb_method_stats_slot(&ms, P("/a.S/A")), 1);
    ck_assert_uint_eq(slb_method_stats_slot(&ms, P("/a.S/C")), 3);
    for (int i = 0; i < 1000; i++) { /* an app making up names: all "other", no growth */
        snprintf(name, sizeof(name), "/x.S/M%d", i);
        ck_assert_uint_eq(slb_method_stats_slot(&ms, P(name)), 4);
    }
    ck_assert_uint_eq(ms.n, 3);
    ck_assert_str_eq(ms.items[1].name, "/a.S/B");
    ck_assert_ptr_null(ms.items[3].name);
    ck_assert_uint_eq(slb_method_stats_slot(&ms, P("/a.S/C")), 3);
    slb_method_stats_dispose(&ms);
}
END_TEST

START_TEST(methods_off_by_default)
{
    struct slb_method_stats ms;

    ck_assert_int_eq(slb_method_stats_init(&ms, 0), 0);
    ck_assert_uint_eq(slb_method_stats_slot(&ms, P("/a.S/A")), 0);
    ck_assert_ptr_null(ms.items);
    slb_method_stats_dispose(&ms);
}
END_TEST

Suite *stats_suite(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, hist_bucket_edges);
    tcase_add_test(tc, code_out_of_range_is_unknown);
    tcase_add_test(tc, methods_past_the_cap_are_other);
    tcase_add_test(tc, methods_off_by_default);
    suite_add_tcase(s, tc);
    return s;
}
