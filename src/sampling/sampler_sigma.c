/* sampling/sampler_sigma.c — Euler, Euler ancestral and DPM-Solver++(2M): samplers on the
 * sigma = sqrt((1 - alpha_bar) / alpha_bar) parameterisation. Each mirrors diffusers 0.25.1
 * (scheduling_euler_discrete.py, scheduling_euler_ancestral_discrete.py,
 * scheduling_dpmsolver_multistep.py) in float32, operation by operation; the schedules are
 * computed in float64 like their numpy code. */
#include "sampling/sampler_impl.h"

#include "sampling/np_math.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* log of the float32 sigma table, as np.log computes it on the float32 array. */
static float *log_sigma_table(const float *sig, int n) {
    float *out = sdw_xmalloc((size_t)n * sizeof *out);
    for (int t = 0; t < n; t++)
        out[t] = sdw__numpy_logf(sig[t]);
    return out;
}

/* Karras range: sigma_min / sigma_max keys override the ends when set (diffusers' "hack" that
 * reads them from the config of whichever class it came from). */
static void karras_range(const sdw_sampler *s, double lo, double hi, double *out_lo,
                         double *out_hi) {
    *out_lo = isnan(s->cfg.sigma_min) ? lo : s->cfg.sigma_min;
    *out_hi = isnan(s->cfg.sigma_max) ? hi : s->cfg.sigma_max;
}

/* ---- Euler / Euler ancestral: schedule ---- */

/* EulerDiscreteScheduler.set_timesteps (0.25.1), also used by euler_a (whose 0.25.1
 * set_timesteps is the same minus Karras; Karras for euler_a follows euler's construction). */
static sdw_status euler_setup(sdw_sampler *s, sdw_error *err) {
    const int n = s->steps, N = s->n_train;
    if (s->ops == &sdw__sampler_euler_a && s->cfg.prediction_type == SDW_PRED_SAMPLE)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "prediction_type \"sample\" is not implemented by "
                             "EulerAncestralDiscreteScheduler");
    sdw_status st = sdw_scheduler_alphas_cumprod(&s->cfg, s->cfg.rescale_betas_zero_snr,
                                                 s->alphas_cumprod, err);
    if (st != SDW_OK) return st;
    /* Close to 0 without being 0 so the first sigma is finite (diffusers: fp16's smallest
     * subnormal). */
    if (s->cfg.rescale_betas_zero_snr) s->alphas_cumprod[N - 1] = 0x1p-24f;

    /* timesteps, float32, descending */
    int len = n;
    double *ts = NULL;
    switch (s->cfg.timestep_spacing) {
    case SDW_SPACING_LINSPACE:
        ts = sdw_xmalloc((size_t)n * sizeof *ts);
        sdw__np_linspace(0, N - 1, n, ts);
        for (int a = 0, b = n - 1; a < b; a++, b--) {
            double t = ts[a];
            ts[a] = ts[b];
            ts[b] = t;
        }
        for (int k = 0; k < n; k++)
            ts[k] = (float)ts[k];
        break;
    case SDW_SPACING_LEADING:
        ts = sdw_xmalloc((size_t)n * sizeof *ts);
        for (int k = 0; k < n; k++)
            ts[k] = (float)((double)(n - 1 - k) * (N / n)) + (float)s->cfg.steps_offset;
        break;
    case SDW_SPACING_TRAILING: {
        const double ratio = (double)N / n;
        len = sdw__np_arange_len(N, 0, -ratio); /* may be n + 1, as numpy computes it */
        ts = sdw_xmalloc((size_t)len * sizeof *ts);
        sdw__np_arange(N, -ratio, len, ts);
        for (int k = 0; k < len; k++)
            ts[k] = (float)sdw__np_round(ts[k]) - 1.0f;
        break;
    }
    default:
        SDW_ABORT("timestep spacing not resolved");
    }

    float *table = sdw_xmalloc((size_t)N * sizeof *table);
    sdw__sigma_table(s->alphas_cumprod, N, table);
    double *sig = sdw_xmalloc((size_t)len * sizeof *sig);
    for (int k = 0; k < len; k++)
        sig[k] = sdw__np_interp_index(ts[k], table, N);
    if (s->karras) {
        float *log_sigmas = log_sigma_table(table, N);
        double lo, hi;
        karras_range(s, sig[len - 1], sig[0], &lo, &hi);
        sdw__karras_sigmas(lo, hi, len, sig);
        for (int k = 0; k < len; k++)
            ts[k] = sdw__sigma_to_t(sig[k], log_sigmas, N);
        free(log_sigmas);
    }
    s->n_calls = len;
    s->timesteps = sdw_xmalloc((size_t)len * sizeof(float));
    s->sigmas = sdw_xmalloc((size_t)(len + 1) * sizeof(float));
    float max_sigma = 0;
    for (int k = 0; k < len; k++) {
        s->timesteps[k] = (float)ts[k];
        s->sigmas[k] = (float)sig[k];
        if (s->sigmas[k] > max_sigma) max_sigma = s->sigmas[k];
    }
    s->sigmas[len] = 0.0f;
    /* init_noise_sigma property: max sigma for linspace/trailing, sqrt(max^2 + 1) otherwise */
    s->init_noise_sigma = (s->cfg.timestep_spacing == SDW_SPACING_LINSPACE ||
                           s->cfg.timestep_spacing == SDW_SPACING_TRAILING)
                              ? max_sigma
                              : sqrtf(max_sigma * max_sigma + 1.0f);
    free(ts);
    free(sig);
    free(table);
    return SDW_OK;
}

static int sigma_index(const sdw_sampler *s, int i) {
    int k = i + s->sigma_offset;
    SDW_ASSERT(k >= 0 && k < s->n_calls);
    return k;
}

/* scale_model_input: x / sqrt(sigma^2 + 1). */
static void euler_scale_model_input(const sdw_sampler *s, int i, const float *x, float *out,
                                    size_t n) {
    const float sigma = s->sigmas[sigma_index(s, i)];
    const float scale = sqrtf(sigma * sigma + 1.0f);
    for (size_t k = 0; k < n; k++)
        out[k] = x[k] / scale;
}

/* The denoised estimate x0 for Euler-type samplers (c_skip / c_out of the prediction type). */
static float euler_x0(sdw_prediction_type pred, float sigma, float c_out, float c_skip_div, float x,
                      float mo) {
    switch (pred) {
    case SDW_PRED_EPSILON:
        return x - sigma * mo;
    case SDW_PRED_SAMPLE:
        return mo;
    default:
        return mo * c_out + x / c_skip_div; /* v: mo * (-s / sqrt(s^2+1)) + x / (s^2+1) */
    }
}

/* EulerDiscreteScheduler.step with s_churn = 0 (gamma = 0, sigma_hat = sigma). The noise
 * tensor is drawn anyway, as diffusers does, and then unused. */
static void euler_step(sdw_sampler *s, int i, const float *mo, float *x, size_t n, sdw_rng *rng) {
    const int si = sigma_index(s, i);
    const float sigma = s->sigmas[si];
    SDW_ASSERT(rng); /* euler draws from the generator every step */
    sdw_rng_randn(rng, s->noise, n);
    s->noise_valid = true;
    const float sigma_hat = sigma * (0.0f + 1.0f);
    const float s2p1 = sigma * sigma + 1.0f;
    const float c_out = -sigma / sqrtf(s2p1);
    const float dt = s->sigmas[si + 1] - sigma_hat;
    for (size_t k = 0; k < n; k++) {
        float x0 = euler_x0(s->cfg.prediction_type, sigma_hat, c_out, s2p1, x[k], mo[k]);
        float d = (x[k] - x0) / sigma_hat;
        x[k] = x[k] + d * dt;
    }
}

/* EulerAncestralDiscreteScheduler.step: deterministic step to sigma_down, then fresh noise of
 * size sigma_up. */
static void euler_a_step(sdw_sampler *s, int i, const float *mo, float *x, size_t n, sdw_rng *rng) {
    const int si = sigma_index(s, i);
    const float sigma = s->sigmas[si];
    const float from = sigma, to = s->sigmas[si + 1];
    const float sigma_up = sqrtf(to * to * (from * from - to * to) / (from * from));
    const float sigma_down = sqrtf(to * to - sigma_up * sigma_up);
    const float s2p1 = sigma * sigma + 1.0f;
    const float c_out = -sigma / sqrtf(s2p1);
    const float dt = sigma_down - sigma;
    for (size_t k = 0; k < n; k++) {
        float x0 = euler_x0(s->cfg.prediction_type, sigma, c_out, s2p1, x[k], mo[k]);
        float d = (x[k] - x0) / sigma;
        x[k] = x[k] + d * dt;
    }
    SDW_ASSERT(rng); /* euler_a draws from the generator every step */
    sdw_rng_randn(rng, s->noise, n);
    s->noise_valid = true;
    for (size_t k = 0; k < n; k++)
        x[k] = x[k] + s->noise[k] * sigma_up;
}

/* add_noise: x0 + noise * sigma at the first index holding timesteps[i]. */
static void euler_add_noise(const sdw_sampler *s, int i, const float *x0, const float *noise,
                            float *out, size_t n) {
    int idx = 0;
    while (idx < s->n_calls && s->timesteps[idx] != s->timesteps[i])
        idx++;
    const float sigma = s->sigmas[idx];
    for (size_t k = 0; k < n; k++)
        out[k] = x0[k] + noise[k] * sigma;
}

const sdw__sampler_ops sdw__sampler_euler = {
    .name = "euler",
    .diffusers_class = "EulerDiscreteScheduler",
    .default_spacing = SDW_SPACING_LINSPACE,
    .karras_ok = true,
    .setup = euler_setup,
    .step = euler_step,
    .scale_model_input = euler_scale_model_input,
    .add_noise = euler_add_noise,
};

const sdw__sampler_ops sdw__sampler_euler_a = {
    .name = "euler_a",
    .diffusers_class = "EulerAncestralDiscreteScheduler",
    .default_spacing = SDW_SPACING_LINSPACE,
    .karras_ok = true,
    .setup = euler_setup,
    .step = euler_a_step,
    .scale_model_input = euler_scale_model_input,
    .add_noise = euler_add_noise,
};

/* ---- DPM-Solver++(2M) ---- */

static sdw_status dpm_setup(sdw_sampler *s, sdw_error *err) {
    const int n = s->steps, N = s->n_train;
    /* DPMSolverMultistepScheduler (0.25.1) has no rescale_betas_zero_snr: ignored, as there. */
    sdw_status st = sdw_scheduler_alphas_cumprod(&s->cfg, false, s->alphas_cumprod, err);
    if (st != SDW_OK) return st;
    const float *ac = s->alphas_cumprod;

    /* lambda_min_clipped: drop the tail of the schedule whose log-SNR is below the clip. torch
     * takes these logs with its vectorised (Sleef) log; glibc's may differ by an ulp, which only
     * matters if the clip value sits exactly on a table entry. */
    int clipped = 0;
    if (!(isinf(s->cfg.lambda_min_clipped) && s->cfg.lambda_min_clipped < 0)) {
        for (int t = N - 1; t >= 0; t--) { /* searchsorted(flip(lambda_t), clip), left side */
            float lambda = logf(sqrtf(ac[t])) - logf(sqrtf(1.0f - ac[t]));
            if (lambda < s->cfg.lambda_min_clipped)
                clipped++;
            else
                break;
        }
    }
    const int last = N - clipped;
    if (last < 1)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "lambda_min_clipped clips everything");

    int len = n;
    int64_t *ts = NULL;
    switch (s->cfg.timestep_spacing) {
    case SDW_SPACING_LINSPACE: {
        double *v = sdw_xmalloc((size_t)(n + 1) * sizeof *v);
        sdw__np_linspace(0, last - 1, n + 1, v);
        ts = sdw_xmalloc((size_t)n * sizeof *ts);
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)sdw__np_round(v[n - k]); /* [::-1][:-1] */
        free(v);
        break;
    }
    case SDW_SPACING_LEADING: {
        const int ratio = last / (n + 1);
        ts = sdw_xmalloc((size_t)n * sizeof *ts);
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)(n - k) * ratio + s->cfg.steps_offset;
        break;
    }
    case SDW_SPACING_TRAILING: {
        const double ratio = (double)N / n;
        len = sdw__np_arange_len(last, 0, -ratio);
        double *v = sdw_xmalloc((size_t)len * sizeof *v);
        sdw__np_arange(last, -ratio, len, v);
        ts = sdw_xmalloc((size_t)len * sizeof *ts);
        for (int k = 0; k < len; k++)
            ts[k] = (int64_t)sdw__np_round(v[k]) - 1;
        free(v);
        break;
    }
    default:
        SDW_ABORT("timestep spacing not resolved");
    }

    float *table = sdw_xmalloc((size_t)N * sizeof *table);
    sdw__sigma_table(ac, N, table);
    s->n_calls = len;
    s->timesteps = sdw_xmalloc((size_t)len * sizeof(float));
    s->sigmas = sdw_xmalloc((size_t)(len + 1) * sizeof(float));
    if (s->karras) {
        /* on the flipped (descending) full table: sigma_max = sigma(N-1), sigma_min = sigma(0) */
        float *log_sigmas = log_sigma_table(table, N);
        double *sig = sdw_xmalloc((size_t)len * sizeof *sig);
        double lo, hi;
        karras_range(s, table[0], table[N - 1], &lo, &hi);
        sdw__karras_sigmas(lo, hi, len, sig);
        for (int k = 0; k < len; k++) {
            s->timesteps[k] = (float)sdw__np_round(sdw__sigma_to_t(sig[k], log_sigmas, N));
            s->sigmas[k] = (float)sig[k];
        }
        s->sigmas[len] = s->sigmas[len - 1]; /* 0.25.1 repeats the last sigma (no zero) */
        free(sig);
        free(log_sigmas);
    } else {
        for (int k = 0; k < len; k++) {
            s->timesteps[k] = (float)ts[k];
            s->sigmas[k] = (float)sdw__np_interp_index((double)ts[k], table, N);
        }
        s->sigmas[len] = sqrtf((1.0f - ac[0]) / ac[0]); /* sigma_last */
    }
    s->init_noise_sigma = 1.0f;
    free(table);
    free(ts);
    return SDW_OK;
}

/* _sigma_to_alpha_sigma_t and lambda = log(alpha) - log(sigma), in float32. */
typedef struct dpm_point {
    float alpha, sigma, lambda;
} dpm_point;

static dpm_point dpm_at(float sigma) {
    dpm_point p;
    p.alpha = 1.0f / sqrtf(sigma * sigma + 1.0f);
    p.sigma = sigma * p.alpha;
    p.lambda = logf(p.alpha) - logf(p.sigma);
    return p;
}

/* convert_model_output for dpmsolver++: the data prediction x0, written to out. */
static void dpm_x0(const sdw_sampler *s, float sigma, const float *mo, const float *x, float *out,
                   size_t n) {
    const dpm_point p = dpm_at(sigma);
    for (size_t k = 0; k < n; k++) {
        switch (s->cfg.prediction_type) {
        case SDW_PRED_EPSILON:
            out[k] = (x[k] - p.sigma * mo[k]) / p.alpha;
            break;
        case SDW_PRED_SAMPLE:
            out[k] = mo[k];
            break;
        default:
            out[k] = p.alpha * x[k] - p.sigma * mo[k];
            break;
        }
    }
}

static void dpm_step(sdw_sampler *s, int i, const float *mo, float *x, size_t n, sdw_rng *rng) {
    (void)rng;
    const int si = sigma_index(s, i);
    const int len = s->n_calls;
    /* lower_order_final (default true): first order on the last step of short schedules */
    const bool lower_order_final = si == len - 1 && len < 15;
    /* model_outputs shift: hist[0] = previous x0, hist[1] = current x0 */
    float *swap = s->hist[0];
    s->hist[0] = s->hist[1];
    s->hist[1] = swap;
    dpm_x0(s, s->sigmas[si], mo, x, s->hist[1], n);
    const float *m0 = s->hist[1], *m1 = s->hist[0];

    const dpm_point t = dpm_at(s->sigmas[si + 1]), s0 = dpm_at(s->sigmas[si]);
    const float h = t.lambda - s0.lambda;
    const float ratio = t.sigma / s0.sigma;
    const float c0 = t.alpha * (expf(-h) - 1.0f);
    if (s->lower_order_nums < 1 || lower_order_final) {
        /* dpm_solver_first_order_update: DDIM in log-SNR time */
        for (size_t k = 0; k < n; k++)
            x[k] = ratio * x[k] - c0 * m0[k];
    } else {
        /* multistep_dpm_solver_second_order_update, midpoint */
        const dpm_point s1 = dpm_at(s->sigmas[si - 1]);
        const float h0 = s0.lambda - s1.lambda;
        const float r0 = h0 / h;
        const float inv_r0 = 1.0f / r0;
        const float c1 = 0.5f * c0;
        for (size_t k = 0; k < n; k++) {
            float d1 = inv_r0 * (m0[k] - m1[k]);
            x[k] = ratio * x[k] - c0 * m0[k] - c1 * d1;
        }
    }
    if (s->lower_order_nums < 2) s->lower_order_nums++; /* solver_order 2 */
}

/* add_noise: alpha_t x0 + sigma_t noise at the schedule index of timesteps[i]
 * (second occurrence when repeated). */
static void dpm_add_noise(const sdw_sampler *s, int i, const float *x0, const float *noise,
                          float *out, size_t n) {
    const dpm_point p = dpm_at(s->sigmas[sdw__sampler_step_index_of(s, i)]);
    for (size_t k = 0; k < n; k++)
        out[k] = p.alpha * x0[k] + p.sigma * noise[k];
}

const sdw__sampler_ops sdw__sampler_dpmpp2m = {
    .name = "dpm++2m",
    .diffusers_class = "DPMSolverMultistepScheduler",
    .default_spacing = SDW_SPACING_LINSPACE,
    .karras_ok = true,
    .setup = dpm_setup,
    .step = dpm_step,
    .scale_model_input = NULL,
    .add_noise = dpm_add_noise,
};
