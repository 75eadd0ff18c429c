/* io/png.h — 8-bit PNG encode/decode with text chunks (generation parameters travel in them).
 *
 *   const char *kv[] = {"parameters", "a photo of a cat\nSteps: 20, Seed: 42", NULL};
 *   if (sdw_png_write("out.png", rgb, 512, 512, 3, kv, &err) != SDW_OK) ...
 *   sdw_png img;
 *   if (sdw_png_read("out.png", &img, &err) == SDW_OK) { puts(sdw_png_text(&img, "parameters"));
 *                                                        sdw_png_deinit(&img); }
 *
 * Text: ASCII values are written as tEXt (as AUTOMATIC1111 writes "parameters", so its readers
 * find them); any other value as uncompressed iTXt, which is UTF-8 by definition (tEXt is
 * Latin-1, so a UTF-8 prompt in tEXt would read back garbled). Reading returns every tEXt/zTXt/
 * iTXt chunk (before or after the image data) as UTF-8.
 * Thread safety: all functions are reentrant (libpng state is per call).
 */
#ifndef SDW_IO_PNG_H
#define SDW_IO_PNG_H

#include "core/common.h"

/* Decoding limits: larger images are refused with SDW_E_UNSUPPORTED before any allocation. */
#define SDW_PNG_MAX_DIM 16384
#define SDW_PNG_MAX_PIXELS ((size_t)1 << 26) /* 64 Mpixel: 256 MB as RGBA */

/* A decoded image: plain data, caller's storage, released with sdw_png_deinit. */
typedef struct sdw_png {
    uint8_t *pixels; /* h rows of w * channels bytes, top row first, no padding */
    int w, h;
    int channels;   /* 3 (RGB) or 4 (RGBA): grey becomes RGB, palette/tRNS transparency RGBA */
    int n_text;
    char **text;    /* 2 * n_text strings: key, value, key, value ... (UTF-8) */
} sdw_png;

/* Encodes w×h pixels (channels 3 = RGB or 4 = RGBA, rows packed, top first) with optional text
 * chunks: text_kv is NULL or a NULL-terminated list key, value, key, value ... (UTF-8 values;
 * keys 1-79 printable ASCII characters, as PNG requires). sdw_png_write writes a new file at
 * path (replaced if present); nothing is left behind on failure. */
sdw_status sdw_png_write(const char *path, const uint8_t *pixels, int w, int h, int channels,
                         const char *const *text_kv, sdw_error *err);
/* Same, into a new malloc'd buffer: *out (free with free()) and *out_len; untouched on failure. */
sdw_status sdw_png_write_mem(const uint8_t *pixels, int w, int h, int channels,
                             const char *const *text_kv, uint8_t **out, size_t *out_len,
                             sdw_error *err);

/* Decodes any PNG (bit depths 1-16, grey/palette/RGB, alpha, interlaced) to 8-bit RGB or RGBA
 * (16-bit samples are rounded, gamma is not changed). On success *out is filled (release with
 * sdw_png_deinit); on failure *out is zeroed and err names the file (or label) and the problem. */
sdw_status sdw_png_read(const char *path, sdw_png *out, sdw_error *err);
sdw_status sdw_png_read_mem(const void *data, size_t len, const char *label, sdw_png *out,
                            sdw_error *err);
void sdw_png_deinit(sdw_png *img); /* NULL or zeroed ok; leaves it zeroed */

/* Value of the first text chunk with this key (borrowed from img), or NULL. */
const char *sdw_png_text(const sdw_png *img, const char *key);

#endif
