/*
 * Host names of one cluster's backends ("backend.example:50051" in a static
 * list or an etcd value), looked up off the loop and turned into backends:
 * every A and AAAA record becomes one backend "ip:port", with the weight and
 * zone of the entry that named it (gRPC's dns resolver, Envoy's STRICT_DNS).
 *
 * - Lookups run on libuv's thread pool (uv_getaddrinfo: the system resolver,
 *   /etc/hosts and nsswitch included), never on the loop.
 * - Each name is looked up again every refresh_ms (the cluster's
 *   dns_refresh_ms) and soon after one of its backends failed to connect
 *   (slb_resolver_refresh_soon), at most once a second per name.
 * - Only differences reach the cluster: an address found again is left alone
 *   (no reconnect); a new one is added, one gone is removed (draining).
 * - A failed lookup keeps the previous addresses and logs once per failure
 *   streak; a name that never resolved has no backends.
 * IP literals never come here: the cluster lists them at once.
 *
 * Ownership: struct slb_resolver is embedded in its cluster and its timer is
 * a counted handle of the cluster's loop context. The names are the
 * resolver's. A lookup in flight when its name goes away is cancelled (or,
 * when already running, its answer is dropped): it holds no pointer into the
 * cluster, so it may end after the server is gone.
 */
#ifndef SLB_RESOLVER_H
#define SLB_RESOLVER_H

#include <stdint.h>
#include <uv.h>

#include "backend.h"
#include "hostport.h"
#include "list.h"

struct slb_conn_ctx;
struct dns_lookup;

/* What a lookup changed, reported to the cluster (addr: "ip:port" / "[v6]:port").
 * Owner: the resolver keeps a copy (struct slb_resolver.sink). */
struct slb_resolver_sink {
    /* addr now comes from host: list it (one more reference from names); drain: the entry's etcd "drain" */
    void (*add)(void *user, const char *addr, const char *host, uint32_t weight, const char *zone, int drain);
    /* the entry naming host changed its weight, zone or drain */
    void (*update)(void *user, const char *addr, uint32_t weight, const char *zone, int drain);
    /* host no longer resolves to addr (one reference less) */
    void (*del)(void *user, const char *addr);
    /* optional: a name's first lookup ended (found or not): calls waiting for it may go on */
    void (*settled)(void *user);
};

/* One "host:port" and what it resolved to. Owner: its resolver (list). */
struct slb_dns_name {
    struct slb_list link;
    struct slb_resolver *res;
    char hostport[SLB_BACKEND_NAME_MAX];
    char host[SLB_HOST_NAME_MAX];
    uint16_t port;
    uint32_t refs; /* static entries / etcd keys naming it */
    uint32_t weight;
    char zone[32];
    uint8_t drain;                       /* the etcd value's "drain" (an operator's drain of every address) */
    char (*addrs)[SLB_BACKEND_NAME_MAX]; /* sorted, distinct */
    uint32_t n_addrs;
    uint8_t resolved;          /* resolved at least once */
    uint8_t answered;          /* its first lookup ended (or it started from a reload's addresses) */
    uint8_t failing;           /* the current failure streak was logged */
    struct dns_lookup *lookup; /* in flight, or NULL */
    uint64_t due_ms;           /* next lookup */
    uint64_t last_start_ms;    /* last lookup started (refresh_soon's rate limit) */
};

/* Owner: embedded in its cluster. */
struct slb_resolver {
    uv_loop_t *loop;
    struct slb_conn_ctx *io; /* counts the timer */
    uv_timer_t timer;        /* the next due lookup */
    struct slb_list names;   /* struct slb_dns_name */
    uint32_t n_names;
    uint32_t n_first_pending; /* names whose first lookup has not ended: calls wait for them (as for health) */
    uint32_t refresh_ms;
    const char *owner; /* the cluster's name, for logs */
    struct slb_resolver_sink sink;
    void *user;
    uint64_t lookups, failures; /* counters (tests, logs) */
};

#define SLB_RESOLVER_MAX_ADDRS   64   /* addresses taken from one name */
#define SLB_RESOLVER_SOON_MIN_MS 1000 /* refresh_soon: at most one lookup a second per name */

void slb_resolver_init(struct slb_resolver *res, uv_loop_t *loop, struct slb_conn_ctx *io, uint32_t refresh_ms,
                       const char *owner, const struct slb_resolver_sink *sink, void *user);
/* Cancels lookups, drops the names (no sink calls) and closes the timer. */
void slb_resolver_dispose(struct slb_resolver *res);
/* One more entry names hostport (weight, zone, drain: the latest entry's). 0 or SLB_ENOMEM/SLB_EADDR. */
int slb_resolver_add(struct slb_resolver *res, const char *hostport, uint32_t weight, const char *zone, int drain);
/* The entry naming hostport changed weight, zone or drain. */
void slb_resolver_update(struct slb_resolver *res, const char *hostport, uint32_t weight, const char *zone, int drain);
/* One entry less names hostport; with none left its addresses go. */
void slb_resolver_release(struct slb_resolver *res, const char *hostport);
/* A backend from host (addr "ip:port") failed to connect: look its name up again soon. */
void slb_resolver_refresh_soon(struct slb_resolver *res, const char *host, const char *addr);
/*
 * A reload: names of res that prev (the replaced server's resolver) had
 * resolved start from prev's addresses at once (added through the sink), so
 * the new server has those backends before its own lookups answer; the
 * lookups still run now and only their differences apply.
 */
void slb_resolver_seed(struct slb_resolver *res, const struct slb_resolver *prev);
/* A name that has never resolved (for a call's UNAVAILABLE message), or NULL. */
const char *slb_resolver_unresolved(const struct slb_resolver *res);

/* Pure, for tests: formats a resolved address as "ip:port" / "[v6]:port"; 0 or SLB_EADDR. */
int slb_resolver_format_addr(const struct sockaddr *sa, uint16_t port, char *out, size_t outlen);

struct addrinfo;
/* For tests: applies one lookup's answer (status 0 and ai, or a UV_EAI_* status) to n as a lookup would. */
void slb_resolver_apply(struct slb_dns_name *n, int status, const struct addrinfo *ai);
/* The name record of hostport, or NULL. */
struct slb_dns_name *slb_resolver_find(const struct slb_resolver *res, const char *hostport);

#endif
