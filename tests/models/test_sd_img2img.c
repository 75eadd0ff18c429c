/* Image-to-image and inpainting against the reference (diffusers 0.25.1
 * StableDiffusionImg2ImgPipeline / StableDiffusionInpaintPipeline), stage by stage: VAE encode
 * input/mean/std, every random draw (noise.KK), every UNet call's input and output, every
 * step's latents, the VAE decode, then the final image within 2 levels of the reference PNG.
 * Every stage the reference recorded must be compared, except those listed in skipped(). */
#include "sdw_test.h"

#include "io/image.h"
#include "models/diffusion.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>

#define STAGE_TOL 1e-4

/* Records the pipeline does not produce as such: the raw input pixels (checked through
 * vae.encode.N.image), pooled text outputs (SD 1.x uses none), per-call timestep and context
 * copies (the context is te.*, the timestep the schedule), the scheduler tables, the standalone
 * probe, and the float image (the PNG is compared). In 4-channel inpainting the reference
 * encodes the masked image and never uses it: only its draw is reproduced. */
static bool skipped(const char *name, bool four_channel_inpaint) {
    static const char *const sub[] = {"init_image_u8", "mask_image_u8", ".pooled",
                                      ".unet.timestep", ".unet.encoder_hidden_states", NULL};
    for (const char *const *s = sub; *s; s++)
        if (strstr(name, *s)) return true;
    if (strncmp(name, "sched.", 6) == 0 || strncmp(name, "probe.", 6) == 0) return true;
    if (strcmp(name, "image") == 0) return true;
    return four_channel_inpaint && strncmp(name, "vae.encode.1.", 13) == 0;
}

/* skipped() for sdw_stage_missing. */
static bool excused(const char *name, const void *four_channel_inpaint) {
    return skipped(name, *(const bool *)four_channel_inpaint);
}

/* Runs one golden case: the model folder, the manifest's settings and its input images. */
static void check_case(const char *golden_case, bool four_channel_inpaint) {
    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g != NULL);
    json_t *man = sdw_golden_manifest(g);
    sdw_image_model *m = NULL;
    sdw_image init = {0}, mask = {0}, img = {0};
    sdw_error err = {0};
    sdw_stage_check *c = calloc(1, sizeof *c);
    c->g = g;
    c->tol = STAGE_TOL;
    const char *model = json_string_value(json_object_get(man, "model")); /* "models/tiny-sd15" */
    sdw_status s = sdw_model_load(sdw_test_path("%s", model), NULL, &m, &err);
    sdw_request r;
    if (!s) s = sdw_golden_request(g, &r, &init, &mask, &err);
    if (!s) {
        sdw_diffusion_set_tap(m, sdw_stage_tap, c);
        s = sdw_model_generate(m, &r, NULL, NULL, &img, NULL, &err);
    }
    int maxd = 256, missing = -1;
    if (!s) maxd = sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", golden_case));
    if (!s) missing = sdw_stage_missing(c, excused, &four_channel_inpaint);
    fprintf(stderr, "  %s: %d stages compared, worst %.2g (%s), image max diff %d\n", golden_case,
            c->n_compared, c->worst, c->worst_name, maxd);
    int n_failed = c->n_failed;
    sdw_image_free(&img);
    sdw_image_free(&init);
    sdw_image_free(&mask);
    sdw_model_destroy(m);
    sdw_golden_close(g);
    free(c);
    ASSERT_OK(s, &err);
    ASSERT_EQ_INT(missing, 0);
    ASSERT_EQ_INT(n_failed, 0);
    ASSERT_TRUE(maxd <= 2);
}

static void test_img2img_ddim(void) { check_case("tiny-sd15/img2img-ddim", false); }
static void test_img2img_euler_a(void) { check_case("tiny-sd15/img2img-euler_a", false); }
static void test_inpaint_ddim_4_channel(void) { check_case("tiny-sd15/inpaint-ddim", true); }
static void test_inpaint_ddim_9_channel(void) { check_case("tiny-sd15-inpaint/inpaint-ddim", false); }

/* ---- properties for the samplers and settings without a golden ---- */

/* Keeps copies of a few tapped tensors by name. */
typedef struct grab {
    const char *names[4];
    float *data[4];
    size_t n[4];
} grab;

static void on_grab(void *user, const char *name, const float *data, int n_dims,
                    const int64_t *shape) {
    grab *g = user;
    size_t n = 1;
    for (int i = 0; i < n_dims; i++) n *= (size_t)shape[i];
    for (int k = 0; k < 4; k++)
        if (g->names[k] && strcmp(g->names[k], name) == 0) {
            free(g->data[k]);
            g->data[k] = malloc(n * sizeof(float));
            memcpy(g->data[k], data, n * sizeof(float));
            g->n[k] = n;
        }
}

static void grab_free(grab *g) {
    for (int k = 0; k < 4; k++) free(g->data[k]);
}

/* 4-channel inpainting with every sampler, strength 0.6 of 5 steps: int(5 * 0.6) = 3 calls
 * (pndm: 4, its PLMS schedule repeats a timestep), and after the last step's blend the latents
 * outside the mask are exactly the init image's latents (mean + std * eps, times the scaling
 * factor), while inside they are the sampler's. */
static void test_every_sampler_inpaint_keeps_the_unmasked_latents(void) {
    static const char *const samplers[] = {"ddim", "pndm", "euler", "euler_a", "dpm++2m"};
    sdw_image_model *m = NULL;
    sdw_image init = {0}, mask = {0};
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), NULL, &m, &err), &err);
    sdw_status s = sdw_image_load(sdw_test_path("golden/tiny-sd15/inpaint-ddim/init_image.png"),
                                  &init, &err);
    if (!s)
        s = sdw_image_load(sdw_test_path("golden/tiny-sd15/inpaint-ddim/mask_image.png"), &mask,
                           &err);
    for (size_t si = 0; !s && si < SDW_ARRAY_LEN(samplers); si++) {
        grab g = {.names = {"vae.encode.0.mean", "vae.encode.0.std", "noise.00", "vae.decode.z"}};
        sdw_diffusion_set_tap(m, on_grab, &g);
        sdw_request r = sdw_request_default();
        r.prompt = "a cat";
        r.steps = 5;
        r.strength = 0.6;
        r.seed = 7;
        r.sampler = samplers[si];
        r.init_image = &init;
        r.mask = &mask;
        sdw_image img = {0};
        sdw_result_info info;
        s = sdw_model_generate(m, &r, NULL, NULL, &img, &info, &err);
        sdw_image_free(&img);
        if (s) break;
        int kept_exact = 0, kept = 0, repainted_differs = 0, repainted = 0;
        const int h = 32, w = 32, C = 4;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    size_t k = ((size_t)c * h + y) * w + x;
                    /* nearest: latent (x, y) reads pixel (2x, 2y); grey >= 128 repaints */
                    bool paint = mask.data[((size_t)(2 * y) * 64 + 2 * x) * mask.channels] >= 128;
                    float ref = 0.18215f * (g.data[0][k] + g.data[1][k] * g.data[2][k]);
                    float got = g.data[3][k] * 0.18215f;
                    if (paint) repainted++, repainted_differs += fabsf(got - ref) > 1e-3f;
                    else kept++, kept_exact += fabsf(got - ref) <= 1e-5f * (1 + fabsf(ref));
                }
        grab_free(&g);
        fprintf(stderr, "  %s: %d calls, %d/%d kept, %d/%d repainted differ\n", samplers[si],
                info.n_denoiser_calls, kept_exact, kept, repainted_differs, repainted);
        ASSERT_EQ_INT(info.n_denoiser_calls, strcmp(samplers[si], "pndm") == 0 ? 4 : 3);
        ASSERT_TRUE(kept > 0 && kept_exact == kept);
        ASSERT_TRUE(repainted > 0 && repainted_differs > repainted / 2);
    }
    sdw_image_free(&init);
    sdw_image_free(&mask);
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
}

/* A 9-channel model without a mask (image-to-image) is inpainting with an all-white mask; the
 * output follows the requested size (the init image is resized). */
static void test_inpainting_model_img2img_is_a_white_mask(void) {
    sdw_image_model *m = NULL;
    sdw_image init = {0}, a = {0}, b = {0};
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15-inpaint"), NULL, &m, &err), &err);
    sdw_status s = sdw_image_load(
        sdw_test_path("golden/tiny-sd15-inpaint/inpaint-ddim/init_image.png"), &init, &err);
    uint8_t *white = calloc(64 * 64, 1);
    memset(white, 255, 64 * 64);
    sdw_image mask = {.width = 64, .height = 64, .channels = 1, .data = white};
    sdw_request r = sdw_request_default();
    r.prompt = "a cat";
    r.steps = 3;
    r.strength = 0.7;
    r.seed = 3;
    r.sampler = "euler";
    r.width = 72;
    r.height = 96;
    r.init_image = &init;
    if (!s) s = sdw_model_generate(m, &r, NULL, NULL, &a, NULL, &err);
    r.mask = &mask;
    if (!s) s = sdw_model_generate(m, &r, NULL, NULL, &b, NULL, &err);
    sdw_model_destroy(m);
    sdw_image_free(&init);
    free(white);
    bool same = s == SDW_OK && a.width == 72 && a.height == 96 && b.width == 72 &&
                memcmp(a.data, b.data, 72 * 96 * 3) == 0;
    sdw_image_free(&a);
    sdw_image_free(&b);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(same);
}

int main(void) {
    RUN(test_img2img_ddim);
    RUN(test_img2img_euler_a);
    RUN(test_inpaint_ddim_4_channel);
    RUN(test_inpaint_ddim_9_channel);
    RUN(test_every_sampler_inpaint_keeps_the_unmasked_latents);
    RUN(test_inpainting_model_img2img_is_a_white_mask);
    return sdw_test_finish();
}
