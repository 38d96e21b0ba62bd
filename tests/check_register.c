/*
 * lib/register.c against a real etcd-server and real local services
 * (build/test_backend): key and lease, shutdown, etcd restart, lease lost,
 * key deleted or overwritten by hand, health gating, independence.
 * REGISTER_TEST_VERBOSE=1 shows the registrar's log.
 */
#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base64.h"
#include "etcd.h"
#include "etcd_harness.h"
#include "h2_conn.h"
#include "log.h"
#include "register.h"
#include "peer_harness.h"

#define TTL     2
#define TICK_MS (TTL * 1000 / 3)

static uv_loop_t loop;
static struct slb_conn_ctx io;
static struct etcd_h H;
static struct slb_etcd *etcd;
static struct slb_registrar *reg;
static int shutdown_done;

/* ---- local services (test_backend), killed by PID at exit even on failure ---- */

static char backend_path[PATH_MAX];

/* Starts test_backend --port 0 --health SERVING; returns its PID, port in *port. */
static pid_t start_backend(int *port)
{
    char *argv[] = {backend_path, "--port", "0", "--health", "SERVING", NULL};
    return peer_spawn(argv, 0, port);
}

/* ---- etcd seen from the test (blocking, through the harness) ---- */

/* 1 = present (value and lease filled), 0 = absent. */
static int key_get(const char *key, char *value, size_t vlen, long long *lease)
{
    char k[512], body[600], out[4096];
    json_t *root, *kv;
    const char *v64, *ls;
    int present = 0;

    slb_base64_encode(key, strlen(key), k);
    snprintf(body, sizeof(body), "{\"key\":\"%s\"}", k);
    ck_assert_int_eq(eh_post(H.url[0], "/v3/kv/range", body, out, sizeof(out)), 200);
    root = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(root);
    kv = json_array_get(json_object_get(root, "kvs"), 0);
    if (kv != NULL) {
        unsigned char dec[1024];
        long n;
        v64 = json_string_value(json_object_get(kv, "value"));
        ls = json_string_value(json_object_get(kv, "lease"));
        n = v64 ? slb_base64_decode(v64, strlen(v64), dec) : 0;
        ck_assert_int_ge(n, 0);
        if (value != NULL)
            snprintf(value, vlen, "%.*s", (int)n, (char *)dec);
        if (lease != NULL)
            *lease = ls ? atoll(ls) : 0;
        present = 1;
    }
    json_decref(root);
    return present;
}

/* The lease's granted TTL (-1 when the lease is unknown). */
static long long lease_granted_ttl(long long lease)
{
    char body[128], out[1024];
    json_t *root;
    long long ttl = -1;
    const char *s;

    snprintf(body, sizeof(body), "{\"ID\":\"%lld\"}", lease);
    ck_assert_int_eq(eh_post(H.url[0], "/v3/lease/timetolive", body, out, sizeof(out)), 200);
    root = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(root);
    if ((s = json_string_value(json_object_get(root, "grantedTTL"))) != NULL)
        ttl = atoll(s);
    json_decref(root);
    return ttl;
}

/* Runs the loop until the key is present (want 1, with value when given) or absent (want 0). Returns ms waited. */
static long wait_key(const char *key, int want, const char *value, int timeout_ms)
{
    uint64_t start = slb_now_ms(), deadline = start + (uint64_t)timeout_ms;
    char v[512];

    for (;;) {
        int present = key_get(key, v, sizeof(v), NULL);
        if (present == want && (!want || value == NULL || strcmp(v, value) == 0))
            return (long)(slb_now_ms() - start);
        ck_assert_msg(slb_now_ms() < deadline, "key %s: still %s after %d ms (value %s)", key,
                      present ? "present" : "absent", timeout_ms, present ? v : "-");
        eh_run_for(&loop, 20);
    }
}

/* Runs the loop until registration i is in state s. */
static void wait_state(size_t i, int s, int timeout_ms)
{
    uint64_t deadline = slb_now_ms() + (uint64_t)timeout_ms;
    while (slb_registrar_state(reg, i) != s) {
        ck_assert_msg(slb_now_ms() < deadline, "registration %zu: %s, not %s after %d ms", i,
                      slb_registrar_state_name(slb_registrar_state(reg, i)), slb_registrar_state_name(s), timeout_ms);
        eh_run_for(&loop, 10);
    }
}

/*
 * Checks that value ends with ,"registered_at_ms":T} with T between since and
 * now (wall clock), cuts that field off in place and returns value.
 */
static const char *strip_registered_at(char *value, uint64_t since)
{
    char *f = strstr(value, ",\"registered_at_ms\":");
    ck_assert_msg(f != NULL, "no registered_at_ms in %s", value);
    unsigned long long t = strtoull(f + strlen(",\"registered_at_ms\":"), NULL, 10);
    ck_assert_msg(t >= since && t <= slb_wall_ms(), "registered_at_ms %llu not in [%llu, now]", t,
                  (unsigned long long)since);
    strcpy(f, "}");
    return value;
}

/* The registered_at_ms of key's value; 0 when the key or the field is absent. */
static uint64_t key_registered_at(const char *key)
{
    char v[512];
    const char *f;
    if (key_get(key, v, sizeof(v), NULL) != 1 || (f = strstr(v, "\"registered_at_ms\":")) == NULL)
        return 0;
    return strtoull(f + strlen("\"registered_at_ms\":"), NULL, 10);
}

/* ---- fixture ---- */

static void setup(void)
{
    const char *eps[1];
    struct slb_config_etcd cfg = {.n_endpoints = 1, .dial_timeout_ms = 500, .request_timeout_ms = 1000};

    peer_backend_path(backend_path, sizeof(backend_path));
    atexit(peer_kill_all);
    if (getenv("REGISTER_TEST_VERBOSE") != NULL)
        slb_log_level = SLB_LOG_DEBUG;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(slb_conn_ctx_init(&io, &loop), 0);
    eh_start(&H, 1);
    eps[0] = H.url[0];
    cfg.endpoints = (char **)eps;
    ck_assert_int_eq(slb_etcd_new(&loop, &cfg, &etcd), 0);
    reg = NULL;
    shutdown_done = 0;
}

static void on_shutdown(void *user)
{
    shutdown_done++;
}

/* Shuts down (bounded), frees everything and checks the loop closes clean. */
static void finish(void)
{
    if (reg != NULL) {
        if (!shutdown_done) {
            slb_registrar_shutdown(reg, on_shutdown, NULL);
            ck_assert_int_eq(shutdown_done, 0);
            ck_assert(eh_run_until(&loop, &shutdown_done, SLB_REGISTRAR_SHUTDOWN_MS + 500));
        }
        slb_registrar_free(reg);
        reg = NULL;
        eh_run_for(&loop, 200); /* outstanding answers come back before the client goes */
    }
    slb_etcd_free(etcd);
    slb_conn_ctx_close(&io, NULL);
    eh_loop_finish(&loop);
    peer_kill_all();
    eh_destroy(&H);
}

static struct slb_config_register entry(const char *prefix, const char *addr)
{
    struct slb_config_register c = {.prefix = (char *)prefix, .address = (char *)addr, .ttl_s = TTL, .weight = 1};
    return c;
}

static void gate(struct slb_config_register *c, const char *health_addr)
{
    c->health_check.enabled = 1;
    c->health_check.service = "";
    c->health_check.interval_ms = 300;
    c->health_check.timeout_ms = 300;
    c->health_address = (char *)health_addr;
}

/* ---- tests ---- */

START_TEST(test_register_and_shutdown)
{
    struct slb_config_register c[2] = {entry("/svc/a/", "10.0.0.5:8000"), entry("/svc/b/", "10.0.0.6:9000")};
    char v[256];
    long long lease;
    uint64_t t0;

    c[1].format = SLB_REGISTER_JSON;
    c[1].weight = 7;
    c[1].zone = "z1";
    c[1].metadata_json = "{\"v\":2}";
    setup();
    uint64_t wall0 = slb_wall_ms();
    reg = slb_registrar_new(&loop, etcd, &io, c, 2);
    ck_assert_ptr_nonnull(reg);
    ck_assert_uint_eq(slb_registrar_count(reg), 2);
    wait_key("/svc/a/10.0.0.5:8000", 1, "10.0.0.5:8000", 3000);
    wait_key("/svc/b/10.0.0.6:9000", 1, NULL, 3000);
    wait_state(0, SLB_REGISTRAR_REGISTERED, 1000);
    wait_state(1, SLB_REGISTRAR_REGISTERED, 1000);

    ck_assert_int_eq(key_get("/svc/a/10.0.0.5:8000", v, sizeof(v), &lease), 1);
    ck_assert(lease != 0 && lease == slb_registrar_lease(reg, 0));
    ck_assert_int_eq(lease_granted_ttl(lease), TTL);
    ck_assert_int_eq(key_get("/svc/b/10.0.0.6:9000", v, sizeof(v), &lease), 1);
    ck_assert_str_eq(strip_registered_at(v, wall0),
                     "{\"addr\":\"10.0.0.6:9000\",\"weight\":7,\"zone\":\"z1\",\"metadata\":{\"v\":2}}");
    ck_assert(lease == slb_registrar_lease(reg, 1));

    /* keepalive holds it well past the TTL */
    eh_run_for(&loop, TTL * 1000 + 1000);
    ck_assert_int_eq(key_get("/svc/a/10.0.0.5:8000", NULL, 0, &lease), 1);
    ck_assert(lease == slb_registrar_lease(reg, 0));

    /* shutdown: keys gone at once, cb from the loop */
    t0 = slb_now_ms();
    slb_registrar_shutdown(reg, on_shutdown, NULL);
    ck_assert_int_eq(shutdown_done, 0);
    ck_assert(eh_run_until(&loop, &shutdown_done, 2000));
    ck_assert_uint_lt(slb_now_ms() - t0, 1000);
    ck_assert_int_eq(key_get("/svc/a/10.0.0.5:8000", NULL, 0, NULL), 0);
    ck_assert_int_eq(key_get("/svc/b/10.0.0.6:9000", NULL, 0, NULL), 0);
    ck_assert_int_eq(slb_registrar_state(reg, 0), SLB_REGISTRAR_STOPPED);
    finish();
}
END_TEST

START_TEST(test_etcd_naming_format)
{
    struct slb_config_register c = entry("/naming/svc", "127.0.0.1:5000");
    char v[256];

    c.prefix = "/naming/svc/";
    c.format = SLB_REGISTER_ETCD_NAMING;
    c.metadata_json = "{\"k\":\"x\"}";
    setup();
    uint64_t wall0 = slb_wall_ms();
    reg = slb_registrar_new(&loop, etcd, &io, &c, 1);
    ck_assert_ptr_nonnull(reg);
    wait_key("/naming/svc/127.0.0.1:5000", 1, NULL, 3000);
    ck_assert_int_eq(key_get("/naming/svc/127.0.0.1:5000", v, sizeof(v), NULL), 1);
    ck_assert_str_eq(strip_registered_at(v, wall0),
                     "{\"Op\":0,\"Addr\":\"127.0.0.1:5000\",\"Metadata\":{\"k\":\"x\"}}");
    finish();
}
END_TEST

START_TEST(test_repair_deleted_overwritten_revoked)
{
    struct slb_config_register c = entry("/svc/r/", "10.0.0.7:1");
    const char *key = "/svc/r/10.0.0.7:1";
    long long lease, lease2;
    char body[128];
    long ms;

    setup();
    reg = slb_registrar_new(&loop, etcd, &io, &c, 1);
    ck_assert_ptr_nonnull(reg);
    wait_key(key, 1, "10.0.0.7:1", 3000);
    wait_state(0, SLB_REGISTRAR_REGISTERED, 1000);

    /* deleted by hand -> restored within a tick (+ slack) */
    eh_del(&H, 0, key);
    ms = wait_key(key, 1, "10.0.0.7:1", TICK_MS + 1000);
    ck_assert_int_eq(key_get(key, NULL, 0, &lease), 1);
    ck_assert(lease == slb_registrar_lease(reg, 0));

    /* overwritten by hand (no lease) -> restored with our lease */
    eh_put(&H, 0, key, "bogus");
    ms = wait_key(key, 1, "10.0.0.7:1", TICK_MS + 1000);
    ck_assert_int_eq(key_get(key, NULL, 0, &lease2), 1);
    ck_assert(lease2 == slb_registrar_lease(reg, 0) && lease2 != 0);
    /* the overwrite kept the value but dropped the lease: must be re-bound too */
    eh_put(&H, 0, key, "10.0.0.7:1");
    eh_run_for(&loop, TICK_MS + 500);
    ck_assert_int_eq(key_get(key, NULL, 0, &lease2), 1);
    ck_assert(lease2 == slb_registrar_lease(reg, 0) && lease2 != 0);

    /* the lease revoked by hand (as if it expired): key gone, then back with a new lease */
    snprintf(body, sizeof(body), "{\"ID\":\"%lld\"}", lease2);
    ck_assert_int_eq(eh_post(H.url[0], "/v3/lease/revoke", body, NULL, 0), 200);
    ck_assert_int_eq(key_get(key, NULL, 0, NULL), 0);
    ms = wait_key(key, 1, "10.0.0.7:1", TICK_MS + 1000);
    ck_assert_int_eq(key_get(key, NULL, 0, &lease), 1);
    ck_assert(lease != lease2 && lease == slb_registrar_lease(reg, 0));
    ck_assert_int_eq(lease_granted_ttl(lease), TTL);
    (void)ms;
    finish();
}
END_TEST

START_TEST(test_etcd_restart)
{
    struct slb_config_register c = entry("/svc/e/", "10.0.0.8:2");
    const char *key = "/svc/e/10.0.0.8:2";
    long long lease;
    uint64_t t0;

    setup();
    reg = slb_registrar_new(&loop, etcd, &io, &c, 1);
    ck_assert_ptr_nonnull(reg);
    wait_key(key, 1, NULL, 3000);
    wait_state(0, SLB_REGISTRAR_REGISTERED, 1000);

    eh_stop_member(&H, 0, SIGKILL);
    eh_run_for(&loop, 2 * TTL * 1000);
    ck_assert_int_eq(slb_registrar_state(reg, 0) == SLB_REGISTRAR_REGISTERED, 0);
    eh_restart_member(&H, 0);
    t0 = slb_now_ms();
    wait_state(0, SLB_REGISTRAR_REGISTERED, TICK_MS + 1000);
    ck_assert_int_eq(key_get(key, NULL, 0, &lease), 1);
    ck_assert(lease == slb_registrar_lease(reg, 0));
    ck_assert_uint_le(slb_now_ms() - t0, TICK_MS + 1000);
    /* and it holds: bound to a live lease, not to one restored from before the restart */
    eh_run_for(&loop, TTL * 1000 + 500);
    ck_assert_int_eq(key_get(key, NULL, 0, &lease), 1);
    ck_assert(lease == slb_registrar_lease(reg, 0));
    finish();
}
END_TEST

START_TEST(test_shutdown_bounded_when_etcd_down)
{
    struct slb_config_register c = entry("/svc/d/", "10.0.0.9:3");
    uint64_t t0;

    setup();
    reg = slb_registrar_new(&loop, etcd, &io, &c, 1);
    ck_assert_ptr_nonnull(reg);
    wait_state(0, SLB_REGISTRAR_REGISTERED, 3000);
    kill(H.pid[0], SIGSTOP); /* hangs: requests time out instead of failing fast */
    t0 = slb_now_ms();
    slb_registrar_shutdown(reg, on_shutdown, NULL);
    ck_assert(eh_run_until(&loop, &shutdown_done, 3000));
    ck_assert_uint_le(slb_now_ms() - t0, 2100);
    slb_registrar_free(reg); /* answers still outstanding: the registrar goes when they come back */
    reg = NULL;
    kill(H.pid[0], SIGCONT);
    eh_run_for(&loop, 1500);
    finish();
}
END_TEST

START_TEST(test_health_gating_two_independent)
{
    struct slb_config_register c[2] = {entry("/svc/h/", "10.1.0.1:80"), entry("/svc/h/", "10.1.0.2:80")};
    const char *ka = "/svc/h/10.1.0.1:80", *kb = "/svc/h/10.1.0.2:80";
    char ha[32], hb[32];
    int pa, pb;
    pid_t a, b;
    long long lease_b, lb2;

    setup();
    a = start_backend(&pa);
    b = start_backend(&pb);
    snprintf(ha, sizeof(ha), "127.0.0.1:%d", pa);
    snprintf(hb, sizeof(hb), "127.0.0.1:%d", pb);
    gate(&c[0], ha);
    gate(&c[1], hb);
    reg = slb_registrar_new(&loop, etcd, &io, c, 2);
    ck_assert_ptr_nonnull(reg);
    wait_key(ka, 1, "10.1.0.1:80", 3000);
    wait_key(kb, 1, "10.1.0.2:80", 3000);
    ck_assert_int_eq(key_get(kb, NULL, 0, &lease_b), 1);

    /* a turns NOT_SERVING: its key goes within one check interval (+ slack); b stays */
    kill(a, SIGUSR1);
    wait_key(ka, 0, NULL, 300 + 700);
    ck_assert_int_eq(slb_registrar_state(reg, 0), SLB_REGISTRAR_UNHEALTHY);
    ck_assert_int_eq(slb_registrar_lease(reg, 0), 0);
    eh_run_for(&loop, TTL * 1000);
    ck_assert_int_eq(key_get(ka, NULL, 0, NULL), 0);
    ck_assert_int_eq(key_get(kb, NULL, 0, &lb2), 1);
    ck_assert(lb2 == lease_b);
    ck_assert_int_eq(slb_registrar_state(reg, 1), SLB_REGISTRAR_REGISTERED);

    /* SERVING again: back */
    kill(a, SIGUSR2);
    wait_key(ka, 1, "10.1.0.1:80", 300 + 1000);

    /* b's service dies (unreachable): its key goes, a stays */
    kill(b, SIGKILL);
    wait_key(kb, 0, NULL, 300 + 1000);
    ck_assert_int_eq(key_get(ka, NULL, 0, NULL), 1);
    ck_assert_int_eq(slb_registrar_state(reg, 0), SLB_REGISTRAR_REGISTERED);
    finish();
}
END_TEST

START_TEST(test_not_serving_from_start)
{
    struct slb_config_register c = entry("/svc/n/", "10.2.0.1:80");
    char ha[32];
    int pa;
    pid_t a;

    setup();
    a = start_backend(&pa);
    kill(a, SIGUSR1);
    usleep(100 * 1000);
    snprintf(ha, sizeof(ha), "127.0.0.1:%d", pa);
    gate(&c, ha);
    reg = slb_registrar_new(&loop, etcd, &io, &c, 1);
    ck_assert_ptr_nonnull(reg);
    ck_assert_int_eq(slb_registrar_state(reg, 0), SLB_REGISTRAR_IDLE);
    wait_state(0, SLB_REGISTRAR_UNHEALTHY, 2000);
    eh_run_for(&loop, 500);
    ck_assert_int_eq(key_get("/svc/n/10.2.0.1:80", NULL, 0, NULL), 0);
    kill(a, SIGUSR2);
    wait_key("/svc/n/10.2.0.1:80", 1, "10.2.0.1:80", 1500);
    finish();
}
END_TEST

/*
 * registered_at_ms: the registration's start, the same under a new lease
 * (revoked by hand, as if it expired) and after a repair, and a new one after
 * the local service was NOT_SERVING.
 */
START_TEST(test_registered_at_kept_and_renewed)
{
    struct slb_config_register c = entry("/svc/t/", "10.4.0.1:80");
    const char *key = "/svc/t/10.4.0.1:80";
    char ha[32], body[128];
    long long lease, lease2;
    uint64_t t0, t1, at;
    int pa;
    pid_t a;

    setup();
    a = start_backend(&pa);
    snprintf(ha, sizeof(ha), "127.0.0.1:%d", pa);
    gate(&c, ha);
    c.format = SLB_REGISTER_JSON;
    t0 = slb_wall_ms();
    reg = slb_registrar_new(&loop, etcd, &io, &c, 1);
    ck_assert_ptr_nonnull(reg);
    wait_key(key, 1, NULL, 3000);
    t1 = slb_wall_ms();
    at = key_registered_at(key);
    ck_assert_msg(at >= t0 && at <= t1, "registered_at_ms %llu not in [%llu, %llu]", (unsigned long long)at,
                  (unsigned long long)t0, (unsigned long long)t1);

    /* the lease revoked by hand: a new lease, the same registration */
    wait_state(0, SLB_REGISTRAR_REGISTERED, 1000);
    ck_assert_int_eq(key_get(key, NULL, 0, &lease), 1);
    snprintf(body, sizeof(body), "{\"ID\":\"%lld\"}", lease);
    ck_assert_int_eq(eh_post(H.url[0], "/v3/lease/revoke", body, NULL, 0), 200);
    wait_key(key, 0, NULL, 1000);
    wait_key(key, 1, NULL, TICK_MS + 1500);
    ck_assert_int_eq(key_get(key, NULL, 0, &lease2), 1);
    ck_assert(lease2 != lease);
    ck_assert_uint_eq(key_registered_at(key), at);
    /* deleted by hand: restored as it was */
    eh_del(&H, 0, key);
    wait_key(key, 1, NULL, TICK_MS + 1000);
    ck_assert_uint_eq(key_registered_at(key), at);

    /* the local service NOT_SERVING, then SERVING: a new registration, a new time */
    usleep(20 * 1000); /* so that the new time differs even on a coarse clock */
    kill(a, SIGUSR1);
    wait_key(key, 0, NULL, 300 + 1000);
    t0 = slb_wall_ms();
    kill(a, SIGUSR2);
    wait_key(key, 1, NULL, 300 + 1500);
    ck_assert_uint_ge(key_registered_at(key), t0);
    ck_assert_uint_gt(key_registered_at(key), at);
    finish();
}
END_TEST

/* A reload's registrar keeps the registration times of the keys it takes over. */
START_TEST(test_registered_at_inherited_on_reload)
{
    struct slb_config_register c = entry("/svc/i/", "10.5.0.1:80"), c2[2];
    const char *key = "/svc/i/10.5.0.1:80";
    struct slb_registrar *next;
    uint64_t at;

    c.format = SLB_REGISTER_JSON;
    c2[0] = c;
    c2[0].weight = 3; /* the reloaded config changes the weight: the same registration all the same */
    c2[1] = entry("/svc/i/", "10.5.0.2:80");
    c2[1].format = SLB_REGISTER_ETCD_NAMING;
    setup();
    reg = slb_registrar_new(&loop, etcd, &io, &c, 1);
    ck_assert_ptr_nonnull(reg);
    wait_key(key, 1, NULL, 3000);
    at = key_registered_at(key);
    ck_assert_uint_gt(at, 0);
    eh_run_for(&loop, 50); /* the new registrar's clock moves on */

    next = slb_registrar_new(&loop, etcd, &io, c2, 2);
    ck_assert_ptr_nonnull(next);
    slb_registrar_inherit(next, reg);
    slb_registrar_hand_over(reg, c2, 2);
    slb_registrar_shutdown(reg, on_shutdown, NULL);
    ck_assert(eh_run_until(&loop, &shutdown_done, SLB_REGISTRAR_SHUTDOWN_MS + 500));
    slb_registrar_free(reg);
    reg = next;
    shutdown_done = 0;
    char v[512];
    uint64_t deadline = slb_now_ms() + 3000;
    while (key_get(key, v, sizeof(v), NULL) != 1 || strstr(v, "\"weight\":3") == NULL) {
        ck_assert_msg(slb_now_ms() < deadline, "the reloaded value did not come: %s", v);
        eh_run_for(&loop, 20);
    }
    ck_assert_uint_eq(key_registered_at(key), at);                  /* taken over: the same time */
    wait_key("/svc/i/10.5.0.2:80", 1, NULL, 3000);                  /* a new entry: */
    ck_assert_uint_gt(key_registered_at("/svc/i/10.5.0.2:80"), at); /* its own time */
    finish();
}
END_TEST

START_TEST(test_free_without_shutdown)
{
    struct slb_config_register c = entry("/svc/f/", "10.3.0.1:80");

    setup();
    reg = slb_registrar_new(&loop, etcd, &io, &c, 1);
    ck_assert_ptr_nonnull(reg);
    /* freed with the grant in flight: no callback, memory released once the answer is back */
    slb_registrar_free(reg);
    reg = NULL;
    eh_run_for(&loop, 300);
    finish();
}
END_TEST

Suite *register_suite(void)
{
    Suite *s = suite_create("register");
    TCase *tc = tcase_create("register");
    tcase_set_timeout(tc, 40);
    tcase_add_test(tc, test_register_and_shutdown);
    tcase_add_test(tc, test_etcd_naming_format);
    tcase_add_test(tc, test_repair_deleted_overwritten_revoked);
    tcase_add_test(tc, test_etcd_restart);
    tcase_add_test(tc, test_shutdown_bounded_when_etcd_down);
    tcase_add_test(tc, test_health_gating_two_independent);
    tcase_add_test(tc, test_not_serving_from_start);
    tcase_add_test(tc, test_free_without_shutdown);
    tcase_add_test(tc, test_registered_at_kept_and_renewed);
    tcase_add_test(tc, test_registered_at_inherited_on_reload);
    suite_add_tcase(s, tc);
    return s;
}
