/* nn/vae.h — the KL autoencoder (diffusers AutoencoderKL 0.25.1): image <-> latent.
 *
 * One implementation serves the whole SD family (SD1/SD2/SDXL: 4 latent channels, 4 levels) and
 * FLUX's autoencoder (16 latent channels, no quant convs): they differ only in the config.
 *
 *   sdw_vae_config cfg;
 *   if (sdw_vae_config_load("vae/config.json", &cfg, &err)) goto fail;
 *   sdw_weights *ws = sdw_weights_create(file, "", NULL, NULL);       // diffusers names
 *   if (sdw_vae_create(ws, &cfg, &vae, &err)) goto fail;
 *   sdw_vae_decode(vae, z, 1, 64, 64, img);                            // img [1,512,512,3]
 *   sdw_vae_destroy(vae); sdw_weights_destroy(ws);
 *
 * Single-file checkpoints (original LDM names under "first_stage_model.", or FLUX's BFL
 * ae.safetensors under "") use sdw_vae_config_infer() and the sdw_ldm_vae_name map
 * (nn/ldm_vae_names.h) with the config as the map's user pointer.
 *
 * Tensors are NHWC float32. Latent conventions (scaling_factor / shift_factor) belong to the
 * pipeline: decode takes z = latents / scaling_factor + shift_factor, encode returns the
 * posterior before scaling. Scratch is allocated per call and freed as soon as it is dead:
 * measured peak ≈ 0.55 GB (f32) / 0.26 GB (bf16 activations) beyond the weights for one
 * 512x512 SD decode (mostly the 256->128 channel resnet at full resolution).
 *
 * Thread safety: decode/encode may run concurrently (a lazily bound encoder is bound under a
 * lock); a VAE is otherwise read-only once created.
 */
#ifndef SDW_NN_VAE_H
#define SDW_NN_VAE_H

#include "io/weights.h"

#define SDW_VAE_MAX_LEVELS 8

typedef struct sdw_vae_config {
    int in_channels;      /* image channels the encoder takes (3) */
    int out_channels;     /* image channels the decoder makes (3) */
    int latent_channels;  /* 4 (SD), 16 (FLUX) */
    int n_levels;         /* len(block_out_channels); downscale = 2^(n_levels-1) */
    int block_out_channels[SDW_VAE_MAX_LEVELS]; /* (128,256,512,512) for SD */
    int layers_per_block; /* encoder resnets per level; the decoder has one more */
    int norm_num_groups;  /* 32 */
    float scaling_factor; /* pipeline metadata: 0.18215 SD1/2, 0.13025 SDXL, 0.3611 FLUX */
    float shift_factor;   /* pipeline metadata: 0 (absent) for SD, 0.1159 FLUX */
    bool use_quant_conv;      /* encoder's 1x1 quant_conv (false in FLUX) */
    bool use_post_quant_conv; /* decoder's 1x1 post_quant_conv (false in FLUX) */
    bool mid_block_attention; /* mid-block self-attention (diffusers mid_block_add_attention) */
} sdw_vae_config;

/* diffusers' AutoencoderKL constructor defaults (what a config.json that omits a key means). */
sdw_vae_config sdw_vae_config_default(void);

/* Parses a diffusers vae/config.json (text of len bytes / a file). Keys absent take the
 * defaults above; unknown keys are ignored. Fails with SDW_E_FORMAT (bad JSON or value
 * types/ranges) or SDW_E_UNSUPPORTED (block types other than DownEncoderBlock2D /
 * UpDecoderBlock2D, an activation other than silu). *cfg is untouched on failure. */
sdw_status sdw_vae_config_parse(const char *json, size_t len, sdw_vae_config *cfg, sdw_error *err);
sdw_status sdw_vae_config_load(const char *path, sdw_vae_config *cfg, sdw_error *err);

/* Infers the architecture from the tensor shapes of one file whose VAE tensors sit under
 * `prefix` ("first_stage_model." in SD checkpoints, "" in a standalone VAE or FLUX ae file),
 * named either the LDM way (encoder.down.N...) or the diffusers way (encoder.down_blocks.N...).
 * Shapes cannot tell norm_num_groups, scaling_factor or shift_factor: they get diffusers'
 * defaults (32, 0.18215, 0); the caller sets the family's latent scaling. Fails with
 * SDW_E_NOT_FOUND when no VAE is under the prefix, SDW_E_FORMAT on inconsistent shapes.
 * *cfg is untouched on failure. */
sdw_status sdw_vae_config_infer(const sdw_st_file *f, const char *prefix, sdw_vae_config *cfg,
                                sdw_error *err);
/* True when the VAE under prefix uses LDM names (then bind through sdw_ldm_vae_name). */
bool sdw_vae_file_is_ldm(const sdw_st_file *f, const char *prefix);

typedef struct sdw_vae sdw_vae;

/* Binds every tensor by its diffusers name from ws (borrowed: must outlive the VAE; it owns
 * the weight buffers). cfg is copied. The encoder is optional: when ws has no
 * "encoder.conv_in.weight" the VAE is decode-only and sdw_vae_encode fails. Errors name the
 * tensor (SDW_E_NOT_FOUND / SDW_E_SHAPE / SDW_E_FORMAT) or the config field
 * (SDW_E_INVALID_ARG). On success *out is a new VAE (free with sdw_vae_destroy); untouched on
 * failure. Old diffusers attention names (query/key/value/proj_attn) are accepted too. */
sdw_status sdw_vae_create(sdw_weights *ws, const sdw_vae_config *cfg, sdw_vae **out,
                          sdw_error *err);
/* As sdw_vae_create, but the encoder (needed only by image-to-image and inpainting) is bound
 * on the first sdw_vae_encode, so its packed weights take no memory until then. The encoder is
 * found by name (a file-backed ws: the random source lists none) and counted in
 * sdw_vae_n_params from the stored shapes; its tensors are not reported unused. ws must stay
 * valid and untouched by others while an encode may bind from it. */
sdw_status sdw_vae_create_lazy(sdw_weights *ws, const sdw_vae_config *cfg, sdw_vae **out,
                               sdw_error *err);
void sdw_vae_destroy(sdw_vae *v); /* NULL ok */

/* z [B, h, w, latent_channels] (already divided by scaling_factor, shift_factor added back)
 * -> img [B, h·s, w·s, out_channels] raw decoder output (≈[-1, 1], not clamped), s =
 * sdw_vae_downscale. Both caller-owned; B, h, w >= 1 (programmer error otherwise). */
void sdw_vae_decode(const sdw_vae *v, const float *z, int B, int h, int w, float *img);

/* img [B, H, W, in_channels] in [-1, 1] -> the posterior (DiagonalGaussianDistribution):
 * mean and std = exp(0.5 · clamp(logvar, -30, 20)), each [B, H/s, W/s, latent_channels],
 * caller-owned. Fails (outputs untouched) with SDW_E_INVALID_ARG when H or W is not a
 * positive multiple of s or B < 1, SDW_E_UNSUPPORTED for a decode-only VAE. */
sdw_status sdw_vae_encode(const sdw_vae *v, const float *img, int B, int H, int W, float *mean,
                          float *std, sdw_error *err);

const sdw_vae_config *sdw_vae_get_config(const sdw_vae *v); /* borrowed, lives with v */
int sdw_vae_downscale(const sdw_vae *v);                    /* 2^(n_levels-1): 8 for SD */
bool sdw_vae_has_encoder(const sdw_vae *v);
size_t sdw_vae_n_params(const sdw_vae *v); /* float parameters (encoder + decoder) */

/* ---- tiled decode / encode (nn/vae_tiled.c) ----
 * diffusers 0.25.1 AutoencoderKL.enable_tiling(): the latents (image) are cut into overlapping
 * square tiles, each decoded (encoded) alone and blended into the output over the overlap, so
 * scratch memory follows the tile size, not the image's: one tile's forward pass plus a band of
 * `blend` rows across the image (the output itself is the caller's). The numbers are diffusers':
 * tile_latent = sample_size / downscale, latent stride int(tile_latent · 0.75), blend
 * int(sample_size · 0.25) px, linear ramps applied vertically then horizontally over the
 * neighbours as already blended, each tile cropped to sample_size − blend px. The seams differ
 * from an untiled decode (the tiles see nothing beyond their edges): use it for sizes the
 * untiled pass cannot hold: the scratch is one tile's (a 512x512 decode for SD) at any size.
 * Measured peak RSS of one SD 1.5 decode (tools/sdw_vae_peak: random weights, 2 threads, a
 * process each), untiled -> tiled: 1024x1024 bf16 1175 -> 424 MiB, f32 2240 -> 705 MiB;
 * 2048x2048 bf16 4299 -> 445 MiB. Tiling costs time: the tiles overlap (1024x1024: 9 tiles
 * decode 1.56x the pixels, about 1.2x the untiled time).
 *
 *   int ss;
 *   if (sdw_vae_sample_size_load("vae/config.json", &ss, &err)) goto fail;
 *   sdw_vae_tiling t = sdw_vae_tiling_default(vae, ss);              // 512 px / 64 latents
 *   if (sdw_vae_decode_tiled(vae, z, 1, 256, 256, &t, img, &err)) goto fail;  // 2048x2048
 */
typedef struct sdw_vae_tiling {
    int tile_sample_size; /* tile side in pixels: the config's sample_size (diffusers'
                           * tile_sample_min_size) */
    int tile_latent_size; /* tile side in latents: tile_sample_size / downscale */
    float overlap;        /* tile_overlap_factor: 0.25 */
} sdw_vae_tiling;

/* diffusers' tiling of v for a config sample_size (512 in SD 1.x VAE folders, 768 for SD 2.x-v,
 * 1024 for SDXL and FLUX; single files carry none: diffusers' single-file loader uses the
 * model's image size, the same numbers). */
sdw_vae_tiling sdw_vae_tiling_default(const sdw_vae *v, int sample_size);
/* "sample_size" of a diffusers vae/config.json (text of len bytes / a file): an integer, or a
 * list whose first entry counts (as diffusers reads it); absent or null: AutoencoderKL's default
 * 32. SDW_E_FORMAT / SDW_E_INVALID_ARG naming the key otherwise; *sample_size untouched on
 * failure. */
sdw_status sdw_vae_sample_size_parse(const char *json, size_t len, int *sample_size,
                                     sdw_error *err);
sdw_status sdw_vae_sample_size_load(const char *path, int *sample_size, sdw_error *err);
/* Whether diffusers tiles: a latent side (decode) / an image side (encode) beyond the tile. */
bool sdw_vae_tiling_decodes_tiled(const sdw_vae_tiling *t, int h, int w);
bool sdw_vae_tiling_encodes_tiled(const sdw_vae_tiling *t, int H, int W);

/* sdw_vae_decode with tiling t: the same arguments and output; latents no larger than a tile
 * are decoded whole, as diffusers does. Batch elements are decoded one after another. Fails
 * (img untouched) with SDW_E_INVALID_ARG when t does not tile evenly (a tile of whole latents
 * whose crop, sample_size − blend, equals its stride in pixels: every sample_size diffusers
 * ships does). */
sdw_status sdw_vae_decode_tiled(const sdw_vae *v, const float *z, int B, int h, int w,
                                const sdw_vae_tiling *t, float *img, sdw_error *err);
/* sdw_vae_encode with tiling t: the posterior from the tiled, blended moments (mean and
 * logvar), as diffusers' tiled_encode. logvar is blended as 2·log(std) of each tile's posterior:
 * equal up to rounding (~1e-7) while the encoder's logvar stays inside the [−30, 20] clamp.
 * Errors as sdw_vae_encode (whose requirements it shares) and as sdw_vae_decode_tiled; on
 * failure mean and std may be partly written. */
sdw_status sdw_vae_encode_tiled(const sdw_vae *v, const float *img, int B, int H, int W,
                                const sdw_vae_tiling *t, float *mean, float *std,
                                sdw_error *err);

#endif
