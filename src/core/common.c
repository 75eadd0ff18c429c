#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "core/common.h"

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* ---- usable cores ---- */

static int quota_cores(long long quota, long long period) {
    if (quota <= 0 || period <= 0) return 0;
    return (int)SDW_MIN((quota + period - 1) / period, 1 << 20);
}

int sdw__cgroup_v2_cores(const char *cpu_max) {
    long long quota, period = 100000;
    if (!cpu_max || sscanf(cpu_max, "%lld %lld", &quota, &period) < 1) return 0; /* "max": none */
    return quota_cores(quota, period);
}

int sdw__cgroup_v1_cores(const char *quota_us, const char *period_us) {
    long long quota, period;
    if (!quota_us || !period_us || sscanf(quota_us, "%lld", &quota) != 1 ||
        sscanf(period_us, "%lld", &period) != 1)
        return 0;
    return quota_cores(quota, period); /* quota -1: none */
}

/* Whether the comma-separated list has the exact name ("cpu" is in "cpu,cpuacct", not in
 * "cpuset"). */
static bool has_token(const char *list, const char *name) {
    const size_t n = strlen(name);
    for (const char *p = list; *p; p += strcspn(p, ","), p += *p == ',')
        if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == 0)) return true;
    return false;
}

/* This process's cgroup directory of the given v1 controller ("" for the v2 hierarchy), from
 * /proc/self/cgroup, appended to root; false if there is none. */
static bool cgroup_dir(const char *controller, const char *root, char *out, size_t cap) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        char *ctl = strchr(line, ':'), *path = ctl ? strchr(ctl + 1, ':') : NULL;
        if (!path) continue;
        *path++ = 0;
        path[strcspn(path, "\n")] = 0;
        ctl++;
        /* v2: "0::/path"; v1: "N:cpu,cpuacct:/path" */
        const bool match = controller[0] ? has_token(ctl, controller) : ctl[0] == 0;
        if (match) found = snprintf(out, cap, "%s%s", root, path) < (int)cap;
    }
    fclose(f);
    return found;
}

/* dir/name's text, or NULL when it cannot be read (free it). */
static char *read_at(const char *dir, const char *name) {
    char path[1100], *text = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return sdw_read_file(path, &text, NULL, NULL) == SDW_OK ? text : NULL;
}

static int cgroup_cores(void) {
    char dir[1024];
    int n = 0;
    if (cgroup_dir("", "/sys/fs/cgroup", dir, sizeof dir)) {
        char *max = read_at(dir, "cpu.max");
        n = sdw__cgroup_v2_cores(max);
        free(max);
    }
    if (!n && cgroup_dir("cpu", "/sys/fs/cgroup/cpu", dir, sizeof dir)) {
        char *quota = read_at(dir, "cpu.cfs_quota_us"), *period = read_at(dir, "cpu.cfs_period_us");
        n = sdw__cgroup_v1_cores(quota, period);
        free(quota);
        free(period);
    }
    return n;
}

int sdw_usable_cores(void) {
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    const int quota = cgroup_cores();
    if (quota > 0 && quota < n) n = quota;
    return n > 0 ? n : 1;
}
