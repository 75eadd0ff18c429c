#include "sdw/status.h"

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

sdw_status sdw_error_set(sdw_error *err, sdw_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        err->field = NULL;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

sdw_status sdw_error_field(sdw_error *err, const char *field, sdw_status s) {
    if (err && s != SDW_OK) err->field = field;
    return s;
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
