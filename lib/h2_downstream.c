#include "h2_downstream.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "lb.h"
#include "log.h"
#include "loop_ctx.h"

/* Downstream flow-control windows: per stream and per connection. Together
 * with end-to-end consumption they bound what one app can make sidelb hold;
 * the connection window is at most a quarter of the connection's buffer
 * budget, so what an app sends after the budget bit stays within it. */
#define DOWNSTREAM_STREAM_WINDOW (256 * 1024)
#define DOWNSTREAM_CONN_WINDOW   (16 * 1024 * 1024)
/* libnghttp2's frame buffer (NGHTTP2_FRAMEBUF_CHUNKLEN: frame header, pad length, max payload);
 * between frames its content is unused. */
#define NGHTTP2_FRAMEBUF_SIZE (9 + 1 + 16384)
/* A connection idle this long gives its memory back (not per call: a busy app goes idle often). */
#define RELEASE_AFTER_MS 1000

/* What libnghttp2 may hold above the advertised stream limit (see slb__downstream_internal_stream_limit). */
#define INTERNAL_STREAM_MARGIN_MIN 100

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

/*
 * Streams past max_concurrent_streams are refused one by one (on_begin_headers), never the whole
 * connection. libnghttp2 cannot do that by itself: a HEADERS past its *acknowledged*
 * SETTINGS_MAX_CONCURRENT_STREAMS is a connection error (GOAWAY(PROTOCOL_ERROR)) before any
 * callback runs. So the session is given this higher limit, while the SETTINGS frame on the wire
 * carries the configured one (downstream_send_settings). The margin also bounds what a client
 * that ignores the limit can make libnghttp2 hold: a refused stream lives there until its
 * RST_STREAM is written (the next flush). Only a client with more than this many streams open
 * on sidelb's side at once, refused ones included, still gets the connection error.
 */
uint32_t slb__downstream_internal_stream_limit(uint32_t advertised)
{
    uint64_t margin = advertised > INTERNAL_STREAM_MARGIN_MIN ? advertised : INTERNAL_STREAM_MARGIN_MIN;
    uint64_t v = (uint64_t)advertised + margin;

    return v > 0x7fffffff ? 0x7fffffff : (uint32_t)v;
}

int slb__settings_frame_set(uint8_t *f, size_t n, uint16_t id, uint32_t v)
{
    size_t len;

    if (n < 9 || f[3] != NGHTTP2_SETTINGS || (f[4] & NGHTTP2_FLAG_ACK) || (f[5] | f[6] | f[7] | f[8]) != 0)
        return -1;
    len = (size_t)f[0] << 16 | (size_t)f[1] << 8 | f[2];
    if (len != n - 9 || len % 6 != 0)
        return -1;
    for (size_t off = 9; off < n; off += 6) {
        if ((uint16_t)(f[off] << 8 | f[off + 1]) != id)
            continue;
        f[off + 2] = (uint8_t)(v >> 24);
        f[off + 3] = (uint8_t)(v >> 16);
        f[off + 4] = (uint8_t)(v >> 8);
        f[off + 5] = (uint8_t)v;
        return 0;
    }
    return -1;
}

/* RFC 9110 tchar */
static int is_tchar(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int slb__http1_request_line(const uint8_t *p, size_t n)
{
    size_t i = 0, start;

    while (i < n && i < 32 && is_tchar(p[i])) /* method */
        i++;
    if (i == 0 || i >= n || p[i] != ' ')
        return 0;
    start = ++i;
    while (i < n && p[i] > 0x20 && p[i] < 0x7f) /* request-target */
        i++;
    if (i == start || i >= n || p[i] != ' ')
        return 0;
    i++;
    return n - i >= 8 && memcmp(p + i, "HTTP/1.", 7) == 0 && p[i + 7] >= '0' && p[i + 7] <= '9';
}

/*
 * Our SETTINGS frame is the first frame the session produces (a server's connection preface).
 * It is taken out of the session here, before anything else can flush the output, and edited:
 * the wire says max_concurrent_streams, the session keeps the internal limit.
 */
static void downstream_send_settings(struct slb_downstream *dc)
{
    const uint8_t *data;
    uint8_t f[64];
    ssize_t n;
    int rv;

    if (dc->settings_sent || dc->conn.closing)
        return;
    dc->settings_sent = 1;
    if ((n = nghttp2_session_mem_send(dc->conn.session, &data)) <= 0) {
        if (n < 0)
            slb_conn_close(&dc->conn, SLB_EPROTO);
        return;
    }
    if ((size_t)n <= sizeof(f)) {
        memcpy(f, data, (size_t)n);
        if (slb__settings_frame_set(f, (size_t)n, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                    dc->max_concurrent_streams) == 0)
            data = f;
    }
    if (data != f)
        slb_warn("app connection: first frame is not sidelb's SETTINGS: it advertises %u streams, not %u",
                 slb__downstream_internal_stream_limit(dc->max_concurrent_streams), dc->max_concurrent_streams);
    /* a new connection's socket takes these few bytes at once: an idle connection keeps no
     * output buffer for them */
    if ((rv = slb_conn_write_first(&dc->conn, data, (size_t)n)) != 0)
        slb_conn_close(&dc->conn, rv);
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

    if (!slb_log_limit_pass(l, uv_now(ctx->loop), 10000, &suppressed))
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
        log_limited(ctx, &ctx->log_limits.conn_refused, "refusing a new app connection, none is idle", set->name, cap);
        return -1;
    }
    ctx->stats.conns_evicted++;
    slb_debug("listener %s: at the connection cap (%u): closing an app connection idle for %llu ms", set->name, cap,
              (unsigned long long)(uv_now(ctx->loop) - victim->since_ms));
    log_limited(ctx, &ctx->log_limits.conn_evicted, "closing the longest idle app connection for a new one", set->name,
                cap);
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

/*
 * An app on a unix:/path listener. libuv's stream code is the same for TCP
 * and Unix sockets and uv_accept() opens the accepted fd into a uv_tcp_t as
 * well, so the connection keeps its uv_tcp_t (TCP-only options such as
 * TCP_NODELAY fail harmlessly). Its hash keys come from the peer's pid.
 */
static void downstream_unix_peer_keys(struct slb_downstream *dc)
{
    struct ucred cred = {0};
    socklen_t len = sizeof(cred);
    uv_os_fd_t fd = -1;

    if (uv_fileno((uv_handle_t *)&dc->conn.tcp, &fd) != 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        cred.pid = 0;
    slb_lb_peer_keys_init_unix(&dc->peer_keys, cred.pid, dc->ctx->stats.downstream_conns_total);
}

static int downstream_open(struct slb_downstream_set *set, uv_stream_t *server, int fd, int is_unix,
                           void (*on_gone)(struct slb_downstream *dc));

int slb_downstream_accept(struct slb_downstream_set *set, uv_stream_t *server,
                          void (*on_gone)(struct slb_downstream *dc))
{
    return downstream_open(set, server, -1, server->type == UV_NAMED_PIPE, on_gone);
}

int slb_downstream_adopt(struct slb_downstream_set *set, int fd, int is_unix,
                         void (*on_gone)(struct slb_downstream *dc))
{
    return downstream_open(set, NULL, fd, is_unix, on_gone);
}

/* An accepted connection: from the listening stream (server), or its socket (fd) when server is NULL. */
static int downstream_open(struct slb_downstream_set *set, uv_stream_t *server, int fd, int is_unix,
                           void (*on_gone)(struct slb_downstream *dc))
{
    struct slb_loop_ctx *ctx = set->ctx;
    struct slb_downstream *dc;
    struct sockaddr_storage peer;
    int peerlen = sizeof(peer);
    uint32_t max_concurrent_streams = set->max_concurrent_streams;
    nghttp2_settings_entry iv[] = {
        /* the session's limit; the wire gets max_concurrent_streams (downstream_send_settings) */
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, slb__downstream_internal_stream_limit(max_concurrent_streams)},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, DOWNSTREAM_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, set->max_header_list_size},
    };
    int rv;

    if (make_room(set) != 0) {
        if (server != NULL)
            return refuse(ctx, server);
        close(fd);
        return 0;
    }
    if ((dc = calloc(1, sizeof(*dc))) == NULL) {
        if (fd >= 0)
            close(fd);
        return SLB_ENOMEM;
    }
    if ((rv = slb_conn_init(&dc->conn, &ctx->io, &downstream_conn_ops)) != 0) {
        free(dc);
        if (fd >= 0)
            close(fd);
        return rv;
    }
    dc->ctx = ctx;
    dc->set = set;
    dc->routes = set->routes;
    dc->max_premature_resets = set->max_premature_resets;
    dc->max_concurrent_streams = set->max_concurrent_streams;
    dc->max_header_list_size = set->max_header_list_size;
    dc->max_sid = -1;
    dc->on_gone = on_gone;
    slb_list_init(&dc->streams);
    slb_list_push_back(&ctx->downstreams, &dc->ctx_link);
    slb_list_init(&dc->set_link);
    downstream_move(dc, SLB_DS_HANDSHAKING);
    set->n_conns++;
    ctx->n_app_conns++;
    ctx->stats.downstream_conns_total++;
    if ((rv = server != NULL ? uv_accept(server, (uv_stream_t *)&dc->conn.tcp) : uv_tcp_open(&dc->conn.tcp, fd)) != 0) {
        if (server == NULL)
            close(fd); /* the handle did not take it */
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
    /* the hash policies' keys, once per connection (hash_on source_ip / source_ip_port) */
    if (is_unix)
        downstream_unix_peer_keys(dc);
    else
        slb_lb_peer_keys_init(&dc->peer_keys, uv_tcp_getpeername(&dc->conn.tcp, (struct sockaddr *)&peer, &peerlen) == 0
                                                  ? (const struct sockaddr *)&peer
                                                  : NULL);
    nghttp2_submit_settings(dc->conn.session, NGHTTP2_FLAG_NONE, iv, SLB_ARRAY_SIZE(iv));
    nghttp2_session_set_local_window_size(dc->conn.session, NGHTTP2_FLAG_NONE, 0,
                                          ctx->budgets.connection_bytes / 4 < DOWNSTREAM_CONN_WINDOW
                                              ? (int32_t)(ctx->budgets.connection_bytes / 4)
                                              : DOWNSTREAM_CONN_WINDOW);
    if (set->tls != NULL) {
        /* TLS under the session (ALPN h2; client certificates when the listener asks for them) */
        struct slb_tls *t = slb_tls_server_new(set->tls, &set->tls_stats);
        if (t == NULL || (rv = slb_conn_use_tls(&dc->conn, t)) != 0) {
            slb_conn_close(&dc->conn, SLB_ENOMEM);
            return SLB_ENOMEM;
        }
    }
    /* Our SETTINGS go out after the client's first bytes proved to be the
     * HTTP/2 preface (downstream_on_read), so an HTTP/1 client gets a clean
     * plain-text refusal. */
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
    downstream_send_settings(dc);
    nghttp2_submit_shutdown_notice(dc->conn.session);
    slb_conn_mark_dirty(&dc->conn);
}

void slb_downstream_notice_all(struct slb_loop_ctx *ctx)
{
    struct slb_list *it, *tmp;

    slb_list_foreach_safe(it, tmp, &ctx->downstreams)
    {
        slb_downstream_notice(slb_list_entry(it, struct slb_downstream, ctx_link));
    }
}

void slb_downstream_shutdown_all(struct slb_loop_ctx *ctx)
{
    struct slb_list *it, *tmp;

    slb_list_foreach_safe(it, tmp, &ctx->downstreams)
    {
        slb_downstream_shutdown(slb_list_entry(it, struct slb_downstream, ctx_link));
    }
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
        downstream_send_settings(dc);
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

void slb_downstream_consume(struct slb_downstream *dc, size_t n)
{
    if (n == 0 || dc->conn.closing || dc->conn.session == NULL)
        return;
    nghttp2_session_consume_connection(dc->conn.session, n);
    slb_conn_mark_dirty(&dc->conn);
}

void slb_downstream_reset(struct slb_h2_stream *s, uint32_t code)
{
    if (s->conn == NULL || s->conn->closing)
        return;
    nghttp2_submit_rst_stream(s->conn->session, NGHTTP2_FLAG_NONE, s->sid, code);
    slb_conn_mark_dirty(s->conn);
}

/*
 * The client's first bytes are not the HTTP/2 preface. An HTTP/1.x request line (in the first
 * read, before any of our frames went out) gets a plain-text 505; anything else is a connection
 * error (RFC 9113 3.4): GOAWAY(PROTOCOL_ERROR) after our SETTINGS, then close. Nothing more is
 * read or parsed.
 */
static int downstream_bad_preface(struct slb_downstream *dc, const uint8_t *p, size_t n)
{
    struct slb_conn *c = &dc->conn;

    if (!dc->settings_sent && slb__http1_request_line(p, n)) {
        char resp[256];
        int len = snprintf(resp, sizeof(resp),
                           "HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\n"
                           "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                           sizeof(http1_body) - 1, http1_body);
        slb_info("refusing an HTTP/1.x request: sidelb speaks HTTP/2 only");
        slb_conn_write_raw(c, resp, (size_t)len, 1);
        return -1;
    }
    slb_info("app connection: invalid HTTP/2 connection preface: closing it with GOAWAY(PROTOCOL_ERROR)");
    uv_read_stop((uv_stream_t *)&c->tcp);
    downstream_send_settings(dc);
    if (c->closing)
        return -1;
    nghttp2_session_terminate_session(c->session, NGHTTP2_PROTOCOL_ERROR);
    slb_conn_close_when_flushed(c);
    return -1;
}

static int downstream_on_read(struct slb_conn *c, const uint8_t *p, size_t n)
{
    struct slb_downstream *dc = slb_container_of(c, struct slb_downstream, conn);
    ssize_t rv;

    if (dc->preface_checked < sizeof(h2_preface) - 1) {
        /* Compare what we have of the preface; anything else is refused clearly. */
        size_t want = sizeof(h2_preface) - 1 - dc->preface_checked;
        size_t k = n < want ? n : want;
        if (memcmp(p, h2_preface + dc->preface_checked, k) != 0)
            return downstream_bad_preface(dc, p, n);
        dc->preface_checked += (uint8_t)k;
        downstream_send_settings(dc);
        if (c->closing)
            return -1;
    }
    /* A callback that ends the connection stops the parse there (on_begin_frame, or
     * libnghttp2's own after terminating the session): the rest of this read is dropped. */
    rv = nghttp2_session_mem_recv(c->session, p, n);
    if (rv < 0) {
        if (!c->closing)
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
    uint64_t skipped;

    if (err == SLB_ETLS && slb_log_limit_pass(&dc->set->tls_log, uv_now(dc->ctx->loop), SLB_LOG_LIMIT_MS, &skipped))
        slb_info("listener %s: an app's TLS connection failed: %s (%llu more since the last such line)", dc->set->name,
                 slb_conn_strerror(c, err), (unsigned long long)skipped);

    while (!slb_list_empty(&dc->streams))
        stream_closed(dc, slb_list_first(&dc->streams, struct slb_h2_stream, link), NGHTTP2_CANCEL);
    slb_list_remove(&dc->ctx_link);
    slb_list_remove(&dc->set_link);
    dc->set->n_conns--;
    dc->ctx->n_app_conns--;
    dc->ctx->stats.downstream_conns_closed++;
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

/*
 * Notes the stream id of a HEADERS frame: 1 when the app had skipped that id earlier (it opened
 * a higher one first), which RFC 9113 5.1.1 makes a connection error. libnghttp2 ignores any
 * HEADERS on a lower id it does not hold, so that trailers racing our RST_STREAM stay harmless;
 * an id that was never opened cannot be such a race.
 */
static int downstream_stream_id_skipped(struct slb_downstream *dc, int32_t sid)
{
    if (sid > dc->max_sid) {
        int32_t next = dc->max_sid + 2; /* max_sid starts at -1 */
        if (sid > next) {
            /* a ring of the latest gaps (n_gaps wraps at 256, a multiple of the ring size) */
            dc->gap_lo[dc->n_gaps % SLB_DOWNSTREAM_SID_GAPS] = next;
            dc->gap_hi[dc->n_gaps % SLB_DOWNSTREAM_SID_GAPS] = sid - 2;
            dc->n_gaps++;
        }
        dc->max_sid = sid;
        return 0;
    }
    for (int i = 0; i < SLB_DOWNSTREAM_SID_GAPS; i++)
        if (dc->gap_lo[i] != 0 && dc->gap_lo[i] <= sid && sid <= dc->gap_hi[i])
            return 1;
    return 0;
}

/* A stream past max_concurrent_streams: refused before any call exists. */
static void downstream_refuse(struct slb_downstream *dc, int32_t sid)
{
    dc->ctx->stats.refused_streams++;
    if (!dc->refused_logged) {
        dc->refused_logged = 1;
        slb_info("app connection: stream %d is past max_concurrent_streams (%u): refused with REFUSED_STREAM, "
                 "as are later ones past it (logged once per connection)",
                 sid, dc->max_concurrent_streams);
    }
    nghttp2_submit_rst_stream(dc->conn.session, NGHTTP2_FLAG_NONE, sid, NGHTTP2_REFUSED_STREAM);
}

/* The header block being received passed max_header_list_size: its stream's user decides
 * (a gRPC status if the response has not started, else a reset). */
static void downstream_header_list_too_large(struct slb_downstream *dc, struct slb_h2_stream *st, int trailer)
{
    dc->hdr_over = 1;
    dc->ctx->stats.header_lists_too_large++;
    if (!dc->hdr_over_logged) {
        dc->hdr_over_logged = 1;
        slb_info("app connection: stream %d: request %s larger than max_header_list_size (%u bytes) (logged once "
                 "per connection)",
                 st->sid, trailer ? "trailers" : "headers", dc->max_header_list_size);
    }
    handler(dc)->on_header_list_too_large(st, trailer, dc->max_header_list_size);
}

/* ---- nghttp2 server callbacks ---- */

static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *user)
{
    struct slb_downstream *dc = user;

    if (dc->conn.closing)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* closed during this read: the rest is not parsed */
    if (hd->type == NGHTTP2_HEADERS && (hd->stream_id & 1) && downstream_stream_id_skipped(dc, hd->stream_id)) {
        slb_info("app connection: HEADERS on stream %d, an id it skipped before opening stream %d: closing it "
                 "with GOAWAY(PROTOCOL_ERROR)",
                 hd->stream_id, dc->max_sid);
        /* libnghttp2 then ignores the rest of the input */
        nghttp2_session_terminate_session(s, NGHTTP2_PROTOCOL_ERROR);
    }
    return 0;
}

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

    if (frame->hd.type != NGHTTP2_HEADERS || dc->conn.closing)
        return 0;
    /* a new header block: blocks are never interleaved on a connection */
    dc->hdr_bytes = 0;
    dc->hdr_over = 0;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (dc->n_streams >= dc->max_concurrent_streams) {
        downstream_refuse(dc, frame->hd.stream_id);
        return 0;
    }
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
    int trailer = frame->headers.cat == NGHTTP2_HCAT_HEADERS;

    if (st == NULL || dc->hdr_over)
        return 0;
    /* HTTP/2 counts name + value + 32 per field (RFC 9113 6.5.2); below 2^32: fields are at most
     * 64 KiB (libnghttp2's HPACK limit) and counting stops past the limit */
    dc->hdr_bytes += (uint32_t)(nghttp2_rcbuf_get_buf(name).len + nghttp2_rcbuf_get_buf(value).len + 32);
    if (dc->hdr_bytes > dc->max_header_list_size) {
        downstream_header_list_too_large(dc, st, trailer);
        return 0;
    }
    if (handler(dc)->on_header(st, name, value, trailer) != 0)
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
    if (slb_log_level_now() <= SLB_LOG_DEBUG)
        slb_debug("listener %s: %s after %u ms: closing the app connection", listener, what, ms);
    else if (slb_log_limit_pass(&ctx->log_limits.conn_timeouts, uv_now(ctx->loop), 1000, &suppressed))
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
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback2(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(cbs, slb_h2_send_data_cb);
    return cbs;
}
