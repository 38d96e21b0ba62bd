#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* One pool per thread (each worker loop has its own), so it needs no lock.
 * Keeping up to POOL_MAX idle chunks (16 MiB) bounds what an idle loop holds. */
#define POOL_MAX 1024
static _Thread_local struct slb_chunk *pool_head;
static _Thread_local unsigned pool_len;

struct slb_chunk *slb_chunk_get(void)
{
    struct slb_chunk *c = pool_head;

    if (c != NULL) {
        pool_head = c->next;
        pool_len--;
    } else if ((c = malloc(sizeof(*c))) == NULL) {
        return NULL;
    }
    c->next = NULL;
    c->start = c->end = 0;
    return c;
}

void slb_chunk_put(struct slb_chunk *c)
{
    if (pool_len >= POOL_MAX) {
        free(c);
        return;
    }
    c->next = pool_head;
    pool_head = c;
    pool_len++;
}

void slb_chunk_pool_drain(void)
{
    while (pool_head != NULL) {
        struct slb_chunk *c = pool_head;
        pool_head = c->next;
        free(c);
    }
    pool_len = 0;
}

void slb_chunkq_init(struct slb_chunkq *q, int retain)
{
    memset(q, 0, sizeof(*q));
    q->retain = (uint8_t)retain;
}

int slb_chunkq_append(struct slb_chunkq *q, const uint8_t *p, size_t n)
{
    while (n > 0) {
        struct slb_chunk *t = q->tail;
        size_t room;

        if (t == NULL || t->end == SLB_CHUNK_SIZE) {
            struct slb_chunk *c = slb_chunk_get();
            if (c == NULL)
                return SLB_ENOMEM;
            if (t == NULL) {
                q->head = q->tail = c;
            } else {
                t->next = c;
                q->tail = c;
            }
            if (q->send == NULL) {
                q->send = c;
                q->send_off = 0;
            }
            t = c;
        }
        room = SLB_CHUNK_SIZE - t->end;
        if (room > n)
            room = n;
        memcpy(t->data + t->end, p, room);
        t->end += (uint32_t)room;
        q->unsent += room;
        p += room;
        n -= room;
    }
    return 0;
}

/* Frees the chunks before the cursor (non-retaining mode). */
static void release_sent(struct slb_chunkq *q)
{
    while (q->head != NULL && q->head != q->send) {
        struct slb_chunk *c = q->head;
        q->head = c->next;
        slb_chunk_put(c);
    }
    if (q->head != NULL)
        q->head->start = q->send_off;
    if (q->head == NULL)
        q->tail = NULL;
}

size_t slb_chunkq_peek(struct slb_chunkq *q, const uint8_t **p)
{
    struct slb_chunk *c = q->send;

    if (q->unsent == 0 || c == NULL)
        return 0;
    while (q->send_off == c->end) {
        c = c->next;
        q->send = c;
        q->send_off = c->start;
    }
    if (!q->retain)
        release_sent(q);
    *p = c->data + q->send_off;
    return c->end - q->send_off;
}

void slb_chunkq_advance(struct slb_chunkq *q, size_t n)
{
    q->send_off += (uint32_t)n;
    q->unsent -= n;
    if (q->retain) {
        q->retained += n;
        return;
    }
    /* Release a fully sent chunk at once, unless it is the tail (more may be appended there). */
    if (q->send_off == q->send->end && q->send != q->tail) {
        q->send = q->send->next;
        q->send_off = q->send->start;
    }
    release_sent(q);
    if (q->unsent == 0 && q->head != NULL && q->head == q->tail) {
        /* Empty: rewind the tail chunk so it is reused from its start. */
        q->head->start = q->head->end = 0;
        q->send_off = 0;
    }
}

void slb_chunkq_commit(struct slb_chunkq *q)
{
    if (!q->retain)
        return;
    q->retain = 0;
    q->retained = 0;
    release_sent(q);
}

void slb_chunkq_rewind(struct slb_chunkq *q)
{
    if (!q->retain || q->head == NULL)
        return;
    q->send = q->head;
    q->send_off = q->head->start;
    q->unsent += q->retained;
    q->retained = 0;
}

size_t slb_chunkq_peek_at(const struct slb_chunkq *q, uint64_t off, const uint8_t **p)
{
    const struct slb_chunk *c = q->head;
    uint64_t left;

    if (!q->retain || off >= q->retained)
        return 0;
    left = q->retained - off; /* bytes from off up to the cursor */
    while (c != NULL && off >= c->end - c->start) {
        off -= c->end - c->start;
        c = c->next;
    }
    if (c == NULL)
        return 0;
    *p = c->data + c->start + off;
    return (size_t)(c->end - c->start - off < left ? c->end - c->start - off : left);
}

void slb_chunkq_seek(struct slb_chunkq *q, uint64_t off)
{
    const uint8_t *p;

    if (!q->retain)
        return;
    slb_chunkq_rewind(q);
    while (off > 0) {
        size_t n = slb_chunkq_peek(q, &p);
        if (n == 0)
            break;
        if (n > off)
            n = (size_t)off;
        slb_chunkq_advance(q, n);
        off -= n;
    }
}

size_t slb_chunkq_clear(struct slb_chunkq *q)
{
    size_t dropped = q->unsent;

    while (q->head != NULL) {
        struct slb_chunk *c = q->head;
        q->head = c->next;
        slb_chunk_put(c);
    }
    q->tail = q->send = NULL;
    q->send_off = 0;
    q->unsent = q->retained = 0;
    return dropped;
}

int slb_outbuf_append(struct slb_outbuf *b, const void *p, size_t n, size_t limit)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096; /* small for idle connections; busy ones grow once */
        uint8_t *nb;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > limit) {
            if (b->len + n > limit)
                return SLB_ELIMIT;
            cap = limit;
        }
        if ((nb = realloc(b->base, cap)) == NULL)
            return SLB_ENOMEM;
        b->base = nb;
        b->cap = cap;
    }
    memcpy(b->base + b->len, p, n);
    b->len += n;
    return 0;
}

void slb_outbuf_dispose(struct slb_outbuf *b)
{
    free(b->base);
    b->base = NULL;
    b->len = b->cap = 0;
}

void slb_text_put(struct slb_textout *o, const char *s, size_t n)
{
    if (o->err == 0 && n > 0)
        o->err = slb_outbuf_append(o->b, s, n, o->limit);
}

void slb_text_puts(struct slb_textout *o, const char *s)
{
    slb_text_put(o, s, strlen(s));
}

void slb_text_printf(struct slb_textout *o, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        o->err = SLB_ENOMEM;
    } else if ((size_t)n < sizeof(tmp)) {
        slb_text_put(o, tmp, (size_t)n);
    } else {
        char *big = malloc((size_t)n + 1);
        if (big == NULL) {
            o->err = SLB_ENOMEM;
            return;
        }
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        slb_text_put(o, big, (size_t)n);
        free(big);
    }
}
