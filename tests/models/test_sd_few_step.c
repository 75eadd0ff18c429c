/* The heun, lms, unipc and lcm samplers through the whole Stable Diffusion pipeline, stage by
 * stage against the reference (golden/tiny-sd15/txt2img-{heun,lms,unipc,lcm}): token ids,
 * text-encoder states, every UNet call's input and output (heun's two calls per step
 * included), every call's latents, lcm's own noise draws (noise.KK, recorded after the
 * scheduler step that drew them), the VAE output, then the image. */
#include "sdw_test.h"

#include "models/diffusion.h"

#include <stdlib.h>

#define STAGE_TOL 1e-4

static void check_case(const char *golden_case) {
    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g != NULL);
    sdw_load_options opts = sdw_load_options_default();
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    sdw_status s = sdw_model_load(sdw_test_path("models/tiny-sd15"), &opts, &m, &err);
    if (s) {
        sdw_golden_close(g);
        ASSERT_OK(s, &err);
    }
    sdw_stage_check c = {.g = g, .tol = STAGE_TOL};
    sdw_diffusion_set_tap(m, sdw_stage_tap, &c);
    sdw_request req;
    sdw_image img = {0}, init = {0}, mask = {0};
    sdw_result_info info;
    s = sdw_golden_request(g, &req, &init, &mask, &err);
    if (!s) s = sdw_model_generate(m, &req, NULL, NULL, &img, &info, &err);
    sdw_model_destroy(m);
    const int maxd =
        s ? 256 : sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", golden_case));
    sdw_image_free(&img);
    /* every UNet call is a stepNN in the reference: count them */
    int n_calls = 0;
    char name[64];
    for (;; n_calls++) {
        snprintf(name, sizeof name, "step%02d.unet.out", n_calls);
        if (!sdw_golden_get(g, name)) break;
    }
    int n_noise = 0;
    for (;; n_noise++) {
        snprintf(name, sizeof name, "noise.%02d", n_noise);
        if (!sdw_golden_get(g, name)) break;
    }
    sdw_golden_close(g);
    ASSERT_OK(s, &err);
    fprintf(stderr, "  %s: %d UNet calls, %d stages compared, worst %.2g (%s), image max diff %d\n",
            golden_case, info.n_denoiser_calls, c.n_compared, c.worst, c.worst_name, maxd);
    ASSERT_EQ_INT(info.n_denoiser_calls, n_calls);
    /* token ids x2, te states x2, init noise, per call sample/out/latents, noise, vae z and out */
    ASSERT_TRUE(c.n_compared >= 2 + 2 + 1 + 3 * n_calls + n_noise + 2);
    ASSERT_EQ_INT(c.n_failed, 0);
    ASSERT_TRUE(maxd <= 2);
}

static void test_heun(void) {
    check_case("tiny-sd15/txt2img-heun"); /* 4 steps = 7 UNet calls */
}
static void test_lms(void) {
    check_case("tiny-sd15/txt2img-lms");
}
static void test_unipc(void) {
    check_case("tiny-sd15/txt2img-unipc");
}
static void test_lcm(void) {
    check_case("tiny-sd15/txt2img-lcm"); /* guidance 1.5, noise.00..02 */
}

static bool count_calls(void *user, int step, int total, const sdw_image *preview) {
    ++*(int *)user;
    return true;
}

/* Image-to-image with heun starts where diffusers' get_timesteps does: timesteps[t_start *
 * order] — 4 steps (7 calls) at strength 0.5 start at call 4 and run 3 calls. */
static void test_heun_img2img_start(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), NULL, &m, &err), &err);
    sdw_image init = {64, 64, 3, malloc(64 * 64 * 3)}, out = {0};
    for (int i = 0; i < 64 * 64 * 3; i++)
        init.data[i] = (uint8_t)(i * 5);
    sdw_request r = sdw_request_default();
    r.prompt = "a cat";
    r.sampler = "heun";
    r.steps = 4;
    r.seed = 1;
    r.init_image = &init;
    r.strength = 0.5;
    int calls = 0;
    sdw_status s = sdw_model_generate(m, &r, count_calls, &calls, &out, NULL, &err);
    sdw_image_free(&out);
    sdw_image_free(&init);
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
    ASSERT_EQ_INT(calls, 3);
}

int main(void) {
    RUN(test_heun);
    RUN(test_lms);
    RUN(test_unipc);
    RUN(test_lcm);
    RUN(test_heun_img2img_start);
    return sdw_test_finish();
}
