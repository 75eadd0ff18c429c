/* sampling/sampler_unipc.c — UniPC (Zhao et al. 2023): diffusers 0.25.1 UniPCMultistepScheduler
 * with its defaults — bh2, solver order 2, predict_x0, lower_order_final, no disabled
 * corrector steps, no solver_p. Each step first corrects the previous step's result with the
 * new model output (UniC), then predicts the next sample (UniP), both in the data-prediction
 * (x0) form on the log-SNR lambda. Scalars are 0-dim float32 tensors there, so every scalar
 * operation rounds to float32 here too, in the reference's order; the 2x2 system of the
 * order-2 corrector is solved as torch.linalg.solve does (LAPACK LU of the transpose, no
 * pivoting needed: its first column is (1, 1)). The schedule is DPMSolverMultistepScheduler's
 * (the same set_timesteps, without lambda_min_clipped). */
#include "sampling/sampler_impl.h"

#include "sampling/np_math.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define UNIPC_ORDER 2 /* solver_order */

/* set_timesteps: integer timesteps (linspace over n + 1 points rounded, leading with
 * N // (n + 1), or trailing), sigmas interpolated on the float32 table plus the sigma of t = 0;
 * Karras: n sigmas over the whole table, rounded fractional timesteps, the last sigma
 * repeated. */
static sdw_status unipc_setup(sdw_sampler *s, sdw_error *err) {
    const int n = s->steps, N = s->n_train;
    /* UniPCMultistepScheduler (0.25.1) has no rescale_betas_zero_snr: ignored, as there. */
    sdw_status st = sdw_scheduler_alphas_cumprod(&s->cfg, false, s->alphas_cumprod, err);
    if (st != SDW_OK) return st;
    const float *ac = s->alphas_cumprod;

    int len = n;
    int64_t *ts = NULL;
    switch (s->cfg.timestep_spacing) {
    case SDW_SPACING_LINSPACE: {
        double *v = sdw_xmalloc((size_t)(n + 1) * sizeof *v);
        sdw__np_linspace(0, N - 1, n + 1, v);
        ts = sdw_xmalloc((size_t)n * sizeof *ts);
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)sdw__np_round(v[n - k]); /* .round()[::-1][:-1] */
        free(v);
        break;
    }
    case SDW_SPACING_LEADING: {
        const int ratio = N / (n + 1);
        ts = sdw_xmalloc((size_t)n * sizeof *ts);
        for (int k = 0; k < n; k++)
            ts[k] = (int64_t)(n - k) * ratio + s->cfg.steps_offset;
        break;
    }
    case SDW_SPACING_TRAILING: {
        const double ratio = (double)N / n;
        len = sdw__np_arange_len(N, 0, -ratio);
        double *v = sdw_xmalloc((size_t)len * sizeof *v);
        sdw__np_arange(N, -ratio, len, v);
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
    if (s->karras) {
        /* on the flipped (descending) table: sigma_max = sigma(N - 1), sigma_min = sigma(0);
         * diffusers makes num_inference_steps of them whatever the spacing gave */
        len = n;
        float *log_sigmas = sdw_xmalloc((size_t)N * sizeof *log_sigmas);
        for (int t = 0; t < N; t++)
            log_sigmas[t] = sdw__numpy_logf(table[t]);
        double *sig = sdw_xmalloc((size_t)len * sizeof *sig);
        sdw__karras_sigmas(isnan(s->cfg.sigma_min) ? table[0] : s->cfg.sigma_min,
                           isnan(s->cfg.sigma_max) ? table[N - 1] : s->cfg.sigma_max, len, sig);
        s->timesteps = sdw_xmalloc((size_t)len * sizeof(float));
        s->sigmas = sdw_xmalloc((size_t)(len + 1) * sizeof(float));
        for (int k = 0; k < len; k++) {
            s->timesteps[k] = (float)sdw__np_round(sdw__sigma_to_t(sig[k], log_sigmas, N));
            s->sigmas[k] = (float)sig[k];
        }
        s->sigmas[len] = s->sigmas[len - 1];
        free(sig);
        free(log_sigmas);
    } else {
        s->timesteps = sdw_xmalloc((size_t)len * sizeof(float));
        s->sigmas = sdw_xmalloc((size_t)(len + 1) * sizeof(float));
        for (int k = 0; k < len; k++) {
            s->timesteps[k] = (float)ts[k];
            s->sigmas[k] = (float)sdw__np_interp_index((double)ts[k], table, N);
        }
        s->sigmas[len] = sqrtf((1.0f - ac[0]) / ac[0]); /* sigma_last */
    }
    s->n_calls = len;
    s->init_noise_sigma = 1.0f;
    free(table);
    free(ts);
    return SDW_OK;
}

/* _sigma_to_alpha_sigma_t and lambda = log(alpha) - log(sigma), in float32 with torch's log
 * (Sleef's, which differs from glibc's logf by an ulp now and then: enough to move a step). */
typedef struct uni_point {
    float alpha, sigma, lambda;
} uni_point;

static uni_point uni_at(float sigma) {
    uni_point p;
    p.alpha = 1.0f / sqrtf(sigma * sigma + 1.0f);
    p.sigma = sigma * p.alpha;
    p.lambda = sdw__torch_logf(p.alpha) - sdw__torch_logf(p.sigma);
    return p;
}

static int sigma_index(const sdw_sampler *s, int i) {
    const int k = i + s->sigma_offset;
    SDW_ASSERT(k >= 0 && k < s->n_calls);
    return k;
}

/* convert_model_output (predict_x0): the data prediction at sigmas[si], written to out. */
static void unipc_x0(const sdw_sampler *s, int si, const float *mo, const float *x, float *out,
                     size_t n) {
    const uni_point p = uni_at(s->sigmas[si]);
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

/* The step from sigma index `from` to `to` shared by UniP and UniC: h, the bh2 factor
 * B(h) = expm1(-h) = h·phi_1(-h), and the x_t_ coefficients. */
typedef struct uni_step {
    float h, hh, h_phi_1, b_h;
    float ratio; /* sigma_t / sigma_s0 */
    float c_m0;  /* alpha_t * h_phi_1 */
    float c_res; /* alpha_t * B_h */
    uni_point s0;
} uni_step;

static uni_step uni_step_at(const sdw_sampler *s, int to, int from) {
    const uni_point t = uni_at(s->sigmas[to]);
    uni_step u;
    u.s0 = uni_at(s->sigmas[from]);
    u.h = t.lambda - u.s0.lambda;
    u.hh = -u.h; /* predict_x0 */
    u.h_phi_1 = sdw__torch_expm1f(u.hh);
    u.b_h = sdw__torch_expm1f(u.hh); /* bh2 */
    u.ratio = t.sigma / u.s0.sigma;
    u.c_m0 = t.alpha * u.h_phi_1;
    u.c_res = t.alpha * u.b_h;
    return u;
}

/* rk = (lambda_si - lambda_s0) / h for the older model output at sigma index si. */
static float uni_rk(const sdw_sampler *s, const uni_step *u, int si) {
    const uni_point p = uni_at(s->sigmas[si]);
    return (p.lambda - u->s0.lambda) / u->h;
}

/* multistep_uni_c_bh_update: corrects x (the predictor's last result, in place) from
 * last_sample with the new model output mt. m0 = the previous model output, m1 the one
 * before (order 2). */
static void uni_c(const sdw_sampler *s, int si, int order, const float *last, const float *mt,
                  const float *m0, const float *m1, float *x, size_t n) {
    const uni_step u = uni_step_at(s, si, si - 1);
    if (order == 1) { /* rhos_c = [0.5]; corr_res = 0 */
        for (size_t k = 0; k < n; k++) {
            const float x_ = u.ratio * last[k] - u.c_m0 * m0[k];
            const float d1_t = mt[k] - m0[k];
            x[k] = x_ - u.c_res * (0.0f + 0.5f * d1_t);
        }
        return;
    }
    const float rk = uni_rk(s, &u, si - 2);
    /* b_i = h_phi_k * i! / B_h with h_phi_k = h_phi_1 / hh - 1, then h_phi_k / hh - 1/2 */
    float h_phi_k = u.h_phi_1 / u.hh - 1.0f;
    const float b0 = (h_phi_k * 1.0f) / u.b_h;
    h_phi_k = h_phi_k / u.hh - 0.5f;
    const float b1 = (h_phi_k * 2.0f) / u.b_h;
    /* solve [[1, 1], [rk, 1]] rho = b: LU of the transpose [[1, rk], [1, 1]] without a row
     * swap (|1| ties |1|), U = [[1, rk], [0, 1 - rk]]; then U^T z = b, L^T rho = z */
    const float u11 = 1.0f - rk;
    const float z1 = (b1 - rk * b0) / u11;
    const float rho0 = b0 - z1, rho1 = z1;
    for (size_t k = 0; k < n; k++) {
        const float x_ = u.ratio * last[k] - u.c_m0 * m0[k];
        const float d1 = (m1[k] - m0[k]) / rk;
        const float corr = rho0 * d1;
        const float d1_t = mt[k] - m0[k];
        x[k] = x_ - u.c_res * (corr + rho1 * d1_t);
    }
}

/* multistep_uni_p_bh_update: x (in place) from sigma index si to si + 1 with the model outputs
 * m0 (newest) and m1 (order 2). */
static void uni_p(const sdw_sampler *s, int si, int order, const float *m0, const float *m1,
                  float *x, size_t n) {
    const uni_step u = uni_step_at(s, si + 1, si);
    if (order == 1) { /* pred_res = 0 */
        const float zero = u.c_res * 0.0f;
        for (size_t k = 0; k < n; k++) {
            const float x_ = u.ratio * x[k] - u.c_m0 * m0[k];
            x[k] = x_ - zero;
        }
        return;
    }
    const float rk = uni_rk(s, &u, si - 1);
    for (size_t k = 0; k < n; k++) { /* rhos_p = [0.5] */
        const float x_ = u.ratio * x[k] - u.c_m0 * m0[k];
        const float d1 = (m1[k] - m0[k]) / rk;
        x[k] = x_ - u.c_res * (0.5f * d1);
    }
}

static void unipc_step(sdw_sampler *s, int i, const float *mo, float *x, size_t n, sdw_rng *rng) {
    (void)rng;
    const int si = sigma_index(s, i);
    float *mt = s->tmp;
    unipc_x0(s, si, mo, x, mt, n); /* from the sample before correction */
    if (si > 0 && s->have_cur_sample)
        uni_c(s, si, s->this_order, s->cur_sample, mt, s->hist[1], s->hist[0], x, n);
    /* model_outputs shift: hist[0] = previous, hist[1] = this step's */
    float *freed = s->hist[0];
    s->hist[0] = s->hist[1];
    s->hist[1] = mt;
    s->tmp = freed;
    int order = UNIPC_ORDER;
    if (s->n_calls - si < order) order = s->n_calls - si; /* lower_order_final */
    if (s->lower_order_nums + 1 < order) order = s->lower_order_nums + 1; /* warm-up */
    s->this_order = order;
    memcpy(s->cur_sample, x, n * sizeof *x); /* last_sample */
    s->have_cur_sample = true;
    uni_p(s, si, order, s->hist[1], s->hist[0], x, n);
    if (s->lower_order_nums < UNIPC_ORDER) s->lower_order_nums++;
}

/* add_noise: alpha_t x0 + sigma_t noise at the schedule index of timesteps[i] (the second
 * occurrence when repeated). */
static void unipc_add_noise(const sdw_sampler *s, int i, const float *x0, const float *noise,
                            float *out, size_t n) {
    const uni_point p = uni_at(s->sigmas[sdw__sampler_step_index_of(s, i)]);
    for (size_t k = 0; k < n; k++)
        out[k] = p.alpha * x0[k] + p.sigma * noise[k];
}

const sdw__sampler_ops sdw__sampler_unipc = {
    .name = "unipc",
    .diffusers_class = "UniPCMultistepScheduler",
    .default_spacing = SDW_SPACING_LINSPACE,
    .karras_ok = true,
    .setup = unipc_setup,
    .step = unipc_step,
    .scale_model_input = NULL,
    .add_noise = unipc_add_noise,
};
