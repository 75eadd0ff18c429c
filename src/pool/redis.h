/* pool/redis.h — the worker pool's Redis client: redis:// URLs (with a password that is never
 * shown), connections with deadlines, a pool of connections that fails fast while Redis is
 * unreachable and reconnects with capped exponential backoff, and argument lists for commands.
 * A thin layer over hiredis (the synchronous API): replies are hiredis' redisReply.
 *
 *   sdw_redis_url u;
 *   if (sdw_redis_url_parse("redis://:secret@10.0.0.5:6379/2", &u, &err)) ...  // u.redacted is
 *   sdw_redis_pool *pool = sdw_redis_pool_create(&u, NULL);                   // safe to log
 *   sdw_redis *c;
 *   if (sdw_redis_pool_get(pool, &c, &err) == SDW_OK) {       // SDW_E_UNAVAILABLE: Redis down
 *       sdw_redis_args a = {0}; sdw_redis_args_str(&a, "PING");
 *       redisReply *r;
 *       if (sdw_redis_exec(c, &a, 0, &r, &err) == SDW_OK) freeReplyObject(r);
 *       sdw_redis_args_free(&a); sdw_redis_pool_put(pool, c);
 *   }
 *   sdw_redis_pool_destroy(pool);
 *
 * Failures: an error reply from Redis is SDW_E_BACKEND with Redis' text; a connection that
 * cannot be made, breaks, or misses its deadline is SDW_E_UNAVAILABLE (the connection is then
 * marked broken: sdw_redis_pool_put closes it, and the next get reconnects once the backoff
 * allows). Commands are never retried here: the caller knows whether one is safe to repeat.
 * Nothing here logs or returns the password: messages name the server by its redacted URL.
 *
 * Thread safety: a connection (sdw_redis) is used by one thread at a time; the pool and the
 * URL functions may be used from any thread.
 */
#ifndef SDW_POOL_REDIS_H
#define SDW_POOL_REDIS_H

#include "core/common.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

/* A parsed redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] URL. HOST is a name, an IPv4 address or
 * an [IPv6] address; USER and PASSWORD may be percent-encoded (a password holding '@' or '/'). */
typedef struct sdw_redis_url {
    char host[256];
    int port;           /* 1-65535; 6379 when the URL has none */
    int db;             /* 0 when the URL has none */
    char user[128];     /* "" = Redis' default user */
    char password[512]; /* "" = none */
    /* The URL with the password replaced by "***": the only form to log or show. */
    char redacted[400];
} sdw_redis_url;

/* Parses url into *out. Errors (SDW_E_INVALID_ARG, *out untouched) name the part at fault and
 * show the URL redacted: another scheme (rediss:// is refused: no TLS in this build), a missing
 * or malformed host, a port outside 1-65535, a database outside 0-1000000, a path, query or
 * fragment beyond /DB, a bad percent escape, a part too long. */
sdw_status sdw_redis_url_parse(const char *url, sdw_redis_url *out, sdw_error *err);

/* The text of url with anything between "//" and the last '@' replaced by ":***" (or the whole
 * text when it does not look like a URL at all but holds an '@'): for messages about URLs that
 * did not parse. buf gets at most cap bytes. */
const char *sdw_redis_url_redact(const char *url, char *buf, size_t cap);

/* ---- commands ---- */

/* A command's arguments (binary-safe). Zero-initialise; sdw_redis_args_free releases it; reset
 * empties it for reuse. Values are copied in. */
typedef struct sdw_redis_args {
    int n, cap;
    char **v;
    size_t *len;
} sdw_redis_args;
void sdw_redis_args_bin(sdw_redis_args *a, const void *data, size_t len);
void sdw_redis_args_str(sdw_redis_args *a, const char *s);
void sdw_redis_args_int(sdw_redis_args *a, long long v);
void sdw_redis_args_num(sdw_redis_args *a, double v); /* "%.17g": read back exactly */
void sdw_redis_args_fmt(sdw_redis_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sdw_redis_args_reset(sdw_redis_args *a);
void sdw_redis_args_free(sdw_redis_args *a); /* NULL ok */

typedef struct sdw_redis_params {
    double connect_timeout_s; /* 0 = 2 s: connecting (and AUTH, SELECT) */
    double io_timeout_s;      /* 0 = 5 s: a reply's deadline (a blocking command adds its wait) */
    double backoff_min_s;     /* 0 = 0.1 s: the first wait after a failed connection */
    double backoff_max_s;     /* 0 = 5 s: the cap of the doubling waits */
    int max_idle;             /* 0 = 16: idle connections a pool keeps */
} sdw_redis_params;
sdw_redis_params sdw_redis_params_default(void);

typedef struct sdw_redis sdw_redis; /* one connection */

/* Connects to u (TCP with keepalive), authenticates and selects the database. *out is new
 * (sdw_redis_close). SDW_E_UNAVAILABLE when Redis cannot be reached in time; SDW_E_BACKEND
 * when it refuses the password or the database (the message says which, never the password).
 * params may be NULL. */
sdw_status sdw_redis_open(const sdw_redis_url *u, const sdw_redis_params *params,
                          sdw_redis **out, sdw_error *err);
void sdw_redis_close(sdw_redis *c); /* NULL ok */

/* Runs one command. block_s > 0 for a command that may wait that long on the server
 * (XREADGROUP BLOCK, XREAD BLOCK): the reply's deadline is extended by it. On success *reply is
 * a new reply (freeReplyObject), never an error reply. */
sdw_status sdw_redis_exec(sdw_redis *c, const sdw_redis_args *a, double block_s,
                          redisReply **reply, sdw_error *err);

/* Whether the connection broke (a failed or timed-out exchange): it must not be used again. */
bool sdw_redis_broken(const sdw_redis *c);

/* ---- a pool of connections to one server ---- */

typedef struct sdw_redis_pool sdw_redis_pool;

/* A pool for u (copied); nothing is connected yet. params may be NULL. */
sdw_redis_pool *sdw_redis_pool_create(const sdw_redis_url *u, const sdw_redis_params *params);
/* Closes the idle connections; every connection taken must have been put back. NULL ok. */
void sdw_redis_pool_destroy(sdw_redis_pool *p);

/* A connection: an idle one, or a new one. While Redis is known to be unreachable (the last
 * attempt failed and its backoff has not passed) this fails at once with SDW_E_UNAVAILABLE
 * naming the last error and when the next attempt will be, instead of waiting on a connect:
 * callers answer "unavailable" rather than hang. A failed attempt doubles the backoff (capped);
 * a successful one resets it. The first failure after a success, and the recovery, are logged
 * once (warning level, redacted URL). */
sdw_status sdw_redis_pool_get(sdw_redis_pool *p, sdw_redis **out, sdw_error *err);
/* Gives a connection back: kept when healthy (up to max_idle), else closed. A broken one also
 * tells the pool that Redis may be gone (the next get tries a new connection at once: a single
 * lost connection is not an outage). NULL ok. */
void sdw_redis_pool_put(sdw_redis_pool *p, sdw_redis *c);
/* Seconds until the pool will try to connect again (0 when it would now). */
double sdw_redis_pool_retry_in(sdw_redis_pool *p);
/* The server, redacted (borrowed from the pool). */
const char *sdw_redis_pool_name(const sdw_redis_pool *p);

/* ---- reading replies ---- */

/* The reply as a string (STRING or STATUS; borrowed), or NULL. */
const char *sdw_redis_reply_str(const redisReply *r);
/* Element i of an ARRAY reply, or NULL when r is not an array or too short. */
const redisReply *sdw_redis_reply_at(const redisReply *r, size_t i);
/* The value of field name in a flat [name, value, name, value ...] array (HGETALL, a stream
 * entry's fields), or NULL. */
const redisReply *sdw_redis_reply_field(const redisReply *r, const char *name);
/* An integer reply, or a string holding a whole number; false otherwise. */
bool sdw_redis_reply_ll(const redisReply *r, long long *out);

#endif
