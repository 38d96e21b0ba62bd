#include "h2_mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static struct block *free_lists[NCLASSES + 1];
static uint32_t free_counts[NCLASSES + 1];

static unsigned fail_next; /* tests: allocations to fail */

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
    struct block *b;

    if (ptr == NULL)
        return;
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

    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    if ((p = mem_malloc(n * size, ud)) != NULL)
        memset(p, 0, n * size);
    return p;
}

static void *mem_realloc(void *ptr, size_t size, void *ud)
{
    struct block *b;
    size_t cap;
    void *np;

    if (ptr == NULL)
        return mem_malloc(size, ud);
    b = (struct block *)ptr - 1;
    cap = b->cls ? b->cls * CLASS_SIZE : b->u.size;
    if (size <= cap && b->cls != 0)
        return ptr;
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
