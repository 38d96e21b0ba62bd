/*
 * lib/scrape.c: what /metrics and /clusters read, added up over a control
 * loop and two workers' loops (real loop contexts and clusters, the
 * workers' replicas listing the backends in another order), and the same
 * server read alone (no workers): its own values, unchanged.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "config.h"
#include "loop_ctx.h"
#include "scrape.h"
#include "server.h"
#include "worker.h"

#define A       "127.0.0.1:21000"
#define B       "127.0.0.1:21001"
#define N_LOOPS 3 /* [0] the control loop (srv.ctx), [1] and [2] workers */

static const char config_json[] =
    "{\"listeners\":[{\"name\":\"l\",\"address\":\"127.0.0.1:1\",\"default_cluster\":\"c\"}],"
    "\"clusters\":[{\"name\":\"c\",\"discovery\":{\"static\":[\"" A "\",\"" B "\"]}}]}";

static struct {
    uv_loop_t loop;
    struct slb_config *cfg;
    struct slb_server srv;
    struct slb_listener listener;
    struct slb_cluster clusters[N_LOOPS][1]; /* [0]: the control's (srv.clusters) */
    struct slb_loop_ctx wctx[N_LOOPS];       /* [0] unused: the control's is srv.ctx */
    struct slb_worker_listener wl[N_LOOPS];
    uint64_t calls[N_LOOPS][2 * SLB_STATS_GRPC_CODES]; /* [listener 0][cluster c, none][code] */
    struct slb_scrape_loop loops[N_LOOPS];
} S;

static void no_wake(struct slb_cluster_waiter *w) {}
static void no_timer(struct slb_deadline *d) {}

static struct slb_backend *backend(int k, const char *name)
{
    struct slb_backend *be = slb_cluster_find(&S.clusters[k][0], name);
    ck_assert_ptr_nonnull(be);
    return be;
}

static struct slb_method_stat *method(int k, const char *path)
{
    struct slb_method_stats *ms = &S.clusters[k][0].method_stats;
    return &ms->items[slb_method_stats_slot(ms, (const uint8_t *)path, strlen(path)) - 1];
}

static void setup(void)
{
    char err[SLB_CONFIG_ERRLEN];

    memset(&S, 0, sizeof(S));
    ck_assert_int_eq(uv_loop_init(&S.loop), 0);
    S.cfg = slb_config_load_string(config_json, "t.json", err, sizeof(err));
    ck_assert_msg(S.cfg != NULL, "%s", err);
    S.srv.cfg = S.cfg;
    S.srv.loop = &S.loop;
    S.srv.listeners = &S.listener;
    S.srv.n_listeners = 1;
    S.srv.clusters = S.clusters[0];
    S.srv.n_clusters = 1;
    S.listener.cfg = &S.cfg->listeners[0];
    for (int k = 0; k < N_LOOPS; k++) {
        struct slb_loop_ctx *ctx = k == 0 ? &S.srv.ctx : &S.wctx[k];
        struct slb_cluster *cl = &S.clusters[k][0];
        ck_assert_int_eq(slb_loop_ctx_init(ctx, &S.loop, no_timer), 0);
        ctx->stats.calls_by_code = S.calls[k];
        ctx->stats.calls_n_listeners = 1;
        ctx->stats.calls_n_clusters = 1;
        if (k == 0) {
            ck_assert_int_eq(slb_cluster_init(cl, ctx, &S.cfg->clusters[0], no_wake), 0);
        } else { /* a replica lists them as its snapshots bring them: here B first */
            ck_assert_int_eq(slb_cluster_init_replica(cl, ctx, &S.cfg->clusters[0], no_wake), 0);
            ck_assert_int_eq(slb_cluster_upsert(cl, B, 1, ""), 0);
            ck_assert_int_eq(slb_cluster_upsert(cl, A, 1, ""), 0);
        }
        ck_assert_int_eq(slb_method_stats_init(&cl->method_stats, 2), 0);
        S.loops[k] = (struct slb_scrape_loop){ctx, S.clusters[k], k == 0 ? NULL : &S.wl[k]};
    }
    ck_assert_str_eq(S.clusters[0][0].set.items[0]->name, A);
    ck_assert_str_eq(S.clusters[1][0].set.items[0]->name, B);
}

static void teardown(void)
{
    for (int k = 0; k < N_LOOPS; k++) {
        struct slb_loop_ctx *ctx = k == 0 ? &S.srv.ctx : &S.wctx[k];
        slb_method_stats_dispose(&S.clusters[k][0].method_stats);
        slb_cluster_dispose(&S.clusters[k][0]);
        slb_loop_ctx_close(ctx, NULL);
    }
    uv_run(&S.loop, UV_RUN_DEFAULT);
    for (int k = 0; k < N_LOOPS; k++)
        slb_loop_ctx_dispose(k == 0 ? &S.srv.ctx : &S.wctx[k]);
    slb_config_free(S.cfg);
    ck_assert_int_eq(uv_loop_close(&S.loop), 0);
}

/* Counts the call path would have made: the control loop's health checks, the workers' calls. */
static void count_some(void)
{
    struct slb_loop_ctx *w1 = &S.wctx[1], *w2 = &S.wctx[2];

    S.srv.ctx.stats.health_check_unimplemented = 1;
    w1->stats.calls_total = 5;
    w2->stats.calls_total = 7;
    w1->stats.hedges_cancelled = 1; /* the last field, after the calls_by_code block */
    w2->stats.hedges_cancelled = 2;
    S.calls[1][0] = 2; /* listener l, cluster c, OK */
    S.calls[2][0] = 3;
    S.calls[2][SLB_STATS_GRPC_CODES + 14] = 1; /* no cluster, UNAVAILABLE */
    w1->n_calls = 1;
    w2->n_calls = 2;
    w1->n_app_conns = w2->n_app_conns = 2;
    S.srv.ctx.max_app_conns = 100; /* the total; each worker enforces its share */
    w1->max_app_conns = w2->max_app_conns = 50;
    w1->io.read_pauses = 4;
    S.wl[1].set.n_conns = 2;
    S.wl[2].set.n_conns = 2;
    S.wl[2].set.tls_stats.handshake_failures = 3;
    S.clusters[1][0].stats.call_duration.counts[3] = 2;
    S.clusters[2][0].stats.call_duration.counts[3] = 3;
    S.clusters[2][0].stats.rejected_max_waiting = 1; /* the last field */
    S.clusters[0][0].tls_stats.handshakes = 1;       /* a health check's */
    S.clusters[2][0].tls_stats.handshakes = 2;
    S.clusters[1][0].n_waiting = 1;
    backend(0, A)->stats.health_changes = 1;
    backend(1, A)->stats.attempts[0] = 2;
    backend(2, A)->stats.attempts[0] = 3;
    backend(2, A)->stats.attempt_duration.counts[SLB_STATS_BUCKETS] = 1;
    backend(1, A)->outstanding = 1;
    backend(2, A)->outstanding = 1;
    backend(2, B)->outstanding = 1;
    /* connectivity: A READY on one worker; B in TRANSIENT_FAILURE on one, IDLE (never tried) on the other */
    backend(1, A)->state = SLB_BACKEND_CONNECTING;
    backend(2, A)->state = SLB_BACKEND_READY;
    backend(1, B)->state = SLB_BACKEND_TRANSIENT_FAILURE;
    backend(2, B)->state = SLB_BACKEND_IDLE;
    S.clusters[1][0].state = SLB_BACKEND_CONNECTING;
    S.clusters[2][0].state = SLB_BACKEND_READY;
    /* methods: each loop names the ones it saw first */
    method(1, "/p.S/A")->calls[0] = 2;
    method(1, "/p.S/B")->calls[0] = 1;
    method(2, "/p.S/B")->calls[0] = 3;
    method(2, "/p.S/C")->calls[0] = 1;
    S.clusters[2][0].method_stats.items[2].calls[0] = 4; /* "other" (cap 2) */
}

START_TEST(sums_over_the_workers)
{
    struct slb_scrape s;
    const struct slb_scrape_cluster *sc;
    const struct slb_method_stats *ms;
    uint64_t by_name[3] = {0};

    count_some();
    ck_assert_int_eq(slb_scrape_collect(&s, &S.srv, S.loops, N_LOOPS, 1, 1), 0);
    ck_assert_uint_eq(s.stats.calls_total, 12);
    ck_assert_uint_eq(s.stats.hedges_cancelled, 3);
    ck_assert_uint_eq(s.stats.health_check_unimplemented, 1);
    ck_assert_uint_eq(s.stats.calls_by_code[0], 5);
    ck_assert_uint_eq(s.stats.calls_by_code[SLB_STATS_GRPC_CODES + 14], 1);
    ck_assert_uint_eq(s.n_calls, 3);
    ck_assert_uint_eq(s.n_app_conns, 4);
    ck_assert_uint_eq(s.max_app_conns, 100);
    ck_assert_uint_eq(s.read_pauses, 4);
    ck_assert_uint_eq(s.listeners[0].n_conns, 4);
    ck_assert_uint_eq(s.listeners[0].tls_stats.handshake_failures, 3);
    sc = &s.clusters[0];
    ck_assert_uint_eq(sc->stats.call_duration.counts[3], 5);
    ck_assert_uint_eq(sc->stats.rejected_max_waiting, 1);
    ck_assert_uint_eq(sc->tls_stats.handshakes, 3);
    ck_assert_uint_eq(sc->n_waiting, 1);
    ck_assert_int_eq(sc->state, SLB_BACKEND_READY);
    /* backends in the control cluster's order, found by name in each replica */
    ck_assert_uint_eq(sc->backends[0].stats.attempts[0], 5);
    ck_assert_uint_eq(sc->backends[0].stats.attempt_duration.counts[SLB_STATS_BUCKETS], 1);
    ck_assert_uint_eq(sc->backends[0].stats.health_changes, 1);
    ck_assert_uint_eq(sc->backends[0].outstanding, 2);
    ck_assert_uint_eq(sc->backends[1].outstanding, 1);
    ck_assert_int_eq(sc->backends[0].state, SLB_BACKEND_READY);
    /* B: one worker tried and failed, the other never connected (it knows nothing): TRANSIENT_FAILURE */
    ck_assert_int_eq(sc->backends[1].state, SLB_BACKEND_TRANSIENT_FAILURE);
    ck_assert_int_eq(slb_scrape_backend_usable(backend(0, B), sc->backends[1].state, 0), 0);
    /* methods merged by name: every name seen anywhere stays its own series; the "other"s add up */
    ms = sc->methods;
    ck_assert_uint_eq(ms->n, 3);
    for (uint32_t j = 0; j < ms->n; j++) {
        const char *name = ms->items[j].name;
        ck_assert(name[5] >= 'A' && name[5] <= 'C');
        by_name[name[5] - 'A'] = ms->items[j].calls[0];
    }
    ck_assert_uint_eq(by_name[0], 2);
    ck_assert_uint_eq(by_name[1], 4);
    ck_assert_uint_eq(by_name[2], 1);
    ck_assert_uint_eq(ms->items[ms->cap].calls[0], 4);
    slb_scrape_end(&s);
}
END_TEST

/* A backend no worker is connected to: its state is the best the workers have, TRANSIENT_FAILURE, not usable. */
START_TEST(state_is_the_workers_best)
{
    struct slb_scrape s;

    backend(1, B)->state = SLB_BACKEND_TRANSIENT_FAILURE;
    backend(2, B)->state = SLB_BACKEND_TRANSIENT_FAILURE;
    S.clusters[1][0].state = S.clusters[2][0].state = SLB_BACKEND_TRANSIENT_FAILURE;
    ck_assert_int_eq(slb_scrape_collect(&s, &S.srv, S.loops, N_LOOPS, 1, 0), 0);
    ck_assert_int_eq(s.clusters[0].backends[1].state, SLB_BACKEND_TRANSIENT_FAILURE);
    ck_assert_int_eq(s.clusters[0].state, SLB_BACKEND_TRANSIENT_FAILURE);
    ck_assert_int_eq(slb_scrape_backend_usable(backend(0, B), s.clusters[0].backends[1].state, 0), 0);
    /* without methods merged: the control cluster's table */
    ck_assert_ptr_eq(s.clusters[0].methods, &S.clusters[0][0].method_stats);
    slb_scrape_end(&s);
    /* a worker that has not listed B yet (its snapshot is on the way): the other's state alone */
    slb_cluster_remove(&S.clusters[2][0], B);
    backend(1, B)->state = SLB_BACKEND_CONNECTING;
    ck_assert_int_eq(slb_scrape_collect(&s, &S.srv, S.loops, N_LOOPS, 1, 0), 0);
    ck_assert_int_eq(s.clusters[0].backends[1].state, SLB_BACKEND_CONNECTING);
    slb_scrape_end(&s);
}
END_TEST

/* No workers: the server's own loop alone, every value its own (what /metrics rendered before scrapes). */
START_TEST(one_loop_reads_the_server_alone)
{
    struct slb_scrape s;

    count_some();
    backend(0, A)->outstanding = 1;
    backend(0, A)->state = SLB_BACKEND_READY;
    S.srv.ctx.stats.calls_total = 9;
    S.calls[0][1] = 6;
    ck_assert_int_eq(slb_scrape_begin(&s, &S.srv, 1), 0); /* srv.workers is NULL */
    ck_assert_uint_eq(s.n_workers, 0);
    ck_assert_uint_eq(s.pause_ns, 0);
    ck_assert_uint_eq(s.stats.calls_total, 9);
    ck_assert_uint_eq(s.stats.health_check_unimplemented, 1);
    ck_assert_uint_eq(s.stats.calls_by_code[1], 6);
    ck_assert_uint_eq(s.stats.calls_by_code[0], 0);
    ck_assert_uint_eq(s.n_calls, 0);
    ck_assert_uint_eq(s.max_app_conns, 100);
    ck_assert_uint_eq(s.clusters[0].tls_stats.handshakes, 1);
    ck_assert_uint_eq(s.clusters[0].backends[0].outstanding, 1);
    ck_assert_uint_eq(s.clusters[0].backends[0].stats.attempts[0], 0);
    ck_assert_int_eq(s.clusters[0].backends[0].state, SLB_BACKEND_READY);
    ck_assert_int_eq(s.clusters[0].backends[1].state, backend(0, B)->state);
    ck_assert_int_eq(s.clusters[0].state, S.clusters[0][0].state);
    ck_assert_ptr_eq(s.clusters[0].methods, &S.clusters[0][0].method_stats);
    ck_assert_uint_eq(slb_scrape_backend_outstanding(&S.srv, &S.clusters[0][0], backend(0, A)), 1);
    slb_scrape_end(&s);
}
END_TEST

Suite *scrape_suite(void)
{
    Suite *s = suite_create("scrape");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, sums_over_the_workers);
    tcase_add_test(tc, state_is_the_workers_best);
    tcase_add_test(tc, one_loop_reads_the_server_alone);
    suite_add_tcase(s, tc);
    return s;
}
