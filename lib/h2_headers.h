/*
 * A header block held by reference: the name/value rcbufs nghttp2 handed to
 * the header callback are kept (incref) instead of copied, and turned into an
 * nghttp2_nv array when the block is submitted on the other session.
 * Owner: the call that embeds it.
 */
#ifndef SLB_H2_HEADERS_H
#define SLB_H2_HEADERS_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>

#define SLB_HDRS_INLINE 16  /* pairs held without a heap allocation */
#define SLB_HDRS_MAX    256 /* pairs in one block; more is a protocol error */

struct slb_hdrs {
    uint16_t n, cap; /* pairs */
    nghttp2_rcbuf **v;
    nghttp2_rcbuf *inl[2 * SLB_HDRS_INLINE];
};

void slb_hdrs_init(struct slb_hdrs *h);
/* Keeps a reference to both. 0, SLB_ENOMEM or SLB_ELIMIT. */
int slb_hdrs_push(struct slb_hdrs *h, nghttp2_rcbuf *name, nghttp2_rcbuf *value);
/* Fills nv (room for SLB_HDRS_MAX); returns the count. Valid while h is. */
size_t slb_hdrs_to_nv(const struct slb_hdrs *h, nghttp2_nv *nv);
/* Value of the first header with this name, or NULL. */
const uint8_t *slb_hdrs_get(const struct slb_hdrs *h, const char *name, size_t *len);
void slb_hdrs_clear(struct slb_hdrs *h);
/* Moves src's contents into dst (dst must be empty). */
void slb_hdrs_move(struct slb_hdrs *dst, struct slb_hdrs *src);

/* Hop-by-hop headers that a proxy must not forward (RFC 9113 8.2.2). */
int slb_hdrs_is_hop_by_hop(const uint8_t *name, size_t len);

#endif
