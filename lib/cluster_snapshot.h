/*
 * A cluster snapshot: what the control loop's cluster knows of its backends
 * at one moment, immutable once taken, for the workers' replicas
 * ("workers" > 1, lib/worker.h). The control loop takes one after each loop
 * turn in which the cluster's set or usable versions moved, and each worker
 * applies it on its own loop: backends added and removed, weights, zones,
 * health, ejection, drain and slow-start ramps set, waiting calls woken when
 * one may have become usable. Connectivity (each worker's own connections)
 * is the replica's own.
 *
 * Ownership: reference counted (atomic); the taker holds one reference,
 * each worker mailbox holding it one more. Each entry holds a reference on
 * its backend's shared block, so a backend the control loop removed keeps
 * its block until no snapshot or replica names it.
 */
#ifndef SLB_CLUSTER_SNAPSHOT_H
#define SLB_CLUSTER_SNAPSHOT_H

#include <stdint.h>

#include "backend.h"

struct slb_cluster;

/* Owner: its snapshot. */
struct slb_snapshot_backend {
    char name[SLB_BACKEND_NAME_MAX];
    char zone[32];
    char host_name[256]; /* the host name it was resolved from; "" for IP literals */
    uint32_t weight;
    uint8_t health;  /* enum slb_backend_health */
    uint8_t drained; /* SLB_DRAIN_* bits */
    uint64_t ejected_until_ms, usable_since_ms;
    struct slb_backend_shared *shared; /* one reference */
};

struct slb_cluster_snapshot {
    uint32_t refs;
    uint32_t n;
    uint32_t first_pending;    /* host names whose first lookup has not ended */
    char unresolved_host[256]; /* one that does not resolve, "" when none */
    struct slb_snapshot_backend be[];
};

/* Whether cl (the control loop's) changed since its last snapshot. */
int slb_cluster_snapshot_due(const struct slb_cluster *cl);
/* Takes a snapshot of cl (the control loop's), with one reference; NULL: out of memory. */
struct slb_cluster_snapshot *slb_cluster_snapshot_take(struct slb_cluster *cl);
void slb_cluster_snapshot_ref(struct slb_cluster_snapshot *snap);
void slb_cluster_snapshot_unref(struct slb_cluster_snapshot *snap);
/* Makes replica (a worker's) list what snap lists. */
void slb_cluster_apply_snapshot(struct slb_cluster *replica, const struct slb_cluster_snapshot *snap);

#endif
