/*
 * ring_hash: consistent hashing on a ketama-style ring (Karger et al. 1997;
 * nginx ngx_http_upstream_update_chash(); sizing from gRPC's gRFC A42 and
 * Envoy's RING_HASH).
 *
 * Each backend owns points on a 64-bit ring, a pseudo-random sequence
 * seeded by the hash of its name (ketama hashes "<name>-<i>" instead). A key belongs to the first point at or after its
 * hash, wrapping at the end. When a backend joins or leaves only the keys between its points and their predecessors
 * move, about 1/n of them.
 *
 * Ring size: each backend gets weight * P points, where P is fixed at 160
 * per weight unit (nginx's ketama) unless that makes the ring smaller than
 * min_ring_size or larger than max_ring_size (gRFC A42's bounds), when P is
 * scaled to fit. A fixed P is what keeps the ring stable: a backend's points
 * depend only on its name and weight, so a membership change moves only the
 * keys of the backend that came or went (A42's own sizing, which spreads
 * min_ring_size over the backends, rescales everyone on every change and
 * moves ~1.7x more keys). Crossing a bound rescales once. Points never
 * depend on discovery order.
 *
 * A pick binary-searches the sorted point hashes: O(log ring). If the owner
 * is unusable or already tried by this call, the walk continues clockwise to
 * the next usable untried owner (A42 does the same for non-READY owners); a
 * tried usable owner is the last resort. Calls without a hash key use
 * ctx->random as the key, which is a weighted random pick.
 */
#include "lb.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

#define POINTS_PER_WEIGHT 160

/* Owned by the slb_lb (lb->data). */
struct ring {
    uint64_t *hash; /* sorted point hashes */
    uint32_t *idx;  /* set index of each point's owner */
    uint32_t size;
};

struct point {
    uint64_t hash;
    const struct slb_backend *be;
};

/*
 * LSD radix sort by hash, 16 bits a pass: a 10,000-backend ring has millions
 * of points and update() runs on the loop, where qsort took ~0.5 s. Stable, so
 * the (astronomically rare) equal hashes are then ordered by name.
 */
static int sort_points(struct point *pts, uint32_t n)
{
    struct point *tmp = malloc((size_t)n * sizeof(*tmp)), *src = pts, *dst = tmp;
    uint32_t *count = malloc(65536 * sizeof(*count));

    if (tmp == NULL || count == NULL) {
        free(tmp);
        free(count);
        return SLB_ENOMEM;
    }
    for (int shift = 0; shift < 64; shift += 16) {
        uint32_t sum = 0;
        memset(count, 0, 65536 * sizeof(*count));
        for (uint32_t i = 0; i < n; i++)
            count[src[i].hash >> shift & 0xffff]++;
        for (uint32_t d = 0; d < 65536; d++) {
            uint32_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (uint32_t i = 0; i < n; i++)
            dst[count[src[i].hash >> shift & 0xffff]++] = src[i];
        struct point *t = src;
        src = dst;
        dst = t;
    } /* four passes: the result is back in pts */
    for (uint32_t i = 1; i < n; i++) {
        for (uint32_t j = i;
             j > 0 && pts[j].hash == pts[j - 1].hash && strcmp(pts[j].be->name, pts[j - 1].be->name) < 0; j--) {
            struct point t = pts[j];
            pts[j] = pts[j - 1];
            pts[j - 1] = t;
        }
    }
    free(tmp);
    free(count);
    return 0;
}

static int ring_init(struct slb_lb *lb)
{
    return (lb->data = calloc(1, sizeof(struct ring))) != NULL ? 0 : SLB_ENOMEM;
}

static int ring_update(struct slb_lb *lb)
{
    struct ring *r = lb->data;
    const struct slb_backend_set *set = lb->set;
    const struct slb_lb_options *o = lb->opts;
    uint64_t *hash = NULL;
    uint32_t *idx = NULL, size = 0, cap;
    struct point *pts = NULL;

    if (set->n > 0) {
        uint64_t sum = 0, ppw = POINTS_PER_WEIGHT, total;
        uint64_t min_ring = o->min_ring_size ? o->min_ring_size : 1024;
        uint64_t max_ring = o->max_ring_size ? o->max_ring_size : 8388608;

        for (uint32_t i = 0; i < set->n; i++)
            sum += set->items[i]->weight;
        if (min_ring > max_ring)
            min_ring = max_ring;
        if (sum * ppw < min_ring)
            ppw = (min_ring + sum - 1) / sum;
        if (sum * ppw > max_ring)
            ppw = max_ring / sum;
        /* Past max_ring / sum every backend keeps one point per weight unit at least. */
        total = sum * (ppw ? ppw : 1);
        if (total > UINT32_MAX)
            return SLB_ENOMEM;
        cap = (uint32_t)total;
        if ((pts = malloc((size_t)cap * sizeof(*pts))) == NULL)
            return SLB_ENOMEM;
        for (uint32_t i = 0; i < set->n; i++) {
            const struct slb_backend *be = set->items[i];
            uint64_t points = be->weight * (ppw ? ppw : 1);
            /* point k = splitmix64 step k from the name's hash: as well spread as
             * hashing "<name>_<k>" (ketama) and ~10x cheaper to build */
            struct slb_rng rng;
            slb_rng_seed(&rng, slb_hash64(be->name, strlen(be->name)));
            for (uint32_t k = 0; k < points; k++) {
                pts[size].hash = slb_rng_next(&rng);
                pts[size++].be = be;
            }
        }
        int err = sort_points(pts, size);
        hash = malloc((size_t)size * sizeof(*hash));
        idx = malloc((size_t)size * sizeof(*idx));
        if (err != 0 || hash == NULL || idx == NULL) {
            free(pts);
            free(hash);
            free(idx);
            return SLB_ENOMEM;
        }
        for (uint32_t i = 0; i < size; i++) {
            hash[i] = pts[i].hash;
            idx[i] = pts[i].be->index;
        }
        free(pts);
    }
    free(r->hash);
    free(r->idx);
    r->hash = hash;
    r->idx = idx;
    r->size = size;
    return 0;
}

static struct slb_backend *ring_pick(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    struct ring *r = lb->data;
    uint64_t key = ctx->has_hash ? ctx->hash : ctx->random;
    uint32_t lo = 0, hi = r->size;

    /* first point with hash >= key */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->hash[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return slb__lb_walk(lb, r->idx, r->size, lo, ctx);
}

static void ring_destroy(struct slb_lb *lb)
{
    struct ring *r = lb->data;
    if (r != NULL) {
        free(r->hash);
        free(r->idx);
    }
    free(r);
}

const struct slb_lb_ops slb_lb_ring_hash = {
    .name = "ring_hash",
    .init = ring_init,
    .update = ring_update,
    .pick = ring_pick,
    .destroy = ring_destroy,
    .uses_hash = 1,
};
