/* io/infotext.h — generation parameters as AUTOMATIC1111 writes them into a PNG's
 * "parameters" text chunk, so tools that read A1111 images (and people) understand ours:
 *
 *   a photo of a cat
 *   Negative prompt: blurry
 *   Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15, RNG: CPU
 */
#ifndef SDW_IO_INFOTEXT_H
#define SDW_IO_INFOTEXT_H

#include "sdw/image_model.h"

/* A1111's display name for one of our sampler names ("euler_a" -> "Euler a"); unknown names
 * are returned unchanged. */
const char *sdw_sampler_a1111_name(const char *sampler);

/* Formats the infotext into buf (always NUL-terminated, truncated to cap). model (a path or a
 * name; NULL = none) is shown as A1111 does: the file stem ("models/sd15.safetensors" -> "sd15"). */
void sdw_infotext_format(const sdw_request *req, const sdw_result_info *info, const char *model,
                         char *buf, size_t cap);

#endif
