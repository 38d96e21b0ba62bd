#include "method_config.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "rng.h"

static uint32_t parse_codes(json_t *codes)
{
    uint32_t bits = 0;
    size_t i;
    json_t *c;

    json_array_foreach(codes, i, c)
    {
        int code = json_is_string(c) ? slb_config_grpc_code(json_string_value(c)) : (int)json_integer_value(c);
        if (code >= 0 && code < 32)
            bits |= 1u << code;
    }
    return bits;
}

static int parse_hedging(json_t *hp, struct slb_hedging_policy *p)
{
    uint64_t ms = 0;
    json_t *v;

    p->max_attempts = (uint8_t)json_integer_value(json_object_get(hp, "maxAttempts"));
    if (p->max_attempts > 5)
        p->max_attempts = 5; /* A6: larger values are treated as 5 */
    if ((v = json_object_get(hp, "hedgingDelay")) != NULL && slb_config_parse_duration(json_string_value(v), &ms) != 0)
        return SLB_ECONFIG;
    p->delay_ms = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
    p->non_fatal = parse_codes(json_object_get(hp, "nonFatalStatusCodes"));
    return 0;
}

static int parse_policy(json_t *rp, struct slb_retry_policy *p)
{
    uint64_t ms;
    json_t *v;

    p->max_attempts = (uint8_t)json_integer_value(json_object_get(rp, "maxAttempts"));
    if (p->max_attempts > 5)
        p->max_attempts = 5; /* A6: larger values are treated as 5 */
    if (slb_config_parse_duration(json_string_value(json_object_get(rp, "initialBackoff")), &ms) != 0)
        return SLB_ECONFIG;
    p->initial_backoff_ms = (uint32_t)ms;
    if (slb_config_parse_duration(json_string_value(json_object_get(rp, "maxBackoff")), &ms) != 0)
        return SLB_ECONFIG;
    p->max_backoff_ms = (uint32_t)ms;
    p->multiplier = json_number_value(json_object_get(rp, "backoffMultiplier"));
    p->codes = parse_codes(json_object_get(rp, "retryableStatusCodes"));
    p->per_attempt_recv_ms = 0;
    if ((v = json_object_get(rp, "perAttemptRecvTimeout")) != NULL) {
        if (slb_config_parse_duration(json_string_value(v), &ms) != 0)
            return SLB_ECONFIG;
        p->per_attempt_recv_ms = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
    }
    return 0;
}

int slb_method_table_init(struct slb_method_table *t, const char *json)
{
    json_t *root, *mcs, *mc, *names, *name;
    size_t i, j;
    int rv = 0;

    memset(t, 0, sizeof(*t));
    if (json == NULL)
        return 0;
    if ((root = json_loads(json, 0, NULL)) == NULL)
        return SLB_ECONFIG;
    mcs = json_object_get(root, "methodConfig");
    json_array_foreach(mcs, i, mc)
    {
        struct slb_method_config m = {.wait_for_ready = -1};
        json_t *rp = json_object_get(mc, "retryPolicy"), *hp = json_object_get(mc, "hedgingPolicy"), *v;
        uint64_t ms;

        if (rp != NULL) {
            if ((rv = parse_policy(rp, &m.retry)) != 0)
                break;
            m.has_retry = 1;
        }
        if (hp != NULL) {
            if ((rv = parse_hedging(hp, &m.hedging)) != 0)
                break;
            m.has_hedging = 1;
        }
        if ((v = json_object_get(mc, "timeout")) != NULL && slb_config_parse_duration(json_string_value(v), &ms) == 0)
            m.timeout_ms = ms;
        if ((v = json_object_get(mc, "waitForReady")) != NULL)
            m.wait_for_ready = json_is_true(v) ? 1 : 0;
        if ((v = json_object_get(mc, "maxRequestMessageBytes")) != NULL)
            m.max_request_bytes = (uint32_t)json_integer_value(v);
        if ((v = json_object_get(mc, "maxResponseMessageBytes")) != NULL)
            m.max_response_bytes = (uint32_t)json_integer_value(v);
        names = json_object_get(mc, "name");
        json_array_foreach(names, j, name)
        {
            struct slb_method_rule *r, *nv = realloc(t->rules, (t->n + 1) * sizeof(*nv));
            const char *svc = json_string_value(json_object_get(name, "service"));
            const char *meth = json_string_value(json_object_get(name, "method"));
            if (nv == NULL) {
                rv = SLB_ENOMEM;
                break;
            }
            t->rules = nv;
            r = &t->rules[t->n++];
            r->service = svc != NULL && *svc != '\0' ? strdup(svc) : NULL;
            r->method = meth != NULL && *meth != '\0' ? strdup(meth) : NULL;
            r->mc = m;
        }
    }
    if (rv == 0 && (mcs = json_object_get(root, "retryThrottling")) != NULL) {
        t->throttled = 1;
        t->max_tokens = json_number_value(json_object_get(mcs, "maxTokens"));
        t->token_ratio = json_number_value(json_object_get(mcs, "tokenRatio"));
        t->tokens = t->max_tokens;
    }
    json_decref(root);
    if (rv != 0)
        slb_method_table_dispose(t);
    return rv;
}

void slb_method_table_dispose(struct slb_method_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->rules[i].service);
        free(t->rules[i].method);
    }
    free(t->rules);
    memset(t, 0, sizeof(*t));
}

static int eq(const char *s, const uint8_t *p, size_t len)
{
    return strlen(s) == len && memcmp(s, p, len) == 0;
}

const struct slb_method_config *slb_method_lookup(const struct slb_method_table *t, const uint8_t *path, size_t len)
{
    const struct slb_method_config *by_service = NULL, *by_default = NULL;
    const uint8_t *svc, *slash, *meth;
    size_t svclen, methlen;

    if (t->n == 0 || len < 2 || path[0] != '/')
        return NULL;
    svc = path + 1;
    slash = memchr(svc, '/', len - 1);
    svclen = slash != NULL ? (size_t)(slash - svc) : len - 1;
    meth = slash != NULL ? slash + 1 : path + len;
    methlen = (size_t)(path + len - meth);
    for (size_t i = 0; i < t->n; i++) {
        const struct slb_method_rule *r = &t->rules[i];
        if (r->service == NULL) {
            by_default = &r->mc;
        } else if (eq(r->service, svc, svclen)) {
            if (r->method == NULL)
                by_service = &r->mc;
            else if (eq(r->method, meth, methlen))
                return &r->mc;
        }
    }
    return by_service != NULL ? by_service : by_default;
}

void slb_retry_on_failure(struct slb_method_table *t)
{
    if (t->throttled && (t->tokens -= 1.0) < 0)
        t->tokens = 0;
}

void slb_retry_on_success(struct slb_method_table *t)
{
    if (t->throttled && (t->tokens += t->token_ratio) > t->max_tokens)
        t->tokens = t->max_tokens;
}

int slb_retry_allowed(const struct slb_method_table *t)
{
    return !t->throttled || t->tokens > t->max_tokens / 2;
}

uint64_t slb_retry_backoff_ms(const struct slb_retry_policy *p, unsigned attempt, uint64_t random)
{
    double b = p->initial_backoff_ms;

    for (unsigned i = 2; i < attempt; i++)
        b *= p->multiplier;
    if (b > p->max_backoff_ms)
        b = p->max_backoff_ms;
    /* A6: the wait is random(0, current_backoff) */
    return (uint64_t)(b * (double)slb_rng_bounded(random, 10001) / 10000.0);
}

int64_t slb_retry_pushback_parse(const uint8_t *v, size_t len)
{
    int64_t ms = 0;

    /* A6: an ASCII signed 32-bit integer; negative or unparsable means "do not retry" */
    if (len == 0 || len > 10)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        ms = ms * 10 + (v[i] - '0');
    }
    return ms > INT32_MAX ? -1 : ms;
}
