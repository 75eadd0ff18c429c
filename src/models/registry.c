/* The registry: the one table of model families. Adding a family = one line here. */
#include "models/registry.h"

#include "models/flux/flux_model.h"
#include "models/sd3/sd3_model.h"
#include "models/stable_diffusion/sd_model.h"

static const sdw_model_family *const g_families[] = {
    &sdw_stable_diffusion_family,
    &sdw_flux_family,
    &sdw_sd3_family,
    NULL,
};

const sdw_model_family *const *sdw_model_families(void) { return g_families; }

/* The demo is a small SD 1.x model: the cheapest architecture that makes an image. */
const sdw_model_family *sdw_model_demo_family(void) { return &sdw_stable_diffusion_family; }
