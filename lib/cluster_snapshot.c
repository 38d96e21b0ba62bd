#include "cluster_snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "log.h"
#include "loop_ctx.h"

int slb_cluster_snapshot_due(const struct slb_cluster *cl)
{
    return !cl->pub_done || cl->set.version != cl->pub_version || cl->set.usable_version != cl->pub_usable_version ||
           cl->resolver.n_first_pending != cl->pub_first_pending;
}

struct slb_cluster_snapshot *slb_cluster_snapshot_take(struct slb_cluster *cl)
{
    struct slb_cluster_snapshot *snap = malloc(sizeof(*snap) + cl->set.n * sizeof(snap->be[0]));
    const char *unresolved = slb_resolver_unresolved(&cl->resolver);

    if (snap == NULL)
        return NULL;
    snap->refs = 1;
    snap->n = cl->set.n;
    snap->first_pending = cl->resolver.n_first_pending;
    snprintf(snap->unresolved_host, sizeof(snap->unresolved_host), "%s", unresolved != NULL ? unresolved : "");
    for (uint32_t i = 0; i < cl->set.n; i++) {
        const struct slb_backend *be = cl->set.items[i];
        struct slb_snapshot_backend *e = &snap->be[i];
        memcpy(e->name, be->name, sizeof(e->name));
        memcpy(e->zone, be->zone, sizeof(e->zone));
        snprintf(e->host_name, sizeof(e->host_name), "%s", be->host_name != NULL ? be->host_name : "");
        e->weight = be->weight;
        e->health = be->health;
        e->drained = be->drained;
        e->ejected_until_ms = be->ejected_until_ms;
        e->usable_since_ms = be->usable_since_ms;
        e->shared = be->shared;
        if (e->shared != NULL)
            slb_backend_shared_ref(e->shared);
    }
    cl->pub_done = 1;
    cl->pub_version = cl->set.version;
    cl->pub_usable_version = cl->set.usable_version;
    cl->pub_first_pending = cl->resolver.n_first_pending;
    return snap;
}

void slb_cluster_snapshot_ref(struct slb_cluster_snapshot *snap)
{
    __atomic_add_fetch(&snap->refs, 1, __ATOMIC_RELAXED);
}

void slb_cluster_snapshot_unref(struct slb_cluster_snapshot *snap)
{
    if (snap == NULL || __atomic_sub_fetch(&snap->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (uint32_t i = 0; i < snap->n; i++)
        if (snap->be[i].shared != NULL)
            slb_backend_shared_unref(snap->be[i].shared);
    free(snap);
}

static int usable_health(int h)
{
    return h == SLB_HEALTH_UNKNOWN || h == SLB_HEALTH_SERVING || h == SLB_HEALTH_UNIMPLEMENTED;
}

/* One entry onto the replica's backend; 1 when it may have become usable (wake the waiters). */
static int apply_backend(struct slb_cluster *cl, struct slb_backend *be, const struct slb_snapshot_backend *e,
                         uint64_t now)
{
    int wake = 0;

    if (be->shared != e->shared) { /* new here, or the control loop listed it anew */
        if (be->share_load)        /* this worker's calls in flight move to the new block, or both would be wrong */
            __atomic_sub_fetch(&be->shared->outstanding, be->outstanding, __ATOMIC_RELAXED);
        if (be->shared != NULL)
            slb_backend_shared_unref(be->shared);
        be->shared = e->shared;
        if (be->shared != NULL)
            slb_backend_shared_ref(be->shared);
        be->share_load = be->shared != NULL && cl->lb.ops != NULL && strcmp(cl->lb.ops->name, "least_request") == 0;
        if (be->share_load)
            __atomic_add_fetch(&be->shared->outstanding, be->outstanding, __ATOMIC_RELAXED);
    }
    if (be->health != e->health) {
        int old = be->health;
        if (old == SLB_HEALTH_PENDING)
            cl->n_health_pending--;
        if (e->health == SLB_HEALTH_PENDING)
            cl->n_health_pending++;
        be->health = e->health;
        /* usable now, or the last first answer came (calls waiting only for it fail now) */
        wake |= usable_health(e->health) || (old == SLB_HEALTH_PENDING && cl->n_health_pending == 0);
        cl->set.usable_version++;
    }
    if (be->drained != e->drained) {
        wake |= e->drained == 0;
        be->drained = e->drained;
        cl->set.usable_version++;
    }
    if (be->ejected_until_ms != e->ejected_until_ms) {
        wake |= e->ejected_until_ms <= now;
        be->ejected_until_ms = e->ejected_until_ms;
        cl->set.usable_version++;
    }
    if (be->usable_since_ms != e->usable_since_ms) {
        be->usable_since_ms = e->usable_since_ms; /* slow start ramps as on the control loop */
        cl->set.usable_version++;
    }
    return wake;
}

void slb_cluster_apply_snapshot(struct slb_cluster *cl, const struct slb_cluster_snapshot *snap)
{
    uint64_t gen = ++cl->snap_gen, now = uv_now(cl->ctx->loop);
    int wake = 0;

    for (uint32_t i = 0; i < snap->n; i++) {
        const struct slb_snapshot_backend *e = &snap->be[i];
        struct slb_backend *be = slb_cluster_find(cl, e->name);
        if (be == NULL) {
            if (slb__cluster_upsert_named(cl, e->name, e->weight, e->zone, e->host_name[0] ? e->host_name : NULL) !=
                    0 ||
                (be = slb_cluster_find(cl, e->name)) == NULL) {
                slb_warn("cluster %s: backend %s: cannot be added on a worker (out of memory)", cl->cfg->name, e->name);
                continue;
            }
            wake = 1;
        } else {
            slb_cluster_upsert(cl, e->name, e->weight, e->zone);
        }
        wake |= apply_backend(cl, be, e, now);
        be->snap_gen = gen;
    }
    for (uint32_t i = cl->set.n; i-- > 0;) /* removal moves the last item into slot i: walk down */
        if (cl->set.items[i]->snap_gen != gen)
            slb_cluster_remove(cl, cl->set.items[i]->name);
    if (cl->snap_first_pending > 0 && snap->first_pending == 0)
        wake = 1; /* calls that waited for the first lookups go on, or fail now */
    cl->snap_first_pending = snap->first_pending;
    memcpy(cl->snap_unresolved, snap->unresolved_host, sizeof(cl->snap_unresolved));
    if (wake)
        slb__cluster_wake(cl);
}
