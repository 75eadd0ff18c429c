/* What the request fuzz targets share: the server limits and a model's capabilities to parse
 * against (Stable Diffusion 1.x-like: its sizes, samplers, schedulers, and two family options
 * so resolve's option checks run), small enough input images that decoding stays cheap. */
#ifndef SDW_FUZZ_REQUEST_H
#define SDW_FUZZ_REQUEST_H

#include "server/server_impl.h"

#include <string.h>

static const char *const k_fuzz_samplers[] = {"ddim", "pndm", "euler", "euler_a", "dpm++2m",
                                              NULL};
static const char *const k_fuzz_schedulers[] = {"default", "karras", "trailing", NULL};
static const sdw_param_spec k_fuzz_params[] = {
    {"original_width", 0, 8192, 0, true, "micro-conditioning"},
    {"max_sequence_length", 1, 512, 256, true, "T5 window"},
    {NULL, 0, 0, 0, false, NULL},
};

static inline sdw_capabilities fuzz_caps(void) {
    return (sdw_capabilities){.txt2img = true, .img2img = true, .inpainting = true,
                              .supports_guidance = true, .supports_negative_prompt = true,
                              .default_width = 64, .default_height = 64, .default_steps = 20,
                              .default_guidance = 7.5f, .size_multiple = 8, .min_size = 64,
                              .max_size = 4096, .max_steps = 1000, .samplers = k_fuzz_samplers,
                              .default_sampler = "pndm", .schedulers = k_fuzz_schedulers,
                              .params = k_fuzz_params};
}

static inline sdw_server_params fuzz_params(void) {
    sdw_server_params p = sdw_server_params_default();
    p.max_input_pixels = 256 * 256; /* the decoders have their own target */
    return p;
}

/* After a parse: a refusal names its problem; an accepted request resolves or is refused with a
 * message too (never a crash), and respects the server's limits. */
static inline void fuzz_check(sdw_status s, const sdw_request *req, int n,
                              const sdw_server_params *p, const sdw_capabilities *caps,
                              const sdw_error *err) {
    if (s != SDW_OK) {
        SDW_ASSERT(err->msg[0] != 0);
        return;
    }
    SDW_ASSERT(n >= 1 && n <= p->max_n);
    SDW_ASSERT(!req->prompt || strlen(req->prompt) <= p->max_prompt_bytes);
    sdw_request r;
    sdw_error e = {0};
    if (sdw_request_resolve(req, caps, &r, &e) != SDW_OK) SDW_ASSERT(e.msg[0] != 0);
    else SDW_ASSERT(r.width >= caps->min_size && r.width <= caps->max_size && r.steps >= 1);
}

#endif
