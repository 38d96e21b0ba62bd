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

#include "backend.h"
#include "lb.h"

struct slb_server;
struct slb_config_cluster;
struct slb_call;

struct slb_cluster {
    struct slb_server *srv;
    const struct slb_config_cluster *cfg;
    struct slb_backend_set set;
    struct slb_lb lb;
    void *discovery; /* struct slb_discovery * when fed by etcd */
};

int slb_cluster_init(struct slb_cluster *cl, struct slb_server *srv, const struct slb_config_cluster *cfg);
void slb_cluster_dispose(struct slb_cluster *cl);
/* Adds a backend or updates its weight/zone. 0 or SLB_EADDR/SLB_ENOMEM. */
int slb_cluster_upsert(struct slb_cluster *cl, const char *addr, uint32_t weight, const char *zone);
/* Removes a backend: no new calls, in-flight calls finish (draining). */
void slb_cluster_remove(struct slb_cluster *cl, const char *addr);
/* Picks a backend for the call's next attempt, honouring its tried set. */
struct slb_backend *slb_cluster_pick(struct slb_cluster *cl, const struct slb_call *call);

#endif
