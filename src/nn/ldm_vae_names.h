/* nn/ldm_vae_names.h — diffusers AutoencoderKL tensor names -> original LDM / BFL names.
 *
 *   sdw_weights *ws = sdw_weights_create(file, "first_stage_model.", sdw_ldm_vae_name, &cfg);
 *   // "decoder.up_blocks.0.resnets.2.conv_shortcut.weight" is read as
 *   // "first_stage_model.decoder.up.3.block.2.nin_shortcut.weight" (4 levels)
 *
 * The original CompVis/Stability layout (SD1/SD2/SDXL single files, standalone VAE files) and
 * Black Forest Labs' ae.safetensors share these names. Renames: down_blocks.N.resnets.M ->
 * down.N.block.M, conv_shortcut -> nin_shortcut, downsamplers.0 -> downsample, mid_block
 * resnets.0/1 -> mid.block_1/2, attentions.0.{group_norm,to_q,to_k,to_v,to_out.0} ->
 * attn_1.{norm,q,k,v,proj_out} (stored as [C,C,1,1] 1x1 convs), conv_norm_out -> norm_out, and
 * up_blocks.N -> up.(n_levels-1-N): LDM numbers decoder levels from the highest resolution
 * (up.0 runs last), diffusers in execution order. Thread-safe (pure function).
 */
#ifndef SDW_NN_LDM_VAE_NAMES_H
#define SDW_NN_LDM_VAE_NAMES_H

#include <stddef.h>

/* An sdw_name_map_fn. user: the const sdw_vae_config * of the model (its n_levels reverses
 * the decoder numbering); must not be NULL. Writes the LDM name for diffusers name `name` into
 * buf (cap bytes) and returns buf, or returns NULL when the name is not a VAE tensor this map
 * knows (or a level index is out of range). */
const char *sdw_ldm_vae_name(const char *name, char *buf, size_t cap, void *user);

#endif
