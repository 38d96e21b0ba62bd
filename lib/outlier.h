/*
 * Passive outlier detection (gRFC A50, Envoy's outlier detection): pure
 * functions over the counters in struct slb_backend, so they are testable
 * without a loop. The cluster calls slb_outlier_on_result() after every
 * upstream attempt, slb_outlier_interval() every interval_ms (A50's interval
 * timer) and slb_outlier_uneject() when slb_outlier_next_uneject() is due.
 *
 * Counting: each backend counts successes and failures in the current
 * interval; each interval evaluation judges the interval that just ended and
 * starts a new one from zero (A50's two call-counter buckets, swapped at each
 * evaluation). What is a failure is the caller's (lib/call.c) business.
 *
 * Ejection, three detectors:
 * - consecutive failures (Envoy's consecutive_5xx): consecutive_failures
 *   failed results in a row eject at once;
 * - success rate (A50, every interval): among the backends with at least
 *   success_rate_request_volume calls in the interval, if there are at least
 *   success_rate_minimum_hosts of them, each whose success rate is below
 *   mean - stdev_factor * stdev is ejected with probability
 *   enforcing_success_rate %;
 * - failure percentage (A50, every interval): if the set has at least
 *   failure_percentage_minimum_hosts backends, each with at least
 *   failure_percentage_request_volume calls whose failure percentage is
 *   >= failure_percentage_threshold is ejected with probability
 *   enforcing_failure_percentage % (0 by default: off, as in Envoy).
 *
 * Ejection time (A50): base_ejection_ms * times_ejected, capped at
 * max(base_ejection_ms, max_ejection_ms). times_ejected (the multiplier) goes
 * up by one per ejection and down by one per interval evaluation that finds
 * the backend not ejected and not ejected at any time in the interval that
 * ended, so a backend that keeps failing stays out longer and longer, and one
 * that behaves earns its way back to base_ejection_ms.
 *
 * max_ejection_percent: at most floor(n * percent / 100) backends are ejected
 * at once, but at least one in a set of two or more (as Envoy and A50: "will
 * eject at least one host regardless of the value"), so a small cluster can
 * still shed its one bad host; never the only backend of a set; none at all
 * when percent is 0.
 */
#ifndef SLB_OUTLIER_H
#define SLB_OUTLIER_H

#include <stdint.h>

#include "backend.h"
#include "rng.h"

/* Mirrors struct slb_config_outlier (config.h); owned by the cluster's config. */
struct slb_outlier_options {
    uint32_t consecutive_failures;              /* default 5 */
    uint32_t base_ejection_ms;                  /* default 30000 */
    uint32_t max_ejection_ms;                   /* default 300000 */
    uint32_t max_ejection_percent;              /* default 10 */
    uint32_t interval_ms;                       /* default 10000 */
    uint32_t success_rate_minimum_hosts;        /* default 5 */
    uint32_t success_rate_request_volume;       /* default 100 */
    double success_rate_stdev_factor;           /* default 1.9 */
    uint32_t enforcing_success_rate;            /* default 100 (%); 0 = no success-rate ejection */
    uint32_t failure_percentage_threshold;      /* default 85 (%) */
    uint32_t failure_percentage_minimum_hosts;  /* default 5 */
    uint32_t failure_percentage_request_volume; /* default 50 */
    uint32_t enforcing_failure_percentage;      /* default 0 (%): off */
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
 * One interval evaluation (A50's timer): judges the interval that ended with
 * the success-rate and failure-percentage detectors (rng draws the
 * enforcement chance; may be NULL when both enforcing_* are 0 or 100), starts
 * the next interval's counters from zero and decays the multiplier of the
 * backends that stayed in. Returns how many it ejected.
 */
int slb_outlier_interval(const struct slb_outlier_options *opts, struct slb_backend_set *set, uint64_t now_ms,
                         struct slb_rng *rng);

/* Returns to service the backends whose ejection time passed (stamping
 * usable_since_ms for slow start). Returns how many. */
uint32_t slb_outlier_uneject(struct slb_backend_set *set, uint64_t now_ms);

/* When the earliest ejection in set ends (0 when none is ejected). */
uint64_t slb_outlier_next_uneject(const struct slb_backend_set *set);

/*
 * Whether an attempt that ended with this grpc-status counts as a failure:
 * the statuses Envoy maps to 5xx for gRPC (UNKNOWN, DEADLINE_EXCEEDED,
 * UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), and -1 for an attempt
 * with no status (reset, connection lost or refused). Application answers
 * (NOT_FOUND, INVALID_ARGUMENT, ...) mean the backend works: successes.
 */
static inline int slb_outlier_status_failed(int grpc_status)
{
    return grpc_status < 0 || grpc_status == 2 || grpc_status == 4 || grpc_status == 12 || grpc_status == 13 ||
           grpc_status == 14 || grpc_status == 15;
}

/* Whether be is currently ejected. */
static inline int slb_outlier_ejected(const struct slb_backend *be, uint64_t now_ms)
{
    return be->ejected_until_ms > now_ms;
}

#endif
