#include "h2_downstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "lb.h"
#include "log.h"
#include "proxy.h"
#include "server.h"

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

int slb_downstream_accept(struct slb_listener *l)
{
    struct slb_server *srv = l->srv;
    struct slb_downstream *dc = calloc(1, sizeof(*dc));
    struct sockaddr_storage peer;
    int peerlen = sizeof(peer);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, l->cfg->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, DOWNSTREAM_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    int rv;

    if (dc == NULL)
        return SLB_ENOMEM;
    if ((rv = slb_conn_init(&dc->conn, &srv->io, &downstream_conn_ops)) != 0) {
        free(dc);
        return rv;
    }
    dc->listener = l;
    dc->next = srv->downstreams;
    if (srv->downstreams != NULL)
        srv->downstreams->prev = dc;
    srv->downstreams = dc;
    srv->stats.downstream_conns_total++;
    if ((rv = uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&dc->conn.tcp)) != 0 ||
        (rv = nghttp2_session_server_new3(&dc->conn.session, srv->down_cbs, dc, srv->down_opt, slb_h2_mem())) != 0) {
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

void slb_downstream_shutdown(struct slb_downstream *dc)
{
    if (dc->conn.closing)
        return;
    if (!dc->goaway_sent) {
        dc->goaway_sent = 1;
        nghttp2_submit_goaway(dc->conn.session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(dc->conn.session), NGHTTP2_NO_ERROR, NULL, 0);
    }
    if (dc->n_calls == 0)
        slb_conn_close_when_flushed(&dc->conn); /* once the GOAWAY is out */
    slb_conn_mark_dirty(&dc->conn);
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

static void downstream_on_close(struct slb_conn *c, int err)
{
    struct slb_downstream *dc = slb_container_of(c, struct slb_downstream, conn);
    struct slb_server *srv = dc->listener->srv;

    while (dc->calls != NULL)
        slb_call_on_downstream_close(dc->calls, NGHTTP2_CANCEL);
    if (dc->prev != NULL)
        dc->prev->next = dc->next;
    else
        srv->downstreams = dc->next;
    if (dc->next != NULL)
        dc->next->prev = dc->prev;
}

static void downstream_on_free(struct slb_conn *c)
{
    struct slb_downstream *dc = slb_container_of(c, struct slb_downstream, conn);
    struct slb_server *srv = dc->listener->srv;

    nghttp2_session_del(c->session);
    free(dc);
    slb_server_downstream_gone(srv);
}

/* ---- nghttp2 server callbacks ---- */

static struct slb_call *stream_call(nghttp2_session *s, struct slb_downstream *dc, int32_t sid)
{
    if (dc->conn.closing)
        return NULL;
    return nghttp2_session_get_stream_user_data(s, sid);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct slb_downstream *dc = user;
    struct slb_call *call;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST || dc->conn.closing)
        return 0;
    if ((call = slb_call_new(dc->listener->srv, dc, frame->hd.stream_id)) == NULL) {
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, call);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, nghttp2_rcbuf *name, nghttp2_rcbuf *value,
                     uint8_t flags, void *user)
{
    struct slb_call *call = stream_call(s, user, frame->hd.stream_id);

    if (call == NULL)
        return 0;
    if (slb_call_on_request_header(call, name, value) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct slb_call *call;

    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if ((call = stream_call(s, user, frame->hd.stream_id)) != NULL)
            slb_call_on_request_headers_done(call, (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
        break;
    case NGHTTP2_DATA:
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && (call = stream_call(s, user, frame->hd.stream_id)) != NULL)
            slb_call_on_request_end(call);
        break;
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                              void *user)
{
    struct slb_downstream *dc = user;
    struct slb_call *call = stream_call(s, dc, sid);

    if (call == NULL) {
        if (!dc->conn.closing)
            nghttp2_session_consume_connection(s, len);
        return 0;
    }
    if (slb_call_on_request_data(call, data, len) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct slb_call *call;

    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && (call = stream_call(s, user, frame->hd.stream_id)) != NULL)
        slb_call_on_downstream_frame_sent(call, frame);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *user)
{
    struct slb_downstream *dc = user;
    struct slb_call *call = stream_call(s, dc, sid);

    if (call != NULL)
        slb_call_on_downstream_close(call, error_code);
    if (dc->listener->srv->goaway_final && dc->n_calls == 0)
        slb_downstream_shutdown(dc);
    return 0;
}

static int on_send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t len,
                        nghttp2_data_source *src, void *user)
{
    return slb_call_response_send_cb(s, frame, framehd, len, src, user);
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
    nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
    return cbs;
}
