/* Stage-by-stage comparison of the Stable Diffusion pipeline with the reference: every tensor
 * the pipeline taps (token ids, text-encoder states, each UNet call's input and output, each
 * step's latents, the VAE output) against the golden tensor of the same name, then the final
 * image against the reference PNG. Folder and single-file loading both. */
#include "sdw_test.h"

#include "models/diffusion.h"

#include <stdlib.h>

#define STAGE_TOL 1e-4

static void check_case(const char *model_path, const char *tokenizer, const char *golden_case) {
    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g != NULL);
    sdw_load_options opts = sdw_load_options_default();
    sdw_load_options_set(&opts, "tokenizer", tokenizer, NULL);
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    sdw_status s = sdw_model_load(model_path, &opts, &m, &err);
    if (s) {
        sdw_golden_close(g);
        ASSERT_OK(s, &err);
    }
    sdw_stage_check c = {.g = g, .tol = STAGE_TOL};
    sdw_diffusion_set_tap(m, sdw_stage_tap, &c);
    sdw_request req;
    sdw_image img = {0}, init = {0}, mask = {0}; /* text-to-image: no images */
    s = sdw_golden_request(g, &req, &init, &mask, &err);
    if (!s) s = sdw_model_generate(m, &req, NULL, NULL, &img, NULL, &err);
    sdw_model_destroy(m);
    const int maxd =
        s ? 256 : sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", golden_case));
    sdw_image_free(&img);
    sdw_golden_close(g);
    ASSERT_OK(s, &err);
    fprintf(stderr, "  %s: %d stages compared, worst %.2g (%s), image max diff %d\n", golden_case,
            c.n_compared, c.worst, c.worst_name, maxd);
    /* token ids x2, te states x2, init noise, per step sample/out/latents, vae z and out */
    ASSERT_TRUE(c.n_compared >= 2 + 2 + 1 + 3 * (int)req.steps + 2);
    ASSERT_EQ_INT(c.n_failed, 0);
    ASSERT_TRUE(maxd <= 2);
}

static const char *const g_cases[] = {"txt2img-ddim", "txt2img-pndm", "txt2img-euler",
                                      "txt2img-euler_a", "txt2img-dpmpp2m"};

static void test_folder_every_case(void) {
    char name[128];
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++) {
        snprintf(name, sizeof name, "tiny-sd15/%s", g_cases[i]);
        check_case(sdw_test_path("models/tiny-sd15"), NULL, name);
        if (sdw_test_failures_in_current) return;
    }
}

static void test_single_file_every_case(void) {
    char name[128];
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++) {
        snprintf(name, sizeof name, "tiny-sd15/%s", g_cases[i]);
        check_case(sdw_test_path("models/tiny-sd15.safetensors"), sdw_test_path("clip-tokenizer"),
                   name);
        if (sdw_test_failures_in_current) return;
    }
}

typedef struct progress_log {
    int calls, previews, last_total, cancel_at;
    int preview_w;
} progress_log;

static bool on_progress(void *user, int step, int total, const sdw_image *preview) {
    progress_log *p = user;
    p->calls++;
    p->last_total = total;
    if (preview) {
        p->previews++;
        p->preview_w = preview->width;
    }
    return step != p->cancel_at;
}

/* Progress fires once per model call with previews as asked; returning false cancels. */
static void test_progress_previews_and_cancel(void) {
    sdw_load_options opts = sdw_load_options_default();
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), &opts, &m, &err), &err);
    sdw_request r = sdw_request_default();
    r.prompt = "a cat";
    r.width = r.height = 64;
    r.steps = 5;
    r.sampler = "euler";
    r.seed = 1;
    r.preview_every = 2;
    progress_log log = {.cancel_at = -1};
    sdw_image img = {0};
    sdw_status s = sdw_model_generate(m, &r, on_progress, &log, &img, NULL, &err);
    sdw_image_free(&img);
    progress_log first = log;
    if (s == SDW_OK) {
        log = (progress_log){.cancel_at = 2};
        s = sdw_model_generate(m, &r, on_progress, &log, &img, NULL, &err) == SDW_CANCELLED
                ? SDW_OK
                : SDW_E_BACKEND;
    }
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
    ASSERT_EQ_INT(first.calls, 5);
    ASSERT_EQ_INT(first.last_total, 5);
    ASSERT_EQ_INT(first.previews, 3);   /* steps 2, 4 and the last */
    ASSERT_EQ_INT(first.preview_w, 32); /* latent resolution: 64 px / factor 2 */
    ASSERT_EQ_INT(log.calls, 2);      /* the cancelled run stopped at step 2 */
    ASSERT_TRUE(img.data == NULL);
}

int main(void) {
    RUN(test_progress_previews_and_cancel);
    RUN(test_folder_every_case);
    RUN(test_single_file_every_case);
    return sdw_test_finish();
}
