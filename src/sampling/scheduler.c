/* sampling/scheduler.c — scheduler_config.json parsing and the training alpha_bar table. */
#include "sampling/scheduler.h"

#include "core/common.h"

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
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(map); i++)
        if (strcmp(cfg->class_name, map[i].cls) == 0) return map[i].sampler;
    return NULL;
}

/* ---- relaxed JSON ---- */

void *sdw_json_load_relaxed(const char *text, size_t len, sdw_error *err) {
    static const char *const words[] = {"-Infinity", "Infinity", "NaN"};
    /* Each replaced literal (>= 3 chars) grows by 2 quotes: 2 * len bounds the result. */
    size_t cap;
    if (!sdw_size_mul(len, 2, &cap) || !sdw_size_add(cap, 1, &cap)) {
        sdw_error_set(err, SDW_E_NOMEM, "JSON text too large");
        return NULL;
    }
    char *buf = malloc(cap);
    if (!buf) {
        sdw_error_set(err, SDW_E_NOMEM, "out of memory for %zu bytes of JSON", len);
        return NULL;
    }
    size_t o = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (in_string) {
            buf[o++] = ch;
            if (ch == '\\' && i + 1 < len)
                buf[o++] = text[++i];
            else if (ch == '"')
                in_string = false;
            continue;
        }
        if (ch == '"') {
            in_string = true;
            buf[o++] = ch;
            continue;
        }
        bool replaced = false;
        for (size_t w = 0; w < SDW_ARRAY_LEN(words) && !replaced; w++) {
            size_t wl = strlen(words[w]);
            if (len - i >= wl && memcmp(text + i, words[w], wl) == 0) {
                buf[o++] = '"';
                memcpy(buf + o, words[w], wl);
                o += wl;
                buf[o++] = '"';
                i += wl - 1;
                replaced = true;
            }
        }
        if (!replaced) buf[o++] = ch;
    }
    json_error_t je;
    json_t *root = json_loadb(buf, o, 0, &je);
    free(buf);
    if (!root)
        sdw_error_set(err, SDW_E_FORMAT, "invalid JSON at line %d column %d: %s", je.line,
                      je.column, je.text);
    return root;
}

/* ---- config parsing ---- */

static sdw_status get_number(json_t *v, const char *key, double *out, sdw_error *err) {
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return SDW_OK;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "Infinity") == 0)
            *out = INFINITY;
        else if (strcmp(s, "-Infinity") == 0)
            *out = -INFINITY;
        else if (strcmp(s, "NaN") == 0)
            *out = NAN;
        else
            return sdw_error_set(err, SDW_E_FORMAT, "\"%s\": want a number, got \"%s\"", key, s);
        return SDW_OK;
    }
    return sdw_error_set(err, SDW_E_FORMAT, "\"%s\": want a number", key);
}

static sdw_status get_int(json_t *v, const char *key, int lo, int hi, int *out, sdw_error *err) {
    double d;
    if (json_is_integer(v))
        d = (double)json_integer_value(v);
    else if (json_is_real(v))
        d = json_real_value(v);
    else
        return sdw_error_set(err, SDW_E_FORMAT, "\"%s\": want an integer", key);
    if (!(d >= lo && d <= hi) || d != floor(d))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "\"%s\": %g is not an integer in [%d, %d]",
                             key, d, lo, hi);
    *out = (int)d;
    return SDW_OK;
}

static sdw_status get_bool(json_t *v, const char *key, bool *out, sdw_error *err) {
    if (json_is_null(v)) { /* Optional[bool] = None: diffusers treats it as false */
        *out = false;
        return SDW_OK;
    }
    if (!json_is_boolean(v))
        return sdw_error_set(err, SDW_E_FORMAT, "\"%s\": want true/false", key);
    *out = json_is_true(v);
    return SDW_OK;
}

/* Maps a string value onto one of names[] (index into values[]). */
static sdw_status get_enum(json_t *v, const char *key, const char *const *names, const int *values,
                           size_t n, int *out, sdw_error *err) {
    if (!json_is_string(v)) return sdw_error_set(err, SDW_E_FORMAT, "\"%s\": want a string", key);
    const char *s = json_string_value(v);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = values[i];
            return SDW_OK;
        }
    }
    return sdw_error_set(err, SDW_E_UNSUPPORTED, "\"%s\": \"%s\" is not supported", key, s);
}

/* Keys whose only supported value is the default: anything else would change the math. */
static sdw_status check_unsupported(json_t *obj, sdw_error *err) {
    json_t *v = json_object_get(obj, "trained_betas");
    if (v && !json_is_null(v))
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "\"trained_betas\" is not supported");
    v = json_object_get(obj, "thresholding");
    if (v && json_is_true(v))
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "\"thresholding\": true is not supported");
    v = json_object_get(obj, "interpolation_type");
    if (v && !(json_is_string(v) && strcmp(json_string_value(v), "linear") == 0))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "\"interpolation_type\": only \"linear\" is supported");
    v = json_object_get(obj, "timestep_type");
    if (v && !(json_is_string(v) && strcmp(json_string_value(v), "discrete") == 0))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "\"timestep_type\": only \"discrete\" is supported");
    return SDW_OK;
}

/* FlowMatchEulerDiscreteScheduler's keys (0.30.3), and refusals of the later versions' options
 * that would change its sigmas. */
static sdw_status parse_flow(json_t *obj, sdw_scheduler_config *c, sdw_error *err) {
    static const char *const later[] = {"use_karras_sigmas", "use_exponential_sigmas",
                                        "use_beta_sigmas", "invert_sigmas", "shift_terminal",
                                        "stochastic_sampling"};
    sdw_status st;
    json_t *v;
    for (size_t i = 0; i < SDW_ARRAY_LEN(later); i++) {
        v = json_object_get(obj, later[i]);
        if (v && !json_is_null(v) && !json_is_false(v))
            return sdw_error_set(err, SDW_E_UNSUPPORTED, "\"%s\" is not supported", later[i]);
    }
    v = json_object_get(obj, "time_shift_type");
    if (v && !(json_is_string(v) && strcmp(json_string_value(v), "exponential") == 0))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "\"time_shift_type\": only \"exponential\" is supported");
    struct {
        const char *key;
        double *dst;
    } nums[] = {{"shift", &c->shift}, {"base_shift", &c->base_shift}, {"max_shift", &c->max_shift}};
    for (size_t i = 0; i < SDW_ARRAY_LEN(nums); i++)
        if ((v = json_object_get(obj, nums[i].key)) && !json_is_null(v) &&
            (st = get_number(v, nums[i].key, nums[i].dst, err)) != SDW_OK)
            return st;
    if ((v = json_object_get(obj, "use_dynamic_shifting")) &&
        (st = get_bool(v, "use_dynamic_shifting", &c->use_dynamic_shifting, err)) != SDW_OK)
        return st;
    if ((v = json_object_get(obj, "base_image_seq_len")) && !json_is_null(v) &&
        (st = get_int(v, "base_image_seq_len", 1, 1 << 24, &c->base_image_seq_len, err)) != SDW_OK)
        return st;
    if ((v = json_object_get(obj, "max_image_seq_len")) && !json_is_null(v) &&
        (st = get_int(v, "max_image_seq_len", 1, 1 << 24, &c->max_image_seq_len, err)) != SDW_OK)
        return st;
    if (!(c->shift > 0 && c->shift < 1e6))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "\"shift\" %g must be in (0, 1e6)", c->shift);
    if (c->use_dynamic_shifting &&
        (c->max_image_seq_len == c->base_image_seq_len || !isfinite(c->base_shift) ||
         !isfinite(c->max_shift) || fabs(c->base_shift) > 100 || fabs(c->max_shift) > 100))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "dynamic shifting needs distinct base/max_image_seq_len and finite "
                             "base/max_shift within [-100, 100]");
    return SDW_OK;
}

static sdw_status parse_into(json_t *obj, sdw_scheduler_config *c, sdw_error *err) {
    static const char *const sched_names[] = {"linear", "scaled_linear", "squaredcos_cap_v2"};
    static const int sched_vals[] = {SDW_BETA_LINEAR, SDW_BETA_SCALED_LINEAR,
                                     SDW_BETA_SQUAREDCOS_CAP_V2};
    static const char *const pred_names[] = {"epsilon", "v_prediction", "sample"};
    static const int pred_vals[] = {SDW_PRED_EPSILON, SDW_PRED_V, SDW_PRED_SAMPLE};
    static const char *const sp_names[] = {"leading", "trailing", "linspace"};
    static const int sp_vals[] = {SDW_SPACING_LEADING, SDW_SPACING_TRAILING, SDW_SPACING_LINSPACE};
    sdw_status st;
    json_t *v;
    int iv = 0;
    bool bv = false;

    if (!json_is_object(obj)) return sdw_error_set(err, SDW_E_FORMAT, "config is not an object");
    if ((st = check_unsupported(obj, err)) != SDW_OK) return st;
    if ((v = json_object_get(obj, "_class_name")) && json_is_string(v))
        snprintf(c->class_name, sizeof c->class_name, "%s", json_string_value(v));
    if ((v = json_object_get(obj, "num_train_timesteps")) &&
        (st = get_int(v, "num_train_timesteps", 2, MAX_TRAIN_TIMESTEPS, &c->num_train_timesteps,
                      err)) != SDW_OK)
        return st;
    if ((v = json_object_get(obj, "beta_start")) &&
        (st = get_number(v, "beta_start", &c->beta_start, err)) != SDW_OK)
        return st;
    if ((v = json_object_get(obj, "beta_end")) &&
        (st = get_number(v, "beta_end", &c->beta_end, err)) != SDW_OK)
        return st;
    if ((v = json_object_get(obj, "beta_schedule"))) {
        if ((st = get_enum(v, "beta_schedule", sched_names, sched_vals, 3, &iv, err)) != SDW_OK)
            return st;
        c->beta_schedule = (sdw_beta_schedule)iv;
    }
    if ((v = json_object_get(obj, "prediction_type"))) {
        if ((st = get_enum(v, "prediction_type", pred_names, pred_vals, 3, &iv, err)) != SDW_OK)
            return st;
        c->prediction_type = (sdw_prediction_type)iv;
    }
    if ((v = json_object_get(obj, "timestep_spacing"))) {
        if ((st = get_enum(v, "timestep_spacing", sp_names, sp_vals, 3, &iv, err)) != SDW_OK)
            return st;
        c->timestep_spacing = (sdw_timestep_spacing)iv;
    }
    if ((v = json_object_get(obj, "steps_offset")) &&
        (st = get_int(v, "steps_offset", 0, MAX_TRAIN_TIMESTEPS, &c->steps_offset, err)) != SDW_OK)
        return st;
    if ((v = json_object_get(obj, "set_alpha_to_one"))) {
        if ((st = get_bool(v, "set_alpha_to_one", &bv, err)) != SDW_OK) return st;
        c->set_alpha_to_one = bv ? SDW_OPT_TRUE : SDW_OPT_FALSE;
    }
    struct {
        const char *key;
        bool *dst;
    } bools[] = {{"clip_sample", &c->clip_sample},
                 {"skip_prk_steps", &c->skip_prk_steps},
                 {"rescale_betas_zero_snr", &c->rescale_betas_zero_snr},
                 {"use_karras_sigmas", &c->use_karras_sigmas}};
    for (size_t i = 0; i < SDW_ARRAY_LEN(bools); i++)
        if ((v = json_object_get(obj, bools[i].key)) &&
            (st = get_bool(v, bools[i].key, bools[i].dst, err)) != SDW_OK)
            return st;
    /* null (Python None) means "from the schedule" for the Karras range and "no clipping" for
     * lambda_min_clipped (also what a sanitised -Infinity becomes). */
    struct {
        const char *key;
        double *dst;
        double if_null;
    } nums[] = {{"clip_sample_range", &c->clip_sample_range, NAN},
                {"sigma_min", &c->sigma_min, NAN},
                {"sigma_max", &c->sigma_max, NAN},
                {"lambda_min_clipped", &c->lambda_min_clipped, -INFINITY}};
    for (size_t i = 0; i < SDW_ARRAY_LEN(nums); i++) {
        v = json_object_get(obj, nums[i].key);
        if (!v) continue;
        if (json_is_null(v))
            *nums[i].dst = nums[i].if_null;
        else if ((st = get_number(v, nums[i].key, nums[i].dst, err)) != SDW_OK)
            return st;
    }
    c->flow_matching = strcmp(c->class_name, "FlowMatchEulerDiscreteScheduler") == 0;
    if (c->flow_matching && (st = parse_flow(obj, c, err)) != SDW_OK) return st;
    if (!(c->beta_start > 0 && c->beta_end > 0 && c->beta_start < 1 && c->beta_end < 1))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "beta_start %g / beta_end %g out of (0, 1)",
                             c->beta_start, c->beta_end);
    if (!(c->clip_sample_range > 0))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "clip_sample_range %g must be > 0",
                             c->clip_sample_range);
    return SDW_OK;
}

sdw_status sdw_scheduler_config_from_json(const void *json, sdw_scheduler_config *out,
                                          sdw_error *err) {
    sdw_scheduler_config c = sdw_scheduler_config_default();
    sdw_status st = parse_into((json_t *)json, &c, err);
    if (st != SDW_OK) return st;
    *out = c;
    return SDW_OK;
}

sdw_status sdw_scheduler_config_load(const char *path, sdw_scheduler_config *out, sdw_error *err) {
    char *text = NULL;
    size_t len = 0;
    sdw_status st = sdw_read_file(path, &text, &len, err);
    if (st != SDW_OK) return st;
    json_t *root = sdw_json_load_relaxed(text, len, err);
    free(text);
    if (!root) {
        sdw_error_prefix(err, "%s", path);
        return err ? err->code : SDW_E_FORMAT;
    }
    st = sdw_scheduler_config_from_json(root, out, err);
    json_decref(root);
    if (st != SDW_OK) sdw_error_prefix(err, "%s", path);
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
