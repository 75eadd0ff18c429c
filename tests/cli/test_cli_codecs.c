/* `sdw generate --taesd/--vae-decoder/--vae-tiling/--hires*` end to end: the reference's
 * TAESD-decoded image (golden txt2img-euler-taesd, from the diffusers AutoencoderTiny folder and
 * from the original taesd_decoder file) and its tiled VAE decode (golden
 * txt2img-euler-vae-tiling, 128x96) reproduced through the CLI; the PNG's parameters and --json say what decoded the
 * image; the hires fix's options; bad combinations give a one-line error naming the problem. */
#include "sdw_test.h"

#include "io/png.h"

#include <stdarg.h>
#include <stdlib.h>

static int n_lines(const char *s) {
    int n = 0;
    for (const char *c = s; *c; c++)
        if (*c == '\n' && c[1]) n++;
    return *s ? n + 1 : 0;
}

static const char *tmp(const char *name) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", sdw_test_tmpdir(), name);
    return buf[k];
}

/* The golden cases' settings (manifest: seed 42, 4 steps, guidance 7.5, euler). */
#define CASE_ARGS "-p 'a photo of a cat' --steps 4 --cfg-scale 7.5 -s 42 --sampler euler"

/* Runs `sdw generate` with the case's settings plus extra, compares the PNG with the golden
 * case's image and returns the PNG's parameters text (static), NULL on failure. */
static const char *run_case(const char *golden_case, const char *extra, const char *png) {
    static char params[4096];
    char out[8192];
    int rc = sdw_test_run_sdw(out, sizeof out, "generate -m '%s' " CASE_ARGS " %s -o '%s'",
                              sdw_test_path("models/tiny-sd15"), extra, png);
    if (rc != 0) {
        fprintf(stderr, "%s\n", out);
        return NULL;
    }
    int d = sdw_test_png_max_diff(png, sdw_test_path("golden/%s/image.png", golden_case));
    fprintf(stderr, "  %s (%s): max diff %d levels\n", golden_case, extra, d);
    if (d > 2) return NULL;
    sdw_png p = {0};
    sdw_error err = {0};
    if (sdw_png_read(png, &p, &err)) return NULL;
    snprintf(params, sizeof params, "%s", sdw_png_text(&p, "parameters"));
    sdw_png_deinit(&p);
    return params;
}

static void test_taesd_decode(void) {
    char extra[2048];
    snprintf(extra, sizeof extra, "-W 64 -H 64 --taesd '%s' --vae-decoder taesd",
             sdw_test_path("models/tiny-taesd"));
    const char *params = run_case("tiny-sd15/txt2img-euler-taesd", extra, tmp("taesd.png"));
    ASSERT_TRUE(params != NULL);
    ASSERT_STR_CONTAINS(params, "VAE Decoder: TAESD");
    /* the original release's file (its encoder sibling beside it) decodes the same */
    snprintf(extra, sizeof extra, "-W 64 -H 64 --taesd=%s --vae-decoder=taesd",
             sdw_test_path("models/tiny-taesd/taesd_decoder.safetensors"));
    ASSERT_TRUE(run_case("tiny-sd15/txt2img-euler-taesd", extra, tmp("taesd_file.png")) != NULL);
    /* a TAESD loaded but not asked for: previews only, the image is the VAE's */
    snprintf(extra, sizeof extra, "-W 64 -H 64 --taesd '%s'", sdw_test_path("models/tiny-taesd"));
    params = run_case("tiny-sd15/txt2img-euler", extra, tmp("vae.png"));
    ASSERT_TRUE(params != NULL);
    ASSERT_TRUE(strstr(params, "VAE Decoder") == NULL);
}

static void test_vae_tiling(void) {
    const char *params =
        run_case("tiny-sd15/txt2img-euler-vae-tiling", "-W 128 -H 96 --vae-tiling", tmp("t.png"));
    ASSERT_TRUE(params != NULL);
    ASSERT_STR_CONTAINS(params, "VAE tiling: on");
    ASSERT_STR_CONTAINS(params, "Size: 128x96");
    /* untiled (asked, and AUTO for so small an image) the seams are gone: the image differs */
    char out[8192];
    for (int i = 0; i < 2; i++) {
        const char *png = tmp(i ? "auto.png" : "untiled.png");
        int rc = sdw_test_run_sdw(out, sizeof out, "generate -m '%s' " CASE_ARGS
                                  " -W 128 -H 96 %s -o '%s' --json",
                                  sdw_test_path("models/tiny-sd15"), i ? "" : "--no-vae-tiling",
                                  png);
        if (rc) fprintf(stderr, "%s\n", out);
        ASSERT_EQ_INT(rc, 0);
        ASSERT_STR_CONTAINS(out, "\"vae_tiled\": false");
        int d = sdw_test_png_max_diff(
            png, sdw_test_path("golden/tiny-sd15/txt2img-euler-vae-tiling/image.png"));
        fprintf(stderr, "  untiled (%s) vs the tiled reference: max diff %d levels\n",
                i ? "auto" : "--no-vae-tiling", d);
        ASSERT_TRUE(d > 2 && d < 256);
    }
}

static void expect_error(int want_rc, const char *needle, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void expect_error(int want_rc, const char *needle, const char *fmt, ...) {
    char args[4096], out[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    int rc = sdw_test_run_sdw(out, sizeof out, "%s", args);
    fprintf(stderr, "  %s -> (%d) %s", args, rc, out);
    ASSERT_EQ_INT(rc, want_rc);
    ASSERT_EQ_INT(n_lines(out), 1);
    ASSERT_STR_CONTAINS(out, needle);
}

static void test_refusals(void) {
    const char *sd15 = sdw_test_path("models/tiny-sd15");
    char taesd[1024];
    snprintf(taesd, sizeof taesd, "%s", sdw_test_path("models/tiny-taesd"));
    expect_error(2, "--vae-decoder taesd needs a tiny autoencoder: --taesd PATH",
                 "generate -m '%s' -p cat --vae-decoder taesd", sd15);
    if (sdw_test_failures_in_current) return;
    expect_error(2, "--vae-decoder: decoder 'tiny' must be vae or taesd",
                 "generate -m '%s' -p cat --vae-decoder tiny", sd15);
    if (sdw_test_failures_in_current) return;
    expect_error(2, "--vae-tiling takes no value", "generate -m '%s' -p cat --vae-tiling=1", sd15);
    if (sdw_test_failures_in_current) return;
    /* SD3's latents have 16 channels: the 4-channel TAESD is refused when loading */
    expect_error(4, "is for another latent space: 4 channels",
                 "generate -m '%s' -p cat --taesd '%s'", sdw_test_path("models/tiny-sd3"), taesd);
    if (sdw_test_failures_in_current) return;
    expect_error(4, "--taesd /nonexistent/taesd does not exist",
                 "generate -m '%s' -p cat --taesd /nonexistent/taesd", sd15);
    if (sdw_test_failures_in_current) return;
    /* a folder holding neither layout */
    expect_error(4, "holds neither a diffusers AutoencoderTiny",
                 "generate -m '%s' -p cat --taesd '%s'", sd15, sdw_test_tmpdir());
    if (sdw_test_failures_in_current) return;
    /* every command takes it: info loads the model with it, serve lists it in its help */
    char out[8192];
    int rc = sdw_test_run_sdw(out, sizeof out, "info -m '%s' --taesd '%s'", sd15, taesd);
    ASSERT_EQ_INT(rc, 0);
    rc = sdw_test_run_sdw(out, sizeof out, "serve --help");
    ASSERT_EQ_INT(rc, 0);
    ASSERT_STR_CONTAINS(out, "--taesd PATH");
}

/* The hires fix through the CLI: the second size, the --json report, the PNG's parameters (its
 * semantics are tests/models/test_hires.c's); bad values fail before the model loads. */
static void test_hires(void) {
    char out[8192];
    const char *png = tmp("hires.png");
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' " CASE_ARGS " -W 64 -H 64 --hires-scale 1.5 "
                              "--hires-upscaler Lanczos --hires-steps 2 --hires-strength 0.5 "
                              "--json -o '%s'",
                              sdw_test_path("models/tiny-sd15"), png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_STR_CONTAINS(out, "\"width\": 96");
    ASSERT_STR_CONTAINS(out, "\"upscaler\": \"Lanczos\"");
    sdw_png p = {0};
    sdw_error err = {0};
    ASSERT_OK(sdw_png_read(png, &p, &err), &err);
    const bool sized = p.w == 96 && p.h == 96;
    char params[2048];
    snprintf(params, sizeof params, "%s", sdw_png_text(&p, "parameters"));
    sdw_png_deinit(&p);
    ASSERT_TRUE(sized);
    ASSERT_STR_CONTAINS(params, "Steps: 4, Sampler: Euler, CFG scale: 7.5, Seed: 42, Size: 64x64");
    ASSERT_STR_CONTAINS(params, "Denoising strength: 0.5");
    ASSERT_STR_CONTAINS(params, "Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Lanczos");
    /* --hires alone: A1111's defaults (x2, Latent, 0.75, the steps) */
    rc = sdw_test_run_sdw(out, sizeof out, "generate -m '%s' " CASE_ARGS " -W 64 -H 64 --hires "
                                           "-o '%s'", sdw_test_path("models/tiny-sd15"), png);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_OK(sdw_png_read(png, &p, &err), &err);
    snprintf(params, sizeof params, "%s", sdw_png_text(&p, "parameters"));
    const bool doubled = p.w == 128 && p.h == 128;
    sdw_png_deinit(&p);
    ASSERT_TRUE(doubled);
    ASSERT_STR_CONTAINS(params, "Denoising strength: 0.75, RNG: CPU, Hires upscale: 2, Hires "
                                "upscaler: Latent");
    const char *sd15 = sdw_test_path("models/tiny-sd15");
    expect_error(2, "--hires-strength: 0 is out of range (0, 1]",
                 "generate -m '%s' -p cat --hires-strength 0", sd15);
    if (sdw_test_failures_in_current) return;
    expect_error(2, "neural upscalers such as ESRGAN are not installed",
                 "generate -m '%s' -p cat --hires-upscaler 'R-ESRGAN 4x+'", sd15);
    if (sdw_test_failures_in_current) return;
    expect_error(3, "the hires fix is text-to-image only",
                 "generate -m '%s' -p cat --hires --init-image '%s'", sd15,
                 sdw_test_path("golden/tiny-sd15/img2img-ddim/init_image.png"));
    if (sdw_test_failures_in_current) return;
    expect_error(3, "hires scale 100 is out of range",
                 "generate -m '%s' -p cat --hires-scale 100", sd15);
}

int main(void) {
    RUN(test_refusals);
    RUN(test_hires);
    RUN(test_taesd_decode);
    RUN(test_vae_tiling);
    return sdw_test_finish();
}
