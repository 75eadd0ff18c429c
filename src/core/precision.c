/* core/precision.c — names of the compute precisions (sdw/precision.h). */
#include "sdw/precision.h"

#include <string.h>

static const char *const k_names[] = {"auto", "f32", "bf16"};

const char *sdw_precision_str(sdw_precision p) {
    return (unsigned)p < sizeof k_names / sizeof k_names[0] ? k_names[p] : "?";
}

sdw_status sdw_precision_parse(const char *s, sdw_precision *out) {
    for (unsigned i = 0; s && i < sizeof k_names / sizeof k_names[0]; i++)
        if (strcmp(s, k_names[i]) == 0) {
            *out = (sdw_precision)i;
            return SDW_OK;
        }
    return SDW_E_INVALID_ARG;
}
