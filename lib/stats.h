/*
 * Per-call counters: plain counters and fixed-bucket latency histograms that
 * the call path bumps without allocating, locking or hashing a string (an
 * array indexed by gRPC code, a bucket found by comparing against a fixed
 * table). They live where the call already is: the loop context (calls per
 * listener, cluster and code), the cluster (call latency, bytes, retries,
 * hedges, limits) and the backend (attempts per code, attempt latency).
 * lib/metrics.c adds them up and renders them on a scrape.
 */
#ifndef SLB_STATS_H
#define SLB_STATS_H

#include <stdint.h>

/* gRPC status codes 0..16; anything else counts as UNKNOWN (2). */
#define SLB_STATS_GRPC_CODES 17

static inline unsigned slb_stats_code(int code)
{
    return code >= 0 && code < SLB_STATS_GRPC_CODES ? (unsigned)code : 2u;
}

/* Upper bounds of the latency buckets, 100 µs to 30 s, in nanoseconds; a last bucket is +Inf. */
#define SLB_STATS_BUCKETS 17
extern const uint64_t slb_stats_bucket_ns[SLB_STATS_BUCKETS];

/* Owner: the struct it is embedded in. Counts are per bucket (not cumulative: the scrape adds them up). */
struct slb_stats_hist {
    uint64_t counts[SLB_STATS_BUCKETS + 1];
    uint64_t sum_ns;
};

static inline void slb_stats_observe(struct slb_stats_hist *h, uint64_t ns)
{
    unsigned i = 0;
    while (i < SLB_STATS_BUCKETS && ns > slb_stats_bucket_ns[i])
        i++;
    h->counts[i]++;
    h->sum_ns += ns;
}

/* What a cluster counts. Owner: the cluster (embedded). */
struct slb_cluster_stats {
    struct slb_stats_hist call_duration;    /* calls routed here, from the app's headers to the app's stream closing */
    uint64_t request_bytes, response_bytes; /* message bytes from the apps / from the final attempts' backends */
    uint64_t retries;                       /* gRFC A6 retries (an attempt after a retryable status) */
    uint64_t hedges;                        /* hedged attempts (slb_cluster_stats_hedge) */
    uint64_t rejected_max_calls;            /* calls refused at max_calls */
    uint64_t rejected_max_waiting;          /* calls refused at max_waiting_calls */
};

/* What a backend counts while it is listed (the counters go with it). Owner: the backend (embedded). */
struct slb_backend_stats {
    uint64_t attempts[SLB_STATS_GRPC_CODES]; /* attempts that ended, by the status they ended with */
    struct slb_stats_hist attempt_duration;  /* from being handed to the backend's pool to the attempt's end */
    uint64_t health_changes;                 /* health check status changes (gRFC A17) */
};

#endif
