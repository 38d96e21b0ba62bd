/* lib/etcd_value.c: the three value formats, malformed values, formatting round trips. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "etcd_value.h"

static int parse(const char *v, struct slb_etcd_endpoint *ep, char *err)
{
    return slb_etcd_value_parse("/grpclb/svc/k1", v, strlen(v), ep, err, 256);
}

START_TEST(test_plain)
{
    struct slb_etcd_endpoint ep;
    char err[256];
    ck_assert_int_eq(parse("127.0.0.1:8000", &ep, err), 0);
    ck_assert_str_eq(ep.addr, "127.0.0.1:8000");
    ck_assert_uint_eq(ep.weight, 1);
    ck_assert_str_eq(ep.zone, "");
    ck_assert_ptr_null(ep.metadata);
    ck_assert_int_eq(parse(" [::1]:50051\n", &ep, err), 0);
    ck_assert_str_eq(ep.addr, "[::1]:50051");
    ck_assert_int_eq(parse("backend.example:443", &ep, err), 0);
    slb_etcd_endpoint_dispose(&ep);
}
END_TEST

START_TEST(test_naming)
{
    struct slb_etcd_endpoint ep;
    char err[256];
    ck_assert_int_eq(parse("{\"Op\":0,\"Addr\":\"10.0.0.5:8000\",\"Metadata\":{\"v\":2}}", &ep, err), 0);
    ck_assert_str_eq(ep.addr, "10.0.0.5:8000");
    ck_assert_str_eq(ep.metadata, "{\"v\":2}");
    slb_etcd_endpoint_dispose(&ep);
    ck_assert_int_eq(parse("{\"Addr\":\"10.0.0.5:8000\"}", &ep, err), 0);
    ck_assert_ptr_null(ep.metadata);
    ck_assert_int_eq(parse("{\"Op\":1,\"Addr\":\"10.0.0.5:8000\"}", &ep, err), 1);
    ck_assert_str_eq(ep.addr, "10.0.0.5:8000");
    slb_etcd_endpoint_dispose(&ep);
}
END_TEST

START_TEST(test_json)
{
    struct slb_etcd_endpoint ep;
    char err[256];
    ck_assert_int_eq(
        parse("{\"addr\":\"10.0.0.6:9000\",\"weight\":10,\"zone\":\"a\",\"metadata\":{\"x\":\"y\"}}", &ep, err), 0);
    ck_assert_str_eq(ep.addr, "10.0.0.6:9000");
    ck_assert_uint_eq(ep.weight, 10);
    ck_assert_str_eq(ep.zone, "a");
    ck_assert_str_eq(ep.metadata, "{\"x\":\"y\"}");
    slb_etcd_endpoint_dispose(&ep);
}
END_TEST

START_TEST(test_malformed)
{
    static const char *bad[] = {
        "",
        "   ",
        "localhost",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        ":80",
        "::1:80",
        "a b:80",
        "http://x:80",
        "{",
        "{}",
        "[1,2]",
        "{\"addr\":5}",
        "{\"addr\":\"x:1\",\"weight\":0}",
        "{\"addr\":\"x:1\",\"weight\":\"3\"}",
        "{\"addr\":\"x:1\",\"weight\":1.5}",
        "{\"addr\":\"x:1\",\"zone\":\"0123456789012345678901234567890123\"}",
        "{\"addr\":\"x:1\",\"extra\":1}",
        "{\"Op\":2,\"Addr\":\"x:1\"}",
        "{\"Op\":0,\"Addr\":\"nope\"}",
        "{\"Op\":0,\"Addr\":\"x:1\",\"Weight\":3}",
    };
    for (size_t i = 0; i < SLB_ARRAY_SIZE(bad); i++) {
        struct slb_etcd_endpoint ep;
        char err[256] = "";
        ck_assert_msg(parse(bad[i], &ep, err) == SLB_EPROTO, "accepted \"%s\"", bad[i]);
        ck_assert_msg(strstr(err, "/grpclb/svc/k1") != NULL, "message without the key: %s", err);
    }
}
END_TEST

START_TEST(test_roundtrip)
{
    struct slb_etcd_endpoint ep = {.addr = "10.1.2.3:7000", .weight = 5, .zone = "eu-1"}, back;
    char err[256];
    ep.metadata = strdup("{\"k\":[1,2]}");
    for (int f = SLB_REGISTER_PLAIN; f <= SLB_REGISTER_JSON; f++) {
        char *v = slb_etcd_value_format(&ep, f);
        ck_assert_ptr_nonnull(v);
        ck_assert_int_eq(parse(v, &back, err), 0);
        ck_assert_str_eq(back.addr, ep.addr);
        if (f == SLB_REGISTER_JSON)
            ck_assert(slb_etcd_endpoint_equal(&ep, &back));
        if (f == SLB_REGISTER_ETCD_NAMING)
            ck_assert_str_eq(back.metadata, ep.metadata);
        if (f == SLB_REGISTER_PLAIN)
            ck_assert_str_eq(v, "10.1.2.3:7000");
        slb_etcd_endpoint_dispose(&back);
        free(v);
    }
    slb_etcd_endpoint_dispose(&ep);
}
END_TEST

/* An operator's "drain" flag: parsed, compared, and written back by the json format only. */
START_TEST(test_drain_flag)
{
    struct slb_etcd_endpoint ep, plain;
    char err[256], *out;
    ck_assert_int_eq(parse("{\"addr\":\"10.0.0.5:8000\",\"drain\":true}", &ep, err), 0);
    ck_assert_uint_eq(ep.drain, 1);
    ck_assert_int_eq(parse("10.0.0.5:8000", &plain, err), 0);
    ck_assert_uint_eq(plain.drain, 0);
    ck_assert_int_eq(slb_etcd_endpoint_equal(&ep, &plain), 0); /* a drain change is an update */
    out = slb_etcd_value_format(&ep, SLB_REGISTER_JSON);
    ck_assert_str_eq(out, "{\"addr\":\"10.0.0.5:8000\",\"drain\":true}");
    free(out);
    out = slb_etcd_value_format(&ep, SLB_REGISTER_PLAIN);
    ck_assert_str_eq(out, "10.0.0.5:8000");
    free(out);
    ck_assert_int_eq(parse("{\"addr\":\"10.0.0.5:8000\",\"drain\":false}", &ep, err), 0);
    ck_assert_uint_eq(ep.drain, 0);
    ck_assert_int_eq(parse("{\"addr\":\"10.0.0.5:8000\",\"drain\":1}", &ep, err), SLB_EPROTO);
    ck_assert_str_eq(err, "etcd key \"/grpclb/svc/k1\": \"drain\" must be true or false");
}
END_TEST

/* "registered_at_ms": read from both JSON formats, absent = 0, part of equality, written back when set. */
START_TEST(test_registered_at)
{
    struct slb_etcd_endpoint ep, other;
    char err[256];
    ck_assert_int_eq(parse("{\"addr\":\"10.0.0.6:9000\",\"registered_at_ms\":1764581400123}", &ep, err), 0);
    ck_assert_uint_eq(ep.registered_at_ms, 1764581400123ULL);
    ck_assert_int_eq(parse("{\"addr\":\"10.0.0.6:9000\"}", &other, err), 0);
    ck_assert_uint_eq(other.registered_at_ms, 0);
    ck_assert(!slb_etcd_endpoint_equal(&ep, &other)); /* a new registration is a change */
    slb_etcd_endpoint_dispose(&ep);
    ck_assert_int_eq(
        parse("{\"Op\":0,\"Addr\":\"10.0.0.5:8000\",\"Metadata\":{\"v\":2},\"registered_at_ms\":253402300799999}", &ep,
              err),
        0);
    ck_assert_uint_eq(ep.registered_at_ms, SLB_ETCD_REGISTERED_AT_MAX);
    ck_assert_str_eq(ep.metadata, "{\"v\":2}");
    slb_etcd_endpoint_dispose(&ep);
    ck_assert_int_eq(parse("127.0.0.1:8000", &ep, err), 0); /* plain: none */
    ck_assert_uint_eq(ep.registered_at_ms, 0);

    /* formats: json and etcd naming carry it, plain cannot; 0 writes nothing (values as before) */
    struct slb_etcd_endpoint w = {.addr = "10.1.2.3:7000", .weight = 1, .registered_at_ms = 1764581400123ULL};
    char *v = slb_etcd_value_format(&w, SLB_REGISTER_JSON);
    ck_assert_str_eq(v, "{\"addr\":\"10.1.2.3:7000\",\"registered_at_ms\":1764581400123}");
    free(v);
    v = slb_etcd_value_format(&w, SLB_REGISTER_ETCD_NAMING);
    ck_assert_str_eq(v, "{\"Op\":0,\"Addr\":\"10.1.2.3:7000\",\"registered_at_ms\":1764581400123}");
    ck_assert_int_eq(parse(v, &ep, err), 0);
    ck_assert_uint_eq(ep.registered_at_ms, 1764581400123ULL);
    free(v);
    v = slb_etcd_value_format(&w, SLB_REGISTER_PLAIN);
    ck_assert_str_eq(v, "10.1.2.3:7000");
    free(v);
    w.registered_at_ms = 0;
    v = slb_etcd_value_format(&w, SLB_REGISTER_JSON);
    ck_assert_str_eq(v, "{\"addr\":\"10.1.2.3:7000\"}");
    free(v);
}
END_TEST

/* Bad registration times are rejected with a message naming the key and the field. */
START_TEST(test_registered_at_malformed)
{
    static const char *bad[] = {
        "{\"addr\":\"x:1\",\"registered_at_ms\":0}",
        "{\"addr\":\"x:1\",\"registered_at_ms\":-5}",
        "{\"addr\":\"x:1\",\"registered_at_ms\":1.5e12}",
        "{\"addr\":\"x:1\",\"registered_at_ms\":\"1764581400123\"}",
        "{\"addr\":\"x:1\",\"registered_at_ms\":\"2025-12-01T09:30:00Z\"}",
        "{\"addr\":\"x:1\",\"registered_at_ms\":null}",
        "{\"addr\":\"x:1\",\"registered_at_ms\":253402300800000}",
        "{\"Op\":0,\"Addr\":\"x:1\",\"registered_at_ms\":true}",
    };
    for (size_t i = 0; i < SLB_ARRAY_SIZE(bad); i++) {
        struct slb_etcd_endpoint ep;
        char err[256] = "";
        ck_assert_msg(parse(bad[i], &ep, err) == SLB_EPROTO, "accepted \"%s\"", bad[i]);
        ck_assert_msg(strstr(err, "etcd key \"/grpclb/svc/k1\": \"registered_at_ms\" must be an integer of "
                                  "milliseconds since 1970-01-01 UTC") != NULL,
                      "%s: %s", bad[i], err);
    }
}
END_TEST

Suite *etcd_value_suite(void)
{
    Suite *s = suite_create("etcd_value");
    TCase *tc = tcase_create("etcd_value");
    tcase_add_test(tc, test_plain);
    tcase_add_test(tc, test_naming);
    tcase_add_test(tc, test_json);
    tcase_add_test(tc, test_drain_flag);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_registered_at);
    tcase_add_test(tc, test_registered_at_malformed);
    suite_add_tcase(s, tc);
    return s;
}
