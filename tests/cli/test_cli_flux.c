/* The sdw command with FLUX.1 models, end to end: `sdw info` on every fixture form (diffusers
 * folders, BFL single files completed by --config, components from --vae / --clip-l / --t5xxl)
 * against the reference's parameter counts; `sdw generate` against the reference PNGs with the
 * A1111 parameters Forge writes for FLUX; the family's request option (--param); tokenize; and
 * bad input. */
#include "sdw_test.h"

#include "io/png.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* The value after "key:" on its line (copied into buf), or "". */
static const char *field(const char *out, const char *key, char *buf, size_t cap) {
    buf[0] = 0;
    char k[64];
    snprintf(k, sizeof k, "\n%s:", key);
    const char *p = strstr(out, k);
    if (!p) return buf;
    p += strlen(k);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, "\n");
    snprintf(buf, cap, "%.*s", (int)(n < cap - 1 ? n : cap - 1), p);
    return buf;
}

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

/* `sdw info <args>`: family flux, the variant, each component's parameters as the reference
 * counted them (ref_make_info.json of ref_folder). */
static void check_info(const char *args, const char *ref_folder, const char *variant) {
    char out[8192], v[256];
    int rc = sdw_test_run_sdw(out, sizeof out, "info %s", args);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    fprintf(stderr, "  %s: %s %s\n", ref_folder, field(out, "family", v, sizeof v),
            field(out, "variant", v + 128, sizeof v - 128));
    ASSERT_TRUE(!strcmp(field(out, "family", v, sizeof v), "flux"));
    ASSERT_TRUE(!strcmp(field(out, "variant", v, sizeof v), variant));
    ASSERT_EQ_INT(count_of(field(out, "transformer", v, sizeof v)),
                  ref_params(ref_folder, "transformer"));
    ASSERT_EQ_INT(count_of(field(out, "vae", v, sizeof v)), ref_params(ref_folder, "vae"));
    ASSERT_EQ_INT(count_of(field(out, "text encoder", v, sizeof v)),
                  ref_params(ref_folder, "text_encoder"));
    ASSERT_EQ_INT(count_of(field(out, "text encoder 2", v, sizeof v)),
                  ref_params(ref_folder, "text_encoder_2"));
    ASSERT_STR_CONTAINS(out, "samplers:     euler\n");
}

static void test_info_every_form(void) {
    char args[4096];
    snprintf(args, sizeof args, "-m '%s'", sdw_test_path("models/tiny-flux"));
    check_info(args, "tiny-flux", "dev");
    snprintf(args, sizeof args, "-m '%s'", sdw_test_path("models/tiny-flux-schnell"));
    check_info(args, "tiny-flux-schnell", "schnell");
    snprintf(args, sizeof args, "-m '%s' --config '%s'",
             sdw_test_path("models/flux-tiny-dev.safetensors"), sdw_test_path("models/tiny-flux"));
    check_info(args, "tiny-flux", "dev");
    snprintf(args, sizeof args, "-m '%s' --config '%s'",
             sdw_test_path("models/flux-tiny-schnell.safetensors"),
             sdw_test_path("models/tiny-flux-schnell"));
    check_info(args, "tiny-flux-schnell", "schnell");
    /* the VAE from BFL's ae file, the text encoders as plain transformers weight files */
    char clip[1024], t5[1024];
    snprintf(clip, sizeof clip, "%s",
             sdw_test_path("models/tiny-flux/text_encoder/model.safetensors"));
    snprintf(t5, sizeof t5, "%s", sdw_test_path("models/tiny-flux/text_encoder_2/model.safetensors"));
    snprintf(args, sizeof args, "-m '%s' --config '%s' --vae '%s' --clip-l '%s' --t5xxl '%s'",
             sdw_test_path("models/flux-tiny-dev.safetensors"), sdw_test_path("models/tiny-flux"),
             sdw_test_path("models/flux-tiny-ae.safetensors"), clip, t5);
    check_info(args, "tiny-flux", "dev");
}

/* The golden cases through the command line: same image, and the PNG's parameters in Forge's
 * words for a guidance-embedding model. */
static void test_generate_matches_reference(void) {
    char out[8192], png[1024];
    snprintf(png, sizeof png, "%s/flux-dev.png", sdw_test_tmpdir());
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' -p 'a photo of a cat' -W 64 -H 64 --steps 4 "
                              "--cfg-scale 3.5 -s 42 -o '%s'",
                              sdw_test_path("models/tiny-flux"), png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    int d = sdw_test_png_max_diff(png, sdw_test_path("golden/tiny-flux/txt2img-flowmatch/image.png"));
    fprintf(stderr, "  dev: max diff %d levels\n", d);
    ASSERT_TRUE(d <= 2);
    sdw_png img = {0};
    sdw_error err = {0};
    ASSERT_OK(sdw_png_read(png, &img, &err), &err);
    char text[4096];
    snprintf(text, sizeof text, "%s",
             sdw_png_text(&img, "parameters") ? sdw_png_text(&img, "parameters") : "");
    sdw_png_deinit(&img);
    ASSERT_STR_CONTAINS(text, "Steps: 4, Sampler: Euler, CFG scale: 1, Distilled CFG Scale: 3.5, "
                              "Seed: 42, Size: 64x64, Model: tiny-flux");

    /* schnell from BFL's single file: a guidance value is ignored with a warning */
    snprintf(png, sizeof png, "%s/flux-schnell.png", sdw_test_tmpdir());
    rc = sdw_test_run_sdw(out, sizeof out,
                          "generate -m '%s' --config '%s' -p 'a photo of a cat' -W 64 -H 64 "
                          "--steps 4 --cfg-scale 3.5 -s 42 -o '%s'",
                          sdw_test_path("models/flux-tiny-schnell.safetensors"),
                          sdw_test_path("models/tiny-flux-schnell"), png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_STR_CONTAINS(out, "guidance scale 3.5 ignored");
    d = sdw_test_png_max_diff(png,
                              sdw_test_path("golden/tiny-flux-schnell/txt2img-4step/image.png"));
    fprintf(stderr, "  schnell: max diff %d levels\n", d);
    ASSERT_TRUE(d <= 2);
}

/* --param passes the family's request option through; tokenize shows T5's ids. */
static void test_param_and_tokenize(void) {
    char out[8192], png[1024];
    snprintf(png, sizeof png, "%s/flux-256.png", sdw_test_tmpdir());
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' -p 'a cat' -W 64 -H 64 --steps 1 -s 1 "
                              "--param max_sequence_length=256 -o '%s'",
                              sdw_test_path("models/tiny-flux-schnell"), png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    rc = sdw_test_run_sdw(out, sizeof out, "tokenize -m '%s' -p 'a photo of a cat'",
                          sdw_test_path("models/tiny-flux"));
    ASSERT_EQ_INT(rc, 0);
    ASSERT_STR_CONTAINS(out, "(window 512)");
    /* the ids end with T5's EOS (</s> = 1) */
    ASSERT_STR_CONTAINS(out, " 1\n");
}

static void expect_error(const char *args, const char *needle) {
    char out[8192];
    int rc = sdw_test_run_sdw(out, sizeof out, "%s", args);
    if (rc == 0 || !strstr(out, needle)) fprintf(stderr, "  %s\n  -> %s\n", args, out);
    ASSERT_TRUE(rc != 0);
    ASSERT_STR_CONTAINS(out, needle);
}

static void test_bad_input(void) {
    char args[4096];
    const char *m = sdw_test_path("models/tiny-flux");
    snprintf(args, sizeof args, "generate -m '%s' -p cat -W 66 -H 64", m);
    expect_error(args, "width 66 is not a multiple of 4");
    snprintf(args, sizeof args, "generate -m '%s' -p cat --param clip_skip=2", m);
    expect_error(args, "this model takes no option 'clip_skip' (it takes: max_sequence_length)");
    snprintf(args, sizeof args, "generate -m '%s' -p cat --param max_sequence_length=0", m);
    expect_error(args, "max_sequence_length 0 is out of range [1, 512]");
    snprintf(args, sizeof args, "generate -m '%s' -p cat --sampler euler_a", m);
    expect_error(args, "unknown sampler 'euler_a' (available: euler)");
    snprintf(args, sizeof args, "info -m '%s' --prediction v", m);
    expect_error(args, "a flux model takes no 'prediction' option");
    snprintf(args, sizeof args, "info -m '%s'", sdw_test_path("models/flux-tiny-dev.safetensors"));
    expect_error(args, "give --config DIR");
    snprintf(args, sizeof args, "info -m '%s' --config '%s' --vae /nonexistent/ae.safetensors",
             sdw_test_path("models/flux-tiny-dev.safetensors"), m);
    expect_error(args, "--vae /nonexistent/ae.safetensors does not exist");
}

int main(void) {
    RUN(test_info_every_form);
    RUN(test_generate_matches_reference);
    RUN(test_param_and_tokenize);
    RUN(test_bad_input);
    return sdw_test_finish();
}
