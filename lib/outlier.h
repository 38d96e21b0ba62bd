/*
 * Passive outlier detection (Envoy's outlier detection, gRPC's A50): pure
 * functions over the counters in struct slb_backend, so they are testable
 * without a loop. The cluster calls slb_outlier_on_result() after every
 * upstream attempt and slb_outlier_tick() every interval_ms.
 *
 * Ejection: consecutive_failures failed results in a row, or a success rate
 * below mean - stdev_factor * stdev of the hosts with enough calls in the
 * interval. An ejected backend is unusable until base_ejection_ms *
 * times_ejected has passed (capped at max(base, max_ejection_ms)); the tick
 * then un-ejects it and stamps usable_since_ms so slow start ramps it up.
 * times_ejected decays by one per interval spent un-ejected.
 *
 * max_ejection_percent: at most floor(n * percent / 100) backends are ejected
 * at once, but at least one in a set of two or more (as Envoy does with
 * always_eject_one_host), so a small cluster can still shed its one bad
 * host; never the only backend of a set; none at all when percent is 0.
 */
#ifndef SLB_OUTLIER_H
#define SLB_OUTLIER_H

#include <stdint.h>

#include "backend.h"

/* Mirrors struct slb_config_outlier (config.h); owned by the cluster. */
struct slb_outlier_options {
    uint32_t consecutive_failures;        /* default 5; 0 = no consecutive-failure ejection */
    uint32_t base_ejection_ms;            /* default 30000 */
    uint32_t max_ejection_ms;             /* default 300000 */
    uint32_t max_ejection_percent;        /* default 10 */
    uint32_t interval_ms;                 /* default 10000 */
    uint32_t success_rate_minimum_hosts;  /* default 5; 0 = no success-rate ejection */
    uint32_t success_rate_request_volume; /* default 100 */
    double success_rate_stdev_factor;     /* default 1.9 */
};

void slb_outlier_options_default(struct slb_outlier_options *o);

/*
 * Records one attempt's result on be (a member of set) and ejects it when it
 * reaches consecutive_failures. Returns 1 if this call ejected be, else 0.
 */
int slb_outlier_on_result(const struct slb_outlier_options *opts, struct slb_backend_set *set, struct slb_backend *be,
                          int success, uint64_t now_ms);

/* Ejects be now (if the percent cap allows). 1 if ejected, else 0. */
int slb_outlier_eject(const struct slb_outlier_options *opts, struct slb_backend_set *set, struct slb_backend *be,
                      uint64_t now_ms);

/*
 * The interval's work: un-ejects backends whose time passed, decays
 * times_ejected, runs success-rate ejection and resets the interval counters.
 * Returns how many it ejected; *unejected (may be NULL) gets how many it
 * returned to service.
 */
int slb_outlier_tick(const struct slb_outlier_options *opts, struct slb_backend_set *set, uint64_t now_ms,
                     uint32_t *unejected);

/* Whether be is currently ejected. */
static inline int slb_outlier_ejected(const struct slb_backend *be, uint64_t now_ms)
{
    return be->ejected_until_ms > now_ms;
}

#endif
