#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "access_log.h"
#include "admin.h"
#include "buf.h"
#include "call.h"
#include "cluster.h"
#include "common.h"
#include "config.h"
#include "etcd.h"
#include "h2_downstream.h"
#include "log.h"
#include "register.h"
#include "unix_socket.h"
#include "worker.h"

static void server_finish(struct slb_server *srv);

static void on_downstream_gone(struct slb_downstream *dc)
{
    struct slb_server *srv = slb_container_of(dc->ctx, struct slb_server, ctx);

    if (srv->stopping && slb_list_empty(&srv->ctx.downstreams))
        server_finish(srv);
}

static void on_connection(uv_stream_t *s, int status)
{
    struct slb_listener *l = slb_container_of(s, struct slb_listener, tcp);
    int rv;

    if (status < 0) {
        slb_warn("listener %s: accept error: %s", l->cfg->address, slb_strerror(status));
        return;
    }
    if ((rv = slb_downstream_accept(&l->set, s, on_downstream_gone)) != 0)
        slb_warn("listener %s: cannot accept: %s", l->cfg->address, slb_strerror(rv));
}

/* The listener of the running server at the same address, if any, and its listening socket. */
static int inherited_fd(const struct slb_server *old, const char *address, const struct slb_listener **from)
{
    uv_os_fd_t fd;

    for (size_t i = 0; old != NULL && i < old->n_listeners; i++)
        if (strcmp(old->listeners[i].cfg->address, address) == 0 &&
            uv_fileno((const uv_handle_t *)&old->listeners[i].tcp, &fd) == 0) {
            *from = &old->listeners[i];
            return fd;
        }
    return -1;
}

/* The loop's calls-by-code table: one row of gRPC codes per listener and cluster (and "no cluster"). */
static int alloc_call_stats(struct slb_server *srv)
{
    struct slb_loop_stats *st = &srv->ctx.stats;
    size_t rows = srv->cfg->n_listeners * (srv->n_clusters + 1);

    st->calls_n_listeners = (uint32_t)srv->cfg->n_listeners;
    st->calls_n_clusters = (uint32_t)srv->n_clusters;
    if ((st->calls_by_code = calloc(rows > 0 ? rows : 1, SLB_STATS_GRPC_CODES * sizeof(uint64_t))) == NULL)
        return SLB_ENOMEM;
    return 0;
}

/* ---- unix:/path listeners (the socket file: lib/unix_socket.h) ---- */

static int unix_bind(struct slb_listener *l, char *err, size_t errlen)
{
    const struct slb_config_listener *cfg = l->cfg;
    char what[192]; /* "listener unix:" and a path of up to 107 bytes */
    int fd, rv;

    snprintf(what, sizeof(what), "listener %s", cfg->address);
    if ((fd = slb_unix_socket_bind(&l->file, cfg->unix_path, cfg->unix_mode, cfg->unix_gid, what, err, errlen)) < 0)
        return fd;
    if ((rv = uv_pipe_open(&l->pipe, fd)) != 0) {
        snprintf(err, errlen, "%s: %s", what, slb_strerror(rv));
        close(fd);
    }
    return rv;
}

/* Takes over the listening Unix socket of the server being replaced (a dup of its fd). */
static int unix_inherit(struct slb_listener *l, const struct slb_listener *from, int fd, char *err, size_t errlen)
{
    char what[192]; /* "listener unix:" and a path of up to 107 bytes */
    int nfd = dup(fd), rv;

    snprintf(what, sizeof(what), "listener %s", l->cfg->address);
    if (nfd < 0 || (rv = uv_pipe_open(&l->pipe, nfd)) != 0) {
        rv = nfd < 0 ? UV_EMFILE : rv;
        if (nfd >= 0)
            close(nfd);
        snprintf(err, errlen, "%s: cannot take over the socket: %s", what, slb_strerror(rv));
        return rv;
    }
    l->file = from->file;
    l->file.path = l->cfg->unix_path;
    l->inherited = 1;
    l->file.owned = 1; /* the old server gives it up in slb_server_retire() */
    return slb_unix_socket_chmod(l->cfg->unix_path, l->cfg->unix_mode, l->cfg->unix_gid, what, err, errlen);
}

static int unix_listener_open(struct slb_server *srv, struct slb_listener *l, const struct slb_server *old, int *kept,
                              char *err, size_t errlen)
{
    const struct slb_listener *from = NULL;
    int fd, rv;

    uv_pipe_init(srv->loop, &l->pipe, 0);
    slb_conn_ctx_handle_opened(&srv->ctx.io);
    srv->n_listeners++; /* from here on, stopping the server closes the handle */
    if ((fd = inherited_fd(old, l->cfg->address, &from)) >= 0 && !slb_unix_file_is_ours(&from->file)) {
        /* someone removed or replaced the file: nobody reaches the old socket by name; make a new one */
        slb_warn("listener %s: %s is no longer the running socket's file; binding a new socket", l->cfg->address,
                 l->cfg->unix_path);
        fd = -1;
    }
    *kept = fd >= 0;
    rv = *kept ? unix_inherit(l, from, fd, err, errlen) : unix_bind(l, err, errlen);
    if (rv != 0)
        return rv;
    if ((rv = uv_listen((uv_stream_t *)&l->pipe, 1024, on_connection)) != 0)
        snprintf(err, errlen, "listener %s: cannot listen: %s", l->cfg->address, slb_strerror(rv));
    return rv;
}

/* ---- workers > 1: the control loop accepts, the workers serve (lib/worker.h) ---- */

#define ACCEPTS_PER_TURN 64
#define ACCEPT_PAUSE_MS  100

static void on_acceptable(uv_poll_t *p, int status, int events);

static void on_accept_pause(uv_timer_t *t)
{
    struct slb_listener *l = slb_container_of(t, struct slb_listener, accept_pause);

    if (!l->srv->stopping)
        uv_poll_start(&l->poll, UV_READABLE, on_acceptable);
}

/* The listening socket failed (what, why): accept again in ACCEPT_PAUSE_MS instead of spinning on it. */
static void accept_pause(struct slb_listener *l, const char *what, const char *why)
{
    uint64_t skipped;

    if (slb_log_limit_pass(&l->accept_log, uv_now(l->poll.loop), SLB_LOG_LIMIT_MS, &skipped))
        slb_warn("listener %s: %s error: %s; accepting again in %d ms", l->cfg->address, what, why, ACCEPT_PAUSE_MS);
    uv_poll_stop(&l->poll);
    uv_timer_start(&l->accept_pause, on_accept_pause, ACCEPT_PAUSE_MS, 0);
}

/* Accepts what is waiting (a bounded batch per turn) and hands each socket to the least busy worker. */
static void on_acceptable(uv_poll_t *p, int status, int events)
{
    struct slb_listener *l = slb_container_of(p, struct slb_listener, poll);

    if (status < 0) { /* libuv stopped the handle (an error on the listening socket) */
        accept_pause(l, "poll", slb_strerror(status));
        return;
    }
    for (int i = 0; i < ACCEPTS_PER_TURN; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            slb_workers_hand_off(l->srv->workers, fd, (uint32_t)(l - l->srv->listeners), l->cfg->unix_path != NULL);
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
            return;
        accept_pause(l, "accept", strerror(errno)); /* out of descriptors or memory: the socket stays readable */
        return;
    }
}

/* A new listening TCP socket at ss (as uv_tcp_bind does: SO_REUSEADDR; v6 sockets v6 only). */
static int tcp_listen_socket(const struct sockaddr_storage *ss, unsigned sslen)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), on = 1, rv;

    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        (ss->ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) != 0) ||
        bind(fd, (const struct sockaddr *)ss, sslen) != 0 || listen(fd, 1024) != 0) {
        rv = -errno;
        close(fd);
        return rv;
    }
    return fd;
}

static int acceptor_start(struct slb_server *srv, struct slb_listener *l, const struct slb_server *old, char *err,
                          size_t errlen)
{
    const struct slb_config_listener *cfg = l->cfg;
    const struct slb_listener *from = NULL;
    char what[192]; /* "listener unix:" and a path of up to 107 bytes */
    int fd = inherited_fd(old, cfg->address, &from), nfd, rv;
    struct sockaddr_storage ss;
    unsigned sslen;

    snprintf(what, sizeof(what), "listener %s", cfg->address);
    if (fd >= 0 && cfg->unix_path != NULL && !slb_unix_file_is_ours(&from->file)) {
        slb_warn("%s: %s is no longer the running socket's file; binding a new socket", what, cfg->unix_path);
        fd = -1;
    }
    if (fd >= 0) { /* a reload keeps the listening socket: nothing in its backlog is lost */
        if ((nfd = dup(fd)) < 0) {
            snprintf(err, errlen, "%s: cannot take over the socket: %s", what, strerror(errno));
            return UV_EMFILE;
        }
        if (cfg->unix_path != NULL) {
            l->file = from->file;
            l->file.path = cfg->unix_path;
            l->inherited = 1;
            l->file.owned = 1; /* the old server gives it up in slb_server_retire() */
        }
    } else if (cfg->unix_path != NULL) {
        if ((nfd = slb_unix_socket_bind(&l->file, cfg->unix_path, cfg->unix_mode, cfg->unix_gid, what, err, errlen)) <
            0)
            return nfd;
        if (listen(nfd, 1024) != 0) {
            rv = -errno;
            snprintf(err, errlen, "%s: cannot listen: %s", what, strerror(errno));
            close(nfd);
            return rv;
        }
    } else {
        if (slb_parse_addr(cfg->address, &ss, &sslen) != 0) {
            snprintf(err, errlen, "%s: invalid address", what);
            return SLB_EADDR;
        }
        if ((nfd = tcp_listen_socket(&ss, sslen)) < 0) {
            snprintf(err, errlen, "%s: cannot listen: %s", what, strerror(-nfd));
            return nfd;
        }
    }
    l->fd = nfd;
    if ((rv = uv_poll_init(srv->loop, &l->poll, nfd)) != 0) {
        snprintf(err, errlen, "%s: %s", what, slb_strerror(rv));
        close(nfd);
        l->fd = -1;
        return rv;
    }
    slb_conn_ctx_handle_opened(&srv->ctx.io);
    uv_timer_init(srv->loop, &l->accept_pause);
    slb_conn_ctx_handle_opened(&srv->ctx.io);
    srv->n_listeners++; /* from here on, stopping the server closes the handles and the socket */
    if (cfg->unix_path != NULL && l->inherited &&
        (rv = slb_unix_socket_chmod(cfg->unix_path, cfg->unix_mode, cfg->unix_gid, what, err, errlen)) != 0)
        return rv;
    uv_poll_start(&l->poll, UV_READABLE, on_acceptable);
    slb_notice("listening on %s (%s)%s, %u workers", cfg->address, cfg->name ? cfg->name : "unnamed",
               fd >= 0 ? " (kept)" : "", srv->cfg->workers);
    return 0;
}

static int listener_start(struct slb_server *srv, struct slb_listener *l, const struct slb_config_listener *cfg,
                          const struct slb_server *old, char *err, size_t errlen)
{
    const struct slb_listener *from;
    struct sockaddr_storage ss;
    unsigned sslen;
    int rv, fd;

    l->srv = srv;
    l->cfg = cfg;
    if ((l->routes.v = calloc(cfg->n_routes + 1, sizeof(*l->routes.v))) == NULL)
        return SLB_ENOMEM;
    l->routes.n = cfg->n_routes;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        l->routes.v[i].service = cfg->routes[i].service;
        l->routes.v[i].len = strlen(cfg->routes[i].service);
        l->routes.v[i].cluster = &srv->clusters[cfg->routes[i].cluster_index];
    }
    l->routes.default_cluster = cfg->default_cluster_index >= 0 ? &srv->clusters[cfg->default_cluster_index] : NULL;
    slb_downstream_set_init(&l->set, &srv->ctx, cfg->name, &l->routes);
    l->set.index = (uint32_t)(l - srv->listeners);
    l->set.max_concurrent_streams = cfg->max_concurrent_streams;
    l->set.max_premature_resets = cfg->max_premature_resets;
    l->set.max_header_list_size = cfg->max_header_list_size;
    l->set.max_connections = cfg->max_connections;
    l->set.handshake_timeout_ms = cfg->handshake_timeout_ms;
    l->set.tls = cfg->tls.ctx; /* NULL: h2c */
    l->set.idle_timeout_ms = cfg->idle_timeout_ms;
    l->set.stream_idle_timeout_ms = cfg->stream_idle_timeout_ms;
    l->fd = -1;
    if (srv->workers != NULL)
        return acceptor_start(srv, l, old, err, errlen);
    if (cfg->unix_path != NULL) {
        int kept = 0;
        if ((rv = unix_listener_open(srv, l, old, &kept, err, errlen)) != 0)
            return rv;
        slb_notice("listening on %s (%s, mode %04o)%s", cfg->address, cfg->name ? cfg->name : "unnamed", cfg->unix_mode,
                   kept ? " (kept)" : "");
        return 0;
    }
    if (slb_parse_addr(cfg->address, &ss, &sslen) != 0) {
        snprintf(err, errlen, "listener %s: invalid address", cfg->address);
        return SLB_EADDR;
    }
    uv_tcp_init(srv->loop, &l->tcp);
    slb_conn_ctx_handle_opened(&srv->ctx.io);
    srv->n_listeners++; /* from here on, stopping the server closes the handle */
    if ((fd = inherited_fd(old, cfg->address, &from)) >= 0) {
        /* A reload keeps the same listening socket (a dup of its fd): no
         * connection waiting in its backlog is lost, no port is rebound. */
        int nfd = dup(fd);
        if (nfd < 0 || (rv = uv_tcp_open(&l->tcp, nfd)) != 0) {
            rv = nfd < 0 ? UV_EMFILE : rv;
            if (nfd >= 0)
                close(nfd);
        }
    } else {
        rv = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&ss, 0);
    }
    if (rv != 0 || (rv = uv_listen((uv_stream_t *)&l->tcp, 1024, on_connection)) != 0) {
        snprintf(err, errlen, "listener %s: cannot listen: %s", cfg->address, slb_strerror(rv));
        return rv;
    }
    slb_notice("listening on %s (%s)%s", cfg->address, cfg->name ? cfg->name : "unnamed", fd >= 0 ? " (kept)" : "");
    return 0;
}

/* The cluster of the server a reload replaces that follows the same etcd prefix on the same
 * etcd endpoints under the same name, or NULL: its live table seeds the new one. */
static struct slb_cluster *same_discovery(const struct slb_server *old, const struct slb_config *cfg,
                                          const struct slb_config_cluster *cc)
{
    const struct slb_config *ocfg = old != NULL ? old->cfg : NULL;

    if (ocfg == NULL || !ocfg->has_etcd || cc->etcd_prefix == NULL || ocfg->etcd.n_endpoints != cfg->etcd.n_endpoints)
        return NULL;
    for (size_t i = 0; i < cfg->etcd.n_endpoints; i++)
        if (strcmp(ocfg->etcd.endpoints[i], cfg->etcd.endpoints[i]) != 0)
            return NULL;
    for (size_t i = 0; i < old->n_clusters; i++) {
        const struct slb_config_cluster *oc = old->clusters[i].cfg;
        if (strcmp(oc->name, cc->name) == 0 && oc->etcd_prefix != NULL && strcmp(oc->etcd_prefix, cc->etcd_prefix) == 0)
            return &old->clusters[i];
    }
    return NULL;
}

uint32_t slb_server_app_conn_ceiling(uint64_t nofile)
{
    uint64_t reserve = nofile / 4 > 256 ? nofile / 4 : 256;

    if (reserve > nofile / 2)
        reserve = nofile / 2;
    nofile -= reserve;
    return nofile > 0x7fffffff ? 0x7fffffff : (nofile > 0 ? (uint32_t)nofile : 1);
}

/* Raises the soft RLIMIT_NOFILE to the hard limit (once a process: later calls find them equal)
 * and returns the cap on app connections it leaves room for. */
static uint32_t fd_ceiling(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return slb_server_app_conn_ceiling(1024);
    if (rl.rlim_cur != RLIM_INFINITY && (rl.rlim_max == RLIM_INFINITY || rl.rlim_cur < rl.rlim_max)) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) {
            slb_notice("file descriptor limit (RLIMIT_NOFILE) raised from %llu to %llu",
                       (unsigned long long)rl.rlim_cur, (unsigned long long)want.rlim_cur);
            rl = want;
        } else {
            slb_warn("cannot raise the file descriptor limit (RLIMIT_NOFILE) from %llu: %s",
                     (unsigned long long)rl.rlim_cur, strerror(errno));
        }
    }
    return slb_server_app_conn_ceiling(rl.rlim_cur == RLIM_INFINITY ? 1048576 : (uint64_t)rl.rlim_cur);
}

/* The cap on app connections over all listeners: the configured one, never above what the
 * file descriptor limit leaves after a reserve for backends, etcd and admin. */
static void set_app_conn_cap(struct slb_server *srv)
{
    uint32_t ceiling = fd_ceiling();
    uint32_t want = srv->cfg->max_app_connections;

    if (want != 0 && want > ceiling)
        slb_warn("max_app_connections %u is more than the file descriptor limit leaves for app connections; using "
                 "%u",
                 want, ceiling);
    srv->ctx.max_app_conns = want != 0 && want < ceiling ? want : ceiling;
    slb_info("app connections: at most %u over all listeners", srv->ctx.max_app_conns);
}

int slb_server_start(struct slb_server *srv, uv_loop_t *loop, const struct slb_config *cfg, char *err, size_t errlen)
{
    return slb_server_start_reload(srv, loop, cfg, NULL, err, errlen);
}

static int server_start(struct slb_server *srv, uv_loop_t *loop, const struct slb_config *cfg,
                        const struct slb_server *old, char *err, size_t errlen);

int slb_server_start_reload(struct slb_server *srv, uv_loop_t *loop, const struct slb_config *cfg,
                            const struct slb_server *old, char *err, size_t errlen)
{
    int rv = server_start(srv, loop, cfg, old, err, errlen);

    /* a failed reload: the old server keeps serving on the sockets taken over, and their files */
    for (size_t i = 0; rv != 0 && i < srv->n_listeners; i++)
        if (srv->listeners[i].inherited)
            srv->listeners[i].file.owned = 0;
    return rv;
}

static int server_start(struct slb_server *srv, uv_loop_t *loop, const struct slb_config *cfg,
                        const struct slb_server *old, char *err, size_t errlen)
{
    int rv;

    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    rv = slb_loop_ctx_init(&srv->ctx, loop, slb_call_on_timer);
    srv->ctx.down_handler = &slb_call_downstream_handler;
    srv->ctx.up_handler = &slb_call_upstream_handler;
    srv->ctx.call_io = &slb_call_h2_transport;
    set_app_conn_cap(srv);
    slb_loop_ctx_set_budgets(&srv->ctx, &cfg->budgets);
    uv_timer_init(loop, &srv->stop_timer);
    uv_timer_init(loop, &srv->goaway_timer);
    slb_conn_ctx_handle_opened(&srv->ctx.io);
    slb_conn_ctx_handle_opened(&srv->ctx.io);
    if (rv != 0) {
        snprintf(err, errlen, "out of memory");
        return rv;
    }
    if ((srv->clusters = calloc(cfg->n_clusters, sizeof(*srv->clusters))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLB_ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        srv->n_clusters++; /* disposed on a failed start too */
        if ((rv = slb_cluster_init(&srv->clusters[i], &srv->ctx, &cfg->clusters[i], slb_call_wake)) != 0) {
            snprintf(err, errlen, "cluster %s: %s", cfg->clusters[i].name, slb_strerror(rv));
            return rv;
        }
        srv->clusters[i].index = (uint32_t)i;
        if ((rv = slb_method_stats_init(&srv->clusters[i].method_stats, cfg->metrics_max_methods)) != 0) {
            snprintf(err, errlen, "out of memory");
            return rv;
        }
        /* a reload: host names keep the addresses they had, no gap while they are looked up again */
        for (size_t j = 0; old != NULL && j < old->n_clusters; j++)
            if (strcmp(old->clusters[j].cfg->name, cfg->clusters[i].name) == 0)
                slb_cluster_seed_names(&srv->clusters[i], &old->clusters[j]);
        for (size_t j = 0; old != NULL && j < old->n_clusters; j++) /* a reload keeps admin drains */
            if (strcmp(old->clusters[j].cfg->name, cfg->clusters[i].name) == 0 &&
                (rv = slb_cluster_inherit_admin_drains(&srv->clusters[i], &old->clusters[j])) != 0) {
                snprintf(err, errlen, "cluster %s: %s", cfg->clusters[i].name, slb_strerror(rv));
                return rv;
            }
    }
    if ((rv = alloc_call_stats(srv)) != 0) {
        snprintf(err, errlen, "out of memory");
        return rv;
    }
    if (cfg->has_etcd) {
        if ((rv = slb_etcd_new(loop, &cfg->etcd, &srv->etcd)) != 0) {
            snprintf(err, errlen, "etcd client: %s", slb_strerror(rv));
            return rv;
        }
        for (size_t i = 0; i < srv->n_clusters; i++) {
            if ((rv = slb_cluster_start_discovery(&srv->clusters[i], srv->etcd)) != 0) {
                snprintf(err, errlen, "cluster %s: cannot follow etcd: %s", cfg->clusters[i].name, slb_strerror(rv));
                return rv;
            }
            struct slb_cluster *from = same_discovery(old, cfg, &cfg->clusters[i]);
            slb_cluster_seed_table(&srv->clusters[i], from, cfg->state_dir);
            if (from != NULL) /* host names in the table just taken over keep their addresses too */
                slb_cluster_seed_names(&srv->clusters[i], from);
        }
    }
    if (cfg->workers > 1 && (rv = slb_workers_start(&srv->workers, srv, cfg->workers, err, errlen)) != 0)
        return rv;
    if ((srv->listeners = calloc(cfg->n_listeners, sizeof(*srv->listeners))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLB_ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if ((rv = listener_start(srv, &srv->listeners[i], &cfg->listeners[i], old, err, errlen)) != 0)
            return rv;
    if (cfg->admin_address != NULL && (rv = slb_admin_start(&srv->admin, srv, cfg->admin_address, err, errlen)) != 0)
        return rv;
    if (cfg->access_log.path != NULL && srv->workers == NULL && /* else each worker writes its own lines */
        (rv = slb_access_log_open(&srv->ctx.access_log, loop, &cfg->access_log, err, errlen)) != 0)
        return rv;
    /* Last: advertise the host's services once everything else is up. */
    if (cfg->n_registers > 0 && srv->etcd != NULL &&
        (srv->registrar = slb_registrar_new(loop, srv->etcd, &srv->ctx.io, cfg->registers, cfg->n_registers)) == NULL) {
        snprintf(err, errlen, "registration failed to start");
        return SLB_ENOMEM;
    }
    if (srv->registrar != NULL && old != NULL && old->registrar != NULL)
        slb_registrar_inherit(srv->registrar, old->registrar); /* a reload keeps registration times */
    return 0;
}

static void on_ctx_closed(struct slb_loop_ctx *ctx)
{
    struct slb_server *srv = slb_container_of(ctx, struct slb_server, ctx);
    void (*cb)(struct slb_server *) = srv->on_stopped;

    srv->on_stopped = NULL;
    slb_access_log_close(srv->ctx.access_log); /* every call is gone: its last lines are in */
    srv->ctx.access_log = NULL;
    if (cb != NULL)
        cb(srv); /* may free srv */
}

/* Closes everything the server owns; on_stopped follows once every handle closed. */
static void server_finish(struct slb_server *srv)
{
    if (srv->finished)
        return;
    if (srv->reg_pending) {
        srv->finish_wanted = 1;
        return;
    }
    srv->finished = 1;
    if (srv->registrar != NULL) {
        slb_registrar_free(srv->registrar);
        srv->registrar = NULL;
    }
    if (srv->admin != NULL) {
        slb_admin_stop(srv->admin);
        srv->admin = NULL;
    }
    slb_conn_ctx_close_handle(&srv->ctx.io, (uv_handle_t *)&srv->stop_timer);
    slb_conn_ctx_close_handle(&srv->ctx.io, (uv_handle_t *)&srv->goaway_timer);
    if (srv->workers != NULL)
        slb_workers_close(srv->workers); /* their threads are joined: slb_workers_stop's callback */
    /* first the connections (their calls end), then the clusters' backends */
    slb_loop_ctx_close_connections(&srv->ctx);
    for (size_t i = 0; i < srv->n_clusters; i++)
        slb_cluster_dispose(&srv->clusters[i]);
    if (srv->etcd != NULL) {
        slb_etcd_free(srv->etcd);
        srv->etcd = NULL;
    }
    slb_loop_ctx_close(&srv->ctx, on_ctx_closed);
}

static void on_stop_timer(uv_timer_t *t)
{
    struct slb_server *srv = slb_container_of(t, struct slb_server, stop_timer);
    slb_warn("stop: grace period over with %u calls in flight; closing them", srv->ctx.n_calls);
    server_finish(srv);
}

static void on_registrar_down(void *user)
{
    struct slb_server *srv = user;
    srv->reg_pending = 0;
    if (srv->finish_wanted)
        server_finish(srv);
}

/* Graceful stop, second step: GOAWAY with the last stream taken; connections
 * close as their last call ends. Streams the app sent before it saw the
 * shutdown notice were still accepted. */
static void on_goaway_timer(uv_timer_t *t)
{
    slb_downstream_shutdown_all(&slb_container_of(t, struct slb_server, goaway_timer)->ctx);
}

#define GOAWAY_NOTICE_MS 250

static void on_workers_stopped(struct slb_workers *ws)
{
    server_finish(ws->srv);
}

void slb_server_stop(struct slb_server *srv, uint64_t grace_ms, void (*on_stopped)(struct slb_server *))
{
    if (srv->stopping)
        return;
    srv->stopping = 1;
    srv->on_stopped = on_stopped;
    if (srv->registrar != NULL) {
        srv->reg_pending = 1;
        slb_registrar_shutdown(srv->registrar, on_registrar_down, srv);
    }
    for (size_t i = 0; i < srv->n_listeners; i++) {
        struct slb_listener *l = &srv->listeners[i];
        if (l->cfg != NULL && l->cfg->unix_path != NULL)
            slb_unix_file_remove(&l->file, l->cfg->address);
        slb_conn_ctx_close_handle(&srv->ctx.io, (uv_handle_t *)&l->tcp);
        if (srv->workers != NULL) { /* the acceptor: a poll handle, its timer, and the socket it does not own */
            slb_conn_ctx_close_handle(&srv->ctx.io, (uv_handle_t *)&l->accept_pause);
            if (l->fd >= 0)
                close(l->fd);
            l->fd = -1;
        }
    }
    if (srv->workers != NULL) {
        /* the workers drain their app connections; this server finishes when the last one stopped */
        slb_workers_stop(srv->workers, grace_ms, on_workers_stopped);
        return;
    }
    if (slb_list_empty(&srv->ctx.downstreams)) {
        server_finish(srv);
        return;
    }
    uv_timer_start(&srv->stop_timer, on_stop_timer, grace_ms, 0);
    /* First a shutdown notice (GOAWAY with the largest stream id): apps stop
     * opening streams here, and streams already on the wire still count. */
    slb_downstream_notice_all(&srv->ctx);
    uv_timer_start(&srv->goaway_timer, on_goaway_timer, grace_ms < GOAWAY_NOTICE_MS ? grace_ms : GOAWAY_NOTICE_MS, 0);
}

void slb_server_admin_release(struct slb_server *srv)
{
    if (srv->admin != NULL) {
        slb_admin_stop(srv->admin);
        srv->admin = NULL;
    }
}

int slb_server_admin_restore(struct slb_server *srv, char *err, size_t errlen)
{
    if (srv->admin != NULL || srv->cfg->admin_address == NULL)
        return 0;
    return slb_admin_start(&srv->admin, srv, srv->cfg->admin_address, err, errlen);
}

void slb_server_retire(struct slb_server *old, const struct slb_config *next, uint64_t grace_ms,
                       void (*on_stopped)(struct slb_server *))
{
    if (old->registrar != NULL && next != NULL)
        slb_registrar_hand_over(old->registrar, next->registers, next->n_registers);
    for (size_t i = 0; i < old->n_clusters; i++)
        slb_cluster_persist_stop(&old->clusters[i]); /* the new server writes the tables now */
    /* socket files the new server took over are its own now */
    for (size_t i = 0; next != NULL && i < old->n_listeners; i++)
        for (size_t j = 0; j < next->n_listeners; j++)
            if (strcmp(old->listeners[i].cfg->address, next->listeners[j].address) == 0)
                old->listeners[i].file.owned = 0;
    slb_server_stop(old, grace_ms, on_stopped);
}

void slb_server_reopen_logs(struct slb_server *srv)
{
    if (srv->workers != NULL)
        slb_workers_reopen_logs(srv->workers);
    slb_access_log_reopen(srv->ctx.access_log);
}

void slb_server_dispose(struct slb_server *srv)
{
    slb_workers_free(srv->workers);
    srv->workers = NULL;
    slb_call_free_list_drain(&srv->ctx);
    free(srv->ctx.stats.calls_by_code);
    srv->ctx.stats.calls_by_code = NULL;
    slb_loop_ctx_dispose(&srv->ctx);
    for (size_t i = 0; i < srv->n_clusters; i++)
        slb_method_stats_dispose(&srv->clusters[i].method_stats);
    free(srv->clusters);
    for (size_t i = 0; srv->listeners != NULL && i < srv->cfg->n_listeners; i++)
        free(srv->listeners[i].routes.v); /* also of a listener whose start failed (not counted in n_listeners) */
    free(srv->listeners);
    slb_chunk_pool_drain();
    slb_h2_mem_drain();
}
