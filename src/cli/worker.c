/* sdw worker — a worker of a Redis pool (pool/worker.h): load one model, take that model's jobs
 * from Redis until SIGINT/SIGTERM. Redis is tried once before the (slow) model load so a wrong
 * URL or password shows at once; an unreachable Redis is only a warning: the worker starts and
 * connects once Redis answers, retrying with backoff (a pool's machines boot in any order). On a
 * signal the worker takes no new job; the running one gets the grace period to finish, then it
 * is cancelled here and handed back to the pool, where another worker runs it. A second signal
 * exits at once (the job, still pending in Redis, is taken over after the visibility timeout).
 * Only this layer may exit(). */
#define _GNU_SOURCE
#include "cli/worker.h"

#include "cli/cli.h"

#include "core/common.h"
#include "engine/engine.h"
#include "pool/redis.h"
#include "pool/worker.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define URL_ENV "SDW_REDIS_URL"

static void worker_usage(FILE *f) {
    fprintf(f,
            "usage: sdw worker -m MODEL --redis URL [options]\n"
            "\n"
            "A worker of a pool: loads one model and runs the jobs queued for it in Redis\n"
            "(Redis Streams, consumer group \"workers\") by gateways (sdw serve --redis URL),\n"
            "one at a time, publishing their progress and storing their images there. Start\n"
            "as many as you like, on as many machines; a worker that dies has its job taken\n"
            "over by another after the visibility timeout. docs/deploy.md describes a pool.\n"
            "\n"
            "model options:\n" SDW_CLI_MODEL_USAGE
            "\n"
            "pool options:\n"
            "      --redis URL         redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (default:\n"
            "                          $" URL_ENV ", which keeps the password out of process\n"
            "                          listings; logs show it as ***)\n"
            "      --model-name NAME   the model name jobs ask for (default: the model's folder\n"
            "                          or file name, as sdw serve calls it); workers serving one\n"
            "                          name must load the same weights\n"
            "      --pool-prefix P     prefix of the pool's Redis keys (default sdw; pools\n"
            "                          sharing one Redis differ here; also --prefix)\n"
            "      --worker-id ID      this worker's id (default HOST-PID-RANDOM)\n"
            "      --visibility S      a job whose worker renewed nothing for S seconds is taken\n"
            "                          over by another worker (default 30; a running job's\n"
            "                          worker renews it every S/3)\n"
            "      --max-deliveries N  a job handed out more than N times (its workers kept\n"
            "                          dying) is failed, not run again (default 3)\n"
            "      --heartbeat S       registry refresh (default 2; the entry expires after 3)\n"
            "      --result-ttl S      seconds a finished job's state and images stay in Redis\n"
            "                          (default 600)\n"
            "      --preview-every N   preview image every N steps (default 1; 0 = none)\n"
            "      --max-body-mb N, --max-input-mp MP\n"
            "                          the largest job accepted: a request of N MB with two\n"
            "                          images of MP megapixels (defaults 64 and 16.8, as sdw\n"
            "                          serve's limits); a larger one fails with the reason\n"
            "      --shutdown-grace S  on SIGINT/SIGTERM, seconds the running job may take to\n"
            "                          finish before it is handed back (default 10)\n"
            "  -v, --verbose           log every job;  -q, --quiet: errors only\n"
            "\n"
            "exit codes: 0 stopped by SIGINT/SIGTERM, 1 failure (Redis refused the password or\n"
            "database), 2 usage error (a bad URL), 4 the model failed to load\n");
}

typedef struct worker_args {
    sdw_cli_model_args m; /* -m and how to load it */
    sdw_pool_worker_params pool;
    const char *url_from; /* "--redis" or URL_ENV: for messages */
    double max_body_mb, max_input_mp;
    int preview_every;
    bool verbose, quiet;
} worker_args;

enum {
    OPT_REDIS = SDW_CLI_OPT_OWN,
    OPT_MODEL_NAME,
    OPT_PREFIX,
    OPT_WORKER_ID,
    OPT_VISIBILITY,
    OPT_MAX_DELIVERIES,
    OPT_HEARTBEAT,
    OPT_RESULT_TTL,
    OPT_PREVIEW_EVERY,
    OPT_MAX_BODY_MB,
    OPT_MAX_INPUT_MP,
    OPT_SHUTDOWN_GRACE
};

static const struct option k_longs[] = {
    SDW_CLI_MODEL_LONGOPTS,
    {"redis", required_argument, NULL, OPT_REDIS},
    {"model-name", required_argument, NULL, OPT_MODEL_NAME},
    {"pool-prefix", required_argument, NULL, OPT_PREFIX},
    {"prefix", required_argument, NULL, OPT_PREFIX},
    {"worker-id", required_argument, NULL, OPT_WORKER_ID},
    {"visibility", required_argument, NULL, OPT_VISIBILITY},
    {"max-deliveries", required_argument, NULL, OPT_MAX_DELIVERIES},
    {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
    {"result-ttl", required_argument, NULL, OPT_RESULT_TTL},
    {"preview-every", required_argument, NULL, OPT_PREVIEW_EVERY},
    {"max-body-mb", required_argument, NULL, OPT_MAX_BODY_MB},
    {"max-input-mp", required_argument, NULL, OPT_MAX_INPUT_MP},
    {"shutdown-grace", required_argument, NULL, OPT_SHUTDOWN_GRACE},
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/* A number in [lo, hi] (and finite), or a usage error naming the option. */
static double parse_number(const char *opt, const char *v, double lo, double hi) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x)) sdw_cli_usage("%s: '%s' is not a number", opt, v);
    if (x < lo || x > hi) sdw_cli_usage("%s: %g is out of range [%g, %g]", opt, x, lo, hi);
    return x;
}

static void parse(int argc, char **argv, worker_args *a) {
    a->pool = sdw_pool_worker_params_default();
    a->url_from = "--redis";
    a->max_body_mb = 64;
    a->max_input_mp = (double)(4096 * 4096) / 1e6; /* sdw serve's defaults */
    a->preview_every = 1;
    sdw_cli_opts o = sdw_cli_opts_init("worker", argc, argv, SDW_CLI_MODEL_SHORT "vqh", k_longs);
    while (sdw_cli_next(&o)) {
        if (sdw_cli_model_option(&o, &a->m)) continue;
        switch (o.c) {
        case OPT_REDIS: a->pool.redis_url = o.arg; break;
        case OPT_MODEL_NAME: a->pool.model_name = o.arg; break;
        case OPT_PREFIX: a->pool.prefix = o.arg; break;
        case OPT_WORKER_ID: a->pool.worker_id = o.arg; break;
        case OPT_VISIBILITY: a->pool.visibility_s = parse_number(o.name, o.arg, 0.1, 86400); break;
        case OPT_MAX_DELIVERIES:
            a->pool.max_deliveries = (int)sdw_cli_int(o.name, o.arg, 1, 1000);
            break;
        case OPT_HEARTBEAT: a->pool.heartbeat_s = parse_number(o.name, o.arg, 0.1, 3600); break;
        case OPT_RESULT_TTL:
            a->pool.result_ttl_s = parse_number(o.name, o.arg, 1, 30 * 86400);
            break;
        case OPT_PREVIEW_EVERY: a->preview_every = (int)sdw_cli_int(o.name, o.arg, 0, 10000); break;
        case OPT_MAX_BODY_MB: a->max_body_mb = parse_number(o.name, o.arg, 1, 1 << 16); break;
        case OPT_MAX_INPUT_MP:
            a->max_input_mp = parse_number(o.name, o.arg, 0.001, (double)((size_t)1 << 26) / 1e6);
            break;
        case OPT_SHUTDOWN_GRACE:
            a->pool.shutdown_grace_s = parse_number(o.name, o.arg, 0, 86400);
            break;
        case 'v': a->verbose = true; break;
        case 'q': a->quiet = true; break;
        case 'h': worker_usage(stdout), exit(0);
        default: SDW_ABORT("option %s is in worker's table but not handled", o.name);
        }
    }
    if (!a->pool.redis_url) {
        a->pool.redis_url = getenv(URL_ENV);
        a->url_from = URL_ENV;
    }
    if (!a->pool.redis_url || !*a->pool.redis_url)
        sdw_cli_usage("worker needs the pool's Redis: --redis redis://[:PASSWORD@]HOST[:PORT][/DB]"
                      ", or the URL in $" URL_ENV " (see sdw worker --help)");
    if (!a->m.model)
        sdw_cli_usage("worker needs a model (-m PATH): the one the pool's jobs for it run on");
    /* what a gateway with the same limits lets through: the request, two images of 4 channels */
    a->pool.max_payload_bytes =
        (size_t)(a->max_body_mb * (1 << 20)) + (size_t)(2 * 4 * a->max_input_mp * 1e6);
}

/* ---- the run ---- */

typedef struct runner {
    sdw_pool_worker *w;
    atomic_bool done;
} runner;

static void *run_main(void *arg) {
    runner *r = arg;
    sdw_pool_worker_run(r->w);
    atomic_store(&r->done, true);
    return NULL;
}

/* Tries Redis once before the model loads: a bad password or database is a mistake to show now
 * (exit), an unreachable server only a warning (the worker waits for it). */
static void check_redis(const worker_args *a) {
    sdw_redis_url u;
    sdw_error err = {0};
    if (sdw_redis_url_parse(a->pool.redis_url, &u, &err) != SDW_OK)
        sdw_cli_usage("%s: %s", a->url_from, err.msg); /* the message shows the URL redacted */
    sdw_redis_params p = sdw_redis_params_default();
    sdw_redis *c = NULL;
    sdw_status s = sdw_redis_open(&u, &p, &c, &err);
    sdw_redis_close(c);
    memset(&u, 0, sizeof u);
    if (s == SDW_E_UNAVAILABLE)
        fprintf(stderr, "sdw: warning: %s: starting anyway; the worker takes jobs once Redis "
                        "answers (it retries with backoff)\n", err.msg);
    else if (s)
        sdw_cli_fail(SDW_EXIT_FAILURE, "%s", err.msg);
}

int sdw_cli_worker(int argc, char **argv) {
    worker_args a = {0};
    parse(argc, argv, &a);
    sdw_log_set_level(a.quiet ? SDW_LOG_ERROR : a.verbose ? SDW_LOG_INFO : SDW_LOG_WARN);

    /* Signals go to this thread's sigwait only: every thread started from here (the model's,
     * the engine's, the loop's) inherits the mask. A lost Redis connection must not kill the
     * process with SIGPIPE. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    check_redis(&a);
    sdw_error err = {0};
    sdw_load_options opts = sdw_cli_load_options(&a.m);
    sdw_image_model *m = NULL;
    const double t0 = sdw_time_now();
    if (sdw_model_load(a.m.model, &opts, &m, &err) != SDW_OK)
        sdw_cli_fail(SDW_EXIT_MODEL, "%s", err.msg);
    const double load_s = sdw_time_now() - t0;
    sdw_engine_params ep = sdw_engine_params_default();
    ep.preview_every = a.preview_every;
    ep.queue_max = 1; /* the worker submits one job at a time */
    sdw_engine *e = NULL;
    if (sdw_engine_create(m, &ep, &e, &err) != SDW_OK) {
        sdw_model_destroy(m);
        sdw_cli_fail(SDW_EXIT_FAILURE, "%s", err.msg);
    }
    const char *omp = getenv("OMP_NUM_THREADS");
    a.pool.threads = a.m.threads       ? a.m.threads
                     : omp && atoi(omp) > 0 ? atoi(omp)
                                            : sdw_usable_cores();
    runner r = {0};
    if (sdw_pool_worker_create(e, &a.pool, &r.w, &err) != SDW_OK) {
        sdw_engine_destroy(e);
        sdw_model_destroy(m);
        /* a name that cannot be a key: the model's folder name, or an option's value */
        sdw_cli_usage("%s%s", err.msg,
                      a.pool.model_name ? "" : " (name it with --model-name NAME)");
    }
    printf("sdw: ready: worker %s serves model %s (%s %s, loaded in %.2f s) from %s\n",
           sdw_pool_worker_id(r.w), sdw_pool_worker_model(r.w), sdw_model_type(m),
           sdw_model_variant(m), load_s, sdw_pool_worker_redis(r.w));
    fflush(stdout);

    /* A signal that came while the model loaded: stop before taking any job. */
    sigset_t pending;
    sigpending(&pending);
    pthread_t t;
    const bool early = sigismember(&pending, SIGINT) || sigismember(&pending, SIGTERM);
    if (!early && pthread_create(&t, NULL, run_main, &r) != 0) {
        sdw_pool_worker_destroy(r.w);
        sdw_engine_destroy(e);
        sdw_model_destroy(m);
        sdw_cli_fail(SDW_EXIT_FAILURE, "cannot start the worker's thread");
    }
    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "sdw: %s: stopping (no new job; a running one gets %g s to finish, then it "
                    "is handed back to the pool)\n",
            sig == SIGINT ? "interrupted" : "terminated", a.pool.shutdown_grace_s);
    if (!early) {
        sdw_pool_worker_stop(r.w);
        /* Wait in slices, so a second signal can cut the grace short. */
        while (!atomic_load(&r.done)) {
            struct timespec slice = {0, 100 * 1000 * 1000};
            if (sigtimedwait(&stop, NULL, &slice) > 0) {
                /* The job's entry stays pending in Redis: another worker takes it over after
                 * the visibility timeout. _exit: the loop and the engine still run. */
                fprintf(stderr, "sdw: second signal: exiting now (a running job is taken over "
                                "by another worker after the visibility timeout)\n");
                fflush(stdout);
                fflush(stderr);
                _exit(0);
            }
        }
        pthread_join(t, NULL);
    }
    sdw_pool_worker_stats st;
    sdw_pool_worker_get_stats(r.w, &st);
    fprintf(stderr, "sdw: worker %s stopped: %llu jobs run (%llu succeeded, %llu failed, %llu "
                    "cancelled), %llu taken over from other workers, %llu handed back\n",
            sdw_pool_worker_id(r.w), (unsigned long long)st.started,
            (unsigned long long)st.succeeded, (unsigned long long)st.failed,
            (unsigned long long)st.cancelled, (unsigned long long)st.claimed,
            (unsigned long long)st.released);
    sdw_pool_worker_destroy(r.w);
    sdw_engine_destroy(e);
    sdw_model_destroy(m);
    return SDW_EXIT_OK;
}
