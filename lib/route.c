#include "route.h"

#include <string.h>

struct slb_cluster *slb_routes_lookup(const struct slb_routes *r, const uint8_t *path, size_t len)
{
    const uint8_t *svc, *slash;
    size_t svclen;

    if (len < 2 || path[0] != '/')
        return r->default_cluster;
    svc = path + 1;
    slash = memchr(svc, '/', len - 1);
    svclen = slash != NULL ? (size_t)(slash - svc) : len - 1;
    for (size_t i = 0; i < r->n; i++) {
        const struct slb_route *rt = &r->v[i];
        if (rt->len == len - 1 && memcmp(rt->service, svc, rt->len) == 0)
            return rt->cluster;
    }
    for (size_t i = 0; i < r->n; i++) {
        const struct slb_route *rt = &r->v[i];
        if (rt->len == svclen && memcmp(rt->service, svc, svclen) == 0)
            return rt->cluster;
    }
    return r->default_cluster;
}
