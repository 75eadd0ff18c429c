/* sdw_request_resolve: defaults come from capabilities; every bad field is named. */
#include "sdw_test.h"

#include "io/infotext.h"
#include "sdw/image_model.h"

static const char *const samplers[] = {"ddim", "euler", NULL};
static const char *const schedulers[] = {"default", "karras", NULL};

static sdw_capabilities caps(void) {
    return (sdw_capabilities){.txt2img = true, .supports_guidance = true, .default_width = 512,
                              .default_height = 768, .default_steps = 20, .default_guidance = 7.5f,
                              .size_multiple = 8, .min_size = 64, .max_size = 2048,
                              .max_steps = 150, .samplers = samplers, .default_sampler = "euler",
                              .schedulers = schedulers};
}

static void test_defaults_fill_unset_fields(void) {
    sdw_capabilities c = caps();
    sdw_request r = sdw_request_default(), out;
    sdw_error err = {0};
    r.prompt = "x";
    ASSERT_OK(sdw_request_resolve(&r, &c, &out, &err), &err);
    ASSERT_EQ_INT(out.width, 512);
    ASSERT_EQ_INT(out.height, 768);
    ASSERT_EQ_INT(out.steps, 20);
    ASSERT_TRUE(out.guidance == 7.5f);
    ASSERT_TRUE(strcmp(out.sampler, "euler") == 0);
    ASSERT_TRUE(strcmp(out.scheduler, "default") == 0);
    ASSERT_TRUE(out.seed < 0);
}

/* The message names the problem, err.field the sdw_request field (for the APIs' "param"). */
static void expect_bad(sdw_request r, const char *field, const char *needle) {
    sdw_capabilities c = caps();
    sdw_request out;
    sdw_error err = {0};
    ASSERT_STATUS(sdw_request_resolve(&r, &c, &out, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, needle);
    ASSERT_TRUE(err.field && strcmp(err.field, field) == 0);
}

static void test_bad_fields_are_named(void) {
    sdw_request r = sdw_request_default();
    r.width = 100;
    expect_bad(r, "width", "width 100 is not a multiple of 8");
    r = sdw_request_default();
    r.height = 4096;
    expect_bad(r, "height", "height 4096 is out of range [64, 2048]");
    r = sdw_request_default();
    r.steps = -1;
    expect_bad(r, "steps", "steps -1 is out of range [1, 150]");
    r = sdw_request_default();
    r.sampler = "heun";
    expect_bad(r, "sampler", "unknown sampler 'heun' (available: ddim, euler)");
    r = sdw_request_default();
    r.scheduler = "exponential";
    expect_bad(r, "scheduler", "unknown scheduler 'exponential'");
    r = sdw_request_default();
    r.guidance = 1000;
    expect_bad(r, "guidance", "guidance scale 1000");
}

static void test_distilled_model_ignores_guidance(void) {
    sdw_capabilities c = caps();
    c.supports_guidance = false;
    sdw_request r = sdw_request_default(), out;
    sdw_error err = {0};
    r.guidance = 7;
    ASSERT_OK(sdw_request_resolve(&r, &c, &out, &err), &err);
    ASSERT_TRUE(out.guidance == 0);
}

static void test_txt2img_unsupported(void) {
    sdw_capabilities c = caps();
    c.txt2img = false;
    sdw_request r = sdw_request_default(), out;
    sdw_error err = {0};
    ASSERT_STATUS(sdw_request_resolve(&r, &c, &out, &err), SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(err.msg, "text-to-image");
}

static void test_infotext(void) {
    sdw_request r = sdw_request_default();
    r.prompt = "a cat";
    r.negative_prompt = "dog";
    sdw_result_info info = {.seed = 42, .width = 512, .height = 768, .steps = 20, .guidance = 7.5f};
    strcpy(info.sampler, "dpm++2m");
    strcpy(info.scheduler, "karras");
    char buf[512];
    sdw_infotext_format(&r, &info, "/models/sd15.safetensors", buf, sizeof buf);
    ASSERT_TRUE(strcmp(buf, "a cat\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ 2M, "
                            "Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x768, "
                            "Model: sd15, RNG: CPU") == 0);
    r.rng = SDW_RNG_PHILOX;
    r.negative_prompt = NULL;
    strcpy(info.scheduler, "default");
    sdw_infotext_format(&r, &info, NULL, buf, sizeof buf);
    ASSERT_TRUE(strcmp(buf, "a cat\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 42, "
                            "Size: 512x768") == 0);
}

/* A tiny image of w x h, channels ch; the pixel values do not matter to resolution. */
static sdw_image image(int w, int h, int ch) {
    static uint8_t px[4 * 300 * 300];
    return (sdw_image){.width = w, .height = h, .channels = ch, .data = px};
}

static sdw_capabilities img_caps(void) {
    sdw_capabilities c = caps();
    c.img2img = c.inpainting = true;
    return c;
}

static void test_img2img_defaults(void) {
    sdw_capabilities c = img_caps();
    sdw_image init = image(203, 130, 3);
    sdw_request r = sdw_request_default(), out;
    sdw_error err = {0};
    r.init_image = &init;
    ASSERT_OK(sdw_request_resolve(&r, &c, &out, &err), &err);
    /* the image's size rounded down to the multiple; the default strength */
    ASSERT_EQ_INT(out.width, 200);
    ASSERT_EQ_INT(out.height, 128);
    ASSERT_TRUE(out.strength == 0.75);
    ASSERT_TRUE(out.init_image == &init && out.mask == NULL);
    /* an explicit size wins (the pipeline resizes); an explicit strength is kept */
    r.width = 64;
    r.height = 72;
    r.strength = 1.0;
    ASSERT_OK(sdw_request_resolve(&r, &c, &out, &err), &err);
    ASSERT_EQ_INT(out.width, 64);
    ASSERT_EQ_INT(out.height, 72);
    ASSERT_TRUE(out.strength == 1.0);
    /* resolving a resolved request changes nothing */
    sdw_request again;
    ASSERT_OK(sdw_request_resolve(&out, &c, &again, &err), &err);
    ASSERT_TRUE(again.width == out.width && again.height == out.height &&
                again.strength == out.strength && again.steps == out.steps);
    /* text-to-image reports strength 0, and stays resolvable */
    r = sdw_request_default();
    ASSERT_OK(sdw_request_resolve(&r, &c, &out, &err), &err);
    ASSERT_TRUE(out.strength == 0);
    ASSERT_OK(sdw_request_resolve(&out, &c, &again, &err), &err);
    ASSERT_TRUE(again.strength == 0 && again.width == out.width);
}

static void expect_img(sdw_capabilities c, sdw_request r, sdw_status code, const char *needle) {
    sdw_request out;
    sdw_error err = {0};
    ASSERT_STATUS(sdw_request_resolve(&r, &c, &out, &err), code);
    ASSERT_STR_CONTAINS(err.msg, needle);
}

static void test_img2img_bad_input(void) {
    sdw_capabilities c = img_caps();
    sdw_image init = image(128, 128, 4), mask = image(128, 128, 1), small = image(128, 120, 1);
    sdw_image empty = image(0, 128, 3), grey2 = image(128, 128, 5), tiny = image(40, 200, 3);
    sdw_image nodata = {.width = 8, .height = 8, .channels = 3};
    sdw_request r = sdw_request_default();
    r.mask = &mask;
    expect_img(c, r, SDW_E_INVALID_ARG, "a mask needs an init image");
    r = sdw_request_default();
    r.strength = 0.5;
    expect_img(c, r, SDW_E_INVALID_ARG, "strength 0.5 needs an init image");
    r.init_image = &init;
    r.strength = 0;
    expect_img(c, r, SDW_E_INVALID_ARG, "strength 0 is out of range (0, 1]");
    r.strength = 1.5;
    expect_img(c, r, SDW_E_INVALID_ARG, "strength 1.5 is out of range (0, 1]");
    r.strength = NAN;
    expect_img(c, r, SDW_E_INVALID_ARG, "strength nan is out of range");
    /* int(4 * 0.2) = 0 steps: the reference refuses too */
    r.strength = 0.2;
    r.steps = 4;
    expect_img(c, r, SDW_E_INVALID_ARG, "strength 0.2 with 4 steps runs no denoising step");
    r.strength = 0.25; /* exactly one step */
    sdw_request out;
    sdw_error err = {0};
    ASSERT_OK(sdw_request_resolve(&r, &c, &out, &err), &err);
    r = sdw_request_default();
    r.init_image = &init;
    r.mask = &small;
    expect_img(c, r, SDW_E_INVALID_ARG, "mask size 128x120 does not match the init image size 128x128");
    r.mask = &grey2;
    expect_img(c, r, SDW_E_INVALID_ARG, "mask has 5 channels");
    r.mask = NULL;
    r.init_image = &empty;
    expect_img(c, r, SDW_E_INVALID_ARG, "init image is empty (0x128)");
    r.init_image = &nodata;
    expect_img(c, r, SDW_E_INVALID_ARG, "init image is empty");
    r.init_image = &tiny;
    expect_img(c, r, SDW_E_INVALID_ARG, "init image 40x200 is smaller than the model's minimum 64x64");
    r.width = r.height = 64; /* with a size asked for, a small image is simply resized */
    ASSERT_OK(sdw_request_resolve(&r, &c, &out, &err), &err);
    sdw_image big = image(300, 300, 3);
    c.max_size = 256;
    r = sdw_request_default();
    r.init_image = &big;
    expect_img(c, r, SDW_E_INVALID_ARG, "init image 300x300 is larger than the model's maximum 256");
}

static void test_modes_against_capabilities(void) {
    sdw_image init = image(64, 64, 3), mask = image(64, 64, 3);
    sdw_capabilities c = img_caps();
    sdw_request r = sdw_request_default();
    r.init_image = &init;
    c.img2img = false;
    expect_img(c, r, SDW_E_UNSUPPORTED, "does not support image-to-image");
    c = img_caps();
    c.inpainting = false;
    r.mask = &mask;
    expect_img(c, r, SDW_E_UNSUPPORTED, "does not support inpainting");
    /* an inpainting-only model explains what it needs */
    c = img_caps();
    c.txt2img = false;
    expect_img(c, sdw_request_default(), SDW_E_UNSUPPORTED, "needs an init image and a mask");
}

static void test_infotext_strength(void) {
    sdw_request r = sdw_request_default();
    r.prompt = "a cat";
    sdw_result_info info = {.seed = 1, .width = 64, .height = 64, .steps = 4, .guidance = 7.5f,
                            .strength = 0.6};
    strcpy(info.sampler, "ddim");
    strcpy(info.scheduler, "default");
    char buf[512];
    sdw_infotext_format(&r, &info, NULL, buf, sizeof buf);
    ASSERT_STR_CONTAINS(buf, "Size: 64x64, Denoising strength: 0.6, RNG: CPU");
}

/* Resolving once: resolve marks the request with the capabilities it was checked against, and
 * sdw_model_generate runs a request marked with its model's capabilities as it is. */
typedef struct fake_model {
    sdw_image_model base;
    sdw_capabilities caps;
    sdw_request seen; /* what generate() received */
} fake_model;

static const sdw_capabilities *fake_caps(const sdw_image_model *m) {
    return &((const fake_model *)m)->caps;
}
static sdw_status fake_generate(sdw_image_model *m, const sdw_request *req,
                                sdw_progress_fn progress, void *user, sdw_image *out,
                                sdw_result_info *info, sdw_error *err) {
    ((fake_model *)m)->seen = *req;
    return SDW_OK;
}
static const sdw_image_model_ops fake_ops = {.capabilities = fake_caps,
                                             .generate = fake_generate};

static void test_resolved_once(void) {
    fake_model m = {.base.ops = &fake_ops, .caps = caps()};
    sdw_request r = sdw_request_default(), out;
    sdw_error err = {0};
    sdw_image img = {0};
    ASSERT_TRUE(r.resolved == NULL);
    ASSERT_OK(sdw_request_resolve(&r, &m.caps, &out, &err), &err);
    ASSERT_TRUE(out.resolved == &m.caps);
    /* generate() always gets a resolved request */
    ASSERT_OK(sdw_model_generate(&m.base, &r, NULL, NULL, &img, NULL, &err), &err);
    ASSERT_TRUE(m.seen.resolved == &m.caps && m.seen.steps == 20);
    /* A request resolved for this model is not resolved again: shown here by breaking the
     * contract (a field changed after resolving), which only a second resolve would refuse. */
    out.steps = 1000;
    ASSERT_OK(sdw_model_generate(&m.base, &out, NULL, NULL, &img, NULL, &err), &err);
    ASSERT_EQ_INT(m.seen.steps, 1000);
    /* resolved against other capabilities: resolved again, for this model */
    sdw_capabilities other = caps();
    out.resolved = &other;
    ASSERT_STATUS(sdw_model_generate(&m.base, &out, NULL, NULL, &img, NULL, &err),
                  SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "steps 1000 is out of range [1, 150]");
}

int main(void) {
    RUN(test_defaults_fill_unset_fields);
    RUN(test_bad_fields_are_named);
    RUN(test_distilled_model_ignores_guidance);
    RUN(test_txt2img_unsupported);
    RUN(test_infotext);
    RUN(test_img2img_defaults);
    RUN(test_img2img_bad_input);
    RUN(test_modes_against_capabilities);
    RUN(test_infotext_strength);
    RUN(test_resolved_once);
    return sdw_test_finish();
}
