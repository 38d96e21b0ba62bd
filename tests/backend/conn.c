/*
 * One TCP connection = one nghttp2 server session (h2c, prior knowledge; or
 * h2 over TLS with --tls-cert: libsidelb's TLS filter, records in c->cipher).
 *
 * Output: nghttp2_session_mem_send() into one per-connection buffer, at most
 * one uv_write in flight; uv_try_write first so the common case needs no
 * write request at all. While a write is in flight nothing new is generated,
 * so the buffer stays near TB_WBUF_HIGH.
 */
#include "tb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static void conn_close(struct tb_conn *c);

static void on_conn_closed(uv_handle_t *h)
{
    struct tb_conn *c = slb_container_of(h, struct tb_conn, tcp);

    tb_buf_free(&c->wbuf);
    slb_tls_free(c->tls);
    slb_outbuf_dispose(&c->cipher);
    free(c);
    tb_conn_closed();
}

static void conn_close(struct tb_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    /* Streams still open lose their peer: that is a cancel for each. */
    while (!slb_list_empty(&c->streams))
        tb_stream_close(slb_list_first(&c->streams, struct tb_stream, link), NGHTTP2_CANCEL);
    nghttp2_session_del(c->h2);
    c->h2 = NULL;
    slb_list_remove(&c->link);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_write(uv_write_t *req, int status)
{
    struct tb_conn *c = slb_container_of(req, struct tb_conn, wreq);

    c->writing = 0;
    if (c->tls != NULL)
        c->cipher.len = c->cipher_off = 0;
    else
        c->wbuf.off = c->wbuf.len = 0;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    tb_conn_flush(c);
}

void tb_conn_flush(struct tb_conn *c)
{
    if (c->writing || c->closing)
        return;
    for (;;) {
        while (tb_buf_size(&c->wbuf) < TB_WBUF_HIGH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->h2, &data);
            if (n < 0) {
                if (tb_srv.opt.verbose)
                    fprintf(stderr, "test_backend: mem_send: %s\n", nghttp2_strerror((int)n));
                conn_close(c);
                return;
            }
            if (n == 0)
                break;
            if (tb_buf_append(&c->wbuf, data, (size_t)n) < 0) {
                conn_close(c);
                return;
            }
        }
        /* Streams whose output drained below the mark may generate more. */
        if (!slb_list_empty(&c->wake) && tb_buf_size(&c->wbuf) < TB_WBUF_HIGH) {
            /* a stream closed meanwhile leaves this list too; one woken again waits for the next round */
            struct slb_list woken = SLB_LIST_INIT(woken);
            slb_list_splice(&woken, &c->wake);
            while (!slb_list_empty(&woken)) {
                struct tb_stream *w = slb_list_first(&woken, struct tb_stream, wake_link);
                slb_list_remove(&w->wake_link);
                tb_call_process(w);
            }
            if (c->closing)
                return;
            continue;
        }
        size_t len = tb_buf_size(&c->wbuf);
        uint8_t *wp;
        if (c->tls != NULL) {
            /* frames wait until the handshake is done; then one SSL_write per flush */
            if (c->tls->established && len > 0) {
                slb_tls_set_output(c->tls, &c->cipher);
                if (slb_tls_write(c->tls, c->wbuf.data + c->wbuf.off, len) != 0) {
                    conn_close(c);
                    return;
                }
                c->wbuf.off = c->wbuf.len = 0;
            }
            len = c->cipher.len - c->cipher_off;
        }
        if (len == 0)
            break;
        wp = c->tls != NULL ? c->cipher.base + c->cipher_off : c->wbuf.data + c->wbuf.off;
        uv_buf_t b = uv_buf_init((char *)wp, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == (int)len) {
            if (c->tls != NULL)
                c->cipher.len = c->cipher_off = 0;
            else
                c->wbuf.off = c->wbuf.len = 0;
            continue;
        }
        if (n < 0 && n != UV_EAGAIN) {
            conn_close(c);
            return;
        }
        if (n < 0)
            n = 0;
        if (c->tls != NULL)
            c->cipher_off += (size_t)n;
        else
            c->wbuf.off += (size_t)n;
        b = uv_buf_init((char *)wp + n, (unsigned)(len - (size_t)n));
        if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
            conn_close(c);
            return;
        }
        c->writing = 1;
        return;
    }
    /* After a graceful GOAWAY the client closes: closing first could reset
     * (RST) a connection whose GOAWAY the client has not read yet. */
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) && !c->goaway)
        conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init((char *)tb_srv.rbuf, sizeof(tb_srv.rbuf));
}

/* TLS: handshake, then each record's plaintext to the session (libsidelb's filter). */
static void conn_tls_read(struct tb_conn *c, const uint8_t *p, size_t n)
{
    int k;

    slb_tls_feed(c->tls, p, n);
    slb_tls_set_output(c->tls, &c->cipher);
    if (!c->tls->established && (k = slb_tls_handshake(c->tls)) != 1) {
        if (k < 0) {
            if (tb_srv.opt.verbose)
                fprintf(stderr, "test_backend: TLS: %s\n", c->tls->error);
            conn_close(c);
            return;
        }
        tb_conn_flush(c); /* handshake records */
        return;
    }
    while ((k = slb_tls_read(c->tls, tb_srv.plain, sizeof(tb_srv.plain))) > 0) {
        if (nghttp2_session_mem_recv(c->h2, tb_srv.plain, (size_t)k) < 0) {
            tb_conn_flush(c);
            conn_close(c);
            return;
        }
        if (c->closing)
            return;
        slb_tls_set_output(c->tls, &c->cipher);
    }
    if (k < 0) {
        conn_close(c);
        return;
    }
    tb_conn_flush(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct tb_conn *c = slb_container_of(stream, struct tb_conn, tcp);

    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0 || c->closing)
        return;
    if (c->tls != NULL) {
        conn_tls_read(c, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    ssize_t rv = nghttp2_session_mem_recv(c->h2, (const uint8_t *)buf->base, (size_t)nread);
    if (rv < 0) {
        if (tb_srv.opt.verbose)
            fprintf(stderr, "test_backend: mem_recv: %s\n", nghttp2_strerror((int)rv));
        /* nghttp2 queued a GOAWAY for protocol errors; try to send it, then drop. */
        tb_conn_flush(c);
        conn_close(c);
        return;
    }
    tb_conn_flush(c);
}

void tb_conn_goaway(struct tb_conn *c)
{
    if (c->goaway || c->closing)
        return;
    c->goaway = 1;
    nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2), NGHTTP2_NO_ERROR,
                          NULL, 0);
}

/* --- nghttp2 callbacks ------------------------------------------------- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
    struct tb_conn *c = ud;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct tb_stream *s = tb_stream_new(c, frame->hd.stream_id);
    if (!s)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, s);
    return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, nghttp2_rcbuf *name, nghttp2_rcbuf *value,
                     uint8_t flags, void *ud)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* request trailers carry nothing we use */
    struct tb_stream *s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!s)
        return 0;
    return tb_stream_on_header(s, name, value) < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
    struct tb_conn *c = ud;
    struct tb_stream *s;

    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
        if (!s)
            return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            c->ncalls++;
            tb_call_start(s, frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
            if (tb_srv.opt.goaway_after && c->ncalls >= tb_srv.opt.goaway_after)
                tb_conn_goaway(c);
        } else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            tb_call_request_end(s);
        }
        break;
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
            if (s)
                tb_call_request_end(s);
        }
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *ud)
{
    struct tb_stream *s = nghttp2_session_get_stream_user_data(h2, stream_id);

    if (!s) {
        nghttp2_session_consume_connection(h2, len);
        return 0;
    }
    tb_call_data(s, data, len);
    return 0;
}

/* Like gRPC servers: a response that ends while the client is still sending
 * is followed by RST_STREAM(NO_ERROR), so the client stops. */
static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(h2, frame->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *ud)
{
    struct tb_stream *s = nghttp2_session_get_stream_user_data(h2, stream_id);

    if (s) {
        nghttp2_session_set_stream_user_data(h2, stream_id, NULL);
        tb_stream_close(s, error_code);
    }
    return 0;
}

int tb_h2_callbacks_init(void)
{
    nghttp2_session_callbacks *cb;

    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback2(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    tb_srv.callbacks = cb;
    if (nghttp2_option_new(&tb_srv.h2opt) != 0)
        return -1;
    nghttp2_option_set_no_auto_window_update(tb_srv.h2opt, 1);
    return 0;
}

void tb_conn_accept(uv_stream_t *listener)
{
    struct tb_conn *c = calloc(1, sizeof(*c));
    nghttp2_settings_entry iv[3];
    size_t niv = 0;

    if (!c)
        return;
    slb_list_init(&c->link);
    slb_list_init(&c->streams);
    slb_list_init(&c->wake);
    uv_tcp_init(tb_srv.loop, &c->tcp);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (nghttp2_session_server_new2(&c->h2, tb_srv.callbacks, c, tb_srv.h2opt) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    if (tb_srv.tls != NULL && (c->tls = slb_tls_server_new(tb_srv.tls, NULL)) == NULL) {
        nghttp2_session_del(c->h2);
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    tb_srv.connections++;
    slb_list_push_back(&tb_srv.conns, &c->link);

    iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, tb_srv.opt.max_concurrent_streams};
    iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, tb_srv.opt.window};
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, niv);
    if (tb_srv.opt.conn_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)tb_srv.opt.conn_window);
    if (tb_srv.draining)
        tb_conn_goaway(c);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    tb_conn_flush(c);
}
