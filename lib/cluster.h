/*
 * A cluster: a named set of backends with its policy. Discovery (static
 * list or etcd) adds, updates and removes backends; the call module picks
 * one per attempt. Requests that find no usable backend wait on the
 * cluster's waiter list and are woken (cl->wake, on the next loop turn) by
 * events that may make one usable: a backend added, leaving connection
 * backoff, turning healthy, or coming back from ejection. While any wait,
 * the cluster's probe timer asks the pools of backends in connection
 * backoff for early connect attempts (slb_upstream_pool_probe, at most one
 * per backend per backoff.probe_interval_ms), so a backend that comes back
 * takes the waiting calls within about that long; with none waiting, the
 * timer stops and the backoff alone applies.
 * A backend whose health check has not answered yet (SLB_HEALTH_PENDING) is
 * not picked; calls that find only such backends wait for the first answer
 * (even without wait-for-ready, as gRPC queues calls while CONNECTING).
 *
 * The cluster never sees the call: it holds only the slb_cluster_waiter its
 * user embedded.
 *
 * Ownership: clusters are owned by the server (array, same order as the
 * config); each holds one reference on every listed backend through its set.
 */
#ifndef SLB_CLUSTER_H
#define SLB_CLUSTER_H

#include <stdint.h>

#include <uv.h>

#include "backend.h"
#include "method_stats.h"
#include "lb.h"
#include "list.h"
#include "log.h"
#include "outlier.h"
#include "method_config.h"
#include "resolver.h"
#include "tls.h"

struct slb_loop_ctx;
struct slb_config_cluster;
struct slb_etcd;
struct slb_discovery;
struct slb_table_write;

/* A request waiting for a usable backend. Owner: embedded in its user; linked by the cluster. */
struct slb_cluster_waiter {
    struct slb_list link;
    struct slb_cluster *cluster; /* NULL when not waiting */
};

struct slb_cluster {
    struct slb_loop_ctx *ctx;
    const struct slb_config_cluster *cfg;
    struct slb_backend_set set;
    struct slb_lb lb;
    struct slb_discovery *discovery;   /* when fed by etcd */
    struct slb_method_table methods;   /* from cfg->service_config_json */
    uint32_t n_calls;                  /* calls routed here and not finished (max_calls) */
    uv_timer_t outlier_timer;          /* the next interval evaluation or ejection end, whichever is first */
    uint64_t outlier_next_interval_ms; /* when the current outlier interval ends */
    uint8_t has_outlier_timer;
    uint8_t logged_shared_key; /* the hash_on source_ip loopback note was logged (once per cluster) */
    uint32_t n_by_state[SLB_BACKEND_SHUTDOWN + 1]; /* listed backends per connectivity state */
    uint8_t state;           /* aggregate (gRPC): READY if any is, else CONNECTING, else IDLE, else TRANSIENT_FAILURE */
    struct slb_list waiters; /* struct slb_cluster_waiter, oldest first */
    uint32_t n_waiting;
    uint32_t n_health_pending;      /* listed backends whose health check has not answered yet (SLB_HEALTH_PENDING) */
    uv_timer_t wake_timer;          /* wakes the waiters on the next loop turn */
    uv_timer_t probe_timer;         /* while calls wait: early connect attempts (probe_interval_ms) */
    struct slb_log_limit probe_log; /* "probing" logged once per SLB_LOG_LIMIT_MS */
    /* the persisted table (etcd-fed clusters with state_dir; lib/cluster_table.c) */
    const char *state_dir;      /* NULL: not persisted (static, no state_dir, or handed to a reload) */
    uv_timer_t state_timer;     /* writes the table SLB_CLUSTER_STATE_WRITE_MS after a change (one write per burst) */
    uint8_t has_state_timer;    /* state_timer was initialised (and is counted) */
    uint8_t state_dirty;        /* the table changed since the last write */
    uint8_t state_write_failed; /* the last write failed (logged once until one succeeds) */
    struct slb_table_write *state_write;        /* the write on its way (thread pool), or NULL */
    uint8_t table_stale;                        /* the table is not from this server's own etcd listing yet */
    uint8_t table_source;                       /* enum slb_table_source: where a stale table came from */
    int64_t table_as_of_unix_ms;                /* a stale table: when it was last known to match etcd */
    int64_t etcd_lost_unix_ms;                  /* when the watch lost etcd; 0 while connected */
    void (*wake)(struct slb_cluster_waiter *w); /* its user's: try again (w is unlinked) */
    struct slb_cluster_stats stats;             /* calls, latency, bytes, retries, hedges, limits (lib/stats.h) */
    struct slb_method_stats method_stats;       /* per method, when "metrics".max_methods is set (the server's) */
    uint32_t index;                             /* position in the server's clusters (the loop's stats arrays) */
    /* reload: admin drains of the replaced server's cluster, for backends its first etcd listing
     * has not brought yet (matched on add, dropped once that listing is done). Owned here. */
    char (*admin_drains_pending)[SLB_BACKEND_NAME_MAX];
    uint32_t n_admin_drains_pending;
    struct slb_resolver resolver; /* host-name entries: their addresses become backends */
    struct slb_backend **_index;  /* address -> backend (chained through be->_hash_next) */
    uint32_t _index_size;

    struct slb_tls_stats tls_stats; /* TLS handshakes to its backends (calls and health checks) */
    /* "backend B: why" of the last backend that entered TRANSIENT_FAILURE, until a backend connects ("" then):
     * said to calls that find no reachable backend, also while the failed one tries again */
    char last_connect_error[272];
    /* workers > 1 (lib/worker.h, lib/cluster_snapshot.h) */
    uint8_t replica;             /* a worker's copy: backends, health, ejection and drain come from snapshots */
    uint8_t shares;              /* the control loop's cluster: its backends get a shared block for the workers */
    uint32_t snap_first_pending; /* replica: the control's host names whose first lookup has not ended */
    char snap_unresolved[256];   /* replica: a host name of the control's that does not resolve ("": none) */
    uint64_t snap_gen;           /* replica: the snapshot applied last (marks the backends it lists) */
    uint64_t pub_version, pub_usable_version; /* control: the set versions its last snapshot had */
    uint32_t pub_first_pending;               /* control: the first lookups pending at its last snapshot */
    uint8_t pub_done;                         /* control: a snapshot was published */
    /* replica: tell the control loop (lib/worker.c): a backend failed consecutive_failures times in a row
     * (SLB_NOTIFY_OUTLIER), or calls began to wait (SLB_NOTIFY_WAITING) */
    void (*notify_control)(struct slb_cluster *cl, int what);
    struct slb_cluster *primary; /* replica: the control loop's cluster (only its remote_waiting is touched) */
    uint32_t remote_waiting;     /* control (atomic): calls waiting in the workers' replicas, for the probes */
    uint8_t note_logged;         /* control (atomic): a replica logged the hash_on source_ip note */
};

enum { SLB_NOTIFY_OUTLIER = 1, SLB_NOTIFY_WAITING = 2, SLB_NOTIFY_DNS = 4 };

enum slb_table_source { SLB_TABLE_ETCD = 0, SLB_TABLE_STATE_FILE, SLB_TABLE_RELOAD };

#define SLB_CLUSTER_STATE_WRITE_MS 1000

int slb_cluster_init(struct slb_cluster *cl, struct slb_loop_ctx *ctx, const struct slb_config_cluster *cfg,
                     void (*wake)(struct slb_cluster_waiter *w));
/*
 * A worker's replica of cfg (lib/worker.h): no discovery, host names, health
 * checks or outlier evaluation of its own; slb_cluster_apply_snapshot feeds
 * it what the control loop's cluster knows. Its calls, pools, waiters and
 * counters are the worker's.
 */
int slb_cluster_init_replica(struct slb_cluster *cl, struct slb_loop_ctx *ctx, const struct slb_config_cluster *cfg,
                             void (*wake)(struct slb_cluster_waiter *w));
/* The control loop's cluster, with workers: every backend gets a shared block (now and when added). */
int slb_cluster_share(struct slb_cluster *cl);
/* Whether a once-per-cluster note (hash_on source_ip on loopback) is to be logged now: the first time for
 * this cluster, over all workers' replicas (the flag is the control loop's cluster's, exchanged atomically). */
static inline int slb_cluster_first_note(struct slb_cluster *cl)
{
    return cl->primary == NULL || !__atomic_exchange_n(&cl->primary->note_logged, 1, __ATOMIC_RELAXED);
}
/* First answers calls still wait for: health checks (PENDING) and host names' first lookups. */
uint32_t slb_cluster_first_pending(const struct slb_cluster *cl);
/* For lib/cluster_snapshot.c: upsert with the host name it came from; waiters try again (next turn). */
int slb__cluster_upsert_named(struct slb_cluster *cl, const char *addr, uint32_t weight, const char *zone,
                              const char *host_name);
void slb__cluster_wake(struct slb_cluster *cl);
/* Control loop with workers: takes the attempt results the workers left in the shared blocks (outlier
 * detection), and ejects at once a backend that failed consecutive_failures times in a row. */
void slb_cluster_collect_shared(struct slb_cluster *cl);
/* Control loop with workers: calls wait in the workers; probe backends in backoff as for waiters here. */
void slb_cluster_probe_for_replicas(struct slb_cluster *cl);
/* Control loop with workers: host names whose addresses a worker failed to connect to are looked up soon. */
void slb_cluster_refresh_names_for_replicas(struct slb_cluster *cl);
/* Closes the cluster's timers (counted in ctx) and releases its backends. */
void slb_cluster_dispose(struct slb_cluster *cl);
/* Adds a backend or updates its weight/zone. 0 or SLB_EADDR/SLB_ENOMEM. */
int slb_cluster_upsert(struct slb_cluster *cl, const char *addr, uint32_t weight, const char *zone);
/* The backend listed under addr, or NULL. O(1). */
struct slb_backend *slb_cluster_find(struct slb_cluster *cl, const char *addr);
/* Starts following cfg->etcd_prefix (no-op for static clusters). 0 or < 0. */
int slb_cluster_start_discovery(struct slb_cluster *cl, struct slb_etcd *etcd);
/*
 * Persisted tables (lib/cluster_table.c), after slb_cluster_start_discovery:
 * seeds an etcd-fed cluster's table from `from` (the same cluster of the
 * server a reload replaces: same name, prefix and etcd endpoints) or else
 * from its file under state_dir, marked stale until etcd's first listing
 * replaces it; with state_dir, writes the table there after changes.
 */
void slb_cluster_seed_table(struct slb_cluster *cl, struct slb_cluster *from, const char *state_dir);
/* Writes a pending change now and persists no more (the server is replaced or stops). */
void slb_cluster_persist_stop(struct slb_cluster *cl);
/* "etcd", "state_file", "reload". */
const char *slb_table_source_name(int source);
/* For the sink (lib/cluster.c): the table changed / etcd listed it / etcd reachability; on dispose. */
void slb__cluster_table_changed(struct slb_cluster *cl);
void slb__cluster_table_listed(struct slb_cluster *cl, int64_t revision);
void slb__cluster_table_etcd_state(struct slb_cluster *cl, int connected);
void slb__cluster_table_dispose(struct slb_cluster *cl);
/* The outcome of one call attempt on be, for passive outlier detection. */
void slb_cluster_report(struct slb_cluster *cl, struct slb_backend *be, int success);
/* Waits for a usable backend (until woken or taken out). 0, or SLB_ELIMIT at max_waiting_calls. */
int slb_cluster_wait(struct slb_cluster *cl, struct slb_cluster_waiter *w);
/* Stops waiting (no wake follows). Harmless if not waiting. */
void slb_cluster_unwait(struct slb_cluster_waiter *w);
/* Removes a backend: no new calls, in-flight calls finish (draining). */
void slb_cluster_remove(struct slb_cluster *cl, const char *addr);
/*
 * Sets (on) or clears one source (enum slb_drain_source) of an operator's
 * drain. While any source is set the backend takes no new calls (every
 * policy skips it) and its calls in flight finish; clearing the last one
 * wakes calls waiting for a usable backend. Logged when it changes.
 */
void slb_cluster_set_drain(struct slb_cluster *cl, struct slb_backend *be, int source, int on);
/*
 * Reload: the admin drains of `old` (the replaced server's cluster of the
 * same name) carry over, so `systemctl reload` never undrains a backend:
 * at once for backends listed now, and for an etcd cluster on the backends
 * its first listing brings. 0 or SLB_ENOMEM.
 */
int slb_cluster_inherit_admin_drains(struct slb_cluster *cl, const struct slb_cluster *old);
/* Ends be's outlier ejection now (its multiplier is kept). 1 if it was ejected, else 0. */
int slb_cluster_clear_ejection(struct slb_cluster *cl, struct slb_backend *be);
/* Whether the cluster's first discovery is done: static at once, etcd after its first listing. */
int slb_cluster_discovered(const struct slb_cluster *cl);
/* A reload: the cluster's host names start from what prev (the same cluster of the replaced server) resolved. */
void slb_cluster_seed_names(struct slb_cluster *cl, const struct slb_cluster *prev);
/* A host name of the cluster that has not resolved yet (for an UNAVAILABLE message), or NULL. */
const char *slb_cluster_unresolved_host(const struct slb_cluster *cl);
/* Picks a backend for an attempt, honouring the tried set; NULL when none can take it. */
struct slb_backend *slb_cluster_pick(struct slb_cluster *cl, uint64_t hash, int has_hash,
                                     const struct slb_tried *tried);

/* Counts a hedged attempt (sidelb_upstream_hedges_total): the hook for hedging, called once per extra
 * attempt it starts. Nothing calls it yet, so the metric stays 0 until hedging is wired. */
static inline void slb_cluster_stats_hedge(struct slb_cluster *cl)
{
    cl->stats.hedges++;
}

#endif
