/*
 * The per-loop context: everything the forwarding core of one event loop
 * shares — the loop, the connection context (write coalescing, handle
 * count), the RNG, the timer heap of calls, the call free list, stats, the
 * nghttp2 callback tables, and a registry of every app connection and
 * upstream pool created on this loop.
 *
 * Stop and reload close what the registry holds, wherever a backend went
 * (a backend removed from discovery keeps its pool here until its last
 * connection closes), and the memory is freed only after the last counted
 * handle closed (slb_conn_ctx.on_all_closed), never on a timer.
 *
 * Nothing here is global, so N contexts can later run on N threads, one
 * loop each.
 *
 * Ownership: embedded in the server; created by slb_loop_ctx_init, closed
 * by slb_loop_ctx_close (async), freed by slb_loop_ctx_dispose.
 */
#ifndef SLB_LOOP_CTX_H
#define SLB_LOOP_CTX_H

#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "deadline.h"
#include "h2_conn.h"
#include "list.h"
#include "log.h"
#include "rng.h"

struct slb_downstream_handler;
struct slb_upstream_handler;
struct slb_call_transport;
struct slb_call;
struct slb_access_log;

struct slb_loop_stats {
    uint64_t calls_total, calls_failed_local, downstream_conns_total, upstream_conns_total;
    uint64_t rapid_reset_closes;         /* app connections closed for resetting too many streams */
    uint64_t refused_streams;            /* app streams refused past max_concurrent_streams */
    uint64_t header_lists_too_large;     /* app header blocks past max_header_list_size */
    uint64_t conns_evicted;              /* idle app connections closed at a cap to admit a new one */
    uint64_t conns_refused;              /* app connections refused at a cap (none idle) */
    uint64_t handshake_timeouts;         /* app connections closed without preface + SETTINGS in time */
    uint64_t idle_timeouts;              /* app connections closed after idle_timeout_ms without streams */
    uint64_t stream_idle_timeouts;       /* app streams ended after stream_idle_timeout_ms without frames */
    uint64_t pool_queue_overflows;       /* calls a backend's pool turned away at max_pending_per_backend */
    uint64_t pool_queue_timeouts;        /* calls that waited queue_timeout_ms in a pool for a stream */
    uint64_t upstream_conns_recycled;    /* replaced: max_requests_per_connection, max age, stream ids */
    uint64_t upstream_no_streams;        /* connections closed: the backend allows 0 concurrent streams */
    uint64_t health_check_unimplemented; /* backends found without grpc.health.v1 (checking off, gRFC A17) */
    uint64_t upstream_probes; /* early connect attempts in backoff while calls waited (backoff.probe_interval_ms) */
    uint64_t upstream_probe_recoveries; /* ... that connected: the backend was back before its backoff ended */
    /* buffer budgets (lib/call.c) */
    uint64_t budget_conn_backpressure; /* times an app connection went over its share and was held back */
    uint64_t budget_total_exceeded;    /* times the calls of the loop together went over budgets.total_bytes */
    uint64_t retry_buffer_dropped;     /* calls that lost their replay copy (call_retry_bytes or the total budget) */
    /* connection closes per side (opens: downstream_conns_total, upstream_conns_total) */
    uint64_t downstream_conns_closed, upstream_conns_closed;
    /* calls that ended, [listener][cluster, or n_clusters for calls without one][grpc code] (lib/stats.h);
     * the server allocates it (NULL: not counted, as in unit tests) */
    uint64_t *calls_by_code;
    uint32_t calls_n_listeners, calls_n_clusters;
    uint64_t hedged_attempts;  /* attempts after a call's first under a hedgingPolicy (gRFC A6) */
    uint64_t hedges_cancelled; /* attempts cancelled because another attempt of the call committed */
};

/* Rate-limited log lines, one per kind of event (SLB_LOG_LIMIT_MS apart). */
#define SLB_LOG_LIMIT_MS 10000
struct slb_loop_log_limits {
    struct slb_log_limit queue_full, queue_timeout, recycle;        /* backend pools */
    struct slb_log_limit conn_evicted, conn_refused, conn_timeouts; /* app connections */
    struct slb_log_limit budget_total, replay_dropped;              /* buffer budgets (calls) */
};

/*
 * Bytes the calls of this loop hold, against the budgets (lib/call.c keeps
 * them; docs/architecture.md, "Buffer budgets"). Owner: the loop context.
 */
struct slb_budget_state {
    uint64_t buffered;    /* request bytes not yet sent, replay copies, response bytes the apps have not taken */
    uint32_t n_buffering; /* app connections holding any */
    uint32_t n_held_back; /* app connections whose windows are held back now */
    uint8_t total_over;   /* over budgets.total_bytes (until it falls to 7/8 of it) */
};

struct slb_loop_ctx {
    uv_loop_t *loop;
    struct slb_conn_ctx io;
    struct slb_rng rng;
    struct slb_deadline_heap timers; /* calls' deadlines, wait limits and retry backoffs */
    struct slb_loop_stats stats;
    struct slb_loop_log_limits log_limits;
    struct slb_config_budgets budgets; /* the server's config (defaults until it sets them) */
    struct slb_budget_state buffers;
    struct slb_list downstreams; /* every app connection (struct slb_downstream.ctx_link) */
    /* app connection caps and timeouts (h2_downstream) */
    struct slb_list downstream_sets; /* one per listener (struct slb_downstream_set.ctx_link) */
    uint32_t n_app_conns;            /* open app connections, all listeners */
    uint32_t max_app_conns;          /* cap on n_app_conns; 0 = none (the server sets it) */
    uv_timer_t sweep;                /* 1 s: slb_downstream_sweep */
    struct slb_list pools;           /* every upstream pool (struct slb_upstream_pool.ctx_link) */
    /* calls: in flight, and freed ones kept for reuse (owned by the call module) */
    uint32_t n_calls, n_free_calls;
    struct slb_call *free_calls;
    nghttp2_session_callbacks *down_cbs, *up_cbs;
    nghttp2_option *down_opt, *up_opt;
    /* who hears the transports' events (the call module; fakes in tests) */
    const struct slb_downstream_handler *down_handler;
    const struct slb_upstream_handler *up_handler;
    const struct slb_call_transport *call_io; /* what calls use to reach the transports */
    struct slb_access_log *access_log;        /* NULL: off (the server's) */
    uint8_t stopping;                         /* no new upstream connections */
    void (*on_closed)(struct slb_loop_ctx *ctx);
};

/* 0 or SLB_ENOMEM. on_timer: a call's timer (slb_deadline) expired. */
int slb_loop_ctx_init(struct slb_loop_ctx *ctx, uv_loop_t *loop, void (*on_timer)(struct slb_deadline *d));
/* The buffer budgets and per-turn read limit (NULL: the defaults; init sets those). */
void slb_loop_ctx_set_budgets(struct slb_loop_ctx *ctx, const struct slb_config_budgets *b);
/* Closes every app connection and upstream connection this context owns. */
void slb_loop_ctx_close_connections(struct slb_loop_ctx *ctx);
/* Closes the context's handles; on_closed runs once every counted handle closed. */
void slb_loop_ctx_close(struct slb_loop_ctx *ctx, void (*on_closed)(struct slb_loop_ctx *ctx));
/* Frees what init allocated (after on_closed). */
void slb_loop_ctx_dispose(struct slb_loop_ctx *ctx);
/* 1 when a flood-prone event may be logged now (then *suppressed says how many were not); at most one
 * line per interval_ms. */

static inline uint64_t slb_loop_random(struct slb_loop_ctx *ctx)
{
    return slb_rng_next(&ctx->rng);
}

#endif
