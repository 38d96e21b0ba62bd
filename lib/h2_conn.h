/*
 * The transport under one HTTP/2 session: a TCP handle, the session, and a
 * double output buffer. Used by both sides (h2_downstream, h2_upstream).
 *
 * Writes are coalesced: anything that queues frames marks the connection
 * dirty; the loop flushes every dirty connection once per iteration (uv
 * prepare + check handles in struct slb_conn_ctx). A flush serializes frames
 * with nghttp2_session_mem_send() into the fill buffer, up to a high-water
 * mark, and writes it (uv_try_write first, uv_write for the rest). While a
 * write is in flight the other buffer fills; above the mark no more frames
 * are produced, which is what pushes back on the other side of the proxy.
 *
 * Reads use one loop-wide buffer (nghttp2 copies what it keeps).
 *
 * Ownership: struct slb_conn is embedded in its owner (downstream or
 * upstream connection). slb_conn_close() calls ops->on_close (detach calls,
 * do not free), closes the TCP handle, and ops->on_free runs from the close
 * callback, where the owner frees itself and the session.
 */
#ifndef SLB_H2_CONN_H
#define SLB_H2_CONN_H

#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

#define SLB_CONN_HIGH_WATER (64 * 1024)
#define SLB_CONN_OUT_LIMIT  (1024 * 1024)
#define SLB_CONN_READ_BUF   (64 * 1024)

struct slb_conn;

struct slb_conn_ops {
    /* Bytes read. Default (NULL): feed the session. Return < 0 to close. */
    int (*on_read)(struct slb_conn *c, const uint8_t *p, size_t n);
    /* The connection is closing (err: 0, a UV_E* or an SLB_E* code): detach calls. */
    void (*on_close)(struct slb_conn *c, int err);
    /* The TCP handle is closed: free the owner. */
    void (*on_free)(struct slb_conn *c);
};

/* Per-loop state shared by all connections. Owner: the server. */
struct slb_conn_ctx {
    uv_loop_t *loop;
    uv_prepare_t prepare;
    uv_check_t check;
    struct slb_conn *dirty;
    uint8_t rbuf[SLB_CONN_READ_BUF];
};

struct slb_conn {
    uv_tcp_t tcp;
    nghttp2_session *session;
    struct slb_conn_ctx *ctx;
    const struct slb_conn_ops *ops;
    struct slb_outbuf out[2];
    uint8_t fill; /* index of the buffer being filled */
    uint8_t writing, dirty, closing, close_after_write, raw_only;
    uv_write_t wreq;
    struct slb_conn *next_dirty;
};

int slb_conn_ctx_init(struct slb_conn_ctx *ctx, uv_loop_t *loop);
/* Flushes the connections marked dirty (also called by the ctx's handles). */
void slb_conn_ctx_flush(struct slb_conn_ctx *ctx);
void slb_conn_ctx_close(struct slb_conn_ctx *ctx);

/* Initializes the embedded struct (the TCP handle too). */
int slb_conn_init(struct slb_conn *c, struct slb_conn_ctx *ctx, const struct slb_conn_ops *ops);
/* Starts reading. */
int slb_conn_start(struct slb_conn *c);
/* Queue a flush for this loop iteration. */
void slb_conn_mark_dirty(struct slb_conn *c);
/* Raw bytes to send (HTTP/1 refusal); then close once written when close_after. */
int slb_conn_write_raw(struct slb_conn *c, const void *p, size_t n, int close_after);
/* Close once everything queued (frames included) is written. */
void slb_conn_close_when_flushed(struct slb_conn *c);
/* Appends a DATA frame (header + payload) for a NO_COPY data source. */
int slb_conn_append_data_frame(struct slb_conn *c, const uint8_t *framehd, const uint8_t *p, size_t n);
void slb_conn_close(struct slb_conn *c, int err);

#endif
