/* cli/cli.c — see cli.h. */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sdw_cli_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("sdw: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

long long sdw_cli_int(const char *opt, const char *v, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno) sdw_cli_die("%s: '%s' is not an integer", opt, v);
    if (x < lo || x > hi) sdw_cli_die("%s: %lld is out of range [%lld, %lld]", opt, x, lo, hi);
    return x;
}

int sdw_cli_count(const char *opt, const char *v, int lo) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno) sdw_cli_die("%s: '%s' is not an integer", opt, v);
    if (x < lo) sdw_cli_die("%s: %lld must be at least %d", opt, x, lo);
    if (x > INT_MAX) sdw_cli_die("%s: %lld is too large", opt, x);
    return (int)x;
}

const char *sdw_cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) sdw_cli_die("%s needs a value", argv[*i]);
    return argv[++*i];
}

/* Flags that are family options under another name: the CLI passes them on without knowing
 * which family takes them (sdw_model_load refuses one the loading family does not). */
static const struct {
    const char *flag, *key;
} k_family_flags[] = {
    {"--tokenizer", "tokenizer"}, {"--prediction", "prediction"}, {"--vae", "vae"},
    {"--clip-l", "clip_l"},       {"--clip-g", "clip_g"},         {"--t5xxl", "t5xxl"},
};

static void set_option(sdw_cli_model_args *a, const char *key, const char *value) {
    sdw_error err = {0};
    if (sdw_load_options_set(&a->options, key, value, &err) != SDW_OK)
        sdw_cli_die("%s", err.msg);
}

bool sdw_cli_model_option(int argc, char **argv, int *i, sdw_cli_model_args *a) {
    const char *o = argv[*i];
#define IS(s, l) (strcmp(o, s) == 0 || strcmp(o, l) == 0)
    for (size_t k = 0; k < sizeof k_family_flags / sizeof k_family_flags[0]; k++)
        if (strcmp(o, k_family_flags[k].flag) == 0) {
            set_option(a, k_family_flags[k].key, sdw_cli_value(argc, argv, i));
            return true;
        }
    if (IS("-m", "--model"))
        a->model = sdw_cli_value(argc, argv, i);
    else if (IS("--config", "--config"))
        a->config = sdw_cli_value(argc, argv, i);
    else if (IS("--model-option", "--model-option")) {
        char *kv = (char *)sdw_cli_value(argc, argv, i); /* argv is writable */
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv) sdw_cli_die("--model-option: '%s' is not KEY=VALUE", kv);
        *eq = 0;
        set_option(a, kv, eq + 1);
    } else if (IS("--precision", "--precision")) {
        const char *v = sdw_cli_value(argc, argv, i);
        if (sdw_precision_parse(v, &a->precision) != SDW_OK)
            sdw_cli_die("--precision: '%s' must be auto, f32 or bf16", v);
    } else if (IS("-t", "--threads"))
        a->threads = (int)sdw_cli_int(o, sdw_cli_value(argc, argv, i), 1, 1024);
    else
        return false;
#undef IS
    return true;
}

sdw_load_options sdw_cli_load_options(const sdw_cli_model_args *a) {
    sdw_load_options opts = a->options;
    opts.config_dir = a->config;
    opts.n_threads = a->threads;
    opts.precision = a->precision;
    return opts;
}
