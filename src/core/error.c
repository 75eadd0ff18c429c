#include "sdw/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *sdw_status_str(sdw_status s) {
    switch (s) {
#define SDW_X_STR(name, value, desc)                                                               \
    case name:                                                                                     \
        return desc;
        SDW_STATUS_TABLE(SDW_X_STR)
#undef SDW_X_STR
    }
    return "unknown status";
}

static void set_v(sdw_error *err, const char *field, sdw_status code, const char *fmt, va_list ap) {
    err->code = code;
    err->field = field;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

sdw_status sdw_error_set(sdw_error *err, sdw_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        set_v(err, NULL, code, fmt, ap);
        va_end(ap);
    }
    return code;
}

sdw_status sdw_error_set_field(sdw_error *err, const char *field, sdw_status code, const char *fmt,
                               ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        set_v(err, field, code, fmt, ap);
        va_end(ap);
    }
    return code;
}

void sdw_error_prefix(sdw_error *err, const char *fmt, ...) {
    if (!err) return;
    char head[SDW_ERROR_MSG_MAX], old[SDW_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", head, old);
}
