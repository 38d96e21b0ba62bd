/* lib/hostport.h: which form an address string is (IP literal, host name,
 * unix:/path) and its parts; lib/resolver.h: how one lookup's answer turns
 * into backend additions and removals (no churn when nothing changed, the
 * previous addresses kept on a failure); lib/lb.h: Unix-socket peer keys. */
#include <check.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common.h"
#include "hostport.h"
#include "lb.h"
#include "resolver.h"

START_TEST(split)
{
    char host[SLB_HOST_NAME_MAX];
    uint16_t port = 0;

    ck_assert_int_eq(slb_hostport_split("backend.example:50051", host, sizeof(host), &port), 0);
    ck_assert_str_eq(host, "backend.example");
    ck_assert_uint_eq(port, 50051);
    ck_assert_int_eq(slb_hostport_split("[::1]:8080", host, sizeof(host), &port), 0);
    ck_assert_str_eq(host, "::1");
    ck_assert_uint_eq(port, 8080);
    ck_assert_int_eq(slb_hostport_split("a:65535", host, sizeof(host), &port), 0);
    ck_assert_int_eq(slb_hostport_split("a:65536", host, sizeof(host), &port), SLB_EADDR);
    ck_assert_int_eq(slb_hostport_split("a:0", host, sizeof(host), &port), SLB_EADDR);
    ck_assert_int_eq(slb_hostport_split("a:", host, sizeof(host), &port), SLB_EADDR);
    ck_assert_int_eq(slb_hostport_split(":80", host, sizeof(host), &port), SLB_EADDR);
    ck_assert_int_eq(slb_hostport_split("a:8x", host, sizeof(host), &port), SLB_EADDR);
    ck_assert_int_eq(slb_hostport_split("a:000080", host, sizeof(host), &port), SLB_EADDR);
    ck_assert_int_eq(slb_hostport_split("::1:80", host, sizeof(host), &port), SLB_EADDR); /* needs brackets */
    ck_assert_int_eq(slb_hostport_split("[::1]80", host, sizeof(host), &port), SLB_EADDR);
    ck_assert_int_eq(slb_hostport_split("noport", host, sizeof(host), &port), SLB_EADDR);
    ck_assert_int_eq(slb_hostport_split("abcdef:1", host, 4, &port), SLB_EADDR); /* host too long */
    ck_assert_int_eq(slb_hostport_split(NULL, host, sizeof(host), &port), SLB_EADDR);
}
END_TEST

START_TEST(literal_or_name)
{
    ck_assert(slb_hostport_is_literal("127.0.0.1:1"));
    ck_assert(slb_hostport_is_literal("[::1]:1"));
    ck_assert(slb_hostport_is_literal("localhost:1")); /* 127.0.0.1, no lookup */
    ck_assert(!slb_hostport_is_literal("backend:1"));
    ck_assert(slb_hostport_is_name("backend:1"));
    ck_assert(slb_hostport_is_name("backend-1.example.com:50051"));
    ck_assert(slb_hostport_is_name("ip6-localhost:80"));
    ck_assert(slb_hostport_is_name("_grpc.svc:80"));
    ck_assert(!slb_hostport_is_name("127.0.0.1:1"));
    ck_assert(!slb_hostport_is_name("localhost:1"));
    ck_assert(!slb_hostport_is_name("10.0.0.300:1")); /* a bad IPv4 address, not a name */
    ck_assert(!slb_hostport_is_name("-backend:1"));
    ck_assert(!slb_hostport_is_name("backend-:1"));
    ck_assert(!slb_hostport_is_name("a..b:1"));
    ck_assert(!slb_hostport_is_name(".a:1"));
    ck_assert(!slb_hostport_is_name("a b:1"));
    ck_assert(!slb_hostport_is_name("a/b:1"));
    ck_assert(!slb_hostport_is_name("[backend]:1"));
    ck_assert(!slb_hostport_is_name("backend"));
    ck_assert(!slb_hostport_is_name("unix:/run/x.sock"));
    char label[80];
    memset(label, 'a', 64);
    strcpy(label + 64, ":1");
    ck_assert(!slb_hostport_is_name(label)); /* a 64-character label */
    label[63] = '.';
    ck_assert(slb_hostport_is_name(label)); /* 63 and a trailing dot (fully qualified) */
    ck_assert(slb_hostport_is_name("backend.example.:1"));
    ck_assert(!slb_hostport_is_name("backend..:1"));
}
END_TEST

START_TEST(unix_paths)
{
    const char *why = NULL;
    char longp[200] = "unix:/";

    ck_assert_str_eq(slb_unix_path("unix:/run/sidelb/grpc.sock", &why), "/run/sidelb/grpc.sock");
    ck_assert_ptr_null(slb_unix_path("127.0.0.1:80", &why));
    ck_assert_ptr_null(slb_unix_path("unix:relative.sock", &why));
    ck_assert_ptr_nonnull(strstr(why, "absolute"));
    memset(longp + 6, 'x', 120);
    ck_assert_ptr_null(slb_unix_path(longp, &why));
    ck_assert_ptr_nonnull(strstr(why, "107"));
}
END_TEST

/* ---- resolver: one answer applied ---- */

static char events[16][80];
static int n_events;

static void ev(const char *kind, const char *addr)
{
    snprintf(events[n_events++ % 16], sizeof(events[0]), "%s %s", kind, addr);
}
static void sink_add(void *user, const char *addr, const char *host, uint32_t weight, const char *zone, int drain)
{
    ck_assert_str_eq(host, "svc.test");
    ck_assert_uint_eq(weight, 7);
    ev("add", addr);
}
static void sink_update(void *user, const char *addr, uint32_t weight, const char *zone, int drain)
{
    ev("update", addr);
}
static void sink_del(void *user, const char *addr)
{
    ev("del", addr);
}
static int n_settled;
static void sink_settled(void *user)
{
    n_settled++;
}

/* An answer of IPv4 and IPv6 addresses, in the order given. */
static struct addrinfo *answer(const char *const *ips, int n, struct addrinfo *ai, struct sockaddr_storage *ss)
{
    for (int i = 0; i < n; i++) {
        memset(&ai[i], 0, sizeof(ai[i]));
        if (uv_ip4_addr(ips[i], 0, (struct sockaddr_in *)&ss[i]) == 0) {
            ai[i].ai_family = AF_INET;
        } else {
            ck_assert_int_eq(uv_ip6_addr(ips[i], 0, (struct sockaddr_in6 *)&ss[i]), 0);
            ai[i].ai_family = AF_INET6;
        }
        ai[i].ai_addr = (struct sockaddr *)&ss[i];
        ai[i].ai_next = i + 1 < n ? &ai[i + 1] : NULL;
    }
    return n > 0 ? &ai[0] : NULL;
}

START_TEST(resolver_apply_diffs)
{
    static const struct slb_resolver_sink sink = {sink_add, sink_update, sink_del, sink_settled};
    struct slb_resolver res = {.owner = "c", .sink = sink, .refresh_ms = 1000, .n_first_pending = 1};
    struct slb_dns_name n = {.res = &res, .host = "svc.test", .port = 50051, .weight = 7};
    struct addrinfo ai[4];
    struct sockaddr_storage ss[4];
    const char *first[] = {"::1", "127.0.0.1", "127.0.0.1"}; /* duplicates (one per socket type) fold */
    const char *second[] = {"127.0.0.1", "::1"};             /* the same set in another order */
    const char *third[] = {"127.0.0.2", "127.0.0.1"};

    n_events = 0;
    slb_resolver_apply(&n, 0, answer(first, 3, ai, ss));
    ck_assert_int_eq(n_events, 2);
    ck_assert_str_eq(events[0], "add 127.0.0.1:50051");
    ck_assert_str_eq(events[1], "add [::1]:50051");
    ck_assert_uint_eq(n.n_addrs, 2);
    ck_assert(n.resolved);
    ck_assert_int_eq(n_settled, 1); /* the first answer: calls waiting for it go on */
    ck_assert_uint_eq(res.n_first_pending, 0);

    n_events = 0;
    slb_resolver_apply(&n, 0, answer(second, 2, ai, ss));
    ck_assert_int_eq(n_events, 0); /* unchanged: no churn */

    slb_resolver_apply(&n, UV_EAI_NONAME, NULL);
    ck_assert_int_eq(n_events, 0); /* a failure keeps the previous addresses */
    ck_assert_uint_eq(n.n_addrs, 2);
    ck_assert(n.failing);
    slb_resolver_apply(&n, 0, NULL); /* an empty answer is a failure too */
    ck_assert_uint_eq(n.n_addrs, 2);

    slb_resolver_apply(&n, 0, answer(third, 2, ai, ss));
    ck_assert(!n.failing);
    ck_assert_int_eq(n_events, 2);
    ck_assert_str_eq(events[0], "add 127.0.0.2:50051");
    ck_assert_str_eq(events[1], "del [::1]:50051");
    ck_assert_uint_eq(n.n_addrs, 2);
    ck_assert_uint_eq(res.failures, 2);
    ck_assert_int_eq(n_settled, 1); /* only the first answer settles */
    free(n.addrs);
}
END_TEST

START_TEST(resolver_format)
{
    struct sockaddr_storage ss;
    char out[64];

    uv_ip6_addr("2001:db8::5", 0, (struct sockaddr_in6 *)&ss);
    ck_assert_int_eq(slb_resolver_format_addr((struct sockaddr *)&ss, 443, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "[2001:db8::5]:443");
    ck_assert(slb_hostport_is_literal(out));
    ck_assert_int_eq(slb_resolver_format_addr((struct sockaddr *)&ss, 443, out, 8), SLB_EADDR);
}
END_TEST

START_TEST(unix_peer_keys)
{
    struct slb_lb_peer_keys a, a2, b;

    slb_lb_peer_keys_init_unix(&a, 100, 1);
    slb_lb_peer_keys_init_unix(&a2, 100, 2);
    slb_lb_peer_keys_init_unix(&b, 101, 1);
    ck_assert(a.ip == a2.ip);           /* one process: one source_ip key */
    ck_assert(a.ip_port != a2.ip_port); /* ... one source_ip_port key per connection */
    ck_assert(a.ip != b.ip);
    ck_assert(!a.loopback);
}
END_TEST

Suite *hostport_suite(void)
{
    Suite *s = suite_create("hostport");
    TCase *tc = tcase_create("hostport");

    tcase_add_test(tc, split);
    tcase_add_test(tc, literal_or_name);
    tcase_add_test(tc, unix_paths);
    tcase_add_test(tc, resolver_apply_diffs);
    tcase_add_test(tc, resolver_format);
    tcase_add_test(tc, unix_peer_keys);
    suite_add_tcase(s, tc);
    return s;
}
