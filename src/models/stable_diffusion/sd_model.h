/* models/stable_diffusion/sd_model.h — the Stable Diffusion family: SD 1.x, SD 2.x, SDXL and
 * SDXL-Turbo (and their inpainting UNets), configurations of the same code. The engine sees only
 * the registry descriptor; the rest is for this family's own files and its tests. */
#ifndef SDW_SD_MODEL_H
#define SDW_SD_MODEL_H

#include "models/registry.h"

extern const sdw_model_family sdw_stable_diffusion_family;

#endif
