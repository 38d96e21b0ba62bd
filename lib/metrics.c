/*
 * Prometheus text rendering of a server's state for the admin listener's
 * /metrics (see metrics.h).
 */
#include "metrics.h"

#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "buf.h"
#include "cluster.h"
#include "config.h"
#include "discovery.h"
#include "etcd.h"
#include "common.h"
#include "h2_upstream.h"
#include "access_log.h"
#include "grpc.h"
#include "health.h"
#include "loop_ctx.h"
#include "register.h"
#include "scrape.h"
#include "server.h"
#include "stats.h"

#define BODY_LIMIT ((size_t)64 << 20)

/* A label value, escaped per the text format: \\, \" and \n. */
static void put_label_value(struct slb_textout *o, const char *s)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
        if (esc) {
            slb_text_put(o, run, (size_t)(s - run));
            slb_text_puts(o, esc);
            run = s + 1;
        }
    }
    slb_text_put(o, run, (size_t)(s - run));
}

static void put_family(struct slb_textout *o, const char *name, const char *type, const char *help)
{
    slb_text_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `name{cluster="c",backend="b"` (no closing brace). */
static void put_backend_labels(struct slb_textout *o, const char *name, const struct slb_cluster *cl,
                               const struct slb_backend *be)
{
    slb_text_puts(o, name);
    slb_text_puts(o, "{cluster=\"");
    put_label_value(o, cl->cfg->name);
    slb_text_puts(o, "\",backend=\"");
    put_label_value(o, be->name);
    slb_text_puts(o, "\"");
}

/* ---- /metrics ---- */

/* A backend's value: from the control cluster's backend (be) or its sums over the loops (sb). */
typedef uint64_t (*backend_value_fn)(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now);

static uint64_t v_outstanding(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return sb->outstanding;
}
static uint64_t v_healthy(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return slb_scrape_backend_usable(be, sb->state, now) ? 1 : 0;
}
static uint64_t v_health_check_off(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return be->health == SLB_HEALTH_UNIMPLEMENTED ? 1 : 0;
}
static uint64_t v_health_pending(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return be->health == SLB_HEALTH_PENDING ? 1 : 0;
}
static uint64_t v_ejected(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return be->ejected_until_ms > now ? 1 : 0;
}
static uint64_t v_weight(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return be->weight;
}
static uint64_t v_connections(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return sb->connections;
}
static uint64_t v_queued(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return sb->queued;
}
static uint64_t v_ejections(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return be->ejections;
}
static uint64_t v_ejections_capped(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return be->ejections_capped;
}
static uint64_t v_ejection_multiplier(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return be->times_ejected;
}

static uint64_t v_drained(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return be->drained != 0 ? 1 : 0;
}
static uint64_t v_health_changes(const struct slb_backend *be, const struct slb_scrape_backend *sb, uint64_t now)
{
    return sb->stats.health_changes;
}

static void backend_family(struct slb_textout *o, const struct slb_scrape *sc, uint64_t now, const char *name,
                           const char *type, const char *help, backend_value_fn fn)
{
    const struct slb_server *srv = sc->srv;

    put_family(o, name, type, help);
    for (size_t i = 0; i < srv->n_clusters; i++) {
        const struct slb_cluster *cl = &srv->clusters[i];
        for (uint32_t j = 0; j < cl->set.n; j++) {
            put_backend_labels(o, name, cl, cl->set.items[j]);
            slb_text_printf(o, "} %llu\n", (unsigned long long)fn(cl->set.items[j], &sc->clusters[i].backends[j], now));
        }
    }
}

static void cluster_family(struct slb_textout *o, const struct slb_scrape *sc, const char *name, const char *help,
                           int waiting)
{
    const struct slb_server *srv = sc->srv;

    put_family(o, name, "gauge", help);
    for (size_t i = 0; i < srv->n_clusters; i++) {
        const struct slb_cluster *cl = &srv->clusters[i];
        slb_text_puts(o, name);
        slb_text_puts(o, "{cluster=\"");
        put_label_value(o, cl->cfg->name);
        slb_text_printf(o, "\"} %u\n", waiting ? sc->clusters[i].n_waiting : cl->set.n);
    }
}

/* TLS handshake counters of the clusters that have "tls" (calls and health checks). */
static void cluster_tls_family(struct slb_textout *o, const struct slb_scrape *sc, const char *name, const char *help,
                               size_t off)
{
    const struct slb_server *srv = sc->srv;

    put_family(o, name, "counter", help);
    for (size_t i = 0; i < srv->n_clusters; i++) {
        const struct slb_cluster *cl = &srv->clusters[i];
        uint64_t v;
        if (!cl->cfg->tls.enabled)
            continue;
        memcpy(&v, (const char *)&sc->clusters[i].tls_stats + off, sizeof(v));
        slb_text_puts(o, name);
        slb_text_puts(o, "{cluster=\"");
        put_label_value(o, cl->cfg->name);
        slb_text_printf(o, "\"} %llu\n", (unsigned long long)v);
    }
}

/* Persisted tables: 1 while a cluster serves a table etcd has not confirmed to this server. */
static void put_table_stale(struct slb_textout *o, const struct slb_server *srv)
{
    put_family(o, "sidelb_cluster_table_stale", "gauge",
               "1 while the cluster's backends come from its state file or the server a reload replaced, not yet "
               "from etcd (etcd unreachable).");
    for (size_t i = 0; i < srv->n_clusters; i++) {
        slb_text_puts(o, "sidelb_cluster_table_stale{cluster=\"");
        put_label_value(o, srv->clusters[i].cfg->name);
        slb_text_printf(o, "\"} %d\n", srv->clusters[i].table_stale ? 1 : 0);
    }
}

static void put_listener_conns(struct slb_textout *o, const struct slb_listener *l,
                               const struct slb_scrape_listener *sl)
{
    slb_text_puts(o, "sidelb_listener_connections{listener=\"");
    put_label_value(o, l->cfg->name);
    slb_text_printf(o, "\"} %u\n", sl->n_conns);
}

/* ---- per-call counters (lib/stats.h), added up here ---- */

const uint64_t slb_stats_bucket_ns[SLB_STATS_BUCKETS] = {
    100000,    250000,    500000,    1000000,    2500000,     5000000,     10000000,     25000000,     50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000u, 5000000000u, 10000000000u, 30000000000u,
};

static const char *const bucket_le[SLB_STATS_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",    "0.5",    "1",     "2.5",    "5",     "10",   "30",
};

/* `name_bucket{labels,le="..."} n` lines, _sum and _count; labels is `cluster="c"` etc. (already escaped). */
static void put_hist(struct slb_textout *o, const char *name, const char *labels, const struct slb_stats_hist *h)
{
    uint64_t cum = 0;

    for (int i = 0; i <= SLB_STATS_BUCKETS; i++) {
        cum += h->counts[i];
        slb_text_printf(o, "%s_bucket{%s,le=\"%s\"} %llu\n", name, labels,
                        i < SLB_STATS_BUCKETS ? bucket_le[i] : "+Inf", (unsigned long long)cum);
    }
    slb_text_printf(o, "%s_sum{%s} %.9f\n", name, labels, (double)h->sum_ns / 1e9);
    slb_text_printf(o, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
}

/* An escaped label value into a fixed buffer (label sets of histograms are printed many times). */
static void escape_into(char *dst, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 3 < cap; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n') {
            dst[n++] = '\\';
            dst[n++] = *s == '\n' ? 'n' : *s;
        } else {
            dst[n++] = *s;
        }
    }
    dst[n] = '\0';
}

static void render_call_stats(struct slb_textout *o, const struct slb_scrape *sc)
{
    const struct slb_server *srv = sc->srv;
    const struct slb_loop_stats *st = &sc->stats;
    char cname[256], bname[2 * SLB_BACKEND_NAME_MAX + 8], labels[600];

    put_family(o, "sidelb_calls_total", "counter",
               "Calls that ended, by listener, cluster (\"\" when none was routed) and the gRPC status the app got.");
    for (uint32_t li = 0; st->calls_by_code != NULL && li < st->calls_n_listeners && li < srv->n_listeners; li++) {
        for (uint32_t ci = 0; ci <= st->calls_n_clusters; ci++) {
            const uint64_t *row =
                st->calls_by_code + ((size_t)li * (st->calls_n_clusters + 1) + ci) * SLB_STATS_GRPC_CODES;
            for (int code = 0; code < SLB_STATS_GRPC_CODES; code++) {
                if (row[code] == 0)
                    continue;
                slb_text_puts(o, "sidelb_calls_total{listener=\"");
                put_label_value(o, srv->listeners[li].cfg->name);
                slb_text_puts(o, "\",cluster=\"");
                if (ci < srv->n_clusters)
                    put_label_value(o, srv->clusters[ci].cfg->name);
                slb_text_printf(o, "\",grpc_code=\"%s\"} %llu\n", slb_grpc_status_name(code),
                                (unsigned long long)row[code]);
            }
        }
    }
    put_family(o, "sidelb_call_duration_seconds", "histogram",
               "Calls routed to the cluster, from the app's request headers to the end of its stream.");
    for (size_t i = 0; i < srv->n_clusters; i++) {
        escape_into(cname, sizeof(cname), srv->clusters[i].cfg->name);
        snprintf(labels, sizeof(labels), "cluster=\"%s\"", cname);
        put_hist(o, "sidelb_call_duration_seconds", labels, &sc->clusters[i].stats.call_duration);
    }

    static const struct {
        const char *name, *type, *help;
        size_t off;
    } per_cluster[] = {
        {"sidelb_upstream_retries_total", "counter", "gRFC A6 retries: attempts made after a retryable status.",
         offsetof(struct slb_cluster_stats, retries)},
        {"sidelb_upstream_hedges_total", "counter",
         "gRFC A6 hedging: attempts after a call's first under a hedgingPolicy.",
         offsetof(struct slb_cluster_stats, hedges)},
        {"sidelb_request_bytes_total", "counter", "Request body bytes (gRPC frames) received from the apps.",
         offsetof(struct slb_cluster_stats, request_bytes)},
        {"sidelb_response_bytes_total", "counter",
         "Response body bytes (gRPC frames) of the calls' final attempts, received from the backends.",
         offsetof(struct slb_cluster_stats, response_bytes)},
    };
    for (size_t f = 0; f < SLB_ARRAY_SIZE(per_cluster); f++) {
        put_family(o, per_cluster[f].name, per_cluster[f].type, per_cluster[f].help);
        for (size_t i = 0; i < srv->n_clusters; i++) {
            uint64_t v;
            memcpy(&v, (const char *)&sc->clusters[i].stats + per_cluster[f].off, sizeof(v));
            slb_text_puts(o, per_cluster[f].name);
            slb_text_puts(o, "{cluster=\"");
            put_label_value(o, srv->clusters[i].cfg->name);
            slb_text_printf(o, "\"} %llu\n", (unsigned long long)v);
        }
    }
    put_family(o, "sidelb_cluster_limit_rejections_total", "counter",
               "Calls refused with RESOURCE_EXHAUSTED at a cluster limit (max_calls, max_waiting_calls).");
    for (size_t i = 0; i < srv->n_clusters; i++) {
        const struct slb_cluster *cl = &srv->clusters[i];
        escape_into(cname, sizeof(cname), cl->cfg->name);
        slb_text_printf(o, "sidelb_cluster_limit_rejections_total{cluster=\"%s\",limit=\"max_calls\"} %llu\n", cname,
                        (unsigned long long)sc->clusters[i].stats.rejected_max_calls);
        slb_text_printf(o, "sidelb_cluster_limit_rejections_total{cluster=\"%s\",limit=\"max_waiting_calls\"} %llu\n",
                        cname, (unsigned long long)sc->clusters[i].stats.rejected_max_waiting);
    }

    put_family(o, "sidelb_upstream_attempts_total", "counter",
               "Attempts that ended on a backend (connect failures included), by the status they ended with.");
    for (size_t i = 0; i < srv->n_clusters; i++) {
        const struct slb_cluster *cl = &srv->clusters[i];
        for (uint32_t j = 0; j < cl->set.n; j++) {
            const struct slb_backend *be = cl->set.items[j];
            const struct slb_backend_stats *bs = &sc->clusters[i].backends[j].stats;
            for (int code = 0; code < SLB_STATS_GRPC_CODES; code++) {
                if (bs->attempts[code] == 0)
                    continue;
                put_backend_labels(o, "sidelb_upstream_attempts_total", cl, be);
                slb_text_printf(o, ",grpc_code=\"%s\"} %llu\n", slb_grpc_status_name(code),
                                (unsigned long long)bs->attempts[code]);
            }
        }
    }
    put_family(o, "sidelb_upstream_attempt_duration_seconds", "histogram",
               "Attempts, from being handed to the backend's connection pool to their end.");
    for (size_t i = 0; i < srv->n_clusters; i++) {
        const struct slb_cluster *cl = &srv->clusters[i];
        escape_into(cname, sizeof(cname), cl->cfg->name);
        for (uint32_t j = 0; j < cl->set.n; j++) {
            escape_into(bname, sizeof(bname), cl->set.items[j]->name);
            snprintf(labels, sizeof(labels), "cluster=\"%s\",backend=\"%s\"", cname, bname);
            put_hist(o, "sidelb_upstream_attempt_duration_seconds", labels,
                     &sc->clusters[i].backends[j].stats.attempt_duration);
        }
    }
}

static uint64_t hist_count(const struct slb_stats_hist *h)
{
    uint64_t n = 0;
    for (int i = 0; i <= SLB_STATS_BUCKETS; i++)
        n += h->counts[i];
    return n;
}

/* "metrics".max_methods: calls and latency per cluster and method (method="other" past the cap). */
static void render_method_stats(struct slb_textout *o, const struct slb_scrape *sc)
{
    const struct slb_server *srv = sc->srv;
    char cname[256], mname[1100], labels[1400];

    if (srv->cfg->metrics_max_methods == 0)
        return;
    put_family(o, "sidelb_method_calls_total", "counter",
               "Calls that ended, per cluster, gRPC method (\"other\" past metrics.max_methods) and code.");
    for (size_t i = 0; i < srv->n_clusters; i++) {
        const struct slb_method_stats *ms = sc->clusters[i].methods;
        escape_into(cname, sizeof(cname), srv->clusters[i].cfg->name);
        for (uint32_t j = 0; j <= ms->cap; j++) {
            if (j == ms->n && j < ms->cap)
                j = ms->cap; /* unused slots; "other" last */
            escape_into(mname, sizeof(mname), ms->items[j].name ? ms->items[j].name : "other");
            for (int code = 0; code < SLB_STATS_GRPC_CODES; code++)
                if (ms->items[j].calls[code] != 0)
                    slb_text_printf(
                        o, "sidelb_method_calls_total{cluster=\"%s\",method=\"%s\",grpc_code=\"%s\"} %llu\n", cname,
                        mname, slb_grpc_status_name(code), (unsigned long long)ms->items[j].calls[code]);
        }
    }
    put_family(o, "sidelb_method_call_duration_seconds", "histogram",
               "Calls per cluster and gRPC method (\"other\" past metrics.max_methods), headers to stream end.");
    for (size_t i = 0; i < srv->n_clusters; i++) {
        const struct slb_method_stats *ms = sc->clusters[i].methods;
        escape_into(cname, sizeof(cname), srv->clusters[i].cfg->name);
        for (uint32_t j = 0; j <= ms->cap; j++) {
            if (j == ms->n && j < ms->cap)
                j = ms->cap;
            if (j == ms->cap && hist_count(&ms->items[j].duration) == 0)
                continue; /* "other" never used */
            escape_into(mname, sizeof(mname), ms->items[j].name ? ms->items[j].name : "other");
            snprintf(labels, sizeof(labels), "cluster=\"%s\",method=\"%s\"", cname, mname);
            put_hist(o, "sidelb_method_call_duration_seconds", labels, &ms->items[j].duration);
        }
    }
}

static void render_access_log(struct slb_textout *o, const struct slb_scrape *sc)
{
    const struct slb_access_log_stats *s = &sc->access_log;

    put_family(o, "sidelb_access_log_lines_total", "counter", "Access log lines written.");
    slb_text_printf(o, "sidelb_access_log_lines_total %llu\n", (unsigned long long)s->lines);
    put_family(o, "sidelb_access_log_rate_limited_total", "counter",
               "Access log lines not written: past access_log.max_lines_per_second.");
    slb_text_printf(o, "sidelb_access_log_rate_limited_total %llu\n", (unsigned long long)s->rate_limited);
    put_family(o, "sidelb_access_log_dropped_total", "counter",
               "Access log lines not written: both buffers were waiting for the disk.");
    slb_text_printf(o, "sidelb_access_log_dropped_total %llu\n", (unsigned long long)s->dropped);
    put_family(o, "sidelb_access_log_errors_total", "counter", "Access log writes or reopens that failed.");
    slb_text_printf(o, "sidelb_access_log_errors_total %llu\n", (unsigned long long)s->write_errors);
}

/* The etcd client (only with "etcd"): endpoint, contact, events, errors; watch revisions; registrations. */
static void render_etcd(struct slb_textout *o, const struct slb_server *srv, uint64_t now)
{
    static const char *const kinds[SLB_ETCD_ERR_KINDS] = {"transport", "etcd", "protocol"};
    const struct slb_etcd_stats *st;

    if (srv->etcd == NULL)
        return;
    st = slb_etcd_stats(srv->etcd);
    put_family(o, "sidelb_etcd_endpoint", "gauge", "1 for the etcd endpoint requests go to now.");
    slb_text_puts(o, "sidelb_etcd_endpoint{endpoint=\"");
    put_label_value(o, slb_etcd_endpoint(srv->etcd));
    slb_text_puts(o, "\"} 1\n");
    put_family(o, "sidelb_etcd_last_contact_age_seconds", "gauge",
               "Seconds since etcd last answered (any request or watch message); absent before the first answer.");
    if (st->last_ok_ms != 0)
        slb_text_printf(o, "sidelb_etcd_last_contact_age_seconds %.3f\n",
                        now > st->last_ok_ms ? (double)(now - st->last_ok_ms) / 1000.0 : 0.0);
    put_family(o, "sidelb_etcd_events_total", "counter", "Watch events received and applied by discovery.");
    slb_text_printf(o, "sidelb_etcd_events_total %llu\n", (unsigned long long)st->events);
    put_family(o, "sidelb_etcd_errors_total", "counter",
               "etcd failures by kind: transport (no answer, a broken watch stream), etcd (an error answer, a "
               "canceled watch), protocol (not a gateway answer, too large).");
    for (int k = 0; k < SLB_ETCD_ERR_KINDS; k++)
        slb_text_printf(o, "sidelb_etcd_errors_total{kind=\"%s\"} %llu\n", kinds[k], (unsigned long long)st->errors[k]);
    put_family(o, "sidelb_etcd_watch_revision", "gauge",
               "etcd revision up to which the cluster's watch has delivered everything.");
    for (size_t i = 0; i < srv->n_clusters; i++) {
        const struct slb_cluster *cl = &srv->clusters[i];
        if (cl->discovery == NULL)
            continue;
        slb_text_puts(o, "sidelb_etcd_watch_revision{cluster=\"");
        put_label_value(o, cl->cfg->name);
        slb_text_puts(o, "\",prefix=\"");
        put_label_value(o, cl->cfg->etcd_prefix ? cl->cfg->etcd_prefix : "");
        slb_text_printf(o, "\"} %lld\n", (long long)slb_discovery_revision(cl->discovery));
    }
    if (srv->registrar == NULL)
        return;
    put_family(o, "sidelb_registration_state", "gauge",
               "State of each register[] entry (one-hot): REGISTERED while its key is in etcd under a live lease.");
    for (size_t i = 0; i < slb_registrar_count(srv->registrar) && i < srv->cfg->n_registers; i++) {
        const struct slb_config_register *reg = &srv->cfg->registers[i];
        int cur = slb_registrar_state(srv->registrar, i);
        for (int s = SLB_REGISTRAR_IDLE; s <= SLB_REGISTRAR_STOPPED; s++) {
            slb_text_puts(o, "sidelb_registration_state{prefix=\"");
            put_label_value(o, reg->prefix);
            slb_text_puts(o, "\",address=\"");
            put_label_value(o, reg->address);
            slb_text_printf(o, "\",state=\"%s\"} %d\n", slb_registrar_state_name(s), s == cur ? 1 : 0);
        }
    }
}

/* Open file descriptors, resident bytes, seconds since the process started (Linux /proc). */
static void render_process(struct slb_textout *o)
{
    long page = sysconf(_SC_PAGESIZE), ticks = sysconf(_SC_CLK_TCK);
    unsigned long long size = 0, rss = 0, start = 0;
    double up = 0, sys_up = 0;
    unsigned n_fds = 0;
    char buf[1024];
    FILE *f;
    DIR *d;

    if ((d = opendir("/proc/self/fd")) != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                n_fds++;
        closedir(d);
        n_fds--; /* the directory's own */
    }
    if ((f = fopen("/proc/self/statm", "r")) != NULL) {
        if (fscanf(f, "%llu %llu", &size, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    if ((f = fopen("/proc/self/stat", "r")) != NULL) {
        /* field 22, starttime in clock ticks after boot; the command (field 2) may hold spaces */
        if (fgets(buf, sizeof(buf), f) != NULL) {
            const char *p = strrchr(buf, ')');
            int field = 2;
            for (; p != NULL && *p && field < 22; p++)
                if (*p == ' ')
                    field++;
            if (p != NULL)
                start = strtoull(p, NULL, 10);
        }
        fclose(f);
    }
    if ((f = fopen("/proc/uptime", "r")) != NULL) {
        if (fscanf(f, "%lf", &sys_up) != 1)
            sys_up = 0;
        fclose(f);
    }
    if (ticks > 0 && sys_up > 0)
        up = sys_up - (double)start / (double)ticks;
    put_family(o, "sidelb_process_open_fds", "gauge", "Open file descriptors.");
    slb_text_printf(o, "sidelb_process_open_fds %u\n", n_fds);
    put_family(o, "sidelb_process_resident_memory_bytes", "gauge", "Resident set size.");
    slb_text_printf(o, "sidelb_process_resident_memory_bytes %llu\n",
                    rss * (unsigned long long)(page > 0 ? page : 4096));
    put_family(o, "sidelb_process_uptime_seconds", "gauge", "Seconds since the process started.");
    slb_text_printf(o, "sidelb_process_uptime_seconds %.2f\n", up > 0 ? up : 0);
    put_family(o, "sidelb_build_info", "gauge", "Always 1; the labels say which sidelb this is.");
    slb_text_printf(o, "sidelb_build_info{version=\"%s\"} 1\n", SLB_VERSION);
}

/* Workers only: how this scrape read them (lib/scrape.h). */
static void render_scrape(struct slb_textout *o, const struct slb_scrape *sc)
{
    if (sc->n_workers == 0)
        return;
    put_family(o, "sidelb_workers", "gauge", "Worker loops forwarding calls (\"workers\").");
    slb_text_printf(o, "sidelb_workers %u\n", sc->n_workers);
    put_family(o, "sidelb_scrape_pause_seconds", "gauge",
               "How long this scrape paused the workers to add up their counters.");
    slb_text_printf(o, "sidelb_scrape_pause_seconds %.6f\n", (double)sc->pause_ns / 1e9);
    put_family(o, "sidelb_scrape_workers_skipped", "gauge",
               "Workers this scrape could not read (no answer to its pause in time, or stopped): their counts are "
               "missing from it.");
    slb_text_printf(o, "sidelb_scrape_workers_skipped %u\n", sc->n_workers_skipped);
}

static void render_metrics(struct slb_textout *o, const struct slb_scrape *sc, uint64_t now)
{
    const struct slb_server *srv = sc->srv;
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"sidelb_calls_started_total",
         "Calls accepted from local applications (sidelb_calls_total counts them when "
         "they end).",
         offsetof(struct slb_loop_stats, calls_total)},
        {"sidelb_downstream_connections_closed_total", "Application connections closed.",
         offsetof(struct slb_loop_stats, downstream_conns_closed)},
        {"sidelb_upstream_connections_closed_total", "Backend connections closed (connect failures included).",
         offsetof(struct slb_loop_stats, upstream_conns_closed)},
        {"sidelb_calls_failed_local_total", "Calls failed by sidelb itself (no route, no backend, limits).",
         offsetof(struct slb_loop_stats, calls_failed_local)},
        {"sidelb_downstream_connections_total", "Connections accepted from local applications.",
         offsetof(struct slb_loop_stats, downstream_conns_total)},
        {"sidelb_upstream_connections_total", "Connections opened to backends.",
         offsetof(struct slb_loop_stats, upstream_conns_total)},
        {"sidelb_downstream_rapid_reset_closes_total",
         "Application connections closed for resetting too many streams before their response (rapid reset).",
         offsetof(struct slb_loop_stats, rapid_reset_closes)},
        {"sidelb_downstream_refused_streams_total",
         "Application streams refused with REFUSED_STREAM for being past the listener's max_concurrent_streams.",
         offsetof(struct slb_loop_stats, refused_streams)},
        {"sidelb_downstream_header_lists_too_large_total",
         "Application header blocks (request headers or trailers) larger than the listener's max_header_list_size.",
         offsetof(struct slb_loop_stats, header_lists_too_large)},
        {"sidelb_downstream_connections_evicted_total",
         "Idle application connections closed at a connection cap to admit a new one.",
         offsetof(struct slb_loop_stats, conns_evicted)},
        {"sidelb_downstream_connections_refused_total",
         "Application connections refused at a connection cap (no idle connection to close).",
         offsetof(struct slb_loop_stats, conns_refused)},
        {"sidelb_downstream_handshake_timeouts_total",
         "Application connections closed without the HTTP/2 preface and SETTINGS within handshake_timeout_ms.",
         offsetof(struct slb_loop_stats, handshake_timeouts)},
        {"sidelb_downstream_idle_timeouts_total",
         "Application connections closed after idle_timeout_ms without streams.",
         offsetof(struct slb_loop_stats, idle_timeouts)},
        {"sidelb_downstream_stream_idle_timeouts_total",
         "Application streams ended after stream_idle_timeout_ms without frames either way.",
         offsetof(struct slb_loop_stats, stream_idle_timeouts)},
        {"sidelb_upstream_queue_overflows_total",
         "Calls a backend's pool turned away because max_pending_per_backend calls waited for a stream.",
         offsetof(struct slb_loop_stats, pool_queue_overflows)},
        {"sidelb_upstream_queue_timeouts_total",
         "Calls that waited queue_timeout_ms in a backend's pool for a stream (then tried elsewhere or failed).",
         offsetof(struct slb_loop_stats, pool_queue_timeouts)},
        {"sidelb_upstream_connections_recycled_total",
         "Backend connections drained and replaced (max_requests_per_connection, max_connection_age_ms, stream ids).",
         offsetof(struct slb_loop_stats, upstream_conns_recycled)},
        {"sidelb_upstream_no_streams_total",
         "Backend connections that could carry no call: the backend advertised SETTINGS_MAX_CONCURRENT_STREAMS 0.",
         offsetof(struct slb_loop_stats, upstream_no_streams)},
        {"sidelb_health_check_unimplemented_total",
         "Backends found not to implement grpc.health.v1 (Check answered UNIMPLEMENTED): health checking is off for "
         "them and they take calls (gRFC A17). Counted once per listed backend.",
         offsetof(struct slb_loop_stats, health_check_unimplemented)},
        {"sidelb_upstream_probes_total",
         "Early connect attempts to backends in connection backoff while calls waited for a usable backend "
         "(backoff.probe_interval_ms).",
         offsetof(struct slb_loop_stats, upstream_probes)},
        {"sidelb_upstream_probe_recoveries_total",
         "Early connect attempts that connected: a backend was back before its connection backoff ended.",
         offsetof(struct slb_loop_stats, upstream_probe_recoveries)},
        {"sidelb_buffer_backpressure_total",
         "Times an application connection went over its buffer budget (budgets.connection_bytes, or its share of "
         "budgets.total_bytes) and its flow-control windows were held back.",
         offsetof(struct slb_loop_stats, budget_conn_backpressure)},
        {"sidelb_buffer_total_exceeded_total", "Times the calls together went over budgets.total_bytes.",
         offsetof(struct slb_loop_stats, budget_total_exceeded)},
        {"sidelb_retry_buffer_dropped_total",
         "Calls that lost their replay copy (no more retries): past budgets.call_retry_bytes, or under buffer "
         "pressure.",
         offsetof(struct slb_loop_stats, retry_buffer_dropped)},
        {"sidelb_hedged_attempts_total", "Attempts after a call's first under a hedgingPolicy (gRFC A6).",
         offsetof(struct slb_loop_stats, hedged_attempts)},
        {"sidelb_hedges_cancelled_total",
         "Attempts cancelled (RST_STREAM CANCEL) because another attempt of the same call committed (gRFC A6).",
         offsetof(struct slb_loop_stats, hedges_cancelled)},
    };

    for (size_t i = 0; i < SLB_ARRAY_SIZE(counters); i++) {
        uint64_t v;
        memcpy(&v, (const char *)&sc->stats + counters[i].off, sizeof(v));
        put_family(o, counters[i].name, "counter", counters[i].help);
        slb_text_printf(o, "%s %llu\n", counters[i].name, (unsigned long long)v);
    }
    put_family(o, "sidelb_calls_in_flight", "gauge", "Calls in progress.");
    slb_text_printf(o, "sidelb_calls_in_flight %u\n", sc->n_calls);
    put_family(o, "sidelb_downstream_connections", "gauge", "Open application connections.");
    slb_text_printf(o, "sidelb_downstream_connections %u\n", sc->n_app_conns);
    put_family(o, "sidelb_downstream_connections_max", "gauge",
               "Cap on open application connections over all listeners (max_app_connections).");
    slb_text_printf(o, "sidelb_downstream_connections_max %u\n", sc->max_app_conns);
    put_family(o, "sidelb_listener_connections", "gauge", "Open application connections per listener.");
    for (size_t i = 0; i < srv->n_listeners; i++)
        put_listener_conns(o, &srv->listeners[i], &sc->listeners[i]);
    put_family(o, "sidelb_downstream_tls_handshake_failures_total", "counter",
               "App connections to a TLS listener that failed before their first byte of data (no ALPN h2, no or a "
               "refused client certificate, not TLS).");
    for (size_t i = 0; i < srv->n_listeners; i++) {
        const struct slb_listener *l = &srv->listeners[i];
        if (l->set.tls == NULL)
            continue;
        slb_text_puts(o, "sidelb_downstream_tls_handshake_failures_total{listener=\"");
        put_label_value(o, l->cfg->name);
        slb_text_printf(o, "\"} %llu\n", (unsigned long long)sc->listeners[i].tls_stats.handshake_failures);
    }
    put_family(o, "sidelb_buffered_bytes", "gauge",
               "Bytes calls hold: request bytes not yet sent, replay copies, response bytes the apps have not taken.");
    slb_text_printf(o, "sidelb_buffered_bytes %llu\n", (unsigned long long)sc->buffered);
    put_family(o, "sidelb_buffer_held_back_connections", "gauge",
               "Application connections over their buffer budget now (their windows are held back).");
    slb_text_printf(o, "sidelb_buffer_held_back_connections %u\n", sc->n_held_back);
    put_family(o, "sidelb_read_pauses_total", "counter",
               "Times a connection read budgets.read_bytes_per_turn in one loop turn and waited for the next.");
    slb_text_printf(o, "sidelb_read_pauses_total %llu\n", (unsigned long long)sc->read_pauses);
    put_family(o, "sidelb_draining", "gauge", "1 once the server is stopping (draining calls).");
    slb_text_printf(o, "sidelb_draining %d\n", srv->stopping ? 1 : 0);
    render_scrape(o, sc);

    cluster_family(o, sc, "sidelb_cluster_backends", "Backends listed in the cluster.", 0);
    cluster_family(o, sc, "sidelb_cluster_waiting_calls", "Calls waiting for a usable backend.", 1);
    cluster_tls_family(o, sc, "sidelb_upstream_tls_handshakes_total",
                       "TLS handshakes completed with the cluster's backends (calls and health checks).",
                       offsetof(struct slb_tls_stats, handshakes));
    cluster_tls_family(o, sc, "sidelb_upstream_tls_handshake_failures_total",
                       "TLS connections to the cluster's backends that failed before their first byte of data "
                       "(verification, ALPN, alerts); the log and the calls' UNAVAILABLE message say why.",
                       offsetof(struct slb_tls_stats, handshake_failures));
    cluster_tls_family(o, sc, "sidelb_upstream_tls_resumed_total",
                       "TLS handshakes with the cluster's backends that resumed an earlier session.",
                       offsetof(struct slb_tls_stats, resumed));
    put_table_stale(o, srv);

    put_family(o, "sidelb_backend_state", "gauge",
               "Connectivity state of the backend (one-hot: 1 for the current state, 0 for the others).");
    for (size_t i = 0; i < srv->n_clusters; i++) {
        const struct slb_cluster *cl = &srv->clusters[i];
        for (uint32_t j = 0; j < cl->set.n; j++) {
            const struct slb_backend *be = cl->set.items[j];
            for (int s = SLB_BACKEND_IDLE; s <= SLB_BACKEND_SHUTDOWN; s++) {
                put_backend_labels(o, "sidelb_backend_state", cl, be);
                slb_text_printf(o, ",state=\"%s\"} %d\n", slb_backend_state_name(s),
                                sc->clusters[i].backends[j].state == s ? 1 : 0);
            }
        }
    }
    backend_family(o, sc, now, "sidelb_backend_healthy", "gauge",
                   "1 if the backend may take new calls now (connectivity, health check, ejection, draining).",
                   v_healthy);
    backend_family(o, sc, now, "sidelb_backend_health_check_off", "gauge",
                   "1 while health checking is off for the backend: it does not implement grpc.health.v1 (gRFC A17).",
                   v_health_check_off);
    backend_family(o, sc, now, "sidelb_backend_health_pending", "gauge",
                   "1 while the backend's health check has not answered yet (no new calls until it does).",
                   v_health_pending);
    backend_family(o, sc, now, "sidelb_backend_outstanding_calls", "gauge", "Calls in flight on the backend.",
                   v_outstanding);
    backend_family(o, sc, now, "sidelb_backend_ejected", "gauge", "1 while outlier detection ejects the backend.",
                   v_ejected);
    backend_family(o, sc, now, "sidelb_backend_ejections_total", "counter",
                   "Times outlier detection ejected the backend.", v_ejections);
    backend_family(o, sc, now, "sidelb_backend_ejections_capped_total", "counter",
                   "Ejections of the backend that max_ejection_percent prevented.", v_ejections_capped);
    backend_family(o, sc, now, "sidelb_backend_ejection_multiplier", "gauge",
                   "Outlier ejection time multiplier (gRFC A50): the next ejection lasts base_ejection_ms times it "
                   "plus one; it decays by one per interval_ms the backend stays in.",
                   v_ejection_multiplier);
    backend_family(o, sc, now, "sidelb_backend_weight", "gauge", "Load-balancing weight of the backend.", v_weight);
    backend_family(o, sc, now, "sidelb_backend_drained", "gauge",
                   "1 while an operator drains the backend (admin action or \"drain\": true in its etcd value): no new "
                   "calls, calls in flight finish.",
                   v_drained);
    backend_family(o, sc, now, "sidelb_backend_connections", "gauge", "Open HTTP/2 connections to the backend.",
                   v_connections);
    backend_family(o, sc, now, "sidelb_backend_queued_calls", "gauge",
                   "Calls waiting in the backend's pool for a stream slot (max_pending_per_backend).", v_queued);
    backend_family(o, sc, now, "sidelb_backend_health_changes_total", "counter",
                   "Changes of the backend's health check status (gRFC A17).", v_health_changes);
    put_family(o, "sidelb_upstream_connections", "gauge", "Open HTTP/2 connections to backends.");
    slb_text_printf(o, "sidelb_upstream_connections %u\n", sc->upstream_conns);
    render_call_stats(o, sc);
    render_method_stats(o, sc);
    render_access_log(o, sc);
    render_etcd(o, srv, now);
    render_process(o);
}
int slb_metrics_render(struct slb_outbuf *b, const struct slb_server *srv, uint64_t now)
{
    struct slb_textout o = {b, BODY_LIMIT, 0};
    struct slb_scrape sc;
    int rv = slb_scrape_begin(&sc, srv, 1);

    if (rv == 0) {
        render_metrics(&o, &sc, now);
        rv = o.err;
    }
    slb_scrape_end(&sc);
    return rv;
}
