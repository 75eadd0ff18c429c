/* nn/backends.c — see backends.h. */
#include "nn/backends.h"

#include "nn/backend_cpu.h"

sdw_status sdw_backend_create(sdw_backend **out, sdw_error *err) {
    return sdw_backend_cpu_create(NULL, out, err);
}
