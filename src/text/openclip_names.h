/* text/openclip_names.h — the OpenCLIP text tower's tensor names, for loading it with the CLIP
 * text encoder (which asks by transformers' CLIPTextModel names).
 *
 *   ws = sdw_weights_create_viewed(file, "cond_stage_model.model.", sdw_openclip_text_name, NULL);
 *   sdw_clip_text_config_infer(ws, heads, SDW_CLIP_ACT_GELU, &cfg, &err);   // then create
 *
 * The layout of SD 2.x single files (cond_stage_model.model.*) and of SDXL's second encoder
 * (conditioner.embedders.1.model.*): token_embedding.weight, positional_embedding,
 * transformer.resblocks.N.{ln_1, attn.in_proj_weight/bias (rows q|k|v), attn.out_proj, ln_2,
 * mlp.c_fc, mlp.c_proj}, ln_final, text_projection ([width, proj], applied as x @ P: the
 * transpose of transformers' text_projection.weight), logit_scale (unused by text encoding).
 * Thread safety: pure function.
 */
#ifndef SDW_TEXT_OPENCLIP_NAMES_H
#define SDW_TEXT_OPENCLIP_NAMES_H

#include "io/weights.h"

/* An sdw_name_view_fn: writes the OpenCLIP name for a transformers CLIP text name into buf
 * (without the file's prefix) and the view selecting it (q/k/v rows of in_proj, transposed
 * projection). Returns NULL for names with no OpenCLIP counterpart (position_ids). user unused. */
const char *sdw_openclip_text_name(const char *name, char *buf, size_t cap, sdw_weight_view *view,
                                   void *user);

#endif
