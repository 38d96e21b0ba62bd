#include "etcd_value.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"

static int fail(char *err, size_t errlen, const char *key, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, const char *key, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "etcd key \"%s\": %s", key, msg);
    return SLB_EPROTO;
}

/* host:port or [v6]:port; host made of printable non-space characters, port 1..65535. */
static int valid_hostport(const char *s, size_t len)
{
    const char *colon;
    size_t hl;
    long port = 0;

    if (len == 0 || len >= SLB_BACKEND_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] <= ' ' || s[i] >= 0x7f || s[i] == '/' || s[i] == '"')
            return 0;
    if (s[0] == '[') {
        const char *rb = memchr(s, ']', len);
        if (rb == NULL || rb == s + 1 || rb + 1 >= s + len || rb[1] != ':')
            return 0;
        colon = rb + 1;
    } else {
        colon = NULL;
        for (size_t i = 0; i < len; i++) {
            char ch = s[i];
            if (ch == ':') {
                if (colon != NULL)
                    return 0; /* bare IPv6 needs brackets */
                colon = s + i;
            } else if (colon == NULL && !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                                          (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_')) {
                return 0; /* a host name or IPv4 literal: letters, digits, '.', '-', '_' (found by fuzzing) */
            }
        }
        if (colon == NULL || colon == s)
            return 0;
    }
    hl = (size_t)(s + len - (colon + 1));
    if (hl == 0 || hl > 5)
        return 0;
    for (const char *p = colon + 1; p < s + len; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        port = port * 10 + (*p - '0');
    }
    return port >= 1 && port <= 65535;
}

static int set_addr(struct slb_etcd_endpoint *ep, const char *s, size_t len)
{
    if (!valid_hostport(s, len))
        return -1;
    memcpy(ep->addr, s, len);
    ep->addr[len] = '\0';
    return 0;
}

/* "registered_at_ms": a positive integer of milliseconds since 1970 UTC. */
static int parse_registered_at(const char *key, json_t *v, struct slb_etcd_endpoint *ep, char *err, size_t errlen)
{
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        (uint64_t)json_integer_value(v) > SLB_ETCD_REGISTERED_AT_MAX)
        return fail(err, errlen, key,
                    "\"registered_at_ms\" must be an integer of milliseconds since 1970-01-01 UTC (1..%llu)",
                    (unsigned long long)SLB_ETCD_REGISTERED_AT_MAX);
    ep->registered_at_ms = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_json(const char *key, json_t *root, struct slb_etcd_endpoint *ep, char *err, size_t errlen)
{
    json_t *addr = json_object_get(root, "addr"), *naming = json_object_get(root, "Addr"), *md;
    const char *k;
    json_t *v;

    if (naming != NULL && addr == NULL) {
        json_t *op = json_object_get(root, "Op");
        json_int_t opv = 0;
        json_object_foreach(root, k, v)
        {
            if (strcmp(k, "registered_at_ms") == 0) {
                if (parse_registered_at(key, v, ep, err, errlen) != 0)
                    return SLB_EPROTO;
            } else if (strcmp(k, "Op") != 0 && strcmp(k, "Addr") != 0 && strcmp(k, "Metadata") != 0) {
                return fail(err, errlen, key, "unknown field \"%s\" in an etcd naming value", k);
            }
        }
        if (op != NULL) {
            if (!json_is_integer(op) || (json_integer_value(op) != 0 && json_integer_value(op) != 1))
                return fail(err, errlen, key, "\"Op\" must be 0 (add) or 1 (delete)");
            opv = json_integer_value(op);
        }
        if (!json_is_string(naming) || set_addr(ep, json_string_value(naming), json_string_length(naming)) != 0)
            return fail(err, errlen, key, "\"Addr\" must be a \"host:port\" string");
        md = json_object_get(root, "Metadata");
        if (md != NULL && !json_is_null(md) && (ep->metadata = json_dumps(md, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
            return fail(err, errlen, key, "out of memory");
        return opv == 1 ? 1 : 0;
    }
    if (addr == NULL)
        return fail(err, errlen, key, "JSON value has neither \"addr\" nor \"Addr\"");
    json_object_foreach(root, k, v)
    {
        if (strcmp(k, "addr") == 0) {
            if (!json_is_string(v) || set_addr(ep, json_string_value(v), json_string_length(v)) != 0)
                return fail(err, errlen, key, "\"addr\" must be a \"host:port\" string");
        } else if (strcmp(k, "weight") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > SLB_ETCD_WEIGHT_MAX)
                return fail(err, errlen, key, "\"weight\" must be an integer in 1..%d", SLB_ETCD_WEIGHT_MAX);
            ep->weight = (uint32_t)json_integer_value(v);
        } else if (strcmp(k, "zone") == 0) {
            if (!json_is_string(v) || json_string_length(v) >= sizeof(ep->zone))
                return fail(err, errlen, key, "\"zone\" must be a string of at most %zu bytes", sizeof(ep->zone) - 1);
            memcpy(ep->zone, json_string_value(v), json_string_length(v) + 1);
        } else if (strcmp(k, "metadata") == 0) {
            if (!json_is_null(v) && (ep->metadata = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
                return fail(err, errlen, key, "out of memory");
        } else if (strcmp(k, "drain") == 0) {
            if (!json_is_boolean(v))
                return fail(err, errlen, key, "\"drain\" must be true or false");
            ep->drain = json_is_true(v) ? 1 : 0;
        } else if (strcmp(k, "registered_at_ms") == 0) {
            if (parse_registered_at(key, v, ep, err, errlen) != 0)
                return SLB_EPROTO;
        } else {
            return fail(err, errlen, key, "unknown field \"%s\"", k);
        }
    }
    return 0;
}

int slb_etcd_value_parse(const char *key, const char *value, size_t len, struct slb_etcd_endpoint *ep, char *err,
                         size_t errlen)
{
    size_t b = 0, e = len;
    int rc;

    memset(ep, 0, sizeof(*ep));
    ep->weight = 1;
    while (b < e && (value[b] == ' ' || value[b] == '\t' || value[b] == '\n' || value[b] == '\r'))
        b++;
    while (e > b && (value[e - 1] == ' ' || value[e - 1] == '\t' || value[e - 1] == '\n' || value[e - 1] == '\r'))
        e--;
    if (b == e)
        return fail(err, errlen, key, "empty value");
    if (value[b] == '{') {
        json_error_t jerr;
        json_t *root = json_loadb(value + b, e - b, 0, &jerr);
        if (root == NULL)
            return fail(err, errlen, key, "invalid JSON at column %d: %s", jerr.column, jerr.text);
        rc = json_is_object(root) ? parse_json(key, root, ep, err, errlen) : SLB_EPROTO;
        json_decref(root);
        if (rc < 0)
            slb_etcd_endpoint_dispose(ep);
        return rc;
    }
    if (set_addr(ep, value + b, e - b) != 0)
        return fail(err, errlen, key, "value \"%.*s\" is not host:port nor a JSON endpoint",
                    (int)(e - b > 64 ? 64 : e - b), value + b);
    return 0;
}

void slb_etcd_endpoint_dispose(struct slb_etcd_endpoint *ep)
{
    free(ep->metadata);
    ep->metadata = NULL;
}

int slb_etcd_endpoint_equal(const struct slb_etcd_endpoint *a, const struct slb_etcd_endpoint *b)
{
    if (strcmp(a->addr, b->addr) != 0 || a->weight != b->weight || strcmp(a->zone, b->zone) != 0 ||
        a->drain != b->drain || a->registered_at_ms != b->registered_at_ms)
        return 0;
    if (a->metadata == NULL || b->metadata == NULL)
        return a->metadata == b->metadata;
    return strcmp(a->metadata, b->metadata) == 0;
}

int slb_etcd_endpoint_copy(struct slb_etcd_endpoint *dst, const struct slb_etcd_endpoint *src)
{
    *dst = *src;
    if (src->metadata != NULL && (dst->metadata = strdup(src->metadata)) == NULL)
        return SLB_ENOMEM;
    return 0;
}

char *slb_etcd_value_format(const struct slb_etcd_endpoint *ep, int format)
{
    json_t *root, *md = NULL;
    char *out;

    if (format == SLB_REGISTER_PLAIN)
        return strdup(ep->addr);
    if (ep->metadata != NULL && (md = json_loads(ep->metadata, JSON_DECODE_ANY, NULL)) == NULL)
        return NULL;
    if (format == SLB_REGISTER_ETCD_NAMING) {
        root = json_pack("{siss}", "Op", 0, "Addr", ep->addr);
        if (root != NULL && md != NULL)
            json_object_set_new(root, "Metadata", md);
        else
            json_decref(md);
        if (root != NULL && ep->registered_at_ms != 0)
            json_object_set_new(root, "registered_at_ms", json_integer((json_int_t)ep->registered_at_ms));
    } else {
        root = json_pack("{ss}", "addr", ep->addr);
        if (root != NULL && ep->weight != 1)
            json_object_set_new(root, "weight", json_integer(ep->weight));
        if (root != NULL && ep->zone[0] != '\0')
            json_object_set_new(root, "zone", json_string(ep->zone));
        if (root != NULL && md != NULL)
            json_object_set(root, "metadata", md);
        if (root != NULL && ep->drain)
            json_object_set_new(root, "drain", json_true());
        json_decref(md);
        if (root != NULL && ep->registered_at_ms != 0)
            json_object_set_new(root, "registered_at_ms", json_integer((json_int_t)ep->registered_at_ms));
    }
    out = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return out;
}
