/*
 * Lease-based registration of the host's own services in etcd.
 *
 * Each register[] entry (struct slb_config_register) becomes one independent
 * registration: key = prefix + address, value = slb_etcd_value_format() of
 * the entry (plain / etcd naming / json), attached to a lease of ttl_s. The
 * JSON formats carry registered_at_ms, the wall-clock time the registration
 * started: the same across lease renewals, re-grants and repairs, new after
 * the local service was unhealthy (discovering hosts ramp it from then).
 *
 *   IDLE --(healthy or no health check)--> GRANTING --> PUTTING --> REGISTERED
 *   REGISTERED: every TTL/3 a keepalive, then a range of the key; a key that
 *     is missing, overwritten or bound to another lease is put again.
 *   keepalive says the lease is gone (etcd restarted, expired in a
 *     partition) -> GRANTING at once; any other failure -> RETRYING, a
 *     backoff (200 ms doubling, at most TTL/3, jitter) -> GRANTING.
 *   health gate (entry has health_check): the local service (health_address)
 *     is watched with grpc.health.v1; anything but SERVING -> REVOKING the
 *     lease (the key vanishes at once) -> UNHEALTHY; SERVING -> GRANTING.
 *   shutdown -> REVOKING -> STOPPED.
 *
 * One etcd request per registration is in flight at a time. Every state
 * change is logged once (old -> new); repeated failures of the same kind
 * while etcd is down are logged at DEBUG only.
 *
 * Ownership: the daemon owns struct slb_registrar (one per loop); it owns
 * its registrations, their timers and health checks. The etcd client and
 * the connection context belong to the daemon and must outlive the
 * registrar (free the registrar first; the registrar's memory goes once
 * its timers are closed and its outstanding etcd answers have come back).
 */
#ifndef SLB_REGISTER_H
#define SLB_REGISTER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "etcd.h"
#include "h2_conn.h"

/* Upper bound of slb_registrar_shutdown() (the callback fires by then even if etcd hangs). */
#define SLB_REGISTRAR_SHUTDOWN_MS 1500
#define SLB_REGISTRAR_BACKOFF_MS  200

enum slb_registrar_state {
    SLB_REGISTRAR_IDLE = 0,   /* waiting for the first health status */
    SLB_REGISTRAR_GRANTING,   /* lease grant in flight */
    SLB_REGISTRAR_PUTTING,    /* put of the key with the lease in flight */
    SLB_REGISTRAR_REGISTERED, /* key present; keepalive + key check every TTL/3 */
    SLB_REGISTRAR_UNHEALTHY,  /* local service not SERVING: no lease, no key */
    SLB_REGISTRAR_RETRYING,   /* etcd failed: waiting for the backoff timer */
    SLB_REGISTRAR_REVOKING,   /* lease revoke in flight */
    SLB_REGISTRAR_STOPPED,    /* after shutdown */
};

struct slb_registrar;

/*
 * Starts every registration at once (the first etcd requests are sent
 * before this returns; answers arrive from the loop). regs is copied.
 * io: the loop's connection context, used by the health checks (may be
 * NULL when no entry has a health_check). NULL on no memory or an entry
 * whose value cannot be formatted (bad metadata).
 */
struct slb_registrar *slb_registrar_new(uv_loop_t *loop, struct slb_etcd *etcd, struct slb_conn_ctx *io,
                                        const struct slb_config_register *regs, size_t n);

/*
 * Stops the health checks, revokes every lease (keys vanish at once), then
 * calls cb(user) from the loop, never before this returns. Bounded: cb fires
 * within SLB_REGISTRAR_SHUTDOWN_MS even if etcd does not answer (leases not
 * revoked by then expire by their TTL). Call once.
 */
void slb_registrar_shutdown(struct slb_registrar *r, void (*cb)(void *user), void *user);

/*
 * A reload: registrations of r whose key old registers too, and has up now,
 * keep old's registration time (registered_at_ms in the value), so a reload
 * does not make every host ramp the backend again. Call right after
 * slb_registrar_new(), before the loop runs (the first put follows a lease
 * grant's answer).
 */
void slb_registrar_inherit(struct slb_registrar *r, const struct slb_registrar *old);

/*
 * Frees the registrar (usually after shutdown's cb; without a shutdown the
 * keys stay until their TTL runs out). No callback fires after this. Safe
 * from any callback of the loop, including shutdown's cb.
 */
/*
 * Before a shutdown for a config reload: registrations whose key the new
 * config registers too are not revoked (the new registrar re-puts the key
 * under its own lease and the old lease expires), so the key never vanishes.
 */
void slb_registrar_hand_over(struct slb_registrar *r, const struct slb_config_register *regs, size_t n);
void slb_registrar_free(struct slb_registrar *r);

/* Number of registrations and the state of registration i (enum slb_registrar_state). */
size_t slb_registrar_count(const struct slb_registrar *r);
int slb_registrar_state(const struct slb_registrar *r, size_t i);
/* Current lease of registration i, 0 when none. */
int64_t slb_registrar_lease(const struct slb_registrar *r, size_t i);
/* "IDLE", "GRANTING", ... */
const char *slb_registrar_state_name(int state);

#endif
