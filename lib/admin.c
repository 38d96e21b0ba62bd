/*
 * The admin listener (see admin.h). Each connection reads one request into a
 * fixed 8 KiB buffer until the blank line that ends the headers, answers it
 * with a single write, then half-closes and discards whatever the client
 * still sends for up to LINGER_MS before closing (nginx's lingering close: a
 * plain close with unread input would reset the connection and could destroy
 * the reply before the client read it, e.g. after a 431).
 *
 * Connection phases: READING -> WRITING -> LINGERING -> closed. A timer per
 * connection bounds READING (slow or idle clients get 408) and LINGERING.
 */
#include "admin.h"
#include "admin_actions.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "backend.h"
#include "buf.h"
#include "cluster.h"
#include "common.h"
#include "config.h"
#include "h2_upstream.h"
#include "health.h"
#include "hostport.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "scrape.h"
#include "server.h"
#include "state_file.h"
#include "unix_socket.h"

#define LINGER_MS  2000
#define BODY_LIMIT ((size_t)64 << 20)

enum { PHASE_READING = 0, PHASE_WRITING, PHASE_LINGERING };

/* One admin connection. Owner: its slb_admin (list a->conns); freed once both handles closed. */
struct admin_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    struct slb_admin *admin;
    struct slb_list link; /* in admin->conns */
    struct slb_outbuf body;
    size_t len; /* bytes in req */
    size_t head_len;
    uint8_t phase, closing, open_handles;
    char head[320];
    char req[SLB_ADMIN_MAX_REQUEST];
};

/* Owner: the server (see admin.h); freed once the listener and every connection closed. */
struct slb_admin {
    union {
        uv_tcp_t tcp;   /* IP:port */
        uv_pipe_t pipe; /* unix:/path (its connections are accepted into uv_tcp_t all the same) */
    };
    struct slb_unix_file file; /* unix:/path: the socket file, removed on stop if still ours */
    struct slb_server *srv;
    struct slb_list conns; /* struct admin_conn */
    uint32_t n_conns;
    uint8_t stopping, listener_closed;
};

/* ---- /clusters ---- */

/* A JSON string; bytes that are not valid UTF-8 (a zone cut mid-character) become '?'. */
static json_t *jstr(const char *s)
{
    json_t *j = json_string(s);
    if (j == NULL) {
        char *copy = strdup(s);
        if (copy == NULL)
            return NULL;
        for (char *p = copy; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        j = json_string(copy);
        free(copy);
    }
    return j;
}

/* "stale", and for a stale table where it came from and how old it is (ms; null when unknown). */
static int put_table(json_t *c, const struct slb_cluster *cl)
{
    int64_t age = cl->table_as_of_unix_ms > 0 ? slb_unix_ms() - cl->table_as_of_unix_ms : -1;

    if (cl->table_as_of_unix_ms > 0 && age < 0)
        age = 0; /* written by a clock ahead of ours */

    if (json_object_set_new(c, "stale", json_boolean(cl->table_stale)) != 0)
        return -1;
    if (!cl->table_stale)
        return 0;
    if (json_object_set_new(c, "table_source", json_string(slb_table_source_name(cl->table_source))) != 0 ||
        json_object_set_new(c, "table_age_ms", age >= 0 ? json_integer(age) : json_null()) != 0)
        return -1;
    return 0;
}

/* Calls, connections and connectivity states are the loops' sums (lib/scrape.h); the rest the control's. */
static json_t *render_clusters(const struct slb_scrape *sc, uint64_t now)
{
    const struct slb_server *srv = sc->srv;
    json_t *arr = json_array();

    for (size_t i = 0; arr && i < srv->n_clusters; i++) {
        const struct slb_cluster *cl = &srv->clusters[i];
        const char *policy = cl->lb.ops ? cl->lb.ops->name : cl->cfg->policy ? cl->cfg->policy : "";
        json_t *bes = json_array();
        json_t *c = json_pack("{s:o, s:o, s:s, s:I, s:o}", "name", jstr(cl->cfg->name), "policy", jstr(policy), "state",
                              slb_backend_state_name(sc->clusters[i].state), "waiting",
                              (json_int_t)sc->clusters[i].n_waiting, "backends", bes);
        if (c == NULL || json_array_append_new(arr, c) != 0 || put_table(c, cl) != 0)
            goto fail;
        for (uint32_t j = 0; j < cl->set.n; j++) {
            const struct slb_backend *be = cl->set.items[j];
            const struct slb_scrape_backend *sb = &sc->clusters[i].backends[j];
            json_t *b = json_pack(
                "{s:o, s:I, s:o, s:s, s:s, s:b, s:b, s:I, s:b, s:I, s:I}", "address", jstr(be->name), "weight",
                (json_int_t)be->weight, "zone", jstr(be->zone), "state", slb_backend_state_name(sb->state), "health",
                slb_health_status_name(be->health), "healthy", slb_scrape_backend_usable(be, sb->state, now), "ejected",
                be->ejected_until_ms > now, "ejections", (json_int_t)be->ejections, "draining", be->draining != 0,
                "outstanding", (json_int_t)sb->outstanding, "connections", (json_int_t)sb->connections);
            if (b != NULL) /* an operator's drain (admin_actions.h), by source */
                json_object_set_new(b, "drained",
                                    json_pack("{s:b, s:b}", "admin", (be->drained & SLB_DRAIN_ADMIN) != 0, "etcd",
                                              (be->drained & SLB_DRAIN_ETCD) != 0));
            if (b != NULL && be->host_name != NULL) /* resolved from a host name (lib/resolver.h) */
                json_object_set_new(b, "host_name", jstr(be->host_name));
            if (b == NULL || json_array_append_new(bes, b) != 0)
                goto fail;
        }
    }
    return arr;
fail:
    json_decref(arr);
    return NULL;
}

/* ---- HTTP ---- */

static const char *status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

struct request {
    const char *method, *path;
    size_t method_len, path_len;
};

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/*
 * Parses the request line and checks the header lines of p[0, n) (the
 * request up to and including the blank line). 0, or 400 for a malformed request.
 */
static int parse_request(const char *p, size_t n, struct request *r)
{
    const char *end = p + n, *eol = memchr(p, '\n', n), *s = p, *lend;

    if (eol == NULL)
        return 400;
    lend = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
    /* method SP */
    r->method = s;
    while (s < lend && is_tchar((unsigned char)*s))
        s++;
    r->method_len = (size_t)(s - r->method);
    if (r->method_len == 0 || s == lend || *s != ' ')
        return 400;
    s++;
    /* origin-form target SP */
    if (s == lend || *s != '/')
        return 400;
    r->path = s;
    while (s < lend && (unsigned char)*s > ' ' && *s != 0x7f)
        s++;
    if (s == lend || *s != ' ')
        return 400;
    r->path_len = (size_t)(s - r->path);
    s++;
    /* HTTP-version, then end of line */
    if ((size_t)(lend - s) != 8 || (memcmp(s, "HTTP/1.1", 8) != 0 && memcmp(s, "HTTP/1.0", 8) != 0))
        return 400;
    /* header lines: "name: value" until the blank line */
    for (s = eol + 1; s < end;) {
        const char *nl = memchr(s, '\n', (size_t)(end - s)), *colon;
        size_t len;
        if (nl == NULL)
            return 400;
        len = (size_t)(nl - s) - (nl > s && nl[-1] == '\r');
        if (len == 0)
            break;
        colon = memchr(s, ':', len);
        if (colon == NULL || colon == s)
            return 400;
        for (const char *q = s; q < colon; q++)
            if (!is_tchar((unsigned char)*q))
                return 400;
        s = nl + 1;
    }
    /* the query string and fragment do not select anything */
    for (size_t i = 0; i < r->path_len; i++)
        if (r->path[i] == '?' || r->path[i] == '#') {
            r->path_len = i;
            break;
        }
    return 0;
}

static void conn_close(struct admin_conn *c);

static void on_write(uv_write_t *req, int status);

/* Sends status + headers + body (c->body, already filled), then lingers. */
static void respond(struct admin_conn *c, int status, const char *ctype, const char *extra, int head_only)
{
    uv_buf_t bufs[2];
    unsigned nbufs = 1;
    int n, rv;

    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    n = snprintf(c->head, sizeof(c->head),
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
                 "%sConnection: close\r\n\r\n",
                 status, status_text(status), ctype, c->body.len, extra ? extra : "");
    c->head_len = n > 0 && (size_t)n < sizeof(c->head) ? (size_t)n : 0;
    bufs[0] = uv_buf_init(c->head, (unsigned)c->head_len);
    if (!head_only && c->body.len > 0)
        bufs[nbufs++] = uv_buf_init((char *)c->body.base, (unsigned)c->body.len);
    c->phase = PHASE_WRITING;
    if ((rv = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write)) != 0) {
        slb_debug("admin: write: %s", slb_strerror(rv));
        conn_close(c);
    }
}

static void respond_text(struct admin_conn *c, int status, const char *text, const char *extra, int head_only)
{
    struct slb_textout o = {&c->body, BODY_LIMIT, 0};
    c->body.len = 0;
    slb_text_puts(&o, text);
    respond(c, status, "text/plain; charset=utf-8", extra, head_only || o.err != 0);
}

/* Whether the peer of c may use the actions and /config (admin_actions.h). */
static int peer_trusted(struct admin_conn *c)
{
    struct sockaddr_storage ss;
    int len = (int)sizeof(ss);

    return uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0 &&
           slb_admin_peer_trusted((const struct sockaddr *)&ss);
}

/* /ready, /config and the actions under /clusters/<name>/...; 1 when answered. */
static int handle_ops_request(struct admin_conn *c, const struct request *r, int head_only)
{
    struct slb_server *srv = c->admin->srv;
    int is_get = head_only || (r->method_len == 3 && memcmp(r->method, "GET", 3) == 0);
    int is_post = r->method_len == 4 && memcmp(r->method, "POST", 4) == 0;
    struct slb_admin_answer ans;

    if (r->path_len == 6 && memcmp(r->path, "/ready", 6) == 0) {
        if (!is_get) {
            respond_text(c, 405, "method not allowed\n", "Allow: GET, HEAD\r\n", 0);
            return 1;
        }
        slb_admin_ready(srv, &ans);
        respond_text(c, ans.status, ans.body, NULL, head_only);
        return 1;
    }
    if (r->path_len == 7 && memcmp(r->path, "/config", 7) == 0) {
        struct slb_textout o = {&c->body, BODY_LIMIT, 0};
        if (!is_get) {
            respond_text(c, 405, "method not allowed\n", "Allow: GET, HEAD\r\n", 0);
        } else if (!peer_trusted(c)) {
            slb_notice("admin: GET /config refused: the peer is not on loopback");
            respond_text(c, 403, "forbidden: /config is served over loopback only\n", NULL, head_only);
        } else {
            c->body.len = 0;
            slb_text_puts(&o, srv->cfg->redacted_json ? srv->cfg->redacted_json : "{}");
            slb_text_puts(&o, "\n");
            if (o.err != 0)
                respond_text(c, 500, "out of memory\n", NULL, head_only);
            else
                respond(c, 200, "application/json", NULL, head_only);
        }
        return 1;
    }
    if (r->path_len > 10 && memcmp(r->path, "/clusters/", 10) == 0) {
        if (!slb_admin_action(srv, is_post, peer_trusted(c), r->path, r->path_len, &ans))
            return 0;
        respond_text(c, ans.status, ans.body, ans.allow, head_only);
        return 1;
    }
    return 0;
}

static void handle_request(struct admin_conn *c, size_t n)
{
    struct slb_server *srv = c->admin->srv;
    struct request r;
    int status = parse_request(c->req, n, &r), head_only;
    uint64_t now = uv_now(srv->loop);

    if (status != 0) {
        slb_debug("admin: malformed request");
        respond_text(c, status, "bad request\n", NULL, 0);
        return;
    }
    head_only = r.method_len == 4 && memcmp(r.method, "HEAD", 4) == 0;
    slb_debug("admin: %.*s %.*s", (int)r.method_len, r.method, (int)r.path_len, r.path);

#define PATH_IS(lit) (r.path_len == sizeof(lit) - 1 && memcmp(r.path, lit, sizeof(lit) - 1) == 0)
    if (handle_ops_request(c, &r, head_only))
        return;
    if (!PATH_IS("/healthz") && !PATH_IS("/metrics") && !PATH_IS("/clusters")) {
        respond_text(c, 404, "not found (try /healthz, /metrics, /clusters)\n", NULL, head_only);
        return;
    }
    if (!head_only && !(r.method_len == 3 && memcmp(r.method, "GET", 3) == 0)) {
        respond_text(c, 405, "method not allowed\n", "Allow: GET, HEAD\r\n", 0);
        return;
    }
    if (PATH_IS("/healthz")) {
        if (srv->stopping)
            respond_text(c, 503, "draining\n", NULL, head_only);
        else
            respond_text(c, 200, "ok\n", NULL, head_only);
    } else if (PATH_IS("/metrics")) {
        int err = slb_metrics_render(&c->body, srv, now);
        if (err != 0) {
            slb_warn("admin: /metrics: %s", slb_strerror(err));
            respond_text(c, 500, "out of memory\n", NULL, head_only);
        } else {
            respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, head_only);
        }
    } else {
        struct slb_textout o = {&c->body, BODY_LIMIT, 0};
        struct slb_scrape sc;
        json_t *j = slb_scrape_begin(&sc, srv, 0) == 0 ? render_clusters(&sc, now) : NULL;
        char *s = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
        json_decref(j);
        slb_scrape_end(&sc);
        if (s) {
            slb_text_puts(&o, s);
            slb_text_puts(&o, "\n");
            free(s);
        }
        if (s == NULL || o.err != 0) {
            slb_warn("admin: /clusters: out of memory");
            respond_text(c, 500, "out of memory\n", NULL, head_only);
        } else {
            respond(c, 200, "application/json", NULL, head_only);
        }
    }
#undef PATH_IS
}

/* ---- connection lifecycle ---- */

static void maybe_free_admin(struct slb_admin *a)
{
    if (a->stopping && a->listener_closed && slb_list_empty(&a->conns))
        free(a);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct admin_conn *c = h->data;
    struct slb_admin *a = c->admin;

    if (--c->open_handles > 0)
        return;
    slb_list_remove(&c->link);
    a->n_conns--;
    slb_outbuf_dispose(&c->body);
    free(c);
    maybe_free_admin(a);
}

static void conn_close(struct admin_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_timer(uv_timer_t *t)
{
    struct admin_conn *c = t->data;

    if (c->phase == PHASE_READING) {
        slb_debug("admin: request not received within %d ms", SLB_ADMIN_REQUEST_TIMEOUT_MS);
        respond_text(c, 408, "request timeout\n", NULL, 0);
    } else {
        conn_close(c);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct admin_conn *c = h->data;

    if (c->phase == PHASE_READING)
        *buf = uv_buf_init(c->req + c->len, (unsigned)(sizeof(c->req) - c->len));
    else /* lingering: the request is answered, the buffer only sinks input */
        *buf = uv_buf_init(c->req, (unsigned)sizeof(c->req));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct admin_conn *c = s->data;
    size_t from;

    if (c->closing)
        return;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0 || c->phase != PHASE_READING)
        return;
    from = c->len > 2 ? c->len - 2 : 0;
    c->len += (size_t)nread;
    /* the headers end at an empty line: "\n\n" or "\n\r\n" */
    for (size_t i = from; i < c->len; i++) {
        if (c->req[i] == '\n' && i >= 1 &&
            (c->req[i - 1] == '\n' || (i >= 2 && c->req[i - 1] == '\r' && c->req[i - 2] == '\n'))) {
            handle_request(c, i + 1);
            return;
        }
    }
    if (c->len == sizeof(c->req)) {
        slb_debug("admin: request over %d bytes", SLB_ADMIN_MAX_REQUEST);
        respond_text(c, 431, "request too large\n", NULL, 0);
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct admin_conn *c = req->data;

    if (status < 0)
        conn_close(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct admin_conn *c = req->data;
    int rv;

    if (c->closing)
        return;
    slb_outbuf_dispose(&c->body);
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* lingering close: send FIN, sink the client's input until it closes */
    c->phase = PHASE_LINGERING;
    if ((rv = uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown)) != 0 ||
        (rv = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct slb_admin *a = server->data;
    struct admin_conn *c;
    int rv;

    if (status < 0) {
        slb_warn("admin: accept: %s", slb_strerror(status));
        return;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        slb_warn("admin: accept: out of memory");
        return;
    }
    c->admin = a;
    uv_tcp_init(a->srv->loop, &c->tcp);
    uv_timer_init(a->srv->loop, &c->timer);
    c->tcp.data = c->timer.data = c->wreq.data = c->sreq.data = c;
    c->open_handles = 2;
    slb_list_push_back(&a->conns, &c->link);
    a->n_conns++;
    if ((rv = uv_accept(server, (uv_stream_t *)&c->tcp)) != 0) {
        slb_warn("admin: accept: %s", slb_strerror(rv));
        conn_close(c);
        return;
    }
    if (a->n_conns > SLB_ADMIN_MAX_CONNS) {
        slb_warn("admin: more than %d connections, closing one", SLB_ADMIN_MAX_CONNS);
        conn_close(c);
        return;
    }
    if ((rv = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer, SLB_ADMIN_REQUEST_TIMEOUT_MS, 0);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct slb_admin *a = h->data;
    a->listener_closed = 1;
    maybe_free_admin(a);
}

static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
    return 0;
}

/* "admin": {"address": "unix:/path"}: a Unix socket, mode 0660, the process's group (lib/unix_socket.h). */
static int admin_start_unix(struct slb_admin **out, struct slb_admin *a, const char *path, const char *addr, char *err,
                            size_t errlen)
{
    char what[192]; /* "admin unix:" and a path of up to 107 bytes */
    int fd, rv;

    snprintf(what, sizeof(what), "admin %s", addr);
    uv_pipe_init(a->srv->loop, &a->pipe, 0);
    a->pipe.data = a;
    if ((fd = slb_unix_socket_bind(&a->file, path, 0660, -1, what, err, errlen)) < 0) {
        rv = fd;
    } else if ((rv = uv_pipe_open(&a->pipe, fd)) != 0) {
        close(fd);
        snprintf(err, errlen, "%s: %s", what, slb_strerror(rv));
    } else if ((rv = uv_listen((uv_stream_t *)&a->pipe, 64, on_connection)) != 0) {
        snprintf(err, errlen, "%s: cannot listen: %s", what, slb_strerror(rv));
    }
    if (rv != 0) {
        slb_unix_file_remove(&a->file, what);
        a->stopping = 1;
        uv_close((uv_handle_t *)&a->pipe, on_listener_closed);
        return rv;
    }
    slb_notice("admin listening on %s", addr);
    *out = a;
    return 0;
}

int slb_admin_start(struct slb_admin **out, struct slb_server *srv, const char *addr, char *err, size_t errlen)
{
    const char *unix_path = slb_unix_path(addr, NULL);
    struct sockaddr_storage ss;
    unsigned sslen;
    struct slb_admin *a;
    int rv;

    *out = NULL;
    if (unix_path == NULL && slb_parse_addr(addr, &ss, &sslen) != 0) {
        snprintf(err, errlen, "admin: invalid address \"%s\"", addr);
        return SLB_EADDR;
    }
    if ((a = calloc(1, sizeof(*a))) == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return SLB_ENOMEM;
    }
    a->srv = srv;
    slb_list_init(&a->conns);
    if (unix_path != NULL)
        return admin_start_unix(out, a, unix_path, addr, err, errlen);
    if ((rv = uv_tcp_init(srv->loop, &a->tcp)) != 0) {
        snprintf(err, errlen, "admin %s: %s", addr, slb_strerror(rv));
        free(a);
        return rv;
    }
    a->tcp.data = a;
    if ((rv = uv_tcp_bind(&a->tcp, (const struct sockaddr *)&ss, 0)) != 0 ||
        (rv = uv_listen((uv_stream_t *)&a->tcp, 64, on_connection)) != 0) {
        snprintf(err, errlen, "admin %s: cannot listen: %s", addr, slb_strerror(rv));
        a->stopping = 1;
        uv_close((uv_handle_t *)&a->tcp, on_listener_closed);
        return rv;
    }
    if (!is_loopback(&ss))
        slb_warn("admin listener %s is not on loopback: anyone who can reach it reads the metrics", addr);
    slb_notice("admin listening on %s", addr);
    *out = a;
    return 0;
}

void slb_admin_stop(struct slb_admin *a)
{
    if (a == NULL || a->stopping)
        return;
    a->stopping = 1;
    slb_unix_file_remove(&a->file, "admin");
    uv_close((uv_handle_t *)&a->tcp, on_listener_closed);
    struct slb_list *it, *tmp;
    slb_list_foreach_safe(it, tmp, &a->conns)
    {
        conn_close(slb_list_entry(it, struct admin_conn, link));
    }
}
