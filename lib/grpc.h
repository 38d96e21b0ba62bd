/*
 * gRPC protocol details that sidelb needs: status codes and names, parsing
 * grpc-status, percent-encoding of grpc-message, the grpc-status/-message
 * fields of a reply and trailers-only responses, grpc-timeout parsing and
 * formatting, and the mapping of HTTP/2 reset codes to statuses (gRPC's
 * PROTOCOL-HTTP2.md).
 */
#ifndef SLB_GRPC_H
#define SLB_GRPC_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>

enum slb_grpc_status {
    SLB_GRPC_OK = 0,
    SLB_GRPC_CANCELLED = 1,
    SLB_GRPC_UNKNOWN = 2,
    SLB_GRPC_INVALID_ARGUMENT = 3,
    SLB_GRPC_DEADLINE_EXCEEDED = 4,
    SLB_GRPC_NOT_FOUND = 5,
    SLB_GRPC_ALREADY_EXISTS = 6,
    SLB_GRPC_PERMISSION_DENIED = 7,
    SLB_GRPC_RESOURCE_EXHAUSTED = 8,
    SLB_GRPC_FAILED_PRECONDITION = 9,
    SLB_GRPC_ABORTED = 10,
    SLB_GRPC_OUT_OF_RANGE = 11,
    SLB_GRPC_UNIMPLEMENTED = 12,
    SLB_GRPC_INTERNAL = 13,
    SLB_GRPC_UNAVAILABLE = 14,
    SLB_GRPC_DATA_LOSS = 15,
    SLB_GRPC_UNAUTHENTICATED = 16,
};

/* "UNAVAILABLE" etc.; NULL for codes outside 0..16. */
const char *slb_grpc_status_name(int code);
/* Code for a name like "UNAVAILABLE" (case-sensitive), or -1. */
int slb_grpc_status_from_name(const char *name);

/*
 * A grpc-status value: 1 to 3 decimal digits ("0", "14", "00", "999") ->
 * the code; anything else (empty, a sign, a non-digit, 4 digits or more) -> -1.
 * Codes above 16 are returned as they are: the caller decides.
 */
int slb_grpc_status_parse(const uint8_t *v, size_t len);

/*
 * Percent-encodes a grpc-message (bytes outside 0x20..0x7E and '%').
 * Writes at most outlen-1 bytes plus NUL, never splitting an escape.
 * Returns the encoded length.
 */
size_t slb_grpc_percent_encode(const char *msg, char *out, size_t outlen);

/*
 * The text a status reply's header fields point into. Owner: the caller; it
 * must live until nghttp2 has copied the fields (the submit call returned).
 */
struct slb_grpc_status_text {
    char code[8];
    char message[512]; /* percent-encoded; a longer message is cut at an escape boundary */
};

/*
 * Fills nv[0] with grpc-status and nv[1] with grpc-message (message
 * percent-encoded; NULL is ""), their values in *t. Returns 2.
 */
size_t slb_grpc_status_fields(nghttp2_nv *nv, struct slb_grpc_status_text *t, int status, const char *message);

/*
 * A trailers-only response (one HEADERS frame with END_STREAM): fills nv[0..3]
 * with :status 200, content-type application/grpc, grpc-status and
 * grpc-message. Returns 4.
 */
size_t slb_grpc_trailers_only(nghttp2_nv *nv, struct slb_grpc_status_text *t, int status, const char *message);

/*
 * Parses a grpc-timeout value ("100m", "5S", "1H": 1-8 digits and a unit
 * H M S m u n) into milliseconds, rounding sub-millisecond values up.
 * 0 or SLB_EPROTO.
 */
int slb_grpc_timeout_parse(const char *v, size_t len, uint64_t *ms);

#define SLB_GRPC_TIMEOUT_MAX 16

/*
 * The grpc-timeout value for ms milliseconds, NUL-terminated in out: at most
 * 8 digits, so "<ms>m" up to 99999999 ms and whole seconds ("<s>S", rounded
 * up) past that, capped at "99999999S" (~3 years). Returns its length.
 */
size_t slb_grpc_timeout_format(uint64_t ms, char out[SLB_GRPC_TIMEOUT_MAX]);

/*
 * Follows gRPC message framing (1 flag byte, 4-byte big-endian length,
 * payload) across any split of the byte stream, to check message sizes as
 * the bytes pass. Owner: the call direction that embeds it.
 */
struct slb_grpc_scan {
    uint8_t hdr[5];
    uint8_t have;       /* header bytes collected */
    uint32_t remaining; /* payload bytes left in the current message */
};

/* Returns the declared length of the first message in p[0..n) larger than
 * max (so the caller can report it), or 0 when none is. */
uint32_t slb_grpc_scan(struct slb_grpc_scan *s, const uint8_t *p, size_t n, uint32_t max);

/* Status a client sees for a stream reset with this HTTP/2 error code. */
int slb_grpc_status_from_h2(uint32_t h2_error);

#endif
