/* `sdw generate --taesd/--vae-decoder/--vae-tiling` end to end: the reference's TAESD-decoded
 * image (golden txt2img-euler-taesd, from the diffusers AutoencoderTiny folder and from the
 * original taesd_decoder file) and its tiled VAE decode (golden txt2img-euler-vae-tiling,
 * 128x96) reproduced through the CLI; the PNG's parameters and --json say what decoded the
 * image; bad combinations give a one-line error naming the problem. */
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

int main(void) {
    RUN(test_refusals);
    RUN(test_taesd_decode);
    RUN(test_vae_tiling);
    return sdw_test_finish();
}
