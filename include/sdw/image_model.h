/* sdw/image_model.h — the one interface every model family implements.
 *
 *   sdw_image_model *m;
 *   if (sdw_model_load("models/sd15", &opts, &m, &err) != SDW_OK) return err.code;
 *   sdw_request req = sdw_request_default(sdw_model_capabilities(m));
 *   req.prompt = "a photo of a cat";
 *   sdw_image img = {0};
 *   if (sdw_model_generate(m, &req, on_progress, NULL, &img, &err) == SDW_OK) ...;
 *   sdw_image_free(&img); sdw_model_destroy(m);
 *
 * The engine, server and CLI only ever see this interface; a family is a folder under
 * src/models/ plus one line in src/models/registry.c. A loaded model is not thread-safe:
 * one generate() at a time (the engine runs one worker thread per model). The query
 * functions (type, variant, capabilities, info) are safe from any thread.
 */
#ifndef SDW_IMAGE_MODEL_H
#define SDW_IMAGE_MODEL_H

#include "sdw/image.h"
#include "sdw/precision.h"
#include "sdw/rng.h"
#include "sdw/status.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A family-specific numeric request option the model declares (sdw_capabilities.params):
 * SDXL's micro-conditioning sizes, FLUX's T5 sequence length, ... Front ends pass them through
 * by name without knowing what they mean. */
typedef struct sdw_param_spec {
    const char *name;  /* "max_sequence_length" */
    double min, max;   /* accepted range */
    double def;        /* the value when the request does not set it */
    bool integer;      /* only whole numbers */
    const char *help;  /* one line for help texts and /v1/models */
} sdw_param_spec;

/* One value of such an option in a request (name borrowed for the call). */
typedef struct sdw_param {
    const char *name;
    double value;
} sdw_param;

typedef struct sdw_capabilities {
    bool txt2img, img2img, inpainting, lora, controlnet;
    bool supports_guidance;        /* false for distilled models (Turbo, schnell) */
    bool supports_negative_prompt;
    int default_width, default_height, default_steps;
    float default_guidance;
    int size_multiple, min_size, max_size; /* pixel constraints, checked before a job runs */
    int max_steps;
    const char *const *samplers;   /* NULL-terminated accepted sampler names */
    const char *default_sampler;
    const char *const *schedulers; /* NULL-terminated: "default", "karras", ... */
    /* How image-to-image turns strength into steps, as the family's reference pipeline does:
     * false = int(steps x strength) steps run (Stable Diffusion), so small strengths run none
     * and are refused; true = the run starts at int(steps - steps x strength) (the
     * flow-matching pipelines: SD3, FLUX), so any strength > 0 runs at least one step. */
    bool strength_rounds_start;
    const sdw_param_spec *params; /* the family's request options, {NULL}-terminated, or NULL */
    bool taesd; /* a tiny autoencoder is loaded: previews and sdw_request.decoder TAESD */
    /* The folder ControlNet names resolve in (sdw_load_options.controlnet_dir; the model's
     * copy), or NULL: requests may then name ControlNets by path only. Set only where
     * controlnet is true. */
    const char *controlnet_dir;
    /* The folder LoRA names resolve in (sdw_load_options.lora_dir; the model's copy), or NULL:
     * requests may then apply LoRAs by path only. Set only where lora is true. */
    const char *lora_dir;
} sdw_capabilities;

/* How the final image is decoded (sdw_request.vae_tiling). */
typedef enum sdw_vae_tiling_mode {
    SDW_TILING_AUTO = 0, /* tiled when the image is larger than SDW_TILING_AUTO_PIXELS */
    SDW_TILING_OFF,
    SDW_TILING_ON, /* diffusers' enable_vae_tiling(): overlapping tiles, blended seams */
} sdw_vae_tiling_mode;
/* Above this many pixels an untiled VAE decode needs gigabytes of scratch (SD's full-resolution
 * stages: ~0.55 GB per 512x512 in f32): AUTO tiles, and says so in the result info. */
#define SDW_TILING_AUTO_PIXELS (2048 * 2048)

typedef enum sdw_decoder {
    SDW_DECODER_VAE = 0, /* the model's autoencoder */
    SDW_DECODER_TAESD,   /* the loaded tiny autoencoder: a fast draft of the image */
} sdw_decoder;
/* "vae" / "taesd" (static); parse: SDW_E_INVALID_ARG naming the value, *out untouched. */
const char *sdw_decoder_str(sdw_decoder d);
sdw_status sdw_decoder_parse(const char *s, sdw_decoder *out, sdw_error *err);

/* How the hires fix enlarges the first pass (sdw_hires.upscaler): AUTOMATIC1111's built-in
 * upscalers, named as it names them. The latent ones resize the latents with
 * torch.nn.functional.interpolate (align_corners False), as A1111's latent_upscale_modes; the
 * others decode the first pass, resize the picture with Pillow and encode it again. Neural
 * upscalers (ESRGAN, SwinIR, ...) are models of their own, not part of this worker. */
typedef enum sdw_upscaler {
    SDW_UPSCALE_LATENT = 0,                 /* "Latent": bilinear (A1111's default) */
    SDW_UPSCALE_LATENT_ANTIALIASED,         /* "Latent (antialiased)": bilinear, antialias */
    SDW_UPSCALE_LATENT_BICUBIC,             /* "Latent (bicubic)" */
    SDW_UPSCALE_LATENT_BICUBIC_ANTIALIASED, /* "Latent (bicubic antialiased)" */
    SDW_UPSCALE_LATENT_NEAREST,             /* "Latent (nearest)": torch's legacy nearest */
    SDW_UPSCALE_LATENT_NEAREST_EXACT,       /* "Latent (nearest-exact)" */
    SDW_UPSCALE_NONE,    /* "None": the picture, one Lanczos resize to the second size */
    SDW_UPSCALE_LANCZOS, /* "Lanczos": A1111's Lanczos upscaler (by the scale, to a multiple of
                          * 8, then to the size: Lanczos each time) */
    SDW_UPSCALE_NEAREST, /* "Nearest": the same with a nearest-neighbour first step */
    SDW_UPSCALE_COUNT
} sdw_upscaler;
/* A1111's name ("Latent (bicubic antialiased)"; static). */
const char *sdw_upscaler_str(sdw_upscaler u);
/* Whether u resizes the latents (the first six) rather than the decoded picture. */
bool sdw_upscaler_is_latent(sdw_upscaler u);
/* An A1111 name, compared without case, spaces and punctuation ("latent-bicubic-antialiased"
 * and "Latent (bicubic antialiased)" are the same). SDW_E_INVALID_ARG naming the value and the
 * choices, *out untouched; a neural upscaler's name is answered as one not installed. */
sdw_status sdw_upscaler_parse(const char *s, sdw_upscaler *out, sdw_error *err);

/* AUTOMATIC1111's "hires fix" (sdw_request.hires): text-to-image at the request's size, the
 * result enlarged (the upscaler), then image-to-image at the larger size: the steps of the
 * second pass are the last `steps` of a schedule of int(steps / min(strength, 0.999)), its
 * noise the first draw of a generator seeded with the request's seed (A1111's
 * sample_hr_pass). The first pass's size is what A1111 calls the image's "Size". */
typedef struct sdw_hires {
    bool enable;
    double scale;                    /* hr_scale: second size = int(first size x scale);
                                      * 0 = 2 (A1111's default) */
    int resize_width, resize_height; /* hr_resize_x / hr_resize_y: the second size instead of
                                      * the scale (0 = follow the other side's aspect); both
                                      * with another aspect: scaled to cover, middle cropped */
    sdw_upscaler upscaler;           /* LATENT (0) by default */
    int steps;                       /* hr_second_pass_steps: 0 = the request's steps */
    double strength;                 /* denoising_strength, in (0, 1]; < 0 = 0.75 */
    /* Set by sdw_request_resolve, from the above and the model's sizes: */
    int width, height;       /* the final image's size (rounded down to caps.size_multiple) */
    int up_width, up_height; /* what the first pass is enlarged to before the middle is cropped
                              * to width x height: A1111's hr_upscale_to (equal to
                              * width x height up to that rounding unless both resize sides
                              * were given with another aspect) */
} sdw_hires;
#define SDW_HIRES_DEFAULT_SCALE 2.0
#define SDW_HIRES_DEFAULT_STRENGTH 0.75

/* One LoRA a request applies (sdw_request.loras; sdw/lora.h for names and the folder). */
typedef struct sdw_lora_ref {
    const char *name; /* a file of the model's LoRA folder (caps.lora_dir): its stem ("detail")
                       * or its path relative to the folder ("styles/detail[.safetensors]");
                       * never leads outside the folder */
    const char *path; /* instead of name: a .safetensors file anywhere. For front ends acting for
                       * the machine's own user (the CLI's --lora FILE:M); a server sets name */
    float multiplier; /* m in W + m·(alpha/rank)·up·down; 1 = the LoRA as trained */
} sdw_lora_ref;

/* One ControlNet a request applies (sdw_request.controls; sdw/controlnet.h for names and the
 * folder). Start from sdw_control_default(). */
typedef struct sdw_control {
    const char *name; /* a ControlNet of the model's ControlNet folder (caps.controlnet_dir): the
                       * folder's name or file's stem ("canny"), or its path relative to the
                       * folder; never leads outside the folder. Loaded on first use and kept
                       * with the model */
    const char *path; /* instead of name: a diffusers ControlNetModel folder (or the
                       * diffusion_pytorch_model.safetensors in one), or an original-layout
                       * .safetensors file, anywhere. For front ends acting for the machine's own
                       * user (the CLI's --control-net PATH); a server sets name */
    const sdw_image *image; /* the control image, borrowed for the call: any size, 1-4 channels
                             * (grey is replicated, alpha dropped), resized to the output size
                             * (Lanczos) as diffusers' control image processor does, values /
                             * 255. Used as given: a ControlNet wants its own preprocessor's output
                             * (an edge map for canny, a depth map for depth, ...) */
    float scale; /* controlnet_conditioning_scale: the residuals' weight, in [0,
                  * SDW_CONTROL_MAX_SCALE]; 1 = as trained, 0 = no effect */
    /* control_guidance_start / _end: the part of the sampling the ControlNet acts in, as
     * fractions of the denoiser calls: call i of n runs it when i/n >= start and
     * (i+1)/n <= end (diffusers' controlnet_keep). 0 <= start < end <= 1; double, because the
     * reference compares Python floats. */
    double start, end;
} sdw_control;
#define SDW_MAX_CONTROLS 8
#define SDW_CONTROL_MAX_SCALE 10.0f
/* scale 1, start 0, end 1, no ControlNet and no image. */
sdw_control sdw_control_default(void);

/* The unified request. Strings are borrowed for the duration of the call. */
typedef struct sdw_request {
    const char *prompt;
    const char *negative_prompt; /* NULL or "" = none */
    /* How the text encoders read the prompts (text/clip_prompt.h has the rules):
     * false = as diffusers' pipelines do, one 77-token window (the native API's and the CLI's
     * default); true = AUTOMATIC1111's syntax — (word) x1.1, ((word)), (word:1.3), [word]
     * /1.1, \( for a literal bracket, the weighted encoding rescaled to its mean, BREAK, and
     * prompts past 75 tokens in 75-token chunks joined along the sequence (the A1111 API's
     * default). Either way a textual-inversion embedding's name (sdw_load_options
     * .embeddings_dir) stands for its vectors. */
    bool prompt_syntax;
    /* 0 = the model's own text-encoder state; N >= 1 = the hidden state N layers from the end
     * of each CLIP encoder as loaded, never closer to the output than the model's own (which
     * is N = 1 for SD 1.x/2.x, N = 2 for SDXL and SD3), with the final layer norm where the
     * model's own state has it: A1111's CLIP_stop_at_last_layers and sd.cpp's --clip-skip on
     * SD 1.x; diffusers' clip_skip is N - 1 (SD) or N - 2 (SDXL, SD3). No effect on FLUX,
     * whose CLIP gives only its pooled output. At most SDW_MAX_CLIP_SKIP; beyond the encoder's
     * layers the run fails naming them. */
    int clip_skip;
    int width, height;           /* pixels; 0 = model default */
    int steps;                   /* 0 = model default */
    float guidance;              /* < 0 = model default. Classifier-free guidance scale (<= 1
                                  * runs no unconditional pass), or for a guidance-embedding
                                  * model (FLUX.1 dev) the embedded guidance value */
    int64_t seed;                /* < 0 = random (the chosen seed is reported in the result) */
    const char *sampler;         /* NULL = model default */
    const char *scheduler;       /* NULL or "default" = the sampler's own; "karras" */
    sdw_rng_kind rng;
    int preview_every; /* > 0: pass a cheap preview to the progress callback every N steps */

    /* Image-to-image and inpainting. The mode follows from the fields: no init image =
     * text-to-image; init image = image-to-image; init image + mask = inpainting. */
    const sdw_image *init_image; /* NULL or borrowed for the call: any size, 1-4 channels
                                  * (grey, grey+alpha, RGB, RGBA); alpha is ignored, as
                                  * diffusers' load_image (convert("RGB")) drops it. When its
                                  * size differs from width x height it is resized (Lanczos, as
                                  * diffusers' VaeImageProcessor); width/height 0 = its size
                                  * rounded down to caps.size_multiple. */
    const sdw_image *mask;       /* NULL or borrowed: same size as init_image, 1-4 channels.
                                  * White = repaint, black = keep; grey levels are binarised as
                                  * diffusers does (Pillow luma >= 128 after resizing repaints). */
    double strength;             /* with an init image, 0 < strength <= 1: how far the image is
                                  * noised (1 = completely); < 0 = default 0.75. Without an
                                  * init image it must be <= 0 (resolved to 0). double, because
                                  * the step count int(steps * strength) is computed in double
                                  * as the reference does. Only steps*strength steps run. */

    /* Family-specific options (caps.params), by name; borrowed for the call. Unknown names
     * and out-of-range values are refused by sdw_request_resolve. */
    const sdw_param *params;
    int n_params;

    bool profile; /* measure this run's forward passes op by op (sdw_result_info.profile) */
    sdw_vae_tiling_mode vae_tiling; /* AUTO (0), OFF, ON: tiled decode / image-to-image encode */
    sdw_decoder decoder;            /* VAE (0), or TAESD (needs caps.taesd) */
    sdw_hires hires; /* the hires fix (text-to-image only, needs caps.img2img); .enable false =
                      * off, every other field ignored */

    /* Stopping the run from another thread: NULL, or a flag (sdw_stop values) the caller may
     * set while the run goes, borrowed for the call. The run polls it between blocks of every
     * denoiser call and between attention tiles, so a stop takes effect within a fraction of a
     * step: SDW_STOP_CANCEL ends the run with SDW_CANCELLED; SDW_STOP_INTERRUPT ends the
     * sampling and decodes the latents of the last finished step (success, with
     * sdw_result_info.interrupted: AUTOMATIC1111's interrupt). */
    const atomic_int *stop;

    /* Set by sdw_request_resolve and nothing else: the capabilities the request was resolved
     * against (NULL = not resolved). sdw_model_generate runs a request resolved against its
     * model's capabilities as it is instead of resolving it again, so a front end resolves once
     * (to fail fast) and generates. Change no field of a resolved request but seed,
     * preview_every and stop (which every value passes), or resolve it again. */
    const sdw_capabilities *resolved;

    /* LoRAs for this run (needs caps.lora), applied with their multipliers; the prompt's
     * <lora:NAME[:M]> tags (sdw/lora.h) add to them and are removed from the text the encoders
     * see. Borrowed for the call. After the run the model is the base model again. */
    const sdw_lora_ref *loras;
    int n_loras;

    /* ControlNets for this run (needs caps.controlnet), their residuals summed (diffusers'
     * MultiControlNetModel); under classifier-free guidance each runs on both halves of the
     * batch. Borrowed for the call; up to SDW_MAX_CONTROLS. Text-to-image without an output
     * size takes the first control image's size (rounded down to caps.size_multiple), as the
     * reference pipeline does. */
    const sdw_control *controls;
    int n_controls;
    /* diffusers' guess_mode: under classifier-free guidance the ControlNets see only the
     * conditional half (the unconditional half gets no residuals), their residuals scaled from
     * 0.1 (the first skip) to 1 (the mid block). A ControlNet trained with pooled conditions
     * (global_pool_conditions, e.g. shuffle) always runs so, as in diffusers. */
    bool control_guess_mode;
} sdw_request;

#define SDW_DEFAULT_STRENGTH 0.75
#define SDW_MAX_CLIP_SKIP 48 /* deeper than any CLIP text encoder (OpenCLIP-bigG: 32 layers) */

/* Values of sdw_request.stop. */
enum { SDW_STOP_NONE = 0, SDW_STOP_INTERRUPT = 1, SDW_STOP_CANCEL = 2 };

/* A request with every field at "model default". */
sdw_request sdw_request_default(void);

/* Fills unset fields from caps and checks everything against them: the one place that bounds
 * every field of a request (front ends add only their own policy, such as a server's limits).
 * On success *resolved is complete (no zeros, no NULLs except negative prompt, init image and
 * mask; seed still < 0 if random; strength > 0 exactly when there is an init image; params as
 * given, every one declared by caps and in range) and resolved->resolved is caps. On failure a
 * message names the field and the accepted range, or the mode the model cannot run
 * (SDW_E_UNSUPPORTED). Resolving a resolved request gives it back unchanged. */
sdw_status sdw_request_resolve(const sdw_request *req, const sdw_capabilities *caps,
                               sdw_request *resolved, sdw_error *err);

/* The value of option `name` in req, else its declared default in caps; NAN when caps does not
 * declare it (a programmer error in a family). */
double sdw_request_param(const sdw_request *req, const sdw_capabilities *caps, const char *name);

/* Per-step progress. Fires on the thread running generate(), after each denoising step.
 * preview is NULL except every req->preview_every steps (and the last), when it is a small
 * latent-resolution RGB approximation (borrowed for the call; a projection of the latents, no
 * VAE decode). Return false to cancel: generate() then returns SDW_CANCELLED. */
typedef bool (*sdw_progress_fn)(void *user, int step, int total, const sdw_image *preview);

/* One row of a run's profile (sdw_request.profile): one kind of op within one stage. */
typedef struct sdw_profile_entry {
    const char *stage; /* "other", "text" (text encoders), "unet" (the denoiser), "vae"; static */
    const char *op;    /* "conv 3x3", "linear", "attention", "group norm", ...; static */
    int64_t calls;
    double seconds; /* wall time, summed over the calls */
    double gflop;   /* matrix-product work of the calls; 0 for ops that count none */
} sdw_profile_entry;
#define SDW_PROFILE_MAX_ENTRIES 48

/* What generate() reports besides the image. */
typedef struct sdw_result_info {
    int64_t seed;       /* the seed actually used */
    int width, height, steps;
    float guidance;
    char sampler[32], scheduler[32];
    bool prompt_truncated; /* a prompt was longer than the text encoder's window */
    /* Wall seconds per stage: conditioning (text encoders), denoising loop, decoding. */
    double seconds_encode, seconds_denoise, seconds_decode;
    int n_denoiser_calls; /* model calls made (CFG batches count once) */
    /* The first call's share of seconds_denoise: it also pays what a process does once (oneDNN
     * primitives made, scratch memory touched for the first time), so a run's steady rate is
     * (seconds_denoise - seconds_first_call) / (n_denoiser_calls - 1). */
    double seconds_first_call;
    double strength;      /* image-to-image / inpainting strength used; 0 for text-to-image */
    double seconds_image_encode; /* init (and masked) image preparation and VAE encoding,
                                  * not part of seconds_denoise; 0 for text-to-image */
    bool guidance_embedded; /* guidance was the denoiser's input (FLUX.1 dev), not CFG */
    /* With req->profile: the run's ops by stage, one entry per (stage, op) that ran, stages in
     * the order other, text, unet, vae; n_profile = 0 without. */
    int n_profile;
    sdw_profile_entry profile[SDW_PROFILE_MAX_ENTRIES];
    /* The sampling was stopped early (sdw_request.stop = SDW_STOP_INTERRUPT): the image is the
     * latents after steps_done of n_denoiser_calls calls, decoded. */
    bool interrupted;
    int steps_done; /* denoiser calls whose result the image has (n_denoiser_calls unless
                     * interrupted) */
    bool vae_tiled;     /* decoded in tiles (asked, or AUTO above SDW_TILING_AUTO_PIXELS) */
    bool taesd_decoded; /* decoded by the tiny autoencoder (a draft) */
    /* The hires fix ran its second pass (width, height and steps above are the first pass's,
     * A1111's "Size" and "Steps"; not set when an interrupt stopped the first pass): the image
     * is hires_width x hires_height, after hires_calls more denoiser calls (counted in
     * n_denoiser_calls too), strength the second pass's. */
    bool hires;
    int hires_width, hires_height, hires_calls;
} sdw_result_info;

typedef struct sdw_image_model sdw_image_model;
typedef struct sdw_image_model_ops {
    const char *(*model_type)(const sdw_image_model *m);    /* "stable-diffusion", "flux" */
    const char *(*model_variant)(const sdw_image_model *m); /* "v1", "xl", "dev" ... */
    const sdw_capabilities *(*capabilities)(const sdw_image_model *m);
    /* Resolved request in (sdw_request_resolve done by the dispatcher). On success *out is a
     * new image; on failure *out is untouched. */
    sdw_status (*generate)(sdw_image_model *m, const sdw_request *req, sdw_progress_fn progress,
                           void *user, sdw_image *out, sdw_result_info *info, sdw_error *err);
    /* (optional) Human-readable description: components and parameter counts, one per line. */
    void (*describe)(const sdw_image_model *m, char *buf, size_t cap);
    /* (optional) Token ids of prompt as the model's main text encoder sees them (special
     * tokens included, no padding); *window = how many it reads. */
    sdw_status (*tokenize)(const sdw_image_model *m, const char *prompt, int32_t **ids, int *n,
                           int *window, sdw_error *err);
    void (*destroy)(sdw_image_model *m);
} sdw_image_model_ops;

struct sdw_embeddings; /* text/embeddings.h */

/* Embedded first in every family's model struct. name: what the user loaded (path or "demo"). */
struct sdw_image_model {
    const sdw_image_model_ops *ops;
    char name[256];
    /* The textual-inversion embeddings of sdw_load_options.embeddings_dir (owned; set by
     * sdw_model_load after the family's load, freed by sdw_model_destroy), or NULL. Families
     * hand it to their CLIP encoders (text/clip_prompt.h). */
    struct sdw_embeddings *embeddings;
};

/* ---- loading through the registry ---- */

/* A family-specific load option: "tokenizer" = DIR, "vae" = FILE, "t5xxl" = FILE,
 * "prediction" = "v", ... Each family lists what it takes (registry.h); sdw_model_load refuses
 * an option the loading family does not take, naming it. */
typedef struct sdw_model_option {
    const char *key, *value; /* borrowed for the call */
} sdw_model_option;
#define SDW_MAX_MODEL_OPTIONS 16

typedef struct sdw_load_options {
    int n_threads;           /* 0 = all usable cores (affinity mask, cgroup CPU quota) */
    sdw_precision precision; /* AUTO (0) = bf16 where the CPU has AMX, else f32 */
    /* Single files: a diffusers model folder (or one holding just its config files) that
     * describes the checkpoint, as diffusers' from_single_file(config=...): the architecture
     * details a file cannot record, the schedule, the latent scaling, the tokenizers and any
     * component the file lacks. NULL = the released models'. */
    const char *config_dir;
    /* A tiny autoencoder for the model's latent space (TAESD, taesdxl, taesd3, taef1): a
     * diffusers AutoencoderTiny folder, or the original taesd*_decoder.safetensors (its
     * _encoder sibling is used when present), or a folder holding them. Previews then show a
     * decoded image, and requests may decode with it (sdw_request.decoder). NULL = none. */
    const char *taesd;
    /* Textual-inversion embeddings (`--embeddings-dir`, text/embeddings.h): every .safetensors
     * of the folder (subfolders too) is an embedding whose token is the file's stem, as
     * AUTOMATIC1111 loads them; prompts of any family with CLIP text encoders may use them.
     * Files that are not embeddings are listed as skipped (sdw_model_embeddings), never an
     * error; a folder that cannot be read fails the load. NULL = none. */
    const char *embeddings_dir;
    sdw_model_option options[SDW_MAX_MODEL_OPTIONS];
    int n_options;
    /* The LoRA folder (`--lora-dir`): requests name LoRAs in it (sdw_lora_ref.name, prompt
     * tags). NULL = none. Ignored, with a warning, by a model that takes no LoRAs. */
    const char *lora_dir;
    /* The ControlNet folder (`--controlnet-dir`): requests name ControlNets in it
     * (sdw_control.name; sdw/controlnet.h). NULL = none. Ignored, with a warning, by a model
     * that takes no ControlNets. */
    const char *controlnet_dir;
} sdw_load_options;
sdw_load_options sdw_load_options_default(void);
/* Sets option key to value (replacing an earlier value); SDW_E_INVALID_ARG when the table is
 * full. Both strings are borrowed: they must outlive the load. */
sdw_status sdw_load_options_set(sdw_load_options *o, const char *key, const char *value,
                                sdw_error *err);
/* The value of option key, or NULL. */
const char *sdw_load_option(const sdw_load_options *o, const char *key);

/* Loads path (a diffusers folder or a single .safetensors file) with the first family whose
 * detect() accepts it; path NULL or "demo" loads the built-in demo model. *out is new. */
sdw_status sdw_model_load(const char *path, const sdw_load_options *opts, sdw_image_model **out,
                          sdw_error *err);

/* Thin dispatchers over the ops table. */
const char *sdw_model_type(const sdw_image_model *m);
const char *sdw_model_variant(const sdw_image_model *m);
const sdw_capabilities *sdw_model_capabilities(const sdw_image_model *m);
/* Resolves and validates req (unless sdw_request_resolve did against m's capabilities), then
 * runs the model. info may be NULL. */
sdw_status sdw_model_generate(sdw_image_model *m, const sdw_request *req, sdw_progress_fn progress,
                              void *user, sdw_image *out, sdw_result_info *info, sdw_error *err);
void sdw_model_describe(const sdw_image_model *m, char *buf, size_t cap);
sdw_status sdw_model_tokenize(const sdw_image_model *m, const char *prompt, int32_t **ids, int *n,
                              int *window, sdw_error *err);
/* The embeddings loaded with m (text/embeddings.h: names, vector counts, skipped files), or
 * NULL when it was loaded without an embeddings folder. Borrowed: valid until the model is
 * destroyed; immutable, so safe to read from any thread. */
const struct sdw_embeddings *sdw_model_embeddings(const sdw_image_model *m);
void sdw_model_destroy(sdw_image_model *m); /* NULL ok */

#endif
