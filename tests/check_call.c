/*
 * lib/call.c driven through fake transports: the call's state machine with
 * no sockets. The fakes record what the call asks of the layers below
 * (responses, resets, window updates, queued waiters, requests, releases);
 * the tests play the transports' and cluster's events into the handler
 * tables, as h2_downstream, h2_upstream and the cluster do.
 *
 * Header blocks come from a real pair of in-memory nghttp2 sessions, since
 * the call keeps headers as nghttp2 rcbufs.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "call.h"
#include "cluster.h"
#include "config.h"
#include "loop_ctx.h"
#include "route.h"

/* ---- fake transports ---- */

struct fake_pool {
    struct slb_upstream_pool base; /* only waiters is used */
    int backoff;
    int full; /* the queue refuses (max_pending_per_backend) */
};

static struct {
    struct fake_pool pools[2];
    int fake_down_conn, fake_up_conn; /* addresses that mark a stream as bound */
    int responds, status, has_body, resets, resumes, requests, req_has_body, releases;
    uint32_t reset_code, rst_code;
    size_t consumed_down, consumed_up;           /* stream windows reopened */
    size_t conn_consumed_down, conn_consumed_up; /* connection windows reopened */
    size_t app_conn_consumed;                    /* ... of the app's connection, after the budget held them */
    char timeout[32];
    int previous; /* grpc-previous-rpc-attempts of the last request, -1: none */
    int32_t next_sid;
} F;

static int nv_status(const nghttp2_nv *nv, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (nv[i].namelen == 11 && memcmp(nv[i].name, "grpc-status", 11) == 0)
            return slb_grpc_status_parse(nv[i].value, nv[i].valuelen);
    return -1;
}

static int fake_respond(struct slb_h2_stream *s, const nghttp2_nv *nv, size_t n, int has_body)
{
    F.responds++;
    F.status = nv_status(nv, n);
    F.has_body = has_body;
    return 0;
}

static void fake_reset(struct slb_h2_stream *s, uint32_t code)
{
    F.resets++;
    F.reset_code = code;
}

static void fake_resume(struct slb_h2_stream *s)
{
    F.resumes++;
}

static void fake_consume_stream(struct slb_h2_stream *s, size_t n)
{
    if (s->conn == (struct slb_conn *)&F.fake_up_conn)
        F.consumed_up += n;
    else
        F.consumed_down += n;
}

static void fake_consume_connection(struct slb_h2_stream *s, size_t n)
{
    if (s->conn == (struct slb_conn *)&F.fake_up_conn)
        F.conn_consumed_up += n;
    else
        F.conn_consumed_down += n;
}

static void fake_consume_downstream(struct slb_downstream *dc, size_t n)
{
    F.app_conn_consumed += n;
}

static struct slb_upstream_pool *fake_pool_of(struct slb_loop_ctx *ctx, struct slb_backend *be,
                                              const struct slb_config_cluster *cfg)
{
    return &F.pools[be->name[strlen(be->name) - 1] - '1'].base;
}

static int fake_in_backoff(const struct slb_upstream_pool *pool)
{
    return ((const struct fake_pool *)pool)->backoff;
}

static int fake_queue(struct slb_upstream_pool *pool, struct slb_pool_waiter *w)
{
    if (((struct fake_pool *)pool)->full)
        return SLB_ELIMIT;
    slb_list_push_back(&pool->waiters, &w->link);
    w->pool = pool;
    return 0;
}

static void fake_unqueue(struct slb_pool_waiter *w)
{
    if (w->pool == NULL)
        return;
    slb_list_remove(&w->link);
    w->pool = NULL;
}

static int fake_request(struct slb_upstream *uc, struct slb_h2_stream *s, const nghttp2_nv *nv, size_t n, int has_body)
{
    F.requests++;
    F.req_has_body = has_body;
    F.timeout[0] = '\0';
    F.previous = -1;
    for (size_t i = 0; i < n; i++) {
        if (nv[i].namelen == 12 && memcmp(nv[i].name, "grpc-timeout", 12) == 0)
            snprintf(F.timeout, sizeof(F.timeout), "%.*s", (int)nv[i].valuelen, nv[i].value);
        if (nv[i].namelen == 26 && memcmp(nv[i].name, "grpc-previous-rpc-attempts", 26) == 0)
            F.previous = atoi((const char *)nv[i].value);
    }
    s->conn = (struct slb_conn *)&F.fake_up_conn;
    s->sid = F.next_sid += 2;
    s->open = 1;
    return 0;
}

static void fake_release(struct slb_h2_stream *s, uint32_t rst_code)
{
    F.releases++;
    if (s->open)
        F.rst_code = rst_code;
    F.consumed_up += s->ops->take_unconsumed(s);
    s->conn = NULL;
    s->open = 0;
}

static const char *fake_name(const struct slb_upstream *uc)
{
    return "fake";
}

static const struct slb_call_transport fake_io = {
    .respond = fake_respond,
    .reset = fake_reset,
    .resume = fake_resume,
    .consume_connection = fake_consume_connection,
    .consume_stream = fake_consume_stream,
    .consume_downstream = fake_consume_downstream,
    .pool = fake_pool_of,
    .in_backoff = fake_in_backoff,
    .queue = fake_queue,
    .unqueue = fake_unqueue,
    .request = fake_request,
    .release = fake_release,
    .backend_name = fake_name,
};

/* ---- header blocks from real nghttp2 sessions ---- */

static nghttp2_session *hf_client, *hf_server;
static struct slb_h2_stream *hf_target;
static int hf_response; /* 0: request headers (downstream handler), 1: response (upstream handler) */
static int32_t hf_sid;

static int hf_on_header(nghttp2_session *s, const nghttp2_frame *f, nghttp2_rcbuf *name, nghttp2_rcbuf *value,
                        uint8_t flags, void *user)
{
    if (hf_target == NULL)
        return 0;
    if (!hf_response)
        return slb_call_downstream_handler.on_header(hf_target, name, value, f->headers.cat == NGHTTP2_HCAT_HEADERS);
    return slb_call_upstream_handler.on_header(hf_target, name, value);
}

static int hf_on_begin(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        hf_sid = f->hd.stream_id;
    return 0;
}

static void pump(nghttp2_session *from, nghttp2_session *to)
{
    const uint8_t *d;
    ssize_t n;

    while ((n = nghttp2_session_mem_send(from, &d)) > 0)
        ck_assert_int_eq(nghttp2_session_mem_recv(to, d, (size_t)n), n);
}

static void pump_both(void)
{
    for (int i = 0; i < 3; i++) {
        pump(hf_client, hf_server);
        pump(hf_server, hf_client);
    }
}

static void hf_init(void)
{
    nghttp2_session_callbacks *cbs;

    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback2(cbs, hf_on_header);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, hf_on_begin);
    nghttp2_session_client_new(&hf_client, cbs, NULL);
    nghttp2_session_server_new(&hf_server, cbs, NULL);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(hf_client, NGHTTP2_FLAG_NONE, NULL, 0);
    nghttp2_submit_settings(hf_server, NGHTTP2_FLAG_NONE, NULL, 0);
    pump_both();
}

static void hf_free(void)
{
    nghttp2_session_del(hf_client);
    nghttp2_session_del(hf_server);
}

#define NV(n, v)                                                                                                       \
    {                                                                                                                  \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE                             \
    }

/* Request header fields (or trailer fields) delivered to the call's app-side handler. */
static void feed_request(struct slb_h2_stream *down, const nghttp2_nv *nv, size_t n, int trailer)
{
    hf_response = 0;
    if (!trailer) {
        hf_target = down;
        nghttp2_submit_request(hf_client, NULL, nv, n, NULL, NULL);
        pump_both();
    } else {
        /* trailer fields: a second header block on a request stream */
        static const nghttp2_nv req[] = {NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/x"),
                                         NV(":authority", "a")};
        int32_t sid;
        hf_target = NULL;
        sid = nghttp2_submit_headers(hf_client, NGHTTP2_FLAG_NONE, -1, NULL, req, 4, NULL);
        pump_both();
        hf_target = down;
        nghttp2_submit_headers(hf_client, NGHTTP2_FLAG_END_STREAM, sid, NULL, nv, n, NULL);
        pump_both();
    }
    hf_target = NULL;
    nghttp2_submit_rst_stream(hf_server, NGHTTP2_FLAG_NONE, hf_sid, NGHTTP2_NO_ERROR);
    pump_both();
}

/* Response header fields (or trailers) delivered to the call's backend-side handler. */
static void feed_response(struct slb_h2_stream *up, const nghttp2_nv *nv, size_t n, int trailer)
{
    static const nghttp2_nv req[] = {NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/x"),
                                     NV(":authority", "a")};

    hf_response = 1;
    hf_target = NULL;
    if (!trailer) {
        nghttp2_submit_request(hf_client, NULL, req, 4, NULL, NULL);
        pump_both();
    }
    hf_target = up;
    nghttp2_submit_headers(hf_server, trailer ? NGHTTP2_FLAG_END_STREAM : NGHTTP2_FLAG_NONE, hf_sid, NULL, nv, n, NULL);
    pump_both();
    hf_target = NULL;
}

/* ---- the world of one test ---- */

static struct {
    uv_loop_t loop;
    struct slb_loop_ctx ctx;
    struct slb_config *cfg;
    struct slb_cluster cl;
    struct slb_routes routes;
    struct slb_downstream dc;
    int32_t next_down_sid;
} T;

static const char config_json[] =
    "{\"listeners\":[{\"address\":\"127.0.0.1:1\",\"default_cluster\":\"c\"}],"
    "\"clusters\":[{\"name\":\"c\",\"discovery\":{\"static\":[\"127.0.0.1:1\",\"127.0.0.1:2\"]},"
    "\"policy\":{\"round_robin\":{}},\"wait_for_ready_ms\":5000,"
    "\"outlier_detection\":{\"consecutive_failures\":1000000},\"service_config\":{\"methodConfig\":[{"
    "\"name\":[{\"service\":\"t.Retry\"}],\"retryPolicy\":{\"maxAttempts\":3,\"initialBackoff\":\"0.01s\","
    "\"maxBackoff\":\"0.01s\",\"backoffMultiplier\":1,\"retryableStatusCodes\":[\"UNAVAILABLE\"]}},"
    "{\"name\":[{\"service\":\"t.Recv\"}],\"retryPolicy\":{\"maxAttempts\":2,\"initialBackoff\":\"0.01s\","
    "\"maxBackoff\":\"0.01s\",\"backoffMultiplier\":1,\"retryableStatusCodes\":[\"UNAVAILABLE\"],"
    "\"perAttemptRecvTimeout\":\"0.1s\"}},"
    "{\"name\":[{\"service\":\"t.Hedge\"}],\"hedgingPolicy\":{\"maxAttempts\":2,\"hedgingDelay\":\"0.02s\","
    "\"nonFatalStatusCodes\":[\"UNAVAILABLE\"]}},"
    "{\"name\":[{\"service\":\"t.HedgeSlow\"}],\"hedgingPolicy\":{\"maxAttempts\":2,\"hedgingDelay\":\"10s\","
    "\"nonFatalStatusCodes\":[\"UNAVAILABLE\"]}}]}}]}";

static void setup(void)
{
    char err[SLB_CONFIG_ERRLEN];

    memset(&F, 0, sizeof(F));
    F.status = -1;
    F.next_sid = 1;
    for (int i = 0; i < 2; i++)
        slb_list_init(&F.pools[i].base.waiters);
    ck_assert_int_eq(uv_loop_init(&T.loop), 0);
    ck_assert_int_eq(slb_loop_ctx_init(&T.ctx, &T.loop, slb_call_on_timer), 0);
    T.ctx.call_io = &fake_io;
    T.cfg = slb_config_load_string(config_json, "t.json", err, sizeof(err));
    ck_assert_msg(T.cfg != NULL, "%s", err);
    ck_assert_int_eq(slb_cluster_init(&T.cl, &T.ctx, &T.cfg->clusters[0], slb_call_wake), 0);
    T.routes = (struct slb_routes){.v = NULL, .n = 0, .default_cluster = &T.cl};
    memset(&T.dc, 0, sizeof(T.dc));
    T.dc.ctx = &T.ctx;
    T.dc.routes = &T.routes;
    slb_list_init(&T.dc.streams);
    slb_list_init(&T.dc.ctx_link);
    T.next_down_sid = 1;
    hf_init();
}

static void teardown(void)
{
    slb_list_remove(&T.dc.ctx_link);
    hf_free();
    slb_cluster_dispose(&T.cl);
    slb_loop_ctx_close(&T.ctx, NULL);
    uv_run(&T.loop, UV_RUN_DEFAULT);
    slb_call_free_list_drain(&T.ctx);
    slb_loop_ctx_dispose(&T.ctx);
    slb_config_free(T.cfg);
    ck_assert_int_eq(uv_loop_close(&T.loop), 0);
}

static struct slb_call *open_call(void)
{
    struct slb_h2_stream *s = slb_call_downstream_handler.open(&T.dc);

    ck_assert_ptr_nonnull(s);
    s->conn = (struct slb_conn *)&F.fake_down_conn;
    s->sid = T.next_down_sid += 2;
    s->open = 1;
    slb_list_push_back(&T.dc.streams, &s->link); /* as the transport binds it */
    return slb_container_of(s, struct slb_call, down);
}

/* The app's stream closes (the transport unbinds it first, returning unconsumed window). */
static void close_down(struct slb_call *call, uint32_t code)
{
    struct slb_h2_stream *s = &call->down;

    F.consumed_down += s->ops->take_unconsumed(s);
    s->conn = NULL;
    s->open = 0;
    slb_list_remove(&s->link);
    slb_call_downstream_handler.on_close(s, code);
}

/* Sends request headers for path (timeout: grpc-timeout or NULL), ending the request when end. */
static void send_headers(struct slb_call *call, const char *path, const char *timeout, int end)
{
    nghttp2_nv nv[7] = {NV(":method", "POST"),
                        NV(":scheme", "http"),
                        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), NGHTTP2_NV_FLAG_NONE},
                        NV(":authority", "a"),
                        NV("content-type", "application/grpc"),
                        NV("te", "trailers")};
    size_t n = 6;

    if (timeout != NULL)
        nv[n++] =
            (nghttp2_nv){(uint8_t *)"grpc-timeout", (uint8_t *)timeout, 12, strlen(timeout), NGHTTP2_NV_FLAG_NONE};
    feed_request(&call->down, nv, n, 0);
    slb_call_downstream_handler.on_headers_done(&call->down, 0, end);
}

static struct fake_pool *queued_pool(struct slb_call *call)
{
    return (struct fake_pool *)call->cur->pool_wait.pool;
}

/* The pool has a stream for the call. */
static void stream_ready(struct slb_call *call)
{
    struct slb_pool_waiter *w = &call->cur->pool_wait;

    ck_assert_int_eq(call->state, SLB_CALL_QUEUED);
    ck_assert_ptr_nonnull(w->pool);
    fake_unqueue(w);
    slb_call_upstream_handler.on_ready(w, NULL);
}

static void respond_headers(struct slb_call *call)
{
    static const nghttp2_nv nv[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    feed_response(&call->cur->up, nv, 2, 0);
    slb_call_upstream_handler.on_headers_done(&call->cur->up, 0, 0);
}

static void respond_status_only(struct slb_call *call, const char *status)
{
    nghttp2_nv nv[] = {NV(":status", "200"),
                       NV("content-type", "application/grpc"),
                       {(uint8_t *)"grpc-status", (uint8_t *)status, 11, strlen(status), NGHTTP2_NV_FLAG_NONE}};
    feed_response(&call->cur->up, nv, 3, 0);
    slb_call_upstream_handler.on_headers_done(&call->cur->up, 0, 1);
}

static void respond_trailers(struct slb_call *call, const char *status)
{
    nghttp2_nv nv[] = {{(uint8_t *)"grpc-status", (uint8_t *)status, 11, strlen(status), NGHTTP2_NV_FLAG_NONE}};
    feed_response(&call->cur->up, nv, 1, 1);
    slb_call_upstream_handler.on_headers_done(&call->cur->up, 1, 1);
}

/* The app-side transport sends what the call's response body offers: bytes, then trailers. */
static size_t drain_response(struct slb_call *call, int *end, int *trailer_status)
{
    const uint8_t *p;
    size_t total = 0, n;

    *end = 0;
    while ((n = call->down.ops->peek(&call->down, &p, end)) > 0) {
        call->down.ops->sent(&call->down, n);
        total += n;
        if (*end)
            break;
    }
    if (*end && trailer_status != NULL) {
        nghttp2_nv nv[SLB_HDRS_MAX];
        char scratch[640];
        size_t k = call->down.ops->trailers(&call->down, nv, scratch, sizeof(scratch));
        *trailer_status = nv_status(nv, k);
    }
    return total;
}

/* One turn of the loop that runs the timers that are due, and no later ones
 * (UV_RUN_ONCE may block until the next timer and run it too, skipping the
 * state a test waits for). */
static void run_turn(void)
{
    uv_sleep(1);
    uv_ref(slb_deadline_handle(&T.ctx.timers)); /* unreferenced: the loop would not run at all */
    uv_run(&T.loop, UV_RUN_NOWAIT);
}

static void run_until_state(struct slb_call *call, int state, int max_ms)
{
    uint64_t until = uv_now(&T.loop) + (uint64_t)max_ms;

    while (call->state != state && uv_now(&T.loop) < until)
        run_turn();
    ck_assert_str_eq(slb_call_state_name(call->state), slb_call_state_name(state));
}

/* Nothing of the call is left anywhere. */
static void assert_all_released(void)
{
    ck_assert_uint_eq(T.ctx.n_calls, 0);
    ck_assert_uint_eq(T.cl.n_calls, 0);
    ck_assert_uint_eq(T.cl.n_waiting, 0);
    ck_assert_uint_eq(T.ctx.timers.n, 0);
    for (int i = 0; i < 2; i++) {
        ck_assert(slb_list_empty(&F.pools[i].base.waiters));
        ck_assert_uint_eq(T.cl.set.items[i]->outstanding, 0);
    }
}

/* ---- tests ---- */

START_TEST(unary_call_end_to_end)
{
    struct slb_call *call = open_call();
    int end, status;
    const uint8_t *p;

    ck_assert_int_eq(call->state, SLB_CALL_HEADERS);
    send_headers(call, "/t.S/M", "1S", 0);
    ck_assert_int_eq(call->state, SLB_CALL_QUEUED);
    /* request flow control: the app's window reopens only as bytes go upstream */
    ck_assert_int_eq(slb_call_downstream_handler.on_data(&call->down, (const uint8_t *)"0123456789", 10), 0);
    slb_call_downstream_handler.on_end(&call->down);
    ck_assert_uint_eq(F.consumed_down, 0);
    ck_assert_uint_eq(F.conn_consumed_down, 10); /* the app's connection window reopens on arrival */
    stream_ready(call);
    ck_assert_int_eq(call->state, SLB_CALL_SENT);
    ck_assert_int_eq(F.req_has_body, 1);
    ck_assert_msg(F.timeout[strlen(F.timeout) - 1] == 'm' && atoi(F.timeout) > 900 && atoi(F.timeout) <= 1000,
                  "the backend gets the time left, not %s", F.timeout);
    ck_assert_uint_eq(call->cur->up.ops->peek(&call->cur->up, &p, &end), 10);
    ck_assert_int_eq(end, 1);
    call->cur->up.ops->sent(&call->cur->up, 6);
    ck_assert_uint_eq(F.consumed_down, 6);
    call->cur->up.ops->sent(&call->cur->up, 4);
    ck_assert_uint_eq(F.consumed_down, 10);

    respond_headers(call);
    ck_assert_int_eq(call->state, SLB_CALL_STREAMING);
    ck_assert_int_eq(F.responds, 1);
    ck_assert_int_eq(F.has_body, 1);
    /* response flow control: the backend's window reopens as the app takes the bytes */
    ck_assert_int_eq(slb_call_upstream_handler.on_data(&call->cur->up, (const uint8_t *)"hello", 5), 0);
    ck_assert_uint_eq(F.consumed_up, 0);
    ck_assert_uint_eq(F.conn_consumed_up, 5); /* the backend connection's window is never held by one call */
    ck_assert_uint_eq(drain_response(call, &end, NULL), 5);
    ck_assert_int_eq(end, 0);
    ck_assert_uint_eq(F.consumed_up, 5);
    respond_trailers(call, "0");
    ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
    slb_call_upstream_handler.on_close(&call->cur->up, NGHTTP2_NO_ERROR);
    ck_assert_ptr_null(call->cur->up.conn); /* drained: released at once */
    ck_assert_uint_eq(drain_response(call, &end, &status), 0);
    ck_assert_int_eq(end, 1);
    ck_assert_int_eq(status, 0);
    slb_call_downstream_handler.on_response_sent(&call->down);
    ck_assert_int_eq(F.resets, 0);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

START_TEST(retry_after_unavailable_goes_to_another_backend)
{
    struct slb_call *call = open_call();
    struct fake_pool *first;

    send_headers(call, "/t.Retry/M", NULL, 1);
    first = queued_pool(call);
    stream_ready(call);
    respond_status_only(call, "14");
    ck_assert_int_eq(call->state, SLB_CALL_BACKOFF);
    ck_assert_int_eq(F.responds, 0); /* nothing reached the app */
    ck_assert_uint_eq(F.rst_code, NGHTTP2_CANCEL);
    run_until_state(call, SLB_CALL_QUEUED, 1000);
    ck_assert_ptr_ne(queued_pool(call), first);
    stream_ready(call);
    respond_status_only(call, "0");
    ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
    ck_assert_int_eq(F.status, 0);
    ck_assert_int_eq(call->retries, 1);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

START_TEST(refused_stream_is_replayed_with_the_whole_request)
{
    struct slb_call *call = open_call();
    const uint8_t *p;
    int end;

    send_headers(call, "/t.S/M", NULL, 0);
    slb_call_downstream_handler.on_data(&call->down, (const uint8_t *)"abcdef", 6);
    slb_call_downstream_handler.on_end(&call->down);
    stream_ready(call);
    call->cur->up.ops->sent(&call->cur->up, call->cur->up.ops->peek(&call->cur->up, &p, &end));
    ck_assert_uint_eq(F.consumed_down, 6);
    /* the backend's GOAWAY refused the stream: the same request goes out again */
    call->cur->up.open = 0;
    slb_call_upstream_handler.on_close(&call->cur->up, NGHTTP2_REFUSED_STREAM);
    ck_assert_int_eq(call->state, SLB_CALL_QUEUED);
    stream_ready(call);
    ck_assert_uint_eq(call->cur->up.ops->peek(&call->cur->up, &p, &end), 6);
    ck_assert(memcmp(p, "abcdef", 6) == 0);
    ck_assert_int_eq(end, 1);
    call->cur->up.ops->sent(&call->cur->up, 6);
    ck_assert_uint_eq(F.consumed_down, 6); /* a replay reopens nothing twice */
    close_down(call, NGHTTP2_CANCEL);
    ck_assert_uint_eq(F.rst_code, NGHTTP2_CANCEL); /* the app's cancel reaches the backend */
    assert_all_released();
}
END_TEST

START_TEST(lost_connection_fails_with_unavailable)
{
    struct slb_call *call = open_call();

    send_headers(call, "/t.S/M", NULL, 1);
    stream_ready(call);
    call->cur->up.conn = NULL; /* the transport unbinds it */
    call->cur->up.open = 0;
    slb_call_upstream_handler.on_lost(&call->cur->up, UV_ECONNRESET);
    ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
    ck_assert_int_eq(F.status, SLB_GRPC_UNAVAILABLE);
    ck_assert_int_eq(F.has_body, 0); /* trailers-only */
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

START_TEST(backend_reset_while_streaming_ends_with_error_trailers)
{
    struct slb_call *call = open_call();
    int end, status;

    send_headers(call, "/t.S/M", NULL, 1);
    stream_ready(call);
    respond_headers(call);
    slb_call_upstream_handler.on_data(&call->cur->up, (const uint8_t *)"xy", 2);
    call->cur->up.open = 0;
    slb_call_upstream_handler.on_close(&call->cur->up, NGHTTP2_CANCEL);
    ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
    ck_assert_uint_eq(drain_response(call, &end, &status), 2); /* what was buffered still goes out */
    ck_assert_int_eq(end, 1);
    ck_assert_int_eq(status, SLB_GRPC_CANCELLED);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

/* Brings a new call to the given state. */
static struct slb_call *call_in_state(int state)
{
    struct slb_call *call = open_call();

    if (state == SLB_CALL_HEADERS)
        return call;
    if (state == SLB_CALL_WAIT_BACKEND) {
        F.pools[0].backoff = F.pools[1].backoff = 1;
        send_headers(call, "/t.S/M", NULL, 1);
        F.pools[0].backoff = F.pools[1].backoff = 0;
        ck_assert_int_eq(call->state, SLB_CALL_WAIT_BACKEND);
        return call;
    }
    send_headers(call, state == SLB_CALL_BACKOFF ? "/t.Retry/M" : "/t.S/M", "10S", 1);
    if (state == SLB_CALL_QUEUED)
        return call;
    stream_ready(call);
    if (state == SLB_CALL_SENT)
        return call;
    if (state == SLB_CALL_BACKOFF) {
        respond_status_only(call, "14");
        ck_assert_int_eq(call->state, SLB_CALL_BACKOFF);
        return call;
    }
    respond_headers(call);
    slb_call_upstream_handler.on_data(&call->cur->up, (const uint8_t *)"data", 4);
    if (state == SLB_CALL_FINISHING)
        respond_trailers(call, "0");
    ck_assert_int_eq(call->state, state);
    return call;
}

START_TEST(cancel_from_the_app_in_every_state)
{
    for (int state = SLB_CALL_HEADERS; state < SLB_CALL_CLOSED; state++) {
        struct slb_call *call = call_in_state(state);
        int had_stream = call->cur->up.open;
        F.rst_code = 0;
        close_down(call, NGHTTP2_CANCEL);
        if (had_stream)
            ck_assert_uint_eq(F.rst_code, NGHTTP2_CANCEL);
        assert_all_released();
    }
}
END_TEST

START_TEST(cancel_from_the_backend_in_every_state_with_a_stream)
{
    static const int states[] = {SLB_CALL_SENT, SLB_CALL_STREAMING, SLB_CALL_FINISHING};

    for (size_t i = 0; i < SLB_ARRAY_SIZE(states); i++) {
        struct slb_call *call = call_in_state(states[i]);
        int end, status = -1;
        F.status = -1;
        call->cur->up.open = 0;
        slb_call_upstream_handler.on_close(&call->cur->up, NGHTTP2_CANCEL);
        ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
        drain_response(call, &end, &status);
        if (states[i] == SLB_CALL_SENT)
            ck_assert_int_eq(F.status, SLB_GRPC_CANCELLED); /* trailers-only */
        else if (states[i] == SLB_CALL_STREAMING)
            ck_assert_int_eq(status, SLB_GRPC_CANCELLED);
        else
            ck_assert_int_eq(status, 0); /* the response was complete: the reset changes nothing */
        close_down(call, NGHTTP2_NO_ERROR);
        assert_all_released();
    }
}
END_TEST

START_TEST(deadline_expires_in_every_waiting_state)
{
    static const int states[] = {SLB_CALL_WAIT_BACKEND, SLB_CALL_QUEUED, SLB_CALL_SENT, SLB_CALL_STREAMING};

    for (size_t i = 0; i < SLB_ARRAY_SIZE(states); i++) {
        struct slb_call *call = open_call();
        int end, status = -1;
        uint64_t t0;

        F.status = -1;
        F.pools[0].backoff = F.pools[1].backoff = states[i] == SLB_CALL_WAIT_BACKEND;
        t0 = uv_now(&T.loop);
        send_headers(call, "/t.S/M", "30m", 1);
        F.pools[0].backoff = F.pools[1].backoff = 0;
        if (states[i] >= SLB_CALL_SENT)
            stream_ready(call);
        if (states[i] >= SLB_CALL_STREAMING)
            respond_headers(call);
        ck_assert_int_eq(call->state, states[i]);
        run_until_state(call, SLB_CALL_FINISHING, 2000);
        ck_assert_uint_ge(uv_now(&T.loop) - t0, 29);
        drain_response(call, &end, &status);
        ck_assert_int_eq(states[i] == SLB_CALL_STREAMING ? status : F.status, SLB_GRPC_DEADLINE_EXCEEDED);
        ck_assert_ptr_null(call->cur->up.conn);
        close_down(call, NGHTTP2_NO_ERROR);
        assert_all_released();
    }
}
END_TEST

/* Outlier detection's failures and successes, summed over both backends. */
static uint32_t od_failures(void)
{
    return T.cl.set.items[0]->interval_failure + T.cl.set.items[1]->interval_failure;
}
static uint32_t od_successes(void)
{
    return T.cl.set.items[0]->interval_success + T.cl.set.items[1]->interval_success;
}

/*
 * What outlier detection hears of each attempt (gRFC A50 counts call results
 * as the client sees them): sidelb's own deadline ending an attempt on a
 * backend, a backend's DEADLINE_EXCEEDED and a reset are failures; an
 * application error is an answer; a deadline before any backend had the call
 * and an app's cancel are not counted.
 */
START_TEST(outlier_detection_counts_attempt_outcomes)
{
    static const int states[] = {SLB_CALL_QUEUED, SLB_CALL_SENT, SLB_CALL_STREAMING};
    struct slb_call *call;
    int end, status;

    for (size_t i = 0; i < SLB_ARRAY_SIZE(states); i++) {
        uint32_t f = od_failures(), ok = od_successes();
        call = open_call();
        send_headers(call, "/t.S/M", "30m", 1);
        if (states[i] >= SLB_CALL_SENT)
            stream_ready(call);
        if (states[i] >= SLB_CALL_STREAMING)
            respond_headers(call);
        run_until_state(call, SLB_CALL_FINISHING, 2000);
        drain_response(call, &end, &status);
        ck_assert_uint_eq(od_failures(), f + (states[i] >= SLB_CALL_SENT)); /* queued: no backend had it */
        ck_assert_uint_eq(od_successes(), ok);
        close_down(call, NGHTTP2_NO_ERROR);
        assert_all_released();
    }

    /* the backend's own DEADLINE_EXCEEDED */
    uint32_t f = od_failures(), ok = od_successes();
    call = open_call();
    send_headers(call, "/t.S/M", NULL, 1);
    stream_ready(call);
    respond_status_only(call, "4");
    call->cur->up.open = 0;
    slb_call_upstream_handler.on_close(&call->cur->up, NGHTTP2_NO_ERROR);
    ck_assert_uint_eq(od_failures(), f + 1);
    close_down(call, NGHTTP2_NO_ERROR);

    /* an application error: the backend works */
    call = open_call();
    send_headers(call, "/t.S/M", NULL, 1);
    stream_ready(call);
    respond_status_only(call, "5");
    call->cur->up.open = 0;
    slb_call_upstream_handler.on_close(&call->cur->up, NGHTTP2_NO_ERROR);
    ck_assert_uint_eq(od_failures(), f + 1);
    ck_assert_uint_eq(od_successes(), ok + 1);
    close_down(call, NGHTTP2_NO_ERROR);

    /* a reset while streaming */
    call = call_in_state(SLB_CALL_STREAMING);
    call->cur->up.open = 0;
    slb_call_upstream_handler.on_close(&call->cur->up, NGHTTP2_INTERNAL_ERROR);
    ck_assert_uint_eq(od_failures(), f + 2);
    drain_response(call, &end, &status);
    close_down(call, NGHTTP2_NO_ERROR);

    /* the app cancels: nothing is said about the backend */
    call = call_in_state(SLB_CALL_SENT);
    close_down(call, NGHTTP2_CANCEL);
    ck_assert_uint_eq(od_failures(), f + 2);
    ck_assert_uint_eq(od_successes(), ok + 1);
    assert_all_released();
}
END_TEST

/* A grpc-timeout in request trailers must not touch the call's deadline,
 * nor be kept for a replay (gRPC requests have no trailers). */
START_TEST(request_trailers_change_nothing)
{
    struct slb_call *call = open_call();
    static const nghttp2_nv trailer[] = {NV("grpc-timeout", "10S"), NV("x-late", "1")};
    size_t len;

    send_headers(call, "/t.S/M", "40m", 0);
    ck_assert_int_eq(call->state, SLB_CALL_QUEUED);
    feed_request(&call->down, trailer, 2, 1);
    slb_call_downstream_handler.on_headers_done(&call->down, 1, 1);
    ck_assert_int_eq(call->req_end, 1);
    ck_assert_ptr_null(slb_hdrs_get(&call->req_hdrs, "x-late", &len));
    run_until_state(call, SLB_CALL_FINISHING, 1000);
    ck_assert_int_eq(F.status, SLB_GRPC_DEADLINE_EXCEEDED);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

/* Request headers past max_header_list_size: a trailers-only
 * RESOURCE_EXHAUSTED, and nothing reaches a backend. */
START_TEST(header_list_too_large_before_routing_fails_the_call)
{
    struct slb_call *call = open_call();

    slb_call_downstream_handler.on_header_list_too_large(&call->down, 0, 16384);
    slb_call_downstream_handler.on_headers_done(&call->down, 0, 1);
    ck_assert_int_eq(F.responds, 1);
    ck_assert_int_eq(F.has_body, 0);
    ck_assert_int_eq(F.status, SLB_GRPC_RESOURCE_EXHAUSTED);
    ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
    ck_assert_ptr_null(call->cur->pool_wait.pool);
    ck_assert_int_eq(F.requests, 0);
    ck_assert_int_eq(F.resets, 0);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

/* Trailers past the limit while the backend has not answered: the same
 * status, and the backend's stream is cancelled. */
START_TEST(trailers_too_large_before_the_response_fail_the_call)
{
    struct slb_call *call = call_in_state(SLB_CALL_SENT);

    slb_call_downstream_handler.on_header_list_too_large(&call->down, 1, 16384);
    ck_assert_int_eq(F.responds, 1);
    ck_assert_int_eq(F.status, SLB_GRPC_RESOURCE_EXHAUSTED);
    ck_assert_int_eq(F.releases, 1);
    ck_assert_uint_eq(F.rst_code, NGHTTP2_CANCEL);
    ck_assert_int_eq(F.resets, 0);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

/* Once the response started no status can be sent: the app's stream is
 * reset with ENHANCE_YOUR_CALM and the backend's cancelled. */
START_TEST(trailers_too_large_after_the_response_started_reset_the_stream)
{
    struct slb_call *call = call_in_state(SLB_CALL_STREAMING);

    ck_assert_int_eq(F.responds, 1); /* the response headers */
    slb_call_downstream_handler.on_header_list_too_large(&call->down, 1, 16384);
    ck_assert_int_eq(F.responds, 1);
    ck_assert_int_eq(F.resets, 1);
    ck_assert_uint_eq(F.reset_code, NGHTTP2_ENHANCE_YOUR_CALM);
    ck_assert_int_eq(F.releases, 1);
    ck_assert_uint_eq(F.rst_code, NGHTTP2_CANCEL);
    close_down(call, NGHTTP2_ENHANCE_YOUR_CALM);
    assert_all_released();
}
END_TEST

/* Calls waiting for a usable backend are woken by an event, not a poll. */
START_TEST(waiting_call_is_woken_when_a_backend_leaves_backoff)
{
    struct slb_call *call = call_in_state(SLB_CALL_WAIT_BACKEND);
    struct slb_backend *be = T.cl.set.items[0];

    for (int i = 0; i < 5; i++)
        uv_run(&T.loop, UV_RUN_NOWAIT);
    ck_assert_int_eq(call->state, SLB_CALL_WAIT_BACKEND); /* nothing happened: no poll moved it */
    slb_backend_set_state(be, SLB_BACKEND_TRANSIENT_FAILURE);
    slb_backend_set_state(be, SLB_BACKEND_IDLE);
    run_until_state(call, SLB_CALL_QUEUED, 1000);
    close_down(call, NGHTTP2_CANCEL);
    assert_all_released();
}
END_TEST

/* Panic mode picks backends in backoff: the call waits instead of spinning on them. */
START_TEST(backend_in_backoff_is_not_retried_at_once)
{
    struct slb_call *call;

    F.pools[0].backoff = F.pools[1].backoff = 1;
    call = open_call();
    send_headers(call, "/t.S/M", "1S", 1);
    ck_assert_int_eq(call->state, SLB_CALL_WAIT_BACKEND);
    ck_assert(slb_list_empty(&F.pools[0].base.waiters) && slb_list_empty(&F.pools[1].base.waiters));
    /* the pool sends back a queued call it cannot serve: no attempt is spent */
    F.pools[0].backoff = F.pools[1].backoff = 0;
    slb_call_wake(&call->wait);
    ck_assert_int_eq(call->state, SLB_CALL_QUEUED);
    F.pools[0].backoff = F.pools[1].backoff = 1;
    {
        struct slb_pool_waiter *w = &call->cur->pool_wait;
        fake_unqueue(w);
        slb_call_upstream_handler.on_unavailable(w, UV_ECONNREFUSED);
    }
    ck_assert_int_eq(call->state, SLB_CALL_WAIT_BACKEND);
    ck_assert_int_eq(call->attempts, 0);
    close_down(call, NGHTTP2_CANCEL);
    assert_all_released();
}
END_TEST

/* A full pool queue (max_pending_per_backend) is a transparent retry on a
 * backend not tried yet; when every one is full the call fails
 * RESOURCE_EXHAUSTED, with no attempt spent and nothing left queued. */
START_TEST(full_pool_queue_sends_the_call_elsewhere_then_fails)
{
    struct slb_call *call;

    F.pools[0].full = F.pools[1].full = 1;
    call = open_call();
    send_headers(call, "/t.S/M", NULL, 1);
    ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
    ck_assert_int_eq(F.status, SLB_GRPC_RESOURCE_EXHAUSTED);
    ck_assert_uint_eq(T.ctx.stats.pool_queue_overflows, 2); /* both backends were asked */
    ck_assert_uint_eq(T.ctx.stats.calls_failed_local, 1);
    ck_assert_int_eq(call->attempts, 0);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();

    for (int full = 0; full < 2; full++) {
        F.pools[full].full = 1;
        F.pools[!full].full = 0;
        call = open_call();
        send_headers(call, "/t.S/M", NULL, 1);
        ck_assert_int_eq(call->state, SLB_CALL_QUEUED);
        ck_assert_ptr_eq(queued_pool(call), &F.pools[!full]);
        stream_ready(call);
        ck_assert_int_eq(call->state, SLB_CALL_SENT);
        close_down(call, NGHTTP2_CANCEL);
        assert_all_released();
    }
}
END_TEST

static void run_until_moved(struct slb_call *call, struct fake_pool *from, int max_ms)
{
    uint64_t until = uv_now(&T.loop) + (uint64_t)max_ms;

    while (call->state == SLB_CALL_QUEUED && queued_pool(call) == from && uv_now(&T.loop) < until)
        run_turn();
}

/* A call waits queue_timeout_ms for a stream slot (on the call's own timer
 * entry, set only while it waits), then goes to a backend it has not tried,
 * then fails UNAVAILABLE, before its deadline. */
START_TEST(queue_timeout_sends_the_call_elsewhere_then_fails)
{
    struct slb_call *call;
    struct fake_pool *first, *second;
    uint64_t t0;

    T.cfg->clusters[0].queue_timeout_ms = 50;
    /* served at once: the queue timer entry goes with the wait */
    call = open_call();
    send_headers(call, "/t.S/M", NULL, 1);
    ck_assert_int_eq(call->state, SLB_CALL_QUEUED);
    ck_assert_uint_eq(T.ctx.timers.n, 1);
    stream_ready(call);
    ck_assert_uint_eq(T.ctx.timers.n, 0);
    close_down(call, NGHTTP2_CANCEL);
    assert_all_released();

    call = open_call();
    t0 = uv_now(&T.loop);
    send_headers(call, "/t.S/M", "10S", 1);
    first = queued_pool(call);
    ck_assert_ptr_nonnull(first);
    run_until_moved(call, first, 1000);
    ck_assert_int_eq(call->state, SLB_CALL_QUEUED);
    second = queued_pool(call);
    ck_assert_ptr_nonnull(second);
    ck_assert_ptr_ne(second, first);
    ck_assert_uint_eq(T.ctx.stats.pool_queue_timeouts, 1);
    ck_assert_int_eq(call->attempts, 1); /* the refused attempt was not spent */
    run_until_state(call, SLB_CALL_FINISHING, 1000);
    ck_assert_int_eq(F.status, SLB_GRPC_UNAVAILABLE);
    ck_assert_uint_eq(T.ctx.stats.pool_queue_timeouts, 2);
    ck_assert_uint_lt(uv_now(&T.loop) - t0, 1000); /* long before the 10 s deadline */
    ck_assert(slb_list_empty(&first->base.waiters) && slb_list_empty(&second->base.waiters));
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

START_TEST(response_after_the_app_is_gone_is_dropped_and_window_returned)
{
    struct slb_call *call = call_in_state(SLB_CALL_STREAMING);

    slb_call_upstream_handler.on_data(&call->cur->up, (const uint8_t *)"0123456789", 10);
    ck_assert_uint_eq(F.consumed_up, 0);
    close_down(call, NGHTTP2_CANCEL);
    ck_assert_uint_eq(F.consumed_up, 14); /* 4 + 10 never taken: given back as the stream is let go */
    assert_all_released();
}
END_TEST

/* ---- buffer budgets ---- */

static uint8_t big[160 * 1024];

/* n bytes of request body from the app, in frames of 16 KiB. */
static void send_body(struct slb_call *call, size_t n)
{
    while (n > 0) {
        size_t k = n < 16384 ? n : 16384;
        ck_assert_int_eq(slb_call_downstream_handler.on_data(&call->down, big, k), 0);
        n -= k;
    }
}

/* The backend-side transport takes up to n request bytes. */
static size_t send_upstream(struct slb_call *call, size_t n)
{
    const uint8_t *p;
    size_t total = 0, k;
    int end;

    while (total < n && (k = call->cur->up.ops->peek(&call->cur->up, &p, &end)) > 0) {
        if (k > n - total)
            k = n - total;
        call->cur->up.ops->sent(&call->cur->up, k);
        total += k;
    }
    return total;
}

START_TEST(request_past_the_call_retry_budget_is_not_retried)
{
    struct slb_call *call = open_call();

    /* gRFC A6: a request larger than the per-call retry buffer commits the
     * call, even though the backend took only part of it */
    send_headers(call, "/t.Retry/M", NULL, 0);
    stream_ready(call);
    send_body(call, 300 * 1024); /* > budgets.call_retry_bytes (256 KiB by default) */
    ck_assert_uint_eq(send_upstream(call, 16384), 16384);
    ck_assert(!call->req.retain);
    ck_assert_uint_eq(T.ctx.stats.retry_buffer_dropped, 1);
    respond_status_only(call, "14");
    ck_assert_int_eq(call->state, SLB_CALL_FINISHING); /* not BACKOFF: no retry */
    ck_assert_int_eq(F.status, 14);
    ck_assert_int_eq(call->retries, 0);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
    ck_assert_uint_eq(T.ctx.buffers.buffered, 0);

    /* below the limit the same call is retried */
    call = open_call();
    send_headers(call, "/t.Retry/M", NULL, 0);
    stream_ready(call);
    send_body(call, 100 * 1024);
    send_upstream(call, 16384);
    ck_assert(call->req.retain);
    respond_status_only(call, "14");
    ck_assert_int_eq(call->state, SLB_CALL_BACKOFF);
    close_down(call, NGHTTP2_CANCEL);
    assert_all_released();
}
END_TEST

START_TEST(connection_over_budget_holds_back_its_windows)
{
    struct slb_call *calls[8];
    size_t got, withheld;

    T.ctx.budgets.connection_bytes = 1 << 20;
    for (int i = 0; i < 8; i++) {
        calls[i] = open_call();
        send_headers(calls[i], "/t.Retry/M", NULL, 0);
        stream_ready(calls[i]);
    }
    /* 8 x 160 KiB the backends do not read yet: 1.25 MiB > 1 MiB */
    for (int i = 0; i < 8; i++)
        send_body(calls[i], sizeof(big));
    ck_assert_uint_eq(T.dc.buffered, 8 * sizeof(big));
    ck_assert_uint_eq(T.ctx.buffers.buffered, 8 * sizeof(big));
    ck_assert_int_eq(T.dc.held_back, 1);
    ck_assert_uint_eq(T.ctx.stats.budget_conn_backpressure, 1);
    ck_assert_uint_eq(T.ctx.buffers.n_held_back, 1);
    /* replay copies went first: none is kept any more */
    ck_assert_uint_eq(T.ctx.stats.retry_buffer_dropped, 8);
    for (int i = 0; i < 8; i++)
        ck_assert(!calls[i]->req.retain);
    /* the app's connection window stopped reopening when it went over */
    withheld = 8 * sizeof(big) - F.conn_consumed_down;
    ck_assert_uint_eq(T.dc.window_withheld, withheld);
    ck_assert_uint_gt(withheld, 0);
    ck_assert_uint_le(F.conn_consumed_down, (1 << 20) + 16384);

    /* the backends take some: no stream window reopens while over budget */
    got = send_upstream(calls[0], sizeof(big)) + send_upstream(calls[1], 64 * 1024);
    ck_assert_uint_eq(got, sizeof(big) + 64 * 1024);
    ck_assert_int_eq(T.dc.held_back, 1); /* 1.02 MiB > 7/8 MiB */
    ck_assert_uint_eq(F.consumed_down, 0);
    ck_assert_uint_eq(F.app_conn_consumed, 0);
    /* ... and below 7/8 of the budget everything held back reopens */
    got += send_upstream(calls[2], sizeof(big));
    ck_assert_int_eq(T.dc.held_back, 0);
    ck_assert_uint_eq(T.ctx.buffers.n_held_back, 0);
    ck_assert_uint_eq(F.consumed_down, got);
    ck_assert_uint_eq(F.app_conn_consumed, withheld);
    ck_assert_uint_eq(T.dc.window_withheld, 0);
    /* back under budget, new bytes reopen windows at once again */
    send_upstream(calls[3], 1000);
    ck_assert_uint_eq(F.consumed_down, got + 1000);
    for (int i = 0; i < 8; i++)
        close_down(calls[i], NGHTTP2_CANCEL);
    ck_assert_uint_eq(T.dc.buffered, 0);
    ck_assert_uint_eq(T.ctx.buffers.buffered, 0);
    ck_assert_uint_eq(T.ctx.buffers.n_buffering, 0);
    assert_all_released();
}
END_TEST

START_TEST(responses_the_app_does_not_take_hold_back_backend_streams)
{
    struct slb_call *calls[8];
    int end;

    T.ctx.budgets.connection_bytes = 1 << 20;
    for (int i = 0; i < 8; i++) {
        calls[i] = open_call();
        send_headers(calls[i], "/t.S/M", NULL, 1);
        stream_ready(calls[i]);
        respond_headers(calls[i]);
    }
    for (int i = 0; i < 8; i++)
        for (size_t n = 0; n < sizeof(big); n += 16384)
            ck_assert_int_eq(slb_call_upstream_handler.on_data(&calls[i]->cur->up, big, 16384), 0);
    ck_assert_int_eq(T.dc.held_back, 1);
    ck_assert_uint_eq(F.conn_consumed_up, 8 * sizeof(big)); /* the shared backend connection never waits */
    /* the app takes two calls' bytes: their backend streams stay closed while over budget */
    ck_assert_uint_eq(drain_response(calls[0], &end, NULL), sizeof(big));
    ck_assert_uint_eq(drain_response(calls[1], &end, NULL), sizeof(big));
    ck_assert_int_eq(T.dc.held_back, 1);
    ck_assert_uint_eq(F.consumed_up, 0);
    ck_assert_uint_eq(drain_response(calls[2], &end, NULL), sizeof(big));
    ck_assert_int_eq(T.dc.held_back, 0);
    ck_assert_uint_eq(F.consumed_up, 3 * sizeof(big));
    for (int i = 0; i < 8; i++)
        close_down(calls[i], NGHTTP2_CANCEL);
    ck_assert_uint_eq(T.ctx.buffers.buffered, 0);
    assert_all_released();
}
END_TEST

START_TEST(total_over_budget_drops_replay_copies_first)
{
    struct slb_call *a, *b, *c;

    slb_list_push_back(&T.ctx.downstreams, &T.dc.ctx_link);
    T.ctx.budgets.connection_bytes = 4 << 20;
    T.ctx.budgets.total_bytes = 1 << 20;
    a = open_call();
    send_headers(a, "/t.Retry/M", NULL, 0);
    stream_ready(a);
    send_body(a, 200 * 1024);
    send_upstream(a, 200 * 1024); /* all sent: 200 KiB kept only as a replay copy */
    ck_assert(a->req.retain);
    ck_assert_uint_eq(T.ctx.buffers.buffered, 200 * 1024);
    b = open_call();
    send_headers(b, "/t.S/M", NULL, 0);
    for (int i = 0; i < 7; i++)
        send_body(b, sizeof(big)); /* 1.1 MiB waiting for a backend */
    ck_assert_int_eq(T.ctx.buffers.total_over, 1);
    /* it bit at 1 MiB, dropping a's copy took it below 7/8; then b alone went over again */
    ck_assert_uint_eq(T.ctx.stats.budget_total_exceeded, 2);
    ck_assert(!a->req.retain); /* a's replay copy went first */
    ck_assert(!b->req.retain);
    /* new calls keep none while the total is over */
    c = open_call();
    ck_assert(!c->req.retain);
    /* one connection holding it all is over its share: held back */
    ck_assert_int_eq(T.dc.held_back, 1);
    close_down(b, NGHTTP2_CANCEL);
    ck_assert_int_eq(T.ctx.buffers.total_over, 0);
    ck_assert_int_eq(T.dc.held_back, 0);
    ck_assert_uint_eq(F.app_conn_consumed + F.conn_consumed_down, 200 * 1024 + 7 * sizeof(big));
    close_down(a, NGHTTP2_CANCEL);
    close_down(c, NGHTTP2_CANCEL);
    ck_assert_uint_eq(T.ctx.buffers.buffered, 0);
    assert_all_released();
}
END_TEST

/* ---- gRFC A6 hedging, pushback, grpc-previous-rpc-attempts, perAttemptRecvTimeout ---- */

/* The pool has a stream for attempt a. */
static void attempt_ready(struct slb_call_attempt *a)
{
    ck_assert_int_eq(a->state, SLB_ATTEMPT_QUEUED);
    ck_assert_ptr_nonnull(a->pool_wait.pool);
    fake_unqueue(&a->pool_wait);
    slb_call_upstream_handler.on_ready(&a->pool_wait, NULL);
    ck_assert_int_eq(a->state, SLB_ATTEMPT_SENT);
}

/* A trailers-only reply with grpc-status and grpc-retry-pushback-ms (pushback NULL: none) on attempt a. */
static void attempt_status_only(struct slb_call_attempt *a, const char *status, const char *pushback)
{
    nghttp2_nv nv[] = {NV(":status", "200"),
                       NV("content-type", "application/grpc"),
                       {(uint8_t *)"grpc-status", (uint8_t *)status, 11, strlen(status), NGHTTP2_NV_FLAG_NONE},
                       {(uint8_t *)"grpc-retry-pushback-ms", (uint8_t *)pushback, 22, pushback ? strlen(pushback) : 0,
                        NGHTTP2_NV_FLAG_NONE}};
    feed_response(&a->up, nv, pushback != NULL ? 4 : 3, 0);
    slb_call_upstream_handler.on_headers_done(&a->up, 0, 1);
}

/* The loop runs until attempt slot i is queued. */
static struct slb_call_attempt *run_until_attempt_queued(struct slb_call *call, int i, int max_ms)
{
    uint64_t until = uv_now(&T.loop) + (uint64_t)max_ms;

    while ((call->n_att <= i || call->att[i].state != SLB_ATTEMPT_QUEUED) && uv_now(&T.loop) < until)
        run_turn();
    ck_assert_int_gt(call->n_att, i);
    ck_assert_int_eq(call->att[i].state, SLB_ATTEMPT_QUEUED);
    return &call->att[i];
}

START_TEST(hedge_goes_to_another_backend_and_the_first_headers_commit)
{
    struct slb_call *call = open_call();
    struct slb_call_attempt *a0, *a1;
    const uint8_t *p;
    int end, status;
    uint64_t t0 = uv_now(&T.loop);

    send_headers(call, "/t.Hedge/M", NULL, 0);
    slb_call_downstream_handler.on_data(&call->down, (const uint8_t *)"abc", 3);
    slb_call_downstream_handler.on_end(&call->down);
    a0 = call->cur;
    attempt_ready(a0);
    ck_assert_int_eq(F.previous, -1); /* the first attempt carries no grpc-previous-rpc-attempts */
    ck_assert_uint_eq(a0->up.ops->peek(&a0->up, &p, &end), 3);
    a0->up.ops->sent(&a0->up, 3);
    ck_assert_uint_eq(F.consumed_down, 3);

    /* hedgingDelay later, a second attempt goes to the other backend */
    a1 = run_until_attempt_queued(call, 1, 1000);
    ck_assert_uint_ge(uv_now(&T.loop) - t0, 19);
    ck_assert_ptr_ne(a1->pool_wait.pool, a0->pool_wait.pool);
    ck_assert_ptr_ne(a1->be, a0->be);
    ck_assert_int_eq(call->state, SLB_CALL_SENT);
    attempt_ready(a1);
    ck_assert_int_eq(F.previous, 1);
    ck_assert_int_eq(F.req_has_body, 1);
    /* it replays the request the first attempt sent, and ends it */
    ck_assert_uint_eq(a1->up.ops->peek(&a1->up, &p, &end), 3);
    ck_assert(memcmp(p, "abc", 3) == 0);
    a1->up.ops->sent(&a1->up, 3);
    ck_assert_uint_eq(a1->up.ops->peek(&a1->up, &p, &end), 0);
    ck_assert_int_eq(end, 1);
    ck_assert_uint_eq(F.consumed_down, 3); /* the app's window reopened once */

    /* the second attempt's response headers commit the call: the first is cancelled */
    F.rst_code = 0;
    feed_response(&a1->up, (nghttp2_nv[]){NV(":status", "200"), NV("content-type", "application/grpc")}, 2, 0);
    slb_call_upstream_handler.on_headers_done(&a1->up, 0, 0);
    ck_assert_int_eq(call->state, SLB_CALL_STREAMING);
    ck_assert_ptr_eq(call->cur, a1);
    ck_assert_uint_eq(F.rst_code, NGHTTP2_CANCEL);
    ck_assert_ptr_null(a0->up.conn);
    ck_assert_int_eq(a0->state, SLB_ATTEMPT_IDLE);
    ck_assert_uint_eq(T.ctx.stats.hedged_attempts, 1);
    ck_assert_uint_eq(T.ctx.stats.hedges_cancelled, 1);
    ck_assert(!call->req.retain);

    ck_assert_int_eq(slb_call_upstream_handler.on_data(&a1->up, (const uint8_t *)"hi", 2), 0);
    ck_assert_uint_eq(drain_response(call, &end, NULL), 2);
    nghttp2_nv tr[] = {NV("grpc-status", "0")};
    feed_response(&a1->up, tr, 1, 1);
    slb_call_upstream_handler.on_headers_done(&a1->up, 1, 1);
    ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
    a1->up.open = 0;
    slb_call_upstream_handler.on_close(&a1->up, NGHTTP2_NO_ERROR);
    drain_response(call, &end, &status);
    ck_assert_int_eq(status, 0);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

START_TEST(hedge_non_fatal_status_sends_the_next_at_once_and_a_fatal_one_commits)
{
    struct slb_call *call = open_call();
    struct slb_call_attempt *a0, *a1;
    struct slb_backend *be0;
    uint64_t t0;

    /* non-fatal (UNAVAILABLE): the next hedge goes at once, not after hedgingDelay (10 s) */
    send_headers(call, "/t.HedgeSlow/M", NULL, 1);
    a0 = call->cur;
    attempt_ready(a0);
    be0 = a0->be;
    t0 = uv_now(&T.loop);
    attempt_status_only(a0, "14", NULL);
    ck_assert_int_eq(F.responds, 0);
    ck_assert_int_eq(call->state, SLB_CALL_BACKOFF); /* nothing in flight: the next hedge is due now */
    run_until_state(call, SLB_CALL_QUEUED, 1000);
    ck_assert_uint_lt(uv_now(&T.loop) - t0, 500);
    a1 = call->cur; /* the free slot is reused */
    ck_assert_ptr_ne(a1->be, be0);
    attempt_ready(a1);
    ck_assert_int_eq(F.previous, 1);
    /* the last attempt allowed (maxAttempts 2) failed too: the app gets its status */
    attempt_status_only(a1, "14", NULL);
    ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
    ck_assert_int_eq(F.status, SLB_GRPC_UNAVAILABLE);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();

    /* fatal (INTERNAL): the call ends with it, no other attempt */
    call = open_call();
    send_headers(call, "/t.HedgeSlow/M", NULL, 1);
    attempt_ready(call->cur);
    attempt_status_only(call->cur, "13", NULL);
    ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
    ck_assert_int_eq(F.status, SLB_GRPC_INTERNAL);
    ck_assert_int_eq(call->n_att, 1);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

START_TEST(fatal_status_of_a_hedge_cancels_the_attempt_in_flight)
{
    struct slb_call *call = open_call();
    struct slb_call_attempt *a0, *a1;

    send_headers(call, "/t.Hedge/M", NULL, 1);
    a0 = call->cur;
    attempt_ready(a0);
    a1 = run_until_attempt_queued(call, 1, 1000);
    attempt_ready(a1);
    F.rst_code = 0;
    attempt_status_only(a1, "13", NULL);
    ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
    ck_assert_int_eq(F.status, SLB_GRPC_INTERNAL);
    ck_assert_uint_eq(F.rst_code, NGHTTP2_CANCEL);
    ck_assert_ptr_null(a0->up.conn);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

START_TEST(pushback_dont_retry_stops_hedges_and_retries)
{
    static const char *const paths[] = {"/t.HedgeSlow/M", "/t.Retry/M"};
    static const char *const values[] = {"-1", "x", "-5"};

    for (size_t i = 0; i < SLB_ARRAY_SIZE(paths); i++) {
        for (size_t j = 0; j < SLB_ARRAY_SIZE(values); j++) {
            struct slb_call *call = open_call();
            F.status = -1;
            send_headers(call, paths[i], NULL, 1);
            attempt_ready(call->cur);
            attempt_status_only(call->cur, "14", values[j]);
            ck_assert_int_eq(call->state, SLB_CALL_FINISHING);
            ck_assert_int_eq(F.status, SLB_GRPC_UNAVAILABLE);
            close_down(call, NGHTTP2_NO_ERROR);
            assert_all_released();
        }
    }
}
END_TEST

START_TEST(pushback_delay_sets_the_next_retry_and_hedge)
{
    struct slb_call *call = open_call();
    uint64_t t0;

    /* a retry waits the pushback (200 ms), not initialBackoff (10 ms) */
    send_headers(call, "/t.Retry/M", NULL, 1);
    attempt_ready(call->cur);
    t0 = uv_now(&T.loop);
    attempt_status_only(call->cur, "14", "200");
    ck_assert_int_eq(call->state, SLB_CALL_BACKOFF);
    ck_assert_uint_ge(call->retry_at_ms, t0 + 200);
    run_until_state(call, SLB_CALL_QUEUED, 1000);
    ck_assert_uint_ge(uv_now(&T.loop) - t0, 199);
    attempt_ready(call->cur);
    ck_assert_int_eq(F.previous, 1);
    close_down(call, NGHTTP2_CANCEL);
    assert_all_released();

    /* a hedge too, where it would go at once otherwise */
    call = open_call();
    send_headers(call, "/t.HedgeSlow/M", NULL, 1);
    attempt_ready(call->cur);
    t0 = uv_now(&T.loop);
    attempt_status_only(call->cur, "14", "150");
    ck_assert_int_eq(call->state, SLB_CALL_BACKOFF);
    run_until_state(call, SLB_CALL_QUEUED, 1000);
    ck_assert_uint_ge(uv_now(&T.loop) - t0, 149);
    close_down(call, NGHTTP2_CANCEL);
    assert_all_released();
}
END_TEST

START_TEST(per_attempt_recv_timeout_retries_then_fails)
{
    struct slb_call *call = open_call();
    uint64_t t0 = uv_now(&T.loop);
    int end, status = -1;

    send_headers(call, "/t.Recv/M", "10S", 1);
    attempt_ready(call->cur);
    /* no response headers within 100 ms: cancelled and retried, though DEADLINE_EXCEEDED is not retryable here
     * (the backoff is 0-10 ms: the call may pass BACKOFF within one turn) */
    F.rst_code = 0;
    while (call->retries == 0 && uv_now(&T.loop) - t0 < 2000)
        run_turn();
    ck_assert_int_eq(call->retries, 1);
    ck_assert_uint_ge(uv_now(&T.loop) - t0, 99);
    ck_assert_uint_eq(F.rst_code, NGHTTP2_CANCEL);
    ck_assert_int_eq(F.responds, 0);
    run_until_state(call, SLB_CALL_QUEUED, 1000);
    attempt_ready(call->cur);
    ck_assert_int_eq(F.previous, 1);
    /* the last attempt times out too: DEADLINE_EXCEEDED, long before the call's deadline */
    run_until_state(call, SLB_CALL_FINISHING, 1000);
    ck_assert_int_eq(F.status, SLB_GRPC_DEADLINE_EXCEEDED);
    drain_response(call, &end, &status);
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();

    /* response headers in time stop the timer */
    call = open_call();
    send_headers(call, "/t.Recv/M", "10S", 1);
    attempt_ready(call->cur);
    respond_headers(call);
    ck_assert_uint_eq(call->cur->recv_until_ms, 0);
    t0 = uv_now(&T.loop);
    while (uv_now(&T.loop) - t0 < 150)
        run_turn();
    ck_assert_int_eq(call->state, SLB_CALL_STREAMING);
    close_down(call, NGHTTP2_CANCEL);
    assert_all_released();
}
END_TEST

START_TEST(interleaved_header_blocks_of_two_hedges_drop_the_second)
{
    struct slb_call *call = open_call();
    struct slb_call_attempt *a0, *a1;

    send_headers(call, "/t.Hedge/M", NULL, 1);
    a0 = call->cur;
    attempt_ready(a0);
    a1 = run_until_attempt_queued(call, 1, 1000);
    attempt_ready(a1);
    /* a0's header block has begun on its connection (one block split over reads) when a1's whole block comes */
    call->resp_owner = a0;
    feed_response(&a1->up, (nghttp2_nv[]){NV(":status", "200"), NV("content-type", "application/grpc")}, 2, 0);
    slb_call_upstream_handler.on_headers_done(&a1->up, 0, 0);
    /* a1's fields were dropped: it cannot be relayed, so it is let go (UNAVAILABLE is non-fatal here) */
    ck_assert_int_eq(a1->state, SLB_ATTEMPT_IDLE);
    ck_assert_ptr_null(a1->up.conn);
    ck_assert_int_eq(F.responds, 0);
    ck_assert_int_eq(call->state, SLB_CALL_SENT);
    /* a0's block completes and commits the call */
    respond_headers(call);
    ck_assert_ptr_eq(call->cur, a0);
    ck_assert_int_eq(call->state, SLB_CALL_STREAMING);
    ck_assert_int_eq(F.responds, 1);
    close_down(call, NGHTTP2_CANCEL);
    assert_all_released();
}
END_TEST

START_TEST(hedge_throttled_while_waiting_ends_with_the_last_status)
{
    struct slb_call *call = open_call();

    send_headers(call, "/t.HedgeSlow/M", NULL, 1);
    attempt_ready(call->cur);
    attempt_status_only(call->cur, "14", "100");
    ck_assert_int_eq(call->state, SLB_CALL_BACKOFF);
    /* other calls failed meanwhile: retryThrottling has no token left for the hedge */
    T.cl.methods.throttled = 1;
    T.cl.methods.max_tokens = 10;
    T.cl.methods.tokens = 0;
    run_until_state(call, SLB_CALL_FINISHING, 1000);
    ck_assert_int_eq(F.status, SLB_GRPC_UNAVAILABLE);
    ck_assert_int_eq(call->n_att, 1);
    T.cl.methods.throttled = 0;
    close_down(call, NGHTTP2_NO_ERROR);
    assert_all_released();
}
END_TEST

START_TEST(request_past_the_retry_budget_commits_to_the_hedge_that_sent_most)
{
    struct slb_call *call = open_call();
    struct slb_call_attempt *a0, *a1;

    send_headers(call, "/t.Hedge/M", NULL, 0);
    a0 = call->cur;
    attempt_ready(a0);
    send_body(call, 64 * 1024);
    ck_assert_uint_eq(send_upstream(call, 64 * 1024), 64 * 1024); /* call->cur is a0 */
    a1 = run_until_attempt_queued(call, 1, 1000);
    attempt_ready(a1);
    ck_assert_uint_eq(a1->req_pos, 0);
    F.rst_code = 0;
    /* gRFC A6: the request outgrows budgets.call_retry_bytes: the attempt that sent the most goes on alone */
    send_body(call, 256 * 1024);
    ck_assert(!call->req.retain);
    ck_assert_ptr_eq(call->cur, a0);
    ck_assert_int_eq(a1->state, SLB_ATTEMPT_IDLE);
    ck_assert_ptr_null(a1->up.conn);
    ck_assert_uint_eq(F.rst_code, NGHTTP2_CANCEL);
    ck_assert_int_eq(call->state, SLB_CALL_SENT);
    ck_assert_uint_eq(send_upstream(call, 256 * 1024), 256 * 1024);
    /* and no hedge follows */
    for (int i = 0; i < 40; i++)
        run_turn();
    ck_assert_int_eq(call->att[1].state, SLB_ATTEMPT_IDLE);
    respond_headers(call);
    ck_assert_int_eq(call->state, SLB_CALL_STREAMING);
    close_down(call, NGHTTP2_CANCEL);
    assert_all_released();
    ck_assert_uint_eq(T.ctx.buffers.buffered, 0);
}
END_TEST

/* The backend-side transport of attempt a takes up to n request bytes; *end: it saw END_STREAM. */
static size_t attempt_send(struct slb_call_attempt *a, size_t n, int *end)
{
    const uint8_t *p;
    size_t total = 0, k;

    *end = 0;
    while (total < n && (k = a->up.ops->peek(&a->up, &p, end)) > 0) {
        if (k > n - total)
            k = n - total;
        a->up.ops->sent(&a->up, k);
        total += k;
    }
    if (total < n)
        a->up.ops->peek(&a->up, &p, end);
    return total;
}

START_TEST(commit_to_a_hedge_that_lags_keeps_its_place_in_the_request)
{
    struct slb_call *call = open_call();
    struct slb_call_attempt *a0, *a1;
    int end;

    send_headers(call, "/t.Hedge/M", NULL, 0);
    a0 = call->cur;
    attempt_ready(a0);
    send_body(call, 64 * 1024);
    slb_call_downstream_handler.on_end(&call->down);
    ck_assert_uint_eq(attempt_send(a0, 64 * 1024, &end), 64 * 1024);
    ck_assert_int_eq(end, 1);
    a1 = run_until_attempt_queued(call, 1, 1000);
    attempt_ready(a1);
    ck_assert_uint_eq(attempt_send(a1, 16 * 1024 + 7, &end), 16 * 1024 + 7);
    ck_assert_int_eq(end, 0);
    /* a1 answers first (a server may answer before the whole request): the call is a1's, from where a1 is */
    feed_response(&a1->up, (nghttp2_nv[]){NV(":status", "200"), NV("content-type", "application/grpc")}, 2, 0);
    slb_call_upstream_handler.on_headers_done(&a1->up, 0, 0);
    ck_assert_ptr_eq(call->cur, a1);
    ck_assert_ptr_null(a0->up.conn);
    ck_assert(!call->req.retain);
    ck_assert_uint_eq(attempt_send(a1, 1 << 20, &end), 48 * 1024 - 7);
    ck_assert_int_eq(end, 1);
    ck_assert_uint_eq(F.consumed_down, 64 * 1024); /* the app's window reopened once for each byte */
    close_down(call, NGHTTP2_CANCEL);
    assert_all_released();
    ck_assert_uint_eq(T.ctx.buffers.buffered, 0);

    /* the leading attempt fails (non-fatal), the one left lags; then the request outgrows the retry
     * budget: the call is committed to the laggard, from where it is */
    call = open_call();
    F.consumed_down = 0;
    send_headers(call, "/t.Hedge/M", NULL, 0);
    a0 = call->cur;
    attempt_ready(a0);
    send_body(call, 64 * 1024);
    ck_assert_uint_eq(attempt_send(a0, 64 * 1024, &end), 64 * 1024);
    a1 = run_until_attempt_queued(call, 1, 1000);
    attempt_ready(a1);
    ck_assert_uint_eq(attempt_send(a1, 16 * 1024, &end), 16 * 1024);
    attempt_status_only(a0, "14", NULL);
    ck_assert_int_eq(a0->state, SLB_ATTEMPT_IDLE);
    ck_assert_int_eq(call->state, SLB_CALL_SENT);
    send_body(call, 256 * 1024);
    ck_assert(!call->req.retain);
    ck_assert_ptr_eq(call->cur, a1);
    ck_assert_uint_eq(attempt_send(a1, 1 << 20, &end), (64 + 256 - 16) * 1024);
    ck_assert_uint_eq(F.consumed_down, (64 + 256) * 1024);
    close_down(call, NGHTTP2_CANCEL);
    assert_all_released();
    ck_assert_uint_eq(T.ctx.buffers.buffered, 0);
}
END_TEST

START_TEST(app_cancel_and_deadline_reset_every_hedge)
{
    for (int deadline = 0; deadline < 2; deadline++) {
        struct slb_call *call = open_call();
        struct slb_call_attempt *a0, *a1;
        int releases;

        F.status = -1;
        send_headers(call, "/t.Hedge/M", deadline ? "300m" : NULL, 1);
        a0 = call->cur;
        attempt_ready(a0);
        a1 = run_until_attempt_queued(call, 1, 1000);
        attempt_ready(a1);
        releases = F.releases;
        if (deadline) {
            run_until_state(call, SLB_CALL_FINISHING, 2000);
            ck_assert_int_eq(F.status, SLB_GRPC_DEADLINE_EXCEEDED);
            close_down(call, NGHTTP2_NO_ERROR);
        } else {
            close_down(call, NGHTTP2_CANCEL);
        }
        ck_assert_int_eq(F.releases - releases, 2);
        assert_all_released();
    }
}
END_TEST

Suite *call_suite(void)
{
    Suite *s = suite_create("call");
    TCase *tc = tcase_create("call");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, unary_call_end_to_end);
    tcase_add_test(tc, retry_after_unavailable_goes_to_another_backend);
    tcase_add_test(tc, refused_stream_is_replayed_with_the_whole_request);
    tcase_add_test(tc, lost_connection_fails_with_unavailable);
    tcase_add_test(tc, backend_reset_while_streaming_ends_with_error_trailers);
    tcase_add_test(tc, cancel_from_the_app_in_every_state);
    tcase_add_test(tc, cancel_from_the_backend_in_every_state_with_a_stream);
    tcase_add_test(tc, deadline_expires_in_every_waiting_state);
    tcase_add_test(tc, outlier_detection_counts_attempt_outcomes);
    tcase_add_test(tc, request_trailers_change_nothing);
    tcase_add_test(tc, header_list_too_large_before_routing_fails_the_call);
    tcase_add_test(tc, trailers_too_large_before_the_response_fail_the_call);
    tcase_add_test(tc, trailers_too_large_after_the_response_started_reset_the_stream);
    tcase_add_test(tc, waiting_call_is_woken_when_a_backend_leaves_backoff);
    tcase_add_test(tc, backend_in_backoff_is_not_retried_at_once);
    tcase_add_test(tc, full_pool_queue_sends_the_call_elsewhere_then_fails);
    tcase_add_test(tc, queue_timeout_sends_the_call_elsewhere_then_fails);
    tcase_add_test(tc, response_after_the_app_is_gone_is_dropped_and_window_returned);
    tcase_add_test(tc, request_past_the_call_retry_budget_is_not_retried);
    tcase_add_test(tc, connection_over_budget_holds_back_its_windows);
    tcase_add_test(tc, responses_the_app_does_not_take_hold_back_backend_streams);
    tcase_add_test(tc, total_over_budget_drops_replay_copies_first);
    tcase_add_test(tc, hedge_goes_to_another_backend_and_the_first_headers_commit);
    tcase_add_test(tc, hedge_non_fatal_status_sends_the_next_at_once_and_a_fatal_one_commits);
    tcase_add_test(tc, fatal_status_of_a_hedge_cancels_the_attempt_in_flight);
    tcase_add_test(tc, pushback_dont_retry_stops_hedges_and_retries);
    tcase_add_test(tc, pushback_delay_sets_the_next_retry_and_hedge);
    tcase_add_test(tc, per_attempt_recv_timeout_retries_then_fails);
    tcase_add_test(tc, app_cancel_and_deadline_reset_every_hedge);
    tcase_add_test(tc, commit_to_a_hedge_that_lags_keeps_its_place_in_the_request);
    tcase_add_test(tc, request_past_the_retry_budget_commits_to_the_hedge_that_sent_most);
    tcase_add_test(tc, hedge_throttled_while_waiting_ends_with_the_last_status);
    tcase_add_test(tc, interleaved_header_blocks_of_two_hedges_drop_the_second);
    suite_add_tcase(s, tc);
    return s;
}
