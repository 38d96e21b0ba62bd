#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common.h"
#include "config.h"
#include "grpc.h"
#include "h2_downstream.h"
#include "h2_upstream.h"
#include "log.h"
#include "server.h"

/* Request bytes kept after they were sent, so a stream the backend refused
 * (GOAWAY, REFUSED_STREAM) can be replayed; past this the call commits. */
#define SLB_REPLAY_MAX     (256 * 1024)
#define SLB_FREE_CALLS_MAX 4096

static void call_maybe_free(struct slb_call *call);

static nghttp2_session *dsession(const struct slb_call *call)
{
    return call->dc->conn.session;
}

static nghttp2_session *usession(const struct slb_call *call)
{
    return call->uc->conn.session;
}

struct slb_call *slb_call_new(struct slb_server *srv, struct slb_downstream *dc, int32_t sid)
{
    struct slb_call *call = srv->free_calls;

    if (call != NULL) {
        srv->free_calls = call->d_next;
        srv->n_free_calls--;
    } else if ((call = malloc(sizeof(*call))) == NULL) {
        return NULL;
    }
    memset(call, 0, sizeof(*call));
    call->srv = srv;
    call->dc = dc;
    call->d_sid = sid;
    call->synth_status = -1;
    call->upstream_status = -1;
    call->deadline_idx = SLB_DEADLINE_NONE;
    slb_hdrs_init(&call->req_hdrs);
    slb_hdrs_init(&call->resp_hdrs);
    slb_hdrs_init(&call->trailers);
    slb_chunkq_init(&call->req, 1);
    slb_chunkq_init(&call->resp, 0);
    call->d_next = dc->calls;
    if (dc->calls != NULL)
        dc->calls->d_prev = call;
    dc->calls = call;
    dc->n_calls++;
    srv->n_calls++;
    srv->stats.calls_total++;
    return call;
}

/* Passive outlier detection hears how each attempt went. */
static void call_report(struct slb_call *call, int success)
{
    if (call->be != NULL && call->cluster != NULL)
        slb_cluster_report(call->cluster, call->be, success);
}

static void note_upstream_status(struct slb_call *call, const struct slb_hdrs *h)
{
    size_t len;
    const uint8_t *v = slb_hdrs_get(h, "grpc-status", &len);
    if (v != NULL && len > 0 && len < 4) {
        int code = 0;
        for (size_t i = 0; i < len; i++)
            code = code * 10 + (v[i] - '0');
        call->upstream_status = (int16_t)code;
        if (code == SLB_GRPC_OK && call->retry != NULL)
            slb_retry_on_success(&call->cluster->methods);
    }
}

static void call_unbind_backend(struct slb_call *call)
{
    if (call->be == NULL)
        return;
    if (call->counted) {
        call->be->outstanding--;
        call->counted = 0;
    }
    slb_backend_unref(call->be);
    call->be = NULL;
}

static void call_maybe_free(struct slb_call *call)
{
    struct slb_server *srv = call->srv;

    if (call->dc != NULL || call->uc != NULL || call->queued || call->waiting)
        return;
    call_unbind_backend(call);
    slb_deadline_remove(&srv->deadlines, call);
    if (call->counted_in_cluster)
        call->cluster->n_calls--;
    slb_hdrs_clear(&call->req_hdrs);
    slb_hdrs_clear(&call->resp_hdrs);
    slb_hdrs_clear(&call->trailers);
    slb_chunkq_clear(&call->req);
    slb_chunkq_clear(&call->resp);
    srv->n_calls--;
    if (srv->n_free_calls < SLB_FREE_CALLS_MAX) {
        call->d_next = srv->free_calls;
        srv->free_calls = call;
        srv->n_free_calls++;
    } else {
        free(call);
    }
}

/* Gives the downstream peer back the window held by request bytes sidelb will never forward. */
static void call_release_downstream_window(struct slb_call *call)
{
    if (call->dc != NULL && !call->dc->conn.closing && call->req_received > call->req_consumed) {
        nghttp2_session_consume(dsession(call), call->d_sid, (size_t)(call->req_received - call->req_consumed));
        slb_conn_mark_dirty(&call->dc->conn);
    }
    call->req_consumed = call->req_received;
}

static void call_release_upstream_window(struct slb_call *call)
{
    if (call->uc != NULL && !call->uc->conn.closing && call->resp_received > call->resp_consumed) {
        nghttp2_session_consume(usession(call), call->u_sid, (size_t)(call->resp_received - call->resp_consumed));
        slb_conn_mark_dirty(&call->uc->conn);
    }
    call->resp_consumed = call->resp_received;
}

/* No backend will read more request bytes: drop them and keep the client's window open. */
static void call_discard_request(struct slb_call *call)
{
    call->upstream_done = 1;
    slb_chunkq_clear(&call->req);
    call_release_downstream_window(call);
}

static void call_detach_upstream(struct slb_call *call, uint32_t rst_code)
{
    if (call->uc == NULL)
        return;
    call_release_upstream_window(call);
    slb_upstream_detach(call->uc, call, rst_code);
}

int slb_call_on_request_header(struct slb_call *call, nghttp2_rcbuf *name, nghttp2_rcbuf *value)
{
    nghttp2_vec n = nghttp2_rcbuf_get_buf(name);

    if (slb_hdrs_is_hop_by_hop(n.base, n.len))
        return 0;
    if (n.len == 12 && memcmp(n.base, "grpc-timeout", 12) == 0) {
        nghttp2_vec v = nghttp2_rcbuf_get_buf(value);
        uint64_t ms;
        if (slb_grpc_timeout_parse((const char *)v.base, v.len, &ms) == 0)
            call->deadline_ms = uv_now(call->srv->loop) + ms;
    }
    return slb_hdrs_push(&call->req_hdrs, name, value);
}

void slb_call_on_request_headers_done(struct slb_call *call, int end_stream)
{
    struct slb_cluster *cl;
    const uint8_t *path;
    size_t len;

    if (end_stream)
        call->req_end = 1;
    if (call->req_headers_done) {
        /* request trailers: gRPC has none; END_STREAM was taken above */
        slb_call_on_request_end(call);
        return;
    }
    call->req_headers_done = 1;
    path = slb_hdrs_get(&call->req_hdrs, ":path", &len);
    if (path == NULL) {
        slb_call_fail(call, SLB_GRPC_INTERNAL, "sidelb: request without :path");
        return;
    }
    if ((cl = slb_listener_route(call->dc->listener, path, len)) == NULL) {
        char msg[200];
        snprintf(msg, sizeof(msg), "sidelb: no route for %.*s", (int)(len > 150 ? 150 : len), (const char *)path);
        slb_debug("%s", msg);
        slb_call_fail(call, SLB_GRPC_UNIMPLEMENTED, msg);
        return;
    }
    if (cl->cfg->max_calls != 0 && cl->n_calls >= cl->cfg->max_calls) {
        char msg[200];
        snprintf(msg, sizeof(msg), "sidelb: cluster %s is at max_calls (%u)", cl->cfg->name, cl->cfg->max_calls);
        call->srv->stats.calls_failed_local++;
        slb_call_fail(call, SLB_GRPC_RESOURCE_EXHAUSTED, msg);
        return;
    }
    call->cluster = cl;
    cl->n_calls++;
    call->counted_in_cluster = 1;
    if ((call->mc = slb_method_lookup(&cl->methods, path, len)) != NULL) {
        call->retry = call->mc->has_retry ? &call->mc->retry : NULL;
        if (call->mc->timeout_ms != 0) {
            /* the method's timeout, unless the app asked for less */
            uint64_t d = uv_now(call->srv->loop) + call->mc->timeout_ms;
            if (call->deadline_ms == 0 || d < call->deadline_ms)
                call->deadline_ms = d;
        }
    }
    if (call->deadline_ms != 0 && slb_deadline_add(&call->srv->deadlines, call) != 0) {
        slb_call_fail(call, SLB_GRPC_RESOURCE_EXHAUSTED, "sidelb: out of memory");
        return;
    }
    if (cl->lb.ops->uses_hash) {
        const char *hname = cl->cfg->lb.hash_header;
        if (hname[0] != '\0') {
            const uint8_t *v = slb_hdrs_get(&call->req_hdrs, hname, &len);
            if (v != NULL) {
                call->hash = slb_hash64(v, len);
                call->has_hash = 1;
            }
        } else {
            call->hash = call->dc->peer_hash;
            call->has_hash = 1;
        }
    }
    slb_call_dispatch(call);
}

void slb_call_dispatch(struct slb_call *call)
{
    struct slb_cluster *cl = call->cluster;
    struct slb_backend *be = NULL;
    struct slb_upstream_pool *pool;

    if (call->dc == NULL)
        return;
    if (call->deadline_ms != 0 && uv_now(call->srv->loop) >= call->deadline_ms) {
        slb_call_fail(call, SLB_GRPC_DEADLINE_EXCEEDED, "sidelb: deadline exceeded before the call was sent");
        return;
    }
    if (call->attempts >= SLB_MAX_ATTEMPTS || (be = slb_cluster_pick(cl, call)) == NULL) {
        uint64_t now = uv_now(call->srv->loop);
        char msg[200];
        int status = SLB_GRPC_UNAVAILABLE;

        if (call->wait_until_ms == 0) {
            /* wait-for-ready: the method's waitForReady, else the cluster's
             * wait_for_ready_ms; never past the call's own deadline */
            int wfr = call->mc != NULL ? call->mc->wait_for_ready : -1;
            call->wait_until_ms = wfr == 0 ? now : now + cl->cfg->wait_for_ready_ms;
            if (wfr == 1 && call->deadline_ms != 0)
                call->wait_until_ms = call->deadline_ms;
            if (call->deadline_ms != 0 && call->deadline_ms < call->wait_until_ms)
                call->wait_until_ms = call->deadline_ms;
        }
        if (call->attempts < SLB_MAX_ATTEMPTS && now < call->wait_until_ms) {
            if (slb_cluster_wait(cl, call) == 0)
                return;
            snprintf(msg, sizeof(msg), "sidelb: cluster %s has no usable backend and max_waiting_calls (%u) wait",
                     cl->cfg->name, cl->cfg->max_waiting_calls);
            call->srv->stats.calls_failed_local++;
            slb_call_fail(call, SLB_GRPC_RESOURCE_EXHAUSTED, msg);
            return;
        }
        if (call->deadline_ms != 0 && now >= call->deadline_ms) {
            status = SLB_GRPC_DEADLINE_EXCEEDED;
            snprintf(msg, sizeof(msg), "sidelb: deadline exceeded waiting for a backend in cluster %s", cl->cfg->name);
        } else {
            snprintf(msg, sizeof(msg), "sidelb: no reachable backend in cluster %s", cl->cfg->name);
        }
        call->srv->stats.calls_failed_local++;
        slb_call_fail(call, status, msg);
        return;
    }
    slb_tried_add(&call->tried, be);
    call->attempts++;
    call->be = be;
    slb_backend_ref(be);
    be->outstanding++;
    call->counted = 1;
    if ((pool = slb_upstream_pool_get(call->srv, be, cl->cfg)) == NULL) {
        slb_call_fail(call, SLB_GRPC_RESOURCE_EXHAUSTED, "sidelb: out of memory");
        call_unbind_backend(call);
        return;
    }
    slb_upstream_pool_submit(pool, call);
}

/*
 * gRFC A6: retry an attempt that ended with a retryable status before any
 * response reached the app, if the policy allows another attempt, the whole
 * request is still retained and the backoff ends before the deadline.
 * Returns 1 when a retry was scheduled (the attempt is detached).
 */
static int call_try_retry(struct slb_call *call, int status, int report)
{
    const struct slb_retry_policy *p = call->retry;
    uint64_t now, wait;

    if (p == NULL || status < 0 || status > 31 || !(p->codes & (1u << status)))
        return 0;
    slb_retry_on_failure(&call->cluster->methods); /* counts whether or not a retry follows */
    if (call->dc == NULL || call->resp_headers_sent || !call->req.retain || call->retries + 1 >= p->max_attempts ||
        call->attempts >= SLB_MAX_ATTEMPTS || !slb_retry_allowed(&call->cluster->methods))
        return 0;
    now = uv_now(call->srv->loop);
    wait = slb_retry_backoff_ms(p, call->retries + 2u, slb_server_random(call->srv));
    if (call->deadline_ms != 0 && now + wait >= call->deadline_ms)
        return 0;
    if (report) /* the attempt's outcome, for outlier detection, before the backend is let go */
        call_report(call, status != SLB_GRPC_UNAVAILABLE);
    slb_debug("call %d: attempt %u on %s ended with %s; retrying in %llu ms", call->d_sid, call->attempts,
              call->be ? call->be->name : "?", slb_grpc_status_name(status), (unsigned long long)wait);
    call->retries++;
    call_detach_upstream(call, NGHTTP2_CANCEL);
    call_unbind_backend(call);
    slb_chunkq_rewind(&call->req);
    call->req_pos = 0;
    call->upstream_done = 0;
    call->resp_started = call->resp_end = 0;
    call->upstream_status = -1;
    slb_hdrs_clear(&call->resp_hdrs);
    slb_hdrs_clear(&call->trailers);
    slb_chunkq_clear(&call->resp);
    call->retry_at_ms = now + wait;
    slb_cluster_wait(call->cluster, call);
    return 1;
}

int slb_call_on_request_data(struct slb_call *call, const uint8_t *p, size_t n)
{
    call->req_received += n;
    if (call->upstream_done || call->resp_end) {
        /* nobody will read these: keep the client's window open */
        call_release_downstream_window(call);
        return 0;
    }
    if (call->mc != NULL && call->mc->max_request_bytes != 0) {
        uint32_t len = slb_grpc_scan(&call->req_scan, p, n, call->mc->max_request_bytes);
        if (len != 0) {
            char msg[160];
            snprintf(msg, sizeof(msg), "sidelb: request message of %u bytes exceeds maxRequestMessageBytes %u", len,
                     call->mc->max_request_bytes);
            slb_call_fail(call, SLB_GRPC_RESOURCE_EXHAUSTED, msg);
            call_discard_request(call);
            return 0;
        }
    }
    if (slb_chunkq_append(&call->req, p, n) != 0)
        return SLB_ENOMEM;
    if (call->uc != NULL && call->u_open && call->u_deferred) {
        call->u_deferred = 0;
        nghttp2_session_resume_data(usession(call), call->u_sid);
        slb_conn_mark_dirty(&call->uc->conn);
    }
    return 0;
}

void slb_call_on_request_end(struct slb_call *call)
{
    call->req_end = 1;
    if (call->uc != NULL && call->u_open && call->u_deferred) {
        call->u_deferred = 0;
        nghttp2_session_resume_data(usession(call), call->u_sid);
        slb_conn_mark_dirty(&call->uc->conn);
    }
}

void slb_call_on_downstream_close(struct slb_call *call, uint32_t error_code)
{
    struct slb_downstream *dc = call->dc;

    call_release_downstream_window(call);
    if (call->d_prev != NULL)
        call->d_prev->d_next = call->d_next;
    else
        dc->calls = call->d_next;
    if (call->d_next != NULL)
        call->d_next->d_prev = call->d_prev;
    dc->n_calls--;
    call->dc = NULL;
    if (call->queued)
        slb_upstream_pool_unqueue(call->pool, call);
    if (call->waiting)
        slb_cluster_unwait(call->cluster, call);
    /* A client cancel (or sidelb's own error reply) reaches the backend. */
    call_detach_upstream(call, error_code != NGHTTP2_NO_ERROR ? error_code : NGHTTP2_CANCEL);
    slb_chunkq_clear(&call->req);
    slb_chunkq_clear(&call->resp);
    call_maybe_free(call);
}

void slb_call_on_downstream_frame_sent(struct slb_call *call, const nghttp2_frame *frame)
{
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) || call->rst_after_response == 0 || call->dc == NULL)
        return;
    /* The response is complete but the client is still sending: tell it to
     * stop with the code the backend used (NO_ERROR stays NO_ERROR). */
    if (!call->req_end)
        nghttp2_submit_rst_stream(dsession(call), NGHTTP2_FLAG_NONE, call->d_sid, call->rst_after_response - 1);
    call->rst_after_response = 0;
}

int slb_call_submit_upstream(struct slb_call *call, struct slb_upstream *uc)
{
    nghttp2_nv nv[SLB_HDRS_MAX + 1];
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = slb_call_request_read_cb};
    size_t n = slb_hdrs_to_nv(&call->req_hdrs, nv);
    int has_body = !(call->req_end && call->req.unsent == 0);
    char timeout[16];
    int32_t sid;

    if (call->deadline_ms != 0) {
        /* The backend gets the time that is left (after waits, retries, or a
         * shorter method timeout), not the app's original grpc-timeout. */
        uint64_t now = uv_now(call->srv->loop), left = call->deadline_ms > now ? call->deadline_ms - now : 1;
        /* at most 8 digits (gRPC's PROTOCOL-HTTP2): milliseconds, or seconds past ~27 hours */
        size_t i, tl = left <= 99999999
                           ? (size_t)snprintf(timeout, sizeof(timeout), "%llum", (unsigned long long)left)
                           : (size_t)snprintf(timeout, sizeof(timeout), "%lluS",
                                              (unsigned long long)(left / 1000 > 99999999 ? 99999999 : left / 1000));
        for (i = 0; i < n && !(nv[i].namelen == 12 && memcmp(nv[i].name, "grpc-timeout", 12) == 0); i++)
            ;
        nv[i] = (nghttp2_nv){(uint8_t *)"grpc-timeout", (uint8_t *)timeout, 12, tl, NGHTTP2_NV_FLAG_NONE};
        if (i == n)
            n++;
    }
    sid = nghttp2_submit_request(uc->conn.session, NULL, nv, n, has_body ? &prd : NULL, call);

    if (sid < 0) {
        slb_warn("backend %s: cannot submit request: %s", call->be->name, nghttp2_strerror(sid));
        return SLB_EPROTO;
    }
    call->u_sid = sid;
    call->u_open = 1;
    call->u_deferred = 0;
    return 0;
}

int slb_call_on_response_header(struct slb_call *call, nghttp2_rcbuf *name, nghttp2_rcbuf *value)
{
    nghttp2_vec n = nghttp2_rcbuf_get_buf(name);

    if (slb_hdrs_is_hop_by_hop(n.base, n.len))
        return 0;
    return slb_hdrs_push(&call->resp_hdrs, name, value);
}

void slb_call_on_response_headers_done(struct slb_call *call, int cat, int end_stream)
{
    if (cat == NGHTTP2_HCAT_RESPONSE && !call->resp_started) {
        nghttp2_nv nv[SLB_HDRS_MAX];
        nghttp2_data_provider prd = {.source.ptr = call, .read_callback = slb_call_response_read_cb};
        size_t n;

        if (end_stream) {
            note_upstream_status(call, &call->resp_hdrs);
            if (call->upstream_status != SLB_GRPC_OK && call_try_retry(call, call->upstream_status, 1))
                return;
        }
        call->resp_started = 1;
        slb_chunkq_commit(&call->req); /* the backend has the call: no replay from here */
        if (end_stream)
            call->resp_end = 1;
        if (call->dc != NULL && !call->resp_headers_sent) {
            n = slb_hdrs_to_nv(&call->resp_hdrs, nv);
            nghttp2_submit_response(dsession(call), call->d_sid, nv, n, end_stream ? NULL : &prd);
            call->resp_headers_sent = 1;
            slb_conn_mark_dirty(&call->dc->conn);
        }
        slb_hdrs_clear(&call->resp_hdrs);
        return;
    }
    /* trailers */
    slb_hdrs_clear(&call->trailers);
    slb_hdrs_move(&call->trailers, &call->resp_hdrs);
    note_upstream_status(call, &call->trailers);
    if (end_stream)
        slb_call_on_response_end(call);
}

static void call_resume_downstream(struct slb_call *call)
{
    if (call->dc == NULL)
        return;
    if (call->d_deferred) {
        call->d_deferred = 0;
        nghttp2_session_resume_data(dsession(call), call->d_sid);
    }
    slb_conn_mark_dirty(&call->dc->conn);
}

int slb_call_on_response_data(struct slb_call *call, const uint8_t *p, size_t n)
{
    call->resp_received += n;
    if (call->dc == NULL || call->resp_end || !call->resp_headers_sent) {
        call_release_upstream_window(call);
        return 0;
    }
    if (call->mc != NULL && call->mc->max_response_bytes != 0) {
        uint32_t len = slb_grpc_scan(&call->resp_scan, p, n, call->mc->max_response_bytes);
        if (len != 0) {
            char msg[160];
            snprintf(msg, sizeof(msg), "sidelb: response message of %u bytes exceeds maxResponseMessageBytes %u", len,
                     call->mc->max_response_bytes);
            call_release_upstream_window(call);
            slb_call_fail(call, SLB_GRPC_RESOURCE_EXHAUSTED, msg);
            return 0;
        }
    }
    if (slb_chunkq_append(&call->resp, p, n) != 0)
        return SLB_ENOMEM;
    call_resume_downstream(call);
    return 0;
}

void slb_call_on_response_end(struct slb_call *call)
{
    call->resp_end = 1;
    call_resume_downstream(call);
}

void slb_call_on_upstream_close(struct slb_call *call, uint32_t error_code)
{
    call->u_open = 0;
    if (call->counted) {
        call->be->outstanding--;
        call->counted = 0;
    }
    if (error_code != NGHTTP2_REFUSED_STREAM)
        call_report(call, call->resp_end && call->upstream_status != SLB_GRPC_UNAVAILABLE);
    if (!call->resp_end) {
        char msg[160];
        if (error_code == NGHTTP2_REFUSED_STREAM && !call->resp_started && call->req.retain && call->dc != NULL &&
            call->attempts < SLB_MAX_ATTEMPTS) {
            /* The backend did not process it (GOAWAY or refused): replay on a fresh stream. */
            struct slb_upstream_pool *pool = call->uc->pool;
            slb_debug("backend %s refused stream %d: replaying", call->be->name, call->u_sid);
            call_detach_upstream(call, 0);
            slb_chunkq_rewind(&call->req);
            call->req_pos = 0;
            call->attempts++;
            call->be->outstanding++;
            call->counted = 1;
            slb_upstream_pool_submit(pool, call);
            return;
        }
        if (!call->resp_started && call_try_retry(call, slb_grpc_status_from_h2(error_code), 0))
            return;
        snprintf(msg, sizeof(msg), "sidelb: backend %s reset the stream (HTTP/2 error %u)", call->be->name, error_code);
        slb_call_fail(call, slb_grpc_status_from_h2(error_code), msg);
    } else if (!call->req_end && call->rst_after_response == 0) {
        call->rst_after_response = error_code + 1;
    }
    call_discard_request(call);
    if (call->resp.unsent == 0)
        call_detach_upstream(call, 0);
    call_maybe_free(call);
}

void slb_call_on_upstream_lost(struct slb_call *call, int err, int connect_failed)
{
    /* h2_upstream has already unlinked the call from the connection or queue. */
    call->u_open = 0;
    if (!call->resp_end)
        call_report(call, 0);
    if (connect_failed && call->dc != NULL && !call->resp_started) {
        /* Nothing reached the backend: try again (another one if any is
         * usable), without spending one of the call's attempts. */
        call_unbind_backend(call);
        call->attempts--;
        slb_chunkq_rewind(&call->req);
        call->req_pos = 0;
        slb_call_dispatch(call);
        return;
    }
    if (!call->resp_end) {
        char msg[160];
        if (!call->resp_started && call_try_retry(call, SLB_GRPC_UNAVAILABLE, 0))
            return;
        snprintf(msg, sizeof(msg), "sidelb: connection to backend %s lost (%s)", call->be ? call->be->name : "?",
                 slb_strerror(err));
        slb_call_fail(call, SLB_GRPC_UNAVAILABLE, msg);
    }
    call_discard_request(call);
    call_unbind_backend(call);
    call_maybe_free(call);
}

void slb_call_on_deadline(struct slb_call *call)
{
    slb_debug("call %d: deadline exceeded", call->d_sid);
    if (!call->resp_end || !call->resp_headers_sent)
        slb_call_fail(call, SLB_GRPC_DEADLINE_EXCEEDED, "sidelb: deadline exceeded");
    if (call->uc != NULL && call->u_open)
        call_detach_upstream(call, NGHTTP2_CANCEL);
    call_discard_request(call);
    call_maybe_free(call);
}

void slb_call_fail(struct slb_call *call, int grpc_status, const char *message)
{
    if (call->dc != NULL) {
        if (!call->resp_headers_sent) {
            char code[8], enc[512];
            nghttp2_nv nv[4] = {
                {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
                {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
                {(uint8_t *)"grpc-status", (uint8_t *)code, 11, 0, NGHTTP2_NV_FLAG_NONE},
                {(uint8_t *)"grpc-message", (uint8_t *)enc, 12, 0, NGHTTP2_NV_FLAG_NONE},
            };
            nv[2].valuelen = (size_t)snprintf(code, sizeof(code), "%d", grpc_status);
            nv[3].valuelen = slb_grpc_percent_encode(message, enc, sizeof(enc));
            nghttp2_submit_response(dsession(call), call->d_sid, nv, 4, NULL);
            call->resp_headers_sent = 1;
            call->resp_end = 1;
            if (!call->req_end)
                call->rst_after_response = NGHTTP2_NO_ERROR + 1;
            slb_chunkq_clear(&call->resp);
            slb_conn_mark_dirty(&call->dc->conn);
        } else if (!call->resp_end) {
            /* headers are out: end with error trailers after what is buffered */
            call->synth_status = (int16_t)grpc_status;
            snprintf(call->synth_buf, sizeof(call->synth_buf), "%s", message);
            call->resp_end = 1;
            call_resume_downstream(call);
        }
    }
    if (call->uc != NULL && call->u_open)
        call_detach_upstream(call, NGHTTP2_CANCEL);
    if (call->queued)
        slb_upstream_pool_unqueue(call->pool, call);
    if (call->waiting)
        slb_cluster_unwait(call->cluster, call);
}

ssize_t slb_call_request_read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                                 nghttp2_data_source *src, void *user)
{
    struct slb_call *call = src->ptr;
    const uint8_t *p;
    size_t n = slb_chunkq_peek(&call->req, &p);

    if (n > 0) {
        if (n > len)
            n = len;
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
        if (call->req_end && n == call->req.unsent)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (call->req_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    call->u_deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
}

int slb_call_request_send_cb(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t len,
                             nghttp2_data_source *src, void *user)
{
    struct slb_call *call = src->ptr;
    const uint8_t *p;

    slb_chunkq_peek(&call->req, &p);
    if (slb_conn_append_data_frame(&call->uc->conn, framehd, p, len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    slb_chunkq_advance(&call->req, len);
    call->req_pos += len;
    if (call->req_pos > call->req_consumed) {
        if (call->dc != NULL) {
            nghttp2_session_consume(dsession(call), call->d_sid, (size_t)(call->req_pos - call->req_consumed));
            slb_conn_mark_dirty(&call->dc->conn);
        }
        call->req_consumed = call->req_pos;
    }
    if (call->req.retain && call->req.retained > SLB_REPLAY_MAX)
        slb_chunkq_commit(&call->req);
    return 0;
}

ssize_t slb_call_response_read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                                  nghttp2_data_source *src, void *user)
{
    struct slb_call *call = src->ptr;
    const uint8_t *p;
    size_t n = slb_chunkq_peek(&call->resp, &p);

    if (n > 0) {
        if (n > len)
            n = len;
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
        return (ssize_t)n;
    }
    if (!call->resp_end) {
        call->d_deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (call->synth_status >= 0) {
        char code[8], enc[512];
        nghttp2_nv nv[2] = {
            {(uint8_t *)"grpc-status", (uint8_t *)code, 11, 0, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"grpc-message", (uint8_t *)enc, 12, 0, NGHTTP2_NV_FLAG_NONE},
        };
        nv[0].valuelen = (size_t)snprintf(code, sizeof(code), "%d", call->synth_status);
        nv[1].valuelen = slb_grpc_percent_encode(call->synth_buf, enc, sizeof(enc));
        if (nghttp2_submit_trailer(s, sid, nv, 2) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    } else if (call->trailers.n > 0) {
        nghttp2_nv nv[SLB_HDRS_MAX];
        size_t k = slb_hdrs_to_nv(&call->trailers, nv);
        if (nghttp2_submit_trailer(s, sid, nv, k) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        slb_hdrs_clear(&call->trailers);
    }
    return 0;
}

int slb_call_response_send_cb(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t len,
                              nghttp2_data_source *src, void *user)
{
    struct slb_call *call = src->ptr;
    const uint8_t *p;

    slb_chunkq_peek(&call->resp, &p);
    if (slb_conn_append_data_frame(&call->dc->conn, framehd, p, len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    slb_chunkq_advance(&call->resp, len);
    if (call->uc != NULL) {
        nghttp2_session_consume(usession(call), call->u_sid, len);
        slb_conn_mark_dirty(&call->uc->conn);
        call->resp_consumed += len;
        if (!call->u_open && call->resp.unsent == 0)
            call_detach_upstream(call, 0); /* the upstream stream is done and drained */
    } else {
        call->resp_consumed += len;
    }
    return 0;
}
