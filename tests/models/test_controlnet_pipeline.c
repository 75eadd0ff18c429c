/* ControlNet through the whole Stable Diffusion pipeline (sdw_request.controls): the golden
 * tiny-sd15/txt2img-ddim-controlnet stage by stage (text encoder, the step-0 ControlNet call's
 * inputs and every residual, every UNet call, every step's latents, the VAE, the image within 2
 * levels), several ControlNets summed (the same net twice at half scale = once at full scale),
 * the guidance windows (control_guidance_start / _end), guess mode, ControlNet names in a
 * ControlNet folder, and the refusals (another base, start >= end, ranges, missing images,
 * names leading out of the folder). */
#include "sdw_test.h"

#include "io/image.h"
#include "models/diffusion.h"
#include "sdw/controlnet.h"

#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define STAGE_TOL 1e-4
#define CASE "tiny-sd15/txt2img-ddim-controlnet"

static sdw_image_model *g_model;
static sdw_image g_hint; /* the golden's control image */

static const char *cn_dir(void) { return sdw_test_path("models/tiny-sd15-controlnet"); }

/* ---- helpers ---- */

/* What a run tapped: which calls ran a ControlNet, and the UNet's outputs and final latents. */
#define MAX_CALLS 16
typedef struct run_log {
    sdw_stage_check *check; /* forwarded to, when set */
    bool control[MAX_CALLS];
    float *unet_out[MAX_CALLS];
    size_t unet_n;
} run_log;

static void log_tap(void *user, const char *name, const float *data, int n_dims,
                    const int64_t *shape) {
    run_log *l = user;
    if (l->check) sdw_stage_tap(l->check, name, data, n_dims, shape);
    int k;
    char what[64];
    if (sscanf(name, "step%d.%63s", &k, what) != 2 || k < 0 || k >= MAX_CALLS) return;
    if (!strncmp(what, "controlnet.", 11)) l->control[k] = true;
    if (!strcmp(what, "unet.out")) {
        size_t n = 1;
        for (int i = 0; i < n_dims; i++) n *= (size_t)shape[i];
        free(l->unet_out[k]);
        l->unet_out[k] = malloc(n * sizeof(float));
        memcpy(l->unet_out[k], data, n * sizeof(float));
        l->unet_n = n;
    }
}

static void log_free(run_log *l) {
    for (int k = 0; k < MAX_CALLS; k++) free(l->unet_out[k]);
    memset(l, 0, sizeof *l);
}

/* The golden's request (DDIM, 4 steps, 64x64, seed 42) with controls. */
static sdw_request golden_request(const sdw_control *controls, int n) {
    sdw_request r = sdw_request_default();
    r.prompt = "a photo of a cat";
    r.width = r.height = 64;
    r.steps = 4;
    r.guidance = 7.5f;
    r.seed = 42;
    r.sampler = "ddim";
    r.controls = controls;
    r.n_controls = n;
    return r;
}

static sdw_control control(float scale, double start, double end) {
    sdw_control c = sdw_control_default();
    c.path = cn_dir();
    c.image = &g_hint;
    c.scale = scale;
    c.start = start;
    c.end = end;
    return c;
}

static sdw_status run(const sdw_request *r, run_log *log, sdw_image *img, sdw_error *err) {
    sdw_diffusion_set_tap(g_model, log ? log_tap : NULL, log);
    sdw_status s = sdw_model_generate(g_model, r, NULL, NULL, img, NULL, err);
    sdw_diffusion_set_tap(g_model, NULL, NULL);
    return s;
}

static int image_diff(const sdw_image *a, const sdw_image *b) {
    if (a->width != b->width || a->height != b->height || a->channels != b->channels) return 256;
    int d = 0;
    for (size_t i = 0; i < (size_t)a->width * a->height * a->channels; i++)
        d = SDW_MAX(d, abs((int)a->data[i] - (int)b->data[i]));
    return d;
}

/* ---- the golden ---- */

static bool not_recorded_by_us(const char *name, const void *ctx) {
    (void)ctx;
    /* inputs the test gives (the control image as a PNG), the reference's own probe and
     * schedule records (checked by test_unet / test_schedules), unet.timestep */
    return !strcmp(name, "control_image_u8") || !strncmp(name, "probe.", 6) ||
           !strncmp(name, "sched.", 6) || strstr(name, ".unet.timestep") ||
           !strcmp(name, "image") || strstr(name, ".pooled");
}

static void test_golden_stage_by_stage(void) {
    sdw_golden *g = sdw_golden_open(CASE);
    ASSERT_TRUE(g != NULL);
    sdw_stage_check c = {.g = g, .tol = STAGE_TOL};
    run_log log = {.check = &c};
    sdw_control ctl = control(1.0f, 0.0, 1.0);
    sdw_request r = golden_request(&ctl, 1);
    sdw_image img = {0};
    sdw_error err = {0};
    sdw_status s = run(&r, &log, &img, &err);
    const int maxd =
        s ? 256 : sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", CASE));
    const int missing = s ? -1 : sdw_stage_missing(&c, not_recorded_by_us, NULL);
    sdw_image_free(&img);
    sdw_golden_close(g);
    log_free(&log);
    ASSERT_OK(s, &err);
    printf("  %s: %d stages compared, worst %.2g (%s), image max diff %d\n", CASE, c.n_compared,
           c.worst, c.worst_name, maxd);
    /* ids x2, te states x2, init noise, controlnet step 0: 5 inputs + 7 residuals, per step
     * unet sample / out / latents, vae z and out */
    ASSERT_TRUE(c.n_compared >= 2 + 2 + 1 + 12 + 3 * 4 + 2);
    ASSERT_EQ_INT(c.n_failed, 0);
    ASSERT_EQ_INT(missing, 0);
    ASSERT_TRUE(maxd <= 2);
}

/* The ControlNet matters: without it the run differs from the golden. */
static void test_without_control_differs(void) {
    sdw_request r = golden_request(NULL, 0);
    sdw_image img = {0};
    sdw_error err = {0};
    ASSERT_OK(run(&r, NULL, &img, &err), &err);
    const int d = sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", CASE));
    sdw_image_free(&img);
    printf("  without the ControlNet: image max diff %d from the golden\n", d);
    ASSERT_TRUE(d > 10);
}

/* MultiControlNetModel sums residuals: the same net twice at scale 0.5 is the net once at 1
 * (0.5·r + 0.5·r = r exactly in floating point), so the images are identical. */
static void test_multi_sums(void) {
    sdw_control one = control(1.0f, 0.0, 1.0);
    sdw_control two[2] = {control(0.5f, 0.0, 1.0), control(0.5f, 0.0, 1.0)};
    sdw_request r1 = golden_request(&one, 1), r2 = golden_request(two, 2);
    sdw_image a = {0}, b = {0}, half = {0};
    sdw_error err = {0};
    sdw_control single_half = control(0.5f, 0.0, 1.0);
    sdw_request rh = golden_request(&single_half, 1);
    sdw_status s = run(&r1, NULL, &a, &err);
    if (!s) s = run(&r2, NULL, &b, &err);
    if (!s) s = run(&rh, NULL, &half, &err);
    const int d = s ? 256 : image_diff(&a, &b), dh = s ? 0 : image_diff(&a, &half);
    sdw_image_free(&a), sdw_image_free(&b), sdw_image_free(&half);
    ASSERT_OK(s, &err);
    printf("  twice at 0.5 vs once at 1: max diff %d (once at 0.5: %d)\n", d, dh);
    ASSERT_EQ_INT(d, 0);
    ASSERT_TRUE(dh > 0); /* the scale matters */
}

/* control_guidance_start / _end: the calls a ControlNet acts in (4 calls: call i acts when
 * i/4 >= start and (i+1)/4 <= end), and outside its window the UNet sees exactly what it sees
 * without ControlNets. */
static void test_guidance_windows(void) {
    static const struct {
        double start, end;
        bool active[4];
    } cases[] = {
        {0.0, 1.0, {1, 1, 1, 1}},  {0.5, 1.0, {0, 0, 1, 1}}, {0.0, 0.5, {1, 1, 0, 0}},
        {0.25, 0.75, {0, 1, 1, 0}}, {0.3, 0.7, {0, 0, 0, 0}}, {0.2, 0.8, {0, 1, 1, 0}},
    };
    sdw_error err = {0};
    run_log plain = {0};
    sdw_request r0 = golden_request(NULL, 0);
    sdw_image img = {0};
    ASSERT_OK(run(&r0, &plain, &img, &err), &err);
    sdw_image_free(&img);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sdw_control ctl = control(1.0f, cases[i].start, cases[i].end);
        sdw_request r = golden_request(&ctl, 1);
        run_log log = {0};
        sdw_status s = run(&r, &log, &img, &err);
        sdw_image_free(&img);
        bool ok = s == SDW_OK;
        bool before = true; /* every call before the first active one is the plain run's */
        for (int k = 0; ok && k < 4; k++) {
            ok = log.control[k] == cases[i].active[k];
            if (cases[i].active[k]) before = false;
            if (ok && before)
                ok = log.unet_out[k] && plain.unet_out[k] &&
                     !memcmp(log.unet_out[k], plain.unet_out[k], log.unet_n * sizeof(float));
        }
        if (!ok)
            fprintf(stderr, "  window [%g, %g]: calls %d%d%d%d\n", cases[i].start, cases[i].end,
                    log.control[0], log.control[1], log.control[2], log.control[3]);
        log_free(&log);
        if (!ok) log_free(&plain);
        ASSERT_OK(s, &err);
        ASSERT_TRUE(ok);
    }
    log_free(&plain);
}

/* Guess mode: the unconditional half gets no residuals (its UNet output is the plain run's),
 * the conditional half does. */
static void test_guess_mode(void) {
    sdw_error err = {0};
    run_log plain = {0}, guess = {0};
    sdw_request r0 = golden_request(NULL, 0);
    sdw_control ctl = control(1.0f, 0.0, 1.0);
    sdw_request r1 = golden_request(&ctl, 1);
    r1.control_guess_mode = true;
    sdw_image img = {0};
    sdw_status s = run(&r0, &plain, &img, &err);
    sdw_image_free(&img);
    if (!s) s = run(&r1, &guess, &img, &err);
    sdw_image_free(&img);
    bool uncond_same = false, cond_differs = false;
    if (!s && plain.unet_out[0] && guess.unet_out[0]) {
        const size_t half = plain.unet_n / 2; /* step 0: the same inputs in both runs */
        uncond_same = !memcmp(plain.unet_out[0], guess.unet_out[0], half * sizeof(float));
        cond_differs = memcmp(plain.unet_out[0] + half, guess.unet_out[0] + half,
                              half * sizeof(float)) != 0;
    }
    log_free(&plain);
    log_free(&guess);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(uncond_same);
    ASSERT_TRUE(cond_differs);
}

/* ---- names in a ControlNet folder ---- */

static void test_folder_names(void) {
    const char *root = sdw_test_tmpdir();
    char dir[512], link[600], out_link[600], sub[600];
    snprintf(dir, sizeof dir, "%s/controlnets", root);
    snprintf(sub, sizeof sub, "%s/sd15", dir);
    snprintf(link, sizeof link, "%s/sd15/canny", dir);
    snprintf(out_link, sizeof out_link, "%s/escape", dir);
    ASSERT_TRUE(mkdir(dir, 0755) == 0 && mkdir(sub, 0755) == 0);
    /* dir/sd15/canny: a copy of the fixture ControlNet; dir/escape: a link to the fixture's
     * folder, outside dir */
    ASSERT_TRUE(mkdir(link, 0755) == 0);
    char src[600], dst[700];
    snprintf(dst, sizeof dst, "%s/config.json", link);
    size_t n = 0;
    void *cfg = sdw_test_read_file(sdw_test_path("models/tiny-sd15-controlnet/config.json"), &n);
    FILE *f = fopen(dst, "wb");
    ASSERT_TRUE(cfg && f && fwrite(cfg, 1, n, f) == n);
    fclose(f);
    free(cfg);
    snprintf(src, sizeof src, "%s/diffusion_pytorch_model.safetensors", cn_dir());
    snprintf(dst, sizeof dst, "%s/diffusion_pytorch_model.safetensors", link);
    void *w = sdw_test_read_file(src, &n);
    f = fopen(dst, "wb");
    ASSERT_TRUE(w && f && fwrite(w, 1, n, f) == n);
    fclose(f);
    free(w);
    ASSERT_TRUE(symlink(cn_dir(), out_link) == 0);

    sdw_controlnet_entry *list = NULL;
    int count = 0;
    sdw_error err = {0};
    ASSERT_OK(sdw_controlnet_list(dir, &list, &count, &err), &err);
    const bool listed = count == 1 && !strcmp(list[0].name, "canny") &&
                        !strcmp(list[0].path, "sd15/canny");
    sdw_controlnet_list_free(list, count);
    ASSERT_TRUE(listed); /* the link out is not listed */

    static const struct {
        const char *name;
        sdw_status want;
    } names[] = {
        {"canny", SDW_OK},           {"sd15/canny", SDW_OK},
        {"canny [d14c016b]", SDW_OK}, {"escape", SDW_E_INVALID_ARG},
        {"../controlnets/sd15/canny", SDW_E_INVALID_ARG}, {"/etc", SDW_E_INVALID_ARG},
        {"sd15/../sd15/canny", SDW_E_INVALID_ARG},        {"missing", SDW_E_NOT_FOUND},
        {"", SDW_E_INVALID_ARG},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *path = NULL;
        sdw_status s = sdw_controlnet_resolve(dir, names[i].name, &path, &err);
        if (s != names[i].want)
            fprintf(stderr, "  '%s': %d (%s)\n", names[i].name, (int)s, s ? err.msg : path);
        free(path);
        ASSERT_EQ_INT(s, names[i].want);
    }
    char *path = NULL;
    ASSERT_STATUS(sdw_controlnet_resolve(NULL, "canny", &path, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "--controlnet-dir");

    /* a model with the folder runs a request naming the ControlNet: the golden's image */
    sdw_load_options o = sdw_load_options_default();
    o.controlnet_dir = dir;
    sdw_image_model *m = NULL;
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), &o, &m, &err), &err);
    ASSERT_TRUE(sdw_model_capabilities(m)->controlnet);
    ASSERT_STR_CONTAINS(sdw_model_capabilities(m)->controlnet_dir, "controlnets");
    sdw_control ctl = control(1.0f, 0.0, 1.0);
    ctl.path = NULL;
    ctl.name = "canny [0123abcd]";
    sdw_request r = golden_request(&ctl, 1);
    sdw_image img = {0};
    sdw_status s = sdw_model_generate(m, &r, NULL, NULL, &img, NULL, &err);
    const int d = s ? 256 : sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", CASE));
    sdw_image_free(&img);
    sdw_error err2 = {0};
    ctl.name = "escape";
    sdw_status s2 = sdw_model_generate(m, &r, NULL, NULL, &img, NULL, &err2);
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(d <= 2);
    ASSERT_STATUS(s2, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err2.msg, "outside");
}

/* ---- refusals ---- */

/* A ControlNet for another base model: its config says a 64-wide cross-attention (the
 * fixture's text encoder gives 32) — refused before any weight is bound. */
static void test_other_base_refused(void) {
    char dir[600], dst[700];
    snprintf(dir, sizeof dir, "%s/other_base", sdw_test_tmpdir());
    ASSERT_TRUE(mkdir(dir, 0755) == 0);
    json_t *cfg = json_load_file(sdw_test_path("models/tiny-sd15-controlnet/config.json"), 0, NULL);
    ASSERT_TRUE(cfg != NULL);
    json_object_set_new(cfg, "cross_attention_dim", json_integer(64));
    snprintf(dst, sizeof dst, "%s/config.json", dir);
    const int rc = json_dump_file(cfg, dst, 0);
    json_decref(cfg);
    ASSERT_EQ_INT(rc, 0);
    char src[600];
    snprintf(src, sizeof src, "%s/diffusion_pytorch_model.safetensors", cn_dir());
    snprintf(dst, sizeof dst, "%s/diffusion_pytorch_model.safetensors", dir);
    ASSERT_TRUE(symlink(src, dst) == 0);
    sdw_control ctl = control(1.0f, 0.0, 1.0);
    ctl.path = dir;
    sdw_request r = golden_request(&ctl, 1);
    sdw_image img = {0};
    sdw_error err = {0};
    ASSERT_STATUS(run(&r, NULL, &img, &err), SDW_E_SHAPE);
    printf("  %s\n", err.msg);
    ASSERT_STR_CONTAINS(err.msg, "another base model");
    ASSERT_STR_CONTAINS(err.msg, "64");
    ASSERT_TRUE(img.data == NULL);
    /* the model still runs afterwards (nothing half-loaded stays) */
    sdw_control good = control(1.0f, 0.0, 1.0);
    r = golden_request(&good, 1);
    ASSERT_OK(run(&r, NULL, &img, &err), &err);
    sdw_image_free(&img);
}

/* Requests the resolver refuses before anything runs. */
static void test_request_refusals(void) {
    const sdw_capabilities *caps = sdw_model_capabilities(g_model);
    sdw_image empty = {0};
    static const struct {
        float scale;
        double start, end;
        int image; /* 0: the hint, 1: none, 2: an empty image */
        int naming; /* 0: path, 1: none, 2: both */
        const char *says;
    } cases[] = {
        {1, 0.8, 0.5, 0, 0, "must be smaller than its end"},
        {1, 0.5, 0.5, 0, 0, "must be smaller than its end"},
        {1, -0.1, 0.5, 0, 0, "[0, 1]"},
        {1, 0.0, 1.5, 0, 0, "[0, 1]"},
        {-1, 0.0, 1.0, 0, 0, "conditioning scale"},
        {NAN, 0.0, 1.0, 0, 0, "conditioning scale"},
        {1, 0.0, 1.0, 1, 0, "no control image"},
        {1, 0.0, 1.0, 2, 0, "empty"},
        {1, 0.0, 1.0, 0, 1, "neither"},
        {1, 0.0, 1.0, 0, 2, "not both"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sdw_control c = control(cases[i].scale, cases[i].start, cases[i].end);
        c.image = cases[i].image == 0 ? &g_hint : cases[i].image == 1 ? NULL : &empty;
        if (cases[i].naming == 1) c.path = NULL;
        if (cases[i].naming == 2) c.name = "canny";
        sdw_request r = golden_request(&c, 1), out;
        sdw_error err = {0};
        sdw_status s = sdw_request_resolve(&r, caps, &out, &err);
        if (s != SDW_E_INVALID_ARG || !strstr(err.msg, cases[i].says))
            fprintf(stderr, "  case %zu: %d '%s'\n", i, (int)s, err.msg);
        ASSERT_EQ_INT(s, SDW_E_INVALID_ARG);
        ASSERT_STR_CONTAINS(err.msg, cases[i].says);
        ASSERT_STR_CONTAINS(err.field, "controls");
    }
    /* too many; a model without ControlNets */
    sdw_control many[SDW_MAX_CONTROLS + 1];
    for (int i = 0; i <= SDW_MAX_CONTROLS; i++) many[i] = control(1, 0, 1);
    sdw_request r = golden_request(many, SDW_MAX_CONTROLS + 1), out;
    sdw_error err = {0};
    ASSERT_STATUS(sdw_request_resolve(&r, caps, &out, &err), SDW_E_INVALID_ARG);
    sdw_capabilities none = *caps;
    none.controlnet = false;
    r = golden_request(many, 1);
    ASSERT_STATUS(sdw_request_resolve(&r, &none, &out, &err), SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(err.msg, "does not take ControlNets");
    /* a path that does not exist, a file that is no ControlNet: at run time, named */
    sdw_control c = control(1, 0, 1);
    c.path = "/nonexistent/controlnet";
    r = golden_request(&c, 1);
    sdw_image img = {0};
    ASSERT_STATUS(run(&r, NULL, &img, &err), SDW_E_NOT_FOUND);
    ASSERT_STR_CONTAINS(err.msg, "/nonexistent/controlnet");
    c.path = sdw_test_path("models/tiny-sd15/unet/diffusion_pytorch_model.safetensors");
    ASSERT_STATUS(run(&r, NULL, &img, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "is not ControlNetModel"); /* a UNet folder's weights */
    c.path = sdw_test_path("models/tiny-taesd/taesd_decoder.safetensors");
    ASSERT_STATUS(run(&r, NULL, &img, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "not a ControlNet");
}

/* Without a size, text-to-image takes the control image's (as the reference pipeline). */
static void test_size_from_control_image(void) {
    sdw_control c = control(1, 0, 1);
    sdw_request r = golden_request(&c, 1), out;
    r.width = r.height = 0;
    sdw_image big = {0};
    big.width = 131, big.height = 77, big.channels = 3;
    big.data = calloc((size_t)big.width * big.height * 3, 1);
    c.image = &big;
    sdw_error err = {0};
    sdw_status s = sdw_request_resolve(&r, sdw_model_capabilities(g_model), &out, &err);
    free(big.data);
    ASSERT_OK(s, &err);
    ASSERT_EQ_INT(out.width, 128);
    ASSERT_EQ_INT(out.height, 72);
}

int main(void) {
    sdw_error err = {0};
    sdw_load_options o = sdw_load_options_default();
    if (sdw_model_load(sdw_test_path("models/tiny-sd15"), &o, &g_model, &err) ||
        sdw_image_load(sdw_test_path("golden/%s/control_image.png", CASE), &g_hint, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return 1;
    }
    RUN(test_golden_stage_by_stage);
    RUN(test_without_control_differs);
    RUN(test_multi_sums);
    RUN(test_guidance_windows);
    RUN(test_guess_mode);
    RUN(test_folder_names);
    RUN(test_other_base_refused);
    RUN(test_request_refusals);
    RUN(test_size_from_control_image);
    sdw_model_destroy(g_model);
    sdw_image_free(&g_hint);
    return sdw_test_finish();
}
