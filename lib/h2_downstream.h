/*
 * A downstream connection: an app's h2c connection to a sidelb listener,
 * served by an nghttp2 server session. Anything but the HTTP/2 connection
 * preface (e.g. an HTTP/1.1 request) gets a clear refusal and a close.
 *
 * This layer never sees the call: it reports each request stream upward
 * through the loop context's slb_downstream_handler, handing back the
 * slb_h2_stream its user embedded.
 *
 * Limits it enforces itself, per connection (docs/architecture.md, "App
 * connection limits"): streams past max_concurrent_streams are refused one by
 * one with RST_STREAM(REFUSED_STREAM) before any call exists (libnghttp2 is
 * given a higher internal limit, the wire carries the configured one); header
 * blocks past max_header_list_size are reported to the stream's user; HEADERS
 * on a stream id the app skipped earlier is a connection error.
 *
 * Limits (docs/architecture.md, "App connections: caps and timeouts"): each
 * listener's connections form a struct slb_downstream_set, which keeps them
 * in three lists ordered by time: handshaking (oldest accept first), idle
 * (longest idle first) and busy. At a connection cap the oldest idle
 * connection is evicted in O(1) (GOAWAY(NO_ERROR), then closed) to admit
 * the new one; with none idle the new one is refused (accepted and closed).
 * Timeouts need no timer per connection or stream: frames only store a
 * timestamp, and the loop context's 1 s sweep (slb_downstream_sweep) looks
 * at the heads of the ordered lists and at the streams of busy connections.
 *
 * Ownership: the loop context lists every downstream connection
 * (ctx->downstreams); each is freed after its TCP handle closed.
 */
#ifndef SLB_H2_DOWNSTREAM_H
#define SLB_H2_DOWNSTREAM_H

#include <stdint.h>

#include "h2_conn.h"
#include "h2_mem.h"
#include "lb.h"
#include "list.h"
#include "log.h"
#include "tls.h"

struct slb_routes;
struct slb_loop_ctx;
struct slb_downstream;

/* How app connections report upward (the call module; fakes in tests). Owner: a static table. */
struct slb_downstream_handler {
    /* A request stream begins: the user's stream object to bind, or NULL to refuse it (REFUSED_STREAM). */
    struct slb_h2_stream *(*open)(struct slb_downstream *dc);
    int (*on_header)(struct slb_h2_stream *s, nghttp2_rcbuf *name, nghttp2_rcbuf *value, int trailer);
    /* The header block (trailer: the trailers) passed max_header_list_size (limit, in HTTP/2's
     * name + value + 32 per field): its other fields are not reported; on_headers_done follows. */
    void (*on_header_list_too_large)(struct slb_h2_stream *s, int trailer, uint32_t limit);
    void (*on_headers_done)(struct slb_h2_stream *s, int trailer, int end_stream);
    int (*on_data)(struct slb_h2_stream *s, const uint8_t *p, size_t n);
    void (*on_end)(struct slb_h2_stream *s);
    /* The frame ending the response (END_STREAM) was sent. */
    void (*on_response_sent)(struct slb_h2_stream *s);
    /* The stream closed (s is unbound already); error_code is HTTP/2's. */
    void (*on_close)(struct slb_h2_stream *s, uint32_t error_code);
    /* No frame either way on the stream for idle_ms (stream_idle_timeout_ms): end the call with a
     * gRPC status. A stream still open a second later is reset (CANCEL). */
    void (*on_idle)(struct slb_h2_stream *s, uint32_t idle_ms);
};

/* Stream ids an app skipped (never opened), remembered so that HEADERS on one later is a
 * connection error (RFC 9113 5.1.1). The most recent few gaps only: an older one is forgotten
 * and HEADERS on it ignored, as libnghttp2 does for any lower id. */
#define SLB_DOWNSTREAM_SID_GAPS 4

/*
 * The app connections of one listener: its limits, its count, and its
 * connections ordered by time in one of three lists (each connection is in
 * exactly one, through set_link). Owner: the listener (embedded); listed in
 * ctx->downstream_sets; lives as long as the server, so past its last
 * connection.
 */
struct slb_downstream_set {
    struct slb_loop_ctx *ctx;
    const char *name; /* the listener's (logs) */
    const struct slb_routes *routes;
    uint32_t max_concurrent_streams, max_premature_resets, max_header_list_size;
    uint32_t max_connections;                                               /* 0 = none */
    uint32_t handshake_timeout_ms, idle_timeout_ms, stream_idle_timeout_ms; /* 0 = off */
    uint32_t n_conns;                                                       /* open connections */
    uint32_t index;              /* the listener's position in the server (the loop's stats arrays) */
    struct slb_list handshaking; /* preface + SETTINGS not in yet; oldest accept first */
    struct slb_list idle;        /* no streams; longest idle first (eviction, idle timeout) */
    struct slb_list busy;        /* with streams (stream idle timeout) */
    struct slb_list ctx_link;    /* in ctx->downstream_sets */

    struct slb_tls_ctx *tls;        /* apps connect with TLS (the listener's config owns it); NULL: h2c */
    struct slb_tls_stats tls_stats; /* their handshakes */
    struct slb_log_limit tls_log;   /* failed handshakes, logged once per SLB_LOG_LIMIT_MS */
};

enum slb_downstream_where { SLB_DS_HANDSHAKING, SLB_DS_IDLE, SLB_DS_BUSY };

/* Owner: the loop context (ctx->downstreams). */
struct slb_downstream {
    struct slb_conn conn;
    struct slb_loop_ctx *ctx;
    struct slb_downstream_set *set;  /* its listener's */
    struct slb_list set_link;        /* in set->handshaking, idle or busy (where) */
    uint64_t since_ms;               /* accepted (handshaking), idle since (idle) */
    uint8_t where;                   /* enum slb_downstream_where */
    uint8_t released;                /* idle, and its memory given back (release_idle) */
    struct slb_h2_mem_capture mem;   /* the session's page blocks (frame buffer, stream map) */
    const struct slb_routes *routes; /* the listener's, for its requests */
    struct slb_list streams;         /* bound slb_h2_stream (requests in progress) */
    uint32_t n_streams;
    /* the hash policies' per-connection keys (hash_on), set at accept */
    struct slb_lb_peer_keys peer_keys;
    uint32_t max_premature_resets;   /* the listener's budget (0 = none) */
    uint32_t streams_opened;         /* request streams the app opened */
    uint32_t premature_resets;       /* ... and reset before their response ended */
    uint32_t max_concurrent_streams; /* the listener's, advertised; streams past it are refused */
    uint32_t max_header_list_size;   /* the listener's, advertised and enforced per header block */
    uint32_t hdr_bytes;              /* the header block being received, as HTTP/2 counts it */
    int32_t max_sid;                 /* highest stream id the app sent HEADERS on */
    int32_t gap_lo[SLB_DOWNSTREAM_SID_GAPS], gap_hi[SLB_DOWNSTREAM_SID_GAPS]; /* skipped ids (ring) */
    uint8_t n_gaps;
    uint8_t hdr_over;        /* that block passed max_header_list_size */
    uint8_t settings_sent;   /* our SETTINGS (the server preface) went to the output */
    uint8_t refused_logged;  /* a stream was refused (logged once per connection) */
    uint8_t hdr_over_logged; /* a header block was too large (logged once per connection) */
    uint8_t preface_checked;
    uint8_t goaway_sent;   /* the final GOAWAY of a graceful stop */
    uint8_t shutting_down; /* close once the last stream is done */
    /* buffer budget: kept by the call module (lib/call.c), which holds back the windows */
    uint8_t held_back;                          /* over its budget: no window of this connection reopens */
    uint8_t budget_logged;                      /* the budget bit once (logged once per connection) */
    uint64_t buffered;                          /* bytes its calls hold (request, replay copies, response) */
    uint64_t window_withheld;                   /* request bytes received whose connection window is held back */
    struct slb_list ctx_link;                   /* in ctx->downstreams */
    void (*on_gone)(struct slb_downstream *dc); /* freed (graceful stop waits for the last one) */
};

/* Fills set (limits from the caller: set the fields after) and lists it in ctx->downstream_sets. */
void slb_downstream_set_init(struct slb_downstream_set *set, struct slb_loop_ctx *ctx, const char *name,
                             const struct slb_routes *routes);
/* Accepts a pending connection on the server handle. At a cap (the set's max_connections or
 * ctx->max_app_conns) the oldest idle connection is evicted first; with none idle the new one
 * is accepted and closed at once (refused: 0 is returned, the backlog does not fill).
 * 0, SLB_ENOMEM or a UV_E* code. */
int slb_downstream_accept(struct slb_downstream_set *set, uv_stream_t *server,
                          void (*on_gone)(struct slb_downstream *dc));
/* The same for a socket accepted elsewhere (a worker loop, lib/worker.h): the connection owns fd, or it is closed. */
int slb_downstream_adopt(struct slb_downstream_set *set, int fd, int is_unix,
                         void (*on_gone)(struct slb_downstream *dc));
/* The timeouts of every set in ctx (handshake, idle connection, idle stream); the loop
 * context calls it once a second. */
void slb_downstream_sweep(struct slb_loop_ctx *ctx);
/* Graceful stop, first step: a shutdown notice (apps stop opening streams). */
void slb_downstream_notice(struct slb_downstream *dc);
/* Graceful stop: GOAWAY, finish in-flight streams, then close. */
void slb_downstream_shutdown(struct slb_downstream *dc);
/* The same for every app connection of a loop (a graceful stop's two steps: the server's and a worker's). */
void slb_downstream_notice_all(struct slb_loop_ctx *ctx);
void slb_downstream_shutdown_all(struct slb_loop_ctx *ctx);

/* Sends the response header block (has_body: s->body provides body and trailers). 0 or < 0. */
int slb_downstream_respond(struct slb_h2_stream *s, const nghttp2_nv *nv, size_t n, int has_body);
/* Reopens n bytes of the connection's receive window (bytes the budget held back). */
void slb_downstream_consume(struct slb_downstream *dc, size_t n);
/* Resets the stream (the response is over but the app is still sending). */
void slb_downstream_reset(struct slb_h2_stream *s, uint32_t code);

nghttp2_session_callbacks *slb_downstream_callbacks_new(void);

/* The limit libnghttp2 itself enforces for max_concurrent_streams advertised (see the .c). */
uint32_t slb__downstream_internal_stream_limit(uint32_t advertised);
/* Sets setting id to v in a serialized SETTINGS frame f of n bytes: 0, or -1 when f is not a
 * SETTINGS frame carrying that setting (then f is unchanged). */
int slb__settings_frame_set(uint8_t *f, size_t n, uint16_t id, uint32_t v);
/* 1 when p[0..n) starts with an HTTP/1.x request line ("METHOD SP target SP HTTP/1.x"). */
int slb__http1_request_line(const uint8_t *p, size_t n);

#endif
