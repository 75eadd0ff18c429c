/* pool/payload.h — what travels through Redis between a gateway and its workers, written and
 * read in this one place: a job's request, a model's capabilities, an image's result info.
 *
 *   char *json = sdw_pool_request_json(&req, n);              // the request's fields
 *   ...store json, and the init image / mask pixels as they are (sdw_pool_image_bytes)...
 *   sdw_pool_request pr;
 *   if (sdw_pool_request_parse(json, len, init, init_len, mask, mask_len, max, &pr, &err)) ...
 *   sdw_engine_submit(e, &pr.req, pr.n_images, &job, &err);   // pr owns what req points at
 *   sdw_pool_request_free(&pr); free(json);
 *
 * The request is one JSON object, version SDW_POOL_PAYLOAD_VERSION:
 *   {"v":1, "n":1, "prompt":"...", "negative_prompt":"...", "width":512, "height":512,
 *    "steps":20, "guidance":7.5, "seed":42, "sampler":"euler", "scheduler":"default",
 *    "rng":"torch", "strength":0.75, "params":{"max_sequence_length":256},
 *    "vae_tiling":"auto", "decoder":"vae", "profile":false,
 *    "init_image":{"width":W,"height":H,"channels":C}, "mask":{...}}
 * Absent strings (negative prompt, sampler, scheduler) and images are left out; numbers are
 * written so that they read back bit-exactly (jansson's %.17g for reals). The init image and the
 * mask travel beside the JSON as their raw pixels (rows top first, channels interleaved: the
 * sdw_image layout), so nothing is re-encoded and a worker sees exactly the gateway's pixels.
 * The same JSON without the pixels is the job's readable summary (sdw_job_request).
 *
 * Reading is strict: unknown fields, wrong types, a newer version, pixel buffers whose size does
 * not match the declared image, or a total over the caller's byte limit are SDW_E_INVALID_ARG
 * (SDW_E_FORMAT for text that is not JSON) with a message naming the field. Values are not
 * checked against any model here: that is sdw_request_resolve's job, on the gateway before
 * queueing and again on the worker.
 *
 * Thread safety: reentrant.
 */
#ifndef SDW_POOL_PAYLOAD_H
#define SDW_POOL_PAYLOAD_H

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
} sdw_pool_request;

/* Parses json[0..json_len) into *out. init / mask: the pixels of the images the JSON declares,
 * or NULL to read a summary (the images then have no data). max_bytes bounds json_len plus the
 * pixel bytes (0 = no bound). On failure *out is zeroed. */
sdw_status sdw_pool_request_parse(const char *json, size_t json_len, const void *init,
                                  size_t init_len, const void *mask, size_t mask_len,
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
