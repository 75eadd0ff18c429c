/* models/stable_diffusion/sd_model.h — the Stable Diffusion family: SD 1.x, SD 2.x, SDXL and
 * SDXL-Turbo (and their inpainting UNets), configurations of the same code. The engine sees only
 * the registry descriptor; the rest is for this family's own files and its tests. */
#ifndef SDW_SD_MODEL_H
#define SDW_SD_MODEL_H

#include "models/registry.h"

extern const sdw_model_family sdw_stable_diffusion_family;

/* Test hook: called at each pipeline stage with the tensor the reference records under the same
 * name ("te.cond.last_hidden_state", "latents_init_noise", "stepNN.unet.out", "stepNN.latents",
 * "vae.decode.out" ...), in the reference's layout (NCHW for images/latents). data is borrowed
 * for the duration of the call. */
typedef void (*sdw_sd_tap_fn)(void *user, const char *name, const float *data, int n_dims,
                              const int64_t *shape);
/* m must be a model of this family. fn NULL removes the tap. */
void sdw_sd_set_tap(sdw_image_model *m, sdw_sd_tap_fn fn, void *user);

#endif
