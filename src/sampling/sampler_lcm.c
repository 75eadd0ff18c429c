/* sampling/sampler_lcm.c — latent consistency model sampling: diffusers 0.25.1 LCMScheduler,
 * operation by operation in float32. Each step maps x_t to the consistency function's estimate
 * (c_skip·x_t + c_out·x0) and, except on the last step, re-noises it to the next timestep with
 * a fresh randn of the latents' shape drawn from the pipeline's generator.
 *
 * The timesteps come from the schedule the model was distilled on: original_inference_steps
 * (50) evenly spaced training timesteps k·(N / 50) − 1, from which `steps` are taken at
 * floor(linspace(0, 50, steps, endpoint=False)). The config's timestep_spacing, steps_offset
 * and set_alpha_to_one do not enter (the last step ends on the estimate itself). The class's
 * original_inference_steps and timestep_scaling keys are not in sdw_scheduler_config; they take
 * the class defaults (50, 10.0), which every published LCM and LCM-LoRA setup uses. */
#include "sampling/sampler_impl.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define LCM_ORIGINAL_STEPS 50      /* original_inference_steps (class default) */
#define LCM_TIMESTEP_SCALING 10.0f /* timestep_scaling (class default) */
#define LCM_SIGMA_DATA 0.5f        /* get_scalings_for_boundary_condition_discrete */

static sdw_status lcm_setup(sdw_sampler *s, sdw_error *err) {
    const int n = s->steps, N = s->n_train, orig = LCM_ORIGINAL_STEPS;
    if (orig > N)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "original_inference_steps %d exceeds num_train_timesteps %d", orig, N);
    if (n > orig)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "steps %d out of range [1, %d] (the timesteps are a subset of the "
                             "%d-step distillation schedule)",
                             n, orig, orig);
    sdw_status st = sdw_scheduler_alphas_cumprod(&s->cfg, s->cfg.rescale_betas_zero_snr,
                                                 s->alphas_cumprod, err);
    if (st != SDW_OK) return st;
    /* set_alpha_to_one only matters for a previous timestep < 0, which this schedule never has */
    s->final_alpha_cumprod = s->alphas_cumprod[0];
    const int k = N / orig;
    const double step = (double)orig / n; /* np.linspace(0, orig, n, endpoint=False) */
    s->n_calls = n;
    s->timesteps = sdw_xmalloc((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) {
        const int idx = (int)floor(i * step + 0.0); /* into the reversed origin schedule */
        s->timesteps[i] = (float)((int64_t)(orig - idx) * k - 1);
    }
    s->init_noise_sigma = 1.0f;
    return SDW_OK;
}

static void lcm_step(sdw_sampler *s, int i, const float *mo, float *x, size_t n, sdw_rng *rng) {
    const int si = i + s->sigma_offset;
    SDW_ASSERT(si >= 0 && si < s->n_calls);
    const int t = (int)s->timesteps[si];
    const int prev_t = si + 1 < s->n_calls ? (int)s->timesteps[si + 1] : t;
    const float a_t = sdw__alpha_at(s, t);
    const float a_prev = prev_t >= 0 ? sdw__alpha_at(s, prev_t) : s->final_alpha_cumprod;
    const float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    const float sqrt_a = sqrtf(a_t), sqrt_b = sqrtf(b_t);

    /* boundary condition scalings: timestep (int64) * timestep_scaling -> float32 */
    const float scaled = (float)t * LCM_TIMESTEP_SCALING;
    const float sd2 = LCM_SIGMA_DATA * LCM_SIGMA_DATA;
    const float denom = scaled * scaled + sd2;
    const float c_skip = (1.0f / denom) * sd2; /* torch's float / tensor: reciprocal, multiply */
    const float c_out = scaled / sqrtf(denom);

    const bool clip = s->cfg.clip_sample;
    const float range = (float)s->cfg.clip_sample_range;
    for (size_t k = 0; k < n; k++) {
        float x0;
        switch (s->cfg.prediction_type) {
        case SDW_PRED_EPSILON:
            x0 = (x[k] - sqrt_b * mo[k]) / sqrt_a;
            break;
        case SDW_PRED_SAMPLE:
            x0 = mo[k];
            break;
        default: /* v_prediction */
            x0 = sqrt_a * x[k] - sqrt_b * mo[k];
            break;
        }
        if (clip) x0 = x0 < -range ? -range : (x0 > range ? range : x0);
        x[k] = c_out * x0 + c_skip * x[k]; /* denoised */
    }
    if (si == s->n_calls - 1) return; /* the last step returns the estimate itself */
    SDW_ASSERT(rng); /* lcm draws from the generator on every step but the last */
    sdw_rng_randn(rng, s->noise, n);
    s->noise_valid = true;
    const float c_den = sqrtf(a_prev), c_noise = sqrtf(b_prev);
    for (size_t k = 0; k < n; k++)
        x[k] = c_den * x[k] + c_noise * s->noise[k];
}

/* add_noise: sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise at timesteps[i]. */
static void lcm_add_noise(const sdw_sampler *s, int i, const float *x0, const float *noise,
                          float *out, size_t n) {
    const float a = sdw__alpha_at(s, (int)s->timesteps[i]);
    const float sqrt_a = sqrtf(a), sqrt_one_minus_a = sqrtf(1.0f - a);
    for (size_t k = 0; k < n; k++)
        out[k] = sqrt_a * x0[k] + sqrt_one_minus_a * noise[k];
}

const sdw__sampler_ops sdw__sampler_lcm = {
    .name = "lcm",
    .diffusers_class = "LCMScheduler",
    .default_spacing = SDW_SPACING_LEADING, /* unused: the schedule has its own spacing */
    .karras_ok = false,
    .setup = lcm_setup,
    .step = lcm_step,
    .scale_model_input = NULL,
    .add_noise = lcm_add_noise,
};
