/*
 * One call: an app's request stream bound to one upstream stream per
 * attempt. The call is the one module that sees both sides: the transports
 * (h2_downstream, h2_upstream) and the cluster report to it through their
 * handler tables and the link objects it embeds (slb_h2_stream,
 * slb_pool_waiter, slb_cluster_waiter, slb_deadline); it reaches them only
 * through struct slb_call_transport, so tests can drive it with fakes.
 *
 * It owns the bytes in flight both ways. Flow control is end to end per
 * stream: a stream window on one side reopens only when the other side has
 * taken the bytes, so a call never buffers more than one stream window per
 * direction; connection windows reopen as bytes land, so a stalled stream
 * never holds a connection other calls share.
 *
 * Its progress is one explicit state (enum slb_call_state), changed only by
 * call_set_state(), which logs each transition at debug level:
 *
 *   HEADERS --route--> QUEUED --stream--> SENT --response headers--> STREAMING
 *      |                 ^  |               |  \--retryable status--> BACKOFF --timer--> QUEUED
 *      |                 |  v               |   \--refused stream (GOAWAY)--> QUEUED (replay)
 *      +--no backend--> WAIT_BACKEND <--no backend--+
 *   QUEUED --pool queue full or queue_timeout_ms--> dispatch again (a backend not tried) or FINISHING
 *   SENT --perAttemptRecvTimeout--> BACKOFF (retry) or FINISHING
 * Hedging (gRFC A6 hedgingPolicy): while QUEUED or SENT, another attempt
 * starts every hedgingDelay on a backend no live attempt uses (QUEUED/SENT
 * then describe the most advanced attempt); the first response headers, or
 * a status that is not in nonFatalStatusCodes, commit the call to that
 * attempt and the others are reset (RST_STREAM CANCEL). A non-fatal status
 * lets the next hedge go at once; with nothing left in flight the call waits
 * in BACKOFF for a pushback's delay.
 *   STREAMING --backend ended--> FINISHING;  any state --sidelb ends it (deadline, error)--> FINISHING
 *   any state --the app's stream closed--> CLOSED (freed)
 *
 * Buffer budgets: what the calls of one app connection hold (request bytes
 * not yet sent, replay copies, response bytes the app has not taken) counts
 * against budgets.connection_bytes, and all connections' together against
 * budgets.total_bytes. Over budget, the call holds back the windows of that
 * connection's streams (both ways) and of the app's connection, never failing
 * a call for it; replay copies past budgets.call_retry_bytes, or while the
 * total is over, are dropped (gRFC A6: the call is committed).
 *
 * Ownership: calls are allocated by the loop context's free list; the app's
 * stream holds the call: it is freed when that stream closes, after letting
 * go of every upstream link.
 */
#ifndef SLB_CALL_H
#define SLB_CALL_H

#include <nghttp2/nghttp2.h>
#include <stdint.h>

#include "buf.h"
#include "cluster.h"
#include "deadline.h"
#include "grpc.h"
#include "h2_conn.h"
#include "h2_downstream.h"
#include "h2_headers.h"
#include "h2_upstream.h"
#include "lb.h"
#include "method_config.h"

struct slb_loop_ctx;

enum slb_call_state {
    SLB_CALL_HEADERS,      /* request headers arriving from the app */
    SLB_CALL_WAIT_BACKEND, /* no backend can take it now: on its cluster's waiter list until woken or timed out */
    SLB_CALL_BACKOFF,      /* a retry waits for its backoff, or a hedged call with nothing in flight for its
                              next hedge (the call's timer) */
    SLB_CALL_QUEUED,       /* a backend is picked: waiting in its pool for a stream */
    SLB_CALL_SENT,         /* the attempt's stream is open; nothing reached the app yet (retry, replay possible) */
    SLB_CALL_STREAMING,    /* the response headers reached the app: committed to this attempt */
    SLB_CALL_FINISHING,    /* the response is complete on sidelb's side; buffered bytes still go to the app */
    SLB_CALL_CLOSED,       /* the app's stream closed: freed */
};

const char *slb_call_state_name(int state);

/* Why a backend's pool turned a call away (call->queue_refused). */
enum { SLB_CALL_QUEUE_FULL = 1, SLB_CALL_QUEUE_TIMEOUT = 2 };

/* What the call asks of the layers below. slb_call_h2_transport is the real one. Owner: static tables. */
struct slb_call_transport {
    /* app side */
    int (*respond)(struct slb_h2_stream *s, const nghttp2_nv *nv, size_t n, int has_body);
    void (*reset)(struct slb_h2_stream *s, uint32_t code);
    /* either side */
    void (*resume)(struct slb_h2_stream *s);
    void (*consume_connection)(struct slb_h2_stream *s, size_t n);   /* bytes landed in the call's buffer */
    void (*consume_stream)(struct slb_h2_stream *s, size_t n);       /* the other side took them */
    void (*consume_downstream)(struct slb_downstream *dc, size_t n); /* the budget no longer holds them back */
    /* backend side */
    struct slb_upstream_pool *(*pool)(struct slb_loop_ctx *ctx, struct slb_backend *be,
                                      const struct slb_config_cluster *cfg);
    int (*in_backoff)(const struct slb_upstream_pool *pool);
    int (*queue)(struct slb_upstream_pool *pool, struct slb_pool_waiter *w); /* 0, or SLB_ELIMIT: not queued */
    void (*unqueue)(struct slb_pool_waiter *w);
    int (*request)(struct slb_upstream *uc, struct slb_h2_stream *s, const nghttp2_nv *nv, size_t n, int has_body);
    void (*release)(struct slb_h2_stream *s, uint32_t rst_code);
    const char *(*backend_name)(const struct slb_upstream *uc);
};

extern const struct slb_call_transport slb_call_h2_transport;
/* The handlers the transports and clusters report to (install in the loop context). */
extern const struct slb_downstream_handler slb_call_downstream_handler;
extern const struct slb_upstream_handler slb_call_upstream_handler;
void slb_call_wake(struct slb_cluster_waiter *w);
/* The loop context's timer heap calls this for a call's timer. */
void slb_call_on_timer(struct slb_deadline *d);
/* Frees the loop context's free list of calls. */
void slb_call_free_list_drain(struct slb_loop_ctx *ctx);

/*
 * One attempt of a call (gRFC A6): its backend, its place in a pool's queue
 * and its stream. Retries and transparent replays reuse the first slot;
 * hedging runs up to SLB_MAX_ATTEMPTS at once, each on its own backend, and
 * they share the call's one request buffer (each reads it at its own
 * position, req_pos). Owner: the call that embeds it.
 */
enum slb_attempt_state {
    SLB_ATTEMPT_IDLE,   /* free: no backend, no stream */
    SLB_ATTEMPT_QUEUED, /* a backend is picked: waiting in its pool for a stream */
    SLB_ATTEMPT_SENT,   /* its stream is open (or drains the committed response) */
};

struct slb_call_attempt {
    struct slb_call *call;
    struct slb_h2_stream up;          /* its stream to the backend (a link the transport owns) */
    struct slb_pool_waiter pool_wait; /* QUEUED */
    struct slb_backend *be;           /* referenced while the attempt is bound to it */
    struct slb_upstream_pool *pool;   /* be's pool (a replay stays there) */
    uint64_t req_pos;                 /* request bytes sent on this attempt's stream */
    uint64_t queue_until_ms;          /* QUEUED: the wait for a stream slot ends (queue_timeout_ms); 0 = none */
    uint64_t recv_until_ms;           /* perAttemptRecvTimeout: its response headers are due; 0 = none */
    uint8_t state;                    /* enum slb_attempt_state */
    uint8_t counted;                  /* be->outstanding counts it */
    uint8_t previous;                 /* grpc-previous-rpc-attempts it carries (0: not sent) */
    uint8_t lost_headers;             /* fields of its header block were dropped (another attempt's block came first) */
    uint8_t stats_open;               /* counted per backend when it ends (attempt_count_end) */
    uint64_t start_ns;                /* uv_hrtime() when it was handed to its backend's pool */
};

struct slb_call {
    struct slb_loop_ctx *ctx;
    const struct slb_call_transport *io;
    uint8_t state; /* enum slb_call_state; only call_set_state() writes it */

    /* links the layers below own (the call never edits them) */
    struct slb_h2_stream down;      /* the app's stream */
    struct slb_cluster_waiter wait; /* WAIT_BACKEND */
    struct slb_deadline timer;      /* earliest of deadline_ms, wait_until_ms, retry_at_ms, hedge_at_ms, and the
                                       attempts' queue_until_ms and recv_until_ms */
    struct slb_downstream *dc;      /* the app's connection (routes, peer hash); NULL once closed */
    struct slb_call *next_free;     /* in the loop context's free list */

    /* the attempts (att[], last in the struct): att[0] only, unless the call is hedged */
    struct slb_call_attempt *cur; /* the attempt the response comes from (the committed one once committed) */
    uint8_t n_att;                /* slots ever used (1 without hedging) */
    struct slb_cluster *cluster;
    struct slb_tried tried;
    uint8_t attempts;                    /* streams opened or queued (SLB_MAX_ATTEMPTS) */
    uint8_t retries;                     /* gRFC A6 retries made */
    uint8_t backoff_n;                   /* retries since the last pushback (A6: a pushback resets the backoff) */
    uint8_t hedges_sent;                 /* attempts started under the hedging policy (the first included) */
    uint8_t hedge_stop;                  /* a pushback said "don't retry": no more hedges */
    uint8_t queue_refused;               /* why the last pool turned the call away (SLB_CALL_QUEUE_*), 0 once queued */
    uint8_t queue_refusals;              /* pools that turned it away (each one a transparent retry, bounded) */
    struct slb_call_attempt *resp_owner; /* the attempt whose header block resp_hdrs is receiving */

    struct slb_hdrs req_hdrs;  /* kept until the response starts (replay) */
    struct slb_hdrs resp_hdrs; /* response header block being received */
    struct slb_hdrs trailers;  /* the backend's trailers, sent after the body */
    struct slb_chunkq req, resp;
    uint64_t req_received, req_consumed, req_pos; /* req_pos: the request queue's cursor (the leading attempt) */
    uint64_t resp_received, resp_consumed;
    size_t held; /* bytes of req and resp counted in the app connection's and the loop's budget */
    uint64_t hash;
    int16_t upstream_status;     /* grpc-status the backend sent, -1 until then */
    int16_t hedge_status;        /* the last non-fatal status a hedged attempt ended with */
    int16_t synth_status;        /* >= 0: sidelb ends the response with this grpc-status */
    char synth_msg[160];         /* its grpc-message (and, while queue_refused is set, why the pool turned it away) */
    uint32_t rst_after_response; /* +1: reset the app's stream with (code-1) after the response */
    uint64_t deadline_ms;        /* 0 = none (grpc-timeout, or a shorter methodConfig timeout) */
    uint64_t wait_until_ms;      /* how long it may wait for a usable backend (0 = not computed) */
    uint64_t retry_at_ms;        /* BACKOFF ends */
    uint64_t hedge_at_ms;        /* the next hedged attempt is due (0 = none scheduled) */
    const struct slb_method_config *mc;       /* from the cluster's service config, or NULL */
    const struct slb_retry_policy *retry;     /* mc's retry policy, or NULL */
    const struct slb_hedging_policy *hedging; /* mc's hedging policy, or NULL */
    struct slb_grpc_scan req_scan, resp_scan; /* message sizes (when mc limits them) */

    /* facts about the bytes, not the call's progress */
    uint8_t has_hash;
    uint8_t counted_in_cluster; /* cluster->n_calls counts it */
    uint8_t req_end;            /* the app sent END_STREAM */
    uint8_t resp_headers_sent;  /* a header block (or a trailers-only reply) went to the app */
    uint8_t upstream_done;      /* no backend will read more request bytes */
    uint8_t wait_health;        /* wait_until_ms is a wait for first health answers (gRFC A17), not wait-for-ready */

    /* stats (lib/stats.h) and the access log */
    uint16_t method_slot;          /* its method's counters in cluster->method_stats (1-based), 0 = none */
    int16_t local_status;          /* the grpc-status sidelb ended the call with itself (call_fail), -1 */
    uint64_t start_ns;             /* uv_hrtime() when the app's stream opened */
    uint64_t upstream_ns;          /* the attempts' durations, summed */
    struct slb_backend *logged_be; /* access log on: the final attempt's backend (referenced) */
    /* Last, so a new call zeroes only the first slot; the others are zeroed when first used. */
    struct slb_call_attempt att[SLB_MAX_ATTEMPTS];
};

#endif
