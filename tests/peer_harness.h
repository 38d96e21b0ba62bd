/*
 * Test peers for C unit tests: spawn a program that prints "ready <port>" on
 * stdout (tests/backend/test_backend, a python3-grpcio server), remember its
 * PID, and stop it by PID (SIGTERM, then SIGKILL) — also at exit after a
 * failed test. Header-only: each check_<module>.c gets its own table.
 */
#ifndef SLB_TEST_PEER_HARNESS_H
#define SLB_TEST_PEER_HARNESS_H

#include <check.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PEER_MAX 8

static pid_t peer_pids[PEER_MAX];

static inline void peer_kill(pid_t pid)
{
    struct timespec ts = {0, 10 * 1000 * 1000};

    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 200; i++) { /* 2 s, then SIGKILL */
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static inline void peer_kill_all(void)
{
    for (int i = 0; i < PEER_MAX; i++) {
        peer_kill(peer_pids[i]);
        peer_pids[i] = 0;
    }
}

/* The peer was stopped some other way (e.g. killed by the test). */
static inline void peer_forget(pid_t pid)
{
    for (int i = 0; i < PEER_MAX; i++)
        if (peer_pids[i] == pid)
            peer_pids[i] = 0;
}

/* A currently free 127.0.0.1 port (racy by nature; prefer --port 0 peers). */
static inline int peer_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Fills path with the test_backend built next to this test binary. */
static inline void peer_backend_path(char *path, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", path, len - 32);
    char *slash;

    ck_assert_int_gt(n, 0);
    path[n] = '\0';
    slash = strrchr(path, '/');
    ck_assert_ptr_nonnull(slash);
    strcpy(slash + 1, "test_backend");
    ck_assert_msg(access(path, X_OK) == 0, "%s missing (make test_backend)", path);
}

/* Runs argv (stderr to /dev/null unless show_stderr), waits at most 10 s for
 * "ready <port>" on its stdout; returns the PID, the port in *port. */
static inline pid_t peer_spawn(char *const argv[], int show_stderr, int *port)
{
    int fds[2], slot = -1;
    char line[128];
    size_t len = 0;
    pid_t pid;

    for (int i = 0; i < PEER_MAX; i++)
        if (peer_pids[i] == 0) {
            slot = i;
            break;
        }
    ck_assert_int_ge(slot, 0);
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 1);
        if (!show_stderr && devnull >= 0)
            dup2(devnull, 2);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    peer_pids[slot] = pid;
    close(fds[1]);
    while (len < sizeof(line) - 1) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        ck_assert_msg(poll(&pfd, 1, 10000) == 1, "%s did not get ready", argv[0]);
        ck_assert_msg(read(fds[0], line + len, 1) == 1, "%s exited before ready", argv[0]);
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    close(fds[0]); /* the peer writes nothing more on stdout */
    ck_assert_msg(sscanf(line, "ready %d", port) == 1, "unexpected line: %s", line);
    return pid;
}

#endif
