#include "h2_downstream.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "lb.h"
#include "log.h"
#include "loop_ctx.h"

/* Downstream flow-control windows: per stream and per connection. Together
 * with end-to-end consumption they bound what one app can make sidelb hold. */
#define DOWNSTREAM_STREAM_WINDOW (256 * 1024)
#define DOWNSTREAM_CONN_WINDOW   (16 * 1024 * 1024)
/* libnghttp2's frame buffer (NGHTTP2_FRAMEBUF_CHUNKLEN: frame header, pad length, max payload);
 * between frames its content is unused. */
#define NGHTTP2_FRAMEBUF_SIZE (9 + 1 + 16384)
/* A connection idle this long gives its memory back (not per call: a busy app goes idle often). */
#define RELEASE_AFTER_MS 1000

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
static const char http1_body[] =
    "sidelb speaks HTTP/2 only (h2c with prior knowledge, as gRPC clients do), not HTTP/1.x\n";

static int downstream_on_read(struct slb_conn *c, const uint8_t *p, size_t n);
static void downstream_on_close(struct slb_conn *c, int err);
static void downstream_on_free(struct slb_conn *c);

static const struct slb_conn_ops downstream_conn_ops = {
    .on_read = downstream_on_read,
    .on_close = downstream_on_close,
    .on_free = downstream_on_free,
};

static const struct slb_downstream_handler *handler(const struct slb_downstream *dc)
{
    return dc->ctx->down_handler;
}

void slb_downstream_set_init(struct slb_downstream_set *set, struct slb_loop_ctx *ctx, const char *name,
                             const struct slb_routes *routes)
{
    memset(set, 0, sizeof(*set));
    set->ctx = ctx;
    set->name = name;
    set->routes = routes;
    slb_list_init(&set->handshaking);
    slb_list_init(&set->idle);
    slb_list_init(&set->busy);
    slb_list_push_back(&ctx->downstream_sets, &set->ctx_link);
}

static uint64_t now_ms(const struct slb_downstream *dc)
{
    return uv_now(dc->ctx->loop);
}

/* Moves dc to the tail of one of its set's lists (the newest there). */
static void downstream_move(struct slb_downstream *dc, enum slb_downstream_where where)
{
    static const size_t off[] = {offsetof(struct slb_downstream_set, handshaking),
                                 offsetof(struct slb_downstream_set, idle), offsetof(struct slb_downstream_set, busy)};

    slb_list_remove(&dc->set_link);
    slb_list_push_back((struct slb_list *)((char *)dc->set + off[where]), &dc->set_link);
    dc->where = (uint8_t)where;
    dc->since_ms = now_ms(dc);
    dc->released = 0;
    slb_conn_keep_buffers(&dc->conn);
}

/* An idle connection's memory goes back: output buffers grown under back-pressure, the pages of
 * nghttp2's frame buffer, and its stream map's when empty. They come back on use. */
static void downstream_release(struct slb_downstream *dc)
{
    dc->released = 1;
    slb_conn_trim_when_idle(&dc->conn);
    for (unsigned i = 0; i < dc->mem.n; i++)
        slb_h2_mem_release(&dc->mem, i, dc->mem.size[i] == NGHTTP2_FRAMEBUF_SIZE);
}

/* The set's connection idle the longest (handshaking ones count as idle since their accept), or NULL. */
static struct slb_downstream *oldest_idle(struct slb_downstream_set *set)
{
    struct slb_downstream *h = NULL, *i = NULL;

    if (!slb_list_empty(&set->handshaking))
        h = slb_list_first(&set->handshaking, struct slb_downstream, set_link);
    if (!slb_list_empty(&set->idle))
        i = slb_list_first(&set->idle, struct slb_downstream, set_link);
    if (h == NULL || (i != NULL && i->since_ms < h->since_ms))
        return i;
    return h;
}

/* Closes a connection without streams: GOAWAY(NO_ERROR) written at once if the socket takes it,
 * then the close (the file descriptor is free when this returns). */
static void downstream_close_idle(struct slb_downstream *dc)
{
    if (dc->conn.closing)
        return;
    if (dc->conn.session != NULL && dc->preface_checked == sizeof(h2_preface) - 1 && !dc->conn.raw_only) {
        nghttp2_session_terminate_session(dc->conn.session, NGHTTP2_NO_ERROR);
        slb_conn_flush_now(&dc->conn);
    }
    slb_conn_close(&dc->conn, 0);
}

static void log_limited(struct slb_loop_ctx *ctx, struct slb_log_limit *l, const char *what, const char *listener,
                        uint32_t cap)
{
    uint64_t suppressed;

    if (!slb_log_limit_ok(l, uv_now(ctx->loop), 10000, &suppressed))
        return;
    if (suppressed > 0)
        slb_notice("listener %s: at the app connection cap (%u): %s (%llu more times in the last 10 s)", listener, cap,
                   what, (unsigned long long)suppressed);
    else
        slb_notice("listener %s: at the app connection cap (%u): %s", listener, cap, what);
}

/*
 * Room for one more connection: at a cap, evict the oldest idle connection
 * (of this listener when its own cap is reached, else of any listener).
 * 0, or -1 when nothing can be evicted.
 */
static int make_room(struct slb_downstream_set *set)
{
    struct slb_loop_ctx *ctx = set->ctx;
    struct slb_downstream *victim = NULL;
    uint32_t cap;

    if (set->max_connections != 0 && set->n_conns >= set->max_connections) {
        cap = set->max_connections;
        victim = oldest_idle(set);
    } else if (ctx->max_app_conns != 0 && ctx->n_app_conns >= ctx->max_app_conns) {
        struct slb_list *it, *tmp;
        cap = ctx->max_app_conns;
        slb_list_foreach_safe(it, tmp, &ctx->downstream_sets)
        {
            struct slb_downstream *d = oldest_idle(slb_list_entry(it, struct slb_downstream_set, ctx_link));
            if (d != NULL && (victim == NULL || d->since_ms < victim->since_ms))
                victim = d;
        }
    } else {
        return 0;
    }
    if (victim == NULL) {
        ctx->stats.conns_refused++;
        log_limited(ctx, &ctx->log_refused, "refusing a new app connection, none is idle", set->name, cap);
        return -1;
    }
    ctx->stats.conns_evicted++;
    slb_debug("listener %s: at the connection cap (%u): closing an app connection idle for %llu ms", set->name, cap,
              (unsigned long long)(uv_now(ctx->loop) - victim->since_ms));
    log_limited(ctx, &ctx->log_evicted, "closing the longest idle app connection for a new one", set->name, cap);
    downstream_close_idle(victim);
    return 0;
}

static void on_refused_closed(uv_handle_t *h)
{
    free(h);
}

/* Accepts and closes at once, so the listen backlog does not fill with connections nobody serves. */
static int refuse(struct slb_loop_ctx *ctx, uv_stream_t *server)
{
    uv_tcp_t *t = malloc(sizeof(*t));
    int rv;

    if (t == NULL)
        return SLB_ENOMEM;
    if ((rv = uv_tcp_init(ctx->loop, t)) != 0) {
        free(t);
        return rv;
    }
    rv = uv_accept(server, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, on_refused_closed);
    return rv;
}

int slb_downstream_accept(struct slb_downstream_set *set, uv_stream_t *server,
                          void (*on_gone)(struct slb_downstream *dc))
{
    struct slb_loop_ctx *ctx = set->ctx;
    struct slb_downstream *dc;
    struct sockaddr_storage peer;
    int peerlen = sizeof(peer);
    uint32_t max_concurrent_streams = set->max_concurrent_streams;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, DOWNSTREAM_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    int rv;

    if (make_room(set) != 0)
        return refuse(ctx, server);
    if ((dc = calloc(1, sizeof(*dc))) == NULL)
        return SLB_ENOMEM;
    if ((rv = slb_conn_init(&dc->conn, &ctx->io, &downstream_conn_ops)) != 0) {
        free(dc);
        return rv;
    }
    dc->ctx = ctx;
    dc->set = set;
    dc->routes = set->routes;
    dc->max_premature_resets = set->max_premature_resets;
    dc->on_gone = on_gone;
    slb_list_init(&dc->streams);
    slb_list_push_back(&ctx->downstreams, &dc->ctx_link);
    slb_list_init(&dc->set_link);
    downstream_move(dc, SLB_DS_HANDSHAKING);
    set->n_conns++;
    ctx->n_app_conns++;
    ctx->stats.downstream_conns_total++;
    if ((rv = uv_accept(server, (uv_stream_t *)&dc->conn.tcp)) != 0) {
        slb_conn_close(&dc->conn, rv);
        return rv;
    }
    slb_h2_mem_capture_begin(&dc->mem);
    rv = nghttp2_session_server_new3(&dc->conn.session, ctx->down_cbs, dc, ctx->down_opt, slb_h2_mem());
    slb_h2_mem_capture_end();
    if (rv != 0) {
        slb_conn_close(&dc->conn, rv);
        return rv;
    }
    if (uv_tcp_getpeername(&dc->conn.tcp, (struct sockaddr *)&peer, &peerlen) == 0) {
        if (peer.ss_family == AF_INET)
            dc->peer_hash = slb_hash64(&((struct sockaddr_in *)&peer)->sin_addr, 4);
        else if (peer.ss_family == AF_INET6)
            dc->peer_hash = slb_hash64(&((struct sockaddr_in6 *)&peer)->sin6_addr, 16);
    }
    nghttp2_submit_settings(dc->conn.session, NGHTTP2_FLAG_NONE, iv, SLB_ARRAY_SIZE(iv));
    nghttp2_session_set_local_window_size(dc->conn.session, NGHTTP2_FLAG_NONE, 0, DOWNSTREAM_CONN_WINDOW);
    /* Our SETTINGS go out after the client's first bytes proved to be the
     * HTTP/2 preface, so an HTTP/1 client gets a clean plain-text refusal. */
    if ((rv = slb_conn_start(&dc->conn)) != 0) {
        slb_conn_close(&dc->conn, rv);
        return rv;
    }
    return 0;
}

void slb_downstream_notice(struct slb_downstream *dc)
{
    if (dc->conn.closing || dc->conn.session == NULL)
        return;
    nghttp2_submit_shutdown_notice(dc->conn.session);
    slb_conn_mark_dirty(&dc->conn);
}

void slb_downstream_shutdown(struct slb_downstream *dc)
{
    if (dc->conn.closing)
        return;
    dc->shutting_down = 1;
    if (dc->conn.session == NULL) {
        slb_conn_close(&dc->conn, 0);
        return;
    }
    if (!dc->goaway_sent) {
        dc->goaway_sent = 1;
        nghttp2_submit_goaway(dc->conn.session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(dc->conn.session), NGHTTP2_NO_ERROR, NULL, 0);
    }
    if (dc->n_streams == 0)
        slb_conn_close_when_flushed(&dc->conn); /* once the GOAWAY is out */
    slb_conn_mark_dirty(&dc->conn);
}

int slb_downstream_respond(struct slb_h2_stream *s, const nghttp2_nv *nv, size_t n, int has_body)
{
    int rv;

    if (s->conn == NULL || s->conn->closing)
        return SLB_EPROTO;
    s->active_ms = uv_now(s->conn->ctx->loop);
    rv = nghttp2_submit_response(s->conn->session, s->sid, nv, n, has_body ? &slb_h2_body_provider : NULL);
    slb_conn_mark_dirty(s->conn);
    return rv == 0 ? 0 : SLB_EPROTO;
}

void slb_downstream_reset(struct slb_h2_stream *s, uint32_t code)
{
    if (s->conn == NULL || s->conn->closing)
        return;
    nghttp2_submit_rst_stream(s->conn->session, NGHTTP2_FLAG_NONE, s->sid, code);
    slb_conn_mark_dirty(s->conn);
}

static int downstream_on_read(struct slb_conn *c, const uint8_t *p, size_t n)
{
    struct slb_downstream *dc = slb_container_of(c, struct slb_downstream, conn);
    ssize_t rv;

    if (dc->preface_checked < sizeof(h2_preface) - 1) {
        /* Compare what we have of the preface; anything else is refused clearly. */
        size_t want = sizeof(h2_preface) - 1 - dc->preface_checked;
        size_t k = n < want ? n : want;
        if (memcmp(p, h2_preface + dc->preface_checked, k) != 0) {
            slb_info("refusing a non-HTTP/2 connection (HTTP/1.x request?)");
            char resp[256];
            int len = snprintf(resp, sizeof(resp),
                               "HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\n"
                               "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                               sizeof(http1_body) - 1, http1_body);
            slb_conn_write_raw(c, resp, (size_t)len, 1);
            return -1;
        }
        dc->preface_checked += (uint8_t)k;
    }
    rv = nghttp2_session_mem_recv(c->session, p, n);
    if (rv < 0) {
        slb_debug("downstream protocol error: %s", nghttp2_strerror((int)rv));
        slb_conn_close(c, SLB_EPROTO);
        return -1;
    }
    return 0;
}

/* The stream is over: unbind it and tell its user. */
static void stream_closed(struct slb_downstream *dc, struct slb_h2_stream *s, uint32_t error_code)
{
    slb_h2_stream_unbind(s, 0);
    if (--dc->n_streams == 0 && !dc->conn.closing)
        downstream_move(dc, SLB_DS_IDLE);
    handler(dc)->on_close(s, error_code);
}

static void downstream_on_close(struct slb_conn *c, int err)
{
    struct slb_downstream *dc = slb_container_of(c, struct slb_downstream, conn);

    while (!slb_list_empty(&dc->streams))
        stream_closed(dc, slb_list_first(&dc->streams, struct slb_h2_stream, link), NGHTTP2_CANCEL);
    slb_list_remove(&dc->ctx_link);
    slb_list_remove(&dc->set_link);
    dc->set->n_conns--;
    dc->ctx->n_app_conns--;
}

static void downstream_on_free(struct slb_conn *c)
{
    struct slb_downstream *dc = slb_container_of(c, struct slb_downstream, conn);
    void (*on_gone)(struct slb_downstream *) = dc->on_gone;

    if (c->session != NULL)
        nghttp2_session_del(c->session);
    if (on_gone != NULL)
        on_gone(dc); /* dc is still valid here; freed right after */
    free(dc);
}

/*
 * Rapid reset (CVE-2023-44487): opening streams and resetting them at once
 * costs the app nothing and sidelb (and backends) work. Like Envoy, an app
 * connection that reset max_premature_resets streams before their response,
 * at least half of all it opened, is told to calm down and closed. Only
 * that connection pays.
 */
static void downstream_note_reset(struct slb_downstream *dc)
{
    dc->premature_resets++;
    if (dc->max_premature_resets == 0 || dc->premature_resets < dc->max_premature_resets ||
        (uint64_t)dc->premature_resets * 2 < dc->streams_opened || dc->conn.closing)
        return;
    slb_warn("app connection: %u of %u streams reset before their response (rapid reset?): closing it with "
             "ENHANCE_YOUR_CALM",
             dc->premature_resets, dc->streams_opened);
    dc->ctx->stats.rapid_reset_closes++;
    dc->max_premature_resets = 0; /* once */
    nghttp2_session_terminate_session(dc->conn.session, NGHTTP2_ENHANCE_YOUR_CALM);
    slb_conn_close_when_flushed(&dc->conn);
}

/* ---- nghttp2 server callbacks ---- */

static struct slb_h2_stream *stream_of(nghttp2_session *s, struct slb_downstream *dc, int32_t sid)
{
    if (dc->conn.closing)
        return NULL;
    return slb_h2_stream_of(s, sid);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct slb_downstream *dc = user;
    struct slb_h2_stream *st;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST || dc->conn.closing)
        return 0;
    if ((st = handler(dc)->open(dc)) == NULL) {
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    slb_h2_stream_bind(st, &dc->conn, &dc->streams, frame->hd.stream_id);
    if (dc->n_streams++ == 0)
        downstream_move(dc, SLB_DS_BUSY);
    dc->streams_opened++;
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, nghttp2_rcbuf *name, nghttp2_rcbuf *value,
                     uint8_t flags, void *user)
{
    struct slb_downstream *dc = user;
    struct slb_h2_stream *st = stream_of(s, dc, frame->hd.stream_id);

    if (st == NULL)
        return 0;
    if (handler(dc)->on_header(st, name, value, frame->headers.cat == NGHTTP2_HCAT_HEADERS) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct slb_downstream *dc = user;
    struct slb_h2_stream *st;

    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if ((st = stream_of(s, dc, frame->hd.stream_id)) != NULL) {
            st->active_ms = now_ms(dc);
            handler(dc)->on_headers_done(st, frame->headers.cat == NGHTTP2_HCAT_HEADERS,
                                         (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
        }
        break;
    case NGHTTP2_DATA: /* on_data_chunk_recv stamped the stream */
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && (st = stream_of(s, dc, frame->hd.stream_id)) != NULL)
            handler(dc)->on_end(st);
        break;
    case NGHTTP2_SETTINGS:
        /* the preface and the app's first SETTINGS are in: the handshake is over */
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && dc->where == SLB_DS_HANDSHAKING && !dc->conn.closing)
            downstream_move(dc, dc->n_streams > 0 ? SLB_DS_BUSY : SLB_DS_IDLE);
        break;
    case NGHTTP2_RST_STREAM:
        /* a stream the app resets while its call is still going */
        if (stream_of(s, dc, frame->hd.stream_id) != NULL)
            downstream_note_reset(dc);
        break;
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                              void *user)
{
    struct slb_downstream *dc = user;
    struct slb_h2_stream *st = stream_of(s, dc, sid);

    if (st == NULL) {
        if (!dc->conn.closing)
            nghttp2_session_consume(s, sid, len); /* nobody will read it: keep the windows open */
        return 0;
    }
    st->active_ms = now_ms(dc);
    if (handler(dc)->on_data(st, data, len) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct slb_downstream *dc = user;
    struct slb_h2_stream *st;

    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && (st = stream_of(s, dc, frame->hd.stream_id)) != NULL)
        handler(dc)->on_response_sent(st);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *user)
{
    struct slb_downstream *dc = user;
    struct slb_h2_stream *st = stream_of(s, dc, sid);

    if (st != NULL)
        stream_closed(dc, st, error_code);
    if (dc->shutting_down && dc->n_streams == 0)
        slb_downstream_shutdown(dc);
    return 0;
}

/* ---- timeouts: one sweep a second over the ordered lists ---- */

static void log_timeout(struct slb_loop_ctx *ctx, const char *listener, const char *what, uint32_t ms)
{
    uint64_t suppressed;

    /* one line per connection at debug level; at info level at most one line a second */
    if (slb_log_level <= SLB_LOG_DEBUG)
        slb_debug("listener %s: %s after %u ms: closing the app connection", listener, what, ms);
    else if (slb_log_limit_ok(&ctx->log_timeouts, uv_now(ctx->loop), 1000, &suppressed))
        slb_info("listener %s: %s after %u ms: closing the app connection (%llu more such closes not logged)", listener,
                 what, ms, (unsigned long long)suppressed);
}

static void sweep_streams(struct slb_downstream *dc, uint64_t now)
{
    uint32_t limit = dc->set->stream_idle_timeout_ms;
    struct slb_list *it, *tmp;

    slb_list_foreach_safe(it, tmp, &dc->streams)
    {
        struct slb_h2_stream *st = slb_list_entry(it, struct slb_h2_stream, link);
        if (dc->conn.closing)
            return;
        if (!st->idle_fired && now - st->active_ms >= limit) {
            st->idle_fired = 1;
            st->active_ms = now;
            dc->ctx->stats.stream_idle_timeouts++;
            slb_debug("listener %s: stream %d idle for %u ms: ending its call", dc->set->name, st->sid, limit);
            handler(dc)->on_idle(st, limit); /* may close the stream (st) */
        } else if (st->idle_fired && now - st->active_ms >= 1000) {
            /* its error status could not go out (the app does not read): reset it */
            slb_downstream_reset(st, NGHTTP2_CANCEL);
            st->active_ms = now;
        }
    }
}

/* The idle list is oldest first: walk back from the newest, past those idle for less than
 * RELEASE_AFTER_MS, and release until one released already (all older ones are). */
static void release_idle(struct slb_downstream_set *set, uint64_t now)
{
    struct slb_list *it = set->idle.prev;

    while (it != &set->idle) {
        struct slb_downstream *dc = slb_list_entry(it, struct slb_downstream, set_link);
        it = it->prev;
        if (now - dc->since_ms < RELEASE_AFTER_MS)
            continue;
        if (dc->released)
            break;
        downstream_release(dc);
    }
}

static void sweep_set(struct slb_downstream_set *set, uint64_t now)
{
    struct slb_loop_ctx *ctx = set->ctx;
    struct slb_list *it, *tmp;

    while (set->handshake_timeout_ms != 0 && !slb_list_empty(&set->handshaking)) {
        struct slb_downstream *dc = slb_list_first(&set->handshaking, struct slb_downstream, set_link);
        if (now - dc->since_ms < set->handshake_timeout_ms)
            break;
        ctx->stats.handshake_timeouts++;
        log_timeout(ctx, set->name, "no HTTP/2 preface and SETTINGS", set->handshake_timeout_ms);
        slb_conn_close(&dc->conn, 0); /* leaves the list */
    }
    while (set->idle_timeout_ms != 0 && !slb_list_empty(&set->idle)) {
        struct slb_downstream *dc = slb_list_first(&set->idle, struct slb_downstream, set_link);
        if (now - dc->since_ms < set->idle_timeout_ms)
            break;
        ctx->stats.idle_timeouts++;
        log_timeout(ctx, set->name, "no streams", set->idle_timeout_ms);
        downstream_close_idle(dc);
    }
    release_idle(set, now);
    if (set->stream_idle_timeout_ms != 0)
        slb_list_foreach_safe(it, tmp, &set->busy)
        {
            sweep_streams(slb_list_entry(it, struct slb_downstream, set_link), now);
        }
}

void slb_downstream_sweep(struct slb_loop_ctx *ctx)
{
    uint64_t now = uv_now(ctx->loop);
    struct slb_list *it, *tmp;

    slb_list_foreach_safe(it, tmp, &ctx->downstream_sets)
    {
        sweep_set(slb_list_entry(it, struct slb_downstream_set, ctx_link), now);
    }
}

nghttp2_session_callbacks *slb_downstream_callbacks_new(void)
{
    nghttp2_session_callbacks *cbs;

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback2(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(cbs, slb_h2_send_data_cb);
    return cbs;
}
