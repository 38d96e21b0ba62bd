/* What a scrape reads, added up over the server's loops (see scrape.h). */
#include "scrape.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common.h"
#include "h2_upstream.h"
#include "server.h"
#include "worker.h"

/*
 * Counter structs made only of uint64_t fields (histograms included) are
 * added word by word, so a counter added to one of them is summed without
 * a change here.
 */
_Static_assert(sizeof(struct slb_cluster_stats) % sizeof(uint64_t) == 0, "cluster stats: uint64_t only");
_Static_assert(sizeof(struct slb_backend_stats) % sizeof(uint64_t) == 0, "backend stats: uint64_t only");
_Static_assert(sizeof(struct slb_stats_hist) % sizeof(uint64_t) == 0, "histogram: uint64_t only");
_Static_assert(sizeof(struct slb_tls_stats) % sizeof(uint64_t) == 0, "tls stats: uint64_t only");
_Static_assert(sizeof(struct slb_access_log_stats) % sizeof(uint64_t) == 0, "access log stats: uint64_t only");

static void add_words(void *to, const void *from, size_t size)
{
    uint64_t *t = to;
    const uint64_t *f = from;

    for (size_t i = 0; i < size / sizeof(uint64_t); i++)
        t[i] += f[i];
}

/* struct slb_loop_stats: uint64_t counters around one block (the calls_by_code array and its two sizes). */
#define CALLS_BLOCK_FROM offsetof(struct slb_loop_stats, calls_by_code)
#define CALLS_BLOCK_TO   (offsetof(struct slb_loop_stats, calls_n_clusters) + sizeof(uint32_t))
_Static_assert(CALLS_BLOCK_FROM % sizeof(uint64_t) == 0 && CALLS_BLOCK_TO % sizeof(uint64_t) == 0 &&
                   offsetof(struct slb_loop_stats, calls_n_listeners) == CALLS_BLOCK_FROM + sizeof(uint64_t *) &&
                   offsetof(struct slb_loop_stats, calls_n_clusters) ==
                       offsetof(struct slb_loop_stats, calls_n_listeners) + sizeof(uint32_t) &&
                   sizeof(struct slb_loop_stats) % sizeof(uint64_t) == 0,
               "loop stats: uint64_t counters and the calls_by_code block");

static void add_loop_stats(struct slb_loop_stats *to, const struct slb_loop_stats *from)
{
    add_words(to, from, CALLS_BLOCK_FROM);
    add_words((char *)to + CALLS_BLOCK_TO, (const char *)from + CALLS_BLOCK_TO,
              sizeof(struct slb_loop_stats) - CALLS_BLOCK_TO);
}

static size_t calls_cells(const struct slb_loop_stats *st)
{
    return (size_t)st->calls_n_listeners * (st->calls_n_clusters + 1) * SLB_STATS_GRPC_CODES;
}

/* READY, else CONNECTING, else IDLE, else TRANSIENT_FAILURE (gRPC's aggregate), SHUTDOWN last. */
static int state_rank(int state)
{
    switch (state) {
    case SLB_BACKEND_READY:
        return 4;
    case SLB_BACKEND_CONNECTING:
        return 3;
    case SLB_BACKEND_IDLE:
        return 2;
    case SLB_BACKEND_TRANSIENT_FAILURE:
        return 1;
    default:
        return 0;
    }
}

/* best: -1 before any copy was seen. */
static void best_state(int *best, int state)
{
    if (*best < 0 || state_rank(state) > state_rank(*best))
        *best = state;
}

/* One backend over the workers: a worker that never connected (IDLE) knows nothing, so a copy that
 * tried and failed (TRANSIENT_FAILURE) says more: READY, else CONNECTING, else TRANSIENT_FAILURE, else IDLE. */
static void best_backend_state(int *best, int state)
{
    static const int rank[] = {[SLB_BACKEND_IDLE] = 1,
                               [SLB_BACKEND_CONNECTING] = 3,
                               [SLB_BACKEND_READY] = 4,
                               [SLB_BACKEND_TRANSIENT_FAILURE] = 2,
                               [SLB_BACKEND_SHUTDOWN] = 0};
    int r = state >= 0 && state <= SLB_BACKEND_SHUTDOWN ? rank[state] : 0;

    if (*best < 0 || r > rank[*best])
        *best = state;
}

int slb_scrape_backend_usable(const struct slb_backend *be, int state, uint64_t now)
{
    return slb_backend_usable(be, now) && state != SLB_BACKEND_TRANSIENT_FAILURE && state != SLB_BACKEND_SHUTDOWN;
}

static void add_backend(struct slb_scrape_backend *sb, const struct slb_backend *be)
{
    const struct slb_upstream_pool *pool = be->pool;

    add_words(&sb->stats, &be->stats, sizeof(be->stats));
    sb->outstanding += be->outstanding;
    if (pool != NULL) {
        sb->connections += pool->n_conns;
        sb->queued += pool->n_waiting;
    }
}

/* What loop lp holds of the server's cluster i (k: the loop's index, 0: the server's own). */
static void add_cluster(struct slb_scrape *s, const struct slb_server *srv, const struct slb_scrape_loop *lp,
                        uint32_t k, size_t i)
{
    struct slb_cluster *own = &srv->clusters[i], *cl = &lp->clusters[i];
    struct slb_scrape_cluster *sc = &s->clusters[i];

    add_words(&sc->stats, &cl->stats, sizeof(cl->stats));
    add_words(&sc->tls_stats, &cl->tls_stats, sizeof(cl->tls_stats));
    sc->n_waiting += cl->n_waiting;
    for (uint32_t j = 0; j < own->set.n; j++) {
        const struct slb_backend *be = k == 0 ? own->set.items[j] : slb_cluster_find(cl, own->set.items[j]->name);
        if (be != NULL)
            add_backend(&sc->backends[j], be);
    }
}

static void add_loop(struct slb_scrape *s, const struct slb_server *srv, const struct slb_scrape_loop *loops,
                     uint32_t k, int workers)
{
    const struct slb_scrape_loop *lp = &loops[k];
    const struct slb_loop_ctx *ctx = lp->ctx;
    const struct slb_loop_stats *st = &ctx->stats;
    int log_seen = 0;

    add_loop_stats(&s->stats, st);
    if (s->calls_by_code != NULL && st->calls_by_code != NULL && st->calls_n_listeners == s->stats.calls_n_listeners &&
        st->calls_n_clusters == s->stats.calls_n_clusters)
        add_words(s->calls_by_code, st->calls_by_code, calls_cells(st) * sizeof(uint64_t));
    s->read_pauses += ctx->io.read_pauses;
    s->buffered += ctx->buffers.buffered;
    s->n_held_back += ctx->buffers.n_held_back;
    s->n_calls += ctx->n_calls;
    s->n_app_conns += ctx->n_app_conns;
    if (k > 0 || !workers) /* with workers, each enforces its share of the cap; the control loop holds none */
        s->max_app_conns += ctx->max_app_conns;
    for (uint32_t p = 0; p < k; p++) /* loops may share one access log: count it once */
        log_seen |= loops[p].ctx->access_log == ctx->access_log;
    if (ctx->access_log != NULL && !log_seen)
        add_words(&s->access_log, slb_access_log_stats(ctx->access_log), sizeof(s->access_log));
    for (const struct slb_list *it = ctx->pools.next; it != &ctx->pools; it = it->next)
        s->upstream_conns += slb_list_entry(it, struct slb_upstream_pool, ctx_link)->n_conns;
    for (size_t l = 0; l < srv->n_listeners; l++) {
        const struct slb_downstream_set *set = lp->listeners ? &lp->listeners[l].set : &srv->listeners[l].set;
        s->listeners[l].n_conns += set->n_conns;
        add_words(&s->listeners[l].tls_stats, &set->tls_stats, sizeof(set->tls_stats));
    }
    for (size_t i = 0; i < srv->n_clusters; i++)
        add_cluster(s, srv, lp, k, i);
}

/* Connectivity: the best over the workers' copies; the control loop's own without workers (or no copy). */
static void set_states(struct slb_scrape *s, const struct slb_server *srv, const struct slb_scrape_loop *loops,
                       uint32_t n, int workers)
{
    for (size_t i = 0; i < srv->n_clusters; i++) {
        struct slb_cluster *own = &srv->clusters[i];
        struct slb_scrape_cluster *sc = &s->clusters[i];
        int best = -1;

        for (uint32_t k = 1; workers && k < n; k++)
            best_state(&best, loops[k].clusters[i].state);
        sc->state = (uint8_t)(best >= 0 ? best : own->state);
        for (uint32_t j = 0; j < own->set.n; j++) {
            const struct slb_backend *be = own->set.items[j];
            best = -1;
            for (uint32_t k = 1; workers && k < n; k++) {
                const struct slb_backend *copy = slb_cluster_find(&loops[k].clusters[i], be->name);
                if (copy != NULL)
                    best_backend_state(&best, copy->state);
            }
            sc->backends[j].state = (uint8_t)(best >= 0 ? best : be->state);
        }
    }
}

static void add_method(struct slb_method_stat *to, const struct slb_method_stat *from)
{
    add_words(to->calls, from->calls, sizeof(from->calls));
    add_words(&to->duration, &from->duration, sizeof(from->duration));
}

/* Per-method counters of cluster i over the loops, merged by name: every name any loop counts stays a
 * series of its own (so none turns into "other" between two scrapes); the loops' "other" add up. */
static int merge_methods(struct slb_scrape_cluster *sc, const struct slb_scrape_loop *loops, uint32_t n, size_t i)
{
    uint32_t cap = 1;

    for (uint32_t k = 0; k < n; k++)
        cap += loops[k].clusters[i].method_stats.n;
    if (slb_method_stats_init(&sc->merged, cap) != 0)
        return SLB_ENOMEM;
    for (uint32_t k = 0; k < n; k++) {
        const struct slb_method_stats *ms = &loops[k].clusters[i].method_stats;
        if (ms->cap == 0)
            continue;
        for (uint32_t j = 0; j < ms->n; j++) {
            const char *name = ms->items[j].name;
            uint32_t slot = slb_method_stats_slot(&sc->merged, (const uint8_t *)name, strlen(name));
            add_method(&sc->merged.items[slot - 1], &ms->items[j]);
        }
        add_method(&sc->merged.items[sc->merged.cap], &ms->items[ms->cap]);
    }
    sc->methods = &sc->merged;
    return 0;
}

int slb_scrape_collect(struct slb_scrape *s, const struct slb_server *srv, const struct slb_scrape_loop *loops,
                       uint32_t n, int workers, int with_methods)
{
    const struct slb_loop_stats *own = &srv->ctx.stats;
    size_t n_backends = 0, at = 0;

    memset(s, 0, sizeof(*s));
    s->srv = srv;
    for (size_t i = 0; i < srv->n_clusters; i++)
        n_backends += srv->clusters[i].set.n;
    s->listeners = calloc(srv->n_listeners + 1, sizeof(*s->listeners));
    s->clusters = calloc(srv->n_clusters + 1, sizeof(*s->clusters));
    s->_backends = calloc(n_backends + 1, sizeof(*s->_backends));
    if (own->calls_by_code != NULL)
        s->calls_by_code = calloc(calls_cells(own) + 1, sizeof(uint64_t));
    if (s->listeners == NULL || s->clusters == NULL || s->_backends == NULL ||
        (own->calls_by_code != NULL && s->calls_by_code == NULL))
        return SLB_ENOMEM;
    s->stats.calls_n_listeners = own->calls_n_listeners;
    s->stats.calls_n_clusters = own->calls_n_clusters;
    for (size_t i = 0; i < srv->n_clusters; i++) {
        s->clusters[i].backends = s->_backends + at;
        s->clusters[i].methods = &srv->clusters[i].method_stats;
        at += srv->clusters[i].set.n;
    }
    for (uint32_t k = 0; k < n; k++)
        add_loop(s, srv, loops, k, workers);
    s->stats.calls_by_code = s->calls_by_code;
    set_states(s, srv, loops, n, workers);
    for (size_t i = 0; with_methods && n > 1 && i < srv->n_clusters; i++)
        if (srv->clusters[i].method_stats.cap > 0 && merge_methods(&s->clusters[i], loops, n, i) != 0)
            return SLB_ENOMEM;
    return 0;
}

/* A worker whose state a scrape may read now: paused, with the server's clusters and listeners. */
static int worker_readable(const struct slb_server *srv, const struct slb_workers *ws, uint32_t i)
{
    const struct slb_worker *w = &ws->w[i];
    return slb_workers_paused(ws, i) && w->clusters != NULL && w->n_clusters == srv->n_clusters &&
           (srv->n_listeners == 0 || w->listeners != NULL) && w->n_listeners == srv->n_listeners;
}

int slb_scrape_begin(struct slb_scrape *s, const struct slb_server *srv, int with_methods)
{
    struct slb_scrape_loop loops[1 + SLB_MAX_WORKERS];
    struct slb_workers *ws = srv->workers;
    uint32_t n = 0, n_workers = ws != NULL ? ws->n : 0;
    uint64_t t0 = 0;
    int rv;

    loops[n++] = (struct slb_scrape_loop){&srv->ctx, srv->clusters, NULL};
    if (ws != NULL) {
        t0 = uv_hrtime();
        slb_workers_pause(ws);
        for (uint32_t i = 0; i < ws->n && n < SLB_ARRAY_SIZE(loops); i++)
            if (worker_readable(srv, ws, i))
                loops[n++] = (struct slb_scrape_loop){&ws->w[i].ctx, ws->w[i].clusters, ws->w[i].listeners};
    }
    rv = slb_scrape_collect(s, srv, loops, n, ws != NULL, with_methods);
    if (ws != NULL) {
        slb_workers_resume(ws);
        s->pause_ns = uv_hrtime() - t0;
    }
    s->n_workers = n_workers;
    s->n_workers_skipped = n_workers - (n - 1);
    return rv;
}

void slb_scrape_end(struct slb_scrape *s)
{
    for (size_t i = 0; s->clusters != NULL && i < s->srv->n_clusters; i++)
        slb_method_stats_dispose(&s->clusters[i].merged);
    free(s->listeners);
    free(s->clusters);
    free(s->_backends);
    free(s->calls_by_code);
    memset(s, 0, sizeof(*s));
}

uint32_t slb_scrape_backend_outstanding(const struct slb_server *srv, const struct slb_cluster *cl,
                                        const struct slb_backend *be)
{
    struct slb_workers *ws = srv->workers;
    uint32_t n = be->outstanding;

    if (ws == NULL)
        return n;
    slb_workers_pause(ws);
    for (uint32_t i = 0; i < ws->n; i++) {
        const struct slb_backend *copy;
        if (!worker_readable(srv, ws, i))
            continue;
        if ((copy = slb_cluster_find(&ws->w[i].clusters[cl->index], be->name)) != NULL)
            n += copy->outstanding;
    }
    slb_workers_resume(ws);
    return n;
}
