/* lib/h2_mem.c: size-class blocks, page slots (zeroed, reused, given back),
 * capture of a session's page blocks and their release. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "h2_mem.h"

static int all_zero(const void *p, size_t n)
{
    const unsigned char *q = p;
    for (size_t i = 0; i < n; i++)
        if (q[i] != 0)
            return 0;
    return 1;
}

START_TEST(test_small_and_large_blocks)
{
    nghttp2_mem *m = slb_h2_mem();
    size_t sizes[] = {1, 16, 100, 2048, 3000, 4096, 5000, 16394, 20480, 20481, 100000};

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        unsigned char *p = m->calloc(1, sizes[i], m->mem_user_data);
        ck_assert_ptr_nonnull(p);
        ck_assert(all_zero(p, sizes[i]));
        memset(p, 0xab, sizes[i]);
        p = m->realloc(p, sizes[i] * 2, m->mem_user_data); /* grows, keeps the bytes */
        ck_assert_ptr_nonnull(p);
        ck_assert_int_eq(p[sizes[i] - 1], 0xab);
        m->free(p, m->mem_user_data);
    }
}
END_TEST

START_TEST(test_slots_are_zero_when_reused)
{
    nghttp2_mem *m = slb_h2_mem();
    size_t before = slb_h2_mem_slot_bytes();
    unsigned char *p = m->malloc(16394, m->mem_user_data), *q;

    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(slb_h2_mem_slot_bytes(), before + 5 * 4096);
    ck_assert_uint_eq((uintptr_t)p % 4096, 0); /* page slots are page aligned */
    memset(p, 0x5a, 16394);
    m->free(p, m->mem_user_data);
    ck_assert_uint_eq(slb_h2_mem_slot_bytes(), before);
    q = m->calloc(1, 16394, m->mem_user_data);
    ck_assert_ptr_eq(q, p); /* the same slot, its pages given back and zero again */
    ck_assert(all_zero(q, 16394));
    m->free(q, m->mem_user_data);
}
END_TEST

START_TEST(test_capture_and_release)
{
    nghttp2_mem *m = slb_h2_mem();
    struct slb_h2_mem_capture cap;
    unsigned char *fb, *map, *small;

    slb_h2_mem_capture_begin(&cap);
    fb = m->malloc(16394, m->mem_user_data);
    small = m->malloc(100, m->mem_user_data); /* not a page block: not captured */
    map = m->calloc(256, 16, m->mem_user_data);
    slb_h2_mem_capture_end();
    ck_assert_uint_eq(cap.n, 2);
    ck_assert_ptr_eq(cap.p[0], fb);
    ck_assert_ptr_eq(cap.p[1], map);
    ck_assert_uint_eq(cap.size[1], 4096);

    memset(fb, 0x11, 100);
    ck_assert_int_eq(slb_h2_mem_release(&cap, 0, 1), 1); /* content unused: dropped */
    ck_assert(all_zero(fb, 16394));
    map[10] = 1;
    ck_assert_int_eq(slb_h2_mem_release(&cap, 1, 0), 0); /* not zero: kept */
    ck_assert_int_eq(map[10], 1);
    map[10] = 0;
    ck_assert_int_eq(slb_h2_mem_release(&cap, 1, 0), 1);

    /* a freed (and maybe reused) block is never released through an old capture */
    m->free(fb, m->mem_user_data);
    fb = m->malloc(16394, m->mem_user_data);
    ck_assert_ptr_eq(fb, cap.p[0]);
    memset(fb, 0x22, 10);
    ck_assert_int_eq(slb_h2_mem_release(&cap, 0, 1), 0);
    ck_assert_int_eq(fb[0], 0x22);
    m->free(fb, m->mem_user_data);
    m->free(map, m->mem_user_data);
    m->free(small, m->mem_user_data);
}
END_TEST

Suite *h2_mem_suite(void)
{
    Suite *s = suite_create("h2_mem");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_small_and_large_blocks);
    tcase_add_test(tc, test_slots_are_zero_when_reused);
    tcase_add_test(tc, test_capture_and_release);
    suite_add_tcase(s, tc);
    return s;
}
