/*
 * lib/h2_upstream.c: the pool's bookkeeping on a real loop and real sockets
 * (a local listener that sends SETTINGS and then stays silent), reported through a test
 * handler table.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "backend.h"
#include "config.h"
#include "h2_upstream.h"
#include "loop_ctx.h"

static struct {
    uv_loop_t loop;
    uv_tcp_t listener;
    struct slb_loop_ctx ctx;
    struct slb_config *cfg;
    struct slb_backend *be;
    int ready, unavailable;
    struct slb_upstream *last_uc;
    struct slb_h2_stream streams[4];
    int unavailable_err;
} U;

/* The silent server's SETTINGS allow 0 concurrent streams (set before world_new). */
static int settings_no_streams;

static void on_ready(struct slb_pool_waiter *w, struct slb_upstream *uc)
{
    U.ready++;
    U.last_uc = uc;
}

static void on_unavailable(struct slb_pool_waiter *w, int err)
{
    U.unavailable++;
    U.unavailable_err = err;
}

static void on_lost(struct slb_h2_stream *s, int err) {}

static const struct slb_upstream_handler test_handler = {
    .on_ready = on_ready,
    .on_unavailable = on_unavailable,
    .on_lost = on_lost,
};

static size_t no_unconsumed(struct slb_h2_stream *s)
{
    return 0;
}

static const struct slb_h2_stream_ops stream_ops = {.take_unconsumed = no_unconsumed};

static void on_accept(uv_stream_t *server, int status)
{
    uv_tcp_t *c = malloc(sizeof(*c));
    uv_tcp_init(server->loop, c);
    static const char settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0}; /* an empty SETTINGS frame */
    /* SETTINGS_MAX_CONCURRENT_STREAMS (3) = 0 */
    static const char settings_mcs0[15] = {0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0};
    uv_buf_t b = settings_no_streams ? uv_buf_init((char *)settings_mcs0, sizeof(settings_mcs0))
                                     : uv_buf_init((char *)settings, sizeof(settings));

    c->data = &U; /* ours: closed at teardown */
    if (uv_accept(server, (uv_stream_t *)c) != 0) {
        uv_close((uv_handle_t *)c, (uv_close_cb)free);
        return;
    }
    /* the server half of the handshake, then silence until teardown */
    uv_try_write((uv_stream_t *)c, &b, 1);
}

static void close_any(uv_handle_t *h, void *arg)
{
    if (h->data == &U && !uv_is_closing(h))
        uv_close(h, h == (uv_handle_t *)&U.listener ? NULL : (uv_close_cb)free);
}

static void run_until(int *counter, int value)
{
    for (int i = 0; i < 2000 && *counter < value; i++)
        uv_run(&U.loop, UV_RUN_ONCE);
    ck_assert_int_ge(*counter, value);
}

/* A client session that cannot be created leaves the pool as it was:
 * the connection was never listed, so nothing is unlinked or uncounted. */
static const nghttp2_nv request_nv[] = {
    {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
    {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
    {(uint8_t *)":path", (uint8_t *)"/a.B/C", 5, 6, 0},
    {(uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0},
};

/* A loop, a silent local server, a backend for it and its pool. */
static struct slb_upstream_pool *world_new(void)
{
    struct sockaddr_in sa;
    int salen = sizeof(sa);
    char json[512], err[SLB_CONFIG_ERRLEN], addr[64];
    struct slb_upstream_pool *pool;

    memset(&U, 0, sizeof(U));
    ck_assert_int_eq(uv_loop_init(&U.loop), 0);
    uv_tcp_init(&U.loop, &U.listener);
    U.listener.data = &U;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    ck_assert_int_eq(uv_tcp_bind(&U.listener, (struct sockaddr *)&sa, 0), 0);
    ck_assert_int_eq(uv_listen((uv_stream_t *)&U.listener, 16, on_accept), 0);
    uv_tcp_getsockname(&U.listener, (struct sockaddr *)&sa, &salen);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sa.sin_port));
    snprintf(json, sizeof(json),
             "{\"listeners\":[{\"address\":\"127.0.0.1:1\",\"default_cluster\":\"c\"}],"
             "\"clusters\":[{\"name\":\"c\",\"discovery\":{\"static\":[\"%s\"]},\"policy\":{\"round_robin\":{}},"
             "\"max_streams_per_connection\":1,\"max_connections_per_backend\":4,\"max_pending_per_backend\":2,"
             "\"max_requests_per_connection\":2}]}",
             addr);
    U.cfg = slb_config_load_string(json, "t.json", err, sizeof(err));
    ck_assert_msg(U.cfg != NULL, "%s", err);
    ck_assert_int_eq(slb_loop_ctx_init(&U.ctx, &U.loop, NULL), 0);
    U.ctx.up_handler = &test_handler;
    U.be = slb_backend_new(addr, 1);
    ck_assert_ptr_nonnull(U.be);
    pool = slb_upstream_pool_get(&U.ctx, U.be, &U.cfg->clusters[0]);
    ck_assert_ptr_nonnull(pool);
    return pool;
}

/* Stop: every connection of the pool closes, and the loop context lets go. */
static void world_free(void)
{
    slb_loop_ctx_close(&U.ctx, NULL);
    slb_backend_unref(U.be);
    uv_walk(&U.loop, close_any, NULL);
    uv_run(&U.loop, UV_RUN_DEFAULT);
    ck_assert_uint_eq(U.ctx.io.n_handles, 0);
    slb_loop_ctx_dispose(&U.ctx);
    slb_config_free(U.cfg);
    ck_assert_int_eq(uv_loop_close(&U.loop), 0);
}

START_TEST(session_that_fails_to_start_leaves_the_pool_alone)
{
    struct slb_upstream_pool *pool = world_new();
    struct slb_pool_waiter w[3];

    /* one connection with its one stream slot taken */
    for (int i = 0; i < 3; i++)
        slb_list_init(&w[i].link), w[i].pool = NULL;
    slb_upstream_pool_queue(pool, &w[0]);
    run_until(&U.ready, 1);
    ck_assert_uint_eq(pool->n_conns, 1);
    slb_h2_stream_init(&U.streams[0], &stream_ops);
    ck_assert_int_eq(slb_upstream_request(U.last_uc, &U.streams[0], request_nv, 4, 0), 0);
    /* the next request needs a second connection, whose session cannot be made */
    slb_h2_mem_fail_next(1000);
    slb_upstream_pool_queue(pool, &w[1]);
    slb_h2_mem_fail_next(0);
    for (int i = 0; i < 5; i++)
        uv_run(&U.loop, UV_RUN_NOWAIT);
    ck_assert_uint_eq(pool->n_conns, 1);
    ck_assert_uint_eq(pool->n_connecting, 0);
    ck_assert(!slb_list_empty(&pool->conns));
    ck_assert_ptr_eq(slb_list_first(&pool->conns, struct slb_upstream, link), U.last_uc);
    ck_assert_int_eq(U.last_uc->conn.closing, 0);

    slb_upstream_pool_unqueue(&w[1]);
    world_free();
}
END_TEST

/* The body of a stream whose user let go is never read through the user's
 * memory: the data provider finds no stream and resets it. */
static int body_reads;

static size_t body_peek(struct slb_h2_stream *s, const uint8_t **p, int *end)
{
    static const uint8_t bytes[8] = "abcdefgh";
    body_reads++;
    *p = bytes;
    *end = 0;
    return sizeof(bytes);
}

static void body_sent(struct slb_h2_stream *s, size_t n) {}

static const struct slb_h2_stream_ops body_ops = {
    .peek = body_peek, .sent = body_sent, .trailers = NULL, .take_unconsumed = no_unconsumed};

START_TEST(data_provider_never_reaches_a_released_stream)
{
    struct slb_upstream_pool *pool = world_new();
    struct slb_pool_waiter w;
    struct slb_h2_stream *s = malloc(sizeof(*s));

    slb_list_init(&w.link);
    w.pool = NULL;
    slb_upstream_pool_queue(pool, &w);
    run_until(&U.ready, 1);
    slb_h2_stream_init(s, &body_ops);
    ck_assert_int_eq(slb_upstream_request(U.last_uc, s, request_nv, 4, 1), 0);
    /* let go before the body was ever asked for, then free (and poison) the memory */
    slb_upstream_release(s, 0);
    memset(s, 0xA5, sizeof(*s));
    free(s);
    for (int i = 0; i < 5; i++)
        uv_run(&U.loop, UV_RUN_NOWAIT);
    ck_assert_int_eq(body_reads, 0);
    ck_assert_int_eq(U.last_uc->conn.closing, 0); /* the stream is reset, not the connection */
    world_free();
}
END_TEST

/* The wait queue is bounded: past max_pending_per_backend the pool refuses
 * at once (no callback follows), and the refused waiter is not linked. */
START_TEST(pool_queue_is_bounded)
{
    struct slb_upstream_pool *pool = world_new();
    struct slb_pool_waiter w[3];

    for (int i = 0; i < 3; i++)
        slb_list_init(&w[i].link), w[i].pool = NULL;
    /* the connection is still coming up: they wait */
    ck_assert_int_eq(slb_upstream_pool_queue(pool, &w[0]), 0);
    ck_assert_int_eq(slb_upstream_pool_queue(pool, &w[1]), 0);
    ck_assert_int_eq(slb_upstream_pool_queue(pool, &w[2]), SLB_ELIMIT);
    ck_assert_ptr_null(w[2].pool);
    ck_assert_uint_eq(pool->n_waiting, 2);
    ck_assert_int_eq(U.ready + U.unavailable, 0);
    /* the connection is up (the test handler opens no stream: both go), and the queue takes more */
    run_until(&U.ready, 2);
    ck_assert_uint_eq(pool->n_waiting, 0);
    ck_assert_int_eq(slb_upstream_pool_queue(pool, &w[2]), 0);
    world_free();
}
END_TEST

/* A backend whose SETTINGS allow 0 concurrent streams holds no request: it
 * is a connect failure (backoff, TRANSIENT_FAILURE) and the waiter is handed
 * back at once to go elsewhere, instead of waiting in the queue forever. */
START_TEST(backend_allowing_no_streams_is_a_connect_failure)
{
    struct slb_upstream_pool *pool;
    struct slb_pool_waiter w;

    settings_no_streams = 1;
    pool = world_new();
    slb_list_init(&w.link);
    w.pool = NULL;
    ck_assert_int_eq(slb_upstream_pool_queue(pool, &w), 0);
    run_until(&U.unavailable, 1);
    settings_no_streams = 0;
    ck_assert_int_eq(U.ready, 0);
    ck_assert_int_eq(U.unavailable_err, SLB_ENOSTREAMS);
    ck_assert_ptr_null(w.pool);
    ck_assert_uint_eq(pool->n_waiting, 0);
    ck_assert_uint_eq(pool->n_conns, 0);
    ck_assert(slb_upstream_pool_in_backoff(pool));
    ck_assert_int_eq(U.be->state, SLB_BACKEND_TRANSIENT_FAILURE);
    ck_assert_uint_eq(U.ctx.stats.upstream_no_streams, 1);
    world_free();
}
END_TEST

/* max_requests_per_connection (2 here): the connection that carried its
 * calls takes no more, the next request gets a new connection, and the old
 * one closes when its last stream is let go. */
START_TEST(connection_is_replaced_after_max_requests)
{
    struct slb_upstream_pool *pool = world_new();
    struct slb_pool_waiter w[3];
    struct slb_upstream *first;

    for (int i = 0; i < 3; i++) {
        slb_list_init(&w[i].link), w[i].pool = NULL;
        slb_h2_stream_init(&U.streams[i], &stream_ops);
    }
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(slb_upstream_pool_queue(pool, &w[i]), 0);
        run_until(&U.ready, i + 1);
        ck_assert_int_eq(slb_upstream_request(U.last_uc, &U.streams[i], request_nv, 4, 0), 0);
        slb_upstream_release(&U.streams[i], NGHTTP2_CANCEL); /* one slot (max_streams_per_connection 1) */
    }
    first = U.last_uc;
    ck_assert_uint_eq(first->n_requests, 2);
    ck_assert_int_eq(first->goaway, 1); /* retired at its 2nd request */
    ck_assert_uint_eq(U.ctx.stats.upstream_conns_recycled, 1);
    ck_assert_int_eq(first->conn.closing, 1); /* idle once the stream was let go */
    ck_assert_int_eq(slb_upstream_pool_queue(pool, &w[2]), 0);
    run_until(&U.ready, 3);
    ck_assert_ptr_ne(U.last_uc, first);
    ck_assert_uint_eq(pool->n_conns, 1);
    ck_assert_uint_eq(pool->n_draining, 0);
    world_free();
}
END_TEST

/* Lets the loop's clock pass ms (nothing runs meanwhile). */
static void clock_reach(uint64_t ms)
{
    while (uv_now(&U.loop) < ms) {
        uv_sleep(2);
        uv_update_time(&U.loop);
    }
}

/* The pool's backend failed its connect (SETTINGS allowing 0 streams): TRANSIENT_FAILURE, in backoff. */
static struct slb_upstream_pool *world_in_backoff(struct slb_pool_waiter *w)
{
    struct slb_upstream_pool *pool;

    settings_no_streams = 1;
    pool = world_new();
    slb_list_init(&w->link);
    w->pool = NULL;
    ck_assert_int_eq(slb_upstream_pool_queue(pool, w), 0);
    run_until(&U.unavailable, 1);
    ck_assert_int_eq(U.be->state, SLB_BACKEND_TRANSIENT_FAILURE);
    ck_assert(slb_upstream_pool_in_backoff(pool));
    ck_assert_uint_eq(pool->n_conns, 0);
    return pool;
}

/* A probe during the backoff (1 s here) reaches a backend that is back: the
 * backend stays TRANSIENT_FAILURE while it connects, then READY with its
 * backoff over. Probes keep their distance from the last attempt and are
 * never two at once. */
START_TEST(probe_reaches_a_returning_backend_early)
{
    struct slb_pool_waiter w;
    struct slb_upstream_pool *pool = world_in_backoff(&w);
    uint64_t due, interval = U.cfg->clusters[0].backoff.probe_interval_ms;

    /* right after the failed attempt: not yet */
    due = slb_upstream_pool_probe(pool);
    ck_assert_uint_gt(due, uv_now(&U.loop));
    ck_assert_uint_le(due, uv_now(&U.loop) + interval * 3 / 2);
    ck_assert_uint_eq(U.ctx.stats.upstream_probes, 0);
    ck_assert_uint_eq(pool->n_conns, 0);

    clock_reach(due);
    settings_no_streams = 0; /* the backend is back */
    due = slb_upstream_pool_probe(pool);
    ck_assert_uint_eq(U.ctx.stats.upstream_probes, 1);
    ck_assert_uint_eq(pool->n_connecting, 1);
    ck_assert_int_eq(U.be->state, SLB_BACKEND_TRANSIENT_FAILURE); /* until it connects */
    ck_assert_uint_ge(due, uv_now(&U.loop) + interval);
    clock_reach(due);
    slb_upstream_pool_probe(pool); /* one on its way already */
    ck_assert_uint_eq(U.ctx.stats.upstream_probes, 1);
    ck_assert_uint_eq(pool->n_conns, 1);

    for (int i = 0; i < 2000 && U.be->state != SLB_BACKEND_READY; i++)
        uv_run(&U.loop, UV_RUN_ONCE);
    ck_assert_int_eq(U.be->state, SLB_BACKEND_READY);
    ck_assert(!slb_upstream_pool_in_backoff(pool));
    ck_assert_uint_eq(pool->backoff_ms, U.cfg->clusters[0].backoff.initial_ms);
    ck_assert_uint_eq(U.ctx.stats.upstream_probe_recoveries, 1);
    ck_assert_uint_eq(slb_upstream_pool_probe(pool), UINT64_MAX); /* nothing to hurry */
    world_free();
}
END_TEST

/* A probe that fails leaves the backoff as it was (no longer, no later),
 * and probe_interval_ms 0 turns probes off. */
START_TEST(failed_probe_leaves_the_backoff_alone)
{
    struct slb_pool_waiter w;
    struct slb_upstream_pool *pool = world_in_backoff(&w);
    uint64_t until = pool->backoff_until_ms, next = pool->backoff_ms;

    clock_reach(pool->probe_at_ms);
    slb_upstream_pool_probe(pool);
    ck_assert_uint_eq(U.ctx.stats.upstream_probes, 1);
    for (int i = 0; i < 2000 && pool->n_conns > 0; i++)
        uv_run(&U.loop, UV_RUN_ONCE);
    ck_assert_uint_eq(pool->n_conns, 0);
    ck_assert_uint_eq(U.ctx.stats.upstream_no_streams, 2); /* the probe heard SETTINGS allowing 0 streams */
    ck_assert_uint_eq(pool->backoff_until_ms, until);
    ck_assert_uint_eq(pool->backoff_ms, next);
    ck_assert_int_eq(U.be->state, SLB_BACKEND_TRANSIENT_FAILURE);
    ck_assert_uint_eq(U.ctx.stats.upstream_probe_recoveries, 0);

    U.cfg->clusters[0].backoff.probe_interval_ms = 0;
    clock_reach(pool->probe_at_ms);
    ck_assert_uint_eq(slb_upstream_pool_probe(pool), UINT64_MAX);
    ck_assert_uint_eq(U.ctx.stats.upstream_probes, 1);
    settings_no_streams = 0;
    world_free();
}
END_TEST

Suite *upstream_suite(void)
{
    Suite *s = suite_create("upstream");
    TCase *tc = tcase_create("upstream");

    tcase_add_test(tc, session_that_fails_to_start_leaves_the_pool_alone);
    tcase_add_test(tc, data_provider_never_reaches_a_released_stream);
    tcase_add_test(tc, pool_queue_is_bounded);
    tcase_add_test(tc, backend_allowing_no_streams_is_a_connect_failure);
    tcase_add_test(tc, connection_is_replaced_after_max_requests);
    tcase_add_test(tc, probe_reaches_a_returning_backend_early);
    tcase_add_test(tc, failed_probe_leaves_the_backoff_alone);
    suite_add_tcase(s, tc);
    return s;
}
