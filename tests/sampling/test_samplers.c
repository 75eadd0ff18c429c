/* Checks every sampler against the reference diffusers 0.25.1 pipelines, step by step: the
 * schedule (timesteps, sigmas, alpha_bar, init_noise_sigma), the initial noise from our torch
 * rng, the model input scaling, every update fed with the recorded UNet outputs (our own
 * latents carried from step to step, never reset to the reference), and every ancestral draw.
 * Also the image-to-image start (strength, add_noise) and the Karras schedule. */
#include "sdw_test.h"

#include "sampling/sampler.h"

#include <jansson.h>
#include <stdlib.h>

/* The sampler for (name, cfg, steps, karras), or NULL with err set. */
static sdw_sampler *make_sampler(const char *name, const sdw_scheduler_config *cfg, int steps,
                                 bool karras, sdw_error *err) {
    sdw_sampler *s = NULL;
    sdw_sampler_create(name, cfg, &(sdw_sampler_params){.steps = steps, .karras = karras}, &s, err);
    return s;
}

/* Relative error bar for latents after each step (max|a-b| / max|ref|). The arithmetic mirrors
 * torch's float32 op order, so the observed error is far below this (see the printed values). */
#define LATENT_TOL 1e-5

typedef struct case_result {
    double worst_latents; /* max over steps of the relative error of the latents */
    double worst_input;   /* ... of the scaled model input */
    int n_exact_steps;    /* steps whose latents were bit-identical */
    int n_steps;
} case_result;

static const char *sampler_for(const char *manifest_name) {
    if (strcmp(manifest_name, "dpmpp2m") == 0) return "dpm++2m";
    return manifest_name; /* ddim, pndm, euler, euler_a, heun, lms, unipc, lcm */
}

static const float *tensor(sdw_golden *g, const char *name, size_t want_n) {
    const sdw_golden_tensor *t = sdw_golden_get(g, name);
    if (!t || strcmp(t->dtype, "float32") != 0 || t->n != want_n) return NULL;
    return t->data;
}

static const float *tensorf(sdw_golden *g, size_t want_n, const char *fmt, int k) {
    char name[64];
    snprintf(name, sizeof name, fmt, k);
    return tensor(g, name, want_n);
}

static int count_tensors(sdw_golden *g, const char *prefix) {
    json_t *m = sdw_golden_manifest(g);
    json_t *ts = json_object_get(m, "tensors"), *t;
    size_t i;
    int n = 0;
    json_array_foreach(ts, i, t) {
        const char *name = json_string_value(json_object_get(t, "name"));
        if (name && strncmp(name, prefix, strlen(prefix)) == 0) n++;
    }
    return n;
}

/* noise_pred from the recorded UNet output: CFG over the [uncond, cond] batch in float32, as
 * the pipeline computes it, or the output itself when there is no guidance (batch 1). */
static void guided(const float *out, int batch, float g, float *pred, size_t n) {
    if (batch == 1) {
        memcpy(pred, out, n * sizeof *pred);
        return;
    }
    for (size_t k = 0; k < n; k++)
        pred[k] = out[k] + g * (out[n + k] - out[k]);
}

static bool bit_equal(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* Builds the sampler for a golden case and checks its schedule against sched.*. */
static sdw_sampler *open_case(sdw_golden *g, int *steps_out, float *guidance_out) {
    json_t *m = sdw_golden_manifest(g);
    json_t *sch = json_object_get(m, "scheduler");
    sdw_error err = {0};
    sdw_scheduler_config cfg;
    if (sdw_scheduler_config_from_json(json_object_get(sch, "config"), &cfg, &err) != SDW_OK) {
        sdw_test_fail(__FILE__, __LINE__, "config: %s", err.msg);
        return NULL;
    }
    int steps = (int)json_integer_value(json_object_get(m, "steps"));
    const char *name = sampler_for(json_string_value(json_object_get(sch, "name")));
    sdw_sampler *s = make_sampler(name, &cfg, steps, false, &err);
    if (!s) {
        sdw_test_fail(__FILE__, __LINE__, "create %s: %s", name, err.msg);
        return NULL;
    }
    *steps_out = steps;
    *guidance_out = (float)json_number_value(json_object_get(m, "guidance_scale"));

    /* schedule: exact float32 equality with the reference tensors */
    const sdw_golden_tensor *ts = sdw_golden_get(g, "sched.timesteps");
    bool ok = ts && (int)ts->n == sdw_sampler_n_calls(s);
    for (int i = 0; ok && i < sdw_sampler_n_calls(s); i++)
        ok = ((float *)ts->data)[i] == sdw_sampler_timestep(s, i);
    if (!ok) sdw_test_fail(__FILE__, __LINE__, "sched.timesteps differ");
    const sdw_golden_tensor *sg = sdw_golden_get(g, "sched.sigmas");
    if (ok && sg) {
        ok = (int)sg->n == sdw_sampler_n_calls(s) + 1;
        for (int i = 0; ok && i <= sdw_sampler_n_calls(s); i++)
            ok = ((float *)sg->data)[i] == sdw_sampler_sigma(s, i);
        if (!ok) sdw_test_fail(__FILE__, __LINE__, "sched.sigmas differ");
    }
    const sdw_golden_tensor *ac = sdw_golden_get(g, "sched.alphas_cumprod");
    if (ok && ac) {
        float *mine = malloc(ac->n * sizeof *mine);
        ok = sdw_scheduler_alphas_cumprod(&cfg, cfg.rescale_betas_zero_snr, mine, &err) == SDW_OK &&
             bit_equal(mine, ac->data, ac->n);
        free(mine);
        if (!ok) sdw_test_fail(__FILE__, __LINE__, "sched.alphas_cumprod differ");
    }
    float want_sigma = (float)json_number_value(json_object_get(sch, "init_noise_sigma"));
    if (ok && sdw_sampler_init_noise_sigma(s) != want_sigma) {
        sdw_test_fail(__FILE__, __LINE__, "init_noise_sigma %.9g, want %.9g",
                      sdw_sampler_init_noise_sigma(s), want_sigma);
        ok = false;
    }
    if (!ok) {
        sdw_sampler_destroy(s);
        return NULL;
    }
    return s;
}

/* Runs the denoising loop from call `begin` with latents x, checking every step. */
static bool run_steps(sdw_golden *g, sdw_sampler *s, float guidance, float *x, size_t n,
                      sdw_rng *rng, int first_noise, case_result *res) {
    const int n_calls = sdw_sampler_n_calls(s), begin = sdw_sampler_begin(s);
    const int n_noise = count_tensors(g, "noise.");
    float *in = malloc(n * sizeof *in), *pred = malloc(n * sizeof *pred);
    bool ok = true;
    int noise_k = first_noise;
    for (int i = begin, k = 0; ok && i < n_calls; i++, k++) {
        const sdw_golden_tensor *sample = NULL;
        char name[64];
        snprintf(name, sizeof name, "step%02d.unet.sample", k);
        sample = sdw_golden_get(g, name);
        const float *out = tensorf(g, sample ? sample->n : 0, "step%02d.unet.out", k);
        const float *ref = tensorf(g, n, "step%02d.latents", k);
        const float *t_ref = tensorf(g, 1, "step%02d.unet.timestep", k);
        if (!sample || !out || !ref || !t_ref) {
            sdw_test_fail(__FILE__, __LINE__, "step %d: reference tensors missing", k);
            ok = false;
            break;
        }
        const int batch = (int)(sample->n / n);
        if (*t_ref != sdw_sampler_timestep(s, i)) {
            sdw_test_fail(__FILE__, __LINE__, "step %d: timestep %g, want %g", k,
                          sdw_sampler_timestep(s, i), *t_ref);
            ok = false;
            break;
        }
        sdw_sampler_scale_model_input(s, i, x, in, n);
        for (int b = 0; b < batch; b++) {
            double e = sdw_test_rel_err(in, (float *)sample->data + b * n, n);
            if (e > res->worst_input) res->worst_input = e;
        }
        guided(out, batch, guidance, pred, n);
        sdw_error err = {0};
        if (sdw_sampler_step(s, i, pred, x, n, rng, &err) != SDW_OK) {
            sdw_test_fail(__FILE__, __LINE__, "step %d: %s", k, err.msg);
            ok = false;
            break;
        }
        const float *drawn = sdw_sampler_last_noise(s);
        if (drawn) { /* every draw inside step() is a recorded noise.KK, in order */
            const float *want = noise_k < n_noise ? tensorf(g, n, "noise.%02d", noise_k) : NULL;
            if (!want || !bit_equal(drawn, want, n)) {
                sdw_test_fail(__FILE__, __LINE__, "step %d: noise.%02d differs", k, noise_k);
                ok = false;
            }
            noise_k++;
        }
        double e = sdw_test_rel_err(x, ref, n);
        if (e > res->worst_latents) res->worst_latents = e;
        if (bit_equal(x, ref, n)) res->n_exact_steps++;
        res->n_steps++;
    }
    if (ok && noise_k != n_noise) {
        sdw_test_fail(__FILE__, __LINE__, "%d noise draws recorded, %d made", n_noise, noise_k);
        ok = false;
    }
    free(in);
    free(pred);
    return ok;
}

static void check_txt2img(const char *model_case) {
    sdw_golden *g = sdw_golden_open(model_case);
    if (!g) {
        sdw_test_fail(__FILE__, __LINE__, "golden %s missing", model_case);
        return;
    }
    int steps;
    float guidance;
    sdw_sampler *s = open_case(g, &steps, &guidance);
    const sdw_golden_tensor *init = sdw_golden_get(g, "latents_init_noise");
    if (!s || !init) {
        if (!init) sdw_test_fail(__FILE__, __LINE__, "%s: latents_init_noise missing", model_case);
        sdw_sampler_destroy(s);
        sdw_golden_close(g);
        return;
    }
    json_t *m = sdw_golden_manifest(g);
    const size_t n = init->n;
    float *x = malloc(n * sizeof *x);
    sdw_rng rng;
    sdw_rng_init(&rng, SDW_RNG_TORCH, (uint64_t)json_integer_value(json_object_get(m, "seed")));
    sdw_rng_randn(&rng, x, n);
    bool ok = bit_equal(x, init->data, n);
    if (!ok) sdw_test_fail(__FILE__, __LINE__, "%s: initial noise differs", model_case);
    const float sigma0 = sdw_sampler_init_noise_sigma(s);
    for (size_t k = 0; k < n; k++)
        x[k] = x[k] * sigma0;
    case_result res = {0};
    if (ok) ok = run_steps(g, s, guidance, x, n, &rng, 0, &res);
    if (ok) {
        printf("  %-28s %-8s %d calls: latents rel err %.2e (%d/%d steps bit-exact), input %.2e\n",
               model_case, sdw_sampler_name(s), res.n_steps, res.worst_latents, res.n_exact_steps,
               res.n_steps, res.worst_input);
        if (res.n_steps != sdw_sampler_n_calls(s) || res.worst_latents > LATENT_TOL ||
            res.worst_input > LATENT_TOL)
            sdw_test_fail(__FILE__, __LINE__, "%s: error above %g", model_case, LATENT_TOL);
    }
    free(x);
    sdw_sampler_destroy(s);
    sdw_golden_close(g);
}

static void test_sd15_ddim(void) {
    check_txt2img("tiny-sd15/txt2img-ddim");
}
static void test_sd15_euler(void) {
    check_txt2img("tiny-sd15/txt2img-euler");
}
static void test_sd15_euler_a(void) {
    check_txt2img("tiny-sd15/txt2img-euler_a");
}
static void test_sd15_dpmpp2m(void) {
    check_txt2img("tiny-sd15/txt2img-dpmpp2m");
}
static void test_sd15_pndm(void) {
    check_txt2img("tiny-sd15/txt2img-pndm");
}
static void test_sd15_heun(void) {
    check_txt2img("tiny-sd15/txt2img-heun");
}
static void test_sd15_lms(void) {
    check_txt2img("tiny-sd15/txt2img-lms");
}
static void test_sd15_unipc(void) {
    check_txt2img("tiny-sd15/txt2img-unipc");
}
/* guidance 1.5; the scheduler's own draws are noise.00..02 (none on the last step) */
static void test_sd15_lcm(void) {
    check_txt2img("tiny-sd15/txt2img-lcm");
}
static void test_sd2_ddim_v(void) {
    check_txt2img("tiny-sd2/txt2img-ddim");
}
static void test_sd2_euler_a_v(void) {
    check_txt2img("tiny-sd2/txt2img-euler_a");
}
static void test_sdxl_euler(void) {
    check_txt2img("tiny-sdxl/txt2img-euler");
}
static void test_sdxl_euler_a(void) {
    check_txt2img("tiny-sdxl/txt2img-euler_a");
}
static void test_turbo_1step(void) {
    check_txt2img("tiny-sdxl/turbo-euler_a-1step");
}
static void test_turbo_4step(void) {
    check_txt2img("tiny-sdxl/turbo-euler_a-4step");
}

/* img2img: VAE posterior sample (noise.00) scaled, noised to timesteps[begin] with noise.01,
 * then the remaining steps. */
static void check_img2img(const char *model_case) {
    sdw_golden *g = sdw_golden_open(model_case);
    if (!g) {
        sdw_test_fail(__FILE__, __LINE__, "golden %s missing", model_case);
        return;
    }
    int steps;
    float guidance;
    sdw_sampler *s = open_case(g, &steps, &guidance);
    json_t *m = sdw_golden_manifest(g);
    const sdw_golden_tensor *mean_t = sdw_golden_get(g, "vae.encode.0.mean");
    const size_t n = mean_t ? mean_t->n : 0;
    const float *mean = mean_t ? mean_t->data : NULL, *std = tensor(g, "vae.encode.0.std", n);
    const float *sample0 = tensor(g, "step00.unet.sample", 2 * n);
    if (!s || !mean || !std || !sample0) {
        if (s) sdw_test_fail(__FILE__, __LINE__, "%s: reference tensors missing", model_case);
        sdw_sampler_destroy(s);
        sdw_golden_close(g);
        return;
    }
    const float scaling = (float)json_number_value(json_object_get(m, "vae_scaling_factor"));
    const double strength = json_number_value(json_object_get(m, "strength"));
    float *x = malloc(n * sizeof *x), *noise = malloc(n * sizeof *noise);
    sdw_rng rng;
    sdw_rng_init(&rng, SDW_RNG_TORCH, (uint64_t)json_integer_value(json_object_get(m, "seed")));
    sdw_rng_randn(&rng, noise, n); /* the VAE posterior sample's draw */
    bool ok = bit_equal(noise, tensor(g, "noise.00", n), n);
    for (size_t k = 0; k < n; k++)
        x[k] = scaling * (mean[k] + std[k] * noise[k]);
    sdw_rng_randn(&rng, noise, n); /* prepare_latents' draw */
    ok = ok && bit_equal(noise, tensor(g, "noise.01", n), n);
    if (!ok) sdw_test_fail(__FILE__, __LINE__, "%s: noise draws differ", model_case);
    int begin = sdw_sampler_begin_for_strength(steps, strength);
    sdw_error err = {0}, *errp = &err;
    case_result res = {0};
    if (ok) {
        ASSERT_OK(sdw_sampler_set_begin(s, begin, errp), errp);
        sdw_sampler_add_noise(s, x, noise, x, n);
        float *in = malloc(n * sizeof *in);
        sdw_sampler_scale_model_input(s, begin, x, in, n);
        double e = sdw_test_rel_err(in, sample0, n);
        printf("  %-28s %-8s begin %d: noised input rel err %.2e\n", model_case,
               sdw_sampler_name(s), begin, e);
        free(in);
        if (e > LATENT_TOL) {
            sdw_test_fail(__FILE__, __LINE__, "%s: add_noise rel err %.3g", model_case, e);
            ok = false;
        }
    }
    if (ok) ok = run_steps(g, s, guidance, x, n, &rng, 2, &res);
    if (ok) {
        printf("  %-28s %-8s %d calls: latents rel err %.2e (%d/%d steps bit-exact)\n", model_case,
               sdw_sampler_name(s), res.n_steps, res.worst_latents, res.n_exact_steps, res.n_steps);
        if (res.n_steps != sdw_sampler_n_calls(s) - begin || res.worst_latents > LATENT_TOL)
            sdw_test_fail(__FILE__, __LINE__, "%s: error above %g", model_case, LATENT_TOL);
    }
    free(x);
    free(noise);
    sdw_sampler_destroy(s);
    sdw_golden_close(g);
}

static void test_sd15_img2img_ddim(void) {
    check_img2img("tiny-sd15/img2img-ddim");
}
static void test_sd15_img2img_euler_a(void) {
    check_img2img("tiny-sd15/img2img-euler_a");
}
static void test_sdxl_img2img_euler_a(void) {
    check_img2img("tiny-sdxl/img2img-euler_a");
}

int main(void) {
    RUN(test_sd15_ddim);
    RUN(test_sd15_euler);
    RUN(test_sd15_euler_a);
    RUN(test_sd15_dpmpp2m);
    RUN(test_sd15_pndm);
    RUN(test_sd15_heun);
    RUN(test_sd15_lms);
    RUN(test_sd15_unipc);
    RUN(test_sd15_lcm);
    RUN(test_sd2_ddim_v);
    RUN(test_sd2_euler_a_v);
    RUN(test_sdxl_euler);
    RUN(test_sdxl_euler_a);
    RUN(test_turbo_1step);
    RUN(test_turbo_4step);
    RUN(test_sd15_img2img_ddim);
    RUN(test_sd15_img2img_euler_a);
    RUN(test_sdxl_img2img_euler_a);
    return sdw_test_finish();
}
