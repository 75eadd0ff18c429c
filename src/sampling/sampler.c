/* sampling/sampler.c — sampler creation, public dispatch, img2img start, and the numpy
 * schedule arithmetic the diffusers schedulers are written in. */
#include "sampling/sampler_impl.h"

#include "sampling/np_math.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static const sdw__sampler_ops *const k_samplers[] = {
    &sdw__sampler_ddim, &sdw__sampler_pndm, &sdw__sampler_euler, &sdw__sampler_euler_a,
    &sdw__sampler_dpmpp2m, &sdw__sampler_heun, &sdw__sampler_lms, &sdw__sampler_unipc,
    &sdw__sampler_lcm,
};

/* Same order as k_samplers; test_schedules creates every listed name. */
static const char *const k_names[] = {"ddim", "pndm", "euler", "euler_a", "dpm++2m",
                                      "heun", "lms",  "unipc", "lcm",     NULL};

const char *const *sdw_sampler_names(void) {
    return k_names;
}

static const char *const k_flow_names[] = {"euler", NULL};

const char *const *sdw_sampler_names_for(const sdw_scheduler_config *cfg) {
    return cfg->flow_matching ? k_flow_names : k_names;
}

static const sdw__sampler_ops *find_ops(const char *name) {
    for (size_t i = 0; i < SDW_ARRAY_LEN(k_samplers); i++)
        if (strcmp(k_samplers[i]->name, name) == 0) return k_samplers[i];
    return NULL;
}

/* The implementation of name for cfg's kind of schedule, or NULL. */
static const sdw__sampler_ops *find_ops_for(const char *name, const sdw_scheduler_config *cfg) {
    if (!cfg->flow_matching) return find_ops(name);
    return strcmp(name, sdw__sampler_flow_euler.name) == 0 ? &sdw__sampler_flow_euler : NULL;
}

bool sdw_sampler_supports_karras(const char *name) {
    const sdw__sampler_ops *ops = find_ops(name);
    return ops && ops->karras_ok;
}

/* ---- numpy-compatible arithmetic ---- */

void sdw__np_linspace(double start, double stop, int num, double *out) {
    if (num == 1) {
        out[0] = start;
        return;
    }
    const double step = (stop - start) / (num - 1);
    for (int i = 0; i < num; i++)
        out[i] = i * step + start;
    out[num - 1] = stop;
}

int sdw__np_arange_len(double start, double stop, double step) {
    double len = ceil((stop - start) / step);
    return len > 0 ? (int)len : 0;
}

void sdw__np_arange(double start, double step, int len, double *out) {
    const double delta = (start + step) - start; /* numpy fills from the first two values */
    for (int i = 0; i < len; i++)
        out[i] = start + i * delta;
}

double sdw__np_round(double v) {
    return nearbyint(v);
}

double sdw__np_interp_index(double x, const float *fp, int n) {
    if (x <= 0) return fp[0];
    if (x >= n - 1) return fp[n - 1];
    int j = (int)floor(x);
    if (x == j) return fp[j];
    const double slope = ((double)fp[j + 1] - fp[j]) / 1.0; /* xp[j+1] - xp[j] = 1 */
    return slope * (x - j) + fp[j];
}

void sdw__sigma_table(const float *ac, int n, float *out) {
    for (int t = 0; t < n; t++)
        out[t] = sqrtf((1.0f - ac[t]) / ac[t]);
}

double sdw__sigma_to_t(double sigma, const float *log_sigmas, int n) {
    /* numpy < 2 value-based casting: a float64 scalar meeting a float32 array is cast down, so
     * the distances, the bracket and the weight are all float32; only the final blend of the
     * int64 indices is float64. */
    const float log_sigma = (float)log(sigma);
    int low = 0; /* last k with log_sigma >= log_sigmas[k] (cumsum(...).argmax()), or 0 */
    for (int k = 0; k < n; k++)
        if (log_sigma - log_sigmas[k] >= 0) low = k;
    if (low > n - 2) low = n - 2;
    const float lo = log_sigmas[low], hi = log_sigmas[low + 1];
    float w = (lo - log_sigma) / (lo - hi);
    w = w < 0 ? 0 : (w > 1 ? 1 : w);
    return (double)(1.0f - w) * low + (double)w * (low + 1);
}

void sdw__karras_sigmas(double sigma_min, double sigma_max, int n, double *out) {
    const double rho = 7.0; /* the value used in Karras et al. (2022) */
    double *ramp = sdw_xmalloc((size_t)n * sizeof *ramp);
    sdw__np_linspace(0, 1, n, ramp);
    const double min_inv_rho = pow(sigma_min, 1 / rho), max_inv_rho = pow(sigma_max, 1 / rho);
    for (int i = 0; i < n; i++)
        out[i] = pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
    free(ramp);
}

int sdw__sigma_schedule(const sdw_sampler *s, bool cfg_range, double **ts_out, double **sig_out) {
    const int n = s->steps, N = s->n_train;
    int len = n;
    double *ts = NULL;
    switch (s->cfg.timestep_spacing) {
    case SDW_SPACING_LINSPACE: /* np.linspace(0, N - 1, n, dtype=float32)[::-1] */
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
    case SDW_SPACING_LEADING: /* (arange(n) * (N // n)).round()[::-1] as float32, + offset */
        ts = sdw_xmalloc((size_t)n * sizeof *ts);
        for (int k = 0; k < n; k++)
            ts[k] = (float)((double)(n - 1 - k) * (N / n)) + (float)s->cfg.steps_offset;
        break;
    case SDW_SPACING_TRAILING: { /* arange(N, 0, -N / n).round() as float32, - 1 */
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
        float *log_sigmas = sdw_xmalloc((size_t)N * sizeof *log_sigmas);
        for (int t = 0; t < N; t++) /* np.log on the float32 table */
            log_sigmas[t] = sdw__numpy_logf(table[t]);
        const bool lo_set = cfg_range && !isnan(s->cfg.sigma_min);
        const bool hi_set = cfg_range && !isnan(s->cfg.sigma_max);
        sdw__karras_sigmas(lo_set ? s->cfg.sigma_min : sig[len - 1],
                           hi_set ? s->cfg.sigma_max : sig[0], len, sig);
        for (int k = 0; k < len; k++)
            ts[k] = sdw__sigma_to_t(sig[k], log_sigmas, N);
        free(log_sigmas);
    }
    free(table);
    *ts_out = ts;
    *sig_out = sig;
    return len;
}

float sdw__alpha_at(const sdw_sampler *s, int t) {
    if (t < 0) t += s->n_train;
    SDW_ASSERT(t >= 0 && t < s->n_train);
    return s->alphas_cumprod[t];
}

/* ---- lifecycle ---- */

void sdw_sampler_destroy(sdw_sampler *s) {
    if (!s) return;
    free(s->alphas_cumprod);
    free(s->timesteps);
    free(s->sigmas);
    free(s->buf);
    free(s);
}

sdw_status sdw_sampler_create(const char *name, const sdw_scheduler_config *cfg,
                              const sdw_sampler_params *p, sdw_sampler **out, sdw_error *err) {
    const sdw__sampler_ops *ops = find_ops_for(name, cfg);
    if (!ops && cfg->flow_matching && find_ops(name))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "sampler \"%s\" cannot run a flow-matching schedule (available: euler)",
                             name);
    if (!ops) return sdw_error_set(err, SDW_E_INVALID_ARG, "unknown sampler \"%s\"", name);
    if (cfg->num_train_timesteps < 2)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "num_train_timesteps %d < 2",
                             cfg->num_train_timesteps);
    const int steps = p->steps;
    if (steps < 1 || steps > cfg->num_train_timesteps)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "steps %d out of range [1, %d]", steps,
                             cfg->num_train_timesteps);
    const bool karras = p->karras || (ops->karras_ok && cfg->use_karras_sigmas);
    if (karras && !ops->karras_ok)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "sampler \"%s\" has no Karras sigma schedule",
                             name);
    sdw_sampler *s = sdw_xcalloc(1, sizeof *s);
    s->ops = ops;
    s->cfg = *cfg;
    if (s->cfg.timestep_spacing == SDW_SPACING_CLASS_DEFAULT)
        s->cfg.timestep_spacing = ops->default_spacing;
    s->karras = karras;
    s->steps = steps;
    s->image_seq_len = p->image_seq_len;
    s->n_train = cfg->num_train_timesteps;
    s->alphas_cumprod = sdw_xmalloc((size_t)s->n_train * sizeof(float));
    sdw_status st = ops->setup(s, err);
    if (st != SDW_OK) {
        sdw_error_prefix(err, "sampler %s", name);
        sdw_sampler_destroy(s);
        return st;
    }
    SDW_ASSERT(s->n_calls >= 1 && s->timesteps);
    /* A schedule that repeats its first timestep cannot run from call 0 (step() says so), but
     * an image-to-image start further in may still be valid: not an error here. */
    sdw_sampler_set_begin(s, 0, NULL);
    *out = s;
    return SDW_OK;
}

const char *sdw_sampler_name(const sdw_sampler *s) {
    return s->ops->name;
}
int sdw_sampler_n_calls(const sdw_sampler *s) {
    return s->n_calls;
}
float sdw_sampler_init_noise_sigma(const sdw_sampler *s) {
    return s->init_noise_sigma;
}
int sdw_sampler_begin(const sdw_sampler *s) {
    return s->begin;
}
int sdw_sampler_order(const sdw_sampler *s) {
    return s->ops->order > 0 ? s->ops->order : 1;
}

float sdw_sampler_timestep(const sdw_sampler *s, int i) {
    SDW_ASSERT(i >= 0 && i < s->n_calls);
    return s->timesteps[i];
}

float sdw_sampler_sigma(const sdw_sampler *s, int i) {
    SDW_ASSERT(i >= 0 && i <= s->n_calls);
    return s->sigmas ? s->sigmas[i] : NAN;
}

void sdw_sampler_scale_model_input(const sdw_sampler *s, int i, const float *x, float *out,
                                   size_t n) {
    SDW_ASSERT(i >= 0 && i < s->n_calls);
    if (s->ops->scale_model_input)
        s->ops->scale_model_input(s, i, x, out, n);
    else if (out != x)
        memmove(out, x, n * sizeof *out);
}

/* The sigma-indexed samplers step from schedule index begin + offset to n_calls - 1 + offset:
 * a start on a timestep that repeats later (offset > 0) would step past the schedule's end, as
 * diffusers' own index lookup does there (an IndexError or assertion at the last step). */
static sdw_status overrun_error(const sdw_sampler *s, sdw_error *err) {
    if (!s->sigmas || s->sigma_offset <= 0) return SDW_OK;
    if (sdw_sampler_order(s) > 1) /* heun: the caller did not multiply the start by the order */
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "%s: call %d is inside a step; a run starts at a step boundary, "
                             "call t_start * %d",
                             s->ops->name, s->begin, sdw_sampler_order(s));
    return sdw_error_set(err, SDW_E_INVALID_ARG,
                         "%s: timestep %g repeats at call %d, so a run starting there steps past "
                         "the end of the schedule (diffusers fails the same way); try another "
                         "step count",
                         s->ops->name, (double)s->timesteps[s->begin], s->begin);
}

/* Lazily sizes the run buffers to the latents; n is fixed from then on. */
static sdw_status ensure_buffers(sdw_sampler *s, size_t n, sdw_error *err) {
    if (s->buf) {
        SDW_ASSERT(n == s->n); /* one sampler serves one latent shape */
        return SDW_OK;
    }
    enum { N_BUFS = 4 + SDW__SAMPLER_HIST };
    size_t total;
    if (n == 0 || !sdw_size_mul(n, N_BUFS * sizeof(float), &total))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "latent size %zu not usable", n);
    s->buf = malloc(total);
    if (!s->buf)
        return sdw_error_set(err, SDW_E_NOMEM, "sampler buffers: out of memory (%zu bytes)", total);
    s->n = n;
    float *p = s->buf;
    s->noise = p, p += n;
    s->tmp = p, p += n;
    s->cur_sample = p, p += n;
    s->cur_model_output = p, p += n;
    for (int k = 0; k < SDW__SAMPLER_HIST; k++)
        s->hist[k] = p, p += n;
    return SDW_OK;
}

sdw_status sdw_sampler_step(sdw_sampler *s, int i, const float *model_out, float *latents, size_t n,
                            sdw_rng *rng, sdw_error *err) {
    SDW_ASSERT(i == s->next_call && i < s->n_calls); /* calls in order, from begin */
    sdw_status st = overrun_error(s, err);
    if (st != SDW_OK) return st;
    st = ensure_buffers(s, n, err);
    if (st != SDW_OK) return st;
    s->noise_valid = false;
    s->ops->step(s, i, model_out, latents, n, rng);
    s->next_call++;
    return SDW_OK;
}

const float *sdw_sampler_last_noise(const sdw_sampler *s) {
    return s->noise_valid ? s->noise : NULL;
}

/* ---- image-to-image ---- */

int sdw_sampler_begin_for_strength(int steps, double strength) {
    int init = (int)(steps * strength); /* Python int(): truncation */
    if (init > steps) init = steps;
    int t_start = steps - init;
    return t_start > 0 ? t_start : 0;
}

int sdw_sampler_begin_for_strength_flow(int steps, double strength) {
    double init = steps * strength;
    if (init > steps) init = steps;
    const double start = steps - init;
    return start > 0 ? (int)start : 0; /* int() after max(., 0), as the reference */
}

/* diffusers' _init_step_index: the sigma index of the schedule's first timestep of this run is
 * the position of timesteps[begin] in the schedule, taking the second occurrence if it repeats
 * (so that a restart in the middle never skips a sigma). */
int sdw__sampler_step_index_of(const sdw_sampler *s, int begin) {
    const float t = s->timesteps[begin];
    int first = -1;
    for (int k = 0; k < s->n_calls; k++) {
        if (s->timesteps[k] != t) continue;
        if (first >= 0) return k;
        first = k;
    }
    return first;
}

sdw_status sdw_sampler_set_begin(sdw_sampler *s, int begin, sdw_error *err) {
    if (begin < 0 || begin >= s->n_calls)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "begin %d out of range [0, %d)", begin,
                             s->n_calls);
    s->begin = begin;
    s->next_call = begin;
    s->sigma_offset = sdw__sampler_step_index_of(s, begin) - begin;
    s->n_hist = 0;
    s->counter = 0;
    s->lower_order_nums = 0;
    s->have_cur_sample = false;
    s->this_order = 0;
    s->heun_pending = false;
    s->heun_dt = 0.0f;
    s->noise_valid = false;
    return overrun_error(s, err);
}

void sdw_sampler_add_noise(const sdw_sampler *s, const float *x0, const float *noise, float *out,
                           size_t n) {
    s->ops->add_noise(s, s->begin, x0, noise, out, n);
}

void sdw_sampler_add_noise_at(const sdw_sampler *s, int i, const float *x0, const float *noise,
                              float *out, size_t n) {
    SDW_ASSERT(i >= 0 && i < s->n_calls);
    s->ops->add_noise(s, i, x0, noise, out, n);
}
