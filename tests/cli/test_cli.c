/* End-to-end tests of the sdw command: images against the reference's PNGs, and every kind of
 * bad input giving a one-line error that names the problem plus a non-zero exit. */
#include "sdw_test.h"

#include "io/png.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>

/* Counts lines in s (ignoring a trailing newline). */
static int n_lines(const char *s) {
    int n = 0;
    for (const char *c = s; *c; c++)
        if (*c == '\n' && c[1]) n++;
    return *s ? n + 1 : 0;
}

/* The golden cases and the sampler name each used. */
static const struct {
    const char *golden, *sampler;
} g_cases[] = {
    {"txt2img-ddim", "ddim"},       {"txt2img-pndm", "pndm"},       {"txt2img-euler", "euler"},
    {"txt2img-euler_a", "euler_a"}, {"txt2img-dpmpp2m", "dpm++2m"},
};

static void generate_matches(const char *model_args) {
    char out[8192];
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++) {
        char png[1024];
        snprintf(png, sizeof png, "%s/%s.png", sdw_test_tmpdir(), g_cases[i].golden);
        int rc = sdw_test_run_sdw(
            out, sizeof out,
            "generate %s -p 'a photo of a cat' -W 64 -H 64 --steps 4 --cfg-scale 7.5 "
            "-s 42 --sampler %s -o '%s'",
            model_args, g_cases[i].sampler, png);
        if (rc != 0) fprintf(stderr, "%s\n", out);
        ASSERT_EQ_INT(rc, 0);
        int d = sdw_test_png_max_diff(
            png, sdw_test_path("golden/tiny-sd15/%s/image.png", g_cases[i].golden));
        fprintf(stderr, "  %s: max diff %d levels\n", g_cases[i].sampler, d);
        ASSERT_TRUE(d <= 2);
    }
}

static void test_generate_folder_every_sampler(void) {
    char args[1024];
    snprintf(args, sizeof args, "-m '%s'", sdw_test_path("models/tiny-sd15"));
    generate_matches(args);
}

static void test_generate_single_file_every_sampler(void) {
    char args[2048];
    snprintf(args, sizeof args, "-m '%s' --tokenizer '%s'",
             sdw_test_path("models/tiny-sd15.safetensors"), sdw_test_path("clip-tokenizer"));
    generate_matches(args);
}

static void test_png_carries_a1111_parameters(void) {
    char out[8192], png[1024];
    snprintf(png, sizeof png, "%s/params.png", sdw_test_tmpdir());
    int rc =
        sdw_test_run_sdw(out, sizeof out,
                         "generate -m '%s' -p 'a photo of a cat' -n 'blurry' -W 64 -H 64 --steps 2 "
                         "-s 7 --sampler euler_a --scheduler karras -o '%s'",
                         sdw_test_path("models/tiny-sd15"), png);
    ASSERT_EQ_INT(rc, 0);
    sdw_png img = {0};
    sdw_error err = {0};
    ASSERT_OK(sdw_png_read(png, &img, &err), &err);
    char text[4096];
    snprintf(text, sizeof text, "%s",
             sdw_png_text(&img, "parameters") ? sdw_png_text(&img, "parameters") : "");
    sdw_png_deinit(&img);
    ASSERT_STR_CONTAINS(text,
                        "a photo of a cat\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a");
    ASSERT_STR_CONTAINS(text, "Schedule type: Karras");
    ASSERT_STR_CONTAINS(text, "CFG scale: 7.5, Seed: 7, Size: 64x64, Model: ");
}

static void test_random_seed_is_reported(void) {
    char out[8192], png[1024];
    snprintf(png, sizeof png, "%s/random.png", sdw_test_tmpdir());
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' -p cat -W 64 -H 64 --steps 1 -s -1 -o '%s'",
                              sdw_test_path("models/tiny-sd15"), png);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_STR_CONTAINS(out, "seed ");
}

static void test_demo_model_needs_no_files(void) {
    char out[8192], png[1024];
    snprintf(png, sizeof png, "%s/demo.png", sdw_test_tmpdir());
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -p 'a lighthouse' --steps 2 -W 64 -H 64 -s 1 -o '%s'", png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_STR_CONTAINS(out, "DEMO");
    sdw_png img = {0};
    sdw_error err = {0};
    ASSERT_OK(sdw_png_read(png, &img, &err), &err);
    ASSERT_EQ_INT(img.w, 64);
    sdw_png_deinit(&img);
    rc = sdw_test_run_sdw(out, sizeof out, "info");
    ASSERT_EQ_INT(rc, 0);
    ASSERT_STR_CONTAINS(out, "demo");
}

static void test_info_and_tokenize(void) {
    char out[8192];
    int rc = sdw_test_run_sdw(out, sizeof out, "info -m '%s'", sdw_test_path("models/tiny-sd15"));
    ASSERT_EQ_INT(rc, 0);
    ASSERT_STR_CONTAINS(out, "family:       stable-diffusion");
    ASSERT_STR_CONTAINS(out, "variant:      v1");
    ASSERT_STR_CONTAINS(out, "txt2img");
    /* The fixture's own record of its parameter counts (ref_make_info.json): unet 1106212. */
    ASSERT_STR_CONTAINS(out, "1.1M");
    rc = sdw_test_run_sdw(out, sizeof out, "tokenize -m '%s' -p 'a photo of a cat'",
                 sdw_test_path("models/tiny-sd15"));
    ASSERT_EQ_INT(rc, 0);
    ASSERT_STR_CONTAINS(out, "49406 320 1125 539 320 2368 49407\n7 tokens");
}

/* ---- bad input: each a single line naming the problem, exit != 0 ---- */

static void expect_error(const char *args, const char *needle) {
    char out[8192];
    int rc = sdw_test_run_sdw(out, sizeof out, "%s", args);
    fprintf(stderr, "  %s -> %s", args, out);
    ASSERT_TRUE(rc != 0);
    ASSERT_EQ_INT(n_lines(out), 1);
    ASSERT_STR_CONTAINS(out, needle);
}

/* Copies the tiny-sd15 folder into tmp/<name> and returns its path. */
static const char *copy_model(const char *name) {
    static char dst[1024];
    char cmd[3000];
    snprintf(dst, sizeof dst, "%s/%s", sdw_test_tmpdir(), name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s' && chmod -R u+w '%s'", dst,
             sdw_test_path("models/tiny-sd15"), dst, dst);
    if (system(cmd) != 0) return NULL;
    return dst;
}

/* Rewrites a safetensors file's header with edit(), keeping the data section. */
static bool rewrite_header(const char *path, void (*edit)(json_t *hdr)) {
    char *buf = NULL;
    size_t len = 0;
    sdw_error err = {0};
    if (sdw_read_file(path, &buf, &len, &err)) return false;
    uint64_t hl = 0;
    memcpy(&hl, buf, 8);
    json_t *hdr = json_loadb(buf + 8, hl, 0, NULL);
    if (!hdr) return false;
    edit(hdr);
    char *js = json_dumps(hdr, JSON_COMPACT);
    size_t nl = strlen(js), padded = (nl + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    uint64_t le = padded;
    fwrite(&le, 8, 1, f);
    fwrite(js, 1, nl, f);
    for (size_t i = nl; i < padded; i++) fputc(' ', f);
    fwrite(buf + 8 + hl, 1, len - 8 - hl, f);
    fclose(f);
    free(js);
    free(buf);
    json_decref(hdr);
    return true;
}

static void edit_shape(json_t *h) {
    json_t *t = json_object_get(h, "conv_in.weight");
    json_array_set_new(json_object_get(t, "shape"), 0, json_integer(16));
    json_array_set_new(json_object_get(t, "shape"), 1, json_integer(8));
}
static void edit_missing(json_t *h) { json_object_del(h, "conv_out.bias"); }
static void edit_dtype(json_t *h) {
    json_object_set_new(json_object_get(h, "conv_in.weight"), "dtype", json_string("F8_E9"));
}
static void edit_offsets(json_t *h) {
    json_t *off = json_object_get(json_object_get(h, "conv_in.weight"), "data_offsets");
    json_array_set_new(off, 1, json_integer(1LL << 40));
}

static void test_bad_model_files(void) {
    char args[2048], cmd[2048];
    const char *unet = "unet/diffusion_pytorch_model.safetensors";
    const char *d;
    struct {
        const char *name;
        void (*edit)(json_t *);
        const char *needle;
    } cases[] = {
        {"wrongshape", edit_shape, "conv_in.weight"},
        {"missing", edit_missing, "conv_out.bias"},
        {"dtype", edit_dtype, "F8_E9"},
        {"offsets", edit_offsets, "conv_in.weight"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ASSERT_TRUE((d = copy_model(cases[i].name)) != NULL);
        snprintf(cmd, sizeof cmd, "%s/%s", d, unet);
        ASSERT_TRUE(rewrite_header(cmd, cases[i].edit));
        snprintf(args, sizeof args, "generate -m '%s' -p cat -W 64 -H 64", d);
        expect_error(args, cases[i].needle);
        if (sdw_test_failures_in_current) return;
    }
    /* truncated file */
    ASSERT_TRUE((d = copy_model("truncated")) != NULL);
    snprintf(cmd, sizeof cmd, "truncate -s 5000 '%s/%s'", d, unet);
    ASSERT_EQ_INT(system(cmd), 0);
    snprintf(args, sizeof args, "generate -m '%s' -p cat", d);
    expect_error(args, "diffusion_pytorch_model.safetensors");
    /* not a safetensors file */
    snprintf(cmd, sizeof cmd, "%s/notst.safetensors", sdw_test_tmpdir());
    FILE *f = fopen(cmd, "wb");
    fputs("\x89PNG\r\n\x1a\n this is not a checkpoint", f);
    fclose(f);
    snprintf(args, sizeof args, "generate -m '%s' -p cat", cmd);
    expect_error(args, "safetensors");
    /* a pickle checkpoint is refused with the reason */
    snprintf(cmd, sizeof cmd, "%s/model.ckpt", sdw_test_tmpdir());
    f = fopen(cmd, "wb");
    fputs("PK\x03\x04 pickle inside", f);
    fclose(f);
    snprintf(args, sizeof args, "generate -m '%s' -p cat", cmd);
    expect_error(args, "pickle");
    /* missing tokenizer for a single file */
    snprintf(args, sizeof args, "generate -m '%s' -p cat",
             sdw_test_path("models/tiny-sd15.safetensors"));
    expect_error(args, "--tokenizer");
    /* model path that does not exist */
    expect_error("generate -m /nonexistent/model -p cat", "/nonexistent/model");
}

static void test_bad_values(void) {
    char args[2048];
    const char *m = sdw_test_path("models/tiny-sd15");
    snprintf(args, sizeof args, "generate -m '%s' -p cat -W 100 -H 64", m);
    expect_error(args, "width 100 is not a multiple of 8");
    snprintf(args, sizeof args, "generate -m '%s' -p cat --steps 0", m);
    expect_error(args, "--steps");
    snprintf(args, sizeof args, "generate -m '%s' -p cat --steps -3", m);
    expect_error(args, "--steps");
    snprintf(args, sizeof args, "generate -m '%s' -p cat --sampler heun2", m);
    expect_error(args, "unknown sampler 'heun2'");
    snprintf(args, sizeof args, "generate -m '%s' -p cat --scheduler karras --sampler ddim", m);
    expect_error(args, "Karras");
    snprintf(args, sizeof args, "generate -m '%s' -p cat -s banana", m);
    expect_error(args, "'banana' is not an integer");
    snprintf(args, sizeof args, "generate -m '%s' -p cat --rng mt", m);
    expect_error(args, "--rng");
    expect_error("generate --frobnicate", "unknown option '--frobnicate'");
    expect_error("generate -m", "-m needs a value");
}

/* Request bounds are the model's, checked in one place (sdw_request_resolve): the CLI refuses
 * only what cannot be a value of the option (0 steps would mean "the model's default"). */
static void test_bounds_are_the_models(void) {
    char args[2048];
    const char *m = sdw_test_path("models/tiny-sd15");
    snprintf(args, sizeof args, "generate -m '%s' -p cat -W 64 -H 64 --steps 5000", m);
    expect_error(args, "steps 5000 is out of range [1, 1000]");
    snprintf(args, sizeof args, "generate -m '%s' -p cat -W 64 -H 64 --cfg-scale 150", m);
    expect_error(args, "guidance scale 150 is out of range [0, 100]");
    snprintf(args, sizeof args, "generate -m '%s' -p cat -W 64 -H 64 --cfg-scale -2", m);
    expect_error(args, "--cfg-scale: -2 must not be negative");
    snprintf(args, sizeof args, "generate -m '%s' -p cat -W 0 -H 64", m);
    expect_error(args, "-W: 0 must be at least 1");
    snprintf(args, sizeof args, "generate -m '%s' -p cat -W 64 -H 99999999999", m);
    expect_error(args, "-H: 99999999999 is too large");
}

/* getopt_long's forms: a value after '=' (or glued to a short option) is the same as the next
 * argument; each command has its own --help; bad forms name the option. */
static void test_option_forms_and_help(void) {
    char out[8192], a[1024], b[1024];
    const char *m = sdw_test_path("models/tiny-sd15");
    snprintf(a, sizeof a, "%s/spaced.png", sdw_test_tmpdir());
    snprintf(b, sizeof b, "%s/equals.png", sdw_test_tmpdir());
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' -p cat -W 64 -H 64 --steps 1 -s 3 --sampler euler "
                              "-o '%s'", m, a);
    ASSERT_EQ_INT(rc, 0);
    rc = sdw_test_run_sdw(out, sizeof out,
                          "generate --model='%s' --prompt=cat -W64 --height=64 --steps=1 --seed=3 "
                          "--sampler=euler --output='%s'", m, b);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_EQ_INT(sdw_test_png_max_diff(a, b), 0);

    static const struct {
        const char *args, *needle;
    } help[] = {
        {"generate --help", "usage: sdw generate -p TEXT"},
        {"generate -h", "generate options:"},
        {"info --help", "usage: sdw info"},
        {"tokenize --help", "usage: sdw tokenize -p TEXT"},
        {"help tokenize", "usage: sdw tokenize -p TEXT"},
        {"serve --help", "usage: sdw serve"},
        {"help serve", "server options:"},
        {"--help", "sdw <command> --help"},
    };
    for (size_t i = 0; i < sizeof help / sizeof help[0]; i++) {
        rc = sdw_test_run_sdw(out, sizeof out, "%s", help[i].args);
        ASSERT_EQ_INT(rc, 0);
        ASSERT_STR_CONTAINS(out, help[i].needle);
    }
    rc = sdw_test_run_sdw(out, sizeof out, "info --help");
    ASSERT_TRUE(strstr(out, "--cfg-scale") == NULL); /* only the command's own options */

    expect_error("generate --profile=yes", "--profile takes no value");
    expect_error("generate --pro x", "--pro is ambiguous: --prompt, --profile");
    expect_error("generate --steps=0", "--steps: 0 must be at least 1");
    expect_error("generate -p cat extra", "unknown option 'extra'");
    expect_error("generate --profile -vx", "generate: unknown option '-x'");
    expect_error("info -p cat", "info: unknown option '-p' (see sdw info --help)");
    expect_error("serve --frobnicate", "serve: unknown option '--frobnicate'");
    expect_error("generate --model", "--model needs a value");
}

int main(void) {
    RUN(test_generate_folder_every_sampler);
    RUN(test_generate_single_file_every_sampler);
    RUN(test_png_carries_a1111_parameters);
    RUN(test_random_seed_is_reported);
    RUN(test_demo_model_needs_no_files);
    RUN(test_info_and_tokenize);
    RUN(test_bad_model_files);
    RUN(test_bad_values);
    RUN(test_bounds_are_the_models);
    RUN(test_option_forms_and_help);
    return sdw_test_finish();
}
