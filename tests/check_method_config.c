/* lib/method_config.c: methodConfig lookup, retry backoff and throttling. */
#include <check.h>
#include <string.h>

#include "method_config.h"
#include "rng.h"

static const char sc[] = "{\"methodConfig\":["
                         "{\"name\":[{}],\"timeout\":\"9s\"},"
                         "{\"name\":[{\"service\":\"a.S\"}],\"waitForReady\":true,\"retryPolicy\":{\"maxAttempts\":3,"
                         "\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"0.3s\",\"backoffMultiplier\":2,"
                         "\"retryableStatusCodes\":[\"UNAVAILABLE\",\"ABORTED\"]}},"
                         "{\"name\":[{\"service\":\"a.S\",\"method\":\"Big\"}],\"maxRequestMessageBytes\":100,"
                         "\"maxResponseMessageBytes\":200}],"
                         "\"retryThrottling\":{\"maxTokens\":4,\"tokenRatio\":0.5}}";

#define PATH(s) (const uint8_t *)(s), strlen(s)

START_TEST(most_specific_name_wins)
{
    struct slb_method_table t;
    const struct slb_method_config *m;

    ck_assert_int_eq(slb_method_table_init(&t, sc), 0);
    m = slb_method_lookup(&t, PATH("/a.S/Big"));
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq(m->max_request_bytes, 100);
    ck_assert_uint_eq(m->max_response_bytes, 200);
    ck_assert_int_eq(m->has_retry, 0);
    m = slb_method_lookup(&t, PATH("/a.S/Other"));
    ck_assert_int_eq(m->has_retry, 1);
    ck_assert_int_eq(m->wait_for_ready, 1);
    ck_assert_uint_eq(m->retry.max_attempts, 3);
    ck_assert_uint_eq(m->retry.codes, (1u << 14) | (1u << 10));
    m = slb_method_lookup(&t, PATH("/b.T/X"));
    ck_assert_uint_eq(m->timeout_ms, 9000);
    ck_assert_int_eq(m->wait_for_ready, -1);
    slb_method_table_dispose(&t);

    ck_assert_int_eq(slb_method_table_init(&t, NULL), 0);
    ck_assert_ptr_null(slb_method_lookup(&t, PATH("/a.S/Big")));
    slb_method_table_dispose(&t);
}
END_TEST

START_TEST(backoff_is_bounded_and_random)
{
    struct slb_method_table t;
    const struct slb_retry_policy *p;
    uint64_t lo = UINT64_MAX, hi = 0;
    struct slb_rng rng;

    ck_assert_int_eq(slb_method_table_init(&t, sc), 0);
    p = &slb_method_lookup(&t, PATH("/a.S/X"))->retry;
    slb_rng_seed(&rng, 1);
    for (int i = 0; i < 3000; i++) {
        uint64_t r = slb_rng_next(&rng);
        uint64_t b2 = slb_retry_backoff_ms(p, 2, r), b5 = slb_retry_backoff_ms(p, 5, r);
        ck_assert_uint_le(b2, 100); /* random(0, initialBackoff) */
        ck_assert_uint_le(b5, 300); /* capped at maxBackoff */
        lo = b2 < lo ? b2 : lo;
        hi = b2 > hi ? b2 : hi;
    }
    ck_assert_uint_le(lo, 5);
    ck_assert_uint_ge(hi, 95);
    slb_method_table_dispose(&t);
}
END_TEST

START_TEST(throttling)
{
    struct slb_method_table t;

    ck_assert_int_eq(slb_method_table_init(&t, sc), 0);
    ck_assert_int_eq(slb_retry_allowed(&t), 1);
    slb_retry_on_failure(&t); /* 3 */
    ck_assert_int_eq(slb_retry_allowed(&t), 1);
    slb_retry_on_failure(&t); /* 2 = max/2: no more retries */
    ck_assert_int_eq(slb_retry_allowed(&t), 0);
    slb_retry_on_success(&t); /* 2.5 */
    ck_assert_int_eq(slb_retry_allowed(&t), 1);
    for (int i = 0; i < 20; i++)
        slb_retry_on_success(&t);
    ck_assert(t.tokens <= t.max_tokens);
    for (int i = 0; i < 20; i++)
        slb_retry_on_failure(&t);
    ck_assert(t.tokens >= 0);
    slb_method_table_dispose(&t);
}
END_TEST

START_TEST(hedging_policy_per_attempt_timeout_and_pushback)
{
    static const char hc[] =
        "{\"methodConfig\":[{\"name\":[{\"service\":\"h.S\"}],\"hedgingPolicy\":{\"maxAttempts\":9,"
        "\"hedgingDelay\":\"0.05s\",\"nonFatalStatusCodes\":[\"UNAVAILABLE\",\"INTERNAL\"]}},"
        "{\"name\":[{\"service\":\"r.S\"}],\"retryPolicy\":{\"maxAttempts\":2,\"initialBackoff\":\"0.1s\","
        "\"maxBackoff\":\"0.3s\",\"backoffMultiplier\":2,\"retryableStatusCodes\":[\"UNAVAILABLE\"],"
        "\"perAttemptRecvTimeout\":\"1.5s\"}}]}";
    struct slb_method_table t;
    const struct slb_method_config *m;

    ck_assert_int_eq(slb_method_table_init(&t, hc), 0);
    m = slb_method_lookup(&t, PATH("/h.S/M"));
    ck_assert_int_eq(m->has_hedging, 1);
    ck_assert_int_eq(m->has_retry, 0);
    ck_assert_uint_eq(m->hedging.max_attempts, 5); /* A6: larger values are 5 */
    ck_assert_uint_eq(m->hedging.delay_ms, 50);
    ck_assert_uint_eq(m->hedging.non_fatal, (1u << 14) | (1u << 13));
    m = slb_method_lookup(&t, PATH("/r.S/M"));
    ck_assert_int_eq(m->has_hedging, 0);
    ck_assert_uint_eq(m->retry.per_attempt_recv_ms, 1500);
    slb_method_table_dispose(&t);

    ck_assert_int_eq(slb_retry_pushback_parse((const uint8_t *)"250", 3), 250);
    ck_assert_int_eq(slb_retry_pushback_parse((const uint8_t *)"0", 1), 0);
    ck_assert_int_eq(slb_retry_pushback_parse((const uint8_t *)"-1", 2), -1);
    ck_assert_int_eq(slb_retry_pushback_parse((const uint8_t *)"12x", 3), -1);
    ck_assert_int_eq(slb_retry_pushback_parse((const uint8_t *)"", 0), -1);
    ck_assert_int_eq(slb_retry_pushback_parse((const uint8_t *)"2147483648", 10), -1); /* past int32 */
    ck_assert_int_eq(slb_retry_pushback_parse((const uint8_t *)"2147483647", 10), 2147483647);
}
END_TEST

Suite *method_config_suite(void)
{
    Suite *s = suite_create("method_config");
    TCase *tc = tcase_create("method_config");

    tcase_add_test(tc, most_specific_name_wins);
    tcase_add_test(tc, backoff_is_bounded_and_random);
    tcase_add_test(tc, throttling);
    tcase_add_test(tc, hedging_policy_per_attempt_timeout_and_pushback);
    suite_add_tcase(s, tc);
    return s;
}
