/* A pool of real `sdw worker` processes (two, tiny model, -t 1 each) against a real redis-server
 * (AOF on, appendfsync everysec, a temporary folder), with jobs queued through pool/protocol.h
 * as a gateway queues them: jobs spread over both workers, and a job's image is `sdw generate`'s
 * for the same request; a worker killed with SIGKILL mid-job has its job finished by the other
 * (after the visibility timeout), with one result; a batch of 50 jobs with kills (the killed
 * worker restarted) and cancels ends with every job in exactly one terminal state and nothing
 * left in the queue; a worker stopped by SIGTERM mid-job hands the job back to the other; a
 * Redis restart mid-batch loses no job; a worker started before its Redis (with a password)
 * waits for it and never shows the password. Each test has its own key prefix.
 *
 * No fixed wall-clock deadlines: waits fail only when nothing progresses (no job changes) for
 * STALL_S seconds, so a loaded machine is slow, not failing.
 *
 * SDW_POOL_BENCH=1 runs the scaling benchmark instead (docs/deploy.md's figures): JOBS jobs
 * (16) of SIZE x SIZE (64) and STEPS steps (8) queued at once on 1 then 2 workers, and the
 * pool's latency for one job at a time (LAT_RUNS runs, 5). Timings are printed, not asserted. */
#include "pool_support.h"

#include "pool/payload.h"
#include "pool/protocol.h"
#include "pool/redis.h"

#include <sys/random.h>

#define STALL_S 90.0   /* nothing progressed for this long: the pool is stuck */
#define VISIBILITY "3" /* seconds: short, so a killed worker's job moves on soon */

static pool_redis g_rs;
static bool g_have_redis;
static pool_redis *g_cur = &g_rs; /* the Redis the tests talk to */
static sdw_redis *g_c;              /* their connection to it (a gateway's view) */

/* ---- the tests' connection, reconnected after a Redis restart ---- */

static sdw_redis *conn(void) {
    if (g_c && !sdw_redis_broken(g_c)) return g_c;
    sdw_redis_close(g_c);
    g_c = NULL;
    sdw_redis_url u;
    sdw_error err = {0};
    if (sdw_redis_url_parse(g_cur->url, &u, &err) || sdw_redis_open(&u, NULL, &g_c, &err)) {
        g_c = NULL;
        return NULL;
    }
    return g_c;
}

/* ---- worker processes ---- */

typedef struct cworker {
    pool_proc p;
    char id[32];
} cworker;

/* Every worker process started, so that a test that failed half-way leaves none running. */
static pid_t g_pids[256];
static int g_n_pids;

static void remember(pid_t pid) {
    if (pid > 0 && g_n_pids < (int)SDW_ARRAY_LEN(g_pids)) g_pids[g_n_pids++] = pid;
}

/* Kills the workers still running (only our own children: a reaped one gives ECHILD). */
static void kill_leftovers(void) {
    for (int i = 0; i < g_n_pids; i++) {
        if (waitpid(g_pids[i], NULL, WNOHANG) == 0) {
            kill(g_pids[i], SIGKILL);
            waitpid(g_pids[i], NULL, 0);
        }
    }
    g_n_pids = 0;
}

static void run(const char *name, void (*fn)(void)) {
    sdw_test_run(name, fn);
    kill_leftovers();
}
#define RUN_POOL(fn) run(#fn, fn)

/* Starts `sdw worker` with id under prefix (and extra options) and waits until it has loaded
 * its model. */
static bool cworker_start_with(cworker *w, const char *prefix, const char *id, const char *url,
                               const char *extra) {
    snprintf(w->id, sizeof w->id, "%s", id);
    if (pool_spawn(&w->p, "OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE",
                   "worker -m '%s' -t 1 --redis '%s' --pool-prefix %s --worker-id %s "
                   "--heartbeat 0.5 --visibility " VISIBILITY " --max-deliveries 10 -v %s",
                   sdw_test_path("models/tiny-sd15"), url, prefix, id, extra) != 0)
        return false;
    remember(w->p.pid);
    if (!pool_log_wait(&w->p, "sdw: ready:", 300)) {
        char *log = pool_log(&w->p);
        fprintf(stderr, "worker %s did not start:\n%s\n", id, log);
        free(log);
        return false;
    }
    return true;
}

static bool cworker_start(cworker *w, const char *prefix, const char *id, const char *url) {
    return cworker_start_with(w, prefix, id, url, "");
}

/* SIGTERM: the worker's exit code (0 = a clean stop). */
static int cworker_stop(cworker *w) { return w->p.pid > 0 ? pool_stop(&w->p, SIGTERM) : 0; }

/* Waits until n workers are registered under prefix (their loops run). */
static bool wait_registered(const char *prefix, int n) {
    const double t0 = sdw_time_now();
    while (sdw_time_now() - t0 < STALL_S) {
        sdw_pool_worker_info *wi = NULL;
        int got = 0;
        sdw_error err = {0};
        if (conn() && sdw_pool_workers_read(g_c, prefix, &wi, &got, &err) == SDW_OK) {
            sdw_pool_worker_info_free(wi, got);
            if (got >= n) return true;
        }
        pool_sleep(0.05);
    }
    return false;
}

/* ---- jobs ---- */

static sdw_request request(int steps, int64_t seed) {
    sdw_request q = sdw_request_default();
    q.prompt = "a lighthouse at dusk";
    q.width = q.height = 64;
    q.steps = steps;
    q.seed = seed;
    q.sampler = "euler";
    return q;
}

static void new_id(char id[33]) {
    uint8_t b[16];
    SDW_ASSERT(getrandom(b, sizeof b, 0) == 16);
    for (int i = 0; i < 16; i++) snprintf(id + 2 * i, 3, "%02x", b[i]);
}

/* Queues req for tiny-sd15 under prefix, as a gateway does. */
static sdw_status enqueue(const char *prefix, const sdw_request *req, char id[33],
                          sdw_error *err) {
    new_id(id);
    char *json = sdw_pool_request_json(req, 1);
    sdw_pool_enqueue_in in = {.model = "tiny-sd15", .job_id = id, .req_json = json,
                              .n_images = 1, .total_steps = req->steps, .job_ttl_s = 3600};
    sdw_status s = conn() ? sdw_pool_enqueue(g_c, prefix, &in, err)
                          : sdw_error_set(err, SDW_E_UNAVAILABLE, "no Redis");
    free(json);
    return s;
}

/* The job's hash (exists = false when it cannot be read just now). */
static sdw_pool_job_fields job(const char *prefix, const char *id) {
    sdw_pool_job_fields f = {0};
    sdw_error err = {0};
    if (!conn() || sdw_pool_job_read(g_c, prefix, id, &f, &err) != SDW_OK)
        f = (sdw_pool_job_fields){0};
    free(f.req_json);
    f.req_json = NULL;
    return f;
}

/* Something to do while waiting (kills, cancels, restarts); called once per poll with how many
 * jobs have ended. */
typedef void (*wait_hook)(void *user, const char *prefix, char (*ids)[33], int n, int ended);

/* Waits until every job of ids has a terminal state; true then. False only when no job changed
 * (their versions summed) for STALL_S seconds. */
static bool wait_all(const char *prefix, char (*ids)[33], int n, wait_hook hook, void *user) {
    uint64_t last_sum = 0;
    double last_change = sdw_time_now();
    for (;;) {
        uint64_t sum = 0;
        int ended = 0;
        for (int i = 0; i < n; i++) {
            sdw_pool_job_fields f = job(prefix, ids[i]);
            sum += f.version;
            ended += f.exists && sdw_job_state_terminal(f.state);
        }
        if (ended == n) return true;
        if (sum != last_sum) last_sum = sum, last_change = sdw_time_now();
        if (sdw_time_now() - last_change > STALL_S) {
            fprintf(stderr, "the pool is stuck: %d of %d jobs ended, nothing moved for %.0f s\n",
                    ended, n, STALL_S);
            return false;
        }
        if (hook) hook(user, prefix, ids, n, ended);
        pool_sleep(0.05);
    }
}

/* Waits until the job is running past its first step (or has ended). */
static sdw_pool_job_fields wait_stepped(const char *prefix, const char *id) {
    uint64_t version = 0;
    double last_change = sdw_time_now();
    for (;;) {
        sdw_pool_job_fields f = job(prefix, id);
        if (f.exists && (sdw_job_state_terminal(f.state) ||
                         (f.state == SDW_JOB_RUNNING && f.step >= 1)))
            return f;
        if (f.version != version) version = f.version, last_change = sdw_time_now();
        if (sdw_time_now() - last_change > STALL_S) return f;
        pool_sleep(0.02);
    }
}

/* How many of the job's events carry a terminal state (its state is written once: 1). */
static int terminal_events(const char *prefix, const char *id) {
    redisReply *r = pool_redis_cmd(g_cur, "XRANGE %s:job:%s:events - +", prefix, id);
    int n = -1;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        n = 0;
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *state = sdw_redis_reply_field(r->element[i]->element[1], "state");
            sdw_job_state s;
            n += state && sdw_pool_state_parse(state->str, &s) && sdw_job_state_terminal(s);
        }
    }
    if (r) freeReplyObject(r);
    return n;
}

/* Nothing of the model's is left in the queue: no entry, none pending, none waiting. */
static bool queue_empty(const char *prefix) {
    if (pool_redis_int(&g_rs, "XLEN %s:queue:tiny-sd15", prefix) != 0) return false;
    if (pool_redis_int(&g_rs, "ZCARD %s:waiting:tiny-sd15", prefix) != 0) return false;
    redisReply *r = pool_redis_cmd(&g_rs, "XPENDING %s:queue:tiny-sd15 workers", prefix);
    const bool none = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                      r->element[0]->integer == 0;
    if (r) freeReplyObject(r);
    return none;
}

/* ---- tests ---- */

/* Jobs spread over both workers; a job's image is `sdw generate`'s for the same request. */
static void test_spread_and_same_image(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    cworker a, b;
    ASSERT_TRUE(cworker_start(&a, "c1", "w1", g_rs.url));
    ASSERT_TRUE(cworker_start(&b, "c1", "w2", g_rs.url));
    ASSERT_TRUE(wait_registered("c1", 2));
    sdw_error err = {0};
    enum { N = 6 };
    char ids[N][33];
    for (int i = 0; i < N; i++) {
        sdw_request q = request(4, 42 + i);
        ASSERT_OK(enqueue("c1", &q, ids[i], &err), &err);
    }
    ASSERT_TRUE(wait_all("c1", ids, N, NULL, NULL));
    int by_a = 0, by_b = 0;
    for (int i = 0; i < N; i++) {
        sdw_pool_job_fields f = job("c1", ids[i]);
        ASSERT_EQ_INT(f.state, SDW_JOB_SUCCEEDED);
        ASSERT_EQ_INT(f.deliveries, 1);
        by_a += !strcmp(f.worker, "w1");
        by_b += !strcmp(f.worker, "w2");
    }
    fprintf(stderr, "  w1 ran %d jobs, w2 %d\n", by_a, by_b);
    ASSERT_TRUE(by_a >= 1 && by_b >= 1 && by_a + by_b == N);

    /* job 0 against sdw generate, the same request */
    uint8_t *png = NULL;
    char *info = NULL;
    size_t len = 0;
    ASSERT_TRUE(conn());
    ASSERT_OK(sdw_pool_job_image(g_c, "c1", ids[0], 0, &png, &len, &info, &err), &err);
    char out[4096], path[512];
    snprintf(path, sizeof path, "%s/generate.png", sdw_test_tmpdir());
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' -t 1 -p 'a lighthouse at dusk' -W 64 -H 64 "
                              "--steps 4 -s 42 --sampler euler -q -o '%s'",
                              sdw_test_path("models/tiny-sd15"), path);
    if (rc != 0) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    size_t want_len = 0;
    void *want = sdw_test_read_file(path, &want_len);
    ASSERT_TRUE(want != NULL);
    ASSERT_EQ_INT(sdw_test_png_bytes_max_diff(png, len, want, want_len), 0);
    ASSERT_STR_CONTAINS(info, "\"seed\":42");
    free(want);
    free(png);
    free(info);
    ASSERT_TRUE(queue_empty("c1"));
    ASSERT_EQ_INT(cworker_stop(&a), 0);
    ASSERT_EQ_INT(cworker_stop(&b), 0);
    ASSERT_TRUE(wait_registered("c1", 0)); /* a stopped worker leaves the registry */
}

/* kill -9 of the worker running a job: the other worker takes it over after the visibility
 * timeout and finishes it; one result. */
static void test_kill_mid_job(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    cworker w[2];
    ASSERT_TRUE(cworker_start(&w[0], "c2", "w1", g_rs.url));
    ASSERT_TRUE(cworker_start(&w[1], "c2", "w2", g_rs.url));
    ASSERT_TRUE(wait_registered("c2", 2));
    sdw_error err = {0};
    sdw_request q = request(12, 7);
    char id[1][33];
    ASSERT_OK(enqueue("c2", &q, id[0], &err), &err);
    sdw_pool_job_fields f = wait_stepped("c2", id[0]);
    ASSERT_EQ_INT(f.state, SDW_JOB_RUNNING);
    const int victim = !strcmp(f.worker, "w1") ? 0 : 1;
    ASSERT_TRUE(!strcmp(f.worker, w[victim].id));
    ASSERT_EQ_INT(pool_stop(&w[victim].p, SIGKILL), -SIGKILL);
    ASSERT_TRUE(wait_all("c2", id, 1, NULL, NULL));
    f = job("c2", id[0]);
    ASSERT_EQ_INT(f.state, SDW_JOB_SUCCEEDED);
    ASSERT_TRUE(!strcmp(f.worker, w[1 - victim].id));
    ASSERT_EQ_INT(f.deliveries, 2);
    ASSERT_EQ_INT(f.n_done, 1);
    ASSERT_EQ_INT(terminal_events("c2", id[0]), 1);
    ASSERT_EQ_INT(pool_redis_int(&g_rs, "HEXISTS c2:job:%s img:1", id[0]), 0);
    ASSERT_EQ_INT(pool_redis_int(&g_rs, "HEXISTS c2:job:%s img:0", id[0]), 1);
    char *log = pool_log(&w[1 - victim].p);
    ASSERT_STR_CONTAINS(log, "took over job");
    free(log);
    ASSERT_TRUE(queue_empty("c2"));
    ASSERT_EQ_INT(cworker_stop(&w[1 - victim]), 0);
}

/* SIGTERM to the worker running a job (no grace): it hands the job back and exits 0; the other
 * worker runs it at once, and the hand-back is not counted as a delivery. */
static void test_sigterm_hands_back(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    cworker w[2];
    ASSERT_TRUE(cworker_start_with(&w[0], "c6", "w1", g_rs.url, "--shutdown-grace 0"));
    ASSERT_TRUE(cworker_start_with(&w[1], "c6", "w2", g_rs.url, "--shutdown-grace 0"));
    ASSERT_TRUE(wait_registered("c6", 2));
    sdw_error err = {0};
    sdw_request q = request(12, 8);
    char id[1][33];
    ASSERT_OK(enqueue("c6", &q, id[0], &err), &err);
    sdw_pool_job_fields f = wait_stepped("c6", id[0]);
    ASSERT_EQ_INT(f.state, SDW_JOB_RUNNING);
    const int first = !strcmp(f.worker, "w1") ? 0 : 1;
    ASSERT_EQ_INT(cworker_stop(&w[first]), 0);
    char *log = pool_log(&w[first].p);
    ASSERT_STR_CONTAINS(log, "handed back");
    ASSERT_STR_CONTAINS(log, "1 handed back");
    free(log);
    ASSERT_TRUE(wait_all("c6", id, 1, NULL, NULL));
    f = job("c6", id[0]);
    ASSERT_EQ_INT(f.state, SDW_JOB_SUCCEEDED);
    ASSERT_TRUE(!strcmp(f.worker, w[1 - first].id));
    ASSERT_EQ_INT(f.deliveries, 1);
    ASSERT_EQ_INT(terminal_events("c6", id[0]), 1);
    ASSERT_TRUE(queue_empty("c6"));
    ASSERT_EQ_INT(cworker_stop(&w[1 - first]), 0);
}

/* ---- the batch with kills and cancels ---- */

enum { BATCH = 50, KILLS = 4 };

typedef struct chaos {
    cworker w[2];
    int restarts;
    int kill_at[KILLS], kills; /* kill when this many jobs have ended */
    int cancel_at[6], cancels;
    sdw_pool_cancel_result cancelled[BATCH]; /* what the cancel answered */
    bool asked[BATCH];
    bool failed;
} chaos;

/* Kills the worker running some job (any one when none runs) and starts another in its
 * place; cancels running or queued jobs, at the ends counts drawn at random. */
static void chaos_hook(void *user, const char *prefix, char (*ids)[33], int n, int ended) {
    chaos *c = user;
    if (c->kills < KILLS && ended >= c->kill_at[c->kills]) {
        int victim = rand() % 2;
        for (int i = 0; i < n; i++) {
            sdw_pool_job_fields f = job(prefix, ids[i]);
            if (f.exists && f.state == SDW_JOB_RUNNING) {
                for (int k = 0; k < 2; k++)
                    if (!strcmp(f.worker, c->w[k].id)) victim = k;
                break;
            }
        }
        pool_stop(&c->w[victim].p, SIGKILL);
        char id[32];
        snprintf(id, sizeof id, "w%d-%d", victim + 1, ++c->restarts);
        if (!cworker_start(&c->w[victim], prefix, id, g_rs.url)) c->failed = true;
        c->kills++;
    }
    if (c->cancels < (int)SDW_ARRAY_LEN(c->cancel_at) && ended >= c->cancel_at[c->cancels]) {
        /* the odd ones: a running job; the even ones: any job not cancelled yet */
        int pick = -1;
        for (int i = 0; i < n && c->cancels % 2; i++) {
            sdw_pool_job_fields f = job(prefix, ids[i]);
            if (f.exists && f.state == SDW_JOB_RUNNING && !c->asked[i]) pick = i;
        }
        for (int tries = 0; pick < 0 && tries < 100; tries++) {
            const int i = rand() % n;
            if (!c->asked[i]) pick = i;
        }
        if (pick >= 0 && conn()) {
            sdw_error err = {0};
            if (sdw_pool_cancel(g_c, prefix, ids[pick], SDW_POOL_CANCEL, 600,
                                &c->cancelled[pick], &err) == SDW_OK)
                c->asked[pick] = true;
        }
        c->cancels++;
    }
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* 50 jobs; four times a worker is killed (mostly one running a job) and a new one started in
 * its place; six cancels. Every job ends exactly once; the ones nobody cancelled succeed. */
static void test_batch_kills_and_cancels(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    static chaos c;
    memset(&c, 0, sizeof c);
    unsigned seed = (unsigned)getpid();
    fprintf(stderr, "  chaos seed %u\n", seed);
    srand(seed);
    for (int i = 0; i < KILLS; i++) c.kill_at[i] = 2 + rand() % (BATCH - 10);
    for (int i = 0; i < (int)SDW_ARRAY_LEN(c.cancel_at); i++) c.cancel_at[i] = rand() % (BATCH - 5);
    qsort(c.kill_at, KILLS, sizeof(int), cmp_int);
    qsort(c.cancel_at, SDW_ARRAY_LEN(c.cancel_at), sizeof(int), cmp_int);
    ASSERT_TRUE(cworker_start(&c.w[0], "c3", "w1", g_rs.url));
    ASSERT_TRUE(cworker_start(&c.w[1], "c3", "w2", g_rs.url));
    ASSERT_TRUE(wait_registered("c3", 2));
    sdw_error err = {0};
    static char ids[BATCH][33];
    for (int i = 0; i < BATCH; i++) {
        sdw_request q = request(2 + i % 2, 1000 + i);
        ASSERT_OK(enqueue("c3", &q, ids[i], &err), &err);
    }
    ASSERT_TRUE(wait_all("c3", ids, BATCH, chaos_hook, &c));
    ASSERT_TRUE(!c.failed);
    ASSERT_EQ_INT(c.kills, KILLS);
    int succeeded = 0, cancelled = 0, taken_over = 0;
    for (int i = 0; i < BATCH; i++) {
        sdw_pool_job_fields f = job("c3", ids[i]);
        ASSERT_TRUE(f.exists && sdw_job_state_terminal(f.state));
        ASSERT_EQ_INT(terminal_events("c3", ids[i]), 1);
        if (f.state == SDW_JOB_FAILED) fprintf(stderr, "job %d failed: %s\n", i, f.error);
        ASSERT_TRUE(f.state != SDW_JOB_FAILED);
        if (!c.asked[i] || c.cancelled[i] == SDW_POOL_CANCEL_ENDED)
            ASSERT_EQ_INT(f.state, SDW_JOB_SUCCEEDED); /* nobody stopped it */
        if (c.asked[i] && c.cancelled[i] == SDW_POOL_CANCEL_DONE)
            ASSERT_EQ_INT(f.state, SDW_JOB_CANCELLED); /* it had not started */
        if (f.state == SDW_JOB_SUCCEEDED) {
            ASSERT_EQ_INT(f.n_done, 1);
            ASSERT_EQ_INT(pool_redis_int(&g_rs, "HEXISTS c3:job:%s img:0", ids[i]), 1);
        }
        succeeded += f.state == SDW_JOB_SUCCEEDED;
        cancelled += f.state == SDW_JOB_CANCELLED;
        taken_over += f.deliveries > 1;
    }
    fprintf(stderr, "  %d succeeded, %d cancelled, %d taken over after a kill\n", succeeded,
            cancelled, taken_over);
    ASSERT_EQ_INT(succeeded + cancelled, BATCH);
    ASSERT_TRUE(queue_empty("c3"));
    ASSERT_EQ_INT(cworker_stop(&c.w[0]), 0);
    ASSERT_EQ_INT(cworker_stop(&c.w[1]), 0);
}

/* ---- Redis restarts mid-batch ---- */

typedef struct restart {
    bool done;
    int at;
    cworker *w[2]; /* the workers that must see the outage */
} restart;

/* Whether either worker has logged `needle`. */
static bool any_logged(restart *r, const char *needle) {
    return pool_logged(&r->w[0]->p, needle) || pool_logged(&r->w[1]->p, needle);
}

static void restart_hook(void *user, const char *prefix, char (*ids)[33], int n, int ended) {
    (void)prefix, (void)ids, (void)n;
    restart *r = user;
    if (r->done || ended < r->at) return;
    r->done = true;
    sdw_redis_close(g_c);
    g_c = NULL;
    pool_redis_stop(&g_rs); /* SIGTERM: Redis writes its AOF and exits */
    /* Down until a worker has found it so: a worker in the middle of a job talks to Redis only
     * when the job ends, which on a loaded machine (or under ASan) can be long after a fixed
     * pause. The workers' progress decides, not a clock; the bound only ends a hung run. */
    const double t0 = sdw_time_now();
    while (!any_logged(r, "retrying with backoff") && sdw_time_now() - t0 < 600 &&
           (pool_alive(&r->w[0]->p, NULL) || pool_alive(&r->w[1]->p, NULL)))
        pool_sleep(0.1);
    if (pool_redis_restart(&g_rs) != 0) fprintf(stderr, "redis-server did not restart\n");
}

/* Redis is stopped and started again (same port, same folder: its AOF) while jobs run and
 * wait: every job still succeeds, once. */
static void test_redis_restart_mid_batch(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    cworker a, b;
    ASSERT_TRUE(cworker_start(&a, "c4", "w1", g_rs.url));
    ASSERT_TRUE(cworker_start(&b, "c4", "w2", g_rs.url));
    ASSERT_TRUE(wait_registered("c4", 2));
    sdw_error err = {0};
    enum { N = 16 };
    static char ids[N][33];
    for (int i = 0; i < N; i++) {
        sdw_request q = request(3, 2000 + i);
        ASSERT_OK(enqueue("c4", &q, ids[i], &err), &err);
    }
    restart r = {.at = 4, .w = {&a, &b}};
    ASSERT_TRUE(wait_all("c4", ids, N, restart_hook, &r));
    ASSERT_TRUE(r.done);
    for (int i = 0; i < N; i++) {
        sdw_pool_job_fields f = job("c4", ids[i]);
        ASSERT_EQ_INT(f.state, SDW_JOB_SUCCEEDED);
        ASSERT_EQ_INT(terminal_events("c4", ids[i]), 1);
    }
    ASSERT_TRUE(queue_empty("c4"));
    ASSERT_TRUE(any_logged(&r, "is reachable again")); /* they saw the outage end */
    ASSERT_EQ_INT(cworker_stop(&a), 0);
    ASSERT_EQ_INT(cworker_stop(&b), 0);
}

/* A worker started before its Redis (one with a password, the URL from SDW_REDIS_URL) says so,
 * waits, and runs a job once Redis is up; its log never shows the password. A bad URL is a
 * usage error that does not show it either. */
static void test_worker_before_redis(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    char out[4096];
    int rc = sdw_test_run_sdw(out, sizeof out, "worker -m '%s' --redis 'redis://:s3kr1t@h:99999'",
                              sdw_test_path("models/tiny-sd15"));
    ASSERT_EQ_INT(rc, 2);
    ASSERT_STR_CONTAINS(out, "port");
    ASSERT_TRUE(!strstr(out, "s3kr1t"));

    pool_redis rs = {0};
    snprintf(rs.password, sizeof rs.password, "s3kr1t-pw");
    ASSERT_TRUE((rs.port = pool_free_port()) > 0);
    snprintf(rs.url, sizeof rs.url, "redis://:%s@127.0.0.1:%d/0", rs.password, rs.port);
    cworker w;
    char env[256];
    snprintf(env, sizeof env, "SDW_REDIS_URL='%s' OMP_NUM_THREADS=1", rs.url);
    ASSERT_EQ_INT(pool_spawn(&w.p, env, "worker -m '%s' -t 1 --pool-prefix c5 --heartbeat 0.5 -v",
                             sdw_test_path("models/tiny-sd15")),
                  0);
    remember(w.p.pid);
    ASSERT_TRUE(pool_log_wait(&w.p, "starting anyway", 300));
    ASSERT_TRUE(pool_log_wait(&w.p, "sdw: ready:", 300));
    ASSERT_EQ_INT(pool_redis_launch(&rs), 0);
    /* the tests' connection goes to this Redis for a while */
    sdw_redis_close(g_c);
    g_c = NULL;
    g_cur = &rs;
    bool ok = wait_registered("c5", 1);
    sdw_error err = {0};
    char id[1][33];
    sdw_request q = request(2, 5);
    ok = ok && enqueue("c5", &q, id[0], &err) == SDW_OK && wait_all("c5", id, 1, NULL, NULL);
    const sdw_job_state state = ok ? job("c5", id[0]).state : SDW_JOB_FAILED;
    sdw_redis_close(g_c);
    g_c = NULL;
    g_cur = &g_rs;
    const int code = cworker_stop(&w);
    pool_redis_destroy(&rs);
    ASSERT_TRUE(ok);
    ASSERT_EQ_INT(state, SDW_JOB_SUCCEEDED);
    ASSERT_EQ_INT(code, 0);
    char *log = pool_log(&w.p);
    ASSERT_STR_CONTAINS(log, "redis://:***@127.0.0.1:");
    const bool shown = strstr(log, "s3kr1t") != NULL;
    free(log);
    ASSERT_TRUE(!shown);
}

/* ---- SDW_POOL_BENCH=1: the pool's scaling (timings printed, nothing asserted) ---- */

static double env_num(const char *name, double dflt) {
    const char *v = getenv(name);
    return v && atof(v) > 0 ? atof(v) : dflt;
}

/* JOBS jobs queued at once: seconds from the first submission to the last result. */
static double bench_batch(const char *prefix, int jobs, int size, int steps, double *run_s) {
    static char ids[1024][33];
    sdw_error err = {0};
    const double t0 = sdw_time_now();
    for (int i = 0; i < jobs; i++) {
        sdw_request q = request(steps, 100 + i);
        q.width = q.height = size;
        if (enqueue(prefix, &q, ids[i], &err) != SDW_OK) return -1;
    }
    if (!wait_all(prefix, ids, jobs, NULL, NULL)) return -1;
    const double wall = sdw_time_now() - t0;
    *run_s = 0;
    for (int i = 0; i < jobs; i++) {
        sdw_pool_job_fields f = job(prefix, ids[i]);
        *run_s += f.finished - f.started;
    }
    *run_s /= jobs;
    return wall;
}

/* One job at a time on an idle worker: the median of submission -> started (Redis' clock) and
 * of started -> the result readable here. */
static void bench_latency(const char *prefix, int runs, int size, int steps, double *pickup,
                          double *total) {
    double p[64], t[64];
    runs = SDW_MIN(runs, 64);
    for (int i = 0; i < runs; i++) {
        char id[1][33];
        sdw_error err = {0};
        sdw_request q = request(steps, 500 + i);
        q.width = q.height = size;
        const double t0 = sdw_time_now();
        if (enqueue(prefix, &q, id[0], &err) != SDW_OK || !wait_all(prefix, id, 1, NULL, NULL))
            return;
        t[i] = sdw_time_now() - t0;
        sdw_pool_job_fields f = job(prefix, id[0]);
        p[i] = f.started - f.created;
    }
    qsort(p, (size_t)runs, sizeof *p, cmp_double);
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    *pickup = p[runs / 2];
    *total = t[runs / 2];
}

static void test_bench_scaling(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    const int jobs = SDW_MIN((int)env_num("JOBS", 16), 1024), size = (int)env_num("SIZE", 64),
              steps = (int)env_num("STEPS", 8), runs = (int)env_num("LAT_RUNS", 5);
    cworker a, b;
    ASSERT_TRUE(cworker_start(&a, "cb", "w1", g_rs.url));
    ASSERT_TRUE(wait_registered("cb", 1));
    double run1 = 0, run2 = 0, pickup = 0, lat = 0;
    bench_latency("cb", 1, size, steps, &pickup, &lat); /* warm-up */
    bench_latency("cb", runs, size, steps, &pickup, &lat);
    const double w1 = bench_batch("cb", jobs, size, steps, &run1);
    ASSERT_TRUE(cworker_start(&b, "cb", "w2", g_rs.url));
    ASSERT_TRUE(wait_registered("cb", 2));
    const double w2 = bench_batch("cb", jobs, size, steps, &run2);
    ASSERT_TRUE(w1 > 0 && w2 > 0);
    printf("pool bench: %d jobs of %dx%d, %d steps, tiny-sd15, workers -t 1\n", jobs, size, size,
           steps);
    printf("  one job at a time (median of %d): queued -> started %.1f ms, submitted -> result "
           "read %.3f s\n", runs, pickup * 1e3, lat);
    printf("  1 worker:  %.1f jobs/min (%.3f s per job on its worker)\n", jobs * 60 / w1, run1);
    printf("  2 workers: %.1f jobs/min (%.3f s per job on its worker): x%.2f\n", jobs * 60 / w2,
           run2, w1 / w2);
    ASSERT_EQ_INT(cworker_stop(&a), 0);
    ASSERT_EQ_INT(cworker_stop(&b), 0);
}

int main(void) {
    g_have_redis = pool_redis_start(&g_rs, NULL) == 0 && conn() != NULL;
    if (getenv("SDW_POOL_BENCH")) { /* the figures of docs/deploy.md, instead of the tests */
        RUN_POOL(test_bench_scaling);
        sdw_redis_close(g_c);
        pool_redis_destroy(&g_rs);
        return sdw_test_finish();
    }
    RUN_POOL(test_spread_and_same_image);
    RUN_POOL(test_kill_mid_job);
    RUN_POOL(test_sigterm_hands_back);
    RUN_POOL(test_batch_kills_and_cancels);
    RUN_POOL(test_redis_restart_mid_batch);
    RUN_POOL(test_worker_before_redis);
    sdw_redis_close(g_c);
    pool_redis_destroy(&g_rs);
    return sdw_test_finish();
}
