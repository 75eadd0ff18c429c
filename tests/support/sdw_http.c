/* sdw_http.c — see sdw_http.h. Deliberately simple: one connection per request, blocking I/O
 * with timeouts. */
#define _GNU_SOURCE
#include "sdw_http.h"

#include "sdw_test.h"

#include "core/common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int connect_port(int port, double timeout_s) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = (time_t)timeout_s,
                         .tv_usec = (suseconds_t)((timeout_s - (time_t)timeout_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            return false;
        }
        c += w;
        n -= (size_t)w;
    }
    return true;
}

static bool send_request(int fd, const char *version, const char *method, const char *path,
                         const char *extra, const void *body, size_t len) {
    char head[8192];
    int n = snprintf(head, sizeof head,
                     "%s %s %s\r\nHost: 127.0.0.1\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n",
                     method, path, version, extra ? extra : "", len);
    if (n < 0 || (size_t)n >= sizeof head) return false;
    /* The server may answer (413, 401) before reading the whole body and close: not an error. */
    if (!send_all(fd, head, (size_t)n)) return false;
    if (len) send_all(fd, body, len);
    return true;
}

void sdw_http_resp_free(sdw_http_resp *r) {
    if (!r) return;
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

const char *sdw_http_header(const sdw_http_resp *r, const char *name, char *buf, size_t cap) {
    if (!r->headers) return NULL;
    size_t nl = strlen(name);
    for (const char *l = r->headers; l && *l; l = strstr(l, "\r\n") ? strstr(l, "\r\n") + 2 : NULL) {
        if (!strncasecmp(l, name, nl) && l[nl] == ':') {
            const char *v = l + nl + 1;
            while (*v == ' ') v++;
            size_t n = strcspn(v, "\r\n");
            if (n >= cap) n = cap - 1;
            memcpy(buf, v, n);
            buf[n] = 0;
            return buf;
        }
    }
    return NULL;
}

/* Decodes a chunked body in place; returns the new length. */
static size_t dechunk(char *b, size_t n) {
    size_t in = 0, out = 0;
    while (in < n) {
        char *end;
        unsigned long sz = strtoul(b + in, &end, 16);
        char *crlf = strstr(b + in, "\r\n");
        if (!crlf || end == b + in) break;
        in = (size_t)(crlf - b) + 2;
        if (sz == 0 || in + sz > n) break;
        memmove(b + out, b + in, sz);
        out += sz;
        in += sz + 2;
    }
    b[out] = 0;
    return out;
}

int sdw_http_request(int port, const char *method, const char *path, const char *extra,
                     const void *body, size_t body_len, sdw_http_resp *r) {
    memset(r, 0, sizeof *r);
    int fd = connect_port(port, 600); /* sanitizer builds on a busy machine are slow */
    if (fd < 0) return -1;
    if (!send_request(fd, "HTTP/1.1", method, path, extra, body, body_len)) {
        close(fd);
        return -1;
    }
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 4096 > cap) buf = realloc(buf, cap *= 2);
        ssize_t got = recv(fd, buf + n, cap - n - 1, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/%*s %d", &r->status) != 1) {
        free(buf);
        return -1;
    }
    size_t hl = (size_t)(sep - buf) + 2;
    r->headers = strndup(buf, hl);
    r->body_len = n - hl - 2;
    r->body = malloc(r->body_len + 1);
    memcpy(r->body, sep + 4, r->body_len);
    r->body[r->body_len] = 0;
    free(buf);
    char te[64];
    if (sdw_http_header(r, "Transfer-Encoding", te, sizeof te) && !strcasecmp(te, "chunked"))
        r->body_len = dechunk(r->body, r->body_len);
    return 0;
}

int sdw_http_post_json(int port, const char *path, const char *json, sdw_http_resp *r) {
    return sdw_http_request(port, "POST", path, "Content-Type: application/json\r\n", json,
                            strlen(json), r);
}

/* ---- the server process ---- */

int sdw_test_server_start(sdw_test_server *s, const char *key, const char *fmt, ...) {
    char args[4096], cmd[5000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "exec '%s' serve --port 0 %s", sdw_test_bin(), args);
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return -1;
    memset(s, 0, sizeof *s);
    s->pid = fork();
    if (s->pid < 0) return -1;
    if (s->pid == 0) {
        dup2(p[1], 1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    s->out_fd = p[0];
    /* "sdw: listening on http://127.0.0.1:PORT" */
    char line[512];
    size_t n = 0;
    double t0 = sdw_time_now();
    while (s->port == 0 && sdw_time_now() - t0 < 30) {
        struct pollfd pf = {.fd = s->out_fd, .events = POLLIN};
        if (poll(&pf, 1, 1000) <= 0) continue;
        ssize_t got = read(s->out_fd, line + n, sizeof line - 1 - n);
        if (got <= 0) break;
        n += (size_t)got;
        line[n] = 0;
        char *at = strstr(line, "listening on http://");
        if (at && strchr(at, '\n')) {
            *strchr(at, '\n') = 0;
            char *colon = strrchr(at, ':');
            s->port = colon ? atoi(colon + 1) : 0;
        }
    }
    if (!s->port) {
        fprintf(stderr, "server did not start: %s\n", args);
        sdw_test_server_stop(s);
        return -1;
    }
    char auth[300] = "";
    if (key) snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", key);
    while (sdw_time_now() - t0 < 60) {
        sdw_http_resp r;
        int rc = sdw_http_request(s->port, "GET", "/ready", auth, NULL, 0, &r);
        int st = r.status;
        sdw_http_resp_free(&r);
        if (rc == 0 && st == 200) return 0;
        usleep(20000);
    }
    fprintf(stderr, "server never became ready\n");
    sdw_test_server_stop(s);
    return -1;
}

int sdw_test_server_stop(sdw_test_server *s) {
    if (s->pid <= 0) return -1;
    kill(s->pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 300; i++) { /* 30 s */
        pid_t w = waitpid(s->pid, &st, WNOHANG);
        if (w == s->pid) break;
        if (i == 299) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            st = -1;
        }
        usleep(100000);
    }
    if (s->out_fd > 0) close(s->out_fd);
    s->pid = 0;
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

long sdw_test_server_rss_kb(const sdw_test_server *s) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)s->pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    fclose(f);
    return kb;
}

/* ---- Server-Sent Events ---- */

struct sdw_sse {
    int fd;
    char *buf;
    size_t len, cap;
};

sdw_sse *sdw_sse_open(int port, const char *path, const char *extra, int *status) {
    int fd = connect_port(port, 60);
    if (fd < 0) return NULL;
    /* HTTP/1.0: the stream comes unchunked and ends with the connection. */
    if (!send_request(fd, "HTTP/1.0", "GET", path, extra, NULL, 0)) {
        close(fd);
        return NULL;
    }
    sdw_sse *s = calloc(1, sizeof *s);
    s->fd = fd;
    s->cap = 65536;
    s->buf = malloc(s->cap);
    /* Read through the header block. */
    for (;;) {
        char *sep = s->len ? memmem(s->buf, s->len, "\r\n\r\n", 4) : NULL;
        if (sep) {
            int st = 0;
            sscanf(s->buf, "HTTP/%*s %d", &st);
            if (status) *status = st;
            size_t hl = (size_t)(sep - s->buf) + 4;
            memmove(s->buf, s->buf + hl, s->len - hl);
            s->len -= hl;
            if (st != 200) break;
            return s;
        }
        ssize_t got = recv(fd, s->buf + s->len, s->cap - s->len - 1, 0);
        if (got <= 0) break;
        s->len += (size_t)got;
    }
    sdw_sse_close(s);
    return NULL;
}

int sdw_sse_next(sdw_sse *s, char *event, size_t cap, char **data, double timeout_s) {
    double t0 = sdw_time_now();
    *data = NULL;
    for (;;) {
        char *end = s->len ? memmem(s->buf, s->len, "\n\n", 2) : NULL;
        if (end) {
            size_t n = (size_t)(end - s->buf) + 2;
            *end = 0;
            snprintf(event, cap, "message");
            bool any = false;
            char *save = NULL; /* strtok_r: streams are read from many threads at once */
            for (char *l = strtok_r(s->buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                if (!strncmp(l, "event: ", 7)) snprintf(event, cap, "%s", l + 7), any = true;
                else if (!strncmp(l, "data: ", 6)) free(*data), *data = strdup(l + 6), any = true;
            }
            memmove(s->buf, s->buf + n, s->len - n);
            s->len -= n;
            if (any) return 0; /* else a comment block (keepalive): keep reading */
            continue;
        }
        double left = timeout_s - (sdw_time_now() - t0);
        if (left <= 0) return -1;
        struct pollfd pf = {.fd = s->fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0) return -1;
        if (s->len + 65536 > s->cap) s->buf = realloc(s->buf, s->cap *= 2);
        ssize_t got = recv(s->fd, s->buf + s->len, s->cap - s->len - 1, 0);
        if (got <= 0) return -1;
        s->len += (size_t)got;
    }
}

void sdw_sse_close(sdw_sse *s) {
    if (!s) return;
    close(s->fd);
    free(s->buf);
    free(s);
}
