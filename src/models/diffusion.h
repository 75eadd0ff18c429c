/* models/diffusion.h — the generation run every latent-diffusion family shares, and the hooks a
 * family plugs into it.
 *
 *   typedef struct my_model { sdw_diffusion d; ...weights, encoders... } my_model;
 *   static const sdw_diffusion_ops my_hooks = {.condition = ..., .cond_free = ...,
 *                                              .denoise = ...};
 *   if (sdw_diffusion_init(&m->d, &my_model_ops, path, opts, &err)) goto fail; // .generate is
 *                                                                        // sdw_diffusion_generate
 *   sdw_diffusion_weights(&m->d, ws);  // each component's weights, before binding
 *   m->d.hooks = &my_hooks;
 *   ...fill m->d's schedule, latent space, capabilities;
 *   if (sdw_diffusion_finish(&m->d, opts, &err)) goto fail;
 *
 * The core owns what is the same for every family: the seed policy (a random seed when < 0),
 * the noise draws (one generator, in the reference pipelines' order), image-to-image and
 * inpainting (init image and mask preprocessing, VAE encoding, the strength's start, the
 * per-step blend of inpainting, the 9-channel input of inpainting denoisers), the sampler loop,
 * classifier-free guidance, previews, cancellation, decoding, per-stage timings and the result
 * info. A family supplies only what is its own: its conditioning (text encoders), one denoiser
 * call, its latent space (an sdw_vae with its scaling and shift, a preview projection), its
 * schedule and its capabilities.
 *
 * Latents live in NCHW [C, h, w] (torch order: every random draw and sampler update is
 * elementwise over the same order as the references). A denoiser that works on tokens (FLUX's
 * 2x2 packing) converts at its own boundary.
 *
 * Thread safety: a model runs one generation at a time (sdw_image_model's contract).
 */
#ifndef SDW_MODELS_DIFFUSION_H
#define SDW_MODELS_DIFFUSION_H

#include "sdw/image_model.h"

#include "io/safetensors.h"
#include "nn/taesd.h"
#include "nn/vae.h"
#include "sampling/scheduler.h"

#define SDW_DIFFUSION_MAX_FILES 8

typedef struct sdw_diffusion sdw_diffusion;

/* How the request's guidance reaches the denoiser. */
typedef enum sdw_guidance_kind {
    /* Classifier-free guidance: with guidance > 1 every call runs the batch [uncond, cond] and
     * mixes out = uncond + g·(cond − uncond) (Stable Diffusion, SD3). */
    SDW_GUIDANCE_CFG = 0,
    /* The guidance value is an input of the denoiser (FLUX.1 dev's guidance embedding): one
     * batch-1 call per step, no negative prompt. */
    SDW_GUIDANCE_EMBEDDED,
} sdw_guidance_kind;

/* Test hook: called with every stage tensor the reference records, under its name
 * ("latents_init_noise", "stepNN.latents", "noise.KK", "vae.decode.out", and the family's own
 * "te.*", "stepNN.unet.*" ...), in the reference's layout. data is borrowed for the call. */
typedef void (*sdw_tap_fn)(void *user, const char *name, const float *data, int n_dims,
                           const int64_t *shape);

/* What a family plugs in. Every hook runs on the generating thread. */
typedef struct sdw_diffusion_ops {
    /* The conditioning of one request (its text encoders). B = 2 under classifier-free
     * guidance (batch [uncond, cond]), else 1. On success *cond is the family's own object and
     * *truncated says whether a prompt was cut to an encoder's window. */
    sdw_status (*condition)(sdw_diffusion *d, const sdw_request *req, int B, void **cond,
                            bool *truncated, sdw_error *err);
    void (*cond_free)(void *cond); /* NULL ok */
    /* One denoiser call: x [B, Cin, h, w] NCHW (the sampler-scaled latents; for an inpainting
     * denoiser followed by mask | masked-image latents), t the sampler's timestep, k the
     * number of calls made before this one (the reference's stepNN, for taps); out
     * [B, C, h, w] NCHW, C the latent channels. */
    sdw_status (*denoise)(sdw_diffusion *d, const void *cond, const float *x, int B, int h, int w,
                          float t, int k, float *out, sdw_error *err);
    /* (optional) Once per sampling pass, after its initial latents and before its first
     * denoiser call: the pass's calls will be numbered k0 .. k0 + n - 1 in denoise (n is
     * diffusers' len(timesteps) after the strength's start: the calls of the pass). For what
     * depends on the pass's progress, kept in cond (ControlNet's control_guidance_start/end
     * windows). */
    sdw_status (*begin_pass)(sdw_diffusion *d, void *cond, int k0, int n, sdw_error *err);
} sdw_diffusion_ops;

/* The shared part of a model. Embedded first in every family's model struct. */
struct sdw_diffusion {
    sdw_image_model base; /* first: the public interface (base.ops->generate =
                           * sdw_diffusion_generate) */
    const sdw_diffusion_ops *hooks;
    char variant[32];
    sdw_capabilities caps;
    const char *samplers[16]; /* caps.samplers' storage */

    sdw_st_file *files[SDW_DIFFUSION_MAX_FILES]; /* every mapped file; weights are views */
    int n_files;

    /* Schedule. */
    sdw_scheduler_config sched; /* the model's scheduler config (or its family's default) */
    sdw_guidance_kind guidance;
    int patch; /* latent pixels per denoiser token side (FLUX: 2): the image's token count for
                * dynamically shifted flow schedules is (h / patch) · (w / patch) */

    /* Latent space: latents = (vae posterior − shift) · scaling; decode z = latents / scaling
     * + shift. The VAE is the family's (borrowed here). */
    sdw_vae *vae;
    float vae_scaling, vae_shift;
    int vae_factor;      /* pixels per latent */
    int latent_channels; /* C */
    int denoiser_in_channels; /* C, or 2C + 1 for an inpainting denoiser */
    /* Preview: RGB = bias + Σ_c latent_c · rgb[c] (ComfyUI's latent_rgb_factors), per latent
     * pixel, mapped from [-1, 1]; NULL = a grey view of the first channel. */
    const float (*preview_rgb)[3];
    const float *preview_bias; /* [3] or NULL */
    int vae_sample_size; /* the VAE config's sample_size (px): the tile of tiled decoding; 0 =
                          * the default image size */
    /* Optional tiny autoencoder (--taesd), loaded by sdw_diffusion_finish: previews decode with
     * it, and requests may ask it for the final image (owned; freed by sdw_diffusion_deinit). */
    sdw_taesd *taesd;
    sdw_weights *w_taesd[2]; /* its decoder's and encoder's weights */

    int n_threads;
    sdw_precision precision; /* resolved: what every component was packed for */
    struct sdw_backend *backend; /* the model's compute backend (owned): every component's
                                  * layers pack on it (sdw_diffusion_weights) */

    sdw_tap_fn tap;
    void *tap_user;

    /* LoRA (models/lora.h): the components the family declared adaptable and the files packed
     * for them (owned; NULL when it declared none: caps.lora false), and the model's copy of
     * sdw_load_options.lora_dir (caps.lora_dir; owned, NULL = none). */
    struct sdw_lora_host *lora;
    char *lora_dir;
};

/* Starts a model: d's interface (ops), threads and resolved precision from opts (logged), and
 * its compute backend. path: the model's file or folder; precision auto times its dominant
 * products on this CPU (nn/backend_cpu.h; NULL: a model without files, e.g. the demo). Call
 * first; on failure call sdw_diffusion_deinit as usual. */
sdw_status sdw_diffusion_init(sdw_diffusion *d, const sdw_image_model_ops *ops, const char *path,
                              const sdw_load_options *opts, sdw_error *err);
/* Readies a component's weights before binding: d's precision and backend. */
void sdw_diffusion_weights(const sdw_diffusion *d, sdw_weights *ws);
/* Warns when a component's weights (NULL: none loaded) hold float tensors nothing was bound
 * from — "<what>: N tensors were not used (names...)": a file for a variant the family does not
 * know, or a name map gap. After binding. */
void sdw_diffusion_warn_unused(const char *what, const sdw_weights *ws);

struct sdw_lora_part;
/* Declares a component requests may adapt with LoRAs (models/lora.h: its names in LoRA files,
 * its weights): after its layers are bound, before sdw_diffusion_finish (which then sets
 * caps.lora and takes opts->lora_dir). part is copied; its strings and weights must outlive d. */
void sdw_diffusion_lora_part(sdw_diffusion *d, const struct sdw_lora_part *part);

/* The shared generate (the family's ops table points at it): req resolved by the dispatcher. */
sdw_status sdw_diffusion_generate(sdw_image_model *m, const sdw_request *req,
                                  sdw_progress_fn progress, void *user, sdw_image *out,
                                  sdw_result_info *info, sdw_error *err);

/* Fills what follows from the schedule: the sampler list (caps.samplers), the default sampler
 * when the family left it NULL (the scheduler config's class), the strength rule; and loads
 * what every family may add from opts (opts->taesd: a tiny autoencoder for the model's latent
 * space, refused with a message when it is for another one; opts->lora_dir: the LoRA folder,
 * which must be a folder). Call last, after the family filled caps, sched and the latent
 * space. */
sdw_status sdw_diffusion_finish(sdw_diffusion *d, const sdw_load_options *opts, sdw_error *err);

/* Maps one more file into d (closed by sdw_diffusion_deinit): a .safetensors file, or a
 * sharded checkpoint's *.safetensors.index.json. */
sdw_status sdw_diffusion_open_file(sdw_diffusion *d, const char *path, sdw_st_file **out,
                                   sdw_error *err);
/* Opens a diffusers component's weights into d: <root>/<sub>/<stem>.safetensors, its
 * .fp16.safetensors variant, or the shards of <stem>.safetensors.index.json (large models);
 * a <stem>.bin there is a pickle, refused with the explanation. SDW_E_NOT_FOUND naming the
 * expected file when there is none. */
sdw_status sdw_diffusion_open_component(sdw_diffusion *d, const char *root, const char *sub,
                                        const char *stem, sdw_st_file **out, sdw_error *err);
/* Frees the core's parts (the TAESD, then the backend) and closes d's files. The family frees
 * its own parts (every weights object bound on the backend) first. */
void sdw_diffusion_deinit(sdw_diffusion *d);

/* Test hook: m must be a model built on this core. fn NULL removes the tap. */
void sdw_diffusion_set_tap(sdw_image_model *m, sdw_tap_fn fn, void *user);
/* Taps name (no-op without a tap): data with n_dims int64_t dimensions following. */
void sdw_diffusion_tap(const sdw_diffusion *d, const char *name, const float *data, int n_dims,
                       ...);

/* ---- diffusion.c: the passes of a run (the hires fix runs two) ---- */

struct sdw_sampler;
struct sdw_rng;

/* What the passes of one sdw_diffusion_generate share. */
typedef struct sdw_run {
    int64_t seed; /* every pass seeds its own generator with it */
    sdw_progress_fn progress;
    void *user;
    int calls_after;   /* denoiser calls the later passes will make (the progress' total) */
    int calls_planned; /* calls of the passes begun */
    int n_calls;       /* calls finished over every pass: the progress' step, the taps' stepNN */
    int n_noise;       /* noise.KK taps so far */
    bool interrupted;  /* an interrupt ended a pass */
    bool truncated;    /* a prompt was cut to an encoder's window */
    double strength;   /* the init image's strength (the first pass) */
    double seconds_encode, seconds_image_encode, seconds_denoise;
    double seconds_first_call; /* the run's first denoiser call (part of seconds_denoise) */
    sdw_image preview; /* the previews' buffer (freed by the run) */
} sdw_run;

/* Image-to-image from given latents (the hires fix's second pass), as A1111's
 * sample_img2img with the steps given (setup_img2img_steps): the last `steps` steps of a
 * schedule of `schedule` run from the latents noised to the first of them
 * (sdw_sampler_add_noise) with the first draw of the pass's generator. */
typedef struct sdw_latent_start {
    const float *latents; /* [C, h, w] NCHW clean scaled latents at the request's size */
    int steps, schedule;  /* 1 <= steps <= schedule */
} sdw_latent_start;

/* The sampler of req with `steps` steps for latents h x w. */
sdw_status sdw__diffusion_sampler(const sdw_diffusion *d, const sdw_request *req, int steps, int h,
                                  int w, struct sdw_sampler **out, sdw_error *err);
/* One sampling pass at req's size: the family's conditioning, a generator seeded with
 * run->seed, the initial latents (from = NULL: noise, or req's init image; else from the given
 * latents) and the denoising loop with previews and progress (steps counted over the run). On
 * success *latents is new [C, h, w] NCHW (an interrupt leaves the last finished step's). */
sdw_status sdw__diffusion_pass(sdw_diffusion *d, const sdw_request *req,
                               const sdw_latent_start *from, sdw_run *run, float **latents,
                               sdw_error *err);

/* ---- diffusion_hires.c: AUTOMATIC1111's hires fix (sdw_request.hires, resolved) ---- */

/* The denoiser calls the second pass of req will make. */
sdw_status sdw__hires_calls(const sdw_diffusion *d, const sdw_request *req, int *calls,
                            sdw_error *err);
/* The second pass after the first: *latents (the first pass's, [C, H/f, W/f]) enlarged by
 * req->hires.upscaler and cropped to the second size, then sdw__diffusion_pass from them at
 * that size; on success *latents is replaced by the second pass's. Taps "hires.latents" (the
 * enlarged clean latents) and, for the image upscalers, "hires.image" (the resized picture,
 * [1, 3, H, W] of 0..255). */
sdw_status sdw__hires_pass(sdw_diffusion *d, const sdw_request *req, sdw_run *run,
                           float **latents, sdw_error *err);
/* torch.nn.functional.interpolate(x, size=(oh, ow), mode, align_corners=False, antialias) on
 * x [C, h, w] NCHW float32 for a latent upscaler u (the modes of A1111's latent_upscale_modes),
 * into out [C, oh, ow]: torch's CPU kernels' index and weight rules, float32 arithmetic. */
void sdw__latent_upscale(const float *x, int C, int h, int w, int oh, int ow, sdw_upscaler u,
                         float *out);
/* A1111's images.resize_image(0, im, w, h, upscaler) for an image upscaler u (NONE, LANCZOS,
 * NEAREST) on RGB im: Pillow's resizes (sdw_image_resize; NEAREST: Pillow's nearest
 * neighbour). *out is new. */
void sdw__image_upscale(const sdw_image *im, int w, int h, sdw_upscaler u, sdw_image *out);

/* ---- diffusion_codec.c: the latent codecs (used by sdw_diffusion_generate) ---- */

/* Loads the TAESD at path (see sdw_load_options.taesd) into d, checking it fits d's latents. */
sdw_status sdw__codec_load_taesd(sdw_diffusion *d, const char *path, sdw_error *err);
/* Whether this request's image (W x H) is decoded / encoded in tiles, and the tiles: the VAE
 * config's sample_size, else the model's default image size (diffusers' single-file rule). */
bool sdw__codec_tiled(const sdw_diffusion *d, const sdw_request *req, int W, int H);
sdw_vae_tiling sdw__codec_tiling(const sdw_diffusion *d);
/* Decodes latents [C, h, w] NCHW (destroyed) into out (RGB8) with the request's decoder,
 * tiled when asked: z = latents / scaling + shift of that decoder. *tiled / *taesd say what
 * ran. Taps vae.decode.z and vae.decode.out. */
sdw_status sdw__codec_decode(const sdw_diffusion *d, const sdw_request *req, float *latents,
                             int h, int w, sdw_image *out, bool *tiled, bool *taesd,
                             sdw_error *err);
/* A preview of latents [C, h, w] NCHW into img (data reallocated as needed): the TAESD's
 * decoded image when one is loaded, else the latent-to-RGB projection at latent resolution. */
void sdw__codec_preview(const sdw_diffusion *d, const float *latents, int h, int w,
                        sdw_image *img);

/* ---- diffusion_image.c: image-to-image and inpainting (used by sdw_diffusion_generate) ---- */

typedef struct sdw_image_job {
    bool inpaint;          /* a mask is in play (given, or implied by a 9-channel denoiser) */
    bool blend;            /* 4-channel inpainting: re-noised originals outside the mask */
    bool tiled;            /* the VAE encodes in tiles (sdw_request.vae_tiling) */
    double strength;
    int n_noise, n_encode; /* noise.KK / vae.encode.N taps so far */
    float *noise;          /* [C, h, w] prepare_latents' noise */
    float *image_latents;  /* [C, h, w] scaled init latents, or NULL when not needed */
    float *mask;           /* [h, w] latent-resolution mask, 1 = repaint (inpaint) */
    float *masked_latents; /* [C, h, w] masked image latents (9-channel denoiser) */
} sdw_image_job;

/* Preprocesses req's init image (and mask), sets the sampler's first call from the strength,
 * draws and encodes as the reference and writes the initial latents [C, h, w]. On failure job
 * holds what was allocated (deinit it either way). */
sdw_status sdw__image_prepare(const sdw_diffusion *d, const sdw_request *req,
                              struct sdw_sampler *sampler, struct sdw_rng *rng, float *latents,
                              sdw_image_job *job, sdw_error *err);
/* An inpainting denoiser's input beyond the latents: out [1 + C, h, w] = mask | masked latents. */
void sdw__image_denoiser_extra(const sdw_image_job *job, int C, int h, int w, float *out);
/* After the sampler step of call i: 4-channel inpainting's blend (no-op otherwise). */
void sdw__image_after_step(const sdw_image_job *job, const struct sdw_sampler *sampler, int i,
                           float *latents, size_t n_lat, size_t hw);
void sdw__image_job_deinit(sdw_image_job *job);

#endif
