/*
 * TLS as a filter under the HTTP/2 transport (OpenSSL), for both sides:
 * sidelb as a client (to TLS backends, health checks) and as a server (app
 * listeners with "tls"). It does no I/O: ciphertext read from the socket is
 * fed in (slb_tls_feed) and comes out as plaintext (slb_tls_read);
 * plaintext (serialized frames) goes in (slb_tls_write) and its records are
 * appended to the output buffer the transport names (slb_tls_set_output),
 * which it then writes as it writes cleartext. The BIO under the SSL object
 * is ours: it reads straight from the fed bytes and appends straight to the
 * output buffer, so no bytes are copied besides OpenSSL's own encryption.
 *
 * ALPN "h2" is required on both sides (a peer without it fails the
 * handshake with a reason). A client verifies the server's certificate
 * (against ca_file or the system store) and its name or IP address; a
 * server with client_ca_file requires and verifies client certificates.
 * TLS >= 1.2. Clients resume sessions: the newest session of a peer is kept
 * in a slot its owner provides (one per backend) and offered on the next
 * connection.
 *
 * Ownership: struct slb_tls_ctx is reference counted: the config holds one
 * (built at load, so bad files are config errors; a reload builds new ones,
 * re-reading certificates and keys), every connection and health check
 * using it one more. struct slb_tls belongs to one connection (struct
 * slb_conn.tls) and is freed with it.
 */
#ifndef SLB_TLS_H
#define SLB_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_session_st SSL_SESSION;
typedef struct bio_method_st BIO_METHOD;

/* Handshake counters of one cluster (or listener). Owner: whoever embeds it (the cluster). */
struct slb_tls_stats {
    uint64_t handshakes;         /* completed */
    uint64_t handshake_failures; /* failed before the first application byte: verification, ALPN, alerts */
    uint64_t resumed;            /* completed with a resumed session */
};

/* Settings as the config gives them; NULL = absent. Owner: the caller (on its stack);
 * the strings are the config's. */
struct slb_tls_settings {
    const char *ca_file;        /* client: CAs that verify servers (NULL: the system store) */
    const char *cert_file;      /* client: certificate for mTLS; server: its certificate chain */
    const char *key_file;       /* its private key */
    const char *client_ca_file; /* server: require client certificates signed by these */
    int min_version;            /* 12 or 13 (TLS 1.2 / 1.3); 0 = 12 */
};

/* Owner: reference counted, atomically (the config, connections and health checks using it, on any loop). */
struct slb_tls_ctx {
    SSL_CTX *ssl;
    BIO_METHOD *bio_method; /* the transport's BIO (reads fed bytes, appends to the output buffer) */
    uint8_t server;
    uint32_t refs;
};

/*
 * Builds a context and reads the files now. NULL on error, with err set to
 * "FILE: OpenSSL's reason" and *bad_key to the settings key at fault
 * ("ca_file", "cert_file", ...).
 */
struct slb_tls_ctx *slb_tls_ctx_new(const struct slb_tls_settings *s, int server, char *err, size_t errlen,
                                    const char **bad_key);
void slb_tls_ctx_ref(struct slb_tls_ctx *ctx);
void slb_tls_ctx_unref(struct slb_tls_ctx *ctx);

/* The TLS state of one connection. Owner: its connection (struct slb_conn.tls). */
struct slb_tls {
    struct slb_tls_ctx *ctx; /* referenced */
    SSL *ssl;
    const uint8_t *in; /* ciphertext fed and not yet taken by OpenSSL */
    size_t in_len;
    struct slb_outbuf *out;      /* where records go (set by the transport before each call) */
    struct slb_outbuf pending;   /* plaintext written before the handshake ended */
    SSL_SESSION **session_slot;  /* client: the peer's newest session (its owner frees it) */
    struct slb_tls_stats *stats; /* may be NULL */
    uint8_t established;         /* handshake done and ALPN h2 agreed */
    uint8_t confirmed;           /* application bytes arrived (failures before count as handshake failures) */
    uint8_t failed;              /* error[] says why */
    char error[192];
};

/*
 * A client end. server_name (required): the host name the certificate must
 * match, also sent as SNI, or an IP literal it must carry as an IP SAN (no
 * SNI then). session_slot: where the peer's session is kept across
 * connections (NULL: no resumption). NULL on no memory or no server_name.
 */
struct slb_tls *slb_tls_client_new(struct slb_tls_ctx *ctx, const char *server_name, SSL_SESSION **session_slot,
                                   struct slb_tls_stats *stats);
struct slb_tls *slb_tls_server_new(struct slb_tls_ctx *ctx, struct slb_tls_stats *stats);
void slb_tls_free(struct slb_tls *t);
/* Frees a kept session (the slot's owner, when it goes). */
void slb_tls_session_free(SSL_SESSION **slot);

/* Ciphertext read from the peer; it must all be taken (by handshake/read) before the next feed. */
static inline void slb_tls_feed(struct slb_tls *t, const uint8_t *p, size_t n)
{
    t->in = p;
    t->in_len = n;
}
static inline void slb_tls_set_output(struct slb_tls *t, struct slb_outbuf *out)
{
    t->out = out;
}
/* Drives the handshake: 1 done (ALPN h2 agreed), 0 needs more bytes, < 0 failed (t->error). */
int slb_tls_handshake(struct slb_tls *t);
/* Plaintext into buf: > 0 bytes, 0 all fed bytes taken, SLB_TLS_EOF the peer closed, other < 0 error (t->error). */
#define SLB_TLS_EOF (-1)
#define SLB_TLS_ERR (-2)
int slb_tls_read(struct slb_tls *t, uint8_t *buf, size_t cap);
/* Encrypts n bytes into the output (before the handshake ended: kept in t->pending). 0 or < 0 (t->error). */
int slb_tls_write(struct slb_tls *t, const uint8_t *p, size_t n);
/* After the handshake: writes what waited in t->pending. 0 or < 0. */
int slb_tls_write_pending(struct slb_tls *t);
/* The host part of "host:port" / "[v6]:port" into buf (the name a certificate must match). */
const char *slb_tls_host_of(const char *hostport, char *buf, size_t len);
/* An idle connection gives OpenSSL's read and write buffers back (when nothing waits in them). */
void slb_tls_release_buffers(struct slb_tls *t);
/* Appends a close_notify alert to out when the connection is established and sound; 1 if it did. */
int slb_tls_close_notify(struct slb_tls *t, struct slb_outbuf *out);
/* The connection ended before any application byte: records why (a TLS failure, counted) and
 * returns SLB_TLS_ERR; 0 when it had carried data (an ordinary close). */
int slb_tls_peer_closed(struct slb_tls *t);
/* Whether a string is an IPv4 or IPv6 literal (no SNI, IP SAN check). */
int slb_tls_is_ip_literal(const char *host);

#endif
