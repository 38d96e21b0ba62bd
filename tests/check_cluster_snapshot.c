/*
 * lib/cluster_snapshot.c: a control loop's cluster and a worker's replica on
 * one test loop: the replica lists what the snapshot lists (added, updated,
 * removed), takes health, drain, ejection and ramps from it, wakes its
 * waiters when a backend may have become usable, and keeps least_request's
 * shared calls in flight right when the control loop lists a backend anew.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "cluster_snapshot.h"
#include "config.h"
#include "loop_ctx.h"

static struct {
    uv_loop_t loop;
    struct slb_loop_ctx ctx;
    struct slb_config *cfg;
    struct slb_cluster control, replica;
    int woken;
} W;

static void on_call_timer(struct slb_deadline *d) {}
static void no_wake(struct slb_cluster_waiter *w) {}
static void count_wake(struct slb_cluster_waiter *w)
{
    W.woken++;
}

static void world_up(const char *cluster_extra)
{
    char json[1024], err[SLB_CONFIG_ERRLEN];

    snprintf(json, sizeof(json),
             "{\"listeners\":[{\"address\":\"127.0.0.1:1\",\"default_cluster\":\"c\"}],"
             "\"clusters\":[{\"name\":\"c\",\"discovery\":{\"static\":[\"127.0.0.1:21001\",\"127.0.0.1:21002\"]}%s}]}",
             cluster_extra);
    memset(&W, 0, sizeof(W));
    ck_assert_int_eq(uv_loop_init(&W.loop), 0);
    ck_assert_int_eq(slb_loop_ctx_init(&W.ctx, &W.loop, on_call_timer), 0);
    W.cfg = slb_config_load_string(json, "t.json", err, sizeof(err));
    ck_assert_msg(W.cfg != NULL, "%s", err);
    ck_assert_int_eq(slb_cluster_init(&W.control, &W.ctx, &W.cfg->clusters[0], no_wake), 0);
    ck_assert_int_eq(slb_cluster_share(&W.control), 0);
    ck_assert_int_eq(slb_cluster_init_replica(&W.replica, &W.ctx, &W.cfg->clusters[0], count_wake), 0);
    uv_update_time(&W.loop);
}

static void world_down(void)
{
    slb_cluster_dispose(&W.replica);
    slb_cluster_dispose(&W.control);
    slb_loop_ctx_close(&W.ctx, NULL);
    uv_run(&W.loop, UV_RUN_DEFAULT);
    slb_loop_ctx_dispose(&W.ctx);
    slb_config_free(W.cfg);
    ck_assert_int_eq(uv_loop_close(&W.loop), 0);
}

/* Publishes the control cluster to the replica if it changed; 1 if it did. */
static int publish(void)
{
    struct slb_cluster_snapshot *snap;

    if (!slb_cluster_snapshot_due(&W.control))
        return 0;
    ck_assert_ptr_nonnull(snap = slb_cluster_snapshot_take(&W.control));
    slb_cluster_apply_snapshot(&W.replica, snap);
    slb_cluster_snapshot_unref(snap);
    return 1;
}

static void run_turn(void)
{
    uv_run(&W.loop, UV_RUN_NOWAIT);
}

START_TEST(test_membership_and_state)
{
    struct slb_backend *cb, *rb;
    struct slb_cluster_waiter w = {0};

    world_up("");
    ck_assert_uint_eq(W.replica.set.n, 0); /* a replica has no backends of its own */
    ck_assert_int_eq(publish(), 1);
    ck_assert_uint_eq(W.replica.set.n, 2);
    ck_assert_int_eq(publish(), 0); /* nothing changed: nothing to publish */
    rb = slb_cluster_find(&W.replica, "127.0.0.1:21001");
    cb = slb_cluster_find(&W.control, "127.0.0.1:21001");
    ck_assert_ptr_nonnull(rb);
    ck_assert_ptr_eq(rb->shared, cb->shared); /* one block for the backend's copies */

    /* added, reweighted, removed */
    ck_assert_int_eq(slb_cluster_upsert(&W.control, "127.0.0.1:21003", 5, "z1"), 0);
    ck_assert_int_eq(slb_cluster_upsert(&W.control, "127.0.0.1:21001", 7, NULL), 0);
    slb_cluster_remove(&W.control, "127.0.0.1:21002");
    ck_assert_int_eq(publish(), 1);
    ck_assert_uint_eq(W.replica.set.n, 2);
    ck_assert_ptr_null(slb_cluster_find(&W.replica, "127.0.0.1:21002"));
    ck_assert_uint_eq(slb_cluster_find(&W.replica, "127.0.0.1:21003")->weight, 5);
    ck_assert_str_eq(slb_cluster_find(&W.replica, "127.0.0.1:21003")->zone, "z1");
    ck_assert_uint_eq(rb->weight, 7);

    /* drain, then undrain with a call waiting: the replica's waiter is woken */
    slb_cluster_set_drain(&W.control, cb, SLB_DRAIN_ADMIN, 1);
    ck_assert_int_eq(publish(), 1);
    ck_assert_uint_eq(rb->drained, SLB_DRAIN_ADMIN);
    ck_assert_int_eq(slb_cluster_wait(&W.replica, &w), 0);
    slb_cluster_set_drain(&W.control, cb, SLB_DRAIN_ADMIN, 0);
    ck_assert_int_eq(publish(), 1);
    ck_assert_uint_eq(rb->drained, 0);
    run_turn();
    ck_assert_int_eq(W.woken, 1);
    ck_assert_uint_eq(rb->usable_since_ms, cb->usable_since_ms); /* slow start ramps as on the control loop */

    /* an ejection (the control loop's) reaches the replica */
    cb->ejected_until_ms = uv_now(&W.loop) + 60000;
    W.control.set.usable_version++;
    ck_assert_int_eq(publish(), 1);
    ck_assert_uint_eq(rb->ejected_until_ms, cb->ejected_until_ms);
    ck_assert_int_eq(slb_backend_usable(rb, uv_now(&W.loop)), 0);
    world_down();
}
END_TEST

START_TEST(test_health_pending_wakes)
{
    struct slb_backend *rb;
    struct slb_cluster_waiter w = {0};

    world_up(",\"health_check\":{\"interval_ms\":1000}");
    ck_assert_int_eq(publish(), 1);
    /* the control loop's checks have not answered: the replica waits for them too */
    ck_assert_uint_eq(slb_cluster_first_pending(&W.replica), 2);
    ck_assert_ptr_null(W.replica.set.items[0]->health_check); /* no checks of its own */
    ck_assert_int_eq(slb_cluster_wait(&W.replica, &w), 0);
    ck_assert_uint_eq(W.control.remote_waiting, 0); /* no primary set: not a worker's replica here */
    for (uint32_t i = 0; i < W.control.set.n; i++) {
        W.control.set.items[i]->health = SLB_HEALTH_SERVING;
        W.control.n_health_pending--;
    }
    W.control.set.usable_version++;
    ck_assert_int_eq(publish(), 1);
    ck_assert_uint_eq(slb_cluster_first_pending(&W.replica), 0);
    rb = slb_cluster_find(&W.replica, "127.0.0.1:21001");
    ck_assert_int_eq(rb->health, SLB_HEALTH_SERVING);
    run_turn();
    ck_assert_int_eq(W.woken, 1);
    world_down();
}
END_TEST

START_TEST(test_shared_load_moves)
{
    struct slb_backend *rb;
    struct slb_backend_shared *old;

    world_up(",\"policy\":{\"least_request\":{}}");
    ck_assert_int_eq(publish(), 1);
    rb = slb_cluster_find(&W.replica, "127.0.0.1:21001");
    ck_assert_int_eq(rb->share_load, 1);
    slb_backend_call_started(rb);
    slb_backend_call_started(rb);
    ck_assert_uint_eq(slb_backend_load(rb), 2);
    old = rb->shared;
    slb_backend_shared_ref(old);
    /* the control loop drops and lists the address again in one turn: a new shared block */
    slb_cluster_remove(&W.control, "127.0.0.1:21001");
    ck_assert_int_eq(slb_cluster_upsert(&W.control, "127.0.0.1:21001", 1, NULL), 0);
    ck_assert_int_eq(publish(), 1);
    ck_assert_ptr_eq(slb_cluster_find(&W.replica, "127.0.0.1:21001"), rb);
    ck_assert_ptr_ne(rb->shared, old);
    ck_assert_uint_eq(old->outstanding, 0); /* this replica's calls moved with it */
    ck_assert_uint_eq(slb_backend_load(rb), 2);
    slb_backend_call_ended(rb);
    slb_backend_call_ended(rb);
    ck_assert_uint_eq(slb_backend_load(rb), 0); /* no wrap below zero */
    slb_backend_shared_unref(old);
    world_down();
}
END_TEST

/* Outlier results of a replica land in the shared block; the control loop takes them and ejects. */
static int notified;
static void on_notify(struct slb_cluster *cl, int what)
{
    notified |= what;
}

START_TEST(test_outlier_shared)
{
    struct slb_backend *rb, *cb;

    world_up(",\"outlier_detection\":{\"consecutive_failures\":3}");
    ck_assert_int_eq(publish(), 1);
    W.replica.notify_control = on_notify;
    notified = 0;
    rb = slb_cluster_find(&W.replica, "127.0.0.1:21001");
    cb = slb_cluster_find(&W.control, "127.0.0.1:21001");
    slb_cluster_report(&W.replica, rb, 1);
    slb_cluster_report(&W.replica, rb, 0);
    slb_cluster_report(&W.replica, rb, 0);
    ck_assert_int_eq(notified, 0);
    ck_assert_uint_eq(rb->consecutive_failures, 0); /* the replica judges nothing itself */
    slb_cluster_report(&W.replica, rb, 0);
    ck_assert_int_eq(notified, SLB_NOTIFY_OUTLIER);
    slb_cluster_collect_shared(&W.control);
    ck_assert_uint_eq(cb->interval_success, 1);
    ck_assert_uint_eq(cb->interval_failure, 3);
    ck_assert_uint_gt(cb->ejected_until_ms, uv_now(&W.loop));
    ck_assert_int_eq(publish(), 1);
    ck_assert_uint_eq(rb->ejected_until_ms, cb->ejected_until_ms);
    world_down();
}
END_TEST

Suite *cluster_snapshot_suite(void)
{
    Suite *s = suite_create("cluster_snapshot");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_membership_and_state);
    tcase_add_test(tc, test_health_pending_wakes);
    tcase_add_test(tc, test_shared_load_moves);
    tcase_add_test(tc, test_outlier_shared);
    suite_add_tcase(s, tc);
    return s;
}
