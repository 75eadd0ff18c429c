/* models/flux/flux_model.h — the FLUX.1 family (dev: guidance-distilled, schnell: timestep-
 * distilled): diffusers FluxPipeline folders and Black Forest Labs' single transformer files.
 * The engine sees only the registry descriptor; the rest is for this family's own files and its
 * tests. */
#ifndef SDW_FLUX_MODEL_H
#define SDW_FLUX_MODEL_H

#include "models/registry.h"

extern const sdw_model_family sdw_flux_family;

#endif
