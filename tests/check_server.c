/* lib/server.c: the default cap on app connections leaves a file descriptor reserve. */
#include <check.h>

#include "server.h"

START_TEST(test_app_conn_ceiling)
{
    /* nofile minus max(256, 25 %), the reserve never more than half */
    ck_assert_uint_eq(slb_server_app_conn_ceiling(1024), 768);
    ck_assert_uint_eq(slb_server_app_conn_ceiling(20000), 15000);
    ck_assert_uint_eq(slb_server_app_conn_ceiling(1048576), 786432);
    ck_assert_uint_eq(slb_server_app_conn_ceiling(400), 200);
    ck_assert_uint_eq(slb_server_app_conn_ceiling(1), 1);
    ck_assert_uint_eq(slb_server_app_conn_ceiling((uint64_t)1 << 40), 0x7fffffff);
}
END_TEST

Suite *server_suite(void)
{
    Suite *s = suite_create("server");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_app_conn_ceiling);
    suite_add_tcase(s, tc);
    return s;
}
