/*
 * Unit tests for lib/config.c: a full config with every field, defaults,
 * the shipped conf/sidelb.json, and one test per error asserting the exact
 * "NAME:LINE:COL: PATH: message" line (multi-line JSON, so positions matter).
 */
#include <check.h>
#include <jansson.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "log.h"

/* Loads json expecting failure; err must start with want. */
static void expect_error(const char *json, const char *want)
{
    char err[SLB_CONFIG_ERRLEN];
    struct slb_config *cfg = slb_config_load_string(json, "t.json", err, sizeof(err));
    ck_assert_msg(cfg == NULL, "loaded, but expected error: %s", want);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "\ngot:  %s\nwant: %s", err, want);
}

static struct slb_config *expect_ok(const char *json)
{
    char err[SLB_CONFIG_ERRLEN];
    struct slb_config *cfg = slb_config_load_string(json, "t.json", err, sizeof(err));
    ck_assert_msg(cfg != NULL, "unexpected error: %s", err);
    return cfg;
}

/* A minimal valid tail: lines 2.. of many error tests use it after their own first lines. */
#define LISTENER_OK "  \"listeners\": [{\"address\": \"127.0.0.1:15001\", \"default_cluster\": \"a\"}],\n"
#define CLUSTER_OK  "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]}}]\n"

static const char *full_config =
    "{\n"
    "  \"log_level\": \"debug\",\n"
    "  \"max_app_connections\": 5000,\n"
    "  \"etcd\": {\n"
    "    \"endpoints\": [\"http://127.0.0.1:2379\", \"https://etcd.example:2379\"],\n"
    "    \"dial_timeout_ms\": 1500, \"request_timeout_ms\": 2500,\n"
    "    \"username\": \"u\", \"password\": \"p\", \"allow_insecure_password\": true,\n"
    "    \"tls\": {\"ca_file\": \"/ca.pem\", \"cert_file\": \"/c.pem\", \"key_file\": "
    "\"/k.pem\"}\n"
    "  },\n"
    "  \"listeners\": [\n"
    "    {\"name\": \"out\", \"address\": \"127.0.0.1:15001\",\n"
    "     \"routes\": [{\"service\": \"x.Greeter\", \"cluster\": \"greeter\"},\n"
    "                {\"service\": \"x.Other/Get\", \"cluster\": \"other\"}],\n"
    "     \"default_cluster\": \"other\", \"max_concurrent_streams\": 50, \"max_header_list_size\": 65536,\n"
    "     \"max_connections\": 300, \"handshake_timeout_ms\": 2000, \"idle_timeout_ms\": 0,\n"
    "     \"stream_idle_timeout_ms\": 60000},\n"
    "    {\"address\": \"[::1]:15002\"}\n"
    "  ],\n"
    "  \"clusters\": [\n"
    "    {\"name\": \"greeter\",\n"
    "     \"discovery\": {\"etcd_prefix\": \"/grpclb/x.Greeter/\"},\n"
    "     \"policy\": {\"ring_hash\": {\"hash_header\": \"X-User\", \"min_ring_size\": 64,\n"
    "                  \"max_ring_size\": 4096, \"panic_threshold_percent\": 50}},\n"
    "     \"max_connections_per_backend\": 4, \"max_streams_per_connection\": 100,\n"
    "     \"stream_window\": 1048576, \"connect_timeout_ms\": 3000,\n"
    "     \"max_pending_per_backend\": 50, \"queue_timeout_ms\": 0,\n"
    "     \"max_requests_per_connection\": 10000, \"max_connection_age_ms\": 600000,\n"
    "     \"backoff\": {\"initial_ms\": 100, \"multiplier\": 2, \"jitter\": 0.1,\n"
    "                 \"max_ms\": 10000, \"min_connect_timeout_ms\": 1000, \"probe_interval_ms\": 100},\n"
    "     \"health_check\": {\"service\": \"x.Greeter\", \"interval_ms\": 500, "
    "\"timeout_ms\": 200},\n"
    "     \"outlier_detection\": {\"consecutive_failures\": 3, \"base_ejection_ms\": "
    "1000,\n"
    "        \"max_ejection_ms\": 9000, \"max_ejection_percent\": 50, \"interval_ms\": "
    "2000,\n"
    "        \"success_rate_minimum_hosts\": 3, \"success_rate_request_volume\": 20,\n"
    "        \"success_rate_stdev_factor\": 1.5, \"enforcing_success_rate\": 90,\n"
    "        \"failure_percentage_threshold\": 70, \"failure_percentage_minimum_hosts\": 4,\n"
    "        \"failure_percentage_request_volume\": 30, \"enforcing_failure_percentage\": 100},\n"
    "     \"service_config\": {\"methodConfig\": [{\"name\": [{\"service\": "
    "\"x.Greeter\"}],\n"
    "        \"timeout\": \"2s\", \"waitForReady\": true,\n"
    "        \"retryPolicy\": {\"maxAttempts\": 3, \"initialBackoff\": \"0.1s\",\n"
    "          \"maxBackoff\": \"1s\", \"backoffMultiplier\": 2,\n"
    "          \"retryableStatusCodes\": [\"UNAVAILABLE\", \"RESOURCE_EXHAUSTED\"]}}],\n"
    "        \"retryThrottling\": {\"maxTokens\": 10, \"tokenRatio\": 0.1}}},\n"
    "    {\"name\": \"other\",\n"
    "     \"discovery\": {\"static\": [\"127.0.0.1:50051\",\n"
    "        {\"address\": \"10.0.0.2:50052\", \"weight\": 3, \"zone\": \"b\"}]},\n"
    "     \"policy\": {\"maglev\": {\"hash_header\": \"k\", \"table_size\": 251}}},\n"
    "    {\"name\": \"lr\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
    "     \"policy\": {\"least_request\": {\"choice_count\": 3,\n"
    "                  \"slow_start\": {\"window_ms\": 30000, \"aggression\": 2.0,\n"
    "                                 \"min_weight_percent\": 5}}}}\n"
    "  ],\n"
    "  \"register\": [\n"
    "    {\"prefix\": \"/grpclb/x.Greeter/\", \"address\": \"10.0.0.5:8000\", "
    "\"ttl_s\": 5,\n"
    "     \"weight\": 7, \"zone\": \"a\", \"metadata\": {\"v\": 1, \"tags\": [\"x\"]},\n"
    "     \"format\": \"json\", \"health_check\": {\"service\": \"x.Greeter\"},\n"
    "     \"health_address\": \"127.0.0.1:8000\"},\n"
    "    {\"prefix\": \"/svc/\", \"address\": \"10.0.0.5:9000\", \"format\": "
    "\"etcd_naming\"}\n"
    "  ],\n"
    "  \"admin\": {\"address\": \"127.0.0.1:9901\"}\n"
    "}\n";

START_TEST(test_full)
{
    struct slb_config *cfg = expect_ok(full_config);
    ck_assert_str_eq(cfg->path, "t.json");
    ck_assert_int_eq(cfg->log_level, SLB_LOG_DEBUG);

    ck_assert_int_eq(cfg->has_etcd, 1);
    ck_assert_uint_eq(cfg->etcd.n_endpoints, 2);
    ck_assert_str_eq(cfg->etcd.endpoints[1], "https://etcd.example:2379");
    ck_assert_uint_eq(cfg->etcd.dial_timeout_ms, 1500);
    ck_assert_uint_eq(cfg->etcd.request_timeout_ms, 2500);
    ck_assert_str_eq(cfg->etcd.username, "u");
    ck_assert_str_eq(cfg->etcd.password, "p");
    ck_assert_str_eq(cfg->etcd.ca_file, "/ca.pem");
    ck_assert_str_eq(cfg->etcd.cert_file, "/c.pem");
    ck_assert_str_eq(cfg->etcd.key_file, "/k.pem");

    ck_assert_uint_eq(cfg->n_listeners, 2);
    struct slb_config_listener *l = &cfg->listeners[0];
    ck_assert_str_eq(l->name, "out");
    ck_assert_str_eq(l->address, "127.0.0.1:15001");
    ck_assert_uint_eq(l->n_routes, 2);
    ck_assert_str_eq(l->routes[0].service, "x.Greeter");
    ck_assert_str_eq(l->routes[0].cluster, "greeter");
    ck_assert_int_eq(l->routes[0].cluster_index, 0);
    ck_assert_str_eq(l->routes[1].service, "x.Other/Get");
    ck_assert_int_eq(l->routes[1].cluster_index, 1);
    ck_assert_str_eq(l->default_cluster, "other");
    ck_assert_int_eq(l->default_cluster_index, 1);
    ck_assert_uint_eq(l->max_concurrent_streams, 50);
    ck_assert_uint_eq(l->max_header_list_size, 65536);
    ck_assert_uint_eq(l->max_connections, 300);
    ck_assert_uint_eq(l->handshake_timeout_ms, 2000);
    ck_assert_uint_eq(l->idle_timeout_ms, 0); /* off */
    ck_assert_uint_eq(l->stream_idle_timeout_ms, 60000);
    ck_assert_uint_eq(cfg->max_app_connections, 5000);
    l = &cfg->listeners[1];
    ck_assert_str_eq(l->name, "[::1]:15002"); /* name defaults to the address */
    ck_assert_ptr_null(l->default_cluster);
    ck_assert_int_eq(l->default_cluster_index, -1);
    ck_assert_uint_eq(l->n_routes, 0);
    ck_assert_uint_eq(l->max_concurrent_streams, 100);
    ck_assert_uint_eq(l->max_header_list_size, 16384);

    ck_assert_uint_eq(cfg->n_clusters, 3);
    struct slb_config_cluster *c = &cfg->clusters[0];
    ck_assert_str_eq(c->name, "greeter");
    ck_assert_str_eq(c->etcd_prefix, "/grpclb/x.Greeter/");
    ck_assert_uint_eq(c->n_static, 0);
    ck_assert_str_eq(c->policy, "ring_hash");
    ck_assert_str_eq(c->lb.hash_header, "x-user"); /* lower-cased like HTTP/2 names */
    ck_assert_int_eq(c->lb.hash_on, SLB_LB_HASH_ON_HEADER);
    ck_assert_uint_eq(c->lb.min_ring_size, 64);
    ck_assert_uint_eq(c->lb.max_ring_size, 4096);
    ck_assert_double_eq(c->lb.panic_threshold_percent, 50);
    ck_assert_uint_eq(c->lb.slow_start_ms, 0); /* a hash policy takes none */
    ck_assert_uint_eq(c->max_connections_per_backend, 4);
    ck_assert_uint_eq(c->max_streams_per_connection, 100);
    ck_assert_uint_eq(c->stream_window, 1048576);
    ck_assert_uint_eq(c->connect_timeout_ms, 3000);
    ck_assert_uint_eq(c->max_pending_per_backend, 50);
    ck_assert_uint_eq(c->queue_timeout_ms, 0);
    ck_assert_uint_eq(c->max_requests_per_connection, 10000);
    ck_assert_uint_eq(c->max_connection_age_ms, 600000);
    ck_assert_uint_eq(c->backoff.initial_ms, 100);
    ck_assert_double_eq(c->backoff.multiplier, 2);
    ck_assert_double_eq(c->backoff.jitter, 0.1);
    ck_assert_uint_eq(c->backoff.max_ms, 10000);
    ck_assert_uint_eq(c->backoff.min_connect_timeout_ms, 1000);
    ck_assert_uint_eq(c->backoff.probe_interval_ms, 100);
    ck_assert_int_eq(c->health_check.enabled, 1);
    ck_assert_str_eq(c->health_check.service, "x.Greeter");
    ck_assert_uint_eq(c->health_check.interval_ms, 500);
    ck_assert_uint_eq(c->health_check.timeout_ms, 200);
    ck_assert_int_eq(c->outlier.enabled, 1);
    ck_assert_uint_eq(c->outlier.opts.consecutive_failures, 3);
    ck_assert_uint_eq(c->outlier.opts.base_ejection_ms, 1000);
    ck_assert_uint_eq(c->outlier.opts.max_ejection_ms, 9000);
    ck_assert_uint_eq(c->outlier.opts.max_ejection_percent, 50);
    ck_assert_uint_eq(c->outlier.opts.interval_ms, 2000);
    ck_assert_uint_eq(c->outlier.opts.success_rate_minimum_hosts, 3);
    ck_assert_uint_eq(c->outlier.opts.success_rate_request_volume, 20);
    ck_assert_double_eq(c->outlier.opts.success_rate_stdev_factor, 1.5);
    ck_assert_uint_eq(c->outlier.opts.enforcing_success_rate, 90);
    ck_assert_uint_eq(c->outlier.opts.failure_percentage_threshold, 70);
    ck_assert_uint_eq(c->outlier.opts.failure_percentage_minimum_hosts, 4);
    ck_assert_uint_eq(c->outlier.opts.failure_percentage_request_volume, 30);
    ck_assert_uint_eq(c->outlier.opts.enforcing_failure_percentage, 100);
    ck_assert_ptr_nonnull(c->service_config_json);
    ck_assert_ptr_nonnull(strstr(c->service_config_json, "\"retryPolicy\":{\"maxAttempts\":3,"));
    ck_assert_ptr_null(strchr(c->service_config_json, '\n')); /* compact */

    c = &cfg->clusters[1];
    ck_assert_uint_eq(c->n_static, 2);
    ck_assert_str_eq(c->static_backends[0].address, "127.0.0.1:50051");
    ck_assert_uint_eq(c->static_backends[0].weight, 1);
    ck_assert_ptr_null(c->static_backends[0].zone);
    ck_assert_str_eq(c->static_backends[1].address, "10.0.0.2:50052");
    ck_assert_uint_eq(c->static_backends[1].weight, 3);
    ck_assert_str_eq(c->static_backends[1].zone, "b");
    ck_assert_str_eq(c->policy, "maglev");
    ck_assert_str_eq(c->lb.hash_header, "k");
    ck_assert_uint_eq(c->lb.maglev_table_size, 251);
    ck_assert_ptr_null(c->service_config_json);
    ck_assert_str_eq(cfg->clusters[2].policy, "least_request");
    ck_assert_uint_eq(cfg->clusters[2].lb.choice_count, 3);
    ck_assert_uint_eq(cfg->clusters[2].lb.slow_start_ms, 30000);
    ck_assert_double_eq(cfg->clusters[2].lb.slow_start_aggression, 2.0);
    ck_assert_double_eq(cfg->clusters[2].lb.slow_start_min_weight_percent, 5);

    ck_assert_uint_eq(cfg->n_registers, 2);
    struct slb_config_register *r = &cfg->registers[0];
    ck_assert_str_eq(r->prefix, "/grpclb/x.Greeter/");
    ck_assert_str_eq(r->address, "10.0.0.5:8000");
    ck_assert_uint_eq(r->ttl_s, 5);
    ck_assert_uint_eq(r->weight, 7);
    ck_assert_str_eq(r->zone, "a");
    ck_assert_str_eq(r->metadata_json, "{\"v\":1,\"tags\":[\"x\"]}");
    ck_assert_int_eq(r->format, SLB_REGISTER_JSON);
    ck_assert_int_eq(r->health_check.enabled, 1);
    ck_assert_str_eq(r->health_check.service, "x.Greeter");
    ck_assert_uint_eq(r->health_check.interval_ms, 1000);
    ck_assert_str_eq(r->health_address, "127.0.0.1:8000");
    r = &cfg->registers[1];
    ck_assert_int_eq(r->format, SLB_REGISTER_ETCD_NAMING);
    ck_assert_uint_eq(r->ttl_s, 10);
    ck_assert_str_eq(r->health_address, "10.0.0.5:9000"); /* defaults to address */
    ck_assert_int_eq(r->health_check.enabled, 0);
    ck_assert_ptr_null(r->metadata_json);

    ck_assert_str_eq(cfg->admin_address, "127.0.0.1:9901");
    ck_assert_int_eq(slb_config_cluster_index(cfg, "lr"), 2);
    ck_assert_int_eq(slb_config_cluster_index(cfg, "nope"), -1);
    slb_config_free(cfg);
}
END_TEST

START_TEST(test_defaults)
{
    struct slb_config *cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK "}\n");
    struct slb_lb_options lbd;
    slb_lb_options_default(&lbd);
    ck_assert_int_eq(cfg->log_level, SLB_LOG_NOTICE);
    ck_assert_int_eq(cfg->has_etcd, 0);
    ck_assert_uint_eq(cfg->etcd.dial_timeout_ms, 2000);
    ck_assert_uint_eq(cfg->etcd.request_timeout_ms, 5000);
    ck_assert_ptr_null(cfg->admin_address);
    ck_assert_uint_eq(cfg->n_registers, 0);
    ck_assert_uint_eq(cfg->listeners[0].max_concurrent_streams, 100);
    ck_assert_uint_eq(cfg->listeners[0].max_header_list_size, 16384);
    ck_assert_str_eq(cfg->listeners[0].name, "127.0.0.1:15001");
    ck_assert_uint_eq(cfg->max_app_connections, 0); /* derived from RLIMIT_NOFILE by the server */
    ck_assert_uint_eq(cfg->listeners[0].max_connections, 0);
    ck_assert_uint_eq(cfg->listeners[0].handshake_timeout_ms, 10000);
    ck_assert_uint_eq(cfg->listeners[0].idle_timeout_ms, 300000);
    ck_assert_uint_eq(cfg->listeners[0].stream_idle_timeout_ms, 300000);
    struct slb_config_cluster *c = &cfg->clusters[0];
    ck_assert_str_eq(c->policy, "round_robin");
    ck_assert_mem_eq(&c->lb, &lbd, sizeof(lbd));
    ck_assert_uint_eq(c->max_connections_per_backend, 8);
    ck_assert_uint_eq(c->max_streams_per_connection, 1000);
    ck_assert_uint_eq(c->stream_window, 262144);
    ck_assert_uint_eq(c->connect_timeout_ms, 5000);
    ck_assert_uint_eq(c->max_pending_per_backend, 1000);
    ck_assert_uint_eq(c->queue_timeout_ms, 5000);
    ck_assert_uint_eq(c->max_requests_per_connection, 0);
    ck_assert_uint_eq(c->max_connection_age_ms, 0);
    ck_assert_uint_eq(c->backoff.initial_ms, 1000);
    ck_assert_double_eq(c->backoff.multiplier, 1.6);
    ck_assert_double_eq(c->backoff.jitter, 0.2);
    ck_assert_uint_eq(c->backoff.max_ms, 120000);
    ck_assert_uint_eq(c->backoff.min_connect_timeout_ms, 20000);
    ck_assert_uint_eq(c->backoff.probe_interval_ms, 50);
    ck_assert_int_eq(c->health_check.enabled, 0);
    ck_assert_int_eq(c->outlier.enabled, 0);
    ck_assert_uint_eq(c->outlier.opts.consecutive_failures, 5);
    ck_assert_uint_eq(c->outlier.opts.base_ejection_ms, 30000);
    ck_assert_uint_eq(c->outlier.opts.max_ejection_ms, 300000);
    ck_assert_uint_eq(c->outlier.opts.max_ejection_percent, 10);
    ck_assert_uint_eq(c->outlier.opts.interval_ms, 10000);
    ck_assert_uint_eq(c->outlier.opts.success_rate_minimum_hosts, 5);
    ck_assert_uint_eq(c->outlier.opts.success_rate_request_volume, 100);
    ck_assert_double_eq(c->outlier.opts.success_rate_stdev_factor, 1.9);
    ck_assert_uint_eq(c->outlier.opts.enforcing_success_rate, 100);
    ck_assert_uint_eq(c->outlier.opts.failure_percentage_threshold, 85);
    ck_assert_uint_eq(c->outlier.opts.failure_percentage_minimum_hosts, 5);
    ck_assert_uint_eq(c->outlier.opts.failure_percentage_request_volume, 50);
    ck_assert_uint_eq(c->outlier.opts.enforcing_failure_percentage, 0);
    ck_assert_ptr_null(c->service_config_json);
    ck_assert_uint_eq(c->static_backends[0].weight, 1);
    slb_config_free(cfg);

    /* an empty health_check object turns it on with defaults */
    cfg = expect_ok("{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": "
                    "[\"127.0.0.1:1\"]}, \"health_check\": {}, \"outlier_detection\": {}}]\n}\n");
    ck_assert_int_eq(cfg->clusters[0].health_check.enabled, 1);
    ck_assert_str_eq(cfg->clusters[0].health_check.service, "");
    ck_assert_uint_eq(cfg->clusters[0].health_check.interval_ms, 1000);
    ck_assert_uint_eq(cfg->clusters[0].health_check.timeout_ms, 1000);
    ck_assert_int_eq(cfg->clusters[0].outlier.enabled, 1);
    ck_assert_uint_eq(cfg->clusters[0].outlier.opts.consecutive_failures, 5);
    slb_config_free(cfg);
}
END_TEST

START_TEST(test_example_file)
{
    char err[SLB_CONFIG_ERRLEN];
    struct slb_config *cfg = slb_config_load_file("conf/sidelb.json", err, sizeof(err));
    ck_assert_msg(cfg != NULL, "conf/sidelb.json: %s", err);
    ck_assert_uint_eq(cfg->n_listeners, 1);
    ck_assert_str_eq(cfg->listeners[0].address, "127.0.0.1:15001");
    ck_assert_str_eq(cfg->listeners[0].routes[0].service, "sidelb.test.Echo");
    ck_assert_int_eq(cfg->listeners[0].routes[0].cluster_index, 0);
    ck_assert_str_eq(cfg->clusters[0].name, "echo");
    ck_assert_str_eq(cfg->clusters[0].policy, "round_robin");
    ck_assert_uint_eq(cfg->clusters[0].n_static, 3);
    ck_assert_str_eq(cfg->clusters[0].static_backends[0].address, "127.0.0.1:50051");
    ck_assert_str_eq(cfg->clusters[0].static_backends[1].address, "127.0.0.1:50052");
    ck_assert_str_eq(cfg->clusters[0].static_backends[2].address, "127.0.0.1:50053");
    ck_assert_str_eq(cfg->admin_address, "127.0.0.1:9901");
    ck_assert_int_eq(cfg->has_etcd, 0);
    slb_config_free(cfg);
}
END_TEST

START_TEST(test_file_errors)
{
    char err[SLB_CONFIG_ERRLEN];
    ck_assert_ptr_null(slb_config_load_file("/nonexistent/sidelb.json", err, sizeof(err)));
    ck_assert_str_eq(err, "/nonexistent/sidelb.json: cannot open: No such file or directory");
    ck_assert_ptr_null(slb_config_load_string("", "e.json", err, sizeof(err)));
    ck_assert_msg(strncmp(err, "e.json:1:", 9) == 0, "%s", err);
}
END_TEST

START_TEST(test_helpers)
{
    uint64_t ms = 0;
    ck_assert_int_eq(slb_config_parse_duration("0.1s", &ms), 0);
    ck_assert_uint_eq(ms, 100);
    ck_assert_int_eq(slb_config_parse_duration("2s", &ms), 0);
    ck_assert_uint_eq(ms, 2000);
    ck_assert_int_eq(slb_config_parse_duration("0.0005s", &ms), 0);
    ck_assert_uint_eq(ms, 1); /* rounded up */
    ck_assert_int_eq(slb_config_parse_duration("100ms", &ms), SLB_ECONFIG);
    ck_assert_int_eq(slb_config_parse_duration("1.s", &ms), SLB_ECONFIG);
    ck_assert_int_eq(slb_config_parse_duration(".5s", &ms), SLB_ECONFIG);
    ck_assert_int_eq(slb_config_parse_duration("-1s", &ms), SLB_ECONFIG);
    ck_assert_int_eq(slb_config_parse_duration("1.0000000001s", &ms), SLB_ECONFIG);
    ck_assert_int_eq(slb_config_grpc_code("UNAVAILABLE"), 14);
    ck_assert_int_eq(slb_config_grpc_code("OK"), 0);
    ck_assert_int_eq(slb_config_grpc_code("unavailable"), -1);
}
END_TEST

/* ---- one test per error ---- */

START_TEST(err_syntax)
{
    expect_error("{\n"
                 "  \"listeners\": [\n"
                 "    {\"address\": \"127.0.0.1:1\"}\n"
                 "    {\"address\": \"127.0.0.1:2\"}\n"
                 "  ]\n"
                 "}\n",
                 "t.json:4:5: listeners[1]: ']' expected near '{'");
}
END_TEST

START_TEST(err_duplicate_key)
{
    expect_error("{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\",\n"
                 "                \"name\": \"b\"}]\n"
                 "}\n",
                 "t.json:4:22: clusters[0].name: duplicate object key near '\"name\"'");
}
END_TEST

START_TEST(err_root_not_object)
{
    expect_error("\n  [1, 2]\n", "t.json:2:3: (root): expected an object, got an array");
}
END_TEST

START_TEST(err_unknown_top_key)
{
    expect_error("{\n" LISTENER_OK CLUSTER_OK ",  \"clsuters\": []\n}\n",
                 "t.json:4:4: clsuters: unknown key (expected one of: log_level, etcd, listeners, clusters, register, "
                 "admin, max_app_connections, budgets, access_log, metrics, state_dir, workers)");
}
END_TEST

START_TEST(test_budgets)
{
    struct slb_config *cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK "}\n");

    ck_assert_uint_eq(cfg->budgets.connection_bytes, 16u << 20);
    ck_assert_uint_eq(cfg->budgets.total_bytes, 256u << 20);
    ck_assert_uint_eq(cfg->budgets.call_retry_bytes, 256u << 10);
    ck_assert_uint_eq(cfg->budgets.read_bytes_per_turn, 256u << 10);
    slb_config_free(cfg);
    cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK
                    ", \"budgets\": {\"connection_bytes\": 2097152, \"total_bytes\": 4194304,\n"
                    "  \"call_retry_bytes\": 0, \"read_bytes_per_turn\": 0}\n}\n");
    ck_assert_uint_eq(cfg->budgets.connection_bytes, 2u << 20);
    ck_assert_uint_eq(cfg->budgets.total_bytes, 4u << 20);
    ck_assert_uint_eq(cfg->budgets.call_retry_bytes, 0);
    ck_assert_uint_eq(cfg->budgets.read_bytes_per_turn, 0);
    slb_config_free(cfg);
}
END_TEST

/* state_dir: a default, "" and null turn persisted tables off, only absolute paths. */
START_TEST(test_state_dir)
{
    struct slb_config *cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK "}\n");

    ck_assert_str_eq(cfg->state_dir, "/var/lib/sidelb");
    slb_config_free(cfg);
    cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK ", \"state_dir\": \"/srv/sidelb/state\"\n}\n");
    ck_assert_str_eq(cfg->state_dir, "/srv/sidelb/state");
    slb_config_free(cfg);
    cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK ", \"state_dir\": \"\"\n}\n");
    ck_assert_ptr_null(cfg->state_dir);
    slb_config_free(cfg);
    cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK ", \"state_dir\": null\n}\n");
    ck_assert_ptr_null(cfg->state_dir);
    slb_config_free(cfg);
    expect_error("{\n" LISTENER_OK CLUSTER_OK ", \"state_dir\": \"state\"\n}\n",
                 "t.json:4:16: state_dir: must be an absolute path");
    expect_error("{\n" LISTENER_OK CLUSTER_OK ", \"state_dir\": 1\n}\n", "t.json:4:16: state_dir: ");
}
END_TEST

START_TEST(test_workers)
{
    struct slb_config *cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK "}\n");

    ck_assert_uint_eq(cfg->workers, 1);
    slb_config_free(cfg);
    cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK ", \"workers\": 4\n}\n");
    ck_assert_uint_eq(cfg->workers, 4);
    ck_assert_uint_eq(cfg->workers_auto, 0);
    slb_config_free(cfg);
    cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK ", \"workers\": \"auto\"\n}\n");
    ck_assert_uint_ge(cfg->workers, 1);
    ck_assert_uint_le(cfg->workers, SLB_MAX_WORKERS);
    ck_assert_uint_eq(cfg->workers_auto, 1);
    slb_config_free(cfg);
    expect_error("{\n" LISTENER_OK CLUSTER_OK ", \"workers\": 0\n}\n",
                 "t.json:4:14: workers: 0 is out of range (1..64)");
    expect_error("{\n" LISTENER_OK CLUSTER_OK ", \"workers\": 65\n}\n", "t.json:4:14: workers: 65 is out of range");
    expect_error("{\n" LISTENER_OK CLUSTER_OK ", \"workers\": \"many\"\n}\n",
                 "t.json:4:14: workers: expected an integer 1..64 or \"auto\", got a string");
}
END_TEST

START_TEST(err_budgets)
{
    expect_error("{\n" LISTENER_OK CLUSTER_OK ", \"budgets\": {\"connection_bytes\": 1000}\n}\n",
                 "t.json:4:35: budgets.connection_bytes: 1000 is out of range (1048576..4294967295)");
    expect_error("{\n" LISTENER_OK CLUSTER_OK
                 ", \"budgets\": {\"connection_bytes\": 33554432, \"total_bytes\": 16777216}\n}\n",
                 "t.json:4:");
    expect_error("{\n" LISTENER_OK CLUSTER_OK ", \"budgets\": {\"read_bytes_per_turn\": 100}\n}\n", "t.json:4:");
    expect_error("{\n" LISTENER_OK CLUSTER_OK ", \"budgets\": {\"conection_bytes\": 1}\n}\n",
                 "t.json:4:15: budgets.conection_bytes: unknown key");
}
END_TEST

START_TEST(err_unknown_listener_key)
{
    expect_error("{\n"
                 "  \"listeners\": [\n"
                 "    {\"adress\": \"127.0.0.1:15001\"}\n"
                 "  ],\n" CLUSTER_OK "}\n",
                 "t.json:3:6: listeners[0].adress: unknown key (expected one of: name, address, routes, "
                 "default_cluster, max_concurrent_streams, max_premature_resets, max_header_list_size, "
                 "max_connections, handshake_timeout_ms, idle_timeout_ms, stream_idle_timeout_ms, tls, mode, group)");
}
END_TEST

START_TEST(err_missing_listeners)
{
    expect_error("{\n"
                 "  \"log_level\": \"info\",\n" CLUSTER_OK "}\n",
                 "t.json:1:1: (root): missing required key \"listeners\"");
}
END_TEST

START_TEST(err_empty_listeners)
{
    expect_error("{\n"
                 "  \"listeners\": [ ],\n" CLUSTER_OK "}\n",
                 "t.json:2:16: listeners: needs at least one listener");
}
END_TEST

START_TEST(err_listener_missing_address)
{
    expect_error("{\n"
                 "  \"listeners\": [\n"
                 "      {\"name\": \"x\"}],\n" CLUSTER_OK "}\n",
                 "t.json:3:7: listeners[0]: missing required key \"address\"");
}
END_TEST

START_TEST(err_bad_address)
{
    expect_error("{\n"
                 "  \"listeners\": [{\"address\": \"127.0.0.1\"}],\n" CLUSTER_OK "}\n",
                 "t.json:2:29: listeners[0].address: invalid address \"127.0.0.1\" (expected IPv4:port, [IPv6]:port "
                 "or localhost:port)");
}
END_TEST

START_TEST(err_wrong_type)
{
    expect_error("{\n"
                 "  \"listeners\": [{\"address\": \"127.0.0.1:1\",\n"
                 "                 \"max_concurrent_streams\": \"100\"}],\n" CLUSTER_OK "}\n",
                 "t.json:3:44: listeners[0].max_concurrent_streams: expected an integer, got a string");
}
END_TEST

START_TEST(err_out_of_range)
{
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"connect_timeout_ms\": 0}]\n"
                 "}\n",
                 "t.json:4:28: clusters[0].connect_timeout_ms: 0 is out of range (1..600000)");
    /* a pool queue of 0 would leave no call a way to wait for the first connection */
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"max_pending_per_backend\": 0}]\n"
                 "}\n",
                 "t.json:4:33: clusters[0].max_pending_per_backend: 0 is out of range (1..2147483647)");
    /* A50: percentages are at most 100 */
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"outlier_detection\": {\"enforcing_failure_percentage\": 101}}]\n"
                 "}\n",
                 "t.json:4:60: clusters[0].outlier_detection.enforcing_failure_percentage: 101 is out of range "
                 "(0..100)");
}
END_TEST

START_TEST(err_header_list_size_out_of_range)
{
    expect_error("{\n"
                 "  \"listeners\": [{\"address\": \"127.0.0.1:1\",\n"
                 "                 \"max_header_list_size\": 512}],\n" CLUSTER_OK "}\n",
                 "t.json:3:42: listeners[0].max_header_list_size: 512 is out of range (1024..1048576)");
}
END_TEST

START_TEST(err_real_for_integer)
{
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"max_connections_per_backend\": 1.5}]\n"
                 "}\n",
                 "t.json:4:37: clusters[0].max_connections_per_backend: expected an integer, got a real number");
}
END_TEST

START_TEST(err_unknown_policy)
{
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"policy\": {\"fastest\": {}}}]\n"
                 "}\n",
                 "t.json:4:17: clusters[0].policy.fastest: unknown policy \"fastest\" (known: pick_first, "
                 "round_robin, ");
}
END_TEST

START_TEST(err_two_policies)
{
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"policy\": {\"random\": {}, \"round_robin\": {}}}]\n"
                 "}\n",
                 "t.json:4:16: clusters[0].policy: needs exactly one policy name as its key");
}
END_TEST

START_TEST(err_policy_option_not_for_policy)
{
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"policy\": {\"round_robin\": {\"hash_header\": \"x\"}}}]\n"
                 "}\n",
                 "t.json:4:33: clusters[0].policy.round_robin.hash_header: unknown key (expected one of: slow_start, "
                 "panic_threshold_percent)");
}
END_TEST

START_TEST(err_ring_hash_needs_header)
{
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"policy\": {\"ring_hash\": {\"min_ring_size\": 16}}}]\n"
                 "}\n",
                 "t.json:4:30: clusters[0].policy.ring_hash: missing required key \"hash_header\"");
}
END_TEST

#define POLICY_CLUSTER(pol)                                                                                            \
    "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"                             \
    "     \"policy\": " pol "}]\n"

/* hash_on: each hash policy's default, and every value on every hash policy. */
START_TEST(test_hash_on)
{
    static const char *const ok[][3] = {
        /* policy options, hash_on, hash_header */
        {"{\"source_ip_hash\": {}}", "source_ip", ""},
        {"{\"source_ip_hash\": {\"hash_on\": \"source_ip_port\"}}", "source_ip_port", ""},
        {"{\"source_ip_hash\": {\"hash_on\": \"header\", \"hash_header\": \"X-App\"}}", "header", "x-app"},
        {"{\"ring_hash\": {\"hash_header\": \"k\"}}", "header", "k"},
        {"{\"ring_hash\": {\"hash_on\": \"source_ip_port\"}}", "source_ip_port", ""},
        {"{\"ring_hash\": {\"hash_on\": \"source_ip\"}}", "source_ip", ""},
        {"{\"maglev\": {\"hash_on\": \"header\", \"hash_header\": \"k\"}}", "header", "k"},
        {"{\"maglev\": {\"hash_on\": \"source_ip_port\", \"table_size\": 251}}", "source_ip_port", ""},
    };
    char json[1024];
    for (size_t i = 0; i < SLB_ARRAY_SIZE(ok); i++) {
        snprintf(json, sizeof(json), "{\n" LISTENER_OK POLICY_CLUSTER("%s") "}\n", ok[i][0]);
        struct slb_config *cfg = expect_ok(json);
        ck_assert_str_eq(slb_lb_hash_on_name(cfg->clusters[0].lb.hash_on), ok[i][1]);
        ck_assert_str_eq(cfg->clusters[0].lb.hash_header, ok[i][2]);
        slb_config_free(cfg);
    }
}
END_TEST

START_TEST(err_hash_on)
{
    /* an unknown value, named with the known ones */
    expect_error("{\n" LISTENER_OK POLICY_CLUSTER("{\"source_ip_hash\": {\"hash_on\": \"source_port\"}}") "}\n",
                 "t.json:4:47: clusters[0].policy.source_ip_hash.hash_on: unknown value \"source_port\" (known: "
                 "source_ip, source_ip_port, header)");
    expect_error("{\n" LISTENER_OK POLICY_CLUSTER("{\"maglev\": {\"hash_on\": 1}}") "}\n",
                 "t.json:4:39: clusters[0].policy.maglev.hash_on: expected a string, got an integer");
    /* header without hash_header */
    expect_error("{\n" LISTENER_OK POLICY_CLUSTER("{\"source_ip_hash\": {\"hash_on\": \"header\"}}") "}\n",
                 "t.json:4:35: clusters[0].policy.source_ip_hash: missing required key \"hash_header\" (hash_on is "
                 "\"header\": the request header whose value is the key)");
    expect_error("{\n" LISTENER_OK POLICY_CLUSTER("{\"maglev\": {}}") "}\n",
                 "t.json:4:27: clusters[0].policy.maglev: missing required key \"hash_header\" (hash_on is "
                 "\"header\", the default of this policy");
    /* hash_header where it would be ignored */
    expect_error("{\n" LISTENER_OK POLICY_CLUSTER("{\"source_ip_hash\": {\"hash_header\": \"x\"}}") "}\n",
                 "t.json:4:36: clusters[0].policy.source_ip_hash.hash_header: only used with \"hash_on\": "
                 "\"header\" (hash_on is \"source_ip\", the default of this policy)");
    expect_error("{\n" LISTENER_OK POLICY_CLUSTER(
                     "{\"ring_hash\": {\"hash_on\": \"source_ip_port\", \"hash_header\": \"x\"}}") "}\n",
                 "t.json:4:60: clusters[0].policy.ring_hash.hash_header: only used with \"hash_on\": \"header\" "
                 "(hash_on is \"source_ip_port\")");
    /* not a hash policy */
    expect_error("{\n" LISTENER_OK POLICY_CLUSTER("{\"random\": {\"hash_on\": \"source_ip\"}}") "}\n",
                 "t.json:4:28: clusters[0].policy.random.hash_on: unknown key");
}
END_TEST

START_TEST(err_maglev_not_prime)
{
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"policy\": {\"maglev\": {\"hash_header\": \"k\",\n"
                 "                           \"table_size\": 1000}}}]\n"
                 "}\n",
                 "t.json:5:42: clusters[0].policy.maglev.table_size: 1000 is not prime");
}
END_TEST

START_TEST(err_slow_start_window)
{
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"policy\": {\"random\": {\"slow_start\": {\"aggression\": 0}}}}]\n"
                 "}\n",
                 "t.json:4:42: clusters[0].policy.random.slow_start: missing required key \"window_ms\"");
}
END_TEST

/* slow_start where a share cannot ramp: rejected, saying why (it was accepted and did nothing). */
START_TEST(err_slow_start_not_for_policy)
{
    static const char *const rejected[] = {"pick_first", "source_ip_hash", "ring_hash", "maglev"};
    static const char *const why[] = {"pick_first sends every call to one backend",
                                      "a hash policy sends each key to one backend, and keys must stay",
                                      "a hash policy sends each key to one backend, and keys must stay",
                                      "a hash policy sends each key to one backend, and keys must stay"};
    char json[512], want[256];
    snprintf(json, sizeof(json),
             "{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
             "     \"policy\": {\"%s\": {\"hash_header\": \"k\", \"slow_start\": {\"window_ms\": 1000}}}}]\n"
             "}\n",
             rejected[_i]);
    if (_i == 0) /* pick_first takes no hash_header */
        snprintf(json, sizeof(json),
                 "{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"policy\": {\"pick_first\": {\"slow_start\": {\"window_ms\": 1000}}}}]\n"
                 "}\n");
    snprintf(want, sizeof(want), "t.json:4:"); /* the key's position: checked below */
    expect_error(json, want);
    char err[SLB_CONFIG_ERRLEN];
    ck_assert_ptr_null(slb_config_load_string(json, "t.json", err, sizeof(err)));
    snprintf(want, sizeof(want), "clusters[0].policy.%s.slow_start: not supported by %s: %s", rejected[_i],
             rejected[_i], why[_i]);
    ck_assert_msg(strstr(err, want) != NULL, "\ngot:  %s\nwant: %s", err, want);
    ck_assert_ptr_nonnull(strstr(err, "slow_start works with round_robin, random, weighted_round_robin, "
                                      "weighted_random and least_request"));
}
END_TEST

/* ... and accepted by every policy that ramps it. */
START_TEST(ok_slow_start_policies)
{
    static const char *const ramped[] = {"round_robin", "random", "weighted_round_robin", "weighted_random",
                                         "least_request"};
    char json[512];
    snprintf(json, sizeof(json),
             "{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
             "     \"policy\": {\"%s\": {\"slow_start\": {\"window_ms\": 1000}}}}]\n"
             "}\n",
             ramped[_i]);
    struct slb_config *cfg = expect_ok(json);
    ck_assert_uint_eq(cfg->clusters[0].lb.slow_start_ms, 1000);
    slb_config_free(cfg);
}
END_TEST

START_TEST(err_duplicate_cluster)
{
    expect_error("{\n" LISTENER_OK "  \"clusters\": [\n"
                 "    {\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]}},\n"
                 "    {\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:2\"]}}]\n"
                 "}\n",
                 "t.json:5:14: clusters[1].name: duplicate cluster name \"a\" (first at clusters[0])");
}
END_TEST

START_TEST(err_route_unknown_cluster)
{
    expect_error("{\n"
                 "  \"listeners\": [{\"address\": \"127.0.0.1:1\",\n"
                 "    \"routes\": [{\"service\": \"x.Y\", \"cluster\": \"b\"}]}],\n" CLUSTER_OK "}\n",
                 "t.json:3:46: listeners[0].routes[0].cluster: unknown cluster \"b\" (known: a)");
}
END_TEST

START_TEST(err_default_cluster_unknown)
{
    expect_error("{\n"
                 "  \"listeners\": [{\"address\": \"127.0.0.1:1\",\n"
                 "    \"default_cluster\": \"zz\"}],\n" CLUSTER_OK "}\n",
                 "t.json:3:24: listeners[0].default_cluster: unknown cluster \"zz\" (known: a)");
}
END_TEST

START_TEST(err_route_missing_cluster)
{
    expect_error("{\n"
                 "  \"listeners\": [{\"address\": \"127.0.0.1:1\",\n"
                 "    \"routes\": [{\"service\": \"x.Y\"}]}],\n" CLUSTER_OK "}\n",
                 "t.json:3:16: listeners[0].routes[0]: missing required key \"cluster\"");
}
END_TEST

START_TEST(err_route_bad_service)
{
    expect_error("{\n"
                 "  \"listeners\": [{\"address\": \"127.0.0.1:1\",\n"
                 "    \"routes\": [{\"service\": \"/x.Y/Get\", \"cluster\": \"a\"}]}],\n" CLUSTER_OK "}\n",
                 "t.json:3:28: listeners[0].routes[0].service: \"/x.Y/Get\" is not \"pkg.Service\" or "
                 "\"pkg.Service/Method\"");
}
END_TEST

START_TEST(err_discovery_both)
{
    expect_error("{\n" LISTENER_OK "  \"etcd\": {\"endpoints\": [\"http://127.0.0.1:2379\"]},\n"
                 "  \"clusters\": [{\"name\": \"a\",\n"
                 "    \"discovery\": {\"static\": [\"127.0.0.1:1\"], \"etcd_prefix\": \"/x/\"}}]\n"
                 "}\n",
                 "t.json:5:18: clusters[0].discovery: needs exactly one of \"static\" or \"etcd_prefix\" (both "
                 "given)");
}
END_TEST

START_TEST(err_discovery_neither)
{
    expect_error("{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\",\n"
                 "    \"discovery\": {}}]\n"
                 "}\n",
                 "t.json:4:18: clusters[0].discovery: needs exactly one of \"static\" or \"etcd_prefix\" (neither "
                 "given)");
}
END_TEST

START_TEST(err_etcd_prefix_without_etcd)
{
    expect_error("{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\",\n"
                 "    \"discovery\": {\"etcd_prefix\": \"/grpclb/a/\"}}]\n"
                 "}\n",
                 "t.json:4:34: clusters[0].discovery.etcd_prefix: etcd discovery needs a top-level \"etcd\" section");
}
END_TEST

START_TEST(err_static_bad_backend)
{
    expect_error("{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\",\n"
                 "    \"discovery\": {\"static\": [\"127.0.0.1:1\",\n"
                 "                             \"-backend-1:50051\"]}}]\n"
                 "}\n",
                 "t.json:5:30: clusters[0].discovery.static[1]: invalid address \"-backend-1:50051\"");
}
END_TEST

START_TEST(err_static_weight_zero)
{
    expect_error("{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\",\n"
                 "    \"discovery\": {\"static\": [{\"address\": \"127.0.0.1:1\", \"weight\": 0}]}}]\n"
                 "}\n",
                 "t.json:4:67: clusters[0].discovery.static[0].weight: 0 is out of range (1..1000000)");
}
END_TEST

START_TEST(err_etcd_endpoint)
{
    expect_error("{\n"
                 "  \"etcd\": {\"endpoints\": [\n"
                 "     \"127.0.0.1:2379\"]},\n" LISTENER_OK CLUSTER_OK "}\n",
                 "t.json:3:6: etcd.endpoints[0]: invalid endpoint \"127.0.0.1:2379\" (expected http://host:port or "
                 "https://host:port)");
}
END_TEST

/* A password goes to http:// endpoints only when allowed; password_file reads the file, trailing newline stripped. */
START_TEST(etcd_password_rules)
{
    char path[] = "/tmp/sidelb-check-pw-XXXXXX", json[1024];
    struct slb_config *cfg;
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "s3cret\n", 7), 7);
    close(fd);
    expect_error("{\n"
                 "  \"etcd\": {\"endpoints\": [\"https://10.0.0.1:2379\", \"http://127.0.0.1:2379\"],\n"
                 "    \"username\": \"u\", \"password\": \"s3cret\"},\n" LISTENER_OK CLUSTER_OK "}\n",
                 "t.json:3:22: etcd.password: the password would be sent in clear to http://127.0.0.1:2379: use "
                 "https:// endpoints, or set \"allow_insecure_password\": true");
    snprintf(json, sizeof(json),
             "{\n  \"etcd\": {\"endpoints\": [\"https://10.0.0.1:2379\"], \"username\": \"u\", "
             "\"password_file\": \"%s\"},\n" LISTENER_OK CLUSTER_OK "}\n",
             path);
    cfg = expect_ok(json);
    ck_assert_str_eq(cfg->etcd.password, "s3cret");
    ck_assert_str_eq(cfg->etcd.password_file, path);
    ck_assert_ptr_null(strstr(cfg->redacted_json, "s3cret"));
    slb_config_free(cfg);
    setenv("CREDENTIALS_DIRECTORY", "/tmp", 1);
    snprintf(json, sizeof(json),
             "{\n  \"etcd\": {\"endpoints\": [\"http://127.0.0.1:2379\"], \"username\": \"u\", "
             "\"allow_insecure_password\": true, \"password_file\": \"${CREDENTIALS_DIRECTORY}%s\"},\n" LISTENER_OK
                 CLUSTER_OK "}\n",
             path + 4);
    cfg = expect_ok(json);
    ck_assert_str_eq(cfg->etcd.password, "s3cret");
    slb_config_free(cfg);
    unsetenv("CREDENTIALS_DIRECTORY");
    cfg = slb_config_load_string(json, "t.json", json + 700, 300);
    ck_assert_ptr_null(cfg);
    ck_assert_ptr_nonnull(strstr(json + 700, "uses ${CREDENTIALS_DIRECTORY}, which is not set"));
    unlink(path);
    expect_error("{\n"
                 "  \"etcd\": {\"endpoints\": [\"https://127.0.0.1:2379\"],\n"
                 "    \"username\": \"u\", \"password_file\": \"/nonexistent/pw\"},\n" LISTENER_OK CLUSTER_OK "}\n",
                 "t.json:3:39: etcd.password_file: cannot open \"/nonexistent/pw\": No such file or directory");
    expect_error("{\n"
                 "  \"etcd\": {\"endpoints\": [\"https://127.0.0.1:2379\"],\n"
                 "    \"username\": \"u\", \"password\": \"a\", \"password_file\": \"/x\"},\n" LISTENER_OK CLUSTER_OK
                 "}\n",
                 "t.json:3:39: etcd.password_file: give \"password\" or \"password_file\", not both");
    expect_error("{\n"
                 "  \"etcd\": {\"endpoints\": [\"https://127.0.0.1:2379\"],\n"
                 "    \"username\": \"u\", \"password_file\": \"/dev/null\"},\n" LISTENER_OK CLUSTER_OK "}\n",
                 "t.json:3:39: etcd.password_file: \"/dev/null\" is not a regular file");
}
END_TEST

START_TEST(err_etcd_password_without_user)
{
    expect_error("{\n"
                 "  \"etcd\": {\"endpoints\": [\"http://127.0.0.1:2379\"],\n"
                 "    \"password\": \"s3cret\"},\n" LISTENER_OK CLUSTER_OK "}\n",
                 "t.json:3:5: etcd.password: a password needs a \"username\"");
}
END_TEST

#define SC_HEAD                                                                                                        \
    "{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"           \
    "    \"service_config\": {\"methodConfig\": [{\"name\": [{\"service\": \"x.Y\"}],\n"

START_TEST(err_retry_max_attempts)
{
    expect_error(SC_HEAD "      \"retryPolicy\": {\"maxAttempts\": 6, \"initialBackoff\": \"0.1s\", \"maxBackoff\": "
                         "\"1s\",\n"
                         "        \"backoffMultiplier\": 2, \"retryableStatusCodes\": [\"UNAVAILABLE\"]}}]}}]\n}\n",
                 "t.json:5:38: clusters[0].service_config.methodConfig[0].retryPolicy.maxAttempts: 6 is out of range "
                 "(2..5)");
}
END_TEST

START_TEST(err_retry_duration)
{
    expect_error(SC_HEAD "      \"retryPolicy\": {\"maxAttempts\": 3, \"initialBackoff\": \"100ms\", \"maxBackoff\": "
                         "\"1s\",\n"
                         "        \"backoffMultiplier\": 2, \"retryableStatusCodes\": [\"UNAVAILABLE\"]}}]}}]\n}\n",
                 "t.json:5:59: clusters[0].service_config.methodConfig[0].retryPolicy.initialBackoff: \"100ms\" is not "
                 "a duration (expected seconds with an \"s\" suffix, e.g. \"0.1s\")");
}
END_TEST

START_TEST(err_retry_status_code)
{
    expect_error(SC_HEAD "      \"retryPolicy\": {\"maxAttempts\": 3, \"initialBackoff\": \"0.1s\", \"maxBackoff\": "
                         "\"1s\",\n"
                         "        \"backoffMultiplier\": 2, \"retryableStatusCodes\": [\"UNAVAILBLE\"]}}]}}]\n}\n",
                 "t.json:6:58: clusters[0].service_config.methodConfig[0].retryPolicy.retryableStatusCodes[0]: not a "
                 "gRPC status code name");
}
END_TEST

START_TEST(err_retry_multiplier)
{
    expect_error(
        SC_HEAD "      \"retryPolicy\": {\"maxAttempts\": 3, \"initialBackoff\": \"0.1s\", \"maxBackoff\": "
                "\"1s\",\n"
                "        \"backoffMultiplier\": 0, \"retryableStatusCodes\": [\"UNAVAILABLE\"]}}]}}]\n}\n",
        "t.json:6:30: clusters[0].service_config.methodConfig[0].retryPolicy.backoffMultiplier: 0 must be > 0");
}
END_TEST

START_TEST(err_retry_missing_codes)
{
    expect_error(SC_HEAD "      \"retryPolicy\": {\"maxAttempts\": 3, \"initialBackoff\": \"0.1s\", \"maxBackoff\": "
                         "\"1s\",\n"
                         "        \"backoffMultiplier\": 2}}]}}]\n}\n",
                 "t.json:5:22: clusters[0].service_config.methodConfig[0].retryPolicy: missing required key "
                 "\"retryableStatusCodes\"");
}
END_TEST

START_TEST(err_register_without_etcd)
{
    expect_error("{\n" LISTENER_OK CLUSTER_OK
                 ",  \"register\": [{\"prefix\": \"/x/\", \"address\": \"10.0.0.1:1\"}]\n}\n",
                 "t.json:4:4: register: registration needs a top-level \"etcd\" section");
}
END_TEST

#define REG_HEAD "{\n  \"etcd\": {\"endpoints\": [\"http://127.0.0.1:2379\"]},\n" LISTENER_OK CLUSTER_OK

START_TEST(err_register_missing_prefix)
{
    expect_error(REG_HEAD ",  \"register\": [\n"
                          "    {\"address\": \"10.0.0.1:1\"}]\n}\n",
                 "t.json:6:5: register[0]: missing required key \"prefix\"");
}
END_TEST

START_TEST(err_register_ttl)
{
    expect_error(REG_HEAD ",  \"register\": [\n"
                          "    {\"prefix\": \"/x/\", \"address\": \"10.0.0.1:1\", \"ttl_s\": 0}]\n}\n",
                 "t.json:6:57: register[0].ttl_s: 0 is out of range (1..86400)");
}
END_TEST

START_TEST(err_register_format)
{
    expect_error(REG_HEAD ",  \"register\": [\n"
                          "    {\"prefix\": \"/x/\", \"address\": \"10.0.0.1:1\",\n"
                          "     \"format\": \"yaml\"}]\n}\n",
                 "t.json:7:16: register[0].format: unknown format \"yaml\" (known: plain, etcd_naming, json)");
}
END_TEST

START_TEST(err_register_plain_metadata)
{
    expect_error(REG_HEAD ",  \"register\": [\n"
                          "    {\"prefix\": \"/x/\", \"address\": \"10.0.0.1:1\",\n"
                          "     \"metadata\": {\"a\": 1}}]\n}\n",
                 "t.json:7:6: register[0].metadata: format \"plain\" stores only host:port");
}
END_TEST

START_TEST(err_log_level)
{
    expect_error("{\n"
                 "  \"log_level\": \"verbose\",\n" LISTENER_OK CLUSTER_OK "}\n",
                 "t.json:2:16: log_level: unknown level (known: debug, info, notice, warn, error)");
}
END_TEST

START_TEST(err_connection_limits)
{
    expect_error("{\n"
                 "  \"max_app_connections\": 0,\n" LISTENER_OK CLUSTER_OK "}\n",
                 "t.json:2:26: max_app_connections: 0 is out of range (1..2147483647)");
    expect_error("{\n"
                 "  \"listeners\": [{\"address\": \"127.0.0.1:1\", \"handshake_timeout_ms\": -1}],\n" CLUSTER_OK "}\n",
                 "t.json:2:68: listeners[0].handshake_timeout_ms: -1 is out of range (0..3600000)");
    expect_error("{\n"
                 "  \"listeners\": [{\"address\": \"127.0.0.1:1\", \"stream_idle_timeout_ms\": \"5s\"}],\n" CLUSTER_OK
                 "}\n",
                 "t.json:2:70: listeners[0].stream_idle_timeout_ms: expected an integer, got a string");
}
END_TEST

START_TEST(err_admin_unknown_key)
{
    expect_error("{\n" LISTENER_OK CLUSTER_OK ",  \"admin\": {\"address\": \"127.0.0.1:9901\", \"port\": 9901}\n}\n",
                 "t.json:4:43: admin.port: unknown key (expected one of: address)");
}
END_TEST

START_TEST(err_backoff_max_below_initial)
{
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"backoff\": {\"initial_ms\": 5000, \"max_ms\": 100}}]\n"
                 "}\n",
                 "t.json:4:48: clusters[0].backoff.max_ms: 100 is less than initial_ms 5000");
}
END_TEST

/* A probe every few ms would be a connect storm: 0 (off) or >= 10. */
START_TEST(err_backoff_probe_interval_too_short)
{
    expect_error("{\n" LISTENER_OK
                 "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [\"127.0.0.1:1\"]},\n"
                 "     \"backoff\": {\"probe_interval_ms\": 5}}]\n"
                 "}\n",
                 "t.json:4:39: clusters[0].backoff.probe_interval_ms: 5 must be 0 (off) or at least 10");
}
END_TEST

START_TEST(err_duplicate_listener_address)
{
    expect_error("{\n"
                 "  \"listeners\": [{\"address\": \"127.0.0.1:1\"},\n"
                 "                {\"address\": \"127.0.0.1:1\"}],\n" CLUSTER_OK "}\n",
                 "t.json:3:29: listeners[1].address: address \"127.0.0.1:1\" already used by listeners[0]");
}
END_TEST

/* ---- unix:/path listeners and host-name backends ---- */

#define UNIX_LISTENER(extra)                                                                                           \
    "  \"listeners\": [{\"address\": \"unix:/run/sidelb/grpc.sock\", \"default_cluster\": \"a\"" extra "}],\n"

START_TEST(unix_listener_mode_group)
{
    struct slb_config *cfg = expect_ok("{\n" UNIX_LISTENER("") CLUSTER_OK "}\n");
    ck_assert_str_eq(cfg->listeners[0].unix_path, "/run/sidelb/grpc.sock");
    ck_assert_uint_eq(cfg->listeners[0].unix_mode, 0660);
    ck_assert_int_eq(cfg->listeners[0].unix_gid, -1);
    slb_config_free(cfg);
    cfg = expect_ok("{\n" UNIX_LISTENER(", \"mode\": \"0600\", \"group\": \"root\"") CLUSTER_OK "}\n");
    ck_assert_uint_eq(cfg->listeners[0].unix_mode, 0600);
    ck_assert_int_eq(cfg->listeners[0].unix_gid, 0);
    slb_config_free(cfg);
    cfg = expect_ok("{\n" UNIX_LISTENER(", \"mode\": 438, \"group\": 12345") CLUSTER_OK "}\n");
    ck_assert_uint_eq(cfg->listeners[0].unix_mode, 0666);
    ck_assert_int_eq(cfg->listeners[0].unix_gid, 12345);
    ck_assert_ptr_null(cfg->listeners[1 - 1].routes);
    slb_config_free(cfg);
    cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK "}\n");
    ck_assert_ptr_null(cfg->listeners[0].unix_path);
    slb_config_free(cfg);
}
END_TEST

START_TEST(err_unix_listener)
{
    expect_error("{\n" UNIX_LISTENER(", \"mode\": \"0999\"") CLUSTER_OK "}\n",
                 "t.json:2:91: listeners[0].mode: \"0999\" is not an octal file mode");
    expect_error("{\n" UNIX_LISTENER(", \"mode\": 660") CLUSTER_OK "}\n",
                 "t.json:2:91: listeners[0].mode: 660 is not a file mode in 0..511 (0777)");
    expect_error("{\n" UNIX_LISTENER(", \"group\": \"no-such-group-sidelb\"") CLUSTER_OK "}\n",
                 "t.json:2:92: listeners[0].group: unknown group \"no-such-group-sidelb\"");
    expect_error("{\n  \"listeners\": [{\"address\": \"unix:run/x.sock\"}],\n" CLUSTER_OK "}\n",
                 "t.json:2:29: listeners[0].address: invalid address \"unix:run/x.sock\": the path after unix: must be "
                 "absolute");
    expect_error("{\n  \"listeners\": [{\"address\": \"127.0.0.1:1\", \"mode\": \"0600\"}],\n" CLUSTER_OK "}\n",
                 "t.json:2:17: listeners[0]: \"mode\" and \"group\" apply only to a unix:/path address");
}
END_TEST

START_TEST(static_host_names)
{
    struct slb_config *cfg =
        expect_ok("{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\", \"dns_refresh_ms\": 500, \"discovery\": "
                  "{\"static\": [\"backend-1.example:50051\", {\"address\": \"localhost:1\", \"weight\": 3}]}}]\n}\n");
    ck_assert_str_eq(cfg->clusters[0].static_backends[0].address, "backend-1.example:50051");
    ck_assert_uint_eq(cfg->clusters[0].dns_refresh_ms, 500);
    slb_config_free(cfg);
    cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK "}\n");
    ck_assert_uint_eq(cfg->clusters[0].dns_refresh_ms, 30000);
    slb_config_free(cfg);
    expect_error("{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\", \"dns_refresh_ms\": 50, \"discovery\": "
                 "{\"static\": [\"127.0.0.1:1\"]}}]\n}\n",
                 "t.json:3:48: clusters[0].dns_refresh_ms: 50 is out of range (100..86400000)");
    expect_error("{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [{\"address\": "
                 "\"10.0.0.300:1\"}]}}]\n}\n",
                 "t.json:3:");
}
END_TEST

/* ---- the effective document (admin GET /config): defaults filled in ---- */

/* Every value given in orig is in eff, unchanged (eff may have more keys). */
static int given_kept(json_t *orig, json_t *eff)
{
    const char *key;
    json_t *v;
    if (json_is_object(orig)) {
        if (!json_is_object(eff))
            return 0;
        json_object_foreach(orig, key, v)
        {
            if (!given_kept(v, json_object_get(eff, key)))
                return 0;
        }
        return 1;
    }
    if (json_is_array(orig)) {
        if (!json_is_array(eff) || json_array_size(orig) != json_array_size(eff))
            return 0;
        for (size_t i = 0; i < json_array_size(orig); i++)
            if (!given_kept(json_array_get(orig, i), json_array_get(eff, i)))
                return 0;
        return 1;
    }
    return eff != NULL && json_equal(orig, eff);
}

static json_t *effective_doc(const struct slb_config *cfg)
{
    json_error_t je;
    json_t *doc = json_loads(cfg->redacted_json, 0, &je);
    ck_assert_msg(doc != NULL, "redacted_json: %s", je.text);
    return doc;
}

static json_int_t int_of(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_integer(v), "%s is not an integer", key);
    return json_integer_value(v);
}

START_TEST(effective_minimal_shows_defaults)
{
    struct slb_config *cfg = expect_ok("{\n"
                                       "  \"etcd\": {\"endpoints\": [\"http://127.0.0.1:2379\"], \"username\": \"u\",\n"
                                       "    \"password\": \"s3cret\", \"allow_insecure_password\": true},\n"
                                       "  \"listeners\": [{\"address\": \"127.0.0.1:15001\", \"default_cluster\": "
                                       "\"a\", \"idle_timeout_ms\": 0}],\n"
                                       "  \"clusters\": [{\"name\": \"a\", \"connect_timeout_ms\": 700, "
                                       "\"discovery\": {\"static\": [\"127.0.0.1:1\"]}}]\n"
                                       "}\n");
    json_t *doc = effective_doc(cfg);
    json_t *l = json_array_get(json_object_get(doc, "listeners"), 0);
    json_t *cl = json_array_get(json_object_get(doc, "clusters"), 0);
    json_t *etcd = json_object_get(doc, "etcd"), *bo = json_object_get(cl, "backoff");

    ck_assert_ptr_null(strstr(cfg->redacted_json, "s3cret"));
    ck_assert_str_eq(json_string_value(json_object_get(etcd, "password")), "<redacted>");
    ck_assert_int_eq(int_of(etcd, "dial_timeout_ms"), 2000);
    ck_assert_int_eq(int_of(etcd, "request_timeout_ms"), 5000);
    ck_assert_ptr_null(json_object_get(doc, "log_level")); /* sidelb -l overrides it: not filled in */
    ck_assert_str_eq(json_string_value(json_object_get(doc, "state_dir")), SLB_CONFIG_STATE_DIR_DEFAULT);
    ck_assert_int_eq(int_of(l, "max_concurrent_streams"), 100);
    ck_assert_int_eq(int_of(l, "max_header_list_size"), 16384);
    ck_assert_int_eq(int_of(l, "handshake_timeout_ms"), 10000);
    ck_assert_int_eq(int_of(l, "idle_timeout_ms"), 0); /* given: stays */
    ck_assert_str_eq(json_string_value(json_object_get(l, "name")), "127.0.0.1:15001");
    ck_assert_int_eq(int_of(cl, "connect_timeout_ms"), 700); /* given: stays */
    ck_assert_int_eq(int_of(cl, "max_connections_per_backend"), 8);
    ck_assert_int_eq(int_of(cl, "wait_for_ready_ms"), 3000);
    ck_assert_int_eq(int_of(cl, "max_waiting_calls"), 1000);
    ck_assert_int_eq(int_of(cl, "dns_refresh_ms"), 30000);
    ck_assert_int_eq(int_of(bo, "initial_ms"), 1000);
    ck_assert_double_eq_tol(json_number_value(json_object_get(bo, "multiplier")), 1.6, 1e-9);
    ck_assert_int_eq(int_of(bo, "probe_interval_ms"), 50);
    ck_assert(json_is_object(json_object_get(json_object_get(cl, "policy"), "round_robin")));
    ck_assert_int_eq(int_of(json_object_get(doc, "budgets"), "total_bytes"), 268435456);
    ck_assert_int_eq(int_of(json_object_get(doc, "budgets"), "connection_bytes"), 16777216);
    /* absent means off (or computed at run time): stays absent */
    ck_assert_ptr_null(json_object_get(cl, "tls"));
    ck_assert_ptr_null(json_object_get(cl, "health_check"));
    ck_assert_ptr_null(json_object_get(cl, "outlier_detection"));
    ck_assert_ptr_null(json_object_get(cl, "service_config"));
    ck_assert_ptr_null(json_object_get(l, "tls"));
    ck_assert_ptr_null(json_object_get(doc, "access_log"));
    ck_assert_ptr_null(json_object_get(doc, "metrics"));
    ck_assert_ptr_null(json_object_get(doc, "max_app_connections"));
    ck_assert_ptr_null(json_object_get(doc, "register"));
    /* loading is unchanged: the struct has the same defaults */
    ck_assert_uint_eq(cfg->listeners[0].max_concurrent_streams, 100);
    ck_assert_uint_eq(cfg->clusters[0].connect_timeout_ms, 700);
    ck_assert_uint_eq(cfg->budgets.total_bytes, 256u << 20);
    json_decref(doc);
    slb_config_free(cfg);
    /* a section given (even empty) gets its defaults */
    cfg = expect_ok("{\n" LISTENER_OK "  \"clusters\": [{\"name\": \"a\", \"tls\": {}, \"health_check\": {},\n"
                    "    \"discovery\": {\"static\": [{\"address\": \"127.0.0.1:1\"}]}}]\n}\n");
    doc = effective_doc(cfg);
    cl = json_array_get(json_object_get(doc, "clusters"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(cl, "tls"), "min_version")), "1.2");
    ck_assert_int_eq(int_of(json_object_get(cl, "health_check"), "interval_ms"), 1000);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(cl, "health_check"), "service")), "");
    ck_assert_int_eq(int_of(json_array_get(json_object_get(json_object_get(cl, "discovery"), "static"), 0), "weight"),
                     1);
    json_decref(doc);
    slb_config_free(cfg);
}
END_TEST

/*
 * For a rich document: every given value is kept, the effective document is
 * itself accepted, and filling it again changes nothing (so each filled key is
 * valid where it is put and holds the value the loader used).
 */
static void check_effective_fixpoint(const char *json)
{
    json_error_t je;
    struct slb_config *cfg = expect_ok(json), *again;
    json_t *orig = json_loads(json, 0, &je), *eff = effective_doc(cfg), *eff2, *etcd;
    char *text;

    ck_assert_ptr_nonnull(orig);
    if (json_is_object(etcd = json_object_get(orig, "etcd")) && json_object_get(etcd, "password") != NULL)
        json_object_set_new(etcd, "password", json_string("<redacted>"));
    ck_assert_msg(given_kept(orig, eff), "a given value changed in %s", cfg->redacted_json);
    again = expect_ok(cfg->redacted_json);
    eff2 = effective_doc(again);
    text = json_dumps(eff2, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    ck_assert_msg(json_equal(eff, eff2), "not a fixpoint:\n%s\n---\n%s", cfg->redacted_json, text);
    free(text);
    json_decref(orig);
    json_decref(eff);
    json_decref(eff2);
    slb_config_free(again);
    slb_config_free(cfg);
}

/* "workers": "auto" shows as the number it came to (the loaded config's), a number as given. */
START_TEST(effective_workers_auto_is_its_number)
{
    struct slb_config *cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK ", \"workers\": \"auto\"\n}\n");
    json_t *doc = effective_doc(cfg);

    ck_assert_uint_eq(cfg->workers_auto, 1);
    ck_assert_int_eq(int_of(doc, "workers"), (json_int_t)cfg->workers);
    json_decref(doc);
    slb_config_free(cfg);
    cfg = expect_ok("{\n" LISTENER_OK CLUSTER_OK ", \"workers\": 3\n}\n");
    doc = effective_doc(cfg);
    ck_assert_int_eq(int_of(doc, "workers"), 3);
    json_decref(doc);
    slb_config_free(cfg);
}
END_TEST

START_TEST(effective_fixpoint)
{
    check_effective_fixpoint(full_config);
    check_effective_fixpoint("{\n" LISTENER_OK CLUSTER_OK "}\n");
    check_effective_fixpoint(
        "{\n  \"etcd\": {\"endpoints\": [\"http://127.0.0.1:2379\"]},\n"
        "  \"listeners\": [{\"address\": \"unix:/tmp/sidelb-effective.sock\", \"default_cluster\": \"a\"}],\n"
        "  \"clusters\": [{\"name\": \"a\", \"discovery\": {\"static\": [{\"address\": \"127.0.0.1:1\"}]},\n"
        "    \"policy\": {\"source_ip_hash\": {}}, \"health_check\": {}, \"outlier_detection\": {}, \"tls\": {}},\n"
        "    {\"name\": \"b\", \"discovery\": {\"etcd_prefix\": \"/b/\"}, \"policy\": {\"least_request\": {}}},\n"
        "    {\"name\": \"c\", \"discovery\": {\"etcd_prefix\": \"/c/\"},\n"
        "     \"policy\": {\"round_robin\": {\"slow_start\": {\"window_ms\": 1000}}}}],\n"
        "  \"register\": [{\"prefix\": \"/p/\", \"address\": \"10.0.0.1:1\", \"health_check\": {},\n"
        "    \"tls\": {\"min_version\": \"1.3\"}},\n"
        "    {\"prefix\": \"/q/\", \"address\": \"10.0.0.1:2\", \"format\": \"json\"}],\n"
        "  \"access_log\": {\"path\": \"-\"}, \"state_dir\": \"\", \"log_level\": \"warning\"\n"
        "}\n");
}
END_TEST

Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("load");
    tcase_add_test(tc, test_full);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_example_file);
    tcase_add_test(tc, test_file_errors);
    tcase_add_test(tc, test_helpers);
    suite_add_tcase(s, tc);

    tc = tcase_create("effective");
    tcase_add_test(tc, effective_minimal_shows_defaults);
    tcase_add_test(tc, effective_fixpoint);
    tcase_add_test(tc, effective_workers_auto_is_its_number);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, err_syntax);
    tcase_add_test(tc, err_duplicate_key);
    tcase_add_test(tc, err_root_not_object);
    tcase_add_test(tc, err_unknown_top_key);
    tcase_add_test(tc, test_budgets);
    tcase_add_test(tc, test_state_dir);
    tcase_add_test(tc, test_workers);
    tcase_add_test(tc, err_budgets);
    tcase_add_test(tc, err_unknown_listener_key);
    tcase_add_test(tc, err_missing_listeners);
    tcase_add_test(tc, err_empty_listeners);
    tcase_add_test(tc, err_listener_missing_address);
    tcase_add_test(tc, err_bad_address);
    tcase_add_test(tc, err_wrong_type);
    tcase_add_test(tc, err_out_of_range);
    tcase_add_test(tc, err_header_list_size_out_of_range);
    tcase_add_test(tc, err_real_for_integer);
    tcase_add_test(tc, err_unknown_policy);
    tcase_add_test(tc, err_two_policies);
    tcase_add_test(tc, err_policy_option_not_for_policy);
    tcase_add_test(tc, err_ring_hash_needs_header);
    tcase_add_test(tc, test_hash_on);
    tcase_add_test(tc, err_hash_on);
    tcase_add_test(tc, err_maglev_not_prime);
    tcase_add_test(tc, err_slow_start_window);
    tcase_add_loop_test(tc, err_slow_start_not_for_policy, 0, 4);
    tcase_add_loop_test(tc, ok_slow_start_policies, 0, 5);
    tcase_add_test(tc, err_duplicate_cluster);
    tcase_add_test(tc, err_route_unknown_cluster);
    tcase_add_test(tc, err_default_cluster_unknown);
    tcase_add_test(tc, err_route_missing_cluster);
    tcase_add_test(tc, err_route_bad_service);
    tcase_add_test(tc, err_discovery_both);
    tcase_add_test(tc, err_discovery_neither);
    tcase_add_test(tc, err_etcd_prefix_without_etcd);
    tcase_add_test(tc, err_static_bad_backend);
    tcase_add_test(tc, err_static_weight_zero);
    tcase_add_test(tc, err_etcd_endpoint);
    tcase_add_test(tc, err_etcd_password_without_user);
    tcase_add_test(tc, etcd_password_rules);
    tcase_add_test(tc, err_retry_max_attempts);
    tcase_add_test(tc, err_retry_duration);
    tcase_add_test(tc, err_retry_status_code);
    tcase_add_test(tc, err_retry_multiplier);
    tcase_add_test(tc, err_retry_missing_codes);
    tcase_add_test(tc, err_register_without_etcd);
    tcase_add_test(tc, err_register_missing_prefix);
    tcase_add_test(tc, err_register_ttl);
    tcase_add_test(tc, err_register_format);
    tcase_add_test(tc, err_register_plain_metadata);
    tcase_add_test(tc, err_log_level);
    tcase_add_test(tc, err_admin_unknown_key);
    tcase_add_test(tc, err_connection_limits);
    tcase_add_test(tc, err_backoff_max_below_initial);
    tcase_add_test(tc, err_backoff_probe_interval_too_short);
    tcase_add_test(tc, err_duplicate_listener_address);
    tcase_add_test(tc, unix_listener_mode_group);
    tcase_add_test(tc, err_unix_listener);
    tcase_add_test(tc, static_host_names);
    suite_add_tcase(s, tc);
    return s;
}
