/*
 * Upstream connections to one backend: a pool of nghttp2 client sessions
 * (h2c prior knowledge), connected lazily and reused across calls. Another
 * connection opens when every open one is at its stream limit (the
 * backend's SETTINGS_MAX_CONCURRENT_STREAMS or our cap); calls wait in the
 * pool's queue while a connection comes up. A GOAWAY from the backend drains
 * that connection: it takes no new streams, and streams it refused are
 * replayed elsewhere.
 *
 * The pool also runs the backend's connectivity state (IDLE, CONNECTING,
 * READY, TRANSIENT_FAILURE) with gRPC's connection backoff.
 *
 * Ownership: the pool belongs to its backend (be->pool) and is freed when
 * the backend is. Each connection holds a backend reference, so a draining
 * backend lives until its last connection closes.
 */
#ifndef SLB_H2_UPSTREAM_H
#define SLB_H2_UPSTREAM_H

#include <stdint.h>

#include "h2_conn.h"
#include "h2_mem.h"

struct slb_server;
struct slb_backend;
struct slb_call;
struct slb_config_cluster;

struct slb_upstream {
    struct slb_conn conn;
    struct slb_upstream_pool *pool;
    uv_connect_t creq;
    uint64_t connect_deadline_ms; /* the attempt fails then: max(min_connect_timeout, backoff) (gRPC) */
    uint64_t patience_ms;         /* calls waiting for it go elsewhere then (connect_timeout_ms) */
    struct slb_call *calls;       /* calls linked to this connection */
    uint32_t active;              /* open streams */
    uint8_t connected, goaway;
    struct slb_upstream *next, *prev;
};

struct slb_upstream_pool {
    struct slb_server *srv;
    struct slb_backend *be; /* not referenced: the backend owns the pool */
    const struct slb_config_cluster *cfg;
    struct slb_upstream *conns;
    uint32_t n_conns, n_connecting;
    struct slb_call *wait_head, *wait_tail; /* calls waiting for a stream slot */
    uint32_t n_waiting;
    uint32_t backoff_ms;       /* next backoff (gRPC connection backoff) */
    uint32_t failures;         /* consecutive connect failures (logged loudly once) */
    uint64_t backoff_until_ms; /* TRANSIENT_FAILURE until then */
    uv_timer_t timer;          /* connect timeouts and backoff end */
    uint8_t closing;
};

struct slb_upstream_pool *slb_upstream_pool_get(struct slb_server *srv, struct slb_backend *be,
                                                const struct slb_config_cluster *cfg);
/* Sends the call on a connection with room, or queues it and connects. */
void slb_upstream_pool_submit(struct slb_upstream_pool *pool, struct slb_call *call);
/* Removes a queued call from the wait queue. */
void slb_upstream_pool_unqueue(struct slb_upstream_pool *pool, struct slb_call *call);
/* The backend left discovery: close idle connections, others when done. */
void slb_upstream_pool_drain(struct slb_upstream_pool *pool);

/* Unlinks a call from its connection (resets the stream if still open). */
void slb_upstream_detach(struct slb_upstream *uc, struct slb_call *call, uint32_t rst_code);
/* A stream slot may have freed: feed waiting calls; close if draining and idle. */
void slb_upstream_stream_done(struct slb_upstream *uc);

nghttp2_session_callbacks *slb_upstream_callbacks_new(void);

#endif
