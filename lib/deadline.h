/*
 * Call deadlines (the app's grpc-timeout, or a shorter methodConfig
 * timeout): a binary min-heap of calls by deadline and one uv timer armed
 * for the earliest. A call past its deadline ends with DEADLINE_EXCEEDED and
 * its upstream stream is cancelled, whether it waits for a backend, for a
 * connection, or for a backend that ignores grpc-timeout.
 *
 * Insert and remove are O(log n) and allocation-free once the array has
 * grown. Ownership: embedded in the server; the heap only points at calls,
 * each of which removes itself before it is freed.
 */
#ifndef SLB_DEADLINE_H
#define SLB_DEADLINE_H

#include <stdint.h>
#include <uv.h>

struct slb_call;

#define SLB_DEADLINE_NONE UINT32_MAX /* call->deadline_idx when not in the heap */

struct slb_deadline_heap {
    struct slb_call **v;
    uint32_t n, cap;
    uv_timer_t timer;
    uint64_t armed_ms; /* deadline the timer is set for; 0 = stopped */
    void (*on_expired)(struct slb_call *call);
};

void slb_deadline_init(struct slb_deadline_heap *h, uv_loop_t *loop, void (*on_expired)(struct slb_call *call));
/* Closes the timer (the array is freed in slb_deadline_dispose after the loop closed it). */
void slb_deadline_close(struct slb_deadline_heap *h);
void slb_deadline_dispose(struct slb_deadline_heap *h);
/* Adds the call (call->deadline_ms set). 0 or SLB_ENOMEM. */
int slb_deadline_add(struct slb_deadline_heap *h, struct slb_call *call);
/* Removes the call if it is in the heap. */
void slb_deadline_remove(struct slb_deadline_heap *h, struct slb_call *call);

#endif
