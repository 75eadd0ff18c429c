/* io/image.h — user images in (PNG, JPEG, WebP) and the pixel operations diffusers applies to
 * them before a pipeline sees them (Pillow's Lanczos resize, RGB -> luma conversion).
 *
 *   sdw_image img;
 *   if (sdw_image_load("photo.jpg", &img, &err) != SDW_OK) die(err.msg);
 *   sdw_image small;
 *   sdw_image_resize(&img, 512, 512, &small);     // = PIL img.resize((512, 512), LANCZOS)
 *   sdw_image_free(&small); sdw_image_free(&img);
 *
 * Decoding: the format is recognised by its signature, never by the file name. 8-bit output,
 * rows top first, interleaved: channels 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA), as
 * stored (PNG grey comes out as RGB: io/png.h). Alpha is returned as decoded; the pipelines
 * ignore it (see sdw_request.init_image). JPEG and WebP files with an EXIF orientation are
 * turned upright, as diffusers' load_image (PIL.ImageOps.exif_transpose) does; PNG eXIf is not
 * read. Images with a side over SDW_IMAGE_MAX_DIM or more than SDW_IMAGE_MAX_PIXELS pixels are
 * refused before any pixel buffer is allocated; zero-sized images are refused.
 * Errors: SDW_E_IO (cannot read the file), SDW_E_FORMAT (not an image of a known format, or
 * corrupt/truncated data: the message names the format and the decoder's complaint),
 * SDW_E_UNSUPPORTED (too large, CMYK JPEG, animated WebP). Messages start with the label
 * (the path for files).
 *
 * Thread safety: every function is reentrant (decoder state is per call).
 */
#ifndef SDW_IO_IMAGE_H
#define SDW_IO_IMAGE_H

#include "core/common.h"
#include "sdw/image.h"

#define SDW_IMAGE_MAX_DIM 16384
#define SDW_IMAGE_MAX_PIXELS ((size_t)1 << 26) /* 64 Mpixel: 256 MB as RGBA */

/* Decodes len bytes of PNG, JPEG or WebP. label names the data in messages ("init image",
 * a path; NULL = "image"). On success *out is a new image (free with sdw_image_free); on
 * failure *out is zeroed. The fuzz target's entry point. */
sdw_status sdw_image_decode(const void *data, size_t len, const char *label, sdw_image *out,
                            sdw_error *err);
/* Reads and decodes the file at path (same contract; the path labels the messages). */
sdw_status sdw_image_load(const char *path, sdw_image *out, sdw_error *err);

/* out = in resized to w x h exactly as Pillow's Image.resize((w, h), Image.LANCZOS) does for
 * an 8-bit "L"/"RGB" image (two separable passes, horizontal first, 22-bit fixed-point
 * coefficients, 8-bit rounding between the passes; no work and an exact copy when the size is
 * unchanged). Every channel is filtered independently, alpha too (Pillow would premultiply
 * RGBA: drop alpha first, sdw_image_to_rgb, to match what the pipelines feed it). w, h >= 1.
 * *out is new. */
void sdw_image_resize(const sdw_image *in, int w, int h, sdw_image *out);

/* out = in as 3-channel RGB, as PIL's convert("RGB"): grey is replicated, alpha dropped (not
 * composited). *out is new. */
void sdw_image_to_rgb(const sdw_image *in, sdw_image *out);

/* out = in as 1-channel luma, as PIL's convert("L"): (R*19595 + G*38470 + B*7471 + 32768) >> 16
 * (ITU-R 601-2 in 16-bit fixed point); grey is copied, alpha dropped. *out is new. */
void sdw_image_to_luma(const sdw_image *in, sdw_image *out);

#endif
