/*
 * The persisted backend table of one etcd-fed cluster (state_dir): the
 * format, strict validation, and an atomic write (temp file, fsync, rename,
 * fsync of the directory). A restart during an etcd outage starts from the
 * last table etcd gave instead of an empty cluster.
 *
 * One file per cluster, STATE_DIR/cluster-NAME.json, NAME with every byte
 * outside [A-Za-z0-9_-] (and '.') written as %XX, so any cluster name is one
 * safe file name:
 *
 *   {"format": 1, "cluster": "echo", "prefix": "/grpclb/echo/",
 *    "revision": 42, "written_unix_ms": 1790000000000,
 *    "endpoints": [{"key": "/grpclb/echo/10.0.0.1:50051",
 *                   "value": {"addr": "10.0.0.1:50051", "weight": 2}}]}
 *
 * Each "value" is the endpoint in the "json" etcd value format
 * (lib/etcd_value.h), read back with the same parser as values from etcd, so
 * every field the cluster uses survives and is validated alike.
 *
 * Pure functions apart from slb_state_file_read/_write (blocking file I/O,
 * small files; the cluster writes at most once per second).
 */
#ifndef SLB_STATE_FILE_H
#define SLB_STATE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "etcd_value.h"

#define SLB_STATE_FILE_FORMAT 1
#define SLB_STATE_FILE_MAX    (64u << 20) /* a larger file is refused as corrupt */

/* Owner: whoever filled it (slb_state_table_dispose). */
struct slb_state_entry {
    char *key; /* the etcd key */
    struct slb_etcd_endpoint ep;
};

/* Owner: whoever filled it (slb_state_table_dispose). */
struct slb_state_table {
    char *prefix;            /* the cluster's etcd_prefix it came from */
    int64_t revision;        /* etcd revision of the table */
    int64_t written_unix_ms; /* when the table was known to match etcd */
    struct slb_state_entry *entries;
    size_t n;
};

/* The file's text (malloc'd, NUL-terminated), or NULL (out of memory). */
char *slb_state_table_format(const char *cluster, const struct slb_state_table *t);
/*
 * Parses and validates text (len bytes) as cluster's table; unknown fields,
 * duplicate keys, keys outside the prefix and bad values are errors. Returns
 * 0 (t filled; dispose it) or SLB_EPROTO / SLB_ENOMEM with one line in err.
 */
int slb_state_table_parse(const char *cluster, const char *text, size_t len, struct slb_state_table *t, char *err,
                          size_t errlen);
void slb_state_table_dispose(struct slb_state_table *t);

/* dir/cluster-ENCODED.json into out. 0, or SLB_ELIMIT when it does not fit. */
int slb_state_file_path(const char *dir, const char *cluster, char *out, size_t outlen);
/*
 * Writes t atomically: a reader sees the old file or the new one, never a
 * part. 0, or < 0 with one line naming the file and the reason in err.
 */
int slb_state_file_write(const char *dir, const char *cluster, const struct slb_state_table *t, char *err,
                         size_t errlen);
/* Reads and validates. 0 (t filled), SLB_ENOTFOUND (no file), or < 0 with one line in err. */
int slb_state_file_read(const char *dir, const char *cluster, struct slb_state_table *t, char *err, size_t errlen);

/* Wall-clock milliseconds since the epoch. */
int64_t slb_unix_ms(void);

#endif
