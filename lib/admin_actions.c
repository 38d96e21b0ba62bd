/* Operator actions of the admin listener (see admin_actions.h). */
#include "admin_actions.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "cluster.h"
#include "config.h"
#include "log.h"
#include "scrape.h"
#include "server.h"
#include "worker.h"

int slb_admin_peer_trusted(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_UNIX)
        return 1;
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0, n) into out (NUL-terminated). 0, or -1 for bad escapes, NUL, '/' or too long. */
static int decode_segment(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= n || (hi = hexval(s[i + 1])) < 0 || (lo = hexval(s[i + 2])) < 0)
                return -1;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (ch == 0 || ch == '/' || o + 1 >= outlen)
            return -1;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return o > 0 ? 0 : -1;
}

/* The next '/'-separated segment of [*p, end): sets seg/len, advances *p past it and its '/'. */
static void next_segment(const char **p, const char *end, const char **seg, size_t *len)
{
    const char *s = *p, *slash = memchr(s, '/', (size_t)(end - s));

    *seg = s;
    *len = (size_t)((slash ? slash : end) - s);
    *p = slash ? slash + 1 : end;
}

__attribute__((format(printf, 3, 4))) static int answer(struct slb_admin_answer *a, int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(a->body, sizeof(a->body), fmt, ap);
    va_end(ap);
    a->status = status;
    return 1;
}
#define ANSWER answer

static struct slb_cluster *find_cluster(struct slb_server *srv, const char *name)
{
    for (size_t i = 0; i < srv->n_clusters; i++)
        if (strcmp(srv->clusters[i].cfg->name, name) == 0)
            return &srv->clusters[i];
    return NULL;
}

int slb_admin_action(struct slb_server *srv, int is_post, int trusted, const char *path, size_t path_len,
                     struct slb_admin_answer *ans)
{
    static const char prefix[] = "/clusters/";
    const char *p = path + sizeof(prefix) - 1, *end = path + path_len, *seg;
    char cname[128], addr[SLB_BACKEND_NAME_MAX], action[32];
    struct slb_cluster *cl;
    struct slb_backend *be;
    size_t len;

    memset(ans, 0, sizeof(*ans));
    if (path_len <= sizeof(prefix) - 1 || memcmp(path, prefix, sizeof(prefix) - 1) != 0)
        return 0;
    next_segment(&p, end, &seg, &len);
    if (decode_segment(seg, len, cname, sizeof(cname)) != 0)
        return ANSWER(ans, 400, "bad cluster name in the path\n");
    next_segment(&p, end, &seg, &len);
    if (len != 8 || memcmp(seg, "backends", 8) != 0)
        return ANSWER(ans, 404, "not found (try POST /clusters/<cluster>/backends/<address>/drain)\n");
    next_segment(&p, end, &seg, &len);
    if (decode_segment(seg, len, addr, sizeof(addr)) != 0)
        return ANSWER(ans, 400, "bad backend address in the path\n");
    next_segment(&p, end, &seg, &len);
    if (p != end || len == 0 || len >= sizeof(action))
        return ANSWER(ans, 404, "not found (actions: drain, undrain, clear_ejection)\n");
    memcpy(action, seg, len);
    action[len] = '\0';
    if (strcmp(action, "drain") != 0 && strcmp(action, "undrain") != 0 && strcmp(action, "clear_ejection") != 0)
        return ANSWER(ans, 404, "unknown action \"%s\" (actions: drain, undrain, clear_ejection)\n", action);
    if (!is_post) {
        ans->allow = "Allow: POST\r\n";
        return ANSWER(ans, 405, "method not allowed: actions are POST\n");
    }
    if (!trusted) {
        slb_notice("admin: %s of %s/%s refused: the peer is not on loopback", action, cname, addr);
        return ANSWER(ans, 403, "forbidden: admin actions are accepted over loopback only\n");
    }
    if ((cl = find_cluster(srv, cname)) == NULL)
        return ANSWER(ans, 404, "no cluster \"%s\"\n", cname);
    if ((be = slb_cluster_find(cl, addr)) == NULL)
        return ANSWER(ans, 404, "cluster %s has no backend %s\n", cname, addr);
    if (strcmp(action, "clear_ejection") == 0) {
        int was = slb_cluster_clear_ejection(cl, be);
        slb_workers_sync(srv->workers); /* the next call, on any worker, sees it */
        return ANSWER(ans, 200, "cluster %s backend %s: %s\n", cname, addr,
                      was ? "ejection cleared" : "was not ejected");
    }
    slb_cluster_set_drain(cl, be, SLB_DRAIN_ADMIN, action[0] == 'd');
    slb_workers_sync(srv->workers); /* the next call, on any worker, sees it */
    if (action[0] == 'd')
        return ANSWER(ans, 200, "cluster %s backend %s: drained (%u calls in flight finish there)\n", cname, addr,
                      slb_scrape_backend_outstanding(srv, cl, be));
    return ANSWER(ans, 200, "cluster %s backend %s: undrained%s\n", cname, addr,
                  be->drained & SLB_DRAIN_ETCD ? " by admin, still drained by etcd (\"drain\": true)" : "");
}

void slb_admin_ready(const struct slb_server *srv, struct slb_admin_answer *ans)
{
    memset(ans, 0, sizeof(*ans));
    if (srv->stopping) {
        ANSWER(ans, 503, "not ready: stopping\n");
        return;
    }
    for (size_t i = 0; i < srv->n_clusters; i++)
        if (!slb_cluster_discovered(&srv->clusters[i])) {
            ANSWER(ans, 503, "not ready: cluster %s has no answer from etcd yet\n", srv->clusters[i].cfg->name);
            return;
        }
    ANSWER(ans, 200, "ready\n");
}
