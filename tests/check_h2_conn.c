/*
 * lib/h2_conn.c: the per-turn read limit. A peer that keeps its socket full
 * is read at most read_per_turn bytes (plus one read) per loop turn; its
 * reads start again on the next turn, and nothing it sent is lost.
 */
#include <check.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "h2_conn.h"

#define TOTAL (2 * 1024 * 1024)

static struct {
    struct slb_conn_ctx ctx;
    struct slb_conn conn;
    size_t got, max_turn_bytes;
    uint32_t turn;
    size_t turn_bytes;
    int freed;
} R;

static int count_read(struct slb_conn *c, const uint8_t *p, size_t n)
{
    if (R.turn != c->ctx->turn) {
        R.turn = c->ctx->turn;
        R.turn_bytes = 0;
    }
    R.turn_bytes += n;
    if (R.turn_bytes > R.max_turn_bytes)
        R.max_turn_bytes = R.turn_bytes;
    R.got += n;
    return 0;
}

static void on_close(struct slb_conn *c, int err) {}

static void on_free(struct slb_conn *c)
{
    R.freed = 1;
}

static const struct slb_conn_ops ops = {.on_read = count_read, .on_close = on_close, .on_free = on_free};

/* Reads what the peer wrote; returns the most bytes read in one turn. */
static size_t read_all(uint32_t per_turn)
{
    uv_loop_t loop;
    int sv[2];
    static uint8_t data[TOTAL];
    size_t off = 0;

    memset(&R, 0, sizeof(R));
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int sz = 4 * 1024 * 1024;
    if (setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) != 0)
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)); /* capped by net.core.wmem_max */
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    slb_conn_ctx_init(&R.ctx, &loop);
    R.ctx.read_per_turn = per_turn;
    ck_assert_int_eq(slb_conn_init(&R.conn, &R.ctx, &ops), 0);
    ck_assert_int_eq(uv_tcp_open(&R.conn.tcp, sv[1]), 0);
    ck_assert_int_eq(slb_conn_start(&R.conn), 0);
    /* the socket is full before the loop looks at it */
    while (off < TOTAL) {
        ssize_t w = write(sv[0], data + off, TOTAL - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    while (R.got < off)
        uv_run(&loop, UV_RUN_ONCE);
    ck_assert_uint_eq(R.got, off);
    ck_assert_uint_ge(off, 384 * 1024); /* more than one turn's share was waiting */
    close(sv[0]);
    slb_conn_close(&R.conn, 0);
    slb_conn_ctx_close(&R.ctx, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert(R.freed);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    return R.max_turn_bytes;
}

START_TEST(one_connection_reads_a_bounded_amount_per_turn)
{
    size_t most = read_all(256 * 1024);

    ck_assert_uint_le(most, 256 * 1024 + SLB_CONN_READ_BUF);
    ck_assert_uint_ge(R.ctx.read_pauses, 1);
}
END_TEST

START_TEST(no_limit_reads_what_libuv_gives)
{
    ck_assert_uint_gt(read_all(0), 256 * 1024 + SLB_CONN_READ_BUF);
    ck_assert_uint_eq(R.ctx.read_pauses, 0);
}
END_TEST

Suite *h2_conn_suite(void)
{
    Suite *s = suite_create("h2_conn");
    TCase *tc = tcase_create("reads");

    tcase_add_test(tc, one_connection_reads_a_bounded_amount_per_turn);
    tcase_add_test(tc, no_limit_reads_what_libuv_gives);
    suite_add_tcase(s, tc);
    return s;
}
