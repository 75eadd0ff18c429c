/* core/common.h — assertions, logging and small helpers every layer uses.
 * SDW_ASSERT is for programmer errors only (never compiled out); input checks return sdw_status. */
#ifndef SDW_CORE_COMMON_H
#define SDW_CORE_COMMON_H

#include "sdw/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SDW_ABORT(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: fatal: ", __FILE__, __LINE__);                                    \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        abort();                                                                                   \
    } while (0)

#define SDW_ASSERT(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) SDW_ABORT("assertion failed: %s", #cond);                                     \
    } while (0)

#define SDW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SDW_MAX(a, b) ((a) > (b) ? (a) : (b))
#define SDW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

typedef enum sdw_log_level { SDW_LOG_ERROR, SDW_LOG_WARN, SDW_LOG_INFO, SDW_LOG_DEBUG } sdw_log_level;

/* Process-wide level (the one piece of global state besides the registry); default WARN. */
void sdw_log_set_level(sdw_log_level level);
sdw_log_level sdw_log_get_level(void);
void sdw_log(sdw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define SDW_WARN(...) sdw_log(SDW_LOG_WARN, __VA_ARGS__)
#define SDW_INFO(...) sdw_log(SDW_LOG_INFO, __VA_ARGS__)
#define SDW_DEBUG(...) sdw_log(SDW_LOG_DEBUG, __VA_ARGS__)

/* malloc that aborts on failure: for internal sizes we computed, not for untrusted sizes
 * (those go through sdw_size_mul + a checked malloc and return SDW_E_NOMEM). */
void *sdw_xmalloc(size_t n);
void *sdw_xcalloc(size_t n, size_t size);
char *sdw_xstrdup(const char *s);

/* Overflow-checked size arithmetic for untrusted input: false on overflow. */
static inline bool sdw_size_mul(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool sdw_size_add(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Reads a whole file into a new NUL-terminated buffer (free with free()). */
sdw_status sdw_read_file(const char *path, char **out, size_t *out_len, sdw_error *err);

/* Monotonic seconds. */
double sdw_time_now(void);

/* Cores this process may use: the CPUs in its affinity mask, capped by a cgroup CPU quota
 * (a container limited to 2 CPUs on a 64-core host gets 2, not 64 threads fighting over
 * them). At least 1. */
int sdw_usable_cores(void);
/* The cap a cgroup CPU limit sets, from the text of cgroup v2's cpu.max ("max 100000",
 * "150000 100000") or v1's cfs quota and period ("-1", "200000"): quota / period rounded
 * up; 0 when there is no limit or the text is not understood. */
int sdw__cgroup_v2_cores(const char *cpu_max);
int sdw__cgroup_v1_cores(const char *quota_us, const char *period_us);

#endif
