/* sdw_request_resolve: defaults come from capabilities; every bad field is named. */
#include "sdw_test.h"

#include "models/infotext.h"
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

static void expect_bad(sdw_request r, const char *needle) {
    sdw_capabilities c = caps();
    sdw_request out;
    sdw_error err = {0};
    ASSERT_STATUS(sdw_request_resolve(&r, &c, &out, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, needle);
}

static void test_bad_fields_are_named(void) {
    sdw_request r = sdw_request_default();
    r.width = 100;
    expect_bad(r, "width 100 is not a multiple of 8");
    r = sdw_request_default();
    r.height = 4096;
    expect_bad(r, "height 4096 is out of range [64, 2048]");
    r = sdw_request_default();
    r.steps = -1;
    expect_bad(r, "steps -1 is out of range [1, 150]");
    r = sdw_request_default();
    r.sampler = "heun";
    expect_bad(r, "unknown sampler 'heun' (available: ddim, euler)");
    r = sdw_request_default();
    r.scheduler = "exponential";
    expect_bad(r, "unknown scheduler 'exponential'");
    r = sdw_request_default();
    r.guidance = 1000;
    expect_bad(r, "guidance scale 1000");
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
    sdw_infotext_format(&r, &info, "sd15", buf, sizeof buf);
    ASSERT_TRUE(strcmp(buf, "a cat\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ 2M, "
                            "Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x768, "
                            "Model: sd15, RNG: CPU") == 0);
    r.rng = SDW_RNG_SOURCE_PHILOX;
    r.negative_prompt = NULL;
    strcpy(info.scheduler, "default");
    sdw_infotext_format(&r, &info, NULL, buf, sizeof buf);
    ASSERT_TRUE(strcmp(buf, "a cat\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 42, "
                            "Size: 512x768") == 0);
}

int main(void) {
    RUN(test_defaults_fill_unset_fields);
    RUN(test_bad_fields_are_named);
    RUN(test_distilled_model_ignores_guidance);
    RUN(test_txt2img_unsupported);
    RUN(test_infotext);
    return sdw_test_finish();
}
