#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int slb_log_level = SLB_LOG_NOTICE;

static const char *const level_names[] = {"debug", "info", "notice", "warn", "error"};
/* sd-daemon(3) priority prefixes, so journald keeps the level. */
static const char *const level_prefix[] = {"<7>", "<6>", "<5>", "<4>", "<3>"};

size_t slb_log_escape(const char *in, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (outlen == 0)
        return 0;
    for (; *in != '\0'; in++) {
        unsigned char c = (unsigned char)*in;
        if (c >= 0x20 && c != 0x7f && c != '\\') {
            if (o + 1 >= outlen)
                break;
            out[o++] = (char)c;
        } else if (c == '\\') {
            if (o + 2 >= outlen)
                break;
            out[o++] = '\\';
            out[o++] = '\\';
        } else {
            if (o + 4 >= outlen)
                break;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return o;
}

void slb_log_write(int level, const char *fmt, ...)
{
    char line[1024], safe[1024];
    va_list ap;
    int n;

    if (level < 0 || level > SLB_LOG_ERROR)
        level = SLB_LOG_ERROR;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    /* Lines carry untrusted text (etcd keys and values, backend messages,
     * peer strings): no control character reaches stderr, so an embedded
     * newline cannot forge a journald entry ("\n<0>...") at any priority. */
    slb_log_escape(line, safe, sizeof(safe));
    fprintf(stderr, "%ssidelb %s: %s\n", level_prefix[level], level_names[level], safe);
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
