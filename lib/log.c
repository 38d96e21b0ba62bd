#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int slb_log_level = SLB_LOG_NOTICE;

static const char *const level_names[] = {"debug", "info", "notice", "warn", "error"};
/* sd-daemon(3) priority prefixes, so journald keeps the level. */
static const char *const level_prefix[] = {"<7>", "<6>", "<5>", "<4>", "<3>"};

void slb_log_write(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;

    if (level < 0 || level > SLB_LOG_ERROR)
        level = SLB_LOG_ERROR;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    fprintf(stderr, "%ssidelb %s: %s\n", level_prefix[level], level_names[level], line);
}

int slb_log_parse_level(const char *name)
{
    for (int i = 0; i <= SLB_LOG_ERROR; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "warning") == 0)
        return SLB_LOG_WARN;
    return -1;
}
