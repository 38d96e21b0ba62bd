/*
 * sidelb daemon: argv, config load, signals, sd_notify. Wiring only; the
 * work is in libsidelb (lib/).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "common.h"
#include "config.h"
#include "log.h"
#include "server.h"

#define SIDELB_VERSION   SLB_VERSION
#define DEFAULT_GRACE_MS 5000

/* The running server and its config; a reload replaces both. */
static struct slb_server *server;
static struct slb_config *config;
static const char *config_path;
static uv_loop_t *loop;
static uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
static uint64_t grace_ms = DEFAULT_GRACE_MS;
static int cli_log_level = -1; /* -l overrides the config's log_level, also across reloads */
static uv_timer_t watchdog_timer;
static int watchdog_on;

/* systemd's notify protocol (sd_notify(3)) without linking libsystemd. */
static void sd_notify_msg(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    socklen_t len;
    int fd;

    if (path == NULL || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
        return;
    strcpy(sa.sun_path, path);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        return;
    (void)sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    close(fd);
}

/*
 * systemd's watchdog (WatchdogSec=): WATCHDOG=1 from a loop timer at half of
 * WATCHDOG_USEC, so a loop that is stuck (or stopped) stops the pings and
 * systemd restarts the service. The timer is unref'd: it never keeps the
 * loop alive on its own.
 */
static void on_watchdog(uv_timer_t *t)
{
    sd_notify_msg("WATCHDOG=1");
}

static void watchdog_start(void)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    unsigned long long us;
    char *end;

    if (usec == NULL || (pid != NULL && strtol(pid, NULL, 10) != (long)getpid()))
        return;
    us = strtoull(usec, &end, 10);
    if (*end != '\0' || us == 0) {
        slb_warn("WATCHDOG_USEC=\"%s\" is not a number of microseconds; no watchdog pings", usec);
        return;
    }
    uv_timer_init(loop, &watchdog_timer);
    uv_timer_start(&watchdog_timer, on_watchdog, 0, us / 2000 > 0 ? us / 2000 : 1);
    uv_unref((uv_handle_t *)&watchdog_timer);
    watchdog_on = 1;
    slb_info("systemd watchdog: WATCHDOG=1 every %llu ms", us / 2000 > 0 ? us / 2000 : 1);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sidelb -c FILE [-l LEVEL] [--grace-ms N]\n"
            "       sidelb --check-config FILE\n"
            "\n"
            "  -c, --config FILE        run with this JSON config\n"
            "      --check-config FILE  validate FILE, print the first error, exit 0 or 1\n"
            "  -l, --log-level LEVEL    debug, info, notice, warn, error (overrides the config)\n"
            "      --grace-ms N         on SIGTERM, let calls in flight finish for up to N ms (default %d)\n"
            "  -V, --version            print the version\n"
            "  -h, --help               this help\n",
            DEFAULT_GRACE_MS);
}

static void on_stopped(struct slb_server *srv)
{
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&sig_usr1, NULL);
    if (watchdog_on)
        uv_close((uv_handle_t *)&watchdog_timer, NULL);
    watchdog_on = 0;
}

/* A retired server (replaced by a reload, or one whose start failed) is
 * freed with its config once every handle it owns has closed: it calls
 * on_retired only then, wherever its backends and connections went. */
static void on_retired(struct slb_server *srv)
{
    struct slb_config *cfg = (struct slb_config *)srv->cfg;

    slb_server_dispose(srv);
    free(srv);
    slb_config_free(cfg);
}

/*
 * SIGHUP: load the file again; on any error keep running the old config.
 * The new server takes over the listening sockets at unchanged addresses;
 * the old one stops accepting, lets its calls finish (grace period) and
 * hands over the registrations the new config keeps.
 */
static void reload(void)
{
    char err[SLB_CONFIG_ERRLEN];
    struct slb_config *cfg = slb_config_load_file(config_path, err, sizeof(err));
    struct slb_server *srv, *old = server;

    if (cfg == NULL) {
        slb_error("reload: %s; still running the previous config", err);
        return;
    }
    sd_notify_msg("RELOADING=1");
    if ((srv = calloc(1, sizeof(*srv))) == NULL) {
        slb_error("reload: out of memory; still running the previous config");
        slb_config_free(cfg);
        sd_notify_msg("READY=1");
        return;
    }
    slb_server_admin_release(old); /* its port goes to the new server */
    if (slb_server_start_reload(srv, loop, cfg, old, err, sizeof(err)) != 0) {
        slb_error("reload: %s; still running the previous config", err);
        slb_server_stop(srv, 0, on_retired);
        if (slb_server_admin_restore(old, err, sizeof(err)) != 0)
            slb_error("reload: admin listener not restored: %s", err);
        sd_notify_msg("READY=1");
        return;
    }
    __atomic_store_n(&slb_log_level, cli_log_level >= 0 ? cli_log_level : cfg->log_level, __ATOMIC_RELAXED);
    server = srv;
    config = cfg;
    slb_server_retire(old, cfg, grace_ms, on_retired);
    slb_log_write(SLB_LOG_NOTICE, "reloaded %s (%zu listeners, %zu clusters, %zu registrations)", config_path,
                  cfg->n_listeners, cfg->n_clusters, cfg->n_registers);
    sd_notify_msg("READY=1");
}

static void on_signal(uv_signal_t *h, int signum)
{
    if (signum == SIGHUP) {
        if (!server->stopping)
            reload();
        return;
    }
    if (signum == SIGUSR1) { /* logrotate moved the access log */
        slb_server_reopen_logs(server);
        return;
    }
    if (server->stopping) {
        slb_notice("second %s: exiting now", strsignal(signum));
        exit(0);
    }
    slb_notice("%s: draining (up to %llu ms)", strsignal(signum), (unsigned long long)grace_ms);
    sd_notify_msg("STOPPING=1");
    slb_server_stop(server, grace_ms, on_stopped);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 'C'},
        {"log-level", required_argument, NULL, 'l'},
        {"grace-ms", required_argument, NULL, 'g'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *check_path = NULL, *level = NULL;
    char err[SLB_CONFIG_ERRLEN];
    struct slb_config *cfg;
    int c, rv;

    while ((c = getopt_long(argc, argv, "c:l:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'C':
            check_path = optarg;
            break;
        case 'l':
            level = optarg;
            break;
        case 'g':
            grace_ms = strtoull(optarg, NULL, 10);
            break;
        case 'V':
            printf("sidelb %s (nghttp2 %s, libuv %s)\n", SIDELB_VERSION, nghttp2_version(0)->version_str,
                   uv_version_string());
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (check_path != NULL) {
        if ((cfg = slb_config_load_file(check_path, err, sizeof(err))) == NULL) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        printf("%s: OK (%zu listeners, %zu clusters, %zu registrations)\n", check_path, cfg->n_listeners,
               cfg->n_clusters, cfg->n_registers);
        slb_config_free(cfg);
        return 0;
    }
    if (config_path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    if ((cfg = slb_config_load_file(config_path, err, sizeof(err))) == NULL) {
        fprintf(stderr, "sidelb: %s\n", err);
        return 1;
    }
    config = cfg;
    slb_log_level = cfg->log_level;
    if (level != NULL && (slb_log_level = cli_log_level = slb_log_parse_level(level)) < 0) {
        fprintf(stderr, "sidelb: unknown log level \"%s\"\n", level);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    if ((server = calloc(1, sizeof(*server))) == NULL ||
        (rv = slb_server_start(server, loop, cfg, err, sizeof(err))) != 0) {
        slb_error("%s", server == NULL ? "out of memory" : err);
        return 1;
    }
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_hup);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);
    uv_signal_init(loop, &sig_usr1);
    uv_signal_start(&sig_usr1, on_signal, SIGUSR1);
    /* always printed, whatever the level: supervisors and tests wait for it */
    slb_log_write(SLB_LOG_NOTICE, "sidelb %s ready (%zu listeners, %zu clusters)", SIDELB_VERSION, cfg->n_listeners,
                  cfg->n_clusters);
    sd_notify_msg("READY=1");
    watchdog_start();
    uv_run(loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(loop);
    slb_server_dispose(server);
    free(server);
    slb_config_free(config);
    if (rv != 0)
        slb_debug("loop closed with handles open: %s", uv_strerror(rv));
    slb_notice("stopped");
    return 0;
}
