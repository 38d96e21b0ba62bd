/*
 * Retries from gRPC's service config (gRFC A6): methodConfig[].retryPolicy,
 * looked up per call by its :path. The config was validated by config.c, so
 * parsing here only turns it into lookup tables.
 *
 * A call is retried on another backend (the tried set keeps it away from
 * the ones that failed) when its attempt ends with a retryable status before
 * any response reached the app: a trailers-only response with a code in
 * retryableStatusCodes, or a lost connection / reset stream (UNAVAILABLE /
 * the reset's status). Waits between attempts follow A6's randomized
 * exponential backoff and never pass the call's deadline.
 *
 * Ownership: struct slb_retry_table is embedded in its cluster.
 */
#ifndef SLB_RETRY_H
#define SLB_RETRY_H

#include <stddef.h>
#include <stdint.h>

struct slb_retry_policy {
    uint8_t max_attempts; /* including the first, 2..5 */
    uint32_t initial_backoff_ms, max_backoff_ms;
    double multiplier;
    uint32_t codes; /* bit (1 << code) for each retryable status */
};

struct slb_retry_rule {
    char *service; /* NULL: every service (default rule) */
    char *method;  /* NULL: every method of service */
    struct slb_retry_policy policy;
};

struct slb_retry_table {
    struct slb_retry_rule *rules;
    size_t n;
    /* retryThrottling (A6): retries stop while tokens <= max_tokens / 2 */
    int throttled;
    double max_tokens, token_ratio, tokens;
};

/* Parses a compact service-config JSON text (NULL = none). 0 or SLB_ECONFIG / SLB_ENOMEM. */
int slb_retry_table_init(struct slb_retry_table *t, const char *service_config_json);
void slb_retry_table_dispose(struct slb_retry_table *t);
/* The policy for "/pkg.Service/Method" (most specific name wins), or NULL. */
const struct slb_retry_policy *slb_retry_lookup(const struct slb_retry_table *t, const uint8_t *path, size_t len);
/* A6 throttling: an attempt failed with a retryable status / succeeded. */
void slb_retry_on_failure(struct slb_retry_table *t);
void slb_retry_on_success(struct slb_retry_table *t);
/* Whether throttling lets a retry happen now. */
int slb_retry_allowed(const struct slb_retry_table *t);
/* Backoff before attempt number `attempt` (2 = first retry), randomized with `random`. */
uint64_t slb_retry_backoff_ms(const struct slb_retry_policy *p, unsigned attempt, uint64_t random);

#endif
