/* models/flux/flux_bfl_names.h — the FLUX transformer's tensors in Black Forest Labs' single
 * files (flux1-dev.safetensors / flux1-schnell.safetensors layout), for loading them with the
 * transformer, which asks by diffusers' FluxTransformer2DModel names.
 *
 *   const char *prefix;
 *   if (!sdw_flux_bfl_detect(file, &prefix)) ...;                  // not a BFL FLUX file
 *   ws = sdw_weights_create_viewed(file, prefix, sdw_flux_bfl_name, NULL);
 *   sdw_flux_config_infer(ws, &cfg, &err);                          // then create
 *
 * BFL names: img_in, txt_in, time_in.{in,out}_layer, vector_in.{in,out}_layer,
 * guidance_in.{in,out}_layer (dev only), double_blocks.N.{img,txt}_mod.lin,
 * double_blocks.N.{img,txt}_attn.qkv (rows q, k, v), ….{img,txt}_attn.norm.{query,key}_norm.scale,
 * ….{img,txt}_attn.proj, ….{img,txt}_mlp.{0,2}, single_blocks.N.linear1 (rows q, k, v, mlp-in:
 * 3·D + 4·D), single_blocks.N.linear2, single_blocks.N.modulation.lin,
 * single_blocks.N.norm.{query,key}_norm.scale, final_layer.linear,
 * final_layer.adaLN_modulation.1 (output halves (shift, scale), the reverse of diffusers'
 * norm_out.linear: served as the two halves SDW_FLUX_NORM_OUT_SCALE / _SHIFT, never whole).
 * The correspondence is diffusers' convert_flux_transformer_checkpoint_to_diffusers.
 * Thread safety: pure functions.
 */
#ifndef SDW_MODELS_FLUX_BFL_NAMES_H
#define SDW_MODELS_FLUX_BFL_NAMES_H

#include "io/weights.h"

/* An sdw_name_view_fn: writes the BFL name of a diffusers FluxTransformer2DModel tensor into buf
 * (without the file's prefix) and the view that cuts it out of a fused tensor. Returns NULL for
 * names with no BFL counterpart (norm_out.linear.* whole: see above) or that do not fit in cap.
 * user unused. */
const char *sdw_flux_bfl_name(const char *name, char *buf, size_t cap, sdw_weight_view *view,
                              void *user);

/* Whether f holds a FLUX transformer in BFL naming, bare (flux1-dev.safetensors) or under
 * "model.diffusion_model." (ComfyUI-style full checkpoints); *prefix (may be NULL) is then set
 * to that prefix (a static string). */
bool sdw_flux_bfl_detect(const sdw_st_file *f, const char **prefix);

#endif
