#include "call.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access_log.h"
#include "common.h"
#include "config.h"
#include "log.h"
#include "loop_ctx.h"
#include "route.h"

/* Request bytes are kept after they were sent, so a stream the backend
 * refused (GOAWAY, REFUSED_STREAM) or an A6 retry can be replayed; past
 * budgets.call_retry_bytes (all of the request kept: sent and not yet sent)
 * the call commits, as gRPC's per-RPC retry buffer limit. */
#define SLB_FREE_CALLS_MAX 4096
/* Budgets that bit are released below 7/8 of them (hysteresis). */
#define BUDGET_LOW(limit) ((limit) - (limit) / 8)

static const struct slb_h2_stream_ops down_stream_ops, up_stream_ops;

#define call_of_down(s)    slb_container_of(s, struct slb_call, down)
#define attempt_of_up(s)   slb_container_of(s, struct slb_call_attempt, up)
#define attempt_of_wait(w) slb_container_of(w, struct slb_call_attempt, pool_wait)

const char *slb_call_state_name(int state)
{
    static const char *const names[] = {"HEADERS", "WAIT_BACKEND", "BACKOFF",   "QUEUED",
                                        "SENT",    "STREAMING",    "FINISHING", "CLOSED"};
    return state >= 0 && state < (int)SLB_ARRAY_SIZE(names) ? names[state] : "?";
}

/* The one place the state changes. */
static void call_set_state(struct slb_call *call, enum slb_call_state state)
{
    if (call->state == state)
        return;
    slb_debug("call %d: %s -> %s", call->down.sid, slb_call_state_name(call->state), slb_call_state_name(state));
    call->state = (uint8_t)state;
}

static uint64_t call_now(const struct slb_call *call)
{
    return uv_now(call->ctx->loop);
}

static uint64_t earlier(uint64_t due, uint64_t t)
{
    return t != 0 && (due == 0 || t < due) ? t : due;
}

/* The call's one timer: the earliest of its deadline and the end of what it or its attempts wait for. */
static void call_arm_timer(struct slb_call *call)
{
    uint64_t due = call->deadline_ms;

    if (call->state == SLB_CALL_WAIT_BACKEND)
        due = earlier(due, call->wait_until_ms);
    if (call->state == SLB_CALL_BACKOFF)
        due = earlier(due, call->retry_at_ms);
    if (call->state == SLB_CALL_QUEUED || call->state == SLB_CALL_SENT) {
        for (uint8_t i = 0; i < call->n_att; i++) {
            const struct slb_call_attempt *a = &call->att[i];
            if (a->state == SLB_ATTEMPT_QUEUED)
                due = earlier(due, a->queue_until_ms);
            if (a->state != SLB_ATTEMPT_IDLE)
                due = earlier(due, a->recv_until_ms);
        }
        due = earlier(due, call->hedge_at_ms);
    }
    if (call->state >= SLB_CALL_FINISHING || due == 0) {
        slb_deadline_remove(&call->ctx->timers, &call->timer);
        return;
    }
    if (slb_deadline_set(&call->ctx->timers, &call->timer, due) != 0)
        slb_warn("call %d: out of memory for its timer", call->down.sid);
}

/* ---- buffer budgets ---- */

static void call_account(struct slb_call *call);
static void call_commit_leader(struct slb_call *call);

/* Drops the call's replay copy: it is committed to its current attempt (gRFC A6). */
static void call_drop_replay(struct slb_call *call, const char *why)
{
    struct slb_loop_ctx *ctx = call->ctx;
    uint64_t suppressed;

    if (!call->req.retain)
        return;
    if (call->n_att > 1)
        call_commit_leader(call); /* A6: the attempt that sent the most goes on, the others are cancelled */
    slb_chunkq_commit(&call->req);
    ctx->stats.retry_buffer_dropped++;
    if (slb_log_limit_pass(&ctx->log_limits.replay_dropped, uv_now(ctx->loop), SLB_LOG_LIMIT_MS, &suppressed))
        slb_info("call %d: its request is no longer kept for a retry (%s); %llu more since the last line; all are "
                 "counted in sidelb_retry_buffer_dropped_total (logged at most every %d s)",
                 call->down.sid, why, (unsigned long long)suppressed, SLB_LOG_LIMIT_MS / 1000);
    call_account(call);
}

/* What one app connection may hold now: its budget, or its share of the total while that is over. */
static uint64_t budget_conn_limit(const struct slb_loop_ctx *ctx)
{
    uint64_t limit = ctx->budgets.connection_bytes;

    if (ctx->buffers.total_over && ctx->buffers.n_buffering > 0) {
        uint64_t share = ctx->budgets.total_bytes / ctx->buffers.n_buffering;
        if (share < limit)
            limit = share;
    }
    return limit;
}

/* The call of an app stream in its connection's list (dc->streams). */
#define call_of_link(it) slb_container_of(it, struct slb_call, down.link)

/* Reopens the windows the budget held back for this call: its app stream's
 * (request bytes sent on) and its backend stream's (response bytes the app took). */
static void call_release_windows(struct slb_call *call)
{
    if (call->req_pos > call->req_consumed) {
        call->io->consume_stream(&call->down, (size_t)(call->req_pos - call->req_consumed));
        call->req_consumed = call->req_pos;
    }
    if (call->cur->up.conn != NULL && call->resp_received - call->resp_consumed > call->resp.unsent) {
        size_t n = (size_t)(call->resp_received - call->resp_consumed - call->resp.unsent);
        call->io->consume_stream(&call->cur->up, n);
        call->resp_consumed += n;
    }
}

/* The connection fell below its budget: its windows reopen. */
static void budget_conn_eases(struct slb_loop_ctx *ctx, struct slb_downstream *dc)
{
    struct slb_list *it;

    dc->held_back = 0;
    ctx->buffers.n_held_back--;
    if (dc->window_withheld > 0) {
        ctx->call_io->consume_downstream(dc, (size_t)dc->window_withheld);
        dc->window_withheld = 0;
    }
    for (it = dc->streams.next; it != &dc->streams; it = it->next)
        call_release_windows(call_of_link(it));
}

/* The connection went over its budget: its replay copies go first; if it is still over, its windows are held back. */
static void budget_conn_bites(struct slb_loop_ctx *ctx, struct slb_downstream *dc)
{
    uint64_t limit = budget_conn_limit(ctx);
    struct slb_list *it;

    for (it = dc->streams.next; it != &dc->streams; it = it->next)
        call_drop_replay(call_of_link(it), "its app connection is over its buffer budget");
    if (dc->buffered <= limit || dc->held_back)
        return;
    dc->held_back = 1;
    ctx->buffers.n_held_back++;
    ctx->stats.budget_conn_backpressure++;
    if (!dc->budget_logged) {
        dc->budget_logged = 1;
        slb_warn(
            "an app connection holds %llu bytes in sidelb, over its buffer budget of %llu (budgets.connection_bytes, "
            "or its share of budgets.total_bytes): its flow-control windows are held back until it holds less "
            "(logged once per connection)",
            (unsigned long long)dc->buffered, (unsigned long long)limit);
    }
}

/* All calls together went over budgets.total_bytes: every replay copy goes. */
static void budget_total_bites(struct slb_loop_ctx *ctx)
{
    uint64_t suppressed;
    struct slb_list *it, *jt;

    ctx->buffers.total_over = 1;
    ctx->stats.budget_total_exceeded++;
    if (slb_log_limit_pass(&ctx->log_limits.budget_total, uv_now(ctx->loop), SLB_LOG_LIMIT_MS, &suppressed)) {
        slb_warn("calls hold %llu bytes in sidelb, over budgets.total_bytes (%u): replay copies are dropped and app "
                 "connections over their share are held back (%llu more times since the last line; logged at most "
                 "every %d s)",
                 (unsigned long long)ctx->buffers.buffered, ctx->budgets.total_bytes, (unsigned long long)suppressed,
                 SLB_LOG_LIMIT_MS / 1000);
    }
    for (it = ctx->downstreams.next; it != &ctx->downstreams; it = it->next) {
        struct slb_downstream *dc = slb_list_entry(it, struct slb_downstream, ctx_link);
        for (jt = dc->streams.next; jt != &dc->streams; jt = jt->next)
            call_drop_replay(call_of_link(jt), "sidelb is over budgets.total_bytes");
    }
}

static void budget_total_eases(struct slb_loop_ctx *ctx)
{
    struct slb_list *it;

    ctx->buffers.total_over = 0;
    for (it = ctx->downstreams.next; it != &ctx->downstreams; it = it->next) {
        struct slb_downstream *dc = slb_list_entry(it, struct slb_downstream, ctx_link);
        if (dc->held_back && dc->buffered <= BUDGET_LOW(budget_conn_limit(ctx)))
            budget_conn_eases(ctx, dc);
    }
}

/* Brings the budgets up to date with what the call holds now (after its queues changed). */
static void call_account(struct slb_call *call)
{
    struct slb_loop_ctx *ctx = call->ctx;
    struct slb_downstream *dc = call->dc;
    size_t now = call->req.unsent + call->req.retained + call->resp.unsent;

    if (now == call->held || dc == NULL)
        return;
    if (now > call->held) {
        size_t d = now - call->held;
        if (dc->buffered == 0)
            ctx->buffers.n_buffering++;
        dc->buffered += d;
        ctx->buffers.buffered += d;
        call->held = now;
        if (!ctx->buffers.total_over && ctx->buffers.buffered > ctx->budgets.total_bytes)
            budget_total_bites(ctx);
        if (!dc->held_back && dc->buffered > budget_conn_limit(ctx))
            budget_conn_bites(ctx, dc);
        return;
    }
    dc->buffered -= call->held - now;
    ctx->buffers.buffered -= call->held - now;
    if (dc->buffered == 0)
        ctx->buffers.n_buffering--;
    call->held = now;
    if (ctx->buffers.total_over && ctx->buffers.buffered <= BUDGET_LOW(ctx->budgets.total_bytes))
        budget_total_eases(ctx);
    if (dc->held_back && dc->buffered <= BUDGET_LOW(budget_conn_limit(ctx)))
        budget_conn_eases(ctx, dc);
}

/* The call lets go of its app connection: nothing it holds counts any more. */
static void call_unaccount(struct slb_call *call)
{
    slb_chunkq_clear(&call->req);
    slb_chunkq_clear(&call->resp);
    call_account(call);
}

/* Whether the app connection's windows are held back now. */
static int call_held_back(const struct slb_call *call)
{
    return call->dc != NULL && call->dc->held_back;
}

/* ---- allocation ---- */

/* Readies attempt slot i (slots are used in order; a call without hedging uses only the first). */
static struct slb_call_attempt *call_attempt_init(struct slb_call *call, uint8_t i)
{
    struct slb_call_attempt *a = &call->att[i];

    if (i > 0 && i >= call->n_att)
        memset(a, 0, sizeof(*a)); /* call_new zeroed only the first slot */
    a->call = call;
    slb_h2_stream_init(&a->up, &up_stream_ops);
    slb_list_init(&a->pool_wait.link);
    if (call->n_att <= i)
        call->n_att = (uint8_t)(i + 1);
    return a;
}

static struct slb_call *call_new(struct slb_loop_ctx *ctx, struct slb_downstream *dc)
{
    struct slb_call *call = ctx->free_calls;

    if (call != NULL) {
        ctx->free_calls = call->next_free;
        ctx->n_free_calls--;
    } else if ((call = malloc(sizeof(*call))) == NULL) {
        return NULL;
    }
    memset(call, 0, offsetof(struct slb_call, att[1])); /* the other attempt slots when first used */
    call->ctx = ctx;
    call->io = ctx->call_io;
    call->dc = dc;
    call->state = SLB_CALL_HEADERS;
    call->synth_status = -1;
    call->upstream_status = -1;
    call->local_status = -1;
    call->start_ns = uv_hrtime();
    slb_h2_stream_init(&call->down, &down_stream_ops);
    call->cur = call_attempt_init(call, 0);
    slb_list_init(&call->wait.link);
    slb_deadline_entry_init(&call->timer);
    slb_hdrs_init(&call->req_hdrs);
    slb_hdrs_init(&call->resp_hdrs);
    slb_hdrs_init(&call->trailers);
    /* Under pressure (its connection held back, or the total over budget)
     * a new call keeps no replay copy: the cheapest bytes to give up. */
    slb_chunkq_init(&call->req, ctx->budgets.call_retry_bytes > 0 && !dc->held_back && !ctx->buffers.total_over);
    if (ctx->budgets.call_retry_bytes > 0 && !call->req.retain)
        ctx->stats.retry_buffer_dropped++;
    slb_chunkq_init(&call->resp, 0);
    ctx->n_calls++;
    ctx->stats.calls_total++;
    return call;
}

void slb_call_free_list_drain(struct slb_loop_ctx *ctx)
{
    while (ctx->free_calls != NULL) {
        struct slb_call *c = ctx->free_calls;
        ctx->free_calls = c->next_free;
        free(c);
    }
    ctx->n_free_calls = 0;
}

/* Lets go of the attempt's backend. */
static void attempt_unbind(struct slb_call_attempt *a)
{
    if (a->be == NULL)
        return;
    if (a->counted) {
        slb_backend_call_ended(a->be);
        a->counted = 0;
    }
    slb_backend_unref(a->be);
    a->be = NULL;
    a->pool = NULL;
}

/* Lets go of the attempt's stream (resetting it when rst_code != 0 and it is open). */
static void attempt_release(struct slb_call_attempt *a, uint32_t rst_code)
{
    if (a->up.conn != NULL)
        a->call->io->release(&a->up, rst_code);
}

/* Ends an attempt the call no longer wants: out of its pool's queue, its stream reset, its backend let go. */
static void attempt_count_end(struct slb_call_attempt *a, int status);

static void attempt_stop(struct slb_call_attempt *a, uint32_t rst_code)
{
    struct slb_call *call = a->call;

    attempt_count_end(a, SLB_GRPC_CANCELLED); /* unless its caller counted it with its status */

    call->io->unqueue(&a->pool_wait);
    if (a->state == SLB_ATTEMPT_QUEUED && call->attempts > 0)
        call->attempts--; /* nothing reached a backend */
    attempt_release(a, rst_code);
    attempt_unbind(a);
    if (call->resp_owner == a) {
        call->resp_owner = NULL;
        slb_hdrs_clear(&call->resp_hdrs);
    }
    a->state = SLB_ATTEMPT_IDLE;
    a->req_pos = 0;
    a->queue_until_ms = a->recv_until_ms = 0;
    a->lost_headers = 0;
}

/* Lets go of every attempt's stream. */
static void call_release_upstream(struct slb_call *call, uint32_t rst_code)
{
    for (uint8_t i = 0; i < call->n_att; i++)
        attempt_release(&call->att[i], rst_code);
}

/* Leaves whatever list it waits on. */
static void call_stop_waiting(struct slb_call *call)
{
    for (uint8_t i = 0; i < call->n_att; i++)
        call->io->unqueue(&call->att[i].pool_wait);
    slb_cluster_unwait(&call->wait);
}

/* Attempt a is over with status: counted per backend (status and duration), once. */
static void attempt_count_end(struct slb_call_attempt *a, int status)
{
    struct slb_call *call = a->call;
    struct slb_backend *be = a->be;
    uint64_t ns;

    if (!a->stats_open || be == NULL)
        return;
    a->stats_open = 0;
    ns = uv_hrtime() - a->start_ns;
    call->upstream_ns += ns;
    be->stats.attempts[slb_stats_code(status)]++;
    slb_stats_observe(&be->stats.attempt_duration, ns);
    if (SLB_UNLIKELY(call->ctx->access_log != NULL) && call->logged_be != be) {
        /* the access log names the final attempt's backend, which may be gone by then */
        slb_backend_ref(be);
        if (call->logged_be != NULL)
            slb_backend_unref(call->logged_be);
        call->logged_be = be;
    }
}

/* The status the app got: sidelb's own, else the backend's; none means the app's stream went first. */
static int call_final_status(const struct slb_call *call)
{
    if (call->local_status >= 0)
        return call->local_status;
    return call->upstream_status >= 0 ? call->upstream_status : SLB_GRPC_CANCELLED;
}

/* The access log's line for the call (when it is sampled and under the rate cap). */
static void call_log(struct slb_call *call, int status, uint64_t ns)
{
    struct slb_access_log *log = call->ctx->access_log;
    struct slb_access_record r;

    if (!slb_access_log_admit(log, call_now(call), slb_loop_random(call->ctx)))
        return;
    memset(&r, 0, sizeof(r));
    r.listener = call->dc != NULL && call->dc->set != NULL ? call->dc->set->name : NULL;
    r.peer = call->dc != NULL ? &call->dc->conn.tcp : NULL;
    r.method = (const char *)slb_hdrs_get(&call->req_hdrs, ":path", &r.method_len);
    r.cluster = call->cluster != NULL ? call->cluster->cfg->name : NULL;
    r.backend = call->logged_be != NULL ? call->logged_be->name : NULL;
    r.grpc_status = status;
    r.attempts = call->attempts;
    r.duration_ns = ns;
    r.upstream_ns = call->upstream_ns;
    r.request_bytes = call->req_received;
    r.response_bytes = call->resp_received;
    slb_access_log_write(log, &r);
}

/* The app's stream closed: the call is counted (listener, cluster, code; latency; bytes) and logged. */
static void call_count_end(struct slb_call *call)
{
    struct slb_loop_stats *st = &call->ctx->stats;
    struct slb_cluster *cl = call->cluster;
    int status = call_final_status(call);
    uint64_t ns = uv_hrtime() - call->start_ns;

    if (st->calls_by_code != NULL && call->dc != NULL && call->dc->set != NULL) {
        uint32_t li = call->dc->set->index, ci = cl != NULL ? cl->index : st->calls_n_clusters;
        if (li < st->calls_n_listeners && ci <= st->calls_n_clusters)
            st->calls_by_code[((size_t)li * (st->calls_n_clusters + 1) + ci) * SLB_STATS_GRPC_CODES +
                              slb_stats_code(status)]++;
    }
    if (cl != NULL && call->method_slot != 0) {
        struct slb_method_stat *ms = &cl->method_stats.items[call->method_slot - 1];
        ms->calls[slb_stats_code(status)]++;
        slb_stats_observe(&ms->duration, ns);
    }
    if (cl != NULL) {
        slb_stats_observe(&cl->stats.call_duration, ns);
        cl->stats.request_bytes += call->req_received;
        cl->stats.response_bytes += call->resp_received;
    }
    if (SLB_UNLIKELY(call->ctx->access_log != NULL))
        call_log(call, status, ns);
}

/* Attempts in flight (queued or sent), other than `except`. */
static int call_live_attempts(const struct slb_call *call, const struct slb_call_attempt *except)
{
    int n = 0;

    for (uint8_t i = 0; i < call->n_att; i++)
        n += &call->att[i] != except && call->att[i].state != SLB_ATTEMPT_IDLE;
    return n;
}

static void call_free(struct slb_call *call)
{
    struct slb_loop_ctx *ctx = call->ctx;

    call_stop_waiting(call);
    for (uint8_t i = 0; i < call->n_att; i++) {
        attempt_count_end(&call->att[i], SLB_GRPC_CANCELLED); /* the app went away first */
        attempt_release(&call->att[i], NGHTTP2_CANCEL);
        attempt_unbind(&call->att[i]);
    }
    if (call->logged_be != NULL)
        slb_backend_unref(call->logged_be);
    slb_deadline_remove(&ctx->timers, &call->timer);
    if (call->counted_in_cluster)
        call->cluster->n_calls--;
    slb_hdrs_clear(&call->req_hdrs);
    slb_hdrs_clear(&call->resp_hdrs);
    slb_hdrs_clear(&call->trailers);
    slb_chunkq_clear(&call->req);
    slb_chunkq_clear(&call->resp);
    ctx->n_calls--;
    if (ctx->n_free_calls < SLB_FREE_CALLS_MAX) {
        call->next_free = ctx->free_calls;
        ctx->free_calls = call;
        ctx->n_free_calls++;
    } else {
        free(call);
    }
}

/* ---- small pieces ---- */

/* Passive outlier detection hears how each attempt went (once per attempt
 * that reached a backend or failed to connect): a success, or a failure
 * (slb_outlier_status_failed(): a reset, a lost connection, a connect
 * failure, DEADLINE_EXCEEDED whoever ended it, and the other 5xx-like
 * statuses). An attempt the app cancelled is not counted. */
static void attempt_report(struct slb_call_attempt *a, int success)
{
    if (a->be != NULL && a->call->cluster != NULL)
        slb_cluster_report(a->call->cluster, a->be, success);
}

static void note_upstream_status(struct slb_call *call, const struct slb_hdrs *h)
{
    size_t len;
    const uint8_t *v = slb_hdrs_get(h, "grpc-status", &len);
    int code = v != NULL ? slb_grpc_status_parse(v, len) : -1;

    if (code < 0)
        return;
    call->upstream_status = (int16_t)code;
    if (code == SLB_GRPC_OK && (call->retry != NULL || call->hedging != NULL))
        slb_retry_on_success(&call->cluster->methods);
}

/* Gives the app back the window held by request bytes sidelb will never forward. */
static void call_release_downstream_window(struct slb_call *call)
{
    if (call->req_received > call->req_consumed)
        call->io->consume_stream(&call->down, (size_t)(call->req_received - call->req_consumed));
    call->req_consumed = call->req_received;
}

/* No backend will read more request bytes: drop them and keep the app's window open. */
static void call_discard_request(struct slb_call *call)
{
    call->upstream_done = 1;
    slb_chunkq_clear(&call->req);
    call_account(call);
    call_release_downstream_window(call);
}

/* Ends the call with a gRPC status: a trailers-only reply, or error trailers
 * after what the app was already sent. Lets go of the upstream side. */
static void call_fail(struct slb_call *call, int grpc_status, const char *message)
{
    if (call->state == SLB_CALL_CLOSED)
        return;
    call_stop_waiting(call);
    attempt_count_end(call->cur, grpc_status);
    if (call->state != SLB_CALL_FINISHING)
        call->local_status = (int16_t)grpc_status;
    for (uint8_t i = 0; i < call->n_att; i++)
        if (&call->att[i] != call->cur && call->att[i].state != SLB_ATTEMPT_IDLE)
            attempt_stop(&call->att[i], NGHTTP2_CANCEL); /* hedges not committed to */
    if (call->cur->up.open)
        attempt_release(call->cur, NGHTTP2_CANCEL);
    if (call->cur->up.conn == NULL)
        attempt_unbind(call->cur); /* no attempt left on it (least_request counts) */
    call->hedge_at_ms = 0;
    if (!call->resp_headers_sent) {
        nghttp2_nv nv[4];
        struct slb_grpc_status_text text;
        size_t n = slb_grpc_trailers_only(nv, &text, grpc_status, message);
        call->resp_headers_sent = 1;
        slb_chunkq_clear(&call->resp);
        call_account(call);
        if (!call->req_end)
            call->rst_after_response = NGHTTP2_NO_ERROR + 1;
        call_set_state(call, SLB_CALL_FINISHING);
        call->io->respond(&call->down, nv, n, 0);
    } else if (call->state != SLB_CALL_FINISHING) {
        /* headers are out: end with error trailers after what is buffered */
        call->synth_status = (int16_t)grpc_status;
        snprintf(call->synth_msg, sizeof(call->synth_msg), "%s", message);
        call_set_state(call, SLB_CALL_FINISHING);
        call->io->resume(&call->down);
    }
    call_arm_timer(call);
}

static void call_fail_local(struct slb_call *call, int grpc_status, const char *message)
{
    call->ctx->stats.calls_failed_local++;
    call_fail(call, grpc_status, message);
}

/* ---- dispatch: pick a backend and queue for a stream, or wait ---- */

static void call_dispatch(struct slb_call *call, struct slb_call_attempt *a);
static void call_reset_attempt(struct slb_call *call, struct slb_call_attempt *a);
static void call_sync_state(struct slb_call *call);

/* No backend can take the call now: wait (wait-for-ready, or health not known yet) or fail. */
static void call_no_backend(struct slb_call *call)
{
    struct slb_cluster *cl = call->cluster;
    uint64_t now = call_now(call);
    const char *host;
    char msg[384];

    /* first answers still to come: health checks (PENDING) and host-name lookups */
    uint32_t first_pending = slb_cluster_first_pending(cl);

    if (call->wait_health && first_pending == 0) {
        /* every first health answer is in: from here the wait-for-ready rule applies */
        call->wait_health = 0;
        call->wait_until_ms = 0;
    }
    if (call->wait_until_ms == 0) {
        /* the method's waitForReady, else the cluster's wait_for_ready_ms; never past the deadline */
        int wfr = call->mc != NULL ? call->mc->wait_for_ready : -1;
        call->wait_until_ms = wfr == 0 ? now : now + cl->cfg->wait_for_ready_ms;
        if (wfr == 1 && call->deadline_ms != 0)
            call->wait_until_ms = call->deadline_ms;
        if (call->deadline_ms != 0 && call->deadline_ms < call->wait_until_ms)
            call->wait_until_ms = call->deadline_ms;
    }
    if (first_pending > 0 && call->wait_until_ms <= now) {
        /* gRFC A17: a backend whose health check has not answered yet is
         * CONNECTING, and gRPC queues every call (wait-for-ready or not) until
         * the first answer, which comes (or times out) within a few timeout_ms:
         * wait one more timeout_ms, never past the deadline. The last first
         * answer wakes the call; then the wait-for-ready limit is computed
         * afresh (waitForReady false: it fails at once). The same holds for
         * a host name's first lookup: gRPC queues calls until its resolver's
         * first answer. */
        uint32_t t = cl->cfg->health_check.timeout_ms != 0 ? cl->cfg->health_check.timeout_ms : 1000;
        call->wait_until_ms = now + t;
        if (call->deadline_ms != 0 && call->deadline_ms < call->wait_until_ms)
            call->wait_until_ms = call->deadline_ms;
        call->wait_health = 1;
    }
    if (call->attempts < SLB_MAX_ATTEMPTS && now < call->wait_until_ms) {
        if (slb_cluster_wait(cl, &call->wait) == 0) {
            call_set_state(call, SLB_CALL_WAIT_BACKEND);
            call_arm_timer(call);
            return;
        }
        cl->stats.rejected_max_waiting++;
        snprintf(msg, sizeof(msg), "sidelb: cluster %s has no usable backend and max_waiting_calls (%u) wait",
                 cl->cfg->name, cl->cfg->max_waiting_calls);
        call_fail_local(call, SLB_GRPC_RESOURCE_EXHAUSTED, msg);
        return;
    }
    if (call->deadline_ms != 0 && now >= call->deadline_ms) {
        snprintf(msg, sizeof(msg), "sidelb: deadline exceeded waiting for a backend in cluster %s", cl->cfg->name);
        call_fail_local(call, SLB_GRPC_DEADLINE_EXCEEDED, msg);
        return;
    }
    /* why the last backend that failed to connect did (a TLS reason, a refused connect), when one is down */
    if (cl->set.n == 0 && (host = slb_cluster_unresolved_host(cl)) != NULL)
        snprintf(msg, sizeof(msg), "sidelb: no reachable backend in cluster %s (host %.80s does not resolve)",
                 cl->cfg->name, host);
    else
        snprintf(msg, sizeof(msg), "sidelb: no reachable backend in cluster %s%s%s", cl->cfg->name,
                 cl->last_connect_error[0] ? "; last connect error: " : "", cl->last_connect_error);
    call_fail_local(call, SLB_GRPC_UNAVAILABLE, msg);
}

/*
 * The backend's pool turned attempt a away: its queue is full
 * (max_pending_per_backend), or the attempt waited queue_timeout_ms there for
 * a stream slot. Nothing reached the backend, so this is a transparent retry:
 * the call goes to a backend it has not tried, without spending an attempt,
 * and fails (call_dispatch) when none can take it: RESOURCE_EXHAUSTED for a
 * full queue (sidelb sheds load, as at max_calls; clients and retry
 * policies do not retry it at once), UNAVAILABLE after the timeout (a
 * transient condition gRPC clients may retry). Not reported to outlier
 * detection: a busy backend is not a failing one. A hedged attempt turned
 * away while others are in flight is just dropped: the next hedge follows
 * at its time.
 */
static void call_queue_refused(struct slb_call *call, struct slb_call_attempt *a, int why)
{
    struct slb_loop_ctx *ctx = call->ctx;
    const struct slb_config_cluster *cfg = call->cluster->cfg;
    struct slb_log_limit *limit;
    uint64_t skipped;

    if (why == SLB_CALL_QUEUE_FULL) {
        ctx->stats.pool_queue_overflows++;
        limit = &ctx->log_limits.queue_full;
        snprintf(call->synth_msg, sizeof(call->synth_msg),
                 "sidelb: backend %.60s has max_pending_per_backend (%u) calls waiting for a stream", a->be->name,
                 cfg->max_pending_per_backend);
    } else {
        ctx->stats.pool_queue_timeouts++;
        limit = &ctx->log_limits.queue_timeout;
        snprintf(call->synth_msg, sizeof(call->synth_msg),
                 "sidelb: no stream free on backend %.60s within queue_timeout_ms (%u)", a->be->name,
                 cfg->queue_timeout_ms);
    }
    if (slb_log_limit_pass(limit, call_now(call), SLB_LOG_LIMIT_MS, &skipped))
        slb_warn("cluster %s: %s: the call goes to another backend, or fails (%llu more since the last such line)",
                 cfg->name, call->synth_msg + 8, (unsigned long long)skipped);
    a->stats_open = 0; /* not an attempt: counted as the pool's overflow or timeout */
    if (call_live_attempts(call, a) > 0) {
        attempt_stop(a, 0);
        call->hedges_sent--; /* it never reached a backend */
        call_sync_state(call);
        return;
    }
    attempt_unbind(a);
    call->attempts--;
    call->queue_refused = (uint8_t)why;
    call->queue_refusals++;
    a->queue_until_ms = 0;
    call_reset_attempt(call, a);
    call_dispatch(call, a);
}

/* No other backend can take a call a pool turned away: it fails with the pool's reason. */
static void call_queue_fail(struct slb_call *call)
{
    char msg[sizeof(call->synth_msg)];

    memcpy(msg, call->synth_msg, sizeof(msg));
    call_fail_local(
        call, call->queue_refused == SLB_CALL_QUEUE_FULL ? SLB_GRPC_RESOURCE_EXHAUSTED : SLB_GRPC_UNAVAILABLE, msg);
}

/* QUEUED or SENT, from the attempts in flight (the most advanced one). */
static void call_sync_state(struct slb_call *call)
{
    int queued = 0;

    for (uint8_t i = 0; i < call->n_att; i++) {
        if (call->att[i].state == SLB_ATTEMPT_SENT) {
            call_set_state(call, SLB_CALL_SENT);
            call_arm_timer(call);
            return;
        }
        queued |= call->att[i].state == SLB_ATTEMPT_QUEUED;
    }
    if (queued)
        call_set_state(call, SLB_CALL_QUEUED);
    call_arm_timer(call);
}

/* Queues attempt a on its pool (a stream follows in on_ready, maybe at once). */
static void call_queue(struct slb_call *call, struct slb_call_attempt *a)
{
    uint32_t timeout_ms = call->cluster->cfg->queue_timeout_ms;

    call->attempts++;
    a->stats_open = 1;
    a->start_ns = uv_hrtime();
    slb_backend_call_started(a->be);
    a->counted = 1;
    a->state = SLB_ATTEMPT_QUEUED;
    call->queue_refused = 0;
    a->queue_until_ms = 0;
    /* perAttemptRecvTimeout runs from the attempt's start, as in gRPC */
    a->recv_until_ms = call->retry != NULL && call->retry->per_attempt_recv_ms != 0
                           ? call_now(call) + call->retry->per_attempt_recv_ms
                           : 0;
    call_sync_state(call); /* QUEUED, unless another attempt is SENT */
    if (call->io->queue(a->pool, &a->pool_wait) != 0) {
        call_queue_refused(call, a, SLB_CALL_QUEUE_FULL);
        return;
    }
    if (a->state == SLB_ATTEMPT_QUEUED && a->pool_wait.pool != NULL && timeout_ms != 0) {
        /* it waits for a stream slot (no timer entry for a call that got one at once) */
        a->queue_until_ms = call_now(call) + timeout_ms;
        call_arm_timer(call);
    }
}

/* Binds attempt a to backend be and queues it. */
static void call_bind_and_queue(struct slb_call *call, struct slb_call_attempt *a, struct slb_backend *be,
                                struct slb_upstream_pool *pool)
{
    slb_tried_add(&call->tried, be);
    a->be = be;
    slb_backend_ref(be);
    a->pool = pool;
    call_queue(call, a);
}

/* Picks a backend for attempt a (the only one in flight) and queues it, or waits, or fails. */
static void call_dispatch(struct slb_call *call, struct slb_call_attempt *a)
{
    struct slb_cluster *cl = call->cluster;
    struct slb_backend *be = NULL;
    struct slb_upstream_pool *pool = NULL;

    call->cur = a;
    a->state = SLB_ATTEMPT_IDLE; /* until it is queued */
    if (call->deadline_ms != 0 && call_now(call) >= call->deadline_ms) {
        call_fail(call, SLB_GRPC_DEADLINE_EXCEEDED, "sidelb: deadline exceeded before the call was sent");
        return;
    }
    if (call->attempts < SLB_MAX_ATTEMPTS)
        be = slb_cluster_pick(cl, call->hash, call->has_hash, &call->tried);
    if (call->queue_refused != 0 &&
        (be == NULL || slb_tried_has(&call->tried, be) || call->queue_refusals >= SLB_MAX_ATTEMPTS)) {
        /* a pool turned it away and no backend it has not tried can take it */
        call_queue_fail(call);
        return;
    }
    if (be != NULL && (pool = call->io->pool(call->ctx, be, cl->cfg)) == NULL) {
        call_fail_local(call, SLB_GRPC_RESOURCE_EXHAUSTED, "sidelb: out of memory");
        return;
    }
    if (be == NULL || call->io->in_backoff(pool)) {
        /* A backend in connection backoff (panic mode picks those) would
         * only fail again: wait until one leaves backoff instead. */
        call_no_backend(call);
        return;
    }
    call_bind_and_queue(call, a, be, pool);
}

/* The cluster's wake: a backend may be usable now. */
void slb_call_wake(struct slb_cluster_waiter *w)
{
    struct slb_call *call = slb_container_of(w, struct slb_call, wait);

    slb_cluster_unwait(w); /* the cluster unlinked it already; a direct wake must too */
    if (call->state == SLB_CALL_WAIT_BACKEND)
        call_dispatch(call, call->cur);
}

/* Rewinds the request for attempt a and forgets the last response. */
static void call_reset_attempt(struct slb_call *call, struct slb_call_attempt *a)
{
    a->req_pos = 0;
    if (call_live_attempts(call, a) == 0) {
        slb_chunkq_rewind(&call->req);
        call->req_pos = 0;
    }
    call->upstream_done = 0;
    call->upstream_status = -1;
    slb_hdrs_clear(&call->resp_hdrs);
    call->resp_owner = NULL;
    slb_hdrs_clear(&call->trailers);
    slb_chunkq_clear(&call->resp);
    call->resp_received = call->resp_consumed = 0;
    call_account(call);
}

/* gRFC A6 pushback in a trailers-only reply: -2 none, -1 "do not retry", else the delay in ms. */
static int64_t call_pushback(const struct slb_hdrs *h)
{
    size_t len;
    const uint8_t *v = h != NULL ? slb_hdrs_get(h, "grpc-retry-pushback-ms", &len) : NULL;

    return v != NULL ? slb_retry_pushback_parse(v, len) : -2;
}

/*
 * gRFC A6: retry an attempt that ended with a retryable status (any status
 * when `any`: its perAttemptRecvTimeout passed) before any response reached
 * the app, if the policy allows another attempt, the server did not push back
 * with "don't retry", the whole request is still retained and the backoff (or
 * the server's pushback) ends before the deadline. h: the reply's headers, for
 * pushback. Returns 1 when a retry was scheduled (the attempt is let go).
 */
static int call_try_retry(struct slb_call *call, struct slb_call_attempt *a, int status, int report, int any,
                          const struct slb_hdrs *h)
{
    const struct slb_retry_policy *p = call->retry;
    uint64_t now, wait;
    int64_t pushback;

    if (p == NULL || status < 0 || status > 31 || (!any && !(p->codes & (1u << status))))
        return 0;
    slb_retry_on_failure(&call->cluster->methods); /* counts whether or not a retry follows */
    pushback = call_pushback(h);
    if (pushback == -1) {
        slb_debug("call %d: backend %s pushed back: no retry", call->down.sid, a->be ? a->be->name : "?");
        return 0;
    }
    if ((call->state != SLB_CALL_SENT && call->state != SLB_CALL_QUEUED) || call->resp_headers_sent ||
        !call->req.retain || call->retries + 1 >= p->max_attempts || call->attempts >= SLB_MAX_ATTEMPTS ||
        !slb_retry_allowed(&call->cluster->methods))
        return 0;
    now = call_now(call);
    if (pushback >= 0) {
        wait = (uint64_t)pushback;
        call->backoff_n = 0; /* A6: after a pushback the backoff starts again from initialBackoff */
    } else {
        wait = slb_retry_backoff_ms(p, call->backoff_n + 2u, slb_loop_random(call->ctx));
        call->backoff_n++;
    }
    if (call->deadline_ms != 0 && now + wait >= call->deadline_ms)
        return 0;
    if (report) /* the attempt's outcome, for outlier detection, before the backend is let go */
        attempt_report(a, !slb_outlier_status_failed(status));
    slb_debug("call %d: attempt %u on %s ended with %s; retrying in %llu ms", call->down.sid, call->attempts,
              a->be ? a->be->name : "?", slb_grpc_status_name(status), (unsigned long long)wait);
    call->retries++;
    call->cluster->stats.retries++;
    attempt_count_end(a, status);
    attempt_stop(a, NGHTTP2_CANCEL);
    call_reset_attempt(call, a);
    a->previous = call->retries; /* grpc-previous-rpc-attempts of the next attempt */
    call->retry_at_ms = now + wait;
    call_set_state(call, SLB_CALL_BACKOFF);
    call_arm_timer(call);
    return 1;
}

/* ---- hedging (gRFC A6 hedgingPolicy) ---- */

/* Whether another hedged attempt may start: the policy's maxAttempts, no
 * "don't retry" pushback, the request still kept, throttling (A6: hedges
 * are throttled as retries are). */
static int call_may_hedge(const struct slb_call *call)
{
    return call->hedging != NULL && !call->hedge_stop && call->hedges_sent < call->hedging->max_attempts &&
           call->attempts < SLB_MAX_ATTEMPTS && call->req.retain && !call->resp_headers_sent &&
           slb_retry_allowed(&call->cluster->methods);
}

/* A free attempt slot, or NULL. */
static struct slb_call_attempt *call_free_attempt(struct slb_call *call)
{
    for (uint8_t i = 0; i < SLB_MAX_ATTEMPTS; i++) {
        if (i >= call->n_att)
            return call_attempt_init(call, i);
        if (call->att[i].state == SLB_ATTEMPT_IDLE && call->att[i].up.conn == NULL && call->att[i].be == NULL)
            return &call->att[i];
    }
    return NULL;
}

/* Whether an attempt in flight uses be. */
static int call_attempt_on(const struct slb_call *call, const struct slb_backend *be)
{
    for (uint8_t i = 0; i < call->n_att; i++)
        if (call->att[i].state != SLB_ATTEMPT_IDLE && call->att[i].be == be)
            return 1;
    return 0;
}

/* A new attempt under the hedging policy: its number, and when the next one is due. */
static void call_hedge_started(struct slb_call *call, struct slb_call_attempt *a)
{
    a->previous = call->hedges_sent++;
    if (a->previous > 0) {
        call->ctx->stats.hedged_attempts++;
        slb_cluster_stats_hedge(call->cluster);
    }
    call->hedge_at_ms = call_may_hedge(call) ? call_now(call) + call->hedging->delay_ms : 0;
}

/* The next hedge is due: another attempt, on a backend no attempt in flight uses. */
static void call_hedge_next(struct slb_call *call)
{
    struct slb_cluster *cl = call->cluster;
    struct slb_call_attempt *a;
    struct slb_backend *be;
    struct slb_upstream_pool *pool;

    call->hedge_at_ms = 0;
    if (!call_may_hedge(call) || (a = call_free_attempt(call)) == NULL) {
        if (call_live_attempts(call, NULL) == 0) {
            /* waiting for it, the call was throttled meanwhile: it ends with its last attempt's status */
            char msg[120];
            snprintf(msg, sizeof(msg), "sidelb: every attempt failed (%s); no more hedges (retryThrottling)",
                     slb_grpc_status_name(call->hedge_status));
            call_fail(call, call->hedge_status, msg);
            call_discard_request(call);
            return;
        }
        call_arm_timer(call);
        return;
    }
    if (call_live_attempts(call, NULL) == 0) {
        /* nothing in flight (the last attempt failed, the pushback delay is over): a plain dispatch */
        call_hedge_started(call, a);
        call_dispatch(call, a);
        return;
    }
    be = slb_cluster_pick(cl, call->hash, call->has_hash, &call->tried);
    if (be == NULL || call_attempt_on(call, be) || (pool = call->io->pool(call->ctx, be, cl->cfg)) == NULL ||
        call->io->in_backoff(pool)) {
        /* no other backend now: the next hedge waits for an attempt in flight to fail */
        call_arm_timer(call);
        return;
    }
    call_hedge_started(call, a);
    slb_debug("call %d: hedged attempt %u to %s", call->down.sid, a->previous + 1u, be->name);
    call_bind_and_queue(call, a, be, pool);
}

/*
 * Attempt a of a hedged call ended with `status` before the call committed
 * (trailers-only reply h, or a reset). A6: a non-fatal status lets the next
 * hedge go at once, or after the server's pushback, or never if the server
 * said not to retry. Returns 0 when the call must end with this status
 * instead: it is fatal (or OK), or nothing else is in flight and no hedge may
 * follow. Returns 1 when a is let go and the call goes on.
 */
static int call_hedge_failed(struct slb_call *call, struct slb_call_attempt *a, int status, int report,
                             const struct slb_hdrs *h)
{
    int64_t pushback;

    if (call->hedging == NULL || status < 0 || status > 31 || !(call->hedging->non_fatal & (1u << status)))
        return 0;
    slb_retry_on_failure(&call->cluster->methods);
    pushback = call_pushback(h);
    if (pushback == -1)
        call->hedge_stop = 1;
    if (call_live_attempts(call, a) == 0 &&
        (!call_may_hedge(call) ||
         (call->deadline_ms != 0 && call_now(call) + (pushback > 0 ? (uint64_t)pushback : 0) >= call->deadline_ms)))
        return 0; /* nothing else in flight, and no hedge may follow (before the deadline) */
    if (report)
        attempt_report(a, !slb_outlier_status_failed(status));
    slb_debug("call %d: hedged attempt on %s ended with %s", call->down.sid, a->be ? a->be->name : "?",
              slb_grpc_status_name(status));
    attempt_stop(a, NGHTTP2_CANCEL);
    call->hedge_status = (int16_t)status;
    call->upstream_status = -1;
    slb_hdrs_clear(&call->resp_hdrs);
    call->resp_owner = NULL;
    if (call_may_hedge(call))
        call->hedge_at_ms = call_now(call) + (pushback >= 0 ? (uint64_t)pushback : 0);
    if (call_live_attempts(call, NULL) == 0) {
        /* nothing in flight: wait for the next hedge's time */
        call->retry_at_ms = call->hedge_at_ms;
        call_set_state(call, SLB_CALL_BACKOFF);
    }
    call_sync_state(call);
    return 1;
}

/* gRFC A6: the call is committed to attempt a (its response headers, or a
 * status that ends the call): every other attempt is cancelled. */
static void call_commit(struct slb_call *call, struct slb_call_attempt *a)
{
    call->cur = a;
    call->hedge_at_ms = 0;
    a->recv_until_ms = 0;
    if (call->n_att == 1)
        return;
    if (call->req.retain && a->req_pos != call->req_pos) {
        /* it lags behind the attempt that sent the most: the queue's cursor becomes its own */
        slb_chunkq_seek(&call->req, a->req_pos); /* what the call holds stays the same */
        call->req_pos = a->req_pos;
    }
    for (uint8_t i = 0; i < call->n_att; i++) {
        struct slb_call_attempt *b = &call->att[i];
        if (b == a || b->state == SLB_ATTEMPT_IDLE)
            continue;
        slb_debug("call %d: cancelling the hedged attempt on %s", call->down.sid, b->be ? b->be->name : "?");
        call->ctx->stats.hedges_cancelled++;
        attempt_stop(b, NGHTTP2_CANCEL);
    }
}

/* The replay copy goes (a budget): the attempt that sent the most goes on alone. */
static void call_commit_leader(struct slb_call *call)
{
    struct slb_call_attempt *lead = NULL;

    for (uint8_t i = 0; i < call->n_att; i++) {
        struct slb_call_attempt *a = &call->att[i];
        if (a->state != SLB_ATTEMPT_IDLE &&
            (lead == NULL || a->req_pos > lead->req_pos || (a->req_pos == lead->req_pos && a->state > lead->state)))
            lead = a;
    }
    if (lead != NULL) {
        /* also when it is alone: it may lag behind an attempt that ended (the cursor moves back to it) */
        call_commit(call, lead);
        call_sync_state(call);
    }
    call->hedge_stop = 1;
}

/* perAttemptRecvTimeout: attempt a had no response headers in time. gRPC
 * cancels it and retries (whatever retryableStatusCodes says), else the call
 * ends with DEADLINE_EXCEEDED. */
static void call_recv_timeout(struct slb_call *call, struct slb_call_attempt *a)
{
    char msg[160];

    snprintf(msg, sizeof(msg), "sidelb: no response headers from backend %.60s within perAttemptRecvTimeout (%u ms)",
             a->be ? a->be->name : "?", call->retry->per_attempt_recv_ms);
    slb_debug("call %d: %s", call->down.sid, msg + 8);
    a->recv_until_ms = 0;
    if (a->state == SLB_ATTEMPT_SENT)
        attempt_report(a, 0); /* an attempt that ends DEADLINE_EXCEEDED is a failure (A50) */
    if (call_try_retry(call, a, SLB_GRPC_DEADLINE_EXCEEDED, 0, 1, NULL))
        return;
    call_fail(call, SLB_GRPC_DEADLINE_EXCEEDED, msg);
    call_discard_request(call);
}

void slb_call_on_timer(struct slb_deadline *d)
{
    struct slb_call *call = slb_container_of(d, struct slb_call, timer);
    uint64_t now = call_now(call);

    if (call->deadline_ms != 0 && now >= call->deadline_ms) {
        slb_debug("call %d: deadline exceeded in %s", call->down.sid, slb_call_state_name(call->state));
        if (call->state == SLB_CALL_SENT || call->state == SLB_CALL_STREAMING)
            for (uint8_t i = 0; i < call->n_att; i++)
                if (call->att[i].up.open)
                    attempt_report(&call->att[i], 0); /* the attempt on the backend ends DEADLINE_EXCEEDED: a
                                                         failure (A50) */
        call_fail(call, SLB_GRPC_DEADLINE_EXCEEDED, "sidelb: deadline exceeded");
        call_discard_request(call);
        return;
    }
    if (call->state == SLB_CALL_WAIT_BACKEND && now >= call->wait_until_ms) {
        slb_cluster_unwait(&call->wait);
        call_no_backend(call); /* fails: the wait is over */
        return;
    }
    if (call->state == SLB_CALL_BACKOFF && now >= call->retry_at_ms) {
        if (call->hedging != NULL)
            call_hedge_next(call);
        else
            call_dispatch(call, call->cur);
        return;
    }
    if (call->state == SLB_CALL_QUEUED || call->state == SLB_CALL_SENT) {
        for (uint8_t i = 0; i < call->n_att; i++) {
            struct slb_call_attempt *a = &call->att[i];
            if (a->state == SLB_ATTEMPT_QUEUED && a->queue_until_ms != 0 && now >= a->queue_until_ms) {
                call->io->unqueue(&a->pool_wait);
                call_queue_refused(call, a, SLB_CALL_QUEUE_TIMEOUT);
                return;
            }
            if (a->state != SLB_ATTEMPT_IDLE && a->recv_until_ms != 0 && now >= a->recv_until_ms) {
                call_recv_timeout(call, a);
                return;
            }
        }
        if (call->hedge_at_ms != 0 && now >= call->hedge_at_ms) {
            call_hedge_next(call);
            return;
        }
    }
    call_arm_timer(call); /* early: due again later */
}

/* ---- the app's side (slb_downstream_handler) ---- */

static struct slb_h2_stream *down_open(struct slb_downstream *dc)
{
    struct slb_call *call = call_new(dc->ctx, dc);
    return call != NULL ? &call->down : NULL;
}

static int down_on_header(struct slb_h2_stream *s, nghttp2_rcbuf *name, nghttp2_rcbuf *value, int trailer)
{
    struct slb_call *call = call_of_down(s);
    nghttp2_vec n = nghttp2_rcbuf_get_buf(name);

    /* gRPC requests have no trailers: a trailer block only ends the request,
     * and nothing in it (grpc-timeout least of all) changes the call. */
    if (trailer || call->state != SLB_CALL_HEADERS || slb_hdrs_is_hop_by_hop(n.base, n.len))
        return 0;
    if (n.len == 12 && memcmp(n.base, "grpc-timeout", 12) == 0) {
        nghttp2_vec v = nghttp2_rcbuf_get_buf(value);
        uint64_t ms;
        if (slb_grpc_timeout_parse((const char *)v.base, v.len, &ms) == 0)
            call->deadline_ms = call_now(call) + ms;
    }
    return slb_hdrs_push(&call->req_hdrs, name, value);
}

/*
 * The app's header block passed the listener's max_header_list_size. Before the response
 * started, the call ends with RESOURCE_EXHAUSTED, trailers-only: a limit was hit, as for
 * maxRequestMessageBytes (gRPC's own servers answer oversized metadata the same way), and not a
 * fault of sidelb (INTERNAL). After, only a reset is left: ENHANCE_YOUR_CALM, which gRPC clients
 * also read as RESOURCE_EXHAUSTED. Either way the backend's stream is cancelled, nothing more of
 * the request is forwarded, and only this stream ends.
 */
static void down_on_header_list_too_large(struct slb_h2_stream *s, int trailer, uint32_t limit)
{
    struct slb_call *call = call_of_down(s);
    char msg[160];

    if (call->resp_headers_sent) {
        attempt_release(call->cur, NGHTTP2_CANCEL);
        call_discard_request(call);
        call->io->reset(&call->down, NGHTTP2_ENHANCE_YOUR_CALM);
        return;
    }
    snprintf(msg, sizeof(msg), "sidelb: request %s larger than max_header_list_size (%u bytes)",
             trailer ? "trailers" : "headers", limit);
    call_fail_local(call, SLB_GRPC_RESOURCE_EXHAUSTED, msg);
    call_discard_request(call);
}

static void down_on_end(struct slb_h2_stream *s);

static void down_on_headers_done(struct slb_h2_stream *s, int trailer, int end_stream)
{
    struct slb_call *call = call_of_down(s);
    struct slb_cluster *cl;
    const uint8_t *path;
    size_t len;

    if (trailer || call->state != SLB_CALL_HEADERS) {
        if (end_stream)
            down_on_end(s);
        return;
    }
    if (end_stream)
        call->req_end = 1;
    path = slb_hdrs_get(&call->req_hdrs, ":path", &len);
    if (path == NULL) {
        call_fail(call, SLB_GRPC_INTERNAL, "sidelb: request without :path");
        return;
    }
    if ((cl = slb_routes_lookup(call->dc->routes, path, len)) == NULL) {
        char msg[200];
        snprintf(msg, sizeof(msg), "sidelb: no route for %.*s", (int)(len > 150 ? 150 : len), (const char *)path);
        slb_debug("%s", msg);
        call_fail(call, SLB_GRPC_UNIMPLEMENTED, msg);
        return;
    }
    call->cluster = cl; /* counted under its cluster from here */
    if (cl->cfg->max_calls != 0 && cl->n_calls >= cl->cfg->max_calls) {
        char msg[200];
        cl->stats.rejected_max_calls++;
        snprintf(msg, sizeof(msg), "sidelb: cluster %s is at max_calls (%u)", cl->cfg->name, cl->cfg->max_calls);
        call_fail_local(call, SLB_GRPC_RESOURCE_EXHAUSTED, msg);
        return;
    }
    call->cluster = cl;
    cl->n_calls++;
    call->counted_in_cluster = 1;
    if (SLB_UNLIKELY(cl->method_stats.cap != 0))
        call->method_slot = (uint16_t)slb_method_stats_slot(&cl->method_stats, path, len);
    if ((call->mc = slb_method_lookup(&cl->methods, path, len)) != NULL) {
        call->retry = call->mc->has_retry ? &call->mc->retry : NULL;
        call->hedging = call->mc->has_hedging ? &call->mc->hedging : NULL;
        if (call->mc->timeout_ms != 0) {
            /* the method's timeout, unless the app asked for less */
            uint64_t d = call_now(call) + call->mc->timeout_ms;
            if (call->deadline_ms == 0 || d < call->deadline_ms)
                call->deadline_ms = d;
        }
    }
    if (cl->lb.ops->uses_hash) {
        const struct slb_lb_options *o = &cl->cfg->lb;
        const uint8_t *v = NULL;
        size_t vlen = 0;
        if (o->hash_on == SLB_LB_HASH_ON_HEADER)
            v = slb_hdrs_get(&call->req_hdrs, o->hash_header, &vlen);
        call->has_hash = (uint8_t)slb_lb_hash_key(o, &call->dc->peer_keys, v, vlen, &call->hash);
        if (SLB_UNLIKELY(o->hash_on == SLB_LB_HASH_ON_SOURCE_IP && call->dc->peer_keys.loopback &&
                         !cl->logged_shared_key && slb_cluster_first_note(cl))) {
            cl->logged_shared_key = 1;
            slb_notice("cluster %s: %s keys on the app's address, and apps on this host all connect from "
                       "loopback: they share one key, so all their calls go to one backend (\"hash_on\": "
                       "\"source_ip_port\" keys each app connection, \"header\" a request header)",
                       cl->cfg->name, cl->cfg->policy);
        }
    }
    if (call->hedging != NULL)
        call_hedge_started(call, call->cur);
    call_dispatch(call, call->cur);
}

/* More of the request is there: every attempt's stream may send it. */
static void call_resume_upstream(struct slb_call *call)
{
    for (uint8_t i = 0; i < call->n_att; i++)
        if (call->att[i].up.open)
            call->io->resume(&call->att[i].up);
}

static int down_on_data(struct slb_h2_stream *s, const uint8_t *p, size_t n)
{
    struct slb_call *call = call_of_down(s);

    call->req_received += n;
    if (call->upstream_done || call->state == SLB_CALL_FINISHING) {
        call->io->consume_connection(&call->down, n);
        call_release_downstream_window(call); /* nobody will read these */
        return 0;
    }
    if (call->mc != NULL && call->mc->max_request_bytes != 0) {
        uint32_t len = slb_grpc_scan(&call->req_scan, p, n, call->mc->max_request_bytes);
        if (len != 0) {
            char msg[160];
            snprintf(msg, sizeof(msg), "sidelb: request message of %u bytes exceeds maxRequestMessageBytes %u", len,
                     call->mc->max_request_bytes);
            call->io->consume_connection(&call->down, n);
            call_fail(call, SLB_GRPC_RESOURCE_EXHAUSTED, msg);
            call_discard_request(call);
            return 0;
        }
    }
    if (slb_chunkq_append(&call->req, p, n) != 0) {
        call->io->consume_connection(&call->down, n);
        return SLB_ENOMEM;
    }
    if (call->req.retain && call->req.retained + call->req.unsent > call->ctx->budgets.call_retry_bytes)
        call_drop_replay(call, "it passed budgets.call_retry_bytes");
    call_account(call);
    /* Landed: the app's other streams may send, unless its connection is over budget. */
    if (call->dc->held_back)
        call->dc->window_withheld += n;
    else
        call->io->consume_connection(&call->down, n);
    call_resume_upstream(call);
    return 0;
}

static void down_on_end(struct slb_h2_stream *s)
{
    struct slb_call *call = call_of_down(s);

    call->req_end = 1;
    call_resume_upstream(call);
}

static void down_on_response_sent(struct slb_h2_stream *s)
{
    struct slb_call *call = call_of_down(s);

    if (call->rst_after_response == 0)
        return;
    /* The response is complete but the app is still sending: tell it to
     * stop with the code the backend used (NO_ERROR stays NO_ERROR). */
    if (!call->req_end)
        call->io->reset(&call->down, call->rst_after_response - 1);
    call->rst_after_response = 0;
}

static void down_on_close(struct slb_h2_stream *s, uint32_t error_code)
{
    struct slb_call *call = call_of_down(s);

    call_set_state(call, SLB_CALL_CLOSED);
    call_unaccount(call);
    for (uint8_t i = 0; i < call->n_att; i++)
        attempt_count_end(&call->att[i], SLB_GRPC_CANCELLED); /* still open: the app cancelled it */
    call_count_end(call);
    call->dc = NULL;
    /* A cancel from the app (or sidelb's own reply) reaches the backend. */
    call_release_upstream(call, error_code != NGHTTP2_NO_ERROR ? error_code : NGHTTP2_CANCEL);
    call_free(call);
}

/* stream_idle_timeout_ms: nothing moved either way for idle_ms. The app gets UNAVAILABLE (error
 * trailers after what it was sent, or a trailers-only reply), the backend's stream is reset. */
static void down_on_idle(struct slb_h2_stream *s, uint32_t idle_ms)
{
    struct slb_call *call = call_of_down(s);
    char msg[120];

    snprintf(msg, sizeof(msg), "sidelb: no frames on the stream for %u ms (stream_idle_timeout_ms)", idle_ms);
    call_fail_local(call, SLB_GRPC_UNAVAILABLE, msg);
    call_discard_request(call);
}

const struct slb_downstream_handler slb_call_downstream_handler = {
    .open = down_open,
    .on_header = down_on_header,
    .on_header_list_too_large = down_on_header_list_too_large,
    .on_headers_done = down_on_headers_done,
    .on_data = down_on_data,
    .on_end = down_on_end,
    .on_response_sent = down_on_response_sent,
    .on_close = down_on_close,
    .on_idle = down_on_idle,
};

/* ---- the backend's side (slb_upstream_handler) ---- */

/* Replaces header `name` in nv[0, *n) with value (or appends it). */
static void nv_set(nghttp2_nv *nv, size_t *n, const char *name, size_t name_len, const char *value, size_t len)
{
    size_t i;

    for (i = 0; i < *n && !(nv[i].namelen == name_len && memcmp(nv[i].name, name, name_len) == 0); i++)
        ;
    nv[i] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, name_len, len, NGHTTP2_NV_FLAG_NONE};
    if (i == *n)
        (*n)++;
}

/* The attempt's request for the backend: the app's headers, with the time
 * that is left as grpc-timeout and, from the second attempt on,
 * grpc-previous-rpc-attempts (gRFC A6). */
static void up_on_ready(struct slb_pool_waiter *w, struct slb_upstream *uc)
{
    struct slb_call_attempt *a = attempt_of_wait(w);
    struct slb_call *call = a->call;
    nghttp2_nv nv[SLB_HDRS_MAX + 2];
    size_t n = slb_hdrs_to_nv(&call->req_hdrs, nv);
    int has_body = !(call->req_end && call->req.unsent + call->req.retained == 0);
    char timeout[SLB_GRPC_TIMEOUT_MAX], previous[4];
    int waited = a->queue_until_ms != 0;

    a->queue_until_ms = 0;
    if (call->deadline_ms != 0) {
        /* The backend gets the time that is left (after waits, retries, or a
         * shorter method timeout), not the app's original grpc-timeout. */
        uint64_t now = call_now(call), left = call->deadline_ms > now ? call->deadline_ms - now : 1;
        nv_set(nv, &n, "grpc-timeout", 12, timeout, slb_grpc_timeout_format(left, timeout));
    }
    if (a->previous > 0)
        nv_set(nv, &n, "grpc-previous-rpc-attempts", 26, previous,
               (size_t)snprintf(previous, sizeof(previous), "%u", a->previous));
    if (call->io->request(uc, &a->up, nv, n, has_body) != 0) {
        char msg[160];
        attempt_report(a, 0);
        attempt_count_end(a, SLB_GRPC_UNAVAILABLE);
        snprintf(msg, sizeof(msg), "sidelb: cannot send the call to backend %s", call->io->backend_name(uc));
        if (call_live_attempts(call, a) > 0) {
            attempt_stop(a, 0); /* a hedge: the others go on */
            call_sync_state(call);
            return;
        }
        call_discard_request(call);
        call_fail(call, SLB_GRPC_UNAVAILABLE, msg);
        return;
    }
    a->state = SLB_ATTEMPT_SENT;
    call_set_state(call, SLB_CALL_SENT);
    if (waited)
        call_arm_timer(call); /* the queue wait is over: its timer entry goes, or moves to the deadline */
}

/* The picked backend cannot take it (connect failed, draining): nothing
 * reached it, so try again without spending one of the call's attempts. */
static void up_on_unavailable(struct slb_pool_waiter *w, int err)
{
    struct slb_call_attempt *a = attempt_of_wait(w);
    struct slb_call *call = a->call;

    if (a->state != SLB_ATTEMPT_QUEUED)
        return;
    a->queue_until_ms = 0;
    attempt_report(a, 0);
    attempt_count_end(a, SLB_GRPC_UNAVAILABLE); /* counted: the backend could not be reached */
    if (call_live_attempts(call, a) > 0) {
        attempt_stop(a, 0); /* a hedge: the others go on, the next hedge follows at its time */
        call->hedges_sent--;
        call_sync_state(call);
        return;
    }
    attempt_unbind(a);
    call->attempts--;
    call_reset_attempt(call, a);
    call_dispatch(call, a);
}

static int up_on_header(struct slb_h2_stream *s, nghttp2_rcbuf *name, nghttp2_rcbuf *value)
{
    struct slb_call_attempt *a = attempt_of_up(s);
    struct slb_call *call = a->call;
    nghttp2_vec n = nghttp2_rcbuf_get_buf(name);

    if (slb_hdrs_is_hop_by_hop(n.base, n.len))
        return 0;
    if (call->resp_owner != NULL && call->resp_owner != a) {
        a->lost_headers = 1; /* two hedges' header blocks interleaved: this one is dropped (see up_on_headers_done) */
        return 0;
    }
    call->resp_owner = a;
    return slb_hdrs_push(&call->resp_hdrs, name, value);
}

static void up_on_end(struct slb_h2_stream *s);

/* An attempt ended before the call committed (reset, lost connection, or a
 * header block sidelb could not keep): the hedging policy goes on with the
 * others, or a retry follows; else the call is committed to it. Returns 1
 * when the call goes on without it. */
static int up_attempt_ended(struct slb_call *call, struct slb_call_attempt *a, int status)
{
    if (call->state != SLB_CALL_SENT || a->state != SLB_ATTEMPT_SENT)
        return 0;
    if (call->hedging != NULL && call_hedge_failed(call, a, status, 0, NULL))
        return 1;
    if (call_try_retry(call, a, status, 0, 0, NULL))
        return 1;
    call_commit(call, a);
    return 0;
}

static void up_on_headers_done(struct slb_h2_stream *s, int trailer, int end_stream)
{
    struct slb_call_attempt *a = attempt_of_up(s);
    struct slb_call *call = a->call;

    if (!trailer && call->state == SLB_CALL_SENT && a->state == SLB_ATTEMPT_SENT) {
        nghttp2_nv nv[SLB_HDRS_MAX];
        size_t n;

        if (a->lost_headers) {
            /* its fields were dropped (another hedge's block was arriving): it cannot be relayed */
            a->lost_headers = 0;
            attempt_report(a, 0);
            if (!up_attempt_ended(call, a, SLB_GRPC_UNAVAILABLE))
                call_fail(call, SLB_GRPC_INTERNAL, "sidelb: a backend's response headers were lost");
            return;
        }
        if (call->resp_owner == a)
            call->resp_owner = NULL;
        if (end_stream) {
            note_upstream_status(call, &call->resp_hdrs);
            if (call->upstream_status != SLB_GRPC_OK &&
                ((call->hedging != NULL && call_hedge_failed(call, a, call->upstream_status, 1, &call->resp_hdrs)) ||
                 call_try_retry(call, a, call->upstream_status, 1, 0, &call->resp_hdrs)))
                return;
        }
        call_commit(call, a);
        slb_chunkq_commit(&call->req); /* the backend has the call: no replay from here */
        call_account(call);
        call_set_state(call, end_stream ? SLB_CALL_FINISHING : SLB_CALL_STREAMING);
        n = slb_hdrs_to_nv(&call->resp_hdrs, nv);
        call->resp_headers_sent = 1;
        call->io->respond(&call->down, nv, n, !end_stream);
        slb_hdrs_clear(&call->resp_hdrs);
        call_arm_timer(call);
        return;
    }
    a->lost_headers = 0;
    if (call->resp_owner == a)
        call->resp_owner = NULL;
    if (!trailer || a != call->cur) {
        if (call->resp_owner == NULL)
            slb_hdrs_clear(&call->resp_hdrs); /* a late header block of a call sidelb already ended */
        return;
    }
    slb_hdrs_clear(&call->trailers);
    slb_hdrs_move(&call->trailers, &call->resp_hdrs);
    note_upstream_status(call, &call->trailers);
    if (end_stream)
        up_on_end(s);
}

static int up_on_data(struct slb_h2_stream *s, const uint8_t *p, size_t n)
{
    struct slb_call_attempt *a = attempt_of_up(s);
    struct slb_call *call = a->call;

    if (a != call->cur) {
        /* an attempt not committed to: nobody reads it */
        call->io->consume_connection(s, n);
        call->io->consume_stream(s, n);
        return 0;
    }
    call->resp_received += n;
    call->io->consume_connection(s, n); /* landed: other calls on this connection may receive */
    if (call->state != SLB_CALL_STREAMING) {
        /* nobody will read these: keep the backend's stream window open */
        call->io->consume_stream(s, n);
        call->resp_consumed += n;
        return 0;
    }
    if (call->mc != NULL && call->mc->max_response_bytes != 0) {
        uint32_t len = slb_grpc_scan(&call->resp_scan, p, n, call->mc->max_response_bytes);
        if (len != 0) {
            char msg[160];
            snprintf(msg, sizeof(msg), "sidelb: response message of %u bytes exceeds maxResponseMessageBytes %u", len,
                     call->mc->max_response_bytes);
            call->io->consume_stream(s, n);
            call->resp_consumed += n;
            call_fail(call, SLB_GRPC_RESOURCE_EXHAUSTED, msg);
            return 0;
        }
    }
    if (slb_chunkq_append(&call->resp, p, n) != 0)
        return SLB_ENOMEM;
    call_account(call);
    call->io->resume(&call->down);
    return 0;
}

static void up_on_end(struct slb_h2_stream *s)
{
    struct slb_call_attempt *a = attempt_of_up(s);
    struct slb_call *call = a->call;

    if (call->state != SLB_CALL_STREAMING || a != call->cur)
        return;
    call_set_state(call, SLB_CALL_FINISHING);
    call_arm_timer(call);
    call->io->resume(&call->down);
}

static void up_on_close(struct slb_h2_stream *s, uint32_t error_code)
{
    struct slb_call_attempt *a = attempt_of_up(s);
    struct slb_call *call = a->call;

    if (a->counted) {
        slb_backend_call_ended(a->be);
        a->counted = 0;
    }
    attempt_count_end(a, a == call->cur && call->upstream_status >= 0 && error_code == NGHTTP2_NO_ERROR
                             ? call->upstream_status
                             : slb_grpc_status_from_h2(error_code));
    if (error_code != NGHTTP2_REFUSED_STREAM)
        attempt_report(a, call->state == SLB_CALL_FINISHING && a == call->cur &&
                              !slb_outlier_status_failed(call->upstream_status));
    if (call->state == SLB_CALL_SENT && a->state == SLB_ATTEMPT_SENT && error_code == NGHTTP2_REFUSED_STREAM &&
        call->req.retain && call->attempts < SLB_MAX_ATTEMPTS) {
        /* The backend did not process it (GOAWAY or refused): replay on a fresh stream. */
        slb_debug("backend %s refused stream %d: replaying", a->be->name, s->sid);
        attempt_release(a, 0);
        call_reset_attempt(call, a);
        call_queue(call, a);
        return;
    }
    if (up_attempt_ended(call, a, slb_grpc_status_from_h2(error_code)))
        return;
    if (a != call->cur) { /* an attempt the call no longer wants */
        attempt_stop(a, 0);
        return;
    }
    if (call->state != SLB_CALL_FINISHING) {
        char msg[160];
        snprintf(msg, sizeof(msg), "sidelb: backend %s reset the stream (HTTP/2 error %u)", a->be ? a->be->name : "?",
                 error_code);
        call_fail(call, slb_grpc_status_from_h2(error_code), msg);
    } else if (!call->req_end && call->rst_after_response == 0) {
        call->rst_after_response = error_code + 1;
    }
    call_discard_request(call);
    if (call->resp.unsent == 0)
        attempt_release(a, 0); /* else when the app has taken the rest */
}

static void up_on_lost(struct slb_h2_stream *s, int err)
{
    struct slb_call_attempt *a = attempt_of_up(s);
    struct slb_call *call = a->call;

    attempt_count_end(a, call->state == SLB_CALL_FINISHING && a == call->cur && call->upstream_status >= 0
                             ? call->upstream_status
                             : SLB_GRPC_UNAVAILABLE);
    if (call->state != SLB_CALL_FINISHING || a != call->cur) {
        char msg[160];
        attempt_report(a, 0);
        if (up_attempt_ended(call, a, SLB_GRPC_UNAVAILABLE))
            return;
        if (a != call->cur) {
            attempt_stop(a, 0);
            return;
        }
        snprintf(msg, sizeof(msg), "sidelb: connection to backend %s lost (%s)", a->be ? a->be->name : "?",
                 slb_strerror(err));
        call_fail(call, SLB_GRPC_UNAVAILABLE, msg);
    }
    call_discard_request(call);
    attempt_unbind(a);
}

const struct slb_upstream_handler slb_call_upstream_handler = {
    .on_ready = up_on_ready,
    .on_unavailable = up_on_unavailable,
    .on_header = up_on_header,
    .on_headers_done = up_on_headers_done,
    .on_data = up_on_data,
    .on_end = up_on_end,
    .on_close = up_on_close,
    .on_lost = up_on_lost,
};

/* ---- bodies both ways (slb_h2_stream_ops) ---- */

/* The request body, to the backend. An attempt at the queue's cursor reads
 * there; a hedge that started later replays the kept bytes until it catches up. */
static size_t up_peek(struct slb_h2_stream *s, const uint8_t **p, int *end)
{
    struct slb_call_attempt *a = attempt_of_up(s);
    struct slb_call *call = a->call;
    size_t n;

    if (a->req_pos != call->req_pos) {
        *end = 0;
        return slb_chunkq_peek_at(&call->req, a->req_pos, p);
    }
    n = slb_chunkq_peek(&call->req, p);
    *end = call->req_end && n == call->req.unsent;
    return n;
}

static void up_sent(struct slb_h2_stream *s, size_t n)
{
    struct slb_call_attempt *a = attempt_of_up(s);
    struct slb_call *call = a->call;

    if (a->req_pos != call->req_pos) {
        a->req_pos += n; /* kept bytes another attempt sent already */
        return;
    }
    a->req_pos += n;
    slb_chunkq_advance(&call->req, n);
    call->req_pos += n;
    if (call->req.retain && call->req.retained + call->req.unsent > call->ctx->budgets.call_retry_bytes)
        call_drop_replay(call, "it passed budgets.call_retry_bytes");
    call_account(call);
    /* new bytes, not a replay: reopen the app's stream window (unless its connection is over budget) */
    if (call->req_pos > call->req_consumed && !call_held_back(call)) {
        call->io->consume_stream(&call->down, (size_t)(call->req_pos - call->req_consumed));
        call->req_consumed = call->req_pos;
    }
}

static size_t up_take_unconsumed(struct slb_h2_stream *s)
{
    struct slb_call_attempt *a = attempt_of_up(s);
    struct slb_call *call = a->call;
    size_t n;

    if (a != call->cur)
        return 0; /* its bytes were given back as they came */
    n = (size_t)(call->resp_received - call->resp_consumed);
    call->resp_consumed = call->resp_received;
    return n;
}

/* The response body, to the app. */
static size_t down_peek(struct slb_h2_stream *s, const uint8_t **p, int *end)
{
    struct slb_call *call = call_of_down(s);
    size_t n = slb_chunkq_peek(&call->resp, p);

    *end = call->state == SLB_CALL_FINISHING && n == call->resp.unsent;
    return n;
}

static void down_sent(struct slb_h2_stream *s, size_t n)
{
    struct slb_call *call = call_of_down(s);

    slb_chunkq_advance(&call->resp, n);
    if (call->cur->up.conn != NULL && !call_held_back(call)) { /* else when the app's connection falls below its
                                                                  budget */
        call->io->consume_stream(&call->cur->up, n);
        call->resp_consumed += n;
    }
    call_account(call);
    if (call->cur->up.conn != NULL) {
        if (!call->cur->up.open && call->resp.unsent == 0)
            attempt_release(call->cur, 0); /* the backend's stream is done and drained */
    }
}

static size_t down_trailers(struct slb_h2_stream *s, nghttp2_nv *nv, char *scratch, size_t scratch_len)
{
    struct slb_call *call = call_of_down(s);

    if (call->synth_status >= 0) {
        struct slb_grpc_status_text *t = (struct slb_grpc_status_text *)scratch;
        if (scratch_len < sizeof(*t))
            return 0;
        return slb_grpc_status_fields(nv, t, call->synth_status, call->synth_msg);
    }
    /* valid until the trailers are freed with the call, after nghttp2 copied them */
    return slb_hdrs_to_nv(&call->trailers, nv);
}

static size_t down_take_unconsumed(struct slb_h2_stream *s)
{
    struct slb_call *call = call_of_down(s);
    size_t n = (size_t)(call->req_received - call->req_consumed);

    call->req_consumed = call->req_received;
    return n;
}

static const struct slb_h2_stream_ops up_stream_ops = {
    .peek = up_peek,
    .sent = up_sent,
    .trailers = NULL, /* gRPC requests have none */
    .take_unconsumed = up_take_unconsumed,
};

static const struct slb_h2_stream_ops down_stream_ops = {
    .peek = down_peek,
    .sent = down_sent,
    .trailers = down_trailers,
    .take_unconsumed = down_take_unconsumed,
};

/* ---- the real transports ---- */

const struct slb_call_transport slb_call_h2_transport = {
    .respond = slb_downstream_respond,
    .reset = slb_downstream_reset,
    .resume = slb_h2_stream_resume,
    .consume_connection = slb_h2_stream_consume_connection,
    .consume_stream = slb_h2_stream_consume_stream,
    .consume_downstream = slb_downstream_consume,
    .pool = slb_upstream_pool_get,
    .in_backoff = slb_upstream_pool_in_backoff,
    .queue = slb_upstream_pool_queue,
    .unqueue = slb_upstream_pool_unqueue,
    .request = slb_upstream_request,
    .release = slb_upstream_release,
    .backend_name = slb_upstream_backend_name,
};
