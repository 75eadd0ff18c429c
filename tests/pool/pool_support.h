/* pool_support.h — what the worker-pool tests share: a real redis-server of their own on a free
 * loopback port (a temporary folder, AOF on with appendfsync everysec, no RDB snapshots), which
 * they can stop, kill and restart on the same port and data; and a raw command helper.
 *
 *   pool_redis rs;
 *   ASSERT_TRUE(pool_redis_start(&rs, NULL) == 0);   // no redis-server is a failure, not a skip
 *   redisReply *r = pool_redis_cmd(&rs, "PING");  ... freeReplyObject(r);
 *   pool_redis_stop(&rs);                         // SIGTERM: Redis fsyncs its AOF and exits
 *   pool_redis_restart(&rs);                      // same port, same folder: the AOF is replayed
 *   pool_redis_destroy(&rs);                      // stops it and removes its folder
 *
 * Static functions in a header (tests/support holds the shared library's files; these only
 * concern the pool's tests): each test includes it once. */
#ifndef SDW_POOL_SUPPORT_H
#define SDW_POOL_SUPPORT_H

#define _GNU_SOURCE
#include "sdw_test.h"

#include "core/common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define POOL_UNUSED __attribute__((unused))

typedef struct pool_redis {
    pid_t pid;
    int port;
    char dir[256];
    char password[64]; /* "" = none */
    char url[128];     /* redis://[:pw@]127.0.0.1:port/0 */
} pool_redis;

/* A TCP port nobody listens on right now (bound to port 0, then released). */
static POOL_UNUSED int pool_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &n)) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static POOL_UNUSED void pool_sleep(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

static POOL_UNUSED redisContext *pool_redis_connect(const pool_redis *rs) {
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", rs->port, tv);
    if (!c || c->err) {
        if (c) redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, (struct timeval){5, 0});
    if (rs->password[0]) {
        redisReply *r = redisCommand(c, "AUTH %s", rs->password);
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        if (r) freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

/* Starts redis-server on rs->port (a free one when 0) in rs->dir (a new temporary folder when
 * empty); waits until it answers PING. Returns 0, or -1 (no redis-server, or it did not come
 * up within 10 s). */
static POOL_UNUSED int pool_redis_launch(pool_redis *rs) {
    if (!rs->dir[0]) {
        snprintf(rs->dir, sizeof rs->dir, "%s/redis-XXXXXX", sdw_test_tmpdir());
        if (!mkdtemp(rs->dir)) return -1;
    }
    if (!rs->port && (rs->port = pool_free_port()) < 0) return -1;
    char port[16], log[300];
    snprintf(port, sizeof port, "%d", rs->port);
    snprintf(log, sizeof log, "%s/redis.log", rs->dir);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) dup2(null, 0), dup2(null, 1);
        const char *argv[32] = {"redis-server", "--port", port, "--bind", "127.0.0.1",
                                "--dir", rs->dir, "--save", "", "--appendonly", "yes",
                                "--appendfsync", "everysec", "--daemonize", "no",
                                "--logfile", log, "--protected-mode", "no"};
        int n = 19;
        if (rs->password[0]) {
            argv[n++] = "--requirepass";
            argv[n++] = rs->password;
        }
        argv[n] = NULL;
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    rs->pid = pid;
    for (int i = 0; i < 200; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            rs->pid = 0;
            return -1;
        }
        redisContext *c = pool_redis_connect(rs);
        if (c) {
            redisReply *r = redisCommand(c, "PING");
            bool ok = r && r->type == REDIS_REPLY_STATUS;
            if (r) freeReplyObject(r);
            redisFree(c);
            if (ok) return 0;
        }
        pool_sleep(0.05);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    rs->pid = 0;
    return -1;
}

/* password: NULL or "" = none. */
static POOL_UNUSED int pool_redis_start(pool_redis *rs, const char *password) {
    *rs = (pool_redis){0};
    if (password) snprintf(rs->password, sizeof rs->password, "%s", password);
    if (pool_redis_launch(rs) != 0) return -1;
    snprintf(rs->url, sizeof rs->url, "redis://%s%s%s127.0.0.1:%d/0",
             rs->password[0] ? ":" : "", rs->password, rs->password[0] ? "@" : "", rs->port);
    return 0;
}

/* SIGTERM (a clean shutdown: the AOF is flushed) or SIGKILL; waits for the process. */
static POOL_UNUSED void pool_redis_signal(pool_redis *rs, int sig) {
    if (rs->pid <= 0) return;
    kill(rs->pid, sig);
    waitpid(rs->pid, NULL, 0);
    rs->pid = 0;
}
static POOL_UNUSED void pool_redis_stop(pool_redis *rs) { pool_redis_signal(rs, SIGTERM); }

/* Starts it again on the same port and folder (its AOF is read back). */
static POOL_UNUSED int pool_redis_restart(pool_redis *rs) { return pool_redis_launch(rs); }

static POOL_UNUSED void pool_redis_destroy(pool_redis *rs) {
    pool_redis_stop(rs);
    if (rs->dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", rs->dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", rs->dir);
        rs->dir[0] = 0;
    }
}

/* One command on a fresh connection (hiredis format); NULL when Redis cannot be reached. */
static POOL_UNUSED redisReply *pool_redis_cmd(const pool_redis *rs, const char *fmt, ...) {
    redisContext *c = pool_redis_connect(rs);
    if (!c) return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* An integer-valued command's result (INCR, XLEN, HGET of a number ...); -1 on any failure. */
static POOL_UNUSED long long pool_redis_int(const pool_redis *rs, const char *fmt, ...) {
    redisContext *c = pool_redis_connect(rs);
    if (!c) return -1;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    long long v = -1;
    if (r && r->type == REDIS_REPLY_INTEGER) v = r->integer;
    else if (r && r->type == REDIS_REPLY_STRING) v = atoll(r->str);
    if (r) freeReplyObject(r);
    return v;
}

/* ---- sdw processes (workers, gateways, local servers) ---- */

typedef struct pool_proc {
    pid_t pid;
    char log[300]; /* its standard output and error */
} pool_proc;

/* Starts `sdw ARGS` in the background (fmt: the arguments, shell-quoted by the caller), with
 * env (NULL, or "NAME=value ..." put before it on the shell line) and its output into a new log
 * file. Returns 0 or -1. */
static POOL_UNUSED int pool_spawn(pool_proc *p, const char *env, const char *fmt, ...) {
    static int n_logs;
    char args[4096], cmd[5000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    *p = (pool_proc){0};
    snprintf(p->log, sizeof p->log, "%s/proc-%d-%d.log", sdw_test_tmpdir(), (int)getpid(),
             n_logs++);
    snprintf(cmd, sizeof cmd, "exec env %s '%s' %s >'%s' 2>&1", env ? env : "", sdw_test_bin(),
             args, p->log);
    p->pid = fork();
    if (p->pid < 0) return -1;
    if (p->pid == 0) {
        setpgid(0, 0);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return 0;
}

/* The log so far (a new string; "" when empty). */
static POOL_UNUSED char *pool_log(const pool_proc *p) {
    size_t n = 0;
    char *t = sdw_test_read_file(p->log, &n);
    if (!t) return strdup("");
    char *s = malloc(n + 1);
    memcpy(s, t, n);
    s[n] = 0;
    free(t);
    return s;
}

/* Whether the process is still running (reaps it when it has ended: *status gets how). */
static POOL_UNUSED bool pool_alive(pool_proc *p, int *status) {
    if (p->pid <= 0) return false;
    int st = 0;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
        p->pid = 0;
        if (status) *status = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
        return false;
    }
    return true;
}

/* Whether p's output so far contains needle. */
static POOL_UNUSED bool pool_logged(const pool_proc *p, const char *needle) {
    char *s = pool_log(p);
    const bool found = strstr(s, needle) != NULL;
    free(s);
    return found;
}

/* Waits until needle shows in the log (true), or the process ends / timeout_s pass (false). */
static POOL_UNUSED bool pool_log_wait(pool_proc *p, const char *needle, double timeout_s) {
    const double t0 = sdw_time_now();
    for (;;) {
        if (pool_logged(p, needle)) return true;
        if (!pool_alive(p, NULL) || sdw_time_now() - t0 > timeout_s) return false;
        pool_sleep(0.02);
    }
}

/* The port a `sdw serve` printed ("listening on http://127.0.0.1:PORT"), or -1. */
static POOL_UNUSED int pool_port(pool_proc *p) {
    if (!pool_log_wait(p, "listening on http://", 60)) return -1;
    char *s = pool_log(p);
    char *at = strstr(s, "listening on http://");
    char *nl = at ? strchr(at, '\n') : NULL;
    int port = -1;
    if (nl) {
        *nl = 0;
        char *colon = strrchr(at, ':');
        port = colon ? atoi(colon + 1) : -1;
    }
    free(s);
    return port;
}

/* Sends sig and waits for the end; returns the exit code (-signal when killed). */
static POOL_UNUSED int pool_stop(pool_proc *p, int sig) {
    if (p->pid <= 0) return -1;
    kill(p->pid, sig);
    int st = 0;
    waitpid(p->pid, &st, 0);
    p->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* Waits for the process to end by itself; its exit code, or -1 if it runs past timeout_s. */
static POOL_UNUSED int pool_wait_exit(pool_proc *p, double timeout_s) {
    const double t0 = sdw_time_now();
    int st = -1;
    while (pool_alive(p, &st)) {
        if (sdw_time_now() - t0 > timeout_s) return -1;
        pool_sleep(0.02);
    }
    return st;
}

#endif
