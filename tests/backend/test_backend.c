/*
 * test_backend: sidelb's C gRPC test server (h2c prior knowledge, libuv +
 * nghttp2 + protobuf-c). Serves sidelb.test.Echo and grpc.health.v1.Health.
 *
 *   test_backend --port N [--host IP] [--id NAME] [--health SERVING|NOT_SERVING]
 *                [--health-unimplemented-watch] [--no-health] [--max-concurrent-streams N]
 *                [--window N] [--conn-window N] [--goaway-after N]
 *                [--stats-file PATH] [--drain-ms N] [--verbose]
 *                [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]   (h2 over TLS, ALPN h2)
 *
 * --host takes an IPv4 or IPv6 literal (default 127.0.0.1), e.g. ::1 for a
 * second backend behind a name that resolves to both.
 * --port 0 picks a free port. Prints "ready <port>" on stdout once listening.
 *
 * Echo semantics (proto/echo.proto): reply payload = request payload, or
 * response_size filler bytes; delay_ms before replying (uv timer);
 * status_code/status_message end the call with that grpc-status (message
 * percent-encoded); backend_id = --id. ServerStream sends response_count
 * replies (seq 0..n-1; default 1); ClientStream replies once after the client
 * half-closes, shaped by the last request, with received = count; Bidi replies
 * to each request as it comes. Every request header named x-* comes back in
 * the response headers unchanged and as trailer x-trailer-<name>. Unknown
 * methods get grpc-status 12.
 *
 * Health: one status for every service name, --health at start, SIGUSR1 ->
 * NOT_SERVING, SIGUSR2 -> SERVING; Watch streams get an update on each change.
 * --no-health: no grpc.health.v1 service (Watch and Check answer UNIMPLEMENTED).
 *
 * --fail-status CODE: every Echo call ends with this grpc-status ("backend %s broken").
 * --fail-every N: with --fail-status, only every Nth Echo call does (the 1st, N+1th, ...;
 * 2 = half of the calls fail).
 * --extra-delay-ms N: every reply waits N ms more (a uniformly slow backend).
 * --pushback-ms VALUE: every error status (trailers-only) carries grpc-retry-pushback-ms: VALUE,
 * verbatim ("-1" or "x" ask the client not to retry, gRFC A6).
 * --goaway-after N: per connection, after N calls a graceful GOAWAY (last
 * stream id = the Nth call); the connection closes when its streams finish.
 *
 * Stats (--stats-file PATH): after every call ends, and on SIGHUP and SIGTERM,
 * PATH is replaced atomically by one JSON line:
 *   {"id":"b1","calls":N,"ok":N,"failed":N,"cancelled":N,"active":N,
 *    "connections":N,"by_method":{"Unary":N,...},"cancelled_by_method":{"Unary":N,...},
 *    "retried":N,"max_previous_attempts":N}
 * "retried" counts requests that carried grpc-previous-rpc-attempts (gRFC A6),
 * "max_previous_attempts" is the largest value seen.
 * A call is "cancelled" when its stream is reset (or its connection lost)
 * before the server sent its trailers; each such call also logs
 * "cancelled stream <id> <method>" on stderr.
 *
 * SIGTERM/SIGINT: write stats, stop listening, GOAWAY every connection, exit
 * when they are gone or after --drain-ms (default 200).
 */
#include "tb.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tb_server tb_srv = {
    .conns = SLB_LIST_INIT(tb_srv.conns),
    .watchers = SLB_LIST_INIT(tb_srv.watchers),
    .free_streams = SLB_LIST_INIT(tb_srv.free_streams),
};

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: test_backend --port N [--host IP] [--id NAME] [--health SERVING|NOT_SERVING] "
        "[--health-unimplemented-watch] [--no-health]\n"
        "       [--max-concurrent-streams N] [--window N] [--conn-window N] [--goaway-after N] [--extra-delay-ms N]\n"
        "       [--fail-status CODE] [--fail-every N] [--pushback-ms VALUE]\n"
        "       [--stats-file PATH] [--drain-ms N] [--verbose]\n"
        "       [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]\n");
}

void tb_stats_write(void)
{
    const char *path = tb_srv.opt.stats_file;
    char tmp[4096], line[2048];
    int n;

    if (!path)
        return;
    n = snprintf(line, sizeof(line),
                 "{\"id\":\"%s\",\"calls\":%llu,\"ok\":%llu,\"failed\":%llu,\"cancelled\":%llu,\"active\":%llu,"
                 "\"connections\":%llu,\"by_method\":{",
                 tb_srv.opt.id, (unsigned long long)tb_srv.calls, (unsigned long long)tb_srv.ok,
                 (unsigned long long)tb_srv.failed, (unsigned long long)tb_srv.cancelled,
                 (unsigned long long)tb_srv.active, (unsigned long long)tb_srv.connections);
    for (int pass = 0; pass < 2; pass++) {
        const uint64_t *v = pass ? tb_srv.cancelled_by_method : tb_srv.by_method;
        for (int m = 0; m < TB_M_COUNT; m++)
            n += snprintf(line + n, sizeof(line) - (size_t)n, "%s\"%s\":%llu", m ? "," : "", tb_method_names[m],
                          (unsigned long long)v[m]);
        n += snprintf(line + n, sizeof(line) - (size_t)n, pass ? "}" : "},\"cancelled_by_method\":{");
    }
    snprintf(line + n, sizeof(line) - (size_t)n, ",\"retried\":%llu,\"max_previous_attempts\":%llu}\n",
             (unsigned long long)tb_srv.retried, (unsigned long long)tb_srv.max_previous);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "test_backend: %s: %s\n", tmp, strerror(errno));
        return;
    }
    fputs(line, f);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        fprintf(stderr, "test_backend: %s: %s\n", path, strerror(errno));
}

void tb_conn_closed(void)
{
    if (tb_srv.draining && slb_list_empty(&tb_srv.conns)) {
        tb_stats_write();
        exit(0);
    }
}

static void on_drain_timeout(uv_timer_t *t)
{
    tb_stats_write();
    exit(0);
}

static void on_signal(uv_signal_t *h, int signum)
{
    switch (signum) {
    case SIGUSR1:
        tb_health_set(GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
        break;
    case SIGUSR2:
        tb_health_set(GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
        break;
    case SIGHUP:
        tb_stats_write();
        break;
    default: /* SIGTERM, SIGINT */
        tb_stats_write();
        if (tb_srv.draining)
            exit(0); /* second signal: now */
        tb_srv.draining = 1;
        uv_close((uv_handle_t *)&tb_srv.listener, NULL);
        if (slb_list_empty(&tb_srv.conns))
            exit(0);
        struct slb_list *it, *tmp;
        slb_list_foreach_safe(it, tmp, &tb_srv.conns)
        {
            struct tb_conn *c = slb_list_entry(it, struct tb_conn, link);
            tb_conn_goaway(c);
            tb_conn_flush(c);
        }
        uv_timer_init(tb_srv.loop, &tb_srv.drain_timer);
        uv_timer_start(&tb_srv.drain_timer, on_drain_timeout, tb_srv.opt.drain_ms, 0);
        break;
    }
}

static void on_connection(uv_stream_t *listener, int status)
{
    if (status < 0)
        return;
    tb_conn_accept(listener);
}

static int parse_uint(const char *opt, const char *s, unsigned long max, unsigned long *out)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || !*s || v > max) {
        fprintf(stderr, "test_backend: bad value for %s: '%s'\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct tb_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        unsigned long v = 0;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--health-unimplemented-watch") == 0) {
            o->health_unimplemented_watch = 1;
            continue;
        } else if (strcmp(a, "--no-health") == 0) {
            o->no_health = 1;
            continue;
        } else if (strcmp(a, "--verbose") == 0) {
            o->verbose = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "test_backend: %s needs a value\n", a);
            return -1;
        }
        const char *val = argv[++i];
        if (strcmp(a, "--port") == 0) {
            if (parse_uint(a, val, 65535, &v) < 0)
                return -1;
            o->port = (int)v;
        } else if (strcmp(a, "--host") == 0) {
            o->host = val;
        } else if (strcmp(a, "--id") == 0) {
            o->id = val;
        } else if (strcmp(a, "--health") == 0) {
            if (strcmp(val, "SERVING") == 0)
                o->health = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
            else if (strcmp(val, "NOT_SERVING") == 0)
                o->health = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
            else {
                fprintf(stderr, "test_backend: --health SERVING|NOT_SERVING\n");
                return -1;
            }
        } else if (strcmp(a, "--max-concurrent-streams") == 0) {
            if (parse_uint(a, val, UINT32_MAX, &v) < 0)
                return -1;
            o->max_concurrent_streams = (uint32_t)v;
        } else if (strcmp(a, "--window") == 0) {
            if (parse_uint(a, val, NGHTTP2_MAX_WINDOW_SIZE, &v) < 0)
                return -1;
            o->window = (uint32_t)v;
        } else if (strcmp(a, "--conn-window") == 0) {
            if (parse_uint(a, val, NGHTTP2_MAX_WINDOW_SIZE, &v) < 0)
                return -1;
            o->conn_window = (uint32_t)v;
        } else if (strcmp(a, "--goaway-after") == 0) {
            if (parse_uint(a, val, UINT32_MAX, &v) < 0)
                return -1;
            o->goaway_after = (unsigned)v;
        } else if (strcmp(a, "--fail-status") == 0) {
            if (parse_uint(a, val, 16, &v) < 0)
                return -1;
            o->fail_status = (int)v;
        } else if (strcmp(a, "--fail-every") == 0) {
            if (parse_uint(a, val, 1000000, &v) < 0 || v == 0)
                return -1;
            o->fail_every = (unsigned)v;
        } else if (strcmp(a, "--pushback-ms") == 0) {
            o->pushback_ms = val;
        } else if (strcmp(a, "--extra-delay-ms") == 0) {
            if (parse_uint(a, val, 3600000, &v) < 0)
                return -1;
            o->extra_delay_ms = (unsigned)v;
        } else if (strcmp(a, "--stats-file") == 0) {
            o->stats_file = val;
        } else if (strcmp(a, "--tls-cert") == 0) {
            o->tls_cert = val;
        } else if (strcmp(a, "--tls-key") == 0) {
            o->tls_key = val;
        } else if (strcmp(a, "--tls-client-ca") == 0) {
            o->tls_client_ca = val;
        } else if (strcmp(a, "--drain-ms") == 0) {
            if (parse_uint(a, val, 3600000, &v) < 0)
                return -1;
            o->drain_ms = (unsigned)v;
        } else {
            fprintf(stderr, "test_backend: unknown option %s\n", a);
            usage(stderr);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct tb_opts *o = &tb_srv.opt;
    struct sockaddr_storage addr;
    int rv;

    o->port = -1;
    o->id = "test_backend";
    o->max_concurrent_streams = 1000;
    o->window = 1024 * 1024;
    o->conn_window = 16 * 1024 * 1024;
    o->health = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    o->drain_ms = 200;
    if (parse_args(argc, argv, o) < 0)
        return 2;
    if (o->port < 0) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    tb_srv.loop = uv_default_loop();
    if (tb_h2_callbacks_init() < 0) {
        fprintf(stderr, "test_backend: out of memory\n");
        return 1;
    }
    if (o->tls_cert != NULL || o->tls_key != NULL) {
        struct slb_tls_settings ts = {
            .cert_file = o->tls_cert, .key_file = o->tls_key, .client_ca_file = o->tls_client_ca};
        char err[256];
        const char *bad;
        if (o->tls_cert == NULL || o->tls_key == NULL) {
            fprintf(stderr, "test_backend: --tls-cert and --tls-key go together\n");
            return 2;
        }
        if ((tb_srv.tls = slb_tls_ctx_new(&ts, 1, err, sizeof(err), &bad)) == NULL) {
            fprintf(stderr, "test_backend: --%s: %s\n", bad, err);
            return 1;
        }
    }
    if (o->host == NULL)
        o->host = "127.0.0.1";
    if (uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&addr) != 0) {
        fprintf(stderr, "test_backend: --host %s is not an IP address\n", o->host);
        return 2;
    }
    uv_tcp_init(tb_srv.loop, &tb_srv.listener);
    if ((rv = uv_tcp_bind(&tb_srv.listener, (const struct sockaddr *)&addr, 0)) < 0 ||
        (rv = uv_listen((uv_stream_t *)&tb_srv.listener, 1024, on_connection)) < 0) {
        fprintf(stderr, "test_backend: listen %s port %d: %s\n", o->host, o->port, uv_strerror(rv));
        return 1;
    }
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&tb_srv.listener, (struct sockaddr *)&bound, &blen);
    int port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                 : ((struct sockaddr_in *)&bound)->sin_port);

    uv_signal_t *sigs[] = {&tb_srv.sig_term, &tb_srv.sig_int, &tb_srv.sig_hup, &tb_srv.sig_usr1, &tb_srv.sig_usr2};
    int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof(signums) / sizeof(signums[0]); i++) {
        uv_signal_init(tb_srv.loop, sigs[i]);
        uv_signal_start(sigs[i], on_signal, signums[i]);
        uv_unref((uv_handle_t *)sigs[i]);
    }
    tb_stats_write();
    printf("ready %d\n", port);
    fflush(stdout);
    uv_run(tb_srv.loop, UV_RUN_DEFAULT);
    return 0;
}
