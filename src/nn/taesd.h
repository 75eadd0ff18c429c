/* nn/taesd.h — the tiny autoencoder TAESD (diffusers AutoencoderTiny 0.25.1; madebyollin/taesd):
 * image <-> latent in a few convolutions, for live previews and draft decodes.
 *
 *   sdw_taesd_config cfg;                                         // a diffusers folder:
 *   if (sdw_taesd_config_load("taesd/config.json", &cfg, &err)) goto fail;
 *   sdw_weights *ws = sdw_weights_create(file, "", NULL, NULL);    // encoder.layers.N.* ...
 *   if (sdw_taesd_create(ws, ws, &cfg, &t, &err)) goto fail;       // decoder and encoder
 *   if (sdw_taesd_decode(t, z, 1, 64, 64, img, &err)) goto fail;   // img [1,512,512,3]
 *   sdw_taesd_destroy(t); sdw_weights_destroy(ws);
 *
 * The original release (taesd_decoder.safetensors, taesd_encoder.safetensors and their taesdxl_,
 * taesd3_ and taef1_ siblings) ships each half as its own file in nn.Sequential naming ("N.*"):
 * open each through sdw_taesd_original_name, infer the config from the shapes
 * (sdw_taesd_config_infer) and pass the weights of the halves you have (a decoder alone is a
 * complete TAESD for previews). sdw_taesd_detect tells the layouts, and the latent channels
 * (4: SD 1.x/2.x/XL; 16: SD3, FLUX.1), apart from names and shapes alone.
 *
 * Latents: TAESD works on the diffusion model's own latents — what the sampler holds, not
 * divided by the big VAE's scaling_factor (AutoencoderTiny configs carry scaling_factor 1.0; the
 * pipeline's latents / scaling_factor + shift_factor is then the identity). Tensors are NHWC
 * float32; the caller owns every buffer it passes. Scratch is allocated per call.
 *
 * Thread safety: a TAESD is read-only once created; decode and encode may run concurrently.
 */
#ifndef SDW_NN_TAESD_H
#define SDW_NN_TAESD_H

#include "io/weights.h"

#define SDW_TAESD_MAX_STAGES 8

typedef struct sdw_taesd_config {
    int in_channels;     /* image channels the encoder takes (3) */
    int out_channels;    /* image channels the decoder makes (3) */
    int latent_channels; /* 4 (taesd, taesdxl), 16 (taesd3, taef1) */
    /* EncoderTiny: stage i = a 3x3 conv (stage 0: in_channels -> channels, stride 1, bias;
     * later stages: stride 2, no bias), then num_encoder_blocks[i] blocks; a 3x3 conv to the
     * latent channels ends it. 0 stages: no encoder described (a config inferred from a
     * decoder file). */
    int n_encoder_stages;
    int encoder_block_out_channels[SDW_TAESD_MAX_STAGES]; /* (64, 64, 64, 64) */
    int num_encoder_blocks[SDW_TAESD_MAX_STAGES];         /* (1, 3, 3, 3) */
    /* DecoderTiny: a 3x3 conv from the latent channels and a ReLU, then per stage
     * num_decoder_blocks[i] blocks, and (all but the last stage) a nearest upsample and a 3x3
     * conv without bias; the last stage's conv (with bias) makes the image. 0: no decoder. */
    int n_decoder_stages;
    int decoder_block_out_channels[SDW_TAESD_MAX_STAGES]; /* (64, 64, 64, 64) */
    int num_decoder_blocks[SDW_TAESD_MAX_STAGES];         /* (3, 3, 3, 1) */
    int upsampling_scaling_factor;                        /* 2 (the only one supported) */
    /* Metadata, not used by decode/encode: AutoencoderTiny.scale_latents maps latents to
     * [0, 1] as clamp(z / (2·magnitude) + shift) (3, 0.5); the pipeline's scaling_factor and
     * shift_factor (1.0, 0.0 in every released TAESD). */
    float latent_magnitude, latent_shift;
    float scaling_factor, shift_factor;
} sdw_taesd_config;

/* diffusers' AutoencoderTiny constructor defaults: the real TAESD (64 channels, 4 stages,
 * x8, 4 latent channels). */
sdw_taesd_config sdw_taesd_config_default(void);

/* Parses an AutoencoderTiny config.json (text of len bytes / a file). Absent keys keep the
 * defaults above; unknown keys are ignored. SDW_E_FORMAT for bad JSON, value types or list
 * lengths (channels and block counts must pair up), SDW_E_INVALID_ARG for values out of range,
 * SDW_E_UNSUPPORTED for an act_fn other than relu or an upsampling factor other than 2. *cfg is
 * untouched on failure. */
sdw_status sdw_taesd_config_parse(const char *json, size_t len, sdw_taesd_config *cfg,
                                  sdw_error *err);
sdw_status sdw_taesd_config_load(const char *path, sdw_taesd_config *cfg, sdw_error *err);

/* The architecture from tensor shapes, by canonical (diffusers) name: dec holds the decoder
 * (decoder.layers.N.*), enc the encoder (encoder.layers.N.*); either may be NULL (that half gets
 * 0 stages), not both; they may be the same object. The metadata gets the defaults. Fails with
 * SDW_E_NOT_FOUND when a given weights object holds no such half, SDW_E_FORMAT when the layers
 * do not form one (the message names the layer). *cfg is untouched on failure. */
sdw_status sdw_taesd_config_infer(const sdw_weights *dec, const sdw_weights *enc,
                                  sdw_taesd_config *cfg, sdw_error *err);

/* What a safetensors file holds, from its names and shapes alone. */
typedef enum sdw_taesd_layout {
    SDW_TAESD_LAYOUT_NONE = 0,    /* not a TAESD */
    SDW_TAESD_LAYOUT_DIFFUSERS,   /* AutoencoderTiny: decoder.layers.N.* and/or encoder.layers.N.* */
    SDW_TAESD_LAYOUT_ORIG_DECODER, /* taesd_decoder: N.* (0 = Clamp, 1 = the first conv) */
    SDW_TAESD_LAYOUT_ORIG_ENCODER, /* taesd_encoder: N.* (0 = the first conv, from the image) */
} sdw_taesd_layout;
/* The layout of f and (latent_channels, may be NULL) the latent channels its first decoder or
 * last encoder convolution reads or makes: 4 for SD 1.x/2.x/XL, 16 for SD3 / FLUX.1 (0 for
 * NONE). A loader compares it with the diffusion model's latent channels. Never fails. */
sdw_taesd_layout sdw_taesd_detect(const sdw_st_file *f, int *latent_channels);
const char *sdw_taesd_layout_str(sdw_taesd_layout l);

/* sdw_name_map_fn for the original files: decoder.layers.N.rest -> "N+1.rest" (the original
 * decoder starts with a parameter-free Clamp), encoder.layers.N.rest -> "N.rest"; NULL for any
 * other name. user is unused. Use it for either file. */
const char *sdw_taesd_original_name(const char *name, char *buf, size_t cap, void *user);

typedef struct sdw_taesd sdw_taesd;

/* Binds the decoder from dec and the encoder from enc (canonical names; either may be NULL for
 * a TAESD without that half, not both; the same object for a diffusers file holding both).
 * The weights are borrowed: they must outlive the TAESD (they own the packed layers). cfg is
 * copied; it must describe every half given (n_*_stages > 0). Every stored tensor of a given
 * weights object must be used: a file with layers this architecture lacks (another TAESD
 * version) is refused rather than half run — so for a diffusers file holding both halves, pass
 * it as both or mark the other half ignored (sdw_weights_ignore). Errors: SDW_E_INVALID_ARG
 * (config; halves of different scale), SDW_E_NOT_FOUND / SDW_E_SHAPE / SDW_E_FORMAT naming the
 * tensor, SDW_E_UNSUPPORTED naming unused tensors; messages start "TAESD decoder" / "TAESD
 * encoder". On success *out is a new TAESD (free with sdw_taesd_destroy); untouched on failure. */
sdw_status sdw_taesd_create(sdw_weights *dec, sdw_weights *enc, const sdw_taesd_config *cfg,
                            sdw_taesd **out, sdw_error *err);
void sdw_taesd_destroy(sdw_taesd *t); /* NULL ok */

/* Test hook: called after each stage with its output, under the reference golden's name
 * ("decode.clamped", "decode.layers.NN", "encode.layers.NN", NN = diffusers' layer index), as
 * NHWC [B, H, W, C] (borrowed for the call; the goldens are NCHW). */
typedef void (*sdw_taesd_tap_fn)(void *user, const char *name, const float *x, int B, int H,
                                 int W, int C);

/* AutoencoderTiny.decode: z [B, h, w, latent_channels] -> img [B, h·s, w·s, out_channels]
 * (s = sdw_taesd_downscale) = 2·layers(tanh(z/3)·3) − 1, ≈[-1, 1] and not clamped (as the big
 * VAE's raw output: the image is clamp(img/2 + 0.5, 0, 1)). Fails (img untouched) with
 * SDW_E_UNSUPPORTED when t has no decoder, SDW_E_INVALID_ARG when B, h or w < 1. */
sdw_status sdw_taesd_decode(const sdw_taesd *t, const float *z, int B, int h, int w, float *img,
                            sdw_error *err);
/* As sdw_taesd_decode, calling tap (may be NULL) after each stage. */
sdw_status sdw_taesd_decode_tap(const sdw_taesd *t, const float *z, int B, int h, int w,
                                float *img, sdw_taesd_tap_fn tap, void *tap_user, sdw_error *err);

/* AutoencoderTiny.encode: img [B, H, W, in_channels] in [-1, 1] -> latents [B, H/s, W/s,
 * latent_channels] = layers((img + 1) / 2) (the diffusion model's latents: no scaling). Fails
 * (latents untouched) with SDW_E_UNSUPPORTED when t has no encoder, SDW_E_INVALID_ARG when H or
 * W is not a positive multiple of s or B < 1. */
sdw_status sdw_taesd_encode(const sdw_taesd *t, const float *img, int B, int H, int W,
                            float *latents, sdw_error *err);
sdw_status sdw_taesd_encode_tap(const sdw_taesd *t, const float *img, int B, int H, int W,
                                float *latents, sdw_taesd_tap_fn tap, void *tap_user,
                                sdw_error *err);

const sdw_taesd_config *sdw_taesd_get_config(const sdw_taesd *t); /* borrowed, lives with t */
int sdw_taesd_latent_channels(const sdw_taesd *t);
int sdw_taesd_downscale(const sdw_taesd *t); /* image / latent side: 8 for the real TAESD */
bool sdw_taesd_has_decoder(const sdw_taesd *t);
bool sdw_taesd_has_encoder(const sdw_taesd *t);
size_t sdw_taesd_n_params(const sdw_taesd *t); /* float parameters of the bound halves */

#endif
