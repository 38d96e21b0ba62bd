#include "loop_ctx.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "h2_downstream.h"
#include "h2_upstream.h"

#define SWEEP_MS 1000

static void on_sweep(uv_timer_t *t)
{
    slb_downstream_sweep(slb_container_of(t, struct slb_loop_ctx, sweep));
}

int slb_loop_ctx_init(struct slb_loop_ctx *ctx, uv_loop_t *loop, void (*on_timer)(struct slb_deadline *d))
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->loop = loop;
    slb_conn_ctx_init(&ctx->io, loop);
    slb_loop_ctx_set_budgets(ctx, NULL);
    slb_rng_seed(&ctx->rng, slb_rng_seed_from_os() ^ (uint64_t)(uintptr_t)ctx);
    slb_deadline_init(&ctx->timers, loop, on_timer);
    slb_conn_ctx_handle_opened(&ctx->io);
    slb_list_init(&ctx->downstreams);
    slb_list_init(&ctx->downstream_sets);
    slb_list_init(&ctx->pools);
    /* one coarse timer for every app connection and stream timeout: frames only store a time */
    uv_timer_init(loop, &ctx->sweep);
    slb_conn_ctx_handle_opened(&ctx->io);
    uv_timer_start(&ctx->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&ctx->sweep);
    if ((ctx->down_cbs = slb_downstream_callbacks_new()) == NULL ||
        (ctx->up_cbs = slb_upstream_callbacks_new()) == NULL || nghttp2_option_new(&ctx->down_opt) != 0 ||
        nghttp2_option_new(&ctx->up_opt) != 0)
        return SLB_ENOMEM;
    /* End-to-end flow control: windows reopen only as the other side takes the bytes. */
    nghttp2_option_set_no_auto_window_update(ctx->down_opt, 1);
    nghttp2_option_set_no_auto_window_update(ctx->up_opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(ctx->up_opt, 100);
    /* libnghttp2's own guard against RST_STREAM floods, set explicitly (its
     * defaults); the premature-reset budget in h2_downstream acts earlier */
    nghttp2_option_set_stream_reset_rate_limit(ctx->down_opt, 1000, 33);
    return 0;
}

void slb_loop_ctx_set_budgets(struct slb_loop_ctx *ctx, const struct slb_config_budgets *b)
{
    if (b != NULL)
        ctx->budgets = *b;
    else
        slb_config_budgets_default(&ctx->budgets);
    ctx->io.read_per_turn = ctx->budgets.read_bytes_per_turn;
}

void slb_loop_ctx_close_connections(struct slb_loop_ctx *ctx)
{
    struct slb_list *it, *tmp;

    ctx->stopping = 1;
    slb_list_foreach_safe(it, tmp, &ctx->downstreams)
    {
        struct slb_downstream *dc = slb_list_entry(it, struct slb_downstream, ctx_link);
        slb_conn_close(&dc->conn, 0);
    }
    /* every pool, also those of backends discovery removed long ago */
    slb_list_foreach_safe(it, tmp, &ctx->pools)
    {
        struct slb_upstream_pool *pool = slb_list_entry(it, struct slb_upstream_pool, ctx_link);
        slb_upstream_pool_close(pool);
    }
}

static void on_all_closed(struct slb_conn_ctx *io)
{
    struct slb_loop_ctx *ctx = slb_container_of(io, struct slb_loop_ctx, io);

    if (ctx->on_closed != NULL)
        ctx->on_closed(ctx);
}

void slb_loop_ctx_close(struct slb_loop_ctx *ctx, void (*on_closed)(struct slb_loop_ctx *ctx))
{
    slb_loop_ctx_close_connections(ctx);
    ctx->on_closed = on_closed;
    slb_conn_ctx_close_handle(&ctx->io, slb_deadline_handle(&ctx->timers));
    slb_conn_ctx_close_handle(&ctx->io, (uv_handle_t *)&ctx->sweep);
    slb_conn_ctx_close(&ctx->io, on_all_closed);
}

void slb_loop_ctx_dispose(struct slb_loop_ctx *ctx)
{
    slb_conn_ctx_dispose(&ctx->io);
    slb_deadline_dispose(&ctx->timers);
    if (ctx->down_cbs != NULL)
        nghttp2_session_callbacks_del(ctx->down_cbs);
    if (ctx->up_cbs != NULL)
        nghttp2_session_callbacks_del(ctx->up_cbs);
    if (ctx->down_opt != NULL)
        nghttp2_option_del(ctx->down_opt);
    if (ctx->up_opt != NULL)
        nghttp2_option_del(ctx->up_opt);
}
