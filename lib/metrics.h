/*
 * /metrics: the server's counters and gauges in the Prometheus text format
 * 0.0.4. Rendering reads the server, its clusters and backends, and what
 * every loop counted, added up (lib/scrape.h: with workers, they are paused
 * for the additions); it changes nothing and runs on the scrape, never on
 * a call.
 */
#ifndef SLB_METRICS_H
#define SLB_METRICS_H

#include <stdint.h>

struct slb_outbuf;
struct slb_server;

/* Appends the whole exposition to b. 0, or SLB_ENOMEM (b holds a partial body then). now: uv_now(). */
int slb_metrics_render(struct slb_outbuf *b, const struct slb_server *srv, uint64_t now);

#endif
