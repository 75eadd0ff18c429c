/* The pool's Redis client (pool/redis.h) against a real redis-server: URLs (and their redacted
 * form), passwords that never show, a pool that answers at once while Redis is down and comes
 * back by itself after a restart. */
#include "pool_support.h"

#include "pool/redis.h"

static void test_url_parse(void) {
    sdw_redis_url u;
    sdw_error err = {0};
    ASSERT_OK(sdw_redis_url_parse("redis://localhost", &u, &err), &err);
    ASSERT_TRUE(!strcmp(u.host, "localhost") && u.port == 6379 && u.db == 0 && !u.password[0]);
    ASSERT_TRUE(!strcmp(u.redacted, "redis://localhost:6379/0"));
    ASSERT_OK(sdw_redis_url_parse("redis://:s3cr%40t@10.0.0.5:6380/2", &u, &err), &err);
    ASSERT_TRUE(!strcmp(u.password, "s3cr@t") && !u.user[0] && u.port == 6380 && u.db == 2);
    ASSERT_TRUE(!strcmp(u.redacted, "redis://:***@10.0.0.5:6380/2"));
    /* an unescaped '@' or '/' in the password: the last '@' ends it */
    ASSERT_OK(sdw_redis_url_parse("redis://alice:p@ss/w@h:1/", &u, &err), &err);
    ASSERT_TRUE(!strcmp(u.user, "alice") && !strcmp(u.password, "p@ss/w") && u.port == 1);
    ASSERT_TRUE(!strcmp(u.redacted, "redis://alice:***@h:1/0"));
    ASSERT_OK(sdw_redis_url_parse("redis://[::1]:7000/15", &u, &err), &err);
    ASSERT_TRUE(!strcmp(u.host, "::1") && u.port == 7000 && u.db == 15);
    ASSERT_TRUE(!strcmp(u.redacted, "redis://[::1]:7000/15"));

    struct {
        const char *url, *want;
    } bad[] = {
        {"http://h", "must start with redis://"},
        {"rediss://:pw@h", "TLS"},
        {"redis://", "no host"},
        {"redis://:pw@", "no host"},
        {"redis://h:0", "port '0'"},
        {"redis://h:65536", "port '65536'"},
        {"redis://h:12x", "port '12x'"},
        {"redis://h/abc", "database 'abc'"},
        {"redis://h/1/2", "database '1/2'"},
        {"redis://h?db=1", "unexpected '?db=1'"},
        {"redis://[::1", "closed by ']'"},
        {"redis://:pw%4g@h", "two hex digits"},
        {"redis://:pw%4@h", "cut short"},
        {"redis://:@h", "password after ':' is empty"},
        {"redis://h h", "character"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(bad); i++) {
        sdw_status s = sdw_redis_url_parse(bad[i].url, &u, &err);
        if (s != SDW_E_INVALID_ARG || !strstr(err.msg, bad[i].want))
            sdw_test_fail(__FILE__, __LINE__, "%s: status %d, message '%s' (want '%s')",
                          bad[i].url, s, err.msg, bad[i].want);
    }
    /* a refused URL's message never holds its password */
    ASSERT_STATUS(sdw_redis_url_parse("redis://:hunter2@h:99999", &u, &err), SDW_E_INVALID_ARG);
    ASSERT_TRUE(!strstr(err.msg, "hunter2"));
    ASSERT_STR_CONTAINS(err.msg, "redis://:***@h:99999");
    ASSERT_STATUS(sdw_redis_url_parse("hunter2@h", &u, &err), SDW_E_INVALID_ARG);
    ASSERT_TRUE(!strstr(err.msg, "hunter2"));
    char buf[64];
    ASSERT_TRUE(!strcmp(sdw_redis_url_redact("redis://u:pw@h:1", buf, sizeof buf),
                        "redis://:***@h:1"));
}

static void test_commands_and_password(void) {
    pool_redis rs;
    if (pool_redis_start(&rs, "pw-hunter2") != 0) {
        ASSERT_TRUE(!"redis-server could not be started (scripts/bootstrap.sh installs it)");
    }
    sdw_redis_url u;
    sdw_error err = {0};
    char url[128];
    snprintf(url, sizeof url, "redis://:wrong-pass@127.0.0.1:%d/3", rs.port);
    ASSERT_OK(sdw_redis_url_parse(url, &u, &err), &err);
    sdw_redis *c = NULL;
    ASSERT_STATUS(sdw_redis_open(&u, NULL, &c, &err), SDW_E_BACKEND);
    ASSERT_STR_CONTAINS(err.msg, "AUTH");
    ASSERT_TRUE(!strstr(err.msg, "wrong-pass"));

    snprintf(url, sizeof url, "redis://:pw-hunter2@127.0.0.1:%d/3", rs.port);
    ASSERT_OK(sdw_redis_url_parse(url, &u, &err), &err);
    ASSERT_OK(sdw_redis_open(&u, NULL, &c, &err), &err);
    sdw_redis_args a = {0};
    const uint8_t bin[5] = {0, 1, 0, 255, '\n'};
    sdw_redis_args_str(&a, "SET");
    sdw_redis_args_str(&a, "k");
    sdw_redis_args_bin(&a, bin, sizeof bin);
    redisReply *r = NULL;
    ASSERT_OK(sdw_redis_exec(c, &a, 0, &r, &err), &err);
    freeReplyObject(r);
    sdw_redis_args_reset(&a);
    sdw_redis_args_str(&a, "GET");
    sdw_redis_args_str(&a, "k");
    ASSERT_OK(sdw_redis_exec(c, &a, 0, &r, &err), &err);
    ASSERT_TRUE(r->type == REDIS_REPLY_STRING && r->len == 5 && !memcmp(r->str, bin, 5));
    freeReplyObject(r);
    /* SELECT 3 happened: database 0 does not have the key */
    redisReply *raw = pool_redis_cmd(&rs, "EXISTS k");
    ASSERT_TRUE(raw && raw->type == REDIS_REPLY_INTEGER && raw->integer == 0);
    freeReplyObject(raw);
    /* an error reply is SDW_E_BACKEND and leaves the connection usable */
    sdw_redis_args_reset(&a);
    sdw_redis_args_str(&a, "INCR");
    sdw_redis_args_str(&a, "k");
    ASSERT_STATUS(sdw_redis_exec(c, &a, 0, &r, &err), SDW_E_BACKEND);
    ASSERT_STR_CONTAINS(err.msg, "not an integer");
    ASSERT_TRUE(!sdw_redis_broken(c));
    /* a blocking command past the plain deadline: its wait is added to it */
    sdw_redis_params p = sdw_redis_params_default();
    p.io_timeout_s = 0.2;
    sdw_redis *c2 = NULL;
    ASSERT_OK(sdw_redis_open(&u, &p, &c2, &err), &err);
    sdw_redis_args_reset(&a);
    sdw_redis_args_str(&a, "BLPOP");
    sdw_redis_args_str(&a, "nothing");
    sdw_redis_args_str(&a, "0.5");
    ASSERT_OK(sdw_redis_exec(c2, &a, 0.5, &r, &err), &err);
    ASSERT_TRUE(r->type == REDIS_REPLY_NIL);
    freeReplyObject(r);
    /* ... but without it the reply misses the deadline: the connection is dropped */
    ASSERT_STATUS(sdw_redis_exec(c2, &a, 0, &r, &err), SDW_E_UNAVAILABLE);
    ASSERT_STR_CONTAINS(err.msg, "no reply in time");
    ASSERT_TRUE(sdw_redis_broken(c2));
    ASSERT_TRUE(!strstr(err.msg, "hunter2"));
    sdw_redis_close(c2);
    sdw_redis_args_free(&a);
    sdw_redis_close(c);
    pool_redis_destroy(&rs);
}

static void test_pool_outage(void) {
    pool_redis rs;
    if (pool_redis_start(&rs, NULL) != 0) {
        ASSERT_TRUE(!"redis-server could not be started (scripts/bootstrap.sh installs it)");
    }
    sdw_redis_url u;
    sdw_error err = {0};
    ASSERT_OK(sdw_redis_url_parse(rs.url, &u, &err), &err);
    sdw_redis_params p = sdw_redis_params_default();
    p.backoff_min_s = 0.2;
    p.backoff_max_s = 0.8;
    sdw_redis_pool *pool = sdw_redis_pool_create(&u, &p);
    sdw_redis *c = NULL;
    sdw_redis_args ping = {0};
    sdw_redis_args_str(&ping, "PING");
    redisReply *r = NULL;
    ASSERT_OK(sdw_redis_pool_get(pool, &c, &err), &err);
    ASSERT_OK(sdw_redis_exec(c, &ping, 0, &r, &err), &err);
    freeReplyObject(r);
    sdw_redis_pool_put(pool, c);

    pool_redis_stop(&rs);
    /* the idle connection is dead: the command fails, and the pool hears of it */
    ASSERT_OK(sdw_redis_pool_get(pool, &c, &err), &err);
    ASSERT_STATUS(sdw_redis_exec(c, &ping, 0, &r, &err), SDW_E_UNAVAILABLE);
    sdw_redis_pool_put(pool, c);
    /* a new connection is refused: the pool is down and answers at once until its backoff */
    ASSERT_STATUS(sdw_redis_pool_get(pool, &c, &err), SDW_E_UNAVAILABLE);
    ASSERT_STR_CONTAINS(err.msg, "cannot connect to Redis at redis://127.0.0.1:");
    const double t0 = sdw_time_now();
    for (int i = 0; i < 100; i++) ASSERT_STATUS(sdw_redis_pool_get(pool, &c, &err), SDW_E_UNAVAILABLE);
    ASSERT_TRUE(sdw_time_now() - t0 < 0.5);
    ASSERT_STR_CONTAINS(err.msg, "next attempt in");
    ASSERT_TRUE(sdw_redis_pool_retry_in(pool) > 0);
    /* the backoff doubles (0.2, 0.4, 0.8) and stays capped */
    double waits[4];
    for (int i = 0; i < 4; i++) {
        pool_sleep(sdw_redis_pool_retry_in(pool) + 0.01);
        ASSERT_STATUS(sdw_redis_pool_get(pool, &c, &err), SDW_E_UNAVAILABLE);
        waits[i] = sdw_redis_pool_retry_in(pool);
    }
    ASSERT_TRUE(waits[0] > 0.3 && waits[0] <= 0.4);
    ASSERT_TRUE(waits[1] > 0.7 && waits[2] > 0.7 && waits[3] <= 0.8);

    ASSERT_TRUE(pool_redis_restart(&rs) == 0);
    pool_sleep(sdw_redis_pool_retry_in(pool) + 0.01);
    ASSERT_OK(sdw_redis_pool_get(pool, &c, &err), &err);
    ASSERT_OK(sdw_redis_exec(c, &ping, 0, &r, &err), &err);
    freeReplyObject(r);
    sdw_redis_pool_put(pool, c);
    ASSERT_TRUE(sdw_redis_pool_retry_in(pool) == 0);
    sdw_redis_args_free(&ping);
    sdw_redis_pool_destroy(pool);
    pool_redis_destroy(&rs);
}

int main(void) {
    RUN(test_url_parse);
    RUN(test_commands_and_password);
    RUN(test_pool_outage);
    return sdw_test_finish();
}
