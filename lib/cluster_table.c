/*
 * A cluster's persisted table: an etcd-fed cluster starts from the last table
 * etcd gave (its state file, or the live table of the server a reload
 * replaces) instead of empty, marked stale until its own watch lists the
 * prefix; the listing then reconciles it (lib/discovery.c), so backends etcd
 * no longer has go away and the others stay up, connections and all. After
 * changes the table is written to state_dir, at most once per
 * SLB_CLUSTER_STATE_WRITE_MS: a burst of watch events costs one write, and
 * the per-event path only sets a flag and arms a timer. The write itself
 * (fsync and all) runs on libuv's thread pool, one at a time per cluster.
 *
 * Owner of the state: the cluster (fields in struct slb_cluster); the timer
 * is counted in the loop context and closed by slb_cluster_dispose; a write
 * on its way owns itself and outlives the cluster if it must (it copies
 * what it needs; the loop runs until it ends).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common.h"
#include "config.h"
#include "discovery.h"
#include "log.h"
#include "loop_ctx.h"
#include "state_file.h"

const char *slb_table_source_name(int source)
{
    switch (source) {
    case SLB_TABLE_STATE_FILE:
        return "state_file";
    case SLB_TABLE_RELOAD:
        return "reload";
    default:
        return "etcd";
    }
}

/* One write of a cluster's table, on libuv's thread pool so the loop never
 * waits for the disk. Owner: itself (freed in after_write); cl points back
 * while its cluster waits for it, NULL once the cluster let go. next: the
 * cluster's final table, queued only after this one ended, so the file
 * never goes back to an older table. */
struct slb_table_write {
    uv_work_t req;
    struct slb_cluster *cl;
    struct slb_table_write *next;
    char *dir, *name;
    struct slb_state_table t;
    int rv;
    uint64_t ns; /* how long the write took */
    char err[1024];
};

static void write_free(struct slb_table_write *w)
{
    slb_state_table_dispose(&w->t);
    free(w->dir);
    free(w->name);
    free(w);
}

/* A snapshot of cl's table to write, or NULL (logged). */
static struct slb_table_write *write_new(struct slb_cluster *cl)
{
    struct slb_table_write *w = calloc(1, sizeof(*w));

    if (w == NULL || (w->dir = strdup(cl->state_dir)) == NULL || (w->name = strdup(cl->cfg->name)) == NULL ||
        slb_discovery_snapshot(cl->discovery, &w->t) != 0) {
        slb_warn("cluster %s: state file not written: out of memory", cl->cfg->name);
        if (w != NULL)
            write_free(w);
        return NULL;
    }
    w->t.written_unix_ms = slb_unix_ms();
    return w;
}

static void do_write(uv_work_t *req)
{
    struct slb_table_write *w = slb_container_of(req, struct slb_table_write, req);
    uint64_t t0 = uv_hrtime();

    w->rv = slb_state_file_write(w->dir, w->name, &w->t, w->err, sizeof(w->err));
    w->ns = uv_hrtime() - t0;
}

static void after_write(uv_work_t *req, int status);

static void write_queue(uv_loop_t *loop, struct slb_table_write *w)
{
    int rv = uv_queue_work(loop, &w->req, do_write, after_write);

    if (rv != 0) { /* never with valid arguments; write here rather than lose it */
        do_write(&w->req);
        after_write(&w->req, rv);
    }
}

static void on_state_timer(uv_timer_t *t);

static void after_write(uv_work_t *req, int status)
{
    struct slb_table_write *w = slb_container_of(req, struct slb_table_write, req);
    struct slb_cluster *cl = w->cl;
    uv_loop_t *loop = req->loop;

    if (w->rv != 0) {
        /* one line per failure streak: a read-only disk must not flood the log */
        if (cl == NULL || !cl->state_write_failed)
            slb_warn("cluster %s: %s; its table is not persisted (calls are not affected; retried on the next "
                     "change)",
                     w->name, w->err);
        else
            slb_debug("cluster %s: %s", w->name, w->err);
    } else {
        if (cl != NULL && cl->state_write_failed)
            slb_notice("cluster %s: state file written again", w->name);
        slb_info("cluster %s: table persisted (%zu endpoints, revision %lld) in %.1f ms", w->name, w->t.n,
                 (long long)w->t.revision, (double)w->ns / 1e6);
    }
    if (cl != NULL) {
        cl->state_write = NULL;
        cl->state_write_failed = w->rv != 0;
        if (cl->state_dir != NULL && cl->state_dirty) /* changed meanwhile */
            uv_timer_start(&cl->state_timer, on_state_timer, SLB_CLUSTER_STATE_WRITE_MS, 0);
    }
    if (w->next != NULL)
        write_queue(loop, w->next);
    write_free(w);
}

/* Starts a write of the table unless one is on its way (its end re-arms the timer). */
static void table_write(struct slb_cluster *cl)
{
    struct slb_table_write *w;

    if (cl->state_write != NULL)
        return;
    cl->state_dirty = 0;
    if ((w = write_new(cl)) == NULL)
        return;
    w->cl = cl;
    cl->state_write = w;
    write_queue(cl->ctx->loop, w);
}

static void on_state_timer(uv_timer_t *t)
{
    struct slb_cluster *cl = slb_container_of(t, struct slb_cluster, state_timer);

    if (cl->state_dir != NULL && cl->state_dirty)
        table_write(cl);
}

void slb__cluster_table_changed(struct slb_cluster *cl)
{
    /* only a table etcd confirmed is worth writing: a stale one is what the file already holds */
    if (cl->state_dir == NULL || !cl->has_state_timer || cl->table_stale || !slb_discovery_synced(cl->discovery))
        return;
    if (!cl->state_dirty) {
        cl->state_dirty = 1;
        uv_timer_start(&cl->state_timer, on_state_timer, SLB_CLUSTER_STATE_WRITE_MS, 0);
    }
}

void slb__cluster_table_listed(struct slb_cluster *cl, int64_t revision)
{
    if (cl->table_stale) {
        slb_notice("cluster %s: etcd listed prefix %s at revision %lld: its table (%u backends) replaces the stale "
                   "one from %s",
                   cl->cfg->name, cl->cfg->etcd_prefix, (long long)revision, cl->set.n,
                   cl->table_source == SLB_TABLE_STATE_FILE ? "the state file" : "the previous server");
        cl->table_stale = 0;
        cl->table_source = SLB_TABLE_ETCD;
    }
    slb__cluster_table_changed(cl); /* the revision and the time are new even if the backends are not */
}

void slb__cluster_table_etcd_state(struct slb_cluster *cl, int connected)
{
    cl->etcd_lost_unix_ms = connected ? 0 : slb_unix_ms();
}

/* Seeds the table: backends come up (and are health-checked) as for etcd's own. */
static void seed(struct slb_cluster *cl, struct slb_state_table *t, int source, int64_t as_of)
{
    cl->table_stale = 1;
    cl->table_source = (uint8_t)source;
    cl->table_as_of_unix_ms = as_of;
    slb_discovery_preload(cl->discovery, t);
}

void slb_cluster_seed_table(struct slb_cluster *cl, struct slb_cluster *from, const char *state_dir)
{
    struct slb_state_table t;
    char err[1024];
    int rv;

    if (cl->discovery == NULL)
        return;
    if (state_dir != NULL) {
        cl->state_dir = state_dir;
        uv_timer_init(cl->ctx->loop, &cl->state_timer);
        slb_conn_ctx_handle_opened(&cl->ctx->io);
        uv_unref((uv_handle_t *)&cl->state_timer);
        cl->has_state_timer = 1;
    }
    if (from != NULL && from->discovery != NULL) {
        /* a reload: the previous server's live table, as old as what it knew */
        int64_t as_of = from->table_stale                       ? from->table_as_of_unix_ms
                        : from->etcd_lost_unix_ms               ? from->etcd_lost_unix_ms
                        : slb_discovery_synced(from->discovery) ? slb_unix_ms()
                                                                : 0;
        if (slb_discovery_snapshot(from->discovery, &t) != 0) {
            slb_warn("cluster %s: out of memory taking the previous server's table; starting empty", cl->cfg->name);
            return;
        }
        slb_notice("cluster %s: %zu endpoints taken from the previous server (stale until etcd lists %s)",
                   cl->cfg->name, t.n, cl->cfg->etcd_prefix);
        seed(cl, &t, SLB_TABLE_RELOAD, as_of);
        slb_state_table_dispose(&t);
        return;
    }
    if (state_dir == NULL)
        return;
    rv = slb_state_file_read(state_dir, cl->cfg->name, &t, err, sizeof(err));
    if (rv == SLB_ENOTFOUND) {
        slb_info("cluster %s: no state file in %s; empty until etcd answers", cl->cfg->name, state_dir);
        return;
    }
    if (rv != 0) {
        slb_warn("cluster %s: state file ignored: %s; empty until etcd answers", cl->cfg->name, err);
        return;
    }
    if (strcmp(t.prefix, cl->cfg->etcd_prefix) != 0) {
        char path[4096];
        slb_state_file_path(state_dir, cl->cfg->name, path, sizeof(path)); /* it fitted for the read */
        slb_notice("cluster %s: state file ignored: %s holds prefix %s, the cluster follows %s; empty until etcd "
                   "answers",
                   cl->cfg->name, path, t.prefix, cl->cfg->etcd_prefix);
        slb_state_table_dispose(&t);
        return;
    }
    slb_notice("cluster %s: %zu endpoints from the state file (revision %lld, written %lld s ago; stale until etcd "
               "lists %s)",
               cl->cfg->name, t.n, (long long)t.revision, (long long)((slb_unix_ms() - t.written_unix_ms) / 1000),
               cl->cfg->etcd_prefix);
    seed(cl, &t, SLB_TABLE_STATE_FILE, t.written_unix_ms);
    slb_state_table_dispose(&t);
}

void slb_cluster_persist_stop(struct slb_cluster *cl)
{
    struct slb_table_write *last = NULL;

    if (cl->state_dir != NULL && cl->state_dirty)
        last = write_new(cl);
    if (cl->state_write != NULL) {
        /* let go of the write on its way; the last table follows it, never overtakes it */
        cl->state_write->next = last;
        cl->state_write->cl = NULL;
        cl->state_write = NULL;
    } else if (last != NULL) {
        write_queue(cl->ctx->loop, last);
    }
    cl->state_dir = NULL;
    cl->state_dirty = 0;
    if (cl->has_state_timer)
        uv_timer_stop(&cl->state_timer);
}

void slb__cluster_table_dispose(struct slb_cluster *cl)
{
    /* a stop while etcd is followed: write once more, so the file's time says the table was current until now */
    if (cl->state_dir != NULL && !cl->table_stale && cl->discovery != NULL && slb_discovery_synced(cl->discovery) &&
        cl->etcd_lost_unix_ms == 0)
        cl->state_dirty = 1;
    slb_cluster_persist_stop(cl);
    if (cl->has_state_timer) {
        slb_conn_ctx_close_handle(&cl->ctx->io, (uv_handle_t *)&cl->state_timer);
        cl->has_state_timer = 0;
    }
}
