/* models/stable_diffusion/sd_impl.h — the family's private model struct, shared by its loaders
 * (sd_model.c: folders and identity; sd_single_file.c: single-file checkpoints), conditioning
 * (sd_conditioning.c), denoiser hook (sd_denoise.c) and demo (sd_demo.c); the run itself is
 * the shared generation core (models/diffusion.c).
 *
 * SD 1.x, SD 2.x and SDXL (base, Turbo, inpainting) are configurations of this one struct: what
 * differs between them is data here (how many text encoders and which hidden state each
 * contributes, where the pooled embedding comes from, whether the UNet takes text_time
 * conditioning, the schedule, the VAE scaling), never a variant test in the code that runs. */
#ifndef SDW_SD_IMPL_H
#define SDW_SD_IMPL_H

#include "models/diffusion.h"
#include "models/stable_diffusion/sd_model.h"
#include "models/stable_diffusion/unet.h"
#include "nn/vae.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"
#include "sampling/scheduler.h"
#include "text/clip_prompt.h"

#define SD_MAX_FILES 4
#define SD_MAX_CONTROLNETS 8 /* ControlNets kept loaded at once (the least recently used goes) */
#define SD_MAX_TEXT 2
#define SD_TEXT_WINDOW SDW_CLIP_WINDOW

/* One text encoder of the conditioning (text/clip_prompt.h). The UNet context is the
 * concatenation, along the feature axis, of every encoder's selected hidden state (SD 1/2: one
 * encoder; SDXL: CLIP-L's and OpenCLIP-bigG's penultimate states, 768 + 1280 = 2048). */
typedef sdw_clip_prompt sd_text_encoder;

struct sdw_controlnet;
struct sdw_controlnet_config;
/* A ControlNet the model has loaded (controlnet_run.c): kept for later requests. */
typedef struct sd_controlnet_slot {
    char *path;                 /* real path of its folder or file: what requests are matched on */
    char *label;                /* as the request named it, for messages */
    sdw_st_file *file;
    struct sdw_controlnet_config *cfg; /* its config (the original layout's name map reads it) */
    sdw_weights *w;
    struct sdw_controlnet *net; /* NULL = free slot */
    uint64_t used;              /* the run that last used it (eviction order) */
} sd_controlnet_slot;

typedef struct sd_model {
    sdw_diffusion d; /* first: the shared core (schedule, latent space, capabilities, files) */

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
    sdw_vae *vae;      /* owned (d.vae borrows it) */
    int native_latent; /* default image size in latents (diffusers: unet sample_size); 0 = 64 */

    /* ControlNets (controlnet_run.c): the folder requests name them in (owned copy of
     * sdw_load_options.controlnet_dir, NULL = none; caps.controlnet_dir) and those loaded. */
    char *controlnet_dir;
    sd_controlnet_slot controlnets[SD_MAX_CONTROLNETS];
    uint64_t runs; /* runs that used ControlNets so far (the slots' clock) */
} sd_model;

/* Fills caps, variant and the sampler list from the loaded parts (shared by every loader), and
 * loads what the core adds (sdw_diffusion_finish: a TAESD). */
sdw_status sdw__sd_finish_setup(sd_model *m, const sdw_load_options *opts, sdw_error *err);
void sdw__sd_destroy(sdw_image_model *base);
extern const sdw_image_model_ops sdw__sd_ops;

/* Checks the parts fit together (context width = UNet cross-attention width, pooled width =
 * UNet text_embeds width) and fills the pooled/zero-uncond settings' consequences. */
sdw_status sdw__sd_check_parts(const sd_model *m, sdw_error *err);

/* sd_single_file.c: an original-layout checkpoint (CompVis SD 1.x/2.x, Stability SGM SDXL). */
/* A diffusers unet/config.json's sample_size (default image size in latents), or 0. */
int sdw__sd_unet_sample_size(const char *config_path);
sdw_status sdw__sd_load_single_file(sd_model *m, const char *path, const sdw_load_options *opts,
                                    sdw_error *err);

/* One ControlNet of a run (sd_cond.controls). */
typedef struct sd_control {
    const struct sdw_controlnet *net; /* the model's (a slot's), borrowed for the run */
    float *emb;   /* [h, w, C0] the control image's conditioning embedding (owned) */
    float scale;  /* controlnet_conditioning_scale */
    double start, end; /* control_guidance_start / _end */
} sd_control;

/* sd_conditioning.c: the UNet's conditioning for one request, batch [uncond, cond] under CFG. */
typedef struct sd_cond {
    int B, L, D;        /* batch, tokens (77), context width */
    float *context;     /* [B, L, D] encoder_hidden_states */
    float *text_embeds; /* [B, unet add_text_dim] or NULL (no text_time conditioning) */
    float *time_ids;    /* [B, unet add_n_time_ids] or NULL */
    /* ControlNets (controlnet_run.c; none: NULL, 0): their residuals are summed into the
     * UNet's skips. guess: diffusers' guess mode. The pass's denoiser calls are k0 .. k0+n-1
     * (the begin_pass hook): call k runs control j when its window holds (k - k0) / n. */
    sd_control *controls;
    int n_controls;
    bool guess;
    int k0, n;
    float *control_image; /* [H, W, 3] the first control image as the ControlNet sees it (for
                           * the reference's controlnet_cond tap; owned) */
    int image_h, image_w;
} sd_cond;
/* The core's condition hook: encodes req's prompt (and negative prompt when B = 2) with every
 * text encoder, and builds SDXL's time ids from req's size options. *cond is a new sd_cond. */
sdw_status sdw__sd_condition(sdw_diffusion *d, const sdw_request *req, int B, void **cond,
                             bool *truncated, sdw_error *err);
void sdw__sd_cond_free(void *cond);

/* sd_denoise.c: the core's denoise hook (one UNet call, with the ControlNets' residuals) and
 * the hooks table. */
extern const sdw_diffusion_ops sdw__sd_hooks;

/* controlnet_run.c: the request's ControlNets (sdw_request.controls) into c: each resolved
 * (by name in m->controlnet_dir, or by path), loaded into a slot unless it is (checked against
 * the model: SDW_E_SHAPE naming the mismatch for a ControlNet of another base), its control
 * image resized to the request's size and embedded. On failure c holds what was made (freed by
 * sdw__sd_controls_free). */
sdw_status sdw__sd_controls_prepare(sd_model *m, const sdw_request *req, sd_cond *c,
                                    sdw_error *err);
void sdw__sd_controls_free(sd_cond *c);
/* Whether control j acts in denoiser call k of c's pass (diffusers' controlnet_keep). */
bool sdw__sd_control_active(const sd_cond *c, int j, int k);
/* The summed residuals of the active controls for call k, B x h x w latents: x [B, C, h, w] NCHW
 * (the latents the UNet gets; an inpainting UNet's extra channels are not the ControlNet's);
 * *down (n_skips buffers) and *mid are new (sdw__sd_residuals_free), or NULL when no control
 * acts in this call. Taps stepNN.controlnet.* as the reference names them. */
void sdw__sd_control_residuals(const sd_model *m, const sd_cond *c, const float *x, int B, int h,
                               int w, float t, int k, float ***down, float **mid);
void sdw__sd_residuals_free(const sd_model *m, float **down, float *mid);
/* Frees every loaded ControlNet (before the model's backend goes). */
void sdw__sd_controlnets_unload(sd_model *m);

/* sd_demo.c */
sdw_status sdw__sd_load_demo(const sdw_load_options *opts, sdw_image_model **out, sdw_error *err);

#endif
