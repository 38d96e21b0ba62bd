/*
 * A scrape: what /metrics and /clusters read of the server, added up over
 * every loop it runs. With "workers": 1 that is the server's own loop alone
 * and every sum is its own value. With workers (lib/worker.h) the server's
 * loop is the control loop (health checks, outlier detection, discovery:
 * the authoritative clusters) and the calls, app connections and pools are
 * on the workers, each with its own counters and replica clusters; a scrape
 * pauses the workers (slb_workers_pause), adds up what each paused worker
 * holds, and resumes them before anything is rendered, so nothing on the
 * call path is atomic and the pause lasts only for the additions.
 *
 * What is added up: the loops' counters and gauges (struct slb_loop_stats,
 * calls per listener/cluster/code, calls in flight, app connections and
 * their caps, buffers, read pauses, access log lines, upstream connections),
 * per listener its app connections and TLS handshakes, per cluster its
 * call counters, waiting calls, TLS handshakes and per-method counters
 * (merged by method name), per backend its attempts, attempt latency,
 * health changes, calls in flight, connections and queued calls. The
 * backend list is the control cluster's (membership, weight, health,
 * ejection and drain are read there); a connectivity state (backend or
 * cluster) is the best over the workers' copies (READY, else CONNECTING,
 * else IDLE, else TRANSIENT_FAILURE), the control loop's own when no
 * worker has the backend.
 *
 * Ownership: a struct slb_scrape lives on its caller's stack, between
 * slb_scrape_begin and slb_scrape_end (control loop only); it owns the sums
 * it allocated.
 */
#ifndef SLB_SCRAPE_H
#define SLB_SCRAPE_H

#include <stdint.h>

#include "access_log.h"
#include "backend.h"
#include "loop_ctx.h"
#include "method_stats.h"
#include "stats.h"
#include "tls.h"

struct slb_server;
struct slb_cluster;
struct slb_worker_listener;

/* One loop a scrape reads. Owner: the caller (array on its stack). */
struct slb_scrape_loop {
    const struct slb_loop_ctx *ctx;
    struct slb_cluster *clusters;          /* same order as the server's */
    struct slb_worker_listener *listeners; /* a worker's, same order as the server's; NULL: the server's own loop */
};

/* One backend of a control cluster, over the loops. Owner: its slb_scrape_cluster (array). */
struct slb_scrape_backend {
    struct slb_backend_stats stats; /* attempts and their latency (workers), health changes (control) */
    uint32_t outstanding;           /* calls in flight */
    uint32_t connections, queued;   /* its pools' open connections, calls waiting in them for a stream */
    uint8_t state;                  /* enum slb_backend_state: the best of the loops' copies */
};

/* One cluster, over the loops. Owner: its slb_scrape (array). */
struct slb_scrape_cluster {
    struct slb_cluster_stats stats;
    struct slb_tls_stats tls_stats;
    uint32_t n_waiting;
    uint8_t state;                          /* enum slb_backend_state: aggregate, the best of the loops' */
    const struct slb_method_stats *methods; /* the control cluster's, or merged (below) */
    struct slb_method_stats merged;         /* workers: per method over the loops, by name (owned) */
    struct slb_scrape_backend *backends;    /* [j]: the control cluster's set.items[j] */
};

/* One listener, over the loops. Owner: its slb_scrape (array). */
struct slb_scrape_listener {
    uint32_t n_conns;
    struct slb_tls_stats tls_stats;
};

/* Owner: the caller (stack). */
struct slb_scrape {
    const struct slb_server *srv;
    struct slb_loop_stats stats; /* calls_by_code points to the sum below (NULL when the server keeps none) */
    uint64_t *calls_by_code;     /* owned */
    uint64_t read_pauses, buffered;
    uint32_t n_calls, n_app_conns, max_app_conns, n_held_back, upstream_conns;
    struct slb_access_log_stats access_log;
    struct slb_scrape_listener *listeners; /* same order as the server's */
    struct slb_scrape_cluster *clusters;   /* same order as the server's */
    struct slb_scrape_backend *_backends;  /* every cluster's, one allocation */
    uint32_t n_workers;                    /* the server's worker loops (0: none, "workers": 1) */
    uint32_t n_workers_skipped;            /* ... that did not answer the pause: their counts are missing */
    uint64_t pause_ns;                     /* how long the workers were paused */
};

/*
 * Pauses the server's workers (if any), adds up what every loop holds,
 * resumes them. with_methods: merge the per-method counters too (/metrics).
 * 0, or SLB_ENOMEM (then slb_scrape_end all the same).
 */
int slb_scrape_begin(struct slb_scrape *s, const struct slb_server *srv, int with_methods);
/* Frees what the scrape allocated. */
void slb_scrape_end(struct slb_scrape *s);

/*
 * The additions alone, over loops[0, n) (loops[0]: the server's own loop and
 * clusters; the others paused workers'). workers: the server runs workers,
 * so connectivity states come from loops[1..] (the control loop's are only
 * a fallback). For slb_scrape_begin and unit tests. 0 or SLB_ENOMEM.
 */
int slb_scrape_collect(struct slb_scrape *s, const struct slb_server *srv, const struct slb_scrape_loop *loops,
                       uint32_t n, int workers, int with_methods);

/* Calls in flight on be (listed in the server's cluster cl) over every loop; pauses the workers to read them. */
uint32_t slb_scrape_backend_outstanding(const struct slb_server *srv, const struct slb_cluster *cl,
                                        const struct slb_backend *be);

/* Whether be may take new calls at now, its connectivity over the loops being state. */
int slb_scrape_backend_usable(const struct slb_backend *be, int state, uint64_t now);

#endif
