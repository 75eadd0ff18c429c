/* sampling/sampler_heun.c — Heun's method (Karras et al. 2022, Algorithm 1 without churn):
 * diffusers 0.25.1 HeunDiscreteScheduler, operation by operation in float32. Each step takes an
 * Euler step to the next sigma, evaluates the model there, and redoes the step with the mean of
 * the two slopes; the last step stays first order (its end sigma is 0). diffusers lists the
 * model calls as timesteps [t0, t1, t1, t2, t2, ...], and so do we: the core's loop calls the
 * sampler once per listed call. */
#include "sampling/sampler_impl.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* set_timesteps: the Euler-family schedule, then every timestep but the first and every sigma
 * but the first and the final 0 repeated (repeat_interleave(2)). */
static sdw_status heun_setup(sdw_sampler *s, sdw_error *err) {
    /* HeunDiscreteScheduler (0.25.1) has no rescale_betas_zero_snr: ignored, as there. */
    sdw_status st = sdw_scheduler_alphas_cumprod(&s->cfg, false, s->alphas_cumprod, err);
    if (st != SDW_OK) return st;
    double *ts, *sig;
    const int len = sdw__sigma_schedule(s, true, &ts, &sig);
    s->n_calls = 2 * len - 1;
    s->timesteps = sdw_xmalloc((size_t)s->n_calls * sizeof(float));
    s->sigmas = sdw_xmalloc((size_t)(s->n_calls + 1) * sizeof(float));
    float max_sigma = 0;
    for (int k = 0; k < len; k++) {
        const float t = (float)ts[k], sigma = (float)sig[k];
        if (k == 0) {
            s->timesteps[0] = t;
            s->sigmas[0] = sigma;
        } else {
            s->timesteps[2 * k - 1] = s->timesteps[2 * k] = t;
            s->sigmas[2 * k - 1] = s->sigmas[2 * k] = sigma;
        }
        if (sigma > max_sigma) max_sigma = sigma;
    }
    s->sigmas[s->n_calls] = 0.0f;
    /* init_noise_sigma property: max sigma for linspace/trailing, sqrt(max^2 + 1) otherwise */
    s->init_noise_sigma = (s->cfg.timestep_spacing == SDW_SPACING_LINSPACE ||
                           s->cfg.timestep_spacing == SDW_SPACING_TRAILING)
                              ? max_sigma
                              : sqrtf(max_sigma * max_sigma + 1.0f);
    free(ts);
    free(sig);
    return SDW_OK;
}

static int sigma_index(const sdw_sampler *s, int i) {
    const int k = i + s->sigma_offset;
    SDW_ASSERT(k >= 0 && k < s->n_calls);
    return k;
}

/* scale_model_input: x / sqrt(sigma^2 + 1) at the call's own sigma. */
static void heun_scale_model_input(const sdw_sampler *s, int i, const float *x, float *out,
                                   size_t n) {
    const float sigma = s->sigmas[sigma_index(s, i)];
    const float scale = sqrtf(sigma * sigma + 1.0f);
    for (size_t k = 0; k < n; k++)
        out[k] = x[k] / scale;
}

/* pred_original_sample at noise level sig (sigma_hat on the first call of a step, sigma_next
 * on the second), then the config's clipping. */
static float heun_x0(const sdw_sampler *s, float sig, float c_out, float s2p1, float x, float mo) {
    float x0;
    switch (s->cfg.prediction_type) {
    case SDW_PRED_EPSILON:
        x0 = x - sig * mo;
        break;
    case SDW_PRED_SAMPLE:
        x0 = mo;
        break;
    default: /* v: mo * (-s / sqrt(s^2 + 1)) + x / (s^2 + 1) */
        x0 = mo * c_out + x / s2p1;
        break;
    }
    if (s->cfg.clip_sample) {
        const float r = (float)s->cfg.clip_sample_range;
        x0 = x0 < -r ? -r : (x0 > r ? r : x0);
    }
    return x0;
}

static void heun_step(sdw_sampler *s, int i, const float *mo, float *x, size_t n, sdw_rng *rng) {
    (void)rng;
    const int si = sigma_index(s, i);
    float *deriv = s->hist[0], *start = s->cur_sample;
    if (!s->heun_pending) {
        /* first order: an Euler step from sigma_hat (= sigma, no churn) to sigma_next */
        const float sigma_hat = s->sigmas[si] * (0.0f + 1.0f);
        const float sigma_next = s->sigmas[si + 1];
        const float s2p1 = sigma_hat * sigma_hat + 1.0f;
        const float c_out = -sigma_hat / sqrtf(s2p1);
        const float dt = sigma_next - sigma_hat;
        for (size_t k = 0; k < n; k++) {
            const float x0 = heun_x0(s, sigma_hat, c_out, s2p1, x[k], mo[k]);
            deriv[k] = (x[k] - x0) / sigma_hat;
            start[k] = x[k];
            x[k] = x[k] + deriv[k] * dt;
        }
        s->heun_dt = dt;
        s->heun_pending = true;
    } else {
        /* second order: the slope at the end point, averaged with the first, from the start */
        const float sigma_next = s->sigmas[si];
        const float s2p1 = sigma_next * sigma_next + 1.0f;
        const float c_out = -sigma_next / sqrtf(s2p1);
        const float dt = s->heun_dt;
        for (size_t k = 0; k < n; k++) {
            const float x0 = heun_x0(s, sigma_next, c_out, s2p1, x[k], mo[k]);
            float d = (x[k] - x0) / sigma_next;
            d = (deriv[k] + d) / 2.0f;
            x[k] = start[k] + d * dt;
        }
        s->heun_pending = false;
    }
}

/* add_noise: x0 + noise * sigma at index_for_timestep(timesteps[i]). Before the first step
 * (the image-to-image start, i == begin) diffusers' index counter is empty and a repeated
 * timestep resolves to its second occurrence; after steps it resolves to the occurrence
 * numbered by how many steps have run at that timestep value (the inpainting blend). */
static void heun_add_noise(const sdw_sampler *s, int i, const float *x0, const float *noise,
                           float *out, size_t n) {
    const float t = s->timesteps[i];
    int pos = 0, seen = 0, idx = -1;
    if (i == s->begin) {
        for (int k = 0; k < s->n_calls; k++)
            seen += s->timesteps[k] == t;
        pos = seen > 1 ? 1 : 0;
    } else {
        for (int k = s->begin; k < i; k++)
            pos += s->timesteps[k] == t;
    }
    for (int k = 0, m = 0; k < s->n_calls && idx < 0; k++)
        if (s->timesteps[k] == t && m++ == pos) idx = k;
    SDW_ASSERT(idx >= 0);
    const float sigma = s->sigmas[idx];
    for (size_t k = 0; k < n; k++)
        out[k] = x0[k] + noise[k] * sigma;
}

const sdw__sampler_ops sdw__sampler_heun = {
    .name = "heun",
    .diffusers_class = "HeunDiscreteScheduler",
    .default_spacing = SDW_SPACING_LINSPACE,
    .karras_ok = true,
    .setup = heun_setup,
    .step = heun_step,
    .scale_model_input = heun_scale_model_input,
    .add_noise = heun_add_noise,
    .order = 2,
};
