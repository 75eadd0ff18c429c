/* Stage-by-stage comparison of the Stable Diffusion pipeline with the reference: every tensor
 * the pipeline taps (token ids, text-encoder states, each UNet call's input and output, each
 * step's latents, the VAE output) against the golden tensor of the same name, then the final
 * image against the reference PNG. Folder and single-file loading both. */
#include "sdw_test.h"

#include "io/png.h"
#include "models/stable_diffusion/sd_model.h"

#include <jansson.h>
#include <stdlib.h>

typedef struct tap_check {
    sdw_golden *g;
    int n_compared, n_failed;
    double worst;
    char worst_name[64];
} tap_check;

#define STAGE_TOL 1e-4

static void on_tap(void *user, const char *name, const float *data, int n_dims,
                   const int64_t *shape) {
    tap_check *c = user;
    const sdw_golden_tensor *t = sdw_golden_get(c->g, name);
    if (!t) return; /* the reference did not record this stage */
    size_t n = 1;
    for (int i = 0; i < n_dims; i++) n *= (size_t)shape[i];
    c->n_compared++;
    if (n != t->n) {
        fprintf(stderr, "  %s: %zu elements, reference has %zu\n", name, n, t->n);
        c->n_failed++;
        return;
    }
    double e;
    if (strcmp(t->dtype, "int32") == 0) { /* token ids: exact */
        const int32_t *ref = t->data;
        e = 0;
        for (size_t i = 0; i < n; i++)
            if ((int32_t)data[i] != ref[i]) e = 1;
    } else {
        e = sdw_test_rel_err(data, t->data, n);
    }
    if (e > c->worst) {
        c->worst = e;
        snprintf(c->worst_name, sizeof c->worst_name, "%s", name);
    }
    if (!(e <= STAGE_TOL)) {
        fprintf(stderr, "  %s: relative error %.3g\n", name, e);
        c->n_failed++;
    }
}

static sdw_request request_from_manifest(json_t *man) {
    sdw_request r = sdw_request_default();
    r.prompt = json_string_value(json_object_get(man, "prompt"));
    r.negative_prompt = json_string_value(json_object_get(man, "negative_prompt"));
    r.width = (int)json_integer_value(json_object_get(man, "width"));
    r.height = (int)json_integer_value(json_object_get(man, "height"));
    r.steps = (int)json_integer_value(json_object_get(man, "steps"));
    r.guidance = (float)json_number_value(json_object_get(man, "guidance_scale"));
    r.seed = json_integer_value(json_object_get(man, "seed"));
    const char *name = json_string_value(json_object_get(json_object_get(man, "scheduler"), "name"));
    r.sampler = strcmp(name, "dpmpp2m") == 0 ? "dpm++2m" : name;
    return r;
}

static void check_case(const char *model_path, const char *tokenizer, const char *golden_case) {
    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g != NULL);
    sdw_load_options opts = sdw_load_options_default();
    opts.tokenizer_dir = tokenizer;
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    sdw_status s = sdw_model_load(model_path, &opts, &m, &err);
    if (s) {
        sdw_golden_close(g);
        ASSERT_OK(s, &err);
    }
    tap_check c = {.g = g};
    sdw_sd_set_tap(m, on_tap, &c);
    sdw_request req = request_from_manifest(sdw_golden_manifest(g));
    sdw_image img = {0};
    s = sdw_model_generate(m, &req, NULL, NULL, &img, NULL, &err);
    sdw_model_destroy(m);
    int maxd = 256;
    sdw_png ref = {0};
    sdw_error rerr = {0};
    if (s == SDW_OK &&
        sdw_png_read(sdw_test_path("golden/%s/image.png", golden_case), &ref, &rerr) == SDW_OK &&
        ref.w == img.width && ref.h == img.height && ref.channels == img.channels) {
        maxd = 0;
        for (size_t i = 0; i < (size_t)img.width * img.height * 3; i++) {
            int d = abs((int)img.data[i] - (int)ref.pixels[i]);
            if (d > maxd) maxd = d;
        }
    }
    sdw_png_deinit(&ref);
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
