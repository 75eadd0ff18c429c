/* models/sd3/sd3_transformer.h — diffusers 0.30.3 SD3Transformer2DModel (the MMDiT of Stable
 * Diffusion 3 / 3.5 Large) forward, CPU, f32 activations.
 *
 *   sdw_sd3_config cfg;
 *   if (sdw_sd3_config_load("transformer/config.json", &cfg, &err)) goto fail;
 *   sdw_sd3_transformer *t;
 *   if (sdw_sd3_transformer_create(ws, &cfg, &t, &err)) goto fail;    // binds every tensor
 *   sdw_sd3_forward(t, latents, 2, 128, 128, ts, pooled, context, 333, v);   // CFG batch
 *   sdw_sd3_transformer_destroy(t);
 *
 * PatchEmbed (a patch_size × patch_size stride-patch_size convolution of the NCHW latents, plus
 * the 2-D sin-cos position table cropped around its centre to the latent grid), the time +
 * pooled-text embedding, context_embedder, n_layers JointTransformerBlocks (separate image and
 * context weights, one joint attention over [image ‖ context] — image tokens first — with
 * per-head RMS-normalised q/k when qk_norm; the last block is context_pre_only: its context
 * stream is normalised by AdaLayerNormContinuous, feeds the attention and is then dropped),
 * AdaLayerNormContinuous + proj_out on the image tokens, unpatchified back to NCHW.
 * Tensors are requested from `ws` by their diffusers names; Stability's single files are read
 * through sdw_sd3_sgm_name (sd3_sgm_names.h). Compute precision is the weights'
 * (sdw_weights_set_precision before create): f32, or bf16 products with f32 accumulation;
 * norms, softmax and the position table in f32.
 * Not supported (refused with SDW_E_UNSUPPORTED naming it): SD3.5 Medium's MMDiT-X blocks
 * (dual_attention_layers), qk_norm other than "rms_norm", no pos_embed_max_size.
 * Thread safety: a created transformer is read-only; concurrent forwards are safe (all scratch
 * is per call).
 */
#ifndef SDW_MODELS_SD3_TRANSFORMER_H
#define SDW_MODELS_SD3_TRANSFORMER_H

#include "io/weights.h"

#define SDW_SD3_MAX_BLOCKS 1024 /* far above any SD3 (medium 24, 3.5 Large 38) */

typedef struct sdw_sd3_config {
    int in_channels;        /* latent channels (16) */
    int out_channels;       /* predicted channels (16) */
    int patch_size;         /* latent pixels per token side (2) */
    int n_layers;           /* num_layers: joint blocks (medium 24, 3.5 Large 38) */
    int n_heads;            /* num_attention_heads (medium 24); width D = n_heads · head_dim */
    int head_dim;           /* attention_head_dim (64) */
    int joint_dim;          /* joint_attention_dim: the context's width (CLIP ‖ T5: 4096) */
    int caption_dim;        /* caption_projection_dim: context_embedder's output; must be D */
    int pooled_dim;         /* pooled_projection_dim: CLIP-L ‖ CLIP-G pooled width (2048) */
    int pos_embed_max_size; /* side of the position table in tokens (192) */
    int sample_size;        /* latent side the table's scale was made for (128: 1024 px with the
                             * 8x VAE), the model's native size; PatchEmbed's base_size is
                             * sample_size / patch_size */
    bool qk_norm;           /* qk_norm "rms_norm" (3.5 Large): RMSNorm(head_dim, eps 1e-6) of
                             * q and k per head in both streams; false: none (SD3 medium) */
} sdw_sd3_config;

/* diffusers' defaults (SD3Transformer2DModel.__init__), which are not a released model: SD3
 * medium differs in n_layers 24, n_heads 24, caption_dim 1536, pos_embed_max_size 192. */
sdw_sd3_config sdw_sd3_config_default(void);
/* Checks the fields are consistent and supported; SDW_E_INVALID_ARG naming the field. */
sdw_status sdw_sd3_config_validate(const sdw_sd3_config *cfg, sdw_error *err);
/* Reads a diffusers transformer/config.json (keys absent or null keep the defaults above):
 * qk_norm null or "rms_norm"; dual_attention_layers absent or empty. On failure *cfg is
 * untouched and err names the file and key. */
sdw_status sdw_sd3_config_load(const char *path, sdw_sd3_config *cfg, sdw_error *err);

/* The architecture from the tensors' shapes, for files that carry no config (Stability's
 * single files, through their name map): D, in_channels and patch_size from pos_embed.proj,
 * caption_dim and joint_dim from context_embedder, pooled_dim from the text embedder,
 * out_channels from proj_out, pos_embed_max_size from the position table's length,
 * sample_size from the table's first step (the standard table's column 1 sits at
 * sample_size / patch_size / pos_embed_max_size; a table that is not the standard one gives
 * diffusers' default 128), qk_norm from whether block 0 has norm_q, n_layers by counting
 * transformer_blocks.N (a gap — block 0 absent while 1 exists — is SDW_E_NOT_FOUND naming the
 * missing block). Shapes do not tell how D splits into heads: head_dim is given (every SD3:
 * 64). MMDiT-X blocks (attn2) are SDW_E_UNSUPPORTED. On failure *cfg is untouched. ws is only
 * read. */
sdw_status sdw_sd3_config_infer(const sdw_weights *ws, int head_dim, sdw_sd3_config *cfg,
                                sdw_error *err);

/* AdaLayerNormContinuous's linear (norm_out.linear, and the last block's norm1_context.linear:
 * [2D, D]) yields (scale, shift). Stability's layout stores both with the halves the other way
 * round ((shift, scale)); it serves them as these two [D, D] (+ [D] bias) halves, which the
 * transformer stacks in diffusers' order. The transformer binds the halves whenever the scale
 * half exists (for the last block: "transformer_blocks.N." + the suffix), else the whole. */
#define SDW_SD3_NORM_OUT_SCALE "norm_out.linear_scale"
#define SDW_SD3_NORM_OUT_SHIFT "norm_out.linear_shift"
#define SDW_SD3_CONTEXT_NORM_SCALE "norm1_context.linear_scale"
#define SDW_SD3_CONTEXT_NORM_SHIFT "norm1_context.linear_shift"

typedef struct sdw_sd3_transformer sdw_sd3_transformer;

/* Binds all weights. ws is borrowed and must outlive the transformer (its buffers and packed
 * weights are ws's); cfg is copied and validated. The position table is the stored
 * pos_embed.pos_embed [1, pos_embed_max_size², D] when present (diffusers saves it, Stability
 * files hold it as "pos_embed"), else computed as diffusers' get_2d_sincos_pos_embed does. On
 * success *out is a new transformer (free with sdw_sd3_transformer_destroy); on failure *out is
 * untouched and err names the config problem or the tensor (missing: SDW_E_NOT_FOUND, a missing
 * joint block named as such; wrong shape: SDW_E_SHAPE). */
sdw_status sdw_sd3_transformer_create(sdw_weights *ws, const sdw_sd3_config *cfg,
                                      sdw_sd3_transformer **out, sdw_error *err);
void sdw_sd3_transformer_destroy(sdw_sd3_transformer *t);                       /* NULL ok */
const sdw_sd3_config *sdw_sd3_transformer_config(const sdw_sd3_transformer *t); /* borrowed */
/* Parameters bound (the position table is a buffer, not counted: diffusers' count). */
size_t sdw_sd3_transformer_n_params(const sdw_sd3_transformer *t);

/* Whether latents of h × w can go through the model: both multiples of patch_size, and the
 * token grid at most pos_embed_max_size on each side (PatchEmbed.cropped_pos_embed's limit:
 * 3072 px for SD3 at 192 with patch 2 and an 8x VAE). SDW_E_INVALID_ARG saying which, else SDW_OK.
 */
sdw_status sdw_sd3_check_size(const sdw_sd3_transformer *t, int h, int w, sdw_error *err);

/* diffusers' get_2d_sincos_pos_embed(D, pos_embed_max_size, base_size = sample_size /
 * patch_size) for cfg, rounded to f32 as the model's buffer is: table [max², D]. */
void sdw_sd3_pos_embed_table(const sdw_sd3_config *cfg, float *table);

/* One denoiser call (the flow-matching velocity), batch B.
 *   x        [B, in_channels, h, w]   NCHW latents; h, w as sdw_sd3_check_size accepts
 *   timestep [B]   the scheduler's t (sigma · 1000, 0..1000), used as it is
 *   pooled   [B, pooled_dim]          pooled text embedding (CLIP-L ‖ CLIP-G)
 *   context  [B, L, joint_dim]        token embeddings (CLIP ‖ T5)
 *   out      [B, out_channels, h, w]  NCHW
 * Scratch is allocated once per call and reused by every block (aborts on out-of-memory, like
 * every internal allocation). */
void sdw_sd3_forward(const sdw_sd3_transformer *t, const float *x, int B, int h, int w,
                     const float *timestep, const float *pooled, const float *context, int L,
                     float *out);

#endif
