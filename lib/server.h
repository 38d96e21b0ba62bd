/*
 * The server: one libuv loop's worth of sidelb — listeners, clusters, the
 * connection flusher, the call free list and the nghttp2 callback tables.
 *
 * Ownership: created by the daemon (or a test) and owns everything else;
 * the config it runs with belongs to the caller and must outlive it.
 */
#ifndef SLB_SERVER_H
#define SLB_SERVER_H

#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <uv.h>

#include "deadline.h"
#include "h2_conn.h"

struct slb_config;
struct slb_config_listener;
struct slb_cluster;
struct slb_call;
struct slb_downstream;
struct slb_etcd;
struct slb_registrar;
struct slb_admin;

struct slb_route {
    const char *service; /* "pkg.Service" or "pkg.Service/Method" */
    size_t len;
    struct slb_cluster *cluster;
};

struct slb_listener {
    uv_tcp_t tcp;
    struct slb_server *srv;
    const struct slb_config_listener *cfg;
    struct slb_route *routes;
    size_t n_routes;
    struct slb_cluster *default_cluster;
};

struct slb_server_stats {
    uint64_t calls_total, calls_failed_local, downstream_conns_total, upstream_conns_total;
};

struct slb_server {
    uv_loop_t *loop;
    const struct slb_config *cfg;
    struct slb_conn_ctx io;
    struct slb_listener *listeners;
    size_t n_listeners;
    struct slb_cluster *clusters;
    size_t n_clusters;
    nghttp2_session_callbacks *down_cbs, *up_cbs;
    nghttp2_option *down_opt, *up_opt;
    struct slb_downstream *downstreams;
    struct slb_etcd *etcd;           /* shared by discovery and registration; NULL without "etcd" */
    struct slb_admin *admin;         /* HTTP admin listener; NULL without "admin" */
    struct slb_registrar *registrar; /* lease registration of this host's services; NULL without register[] */
    /* stop: wait for the leases to be revoked before closing the etcd client */
    int reg_pending, finish_wanted;
    struct slb_deadline_heap deadlines; /* calls with a deadline, earliest first */
    struct slb_call *free_calls;
    uint32_t n_free_calls, n_calls;
    uint64_t rng;
    uint8_t stopping;
    uv_timer_t stop_timer;
    uv_timer_t goaway_timer; /* graceful stop: shutdown notice first, the final GOAWAY later */
    uint8_t goaway_final;
    void (*on_stopped)(struct slb_server *srv);
    struct slb_server_stats stats;
};

/* Binds listeners and prepares clusters. On error returns < 0 with a message in err. */
int slb_server_start(struct slb_server *srv, uv_loop_t *loop, const struct slb_config *cfg, char *err, size_t errlen);
/* The same for a config reload: listeners at an address `old` also has take
 * over its listening socket, so no connection is refused or lost. */
int slb_server_start_reload(struct slb_server *srv, uv_loop_t *loop, const struct slb_config *cfg,
                            const struct slb_server *old, char *err, size_t errlen);
/* Reload helpers: free the admin port for the new server (and take it back if that fails). */
void slb_server_admin_release(struct slb_server *srv);
int slb_server_admin_restore(struct slb_server *srv, char *err, size_t errlen);
/* Stops a server replaced by one running `next`: registrations that `next`
 * keeps are handed over instead of revoked, then as slb_server_stop(). */
void slb_server_retire(struct slb_server *old, const struct slb_config *next, uint64_t grace_ms,
                       void (*on_stopped)(struct slb_server *));
/* Stop accepting, drain calls (up to grace_ms), then close everything and call on_stopped. */
void slb_server_stop(struct slb_server *srv, uint64_t grace_ms, void (*on_stopped)(struct slb_server *));
/* Called by downstream connections as they go away (for graceful stop). */
void slb_server_downstream_gone(struct slb_server *srv);
/* Frees what the server allocated once the loop has closed every handle. */
void slb_server_dispose(struct slb_server *srv);

/* Route a request path ("/pkg.Service/Method") to a cluster; NULL = no route. */
struct slb_cluster *slb_listener_route(const struct slb_listener *l, const uint8_t *path, size_t len);

static inline uint64_t slb_server_random(struct slb_server *srv)
{
    /* splitmix64: cheap, good enough for balancing decisions */
    uint64_t z = (srv->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

#endif
