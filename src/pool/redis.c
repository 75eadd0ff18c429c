/* pool/redis.c — see redis.h. */
#include "pool/redis.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/time.h>

/* ---- URLs ---- */

const char *sdw_redis_url_redact(const char *url, char *buf, size_t cap) {
    const char *at = strrchr(url, '@');
    if (!at) {
        snprintf(buf, cap, "%s", url);
        return buf;
    }
    const char *start = strstr(url, "//");
    start = start && start < at ? start + 2 : url;
    snprintf(buf, cap, "%.*s:***%s", (int)(start - url), url, at);
    return buf;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (cap bytes with the NUL); false on a bad escape, a NUL byte
 * or a result that does not fit. */
static bool pct_decode(const char *s, size_t n, char *out, size_t cap, const char **why) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n) {
                *why = "a '%' escape is cut short";
                return false;
            }
            int a = hexval(s[i + 1]), b = hexval(s[i + 2]);
            if (a < 0 || b < 0) {
                *why = "a '%' is not followed by two hex digits";
                return false;
            }
            c = (char)(a * 16 + b);
            if (!c) {
                *why = "%00 (a NUL byte) is not allowed";
                return false;
            }
            i += 2;
        }
        if (o + 1 >= cap) {
            *why = "it is too long";
            return false;
        }
        out[o++] = c;
    }
    out[o] = 0;
    return true;
}

/* A whole decimal number in [lo, hi] spelled by s[0..n). */
static bool parse_uint(const char *s, size_t n, long lo, long hi, long *out) {
    if (n == 0 || n > 9) return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi) return false;
    *out = v;
    return true;
}

sdw_status sdw_redis_url_parse(const char *url, sdw_redis_url *out, sdw_error *err) {
    char shown[400];
    sdw_redis_url_redact(url, shown, sizeof shown);
#define BAD(...)                                                                                   \
    do {                                                                                           \
        char why_[256];                                                                            \
        snprintf(why_, sizeof why_, __VA_ARGS__);                                                  \
        return sdw_error_set(err, SDW_E_INVALID_ARG, "Redis URL '%s': %s", shown, why_);          \
    } while (0)
    static const char scheme[] = "redis://";
    if (!strncmp(url, "rediss://", 9))
        BAD("TLS (rediss://) is not supported by this build: reach Redis over a private network "
            "or a TLS tunnel (stunnel, spiped) and give its redis:// address");
    if (strncmp(url, scheme, sizeof scheme - 1))
        BAD("it must start with redis:// (redis://[:PASSWORD@]HOST[:PORT][/DB])");
    sdw_redis_url u = {.port = 6379};
    const char *rest = url + sizeof scheme - 1;
    /* The last '@' ends the credentials, so a password may hold '@' or '/' unescaped. */
    const char *at = strrchr(rest, '@');
    const char *host = rest;
    if (at) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        const char *why = NULL;
        size_t ulen = colon ? (size_t)(colon - rest) : (size_t)(at - rest);
        if (!pct_decode(rest, ulen, u.user, sizeof u.user, &why)) BAD("the user name: %s", why);
        if (colon && !pct_decode(colon + 1, (size_t)(at - colon - 1), u.password,
                                 sizeof u.password, &why))
            BAD("the password: %s", why);
        if (colon && !u.password[0]) BAD("the password after ':' is empty");
        host = at + 1;
    }
    const char *end = host + strcspn(host, "/?#");
    const char *port = NULL;
    size_t hlen;
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (!close) BAD("an IPv6 address must be closed by ']'");
        if (close + 1 < end && close[1] != ':') BAD("unexpected text after the IPv6 address");
        port = close + 1 < end ? close + 2 : NULL;
        host++;
        hlen = (size_t)(close - host);
    } else {
        const char *colon = memchr(host, ':', (size_t)(end - host));
        port = colon ? colon + 1 : NULL;
        hlen = colon ? (size_t)(colon - host) : (size_t)(end - host);
    }
    if (hlen == 0) BAD("it names no host");
    if (hlen >= sizeof u.host) BAD("the host name is too long");
    for (size_t i = 0; i < hlen; i++)
        if ((unsigned char)host[i] <= ' ' || host[i] == '%' || host[i] == '@')
            BAD("the host name holds a character that cannot be in one");
    memcpy(u.host, host, hlen);
    long v;
    if (port && !parse_uint(port, (size_t)(end - port), 1, 65535, &v))
        BAD("the port '%.*s' is not a number in 1-65535", (int)SDW_MIN(end - port, 16), port);
    if (port) u.port = (int)v;
    if (*end == '/' && end[1]) {
        const char *db = end + 1;
        size_t dlen = strcspn(db, "?#");
        if (!parse_uint(db, dlen, 0, 1000000, &v))
            BAD("the database '%.*s' is not a number in 0-1000000 (redis://HOST:PORT/DB)",
                (int)SDW_MIN(dlen, 16), db);
        u.db = (int)v;
        end = db + dlen;
    } else if (*end == '/') {
        end++;
    }
    if (*end) BAD("unexpected '%.16s' after the address (no options are taken)", end);
    char hostpart[sizeof u.host + 2];
    snprintf(hostpart, sizeof hostpart, strchr(u.host, ':') ? "[%s]" : "%s", u.host);
    snprintf(u.redacted, sizeof u.redacted, "redis://%s%s%s%s:%d/%d", u.user,
             u.password[0] ? ":***" : "", u.user[0] || u.password[0] ? "@" : "", hostpart,
             u.port, u.db);
    *out = u;
    return SDW_OK;
#undef BAD
}

/* ---- argument lists ---- */

void sdw_redis_args_bin(sdw_redis_args *a, const void *data, size_t len) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 16;
        a->v = realloc(a->v, (size_t)a->cap * sizeof *a->v);
        a->len = realloc(a->len, (size_t)a->cap * sizeof *a->len);
        SDW_ASSERT(a->v && a->len);
    }
    char *copy = sdw_xmalloc(len + 1);
    if (len) memcpy(copy, data, len);
    copy[len] = 0;
    a->v[a->n] = copy;
    a->len[a->n++] = len;
}

void sdw_redis_args_str(sdw_redis_args *a, const char *s) { sdw_redis_args_bin(a, s, strlen(s)); }

void sdw_redis_args_int(sdw_redis_args *a, long long v) { sdw_redis_args_fmt(a, "%lld", v); }

void sdw_redis_args_num(sdw_redis_args *a, double v) { sdw_redis_args_fmt(a, "%.17g", v); }

void sdw_redis_args_fmt(sdw_redis_args *a, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    SDW_ASSERT(n >= 0 && (size_t)n < sizeof buf); /* formats of names and numbers only */
    sdw_redis_args_bin(a, buf, (size_t)n);
}

void sdw_redis_args_reset(sdw_redis_args *a) {
    for (int i = 0; i < a->n; i++) free(a->v[i]);
    a->n = 0;
}

void sdw_redis_args_free(sdw_redis_args *a) {
    if (!a) return;
    sdw_redis_args_reset(a);
    free(a->v);
    free(a->len);
    *a = (sdw_redis_args){0};
}

/* ---- connections ---- */

struct sdw_redis {
    redisContext *ctx;
    sdw_redis_params p;
    char name[400]; /* the redacted URL */
    bool broken;
};

sdw_redis_params sdw_redis_params_default(void) {
    return (sdw_redis_params){.connect_timeout_s = 2, .io_timeout_s = 5, .backoff_min_s = 0.1,
                              .backoff_max_s = 5, .max_idle = 16};
}

static sdw_redis_params params_or_default(const sdw_redis_params *in) {
    sdw_redis_params d = sdw_redis_params_default(), p = in ? *in : d;
    if (p.connect_timeout_s <= 0) p.connect_timeout_s = d.connect_timeout_s;
    if (p.io_timeout_s <= 0) p.io_timeout_s = d.io_timeout_s;
    if (p.backoff_min_s <= 0) p.backoff_min_s = d.backoff_min_s;
    if (p.backoff_max_s <= 0) p.backoff_max_s = d.backoff_max_s;
    if (p.backoff_max_s < p.backoff_min_s) p.backoff_max_s = p.backoff_min_s;
    if (p.max_idle <= 0) p.max_idle = d.max_idle;
    return p;
}

static struct timeval tv_of(double s) {
    struct timeval tv;
    tv.tv_sec = (time_t)floor(s);
    tv.tv_usec = (suseconds_t)((s - floor(s)) * 1e6);
    return tv;
}

/* Runs a command on a fresh connection during open (AUTH, SELECT); what describes it. */
static sdw_status open_cmd(sdw_redis *c, const sdw_redis_args *a, const char *what,
                           sdw_error *err) {
    redisReply *r = NULL;
    sdw_status s = sdw_redis_exec(c, a, 0, &r, err);
    if (s == SDW_E_BACKEND) sdw_error_prefix(err, "%s refused", what);
    freeReplyObject(r);
    return s;
}

sdw_status sdw_redis_open(const sdw_redis_url *u, const sdw_redis_params *params,
                          sdw_redis **out, sdw_error *err) {
    sdw_redis *c = sdw_xcalloc(1, sizeof *c);
    c->p = params_or_default(params);
    snprintf(c->name, sizeof c->name, "%s", u->redacted);
    c->ctx = redisConnectWithTimeout(u->host, u->port, tv_of(c->p.connect_timeout_s));
    sdw_status s = SDW_OK;
    sdw_redis_args a = {0};
    if (!c->ctx || c->ctx->err) {
        s = sdw_error_set(err, SDW_E_UNAVAILABLE, "cannot connect to Redis at %s: %s", c->name,
                          c->ctx ? c->ctx->errstr : "out of memory");
        goto fail;
    }
    if (redisSetTimeout(c->ctx, tv_of(c->p.io_timeout_s)) != REDIS_OK ||
        redisEnableKeepAlive(c->ctx) != REDIS_OK) {
        s = sdw_error_set(err, SDW_E_UNAVAILABLE, "Redis at %s: cannot set socket options: %s",
                          c->name, c->ctx->errstr);
        goto fail;
    }
    if (u->password[0]) {
        sdw_redis_args_str(&a, "AUTH");
        if (u->user[0]) sdw_redis_args_str(&a, u->user);
        sdw_redis_args_str(&a, u->password);
        if ((s = open_cmd(c, &a, "AUTH (the user name or password)", err))) goto fail;
        sdw_redis_args_reset(&a);
    }
    if (u->db) {
        sdw_redis_args_str(&a, "SELECT");
        sdw_redis_args_int(&a, u->db);
        if ((s = open_cmd(c, &a, "SELECT (the database number)", err))) goto fail;
    }
    sdw_redis_args_free(&a);
    *out = c;
    return SDW_OK;
fail:
    sdw_redis_args_free(&a);
    sdw_redis_close(c);
    return s;
}

void sdw_redis_close(sdw_redis *c) {
    if (!c) return;
    if (c->ctx) redisFree(c->ctx);
    free(c);
}

bool sdw_redis_broken(const sdw_redis *c) { return c->broken; }

sdw_status sdw_redis_exec(sdw_redis *c, const sdw_redis_args *a, double block_s,
                          redisReply **reply, sdw_error *err) {
    SDW_ASSERT(a->n > 0);
    if (c->broken)
        return sdw_error_set(err, SDW_E_UNAVAILABLE, "Redis at %s: the connection was lost",
                             c->name);
    if (block_s > 0) redisSetTimeout(c->ctx, tv_of(c->p.io_timeout_s + block_s));
    redisReply *r = redisCommandArgv(c->ctx, a->n, (const char **)a->v, a->len);
    if (block_s > 0 && r) redisSetTimeout(c->ctx, tv_of(c->p.io_timeout_s));
    if (!r) {
        /* A failed or timed-out exchange leaves the stream out of step: drop the connection. */
        c->broken = true;
        const bool timeout = c->ctx->err == REDIS_ERR_IO &&
                             (errno == EAGAIN || errno == EWOULDBLOCK || errno == ETIMEDOUT);
        return sdw_error_set(err, SDW_E_UNAVAILABLE, "Redis at %s: %s (%.32s)", c->name,
                             timeout ? "no reply in time" : c->ctx->errstr, a->v[0]);
    }
    if (r->type == REDIS_REPLY_ERROR) {
        sdw_status s = sdw_error_set(err, SDW_E_BACKEND, "Redis at %s: %.*s (%.32s)", c->name,
                                     (int)SDW_MIN(r->len, 300), r->str, a->v[0]);
        freeReplyObject(r);
        return s;
    }
    *reply = r;
    return SDW_OK;
}

/* ---- the pool ---- */

struct sdw_redis_pool {
    sdw_redis_url url;
    sdw_redis_params p;
    pthread_mutex_t mu;
    sdw_redis **idle;
    int n_idle;
    /* Redis is believed unreachable from `down` until a connection succeeds. */
    bool down, probing;
    double next_try, delay; /* sdw_time_now() of the next attempt; the current backoff */
    char last_error[SDW_ERROR_MSG_MAX];
};

sdw_redis_pool *sdw_redis_pool_create(const sdw_redis_url *u, const sdw_redis_params *params) {
    sdw_redis_pool *p = sdw_xcalloc(1, sizeof *p);
    p->url = *u;
    p->p = params_or_default(params);
    p->idle = sdw_xcalloc((size_t)p->p.max_idle, sizeof *p->idle);
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

void sdw_redis_pool_destroy(sdw_redis_pool *p) {
    if (!p) return;
    for (int i = 0; i < p->n_idle; i++) sdw_redis_close(p->idle[i]);
    free(p->idle);
    pthread_mutex_destroy(&p->mu);
    /* the password lives in the URL copy: not left behind in freed memory */
    memset(&p->url, 0, sizeof p->url);
    free(p);
}

const char *sdw_redis_pool_name(const sdw_redis_pool *p) { return p->url.redacted; }

double sdw_redis_pool_retry_in(sdw_redis_pool *p) {
    pthread_mutex_lock(&p->mu);
    double left = p->down ? SDW_MAX(0.0, p->next_try - sdw_time_now()) : 0;
    pthread_mutex_unlock(&p->mu);
    return left;
}

sdw_status sdw_redis_pool_get(sdw_redis_pool *p, sdw_redis **out, sdw_error *err) {
    pthread_mutex_lock(&p->mu);
    if (p->n_idle > 0) {
        *out = p->idle[--p->n_idle];
        pthread_mutex_unlock(&p->mu);
        return SDW_OK;
    }
    const double now = sdw_time_now();
    /* While down, one caller at a time probes; the others are answered at once. */
    if (p->down && (now < p->next_try || p->probing)) {
        sdw_status s = sdw_error_set(err, SDW_E_UNAVAILABLE, "%s (next attempt in %.1f s)",
                                     p->last_error, SDW_MAX(0.0, p->next_try - now));
        pthread_mutex_unlock(&p->mu);
        return s;
    }
    const bool probe = p->down;
    if (probe) p->probing = true;
    pthread_mutex_unlock(&p->mu);

    sdw_error e = {0};
    sdw_status s = sdw_redis_open(&p->url, &p->p, out, &e);

    pthread_mutex_lock(&p->mu);
    if (probe) p->probing = false;
    if (s == SDW_OK) {
        if (p->down) SDW_WARN("Redis at %s is reachable again", p->url.redacted);
        p->down = false;
        p->delay = 0;
    } else if (s == SDW_E_UNAVAILABLE) {
        p->delay = p->delay > 0 ? SDW_MIN(2 * p->delay, p->p.backoff_max_s) : p->p.backoff_min_s;
        p->next_try = sdw_time_now() + p->delay;
        if (!p->down) SDW_WARN("%s; retrying with backoff (up to every %.1f s)", e.msg,
                               p->p.backoff_max_s);
        p->down = true;
        snprintf(p->last_error, sizeof p->last_error, "%s", e.msg);
    }
    pthread_mutex_unlock(&p->mu);
    if (s != SDW_OK && err) *err = e;
    return s;
}

void sdw_redis_pool_put(sdw_redis_pool *p, sdw_redis *c) {
    if (!c) return;
    sdw_redis **stale = NULL;
    int n_stale = 0;
    pthread_mutex_lock(&p->mu);
    if (c->broken && p->n_idle > 0) {
        /* The idle ones most likely broke with it (a Redis restart): close them all, so the
         * next get connects anew instead of failing on a dead socket. */
        stale = sdw_xmalloc((size_t)p->n_idle * sizeof *stale);
        memcpy(stale, p->idle, (size_t)p->n_idle * sizeof *stale);
        n_stale = p->n_idle;
        p->n_idle = 0;
    }
    if (!c->broken && p->n_idle < p->p.max_idle) {
        p->idle[p->n_idle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < n_stale; i++) sdw_redis_close(stale[i]);
    free(stale);
    sdw_redis_close(c); /* broken, or over max_idle */
}

/* ---- replies ---- */

const char *sdw_redis_reply_str(const redisReply *r) {
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) ? r->str : NULL;
}

const redisReply *sdw_redis_reply_at(const redisReply *r, size_t i) {
    return r && r->type == REDIS_REPLY_ARRAY && i < r->elements ? r->element[i] : NULL;
}

const redisReply *sdw_redis_reply_field(const redisReply *r, const char *name) {
    if (!r || r->type != REDIS_REPLY_ARRAY) return NULL;
    const size_t n = strlen(name);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i];
        if (k->type == REDIS_REPLY_STRING && k->len == n && !memcmp(k->str, name, n))
            return r->element[i + 1];
    }
    return NULL;
}

bool sdw_redis_reply_ll(const redisReply *r, long long *out) {
    if (!r) return false;
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return true;
    }
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20) return false;
    char buf[24], *end;
    memcpy(buf, r->str, r->len);
    buf[r->len] = 0;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}
