/* sampling/scheduler.h — a model's noise schedule, as stated by its diffusers
 * scheduler_config.json, and the training-time alpha table derived from it.
 *
 *   sdw_scheduler_config cfg;
 *   if (sdw_scheduler_config_load("model/scheduler/scheduler_config.json", &cfg, &err) != SDW_OK)
 *       cfg = sdw_scheduler_config_sd15();          // single-file SD1 checkpoint: no config
 *   sdw_sampler *s = sdw_sampler_create("euler_a", &cfg, 30, false, &err);  // see sampler.h
 *
 * The config describes the schedule the model was trained with, independent of which sampler
 * runs it: like diffusers' `XScheduler.from_config(pipe.scheduler.config)`, every sampler reads
 * the keys it knows. Keys missing from the file take the default of the sampler's diffusers class
 * (0.25.1), which differs between classes for timestep_spacing and set_alpha_to_one; those two
 * fields therefore have a "class default" value. All other fields hold the value itself.
 *
 * Plain data: copy freely. Functions here are thread-safe (no shared state).
 */
#ifndef SDW_SAMPLING_SCHEDULER_H
#define SDW_SAMPLING_SCHEDULER_H

#include "sdw/status.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum sdw_beta_schedule {
    SDW_BETA_LINEAR = 0,    /* linspace(beta_start, beta_end) */
    SDW_BETA_SCALED_LINEAR, /* linspace(sqrt(beta_start), sqrt(beta_end))^2 (Stable Diffusion) */
    SDW_BETA_SQUAREDCOS_CAP_V2, /* Glide cosine schedule, betas capped at 0.999 */
} sdw_beta_schedule;

typedef enum sdw_prediction_type {
    SDW_PRED_EPSILON = 0, /* the model predicts the added noise */
    SDW_PRED_V,           /* "v_prediction" (SD 2.x 768-v) */
    SDW_PRED_SAMPLE,      /* the model predicts the clean sample */
} sdw_prediction_type;

typedef enum sdw_timestep_spacing {
    SDW_SPACING_CLASS_DEFAULT = 0, /* key absent: leading for ddim/pndm, linspace for the rest */
    SDW_SPACING_LEADING,
    SDW_SPACING_TRAILING,
    SDW_SPACING_LINSPACE,
} sdw_timestep_spacing;

typedef enum sdw_opt_bool {
    SDW_OPT_CLASS_DEFAULT = 0, /* key absent */
    SDW_OPT_FALSE,
    SDW_OPT_TRUE,
} sdw_opt_bool;

typedef struct sdw_scheduler_config {
    char class_name[64];     /* "_class_name" of the file ("PNDMScheduler"...), "" if none */
    int num_train_timesteps; /* length of the training schedule, default 1000 */
    double beta_start;       /* default 0.0001 */
    double beta_end;         /* default 0.02 */
    sdw_beta_schedule beta_schedule;     /* default linear */
    sdw_prediction_type prediction_type; /* default epsilon */
    sdw_timestep_spacing timestep_spacing;
    int steps_offset;              /* added to "leading" timesteps, default 0 */
    sdw_opt_bool set_alpha_to_one; /* ddim default true, pndm default false */
    bool clip_sample;              /* ddim only; default true (DDIMScheduler's) */
    double clip_sample_range;      /* default 1.0 */
    bool skip_prk_steps;           /* pndm only; default false (Runge-Kutta warm-up) */
    bool rescale_betas_zero_snr;   /* ddim, euler, euler_a (not pndm, dpm++2m in 0.25.1) */
    bool use_karras_sigmas;        /* euler, dpm++2m; a sampler's karras flag also turns it on */
    double sigma_min, sigma_max;   /* Karras range override; NaN = from the schedule (default) */
    double lambda_min_clipped;     /* dpm++2m only; default -infinity = no clipping (also null) */

    /* Flow matching (FlowMatchEulerDiscreteScheduler, diffusers 0.30.3: FLUX, SD3): the model
     * predicts a velocity, the schedule is sigmas in [0, 1], no alpha table. */
    bool flow_matching;        /* the config's class is a flow-matching scheduler */
    double shift;              /* static shift sigma' = s·σ / (1 + (s − 1)·σ); default 1 */
    bool use_dynamic_shifting; /* shift by exp(mu) with mu from the image's token count */
    double base_shift, max_shift;              /* mu at base / max sequence length (0.5, 1.15) */
    int base_image_seq_len, max_image_seq_len; /* (256, 4096) */
    /* Not in the file: how the model's pipeline drives the scheduler. true = it passes
     * sigmas = linspace(1, 1/steps, steps) (FluxPipeline); false = the scheduler's own
     * linspace between its (already shifted) sigma_max and sigma_min, shifted again
     * (StableDiffusion3Pipeline 0.30.3). The loading family sets it. */
    bool flow_pipeline_sigmas;
} sdw_scheduler_config;

/* diffusers' class defaults: what a scheduler gets from an empty config. */
sdw_scheduler_config sdw_scheduler_config_default(void);

/* The Stable Diffusion 1.5 scheduler config as diffusers 0.25.1 saves it (PNDMScheduler,
 * scaled_linear 0.00085..0.012, epsilon, leading spacing, steps_offset 1, skip_prk_steps,
 * set_alpha_to_one false, clip_sample false) — the same as fixtures' tiny-sd15 folder. For
 * single-file SD1 checkpoints, which carry no config. */
sdw_scheduler_config sdw_scheduler_config_sd15(void);

/* Fills *out from a parsed diffusers scheduler config object (a jansson json_t *, borrowed).
 * Unknown keys are ignored (diffusers keeps them too). Returns SDW_E_FORMAT for a key of the
 * wrong JSON type, SDW_E_UNSUPPORTED for a value we cannot honour exactly (trained_betas,
 * thresholding, an unknown beta_schedule / prediction_type / timestep_spacing,
 * interpolation_type other than linear, timestep_type other than discrete), SDW_E_INVALID_ARG
 * for out-of-range numbers. *out is untouched on failure. Numbers may also be given as the
 * strings "Infinity", "-Infinity", "NaN" (see sdw_json_load_relaxed). */
sdw_status sdw_scheduler_config_from_json(const void *json, sdw_scheduler_config *out,
                                          sdw_error *err);

/* Reads and parses a scheduler_config.json file. Errors as above plus SDW_E_IO / SDW_E_FORMAT
 * for unreadable or malformed files; *out untouched on failure. */
sdw_status sdw_scheduler_config_load(const char *path, sdw_scheduler_config *out, sdw_error *err);

/* Parses a JSON object's text that may contain Python's non-standard NaN / Infinity / -Infinity
 * literals (diffusers writes "lambda_min_clipped": -Infinity), which plain JSON parsers reject:
 * outside strings they are turned into the strings "NaN", "Infinity", "-Infinity" (io/json_config
 * does the parsing). Returns a new json_t * (json_decref it) or NULL with err set (SDW_E_FORMAT,
 * with line and column; also when the top level is not an object). */
void *sdw_json_load_relaxed(const char *text, size_t len, sdw_error *err);

/* The sampler name matching the config's class ("ddim", "pndm", "euler", "euler_a",
 * "dpm++2m", "heun", "lms", "unipc", "lcm"; "euler" for FlowMatchEulerDiscreteScheduler), or
 * NULL when the class is unknown or has no counterpart here. Static string. */
const char *sdw_scheduler_config_sampler_name(const sdw_scheduler_config *cfg);

/* The training alpha_bar table, float32 exactly as diffusers computes it (torch.linspace as the
 * AVX2 CPU kernel rounds, cumprod accumulated in double, rescale_zero_terminal_snr when asked):
 * out[num_train_timesteps]. rescale follows the caller (samplers differ on whether they honour
 * the config's flag). Returns SDW_E_INVALID_ARG for a config that cannot form a schedule. */
sdw_status sdw_scheduler_alphas_cumprod(const sdw_scheduler_config *cfg, bool rescale_zero_snr,
                                        float *out, sdw_error *err);

const char *sdw_beta_schedule_str(sdw_beta_schedule v);
const char *sdw_prediction_type_str(sdw_prediction_type v);
const char *sdw_timestep_spacing_str(sdw_timestep_spacing v);

#endif
