/* models/stable_diffusion/sd_impl.h — the family's private model struct, shared by its loader
 * (sd_model.c), pipeline (sd_pipeline.c) and demo (sd_demo.c). */
#ifndef SDW_SD_IMPL_H
#define SDW_SD_IMPL_H

#include "models/stable_diffusion/sd_model.h"
#include "models/stable_diffusion/unet.h"
#include "nn/vae.h"
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

/* sd_demo.c */
sdw_status sdw__sd_load_demo(const sdw_load_options *opts, sdw_image_model **out, sdw_error *err);

#endif
