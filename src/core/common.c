#include "core/common.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

static sdw_log_level g_log_level = SDW_LOG_WARN;

void sdw_log_set_level(sdw_log_level level) { g_log_level = level; }
sdw_log_level sdw_log_get_level(void) { return g_log_level; }

void sdw_log(sdw_log_level level, const char *fmt, ...) {
    static const char *names[] = {"error", "warning", "info", "debug"};
    if (level > g_log_level) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void *sdw_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) SDW_ABORT("out of memory allocating %zu bytes", n);
    return p;
}

void *sdw_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) SDW_ABORT("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

char *sdw_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(sdw_xmalloc(n), s, n);
}

sdw_status sdw_read_file(const char *path, char **out, size_t *out_len, sdw_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return sdw_error_set(err, SDW_E_IO, "cannot open %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return sdw_error_set(err, SDW_E_NOMEM, "out of memory reading %s", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return sdw_error_set(err, SDW_E_IO, "error reading %s", path);
    }
    buf[len] = 0;
    *out = buf;
    if (out_len) *out_len = len;
    return SDW_OK;
}

double sdw_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
