/* PNG: encode/decode round trips with text chunks, the reference pipeline's images, other
 * colour types produced directly with libpng, and malformed input. */
#define _GNU_SOURCE
#include "io/png.h"
#include "sdw_test.h"

#include <png.h>
#include <stdlib.h>

static const char *tmp_file(const char *name) {
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/%s", sdw_test_tmpdir(), name);
    return buf;
}

static uint8_t *gradient(int w, int h, int ch) {
    uint8_t *p = malloc((size_t)w * h * ch);
    for (int i = 0; i < w * h * ch; i++) p[i] = (uint8_t)(i * 7 + i / 13);
    return p;
}

/* PNG chunk CRC (ISO 3309 / zlib crc32), bitwise: only used to forge one header */
static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

static bool contains(const uint8_t *buf, size_t n, const char *s) {
    return memmem(buf, n, s, strlen(s)) != NULL;
}

static void test_roundtrip_rgb_with_text(void) {
    uint8_t *px = gradient(37, 11, 3);
    const char *params = "a photo of a cat\nSteps: 4, Sampler: Euler, Seed: 42";
    const char *utf8 = "ein Café, 猫の写真 🐱";
    const char *kv[] = {"parameters", params, "prompt", utf8, NULL};
    sdw_error err = {0};
    const char *path = tmp_file("rgb.png");
    ASSERT_OK(sdw_png_write(path, px, 37, 11, 3, kv, &err), &err);

    sdw_png img;
    ASSERT_OK(sdw_png_read(path, &img, &err), &err);
    ASSERT_EQ_INT(img.w, 37);
    ASSERT_EQ_INT(img.h, 11);
    ASSERT_EQ_INT(img.channels, 3);
    ASSERT_TRUE(memcmp(img.pixels, px, 37 * 11 * 3) == 0);
    ASSERT_EQ_INT(img.n_text, 2);
    ASSERT_TRUE(sdw_png_text(&img, "parameters") && !strcmp(sdw_png_text(&img, "parameters"), params));
    ASSERT_TRUE(sdw_png_text(&img, "prompt") && !strcmp(sdw_png_text(&img, "prompt"), utf8));
    ASSERT_TRUE(sdw_png_text(&img, "missing") == NULL);
    sdw_png_deinit(&img);
    ASSERT_TRUE(img.pixels == NULL && img.n_text == 0);

    /* chunk types: ASCII in tEXt (what A1111 readers look for), UTF-8 in iTXt */
    uint8_t *buf;
    size_t len;
    ASSERT_OK(sdw_png_write_mem(px, 37, 11, 3, kv, &buf, &len, &err), &err);
    ASSERT_TRUE(contains(buf, len, "tEXtparameters"));
    ASSERT_TRUE(contains(buf, len, "iTXtprompt"));
    ASSERT_TRUE(!contains(buf, len, "tEXtprompt"));
    free(buf);
    free(px);
}

static void test_roundtrip_rgba_mem(void) {
    uint8_t *px = gradient(16, 9, 4);
    sdw_error err = {0};
    uint8_t *buf;
    size_t len;
    ASSERT_OK(sdw_png_write_mem(px, 16, 9, 4, NULL, &buf, &len, &err), &err);
    sdw_png img;
    ASSERT_OK(sdw_png_read_mem(buf, len, "upload", &img, &err), &err);
    ASSERT_EQ_INT(img.channels, 4);
    ASSERT_EQ_INT(img.n_text, 0);
    ASSERT_TRUE(memcmp(img.pixels, px, 16 * 9 * 4) == 0);
    sdw_png_deinit(&img);

    /* truncated: the label names the buffer; out stays zeroed */
    ASSERT_STATUS(sdw_png_read_mem(buf, len / 2, "upload", &img, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "upload: cannot decode PNG");
    ASSERT_TRUE(img.pixels == NULL);
    free(buf);
    free(px);
}

/* Our decoder against the reference pipeline's own PNG and its float image (round(255·x)). */
static void test_reads_reference_image(void) {
    sdw_golden *g = sdw_golden_open("tiny-sd15/txt2img-ddim");
    ASSERT_TRUE(g != NULL);
    const sdw_golden_tensor *t = sdw_golden_get(g, "image");
    ASSERT_TRUE(t && t->n == 64 * 64 * 3);
    sdw_png img;
    sdw_error err = {0};
    ASSERT_OK(sdw_png_read(sdw_test_path("golden/tiny-sd15/txt2img-ddim/image.png"), &img, &err), &err);
    ASSERT_TRUE(img.w == 64 && img.h == 64 && img.channels == 3);
    const float *f = t->data;
    int bad = 0;
    for (size_t i = 0; i < t->n; i++) bad += img.pixels[i] != (uint8_t)lrintf(f[i] * 255.0f);
    ASSERT_EQ_INT(bad, 0);
    sdw_png_deinit(&img);
    sdw_golden_close(g);
}

static void test_grey_becomes_rgb(void) {
    sdw_png img;
    sdw_error err = {0};
    ASSERT_OK(sdw_png_read(sdw_test_path("golden/tiny-sd15/inpaint-ddim/mask_image.png"), &img, &err),
              &err);
    ASSERT_EQ_INT(img.channels, 3);
    int lo = 0, hi = 0;
    for (int i = 0; i < img.w * img.h; i++) {
        const uint8_t *p = img.pixels + 3 * i;
        ASSERT_TRUE(p[0] == p[1] && p[1] == p[2]);
        lo += p[0] == 0;
        hi += p[0] == 255;
    }
    ASSERT_TRUE(lo > 0 && hi > 0); /* a real mask: black keep, white repaint */
    sdw_png_deinit(&img);
}

/* ---- other colour types, written with libpng directly ---- */

static bool write_raw_png(const char *path, int w, int h, int depth, int ctype, png_bytep *rows,
                          png_colorp pal, int n_pal, png_bytep trns, int n_trns) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        return false;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype, PNG_INTERLACE_ADAM7,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, n_pal);
    if (trns) png_set_tRNS(png, info, trns, n_trns, NULL);
    png_text t = {.compression = PNG_TEXT_COMPRESSION_zTXt, .key = "Comment", .text = "caf\xe9"};
    png_write_info(png, info);
    png_write_image(png, rows);
    png_set_text(png, info, &t, 1); /* after the image data, Latin-1 */
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return fclose(f) == 0;
}

static void test_palette_trns_and_16bit_grey(void) {
    png_color pal[3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    png_byte trns[3] = {255, 128, 0};
    png_byte prow[2][3] = {{0, 1, 2}, {2, 1, 0}};
    png_bytep rows[2] = {prow[0], prow[1]};
    sdw_error err = {0};
    sdw_png img;
    ASSERT_TRUE(write_raw_png(tmp_file("pal.png"), 3, 2, 8, PNG_COLOR_TYPE_PALETTE, rows, pal, 3,
                              trns, 3));
    ASSERT_OK(sdw_png_read(tmp_file("pal.png"), &img, &err), &err);
    ASSERT_EQ_INT(img.channels, 4);
    static const uint8_t want[] = {255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 0,
                                   0, 0, 255, 0, 0, 255, 0, 128, 255, 0, 0, 255};
    ASSERT_TRUE(memcmp(img.pixels, want, sizeof want) == 0);
    ASSERT_TRUE(sdw_png_text(&img, "Comment") && !strcmp(sdw_png_text(&img, "Comment"), "café"));
    sdw_png_deinit(&img);

    /* 16-bit grey, big-endian samples: 0x0000, 0xffff, 0x8080 (-> 128) */
    png_byte grow[1][6] = {{0x00, 0x00, 0xff, 0xff, 0x80, 0x80}};
    png_bytep grows[1] = {grow[0]};
    ASSERT_TRUE(write_raw_png(tmp_file("g16.png"), 3, 1, 16, PNG_COLOR_TYPE_GRAY, grows, NULL, 0,
                              NULL, 0));
    ASSERT_OK(sdw_png_read(tmp_file("g16.png"), &img, &err), &err);
    ASSERT_EQ_INT(img.channels, 3);
    static const uint8_t wantg[] = {0, 0, 0, 255, 255, 255, 128, 128, 128};
    ASSERT_TRUE(memcmp(img.pixels, wantg, sizeof wantg) == 0);
    sdw_png_deinit(&img);
}

static void test_bad_input(void) {
    sdw_error err = {0};
    sdw_png img;
    ASSERT_STATUS(sdw_png_read(sdw_test_path("models/tiny-sd15.safetensors"), &img, &err),
                  SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "tiny-sd15.safetensors: not a PNG file");
    ASSERT_STATUS(sdw_png_read(tmp_file("nope.png"), &img, &err), SDW_E_IO);
    ASSERT_STR_CONTAINS(err.msg, "nope.png");

    /* a header claiming 20000 x 20000: refused before allocating */
    uint8_t *buf;
    size_t len;
    uint8_t px[3] = {1, 2, 3};
    ASSERT_OK(sdw_png_write_mem(px, 1, 1, 3, NULL, &buf, &len, &err), &err);
    /* IHDR data starts at byte 16; patch width/height and fix the CRC */
    uint8_t dim[4] = {0, 0, 0x4e, 0x20};
    memcpy(buf + 16, dim, 4);
    memcpy(buf + 20, dim, 4);
    uint32_t crc = crc32_png(buf + 12, 17);
    uint8_t be[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc};
    memcpy(buf + 29, be, 4);
    ASSERT_STATUS(sdw_png_read_mem(buf, len, "huge", &img, &err), SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(err.msg, "20000x20000");
    free(buf);

    const char *badkey[] = {"", "x", NULL};
    ASSERT_STATUS(sdw_png_write_mem(px, 1, 1, 3, badkey, &buf, &len, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "invalid text key");
    ASSERT_STATUS(sdw_png_write(tmp_file("x.png"), px, 1, 1, 2, NULL, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "x.png");
    sdw_png_deinit(NULL);
}

int main(void) {
    RUN(test_roundtrip_rgb_with_text);
    RUN(test_roundtrip_rgba_mem);
    RUN(test_reads_reference_image);
    RUN(test_grey_becomes_rgb);
    RUN(test_palette_trns_and_16bit_grey);
    RUN(test_bad_input);
    return sdw_test_finish();
}
