#include "h2_conn.h"

#include <string.h>

#include "common.h"
#include "h2_headers.h"
#include "log.h"
#include "tls.h"

#include <stdlib.h>

#define CONN_TLS_PLAIN (16 * 1024) /* one TLS record's plaintext at most */

static void conn_flush(struct slb_conn *c);

static void on_flush_handle(uv_handle_t *h)
{
    slb_conn_ctx_flush(h->data);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_prepare(uv_prepare_t *h)
{
    struct slb_conn_ctx *ctx = h->data;

    ctx->turn++; /* the poll phase that follows is a new turn */
    on_flush_handle((uv_handle_t *)h);
}

/* After the poll phase: every ready connection was served once; the paused ones read again next turn. */
static void resume_paused(struct slb_conn_ctx *ctx)
{
    while (ctx->paused != NULL) {
        struct slb_conn *c = ctx->paused;
        ctx->paused = c->next_paused;
        c->next_paused = NULL;
        c->read_paused = 0;
        if (!c->closing && !c->raw_only && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
            slb_conn_close(c, SLB_EPROTO);
    }
}

static void on_check(uv_check_t *h)
{
    on_flush_handle((uv_handle_t *)h);
    resume_paused(h->data);
}

/* One connection read its share of this turn: stop reading it until the check handle runs. */
static void conn_pause_reading(struct slb_conn *c, size_t nread)
{
    struct slb_conn_ctx *ctx = c->ctx;

    if (c->turn != ctx->turn) {
        c->turn = ctx->turn;
        c->turn_bytes = 0;
    }
    c->turn_bytes += (uint32_t)nread;
    if (c->turn_bytes < ctx->read_per_turn || c->read_paused || c->closing)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->read_paused = 1;
    c->next_paused = ctx->paused;
    ctx->paused = c;
    ctx->read_pauses++;
    if (!c->pause_logged) {
        c->pause_logged = 1;
        slb_info("a connection read %u bytes in one loop turn: it waits for the next turn (budgets.read_bytes_per_turn "
                 "%u); logged once per connection",
                 c->turn_bytes, ctx->read_per_turn);
    }
}

int slb_conn_ctx_init(struct slb_conn_ctx *ctx, uv_loop_t *loop)
{
    memset(ctx, 0, sizeof(*ctx) - sizeof(ctx->rbuf));
    ctx->loop = loop;
    ctx->dirty = NULL;
    uv_prepare_init(loop, &ctx->prepare);
    uv_check_init(loop, &ctx->check);
    ctx->n_handles = 2;
    ctx->prepare.data = ctx->check.data = ctx;
    uv_prepare_start(&ctx->prepare, on_prepare);
    uv_check_start(&ctx->check, on_check);
    /* They must not keep the loop alive by themselves. */
    uv_unref((uv_handle_t *)&ctx->prepare);
    uv_unref((uv_handle_t *)&ctx->check);
    return 0;
}

void slb_conn_ctx_dispose(struct slb_conn_ctx *ctx)
{
    slb_outbuf_dispose(&ctx->scratch);
    slb_outbuf_dispose(&ctx->tls_frames);
    free(ctx->tls_plain);
    ctx->tls_plain = NULL;
}

void slb_conn_ctx_flush(struct slb_conn_ctx *ctx)
{
    /* Flushing one connection may dirty another (a consumed window on the
     * other side of a call); keep going until nothing is left. */
    while (ctx->dirty != NULL) {
        struct slb_conn *c = ctx->dirty;
        ctx->dirty = c->next_dirty;
        c->next_dirty = NULL;
        c->dirty = 0;
        conn_flush(c);
    }
}

static void on_counted_handle_closed(uv_handle_t *h)
{
    struct slb_conn_ctx *ctx = h->data;

    if (--ctx->n_handles == 0 && ctx->closing && ctx->on_all_closed != NULL)
        ctx->on_all_closed(ctx); /* may free the memory ctx lives in */
}

void slb_conn_ctx_handle_opened(struct slb_conn_ctx *ctx)
{
    ctx->n_handles++;
}

void slb_conn_ctx_close_handle(struct slb_conn_ctx *ctx, uv_handle_t *h)
{
    h->data = ctx;
    uv_close(h, on_counted_handle_closed);
}

void slb_conn_ctx_close(struct slb_conn_ctx *ctx, void (*on_all_closed)(struct slb_conn_ctx *ctx))
{
    ctx->closing = 1;
    ctx->on_all_closed = on_all_closed;
    slb_conn_ctx_close_handle(ctx, (uv_handle_t *)&ctx->prepare);
    slb_conn_ctx_close_handle(ctx, (uv_handle_t *)&ctx->check);
}

int slb_conn_init(struct slb_conn *c, struct slb_conn_ctx *ctx, const struct slb_conn_ops *ops)
{
    int rv;

    memset(c, 0, sizeof(*c));
    c->ctx = ctx;
    c->ops = ops;
    if ((rv = uv_tcp_init(ctx->loop, &c->tcp)) == 0)
        ctx->n_handles++; /* until on_closed */
    return rv;
}

void slb_conn_mark_dirty(struct slb_conn *c)
{
    if (c->dirty || c->closing)
        return;
    c->dirty = 1;
    c->next_dirty = c->ctx->dirty;
    c->ctx->dirty = c;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct slb_conn *c = slb_container_of(h, struct slb_conn, tcp);
    buf->base = (char *)c->ctx->rbuf;
    buf->len = sizeof(c->ctx->rbuf);
}

/* Cleartext bytes to the on_read hook or the session. < 0: the connection is closing. */
static int conn_deliver(struct slb_conn *c, const uint8_t *p, size_t n)
{
    ssize_t rv;

    if (c->ops->on_read != NULL)
        return c->ops->on_read(c, p, n) < 0 ? -1 : 0; /* < 0: the hook closed or will close the connection */
    if ((rv = nghttp2_session_mem_recv(c->session, p, n)) < 0) {
        slb_debug("h2 receive error: %s", nghttp2_strerror((int)rv));
        slb_conn_close(c, SLB_EPROTO);
        return -1;
    }
    return 0;
}

/* Drives the handshake; once it is done, writes what waited for it. 0 (done or not yet) or < 0 (closed). */
static int conn_tls_handshake(struct slb_conn *c)
{
    struct slb_tls *t = c->tls;
    int rv;

    slb_tls_set_output(t, &c->out[c->fill]);
    if ((rv = slb_tls_handshake(t)) < 0) {
        slb_conn_close(c, SLB_ETLS);
        return -1;
    }
    if (rv == 1 && slb_tls_write_pending(t) != 0) {
        slb_conn_close(c, SLB_ETLS);
        return -1;
    }
    slb_conn_mark_dirty(c); /* handshake records, or the frames that waited for it */
    return 0;
}

/* Ciphertext read: handshake, then every whole record's plaintext to conn_deliver. < 0: closed. */
static int conn_tls_read(struct slb_conn *c, const uint8_t *p, size_t n)
{
    struct slb_tls *t = c->tls;
    int k;

    slb_tls_feed(t, p, n);
    if (!t->established && (conn_tls_handshake(c) < 0 || !t->established))
        return c->closing ? -1 : 0;
    for (;;) {
        slb_tls_set_output(t, &c->out[c->fill]); /* a read may answer (alerts, key updates) */
        if ((k = slb_tls_read(t, c->ctx->tls_plain, CONN_TLS_PLAIN)) == 0)
            return 0; /* every byte fed was taken (a partial record waits inside) */
        if (k < 0) {
            slb_conn_close(c, k == SLB_TLS_EOF ? UV_EOF : SLB_ETLS);
            return -1;
        }
        if (conn_deliver(c, c->ctx->tls_plain, (size_t)k) < 0 || c->closing)
            return -1;
    }
}

int slb_conn_use_tls(struct slb_conn *c, struct slb_tls *t)
{
    if (c->ctx->tls_plain == NULL && (c->ctx->tls_plain = malloc(CONN_TLS_PLAIN)) == NULL) {
        slb_tls_free(t);
        return SLB_ENOMEM;
    }
    c->tls = t;
    return 0;
}

const char *slb_conn_strerror(const struct slb_conn *c, int err)
{
    if (err == SLB_ETLS && c->tls != NULL && c->tls->failed)
        return c->tls->error;
    return slb_strerror(err);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct slb_conn *c = slb_container_of(s, struct slb_conn, tcp);

    if (nread == 0)
        return;
    if (nread < 0) {
        if (SLB_UNLIKELY(c->tls != NULL) && slb_tls_peer_closed(c->tls) != 0)
            nread = SLB_ETLS; /* before any data: say what that means for TLS */
        slb_conn_close(c, (int)nread);
        return;
    }
    if (SLB_UNLIKELY(c->tls != NULL)) {
        if (conn_tls_read(c, (const uint8_t *)buf->base, (size_t)nread) < 0)
            return;
    } else if (conn_deliver(c, (const uint8_t *)buf->base, (size_t)nread) < 0) {
        return;
    }
    if (!c->closing) {
        slb_conn_mark_dirty(c);
        if (c->ctx->read_per_turn != 0)
            conn_pause_reading(c, (size_t)nread);
    }
}

int slb_conn_start(struct slb_conn *c)
{
    int rv;

    uv_tcp_nodelay(&c->tcp, 1);
    if ((rv = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) != 0)
        return rv;
    if (c->tls != NULL && conn_tls_handshake(c) < 0)
        return SLB_ETLS; /* closed already (a client's hello could not be made) */
    return 0;
}

static void on_write(uv_write_t *req, int status)
{
    struct slb_conn *c = slb_container_of(req, struct slb_conn, wreq);

    c->writing = 0;
    c->out[c->fill ^ 1].len = 0;
    if (c->closing)
        return;
    if (status < 0) {
        slb_conn_close(c, status);
        return;
    }
    conn_flush(c);
}

static void conn_flush(struct slb_conn *c)
{
    while (!c->closing) {
        /* With nothing waiting to be written, frames go to the loop's scratch
         * buffer and only what the socket does not take is kept (copied). */
        int direct = !c->writing && c->out[c->fill].len == 0;
        struct slb_outbuf *ob = direct ? &c->ctx->scratch : &c->out[c->fill];
        struct slb_outbuf *fb = ob; /* where frames go: ob, or with TLS cleartext to encrypt into ob */
        size_t below = 0;           /* bytes already in ob under the frames (TLS) */
        int produce = 1;
        uv_buf_t b;
        int w;

        if (direct)
            ob->len = 0;
        if (SLB_UNLIKELY(c->tls != NULL)) {
            fb = &c->ctx->tls_frames;
            fb->len = 0;
            below = ob->len;
            produce = c->tls->established; /* frames wait in the session until the handshake is done */
        }
        c->cur = fb;
        /* after a raw refusal nothing else goes out */
        while (produce && c->session != NULL && !c->raw_only && fb->len + below < SLB_CONN_HIGH_WATER) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->session, &data);
            if (n < 0) {
                slb_warn("h2 send error: %s", nghttp2_strerror((int)n));
                slb_conn_close(c, SLB_EPROTO);
                break;
            }
            if (n == 0)
                break;
            if (slb_outbuf_append(fb, data, (size_t)n, SLB_CONN_OUT_LIMIT) != 0) {
                slb_conn_close(c, SLB_ENOMEM);
                break;
            }
        }
        c->cur = NULL;
        if (fb != ob && fb->len > 0 && !c->closing) {
            /* one SSL_write for the whole flush: full-size records, appended to ob */
            int rv;
            slb_tls_set_output(c->tls, ob);
            rv = slb_tls_write(c->tls, fb->base, fb->len);
            fb->len = 0;
            slb_tls_set_output(c->tls, &c->out[c->fill]);
            if (rv != 0)
                slb_conn_close(c, SLB_ETLS);
        }
        if (c->closing) {
            if (direct)
                ob->len = 0;
            return; /* a send callback closed us */
        }
        if (ob->len == 0 || c->writing)
            break;
        b = uv_buf_init((char *)ob->base, (unsigned)ob->len);
        w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (w == (int)ob->len) {
            ob->len = 0;
            continue; /* there may be more frames to produce */
        }
        if (w < 0 && w != UV_EAGAIN) {
            if (direct)
                ob->len = 0;
            slb_conn_close(c, w);
            return;
        }
        if (w < 0)
            w = 0;
        if (direct) {
            /* keep what the socket did not take in the connection's own buffer */
            int rv = slb_outbuf_append(&c->out[c->fill], ob->base + w, ob->len - (size_t)w, SLB_CONN_OUT_LIMIT);
            ob->len = 0;
            if (rv != 0) {
                slb_conn_close(c, SLB_ENOMEM);
                return;
            }
            ob = &c->out[c->fill];
            w = 0;
        }
        b = uv_buf_init((char *)ob->base + w, (unsigned)(ob->len - (size_t)w));
        if ((w = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write)) != 0) {
            slb_conn_close(c, w);
            return;
        }
        c->writing = 1;
        c->fill ^= 1;
        /* fill the other buffer up to the high-water mark while this one is written */
    }
    if (c->closing)
        return;
    if (c->close_after_write && !c->writing && c->out[c->fill].len == 0) {
        slb_conn_close(c, 0);
        return;
    }
    if (c->session != NULL && !c->writing && !nghttp2_session_want_read(c->session) &&
        !nghttp2_session_want_write(c->session)) {
        slb_conn_close(c, 0);
        return;
    }
    if (c->trim && !c->writing && c->out[0].len == 0 && c->out[1].len == 0) {
        slb_outbuf_dispose(&c->out[0]);
        slb_outbuf_dispose(&c->out[1]);
        c->trim = 0;
    }
}

void slb_conn_trim_when_idle(struct slb_conn *c)
{
    if (SLB_UNLIKELY(c->tls != NULL))
        slb_tls_release_buffers(c->tls); /* OpenSSL's record buffers (~34 KiB); back on use */
    if (c->out[0].cap == 0 && c->out[1].cap == 0)
        return; /* nothing to free */
    c->trim = 1;
    slb_conn_mark_dirty(c);
}

void slb_conn_keep_buffers(struct slb_conn *c)
{
    c->trim = 0;
}

int slb_conn_write_raw(struct slb_conn *c, const void *p, size_t n, int close_after)
{
    int rv;

    if (SLB_UNLIKELY(c->tls != NULL)) {
        slb_tls_set_output(c->tls, &c->out[c->fill]);
        rv = slb_tls_write(c->tls, p, n) != 0 ? SLB_ETLS : 0; /* before the handshake ends: kept, sent after */
    } else {
        rv = slb_outbuf_append(&c->out[c->fill], p, n, SLB_CONN_OUT_LIMIT);
    }
    if (rv != 0)
        return rv;
    if (close_after) {
        c->close_after_write = c->raw_only = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    slb_conn_mark_dirty(c);
    return 0;
}

int slb_conn_write_first(struct slb_conn *c, const void *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int w = 0;

    if (c->tls != NULL)
        return slb_conn_write_raw(c, p, n, 0); /* encrypted (after the handshake) */
    if (!c->writing && c->out[c->fill].len == 0 && (w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1)) < 0) {
        if (w != UV_EAGAIN)
            return w;
        w = 0;
    }
    if ((size_t)w == n)
        return 0;
    return slb_conn_write_raw(c, (const uint8_t *)p + w, n - (size_t)w, 0);
}

void slb_conn_flush_now(struct slb_conn *c)
{
    conn_flush(c);
}

void slb_conn_close_when_flushed(struct slb_conn *c)
{
    c->close_after_write = 1;
    slb_conn_mark_dirty(c);
}

static void on_closed(uv_handle_t *h)
{
    struct slb_conn *c = slb_container_of(h, struct slb_conn, tcp);
    struct slb_conn_ctx *ctx = c->ctx;

    slb_outbuf_dispose(&c->out[0]);
    slb_outbuf_dispose(&c->out[1]);
    slb_tls_free(c->tls);
    c->tls = NULL;
    c->ops->on_free(c);
    if (--ctx->n_handles == 0 && ctx->closing && ctx->on_all_closed != NULL)
        ctx->on_all_closed(ctx);
}

/* ---- streams ---- */

void slb_h2_stream_init(struct slb_h2_stream *s, const struct slb_h2_stream_ops *ops)
{
    s->conn = NULL;
    s->sid = 0;
    s->open = s->deferred = 0;
    slb_list_init(&s->link);
    s->ops = ops;
}

void slb_h2_stream_bind(struct slb_h2_stream *s, struct slb_conn *c, struct slb_list *list, int32_t sid)
{
    s->conn = c;
    s->sid = sid;
    s->open = 1;
    s->deferred = s->idle_fired = 0;
    s->active_ms = uv_now(c->ctx->loop);
    slb_list_push_back(list, &s->link);
    nghttp2_session_set_stream_user_data(c->session, sid, s);
}

void slb_h2_stream_unbind(struct slb_h2_stream *s, uint32_t rst_code)
{
    struct slb_conn *c = s->conn;

    if (c == NULL)
        return;
    if (!c->closing && c->session != NULL && s->sid > 0) {
        size_t unconsumed = s->ops->take_unconsumed(s);
        if (unconsumed > 0 && s->open)
            nghttp2_session_consume_stream(c->session, s->sid, unconsumed);
        if (s->open && rst_code != 0)
            nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->sid, rst_code);
        nghttp2_session_set_stream_user_data(c->session, s->sid, NULL);
        slb_conn_mark_dirty(c);
    }
    slb_list_remove(&s->link);
    s->conn = NULL;
    s->open = s->deferred = 0;
}

struct slb_h2_stream *slb_h2_stream_of(nghttp2_session *session, int32_t sid)
{
    return nghttp2_session_get_stream_user_data(session, sid);
}

void slb_h2_stream_resume(struct slb_h2_stream *s)
{
    if (s->conn == NULL || s->conn->closing)
        return;
    if (s->deferred) {
        s->deferred = 0;
        nghttp2_session_resume_data(s->conn->session, s->sid);
    }
    slb_conn_mark_dirty(s->conn);
}

void slb_h2_stream_consume_connection(struct slb_h2_stream *s, size_t n)
{
    if (n == 0 || s->conn == NULL || s->conn->closing)
        return;
    nghttp2_session_consume_connection(s->conn->session, n);
    slb_conn_mark_dirty(s->conn);
}

void slb_h2_stream_consume_stream(struct slb_h2_stream *s, size_t n)
{
    if (n == 0 || s->conn == NULL || s->conn->closing || !s->open)
        return;
    nghttp2_session_consume_stream(s->conn->session, s->sid, n);
    slb_conn_mark_dirty(s->conn);
}

static ssize_t body_read_cb(nghttp2_session *session, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                            nghttp2_data_source *src, void *user)
{
    struct slb_h2_stream *s = slb_h2_stream_of(session, sid);
    const uint8_t *p;
    int end = 0;
    size_t n;

    if (s == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* its user let go: reset the stream */
    n = s->ops->peek(s, &p, &end);
    if (n > len) {
        n = len;
        end = 0;
    }
    if (n > 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (!end) {
        if (n > 0)
            return (ssize_t)n;
        s->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->ops->trailers != NULL) {
        nghttp2_nv nv[SLB_HDRS_MAX];
        char scratch[640];
        size_t k = s->ops->trailers(s, nv, scratch, sizeof(scratch));
        if (k > 0 && nghttp2_submit_trailer(session, sid, nv, k) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

const nghttp2_data_provider slb_h2_body_provider = {.source.ptr = NULL, .read_callback = body_read_cb};

int slb_h2_send_data_cb(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd, size_t len,
                        nghttp2_data_source *src, void *user)
{
    struct slb_h2_stream *s = slb_h2_stream_of(session, frame->hd.stream_id);
    struct slb_conn *c;
    struct slb_outbuf *ob;
    const uint8_t *p = NULL;
    int end;

    if (s == NULL || s->conn == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    c = s->conn;
    ob = c->cur != NULL ? c->cur : &c->out[c->fill];
    /* Above the high-water mark the frame waits for the next flush: many
     * streams with open windows must not grow the output without bound. */
    if (ob->len >= SLB_CONN_HIGH_WATER)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (len > 0 && (s->ops->peek(s, &p, &end) < len || p == NULL))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (slb_outbuf_append(ob, framehd, 9, SLB_CONN_OUT_LIMIT) != 0 ||
        (len > 0 && slb_outbuf_append(ob, p, len, SLB_CONN_OUT_LIMIT) != 0))
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (len > 0)
        s->ops->sent(s, len);
    s->active_ms = uv_now(c->ctx->loop);
    return 0;
}

/* A TLS connection that ends cleanly says so (close_notify), best effort: only when nothing
 * else waits to be written, one try, never blocking. Peers then see an orderly end, not a
 * truncation. */
static void conn_tls_close_notify(struct slb_conn *c)
{
    /* its own few bytes: a close may come while another connection's flush fills the scratch buffer */
    struct slb_outbuf ob = {0};
    uv_buf_t b;

    if (!c->writing && c->out[c->fill].len == 0 && slb_tls_close_notify(c->tls, &ob)) {
        b = uv_buf_init((char *)ob.base, (unsigned)ob.len);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    slb_outbuf_dispose(&ob);
}

void slb_conn_close(struct slb_conn *c, int err)
{
    if (c->closing)
        return;
    if (SLB_UNLIKELY(c->tls != NULL) && (err == 0 || err == UV_EOF))
        conn_tls_close_notify(c);
    c->closing = 1;
    /* unlink from the dirty list */
    if (c->dirty) {
        struct slb_conn **pp = &c->ctx->dirty;
        while (*pp != NULL && *pp != c)
            pp = &(*pp)->next_dirty;
        if (*pp == c)
            *pp = c->next_dirty;
        c->dirty = 0;
    }
    if (c->read_paused) {
        struct slb_conn **pp = &c->ctx->paused;
        while (*pp != NULL && *pp != c)
            pp = &(*pp)->next_paused;
        if (*pp == c)
            *pp = c->next_paused;
        c->read_paused = 0;
    }
    c->ops->on_close(c, err);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}
