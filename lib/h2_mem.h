/*
 * The allocator nghttp2 sessions use (nghttp2_mem): per-size-class free lists
 * for small blocks, so the per-stream and per-header allocations of a busy
 * proxy recycle memory instead of taking malloc's slower paths each time.
 * Every pool and the region are per thread (each worker loop has its own):
 * no locks. A block is freed on the thread that allocated it.
 *
 * Blocks of 4 KiB up to SLB_H2_MEM_PAGES_MAX (a session's 16 KiB frame
 * buffer, its 4 KiB stream map) come from page slots of one reserved
 * virtual region instead: a page nobody wrote is not resident, a freed
 * slot gives its pages back (MADV_DONTNEED), and the pages of an idle
 * session's frame buffer can be dropped (slb_h2_mem_release), so an idle
 * app connection costs a few KiB. Blocks between SLB_H2_MEM_MAX and 4 KiB,
 * and above the slots (or when the region is full or could not be
 * reserved), go to malloc.
 */
#ifndef SLB_H2_MEM_H
#define SLB_H2_MEM_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>

#define SLB_H2_MEM_MAX       2048
#define SLB_H2_MEM_PAGES_MAX (5 * 4096)

/* Page-slot blocks allocated while it was being filled (slb_h2_mem_capture_*): what a new
 * session holds for its whole life. Owner: the connection that embeds it. */
struct slb_h2_mem_capture {
    void *p[2];
    uint64_t serial[2]; /* the allocation each was (a freed and reused slot no longer matches) */
    uint32_t size[2];
    uint8_t n;
};

/* The nghttp2_mem to pass to nghttp2_session_*_new3(). */
nghttp2_mem *slb_h2_mem(void);
/* Returns the pooled blocks to malloc (at shutdown, for leak checkers). */
void slb_h2_mem_drain(void);
/* A worker thread whose loop has ended: drains, and gives its region back when no slot is in use. */
void slb_h2_mem_thread_end(void);
/* Records the page-slot blocks allocated until slb_h2_mem_capture_end (up to 2). */
void slb_h2_mem_capture_begin(struct slb_h2_mem_capture *cap);
void slb_h2_mem_capture_end(void);
/* Drops the pages of captured block i (it reads as zeros after): always when its content does not
 * matter (nghttp2's frame buffer between frames), else only when it is all zero. 1 if dropped. */
int slb_h2_mem_release(const struct slb_h2_mem_capture *cap, unsigned i, int content_unused);
/* Resident bytes that page-slot blocks could hold (tests): slots in use x their size. */
size_t slb_h2_mem_slot_bytes(void);
/* Tests: the next n allocations fail (out-of-memory paths). */
void slb_h2_mem_fail_next(unsigned n);

#endif
