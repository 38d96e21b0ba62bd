/*
 * Address strings in the config and in etcd values, before any socket: which
 * form one is (an IP literal, a host name to resolve, a Unix socket path) and
 * its parts. Pure functions, no I/O, no allocation.
 *
 *   "10.0.0.1:50051", "[::1]:50051", "localhost:50051"  IP literal (localhost is 127.0.0.1, no lookup)
 *   "backend.example:50051"                             host name: resolved off the loop (lib/resolver.h)
 *   "unix:/run/sidelb/grpc.sock"                        Unix socket (listeners only)
 */
#ifndef SLB_HOSTPORT_H
#define SLB_HOSTPORT_H

#include <stddef.h>
#include <stdint.h>

#define SLB_HOST_NAME_MAX 254 /* 253 characters (RFC 1035) and the NUL */
#define SLB_UNIX_PREFIX   "unix:"

/*
 * Splits "host:port" or "[v6]:port" into host (brackets removed) and port
 * 1..65535. 0, or SLB_EADDR for anything else (no port, port out of range,
 * host too long for hostlen).
 */
int slb_hostport_split(const char *s, char *host, size_t hostlen, uint16_t *port);

/* 1 when s is an IP literal host:port (or localhost:port): usable without a lookup. */
int slb_hostport_is_literal(const char *s);

/* 1 when host is a DNS name sidelb will look up: letters, digits, '-', '_' and
 * dots, labels of 1..63 characters not starting or ending with '-', 253 at most. */
int slb_host_name_valid(const char *host);

/* 1 when s is "host:port" with a valid host name (not an IP literal). */
int slb_hostport_is_name(const char *s);

/*
 * The path of a "unix:/abs/path" address, or NULL when s is not one. The path
 * must be absolute and fit a sockaddr_un (107 bytes); NULL otherwise, with
 * *why (if given) saying what is wrong when s starts with "unix:".
 */
const char *slb_unix_path(const char *s, const char **why);

#endif
