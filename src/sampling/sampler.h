/* sampling/sampler.h — the denoising loop's bookkeeping: timesteps, input scaling and the
 * update step of each sampler, exactly as diffusers 0.25.1 computes them.
 *
 *   sdw_sampler *s;
 *   if (sdw_sampler_create("euler_a", &cfg, &(sdw_sampler_params){.steps = 20}, &s, &err)) ...;
 *   sdw_rng_randn(&rng, x, n);                              // initial noise, NCHW
 *   for (size_t k = 0; k < n; k++) x[k] *= sdw_sampler_init_noise_sigma(s);
 *   for (int i = sdw_sampler_begin(s); i < sdw_sampler_n_calls(s); i++) {
 *       sdw_sampler_scale_model_input(s, i, x, in, n);      // model input
 *       eps = unet(in, sdw_sampler_timestep(s, i));         // + classifier-free guidance
 *       sdw_sampler_step(s, i, eps, x, n, &rng, &err);      // x <- x_{prev}
 *   }
 *   sdw_sampler_destroy(s);
 *
 * Samplers (name: diffusers class, what it takes from the config):
 *   "ddim"     DDIMScheduler, eta 0 (deterministic).
 *   "pndm"     PNDMScheduler: PLMS when skip_prk_steps (SD's config), otherwise Runge-Kutta
 *              warm-up. With PLMS the second timestep repeats, so n_calls = steps + 1.
 *   "euler"    EulerDiscreteScheduler (s_churn 0; still draws one noise tensor per step, as
 *              diffusers does, so later draws from the same rng line up).
 *   "euler_a"  EulerAncestralDiscreteScheduler: one randn of the latents' shape per step.
 *   "dpm++2m"  DPMSolverMultistepScheduler with its defaults: dpmsolver++, order 2, midpoint,
 *              lower_order_final (first order on the last step when steps < 15).
 *   "heun"     HeunDiscreteScheduler: two model calls per step except the last (the second
 *              one at the step's end point corrects it), so n_calls = 2 * steps - 1 and every
 *              timestep but the first is listed twice, as diffusers' timesteps are.
 *   "lms"      LMSDiscreteScheduler, order 4: the update weighs the last 4 derivatives with
 *              the integrals of their Lagrange polynomials over the step, which diffusers gets
 *              from scipy.integrate.quad with a float32 integrand (reproduced: sampler_lms.c).
 *   "unipc"    UniPCMultistepScheduler with its defaults: bh2, order 2, predict_x0,
 *              lower_order_final, the corrector on every step after the first.
 *   "lcm"      LCMScheduler (latent consistency models, LCM-LoRA): timesteps from the
 *              50-step distillation schedule, one randn of the latents' shape per step
 *              except the last. Meant for 2-8 steps with guidance 1-2.
 * A flow-matching config (FlowMatchEulerDiscreteScheduler: FLUX, SD3) has one sampler:
 *   "euler"    FlowMatchEulerDiscreteScheduler (0.30.3): the model output is a velocity,
 *              timesteps are sigma · num_train_timesteps, no random draws.
 * The model's config (scheduler.h) supplies the training schedule, prediction type, timestep
 * spacing and offset, as `XScheduler.from_config(pipe.scheduler.config)` would.
 *
 * Latents are flat float32 arrays in NCHW order (any batch: the math is elementwise; random
 * draws cover all n elements in one randn, matching a [B,C,H,W] torch draw).
 * Thread safety: a sampler holds per-generation state; use one per job. Distinct samplers are
 * independent.
 */
#ifndef SDW_SAMPLING_SAMPLER_H
#define SDW_SAMPLING_SAMPLER_H

#include "sampling/rng.h"
#include "sampling/scheduler.h"

typedef struct sdw_sampler sdw_sampler;

/* NULL-terminated list of the names of the diffusion (alpha/sigma) samplers; static. */
const char *const *sdw_sampler_names(void);
/* The names that can run cfg's schedule (the list above, or "euler" alone for a flow-matching
 * config); static. */
const char *const *sdw_sampler_names_for(const sdw_scheduler_config *cfg);

/* True if `name` is a sampler name and accepts Karras sigmas (its diffusers class has
 * use_karras_sigmas: "euler", "euler_a", "dpm++2m", "heun", "lms", "unipc"). */
bool sdw_sampler_supports_karras(const char *name);

typedef struct sdw_sampler_params {
    int steps;   /* inference steps, 1..num_train_timesteps */
    bool karras; /* the Karras et al. sigma schedule (use_karras_sigmas=True) */
    /* Flow matching with dynamic shifting: the image's token count (FLUX: packed latent
     * pixels), from which the shift mu follows; 0 otherwise. */
    int image_seq_len;
} sdw_sampler_params;

/* *out = a new sampler for cfg's schedule (free with sdw_sampler_destroy). cfg and p are copied
 * (borrowed only during the call). The config's own use_karras_sigmas also turns Karras on.
 * Fails (*out untouched) with SDW_E_INVALID_ARG (unknown name, a name that cannot run cfg's
 * schedule, steps out of range, karras with ddim/pndm/lcm/flow, lcm
 * with more steps than its 50-step distillation schedule), SDW_E_UNSUPPORTED (a config this
 * sampler cannot run, e.g. "sample" prediction with euler_a, as diffusers raises). */
sdw_status sdw_sampler_create(const char *name, const sdw_scheduler_config *cfg,
                              const sdw_sampler_params *p, sdw_sampler **out, sdw_error *err);
void sdw_sampler_destroy(sdw_sampler *s); /* NULL ok */

const char *sdw_sampler_name(const sdw_sampler *s); /* canonical name, static */

/* Number of model calls of a full run (= len(scheduler.timesteps)). */
int sdw_sampler_n_calls(const sdw_sampler *s);

/* Model calls per inference step: the scheduler class's `order` (2 for heun, 1 otherwise). The
 * image-to-image pipelines start at timesteps[t_start * order], so the first call of a run is
 * sdw_sampler_begin_for_strength(...) * sdw_sampler_order(s). */
int sdw_sampler_order(const sdw_sampler *s);

/* The timestep value fed to the denoiser at call i (0 <= i < n_calls): an integer for
 * ddim/pndm/dpm++2m, possibly fractional for euler/euler_a (linspace spacing, Karras). */
float sdw_sampler_timestep(const sdw_sampler *s, int i);

/* sigma_i of sigma-based samplers (euler, euler_a, dpm++2m, heun, lms, unipc), 0 <= i <= n_calls
 * (the last one is the final noise level); NAN for ddim/pndm/lcm. */
float sdw_sampler_sigma(const sdw_sampler *s, int i);

/* Scale of the initial noise for text-to-image: latents = randn * init_noise_sigma. */
float sdw_sampler_init_noise_sigma(const sdw_sampler *s);

/* out[k] = the model input for call i (x / sqrt(sigma^2 + 1) for euler-type, a copy
 * otherwise). out may equal x. */
void sdw_sampler_scale_model_input(const sdw_sampler *s, int i, const float *x, float *out,
                                   size_t n);

/* One update: latents <- previous sample, given the (guided) model output for call i. Calls
 * must come in order, starting at sdw_sampler_begin(), with the same n each time. rng is used by
 * euler, euler_a and lcm (one draw of n values per step; lcm none on its last) and may be NULL
 * for the others. Returns
 * SDW_E_NOMEM if the first call cannot allocate its history buffers (latents untouched). */
sdw_status sdw_sampler_step(sdw_sampler *s, int i, const float *model_out, float *latents, size_t n,
                            sdw_rng *rng, sdw_error *err);

/* The noise drawn by the most recent step (n values, borrowed until the next step or destroy),
 * or NULL if that step drew none. The generation core records these as noise.KK. */
const float *sdw_sampler_last_noise(const sdw_sampler *s);

/* ---- image-to-image ---- */

/* diffusers' get_timesteps: the index of the first call when denoising with `strength` in
 * [0, 1]: steps - min(int(steps * strength), steps) (Stable Diffusion's pipelines). */
int sdw_sampler_begin_for_strength(int steps, double strength);
/* The flow-matching pipelines' get_timesteps (SD3, FLUX img2img): the start is rounded, not the
 * count: int(max(steps - min(steps * strength, steps), 0)), so any strength > 0 runs a step. */
int sdw_sampler_begin_for_strength_flow(int steps, double strength);

/* Starts the run at call `begin` (0 <= begin < n_calls) instead of 0; resets the step state.
 * For heun, begin = t_start * sdw_sampler_order(s) as the pipelines slice the call list.
 * Returns SDW_E_INVALID_ARG if begin is out of range. */
sdw_status sdw_sampler_set_begin(sdw_sampler *s, int begin, sdw_error *err);
int sdw_sampler_begin(const sdw_sampler *s);

/* out = clean latents x0 noised to the level of call `begin` (the scheduler's add_noise with
 * timesteps[begin]); noise is N(0,1) of the same n. out may equal x0 or noise. */
void sdw_sampler_add_noise(const sdw_sampler *s, const float *x0, const float *noise, float *out,
                           size_t n);
/* The same at the level of call i (0 <= i < n_calls), as add_noise(x0, noise, timesteps[i]):
 * what the inpainting loop blends outside the mask after each step. */
void sdw_sampler_add_noise_at(const sdw_sampler *s, int i, const float *x0, const float *noise,
                              float *out, size_t n);

#endif
