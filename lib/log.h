/*
 * Leveled logging to stderr (journald adds time and unit). The level is
 * checked before any formatting, so a DEBUG line on the call path costs one
 * compare when debug is off (redis serverLog).
 */
#ifndef SLB_LOG_H
#define SLB_LOG_H

#include <stddef.h>
#include <stdint.h>

enum slb_log_level { SLB_LOG_DEBUG = 0, SLB_LOG_INFO, SLB_LOG_NOTICE, SLB_LOG_WARN, SLB_LOG_ERROR };

extern int slb_log_level;
/* The level, read as a relaxed atomic: a reload sets it while worker threads log. */
static inline int slb_log_level_now(void)
{
    return __atomic_load_n(&slb_log_level, __ATOMIC_RELAXED);
}

void slb_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Copies in to out with control characters as \xNN and '\\' doubled, cut to fit
 * outlen (NUL included, never splitting an escape). Returns the length. */
size_t slb_log_escape(const char *in, char *out, size_t outlen);
/* "debug", "info", "notice", "warn", "error" -> level, or -1. */
int slb_log_parse_level(const char *name);

/* At most one line per interval for one kind of event, so a flood logs once
 * (with how many events it did not log) instead of once per event.
 * Owner: embedded in whoever logs that kind of event. */
struct slb_log_limit {
    uint64_t next_ms; /* no line before this */
    uint64_t skipped; /* events since the last line that were not logged */
};

/* 1 when a line may be written now: *skipped gets the events not logged since the last one. */
static inline int slb_log_limit_pass(struct slb_log_limit *l, uint64_t now_ms, uint32_t interval_ms, uint64_t *skipped)
{
    if (now_ms < l->next_ms) {
        l->skipped++;
        return 0;
    }
    *skipped = l->skipped;
    l->skipped = 0;
    l->next_ms = now_ms + interval_ms;
    return 1;
}

#define slb_log(level, ...)                                                                                            \
    do {                                                                                                               \
        if ((level) >= slb_log_level_now())                                                                            \
            slb_log_write((level), __VA_ARGS__);                                                                       \
    } while (0)
#define slb_debug(...)  slb_log(SLB_LOG_DEBUG, __VA_ARGS__)
#define slb_info(...)   slb_log(SLB_LOG_INFO, __VA_ARGS__)
#define slb_notice(...) slb_log(SLB_LOG_NOTICE, __VA_ARGS__)
#define slb_warn(...)   slb_log(SLB_LOG_WARN, __VA_ARGS__)
#define slb_error(...)  slb_log(SLB_LOG_ERROR, __VA_ARGS__)

#endif
