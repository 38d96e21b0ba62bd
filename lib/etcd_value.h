/*
 * The value of a key under a cluster's etcd prefix, read into an endpoint.
 * Three formats (DESIGN.md "etcd key formats"):
 *   plain:       host:port
 *   etcd naming: {"Op":0,"Addr":"host:port","Metadata":...}  (Op 1 = delete)
 *   json:        {"addr":"host:port","weight":10,"zone":"a","metadata":{...},"drain":true}
 * ("drain": an operator's drain, docs/config.md "Draining a backend").
 * The JSON formats may carry "registered_at_ms": the wall-clock time (ms
 * since 1970 UTC) sidelb's registrar registered the backend, so every host
 * ramps it (slow start) from the same moment.
 * And the inverse, for the registrar. Pure functions, no I/O. The host may be
 * an IP literal or a host name (the cluster resolves names: lib/resolver.h).
 */
#ifndef SLB_ETCD_VALUE_H
#define SLB_ETCD_VALUE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define SLB_ETCD_WEIGHT_MAX 1000000
/* 9999-12-31T23:59:59.999Z: the largest registered_at_ms accepted */
#define SLB_ETCD_REGISTERED_AT_MAX 253402300799999ULL

/* Owned by whoever holds it (discovery's map entry, or a caller's stack); metadata is heap. */
struct slb_etcd_endpoint {
    char addr[SLB_BACKEND_NAME_MAX]; /* "host:port" / "[v6]:port" */
    uint32_t weight;                 /* 1 when absent */
    char zone[32];                   /* "" when absent */
    char *metadata;                  /* compact JSON, or NULL */
    uint8_t drain;                   /* "drain": true (json format only): no new calls to it */
    uint64_t registered_at_ms;       /* "registered_at_ms": wall clock, ms since 1970 UTC; 0 when absent */
};

/*
 * Parses value (len bytes; need not be NUL-terminated) of key. Returns 0 (ep
 * filled; dispose it), 1 for an etcd-naming delete (Op 1; ep filled with the
 * address), or SLB_EPROTO with a one-line message naming the key in err.
 */
int slb_etcd_value_parse(const char *key, const char *value, size_t len, struct slb_etcd_endpoint *ep, char *err,
                         size_t errlen);
void slb_etcd_endpoint_dispose(struct slb_etcd_endpoint *ep);
/* 1 when addr, weight, zone, metadata, drain and registered_at_ms are equal. */
int slb_etcd_endpoint_equal(const struct slb_etcd_endpoint *a, const struct slb_etcd_endpoint *b);
/* Deep copy into dst (dispose it). 0 or SLB_ENOMEM. */
int slb_etcd_endpoint_copy(struct slb_etcd_endpoint *dst, const struct slb_etcd_endpoint *src);

/*
 * Formats ep as format (enum slb_register_format in config.h); a malloc'd
 * string or NULL (no memory / bad metadata). ep->drain is written only by
 * the json format (the others cannot carry it).
 */
char *slb_etcd_value_format(const struct slb_etcd_endpoint *ep, int format);

#endif
