/*
 * Per-method call counters of one cluster, off unless "metrics":
 * {"max_methods": N} is set: calls per gRPC method and code and their
 * latency, for at most N distinct methods; the calls of any method seen
 * after the first N count under method="other", so the label set stays
 * bounded whatever the apps send. A method is looked up once per call, when
 * it is routed (one hash of the path into a fixed table); its name is copied
 * once, the first time it is seen.
 */
#ifndef SLB_METHOD_STATS_H
#define SLB_METHOD_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "stats.h"

/* Owner: its struct slb_method_stats. */
struct slb_method_stat {
    char *name; /* the :path, "/pkg.Service/Method"; NULL for "other" */
    uint64_t calls[SLB_STATS_GRPC_CODES];
    struct slb_stats_hist duration;
};

/* Owner: the cluster (embedded); cap 0 = off. */
struct slb_method_stats {
    uint32_t cap, n;               /* at most cap named methods; n of them seen */
    struct slb_method_stat *items; /* cap + 1: items[cap] is "other" */
    uint32_t *slots;               /* open addressing: item index + 1, 0 = empty */
    uint64_t *hashes;              /* the hash of each slot's method */
    uint32_t nslots;               /* a power of two >= 2 * cap */
};

/* 0 or SLB_ENOMEM; cap 0 leaves it off (nothing allocated). */
int slb_method_stats_init(struct slb_method_stats *ms, uint32_t cap);
void slb_method_stats_dispose(struct slb_method_stats *ms);
/* The item a call of method path counts in (1-based; 0 when off). */
uint32_t slb_method_stats_slot(struct slb_method_stats *ms, const uint8_t *path, size_t len);

#endif
