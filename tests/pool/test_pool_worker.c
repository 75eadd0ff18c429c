/* The pool's workers (pool/worker.h) in this process, against a real redis-server, with jobs
 * queued through pool/protocol.h directly (no gateway): results equal the engine's own, a job
 * longer than the visibility timeout runs once (claim extension), a dead worker's job is taken
 * over, a job that keeps killing workers is failed after its deliveries, cancels and interrupts
 * reach a running job, a stopping worker hands its job back, a Redis restart loses nothing, and
 * bad payloads fail with a message. Each test uses its own key prefix. */
#include "pool_support.h"

#include "io/png.h"
#include "pool/payload.h"
#include "pool/protocol.h"
#include "pool/worker.h"

#include <pthread.h>
#include <sys/random.h>

static pool_redis g_rs;
static bool g_have_redis;

/* ---- workers in threads ---- */

typedef struct tworker {
    sdw_image_model *m;
    sdw_engine *e;
    sdw_pool_worker *w;
    pthread_t t;
    bool running;
} tworker;

static void *tworker_main(void *arg) {
    sdw_pool_worker_run(((tworker *)arg)->w);
    return NULL;
}

/* Loads the tiny model and starts a worker on it (1 thread). p: its parameters (redis_url,
 * prefix ... set by the caller). Returns 0 or -1. */
static int tworker_start(tworker *t, sdw_pool_worker_params p) {
    *t = (tworker){0};
    sdw_error err = {0};
    sdw_load_options o = sdw_load_options_default();
    o.n_threads = 1;
    sdw_engine_params ep = sdw_engine_params_default();
    ep.preview_every = 1;
    if (sdw_model_load(sdw_test_path("models/tiny-sd15"), &o, &t->m, &err) ||
        sdw_engine_create(t->m, &ep, &t->e, &err) ||
        sdw_pool_worker_create(t->e, &p, &t->w, &err)) {
        fprintf(stderr, "worker: %s\n", err.msg);
        return -1;
    }
    if (pthread_create(&t->t, NULL, tworker_main, t)) return -1;
    t->running = true;
    return 0;
}

static void tworker_stop(tworker *t) {
    if (t->running) {
        sdw_pool_worker_stop(t->w);
        pthread_join(t->t, NULL);
        t->running = false;
    }
    sdw_pool_worker_destroy(t->w);
    sdw_engine_destroy(t->e);
    sdw_model_destroy(t->m);
    *t = (tworker){0};
}

static sdw_pool_worker_params wparams(const char *prefix) {
    sdw_pool_worker_params p = sdw_pool_worker_params_default();
    p.redis_url = g_rs.url;
    p.prefix = prefix;
    p.heartbeat_s = 0.5;
    p.block_s = 0.2;
    p.visibility_s = 5;
    return p;
}

/* ---- queueing and reading jobs ---- */

static sdw_redis *g_c; /* the tests' own connection */

static sdw_request small_request(int steps, int64_t seed) {
    sdw_request q = sdw_request_default();
    q.prompt = "a red apple";
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

/* Queues req for model tiny-sd15 under prefix; id gets the job id. */
static sdw_status enqueue(const char *prefix, const sdw_request *req, int n, char id[33],
                          sdw_error *err) {
    new_id(id);
    char *json = sdw_pool_request_json(req, n);
    sdw_pool_enqueue_in in = {.model = "tiny-sd15", .job_id = id, .req_json = json,
                              .init = req->init_image, .mask = req->mask, .n_images = n,
                              .total_steps = req->steps * n, .job_ttl_s = 3600};
    sdw_status s = sdw_pool_enqueue(g_c, prefix, &in, err);
    free(json);
    return s;
}

static sdw_pool_job_fields job(const char *prefix, const char *id) {
    sdw_pool_job_fields f;
    sdw_error err = {0};
    if (sdw_pool_job_read(g_c, prefix, id, &f, &err) != SDW_OK) {
        fprintf(stderr, "job read: %s\n", err.msg);
        f = (sdw_pool_job_fields){0};
    }
    free(f.req_json);
    f.req_json = NULL;
    return f;
}

/* Polls the job until pred holds (or 120 s pass: a safety net, not a timing); returns it. */
static sdw_pool_job_fields wait_job(const char *prefix, const char *id,
                                    bool (*pred)(const sdw_pool_job_fields *)) {
    const double t0 = sdw_time_now();
    sdw_pool_job_fields f = job(prefix, id);
    while (!pred(&f) && sdw_time_now() - t0 < 120) {
        pool_sleep(0.02);
        f = job(prefix, id);
    }
    return f;
}
static bool is_terminal(const sdw_pool_job_fields *f) {
    return f->exists && sdw_job_state_terminal(f->state);
}
/* running and past its first step (or already over) */
static bool has_stepped(const sdw_pool_job_fields *f) {
    return f->exists && (sdw_job_state_terminal(f->state) ||
                         (f->state == SDW_JOB_RUNNING && f->step >= 1));
}

/* ---- tests ---- */

/* The image a worker stores is the engine's own, byte for byte; progress, previews and the
 * registry entry are there. */
static void test_result_matches_engine(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    tworker t;
    ASSERT_TRUE(tworker_start(&t, wparams("t1")) == 0);
    sdw_error err = {0};
    sdw_request q = small_request(3, 42);
    char id[33];
    ASSERT_OK(enqueue("t1", &q, 2, id, &err), &err);
    sdw_pool_job_fields f = wait_job("t1", id, is_terminal);
    ASSERT_EQ_INT(f.state, SDW_JOB_SUCCEEDED);
    ASSERT_EQ_INT(f.n_done, 2);
    ASSERT_EQ_INT(f.deliveries, 1);
    ASSERT_EQ_INT(f.step, f.total);
    ASSERT_TRUE(f.finished >= f.started && f.started >= f.created);

    /* the same request on an engine of our own */
    sdw_engine *e = NULL;
    sdw_job *j = NULL;
    ASSERT_OK(sdw_engine_create(t.m, NULL, &e, &err), &err);
    ASSERT_OK(sdw_engine_submit(e, &q, 2, &j, &err), &err);
    ASSERT_EQ_INT(sdw_job_wait_done(j), SDW_JOB_SUCCEEDED);
    for (int i = 0; i < 2; i++) {
        uint8_t *png = NULL;
        char *info = NULL;
        size_t len = 0, want_len = 0;
        ASSERT_OK(sdw_pool_job_image(g_c, "t1", id, i, &png, &len, &info, &err), &err);
        const uint8_t *want = sdw_job_image_png(j, i, &want_len);
        ASSERT_TRUE(len == want_len && !memcmp(png, want, len));
        sdw_result_info ri, wi;
        char *text = NULL;
        const char *want_text = NULL;
        ASSERT_OK(sdw_pool_info_parse(info, strlen(info), &ri, &text, &err), &err);
        ASSERT_TRUE(sdw_job_image_info(j, i, &wi, &want_text));
        ASSERT_TRUE(ri.seed == 42 + i && ri.seed == wi.seed && !strcmp(text, want_text));
        free(text);
        free(info);
        free(png);
    }
    ASSERT_STATUS(sdw_pool_job_image(g_c, "t1", id, 2, &(uint8_t *){0}, &(size_t){0},
                                     &(char *){0}, &err),
                  SDW_E_NOT_FOUND);
    sdw_job_release(j);
    sdw_engine_destroy(e);

    /* events: queued, running, each step, succeeded; a preview came along */
    redisReply *r = pool_redis_cmd(&g_rs, "XRANGE t1:job:%s:events - +", id);
    ASSERT_TRUE(r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2 + 6 + 1);
    int previews = 0;
    for (size_t i = 0; i < r->elements; i++)
        for (size_t k = 0; k + 1 < r->element[i]->element[1]->elements; k += 2)
            previews += !strcmp(r->element[i]->element[1]->element[k]->str, "preview");
    ASSERT_TRUE(previews >= 1);
    freeReplyObject(r);
    /* the queue entry is gone, its job acknowledged */
    ASSERT_EQ_INT(pool_redis_int(&g_rs, "XLEN t1:queue:tiny-sd15"), 0);
    /* the registry lists the worker with its capabilities; it leaves when it stops */
    sdw_pool_worker_info *wi = NULL;
    int n = 0;
    ASSERT_OK(sdw_pool_workers_read(g_c, "t1", &wi, &n, &err), &err);
    ASSERT_EQ_INT(n, 1);
    ASSERT_TRUE(!strcmp(wi[0].model, "tiny-sd15") && !strcmp(wi[0].type, "stable-diffusion"));
    ASSERT_STR_CONTAINS(wi[0].caps_json, "\"samplers\"");
    ASSERT_TRUE(wi[0].jobs_done == 1 || !strcmp(wi[0].state, "busy") || wi[0].jobs_done == 0);
    sdw_pool_worker_info_free(wi, n);
    sdw_pool_worker_stats st;
    sdw_pool_worker_get_stats(t.w, &st);
    ASSERT_EQ_INT(st.started, 1);
    ASSERT_EQ_INT(st.succeeded, 1);
    tworker_stop(&t);
    ASSERT_OK(sdw_pool_workers_read(g_c, "t1", &wi, &n, &err), &err);
    ASSERT_EQ_INT(n, 0);
    sdw_pool_worker_info_free(wi, n);
}

/* A job several times longer than the visibility timeout runs once: its worker keeps extending
 * its claim, so the idle second worker never takes it over. */
static void test_claim_extension(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    sdw_pool_worker_params p = wparams("t2");
    p.visibility_s = 0.3;
    tworker a, b;
    ASSERT_TRUE(tworker_start(&a, p) == 0);
    ASSERT_TRUE(tworker_start(&b, p) == 0);
    sdw_error err = {0};
    sdw_request q = small_request(15, 7);
    char id[33];
    ASSERT_OK(enqueue("t2", &q, 1, id, &err), &err);
    sdw_pool_job_fields f = wait_job("t2", id, is_terminal);
    ASSERT_EQ_INT(f.state, SDW_JOB_SUCCEEDED);
    ASSERT_EQ_INT(f.deliveries, 1);
    ASSERT_TRUE(f.finished - f.started > 3 * p.visibility_s); /* it was longer than the timeout */
    sdw_pool_worker_stats sa, sb;
    sdw_pool_worker_get_stats(a.w, &sa);
    sdw_pool_worker_get_stats(b.w, &sb);
    ASSERT_EQ_INT(sa.started + sb.started, 1);
    ASSERT_EQ_INT(sa.claimed + sb.claimed, 0);
    ASSERT_EQ_INT(sa.lost + sb.lost, 0);
    tworker_stop(&a);
    tworker_stop(&b);
}

/* Reads the job's entry as a consumer that then "dies" (never acknowledges). */
static void ghost_takes(const char *prefix) {
    redisReply *r = pool_redis_cmd(&g_rs, "XREADGROUP GROUP workers ghost COUNT 1 STREAMS "
                                          "%s:queue:tiny-sd15 >", prefix);
    SDW_ASSERT(r && r->type == REDIS_REPLY_ARRAY);
    freeReplyObject(r);
}

/* A dead worker's job is taken over after the visibility timeout and finishes once. */
static void test_takeover_of_dead_worker(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    sdw_error err = {0};
    sdw_request q = small_request(2, 9);
    char id[33];
    redisReply *r = pool_redis_cmd(&g_rs, "XGROUP CREATE t3:queue:tiny-sd15 workers 0 MKSTREAM");
    freeReplyObject(r);
    ASSERT_OK(enqueue("t3", &q, 1, id, &err), &err);
    ghost_takes("t3");
    sdw_pool_worker_params p = wparams("t3");
    p.visibility_s = 0.5;
    tworker t;
    ASSERT_TRUE(tworker_start(&t, p) == 0);
    sdw_pool_job_fields f = wait_job("t3", id, is_terminal);
    ASSERT_EQ_INT(f.state, SDW_JOB_SUCCEEDED);
    ASSERT_EQ_INT(f.deliveries, 2);
    sdw_pool_worker_stats st;
    sdw_pool_worker_get_stats(t.w, &st);
    ASSERT_EQ_INT(st.claimed, 1);
    ASSERT_EQ_INT(pool_redis_int(&g_rs, "XLEN t3:queue:tiny-sd15"), 0);
    /* nothing pending is left behind */
    r = pool_redis_cmd(&g_rs, "XPENDING t3:queue:tiny-sd15 workers");
    ASSERT_TRUE(r && r->element[0]->integer == 0);
    freeReplyObject(r);
    tworker_stop(&t);
}

/* A job delivered more than max_deliveries times is failed with a message saying so. */
static void test_max_deliveries(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    sdw_error err = {0};
    sdw_request q = small_request(2, 9);
    char id[33];
    redisReply *r = pool_redis_cmd(&g_rs, "XGROUP CREATE t4:queue:tiny-sd15 workers 0 MKSTREAM");
    freeReplyObject(r);
    ASSERT_OK(enqueue("t4", &q, 1, id, &err), &err);
    ghost_takes("t4");
    /* two more deliveries to ghosts that die too */
    for (int i = 0; i < 2; i++) {
        pool_sleep(0.05);
        r = pool_redis_cmd(&g_rs, "XAUTOCLAIM t4:queue:tiny-sd15 workers ghost2 10 0-0 COUNT 1");
        freeReplyObject(r);
    }
    sdw_pool_worker_params p = wparams("t4");
    p.visibility_s = 0.3;
    p.max_deliveries = 3;
    tworker t;
    ASSERT_TRUE(tworker_start(&t, p) == 0);
    sdw_pool_job_fields f = wait_job("t4", id, is_terminal);
    ASSERT_EQ_INT(f.state, SDW_JOB_FAILED);
    ASSERT_STR_CONTAINS(f.error, "failed after 3 deliveries");
    ASSERT_EQ_INT(pool_redis_int(&g_rs, "XLEN t4:queue:tiny-sd15"), 0);
    sdw_pool_worker_stats st;
    sdw_pool_worker_get_stats(t.w, &st);
    ASSERT_EQ_INT(st.given_up, 1);
    ASSERT_EQ_INT(st.started, 0);
    tworker_stop(&t);
}

/* Cancel of a queued job ends it at once; cancel and interrupt reach a running job. */
static void test_cancel_and_interrupt(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    sdw_error err = {0};
    sdw_request slow = small_request(200, 1);
    char queued[33], running[33], inter[33];
    ASSERT_OK(enqueue("t5", &slow, 1, running, &err), &err);
    ASSERT_OK(enqueue("t5", &slow, 1, queued, &err), &err);
    sdw_pool_cancel_result cr;
    ASSERT_OK(sdw_pool_cancel(g_c, "t5", queued, SDW_POOL_CANCEL, 60, &cr, &err), &err);
    ASSERT_EQ_INT(cr, SDW_POOL_CANCEL_DONE);
    sdw_pool_job_fields f = job("t5", queued);
    ASSERT_EQ_INT(f.state, SDW_JOB_CANCELLED);
    ASSERT_STR_CONTAINS(f.error, "before it started");
    ASSERT_OK(sdw_pool_cancel(g_c, "t5", queued, SDW_POOL_CANCEL, 60, &cr, &err), &err);
    ASSERT_EQ_INT(cr, SDW_POOL_CANCEL_ENDED);
    ASSERT_OK(sdw_pool_cancel(g_c, "t5", "0123", SDW_POOL_CANCEL, 60, &cr, &err), &err);
    ASSERT_EQ_INT(cr, SDW_POOL_CANCEL_UNKNOWN);
    ASSERT_EQ_INT(pool_redis_int(&g_rs, "XLEN t5:queue:tiny-sd15"), 1); /* only `running` */

    tworker t;
    ASSERT_TRUE(tworker_start(&t, wparams("t5")) == 0);
    f = wait_job("t5", running, has_stepped);
    ASSERT_EQ_INT(f.state, SDW_JOB_RUNNING);
    ASSERT_OK(sdw_pool_cancel(g_c, "t5", running, SDW_POOL_CANCEL, 60, &cr, &err), &err);
    ASSERT_EQ_INT(cr, SDW_POOL_CANCEL_REQUESTED);
    f = wait_job("t5", running, is_terminal);
    ASSERT_EQ_INT(f.state, SDW_JOB_CANCELLED);
    ASSERT_TRUE(f.cancel_requested && f.step < f.total);

    /* an interrupt keeps the image so far */
    sdw_request two = small_request(200, 2);
    ASSERT_OK(enqueue("t5", &two, 1, inter, &err), &err);
    f = wait_job("t5", inter, has_stepped);
    ASSERT_OK(sdw_pool_cancel(g_c, "t5", inter, SDW_POOL_INTERRUPT, 60, &cr, &err), &err);
    ASSERT_EQ_INT(cr, SDW_POOL_CANCEL_REQUESTED);
    f = wait_job("t5", inter, is_terminal);
    ASSERT_EQ_INT(f.state, SDW_JOB_CANCELLED);
    ASSERT_TRUE(f.interrupted && f.n_done == 1);
    uint8_t *png = NULL;
    char *info = NULL;
    size_t len = 0;
    ASSERT_OK(sdw_pool_job_image(g_c, "t5", inter, 0, &png, &len, &info, &err), &err);
    ASSERT_STR_CONTAINS(info, "\"interrupted\":true");
    free(png);
    free(info);
    /* interrupt of a job that is not running */
    ASSERT_OK(sdw_pool_cancel(g_c, "t5", inter, SDW_POOL_INTERRUPT, 60, &cr, &err), &err);
    ASSERT_EQ_INT(cr, SDW_POOL_CANCEL_ENDED);
    tworker_stop(&t);
}

/* A worker that stops in the middle of a job hands it back; another one finishes it. */
static void test_stop_hands_back(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    sdw_pool_worker_params p = wparams("t6");
    p.shutdown_grace_s = 0;
    tworker a, b;
    ASSERT_TRUE(tworker_start(&a, p) == 0);
    sdw_error err = {0};
    sdw_request q = small_request(8, 3);
    char id[33];
    ASSERT_OK(enqueue("t6", &q, 1, id, &err), &err);
    sdw_pool_job_fields f = wait_job("t6", id, has_stepped);
    ASSERT_EQ_INT(f.state, SDW_JOB_RUNNING);
    tworker_stop(&a);
    f = job("t6", id);
    ASSERT_EQ_INT(f.state, SDW_JOB_QUEUED);
    ASSERT_EQ_INT(f.queue_position, 0);
    ASSERT_TRUE(tworker_start(&b, p) == 0);
    f = wait_job("t6", id, is_terminal);
    ASSERT_EQ_INT(f.state, SDW_JOB_SUCCEEDED);
    ASSERT_EQ_INT(f.deliveries, 1); /* a hand-back does not count as a delivery */
    tworker_stop(&b);
}

/* Redis restarts while a job runs: the job finishes, its result is stored after the restart,
 * and the worker goes on with the next job. */
static void test_redis_restart(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    tworker t;
    ASSERT_TRUE(tworker_start(&t, wparams("t7")) == 0);
    sdw_error err = {0};
    sdw_request q = small_request(6, 4);
    char id[33], next[33];
    ASSERT_OK(enqueue("t7", &q, 1, id, &err), &err);
    sdw_pool_job_fields f = wait_job("t7", id, has_stepped);
    ASSERT_EQ_INT(f.state, SDW_JOB_RUNNING);
    sdw_redis_close(g_c);
    pool_redis_stop(&g_rs);
    pool_sleep(0.3);
    ASSERT_TRUE(pool_redis_restart(&g_rs) == 0);
    sdw_redis_url u;
    ASSERT_OK(sdw_redis_url_parse(g_rs.url, &u, &err), &err);
    ASSERT_OK(sdw_redis_open(&u, NULL, &g_c, &err), &err);
    f = wait_job("t7", id, is_terminal);
    ASSERT_EQ_INT(f.state, SDW_JOB_SUCCEEDED);
    ASSERT_EQ_INT(f.deliveries, 1);
    ASSERT_OK(enqueue("t7", &q, 1, next, &err), &err);
    f = wait_job("t7", next, is_terminal);
    ASSERT_EQ_INT(f.state, SDW_JOB_SUCCEEDED);
    tworker_stop(&t);
}

/* Payloads a worker cannot use fail their job with a message naming the problem. */
static void test_bad_payloads(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    sdw_error err = {0};
    char id[33], bad[33];
    /* a request this model refuses (the gateway checked it against other capabilities) */
    sdw_request q = small_request(2, 1);
    q.width = 68;
    ASSERT_OK(enqueue("t8", &q, 1, id, &err), &err);
    /* a request that is not one */
    new_id(bad);
    sdw_pool_enqueue_in in = {.model = "tiny-sd15", .job_id = bad, .req_json = "{\"v\":1}",
                              .n_images = 1, .total_steps = 1, .job_ttl_s = 60};
    ASSERT_OK(sdw_pool_enqueue(g_c, "t8", &in, &err), &err);
    tworker t;
    ASSERT_TRUE(tworker_start(&t, wparams("t8")) == 0);
    sdw_pool_job_fields f = wait_job("t8", id, is_terminal);
    ASSERT_EQ_INT(f.state, SDW_JOB_FAILED);
    ASSERT_STR_CONTAINS(f.error, "cannot run the request");
    ASSERT_STR_CONTAINS(f.error, "width");
    f = wait_job("t8", bad, is_terminal);
    ASSERT_EQ_INT(f.state, SDW_JOB_FAILED);
    ASSERT_STR_CONTAINS(f.error, "'n' is missing");
    /* a queue bound refuses more waiting jobs */
    sdw_pool_enqueue_in full = in;
    full.queue_max = 1;
    char more[33];
    new_id(more);
    full.job_id = more;
    redisReply *r = pool_redis_cmd(&g_rs, "ZADD t8:waiting:tiny-sd15 999 fake");
    freeReplyObject(r);
    ASSERT_STATUS(sdw_pool_enqueue(g_c, "t8", &full, &err), SDW_E_BUSY);
    ASSERT_STR_CONTAINS(err.msg, "queue of model tiny-sd15 is full");
    tworker_stop(&t);
}

int main(void) {
    g_have_redis = pool_redis_start(&g_rs, NULL) == 0;
    sdw_error err = {0};
    sdw_redis_url u;
    if (g_have_redis && (sdw_redis_url_parse(g_rs.url, &u, &err) ||
                         sdw_redis_open(&u, NULL, &g_c, &err))) {
        fprintf(stderr, "%s\n", err.msg);
        g_have_redis = false;
    }
    RUN(test_result_matches_engine);
    RUN(test_claim_extension);
    RUN(test_takeover_of_dead_worker);
    RUN(test_max_deliveries);
    RUN(test_cancel_and_interrupt);
    RUN(test_stop_hands_back);
    RUN(test_redis_restart);
    RUN(test_bad_payloads);
    sdw_redis_close(g_c);
    pool_redis_destroy(&g_rs);
    return sdw_test_finish();
}
