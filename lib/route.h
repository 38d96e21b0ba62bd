/*
 * A listener's routes: request path ("/pkg.Service/Method") -> cluster.
 * A "pkg.Service/Method" route wins over a "pkg.Service" one; anything else
 * goes to the default cluster, if any.
 *
 * Ownership: embedded in the listener; service strings belong to the config.
 */
#ifndef SLB_ROUTE_H
#define SLB_ROUTE_H

#include <stddef.h>
#include <stdint.h>

struct slb_cluster;

struct slb_route {
    const char *service; /* "pkg.Service" or "pkg.Service/Method" */
    size_t len;
    struct slb_cluster *cluster;
};

struct slb_routes {
    struct slb_route *v;
    size_t n;
    struct slb_cluster *default_cluster;
};

/* The cluster for a request path; NULL = no route. */
struct slb_cluster *slb_routes_lookup(const struct slb_routes *r, const uint8_t *path, size_t len);

#endif
