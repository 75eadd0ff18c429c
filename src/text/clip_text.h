/* text/clip_text.h — CLIP text encoder (transformers' CLIPTextModel / ...WithProjection).
 *
 *   sdw_clip_text_config cfg;
 *   if (sdw_clip_text_config_from_json("text_encoder/config.json", &cfg, &err)) goto fail;
 *   if (sdw_clip_text_create(ws, &cfg, &enc, &err)) goto fail;
 *   sdw_clip_text_params p = sdw_clip_text_params_default();     // last layer, final LN
 *   sdw_clip_text_forward(enc, ids, 1, 77, &p, hidden, pooled, &err);  // [1,77,768], [1,768]
 *
 * Weights are read by transformers' names through an sdw_weights (whose prefix/map handle
 * single-file layouts): text_model.embeddings.{token,position}_embedding.weight,
 * text_model.encoder.layers.N.{layer_norm1,self_attn.{q,k,v,out}_proj,layer_norm2,mlp.fc1,mlp.fc2}.*,
 * text_model.final_layer_norm.*, and text_projection.weight (no bias) when projection_dim > 0.
 * Thread safety: a created encoder is read-only; forward is reentrant.
 */
#ifndef SDW_TEXT_CLIP_TEXT_H
#define SDW_TEXT_CLIP_TEXT_H

#include "io/weights.h"

typedef enum sdw_clip_act {
    SDW_CLIP_ACT_QUICK_GELU, /* "quick_gelu": OpenAI CLIP (SD 1.x, SDXL encoder 1, FLUX) */
    SDW_CLIP_ACT_GELU,       /* "gelu": exact erf GELU, OpenCLIP (SD 2.x, SDXL encoder 2) */
    SDW_CLIP_ACT_GELU_TANH,  /* "gelu_new" / "gelu_pytorch_tanh" */
} sdw_clip_act;

typedef struct sdw_clip_text_config {
    int vocab;  /* token embedding rows (49408) */
    int hidden; /* width (768 CLIP-L, 1024 OpenCLIP-H, 1280 OpenCLIP-G) */
    int n_layers;
    int n_heads;       /* hidden must be a multiple */
    int intermediate;  /* MLP width */
    int max_positions; /* position embedding rows (77) */
    sdw_clip_act act;
    float eps;          /* layer norm epsilon (1e-5) */
    int projection_dim; /* text_projection output width; 0 = no projection */
} sdw_clip_text_config;

/* Parses a transformers config.json (hidden_size, num_hidden_layers, num_attention_heads,
 * intermediate_size, max_position_embeddings, vocab_size, hidden_act, layer_norm_eps,
 * projection_dim). projection_dim is kept only when "architectures" names
 * CLIPTextModelWithProjection (plain CLIPTextModel configs carry it unused); the text_config of a
 * full CLIPModel config is read too. On failure *cfg is untouched and err says which field. */
sdw_status sdw_clip_text_config_from_json(const char *path, sdw_clip_text_config *cfg,
                                          sdw_error *err);

/* Infers the config from tensor shapes (single-file checkpoints carry no config.json): layers
 * by counting text_model.encoder.layers.N, widths from the embedding, fc1 and text_projection
 * shapes. Shapes cannot tell the head count nor the activation, so the caller supplies them:
 * n_heads 0 means hidden/64, the convention of every released CLIP (768 -> 12, 1024 -> 16,
 * 1280 -> 20); act is OpenAI-vs-OpenCLIP knowledge the caller has from the layout. eps = 1e-5.
 * On failure *cfg is untouched. */
sdw_status sdw_clip_text_config_infer(const sdw_weights *ws, int n_heads, sdw_clip_act act,
                                      sdw_clip_text_config *cfg, sdw_error *err);

typedef struct sdw_clip_text sdw_clip_text;

/* Binds every tensor (shape-checked against cfg). ws is borrowed and must outlive the encoder.
 * On success *out is a new encoder; free with sdw_clip_text_destroy. */
sdw_status sdw_clip_text_create(sdw_weights *ws, const sdw_clip_text_config *cfg,
                                sdw_clip_text **out, sdw_error *err);
void sdw_clip_text_destroy(sdw_clip_text *enc); /* NULL ok */
const sdw_clip_text_config *sdw_clip_text_get_config(const sdw_clip_text *enc);

typedef struct sdw_clip_text_params {
    /* The hidden output is transformers' hidden_states[n_layers - skip_layers]: the state after
     * n_layers - skip_layers encoder layers (0 = last layer; 1 = penultimate, as SDXL and
     * "clip skip 2" use; n_layers = the embeddings). */
    int skip_layers;
    /* Apply final_layer_norm to that hidden output (true gives last_hidden_state for
     * skip_layers 0; SDXL uses the penultimate state without it). */
    bool final_norm;
    /* pooled = text_projection(pooler_output) (the text_embeds of
     * CLIPTextModelWithProjection) instead of pooler_output; needs projection_dim > 0. */
    bool project_pooled;
    /* Token ids vocab .. vocab + n_extra - 1 read their input embedding from these rows
     * ([n_extra, hidden] f32, borrowed for the call) instead of the token table: the vectors
     * of textual-inversion embeddings, as the tokens diffusers' load_textual_inversion adds.
     * NULL / 0 = none. */
    const float *extra_rows;
    int n_extra;
    /* > 0: pool at the first position holding this id (the EOS id: AUTOMATIC1111's
     * placeholders for embeddings are id 0, so its pooling always finds the EOS, as newer
     * transformers' eos_token_id rule does); 0 = transformers 4.30's argmax(ids), which lands
     * on an added token's id when the prompt has one. A row without it pools at argmax. */
    int32_t pool_id;
} sdw_clip_text_params;
/* skip_layers 0, final_norm true, project_pooled false, no extra rows, pool_id 0 (argmax):
 * last_hidden_state and pooler_output. */
sdw_clip_text_params sdw_clip_text_params_default(void);

/* ids [B, L] token ids (L <= max_positions; causal attention, no padding mask, as the SD
 * pipelines call it; ids >= vocab index params->extra_rows). Outputs (caller-owned, each may
 * be NULL):
 *   hidden [B, L, hidden]: as params say;
 *   pooled [B, hidden] (or [B, projection_dim] with project_pooled): the final-layer-norm state
 *     of the full stack at the first position holding the row's largest id (transformers 4.30:
 *     input_ids.argmax(-1), i.e. the first EOS 49407), or holding params->pool_id, regardless
 *     of skip_layers.
 * Returns SDW_E_INVALID_ARG (outputs untouched) for out-of-range ids, L, skip_layers, or
 * project_pooled without a projection. */
sdw_status sdw_clip_text_forward(const sdw_clip_text *enc, const int32_t *ids, int B, int L,
                                 const sdw_clip_text_params *params, float *hidden, float *pooled,
                                 sdw_error *err);

#endif
