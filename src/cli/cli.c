/* cli/cli.c — see cli.h. */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void vfail(int code, const char *fmt, va_list ap) __attribute__((noreturn));
static void vfail(int code, const char *fmt, va_list ap) {
    fflush(stdout);
    fputs("sdw: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    exit(code);
}

void sdw_cli_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(code, fmt, ap);
}

void sdw_cli_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(SDW_EXIT_USAGE, fmt, ap);
}

int sdw_cli_exit_code(sdw_status s) {
    switch (s) {
    case SDW_CANCELLED: return SDW_EXIT_CANCELLED;
    case SDW_E_INVALID_ARG:
    case SDW_E_UNSUPPORTED:
    case SDW_E_FORMAT:
    case SDW_E_SHAPE:
    case SDW_E_NOT_FOUND:
    case SDW_E_IO: return SDW_EXIT_INPUT;
    default: return SDW_EXIT_FAILURE;
    }
}

void sdw_cli_check_path(const char *opt, const char *path, bool dir_ok) {
    struct stat st;
    if (!path || stat(path, &st) != 0) return;
    if (S_ISREG(st.st_mode) || (dir_ok && S_ISDIR(st.st_mode))) return;
    sdw_cli_fail(SDW_EXIT_INPUT, "%s: %s is not a %s (a FIFO, socket or device cannot be read)",
                 opt, path, S_ISDIR(st.st_mode) ? "file" : dir_ok ? "file or folder" : "file");
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

sdw_cli_opts sdw_cli_opts_init(const char *command, int argc, char **argv, const char *shorts,
                               const struct option *longs) {
    return (sdw_cli_opts){.command = command, .argc = argc, .argv = argv, .shorts = shorts,
                          .longs = longs};
}

bool sdw_cli_next(sdw_cli_opts *o) {
    /* "+": stop at the first argument that is not an option (it is an error here, as before
     * getopt); ":": a missing value returns ':' instead of getopt printing its own message. */
    char shorts[128];
    snprintf(shorts, sizeof shorts, "+:%s", o->shorts);
    if (!o->started) {
        optind = 0; /* glibc: 0 restarts the scan from argv[1] with a fresh state */
        opterr = 0;
        o->started = true;
    }
    int idx = -1;
    o->c = getopt_long(o->argc, o->argv, shorts, o->longs, &idx);
    o->arg = optarg;
    if (o->c == -1) {
        if (optind < o->argc)
            sdw_cli_die("%s: unknown option '%s' (see sdw %s --help)", o->command,
                        o->argv[optind], o->command);
        return false;
    }
    /* What the user typed the option as: the long name when a long option matched, else the
     * letter. On errors getopt tells them apart through optopt: 0 for an unknown or ambiguous
     * long option, the letter for an unknown short one (also inside a cluster such as -vx), the
     * option's value for a known option missing its value or given one it does not take. A
     * long option's error is about the argument it came in (optind has moved past it). */
    const char *given = o->argv[optind - 1];
    const bool unknown_short =
        o->c == '?' && optopt > 0 && optopt < 128 && !strchr(o->shorts, optopt);
    if (idx >= 0)
        snprintf(o->name_buf, sizeof o->name_buf, "--%s", o->longs[idx].name);
    else if (o->c != '?' && o->c != ':')
        snprintf(o->name_buf, sizeof o->name_buf, "-%c", o->c);
    else if (unknown_short || (o->c == ':' && strncmp(given, "--", 2) != 0))
        snprintf(o->name_buf, sizeof o->name_buf, "-%c", optopt);
    else
        snprintf(o->name_buf, sizeof o->name_buf, "%.*s", (int)strcspn(given, "="), given);
    o->name = o->name_buf;
    if (o->c == ':') sdw_cli_die("%s needs a value", o->name);
    if (o->c == '?') {
        if (!unknown_short && optopt) sdw_cli_die("%s takes no value", o->name);
        if (!unknown_short) { /* a prefix of several long options? */
            const size_t n = strlen(o->name) - 2;
            char names[256] = "";
            int hits = 0;
            for (const struct option *l = o->longs; l->name; l++)
                if (strncmp(l->name, o->name + 2, n) == 0) {
                    size_t k = strlen(names);
                    snprintf(names + k, sizeof names - k, "%s--%s", hits++ ? ", " : "", l->name);
                }
            if (hits > 1) sdw_cli_die("%s is ambiguous: %s", o->name, names);
        }
        sdw_cli_die("%s: unknown option '%s' (see sdw %s --help)", o->command, o->name,
                    o->command);
    }
    return true;
}

/* The family flags' load option keys, in the order of SDW_CLI_MODEL_LONGOPTS. */
static const char *const k_family_keys[SDW_CLI_OPT_FAMILY_END - SDW_CLI_OPT_FAMILY] = {
    "tokenizer", "prediction", "vae", "clip_l", "clip_g", "t5xxl"};

static void set_option(sdw_cli_model_args *a, const char *key, const char *value) {
    sdw_error err = {0};
    if (sdw_load_options_set(&a->options, key, value, &err) != SDW_OK)
        sdw_cli_die("%s", err.msg);
}

bool sdw_cli_model_option(const sdw_cli_opts *o, sdw_cli_model_args *a) {
    switch (o->c) {
    case 'm':
        sdw_cli_check_path(o->name, o->arg, true);
        a->model = o->arg;
        return true;
    case SDW_CLI_OPT_CONFIG:
        sdw_cli_check_path(o->name, o->arg, true);
        a->config = o->arg;
        return true;
    case SDW_CLI_OPT_MODEL_OPTION: {
        char *kv = (char *)o->arg; /* argv is writable */
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv) sdw_cli_die("--model-option: '%s' is not KEY=VALUE", kv);
        *eq = 0;
        set_option(a, kv, eq + 1);
        return true;
    }
    case SDW_CLI_OPT_TAESD:
        sdw_cli_check_path(o->name, o->arg, true);
        a->taesd = o->arg;
        return true;
    case SDW_CLI_OPT_EMBEDDINGS_DIR:
        sdw_cli_check_path(o->name, o->arg, true);
        a->embeddings_dir = o->arg;
        return true;
    case SDW_CLI_OPT_CONTROLNET_DIR:
        sdw_cli_check_path(o->name, o->arg, true);
        a->controlnet_dir = o->arg;
        return true;
    case SDW_CLI_OPT_LORA_DIR:
        sdw_cli_check_path(o->name, o->arg, true);
        a->lora_dir = o->arg;
        return true;
    case SDW_CLI_OPT_PRECISION:
        if (sdw_precision_parse(o->arg, &a->precision) != SDW_OK)
            sdw_cli_die("--precision: '%s' must be auto, f32 or bf16", o->arg);
        return true;
    case 't': a->threads = (int)sdw_cli_int(o->name, o->arg, 1, 1024); return true;
    default:
        if (o->c >= SDW_CLI_OPT_FAMILY && o->c < SDW_CLI_OPT_FAMILY_END) {
            const char *key = k_family_keys[o->c - SDW_CLI_OPT_FAMILY];
            if (strcmp(key, "prediction")) /* the others name files or folders */
                sdw_cli_check_path(o->name, o->arg, true);
            set_option(a, key, o->arg);
            return true;
        }
        return false;
    }
}

sdw_load_options sdw_cli_load_options(const sdw_cli_model_args *a) {
    sdw_load_options opts = a->options;
    opts.config_dir = a->config;
    opts.controlnet_dir = a->controlnet_dir;
    opts.lora_dir = a->lora_dir;
    opts.taesd = a->taesd;
    opts.embeddings_dir = a->embeddings_dir;
    opts.n_threads = a->threads;
    opts.precision = a->precision;
    return opts;
}
