/*
 * Passive outlier detection; see outlier.h for the rules. Ejection marks a
 * backend with ejected_until_ms, which slb_backend_usable() honours, so the
 * policies need no notification; ejected_until_ms stays set after it passes
 * until the tick clears it, which is how the tick tells "was ejected".
 */
#include "outlier.h"

#include <math.h>

#include "common.h"
#include "log.h"

void slb_outlier_options_default(struct slb_outlier_options *o)
{
    o->consecutive_failures = 5;
    o->base_ejection_ms = 30000;
    o->max_ejection_ms = 300000;
    o->max_ejection_percent = 10;
    o->interval_ms = 10000;
    o->success_rate_minimum_hosts = 5;
    o->success_rate_request_volume = 100;
    o->success_rate_stdev_factor = 1.9;
}

static uint32_t max_ejectable(const struct slb_outlier_options *opts, uint32_t n)
{
    uint32_t m = (uint32_t)((uint64_t)n * opts->max_ejection_percent / 100);

    if (opts->max_ejection_percent == 0 || n < 2)
        return 0;
    if (m == 0)
        m = 1;
    return m < n ? m : n - 1;
}

static uint32_t count_ejected(const struct slb_backend_set *set, uint64_t now_ms)
{
    uint32_t c = 0;
    for (uint32_t i = 0; i < set->n; i++)
        c += slb_outlier_ejected(set->items[i], now_ms);
    return c;
}

int slb_outlier_eject(const struct slb_outlier_options *opts, struct slb_backend_set *set, struct slb_backend *be,
                      uint64_t now_ms)
{
    uint64_t ms, cap;

    if (slb_outlier_ejected(be, now_ms) || count_ejected(set, now_ms) >= max_ejectable(opts, set->n))
        return 0;
    be->times_ejected++;
    cap = opts->max_ejection_ms > opts->base_ejection_ms ? opts->max_ejection_ms : opts->base_ejection_ms;
    ms = (uint64_t)opts->base_ejection_ms * be->times_ejected;
    if (ms > cap)
        ms = cap;
    be->ejected_until_ms = now_ms + (ms ? ms : 1);
    be->consecutive_failures = 0;
    slb_notice("backend %s: ejected for %llu ms (ejection #%u)", be->name, (unsigned long long)ms, be->times_ejected);
    return 1;
}

int slb_outlier_on_result(const struct slb_outlier_options *opts, struct slb_backend_set *set, struct slb_backend *be,
                          int success, uint64_t now_ms)
{
    if (success) {
        be->interval_success++;
        be->consecutive_failures = 0;
        return 0;
    }
    be->interval_failure++;
    be->consecutive_failures++;
    if (opts->consecutive_failures == 0 || be->consecutive_failures < opts->consecutive_failures)
        return 0;
    return slb_outlier_eject(opts, set, be, now_ms);
}

/* Envoy's success-rate detector over this interval's counters. */
static int success_rate(const struct slb_outlier_options *opts, struct slb_backend_set *set, uint64_t now_ms)
{
    double sum = 0, sq = 0, mean, stdev, threshold;
    uint32_t hosts = 0;
    int ejected = 0;

    if (opts->success_rate_minimum_hosts == 0)
        return 0;
    for (uint32_t i = 0; i < set->n; i++) {
        const struct slb_backend *be = set->items[i];
        uint64_t calls = (uint64_t)be->interval_success + be->interval_failure;
        if (calls == 0 || calls < opts->success_rate_request_volume || slb_outlier_ejected(be, now_ms))
            continue;
        double rate = (double)be->interval_success / (double)calls;
        sum += rate;
        sq += rate * rate;
        hosts++;
    }
    if (hosts == 0 || hosts < opts->success_rate_minimum_hosts)
        return 0;
    mean = sum / hosts;
    stdev = sqrt(fmax(0.0, sq / hosts - mean * mean));
    threshold = mean - opts->success_rate_stdev_factor * stdev;
    for (uint32_t i = 0; i < set->n; i++) {
        struct slb_backend *be = set->items[i];
        uint64_t calls = (uint64_t)be->interval_success + be->interval_failure;
        if (calls == 0 || calls < opts->success_rate_request_volume || slb_outlier_ejected(be, now_ms))
            continue;
        if ((double)be->interval_success / (double)calls < threshold)
            ejected += slb_outlier_eject(opts, set, be, now_ms);
    }
    return ejected;
}

int slb_outlier_tick(const struct slb_outlier_options *opts, struct slb_backend_set *set, uint64_t now_ms,
                     uint32_t *unejected)
{
    uint32_t back = 0;
    int ejected;

    for (uint32_t i = 0; i < set->n; i++) {
        struct slb_backend *be = set->items[i];
        if (be->ejected_until_ms != 0 && be->ejected_until_ms <= now_ms) {
            be->ejected_until_ms = 0;
            be->usable_since_ms = now_ms; /* slow start ramps it back in */
            be->consecutive_failures = 0;
            back++;
            slb_notice("backend %s: ejection ended", be->name);
        } else if (be->ejected_until_ms == 0 && be->times_ejected > 0) {
            be->times_ejected--; /* a quiet interval earns back a shorter next ejection */
        }
    }
    ejected = success_rate(opts, set, now_ms);
    for (uint32_t i = 0; i < set->n; i++)
        set->items[i]->interval_success = set->items[i]->interval_failure = 0;
    if (unejected != NULL)
        *unejected = back;
    return ejected;
}
