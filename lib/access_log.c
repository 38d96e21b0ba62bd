/*
 * The access log (see access_log.h): two fixed buffers, one filling on the
 * loop while the other is written on the thread pool.
 */
#include "access_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "grpc.h"
#include "log.h"

#define BUF_SIZE         (256u << 10)
#define FLUSH_MS         100
#define LINE_MAX_BYTES   4096  /* a line never needs more: strings are cut to fit */
#define STRING_MAX_BYTES 512   /* longest method (or other string) logged, before escaping */
#define ERROR_LOG_MS     10000 /* at most one line per this long about failing writes */

/* Owner: the server until slb_access_log_close, then itself (freed in its last callback). */
struct slb_access_log {
    uv_loop_t *loop;
    char *path; /* NULL for stderr */
    uv_file fd;
    uv_file old_fd;      /* reopened: closed once the write in flight is done; -1 = none */
    uint64_t sample_max; /* a call is logged when rnd <= sample_max (UINT64_MAX: all) */
    uint8_t sample_none; /* sample_rate 0 */
    uint32_t max_per_second;
    uint64_t second; /* the current second (ms / 1000) and the lines admitted in it */
    uint32_t in_second;
    char *bufs[2];
    size_t fill_len; /* bytes in bufs[fill] */
    uint8_t fill;
    uint8_t writing, reopening, closing, timer_closed;
    uv_buf_t wbuf; /* what the write in flight still has to write */
    uv_fs_t write_req, open_req;
    uv_timer_t timer;
    struct slb_log_limit error_log;
    struct slb_access_log_stats stats;
    time_t text_second; /* second_text is this second's "YYYY-MM-DDTHH:MM:SS" */
    char second_text[64];
};

static void flush(struct slb_access_log *log);

static void maybe_free(struct slb_access_log *log)
{
    if (!log->closing || log->writing || log->reopening || !log->timer_closed)
        return;
    if (log->fill_len > 0 && log->fd >= 0) { /* the last lines: on the thread pool too (a reload keeps serving) */
        flush(log);
        if (log->writing)
            return;
    }
    if (log->path != NULL && log->fd >= 0)
        close(log->fd);
    if (log->old_fd >= 0)
        close(log->old_fd);
    free(log->bufs[0]);
    free(log->bufs[1]);
    free(log->path);
    free(log);
}

static void note_error(struct slb_access_log *log, const char *what, int err)
{
    uint64_t skipped;

    log->stats.write_errors++;
    if (slb_log_limit_pass(&log->error_log, uv_now(log->loop), ERROR_LOG_MS, &skipped))
        slb_warn("access log %s: %s: %s (%llu more errors since the last such line)",
                 log->path ? log->path : "(stderr)", what, slb_strerror(err), (unsigned long long)skipped);
}

static void on_written(uv_fs_t *req)
{
    struct slb_access_log *log = req->data;
    ssize_t n = req->result;

    uv_fs_req_cleanup(req);
    if (n < 0) {
        note_error(log, "write", (int)n);
    } else if ((size_t)n < log->wbuf.len) { /* short write: the rest follows */
        log->wbuf.base += n;
        log->wbuf.len -= (size_t)n;
        if (uv_fs_write(log->loop, &log->write_req, log->fd, &log->wbuf, 1, -1, on_written) == 0)
            return;
        note_error(log, "write", UV_EIO);
    }
    log->writing = 0;
    if (log->old_fd >= 0) {
        close(log->old_fd);
        log->old_fd = -1;
    }
    if (log->closing) {
        maybe_free(log);
        return;
    }
    if (log->fill_len >= BUF_SIZE / 4 * 3)
        flush(log);
}

/* Hands the filling buffer to the thread pool (unless a write is in flight: its callback flushes). */
static void flush(struct slb_access_log *log)
{
    int rv;

    if (log->writing || log->fill_len == 0 || log->fd < 0)
        return;
    log->wbuf = uv_buf_init(log->bufs[log->fill], (unsigned)log->fill_len);
    log->write_req.data = log;
    if ((rv = uv_fs_write(log->loop, &log->write_req, log->fd, &log->wbuf, 1, -1, on_written)) != 0) {
        note_error(log, "write", rv);
        log->fill_len = 0; /* lost: the next lines may fare better */
        return;
    }
    log->writing = 1;
    log->fill ^= 1;
    log->fill_len = 0;
}

static void on_timer(uv_timer_t *t)
{
    flush(t->data);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct slb_access_log *log = h->data;
    log->timer_closed = 1;
    maybe_free(log);
}

static int open_path(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int slb_access_log_open(struct slb_access_log **out, uv_loop_t *loop, const struct slb_config_access_log *cfg,
                        char *err, size_t errlen)
{
    struct slb_access_log *log;

    *out = NULL;
    if ((log = calloc(1, sizeof(*log))) == NULL || (log->bufs[0] = malloc(BUF_SIZE)) == NULL ||
        (log->bufs[1] = malloc(BUF_SIZE)) == NULL ||
        (strcmp(cfg->path, "-") != 0 && (log->path = strdup(cfg->path)) == NULL)) {
        if (log != NULL) {
            free(log->bufs[0]);
            free(log->bufs[1]);
        }
        free(log);
        snprintf(err, errlen, "access log: out of memory");
        return SLB_ENOMEM;
    }
    log->loop = loop;
    log->old_fd = -1;
    log->fd = log->path != NULL ? open_path(log->path) : STDERR_FILENO;
    if (log->fd < 0) {
        int e = errno;
        snprintf(err, errlen, "access_log.path: cannot open %s: %s", log->path, strerror(e));
        free(log->bufs[0]);
        free(log->bufs[1]);
        free(log->path);
        free(log);
        return uv_translate_sys_error(e);
    }
    log->sample_none = cfg->sample_rate <= 0;
    log->sample_max = cfg->sample_rate >= 1 ? UINT64_MAX : (uint64_t)(cfg->sample_rate * 18446744073709551616.0);
    log->max_per_second = cfg->max_lines_per_second;
    uv_timer_init(loop, &log->timer);
    log->timer.data = log;
    uv_timer_start(&log->timer, on_timer, FLUSH_MS, FLUSH_MS);
    uv_unref((uv_handle_t *)&log->timer); /* it alone does not keep the loop running */
    *out = log;
    return 0;
}

int slb_access_log_admit(struct slb_access_log *log, uint64_t now_ms, uint64_t rnd)
{
    if (log->sample_none || rnd > log->sample_max)
        return 0;
    if (now_ms / 1000 != log->second) {
        log->second = now_ms / 1000;
        log->in_second = 0;
    }
    if (log->in_second >= log->max_per_second) {
        log->stats.rate_limited++;
        return 0;
    }
    log->in_second++;
    return 1;
}

/* ---- formatting: by hand, no printf per line (the log may see every call) ---- */

/* Owner: slb_access_log_write (on its stack); p points into the log's filling buffer. */
struct line {
    char *p;
    size_t len, cap;
};

static void add(struct line *l, const char *s, size_t n)
{
    if (n > l->cap - l->len)
        n = l->cap - l->len;
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

#define ADD_LIT(l, lit) add(l, lit, sizeof(lit) - 1)

static void add_u64(struct line *l, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    add(l, tmp + sizeof(tmp) - n, n);
}

/* ns as seconds with 6 decimals ("0.001234"). */
static void add_seconds(struct line *l, uint64_t ns)
{
    uint64_t us = ns / 1000;
    char frac[7];

    add_u64(l, us / 1000000);
    frac[0] = '.';
    for (int i = 6; i >= 1; i--, us /= 10)
        frac[i] = (char)('0' + us % 10);
    add(l, frac, 7);
}

/* ,"key":"value" with the value JSON-escaped (untrusted: the app's method, its address); bytes
 * that are not printable ASCII become \u00XX, so every line is valid JSON (and UTF-8). */
static void add_string(struct line *l, const char *key, size_t key_len, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    add(l, key, key_len);
    if (s == NULL) {
        ADD_LIT(l, "null");
        return;
    }
    if (n > STRING_MAX_BYTES)
        n = STRING_MAX_BYTES;
    ADD_LIT(l, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
            continue;
        add(l, s + run, i - run);
        run = i + 1;
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            add(l, e, 2);
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            add(l, e, 6);
        }
    }
    add(l, s + run, n - run);
    ADD_LIT(l, "\"");
}

#define ADD_STRING(l, lit, s, n) add_string(l, lit, sizeof(lit) - 1, s, n)

static void add_peer(struct line *l, const uv_tcp_t *tcp)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char text[80];
    size_t n = 0;

    if (tcp != NULL && uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET && uv_ip4_name((const struct sockaddr_in *)&ss, text, 64) == 0) {
            n = strlen(text);
            n +=
                (size_t)snprintf(text + n, sizeof(text) - n, ":%u", ntohs(((const struct sockaddr_in *)&ss)->sin_port));
        } else if (ss.ss_family == AF_INET6 && uv_ip6_name((const struct sockaddr_in6 *)&ss, text + 1, 64) == 0) {
            text[0] = '[';
            n = strlen(text);
            n += (size_t)snprintf(text + n, sizeof(text) - n, "]:%u",
                                  ntohs(((const struct sockaddr_in6 *)&ss)->sin6_port));
        } else if (ss.ss_family == AF_UNIX) {
            /* a unix:/path listener: the peer has no address; the connecting process does */
            struct ucred cred = {0};
            socklen_t clen = sizeof(cred);
            uv_os_fd_t fd;
            if (uv_fileno((const uv_handle_t *)tcp, &fd) == 0 &&
                getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
                n = (size_t)snprintf(text, sizeof(text), "unix:pid=%d", (int)cred.pid);
        }
    }
    ADD_STRING(l, ",\"peer\":", n > 0 ? text : NULL, n);
}

/* "YYYY-MM-DDTHH:MM:SS" of unix second secs, formatted once per second. */
static const char *second_text(struct slb_access_log *log, time_t secs)
{
    if (secs != log->text_second) {
        struct tm tm;
        gmtime_r(&secs, &tm);
        snprintf(log->second_text, sizeof(log->second_text), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        log->text_second = secs;
    }
    return log->second_text;
}

void slb_access_log_write(struct slb_access_log *log, const struct slb_access_record *r)
{
    struct timespec now;
    uint64_t start_ns, usec;
    const char *code, *sec;
    char *dst, frac[9];
    struct line l;

    if (BUF_SIZE - log->fill_len < LINE_MAX_BYTES) {
        flush(log);
        if (BUF_SIZE - log->fill_len < LINE_MAX_BYTES) { /* both buffers busy: the disk is behind */
            log->stats.dropped++;
            return;
        }
    }
    dst = log->bufs[log->fill] + log->fill_len;
    l = (struct line){dst, 0, LINE_MAX_BYTES - 2};
    clock_gettime(CLOCK_REALTIME, &now);
    start_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec - r->duration_ns;
    ADD_LIT(&l, "{\"start_time\":\"");
    sec = second_text(log, (time_t)(start_ns / 1000000000u));
    add(&l, sec, strlen(sec));
    usec = start_ns % 1000000000u / 1000;
    frac[0] = '.';
    for (int i = 6; i >= 1; i--, usec /= 10)
        frac[i] = (char)('0' + usec % 10);
    frac[7] = 'Z';
    frac[8] = '"';
    add(&l, frac, 9);
    ADD_STRING(&l, ",\"listener\":", r->listener, r->listener ? strlen(r->listener) : 0);
    add_peer(&l, r->peer);
    ADD_STRING(&l, ",\"method\":", r->method, r->method_len);
    ADD_STRING(&l, ",\"cluster\":", r->cluster, r->cluster ? strlen(r->cluster) : 0);
    ADD_STRING(&l, ",\"backend\":", r->backend, r->backend ? strlen(r->backend) : 0);
    ADD_LIT(&l, ",\"attempts\":");
    add_u64(&l, r->attempts);
    ADD_LIT(&l, ",\"grpc_status\":");
    add_u64(&l, (uint64_t)(r->grpc_status >= 0 ? r->grpc_status : 2));
    code = slb_grpc_status_name(r->grpc_status);
    ADD_STRING(&l, ",\"grpc_code\":", code, strlen(code));
    ADD_LIT(&l, ",\"duration_s\":");
    add_seconds(&l, r->duration_ns);
    ADD_LIT(&l, ",\"upstream_duration_s\":");
    add_seconds(&l, r->upstream_ns);
    ADD_LIT(&l, ",\"request_bytes\":");
    add_u64(&l, r->request_bytes);
    ADD_LIT(&l, ",\"response_bytes\":");
    add_u64(&l, r->response_bytes);
    ADD_LIT(&l, "}");
    dst[l.len++] = '\n'; /* cap leaves room for it */
    log->fill_len += l.len;
    log->stats.lines++;
    if (log->fill_len >= BUF_SIZE / 4 * 3)
        flush(log);
}

/* ---- reopen ---- */

static void on_reopened(uv_fs_t *req)
{
    struct slb_access_log *log = req->data;
    uv_file fd = (uv_file)req->result;

    uv_fs_req_cleanup(req);
    log->reopening = 0;
    if (fd < 0) {
        note_error(log, "reopen", fd);
    } else if (log->closing) {
        close(fd);
    } else {
        flush(log); /* lines formatted before the signal go to the old file */
        if (log->writing) {
            if (log->old_fd >= 0)
                close(log->old_fd);
            log->old_fd = log->fd; /* closed when its write is done */
        } else {
            close(log->fd);
        }
        log->fd = fd;
        log->stats.reopens++;
        slb_notice("access log %s reopened", log->path);
    }
    maybe_free(log);
}

void slb_access_log_reopen(struct slb_access_log *log)
{
    int rv;

    if (log == NULL || log->path == NULL || log->reopening || log->closing)
        return;
    log->open_req.data = log;
    if ((rv = uv_fs_open(log->loop, &log->open_req, log->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640,
                         on_reopened)) != 0) {
        note_error(log, "reopen", rv);
        return;
    }
    log->reopening = 1;
}

const struct slb_access_log_stats *slb_access_log_stats(const struct slb_access_log *log)
{
    return &log->stats;
}

void slb_access_log_close(struct slb_access_log *log)
{
    if (log == NULL || log->closing)
        return;
    log->closing = 1;
    uv_close((uv_handle_t *)&log->timer, on_timer_closed);
}
