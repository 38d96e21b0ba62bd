/*
 * libFuzzer target: arbitrary HTTP/2 client bytes against a real sidelb
 * downstream listener, over loopback TCP.
 *
 * One-time setup (first input): a uv loop running slb_server_start() with
 *   - listener 127.0.0.1:P, route sidelb.test.Echo -> cluster "hole",
 *     everything else -> cluster "closed" (default_cluster);
 *   - "closed": a static backend on a port nobody listens on
 *     (connect refused -> retries -> UNAVAILABLE), wait_for_ready_ms 0;
 *   - "hole": a static backend that is an in-loop TCP listener which
 *     answers each connection with an empty SETTINGS and a large
 *     connection WINDOW_UPDATE, then discards whatever it reads, so
 *     requests are forwarded upstream and stay open until cancelled.
 * Each input: a fresh TCP connection; the HTTP/2 client preface + the input
 * are written; the loop runs until sidelb has read everything (the
 * server-side socket's FIONREAD is 0) or closed the connection; then the
 * client closes and the loop runs until sidelb has freed the connection.
 * Properties: no crash, no sanitizer report, no leak (everything sidelb
 * keeps across inputs is reachable from the static server), and the
 * downstream connection is gone within 2 s of the client closing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "h2_downstream.h"
#include "log.h"
#include "server.h"

static uv_loop_t loop;
static struct slb_server srv;
static struct slb_config *cfg;
static uv_tcp_t hole;
static int listen_port;
static int ready;

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* ---- the black-hole backend ---- */

static void hole_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char rb[65536];
    buf->base = rb;
    buf->len = sizeof(rb);
}

static void hole_closed(uv_handle_t *h)
{
    free(h);
}

static void hole_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0)
        uv_close((uv_handle_t *)s, hole_closed);
}

static void hole_conn(uv_stream_t *server, int status)
{
    /* empty SETTINGS, SETTINGS ACK, WINDOW_UPDATE(0, 2^30) */
    static const char hello[] = {0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0,    4, 1, 0, 0,
                                 0, 0, 0, 0, 4, 8, 0, 0, 0, 0, 0, 0x40, 0, 0, 0};
    uv_tcp_t *c;
    uv_buf_t b = uv_buf_init((char *)hello, sizeof(hello));

    if (status < 0 || (c = malloc(sizeof(*c))) == NULL)
        return;
    uv_tcp_init(&loop, c);
    if (uv_accept(server, (uv_stream_t *)c) != 0) {
        uv_close((uv_handle_t *)c, hole_closed);
        return;
    }
    uv_try_write((uv_stream_t *)c, &b, 1);
    uv_read_start((uv_stream_t *)c, hole_alloc, hole_read);
}

/* ---- setup ---- */

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        abort();
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void setup(void)
{
    struct sockaddr_in sa;
    int salen = sizeof(sa), closed_port, hole_port;
    char json[2048], err[SLB_CONFIG_ERRLEN];

    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &hole);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    if (uv_tcp_bind(&hole, (struct sockaddr *)&sa, 0) != 0 || uv_listen((uv_stream_t *)&hole, 128, hole_conn) != 0 ||
        uv_tcp_getsockname(&hole, (struct sockaddr *)&sa, &salen) != 0)
        abort();
    hole_port = ntohs(sa.sin_port);
    closed_port = free_port();
    listen_port = free_port();
    snprintf(json, sizeof(json),
             "{\"log_level\": \"error\",\n"
             " \"listeners\": [{\"address\": \"127.0.0.1:%d\", \"default_cluster\": \"closed\",\n"
             "   \"routes\": [{\"service\": \"sidelb.test.Echo\", \"cluster\": \"hole\"}],\n"
             "   \"max_concurrent_streams\": 100}],\n"
             " \"clusters\": [\n"
             "  {\"name\": \"closed\", \"discovery\": {\"static\": [\"127.0.0.1:%d\"]}, \"wait_for_ready_ms\": 0,\n"
             "   \"backoff\": {\"initial_ms\": 1, \"max_ms\": 5},\n"
             "   \"service_config\": {\"methodConfig\": [{\"name\": [{}], \"retryPolicy\": {\"maxAttempts\": 3,\n"
             "     \"initialBackoff\": \"0.001s\", \"maxBackoff\": \"0.002s\", \"backoffMultiplier\": 2,\n"
             "     \"retryableStatusCodes\": [\"UNAVAILABLE\"]}}]}},\n"
             "  {\"name\": \"hole\", \"discovery\": {\"static\": [\"127.0.0.1:%d\"]}, \"wait_for_ready_ms\": 0,\n"
             "   \"max_connections_per_backend\": 1,\n"
             "   \"policy\": {\"ring_hash\": {\"hash_header\": \"x-user\"}}}]}\n",
             listen_port, closed_port, hole_port);
    if ((cfg = slb_config_load_string(json, "fuzz_downstream.json", err, sizeof(err))) == NULL) {
        fprintf(stderr, "fuzz_downstream: config: %s\n", err);
        abort();
    }
    /* FUZZ_LOG=debug|info|...: sidelb's log while reproducing a crash */
    slb_log_level = getenv("FUZZ_LOG") != NULL ? slb_log_parse_level(getenv("FUZZ_LOG")) : SLB_LOG_ERROR + 1;
    if (slb_server_start(&srv, &loop, cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_downstream: server: %s\n", err);
        abort();
    }
    ready = 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    slb_log_level = SLB_LOG_ERROR + 1;
    return 0;
}

/* ---- one input ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void drain(int fd)
{
    char buf[65536];
    while (fd >= 0 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    uint64_t accepted_before, deadline, read_deadline = now_ms() + 5;
    size_t total = sizeof(preface) - 1 + size, off = 0;
    uint8_t *msg;
    int fd, quiet = 0, one = 1;

    if (!ready)
        setup();
    msg = malloc(total);
    memcpy(msg, preface, sizeof(preface) - 1);
    memcpy(msg + sizeof(preface) - 1, data, size);
    sa.sin_port = htons((uint16_t)listen_port);
    /* The client closes with RST (SO_LINGER 0): a FIN close leaves each
     * client port in TIME_WAIT, and ~1000 connections/s exhaust the
     * ephemeral ports within a minute (connect: EADDRNOTAVAIL). */
    if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0}, sizeof(struct linger)) != 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "fuzz_downstream: harness: connect: %s\n", strerror(errno));
        abort();
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, O_NONBLOCK);
    accepted_before = srv.ctx.stats.downstream_conns_total;

    /* Phase A: write everything; run until sidelb has read it all (or closed). */
    deadline = now_ms() + 2000;
    while (now_ms() < deadline) {
        if (off < total) {
            ssize_t n = send(fd, msg + off, total - off, MSG_NOSIGNAL);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                off = total; /* peer gone */
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        drain(fd);
        if (srv.ctx.stats.downstream_conns_total == accepted_before)
            continue;
        if (slb_list_empty(&srv.ctx.downstreams))
            break; /* sidelb closed it */
        if (off == total) {
            int pending = 0;
            uv_os_fd_t sfd;
            struct slb_downstream *dc = slb_list_first(&srv.ctx.downstreams, struct slb_downstream, ctx_link);
            if (uv_fileno((uv_handle_t *)&dc->conn.tcp, &sfd) == 0)
                ioctl(sfd, FIONREAD, &pending);
            /* all read: give calls in flight up to 5 ms to finish (a
             * refused backend's retries, the error reply), not hole calls */
            if (pending == 0 && ++quiet >= 4 && (dc->n_streams == 0 || now_ms() > read_deadline))
                break;
            if (pending != 0)
                read_deadline = now_ms() + 5;
        }
    }
    free(msg);

    /* Phase B: the client goes away; sidelb must free the connection. */
    close(fd);
    deadline = now_ms() + 2000;
    while (!slb_list_empty(&srv.ctx.downstreams) || srv.ctx.stats.downstream_conns_total == accepted_before) {
        if (now_ms() > deadline) {
            fprintf(stderr,
                    "fuzz_downstream: downstream connection still open 2 s after the client closed "
                    "(accepted: %d)\n",
                    srv.ctx.stats.downstream_conns_total != accepted_before);
            abort();
        }
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    /* let pending closes, RST_STREAMs to the backend and timers run a little */
    for (int i = 0; i < 3; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    return 0;
}
