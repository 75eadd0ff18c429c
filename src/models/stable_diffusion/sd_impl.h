/* models/stable_diffusion/sd_impl.h — the family's private model struct, shared by its loaders
 * (sd_model.c: folders and identity; sd_single_file.c: single-file checkpoints), conditioning
 * (sd_conditioning.c), pipeline (sd_pipeline.c) and demo (sd_demo.c).
 *
 * SD 1.x, SD 2.x and SDXL (base, Turbo, inpainting) are configurations of this one struct: what
 * differs between them is data here (how many text encoders and which hidden state each
 * contributes, where the pooled embedding comes from, whether the UNet takes text_time
 * conditioning, the schedule, the VAE scaling), never a variant test in the code that runs. */
#ifndef SDW_SD_IMPL_H
#define SDW_SD_IMPL_H

#include "models/stable_diffusion/sd_model.h"
#include "models/stable_diffusion/unet.h"
#include "nn/vae.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"
#include "sampling/scheduler.h"
#include "text/clip_text.h"
#include "text/clip_tokenizer.h"

#define SD_MAX_FILES 4
#define SD_MAX_TEXT 2
#define SD_TEXT_WINDOW 77

/* One text encoder of the conditioning. The UNet context is the concatenation, along the
 * feature axis, of every encoder's selected hidden state (SD 1/2: one encoder; SDXL: CLIP-L's
 * and OpenCLIP-bigG's penultimate states, 768 + 1280 = 2048). */
typedef struct sd_text_encoder {
    sdw_clip_tokenizer *tokenizer; /* owned */
    int32_t pad_id;                /* padding of the 77-token window (EOS for CLIP-L, 0 OpenCLIP) */
    sdw_weights *w;                /* owned; its file is in sd_model.files */
    sdw_clip_text *enc;            /* owned */
    /* Which hidden state feeds the context (SD 1/2: the last, with the final layer norm; SDXL:
     * the penultimate, without it) and whether its pooled output is projected. */
    sdw_clip_text_params params;
    char tap[8]; /* tap/golden prefix: "te", "te2" */
} sd_text_encoder;

typedef struct sd_model {
    sdw_image_model base;
    char variant[32];
    sdw_capabilities caps;
    const char *samplers[16];

    sdw_st_file *files[SD_MAX_FILES]; /* every mapped file; weights are views into these */
    int n_files;

    sd_text_encoder te[SD_MAX_TEXT];
    int n_te;
    /* Encoder whose projected pooled output is the UNet's text_embeds (SDXL: the second);
     * -1 when the UNet takes none. */
    int pooled_te;
    /* diffusers' force_zeros_for_empty_prompt (SDXL): without a negative prompt the
     * unconditional context and pooled embeddings are zeros instead of the encoded "". */
    bool zero_uncond;

    sdw_weights *w_unet, *w_vae;
    sdw_unet_config unet_cfg; /* kept: the single-file name maps read them */
    sdw_vae_config vae_cfg;
    sdw_unet *unet;
    sdw_vae *vae;
    sdw_scheduler_config sched; /* the model's scheduler config (or its family's default) */
    float vae_scaling;          /* latents = z * vae_scaling */
    int vae_factor;             /* pixels per latent */
    int latent_channels;
    int native_latent; /* default image size in latents (diffusers: unet sample_size); 0 = 64 */
    int n_threads;
    sdw_precision precision; /* resolved (F32 or BF16): what every component was packed for */

    sdw_sd_tap_fn tap;
    void *tap_user;
} sd_model;

/* Fills caps, variant and the sampler list from the loaded parts (shared by every loader). */
void sdw__sd_finish_setup(sd_model *m);
void sdw__sd_destroy(sdw_image_model *base);
extern const sdw_image_model_ops sdw__sd_ops;

/* Maps one more file into m (closed with the model). */
sdw_status sdw__sd_open_file(sd_model *m, const char *path, sdw_st_file **out, sdw_error *err);

/* Checks the parts fit together (context width = UNet cross-attention width, pooled width =
 * UNet text_embeds width) and fills the pooled/zero-uncond settings' consequences. */
sdw_status sdw__sd_check_parts(const sd_model *m, sdw_error *err);

/* sd_single_file.c: an original-layout checkpoint (CompVis SD 1.x/2.x, Stability SGM SDXL). */
/* A diffusers unet/config.json's sample_size (default image size in latents), or 0. */
int sdw__sd_unet_sample_size(const char *config_path);
sdw_status sdw__sd_load_single_file(sd_model *m, const char *path, const sdw_load_options *opts,
                                    sdw_error *err);

/* sd_conditioning.c: the UNet's conditioning for one request, batch [uncond, cond] under CFG. */
typedef struct sd_cond {
    int B, L, D;        /* batch, tokens (77), context width */
    float *context;     /* [B, L, D] encoder_hidden_states */
    float *text_embeds; /* [B, unet add_text_dim] or NULL (no text_time conditioning) */
    float *time_ids;    /* [B, unet add_n_time_ids] or NULL */
    bool truncated;     /* a prompt was cut to the window */
} sd_cond;
/* Encodes req's prompt (and negative prompt when cfg) with every text encoder, and builds
 * SDXL's time ids from req's size fields. On success *c owns new buffers (sdw__sd_cond_free);
 * on failure *c is zeroed. */
sdw_status sdw__sd_condition(const sd_model *m, const sdw_request *req, bool cfg, sd_cond *c,
                             sdw_error *err);
void sdw__sd_cond_free(sd_cond *c);

/* Test tap (no-op without one): name and shape as the reference records them. */
void sdw__sd_tap(const sd_model *m, const char *name, const float *data, int n_dims, ...);

/* sd_pipeline.c */
sdw_status sdw__sd_generate(sdw_image_model *base, const sdw_request *req,
                            sdw_progress_fn progress, void *user, sdw_image *out,
                            sdw_result_info *info, sdw_error *err);

/* sd_img2img.c: image-to-image and inpainting (see there for the reference's draw order). */
typedef struct sd_image_job {
    bool inpaint;          /* a mask is in play (given, or implied by a 9-channel UNet) */
    bool blend;            /* 4-channel inpainting: re-noised originals outside the mask */
    double strength;
    int n_noise, n_encode; /* noise.KK / vae.encode.N taps so far */
    float *noise;          /* [C, h, w] prepare_latents' noise */
    float *image_latents;  /* [C, h, w] scaled init latents, or NULL when not needed */
    float *mask;           /* [h, w] latent-resolution mask, 1 = repaint (inpaint) */
    float *masked_latents; /* [C, h, w] masked image latents (9-channel UNet) */
} sd_image_job;

/* Preprocesses req's init image (and mask), sets the sampler's first call from the strength,
 * draws and encodes as the reference and writes the initial latents [C, h, w] (NCHW). On
 * failure job holds what was allocated (deinit it either way). */
sdw_status sdw__sd_image_prepare(const sd_model *m, const sdw_request *req, sdw_sampler *sampler,
                                 sdw_rng *rng, float *latents, sd_image_job *job, sdw_error *err);
/* 9-channel UNet input beyond the latents: out [1 + C, h, w] = mask | masked image latents. */
void sdw__sd_image_unet_extra(const sd_image_job *job, int C, int h, int w, float *out);
/* After the sampler step of call i: 4-channel inpainting's blend (no-op otherwise). hw = h*w. */
void sdw__sd_image_after_step(const sd_image_job *job, const sdw_sampler *sampler, int i,
                              float *latents, size_t n_lat, size_t hw);
void sdw__sd_image_job_deinit(sd_image_job *job);

/* sd_demo.c */
sdw_status sdw__sd_load_demo(const sdw_load_options *opts, sdw_image_model **out, sdw_error *err);

#endif
