/* sdw/status.h — status codes and per-call error details.
 *
 *   sdw_error err = {0};
 *   if (sdw_st_open(path, &f, &err) != SDW_OK)
 *       fprintf(stderr, "error: %s\n", err.msg);
 *
 * Every fallible function returns sdw_status (0 = OK, negative = error) and, when given a
 * non-NULL sdw_error, fills it with a message naming the problem. Errors are per call, never
 * per handle, so concurrent jobs never clobber each other's messages. Thread-safe.
 */
#ifndef SDW_STATUS_H
#define SDW_STATUS_H

#include <stdarg.h>

/* X(name, value, description) — the one table of codes. */
#define SDW_STATUS_TABLE(X)                                                                        \
    X(SDW_OK, 0, "ok")                                                                             \
    X(SDW_E_INVALID_ARG, -1, "invalid argument")                                                   \
    X(SDW_E_IO, -2, "i/o error")                                                                   \
    X(SDW_E_FORMAT, -3, "malformed file")                                                          \
    X(SDW_E_UNSUPPORTED, -4, "unsupported")                                                        \
    X(SDW_E_NOMEM, -5, "out of memory")                                                            \
    X(SDW_E_NOT_FOUND, -6, "not found")                                                            \
    X(SDW_E_SHAPE, -7, "shape mismatch")                                                           \
    X(SDW_E_BACKEND, -8, "backend failure")                                                        \
    X(SDW_CANCELLED, -9, "cancelled")                                                              \
    X(SDW_E_BUSY, -10, "busy: try again later")                                                    \
    X(SDW_E_UNAVAILABLE, -11, "unavailable: a service it needs cannot be reached")

typedef enum sdw_status {
#define SDW_X_ENUM(name, value, desc) name = value,
    SDW_STATUS_TABLE(SDW_X_ENUM)
#undef SDW_X_ENUM
} sdw_status;

/* Static description of a code; never NULL. */
const char *sdw_status_str(sdw_status s);

#define SDW_ERROR_MSG_MAX 512
typedef struct sdw_error {
    sdw_status code;
    char msg[SDW_ERROR_MSG_MAX];
    /* When a request was refused: the sdw_request field at fault as the struct spells it
     * ("width", "sampler", "init_image", ...; a static string), so front ends can name their own
     * parameter. NULL otherwise. */
    const char *field;
} sdw_error;

/* Fills err (may be NULL; its field is cleared) and returns code, so a caller can
 * `return sdw_error_set(...)`. */
sdw_status sdw_error_set(sdw_error *err, sdw_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* As sdw_error_set, for a refused request: field names the sdw_request field at fault. */
sdw_status sdw_error_set_field(sdw_error *err, const char *field, sdw_status code,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Prepends "context: " to an error already set (e.g. the file or tensor it concerns). */
void sdw_error_prefix(sdw_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
