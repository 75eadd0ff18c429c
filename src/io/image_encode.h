/* io/image_encode.h — JPEG and WebP encoding into memory (PNG lives in io/png.h), for clients
 * that ask for another output format (the OpenAI Images API's output_format).
 *
 *   uint8_t *buf; size_t n;
 *   if (sdw_image_encode(rgb, w, h, 3, SDW_IMAGE_JPEG, 90, &buf, &n, &err) == SDW_OK) ... free(buf);
 *
 * Thread safety: reentrant (codec state is per call). Decoding is io/image.h's job.
 */
#ifndef SDW_IO_IMAGE_ENCODE_H
#define SDW_IO_IMAGE_ENCODE_H

#include "core/common.h"

typedef enum sdw_image_format { SDW_IMAGE_PNG, SDW_IMAGE_JPEG, SDW_IMAGE_WEBP } sdw_image_format;

/* "png" / "jpeg" / "webp" (and "jpg"); false if the name is none of these. */
bool sdw_image_format_parse(const char *name, sdw_image_format *out);
const char *sdw_image_format_mime(sdw_image_format f); /* "image/png" ... */

/* Encodes w x h pixels (channels 3 = RGB or 4 = RGBA, packed rows, top first). quality 1-100
 * (JPEG/WebP; ignored for PNG, which is lossless; out-of-range values are clamped). RGBA becomes
 * RGB for JPEG (alpha dropped). *out is new (free with free()); untouched on failure. */
sdw_status sdw_image_encode(const uint8_t *pixels, int w, int h, int channels,
                            sdw_image_format format, int quality, uint8_t **out, size_t *out_len,
                            sdw_error *err);

#endif
