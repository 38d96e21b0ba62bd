/*
 * Worker loops ("workers": N > 1). Each worker is one thread running one
 * libuv loop with its own per-loop context (lib/loop_ctx.h): its own app
 * connections, upstream pools, calls, timers and counters. Nothing on the
 * per-call path is shared between workers or locked.
 *
 * The server's own loop becomes the control loop: it keeps the listening
 * sockets (and accepts on them, handing each new connection to the worker
 * with the fewest), etcd, registration, health checks, outlier evaluation,
 * the admin listener, and the authoritative clusters. Each worker holds a
 * replica of every cluster (lib/cluster.h, cl->replica) that the control
 * loop feeds with immutable snapshots (lib/cluster_snapshot.h): backends,
 * weights, zones, health, ejection, drain, slow-start ramps. A worker
 * applies a snapshot on its own loop (woken by uv_async) and never reads the
 * control loop's memory otherwise.
 *
 * What crosses threads, and how:
 * - control -> worker: snapshots (an atomic pointer swap per cluster and
 *   worker), accepted sockets and commands (a small queue under the group's
 *   mutex), each followed by uv_async_send;
 * - worker -> control: attempt results for outlier detection and calls in
 *   flight for least_request (relaxed atomics in struct slb_backend_shared,
 *   one per backend, reference counted), "stopped" (the group's mutex and
 *   the control loop's async);
 * - reads of a worker's state for /metrics and /clusters: the control loop
 *   pauses every worker between two loop turns (slb_workers_pause) and
 *   resumes them when done, so the reads are ordered by the mutex and no
 *   counter on the call path needs to be atomic.
 *
 * With "workers": 1 (the default) there is no worker: the control loop
 * forwards calls itself, exactly as before.
 *
 * Ownership: the server owns its group (srv->workers); the group owns the
 * workers, their threads and everything in them. A worker's memory is freed
 * only after its thread has been joined.
 */
#ifndef SLB_WORKER_H
#define SLB_WORKER_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "h2_downstream.h"
#include "loop_ctx.h"
#include "route.h"

struct slb_server;
struct slb_cluster;
struct slb_cluster_snapshot;
struct slb_config_cluster;

/* What a worker has of one of the server's listeners. Owner: the worker (array). */
struct slb_worker_listener {
    struct slb_routes routes;      /* to the worker's replica clusters */
    struct slb_downstream_set set; /* its app connections from this listener: caps, timeouts */
};

/* An accepted socket on its way to a worker. */
struct slb_worker_conn {
    int fd;
    uint16_t listener; /* index in the server's listeners */
    uint8_t is_unix;
};

enum slb_worker_phase {
    SLB_WORKER_STARTING = 0,
    SLB_WORKER_RUNNING,
    SLB_WORKER_STOPPING, /* draining its app connections */
    SLB_WORKER_DONE,     /* its loop has no handle left; the thread is about to return */
};

/* Owner: the group (array). Fields below "worker thread only" are touched only by its thread,
 * or by the control thread while the worker is paused or before it started / after it was joined. */
struct slb_worker {
    struct slb_workers *group;
    uint32_t index;
    uv_thread_t thread;
    uint8_t thread_started, joined; /* control thread only */

    /* under group->mu */
    struct slb_worker_conn *inbox; /* accepted sockets to adopt */
    uint32_t n_inbox, cap_inbox;
    struct slb_worker_conn *spare; /* the other array: the worker reads one while the control loop fills this */
    uint32_t cap_spare;
    uint8_t wakeup_open; /* `wakeup` may be sent to (cleared before the worker closes it) */
    uint8_t stop_wanted, reopen_wanted;
    uint64_t stop_grace_ms;
    uint8_t phase;    /* enum slb_worker_phase */
    uint32_t n_conns; /* app connections it holds (accepting picks the worker with the fewest) */
    uint8_t paused;   /* in slb_workers_pause: waiting in its async callback */

    /* one per cluster: the newest snapshot not yet applied (atomic exchange), NULL: none */
    struct slb_cluster_snapshot **mailbox;

    /* worker thread only */
    uv_loop_t loop;
    uv_async_t wakeup; /* the control loop posted something (counted handle) */
    struct slb_loop_ctx ctx;
    struct slb_config_cluster *cluster_cfgs; /* the server's cluster configs with cluster-wide limits split */
    struct slb_cluster *clusters;            /* replicas, same order as the server's */
    size_t n_clusters;
    struct slb_worker_listener *listeners; /* same order as the server's */
    size_t n_listeners;
    uv_timer_t stop_timer, goaway_timer; /* graceful stop, as the server's (counted handles) */
    uint8_t stopping, finished;
    uint8_t loop_inited, ctx_inited;
    struct slb_config_access_log access_log_cfg; /* the server's, with max_lines_per_second split */
};

/* Owner: the server (srv->workers). */
struct slb_workers {
    struct slb_server *srv;
    uint32_t n;
    struct slb_worker *w;
    uv_mutex_t mu;
    uv_cond_t cond;         /* a worker paused, or stopped */
    uint8_t pause_wanted;   /* workers wait in their async callback while set */
    uint32_t n_done;        /* workers whose loop ended */
    uv_async_t control;     /* on the control loop: a worker stopped, or asked for an outlier check */
    uint8_t control_wanted; /* atomic: SLB_NOTIFY_* bits the workers' replicas asked for */
    uv_check_t publish;     /* on the control loop: after each turn, publish clusters that changed */
    void (*on_all_stopped)(struct slb_workers *ws);
    uint8_t stopping, handles_open; /* control thread only */
};

/*
 * Starts n workers for srv (its clusters and listeners set up, its loop the
 * control loop): their replicas get the clusters' first snapshots before the
 * first connection arrives. 0, or < 0 with a message in err (then
 * slb_workers_stop and slb_workers_free as on any stop).
 */
int slb_workers_start(struct slb_workers **out, struct slb_server *srv, uint32_t n, char *err, size_t errlen);

/* Hands an accepted socket (listener index) to the worker with the fewest app connections. */
void slb_workers_hand_off(struct slb_workers *ws, int fd, uint32_t listener, int is_unix);

/* Stops the workers (each drains its app connections for up to grace_ms); on_all_stopped runs on the
 * control loop once every worker's loop has ended. */
void slb_workers_stop(struct slb_workers *ws, uint64_t grace_ms, void (*on_all_stopped)(struct slb_workers *ws));

/* Closes the group's control-loop handles (after on_all_stopped, or for a group that never started). */
void slb_workers_close(struct slb_workers *ws);

/* Joins the threads and frees everything (after slb_workers_close's handles closed: the server's ctx). */
void slb_workers_free(struct slb_workers *ws);

/* Every worker reopens its access log (SIGUSR1). */
void slb_workers_reopen_logs(struct slb_workers *ws);

/*
 * Stops every running worker between two loop turns (at most ~1 s wait per
 * worker; a worker that does not answer is skipped and said so). Until
 * slb_workers_resume the caller may read what the paused workers hold: see
 * slb_workers_paused(). Control loop only; not nested.
 */
void slb_workers_pause(struct slb_workers *ws);
/* Publishes the clusters' changes now and returns once every running worker applied them (a pause):
 * for admin actions, whose answer must hold for the next call. Control loop only. */
void slb_workers_sync(struct slb_workers *ws);
void slb_workers_resume(struct slb_workers *ws);
/* Whether worker i is paused now (its state may be read). */
int slb_workers_paused(const struct slb_workers *ws, uint32_t i);

/* A worker's replica of the server's cluster i, and a backend of it by name (NULL: not listed there). */
struct slb_cluster *slb_worker_cluster(struct slb_worker *w, size_t i);

#endif
