/*
 * One call: a downstream stream (an app's gRPC call) bound to an upstream
 * stream on a backend connection, per attempt. It owns the bytes in flight
 * both ways and keeps flow control end to end: a window on one side is
 * reopened (nghttp2_session_consume) only when the other side has taken the
 * bytes, so sidelb never buffers more than one stream window per direction.
 *
 * Ownership: the server allocates calls (free list). A call is linked to its
 * downstream connection (d_* fields) and, while an attempt exists, to an
 * upstream connection or its pool's wait queue (u_* fields). Each side
 * detaches itself when its stream closes (nghttpx StreamData); the call is
 * freed when neither side holds it.
 */
#ifndef SLB_PROXY_H
#define SLB_PROXY_H

#include <nghttp2/nghttp2.h>
#include <stdint.h>

#include "buf.h"
#include "h2_headers.h"
#include "lb.h"
#include "grpc.h"
#include "method_config.h"

struct slb_server;
struct slb_downstream;
struct slb_upstream;
struct slb_upstream_pool;
struct slb_cluster;

struct slb_call {
    struct slb_server *srv;

    /* downstream half */
    struct slb_downstream *dc; /* NULL once its stream closed */
    int32_t d_sid;
    struct slb_call *d_next, *d_prev;

    /* upstream half (current attempt) */
    struct slb_cluster *cluster;
    struct slb_backend *be;         /* referenced while an attempt is bound to it */
    struct slb_upstream_pool *pool; /* set while queued for a connection */
    struct slb_upstream *uc;        /* set while linked to an upstream connection */
    int32_t u_sid;
    struct slb_call *u_next, *u_prev; /* in uc->calls or pool's wait queue */
    struct slb_tried tried;
    uint8_t attempts;

    struct slb_hdrs req_hdrs;  /* kept until the response starts (replay) */
    struct slb_hdrs resp_hdrs; /* response header block being received */
    struct slb_hdrs trailers;  /* upstream trailers waiting for the body to drain */
    struct slb_chunkq req, resp;
    uint64_t req_received, req_consumed, req_pos;
    uint64_t resp_received, resp_consumed;
    uint64_t hash;
    uint8_t has_hash;
    int16_t upstream_status; /* grpc-status the backend sent, -1 until then */
    uint64_t deadline_ms;    /* 0 = none (grpc-timeout, or a shorter methodConfig timeout) */
    uint32_t deadline_idx;   /* slot in the server's deadline heap */

    int16_t synth_status;        /* >= 0: sidelb ends the response with this grpc-status */
    char synth_buf[160];         /* its grpc-message */
    uint32_t rst_after_response; /* +1: reset downstream with (code-1) after the response */

    uint8_t queued;                           /* in a pool's wait queue */
    uint8_t waiting;                          /* in its cluster's wait-for-ready queue */
    uint64_t wait_until_ms;                   /* how long it may wait for a usable backend */
    uint64_t retry_at_ms;                     /* next attempt not before this (retry backoff) */
    const struct slb_method_config *mc;       /* from the cluster's service config, or NULL */
    const struct slb_retry_policy *retry;     /* mc's retry policy, or NULL */
    struct slb_grpc_scan req_scan, resp_scan; /* message sizes (when mc limits them) */
    uint8_t counted_in_cluster;               /* cl->n_calls counts it */
    uint8_t retries;                          /* retries made (gRFC A6) */
    uint8_t req_headers_done;
    uint8_t req_end;                /* downstream sent END_STREAM */
    uint8_t resp_started;           /* upstream response headers received */
    uint8_t resp_headers_sent;      /* response headers submitted downstream */
    uint8_t resp_end;               /* the upstream response is complete (or sidelb ended it) */
    uint8_t u_open;                 /* the upstream stream is open */
    uint8_t u_deferred, d_deferred; /* data providers waiting for bytes */
    uint8_t upstream_done;          /* no upstream will read more request bytes */
    uint8_t counted;                /* be->outstanding counts this call */
};

/* Downstream events (h2_downstream.c) */
struct slb_call *slb_call_new(struct slb_server *srv, struct slb_downstream *dc, int32_t sid);
int slb_call_on_request_header(struct slb_call *call, nghttp2_rcbuf *name, nghttp2_rcbuf *value);
void slb_call_on_request_headers_done(struct slb_call *call, int end_stream);
int slb_call_on_request_data(struct slb_call *call, const uint8_t *p, size_t n);
void slb_call_on_request_end(struct slb_call *call);
void slb_call_on_downstream_close(struct slb_call *call, uint32_t error_code);
void slb_call_on_downstream_frame_sent(struct slb_call *call, const nghttp2_frame *frame);

/* Upstream events (h2_upstream.c) */
/* A connection is ready for this queued call: submit it. 0 or < 0 (call failed and was handled). */
int slb_call_submit_upstream(struct slb_call *call, struct slb_upstream *uc);
int slb_call_on_response_header(struct slb_call *call, nghttp2_rcbuf *name, nghttp2_rcbuf *value);
void slb_call_on_response_headers_done(struct slb_call *call, int cat, int end_stream);
int slb_call_on_response_data(struct slb_call *call, const uint8_t *p, size_t n);
void slb_call_on_response_end(struct slb_call *call);
void slb_call_on_upstream_close(struct slb_call *call, uint32_t error_code);
/* The connection is gone (err) or never came up (queued calls). */
void slb_call_on_upstream_lost(struct slb_call *call, int err, int connect_failed);

/* Data provider callbacks (registered per session type) */
ssize_t slb_call_request_read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                                 nghttp2_data_source *src, void *user);
int slb_call_request_send_cb(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t len,
                             nghttp2_data_source *src, void *user);
ssize_t slb_call_response_read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                                  nghttp2_data_source *src, void *user);
int slb_call_response_send_cb(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t len,
                              nghttp2_data_source *src, void *user);

/* Picks a backend for the next attempt and sends the call there (or waits, or fails). */
void slb_call_dispatch(struct slb_call *call);

/* The deadline passed (the server's deadline heap calls this). */
void slb_call_on_deadline(struct slb_call *call);

/* Ends the call with a trailers-only gRPC error (or error trailers if headers went out). */
void slb_call_fail(struct slb_call *call, int grpc_status, const char *message);

#endif
