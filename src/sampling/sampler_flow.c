/* sampling/sampler_flow.c — flow-matching Euler: diffusers 0.30.3
 * FlowMatchEulerDiscreteScheduler (FLUX, SD3). The model predicts a velocity v; the latents
 * move along x_{σ'} = x_σ + (σ' − σ)·v. Schedules are computed in float64 like the reference's
 * numpy code, then held in float32 as its torch tensors are; the step is float32 throughout. */
#include "sampling/sampler_impl.h"

#include <math.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* Static shift as the scheduler writes it: shift·σ / (1 + (shift − 1)·σ). */
static double shifted(double shift, double sigma) {
    return shift * sigma / (1 + (shift - 1) * sigma);
}

/* The pipelines' calculate_shift: mu on the line through (base_seq, base_shift) and
 * (max_seq, max_shift), in Python floats. */
static double flow_mu(const sdw_scheduler_config *c, int image_seq_len) {
    const double m = (c->max_shift - c->base_shift) /
                     (double)(c->max_image_seq_len - c->base_image_seq_len);
    const double b = c->base_shift - m * c->base_image_seq_len;
    return image_seq_len * m + b;
}

/* __init__'s float32 sigma range: timesteps = linspace(1, N, N) (float32) reversed, sigmas =
 * timesteps / N, statically shifted unless dynamic shifting is on; sigma_max = sigmas[0],
 * sigma_min = sigmas[N − 1] (as Python floats of the float32 values). */
static void init_range(const sdw_scheduler_config *c, double *sigma_max, double *sigma_min) {
    const int N = c->num_train_timesteps;
    const float hi = (float)N / (float)N, lo = 1.0f / (float)N;
    if (c->use_dynamic_shifting) {
        *sigma_max = hi;
        *sigma_min = lo;
        return;
    }
    const float s = (float)c->shift;
    *sigma_max = s * hi / (1.0f + (s - 1.0f) * hi);
    *sigma_min = s * lo / (1.0f + (s - 1.0f) * lo);
}

/* set_timesteps(num_inference_steps, sigmas, mu): the unshifted sigmas are the pipeline's
 * linspace(1, 1/n, n) (FluxPipeline) or the scheduler's own linspace between its sigma range
 * (SD3); then time_shift(mu) = e^mu / (e^mu + (1/σ − 1)) when shifting dynamically, else the
 * static shift; sigmas in float32, timesteps = sigmas · N (float32), a final sigma 0. */
static sdw_status flow_setup(sdw_sampler *s, sdw_error *err) {
    const sdw_scheduler_config *c = &s->cfg;
    const int n = s->steps, N = s->n_train;
    if (c->use_dynamic_shifting && s->image_seq_len <= 0)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "dynamic shifting needs the image's token count");
    double *sig = sdw_xmalloc((size_t)n * sizeof *sig);
    if (c->flow_pipeline_sigmas) {
        sdw__np_linspace(1.0, 1.0 / n, n, sig);
    } else {
        double smax, smin;
        init_range(c, &smax, &smin);
        sdw__np_linspace(smax * N, smin * N, n, sig);
        for (int i = 0; i < n; i++)
            sig[i] /= N;
    }
    const double mu = c->use_dynamic_shifting ? flow_mu(c, s->image_seq_len) : 0;
    s->n_calls = n;
    s->timesteps = sdw_xmalloc((size_t)n * sizeof(float));
    s->sigmas = sdw_xmalloc((size_t)(n + 1) * sizeof(float));
    for (int i = 0; i < n; i++) {
        const double v = c->use_dynamic_shifting ? exp(mu) / (exp(mu) + (1 / sig[i] - 1))
                                                 : shifted(c->shift, sig[i]);
        s->sigmas[i] = (float)v;
        s->timesteps[i] = s->sigmas[i] * (float)N;
    }
    s->sigmas[n] = 0.0f;
    s->init_noise_sigma = 1.0f;
    free(sig);
    return SDW_OK;
}

/* step(): prev = sample + (sigma_next − sigma) · model_output, in float32. */
static void flow_step(sdw_sampler *s, int i, const float *v, float *x, size_t n, sdw_rng *rng) {
    const int k = i + s->sigma_offset;
    const float dt = s->sigmas[k + 1] - s->sigmas[k];
    for (size_t j = 0; j < n; j++)
        x[j] = x[j] + dt * v[j];
}

/* scale_noise(): σ·noise + (1 − σ)·x0 at the sigma of call i. */
static void flow_add_noise(const sdw_sampler *s, int i, const float *x0, const float *noise,
                           float *out, size_t n) {
    const float sigma = s->sigmas[i + s->sigma_offset], keep = 1.0f - sigma;
    for (size_t j = 0; j < n; j++)
        out[j] = sigma * noise[j] + keep * x0[j];
}

const sdw__sampler_ops sdw__sampler_flow_euler = {
    .name = "euler",
    .diffusers_class = "FlowMatchEulerDiscreteScheduler",
    .default_spacing = SDW_SPACING_LINSPACE, /* unused: the flow schedule has no spacing */
    .karras_ok = false,
    .setup = flow_setup,
    .step = flow_step,
    .add_noise = flow_add_noise,
};
