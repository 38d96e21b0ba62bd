/*
 * Lease-based registration of local services (see register.h for the state
 * machine). Every registration runs the same small loop: step() compares
 * what is wanted (registered unless stopping or unhealthy) with what is, and
 * starts at most one etcd request; each answer updates the state and calls
 * step() or schedules the next tick. Answers that arrive after
 * slb_registrar_free() only count down r->inflight.
 */
#include "register.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "etcd_value.h"
#include "health.h"
#include "log.h"
#include "tls.h"
#include "rng.h"

/* One register[] entry. Owner: its registrar (r->regs). */
struct reg {
    struct slb_registrar *r;
    char *key, *value;
    size_t key_len, value_len;
    char *value_drained; /* the value with an operator's "drain": true (json format, whatever `format` says) */
    size_t value_drained_len;
    int drain; /* the key carried "drain": true when last read: kept on every re-put */
    /* What value says (metadata owned here). ep.registered_at_ms: the wall-clock start of this registration
     * (slow start ramps from it on every host), kept across lease renewals and re-puts, cleared when the local
     * service turns unhealthy (back up is a new registration); 0 before a registration starts. */
    struct slb_etcd_endpoint ep;
    int format;                         /* enum slb_register_format: value is ep formatted so */
    char *health_addr, *health_service; /* NULL when not gated */
    uint32_t hc_interval_ms, hc_timeout_ms;
    uint32_t ttl_s;
    uint64_t tick_ms; /* keepalive + key check period: TTL/3 */
    uint64_t backoff_ms;
    int state;                  /* enum slb_registrar_state */
    int last_err;               /* error that put us in RETRYING (quiet repeats) */
    int health;                 /* enum slb_backend_health; SERVING when not gated */
    int busy;                   /* an etcd request of this registration is in flight */
    int64_t lease, stale_lease; /* stale: replaced lease, revoked once the key moved to the new one */
    int handed_over;            /* a reloaded config registers the same key: leave the lease to expire */
    uv_timer_t timer;           /* tick (REGISTERED) or backoff (RETRYING) */
    struct slb_health_check *hc;
};

/* Owner: the daemon. */
struct slb_registrar {
    uv_loop_t *loop;
    struct slb_etcd *etcd;
    struct slb_conn_ctx *io;
    struct reg *regs;
    size_t n;
    uv_timer_t shutdown_timer;
    void (*shutdown_cb)(void *user);
    void *shutdown_user;
    int stopping, shutdown_fired, freed;
    unsigned inflight;     /* etcd requests whose answer has not come back */
    unsigned open_handles; /* timers not yet closed */
    struct slb_rng rng;    /* retry jitter */
};

static const char *const state_names[] = {"IDLE",      "GRANTING", "PUTTING",  "REGISTERED",
                                          "UNHEALTHY", "RETRYING", "REVOKING", "STOPPED"};

const char *slb_registrar_state_name(int state)
{
    return state >= 0 && (size_t)state < SLB_ARRAY_SIZE(state_names) ? state_names[state] : "?";
}

size_t slb_registrar_count(const struct slb_registrar *r)
{
    return r->n;
}

int slb_registrar_state(const struct slb_registrar *r, size_t i)
{
    return i < r->n ? r->regs[i].state : -1;
}

int64_t slb_registrar_lease(const struct slb_registrar *r, size_t i)
{
    return i < r->n ? r->regs[i].lease : 0;
}

static void step(struct reg *g);
static void check_shutdown_done(struct slb_registrar *r);

/* The one state setter: logs old -> new. A failure repeating while etcd is down is logged once. */
static void set_state(struct reg *g, int s, int err)
{
    int old = g->state, level = SLB_LOG_NOTICE;

    if (old == s)
        return;
    if (s == SLB_REGISTRAR_RETRYING)
        level = err == g->last_err ? SLB_LOG_DEBUG : SLB_LOG_WARN;
    else if (old == SLB_REGISTRAR_RETRYING && s == SLB_REGISTRAR_GRANTING)
        level = SLB_LOG_DEBUG;
    else if (old == SLB_REGISTRAR_GRANTING && s == SLB_REGISTRAR_PUTTING)
        level = SLB_LOG_INFO;
    if (err != 0)
        slb_log(level, "register %s: %s -> %s (%s)", g->key, state_names[old], state_names[s], slb_strerror(err));
    else
        slb_log(level, "register %s: %s -> %s", g->key, state_names[old], state_names[s]);
    g->state = s;
    if (s == SLB_REGISTRAR_RETRYING)
        g->last_err = err;
    else if (s == SLB_REGISTRAR_REGISTERED || s == SLB_REGISTRAR_UNHEALTHY || s == SLB_REGISTRAR_STOPPED)
        g->last_err = 0;
}

static int wanted(const struct reg *g)
{
    return !g->r->stopping && g->health == SLB_HEALTH_SERVING;
}

static void maybe_release(struct slb_registrar *r)
{
    if (!r->freed || r->open_handles > 0 || r->inflight > 0)
        return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->regs[i].key);
        free(r->regs[i].value);
        free(r->regs[i].value_drained);
        slb_etcd_endpoint_dispose(&r->regs[i].ep);
        free(r->regs[i].health_addr);
        free(r->regs[i].health_service);
    }
    free(r->regs);
    free(r);
}

/* Every answer starts here: 0 when the registrar is gone (nothing else to do). */
static int answer(struct reg *g)
{
    struct slb_registrar *r = g->r;
    r->inflight--;
    g->busy = 0;
    if (r->freed) {
        maybe_release(r);
        return 0;
    }
    return 1;
}

/* Marks a request started (rc == 0) and returns rc. */
static int sent(struct reg *g, int rc)
{
    if (rc == 0) {
        g->r->inflight++;
        g->busy = 1;
    }
    return rc;
}

static void on_tick(uv_timer_t *t);

static void schedule_tick(struct reg *g)
{
    uv_timer_start(&g->timer, on_tick, g->tick_ms, 0);
}

static void retry(struct reg *g, int err)
{
    struct slb_registrar *r = g->r;
    uint64_t delay = g->backoff_ms, span = delay / 5 + 1;

    set_state(g, SLB_REGISTRAR_RETRYING, err);
    delay = delay - span / 2 + slb_rng_bounded(slb_rng_next(&r->rng), span); /* +-10 % */
    g->backoff_ms = g->backoff_ms * 2 > g->tick_ms ? g->tick_ms : g->backoff_ms * 2;
    uv_timer_start(&g->timer, on_tick, delay, 0);
}

static void on_stale_revoke(void *user, int err, int64_t rev, int64_t deleted)
{
    struct reg *g = user;
    struct slb_registrar *r = g->r;
    r->inflight--; /* not this registration's one request: leave busy alone */
    if (r->freed)
        maybe_release(r);
}

/* g->value from g->ep (after its registered_at_ms changed), and g->value_drained: the same with an
 * operator's "drain": true (json format, whatever `format` says). 0 or SLB_ENOMEM (the old values stay). */
static int format_value(struct reg *g)
{
    struct slb_etcd_endpoint drained = g->ep; /* shallow: formatting only reads it */
    char *v, *d;

    drained.drain = 1;
    v = slb_etcd_value_format(&g->ep, g->format);
    d = slb_etcd_value_format(&drained, SLB_REGISTER_JSON);
    if (v == NULL || d == NULL) {
        free(v);
        free(d);
        return SLB_ENOMEM;
    }
    free(g->value);
    g->value = v;
    g->value_len = strlen(v);
    free(g->value_drained);
    g->value_drained = d;
    g->value_drained_len = strlen(d);
    return 0;
}

/* A registration starts (not one that goes on under a new lease): its time is now. */
static int start_registration(struct reg *g)
{
    g->ep.registered_at_ms = slb_wall_ms();
    return format_value(g);
}

static void on_put(void *user, int err, int64_t rev, int64_t deleted);
static void on_grant(void *user, int err, int64_t id, int64_t ttl);
static void on_revoke(void *user, int err, int64_t rev, int64_t deleted);

static void grant(struct reg *g)
{
    int rc;
    set_state(g, SLB_REGISTRAR_GRANTING, 0);
    if ((rc = sent(g, slb_etcd_lease_grant(g->r->etcd, g->ttl_s, on_grant, g))) != 0)
        retry(g, rc);
}

/*
 * An operator drains this host's backend everywhere by writing the key's
 * value with "drain": true (docs/config.md). Every put is a read-modify-write
 * that keeps that flag: read the key, put our value (with "drain": true if
 * the key had it) only if the key is unchanged since the read (one etcd
 * transaction on its mod_revision), else read again. An operator's write
 * between our read and our put is therefore never lost.
 */
static int kv_drained(const struct reg *g, const struct slb_etcd_kv *kv)
{
    struct slb_etcd_endpoint ep;
    size_t al;
    int drain;

    if (kv == NULL || slb_etcd_value_parse(g->key, kv->value, kv->value_len, &ep, NULL, 0) != 0)
        return 0;
    al = strlen(ep.addr);
    /* only a value naming this registration's own address (the key is prefix + address) */
    drain = ep.drain && al <= g->key_len && memcmp(g->key + g->key_len - al, ep.addr, al) == 0;
    slb_etcd_endpoint_dispose(&ep);
    return drain;
}

static void on_put_read(void *user, int err, const struct slb_etcd_range_result *res);

/* Puts the value with the drain flag kv carries, if the key is still as kv shows it (kv NULL: absent). */
static void put_over(struct reg *g, const struct slb_etcd_kv *kv)
{
    int drain = kv_drained(g, kv), rc;

    if (drain != g->drain)
        slb_notice("register %s: %s", g->key,
                   drain ? "drained by an operator (\"drain\": true in etcd): kept when the key is re-put"
                         : "no longer drained in etcd");
    g->drain = drain;
    rc = sent(g, slb_etcd_put_if_unchanged(g->r->etcd, g->key, g->key_len, drain ? g->value_drained : g->value,
                                           drain ? g->value_drained_len : g->value_len, g->lease,
                                           kv != NULL ? kv->mod_revision : 0, on_put, g));
    if (rc != 0)
        retry(g, rc);
}

static void put(struct reg *g)
{
    int rc;
    if (g->state != SLB_REGISTRAR_REGISTERED) /* a repair keeps REGISTERED */
        set_state(g, SLB_REGISTRAR_PUTTING, 0);
    if ((rc = sent(g, slb_etcd_range(g->r->etcd, g->key, g->key_len, 0, on_put_read, g))) != 0)
        retry(g, rc);
}

/* A read of our key answered: 1 when its caller goes on with the result; else the
 * registrar is gone, the key is no longer wanted (next step taken) or the read failed
 * (retried). */
static int read_answer_goes_on(struct reg *g, int err)
{
    if (!answer(g))
        return 0;
    if (!wanted(g)) {
        step(g);
        return 0;
    }
    if (err != 0) {
        retry(g, err);
        return 0;
    }
    return 1;
}

static void on_put_read(void *user, int err, const struct slb_etcd_range_result *res)
{
    struct reg *g = user;

    if (!read_answer_goes_on(g, err))
        return;
    put_over(g, res->n == 1 ? &res->kvs[0] : NULL);
}

static void lease_revoke(struct reg *g)
{
    int64_t lease = g->lease;
    int rc;

    uv_timer_stop(&g->timer);
    set_state(g, SLB_REGISTRAR_REVOKING, 0);
    g->lease = 0;
    if ((rc = sent(g, slb_etcd_lease_revoke(g->r->etcd, lease, on_revoke, g))) != 0) {
        slb_warn("register %s: lease %" PRIx64 " not revoked (%s); the key expires within %u s", g->key,
                 (uint64_t)lease, slb_strerror(rc), g->ttl_s);
        step(g);
    }
}

/* Drives one registration toward what is wanted; no-op while a request is in flight. */
static void step(struct reg *g)
{
    struct slb_registrar *r = g->r;

    if (g->busy || r->freed)
        return;
    if (!wanted(g)) {
        uv_timer_stop(&g->timer);
        if (!r->stopping && g->health != SLB_HEALTH_UNKNOWN)
            g->ep.registered_at_ms = 0; /* the local service is down: back up is a new registration */
        if (g->lease != 0 && r->stopping && g->handed_over) {
            /* the new registrar puts the key under its own lease; this one just expires */
            slb_info("register %s: handed over to the reloaded config", g->key);
            g->lease = 0;
        }
        if (g->lease != 0) {
            lease_revoke(g);
            return;
        }
        if (r->stopping) {
            set_state(g, SLB_REGISTRAR_STOPPED, 0);
            check_shutdown_done(r);
        } else if (g->health != SLB_HEALTH_UNKNOWN) {
            set_state(g, SLB_REGISTRAR_UNHEALTHY, 0);
        }
        return;
    }
    switch (g->state) {
    case SLB_REGISTRAR_REGISTERED:
    case SLB_REGISTRAR_RETRYING:
        break; /* the timer drives these */
    default:
        if (g->ep.registered_at_ms == 0 && start_registration(g) != 0) {
            retry(g, SLB_ENOMEM);
            return;
        }
        grant(g);
    }
}

static void on_grant(void *user, int err, int64_t id, int64_t ttl)
{
    struct reg *g = user;

    if (!answer(g))
        return;
    if (err != 0) {
        if (wanted(g))
            retry(g, err);
        else
            step(g);
        return;
    }
    if (g->lease != 0 && g->lease != id)
        g->stale_lease = g->lease;
    g->lease = id;
    if (!wanted(g)) {
        step(g); /* revokes it */
        return;
    }
    put(g);
}

static void on_put(void *user, int err, int64_t rev, int64_t deleted)
{
    struct reg *g = user;
    struct slb_registrar *r = g->r;

    if (!answer(g))
        return;
    if (err == SLB_ECONFLICT && wanted(g)) { /* written by someone else since our read: read it again */
        slb_info("register %s: the key changed while being put; reading it again", g->key);
        put(g);
        return;
    }
    if (err == SLB_ENOTFOUND && wanted(g)) { /* the lease vanished between grant and put */
        slb_notice("register %s: lease %" PRIx64 " is gone; granting a new one", g->key, (uint64_t)g->lease);
        g->lease = 0;
        grant(g);
        return;
    }
    if (err != 0) {
        if (wanted(g))
            retry(g, err);
        else
            step(g);
        return;
    }
    if (g->stale_lease != 0) {
        if (slb_etcd_lease_revoke(r->etcd, g->stale_lease, on_stale_revoke, g) == 0)
            r->inflight++;
        g->stale_lease = 0;
    }
    if (!wanted(g)) {
        step(g);
        return;
    }
    set_state(g, SLB_REGISTRAR_REGISTERED, 0);
    g->backoff_ms = SLB_REGISTRAR_BACKOFF_MS;
    schedule_tick(g);
}

static void on_range(void *user, int err, const struct slb_etcd_range_result *res)
{
    struct reg *g = user;
    const struct slb_etcd_kv *kv;
    const char *want = NULL;
    size_t want_len = 0;

    if (!read_answer_goes_on(g, err))
        return;
    kv = res->n == 1 ? &res->kvs[0] : NULL;
    if (kv != NULL) { /* what the key should hold: our value, with an operator's drain kept */
        want = kv_drained(g, kv) ? g->value_drained : g->value;
        want_len = want == g->value ? g->value_len : g->value_drained_len;
    }
    if (kv == NULL || kv->lease != g->lease || kv->value_len != want_len || memcmp(kv->value, want, want_len) != 0) {
        const char *why = kv == NULL ? "deleted"
                          : kv->value_len != want_len || memcmp(kv->value, want, want_len) != 0
                              ? "overwritten"
                              : "bound to another lease";
        slb_notice("register %s: key %s; restoring it", g->key, why);
        put_over(g, kv); /* this read is the read of the read-modify-write */
        return;
    }
    schedule_tick(g);
}

static void on_keepalive(void *user, int err, int64_t id, int64_t ttl)
{
    struct reg *g = user;
    int rc;

    if (!answer(g))
        return;
    if (!wanted(g)) {
        step(g);
        return;
    }
    if (err == SLB_ENOTFOUND || (err == 0 && ttl <= 0)) {
        slb_notice("register %s: lease %" PRIx64 " is gone (expired or etcd restarted); registering again", g->key,
                   (uint64_t)g->lease);
        g->lease = 0;
        grant(g);
        return;
    }
    if (err != 0) {
        retry(g, err);
        return;
    }
    if ((rc = sent(g, slb_etcd_range(g->r->etcd, g->key, g->key_len, 0, on_range, g))) != 0)
        retry(g, rc);
}

static void on_revoke(void *user, int err, int64_t rev, int64_t deleted)
{
    struct reg *g = user;

    if (!answer(g))
        return;
    if (err != 0 && err != SLB_ENOTFOUND)
        slb_warn("register %s: lease not revoked (%s); the key expires within %u s", g->key, slb_strerror(err),
                 g->ttl_s);
    step(g);
}

static void on_tick(uv_timer_t *t)
{
    struct reg *g = slb_container_of(t, struct reg, timer);
    int rc;

    if (g->busy || g->r->freed)
        return;
    if (!wanted(g)) {
        step(g);
        return;
    }
    if (g->state == SLB_REGISTRAR_REGISTERED) {
        if ((rc = sent(g, slb_etcd_lease_keepalive(g->r->etcd, g->lease, on_keepalive, g))) != 0)
            retry(g, rc);
    } else {
        grant(g); /* RETRYING: a new lease (the old one, if still alive, is revoked once replaced) */
    }
}

static void on_health(struct slb_health_check *hc, int status, void *user)
{
    struct reg *g = user;

    if (g->r->freed || g->r->stopping)
        return;
    g->health = status;
    step(g);
}

static void on_shutdown_timer(uv_timer_t *t)
{
    struct slb_registrar *r = slb_container_of(t, struct slb_registrar, shutdown_timer);
    size_t left = 0;

    if (r->shutdown_fired || r->freed)
        return;
    r->shutdown_fired = 1;
    for (size_t i = 0; i < r->n; i++)
        left += r->regs[i].state != SLB_REGISTRAR_STOPPED;
    if (left > 0)
        slb_warn("register: shutdown timed out; %zu lease(s) not revoked expire by their TTL", left);
    if (r->shutdown_cb != NULL)
        r->shutdown_cb(r->shutdown_user);
}

static void check_shutdown_done(struct slb_registrar *r)
{
    if (!r->stopping || r->shutdown_fired || r->freed)
        return;
    for (size_t i = 0; i < r->n; i++)
        if (r->regs[i].state != SLB_REGISTRAR_STOPPED)
            return;
    uv_timer_start(&r->shutdown_timer, on_shutdown_timer, 0, 0); /* from the loop, never inline */
}

static void stop_health(struct slb_registrar *r)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->regs[i].hc != NULL) {
            slb_health_stop(r->regs[i].hc);
            r->regs[i].hc = NULL;
        }
    }
}

void slb_registrar_hand_over(struct slb_registrar *r, const struct slb_config_register *regs, size_t n)
{
    for (size_t i = 0; i < r->n; i++) {
        struct reg *g = &r->regs[i];
        for (size_t j = 0; j < n; j++) {
            size_t pl = strlen(regs[j].prefix);
            if (g->key_len == pl + strlen(regs[j].address) && memcmp(g->key, regs[j].prefix, pl) == 0 &&
                strcmp(g->key + pl, regs[j].address) == 0)
                g->handed_over = 1;
        }
    }
}

void slb_registrar_inherit(struct slb_registrar *r, const struct slb_registrar *old)
{
    for (size_t i = 0; i < r->n; i++) {
        struct reg *g = &r->regs[i];
        for (size_t j = 0; j < old->n; j++) {
            const struct reg *o = &old->regs[j];
            if (o->ep.registered_at_ms == 0 || o->key_len != g->key_len || memcmp(o->key, g->key, g->key_len) != 0)
                continue;
            uint64_t mine = g->ep.registered_at_ms;
            g->ep.registered_at_ms = o->ep.registered_at_ms;
            if (format_value(g) != 0) /* no memory: a new time, the ramp starts again */
                g->ep.registered_at_ms = mine;
        }
    }
}

void slb_registrar_shutdown(struct slb_registrar *r, void (*cb)(void *user), void *user)
{
    if (r->stopping || r->freed)
        return;
    r->stopping = 1;
    r->shutdown_cb = cb;
    r->shutdown_user = user;
    stop_health(r);
    uv_timer_start(&r->shutdown_timer, on_shutdown_timer, SLB_REGISTRAR_SHUTDOWN_MS, 0);
    for (size_t i = 0; i < r->n; i++)
        step(&r->regs[i]);
    check_shutdown_done(r);
}

static void on_close(uv_handle_t *h)
{
    struct slb_registrar *r = h->data;
    r->open_handles--;
    maybe_release(r);
}

void slb_registrar_free(struct slb_registrar *r)
{
    if (r == NULL || r->freed)
        return;
    r->freed = 1;
    stop_health(r);
    for (size_t i = 0; i < r->n; i++)
        uv_close((uv_handle_t *)&r->regs[i].timer, on_close);
    uv_close((uv_handle_t *)&r->shutdown_timer, on_close);
}

static char *dupn(const char *s)
{
    return strdup(s != NULL ? s : "");
}

static int reg_init(struct reg *g, const struct slb_config_register *c)
{
    struct slb_etcd_endpoint *ep = &g->ep;
    size_t pl = strlen(c->prefix), al = strlen(c->address);

    if (al >= sizeof(ep->addr))
        return SLB_ECONFIG;
    ep->weight = c->weight ? c->weight : 1;
    memcpy(ep->addr, c->address, al + 1);
    if (c->zone != NULL)
        snprintf(ep->zone, sizeof(ep->zone), "%s", c->zone);
    if (c->metadata_json != NULL && (ep->metadata = strdup(c->metadata_json)) == NULL)
        return SLB_ENOMEM;
    g->format = c->format;
    if ((g->key = malloc(pl + al + 1)) == NULL)
        return SLB_ENOMEM;
    memcpy(g->key, c->prefix, pl);
    memcpy(g->key + pl, c->address, al + 1);
    g->key_len = pl + al;
    if (format_value(g) != 0) {
        slb_error("register %s: cannot format the value (metadata)", g->key);
        return SLB_ECONFIG;
    }
    g->ttl_s = c->ttl_s ? c->ttl_s : 10;
    g->tick_ms = (uint64_t)g->ttl_s * 1000 / 3;
    if (g->tick_ms < 100)
        g->tick_ms = 100;
    g->backoff_ms = SLB_REGISTRAR_BACKOFF_MS;
    g->health = SLB_HEALTH_SERVING;
    if (c->health_check.enabled) {
        g->health = SLB_HEALTH_UNKNOWN;
        g->hc_interval_ms = c->health_check.interval_ms;
        g->hc_timeout_ms = c->health_check.timeout_ms;
        if ((g->health_addr = dupn(c->health_address ? c->health_address : c->address)) == NULL ||
            (g->health_service = dupn(c->health_check.service)) == NULL)
            return SLB_ENOMEM;
    }
    return 0;
}

/* The health check speaks TLS as the entry's "tls" says (server_name, else the health address's host). */
static int reg_use_tls(struct reg *g, const struct slb_config_tls *tls)
{
    char host[128];
    const char *name =
        tls->server_name != NULL ? tls->server_name : slb_tls_host_of(g->health_addr, host, sizeof(host));

    return slb_health_set_tls(g->hc, tls->ctx, name, NULL);
}

struct slb_registrar *slb_registrar_new(uv_loop_t *loop, struct slb_etcd *etcd, struct slb_conn_ctx *io,
                                        const struct slb_config_register *regs, size_t n)
{
    struct slb_registrar *r;

    if ((r = calloc(1, sizeof(*r))) == NULL)
        return NULL;
    r->loop = loop;
    r->etcd = etcd;
    r->io = io;
    r->n = n;
    slb_rng_seed(&r->rng, slb_rng_seed_from_os());
    if ((r->regs = calloc(n ? n : 1, sizeof(*r->regs))) == NULL) {
        free(r);
        return NULL;
    }
    /* handles first, so that every later failure unwinds through slb_registrar_free() */
    uv_timer_init(loop, &r->shutdown_timer);
    r->shutdown_timer.data = r;
    r->open_handles++;
    for (size_t i = 0; i < n; i++) {
        r->regs[i].r = r;
        uv_timer_init(loop, &r->regs[i].timer);
        r->regs[i].timer.data = r;
        r->open_handles++;
    }
    for (size_t i = 0; i < n; i++)
        if (reg_init(&r->regs[i], &regs[i]) != 0)
            goto fail;
    for (size_t i = 0; i < n; i++) {
        struct reg *g = &r->regs[i];
        if (g->health_addr == NULL)
            continue;
        if (io == NULL) {
            slb_error("register %s: a health_check needs a connection context", g->key);
            goto fail;
        }
        g->hc = slb_health_start(loop, io, g->health_addr, g->health_service, g->hc_interval_ms, g->hc_timeout_ms,
                                 on_health, g);
        if (g->hc == NULL) {
            slb_error("register %s: cannot check health of %s", g->key, g->health_addr);
            goto fail;
        }
        if (regs[i].tls.enabled && reg_use_tls(g, &regs[i].tls) != 0) {
            slb_error("register %s: cannot check health of %s over TLS (out of memory)", g->key, g->health_addr);
            goto fail;
        }
    }
    for (size_t i = 0; i < n; i++)
        step(&r->regs[i]);
    return r;
fail:
    slb_registrar_free(r);
    return NULL;
}
