#include "cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "discovery.h"
#include "h2_upstream.h"
#include "health.h"
#include "hostport.h"
#include "log.h"
#include "loop_ctx.h"

/* ---- name index: address -> backend, so a discovery event costs O(1) ---- */

static struct slb_backend **index_slot(struct slb_cluster *cl, const char *name)
{
    uint64_t h = slb_hash64(name, strlen(name));
    struct slb_backend **pp = &cl->_index[h & (cl->_index_size - 1)];

    while (*pp != NULL && strcmp((*pp)->name, name) != 0)
        pp = &(*pp)->_hash_next;
    return pp;
}

static int index_grow(struct slb_cluster *cl)
{
    uint32_t size = cl->_index_size ? cl->_index_size * 2 : 16;
    struct slb_backend **old = cl->_index, **nb = calloc(size, sizeof(*nb));
    uint32_t old_size = cl->_index_size;

    if (nb == NULL)
        return SLB_ENOMEM;
    cl->_index = nb;
    cl->_index_size = size;
    for (uint32_t i = 0; i < old_size; i++) {
        struct slb_backend *be = old[i], *next;
        for (; be != NULL; be = next) {
            next = be->_hash_next;
            struct slb_backend **pp = index_slot(cl, be->name);
            be->_hash_next = *pp;
            *pp = be;
        }
    }
    free(old);
    return 0;
}

struct slb_backend *slb_cluster_find(struct slb_cluster *cl, const char *addr)
{
    return cl->_index_size ? *index_slot(cl, addr) : NULL;
}

/* ---- waking waiters ---- */

/* A replica's waiting calls, as the control loop's cluster sees them (its health-check probes). */
static void replica_waiting(struct slb_cluster *cl, int64_t delta)
{
    if (cl->primary == NULL || delta == 0)
        return;
    if (__atomic_add_fetch(&cl->primary->remote_waiting, (uint32_t)delta, __ATOMIC_RELAXED) == (uint32_t)delta &&
        delta > 0 && cl->notify_control != NULL)
        cl->notify_control(cl, SLB_NOTIFY_WAITING); /* the first: the control loop starts probing */
}

/* Calls waiting for a usable backend here, and (the control loop's cluster) in the workers. */
static uint32_t n_waiting_all(const struct slb_cluster *cl)
{
    return cl->n_waiting + __atomic_load_n(&cl->remote_waiting, __ATOMIC_RELAXED);
}

static void on_wake_timer(uv_timer_t *t)
{
    struct slb_cluster *cl = slb_container_of(t, struct slb_cluster, wake_timer);
    struct slb_list woken;

    /* take the list: a waiter that still finds nothing waits again */
    slb_list_init(&woken);
    slb_list_splice(&woken, &cl->waiters);
    replica_waiting(cl, -(int64_t)cl->n_waiting);
    cl->n_waiting = 0;
    while (!slb_list_empty(&woken)) {
        struct slb_cluster_waiter *w = slb_list_first(&woken, struct slb_cluster_waiter, link);
        slb_list_remove(&w->link);
        w->cluster = NULL;
        cl->wake(w);
    }
}

/* Something may have made a backend usable: wake the waiters on the next
 * loop turn (never from inside the event, which may be deep in a pool). */
static void cluster_wake(struct slb_cluster *cl)
{
    if (cl->n_waiting > 0 && !uv_is_active((uv_handle_t *)&cl->wake_timer))
        uv_timer_start(&cl->wake_timer, on_wake_timer, 0, 0);
}

void slb__cluster_wake(struct slb_cluster *cl)
{
    cluster_wake(cl);
}

uint32_t slb_cluster_first_pending(const struct slb_cluster *cl)
{
    return cl->n_health_pending + (cl->replica ? cl->snap_first_pending : cl->resolver.n_first_pending);
}

static int health_usable(int health)
{
    return health == SLB_HEALTH_SERVING || health == SLB_HEALTH_UNIMPLEMENTED;
}

/*
 * Faster recovery: while calls wait, backends in connection backoff get
 * early connect attempts (probes), so one that comes back is found within
 * about probe_interval_ms instead of at the end of its backoff (up to
 * backoff.max_ms). The same holds for health checks waiting to reconnect
 * after a failure (their backoff reaches interval_ms): a backend that is
 * back is SERVING (or found to have no health service) as soon. Each pool
 * and check bounds its own probes; this timer only visits them, at most
 * every probe_interval_ms, and stops as soon as no call waits or nothing is
 * in backoff (idle apps cause no connect storm against a dead backend).
 */
static void on_probe_timer(uv_timer_t *t)
{
    struct slb_cluster *cl = slb_container_of(t, struct slb_cluster, probe_timer);
    struct slb_loop_ctx *ctx = cl->ctx;
    uint32_t interval = cl->cfg->backoff.probe_interval_ms;
    uint64_t now = uv_now(ctx->loop), next = UINT64_MAX;
    uint64_t probes = ctx->stats.upstream_probes, skipped;

    if (n_waiting_all(cl) == 0 || ctx->stopping)
        return; /* stopped: probe_start() starts it again */
    for (uint32_t i = 0; i < cl->set.n; i++) {
        struct slb_backend *be = cl->set.items[i];
        uint64_t due;
        if (be->pool != NULL && be->state == SLB_BACKEND_TRANSIENT_FAILURE &&
            (due = slb_upstream_pool_probe(be->pool)) < next)
            next = due;
        if (be->health_check != NULL && !health_usable(be->health) &&
            (due = slb_health_probe(be->health_check, interval)) < next)
            next = due;
    }
    if (ctx->stats.upstream_probes != probes && slb_log_limit_pass(&cl->probe_log, now, SLB_LOG_LIMIT_MS, &skipped))
        slb_notice("cluster %s: no usable backend and %u calls wait: trying backends in connection backoff early "
                   "(each at most every %u ms while calls wait)",
                   cl->cfg->name, n_waiting_all(cl), interval);
    if (next == UINT64_MAX)
        return; /* nothing in backoff: a failure later calls probe_start() */
    if (next > now + interval)
        next = now + interval;
    uv_timer_start(&cl->probe_timer, on_probe_timer, next > now ? next - now : 1, 0);
}

/* Calls wait and a backend (or its health check) may be in backoff: probes
 * begin on the next loop turn (whoever is due). */
static void probe_start(struct slb_cluster *cl)
{
    if (n_waiting_all(cl) > 0 && (cl->n_by_state[SLB_BACKEND_TRANSIENT_FAILURE] > 0 || cl->cfg->health_check.enabled) &&
        cl->cfg->backoff.probe_interval_ms != 0 && !uv_is_active((uv_handle_t *)&cl->probe_timer))
        uv_timer_start(&cl->probe_timer, on_probe_timer, 0, 0);
}

int slb_cluster_wait(struct slb_cluster *cl, struct slb_cluster_waiter *w)
{
    if (cl->n_waiting >= cl->cfg->max_waiting_calls)
        return SLB_ELIMIT;
    slb_list_push_back(&cl->waiters, &w->link);
    w->cluster = cl;
    cl->n_waiting++;
    replica_waiting(cl, 1);
    probe_start(cl);
    return 0;
}

void slb_cluster_probe_for_replicas(struct slb_cluster *cl)
{
    probe_start(cl);
}

void slb_cluster_refresh_names_for_replicas(struct slb_cluster *cl)
{
    for (uint32_t i = 0; i < cl->set.n; i++) {
        struct slb_backend *be = cl->set.items[i];
        if (be->shared != NULL && be->host_name != NULL &&
            __atomic_exchange_n(&be->shared->dns_refresh, 0, __ATOMIC_RELAXED))
            slb_resolver_refresh_soon(&cl->resolver, be->host_name, be->name);
    }
}

void slb_cluster_unwait(struct slb_cluster_waiter *w)
{
    if (w->cluster == NULL)
        return;
    slb_list_remove(&w->link);
    w->cluster->n_waiting--;
    replica_waiting(w->cluster, -1);
    w->cluster = NULL;
}

/* ---- outlier detection ---- */

static void on_outlier_timer(uv_timer_t *t);

/* Arms the outlier timer for the next interval evaluation or the earliest ejection end, whichever is first. */
static void outlier_arm(struct slb_cluster *cl, uint64_t now)
{
    uint64_t due = cl->outlier_next_interval_ms, u = slb_outlier_next_uneject(&cl->set);

    if (!cl->has_outlier_timer)
        return;
    if (u != 0 && u < due)
        due = u;
    uv_timer_start(&cl->outlier_timer, on_outlier_timer, due > now ? due - now : 0, 0);
}

static void on_outlier_timer(uv_timer_t *t)
{
    struct slb_cluster *cl = t->data;
    const struct slb_outlier_options *opts = &cl->cfg->outlier.opts;
    uint64_t now = uv_now(cl->ctx->loop);
    uint32_t unejected = slb_outlier_uneject(&cl->set, now);

    if (now >= cl->outlier_next_interval_ms) {
        if (cl->shares)
            slb_cluster_collect_shared(cl); /* the workers' results of the interval */
        /* gRFC A50's interval timer: judge the interval that ended, start the next */
        if (slb_outlier_interval(opts, &cl->set, now, &cl->ctx->rng) > 0)
            cl->set.usable_version++;
        cl->outlier_next_interval_ms = now + opts->interval_ms;
    }
    if (unejected > 0) {
        cl->set.usable_version++; /* slow start sees the returning backends */
        cluster_wake(cl);
    }
    outlier_arm(cl, now);
}

/* A worker's replica: the result goes to the backend's shared block; the control loop judges. */
static void report_shared(struct slb_cluster *cl, struct slb_backend *be, int success)
{
    struct slb_backend_shared *sh = be->shared;
    uint32_t threshold = cl->cfg->outlier.opts.consecutive_failures;

    if (success) {
        __atomic_add_fetch(&sh->successes, 1, __ATOMIC_RELAXED);
        if (__atomic_load_n(&sh->consecutive_failures, __ATOMIC_RELAXED) != 0) /* no write in the common case */
            __atomic_store_n(&sh->consecutive_failures, 0, __ATOMIC_RELAXED);
        return;
    }
    __atomic_add_fetch(&sh->failures, 1, __ATOMIC_RELAXED);
    if (__atomic_add_fetch(&sh->consecutive_failures, 1, __ATOMIC_RELAXED) == threshold && threshold != 0 &&
        cl->notify_control != NULL)
        cl->notify_control(cl, SLB_NOTIFY_OUTLIER); /* the control loop ejects it now, not at the interval's end */
}

void slb_cluster_collect_shared(struct slb_cluster *cl)
{
    const struct slb_outlier_options *opts = &cl->cfg->outlier.opts;
    uint64_t now = uv_now(cl->ctx->loop);
    int changed = 0;

    if (!cl->cfg->outlier.enabled)
        return;
    for (uint32_t i = 0; i < cl->set.n; i++) {
        struct slb_backend *be = cl->set.items[i];
        struct slb_backend_shared *sh = be->shared;
        if (sh == NULL)
            continue;
        be->interval_success += (uint32_t)__atomic_exchange_n(&sh->successes, 0, __ATOMIC_RELAXED);
        be->interval_failure += (uint32_t)__atomic_exchange_n(&sh->failures, 0, __ATOMIC_RELAXED);
        if (opts->consecutive_failures != 0 &&
            __atomic_load_n(&sh->consecutive_failures, __ATOMIC_RELAXED) >= opts->consecutive_failures) {
            __atomic_store_n(&sh->consecutive_failures, 0, __ATOMIC_RELAXED);
            if (slb_outlier_eject(opts, &cl->set, be, now))
                changed = 1;
        }
    }
    if (changed) {
        cl->set.usable_version++;
        outlier_arm(cl, now);
    }
}

void slb_cluster_report(struct slb_cluster *cl, struct slb_backend *be, int success)
{
    uint64_t now;

    if (!cl->cfg->outlier.enabled || be->draining)
        return;
    if (cl->replica) {
        if (be->shared != NULL)
            report_shared(cl, be, success);
        return;
    }
    now = uv_now(cl->ctx->loop);
    if (slb_outlier_on_result(&cl->cfg->outlier.opts, &cl->set, be, success, now)) {
        cl->set.usable_version++;
        outlier_arm(cl, now); /* its ejection may end before the next interval */
    }
}

/* ---- aggregate connectivity state ---- */

static void update_aggregate(struct slb_cluster *cl)
{
    int state = SLB_BACKEND_TRANSIENT_FAILURE;

    if (cl->n_by_state[SLB_BACKEND_READY] > 0)
        state = SLB_BACKEND_READY;
    else if (cl->n_by_state[SLB_BACKEND_CONNECTING] > 0)
        state = SLB_BACKEND_CONNECTING;
    else if (cl->n_by_state[SLB_BACKEND_IDLE] > 0)
        state = SLB_BACKEND_IDLE;
    if (cl->state == state)
        return;
    /* a worker's replica says it at debug level: its connections are one worker's */
    slb_log(cl->replica                                                                            ? SLB_LOG_DEBUG
            : state == SLB_BACKEND_TRANSIENT_FAILURE || cl->state == SLB_BACKEND_TRANSIENT_FAILURE ? SLB_LOG_NOTICE
                                                                                                   : SLB_LOG_INFO,
            "cluster %s: %s -> %s", cl->cfg->name, slb_backend_state_name(cl->state), slb_backend_state_name(state));
    cl->state = (uint8_t)state;
}

static void on_backend_state(struct slb_backend *be, int old)
{
    struct slb_cluster *cl = be->cluster;

    cl->n_by_state[old]--;
    cl->n_by_state[be->state]++;
    update_aggregate(cl);
    if (be->state == SLB_BACKEND_TRANSIENT_FAILURE && be->last_error[0] != '\0')
        snprintf(cl->last_connect_error, sizeof(cl->last_connect_error), "backend %s: %s", be->name, be->last_error);
    else if (cl->n_by_state[SLB_BACKEND_TRANSIENT_FAILURE] == 0)
        cl->last_connect_error[0] = '\0';
    if (old == SLB_BACKEND_TRANSIENT_FAILURE && be->state != SLB_BACKEND_SHUTDOWN)
        cluster_wake(cl); /* out of connection backoff */
    else if (be->state == SLB_BACKEND_TRANSIENT_FAILURE)
        probe_start(cl);
    if (be->state == SLB_BACKEND_TRANSIENT_FAILURE && be->host_name != NULL) {
        /* the name may point elsewhere now; a replica's names are the control loop's to look up */
        if (!cl->replica) {
            slb_resolver_refresh_soon(&cl->resolver, be->host_name, be->name);
        } else if (be->shared != NULL && cl->notify_control != NULL) {
            __atomic_store_n(&be->shared->dns_refresh, 1, __ATOMIC_RELAXED);
            cl->notify_control(cl, SLB_NOTIFY_DNS);
        }
    }
}

/* ---- active health (grpc.health.v1) ---- */

static void on_health(struct slb_health_check *hc, int status, void *user)
{
    struct slb_backend *be = user;
    struct slb_cluster *cl = be->cluster;
    const char *service = cl->cfg->health_check.service;
    int old = be->health;

    if (old == status)
        return;
    if (status == SLB_HEALTH_UNIMPLEMENTED && !be->health_unimpl_logged) {
        /* gRFC A17: once per backend at ERROR (a misconfiguration to fix), later reconnects at INFO */
        be->health_unimpl_logged = 1;
        cl->ctx->stats.health_check_unimplemented++;
        slb_error("cluster %s: backend %s does not implement grpc.health.v1 (health check of service \"%s\" answered "
                  "UNIMPLEMENTED): health checking is off for it and it takes calls as if SERVING (gRFC A17)",
                  cl->cfg->name, be->name, service != NULL ? service : "");
    } else {
        slb_log(status == SLB_HEALTH_UNIMPLEMENTED ? SLB_LOG_INFO : SLB_LOG_NOTICE, "cluster %s: backend %s is %s%s",
                cl->cfg->name, be->name, slb_health_status_name(status), health_usable(status) ? "" : ": no new calls");
    }
    if (old == SLB_HEALTH_PENDING)
        cl->n_health_pending--;
    if (health_usable(status) && !health_usable(old) && old != SLB_HEALTH_PENDING)
        be->usable_since_ms = uv_now(cl->ctx->loop); /* back up: slow start ramps from here */
    /* (a first answer keeps the ramp from when the backend was added or registered) */
    be->health = (uint8_t)status;
    be->stats.health_changes++;
    cl->set.usable_version++; /* the ring is not rebuilt: picks skip unusable owners */
    /* a usable backend, or the last first answer (calls waiting only for it may fail now) */
    if (health_usable(status) || (old == SLB_HEALTH_PENDING && cl->n_health_pending == 0))
        cluster_wake(cl);
    if (!health_usable(status))
        probe_start(cl); /* calls that wait hurry its reconnect */
}

static void health_start(struct slb_cluster *cl, struct slb_backend *be)
{
    const struct slb_config_health_check *hc = &cl->cfg->health_check;

    if (!hc->enabled || cl->replica) /* a replica's health comes from the control loop's checks */
        return;
    be->health_check = slb_health_start(cl->ctx->loop, &cl->ctx->io, be->name, hc->service ? hc->service : "",
                                        hc->interval_ms, hc->timeout_ms, on_health, be);
    if (be->health_check == NULL) {
        slb_warn("cluster %s: cannot health-check %s; it takes calls unchecked", cl->cfg->name, be->name);
        return;
    }
    if (cl->cfg->tls.enabled) {
        /* the same TLS as the cluster's calls */
        char host[SLB_BACKEND_NAME_MAX];
        const char *name =
            cl->cfg->tls.server_name ? cl->cfg->tls.server_name : slb_backend_tls_name(be, host, sizeof(host));
        if (slb_health_set_tls(be->health_check, cl->cfg->tls.ctx, name, &cl->tls_stats) != 0) {
            slb_warn("cluster %s: cannot health-check %s (out of memory); it takes calls unchecked", cl->cfg->name,
                     be->name);
            slb_health_stop(be->health_check);
            be->health_check = NULL;
            return;
        }
    }
    /* not picked until the first answer (a gRPC subchannel stays CONNECTING until then) */
    be->health = SLB_HEALTH_PENDING;
    cl->n_health_pending++;
    cl->set.usable_version++;
}

static void health_stop(struct slb_cluster *cl, struct slb_backend *be)
{
    if (be->health == SLB_HEALTH_PENDING) {
        be->health = SLB_HEALTH_UNKNOWN;
        cl->n_health_pending--;
    }
    if (be->health_check != NULL) {
        slb_health_stop(be->health_check);
        be->health_check = NULL;
    }
}

/* ---- etcd discovery sink ---- */

/* Removes be once nothing names it: no etcd key, no host name, not in the static list. */
static void release_if_unnamed(struct slb_cluster *cl, struct slb_backend *be)
{
    if (be->discovery_keys == 0 && be->dns_refs == 0 && !be->pinned)
        slb_cluster_remove(cl, be->name);
}

static void drop_key(struct slb_cluster *cl, const char *addr)
{
    struct slb_backend *be;

    if (slb_hostport_is_name(addr)) {
        slb_resolver_release(&cl->resolver, addr);
        return;
    }
    if ((be = slb_cluster_find(cl, addr)) != NULL && be->discovery_keys > 0 && --be->discovery_keys == 0)
        release_if_unnamed(cl, be);
}

/*
 * Slow start of a backend whose etcd value says when it was registered: it
 * ramps from then (every host in step; a long-registered one not at all),
 * not from when this host saw it. Values without the time keep the ramp from
 * when the backend was added.
 */
static void ramp_from_registration(struct slb_cluster *cl, struct slb_backend *be, const struct slb_etcd_endpoint *ep)
{
    if (ep->registered_at_ms == 0 || cl->cfg->lb.slow_start_ms == 0)
        return;
    be->usable_since_ms = slb_lb_ramp_start(&cl->cfg->lb, uv_now(cl->ctx->loop), slb_wall_ms(), ep->registered_at_ms);
    cl->set.usable_version++; /* the policies see the new ramp */
}

static void sink_upsert(void *user, const char *key, const struct slb_etcd_endpoint *ep,
                        const struct slb_etcd_endpoint *old)
{
    struct slb_cluster *cl = user;
    struct slb_backend *be;

    if (old != NULL && strcmp(old->addr, ep->addr) == 0) {
        if (slb_hostport_is_name(ep->addr)) {
            slb_resolver_update(&cl->resolver, ep->addr, ep->weight, ep->zone, ep->drain);
        } else {
            slb_cluster_upsert(cl, ep->addr, ep->weight, ep->zone); /* weight, zone, drain or registration changed */
            if ((be = slb_cluster_find(cl, ep->addr)) != NULL) {
                slb_cluster_set_drain(cl, be, SLB_DRAIN_ETCD, ep->drain);
                if (old->registered_at_ms != ep->registered_at_ms)
                    ramp_from_registration(cl, be, ep);
            }
        }
        slb__cluster_table_changed(cl);
        return;
    }
    if (slb_hostport_is_name(ep->addr)) {
        /* "host:port": its addresses are listed once it resolves */
        if (slb_resolver_add(&cl->resolver, ep->addr, ep->weight, ep->zone, ep->drain) != 0)
            slb_warn("cluster %s: etcd key %s: cannot follow host \"%s\"; skipped", cl->cfg->name, key, ep->addr);
    } else if (slb_cluster_upsert(cl, ep->addr, ep->weight, ep->zone) != 0) {
        slb_warn("cluster %s: etcd key %s: unusable address \"%s\"; skipped", cl->cfg->name, key, ep->addr);
    } else if ((be = slb_cluster_find(cl, ep->addr)) != NULL) {
        if (be->discovery_keys++ == 0) /* just added (a second key naming it changes nothing) */
            ramp_from_registration(cl, be, ep);
        slb_cluster_set_drain(cl, be, SLB_DRAIN_ETCD, ep->drain); /* the last key written wins */
    }
    if (old != NULL)
        drop_key(cl, old->addr); /* the key now names another address */
    slb__cluster_table_changed(cl);
}

static void sink_remove(void *user, const char *key, const struct slb_etcd_endpoint *ep)
{
    drop_key(user, ep->addr);
    slb__cluster_table_changed(user);
}

static void sink_listed(void *user, int64_t revision)
{
    slb__cluster_table_listed(user, revision);
}

static void sink_state(void *user, int connected)
{
    struct slb_cluster *cl = user;
    slb__cluster_table_etcd_state(cl, connected);
    if (!connected)
        slb_warn("cluster %s: etcd unreachable; serving from the last known table (%u backends)", cl->cfg->name,
                 cl->set.n);
    else
        slb_notice("cluster %s: following etcd prefix %s", cl->cfg->name, cl->cfg->etcd_prefix);
}

static const struct slb_discovery_sink discovery_sink = {sink_upsert, sink_remove, sink_state, sink_listed};

/* ---- host names (lib/resolver.h): each address a name resolves to is a backend ---- */

static int cluster_upsert(struct slb_cluster *cl, const char *addr, uint32_t weight, const char *zone,
                          const char *host_name);

static void dns_add(void *user, const char *addr, const char *host, uint32_t weight, const char *zone, int drain)
{
    struct slb_cluster *cl = user;
    struct slb_backend *be;

    if (cluster_upsert(cl, addr, weight, zone, host) != 0 || (be = slb_cluster_find(cl, addr)) == NULL) {
        slb_warn("cluster %s: %s resolved to %s, which cannot be used; skipped", cl->cfg->name, host, addr);
        return;
    }
    be->dns_refs++; /* an address already listed (a literal, another name) keeps its own identity */
    if (cl->cfg->etcd_prefix != NULL)
        slb_cluster_set_drain(cl, be, SLB_DRAIN_ETCD, drain); /* the last key written wins, as for literals */
}

static void dns_update(void *user, const char *addr, uint32_t weight, const char *zone, int drain)
{
    struct slb_cluster *cl = user;
    struct slb_backend *be = slb_cluster_find(cl, addr);

    if (be == NULL)
        return;
    slb_cluster_upsert(cl, addr, weight, zone);
    if (cl->cfg->etcd_prefix != NULL)
        slb_cluster_set_drain(cl, be, SLB_DRAIN_ETCD, drain);
}

static void dns_del(void *user, const char *addr)
{
    struct slb_cluster *cl = user;
    struct slb_backend *be = slb_cluster_find(cl, addr);

    if (be != NULL && be->dns_refs > 0 && --be->dns_refs == 0)
        release_if_unnamed(cl, be);
}

static void dns_settled(void *user)
{
    struct slb_cluster *cl = user;

    if (cl->resolver.n_first_pending == 0)
        cluster_wake(cl); /* calls that waited for the first lookups go on, or fail now */
}

static const struct slb_resolver_sink resolver_sink = {dns_add, dns_update, dns_del, dns_settled};

void slb_cluster_seed_names(struct slb_cluster *cl, const struct slb_cluster *prev)
{
    slb_resolver_seed(&cl->resolver, &prev->resolver);
}

const char *slb_cluster_unresolved_host(const struct slb_cluster *cl)
{
    if (cl->replica)
        return cl->snap_unresolved[0] != '\0' ? cl->snap_unresolved : NULL;
    return slb_resolver_unresolved(&cl->resolver);
}

/* ---- cluster ---- */

static int cluster_init(struct slb_cluster *cl, struct slb_loop_ctx *ctx, const struct slb_config_cluster *cfg,
                        void (*wake)(struct slb_cluster_waiter *w), int replica);

int slb_cluster_init(struct slb_cluster *cl, struct slb_loop_ctx *ctx, const struct slb_config_cluster *cfg,
                     void (*wake)(struct slb_cluster_waiter *w))
{
    return cluster_init(cl, ctx, cfg, wake, 0);
}

int slb_cluster_init_replica(struct slb_cluster *cl, struct slb_loop_ctx *ctx, const struct slb_config_cluster *cfg,
                             void (*wake)(struct slb_cluster_waiter *w))
{
    return cluster_init(cl, ctx, cfg, wake, 1);
}

static int cluster_init(struct slb_cluster *cl, struct slb_loop_ctx *ctx, const struct slb_config_cluster *cfg,
                        void (*wake)(struct slb_cluster_waiter *w), int replica)
{
    int rv;

    memset(cl, 0, sizeof(*cl));
    cl->replica = (uint8_t)replica;
    cl->ctx = ctx;
    cl->cfg = cfg;
    cl->wake = wake;
    cl->state = SLB_BACKEND_TRANSIENT_FAILURE; /* no backend yet */
    slb_backend_set_init(&cl->set);
    slb_list_init(&cl->waiters);
    uv_timer_init(ctx->loop, &cl->wake_timer); /* first: slb_cluster_dispose() always closes them */
    slb_conn_ctx_handle_opened(&ctx->io);
    uv_timer_init(ctx->loop, &cl->probe_timer);
    slb_conn_ctx_handle_opened(&ctx->io);
    slb_resolver_init(&cl->resolver, ctx->loop, &ctx->io, cfg->dns_refresh_ms, cfg->name, &resolver_sink, cl);
    if ((rv = index_grow(cl)) != 0)
        return rv;
    if ((rv = slb_lb_init(&cl->lb, cfg->policy, &cfg->lb, &cl->set)) != 0)
        return rv;
    if ((rv = slb_method_table_init(&cl->methods, cfg->service_config_json)) != 0)
        return rv;
    if (replica)
        return 0; /* backends, health and ejections come from the control loop's snapshots */
    if (cfg->outlier.enabled) {
        uv_timer_init(ctx->loop, &cl->outlier_timer);
        slb_conn_ctx_handle_opened(&ctx->io);
        cl->outlier_timer.data = cl;
        /* one timer: each interval_ms (A50), and at each ejection's end so it ends on time */
        cl->outlier_next_interval_ms = uv_now(ctx->loop) + cfg->outlier.opts.interval_ms;
        uv_timer_start(&cl->outlier_timer, on_outlier_timer, cfg->outlier.opts.interval_ms, 0);
        uv_unref((uv_handle_t *)&cl->outlier_timer);
        cl->has_outlier_timer = 1;
    }
    for (size_t i = 0; i < cfg->n_static; i++) {
        const struct slb_config_static_backend *sb = &cfg->static_backends[i];
        struct slb_backend *be;
        if (slb_hostport_is_name(sb->address)) {
            if ((rv = slb_resolver_add(&cl->resolver, sb->address, sb->weight, sb->zone, 0)) != 0)
                return rv;
            continue;
        }
        if ((rv = slb_cluster_upsert(cl, sb->address, sb->weight, sb->zone)) != 0)
            return rv;
        if ((be = slb_cluster_find(cl, sb->address)) != NULL)
            be->pinned = 1;
    }
    return 0;
}

int slb_cluster_share(struct slb_cluster *cl)
{
    cl->shares = 1;
    for (uint32_t i = 0; i < cl->set.n; i++)
        if (cl->set.items[i]->shared == NULL && (cl->set.items[i]->shared = slb_backend_shared_new()) == NULL)
            return SLB_ENOMEM;
    return 0;
}

int slb_cluster_start_discovery(struct slb_cluster *cl, struct slb_etcd *etcd)
{
    if (cl->cfg->etcd_prefix == NULL)
        return 0;
    return slb_discovery_new(etcd, cl->cfg->etcd_prefix, &discovery_sink, cl, &cl->discovery);
}

void slb_cluster_dispose(struct slb_cluster *cl)
{
    slb__cluster_table_dispose(cl); /* first: a pending write still reads the discovery's map */
    if (cl->discovery != NULL) {
        slb_discovery_free(cl->discovery);
        cl->discovery = NULL;
    }
    slb_conn_ctx_close_handle(&cl->ctx->io, (uv_handle_t *)&cl->wake_timer);
    slb_conn_ctx_close_handle(&cl->ctx->io, (uv_handle_t *)&cl->probe_timer);
    slb_resolver_dispose(&cl->resolver);
    if (cl->has_outlier_timer) {
        slb_conn_ctx_close_handle(&cl->ctx->io, (uv_handle_t *)&cl->outlier_timer);
        cl->has_outlier_timer = 0;
    }
    while (cl->set.n > 0)
        slb_cluster_remove(cl, cl->set.items[cl->set.n - 1]->name);
    slb_lb_dispose(&cl->lb);
    slb_method_table_dispose(&cl->methods);
    slb_backend_set_dispose(&cl->set);
    free(cl->admin_drains_pending);
    cl->admin_drains_pending = NULL;
    cl->n_admin_drains_pending = 0;
    free(cl->_index);
    cl->_index = NULL;
    cl->_index_size = 0;
}

static void apply_pending_admin_drain(struct slb_cluster *cl, struct slb_backend *be);

int slb_cluster_upsert(struct slb_cluster *cl, const char *addr, uint32_t weight, const char *zone)
{
    return cluster_upsert(cl, addr, weight, zone, NULL);
}

int slb__cluster_upsert_named(struct slb_cluster *cl, const char *addr, uint32_t weight, const char *zone,
                              const char *host_name)
{
    return cluster_upsert(cl, addr, weight, zone, host_name);
}

/* slb_cluster_upsert; a backend it adds from a host name keeps the name (TLS verifies it), set before its
 * health check starts. */
static int cluster_upsert(struct slb_cluster *cl, const char *addr, uint32_t weight, const char *zone,
                          const char *host_name)
{
    struct slb_backend *be = slb_cluster_find(cl, addr);
    struct slb_backend **slot;
    int rv;

    if (weight == 0)
        weight = 1;
    if (be != NULL) {
        if (be->weight != weight) {
            slb_log(cl->replica ? SLB_LOG_DEBUG : SLB_LOG_INFO, "cluster %s: backend %s weight %u -> %u", cl->cfg->name,
                    addr, be->weight, weight);
            be->weight = weight;
            cl->set.version++; /* weighted policies rebuild */
        }
        if (zone != NULL && strcmp(be->zone, zone) != 0) {
            snprintf(be->zone, sizeof(be->zone), "%s", zone);
            cl->set.usable_version++; /* nothing rebuilds; workers' copies learn the zone */
        }
        return 0;
    }
    if ((be = slb_backend_new(addr, weight)) == NULL)
        return SLB_EADDR;
    if (cl->shares && (be->shared = slb_backend_shared_new()) == NULL) {
        slb_backend_unref(be);
        return SLB_ENOMEM;
    }
    if (host_name != NULL && (be->host_name = strdup(host_name)) == NULL) {
        slb_backend_unref(be);
        return SLB_ENOMEM;
    }
    if (zone != NULL)
        snprintf(be->zone, sizeof(be->zone), "%s", zone);
    be->cluster = cl;
    be->tls_stats = &cl->tls_stats;
    be->usable_since_ms = uv_now(cl->ctx->loop);
    rv = slb_backend_set_add(&cl->set, be);
    slb_backend_unref(be); /* the set holds it now */
    if (rv != 0)
        return rv;
    be->on_state_change = on_backend_state;
    cl->n_by_state[be->state]++;
    update_aggregate(cl);
    if (cl->set.n > cl->_index_size && index_grow(cl) != 0)
        slb_warn("cluster %s: index not grown (out of memory)", cl->cfg->name);
    slot = index_slot(cl, addr);
    be->_hash_next = *slot;
    *slot = be;
    slb_log(cl->replica ? SLB_LOG_DEBUG : SLB_LOG_NOTICE, "cluster %s: backend %s added (weight %u)", cl->cfg->name,
            addr, weight); /* the control loop's cluster says it once */
    if (cl->n_admin_drains_pending > 0)
        apply_pending_admin_drain(cl, be);
    health_start(cl, be);
    cluster_wake(cl);
    return 0;
}

/* "N calls" for a log line; with workers the control loop's backend has none of its own ("the workers' calls"). */
static const char *in_flight_words(const struct slb_cluster *cl, const struct slb_backend *be, char *buf, size_t len)
{
    if (cl->shares)
        return "the workers' calls";
    snprintf(buf, len, "%u calls", be->outstanding);
    return buf;
}

void slb_cluster_remove(struct slb_cluster *cl, const char *addr)
{
    char words[32];
    struct slb_backend **slot = index_slot(cl, addr);
    struct slb_backend *be = *slot;

    if (be == NULL)
        return;
    *slot = be->_hash_next;
    be->_hash_next = NULL;
    slb_log(cl->replica ? SLB_LOG_DEBUG : SLB_LOG_NOTICE, "cluster %s: backend %s removed (%s in flight finish there)",
            cl->cfg->name, addr, in_flight_words(cl, be, words, sizeof(words)));
    slb_backend_ref(be);
    be->draining = 1;
    health_stop(cl, be);
    be->on_state_change = NULL; /* a draining backend no longer counts */
    cl->n_by_state[be->state]--;
    update_aggregate(cl);
    slb_backend_set_remove(&cl->set, be);
    if (be->pool != NULL)
        slb_upstream_pool_drain(be->pool);
    slb_backend_unref(be);
}

/* ---- operator actions: drain, clear an ejection ---- */

void slb_cluster_set_drain(struct slb_cluster *cl, struct slb_backend *be, int source, int on)
{
    uint8_t was = be->drained;
    char words[32];

    be->drained = on ? (uint8_t)(be->drained | source) : (uint8_t)(be->drained & ~source);
    if ((was != 0) == (be->drained != 0)) {
        if (was != be->drained)
            slb_info("cluster %s: backend %s drain by %s %s", cl->cfg->name, be->name,
                     source == SLB_DRAIN_ADMIN ? "admin" : "etcd", on ? "set" : "cleared");
        return;
    }
    cl->set.usable_version++; /* policies skip it; the ring and tables are not rebuilt */
    if (on) {
        slb_notice("cluster %s: backend %s drained by %s (%s in flight finish there)", cl->cfg->name, be->name,
                   source == SLB_DRAIN_ADMIN ? "admin" : "etcd", in_flight_words(cl, be, words, sizeof(words)));
    } else {
        slb_notice("cluster %s: backend %s undrained by %s", cl->cfg->name, be->name,
                   source == SLB_DRAIN_ADMIN ? "admin" : "etcd");
        be->usable_since_ms = uv_now(cl->ctx->loop); /* slow start ramps it up again */
        cluster_wake(cl);
    }
}

int slb_cluster_clear_ejection(struct slb_cluster *cl, struct slb_backend *be)
{
    uint64_t now = uv_now(cl->ctx->loop);

    be->consecutive_failures = 0;
    if (be->ejected_until_ms == 0)
        return 0;
    /* as slb_outlier_uneject() would at its end, so the interval logic sees the same state */
    be->ejected_until_ms = 0;
    be->usable_since_ms = now;
    cl->set.usable_version++;
    slb_notice("cluster %s: backend %s ejection cleared by admin (multiplier %u kept)", cl->cfg->name, be->name,
               be->times_ejected);
    cluster_wake(cl);
    outlier_arm(cl, now);
    return 1;
}

int slb_cluster_inherit_admin_drains(struct slb_cluster *cl, const struct slb_cluster *old)
{
    for (uint32_t i = 0; i < old->set.n; i++) {
        const struct slb_backend *ob = old->set.items[i];
        struct slb_backend *be;
        if (!(ob->drained & SLB_DRAIN_ADMIN))
            continue;
        if ((be = slb_cluster_find(cl, ob->name)) != NULL) {
            slb_cluster_set_drain(cl, be, SLB_DRAIN_ADMIN, 1);
        } else if (cl->cfg->etcd_prefix != NULL) {
            void *p = realloc(cl->admin_drains_pending, (cl->n_admin_drains_pending + 1) * SLB_BACKEND_NAME_MAX);
            if (p == NULL)
                return SLB_ENOMEM;
            cl->admin_drains_pending = p;
            snprintf(cl->admin_drains_pending[cl->n_admin_drains_pending++], SLB_BACKEND_NAME_MAX, "%s", ob->name);
        }
    }
    return 0;
}

/* A backend just added: an admin drain carried over a reload applies to it (first etcd listing only). */
static void apply_pending_admin_drain(struct slb_cluster *cl, struct slb_backend *be)
{
    if (cl->discovery != NULL && slb_discovery_synced(cl->discovery)) {
        free(cl->admin_drains_pending); /* the first listing is done: what it did not bring is gone */
        cl->admin_drains_pending = NULL;
        cl->n_admin_drains_pending = 0;
        return;
    }
    for (uint32_t i = 0; i < cl->n_admin_drains_pending; i++)
        if (strcmp(cl->admin_drains_pending[i], be->name) == 0) {
            slb_cluster_set_drain(cl, be, SLB_DRAIN_ADMIN, 1);
            memcpy(cl->admin_drains_pending[i], cl->admin_drains_pending[--cl->n_admin_drains_pending],
                   SLB_BACKEND_NAME_MAX);
            return;
        }
}

int slb_cluster_discovered(const struct slb_cluster *cl)
{
    return cl->discovery == NULL ? cl->cfg->etcd_prefix == NULL : slb_discovery_synced(cl->discovery);
}

struct slb_backend *slb_cluster_pick(struct slb_cluster *cl, uint64_t hash, int has_hash, const struct slb_tried *tried)
{
    struct slb_pick_ctx ctx = {
        .now_ms = uv_now(cl->ctx->loop),
        .random = slb_loop_random(cl->ctx),
        .hash = hash,
        .has_hash = has_hash,
        .tried = tried,
    };
    return slb_lb_pick(&cl->lb, &ctx);
}
