/*
 * libFuzzer target: grpc-timeout parsing and formatting, grpc-status parsing
 * and grpc-message percent-encoding.
 * Input byte 0 picks the output buffer size for the encoder; the rest is
 * the timeout value, the grpc-status value and (up to a NUL) the message.
 * Properties: the timeout and status parsers agree with reference
 * implementations of their grammars (1-8 digits + H M S m u n, sub-ms
 * rounded up; 1-3 digits); a formatted timeout (of a parsed value, and of
 * the first 8 bytes as a number) parses back, never to less time unless
 * capped, and is at most 9 bytes; the encoder
 * never writes past an exact-size heap buffer, always NUL-terminates,
 * returns strlen(out), never splits an escape, and its output decodes back
 * to a prefix of the input (the whole input when there was room).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    slb_log_level = SLB_LOG_ERROR + 1;
    return 0;
}

static int ref_timeout(const char *v, size_t len, uint64_t *ms)
{
    uint64_t n = 0;

    if (len < 2 || len > 9)
        return -1;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H':
        *ms = n * 3600 * 1000;
        return 0;
    case 'M':
        *ms = n * 60 * 1000;
        return 0;
    case 'S':
        *ms = n * 1000;
        return 0;
    case 'm':
        *ms = n;
        return 0;
    case 'u':
        *ms = n / 1000 + (n % 1000 != 0);
        return 0;
    case 'n':
        *ms = n / 1000000 + (n % 1000000 != 0);
        return 0;
    }
    return -1;
}

static int ref_status(const uint8_t *v, size_t len)
{
    int code = 0;

    if (len < 1 || len > 3)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        code = code * 10 + v[i] - '0';
    }
    return code;
}

/* format(ms) is a valid grpc-timeout that gives at least ms, or the cap. */
static void check_format(uint64_t ms)
{
    char out[SLB_GRPC_TIMEOUT_MAX];
    uint64_t back;
    size_t n = slb_grpc_timeout_format(ms, out);

    if (n != strlen(out) || n > 9 || slb_grpc_timeout_parse(out, n, &back) != 0 ||
        (ms <= 99999999000ULL ? back < ms || back - ms >= 1000 : back != 99999999000ULL)) {
        fprintf(stderr, "fuzz_grpc: timeout %llu ms formatted as \"%s\"\n", (unsigned long long)ms, out);
        abort();
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static size_t encoded_len(const unsigned char *m)
{
    size_t n = 0;
    for (; *m != '\0'; m++)
        n += (*m >= 0x20 && *m <= 0x7e && *m != '%') ? 1 : 3;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t outlen, n, full, mlen, d = 0;
    char *v, *msg, *out, *dec;
    uint64_t ms = 0xdeadbeef, want = 0;
    int rc, wrc;

    if (size < 1)
        return 0;
    outlen = data[0]; /* 0..255; 0 exercises the empty-buffer case */
    data++;
    size--;

    /* grpc-timeout: exact-size, not NUL-terminated */
    v = malloc(size ? size : 1);
    memcpy(v, data, size);
    rc = slb_grpc_timeout_parse(v, size, &ms);
    wrc = ref_timeout(v, size, &want);
    if ((rc == 0) != (wrc == 0) || (rc == 0 && ms != want)) {
        fprintf(stderr, "fuzz_grpc: timeout \"%.*s\": rc %d ms %llu, want rc %d ms %llu\n", (int)size, v, rc,
                (unsigned long long)ms, wrc, (unsigned long long)want);
        abort();
    }
    free(v);
    if (rc == 0)
        check_format(ms);
    if (size >= 8) {
        uint64_t x;
        memcpy(&x, data, 8);
        check_format(x);
    }
    if (slb_grpc_status_parse(data, size) != ref_status(data, size)) {
        fprintf(stderr, "fuzz_grpc: grpc-status \"%.*s\" parsed as %d\n", (int)size, data,
                slb_grpc_status_parse(data, size));
        abort();
    }

    /* grpc-message */
    mlen = strnlen((const char *)data, size);
    msg = malloc(mlen + 1);
    memcpy(msg, data, mlen);
    msg[mlen] = '\0';
    out = outlen ? malloc(outlen) : NULL;
    n = slb_grpc_percent_encode(msg, out, outlen);
    full = encoded_len((const unsigned char *)msg);
    if (outlen == 0) {
        if (n != 0)
            abort();
        free(msg);
        return 0;
    }
    if (n >= outlen || strlen(out) != n || n > full) {
        fprintf(stderr, "fuzz_grpc: encode returned %zu for outlen %zu (strlen %zu, full %zu)\n", n, outlen,
                strlen(out), full);
        abort();
    }
    if (full < outlen && n != full) {
        fprintf(stderr, "fuzz_grpc: encode truncated %zu of %zu bytes with room for %zu\n", n, full, outlen - 1);
        abort();
    }
    dec = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c < 0x20 || c > 0x7e)
            abort(); /* output must be printable ASCII */
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n) {
                fprintf(stderr, "fuzz_grpc: split escape at the end of \"%s\"\n", out);
                abort();
            }
            hi = hexval(out[i + 1]);
            lo = hexval(out[i + 2]);
            if (hi < 0 || lo < 0)
                abort();
            dec[d++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            dec[d++] = (char)c;
        }
    }
    if (d > mlen || memcmp(dec, msg, d) != 0 || (n == full && d != mlen)) {
        fprintf(stderr, "fuzz_grpc: encoding does not decode back to the message\n");
        abort();
    }
    free(dec);
    free(out);
    free(msg);
    return 0;
}
