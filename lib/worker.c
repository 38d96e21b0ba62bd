#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "access_log.h"
#include "buf.h"
#include "call.h"
#include "cluster.h"
#include "cluster_snapshot.h"
#include "common.h"
#include "config.h"
#include "h2_mem.h"
#include "log.h"
#include "server.h"

#define PAUSE_WAIT_MS    1000
#define GOAWAY_NOTICE_MS 250

/* A cluster-wide or process-wide limit split between n workers (0: none stays none; never below 1). */
static uint32_t split(uint32_t limit, uint32_t n)
{
    if (limit == 0)
        return 0;
    return (limit + n - 1) / n;
}

/* ---- the worker's own loop (its thread) ---- */

static void worker_finish(struct slb_worker *w);

static void publish_conn_count(struct slb_worker *w)
{
    uv_mutex_lock(&w->group->mu);
    w->n_conns = w->ctx.n_app_conns;
    uv_mutex_unlock(&w->group->mu);
}

static void on_downstream_gone(struct slb_downstream *dc)
{
    struct slb_worker *w = slb_container_of(dc->ctx, struct slb_worker, ctx);

    publish_conn_count(w);
    if (w->stopping && slb_list_empty(&w->ctx.downstreams))
        worker_finish(w);
}

/* A replica's backend failed consecutive_failures times in a row (the control loop ejects it now), or
 * calls began to wait in a replica (the control loop probes its health checks in backoff). */
static void notify_control(struct slb_cluster *cl, int what)
{
    struct slb_worker *w = slb_container_of(cl->ctx, struct slb_worker, ctx);

    __atomic_or_fetch(&w->group->control_wanted, (uint8_t)what, __ATOMIC_RELAXED);
    uv_async_send(&w->group->control);
}

static void on_ctx_closed(struct slb_loop_ctx *ctx)
{
    slb_access_log_close(ctx->access_log); /* every call is gone: its last lines are in */
    ctx->access_log = NULL;
}

/* Closes everything the worker owns; its loop ends once the last handle (and log write) is done. */
static void worker_finish(struct slb_worker *w)
{
    if (w->finished)
        return;
    w->finished = 1;
    slb_conn_ctx_close_handle(&w->ctx.io, (uv_handle_t *)&w->stop_timer);
    slb_conn_ctx_close_handle(&w->ctx.io, (uv_handle_t *)&w->goaway_timer);
    slb_loop_ctx_close_connections(&w->ctx);
    for (size_t i = 0; i < w->n_clusters; i++)
        slb_cluster_dispose(&w->clusters[i]);
    uv_mutex_lock(&w->group->mu);
    w->phase = SLB_WORKER_STOPPING;
    w->wakeup_open = 0;                 /* nobody sends to it from here on */
    uv_cond_broadcast(&w->group->cond); /* a pause waiting for it stops waiting */
    uv_mutex_unlock(&w->group->mu);
    slb_conn_ctx_close_handle(&w->ctx.io, (uv_handle_t *)&w->wakeup);
    slb_loop_ctx_close(&w->ctx, on_ctx_closed);
}

static void on_stop_timer(uv_timer_t *t)
{
    struct slb_worker *w = slb_container_of(t, struct slb_worker, stop_timer);
    slb_warn("worker %u: grace period over with %u calls in flight; closing them", w->index, w->ctx.n_calls);
    worker_finish(w);
}

/* Graceful stop, second step: GOAWAY with the last stream taken (as the server's). */
static void on_goaway_timer(uv_timer_t *t)
{
    slb_downstream_shutdown_all(&slb_container_of(t, struct slb_worker, goaway_timer)->ctx);
}

static void worker_stop(struct slb_worker *w, uint64_t grace_ms)
{
    if (w->stopping)
        return;
    w->stopping = 1; /* (not ctx.stopping: calls that still come during the drain may need new connections) */
    if (slb_list_empty(&w->ctx.downstreams)) {
        worker_finish(w);
        return;
    }
    uv_timer_start(&w->stop_timer, on_stop_timer, grace_ms, 0);
    slb_downstream_notice_all(&w->ctx);
    uv_timer_start(&w->goaway_timer, on_goaway_timer, grace_ms < GOAWAY_NOTICE_MS ? grace_ms : GOAWAY_NOTICE_MS, 0);
}

/*
 * Applies the snapshots in the mailbox. Called with the group's mutex held,
 * returns with it held; released while each is applied.
 */
static void apply_mailbox_locked(struct slb_worker *w)
{
    struct slb_workers *ws = w->group;

    for (size_t i = 0; i < w->n_clusters; i++) {
        struct slb_cluster_snapshot *snap = w->mailbox[i];
        if (snap == NULL)
            continue;
        w->mailbox[i] = NULL;
        uv_mutex_unlock(&ws->mu);
        if (!w->finished)
            slb_cluster_apply_snapshot(&w->clusters[i], snap);
        slb_cluster_snapshot_unref(snap);
        uv_mutex_lock(&ws->mu);
    }
}

/*
 * Called with the group's mutex held: waits while the control loop reads
 * this worker's state. The snapshots published before the pause was asked
 * for are applied first, so a pause is also a barrier (slb_workers_sync).
 */
static void pause_here(struct slb_worker *w)
{
    struct slb_workers *ws = w->group;

    if (!ws->pause_wanted)
        return;
    apply_mailbox_locked(w);
    if (!ws->pause_wanted)
        return;
    w->paused = 1;
    uv_cond_broadcast(&ws->cond);
    while (ws->pause_wanted)
        uv_cond_wait(&ws->cond, &ws->mu);
    w->paused = 0;
}

static void on_wakeup(uv_async_t *a)
{
    struct slb_worker *w = slb_container_of(a, struct slb_worker, wakeup);
    struct slb_workers *ws = w->group;
    struct slb_worker_conn *conns;
    uint32_t n_conns, cap;
    int stop, reopen;
    uint64_t grace;

    uv_mutex_lock(&ws->mu);
    apply_mailbox_locked(w);
    pause_here(w);
    /* take the inbox (swapped with the spare array, so the control loop can append meanwhile) */
    conns = w->inbox;
    n_conns = w->n_inbox;
    cap = w->cap_inbox;
    w->inbox = w->spare;
    w->cap_inbox = w->cap_spare;
    w->n_inbox = 0;
    w->n_conns += n_conns; /* until adopted and counted: the next hand-off must see them */
    w->spare = conns;
    w->cap_spare = cap;
    stop = w->stop_wanted;
    grace = w->stop_grace_ms;
    reopen = w->reopen_wanted;
    w->reopen_wanted = 0;
    uv_mutex_unlock(&ws->mu);

    for (uint32_t i = 0; i < n_conns; i++) {
        struct slb_worker_conn *c = &conns[i];
        int rv;
        if (w->stopping) {
            close(c->fd); /* accepted just before the listener closed */
            continue;
        }
        if ((rv = slb_downstream_adopt(&w->listeners[c->listener].set, c->fd, c->is_unix, on_downstream_gone)) != 0)
            slb_warn("worker %u: cannot take an app connection: %s", w->index, slb_strerror(rv));
    }
    if (n_conns > 0)
        publish_conn_count(w);
    if (reopen)
        slb_access_log_reopen(w->ctx.access_log);
    if (stop)
        worker_stop(w, grace);
}

static void worker_main(void *arg)
{
    struct slb_worker *w = arg;
    struct slb_workers *ws = w->group;

    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* every handle closed: free what the loop's objects left, on this thread (its pools are its own) */
    slb_call_free_list_drain(&w->ctx);
    slb_loop_ctx_dispose(&w->ctx);
    if (uv_loop_close(&w->loop) != 0)
        slb_warn("worker %u: its loop still had handles at the end", w->index);
    slb_chunk_pool_drain();
    slb_h2_mem_thread_end();
    uv_mutex_lock(&ws->mu);
    w->phase = SLB_WORKER_DONE;
    ws->n_done++;
    uv_cond_broadcast(&ws->cond);
    uv_mutex_unlock(&ws->mu);
    uv_async_send(&ws->control); /* the control loop joins this thread before it closes `control` */
}

/* ---- setting a worker up (on the control thread, before its thread starts) ---- */

static int worker_listeners_init(struct slb_worker *w, const struct slb_config *cfg)
{
    if ((w->listeners = calloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof(*w->listeners))) == NULL)
        return SLB_ENOMEM;
    w->n_listeners = cfg->n_listeners;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct slb_config_listener *lc = &cfg->listeners[i];
        struct slb_worker_listener *l = &w->listeners[i];
        if ((l->routes.v = calloc(lc->n_routes + 1, sizeof(*l->routes.v))) == NULL)
            return SLB_ENOMEM;
        l->routes.n = lc->n_routes;
        for (size_t r = 0; r < lc->n_routes; r++) {
            l->routes.v[r].service = lc->routes[r].service;
            l->routes.v[r].len = strlen(lc->routes[r].service);
            l->routes.v[r].cluster = &w->clusters[lc->routes[r].cluster_index];
        }
        l->routes.default_cluster = lc->default_cluster_index >= 0 ? &w->clusters[lc->default_cluster_index] : NULL;
        slb_downstream_set_init(&l->set, &w->ctx, lc->name, &l->routes);
        l->set.index = (uint32_t)i;
        l->set.max_concurrent_streams = lc->max_concurrent_streams;
        l->set.max_premature_resets = lc->max_premature_resets;
        l->set.max_header_list_size = lc->max_header_list_size;
        l->set.max_connections = split(lc->max_connections, w->group->n);
        l->set.handshake_timeout_ms = lc->handshake_timeout_ms;
        l->set.tls = lc->tls.ctx;
        l->set.idle_timeout_ms = lc->idle_timeout_ms;
        l->set.stream_idle_timeout_ms = lc->stream_idle_timeout_ms;
    }
    return 0;
}

static int worker_init(struct slb_worker *w, struct slb_server *srv, char *err, size_t errlen)
{
    const struct slb_config *cfg = srv->cfg;
    uint32_t n = w->group->n;
    struct slb_config_budgets budgets = cfg->budgets;
    size_t rows = cfg->n_listeners * (cfg->n_clusters + 1);
    int rv;

    if ((rv = uv_loop_init(&w->loop)) != 0) {
        snprintf(err, errlen, "worker %u: cannot make its loop: %s", w->index, slb_strerror(rv));
        return rv;
    }
    w->loop_inited = 1;
    rv = slb_loop_ctx_init(&w->ctx, &w->loop, slb_call_on_timer);
    w->ctx_inited = 1;
    w->ctx.down_handler = &slb_call_downstream_handler;
    w->ctx.up_handler = &slb_call_upstream_handler;
    w->ctx.call_io = &slb_call_h2_transport;
    w->ctx.max_app_conns = split(srv->ctx.max_app_conns, n);
    budgets.total_bytes = split(budgets.total_bytes, n);
    slb_loop_ctx_set_budgets(&w->ctx, &budgets);
    uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    slb_conn_ctx_handle_opened(&w->ctx.io);
    w->wakeup_open = 1;
    uv_timer_init(&w->loop, &w->stop_timer);
    slb_conn_ctx_handle_opened(&w->ctx.io);
    uv_timer_init(&w->loop, &w->goaway_timer);
    slb_conn_ctx_handle_opened(&w->ctx.io);
    if (rv != 0)
        goto nomem;
    w->ctx.stats.calls_n_listeners = (uint32_t)cfg->n_listeners;
    w->ctx.stats.calls_n_clusters = (uint32_t)cfg->n_clusters;
    if ((w->ctx.stats.calls_by_code = calloc(rows > 0 ? rows : 1, SLB_STATS_GRPC_CODES * sizeof(uint64_t))) == NULL ||
        (w->mailbox = calloc(cfg->n_clusters + 1, sizeof(*w->mailbox))) == NULL ||
        (w->cluster_cfgs = calloc(cfg->n_clusters + 1, sizeof(*w->cluster_cfgs))) == NULL ||
        (w->clusters = calloc(cfg->n_clusters + 1, sizeof(*w->clusters))) == NULL)
        goto nomem;
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        struct slb_config_cluster *cc = &w->cluster_cfgs[i];
        *cc = cfg->clusters[i]; /* a shallow copy: only the numbers below differ */
        cc->max_calls = split(cc->max_calls, n);
        cc->max_waiting_calls = split(cc->max_waiting_calls, n);
        cc->max_pending_per_backend = split(cc->max_pending_per_backend, n);
        cc->max_connections_per_backend = split(cc->max_connections_per_backend, n);
        w->n_clusters++; /* disposed on a failed start too */
        if ((rv = slb_cluster_init_replica(&w->clusters[i], &w->ctx, cc, slb_call_wake)) != 0 ||
            (rv = slb_method_stats_init(&w->clusters[i].method_stats, cfg->metrics_max_methods)) != 0) {
            snprintf(err, errlen, "worker %u: cluster %s: %s", w->index, cc->name, slb_strerror(rv));
            return rv;
        }
        w->clusters[i].index = (uint32_t)i;
        w->clusters[i].notify_control = notify_control;
        w->clusters[i].primary = &srv->clusters[i];
    }
    if ((rv = worker_listeners_init(w, cfg)) != 0)
        goto nomem;
    if (cfg->access_log.path != NULL) {
        struct slb_config_access_log al = cfg->access_log;
        al.max_lines_per_second = split(al.max_lines_per_second, n);
        w->access_log_cfg = al;
        if ((rv = slb_access_log_open(&w->ctx.access_log, &w->loop, &w->access_log_cfg, err, errlen)) != 0)
            return rv;
    }
    return 0;
nomem:
    snprintf(err, errlen, "worker %u: out of memory", w->index);
    return SLB_ENOMEM;
}

/* Frees what worker_init allocated (its loop has ended and its thread was joined, or it never ran). */
static void worker_dispose(struct slb_worker *w)
{
    for (size_t i = 0; w->mailbox != NULL && i < w->n_clusters; i++)
        slb_cluster_snapshot_unref(w->mailbox[i]);
    for (size_t i = 0; i < w->n_clusters; i++)
        slb_method_stats_dispose(&w->clusters[i].method_stats);
    for (size_t i = 0; i < w->n_listeners; i++)
        free(w->listeners[i].routes.v);
    free(w->ctx.stats.calls_by_code);
    free(w->listeners);
    free(w->clusters);
    free(w->cluster_cfgs);
    free(w->mailbox);
    free(w->inbox);
    free(w->spare);
}

/* A worker that never ran: close its handles and run its loop here until they are closed. */
static void worker_abandon(struct slb_worker *w)
{
    if (!w->loop_inited)
        return;
    if (w->ctx_inited) {
        if (!w->finished)
            worker_finish(w);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        slb_call_free_list_drain(&w->ctx);
        slb_loop_ctx_dispose(&w->ctx);
    }
    uv_loop_close(&w->loop);
}

/* ---- the control loop's side ---- */

/* Hands a snapshot to every worker still running (its mailbox keeps only the newest). */
static void post_snapshot(struct slb_workers *ws, size_t cluster, struct slb_cluster_snapshot *snap)
{
    uv_mutex_lock(&ws->mu);
    for (uint32_t i = 0; i < ws->n; i++) {
        struct slb_worker *w = &ws->w[i];
        struct slb_cluster_snapshot *old = w->mailbox[cluster];
        if (w->phase == SLB_WORKER_DONE || (!w->wakeup_open && w->thread_started))
            continue;
        slb_cluster_snapshot_ref(snap);
        w->mailbox[cluster] = snap;
        slb_cluster_snapshot_unref(old);
        if (w->wakeup_open && w->thread_started)
            uv_async_send(&w->wakeup);
    }
    uv_mutex_unlock(&ws->mu);
}

/* After each control loop turn: the clusters whose backends changed go out to the workers. */
static void on_publish(uv_check_t *h)
{
    struct slb_workers *ws = h->data;
    struct slb_server *srv = ws->srv;

    for (size_t i = 0; i < srv->n_clusters; i++) {
        struct slb_cluster_snapshot *snap;
        if (!slb_cluster_snapshot_due(&srv->clusters[i]))
            continue;
        if ((snap = slb_cluster_snapshot_take(&srv->clusters[i])) == NULL) {
            slb_warn("cluster %s: out of memory for the workers' snapshot; retried next turn",
                     srv->clusters[i].cfg->name);
            continue;
        }
        post_snapshot(ws, i, snap);
        slb_cluster_snapshot_unref(snap);
    }
}

static void join_all(struct slb_workers *ws)
{
    for (uint32_t i = 0; i < ws->n; i++)
        if (ws->w[i].thread_started) {
            uv_thread_join(&ws->w[i].thread);
            ws->w[i].thread_started = 0;
            ws->w[i].joined = 1;
        }
}

static void on_control(uv_async_t *a)
{
    struct slb_workers *ws = slb_container_of(a, struct slb_workers, control);
    struct slb_server *srv = ws->srv;
    uint32_t done, started = 0;
    void (*cb)(struct slb_workers *);

    uint8_t wanted = __atomic_exchange_n(&ws->control_wanted, 0, __ATOMIC_RELAXED);

    for (size_t i = 0; i < srv->n_clusters && !ws->stopping; i++) {
        if (wanted & SLB_NOTIFY_OUTLIER)
            slb_cluster_collect_shared(&srv->clusters[i]);
        if (wanted & SLB_NOTIFY_WAITING)
            slb_cluster_probe_for_replicas(&srv->clusters[i]);
        if (wanted & SLB_NOTIFY_DNS)
            slb_cluster_refresh_names_for_replicas(&srv->clusters[i]);
    }
    if (!ws->stopping || ws->on_all_stopped == NULL)
        return;
    uv_mutex_lock(&ws->mu);
    done = ws->n_done;
    uv_mutex_unlock(&ws->mu);
    for (uint32_t i = 0; i < ws->n; i++)
        started += ws->w[i].thread_started || ws->w[i].joined;
    if (done < started)
        return;
    join_all(ws); /* each has sent its last async: nothing of ours is touched after this */
    cb = ws->on_all_stopped;
    ws->on_all_stopped = NULL;
    cb(ws);
}

int slb_workers_start(struct slb_workers **out, struct slb_server *srv, uint32_t n, char *err, size_t errlen)
{
    struct slb_workers *ws = calloc(1, sizeof(*ws));
    int rv;

    *out = ws;
    if (ws == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLB_ENOMEM;
    }
    ws->srv = srv;
    uv_mutex_init(&ws->mu);
    uv_cond_init(&ws->cond);
    uv_async_init(srv->loop, &ws->control, on_control);
    slb_conn_ctx_handle_opened(&srv->ctx.io);
    uv_check_init(srv->loop, &ws->publish);
    slb_conn_ctx_handle_opened(&srv->ctx.io);
    ws->publish.data = ws;
    ws->handles_open = 1;
    if ((ws->w = calloc(n, sizeof(*ws->w))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLB_ENOMEM;
    }
    ws->n = n;
    for (size_t i = 0; i < srv->n_clusters; i++)
        if (slb_cluster_share(&srv->clusters[i]) != 0) {
            snprintf(err, errlen, "out of memory");
            return SLB_ENOMEM;
        }
    for (uint32_t i = 0; i < n; i++) {
        ws->w[i].group = ws;
        ws->w[i].index = i;
        if ((rv = worker_init(&ws->w[i], srv, err, errlen)) != 0)
            return rv;
    }
    on_publish(&ws->publish); /* the first snapshots: in every mailbox before the first connection */
    uv_check_start(&ws->publish, on_publish);
    for (uint32_t i = 0; i < n; i++) {
        struct slb_worker *w = &ws->w[i];
        w->phase = SLB_WORKER_RUNNING;
        if ((rv = uv_thread_create(&w->thread, worker_main, w)) != 0) {
            snprintf(err, errlen, "worker %u: cannot start its thread: %s", i, slb_strerror(rv));
            return rv;
        }
        uv_mutex_lock(&ws->mu);
        w->thread_started = 1;
        uv_async_send(&w->wakeup); /* apply the first snapshots */
        uv_mutex_unlock(&ws->mu);
    }
    slb_notice("%u worker loops started", n);
    return 0;
}

void slb_workers_hand_off(struct slb_workers *ws, int fd, uint32_t listener, int is_unix)
{
    struct slb_worker *best = NULL;

    uv_mutex_lock(&ws->mu);
    for (uint32_t i = 0; i < ws->n; i++) {
        struct slb_worker *w = &ws->w[i];
        if (w->wakeup_open && w->thread_started && !w->stop_wanted &&
            (best == NULL || w->n_conns + w->n_inbox < best->n_conns + best->n_inbox))
            best = w;
    }
    if (best != NULL && best->n_inbox == best->cap_inbox) {
        uint32_t cap = best->cap_inbox ? best->cap_inbox * 2 : 16;
        struct slb_worker_conn *v = realloc(best->inbox, cap * sizeof(*v));
        if (v == NULL) {
            best = NULL;
        } else {
            best->inbox = v;
            best->cap_inbox = cap;
        }
    }
    if (best == NULL) {
        uv_mutex_unlock(&ws->mu);
        close(fd);
        slb_warn("an app connection was closed: no worker can take it (stopping, or out of memory)");
        return;
    }
    best->inbox[best->n_inbox++] =
        (struct slb_worker_conn){.fd = fd, .listener = (uint16_t)listener, .is_unix = (uint8_t)is_unix};
    uv_async_send(&best->wakeup);
    uv_mutex_unlock(&ws->mu);
}

void slb_workers_stop(struct slb_workers *ws, uint64_t grace_ms, void (*on_all_stopped)(struct slb_workers *ws))
{
    ws->stopping = 1;
    ws->on_all_stopped = on_all_stopped;
    uv_mutex_lock(&ws->mu);
    for (uint32_t i = 0; i < ws->n; i++) {
        struct slb_worker *w = &ws->w[i];
        w->stop_wanted = 1;
        w->stop_grace_ms = grace_ms;
        if (w->wakeup_open && w->thread_started)
            uv_async_send(&w->wakeup);
    }
    uv_mutex_unlock(&ws->mu);
    uv_async_send(&ws->control); /* workers that never started: on_all_stopped on the next turn */
}

void slb_workers_close(struct slb_workers *ws)
{
    struct slb_server *srv = ws->srv;

    if (!ws->handles_open)
        return;
    ws->handles_open = 0;
    uv_check_stop(&ws->publish);
    slb_conn_ctx_close_handle(&srv->ctx.io, (uv_handle_t *)&ws->publish);
    slb_conn_ctx_close_handle(&srv->ctx.io, (uv_handle_t *)&ws->control);
}

void slb_workers_free(struct slb_workers *ws)
{
    if (ws == NULL)
        return;
    join_all(ws);
    for (uint32_t i = 0; ws->w != NULL && i < ws->n; i++) {
        if (!ws->w[i].joined)
            worker_abandon(&ws->w[i]);
        worker_dispose(&ws->w[i]);
    }
    uv_cond_destroy(&ws->cond);
    uv_mutex_destroy(&ws->mu);
    free(ws->w);
    free(ws);
}

void slb_workers_reopen_logs(struct slb_workers *ws)
{
    uv_mutex_lock(&ws->mu);
    for (uint32_t i = 0; i < ws->n; i++) {
        ws->w[i].reopen_wanted = 1;
        if (ws->w[i].wakeup_open && ws->w[i].thread_started)
            uv_async_send(&ws->w[i].wakeup);
    }
    uv_mutex_unlock(&ws->mu);
}

void slb_workers_sync(struct slb_workers *ws)
{
    if (ws == NULL || !ws->handles_open || ws->stopping)
        return;
    on_publish(&ws->publish);
    slb_workers_pause(ws); /* each worker applies its mailbox before it pauses */
    slb_workers_resume(ws);
}

void slb_workers_pause(struct slb_workers *ws)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)PAUSE_WAIT_MS * 1000000;

    if (ws == NULL)
        return;
    uv_mutex_lock(&ws->mu);
    ws->pause_wanted = 1;
    for (uint32_t i = 0; i < ws->n; i++)
        if (ws->w[i].wakeup_open && ws->w[i].thread_started)
            uv_async_send(&ws->w[i].wakeup);
    for (;;) {
        uint32_t waiting = 0;
        uint64_t now = uv_hrtime();
        for (uint32_t i = 0; i < ws->n; i++)
            waiting += ws->w[i].wakeup_open && ws->w[i].thread_started && !ws->w[i].paused;
        if (waiting == 0)
            break;
        if (now >= deadline) {
            slb_warn("%u worker loops did not pause within %d ms: their figures are left out", waiting, PAUSE_WAIT_MS);
            break;
        }
        uv_cond_timedwait(&ws->cond, &ws->mu, deadline - now);
    }
    uv_mutex_unlock(&ws->mu);
}

void slb_workers_resume(struct slb_workers *ws)
{
    if (ws == NULL)
        return;
    uv_mutex_lock(&ws->mu);
    ws->pause_wanted = 0;
    uv_cond_broadcast(&ws->cond);
    uv_mutex_unlock(&ws->mu);
}

int slb_workers_paused(const struct slb_workers *ws, uint32_t i)
{
    int paused;

    uv_mutex_lock((uv_mutex_t *)&ws->mu);
    paused = ws->w[i].paused;
    uv_mutex_unlock((uv_mutex_t *)&ws->mu);
    return paused;
}

struct slb_cluster *slb_worker_cluster(struct slb_worker *w, size_t i)
{
    return i < w->n_clusters ? &w->clusters[i] : NULL;
}
