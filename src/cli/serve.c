/* sdw serve — the long-running worker: load one model, serve it over HTTP until SIGINT/SIGTERM.
 * The server listens first (so /health and /ready answer while the model loads), then the model
 * is loaded and the engine started. On a signal every job is cancelled; the running one stops
 * within one block of its step, and if it has not within the grace period (an operation that
 * polls nothing) it is recorded as cancelled and the process exits without waiting for it. A
 * second signal during the grace period exits at once. Only this layer may exit().
 *
 * With --redis URL (or $SDW_REDIS_URL) and no -m it is a stateless gateway of a worker pool
 * (pool/gateway.h): the same APIs, every job queued in Redis for `sdw worker`s; on a signal it
 * stops answering and exits (the jobs live on in Redis). */
#include "cli/serve.h"

#include "cli/cli.h"

#include "core/common.h"
#include "engine/engine.h"
#include "pool/gateway.h"
#include "server/server.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_GRACE_S 10.0
#define MAX_CORS 32

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: sdw serve [-m MODEL] [options]\n"
            "       sdw serve --redis redis://[:PASSWORD@]HOST[:PORT][/DB] [server options]\n"
            "\n"
            "Serves one model over HTTP: the native job API with live progress (Server-Sent\n"
            "Events), the OpenAI Images API, the AUTOMATIC1111 API and a web page at /.\n"
            "Without -m it serves the built-in demo model (random weights: its images are noise).\n"
            "With --redis and no -m it is a stateless gateway of a worker pool: the same APIs,\n"
            "every job queued in Redis for the `sdw worker`s of the model it names.\n"
            "\n"
            "pool gateway options:\n"
            "      --redis URL         the pool's Redis (default: $SDW_REDIS_URL, which keeps a\n"
            "                          password off the command line; used only without -m)\n"
            "      --pool-prefix P     the pool's key prefix (default sdw; as its workers')\n"
            "                          --queue bounds each model's waiting jobs, --result-ttl\n"
            "                          how long a job cancelled here stays readable\n"
            "\n"
            "model options:\n" SDW_CLI_MODEL_USAGE
            "\n"
            "server options:\n"
            "      --host ADDR         address to bind (default 127.0.0.1: this machine only)\n"
            "      --port N            TCP port (default 7860; 0 = any free port, printed)\n"
            "      --api-key KEY       require Authorization: Bearer KEY on everything but\n"
            "                          /health (default: $SDW_API_KEY; none if unset)\n"
            "      --queue N           jobs that may wait (default 32); more get 429\n"
            "      --preview-every N   preview image every N steps (default 1; 0 = none)\n"
            "      --result-ttl S      seconds a finished result stays readable (default 600)\n"
            "      --result-mb N       memory for kept results, oldest dropped first (256)\n"
            "      --max-size N        largest width/height accepted (default 2048)\n"
            "      --max-steps N       most steps accepted (default 150)\n"
            "      --max-n N           most images per request (default 4)\n"
            "      --max-body-mb N     largest request body (default 64)\n"
            "      --max-prompt-bytes N  longest prompt (and negative prompt) accepted\n"
            "                          (default 65536; a text encoder reads a few hundred)\n"
            "      --max-input-mp N    largest input image in megapixels, checked from its\n"
            "                          header before decoding (default 16.8 = 4096 x 4096)\n"
            "      --max-connections N concurrent connections (default 512)\n"
            "      --cors-origin O     let web pages from origin O (scheme://host[:port]) call\n"
            "                          the API (repeatable; '*' = any, not with --api-key)\n"
            "      --access-log FILE   one JSON line per request (- = standard error)\n"
            "      --shutdown-grace S  on SIGINT/SIGTERM, seconds to let the running job stop\n"
            "                          before exiting without it (default 10)\n"
            "  -v, --verbose           log every request;  -q, --quiet: errors only\n");
}

typedef struct serve_args {
    sdw_cli_model_args m; /* -m and how to load it */
    bool verbose, quiet;
    sdw_server_params server;
    sdw_engine_params engine;
    const char *cors[MAX_CORS];
    const char *access_log;
    double grace_s;
    const char *redis_url, *pool_prefix;
    bool redis_given;   /* --redis on the command line (not only the environment) */
    const char *model_opt; /* a model option given (-m, -t, ...): its name */
} serve_args;

enum {
    OPT_HOST = SDW_CLI_OPT_OWN,
    OPT_PORT,
    OPT_API_KEY,
    OPT_QUEUE,
    OPT_PREVIEW_EVERY,
    OPT_RESULT_TTL,
    OPT_RESULT_MB,
    OPT_MAX_SIZE,
    OPT_MAX_STEPS,
    OPT_MAX_N,
    OPT_MAX_BODY_MB,
    OPT_MAX_CONNECTIONS,
    OPT_MAX_PROMPT_BYTES,
    OPT_MAX_INPUT_MP,
    OPT_CORS_ORIGIN,
    OPT_ACCESS_LOG,
    OPT_SHUTDOWN_GRACE,
    OPT_REDIS,
    OPT_POOL_PREFIX
};

static const struct option k_longs[] = {
    SDW_CLI_MODEL_LONGOPTS,
    {"host", required_argument, NULL, OPT_HOST},
    {"port", required_argument, NULL, OPT_PORT},
    {"api-key", required_argument, NULL, OPT_API_KEY},
    {"queue", required_argument, NULL, OPT_QUEUE},
    {"preview-every", required_argument, NULL, OPT_PREVIEW_EVERY},
    {"result-ttl", required_argument, NULL, OPT_RESULT_TTL},
    {"result-mb", required_argument, NULL, OPT_RESULT_MB},
    {"max-size", required_argument, NULL, OPT_MAX_SIZE},
    {"max-steps", required_argument, NULL, OPT_MAX_STEPS},
    {"max-n", required_argument, NULL, OPT_MAX_N},
    {"max-body-mb", required_argument, NULL, OPT_MAX_BODY_MB},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"max-prompt-bytes", required_argument, NULL, OPT_MAX_PROMPT_BYTES},
    {"max-input-mp", required_argument, NULL, OPT_MAX_INPUT_MP},
    {"cors-origin", required_argument, NULL, OPT_CORS_ORIGIN},
    {"access-log", required_argument, NULL, OPT_ACCESS_LOG},
    {"shutdown-grace", required_argument, NULL, OPT_SHUTDOWN_GRACE},
    {"redis", required_argument, NULL, OPT_REDIS},
    {"pool-prefix", required_argument, NULL, OPT_POOL_PREFIX},
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/* A number of at least lo (and finite), or a usage error naming the option. */
static double parse_number(const char *opt, const char *v, double lo) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x)) sdw_cli_usage("%s: '%s' is not a number", opt, v);
    if (x < lo) sdw_cli_usage("%s: %g must be at least %g", opt, x, lo);
    return x;
}

static void parse(int argc, char **argv, serve_args *a) {
    a->server = sdw_server_params_default();
    a->engine = sdw_engine_params_default();
    a->engine.preview_every = 1;
    a->grace_s = DEFAULT_GRACE_S;
    a->server.api_key = getenv("SDW_API_KEY");
    sdw_cli_opts o = sdw_cli_opts_init("serve", argc, argv, SDW_CLI_MODEL_SHORT "vqh", k_longs);
    while (sdw_cli_next(&o)) {
#define INT(lo, hi) sdw_cli_int(o.name, o.arg, lo, hi)
        if (sdw_cli_model_option(&o, &a->m)) {
            if (!a->model_opt) a->model_opt = o.name;
            continue;
        }
        switch (o.c) {
        case OPT_HOST: a->server.host = o.arg; break;
        case OPT_PORT: a->server.port = (int)INT(0, 65535); break;
        case OPT_API_KEY: a->server.api_key = o.arg; break;
        case OPT_QUEUE: a->engine.queue_max = (int)INT(1, 100000); break;
        case OPT_PREVIEW_EVERY: a->engine.preview_every = (int)INT(0, 10000); break;
        case OPT_RESULT_TTL: a->engine.result_ttl_s = (double)INT(1, 30 * 86400); break;
        case OPT_RESULT_MB: a->engine.result_max_bytes = (size_t)INT(1, 1 << 20) << 20; break;
        case OPT_MAX_SIZE: a->server.max_size = (int)INT(8, 1 << 16); break;
        case OPT_MAX_STEPS: a->server.max_steps = (int)INT(1, 10000); break;
        case OPT_MAX_N: a->server.max_n = (int)INT(1, 1024); break;
        case OPT_MAX_BODY_MB: a->server.max_body_bytes = (size_t)INT(1, 1 << 16) << 20; break;
        case OPT_MAX_CONNECTIONS: a->server.max_connections = (int)INT(4, 100000); break;
        case OPT_MAX_PROMPT_BYTES: a->server.max_prompt_bytes = (size_t)INT(1, 1 << 26); break;
        case OPT_MAX_INPUT_MP:
            a->server.max_input_pixels = (size_t)(parse_number(o.name, o.arg, 0.001) * 1e6);
            if (a->server.max_input_pixels > (size_t)1 << 26)
                sdw_cli_usage("%s: at most %.1f (the decoders' limit)", o.name,
                              (double)((size_t)1 << 26) / 1e6);
            break;
        case OPT_CORS_ORIGIN:
            if (a->server.n_cors_origins == MAX_CORS)
                sdw_cli_usage("%s: at most %d origins", o.name, MAX_CORS);
            a->cors[a->server.n_cors_origins++] = o.arg;
            break;
        case OPT_ACCESS_LOG: a->access_log = o.arg; break;
        case OPT_SHUTDOWN_GRACE: a->grace_s = parse_number(o.name, o.arg, 0); break;
        case OPT_REDIS:
            a->redis_url = o.arg;
            a->redis_given = true;
            break;
        case OPT_POOL_PREFIX: a->pool_prefix = o.arg; break;
        case 'v': a->verbose = true; break;
        case 'q': a->quiet = true; break;
        case 'h': serve_usage(stdout), exit(0);
        default: SDW_ABORT("option %s is in serve's table but not handled", o.name);
        }
#undef INT
    }
    a->server.cors_origins = a->cors;
    if (a->redis_given && a->model_opt)
        sdw_cli_usage("%s and --redis together: a gateway (--redis) loads no model; a pool's "
                      "worker is `sdw worker -m MODEL --redis URL`",
                      a->model_opt);
    if (!a->redis_given && !a->m.model && getenv("SDW_REDIS_URL") && *getenv("SDW_REDIS_URL") &&
        !a->model_opt)
        a->redis_url = getenv("SDW_REDIS_URL");
    if (a->pool_prefix && !a->redis_url)
        sdw_cli_usage("--pool-prefix is for a gateway: give --redis URL (or $SDW_REDIS_URL)");
}

/* The pool gateway: serves until a signal, then stops answering (the jobs stay in Redis). */
static int serve_gateway(serve_args *a, sigset_t *stop, FILE *log) {
    sdw_error err = {0};
    sdw_pool_gateway_params gp = sdw_pool_gateway_params_default();
    gp.redis_url = a->redis_url;
    gp.prefix = a->pool_prefix;
    if (a->engine.queue_max > 0) gp.queue_max = a->engine.queue_max;
    if (a->engine.result_ttl_s > 0) gp.result_ttl_s = a->engine.result_ttl_s;
    /* a job in Redis is bounded as its HTTP request is: the body, and the pixels of at most
     * two input images (init image, mask) of the largest size accepted */
    sdw_server_params d = sdw_server_params_default();
    size_t body = a->server.max_body_bytes ? a->server.max_body_bytes : d.max_body_bytes;
    size_t px = a->server.max_input_pixels ? a->server.max_input_pixels : d.max_input_pixels;
    gp.max_payload_bytes = body + 2 * 4 * px;
    sdw_pool_gateway *g = NULL;
    if (sdw_pool_gateway_create(&gp, &g, &err) != SDW_OK)
        sdw_cli_usage("--redis: %s", err.msg);
    sdw_server *srv = NULL;
    if (sdw_server_start(&a->server, &srv, &err) != SDW_OK) {
        sdw_pool_gateway_destroy(g);
        sdw_cli_fail(err.code == SDW_E_INVALID_ARG ? SDW_EXIT_USAGE : SDW_EXIT_FAILURE, "%s",
                     err.msg);
    }
    sdw_server_set_gateway(srv, g);
    const char *host = a->server.host ? a->server.host : "127.0.0.1";
    printf("sdw: listening on http://%s%s%s:%d\n", strchr(host, ':') ? "[" : "", host,
           strchr(host, ':') ? "]" : "", sdw_server_port(srv));
    if (strcmp(host, "127.0.0.1") && strcmp(host, "::1") && strcmp(host, "localhost") &&
        !(a->server.api_key && *a->server.api_key))
        fprintf(stderr, "sdw: warning: listening on %s without --api-key: anyone who can reach "
                        "this address can use the pool\n", host);
    if (sdw_pool_gateway_check(g, &err) != SDW_OK)
        fprintf(stderr, "sdw: warning: %s: answering 503 until Redis can be reached\n",
                err.msg);
    printf("sdw: ready: gateway of the pool at %s (prefix %s); open http://%s:%d/ in a "
           "browser\n",
           sdw_pool_gateway_redis(g), sdw_pool_gateway_prefix(g),
           strcmp(host, "0.0.0.0") ? host : "127.0.0.1", sdw_server_port(srv));
    fflush(stdout);
    int sig = 0;
    sigwait(stop, &sig);
    fprintf(stderr, "sdw: %s: stopping the gateway (queued and running jobs go on in the "
                    "pool)\n", sig == SIGINT ? "interrupted" : "terminated");
    sdw_pool_gateway_shutdown(g); /* waiting requests answer now */
    sdw_server_stop(srv);
    sdw_pool_gateway_destroy(g);
    if (log && log != stderr) fclose(log);
    return 0;
}

int sdw_cli_serve(int argc, char **argv) {
    serve_args a = {0};
    parse(argc, argv, &a);
    sdw_log_set_level(a.quiet ? SDW_LOG_ERROR : a.verbose ? SDW_LOG_INFO : SDW_LOG_WARN);

    /* Signals go to this thread's sigwait only: every thread started from here inherits the
     * mask. A vanished client must not kill the process with SIGPIPE. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    sdw_error err = {0};
    FILE *log = NULL;
    if (a.access_log) {
        log = strcmp(a.access_log, "-") ? fopen(a.access_log, "a") : stderr;
        if (!log) sdw_cli_fail(SDW_EXIT_INPUT, "--access-log %s: %s", a.access_log, strerror(errno));
        a.server.access_log = log;
    }
    if (a.redis_url) return serve_gateway(&a, &stop, log);
    sdw_server *srv = NULL;
    if (sdw_server_start(&a.server, &srv, &err) != SDW_OK)
        sdw_cli_fail(err.code == SDW_E_INVALID_ARG ? SDW_EXIT_USAGE : SDW_EXIT_FAILURE, "%s",
                     err.msg);
    const char *host = a.server.host ? a.server.host : "127.0.0.1";
    printf("sdw: listening on http://%s%s%s:%d\n", strchr(host, ':') ? "[" : "", host,
           strchr(host, ':') ? "]" : "", sdw_server_port(srv));
    fflush(stdout);
    if (strcmp(host, "127.0.0.1") && strcmp(host, "::1") && strcmp(host, "localhost") &&
        !(a.server.api_key && *a.server.api_key))
        fprintf(stderr, "sdw: warning: listening on %s without --api-key: anyone who can reach "
                        "this address can use the worker\n", host);

    sdw_load_options opts = sdw_cli_load_options(&a.m);
    sdw_image_model *m = NULL;
    double t0 = sdw_time_now();
    if (sdw_model_load(a.m.model, &opts, &m, &err) != SDW_OK) {
        sdw_server_stop(srv);
        sdw_cli_fail(SDW_EXIT_MODEL, "%s", err.msg);
    }
    const double load_s = sdw_time_now() - t0;
    sdw_server_set_load_seconds(srv, load_s);
    if (!a.m.model)
        fprintf(stderr, "sdw: no -m given: serving the built-in DEMO model (random weights, its "
                        "images are noise; pass -m MODEL for real images)\n");
    sdw_engine *e = NULL;
    if (sdw_engine_create(m, &a.engine, &e, &err) != SDW_OK) {
        sdw_server_stop(srv);
        sdw_model_destroy(m);
        sdw_cli_fail(SDW_EXIT_FAILURE, "%s", err.msg);
    }
    sdw_server_set_engine(srv, e);
    printf("sdw: ready: %s (%s %s) loaded in %.2f s; open http://%s:%d/ in a browser\n", m->name,
           sdw_model_type(m), sdw_model_variant(m), load_s,
           strcmp(host, "0.0.0.0") ? host : "127.0.0.1", sdw_server_port(srv));
    fflush(stdout);

    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "sdw: %s: stopping (running jobs are cancelled; %g s grace)\n",
            sig == SIGINT ? "interrupted" : "terminated", a.grace_s);
    /* Wait for the running job in slices, so a second signal can cut the grace short. */
    sdw_engine_shutdown(e);
    bool clean = false;
    const double t_stop = sdw_time_now();
    for (;;) {
        const double left = a.grace_s - (sdw_time_now() - t_stop);
        if ((clean = sdw_engine_wait_stopped(e, left > 0.1 ? 0.1 : SDW_MAX(left, 0.0))) ||
            left <= 0.1)
            break;
        struct timespec none = {0, 0};
        if (sigtimedwait(&stop, NULL, &none) > 0) {
            fprintf(stderr, "sdw: second signal: exiting now\n");
            break;
        }
    }
    if (!clean) {
        char why[160];
        snprintf(why, sizeof why,
                 "cancelled: the server shut down (the job did not stop within the %g s grace "
                 "period)",
                 a.grace_s);
        sdw_engine_abandon(e, why);
    }
    sdw_server_stop(srv); /* answers the callers of every job, the abandoned one included */
    if (!clean) {
        /* The worker is inside one long operation: it keeps the model, so neither is freed;
         * _exit, not exit: no atexit handler or library destructor may run under it. */
        fprintf(stderr, "sdw: the running job did not stop within %g s: exiting without it "
                        "(recorded as cancelled)\n", a.grace_s);
        fflush(stdout);
        fflush(stderr);
        if (log && log != stderr) fflush(log);
        _exit(0);
    }
    sdw_engine_destroy(e);
    sdw_model_destroy(m);
    if (log && log != stderr) fclose(log);
    return 0;
}
