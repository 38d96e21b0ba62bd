/*
 * The file side of a listening Unix socket ("unix:/path" listeners and the
 * admin listener): a stale file left by a crash is replaced, a live socket or
 * a file that is not a socket is an error and left alone; the new socket gets
 * its mode and group before it listens; on stop the file is removed only if
 * it is still the one made here (device and inode).
 *
 * The socket is made here rather than by uv_pipe_bind(): libuv unlinks the
 * path of a pipe it bound when the handle closes, and after a reload that
 * file belongs to the new server. The caller opens the fd into a uv_pipe_t.
 *
 * Owner: struct slb_unix_file is embedded in its listener (or the admin
 * listener).
 */
#ifndef SLB_UNIX_SOCKET_H
#define SLB_UNIX_SOCKET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct slb_unix_file {
    const char *path; /* the listener config's (not owned) */
    dev_t dev;        /* the socket file made (or taken over) */
    ino_t ino;
    uint8_t owned; /* removed on stop; a reload's successor takes it over */
};

/*
 * A new listening-ready socket at path (bound, mode and group applied; not
 * yet listening): the fd, or < 0 with a message in err starting with what
 * (e.g. "listener unix:/run/x.sock"). gid < 0 keeps the process's group.
 * f is filled and owned once the file exists.
 */
int slb_unix_socket_bind(struct slb_unix_file *f, const char *path, uint32_t mode, int64_t gid, const char *what,
                         char *err, size_t errlen);
/* Sets mode and group on the file again (a reload's values). 0 or < 0 with err set. */
int slb_unix_socket_chmod(const char *path, uint32_t mode, int64_t gid, const char *what, char *err, size_t errlen);
/* 1 when path still holds the socket file f describes (not removed or replaced by someone). */
int slb_unix_file_is_ours(const struct slb_unix_file *f);
/* On stop: removes the file if f owns it and it is still that file; f owns nothing afterwards. */
void slb_unix_file_remove(struct slb_unix_file *f, const char *what);

#endif
