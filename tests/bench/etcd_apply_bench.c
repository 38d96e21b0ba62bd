/*
 * Benchmark (not a test): CPU time for discovery to apply 10,000 watch events
 * (value parsing in the three formats + map updates + sink calls), then a
 * 10,000-key re-list that changes nothing (reconcile cost). Prints the numbers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "discovery.h"

#define N 10000

static unsigned long sink_calls;
static void up(void *u, const char *k, const struct slb_etcd_endpoint *ep, const struct slb_etcd_endpoint *old)
{
    sink_calls++;
}
static void rm(void *u, const char *k, const struct slb_etcd_endpoint *ep)
{
    sink_calls++;
}

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(void)
{
    static const struct slb_discovery_sink sink = {up, rm, NULL, NULL};
    struct slb_discovery *d;
    struct slb_etcd_event *ev = calloc(N, sizeof(*ev));
    struct slb_etcd_kv *kvs = calloc(N, sizeof(*kvs));
    double t0, t1, t2;

    if (ev == NULL || kvs == NULL || slb_discovery_new_detached("/grpclb/bench/", &sink, NULL, &d) != 0)
        return 1;
    for (int i = 0; i < N; i++) {
        char *k = malloc(64), *v = malloc(160);
        snprintf(k, 64, "/grpclb/bench/10.%d.%d.%d:8000", i >> 16, (i >> 8) & 255, i & 255);
        switch (i % 3) {
        case 0:
            snprintf(v, 160, "10.%d.%d.%d:8000", i >> 16, (i >> 8) & 255, i & 255);
            break;
        case 1:
            snprintf(v, 160, "{\"Op\":0,\"Addr\":\"10.%d.%d.%d:8000\",\"Metadata\":{\"v\":1}}", i >> 16, (i >> 8) & 255,
                     i & 255);
            break;
        default:
            snprintf(v, 160, "{\"addr\":\"10.%d.%d.%d:8000\",\"weight\":%d,\"zone\":\"z%d\"}", i >> 16, (i >> 8) & 255,
                     i & 255, 1 + i % 10, i % 4);
        }
        ev[i].type = SLB_ETCD_PUT;
        ev[i].kv.key = k;
        ev[i].kv.key_len = strlen(k);
        ev[i].kv.value = v;
        ev[i].kv.value_len = strlen(v);
        kvs[i] = ev[i].kv;
    }
    t0 = cpu_ms();
    for (int i = 0; i < N; i++)
        slb_discovery_apply_events(d, &ev[i], 1); /* one watch message per event: the worst case */
    t1 = cpu_ms();
    struct slb_etcd_range_result snap = {.revision = 1, .kvs = kvs, .n = N};
    slb_discovery_apply_reset(d, &snap);
    t2 = cpu_ms();
    printf("etcd_apply_bench: %d put events applied in %.2f ms CPU (%.2f us/event), %zu endpoints, %lu sink calls\n", N,
           t1 - t0, (t1 - t0) * 1e3 / N, slb_discovery_size(d), sink_calls);
    printf("etcd_apply_bench: re-list of %d unchanged keys reconciled in %.2f ms CPU, %lu sink calls total\n", N,
           t2 - t1, sink_calls);
    slb_discovery_free(d);
    for (int i = 0; i < N; i++) {
        free(ev[i].kv.key);
        free(ev[i].kv.value);
    }
    free(ev);
    free(kvs);
    return 0;
}
