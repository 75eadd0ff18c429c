/* models/stable_diffusion/controlnet.h — diffusers ControlNetModel (0.25.1) forward, CPU f32 NHWC:
 * a copy of the base UNet's encoder that reads a control image and returns one residual per UNet
 * skip connection plus one for the mid block (sdw_unet_extra).
 *
 *   sdw_controlnet_config cfg;
 *   if (sdw_controlnet_config_load("canny/config.json", &cfg, &err)) goto fail;
 *   sdw_weights *ws = sdw_weights_create(file, "", NULL, NULL);     // diffusion_pytorch_model
 *   if (sdw_controlnet_create(ws, &cfg, &cn, &err)) goto fail;
 *   sdw_controlnet_embed(cn, hint, 512, 512, emb);                  // once per control image
 *   sdw_controlnet_forward(cn, x, 2, 64, 64, t, ctx, 77, NULL, NULL, emb, 1.0f, false,
 *                          down, mid, false);                       // every step: residuals
 *   sdw_controlnet_destroy(cn); sdw_weights_destroy(ws);
 *
 * ControlNetModel is UNet2DConditionModel's encoder half (conv_in, time embedding, down blocks,
 * mid block, with the UNet's own tensor names: the blocks are those of models/stable_diffusion/
 * unet.c, bound by sdw_unet_create_encoder) plus a conditioning embedding (a few 3x3 convs with
 * SiLU that bring the control image down to the latent size, added after conv_in) and a 1x1
 * "zero convolution" on each skip and on the mid output. SD 1.x, 2.x and SDXL ControlNets are
 * configurations of it, as the UNets are.
 *
 * Two checkpoint layouts: a diffusers ControlNetModel folder (config.json +
 * diffusion_pytorch_model.safetensors), and the original lllyasviel release's names
 * (control_model.input_blocks.*, input_hint_block.*, zero_convs.*, middle_block_out.*; the
 * v1.1 files without the control_model. prefix), which carry no config: their architecture is
 * their base UNet's (sdw_controlnet_config_for_original), every tensor checked when binding.
 *
 * Thread safety: a created ControlNet is read-only; concurrent forwards are safe (all scratch
 * is per call).
 */
#ifndef SDW_MODELS_SD_CONTROLNET_H
#define SDW_MODELS_SD_CONTROLNET_H

#include "io/weights.h"
#include "models/stable_diffusion/unet_config.h"

#define SDW_CONTROLNET_MAX_EMBED 8

typedef struct sdw_controlnet sdw_controlnet;

typedef struct sdw_controlnet_config {
    /* The encoder: the fields ControlNetModel.__init__ shares with UNet2DConditionModel (from
     * ControlNetModel.from_unet), parsed by the UNet's parser. Its up-path fields mirror the
     * down path and are not used. */
    sdw_unet_config unet;
    int conditioning_channels; /* channels of the control image (3) */
    int n_embed;               /* len(conditioning_embedding_out_channels) */
    int embed_channels[SDW_CONTROLNET_MAX_EMBED]; /* (16, 32, 96, 256): each stage after the
                                                   * first halves the size */
    bool bgr;         /* controlnet_conditioning_channel_order "bgr": the image is flipped */
    bool global_pool; /* global_pool_conditions (shuffle): residuals are averaged over the
                       * image, and the pipeline runs in guess mode */
} sdw_controlnet_config;

/* Parses a diffusers ControlNetModel config.json text (label names it in messages). On
 * failure err names the key and the value (SDW_E_FORMAT for malformed JSON or a file of
 * another class, SDW_E_UNSUPPORTED for settings not implemented: those of the UNet parser,
 * and mid_block_type "UNetMidBlock2D"). */
sdw_status sdw_controlnet_config_parse(const char *json_text, size_t len, const char *label,
                                       sdw_controlnet_config *cfg, sdw_error *err);
/* Reads and parses a config.json file (the path labels the messages). */
sdw_status sdw_controlnet_config_load(const char *path, sdw_controlnet_config *cfg,
                                      sdw_error *err);

/* The config of an original-layout ControlNet file f (tensor names under prefix: "control_model."
 * or ""): base's encoder (an original ControlNet is a trained copy of its base UNet, and its
 * file records no config), with the conditioning embedding's stages read from the
 * input_hint_block shapes. The architecture is checked tensor by tensor when binding
 * (sdw_controlnet_original_name). SDW_E_FORMAT when f has no input_hint_block. */
sdw_status sdw_controlnet_config_for_original(const sdw_st_file *f, const char *prefix,
                                              const sdw_unet_config *base,
                                              sdw_controlnet_config *cfg, sdw_error *err);
/* The tensor-name prefix of an original-layout ControlNet file ("control_model." or ""), or
 * NULL when f is not one (no input_hint_block.0.weight under either). */
const char *sdw_controlnet_original_prefix(const sdw_st_file *f);
/* sdw_name_map_fn for original-layout files: diffusers name -> original name (relative to the
 * prefix); user is the const sdw_controlnet_config * being bound (borrowed). */
const char *sdw_controlnet_original_name(const char *name, char *buf, size_t cap, void *user);

/* Image pixels per latent pixel the conditioning embedding goes down by: 2^(n_embed - 1) (8 for
 * the released ControlNets, as the SD VAE). */
int sdw_controlnet_downscale(const sdw_controlnet_config *cfg);

/* Binds all weights. ws is borrowed and must outlive the ControlNet; cfg is copied. On success
 * *out is new (free with sdw_controlnet_destroy); on failure *out is untouched and err names the
 * config problem or the tensor (missing, wrong shape). */
sdw_status sdw_controlnet_create(sdw_weights *ws, const sdw_controlnet_config *cfg,
                                 sdw_controlnet **out, sdw_error *err);
void sdw_controlnet_destroy(sdw_controlnet *cn); /* NULL ok */

const sdw_controlnet_config *sdw_controlnet_config_of(const sdw_controlnet *cn); /* borrowed */
size_t sdw_controlnet_n_params(const sdw_controlnet *cn);                        /* floats bound */
/* Down residuals it makes: the skips of its encoder, = its base UNet's sdw_unet_n_skips. */
int sdw_controlnet_n_down(const sdw_controlnet *cn);

/* The shape of residual k (k < sdw_controlnet_n_down: a down residual; k = n_down: the mid one)
 * for latents H x W, per batch element: [h, w, c] (the UNet skip it is added to). */
void sdw_controlnet_residual_shape(const sdw_controlnet *cn, int k, int H, int W, int *h, int *w,
                                   int *c);

/* ControlNetConditioningEmbedding: image [Hc, Wc, conditioning_channels] NHWC, values in [0, 1]
 * in RGB order (a BGR ControlNet flips it here, as its forward does) -> emb [h, w, C0] with
 * h = the size after n_embed - 1 stride-2 convolutions (Hc / downscale for sizes it divides).
 * The embedding depends on the image alone: compute it once per image, not per step. */
void sdw_controlnet_embed(const sdw_controlnet *cn, const float *image, int Hc, int Wc,
                          float *emb);

/* ControlNetModel.forward after the conditioning embedding, for one batch:
 *   x [B, H, W, in_channels], timesteps [B], context [B, L, cross_attention_dim],
 *   text_embeds / time_ids as sdw_unet_forward (SDXL ControlNets), emb [H, W, C0] from
 *   sdw_controlnet_embed (H, W: the latent size; added to every batch element);
 *   down[k] [B, h_k, w_k, c_k] for k < sdw_controlnet_n_down (the UNet's skip shapes) and
 *   mid [B, h, w, C_last]: the residuals times scale (guess mode: times torch.logspace(-1, 0)
 *   per residual, as diffusers; global_pool: then averaged over the image, the mean written to
 *   every pixel). accumulate adds them to what down/mid hold (MultiControlNetModel's sum of
 *   several ControlNets' residuals) instead of writing them.
 * A stop (nn/stop.h) ends it early, outputs undefined. */
void sdw_controlnet_forward(const sdw_controlnet *cn, const float *x, int B, int H, int W,
                            const float *timesteps, const float *context, int L,
                            const float *text_embeds, const float *time_ids, const float *emb,
                            float scale, bool guess_mode, float *const *down, float *mid,
                            bool accumulate);

#endif
