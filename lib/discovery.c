#include "discovery.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "log.h"

/* One key of the map; owned by the discovery. */
struct entry {
    struct entry *next; /* hash chain */
    uint64_t hash;
    uint64_t gen; /* last re-list that saw it */
    struct slb_etcd_endpoint ep;
    char key[]; /* NUL-terminated */
};

/* Owned by its cluster (see discovery.h). */
struct slb_discovery {
    struct slb_etcd_watch *watch; /* NULL when detached */
    char *prefix;
    struct slb_discovery_sink sink;
    void *user;
    struct entry **buckets;
    size_t nbuckets, n;
    uint64_t gen;
    int synced;
    int64_t revision; /* of the last listing or event applied */
};

static uint64_t hash_key(const char *k, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    return h;
}

static struct entry **find_slot(const struct slb_discovery *d, const char *key, size_t len, uint64_t h)
{
    struct entry **pp = &d->buckets[h & (d->nbuckets - 1)];
    for (; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->hash == h && strncmp((*pp)->key, key, len) == 0 && (*pp)->key[len] == '\0')
            return pp;
    return pp;
}

static void grow(struct slb_discovery *d)
{
    size_t nb = d->nbuckets * 2;
    struct entry **b = calloc(nb, sizeof(*b));

    if (b == NULL)
        return; /* keep the longer chains */
    for (size_t i = 0; i < d->nbuckets; i++) {
        struct entry *e = d->buckets[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(d->buckets);
    d->buckets = b;
    d->nbuckets = nb;
}

static void remove_key(struct slb_discovery *d, const char *key, size_t len)
{
    uint64_t h = hash_key(key, len);
    struct entry **pp = find_slot(d, key, len, h), *e = *pp;

    if (e == NULL)
        return;
    *pp = e->next;
    d->n--;
    d->sink.remove(d->user, e->key, &e->ep);
    slb_etcd_endpoint_dispose(&e->ep);
    free(e);
}

static void put_endpoint(struct slb_discovery *d, const char *key, size_t key_len, struct slb_etcd_endpoint *epp);

/* Applies one key's value: upsert if new or changed, remove for a naming delete, skip if malformed. */
static void apply_put(struct slb_discovery *d, const struct slb_etcd_kv *kv)
{
    struct slb_etcd_endpoint ep;
    char err[384];
    int rc;

    if (strlen(kv->key) != kv->key_len) {
        slb_warn("etcd prefix %s: skipping a key with a NUL byte", d->prefix);
        return;
    }
    rc = slb_etcd_value_parse(kv->key, kv->value, kv->value_len, &ep, err, sizeof(err));
    if (rc < 0) {
        slb_warn("%s; skipped", err);
        /* keep an existing entry for this key: a bad write must not take a backend away */
        uint64_t h = hash_key(kv->key, kv->key_len);
        struct entry *e = *find_slot(d, kv->key, kv->key_len, h);
        if (e != NULL)
            e->gen = d->gen;
        return;
    }
    if (rc == 1) {
        slb_etcd_endpoint_dispose(&ep);
        remove_key(d, kv->key, kv->key_len);
        return;
    }
    put_endpoint(d, kv->key, kv->key_len, &ep);
}

/* Sets key's endpoint (takes ep over): upsert if new or changed, nothing if equal. */
static void put_endpoint(struct slb_discovery *d, const char *key, size_t key_len, struct slb_etcd_endpoint *epp)
{
    struct slb_etcd_endpoint ep = *epp;
    uint64_t h = hash_key(key, key_len);
    struct entry **pp = find_slot(d, key, key_len, h), *e = *pp;

    if (e != NULL) {
        e->gen = d->gen;
        if (slb_etcd_endpoint_equal(&e->ep, &ep)) {
            slb_etcd_endpoint_dispose(&ep);
            return;
        }
        struct slb_etcd_endpoint old = e->ep;
        e->ep = ep;
        d->sink.upsert(d->user, e->key, &e->ep, &old);
        slb_etcd_endpoint_dispose(&old);
        return;
    }
    if ((e = malloc(sizeof(*e) + key_len + 1)) == NULL) {
        slb_error("etcd prefix %s: out of memory adding %s", d->prefix, key);
        slb_etcd_endpoint_dispose(&ep);
        return;
    }
    memcpy(e->key, key, key_len);
    e->key[key_len] = '\0';
    e->hash = h;
    e->gen = d->gen;
    e->ep = ep;
    e->next = NULL;
    *pp = e;
    d->n++;
    d->sink.upsert(d->user, e->key, &e->ep, NULL);
    if (d->n > d->nbuckets)
        grow(d);
}

void slb_discovery_apply_reset(struct slb_discovery *d, const struct slb_etcd_range_result *snap)
{
    size_t i;

    d->gen++;
    for (i = 0; i < snap->n; i++)
        apply_put(d, &snap->kvs[i]);
    /* sweep: whatever the listing did not see is gone */
    for (i = 0; i < d->nbuckets; i++) {
        struct entry **pp = &d->buckets[i];
        while (*pp != NULL) {
            struct entry *e = *pp;
            if (e->gen == d->gen) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            d->n--;
            d->sink.remove(d->user, e->key, &e->ep);
            slb_etcd_endpoint_dispose(&e->ep);
            free(e);
        }
    }
    if (!d->synced)
        slb_info("etcd prefix %s: %zu endpoints at revision %lld", d->prefix, d->n, (long long)snap->revision);
    d->synced = 1;
    d->revision = snap->revision;
    if (d->sink.listed != NULL)
        d->sink.listed(d->user, snap->revision);
}

void slb_discovery_apply_events(struct slb_discovery *d, const struct slb_etcd_event *ev, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ev[i].type == SLB_ETCD_DELETE)
            remove_key(d, ev[i].kv.key, ev[i].kv.key_len);
        else
            apply_put(d, &ev[i].kv);
    }
}

static void on_reset(void *user, const struct slb_etcd_range_result *snap)
{
    slb_discovery_apply_reset(user, snap);
}

static void on_events(void *user, int64_t revision, const struct slb_etcd_event *ev, size_t n)
{
    struct slb_discovery *d = user;

    slb_discovery_apply_events(d, ev, n);
    if (revision > d->revision)
        d->revision = revision;
}

static void on_state(void *user, int connected)
{
    struct slb_discovery *d = user;
    if (d->sink.state != NULL)
        d->sink.state(d->user, connected);
}

int slb_discovery_new_detached(const char *prefix, const struct slb_discovery_sink *sink, void *user,
                               struct slb_discovery **out)
{
    struct slb_discovery *d = calloc(1, sizeof(*d));

    if (d == NULL)
        return SLB_ENOMEM;
    d->sink = *sink;
    d->user = user;
    d->nbuckets = 64;
    if ((d->prefix = strdup(prefix)) == NULL || (d->buckets = calloc(d->nbuckets, sizeof(*d->buckets))) == NULL) {
        free(d->prefix);
        free(d);
        return SLB_ENOMEM;
    }
    *out = d;
    return 0;
}

int slb_discovery_new(struct slb_etcd *etcd, const char *prefix, const struct slb_discovery_sink *sink, void *user,
                      struct slb_discovery **out)
{
    static const struct slb_etcd_watch_cbs cbs = {on_reset, on_events, on_state};
    struct slb_discovery *d;
    int err;

    if ((err = slb_discovery_new_detached(prefix, sink, user, &d)) != 0)
        return err;
    if ((err = slb_etcd_watch_start(etcd, prefix, strlen(prefix), &cbs, d, &d->watch)) != 0) {
        slb_discovery_free(d);
        return err;
    }
    *out = d;
    return 0;
}

void slb_discovery_free(struct slb_discovery *d)
{
    if (d == NULL)
        return;
    if (d->watch != NULL)
        slb_etcd_watch_stop(d->watch);
    for (size_t i = 0; i < d->nbuckets; i++) {
        struct entry *e = d->buckets[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            slb_etcd_endpoint_dispose(&e->ep);
            free(e);
        }
    }
    free(d->buckets);
    free(d->prefix);
    free(d);
}

size_t slb_discovery_size(const struct slb_discovery *d)
{
    return d->n;
}

const struct slb_etcd_endpoint *slb_discovery_get(const struct slb_discovery *d, const char *key)
{
    size_t len = strlen(key);
    struct entry *e = *find_slot(d, key, len, hash_key(key, len));
    return e ? &e->ep : NULL;
}

int64_t slb_discovery_revision(const struct slb_discovery *d)
{
    return d->watch != NULL ? slb_etcd_watch_revision(d->watch) : 0;
}

int slb_discovery_synced(const struct slb_discovery *d)
{
    return d->synced;
}

void slb_discovery_preload(struct slb_discovery *d, const struct slb_state_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        struct slb_etcd_endpoint ep;
        if (slb_etcd_endpoint_copy(&ep, &t->entries[i].ep) != 0) {
            slb_error("etcd prefix %s: out of memory preloading %s", d->prefix, t->entries[i].key);
            continue;
        }
        put_endpoint(d, t->entries[i].key, strlen(t->entries[i].key), &ep);
    }
}

int slb_discovery_snapshot(const struct slb_discovery *d, struct slb_state_table *out)
{
    size_t k = 0;

    memset(out, 0, sizeof(*out));
    out->revision = d->revision;
    if ((out->prefix = strdup(d->prefix)) == NULL ||
        (d->n > 0 && (out->entries = calloc(d->n, sizeof(*out->entries))) == NULL))
        goto fail;
    for (size_t i = 0; i < d->nbuckets; i++) {
        for (const struct entry *e = d->buckets[i]; e != NULL; e = e->next, k++) {
            if ((out->entries[k].key = strdup(e->key)) == NULL)
                goto fail;
            if (slb_etcd_endpoint_copy(&out->entries[k].ep, &e->ep) != 0) {
                free(out->entries[k].key);
                goto fail;
            }
            out->n++;
        }
    }
    return 0;
fail:
    slb_state_table_dispose(out);
    return SLB_ENOMEM;
}
