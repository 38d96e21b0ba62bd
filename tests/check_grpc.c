/* lib/grpc.c: status names and parsing, grpc-message percent-encoding,
 * status fields and trailers-only replies, grpc-timeout parsing and
 * formatting, message framing scan, HTTP/2 reset mapping. */
#include <check.h>
#include <stdint.h>
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

static int parse(const char *v)
{
    return slb_grpc_status_parse((const uint8_t *)v, strlen(v));
}

START_TEST(status_parse)
{
    ck_assert_int_eq(parse("0"), 0);
    ck_assert_int_eq(parse("14"), 14);
    ck_assert_int_eq(parse("00"), 0);
    ck_assert_int_eq(parse("016"), 16);
    ck_assert_int_eq(parse("999"), 999); /* unknown codes are the caller's to judge */
    ck_assert_int_eq(parse(""), -1);
    ck_assert_int_eq(parse("abc"), -1);
    ck_assert_int_eq(parse("1a"), -1);
    ck_assert_int_eq(parse(" 1"), -1);
    ck_assert_int_eq(parse("-1"), -1);
    ck_assert_int_eq(parse("+1"), -1);
    ck_assert_int_eq(parse("1000"), -1);
    ck_assert_int_eq(parse("0000"), -1);
    /* the length counts, not a NUL */
    ck_assert_int_eq(slb_grpc_status_parse((const uint8_t *)"12x", 2), 12);
    ck_assert_int_eq(slb_grpc_status_parse((const uint8_t *)"1\0", 2), -1);
    ck_assert_int_eq(slb_grpc_status_parse(NULL, 0), -1);
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

static void expect_timeout(uint64_t ms, const char *want)
{
    char out[SLB_GRPC_TIMEOUT_MAX];
    uint64_t back;

    memset(out, 'x', sizeof(out));
    ck_assert_uint_eq(slb_grpc_timeout_format(ms, out), strlen(want));
    ck_assert_str_eq(out, want);
    /* what we send, we can read; never less time than asked for below the cap */
    ck_assert_int_eq(slb_grpc_timeout_parse(out, strlen(out), &back), 0);
    if (ms <= 99999999000ULL)
        ck_assert_uint_ge(back, ms);
}

START_TEST(timeout_format)
{
    expect_timeout(0, "0m");
    expect_timeout(1, "1m");
    expect_timeout(1500, "1500m");
    expect_timeout(99999999, "99999999m"); /* 8 digits: still milliseconds */
    expect_timeout(100000000, "100000S");  /* seconds past that */
    expect_timeout(100000001, "100001S");  /* rounded up */
    expect_timeout(99999999000ULL, "99999999S");
    expect_timeout(99999999001ULL, "99999999S"); /* capped */
    expect_timeout(UINT64_MAX, "99999999S");
}
END_TEST

START_TEST(status_fields)
{
    struct slb_grpc_status_text t;
    nghttp2_nv nv[2];

    ck_assert_uint_eq(slb_grpc_status_fields(nv, &t, SLB_GRPC_UNAVAILABLE, "no backend: 100% down\n"), 2);
    ck_assert_uint_eq(nv[0].namelen, 11);
    ck_assert_mem_eq(nv[0].name, "grpc-status", 11);
    ck_assert_uint_eq(nv[0].valuelen, 2);
    ck_assert_mem_eq(nv[0].value, "14", 2);
    ck_assert_uint_eq(nv[1].namelen, 12);
    ck_assert_mem_eq(nv[1].name, "grpc-message", 12);
    ck_assert_uint_eq(nv[1].valuelen, strlen("no backend: 100%25 down%0A"));
    ck_assert_mem_eq(nv[1].value, "no backend: 100%25 down%0A", nv[1].valuelen);
    /* values live in t (the caller's until submit); nghttp2 must copy them */
    ck_assert_ptr_eq(nv[0].value, (uint8_t *)t.code);
    ck_assert_ptr_eq(nv[1].value, (uint8_t *)t.message);
    ck_assert_int_eq(nv[0].flags & NGHTTP2_NV_FLAG_NO_COPY_VALUE, 0);
    ck_assert_int_eq(nv[1].flags & NGHTTP2_NV_FLAG_NO_COPY_VALUE, 0);

    /* no message: an empty grpc-message */
    slb_grpc_status_fields(nv, &t, SLB_GRPC_OK, NULL);
    ck_assert_mem_eq(nv[0].value, "0", 1);
    ck_assert_uint_eq(nv[0].valuelen, 1);
    ck_assert_uint_eq(nv[1].valuelen, 0);

    /* a message longer than the buffer is cut, never mid-escape */
    char long_msg[1000];
    memset(long_msg, 'a', sizeof(long_msg) - 1);
    long_msg[sizeof(long_msg) - 1] = '\0';
    long_msg[509] = '\n';
    slb_grpc_status_fields(nv, &t, SLB_GRPC_INTERNAL, long_msg);
    ck_assert_uint_eq(nv[1].valuelen, 509);
    ck_assert_uint_eq(strlen(t.message), 509);
}
END_TEST

START_TEST(trailers_only)
{
    static const char *const names[] = {":status", "content-type", "grpc-status", "grpc-message"};
    static const char *const values[] = {"200", "application/grpc", "5", "nicht gefunden %E2%9C%97"};
    struct slb_grpc_status_text t;
    nghttp2_nv nv[4];

    ck_assert_uint_eq(slb_grpc_trailers_only(nv, &t, SLB_GRPC_NOT_FOUND, "nicht gefunden \xe2\x9c\x97"), 4);
    for (int i = 0; i < 4; i++) {
        ck_assert_uint_eq(nv[i].namelen, strlen(names[i]));
        ck_assert_mem_eq(nv[i].name, names[i], nv[i].namelen);
        ck_assert_uint_eq(nv[i].valuelen, strlen(values[i]));
        ck_assert_mem_eq(nv[i].value, values[i], nv[i].valuelen);
    }
    /* nghttp2 accepts them as a response header block */
    for (int i = 0; i < 4; i++) {
        ck_assert(nghttp2_check_header_name(nv[i].name, nv[i].namelen) || nv[i].name[0] == ':');
        ck_assert(nghttp2_check_header_value(nv[i].value, nv[i].valuelen));
    }
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
    tcase_add_test(tc, status_parse);
    tcase_add_test(tc, percent_encoding);
    tcase_add_test(tc, timeouts);
    tcase_add_test(tc, timeout_format);
    tcase_add_test(tc, status_fields);
    tcase_add_test(tc, trailers_only);
    tcase_add_test(tc, scan_finds_large_messages_across_splits);
    tcase_add_test(tc, h2_resets);
    suite_add_tcase(s, tc);
    return s;
}
