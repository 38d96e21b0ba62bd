/*
 * Discovery of one cluster: turns an etcd prefix into backend-table changes.
 * Keeps a map key -> endpoint (hash table; an event costs O(1)), follows the
 * prefix with an etcd watch, and reports only differences through a sink: a
 * re-list (startup, compaction) is reconciled against the map, so a backend
 * present before and after is neither removed nor re-added. Malformed values
 * are skipped with a warning naming the key (an existing entry for that key
 * is kept); while etcd is unreachable the table stays as it was.
 *
 * Ownership: struct slb_discovery belongs to its cluster; the etcd client is
 * shared and must outlive it. Sink callbacks may not free the discovery.
 */
#ifndef SLB_DISCOVERY_H
#define SLB_DISCOVERY_H

#include <stddef.h>

#include "etcd.h"
#include "etcd_value.h"
#include "state_file.h"

struct slb_discovery;

struct slb_discovery_sink {
    /* added (old NULL) or changed (old = the previous endpoint of this key) */
    void (*upsert)(void *user, const char *key, const struct slb_etcd_endpoint *ep,
                   const struct slb_etcd_endpoint *old);
    void (*remove)(void *user, const char *key, const struct slb_etcd_endpoint *ep);
    void (*state)(void *user, int connected); /* optional: etcd reachable or not */
    /* optional: a listing (the first, or after a compaction) was applied; the map is what etcd holds */
    void (*listed)(void *user, int64_t revision);
};

/* Starts watching prefix; sink calls begin on a later loop turn. 0, SLB_ENOMEM or UV_E*. */
int slb_discovery_new(struct slb_etcd *etcd, const char *prefix, const struct slb_discovery_sink *sink, void *user,
                      struct slb_discovery **out);
/* Stops the watch (no sink call afterwards) and frees the map. */
void slb_discovery_free(struct slb_discovery *d);
/* Entries in the map. */
size_t slb_discovery_size(const struct slb_discovery *d);
/* The endpoint of key, or NULL. */
const struct slb_etcd_endpoint *slb_discovery_get(const struct slb_discovery *d, const char *key);
/* Whether the first listing has been applied. */
int slb_discovery_synced(const struct slb_discovery *d);
/* The etcd revision up to which the watch delivered everything (0 when detached). */
int64_t slb_discovery_revision(const struct slb_discovery *d);

/* Seeds the map with a table etcd gave earlier (a state file, a reload's
 * previous server), through the sink as upserts; the next listing reconciles
 * it like any other: keys etcd no longer has are removed. */
void slb_discovery_preload(struct slb_discovery *d, const struct slb_state_table *t);
/* A deep copy of the map (prefix, entries, and the revision of the last listing or event
 * applied, detached discoveries included; written_unix_ms 0). 0 or SLB_ENOMEM. */
int slb_discovery_snapshot(const struct slb_discovery *d, struct slb_state_table *out);

/* For tests and the benchmark: apply a snapshot / events as the watch would. */
void slb_discovery_apply_reset(struct slb_discovery *d, const struct slb_etcd_range_result *snap);
void slb_discovery_apply_events(struct slb_discovery *d, const struct slb_etcd_event *ev, size_t n);
/* A discovery with no watch (for the above). */
int slb_discovery_new_detached(const char *prefix, const struct slb_discovery_sink *sink, void *user,
                               struct slb_discovery **out);

#endif
