#include "backend.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "log.h"
#include "tls.h"

struct slb_backend *slb_backend_new(const char *hostport, uint32_t weight)
{
    struct slb_backend *be;

    if (strlen(hostport) >= SLB_BACKEND_NAME_MAX)
        return NULL;
    if ((be = calloc(1, sizeof(*be))) == NULL)
        return NULL;
    if (slb_parse_addr(hostport, &be->addr, &be->addrlen) != 0) {
        free(be);
        return NULL;
    }
    strcpy(be->name, hostport);
    be->weight = weight ? weight : 1;
    be->index = UINT32_MAX;
    be->refs = 1;
    return be;
}

void slb_backend_ref(struct slb_backend *be)
{
    be->refs++;
}

void slb_backend_unref(struct slb_backend *be)
{
    if (--be->refs > 0)
        return;
    if (be->on_free != NULL)
        be->on_free(be);
    if (be->shared != NULL)
        slb_backend_shared_unref(be->shared);
    free(be->host_name);
    free(be);
}

struct slb_backend_shared *slb_backend_shared_new(void)
{
    struct slb_backend_shared *sh = calloc(1, sizeof(*sh));

    if (sh != NULL)
        sh->refs = 1;
    return sh;
}

void slb_backend_shared_ref(struct slb_backend_shared *sh)
{
    __atomic_add_fetch(&sh->refs, 1, __ATOMIC_RELAXED);
}

void slb_backend_shared_unref(struct slb_backend_shared *sh)
{
    /* acq_rel: the thread that frees it sees every other thread's last use */
    if (__atomic_sub_fetch(&sh->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(sh);
}

const char *slb_backend_state_name(int state)
{
    static const char *const names[] = {"IDLE", "CONNECTING", "READY", "TRANSIENT_FAILURE", "SHUTDOWN"};
    return state >= 0 && state < (int)SLB_ARRAY_SIZE(names) ? names[state] : "?";
}

const char *slb_backend_tls_name(const struct slb_backend *be, char *buf, size_t len)
{
    if (be->host_name != NULL)
        return be->host_name; /* resolved from a host name: the name the certificate carries */
    return slb_tls_host_of(be->name, buf, len);
}

void slb_backend_set_state(struct slb_backend *be, int state)
{
    int old = be->state;

    if (old == state)
        return;
    /* READY <-> CONNECTING flips happen per connection; keep them at INFO. */
    slb_log(state == SLB_BACKEND_TRANSIENT_FAILURE || be->state == SLB_BACKEND_TRANSIENT_FAILURE ? SLB_LOG_NOTICE
                                                                                                 : SLB_LOG_INFO,
            "backend %s: %s -> %s", be->name, slb_backend_state_name(be->state), slb_backend_state_name(state));
    be->state = (uint8_t)state;
    if (be->on_state_change != NULL)
        be->on_state_change(be, old);
}

void slb_backend_set_init(struct slb_backend_set *set)
{
    memset(set, 0, sizeof(*set));
}

void slb_backend_set_dispose(struct slb_backend_set *set)
{
    while (set->n > 0)
        slb_backend_set_remove(set, set->items[set->n - 1]);
    free(set->items);
    memset(set, 0, sizeof(*set));
}

int slb_backend_set_add(struct slb_backend_set *set, struct slb_backend *be)
{
    if (set->n == set->cap) {
        uint32_t cap = set->cap ? set->cap * 2 : 8;
        struct slb_backend **items = realloc(set->items, cap * sizeof(*items));
        if (items == NULL)
            return SLB_ENOMEM;
        set->items = items;
        set->cap = cap;
    }
    be->index = set->n;
    set->items[set->n++] = be;
    slb_backend_ref(be);
    set->version++;
    return 0;
}

void slb_backend_set_remove(struct slb_backend_set *set, struct slb_backend *be)
{
    uint32_t i = be->index;

    if (i >= set->n || set->items[i] != be)
        return;
    set->items[i] = set->items[--set->n];
    set->items[i]->index = i;
    be->index = UINT32_MAX;
    set->version++;
    slb_backend_unref(be);
}
