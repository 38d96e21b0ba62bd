#include "hostport.h"

#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common.h"

int slb_hostport_split(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *h = s, *colon;
    size_t hl;
    unsigned long p = 0;

    if (s == NULL)
        return SLB_EADDR;
    if (*h == '[') {
        const char *rb = strchr(h, ']');
        if (rb == NULL || rb[1] != ':')
            return SLB_EADDR;
        h++;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        if ((colon = strrchr(h, ':')) == NULL || memchr(h, ':', (size_t)(colon - h)) != NULL)
            return SLB_EADDR; /* a bare IPv6 address needs brackets */
        hl = (size_t)(colon - h);
    }
    if (hl == 0 || hl >= hostlen || colon[1] == '\0' || strlen(colon + 1) > 5)
        return SLB_EADDR;
    for (const char *d = colon + 1; *d != '\0'; d++) {
        if (*d < '0' || *d > '9')
            return SLB_EADDR;
        p = p * 10 + (unsigned long)(*d - '0');
    }
    if (p < 1 || p > 65535)
        return SLB_EADDR;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return 0;
}

int slb_hostport_is_literal(const char *s)
{
    struct sockaddr_storage ss;
    unsigned len;

    return s != NULL && slb_parse_addr(s, &ss, &len) == 0;
}

int slb_host_name_valid(const char *host)
{
    size_t n = strlen(host), label = 0;
    char prev = '.';

    if (n > 1 && host[n - 1] == '.')
        n--; /* a fully qualified "example.com." */
    if (n == 0 || n > 253 || host[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = host[i];
        if (ch == '.') {
            if (label == 0 || prev == '-')
                return 0;
            label = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                   (ch == '-' && label > 0)) {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
        prev = ch;
    }
    if (prev == '-')
        return 0;
    /* "10.0.0.300" is a bad IP address, not a name: a last label of digits only is not a host name (RFC 1123) */
    for (size_t i = n - label; i < n; i++)
        if (host[i] < '0' || host[i] > '9')
            return 1;
    return 0;
}

int slb_hostport_is_name(const char *s)
{
    char host[SLB_HOST_NAME_MAX];
    uint16_t port;

    return s != NULL && s[0] != '[' && slb_hostport_split(s, host, sizeof(host), &port) == 0 &&
           !slb_hostport_is_literal(s) && slb_host_name_valid(host);
}

const char *slb_unix_path(const char *s, const char **why)
{
    const size_t plen = sizeof(SLB_UNIX_PREFIX) - 1;
    const char *path;

    if (s == NULL || strncmp(s, SLB_UNIX_PREFIX, plen) != 0)
        return NULL;
    path = s + plen;
    if (path[0] != '/') {
        if (why != NULL)
            *why = "the path after unix: must be absolute";
        return NULL;
    }
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        if (why != NULL)
            *why = "the path is longer than a Unix socket address allows (107 bytes)";
        return NULL;
    }
    return path;
}
