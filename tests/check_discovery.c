/* lib/discovery.c: sink events from a real etcd, malformed values, minimal re-list, a 3-member cluster. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "discovery.h"
#include "etcd_harness.h"

/* What the sink saw. */
struct seen {
    int upserts, removes, connected, disconnected;
    int flag; /* set on any call */
    char last_upsert[128], last_remove[128];
};

static void s_upsert(void *u, const char *key, const struct slb_etcd_endpoint *ep, const struct slb_etcd_endpoint *old)
{
    struct seen *s = u;
    s->upserts++;
    s->flag = 1;
    snprintf(s->last_upsert, sizeof(s->last_upsert), "%s", key);
}
static void s_remove(void *u, const char *key, const struct slb_etcd_endpoint *ep)
{
    struct seen *s = u;
    s->removes++;
    s->flag = 1;
    snprintf(s->last_remove, sizeof(s->last_remove), "%s", key);
}
static void s_state(void *u, int connected)
{
    struct seen *s = u;
    if (connected)
        s->connected++;
    else
        s->disconnected++;
    s->flag = 1;
}
static const struct slb_discovery_sink sink = {s_upsert, s_remove, s_state, NULL};

static uv_loop_t loop;
static struct etcd_h H;

/* Runs the loop until cond holds (or a bound passes). */
#define RUN_UNTIL(cond, ms)                                                                                            \
    do {                                                                                                               \
        for (int _i = 0; _i < (ms) / 10 && !(cond); _i++)                                                              \
            eh_run_for(&loop, 10);                                                                                     \
        ck_assert_msg((cond), "timed out waiting for: %s", #cond);                                                     \
    } while (0)

static struct slb_etcd *client(struct etcd_h *h)
{
    const char *eps[EH_MAX];
    struct slb_config_etcd cfg = {
        .endpoints = (char **)eps, .n_endpoints = (size_t)h->n, .dial_timeout_ms = 500, .request_timeout_ms = 1000};
    struct slb_etcd *e = NULL;
    for (int i = 0; i < h->n; i++)
        eps[i] = h->url[i];
    ck_assert_int_eq(slb_etcd_new(&loop, &cfg, &e), 0);
    return e;
}

START_TEST(test_sink)
{
    struct seen s = {0};
    struct slb_etcd *e;
    struct slb_discovery *d;

    uv_loop_init(&loop);
    eh_start(&H, 1);
    eh_put(&H, 0, "/grpclb/g/127.0.0.1:8001", "127.0.0.1:8001");
    eh_put(&H, 0, "/grpclb/g/bad", "not an address");
    eh_put(&H, 0, "/grpclb/g/n", "{\"Op\":0,\"Addr\":\"127.0.0.1:8002\"}");
    eh_put(&H, 0, "/grpclb/other/x", "127.0.0.1:9");
    e = client(&H);
    ck_assert_int_eq(slb_discovery_new(e, "/grpclb/g/", &sink, &s, &d), 0);
    ck_assert_int_eq(s.upserts, 0);
    RUN_UNTIL(s.connected == 1, 5000);
    ck_assert_int_eq(s.upserts, 2); /* the malformed one is skipped */
    ck_assert_uint_eq(slb_discovery_size(d), 2);
    ck_assert_str_eq(slb_discovery_get(d, "/grpclb/g/n")->addr, "127.0.0.1:8002");

    eh_put(&H, 0, "/grpclb/g/j", "{\"addr\":\"127.0.0.1:8003\",\"weight\":3}");
    RUN_UNTIL(s.upserts == 3, 3000);
    ck_assert_uint_eq(slb_discovery_get(d, "/grpclb/g/j")->weight, 3);
    /* same value again: no event; changed value: one upsert */
    eh_put(&H, 0, "/grpclb/g/j", "{\"addr\":\"127.0.0.1:8003\",\"weight\":3}");
    eh_put(&H, 0, "/grpclb/g/j", "{\"addr\":\"127.0.0.1:8003\",\"weight\":4}");
    RUN_UNTIL(s.upserts == 4, 3000);
    eh_run_for(&loop, 100);
    ck_assert_int_eq(s.upserts, 4);
    /* a malformed update keeps the entry */
    eh_put(&H, 0, "/grpclb/g/j", "{garbage");
    eh_put(&H, 0, "/grpclb/g/127.0.0.1:8001", "");
    eh_del(&H, 0, "/grpclb/g/n");
    RUN_UNTIL(s.removes == 1, 3000);
    ck_assert_str_eq(s.last_remove, "/grpclb/g/n");
    ck_assert_uint_eq(slb_discovery_size(d), 2);
    ck_assert_uint_eq(slb_discovery_get(d, "/grpclb/g/j")->weight, 4);
    /* naming delete (Op 1) removes */
    eh_put(&H, 0, "/grpclb/g/j", "{\"Op\":1,\"Addr\":\"127.0.0.1:8003\"}");
    RUN_UNTIL(s.removes == 2, 3000);
    ck_assert_uint_eq(slb_discovery_size(d), 1);

    slb_discovery_free(d);
    slb_etcd_free(e);
    eh_loop_finish(&loop);
    eh_destroy(&H);
}
END_TEST

/* Re-list: only differences reach the sink. */
START_TEST(test_reconcile)
{
    struct seen s = {0};
    struct slb_discovery *d;
    struct slb_etcd_kv kvs[3] = {
        {.key = "p/a", .key_len = 3, .value = "127.0.0.1:1", .value_len = 11},
        {.key = "p/b", .key_len = 3, .value = "127.0.0.1:2", .value_len = 11},
        {.key = "p/c", .key_len = 3, .value = "127.0.0.1:3", .value_len = 11},
    };
    struct slb_etcd_range_result snap = {.revision = 5, .kvs = kvs, .n = 3};

    ck_assert_int_eq(slb_discovery_new_detached("p/", &sink, &s, &d), 0);
    slb_discovery_apply_reset(d, &snap);
    ck_assert_int_eq(s.upserts, 3);
    /* b unchanged, a changed, c gone, d new, plus a malformed b2 */
    struct slb_etcd_kv kvs2[4] = {
        {.key = "p/a", .key_len = 3, .value = "127.0.0.1:9", .value_len = 11},
        {.key = "p/b", .key_len = 3, .value = "127.0.0.1:2", .value_len = 11},
        {.key = "p/d", .key_len = 3, .value = "127.0.0.1:4", .value_len = 11},
        {.key = "p/x", .key_len = 3, .value = "bad", .value_len = 3},
    };
    struct slb_etcd_range_result snap2 = {.revision = 9, .kvs = kvs2, .n = 4};
    memset(&s, 0, sizeof(s));
    slb_discovery_apply_reset(d, &snap2);
    ck_assert_int_eq(s.upserts, 2); /* a, d */
    ck_assert_int_eq(s.removes, 1); /* c */
    ck_assert_str_eq(s.last_remove, "p/c");
    ck_assert_uint_eq(slb_discovery_size(d), 3);
    /* a malformed value in a re-list keeps the existing entry */
    kvs2[1].value = "junk";
    kvs2[1].value_len = 4;
    memset(&s, 0, sizeof(s));
    slb_discovery_apply_reset(d, &snap2);
    ck_assert_int_eq(s.upserts + s.removes, 0);
    ck_assert_str_eq(slb_discovery_get(d, "p/b")->addr, "127.0.0.1:2");
    /* many keys: the table grows */
    for (int i = 0; i < 1000; i++) {
        char k[32];
        struct slb_etcd_event ev = {.type = SLB_ETCD_PUT};
        snprintf(k, sizeof(k), "p/k%d", i);
        ev.kv.key = k;
        ev.kv.key_len = strlen(k);
        ev.kv.value = "127.0.0.1:5";
        ev.kv.value_len = 11;
        slb_discovery_apply_events(d, &ev, 1);
    }
    ck_assert_uint_eq(slb_discovery_size(d), 1003);
    ck_assert_ptr_nonnull(slb_discovery_get(d, "p/k999"));
    slb_discovery_free(d);
}
END_TEST

/* A preloaded table (state file, reload) goes through the sink, and the first listing reconciles it. */
START_TEST(test_preload)
{
    struct seen s = {0};
    struct slb_discovery *d;
    struct slb_state_entry ents[2] = {{.key = "p/a"}, {.key = "p/b"}};
    struct slb_state_table t = {.prefix = "p/", .revision = 7, .entries = ents, .n = 2}, snap;
    struct slb_etcd_kv kvs[2] = {
        {.key = "p/a", .key_len = 3, .value = "127.0.0.1:1", .value_len = 11},
        {.key = "p/c", .key_len = 3, .value = "127.0.0.1:3", .value_len = 11},
    };
    struct slb_etcd_range_result listing = {.revision = 9, .kvs = kvs, .n = 2};

    snprintf(ents[0].ep.addr, sizeof(ents[0].ep.addr), "127.0.0.1:1");
    ents[0].ep.weight = 1;
    snprintf(ents[1].ep.addr, sizeof(ents[1].ep.addr), "127.0.0.1:2");
    ents[1].ep.weight = 5;
    ck_assert_int_eq(slb_discovery_new_detached("p/", &sink, &s, &d), 0);
    slb_discovery_preload(d, &t);
    ck_assert_int_eq(s.upserts, 2);
    ck_assert(!slb_discovery_synced(d)); /* still waiting for etcd */
    ck_assert_int_eq(slb_discovery_snapshot(d, &snap), 0);
    ck_assert_uint_eq(snap.n, 2);
    ck_assert_str_eq(snap.prefix, "p/");
    slb_state_table_dispose(&snap);
    memset(&s, 0, sizeof(s));
    slb_discovery_apply_reset(d, &listing);
    ck_assert_int_eq(s.upserts, 1); /* c; a unchanged: no churn */
    ck_assert_int_eq(s.removes, 1); /* b: etcd no longer has it */
    ck_assert_str_eq(s.last_remove, "p/b");
    ck_assert(slb_discovery_synced(d));
    ck_assert_int_eq(slb_discovery_snapshot(d, &snap), 0);
    ck_assert_uint_eq(snap.n, 2);
    ck_assert_int_eq(snap.revision, 9);
    for (size_t i = 0; i < snap.n; i++)
        ck_assert_str_eq(slb_discovery_get(d, snap.entries[i].key)->addr, snap.entries[i].ep.addr);
    slb_state_table_dispose(&snap);
    slb_discovery_free(d);
}
END_TEST

/* etcd down: the table stays; back: changes made meanwhile are applied quickly. */
START_TEST(test_etcd_restart)
{
    struct seen s = {0};
    struct slb_etcd *e;
    struct slb_discovery *d;
    uint64_t t0;

    uv_loop_init(&loop);
    eh_start(&H, 1);
    eh_put(&H, 0, "/g/a", "127.0.0.1:1");
    eh_put(&H, 0, "/g/b", "127.0.0.1:2");
    e = client(&H);
    ck_assert_int_eq(slb_discovery_new(e, "/g/", &sink, &s, &d), 0);
    RUN_UNTIL(s.connected == 1, 5000);
    eh_stop_member(&H, 0, SIGKILL);
    RUN_UNTIL(s.disconnected == 1, 5000);
    eh_run_for(&loop, 1000);
    ck_assert_uint_eq(slb_discovery_size(d), 2);
    ck_assert_int_eq(s.removes, 0);
    eh_restart_member(&H, 0);
    eh_del(&H, 0, "/g/a");
    eh_put(&H, 0, "/g/c", "127.0.0.1:3");
    t0 = slb_now_ms();
    RUN_UNTIL(s.removes == 1 && s.upserts == 3, 3000);
    ck_assert_msg(slb_now_ms() - t0 <= 1500, "applied after %llu ms", (unsigned long long)(slb_now_ms() - t0));
    ck_assert_uint_eq(slb_discovery_size(d), 2);
    slb_discovery_free(d);
    slb_etcd_free(e);
    eh_loop_finish(&loop);
    eh_destroy(&H);
}
END_TEST

/* 3-member cluster: kill the member in use, updates keep arriving through another one. */
START_TEST(test_cluster_failover)
{
    struct seen s = {0};
    struct slb_etcd *e;
    struct slb_discovery *d;
    int used = -1, other;

    uv_loop_init(&loop);
    eh_start(&H, 3);
    eh_put(&H, 0, "/c/a", "127.0.0.1:1");
    e = client(&H);
    ck_assert_int_eq(slb_discovery_new(e, "/c/", &sink, &s, &d), 0);
    RUN_UNTIL(s.connected == 1, 8000);
    ck_assert_int_eq(s.upserts, 1);
    for (int i = 0; i < 3; i++)
        if (strcmp(slb_etcd_endpoint(e), H.url[i]) == 0)
            used = i;
    ck_assert_int_ge(used, 0);
    other = (used + 1) % 3;
    eh_stop_member(&H, used, SIGKILL);
    eh_put(&H, other, "/c/b", "127.0.0.1:2");
    RUN_UNTIL(s.upserts == 2, 10000);
    eh_del(&H, other, "/c/a");
    RUN_UNTIL(s.removes == 1, 5000);
    ck_assert(strcmp(slb_etcd_endpoint(e), H.url[used]) != 0);
    slb_discovery_free(d);
    slb_etcd_free(e);
    eh_loop_finish(&loop);
    eh_destroy(&H);
}
END_TEST

Suite *discovery_suite(void)
{
    Suite *s = suite_create("discovery");
    TCase *tc = tcase_create("discovery");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_reconcile);
    tcase_add_test(tc, test_preload);
    tcase_add_test(tc, test_sink);
    tcase_add_test(tc, test_etcd_restart);
    tcase_add_test(tc, test_cluster_failover);
    suite_add_tcase(s, tc);
    return s;
}
