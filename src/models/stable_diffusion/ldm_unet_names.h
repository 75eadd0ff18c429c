/* models/stable_diffusion/ldm_unet_names.h — diffusers UNet names -> original LDM / SGM names.
 *
 *   sdw_unet_config cfg;                       // e.g. from sdw_unet_config_infer
 *   sdw_weights *ws = sdw_weights_create(file, "model.diffusion_model.", sdw_ldm_unet_name, &cfg);
 *   sdw_unet_create(ws, &cfg, &unet, &err);
 *
 * Single-file checkpoints (CompVis SD 1.x/2.x, Stability SGM SDXL) number their UNet blocks
 * sequentially (input_blocks.N.M, middle_block.M, output_blocks.N.M), so where a diffusers module
 * lands depends on the layers per level and on which levels have attention: the map reads the
 * config through `user`. Names inside a spatial transformer (norm, proj_in, transformer_blocks.K.*,
 * proj_out) are spelled the same in both layouts.
 * Thread safety: pure function of its arguments.
 */
#ifndef SDW_MODELS_SD_LDM_UNET_NAMES_H
#define SDW_MODELS_SD_LDM_UNET_NAMES_H

#include <stddef.h>

/* sdw_name_map_fn: writes the LDM name (relative to "model.diffusion_model.") of diffusers UNet
 * tensor `name` into buf (cap bytes) and returns buf; returns NULL for names with no LDM
 * counterpart or that do not fit. `user` is a const sdw_unet_config * (borrowed). */
const char *sdw_ldm_unet_name(const char *name, char *buf, size_t cap, void *user);

#endif
