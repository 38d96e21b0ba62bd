#include "grpc.h"

#include <stdio.h>
#include <string.h>

#include "common.h"

static const char *const status_names[] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED",
};

const char *slb_grpc_status_name(int code)
{
    return code >= 0 && code < (int)SLB_ARRAY_SIZE(status_names) ? status_names[code] : NULL;
}

int slb_grpc_status_from_name(const char *name)
{
    for (int i = 0; i < (int)SLB_ARRAY_SIZE(status_names); i++)
        if (strcmp(name, status_names[i]) == 0)
            return i;
    return -1;
}

int slb_grpc_status_parse(const uint8_t *v, size_t len)
{
    int code = 0;

    if (len == 0 || len > 3)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        code = code * 10 + (v[i] - '0');
    }
    return code;
}

size_t slb_grpc_percent_encode(const char *msg, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    if (outlen == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p != '\0'; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            if (o + 1 >= outlen)
                break;
            out[o++] = (char)*p;
        } else {
            if (o + 3 >= outlen)
                break;
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return o;
}

/* A field whose name and value are literals: nghttp2 copies neither. */
#define STATIC_NV(n, v)                                                                                                \
    (nghttp2_nv)                                                                                                       \
    {                                                                                                                  \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1,                                                  \
            NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE                                               \
    }

size_t slb_grpc_status_fields(nghttp2_nv *nv, struct slb_grpc_status_text *t, int status, const char *message)
{
    size_t len;

    /* names are literals; values point into *t, which nghttp2 copies on submit */
    snprintf(t->code, sizeof(t->code), "%d", status);
    len = strlen(t->code);
    nv[0] = (nghttp2_nv){(uint8_t *)"grpc-status", (uint8_t *)t->code, 11, len, NGHTTP2_NV_FLAG_NO_COPY_NAME};
    len = slb_grpc_percent_encode(message != NULL ? message : "", t->message, sizeof(t->message));
    nv[1] = (nghttp2_nv){(uint8_t *)"grpc-message", (uint8_t *)t->message, 12, len, NGHTTP2_NV_FLAG_NO_COPY_NAME};
    return 2;
}

size_t slb_grpc_trailers_only(nghttp2_nv *nv, struct slb_grpc_status_text *t, int status, const char *message)
{
    nv[0] = STATIC_NV(":status", "200");
    nv[1] = STATIC_NV("content-type", "application/grpc");
    return 2 + slb_grpc_status_fields(nv + 2, t, status, message);
}

int slb_grpc_timeout_parse(const char *v, size_t len, uint64_t *ms)
{
    uint64_t n = 0;

    if (len < 2 || len > 9)
        return SLB_EPROTO;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return SLB_EPROTO;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H':
        *ms = n * 3600000;
        break;
    case 'M':
        *ms = n * 60000;
        break;
    case 'S':
        *ms = n * 1000;
        break;
    case 'm':
        *ms = n;
        break;
    case 'u':
        *ms = (n + 999) / 1000;
        break;
    case 'n':
        *ms = (n + 999999) / 1000000;
        break;
    default:
        return SLB_EPROTO;
    }
    return 0;
}

size_t slb_grpc_timeout_format(uint64_t ms, char out[SLB_GRPC_TIMEOUT_MAX])
{
    const uint64_t max = 99999999; /* gRPC allows at most 8 digits */
    uint64_t s;

    if (ms <= max)
        return (size_t)snprintf(out, SLB_GRPC_TIMEOUT_MAX, "%llum", (unsigned long long)ms);
    /* rounded up, as gRPC's own encoder does: the caller enforces the real deadline itself */
    s = ms / 1000 + (ms % 1000 != 0);
    return (size_t)snprintf(out, SLB_GRPC_TIMEOUT_MAX, "%lluS", (unsigned long long)(s < max ? s : max));
}

int slb_grpc_status_from_h2(uint32_t h2_error)
{
    switch (h2_error) {
    case 0x7: /* REFUSED_STREAM */
        return SLB_GRPC_UNAVAILABLE;
    case 0x8: /* CANCEL */
        return SLB_GRPC_CANCELLED;
    case 0xb: /* ENHANCE_YOUR_CALM */
        return SLB_GRPC_RESOURCE_EXHAUSTED;
    case 0xc: /* INADEQUATE_SECURITY */
        return SLB_GRPC_PERMISSION_DENIED;
    default: /* NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, ... */
        return SLB_GRPC_INTERNAL;
    }
}

uint32_t slb_grpc_scan(struct slb_grpc_scan *s, const uint8_t *p, size_t n, uint32_t max)
{
    while (n > 0) {
        if (s->remaining > 0) {
            size_t k = n < s->remaining ? n : s->remaining;
            s->remaining -= (uint32_t)k;
            p += k;
            n -= k;
            continue;
        }
        s->hdr[s->have++] = *p++;
        n--;
        if (s->have == 5) {
            uint32_t len = (uint32_t)s->hdr[1] << 24 | (uint32_t)s->hdr[2] << 16 | (uint32_t)s->hdr[3] << 8 | s->hdr[4];
            s->have = 0;
            s->remaining = len;
            if (len > max)
                return len;
        }
    }
    return 0;
}
