/*
 * A cluster: a named set of backends with its policy. Discovery (static
 * list or etcd) adds, updates and removes backends; the router picks one per
 * call attempt.
 *
 * Ownership: clusters are owned by the server (array, same order as the
 * config); each holds one reference on every listed backend through its set.
 */
#ifndef SLB_CLUSTER_H
#define SLB_CLUSTER_H

#include <stdint.h>

#include <uv.h>

#include "backend.h"
#include "lb.h"
#include "outlier.h"
#include "method_config.h"

struct slb_server;
struct slb_config_cluster;
struct slb_call;
struct slb_etcd;
struct slb_discovery;

struct slb_cluster {
    struct slb_server *srv;
    const struct slb_config_cluster *cfg;
    struct slb_backend_set set;
    struct slb_lb lb;
    struct slb_discovery *discovery; /* when fed by etcd */
    struct slb_method_table methods; /* from cfg->service_config_json */
    uint32_t n_calls;                /* calls routed here and not finished (max_calls) */
    uv_timer_t outlier_timer;
    uint8_t has_outlier_timer;
    uint32_t n_by_state[SLB_BACKEND_SHUTDOWN + 1]; /* listed backends per connectivity state */
    uint8_t state; /* aggregate (gRPC): READY if any is, else CONNECTING, else IDLE, else TRANSIENT_FAILURE */
    struct slb_call *wait_head, *wait_tail; /* calls waiting for a usable backend */
    uint32_t n_waiting;
    uv_timer_t wait_timer;
    struct slb_backend **_index; /* address -> backend (chained through be->_hash_next) */
    uint32_t _index_size;
};

int slb_cluster_init(struct slb_cluster *cl, struct slb_server *srv, const struct slb_config_cluster *cfg);
void slb_cluster_dispose(struct slb_cluster *cl);
/* Adds a backend or updates its weight/zone. 0 or SLB_EADDR/SLB_ENOMEM. */
int slb_cluster_upsert(struct slb_cluster *cl, const char *addr, uint32_t weight, const char *zone);
/* The backend listed under addr, or NULL. O(1). */
struct slb_backend *slb_cluster_find(struct slb_cluster *cl, const char *addr);
/* Starts following cfg->etcd_prefix (no-op for static clusters). 0 or < 0. */
int slb_cluster_start_discovery(struct slb_cluster *cl, struct slb_etcd *etcd);
/* The outcome of one call attempt on be, for passive outlier detection. */
void slb_cluster_report(struct slb_cluster *cl, struct slb_backend *be, int success);
/* wait-for-ready: the call waits (linked through u_next/u_prev) until a
 * backend is usable or its wait_until_ms passes; retried every few ms. */
/* 0, or SLB_ELIMIT when max_waiting_calls wait already (retry backoffs are never refused). */
int slb_cluster_wait(struct slb_cluster *cl, struct slb_call *call);
void slb_cluster_unwait(struct slb_cluster *cl, struct slb_call *call);
/* Removes a backend: no new calls, in-flight calls finish (draining). */
void slb_cluster_remove(struct slb_cluster *cl, const char *addr);
/* Picks a backend for the call's next attempt, honouring its tried set. */
struct slb_backend *slb_cluster_pick(struct slb_cluster *cl, const struct slb_call *call);

#endif
