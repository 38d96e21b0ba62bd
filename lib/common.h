/*
 * Small helpers shared by every module: container_of, array sizes, our own
 * error codes (negative ints, like libuv's UV_E*), and SLB_STATIC, which
 * makes file-static helpers reachable from unit tests (curl's UNITTEST).
 */
#ifndef SLB_COMMON_H
#define SLB_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define slb_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
/* The release (sidelb --version, sidelb_build_info). */
#define SLB_VERSION "0.1.0"

#define SLB_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SLB_LIKELY(x)     __builtin_expect(!!(x), 1)
#define SLB_UNLIKELY(x)   __builtin_expect(!!(x), 0)

#ifdef SLB_UNIT_TEST
#define SLB_STATIC
#else
#define SLB_STATIC static
#endif

/* sidelb's own error codes; I/O functions pass libuv's UV_E* through. */
#define SLB_ERRNO_MAP(XX)                                                                                              \
    XX(CONFIG, -30001, "invalid configuration")                                                                        \
    XX(NOMEM, -30002, "out of memory")                                                                                 \
    XX(NOBACKEND, -30003, "no usable backend")                                                                         \
    XX(LIMIT, -30004, "limit reached")                                                                                 \
    XX(PROTO, -30005, "protocol error")                                                                                \
    XX(ADDR, -30006, "invalid address")                                                                                \
    XX(ETCD, -30007, "etcd error")                                                                                     \
    XX(NOTFOUND, -30008, "not found")                                                                                  \
    XX(NOSTREAMS, -30009, "the backend allows no concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS 0)")              \
    XX(CONFLICT, -30010, "changed since it was read")                                                                  \
    XX(TLS, -30011, "TLS error")

enum {
#define SLB_ERR_ENUM(name, code, msg) SLB_E##name = code,
    SLB_ERRNO_MAP(SLB_ERR_ENUM)
#undef SLB_ERR_ENUM
};

/* Message for one of ours or a libuv error code. */
const char *slb_strerror(int err);

/* Monotonic milliseconds (the loop's cached time where a loop exists). */
uint64_t slb_now_ms(void);
/* Wall-clock milliseconds since 1970 UTC (times shared between hosts: etcd's registered_at_ms). */
uint64_t slb_wall_ms(void);

/* Parses "host:port" / "[v6]:port" into a sockaddr; 0 or SLB_EADDR. */
struct sockaddr_storage;
int slb_parse_addr(const char *hostport, struct sockaddr_storage *out, unsigned *len);

#endif
