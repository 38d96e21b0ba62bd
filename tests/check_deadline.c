/* lib/deadline.c: entries expire in due order, removed ones never do, a
 * moved one expires at its new time, and the heap stays consistent through
 * random adds, moves and removes. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "deadline.h"
#include "rng.h"

#define N 200

static struct slb_deadline calls[N];
static int expired_order[N], n_expired;
static uint64_t last_deadline;
static int out_of_order;

static void on_expired(struct slb_deadline *c)
{
    if (c->due_ms < last_deadline)
        out_of_order = 1;
    last_deadline = c->due_ms;
    expired_order[n_expired++] = (int)(c - calls);
}

START_TEST(expire_in_order_and_removed_never)
{
    struct slb_deadline_heap h;
    uv_loop_t loop;
    uint64_t now;
    struct slb_rng rng;

    uv_loop_init(&loop);
    slb_deadline_init(&h, &loop, on_expired);
    uv_ref((uv_handle_t *)&h.timer); /* keep the test loop running while deadlines are pending */
    now = uv_now(&loop);
    slb_rng_seed(&rng, 7);
    for (int i = 0; i < N; i++) {
        slb_deadline_entry_init(&calls[i]);
        ck_assert_int_eq(slb_deadline_set(&h, &calls[i], now + 5 + slb_rng_bounded(slb_rng_next(&rng), 150)), 0);
    }
    /* move some: later ones earlier and the other way round (a moved key must re-sort) */
    for (int i = 1; i < N; i += 7)
        ck_assert_int_eq(slb_deadline_set(&h, &calls[i], now + 5 + slb_rng_bounded(slb_rng_next(&rng), 150)), 0);
    ck_assert_int_eq(slb_deadline_set(&h, &calls[2], now + 400), 0);
    /* remove every third, including the root several times */
    for (int i = 0; i < N; i += 3)
        slb_deadline_remove(&h, &calls[i]);
    slb_deadline_remove(&h, &calls[0]); /* twice is harmless */
    for (int i = 0; i < 5; i++)
        slb_deadline_remove(&h, h.v[0]);
    ck_assert_int_eq(slb_deadline_set(&h, &calls[2], now + 1), 0); /* the latest becomes the earliest */
    while (h.n > 0)
        uv_run(&loop, UV_RUN_ONCE);
    ck_assert_int_eq(out_of_order, 0);
    for (int k = 0; k < n_expired; k++)
        ck_assert_int_ne(expired_order[k] % 3, 0);
    ck_assert_int_eq(n_expired, N - (N + 2) / 3 - 5);
    for (int i = 0; i < N; i++)
        ck_assert_uint_eq(calls[i].idx, SLB_DEADLINE_NONE);
    ck_assert_int_eq(expired_order[0], 2); /* moved to the front */
    uv_close(slb_deadline_handle(&h), NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    slb_deadline_dispose(&h);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

Suite *deadline_suite(void)
{
    Suite *s = suite_create("deadline");
    TCase *tc = tcase_create("deadline");

    tcase_add_test(tc, expire_in_order_and_removed_never);
    suite_add_tcase(s, tc);
    return s;
}
