#include "tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* Records one connection may queue in its output buffer (a few flushes' worth). */
#define TLS_OUT_LIMIT (2u * 1024 * 1024)

static const unsigned char alpn_h2[] = {2, 'h', '2'};

/* OpenSSL's reason for the last error of this thread ("" when none), queue cleared. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

    ERR_clear_error();
    return r != NULL ? r : "";
}

/* ---- the BIO under the SSL object: fed bytes in, the transport's output buffer out ---- */

static int bio_read(BIO *b, char *buf, int len)
{
    struct slb_tls *t = BIO_get_data(b);
    size_t n = t->in_len < (size_t)len ? t->in_len : (size_t)len;

    BIO_clear_retry_flags(b);
    if (n == 0) {
        BIO_set_retry_read(b); /* wait for the next read from the socket */
        return -1;
    }
    memcpy(buf, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

static int bio_write(BIO *b, const char *p, int len)
{
    struct slb_tls *t = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    if (t->out == NULL || slb_outbuf_append(t->out, p, (size_t)len, TLS_OUT_LIMIT) != 0)
        return -1;
    return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

/* ---- contexts ---- */

/* TLS 1.3 sends sessions after the handshake: keep the newest in the connection's slot. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct slb_tls *t = SSL_get_app_data(ssl);

    if (t == NULL || t->session_slot == NULL)
        return 0; /* not taken: OpenSSL frees it */
    if (*t->session_slot != NULL)
        SSL_SESSION_free(*t->session_slot);
    *t->session_slot = sess;
    return 1;
}

/* Server: choose h2 or refuse the handshake (a gRPC client always offers it). */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg)
{
    unsigned char *sel;

    if (SSL_select_next_proto(&sel, outlen, alpn_h2, sizeof(alpn_h2), in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static struct slb_tls_ctx *ctx_fail(struct slb_tls_ctx *ctx, char *err, size_t errlen, const char **bad_key,
                                    const char *key, const char *file, const char *what)
{
    const char *r = ssl_reason();

    snprintf(err, errlen, "%s: %s%s%s", file != NULL ? file : "", what, r[0] ? ": " : "", r);
    *bad_key = key;
    slb_tls_ctx_unref(ctx);
    return NULL;
}

struct slb_tls_ctx *slb_tls_ctx_new(const struct slb_tls_settings *s, int server, char *err, size_t errlen,
                                    const char **bad_key)
{
    struct slb_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    SSL_CTX *sc;

    *bad_key = NULL;
    if (ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ctx->refs = 1;
    ctx->server = (uint8_t)server;
    ERR_clear_error();
    if ((sc = ctx->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method())) == NULL ||
        (ctx->bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sidelb transport")) == NULL)
        return ctx_fail(ctx, err, errlen, bad_key, "", NULL, "cannot create a TLS context");
    BIO_meth_set_read(ctx->bio_method, bio_read);
    BIO_meth_set_write(ctx->bio_method, bio_write);
    BIO_meth_set_ctrl(ctx->bio_method, bio_ctrl);
    BIO_meth_set_create(ctx->bio_method, bio_create);
    SSL_CTX_set_min_proto_version(sc, s->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    if (s->cert_file != NULL && SSL_CTX_use_certificate_chain_file(sc, s->cert_file) != 1)
        return ctx_fail(ctx, err, errlen, bad_key, "cert_file", s->cert_file, "cannot load the certificate");
    if (s->key_file != NULL && SSL_CTX_use_PrivateKey_file(sc, s->key_file, SSL_FILETYPE_PEM) != 1)
        return ctx_fail(ctx, err, errlen, bad_key, "key_file", s->key_file, "cannot load the private key");
    if (s->cert_file != NULL && s->key_file != NULL && SSL_CTX_check_private_key(sc) != 1)
        return ctx_fail(ctx, err, errlen, bad_key, "key_file", s->key_file, "does not match cert_file");
    if (server) {
        static const unsigned char sid_ctx[] = "sidelb";
        SSL_CTX_set_alpn_select_cb(sc, on_alpn_select, NULL);
        /* needed for resumption when client certificates are verified */
        SSL_CTX_set_session_id_context(sc, sid_ctx, sizeof(sid_ctx) - 1);
        if (s->client_ca_file != NULL) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(s->client_ca_file);
            if (names == NULL || SSL_CTX_load_verify_locations(sc, s->client_ca_file, NULL) != 1) {
                sk_X509_NAME_pop_free(names, X509_NAME_free);
                return ctx_fail(ctx, err, errlen, bad_key, "client_ca_file", s->client_ca_file,
                                "cannot load the CA certificates");
            }
            SSL_CTX_set_client_CA_list(sc, names);
            SSL_CTX_set_verify(sc, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        }
    } else {
        if (s->ca_file != NULL ? SSL_CTX_load_verify_locations(sc, s->ca_file, NULL) != 1
                               : SSL_CTX_set_default_verify_paths(sc) != 1)
            return ctx_fail(ctx, err, errlen, bad_key, "ca_file", s->ca_file != NULL ? s->ca_file : "system store",
                            "cannot load the CA certificates");
        SSL_CTX_set_verify(sc, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(sc, on_new_session);
    }
    return ctx;
}

/* Atomic: with "workers" > 1 every worker's connections share the listener's and the cluster's context,
 * so references come and go on several threads (a plain count lost updates and freed it in use). */
void slb_tls_ctx_ref(struct slb_tls_ctx *ctx)
{
    __atomic_add_fetch(&ctx->refs, 1, __ATOMIC_RELAXED);
}

void slb_tls_ctx_unref(struct slb_tls_ctx *ctx)
{
    if (ctx == NULL || __atomic_sub_fetch(&ctx->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    SSL_CTX_free(ctx->ssl);
    BIO_meth_free(ctx->bio_method);
    free(ctx);
}

/* ---- connections ---- */

const char *slb_tls_host_of(const char *hostport, char *buf, size_t len)
{
    const char *h = hostport, *end;

    if (*h == '[') { /* [v6]:port */
        h++;
        end = strchr(h, ']');
    } else {
        end = strrchr(h, ':');
    }
    if (end == NULL)
        end = h + strlen(h);
    snprintf(buf, len, "%.*s", (int)(end - h), h);
    return buf;
}

int slb_tls_is_ip_literal(const char *host)
{
    unsigned char buf[16];
    return host != NULL && (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1);
}

static struct slb_tls *tls_new(struct slb_tls_ctx *ctx, struct slb_tls_stats *stats)
{
    struct slb_tls *t = calloc(1, sizeof(*t));
    BIO *bio;

    if (t == NULL)
        return NULL;
    if ((t->ssl = SSL_new(ctx->ssl)) == NULL || (bio = BIO_new(ctx->bio_method)) == NULL) {
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    BIO_set_data(bio, t);
    SSL_set_bio(t->ssl, bio, bio);
    SSL_set_app_data(t->ssl, t);
    slb_tls_ctx_ref(ctx);
    t->ctx = ctx;
    t->stats = stats;
    return t;
}

struct slb_tls *slb_tls_client_new(struct slb_tls_ctx *ctx, const char *server_name, SSL_SESSION **session_slot,
                                   struct slb_tls_stats *stats)
{
    struct slb_tls *t = tls_new(ctx, stats);
    int ok = 1;

    if (t == NULL)
        return NULL;
    SSL_set_connect_state(t->ssl);
    /* no name, no check: refused rather than a connection that verifies nothing but the chain */
    ok = SSL_set_alpn_protos(t->ssl, alpn_h2, sizeof(alpn_h2)) == 0 && server_name != NULL && server_name[0] != '\0';
    if (ok) {
        if (slb_tls_is_ip_literal(server_name)) {
            /* no SNI for an address (RFC 6066); the certificate must name it as an IP SAN */
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), server_name) == 1;
        } else {
            ok = SSL_set_tlsext_host_name(t->ssl, server_name) == 1 && SSL_set1_host(t->ssl, server_name) == 1;
        }
    }
    if (ok && session_slot != NULL) {
        t->session_slot = session_slot;
        if (*session_slot != NULL)
            SSL_set_session(t->ssl, *session_slot);
    }
    if (!ok) {
        slb_tls_free(t);
        ERR_clear_error();
        return NULL;
    }
    return t;
}

struct slb_tls *slb_tls_server_new(struct slb_tls_ctx *ctx, struct slb_tls_stats *stats)
{
    struct slb_tls *t = tls_new(ctx, stats);

    if (t != NULL)
        SSL_set_accept_state(t->ssl);
    return t;
}

void slb_tls_free(struct slb_tls *t)
{
    if (t == NULL)
        return;
    /* OpenSSL takes a session whose connection did not shut down for a bad
     * one and makes it unresumable: a connection closed without a TLS error
     * (idle, recycled, the peer left) keeps it good for the next one */
    if (!t->failed && t->established)
        SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(t->ssl); /* frees the BIO */
    slb_outbuf_dispose(&t->pending);
    slb_tls_ctx_unref(t->ctx);
    free(t);
}

void slb_tls_session_free(SSL_SESSION **slot)
{
    if (*slot != NULL)
        SSL_SESSION_free(*slot);
    *slot = NULL;
}

/* Records why the connection failed (the first reason wins), with OpenSSL's words. */
static int tls_fail(struct slb_tls *t, const char *what)
{
    const char *r = ssl_reason();

    if (!t->failed) {
        t->failed = 1;
        /* TLS 1.3: a server refuses a client certificate after the client's handshake ended */
        if (!t->confirmed && t->stats != NULL)
            t->stats->handshake_failures++;
        snprintf(t->error, sizeof(t->error), "%s%s%s", what, r[0] ? ": " : "", r);
    }
    return SLB_TLS_ERR;
}

/* A handshake or read that did not go on: wants bytes (0), the peer closed (EOF), or an error. */
static int tls_stopped(struct slb_tls *t, int rv, const char *what)
{
    char buf[160];
    long vr;

    switch (SSL_get_error(t->ssl, rv)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        if (!t->established)
            return tls_fail(t, "the peer closed the connection during the TLS handshake");
        return SLB_TLS_EOF;
    default:
        break;
    }
    if ((vr = SSL_get_verify_result(t->ssl)) != X509_V_OK) {
        snprintf(buf, sizeof(buf), "certificate verify failed: %s", X509_verify_cert_error_string(vr));
        ERR_clear_error();
        return tls_fail(t, buf);
    }
    if (ERR_peek_last_error() == 0 && t->in_len == 0 && !t->established)
        return tls_fail(t, "the peer closed the connection during the TLS handshake");
    return tls_fail(t, what);
}

int slb_tls_handshake(struct slb_tls *t)
{
    const unsigned char *proto = NULL;
    unsigned int plen = 0;
    int rv;

    if (t->established)
        return 1;
    if (t->failed)
        return SLB_TLS_ERR;
    if ((rv = SSL_do_handshake(t->ssl)) != 1)
        return tls_stopped(t, rv, "TLS handshake failed");
    SSL_get0_alpn_selected(t->ssl, &proto, &plen);
    if (plen != 2 || memcmp(proto, "h2", 2) != 0) {
        char buf[96];
        if (plen == 0)
            snprintf(buf, sizeof(buf), "the peer did not agree to ALPN \"h2\" (it chose none)");
        else
            snprintf(buf, sizeof(buf), "the peer did not agree to ALPN \"h2\" (it chose \"%.*s\")", (int)plen,
                     (const char *)proto);
        return tls_fail(t, buf);
    }
    t->established = 1;
    if (t->stats != NULL) {
        t->stats->handshakes++;
        if (SSL_session_reused(t->ssl))
            t->stats->resumed++;
    }
    return 1;
}

void slb_tls_release_buffers(struct slb_tls *t)
{
    SSL_free_buffers(t->ssl); /* refuses (0) when a partial record waits: then they stay */
}

int slb_tls_close_notify(struct slb_tls *t, struct slb_outbuf *out)
{
    if (!t->established || t->failed)
        return 0;
    out->len = 0;
    t->out = out;
    SSL_shutdown(t->ssl); /* sends close_notify; does not wait for the peer's */
    ERR_clear_error();
    t->out = NULL;
    return out->len > 0;
}

int slb_tls_peer_closed(struct slb_tls *t)
{
    if (t->confirmed)
        return 0;
    ERR_clear_error();
    if (t->established)
        /* TLS 1.3: a server that wants a client certificate checks it after our handshake ended */
        return tls_fail(t, "the peer closed the connection right after the TLS handshake (as a server does that "
                           "requires a client certificate and got none it accepts)");
    return tls_fail(t, "the peer closed the connection during the TLS handshake");
}

int slb_tls_read(struct slb_tls *t, uint8_t *buf, size_t cap)
{
    int rv;

    if (t->failed)
        return SLB_TLS_ERR;
    if ((rv = SSL_read(t->ssl, buf, (int)cap)) > 0) {
        t->confirmed = 1;
        return rv;
    }
    rv = tls_stopped(t, rv, "TLS error");
    return rv;
}

int slb_tls_write(struct slb_tls *t, const uint8_t *p, size_t n)
{
    int rv;

    if (t->failed)
        return SLB_TLS_ERR;
    if (!t->established)
        return slb_outbuf_append(&t->pending, p, n, TLS_OUT_LIMIT) == 0 ? 0 : tls_fail(t, "too much output");
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        if ((rv = SSL_write(t->ssl, p, (int)chunk)) <= 0)
            return tls_fail(t, "TLS write failed");
        p += rv;
        n -= (size_t)rv;
    }
    return 0;
}

int slb_tls_write_pending(struct slb_tls *t)
{
    int rv = 0;

    if (t->pending.len > 0 && t->established) {
        rv = slb_tls_write(t, t->pending.base, t->pending.len);
        t->pending.len = 0;
    }
    slb_outbuf_dispose(&t->pending);
    return rv;
}
