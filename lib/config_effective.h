/*
 * The effective configuration: the accepted document with every default the
 * loader applied written in, so admin GET /config shows the values in effect.
 */
#ifndef SLB_CONFIG_EFFECTIVE_H
#define SLB_CONFIG_EFFECTIVE_H

#include <jansson.h>

#include "config.h"

/*
 * Adds to doc (a copy of the document cfg was loaded from; the caller owns
 * it) each key that is absent but has a value in cfg. Given values stay as
 * given. Keys whose absence means "off" or "computed at run time" (tls,
 * health_check, outlier_detection, access_log, metrics, default_cluster,
 * max_app_connections, a unix socket's group...) and objects that are present
 * only by choice stay absent; so does log_level (sidelb -l overrides it).
 * 0, or -1 when out of memory.
 */
int slb_config_fill_effective(json_t *doc, const struct slb_config *cfg);

#endif
