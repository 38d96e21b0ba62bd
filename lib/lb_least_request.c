/*
 * least_request: the power of d choices (Mitzenmacher; Envoy LEAST_REQUEST).
 * A pick samples choice_count backends (default 2; the first uniformly, the
 * others among the remaining ones, so with two choices they always differ)
 * and keeps the one with the fewest calls in flight per unit of weight. As
 * in nginx least_conn the comparison multiplies instead of dividing:
 * a beats b when (a.outstanding + 1) * w_b < (b.outstanding + 1) * w_a; the
 * +1 makes a heavier idle backend win over a lighter idle one (Envoy's
 * active_request_bias 1). Weights are slow-start weights, in 1/1024 units.
 * O(choice_count) per pick; choice_count 0 (or >= n) scans all backends.
 */
#include "lb.h"

#include "common.h"

#define ROUNDS 4

static int lr_init(struct slb_lb *lb)
{
    return 0;
}

static inline int better(const struct slb_lb *lb, const struct slb_backend *a, const struct slb_backend *b,
                         uint64_t now_ms)
{
    unsigned __int128 la = (unsigned __int128)(slb_backend_load(a) + 1ULL) * slb__lb_weight_fp(lb, b, now_ms);
    unsigned __int128 lb_ = (unsigned __int128)(slb_backend_load(b) + 1ULL) * slb__lb_weight_fp(lb, a, now_ms);
    return la < lb_;
}

static inline int candidate(const struct slb_lb *lb, const struct slb_pick_ctx *ctx, const struct slb_backend *be)
{
    return slb__lb_usable(lb, be, ctx->now_ms) && !slb_tried_has(ctx->tried, be);
}

static struct slb_backend *lr_pick(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    const struct slb_backend_set *set = lb->set;
    uint32_t n = set->n, c = lb->opts->choice_count;
    uint64_t r = ctx->random;
    struct slb_rng rng;
    struct slb_backend *best = NULL;

    if (c == 0 || c >= n) {
        for (uint32_t i = 0; i < n; i++) {
            struct slb_backend *be = set->items[i];
            if (candidate(lb, ctx, be) && (best == NULL || better(lb, be, best, ctx->now_ms)))
                best = be;
        }
        return best != NULL ? best : slb__lb_scan(lb, ctx, 0);
    }
    slb_rng_seed(&rng, ctx->random);
    for (int round = 0; round < ROUNDS; round++) {
        uint32_t first = (uint32_t)slb_rng_bounded(r, n);
        for (uint32_t k = 0; k < c; k++) {
            uint32_t i = first;
            if (k > 0) {
                i += 1 + (uint32_t)slb_rng_bounded(slb_rng_next(&rng), n - 1);
                if (i >= n)
                    i -= n;
            }
            struct slb_backend *be = set->items[i];
            if (candidate(lb, ctx, be) && (best == NULL || better(lb, be, best, ctx->now_ms)))
                best = be;
        }
        if (SLB_LIKELY(best != NULL))
            return best;
        r = slb_rng_next(&rng);
    }
    return slb__lb_scan(lb, ctx, (uint32_t)slb_rng_bounded(r, n));
}

const struct slb_lb_ops slb_lb_least_request = {
    .name = "least_request",
    .init = lr_init,
    .pick = lr_pick,
};
