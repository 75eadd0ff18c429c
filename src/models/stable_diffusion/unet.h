/* models/stable_diffusion/unet.h — diffusers UNet2DConditionModel (0.25.1) forward, CPU f32 NHWC.
 *
 *   sdw_unet *u;
 *   if (sdw_unet_create(ws, &cfg, &u, &err)) goto fail;          // binds every tensor
 *   sdw_unet_forward(u, x, 2, 64, 64, t, ctx, 77, NULL, NULL, eps); // x,eps NHWC
 *   sdw_unet_destroy(u);
 *
 * The denoiser of SD 1.x / 2.x / XL (and inpainting variants): conv_in, time embedding (+ SDXL
 * text_time added embedding), down levels of ResnetBlock2D (+ Transformer2DModel), the cross-
 * attention mid block, up levels consuming the skips, GroupNorm + SiLU + conv_out. Tensors are
 * requested from `ws` by their diffusers names; a single-file checkpoint supplies
 * sdw_ldm_unet_name as its weights' name map.
 * Thread safety: a created UNet is read-only; concurrent forwards on one UNet are safe (all
 * scratch is per call).
 */
#ifndef SDW_MODELS_SD_UNET_H
#define SDW_MODELS_SD_UNET_H

#include "io/weights.h"
#include "models/stable_diffusion/unet_config.h"

typedef struct sdw_unet sdw_unet;

/* Binds all weights. ws is borrowed and must outlive the UNet (the weight buffers are its);
 * cfg is copied. On success *out is a new UNet (free with sdw_unet_destroy); on failure *out is
 * untouched and err names the config problem or the tensor (missing, wrong shape). */
sdw_status sdw_unet_create(sdw_weights *ws, const sdw_unet_config *cfg, sdw_unet **out,
                           sdw_error *err);
/* Binds only the encoder half (conv_in, the time and added embeddings, down_blocks, mid_block;
 * no up_blocks, conv_norm_out, conv_out): what a ControlNet copies from its base UNet
 * (ControlNetModel.from_unet), under the same names. Run it with sdw_unet_encode only. Same
 * contract as sdw_unet_create. */
sdw_status sdw_unet_create_encoder(sdw_weights *ws, const sdw_unet_config *cfg, sdw_unet **out,
                                   sdw_error *err);
void sdw_unet_destroy(sdw_unet *u); /* NULL ok */

const sdw_unet_config *sdw_unet_config_of(const sdw_unet *u); /* borrowed */
size_t sdw_unet_n_params(const sdw_unet *u);                  /* floats bound */

/* Optional extra inputs of sdw_unet_forward_ex (zero-initialise, fill what you use). */
typedef struct sdw_unet_extra {
    /* ControlNet residuals (already multiplied by the conditioning scale), NHWC: one per skip
     * connection in push order (conv_in, each down resnet/attention output, each downsampler:
     * sdw_unet_n_skips() of them, shapes as the skips), added to the skips before the up path;
     * and one [B, H/2^(n-1), W/2^(n-1), C_last] added to the mid-block output. NULL = none. */
    const float *const *down_residuals;
    const float *mid_residual;
} sdw_unet_extra;

/* Number of skip connections (= ControlNet down residuals): 1 + sum(layers) + n_levels - 1. */
int sdw_unet_n_skips(const sdw_unet *u);

/* eps/v prediction for one batch.
 *   x           [B, H, W, in_channels]   NHWC latents (inpainting: latents|mask|masked latents)
 *   timesteps   [B]                      (usually B copies of one value; fractional ok)
 *   context     [B, L, cross_attention_dim] encoder_hidden_states
 *   text_embeds [B, add_text_dim], time_ids [B, add_n_time_ids]: required iff cfg.add_text_time
 *               (SDXL), else ignored (may be NULL)
 *   out         [B, H, W, out_channels]
 * H and W may be any size >= 1: odd intermediate sizes are handled as diffusers does (the
 * upsamplers resize to the matching skip's size). Allocates its scratch per call (aborts on
 * out-of-memory, like every internal allocation). */
void sdw_unet_forward(const sdw_unet *u, const float *x, int B, int H, int W,
                      const float *timesteps, const float *context, int L,
                      const float *text_embeds, const float *time_ids, float *out);
/* As sdw_unet_forward with optional extras (extra may be NULL). */
void sdw_unet_forward_ex(const sdw_unet *u, const float *x, int B, int H, int W,
                         const float *timesteps, const float *context, int L,
                         const float *text_embeds, const float *time_ids,
                         const sdw_unet_extra *extra, float *out);

/* Receives the encoder half's activations as sdw_unet_encode makes them: k = 0 ..
 * sdw_unet_n_skips() - 1 are the skips in push order (the shapes the UNet's residuals have),
 * k = sdw_unet_n_skips() the mid-block output. x [B, h, w, c] NHWC, borrowed for the call. */
typedef void (*sdw_unet_skip_fn)(void *user, int k, const float *x, int B, int h, int w, int c);

/* The encoder half of the forward, as ControlNetModel.forward runs its copy of it: time
 * embedding (+ SDXL added conditioning), conv_in, plus in_add [H, W, C0] (the ControlNet's
 * conditioning embedding, added to every batch element; NULL = none), the down blocks, the mid
 * block. Inputs as sdw_unet_forward; fn gets every skip and then the mid output, on the calling
 * thread, each freed after it has been read by the next block. Works on a full UNet and on an
 * encoder. A stop (nn/stop.h) seen between blocks ends it early: fn is not called again. */
void sdw_unet_encode(const sdw_unet *u, const float *x, int B, int H, int W,
                     const float *timesteps, const float *context, int L,
                     const float *text_embeds, const float *time_ids, const float *in_add,
                     sdw_unet_skip_fn fn, void *user);

#endif
