/*
 * The configuration: one JSON file parsed with jansson into an immutable
 * struct slb_config. Every error names the file, line:column and JSON path
 * (e.g. "sidelb.json:12:9: clusters[0].policy: unknown policy \"foo\"");
 * unknown keys are errors.
 *
 * Ownership: slb_config_load*() returns a heap struct owned by the caller and
 * released with slb_config_free(); every string and array in it belongs to it.
 */
#ifndef SLB_CONFIG_H
#define SLB_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "lb.h"
#include "outlier.h"

struct slb_tls_ctx;

/*
 * TLS settings of a cluster (to its backends), a register[] entry (to the
 * local service's health check) or a listener (to apps). enabled: the "tls"
 * object is present. ctx is built at load (certificates and keys read then;
 * a reload builds a new one) and released with the config.
 */
struct slb_config_tls {
    int enabled;
    char *ca_file, *cert_file, *key_file; /* client: CAs (NULL: system store), optional mTLS pair; server: its pair */
    char *server_name;                    /* client: SNI and the name verified; NULL: the backend's host */
    char *client_ca_file;                 /* listener: client certificates required, verified against these */
    int min_version;                      /* 12 or 13 */
    struct slb_tls_ctx *ctx;
};

struct slb_config_route {
    char *service; /* gRPC service ("pkg.Service") taken from :path; "pkg.Service/Method" for one method */
    char *cluster;
    int cluster_index; /* resolved index into config->clusters */
};

struct slb_config_listener {
    char *name;
    char *address; /* "127.0.0.1:15001" */
    struct slb_config_route *routes;
    size_t n_routes;
    char *default_cluster;           /* NULL: unknown service -> UNIMPLEMENTED */
    int default_cluster_index;       /* -1 when none */
    uint32_t max_concurrent_streams; /* advertised to apps, default 100; streams past it are refused */
    uint32_t max_premature_resets;   /* streams an app may reset before their response (rapid reset); 0 = no limit */
    uint32_t max_header_list_size;   /* SETTINGS_MAX_HEADER_LIST_SIZE advertised and enforced, default 16384 */
    uint32_t max_connections;        /* app connections on this listener; 0 = only max_app_connections applies */
    uint32_t handshake_timeout_ms;   /* preface + SETTINGS must arrive within it; 0 = off; default 10000 */
    uint32_t idle_timeout_ms;        /* a connection without streams this long is closed; 0 = off; default 300000 */
    uint32_t stream_idle_timeout_ms; /* a stream without frames either way this long ends; 0 = off; default 300000 */
    struct slb_config_tls tls;       /* apps connect with TLS (server side) */
    /* "unix:/path" listeners (NULL path for IP:port ones) */
    const char *unix_path; /* points into address */
    uint32_t unix_mode;    /* file mode of the socket, default 0660 */
    int64_t unix_gid;      /* group of the socket file; -1 = the process's */
};

struct slb_config_health_check {
    int enabled;
    char *service;        /* grpc.health.v1 service name ("" = whole server) */
    uint32_t interval_ms; /* Check polling interval, default 1000 */
    uint32_t timeout_ms;  /* per Check, default 1000 */
};

struct slb_config_outlier {
    int enabled;
    struct slb_outlier_options opts; /* defaults from slb_outlier_options_default() */
};

struct slb_config_backoff {
    uint32_t initial_ms;             /* 1000 */
    double multiplier;               /* 1.6 */
    double jitter;                   /* 0.2 */
    uint32_t max_ms;                 /* 120000 */
    uint32_t min_connect_timeout_ms; /* 20000 */
    uint32_t probe_interval_ms;      /* 50: early connect attempts while calls wait for a usable backend; 0 = off */
};

struct slb_config_static_backend {
    char *address;
    uint32_t weight;
    char *zone;
};

struct slb_config_cluster {
    char *name;
    /* discovery: exactly one of these */
    struct slb_config_static_backend *static_backends;
    size_t n_static;
    char *etcd_prefix;

    char *policy; /* policy name, default "round_robin" */
    struct slb_lb_options lb;

    uint32_t max_connections_per_backend; /* default 8 */
    uint32_t max_streams_per_connection;  /* cap below the backend's own limit, default 1000 */
    uint32_t stream_window;               /* per-stream flow-control window, default 256 KiB */
    uint32_t keepalive_ms;                /* PING a backend connection with calls after this much silence; 0 = off */
    uint32_t keepalive_timeout_ms;        /* ... and close it when the PING is unanswered this long */
    uint32_t connect_timeout_ms;          /* default 5000 */
    uint32_t max_calls;                   /* calls in flight through the cluster; 0 = no limit (default) */
    uint32_t max_waiting_calls;           /* calls waiting for a usable backend; default 1000 */
    uint32_t max_pending_per_backend;     /* calls waiting in one backend's pool for a stream slot; default 1000 */
    uint32_t queue_timeout_ms;            /* ... and for how long (then tried elsewhere or UNAVAILABLE); 0 = off */
    uint32_t max_requests_per_connection; /* a backend connection is replaced after this many calls; 0 = never */
    uint32_t max_connection_age_ms;       /* ... or after this long (+-10 % jitter); 0 = never */
    uint32_t dns_refresh_ms;              /* host-name backends are looked up again this often; default 30000 */
    uint32_t wait_for_ready_ms; /* a call waits this long for a usable backend (and at most until its deadline); default
                                   3000 */
    struct slb_config_backoff backoff;
    struct slb_config_health_check health_check;
    struct slb_config_outlier outlier;
    char *service_config_json; /* gRPC service config (retryPolicy...), kept as compact JSON; NULL if none */
    struct slb_config_tls tls; /* TLS to the backends (calls and health checks) */
};

struct slb_config_etcd {
    char **endpoints; /* "http://127.0.0.1:2379" */
    size_t n_endpoints;
    uint32_t dial_timeout_ms;             /* default 2000 */
    uint32_t request_timeout_ms;          /* default 5000 */
    char *username, *password;            /* optional auth (password: from "password" or "password_file") */
    char *password_file;                  /* path as configured (before ${CREDENTIALS_DIRECTORY} expansion) */
    int allow_insecure_password;          /* a password may go to http:// endpoints */
    char *ca_file, *cert_file, *key_file; /* optional TLS */
};

enum slb_register_format { SLB_REGISTER_PLAIN = 0, SLB_REGISTER_ETCD_NAMING, SLB_REGISTER_JSON };

struct slb_config_register {
    char *prefix;   /* etcd key prefix; the key is prefix + address */
    char *address;  /* what remote clients dial */
    uint32_t ttl_s; /* default 10 */
    uint32_t weight;
    char *zone;
    char *metadata_json; /* compact JSON object or NULL */
    int format;          /* enum slb_register_format */
    struct slb_config_health_check health_check;
    char *health_address; /* where the local service listens for the check; default = address */

    struct slb_config_tls tls; /* TLS for the health check */
};

/* Buffer budgets and per-turn work (docs/architecture.md, "Buffer budgets"). */
struct slb_config_budgets {
    uint32_t connection_bytes;    /* bytes the calls of one app connection may hold, default 16 MiB */
    uint32_t total_bytes;         /* ... all app connections of the loop together, default 256 MiB */
    uint32_t call_retry_bytes;    /* request bytes one call keeps for a replay or retry (gRFC A6), default 256 KiB */
    uint32_t read_bytes_per_turn; /* bytes one connection may read per loop turn, default 256 KiB; 0 = no limit */
};

/* The access log (lib/access_log.h); off unless "access_log" is given. */
struct slb_config_access_log {
    char *path;                    /* NULL = off; "-" = stderr */
    double sample_rate;            /* share of calls logged, 0..1, default 1 */
    uint32_t max_lines_per_second; /* lines past it in one second are counted, not written; default 10000 */
};

struct slb_config {
    char *path; /* file it came from */
    int log_level;
    struct slb_config_listener *listeners;
    size_t n_listeners;
    struct slb_config_cluster *clusters;
    size_t n_clusters;
    int has_etcd;
    struct slb_config_etcd etcd;
    struct slb_config_register *registers;
    size_t n_registers;
    char *admin_address;          /* NULL = no admin listener */
    uint32_t max_app_connections; /* over all listeners; 0 = derived from RLIMIT_NOFILE (the server's default) */
    struct slb_config_budgets budgets;
    struct slb_config_access_log access_log;
    uint32_t metrics_max_methods; /* "metrics": per-method counters for at most this many methods; 0 = off */
    char *redacted_json;          /* the effective document (defaults filled in), secrets "<redacted>" (GET /config) */
    char *state_dir;              /* where etcd-fed clusters persist their tables (lib/state_file.h); NULL = off */
    uint32_t workers;             /* forwarding loops (threads); 1 = the control loop forwards too (lib/worker.h) */
    uint8_t workers_auto;         /* "workers": "auto" (one per CPU the process may use) */
};

/* Upper bound of "workers". */
#define SLB_MAX_WORKERS 64

#define SLB_CONFIG_STATE_DIR_DEFAULT "/var/lib/sidelb"

/* The defaults of struct slb_config_budgets (also what a loop context starts with). */
void slb_config_budgets_default(struct slb_config_budgets *b);

/*
 * Loads and validates. On error returns NULL and writes one line
 * "FILE:LINE:COL: JSON.PATH: message" into err.
 */
struct slb_config *slb_config_load_file(const char *path, char *err, size_t errlen);
/* Same from a string; `name` stands in for the file name in messages. */
struct slb_config *slb_config_load_string(const char *json, const char *name, char *err, size_t errlen);
void slb_config_free(struct slb_config *cfg);

/* A buffer this size holds any message the loaders write. */
#define SLB_CONFIG_ERRLEN 1024

/* Index of the cluster called `name` in cfg->clusters, or -1. */
int slb_config_cluster_index(const struct slb_config *cfg, const char *name);
/* gRPC status code for a name like "UNAVAILABLE" (0..16), or -1 if unknown. */
int slb_config_grpc_code(const char *name);
/* Parses a protobuf JSON duration ("0.1s", "2s"; up to 9 fraction digits) into
 * milliseconds, rounded up. 0 or SLB_ECONFIG. */
int slb_config_parse_duration(const char *s, uint64_t *ms);

#endif
