/* pool/payload.h — what travels through Redis between a gateway and its workers, written and
 * read in this one place: a job's request, a model's capabilities, an image's result info.
 *
 *   char *json = sdw_pool_request_json(&req, n);              // the request's fields
 *   ...store json, and the images' pixels as they are (sdw_pool_image_bytes)...
 *   sdw_pool_pixels px = {.init = init, .init_len = init_len, ...};
 *   sdw_pool_request pr;
 *   if (sdw_pool_request_parse(json, len, &px, max, &pr, &err)) ...
 *   sdw_engine_submit(e, &pr.req, pr.n_images, &job, &err);   // pr owns what req points at
 *   sdw_pool_request_free(&pr); free(json);
 *
 * The request is one JSON object, version SDW_POOL_PAYLOAD_VERSION:
 *   {"v":1, "n":1, "prompt":"...", "negative_prompt":"...", "width":512, "height":512,
 *    "steps":20, "guidance":7.5, "seed":42, "sampler":"euler", "scheduler":"default",
 *    "rng":"torch", "strength":0.75, "params":{"max_sequence_length":256},
 *    "vae_tiling":"auto", "decoder":"vae", "profile":false,
 *    "prompt_syntax":true, "clip_skip":2,
 *    "hires":{"scale":2, "resize_width":0, "resize_height":0, "upscaler":"Latent", "steps":0,
 *             "strength":0.7},
 *    "loras":[{"name":"detail", "multiplier":0.8}],
 *    "controls":[{"name":"canny", "scale":1, "start":0, "end":1,
 *                 "image":{"width":W,"height":H,"channels":C}}], "control_guess_mode":true,
 *    "init_image":{"width":W,"height":H,"channels":C}, "mask":{...}}
 * Absent strings (negative prompt, sampler, scheduler) and images are left out, and so are the
 * fields added after the first workers (prompt_syntax, clip_skip, hires, loras, controls,
 * control_guess_mode) while they hold their defaults: an absent field reads as its default, so
 * payloads written before them still read, and a request that uses none of them still reads
 * on a worker that does not know them. hires carries what a request sets (its sizes are
 * resolved again by the worker), the upscaler by its A1111 name (sdw_upscaler_str). Numbers are
 * written so that they read back bit-exactly (jansson's %.17g for reals; floats through
 * double). The init image, the mask and the control images travel beside the JSON as their raw
 * pixels (rows top first, channels interleaved: the sdw_image layout), so nothing is re-encoded
 * and a worker sees exactly the gateway's pixels. The same JSON without the pixels is the
 * job's readable summary (sdw_job_request).
 *
 * LoRAs and ControlNets travel by name only: a worker resolves them in its own folders
 * (--lora-dir, --controlnet-dir), which keep names inside them. A payload naming a file by path
 * ("path" member), by an absolute name or by one with a ".." component is refused: a worker
 * never opens a file a queue entry points at.
 *
 * Reading is strict: unknown fields, wrong types, a newer version, pixel buffers whose size does
 * not match the declared image (or that no image declares), or a total over the caller's byte
 * limit are SDW_E_INVALID_ARG (SDW_E_FORMAT for text that is not JSON) with a message naming
 * the field. Values are not checked against any model here: that is sdw_request_resolve's job,
 * on the gateway before queueing and again on the worker.
 *
 * Thread safety: reentrant.
 */
#ifndef SDW_POOL_PAYLOAD_H
#define SDW_POOL_PAYLOAD_H

#include "models/lora.h"
#include "sdw/image_model.h"

#include <stdbool.h>
#include <stddef.h>

#define SDW_POOL_PAYLOAD_VERSION 1
#define SDW_POOL_MAX_PARAMS 32 /* family options per request */

/* The request's fields as a new JSON text (free with free()); images are described (size and
 * channels), not included. n_images >= 1. */
char *sdw_pool_request_json(const sdw_request *req, int n_images);

/* The pixel bytes of img as they travel (width x height x channels); 0 for NULL. */
size_t sdw_pool_image_bytes(const sdw_image *img);

/* The pixels that travel beside a request's JSON (each NULL when the entry has none; borrowed
 * for the call). */
typedef struct sdw_pool_pixels {
    const void *init, *mask;
    size_t init_len, mask_len;
    const void *control[SDW_MAX_CONTROLS]; /* the control images, in the request's order */
    size_t control_len[SDW_MAX_CONTROLS];
} sdw_pool_pixels;

/* A parsed request that owns everything req points at. */
typedef struct sdw_pool_request {
    sdw_request req; /* ready for sdw_engine_submit (stop and resolved left NULL) */
    int n_images;
    char *prompt, *negative, *sampler, *scheduler;
    /* The images: with pixels when the payload carried them; a summary read without pixels
     * gives images with their size and no data (req still points at them: the mode shows). */
    sdw_image init, mask;
    sdw_param params[SDW_POOL_MAX_PARAMS];
    char *param_names[SDW_POOL_MAX_PARAMS];
    sdw_lora_ref loras[SDW_LORA_MAX_PER_REQUEST];
    char *lora_names[SDW_LORA_MAX_PER_REQUEST];
    sdw_control controls[SDW_MAX_CONTROLS];
    char *control_names[SDW_MAX_CONTROLS];
    sdw_image control_images[SDW_MAX_CONTROLS]; /* as init and mask */
} sdw_pool_request;

/* Parses json[0..json_len) into *out. px: the pixels of the images the JSON declares (every one
 * must come, and none it does not declare), or NULL to read a summary (the images then have no
 * data). max_bytes bounds json_len plus the pixel bytes (0 = no bound). On failure *out is
 * zeroed. */
sdw_status sdw_pool_request_parse(const char *json, size_t json_len, const sdw_pool_pixels *px,
                                  size_t max_bytes, sdw_pool_request *out, sdw_error *err);
void sdw_pool_request_free(sdw_pool_request *r); /* NULL ok; zeroes it */

/* ---- capabilities (a worker's registry entry) ---- */

/* caps as a new JSON text (free with free()): every field of sdw_capabilities by its name. */
char *sdw_pool_caps_json(const sdw_capabilities *caps);

/* Capabilities read back, owning their lists and strings. */
typedef struct sdw_pool_caps sdw_pool_caps;
/* Parses json into a new *out (sdw_pool_caps_free); strict as the request. */
sdw_status sdw_pool_caps_parse(const char *json, size_t len, sdw_pool_caps **out,
                               sdw_error *err);
/* The capabilities (borrowed: valid until sdw_pool_caps_free). */
const sdw_capabilities *sdw_pool_caps_get(const sdw_pool_caps *c);
void sdw_pool_caps_free(sdw_pool_caps *c); /* NULL ok */

/* ---- an image's result ---- */

/* What generate() reported for one image, and its infotext, as a new JSON text. The per-op
 * profile is not carried (n_profile reads back as 0). */
char *sdw_pool_info_json(const sdw_result_info *info, const char *infotext);
/* Parses it: *info filled, *infotext a new string (free()). On failure both are untouched. */
sdw_status sdw_pool_info_parse(const char *json, size_t len, sdw_result_info *info,
                               char **infotext, sdw_error *err);

#endif
