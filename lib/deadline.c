#include "deadline.h"

#include <stdlib.h>

#include "common.h"

static int earlier(const struct slb_deadline *a, const struct slb_deadline *b)
{
    return a->due_ms < b->due_ms;
}

static void place(struct slb_deadline_heap *h, uint32_t i, struct slb_deadline *c)
{
    h->v[i] = c;
    c->idx = i;
}

static void sift_up(struct slb_deadline_heap *h, uint32_t i)
{
    struct slb_deadline *c = h->v[i];

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!earlier(c, h->v[parent]))
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, c);
}

static void sift_down(struct slb_deadline_heap *h, uint32_t i)
{
    struct slb_deadline *c = h->v[i];

    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        struct slb_deadline *best = c;
        if (l < h->n && earlier(h->v[l], best)) {
            m = l;
            best = h->v[l];
        }
        if (r < h->n && earlier(h->v[r], best))
            m = r;
        if (m == i)
            break;
        place(h, i, h->v[m]);
        i = m;
    }
    place(h, i, c);
}

static void on_timer(uv_timer_t *t);

/* Keeps the timer set for the earliest deadline. */
static void arm(struct slb_deadline_heap *h)
{
    uint64_t now, next;

    if (h->n == 0) {
        if (h->armed_ms != 0)
            uv_timer_stop(&h->timer);
        h->armed_ms = 0;
        return;
    }
    next = h->v[0]->due_ms;
    if (next == h->armed_ms)
        return;
    now = uv_now(h->timer.loop);
    h->armed_ms = next;
    uv_timer_start(&h->timer, on_timer, next > now ? next - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct slb_deadline_heap *h = slb_container_of(t, struct slb_deadline_heap, timer);
    uint64_t now = uv_now(t->loop);

    h->armed_ms = 0;
    while (h->n > 0 && h->v[0]->due_ms <= now) {
        struct slb_deadline *c = h->v[0];
        slb_deadline_remove(h, c);
        h->on_expired(c); /* may free c, or set it again */
    }
    arm(h);
}

void slb_deadline_init(struct slb_deadline_heap *h, uv_loop_t *loop, void (*on_expired)(struct slb_deadline *d))
{
    h->v = NULL;
    h->n = h->cap = 0;
    h->armed_ms = 0;
    h->on_expired = on_expired;
    uv_timer_init(loop, &h->timer);
    uv_unref((uv_handle_t *)&h->timer); /* a pending deadline alone does not keep the loop alive */
}

void slb_deadline_dispose(struct slb_deadline_heap *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

int slb_deadline_set(struct slb_deadline_heap *h, struct slb_deadline *d, uint64_t due_ms)
{
    uint32_t i = d->idx;

    if (i != SLB_DEADLINE_NONE && i < h->n && h->v[i] == d) {
        /* already in: move it (a heap entry must never change its key in place) */
        d->due_ms = due_ms;
        if (i > 0 && earlier(d, h->v[(i - 1) / 2]))
            sift_up(h, i);
        else
            sift_down(h, i);
        arm(h);
        return 0;
    }
    d->due_ms = due_ms;
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 64;
        struct slb_deadline **v = realloc(h->v, cap * sizeof(*v));
        if (v == NULL)
            return SLB_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    place(h, h->n++, d);
    sift_up(h, d->idx);
    arm(h);
    return 0;
}

void slb_deadline_remove(struct slb_deadline_heap *h, struct slb_deadline *d)
{
    uint32_t i = d->idx;
    struct slb_deadline *last;

    if (i == SLB_DEADLINE_NONE || i >= h->n || h->v[i] != d)
        return;
    d->idx = SLB_DEADLINE_NONE;
    last = h->v[--h->n];
    if (i < h->n) {
        place(h, i, last);
        if (i > 0 && earlier(last, h->v[(i - 1) / 2]))
            sift_up(h, i);
        else
            sift_down(h, i);
    }
    /* the timer is re-armed lazily: an early fire just finds nothing due */
}
