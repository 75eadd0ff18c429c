/* models/registry.h — how a family plugs in: one descriptor, one line in registry.c. */
#ifndef SDW_MODELS_REGISTRY_H
#define SDW_MODELS_REGISTRY_H

#include "sdw/image_model.h"

typedef struct sdw_model_family {
    const char *name; /* "stable-diffusion" */
    /* Cheap check of path (folder or file): true when this family can load it. Must not fail
     * loudly; a file it cannot read is simply not its. */
    bool (*detect)(const char *path);
    /* Loads path; *out is new. */
    sdw_status (*load)(const char *path, const sdw_load_options *opts, sdw_image_model **out,
                       sdw_error *err);
    /* (optional) Loads the family's built-in demo model (random weights, no files). */
    sdw_status (*load_demo)(const sdw_load_options *opts, sdw_image_model **out, sdw_error *err);
} sdw_model_family;

/* The registry table, NULL-terminated. */
const sdw_model_family *const *sdw_model_families(void);

#endif
