/* Per-method call counters with a cardinality cap (see method_stats.h). */
#include "method_stats.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common.h"

int slb_method_stats_init(struct slb_method_stats *ms, uint32_t cap)
{
    memset(ms, 0, sizeof(*ms));
    if (cap == 0)
        return 0;
    ms->nslots = 4;
    while (ms->nslots < 2 * cap)
        ms->nslots *= 2;
    ms->items = calloc((size_t)cap + 1, sizeof(*ms->items));
    ms->slots = calloc(ms->nslots, sizeof(*ms->slots));
    ms->hashes = calloc(ms->nslots, sizeof(*ms->hashes));
    if (ms->items == NULL || ms->slots == NULL || ms->hashes == NULL) {
        slb_method_stats_dispose(ms);
        return SLB_ENOMEM;
    }
    ms->cap = cap;
    return 0;
}

void slb_method_stats_dispose(struct slb_method_stats *ms)
{
    if (ms->items != NULL)
        for (uint32_t i = 0; i < ms->n; i++)
            free(ms->items[i].name);
    free(ms->items);
    free(ms->slots);
    free(ms->hashes);
    memset(ms, 0, sizeof(*ms));
}

uint32_t slb_method_stats_slot(struct slb_method_stats *ms, const uint8_t *path, size_t len)
{
    uint64_t h;
    uint32_t i;

    if (ms->cap == 0)
        return 0;
    h = XXH64(path, len, 0);
    for (i = (uint32_t)h & (ms->nslots - 1); ms->slots[i] != 0; i = (i + 1) & (ms->nslots - 1)) {
        const struct slb_method_stat *m = &ms->items[ms->slots[i] - 1];
        if (ms->hashes[i] == h && strlen(m->name) == len && memcmp(m->name, path, len) == 0)
            return ms->slots[i];
    }
    if (ms->n == ms->cap || memchr(path, 0, len) != NULL)
        return ms->cap + 1; /* "other" */
    if ((ms->items[ms->n].name = malloc(len + 1)) == NULL)
        return ms->cap + 1;
    memcpy(ms->items[ms->n].name, path, len);
    ms->items[ms->n].name[len] = '\0';
    ms->slots[i] = ++ms->n;
    ms->hashes[i] = h;
    return ms->n;
}
