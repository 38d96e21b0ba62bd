/*
 * The admin listener's operator actions and readiness (the HTTP side stays
 * in admin.c). Pure over the server's clusters: no I/O here.
 *
 *   POST /clusters/<cluster>/backends/<address>/drain           no new calls; calls in flight finish
 *   POST /clusters/<cluster>/backends/<address>/undrain         takes calls again
 *   POST /clusters/<cluster>/backends/<address>/clear_ejection  ends an outlier ejection now
 *
 * <cluster> and <address> may be percent-encoded ("[::1]:50051" as is, or
 * "%5B%3A%3A1%5D%3A50051"). Actions and GET /config are refused (403)
 * unless the request comes over loopback: the admin listener may be bound
 * elsewhere for scrapers, and only the host itself may change routing.
 *
 * An admin drain lives on the backend object: it survives etcd updates of
 * the backend (a separate bit from etcd's "drain") and a reload (the new
 * cluster of the same name inherits it: slb_cluster_inherit_admin_drains),
 * ends when discovery removes the backend, and is lost on a restart; to
 * drain across that, and on every host, use etcd's "drain": true.
 */
#ifndef SLB_ADMIN_ACTIONS_H
#define SLB_ADMIN_ACTIONS_H

#include <stddef.h>
#include <sys/socket.h>

struct slb_server;

/* What an action answers. Owner: the caller (on its stack). */
struct slb_admin_answer {
    int status;        /* HTTP status */
    const char *allow; /* "Allow: ...\r\n" header for 405, else NULL */
    char body[512];    /* one line of text, '\n'-terminated */
};

/* Whether a peer may use the actions and GET /config: loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) or AF_UNIX. */
int slb_admin_peer_trusted(const struct sockaddr *sa);

/*
 * Serves an action path. Returns 0 when path is not one (under /clusters/,
 * the caller answers 404), else 1 with ans filled: 200 done, 400 bad
 * encoding, 403 the peer is not trusted (nothing done), 404 unknown
 * cluster/backend/action, 405 not POST.
 */
int slb_admin_action(struct slb_server *srv, int is_post, int trusted, const char *path, size_t path_len,
                     struct slb_admin_answer *ans);

/*
 * GET /ready: 200 when the server is not stopping, its listeners are bound
 * (they are once it runs) and every cluster's first discovery is done
 * (static at once, etcd after its first listing); else 503 naming the
 * first cluster not discovered yet, or "stopping".
 */
void slb_admin_ready(const struct slb_server *srv, struct slb_admin_answer *ans);

#endif
