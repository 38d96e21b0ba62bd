/*
 * weighted_random: a backend drawn with probability weight / total weight
 * (Envoy's RANDOM with weights). update() builds the prefix sums of the
 * weights; a pick maps a 64-bit random to [0, total) by multiply-shift and
 * binary-searches the sums: O(log n), no allocation. Slow start is applied
 * by rejection: a warming backend is kept with probability effective/full
 * weight, which makes the draw exactly proportional to effective weights
 * without rebuilding the sums as time passes. Unusable or tried draws are
 * redrawn a few times, then a scan from a random start decides.
 */
#include "lb.h"

#include <stdlib.h>

#include "common.h"

#define DRAWS 8

/* Owned by the slb_lb (lb->data). */
struct wrand {
    uint64_t *cum; /* cum[i] = weights of set items 0..i */
    uint64_t total;
};

static int wrand_init(struct slb_lb *lb)
{
    return (lb->data = calloc(1, sizeof(struct wrand))) != NULL ? 0 : SLB_ENOMEM;
}

static int wrand_update(struct slb_lb *lb)
{
    struct wrand *w = lb->data;
    const struct slb_backend_set *set = lb->set;
    uint64_t *cum = NULL, total = 0;

    if (set->n > 0 && (cum = malloc(set->n * sizeof(*cum))) == NULL)
        return SLB_ENOMEM;
    for (uint32_t i = 0; i < set->n; i++)
        cum[i] = total += set->items[i]->weight;
    free(w->cum);
    w->cum = cum;
    w->total = total;
    return 0;
}

/* First i with cum[i] > x. */
static uint32_t upper_bound(const uint64_t *cum, uint32_t n, uint64_t x)
{
    uint32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cum[mid] > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static struct slb_backend *wrand_pick(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    struct wrand *w = lb->data;
    const struct slb_backend_set *set = lb->set;
    uint64_t r = ctx->random;
    struct slb_rng rng;

    slb_rng_seed(&rng, ctx->random);
    for (int d = 0; d < DRAWS; d++) {
        uint64_t x = (uint64_t)(((unsigned __int128)r * w->total) >> 64);
        struct slb_backend *be = set->items[upper_bound(w->cum, set->n, x)];

        r = slb_rng_next(&rng);
        if (!slb__lb_usable(lb, be, ctx->now_ms) || slb_tried_has(ctx->tried, be))
            continue;
        uint64_t full = (uint64_t)be->weight << 10, eff = slb__lb_weight_fp(lb, be, ctx->now_ms);
        if (SLB_LIKELY(eff >= full) || (uint64_t)(((unsigned __int128)r * full) >> 64) < eff)
            return be;
        r = slb_rng_next(&rng);
    }
    return slb__lb_scan(lb, ctx, (uint32_t)slb_rng_bounded(r, set->n));
}

static void wrand_destroy(struct slb_lb *lb)
{
    struct wrand *w = lb->data;
    if (w != NULL)
        free(w->cum);
    free(w);
}

const struct slb_lb_ops slb_lb_weighted_random = {
    .name = "weighted_random",
    .init = wrand_init,
    .update = wrand_update,
    .pick = wrand_pick,
    .destroy = wrand_destroy,
};
