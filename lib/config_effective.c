/*
 * The effective configuration (config_effective.h). Values come from the
 * loaded struct slb_config, so what is shown is what the server uses, not a
 * second copy of the defaults.
 */
#include "config_effective.h"

#include <stdio.h>
#include <string.h>

#include "lb.h"

/* Sets o[key] = v unless o has the key; always takes v's reference. -1 when out of memory. */
static int put(json_t *o, const char *key, json_t *v)
{
    if (v == NULL)
        return -1;
    if (json_object_get(o, key) != NULL) {
        json_decref(v);
        return 0;
    }
    return json_object_set_new(o, key, v);
}

static int put_u32(json_t *o, const char *key, uint32_t n)
{
    return put(o, key, json_integer((json_int_t)n));
}

/* o[key] as an object, created (empty) when absent; NULL when not an object or out of memory. */
static json_t *child(json_t *o, const char *key)
{
    if (json_object_get(o, key) == NULL && json_object_set_new(o, key, json_object()) != 0)
        return NULL;
    json_t *v = json_object_get(o, key);
    return json_is_object(v) ? v : NULL;
}

static int fill_tls(json_t *parent, const struct slb_config_tls *t)
{
    json_t *o = json_object_get(parent, "tls");
    if (!t->enabled || !json_is_object(o))
        return 0;
    return put(o, "min_version", json_string(t->min_version == 13 ? "1.3" : "1.2"));
}

static int fill_health(json_t *parent, const char *key, const struct slb_config_health_check *hc)
{
    json_t *o = json_object_get(parent, key);
    if (!hc->enabled || !json_is_object(o))
        return 0;
    return put(o, "service", json_string(hc->service ? hc->service : "")) != 0 ||
                   put_u32(o, "interval_ms", hc->interval_ms) != 0 || put_u32(o, "timeout_ms", hc->timeout_ms) != 0
               ? -1
               : 0;
}

static int fill_listener(json_t *o, const struct slb_config_listener *l)
{
    char mode[8];

    if (put(o, "name", json_string(l->name)) != 0 ||
        put_u32(o, "max_concurrent_streams", l->max_concurrent_streams) != 0 ||
        put_u32(o, "max_premature_resets", l->max_premature_resets) != 0 ||
        put_u32(o, "max_header_list_size", l->max_header_list_size) != 0 ||
        put_u32(o, "max_connections", l->max_connections) != 0 ||
        put_u32(o, "handshake_timeout_ms", l->handshake_timeout_ms) != 0 ||
        put_u32(o, "idle_timeout_ms", l->idle_timeout_ms) != 0 ||
        put_u32(o, "stream_idle_timeout_ms", l->stream_idle_timeout_ms) != 0 || fill_tls(o, &l->tls) != 0)
        return -1;
    if (l->unix_path == NULL)
        return 0;
    snprintf(mode, sizeof(mode), "%04o", (unsigned)l->unix_mode);
    return put(o, "mode", json_string(mode));
}

/* The options of the cluster's policy that it reads; other policies' options would be rejected. */
static int fill_policy(json_t *o, const struct slb_config_cluster *cl)
{
    const struct slb_lb_options *lb = &cl->lb;
    const char *name = cl->policy;
    json_t *pol = child(o, "policy"), *opts;

    if (pol == NULL)
        return -1;
    if (json_object_size(pol) == 0 && json_object_set_new(pol, name, json_object()) != 0)
        return -1;
    if ((opts = json_object_get(pol, name)) == NULL || !json_is_object(opts))
        return -1;
    if (put(opts, "panic_threshold_percent", json_real(lb->panic_threshold_percent)) != 0)
        return -1;
    if (strcmp(name, "least_request") == 0 && put_u32(opts, "choice_count", lb->choice_count) != 0)
        return -1;
    if ((strcmp(name, "ring_hash") == 0 || strcmp(name, "maglev") == 0 || strcmp(name, "source_ip_hash") == 0) &&
        put(opts, "hash_on", json_string(slb_lb_hash_on_name(lb->hash_on))) != 0)
        return -1;
    if (strcmp(name, "ring_hash") == 0 && (put_u32(opts, "min_ring_size", lb->min_ring_size) != 0 ||
                                           put_u32(opts, "max_ring_size", lb->max_ring_size) != 0))
        return -1;
    if (strcmp(name, "maglev") == 0 && put_u32(opts, "table_size", lb->maglev_table_size) != 0)
        return -1;
    json_t *slow = json_object_get(opts, "slow_start");
    if (json_is_object(slow) && (put(slow, "aggression", json_real(lb->slow_start_aggression)) != 0 ||
                                 put(slow, "min_weight_percent", json_real(lb->slow_start_min_weight_percent)) != 0))
        return -1;
    return 0;
}

static int fill_outlier(json_t *o, const struct slb_config_outlier *od)
{
    const struct slb_outlier_options *x = &od->opts;
    json_t *v = json_object_get(o, "outlier_detection");

    if (!od->enabled || !json_is_object(v))
        return 0;
    return put_u32(v, "consecutive_failures", x->consecutive_failures) != 0 ||
                   put_u32(v, "base_ejection_ms", x->base_ejection_ms) != 0 ||
                   put_u32(v, "max_ejection_ms", x->max_ejection_ms) != 0 ||
                   put_u32(v, "max_ejection_percent", x->max_ejection_percent) != 0 ||
                   put_u32(v, "interval_ms", x->interval_ms) != 0 ||
                   put_u32(v, "success_rate_minimum_hosts", x->success_rate_minimum_hosts) != 0 ||
                   put_u32(v, "success_rate_request_volume", x->success_rate_request_volume) != 0 ||
                   put(v, "success_rate_stdev_factor", json_real(x->success_rate_stdev_factor)) != 0 ||
                   put_u32(v, "enforcing_success_rate", x->enforcing_success_rate) != 0 ||
                   put_u32(v, "failure_percentage_threshold", x->failure_percentage_threshold) != 0 ||
                   put_u32(v, "failure_percentage_minimum_hosts", x->failure_percentage_minimum_hosts) != 0 ||
                   put_u32(v, "failure_percentage_request_volume", x->failure_percentage_request_volume) != 0 ||
                   put_u32(v, "enforcing_failure_percentage", x->enforcing_failure_percentage) != 0
               ? -1
               : 0;
}

static int fill_cluster(json_t *o, const struct slb_config_cluster *cl)
{
    const struct slb_config_backoff *bo = &cl->backoff;
    json_t *st = json_object_get(json_object_get(o, "discovery"), "static"), *b;

    /* a backend given as "host:port" stays a string; object ones get their weight */
    for (size_t i = 0; i < json_array_size(st) && i < cl->n_static; i++)
        if (json_is_object(json_array_get(st, i)) &&
            put_u32(json_array_get(st, i), "weight", cl->static_backends[i].weight) != 0)
            return -1;
    if (fill_policy(o, cl) != 0 || put_u32(o, "max_connections_per_backend", cl->max_connections_per_backend) != 0 ||
        put_u32(o, "max_streams_per_connection", cl->max_streams_per_connection) != 0 ||
        put_u32(o, "stream_window", cl->stream_window) != 0 || put_u32(o, "keepalive_ms", cl->keepalive_ms) != 0 ||
        put_u32(o, "keepalive_timeout_ms", cl->keepalive_timeout_ms) != 0 ||
        put_u32(o, "connect_timeout_ms", cl->connect_timeout_ms) != 0 ||
        put_u32(o, "wait_for_ready_ms", cl->wait_for_ready_ms) != 0 || put_u32(o, "max_calls", cl->max_calls) != 0 ||
        put_u32(o, "max_waiting_calls", cl->max_waiting_calls) != 0 ||
        put_u32(o, "max_pending_per_backend", cl->max_pending_per_backend) != 0 ||
        put_u32(o, "queue_timeout_ms", cl->queue_timeout_ms) != 0 ||
        put_u32(o, "max_requests_per_connection", cl->max_requests_per_connection) != 0 ||
        put_u32(o, "max_connection_age_ms", cl->max_connection_age_ms) != 0 ||
        put_u32(o, "dns_refresh_ms", cl->dns_refresh_ms) != 0 || (b = child(o, "backoff")) == NULL ||
        put_u32(b, "initial_ms", bo->initial_ms) != 0 || put(b, "multiplier", json_real(bo->multiplier)) != 0 ||
        put(b, "jitter", json_real(bo->jitter)) != 0 || put_u32(b, "max_ms", bo->max_ms) != 0 ||
        put_u32(b, "min_connect_timeout_ms", bo->min_connect_timeout_ms) != 0 ||
        put_u32(b, "probe_interval_ms", bo->probe_interval_ms) != 0 ||
        fill_health(o, "health_check", &cl->health_check) != 0 || fill_outlier(o, &cl->outlier) != 0 ||
        fill_tls(o, &cl->tls) != 0)
        return -1;
    return 0;
}

static int fill_register(json_t *o, const struct slb_config_register *r)
{
    static const char *const formats[] = {"plain", "etcd_naming", "json"};

    if (put_u32(o, "ttl_s", r->ttl_s) != 0 || put(o, "format", json_string(formats[r->format])) != 0 ||
        put(o, "health_address", json_string(r->health_address)) != 0 ||
        fill_health(o, "health_check", &r->health_check) != 0 || fill_tls(o, &r->tls) != 0)
        return -1;
    /* a plain value has no weight (the parser refuses one there) */
    return r->format == SLB_REGISTER_PLAIN ? 0 : put_u32(o, "weight", r->weight);
}

static int fill_root(json_t *doc, const struct slb_config *cfg)
{
    json_t *o, *a;

    /* log_level is not filled in: sidelb -l overrides it, so the document could not say the level in effect */
    if (json_object_get(doc, "state_dir") == NULL && cfg->state_dir != NULL &&
        put(doc, "state_dir", json_string(cfg->state_dir)) != 0)
        return -1;
    if (cfg->workers_auto)
        json_object_del(doc, "workers"); /* put() keeps given keys: "auto" shows as the number it came to */
    if (put_u32(doc, "workers", cfg->workers) != 0)
        return -1;
    if (cfg->has_etcd && json_is_object(o = json_object_get(doc, "etcd")) &&
        (put_u32(o, "dial_timeout_ms", cfg->etcd.dial_timeout_ms) != 0 ||
         put_u32(o, "request_timeout_ms", cfg->etcd.request_timeout_ms) != 0 ||
         put(o, "allow_insecure_password", json_boolean(cfg->etcd.allow_insecure_password)) != 0))
        return -1;
    if ((o = child(doc, "budgets")) == NULL || put_u32(o, "connection_bytes", cfg->budgets.connection_bytes) != 0 ||
        put_u32(o, "total_bytes", cfg->budgets.total_bytes) != 0 ||
        put_u32(o, "call_retry_bytes", cfg->budgets.call_retry_bytes) != 0 ||
        put_u32(o, "read_bytes_per_turn", cfg->budgets.read_bytes_per_turn) != 0)
        return -1;
    if (cfg->access_log.path != NULL && json_is_object(o = json_object_get(doc, "access_log")) &&
        (put(o, "sample_rate", json_real(cfg->access_log.sample_rate)) != 0 ||
         put_u32(o, "max_lines_per_second", cfg->access_log.max_lines_per_second) != 0))
        return -1;
    a = json_object_get(doc, "listeners");
    for (size_t i = 0; i < cfg->n_listeners && i < json_array_size(a); i++)
        if (fill_listener(json_array_get(a, i), &cfg->listeners[i]) != 0)
            return -1;
    a = json_object_get(doc, "clusters");
    for (size_t i = 0; i < cfg->n_clusters && i < json_array_size(a); i++)
        if (fill_cluster(json_array_get(a, i), &cfg->clusters[i]) != 0)
            return -1;
    a = json_object_get(doc, "register");
    for (size_t i = 0; i < cfg->n_registers && i < json_array_size(a); i++)
        if (fill_register(json_array_get(a, i), &cfg->registers[i]) != 0)
            return -1;
    return 0;
}

int slb_config_fill_effective(json_t *doc, const struct slb_config *cfg)
{
    if (!json_is_object(doc) || cfg == NULL)
        return -1;
    return fill_root(doc, cfg);
}
