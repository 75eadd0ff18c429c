/* models/sd3/sd3_sgm_names.h — the SD3 transformer's tensors in Stability AI's single files
 * (sd3_medium*.safetensors, sd3.5_large*.safetensors: the MMDiT of their sgm/sd3 code, under
 * "model.diffusion_model."), for loading them with the transformer, which asks by diffusers'
 * SD3Transformer2DModel names.
 *
 *   const char *prefix;
 *   if (!sdw_sd3_sgm_detect(file, &prefix)) ...;                  // no SD3 MMDiT in it
 *   ws = sdw_weights_create_viewed(file, prefix, sdw_sd3_sgm_name, NULL);
 *   sdw_sd3_config_infer(ws, 64, &cfg, &err);                     // then create
 *
 * Stability names: pos_embed [1, n², D], x_embedder.proj, t_embedder.mlp.{0,2},
 * y_embedder.mlp.{0,2}, context_embedder, joint_blocks.N.{x_block,context_block}.* with
 * adaLN_modulation.1, attn.qkv (rows q, k, v), attn.ln_q / attn.ln_k (SD3.5), attn.proj,
 * mlp.fc1, mlp.fc2 (the last context_block has only adaLN_modulation.1 and attn.qkv), and
 * final_layer.{adaLN_modulation.1, linear}. The adaLN_modulation.1 of final_layer and of the
 * last context_block feed AdaLayerNormContinuous with output halves (shift, scale), the reverse
 * of diffusers': they are served as the halves SDW_SD3_NORM_OUT_SCALE / _SHIFT and
 * SDW_SD3_CONTEXT_NORM_SCALE / _SHIFT (sd3_transformer.h); norm_out.linear is never served
 * whole. The correspondence is diffusers' convert_sd3_transformer_checkpoint_to_diffusers
 * (0.30.3, with 0.31's ln_q/ln_k and attn2 names).
 * Thread safety: pure functions.
 */
#ifndef SDW_MODELS_SD3_SGM_NAMES_H
#define SDW_MODELS_SD3_SGM_NAMES_H

#include "io/weights.h"

/* An sdw_name_view_fn: writes the Stability name of a diffusers SD3Transformer2DModel tensor
 * into buf (without the file's prefix) and the view that cuts it out of a fused tensor. Returns
 * NULL for names with no Stability counterpart (norm_out.linear.* whole: see above) or that do
 * not fit in cap. user unused. */
const char *sdw_sd3_sgm_name(const char *name, char *buf, size_t cap, sdw_weight_view *view,
                             void *user);

/* Whether f holds an SD3 MMDiT in Stability's naming, under "model.diffusion_model." (their
 * checkpoints, with or without the text encoders) or bare; *prefix (may be NULL) is then set to
 * that prefix (a static string). */
bool sdw_sd3_sgm_detect(const sdw_st_file *f, const char **prefix);

#endif
