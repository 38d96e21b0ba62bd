/*
 * Active health checking with grpc.health.v1 (gRPC's health/v1 protocol).
 *
 * One struct slb_health_check watches one address (host:port, h2c with prior
 * knowledge, or h2 over TLS after slb_health_set_tls) for one service name over its own HTTP/2 connection (not the
 * data-path pool), and reports the status through a callback whenever it
 * changes (and once for the first determination):
 *
 *  - It opens a /grpc.health.v1.Health/Watch server stream; every
 *    HealthCheckResponse is a status (SERVING -> SLB_HEALTH_SERVING,
 *    NOT_SERVING and UNKNOWN -> SLB_HEALTH_NOT_SERVING, SERVICE_UNKNOWN ->
 *    SLB_HEALTH_SERVICE_UNKNOWN). While the stream is idle an HTTP/2 PING
 *    every interval_ms, answered within timeout_ms, proves the peer is alive.
 *  - If Watch ends with UNIMPLEMENTED it polls /grpc.health.v1.Health/Check
 *    every interval_ms, each with a timeout_ms deadline (grpc-timeout header
 *    and a local timer). Check answering NOT_FOUND -> SLB_HEALTH_SERVICE_UNKNOWN.
 *  - If Check ends with UNIMPLEMENTED too, the peer has no health service
 *    (gRFC A17): SLB_HEALTH_UNIMPLEMENTED, and no more health calls on this
 *    connection; keepalive PINGs go on, and a new connection (after a loss)
 *    starts again with Watch.
 *  - Connection refused or lost, a Watch that ends with another status, a
 *    Check that fails, or a timeout -> SLB_HEALTH_NOT_SERVING; then it
 *    reconnects with backoff (200 ms, doubling, at most interval_ms).
 *
 * Transitions are logged at NOTICE: "health <addr> <service>: SERVING -> NOT_SERVING".
 *
 * Ownership: the caller owns the check from slb_health_start() until
 * slb_health_stop(); the check owns its timers and connection and frees
 * itself once their close callbacks have run.
 */
#ifndef SLB_HEALTH_H
#define SLB_HEALTH_H

#include <stdint.h>
#include <uv.h>

#include "h2_conn.h"

struct slb_health_check;

/* status: enum slb_backend_health (backend.h), never SLB_HEALTH_UNKNOWN or SLB_HEALTH_PENDING. */
typedef void (*slb_health_cb)(struct slb_health_check *hc, int status, void *user);

#define SLB_HEALTH_BACKOFF_INITIAL_MS 200
#define SLB_HEALTH_MAX_MSG            4096 /* largest HealthCheckResponse accepted */

/*
 * Starts checking hostport ("127.0.0.1:50051", "[::1]:50051") for service
 * ("" = the whole server). io is the loop's connection context (flushing);
 * interval_ms and timeout_ms of 0 mean 1000. The first connection attempt
 * runs from the loop, so cb never fires before this returns.
 * Returns NULL on an invalid address or no memory.
 */
struct slb_health_check *slb_health_start(uv_loop_t *loop, struct slb_conn_ctx *io, const char *hostport,
                                          const char *service, uint32_t interval_ms, uint32_t timeout_ms,
                                          slb_health_cb cb, void *user);

/*
 * Calls wait for this backend (faster recovery): if the check is in its
 * reconnect backoff after a failure, it reconnects now, unless its last
 * attempt is less than interval_ms old. Returns the loop time at which it
 * may be hurried again, or UINT64_MAX when there is nothing to hurry (it is
 * connected or connecting, or stopped).
 */
uint64_t slb_health_probe(struct slb_health_check *hc, uint32_t interval_ms);

/*
 * Checks over TLS (before the first attempt, i.e. right after start): ctx
 * (referenced), server_name as for a backend connection (SNI and the name
 * verified; copied), handshake counters into stats (may be NULL; must
 * outlive the check). The session is kept for the check's next connection.
 * 0 or SLB_ENOMEM.
 */
struct slb_tls_ctx;
struct slb_tls_stats;
int slb_health_set_tls(struct slb_health_check *hc, struct slb_tls_ctx *ctx, const char *server_name,
                       struct slb_tls_stats *stats);

/* Stops the check: cb is not called after this returns (also when called
 * from cb). The memory is freed from the loop once its handles are closed. */
void slb_health_stop(struct slb_health_check *hc);

/* Last reported status (SLB_HEALTH_UNKNOWN before the first determination). */
int slb_health_status(const struct slb_health_check *hc);

/* "UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN". */
const char *slb_health_status_name(int status);

#endif
