/*
 * Upstream connections to one backend: a pool of nghttp2 client sessions
 * (h2c prior knowledge, or h2 over TLS when the cluster has "tls": the
 * transport's TLS filter sits under the session), connected lazily and reused across calls. Another
 * connection opens when every open one is at its stream limit (the
 * backend's SETTINGS_MAX_CONCURRENT_STREAMS or our cap); requests wait in
 * the pool's queue while a connection comes up. A GOAWAY from the backend
 * drains that connection: it takes no new streams, and streams it refused
 * are reported closed with REFUSED_STREAM so their user may replay them.
 *
 * The queue is bounded (max_pending_per_backend: past it slb_upstream_pool_queue
 * refuses); how long a request waits in it is its user's business (the
 * call's timer, queue_timeout_ms). A connection whose backend allows 0
 * concurrent streams can carry nothing: on the first SETTINGS it is a
 * connect failure (backoff, waiters go elsewhere), later it is drained.
 *
 * Recycling: a connection is drained and replaced (a new one opens for new
 * calls; it closes when its last stream ends) before its stream ids run out
 * (2^29), and optionally after max_requests_per_connection calls or
 * max_connection_age_ms (+-10 % jitter). Draining connections do not count
 * against max_connections_per_backend, up to twice that many in all.
 *
 * The pool also runs the backend's connectivity state (IDLE, CONNECTING,
 * READY, TRANSIENT_FAILURE) with gRPC's connection backoff: while a backend
 * is in backoff no connection is attempted, whoever picks it. The one
 * exception is a probe (slb_upstream_pool_probe): while calls wait on the
 * cluster for a usable backend, the cluster asks for an early attempt, at
 * most one per backoff.probe_interval_ms; it fails without touching the
 * backoff, or connects and ends it.
 *
 * This layer never sees the call: it reports upward through the loop
 * context's slb_upstream_handler, handing back the slb_pool_waiter and
 * slb_h2_stream its user embedded.
 *
 * Ownership: the pool belongs to its backend (be->pool) and is freed when
 * the backend is; it is also listed in its loop context, which closes its
 * connections on stop wherever the backend went. Each connection holds a
 * backend reference, so a draining backend lives until its last connection
 * closes.
 */
#ifndef SLB_H2_UPSTREAM_H
#define SLB_H2_UPSTREAM_H

#include <stdint.h>

#include "h2_conn.h"
#include "h2_mem.h"
#include "list.h"

struct slb_loop_ctx;
struct slb_backend;
struct slb_config_cluster;
struct slb_upstream_pool;
struct slb_upstream;

/* A request waiting in a pool for a stream slot. Owner: embedded in its user; linked by the pool. */
struct slb_pool_waiter {
    struct slb_list link;
    struct slb_upstream_pool *pool; /* NULL when not queued */
};

/* How upstream connections report upward (the call module; fakes in tests). Owner: a static table. */
struct slb_upstream_handler {
    /* A connection has room for the dequeued waiter: send it with slb_upstream_request(). */
    void (*on_ready)(struct slb_pool_waiter *w, struct slb_upstream *uc);
    /* The dequeued waiter cannot be served by this backend (connect failed or timed out, draining). */
    void (*on_unavailable)(struct slb_pool_waiter *w, int err);
    /* Response header fields, the end of a header block, data, END_STREAM. */
    int (*on_header)(struct slb_h2_stream *s, nghttp2_rcbuf *name, nghttp2_rcbuf *value);
    void (*on_headers_done)(struct slb_h2_stream *s, int trailer, int end_stream);
    int (*on_data)(struct slb_h2_stream *s, const uint8_t *p, size_t n);
    void (*on_end)(struct slb_h2_stream *s);
    /* The stream closed (s is unbound already); error_code is HTTP/2's. */
    void (*on_close)(struct slb_h2_stream *s, uint32_t error_code);
    /* The connection went away under the stream (s is unbound already). */
    void (*on_lost)(struct slb_h2_stream *s, int err);
};

/* One connection. Owner: its pool (freed after its TCP handle closed). */
struct slb_upstream {
    struct slb_conn conn;
    struct slb_upstream_pool *pool;
    uv_connect_t creq;
    uint64_t connect_deadline_ms; /* the attempt fails then: max(min_connect_timeout, backoff) (gRPC) */
    uint64_t patience_ms;         /* requests waiting for it go elsewhere then (connect_timeout_ms) */
    struct slb_list streams;      /* bound slb_h2_stream */
    uint32_t active;              /* open streams */
    uint8_t connected;            /* TCP up and the backend's first SETTINGS received: it takes streams */
    uint8_t goaway;               /* draining (backend GOAWAY, recycled): no new streams; closes when idle */
    uint8_t listed;
    uint8_t probe;            /* an early attempt during backoff (slb_upstream_pool_probe) */
    uint32_t n_requests;      /* streams opened on it (max_requests_per_connection) */
    uint64_t retire_at_ms;    /* drained and replaced then (max_connection_age_ms); 0 = never */
    uint8_t ping_outstanding; /* keepalive PING sent, no answer yet */
    uint64_t last_recv_ms;    /* a frame arrived (keepalive) */
    uint64_t ping_sent_ms;
    struct slb_list link; /* in pool->conns */
};

/* Owner: its backend (be->pool); listed in ctx->pools. */
struct slb_upstream_pool {
    struct slb_loop_ctx *ctx;
    struct slb_backend *be; /* not referenced: the backend owns the pool */
    const struct slb_config_cluster *cfg;
    struct slb_list conns;
    uint32_t n_conns, n_connecting;
    uint32_t n_draining;     /* connections with goaway set (counted in n_conns) */
    struct slb_list waiters; /* struct slb_pool_waiter, oldest first */
    uint32_t n_waiting;
    uint32_t backoff_ms;       /* next backoff (gRPC connection backoff) */
    uint32_t failures;         /* consecutive connect failures (logged loudly once) */
    uint64_t backoff_until_ms; /* TRANSIENT_FAILURE until then: no connection attempt before */
    uint64_t probe_at_ms;      /* no probe before then: [1, 1.5] x probe_interval_ms after the last attempt began */
    uv_timer_t timer;          /* connect timeouts and backoff end */
    struct slb_list ctx_link;  /* in ctx->pools */

    struct ssl_session_st *tls_session; /* TLS: the backend's newest session, offered by the next connection */
};

struct slb_upstream_pool *slb_upstream_pool_get(struct slb_loop_ctx *ctx, struct slb_backend *be,
                                                const struct slb_config_cluster *cfg);
/* Whether the backend is in connection backoff (a new request would only wait). */
int slb_upstream_pool_in_backoff(const struct slb_upstream_pool *pool);
/*
 * A probe: an early connect attempt on a backend in TRANSIENT_FAILURE whose
 * backoff has not ended, for calls that wait on its cluster with no usable
 * backend (the cluster's probe timer calls it). At most one attempt per
 * backend per backoff.probe_interval_ms (each spacing drawn from [1, 1.5] x
 * it, so many sidelbs do not probe a backend in step), never two at once.
 * The backend stays TRANSIENT_FAILURE while the probe connects; one that
 * fails leaves the backoff as it was (it neither grows nor restarts), unless
 * the backoff ended meanwhile (then it was the regular attempt); one that
 * connects ends the backoff: READY, and the cluster wakes its waiters.
 * Returns when to ask again (UINT64_MAX: not in backoff, or probes are off).
 */
uint64_t slb_upstream_pool_probe(struct slb_upstream_pool *pool);
/* Queues w; on_ready / on_unavailable follow (possibly before this returns).
 * SLB_ELIMIT: no stream slot is free and max_pending_per_backend requests
 * wait already; w is not queued and no callback follows. */
int slb_upstream_pool_queue(struct slb_upstream_pool *pool, struct slb_pool_waiter *w);
/* Takes w out of its pool's queue (no callback follows). Harmless if not queued. */
void slb_upstream_pool_unqueue(struct slb_pool_waiter *w);
/* The backend left discovery: waiters go elsewhere, idle connections close, busy ones when done. */
void slb_upstream_pool_drain(struct slb_upstream_pool *pool);
/* Stop: closes every connection now (their streams are reported lost). */
void slb_upstream_pool_close(struct slb_upstream_pool *pool);

/* Opens a stream for s on uc (from on_ready). has_body: s->body provides the request body. 0 or < 0. */
int slb_upstream_request(struct slb_upstream *uc, struct slb_h2_stream *s, const nghttp2_nv *nv, size_t n,
                         int has_body);
/* Lets go of s (resets it first when rst_code != 0 and it is open); the slot may feed a waiter. */
void slb_upstream_release(struct slb_h2_stream *s, uint32_t rst_code);
/* The backend's name for messages ("?" when unknown). */
const char *slb_upstream_backend_name(const struct slb_upstream *uc);

nghttp2_session_callbacks *slb_upstream_callbacks_new(void);

#endif
