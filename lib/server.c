#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "buf.h"
#include "cluster.h"
#include "common.h"
#include "config.h"
#include "etcd.h"
#include "register.h"
#include "h2_downstream.h"
#include "h2_upstream.h"
#include "log.h"
#include "proxy.h"

static void on_connection(uv_stream_t *s, int status)
{
    struct slb_listener *l = slb_container_of(s, struct slb_listener, tcp);
    int rv;

    if (status < 0) {
        slb_warn("listener %s: accept error: %s", l->cfg->address, slb_strerror(status));
        return;
    }
    if ((rv = slb_downstream_accept(l)) != 0)
        slb_warn("listener %s: cannot accept: %s", l->cfg->address, slb_strerror(rv));
}

struct slb_cluster *slb_listener_route(const struct slb_listener *l, const uint8_t *path, size_t len)
{
    const uint8_t *svc, *slash;
    size_t svclen;

    if (len < 2 || path[0] != '/')
        return l->default_cluster;
    svc = path + 1;
    slash = memchr(svc, '/', len - 1);
    svclen = slash != NULL ? (size_t)(slash - svc) : len - 1;
    /* a "pkg.Service/Method" route wins over a "pkg.Service" one */
    for (size_t i = 0; i < l->n_routes; i++) {
        const struct slb_route *r = &l->routes[i];
        if (r->len == len - 1 && memcmp(r->service, svc, r->len) == 0)
            return r->cluster;
    }
    for (size_t i = 0; i < l->n_routes; i++) {
        const struct slb_route *r = &l->routes[i];
        if (r->len == svclen && memcmp(r->service, svc, svclen) == 0)
            return r->cluster;
    }
    return l->default_cluster;
}

/* The listening socket of the running server at the same address, if any. */
static int inherited_fd(const struct slb_server *old, const char *address)
{
    uv_os_fd_t fd;

    for (size_t i = 0; old != NULL && i < old->n_listeners; i++)
        if (strcmp(old->listeners[i].cfg->address, address) == 0 &&
            uv_fileno((const uv_handle_t *)&old->listeners[i].tcp, &fd) == 0)
            return fd;
    return -1;
}

static int listener_start(struct slb_server *srv, struct slb_listener *l, const struct slb_config_listener *cfg,
                          const struct slb_server *old, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    unsigned sslen;
    int rv, fd;

    l->srv = srv;
    l->cfg = cfg;
    if ((l->routes = calloc(cfg->n_routes + 1, sizeof(*l->routes))) == NULL)
        return SLB_ENOMEM;
    l->n_routes = cfg->n_routes;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        l->routes[i].service = cfg->routes[i].service;
        l->routes[i].len = strlen(cfg->routes[i].service);
        l->routes[i].cluster = &srv->clusters[cfg->routes[i].cluster_index];
    }
    l->default_cluster = cfg->default_cluster_index >= 0 ? &srv->clusters[cfg->default_cluster_index] : NULL;
    if (slb_parse_addr(cfg->address, &ss, &sslen) != 0) {
        snprintf(err, errlen, "listener %s: invalid address", cfg->address);
        return SLB_EADDR;
    }
    uv_tcp_init(srv->loop, &l->tcp);
    srv->n_listeners++; /* from here on, stopping the server closes the handle */
    if ((fd = inherited_fd(old, cfg->address)) >= 0) {
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

int slb_server_start(struct slb_server *srv, uv_loop_t *loop, const struct slb_config *cfg, char *err, size_t errlen)
{
    return slb_server_start_reload(srv, loop, cfg, NULL, err, errlen);
}

int slb_server_start_reload(struct slb_server *srv, uv_loop_t *loop, const struct slb_config *cfg,
                            const struct slb_server *old, char *err, size_t errlen)
{
    int rv;

    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    srv->rng = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)srv << 16);
    slb_conn_ctx_init(&srv->io, loop);
    slb_deadline_init(&srv->deadlines, loop, slb_call_on_deadline);
    if ((srv->down_cbs = slb_downstream_callbacks_new()) == NULL ||
        (srv->up_cbs = slb_upstream_callbacks_new()) == NULL || nghttp2_option_new(&srv->down_opt) != 0 ||
        nghttp2_option_new(&srv->up_opt) != 0) {
        snprintf(err, errlen, "out of memory");
        return SLB_ENOMEM;
    }
    /* End-to-end flow control: windows reopen only as the other side takes the bytes. */
    nghttp2_option_set_no_auto_window_update(srv->down_opt, 1);
    nghttp2_option_set_no_auto_window_update(srv->up_opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(srv->up_opt, 100);

    if ((srv->clusters = calloc(cfg->n_clusters, sizeof(*srv->clusters))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLB_ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        srv->n_clusters++; /* disposed on a failed start too */
        if ((rv = slb_cluster_init(&srv->clusters[i], srv, &cfg->clusters[i])) != 0) {
            snprintf(err, errlen, "cluster %s: %s", cfg->clusters[i].name, slb_strerror(rv));
            return rv;
        }
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
        }
    }
    if ((srv->listeners = calloc(cfg->n_listeners, sizeof(*srv->listeners))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLB_ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if ((rv = listener_start(srv, &srv->listeners[i], &cfg->listeners[i], old, err, errlen)) != 0)
            return rv;
    if (cfg->admin_address != NULL && (rv = slb_admin_start(&srv->admin, srv, cfg->admin_address, err, errlen)) != 0)
        return rv;
    /* Last: advertise the host's services once everything else is up. */
    if (cfg->n_registers > 0 && srv->etcd != NULL &&
        (srv->registrar = slb_registrar_new(loop, srv->etcd, &srv->io, cfg->registers, cfg->n_registers)) == NULL) {
        snprintf(err, errlen, "registration failed to start");
        return SLB_ENOMEM;
    }
    return 0;
}

static void server_finish(struct slb_server *srv)
{
    void (*cb)(struct slb_server *) = srv->on_stopped;

    if (srv->reg_pending) {
        srv->finish_wanted = 1;
        return;
    }
    if (cb == NULL)
        return;
    if (srv->registrar != NULL) {
        slb_registrar_free(srv->registrar);
        srv->registrar = NULL;
    }
    srv->on_stopped = NULL;
    if (srv->admin != NULL) {
        slb_admin_stop(srv->admin);
        srv->admin = NULL;
    }
    uv_timer_stop(&srv->stop_timer);
    uv_close((uv_handle_t *)&srv->stop_timer, NULL);
    uv_close((uv_handle_t *)&srv->goaway_timer, NULL);
    /* force-close what is left */
    while (srv->downstreams != NULL)
        slb_conn_close(&srv->downstreams->conn, 0);
    for (size_t i = 0; i < srv->n_clusters; i++)
        slb_cluster_dispose(&srv->clusters[i]);
    if (srv->etcd != NULL) {
        slb_etcd_free(srv->etcd);
        srv->etcd = NULL;
    }
    slb_conn_ctx_close(&srv->io);
    slb_deadline_close(&srv->deadlines);
    cb(srv);
}

static void on_stop_timer(uv_timer_t *t)
{
    struct slb_server *srv = t->data;
    slb_warn("stop: grace period over with %u calls in flight; closing them", srv->n_calls);
    server_finish(srv);
}

void slb_server_downstream_gone(struct slb_server *srv)
{
    if (srv->stopping && srv->downstreams == NULL)
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
    struct slb_server *srv = t->data;
    struct slb_downstream *dc, *next;

    srv->goaway_final = 1;
    for (dc = srv->downstreams; dc != NULL; dc = next) {
        next = dc->next;
        slb_downstream_shutdown(dc);
    }
}

#define GOAWAY_NOTICE_MS 250

void slb_server_stop(struct slb_server *srv, uint64_t grace_ms, void (*on_stopped)(struct slb_server *))
{
    if (srv->stopping)
        return;
    srv->stopping = 1;
    if (srv->registrar != NULL) {
        srv->reg_pending = 1;
        slb_registrar_shutdown(srv->registrar, on_registrar_down, srv);
    }
    srv->on_stopped = on_stopped;
    for (size_t i = 0; i < srv->n_listeners; i++)
        uv_close((uv_handle_t *)&srv->listeners[i].tcp, NULL);
    uv_timer_init(srv->loop, &srv->stop_timer);
    srv->stop_timer.data = srv;
    uv_timer_start(&srv->stop_timer, on_stop_timer, grace_ms, 0);
    uv_timer_init(srv->loop, &srv->goaway_timer);
    srv->goaway_timer.data = srv;
    if (srv->downstreams == NULL) {
        server_finish(srv);
        return;
    }
    /* First a shutdown notice (GOAWAY with the largest stream id): apps stop
     * opening streams here, and streams already on the wire still count. */
    for (struct slb_downstream *dc = srv->downstreams; dc != NULL; dc = dc->next)
        if (!dc->conn.closing) {
            nghttp2_submit_shutdown_notice(dc->conn.session);
            slb_conn_mark_dirty(&dc->conn);
        }
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
    slb_server_stop(old, grace_ms, on_stopped);
}

void slb_server_dispose(struct slb_server *srv)
{
    while (srv->free_calls != NULL) {
        struct slb_call *c = srv->free_calls;
        srv->free_calls = c->d_next;
        free(c);
    }
    slb_deadline_dispose(&srv->deadlines);
    free(srv->clusters);
    for (size_t i = 0; i < srv->n_listeners; i++)
        free(srv->listeners[i].routes);
    free(srv->listeners);
    nghttp2_session_callbacks_del(srv->down_cbs);
    nghttp2_session_callbacks_del(srv->up_cbs);
    nghttp2_option_del(srv->down_opt);
    nghttp2_option_del(srv->up_opt);
    slb_chunk_pool_drain();
    slb_h2_mem_drain();
}
