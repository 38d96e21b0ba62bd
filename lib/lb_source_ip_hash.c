/*
 * source_ip_hash: the downstream peer's address picks the backend, so one
 * application instance keeps talking to one backend (nginx ip_hash, with
 * weights). ctx->hash is the hashed peer address by default; "hash_on" may
 * make it the address and port (one key per app connection: on a sidecar
 * every local app shares the address 127.0.0.1) or a header (the call's key
 * is chosen by slb_lb_hash_key(), lib/lb.c). The key is mapped onto the
 * weight line [0, total) by multiply-shift and the owning backend is found
 * by binary search over prefix sums: O(log n). Backends are laid out sorted
 * by name, so every sidecar maps a given client to the same backend whatever
 * order discovery listed them in. Like nginx, an unusable or tried backend
 * makes the key be rehashed (up to 20 times), then a scan decides. This is
 * modulo-style hashing: a membership change remaps a share of clients; use
 * ring_hash or maglev when that matters. No key -> a weighted random pick.
 */
#include "lb.h"

#include <stdlib.h>

#include "common.h"

#define REHASHES 20

/* Owned by the slb_lb (lb->data). */
struct ip_hash {
    struct slb_backend **sorted; /* the set sorted by name; the set holds the references */
    uint64_t *cum;               /* prefix sums of weights in that order */
    uint64_t total;
};

static int iph_init(struct slb_lb *lb)
{
    return (lb->data = calloc(1, sizeof(struct ip_hash))) != NULL ? 0 : SLB_ENOMEM;
}

static int iph_update(struct slb_lb *lb)
{
    struct ip_hash *h = lb->data;
    const struct slb_backend_set *set = lb->set;
    struct slb_backend **sorted = NULL;
    uint64_t *cum = NULL, total = 0;

    if (set->n > 0) {
        sorted = malloc(set->n * sizeof(*sorted));
        cum = malloc(set->n * sizeof(*cum));
        if (sorted == NULL || cum == NULL) {
            free(sorted);
            free(cum);
            return SLB_ENOMEM;
        }
        for (uint32_t i = 0; i < set->n; i++)
            sorted[i] = set->items[i];
        qsort(sorted, set->n, sizeof(*sorted), slb__lb_cmp_name);
        for (uint32_t i = 0; i < set->n; i++)
            cum[i] = total += sorted[i]->weight;
    }
    free(h->sorted);
    free(h->cum);
    h->sorted = sorted;
    h->cum = cum;
    h->total = total;
    return 0;
}

static struct slb_backend *iph_pick(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    struct ip_hash *h = lb->data;
    uint32_t n = lb->set->n;
    uint64_t key = ctx->has_hash ? ctx->hash : ctx->random;
    struct slb_rng rng;

    slb_rng_seed(&rng, key);

    for (int t = 0; t <= REHASHES; t++) {
        uint64_t x = (uint64_t)(((unsigned __int128)key * h->total) >> 64);
        uint32_t lo = 0, hi = n - 1;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (h->cum[mid] > x)
                hi = mid;
            else
                lo = mid + 1;
        }
        struct slb_backend *be = h->sorted[lo];
        if (SLB_LIKELY(slb__lb_usable(lb, be, ctx->now_ms) && !slb_tried_has(ctx->tried, be)))
            return be;
        key = slb_rng_next(&rng);
    }
    return slb__lb_scan(lb, ctx, (uint32_t)slb_rng_bounded(key, n));
}

static void iph_destroy(struct slb_lb *lb)
{
    struct ip_hash *h = lb->data;
    if (h != NULL) {
        free(h->sorted);
        free(h->cum);
    }
    free(h);
}

const struct slb_lb_ops slb_lb_source_ip_hash = {
    .name = "source_ip_hash",
    .init = iph_init,
    .update = iph_update,
    .pick = iph_pick,
    .destroy = iph_destroy,
    .uses_hash = 1,
};
