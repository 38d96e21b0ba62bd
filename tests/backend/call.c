/*
 * One gRPC call = one HTTP/2 stream: message framing (5-byte prefix; a
 * message may span DATA frames and a frame may hold several), the Echo and
 * Health methods, metadata echo and trailers.
 *
 * Flow: request bytes collect in s->in and are parsed by tb_call_process(),
 * which answers each message (now, or from a uv timer for delay_ms) by
 * appending framed replies to s->out; nghttp2 pulls s->out through the data
 * provider and the trailers are submitted when s->out is empty and the call is
 * finishing. Back-pressure: while s->out holds TB_OUT_HIGH bytes or a delay is
 * pending, received bytes are not returned to flow control and no new replies
 * are generated; the data provider puts the stream on its connection's wake
 * list once the output drained.
 */
#include "tb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "grpc.h"

const char *const tb_method_names[TB_M_COUNT] = {"unknown", "Unary",       "ServerStream", "ClientStream",
                                                 "Bidi",    "HealthCheck", "HealthWatch"};

static const struct {
    const char *path;
    int method;
} method_paths[] = {
    {"/sidelb.test.Echo/Unary", TB_M_UNARY},
    {"/sidelb.test.Echo/ServerStream", TB_M_SERVER_STREAM},
    {"/sidelb.test.Echo/ClientStream", TB_M_CLIENT_STREAM},
    {"/sidelb.test.Echo/Bidi", TB_M_BIDI},
    {"/grpc.health.v1.Health/Check", TB_M_HEALTH_CHECK},
    {"/grpc.health.v1.Health/Watch", TB_M_HEALTH_WATCH},
};

#define MAX_FREE_STREAMS 4096

/* --- buffers ----------------------------------------------------------- */

int tb_buf_reserve(struct tb_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= extra)
            return 0;
    }
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int tb_buf_append(struct tb_buf *b, const void *p, size_t n)
{
    if (tb_buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void tb_buf_consume(struct tb_buf *b, size_t n)
{
    b->off += n;
    if (b->off == b->len)
        b->off = b->len = 0;
}

void tb_buf_free(struct tb_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* Keeps small buffers for reuse by the next stream, drops big ones. */
static void buf_recycle(struct tb_buf *b)
{
    if (b->cap > 64 * 1024)
        tb_buf_free(b);
    b->off = b->len = 0;
}

/* --- stream lifetime --------------------------------------------------- */

struct tb_stream *tb_stream_new(struct tb_conn *c, int32_t id)
{
    struct tb_stream *s = NULL;

    if (!slb_list_empty(&tb_srv.free_streams)) {
        s = slb_list_first(&tb_srv.free_streams, struct tb_stream, link);
        slb_list_remove(&s->link);
        tb_srv.n_free_streams--;
        struct tb_buf in = s->in, out = s->out;
        nghttp2_rcbuf **md = s->md;
        size_t cap_md = s->cap_md;
        unsigned timer_inited = s->timer_inited;
        uv_timer_t timer = s->timer; /* never active here; copied back unchanged */
        memset(s, 0, sizeof(*s));
        s->in = in;
        s->out = out;
        s->md = md;
        s->cap_md = cap_md;
        s->timer_inited = timer_inited;
        s->timer = timer;
    } else {
        s = calloc(1, sizeof(*s));
        if (!s)
            return NULL;
    }
    s->conn = c;
    s->id = id;
    slb_list_init(&s->wlink);
    slb_list_init(&s->wake_link);
    slb_list_push_back(&c->streams, &s->link);
    return s;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(slb_container_of(h, struct tb_stream, timer));
}

void tb_stream_close(struct tb_stream *s, uint32_t error_code)
{
    struct tb_conn *c = s->conn;

    if (s->counted) {
        tb_srv.active--;
        if (error_code != NGHTTP2_NO_ERROR && !s->resp_done) {
            tb_srv.cancelled++;
            tb_srv.cancelled_by_method[s->method]++;
            fprintf(stderr, "test_backend %s: cancelled stream %d %s (error %u)\n", tb_srv.opt.id, s->id,
                    tb_method_names[s->method], error_code);
        } else if (s->resp_done && s->status == 0) {
            tb_srv.ok++;
        } else {
            tb_srv.failed++;
        }
    }
    slb_list_remove(&s->link);
    slb_list_remove(&s->wlink);
    slb_list_remove(&s->wake_link);
    if (s->unconsumed && c->h2 && !c->closing)
        nghttp2_session_consume_connection(c->h2, s->unconsumed);
    if (s->req)
        sidelb__test__echo_request__free_unpacked(s->req, NULL);
    free(s->status_msg);
    for (size_t i = 0; i < s->n_md; i++)
        nghttp2_rcbuf_decref(s->md[i]);
    if (s->timer_active)
        uv_timer_stop(&s->timer);
    if (s->counted && tb_srv.opt.stats_file)
        tb_stats_write();

    buf_recycle(&s->in);
    buf_recycle(&s->out);
    if (tb_srv.n_free_streams < MAX_FREE_STREAMS) {
        slb_list_push_front(&tb_srv.free_streams, &s->link);
        tb_srv.n_free_streams++;
        return;
    }
    tb_buf_free(&s->in);
    tb_buf_free(&s->out);
    free(s->md);
    if (s->timer_inited)
        uv_close((uv_handle_t *)&s->timer, on_timer_closed);
    else
        free(s);
}

int tb_stream_on_header(struct tb_stream *s, nghttp2_rcbuf *name, nghttp2_rcbuf *value)
{
    nghttp2_vec n = nghttp2_rcbuf_get_buf(name);

    if (n.len == 5 && memcmp(n.base, ":path", 5) == 0) {
        nghttp2_vec v = nghttp2_rcbuf_get_buf(value);
        for (size_t i = 0; i < SLB_ARRAY_SIZE(method_paths); i++) {
            if (strlen(method_paths[i].path) == v.len && memcmp(method_paths[i].path, v.base, v.len) == 0) {
                s->method = method_paths[i].method;
                return 0;
            }
        }
        free(s->status_msg);
        s->status_msg = malloc(v.len + 32);
        if (s->status_msg)
            snprintf(s->status_msg, v.len + 32, "unknown method %.*s", (int)v.len, (const char *)v.base);
        return 0;
    }
    if (n.len == 26 && memcmp(n.base, "grpc-previous-rpc-attempts", 26) == 0) {
        nghttp2_vec v = nghttp2_rcbuf_get_buf(value);
        unsigned long long prev = 0;
        for (size_t i = 0; i < v.len && v.base[i] >= '0' && v.base[i] <= '9' && prev < 1000000; i++)
            prev = prev * 10 + (unsigned)(v.base[i] - '0');
        tb_srv.retried++;
        if (prev > tb_srv.max_previous)
            tb_srv.max_previous = prev;
        return 0;
    }
    if (n.len >= 2 && n.base[0] == 'x' && n.base[1] == '-') {
        if (s->n_md + 2 > s->cap_md) {
            size_t cap = s->cap_md ? s->cap_md * 2 : 8;
            nghttp2_rcbuf **md = realloc(s->md, cap * sizeof(*md));
            if (!md)
                return -1;
            s->md = md;
            s->cap_md = cap;
        }
        nghttp2_rcbuf_incref(name);
        nghttp2_rcbuf_incref(value);
        s->md[s->n_md++] = name;
        s->md[s->n_md++] = value;
    }
    return 0;
}

/* --- headers and trailers ---------------------------------------------- */

#define NV(n, v, vlen)                                                                                                 \
    (nghttp2_nv)                                                                                                       \
    {                                                                                                                  \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NO_COPY_NAME                            \
    }

/* Fills nva with the x-trailer-* echo of the request's x-* headers; *mem must be freed. */
static size_t trailer_echo_nva(struct tb_stream *s, nghttp2_nv *nva, char **mem)
{
    size_t n = 0, need = 0;

    for (size_t i = 0; i < s->n_md; i += 2)
        need += nghttp2_rcbuf_get_buf(s->md[i]).len + 10;
    *mem = need ? malloc(need) : NULL;
    if (need && !*mem)
        return n;
    char *p = *mem;
    for (size_t i = 0; i < s->n_md; i += 2) {
        nghttp2_vec name = nghttp2_rcbuf_get_buf(s->md[i]), value = nghttp2_rcbuf_get_buf(s->md[i + 1]);
        memcpy(p, "x-trailer-", 10);
        memcpy(p + 10, name.base, name.len);
        nva[n++] = (nghttp2_nv){(uint8_t *)p, value.base, name.len + 10, value.len, NGHTTP2_NV_FLAG_NONE};
        p += name.len + 10;
    }
    return n;
}

/* Appends the x-* request headers, echoed. */
static size_t header_echo_nva(struct tb_stream *s, nghttp2_nv *nva)
{
    size_t n = 0;

    for (size_t i = 0; i < s->n_md; i += 2) {
        nghttp2_vec name = nghttp2_rcbuf_get_buf(s->md[i]), value = nghttp2_rcbuf_get_buf(s->md[i + 1]);
        nva[n++] = (nghttp2_nv){name.base, value.base, name.len, value.len, NGHTTP2_NV_FLAG_NONE};
    }
    return n;
}

static size_t response_nva(struct tb_stream *s, nghttp2_nv *nva)
{
    size_t n = 0;

    nva[n++] = NV(":status", "200", 3);
    nva[n++] = NV("content-type", "application/grpc", 16);
    return n + header_echo_nva(s, nva + n);
}

/* n fields ending in grpc-message: drop it when the call set none, as gRPC servers do */
static size_t drop_unset_message(const struct tb_stream *s, size_t n)
{
    return s->status_msg ? n : n - 1;
}

static void submit_trailers(struct tb_stream *s)
{
    nghttp2_nv stack[16], *nva = stack;
    struct slb_grpc_status_text text;
    char *mem;

    if (s->n_md + 2 > SLB_ARRAY_SIZE(stack) && !(nva = malloc((s->n_md + 2) * sizeof(*nva))))
        return;
    size_t n = drop_unset_message(s, slb_grpc_status_fields(nva, &text, s->status, s->status_msg));
    n += trailer_echo_nva(s, nva + n, &mem);
    nghttp2_submit_trailer(s->conn->h2, s->id, nva, n);
    free(mem);
    if (nva != stack)
        free(nva);
}

/* A trailers-only response (no messages): HEADERS with END_STREAM. */
static void submit_trailers_only(struct tb_stream *s)
{
    nghttp2_nv stack[32], *nva = stack;
    struct slb_grpc_status_text text;
    char *mem;
    size_t cap = 2 * s->n_md + 5;

    if (cap > SLB_ARRAY_SIZE(stack) && !(nva = malloc(cap * sizeof(*nva))))
        return;
    size_t n = drop_unset_message(s, slb_grpc_trailers_only(nva, &text, s->status, s->status_msg));
    n += header_echo_nva(s, nva + n);
    n += trailer_echo_nva(s, nva + n, &mem);
    if (s->status != 0 && tb_srv.opt.pushback_ms != NULL)
        nva[n++] = NV("grpc-retry-pushback-ms", tb_srv.opt.pushback_ms, strlen(tb_srv.opt.pushback_ms));
    nghttp2_submit_response(s->conn->h2, s->id, nva, n, NULL);
    s->resp_done = 1;
    free(mem);
    if (nva != stack)
        free(nva);
}

/* --- replies ----------------------------------------------------------- */

static void wake_later(struct tb_stream *s)
{
    if (!slb_list_linked(&s->wake_link))
        slb_list_push_back(&s->conn->wake, &s->wake_link);
}

static ssize_t read_cb(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    struct tb_stream *s = src->ptr;
    size_t avail = tb_buf_size(&s->out);
    size_t n = avail < length ? avail : length;

    if (n) {
        memcpy(buf, s->out.data + s->out.off, n);
        tb_buf_consume(&s->out, n);
    }
    if (tb_buf_size(&s->out) == 0 && s->finishing) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        submit_trailers(s);
        s->resp_done = 1;
        return (ssize_t)n;
    }
    if (tb_buf_size(&s->out) < TB_OUT_HIGH / 2 && (s->remaining || s->unconsumed || tb_buf_size(&s->in)))
        wake_later(s);
    if (n == 0) {
        s->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static void submit_headers(struct tb_stream *s)
{
    nghttp2_nv stack[16], *nva = stack;
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_cb};

    if (s->resp_submitted)
        return;
    if (s->n_md + 2 > SLB_ARRAY_SIZE(stack) && !(nva = malloc((s->n_md + 2) * sizeof(*nva))))
        return;
    size_t n = response_nva(s, nva);
    nghttp2_submit_response(s->conn->h2, s->id, nva, n, &prd);
    s->resp_submitted = 1;
    if (nva != stack)
        free(nva);
}

static void kick(struct tb_stream *s)
{
    if (s->deferred && !s->conn->closing) {
        s->deferred = 0;
        nghttp2_session_resume_data(s->conn->h2, s->id);
    }
}

static void finish(struct tb_stream *s, int code, const char *msg)
{
    if (s->finishing || s->resp_done)
        return;
    s->finishing = 1;
    s->status = code;
    s->remaining = 0;
    free(s->status_msg);
    s->status_msg = msg && *msg ? strdup(msg) : NULL;
    if (!s->resp_submitted) {
        if (tb_buf_size(&s->out) == 0) {
            submit_trailers_only(s);
            return;
        }
        submit_headers(s);
    }
    kick(s);
}

static int emit(struct tb_stream *s, const ProtobufCMessage *m)
{
    size_t sz = protobuf_c_message_get_packed_size(m);

    if (tb_buf_reserve(&s->out, 5 + sz) < 0) {
        finish(s, 8, "out of memory");
        return -1;
    }
    uint8_t *p = s->out.data + s->out.len;
    p[0] = 0;
    p[1] = (uint8_t)(sz >> 24);
    p[2] = (uint8_t)(sz >> 16);
    p[3] = (uint8_t)(sz >> 8);
    p[4] = (uint8_t)sz;
    protobuf_c_message_pack(m, p + 5);
    s->out.len += 5 + sz;
    submit_headers(s);
    kick(s);
    return 0;
}

static const uint8_t *filler(size_t n)
{
    if (n > tb_srv.filler_len) {
        uint8_t *p = realloc(tb_srv.filler, n);
        if (!p)
            return NULL;
        for (size_t i = tb_srv.filler_len; i < n; i++)
            p[i] = (uint8_t)('a' + i % 26);
        tb_srv.filler = p;
        tb_srv.filler_len = n;
    }
    return tb_srv.filler;
}

static void emit_echo(struct tb_stream *s, const Sidelb__Test__EchoRequest *req, uint32_t seq)
{
    Sidelb__Test__EchoReply r = SIDELB__TEST__ECHO_REPLY__INIT;

    if (req->response_size) {
        if (req->response_size > TB_MAX_RESPONSE || !(r.payload.data = (uint8_t *)filler(req->response_size))) {
            finish(s, 8, "response_size too large");
            return;
        }
        r.payload.len = req->response_size;
    } else {
        r.payload = req->payload;
    }
    r.backend_id = (char *)tb_srv.opt.id;
    r.seq = seq;
    r.received = s->received;
    emit(s, &r.base);
}

static void emit_health(struct tb_stream *s)
{
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

    r.status = tb_srv.opt.health;
    emit(s, &r.base);
}

/* Answers one Echo request now; takes ownership of req. */
static void answer(struct tb_stream *s, Sidelb__Test__EchoRequest *req)
{
    switch (s->method) {
    case TB_M_UNARY:
    case TB_M_CLIENT_STREAM:
        if (req->status_code == 0)
            emit_echo(s, req, 0);
        finish(s, req->status_code, req->status_message);
        break;
    case TB_M_SERVER_STREAM:
        s->remaining = req->response_count ? req->response_count : (req->status_code ? 0 : 1);
        s->next_seq = 0;
        if (s->remaining) {
            s->req = req; /* tb_call_process generates the replies as output drains */
            return;
        }
        finish(s, req->status_code, req->status_message);
        break;
    case TB_M_BIDI:
        if (req->status_code)
            finish(s, req->status_code, req->status_message);
        else
            emit_echo(s, req, s->received - 1);
        break;
    }
    sidelb__test__echo_request__free_unpacked(req, NULL);
}

static void on_delay(uv_timer_t *t)
{
    struct tb_stream *s = slb_container_of(t, struct tb_stream, timer);
    struct tb_conn *c = s->conn;
    Sidelb__Test__EchoRequest *req = s->req;

    s->timer_active = 0;
    s->req = NULL;
    if (req)
        answer(s, req);
    tb_call_process(s);
    tb_conn_flush(c);
}

/* Answers req after its delay_ms (now if 0); takes ownership. */
static void answer_later(struct tb_stream *s, Sidelb__Test__EchoRequest *req)
{
    req->delay_ms += tb_srv.opt.extra_delay_ms;
    static unsigned long long fail_count; /* Echo calls seen while --fail-status is set */
    if (tb_srv.opt.fail_status > 0 && req->status_code == 0 &&
        fail_count++ % (tb_srv.opt.fail_every ? tb_srv.opt.fail_every : 1) == 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "backend %s broken", tb_srv.opt.id ? tb_srv.opt.id : "?");
        req->status_code = tb_srv.opt.fail_status;
        /* the message is freed with the request (protobuf-c's default allocator is malloc) */
        if (req->status_message != NULL && req->status_message != protobuf_c_empty_string)
            free(req->status_message);
        req->status_message = strdup(msg);
    }
    if (req->delay_ms == 0) {
        answer(s, req);
        return;
    }
    if (!s->timer_inited) {
        uv_timer_init(tb_srv.loop, &s->timer);
        s->timer_inited = 1;
    }
    s->req = req;
    s->timer_active = 1;
    uv_timer_start(&s->timer, on_delay, req->delay_ms, 0);
}

/* --- the call ---------------------------------------------------------- */

void tb_call_start(struct tb_stream *s, int end_stream)
{
    s->counted = 1;
    tb_srv.calls++;
    tb_srv.active++;
    tb_srv.by_method[s->method]++;
    if (s->method == TB_M_UNKNOWN) {
        s->status = 12; /* UNIMPLEMENTED; status_msg was set from :path */
        s->finishing = 1;
        submit_trailers_only(s);
        return;
    }
    if ((s->method == TB_M_HEALTH_WATCH || s->method == TB_M_HEALTH_CHECK) && tb_srv.opt.no_health) {
        s->status = 12; /* no grpc.health.v1 service at all (like the grpc-go interop server) */
        s->finishing = 1;
        s->status_msg = strdup("unknown service grpc.health.v1.Health");
        submit_trailers_only(s);
        return;
    }
    if (s->method == TB_M_HEALTH_WATCH && tb_srv.opt.health_unimplemented_watch) {
        s->status = 12;
        s->finishing = 1;
        s->status_msg = strdup("Watch is not implemented here");
        submit_trailers_only(s);
        return;
    }

    /* Like gRPC servers, response headers go out with the first message; a
     * call that ends without one gets a trailers-only response. */
    if (s->method == TB_M_HEALTH_WATCH)
        submit_headers(s);
    if (s->method == TB_M_HEALTH_WATCH)
        slb_list_push_back(&tb_srv.watchers, &s->wlink);
    if (end_stream)
        tb_call_request_end(s);
}

void tb_call_data(struct tb_stream *s, const uint8_t *data, size_t len)
{
    s->unconsumed += len;
    if (s->discard || s->resp_done || s->finishing) {
        nghttp2_session_consume(s->conn->h2, s->id, s->unconsumed);
        s->unconsumed = 0;
        return;
    }
    if (tb_buf_append(&s->in, data, len) < 0) {
        s->discard = 1;
        finish(s, 8, "out of memory");
        return;
    }
    tb_call_process(s);
}

void tb_call_request_end(struct tb_stream *s)
{
    s->req_ended = 1;
    tb_call_process(s);
}

static void on_request_end(struct tb_stream *s)
{
    if (tb_buf_size(&s->in)) {
        finish(s, 13, "truncated request message");
        return;
    }
    switch (s->method) {
    case TB_M_UNARY:
    case TB_M_SERVER_STREAM:
    case TB_M_HEALTH_CHECK:
    case TB_M_HEALTH_WATCH:
        if (s->received == 0)
            finish(s, 13, "missing request message");
        break;
    case TB_M_CLIENT_STREAM: {
        Sidelb__Test__EchoRequest *req = s->req;
        s->req = NULL;
        if (!req) {
            req = calloc(1, sizeof(*req));
            if (!req) {
                finish(s, 8, "out of memory");
                return;
            }
            sidelb__test__echo_request__init(req);
        }
        answer_later(s, req);
        break;
    }
    case TB_M_BIDI:
        finish(s, 0, NULL);
        break;
    }
}

/* One complete request message of len bytes at p. */
static void on_message(struct tb_stream *s, const uint8_t *p, size_t len)
{
    s->received++;
    if (s->method == TB_M_HEALTH_CHECK || s->method == TB_M_HEALTH_WATCH) {
        Grpc__Health__V1__HealthCheckRequest *hr = grpc__health__v1__health_check_request__unpack(NULL, len, p);
        if (!hr) {
            finish(s, 13, "cannot parse HealthCheckRequest");
            return;
        }
        grpc__health__v1__health_check_request__free_unpacked(hr, NULL);
        if (s->received > 1)
            return;
        emit_health(s);
        if (s->method == TB_M_HEALTH_CHECK)
            finish(s, 0, NULL);
        return;
    }
    Sidelb__Test__EchoRequest *req = sidelb__test__echo_request__unpack(NULL, len, p);
    if (!req) {
        finish(s, 13, "cannot parse EchoRequest");
        return;
    }
    if ((s->method == TB_M_UNARY || s->method == TB_M_SERVER_STREAM) && s->received > 1) {
        sidelb__test__echo_request__free_unpacked(req, NULL);
        finish(s, 13, "more than one request message");
        return;
    }
    if (s->method == TB_M_CLIENT_STREAM) {
        if (s->req)
            sidelb__test__echo_request__free_unpacked(s->req, NULL);
        s->req = req; /* the last one shapes the reply */
        return;
    }
    answer_later(s, req);
}

static int blocked(const struct tb_stream *s)
{
    return s->timer_active || tb_buf_size(&s->out) >= TB_OUT_HIGH;
}

void tb_call_process(struct tb_stream *s)
{
    struct tb_conn *c = s->conn;

    if (c->closing || !s->counted)
        return;
    while (!s->finishing && !s->resp_done && !blocked(s)) {
        if (s->remaining) {
            emit_echo(s, s->req, s->next_seq++);
            if (--s->remaining == 0) {
                Sidelb__Test__EchoRequest *req = s->req;
                s->req = NULL;
                finish(s, req->status_code, req->status_message);
                sidelb__test__echo_request__free_unpacked(req, NULL);
            }
            continue;
        }
        size_t have = tb_buf_size(&s->in);
        if (have >= 5) {
            const uint8_t *p = s->in.data + s->in.off;
            uint32_t len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
            if (p[0] & 1) {
                s->discard = 1;
                finish(s, 12, "compressed messages are not supported");
                break;
            }
            if (len > TB_MAX_MSG) {
                s->discard = 1;
                finish(s, 8, "request message too large");
                break;
            }
            if (have >= 5 + (size_t)len) {
                on_message(s, p + 5, len);
                tb_buf_consume(&s->in, 5 + (size_t)len);
                continue;
            }
        }
        if (s->req_ended && !s->end_handled) {
            s->end_handled = 1;
            on_request_end(s);
            continue;
        }
        break;
    }
    if (s->finishing || s->resp_done) {
        s->in.off = s->in.len = 0;
        s->discard = 1;
    }
    if (s->unconsumed && !blocked(s)) {
        nghttp2_session_consume(c->h2, s->id, s->unconsumed);
        s->unconsumed = 0;
    }
}

void tb_health_set(int status)
{
    if (tb_srv.opt.health == status)
        return;
    tb_srv.opt.health = status;
    fprintf(stderr, "test_backend %s: health %s\n", tb_srv.opt.id,
            status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? "SERVING" : "NOT_SERVING");
    struct slb_list *it, *tmp;
    slb_list_foreach_safe(it, tmp, &tb_srv.watchers)
    {
        struct tb_stream *s = slb_list_entry(it, struct tb_stream, wlink);
        if (!s->finishing)
            emit_health(s);
    }
    slb_list_foreach_safe(it, tmp, &tb_srv.conns)
    {
        tb_conn_flush(slb_list_entry(it, struct tb_conn, link));
    }
}
