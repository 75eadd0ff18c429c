/* models/sd3/sd3_model.h — the Stable Diffusion 3 family (SD3 medium, SD3.5 large: MMDiT):
 * diffusers StableDiffusion3Pipeline folders and Stability's single files. The engine sees only
 * the registry descriptor; the rest is for this family's own files and its tests. */
#ifndef SDW_SD3_MODEL_H
#define SDW_SD3_MODEL_H

#include "models/registry.h"

extern const sdw_model_family sdw_sd3_family;

#endif
