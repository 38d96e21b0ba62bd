/*
 * test_backend: the C gRPC test server of sidelb's tests and benchmark.
 *
 * One libuv loop, h2c with prior knowledge (nghttp2 server sessions),
 * protobuf-c messages. It serves sidelb.test.Echo (proto/echo.proto) and
 * grpc.health.v1.Health (proto/health.proto). See test_backend.c for the
 * command line.
 *
 * Files:
 *   tb.h      shared types (this file)
 *   main.c    options, signals, listener, stats file
 *   conn.c    one TCP connection = one nghttp2 session; output buffering
 *   call.c    one call = one stream: gRPC framing, the Echo/Health methods
 *
 * Memory is bounded per stream: request bytes are handed back to HTTP/2 flow
 * control only while the stream's pending output is small, and streamed
 * replies are generated only when the previous ones drained into nghttp2.
 */
#ifndef TB_H
#define TB_H

#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <uv.h>

#include "echo.pb-c.h"
#include "health.pb-c.h"
#include "list.h"
#include "tls.h"

#define TB_OUT_HIGH     (256 * 1024)       /* stream output above this: stop generating / consuming */
#define TB_WBUF_HIGH    (128 * 1024)       /* connection output buffer: stop mem_send above this */
#define TB_MAX_MSG      (64 * 1024 * 1024) /* largest request message accepted */
#define TB_MAX_RESPONSE (64 * 1024 * 1024)

/* A growable byte buffer; valid bytes are data[off, len). */
struct tb_buf {
    uint8_t *data;
    size_t off, len, cap;
};

int tb_buf_reserve(struct tb_buf *b, size_t extra); /* 0 or -1 (ENOMEM) */
int tb_buf_append(struct tb_buf *b, const void *p, size_t n);
void tb_buf_consume(struct tb_buf *b, size_t n);
void tb_buf_free(struct tb_buf *b);
static inline size_t tb_buf_size(const struct tb_buf *b)
{
    return b->len - b->off;
}

enum tb_method {
    TB_M_UNKNOWN = 0,
    TB_M_UNARY,
    TB_M_SERVER_STREAM,
    TB_M_CLIENT_STREAM,
    TB_M_BIDI,
    TB_M_HEALTH_CHECK,
    TB_M_HEALTH_WATCH,
    TB_M_COUNT
};

extern const char *const tb_method_names[TB_M_COUNT];

struct tb_opts {
    int port;
    const char *host; /* IPv4 or IPv6 literal to listen on, default 127.0.0.1 */
    const char *id;
    uint32_t max_concurrent_streams;
    uint32_t window;      /* initial stream window (SETTINGS_INITIAL_WINDOW_SIZE) */
    uint32_t conn_window; /* connection receive window */
    const char *stats_file;
    unsigned goaway_after;   /* per connection: GOAWAY after this many calls, 0 = never */
    unsigned extra_delay_ms; /* added to every request's delay_ms (a slow backend) */
    int fail_status;         /* > 0: every Echo call ends with this grpc-status (a broken backend) */
    unsigned fail_every;     /* with fail_status: only every Nth Echo call fails (1 = all; 2 = every other) */
    const char *pushback_ms; /* sent verbatim as grpc-retry-pushback-ms with every error status (gRFC A6) */
    int health;              /* GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__* */
    int health_unimplemented_watch;
    int no_health;     /* --no-health: Watch and Check answer UNIMPLEMENTED */
    unsigned drain_ms; /* on SIGTERM: how long to let calls finish after GOAWAY */
    int verbose;
    const char *tls_cert, *tls_key, *tls_client_ca; /* --tls-cert/--tls-key: serve h2 over TLS (libsidelb's filter) */
};

struct tb_stream;
struct tb_conn;

/* The process: one server, owned by main(). */
struct tb_server {
    uv_loop_t *loop;
    struct tb_opts opt;
    uv_tcp_t listener;
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
    uv_timer_t drain_timer;
    int draining;
    nghttp2_session_callbacks *callbacks;
    nghttp2_option *h2opt;
    uint8_t rbuf[256 * 1024];     /* the one read buffer: reads are processed synchronously */
    struct slb_tls_ctx *tls;      /* NULL: h2c */
    uint8_t plain[16 * 1024];     /* TLS: one record's decrypted bytes */
    struct slb_list conns;        /* struct tb_conn: live connections */
    struct slb_list watchers;     /* struct tb_stream (by wlink): Health.Watch streams */
    struct slb_list free_streams; /* struct tb_stream (by link): recycled, owned here */
    unsigned n_free_streams;
    uint8_t *filler; /* response_size payload bytes */
    size_t filler_len;
    /* counters for the stats file */
    uint64_t calls, ok, failed, cancelled, active, connections;
    uint64_t by_method[TB_M_COUNT], cancelled_by_method[TB_M_COUNT];
    uint64_t retried, max_previous; /* requests with grpc-previous-rpc-attempts, and its largest value */
};

extern struct tb_server tb_srv;

/* One accepted TCP connection; owned by the server's conns list, freed in its close callback. */
struct tb_conn {
    uv_tcp_t tcp;
    nghttp2_session *h2;
    struct slb_list link;    /* in tb_srv.conns */
    struct slb_list streams; /* struct tb_stream: live streams on this connection */
    struct slb_list wake;    /* struct tb_stream (by wake_link): output drained, run tb_call_process */
    struct tb_buf wbuf;
    uv_write_t wreq;
    unsigned ncalls;
    int writing, closing, goaway;
    struct slb_tls *tls;      /* NULL: h2c */
    struct slb_outbuf cipher; /* TLS: records to write (cipher_off of them went out) */
    size_t cipher_off;
};

/* One stream / call; owned by its connection's streams list. */
struct tb_stream {
    struct tb_conn *conn;
    struct slb_list link;      /* in conn->streams, or in tb_srv.free_streams once closed */
    struct slb_list wlink;     /* in tb_srv.watchers while a Health.Watch runs */
    struct slb_list wake_link; /* in conn->wake while waiting to generate more */
    int32_t id;
    int method;
    unsigned req_ended : 1, end_handled : 1, resp_submitted : 1, finishing : 1, resp_done : 1, deferred : 1,
        timer_active : 1, timer_inited : 1, discard : 1, counted : 1;
    struct tb_buf in;               /* request bytes not yet parsed */
    size_t unconsumed;              /* received bytes not yet returned to flow control */
    struct tb_buf out;              /* framed replies not yet read by nghttp2 */
    uint32_t received;              /* request messages parsed */
    Sidelb__Test__EchoRequest *req; /* request being answered (delay, server stream, client stream) */
    uint32_t next_seq, remaining;   /* ServerStream replies left to generate */
    int status;
    char *status_msg;
    nghttp2_rcbuf **md; /* x-* request headers: name, value, name, value ... */
    size_t n_md, cap_md;
    uv_timer_t timer;
};

/* conn.c */
void tb_conn_accept(uv_stream_t *listener);
void tb_conn_flush(struct tb_conn *c);
void tb_conn_goaway(struct tb_conn *c);
int tb_h2_callbacks_init(void);

/* call.c */
struct tb_stream *tb_stream_new(struct tb_conn *c, int32_t id);
void tb_stream_close(struct tb_stream *s, uint32_t error_code); /* counts, unlinks and frees */
int tb_stream_on_header(struct tb_stream *s, nghttp2_rcbuf *name, nghttp2_rcbuf *value);
void tb_call_start(struct tb_stream *s, int end_stream); /* request headers complete */
void tb_call_data(struct tb_stream *s, const uint8_t *data, size_t len);
void tb_call_request_end(struct tb_stream *s);
void tb_call_process(struct tb_stream *s);
void tb_health_set(int status);

/* main.c */
void tb_stats_write(void);
void tb_conn_closed(void); /* a connection went away: exits when draining and none left */

#endif
