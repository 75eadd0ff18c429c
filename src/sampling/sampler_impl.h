/* sampling/sampler_impl.h — library-internal: the sampler object and the per-sampler ops.
 * sampler.c owns creation, the public dispatch and the numpy-compatible schedule helpers;
 * sampler_alpha.c implements ddim and pndm (alpha_bar based), sampler_sigma.c euler, euler_a
 * and dpm++2m (sigma based), sampler_flow.c flow-matching euler, sampler_heun.c heun,
 * sampler_lms.c lms, sampler_unipc.c unipc and sampler_lcm.c lcm. */
#ifndef SDW_SAMPLING_SAMPLER_IMPL_H
#define SDW_SAMPLING_SAMPLER_IMPL_H

#include "sampling/sampler.h"

#include "core/common.h"

#define SDW__SAMPLER_HIST 4 /* pndm and lms keep up to 4 past outputs, dpm++2m and unipc 2 */

typedef struct sdw__sampler_ops {
    const char *name;                     /* "euler_a" */
    const char *diffusers_class;          /* "EulerAncestralDiscreteScheduler" */
    sdw_timestep_spacing default_spacing; /* the class default for timestep_spacing */
    bool karras_ok;
    /* Validates the config for this sampler and fills timesteps / sigmas / init_noise_sigma
     * (alphas_cumprod, steps and the resolved config are set). */
    sdw_status (*setup)(sdw_sampler *s, sdw_error *err);
    /* One update for call i; buffers are allocated. */
    void (*step)(sdw_sampler *s, int i, const float *model_out, float *x, size_t n, sdw_rng *rng);
    /* Model input scaling (optional: NULL = identity). */
    void (*scale_model_input)(const sdw_sampler *s, int i, const float *x, float *out, size_t n);
    /* x0 noised to the level of call i (the scheduler's add_noise with timesteps[i]). */
    void (*add_noise)(const sdw_sampler *s, int i, const float *x0, const float *noise, float *out,
                      size_t n);
    /* Model calls per inference step (the class's `order`: 2 for heun, 1 otherwise; 0 = 1). */
    int order;
} sdw__sampler_ops;

struct sdw_sampler {
    const sdw__sampler_ops *ops;
    sdw_scheduler_config cfg; /* timestep_spacing resolved (never CLASS_DEFAULT) */
    bool karras;
    int steps;                 /* num_inference_steps as requested */
    int image_seq_len;         /* flow matching with dynamic shifting: the image's tokens */
    int n_train;               /* num_train_timesteps */
    float *alphas_cumprod;     /* [n_train] */
    float final_alpha_cumprod; /* ddim/pndm: alpha_bar "before" t = 0 */

    int n_calls;
    float *timesteps; /* [n_calls] value fed to the model (integral for ddim/pndm/dpm) */
    float *sigmas;    /* [n_calls + 1] sigma-based samplers, else NULL */
    float init_noise_sigma;

    int begin;        /* first call of this run */
    int next_call;    /* the call step() expects next */
    int sigma_offset; /* sigma index = call index + offset (diffusers' _init_step_index) */

    /* Run state, (re)set by set_begin; buffers allocated by the first step. */
    size_t n;   /* latent element count, fixed by the first step */
    float *buf; /* one block for everything below */
    float *noise, *tmp, *cur_sample, *cur_model_output;
    float *hist[SDW__SAMPLER_HIST]; /* oldest first; n_hist valid */
    int n_hist;
    bool noise_valid;
    int counter;          /* pndm: calls so far */
    int lower_order_nums; /* dpm++2m, unipc: steps taken so far, capped at the solver order */
    bool have_cur_sample; /* pndm; unipc: cur_sample holds last_sample (the corrector's input) */
    int this_order;       /* unipc: order of the last predictor, which the next corrector uses */
    /* heun: a first-order call left its step half done; the second call completes it from
     * cur_sample (the step's start), hist[0] (its derivative) and heun_dt. */
    bool heun_pending;
    float heun_dt;
};

extern const sdw__sampler_ops sdw__sampler_ddim, sdw__sampler_pndm, sdw__sampler_euler,
    sdw__sampler_euler_a, sdw__sampler_dpmpp2m, sdw__sampler_flow_euler, sdw__sampler_heun,
    sdw__sampler_lms, sdw__sampler_unipc, sdw__sampler_lcm;

/* ---- numpy-compatible schedule arithmetic (float64 unless noted) ---- */

/* np.linspace(start, stop, num): i*step + start, last = stop exactly. */
void sdw__np_linspace(double start, double stop, int num, double *out);
/* len(np.arange(start, stop, step)) as numpy computes it: ceil((stop - start) / step). */
int sdw__np_arange_len(double start, double stop, double step);
/* np.arange(start, stop, step) values: start + i * ((start + step) - start). */
void sdw__np_arange(double start, double step, int len, double *out);
/* np.round: half to even. */
double sdw__np_round(double v);
/* np.interp(x, arange(len(fp)), fp) with float32 table fp. */
double sdw__np_interp_index(double x, const float *fp, int n);
/* sqrt((1 - a) / a) per training step, in float32 as torch computes it: out[n]. */
void sdw__sigma_table(const float *alphas_cumprod, int n, float *out);
/* diffusers' _sigma_to_t: fractional training timestep of sigma on the float32 log-sigma table
 * (log_sigmas = np.log of the float32 sigma table, i.e. sdw__numpy_logf per entry). */
double sdw__sigma_to_t(double sigma, const float *log_sigmas, int n);
/* diffusers' _convert_to_karras: n sigmas from sigma_max down to sigma_min, rho = 7. */
void sdw__karras_sigmas(double sigma_min, double sigma_max, int n, double *out);

/* The Euler family's set_timesteps (0.25.1 EulerDiscreteScheduler; HeunDiscreteScheduler and
 * LMSDiscreteScheduler compute the same): timesteps for the config's spacing (float32 values,
 * descending), sigmas interpolated on the float32 table (float64), then the Karras schedule and
 * its fractional timesteps when s->karras. cfg_range: the Karras ends come from the config's
 * sigma_min / sigma_max when set (diffusers' "hack" in Euler and Heun; LMS ignores them).
 * Needs s->alphas_cumprod. *ts and *sig are new arrays (free both); returns their length (the
 * step count, or one more for trailing spacing where numpy's arange gives it). */
int sdw__sigma_schedule(const sdw_sampler *s, bool cfg_range, double **ts, double **sig);

/* diffusers' index_for_timestep: position of timesteps[i] in the schedule, the second
 * occurrence when it repeats. */
int sdw__sampler_step_index_of(const sdw_sampler *s, int i);

/* LMSDiscreteScheduler.get_lms_coefficient(order, t, cur) as scipy's quad computes it: the
 * integral over [sigmas[t], sigmas[t + 1]] of the Lagrange basis polynomial `cur` through
 * sigmas[t - k], k < order (1 <= order <= t + 1), evaluated in float32 (sampler_lms.c). */
double sdw__lms_coefficient(const float *sigmas, int order, int t, int cur);

/* Python-style index into alphas_cumprod (negative wraps, as diffusers' tensor indexing does). */
float sdw__alpha_at(const sdw_sampler *s, int t);

#endif
