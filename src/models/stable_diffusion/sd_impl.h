/* models/stable_diffusion/sd_impl.h — the family's private model struct, shared by its loader
 * (sd_model.c), pipeline (sd_pipeline.c) and demo (sd_demo.c). */
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
#define SD_TEXT_WINDOW 77

typedef struct sd_model {
    sdw_image_model base;
    char variant[32];
    sdw_capabilities caps;
    const char *samplers[16];

    sdw_st_file *files[SD_MAX_FILES]; /* every mapped file; weights are views into these */
    int n_files;
    sdw_weights *w_text, *w_unet, *w_vae;

    sdw_clip_tokenizer *tokenizer;
    int32_t pad_id; /* padding token of the text window (EOS for SD 1.x) */
    sdw_clip_text *text;
    sdw_unet_config unet_cfg; /* kept: the single-file name maps read them */
    sdw_vae_config vae_cfg;
    sdw_unet *unet;
    sdw_vae *vae;
    sdw_scheduler_config sched; /* the model's scheduler config (or the SD 1.x default) */
    float vae_scaling;          /* latents = z * vae_scaling */
    int vae_factor;             /* pixels per latent */
    int latent_channels;
    int n_threads;
    sdw_precision precision; /* resolved (F32 or BF16): what every component was packed for */

    sdw_sd_tap_fn tap;
    void *tap_user;
} sd_model;

/* Fills caps, variant and the sampler list from the loaded parts (shared by every loader). */
void sdw__sd_finish_setup(sd_model *m);
void sdw__sd_destroy(sdw_image_model *base);
extern const sdw_image_model_ops sdw__sd_ops;

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
