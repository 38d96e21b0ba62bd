/*
 * Passive outlier detection; see outlier.h for the rules. Ejection marks a
 * backend with ejected_until_ms, which slb_backend_usable() honours, so the
 * policies need no notification; ejected_until_ms stays set after it passes
 * until slb_outlier_uneject() clears it, which is how it tells "was ejected".
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
    o->enforcing_success_rate = 100;
    o->failure_percentage_threshold = 85;
    o->failure_percentage_minimum_hosts = 5;
    o->failure_percentage_request_volume = 50;
    o->enforcing_failure_percentage = 0;
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
    uint32_t out, max;

    if (slb_outlier_ejected(be, now_ms))
        return 0;
    if ((out = count_ejected(set, now_ms)) >= (max = max_ejectable(opts, set->n))) {
        be->ejections_capped++;
        if (!be->eject_capped_logged) {
            be->eject_capped_logged = 1;
            slb_notice("backend %s: an outlier, not ejected: %u of %u backends are out, max_ejection_percent (%u) "
                       "allows %u (logged once until it is ejected; sidelb_backend_ejections_capped_total)",
                       be->name, out, set->n, opts->max_ejection_percent, max);
        }
        return 0;
    }
    be->eject_capped_logged = 0;
    be->times_ejected++;
    be->ejections++;
    be->ejected_in_interval = 1;
    cap = opts->max_ejection_ms > opts->base_ejection_ms ? opts->max_ejection_ms : opts->base_ejection_ms;
    ms = (uint64_t)opts->base_ejection_ms * be->times_ejected;
    if (ms > cap)
        ms = cap;
    be->ejected_until_ms = now_ms + (ms ? ms : 1);
    be->consecutive_failures = 0;
    slb_notice("backend %s: ejected for %llu ms (ejection #%u, multiplier %u)", be->name, (unsigned long long)ms,
               be->ejections, be->times_ejected);
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

/* Whether an outlier is ejected: enforcing % chance (A50: a random integer in [0, 100) below it). */
static int enforce(uint32_t percent, struct slb_rng *rng)
{
    if (percent >= 100)
        return 1;
    if (percent == 0 || rng == NULL)
        return 0;
    return slb_rng_next(rng) % 100 < percent;
}

static uint64_t interval_calls(const struct slb_backend *be)
{
    return (uint64_t)be->interval_success + be->interval_failure;
}

/* A50's success-rate algorithm over the interval that ended. */
static int success_rate(const struct slb_outlier_options *opts, struct slb_backend_set *set, uint64_t now_ms,
                        struct slb_rng *rng)
{
    double sum = 0, sq = 0, mean, stdev, threshold;
    uint32_t hosts = 0;
    int ejected = 0;

    if (opts->enforcing_success_rate == 0 || opts->success_rate_minimum_hosts == 0)
        return 0;
    for (uint32_t i = 0; i < set->n; i++) {
        const struct slb_backend *be = set->items[i];
        uint64_t calls = interval_calls(be);
        if (calls == 0 || calls < opts->success_rate_request_volume)
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
        uint64_t calls = interval_calls(be);
        if (calls == 0 || calls < opts->success_rate_request_volume)
            continue;
        if ((double)be->interval_success / (double)calls < threshold && enforce(opts->enforcing_success_rate, rng))
            ejected += slb_outlier_eject(opts, set, be, now_ms);
    }
    return ejected;
}

/* A50's failure-percentage algorithm over the interval that ended. */
static int failure_percentage(const struct slb_outlier_options *opts, struct slb_backend_set *set, uint64_t now_ms,
                              struct slb_rng *rng)
{
    int ejected = 0;

    if (opts->enforcing_failure_percentage == 0 || set->n < opts->failure_percentage_minimum_hosts)
        return 0;
    for (uint32_t i = 0; i < set->n; i++) {
        struct slb_backend *be = set->items[i];
        uint64_t calls = interval_calls(be);
        if (calls == 0 || calls < opts->failure_percentage_request_volume)
            continue;
        if ((uint64_t)be->interval_failure * 100 >= (uint64_t)opts->failure_percentage_threshold * calls &&
            enforce(opts->enforcing_failure_percentage, rng))
            ejected += slb_outlier_eject(opts, set, be, now_ms);
    }
    return ejected;
}

int slb_outlier_interval(const struct slb_outlier_options *opts, struct slb_backend_set *set, uint64_t now_ms,
                         struct slb_rng *rng)
{
    int ejected;

    ejected = success_rate(opts, set, now_ms, rng);
    ejected += failure_percentage(opts, set, now_ms, rng);
    for (uint32_t i = 0; i < set->n; i++) {
        struct slb_backend *be = set->items[i];
        be->interval_success = be->interval_failure = 0; /* the next interval starts from zero */
        if (slb_outlier_ejected(be, now_ms))
            be->ejected_in_interval = 1; /* still out: the interval starting now has it ejected too */
        else if (be->ejected_in_interval)
            be->ejected_in_interval = 0; /* out for part of the interval that ended: no decay for it */
        else if (be->times_ejected > 0)
            be->times_ejected--; /* a whole interval in: the next ejection is shorter */
    }
    return ejected;
}

uint32_t slb_outlier_uneject(struct slb_backend_set *set, uint64_t now_ms)
{
    uint32_t back = 0;

    for (uint32_t i = 0; i < set->n; i++) {
        struct slb_backend *be = set->items[i];
        if (be->ejected_until_ms != 0 && be->ejected_until_ms <= now_ms) {
            be->ejected_until_ms = 0;
            be->usable_since_ms = now_ms; /* slow start ramps it back in */
            be->consecutive_failures = 0;
            back++;
            slb_notice("backend %s: ejection ended (multiplier %u)", be->name, be->times_ejected);
        }
    }
    return back;
}

uint64_t slb_outlier_next_uneject(const struct slb_backend_set *set)
{
    uint64_t next = 0;

    for (uint32_t i = 0; i < set->n; i++) {
        uint64_t u = set->items[i]->ejected_until_ms;
        if (u != 0 && (next == 0 || u < next))
            next = u;
    }
    return next;
}
