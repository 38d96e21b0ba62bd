#include "h2_upstream.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "config.h"
#include "log.h"
#include "proxy.h"
#include "server.h"

static void pool_feed(struct slb_upstream_pool *pool);
static void pool_arm_timer(struct slb_upstream_pool *pool);

static void upstream_on_close(struct slb_conn *c, int err);
static void upstream_on_free(struct slb_conn *c);

static const struct slb_conn_ops upstream_conn_ops = {
    .on_read = NULL,
    .on_close = upstream_on_close,
    .on_free = upstream_on_free,
};

static void pool_on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* The backend is being freed: nothing references the pool any more. */
static void pool_on_backend_free(struct slb_backend *be)
{
    struct slb_upstream_pool *pool = be->pool;

    be->pool = NULL;
    if (pool == NULL)
        return;
    uv_close((uv_handle_t *)&pool->timer, pool_on_timer_closed);
}

struct slb_upstream_pool *slb_upstream_pool_get(struct slb_server *srv, struct slb_backend *be,
                                                const struct slb_config_cluster *cfg)
{
    struct slb_upstream_pool *pool = be->pool;

    if (pool != NULL)
        return pool;
    if ((pool = calloc(1, sizeof(*pool))) == NULL)
        return NULL;
    pool->srv = srv;
    pool->be = be;
    pool->cfg = cfg;
    pool->backoff_ms = cfg->backoff.initial_ms;
    uv_timer_init(srv->loop, &pool->timer);
    pool->timer.data = pool;
    be->pool = pool;
    be->on_free = pool_on_backend_free;
    return pool;
}

static uint32_t conn_stream_limit(const struct slb_upstream *uc)
{
    uint32_t remote = nghttp2_session_get_remote_settings(uc->conn.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    uint32_t cap = uc->pool->cfg->max_streams_per_connection;
    return remote < cap ? remote : cap;
}

static struct slb_upstream *pool_find_room(struct slb_upstream_pool *pool)
{
    for (struct slb_upstream *uc = pool->conns; uc != NULL; uc = uc->next)
        if (uc->connected && !uc->goaway && !uc->conn.closing && uc->active < conn_stream_limit(uc))
            return uc;
    return NULL;
}

static void pool_enqueue(struct slb_upstream_pool *pool, struct slb_call *call)
{
    call->u_next = NULL;
    call->u_prev = pool->wait_tail;
    if (pool->wait_tail != NULL)
        pool->wait_tail->u_next = call;
    else
        pool->wait_head = call;
    pool->wait_tail = call;
    pool->n_waiting++;
    call->queued = 1;
    call->pool = pool;
}

void slb_upstream_pool_unqueue(struct slb_upstream_pool *pool, struct slb_call *call)
{
    if (!call->queued)
        return;
    if (call->u_prev != NULL)
        call->u_prev->u_next = call->u_next;
    else
        pool->wait_head = call->u_next;
    if (call->u_next != NULL)
        call->u_next->u_prev = call->u_prev;
    else
        pool->wait_tail = call->u_prev;
    call->u_next = call->u_prev = NULL;
    pool->n_waiting--;
    call->queued = 0;
    call->pool = NULL;
}

static void upstream_attach(struct slb_upstream *uc, struct slb_call *call)
{
    if (slb_call_submit_upstream(call, uc) != 0) {
        slb_call_on_upstream_lost(call, SLB_EPROTO, 0);
        return;
    }
    call->uc = uc;
    call->u_prev = NULL;
    call->u_next = uc->calls;
    if (uc->calls != NULL)
        uc->calls->u_prev = call;
    uc->calls = call;
    uc->active++;
    slb_conn_mark_dirty(&uc->conn);
}

void slb_upstream_detach(struct slb_upstream *uc, struct slb_call *call, uint32_t rst_code)
{
    if (call->u_open) {
        if (!uc->conn.closing) {
            if (rst_code != 0)
                nghttp2_submit_rst_stream(uc->conn.session, NGHTTP2_FLAG_NONE, call->u_sid, rst_code);
            nghttp2_session_set_stream_user_data(uc->conn.session, call->u_sid, NULL);
            slb_conn_mark_dirty(&uc->conn);
        }
        call->u_open = 0;
        uc->active--;
    }
    if (call->u_prev != NULL)
        call->u_prev->u_next = call->u_next;
    else
        uc->calls = call->u_next;
    if (call->u_next != NULL)
        call->u_next->u_prev = call->u_prev;
    call->u_next = call->u_prev = NULL;
    call->uc = NULL;
}

static int upstream_connect(struct slb_upstream_pool *pool)
{
    struct slb_server *srv = pool->srv;
    struct slb_backend *be = pool->be;
    struct slb_upstream *uc = calloc(1, sizeof(*uc));
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, pool->cfg->stream_window},
    };
    int rv;

    if (uc == NULL)
        return SLB_ENOMEM;
    if ((rv = slb_conn_init(&uc->conn, &srv->io, &upstream_conn_ops)) != 0) {
        free(uc);
        return rv;
    }
    uc->pool = pool;
    slb_backend_ref(be);
    if (nghttp2_session_client_new3(&uc->conn.session, srv->up_cbs, uc, srv->up_opt, slb_h2_mem()) != 0) {
        slb_conn_close(&uc->conn, SLB_ENOMEM);
        return SLB_ENOMEM;
    }
    nghttp2_submit_settings(uc->conn.session, NGHTTP2_FLAG_NONE, iv, SLB_ARRAY_SIZE(iv));
    /* connection window: room for many streams' windows */
    nghttp2_session_set_local_window_size(uc->conn.session, NGHTTP2_FLAG_NONE, 0, 16 * 1024 * 1024);
    uc->next = pool->conns;
    if (pool->conns != NULL)
        pool->conns->prev = uc;
    pool->conns = uc;
    pool->n_conns++;
    pool->n_connecting++;
    srv->stats.upstream_conns_total++;
    {
        /* gRPC connection backoff: an attempt may take max(MIN_CONNECT_TIMEOUT,
         * current backoff); calls do not wait that long (connect_timeout_ms). */
        uint64_t now = uv_now(srv->loop), limit = pool->cfg->backoff.min_connect_timeout_ms;
        if (pool->backoff_ms > limit)
            limit = pool->backoff_ms;
        uc->connect_deadline_ms = now + limit;
        uc->patience_ms = now + pool->cfg->connect_timeout_ms;
    }
    if (be->state != SLB_BACKEND_READY)
        slb_backend_set_state(be, SLB_BACKEND_CONNECTING);
    slb_debug("backend %s: connecting (%u connections)", be->name, pool->n_conns);
    return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct slb_upstream *uc = slb_container_of(req, struct slb_upstream, creq);
    struct slb_upstream_pool *pool = uc->pool;

    if (uc->conn.closing)
        return; /* closed while connecting (timeout, drain): on_close did the accounting */
    if (status < 0) {
        slb_conn_close(&uc->conn, status);
        return;
    }
    pool->n_connecting--;
    uc->connected = 1;
    pool->backoff_ms = pool->cfg->backoff.initial_ms;
    if (pool->failures > 0)
        slb_notice("backend %s: connected after %u failed attempts", pool->be->name, pool->failures);
    pool->failures = 0;
    slb_backend_set_state(pool->be, SLB_BACKEND_READY);
    if (slb_conn_start(&uc->conn) != 0) {
        slb_conn_close(&uc->conn, UV_EIO);
        return;
    }
    slb_conn_mark_dirty(&uc->conn);
    pool_feed(pool);
}

/* Opens a connection when calls wait and none is coming up. */
static void pool_maybe_connect(struct slb_upstream_pool *pool)
{
    struct slb_upstream *uc;
    int rv;

    if (pool->n_waiting == 0 || pool->n_connecting > 0 || pool->closing)
        return;
    if (pool->n_conns >= pool->cfg->max_connections_per_backend)
        return; /* they wait for a stream slot */
    if ((rv = upstream_connect(pool)) != 0) {
        slb_warn("backend %s: cannot connect: %s", pool->be->name, slb_strerror(rv));
        return;
    }
    uc = pool->conns;
    if ((rv = uv_tcp_connect(&uc->creq, &uc->conn.tcp, (const struct sockaddr *)&pool->be->addr, on_connect)) != 0) {
        slb_conn_close(&uc->conn, rv);
        return;
    }
    pool_arm_timer(pool);
}

static void pool_feed(struct slb_upstream_pool *pool)
{
    struct slb_upstream *uc;

    while (pool->wait_head != NULL && (uc = pool_find_room(pool)) != NULL) {
        struct slb_call *call = pool->wait_head;
        slb_upstream_pool_unqueue(pool, call);
        upstream_attach(uc, call);
    }
    pool_maybe_connect(pool);
}

void slb_upstream_pool_submit(struct slb_upstream_pool *pool, struct slb_call *call)
{
    struct slb_upstream *uc = pool->wait_head == NULL ? pool_find_room(pool) : NULL;

    if (uc != NULL) {
        upstream_attach(uc, call);
        return;
    }
    pool_enqueue(pool, call);
    pool_maybe_connect(pool);
}

/* Calls that were waiting for this backend go elsewhere (the picker now skips it). */
static void pool_redispatch_waiting(struct slb_upstream_pool *pool, int err)
{
    while (pool->wait_head != NULL) {
        struct slb_call *call = pool->wait_head;
        slb_upstream_pool_unqueue(pool, call);
        slb_call_on_upstream_lost(call, err, 1);
    }
}

static void pool_connect_failed(struct slb_upstream_pool *pool, int err)
{
    const struct slb_config_backoff *bo = &pool->cfg->backoff;
    uint64_t now = uv_now(pool->srv->loop);
    double jitter = 1.0 + bo->jitter * (2.0 * (double)(slb_server_random(pool->srv) % 10001) / 10000.0 - 1.0);
    uint64_t wait = (uint64_t)((double)pool->backoff_ms * jitter);

    pool->backoff_until_ms = now + wait;
    pool->backoff_ms = (uint32_t)((double)pool->backoff_ms * bo->multiplier);
    if (pool->backoff_ms > bo->max_ms)
        pool->backoff_ms = bo->max_ms;
    slb_log(pool->failures++ == 0 ? SLB_LOG_WARN : SLB_LOG_DEBUG, "backend %s: connect failed: %s (retry in %llu ms)",
            pool->be->name, slb_strerror(err), (unsigned long long)wait);
    slb_backend_set_state(pool->be, SLB_BACKEND_TRANSIENT_FAILURE);
    pool_arm_timer(pool);
    pool_redispatch_waiting(pool, err);
}

static void on_pool_timer(uv_timer_t *t)
{
    struct slb_upstream_pool *pool = t->data;
    uint64_t now = uv_now(pool->srv->loop);
    struct slb_upstream *uc, *next;

    for (uc = pool->conns; uc != NULL; uc = next) {
        next = uc->next;
        if (uc->connected || uc->conn.closing)
            continue;
        if (uc->connect_deadline_ms <= now) {
            slb_conn_close(&uc->conn, UV_ETIMEDOUT);
        } else if (uc->patience_ms <= now && pool->be->state != SLB_BACKEND_TRANSIENT_FAILURE) {
            /* still connecting: stop sending calls here, and move the waiting ones */
            slb_warn("backend %s: not connected after %u ms; calls go elsewhere while it keeps trying", pool->be->name,
                     pool->cfg->connect_timeout_ms);
            slb_backend_set_state(pool->be, SLB_BACKEND_TRANSIENT_FAILURE);
            pool->backoff_until_ms = uc->connect_deadline_ms;
            pool_redispatch_waiting(pool, UV_ETIMEDOUT);
        }
    }
    if (pool->be->state == SLB_BACKEND_TRANSIENT_FAILURE && pool->backoff_until_ms <= now)
        slb_backend_set_state(pool->be, SLB_BACKEND_IDLE); /* the next pick reconnects */
    pool_arm_timer(pool);
}

static void pool_arm_timer(struct slb_upstream_pool *pool)
{
    uint64_t now = uv_now(pool->srv->loop), next = UINT64_MAX;

    if (pool->closing)
        return;
    for (struct slb_upstream *uc = pool->conns; uc != NULL; uc = uc->next) {
        if (uc->connected || uc->conn.closing)
            continue;
        if (uc->connect_deadline_ms < next)
            next = uc->connect_deadline_ms;
        if (pool->be->state != SLB_BACKEND_TRANSIENT_FAILURE && uc->patience_ms < next)
            next = uc->patience_ms;
    }
    if (pool->be->state == SLB_BACKEND_TRANSIENT_FAILURE && pool->backoff_until_ms < next)
        next = pool->backoff_until_ms;
    if (next == UINT64_MAX) {
        uv_timer_stop(&pool->timer);
        return;
    }
    uv_timer_start(&pool->timer, on_pool_timer, next > now ? next - now : 0, 0);
}

void slb_upstream_stream_done(struct slb_upstream *uc)
{
    struct slb_upstream_pool *pool = uc->pool;

    if (uc->conn.closing)
        return;
    if ((uc->goaway || pool->be->draining) && uc->active == 0 && uc->calls == NULL) {
        slb_conn_close(&uc->conn, 0);
        return;
    }
    pool_feed(pool);
}

void slb_upstream_pool_drain(struct slb_upstream_pool *pool)
{
    struct slb_upstream *uc, *next;

    pool_redispatch_waiting(pool, 0);
    for (uc = pool->conns; uc != NULL; uc = next) {
        next = uc->next;
        if (uc->active == 0 && uc->calls == NULL)
            slb_conn_close(&uc->conn, 0);
    }
}

static void upstream_on_close(struct slb_conn *c, int err)
{
    struct slb_upstream *uc = slb_container_of(c, struct slb_upstream, conn);
    struct slb_upstream_pool *pool = uc->pool;
    int connect_failed = !uc->connected;

    if (uc->prev != NULL)
        uc->prev->next = uc->next;
    else
        pool->conns = uc->next;
    if (uc->next != NULL)
        uc->next->prev = uc->prev;
    pool->n_conns--;
    if (connect_failed)
        pool->n_connecting--;
    while (uc->calls != NULL) {
        struct slb_call *call = uc->calls;
        if (call->u_open) {
            call->u_open = 0;
            uc->active--;
        }
        uc->calls = call->u_next;
        if (uc->calls != NULL)
            uc->calls->u_prev = NULL;
        call->u_next = call->u_prev = NULL;
        call->uc = NULL;
        slb_call_on_upstream_lost(call, err, connect_failed);
    }
    if (connect_failed && err != 0) {
        pool_connect_failed(pool, err);
    } else {
        if (err != 0 && err != UV_EOF)
            slb_notice("backend %s: connection closed: %s", pool->be->name, slb_strerror(err));
        if (pool->n_conns == 0 && pool->be->state == SLB_BACKEND_READY)
            slb_backend_set_state(pool->be, SLB_BACKEND_IDLE);
        pool_feed(pool);
    }
}

static void upstream_on_free(struct slb_conn *c)
{
    struct slb_upstream *uc = slb_container_of(c, struct slb_upstream, conn);
    struct slb_backend *be = uc->pool->be;

    nghttp2_session_del(c->session);
    free(uc);
    slb_backend_unref(be); /* may free the backend and its pool */
}

/* ---- nghttp2 client callbacks ---- */

static struct slb_call *stream_call(nghttp2_session *s, struct slb_upstream *uc, int32_t sid)
{
    if (uc->conn.closing)
        return NULL;
    return nghttp2_session_get_stream_user_data(s, sid);
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, nghttp2_rcbuf *name, nghttp2_rcbuf *value,
                     uint8_t flags, void *user)
{
    struct slb_call *call = stream_call(s, user, frame->hd.stream_id);

    if (call == NULL)
        return 0;
    if (slb_call_on_response_header(call, name, value) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct slb_upstream *uc = user;
    struct slb_call *call;

    if (uc->conn.closing)
        return 0;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if ((call = stream_call(s, uc, frame->hd.stream_id)) != NULL)
            slb_call_on_response_headers_done(call, frame->headers.cat,
                                              (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
        break;
    case NGHTTP2_DATA:
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && (call = stream_call(s, uc, frame->hd.stream_id)) != NULL)
            slb_call_on_response_end(call);
        break;
    case NGHTTP2_GOAWAY:
        if (!uc->goaway)
            slb_info("backend %s: GOAWAY (last stream %d, error %u): draining connection", uc->pool->be->name,
                     frame->goaway.last_stream_id, frame->goaway.error_code);
        uc->goaway = 1;
        if (frame->goaway.error_code != NGHTTP2_NO_ERROR) {
            /* An error GOAWAY ends the connection: whatever it still carries
             * fails now (and may be retried) instead of waiting for a peer
             * that has given up on it. */
            slb_warn("backend %s: GOAWAY with error %u: closing the connection", uc->pool->be->name,
                     frame->goaway.error_code);
            slb_conn_close(&uc->conn, SLB_EPROTO);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        slb_upstream_stream_done(uc);
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            pool_feed(uc->pool); /* the stream limit may have changed */
        break;
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                              void *user)
{
    struct slb_upstream *uc = user;
    struct slb_call *call = stream_call(s, uc, sid);

    if (call == NULL) {
        if (!uc->conn.closing)
            nghttp2_session_consume_connection(s, len);
        return 0;
    }
    if (slb_call_on_response_data(call, data, len) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *user)
{
    struct slb_upstream *uc = user;
    struct slb_call *call = stream_call(s, uc, sid);

    if (uc->conn.closing)
        return 0;
    if (call != NULL && call->u_open) {
        uc->active--;
        slb_call_on_upstream_close(call, error_code);
    }
    slb_upstream_stream_done(uc);
    return 0;
}

static int on_send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t len,
                        nghttp2_data_source *src, void *user)
{
    return slb_call_request_send_cb(s, frame, framehd, len, src, user);
}

nghttp2_session_callbacks *slb_upstream_callbacks_new(void)
{
    nghttp2_session_callbacks *cbs;

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_header_callback2(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
    return cbs;
}
