/* `sdw info` on every Stable Diffusion fixture model, folder and single file: family, the
 * variant detected from the weights (and, for Turbo, the scheduler config), the prediction type,
 * and each component's parameter count against the reference's own count (ref_make_info.json,
 * written by the script that built the fixtures with diffusers/transformers). */
#include "sdw_test.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>

/* The value after "key:" on its line (copied into buf), or "" */
static const char *field(const char *out, const char *key, char *buf, size_t cap) {
    buf[0] = 0;
    char k[64];
    snprintf(k, sizeof k, "\n%s:", key);
    const char *p = strstr(out, k); /* never the first line ("model:") */
    if (!p) return buf;
    p += strlen(k);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, "\n");
    snprintf(buf, cap, "%.*s", (int)(n < cap - 1 ? n : cap - 1), p);
    return buf;
}

/* The exact count in "... [N] parameters" of a line. */
static long long count_of(const char *line) {
    const char *b = strchr(line, '[');
    return b ? atoll(b + 1) : -1;
}

static long long ref_params(const char *folder, const char *component) {
    json_t *j = json_load_file(sdw_test_path("models/%s/ref_make_info.json", folder), 0, NULL);
    json_t *v = json_object_get(json_object_get(j, "params"), component);
    long long n = json_is_integer(v) ? (long long)json_integer_value(v) : -2;
    json_decref(j);
    return n;
}

static void check_info(const char *model, bool single, const char *ref_folder, const char *variant,
                       const char *prediction, int n_te) {
    char out[8192], v[256];
    int rc =
        single
            ? sdw_test_run_sdw(out, sizeof out, "info -m '%s' --tokenizer '%s'",
                               sdw_test_path("models/%s", model), sdw_test_path("clip-tokenizer"))
            : sdw_test_run_sdw(out, sizeof out, "info -m '%s'", sdw_test_path("models/%s", model));
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    fprintf(stderr, "  %s: variant %s\n", model, field(out, "variant", v, sizeof v));
    ASSERT_TRUE(!strcmp(field(out, "family", v, sizeof v), "stable-diffusion"));
    ASSERT_TRUE(!strcmp(field(out, "variant", v, sizeof v), variant));
    ASSERT_TRUE(!strcmp(field(out, "prediction", v, sizeof v), prediction));
    ASSERT_EQ_INT(count_of(field(out, "unet", v, sizeof v)), ref_params(ref_folder, "unet"));
    ASSERT_EQ_INT(count_of(field(out, "vae", v, sizeof v)), ref_params(ref_folder, "vae"));
    ASSERT_EQ_INT(count_of(field(out, "text encoder", v, sizeof v)),
                  ref_params(ref_folder, "text_encoder"));
    if (n_te == 2)
        ASSERT_EQ_INT(count_of(field(out, "text encoder 2", v, sizeof v)),
                      ref_params(ref_folder, "text_encoder_2"));
    else
        ASSERT_TRUE(!strstr(out, "text encoder 2:"));
}

static void test_sd15(void) {
    check_info("tiny-sd15", false, "tiny-sd15", "v1", "epsilon", 1);
    check_info("tiny-sd15.safetensors", true, "tiny-sd15", "v1", "epsilon", 1);
}

static void test_sd15_inpaint(void) {
    check_info("tiny-sd15-inpaint", false, "tiny-sd15-inpaint", "v1-inpaint", "epsilon", 1);
}

/* The single file's v-prediction comes from the detection rule (SD 2.x, 4 input channels, no
 * marker or metadata: diffusers' 768-v default); --prediction overrides it. */
static void test_sd2(void) {
    check_info("tiny-sd2", false, "tiny-sd2", "v2-v", "v_prediction", 1);
    check_info("tiny-sd2.safetensors", true, "tiny-sd2", "v2-v", "v_prediction", 1);
    char out[8192], v[256];
    int rc = sdw_test_run_sdw(out, sizeof out, "info -m '%s' --tokenizer '%s' --prediction eps",
                              sdw_test_path("models/tiny-sd2.safetensors"),
                              sdw_test_path("clip-tokenizer"));
    ASSERT_EQ_INT(rc, 0);
    ASSERT_TRUE(!strcmp(field(out, "variant", v, sizeof v), "v2"));
    ASSERT_TRUE(!strcmp(field(out, "prediction", v, sizeof v), "epsilon"));
}

static void test_sdxl(void) {
    check_info("tiny-sdxl", false, "tiny-sdxl", "xl", "epsilon", 2);
    check_info("tiny-sdxl.safetensors", true, "tiny-sdxl", "xl", "epsilon", 2);
}

/* Turbo: same weights as base; the folder's trailing-spacing schedule says distilled. Its
 * capabilities: no guidance, 1 step, euler_a. */
static void test_sdxl_turbo(void) {
    check_info("tiny-sdxl-turbo", false, "tiny-sdxl-turbo", "xl-turbo", "epsilon", 2);
    char out[8192], v[256];
    ASSERT_EQ_INT(
        sdw_test_run_sdw(out, sizeof out, "info -m '%s'", sdw_test_path("models/tiny-sdxl-turbo")),
        0);
    ASSERT_STR_CONTAINS(field(out, "defaults", v, sizeof v),
                        "1 steps, guidance 0, sampler euler_a");
}

/* A single file described by its diffusers folder (--config, as diffusers'
 * from_single_file(config=...)): the heads the file cannot record, the tokenizers, the schedule
 * and the default size come from the folder, so `sdw generate` reproduces the reference's image
 * of the single file. */
static void generate_with_config(const char *file, const char *config, const char *golden,
                                 const char *sampler, float cfg) {
    char out[16384], png[1024];
    snprintf(png, sizeof png, "%s/%s.png", sdw_test_tmpdir(), sampler);
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' --config '%s' -p 'a photo of a cat' -W 64 -H 64 "
                              "--steps 4 --cfg-scale %g -s 42 --sampler %s -o '%s'",
                              sdw_test_path("models/%s", file), sdw_test_path("models/%s", config),
                              (double)cfg, sampler, png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    int d = sdw_test_png_max_diff(png, sdw_test_path("golden/%s/image.png", golden));
    fprintf(stderr, "  %s --config %s: %s max diff %d levels\n", file, config, golden, d);
    ASSERT_TRUE(d <= 2);
}

static void test_single_file_with_config(void) {
    generate_with_config("tiny-sdxl.safetensors", "tiny-sdxl", "tiny-sdxl-single/txt2img-euler",
                         "euler", 5.0f);
    generate_with_config("tiny-sd2.safetensors", "tiny-sd2", "tiny-sd2/txt2img-ddim", "ddim", 7.5f);
    /* The folder's Turbo schedule makes the base-identical file the Turbo variant. */
    char out[8192], v[256];
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "info -m '%s' --config '%s'",
                                   sdw_test_path("models/tiny-sdxl.safetensors"),
                                   sdw_test_path("models/tiny-sdxl-turbo")),
                  0);
    ASSERT_TRUE(!strcmp(field(out, "variant", v, sizeof v), "xl-turbo"));
    /* A folder that describes another model is refused by name. */
    int rc = sdw_test_run_sdw(out, sizeof out, "info -m '%s' --config '%s'",
                              sdw_test_path("models/tiny-sd15.safetensors"),
                              sdw_test_path("models/tiny-sdxl"));
    ASSERT_TRUE(rc != 0);
    ASSERT_STR_CONTAINS(out, "does not describe");
    rc = sdw_test_run_sdw(out, sizeof out, "info -m '%s' --config /nonexistent/sdxl",
                          sdw_test_path("models/tiny-sdxl.safetensors"));
    ASSERT_TRUE(rc != 0);
    ASSERT_STR_CONTAINS(out, "--config /nonexistent/sdxl is not a folder");
}

int main(void) {
    RUN(test_sd15);
    RUN(test_sd15_inpaint);
    RUN(test_sd2);
    RUN(test_sdxl);
    RUN(test_sdxl_turbo);
    RUN(test_single_file_with_config);
    return sdw_test_finish();
}
