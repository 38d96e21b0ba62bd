#include "unix_socket.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"

/* A socket file already at path: stale (connecting is refused) is removed; live, or not a socket, is an error. */
static int clear_stale(const char *path, const char *what, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct stat st;
    int fd, rv;

    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: cannot check %s: %s", what, path, strerror(errno));
        return -errno;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s: %s exists and is not a socket (not removed)", what, path);
        return UV_EEXIST;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0) {
        snprintf(err, errlen, "%s: socket: %s", what, strerror(errno));
        return -errno;
    }
    rv = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 ? 0 : errno;
    close(fd);
    if (rv == ECONNREFUSED) {
        if (unlink(path) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "%s: cannot remove the stale socket %s: %s", what, path, strerror(errno));
            return -errno;
        }
        slb_notice("%s: removed the stale socket file %s (nothing listened on it)", what, path);
        return 0;
    }
    if (rv == ENOENT)
        return 0; /* gone meanwhile */
    snprintf(err, errlen, "%s: another process is listening on %s (%s); not replaced", what, path,
             rv == 0 || rv == EAGAIN ? "it accepted a connection" : strerror(rv));
    return UV_EADDRINUSE;
}

int slb_unix_socket_chmod(const char *path, uint32_t mode, int64_t gid, const char *what, char *err, size_t errlen)
{
    if (chmod(path, (mode_t)mode) != 0 || (gid >= 0 && chown(path, (uid_t)-1, (gid_t)gid) != 0)) {
        snprintf(err, errlen, "%s: cannot set mode %04o%s on %s: %s", what, mode, gid >= 0 ? " and group" : "", path,
                 strerror(errno));
        return -errno;
    }
    return 0;
}

int slb_unix_socket_bind(struct slb_unix_file *f, const char *path, uint32_t mode, int64_t gid, const char *what,
                         char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct stat st;
    int fd, rv;

    memset(f, 0, sizeof(*f));
    f->path = path;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "%s: path too long for a Unix socket", what);
        return UV_ENAMETOOLONG;
    }
    if ((rv = clear_stale(path, what, err, errlen)) != 0)
        return rv;
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0 ||
        bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        rv = -errno;
        snprintf(err, errlen, "%s: cannot bind: %s", what, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rv;
    }
    if (stat(path, &st) == 0) {
        f->dev = st.st_dev;
        f->ino = st.st_ino;
        f->owned = 1;
    }
    if ((rv = slb_unix_socket_chmod(path, mode, gid, what, err, errlen)) != 0) {
        close(fd);
        return rv;
    }
    return fd;
}

int slb_unix_file_is_ours(const struct slb_unix_file *f)
{
    struct stat st;

    return f->path != NULL && stat(f->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == f->dev &&
           st.st_ino == f->ino;
}

void slb_unix_file_remove(struct slb_unix_file *f, const char *what)
{
    if (!f->owned)
        return;
    f->owned = 0;
    if (slb_unix_file_is_ours(f) && unlink(f->path) == 0)
        slb_info("%s: removed %s", what, f->path);
}
