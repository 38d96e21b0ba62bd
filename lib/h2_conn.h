/*
 * The transport under one HTTP/2 session: a TCP handle, the session, and a
 * double output buffer. Used by both sides (h2_downstream, h2_upstream).
 *
 * Writes are coalesced: anything that queues frames marks the connection
 * dirty; the loop flushes every dirty connection once per iteration (uv
 * prepare + check handles in struct slb_conn_ctx). A flush serializes frames
 * with nghttp2_session_mem_send() up to a high-water mark and writes it
 * (uv_try_write first, uv_write for the rest). When nothing of the
 * connection waits to be written, frames go to one loop-wide scratch buffer
 * and only what the socket does not take is copied into the connection's
 * own (fill) buffer: a connection that is not pushed back on holds no
 * output buffer (an idle app connection costs less). While a write is in
 * flight the other buffer fills; above the mark no more frames are
 * produced, which is what pushes back on the other side of the proxy.
 *
 * Reads use one loop-wide buffer (nghttp2 copies what it keeps). One
 * connection reads at most read_per_turn bytes per loop turn (libuv would
 * call on_read up to 32 times, 2 MiB): past that its reads stop, and the
 * check handle starts them again after every other ready connection was
 * served, so a flooding peer cannot starve the others.
 *
 * TLS (lib/tls.c) sits under this transport when a connection has one
 * (slb_conn_use_tls): bytes read are decrypted before the session (or the
 * on_read hook) sees them, and a flush serializes frames into a loop-wide
 * cleartext buffer, encrypts them in one go into the buffer a cleartext
 * flush would have written, and writes that the same way (coalesced). Until
 * the handshake is done no frame is serialized. Cleartext connections pay
 * one pointer test per read and per flush.
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
#include "list.h"

struct slb_tls;

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

/*
 * Per-loop state shared by all connections. Owner: the loop context
 * (struct slb_loop_ctx). It also counts the handles that live in memory its
 * owner frees (every connection, pool and cluster timers): the owner may
 * free that memory only after on_all_closed ran, never on a timer.
 */
struct slb_conn_ctx {
    uv_loop_t *loop;
    uv_prepare_t prepare;
    uv_check_t check;
    struct slb_conn *dirty;
    uint32_t n_handles;                              /* open or closing counted handles */
    uint8_t closing;                                 /* slb_conn_ctx_close() was called */
    void (*on_all_closed)(struct slb_conn_ctx *ctx); /* once closing and n_handles is 0 */
    struct slb_outbuf scratch;                       /* frames of the connection being flushed (empty between) */
    uint32_t read_per_turn;                          /* bytes one connection may read per loop turn (0 = no limit) */
    uint32_t turn;                                   /* loop turns (counted by the prepare handle) */
    struct slb_conn *paused;                         /* connections whose reads wait for the next turn */
    uint64_t read_pauses;                            /* times a connection hit read_per_turn */
    uint8_t *tls_plain;                              /* TLS: decrypted bytes of one record (allocated on first use) */
    struct slb_outbuf tls_frames;                    /* TLS: frames of the connection being flushed, to encrypt */
    uint8_t rbuf[SLB_CONN_READ_BUF];                 /* last: init does not clear it */
};

/*
 * One HTTP/2 stream of a connection, embedded in whoever uses it (the call)
 * and touched only by the transports: the user never edits it. The
 * session's stream user data points at it while it is bound; unbinding
 * clears that pointer, so frames or data-provider callbacks that arrive
 * later find nothing instead of a freed call (nghttpx's per-stream link).
 */
struct slb_h2_stream;

/* What a stream's user provides: the body it sends (request upstream,
 * response downstream) and its receive-window bookkeeping. Owner: static
 * tables of the user. */
struct slb_h2_stream_ops {
    /* Contiguous bytes ready to send (0 = none now). *end = 1: after them the body is complete. */
    size_t (*peek)(struct slb_h2_stream *s, const uint8_t **p, int *end);
    /* n bytes of peek() went into the connection's output. */
    void (*sent)(struct slb_h2_stream *s, size_t n);
    /* At the end of the body: trailer fields to send (0 = none). nv has room for SLB_HDRS_MAX. */
    size_t (*trailers)(struct slb_h2_stream *s, nghttp2_nv *nv, char *scratch, size_t scratch_len);
    /* On unbinding: bytes received whose stream window the user never reopened (they count as
     * consumed from here on; the connection window was reopened on receipt). */
    size_t (*take_unconsumed)(struct slb_h2_stream *s);
};

struct slb_h2_stream {
    struct slb_conn *conn; /* NULL when not bound to a connection */
    int32_t sid;
    uint8_t open;         /* the HTTP/2 stream is open (counts against the connection's limit) */
    uint8_t deferred;     /* the data provider waits for bytes */
    uint8_t idle_fired;   /* the stream idle timeout ended its call (h2_downstream) */
    uint64_t active_ms;   /* loop time of its last frame either way (a store per frame, no timer) */
    struct slb_list link; /* in its connection's list */
    const struct slb_h2_stream_ops *ops;
};

struct slb_conn {
    uv_tcp_t tcp;
    nghttp2_session *session;
    struct slb_conn_ctx *ctx;
    const struct slb_conn_ops *ops;
    struct slb_outbuf out[2]; /* allocated only when the socket does not take a write at once */
    struct slb_outbuf *cur;   /* where frames go during a flush: out[fill] or ctx->scratch */
    uint8_t fill;             /* index of the buffer being filled */
    uint8_t trim;             /* free out[] once both are empty (the owner went idle) */
    uint8_t writing, dirty, closing, close_after_write, raw_only;
    uv_write_t wreq;
    struct slb_conn *next_dirty;
    uint32_t turn, turn_bytes; /* bytes read in loop turn `turn` */
    uint8_t read_paused;       /* on ctx->paused: reads resume next turn */
    uint8_t pause_logged;
    struct slb_conn *next_paused;
    struct slb_tls *tls; /* NULL: cleartext; owned, freed with the connection */
};

int slb_conn_ctx_init(struct slb_conn_ctx *ctx, uv_loop_t *loop);
/* Frees the scratch buffer (after on_all_closed). */
void slb_conn_ctx_dispose(struct slb_conn_ctx *ctx);
/* Flushes the connections marked dirty (also called by the ctx's handles). */
void slb_conn_ctx_flush(struct slb_conn_ctx *ctx);
/* Closes the ctx's own handles; on_all_closed runs once every counted handle is closed. */
void slb_conn_ctx_close(struct slb_conn_ctx *ctx, void (*on_all_closed)(struct slb_conn_ctx *ctx));
/* A handle embedded in memory the ctx's owner frees was initialized / is to be closed (counted). */
void slb_conn_ctx_handle_opened(struct slb_conn_ctx *ctx);
void slb_conn_ctx_close_handle(struct slb_conn_ctx *ctx, uv_handle_t *h);

/* ---- streams (both sides) ---- */
void slb_h2_stream_init(struct slb_h2_stream *s, const struct slb_h2_stream_ops *ops);
/* Binds s to stream sid of c (stream user data, c's list of streams). */
void slb_h2_stream_bind(struct slb_h2_stream *s, struct slb_conn *c, struct slb_list *list, int32_t sid);
/* Unbinds: no more callbacks reach s; resets the stream first when rst_code != 0 and it is
 * open, and reopens the stream window of bytes its user never consumed. */
void slb_h2_stream_unbind(struct slb_h2_stream *s, uint32_t rst_code);
/* The stream's user data, or NULL once unbound. */
struct slb_h2_stream *slb_h2_stream_of(nghttp2_session *session, int32_t sid);
/* More body bytes (or its end) are ready: resume a deferred data provider. */
void slb_h2_stream_resume(struct slb_h2_stream *s);
/*
 * Flow control is split (docs/architecture.md, "Flow-control isolation"):
 * the connection window reopens as soon as bytes land in the stream's
 * buffer (consume_connection), the stream window only when the other side
 * has taken them (consume_stream). A reader that stops holds its own
 * streams' windows, never the connection that other apps' calls share.
 */
void slb_h2_stream_consume_connection(struct slb_h2_stream *s, size_t n);
void slb_h2_stream_consume_stream(struct slb_h2_stream *s, size_t n);
/* The data provider for a stream's body (source unused: the stream is looked up by id). */
extern const nghttp2_data_provider slb_h2_body_provider;
/* send_data_callback of both sides: copies a NO_COPY DATA frame into the output,
 * or NGHTTP2_ERR_WOULDBLOCK above the high-water mark (back-pressure, never an error). */
int slb_h2_send_data_cb(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t len,
                        nghttp2_data_source *src, void *user);

/* Initializes the embedded struct (the TCP handle too). */
int slb_conn_init(struct slb_conn *c, struct slb_conn_ctx *ctx, const struct slb_conn_ops *ops);
/* Puts TLS under the connection (before slb_conn_start); it owns t from here, also on error. 0 or SLB_ENOMEM. */
int slb_conn_use_tls(struct slb_conn *c, struct slb_tls *t);
/* Starts reading (and a TLS client's handshake). */
int slb_conn_start(struct slb_conn *c);
/* The words for a close reason of c: a TLS failure's own reason, else slb_strerror(). */
const char *slb_conn_strerror(const struct slb_conn *c, int err);
/* Queue a flush for this loop iteration. */
void slb_conn_mark_dirty(struct slb_conn *c);
/* Raw bytes to send (HTTP/1 refusal); then close once written when close_after. */
int slb_conn_write_raw(struct slb_conn *c, const void *p, size_t n, int close_after);
/* Bytes that go before any frame (a connection's first): straight to the socket when nothing is
 * queued, so no output buffer is grown for them; what the socket does not take is queued.
 * 0 or a UV_E* / SLB_E* code. */
int slb_conn_write_first(struct slb_conn *c, const void *p, size_t n);
/* The owner went idle: free the output buffers once nothing waits in them (cleared by the next
 * slb_conn_keep_buffers). Costs no allocation unless the socket pushes back. */
void slb_conn_trim_when_idle(struct slb_conn *c);
void slb_conn_keep_buffers(struct slb_conn *c);
/* Serializes and writes what is queued now, as far as the socket takes it (before a close). */
void slb_conn_flush_now(struct slb_conn *c);
/* Close once everything queued (frames included) is written. */
void slb_conn_close_when_flushed(struct slb_conn *c);
void slb_conn_close(struct slb_conn *c, int err);

#endif
