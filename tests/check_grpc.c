/* lib/grpc.c: status names, grpc-message percent-encoding, grpc-timeout,
 * message framing scan, HTTP/2 reset mapping. */
#include <check.h>
#include <string.h>

#include "common.h"
#include "grpc.h"

START_TEST(status_names)
{
    ck_assert_str_eq(slb_grpc_status_name(14), "UNAVAILABLE");
    ck_assert_ptr_null(slb_grpc_status_name(17));
    ck_assert_ptr_null(slb_grpc_status_name(-1));
    for (int i = 0; i <= 16; i++)
        ck_assert_int_eq(slb_grpc_status_from_name(slb_grpc_status_name(i)), i);
    ck_assert_int_eq(slb_grpc_status_from_name("unavailable"), -1);
}
END_TEST

START_TEST(percent_encoding)
{
    char out[64];

    ck_assert_uint_eq(slb_grpc_percent_encode("plain text", out, sizeof(out)), 10);
    ck_assert_str_eq(out, "plain text");
    slb_grpc_percent_encode("100% ü\n", out, sizeof(out));
    ck_assert_str_eq(out, "100%25 %C3%BC%0A");
    /* truncation never splits an escape */
    ck_assert_uint_eq(slb_grpc_percent_encode("ab\xff", out, 5), 2);
    ck_assert_str_eq(out, "ab");
    ck_assert_uint_eq(slb_grpc_percent_encode("x", out, 0), 0);
}
END_TEST

START_TEST(timeouts)
{
    uint64_t ms;

    ck_assert_int_eq(slb_grpc_timeout_parse("100m", 4, &ms), 0);
    ck_assert_uint_eq(ms, 100);
    ck_assert_int_eq(slb_grpc_timeout_parse("2S", 2, &ms), 0);
    ck_assert_uint_eq(ms, 2000);
    ck_assert_int_eq(slb_grpc_timeout_parse("1H", 2, &ms), 0);
    ck_assert_uint_eq(ms, 3600000);
    ck_assert_int_eq(slb_grpc_timeout_parse("1500u", 5, &ms), 0);
    ck_assert_uint_eq(ms, 2); /* rounded up */
    ck_assert_int_eq(slb_grpc_timeout_parse("1n", 2, &ms), 0);
    ck_assert_uint_eq(ms, 1);
    ck_assert_int_eq(slb_grpc_timeout_parse("m", 1, &ms), SLB_EPROTO);
    ck_assert_int_eq(slb_grpc_timeout_parse("123456789m", 10, &ms), SLB_EPROTO); /* more than 8 digits */
    ck_assert_int_eq(slb_grpc_timeout_parse("10x", 3, &ms), SLB_EPROTO);
    ck_assert_int_eq(slb_grpc_timeout_parse("-1S", 3, &ms), SLB_EPROTO);
}
END_TEST

START_TEST(scan_finds_large_messages_across_splits)
{
    /* two messages: 3 bytes, then 300 bytes; fed one byte at a time */
    uint8_t stream[5 + 3 + 5 + 300] = {0, 0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 1, 44};
    struct slb_grpc_scan s = {0};
    uint32_t found = 0;

    for (size_t i = 0; i < sizeof(stream) && found == 0; i++)
        found = slb_grpc_scan(&s, stream + i, 1, 100);
    ck_assert_uint_eq(found, 300);
    /* with a large enough limit nothing is reported, whatever the split */
    memset(&s, 0, sizeof(s));
    ck_assert_uint_eq(slb_grpc_scan(&s, stream, 7, 1000), 0);
    ck_assert_uint_eq(slb_grpc_scan(&s, stream + 7, sizeof(stream) - 7, 1000), 0);
    ck_assert_uint_eq(s.remaining, 0);
    ck_assert_uint_eq(s.have, 0);
}
END_TEST

START_TEST(h2_resets)
{
    ck_assert_int_eq(slb_grpc_status_from_h2(0x7), SLB_GRPC_UNAVAILABLE);
    ck_assert_int_eq(slb_grpc_status_from_h2(0x8), SLB_GRPC_CANCELLED);
    ck_assert_int_eq(slb_grpc_status_from_h2(0xb), SLB_GRPC_RESOURCE_EXHAUSTED);
    ck_assert_int_eq(slb_grpc_status_from_h2(0x2), SLB_GRPC_INTERNAL);
}
END_TEST

Suite *grpc_suite(void)
{
    Suite *s = suite_create("grpc");
    TCase *tc = tcase_create("grpc");

    tcase_add_test(tc, status_names);
    tcase_add_test(tc, percent_encoding);
    tcase_add_test(tc, timeouts);
    tcase_add_test(tc, scan_finds_large_messages_across_splits);
    tcase_add_test(tc, h2_resets);
    suite_add_tcase(s, tc);
    return s;
}
