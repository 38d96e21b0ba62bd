/* lib/deadline.c: calls expire in deadline order, removed calls never do,
 * and the heap stays consistent through random adds and removes. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "deadline.h"
#include "proxy.h"
#include "rng.h"

#define N 200

static struct slb_call calls[N];
static int expired_order[N], n_expired;
static uint64_t last_deadline;
static int out_of_order;

static void on_expired(struct slb_call *c)
{
    if (c->deadline_ms < last_deadline)
        out_of_order = 1;
    last_deadline = c->deadline_ms;
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
        memset(&calls[i], 0, sizeof(calls[i]));
        calls[i].deadline_idx = SLB_DEADLINE_NONE;
        calls[i].deadline_ms = now + 5 + slb_rng_bounded(slb_rng_next(&rng), 150);
        ck_assert_int_eq(slb_deadline_add(&h, &calls[i]), 0);
    }
    /* remove every third, including the root several times */
    for (int i = 0; i < N; i += 3)
        slb_deadline_remove(&h, &calls[i]);
    slb_deadline_remove(&h, &calls[0]); /* twice is harmless */
    for (int i = 0; i < 5; i++)
        slb_deadline_remove(&h, h.v[0]);
    while (h.n > 0)
        uv_run(&loop, UV_RUN_ONCE);
    ck_assert_int_eq(out_of_order, 0);
    for (int k = 0; k < n_expired; k++)
        ck_assert_int_ne(expired_order[k] % 3, 0);
    ck_assert_int_eq(n_expired, N - (N + 2) / 3 - 5);
    for (int i = 0; i < N; i++)
        ck_assert_uint_eq(calls[i].deadline_idx, SLB_DEADLINE_NONE);
    slb_deadline_close(&h);
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
