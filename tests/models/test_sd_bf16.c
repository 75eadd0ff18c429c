/* The bf16 fast path against the reference goldens: every tiny-model case the pipeline runs
 * (txt2img with each sampler, folder and single file, img2img, inpainting with 4- and 9-channel
 * UNets; SD 2.x, SDXL and Turbo) generated with precision bf16 must give a final image within a
 * mean absolute error of 2 levels (of 255) of the reference image (the bar of issue 5); the PSNR
 * is printed. Also: the f32 and bf16 paths really differ (bf16 weights are in use), and an
 * explicit f32 request stays on the exact path. Skipped (exit 77) on CPUs without native bf16
 * arithmetic (AVX512-BF16 or AMX): there the fast path is f32 by design and the exact-path tests
 * cover it. */
#include "sdw_test.h"

#include "io/image.h"
#include "io/png.h"
#include "models/diffusion.h"
#include "nn/nn.h"

#include <jansson.h>
#include <stdlib.h>

#define MAE_MAX 2.0 /* levels of 255 */

/* Generates golden case `golden_case` at precision p into *img: the model named by the manifest
 * (or model_path), its settings, init image and mask. */
static sdw_status generate(const char *model_path, const char *tokenizer, const char *golden_case,
                           sdw_precision p, sdw_image *img, sdw_error *err) {
    sdw_golden *g = sdw_golden_open(golden_case);
    if (!g) return sdw_error_set(err, SDW_E_NOT_FOUND, "golden %s missing", golden_case);
    json_t *man = sdw_golden_manifest(g);
    if (!model_path)
        model_path = sdw_test_path("%s", json_string_value(json_object_get(man, "model")));
    sdw_load_options opts = sdw_load_options_default();
    sdw_load_options_set(&opts, "tokenizer", tokenizer, NULL);
    opts.precision = p;
    sdw_image_model *m = NULL;
    sdw_image init = {0}, mask = {0};
    sdw_request r;
    sdw_status s = sdw_model_load(model_path, &opts, &m, err);
    if (!s) s = sdw_golden_request(g, &r, &init, &mask, err);
    if (!s) s = sdw_model_generate(m, &r, NULL, NULL, img, NULL, err);
    sdw_image_free(&init);
    sdw_image_free(&mask);
    sdw_model_destroy(m);
    sdw_golden_close(g);
    return s;
}

typedef struct img_diff {
    double mae, psnr;
    int max;
} img_diff;

static img_diff compare(const sdw_image *img, const uint8_t *ref) {
    const size_t n = (size_t)img->width * img->height * img->channels;
    double sum = 0, sq = 0;
    int mx = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)img->data[i] - (int)ref[i]);
        sum += d;
        sq += (double)d * d;
        if (d > mx) mx = d;
    }
    const double mse = sq / (double)n;
    return (img_diff){.mae = sum / (double)n,
                      .psnr = mse > 0 ? 10.0 * log10(255.0 * 255.0 / mse) : INFINITY,
                      .max = mx};
}

static void check_case(const char *model_path, const char *tokenizer, const char *golden_case) {
    sdw_image img = {0};
    sdw_error err = {0};
    ASSERT_OK(generate(model_path, tokenizer, golden_case, SDW_PRECISION_BF16, &img, &err), &err);
    sdw_png ref = {0};
    sdw_status s = sdw_png_read(sdw_test_path("golden/%s/image.png", golden_case), &ref, &err);
    bool same_size =
        s == SDW_OK && ref.w == img.width && ref.h == img.height && ref.channels == img.channels;
    img_diff d = {0};
    if (same_size) d = compare(&img, ref.pixels);
    sdw_png_deinit(&ref);
    sdw_image_free(&img);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(same_size);
    fprintf(stderr, "  %s (bf16): MAE %.3f levels, PSNR %.1f dB, max diff %d\n", golden_case, d.mae,
            d.psnr, d.max);
    ASSERT_TRUE(d.mae <= MAE_MAX);
}

static const char *const g_cases[] = {
    "tiny-sd15/txt2img-ddim",    "tiny-sd15/txt2img-pndm",    "tiny-sd15/txt2img-euler",
    "tiny-sd15/txt2img-euler_a", "tiny-sd15/txt2img-dpmpp2m", "tiny-sd15/img2img-ddim",
    "tiny-sd15/img2img-euler_a", "tiny-sd15/inpaint-ddim",    "tiny-sd15-inpaint/inpaint-ddim"};

static void test_every_case_bf16(void) {
    for (size_t i = 0; i < SDW_ARRAY_LEN(g_cases); i++) {
        check_case(NULL, NULL, g_cases[i]);
        if (sdw_test_failures_in_current) return;
    }
}

/* SD 2.x (v-prediction, OpenCLIP, upcast attention) and SDXL (two encoders, text_time), Turbo
 * from its own folder (the goldens' model is tiny-sdxl with Turbo's schedule). */
static const char *const g_variant_cases[] = {
    "tiny-sd2/txt2img-ddim",    "tiny-sd2/txt2img-euler_a", "tiny-sdxl/txt2img-euler",
    "tiny-sdxl/txt2img-euler_a", "tiny-sdxl/img2img-euler_a", "tiny-sdxl/inpaint-ddim"};

static void test_sd2_sdxl_bf16(void) {
    for (size_t i = 0; i < SDW_ARRAY_LEN(g_variant_cases); i++) {
        check_case(NULL, NULL, g_variant_cases[i]);
        if (sdw_test_failures_in_current) return;
    }
    check_case(sdw_test_path("models/tiny-sdxl-turbo"), NULL, "tiny-sdxl/turbo-euler_a-1step");
    check_case(sdw_test_path("models/tiny-sdxl-turbo"), NULL, "tiny-sdxl/turbo-euler_a-4step");
}

static void test_sd15_single_file_bf16(void) {
    check_case(sdw_test_path("models/tiny-sd15.safetensors"), sdw_test_path("clip-tokenizer"),
               "tiny-sd15/txt2img-euler_a");
}

/* bf16 really runs (the images differ from the f32 path's), f32 stays f32, and AUTO resolves to
 * one of the two by the documented rule. */
static void test_precisions_differ(void) {
    sdw_image a = {0}, b = {0};
    sdw_error err = {0};
    const char *model = NULL; /* the manifest's */
    ASSERT_OK(generate(model, NULL, "tiny-sd15/txt2img-euler", SDW_PRECISION_F32, &a, &err), &err);
    sdw_status s = generate(model, NULL, "tiny-sd15/txt2img-euler", SDW_PRECISION_BF16, &b, &err);
    bool differ = s == SDW_OK && memcmp(a.data, b.data, (size_t)a.width * a.height * 3) != 0;
    sdw_image_free(&a);
    sdw_image_free(&b);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(differ);
    ASSERT_EQ_INT(sdw_nn_precision_resolve(SDW_PRECISION_F32), SDW_PRECISION_F32);
    ASSERT_EQ_INT(sdw_nn_precision_resolve(SDW_PRECISION_BF16), SDW_PRECISION_BF16);
    ASSERT_EQ_INT(sdw_nn_precision_resolve(SDW_PRECISION_AUTO),
                  sdw_nn_cpu_has_amx() ? SDW_PRECISION_BF16 : SDW_PRECISION_F32);
}

int main(void) {
    if (!sdw_nn_cpu_has_bf16()) {
        fprintf(stderr, "skipped: this CPU has no native bf16 arithmetic (AVX512-BF16 / AMX); "
                        "the fast path is f32 here\n");
        return 77;
    }
    RUN(test_precisions_differ);
    RUN(test_every_case_bf16);
    RUN(test_sd15_single_file_bf16);
    RUN(test_sd2_sdxl_bf16);
    return sdw_test_finish();
}
