/*
 * libcurl's multi interface driven by a libuv loop: CURLMOPT_SOCKETFUNCTION
 * maps each curl socket to a uv_poll_t, CURLMOPT_TIMERFUNCTION to one
 * uv_timer_t, and finished transfers are dispatched to a per-transfer
 * callback (the pattern of curl's docs/examples/multi-uv.c).
 *
 * Ownership: struct slb_curl_uv is owned by whoever created it (the etcd
 * client). Easy handles stay owned by the caller; while added they belong to
 * the multi. slb_curl_uv_free() closes every uv handle asynchronously; the
 * memory goes in the last close callback, so the loop must run afterwards.
 */
#ifndef SLB_CURL_UV_H
#define SLB_CURL_UV_H

#include <curl/curl.h>
#include <uv.h>

struct slb_curl_uv;

/*
 * A transfer ended (result CURLE_OK or an error). The easy handle has been
 * removed from the multi already: the callee may clean it up or add it again.
 */
typedef void (*slb_curl_uv_done_cb)(CURL *easy, CURLcode result, void *user);

/* 0, SLB_ENOMEM, or a UV_E* from uv_timer_init. */
int slb_curl_uv_new(uv_loop_t *loop, struct slb_curl_uv **out);
/*
 * Closes every handle; transfers still added are removed without their
 * callback (their easy handles stay the caller's). May be called from a done
 * callback.
 */
void slb_curl_uv_free(struct slb_curl_uv *cu);

/*
 * Starts a transfer; cb runs once when it ends, never before this returns.
 * Uses CURLOPT_PRIVATE of the easy handle. 0, SLB_ENOMEM or SLB_EPROTO (curl refused it).
 */
int slb_curl_uv_add(struct slb_curl_uv *cu, CURL *easy, slb_curl_uv_done_cb cb, void *user);
/* Stops a transfer without calling its callback. Not from inside curl's own callbacks (write/read/header). */
void slb_curl_uv_remove(struct slb_curl_uv *cu, CURL *easy);

#endif
