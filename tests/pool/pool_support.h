/* pool_support.h — what the worker-pool tests share: a real redis-server of their own on a free
 * loopback port (a temporary folder, AOF on with appendfsync everysec, no RDB snapshots), which
 * they can stop, kill and restart on the same port and data; and a raw command helper.
 *
 *   pool_redis rs;
 *   if (pool_redis_start(&rs, NULL) != 0) { sdw_test_skip("no redis-server"); return; }
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

#endif
