/* `sdw generate --control-net DIR --control-image FILE --control-strength S` end to end: the
 * reference's ControlNet image (golden tiny-sd15/txt2img-ddim-controlnet) from the fixture
 * ControlNet by path and by name in --controlnet-dir, the strength and window options doing
 * what they say, and bad input (an image that does not decode, start >= end, counts that do not
 * pair, a name without a folder, a ControlNet for another base) giving one clear error line
 * with the input exit code. */
#include "sdw_test.h"

#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define CASE "tiny-sd15/txt2img-ddim-controlnet"
#define EXIT_USAGE 2
#define EXIT_INPUT 3

static const char *tmp(const char *name) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", sdw_test_tmpdir(), name);
    return buf[k];
}

/* The golden's settings (no size: the control image's 64x64) plus extra, into png. */
static int generate(char *out, size_t cap, const char *extra, const char *png) {
    return sdw_test_run_sdw(out, cap,
                            "generate -q -m '%s' -p 'a photo of a cat' --steps 4 --cfg-scale 7.5 "
                            "-s 42 --sampler ddim %s -o '%s'",
                            sdw_test_path("models/tiny-sd15"), extra, png);
}

static void test_reproduces_the_reference(void) {
    char out[8192], extra[4096];
    snprintf(extra, sizeof extra, "--control-net '%s' --control-image '%s' --control-strength 1",
             sdw_test_path("models/tiny-sd15-controlnet"),
             sdw_test_path("golden/%s/control_image.png", CASE));
    const char *png = tmp("cn.png");
    int rc = generate(out, sizeof out, extra, png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    int d = sdw_test_png_max_diff(png, sdw_test_path("golden/%s/image.png", CASE));
    fprintf(stderr, "  by path: max diff %d levels\n", d);
    ASSERT_TRUE(d <= 2);

    /* by name in a ControlNet folder (the fixtures' models folder holds it as a folder) */
    snprintf(extra, sizeof extra,
             "--controlnet-dir '%s' --control-net tiny-sd15-controlnet --control-image '%s'",
             sdw_test_path("models"), sdw_test_path("golden/%s/control_image.png", CASE));
    const char *png2 = tmp("cn_name.png");
    rc = generate(out, sizeof out, extra, png2);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_EQ_INT(sdw_test_png_max_diff(png, png2), 0);
}

/* Strength 0 and a window the 4 steps never fall in both give the plain text-to-image run. */
static void test_strength_and_window(void) {
    char out[8192], extra[4096];
    const char *plain = tmp("plain.png"), *zero = tmp("zero.png"), *never = tmp("never.png");
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out,
                                   "generate -q -m '%s' -p 'a photo of a cat' -W 64 -H 64 "
                                   "--steps 4 --cfg-scale 7.5 -s 42 --sampler ddim -o '%s'",
                                   sdw_test_path("models/tiny-sd15"), plain),
                  0);
    snprintf(extra, sizeof extra, "--control-net '%s' --control-image '%s' --control-strength 0",
             sdw_test_path("models/tiny-sd15-controlnet"),
             sdw_test_path("golden/%s/control_image.png", CASE));
    ASSERT_EQ_INT(generate(out, sizeof out, extra, zero), 0);
    snprintf(extra, sizeof extra,
             "--control-net '%s' --control-image '%s' --control-start 0.3 --control-end 0.7",
             sdw_test_path("models/tiny-sd15-controlnet"),
             sdw_test_path("golden/%s/control_image.png", CASE));
    ASSERT_EQ_INT(generate(out, sizeof out, extra, never), 0);
    ASSERT_EQ_INT(sdw_test_png_max_diff(plain, zero), 0);
    ASSERT_EQ_INT(sdw_test_png_max_diff(plain, never), 0);
}

static void expect_refusal(const char *extra, int code, const char *says) {
    char out[8192];
    int rc = generate(out, sizeof out, extra, tmp("refused.png"));
    if (rc != code || !strstr(out, says)) fprintf(stderr, "  rc %d: %s\n", rc, out);
    ASSERT_EQ_INT(rc, code);
    ASSERT_STR_CONTAINS(out, says);
}

static void test_refusals(void) {
    char cn[1024], hint[1024], junk[1024]; /* the path helpers' buffers rotate */
    snprintf(cn, sizeof cn, "%s", sdw_test_path("models/tiny-sd15-controlnet"));
    snprintf(hint, sizeof hint, "%s", sdw_test_path("golden/%s/control_image.png", CASE));
    snprintf(junk, sizeof junk, "%s", tmp("junk.png"));
    FILE *f = fopen(junk, "wb");
    ASSERT_TRUE(f != NULL);
    fputs("\x89PNG\r\n\x1a\n this is not a picture", f);
    fclose(f);
    char extra[4096];
    snprintf(extra, sizeof extra, "--control-net '%s' --control-image '%s'", cn, junk);
    expect_refusal(extra, EXIT_INPUT, "--control-image");
    snprintf(extra, sizeof extra,
             "--control-net '%s' --control-image '%s' --control-start 0.8 --control-end 0.5", cn,
             hint);
    expect_refusal(extra, EXIT_INPUT, "must be smaller than its end");
    snprintf(extra, sizeof extra, "--control-net '%s' --control-image '%s' --control-strength -1",
             cn, hint);
    expect_refusal(extra, EXIT_INPUT, "conditioning scale");
    snprintf(extra, sizeof extra, "--control-net '%s' --control-net '%s' --control-image '%s'", cn,
             cn, hint);
    expect_refusal(extra, EXIT_USAGE, "give each ControlNet its image");
    snprintf(extra, sizeof extra, "--control-net canny --control-image '%s'", hint);
    expect_refusal(extra, EXIT_INPUT, "no --controlnet-dir");
    snprintf(extra, sizeof extra, "--controlnet-dir '%s' --control-net ../tiny-sd15 "
             "--control-image '%s'", sdw_test_path("models"), hint);
    expect_refusal(extra, EXIT_INPUT, "refused");

    /* a ControlNet for another base: the fixture's weights under a config saying 64 */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", tmp("other_base"));
    ASSERT_TRUE(mkdir(dir, 0755) == 0);
    json_t *cfg = json_load_file(sdw_test_path("models/tiny-sd15-controlnet/config.json"), 0, NULL);
    ASSERT_TRUE(cfg != NULL);
    json_object_set_new(cfg, "cross_attention_dim", json_integer(64));
    char p[2048], src[2048];
    snprintf(p, sizeof p, "%s/config.json", dir);
    const int rc = json_dump_file(cfg, p, 0);
    json_decref(cfg);
    ASSERT_EQ_INT(rc, 0);
    snprintf(src, sizeof src, "%s/diffusion_pytorch_model.safetensors", cn);
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", dir);
    ASSERT_TRUE(symlink(src, p) == 0);
    snprintf(extra, sizeof extra, "--control-net '%s' --control-image '%s'", dir, hint);
    expect_refusal(extra, EXIT_INPUT, "another base model");
}

int main(void) {
    RUN(test_reproduces_the_reference);
    RUN(test_strength_and_window);
    RUN(test_refusals);
    return sdw_test_finish();
}
