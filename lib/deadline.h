/*
 * Timers of many calls on one uv timer: a binary min-heap of entries by due
 * time and one uv timer armed for the earliest. A call keeps one entry, due
 * at the earliest of its deadline (the app's grpc-timeout, or a shorter
 * methodConfig timeout), the end of its wait for a usable backend, and the
 * end of a retry backoff; the call decides what expiry means.
 *
 * Insert, move and remove are O(log n) and allocation-free once the array
 * has grown. Ownership: the heap is embedded in the loop context; it only
 * points at entries, each embedded in a call that removes it before it is
 * freed.
 */
#ifndef SLB_DEADLINE_H
#define SLB_DEADLINE_H

#include <stdint.h>
#include <uv.h>

#define SLB_DEADLINE_NONE UINT32_MAX /* idx when not in the heap */

/* One entry. Owner: embedded in its user; idx belongs to the heap. */
struct slb_deadline {
    uint64_t due_ms;
    uint32_t idx;
};

struct slb_deadline_heap {
    struct slb_deadline **v;
    uint32_t n, cap;
    uv_timer_t timer;
    uint64_t armed_ms; /* due time the timer is set for; 0 = stopped */
    void (*on_expired)(struct slb_deadline *d);
};

static inline void slb_deadline_entry_init(struct slb_deadline *d)
{
    d->due_ms = 0;
    d->idx = SLB_DEADLINE_NONE;
}

void slb_deadline_init(struct slb_deadline_heap *h, uv_loop_t *loop, void (*on_expired)(struct slb_deadline *d));
/* The timer handle, for the owner to close (the array is freed in slb_deadline_dispose after it closed). */
static inline uv_handle_t *slb_deadline_handle(struct slb_deadline_heap *h)
{
    return (uv_handle_t *)&h->timer;
}
void slb_deadline_dispose(struct slb_deadline_heap *h);
/* Adds d due at due_ms, or moves it there if it is in the heap already. 0 or SLB_ENOMEM. */
int slb_deadline_set(struct slb_deadline_heap *h, struct slb_deadline *d, uint64_t due_ms);
/* Removes d if it is in the heap. */
void slb_deadline_remove(struct slb_deadline_heap *h, struct slb_deadline *d);

#endif
