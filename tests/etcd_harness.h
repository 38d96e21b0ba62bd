/*
 * Test helper (header-only, static): starts real etcd-server members on free
 * loopback ports in a temp dir, stops them by PID (SIGTERM, then SIGKILL) and
 * removes the dir, also when a test fails (atexit; members die with the test
 * process through PR_SET_PDEATHSIG). Blocking helpers (put/delete/compact
 * through the JSON gateway) are for test scripts only, never for lib/ code.
 */
#ifndef SLB_TEST_ETCD_HARNESS_H
#define SLB_TEST_ETCD_HARNESS_H

#include <check.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base64.h"
#include "common.h"
#include "peer_harness.h"

#define EH_MAX 3

/* Owned by the test that started it. */
struct etcd_h {
    int n;
    pid_t pid[EH_MAX];
    int cport[EH_MAX], pport[EH_MAX];
    char dir[128];
    char url[EH_MAX][64];
};

static struct etcd_h *eh_current;

static __attribute__((unused)) int eh_free_port(void)
{
    return peer_free_port();
}

static __attribute__((unused)) void eh_spawn(struct etcd_h *h, int i)
{
    char name[16], data[192], curl_[64], purl[64], cluster[512] = "", log[192];
    pid_t pid;

    snprintf(name, sizeof(name), "m%d", i);
    snprintf(data, sizeof(data), "%s/%s.etcd", h->dir, name);
    snprintf(log, sizeof(log), "%s/%s.log", h->dir, name);
    snprintf(curl_, sizeof(curl_), "http://127.0.0.1:%d", h->cport[i]);
    snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", h->pport[i]);
    for (int k = 0; k < h->n; k++) {
        char one[96];
        snprintf(one, sizeof(one), "%sm%d=http://127.0.0.1:%d", k ? "," : "", k, h->pport[k]);
        strcat(cluster, one);
    }
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl("/usr/bin/etcd", "etcd", "--name", name, "--data-dir", data, "--listen-client-urls", curl_,
              "--advertise-client-urls", curl_, "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
              "--initial-cluster", cluster, "--initial-cluster-token", "sidelb-test", "--initial-cluster-state", "new",
              (char *)NULL);
        _exit(127);
    }
    h->pid[i] = pid;
}

static __attribute__((unused)) size_t eh_sink(char *p, size_t s, size_t n, void *ud)
{
    struct {
        char buf[4096];
        size_t len;
    } *b = ud;
    size_t l = s * n;
    if (b != NULL && b->len + l < sizeof(b->buf)) {
        memcpy(b->buf + b->len, p, l);
        b->len += l;
        b->buf[b->len] = '\0';
    }
    return l;
}

/* Blocking POST of body to url+path; returns the HTTP status (0 on failure); answer in out if given. */
static __attribute__((unused)) long eh_post(const char *url, const char *path, const char *body, char *out,
                                            size_t outlen)
{
    struct {
        char buf[4096];
        size_t len;
    } b = {.len = 0};
    char full[256];
    long status = 0;
    CURL *c = curl_easy_init();

    snprintf(full, sizeof(full), "%s%s", url, path);
    curl_easy_setopt(c, CURLOPT_URL, full);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, eh_sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (out != NULL && outlen > 0) {
        size_t l = b.len < outlen - 1 ? b.len : outlen - 1;
        memcpy(out, b.buf, l);
        out[l] = '\0';
    }
    return status;
}

/* Retries for up to 10 s (a cluster electing a new leader answers late or with 5xx). */
static __attribute__((unused)) long eh_post_retry(const char *url, const char *path, const char *body)
{
    uint64_t deadline = slb_now_ms() + 10000;
    long st;
    while ((st = eh_post(url, path, body, NULL, 0)) != 200 && (st == 0 || st >= 500) && slb_now_ms() < deadline)
        usleep(100 * 1000);
    return st;
}

static __attribute__((unused)) int eh_ready(const char *url)
{
    char out[256];
    return eh_post(url, "/v3/kv/range", "{\"key\":\"X19yZWFkeQ==\"}", out, sizeof(out)) == 200;
}

static __attribute__((unused)) void eh_wait_ready(struct etcd_h *h, int i, int timeout_ms)
{
    uint64_t deadline = slb_now_ms() + (uint64_t)timeout_ms;
    while (!eh_ready(h->url[i])) {
        ck_assert_msg(slb_now_ms() < deadline, "etcd member %d (%s) not ready within %d ms; see %s", i, h->url[i],
                      timeout_ms, h->dir);
        usleep(50 * 1000);
    }
}

static __attribute__((unused)) void eh_stop_member(struct etcd_h *h, int i, int sig)
{
    if (h->pid[i] <= 0)
        return;
    kill(h->pid[i], sig);
    for (int k = 0; k < 100; k++) {
        if (waitpid(h->pid[i], NULL, WNOHANG) == h->pid[i]) {
            h->pid[i] = 0;
            return;
        }
        usleep(50 * 1000);
    }
    kill(h->pid[i], SIGKILL);
    waitpid(h->pid[i], NULL, 0);
    h->pid[i] = 0;
}

static __attribute__((unused)) void eh_restart_member(struct etcd_h *h, int i)
{
    eh_spawn(h, i);
    eh_wait_ready(h, i, 15000);
}

static __attribute__((unused)) int eh_rm(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static __attribute__((unused)) void eh_destroy(struct etcd_h *h)
{
    if (h == NULL)
        return;
    for (int i = 0; i < h->n; i++)
        eh_stop_member(h, i, SIGTERM);
    if (h->dir[0] != '\0')
        nftw(h->dir, eh_rm, 16, FTW_DEPTH | FTW_PHYS);
    h->dir[0] = '\0';
    if (eh_current == h)
        eh_current = NULL;
}

static __attribute__((unused)) void eh_atexit(void)
{
    eh_destroy(eh_current);
}

/*
 * A janitor process removes the dir once the test process is gone, however it
 * ends (Check's failure path and timeout kill skip atexit): it waits for EOF on
 * a pipe whose write end only the test process holds (close-on-exec).
 */
static __attribute__((unused)) void eh_janitor(const char *dir)
{
    int p[2];
    pid_t pid;

    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char c;
        setsid(); /* Check kills the test's process group when the test ends */
        close(p[1]);
        while (read(p[0], &c, 1) < 0)
            ;
        usleep(300 * 1000); /* members die by PDEATHSIG meanwhile */
        nftw(dir, eh_rm, 16, FTW_DEPTH | FTW_PHYS);
        _exit(0);
    }
    close(p[0]); /* p[1] stays open until the test process exits */
}

/* Starts n members (1 or 3) and waits until every one answers. */
static __attribute__((unused)) void eh_start(struct etcd_h *h, int n)
{
    memset(h, 0, sizeof(*h));
    h->n = n;
    snprintf(h->dir, sizeof(h->dir), "/tmp/sidelb-etcd-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(h->dir));
    eh_current = h;
    atexit(eh_atexit);
    eh_janitor(h->dir);
    for (int i = 0; i < n; i++) {
        h->cport[i] = eh_free_port();
        h->pport[i] = eh_free_port();
        snprintf(h->url[i], sizeof(h->url[i]), "http://127.0.0.1:%d", h->cport[i]);
    }
    for (int i = 0; i < n; i++)
        eh_spawn(h, i);
    for (int i = 0; i < n; i++)
        eh_wait_ready(h, i, 20000);
}

/* Blocking put/delete through member i (test scripts only). */
static __attribute__((unused)) void eh_put(struct etcd_h *h, int i, const char *key, const char *value)
{
    char k[512], v[1024], body[1700];
    slb_base64_encode(key, strlen(key), k);
    slb_base64_encode(value, strlen(value), v);
    snprintf(body, sizeof(body), "{\"key\":\"%s\",\"value\":\"%s\"}", k, v);
    ck_assert_int_eq(eh_post_retry(h->url[i], "/v3/kv/put", body), 200);
}

static __attribute__((unused)) void eh_del(struct etcd_h *h, int i, const char *key)
{
    char k[512], body[600];
    slb_base64_encode(key, strlen(key), k);
    snprintf(body, sizeof(body), "{\"key\":\"%s\"}", k);
    ck_assert_int_eq(eh_post_retry(h->url[i], "/v3/kv/deleterange", body), 200);
}

/* Returns the current revision after a write to a scratch key. */
static __attribute__((unused)) long long eh_revision(struct etcd_h *h, int i)
{
    char out[1024], *p;
    ck_assert_int_eq(eh_post(h->url[i], "/v3/kv/range", "{\"key\":\"X19yZWFkeQ==\"}", out, sizeof(out)), 200);
    p = strstr(out, "\"revision\":\"");
    ck_assert_ptr_nonnull(p);
    return atoll(p + 12);
}

static __attribute__((unused)) void eh_compact(struct etcd_h *h, int i, long long rev)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"revision\":\"%lld\",\"physical\":true}", rev);
    ck_assert_int_eq(eh_post(h->url[i], "/v3/kv/compaction", body, NULL, 0), 200);
}

/* ---- loop helpers ---- */

static __attribute__((unused)) void eh_tick(uv_timer_t *t) {}

/* Runs the loop until *flag becomes nonzero or timeout_ms passes; returns *flag. */
static __attribute__((unused)) int eh_run_until(uv_loop_t *loop, volatile int *flag, int timeout_ms)
{
    uv_timer_t t;
    uint64_t deadline = slb_now_ms() + (uint64_t)timeout_ms;

    uv_timer_init(loop, &t);
    uv_timer_start(&t, eh_tick, 10, 10);
    while (!*flag && slb_now_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag;
}

/* Runs the loop for ms milliseconds. */
static __attribute__((unused)) void eh_run_for(uv_loop_t *loop, int ms)
{
    int never = 0;
    eh_run_until(loop, &never, ms);
}

/* Closes what is left and checks that nothing leaked. */
static __attribute__((unused)) void eh_loop_finish(uv_loop_t *loop)
{
    for (int i = 0; i < 100 && uv_loop_alive(loop); i++)
        uv_run(loop, UV_RUN_NOWAIT);
    ck_assert_int_eq(uv_loop_close(loop), 0);
}

#endif
