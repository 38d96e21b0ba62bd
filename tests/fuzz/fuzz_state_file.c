/*
 * libFuzzer target: persisted cluster tables (lib/state_file.c), as read
 * from state_dir at start.
 * Input: the file's bytes (exact-size buffer, not NUL-terminated).
 * Properties: never crashes or leaks; on failure err is one non-empty line
 * and the table is empty; a parsed table formatted again parses back equal.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "state_file.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    slb_log_level = SLB_LOG_ERROR + 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct slb_state_table t, back;
    char *text = malloc(size ? size : 1), *again;
    char err[512];
    int rc;

    if (text == NULL)
        abort();
    memcpy(text, data, size);
    memset(err, 'X', sizeof(err));
    err[0] = '\0';
    rc = slb_state_table_parse("echo", text, size, &t, err, sizeof(err));
    free(text);
    if (rc != 0) {
        if (err[0] == '\0' || strnlen(err, sizeof(err)) == sizeof(err) || strchr(err, '\n') != NULL || t.n != 0 ||
            t.entries != NULL || t.prefix != NULL) {
            fprintf(stderr, "fuzz_state_file: bad failure (message \"%.80s\", %zu entries)\n", err, t.n);
            abort();
        }
        return 0;
    }
    if ((again = slb_state_table_format("echo", &t)) == NULL)
        abort();
    if (slb_state_table_parse("echo", again, strlen(again), &back, err, sizeof(err)) != 0 ||
        strcmp(back.prefix, t.prefix) != 0 || back.revision != t.revision ||
        back.written_unix_ms != t.written_unix_ms || back.n != t.n) {
        fprintf(stderr, "fuzz_state_file: round trip failed: %s\n%s\n", err, again);
        abort();
    }
    for (size_t i = 0; i < t.n; i++) {
        if (strcmp(back.entries[i].key, t.entries[i].key) != 0 ||
            !slb_etcd_endpoint_equal(&back.entries[i].ep, &t.entries[i].ep)) {
            fprintf(stderr, "fuzz_state_file: entry %zu differs after a round trip\n%s\n", i, again);
            abort();
        }
    }
    slb_state_table_dispose(&back);
    slb_state_table_dispose(&t);
    free(again);
    return 0;
}
