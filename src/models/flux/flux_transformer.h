/* models/flux/flux_transformer.h — diffusers 0.30.3 FluxTransformer2DModel (FLUX.1 dev /
 * schnell) forward, CPU, f32 activations.
 *
 *   sdw_flux_config cfg;
 *   if (sdw_flux_config_load("transformer/config.json", &cfg, &err)) goto fail;
 *   sdw_flux_transformer *t;
 *   if (sdw_flux_transformer_create(ws, &cfg, &t, &err)) goto fail;   // binds every tensor
 *   sdw_flux_forward(t, x, 1, 64, 64, &sigma, &guidance, pooled, context, 512, v);
 *   sdw_flux_transformer_destroy(t);
 *
 * x_embedder / context_embedder, the time (+ guidance) + pooled-text embedding, n_layers
 * double-stream blocks (FluxTransformerBlock: separate image and text weights, one joint
 * attention over [text ‖ image] with RoPE and per-head RMS-normalised q/k), n_single_layers
 * single-stream blocks over the joint sequence (attention and MLP in parallel), then
 * AdaLayerNormContinuous and proj_out on the image tokens. Tensors are requested from `ws` by
 * their diffusers names; a Black Forest Labs single file is read through sdw_flux_bfl_name
 * (flux_bfl_names.h). Compute precision is the weights' (sdw_weights_set_precision before
 * create): f32, or bf16 products with f32 accumulation; norms, RoPE, softmax in f32.
 * Thread safety: a created transformer is read-only; concurrent forwards are safe (all scratch
 * is per call).
 */
#ifndef SDW_MODELS_FLUX_TRANSFORMER_H
#define SDW_MODELS_FLUX_TRANSFORMER_H

#include "io/weights.h"

#define SDW_FLUX_MAX_BLOCKS 1024 /* per kind: far above any FLUX (19 double + 38 single) */

typedef struct sdw_flux_config {
    int in_channels;      /* packed latent channels per token (16 latent × 2×2 patch = 64) */
    int n_layers;         /* double-stream blocks (num_layers; FLUX.1: 19) */
    int n_single_layers;  /* single-stream blocks (num_single_layers; FLUX.1: 38) */
    int n_heads;          /* num_attention_heads (24) */
    int head_dim;         /* attention_head_dim (128); width D = n_heads · head_dim */
    int joint_dim;        /* joint_attention_dim: T5 width (4096) */
    int pooled_dim;       /* pooled_projection_dim: CLIP pooled width (768) */
    int patch_size;       /* must be 1 (every FLUX; the pipeline packs 2×2 patches itself) */
    int axes_dim[3];      /* axes_dims_rope: RoPE channels per position axis, sum = head_dim */
    float theta;          /* RoPE base (EmbedND theta: 10000) */
    bool guidance_embeds; /* a guidance embedding ("dev"); false for schnell */
} sdw_flux_config;

/* diffusers' defaults (FluxTransformer2DModel.__init__): FLUX.1 schnell's architecture. */
sdw_flux_config sdw_flux_config_default(void);
/* Checks the fields are consistent and supported; SDW_E_INVALID_ARG / SDW_E_UNSUPPORTED naming
 * the field. */
sdw_status sdw_flux_config_validate(const sdw_flux_config *cfg, sdw_error *err);
/* Reads a diffusers transformer/config.json (keys absent keep the defaults above) and
 * validates it. On failure *cfg is untouched and err names the file and key. */
sdw_status sdw_flux_config_load(const char *path, sdw_flux_config *cfg, sdw_error *err);

/* The architecture from the tensors' shapes, for files that carry no config (BFL single
 * files, through their name map): widths from x_embedder (D, in_channels), context_embedder
 * (joint_dim), the text embedder (pooled_dim) and proj_out; block counts by counting
 * transformer_blocks.N / single_transformer_blocks.N (a gap — block 3 absent while 4 exists —
 * is SDW_E_NOT_FOUND naming the missing block); guidance_embeds = whether the guidance
 * embedder exists. Shapes do not tell how D splits into heads, nor the RoPE axes: this takes
 * the released models' head size 128 and axes (16, 56, 56) (D 3072 = 24 heads); see
 * sdw_flux_config_infer_heads for others. On failure *cfg is untouched. ws is only read. */
sdw_status sdw_flux_config_infer(const sdw_weights *ws, sdw_flux_config *cfg, sdw_error *err);
/* As sdw_flux_config_infer with the head size and RoPE axes given (axes sum to head_dim). */
sdw_status sdw_flux_config_infer_heads(const sdw_weights *ws, int head_dim, const int axes_dim[3],
                                       sdw_flux_config *cfg, sdw_error *err);

/* AdaLayerNormContinuous's linear (norm_out.linear [2D, D]) yields (scale, shift). A layout
 * that stores it with the halves the other way round (BFL: (shift, scale)) cannot serve it
 * whole; it serves these two [D, D] (+ [D] bias) halves instead, and the transformer stacks
 * them in diffusers' order. The transformer binds the halves only when the whole tensor is
 * absent and the scale half present. */
#define SDW_FLUX_NORM_OUT_SCALE "norm_out.linear_scale"
#define SDW_FLUX_NORM_OUT_SHIFT "norm_out.linear_shift"

typedef struct sdw_flux_transformer sdw_flux_transformer;

/* Binds all weights. ws is borrowed and must outlive the transformer (its buffers and packed
 * weights are ws's); cfg is copied and validated. On success *out is a new transformer (free
 * with sdw_flux_transformer_destroy); on failure *out is untouched and err names the config
 * problem or the tensor (missing: SDW_E_NOT_FOUND; wrong shape: SDW_E_SHAPE). */
sdw_status sdw_flux_transformer_create(sdw_weights *ws, const sdw_flux_config *cfg,
                                       sdw_flux_transformer **out, sdw_error *err);
void sdw_flux_transformer_destroy(sdw_flux_transformer *t);                        /* NULL ok */
const sdw_flux_config *sdw_flux_transformer_config(const sdw_flux_transformer *t); /* borrowed */
size_t sdw_flux_transformer_n_params(const sdw_flux_transformer *t); /* floats bound */

/* The image tokens' positions (FluxPipeline._prepare_latent_image_ids): token r·gw + c of a
 * gh × gw packed grid is at (0, r, c). ids [gh·gw, 3]. (Text tokens are all at (0, 0, 0).) */
void sdw_flux_img_ids(int gh, int gw, float *ids);

/* One denoiser call (the velocity prediction), batch B.
 *   x        [B, gh·gw, in_channels]  packed latents (2×2 patches, channel c·4 + dy·2 + dx, as
 *                                     FluxPipeline._pack_latents); gh × gw the packed grid
 *   timestep [B]   what the pipeline passes (sigma = t / 1000); scaled by 1000 here, in f32
 *   guidance [B]   the raw guidance scale (e.g. 3.5), or NULL; required iff guidance_embeds
 *                  (ignored otherwise)
 *   pooled   [B, pooled_dim]          CLIP pooled text embedding
 *   context  [B, L_txt, joint_dim]    T5 hidden states
 *   out      [B, gh·gw, in_channels]
 * Scratch is allocated once per call and reused by every block (aborts on out-of-memory, like
 * every internal allocation). */
void sdw_flux_forward(const sdw_flux_transformer *t, const float *x, int B, int gh, int gw,
                      const float *timestep, const float *guidance, const float *pooled,
                      const float *context, int L_txt, float *out);

#endif
