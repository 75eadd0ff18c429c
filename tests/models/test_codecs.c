/* The generation core's latent codecs against the reference, for any family: a TAESD decoding
 * the final image (golden txt2img-euler-taesd: diffusers with the VAE replaced by
 * AutoencoderTiny), from a diffusers folder and from the original taesd_decoder file; TAESD
 * previews at full size; tiled VAE decoding (golden txt2img-euler-vae-tiling: enable_vae_tiling
 * at 128x96) and the automatic choice; and the refusals: a TAESD for another latent space, a
 * TAESD decode asked of a model without one. */
#include "sdw_test.h"

#include "models/diffusion.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define STAGE_TOL 1e-4

/* Runs golden_case with the model loaded from opts (taesd), the request's decoder and tiling,
 * comparing the stages the reference recorded: the sampling ones and the decode. */
static void check_case(const char *golden_case, const char *taesd, sdw_decoder decoder,
                       sdw_vae_tiling_mode tiling, bool want_tiled) {
    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g != NULL);
    sdw_load_options o = sdw_load_options_default();
    o.taesd = taesd;
    sdw_image_model *m = NULL;
    sdw_image img = {0}, init = {0}, mask = {0};
    sdw_error err = {0};
    sdw_stage_check c = {.g = g, .tol = STAGE_TOL};
    sdw_request r;
    sdw_result_info info = {0};
    sdw_status s = sdw_model_load(sdw_test_path("models/tiny-sd15"), &o, &m, &err);
    if (!s) s = sdw_golden_request(g, &r, &init, &mask, &err);
    if (!s) {
        r.decoder = decoder;
        r.vae_tiling = tiling;
        sdw_diffusion_set_tap(m, sdw_stage_tap, &c);
        s = sdw_model_generate(m, &r, NULL, NULL, &img, &info, &err);
    }
    const int maxd =
        s ? 256 : sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", golden_case));
    fprintf(stderr, "  %s (%s): %d stages compared, worst %.2g (%s), image max diff %d\n",
            golden_case, taesd ? taesd : "VAE", c.n_compared, c.worst, c.worst_name, maxd);
    sdw_image_free(&img);
    sdw_model_destroy(m);
    sdw_golden_close(g);
    ASSERT_OK(s, &err);
    ASSERT_EQ_INT(c.n_failed, 0);
    ASSERT_TRUE(c.n_compared >= 2 + 2 + 1 + 3 * 4 + 2); /* ids, states, noise, steps, decode */
    ASSERT_TRUE(maxd <= 2);
    ASSERT_TRUE(info.taesd_decoded == (decoder == SDW_DECODER_TAESD));
    ASSERT_TRUE(info.vae_tiled == want_tiled);
}

static void test_taesd_decode(void) {
    check_case("tiny-sd15/txt2img-euler-taesd", sdw_test_path("models/tiny-taesd"),
               SDW_DECODER_TAESD, SDW_TILING_AUTO, false);
    char dec[1024];
    snprintf(dec, sizeof dec, "%s", sdw_test_path("models/tiny-taesd/taesd_decoder.safetensors"));
    check_case("tiny-sd15/txt2img-euler-taesd", dec, SDW_DECODER_TAESD, SDW_TILING_AUTO, false);
}

static void test_vae_tiling(void) {
    check_case("tiny-sd15/txt2img-euler-vae-tiling", NULL, SDW_DECODER_VAE, SDW_TILING_ON, true);
}

typedef struct previews {
    int n, w, h;
} previews;

static bool on_progress(void *user, int step, int total, const sdw_image *preview) {
    previews *p = user;
    if (preview) {
        p->n++;
        p->w = preview->width;
        p->h = preview->height;
    }
    return true;
}

/* With a TAESD the previews are decoded images at full size (the projection's are at latent
 * size); an AUTO decode of a small image is untiled, and differs from the tiled reference. */
static void test_previews_and_auto(void) {
    sdw_load_options o = sdw_load_options_default();
    o.taesd = sdw_test_path("models/tiny-taesd");
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), &o, &m, &err), &err);
    sdw_request r = sdw_request_default();
    r.prompt = "a cat";
    r.width = 128;
    r.height = 96;
    r.steps = 4;
    r.seed = 42;
    r.sampler = "euler";
    r.preview_every = 2;
    previews p = {0};
    sdw_image img = {0};
    sdw_result_info info = {0};
    sdw_status s = sdw_model_generate(m, &r, on_progress, &p, &img, &info, &err);
    const bool caps_taesd = sdw_model_capabilities(m)->taesd;
    sdw_image_free(&img);
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(caps_taesd);
    ASSERT_EQ_INT(p.n, 2);
    ASSERT_TRUE(p.w == 128 && p.h == 96);
    ASSERT_TRUE(!info.vae_tiled && !info.taesd_decoded);
}

static void test_refusals(void) {
    sdw_load_options o = sdw_load_options_default();
    o.taesd = sdw_test_path("models/tiny-taesd"); /* 4 latent channels; SD3's are 16 */
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_TRUE(sdw_model_load(sdw_test_path("models/tiny-sd3"), &o, &m, &err) != SDW_OK);
    ASSERT_STR_CONTAINS(err.msg, "is for another latent space: 4 channels");
    o.taesd = "/nonexistent/taesd";
    ASSERT_TRUE(sdw_model_load(sdw_test_path("models/tiny-sd15"), &o, &m, &err) != SDW_OK);
    ASSERT_STR_CONTAINS(err.msg, "--taesd /nonexistent/taesd does not exist");
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), NULL, &m, &err), &err);
    sdw_request r = sdw_request_default(), out;
    r.prompt = "x";
    r.decoder = SDW_DECODER_TAESD;
    sdw_status s = sdw_request_resolve(&r, sdw_model_capabilities(m), &out, &err);
    sdw_model_destroy(m);
    ASSERT_STATUS(s, SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(err.msg, "--taesd");
}

int main(void) {
    RUN(test_taesd_decode);
    RUN(test_vae_tiling);
    RUN(test_previews_and_auto);
    RUN(test_refusals);
    return sdw_test_finish();
}
