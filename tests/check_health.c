/* grpc.health.v1 client (lib/health.c) against real peers: our C test
 * backend (Watch, Check fallback, flips by signal, kill and restart) and a
 * python3-grpcio Health server that knows only some service names. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "backend.h"
#include "h2_conn.h"
#include "health.h"
#include "log.h"
#include "peer_harness.h"

static char backend_path[PATH_MAX];

static pid_t start_backend(int port_in, const char *opt1, const char *opt2, int *port)
{
    char portbuf[16];
    char *argv[8];
    int n = 0;

    snprintf(portbuf, sizeof(portbuf), "%d", port_in);
    argv[n++] = backend_path;
    argv[n++] = "--port";
    argv[n++] = portbuf;
    if (opt1 != NULL)
        argv[n++] = (char *)opt1;
    if (opt2 != NULL)
        argv[n++] = (char *)opt2;
    argv[n] = NULL;
    return peer_spawn(argv, getenv("HEALTH_TEST_VERBOSE") != NULL, port);
}

/* A grpc.health.v1 server in python3-grpcio that knows "" and "known.Svc" only:
 * Check answers NOT_FOUND and Watch SERVICE_UNKNOWN for other names. */
static const char py_server[] =
    "import sys, time, grpc\n"
    "from concurrent import futures\n"
    "known = {'', 'known.Svc'}\n"
    "def name(b):\n"
    "    return b[2:2 + b[1]].decode() if len(b) >= 2 else ''\n"
    "def check(req, ctx):\n"
    "    if name(req) not in known:\n"
    "        ctx.abort(grpc.StatusCode.NOT_FOUND, 'unknown service')\n"
    "    return b'\\x08\\x01'\n"
    "def watch(req, ctx):\n"
    "    yield b'\\x08\\x01' if name(req) in known else b'\\x08\\x03'\n"
    "    while ctx.is_active():\n"
    "        time.sleep(0.05)\n"
    "h = {'Check': grpc.unary_unary_rpc_method_handler(check)}\n"
    "if sys.argv[1] != 'check-only':\n"
    "    h['Watch'] = grpc.unary_stream_rpc_method_handler(watch)\n"
    "s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))\n"
    "s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler('grpc.health.v1.Health', h),))\n"
    "port = s.add_insecure_port('127.0.0.1:0')\n"
    "s.start()\n"
    "print('ready %d' % port, flush=True)\n"
    "s.wait_for_termination()\n";

static pid_t start_py(const char *mode, int *port)
{
    char *argv[] = {"/usr/bin/python3", "-c", (char *)py_server, (char *)mode, NULL};
    return peer_spawn(argv, getenv("HEALTH_TEST_VERBOSE") != NULL, port);
}

/* --- the loop side ---------------------------------------------------------------------------------------------- */

/* Owned by the running test. */
static struct {
    uv_loop_t loop;
    struct slb_conn_ctx io;
    uv_timer_t guard; /* wakes the loop while waiting */
    struct slb_health_check *hc;
    int status, ncb, stop_in_cb;
} t;

static void on_health(struct slb_health_check *hc, int status, void *user)
{
    ck_assert_ptr_eq(user, &t);
    ck_assert_ptr_eq(hc, t.hc);
    ck_assert_int_ne(status, t.status); /* only changes are reported */
    ck_assert_int_ne(status, SLB_HEALTH_UNKNOWN);
    t.status = status;
    t.ncb++;
    if (t.stop_in_cb) {
        slb_health_stop(hc);
        t.hc = NULL;
    }
}

static void setup(void)
{
    peer_backend_path(backend_path, sizeof(backend_path));
    atexit(peer_kill_all);
    if (getenv("HEALTH_TEST_VERBOSE") != NULL)
        slb_log_level = SLB_LOG_DEBUG;
    memset(&t, 0, sizeof(t));
    ck_assert_int_eq(uv_loop_init(&t.loop), 0);
    ck_assert_int_eq(slb_conn_ctx_init(&t.io, &t.loop), 0);
    uv_timer_init(&t.loop, &t.guard);
}

static void noop(uv_timer_t *h) {}

/* Runs the loop until the reported status is want (1) or ms passed (0). */
static int wait_status(int want, uint64_t ms)
{
    uint64_t end;

    uv_update_time(&t.loop);
    end = uv_now(&t.loop) + ms;
    uv_timer_start(&t.guard, noop, 10, 10);
    while (t.status != want && uv_now(&t.loop) < end)
        uv_run(&t.loop, UV_RUN_ONCE);
    uv_timer_stop(&t.guard);
    return t.status == want;
}

static void run_for(uint64_t ms)
{
    wait_status(-1, ms);
}

static void start_hc(int port, const char *service, uint32_t interval_ms, uint32_t timeout_ms)
{
    char addr[32];

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    t.hc = slb_health_start(&t.loop, &t.io, addr, service, interval_ms, timeout_ms, on_health, &t);
    ck_assert_ptr_nonnull(t.hc);
    ck_assert_int_eq(t.ncb, 0); /* never before start returns */
}

/* Stops the check, closes every handle: the loop must close cleanly. */
static void finish(void)
{
    int ncb = t.ncb;

    if (t.hc != NULL)
        slb_health_stop(t.hc);
    t.hc = NULL;
    uv_close((uv_handle_t *)&t.guard, NULL);
    slb_conn_ctx_close(&t.io, NULL);
    ck_assert_int_eq(uv_run(&t.loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(t.ncb, ncb); /* nothing after stop */
    ck_assert_int_eq(uv_loop_close(&t.loop), 0);
    peer_kill_all();
}

/* --- tests ------------------------------------------------------------------------------------------------------ */

START_TEST(test_bad_address)
{
    ck_assert_ptr_null(slb_health_start(&t.loop, &t.io, "not-an-address", "", 1000, 1000, on_health, &t));
    ck_assert_ptr_null(slb_health_start(&t.loop, &t.io, "127.0.0.1", "", 1000, 1000, on_health, &t));
    finish();
}
END_TEST

START_TEST(test_watch_flips)
{
    int port;
    pid_t pid = start_backend(0, NULL, NULL, &port);

    start_hc(port, "helloworld.Greeter", 1000, 1000);
    ck_assert(wait_status(SLB_HEALTH_SERVING, 3000));
    ck_assert_int_eq(t.ncb, 1);
    ck_assert_int_eq(slb_health_status(t.hc), SLB_HEALTH_SERVING);

    kill(pid, SIGUSR1);
    ck_assert_msg(wait_status(SLB_HEALTH_NOT_SERVING, 1000), "Watch did not see NOT_SERVING within 1 s");
    kill(pid, SIGUSR2);
    ck_assert_msg(wait_status(SLB_HEALTH_SERVING, 1000), "Watch did not see SERVING within 1 s");
    ck_assert_int_eq(t.ncb, 3);

    /* keepalive PINGs (interval 1 s) keep a quiet Watch up: no spurious change */
    run_for(2500);
    ck_assert_int_eq(t.ncb, 3);
    finish();
}
END_TEST

START_TEST(test_watch_not_serving_at_start)
{
    int port;

    start_backend(0, "--health", "NOT_SERVING", &port);
    start_hc(port, "", 1000, 1000);
    ck_assert(wait_status(SLB_HEALTH_NOT_SERVING, 3000));
    run_for(300);
    ck_assert_int_eq(t.ncb, 1);
    finish();
}
END_TEST

START_TEST(test_check_fallback)
{
    int port;
    const uint32_t interval = 300;
    pid_t pid = start_backend(0, "--health-unimplemented-watch", NULL, &port);

    start_hc(port, "helloworld.Greeter", interval, 1000);
    ck_assert(wait_status(SLB_HEALTH_SERVING, 3000));
    ck_assert_int_eq(t.ncb, 1);
    run_for(3 * interval); /* several polls, no change reported */
    ck_assert_int_eq(t.ncb, 1);

    kill(pid, SIGUSR1);
    ck_assert_msg(wait_status(SLB_HEALTH_NOT_SERVING, interval + 1000), "Check did not see NOT_SERVING");
    kill(pid, SIGUSR2);
    ck_assert_msg(wait_status(SLB_HEALTH_SERVING, interval + 1000), "Check did not see SERVING");
    ck_assert_int_eq(t.ncb, 3);
    finish();
}
END_TEST

/* gRFC A17: no health service at all (Watch and Check UNIMPLEMENTED) ->
 * UNIMPLEMENTED once, no more calls on that connection; a lost connection is
 * still noticed, and a restarted peer is asked again. */
START_TEST(test_no_health_service)
{
    int port, port2;
    const uint32_t interval = 200;
    pid_t pid = start_backend(0, "--no-health", NULL, &port);

    start_hc(port, "some.Svc", interval, 1000);
    ck_assert_msg(wait_status(SLB_HEALTH_UNIMPLEMENTED, 3000), "no UNIMPLEMENTED (status %d)", t.status);
    run_for(4 * interval); /* no more polls, no flapping */
    ck_assert_int_eq(t.ncb, 1);

    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    peer_forget(pid);
    ck_assert_msg(wait_status(SLB_HEALTH_NOT_SERVING, 1000), "lost backend not seen within 1 s");
    start_backend(port, "--no-health", NULL, &port2);
    ck_assert_int_eq(port2, port);
    ck_assert_msg(wait_status(SLB_HEALTH_UNIMPLEMENTED, interval + 1000), "restarted backend not asked again");
    ck_assert_int_eq(t.ncb, 3);
    finish();
}
END_TEST

START_TEST(test_killed_and_restarted)
{
    int port, port2;
    const uint32_t interval = 500;
    pid_t pid = start_backend(0, NULL, NULL, &port);

    start_hc(port, "", interval, 1000);
    ck_assert(wait_status(SLB_HEALTH_SERVING, 3000));

    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    peer_forget(pid);
    ck_assert_msg(wait_status(SLB_HEALTH_NOT_SERVING, 1000), "lost backend not seen within 1 s");
    run_for(1200); /* a few refused reconnects: still one report */
    ck_assert_int_eq(t.ncb, 2);

    start_backend(port, NULL, NULL, &port2);
    ck_assert_int_eq(port2, port);
    ck_assert_msg(wait_status(SLB_HEALTH_SERVING, interval + 1000), "restarted backend not seen");
    ck_assert_int_eq(t.ncb, 3);
    finish();
}
END_TEST

START_TEST(test_check_fallback_killed)
{
    int port;
    pid_t pid = start_backend(0, "--health-unimplemented-watch", NULL, &port);

    start_hc(port, "", 300, 500);
    ck_assert(wait_status(SLB_HEALTH_SERVING, 3000));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    peer_forget(pid);
    ck_assert(wait_status(SLB_HEALTH_NOT_SERVING, 1000));
    start_backend(port, "--health-unimplemented-watch", NULL, &port);
    ck_assert(wait_status(SLB_HEALTH_SERVING, 300 + 1000));
    finish();
}
END_TEST

START_TEST(test_refused)
{
    start_hc(peer_free_port(), "", 300, 500);
    ck_assert(wait_status(SLB_HEALTH_NOT_SERVING, 1000));
    run_for(1000); /* retries keep failing: reported once */
    ck_assert_int_eq(t.ncb, 1);
    finish();
}
END_TEST

/* A peer that completes the TCP handshake (listen backlog) but never answers. */
START_TEST(test_silent_peer_timeout)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    start_hc(ntohs(a.sin_port), "", 1000, 300);
    ck_assert_msg(wait_status(SLB_HEALTH_NOT_SERVING, 1000), "no timeout within 1 s");
    ck_assert_int_eq(t.ncb, 1);
    finish();
    close(fd);
}
END_TEST

START_TEST(test_unknown_service_watch)
{
    int port;

    start_py("watch", &port);
    start_hc(port, "no.such.Service", 1000, 2000);
    ck_assert(wait_status(SLB_HEALTH_SERVICE_UNKNOWN, 5000));
    ck_assert_int_eq(t.ncb, 1);
    slb_health_stop(t.hc);
    t.ncb = 0;
    t.status = SLB_HEALTH_UNKNOWN;
    start_hc(port, "known.Svc", 1000, 2000);
    ck_assert(wait_status(SLB_HEALTH_SERVING, 5000));
    finish();
}
END_TEST

START_TEST(test_unknown_service_check)
{
    int port;

    start_py("check-only", &port);
    start_hc(port, "no.such.Service", 300, 2000);
    ck_assert(wait_status(SLB_HEALTH_SERVICE_UNKNOWN, 5000));
    run_for(700);
    ck_assert_int_eq(t.ncb, 1);
    slb_health_stop(t.hc);
    t.ncb = 0;
    t.status = SLB_HEALTH_UNKNOWN;
    start_hc(port, "known.Svc", 300, 2000);
    ck_assert(wait_status(SLB_HEALTH_SERVING, 5000));
    finish();
}
END_TEST

START_TEST(test_stop_before_loop)
{
    start_hc(peer_free_port(), "", 1000, 1000);
    finish(); /* stop before the first attempt: no callback, nothing open */
    ck_assert_int_eq(t.ncb, 0);
}
END_TEST

START_TEST(test_stop_while_connecting)
{
    /* an address that does not answer (blackhole) or fails at once: stop either way */
    t.hc = slb_health_start(&t.loop, &t.io, "10.255.255.1:9", "", 1000, 5000, on_health, &t);
    ck_assert_ptr_nonnull(t.hc);
    uv_run(&t.loop, UV_RUN_NOWAIT); /* the connect is in flight */
    finish();
}
END_TEST

START_TEST(test_stop_while_connecting_local)
{
    int port;

    start_backend(0, NULL, NULL, &port);
    start_hc(port, "", 1000, 1000);
    uv_run(&t.loop, UV_RUN_NOWAIT); /* tick ran: connect requested, not completed */
    finish();
    ck_assert_int_eq(t.ncb, 0);
}
END_TEST

START_TEST(test_stop_while_streaming)
{
    int port;

    start_backend(0, NULL, NULL, &port);
    start_hc(port, "", 1000, 1000);
    ck_assert(wait_status(SLB_HEALTH_SERVING, 3000));
    finish();
    ck_assert_int_eq(t.ncb, 1);
}
END_TEST

START_TEST(test_stop_in_callback)
{
    int port;
    pid_t pid = start_backend(0, NULL, NULL, &port);

    start_hc(port, "", 1000, 1000);
    t.stop_in_cb = 1;
    ck_assert(wait_status(SLB_HEALTH_SERVING, 3000));
    ck_assert_ptr_null(t.hc);
    kill(pid, SIGUSR1);
    run_for(300);
    ck_assert_int_eq(t.ncb, 1);
    finish();
}
END_TEST

Suite *health_suite(void)
{
    Suite *s = suite_create("health");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_bad_address);
    tcase_add_test(tc, test_watch_flips);
    tcase_add_test(tc, test_watch_not_serving_at_start);
    tcase_add_test(tc, test_check_fallback);
    tcase_add_test(tc, test_no_health_service);
    tcase_add_test(tc, test_killed_and_restarted);
    tcase_add_test(tc, test_check_fallback_killed);
    tcase_add_test(tc, test_refused);
    tcase_add_test(tc, test_silent_peer_timeout);
    tcase_add_test(tc, test_unknown_service_watch);
    tcase_add_test(tc, test_unknown_service_check);
    tcase_add_test(tc, test_stop_before_loop);
    tcase_add_test(tc, test_stop_while_connecting);
    tcase_add_test(tc, test_stop_while_connecting_local);
    tcase_add_test(tc, test_stop_while_streaming);
    tcase_add_test(tc, test_stop_in_callback);
    suite_add_tcase(s, tc);
    return s;
}
