/* lib/tls.c: the TLS filter with two ends talking through memory (a client
 * and a server slb_tls, each one's output fed to the other): handshake with
 * ALPN h2, data both ways, bytes written before the handshake, verification
 * failures with their reasons, a peer without ALPN, session resumption, and
 * context errors naming the file. The certificate is made here: a
 * self-signed EC certificate for 127.0.0.1 and localhost, its own CA. */
#include <check.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "common.h"
#include "tls.h"

static char cert_path[64], key_path[64];

static void make_cert(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    FILE *f;
    int fd;

    ck_assert_ptr_nonnull(key);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"sidelb check", -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ck_assert_int_gt(X509_sign(x, key, EVP_sha256()), 0);

    strcpy(cert_path, "/tmp/check_tls_cert_XXXXXX");
    strcpy(key_path, "/tmp/check_tls_key_XXXXXX");
    ck_assert_int_ge(fd = mkstemp(cert_path), 0);
    f = fdopen(fd, "w");
    PEM_write_X509(f, x);
    fclose(f);
    ck_assert_int_ge(fd = mkstemp(key_path), 0);
    f = fdopen(fd, "w");
    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
}

static void setup(void)
{
    make_cert();
}

static void teardown(void)
{
    unlink(cert_path);
    unlink(key_path);
}

static struct slb_tls_ctx *ctx_new(int server, int min_version)
{
    struct slb_tls_settings s = {.ca_file = cert_path, .min_version = min_version};
    char err[256];
    const char *bad;
    struct slb_tls_ctx *ctx;

    if (server) {
        s.ca_file = NULL;
        s.cert_file = cert_path;
        s.key_file = key_path;
    }
    ctx = slb_tls_ctx_new(&s, server, err, sizeof(err), &bad);
    ck_assert_msg(ctx != NULL, "%s", err);
    return ctx;
}

/* One end: its TLS, what it wrote (records for the other end), what it read. */
struct end {
    struct slb_tls *t;
    struct slb_outbuf out, in;
};

/* Feeds a's records to b; b's handshake, then its plaintext into b->in. Returns b's handshake result. */
static int pass(struct end *a, struct end *b)
{
    uint8_t buf[16384];
    size_t n = a->out.len;
    uint8_t *copy = malloc(n ? n : 1);
    int hs, k;

    memcpy(copy, a->out.base, n);
    a->out.len = 0;
    slb_tls_feed(b->t, copy, n);
    slb_tls_set_output(b->t, &b->out);
    hs = slb_tls_handshake(b->t);
    if (hs == 1) {
        ck_assert_int_eq(slb_tls_write_pending(b->t), 0);
        while ((k = slb_tls_read(b->t, buf, sizeof(buf))) > 0)
            ck_assert_int_eq(slb_outbuf_append(&b->in, buf, (size_t)k, 1 << 20), 0);
    }
    free(copy);
    return hs;
}

/* Runs the handshake to its end; 1 when both ends are established. */
static int handshake(struct end *c, struct end *s)
{
    int i, hc = 0, hs = 0;

    slb_tls_set_output(c->t, &c->out);
    hc = slb_tls_handshake(c->t); /* ClientHello */
    for (i = 0; i < 10 && hc >= 0 && hs >= 0 && !(hc == 1 && hs == 1 && c->out.len == 0 && s->out.len == 0); i++) {
        hs = pass(c, s);
        if (hs < 0)
            break;
        hc = pass(s, c);
    }
    return hc == 1 && hs == 1;
}

static void end_dispose(struct end *e)
{
    slb_tls_free(e->t);
    slb_outbuf_dispose(&e->out);
    slb_outbuf_dispose(&e->in);
}

START_TEST(handshake_and_data_both_ways)
{
    struct slb_tls_ctx *cc = ctx_new(0, 12), *sc = ctx_new(1, 12);
    struct slb_tls_stats st = {0}, sst = {0};
    struct end c = {.t = slb_tls_client_new(cc, "127.0.0.1", NULL, &st)}, s = {.t = slb_tls_server_new(sc, &sst)};
    static uint8_t big[100000];

    ck_assert_ptr_nonnull(c.t);
    ck_assert_ptr_nonnull(s.t);
    /* written before the handshake: kept, sent once it is done */
    ck_assert_int_eq(slb_tls_write(s.t, (const uint8_t *)"early", 5), 0);
    ck_assert_int_eq(handshake(&c, &s), 1);
    ck_assert_uint_eq(st.handshakes, 1);
    ck_assert_uint_eq(sst.handshakes, 1);
    ck_assert_uint_eq(c.in.len, 5);
    ck_assert_int_eq(memcmp(c.in.base, "early", 5), 0);
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    slb_tls_set_output(c.t, &c.out);
    ck_assert_int_eq(slb_tls_write(c.t, big, sizeof(big)), 0);
    ck_assert_uint_gt(c.out.len, sizeof(big)); /* records: framing and tags on top */
    pass(&c, &s);
    ck_assert_uint_eq(s.in.len, sizeof(big));
    ck_assert_int_eq(memcmp(s.in.base, big, sizeof(big)), 0);
    ck_assert_uint_eq(st.handshake_failures + sst.handshake_failures, 0);
    /* an orderly end: close_notify, which the other end reads as EOF (not an error) */
    ck_assert_int_eq(slb_tls_close_notify(c.t, &c.out), 1);
    {
        uint8_t buf[64];
        slb_tls_feed(s.t, c.out.base, c.out.len);
        ck_assert_int_eq(slb_tls_read(s.t, buf, sizeof(buf)), SLB_TLS_EOF);
        ck_assert(!s.t->failed);
    }
    end_dispose(&c);
    end_dispose(&s);
    slb_tls_ctx_unref(cc);
    slb_tls_ctx_unref(sc);
}
END_TEST

START_TEST(wrong_name_fails_with_reason)
{
    struct slb_tls_ctx *cc = ctx_new(0, 12), *sc = ctx_new(1, 12);
    struct slb_tls_stats st = {0};
    struct end c = {.t = slb_tls_client_new(cc, "wrong.example.com", NULL, &st)},
               s = {.t = slb_tls_server_new(sc, NULL)};

    ck_assert_int_eq(handshake(&c, &s), 0);
    ck_assert(c.t->failed);
    ck_assert_msg(strstr(c.t->error, "certificate verify failed: hostname mismatch") != NULL, "%s", c.t->error);
    ck_assert_uint_eq(st.handshake_failures, 1);
    end_dispose(&c);
    end_dispose(&s);
    /* an IP the certificate does not name */
    c = (struct end){.t = slb_tls_client_new(cc, "127.0.0.2", NULL, &st)};
    s = (struct end){.t = slb_tls_server_new(sc, NULL)};
    ck_assert_int_eq(handshake(&c, &s), 0);
    ck_assert_msg(strstr(c.t->error, "IP address mismatch") != NULL, "%s", c.t->error);
    end_dispose(&c);
    end_dispose(&s);
    /* no name to check: no client end at all (never one that verifies only the chain) */
    ck_assert_ptr_null(slb_tls_client_new(cc, "", NULL, NULL));
    ck_assert_ptr_null(slb_tls_client_new(cc, NULL, NULL, NULL));
    slb_tls_ctx_unref(cc);
    slb_tls_ctx_unref(sc);
}
END_TEST

START_TEST(peer_without_alpn_h2)
{
    struct slb_tls_ctx *cc = ctx_new(0, 12), *sc = ctx_new(1, 12);
    struct end c = {.t = slb_tls_client_new(cc, "localhost", NULL, NULL)}, s = {0};

    SSL_CTX_set_alpn_select_cb(sc->ssl, NULL, NULL); /* a server that ignores ALPN */
    s.t = slb_tls_server_new(sc, NULL);
    ck_assert_int_eq(handshake(&c, &s), 0);
    ck_assert_msg(strstr(c.t->error, "did not agree to ALPN \"h2\" (it chose none)") != NULL, "%s", c.t->error);
    end_dispose(&c);
    end_dispose(&s);
    slb_tls_ctx_unref(cc);
    slb_tls_ctx_unref(sc);
}
END_TEST

START_TEST(session_resumed_by_the_next_connection)
{
    struct slb_tls_ctx *cc = ctx_new(0, 13), *sc = ctx_new(1, 13);
    struct slb_tls_stats st = {0};
    SSL_SESSION *slot = NULL;

    for (int i = 0; i < 3; i++) {
        struct end c = {.t = slb_tls_client_new(cc, "127.0.0.1", &slot, &st)}, s = {.t = slb_tls_server_new(sc, NULL)};
        ck_assert_int_eq(handshake(&c, &s), 1);
        /* TLS 1.3 tickets come after the handshake, with the first data */
        slb_tls_set_output(s.t, &s.out);
        ck_assert_int_eq(slb_tls_write(s.t, (const uint8_t *)"x", 1), 0);
        pass(&s, &c);
        ck_assert_ptr_nonnull(slot);
        end_dispose(&c); /* closed without a TLS error: the session stays good */
        end_dispose(&s);
    }
    ck_assert_uint_eq(st.handshakes, 3);
    ck_assert_uint_eq(st.resumed, 2);
    slb_tls_session_free(&slot);
    slb_tls_ctx_unref(cc);
    slb_tls_ctx_unref(sc);
}
END_TEST

START_TEST(bad_files_name_the_file_and_key)
{
    struct slb_tls_settings s = {.ca_file = "/nonexistent/ca.pem"};
    char err[256];
    const char *bad;

    ck_assert_ptr_null(slb_tls_ctx_new(&s, 0, err, sizeof(err), &bad));
    ck_assert_str_eq(bad, "ca_file");
    ck_assert_msg(strncmp(err, "/nonexistent/ca.pem: cannot load the CA certificates", 52) == 0, "%s", err);
    s.ca_file = NULL;
    s.cert_file = cert_path;
    s.key_file = cert_path; /* a certificate where the key should be */
    ck_assert_ptr_null(slb_tls_ctx_new(&s, 1, err, sizeof(err), &bad));
    ck_assert_str_eq(bad, "key_file");
    ck_assert_msg(strstr(err, "cannot load the private key") != NULL, "%s", err);
}
END_TEST

START_TEST(host_of_addresses)
{
    char b[64];

    ck_assert_str_eq(slb_tls_host_of("127.0.0.1:8443", b, sizeof(b)), "127.0.0.1");
    ck_assert_str_eq(slb_tls_host_of("[::1]:8443", b, sizeof(b)), "::1");
    ck_assert_str_eq(slb_tls_host_of("localhost:1", b, sizeof(b)), "localhost");
    ck_assert(slb_tls_is_ip_literal("::1"));
    ck_assert(slb_tls_is_ip_literal("10.0.0.1"));
    ck_assert(!slb_tls_is_ip_literal("localhost"));
}
END_TEST

Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("filter");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, handshake_and_data_both_ways);
    tcase_add_test(tc, wrong_name_fails_with_reason);
    tcase_add_test(tc, peer_without_alpn_h2);
    tcase_add_test(tc, session_resumed_by_the_next_connection);
    tcase_add_test(tc, bad_files_name_the_file_and_key);
    tcase_add_test(tc, host_of_addresses);
    suite_add_tcase(s, tc);
    return s;
}
