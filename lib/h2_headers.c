#include "h2_headers.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

void slb_hdrs_init(struct slb_hdrs *h)
{
    h->n = 0;
    h->cap = SLB_HDRS_INLINE;
    h->v = h->inl;
}

int slb_hdrs_push(struct slb_hdrs *h, nghttp2_rcbuf *name, nghttp2_rcbuf *value)
{
    if (h->n == h->cap) {
        nghttp2_rcbuf **v;
        uint16_t cap = (uint16_t)(h->cap * 2);
        if (h->n >= SLB_HDRS_MAX)
            return SLB_ELIMIT;
        if (cap > SLB_HDRS_MAX)
            cap = SLB_HDRS_MAX;
        if ((v = malloc(2 * cap * sizeof(*v))) == NULL)
            return SLB_ENOMEM;
        memcpy(v, h->v, 2 * h->n * sizeof(*v));
        if (h->v != h->inl)
            free(h->v);
        h->v = v;
        h->cap = cap;
    }
    nghttp2_rcbuf_incref(name);
    nghttp2_rcbuf_incref(value);
    h->v[2 * h->n] = name;
    h->v[2 * h->n + 1] = value;
    h->n++;
    return 0;
}

size_t slb_hdrs_to_nv(const struct slb_hdrs *h, nghttp2_nv *nv)
{
    for (uint16_t i = 0; i < h->n; i++) {
        nghttp2_vec n = nghttp2_rcbuf_get_buf(h->v[2 * i]);
        nghttp2_vec v = nghttp2_rcbuf_get_buf(h->v[2 * i + 1]);
        nv[i].name = n.base;
        nv[i].namelen = n.len;
        nv[i].value = v.base;
        nv[i].valuelen = v.len;
        /* the rcbufs outlive the submit call; nghttp2 copies what it keeps */
        nv[i].flags = NGHTTP2_NV_FLAG_NONE;
    }
    return h->n;
}

const uint8_t *slb_hdrs_get(const struct slb_hdrs *h, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (uint16_t i = 0; i < h->n; i++) {
        nghttp2_vec n = nghttp2_rcbuf_get_buf(h->v[2 * i]);
        if (n.len == nl && memcmp(n.base, name, nl) == 0) {
            nghttp2_vec v = nghttp2_rcbuf_get_buf(h->v[2 * i + 1]);
            *len = v.len;
            return v.base;
        }
    }
    return NULL;
}

void slb_hdrs_clear(struct slb_hdrs *h)
{
    for (uint16_t i = 0; i < 2 * h->n; i++)
        nghttp2_rcbuf_decref(h->v[i]);
    if (h->v != h->inl)
        free(h->v);
    slb_hdrs_init(h);
}

void slb_hdrs_move(struct slb_hdrs *dst, struct slb_hdrs *src)
{
    if (src->v == src->inl) {
        memcpy(dst->inl, src->inl, 2 * src->n * sizeof(src->inl[0]));
        dst->v = dst->inl;
    } else {
        dst->v = src->v;
    }
    dst->n = src->n;
    dst->cap = src->cap;
    slb_hdrs_init(src);
}

int slb_hdrs_is_hop_by_hop(const uint8_t *name, size_t len)
{
    /* by length first: this runs for every header of every call */
    switch (len) {
    case 7:
        return memcmp(name, "upgrade", 7) == 0;
    case 10:
        return memcmp(name, "connection", 10) == 0 || memcmp(name, "keep-alive", 10) == 0;
    case 16:
        return memcmp(name, "proxy-connection", 16) == 0;
    case 17:
        return memcmp(name, "transfer-encoding", 17) == 0;
    default:
        return 0;
    }
}
