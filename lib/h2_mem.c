#include "h2_mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

#define CLASS_SIZE     16
#define NCLASSES       (SLB_H2_MEM_MAX / CLASS_SIZE)
#define KEEP_PER_CLASS 4096 /* idle blocks kept per class */

/* Each block starts with this header; it keeps the payload 16-byte aligned. */
struct block {
    union {
        struct block *next; /* while free */
        size_t size;        /* while in use: requested size (large blocks) */
    } u;
    uint32_t cls; /* 0: a large block from malloc */
    uint32_t pad;
};

static _Thread_local struct block *free_lists[NCLASSES + 1];
static _Thread_local uint32_t free_counts[NCLASSES + 1];

static _Thread_local unsigned fail_next; /* tests: allocations to fail */

/* ---- page slots: blocks of 1..5 pages, each class in its part of one reserved region ---- */

#define PAGE      4096
#define N_SLOTCLS (SLB_H2_MEM_PAGES_MAX / PAGE)

/* Slots per class: frame buffers (5 pages) and stream maps (1 page) are one per session. */
static const uint32_t class_slots[N_SLOTCLS] = {32768, 4096, 4096, 4096, 32768};

struct slot_class {
    uint8_t *base;   /* its part of the region */
    uint32_t pages;  /* slot size */
    uint32_t nslots; /* capacity */
    uint32_t bumped; /* slots handed out at least once: [0, bumped) */
    uint32_t cap;    /* length of free[] and serial[] */
    uint32_t nfree, in_use;
    uint32_t *free;   /* stack of free slot indices */
    uint64_t *serial; /* per slot: the allocation holding it, 0 when free */
};

static _Thread_local struct slot_class slot_cls[N_SLOTCLS];
static _Thread_local uint8_t *region, *region_end;
static _Thread_local int region_state; /* 0: not tried, 1: reserved, -1: could not reserve (malloc only) */
static _Thread_local uint64_t next_serial = 1;
static _Thread_local struct slb_h2_mem_capture *capturing;

static void region_init(void)
{
    size_t total = 0;

    for (size_t i = 0; i < N_SLOTCLS; i++)
        total += (size_t)class_slots[i] * (i + 1) * PAGE;
    /* Virtual space only: pages become resident when written. */
    region = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) {
        region = NULL;
        region_state = -1;
        return;
    }
    region_end = region + total;
    for (size_t i = 0, off = 0; i < N_SLOTCLS; i++) {
        slot_cls[i].base = region + off;
        slot_cls[i].pages = (uint32_t)(i + 1);
        slot_cls[i].nslots = class_slots[i];
        off += (size_t)class_slots[i] * (i + 1) * PAGE;
    }
    region_state = 1;
}

/* The class and index of a slot block, or NULL when p is not one. */
static struct slot_class *slot_of(const void *p, uint32_t *idx)
{
    const uint8_t *q = p;

    if (region == NULL || q < region || q >= region_end)
        return NULL;
    for (size_t i = N_SLOTCLS; i-- > 0;)
        if (q >= slot_cls[i].base) {
            *idx = (uint32_t)((size_t)(q - slot_cls[i].base) / ((size_t)slot_cls[i].pages * PAGE));
            return &slot_cls[i];
        }
    return NULL;
}

static void *slot_alloc(size_t size)
{
    struct slot_class *sc;
    uint32_t i;
    void *p;

    if (region_state == 0)
        region_init();
    if (region_state < 0)
        return NULL;
    sc = &slot_cls[(size + PAGE - 1) / PAGE - 1];
    if (sc->nfree > 0) {
        i = sc->free[--sc->nfree];
    } else if (sc->bumped < sc->nslots) {
        if (sc->bumped == sc->cap) {
            uint32_t ncap = sc->cap ? sc->cap * 2 : 256;
            uint32_t *nf = realloc(sc->free, ncap * sizeof(*nf));
            uint64_t *ns;
            if (nf == NULL)
                return NULL;
            sc->free = nf;
            if ((ns = realloc(sc->serial, ncap * sizeof(*ns))) == NULL)
                return NULL;
            sc->serial = ns;
            sc->cap = ncap;
        }
        i = sc->bumped++;
    } else {
        return NULL; /* full: malloc takes it */
    }
    sc->serial[i] = next_serial++;
    sc->in_use++;
    p = sc->base + (size_t)i * sc->pages * PAGE;
    if (capturing != NULL && capturing->n < SLB_ARRAY_SIZE(capturing->p)) {
        capturing->p[capturing->n] = p;
        capturing->serial[capturing->n] = sc->serial[i];
        capturing->size[capturing->n] = (uint32_t)size;
        capturing->n++;
    }
    return p;
}

/* A freed slot reads as zeros again and holds no memory. */
static void slot_free(struct slot_class *sc, uint32_t i)
{
    madvise(sc->base + (size_t)i * sc->pages * PAGE, (size_t)sc->pages * PAGE, MADV_DONTNEED);
    sc->serial[i] = 0;
    sc->free[sc->nfree++] = i;
    sc->in_use--;
}

void slb_h2_mem_capture_begin(struct slb_h2_mem_capture *cap)
{
    memset(cap, 0, sizeof(*cap));
    capturing = cap;
}

void slb_h2_mem_capture_end(void)
{
    capturing = NULL;
}

int slb_h2_mem_release(const struct slb_h2_mem_capture *cap, unsigned k, int content_unused)
{
    struct slot_class *sc;
    uint32_t i;
    size_t len;
    const uint8_t *p;

    if (k >= cap->n || (sc = slot_of(cap->p[k], &i)) == NULL || i >= sc->bumped || sc->serial[i] != cap->serial[k])
        return 0; /* freed since (maybe another session's now) */
    p = cap->p[k];
    len = (size_t)sc->pages * PAGE;
    if (!content_unused)
        for (size_t j = 0; j < cap->size[k]; j++)
            if (p[j] != 0)
                return 0;
    madvise(cap->p[k], len, MADV_DONTNEED);
    return 1;
}

size_t slb_h2_mem_slot_bytes(void)
{
    size_t n = 0;

    for (size_t i = 0; i < N_SLOTCLS; i++)
        n += (size_t)slot_cls[i].in_use * slot_cls[i].pages * PAGE;
    return n;
}

void slb_h2_mem_fail_next(unsigned n)
{
    fail_next = n;
}

static void *mem_malloc(size_t size, void *ud)
{
    size_t cls = (size + CLASS_SIZE - 1) / CLASS_SIZE;
    struct block *b;

    if (SLB_UNLIKELY(fail_next > 0)) {
        fail_next--;
        return NULL;
    }
    if (cls == 0)
        cls = 1;
    if (size >= PAGE && size <= SLB_H2_MEM_PAGES_MAX && (b = slot_alloc(size)) != NULL)
        return b; /* no header: the address says what it is */
    if (cls > NCLASSES) {
        if ((b = malloc(sizeof(*b) + size)) == NULL)
            return NULL;
        b->cls = 0;
        b->u.size = size;
        return b + 1;
    }
    if ((b = free_lists[cls]) != NULL) {
        free_lists[cls] = b->u.next;
        free_counts[cls]--;
    } else if ((b = malloc(sizeof(*b) + cls * CLASS_SIZE)) == NULL) {
        return NULL;
    }
    b->cls = (uint32_t)cls;
    return b + 1;
}

static void mem_free(void *ptr, void *ud)
{
    struct slot_class *sc;
    struct block *b;
    uint32_t i;

    if (ptr == NULL)
        return;
    if ((sc = slot_of(ptr, &i)) != NULL) {
        slot_free(sc, i);
        return;
    }
    b = (struct block *)ptr - 1;
    if (b->cls == 0 || free_counts[b->cls] >= KEEP_PER_CLASS) {
        free(b);
        return;
    }
    b->u.next = free_lists[b->cls];
    free_lists[b->cls] = b;
    free_counts[b->cls]++;
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
    void *p;

    uint32_t i;

    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    if ((p = mem_malloc(n * size, ud)) != NULL && slot_of(p, &i) == NULL)
        memset(p, 0, n * size); /* a slot is zero already: its pages stay untouched */
    return p;
}

static void *mem_realloc(void *ptr, size_t size, void *ud)
{
    struct slot_class *sc;
    struct block *b;
    size_t cap;
    uint32_t i;
    void *np;

    if (ptr == NULL)
        return mem_malloc(size, ud);
    if ((sc = slot_of(ptr, &i)) != NULL) {
        cap = (size_t)sc->pages * PAGE;
        if (size <= cap)
            return ptr;
    } else {
        b = (struct block *)ptr - 1;
        cap = b->cls ? b->cls * CLASS_SIZE : b->u.size;
        if (size <= cap && b->cls != 0)
            return ptr;
    }
    if ((np = mem_malloc(size, ud)) == NULL)
        return NULL;
    memcpy(np, ptr, cap < size ? cap : size);
    mem_free(ptr, ud);
    return np;
}

static nghttp2_mem h2_mem = {NULL, mem_malloc, mem_free, mem_calloc, mem_realloc};

nghttp2_mem *slb_h2_mem(void)
{
    return &h2_mem;
}

void slb_h2_mem_thread_end(void)
{
    size_t total = (size_t)(region_end - region);

    slb_h2_mem_drain();
    if (region_state != 1)
        return;
    for (size_t i = 0; i < N_SLOTCLS; i++)
        if (slot_cls[i].in_use > 0)
            return; /* still in use: kept (never the case when a worker's loop has ended) */
    munmap(region, total);
    for (size_t i = 0; i < N_SLOTCLS; i++) {
        free(slot_cls[i].free);
        free(slot_cls[i].serial);
    }
    memset(slot_cls, 0, sizeof(slot_cls));
    region = region_end = NULL;
    region_state = 0;
}

void slb_h2_mem_drain(void)
{
    for (size_t i = 0; i <= NCLASSES; i++) {
        while (free_lists[i] != NULL) {
            struct block *b = free_lists[i];
            free_lists[i] = b->u.next;
            free(b);
        }
        free_counts[i] = 0;
    }
}
