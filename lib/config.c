/*
 * Configuration loader: jansson parses and catches syntax errors (with
 * JSON_REJECT_DUPLICATES); a schema walk below turns the tree into struct
 * slb_config, rejecting unknown keys, wrong types and out-of-range values.
 *
 * jansson keeps no position per value, so semantic errors get theirs from a
 * position index: one pass of a tiny tokenizer over the raw text records,
 * for every JSON path ("clusters[0].policy"), where its key and its value
 * start. Error messages look up the path they complain about; a path the
 * index lacks (a key with escapes, say) falls back to its nearest ancestor.
 */
#include <errno.h>
#include <sched.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common.h"
#include "config.h"
#include "config_effective.h"
#include "hostport.h"
#include "log.h"
#include "tls.h"

#define PATH_MAX_LEN     256
#define MAX_CONFIG_BYTES (16u << 20)
/* Deeper than this the tokenizer skips without indexing (bounded stack). */
#define INDEX_MAX_DEPTH 48

/* snprintf for paths and messages, where truncation is accepted (and gcc need not warn). */
__attribute__((format(printf, 3, 4))) static void bfmt(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, n, fmt, ap);
    va_end(ap);
}

/* Messages are one line: control characters (from keys like "a\\nb") become '?'. */
static void oneline(char *s)
{
    for (; s != NULL && *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

/* ---- position index ---------------------------------------------------- */

/* One indexed value; owned by struct pos_index. */
struct pos_entry {
    char *path;
    int kline, kcol; /* where its key starts (= value for array items and the root) */
    int vline, vcol; /* where its value starts */
};

/* All indexed paths of one document; owned by the load call. */
struct pos_index {
    struct pos_entry *v;
    size_t n, cap;
};

/* Tokenizer state over the raw text; lives on the stack of index_build(). */
struct scan {
    const char *s;
    size_t len, i;
    int line, col;
    struct pos_index *idx;
    size_t stop;                  /* byte offset at which to stop and remember the path */
    char stop_path[PATH_MAX_LEN]; /* innermost path being read at `stop` */
    int stopped;
};

static void index_free(struct pos_index *idx)
{
    for (size_t i = 0; i < idx->n; i++)
        free(idx->v[i].path);
    free(idx->v);
    memset(idx, 0, sizeof(*idx));
}

static void index_add(struct pos_index *idx, const char *path, int kl, int kc, int vl, int vc)
{
    if (idx->n == idx->cap) {
        size_t cap = idx->cap ? idx->cap * 2 : 64;
        struct pos_entry *v = realloc(idx->v, cap * sizeof(*v));
        if (v == NULL)
            return; /* positions are best effort; messages fall back to an ancestor */
        idx->v = v;
        idx->cap = cap;
    }
    char *p = strdup(path);
    if (p == NULL)
        return;
    idx->v[idx->n++] = (struct pos_entry){p, kl, kc, vl, vc};
}

static const struct pos_entry *index_find(const struct pos_index *idx, const char *path)
{
    for (size_t i = 0; i < idx->n; i++)
        if (strcmp(idx->v[i].path, path) == 0)
            return &idx->v[i];
    return NULL;
}

/* Columns count characters, not bytes, like jansson's: skip UTF-8 continuation bytes. */
static void sc_adv(struct scan *sc)
{
    unsigned char c = (unsigned char)sc->s[sc->i++];
    if (c == '\n') {
        sc->line++;
        sc->col = 1;
    } else if ((c & 0xC0) != 0x80) {
        sc->col++;
    }
}

static void sc_ws(struct scan *sc)
{
    while (sc->i < sc->len && strchr(" \t\r\n", sc->s[sc->i]) != NULL)
        sc_adv(sc);
}

/* The tokenizer met bad text itself: remember where, like a stop. */
static int sc_fail(struct scan *sc, const char *path)
{
    if (!sc->stopped) {
        bfmt(sc->stop_path, sizeof(sc->stop_path), "%s", path);
        sc->stopped = 1;
    }
    return -1;
}

static int sc_at_stop(struct scan *sc, const char *path)
{
    if (sc->i < sc->stop)
        return 0;
    bfmt(sc->stop_path, sizeof(sc->stop_path), "%s", path);
    sc->stopped = 1;
    return 1;
}

/* Reads a string token; copies its raw (unescaped) text into out if given. */
static int sc_string(struct scan *sc, char *out, size_t outlen)
{
    size_t o = 0;
    if (sc->i >= sc->len || sc->s[sc->i] != '"')
        return -1;
    sc_adv(sc);
    while (sc->i < sc->len && sc->s[sc->i] != '"') {
        if (sc->s[sc->i] == '\\' && sc->i + 1 < sc->len) {
            if (out != NULL && o + 1 < outlen)
                out[o++] = sc->s[sc->i];
            sc_adv(sc);
        }
        if (out != NULL && o + 1 < outlen)
            out[o++] = sc->s[sc->i];
        sc_adv(sc);
    }
    if (out != NULL && outlen > 0)
        out[o] = '\0';
    if (sc->i >= sc->len)
        return -1;
    sc_adv(sc);
    return 0;
}

static int sc_value(struct scan *sc, const char *path, int kl, int kc, int depth);

static int sc_object(struct scan *sc, const char *path, int depth)
{
    char key[PATH_MAX_LEN], child[PATH_MAX_LEN];
    sc_adv(sc); /* { */
    sc_ws(sc);
    if (sc->i < sc->len && sc->s[sc->i] == '}') {
        sc_adv(sc);
        return 0;
    }
    for (;;) {
        sc_ws(sc);
        int kl = sc->line, kc = sc->col;
        if (sc_at_stop(sc, path) || sc_string(sc, key, sizeof(key)) != 0)
            return sc_fail(sc, path);
        bfmt(child, sizeof(child), "%s%s%s", path, path[0] ? "." : "", key);
        sc_ws(sc);
        /* a broken key/colon is the object's fault; the key's path starts after ':' */
        if (sc->i >= sc->len || sc->s[sc->i] != ':')
            return sc_fail(sc, path);
        sc_adv(sc);
        if (sc_value(sc, child, kl, kc, depth + 1) != 0)
            return -1;
        sc_ws(sc);
        if (sc->i >= sc->len)
            return -1;
        if (sc->s[sc->i] == '}') {
            sc_adv(sc);
            return 0;
        }
        if (sc->s[sc->i] != ',')
            return sc_fail(sc, path);
        sc_adv(sc);
    }
}

static int sc_array(struct scan *sc, const char *path, int depth)
{
    char child[PATH_MAX_LEN];
    sc_adv(sc); /* [ */
    sc_ws(sc);
    if (sc->i < sc->len && sc->s[sc->i] == ']') {
        sc_adv(sc);
        return 0;
    }
    for (size_t n = 0;; n++) {
        bfmt(child, sizeof(child), "%s[%zu]", path, n);
        if (sc_value(sc, child, 0, 0, depth + 1) != 0)
            return -1;
        sc_ws(sc);
        if (sc->i >= sc->len)
            return -1;
        if (sc->s[sc->i] == ']') {
            sc_adv(sc);
            return 0;
        }
        if (sc->s[sc->i] != ',') {
            bfmt(child, sizeof(child), "%s[%zu]", path, n + 1);
            return sc_fail(sc, child);
        }
        sc_adv(sc);
    }
}

/* Skips a whole value without indexing it (iterative: no recursion). */
static int sc_skip(struct scan *sc)
{
    int nest = 0;
    do {
        if (sc->i >= sc->len)
            return -1;
        char ch = sc->s[sc->i];
        if (ch == '"') {
            if (sc_string(sc, NULL, 0) != 0)
                return -1;
            continue;
        }
        if (ch == '{' || ch == '[')
            nest++;
        else if (ch == '}' || ch == ']')
            nest--;
        sc_adv(sc);
    } while (nest > 0);
    return 0;
}

static int sc_value(struct scan *sc, const char *path, int kl, int kc, int depth)
{
    sc_ws(sc);
    if (sc->i >= sc->len || sc_at_stop(sc, path))
        return -1;
    if (depth > INDEX_MAX_DEPTH) {
        char ch = sc->s[sc->i];
        if (ch == '{' || ch == '[')
            return sc_skip(sc);
    }
    if (kl == 0) {
        kl = sc->line;
        kc = sc->col;
    }
    index_add(sc->idx, path, kl, kc, sc->line, sc->col);
    switch (sc->s[sc->i]) {
    case '{':
        return sc_object(sc, path, depth);
    case '[':
        return sc_array(sc, path, depth);
    case '"':
        return sc_string(sc, NULL, 0);
    default:
        /* number, true, false, null: jansson already vetted the text */
        while (sc->i < sc->len && strchr(",]} \t\r\n", sc->s[sc->i]) == NULL)
            sc_adv(sc);
        return 0;
    }
}

/*
 * Indexes text. With stop set, stops at that byte offset and leaves the path
 * being read there in sc->stop_path (used to place jansson's syntax errors).
 */
static void index_build(struct scan *sc, const char *text, size_t len, struct pos_index *idx, size_t stop)
{
    memset(sc, 0, sizeof(*sc));
    sc->s = text;
    sc->len = len;
    sc->line = 1;
    sc->col = 1;
    sc->idx = idx;
    sc->stop = stop;
    sc_value(sc, "", 0, 0, 0);
}

/* ---- validation context and helpers ------------------------------------ */

/* State of one load call; on the stack of load_text(). */
struct vctx {
    const char *name;
    char *err;
    size_t errlen;
    struct pos_index idx;
};

/* Writes "NAME:LINE:COL: PATH: message"; always returns -1. */
__attribute__((format(printf, 4, 5))) static int fail(struct vctx *c, const char *path, int at_key, const char *fmt,
                                                      ...)
{
    char msg[512], p[PATH_MAX_LEN];
    const struct pos_entry *e = NULL;
    va_list ap;
    int line = 1, col = 1;

    bfmt(p, sizeof(p), "%s", path);
    for (;;) {
        if ((e = index_find(&c->idx, p)) != NULL || p[0] == '\0')
            break;
        char *dot = strrchr(p, '.'), *br = strrchr(p, '[');
        char *cut = dot > br ? dot : br;
        if (cut == NULL)
            cut = p;
        *cut = '\0';
        at_key = 0; /* an ancestor's value start is the best we have */
    }
    if (e != NULL) {
        line = at_key ? e->kline : e->vline;
        col = at_key ? e->kcol : e->vcol;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->err != NULL && c->errlen > 0) {
        bfmt(c->err, c->errlen, "%s:%d:%d: %s: %s", c->name, line, col, path[0] ? path : "(root)", msg);
        oneline(c->err);
    }
    return -1;
}

static void join(char *out, const char *path, const char *key)
{
    bfmt(out, PATH_MAX_LEN, "%s%s%s", path, path[0] ? "." : "", key);
}

static void join_i(char *out, const char *path, size_t i)
{
    bfmt(out, PATH_MAX_LEN, "%s[%zu]", path, i);
}

static const char *jtype(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static int check_keys(struct vctx *c, json_t *obj, const char *path, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a != NULL && !ok; a++)
            ok = strcmp(key, *a) == 0;
        if (!ok) {
            char list[1024] = "", p[PATH_MAX_LEN];
            size_t o = 0;
            /* (a list longer than the buffer is cut, never written past it) */
            for (const char *const *a = allowed; *a != NULL && o < sizeof(list); a++)
                o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", a == allowed ? "" : ", ", *a);
            join(p, path, key);
            return fail(c, p, 1, "unknown key (expected one of: %s)", list);
        }
    }
    return 0;
}

static int require(struct vctx *c, json_t *obj, const char *path, const char *key)
{
    if (json_object_get(obj, key) != NULL)
        return 0;
    return fail(c, path, 0, "missing required key \"%s\"", key);
}

/* Fetches obj[key] and checks its type; *out = NULL when absent. */
static int get_typed(struct vctx *c, json_t *obj, const char *path, const char *key, int type, const char *tname,
                     json_t **out)
{
    char p[PATH_MAX_LEN];
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (v == NULL)
        return 0;
    if ((int)json_typeof(v) != type) {
        join(p, path, key);
        return fail(c, p, 0, "expected %s, got %s", tname, jtype(v));
    }
    *out = v;
    return 0;
}

static int get_obj(struct vctx *c, json_t *obj, const char *path, const char *key, json_t **out)
{
    return get_typed(c, obj, path, key, JSON_OBJECT, "an object", out);
}

static int get_arr(struct vctx *c, json_t *obj, const char *path, const char *key, json_t **out)
{
    return get_typed(c, obj, path, key, JSON_ARRAY, "an array", out);
}

/* String member, copied; *out stays NULL when absent. Empty strings are refused when nonempty. */
static int get_str(struct vctx *c, json_t *obj, const char *path, const char *key, int nonempty, char **out)
{
    char p[PATH_MAX_LEN];
    json_t *v;
    if (get_typed(c, obj, path, key, JSON_STRING, "a string", &v) != 0)
        return -1;
    if (v == NULL)
        return 0;
    join(p, path, key);
    if (nonempty && json_string_length(v) == 0)
        return fail(c, p, 0, "must not be empty");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return fail(c, p, 0, "must not contain NUL characters");
    free(*out);
    if ((*out = strdup(json_string_value(v))) == NULL)
        return fail(c, p, 0, "out of memory");
    return 0;
}

static int get_bool(struct vctx *c, json_t *obj, const char *path, const char *key)
{
    char p[PATH_MAX_LEN];
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_boolean(v))
        return 0;
    join(p, path, key);
    return fail(c, p, 0, "expected true or false, got %s", jtype(v));
}

static int get_u32(struct vctx *c, json_t *obj, const char *path, const char *key, uint32_t *out, uint32_t def,
                   uint32_t min, uint32_t max)
{
    char p[PATH_MAX_LEN];
    json_t *v = json_object_get(obj, key);
    *out = def;
    if (v == NULL)
        return 0;
    join(p, path, key);
    if (!json_is_integer(v))
        return fail(c, p, 0, "expected an integer, got %s", jtype(v));
    json_int_t n = json_integer_value(v);
    if (n < (json_int_t)min || n > (json_int_t)max)
        return fail(c, p, 0, "%" JSON_INTEGER_FORMAT " is out of range (%u..%u)", n, min, max);
    *out = (uint32_t)n;
    return 0;
}

/* A number; min_open makes the lower bound exclusive (must be > min). */
static int get_num(struct vctx *c, json_t *obj, const char *path, const char *key, double *out, double def, double min,
                   int min_open, double max)
{
    char p[PATH_MAX_LEN];
    json_t *v = json_object_get(obj, key);
    *out = def;
    if (v == NULL)
        return 0;
    join(p, path, key);
    if (!json_is_number(v))
        return fail(c, p, 0, "expected a number, got %s", jtype(v));
    double d = json_number_value(v);
    if (min_open ? !(d > min) : !(d >= min))
        return fail(c, p, 0, "%g must be %s %g", d, min_open ? ">" : ">=", min);
    if (d > max)
        return fail(c, p, 0, "%g must be <= %g", d, max);
    *out = d;
    return 0;
}

static int get_addr(struct vctx *c, json_t *obj, const char *path, const char *key, int required, char **out)
{
    struct sockaddr_storage ss;
    unsigned sl;
    char p[PATH_MAX_LEN];
    if (required && require(c, obj, path, key) != 0)
        return -1;
    if (get_str(c, obj, path, key, 1, out) != 0)
        return -1;
    join(p, path, key);
    if (*out != NULL && slb_parse_addr(*out, &ss, &sl) != 0)
        return fail(c, p, 0, "invalid address \"%s\" (expected IPv4:port, [IPv6]:port or localhost:port)", *out);
    return 0;
}

/* A backend's address: an IP literal, or a host name that the cluster resolves (lib/resolver.h). */
static int get_backend_addr(struct vctx *c, json_t *obj, const char *path, char **out)
{
    char p[PATH_MAX_LEN];

    if (require(c, obj, path, "address") != 0 || get_str(c, obj, path, "address", 1, out) != 0)
        return -1;
    join(p, path, "address");
    if (!slb_hostport_is_literal(*out) && !slb_hostport_is_name(*out))
        return fail(c, p, 0, "invalid address \"%s\" (expected IPv4:port, [IPv6]:port or hostname:port)", *out);
    return 0;
}

static int dump_compact(struct vctx *c, json_t *v, const char *path, char **out)
{
    free(*out);
    if ((*out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
        return fail(c, path, 0, "out of memory");
    return 0;
}

/* ---- sections ---------------------------------------------------------- */

static int load_health(struct vctx *c, json_t *obj, const char *path, const char *key,
                       struct slb_config_health_check *hc)
{
    static const char *const keys[] = {"service", "interval_ms", "timeout_ms", NULL};
    char p[PATH_MAX_LEN];
    json_t *h;

    hc->interval_ms = 1000;
    hc->timeout_ms = 1000;
    if (get_obj(c, obj, path, key, &h) != 0)
        return -1;
    if (h == NULL)
        return 0;
    join(p, path, key);
    hc->enabled = 1;
    if (check_keys(c, h, p, keys) != 0 || get_str(c, h, p, "service", 0, &hc->service) != 0 ||
        get_u32(c, h, p, "interval_ms", &hc->interval_ms, 1000, 10, 3600000) != 0 ||
        get_u32(c, h, p, "timeout_ms", &hc->timeout_ms, 1000, 1, 3600000) != 0)
        return -1;
    if (hc->service == NULL && (hc->service = strdup("")) == NULL)
        return fail(c, p, 0, "out of memory");
    return 0;
}

static int valid_host_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
           ch == '_';
}

/* A route key: "pkg.Service" or "pkg.Service/Method" (protobuf identifiers). */
static int valid_route_service(const char *s)
{
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!valid_host_char(s[i]) || s[i] == '-')
            return 0;
    if (slash == NULL)
        return 1;
    if (slash[1] == '\0')
        return 0;
    for (const char *q = slash + 1; *q; q++)
        if (!valid_host_char(*q) || *q == '-' || *q == '.')
            return 0;
    return 1;
}

/* "http(s)://host:port" with nothing after the port (curl appends the gateway paths). */
static int valid_endpoint(const char *s)
{
    const char *hp, *colon;
    char *end;
    if (strncmp(s, "http://", 7) == 0)
        hp = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        hp = s + 8;
    else
        return 0;
    if (*hp == '[') {
        const char *rb = strchr(hp, ']');
        if (rb == NULL || rb == hp + 1 || rb[1] != ':')
            return 0;
        colon = rb + 1;
    } else {
        colon = strchr(hp, ':');
        if (colon == NULL || colon == hp)
            return 0;
        for (const char *q = hp; q < colon; q++)
            if (!valid_host_char(*q))
                return 0;
    }
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || port < 1 || port > 65535)
        return 0;
    return *end == '\0' || (end[0] == '/' && end[1] == '\0');
}

/* ---- etcd credentials: password_file, and no password in clear over http:// ---- */

#define PASSWORD_FILE_MAX  4096
#define CREDENTIALS_PREFIX "${CREDENTIALS_DIRECTORY}"

/*
 * Reads the etcd password from path into *out: the file's content with its
 * trailing newlines stripped. A leading ${CREDENTIALS_DIRECTORY} is replaced
 * by that environment variable (systemd's LoadCredential=). Messages name the
 * path, never the content. 0 or -1 (message in c).
 */
static int read_password_file(struct vctx *c, const char *path, char **out)
{
    char full[4096], *buf;
    const char *dir = "";
    struct stat st;
    size_t n;
    FILE *f;
    int len;

    if (strncmp(path, CREDENTIALS_PREFIX, sizeof(CREDENTIALS_PREFIX) - 1) == 0) {
        dir = getenv("CREDENTIALS_DIRECTORY");
        if (dir == NULL || dir[0] == '\0')
            return fail(c, "etcd.password_file", 0,
                        "\"%s\" uses ${CREDENTIALS_DIRECTORY}, which is not set (systemd sets it with "
                        "LoadCredential=)",
                        path);
        path += sizeof(CREDENTIALS_PREFIX) - 1;
    }
    len = snprintf(full, sizeof(full), "%s%s", dir, path);
    if (len < 0 || (size_t)len >= sizeof(full))
        return fail(c, "etcd.password_file", 0, "path longer than %zu bytes", sizeof(full) - 1);
    if ((f = fopen(full, "rb")) == NULL)
        return fail(c, "etcd.password_file", 0, "cannot open \"%s\": %s", full, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) { /* never block on a FIFO or a terminal */
        fclose(f);
        return fail(c, "etcd.password_file", 0, "\"%s\" is not a regular file", full);
    }
    if ((buf = malloc(PASSWORD_FILE_MAX + 1)) == NULL) {
        fclose(f);
        return fail(c, "etcd.password_file", 0, "out of memory");
    }
    n = fread(buf, 1, PASSWORD_FILE_MAX + 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n > PASSWORD_FILE_MAX || n == 0 || memchr(buf, '\0', n) != NULL) {
        free(buf);
        return fail(c, "etcd.password_file", 0, "\"%s\" must hold one password (1..%d bytes, no NUL)", full,
                    PASSWORD_FILE_MAX);
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

static int load_etcd_password(struct vctx *c, json_t *o, struct slb_config_etcd *e)
{
    json_t *allow = json_object_get(o, "allow_insecure_password");

    if (get_str(c, o, "etcd", "password_file", 1, &e->password_file) != 0 ||
        get_bool(c, o, "etcd", "allow_insecure_password") != 0)
        return -1;
    e->allow_insecure_password = json_is_true(allow);
    if (e->password_file != NULL) {
        if (e->password != NULL)
            return fail(c, "etcd.password_file", 1, "give \"password\" or \"password_file\", not both");
        if (e->username == NULL)
            return fail(c, "etcd.password_file", 1, "a password needs a \"username\"");
        if (read_password_file(c, e->password_file, &e->password) != 0)
            return -1;
    }
    if (e->password == NULL || e->allow_insecure_password)
        return 0;
    for (size_t i = 0; i < e->n_endpoints; i++)
        if (strncmp(e->endpoints[i], "http://", 7) == 0)
            return fail(c, e->password_file != NULL ? "etcd.password_file" : "etcd.password", 1,
                        "the password would be sent in clear to %s: use https:// endpoints, or set "
                        "\"allow_insecure_password\": true",
                        e->endpoints[i]);
    return 0;
}

/*
 * "tls" of a cluster or register[] entry (server == 0: sidelb is the client)
 * or of a listener (server == 1). The context is built here, so unreadable or
 * mismatched files are config errors naming the file and OpenSSL's reason.
 */
static int load_tls(struct vctx *c, json_t *o, const char *path, struct slb_config_tls *t, int server)
{
    static const char *const client_keys[] = {"ca_file", "cert_file", "key_file", "server_name", "min_version", NULL};
    static const char *const server_keys[] = {"cert_file", "key_file", "client_ca_file", "min_version", NULL};
    struct slb_tls_settings st = {0};
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN], err[512];
    char *version = NULL;
    const char *bad_key = NULL;
    json_t *v;

    if (get_obj(c, o, path, "tls", &v) != 0)
        return -1;
    if (v == NULL)
        return 0;
    join(p, path, "tls");
    t->enabled = 1;
    t->min_version = 12;
    if (check_keys(c, v, p, server ? server_keys : client_keys) != 0 ||
        (server && (require(c, v, p, "cert_file") != 0 || require(c, v, p, "key_file") != 0)) ||
        get_str(c, v, p, "ca_file", 1, &t->ca_file) != 0 || get_str(c, v, p, "cert_file", 1, &t->cert_file) != 0 ||
        get_str(c, v, p, "key_file", 1, &t->key_file) != 0 ||
        get_str(c, v, p, "server_name", 1, &t->server_name) != 0 ||
        get_str(c, v, p, "client_ca_file", 1, &t->client_ca_file) != 0 ||
        get_str(c, v, p, "min_version", 1, &version) != 0)
        goto fail;
    if (version != NULL) {
        join(q, p, "min_version");
        if (strcmp(version, "1.3") == 0)
            t->min_version = 13;
        else if (strcmp(version, "1.2") != 0) {
            fail(c, q, 0, "unknown TLS version \"%s\" (known: \"1.2\", \"1.3\")", version);
            goto fail;
        }
    }
    free(version);
    version = NULL;
    if ((t->cert_file == NULL) != (t->key_file == NULL))
        return fail(c, p, 0, "cert_file and key_file go together (give both or neither)");
    st.ca_file = t->ca_file;
    st.cert_file = t->cert_file;
    st.key_file = t->key_file;
    st.client_ca_file = t->client_ca_file;
    st.min_version = t->min_version;
    if ((t->ctx = slb_tls_ctx_new(&st, server, err, sizeof(err), &bad_key)) == NULL) {
        if (bad_key != NULL && bad_key[0] != '\0')
            join(q, p, bad_key);
        else
            bfmt(q, sizeof(q), "%s", p);
        return fail(c, q, 0, "%s", err);
    }
    return 0;
fail:
    free(version);
    return -1;
}

static void free_tls(struct slb_config_tls *t)
{
    free(t->ca_file);
    free(t->cert_file);
    free(t->key_file);
    free(t->server_name);
    free(t->client_ca_file);
    slb_tls_ctx_unref(t->ctx);
}

static int load_etcd(struct vctx *c, json_t *root, struct slb_config *cfg)
{
    static const char *const keys[] = {"endpoints", "dial_timeout_ms", "request_timeout_ms",      "username",
                                       "password",  "password_file",   "allow_insecure_password", "tls",
                                       NULL};
    static const char *const tls_keys[] = {"ca_file", "cert_file", "key_file", NULL};
    struct slb_config_etcd *e = &cfg->etcd;
    json_t *o, *eps, *tls;
    char p[PATH_MAX_LEN];

    e->dial_timeout_ms = 2000;
    e->request_timeout_ms = 5000;
    if (get_obj(c, root, "", "etcd", &o) != 0)
        return -1;
    if (o == NULL)
        return 0;
    cfg->has_etcd = 1;
    if (check_keys(c, o, "etcd", keys) != 0 || require(c, o, "etcd", "endpoints") != 0 ||
        get_arr(c, o, "etcd", "endpoints", &eps) != 0)
        return -1;
    if (json_array_size(eps) == 0)
        return fail(c, "etcd.endpoints", 0, "needs at least one endpoint");
    if ((e->endpoints = calloc(json_array_size(eps), sizeof(char *))) == NULL)
        return fail(c, "etcd.endpoints", 0, "out of memory");
    for (size_t i = 0; i < json_array_size(eps); i++) {
        json_t *v = json_array_get(eps, i);
        join_i(p, "etcd.endpoints", i);
        if (!json_is_string(v))
            return fail(c, p, 0, "expected a string, got %s", jtype(v));
        if (!valid_endpoint(json_string_value(v)))
            return fail(c, p, 0, "invalid endpoint \"%s\" (expected http://host:port or https://host:port)",
                        json_string_value(v));
        if ((e->endpoints[i] = strdup(json_string_value(v))) == NULL)
            return fail(c, p, 0, "out of memory");
        e->n_endpoints++;
    }
    if (get_u32(c, o, "etcd", "dial_timeout_ms", &e->dial_timeout_ms, 2000, 1, 600000) != 0 ||
        get_u32(c, o, "etcd", "request_timeout_ms", &e->request_timeout_ms, 5000, 1, 600000) != 0 ||
        get_str(c, o, "etcd", "username", 1, &e->username) != 0 ||
        get_str(c, o, "etcd", "password", 0, &e->password) != 0)
        return -1;
    if (e->password != NULL && e->username == NULL)
        return fail(c, "etcd.password", 1, "a password needs a \"username\"");
    if (load_etcd_password(c, o, e) != 0)
        return -1;
    if (get_obj(c, o, "etcd", "tls", &tls) != 0)
        return -1;
    if (tls != NULL) {
        if (check_keys(c, tls, "etcd.tls", tls_keys) != 0 || get_str(c, tls, "etcd.tls", "ca_file", 1, &e->ca_file) ||
            get_str(c, tls, "etcd.tls", "cert_file", 1, &e->cert_file) != 0 ||
            get_str(c, tls, "etcd.tls", "key_file", 1, &e->key_file) != 0)
            return -1;
        if ((e->cert_file == NULL) != (e->key_file == NULL))
            return fail(c, "etcd.tls", 0, "cert_file and key_file go together (give both or neither)");
    }
    return 0;
}

/* ---- listener addresses: IP:port or unix:/path with its mode and group ---- */

static int get_unix_mode(struct vctx *c, json_t *o, const char *path, uint32_t *mode)
{
    json_t *v = json_object_get(o, "mode");
    char p[PATH_MAX_LEN], *end;
    long m;

    *mode = 0660;
    if (v == NULL)
        return 0;
    join(p, path, "mode");
    if (json_is_string(v)) {
        const char *str = json_string_value(v);
        m = strtol(str, &end, 8);
        if (*str == '\0' || *end != '\0' || m < 0 || m > 0777)
            return fail(c, p, 0, "\"%s\" is not an octal file mode in \"0000\"..\"0777\"", str);
    } else if (json_is_integer(v)) {
        m = (long)json_integer_value(v);
        if (json_integer_value(v) < 0 || json_integer_value(v) > 0777)
            return fail(c, p, 0,
                        "%lld is not a file mode in 0..511 (0777); write octal modes as a string, e.g. "
                        "\"0660\"",
                        (long long)json_integer_value(v));
    } else {
        return fail(c, p, 0, "expected an octal string such as \"0660\" or a number, got %s", jtype(v));
    }
    *mode = (uint32_t)m;
    return 0;
}

static int get_unix_group(struct vctx *c, json_t *o, const char *path, int64_t *gid)
{
    json_t *v = json_object_get(o, "group");
    char p[PATH_MAX_LEN];

    *gid = -1;
    if (v == NULL)
        return 0;
    join(p, path, "group");
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0 || json_integer_value(v) > 0x7fffffff)
            return fail(c, p, 0, "%lld is not a group id", (long long)json_integer_value(v));
        *gid = json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0)
        return fail(c, p, 0, "expected a group name or a numeric group id, got %s", jtype(v));
    struct group grbuf, *gr = NULL;
    char buf[4096];
    if (getgrnam_r(json_string_value(v), &grbuf, buf, sizeof(buf), &gr) != 0 || gr == NULL)
        return fail(c, p, 0, "unknown group \"%s\"", json_string_value(v));
    *gid = gr->gr_gid;
    return 0;
}

static int get_listen_addr(struct vctx *c, json_t *o, const char *path, struct slb_config_listener *l)
{
    char p[PATH_MAX_LEN];
    const char *why = "invalid";

    if (require(c, o, path, "address") != 0 || get_str(c, o, path, "address", 1, &l->address) != 0)
        return -1;
    join(p, path, "address");
    if (strncmp(l->address, SLB_UNIX_PREFIX, sizeof(SLB_UNIX_PREFIX) - 1) != 0) {
        if (json_object_get(o, "mode") != NULL || json_object_get(o, "group") != NULL)
            return fail(c, path, 0, "\"mode\" and \"group\" apply only to a unix:/path address");
        return get_addr(c, o, path, "address", 1, &l->address);
    }
    if ((l->unix_path = slb_unix_path(l->address, &why)) == NULL)
        return fail(c, p, 0, "invalid address \"%s\": %s", l->address, why);
    return get_unix_mode(c, o, path, &l->unix_mode) != 0 || get_unix_group(c, o, path, &l->unix_gid) != 0 ? -1 : 0;
}

/* The admin listener: IP:port, or unix:/path (mode 0660, the process's group). */
static int get_admin_addr(struct vctx *c, json_t *admin, char **out)
{
    const char *why = "invalid";

    if (require(c, admin, "admin", "address") != 0 || get_str(c, admin, "admin", "address", 1, out) != 0)
        return -1;
    if (strncmp(*out, SLB_UNIX_PREFIX, sizeof(SLB_UNIX_PREFIX) - 1) != 0)
        return get_addr(c, admin, "admin", "address", 1, out);
    if (slb_unix_path(*out, &why) == NULL)
        return fail(c, "admin.address", 0, "invalid address \"%s\": %s", *out, why);
    return 0;
}

static int load_listener(struct vctx *c, json_t *o, const char *path, struct slb_config_listener *l)
{
    static const char *const keys[] = {"name",
                                       "address",
                                       "routes",
                                       "default_cluster",
                                       "max_concurrent_streams",
                                       "max_premature_resets",
                                       "max_header_list_size",
                                       "max_connections",
                                       "handshake_timeout_ms",
                                       "idle_timeout_ms",
                                       "stream_idle_timeout_ms",
                                       "tls",
                                       "mode",
                                       "group",
                                       NULL};
    static const char *const route_keys[] = {"service", "cluster", NULL};
    char p[PATH_MAX_LEN], rp[PATH_MAX_LEN], rpath[PATH_MAX_LEN];
    json_t *routes;

    l->default_cluster_index = -1;
    if (check_keys(c, o, path, keys) != 0 || get_listen_addr(c, o, path, l) != 0 ||
        get_str(c, o, path, "name", 1, &l->name) != 0 ||
        get_str(c, o, path, "default_cluster", 1, &l->default_cluster) != 0 ||
        get_u32(c, o, path, "max_concurrent_streams", &l->max_concurrent_streams, 100, 1, 0x7fffffff) != 0 ||
        get_u32(c, o, path, "max_premature_resets", &l->max_premature_resets, 100, 0, 0x7fffffff) != 0 ||
        get_u32(c, o, path, "max_header_list_size", &l->max_header_list_size, 16384, 1024, 1048576) != 0 ||
        get_u32(c, o, path, "max_connections", &l->max_connections, 0, 0, 0x7fffffff) != 0 ||
        get_u32(c, o, path, "handshake_timeout_ms", &l->handshake_timeout_ms, 10000, 0, 3600000) != 0 ||
        get_u32(c, o, path, "idle_timeout_ms", &l->idle_timeout_ms, 300000, 0, 86400000) != 0 ||
        get_u32(c, o, path, "stream_idle_timeout_ms", &l->stream_idle_timeout_ms, 300000, 0, 86400000) != 0 ||
        get_arr(c, o, path, "routes", &routes) != 0 || load_tls(c, o, path, &l->tls, 1) != 0)
        return -1;
    if (l->name == NULL && (l->name = strdup(l->address)) == NULL)
        return fail(c, path, 0, "out of memory");
    if (routes == NULL || json_array_size(routes) == 0)
        return 0;
    join(rpath, path, "routes");
    if ((l->routes = calloc(json_array_size(routes), sizeof(*l->routes))) == NULL)
        return fail(c, rpath, 0, "out of memory");
    for (size_t i = 0; i < json_array_size(routes); i++) {
        json_t *r = json_array_get(routes, i);
        struct slb_config_route *rt = &l->routes[i];
        join_i(p, rpath, i);
        l->n_routes++;
        rt->cluster_index = -1;
        if (!json_is_object(r))
            return fail(c, p, 0, "expected an object, got %s", jtype(r));
        if (check_keys(c, r, p, route_keys) != 0 || require(c, r, p, "service") != 0 ||
            require(c, r, p, "cluster") != 0 || get_str(c, r, p, "service", 1, &rt->service) != 0 ||
            get_str(c, r, p, "cluster", 1, &rt->cluster) != 0)
            return -1;
        /* :path is "/pkg.Service/Method": a route names a service or one method of it */
        if (!valid_route_service(rt->service)) {
            join(rp, p, "service");
            return fail(c, rp, 0, "\"%s\" is not \"pkg.Service\" or \"pkg.Service/Method\"", rt->service);
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(l->routes[j].service, rt->service) == 0) {
                join(rp, p, "service");
                return fail(c, rp, 0, "duplicate route for \"%s\" (first at %s[%zu])", rt->service, rpath, j);
            }
    }
    return 0;
}

static int load_listeners(struct vctx *c, json_t *root, struct slb_config *cfg)
{
    char p[PATH_MAX_LEN], ap[PATH_MAX_LEN];
    json_t *a;
    if (require(c, root, "", "listeners") != 0 || get_arr(c, root, "", "listeners", &a) != 0)
        return -1;
    if (json_array_size(a) == 0)
        return fail(c, "listeners", 0, "needs at least one listener");
    if ((cfg->listeners = calloc(json_array_size(a), sizeof(*cfg->listeners))) == NULL)
        return fail(c, "listeners", 0, "out of memory");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *o = json_array_get(a, i);
        join_i(p, "listeners", i);
        cfg->n_listeners++;
        if (!json_is_object(o))
            return fail(c, p, 0, "expected an object, got %s", jtype(o));
        if (load_listener(c, o, p, &cfg->listeners[i]) != 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->listeners[j].address, cfg->listeners[i].address) == 0) {
                join(ap, p, "address");
                return fail(c, ap, 0, "address \"%s\" already used by listeners[%zu]", cfg->listeners[i].address, j);
            }
    }
    return 0;
}

static int is_prime(uint32_t n)
{
    if (n < 2)
        return 0;
    for (uint32_t d = 2; (uint64_t)d * d <= n; d++)
        if (n % d == 0)
            return 0;
    return 1;
}

/*
 * A hash policy's "hash_on" -> lb->hash_on. The default keeps what each
 * policy keyed on before the option existed: source_ip_hash the app's
 * address, ring_hash and maglev a header. "hash_header" is only accepted
 * with "hash_on": "header", where it is read.
 */
static int load_hash_on(struct vctx *c, json_t *opts, const char *p, const char *name, struct slb_lb_options *lb)
{
    char sp[PATH_MAX_LEN];
    char *v = NULL;
    int on;

    lb->hash_on = strcmp(name, "source_ip_hash") == 0 ? SLB_LB_HASH_ON_SOURCE_IP : SLB_LB_HASH_ON_HEADER;
    if (get_str(c, opts, p, "hash_on", 0, &v) != 0)
        return -1;
    if (v != NULL) {
        join(sp, p, "hash_on");
        if ((on = slb_lb_hash_on_parse(v)) < 0) {
            int r = fail(c, sp, 0, "unknown value \"%s\" (known: " SLB_LB_HASH_ON_NAMES ")", v);
            free(v);
            return r;
        }
        free(v);
        lb->hash_on = (uint8_t)on;
    }
    if (lb->hash_on != SLB_LB_HASH_ON_HEADER && json_object_get(opts, "hash_header") != NULL) {
        join(sp, p, "hash_header");
        return fail(c, sp, 1, "only used with \"hash_on\": \"header\" (hash_on is \"%s\"%s)",
                    slb_lb_hash_on_name(lb->hash_on),
                    json_object_get(opts, "hash_on") == NULL ? ", the default of this policy" : "");
    }
    return 0;
}

/*
 * slow_start ramps a new backend's share of the calls; policies where a share
 * cannot ramp reject it, saying why (rather than accept it and do nothing).
 */
static int reject_slow_start(struct vctx *c, json_t *opts, const char *p, const char *name)
{
    char sp[PATH_MAX_LEN];
    const char *why = NULL;

    if (json_object_get(opts, "slow_start") == NULL)
        return 0;
    if (strcmp(name, "pick_first") == 0)
        why = "pick_first sends every call to one backend, so there is no share to ramp";
    else if (strcmp(name, "source_ip_hash") == 0 || strcmp(name, "ring_hash") == 0 || strcmp(name, "maglev") == 0)
        why = "a hash policy sends each key to one backend, and keys must stay where they are: a ramp would move "
              "keys off a new backend and back as its weight grows";
    if (why == NULL)
        return 0;
    join(sp, p, "slow_start");
    return fail(c, sp, 1,
                "not supported by %s: %s (slow_start works with round_robin, random, weighted_round_robin, "
                "weighted_random and least_request)",
                name, why);
}

/* "policy": {"<name>": {options}} -> cl->policy + cl->lb. */
static int load_policy(struct vctx *c, json_t *o, const char *cpath, struct slb_config_cluster *cl)
{
    static const char *const k_plain[] = {"slow_start", "panic_threshold_percent", NULL};
    static const char *const k_pf[] = {"panic_threshold_percent", NULL};
    static const char *const k_lr[] = {"choice_count", "slow_start", "panic_threshold_percent", NULL};
    static const char *const k_iph[] = {"hash_on", "hash_header", "panic_threshold_percent", NULL};
    static const char *const k_ring[] = {
        "hash_on", "hash_header", "min_ring_size", "max_ring_size", "panic_threshold_percent", NULL};
    static const char *const k_maglev[] = {"hash_on", "hash_header", "table_size", "panic_threshold_percent", NULL};
    static const char *const k_slow[] = {"window_ms", "aggression", "min_weight_percent", NULL};
    char path[PATH_MAX_LEN], p[PATH_MAX_LEN], sp[PATH_MAX_LEN];
    struct slb_lb_options *lb = &cl->lb;
    json_t *pol, *opts, *slow;
    const char *name;
    uint32_t u;

    slb_lb_options_default(lb);
    if (get_obj(c, o, cpath, "policy", &pol) != 0)
        return -1;
    join(path, cpath, "policy");
    if (pol == NULL) {
        if ((cl->policy = strdup("round_robin")) == NULL)
            return fail(c, cpath, 0, "out of memory");
        return 0;
    }
    if (json_object_size(pol) != 1)
        return fail(c, path, 0, "needs exactly one policy name as its key, e.g. {\"round_robin\": {}} (known: %s)",
                    slb_lb_names());
    name = json_object_iter_key(json_object_iter(pol));
    opts = json_object_iter_value(json_object_iter(pol));
    join(p, path, name);
    if (slb_lb_find(name) == NULL)
        return fail(c, p, 1, "unknown policy \"%s\" (known: %s)", name, slb_lb_names());
    if ((cl->policy = strdup(name)) == NULL)
        return fail(c, p, 0, "out of memory");
    if (!json_is_object(opts))
        return fail(c, p, 0, "expected an object of policy options, got %s", jtype(opts));

    int ring = strcmp(name, "ring_hash") == 0, maglev = strcmp(name, "maglev") == 0;
    int iph = strcmp(name, "source_ip_hash") == 0;
    if (reject_slow_start(c, opts, p, name) != 0 || check_keys(c, opts, p,
                                                               ring                                 ? k_ring
                                                               : maglev                             ? k_maglev
                                                               : iph                                ? k_iph
                                                               : strcmp(name, "least_request") == 0 ? k_lr
                                                               : strcmp(name, "pick_first") == 0    ? k_pf
                                                                                                    : k_plain) != 0)
        return -1;
    if (get_u32(c, opts, p, "choice_count", &lb->choice_count, lb->choice_count, 0, 100) != 0)
        return -1;
    if (lb->choice_count == 1) {
        join(sp, p, "choice_count");
        return fail(c, sp, 0, "must be 0 (scan all) or 2..100");
    }
    if ((ring || maglev || iph) && load_hash_on(c, opts, p, name, lb) != 0)
        return -1;
    if (lb->hash_on == SLB_LB_HASH_ON_HEADER) {
        char *hh = NULL;
        if (json_object_get(opts, "hash_header") == NULL)
            return fail(c, p, 0,
                        "missing required key \"hash_header\" (hash_on is \"header\"%s: the request header whose "
                        "value is the key)",
                        json_object_get(opts, "hash_on") == NULL ? ", the default of this policy" : "");
        if (get_str(c, opts, p, "hash_header", 1, &hh) != 0)
            return -1;
        join(sp, p, "hash_header");
        size_t n = strlen(hh);
        int bad = n >= sizeof(lb->hash_header);
        for (size_t i = 0; i < n && !bad; i++) {
            char ch = hh[i] >= 'A' && hh[i] <= 'Z' ? (char)(hh[i] - 'A' + 'a') : hh[i];
            bad = strchr("abcdefghijklmnopqrstuvwxyz0123456789-_.", ch) == NULL;
            lb->hash_header[i] = ch; /* HTTP/2 header names are lower case */
        }
        if (bad) {
            int r = fail(c, sp, 0, "\"%s\" is not a header name (letters, digits, '-', '_', '.'; under %zu chars)", hh,
                         sizeof(lb->hash_header));
            free(hh);
            return r;
        }
        lb->hash_header[n] = '\0';
        free(hh);
    }
    if (get_u32(c, opts, p, "min_ring_size", &lb->min_ring_size, lb->min_ring_size, 1, 8388608) != 0 ||
        get_u32(c, opts, p, "max_ring_size", &lb->max_ring_size, lb->max_ring_size, 1, 8388608) != 0)
        return -1;
    if (ring && lb->min_ring_size > lb->max_ring_size) {
        join(sp, p, "min_ring_size");
        return fail(c, sp, 0, "%u is larger than max_ring_size %u", lb->min_ring_size, lb->max_ring_size);
    }
    if (get_u32(c, opts, p, "table_size", &lb->maglev_table_size, lb->maglev_table_size, 3, 16777213) != 0)
        return -1;
    if (maglev && !is_prime(lb->maglev_table_size)) {
        join(sp, p, "table_size");
        return fail(c, sp, 0, "%u is not prime (Maglev needs a prime table size, e.g. 65537)", lb->maglev_table_size);
    }
    if (get_num(c, opts, p, "panic_threshold_percent", &lb->panic_threshold_percent, lb->panic_threshold_percent, 0, 0,
                100) != 0 ||
        get_obj(c, opts, p, "slow_start", &slow) != 0)
        return -1;
    if (slow != NULL) {
        join(sp, p, "slow_start");
        if (check_keys(c, slow, sp, k_slow) != 0 || require(c, slow, sp, "window_ms") != 0 ||
            get_u32(c, slow, sp, "window_ms", &u, 0, 1, 3600000) != 0 ||
            get_num(c, slow, sp, "aggression", &lb->slow_start_aggression, lb->slow_start_aggression, 0, 1, 100) != 0 ||
            get_num(c, slow, sp, "min_weight_percent", &lb->slow_start_min_weight_percent,
                    lb->slow_start_min_weight_percent, 0, 0, 100) != 0)
            return -1;
        lb->slow_start_ms = u;
    }
    return 0;
}

static int load_discovery(struct vctx *c, json_t *o, const char *cpath, struct slb_config_cluster *cl, int has_etcd)
{
    static const char *const keys[] = {"static", "etcd_prefix", NULL};
    static const char *const be_keys[] = {"address", "weight", "zone", NULL};
    char path[PATH_MAX_LEN], sp[PATH_MAX_LEN], p[PATH_MAX_LEN];
    json_t *d, *st;

    if (require(c, o, cpath, "discovery") != 0 || get_obj(c, o, cpath, "discovery", &d) != 0)
        return -1;
    join(path, cpath, "discovery");
    if (check_keys(c, d, path, keys) != 0)
        return -1;
    int has_static = json_object_get(d, "static") != NULL, has_prefix = json_object_get(d, "etcd_prefix") != NULL;
    if (has_static == has_prefix)
        return fail(c, path, 0, "needs exactly one of \"static\" or \"etcd_prefix\" (%s)",
                    has_static ? "both given" : "neither given");
    if (has_prefix) {
        if (get_str(c, d, path, "etcd_prefix", 1, &cl->etcd_prefix) != 0)
            return -1;
        if (!has_etcd) {
            join(p, path, "etcd_prefix");
            return fail(c, p, 0, "etcd discovery needs a top-level \"etcd\" section with endpoints");
        }
        return 0;
    }
    if (get_arr(c, d, path, "static", &st) != 0)
        return -1;
    join(sp, path, "static");
    if (json_array_size(st) == 0)
        return fail(c, sp, 0, "needs at least one backend");
    if ((cl->static_backends = calloc(json_array_size(st), sizeof(*cl->static_backends))) == NULL)
        return fail(c, sp, 0, "out of memory");
    for (size_t i = 0; i < json_array_size(st); i++) {
        struct slb_config_static_backend *be = &cl->static_backends[i];
        json_t *v = json_array_get(st, i);
        join_i(p, sp, i);
        cl->n_static++;
        be->weight = 1;
        if (json_is_string(v)) {
            if ((be->address = strdup(json_string_value(v))) == NULL)
                return fail(c, p, 0, "out of memory");
            if (!slb_hostport_is_literal(be->address) && !slb_hostport_is_name(be->address))
                return fail(c, p, 0, "invalid address \"%s\" (expected IPv4:port, [IPv6]:port or hostname:port)",
                            be->address);
        } else if (json_is_object(v)) {
            if (check_keys(c, v, p, be_keys) != 0 || get_backend_addr(c, v, p, &be->address) != 0 ||
                get_u32(c, v, p, "weight", &be->weight, 1, 1, 1000000) != 0 ||
                get_str(c, v, p, "zone", 0, &be->zone) != 0)
                return -1;
        } else {
            return fail(c, p, 0, "expected \"host:port\" or {\"address\": ...}, got %s", jtype(v));
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(cl->static_backends[j].address, be->address) == 0)
                return fail(c, p, 0, "duplicate backend \"%s\" (first at %s[%zu])", be->address, sp, j);
    }
    return 0;
}

/* ---- gRPC service config (gRFC A6 retries/hedging) ---------------------- */

static const char *const grpc_codes[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

/* The gRPC code for a name like "UNAVAILABLE", or -1. */
int slb_config_grpc_code(const char *name)
{
    for (size_t i = 0; i < SLB_ARRAY_SIZE(grpc_codes); i++)
        if (strcmp(name, grpc_codes[i]) == 0)
            return (int)i;
    return -1;
}

/* A protobuf JSON Duration: "1s", "0.1s", "2.000000001s" (seconds, up to 9 fraction digits). */
int slb_config_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t sec = 0, nanos = 0;
    int digits = 0, frac = 0;
    const char *q = s;
    if (s == NULL)
        return SLB_ECONFIG;
    for (; *q >= '0' && *q <= '9'; q++, digits++) {
        if (sec > 315576000000ull) /* protobuf's Duration range */
            return SLB_ECONFIG;
        sec = sec * 10 + (uint64_t)(*q - '0');
    }
    if (digits == 0)
        return SLB_ECONFIG;
    if (*q == '.') {
        for (q++; *q >= '0' && *q <= '9'; q++, frac++) {
            if (frac == 9)
                return SLB_ECONFIG;
            nanos = nanos * 10 + (uint64_t)(*q - '0');
        }
        if (frac == 0)
            return SLB_ECONFIG;
        for (int i = frac; i < 9; i++)
            nanos *= 10;
    }
    if (q[0] != 's' || q[1] != '\0')
        return SLB_ECONFIG;
    if (ms != NULL)
        *ms = sec * 1000 + (nanos + 999999) / 1000000;
    return 0;
}

static int get_duration(struct vctx *c, json_t *o, const char *path, const char *key, int required, int positive)
{
    char p[PATH_MAX_LEN];
    uint64_t ms;
    json_t *v;
    if ((required && require(c, o, path, key) != 0) || get_typed(c, o, path, key, JSON_STRING, "a string", &v) != 0)
        return -1;
    if (v == NULL)
        return 0;
    join(p, path, key);
    if (slb_config_parse_duration(json_string_value(v), &ms) != 0)
        return fail(c, p, 0, "\"%s\" is not a duration (expected seconds with an \"s\" suffix, e.g. \"0.1s\")",
                    json_string_value(v));
    if (positive && ms == 0)
        return fail(c, p, 0, "must be greater than 0s");
    return 0;
}

static int get_codes(struct vctx *c, json_t *o, const char *path, const char *key)
{
    char p[PATH_MAX_LEN], ip[PATH_MAX_LEN];
    json_t *a;
    if (require(c, o, path, key) != 0 || get_arr(c, o, path, key, &a) != 0)
        return -1;
    join(p, path, key);
    if (json_array_size(a) == 0)
        return fail(c, p, 0, "needs at least one status code");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *v = json_array_get(a, i);
        join_i(ip, p, i);
        if (!json_is_string(v) || slb_config_grpc_code(json_string_value(v)) < 0)
            return fail(c, ip, 0, "not a gRPC status code name (e.g. \"UNAVAILABLE\", \"RESOURCE_EXHAUSTED\")");
    }
    return 0;
}

static int load_retry(struct vctx *c, json_t *mc, const char *path, const char *key)
{
    static const char *const retry_keys[] = {
        "maxAttempts",          "initialBackoff",        "maxBackoff", "backoffMultiplier",
        "retryableStatusCodes", "perAttemptRecvTimeout", NULL};
    static const char *const hedge_keys[] = {"maxAttempts", "hedgingDelay", "nonFatalStatusCodes", NULL};
    int hedge = strcmp(key, "hedgingPolicy") == 0;
    char p[PATH_MAX_LEN];
    uint32_t u;
    double d;
    json_t *rp;

    if (get_obj(c, mc, path, key, &rp) != 0)
        return -1;
    if (rp == NULL)
        return 0;
    join(p, path, key);
    if (check_keys(c, rp, p, hedge ? hedge_keys : retry_keys) != 0 || require(c, rp, p, "maxAttempts") != 0 ||
        get_u32(c, rp, p, "maxAttempts", &u, 0, 2, SLB_MAX_ATTEMPTS) != 0)
        return -1;
    if (hedge)
        return get_duration(c, rp, p, "hedgingDelay", 0, 0) != 0 ||
                       (json_object_get(rp, "nonFatalStatusCodes") && get_codes(c, rp, p, "nonFatalStatusCodes"))
                   ? -1
                   : 0;
    if (get_duration(c, rp, p, "initialBackoff", 1, 1) != 0 || get_duration(c, rp, p, "maxBackoff", 1, 1) != 0 ||
        get_duration(c, rp, p, "perAttemptRecvTimeout", 0, 1) != 0 || require(c, rp, p, "backoffMultiplier") != 0 ||
        get_num(c, rp, p, "backoffMultiplier", &d, 0, 0, 1, 1000) != 0 ||
        get_codes(c, rp, p, "retryableStatusCodes") != 0)
        return -1;
    return 0;
}

static int load_service_config(struct vctx *c, json_t *o, const char *cpath, struct slb_config_cluster *cl)
{
    static const char *const keys[] = {"methodConfig",        "retryThrottling",   "loadBalancingConfig",
                                       "loadBalancingPolicy", "healthCheckConfig", NULL};
    static const char *const mc_keys[] = {
        "name",        "waitForReady",  "timeout", "maxRequestMessageBytes", "maxResponseMessageBytes",
        "retryPolicy", "hedgingPolicy", NULL};
    static const char *const name_keys[] = {"service", "method", NULL};
    static const char *const thr_keys[] = {"maxTokens", "tokenRatio", NULL};
    char path[PATH_MAX_LEN], mp[PATH_MAX_LEN], ip[PATH_MAX_LEN], np[PATH_MAX_LEN], p[PATH_MAX_LEN];
    json_t *sc, *mcs, *names, *thr;
    uint32_t u;
    double d;

    if (get_obj(c, o, cpath, "service_config", &sc) != 0)
        return -1;
    if (sc == NULL)
        return 0;
    join(path, cpath, "service_config");
    if (check_keys(c, sc, path, keys) != 0 || get_arr(c, sc, path, "methodConfig", &mcs) != 0)
        return -1;
    join(mp, path, "methodConfig");
    for (size_t i = 0; mcs != NULL && i < json_array_size(mcs); i++) {
        json_t *mc = json_array_get(mcs, i);
        join_i(ip, mp, i);
        if (!json_is_object(mc))
            return fail(c, ip, 0, "expected an object, got %s", jtype(mc));
        if (check_keys(c, mc, ip, mc_keys) != 0 || get_arr(c, mc, ip, "name", &names) != 0 ||
            get_bool(c, mc, ip, "waitForReady") != 0 || get_duration(c, mc, ip, "timeout", 0, 0) != 0 ||
            load_retry(c, mc, ip, "retryPolicy") != 0 || load_retry(c, mc, ip, "hedgingPolicy") != 0)
            return -1;
        if (json_object_get(mc, "retryPolicy") && json_object_get(mc, "hedgingPolicy")) {
            join(p, ip, "hedgingPolicy");
            return fail(c, p, 1, "retryPolicy and hedgingPolicy cannot both be set");
        }
        for (size_t j = 0; names != NULL && j < json_array_size(names); j++) {
            json_t *n = json_array_get(names, j);
            join(p, ip, "name");
            join_i(np, p, j);
            if (!json_is_object(n))
                return fail(c, np, 0, "expected an object, got %s", jtype(n));
            if (check_keys(c, n, np, name_keys) != 0 || get_typed(c, n, np, "service", JSON_STRING, "a string", &thr) ||
                get_typed(c, n, np, "method", JSON_STRING, "a string", &thr) != 0)
                return -1;
            if (json_object_get(n, "method") != NULL && json_object_get(n, "service") == NULL)
                return fail(c, np, 0, "\"method\" needs \"service\"");
        }
    }
    if (get_obj(c, sc, path, "retryThrottling", &thr) != 0)
        return -1;
    if (thr != NULL) {
        join(p, path, "retryThrottling");
        if (check_keys(c, thr, p, thr_keys) != 0 || require(c, thr, p, "maxTokens") != 0 ||
            require(c, thr, p, "tokenRatio") != 0 || get_u32(c, thr, p, "maxTokens", &u, 0, 1, 1000) != 0 ||
            get_num(c, thr, p, "tokenRatio", &d, 0, 0, 1, 1e9) != 0)
            return -1;
    }
    return dump_compact(c, sc, path, &cl->service_config_json);
}

static int load_cluster(struct vctx *c, json_t *o, const char *path, struct slb_config_cluster *cl, int has_etcd)
{
    static const char *const keys[] = {"name",
                                       "discovery",
                                       "policy",
                                       "max_connections_per_backend",
                                       "max_streams_per_connection",
                                       "stream_window",
                                       "keepalive_ms",
                                       "keepalive_timeout_ms",
                                       "connect_timeout_ms",
                                       "wait_for_ready_ms",
                                       "max_calls",
                                       "max_waiting_calls",
                                       "max_pending_per_backend",
                                       "queue_timeout_ms",
                                       "max_requests_per_connection",
                                       "max_connection_age_ms",
                                       "backoff",
                                       "health_check",
                                       "outlier_detection",
                                       "service_config",
                                       "tls",
                                       "dns_refresh_ms",
                                       NULL};
    static const char *const bo_keys[] = {
        "initial_ms", "multiplier", "jitter", "max_ms", "min_connect_timeout_ms", "probe_interval_ms", NULL};
    static const char *const od_keys[] = {"consecutive_failures",
                                          "base_ejection_ms",
                                          "max_ejection_ms",
                                          "max_ejection_percent",
                                          "interval_ms",
                                          "success_rate_minimum_hosts",
                                          "success_rate_request_volume",
                                          "success_rate_stdev_factor",
                                          "enforcing_success_rate",
                                          "failure_percentage_threshold",
                                          "failure_percentage_minimum_hosts",
                                          "failure_percentage_request_volume",
                                          "enforcing_failure_percentage",
                                          NULL};
    struct slb_config_backoff *bo = &cl->backoff;
    struct slb_config_outlier *od = &cl->outlier;
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    json_t *v;

    if (check_keys(c, o, path, keys) != 0 || require(c, o, path, "name") != 0 ||
        get_str(c, o, path, "name", 1, &cl->name) != 0 || load_discovery(c, o, path, cl, has_etcd) != 0 ||
        load_policy(c, o, path, cl) != 0 ||
        get_u32(c, o, path, "max_connections_per_backend", &cl->max_connections_per_backend, 8, 1, 1024) != 0 ||
        get_u32(c, o, path, "max_streams_per_connection", &cl->max_streams_per_connection, 1000, 1, 0x7fffffff) != 0 ||
        get_u32(c, o, path, "stream_window", &cl->stream_window, 262144, 65535, 0x7fffffff) != 0 ||
        get_u32(c, o, path, "keepalive_ms", &cl->keepalive_ms, 300000, 0, 86400000) != 0 ||
        get_u32(c, o, path, "keepalive_timeout_ms", &cl->keepalive_timeout_ms, 20000, 1, 600000) != 0 ||
        get_u32(c, o, path, "connect_timeout_ms", &cl->connect_timeout_ms, 5000, 1, 600000) != 0 ||
        get_u32(c, o, path, "wait_for_ready_ms", &cl->wait_for_ready_ms, 3000, 0, 3600000) != 0 ||
        get_u32(c, o, path, "max_calls", &cl->max_calls, 0, 0, 0x7fffffff) != 0 ||
        get_u32(c, o, path, "max_waiting_calls", &cl->max_waiting_calls, 1000, 0, 0x7fffffff) != 0 ||
        get_u32(c, o, path, "max_pending_per_backend", &cl->max_pending_per_backend, 1000, 1, 0x7fffffff) != 0 ||
        get_u32(c, o, path, "queue_timeout_ms", &cl->queue_timeout_ms, 5000, 0, 3600000) != 0 ||
        get_u32(c, o, path, "max_requests_per_connection", &cl->max_requests_per_connection, 0, 0, 0x7fffffff) != 0 ||
        get_u32(c, o, path, "max_connection_age_ms", &cl->max_connection_age_ms, 0, 0, 0x7fffffff) != 0 ||
        get_u32(c, o, path, "dns_refresh_ms", &cl->dns_refresh_ms, 30000, 100, 86400000) != 0)
        return -1;

    bo->initial_ms = 1000;
    bo->multiplier = 1.6;
    bo->jitter = 0.2;
    bo->max_ms = 120000;
    bo->min_connect_timeout_ms = 20000;
    bo->probe_interval_ms = 50;
    if (get_obj(c, o, path, "backoff", &v) != 0)
        return -1;
    if (v != NULL) {
        join(p, path, "backoff");
        if (check_keys(c, v, p, bo_keys) != 0 ||
            get_u32(c, v, p, "initial_ms", &bo->initial_ms, 1000, 1, 3600000) != 0 ||
            get_num(c, v, p, "multiplier", &bo->multiplier, 1.6, 1, 0, 100) != 0 ||
            get_num(c, v, p, "jitter", &bo->jitter, 0.2, 0, 0, 1) != 0 ||
            get_u32(c, v, p, "max_ms", &bo->max_ms, 120000, 1, 86400000) != 0 ||
            get_u32(c, v, p, "min_connect_timeout_ms", &bo->min_connect_timeout_ms, 20000, 1, 600000) != 0 ||
            get_u32(c, v, p, "probe_interval_ms", &bo->probe_interval_ms, 50, 0, 60000) != 0)
            return -1;
        if (bo->max_ms < bo->initial_ms) {
            join(q, p, "max_ms");
            return fail(c, q, 0, "%u is less than initial_ms %u", bo->max_ms, bo->initial_ms);
        }
        if (bo->probe_interval_ms != 0 && bo->probe_interval_ms < 10) {
            /* a connect attempt per backend every few ms is a storm, not a probe */
            join(q, p, "probe_interval_ms");
            return fail(c, q, 0, "%u must be 0 (off) or at least 10", bo->probe_interval_ms);
        }
    }
    if (load_health(c, o, path, "health_check", &cl->health_check) != 0 || load_tls(c, o, path, &cl->tls, 0) != 0)
        return -1;

    slb_outlier_options_default(&od->opts);
    if (get_obj(c, o, path, "outlier_detection", &v) != 0)
        return -1;
    if (v != NULL) {
        join(p, path, "outlier_detection");
        od->enabled = 1;
        if (check_keys(c, v, p, od_keys) != 0 ||
            get_u32(c, v, p, "consecutive_failures", &od->opts.consecutive_failures, 5, 1, 1000000) != 0 ||
            get_u32(c, v, p, "base_ejection_ms", &od->opts.base_ejection_ms, 30000, 1, 86400000) != 0 ||
            get_u32(c, v, p, "max_ejection_ms", &od->opts.max_ejection_ms, 300000, 1, 86400000) != 0 ||
            get_u32(c, v, p, "max_ejection_percent", &od->opts.max_ejection_percent, 10, 0, 100) != 0 ||
            get_u32(c, v, p, "interval_ms", &od->opts.interval_ms, 10000, 10, 86400000) != 0 ||
            get_u32(c, v, p, "success_rate_minimum_hosts", &od->opts.success_rate_minimum_hosts, 5, 1, 1000000) != 0 ||
            get_u32(c, v, p, "success_rate_request_volume", &od->opts.success_rate_request_volume, 100, 1, 100000000) !=
                0 ||
            get_num(c, v, p, "success_rate_stdev_factor", &od->opts.success_rate_stdev_factor, 1.9, 0, 1, 100) != 0 ||
            get_u32(c, v, p, "enforcing_success_rate", &od->opts.enforcing_success_rate, 100, 0, 100) != 0 ||
            get_u32(c, v, p, "failure_percentage_threshold", &od->opts.failure_percentage_threshold, 85, 0, 100) != 0 ||
            get_u32(c, v, p, "failure_percentage_minimum_hosts", &od->opts.failure_percentage_minimum_hosts, 5, 1,
                    1000000) != 0 ||
            get_u32(c, v, p, "failure_percentage_request_volume", &od->opts.failure_percentage_request_volume, 50, 1,
                    100000000) != 0 ||
            get_u32(c, v, p, "enforcing_failure_percentage", &od->opts.enforcing_failure_percentage, 0, 0, 100) != 0)
            return -1;
        if (od->opts.max_ejection_ms < od->opts.base_ejection_ms) {
            join(q, p, "max_ejection_ms");
            return fail(c, q, 0, "%u is less than base_ejection_ms %u", od->opts.max_ejection_ms,
                        od->opts.base_ejection_ms);
        }
    }
    return load_service_config(c, o, path, cl);
}

static int load_clusters(struct vctx *c, json_t *root, struct slb_config *cfg)
{
    char p[PATH_MAX_LEN], np[PATH_MAX_LEN];
    json_t *a;
    if (require(c, root, "", "clusters") != 0 || get_arr(c, root, "", "clusters", &a) != 0)
        return -1;
    if (json_array_size(a) == 0)
        return fail(c, "clusters", 0, "needs at least one cluster");
    if ((cfg->clusters = calloc(json_array_size(a), sizeof(*cfg->clusters))) == NULL)
        return fail(c, "clusters", 0, "out of memory");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *o = json_array_get(a, i);
        join_i(p, "clusters", i);
        cfg->n_clusters++;
        if (!json_is_object(o))
            return fail(c, p, 0, "expected an object, got %s", jtype(o));
        if (load_cluster(c, o, p, &cfg->clusters[i], cfg->has_etcd) != 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->clusters[j].name, cfg->clusters[i].name) == 0) {
                join(np, p, "name");
                return fail(c, np, 0, "duplicate cluster name \"%s\" (first at clusters[%zu])", cfg->clusters[i].name,
                            j);
            }
    }
    return 0;
}

static int resolve_cluster(struct vctx *c, const struct slb_config *cfg, const char *path, const char *name, int *index)
{
    char known[256] = "";
    size_t o = 0;
    if ((*index = slb_config_cluster_index(cfg, name)) >= 0)
        return 0;
    for (size_t i = 0; i < cfg->n_clusters; i++)
        o += (size_t)snprintf(known + o, o < sizeof(known) ? sizeof(known) - o : 0, "%s%s", i ? ", " : "",
                              cfg->clusters[i].name);
    return fail(c, path, 0, "unknown cluster \"%s\" (known: %s)", name, known);
}

static int resolve_routes(struct vctx *c, struct slb_config *cfg)
{
    char lp[PATH_MAX_LEN], p[PATH_MAX_LEN], rp[PATH_MAX_LEN];
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct slb_config_listener *l = &cfg->listeners[i];
        join_i(lp, "listeners", i);
        for (size_t j = 0; j < l->n_routes; j++) {
            join(p, lp, "routes");
            join_i(rp, p, j);
            join(p, rp, "cluster");
            if (resolve_cluster(c, cfg, p, l->routes[j].cluster, &l->routes[j].cluster_index) != 0)
                return -1;
        }
        join(p, lp, "default_cluster");
        if (l->default_cluster != NULL &&
            resolve_cluster(c, cfg, p, l->default_cluster, &l->default_cluster_index) != 0)
            return -1;
    }
    return 0;
}

static int load_register(struct vctx *c, json_t *o, const char *path, struct slb_config_register *r)
{
    static const char *const keys[] = {"prefix", "address",      "ttl_s",          "weight", "zone", "metadata",
                                       "format", "health_check", "health_address", "tls",    NULL};
    char p[PATH_MAX_LEN], *fmt = NULL;
    json_t *md;

    if (check_keys(c, o, path, keys) != 0 || require(c, o, path, "prefix") != 0 ||
        get_str(c, o, path, "prefix", 1, &r->prefix) != 0 || get_addr(c, o, path, "address", 1, &r->address) != 0 ||
        get_u32(c, o, path, "ttl_s", &r->ttl_s, 10, 1, 86400) != 0 ||
        get_u32(c, o, path, "weight", &r->weight, 1, 1, 1000000) != 0 ||
        get_str(c, o, path, "zone", 0, &r->zone) != 0 || get_obj(c, o, path, "metadata", &md) != 0 ||
        get_str(c, o, path, "format", 1, &fmt) != 0 || load_health(c, o, path, "health_check", &r->health_check) != 0 ||
        get_addr(c, o, path, "health_address", 0, &r->health_address) != 0 || load_tls(c, o, path, &r->tls, 0) != 0)
        goto fail;
    join(p, path, "metadata");
    if (md != NULL && dump_compact(c, md, p, &r->metadata_json) != 0)
        goto fail;
    r->format = SLB_REGISTER_PLAIN;
    join(p, path, "format");
    if (fmt != NULL) {
        if (strcmp(fmt, "etcd_naming") == 0)
            r->format = SLB_REGISTER_ETCD_NAMING;
        else if (strcmp(fmt, "json") == 0)
            r->format = SLB_REGISTER_JSON;
        else if (strcmp(fmt, "plain") != 0) {
            fail(c, p, 0, "unknown format \"%s\" (known: plain, etcd_naming, json)", fmt);
            goto fail;
        }
    }
    free(fmt);
    fmt = NULL;
    /* a plain value is just "host:port": extras would be silently lost */
    if (r->format == SLB_REGISTER_PLAIN) {
        const char *extra = md ? "metadata" : json_object_get(o, "weight") ? "weight" : r->zone ? "zone" : NULL;
        if (extra != NULL) {
            join(p, path, extra);
            return fail(c, p, 1, "format \"plain\" stores only host:port; set \"format\": \"json\" to publish %s",
                        extra);
        }
    }
    if (r->tls.enabled && !r->health_check.enabled) {
        join(p, path, "tls");
        return fail(c, p, 1, "tls applies to the health check: it needs \"health_check\"");
    }
    if (r->health_address == NULL && (r->health_address = strdup(r->address)) == NULL)
        return fail(c, path, 0, "out of memory");
    return 0;
fail:
    free(fmt);
    return -1;
}

static int load_registers(struct vctx *c, json_t *root, struct slb_config *cfg)
{
    char p[PATH_MAX_LEN];
    json_t *a;
    if (get_arr(c, root, "", "register", &a) != 0)
        return -1;
    if (a == NULL || json_array_size(a) == 0)
        return 0;
    if (!cfg->has_etcd)
        return fail(c, "register", 1, "registration needs a top-level \"etcd\" section with endpoints");
    if ((cfg->registers = calloc(json_array_size(a), sizeof(*cfg->registers))) == NULL)
        return fail(c, "register", 0, "out of memory");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *o = json_array_get(a, i);
        join_i(p, "register", i);
        cfg->n_registers++;
        if (!json_is_object(o))
            return fail(c, p, 0, "expected an object, got %s", jtype(o));
        if (load_register(c, o, p, &cfg->registers[i]) != 0)
            return -1;
    }
    return 0;
}

void slb_config_budgets_default(struct slb_config_budgets *b)
{
    b->connection_bytes = 16u << 20;
    b->total_bytes = 256u << 20;
    b->call_retry_bytes = 256u << 10; /* gRPC core's per-RPC retry buffer default */
    b->read_bytes_per_turn = 256u << 10;
}

static int load_budgets(struct vctx *c, json_t *root, struct slb_config_budgets *b)
{
    static const char *const keys[] = {"connection_bytes", "total_bytes", "call_retry_bytes", "read_bytes_per_turn",
                                       NULL};
    struct slb_config_budgets d;
    json_t *o;

    slb_config_budgets_default(&d);
    *b = d;
    if (get_obj(c, root, "", "budgets", &o) != 0)
        return -1;
    if (o == NULL)
        return 0;
    if (check_keys(c, o, "budgets", keys) != 0 ||
        get_u32(c, o, "budgets", "connection_bytes", &b->connection_bytes, d.connection_bytes, 1u << 20, 0xffffffffu) !=
            0 ||
        get_u32(c, o, "budgets", "total_bytes", &b->total_bytes, d.total_bytes, 1u << 20, 0xffffffffu) != 0 ||
        get_u32(c, o, "budgets", "call_retry_bytes", &b->call_retry_bytes, d.call_retry_bytes, 0, 1u << 30) != 0 ||
        get_u32(c, o, "budgets", "read_bytes_per_turn", &b->read_bytes_per_turn, d.read_bytes_per_turn, 0, 1u << 30) !=
            0)
        return -1;
    if (b->total_bytes < b->connection_bytes)
        return fail(c, "budgets.total_bytes", 0, "%u is less than budgets.connection_bytes (%u)", b->total_bytes,
                    b->connection_bytes);
    if (b->read_bytes_per_turn != 0 && b->read_bytes_per_turn < (16u << 10))
        return fail(c, "budgets.read_bytes_per_turn", 0, "%u is below 16384 (one HTTP/2 frame); 0 means no limit",
                    b->read_bytes_per_turn);
    return 0;
}

static int load_access_log(struct vctx *c, json_t *root, struct slb_config_access_log *a)
{
    static const char *const keys[] = {"path", "sample_rate", "max_lines_per_second", NULL};
    json_t *o;

    a->sample_rate = 1;
    a->max_lines_per_second = 10000;
    if (get_obj(c, root, "", "access_log", &o) != 0)
        return -1;
    if (o == NULL)
        return 0;
    if (check_keys(c, o, "access_log", keys) != 0 || require(c, o, "access_log", "path") != 0 ||
        get_str(c, o, "access_log", "path", 1, &a->path) != 0 ||
        get_num(c, o, "access_log", "sample_rate", &a->sample_rate, 1, 0, 0, 1) != 0 ||
        get_u32(c, o, "access_log", "max_lines_per_second", &a->max_lines_per_second, 10000, 1, 1000000) != 0)
        return -1;
    if (strcmp(a->path, "-") != 0 && a->path[0] != '/')
        return fail(c, "access_log.path", 0, "\"%s\" is not an absolute path (or \"-\" for stderr)", a->path);
    return 0;
}

static int load_metrics(struct vctx *c, json_t *root, struct slb_config *cfg)
{
    static const char *const keys[] = {"max_methods", NULL};
    json_t *o;

    if (get_obj(c, root, "", "metrics", &o) != 0)
        return -1;
    if (o == NULL)
        return 0;
    return check_keys(c, o, "metrics", keys) != 0 ||
                   get_u32(c, o, "metrics", "max_methods", &cfg->metrics_max_methods, 0, 0, 1000) != 0
               ? -1
               : 0;
}

/* "state_dir": absent = the default, "" or null = no persisted tables, else an absolute path. */
static int load_state_dir(struct vctx *c, json_t *root, struct slb_config *cfg)
{
    json_t *v = json_object_get(root, "state_dir");

    if (v == NULL)
        cfg->state_dir = strdup(SLB_CONFIG_STATE_DIR_DEFAULT);
    else if (json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0))
        return 0;
    else if (get_str(c, root, "", "state_dir", 1, &cfg->state_dir) != 0)
        return -1;
    if (cfg->state_dir == NULL)
        return fail(c, "state_dir", 0, "out of memory");
    if (cfg->state_dir[0] != '/')
        return fail(c, "state_dir", 0, "must be an absolute path (or \"\" to turn persisted tables off)");
    if (strlen(cfg->state_dir) > 3000)
        return fail(c, "state_dir", 0, "longer than 3000 bytes");
    return 0;
}

/* The CPUs this process may run on (its affinity mask), at least 1. */
static uint32_t usable_cpus(void)
{
    cpu_set_t set;
    long n;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (uint32_t)CPU_COUNT(&set);
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (uint32_t)n : 1;
}

/* "workers": 1..SLB_MAX_WORKERS forwarding loops, or "auto" (one per usable CPU, at most the maximum). */
static int load_workers(struct vctx *c, json_t *root, struct slb_config *cfg)
{
    json_t *v = json_object_get(root, "workers");

    cfg->workers = 1;
    if (v == NULL)
        return 0;
    if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0) {
        uint32_t n = usable_cpus();
        cfg->workers = n < SLB_MAX_WORKERS ? n : SLB_MAX_WORKERS;
        cfg->workers_auto = 1;
        return 0;
    }
    if (!json_is_integer(v))
        return fail(c, "workers", 0, "expected an integer 1..%d or \"auto\", got %s", SLB_MAX_WORKERS, jtype(v));
    return get_u32(c, root, "", "workers", &cfg->workers, 1, 1, SLB_MAX_WORKERS);
}

static int load_root(struct vctx *c, json_t *root, struct slb_config *cfg)
{
    static const char *const keys[] = {
        "log_level", "etcd",       "listeners", "clusters",  "register", "admin", "max_app_connections",
        "budgets",   "access_log", "metrics",   "state_dir", "workers",  NULL};
    static const char *const admin_keys[] = {"address", NULL};
    char *level = NULL;
    json_t *admin;

    if (!json_is_object(root))
        return fail(c, "", 0, "expected an object, got %s", jtype(root));
    if (check_keys(c, root, "", keys) != 0 || get_str(c, root, "", "log_level", 1, &level) != 0 ||
        get_u32(c, root, "", "max_app_connections", &cfg->max_app_connections, 0, 1, 0x7fffffff) != 0)
        return -1;
    cfg->log_level = SLB_LOG_NOTICE;
    if (level != NULL) {
        cfg->log_level = slb_log_parse_level(level);
        free(level);
        if (cfg->log_level < 0)
            return fail(c, "log_level", 0, "unknown level (known: debug, info, notice, warn, error)");
    }
    if (load_etcd(c, root, cfg) != 0 || load_listeners(c, root, cfg) != 0 || load_clusters(c, root, cfg) != 0 ||
        resolve_routes(c, cfg) != 0 || load_registers(c, root, cfg) != 0 || load_budgets(c, root, &cfg->budgets) != 0 ||
        load_access_log(c, root, &cfg->access_log) != 0 || load_metrics(c, root, cfg) != 0 ||
        get_obj(c, root, "", "admin", &admin) || load_state_dir(c, root, cfg) != 0 || load_workers(c, root, cfg) != 0)
        return -1;
    if (admin != NULL &&
        (check_keys(c, admin, "admin", admin_keys) != 0 || get_admin_addr(c, admin, &cfg->admin_address) != 0))
        return -1;
    return 0;
}

/* ---- entry points ------------------------------------------------------ */

/* The effective document for admin GET /config (defaults filled in, config_effective.h): etcd.password replaced
 * (password_file stays: a path). */
static char *redacted_dump(json_t *root, const struct slb_config *cfg)
{
    json_t *copy = json_deep_copy(root), *etcd;
    char *out;

    if (copy == NULL || slb_config_fill_effective(copy, cfg) != 0) {
        json_decref(copy);
        return NULL;
    }
    etcd = json_object_get(copy, "etcd");
    if (json_is_object(etcd) && json_object_get(etcd, "password") != NULL)
        json_object_set_new(etcd, "password", json_string("<redacted>"));
    out = json_dumps(copy, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(copy);
    return out;
}

static struct slb_config *load_text(const char *text, size_t len, const char *name, char *err, size_t errlen)
{
    struct vctx c = {.name = name, .err = err, .errlen = errlen};
    struct slb_config *cfg = NULL;
    struct scan sc;
    json_error_t je;
    json_t *root;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        /* place the syntax error on a path too, when the tokenizer gets that far */
        index_build(&sc, text, len, &c.idx, je.position > 0 ? (size_t)je.position - 1 : 0);
        index_free(&c.idx);
        if (err != NULL && errlen > 0)
            bfmt(err, errlen, "%s:%d:%d: %s%s%s", name, je.line < 1 ? 1 : je.line, je.column < 1 ? 1 : je.column,
                 sc.stopped ? (sc.stop_path[0] ? sc.stop_path : "(root)") : "", sc.stopped ? ": " : "", je.text);
        if (err != NULL && errlen > 0)
            oneline(err);
        return NULL;
    }
    index_build(&sc, text, len, &c.idx, (size_t)-1);
    if ((cfg = calloc(1, sizeof(*cfg))) == NULL || (cfg->path = strdup(name)) == NULL) {
        fail(&c, "", 0, "out of memory");
        goto fail;
    }
    if (load_root(&c, root, cfg) != 0)
        goto fail;
    if ((cfg->redacted_json = redacted_dump(root, cfg)) == NULL) {
        fail(&c, "", 0, "out of memory");
        goto fail;
    }
    json_decref(root);
    index_free(&c.idx);
    return cfg;
fail:
    json_decref(root);
    index_free(&c.idx);
    slb_config_free(cfg);
    return NULL;
}

struct slb_config *slb_config_load_string(const char *json, const char *name, char *err, size_t errlen)
{
    if (name == NULL)
        name = "<string>";
    if (json == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: no configuration text", name);
        return NULL;
    }
    return load_text(json, strlen(json), name, err, errlen);
}

struct slb_config *slb_config_load_file(const char *path, char *err, size_t errlen)
{
    struct slb_config *cfg = NULL;
    char *buf = NULL;
    size_t n = 0;
    FILE *f;

    if (err == NULL)
        errlen = 0;
    if ((f = fopen(path, "rb")) == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if ((buf = malloc(MAX_CONFIG_BYTES + 1)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    n = fread(buf, 1, MAX_CONFIG_BYTES + 1, f);
    if (ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    if (n > MAX_CONFIG_BYTES) {
        snprintf(err, errlen, "%s: larger than %u bytes", path, MAX_CONFIG_BYTES);
        goto out;
    }
    cfg = load_text(buf, n, path, err, errlen);
out:
    free(buf);
    fclose(f);
    return cfg;
}

int slb_config_cluster_index(const struct slb_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_clusters; i++)
        if (cfg->clusters[i].name != NULL && strcmp(cfg->clusters[i].name, name) == 0)
            return (int)i;
    return -1;
}

void slb_config_free(struct slb_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct slb_config_listener *l = &cfg->listeners[i];
        for (size_t j = 0; j < l->n_routes; j++) {
            free(l->routes[j].service);
            free(l->routes[j].cluster);
        }
        free(l->routes);
        free(l->name);
        free(l->address);
        free(l->default_cluster);
        free_tls(&l->tls);
    }
    free(cfg->listeners);
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        struct slb_config_cluster *cl = &cfg->clusters[i];
        for (size_t j = 0; j < cl->n_static; j++) {
            free(cl->static_backends[j].address);
            free(cl->static_backends[j].zone);
        }
        free(cl->static_backends);
        free(cl->name);
        free(cl->etcd_prefix);
        free(cl->policy);
        free(cl->health_check.service);
        free(cl->service_config_json);
        free_tls(&cl->tls);
    }
    free(cfg->clusters);
    for (size_t i = 0; i < cfg->etcd.n_endpoints; i++)
        free(cfg->etcd.endpoints[i]);
    free(cfg->etcd.endpoints);
    free(cfg->etcd.username);
    if (cfg->etcd.password != NULL)
        explicit_bzero(cfg->etcd.password, strlen(cfg->etcd.password));
    free(cfg->etcd.password);
    free(cfg->etcd.password_file);
    free(cfg->redacted_json);
    free(cfg->etcd.ca_file);
    free(cfg->etcd.cert_file);
    free(cfg->etcd.key_file);
    for (size_t i = 0; i < cfg->n_registers; i++) {
        struct slb_config_register *r = &cfg->registers[i];
        free(r->prefix);
        free(r->address);
        free(r->zone);
        free(r->metadata_json);
        free(r->health_check.service);
        free(r->health_address);
        free_tls(&r->tls);
    }
    free(cfg->registers);
    free(cfg->admin_address);
    free(cfg->access_log.path);
    free(cfg->state_dir);
    free(cfg->path);
    free(cfg);
}
