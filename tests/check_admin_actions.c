/* lib/admin_actions.c: who may act (loopback only) and how action paths are read. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "admin_actions.h"
#include "server.h"

static int trusted4(const char *ip)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    return slb_admin_peer_trusted((struct sockaddr *)&sa);
}

static int trusted6(const char *ip)
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, ip, &sa.sin6_addr);
    return slb_admin_peer_trusted((struct sockaddr *)&sa);
}

START_TEST(test_peer_trusted)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    ck_assert_int_eq(trusted4("127.0.0.1"), 1);
    ck_assert_int_eq(trusted4("127.3.2.1"), 1);
    ck_assert_int_eq(trusted4("10.0.0.1"), 0);
    ck_assert_int_eq(trusted4("192.0.2.2"), 0);
    ck_assert_int_eq(trusted4("128.0.0.1"), 0);
    ck_assert_int_eq(trusted6("::1"), 1);
    ck_assert_int_eq(trusted6("::ffff:127.0.0.1"), 1);
    ck_assert_int_eq(trusted6("::ffff:10.0.0.1"), 0);
    ck_assert_int_eq(trusted6("fe80::1"), 0);
    ck_assert_int_eq(trusted6("::"), 0);
    ck_assert_int_eq(slb_admin_peer_trusted((struct sockaddr *)&un), 1);
}
END_TEST

static int act(struct slb_server *srv, int post, int trusted, const char *path, struct slb_admin_answer *a)
{
    return slb_admin_action(srv, post, trusted, path, strlen(path), a);
}

/* A server without clusters: every well-formed action ends at "no cluster", after the checks before it. */
START_TEST(test_action_paths)
{
    struct slb_server srv;
    struct slb_admin_answer a;

    memset(&srv, 0, sizeof(srv));
    ck_assert_int_eq(act(&srv, 1, 1, "/clusters", &a), 0);
    ck_assert_int_eq(act(&srv, 1, 1, "/healthz", &a), 0);
    ck_assert_int_eq(act(&srv, 1, 1, "/clusters/c/backends/1.2.3.4:5/drain", &a), 1);
    ck_assert_int_eq(a.status, 404);
    ck_assert_str_eq(a.body, "no cluster \"c\"\n");
    /* untrusted: refused before anything is looked up or changed */
    act(&srv, 1, 0, "/clusters/c/backends/1.2.3.4:5/undrain", &a);
    ck_assert_int_eq(a.status, 403);
    ck_assert_str_eq(a.body, "forbidden: admin actions are accepted over loopback only\n");
    act(&srv, 0, 1, "/clusters/c/backends/1.2.3.4:5/clear_ejection", &a);
    ck_assert_int_eq(a.status, 405);
    ck_assert_str_eq(a.allow, "Allow: POST\r\n");
    act(&srv, 1, 1, "/clusters/c%2Fd/backends/1.2.3.4:5/drain", &a); /* an encoded '/' is refused */
    ck_assert_int_eq(a.status, 400);
    act(&srv, 1, 1, "/clusters/c/backends/%5B%3A%3A1%5D%3A5/drain", &a);
    ck_assert_int_eq(a.status, 404);
    act(&srv, 1, 1, "/clusters/c/backends/1.2.3.4:5/%", &a);
    ck_assert_int_eq(a.status, 404);
    act(&srv, 1, 1, "/clusters/c/backends/1.2.3.4:5%4/drain", &a);
    ck_assert_int_eq(a.status, 400);
    act(&srv, 1, 1, "/clusters/c/nodes/1.2.3.4:5/drain", &a);
    ck_assert_int_eq(a.status, 404);
    act(&srv, 1, 1, "/clusters/c/backends//drain", &a);
    ck_assert_int_eq(a.status, 400);
    act(&srv, 1, 1, "/clusters/c/backends/1.2.3.4:5/drain/", &a);
    ck_assert_int_eq(a.status, 404);
}
END_TEST

Suite *admin_actions_suite(void)
{
    Suite *s = suite_create("admin_actions");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_peer_trusted);
    tcase_add_test(tc, test_action_paths);
    suite_add_tcase(s, tc);
    return s;
}
