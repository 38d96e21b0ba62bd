#include "common.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

const char *slb_strerror(int err)
{
    /* uv_strerror() leaks a string for codes it does not know: never hand it one */
    static _Thread_local char unknown[64]; /* per thread: worker loops log too */

    if (err == 0)
        return "connection closed";
    switch (err) {
#define SLB_ERR_CASE(name, code, msg)                                                                                  \
    case code:                                                                                                         \
        return msg;
        SLB_ERRNO_MAP(SLB_ERR_CASE)
#undef SLB_ERR_CASE
    }
    return uv_strerror_r(err, unknown, sizeof(unknown));
}

uint64_t slb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t slb_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int slb_parse_addr(const char *hostport, struct sockaddr_storage *out, unsigned *len)
{
    char host[64];
    const char *colon, *h = hostport;
    size_t hl;
    char *end;
    long port;

    if (hostport == NULL)
        return SLB_EADDR;
    if (*h == '[') {
        const char *rb = strchr(h, ']');
        if (rb == NULL || rb[1] != ':')
            return SLB_EADDR;
        hl = (size_t)(rb - h - 1);
        h++;
        colon = rb + 1;
    } else {
        colon = strrchr(h, ':');
        if (colon == NULL)
            return SLB_EADDR;
        hl = (size_t)(colon - h);
    }
    if (hl == 0 || hl >= sizeof(host))
        return SLB_EADDR;
    memcpy(host, h, hl);
    host[hl] = '\0';
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || port <= 0 || port > 65535)
        return SLB_EADDR;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    memset(out, 0, sizeof(*out));
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0) {
        *len = sizeof(struct sockaddr_in);
        return 0;
    }
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0) {
        *len = sizeof(struct sockaddr_in6);
        return 0;
    }
    return SLB_EADDR;
}
