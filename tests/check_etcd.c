/* lib/etcd.c against a real etcd-server: unary calls, leases, watch, compaction, restart, failover. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.h"
#include "etcd_harness.h"
#include "log.h"

/* Collected results of the callbacks of one test. */
struct ctx {
    int done, err;
    int64_t rev, deleted, id, ttl;
    size_t n;
    char first_key[128], first_value[128];
    int64_t first_mod;
    /* watch */
    int resets, events, puts, dels, connected, disconnects, got;
    char last_key[128];
    int table_has_a, table_has_b, table_has_c;
    struct etcd_h *h;
    int compact_script, relisted;
};

static void on_done(void *user, int err, int64_t rev, int64_t deleted)
{
    struct ctx *c = user;
    c->done++;
    c->err = err;
    c->rev = rev;
    c->deleted = deleted;
}

static void on_range(void *user, int err, const struct slb_etcd_range_result *res)
{
    struct ctx *c = user;
    c->done++;
    c->err = err;
    if (err == 0) {
        c->rev = res->revision;
        c->n = res->n;
        if (res->n > 0) {
            snprintf(c->first_key, sizeof(c->first_key), "%s", res->kvs[0].key);
            snprintf(c->first_value, sizeof(c->first_value), "%s", res->kvs[0].value);
            c->first_mod = res->kvs[0].mod_revision;
        }
    }
}

static void on_lease(void *user, int err, int64_t id, int64_t ttl)
{
    struct ctx *c = user;
    c->done++;
    c->err = err;
    c->id = id;
    c->ttl = ttl;
}

static uv_loop_t loop;
static struct etcd_h H;

static struct slb_etcd *client(const char **eps, size_t n, uint32_t req_timeout)
{
    struct slb_config_etcd cfg = {
        .endpoints = (char **)eps, .n_endpoints = n, .dial_timeout_ms = 1000, .request_timeout_ms = req_timeout};
    struct slb_etcd *e = NULL;
    ck_assert_int_eq(slb_etcd_new(&loop, &cfg, &e), 0);
    return e;
}

#define WAIT(c, k) ck_assert_msg(eh_run_until(&loop, &(c)->done, 8000) && (c)->done == (k), "timeout")

START_TEST(test_unary)
{
    const char *eps[] = {NULL};
    struct ctx c = {0};
    struct slb_etcd *e;
    int64_t lease;

    uv_loop_init(&loop);
    eh_start(&H, 1);
    eps[0] = H.url[0];
    e = client(eps, 1, 3000);

    ck_assert_int_eq(slb_etcd_put(e, "svc/a", 5, "127.0.0.1:1", 11, 0, on_done, &c), 0);
    ck_assert_int_eq(c.done, 0); /* never before the call returns */
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, 0);
    ck_assert_int_gt(c.rev, 1);
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_put(e, "svc/b", 5, "127.0.0.1:2", 11, 0, on_done, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(slb_etcd_put(e, "svd", 3, "x", 1, 0, on_done, &c), 0);
    c.done = 0;
    WAIT(&c, 1);

    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_range(e, "svc/", 4, 1, on_range, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, 0);
    ck_assert_uint_eq(c.n, 2);
    ck_assert_str_eq(c.first_key, "svc/a");
    ck_assert_str_eq(c.first_value, "127.0.0.1:1");

    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_range(e, "nosuch", 6, 0, on_range, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, 0);
    ck_assert_uint_eq(c.n, 0);

    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_delete(e, "svc/", 4, 1, on_done, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, 0);
    ck_assert_int_eq(c.deleted, 2);

    /* leases */
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_lease_grant(e, 30, on_lease, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, 0);
    ck_assert_int_eq(c.ttl, 30);
    lease = c.id;
    ck_assert(lease != 0);
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_put(e, "svc/l", 5, "127.0.0.1:3", 11, lease, on_done, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, 0);
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_lease_keepalive(e, lease, on_lease, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, 0);
    ck_assert(c.id == lease);
    ck_assert_int_eq(c.ttl, 30);
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_lease_revoke(e, lease, on_done, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, 0);
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_range(e, "svc/l", 5, 0, on_range, &c), 0);
    WAIT(&c, 1);
    ck_assert_uint_eq(c.n, 0); /* gone with its lease */
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_lease_keepalive(e, lease, on_lease, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, SLB_ENOTFOUND);
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_lease_revoke(e, lease, on_done, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, SLB_ENOTFOUND);

    /* a request in flight when the client is freed: no callback, no leak */
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_range(e, "svc/", 4, 1, on_range, &c), 0);
    slb_etcd_free(e);
    eh_loop_finish(&loop);
    ck_assert_int_eq(c.done, 0);
    eh_destroy(&H);
}
END_TEST

/* The registrar's read-modify-write: a put only if the key is unchanged since it was read. */
START_TEST(test_put_if_unchanged)
{
    const char *eps[] = {NULL};
    struct ctx c = {0};
    struct slb_etcd *e;
    int64_t mod;

    uv_loop_init(&loop);
    eh_start(&H, 1);
    eps[0] = H.url[0];
    e = client(eps, 1, 3000);

    /* absent key: mod_revision 0 matches; a second put with 0 does not (the key exists now) */
    ck_assert_int_eq(slb_etcd_put_if_unchanged(e, "reg/k", 5, "v1", 2, 0, 0, on_done, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, 0);
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_put_if_unchanged(e, "reg/k", 5, "v0", 2, 0, 0, on_done, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, SLB_ECONFLICT);
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_range(e, "reg/k", 5, 0, on_range, &c), 0);
    WAIT(&c, 1);
    ck_assert_str_eq(c.first_value, "v1");
    mod = c.first_mod;
    ck_assert_int_gt(mod, 0);
    /* someone writes between our read and our put: ours fails, theirs stays */
    eh_put(&H, 0, "reg/k", "{\"addr\":\"1.2.3.4:5\",\"drain\":true}");
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_put_if_unchanged(e, "reg/k", 5, "v2", 2, 0, mod, on_done, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, SLB_ECONFLICT);
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_range(e, "reg/k", 5, 0, on_range, &c), 0);
    WAIT(&c, 1);
    ck_assert_str_eq(c.first_value, "{\"addr\":\"1.2.3.4:5\",\"drain\":true}");
    /* read again, then the put goes through */
    mod = c.first_mod;
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_put_if_unchanged(e, "reg/k", 5, "v3", 2, 0, mod, on_done, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, 0);
    ck_assert_int_gt(c.rev, mod);
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(slb_etcd_range(e, "reg/k", 5, 0, on_range, &c), 0);
    WAIT(&c, 1);
    ck_assert_str_eq(c.first_value, "v3");

    slb_etcd_free(e);
    eh_loop_finish(&loop);
    eh_destroy(&H);
}
END_TEST

/* ---- watch ---- */

static void w_reset(void *user, const struct slb_etcd_range_result *snap)
{
    struct ctx *c = user;
    c->resets++;
    c->relisted = c->resets >= 2;
    c->table_has_a = c->table_has_b = c->table_has_c = 0;
    for (size_t i = 0; i < snap->n; i++) {
        if (strcmp(snap->kvs[i].key, "w/a") == 0)
            c->table_has_a = 1;
        if (strcmp(snap->kvs[i].key, "w/b") == 0)
            c->table_has_b = 1;
        if (strcmp(snap->kvs[i].key, "w/c") == 0)
            c->table_has_c = 1;
    }
    if (c->compact_script && c->resets == 1) {
        /* between the listing and the watch: move on and compact past the watch's start revision */
        eh_put(c->h, 0, "w/b", "2");
        eh_del(c->h, 0, "w/a");
        eh_put(c->h, 0, "w/c", "3");
        eh_compact(c->h, 0, eh_revision(c->h, 0));
    }
}

static void w_events(void *user, int64_t rev, const struct slb_etcd_event *ev, size_t n)
{
    struct ctx *c = user;
    for (size_t i = 0; i < n; i++) {
        int *slot = strcmp(ev[i].kv.key, "w/a") == 0   ? &c->table_has_a
                    : strcmp(ev[i].kv.key, "w/b") == 0 ? &c->table_has_b
                    : strcmp(ev[i].kv.key, "w/c") == 0 ? &c->table_has_c
                                                       : NULL;
        c->events++;
        if (ev[i].type == SLB_ETCD_DELETE)
            c->dels++;
        else
            c->puts++;
        if (slot != NULL)
            *slot = ev[i].type == SLB_ETCD_PUT;
        snprintf(c->last_key, sizeof(c->last_key), "%s", ev[i].kv.key);
    }
    c->got = 1;
}

static void w_state(void *user, int connected)
{
    struct ctx *c = user;
    if (connected)
        c->connected++;
    else
        c->disconnects++;
    c->got = 1;
}

static const struct slb_etcd_watch_cbs wcbs = {w_reset, w_events, w_state};

START_TEST(test_watch)
{
    const char *eps[1];
    struct ctx c = {0};
    struct slb_etcd *e;
    struct slb_etcd_watch *w;

    uv_loop_init(&loop);
    eh_start(&H, 1);
    eps[0] = H.url[0];
    eh_put(&H, 0, "w/a", "1");
    eh_put(&H, 0, "x", "outside");
    e = client(eps, 1, 3000);
    ck_assert_int_eq(slb_etcd_watch_start(e, "w/", 2, &wcbs, &c, &w), 0);
    ck_assert_int_eq(c.resets, 0);
    c.got = 0;
    ck_assert(eh_run_until(&loop, &c.connected, 5000));
    ck_assert_int_eq(c.resets, 1);
    ck_assert_int_eq(c.table_has_a, 1);

    c.got = 0;
    eh_put(&H, 0, "w/b", "2");
    eh_put(&H, 0, "y", "outside");
    eh_del(&H, 0, "w/a");
    for (int i = 0; i < 50 && c.events < 2; i++)
        eh_run_for(&loop, 20);
    ck_assert_int_eq(c.puts, 1);
    ck_assert_int_eq(c.dels, 1);
    ck_assert_int_eq(c.table_has_a, 0);
    ck_assert_int_eq(c.table_has_b, 1);
    ck_assert_int_eq(slb_etcd_watch_revision(w), eh_revision(&H, 0));

    slb_etcd_watch_stop(w);
    slb_etcd_free(e);
    eh_loop_finish(&loop);
    eh_destroy(&H);
}
END_TEST

START_TEST(test_watch_compacted)
{
    const char *eps[1];
    struct ctx c = {0};
    struct slb_etcd *e;
    struct slb_etcd_watch *w;

    uv_loop_init(&loop);
    eh_start(&H, 1);
    eps[0] = H.url[0];
    eh_put(&H, 0, "w/a", "1");
    c.h = &H;
    c.compact_script = 1;
    e = client(eps, 1, 3000);
    ck_assert_int_eq(slb_etcd_watch_start(e, "w/", 2, &wcbs, &c, &w), 0);
    ck_assert(eh_run_until(&loop, &c.relisted, 5000));
    ck_assert(eh_run_until(&loop, &c.connected, 5000));
    /* the first watch was canceled as compacted: listed again, consistent table */
    ck_assert_int_eq(c.resets, 2);
    ck_assert_int_eq(c.events, 0);
    ck_assert_int_eq(c.table_has_a, 0);
    ck_assert_int_eq(c.table_has_b, 1);
    ck_assert_int_eq(c.table_has_c, 1);
    eh_put(&H, 0, "w/a", "again");
    for (int i = 0; i < 50 && c.events < 1; i++)
        eh_run_for(&loop, 20);
    ck_assert_int_eq(c.table_has_a, 1);

    slb_etcd_watch_stop(w);
    slb_etcd_free(e);
    eh_loop_finish(&loop);
    eh_destroy(&H);
}
END_TEST

START_TEST(test_watch_restart)
{
    const char *eps[1];
    struct ctx c = {0};
    struct slb_etcd *e;
    struct slb_etcd_watch *w;
    uint64_t t0;

    uv_loop_init(&loop);
    eh_start(&H, 1);
    eps[0] = H.url[0];
    eh_put(&H, 0, "w/a", "1");
    e = client(eps, 1, 2000);
    ck_assert_int_eq(slb_etcd_watch_start(e, "w/", 2, &wcbs, &c, &w), 0);
    ck_assert(eh_run_until(&loop, &c.connected, 5000));

    eh_stop_member(&H, 0, SIGTERM);
    ck_assert(eh_run_until(&loop, &c.disconnects, 5000));
    eh_run_for(&loop, 1500); /* several failed retries: logged once */
    ck_assert_int_eq(c.disconnects, 1);
    eh_restart_member(&H, 0);
    t0 = slb_now_ms();
    eh_put(&H, 0, "w/b", "2");
    eh_del(&H, 0, "w/a");
    for (int i = 0; i < 200 && !(c.connected == 2 && c.table_has_b && !c.table_has_a); i++)
        eh_run_for(&loop, 10);
    ck_assert_int_eq(c.connected, 2);
    ck_assert_int_eq(c.table_has_b, 1);
    ck_assert_int_eq(c.table_has_a, 0);
    ck_assert_int_eq(c.resets, 1); /* resumed from its revision, not re-listed */
    ck_assert_msg(slb_now_ms() - t0 < 2000, "caught up in %llu ms", (unsigned long long)(slb_now_ms() - t0));

    slb_etcd_watch_stop(w);
    slb_etcd_free(e);
    eh_loop_finish(&loop);
    eh_destroy(&H);
}
END_TEST

/* ---- bad endpoints ---- */

/* A listener that accepts (the kernel completes the handshake) and never answers. */
static int silent_listener(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    getsockname(fd, (struct sockaddr *)&a, &l);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A server on the loop that answers every connection with HTTP 200 and garbage. */
static uv_tcp_t garbage_srv;
static int garbage_conns;
static void g_closed(uv_handle_t *h)
{
    free(h);
}
static void g_written(uv_write_t *wr, int status)
{
    uv_close((uv_handle_t *)wr->handle, g_closed);
    free(wr);
}
static void g_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    static char buf[4096];
    *b = uv_buf_init(buf, sizeof(buf));
}
static void g_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    static char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\n<html>nope</ht>";
    uv_buf_t out = uv_buf_init(reply, sizeof(reply) - 1);
    uv_write_t *wr;
    if (n < 0) {
        uv_close((uv_handle_t *)s, g_closed);
        return;
    }
    if (n == 0)
        return;
    uv_read_stop(s);
    wr = malloc(sizeof(*wr));
    uv_write(wr, s, &out, 1, g_written);
}
static void g_conn(uv_stream_t *srv, int status)
{
    uv_tcp_t *c = malloc(sizeof(*c));
    uv_tcp_init(&loop, c);
    uv_accept(srv, (uv_stream_t *)c);
    garbage_conns++;
    uv_read_start((uv_stream_t *)c, g_alloc, g_read);
}

START_TEST(test_failover)
{
    char silent[64], garbage[64];
    const char *eps[2];
    struct ctx c = {0};
    struct slb_etcd *e;
    struct slb_etcd_watch *w;
    struct sockaddr_in a;
    int port, sfd;
    int namelen = sizeof(a);

    uv_loop_init(&loop);
    eh_start(&H, 1);
    eh_put(&H, 0, "w/a", "1");

    /* silent endpoint first: the unary request times out there and moves on */
    sfd = silent_listener(&port);
    snprintf(silent, sizeof(silent), "http://127.0.0.1:%d", port);
    eps[0] = silent;
    eps[1] = H.url[0];
    e = client(eps, 2, 800);
    ck_assert_int_eq(slb_etcd_range(e, "w/", 2, 1, on_range, &c), 0);
    WAIT(&c, 1);
    ck_assert_int_eq(c.err, 0);
    ck_assert_uint_eq(c.n, 1);
    ck_assert_str_eq(slb_etcd_endpoint(e), H.url[0]);
    slb_etcd_free(e);

    /* a watch whose first endpoint never answers */
    memset(&c, 0, sizeof(c));
    e = client(eps, 2, 800);
    ck_assert_int_eq(slb_etcd_watch_start(e, "w/", 2, &wcbs, &c, &w), 0);
    ck_assert(eh_run_until(&loop, &c.connected, 8000));
    ck_assert_int_eq(c.table_has_a, 1);
    slb_etcd_watch_stop(w);
    slb_etcd_free(e);
    close(sfd);

    /* an endpoint that answers garbage */
    uv_tcp_init(&loop, &garbage_srv);
    uv_ip4_addr("127.0.0.1", 0, &a);
    ck_assert_int_eq(uv_tcp_bind(&garbage_srv, (struct sockaddr *)&a, 0), 0);
    ck_assert_int_eq(uv_listen((uv_stream_t *)&garbage_srv, 16, g_conn), 0);
    uv_tcp_getsockname(&garbage_srv, (struct sockaddr *)&a, &namelen);
    snprintf(garbage, sizeof(garbage), "http://127.0.0.1:%d", ntohs(a.sin_port));
    eps[0] = garbage;
    memset(&c, 0, sizeof(c));
    e = client(eps, 2, 2000);
    ck_assert_int_eq(slb_etcd_watch_start(e, "w/", 2, &wcbs, &c, &w), 0);
    ck_assert(eh_run_until(&loop, &c.connected, 8000));
    ck_assert_int_ge(garbage_conns, 1);
    ck_assert_int_eq(c.table_has_a, 1);
    eh_put(&H, 0, "w/b", "2");
    for (int i = 0; i < 100 && !c.table_has_b; i++)
        eh_run_for(&loop, 20);
    ck_assert_int_eq(c.table_has_b, 1);
    slb_etcd_watch_stop(w);
    slb_etcd_free(e);
    uv_close((uv_handle_t *)&garbage_srv, NULL);
    eh_loop_finish(&loop);
    eh_destroy(&H);
}
END_TEST

START_TEST(test_prefix_end)
{
    char out[8];
    ck_assert_uint_eq(slb_etcd_prefix_end("svc/", 4, out), 4);
    ck_assert(memcmp(out, "svc0", 4) == 0);
    ck_assert_uint_eq(slb_etcd_prefix_end("a\xff", 2, out), 1);
    ck_assert(out[0] == 'b');
    ck_assert_uint_eq(slb_etcd_prefix_end("", 0, out), 1);
    ck_assert(out[0] == '\0');
}
END_TEST

Suite *etcd_suite(void)
{
    Suite *s = suite_create("etcd");
    TCase *tc = tcase_create("etcd");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_prefix_end);
    tcase_add_test(tc, test_unary);
    tcase_add_test(tc, test_put_if_unchanged);
    tcase_add_test(tc, test_watch);
    tcase_add_test(tc, test_watch_compacted);
    tcase_add_test(tc, test_watch_restart);
    tcase_add_test(tc, test_failover);
    suite_add_tcase(s, tc);
    return s;
}
