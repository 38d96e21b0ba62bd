/*
 * lib/h2_downstream.c: the pure pieces of the app-side transport (the
 * integration tests in tests/integration/test_h2_semantics.py drive the rest
 * over sockets): the HTTP/1.x request-line test that decides between a 505
 * text and a connection error, the SETTINGS frame edit that advertises the
 * configured stream limit, and the internal limit given to libnghttp2.
 */
#include <check.h>
#include <string.h>

#include "h2_downstream.h"

static int h1(const char *s)
{
    return slb__http1_request_line((const uint8_t *)s, strlen(s));
}

START_TEST(http1_request_lines)
{
    ck_assert_int_eq(h1("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 1);
    ck_assert_int_eq(h1("POST /sidelb.test.Echo/Unary HTTP/1.0\r\n"), 1);
    ck_assert_int_eq(h1("OPTIONS * HTTP/1.1"), 1); /* no line end yet: the request line is there */
    ck_assert_int_eq(h1("PRI * HTTP/1.1\r\n"), 1);
    /* not HTTP/1.x */
    ck_assert_int_eq(h1("INVALID CONNECTION PREFACE\r\n\r\n"), 0); /* h2spec 3.5/2 */
    ck_assert_int_eq(h1("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"), 0);
    ck_assert_int_eq(h1("GET / HTTP/1."), 0);
    ck_assert_int_eq(h1("GET / HTTP/1.x"), 0);
    ck_assert_int_eq(h1("GET  / HTTP/1.1"), 0);
    ck_assert_int_eq(h1("GET / HTTP/1.1"), 1);
    ck_assert_int_eq(h1(" GET / HTTP/1.1"), 0);
    ck_assert_int_eq(h1("GET /"), 0);
    ck_assert_int_eq(h1(""), 0);
    ck_assert_int_eq(h1("\x16\x03\x01\x02\x00"), 0); /* a TLS ClientHello */
    ck_assert_int_eq(h1("G(T / HTTP/1.1"), 0);       /* not a token */
    ck_assert_int_eq(h1("GETGETGETGETGETGETGETGETGETGETGETGET / HTTP/1.1"), 0);
}
END_TEST

START_TEST(settings_frame_edit)
{
    /* SETTINGS: MAX_CONCURRENT_STREAMS 200, INITIAL_WINDOW_SIZE 262144, ENABLE_PUSH 0 */
    uint8_t f[] = {0, 0, 18, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 200, 0, 4, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0};
    uint8_t want[sizeof(f)];

    memcpy(want, f, sizeof(f));
    want[14] = 100;
    ck_assert_int_eq(slb__settings_frame_set(f, sizeof(f), NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100), 0);
    ck_assert_mem_eq(f, want, sizeof(f));
    ck_assert_int_eq(slb__settings_frame_set(f, sizeof(f), NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0x01020304), 0);
    ck_assert_mem_eq(f + 11, "\x01\x02\x03\x04", 4);
    /* left alone: no such setting, an ACK, another frame type, a bad length */
    memcpy(want, f, sizeof(f));
    ck_assert_int_eq(slb__settings_frame_set(f, sizeof(f), NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 1), -1);
    f[4] = NGHTTP2_FLAG_ACK;
    ck_assert_int_eq(slb__settings_frame_set(f, sizeof(f), NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1), -1);
    f[4] = 0;
    f[3] = NGHTTP2_WINDOW_UPDATE;
    ck_assert_int_eq(slb__settings_frame_set(f, sizeof(f), NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1), -1);
    f[3] = NGHTTP2_SETTINGS;
    ck_assert_int_eq(slb__settings_frame_set(f, sizeof(f) - 1, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1), -1);
    ck_assert_int_eq(slb__settings_frame_set(f, 5, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1), -1);
    ck_assert_mem_eq(f, want, sizeof(f));
}
END_TEST

/* What libnghttp2 enforces itself sits above what is advertised: twice it,
 * at least 100 more, within the 31-bit range. */
START_TEST(internal_stream_limit)
{
    ck_assert_uint_eq(slb__downstream_internal_stream_limit(1), 101);
    ck_assert_uint_eq(slb__downstream_internal_stream_limit(4), 104);
    ck_assert_uint_eq(slb__downstream_internal_stream_limit(100), 200);
    ck_assert_uint_eq(slb__downstream_internal_stream_limit(1000), 2000);
    ck_assert_uint_eq(slb__downstream_internal_stream_limit(0x7fffffff), 0x7fffffff);
}
END_TEST

/* The serialized SETTINGS of a real server session carries the setting where the edit finds it. */
START_TEST(settings_edit_on_a_real_session)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_session *s;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 200},
                                   {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384}};
    const uint8_t *d;
    uint8_t f[64];
    ssize_t n;

    nghttp2_session_callbacks_new(&cbs);
    ck_assert_int_eq(nghttp2_session_server_new(&s, cbs, NULL), 0);
    nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0, 1 << 24);
    n = nghttp2_session_mem_send(s, &d);
    ck_assert_int_eq(n, 9 + 12); /* the first frame alone */
    memcpy(f, d, (size_t)n);
    ck_assert_int_eq(slb__settings_frame_set(f, (size_t)n, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100), 0);
    ck_assert_mem_eq(f + 9, "\x00\x03\x00\x00\x00\x64\x00\x06\x00\x00\x40\x00", 12);
    nghttp2_session_del(s);
    nghttp2_session_callbacks_del(cbs);
}
END_TEST

Suite *h2_downstream_suite(void)
{
    Suite *s = suite_create("h2_downstream");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, http1_request_lines);
    tcase_add_test(tc, settings_frame_edit);
    tcase_add_test(tc, internal_stream_limit);
    tcase_add_test(tc, settings_edit_on_a_real_session);
    suite_add_tcase(s, tc);
    return s;
}
