/*
 * pick_first: every call goes to one backend until it stops being usable,
 * then to the next usable one in set order, which becomes the new choice
 * (gRPC's pick_first sticks to the first subchannel that connects). The
 * cursor makes a pick O(1) while the chosen backend stays usable; a failover
 * scans forward once. A retry goes to the next usable backend not yet tried.
 */
#include "lb.h"

#include <stdlib.h>

#include "common.h"

/* Owned by the slb_lb (lb->data). */
struct pick_first {
    uint32_t cur; /* set index of the current choice */
};

static int pf_init(struct slb_lb *lb)
{
    return (lb->data = calloc(1, sizeof(struct pick_first))) != NULL ? 0 : SLB_ENOMEM;
}

static int pf_update(struct slb_lb *lb)
{
    struct pick_first *pf = lb->data;
    if (pf->cur >= lb->set->n)
        pf->cur = 0;
    return 0;
}

static struct slb_backend *pf_pick(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    struct pick_first *pf = lb->data;
    struct slb_backend *be = lb->set->items[pf->cur];

    if (SLB_LIKELY(slb__lb_usable(lb, be, ctx->now_ms) && !slb_tried_has(ctx->tried, be)))
        return be;
    if ((be = slb__lb_scan(lb, ctx, pf->cur)) != NULL && !slb_tried_has(ctx->tried, be))
        pf->cur = be->index; /* a retry does not move the sticky choice */
    return be;
}

static void pf_destroy(struct slb_lb *lb)
{
    free(lb->data);
}

const struct slb_lb_ops slb_lb_pick_first = {
    .name = "pick_first",
    .init = pf_init,
    .update = pf_update,
    .pick = pf_pick,
    .destroy = pf_destroy,
};
