/* models/registry.h — how a family plugs in: one descriptor, one line in registry.c. */
#ifndef SDW_MODELS_REGISTRY_H
#define SDW_MODELS_REGISTRY_H

#include "sdw/image_model.h"

/* A load option a family takes (sdw_load_options.options). */
typedef struct sdw_model_option_spec {
    const char *key;  /* "vae" */
    const char *help; /* one line: what the value is */
} sdw_model_option_spec;

typedef struct sdw_model_family {
    const char *name; /* "stable-diffusion" */
    /* What it loads, for the message that explains an unrecognised model. */
    const char *formats;
    /* Cheap check of path (folder or file): true when this family can load it. Must not fail
     * loudly; a file it cannot read is simply not its. */
    bool (*detect)(const char *path);
    /* Loads path; *out is new. opts holds only options listed in `options`. */
    sdw_status (*load)(const char *path, const sdw_load_options *opts, sdw_image_model **out,
                       sdw_error *err);
    /* (optional) Loads the family's built-in demo model (random weights, no files). */
    sdw_status (*load_demo)(const sdw_load_options *opts, sdw_image_model **out, sdw_error *err);
    /* The load options it takes, {NULL}-terminated (NULL: none). */
    const sdw_model_option_spec *options;
} sdw_model_family;

/* The registry table, NULL-terminated. */
const sdw_model_family *const *sdw_model_families(void);
/* The family whose load_demo serves "demo" (and a load with no model). */
const sdw_model_family *sdw_model_demo_family(void);

#endif
