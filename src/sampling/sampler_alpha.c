/* sampling/sampler_alpha.c — DDIM and PNDM/PLMS, the samplers that work on alpha_bar(t).
 * Each update mirrors diffusers 0.25.1 (scheduling_ddim.py, scheduling_pndm.py) operation by
 * operation in float32: scalars are 0-dim float32 tensors there, every tensor op rounds. */
#include "sampling/sampler_impl.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* ---- shared ---- */

static sdw_status setup_alphas(sdw_sampler *s, bool rescale, bool alpha_to_one_default,
                               sdw_error *err) {
    sdw_status st = sdw_scheduler_alphas_cumprod(&s->cfg, rescale, s->alphas_cumprod, err);
    if (st != SDW_OK) return st;
    bool to_one = s->cfg.set_alpha_to_one == SDW_OPT_CLASS_DEFAULT
                      ? alpha_to_one_default
                      : s->cfg.set_alpha_to_one == SDW_OPT_TRUE;
    s->final_alpha_cumprod = to_one ? 1.0f : s->alphas_cumprod[0];
    s->init_noise_sigma = 1.0f;
    return SDW_OK;
}

/* Integer timesteps in the order the sampler visits them (descending) for ddim, and the
 * ascending `_timesteps` for pndm (descending = false). Returns the count; out has room for
 * n_train + 1 entries. */
static int spaced_timesteps(const sdw_sampler *s, bool descending, int64_t *out) {
    const int n = s->steps, N = s->n_train;
    int len = n;
    switch (s->cfg.timestep_spacing) {
    case SDW_SPACING_LINSPACE: {
        double *v = sdw_xmalloc((size_t)n * sizeof *v);
        sdw__np_linspace(0, N - 1, n, v);
        for (int k = 0; k < n; k++)
            out[k] = (int64_t)sdw__np_round(v[k]);
        free(v);
        break;
    }
    case SDW_SPACING_LEADING:
        for (int k = 0; k < n; k++)
            out[k] = (int64_t)k * (N / n) + s->cfg.steps_offset;
        break;
    case SDW_SPACING_TRAILING: {
        const double ratio = (double)N / n;
        len = sdw__np_arange_len(N, 0, -ratio); /* numpy may give n + 1; diffusers keeps it */
        SDW_ASSERT(len <= N + 1);
        double *v = sdw_xmalloc((size_t)len * sizeof *v);
        sdw__np_arange(N, -ratio, len, v);
        /* arange is descending here: reverse into ascending order first */
        for (int k = 0; k < len; k++)
            out[k] = (int64_t)sdw__np_round(v[len - 1 - k]) - 1;
        free(v);
        break;
    }
    default:
        SDW_ABORT("timestep spacing not resolved");
    }
    if (descending)
        for (int a = 0, b = len - 1; a < b; a++, b--) {
            int64_t t = out[a];
            out[a] = out[b];
            out[b] = t;
        }
    return len;
}

static void alpha_add_noise(const sdw_sampler *s, int i, const float *x0, const float *noise,
                            float *out, size_t n) {
    const float a = sdw__alpha_at(s, (int)s->timesteps[i]);
    const float sqrt_a = sqrtf(a), sqrt_one_minus_a = sqrtf(1.0f - a);
    for (size_t k = 0; k < n; k++)
        out[k] = sqrt_a * x0[k] + sqrt_one_minus_a * noise[k];
}

/* ---- DDIM (eta = 0) ---- */

static sdw_status ddim_setup(sdw_sampler *s, sdw_error *err) {
    sdw_status st = setup_alphas(s, s->cfg.rescale_betas_zero_snr, true, err);
    if (st != SDW_OK) return st;
    int64_t *ts = sdw_xmalloc((size_t)(s->n_train + 1) * sizeof *ts);
    s->n_calls = spaced_timesteps(s, true, ts);
    s->timesteps = sdw_xmalloc((size_t)s->n_calls * sizeof(float));
    for (int k = 0; k < s->n_calls; k++)
        s->timesteps[k] = (float)ts[k];
    free(ts);
    return SDW_OK;
}

/* DDIMScheduler.step with eta = 0: x0 and eps from the model output, then
 * x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps. */
static void ddim_step(sdw_sampler *s, int i, const float *mo, float *x, size_t n, sdw_rng *rng) {
    (void)rng;
    const int t = (int)s->timesteps[i];
    const int prev_t = t - s->n_train / s->steps;
    const float a_t = sdw__alpha_at(s, t);
    const float a_prev = prev_t >= 0 ? sdw__alpha_at(s, prev_t) : s->final_alpha_cumprod;
    const float b_t = 1.0f - a_t;
    const float sqrt_a = sqrtf(a_t), sqrt_b = sqrtf(b_t);
    const float dir_coef = sqrtf((1.0f - a_prev) - 0.0f); /* - std_dev_t^2, zero for eta 0 */
    const float x0_coef = sqrtf(a_prev);
    const bool clip = s->cfg.clip_sample;
    const float range = (float)s->cfg.clip_sample_range;
    for (size_t k = 0; k < n; k++) {
        float x0, eps;
        switch (s->cfg.prediction_type) {
        case SDW_PRED_EPSILON:
            x0 = (x[k] - sqrt_b * mo[k]) / sqrt_a;
            eps = mo[k];
            break;
        case SDW_PRED_SAMPLE:
            x0 = mo[k];
            eps = (x[k] - sqrt_a * x0) / sqrt_b;
            break;
        default: /* v_prediction */
            x0 = sqrt_a * x[k] - sqrt_b * mo[k];
            eps = sqrt_a * mo[k] + sqrt_b * x[k];
            break;
        }
        if (clip) x0 = x0 < -range ? -range : (x0 > range ? range : x0);
        x[k] = x0_coef * x0 + dir_coef * eps;
    }
}

const sdw__sampler_ops sdw__sampler_ddim = {
    .name = "ddim",
    .diffusers_class = "DDIMScheduler",
    .default_spacing = SDW_SPACING_LEADING,
    .karras_ok = false,
    .setup = ddim_setup,
    .step = ddim_step,
    .scale_model_input = NULL,
    .add_noise = alpha_add_noise,
};

/* ---- PNDM: PLMS (skip_prk_steps) or Runge-Kutta warm-up then PLMS ---- */

/* Number of Runge-Kutta calls at the head of s->timesteps (0 with skip_prk_steps). Derived from
 * the config so no extra state is needed: 12 = (pndm_order 4) x 3 intermediate evaluations. */
static int pndm_n_prk(const sdw_sampler *s) {
    return s->cfg.skip_prk_steps ? 0 : 12;
}

static sdw_status pndm_setup(sdw_sampler *s, sdw_error *err) {
    if (s->cfg.prediction_type == SDW_PRED_SAMPLE)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "prediction_type \"sample\" (PNDMScheduler supports epsilon and "
                             "v_prediction)");
    if (!s->cfg.skip_prk_steps && s->steps < 4)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "Runge-Kutta PNDM (skip_prk_steps false) needs at least 4 steps");
    /* PNDMScheduler (0.25.1) has no rescale_betas_zero_snr: the key is ignored, as there. */
    sdw_status st = setup_alphas(s, false, false, err);
    if (st != SDW_OK) return st;
    int64_t *t = sdw_xmalloc((size_t)(s->n_train + 1) * sizeof *t); /* ascending _timesteps */
    const int len = spaced_timesteps(s, false, t);
    s->timesteps = sdw_xmalloc((size_t)(len + 12) * sizeof(float));
    int m = 0;
    if (s->cfg.skip_prk_steps) {
        /* plms = concat(_t[:-1], _t[-2:-1], _t[-1:])[::-1]: the second-to-last repeats */
        int64_t *plms = sdw_xmalloc((size_t)(len + 1) * sizeof *plms);
        int p = 0;
        for (int k = 0; k < len - 1; k++)
            plms[p++] = t[k];
        if (len >= 2) plms[p++] = t[len - 2];
        plms[p++] = t[len - 1];
        for (int k = p - 1; k >= 0; k--)
            s->timesteps[m++] = (float)plms[k];
        free(plms);
    } else {
        /* prk = (repeat2(_t[-4:]) + tile([0, N//n//2], 4))[:-1].repeat(2)[1:-1][::-1] */
        const int half = s->n_train / s->steps / 2;
        int64_t base[8], rep[14];
        for (int k = 0; k < 4; k++) {
            base[2 * k] = t[len - 4 + k];
            base[2 * k + 1] = t[len - 4 + k] + half;
        }
        for (int k = 0; k < 7; k++)
            rep[2 * k] = rep[2 * k + 1] = base[k];
        for (int k = 12; k >= 1; k--)
            s->timesteps[m++] = (float)rep[k];
        for (int k = len - 4; k >= 0; k--)
            s->timesteps[m++] = (float)t[k]; /* _t[:-3][::-1] */
    }
    s->n_calls = m;
    free(t);
    return SDW_OK;
}

/* _get_prev_sample: formula (9) of the PNDM paper, mapping x_t to x_{prev_t}. */
static void pndm_prev_sample(const sdw_sampler *s, const float *sample, int t, int prev_t,
                             const float *mo, float *out, size_t n) {
    const float a_t = sdw__alpha_at(s, t);
    const float a_prev = prev_t >= 0 ? sdw__alpha_at(s, prev_t) : s->final_alpha_cumprod;
    const float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    const float sample_coeff = sqrtf(a_prev / a_t);
    const float denom = a_t * sqrtf(b_prev) + sqrtf(a_t * b_t * a_prev);
    const float diff = a_prev - a_t;
    const bool v_pred = s->cfg.prediction_type == SDW_PRED_V;
    const float sqrt_a = sqrtf(a_t), sqrt_b = sqrtf(b_t);
    for (size_t k = 0; k < n; k++) {
        float e = v_pred ? sqrt_a * mo[k] + sqrt_b * sample[k] : mo[k];
        out[k] = sample_coeff * sample[k] - (diff * e) / denom;
    }
}

/* Appends a model output to the history (ets), dropping the oldest when full. */
static void pndm_push(sdw_sampler *s, const float *mo, size_t n) {
    if (s->n_hist == SDW__SAMPLER_HIST) {
        float *oldest = s->hist[0];
        memmove(s->hist, s->hist + 1, (SDW__SAMPLER_HIST - 1) * sizeof s->hist[0]);
        s->hist[SDW__SAMPLER_HIST - 1] = oldest;
        s->n_hist--;
    }
    memcpy(s->hist[s->n_hist++], mo, n * sizeof *mo);
}

static void pndm_step_plms(sdw_sampler *s, int t, const float *mo, float *x, size_t n) {
    const int ratio = s->n_train / s->steps;
    int prev_t = t - ratio;
    if (s->counter != 1) {
        pndm_push(s, mo, n); /* ets = ets[-3:] + [mo]: capacity 4 keeps the last 3 + new */
    } else {
        prev_t = t;
        t = t + ratio;
    }
    float *m = s->tmp;
    const float *sample = x;
    const int h = s->n_hist;
    float *const *e = s->hist; /* e[h-1] is ets[-1] */
    if (h == 1 && s->counter == 0) {
        memcpy(m, mo, n * sizeof *m);
        memcpy(s->cur_sample, x, n * sizeof *x);
        s->have_cur_sample = true;
    } else if (h == 1 && s->counter == 1) {
        for (size_t k = 0; k < n; k++)
            m[k] = (mo[k] + e[0][k]) / 2.0f;
        sample = s->cur_sample; /* restart from x_t of the first call */
        s->have_cur_sample = false;
    } else if (h == 2) {
        for (size_t k = 0; k < n; k++)
            m[k] = (3.0f * e[1][k] - e[0][k]) / 2.0f;
    } else if (h == 3) {
        for (size_t k = 0; k < n; k++)
            m[k] = (23.0f * e[2][k] - 16.0f * e[1][k] + 5.0f * e[0][k]) / 12.0f;
    } else {
        const float c = (float)(1.0 / 24);
        for (size_t k = 0; k < n; k++)
            m[k] = c * (55.0f * e[3][k] - 59.0f * e[2][k] + 37.0f * e[1][k] - 9.0f * e[0][k]);
    }
    pndm_prev_sample(s, sample, t, prev_t, m, x, n);
    s->counter++;
}

/* step_prk: classic fourth-order Runge-Kutta over pairs of half steps. */
static void pndm_step_prk(sdw_sampler *s, int t_in, const float *mo, float *x, size_t n) {
    const int diff_to_prev = (s->counter % 2) ? 0 : s->n_train / s->steps / 2;
    const int prev_t = t_in - diff_to_prev;
    const int t = (int)s->timesteps[s->counter / 4 * 4];
    float *acc = s->cur_model_output;
    float *m = s->tmp;
    const float sixth = (float)(1.0 / 6), third = (float)(1.0 / 3);
    switch (s->counter % 4) {
    case 0:
        for (size_t k = 0; k < n; k++)
            acc[k] = sixth * mo[k];                       /* 0 + 1/6 mo */
        memcpy(s->hist[s->n_hist++], mo, n * sizeof *mo); /* ets.append */
        memcpy(s->cur_sample, x, n * sizeof *x);
        s->have_cur_sample = true;
        memcpy(m, mo, n * sizeof *m);
        break;
    case 1:
    case 2:
        for (size_t k = 0; k < n; k++)
            acc[k] = acc[k] + third * mo[k];
        memcpy(m, mo, n * sizeof *m);
        break;
    default:
        for (size_t k = 0; k < n; k++)
            m[k] = acc[k] + sixth * mo[k];
        memset(acc, 0, n * sizeof *acc);
        break;
    }
    pndm_prev_sample(s, s->cur_sample, t, prev_t, m, x, n);
    s->counter++;
}

static void pndm_step(sdw_sampler *s, int i, const float *mo, float *x, size_t n, sdw_rng *rng) {
    (void)rng;
    const int t = (int)s->timesteps[i];
    if (s->counter < pndm_n_prk(s))
        pndm_step_prk(s, t, mo, x, n);
    else
        pndm_step_plms(s, t, mo, x, n);
}

const sdw__sampler_ops sdw__sampler_pndm = {
    .name = "pndm",
    .diffusers_class = "PNDMScheduler",
    .default_spacing = SDW_SPACING_LEADING,
    .karras_ok = false,
    .setup = pndm_setup,
    .step = pndm_step,
    .scale_model_input = NULL,
    .add_noise = alpha_add_noise,
};
