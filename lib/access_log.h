/*
 * The access log: one JSON object per line and per call, off by default
 * ("access_log" in the config). Off the call path: a call's line is
 * formatted into an in-memory buffer and a 100 ms loop timer (or a buffer
 * three quarters full) hands the buffer to libuv's thread pool (uv_fs_write)
 * while a second buffer fills, so the loop never waits for the disk. A line
 * that finds both buffers busy is dropped and counted; so are lines past
 * max_lines_per_second, and calls left out by sample_rate are not formatted
 * at all.
 *
 * SIGUSR1 (logrotate) reopens the path, also on the thread pool; lines
 * already handed over go to the file they were written for.
 *
 * Ownership: the server creates it and closes it (slb_access_log_close) once
 * its calls are gone; it frees itself when its last write and its timer are
 * done (the loop runs until then).
 */
#ifndef SLB_ACCESS_LOG_H
#define SLB_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

struct slb_access_log;

/* Owner: the access log; read by /metrics. */
struct slb_access_log_stats {
    uint64_t lines;        /* lines written (handed to the file) */
    uint64_t rate_limited; /* lines past max_lines_per_second */
    uint64_t dropped;      /* lines that found both buffers busy */
    uint64_t write_errors; /* writes or reopens that failed */
    uint64_t reopens;      /* successful reopens (SIGUSR1) */
};

/* One finished call, as the call module sees it. Strings may be NULL (not known: null in the line).
 * Owner: the caller (on its stack, for one slb_access_log_write); the strings are borrowed. */
struct slb_access_record {
    const char *listener, *method, *cluster, *backend;
    size_t method_len;
    const uv_tcp_t *peer; /* the app's connection (its peer address), or NULL */
    int grpc_status;
    uint32_t attempts;
    uint64_t duration_ns, upstream_ns;
    uint64_t request_bytes, response_bytes;
};

/* Opens cfg->path (O_APPEND, created 0640) now, at start. 0, or < 0 with a message in err. */
int slb_access_log_open(struct slb_access_log **out, uv_loop_t *loop, const struct slb_config_access_log *cfg,
                        char *err, size_t errlen);
/* Whether the next call is logged: sample_rate (rnd: a uniform 64-bit random number) then the
 * per-second cap (counted when it refuses). */
int slb_access_log_admit(struct slb_access_log *log, uint64_t now_ms, uint64_t rnd);
/* Formats one line into the buffer (JSON-escaped strings). */
void slb_access_log_write(struct slb_access_log *log, const struct slb_access_record *r);
/* Reopens the path (SIGUSR1); the old file is closed once its last write is done. */
void slb_access_log_reopen(struct slb_access_log *log);
const struct slb_access_log_stats *slb_access_log_stats(const struct slb_access_log *log);
/* Writes what is buffered and closes; the memory goes once the last write and the timer are done.
 * NULL is a no-op. */
void slb_access_log_close(struct slb_access_log *log);

#endif
