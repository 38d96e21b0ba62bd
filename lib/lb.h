/*
 * Load-balancing policies behind one small table (h2o balancer.h, HAProxy
 * struct lb_ops). Each policy lives in lib/lb_<name>.c and exports only its
 * `const struct slb_lb_ops`. pick() is pure: no I/O and no clock reads; the
 * caller passes time, randomness, the hash key and the call's tried set in
 * struct slb_pick_ctx, so policies are unit-testable without a loop.
 *
 * Tables (ring_hash's ring, maglev's lookup table, the weighted policies'
 * sums and heaps) depend only on membership and weights, so they are rebuilt
 * when set->version moves, never when only set->usable_version does (health,
 * ejection, connectivity): a flapping backend costs nothing, and picks walk
 * past unusable backends at pick time. Whatever depends on usability is
 * computed at pick time too (slow start from usable_since_ms) or keyed on
 * usable_version (panic mode, whether a backend ramps). Whoever sets a
 * backend's usable_since_ms bumps usable_version (or version).
 *
 * Ownership: struct slb_lb is embedded in its cluster; lb->data belongs to
 * the policy (allocated in init/update, freed in destroy). The backend set
 * is the cluster's; the policy only reads it.
 */
#ifndef SLB_LB_H
#define SLB_LB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "backend.h"
#include "rng.h"

#define SLB_MAX_ATTEMPTS 5

/* Backends a call has already tried, so a retry goes elsewhere when it can. */
struct slb_tried {
    uint8_t n;
    struct slb_backend *v[SLB_MAX_ATTEMPTS];
};

static inline int slb_tried_has(const struct slb_tried *t, const struct slb_backend *be)
{
    if (t == NULL)
        return 0;
    for (uint8_t i = 0; i < t->n; i++)
        if (t->v[i] == be)
            return 1;
    return 0;
}

static inline void slb_tried_add(struct slb_tried *t, struct slb_backend *be)
{
    if (t->n < SLB_MAX_ATTEMPTS && !slb_tried_has(t, be))
        t->v[t->n++] = be;
}

struct slb_pick_ctx {
    uint64_t now_ms;
    uint64_t random;               /* a fresh random value per pick */
    uint64_t hash;                 /* request hash key (ring_hash, maglev, source_ip_hash) */
    uint8_t has_hash;              /* 0: no key for this call -> random pick */
    const struct slb_tried *tried; /* may be NULL */
};

/*
 * What the hash policies (source_ip_hash, ring_hash, maglev) key a call on:
 * policy option "hash_on". A sidecar's apps all connect from the host's own
 * address (127.0.0.1), so SOURCE_IP gives every app of the host one key, and
 * one backend; SOURCE_IP_PORT keys each app connection apart (a gRPC channel
 * keeps its connection, so its calls stay on one backend); HEADER keys on a
 * request header's value, whatever connection carries it.
 */
enum slb_lb_hash_on {
    SLB_LB_HASH_ON_SOURCE_IP = 0,  /* the app's address (source_ip_hash's default) */
    SLB_LB_HASH_ON_SOURCE_IP_PORT, /* the app's address and port: one key per app connection */
    SLB_LB_HASH_ON_HEADER,         /* request header hash_header (ring_hash's and maglev's default) */
};

/* "source_ip", "source_ip_port", "header"; NULL for anything else. */
const char *slb_lb_hash_on_name(int hash_on);
/* The enum for a name, or -1 if unknown. */
int slb_lb_hash_on_parse(const char *name);
/* The names, comma-separated (for error messages). */
#define SLB_LB_HASH_ON_NAMES "source_ip, source_ip_port, header"

/*
 * The keys of one app connection, computed once when it is accepted, so a
 * call's key costs a field read. Owner: the downstream connection (embedded).
 */
struct slb_lb_peer_keys {
    uint64_t ip;      /* XXH64 of the peer's address (4 or 16 bytes) */
    uint64_t ip_port; /* XXH64 of the address followed by the port (network order) */
    uint8_t loopback; /* the peer is on this host (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) */
};

/* Fills k from an AF_INET or AF_INET6 peer address; other families (or NULL) give zeros. */
void slb_lb_peer_keys_init(struct slb_lb_peer_keys *k, const struct sockaddr *peer);
/*
 * The keys of an app connected over a Unix socket, which has no address: ip is
 * the connecting process (its pid, from SO_PEERCRED), so all calls of one
 * process share a backend as all calls of one remote host do over TCP;
 * ip_port is the connection (conn_id, unique among open connections), as the
 * port is. Not loopback: distinct processes get distinct keys.
 */
void slb_lb_peer_keys_init_unix(struct slb_lb_peer_keys *k, int32_t pid, uint64_t conn_id);

struct slb_lb_options;

/*
 * One call's hash key per o->hash_on: the connection's ip or ip_port key, or
 * the XXH64 of the request header's value (hdr: the value of o->hash_header,
 * NULL when the call has none). Returns 1 with *key set, or 0 when the call
 * has no key (its header is missing), which makes the pick random. No
 * allocation.
 */
int slb_lb_hash_key(const struct slb_lb_options *o, const struct slb_lb_peer_keys *peer, const uint8_t *hdr,
                    size_t hdr_len, uint64_t *key);

/* Policy options, parsed by config.c from "policy": {"<name>": {...}}. */
struct slb_lb_options {
    uint32_t choice_count;                /* least_request: 2 by default; 0 = full scan */
    uint8_t hash_on;                      /* enum slb_lb_hash_on (hash policies) */
    char hash_header[64];                 /* hash_on header: the request header holding the key */
    uint32_t min_ring_size;               /* ring_hash, default 1024 */
    uint32_t max_ring_size;               /* ring_hash, default 8388608 (gRFC A42 cap 8M) */
    uint32_t maglev_table_size;           /* maglev: prime, default 65537 */
    uint64_t slow_start_ms;               /* 0 = off */
    double slow_start_aggression;         /* 1.0 = linear ramp */
    double slow_start_min_weight_percent; /* floor during the ramp, default 10 */
    double panic_threshold_percent;       /* 0 = off */
};

void slb_lb_options_default(struct slb_lb_options *o);

struct slb_lb;

struct slb_lb_ops {
    const char *name;
    /* Allocate lb->data. 0 or SLB_ENOMEM. */
    int (*init)(struct slb_lb *lb);
    /* Membership or a weight changed (set->version): rebuild. Not called when
     * only usability changed (set->usable_version). NULL: nothing to build. */
    int (*update)(struct slb_lb *lb);
    /* A usable backend not in ctx->tried; else a usable tried one; else NULL. */
    struct slb_backend *(*pick)(struct slb_lb *lb, const struct slb_pick_ctx *ctx);
    /* pick() while some backend ramps under slow start (slb__lb_ramping), by ramp weight. NULL: pick() weighs
     * the ramp itself (the weighted policies), or the policy takes no slow_start (config.c rejects it). */
    struct slb_backend *(*pick_ramping)(struct slb_lb *lb, const struct slb_pick_ctx *ctx);
    void (*destroy)(struct slb_lb *lb);
    /* Whether the policy reads ctx->hash (so the router computes it). */
    uint8_t uses_hash;
};

/* Owner: the cluster that embeds it. */
struct slb_lb {
    const struct slb_lb_ops *ops;
    const struct slb_lb_options *opts;
    struct slb_backend_set *set;
    void *data;
    uint64_t set_version; /* set->version the policy last saw */
    uint64_t updates;     /* times ops->update rebuilt the tables (tests, metrics) */
    /* panic mode (slb_lb_pick): re-evaluated once per ms of ctx->now_ms, or when either set version moves */
    uint8_t _panic;
    uint64_t _panic_at_ms, _panic_version, _panic_usable_version;
    /* slow start (slb__lb_ramping): no backend ramps apart from _ramp_until_ms on; recomputed when either set
     * version moves: both only grow, so their sum moves whenever one does (UINT64_MAX: not computed yet) */
    uint64_t _ramp_until_ms, _ramp_versions;
};

/* Policy table lookup by name; NULL if unknown. */
const struct slb_lb_ops *slb_lb_find(const char *name);
/* Comma-separated names of all policies (for error messages). */
const char *slb_lb_names(void);

int slb_lb_init(struct slb_lb *lb, const char *policy, const struct slb_lb_options *opts, struct slb_backend_set *set);
/* Rebuilds the policy's tables for the set's membership and weights. 0 or SLB_ENOMEM. */
int slb_lb_update(struct slb_lb *lb);
/* Picks a backend; applies panic mode; NULL when none can take the call. */
struct slb_backend *slb_lb_pick(struct slb_lb *lb, const struct slb_pick_ctx *ctx);
void slb_lb_dispose(struct slb_lb *lb);

/*
 * The usable_since_ms (loop time, now_ms) of a backend that was registered at
 * wall-clock registered_at_ms (its etcd value), seen at wall-clock wall_now_ms:
 * its ramp starts from its registration, so every host ramps it in step. A
 * registration in the future (clock skew) ramps from now; one older than the
 * ramp gives 0 (no ramp).
 */
uint64_t slb_lb_ramp_start(const struct slb_lb_options *o, uint64_t now_ms, uint64_t wall_now_ms,
                           uint64_t registered_at_ms);

/* Effective weight with slow start applied (>= 1). */
uint32_t slb_lb_effective_weight(const struct slb_lb *lb, const struct slb_backend *be, uint64_t now_ms);

/* XXH64 of a key, seed 0: the same on every host and in every version. */
uint64_t slb_hash64(const void *data, size_t len);

/*
 * For the policy files (lib/lb_*.c) only.
 */

/* Whether a pick may choose be: usable, or in panic mode merely not draining
 * and not waiting for its first health answer (gRFC A17: calls wait for it). */
static inline int slb__lb_usable(const struct slb_lb *lb, const struct slb_backend *be, uint64_t now_ms)
{
    return lb->_panic ? (be->draining | be->drained) == 0 && be->health != SLB_HEALTH_PENDING
                      : slb_backend_usable(be, now_ms);
}

/*
 * Slow-start weight in 1/1024 units (>= 1), so a weight-1 backend can still
 * ramp. slb_lb_effective_weight() is this rounded to whole units.
 */
uint64_t slb__lb_weight_fp(const struct slb_lb *lb, const struct slb_backend *be, uint64_t now_ms);

void slb__lb_ramp_update(struct slb_lb *lb);

/*
 * Whether some backend may still ramp under slow start at now_ms, from
 * another time than the others (backends that all ramp from one time, as the
 * table sidelb starts with, have equal factors: equal shares, as without):
 * slb_lb_pick() calls ops->pick_ramping only then. O(1) when nothing changed
 * (a set scan after a version moved); one branch when slow start is off.
 */
static inline int slb__lb_ramping(struct slb_lb *lb, uint64_t now_ms)
{
    if (lb->opts->slow_start_ms == 0)
        return 0;
    if (lb->_ramp_versions != lb->set->version + lb->set->usable_version)
        slb__lb_ramp_update(lb);
    return now_ms < lb->_ramp_until_ms;
}

/*
 * Slow start for the unweighted policies (round_robin, random): whether a pick
 * that landed on be keeps it, with probability effective / full weight (1 when
 * be does not ramp), so picks are proportional to the ramp factors. r: a
 * random value.
 */
static inline int slb__lb_ramp_keep(const struct slb_lb *lb, const struct slb_backend *be, uint64_t now_ms, uint64_t r)
{
    uint64_t full = (uint64_t)be->weight << 10, eff = slb__lb_weight_fp(lb, be, now_ms);
    return eff >= full || (uint64_t)(((unsigned __int128)r * full) >> 64) < eff;
}

/*
 * The O(n) fallback every policy ends with: from set index `start`, the first
 * usable backend not tried, else the first usable tried one, else NULL.
 */
struct slb_backend *slb__lb_scan(const struct slb_lb *lb, const struct slb_pick_ctx *ctx, uint32_t start);

/*
 * The same walk over a hash table (ring_hash, maglev): slots[] holds set
 * indexes; from slot `start`, wrapping, the first usable backend not tried,
 * else the first usable tried one, else NULL.
 */
struct slb_backend *slb__lb_walk(const struct slb_lb *lb, const uint32_t *slots, uint32_t size, uint32_t start,
                                 const struct slb_pick_ctx *ctx);

/* qsort comparator over struct slb_backend * by name: hash tables are built in
 * an order independent of discovery order, so every sidecar builds the same. */
int slb__lb_cmp_name(const void *a, const void *b);

#endif
