/* io/image: PNG/JPEG/WebP decoding (files written here with the codecs' own encoders), EXIF
 * orientation, malformed input, and Pillow's Lanczos resize against Pillow's own accuracy
 * cases (Tests/test_image_resample.py: expected pixels published with Pillow; the values of the
 * releases whose Resample.c runs the horizontal pass first, as Debian 12's Pillow 9.4 does —
 * recent Pillow test files list two pixels of each case transposed). */
#include "io/image.h"
#include "io/png.h"
#include "sdw_test.h"

#include <jpeglib.h>
#include <webp/encode.h>
#include <webp/mux.h>

/* ---- encoders for test inputs ---- */

typedef struct jpeg_opts {
    int channels; /* 1 grey, 3 RGB, 4 CMYK */
    const uint8_t *exif;
    size_t exif_len;
} jpeg_opts;

static uint8_t *jpeg_encode(const uint8_t *px, int w, int h, jpeg_opts o, size_t *len) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &buf, &n);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = o.channels;
    c.in_color_space = o.channels == 1 ? JCS_GRAYSCALE : o.channels == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 100, TRUE);
    jpeg_start_compress(&c, TRUE);
    if (o.exif) jpeg_write_marker(&c, JPEG_APP0 + 1, o.exif, (unsigned)o.exif_len);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)px + (size_t)c.next_scanline * w * o.channels;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *len = n;
    return buf;
}

/* "Exif\0\0" + little-endian TIFF with one IFD0 entry: Orientation (0x0112, SHORT) = o. */
static size_t exif_blob(uint8_t *b, int o, bool big_endian) {
    static const uint8_t le[] = {'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0,
                                 0x12, 0x01, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t be[] = {'E', 'x', 'i', 'f', 0, 0, 'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1,
                                 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(b, big_endian ? be : le, sizeof le);
    b[big_endian ? 25 : 24] = (uint8_t)o; /* the SHORT value, first in the entry's value field */
    return sizeof le;
}

/* A 16x16 image of four flat 8x8 quadrants, recognisable after any rotation or flip even
 * through JPEG: top-left red, top-right blue, bottom-left green, bottom-right black. */
static uint8_t *quadrants(void) {
    static const uint8_t col[4][3] = {{250, 20, 20}, {20, 20, 250}, {20, 250, 20}, {20, 20, 20}};
    uint8_t *p = malloc(16 * 16 * 3);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) memcpy(p + (y * 16 + x) * 3, col[(y >= 8) * 2 + (x >= 8)], 3);
    return p;
}

static uint8_t *gradient(int w, int h, int ch) {
    uint8_t *p = malloc((size_t)w * h * ch);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) /* smooth, no wrap; alpha (c = 3) never 0 */
                p[((size_t)y * w + x) * ch + c] = (uint8_t)(c == 3 ? 255 - x - y : x * 3 + y * 2 + c * 30);
    return p;
}

static int max_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    int m = 0;
    for (size_t i = 0; i < n; i++) m = SDW_MAX(m, abs((int)a[i] - (int)b[i]));
    return m;
}

/* ---- decoding ---- */

static void test_png_matches_reference_pixels(void) {
    sdw_golden *g = sdw_golden_open("tiny-sd15/inpaint-ddim");
    if (!g) return sdw_test_skip("no golden tiny-sd15/inpaint-ddim");
    const sdw_golden_tensor *ref = sdw_golden_get(g, "init_image_u8");
    const sdw_golden_tensor *mref = sdw_golden_get(g, "mask_image_u8");
    sdw_image img, mask;
    sdw_error err = {0};
    ASSERT_OK(sdw_image_load(sdw_test_path("golden/tiny-sd15/inpaint-ddim/init_image.png"), &img,
                             &err),
              &err);
    ASSERT_EQ_INT(img.width, 64);
    ASSERT_EQ_INT(img.height, 64);
    ASSERT_EQ_INT(img.channels, 3);
    ASSERT_EQ_INT(max_diff(img.data, ref->data, ref->n), 0);
    ASSERT_OK(sdw_image_load(sdw_test_path("golden/tiny-sd15/inpaint-ddim/mask_image.png"), &mask,
                             &err),
              &err);
    sdw_image luma;
    sdw_image_to_luma(&mask, &luma);
    ASSERT_EQ_INT(luma.channels, 1);
    ASSERT_EQ_INT(max_diff(luma.data, mref->data, mref->n), 0);
    sdw_image_free(&luma);
    sdw_image_free(&mask);
    sdw_image_free(&img);
    sdw_golden_close(g);
}

static void test_jpeg_rgb_and_grey(void) {
    uint8_t *px = gradient(37, 21, 3);
    size_t n;
    uint8_t *jpg = jpeg_encode(px, 37, 21, (jpeg_opts){.channels = 3}, &n);
    sdw_image img;
    sdw_error err = {0};
    ASSERT_OK(sdw_image_decode(jpg, n, "t.jpg", &img, &err), &err);
    ASSERT_TRUE(img.width == 37 && img.height == 21 && img.channels == 3);
    ASSERT_TRUE(max_diff(img.data, px, 37 * 21 * 3) <= 8); /* quality 100 + chroma subsampling */
    sdw_image_free(&img);
    free(jpg);
    free(px);
    px = gradient(19, 9, 1);
    jpg = jpeg_encode(px, 19, 9, (jpeg_opts){.channels = 1}, &n);
    ASSERT_OK(sdw_image_decode(jpg, n, NULL, &img, &err), &err);
    ASSERT_TRUE(img.width == 19 && img.height == 9 && img.channels == 1);
    ASSERT_TRUE(max_diff(img.data, px, 19 * 9) <= 2);
    sdw_image_free(&img);
    free(jpg);
    free(px);
}

/* The colour of the 8x8 block whose top-left corner is (x, y): r, b, g or k. */
static char block_at(const sdw_image *img, int x, int y) {
    const uint8_t *p = img->data + ((size_t)(y + 3) * img->width + x + 3) * img->channels;
    return p[0] > 128 ? 'r' : p[1] > 128 ? 'g' : p[2] > 128 ? 'b' : 'k';
}

static void blocks(const sdw_image *img, char out[5]) {
    out[0] = block_at(img, 0, 0), out[1] = block_at(img, 8, 0);
    out[2] = block_at(img, 0, 8), out[3] = block_at(img, 8, 8), out[4] = 0;
}

static void test_jpeg_exif_orientation(void) {
    uint8_t *px = quadrants(); /* r b / g k */
    /* PIL.ImageOps.exif_transpose: the quadrants in reading order after each orientation */
    static const char *want[9] = {NULL,   "rbgk", "brkg", "kgbr", "gkrb",
                                  "rgbk", "grkb", "kbgr", "bkrg"};
    for (int o = 1; o <= 8; o++)
        for (int be = 0; be < 2; be++) {
            uint8_t exif[64];
            size_t en = exif_blob(exif, o, be);
            size_t n;
            uint8_t *jpg = jpeg_encode(px, 16, 16, (jpeg_opts){3, exif, en}, &n);
            sdw_image img;
            sdw_error err = {0};
            ASSERT_OK(sdw_image_decode(jpg, n, NULL, &img, &err), &err);
            free(jpg);
            char got[5];
            blocks(&img, got);
            if (strcmp(got, want[o]) != 0)
                sdw_test_fail(__FILE__, __LINE__, "orientation %d (%s): %s, want %s", o,
                              be ? "MM" : "II", got, want[o]);
            sdw_image_free(&img);
        }
    free(px);
    /* a non-square image swaps its sides for orientations 5-8 */
    uint8_t *g = gradient(24, 8, 3), exif[64];
    size_t n, en = exif_blob(exif, 6, false);
    uint8_t *jpg = jpeg_encode(g, 24, 8, (jpeg_opts){3, exif, en}, &n);
    sdw_image img;
    sdw_error err = {0};
    ASSERT_OK(sdw_image_decode(jpg, n, NULL, &img, &err), &err);
    ASSERT_TRUE(img.width == 8 && img.height == 24);
    sdw_image_free(&img);
    free(jpg);
    free(g);
}

static void test_webp_lossless_exact_and_exif(void) {
    for (int ch = 3; ch <= 4; ch++) {
        uint8_t *px = gradient(23, 17, ch), *webp = NULL;
        size_t n = ch == 3 ? WebPEncodeLosslessRGB(px, 23, 17, 23 * 3, &webp)
                           : WebPEncodeLosslessRGBA(px, 23, 17, 23 * 4, &webp);
        ASSERT_TRUE(n > 0);
        sdw_image img;
        sdw_error err = {0};
        ASSERT_OK(sdw_image_decode(webp, n, "t.webp", &img, &err), &err);
        ASSERT_TRUE(img.width == 23 && img.height == 17 && img.channels == ch);
        ASSERT_EQ_INT(max_diff(img.data, px, (size_t)23 * 17 * ch), 0);
        sdw_image_free(&img);
        WebPFree(webp);
        free(px);
    }
    /* EXIF orientation 6 through the mux API (a VP8X container with an EXIF chunk) */
    uint8_t *px = quadrants(), *webp = NULL, exif[64];
    size_t n = WebPEncodeLosslessRGB(px, 16, 16, 16 * 3, &webp);
    size_t en = exif_blob(exif, 6, false);
    WebPMux *mux = WebPMuxNew();
    WebPData image = {webp, n}, ex = {exif + 6, en - 6}, out = {0};
    ASSERT_TRUE(WebPMuxSetImage(mux, &image, 1) == WEBP_MUX_OK);
    ASSERT_TRUE(WebPMuxSetChunk(mux, "EXIF", &ex, 1) == WEBP_MUX_OK);
    ASSERT_TRUE(WebPMuxAssemble(mux, &out) == WEBP_MUX_OK);
    sdw_image img;
    sdw_error err = {0};
    ASSERT_OK(sdw_image_decode(out.bytes, out.size, NULL, &img, &err), &err);
    char got[5];
    blocks(&img, got);
    ASSERT_TRUE(strcmp(got, "grkb") == 0);
    sdw_image_free(&img);
    WebPDataClear(&out);
    WebPMuxDelete(mux);
    WebPFree(webp);
    free(px);
}

/* ---- bad input ---- */

static void expect_bad(const void *data, size_t n, sdw_status code, const char *needle) {
    sdw_image img = {.width = 7};
    sdw_error err = {0};
    sdw_status s = sdw_image_decode(data, n, "bad.img", &img, &err);
    if (s != code) {
        sdw_test_fail(__FILE__, __LINE__, "want %d (%s), got %d: %s", (int)code, needle, (int)s,
                      err.msg);
        sdw_image_free(&img);
        return;
    }
    ASSERT_STR_CONTAINS(err.msg, needle);
    ASSERT_TRUE(img.data == NULL && img.width == 0); /* zeroed on failure */
}

/* Finds the SOF0 marker of a baseline JPEG: height at +5, width at +7 (big-endian). */
static uint8_t *sof0(uint8_t *jpg, size_t n) {
    for (size_t i = 2; i + 9 < n; i++)
        if (jpg[i] == 0xff && jpg[i + 1] == 0xc0) return jpg + i;
    return NULL;
}

static void test_bad_input_is_named(void) {
    expect_bad("", 0, SDW_E_FORMAT, "bad.img: empty image data");
    expect_bad("GIF89a......", 12, SDW_E_FORMAT, "bad.img: not a PNG, JPEG or WebP image");
    uint8_t *px = gradient(32, 32, 3), *png;
    size_t n;
    sdw_error err = {0};
    ASSERT_OK(sdw_png_write_mem(px, 32, 32, 3, NULL, &png, &n, &err), &err);
    expect_bad(png, n / 2, SDW_E_FORMAT, "bad.img");
    free(png);
    uint8_t *jpg = jpeg_encode(px, 32, 32, (jpeg_opts){.channels = 3}, &n);
    expect_bad(jpg, n / 2, SDW_E_FORMAT, "bad.img: corrupt JPEG data");
    expect_bad(jpg, 40, SDW_E_FORMAT, "bad.img: corrupt JPEG data");
    uint8_t *sof = sof0(jpg, n);
    ASSERT_TRUE(sof != NULL);
    sof[5] = 0x4e, sof[6] = 0x20; /* height 20000 */
    expect_bad(jpg, n, SDW_E_UNSUPPORTED, "bad.img: JPEG image 32x20000 is too large");
    sof[5] = 0x20, sof[6] = 0x01, sof[7] = 0x20, sof[8] = 0x00; /* 8192 x 8193 > 64 Mpixel */
    expect_bad(jpg, n, SDW_E_UNSUPPORTED, "is too large");
    sof[5] = 0x00, sof[6] = 0x40; /* 8192 x 64: allowed, but the scan data is far too short */
    expect_bad(jpg, n, SDW_E_FORMAT, "bad.img: corrupt JPEG data");
    sof[5] = 0, sof[6] = 0, sof[7] = 0, sof[8] = 32; /* height 0 */
    expect_bad(jpg, n, SDW_E_FORMAT, "bad.img: corrupt JPEG data");
    free(jpg);
    uint8_t cmyk[8 * 8 * 4] = {0};
    jpg = jpeg_encode(cmyk, 8, 8, (jpeg_opts){.channels = 4}, &n);
    expect_bad(jpg, n, SDW_E_UNSUPPORTED, "CMYK");
    free(jpg);
    uint8_t *webp = NULL;
    n = WebPEncodeLosslessRGB(px, 32, 32, 32 * 3, &webp);
    expect_bad(webp, n / 2, SDW_E_FORMAT, "bad.img: corrupt WebP data");
    memset(webp + 20, 0xa5, n - 20);
    expect_bad(webp, n, SDW_E_FORMAT, "bad.img: corrupt WebP data");
    WebPFree(webp);
    free(px);
    sdw_image img;
    ASSERT_STATUS(sdw_image_load("/nonexistent/x.png", &img, &err), SDW_E_IO);
    ASSERT_STR_CONTAINS(err.msg, "/nonexistent/x.png");
}

/* ---- Pillow's resize ---- */

/* Pillow's make_case: L image, `color` in the top-left and bottom-right quadrants, 255 - color
 * elsewhere; replicated over ch channels. */
static sdw_image make_case(int w, int h, int ch, uint8_t color) {
    sdw_image img = {.width = w, .height = h, .channels = ch, .data = malloc((size_t)w * h * ch)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            bool q = (x < w / 2 && y < h / 2) || (x >= w / 2 && y >= h / 2);
            for (int c = 0; c < ch; c++) img.data[((size_t)y * w + x) * ch + c] = q ? color : 255 - color;
        }
    return img;
}

/* Pillow's make_sample + check_case: data = hex pixels of the top-left quarter; the other
 * quarters follow by symmetry. */
static void check_case(const sdw_image *img, const char *hex) {
    const int W = img->width, H = img->height, w = W / 2, h = H / 2;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned v;
            ASSERT_TRUE(sscanf(hex + (y * w + x) * 3, "%2x", &v) == 1);
            const struct {
                int x, y;
                unsigned v;
            } at[4] = {{x, y, v}, {W - 1 - x, H - 1 - y, v}, {x, H - 1 - y, 255 - v},
                       {W - 1 - x, y, 255 - v}};
            for (int k = 0; k < 4; k++)
                for (int c = 0; c < img->channels; c++) {
                    unsigned got = img->data[((size_t)at[k].y * W + at[k].x) * img->channels + c];
                    if (got != at[k].v) {
                        sdw_test_fail(__FILE__, __LINE__, "pixel (%d,%d) ch %d: %02x, Pillow %02x",
                                      at[k].x, at[k].y, c, got, at[k].v);
                        return;
                    }
                }
        }
}

static void test_resize_pillow_accuracy_cases(void) {
    for (int ch = 1; ch <= 3; ch += 2) {
        sdw_image in = make_case(16, 16, ch, 0xe1), out;
        sdw_image_resize(&in, 8, 8, &out);
        check_case(&out, "e1 e0 e4 d7 "
                         "e0 df e3 d6 "
                         "e4 e3 e7 da "
                         "d7 d6 d9 ce ");
        sdw_image_free(&out);
        sdw_image_free(&in);
        in = make_case(6, 6, ch, 0xe1);
        sdw_image_resize(&in, 12, 12, &out);
        check_case(&out, "e1 e0 db ed f5 b8 "
                         "e0 df da ec f3 b7 "
                         "db db d6 e7 ee b5 "
                         "ed ec e6 fb ff bf "
                         "f5 f4 ee ff ff c4 "
                         "b8 b7 b4 bf c4 a0 ");
        sdw_image_free(&out);
        sdw_image_free(&in);
    }
}

/* Pillow's consistency case: a flat image stays exactly flat through a strong anisotropic
 * resize (512x9 -> 9x512), and an unchanged size is an exact copy. */
static void test_resize_flat_and_identity(void) {
    sdw_image in = {.width = 512, .height = 9, .channels = 3, .data = malloc(512 * 9 * 3)}, out;
    for (int i = 0; i < 512 * 9; i++) in.data[i * 3] = 0, in.data[i * 3 + 1] = 64, in.data[i * 3 + 2] = 255;
    sdw_image_resize(&in, 9, 512, &out);
    ASSERT_TRUE(out.width == 9 && out.height == 512 && out.channels == 3);
    for (int i = 0; i < 9 * 512; i++)
        ASSERT_TRUE(out.data[i * 3] == 0 && out.data[i * 3 + 1] == 64 && out.data[i * 3 + 2] == 255);
    sdw_image_free(&out);
    sdw_image_free(&in);
    uint8_t *g = gradient(13, 7, 4);
    in = (sdw_image){.width = 13, .height = 7, .channels = 4, .data = g};
    sdw_image_resize(&in, 13, 7, &out);
    ASSERT_EQ_INT(max_diff(out.data, g, 13 * 7 * 4), 0);
    sdw_image_free(&out);
    sdw_image_free(&in);
}

static void test_colour_conversions(void) {
    uint8_t px[] = {255, 0, 0, 9, 0, 255, 0, 9, 0, 0, 255, 9, 77, 77, 77, 9};
    sdw_image in = {.width = 4, .height = 1, .channels = 4, .data = px}, l, rgb;
    sdw_image_to_luma(&in, &l);
    /* Pillow: convert("L") of pure red, green, blue, grey 77 */
    ASSERT_TRUE(l.data[0] == 76 && l.data[1] == 150 && l.data[2] == 29 && l.data[3] == 77);
    sdw_image_to_rgb(&l, &rgb);
    ASSERT_TRUE(rgb.channels == 3 && rgb.data[3] == 150 && rgb.data[4] == 150 && rgb.data[5] == 150);
    sdw_image_free(&rgb);
    sdw_image_to_rgb(&in, &rgb); /* alpha dropped */
    ASSERT_TRUE(rgb.data[0] == 255 && rgb.data[3] == 0 && rgb.data[4] == 255 && rgb.data[9] == 77);
    sdw_image_free(&rgb);
    sdw_image_free(&l);
}

int main(void) {
    RUN(test_png_matches_reference_pixels);
    RUN(test_jpeg_rgb_and_grey);
    RUN(test_jpeg_exif_orientation);
    RUN(test_webp_lossless_exact_and_exif);
    RUN(test_bad_input_is_named);
    RUN(test_resize_pillow_accuracy_cases);
    RUN(test_resize_flat_and_identity);
    RUN(test_colour_conversions);
    return sdw_test_finish();
}
