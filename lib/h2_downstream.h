/*
 * A downstream connection: an app's h2c connection to a sidelb listener,
 * served by an nghttp2 server session. Anything but the HTTP/2 connection
 * preface (e.g. an HTTP/1.1 request) gets a clear refusal and a close.
 * Owner: the server (linked in server->downstreams); freed after its TCP
 * handle closes.
 */
#ifndef SLB_H2_DOWNSTREAM_H
#define SLB_H2_DOWNSTREAM_H

#include <stdint.h>

#include "h2_conn.h"
#include "h2_mem.h"

struct slb_listener;
struct slb_call;

struct slb_downstream {
    struct slb_conn conn;
    struct slb_listener *listener;
    struct slb_call *calls; /* calls whose downstream stream is open */
    uint32_t n_calls;
    uint64_t peer_hash; /* hash of the peer address (source_ip_hash) */
    uint8_t preface_checked;
    uint8_t goaway_sent;                /* the final GOAWAY of a graceful stop */
    struct slb_downstream *next, *prev; /* in server->downstreams */
};

/* Accepts a pending connection on the listener's handle. */
int slb_downstream_accept(struct slb_listener *l);
/* Graceful shutdown: GOAWAY, finish in-flight calls, then close. */
void slb_downstream_shutdown(struct slb_downstream *dc);

nghttp2_session_callbacks *slb_downstream_callbacks_new(void);

#endif
