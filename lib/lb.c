/*
 * The policy registry and what every policy shares: option defaults, the
 * generic pick wrapper (stale-table refresh, Envoy-style panic mode), slow
 * start weights, the O(n) fallback scan, the key hash and the choice of a
 * call's key (hash_on).
 */
#include "lb.h"

#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common.h"

extern const struct slb_lb_ops slb_lb_pick_first;
extern const struct slb_lb_ops slb_lb_round_robin;
extern const struct slb_lb_ops slb_lb_random;
extern const struct slb_lb_ops slb_lb_weighted_round_robin;
extern const struct slb_lb_ops slb_lb_weighted_random;
extern const struct slb_lb_ops slb_lb_least_request;
extern const struct slb_lb_ops slb_lb_source_ip_hash;
extern const struct slb_lb_ops slb_lb_ring_hash;
extern const struct slb_lb_ops slb_lb_maglev;

static const struct slb_lb_ops *const policies[] = {
    &slb_lb_pick_first,           &slb_lb_round_robin,     &slb_lb_random,
    &slb_lb_weighted_round_robin, &slb_lb_weighted_random, &slb_lb_least_request,
    &slb_lb_source_ip_hash,       &slb_lb_ring_hash,       &slb_lb_maglev,
};

void slb_lb_options_default(struct slb_lb_options *o)
{
    memset(o, 0, sizeof(*o));
    o->choice_count = 2;
    o->min_ring_size = 1024;
    o->max_ring_size =
        1048576; /* 160 points per weight unit up to ~3,000 backends; a 10,000-backend rebuild stays ~60 ms */
    o->maglev_table_size = 65537;
    o->slow_start_ms = 0;
    o->slow_start_aggression = 1.0;
    o->slow_start_min_weight_percent = 10;
    o->panic_threshold_percent = 0;
}

const struct slb_lb_ops *slb_lb_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < SLB_ARRAY_SIZE(policies); i++)
        if (strcmp(policies[i]->name, name) == 0)
            return policies[i];
    return NULL;
}

const char *slb_lb_names(void)
{
    return "pick_first, round_robin, random, weighted_round_robin, weighted_random, least_request, "
           "source_ip_hash, ring_hash, maglev";
}

int slb_lb_init(struct slb_lb *lb, const char *policy, const struct slb_lb_options *opts, struct slb_backend_set *set)
{
    static struct slb_lb_options defaults;
    int err;

    memset(lb, 0, sizeof(*lb));
    if ((lb->ops = slb_lb_find(policy)) == NULL)
        return SLB_ECONFIG;
    if (opts == NULL) {
        /* The defaults are constant, so initialising them twice is harmless. */
        slb_lb_options_default(&defaults);
        opts = &defaults;
    }
    lb->opts = opts;
    lb->set = set;
    lb->_panic_at_ms = UINT64_MAX;
    if ((err = lb->ops->init(lb)) != 0) {
        lb->ops = NULL;
        return err;
    }
    if ((err = slb_lb_update(lb)) != 0) {
        slb_lb_dispose(lb);
        return err;
    }
    return 0;
}

int slb_lb_update(struct slb_lb *lb)
{
    int err;

    if (lb->ops->update != NULL) {
        if ((err = lb->ops->update(lb)) != 0)
            return err;
        lb->updates++;
    }
    lb->set_version = lb->set->version;
    lb->_panic_at_ms = UINT64_MAX;
    lb->_ramp_versions = UINT64_MAX;
    return 0;
}

/* Envoy's panic mode: too few usable backends -> spread over all of them. */
static void update_panic(struct slb_lb *lb, uint64_t now_ms)
{
    const struct slb_backend_set *set = lb->set;
    uint32_t usable = 0;

    if (lb->_panic_at_ms == now_ms && lb->_panic_version == set->version &&
        lb->_panic_usable_version == set->usable_version)
        return;
    for (uint32_t i = 0; i < set->n; i++)
        usable += slb_backend_usable(set->items[i], now_ms);
    lb->_panic = set->n > 0 && (double)usable * 100.0 < lb->opts->panic_threshold_percent * (double)set->n;
    lb->_panic_at_ms = now_ms;
    lb->_panic_version = set->version;
    lb->_panic_usable_version = set->usable_version;
}

struct slb_backend *slb_lb_pick(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    if (SLB_UNLIKELY(lb->set_version != lb->set->version) && slb_lb_update(lb) != 0)
        return NULL; /* no memory for the new table: fail this call, never use a stale one */
    if (lb->set->n == 0)
        return NULL;
    if (lb->opts->panic_threshold_percent > 0)
        update_panic(lb, ctx->now_ms);
    if (SLB_UNLIKELY(lb->opts->slow_start_ms != 0) && lb->ops->pick_ramping != NULL && slb__lb_ramping(lb, ctx->now_ms))
        return lb->ops->pick_ramping(lb, ctx); /* round_robin, random: weighted while a backend ramps */
    return lb->ops->pick(lb, ctx);
}

void slb_lb_dispose(struct slb_lb *lb)
{
    if (lb->ops != NULL && lb->ops->destroy != NULL)
        lb->ops->destroy(lb);
    lb->data = NULL;
    lb->ops = NULL;
}

uint64_t slb__lb_weight_fp(const struct slb_lb *lb, const struct slb_backend *be, uint64_t now_ms)
{
    const struct slb_lb_options *o = lb->opts;
    uint64_t full = (uint64_t)be->weight << 10, t, fp;
    double f, floor_f, aggression;

    /* usable_since_ms == 0: there from the start, no ramp (Envoy skips initial hosts). */
    if (o->slow_start_ms == 0 || be->usable_since_ms == 0 || now_ms < be->usable_since_ms)
        return full;
    if ((t = now_ms - be->usable_since_ms) >= o->slow_start_ms)
        return full;
    aggression = o->slow_start_aggression > 0 ? o->slow_start_aggression : 1.0;
    f = (double)t / (double)o->slow_start_ms;
    if (aggression != 1.0)
        f = pow(f, 1.0 / aggression);
    floor_f = o->slow_start_min_weight_percent / 100.0;
    if (f < floor_f)
        f = floor_f;
    fp = (uint64_t)((double)full * f);
    return fp ? fp : 1;
}

void slb__lb_ramp_update(struct slb_lb *lb)
{
    const struct slb_backend_set *set = lb->set;
    uint64_t until = 0;
    int apart = 0; /* some backend ramps from another time than the others */

    for (uint32_t i = 0; i < set->n; i++) {
        uint64_t since = set->items[i]->usable_since_ms;
        apart |= since != set->items[0]->usable_since_ms;
        if (since != 0 && since + lb->opts->slow_start_ms > until)
            until = since + lb->opts->slow_start_ms;
    }
    /* all ramping from one time (the table sidelb starts with): equal factors, so equal shares, as without */
    lb->_ramp_until_ms = apart ? until : 0;
    lb->_ramp_versions = set->version + set->usable_version;
}

uint64_t slb_lb_ramp_start(const struct slb_lb_options *o, uint64_t now_ms, uint64_t wall_now_ms,
                           uint64_t registered_at_ms)
{
    uint64_t age;

    if (o->slow_start_ms == 0 || registered_at_ms >= wall_now_ms)
        return now_ms; /* no slow start, or registered "in the future" (clock skew): from now */
    if ((age = wall_now_ms - registered_at_ms) >= o->slow_start_ms)
        return 0; /* up for longer than the ramp */
    /* loop time counts from about boot: a ramp that began before it starts at the earliest loop time */
    return age < now_ms ? now_ms - age : 1;
}

uint32_t slb_lb_effective_weight(const struct slb_lb *lb, const struct slb_backend *be, uint64_t now_ms)
{
    uint64_t w = (slb__lb_weight_fp(lb, be, now_ms) + 512) >> 10;
    return w ? (uint32_t)w : 1;
}

struct slb_backend *slb__lb_scan(const struct slb_lb *lb, const struct slb_pick_ctx *ctx, uint32_t start)
{
    const struct slb_backend_set *set = lb->set;
    struct slb_backend *tried = NULL;
    uint32_t i = start < set->n ? start : 0;

    for (uint32_t k = 0; k < set->n; k++) {
        struct slb_backend *be = set->items[i];
        if (slb__lb_usable(lb, be, ctx->now_ms)) {
            if (!slb_tried_has(ctx->tried, be))
                return be;
            if (tried == NULL)
                tried = be;
        }
        if (++i == set->n)
            i = 0;
    }
    return tried;
}

struct slb_backend *slb__lb_walk(const struct slb_lb *lb, const uint32_t *slots, uint32_t size, uint32_t start,
                                 const struct slb_pick_ctx *ctx)
{
    struct slb_backend *tried = NULL;
    uint32_t i = start < size ? start : 0;

    for (uint32_t k = 0; k < size; k++) {
        struct slb_backend *be = lb->set->items[slots[i]];
        if (++i == size)
            i = 0;
        if (!slb__lb_usable(lb, be, ctx->now_ms))
            continue;
        if (SLB_LIKELY(!slb_tried_has(ctx->tried, be)))
            return be;
        if (tried == NULL)
            tried = be;
    }
    return tried;
}

int slb__lb_cmp_name(const void *a, const void *b)
{
    const struct slb_backend *x = *(struct slb_backend *const *)a, *y = *(struct slb_backend *const *)b;
    return strcmp(x->name, y->name);
}

/* XXH64, seed 0 (Debian's libxxhash): ring points and maglev permutations
 * derive from it, so it must never change; check_lb pins known values. */
uint64_t slb_hash64(const void *data, size_t len)
{
    return XXH64(data, len, 0);
}

static const char *const hash_on_names[] = {
    [SLB_LB_HASH_ON_SOURCE_IP] = "source_ip",
    [SLB_LB_HASH_ON_SOURCE_IP_PORT] = "source_ip_port",
    [SLB_LB_HASH_ON_HEADER] = "header",
};

const char *slb_lb_hash_on_name(int hash_on)
{
    return hash_on >= 0 && (size_t)hash_on < SLB_ARRAY_SIZE(hash_on_names) ? hash_on_names[hash_on] : NULL;
}

int slb_lb_hash_on_parse(const char *name)
{
    for (size_t i = 0; name != NULL && i < SLB_ARRAY_SIZE(hash_on_names); i++)
        if (strcmp(name, hash_on_names[i]) == 0)
            return (int)i;
    return -1;
}

void slb_lb_peer_keys_init(struct slb_lb_peer_keys *k, const struct sockaddr *peer)
{
    uint8_t buf[18]; /* an IPv6 address and a port */
    size_t alen;

    memset(k, 0, sizeof(*k));
    if (peer != NULL && peer->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
        alen = sizeof(in->sin_addr);
        memcpy(buf, &in->sin_addr, alen);
        memcpy(buf + alen, &in->sin_port, 2);
        k->loopback = buf[0] == 127;
    } else if (peer != NULL && peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        alen = sizeof(in6->sin6_addr);
        memcpy(buf, &in6->sin6_addr, alen);
        memcpy(buf + alen, &in6->sin6_port, 2);
        k->loopback =
            IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) || (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && buf[12] == 127);
    } else {
        return;
    }
    k->ip = slb_hash64(buf, alen);
    k->ip_port = slb_hash64(buf, alen + 2);
}

void slb_lb_peer_keys_init_unix(struct slb_lb_peer_keys *k, int32_t pid, uint64_t conn_id)
{
    uint8_t buf[5 + 4 + 8] = {'u', 'n', 'i', 'x', ':'}; /* never equal to a 4- or 16-byte IP key's input */

    memset(k, 0, sizeof(*k));
    memcpy(buf + 5, &pid, sizeof(pid));
    memcpy(buf + 9, &conn_id, sizeof(conn_id));
    k->ip = slb_hash64(buf, 9);
    k->ip_port = slb_hash64(buf, sizeof(buf));
}

int slb_lb_hash_key(const struct slb_lb_options *o, const struct slb_lb_peer_keys *peer, const uint8_t *hdr,
                    size_t hdr_len, uint64_t *key)
{
    switch (o->hash_on) {
    case SLB_LB_HASH_ON_SOURCE_IP:
        *key = peer->ip;
        return 1;
    case SLB_LB_HASH_ON_SOURCE_IP_PORT:
        *key = peer->ip_port;
        return 1;
    case SLB_LB_HASH_ON_HEADER:
        if (hdr == NULL)
            return 0;
        *key = slb_hash64(hdr, hdr_len);
        return 1;
    }
    return 0;
}
