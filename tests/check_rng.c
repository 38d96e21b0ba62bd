/* lib/rng.h: splitmix64's reference outputs (the ring_hash points depend on
 * them), bounded() at its edges, unit() range, and seeds from the OS. */
#include <check.h>
#include <stdint.h>

#include "rng.h"

START_TEST(splitmix64_reference)
{
    /* Vigna's splitmix64.c from state 0 */
    struct slb_rng r;
    slb_rng_seed(&r, 0);
    ck_assert_uint_eq(slb_rng_next(&r), 0xE220A8397B1DCDAFULL);
    ck_assert_uint_eq(slb_rng_next(&r), 0x6E789E6AA1B965F4ULL);
    ck_assert_uint_eq(slb_rng_next(&r), 0x06C45D188009454FULL);
    /* the seed is the state: the same seed, the same stream */
    struct slb_rng a, b;
    slb_rng_seed(&a, 42);
    slb_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++)
        ck_assert_uint_eq(slb_rng_next(&a), slb_rng_next(&b));
}
END_TEST

START_TEST(bounded_edges)
{
    ck_assert_uint_eq(slb_rng_bounded(0, 10), 0);
    ck_assert_uint_eq(slb_rng_bounded(UINT64_MAX, 10), 9);
    ck_assert_uint_eq(slb_rng_bounded(UINT64_MAX, 1), 0);
    ck_assert_uint_eq(slb_rng_bounded(1ULL << 63, 10), 5);
    ck_assert_uint_eq(slb_rng_bounded(UINT64_MAX, UINT64_MAX), UINT64_MAX - 1);
    ck_assert_uint_eq(slb_rng_bounded(12345, UINT64_MAX), 12344);

    /* 7 buckets x 70,000 draws: chi-square (6 degrees of freedom) below its 99.9 % quantile 22.46 */
    unsigned counts[7] = {0};
    struct slb_rng r;
    double x = 0;
    slb_rng_seed(&r, 1);
    for (int i = 0; i < 70000; i++)
        counts[slb_rng_bounded(slb_rng_next(&r), 7)]++;
    for (int i = 0; i < 7; i++)
        x += (counts[i] - 10000.0) * (counts[i] - 10000.0) / 10000.0;
    ck_assert_msg(x < 22.46, "chi2 %.2f", x);
}
END_TEST

START_TEST(unit_range)
{
    struct slb_rng r;
    double sum = 0;
    slb_rng_seed(&r, 3);
    for (int i = 0; i < 100000; i++) {
        double u = slb_rng_unit(&r);
        ck_assert(u >= 0.0 && u < 1.0);
        sum += u;
    }
    /* mean 0.5, sigma of the mean 0.0009 */
    ck_assert_msg(sum / 100000 > 0.495 && sum / 100000 < 0.505, "mean %.4f", sum / 100000);
    /* the largest output maps below 1 */
    ck_assert((double)(UINT64_MAX >> 11) * 0x1.0p-53 < 1.0);
}
END_TEST

START_TEST(seed_from_os)
{
    uint64_t a = slb_rng_seed_from_os(), b = slb_rng_seed_from_os();
    ck_assert_uint_ne(a, b);
}
END_TEST

Suite *rng_suite(void)
{
    Suite *s = suite_create("rng");
    TCase *tc = tcase_create("rng");

    tcase_add_test(tc, splitmix64_reference);
    tcase_add_test(tc, bounded_edges);
    tcase_add_test(tc, unit_range);
    tcase_add_test(tc, seed_from_os);
    suite_add_tcase(s, tc);
    return s;
}
