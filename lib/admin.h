/*
 * The admin listener: a small HTTP/1.1 server for operators and scrapers,
 * meant for loopback only. One request per connection (the reply carries
 * "Connection: close"); requests are bounded (8 KiB of request line and
 * headers, 10 s to send them) and served from the loop, so a slow client
 * never holds up another.
 *
 *   GET /healthz   200 "ok\n" while serving, 503 "draining\n" once stopping
 *   GET /metrics   Prometheus text format 0.0.4 (server, cluster and backend gauges)
 *   GET /clusters  JSON: [{name, policy, waiting, backends: [{address, weight, zone,
 *                  state, health, healthy, ejected, draining, drained, outstanding, connections,
 *                  host_name (only for a backend resolved from a host name)}]}]
 *   GET /ready, GET /config, POST /clusters/<c>/backends/<addr>/{drain,undrain,clear_ejection}:
 *                  admin_actions.h (the actions and /config only over loopback)
 *
 * HEAD is accepted wherever GET is. Malformed requests get 400, oversized
 * ones 431, unknown paths 404, other methods 405.
 *
 * Ownership: the server owns the struct slb_admin (created by
 * slb_admin_start, released by slb_admin_stop). The admin reads the server's
 * clusters and stats on each request and changes them only through the
 * actions of admin_actions.h (drain, clear an ejection); the server must
 * outlive it until slb_admin_stop() has been called. Memory is freed from the
 * loop once the listener and every admin connection have closed.
 */
#ifndef SLB_ADMIN_H
#define SLB_ADMIN_H

#include <stddef.h>

struct slb_server;
struct slb_admin;

/* Largest request (request line + headers) the admin accepts. */
#define SLB_ADMIN_MAX_REQUEST 8192
/* A client has this long to send its request before it is disconnected. */
#define SLB_ADMIN_REQUEST_TIMEOUT_MS 10000
/* At most this many admin connections at once; more are closed on accept. */
#define SLB_ADMIN_MAX_CONNS 64

/*
 * Listens on addr ("127.0.0.1:9901") on srv's loop. Returns 0 and *out, or
 * < 0 with a message in err and *out = NULL:
 *   SLB_EADDR   addr is not "host:port"
 *   SLB_ENOMEM  out of memory
 *   UV_E*       bind/listen failed (e.g. UV_EADDRINUSE)
 */
int slb_admin_start(struct slb_admin **out, struct slb_server *srv, const char *addr, char *err, size_t errlen);

/* Closes the listener and every open admin connection; the memory is freed in
 * the close callbacks. NULL is a no-op. a must not be used afterwards. */
void slb_admin_stop(struct slb_admin *a);

#endif
