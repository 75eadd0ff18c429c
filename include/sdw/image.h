/* sdw/image.h — the 8-bit image every layer passes around (decoded inputs, generated outputs,
 * previews). Plain data; below the model interface and the image codecs, which both use it.
 *
 *   sdw_image img = {0};
 *   if (sdw_image_load("in.png", &img, &err) == SDW_OK) ...;   // io/image.h
 *   sdw_image_free(&img);
 *
 * Thread safety: plain data; sdw_image_free must not race with readers of the same image.
 */
#ifndef SDW_IMAGE_H
#define SDW_IMAGE_H

#include <stdint.h>

/* An 8-bit image, rows top to bottom, channels interleaved (RGB = 3). */
typedef struct sdw_image {
    int width, height, channels;
    uint8_t *data; /* owned: free with sdw_image_free */
} sdw_image;
void sdw_image_free(sdw_image *img); /* frees data, zeroes the struct; NULL ok */

#endif
