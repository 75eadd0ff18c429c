/* sdw serve — the long-running worker: load one model, serve it over HTTP until SIGINT/SIGTERM.
 * The server listens first (so /health and /ready answer while the model loads), then the model
 * is loaded and the engine started. Only this layer may exit(). */
#include "cli/serve.h"

#include "core/common.h"
#include "engine/engine.h"
#include "server/server.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: sdw serve [-m MODEL] [options]\n"
            "\n"
            "Serves one model over HTTP: the native job API with live progress (Server-Sent\n"
            "Events), the OpenAI Images API, the AUTOMATIC1111 API and a web page at /.\n"
            "Without -m it serves the built-in demo model (random weights: its images are noise).\n"
            "\n"
            "options:\n"
            "  -m, --model PATH        diffusers folder or single .safetensors file\n"
            "      --host ADDR         address to bind (default 127.0.0.1: this machine only)\n"
            "      --port N            TCP port (default 7860; 0 = any free port, printed)\n"
            "      --api-key KEY       require Authorization: Bearer KEY on everything but\n"
            "                          /health (default: $SDW_API_KEY; none if unset)\n"
            "      --queue N           jobs that may wait (default 32); more get 429 + Retry-After\n"
            "      --preview-every N   preview image every N steps (default 1; 0 = none)\n"
            "      --result-ttl S      seconds a finished job's result stays readable (default 600)\n"
            "      --result-mb N       memory for kept results, oldest dropped first (default 256)\n"
            "      --max-size N        largest width/height accepted (default 2048)\n"
            "      --max-steps N       most steps accepted (default 150)\n"
            "      --max-n N           most images per request (default 4)\n"
            "      --max-body-mb N     largest request body (default 64)\n"
            "      --max-connections N concurrent connections (default 512)\n"
            "      --tokenizer DIR     vocab.json + merges.txt for single-file checkpoints\n"
            "      --config DIR        a diffusers folder describing a single-file checkpoint\n"
            "      --prediction eps|v  override the detected prediction type\n"
            "      --precision P       auto (bf16 where the CPU has AMX/AVX512-BF16) | f32 | bf16\n"
            "  -t, --threads N         CPU threads (default: all usable cores)\n"
            "  -v, --verbose           log every request;  -q, --quiet: errors only\n");
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("sdw: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static long long int_arg(const char *opt, const char *v, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno) fail("%s: '%s' is not an integer", opt, v);
    if (x < lo || x > hi) fail("%s: %lld is out of range [%lld, %lld]", opt, x, lo, hi);
    return x;
}

typedef struct serve_args {
    const char *model, *tokenizer, *prediction, *config;
    sdw_precision precision;
    int threads;
    bool verbose, quiet;
    sdw_server_params server;
    sdw_engine_params engine;
} serve_args;

static void parse(int argc, char **argv, serve_args *a) {
    a->server = sdw_server_params_default();
    a->engine = sdw_engine_params_default();
    a->engine.preview_every = 1;
    a->server.api_key = getenv("SDW_API_KEY");
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
#define IS(s, l) (strcmp(o, s) == 0 || strcmp(o, l) == 0)
#define VAL() (i + 1 < argc ? argv[++i] : (fail("%s needs a value", o), ""))
        if (IS("-m", "--model")) a->model = VAL();
        else if (IS("--host", "--host")) a->server.host = VAL();
        else if (IS("--port", "--port")) a->server.port = (int)int_arg(o, VAL(), 0, 65535);
        else if (IS("--api-key", "--api-key")) a->server.api_key = VAL();
        else if (IS("--queue", "--queue")) a->engine.queue_max = (int)int_arg(o, VAL(), 1, 100000);
        else if (IS("--preview-every", "--preview-every"))
            a->engine.preview_every = (int)int_arg(o, VAL(), 0, 10000);
        else if (IS("--result-ttl", "--result-ttl"))
            a->engine.result_ttl_s = (double)int_arg(o, VAL(), 1, 30 * 86400);
        else if (IS("--result-mb", "--result-mb"))
            a->engine.result_max_bytes = (size_t)int_arg(o, VAL(), 1, 1 << 20) << 20;
        else if (IS("--max-size", "--max-size")) a->server.max_size = (int)int_arg(o, VAL(), 8, 1 << 16);
        else if (IS("--max-steps", "--max-steps")) a->server.max_steps = (int)int_arg(o, VAL(), 1, 10000);
        else if (IS("--max-n", "--max-n")) a->server.max_n = (int)int_arg(o, VAL(), 1, 1024);
        else if (IS("--max-body-mb", "--max-body-mb"))
            a->server.max_body_bytes = (size_t)int_arg(o, VAL(), 1, 1 << 16) << 20;
        else if (IS("--max-connections", "--max-connections"))
            a->server.max_connections = (int)int_arg(o, VAL(), 4, 100000);
        else if (IS("--tokenizer", "--tokenizer")) a->tokenizer = VAL();
        else if (IS("--config", "--config")) a->config = VAL();
        else if (IS("--prediction", "--prediction")) a->prediction = VAL();
        else if (IS("--precision", "--precision")) {
            const char *v = VAL();
            if (sdw_precision_parse(v, &a->precision) != SDW_OK)
                fail("--precision: '%s' must be auto, f32 or bf16", v);
        }
        else if (IS("-t", "--threads")) a->threads = (int)int_arg(o, VAL(), 1, 1024);
        else if (IS("-v", "--verbose")) a->verbose = true;
        else if (IS("-q", "--quiet")) a->quiet = true;
        else if (IS("-h", "--help")) serve_usage(stdout), exit(0);
        else fail("serve: unknown option '%s' (see sdw serve --help)", o);
#undef VAL
#undef IS
    }
    if (a->prediction && strcmp(a->prediction, "eps") && strcmp(a->prediction, "v"))
        fail("--prediction: '%s' must be eps or v", a->prediction);
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
    sdw_server *srv = NULL;
    if (sdw_server_start(&a.server, &srv, &err) != SDW_OK) fail("%s", err.msg);
    const char *host = a.server.host ? a.server.host : "127.0.0.1";
    printf("sdw: listening on http://%s%s%s:%d\n", strchr(host, ':') ? "[" : "", host,
           strchr(host, ':') ? "]" : "", sdw_server_port(srv));
    fflush(stdout);
    if (strcmp(host, "127.0.0.1") && strcmp(host, "::1") && strcmp(host, "localhost") &&
        !(a.server.api_key && *a.server.api_key))
        fprintf(stderr, "sdw: warning: listening on %s without --api-key: anyone who can reach "
                        "this address can use the worker\n", host);

    sdw_load_options opts = sdw_load_options_default();
    opts.tokenizer_dir = a.tokenizer;
    opts.config_dir = a.config;
    opts.n_threads = a.threads;
    opts.prediction = a.prediction;
    opts.precision = a.precision;
    sdw_image_model *m = NULL;
    double t0 = sdw_time_now();
    if (sdw_model_load(a.model, &opts, &m, &err) != SDW_OK) {
        sdw_server_stop(srv);
        fail("%s", err.msg);
    }
    if (!a.model)
        fprintf(stderr, "sdw: no -m given: serving the built-in DEMO model (random weights, its "
                        "images are noise; pass -m MODEL for real images)\n");
    sdw_engine *e = NULL;
    if (sdw_engine_create(m, &a.engine, &e, &err) != SDW_OK) {
        sdw_server_stop(srv);
        sdw_model_destroy(m);
        fail("%s", err.msg);
    }
    sdw_server_set_engine(srv, e);
    printf("sdw: ready: %s (%s %s) loaded in %.2f s; open http://%s:%d/ in a browser\n", m->name,
           sdw_model_type(m), sdw_model_variant(m), sdw_time_now() - t0,
           strcmp(host, "0.0.0.0") ? host : "127.0.0.1", sdw_server_port(srv));
    fflush(stdout);

    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "sdw: %s: stopping (running jobs are cancelled)\n",
            sig == SIGINT ? "interrupted" : "terminated");
    sdw_engine_shutdown(e);
    sdw_server_stop(srv);
    sdw_engine_destroy(e);
    sdw_model_destroy(m);
    return 0;
}
