#include "h2_upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "config.h"
#include "log.h"
#include "loop_ctx.h"
#include "tls.h"

static void pool_feed(struct slb_upstream_pool *pool);
static void pool_arm_timer(struct slb_upstream_pool *pool);

/* Past this many streams a connection is replaced before its stream ids run
 * out (2^31 - 1), as Envoy does: it takes no new calls and closes when idle. */
#define UPSTREAM_MAX_STREAM_ID (1u << 29)

static void upstream_on_close(struct slb_conn *c, int err);
static void upstream_on_free(struct slb_conn *c);

static const struct slb_conn_ops upstream_conn_ops = {
    .on_read = NULL,
    .on_close = upstream_on_close,
    .on_free = upstream_on_free,
};

static const struct slb_upstream_handler *handler(const struct slb_upstream_pool *pool)
{
    return pool->ctx->up_handler;
}

const char *slb_upstream_backend_name(const struct slb_upstream *uc)
{
    return uc != NULL && uc->pool != NULL && uc->pool->be != NULL ? uc->pool->be->name : "?";
}

static void pool_on_timer_closed(uv_handle_t *h)
{
    struct slb_upstream_pool *pool = slb_container_of(h, struct slb_upstream_pool, timer);
    struct slb_conn_ctx *io = &pool->ctx->io;

    slb_tls_session_free(&pool->tls_session);
    free(pool);
    /* counted: the loop context's memory is freed only after this */
    if (--io->n_handles == 0 && io->closing && io->on_all_closed != NULL)
        io->on_all_closed(io);
}

/* The backend is being freed: nothing references the pool any more. */
static void pool_on_backend_free(struct slb_backend *be)
{
    struct slb_upstream_pool *pool = be->pool;

    be->pool = NULL;
    if (pool == NULL)
        return;
    pool->be = NULL;
    slb_list_remove(&pool->ctx_link);
    uv_close((uv_handle_t *)&pool->timer, pool_on_timer_closed);
}

struct slb_upstream_pool *slb_upstream_pool_get(struct slb_loop_ctx *ctx, struct slb_backend *be,
                                                const struct slb_config_cluster *cfg)
{
    struct slb_upstream_pool *pool = be->pool;

    if (pool != NULL)
        return pool;
    if ((pool = calloc(1, sizeof(*pool))) == NULL)
        return NULL;
    pool->ctx = ctx;
    pool->be = be;
    pool->cfg = cfg;
    pool->backoff_ms = cfg->backoff.initial_ms;
    slb_list_init(&pool->conns);
    slb_list_init(&pool->waiters);
    uv_timer_init(ctx->loop, &pool->timer);
    slb_conn_ctx_handle_opened(&ctx->io);
    slb_list_push_back(&ctx->pools, &pool->ctx_link);
    be->pool = pool;
    be->on_free = pool_on_backend_free;
    return pool;
}

int slb_upstream_pool_in_backoff(const struct slb_upstream_pool *pool)
{
    return pool->backoff_until_ms > uv_now(pool->ctx->loop);
}

static uint32_t conn_stream_limit(const struct slb_upstream *uc)
{
    uint32_t remote = nghttp2_session_get_remote_settings(uc->conn.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    uint32_t cap = uc->pool->cfg->max_streams_per_connection;
    return remote < cap ? remote : cap;
}

/* The connection takes no new streams and closes once its last one ends
 * (upstream_stream_done); it stops counting against max_connections_per_backend. */
static void upstream_drain(struct slb_upstream *uc)
{
    if (uc->goaway)
        return;
    uc->goaway = 1;
    uc->pool->n_draining++;
}

/* Recycling: drained and replaced (a replacement opens when a call needs
 * one). One log line per SLB_LOG_LIMIT_MS for all connections of the loop. */
static void upstream_retire(struct slb_upstream *uc, const char *why)
{
    struct slb_loop_ctx *ctx = uc->pool->ctx;
    uint64_t skipped;

    if (uc->goaway)
        return;
    upstream_drain(uc);
    ctx->stats.upstream_conns_recycled++;
    if (slb_log_limit_pass(&ctx->log_limits.recycle, uv_now(ctx->loop), SLB_LOG_LIMIT_MS, &skipped))
        slb_info("backend %s: replacing a connection after %u calls: %s (%u still on it finish there; "
                 "%llu more replaced since the last such line)",
                 uc->pool->be->name, uc->n_requests, why, uc->active, (unsigned long long)skipped);
}

static int upstream_too_old(const struct slb_upstream *uc, uint64_t now)
{
    return uc->retire_at_ms != 0 && uc->retire_at_ms <= now;
}

static struct slb_upstream *pool_find_room(struct slb_upstream_pool *pool)
{
    struct slb_list *it, *tmp;
    uint64_t now = uv_now(pool->ctx->loop);

    slb_list_foreach_safe(it, tmp, &pool->conns)
    {
        struct slb_upstream *uc = slb_list_entry(it, struct slb_upstream, link);
        if (!uc->connected || uc->goaway || uc->conn.closing)
            continue;
        if (upstream_too_old(uc, now))
            continue; /* the pool timer retires it (and closes it when idle) */
        if (uc->active < conn_stream_limit(uc))
            return uc;
    }
    return NULL;
}

static struct slb_pool_waiter *pool_dequeue(struct slb_upstream_pool *pool)
{
    struct slb_pool_waiter *w;

    if (slb_list_empty(&pool->waiters))
        return NULL;
    w = slb_list_first(&pool->waiters, struct slb_pool_waiter, link);
    slb_upstream_pool_unqueue(w);
    return w;
}

void slb_upstream_pool_unqueue(struct slb_pool_waiter *w)
{
    if (w->pool == NULL)
        return;
    slb_list_remove(&w->link);
    w->pool->n_waiting--;
    w->pool = NULL;
}

int slb_upstream_request(struct slb_upstream *uc, struct slb_h2_stream *s, const nghttp2_nv *nv, size_t n, int has_body)
{
    int32_t sid = nghttp2_submit_request(uc->conn.session, NULL, nv, n, has_body ? &slb_h2_body_provider : NULL, NULL);

    if (sid < 0) {
        slb_warn("backend %s: cannot submit request: %s", slb_upstream_backend_name(uc), nghttp2_strerror(sid));
        return SLB_EPROTO;
    }
    slb_h2_stream_bind(s, &uc->conn, &uc->streams, sid);
    if (uc->active++ == 0 && uc->pool->cfg->keepalive_ms != 0) {
        uc->last_recv_ms = uv_now(uc->pool->ctx->loop); /* silence counts from the first call */
        pool_arm_timer(uc->pool);
    }
    uc->n_requests++;
    if (uc->pool->cfg->max_requests_per_connection != 0 && uc->n_requests >= uc->pool->cfg->max_requests_per_connection)
        upstream_retire(uc, "max_requests_per_connection");
    else if (nghttp2_session_get_next_stream_id(uc->conn.session) > UPSTREAM_MAX_STREAM_ID)
        upstream_retire(uc, "2^29 stream ids used"); /* before they run out (2^31 - 1), as Envoy does */
    slb_conn_mark_dirty(&uc->conn);
    return 0;
}

/* A stream slot may have freed: feed waiters, or close a draining connection that is idle. */
static void upstream_stream_done(struct slb_upstream *uc)
{
    struct slb_upstream_pool *pool = uc->pool;

    if (uc->conn.closing)
        return;
    if ((uc->goaway || pool->be->draining || pool->ctx->stopping) && uc->active == 0 && slb_list_empty(&uc->streams)) {
        slb_conn_close(&uc->conn, 0);
        return;
    }
    pool_feed(pool);
}

void slb_upstream_release(struct slb_h2_stream *s, uint32_t rst_code)
{
    struct slb_upstream *uc;

    if (s->conn == NULL)
        return;
    uc = slb_container_of(s->conn, struct slb_upstream, conn);
    if (s->open)
        uc->active--;
    slb_h2_stream_unbind(s, rst_code);
    upstream_stream_done(uc);
}

/* TLS under the new connection: the cluster's context, SNI and the name verified
 * (server_name, else the backend's host), and the backend's last session. */
static int upstream_use_tls(struct slb_upstream *uc)
{
    struct slb_upstream_pool *pool = uc->pool;
    const struct slb_config_tls *cfg = &pool->cfg->tls;
    char host[SLB_BACKEND_NAME_MAX];
    const char *name = cfg->server_name != NULL ? cfg->server_name : slb_backend_tls_name(pool->be, host, sizeof(host));
    struct slb_tls *t = slb_tls_client_new(cfg->ctx, name, &pool->tls_session, pool->be->tls_stats);

    if (t == NULL)
        return SLB_ENOMEM;
    return slb_conn_use_tls(&uc->conn, t);
}

static int upstream_connect(struct slb_upstream_pool *pool, int probe, struct slb_upstream **out)
{
    struct slb_loop_ctx *ctx = pool->ctx;
    struct slb_backend *be = pool->be;
    struct slb_upstream *uc = calloc(1, sizeof(*uc));
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, pool->cfg->stream_window},
    };
    int rv;

    if (uc == NULL)
        return SLB_ENOMEM;
    if ((rv = slb_conn_init(&uc->conn, &ctx->io, &upstream_conn_ops)) != 0) {
        free(uc);
        return rv;
    }
    uc->pool = pool;
    uc->probe = (uint8_t)probe;
    slb_list_init(&uc->streams);
    slb_list_init(&uc->link);
    slb_backend_ref(be); /* dropped in upstream_on_free */
    if (nghttp2_session_client_new3(&uc->conn.session, ctx->up_cbs, uc, ctx->up_opt, slb_h2_mem()) != 0) {
        /* never listed: the close path must leave the pool's list and counters alone */
        slb_conn_close(&uc->conn, SLB_ENOMEM);
        return SLB_ENOMEM;
    }
    if (pool->cfg->tls.enabled && upstream_use_tls(uc) != 0) {
        slb_conn_close(&uc->conn, SLB_ENOMEM); /* never listed, as above */
        return SLB_ENOMEM;
    }
    nghttp2_submit_settings(uc->conn.session, NGHTTP2_FLAG_NONE, iv, SLB_ARRAY_SIZE(iv));
    /* connection window: room for many streams' windows */
    nghttp2_session_set_local_window_size(uc->conn.session, NGHTTP2_FLAG_NONE, 0, 16 * 1024 * 1024);
    slb_list_push_front(&pool->conns, &uc->link);
    uc->listed = 1;
    pool->n_conns++;
    pool->n_connecting++;
    ctx->stats.upstream_conns_total++;
    {
        /* gRPC connection backoff: an attempt may take max(MIN_CONNECT_TIMEOUT,
         * current backoff); requests do not wait that long (connect_timeout_ms). */
        uint64_t now = uv_now(ctx->loop), limit = pool->cfg->backoff.min_connect_timeout_ms;
        if (pool->backoff_ms > limit)
            limit = pool->backoff_ms;
        uc->connect_deadline_ms = now + limit;
        uc->patience_ms = now + pool->cfg->connect_timeout_ms;
        /* probes keep their distance from every attempt, jittered so that
         * the sidelbs of many hosts do not knock on a backend in step */
        pool->probe_at_ms =
            now + (uint64_t)((double)pool->cfg->backoff.probe_interval_ms * (1.0 + 0.5 * slb_rng_unit(&ctx->rng)));
    }
    if (be->state != SLB_BACKEND_READY && !probe) /* a probe leaves it TRANSIENT_FAILURE until it connects */
        slb_backend_set_state(be, SLB_BACKEND_CONNECTING);
    slb_debug("backend %s: connecting (%u connections)", be->name, pool->n_conns);
    *out = uc;
    return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct slb_upstream *uc = slb_container_of(req, struct slb_upstream, creq);

    if (uc->conn.closing)
        return; /* closed while connecting (timeout, drain, stop): on_close did the accounting */
    if (status < 0) {
        slb_conn_close(&uc->conn, status);
        return;
    }
    /* TCP keepalive: a backend host that vanished is noticed even without calls */
    uv_tcp_keepalive(&uc->conn.tcp, 1, 30);
    if (slb_conn_start(&uc->conn) != 0) {
        slb_conn_close(&uc->conn, UV_EIO);
        return;
    }
    slb_conn_mark_dirty(&uc->conn); /* our preface and SETTINGS */
    /* still connecting: the backend's SETTINGS (its stream limit) come first */
}

/* The backend's first SETTINGS arrived: the connection is up. */
static void upstream_ready(struct slb_upstream *uc)
{
    struct slb_upstream_pool *pool = uc->pool;

    pool->n_connecting--;
    uc->connected = 1;
    pool->backoff_ms = pool->cfg->backoff.initial_ms;
    pool->backoff_until_ms = 0;
    if (uc->probe)
        pool->ctx->stats.upstream_probe_recoveries++;
    if (pool->failures > 0)
        slb_notice("backend %s: connected after %u failed attempts%s", pool->be->name, pool->failures,
                   uc->probe ? " (an early probe, while calls waited)" : "");
    pool->failures = 0;
    uc->last_recv_ms = uv_now(pool->ctx->loop);
    if (pool->cfg->max_connection_age_ms != 0) {
        /* +-10 %: connections opened together do not all recycle together */
        double jitter = 0.9 + 0.2 * slb_rng_unit(&pool->ctx->rng);
        uint64_t age = (uint64_t)((double)pool->cfg->max_connection_age_ms * jitter);
        uc->retire_at_ms = uc->last_recv_ms + (age > 0 ? age : 1);
    }
    slb_backend_set_state(pool->be, SLB_BACKEND_READY);
    pool_feed(pool);
    pool_arm_timer(pool); /* keepalive */
}

/* HTTP/2 keepalive: a connection with calls that has been silent for
 * keepalive_ms gets a PING; one unanswered for keepalive_timeout_ms is
 * closed, so calls on a blackholed backend fail (or retry) instead of
 * waiting forever. Idle connections are not pinged (gRPC servers punish it).
 * When this connection next needs a look (UINT64_MAX: never). */
static uint64_t keepalive_due(const struct slb_upstream *uc)
{
    const struct slb_config_cluster *cfg = uc->pool->cfg;

    if (cfg->keepalive_ms == 0 || !uc->connected || uc->conn.closing)
        return UINT64_MAX;
    if (uc->ping_outstanding)
        return uc->ping_sent_ms + cfg->keepalive_timeout_ms;
    if (uc->active == 0)
        return UINT64_MAX; /* armed again when a stream opens */
    return uc->last_recv_ms + cfg->keepalive_ms;
}

/* From the pool timer only: sends the PING, or closes the silent connection. */
static void keepalive_check(struct slb_upstream *uc, uint64_t now)
{
    const struct slb_config_cluster *cfg = uc->pool->cfg;

    if (keepalive_due(uc) > now)
        return;
    if (uc->ping_outstanding) {
        slb_warn("backend %s: PING unanswered for %u ms: closing the connection (%u calls on it)", uc->pool->be->name,
                 cfg->keepalive_timeout_ms, uc->active);
        slb_conn_close(&uc->conn, UV_ETIMEDOUT);
        return;
    }
    nghttp2_submit_ping(uc->conn.session, NGHTTP2_FLAG_NONE, NULL);
    slb_conn_mark_dirty(&uc->conn);
    uc->ping_outstanding = 1;
    uc->ping_sent_ms = now;
}

/* Opens one connection (a probe: during backoff). 0 or < 0 (logged). */
static int pool_open(struct slb_upstream_pool *pool, int probe)
{
    struct slb_upstream *uc;
    int rv;

    if ((rv = upstream_connect(pool, probe, &uc)) != 0) {
        slb_warn("backend %s: cannot connect: %s", pool->be->name, slb_strerror(rv));
        return rv;
    }
    if ((rv = uv_tcp_connect(&uc->creq, &uc->conn.tcp, (const struct sockaddr *)&pool->be->addr, on_connect)) != 0) {
        slb_conn_close(&uc->conn, rv);
        return rv;
    }
    pool_arm_timer(pool);
    return 0;
}

/* Opens a connection when requests wait, none is coming up, and the backend is not in backoff. */
static void pool_maybe_connect(struct slb_upstream_pool *pool)
{
    if (pool->n_waiting == 0 || pool->n_connecting > 0 || pool->ctx->stopping || pool->be->draining)
        return;
    if (pool->n_conns - pool->n_draining >= pool->cfg->max_connections_per_backend ||
        pool->n_conns >= 2 * pool->cfg->max_connections_per_backend)
        return; /* they wait for a stream slot (draining connections are replaced, within a bound) */
    if (slb_upstream_pool_in_backoff(pool))
        return; /* the pool timer ends the backoff; waiters were sent elsewhere */
    pool_open(pool, 0);
}

uint64_t slb_upstream_pool_probe(struct slb_upstream_pool *pool)
{
    uint64_t now = uv_now(pool->ctx->loop), interval = pool->cfg->backoff.probe_interval_ms;

    if (interval == 0 || pool->ctx->stopping || pool->be->draining ||
        pool->be->state != SLB_BACKEND_TRANSIENT_FAILURE || !slb_upstream_pool_in_backoff(pool))
        return UINT64_MAX; /* off, or nothing to hurry: the pool timer ends the backoff */
    if (pool->n_connecting > 0 || pool->n_conns - pool->n_draining >= pool->cfg->max_connections_per_backend ||
        pool->n_conns >= 2 * pool->cfg->max_connections_per_backend)
        return now + interval; /* an attempt is on its way already, or no room for one */
    if (pool->probe_at_ms > now)
        return pool->probe_at_ms;
    pool->ctx->stats.upstream_probes++;
    slb_debug("backend %s: probing early (backoff ends in %llu ms)", pool->be->name,
              (unsigned long long)(pool->backoff_until_ms - now));
    if (pool_open(pool, 1) != 0)
        pool->probe_at_ms = now + interval; /* not again before the interval */
    return pool->probe_at_ms;
}

/* Waiters this backend cannot serve now go back to their users. */
static void pool_release_waiters(struct slb_upstream_pool *pool, int err)
{
    struct slb_list taken;
    struct slb_pool_waiter *w;

    /* take the queue first: a user may queue again (on another pool, or later on this one) */
    slb_list_init(&taken);
    slb_list_splice(&taken, &pool->waiters);
    pool->n_waiting = 0;
    while (!slb_list_empty(&taken)) {
        w = slb_list_first(&taken, struct slb_pool_waiter, link);
        slb_list_remove(&w->link);
        w->pool = NULL;
        handler(pool)->on_unavailable(w, err);
    }
}

static void pool_feed(struct slb_upstream_pool *pool)
{
    struct slb_upstream *uc;
    struct slb_pool_waiter *w;

    while (!slb_list_empty(&pool->waiters) && (uc = pool_find_room(pool)) != NULL) {
        w = pool_dequeue(pool);
        handler(pool)->on_ready(w, uc);
    }
    if (pool->n_waiting > 0 && (pool->be->draining || slb_upstream_pool_in_backoff(pool))) {
        pool_release_waiters(pool, pool->be->draining ? SLB_ENOBACKEND : UV_ECONNREFUSED);
        return;
    }
    pool_maybe_connect(pool);
}

int slb_upstream_pool_queue(struct slb_upstream_pool *pool, struct slb_pool_waiter *w)
{
    struct slb_upstream *uc = slb_list_empty(&pool->waiters) ? pool_find_room(pool) : NULL;

    if (uc != NULL) {
        handler(pool)->on_ready(w, uc);
        return 0;
    }
    if (pool->n_waiting >= pool->cfg->max_pending_per_backend)
        return SLB_ELIMIT;
    slb_list_push_back(&pool->waiters, &w->link);
    w->pool = pool;
    pool->n_waiting++;
    pool_feed(pool);
    return 0;
}

static void pool_connect_failed(struct slb_upstream_pool *pool, int err, const char *why)
{
    const struct slb_config_backoff *bo = &pool->cfg->backoff;
    uint64_t now = uv_now(pool->ctx->loop);
    double jitter = 1.0 + bo->jitter * (2.0 * slb_rng_unit(&pool->ctx->rng) - 1.0);
    uint64_t wait = (uint64_t)((double)pool->backoff_ms * jitter);

    pool->backoff_until_ms = now + (wait > 0 ? wait : 1);
    pool->backoff_ms = (uint32_t)((double)pool->backoff_ms * bo->multiplier);
    if (pool->backoff_ms > bo->max_ms)
        pool->backoff_ms = bo->max_ms;
    /* loud once per run of failures (the backend's state change), then debug */
    slb_log(pool->failures++ == 0 ? SLB_LOG_WARN : SLB_LOG_DEBUG, "backend %s: connect failed: %s (retry in %llu ms)",
            pool->be->name, why, (unsigned long long)wait);
    snprintf(pool->be->last_error, sizeof(pool->be->last_error), "%s", why);
    slb_backend_set_state(pool->be, SLB_BACKEND_TRANSIENT_FAILURE);
    pool_arm_timer(pool);
    pool_release_waiters(pool, err);
}

static void on_pool_timer(uv_timer_t *t)
{
    struct slb_upstream_pool *pool = slb_container_of(t, struct slb_upstream_pool, timer);
    uint64_t now = uv_now(pool->ctx->loop);
    struct slb_list *it, *tmp;
    int retired = 0;

    slb_list_foreach_safe(it, tmp, &pool->conns)
    {
        struct slb_upstream *uc = slb_list_entry(it, struct slb_upstream, link);
        if (uc->connected && !uc->goaway && !uc->conn.closing && upstream_too_old(uc, now)) {
            upstream_retire(uc, "max_connection_age_ms");
            retired = 1;
            if (uc->active == 0 && slb_list_empty(&uc->streams))
                slb_conn_close(&uc->conn, 0);
            continue;
        }
        if (uc->connected || uc->conn.closing)
            continue;
        if (uc->connect_deadline_ms <= now) {
            slb_conn_close(&uc->conn, UV_ETIMEDOUT);
        } else if (uc->patience_ms <= now && pool->be->state != SLB_BACKEND_TRANSIENT_FAILURE) {
            /* still connecting: stop sending requests here, and move the waiting ones */
            slb_warn("backend %s: not connected after %u ms; calls go elsewhere while it keeps trying", pool->be->name,
                     pool->cfg->connect_timeout_ms);
            snprintf(pool->be->last_error, sizeof(pool->be->last_error), "not connected after %u ms",
                     pool->cfg->connect_timeout_ms);
            slb_backend_set_state(pool->be, SLB_BACKEND_TRANSIENT_FAILURE);
            pool->backoff_until_ms = uc->connect_deadline_ms;
            pool_release_waiters(pool, UV_ETIMEDOUT);
        }
    }
    slb_list_foreach_safe(it, tmp, &pool->conns)
    {
        keepalive_check(slb_list_entry(it, struct slb_upstream, link), now);
    }
    if (pool->be->state == SLB_BACKEND_TRANSIENT_FAILURE && pool->backoff_until_ms <= now && pool->n_connecting == 0)
        slb_backend_set_state(pool->be, SLB_BACKEND_IDLE); /* wakes waiting calls; the next pick reconnects */
    if (retired)
        pool_feed(pool); /* waiters get a replacement */
    pool_arm_timer(pool);
}

static void pool_arm_timer(struct slb_upstream_pool *pool)
{
    uint64_t now = uv_now(pool->ctx->loop), next = UINT64_MAX;
    struct slb_list *it, *tmp;

    if (pool->ctx->stopping)
        return;
    slb_list_foreach_safe(it, tmp, &pool->conns)
    {
        struct slb_upstream *uc = slb_list_entry(it, struct slb_upstream, link);
        if (uc->connected) {
            uint64_t ka = keepalive_due(uc);
            if (ka < next)
                next = ka;
            if (!uc->goaway && !uc->conn.closing && uc->retire_at_ms != 0 && uc->retire_at_ms < next)
                next = uc->retire_at_ms;
            continue;
        }
        if (uc->conn.closing)
            continue;
        if (uc->connect_deadline_ms < next)
            next = uc->connect_deadline_ms;
        if (pool->be->state != SLB_BACKEND_TRANSIENT_FAILURE && uc->patience_ms < next)
            next = uc->patience_ms;
    }
    /* with an attempt (a probe) on its way, its end decides: the backoff's would only spin */
    if (pool->be->state == SLB_BACKEND_TRANSIENT_FAILURE && pool->n_connecting == 0 && pool->backoff_until_ms < next)
        next = pool->backoff_until_ms;
    if (next == UINT64_MAX) {
        uv_timer_stop(&pool->timer);
        return;
    }
    uv_timer_start(&pool->timer, on_pool_timer, next > now ? next - now : 0, 0);
}

void slb_upstream_pool_drain(struct slb_upstream_pool *pool)
{
    struct slb_list *it, *tmp;

    pool_release_waiters(pool, SLB_ENOBACKEND);
    slb_list_foreach_safe(it, tmp, &pool->conns)
    {
        struct slb_upstream *uc = slb_list_entry(it, struct slb_upstream, link);
        if (uc->active == 0 && slb_list_empty(&uc->streams))
            slb_conn_close(&uc->conn, 0);
    }
}

void slb_upstream_pool_close(struct slb_upstream_pool *pool)
{
    struct slb_list *it, *tmp;

    uv_timer_stop(&pool->timer);
    pool_release_waiters(pool, SLB_ENOBACKEND);
    slb_list_foreach_safe(it, tmp, &pool->conns)
    {
        struct slb_upstream *uc = slb_list_entry(it, struct slb_upstream, link);
        slb_conn_close(&uc->conn, UV_ECANCELED);
    }
}

static void upstream_on_close(struct slb_conn *c, int err)
{
    struct slb_upstream *uc = slb_container_of(c, struct slb_upstream, conn);
    struct slb_upstream_pool *pool = uc->pool;
    int connect_failed = !uc->connected;

    if (!uc->listed)
        return; /* the session never came up: nothing was counted */
    slb_list_remove(&uc->link);
    uc->listed = 0;
    pool->n_conns--;
    pool->ctx->stats.upstream_conns_closed++;
    if (uc->goaway)
        pool->n_draining--;
    if (connect_failed)
        pool->n_connecting--;
    while (!slb_list_empty(&uc->streams)) {
        struct slb_h2_stream *s = slb_list_first(&uc->streams, struct slb_h2_stream, link);
        if (s->open)
            uc->active--;
        slb_h2_stream_unbind(s, 0);
        handler(pool)->on_lost(s, err);
    }
    if (pool->ctx->stopping)
        return;
    if (connect_failed && uc->probe && pool->be->state == SLB_BACKEND_TRANSIENT_FAILURE &&
        slb_upstream_pool_in_backoff(pool)) {
        /* an early attempt failed: the backoff goes on as it was (debug only: no line per probe) */
        pool->failures++;
        slb_debug("backend %s: probe failed: %s", pool->be->name, slb_conn_strerror(c, err != 0 ? err : SLB_EPROTO));
        pool_arm_timer(pool);
    } else if (connect_failed) {
        /* no SETTINGS from the backend before the connection ended (refused,
         * reset, a failed TLS handshake, or a protocol error nghttp2 ended
         * with a GOAWAY of its own) */
        err = err != 0 ? err : SLB_EPROTO;
        pool_connect_failed(pool, err, slb_conn_strerror(c, err));
    } else {
        if (err != 0 && err != UV_EOF)
            slb_notice("backend %s: connection closed: %s", pool->be->name, slb_conn_strerror(c, err));
        if (pool->n_conns == 0 && pool->be->state == SLB_BACKEND_READY)
            slb_backend_set_state(pool->be, SLB_BACKEND_IDLE);
        pool_feed(pool);
    }
}

static void upstream_on_free(struct slb_conn *c)
{
    struct slb_upstream *uc = slb_container_of(c, struct slb_upstream, conn);
    struct slb_backend *be = uc->pool->be;

    nghttp2_session_del(c->session);
    free(uc);
    slb_backend_unref(be); /* may free the backend and its pool */
}

/* ---- nghttp2 client callbacks ---- */

static struct slb_h2_stream *stream_of(nghttp2_session *s, struct slb_upstream *uc, int32_t sid)
{
    if (uc->conn.closing)
        return NULL;
    return slb_h2_stream_of(s, sid);
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, nghttp2_rcbuf *name, nghttp2_rcbuf *value,
                     uint8_t flags, void *user)
{
    struct slb_upstream *uc = user;
    struct slb_h2_stream *st = stream_of(s, uc, frame->hd.stream_id);

    if (st == NULL)
        return 0;
    if (handler(uc->pool)->on_header(st, name, value) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

/* A connection closed by a callback of this read: the rest of the read is not parsed. */
static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *user)
{
    struct slb_upstream *uc = user;

    return uc->conn.closing ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct slb_upstream *uc = user;
    struct slb_h2_stream *st;

    if (uc->conn.closing)
        return 0;
    uc->last_recv_ms = uv_now(uc->pool->ctx->loop); /* the backend is alive */
    uc->ping_outstanding = 0;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if ((st = stream_of(s, uc, frame->hd.stream_id)) != NULL)
            handler(uc->pool)->on_headers_done(st, frame->headers.cat == NGHTTP2_HCAT_HEADERS,
                                               (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
        break;
    case NGHTTP2_DATA:
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && (st = stream_of(s, uc, frame->hd.stream_id)) != NULL)
            handler(uc->pool)->on_end(st);
        break;
    case NGHTTP2_GOAWAY:
        if (!uc->goaway)
            slb_info("backend %s: GOAWAY (last stream %d, error %u): draining connection", uc->pool->be->name,
                     frame->goaway.last_stream_id, frame->goaway.error_code);
        upstream_drain(uc);
        if (frame->goaway.error_code != NGHTTP2_NO_ERROR) {
            /* An error GOAWAY ends the connection: whatever it still carries
             * fails now (and may be retried) instead of waiting for a peer
             * that has given up on it. */
            slb_warn("backend %s: GOAWAY with error %u: closing the connection", uc->pool->be->name,
                     frame->goaway.error_code);
            slb_conn_close(&uc->conn, SLB_EPROTO);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        upstream_stream_done(uc);
        break;
    case NGHTTP2_SETTINGS:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            break;
        if (nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) == 0) {
            /* A connection that may carry no call must not hold any: calls
             * would wait in the pool forever, and another connection would
             * hear the same. */
            if (!uc->connected) {
                uc->pool->ctx->stats.upstream_no_streams++;
                /* a connect failure: backoff, and the waiters go elsewhere (logged there) */
                slb_conn_close(&uc->conn, SLB_ENOSTREAMS);
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            }
            if (!uc->goaway) {
                uc->pool->ctx->stats.upstream_no_streams++;
                slb_notice("backend %s: allows 0 concurrent streams now: draining the connection (%u calls on it)",
                           uc->pool->be->name, uc->active);
            }
            upstream_drain(uc);
            upstream_stream_done(uc); /* closes it when idle; waiters get a new connection */
            break;
        }
        if (!uc->connected)
            upstream_ready(uc); /* calls wait for it: the stream limit is known now */
        else
            pool_feed(uc->pool); /* the stream limit may have changed */
        break;
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                              void *user)
{
    struct slb_upstream *uc = user;
    struct slb_h2_stream *st = stream_of(s, uc, sid);

    if (st == NULL) {
        if (!uc->conn.closing)
            nghttp2_session_consume(s, sid, len); /* nobody will read it: keep the windows open */
        return 0;
    }
    if (handler(uc->pool)->on_data(st, data, len) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *user)
{
    struct slb_upstream *uc = user;
    struct slb_h2_stream *st = stream_of(s, uc, sid);

    if (uc->conn.closing)
        return 0;
    if (st != NULL && st->open) {
        /* the stream is over on the wire; its user may still be sending the
         * response it carried, so it stays linked until released */
        st->open = 0;
        uc->active--;
        handler(uc->pool)->on_close(st, error_code);
    }
    upstream_stream_done(uc);
    return 0;
}

nghttp2_session_callbacks *slb_upstream_callbacks_new(void)
{
    nghttp2_session_callbacks *cbs;

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_header_callback2(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(cbs, slb_h2_send_data_cb);
    return cbs;
}
