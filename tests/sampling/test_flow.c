/* Flow-matching Euler (diffusers 0.30.3 FlowMatchEulerDiscreteScheduler) against the goldens:
 * the schedule as FluxPipeline drives it (sigmas = linspace(1, 1/n, n), dynamic shift from the
 * image's token count; schnell's static shift 1) and as StableDiffusion3Pipeline does (the
 * scheduler's own linspace between its shifted range, shifted again), bit for bit; one step
 * against the recorded transformer output and latents; scale_noise and the img2img start by
 * their definitions. */
#include "sdw_test.h"

#include "sampling/sampler.h"

#include <jansson.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The scheduler config a golden case ran with (its manifest's scheduler.config). */
static bool golden_config(sdw_golden *g, sdw_scheduler_config *cfg) {
    json_t *sch = json_object_get(json_object_get(sdw_golden_manifest(g), "scheduler"), "config");
    sdw_error err = {0};
    if (sdw_scheduler_config_from_json(sch, cfg, &err)) {
        fprintf(stderr, "  %s\n", err.msg);
        return false;
    }
    return true;
}

/* Creates the case's sampler and compares its timesteps and sigmas with sched.* exactly. */
static void check_schedule(const char *golden_case, bool pipeline_sigmas, int image_seq_len) {
    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g != NULL);
    sdw_scheduler_config cfg;
    ASSERT_TRUE(golden_config(g, &cfg));
    ASSERT_TRUE(cfg.flow_matching);
    cfg.flow_pipeline_sigmas = pipeline_sigmas;
    const int steps = (int)json_integer_value(json_object_get(sdw_golden_manifest(g), "steps"));
    sdw_sampler *s = NULL;
    sdw_error err = {0};
    const sdw_sampler_params p = {.steps = steps, .image_seq_len = image_seq_len};
    sdw_status st = sdw_sampler_create("euler", &cfg, &p, &s, &err);
    const sdw_golden_tensor *ts = sdw_golden_get(g, "sched.timesteps");
    const sdw_golden_tensor *sg = sdw_golden_get(g, "sched.sigmas");
    int exact = 0;
    if (!st && ts && sg && ts->n == (size_t)steps && sg->n == (size_t)steps + 1) {
        for (int i = 0; i < steps; i++)
            exact += sdw_sampler_timestep(s, i) == ((const float *)ts->data)[i];
        for (int i = 0; i <= steps; i++)
            exact += sdw_sampler_sigma(s, i) == ((const float *)sg->data)[i];
    }
    fprintf(stderr, "  %s: %d of %d schedule values bit-exact\n", golden_case, exact,
            2 * steps + 1);
    ASSERT_OK(st, &err);
    ASSERT_EQ_INT(sdw_sampler_n_calls(s), steps);
    ASSERT_TRUE(sdw_sampler_init_noise_sigma(s) == 1.0f);
    sdw_sampler_destroy(s);
    sdw_golden_close(g);
    ASSERT_EQ_INT(exact, 2 * steps + 1);
}

static void test_flux_dev_schedule(void) {
    /* 64 px, VAE factor 2, 2x2 packing: 16 x 16 = 256 image tokens (mu = base_shift) */
    check_schedule("tiny-flux/txt2img-flowmatch", true, 256);
}

static void test_flux_schnell_schedule(void) {
    check_schedule("tiny-flux-schnell/txt2img-4step", true, 256);
}

static void test_sd3_schedule(void) {
    check_schedule("tiny-sd3/txt2img-flowmatch", false, 0);
}

/* Every step of the dev case: latents_k = latents_{k-1} + (sigma_{k+1} - sigma_k) * out_k, on
 * the recorded (packed) tensors, bit for bit. */
static void test_steps_match_reference(void) {
    sdw_golden *g = sdw_golden_open("tiny-flux/txt2img-flowmatch");
    ASSERT_TRUE(g != NULL);
    sdw_scheduler_config cfg;
    ASSERT_TRUE(golden_config(g, &cfg));
    cfg.flow_pipeline_sigmas = true;
    sdw_sampler *s = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_sampler_create("euler", &cfg, &(sdw_sampler_params){.steps = 4, .image_seq_len = 256},
                                 &s, &err),
              &err);
    const sdw_golden_tensor *x0 = sdw_golden_get(g, "step00.transformer.hidden_states");
    ASSERT_TRUE(x0 != NULL);
    const size_t n = x0->n;
    float *x = malloc(n * sizeof *x);
    memcpy(x, x0->data, n * sizeof *x);
    int exact_steps = 0;
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "step%02d.transformer.out", i);
        const sdw_golden_tensor *v = sdw_golden_get(g, name);
        snprintf(name, sizeof name, "step%02d.latents", i);
        const sdw_golden_tensor *want = sdw_golden_get(g, name);
        if (!v || !want || v->n != n || want->n != n) break;
        ASSERT_OK(sdw_sampler_step(s, i, v->data, x, n, NULL, &err), &err);
        ASSERT_TRUE(sdw_sampler_last_noise(s) == NULL); /* flow Euler draws nothing */
        exact_steps += memcmp(x, want->data, n * sizeof *x) == 0;
    }
    free(x);
    sdw_sampler_destroy(s);
    sdw_golden_close(g);
    ASSERT_EQ_INT(exact_steps, 4);
}

/* scale_noise(x0, t_i, noise) = sigma_i * noise + (1 - sigma_i) * x0, in float32. */
static void test_scale_noise(void) {
    sdw_scheduler_config cfg = sdw_scheduler_config_default();
    cfg.flow_matching = true;
    cfg.shift = 3.0;
    sdw_sampler *s = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_sampler_create("euler", &cfg, &(sdw_sampler_params){.steps = 10}, &s, &err), &err);
    const float x0[3] = {0.5f, -1.25f, 2.0f}, noise[3] = {1.0f, 0.25f, -0.75f};
    float out[3];
    for (int i = 0; i < 10; i++) {
        sdw_sampler_add_noise_at(s, i, x0, noise, out, 3);
        const float sg = sdw_sampler_sigma(s, i), keep = 1.0f - sg;
        for (int k = 0; k < 3; k++) {
            volatile float a = sg * noise[k], b = keep * x0[k]; /* no fused multiply-add */
            ASSERT_TRUE(out[k] == a + b);
        }
    }
    /* static shift: sigma_0 = 1 (pure noise), sigmas strictly decreasing to sigma_n = 0 */
    ASSERT_TRUE(sdw_sampler_sigma(s, 0) == 1.0f && sdw_sampler_sigma(s, 10) == 0.0f);
    for (int i = 0; i < 10; i++)
        ASSERT_TRUE(sdw_sampler_sigma(s, i + 1) < sdw_sampler_sigma(s, i));
    /* other samplers cannot run this schedule; Karras has no flow variant */
    sdw_sampler *t = NULL;
    ASSERT_STATUS(sdw_sampler_create("euler_a", &cfg, &(sdw_sampler_params){.steps = 4}, &t, &err),
                  SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "flow-matching");
    ASSERT_STATUS(sdw_sampler_create("euler", &cfg,
                                     &(sdw_sampler_params){.steps = 4, .karras = true}, &t, &err),
                  SDW_E_INVALID_ARG);
    cfg.use_dynamic_shifting = true; /* needs the image's token count */
    ASSERT_STATUS(sdw_sampler_create("euler", &cfg, &(sdw_sampler_params){.steps = 4}, &t, &err),
                  SDW_E_INVALID_ARG);
    sdw_sampler_destroy(s);
    const char *const *names = sdw_sampler_names_for(&cfg);
    ASSERT_TRUE(names[0] && !strcmp(names[0], "euler") && !names[1]);
}

/* get_timesteps of the flow pipelines: t_start = int(max(n - min(n * strength, n), 0)). */
static void test_begin_for_strength_flow(void) {
    ASSERT_EQ_INT(sdw_sampler_begin_for_strength_flow(4, 0.2), 3);  /* int(3.2): one step runs */
    ASSERT_EQ_INT(sdw_sampler_begin_for_strength_flow(4, 0.6), 1);  /* int(1.6) */
    ASSERT_EQ_INT(sdw_sampler_begin_for_strength_flow(28, 0.75), 7); /* int(7.0) */
    ASSERT_EQ_INT(sdw_sampler_begin_for_strength_flow(3, 0.7), 0);  /* int(0.9000000000000004) */
    ASSERT_EQ_INT(sdw_sampler_begin_for_strength_flow(10, 1.0), 0);
    ASSERT_EQ_INT(sdw_sampler_begin_for_strength_flow(10, 0.01), 9);
    /* Stable Diffusion's rule differs: int(4 * 0.6) = 2 steps run, starting at 2 */
    ASSERT_EQ_INT(sdw_sampler_begin_for_strength(4, 0.6), 2);
}

int main(void) {
    RUN(test_flux_dev_schedule);
    RUN(test_flux_schnell_schedule);
    RUN(test_sd3_schedule);
    RUN(test_steps_match_reference);
    RUN(test_scale_noise);
    RUN(test_begin_for_strength_flow);
    return sdw_test_finish();
}
