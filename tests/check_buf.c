/* lib/buf.c: the chunk queue of a call direction (send cursor, retain,
 * commit, rewind) and the bounded output buffer. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "common.h"

/* Drains q through peek/advance into out; returns the byte count. */
static size_t drain(struct slb_chunkq *q, uint8_t *out, size_t max)
{
    size_t total = 0, n;
    const uint8_t *p;

    while ((n = slb_chunkq_peek(q, &p)) > 0 && total < max) {
        if (n > max - total)
            n = max - total;
        memcpy(out + total, p, n);
        slb_chunkq_advance(q, n);
        total += n;
    }
    return total;
}

static uint8_t *pattern(size_t n)
{
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i * 7 + 3);
    return b;
}

START_TEST(fifo_across_chunks)
{
    struct slb_chunkq q;
    size_t n = 3 * SLB_CHUNK_SIZE + 123;
    uint8_t *in = pattern(n), *out = malloc(n);

    slb_chunkq_init(&q, 0);
    /* odd-sized appends straddle chunk boundaries */
    for (size_t off = 0; off < n; off += 1000)
        ck_assert_int_eq(slb_chunkq_append(&q, in + off, off + 1000 <= n ? 1000 : n - off), 0);
    ck_assert_uint_eq(q.unsent, n);
    ck_assert_uint_eq(drain(&q, out, n), n);
    ck_assert_mem_eq(in, out, n);
    ck_assert_uint_eq(q.unsent, 0);
    /* not retaining: everything sent is released, at most one chunk stays */
    ck_assert_ptr_eq(q.head, q.tail);
    slb_chunkq_clear(&q);
    free(in);
    free(out);
}
END_TEST

START_TEST(interleaved_append_and_send)
{
    struct slb_chunkq q;
    uint8_t *in = pattern(100000), out[100000];
    size_t got = 0, put = 0;

    slb_chunkq_init(&q, 0);
    while (got < sizeof(out)) {
        if (put < sizeof(out)) {
            size_t k = put + 777 <= sizeof(out) ? 777 : sizeof(out) - put;
            ck_assert_int_eq(slb_chunkq_append(&q, in + put, k), 0);
            put += k;
        }
        got += drain(&q, out + got, 500);
    }
    ck_assert_mem_eq(in, out, sizeof(out));
    slb_chunkq_clear(&q);
    free(in);
}
END_TEST

START_TEST(retain_rewind_replays_everything)
{
    struct slb_chunkq q;
    size_t n = 2 * SLB_CHUNK_SIZE + 10;
    uint8_t *in = pattern(n), *out = malloc(n);

    slb_chunkq_init(&q, 1);
    ck_assert_int_eq(slb_chunkq_append(&q, in, n), 0);
    ck_assert_uint_eq(drain(&q, out, n / 2), n / 2);
    ck_assert_uint_eq(q.retained, n / 2);
    /* the attempt failed: replay from the first byte */
    slb_chunkq_rewind(&q);
    ck_assert_uint_eq(q.unsent, n);
    ck_assert_uint_eq(q.retained, 0);
    ck_assert_uint_eq(drain(&q, out, n), n);
    ck_assert_mem_eq(in, out, n);
    slb_chunkq_clear(&q);
    free(in);
    free(out);
}
END_TEST

START_TEST(second_reader_replays_kept_bytes_up_to_the_cursor)
{
    struct slb_chunkq q;
    size_t n = 2 * SLB_CHUNK_SIZE + 10, got = 0, k;
    uint8_t *in = pattern(n), *out = malloc(n);
    const uint8_t *p;

    slb_chunkq_init(&q, 1);
    ck_assert_int_eq(slb_chunkq_append(&q, in, n), 0);
    ck_assert_uint_eq(drain(&q, out, SLB_CHUNK_SIZE + 5), SLB_CHUNK_SIZE + 5);
    /* a hedge that started later reads what the first attempt sent, never past the cursor */
    while ((k = slb_chunkq_peek_at(&q, got, &p)) > 0) {
        memcpy(out + got, p, k);
        got += k;
    }
    ck_assert_uint_eq(got, SLB_CHUNK_SIZE + 5);
    ck_assert_mem_eq(in, out, got);
    /* committing to the hedge moves the cursor back to where it is */
    slb_chunkq_seek(&q, 100);
    ck_assert_uint_eq(q.retained, 100);
    ck_assert_uint_eq(q.unsent, n - 100);
    ck_assert_uint_eq(drain(&q, out, n), n - 100);
    ck_assert_mem_eq(in + 100, out, n - 100);
    /* a queue that keeps nothing has nothing to replay */
    slb_chunkq_commit(&q);
    ck_assert_uint_eq(slb_chunkq_peek_at(&q, 0, &p), 0);
    slb_chunkq_clear(&q);
    free(in);
    free(out);
}
END_TEST

START_TEST(commit_releases_sent_bytes)
{
    struct slb_chunkq q;
    size_t n = 3 * SLB_CHUNK_SIZE;
    uint8_t *in = pattern(n), *out = malloc(n);

    slb_chunkq_init(&q, 1);
    ck_assert_int_eq(slb_chunkq_append(&q, in, n), 0);
    ck_assert_uint_eq(drain(&q, out, 2 * SLB_CHUNK_SIZE + 5), 2 * SLB_CHUNK_SIZE + 5);
    slb_chunkq_commit(&q);
    ck_assert_uint_eq(q.retained, 0);
    ck_assert_int_eq(q.retain, 0);
    /* the released chunks are gone: head is the one with the cursor */
    ck_assert_ptr_eq(q.head, q.send);
    /* a rewind after commit is a no-op */
    slb_chunkq_rewind(&q);
    ck_assert_uint_eq(q.unsent, n - (2 * SLB_CHUNK_SIZE + 5));
    ck_assert_uint_eq(drain(&q, out + 2 * SLB_CHUNK_SIZE + 5, n), n - (2 * SLB_CHUNK_SIZE + 5));
    ck_assert_mem_eq(in, out, n);
    slb_chunkq_clear(&q);
    free(in);
    free(out);
}
END_TEST

START_TEST(clear_reports_unsent)
{
    struct slb_chunkq q;
    uint8_t b[5000] = {0};
    const uint8_t *p;

    slb_chunkq_init(&q, 0);
    ck_assert_int_eq(slb_chunkq_append(&q, b, sizeof(b)), 0);
    slb_chunkq_advance(&q, slb_chunkq_peek(&q, &p) > 1000 ? 1000 : 0);
    ck_assert_uint_eq(slb_chunkq_clear(&q), 4000);
    ck_assert_uint_eq(slb_chunkq_peek(&q, &p), 0);
    /* reusable after clear */
    ck_assert_int_eq(slb_chunkq_append(&q, b, 10), 0);
    ck_assert_uint_eq(slb_chunkq_peek(&q, &p), 10);
    slb_chunkq_clear(&q);
}
END_TEST

START_TEST(outbuf_limit)
{
    struct slb_outbuf b = {0};
    uint8_t x[1000] = {0};

    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(slb_outbuf_append(&b, x, sizeof(x), 10000), 0);
    ck_assert_uint_eq(b.len, 10000);
    ck_assert_int_eq(slb_outbuf_append(&b, x, 1, 10000), SLB_ELIMIT);
    ck_assert_uint_eq(b.len, 10000);
    slb_outbuf_dispose(&b);
}
END_TEST

Suite *buf_suite(void)
{
    Suite *s = suite_create("buf");
    TCase *tc = tcase_create("chunkq");

    tcase_add_test(tc, fifo_across_chunks);
    tcase_add_test(tc, interleaved_append_and_send);
    tcase_add_test(tc, retain_rewind_replays_everything);
    tcase_add_test(tc, commit_releases_sent_bytes);
    tcase_add_test(tc, clear_reports_unsent);
    tcase_add_test(tc, outbuf_limit);
    tcase_add_test(tc, second_reader_replays_kept_bytes_up_to_the_cursor);
    suite_add_tcase(s, tc);
    return s;
}
