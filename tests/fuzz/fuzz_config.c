/*
 * libFuzzer target: the configuration loader on arbitrary text.
 * Property: never crashes or leaks; on failure err is a single non-empty
 * line naming the file; on success the config frees cleanly and its
 * resolved indexes are in range.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    slb_log_level = SLB_LOG_ERROR + 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = malloc(size + 1);
    char err[SLB_CONFIG_ERRLEN];
    struct slb_config *cfg;

    if (json == NULL)
        return 0;
    memcpy(json, data, size);
    json[size] = '\0';
    memset(err, 'X', sizeof(err));
    err[0] = '\0';
    cfg = slb_config_load_string(json, "fuzz.json", err, sizeof(err));
    if (cfg == NULL) {
        size_t n = strnlen(err, sizeof(err));
        if (n == 0 || n == sizeof(err)) {
            fprintf(stderr, "fuzz_config: error message empty or not terminated\n");
            abort();
        }
        if (memchr(err, '\n', n) != NULL || memchr(err, '\r', n) != NULL) {
            fprintf(stderr, "fuzz_config: error message is not one line: %s\n", err);
            abort();
        }
        if (strncmp(err, "fuzz.json", 9) != 0) {
            fprintf(stderr, "fuzz_config: error message does not name the file: %s\n", err);
            abort();
        }
    } else {
        for (size_t i = 0; i < cfg->n_listeners; i++) {
            const struct slb_config_listener *l = &cfg->listeners[i];
            for (size_t r = 0; r < l->n_routes; r++)
                if (l->routes[r].cluster_index < 0 || (size_t)l->routes[r].cluster_index >= cfg->n_clusters)
                    abort();
            if (l->default_cluster_index >= (int)cfg->n_clusters ||
                (l->default_cluster != NULL) != (l->default_cluster_index >= 0))
                abort();
        }
        slb_config_free(cfg);
    }
    free(json);
    return 0;
}
