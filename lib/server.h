/*
 * The server: one config's worth of sidelb on one loop — listeners,
 * clusters, the etcd client, registration, the admin listener, and the
 * per-loop context (lib/loop_ctx.h) that its calls and connections live in.
 * A reload starts a new server next to the old one, which drains and stops.
 *
 * Layers call one way: server -> call -> cluster / h2_upstream /
 * h2_downstream -> h2_conn; upward only through handler tables.
 *
 * Ownership: created by the daemon (or a test) and owns everything else;
 * the config it runs with belongs to the caller and must outlive it.
 * on_stopped runs once every handle in its memory has closed: the caller
 * may free the server (slb_server_dispose, free) right there.
 */
#ifndef SLB_SERVER_H
#define SLB_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "h2_downstream.h"
#include "loop_ctx.h"
#include "route.h"
#include "unix_socket.h"

struct slb_config;
struct slb_config_listener;
struct slb_cluster;
struct slb_etcd;
struct slb_registrar;
struct slb_admin;
struct slb_workers;

/* Owner: the server (array). */
struct slb_listener {
    union {
        uv_tcp_t tcp;   /* IP:port listeners */
        uv_pipe_t pipe; /* unix:/path listeners (cfg->unix_path) */
        uv_poll_t poll; /* workers > 1: the control loop accepts and hands sockets to the workers */
    };
    int fd;                  /* workers > 1: the listening socket (the poll handle does not own it) */
    uv_timer_t accept_pause; /* workers > 1: accepting resumes after running out of file descriptors */
    struct slb_log_limit accept_log;
    struct slb_unix_file file; /* unix:/path: the socket file, removed on stop if still owned and ours */
    uint8_t inherited;         /* took over the socket of the server it replaces */
    struct slb_server *srv;
    const struct slb_config_listener *cfg;
    struct slb_routes routes;
    struct slb_downstream_set set; /* its app connections: caps, timeouts */
};

struct slb_server {
    uv_loop_t *loop;
    const struct slb_config *cfg;
    struct slb_loop_ctx ctx; /* calls, connections, pools, timers of this server */
    struct slb_listener *listeners;
    size_t n_listeners;
    struct slb_cluster *clusters;
    size_t n_clusters;
    struct slb_etcd *etcd;           /* shared by discovery and registration; NULL without "etcd" */
    struct slb_admin *admin;         /* HTTP admin listener; NULL without "admin" */
    struct slb_registrar *registrar; /* lease registration of this host's services; NULL without register[] */
    /* stop: wait for the leases to be revoked before closing the etcd client */
    int reg_pending, finish_wanted;
    uint8_t stopping, finished;
    uv_timer_t stop_timer;   /* the grace period */
    uv_timer_t goaway_timer; /* graceful stop: shutdown notice first, the final GOAWAY later */
    uint8_t timers_started;
    void (*on_stopped)(struct slb_server *srv);
    struct slb_workers *workers; /* "workers" > 1 (lib/worker.h): they forward the calls; NULL: this loop does */
};

/* The default of max_app_connections for a file descriptor limit: nofile minus a reserve
 * for backends, etcd, admin and the process itself, max(256, nofile / 4) (at most half). */
uint32_t slb_server_app_conn_ceiling(uint64_t nofile);

/* Binds listeners and prepares clusters. On error returns < 0 with a message in err
 * (then stop it with slb_server_stop(srv, 0, cb) and free it in cb). */
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
/* Stop accepting, drain calls (up to grace_ms), then close everything this
 * server owns (wherever its backends went) and call on_stopped. */
void slb_server_stop(struct slb_server *srv, uint64_t grace_ms, void (*on_stopped)(struct slb_server *));
/* Reopens the access log (SIGUSR1: logrotate moved it). */
void slb_server_reopen_logs(struct slb_server *srv);
/* Frees what the server allocated (after on_stopped). */
void slb_server_dispose(struct slb_server *srv);

#endif
