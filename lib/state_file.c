#include "state_file.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "config.h"

int64_t slb_unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- format ---- */

char *slb_state_table_format(const char *cluster, const struct slb_state_table *t)
{
    json_t *root, *arr = json_array();
    char *out = NULL;

    root = json_pack("{s:i, s:s, s:s, s:I, s:I, s:o}", "format", SLB_STATE_FILE_FORMAT, "cluster", cluster, "prefix",
                     t->prefix, "revision", (json_int_t)t->revision, "written_unix_ms", (json_int_t)t->written_unix_ms,
                     "endpoints", arr);
    if (root == NULL)
        return NULL;
    for (size_t i = 0; i < t->n; i++) {
        char *value = slb_etcd_value_format(&t->entries[i].ep, SLB_REGISTER_JSON);
        json_t *v = value ? json_loads(value, 0, NULL) : NULL;
        json_t *e = v ? json_pack("{s:s, s:o}", "key", t->entries[i].key, "value", v) : NULL;
        free(value);
        if (e == NULL || json_array_append_new(arr, e) != 0)
            goto out;
    }
    out = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
out:
    json_decref(root);
    return out;
}

/* ---- parse ---- */

void slb_state_table_dispose(struct slb_state_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->entries[i].key);
        slb_etcd_endpoint_dispose(&t->entries[i].ep);
    }
    free(t->entries);
    free(t->prefix);
    memset(t, 0, sizeof(*t));
}

static int get_int(json_t *root, const char *name, int64_t *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(root, name);

    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return fail(err, errlen, SLB_EPROTO, "\"%s\" must be a non-negative integer", name);
    *out = json_integer_value(v);
    return 0;
}

static int parse_entry(json_t *e, size_t i, const char *prefix, struct slb_state_entry *out, char *err, size_t errlen)
{
    json_t *key = json_object_get(e, "key"), *value = json_object_get(e, "value");
    char verr[384], *text;
    int rc;

    if (!json_is_object(e) || json_object_size(e) != 2 || !json_is_string(key) || !json_is_object(value))
        return fail(err, errlen, SLB_EPROTO, "endpoints[%zu]: must be {\"key\": string, \"value\": object}", i);
    if (strlen(json_string_value(key)) != json_string_length(key) ||
        strncmp(json_string_value(key), prefix, strlen(prefix)) != 0)
        return fail(err, errlen, SLB_EPROTO, "endpoints[%zu]: key is not under the prefix", i);
    if ((text = json_dumps(value, JSON_COMPACT)) == NULL)
        return fail(err, errlen, SLB_ENOMEM, "out of memory");
    rc = slb_etcd_value_parse(json_string_value(key), text, strlen(text), &out->ep, verr, sizeof(verr));
    free(text);
    if (rc == 1)
        slb_etcd_endpoint_dispose(&out->ep);
    if (rc != 0)
        return fail(err, errlen, SLB_EPROTO, "endpoints[%zu]: %s", i, rc == 1 ? "a delete, not an endpoint" : verr);
    if ((out->key = strdup(json_string_value(key))) == NULL) {
        slb_etcd_endpoint_dispose(&out->ep);
        return fail(err, errlen, SLB_ENOMEM, "out of memory");
    }
    return 0;
}

static int parse_root(const char *cluster, json_t *root, struct slb_state_table *t, char *err, size_t errlen)
{
    static const char *const keys[] = {"format", "cluster", "prefix", "revision", "written_unix_ms", "endpoints", NULL};
    json_t *name = json_object_get(root, "cluster"), *prefix = json_object_get(root, "prefix");
    json_t *arr = json_object_get(root, "endpoints");
    int64_t format;
    const char *k;
    json_t *v;
    size_t i;
    int rc;

    if (!json_is_object(root))
        return fail(err, errlen, SLB_EPROTO, "not a JSON object");
    json_object_foreach(root, k, v)
    {
        for (i = 0; keys[i] != NULL && strcmp(keys[i], k) != 0; i++)
            ;
        if (keys[i] == NULL)
            return fail(err, errlen, SLB_EPROTO, "unknown field \"%.64s\"", k);
    }
    if (get_int(root, "format", &format, err, errlen) != 0)
        return SLB_EPROTO;
    if (format != SLB_STATE_FILE_FORMAT)
        return fail(err, errlen, SLB_EPROTO, "format %lld (this sidelb reads %d)", (long long)format,
                    SLB_STATE_FILE_FORMAT);
    if (!json_is_string(name) || strcmp(json_string_value(name), cluster) != 0)
        return fail(err, errlen, SLB_EPROTO, "\"cluster\" is not \"%s\"", cluster);
    if (!json_is_string(prefix) || json_string_length(prefix) == 0 ||
        strlen(json_string_value(prefix)) != json_string_length(prefix))
        return fail(err, errlen, SLB_EPROTO, "\"prefix\" must be a non-empty string");
    if (get_int(root, "revision", &t->revision, err, errlen) != 0 ||
        get_int(root, "written_unix_ms", &t->written_unix_ms, err, errlen) != 0)
        return SLB_EPROTO;
    if (!json_is_array(arr))
        return fail(err, errlen, SLB_EPROTO, "\"endpoints\" must be an array");
    if ((t->prefix = strdup(json_string_value(prefix))) == NULL ||
        (json_array_size(arr) > 0 && (t->entries = calloc(json_array_size(arr), sizeof(*t->entries))) == NULL))
        return fail(err, errlen, SLB_ENOMEM, "out of memory");
    for (i = 0; i < json_array_size(arr); i++) {
        if ((rc = parse_entry(json_array_get(arr, i), i, t->prefix, &t->entries[i], err, errlen)) != 0)
            return rc;
        t->n++;
        for (size_t j = 0; j < i; j++) /* files are small and read once: quadratic is fine */
            if (strcmp(t->entries[j].key, t->entries[i].key) == 0)
                return fail(err, errlen, SLB_EPROTO, "endpoints[%zu]: key listed twice", i);
    }
    return 0;
}

/* Keeps err one log line: keys, field names and jansson's messages may hold control characters. */
static void one_line(char *err, size_t errlen)
{
    for (char *p = err; err != NULL && errlen > 0 && *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

int slb_state_table_parse(const char *cluster, const char *text, size_t len, struct slb_state_table *t, char *err,
                          size_t errlen)
{
    json_error_t jerr;
    json_t *root;
    int rc;

    memset(t, 0, sizeof(*t));
    if ((root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
        rc = fail(err, errlen, SLB_EPROTO, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    } else {
        rc = parse_root(cluster, root, t, err, errlen);
        json_decref(root);
    }
    if (rc != 0) {
        slb_state_table_dispose(t);
        one_line(err, errlen);
    }
    return rc;
}

/* ---- files ---- */

int slb_state_file_path(const char *dir, const char *cluster, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    int n = snprintf(out, outlen, "%s/cluster-", dir);
    size_t o;

    if (n < 0 || (size_t)n >= outlen)
        return SLB_ELIMIT;
    o = (size_t)n;
    for (const unsigned char *p = (const unsigned char *)cluster; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
                    *p == '-' || (*p == '.' && p != (const unsigned char *)cluster);
        if (o + 3 >= outlen)
            return SLB_ELIMIT;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    if (o + sizeof(".json") > outlen)
        return SLB_ELIMIT;
    memcpy(out + o, ".json", sizeof(".json"));
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int slb_state_file_write(const char *dir, const char *cluster, const struct slb_state_table *t, char *err,
                         size_t errlen)
{
    char path[4096], tmp[4096 + 32];
    char *text;
    int fd, dfd, e;

    if (slb_state_file_path(dir, cluster, path, sizeof(path)) != 0)
        return fail(err, errlen, SLB_ELIMIT, "state file name for cluster %s too long", cluster);
    /* a unique temp name: writes of one file may overlap (the last write of a server a reload replaced) */
    snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
    if ((text = slb_state_table_format(cluster, t)) == NULL)
        return fail(err, errlen, SLB_ENOMEM, "%s: out of memory", path);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        e = errno;
        free(text);
        return fail(err, errlen, -e, "cannot create %s: %s", tmp, strerror(e));
    }
    /* fsync before the rename: after a crash the name points at the whole new file or the old one */
    if (fchmod(fd, 0644) != 0 || write_all(fd, text, strlen(text)) != 0 || write_all(fd, "\n", 1) != 0 ||
        fsync(fd) != 0) {
        e = errno;
        close(fd);
        unlink(tmp);
        free(text);
        return fail(err, errlen, -e, "cannot write %s: %s", tmp, strerror(e));
    }
    free(text);
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return fail(err, errlen, -e, "cannot replace %s: %s", path, strerror(e));
    }
    /* the rename itself survives a crash only once the directory is synced */
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int slb_state_file_read(const char *dir, const char *cluster, struct slb_state_table *t, char *err, size_t errlen)
{
    char path[4096], perr[512];
    struct stat st;
    char *text;
    ssize_t n;
    size_t got = 0;
    int fd, rc, e;

    memset(t, 0, sizeof(*t));
    if (slb_state_file_path(dir, cluster, path, sizeof(path)) != 0)
        return fail(err, errlen, SLB_ELIMIT, "state file name for cluster %s too long", cluster);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        e = errno;
        if (e == ENOENT)
            return SLB_ENOTFOUND;
        return fail(err, errlen, -e, "cannot open %s: %s", path, strerror(e));
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > SLB_STATE_FILE_MAX) {
        close(fd);
        return fail(err, errlen, SLB_EPROTO, "%s: not a regular file of at most %u bytes", path, SLB_STATE_FILE_MAX);
    }
    if ((text = malloc((size_t)st.st_size + 1)) == NULL) {
        close(fd);
        return fail(err, errlen, SLB_ENOMEM, "%s: out of memory", path);
    }
    while (got < (size_t)st.st_size) {
        n = read(fd, text + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* a short file parses as truncated JSON */
        got += (size_t)n;
    }
    close(fd);
    if (got == 0) {
        free(text);
        return fail(err, errlen, SLB_EPROTO, "%s: empty file", path);
    }
    rc = slb_state_table_parse(cluster, text, got, t, perr, sizeof(perr));
    free(text);
    if (rc != 0)
        return fail(err, errlen, rc, "%s: %s", path, perr);
    return 0;
}
