/*
 * Standard base64 with padding (RFC 4648 section 4), as etcd's JSON gateway
 * encodes every bytes field. Pure functions, no allocation.
 */
#ifndef SLB_BASE64_H
#define SLB_BASE64_H

#include <stddef.h>

/* Bytes needed to encode n bytes, including the terminating NUL. */
#define SLB_BASE64_ENCODED_SIZE(n) ((((n) + 2) / 3) * 4 + 1)

/* Encodes n bytes into out (SLB_BASE64_ENCODED_SIZE(n) bytes); returns the length without the NUL. */
size_t slb_base64_encode(const void *in, size_t n, char *out);

/*
 * Decodes len characters into out (room for len / 4 * 3 + 1 bytes); NUL-terminates.
 * Returns the decoded length, or SLB_EPROTO on a bad character, length or padding.
 */
long slb_base64_decode(const char *in, size_t len, unsigned char *out);

#endif
