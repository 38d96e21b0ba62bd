/*
 * weighted_round_robin: smooth weighted round robin in O(log n) per pick.
 *
 * nginx's ngx_http_upstream_get_peer() adds every peer's weight to its
 * current_weight and takes the largest on every pick: smooth (a 5:1:1 set
 * gives a a b a c a a, not a a a a a b c) but O(n). We keep the same goal
 * with earliest-deadline-first scheduling, as Envoy's EdfScheduler does: each
 * backend has a virtual deadline, a min-heap yields the earliest, and the
 * winner's deadline moves on by 1/weight. Deadlines start half a step in
 * (Webster/Sainte-Laguë apportionment), which interleaves like nginx: over
 * any run of picks each backend's count stays within one of its exact share,
 * and equal weights degrade to plain round robin. Steps use the slow-start
 * weight at pick time, so a warming backend is scheduled less often.
 *
 * Unusable or already-tried backends that reach the top lose their turn
 * (their deadline advances too), so they do not burst when they come back.
 * A pick pops about (usable share)^-1 entries: O(log n) amortized.
 */
#include "lb.h"

#include <stdlib.h>

#include "common.h"

/* 2^52 / (weight in 1/1024 units): a weight-1 step is 2^42, so deadlines
 * wrap only after ~2^21 picks of one backend; comparisons are wrap-safe. */
#define STEP_SCALE (1ULL << 52)

struct edf_entry {
    uint64_t deadline;
    uint32_t idx; /* set index */
};

/* Owned by the slb_lb (lb->data). */
struct wrr {
    struct edf_entry *heap;
    uint32_t n;
};

static inline int before(const struct edf_entry *a, const struct edf_entry *b)
{
    int64_t d = (int64_t)(a->deadline - b->deadline);
    return d < 0 || (d == 0 && a->idx < b->idx);
}

static void sift_down(struct edf_entry *h, uint32_t n, uint32_t i)
{
    struct edf_entry e = h[i];

    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(&h[c + 1], &h[c]))
            c++;
        if (!before(&h[c], &e))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

static inline uint64_t step(uint64_t weight_fp)
{
    return STEP_SCALE / weight_fp;
}

static int wrr_init(struct slb_lb *lb)
{
    return (lb->data = calloc(1, sizeof(struct wrr))) != NULL ? 0 : SLB_ENOMEM;
}

static int wrr_update(struct slb_lb *lb)
{
    struct wrr *w = lb->data;
    const struct slb_backend_set *set = lb->set;
    /* New deadlines start from the current virtual time, so nobody bursts. */
    uint64_t now = w->n > 0 ? w->heap[0].deadline : 0;
    struct edf_entry *heap = NULL;

    if (set->n > 0 && (heap = malloc(set->n * sizeof(*heap))) == NULL)
        return SLB_ENOMEM;
    for (uint32_t i = 0; i < set->n; i++) {
        heap[i].deadline = now + step((uint64_t)set->items[i]->weight << 10) / 2;
        heap[i].idx = i;
    }
    for (uint32_t i = set->n / 2; i-- > 0;)
        sift_down(heap, set->n, i);
    free(w->heap);
    w->heap = heap;
    w->n = set->n;
    return 0;
}

static struct slb_backend *wrr_pick(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    struct wrr *w = lb->data;
    struct slb_backend *tried = NULL;

    for (uint32_t k = 0; k < w->n; k++) {
        struct slb_backend *be = lb->set->items[w->heap[0].idx];
        int usable = slb__lb_usable(lb, be, ctx->now_ms);

        w->heap[0].deadline += step(slb__lb_weight_fp(lb, be, ctx->now_ms));
        sift_down(w->heap, w->n, 0);
        if (!usable)
            continue;
        if (!slb_tried_has(ctx->tried, be))
            return be;
        if (tried == NULL)
            tried = be;
    }
    return tried;
}

static void wrr_destroy(struct slb_lb *lb)
{
    struct wrr *w = lb->data;
    if (w != NULL)
        free(w->heap);
    free(w);
}

const struct slb_lb_ops slb_lb_weighted_round_robin = {
    .name = "weighted_round_robin",
    .init = wrr_init,
    .update = wrr_update,
    .pick = wrr_pick,
    .destroy = wrr_destroy,
};
