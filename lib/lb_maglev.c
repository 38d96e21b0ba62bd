/*
 * maglev: Google's Maglev consistent hashing (Eisenbud et al., NSDI 2016,
 * section 3.4; weighted as in Envoy's MaglevTable).
 *
 * A lookup table of M slots (M prime, maglev_table_size, default 65537) maps
 * a key to a backend in O(1): slot = key mod M. Each backend has its own
 * permutation of the slots, offset + j * skip (mod M), with offset and skip
 * derived from the hash of its name. Building, backends take turns claiming
 * the next free slot of their permutation until the table is full; a backend
 * of weight w takes a turn in w / w_max of the rounds, so slots, and keys,
 * are shared in proportion to weight. Adding or removing one of n backends
 * moves about 1/n of the slots (a little more than a ring: Maglev trades
 * some stability for a perfectly even table). Turns are taken in name order,
 * so every sidecar builds the same table. M must exceed n: when it does not,
 * the next prime above 8 * n is used instead.
 *
 * A slot whose backend is unusable or tried by this call walks forward to
 * the next slot with a usable untried one. Calls without a key use
 * ctx->random.
 */
#include "lb.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

/* Owned by the slb_lb (lb->data). */
struct maglev {
    uint32_t *table; /* set index per slot */
    uint32_t size;
};

/* Per backend while building. */
struct perm {
    const struct slb_backend *be;
    uint64_t offset, skip, cur;
    uint64_t target; /* rounds * w_max already taken, Envoy's target_weight_ */
};

static int is_prime(uint32_t m)
{
    if (m < 2)
        return 0;
    for (uint32_t d = 2; (uint64_t)d * d <= m; d++)
        if (m % d == 0)
            return 0;
    return 1;
}

static int perm_cmp(const void *a, const void *b)
{
    const struct slb_backend *x = ((const struct perm *)a)->be, *y = ((const struct perm *)b)->be;
    return slb__lb_cmp_name(&x, &y);
}

static int maglev_init(struct slb_lb *lb)
{
    return (lb->data = calloc(1, sizeof(struct maglev))) != NULL ? 0 : SLB_ENOMEM;
}

static int maglev_update(struct slb_lb *lb)
{
    struct maglev *m = lb->data;
    const struct slb_backend_set *set = lb->set;
    uint32_t size = lb->opts->maglev_table_size, n = set->n, filled = 0, *table = NULL;
    uint64_t w_max = 0;
    struct perm *p;

    if (n == 0)
        goto done;
    if (size <= n || !is_prime(size))
        for (size = size > n ? size : 8 * n + 1; !is_prime(size); size++)
            ;
    if ((p = malloc(n * sizeof(*p))) == NULL)
        return SLB_ENOMEM;
    if ((table = malloc((size_t)size * sizeof(*table))) == NULL) {
        free(p);
        return SLB_ENOMEM;
    }
    for (uint32_t i = 0; i < size; i++)
        table[i] = UINT32_MAX;
    for (uint32_t i = 0; i < n; i++) {
        const struct slb_backend *be = set->items[i];
        uint64_t h = slb_hash64(be->name, strlen(be->name));
        struct slb_rng rng;
        slb_rng_seed(&rng, h);
        p[i].be = be;
        p[i].offset = h % size;
        p[i].skip = slb_rng_next(&rng) % (size - 1) + 1;
        p[i].cur = p[i].offset;
        p[i].target = 0;
        if (be->weight > w_max)
            w_max = be->weight;
    }
    qsort(p, n, sizeof(*p), perm_cmp);
    for (uint64_t round = 1; filled < size; round++) {
        for (uint32_t i = 0; i < n && filled < size; i++) {
            if (round * p[i].be->weight < p[i].target)
                continue;
            p[i].target += w_max;
            while (table[p[i].cur] != UINT32_MAX)
                p[i].cur = (p[i].cur + p[i].skip) % size;
            table[p[i].cur] = p[i].be->index;
            p[i].cur = (p[i].cur + p[i].skip) % size;
            filled++;
        }
    }
    free(p);
done:
    free(m->table);
    m->table = table;
    m->size = n > 0 ? size : 0;
    return 0;
}

static struct slb_backend *maglev_pick(struct slb_lb *lb, const struct slb_pick_ctx *ctx)
{
    struct maglev *m = lb->data;
    uint64_t key = ctx->has_hash ? ctx->hash : ctx->random;
    uint32_t i = (uint32_t)(key % m->size);

    return slb__lb_walk(lb, m->table, m->size, i, ctx);
}

static void maglev_destroy(struct slb_lb *lb)
{
    struct maglev *m = lb->data;
    if (m != NULL)
        free(m->table);
    free(m);
}

const struct slb_lb_ops slb_lb_maglev = {
    .name = "maglev",
    .init = maglev_init,
    .update = maglev_update,
    .pick = maglev_pick,
    .destroy = maglev_destroy,
    .uses_hash = 1,
};
