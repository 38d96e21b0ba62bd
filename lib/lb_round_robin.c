/*
 * round_robin: a cursor walks the set and every call takes the next usable
 * backend not yet tried by that call (gRPC round_robin, h2o roundrobin.c).
 * With n usable backends any n consecutive first attempts hit each exactly
 * once, so 300 calls over 3 equal backends land 100/100/100. The first pick
 * starts at a random index so that sidecars on many hosts do not all begin
 * with the same backend. O(1) per pick while most backends are usable; the
 * walk past unusable ones is bounded by the set size.
 *
 * Slow start: while a backend ramps (slb__lb_ramping), the cursor keeps
 * walking but a ramping backend keeps its turn only with probability
 * effective / full weight, else the turn passes to the next one. Every backend
 * is visited equally often, so picks are proportional to the ramp factors (a
 * backend at 10 % gets a tenth of a full share). Outside a ramp the pick is
 * the plain walk above, at the same cost.
 */
#include "lb.h"

#include <stdlib.h>

#include "common.h"

/* Owned by the slb_lb (lb->data). */
struct round_robin {
    uint32_t next;   /* set index to try first */
    uint8_t started; /* next was seeded from the first pick's random */
};

static int rr_init(struct slb_lb *lb)
{
    return (lb->data = calloc(1, sizeof(struct round_robin))) != NULL ? 0 : SLB_ENOMEM;
}

static int rr_update(struct slb_lb *lb)
{
    struct round_robin *rr = lb->data;
    if (rr->next >= lb->set->n)
        rr->next = 0;
    return 0;
}

/* The first pick starts at a random index, so sidecars on many hosts do not begin in step. */
static void rr_start(struct round_robin *rr, const struct slb_pick_ctx *ctx, uint32_t n)
{
    rr->next = (uint32_t)slb_rng_bounded(ctx->random, n);
    rr->started = 1;
}

/* pick_ramping: the walk, where a turn passed by a ramping backend goes on to the next. */
static struct slb_backend *rr_pick_ramping(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    struct round_robin *rr = lb->data;
    const struct slb_backend_set *set = lb->set;
    struct slb_backend *passed = NULL, *tried = NULL;
    struct slb_rng rng;
    uint32_t i, passed_next = 0;

    if (!rr->started)
        rr_start(rr, ctx, set->n);
    i = rr->next;
    slb_rng_seed(&rng, ctx->random);
    for (uint32_t k = 0; k < set->n; k++) {
        struct slb_backend *be = set->items[i];
        if (++i == set->n)
            i = 0;
        if (!slb__lb_usable(lb, be, ctx->now_ms))
            continue;
        if (slb_tried_has(ctx->tried, be)) {
            if (tried == NULL)
                tried = be;
            continue;
        }
        if (slb__lb_ramp_keep(lb, be, ctx->now_ms, slb_rng_next(&rng))) {
            rr->next = i;
            return be;
        }
        if (passed == NULL) {
            passed = be;
            passed_next = i;
        }
    }
    if (passed != NULL) { /* every candidate passed its turn (all ramping): the first one takes it */
        rr->next = passed_next;
        return passed;
    }
    return tried;
}

static struct slb_backend *rr_pick(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    struct round_robin *rr = lb->data;
    const struct slb_backend_set *set = lb->set;
    struct slb_backend *tried = NULL;
    uint32_t i;

    if (SLB_UNLIKELY(!rr->started))
        rr_start(rr, ctx, set->n);
    i = rr->next;
    for (uint32_t k = 0; k < set->n; k++) {
        struct slb_backend *be = set->items[i];
        if (++i == set->n)
            i = 0;
        if (!slb__lb_usable(lb, be, ctx->now_ms))
            continue;
        if (!slb_tried_has(ctx->tried, be)) {
            rr->next = i;
            return be;
        }
        if (tried == NULL)
            tried = be;
    }
    return tried;
}

static void rr_destroy(struct slb_lb *lb)
{
    free(lb->data);
}

const struct slb_lb_ops slb_lb_round_robin = {
    .name = "round_robin",
    .init = rr_init,
    .update = rr_update,
    .pick = rr_pick,
    .pick_ramping = rr_pick_ramping,
    .destroy = rr_destroy,
};
