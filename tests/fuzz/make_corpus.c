/* Writes the fuzz target's seed corpus into the folder argv[1]: a few tiny images of every
 * format and flavour the decoders handle (PNG RGB/RGBA/grey/palette-free, JPEG RGB/grey with an
 * EXIF orientation, WebP lossy/lossless/alpha with an EXIF chunk). Generated at build time so
 * no binary files live in the repository; a few KB in all. */
#include "io/png.h"

#include <jpeglib.h>
#include <webp/encode.h>
#include <webp/mux.h>

static void put(const char *dir, const char *name, const void *data, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "make_corpus: cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static void pattern(uint8_t *p, int w, int h, int ch) {
    for (int i = 0; i < w * h * ch; i++) p[i] = (uint8_t)(i * 37 + (i / ch) * 11);
}

static const uint8_t g_exif[] = {'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0,
                                 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0};

static void jpeg(const char *dir, const char *name, int w, int h, int ch, bool exif) {
    uint8_t px[16 * 16 * 3];
    pattern(px, w, h, ch);
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &buf, &n);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = ch;
    c.in_color_space = ch == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 50, TRUE);
    jpeg_start_compress(&c, TRUE);
    if (exif) jpeg_write_marker(&c, JPEG_APP0 + 1, g_exif, sizeof g_exif);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = px + (size_t)c.next_scanline * w * ch;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    put(dir, name, buf, n);
    free(buf);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    uint8_t px[16 * 16 * 4];
    sdw_error err = {0};
    uint8_t *buf;
    size_t n;
    for (int ch = 3; ch <= 4; ch++) {
        pattern(px, 5, 3, ch);
        const char *kv[] = {"parameters", "a cat", NULL};
        if (sdw_png_write_mem(px, 5, 3, ch, kv, &buf, &n, &err)) return 1;
        put(dir, ch == 3 ? "rgb.png" : "rgba.png", buf, n);
        free(buf);
    }
    jpeg(dir, "rgb_exif.jpg", 16, 9, 3, true);
    jpeg(dir, "grey.jpg", 7, 5, 1, false);
    pattern(px, 6, 4, 4);
    n = WebPEncodeLosslessRGBA(px, 6, 4, 6 * 4, &buf);
    put(dir, "lossless_alpha.webp", buf, n);
    WebPFree(buf);
    pattern(px, 9, 7, 3);
    n = WebPEncodeRGB(px, 9, 7, 9 * 3, 50, &buf);
    put(dir, "lossy.webp", buf, n);
    WebPMux *mux = WebPMuxNew();
    WebPData image = {buf, n}, ex = {g_exif + 6, sizeof g_exif - 6}, out = {0};
    if (WebPMuxSetImage(mux, &image, 1) != WEBP_MUX_OK ||
        WebPMuxSetChunk(mux, "EXIF", &ex, 1) != WEBP_MUX_OK ||
        WebPMuxAssemble(mux, &out) != WEBP_MUX_OK)
        return 1;
    put(dir, "lossy_exif.webp", out.bytes, out.size);
    WebPDataClear(&out);
    WebPMuxDelete(mux);
    WebPFree(buf);
    return 0;
}
