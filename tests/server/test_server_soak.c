/* Soak: rounds of 200 jobs submitted concurrently to `sdw serve` (tiny model, tiny images), with
 * random cancels (queued and running), SSE clients that disconnect mid-stream and others that
 * follow their job to the end. Checks: every job ends in exactly one terminal state (the one a
 * successful cancel asked for), followers see exactly one final event, the counters add up, the
 * server stays up, and its memory does not grow from round to round once results expire.
 * SDW_SOAK_ROUNDS / SDW_SOAK_JOBS override the size (defaults 4 x 200; 1 x 200 under ASan),
 * SDW_SOAK_STEPS the steps per job (default 1: a slower machine in miniature). The server runs
 * with one thread: OpenMP teams spinning on a busy 2-core machine made jobs 20x slower.
 * No deadline is wall time: a loaded machine (a sanitizer build, other work) stretches every job,
 * so every wait here lasts as long as the server keeps making progress (a job ending, a stream
 * subscribing) and fails only after STALL_S seconds without any. */
#include "sdw_http.h"
#include "sdw_test.h"

#include "core/common.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_THREADS 16
#define MAX_JOBS 1000
#define STALL_S 180.0 /* no job ended and nothing else moved for this long: the server is stuck */

typedef enum action { ACT_NONE, ACT_CANCEL, ACT_LEAVE } action;

typedef struct job {
    char id[40];
    action act;
    int cancel_status;    /* HTTP status of the cancel request */
    int n_final_events;   /* follower: complete/error/cancelled events seen */
    int n_events;
    char last_event[16];
    double t_end;
    char final_event[16];
} job;

static sdw_test_server g_srv;
static job g_jobs[MAX_JOBS];
static int g_n_jobs, g_steps = 1;
static atomic_int g_submit_fail, g_following;

/* Progress: when the server last showed some (a job ended, a stream subscribed). The watcher
 * thread reads /v1/stats every 200 ms; waits compare against this instead of a wall clock. */
static _Atomic double g_last_progress;
static atomic_bool g_watching;

static void progressed(void) { atomic_store(&g_last_progress, sdw_time_now()); }
static bool stalled(void) { return sdw_time_now() - atomic_load(&g_last_progress) > STALL_S; }

static unsigned rnd(unsigned *seed) {
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 16) & 0x7fff;
}

typedef struct worker {
    int t;
    unsigned seed;
} worker;

static void *submitter(void *arg) {
    worker *w = arg;
    for (int i = w->t; i < g_n_jobs; i += N_THREADS) {
        char body[256];
        /* The smallest job the model takes (64 px, one step, no guidance pass): ~0.2 s. */
        snprintf(body, sizeof body,
                 "{\"prompt\":\"soak %d\",\"width\":64,\"height\":64,\"steps\":%d,\"seed\":%d,"
                 "\"guidance_scale\":1,\"sampler\":\"%s\"}",
                 i, g_steps, i, (const char *[]){"euler", "euler_a", "ddim", "dpm++2m"}[i % 4]);
        sdw_http_resp r;
        if (sdw_http_post_json(g_srv.port, "/v1/jobs", body, &r) != 0 || r.status != 202) {
            fprintf(stderr, "submit %d: %d %s\n", i, r.status, r.body ? r.body : "");
            atomic_fetch_add(&g_submit_fail, 1);
        } else {
            json_t *j = json_loads(r.body, 0, NULL);
            snprintf(g_jobs[i].id, sizeof g_jobs[i].id, "%s",
                     json_string_value(json_object_get(j, "job_id")));
            json_decref(j);
        }
        sdw_http_resp_free(&r);
    }
    return NULL;
}

/* Cancels and short-lived stream clients, interleaved with the running queue. */
static void *actor(void *arg) {
    worker *w = arg;
    for (int i = w->t; i < g_n_jobs; i += N_THREADS) {
        job *j = &g_jobs[i];
        char path[128];
        if (j->act == ACT_CANCEL) {
            usleep(rnd(&w->seed) % 300 * 1000);
            snprintf(path, sizeof path, "/v1/jobs/%s/cancel", j->id);
            sdw_http_resp r;
            sdw_http_request(g_srv.port, "POST", path, NULL, NULL, 0, &r);
            j->cancel_status = r.status;
            sdw_http_resp_free(&r);
        } else if (j->act == ACT_LEAVE) {
            snprintf(path, sizeof path, "/v1/jobs/%s/stream", j->id);
            sdw_sse *s = sdw_sse_open(g_srv.port, path, NULL, NULL);
            char ev[32], *data;
            int n = 1 + (int)(rnd(&w->seed) % 3);
            for (int k = 0; s && k < n && sdw_sse_next(s, ev, sizeof ev, &data, 5) == 0; k++)
                free(data);
            sdw_sse_close(s); /* gone mid-stream */
        }
    }
    return NULL;
}

static void *follower(void *arg) {
    job *j = arg;
    char path[128], ev[32], *data;
    snprintf(path, sizeof path, "/v1/jobs/%s/stream", j->id);
    int st = 0;
    sdw_sse *s = sdw_sse_open(g_srv.port, path, NULL, &st);
    if (!s) fprintf(stderr, "follower of %s: open failed (status %d)\n", j->id, st);
    bool first = true;
    /* A queued job's stream is quiet (keepalive comments only) until it runs, which on a loaded
     * machine may be long after any fixed deadline: wait while the server moves. A call that
     * returns before its 5 s is the end of the stream (or an error): done. */
    for (;;) {
        if (!s) break;
        const double t0 = sdw_time_now();
        if (sdw_sse_next(s, ev, sizeof ev, &data, 5) != 0) {
            if (sdw_time_now() - t0 < 4.5 || j->n_final_events > 0 || stalled()) break;
            continue;
        }
        if (first) atomic_fetch_add(&g_following, 1), first = false, progressed();
        j->n_events++;
        snprintf(j->last_event, sizeof j->last_event, "%s", ev);
        if (!strcmp(ev, "complete") || !strcmp(ev, "error") || !strcmp(ev, "cancelled")) {
            j->n_final_events++;
            snprintf(j->final_event, sizeof j->final_event, "%s", ev);
        }
        free(data);
    }
    j->t_end = sdw_time_now();
    sdw_sse_close(s);
    return NULL;
}

static json_t *get_json(const char *path) {
    /* (only /v1/stats here) */
    sdw_http_resp r;
    if (sdw_http_request(g_srv.port, "GET", path, NULL, NULL, 0, &r) != 0) return NULL;
    json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    sdw_http_resp_free(&r);
    return j;
}

/* Watches /v1/stats: any change of the finished and submitted counts is progress. */
static void *watcher(void *arg) {
    long long last = -1;
    while (atomic_load(&g_watching)) {
        json_t *s = get_json("/v1/stats");
        long long n = json_integer_value(json_object_get(s, "succeeded")) +
                      json_integer_value(json_object_get(s, "failed")) +
                      json_integer_value(json_object_get(s, "cancelled")) +
                      json_integer_value(json_object_get(s, "submitted"));
        json_decref(s);
        if (n != last) last = n, progressed();
        usleep(200000);
    }
    return NULL;
}

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

static long g_rss[16];

static void run_round(int round) {
    memset(g_jobs, 0, sizeof g_jobs);
    unsigned seed = 1234u + (unsigned)round;
    for (int i = 0; i < g_n_jobs; i++) {
        unsigned x = rnd(&seed) % 100;
        g_jobs[i].act = x < 25 ? ACT_CANCEL : x < 55 ? ACT_LEAVE : ACT_NONE;
    }
    double t0 = sdw_time_now();
    progressed();
    pthread_t th[N_THREADS];
    worker w[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        w[t] = (worker){.t = t, .seed = 99u * (unsigned)t + (unsigned)round};
        pthread_create(&th[t], NULL, submitter, &w[t]);
    }
    for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);
    double t_submit = sdw_time_now() - t0;
    ASSERT_EQ_INT(atomic_load(&g_submit_fail), 0);

    /* Every job has a follower (a subscriber to the end) that records its final event: results
     * expire after a second, so GET /v1/jobs/{id} could not tell every job's end afterwards. */
    static pthread_t fol[MAX_JOBS];
    int n_fol = 0;
    for (int i = 0; i < g_n_jobs; i++) {
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setstacksize(&a, 256 * 1024);
        pthread_create(&fol[n_fol++], &a, follower, &g_jobs[i]);
        pthread_attr_destroy(&a);
    }
    /* Cancels and leaving clients start once every follower is subscribed (a follower arriving
     * after its job ended and expired would find nothing to follow). */
    while (atomic_load(&g_following) < g_n_jobs && !stalled()) usleep(10000);
    atomic_store(&g_following, 0);
    for (int t = 0; t < N_THREADS; t++) pthread_create(&th[t], NULL, actor, &w[t]);
    for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);
    for (int i = 0; i < n_fol; i++) pthread_join(fol[i], NULL);

    /* Wait for the queue to drain. */
    for (;;) {
        json_t *s = get_json("/v1/stats");
        ASSERT_TRUE(s != NULL); /* the server is up */
        bool idle = json_integer_value(json_object_get(s, "queued")) == 0 &&
                    json_integer_value(json_object_get(s, "running")) == 0;
        json_decref(s);
        if (idle) break;
        ASSERT_TRUE(!stalled()); /* jobs keep ending, however slowly */
        usleep(100000);
    }
    double t_all = sdw_time_now() - t0;

    int n_ok = 0, n_cancelled = 0, n_left = 0, n_cancel_ok = 0;
    for (int i = 0; i < g_n_jobs; i++) {
        job *j = &g_jobs[i];
        if (j->n_final_events != 1)
            fprintf(stderr, "round %d job %d (%s, action %d): %d final events, %d events, last %s, "
                            "ended %.1f s after the start\n", round, i, j->id, (int)j->act,
                    j->n_final_events, j->n_events, j->last_event, j->t_end - t0);
        ASSERT_EQ_INT(j->n_final_events, 1); /* exactly one end, seen by its subscriber */
        bool ok = !strcmp(j->final_event, "complete"), cancelled = !strcmp(j->final_event, "cancelled");
        if (!ok && !cancelled) fprintf(stderr, "job %d: %s\n", i, j->final_event);
        ASSERT_TRUE(ok || cancelled); /* nothing failed */
        n_ok += ok;
        n_cancelled += cancelled;
        if (j->act == ACT_LEAVE) n_left++;
        if (j->act == ACT_CANCEL) {
            ASSERT_TRUE(j->cancel_status == 200 || j->cancel_status == 409);
            /* A cancel that was accepted wins; one refused came after the end. */
            if (j->cancel_status == 200) {
                ASSERT_TRUE(cancelled);
                n_cancel_ok++;
            } else {
                ASSERT_TRUE(ok);
            }
        } else {
            ASSERT_TRUE(ok); /* nobody cancelled it; clients leaving did not hurt it */
        }
    }
    json_t *s = get_json("/v1/stats");
    long long sub = json_integer_value(json_object_get(s, "submitted")),
              suc = json_integer_value(json_object_get(s, "succeeded")),
              fail = json_integer_value(json_object_get(s, "failed")),
              can = json_integer_value(json_object_get(s, "cancelled"));
    json_decref(s);
    ASSERT_EQ_INT(sub, (long long)g_n_jobs * (round + 1));
    ASSERT_EQ_INT(suc + fail + can, sub); /* exactly one terminal state each */
    ASSERT_EQ_INT(fail, 0);
    fprintf(stderr,
            "  round %d: %d jobs submitted in %.2f s, all done in %.1f s: %d succeeded, %d "
            "cancelled (%d cancel requests accepted), %d streams dropped mid-way, %d followed to "
            "the end\n",
            round, g_n_jobs, t_submit, t_all, n_ok, n_cancelled, n_cancel_ok, n_left, n_fol);

    /* Let the results expire (--result-ttl 1 s; the engine sweeps every second), then weigh. */
    for (int k = 0; k < 50; k++) {
        usleep(100000);
        json_t *st = get_json("/v1/stats");
        bool empty = json_integer_value(json_object_get(st, "jobs_kept")) == 0;
        json_decref(st);
        if (empty && k >= 20) break;
    }
    g_rss[round] = sdw_test_server_rss_kb(&g_srv);
    fprintf(stderr, "  round %d: server RSS %ld kB after results expired\n", round, g_rss[round]);
}

static void test_soak(void) {
#if defined(__SANITIZE_ADDRESS__)
    int rounds = env_int("SDW_SOAK_ROUNDS", 1); /* the server is several times slower under ASan */
#else
    int rounds = env_int("SDW_SOAK_ROUNDS", 4);
#endif
    g_n_jobs = env_int("SDW_SOAK_JOBS", 200);
    g_steps = env_int("SDW_SOAK_STEPS", 1);
    if (rounds > 16) rounds = 16;
    if (g_n_jobs > MAX_JOBS) g_n_jobs = MAX_JOBS;
    pthread_t watch;
    atomic_store(&g_watching, true);
    progressed();
    pthread_create(&watch, NULL, watcher, NULL);
    for (int r = 0; r < rounds; r++) {
        int before = sdw_test_failures_in_current;
        run_round(r);
        if (sdw_test_failures_in_current != before) break;
    }
    atomic_store(&g_watching, false);
    pthread_join(watch, NULL);
    if (sdw_test_failures_in_current) return;
    /* Round 0 brings the allocator and thread stacks to their working size; after that the
     * resident size must stay flat (the engine hands freed heap back after each job): less than
     * 1 MB a round (5 kB a job) on average. Leaks of any size are the ASan pass's job: the server
     * runs under it there and exits non-zero on one; ASan's quarantine keeps freed memory
     * resident, so RSS says nothing there. */
#if defined(__SANITIZE_ADDRESS__)
    bool weigh = false;
#else
    bool weigh = true;
#endif
    if (weigh && rounds >= 3) {
        long growth = g_rss[rounds - 1] - g_rss[1];
        fprintf(stderr, "  RSS growth from round 1 to round %d: %ld kB (%.0f kB a round)\n",
                rounds - 1, growth, (double)growth / (rounds - 2));
        ASSERT_TRUE(growth < 1024 * (rounds - 2));
    }
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_srv.port, "GET", "/health", NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    sdw_http_resp_free(&r);
}

int main(void) {
    /* glibc keeps up to 40 MB of exited threads' stacks for reuse, resident, and gives threads
     * arenas of their own whose freed memory stays mapped: how much of either the HTTP threads
     * left varies from round to round and hides what the server itself keeps. */
    setenv("GLIBC_TUNABLES", "glibc.pthread.stack_cache_size=0:glibc.malloc.arena_max=1", 1);
    if (sdw_test_server_start(&g_srv, NULL,
                              "-m '%s' -q -t 1 --queue 1000 --preview-every 1 --result-ttl 1 "
                              "--max-connections 1024",
                              sdw_test_path("models/tiny-sd15")) != 0)
        return 1;
    RUN(test_soak);
    int rc = sdw_test_server_stop(&g_srv);
    if (rc != 0) fprintf(stderr, "sdw serve exited with %d\n", rc);
    int t = sdw_test_finish();
    return rc != 0 ? 1 : t;
}
