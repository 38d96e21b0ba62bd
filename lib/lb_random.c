/*
 * random: a uniformly random backend per call (Envoy's RANDOM). A pick that
 * lands on an unusable or already-tried backend draws again (a few times,
 * from a struct slb_rng seeded with ctx->random), then falls back to a scan from a random
 * start, so a pick is O(1) unless most backends are down. No state.
 *
 * Slow start: while a backend ramps (slb__lb_ramping), a draw that lands on a
 * ramping backend keeps it with probability effective / full weight (as
 * weighted_random does), so picks are proportional to the ramp factors.
 * Outside a ramp the draw is the plain one, at the same cost.
 */
#include "lb.h"

#include "common.h"

#define RANDOM_DRAWS  4
#define RAMPING_DRAWS 8 /* weighted_random's */

static int random_init(struct slb_lb *lb)
{
    return 0;
}

/* pick_ramping: more draws, as a ramping backend may be passed over. */
static struct slb_backend *random_pick_ramping(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    const struct slb_backend_set *set = lb->set;
    uint64_t r = ctx->random;
    struct slb_rng rng;

    slb_rng_seed(&rng, ctx->random);
    for (int d = 0; d < RAMPING_DRAWS; d++) {
        struct slb_backend *be = set->items[slb_rng_bounded(r, set->n)];
        r = slb_rng_next(&rng);
        if (slb__lb_usable(lb, be, ctx->now_ms) && !slb_tried_has(ctx->tried, be) &&
            slb__lb_ramp_keep(lb, be, ctx->now_ms, r))
            return be;
        r = slb_rng_next(&rng);
    }
    return slb__lb_scan(lb, ctx, (uint32_t)slb_rng_bounded(r, set->n));
}

static struct slb_backend *random_pick(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    const struct slb_backend_set *set = lb->set;
    struct slb_rng rng;
    uint64_t r = ctx->random;

    slb_rng_seed(&rng, ctx->random);
    for (int d = 0; d < RANDOM_DRAWS; d++) {
        struct slb_backend *be = set->items[slb_rng_bounded(r, set->n)];
        if (SLB_LIKELY(slb__lb_usable(lb, be, ctx->now_ms) && !slb_tried_has(ctx->tried, be)))
            return be;
        r = slb_rng_next(&rng);
    }
    return slb__lb_scan(lb, ctx, (uint32_t)slb_rng_bounded(r, set->n));
}

const struct slb_lb_ops slb_lb_random = {
    .name = "random",
    .init = random_init,
    .pick = random_pick,
    .pick_ramping = random_pick_ramping,
};
