#include "h2_downstream.h"

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

int slb_downstream_accept(struct slb_loop_ctx *ctx, const struct slb_routes *routes, uv_stream_t *server,
                          uint32_t max_concurrent_streams, uint32_t max_premature_resets,
                          void (*on_gone)(struct slb_downstream *dc))
{
    struct slb_downstream *dc = calloc(1, sizeof(*dc));
    struct sockaddr_storage peer;
    int peerlen = sizeof(peer);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, DOWNSTREAM_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    int rv;

    if (dc == NULL)
        return SLB_ENOMEM;
    if ((rv = slb_conn_init(&dc->conn, &ctx->io, &downstream_conn_ops)) != 0) {
        free(dc);
        return rv;
    }
    dc->ctx = ctx;
    dc->routes = routes;
    dc->max_premature_resets = max_premature_resets;
    dc->on_gone = on_gone;
    slb_list_init(&dc->streams);
    slb_list_push_back(&ctx->downstreams, &dc->ctx_link);
    ctx->stats.downstream_conns_total++;
    if ((rv = uv_accept(server, (uv_stream_t *)&dc->conn.tcp)) != 0 ||
        (rv = nghttp2_session_server_new3(&dc->conn.session, ctx->down_cbs, dc, ctx->down_opt, slb_h2_mem())) != 0) {
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
    dc->n_streams--;
    handler(dc)->on_close(s, error_code);
}

static void downstream_on_close(struct slb_conn *c, int err)
{
    struct slb_downstream *dc = slb_container_of(c, struct slb_downstream, conn);

    while (!slb_list_empty(&dc->streams))
        stream_closed(dc, slb_list_first(&dc->streams, struct slb_h2_stream, link), NGHTTP2_CANCEL);
    slb_list_remove(&dc->ctx_link);
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
    dc->n_streams++;
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
        if ((st = stream_of(s, dc, frame->hd.stream_id)) != NULL)
            handler(dc)->on_headers_done(st, frame->headers.cat == NGHTTP2_HCAT_HEADERS,
                                         (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
        break;
    case NGHTTP2_DATA:
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && (st = stream_of(s, dc, frame->hd.stream_id)) != NULL)
            handler(dc)->on_end(st);
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
