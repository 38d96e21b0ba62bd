/*
 * etcd v3 client over the JSON gateway of etcd 3.4 (POST /v3/...), driven
 * by libcurl on the libuv loop (curl_uv.h). Keys and values are base64 on
 * the wire and plain bytes here; int64 fields travel as strings.
 *
 * Endpoints: requests go to the current endpoint; a connection failure or
 * timeout moves every request to the next one (failover), each unary request
 * trying each endpoint at most once. Optional username/password auth (token
 * in the Authorization header, re-authenticated once when rejected) and TLS
 * (CA, client cert/key) come from struct slb_config_etcd.
 *
 * Callbacks never fire before the starting call returns, and a function
 * that returns an error never calls its callback. Do not free the client
 * from inside one of its callbacks.
 *
 * Ownership: struct slb_etcd belongs to its creator (the daemon), which
 * frees it after its users (discovery, registrar). Result structs passed to
 * callbacks are valid during the callback only.
 */
#ifndef SLB_ETCD_H
#define SLB_ETCD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

#define SLB_ETCD_MAX_RESPONSE  (64u << 20) /* a range or any unary answer */
#define SLB_ETCD_MAX_WATCH_MSG (4u << 20)  /* one message of a watch stream */

struct slb_etcd;
struct slb_etcd_watch;

/* Kinds of failure (sidelb_etcd_errors_total{kind}). */
enum slb_etcd_error_kind {
    SLB_ETCD_ERR_TRANSPORT = 0, /* no answer: connect, TLS, timeout, a watch stream that broke */
    SLB_ETCD_ERR_ETCD,          /* etcd answered with an error (permissions, auth, a canceled watch, ...) */
    SLB_ETCD_ERR_PROTOCOL,      /* the answer was not what the gateway sends (garbage, too large) */
    SLB_ETCD_ERR_KINDS,
};

/* Counted by the client, read by /metrics. Owner: the etcd client. */
struct slb_etcd_stats {
    uint64_t last_ok_ms;                 /* uv_now() of the last answer from etcd; 0 = none yet */
    uint64_t events;                     /* watch events delivered to the watchers */
    uint64_t errors[SLB_ETCD_ERR_KINDS]; /* by enum slb_etcd_error_kind */
};

struct slb_etcd_kv {
    char *key; /* NUL-terminated (keys and values may hold other NULs; use the lengths) */
    size_t key_len;
    char *value; /* "" for a DELETE event */
    size_t value_len;
    int64_t create_revision, mod_revision, version, lease;
};

struct slb_etcd_range_result {
    int64_t revision; /* header.revision: the store revision the answer reflects */
    struct slb_etcd_kv *kvs;
    size_t n;
};

enum slb_etcd_event_type { SLB_ETCD_PUT = 0, SLB_ETCD_DELETE = 1 };

struct slb_etcd_event {
    int type; /* enum slb_etcd_event_type */
    struct slb_etcd_kv kv;
};

/* err: 0; UV_ECONNREFUSED/UV_ETIMEDOUT/UV_EIO (no endpoint answered); SLB_ENOTFOUND
 * (etcd code 5, e.g. lease not found); SLB_EETCD (other etcd errors); SLB_EPROTO (bad answer); SLB_ELIMIT. */
typedef void (*slb_etcd_range_cb)(void *user, int err, const struct slb_etcd_range_result *res);
/* put/delete/revoke: revision = header.revision; deleted = number of keys deleted (deleterange). */
typedef void (*slb_etcd_done_cb)(void *user, int err, int64_t revision, int64_t deleted);
/* grant/keepalive: the lease and its TTL; keepalive of an expired/revoked lease gives SLB_ENOTFOUND. */
typedef void (*slb_etcd_lease_cb)(void *user, int err, int64_t id, int64_t ttl);

/*
 * Copies what it needs from cfg (at least one endpoint "http(s)://host:port").
 * 0, SLB_ECONFIG, SLB_ENOMEM or a UV_E*.
 */
int slb_etcd_new(uv_loop_t *loop, const struct slb_config_etcd *cfg, struct slb_etcd **out);
/* Cancels every request without its callback and stops every watch; handles close asynchronously. */
void slb_etcd_free(struct slb_etcd *etcd);
/* The endpoint requests currently go to. */
const char *slb_etcd_endpoint(const struct slb_etcd *etcd);
const struct slb_etcd_stats *slb_etcd_stats(const struct slb_etcd *etcd);

/* Range of one key, or of every key under it when prefix != 0. 0 or SLB_ENOMEM. */
int slb_etcd_range(struct slb_etcd *etcd, const char *key, size_t key_len, int prefix, slb_etcd_range_cb cb,
                   void *user);
/* lease 0 = none. 0 or SLB_ENOMEM. */
int slb_etcd_put(struct slb_etcd *etcd, const char *key, size_t key_len, const char *value, size_t value_len,
                 int64_t lease, slb_etcd_done_cb cb, void *user);
/*
 * Put only if the key's mod_revision is still mod_revision (0: the key does
 * not exist), as one etcd transaction: a read-modify-write that never
 * overwrites a change made after the read. cb gets SLB_ECONFLICT when the
 * key changed (nothing was written). 0 or SLB_ENOMEM.
 */
int slb_etcd_put_if_unchanged(struct slb_etcd *etcd, const char *key, size_t key_len, const char *value,
                              size_t value_len, int64_t lease, int64_t mod_revision, slb_etcd_done_cb cb, void *user);
int slb_etcd_delete(struct slb_etcd *etcd, const char *key, size_t key_len, int prefix, slb_etcd_done_cb cb,
                    void *user);
int slb_etcd_lease_grant(struct slb_etcd *etcd, int64_t ttl_s, slb_etcd_lease_cb cb, void *user);
/* One POST per keepalive. */
int slb_etcd_lease_keepalive(struct slb_etcd *etcd, int64_t id, slb_etcd_lease_cb cb, void *user);
int slb_etcd_lease_revoke(struct slb_etcd *etcd, int64_t id, slb_etcd_done_cb cb, void *user);
/* Compacts the key space up to revision (tests and tools). */
int slb_etcd_compact(struct slb_etcd *etcd, int64_t revision, slb_etcd_done_cb cb, void *user);

/*
 * A prefix watch that never gives up: lists the prefix (reset), then watches
 * from the listed revision + 1 with progress notifications (events). On a
 * broken or silent stream, garbage or an error it reconnects with exponential
 * backoff and jitter (100 ms -> 1 s), failing over to the next endpoint and
 * resuming from the last revision seen; when the resume point is compacted it
 * lists again (a new reset). connected reports reachability once per change.
 */
struct slb_etcd_watch_cbs {
    /* The whole state under the prefix (first list, and after a compaction). */
    void (*reset)(void *user, const struct slb_etcd_range_result *snapshot);
    /* Changes in revision order; revision = that of the message. */
    void (*events)(void *user, int64_t revision, const struct slb_etcd_event *ev, size_t n);
    /* Optional: 1 when the watch is established, 0 when it broke. */
    void (*state)(void *user, int connected);
};

/* 0 or SLB_ENOMEM/UV_E*. The watch is owned by the caller and ended with slb_etcd_watch_stop(). */
int slb_etcd_watch_start(struct slb_etcd *etcd, const char *prefix, size_t prefix_len,
                         const struct slb_etcd_watch_cbs *cbs, void *user, struct slb_etcd_watch **out);
/* No callback fires after this; may be called from the watch's own callbacks. */
void slb_etcd_watch_stop(struct slb_etcd_watch *w);
/* The revision up to which the watcher has delivered everything. */
int64_t slb_etcd_watch_revision(const struct slb_etcd_watch *w);

/* prefix -> range_end (prefix with its last byte + 1, dropping trailing 0xff bytes); "\0" when
 * the prefix is empty or all 0xff (every key). Returns the length written; out holds len bytes. */
size_t slb_etcd_prefix_end(const char *prefix, size_t len, char *out);

#endif
