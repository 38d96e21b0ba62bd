/* Passive outlier detection: consecutive failures, the ejection cap,
 * un-ejection and its slow-start stamp, the ejection multiplier's growth and
 * decay (gRFC A50), success rate, failure percentage, what counts as a
 * failure; then the cluster's timer with a real loop (interval evaluation,
 * ejections ending on time). */
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "backend.h"
#include "cluster.h"
#include "config.h"
#include "lb.h"
#include "loop_ctx.h"
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
    ck_assert_uint_eq(o.enforcing_success_rate, 100);
    ck_assert_uint_eq(o.failure_percentage_threshold, 85);
    ck_assert_uint_eq(o.failure_percentage_minimum_hosts, 5);
    ck_assert_uint_eq(o.failure_percentage_request_volume, 50);
    ck_assert_uint_eq(o.enforcing_failure_percentage, 0);
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
    setup_n(10);
    fail_n(bes[0], 5, T0);
    ck_assert_uint_eq(slb_outlier_next_uneject(&set), T0 + 30000);
    ck_assert_uint_eq(slb_outlier_uneject(&set, T0 + 29999), 0);
    ck_assert(!slb_backend_usable(bes[0], T0 + 29999));
    ck_assert_uint_eq(slb_outlier_uneject(&set, T0 + 30000), 1);
    ck_assert(slb_backend_usable(bes[0], T0 + 30000));
    ck_assert_uint_eq(bes[0]->ejected_until_ms, 0);
    ck_assert_uint_eq(slb_outlier_next_uneject(&set), 0);
    ck_assert_uint_eq(bes[0]->usable_since_ms, T0 + 30000); /* slow start starts here */

    /* Second ejection right away: twice as long (base x times ejected). */
    uint64_t t = T0 + 30000;
    fail_n(bes[0], 5, t);
    ck_assert_uint_eq(bes[0]->times_ejected, 2);
    ck_assert_uint_eq(bes[0]->ejections, 2);
    ck_assert_uint_eq(bes[0]->ejected_until_ms, t + 60000);
    /* Capped at max_ejection_ms. */
    bes[0]->ejected_until_ms = 0;
    bes[0]->times_ejected = 50;
    fail_n(bes[0], 5, t);
    ck_assert_uint_eq(bes[0]->ejected_until_ms, t + 300000);
    slb_backend_set_dispose(&set);
}
END_TEST

/*
 * gRFC A50: the multiplier goes up by one per ejection and down by one per
 * interval evaluation that finds the backend in, and in for all of the
 * interval that ended; never while it is out.
 */
START_TEST(test_multiplier_decays_only_while_in)
{
    uint64_t t = T0;

    setup_n(10);
    o.base_ejection_ms = 1000;
    o.interval_ms = 10000;
    fail_n(bes[0], 5, t); /* ejected for 1 s in the interval [T0, T0 + 10 s) */
    ck_assert_uint_eq(bes[0]->times_ejected, 1);
    slb_outlier_uneject(&set, t + 1000);
    slb_outlier_interval(&o, &set, t + 10000, NULL); /* it was out for part of it: no decay */
    ck_assert_uint_eq(bes[0]->times_ejected, 1);
    fail_n(bes[0], 5, t + 15000); /* out again: twice as long */
    ck_assert_uint_eq(bes[0]->times_ejected, 2);
    ck_assert_uint_eq(bes[0]->ejected_until_ms, t + 17000);
    slb_outlier_interval(&o, &set, t + 20000, NULL); /* ejected in it: no decay */
    ck_assert_uint_eq(bes[0]->times_ejected, 2);
    slb_outlier_uneject(&set, t + 20000);
    slb_outlier_interval(&o, &set, t + 30000, NULL); /* a whole interval in: one less */
    ck_assert_uint_eq(bes[0]->times_ejected, 1);
    slb_outlier_interval(&o, &set, t + 40000, NULL);
    ck_assert_uint_eq(bes[0]->times_ejected, 0);
    slb_outlier_interval(&o, &set, t + 50000, NULL);
    ck_assert_uint_eq(bes[0]->times_ejected, 0);
    ck_assert_uint_eq(bes[0]->ejections, 2); /* the metric never goes down */

    /* While out, an evaluation never decays it, however long the ejection. */
    bes[1]->times_ejected = 3;
    fail_n(bes[1], 5, t + 50000); /* 4 s */
    slb_outlier_interval(&o, &set, t + 51000, NULL);
    slb_outlier_interval(&o, &set, t + 52000, NULL);
    ck_assert_uint_eq(bes[1]->times_ejected, 4);
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
    slb_outlier_uneject(&set, T0 + 30000);
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
    ck_assert_int_eq(slb_outlier_interval(&o, &set, T0, NULL), 1);
    ck_assert(!slb_backend_usable(bes[7], T0));
    ck_assert(slb_backend_usable(bes[8], T0));
    for (int i = 0; i < 10; i++) /* the next interval starts from zero */
        ck_assert_uint_eq(bes[i]->interval_success + bes[i]->interval_failure, 0);

    /* All alike: nobody is an outlier. */
    for (int i = 0; i < 10; i++) {
        bes[i]->interval_success = 90;
        bes[i]->interval_failure = 10;
    }
    ck_assert_int_eq(slb_outlier_interval(&o, &set, T0 + 10000, NULL), 0);
    slb_backend_set_dispose(&set);

    /* Fewer than minimum_hosts with enough volume: no verdict. */
    setup_n(4);
    for (int i = 0; i < 4; i++) {
        bes[i]->interval_success = 100;
        bes[i]->interval_failure = 0;
    }
    bes[0]->interval_success = 0;
    bes[0]->interval_failure = 100;
    ck_assert_int_eq(slb_outlier_interval(&o, &set, T0, NULL), 0);
    o.success_rate_minimum_hosts = 4;
    bes[0]->interval_failure = 100;
    for (int i = 1; i < 4; i++)
        bes[i]->interval_success = 100;
    o.success_rate_stdev_factor = 1.0;
    ck_assert_int_eq(slb_outlier_interval(&o, &set, T0, NULL), 1);
    ck_assert(!slb_backend_usable(bes[0], T0));
    slb_backend_set_dispose(&set);

    /* enforcing_success_rate 0: judged, never ejected. */
    setup_n(5);
    o.enforcing_success_rate = 0;
    for (int i = 0; i < 5; i++)
        bes[i]->interval_success = 100;
    bes[0]->interval_success = 0;
    bes[0]->interval_failure = 100;
    ck_assert_int_eq(slb_outlier_interval(&o, &set, T0, NULL), 0);
    slb_backend_set_dispose(&set);
}
END_TEST

static void load(struct slb_backend *be, uint32_t ok, uint32_t failed)
{
    be->interval_success = ok;
    be->interval_failure = failed;
}

START_TEST(test_failure_percentage)
{
    setup_n(5);
    o.success_rate_minimum_hosts = 0; /* only this detector */
    load(bes[0], 10, 90);
    load(bes[1], 3, 30); /* 91 % but under request_volume (50) */
    load(bes[2], 100, 0);
    ck_assert_int_eq(slb_outlier_interval(&o, &set, T0, NULL), 0); /* enforcing_failure_percentage 0: off */
    o.enforcing_failure_percentage = 100;
    load(bes[0], 10, 90);
    load(bes[1], 3, 30);
    load(bes[2], 16, 84); /* under the 85 % threshold */
    ck_assert_int_eq(slb_outlier_interval(&o, &set, T0, NULL), 1);
    ck_assert(!slb_backend_usable(bes[0], T0));
    ck_assert(slb_backend_usable(bes[1], T0));
    ck_assert(slb_backend_usable(bes[2], T0));
    slb_backend_set_dispose(&set);

    setup_n(4); /* fewer than failure_percentage_minimum_hosts (5) */
    o.success_rate_minimum_hosts = 0;
    o.enforcing_failure_percentage = 100;
    load(bes[0], 0, 100);
    ck_assert_int_eq(slb_outlier_interval(&o, &set, T0, NULL), 0);
    slb_backend_set_dispose(&set);
}
END_TEST

/* The interval detectors honour max_ejection_percent, counting ejections already in place. */
START_TEST(test_max_ejection_percent_in_interval)
{
    setup_n(10);
    o.max_ejection_percent = 30;
    o.enforcing_failure_percentage = 100;
    o.success_rate_minimum_hosts = 0;
    fail_n(bes[9], 5, T0); /* one out already */
    for (int i = 0; i < 6; i++)
        load(bes[i], 0, 100);
    ck_assert_int_eq(slb_outlier_interval(&o, &set, T0, NULL), 2);
    int out = 0;
    for (int i = 0; i < 10; i++)
        out += !slb_backend_usable(bes[i], T0);
    ck_assert_int_eq(out, 3);
    ck_assert_uint_eq(bes[2]->ejections_capped + bes[3]->ejections_capped + bes[4]->ejections_capped +
                          bes[5]->ejections_capped,
                      4); /* 6 outliers, 2 went: 4 kept in by the cap */
    slb_backend_set_dispose(&set);
}
END_TEST

START_TEST(test_status_classification)
{
    /* -1 (no status: reset, lost, refused) and the 5xx-like statuses fail; the rest are answers */
    static const int failed[] = {-1, 2, 4, 12, 13, 14, 15};
    static const int answered[] = {0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 16};
    for (size_t i = 0; i < sizeof(failed) / sizeof(failed[0]); i++)
        ck_assert_msg(slb_outlier_status_failed(failed[i]), "status %d", failed[i]);
    for (size_t i = 0; i < sizeof(answered) / sizeof(answered[0]); i++)
        ck_assert_msg(!slb_outlier_status_failed(answered[i]), "status %d", answered[i]);
}
END_TEST

/* ---- the cluster's timer, with a real loop ---- */

static struct {
    uv_loop_t loop;
    struct slb_loop_ctx ctx;
    struct slb_config *cfg;
    struct slb_cluster cl;
    uv_timer_t feeder;
    int feeds;
    uint64_t t0;
} W;

static void on_call_timer(struct slb_deadline *d) {}

static void no_wake(struct slb_cluster_waiter *w) {}

static void world_up(const char *outlier_json, int n)
{
    char json[2048], err[SLB_CONFIG_ERRLEN];
    int len = snprintf(json, sizeof(json),
                       "{\"listeners\":[{\"address\":\"127.0.0.1:1\",\"default_cluster\":\"c\"}],"
                       "\"clusters\":[{\"name\":\"c\",\"discovery\":{\"static\":[");
    for (int i = 0; i < n; i++)
        len += snprintf(json + len, sizeof(json) - len, "%s\"127.0.0.1:%d\"", i ? "," : "", 21000 + i);
    snprintf(json + len, sizeof(json) - len, "]},\"outlier_detection\":%s}]}", outlier_json);
    memset(&W, 0, sizeof(W));
    ck_assert_int_eq(uv_loop_init(&W.loop), 0);
    ck_assert_int_eq(slb_loop_ctx_init(&W.ctx, &W.loop, on_call_timer), 0);
    W.cfg = slb_config_load_string(json, "t.json", err, sizeof(err));
    ck_assert_msg(W.cfg != NULL, "%s", err);
    ck_assert_int_eq(slb_cluster_init(&W.cl, &W.ctx, &W.cfg->clusters[0], no_wake), 0);
    uv_update_time(&W.loop);
    W.t0 = uv_now(&W.loop);
}

static void world_down(void)
{
    slb_cluster_dispose(&W.cl);
    slb_loop_ctx_close(&W.ctx, NULL);
    uv_run(&W.loop, UV_RUN_DEFAULT);
    slb_loop_ctx_dispose(&W.ctx);
    slb_config_free(W.cfg);
    ck_assert_int_eq(uv_loop_close(&W.loop), 0);
}

static void on_run_end(uv_timer_t *t)
{
    uv_stop(t->loop); /* the feeder may still be active */
}

/* Runs the loop for ms (the cluster's timers are unref'd: a timer of ours keeps it going). */
static void world_run(uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&W.loop, &t);
    uv_timer_start(&t, on_run_end, ms, 0);
    uv_run(&W.loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&W.loop, UV_RUN_NOWAIT);
}

/* Every 50 ms: 5 results per backend, all failed on backend 0, all good elsewhere. */
static void on_feed(uv_timer_t *t)
{
    for (uint32_t i = 0; i < W.cl.set.n; i++)
        for (int k = 0; k < 5; k++)
            slb_cluster_report(&W.cl, W.cl.set.items[i], i != 0);
    if (++W.feeds == 16)
        uv_timer_stop(t);
}

/*
 * Success rate is judged on interval_ms worth of calls: 5 calls per backend
 * every 50 ms reach success_rate_request_volume (20) only over a whole
 * 300 ms interval (not over 100 ms), so backend 0 goes at the first
 * evaluation, and not before.
 */
START_TEST(test_cluster_judges_every_interval)
{
    world_up("{\"interval_ms\":300,\"success_rate_request_volume\":20,\"consecutive_failures\":1000000,"
             "\"base_ejection_ms\":10000}",
             5);
    uv_timer_init(&W.loop, &W.feeder);
    uv_timer_start(&W.feeder, on_feed, 50, 50);
    world_run(250);
    ck_assert(!slb_outlier_ejected(W.cl.set.items[0], uv_now(&W.loop)));
    ck_assert_uint_ge(W.cl.set.items[0]->interval_failure, 15); /* counting since the start, not per 100 ms */
    world_run(200);
    ck_assert(slb_outlier_ejected(W.cl.set.items[0], uv_now(&W.loop)));
    for (uint32_t i = 1; i < W.cl.set.n; i++)
        ck_assert(!slb_outlier_ejected(W.cl.set.items[i], uv_now(&W.loop)));
    uv_close((uv_handle_t *)&W.feeder, NULL);
    world_down();
}
END_TEST

/*
 * The cluster's timer ends an ejection on time (not at the next interval),
 * and the multiplier survives the short time the backend is back in: the
 * second ejection, 300 ms after the first ended, lasts twice as long.
 */
START_TEST(test_cluster_ejection_time_grows)
{
    struct slb_backend *be;
    uint64_t now;

    world_up("{\"interval_ms\":1000,\"consecutive_failures\":3,\"base_ejection_ms\":100,"
             "\"max_ejection_percent\":50}",
             2);
    be = W.cl.set.items[0];
    for (int k = 0; k < 3; k++)
        slb_cluster_report(&W.cl, be, 0);
    now = uv_now(&W.loop);
    ck_assert_uint_eq(be->ejected_until_ms, now + 100);
    world_run(150);
    ck_assert_uint_eq(be->ejected_until_ms, 0); /* the timer ended it */
    ck_assert_uint_le(be->usable_since_ms, now + 130);
    world_run(300);
    for (int k = 0; k < 3; k++)
        slb_cluster_report(&W.cl, be, 0);
    now = uv_now(&W.loop);
    ck_assert_uint_eq(be->times_ejected, 2);
    ck_assert_uint_eq(be->ejected_until_ms, now + 200);
    world_down();
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
    tcase_add_test(tc, test_multiplier_decays_only_while_in);
    tcase_add_test(tc, test_success_rate);
    tcase_add_test(tc, test_failure_percentage);
    tcase_add_test(tc, test_max_ejection_percent_in_interval);
    tcase_add_test(tc, test_status_classification);
    tcase_add_test(tc, test_cluster_judges_every_interval);
    tcase_add_test(tc, test_cluster_ejection_time_grows);
    suite_add_tcase(s, tc);
    return s;
}
