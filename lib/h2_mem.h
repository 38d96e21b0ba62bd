/*
 * The allocator nghttp2 sessions use (nghttp2_mem): per-size-class free lists
 * for small blocks, so the per-stream and per-header allocations of a busy
 * proxy recycle memory instead of taking malloc's slower paths each time.
 * One loop, one thread: no locks. Blocks above SLB_H2_MEM_MAX go to malloc.
 */
#ifndef SLB_H2_MEM_H
#define SLB_H2_MEM_H

#include <nghttp2/nghttp2.h>

#define SLB_H2_MEM_MAX 2048

/* The nghttp2_mem to pass to nghttp2_session_*_new3(). */
nghttp2_mem *slb_h2_mem(void);
/* Returns the pooled blocks to malloc (at shutdown, for leak checkers). */
void slb_h2_mem_drain(void);
/* Tests: the next n allocations fail (out-of-memory paths). */
void slb_h2_mem_fail_next(unsigned n);

#endif
