#include "resolver.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "h2_conn.h"
#include "log.h"

/* A lookup on the thread pool. Owner: itself (freed in its callback); name is NULL once nobody waits for it. */
struct dns_lookup {
    uv_getaddrinfo_t req;
    struct slb_dns_name *name;
};

static void arm(struct slb_resolver *res);

int slb_resolver_format_addr(const struct sockaddr *sa, uint16_t port, char *out, size_t outlen)
{
    char ip[64];
    int n;

    if (sa->sa_family == AF_INET && uv_ip4_name((const struct sockaddr_in *)sa, ip, sizeof(ip)) == 0)
        n = snprintf(out, outlen, "%s:%u", ip, (unsigned)port);
    else if (sa->sa_family == AF_INET6 && uv_ip6_name((const struct sockaddr_in6 *)sa, ip, sizeof(ip)) == 0)
        n = snprintf(out, outlen, "[%s]:%u", ip, (unsigned)port);
    else
        return SLB_EADDR;
    return n > 0 && (size_t)n < outlen ? 0 : SLB_EADDR;
}

static int addr_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The addresses of one answer, sorted and distinct; *n of them in a malloc'd array (NULL when none or no memory). */
static char (*answer_addrs(const struct slb_dns_name *n, const struct addrinfo *ai, uint32_t *count,
                           uint8_t *truncated))[SLB_BACKEND_NAME_MAX]
{
    char(*v)[SLB_BACKEND_NAME_MAX] = NULL;
    uint32_t k = 0, total = 0;

    for (const struct addrinfo *p = ai; p != NULL; p = p->ai_next)
        total++;
    *truncated = total > SLB_RESOLVER_MAX_ADDRS;
    if (total > SLB_RESOLVER_MAX_ADDRS)
        total = SLB_RESOLVER_MAX_ADDRS;
    if (total == 0 || (v = calloc(total, sizeof(*v))) == NULL) {
        *count = 0;
        return NULL;
    }
    for (const struct addrinfo *p = ai; p != NULL && k < total; p = p->ai_next)
        if (p->ai_addr != NULL && slb_resolver_format_addr(p->ai_addr, n->port, v[k], sizeof(v[k])) == 0)
            k++;
    qsort(v, k, sizeof(*v), addr_cmp);
    uint32_t w = 0;
    for (uint32_t i = 0; i < k; i++)
        if (w == 0 || strcmp(v[w - 1], v[i]) != 0)
            memmove(v[w++], v[i], sizeof(v[i]));
    *count = w;
    if (w == 0) {
        free(v);
        return NULL;
    }
    return v;
}

/* The first lookup of n ended: calls that waited only for it may go on (or fail). */
static void first_answer(struct slb_dns_name *n)
{
    struct slb_resolver *res = n->res;

    if (n->answered)
        return;
    n->answered = 1;
    if (res->n_first_pending > 0)
        res->n_first_pending--;
    if (res->sink.settled != NULL)
        res->sink.settled(res->user);
}

static void apply(struct slb_dns_name *n, int status, const struct addrinfo *ai);

void slb_resolver_apply(struct slb_dns_name *n, int status, const struct addrinfo *ai)
{
    apply(n, status, ai);
    first_answer(n);
}

static void apply(struct slb_dns_name *n, int status, const struct addrinfo *ai)
{
    struct slb_resolver *res = n->res;
    char(*fresh)[SLB_BACKEND_NAME_MAX] = NULL;
    uint32_t nf = 0, i = 0, j = 0, added = 0, removed = 0;
    uint8_t truncated = 0;

    if (status == 0)
        fresh = answer_addrs(n, ai, &nf, &truncated);
    if (nf == 0) {
        res->failures++;
        if (!n->failing) {
            n->failing = 1; /* once per failure streak */
            if (n->resolved)
                slb_warn("cluster %s: cannot resolve %s: %s; keeping its %u previous addresses", res->owner, n->host,
                         status != 0 ? uv_strerror(status) : "no address", n->n_addrs);
            else
                slb_warn("cluster %s: cannot resolve %s: %s; it has no backends until it resolves (tried again "
                         "every %u ms)",
                         res->owner, n->host, status != 0 ? uv_strerror(status) : "no address", res->refresh_ms);
        }
        return;
    }
    if (n->failing)
        slb_notice("cluster %s: %s resolves again", res->owner, n->host);
    n->failing = 0;
    if (truncated)
        slb_warn("cluster %s: %s has more than %d addresses; using the first %d", res->owner, n->host,
                 SLB_RESOLVER_MAX_ADDRS, SLB_RESOLVER_MAX_ADDRS);
    /* both sorted: one merge walk finds what came and what went; the rest is not touched */
    while (i < nf || j < n->n_addrs) {
        int c = i >= nf ? 1 : j >= n->n_addrs ? -1 : strcmp(fresh[i], n->addrs[j]);
        if (c < 0) {
            res->sink.add(res->user, fresh[i++], n->host, n->weight, n->zone, n->drain);
            added++;
        } else if (c > 0) {
            res->sink.del(res->user, n->addrs[j++]);
            removed++;
        } else {
            i++, j++;
        }
    }
    if (added > 0 || removed > 0 || !n->resolved)
        slb_log(n->resolved ? SLB_LOG_NOTICE : SLB_LOG_INFO,
                "cluster %s: %s resolves to %u addresses (%u new, %u gone)", res->owner, n->host, nf, added, removed);
    free(n->addrs);
    n->addrs = fresh;
    n->n_addrs = nf;
    n->resolved = 1;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    struct dns_lookup *lk = slb_container_of(req, struct dns_lookup, req);
    struct slb_dns_name *n = lk->name;

    if (n != NULL) {
        n->lookup = NULL;
        slb_resolver_apply(n, status, ai);
        arm(n->res);
    }
    uv_freeaddrinfo(ai);
    free(lk);
}

static void lookup_start(struct slb_dns_name *n, uint64_t now)
{
    struct slb_resolver *res = n->res;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
    struct dns_lookup *lk = calloc(1, sizeof(*lk));
    int rv;

    n->last_start_ms = now;
    n->due_ms = now + res->refresh_ms;
    if (lk == NULL) {
        slb_warn("cluster %s: out of memory looking up %s; trying again later", res->owner, n->host);
        return;
    }
    lk->name = n;
    n->lookup = lk;
    res->lookups++;
    if ((rv = uv_getaddrinfo(res->loop, &lk->req, on_resolved, n->host, NULL, &hints)) != 0) {
        n->lookup = NULL;
        free(lk);
        slb_resolver_apply(n, rv, NULL);
    }
}

static void on_timer(uv_timer_t *t)
{
    struct slb_resolver *res = slb_container_of(t, struct slb_resolver, timer);
    uint64_t now = uv_now(res->loop);
    struct slb_list *it, *tmp;

    slb_list_foreach_safe(it, tmp, &res->names)
    {
        struct slb_dns_name *n = slb_list_entry(it, struct slb_dns_name, link);
        if (n->lookup == NULL && n->due_ms <= now)
            lookup_start(n, now);
    }
    arm(res);
}

/* The timer at the earliest due lookup (names with a lookup in flight re-arm when it ends). */
static void arm(struct slb_resolver *res)
{
    uint64_t now = uv_now(res->loop), due = UINT64_MAX;
    struct slb_list *it, *tmp;

    slb_list_foreach_safe(it, tmp, &res->names)
    {
        struct slb_dns_name *n = slb_list_entry(it, struct slb_dns_name, link);
        if (n->lookup == NULL && n->due_ms < due)
            due = n->due_ms;
    }
    if (due == UINT64_MAX)
        uv_timer_stop(&res->timer);
    else
        uv_timer_start(&res->timer, on_timer, due > now ? due - now : 0, 0);
}

void slb_resolver_init(struct slb_resolver *res, uv_loop_t *loop, struct slb_conn_ctx *io, uint32_t refresh_ms,
                       const char *owner, const struct slb_resolver_sink *sink, void *user)
{
    memset(res, 0, sizeof(*res));
    res->loop = loop;
    res->io = io;
    res->refresh_ms = refresh_ms ? refresh_ms : 30000;
    res->owner = owner;
    res->sink = *sink;
    res->user = user;
    slb_list_init(&res->names);
    uv_timer_init(loop, &res->timer);
    uv_unref((uv_handle_t *)&res->timer);
    slb_conn_ctx_handle_opened(io);
}

static void name_free(struct slb_dns_name *n)
{
    if (n->lookup != NULL) {
        n->lookup->name = NULL; /* its answer is dropped */
        uv_cancel((uv_req_t *)&n->lookup->req);
    }
    slb_list_remove(&n->link);
    n->res->n_names--;
    if (!n->answered && n->res->n_first_pending > 0)
        n->res->n_first_pending--;
    free(n->addrs);
    free(n);
}

void slb_resolver_dispose(struct slb_resolver *res)
{
    while (!slb_list_empty(&res->names))
        name_free(slb_list_first(&res->names, struct slb_dns_name, link));
    slb_conn_ctx_close_handle(res->io, (uv_handle_t *)&res->timer);
}

struct slb_dns_name *slb_resolver_find(const struct slb_resolver *res, const char *hostport)
{
    struct slb_list *it, *tmp;

    slb_list_foreach_safe(it, tmp, &res->names)
    {
        struct slb_dns_name *n = slb_list_entry(it, struct slb_dns_name, link);
        if (strcmp(n->hostport, hostport) == 0)
            return n;
    }
    return NULL;
}

static void name_set_fields(struct slb_dns_name *n, uint32_t weight, const char *zone, int drain)
{
    n->drain = drain != 0;
    n->weight = weight ? weight : 1;
    snprintf(n->zone, sizeof(n->zone), "%s", zone != NULL ? zone : "");
}

int slb_resolver_add(struct slb_resolver *res, const char *hostport, uint32_t weight, const char *zone, int drain)
{
    struct slb_dns_name *n = slb_resolver_find(res, hostport);

    if (n != NULL) {
        n->refs++;
        slb_resolver_update(res, hostport, weight, zone, drain);
        return 0;
    }
    if (strlen(hostport) >= sizeof(n->hostport))
        return SLB_EADDR;
    if ((n = calloc(1, sizeof(*n))) == NULL)
        return SLB_ENOMEM;
    if (slb_hostport_split(hostport, n->host, sizeof(n->host), &n->port) != 0 || !slb_host_name_valid(n->host)) {
        free(n);
        return SLB_EADDR;
    }
    strcpy(n->hostport, hostport);
    n->res = res;
    n->refs = 1;
    name_set_fields(n, weight, zone, drain);
    n->due_ms = uv_now(res->loop); /* now: on the next loop turn */
    slb_list_push_back(&res->names, &n->link);
    res->n_names++;
    res->n_first_pending++;
    slb_info("cluster %s: looking up %s (every %u ms)", res->owner, n->host, res->refresh_ms);
    arm(res);
    return 0;
}

void slb_resolver_update(struct slb_resolver *res, const char *hostport, uint32_t weight, const char *zone, int drain)
{
    struct slb_dns_name *n = slb_resolver_find(res, hostport);

    if (n == NULL)
        return;
    name_set_fields(n, weight, zone, drain);
    for (uint32_t i = 0; i < n->n_addrs; i++)
        res->sink.update(res->user, n->addrs[i], n->weight, n->zone, n->drain);
}

void slb_resolver_release(struct slb_resolver *res, const char *hostport)
{
    struct slb_dns_name *n = slb_resolver_find(res, hostport);

    if (n == NULL || --n->refs > 0)
        return;
    for (uint32_t i = 0; i < n->n_addrs; i++)
        res->sink.del(res->user, n->addrs[i]);
    slb_info("cluster %s: no longer looking up %s", res->owner, n->host);
    name_free(n);
    arm(res);
}

void slb_resolver_refresh_soon(struct slb_resolver *res, const char *host, const char *addr)
{
    const char *colon = strrchr(addr, ':');
    uint64_t now = uv_now(res->loop);
    struct slb_list *it, *tmp;
    int found = 0;

    if (colon == NULL)
        return;
    slb_list_foreach_safe(it, tmp, &res->names)
    {
        struct slb_dns_name *n = slb_list_entry(it, struct slb_dns_name, link);
        uint64_t soon = n->last_start_ms + SLB_RESOLVER_SOON_MIN_MS;
        if (strcmp(n->host, host) != 0 || (unsigned long)n->port != strtoul(colon + 1, NULL, 10))
            continue;
        if (soon < now)
            soon = now;
        if (soon < n->due_ms) {
            n->due_ms = soon;
            found = 1;
        }
    }
    if (found)
        arm(res);
}

const char *slb_resolver_unresolved(const struct slb_resolver *res)
{
    struct slb_list *it, *tmp;

    slb_list_foreach_safe(it, tmp, (struct slb_list *)&res->names)
    {
        struct slb_dns_name *n = slb_list_entry(it, struct slb_dns_name, link);
        if (n->n_addrs == 0)
            return n->host;
    }
    return NULL;
}

void slb_resolver_seed(struct slb_resolver *res, const struct slb_resolver *prev)
{
    struct slb_list *it, *tmp;

    slb_list_foreach_safe(it, tmp, &res->names)
    {
        struct slb_dns_name *n = slb_list_entry(it, struct slb_dns_name, link);
        const struct slb_dns_name *p = slb_resolver_find(prev, n->hostport);
        if (n->resolved || p == NULL || p->n_addrs == 0 || (n->addrs = calloc(p->n_addrs, sizeof(*n->addrs))) == NULL)
            continue;
        memcpy(n->addrs, p->addrs, p->n_addrs * sizeof(*n->addrs));
        n->n_addrs = p->n_addrs;
        n->resolved = 1;
        n->answered = 1; /* calls need not wait for its lookup */
        res->n_first_pending--;
        for (uint32_t i = 0; i < n->n_addrs; i++)
            res->sink.add(res->user, n->addrs[i], n->host, n->weight, n->zone, n->drain);
        slb_info("cluster %s: %s starts from the %u addresses it had before the reload", res->owner, n->host,
                 n->n_addrs);
    }
}
