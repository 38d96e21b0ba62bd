/*
 * Per-method settings from gRPC's service config (methodConfig[]), looked up
 * per call by its :path (the most specific name wins: service + method, then
 * service, then the default {}). The config was validated by config.c, so
 * parsing here only builds lookup tables.
 *
 * Applied by the proxy:
 *  - retryPolicy and retryThrottling (gRFC A6): an attempt that ended with a
 *    retryable status before any response reached the app is replayed on
 *    another backend (the tried set keeps it away from the failed ones) after
 *    a randomized exponential backoff that never passes the deadline;
 *  - hedgingPolicy (gRFC A6): copies of the call go to different backends,
 *    hedgingDelay apart; the first response headers (or a fatal status)
 *    commit the call and the other attempts are cancelled;
 *  - grpc-retry-pushback-ms from a backend sets the next retry's or hedge's
 *    delay, or stops them; perAttemptRecvTimeout bounds each attempt's wait
 *    for its response headers;
 *  - timeout: the call's deadline is the earlier of it and the app's
 *    grpc-timeout; the backend gets the time that is left;
 *  - waitForReady: false fails at once when no backend is usable, true
 *    waits until the deadline;
 *  - maxRequestMessageBytes / maxResponseMessageBytes: a larger message ends
 *    the call with RESOURCE_EXHAUSTED.
 *
 * Ownership: struct slb_method_table is embedded in its cluster.
 */
#ifndef SLB_METHOD_CONFIG_H
#define SLB_METHOD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

struct slb_retry_policy {
    uint8_t max_attempts; /* including the first, 2..5 */
    uint32_t initial_backoff_ms, max_backoff_ms;
    double multiplier;
    uint32_t codes;               /* bit (1 << code) for each retryable status */
    uint32_t per_attempt_recv_ms; /* perAttemptRecvTimeout: an attempt's wait for response headers; 0 = none */
};

/* hedgingPolicy (gRFC A6): up to max_attempts copies of the call, one every delay_ms until one commits. */
struct slb_hedging_policy {
    uint8_t max_attempts; /* including the first, 2..5 */
    uint32_t delay_ms;    /* hedgingDelay; 0 = all attempts at once */
    uint32_t non_fatal;   /* bit (1 << code) for each nonFatalStatusCodes status */
};

struct slb_method_config {
    uint8_t has_retry;
    uint8_t has_hedging;
    struct slb_retry_policy retry;
    struct slb_hedging_policy hedging;
    uint64_t timeout_ms;         /* 0: none */
    int8_t wait_for_ready;       /* -1: not set (the cluster's wait_for_ready_ms applies) */
    uint32_t max_request_bytes;  /* 0: no limit */
    uint32_t max_response_bytes; /* 0: no limit */
};

struct slb_method_rule {
    char *service; /* NULL: every service (default rule) */
    char *method;  /* NULL: every method of service */
    struct slb_method_config mc;
};

struct slb_method_table {
    struct slb_method_rule *rules;
    size_t n;
    /* retryThrottling (A6): retries stop while tokens <= max_tokens / 2 */
    int throttled;
    double max_tokens, token_ratio, tokens;
};

/* Parses a compact service-config JSON text (NULL = none). 0 or SLB_ECONFIG / SLB_ENOMEM. */
int slb_method_table_init(struct slb_method_table *t, const char *service_config_json);
void slb_method_table_dispose(struct slb_method_table *t);
/* The config for "/pkg.Service/Method", or NULL. */
const struct slb_method_config *slb_method_lookup(const struct slb_method_table *t, const uint8_t *path, size_t len);

/* A6 throttling: an attempt failed with a retryable status / succeeded. */
void slb_retry_on_failure(struct slb_method_table *t);
void slb_retry_on_success(struct slb_method_table *t);
/* Whether throttling lets a retry happen now. */
int slb_retry_allowed(const struct slb_method_table *t);
/* Backoff before attempt number `attempt` (2 = first retry), randomized with
 * `random`, a full 64-bit random value (slb_rng_next). */
uint64_t slb_retry_backoff_ms(const struct slb_retry_policy *p, unsigned attempt, uint64_t random);
/* gRFC A6 pushback: the value of grpc-retry-pushback-ms. Returns the delay in
 * ms (>= 0), or -1 when the server asks not to retry (negative or unparsable). */
int64_t slb_retry_pushback_parse(const uint8_t *v, size_t len);

#endif
