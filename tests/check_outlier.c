/* Passive outlier detection: consecutive failures, the ejection cap,
 * un-ejection and its slow-start stamp, back-off and decay, success rate. */
#include <check.h>
#include <stdio.h>

#include "backend.h"
#include "lb.h"
#include "outlier.h"

#define T0 1000000

static struct slb_backend_set set;
static struct slb_backend *bes[32];
static struct slb_outlier_options o;

static void setup_n(int n)
{
    slb_outlier_options_default(&o);
    slb_backend_set_init(&set);
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof(name), "127.0.0.1:%d", 20000 + i);
        bes[i] = slb_backend_new(name, 1);
        ck_assert_ptr_nonnull(bes[i]);
        bes[i]->state = SLB_BACKEND_READY;
        ck_assert_int_eq(slb_backend_set_add(&set, bes[i]), 0);
        slb_backend_unref(bes[i]);
    }
}

static int fail_n(struct slb_backend *be, int n, uint64_t now)
{
    int ejected = 0;
    for (int i = 0; i < n; i++)
        ejected += slb_outlier_on_result(&o, &set, be, 0, now);
    return ejected;
}

START_TEST(test_defaults)
{
    setup_n(1);
    ck_assert_uint_eq(o.consecutive_failures, 5);
    ck_assert_uint_eq(o.base_ejection_ms, 30000);
    ck_assert_uint_eq(o.max_ejection_ms, 300000);
    ck_assert_uint_eq(o.max_ejection_percent, 10);
    ck_assert_uint_eq(o.interval_ms, 10000);
    ck_assert_uint_eq(o.success_rate_minimum_hosts, 5);
    ck_assert_uint_eq(o.success_rate_request_volume, 100);
    ck_assert(o.success_rate_stdev_factor == 1.9);
    slb_backend_set_dispose(&set);
}
END_TEST

START_TEST(test_consecutive_failures)
{
    setup_n(10);
    ck_assert_int_eq(fail_n(bes[0], 4, T0), 0);
    ck_assert_int_eq(slb_outlier_on_result(&o, &set, bes[0], 1, T0), 0); /* a success resets the run */
    ck_assert_int_eq(fail_n(bes[0], 4, T0), 0);
    ck_assert(slb_backend_usable(bes[0], T0));
    ck_assert_int_eq(fail_n(bes[0], 1, T0), 1);
    ck_assert(!slb_backend_usable(bes[0], T0));
    ck_assert_uint_eq(bes[0]->ejected_until_ms, T0 + 30000);
    ck_assert_uint_eq(bes[0]->times_ejected, 1);
    ck_assert_uint_eq(bes[0]->interval_failure, 9);
    ck_assert_uint_eq(bes[0]->interval_success, 1);
    ck_assert_int_eq(fail_n(bes[0], 10, T0 + 1), 0); /* already ejected: no double count */
    ck_assert_uint_eq(bes[0]->times_ejected, 1);
    slb_backend_set_dispose(&set);
}
END_TEST

START_TEST(test_max_ejection_percent)
{
    setup_n(10); /* 10 % of 10: one at a time */
    ck_assert_int_eq(fail_n(bes[0], 5, T0), 1);
    ck_assert_int_eq(fail_n(bes[1], 5, T0), 0);
    ck_assert(slb_backend_usable(bes[1], T0));
    slb_backend_set_dispose(&set);

    setup_n(3); /* 10 % of 3 rounds to 0, but one may always go */
    ck_assert_int_eq(fail_n(bes[0], 5, T0), 1);
    ck_assert_int_eq(fail_n(bes[1], 5, T0), 0);
    slb_backend_set_dispose(&set);

    setup_n(1); /* never the only backend */
    ck_assert_int_eq(fail_n(bes[0], 50, T0), 0);
    slb_backend_set_dispose(&set);

    setup_n(2);
    o.max_ejection_percent = 100; /* never all of them */
    ck_assert_int_eq(fail_n(bes[0], 5, T0), 1);
    ck_assert_int_eq(fail_n(bes[1], 5, T0), 0);
    slb_backend_set_dispose(&set);

    setup_n(10);
    o.max_ejection_percent = 50;
    int ejected = 0;
    for (int i = 0; i < 10; i++)
        ejected += fail_n(bes[i], 5, T0);
    ck_assert_int_eq(ejected, 5);
    slb_backend_set_dispose(&set);

    setup_n(10);
    o.max_ejection_percent = 0; /* off */
    ck_assert_int_eq(fail_n(bes[0], 5, T0), 0);
    slb_backend_set_dispose(&set);
}
END_TEST

START_TEST(test_uneject_and_backoff)
{
    uint32_t back = 99;
    setup_n(10);
    fail_n(bes[0], 5, T0);
    ck_assert_int_eq(slb_outlier_tick(&o, &set, T0 + 29999, &back), 0);
    ck_assert_uint_eq(back, 0);
    ck_assert(!slb_backend_usable(bes[0], T0 + 29999));
    ck_assert_int_eq(slb_outlier_tick(&o, &set, T0 + 30000, &back), 0);
    ck_assert_uint_eq(back, 1);
    ck_assert(slb_backend_usable(bes[0], T0 + 30000));
    ck_assert_uint_eq(bes[0]->ejected_until_ms, 0);
    ck_assert_uint_eq(bes[0]->usable_since_ms, T0 + 30000); /* slow start starts here */

    /* Second ejection right away: twice as long. */
    uint64_t t = T0 + 30000;
    fail_n(bes[0], 5, t);
    ck_assert_uint_eq(bes[0]->times_ejected, 2);
    ck_assert_uint_eq(bes[0]->ejected_until_ms, t + 60000);
    /* Capped at max_ejection_ms. */
    bes[0]->ejected_until_ms = 0;
    bes[0]->times_ejected = 50;
    fail_n(bes[0], 5, t);
    ck_assert_uint_eq(bes[0]->ejected_until_ms, t + 300000);

    /* Decay: each quiet interval takes one off. */
    slb_outlier_tick(&o, &set, t + 300000, &back);
    ck_assert_uint_eq(back, 1);
    ck_assert_uint_eq(bes[0]->times_ejected, 51);
    slb_outlier_tick(&o, &set, t + 310000, NULL);
    ck_assert_uint_eq(bes[0]->times_ejected, 50);
    slb_backend_set_dispose(&set);
}
END_TEST

/* An unejected backend ramps up under slow start. */
START_TEST(test_uneject_slow_start)
{
    struct slb_lb_options lo;
    struct slb_lb lb;
    setup_n(2);
    bes[0]->weight = 10;
    slb_lb_options_default(&lo);
    lo.slow_start_ms = 10000;
    ck_assert_int_eq(slb_lb_init(&lb, "weighted_round_robin", &lo, &set), 0);
    fail_n(bes[0], 5, T0);
    slb_outlier_tick(&o, &set, T0 + 30000, NULL);
    ck_assert_uint_eq(slb_lb_effective_weight(&lb, bes[0], T0 + 30000), 1);
    ck_assert_uint_eq(slb_lb_effective_weight(&lb, bes[0], T0 + 35000), 5);
    ck_assert_uint_eq(slb_lb_effective_weight(&lb, bes[0], T0 + 40000), 10);
    slb_lb_dispose(&lb);
    slb_backend_set_dispose(&set);
}
END_TEST

START_TEST(test_success_rate)
{
    setup_n(10);
    o.consecutive_failures = 0; /* only the success-rate detector */
    for (int i = 0; i < 10; i++) {
        bes[i]->interval_success = 99;
        bes[i]->interval_failure = 1;
    }
    bes[7]->interval_success = 50;
    bes[7]->interval_failure = 50;
    bes[8]->interval_success = 1; /* too few calls to judge */
    bes[8]->interval_failure = 9;
    ck_assert_int_eq(slb_outlier_tick(&o, &set, T0, NULL), 1);
    ck_assert(!slb_backend_usable(bes[7], T0));
    ck_assert(slb_backend_usable(bes[8], T0));
    for (int i = 0; i < 10; i++) /* counters reset every interval */
        ck_assert_uint_eq(bes[i]->interval_success + bes[i]->interval_failure, 0);

    /* All alike: nobody is an outlier. */
    for (int i = 0; i < 10; i++) {
        bes[i]->interval_success = 90;
        bes[i]->interval_failure = 10;
    }
    ck_assert_int_eq(slb_outlier_tick(&o, &set, T0 + 10000, NULL), 0);
    slb_backend_set_dispose(&set);

    /* Fewer than minimum_hosts with enough volume: no verdict. */
    setup_n(4);
    for (int i = 0; i < 4; i++) {
        bes[i]->interval_success = 100;
        bes[i]->interval_failure = 0;
    }
    bes[0]->interval_success = 0;
    bes[0]->interval_failure = 100;
    ck_assert_int_eq(slb_outlier_tick(&o, &set, T0, NULL), 0);
    o.success_rate_minimum_hosts = 4;
    bes[0]->interval_failure = 100;
    for (int i = 1; i < 4; i++)
        bes[i]->interval_success = 100;
    o.success_rate_stdev_factor = 1.0;
    ck_assert_int_eq(slb_outlier_tick(&o, &set, T0, NULL), 1);
    ck_assert(!slb_backend_usable(bes[0], T0));
    slb_backend_set_dispose(&set);
}
END_TEST

Suite *outlier_suite(void)
{
    Suite *s = suite_create("outlier");
    TCase *tc = tcase_create("outlier");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_consecutive_failures);
    tcase_add_test(tc, test_max_ejection_percent);
    tcase_add_test(tc, test_uneject_and_backoff);
    tcase_add_test(tc, test_uneject_slow_start);
    tcase_add_test(tc, test_success_rate);
    suite_add_tcase(s, tc);
    return s;
}
