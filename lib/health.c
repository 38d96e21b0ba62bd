#include "health.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "grpc.h"
#include "health.pb-c.h"
#include "log.h"
#include "tls.h"

/* What the check is doing; one setter (set_phase) logs old -> new at DEBUG. */
enum hc_phase {
    HC_IDLE = 0,   /* no connection: waiting for the backoff timer */
    HC_CONNECTING, /* TCP connect in flight */
    HC_WATCH,      /* Watch stream open (or requested) */
    HC_CHECK,      /* a Check call in flight */
    HC_CHECK_WAIT, /* connected; waiting to send the next Check */
    HC_OFF,        /* connected; Check is UNIMPLEMENTED: no more calls, only keepalive PINGs (gRFC A17) */
    HC_STOPPED,
};

static const char *const phase_names[] = {"IDLE", "CONNECTING", "WATCH", "CHECK", "CHECK_WAIT", "OFF", "STOPPED"};

struct hc_conn;

/*
 * Owner: the caller from slb_health_start() to slb_health_stop(); after that
 * it lives on until the last of its references goes: one for the caller, one
 * per timer (dropped in its close callback), one per struct hc_conn alive
 * (dropped in its on_free).
 */
struct slb_health_check {
    uv_loop_t *loop;
    struct slb_conn_ctx *io;
    char *addr, *service;
    struct sockaddr_storage sa;
    unsigned salen;
    uint32_t interval_ms, timeout_ms, backoff_ms;
    slb_health_cb cb;
    void *user;
    uint8_t *req; /* framed HealthCheckRequest{service}: the body of every call */
    size_t req_len;
    int status; /* last reported enum slb_backend_health */
    uint8_t phase;
    uint8_t stopped;
    uint8_t ping_out; /* a keepalive PING is unanswered */
    unsigned refs;
    uint64_t connect_ms;  /* loop time of the last connection attempt */
    uv_timer_t tick;      /* reconnect backoff, next Check, next keepalive PING */
    uv_timer_t deadline;  /* connect + first answer, one Check, one PING */
    struct hc_conn *conn; /* current connection, NULL when none */

    struct slb_tls_ctx *tls;            /* referenced; NULL: h2c */
    char *tls_name;                     /* SNI and the name verified */
    struct slb_tls_stats *tls_stats;    /* not owned */
    struct ssl_session_st *tls_session; /* kept for the next connection */
};

/*
 * One connection of a check. Owner: the check (hc->conn) until it starts
 * closing; then itself until on_free, where it frees itself and its session.
 */
struct hc_conn {
    struct slb_conn conn;
    struct slb_health_check *hc; /* holds a reference: valid until on_free */
    uv_connect_t creq;
    uint8_t connected, detached, use_check;
    int32_t sid;     /* the Watch or Check stream; -1 when none */
    int http_status; /* :status of the current stream */
    int grpc_status; /* grpc-status of the current stream; -1 until seen */
    int last_msg;    /* ServingStatus of the stream's last response; -1 when none */
    size_t req_off;  /* request bytes handed to nghttp2 */
    size_t rx_len;   /* bytes of the message being reassembled */
    uint8_t rx[5 + SLB_HEALTH_MAX_MSG];
};

static void hc_conn_on_close(struct slb_conn *c, int err);
static void hc_conn_on_free(struct slb_conn *c);
static void on_tick(uv_timer_t *t);
static void on_deadline(uv_timer_t *t);

static const struct slb_conn_ops hc_conn_ops = {
    .on_read = NULL,
    .on_close = hc_conn_on_close,
    .on_free = hc_conn_on_free,
};

const char *slb_health_status_name(int status)
{
    switch (status) {
    case SLB_HEALTH_SERVING:
        return "SERVING";
    case SLB_HEALTH_NOT_SERVING:
        return "NOT_SERVING";
    case SLB_HEALTH_SERVICE_UNKNOWN:
        return "SERVICE_UNKNOWN";
    case SLB_HEALTH_PENDING:
        return "PENDING";
    case SLB_HEALTH_UNIMPLEMENTED:
        return "UNIMPLEMENTED";
    default:
        return "UNKNOWN";
    }
}

int slb_health_status(const struct slb_health_check *hc)
{
    return hc->status;
}

/* grpc.health.v1 ServingStatus -> enum slb_backend_health. */
SLB_STATIC int slb__health_map(int serving_status)
{
    switch (serving_status) {
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING:
        return SLB_HEALTH_SERVING;
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN:
        return SLB_HEALTH_SERVICE_UNKNOWN;
    default: /* NOT_SERVING, UNKNOWN, anything newer */
        return SLB_HEALTH_NOT_SERVING;
    }
}

static const char *svc_name(const struct slb_health_check *hc)
{
    return hc->service[0] != '\0' ? hc->service : "\"\"";
}

static void hc_unref(struct slb_health_check *hc)
{
    if (--hc->refs > 0)
        return;
    free(hc->addr);
    free(hc->service);
    free(hc->req);
    slb_tls_ctx_unref(hc->tls);
    free(hc->tls_name);
    slb_tls_session_free(&hc->tls_session);
    free(hc);
}

static void set_phase(struct slb_health_check *hc, int phase)
{
    if (hc->phase == phase)
        return;
    slb_debug("health %s %s: %s -> %s", hc->addr, svc_name(hc), phase_names[hc->phase], phase_names[phase]);
    hc->phase = (uint8_t)phase;
}

/* The one setter of the reported status: logs old -> new and tells the owner. */
static void report(struct slb_health_check *hc, int status)
{
    if (hc->stopped || hc->status == status)
        return;
    slb_notice("health %s %s: %s -> %s", hc->addr, svc_name(hc), slb_health_status_name(hc->status),
               slb_health_status_name(status));
    hc->status = status;
    hc->cb(hc, status, hc->user);
}

static void schedule_reconnect(struct slb_health_check *hc)
{
    uint32_t delay = hc->backoff_ms;

    set_phase(hc, HC_IDLE);
    hc->backoff_ms = hc->backoff_ms * 2 > hc->interval_ms ? hc->interval_ms : hc->backoff_ms * 2;
    uv_timer_stop(&hc->deadline);
    uv_timer_start(&hc->tick, on_tick, delay, 0);
}

static void close_conn(struct slb_health_check *hc, int err)
{
    if (hc->conn != NULL)
        slb_conn_close(&hc->conn->conn, err);
}

/* --- the request ------------------------------------------------------------------------------------------------ */

static ssize_t req_read(nghttp2_session *session, int32_t sid, uint8_t *buf, size_t length, uint32_t *data_flags,
                        nghttp2_data_source *source, void *user_data)
{
    struct hc_conn *hcc = user_data;
    struct slb_health_check *hc = hcc->hc;
    size_t n = hc->req_len - hcc->req_off;

    if (n > length)
        n = length;
    memcpy(buf, hc->req + hcc->req_off, n);
    hcc->req_off += n;
    if (hcc->req_off == hc->req_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define NV(n, v)                                                                                                       \
    {                                                                                                                  \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME                         \
    }

/* Opens a Watch (check == 0) or Check call on the connection. */
static void submit_call(struct slb_health_check *hc, int check)
{
    struct hc_conn *hcc = hc->conn;
    char timeout[SLB_GRPC_TIMEOUT_MAX];
    int32_t sid;

    slb_grpc_timeout_format(hc->timeout_ms, timeout);
    nghttp2_data_provider prd = {.source.ptr = NULL, .read_callback = req_read};
    nghttp2_nv nva[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", check ? "/grpc.health.v1.Health/Check" : "/grpc.health.v1.Health/Watch"),
        NV(":authority", hc->addr),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "sidelb-health"),
        NV("grpc-timeout", timeout),
    };

    hcc->http_status = 0;
    hcc->grpc_status = -1;
    hcc->last_msg = -1;
    hcc->req_off = 0;
    hcc->rx_len = 0;
    sid = nghttp2_submit_request(hcc->conn.session, NULL, nva, SLB_ARRAY_SIZE(nva) - (check ? 0 : 1), &prd, NULL);
    if (sid < 0) {
        slb_warn("health %s %s: cannot submit: %s", hc->addr, svc_name(hc), nghttp2_strerror(sid));
        close_conn(hc, SLB_EPROTO);
        return;
    }
    hcc->sid = sid;
    set_phase(hc, check ? HC_CHECK : HC_WATCH);
    /* Watch: the current status comes at once; Check: the call's deadline. */
    uv_timer_start(&hc->deadline, on_deadline, hc->timeout_ms, 0);
    if (check)
        uv_timer_stop(&hc->tick);
    else
        uv_timer_start(&hc->tick, on_tick, hc->interval_ms, hc->interval_ms); /* keepalive PINGs */
    hc->ping_out = 0;
    slb_conn_mark_dirty(&hcc->conn);
}

/* --- the response ----------------------------------------------------------------------------------------------- */

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    struct hc_conn *hcc = user_data;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != hcc->sid)
        return 0;
    /* an HTTP status has three digits too: one parser for both */
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        hcc->http_status = slb_grpc_status_parse(value, valuelen);
    else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        hcc->grpc_status = slb_grpc_status_parse(value, valuelen);
    return 0;
}

/* One whole HealthCheckResponse. 0 or SLB_EPROTO. */
static int on_message(struct hc_conn *hcc, const uint8_t *p, size_t n)
{
    struct slb_health_check *hc = hcc->hc;
    Grpc__Health__V1__HealthCheckResponse *r = grpc__health__v1__health_check_response__unpack(NULL, n, p);

    if (r == NULL) {
        slb_warn("health %s %s: cannot parse HealthCheckResponse", hc->addr, svc_name(hc));
        return SLB_EPROTO;
    }
    hcc->last_msg = (int)r->status;
    grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    hc->backoff_ms = SLB_HEALTH_BACKOFF_INITIAL_MS < hc->interval_ms ? SLB_HEALTH_BACKOFF_INITIAL_MS : hc->interval_ms;
    if (hc->phase == HC_WATCH) {
        /* an answer proves the peer alive: no deadline until the next PING */
        uv_timer_stop(&hc->deadline);
        hc->ping_out = 0;
        report(hc, slb__health_map(hcc->last_msg));
    }
    return 0;
}

/* gRPC length-prefixed messages; one may span DATA frames. */
static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                              void *user_data)
{
    struct hc_conn *hcc = user_data;

    if (sid != hcc->sid)
        return 0;
    while (len > 0 && !hcc->detached) {
        size_t need, take;
        uint32_t mlen = 0;

        if (hcc->rx_len >= 5)
            mlen = (uint32_t)hcc->rx[1] << 24 | (uint32_t)hcc->rx[2] << 16 | (uint32_t)hcc->rx[3] << 8 | hcc->rx[4];
        need = hcc->rx_len < 5 ? 5 - hcc->rx_len : 5 + mlen - hcc->rx_len;
        take = need < len ? need : len;
        memcpy(hcc->rx + hcc->rx_len, data, take);
        hcc->rx_len += take;
        data += take;
        len -= take;
        if (hcc->rx_len == 5) {
            mlen = (uint32_t)hcc->rx[1] << 24 | (uint32_t)hcc->rx[2] << 16 | (uint32_t)hcc->rx[3] << 8 | hcc->rx[4];
            if (hcc->rx[0] != 0 || mlen > SLB_HEALTH_MAX_MSG) {
                slb_warn("health %s %s: bad response message (flags %u, %u bytes)", hcc->hc->addr, svc_name(hcc->hc),
                         hcc->rx[0], mlen);
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            }
        }
        if (hcc->rx_len >= 5 && hcc->rx_len == 5 + (size_t)mlen) {
            hcc->rx_len = 0;
            if (on_message(hcc, hcc->rx + 5, mlen) != 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct hc_conn *hcc = user_data;
    struct slb_health_check *hc = hcc->hc;

    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK) && hc->ping_out && !hcc->detached) {
        hc->ping_out = 0;
        uv_timer_stop(&hc->deadline);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t sid, uint32_t error_code, void *user_data)
{
    struct hc_conn *hcc = user_data;
    struct slb_health_check *hc = hcc->hc;
    int status;

    if (sid != hcc->sid)
        return 0;
    hcc->sid = -1;
    if (hcc->detached || hc->stopped)
        return 0;
    uv_timer_stop(&hc->deadline);
    if (hc->phase == HC_WATCH) {
        if (hcc->grpc_status == SLB_GRPC_UNIMPLEMENTED) {
            slb_info("health %s %s: Watch is unimplemented; polling Check every %u ms", hc->addr, svc_name(hc),
                     hc->interval_ms);
            hcc->use_check = 1;
            submit_call(hc, 1);
            return 0;
        }
        slb_info("health %s %s: Watch ended (:status %d, grpc-status %d, reset %u)", hc->addr, svc_name(hc),
                 hcc->http_status, hcc->grpc_status, error_code);
        close_conn(hc, SLB_EPROTO);
        return 0;
    }
    /* Check */
    if (hcc->grpc_status == SLB_GRPC_UNIMPLEMENTED) {
        /* gRFC A17: no health service: checking is off on this connection.
         * PINGs keep proving the peer alive; a new connection tries Watch again. */
        set_phase(hc, HC_OFF);
        hc->ping_out = 0;
        uv_timer_start(&hc->tick, on_tick, hc->interval_ms, hc->interval_ms);
        report(hc, SLB_HEALTH_UNIMPLEMENTED);
        return 0;
    }
    if (hcc->grpc_status == SLB_GRPC_OK && hcc->last_msg >= 0) {
        status = slb__health_map(hcc->last_msg);
    } else if (hcc->grpc_status == SLB_GRPC_NOT_FOUND) {
        status = SLB_HEALTH_SERVICE_UNKNOWN;
    } else {
        slb_info("health %s %s: Check failed (:status %d, grpc-status %d, reset %u)", hc->addr, svc_name(hc),
                 hcc->http_status, hcc->grpc_status, error_code);
        status = SLB_HEALTH_NOT_SERVING;
    }
    set_phase(hc, HC_CHECK_WAIT);
    uv_timer_start(&hc->tick, on_tick, hc->interval_ms, 0);
    report(hc, status);
    return 0;
}

/* --- the connection --------------------------------------------------------------------------------------------- */

static void hc_conn_on_close(struct slb_conn *c, int err)
{
    struct hc_conn *hcc = slb_container_of(c, struct hc_conn, conn);
    struct slb_health_check *hc = hcc->hc;

    if (hcc->detached)
        return;
    hcc->detached = 1;
    if (hc->conn == hcc)
        hc->conn = NULL;
    if (hc->stopped)
        return;
    /* the first failure at INFO; retries of an already failed check at DEBUG */
    slb_log(hc->status == SLB_HEALTH_NOT_SERVING ? SLB_LOG_DEBUG : SLB_LOG_INFO, "health %s %s: connection closed: %s",
            hc->addr, svc_name(hc), err != 0 ? slb_conn_strerror(c, err) : "EOF");
    schedule_reconnect(hc);
    report(hc, SLB_HEALTH_NOT_SERVING);
}

static void hc_conn_on_free(struct slb_conn *c)
{
    struct hc_conn *hcc = slb_container_of(c, struct hc_conn, conn);

    if (c->session != NULL)
        nghttp2_session_del(c->session);
    hc_unref(hcc->hc);
    free(hcc);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct hc_conn *hcc = slb_container_of(req, struct hc_conn, creq);
    struct slb_health_check *hc = hcc->hc;
    int rv;

    if (hcc->conn.closing)
        return; /* closed while connecting (stop, timeout): on_close did the rest */
    if (status < 0) {
        slb_conn_close(&hcc->conn, status);
        return;
    }
    hcc->connected = 1;
    if ((rv = slb_conn_start(&hcc->conn)) != 0) {
        slb_conn_close(&hcc->conn, rv);
        return;
    }
    submit_call(hc, hcc->use_check);
}

/* Opens a new connection. 0 or an error (nothing left open then). */
static int hc_connect(struct slb_health_check *hc)
{
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_session_callbacks *cbs;
    struct hc_conn *hcc = calloc(1, sizeof(*hcc));
    int rv;

    if (hcc == NULL)
        return SLB_ENOMEM;
    if ((rv = slb_conn_init(&hcc->conn, hc->io, &hc_conn_ops)) != 0) {
        free(hcc);
        return rv;
    }
    /* From here the TCP handle is open: every failure goes through slb_conn_close. */
    hcc->hc = hc;
    hcc->sid = -1;
    hc->refs++;
    hc->conn = hcc;
    hc->connect_ms = uv_now(hc->loop);
    set_phase(hc, HC_CONNECTING);
    uv_timer_start(&hc->deadline, on_deadline, hc->timeout_ms, 0);
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        close_conn(hc, SLB_ENOMEM);
        return 0;
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    rv = nghttp2_session_client_new(&hcc->conn.session, cbs, hcc);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        hcc->conn.session = NULL;
        close_conn(hc, SLB_ENOMEM);
        return 0;
    }
    nghttp2_submit_settings(hcc->conn.session, NGHTTP2_FLAG_NONE, iv, SLB_ARRAY_SIZE(iv));
    if (hc->tls != NULL) {
        struct slb_tls *t = slb_tls_client_new(hc->tls, hc->tls_name, &hc->tls_session, hc->tls_stats);
        if (t == NULL || slb_conn_use_tls(&hcc->conn, t) != 0) {
            close_conn(hc, SLB_ENOMEM);
            return 0;
        }
    }
    if ((rv = uv_tcp_connect(&hcc->creq, &hcc->conn.tcp, (const struct sockaddr *)&hc->sa, on_connect)) != 0)
        close_conn(hc, rv);
    return 0;
}

/* --- timers ----------------------------------------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct slb_health_check *hc = slb_container_of(t, struct slb_health_check, tick);
    int rv;

    if (hc->stopped)
        return;
    if (hc->conn == NULL) {
        if ((rv = hc_connect(hc)) != 0) {
            slb_warn("health %s %s: cannot connect: %s", hc->addr, svc_name(hc), slb_strerror(rv));
            schedule_reconnect(hc);
            report(hc, SLB_HEALTH_NOT_SERVING);
        }
    } else if (hc->phase == HC_CHECK_WAIT) {
        submit_call(hc, 1);
    } else if ((hc->phase == HC_WATCH || hc->phase == HC_OFF) && hc->conn->connected && !hc->ping_out &&
               !uv_is_active((uv_handle_t *)&hc->deadline)) {
        if (nghttp2_submit_ping(hc->conn->conn.session, NGHTTP2_FLAG_NONE, NULL) != 0) {
            close_conn(hc, SLB_ENOMEM);
            return;
        }
        hc->ping_out = 1;
        uv_timer_start(&hc->deadline, on_deadline, hc->timeout_ms, 0);
        slb_conn_mark_dirty(&hc->conn->conn);
    }
}

uint64_t slb_health_probe(struct slb_health_check *hc, uint32_t interval_ms)
{
    uint64_t now = uv_now(hc->loop);

    if (hc->stopped || hc->phase != HC_IDLE || hc->conn != NULL)
        return UINT64_MAX; /* connected or connecting: its answers come by themselves */
    if (hc->connect_ms + interval_ms > now)
        return hc->connect_ms + interval_ms;
    slb_debug("health %s %s: probing early (calls wait for this backend)", hc->addr, svc_name(hc));
    uv_timer_stop(&hc->tick);
    on_tick(&hc->tick); /* reconnects; a failure schedules the usual backoff */
    return now + interval_ms;
}

static void on_deadline(uv_timer_t *t)
{
    struct slb_health_check *hc = slb_container_of(t, struct slb_health_check, deadline);

    if (hc->stopped)
        return;
    slb_info("health %s %s: no answer within %u ms (%s)", hc->addr, svc_name(hc), hc->timeout_ms,
             phase_names[hc->phase]);
    close_conn(hc, UV_ETIMEDOUT);
}

static void on_timer_closed(uv_handle_t *h)
{
    hc_unref(h->data);
}

/* --- API -------------------------------------------------------------------------------------------------------- */

struct slb_health_check *slb_health_start(uv_loop_t *loop, struct slb_conn_ctx *io, const char *hostport,
                                          const char *service, uint32_t interval_ms, uint32_t timeout_ms,
                                          slb_health_cb cb, void *user)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    struct slb_health_check *hc;
    size_t n;

    if (service == NULL)
        service = "";
    if ((hc = calloc(1, sizeof(*hc))) == NULL)
        return NULL;
    if (slb_parse_addr(hostport, &hc->sa, &hc->salen) != 0) {
        slb_warn("health: invalid address \"%s\"", hostport);
        goto fail_addr;
    }
    if ((hc->addr = strdup(hostport)) == NULL)
        goto fail_addr;
    if ((hc->service = strdup(service)) == NULL)
        goto fail_service;
    req.service = hc->service;
    n = grpc__health__v1__health_check_request__get_packed_size(&req);
    if ((hc->req = malloc(5 + n)) == NULL)
        goto fail_req;
    hc->req[0] = 0;
    hc->req[1] = (uint8_t)(n >> 24);
    hc->req[2] = (uint8_t)(n >> 16);
    hc->req[3] = (uint8_t)(n >> 8);
    hc->req[4] = (uint8_t)n;
    grpc__health__v1__health_check_request__pack(&req, hc->req + 5);
    hc->req_len = 5 + n;

    hc->loop = loop;
    hc->io = io;
    hc->interval_ms = interval_ms != 0 ? interval_ms : 1000;
    hc->timeout_ms = timeout_ms != 0 ? timeout_ms : 1000;
    hc->backoff_ms = SLB_HEALTH_BACKOFF_INITIAL_MS < hc->interval_ms ? SLB_HEALTH_BACKOFF_INITIAL_MS : hc->interval_ms;
    hc->cb = cb;
    hc->user = user;
    hc->status = SLB_HEALTH_UNKNOWN;
    hc->phase = HC_IDLE;
    hc->refs = 3; /* the caller, two timers */
    uv_timer_init(loop, &hc->tick);
    uv_timer_init(loop, &hc->deadline);
    hc->tick.data = hc->deadline.data = hc;
    /* the first attempt runs from the loop: no callback before we return */
    uv_timer_start(&hc->tick, on_tick, 0, 0);
    return hc;

fail_req:
    free(hc->service);
fail_service:
    free(hc->addr);
fail_addr:
    free(hc);
    return NULL;
}

int slb_health_set_tls(struct slb_health_check *hc, struct slb_tls_ctx *ctx, const char *server_name,
                       struct slb_tls_stats *stats)
{
    char *name = strdup(server_name != NULL ? server_name : "");

    if (name == NULL)
        return SLB_ENOMEM;
    slb_tls_ctx_ref(ctx);
    slb_tls_ctx_unref(hc->tls);
    hc->tls = ctx;
    free(hc->tls_name);
    hc->tls_name = name;
    hc->tls_stats = stats;
    return 0;
}

void slb_health_stop(struct slb_health_check *hc)
{
    if (hc == NULL || hc->stopped)
        return;
    hc->stopped = 1;
    hc->cb = NULL;
    set_phase(hc, HC_STOPPED);
    close_conn(hc, UV_ECANCELED);
    uv_close((uv_handle_t *)&hc->tick, on_timer_closed);
    uv_close((uv_handle_t *)&hc->deadline, on_timer_closed);
    hc_unref(hc);
}
