#include "cluster.h"

#include <stdio.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "h2_upstream.h"
#include "log.h"
#include "proxy.h"
#include "server.h"

int slb_cluster_init(struct slb_cluster *cl, struct slb_server *srv, const struct slb_config_cluster *cfg)
{
    int rv;

    memset(cl, 0, sizeof(*cl));
    cl->srv = srv;
    cl->cfg = cfg;
    slb_backend_set_init(&cl->set);
    if ((rv = slb_lb_init(&cl->lb, cfg->policy, &cfg->lb, &cl->set)) != 0)
        return rv;
    for (size_t i = 0; i < cfg->n_static; i++) {
        const struct slb_config_static_backend *sb = &cfg->static_backends[i];
        if ((rv = slb_cluster_upsert(cl, sb->address, sb->weight, sb->zone)) != 0)
            return rv;
    }
    return 0;
}

void slb_cluster_dispose(struct slb_cluster *cl)
{
    while (cl->set.n > 0)
        slb_cluster_remove(cl, cl->set.items[cl->set.n - 1]->name);
    slb_lb_dispose(&cl->lb);
    slb_backend_set_dispose(&cl->set);
}

int slb_cluster_upsert(struct slb_cluster *cl, const char *addr, uint32_t weight, const char *zone)
{
    struct slb_backend *be = slb_backend_set_find(&cl->set, addr);
    int rv;

    if (weight == 0)
        weight = 1;
    if (be != NULL) {
        if (be->weight != weight) {
            be->weight = weight;
            cl->set.version++; /* weighted policies rebuild */
        }
        if (zone != NULL)
            snprintf(be->zone, sizeof(be->zone), "%s", zone);
        return 0;
    }
    if ((be = slb_backend_new(addr, weight)) == NULL) {
        slb_warn("cluster %s: invalid backend address \"%s\"", cl->cfg->name, addr);
        return SLB_EADDR;
    }
    if (zone != NULL)
        snprintf(be->zone, sizeof(be->zone), "%s", zone);
    be->cluster = cl;
    be->usable_since_ms = uv_now(cl->srv->loop);
    rv = slb_backend_set_add(&cl->set, be);
    slb_backend_unref(be); /* the set holds it now */
    if (rv != 0)
        return rv;
    slb_notice("cluster %s: backend %s added (weight %u)", cl->cfg->name, addr, weight);
    return 0;
}

void slb_cluster_remove(struct slb_cluster *cl, const char *addr)
{
    struct slb_backend *be = slb_backend_set_find(&cl->set, addr);

    if (be == NULL)
        return;
    slb_notice("cluster %s: backend %s removed (%u calls in flight finish there)", cl->cfg->name, addr,
               be->outstanding);
    slb_backend_ref(be);
    be->draining = 1;
    slb_backend_set_remove(&cl->set, be);
    if (be->pool != NULL)
        slb_upstream_pool_drain(be->pool);
    slb_backend_unref(be);
}

struct slb_backend *slb_cluster_pick(struct slb_cluster *cl, const struct slb_call *call)
{
    struct slb_pick_ctx ctx = {
        .now_ms = uv_now(cl->srv->loop),
        .random = slb_server_random(cl->srv),
        .hash = call->hash,
        .has_hash = call->hash != 0,
        .tried = &call->tried,
    };
    return slb_lb_pick(&cl->lb, &ctx);
}
