/*
 * One backend (a gRPC server address) and the set of backends of a cluster.
 *
 * Ownership: a backend is reference counted. The cluster's backend set holds
 * one reference while the backend is listed; every call bound to it and its
 * upstream pool hold one more. When discovery removes a backend it is taken
 * out of the set and marked draining: it gets no new calls, its in-flight
 * calls finish, and the last unref frees it (nginx refs/zombie).
 */
#ifndef SLB_BACKEND_H
#define SLB_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "stats.h"
struct slb_tls_stats;

/* Connectivity states, with gRPC's names and meanings. */
enum slb_backend_state {
    SLB_BACKEND_IDLE = 0,
    SLB_BACKEND_CONNECTING,
    SLB_BACKEND_READY,
    SLB_BACKEND_TRANSIENT_FAILURE,
    SLB_BACKEND_SHUTDOWN,
};

/*
 * Active health (grpc.health.v1, gRFC A17). UNKNOWN: no check configured
 * (usable). PENDING: a check runs but has not answered yet: not usable, like
 * a gRPC subchannel that stays CONNECTING until its first SERVING; calls wait
 * for it rather than go to an unchecked backend. UNIMPLEMENTED: the backend
 * does not serve grpc.health.v1 (Check answered UNIMPLEMENTED): health
 * checking is off for it and it counts as healthy (A17).
 */
enum slb_backend_health {
    SLB_HEALTH_UNKNOWN = 0,
    SLB_HEALTH_SERVING,
    SLB_HEALTH_NOT_SERVING,
    SLB_HEALTH_SERVICE_UNKNOWN,
    SLB_HEALTH_PENDING,
    SLB_HEALTH_UNIMPLEMENTED,
};

#define SLB_BACKEND_NAME_MAX 96

/*
 * What the workers' replicas of one backend share with the control loop's
 * backend ("workers" > 1, lib/worker.h): all workers' calls in flight
 * (least_request picks by it) and attempt results for outlier detection,
 * which the control loop takes and judges. Relaxed atomics: each is one
 * counter, nothing is ordered by it.
 * Ownership: reference counted (atomic): the control loop's backend holds
 * one reference, each replica of it one more; the last unref frees it.
 */
struct slb_backend_shared {
    uint32_t refs;
    uint32_t outstanding;          /* calls in flight over all workers (least_request clusters only) */
    uint32_t consecutive_failures; /* attempts failed in a row, over all workers (outlier detection only) */
    uint64_t successes, failures;  /* attempt results since the control loop last took them (outlier only) */
    uint8_t dns_refresh;           /* a worker failed to connect: the control loop looks the host name up again */
};
struct slb_backend_shared *slb_backend_shared_new(void);
void slb_backend_shared_ref(struct slb_backend_shared *sh);
void slb_backend_shared_unref(struct slb_backend_shared *sh);

struct slb_backend;
/* Called once when the last reference goes, before the memory is freed. */
typedef void (*slb_backend_free_cb)(struct slb_backend *be);

struct slb_backend {
    char name[SLB_BACKEND_NAME_MAX]; /* "host:port" as configured or read from etcd */
    struct sockaddr_storage addr;
    unsigned addrlen;
    char zone[32];
    uint32_t weight; /* >= 1; from config or the etcd value */
    uint32_t index;  /* slot in its set (policies index their own arrays by it); UINT32_MAX when not listed */

    uint8_t state;                /* enum slb_backend_state */
    uint8_t health;               /* enum slb_backend_health */
    uint8_t draining;             /* removed from discovery: no new calls */
    uint8_t health_unimpl_logged; /* the "does not implement grpc.health.v1" error was logged (once) */
    uint8_t drained;              /* SLB_DRAIN_* bits: an operator drains it (no new calls, in flight finish) */
    uint64_t ejected_until_ms;    /* outlier ejection: no new calls before this time */
    uint32_t times_ejected;       /* outlier ejection time multiplier (gRFC A50): +1 per ejection, decays */
    uint32_t ejections;           /* ejections since it was listed (the metric) */
    uint8_t ejected_in_interval;  /* ejected at some time in the current outlier interval (no decay) */
    uint8_t eject_capped_logged;  /* the max_ejection_percent line was logged since its last ejection */
    uint32_t ejections_capped;    /* ejections max_ejection_percent prevented (the metric) */
    uint64_t usable_since_ms;     /* slow start: when it (re)joined the usable set */

    uint32_t outstanding; /* calls in flight (least_request) */
    /* passive outlier detection counters */
    uint32_t consecutive_failures;
    uint32_t interval_success, interval_failure;

    struct slb_backend_stats stats; /* attempts, attempt latency, health changes (lib/stats.h) */

    uint32_t discovery_keys;        /* etcd keys naming this address (two keys may) */
    uint32_t dns_refs;              /* host names resolving to this address (lib/resolver.h) */
    uint8_t pinned;                 /* an IP literal of the static list: never removed */
    char *host_name;                /* the host name it was resolved from (for TLS), NULL for IP literals; owned */
    struct slb_backend *_hash_next; /* in the cluster's name index */

    char last_error[160];            /* why its last connect attempt failed ("" before any): TLS reasons too */
    struct slb_tls_stats *tls_stats; /* its cluster's TLS counters (not owned); NULL: none */
    uint32_t refs;
    struct slb_backend_shared *shared; /* workers > 1: shared with the other loops' copies (one reference); NULL */
    uint8_t share_load;                /* a worker's copy in a least_request cluster: calls in flight go to shared */
    uint64_t snap_gen;                 /* a worker's copy: the snapshot that listed it last */
    void *health_check;                /* struct slb_health_check * while active health checking runs */
    void *pool;                        /* struct slb_upstream_pool *, owned by this backend */
    void *cluster;                     /* struct slb_cluster * it belongs to (not owned) */
    slb_backend_free_cb on_free;
    /* Called by slb_backend_set_state() after a change (the cluster's aggregate state). */
    void (*on_state_change)(struct slb_backend *be, int old_state);
};

/* Allocates a backend with one reference; NULL on bad address or no memory. */
struct slb_backend *slb_backend_new(const char *hostport, uint32_t weight);
void slb_backend_ref(struct slb_backend *be);
void slb_backend_unref(struct slb_backend *be);
const char *slb_backend_state_name(int state);
/*
 * The name TLS verifies (and sends as SNI unless it is an IP literal) when
 * the cluster sets no server_name: the host name the backend was resolved
 * from (be->host_name), else the host part of its address.
 */
const char *slb_backend_tls_name(const struct slb_backend *be, char *buf, size_t len);
/* The one setter for the connectivity state: logs old -> new. */
void slb_backend_set_state(struct slb_backend *be, int state);

/*
 * An operator's drain, kept apart from discovery's `draining` (removed): the
 * backend stays listed, takes no new calls, and its calls in flight finish.
 * Two independent sources, so an etcd update never undoes an admin drain.
 */
enum slb_drain_source {
    SLB_DRAIN_ADMIN = 1, /* POST /clusters/<c>/backends/<addr>/drain on the admin listener */
    SLB_DRAIN_ETCD = 2,  /* "drain": true in the backend's etcd value */
};

/* Calls in flight on be, over all workers when its copies share them (least_request). */
static inline uint32_t slb_backend_load(const struct slb_backend *be)
{
    return be->share_load ? __atomic_load_n(&be->shared->outstanding, __ATOMIC_RELAXED) : be->outstanding;
}

/* A call's attempt starts / ends on be: its calls in flight (and all workers', when shared). */
static inline void slb_backend_call_started(struct slb_backend *be)
{
    be->outstanding++;
    if (be->share_load)
        __atomic_add_fetch(&be->shared->outstanding, 1, __ATOMIC_RELAXED);
}

static inline void slb_backend_call_ended(struct slb_backend *be)
{
    be->outstanding--;
    if (be->share_load)
        __atomic_sub_fetch(&be->shared->outstanding, 1, __ATOMIC_RELAXED);
}

/* Whether a new call may be sent to this backend at now_ms. */
static inline int slb_backend_usable(const struct slb_backend *be, uint64_t now_ms)
{
    return (be->draining | be->drained) == 0 && be->state != SLB_BACKEND_TRANSIENT_FAILURE &&
           be->state != SLB_BACKEND_SHUTDOWN &&
           (be->health == SLB_HEALTH_UNKNOWN || be->health == SLB_HEALTH_SERVING ||
            be->health == SLB_HEALTH_UNIMPLEMENTED) &&
           be->ejected_until_ms <= now_ms;
}

/*
 * The listed backends of one cluster, in no particular order. Removal swaps
 * the last element in (O(1)) and keeps each backend's index current. The set
 * holds one reference on each listed backend.
 */
struct slb_backend_set {
    struct slb_backend **items;
    uint32_t n, cap;
    uint64_t version;        /* bumped on membership and weight changes: policies rebuild their tables */
    uint64_t usable_version; /* bumped when a backend's health or ejection changes (no rebuild) */
};

void slb_backend_set_init(struct slb_backend_set *set);
/* Releases the set's references. */
void slb_backend_set_dispose(struct slb_backend_set *set);
/* Takes a new reference on be. 0 or SLB_ENOMEM. */
int slb_backend_set_add(struct slb_backend_set *set, struct slb_backend *be);
/* Drops the set's reference (be may be freed unless the caller holds one). */
void slb_backend_set_remove(struct slb_backend_set *set, struct slb_backend *be);

#endif
