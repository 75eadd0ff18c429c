/* `sdw generate --init-image/--strength/--mask` end to end: the reference's img2img and inpaint
 * PNGs reproduced from the fixture images (PNG, and the same pixels as lossless WebP), and bad
 * images or settings giving a one-line error that names the problem with a non-zero exit. */
#include "sdw_test.h"

#include "io/image.h"
#include "io/png.h"

#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <webp/encode.h>

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

/* Runs one golden case through the CLI; extra = size options or "" (size from the image). */
static void golden_case(const char *model, const char *c, const char *sampler, const char *init,
                        bool mask, const char *strength, const char *extra) {
    char out[8192];
    const char *png = tmp("out.png");
    char mask_arg[1200] = "";
    if (mask)
        snprintf(mask_arg, sizeof mask_arg, "--mask '%s'",
                 sdw_test_path("golden/%s/mask_image.png", c));
    int rc = sdw_test_run_sdw(out, sizeof out,
                     "generate -m '%s' -p 'a photo of a cat' %s --steps 4 --cfg-scale 7.5 -s 42 "
                     "--sampler %s --init-image '%s' --strength %s %s -o '%s'",
                     sdw_test_path("models/%s", model), extra, sampler, init, strength, mask_arg,
                     png);
    if (rc != 0) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    int d = sdw_test_png_max_diff(png, sdw_test_path("golden/%s/image.png", c));
    fprintf(stderr, "  %s: max diff %d levels\n", c, d);
    ASSERT_TRUE(d <= 2);
}

static void test_reproduces_the_reference_images(void) {
    static const struct {
        const char *model, *c, *sampler, *strength;
        bool mask;
    } cases[] = {
        {"tiny-sd15", "tiny-sd15/img2img-ddim", "ddim", "0.75", false},
        {"tiny-sd15", "tiny-sd15/img2img-euler_a", "euler_a", "0.75", false},
        {"tiny-sd15", "tiny-sd15/inpaint-ddim", "ddim", "0.75", true},
        {"tiny-sd15-inpaint", "tiny-sd15-inpaint/inpaint-ddim", "ddim", "1.0", true},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(cases); i++) {
        golden_case(cases[i].model, cases[i].c, cases[i].sampler,
                    sdw_test_path("golden/%s/init_image.png", cases[i].c), cases[i].mask,
                    cases[i].strength, "-W 64 -H 64");
        if (sdw_test_failures_in_current) return;
    }
    /* the single-file checkpoint (LDM names, VAE encoder included) gives the same image */
    char extra[2048];
    snprintf(extra, sizeof extra, "-W 64 -H 64 --tokenizer '%s'", sdw_test_path("clip-tokenizer"));
    golden_case("tiny-sd15.safetensors", "tiny-sd15/img2img-euler_a", "euler_a",
                sdw_test_path("golden/tiny-sd15/img2img-euler_a/init_image.png"), false, "0.75",
                extra);
}

/* No size given: the init image's own (64x64); the same pixels as lossless WebP give the same
 * image; the default strength is 0.75. */
static void test_size_from_image_and_webp_input(void) {
    sdw_image img;
    sdw_error err = {0};
    ASSERT_OK(sdw_image_load(sdw_test_path("golden/tiny-sd15/img2img-ddim/init_image.png"), &img,
                             &err),
              &err);
    uint8_t *webp = NULL;
    size_t n = WebPEncodeLosslessRGB(img.data, img.width, img.height, img.width * 3, &webp);
    sdw_image_free(&img);
    ASSERT_TRUE(n > 0);
    FILE *f = fopen(tmp("init.webp"), "wb");
    ASSERT_TRUE(f && fwrite(webp, 1, n, f) == n);
    fclose(f);
    WebPFree(webp);
    char out[8192];
    const char *png = tmp("webp.png");
    int rc =
        sdw_test_run_sdw(out, sizeof out,
                         "generate -m '%s' -p 'a photo of a cat' --steps 4 --cfg-scale 7.5 -s 42 "
                         "--sampler ddim --init-image '%s' -o '%s'",
                         sdw_test_path("models/tiny-sd15"), tmp("init.webp"), png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_TRUE(
        sdw_test_png_max_diff(png, sdw_test_path("golden/tiny-sd15/img2img-ddim/image.png")) <= 2);
    sdw_png p = {0};
    ASSERT_OK(sdw_png_read(png, &p, &err), &err);
    ASSERT_STR_CONTAINS(sdw_png_text(&p, "parameters"), "Denoising strength: 0.75");
    sdw_png_deinit(&p);
}

/* ---- bad input ---- */

static void expect_error(const char *args, const char *needle) {
    char out[8192];
    int rc = sdw_test_run_sdw(out, sizeof out, "%s", args);
    fprintf(stderr, "  %s -> %s", args, out);
    ASSERT_TRUE(rc != 0);
    ASSERT_EQ_INT(n_lines(out), 1);
    ASSERT_STR_CONTAINS(out, needle);
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

/* PNG chunk CRC (ISO 3309), bitwise: only used to forge IHDR sizes. */
static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

/* Writes png (len bytes) to path with IHDR width/height replaced and its CRC fixed. */
static void write_forged_png(const char *path, char *png, size_t len, uint32_t w, uint32_t h) {
    uint8_t *ihdr = (uint8_t *)png + 12; /* "IHDR" + 13 data bytes + CRC */
    for (int i = 0; i < 4; i++) {
        ihdr[4 + i] = (uint8_t)(w >> (24 - 8 * i));
        ihdr[8 + i] = (uint8_t)(h >> (24 - 8 * i));
    }
    uint32_t crc = crc32_png(ihdr, 4 + 13);
    for (int i = 0; i < 4; i++) ihdr[17 + i] = (uint8_t)(crc >> (24 - 8 * i));
    write_file(path, png, len);
}

static void test_bad_images_and_settings(void) {
    char args[4096];
    const char *model = sdw_test_path("models/tiny-sd15");
    const char *init = sdw_test_path("golden/tiny-sd15/inpaint-ddim/init_image.png");
#define BAD(needle, ...)                                                                           \
    do {                                                                                           \
        snprintf(args, sizeof args, __VA_ARGS__);                                                  \
        expect_error(args, needle);                                                                \
        if (sdw_test_failures_in_current) return;                                                  \
    } while (0)
    BAD("--init-image: cannot open /nonexistent/cat.png", "generate -m '%s' -p cat --init-image "
        "/nonexistent/cat.png", model);
    write_file(tmp("garbage.png"), "this is not an image at all", 27);
    BAD("not a PNG, JPEG or WebP image", "generate -m '%s' -p cat --init-image '%s'", model,
        tmp("garbage.png"));
    /* a truncated PNG */
    char *buf = NULL;
    size_t len = 0;
    sdw_error err = {0};
    ASSERT_OK(sdw_read_file(init, &buf, &len, &err), &err);
    write_file(tmp("half.png"), buf, len / 2);
    BAD("half.png", "generate -m '%s' -p cat --init-image '%s'", model, tmp("half.png"));
    /* zero-sized and enormous images (valid headers, forged sizes) */
    write_forged_png(tmp("zero.png"), buf, len, 0, 64);
    BAD("zero.png: PNG image has no pixels (0x64)",
        "generate -m '%s' -p cat --init-image '%s'", model, tmp("zero.png"));
    write_forged_png(tmp("huge.png"), buf, len, 20000, 20000);
    BAD("huge.png: PNG image 20000x20000 is too large", "generate -m '%s' -p cat --init-image '%s'",
        model, tmp("huge.png"));
    free(buf);
    /* an empty file */
    write_file(tmp("empty.jpg"), "", 0);
    BAD("empty.jpg: empty image data", "generate -m '%s' -p cat --init-image '%s'", model,
        tmp("empty.jpg"));
    /* mask of another size */
    uint8_t px[48 * 48 * 3] = {0}; /* big enough for both images below */
    sdw_png_write(tmp("small_mask.png"), px, 32, 48, 3, NULL, &err);
    BAD("mask size 32x48 does not match the init image size 64x64",
        "generate -m '%s' -p cat --init-image '%s' --mask '%s'", model, init,
        tmp("small_mask.png"));
    BAD("--strength: 1.5 is out of range (0, 1]",
        "generate -m '%s' -p cat --init-image '%s' --strength 1.5", model, init);
    BAD("--strength: 0 is out of range (0, 1]",
        "generate -m '%s' -p cat --init-image '%s' --strength 0", model, init);
    BAD("--strength: -0.5 is out of range (0, 1]",
        "generate -m '%s' -p cat --init-image '%s' --strength -0.5", model, init);
    BAD("--strength: 'lots' is not a number",
        "generate -m '%s' -p cat --init-image '%s' --strength lots", model, init);
    BAD("strength 0.1 with 4 steps runs no denoising step",
        "generate -m '%s' -p cat --init-image '%s' --strength 0.1 --steps 4", model, init);
    BAD("a mask needs an init image", "generate -m '%s' -p cat --mask '%s'", model, init);
    BAD("strength 0.5 needs an init image", "generate -m '%s' -p cat --strength 0.5", model);
    sdw_png_write(tmp("tiny.png"), px, 40, 40, 3, NULL, &err);
    BAD("init image 40x40 is smaller than the model's minimum 64x64",
        "generate -m '%s' -p cat --init-image '%s'", model, tmp("tiny.png"));
    BAD("this is an inpainting model: it needs an init image and a mask",
        "generate -m '%s' -p cat -W 64 -H 64", sdw_test_path("models/tiny-sd15-inpaint"));
#undef BAD
}

int main(void) {
    RUN(test_bad_images_and_settings);
    RUN(test_reproduces_the_reference_images);
    RUN(test_size_from_image_and_webp_input);
    return sdw_test_finish();
}
