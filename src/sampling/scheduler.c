/* sampling/scheduler.c — scheduler_config.json parsing and the training alpha_bar table. */
#include "sampling/scheduler.h"

#include "core/common.h"
#include "io/json_config.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

/* Torch's elementwise float32 ops round after every operation; keep the compiler from fusing
 * a*b+c where the reference did not (see linspace_f32 for where it did). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define MAX_TRAIN_TIMESTEPS 100000 /* far above any real schedule (1000); bounds allocations */

const char *sdw_beta_schedule_str(sdw_beta_schedule v) {
    switch (v) {
    case SDW_BETA_LINEAR:
        return "linear";
    case SDW_BETA_SCALED_LINEAR:
        return "scaled_linear";
    case SDW_BETA_SQUAREDCOS_CAP_V2:
        return "squaredcos_cap_v2";
    }
    return "?";
}

const char *sdw_prediction_type_str(sdw_prediction_type v) {
    switch (v) {
    case SDW_PRED_EPSILON:
        return "epsilon";
    case SDW_PRED_V:
        return "v_prediction";
    case SDW_PRED_SAMPLE:
        return "sample";
    }
    return "?";
}

const char *sdw_timestep_spacing_str(sdw_timestep_spacing v) {
    switch (v) {
    case SDW_SPACING_CLASS_DEFAULT:
        return "(class default)";
    case SDW_SPACING_LEADING:
        return "leading";
    case SDW_SPACING_TRAILING:
        return "trailing";
    case SDW_SPACING_LINSPACE:
        return "linspace";
    }
    return "?";
}

sdw_scheduler_config sdw_scheduler_config_default(void) {
    return (sdw_scheduler_config){
        .num_train_timesteps = 1000,
        .beta_start = 0.0001,
        .beta_end = 0.02,
        .beta_schedule = SDW_BETA_LINEAR,
        .prediction_type = SDW_PRED_EPSILON,
        .timestep_spacing = SDW_SPACING_CLASS_DEFAULT,
        .steps_offset = 0,
        .set_alpha_to_one = SDW_OPT_CLASS_DEFAULT,
        .clip_sample = true,
        .clip_sample_range = 1.0,
        .skip_prk_steps = false,
        .rescale_betas_zero_snr = false,
        .use_karras_sigmas = false,
        .sigma_min = NAN,
        .sigma_max = NAN,
        .lambda_min_clipped = -INFINITY,
        .shift = 1.0,
        .base_shift = 0.5,
        .max_shift = 1.15,
        .base_image_seq_len = 256,
        .max_image_seq_len = 4096,
    };
}

sdw_scheduler_config sdw_scheduler_config_sd15(void) {
    sdw_scheduler_config c = sdw_scheduler_config_default();
    snprintf(c.class_name, sizeof c.class_name, "PNDMScheduler");
    c.beta_start = 0.00085;
    c.beta_end = 0.012;
    c.beta_schedule = SDW_BETA_SCALED_LINEAR;
    c.timestep_spacing = SDW_SPACING_LEADING;
    c.steps_offset = 1;
    c.set_alpha_to_one = SDW_OPT_FALSE;
    c.clip_sample = false;
    c.skip_prk_steps = true;
    return c;
}

const char *sdw_scheduler_config_sampler_name(const sdw_scheduler_config *cfg) {
    static const struct {
        const char *cls, *sampler;
    } map[] = {
        {"DDIMScheduler", "ddim"},
        {"PNDMScheduler", "pndm"},
        {"EulerDiscreteScheduler", "euler"},
        {"EulerAncestralDiscreteScheduler", "euler_a"},
        {"DPMSolverMultistepScheduler", "dpm++2m"},
        {"FlowMatchEulerDiscreteScheduler", "euler"},
        {"HeunDiscreteScheduler", "heun"},
        {"LMSDiscreteScheduler", "lms"},
        {"UniPCMultistepScheduler", "unipc"},
        {"LCMScheduler", "lcm"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(map); i++)
        if (strcmp(cfg->class_name, map[i].cls) == 0) return map[i].sampler;
    return NULL;
}

/* ---- relaxed JSON ---- */

void *sdw_json_load_relaxed(const char *text, size_t len, sdw_error *err) {
    sdw_json_config c;
    if (sdw_json_config_parse(text, len, "JSON", &c, err) != SDW_OK) return NULL;
    json_t *root = json_incref(c.root);
    sdw_json_config_free(&c);
    return root;
}

/* ---- config parsing (typed reads through io/json_config) ----
 *
 * null means something here that json_config's getters (which skip it as "unset") do not say,
 * so it is looked at first, key by key, as diffusers' schedulers take it: a null bool is False
 * (Optional[bool] = None), a null Karras range or clip range is "from the schedule" (NaN), a
 * null lambda_min_clipped is no clipping (how a -Infinity may have been sanitised); a null
 * number, integer or enum is a wrong type. NaN (the string a Python NaN literal became) passes
 * where a number is read here: sigma_min / sigma_max take it for "from the schedule", the range
 * checks below refuse it where it cannot be. */

/* The member when present and JSON null. */
static bool is_null(const sdw_json_config *j, const char *key) {
    return json_is_null(json_object_get(j->root, key));
}

static sdw_status null_refused(const sdw_json_config *j, const char *key, const char *want,
                               sdw_error *err) {
    return sdw_error_set(err, SDW_E_FORMAT, "%s: \"%s\": want %s, got null", j->what, key, want);
}

/* A number (any value, NaN included); null refused. */
static sdw_status get_number(const sdw_json_config *j, const char *key, double *out,
                             sdw_error *err) {
    if (is_null(j, key)) return null_refused(j, key, "a number", err);
    const char *s = json_string_value(json_object_get(j->root, key));
    if (s && strcmp(s, "NaN") == 0) {
        *out = NAN;
        return SDW_OK;
    }
    return sdw_json_config_number(j, key, -INFINITY, INFINITY, out, err);
}

/* A number where null stands for if_null. */
static sdw_status get_number_or(const sdw_json_config *j, const char *key, double if_null,
                                double *out, sdw_error *err) {
    if (is_null(j, key)) {
        *out = if_null;
        return SDW_OK;
    }
    return get_number(j, key, out, err);
}

static sdw_status get_int(const sdw_json_config *j, const char *key, int lo, int hi, int *out,
                          sdw_error *err) {
    if (is_null(j, key)) return null_refused(j, key, "an integer", err);
    return sdw_json_config_int(j, key, lo, hi, out, err);
}

/* A bool; null reads as false (Optional[bool] = None). */
static sdw_status get_bool(const sdw_json_config *j, const char *key, bool *out, sdw_error *err) {
    if (is_null(j, key)) {
        *out = false;
        return SDW_OK;
    }
    return sdw_json_config_bool(j, key, out, err);
}

/* One of names[] into values[]; null refused. */
static sdw_status get_enum(const sdw_json_config *j, const char *key, const char *const *names,
                           const int *values, int n, int *out, sdw_error *err) {
    if (is_null(j, key)) return null_refused(j, key, "a string", err);
    int i = -1;
    sdw_status st = sdw_json_config_enum(j, key, names, n, &i, err);
    if (st == SDW_OK && i >= 0) *out = values[i];
    return st;
}

/* Whether key is absent, or a string equal to want (null is neither: refused by the caller). */
static bool absent_or(const sdw_json_config *j, const char *key, const char *want) {
    json_t *v = json_object_get(j->root, key);
    return !v || (json_is_string(v) && strcmp(json_string_value(v), want) == 0);
}

/* Keys whose only supported value is the default: anything else would change the math. */
static sdw_status check_unsupported(const sdw_json_config *j, sdw_error *err) {
    if (sdw_json_config_has(j, "trained_betas"))
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: \"trained_betas\" is not supported",
                             j->what);
    if (json_is_true(json_object_get(j->root, "thresholding")))
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: \"thresholding\": true is not supported",
                             j->what);
    if (!absent_or(j, "interpolation_type", "linear"))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: \"interpolation_type\": only \"linear\" is supported", j->what);
    if (!absent_or(j, "timestep_type", "discrete"))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: \"timestep_type\": only \"discrete\" is supported", j->what);
    return SDW_OK;
}

/* FlowMatchEulerDiscreteScheduler's keys (0.30.3), and refusals of the later versions' options
 * that would change its sigmas. */
static sdw_status parse_flow(const sdw_json_config *j, sdw_scheduler_config *c, sdw_error *err) {
    static const char *const later[] = {"use_karras_sigmas", "use_exponential_sigmas",
                                        "use_beta_sigmas", "invert_sigmas", "shift_terminal",
                                        "stochastic_sampling"};
    sdw_status st;
    for (size_t i = 0; i < SDW_ARRAY_LEN(later); i++) {
        json_t *v = json_object_get(j->root, later[i]);
        if (v && !json_is_null(v) && !json_is_false(v))
            return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: \"%s\" is not supported", j->what,
                                 later[i]);
    }
    if (!absent_or(j, "time_shift_type", "exponential"))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: \"time_shift_type\": only \"exponential\" is supported", j->what);
    struct {
        const char *key;
        double *dst;
    } nums[] = {{"shift", &c->shift}, {"base_shift", &c->base_shift}, {"max_shift", &c->max_shift}};
    for (size_t i = 0; i < SDW_ARRAY_LEN(nums); i++) /* null: the class default stays */
        if (!is_null(j, nums[i].key) && (st = get_number(j, nums[i].key, nums[i].dst, err)))
            return st;
    if ((st = get_bool(j, "use_dynamic_shifting", &c->use_dynamic_shifting, err)) ||
        (st = sdw_json_config_int(j, "base_image_seq_len", 1, 1 << 24, &c->base_image_seq_len,
                                  err)) ||
        (st = sdw_json_config_int(j, "max_image_seq_len", 1, 1 << 24, &c->max_image_seq_len, err)))
        return st;
    if (!(c->shift > 0 && c->shift < 1e6))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: \"shift\" %g must be in (0, 1e6)",
                             j->what, c->shift);
    if (c->use_dynamic_shifting &&
        (c->max_image_seq_len == c->base_image_seq_len || !isfinite(c->base_shift) ||
         !isfinite(c->max_shift) || fabs(c->base_shift) > 100 || fabs(c->max_shift) > 100))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "%s: dynamic shifting needs distinct base/max_image_seq_len and "
                             "finite base/max_shift within [-100, 100]",
                             j->what);
    return SDW_OK;
}

static sdw_status parse_into(const sdw_json_config *j, sdw_scheduler_config *c, sdw_error *err) {
    static const char *const sched_names[] = {"linear", "scaled_linear", "squaredcos_cap_v2"};
    static const int sched_vals[] = {SDW_BETA_LINEAR, SDW_BETA_SCALED_LINEAR,
                                     SDW_BETA_SQUAREDCOS_CAP_V2};
    static const char *const pred_names[] = {"epsilon", "v_prediction", "sample"};
    static const int pred_vals[] = {SDW_PRED_EPSILON, SDW_PRED_V, SDW_PRED_SAMPLE};
    static const char *const sp_names[] = {"leading", "trailing", "linspace"};
    static const int sp_vals[] = {SDW_SPACING_LEADING, SDW_SPACING_TRAILING, SDW_SPACING_LINSPACE};
    sdw_status st;
    int beta_schedule = (int)c->beta_schedule, prediction = (int)c->prediction_type,
        spacing = (int)c->timestep_spacing;
    bool alpha_to_one = false;

    if ((st = check_unsupported(j, err)) != SDW_OK) return st;
    const char *cls = json_string_value(json_object_get(j->root, "_class_name")); /* tolerant */
    if (cls) snprintf(c->class_name, sizeof c->class_name, "%s", cls);
    if ((st = get_int(j, "num_train_timesteps", 2, MAX_TRAIN_TIMESTEPS, &c->num_train_timesteps,
                      err)) ||
        (st = get_number(j, "beta_start", &c->beta_start, err)) ||
        (st = get_number(j, "beta_end", &c->beta_end, err)) ||
        (st = get_enum(j, "beta_schedule", sched_names, sched_vals, 3, &beta_schedule, err)) ||
        (st = get_enum(j, "prediction_type", pred_names, pred_vals, 3, &prediction, err)) ||
        (st = get_enum(j, "timestep_spacing", sp_names, sp_vals, 3, &spacing, err)) ||
        (st = get_int(j, "steps_offset", 0, MAX_TRAIN_TIMESTEPS, &c->steps_offset, err)))
        return st;
    c->beta_schedule = (sdw_beta_schedule)beta_schedule;
    c->prediction_type = (sdw_prediction_type)prediction;
    c->timestep_spacing = (sdw_timestep_spacing)spacing;
    if (json_object_get(j->root, "set_alpha_to_one")) {
        if ((st = get_bool(j, "set_alpha_to_one", &alpha_to_one, err))) return st;
        c->set_alpha_to_one = alpha_to_one ? SDW_OPT_TRUE : SDW_OPT_FALSE;
    }
    struct {
        const char *key;
        bool *dst;
    } bools[] = {{"clip_sample", &c->clip_sample},
                 {"skip_prk_steps", &c->skip_prk_steps},
                 {"rescale_betas_zero_snr", &c->rescale_betas_zero_snr},
                 {"use_karras_sigmas", &c->use_karras_sigmas}};
    for (size_t i = 0; i < SDW_ARRAY_LEN(bools); i++)
        if ((st = get_bool(j, bools[i].key, bools[i].dst, err))) return st;
    struct {
        const char *key;
        double *dst;
        double if_null;
    } nums[] = {{"clip_sample_range", &c->clip_sample_range, NAN},
                {"sigma_min", &c->sigma_min, NAN},
                {"sigma_max", &c->sigma_max, NAN},
                {"lambda_min_clipped", &c->lambda_min_clipped, -INFINITY}};
    for (size_t i = 0; i < SDW_ARRAY_LEN(nums); i++)
        if ((st = get_number_or(j, nums[i].key, nums[i].if_null, nums[i].dst, err))) return st;
    c->flow_matching = strcmp(c->class_name, "FlowMatchEulerDiscreteScheduler") == 0;
    if (c->flow_matching && (st = parse_flow(j, c, err)) != SDW_OK) return st;
    if (!(c->beta_start > 0 && c->beta_end > 0 && c->beta_start < 1 && c->beta_end < 1))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "%s: beta_start %g / beta_end %g out of (0, 1)", j->what,
                             c->beta_start, c->beta_end);
    if (!(c->clip_sample_range > 0))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: clip_sample_range %g must be > 0",
                             j->what, c->clip_sample_range);
    return SDW_OK;
}

/* Parses the wrapped config into *out (untouched on failure). */
static sdw_status parse(const sdw_json_config *j, sdw_scheduler_config *out, sdw_error *err) {
    sdw_scheduler_config c = sdw_scheduler_config_default();
    sdw_status st = parse_into(j, &c, err);
    if (st != SDW_OK) return st;
    *out = c;
    return SDW_OK;
}

sdw_status sdw_scheduler_config_from_json(const void *json, sdw_scheduler_config *out,
                                          sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_wrap((void *)json, "scheduler config", &j, err);
    if (st != SDW_OK) return st;
    st = parse(&j, out, err);
    sdw_json_config_free(&j);
    return st;
}

sdw_status sdw_scheduler_config_load(const char *path, sdw_scheduler_config *out, sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_load(path, &j, err); /* messages name path */
    if (st != SDW_OK) return st;
    st = parse(&j, out, err);
    sdw_json_config_free(&j);
    return st;
}

/* ---- alpha_bar ---- */

/* torch.linspace(start, end, steps, dtype=float32) as the AVX2 CPU kernel computes it
 * (RangeFactoriesKernel.cpp): float step; the first half counts up from start, the second half
 * down from end; pairs of 8-wide vectors are Vectorized::arange(base, step), the remainder is
 * scalar; the reference build fuses each `a + k * step` into one FMA. Bit-exact against the
 * goldens' sched.alphas_cumprod. */
static void linspace_f32(float start, float end, int steps, float *out) {
    enum { W = 8 };
    const float step = (end - start) / (float)(steps - 1);
    const int64_t half = steps / 2;
    int64_t i = 0;
    for (; i <= (int64_t)steps - 2 * W; i += 2 * W) {
        for (int v = 0; v < 2; v++) {
            int64_t idx = i + v * W;
            float base = idx < half ? fmaf(step, (float)idx, start)
                                    : fmaf(-step, (float)(steps - idx - 1), end);
            for (int k = 0; k < W; k++)
                out[idx + k] = fmaf((float)k, step, base);
        }
    }
    for (; i < steps; i++)
        out[i] = i < half ? fmaf(step, (float)i, start) : fmaf(-step, (float)(steps - i - 1), end);
}

/* torch.cumprod on float32 (cumprod_cpu_kernel): accumulates in double, rounds each output. */
static void cumprod_f32(const float *in, int n, float *out) {
    double acc = 1.0;
    for (int i = 0; i < n; i++) {
        acc *= in[i];
        out[i] = (float)acc;
    }
}

/* betas_for_alpha_bar (diffusers, cosine): computed in Python doubles, stored as float32. */
static double cosine_alpha_bar(double t) {
    double c = cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

/* rescale_zero_terminal_snr (diffusers; arXiv 2305.08891 Algorithm 1), in float32 ops. */
static void rescale_zero_terminal_snr(float *betas, int n) {
    float *a = sdw_xmalloc((size_t)n * sizeof *a);
    for (int i = 0; i < n; i++)
        a[i] = 1.0f - betas[i];
    cumprod_f32(a, n, a);
    for (int i = 0; i < n; i++)
        a[i] = sqrtf(a[i]); /* alphas_bar_sqrt */
    const float s0 = a[0], sT = a[n - 1];
    const float scale = s0 / (s0 - sT);
    for (int i = 0; i < n; i++) {
        a[i] = a[i] - sT;
        a[i] = a[i] * scale;
        a[i] = a[i] * a[i]; /* alphas_bar */
    }
    betas[0] = 1.0f - a[0];
    for (int i = n - 1; i >= 1; i--)
        betas[i] = 1.0f - a[i] / a[i - 1];
    free(a);
}

sdw_status sdw_scheduler_alphas_cumprod(const sdw_scheduler_config *cfg, bool rescale_zero_snr,
                                        float *out, sdw_error *err) {
    const int n = cfg->num_train_timesteps;
    if (n < 2 || n > MAX_TRAIN_TIMESTEPS)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "num_train_timesteps %d out of range", n);
    switch (cfg->beta_schedule) {
    case SDW_BETA_LINEAR:
        linspace_f32((float)cfg->beta_start, (float)cfg->beta_end, n, out);
        break;
    case SDW_BETA_SCALED_LINEAR:
        linspace_f32((float)sqrt(cfg->beta_start), (float)sqrt(cfg->beta_end), n, out);
        for (int i = 0; i < n; i++)
            out[i] = out[i] * out[i];
        break;
    case SDW_BETA_SQUAREDCOS_CAP_V2:
        for (int i = 0; i < n; i++) {
            double t1 = (double)i / n, t2 = (double)(i + 1) / n;
            out[i] = (float)fmin(1 - cosine_alpha_bar(t2) / cosine_alpha_bar(t1), 0.999);
        }
        break;
    default:
        return sdw_error_set(err, SDW_E_INVALID_ARG, "beta_schedule %d unknown",
                             (int)cfg->beta_schedule);
    }
    if (rescale_zero_snr) rescale_zero_terminal_snr(out, n);
    for (int i = 0; i < n; i++)
        out[i] = 1.0f - out[i];
    cumprod_f32(out, n, out);
    return SDW_OK;
}
