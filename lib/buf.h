/*
 * Buffers of the forwarding path.
 *
 * slb_chunk: a fixed 16 KiB block (one max-size HTTP/2 DATA payload) from a
 * loop-wide free list, so forwarding a frame never calls malloc once the
 * pool is warm.
 *
 * slb_chunkq: the bytes of one direction of one call, as a FIFO of chunks.
 * It has a send cursor: bytes before it have been handed to the peer. With
 * `retain` set, sent bytes are kept (so a call refused by a backend, e.g.
 * after GOAWAY, can be replayed on another connection) until
 * slb_chunkq_commit(); otherwise they are released as they are sent.
 * Owner: the call that embeds it.
 *
 * slb_outbuf: a growable byte buffer with a hard cap (curl dynbuf), used as
 * a connection's output buffer. Owner: the connection that embeds it.
 */
#ifndef SLB_BUF_H
#define SLB_BUF_H

#include <stddef.h>
#include <stdint.h>

#define SLB_CHUNK_SIZE 16384

struct slb_chunk {
    struct slb_chunk *next;
    uint32_t start, end; /* valid bytes are data[start, end) */
    uint8_t data[SLB_CHUNK_SIZE];
};

struct slb_chunk *slb_chunk_get(void);
void slb_chunk_put(struct slb_chunk *c);
/* Frees the pooled chunks (at shutdown, for leak checkers). */
void slb_chunk_pool_drain(void);

struct slb_chunkq {
    struct slb_chunk *head, *tail;
    struct slb_chunk *send; /* chunk holding the next byte to send */
    uint32_t send_off;      /* offset of that byte in send->data */
    size_t unsent;          /* bytes at and after the cursor */
    size_t retained;        /* sent bytes still kept for a replay */
    uint8_t retain;
};

void slb_chunkq_init(struct slb_chunkq *q, int retain);
/* Copies n bytes in. 0 or SLB_ENOMEM. */
int slb_chunkq_append(struct slb_chunkq *q, const uint8_t *p, size_t n);
/* Contiguous unsent bytes at the cursor (0 when none). */
size_t slb_chunkq_peek(struct slb_chunkq *q, const uint8_t **p);
/* Moves the cursor past n sent bytes (n <= what peek returned). */
void slb_chunkq_advance(struct slb_chunkq *q, size_t n);
/* Releases sent bytes and stops retaining. */
void slb_chunkq_commit(struct slb_chunkq *q);
/* Moves the cursor back to the first retained byte (replay). */
void slb_chunkq_rewind(struct slb_chunkq *q);
/* A retaining queue read by a second reader that lags behind the cursor
 * (a hedged attempt): contiguous bytes at offset off from the first kept
 * byte, never past the cursor (0 when off is at or past it). */
size_t slb_chunkq_peek_at(const struct slb_chunkq *q, uint64_t off, const uint8_t **p);
/* Moves the cursor of a retaining queue to offset off from the first kept byte (off <= kept). */
void slb_chunkq_seek(struct slb_chunkq *q, uint64_t off);
/* Frees everything. Returns the number of unsent bytes dropped. */
size_t slb_chunkq_clear(struct slb_chunkq *q);

struct slb_outbuf {
    uint8_t *base;
    size_t len, cap;
};

/* Appends; grows up to `limit` bytes of capacity. 0 or SLB_ENOMEM/SLB_ELIMIT. */
int slb_outbuf_append(struct slb_outbuf *b, const void *p, size_t n, size_t limit);
void slb_outbuf_dispose(struct slb_outbuf *b);

/* Text appended to an outbuf (admin and metrics bodies): the first error
 * sticks, so a renderer checks err once at the end.
 * Owner: the renderer's stack frame; b belongs to the caller. */
struct slb_textout {
    struct slb_outbuf *b;
    size_t limit; /* as for slb_outbuf_append */
    int err;      /* 0, or the first SLB_ENOMEM/SLB_ELIMIT */
};

void slb_text_put(struct slb_textout *o, const char *s, size_t n);
void slb_text_puts(struct slb_textout *o, const char *s);
void slb_text_printf(struct slb_textout *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
