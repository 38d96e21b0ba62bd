#include "etcd.h"

#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base64.h"
#include "common.h"
#include "curl_uv.h"
#include "list.h"
#include "log.h"
#include "rng.h"

enum req_kind { REQ_RANGE, REQ_PUT, REQ_DELETE, REQ_GRANT, REQ_KEEPALIVE, REQ_REVOKE, REQ_COMPACT, REQ_TXN_PUT };

/* One unary request; owned by the client (in etcd->reqs) until its callback has run. */
struct req {
    struct slb_list link; /* in etcd->reqs */
    struct slb_etcd *etcd;
    int kind; /* enum req_kind */
    const char *path;
    char *body;
    CURL *easy;
    struct curl_slist *headers;
    char *resp;
    size_t resp_len, resp_cap;
    int overflow;
    int ep;       /* endpoint index of the transfer in flight */
    int attempts; /* endpoints tried */
    int authing;  /* the transfer in flight is /v3/auth/authenticate */
    int reauthed;
    char errbuf[CURL_ERROR_SIZE]; /* curl's detail of a failure (e.g. the TLS alert) */
    union {
        slb_etcd_range_cb range;
        slb_etcd_done_cb done;
        slb_etcd_lease_cb lease;
    } cb;
    void *user;
};

/* The watcher's states (one setter: watch_set_state). */
enum watch_state { W_LISTING, W_STARTING, W_WATCHING, W_BACKOFF, W_STOPPED };
static const char *const watch_state_names[] = {"listing", "starting", "watching", "backoff", "stopped"};

/* Owned by the caller of slb_etcd_watch_start(); listed in etcd->watches; freed in its timer's close callback. */
struct slb_etcd_watch {
    struct slb_list link; /* in etcd->watches */
    struct slb_etcd *etcd;
    char *prefix, *range_end;
    size_t prefix_len, range_end_len;
    struct slb_etcd_watch_cbs cbs;
    void *user;
    int state;     /* enum watch_state */
    int connected; /* last reported reachability */
    int64_t rev;   /* everything up to rev has been delivered */
    struct req *listing;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    char *line; /* bounded line buffer of the stream */
    size_t line_len, line_cap;
    int ep;
    char errbuf[CURL_ERROR_SIZE]; /* curl's detail of a failure */
    int in_write;                 /* inside curl's write callback */
    int abort_err;                /* why the write callback aborted the stream */
    int relist;                   /* the resume point was compacted */
    uint32_t backoff_ms;
    uv_timer_t timer; /* backoff and "created" deadline */
};

/* Owned by its creator (see etcd.h). */
struct slb_etcd {
    uv_loop_t *loop;
    struct slb_curl_uv *cu;
    char **endpoints;
    int n_endpoints;
    int cur; /* endpoint in use */
    long dial_timeout_ms, request_timeout_ms;
    char *username, *password, *ca_file, *cert_file, *key_file;
    char *token;             /* auth token, NULL until authenticated */
    uint8_t *ep_down;        /* per endpoint: its last request failed in transport (log once per change) */
    uint32_t (*ep_errs)[4];  /* per endpoint: hashes of the errors logged since it went down */
    struct slb_list reqs;    /* struct req */
    struct slb_list watches; /* struct slb_etcd_watch */
    struct slb_rng rng;      /* watch retry jitter */
    struct slb_etcd_stats stats;
};

#define WATCH_BACKOFF_MIN_MS 100
#define WATCH_BACKOFF_MAX_MS 1000

/* ---- small helpers ---- */

size_t slb_etcd_prefix_end(const char *prefix, size_t len, char *out)
{
    while (len > 0 && (unsigned char)prefix[len - 1] == 0xff)
        len--;
    if (len == 0) {
        out[0] = '\0';
        return 1;
    }
    memcpy(out, prefix, len);
    out[len - 1] = (char)((unsigned char)out[len - 1] + 1);
    return len;
}

static char *b64(const void *p, size_t n)
{
    char *s = malloc(SLB_BASE64_ENCODED_SIZE(n));
    if (s != NULL)
        slb_base64_encode(p, n, s);
    return s;
}

static int64_t get_i64(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    if (json_is_integer(v))
        return json_integer_value(v);
    return 0;
}

/* Decodes a base64 bytes field (missing = empty) into a fresh NUL-terminated buffer. */
static int get_bytes(json_t *obj, const char *name, char **out, size_t *len)
{
    json_t *v = json_object_get(obj, name);
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    size_t sl = strlen(s);
    unsigned char *buf = malloc(sl / 4 * 3 + 1);
    long n;

    if (buf == NULL)
        return SLB_ENOMEM;
    if (v != NULL && !json_is_string(v))
        n = SLB_EPROTO;
    else
        n = slb_base64_decode(s, sl, buf);
    if (n < 0) {
        free(buf);
        return (int)n;
    }
    *out = (char *)buf;
    *len = (size_t)n;
    return 0;
}

static void kv_dispose(struct slb_etcd_kv *kv)
{
    free(kv->key);
    free(kv->value);
}

static int kv_parse(json_t *o, struct slb_etcd_kv *kv)
{
    int err;

    memset(kv, 0, sizeof(*kv));
    if (!json_is_object(o))
        return SLB_EPROTO;
    if ((err = get_bytes(o, "key", &kv->key, &kv->key_len)) != 0)
        return err;
    if ((err = get_bytes(o, "value", &kv->value, &kv->value_len)) != 0) {
        free(kv->key);
        kv->key = NULL;
        return err;
    }
    kv->create_revision = get_i64(o, "create_revision");
    kv->mod_revision = get_i64(o, "mod_revision");
    kv->version = get_i64(o, "version");
    kv->lease = get_i64(o, "lease");
    return 0;
}

static void range_result_dispose(struct slb_etcd_range_result *r)
{
    for (size_t i = 0; i < r->n; i++)
        kv_dispose(&r->kvs[i]);
    free(r->kvs);
}

static int range_result_parse(json_t *root, struct slb_etcd_range_result *r)
{
    json_t *kvs = json_object_get(root, "kvs");
    size_t i;
    int err;

    memset(r, 0, sizeof(*r));
    r->revision = get_i64(json_object_get(root, "header"), "revision");
    if (kvs == NULL)
        return 0;
    if (!json_is_array(kvs))
        return SLB_EPROTO;
    if (json_array_size(kvs) > 0 && (r->kvs = calloc(json_array_size(kvs), sizeof(*r->kvs))) == NULL)
        return SLB_ENOMEM;
    for (i = 0; i < json_array_size(kvs); i++) {
        if ((err = kv_parse(json_array_get(kvs, i), &r->kvs[i])) != 0) {
            range_result_dispose(r);
            return err;
        }
        r->n = i + 1;
    }
    return 0;
}

static int curl_err(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_CONNECT:
        return UV_ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        return UV_ETIMEDOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
        return UV_EAI_NONAME;
    case CURLE_WRITE_ERROR:
        return SLB_ELIMIT;
    default:
        return UV_EIO;
    }
}

/* A transfer to endpoint idx failed at the connection level: move everyone to the next endpoint. */
static void endpoint_failed(struct slb_etcd *e, int idx)
{
    if (e->cur == idx && e->n_endpoints > 1) {
        e->cur = (e->cur + 1) % e->n_endpoints;
        slb_info("etcd: failing over from %s to %s", e->endpoints[idx], e->endpoints[e->cur]);
    }
}

static int sockopt_cb(void *clientp, curl_socket_t fd, curlsocktype purpose)
{
    /* Detect dead peers of long streams: keepalive after 5 s idle, 3 probes 2 s apart. */
    int on = 1, idle = 5, intvl = 2, cnt = 3;
    unsigned user_timeout = 15000;

    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
    return CURL_SOCKOPT_OK;
}

/* Common options of every transfer to endpoint idx. */
static CURL *easy_new(struct slb_etcd *e, int idx, const char *path, const char *body, struct curl_slist **headers,
                      int with_token)
{
    char url[512];
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL, *t;

    if (c == NULL)
        return NULL;
    snprintf(url, sizeof(url), "%s%s", e->endpoints[idx], path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, e->dial_timeout_ms);
    curl_easy_setopt(c, CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (e->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, e->ca_file);
    if (e->cert_file)
        curl_easy_setopt(c, CURLOPT_SSLCERT, e->cert_file);
    if (e->key_file)
        curl_easy_setopt(c, CURLOPT_SSLKEY, e->key_file);
    if ((t = curl_slist_append(h, "Content-Type: application/json")) == NULL)
        goto fail;
    h = t;
    if ((t = curl_slist_append(h, "Expect:")) == NULL)
        goto fail;
    h = t;
    if (with_token && e->token != NULL) {
        char auth[1024];
        snprintf(auth, sizeof(auth), "Authorization: %s", e->token);
        if ((t = curl_slist_append(h, auth)) == NULL)
            goto fail;
        h = t;
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    *headers = h;
    return c;
fail:
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

/* ---- unary requests ---- */

static size_t req_write(char *p, size_t size, size_t n, void *ud)
{
    struct req *r = ud;
    size_t len = size * n;

    if (r->resp_len + len + 1 > SLB_ETCD_MAX_RESPONSE) {
        r->overflow = 1;
        return 0;
    }
    if (r->resp_len + len + 1 > r->resp_cap) {
        size_t cap = r->resp_cap ? r->resp_cap : 4096;
        while (cap < r->resp_len + len + 1)
            cap *= 2;
        char *nb = realloc(r->resp, cap);
        if (nb == NULL)
            return 0;
        r->resp = nb;
        r->resp_cap = cap;
    }
    memcpy(r->resp + r->resp_len, p, len);
    r->resp_len += len;
    r->resp[r->resp_len] = '\0';
    return len;
}

static void req_unlink_transfer(struct req *r)
{
    if (r->easy != NULL) {
        slb_curl_uv_remove(r->etcd->cu, r->easy);
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
    }
    curl_slist_free_all(r->headers);
    r->headers = NULL;
}

static void req_free(struct req *r)
{
    req_unlink_transfer(r);
    slb_list_remove(&r->link);
    free(r->body);
    free(r->resp);
    free(r);
}

static void req_complete(struct req *r, int err, json_t *root)
{
    switch (r->kind) {
    case REQ_RANGE: {
        struct slb_etcd_range_result res;
        if (err == 0 && (err = range_result_parse(root, &res)) == 0) {
            r->cb.range(r->user, 0, &res);
            range_result_dispose(&res);
        } else {
            r->cb.range(r->user, err, NULL);
        }
        break;
    }
    case REQ_PUT:
    case REQ_DELETE:
    case REQ_REVOKE:
    case REQ_COMPACT:
        r->cb.done(r->user, err, err ? 0 : get_i64(json_object_get(root, "header"), "revision"),
                   err ? 0 : get_i64(root, "deleted"));
        break;
    case REQ_TXN_PUT: /* grpc-gateway leaves out "succeeded" when it is false */
        if (err == 0 && !json_is_true(json_object_get(root, "succeeded")))
            err = SLB_ECONFLICT;
        r->cb.done(r->user, err, err ? 0 : get_i64(json_object_get(root, "header"), "revision"), 0);
        break;
    case REQ_GRANT:
    case REQ_KEEPALIVE: {
        json_t *res = r->kind == REQ_KEEPALIVE ? json_object_get(root, "result") : root;
        int64_t id = 0, ttl = 0;
        if (err == 0 && !json_is_object(res))
            err = SLB_EPROTO;
        if (err == 0) {
            id = get_i64(res, "ID");
            ttl = get_i64(res, "TTL");
            if (ttl <= 0)
                err = SLB_ENOTFOUND;
        }
        r->cb.lease(r->user, err, id, ttl);
        break;
    }
    }
}

static void req_done(CURL *easy, CURLcode result, void *ud);

static int req_send(struct req *r)
{
    struct slb_etcd *e = r->etcd;
    char *auth_body = NULL;
    const char *path = r->path, *body = r->body;
    int err;

    r->ep = e->cur;
    r->resp_len = 0;
    r->overflow = 0;
    r->authing = e->username != NULL && e->token == NULL;
    if (r->authing) {
        json_t *j = json_pack("{ssss}", "name", e->username, "password", e->password ? e->password : "");
        auth_body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (auth_body == NULL)
            return SLB_ENOMEM;
        path = "/v3/auth/authenticate";
        body = auth_body;
    }
    r->easy = easy_new(e, r->ep, path, body, &r->headers, !r->authing);
    if (r->easy == NULL) {
        free(auth_body);
        return SLB_ENOMEM;
    }
    if (auth_body != NULL)
        curl_easy_setopt(r->easy, CURLOPT_COPYPOSTFIELDS, auth_body);
    free(auth_body);
    r->errbuf[0] = '\0';
    curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, e->request_timeout_ms);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, req_write);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    if ((err = slb_curl_uv_add(e->cu, r->easy, req_done, r)) != 0) {
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
        curl_slist_free_all(r->headers);
        r->headers = NULL;
        return err;
    }
    return 0;
}

static void req_fail(struct req *r, int err)
{
    req_complete(r, err, NULL);
    req_free(r);
}

/* Whether this error text is new for the endpoint since it went down (remembers up to 4 kinds). */
static int endpoint_error_is_new(struct slb_etcd *e, int ep, const char *why)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (const char *p = why; *p != '\0'; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    h |= 1; /* 0 marks a free slot */
    for (int i = 0; i < 4; i++) {
        if (e->ep_errs[ep][i] == h)
            return 0;
        if (e->ep_errs[ep][i] == 0) {
            e->ep_errs[ep][i] = h;
            return 1;
        }
    }
    return 0;
}

static void req_done(CURL *easy, CURLcode result, void *ud)
{
    struct req *r = ud;
    struct slb_etcd *e = r->etcd;
    long status = 0;
    json_t *root = NULL, *msg;
    int err;

    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    curl_slist_free_all(r->headers);
    r->headers = NULL;

    if (result == CURLE_OK && status != 0 && e->ep_down[r->ep]) {
        slb_notice("etcd %s: answering again", e->endpoints[r->ep]);
        e->ep_down[r->ep] = 0;
        memset(e->ep_errs[r->ep], 0, sizeof(e->ep_errs[r->ep]));
    }
    if (result == CURLE_OK && status != 0) {
        root = json_loadb(r->resp ? r->resp : "", r->resp_len, 0, NULL);
        if (json_is_object(root))
            e->stats.last_ok_ms = uv_now(e->loop);
        else
            e->stats.errors[SLB_ETCD_ERR_PROTOCOL]++;
        if (!json_is_object(root)) {
            slb_warn("etcd %s%s: HTTP %ld: not an etcd answer (%zu bytes)", e->endpoints[r->ep], r->path, status,
                     r->resp_len);
            json_decref(root);
            root = NULL;
            result = CURLE_WEIRD_SERVER_REPLY;
        }
    }
    if (result != CURLE_OK) {
        if (result != CURLE_WEIRD_SERVER_REPLY)
            e->stats.errors[r->overflow ? SLB_ETCD_ERR_PROTOCOL : SLB_ETCD_ERR_TRANSPORT]++;
        if (r->overflow) {
            slb_warn("etcd %s%s: response larger than %u bytes", e->endpoints[r->ep], r->path, SLB_ETCD_MAX_RESPONSE);
            req_fail(r, SLB_ELIMIT);
            return;
        }
        {
            /* loud on each new kind of failure of an endpoint, quiet while it repeats */
            const char *why = r->errbuf[0] ? r->errbuf : curl_easy_strerror(result);
            int loud = endpoint_error_is_new(e, r->ep, why);
            slb_log(loud ? SLB_LOG_WARN : SLB_LOG_DEBUG, "etcd %s%s: %s%s", e->endpoints[r->ep], r->path, why,
                    r->attempts + 1 < e->n_endpoints ? " (trying the next endpoint)" : "");
            e->ep_down[r->ep] = 1;
        }
        endpoint_failed(e, r->ep);
        if (++r->attempts < e->n_endpoints && (err = req_send(r)) == 0)
            return;
        req_fail(r, curl_err(result));
        return;
    }
    if (status == 200) {
        if (r->authing) {
            json_t *tok = json_object_get(root, "token");
            if (!json_is_string(tok)) {
                json_decref(root);
                req_fail(r, SLB_EPROTO);
                return;
            }
            free(e->token);
            e->token = strdup(json_string_value(tok));
            json_decref(root);
            if (e->token == NULL || (err = req_send(r)) != 0)
                req_fail(r, e->token == NULL ? SLB_ENOMEM : err);
            return;
        }
        req_complete(r, 0, root);
        json_decref(root);
        req_free(r);
        return;
    }
    msg = json_object_get(root, "error");
    int64_t code = get_i64(root, "code");
    if (!r->authing && !r->reauthed && e->username != NULL && (status == 401 || code == 16)) {
        /* token expired or revoked: authenticate again, once */
        r->reauthed = 1;
        free(e->token);
        e->token = NULL;
        json_decref(root);
        if ((err = req_send(r)) != 0)
            req_fail(r, err);
        return;
    }
    if (json_is_string(msg))
        /* rejected credentials or permissions are config errors: warn (other etcd errors are routine) */
        slb_log(r->authing || code == 7 || code == 16 ? SLB_LOG_WARN : SLB_LOG_INFO, "etcd %s%s: HTTP %ld: %s",
                e->endpoints[r->ep], r->authing ? "/v3/auth/authenticate" : r->path, status, json_string_value(msg));
    else
        slb_warn("etcd %s%s: HTTP %ld: unexpected answer (%zu bytes)", e->endpoints[r->ep], r->path, status,
                 r->resp_len);
    err = root == NULL || status == 200 ? SLB_EPROTO : code == 5 ? SLB_ENOTFOUND : SLB_EETCD;
    e->stats.errors[err == SLB_EPROTO ? SLB_ETCD_ERR_PROTOCOL : SLB_ETCD_ERR_ETCD]++;
    json_decref(root);
    req_fail(r, err);
}

static struct req *req_start(struct slb_etcd *e, int kind, const char *path, json_t *body, void *cb, void *user,
                             int *errp)
{
    struct req *r = calloc(1, sizeof(*r));
    int err;

    if (r == NULL || body == NULL || (r->body = json_dumps(body, JSON_COMPACT)) == NULL) {
        json_decref(body);
        free(r);
        *errp = SLB_ENOMEM;
        return NULL;
    }
    json_decref(body);
    r->etcd = e;
    r->kind = kind;
    r->path = path;
    r->user = user;
    switch (kind) {
    case REQ_RANGE:
        r->cb.range = (slb_etcd_range_cb)cb;
        break;
    case REQ_GRANT:
    case REQ_KEEPALIVE:
        r->cb.lease = (slb_etcd_lease_cb)cb;
        break;
    default:
        r->cb.done = (slb_etcd_done_cb)cb;
    }
    slb_list_push_back(&e->reqs, &r->link);
    if ((err = req_send(r)) != 0) {
        req_free(r);
        *errp = err;
        return NULL;
    }
    *errp = 0;
    return r;
}

/* {"key":..., "range_end":...} for a key or a prefix. */
static json_t *key_body(const char *key, size_t len, int prefix)
{
    json_t *j = json_object();
    char *k = b64(key, len), *end = NULL;

    if (prefix) {
        char *raw = malloc(len + 1);
        if (raw != NULL) {
            size_t el = slb_etcd_prefix_end(key, len, raw);
            end = b64(raw, el);
        }
        free(raw);
    }
    if (j == NULL || k == NULL || (prefix && end == NULL) || json_object_set_new(j, "key", json_string(k)) != 0 ||
        (prefix && json_object_set_new(j, "range_end", json_string(end)) != 0)) {
        json_decref(j);
        j = NULL;
    }
    free(k);
    free(end);
    return j;
}

static json_t *id_body(const char *name, int64_t v)
{
    char s[32];
    snprintf(s, sizeof(s), "%lld", (long long)v);
    return json_pack("{ss}", name, s);
}

int slb_etcd_range(struct slb_etcd *e, const char *key, size_t key_len, int prefix, slb_etcd_range_cb cb, void *user)
{
    int err;
    req_start(e, REQ_RANGE, "/v3/kv/range", key_body(key, key_len, prefix), (void *)cb, user, &err);
    return err;
}

int slb_etcd_put(struct slb_etcd *e, const char *key, size_t key_len, const char *value, size_t value_len,
                 int64_t lease, slb_etcd_done_cb cb, void *user)
{
    json_t *j = key_body(key, key_len, 0);
    char *v = b64(value, value_len);
    int err;

    if (j == NULL || v == NULL || json_object_set_new(j, "value", json_string(v)) != 0) {
        json_decref(j);
        free(v);
        return SLB_ENOMEM;
    }
    free(v);
    if (lease != 0) {
        char s[32];
        snprintf(s, sizeof(s), "%lld", (long long)lease);
        json_object_set_new(j, "lease", json_string(s));
    }
    req_start(e, REQ_PUT, "/v3/kv/put", j, (void *)cb, user, &err);
    return err;
}

int slb_etcd_put_if_unchanged(struct slb_etcd *e, const char *key, size_t key_len, const char *value, size_t value_len,
                              int64_t lease, int64_t mod_revision, slb_etcd_done_cb cb, void *user)
{
    json_t *put = key_body(key, key_len, 0), *j = NULL;
    char *k = b64(key, key_len), *v = b64(value, value_len), s[32];
    int err;

    if (put == NULL || k == NULL || v == NULL || json_object_set_new(put, "value", json_string(v)) != 0)
        goto nomem;
    if (lease != 0) {
        snprintf(s, sizeof(s), "%lld", (long long)lease);
        json_object_set_new(put, "lease", json_string(s));
    }
    snprintf(s, sizeof(s), "%lld", (long long)mod_revision);
    /* compare: a missing key has mod_revision 0 */
    j = json_pack("{s:[{s:s, s:s, s:s, s:s}], s:[{s:O}]}", "compare", "key", k, "target", "MOD", "result", "EQUAL",
                  "mod_revision", s, "success", "request_put", put);
    if (j == NULL)
        goto nomem;
    json_decref(put);
    free(k);
    free(v);
    req_start(e, REQ_TXN_PUT, "/v3/kv/txn", j, (void *)cb, user, &err);
    return err;
nomem:
    json_decref(put);
    free(k);
    free(v);
    return SLB_ENOMEM;
}

int slb_etcd_delete(struct slb_etcd *e, const char *key, size_t key_len, int prefix, slb_etcd_done_cb cb, void *user)
{
    int err;
    req_start(e, REQ_DELETE, "/v3/kv/deleterange", key_body(key, key_len, prefix), (void *)cb, user, &err);
    return err;
}

int slb_etcd_lease_grant(struct slb_etcd *e, int64_t ttl_s, slb_etcd_lease_cb cb, void *user)
{
    int err;
    req_start(e, REQ_GRANT, "/v3/lease/grant", id_body("TTL", ttl_s), (void *)cb, user, &err);
    return err;
}

int slb_etcd_lease_keepalive(struct slb_etcd *e, int64_t id, slb_etcd_lease_cb cb, void *user)
{
    int err;
    req_start(e, REQ_KEEPALIVE, "/v3/lease/keepalive", id_body("ID", id), (void *)cb, user, &err);
    return err;
}

int slb_etcd_lease_revoke(struct slb_etcd *e, int64_t id, slb_etcd_done_cb cb, void *user)
{
    int err;
    req_start(e, REQ_REVOKE, "/v3/lease/revoke", id_body("ID", id), (void *)cb, user, &err);
    return err;
}

int slb_etcd_compact(struct slb_etcd *e, int64_t revision, slb_etcd_done_cb cb, void *user)
{
    int err;
    json_t *j = id_body("revision", revision);
    if (j != NULL)
        json_object_set_new(j, "physical", json_true());
    req_start(e, REQ_COMPACT, "/v3/kv/compaction", j, (void *)cb, user, &err);
    return err;
}

/* ---- client ---- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int slb_etcd_new(uv_loop_t *loop, const struct slb_config_etcd *cfg, struct slb_etcd **out)
{
    struct slb_etcd *e;
    int err;

    if (cfg == NULL || cfg->n_endpoints == 0)
        return SLB_ECONFIG;
    if ((e = calloc(1, sizeof(*e))) == NULL)
        return SLB_ENOMEM;
    e->loop = loop;
    slb_list_init(&e->reqs);
    slb_list_init(&e->watches);
    slb_rng_seed(&e->rng, slb_rng_seed_from_os());
    e->dial_timeout_ms = cfg->dial_timeout_ms ? cfg->dial_timeout_ms : 2000;
    e->request_timeout_ms = cfg->request_timeout_ms ? cfg->request_timeout_ms : 5000;
    if ((e->endpoints = calloc(cfg->n_endpoints, sizeof(char *))) == NULL ||
        (e->ep_down = calloc(cfg->n_endpoints, 1)) == NULL ||
        (e->ep_errs = calloc(cfg->n_endpoints, sizeof(*e->ep_errs))) == NULL) {
        err = SLB_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < cfg->n_endpoints; i++) {
        size_t l = strlen(cfg->endpoints[i]);
        if ((e->endpoints[i] = strdup(cfg->endpoints[i])) == NULL) {
            err = SLB_ENOMEM;
            goto fail;
        }
        e->n_endpoints++;
        if (l > 0 && e->endpoints[i][l - 1] == '/')
            e->endpoints[i][l - 1] = '\0';
        if (strncmp(e->endpoints[i], "http://", 7) != 0 && strncmp(e->endpoints[i], "https://", 8) != 0) {
            slb_error("etcd endpoint \"%s\": expected http://host:port or https://host:port", cfg->endpoints[i]);
            err = SLB_ECONFIG;
            goto fail;
        }
    }
    e->username = dup_or_null(cfg->username);
    e->password = dup_or_null(cfg->password);
    e->ca_file = dup_or_null(cfg->ca_file);
    e->cert_file = dup_or_null(cfg->cert_file);
    e->key_file = dup_or_null(cfg->key_file);
    if ((err = slb_curl_uv_new(loop, &e->cu)) != 0)
        goto fail;
    *out = e;
    return 0;
fail:
    e->cu = NULL;
    slb_etcd_free(e);
    return err;
}

void slb_etcd_free(struct slb_etcd *e)
{
    if (e == NULL)
        return;
    while (!slb_list_empty(&e->watches))
        slb_etcd_watch_stop(slb_list_first(&e->watches, struct slb_etcd_watch, link));
    while (!slb_list_empty(&e->reqs))
        req_free(slb_list_first(&e->reqs, struct req, link));
    slb_curl_uv_free(e->cu);
    for (int i = 0; i < e->n_endpoints; i++)
        free(e->endpoints[i]);
    free(e->endpoints);
    free(e->ep_down);
    free(e->ep_errs);
    free(e->username);
    free(e->password);
    free(e->ca_file);
    free(e->cert_file);
    free(e->key_file);
    free(e->token);
    free(e);
}

const struct slb_etcd_stats *slb_etcd_stats(const struct slb_etcd *e)
{
    return &e->stats;
}

const char *slb_etcd_endpoint(const struct slb_etcd *e)
{
    return e->endpoints[e->cur];
}

/* ---- watch ---- */

static void watch_set_state(struct slb_etcd_watch *w, int state)
{
    if (w->state == state)
        return;
    slb_debug("etcd watch %.*s: %s -> %s", (int)w->prefix_len, w->prefix, watch_state_names[w->state],
              watch_state_names[state]);
    w->state = state;
}

/* Reports reachability once per change; returns nonzero if the watch was stopped by the callback. */
static int watch_set_connected(struct slb_etcd_watch *w, int connected, const char *why)
{
    if (w->connected == connected)
        return 0;
    w->connected = connected;
    if (connected)
        slb_notice("etcd watch %.*s: connected to %s at revision %lld", (int)w->prefix_len, w->prefix,
                   w->etcd->endpoints[w->ep], (long long)w->rev);
    else
        slb_warn("etcd watch %.*s: disconnected from %s: %s (retrying, failing over)", (int)w->prefix_len, w->prefix,
                 w->etcd->endpoints[w->ep], why);
    if (w->cbs.state != NULL)
        w->cbs.state(w->user, connected);
    return w->state == W_STOPPED;
}

static void watch_list(struct slb_etcd_watch *w);
static void watch_connect(struct slb_etcd_watch *w);

static void watch_drop_stream(struct slb_etcd_watch *w)
{
    if (w->easy != NULL) {
        slb_curl_uv_remove(w->etcd->cu, w->easy);
        curl_easy_cleanup(w->easy);
        w->easy = NULL;
    }
    curl_slist_free_all(w->headers);
    w->headers = NULL;
    free(w->body);
    w->body = NULL;
    w->line_len = 0;
}

static void on_backoff(uv_timer_t *t)
{
    struct slb_etcd_watch *w = slb_container_of(t, struct slb_etcd_watch, timer);

    /* no token while auth is on: list (unary requests authenticate) rather than watch anonymously */
    if (w->relist || w->rev == 0 || (w->etcd->username != NULL && w->etcd->token == NULL))
        watch_list(w);
    else
        watch_connect(w);
}

/* The stream or the listing failed: wait, then retry on the next endpoint. */
static void watch_retry(struct slb_etcd_watch *w, int failover, const char *why)
{
    uint32_t d;

    watch_drop_stream(w);
    if (failover)
        endpoint_failed(w->etcd, w->ep);
    if (w->connected) {
        if (watch_set_connected(w, 0, why))
            return;
    } else {
        slb_debug("etcd watch %.*s: %s: %s", (int)w->prefix_len, w->prefix, w->etcd->endpoints[w->ep], why);
    }
    d = w->backoff_ms;
    d = d - d / 5 + (uint32_t)slb_rng_bounded(slb_rng_next(&w->etcd->rng), d / 5 * 2 + 1); /* +-20% jitter */
    w->backoff_ms = w->backoff_ms * 2 > WATCH_BACKOFF_MAX_MS ? WATCH_BACKOFF_MAX_MS : w->backoff_ms * 2;
    watch_set_state(w, W_BACKOFF);
    uv_timer_start(&w->timer, on_backoff, d, 0);
}

static void on_listed(void *user, int err, const struct slb_etcd_range_result *res)
{
    struct slb_etcd_watch *w = user;

    w->listing = NULL;
    if (err != 0) {
        char why[128];
        snprintf(why, sizeof(why), "listing failed: %s", slb_strerror(err));
        w->ep = w->etcd->cur;
        watch_retry(w, 0, why);
        return;
    }
    w->relist = 0;
    w->rev = res->revision;
    w->cbs.reset(w->user, res);
    if (w->state == W_STOPPED)
        return;
    watch_connect(w);
}

static void watch_list(struct slb_etcd_watch *w)
{
    int err;

    watch_set_state(w, W_LISTING);
    w->ep = w->etcd->cur;
    w->listing = req_start(w->etcd, REQ_RANGE, "/v3/kv/range", key_body(w->prefix, w->prefix_len, 1), (void *)on_listed,
                           w, &err);
    if (w->listing == NULL)
        watch_retry(w, 0, slb_strerror(err));
}

/* Handles one message of the stream; 0, or an error that ends the stream. */
static int watch_message(struct slb_etcd_watch *w, const char *line, size_t len)
{
    json_t *root = json_loadb(line, len, 0, NULL), *res, *evs;
    int err = 0;

    if (!json_is_object(root)) {
        json_decref(root);
        w->etcd->stats.errors[SLB_ETCD_ERR_PROTOCOL]++;
        slb_warn("etcd watch %.*s: %s sent garbage: %.*s", (int)w->prefix_len, w->prefix, w->etcd->endpoints[w->ep],
                 (int)(len > 80 ? 80 : len), line);
        return SLB_EPROTO;
    }
    w->etcd->stats.last_ok_ms = uv_now(w->etcd->loop);
    res = json_object_get(root, "result");
    if (!json_is_object(res)) {
        w->etcd->stats.errors[SLB_ETCD_ERR_ETCD]++;
        json_t *e = json_object_get(root, "error");
        json_t *m = json_is_object(e) ? json_object_get(e, "message") : NULL;
        slb_warn("etcd watch %.*s: %s: %s", (int)w->prefix_len, w->prefix, w->etcd->endpoints[w->ep],
                 json_is_string(m) ? json_string_value(m) : "unexpected message");
        json_decref(root);
        return SLB_EETCD;
    }
    int64_t rev = get_i64(json_object_get(res, "header"), "revision");
    if (json_is_true(json_object_get(res, "canceled"))) {
        int64_t compact = get_i64(res, "compact_revision");
        if (compact > 0) {
            slb_notice("etcd watch %.*s: revision %lld compacted (at %lld): listing again", (int)w->prefix_len,
                       w->prefix, (long long)w->rev + 1, (long long)compact);
            w->relist = 1;
        } else {
            json_t *why = json_object_get(res, "cancel_reason");
            w->etcd->stats.errors[SLB_ETCD_ERR_ETCD]++;
            slb_warn("etcd watch %.*s: %s: watch canceled: %s", (int)w->prefix_len, w->prefix,
                     w->etcd->endpoints[w->ep], json_is_string(why) ? json_string_value(why) : "no reason given");
            if (w->etcd->username != NULL) {
                /* e.g. the token expired or etcd restarted: log in again (on_backoff lists first) */
                free(w->etcd->token);
                w->etcd->token = NULL;
            }
        }
        json_decref(root);
        return SLB_EETCD;
    }
    if (json_is_true(json_object_get(res, "created"))) {
        uv_timer_stop(&w->timer);
        w->backoff_ms = WATCH_BACKOFF_MIN_MS;
        watch_set_state(w, W_WATCHING);
        if (watch_set_connected(w, 1, NULL)) {
            json_decref(root);
            return 0;
        }
    }
    evs = json_object_get(res, "events");
    if (json_is_array(evs) && json_array_size(evs) > 0) {
        size_t n = json_array_size(evs), i;
        struct slb_etcd_event *ev = calloc(n, sizeof(*ev));
        if (ev == NULL) {
            json_decref(root);
            return SLB_ENOMEM;
        }
        for (i = 0; i < n && err == 0; i++) {
            json_t *je = json_array_get(evs, i), *t = json_object_get(je, "type");
            ev[i].type =
                json_is_string(t) && strcmp(json_string_value(t), "DELETE") == 0 ? SLB_ETCD_DELETE : SLB_ETCD_PUT;
            err = kv_parse(json_object_get(je, "kv"), &ev[i].kv);
        }
        if (err == 0) {
            if (rev == 0)
                rev = ev[n - 1].kv.mod_revision;
            w->etcd->stats.events += n;
            w->cbs.events(w->user, rev, ev, n);
        }
        for (i = 0; i < n; i++)
            kv_dispose(&ev[i].kv);
        free(ev);
    }
    if (err == 0 && rev > w->rev && w->state == W_WATCHING)
        w->rev = rev;
    json_decref(root);
    return err;
}

static size_t watch_write(char *p, size_t size, size_t n, void *ud)
{
    struct slb_etcd_watch *w = ud;
    size_t len = size * n, i = 0;
    long status = 0;

    curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        slb_warn("etcd watch %.*s: %s: HTTP %ld: %.*s", (int)w->prefix_len, w->prefix, w->etcd->endpoints[w->ep],
                 status, (int)(len > 120 ? 120 : len), p);
        w->etcd->stats.errors[SLB_ETCD_ERR_ETCD]++;
        w->abort_err = SLB_EETCD;
        return 0;
    }
    w->in_write = 1;
    while (i < len && w->state != W_STOPPED) {
        char *nl = memchr(p + i, '\n', len - i);
        size_t chunk = (nl ? (size_t)(nl - (p + i)) : len - i);
        if (w->line_len + chunk > SLB_ETCD_MAX_WATCH_MSG) {
            slb_warn("etcd watch %.*s: message larger than %u bytes", (int)w->prefix_len, w->prefix,
                     SLB_ETCD_MAX_WATCH_MSG);
            w->etcd->stats.errors[SLB_ETCD_ERR_PROTOCOL]++;
            w->abort_err = SLB_ELIMIT;
            break;
        }
        if (w->line_len + chunk + 1 > w->line_cap) {
            size_t cap = w->line_cap ? w->line_cap : 4096;
            while (cap < w->line_len + chunk + 1)
                cap *= 2;
            char *nb = realloc(w->line, cap);
            if (nb == NULL) {
                w->abort_err = SLB_ENOMEM;
                break;
            }
            w->line = nb;
            w->line_cap = cap;
        }
        memcpy(w->line + w->line_len, p + i, chunk);
        w->line_len += chunk;
        i += chunk;
        if (nl == NULL)
            break;
        i++; /* the newline */
        size_t l = w->line_len;
        w->line_len = 0;
        if (l > 0 && (w->abort_err = watch_message(w, w->line, l)) != 0)
            break;
    }
    w->in_write = 0;
    return w->abort_err != 0 || w->state == W_STOPPED ? 0 : len;
}

static void watch_free_cb(uv_handle_t *h)
{
    struct slb_etcd_watch *w = slb_container_of(h, struct slb_etcd_watch, timer);
    free(w->prefix);
    free(w->range_end);
    free(w->line);
    free(w);
}

static void watch_release(struct slb_etcd_watch *w)
{
    watch_drop_stream(w);
    uv_close((uv_handle_t *)&w->timer, watch_free_cb);
}

static void watch_done(CURL *easy, CURLcode result, void *ud)
{
    struct slb_etcd_watch *w = ud;
    char why[CURL_ERROR_SIZE + 32];

    curl_easy_cleanup(w->easy);
    w->easy = NULL;
    if (w->state == W_STOPPED) {
        watch_release(w);
        return;
    }
    if (w->relist) {
        /* compacted: list again right away (no backoff) */
        watch_drop_stream(w);
        uv_timer_stop(&w->timer);
        watch_list(w);
        return;
    }
    if (w->abort_err != 0)
        snprintf(why, sizeof(why), "%s", slb_strerror(w->abort_err));
    else if (result != CURLE_OK)
        snprintf(why, sizeof(why), "%s", w->errbuf[0] ? w->errbuf : curl_easy_strerror(result));
    else
        snprintf(why, sizeof(why), "stream ended");
    if (w->abort_err == 0)
        w->etcd->stats.errors[SLB_ETCD_ERR_TRANSPORT]++; /* the stream broke or ended (aborts are counted already) */
    watch_retry(w, 1, why);
}

static void on_created_timeout(uv_timer_t *t)
{
    struct slb_etcd_watch *w = slb_container_of(t, struct slb_etcd_watch, timer);
    char why[96];

    snprintf(why, sizeof(why), "no answer within %ld ms", w->etcd->request_timeout_ms);
    slb_warn("etcd watch %.*s: %s: %s", (int)w->prefix_len, w->prefix, w->etcd->endpoints[w->ep], why);
    watch_retry(w, 1, why);
}

static void watch_connect(struct slb_etcd_watch *w)
{
    struct slb_etcd *e = w->etcd;
    char *key = b64(w->prefix, w->prefix_len), *end = b64(w->range_end, w->range_end_len), rev[32];
    json_t *j;
    int err = SLB_ENOMEM;

    snprintf(rev, sizeof(rev), "%lld", (long long)w->rev + 1);
    j = key && end ? json_pack("{s{sssssssb}}", "create_request", "key", key, "range_end", end, "start_revision", rev,
                               "progress_notify", 1)
                   : NULL;
    free(key);
    free(end);
    w->body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    w->ep = e->cur;
    w->abort_err = 0;
    w->line_len = 0;
    watch_set_state(w, W_STARTING);
    if (w->body == NULL || (w->easy = easy_new(e, w->ep, "/v3/watch", w->body, &w->headers, 1)) == NULL)
        goto fail;
    w->errbuf[0] = '\0';
    curl_easy_setopt(w->easy, CURLOPT_ERRORBUFFER, w->errbuf);
    curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, watch_write);
    curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w);
    if ((err = slb_curl_uv_add(e->cu, w->easy, watch_done, w)) != 0)
        goto fail;
    uv_timer_start(&w->timer, on_created_timeout, (uint64_t)e->request_timeout_ms, 0);
    return;
fail:
    if (w->easy != NULL) {
        curl_easy_cleanup(w->easy);
        w->easy = NULL;
    }
    watch_retry(w, 0, slb_strerror(err));
}

int slb_etcd_watch_start(struct slb_etcd *e, const char *prefix, size_t prefix_len,
                         const struct slb_etcd_watch_cbs *cbs, void *user, struct slb_etcd_watch **out)
{
    struct slb_etcd_watch *w = calloc(1, sizeof(*w));
    int err;

    if (w == NULL)
        return SLB_ENOMEM;
    w->etcd = e;
    w->cbs = *cbs;
    w->user = user;
    w->backoff_ms = WATCH_BACKOFF_MIN_MS;
    w->prefix = malloc(prefix_len + 1);
    w->range_end = malloc(prefix_len + 1);
    if (w->prefix == NULL || w->range_end == NULL) {
        free(w->prefix);
        free(w->range_end);
        free(w);
        return SLB_ENOMEM;
    }
    memcpy(w->prefix, prefix, prefix_len);
    w->prefix[prefix_len] = '\0';
    w->prefix_len = prefix_len;
    w->range_end_len = slb_etcd_prefix_end(prefix, prefix_len, w->range_end);
    if ((err = uv_timer_init(e->loop, &w->timer)) != 0) {
        free(w->prefix);
        free(w->range_end);
        free(w);
        return err;
    }
    slb_list_push_back(&e->watches, &w->link);
    /* Start listing on the next loop turn so no callback can run before we return. */
    w->relist = 1;
    watch_set_state(w, W_BACKOFF);
    uv_timer_start(&w->timer, on_backoff, 0, 0);
    *out = w;
    return 0;
}

void slb_etcd_watch_stop(struct slb_etcd_watch *w)
{
    if (w->state == W_STOPPED)
        return;
    watch_set_state(w, W_STOPPED);
    slb_list_remove(&w->link);
    uv_timer_stop(&w->timer);
    if (w->listing != NULL) {
        req_free(w->listing);
        w->listing = NULL;
    }
    if (w->in_write) /* the write callback aborts the transfer; watch_done releases */
        return;
    watch_release(w);
}

int64_t slb_etcd_watch_revision(const struct slb_etcd_watch *w)
{
    return w->rev;
}
