/* The UNet's conditioning for the Stable Diffusion family, as diffusers 0.25 builds it:
 * StableDiffusionPipeline.encode_prompt (one encoder: its last hidden state) and
 * StableDiffusionXLPipeline.encode_prompt + _get_add_time_ids (two encoders: penultimate
 * states concatenated along the features; pooled text_embeds from the second encoder's
 * projection; time ids from the size fields). Which of these a model does is data in sd_model
 * (sd_impl.h), so this file has no variant tests. */
#include "models/stable_diffusion/sd_impl.h"

#include <stdarg.h>
#include <string.h>

/* Every encoder on n prompts as one batch each (sdw_clip_prompt_encode): ctx[k] [L, D], each
 * encoder's columns after the previous one's; pooled[k] [P] (untouched without a pooled
 * encoder). */
static sdw_status encode_all(const sd_model *m, int n, const char *const *prompts,
                             const char *const *which, float *const *ctx, int D,
                             float *const *pooled, bool *truncated, sdw_error *err) {
    int col = 0;
    float *const none[2] = {NULL, NULL};
    for (int k = 0; k < m->n_te; k++) {
        const sd_text_encoder *te = &m->te[k];
        sdw_status s = sdw_clip_prompt_encode(te, n, prompts, which, ctx, D, col,
                                              k == m->pooled_te ? pooled : none, truncated,
                                              m->d.tap, m->d.tap_user, err);
        if (s) return s;
        col += sdw_clip_text_get_config(te->enc)->hidden;
    }
    return SDW_OK;
}

void sdw__sd_cond_free(void *cond) {
    sd_cond *c = cond;
    if (!c) return;
    free(c->context);
    free(c->text_embeds);
    free(c->time_ids);
    free(c);
}

/* A size option of SDXL's micro-conditioning: its value, or the image's when 0. */
static float size_or(const sd_model *m, const sdw_request *req, const char *name, int image) {
    const double v = sdw_request_param(req, &m->d.caps, name);
    return (float)(v > 0 ? v : image);
}

sdw_status sdw__sd_condition(sdw_diffusion *d, const sdw_request *req, int B, void **cond,
                             bool *truncated, sdw_error *err) {
    const sd_model *m = (const sd_model *)d;
    const sdw_unet_config *u = sdw_unet_config_of(m->unet);
    const bool cfg = B == 2;
    sd_cond *c = sdw_xcalloc(1, sizeof *c);
    c->B = B;
    c->L = SD_TEXT_WINDOW;
    c->D = u->cross_attention_dim;
    const size_t row = (size_t)c->L * c->D;
    const int P = u->add_text_time ? u->add_text_dim : 0;
    c->context = sdw_xcalloc((size_t)c->B * row, sizeof(float));
    if (P) c->text_embeds = sdw_xcalloc((size_t)c->B * P, sizeof(float));

    /* Batch order [uncond, cond], as the reference concatenates it; both encoded in one
     * batch. An unneeded uncond (no guidance, or an empty negative prompt on a model whose
     * reference zeroes it) stays zero. */
    const int b_cond = c->B - 1;
    const bool no_negative = !req->negative_prompt || !*req->negative_prompt;
    const char *prompts[2] = {req->prompt, no_negative ? "" : req->negative_prompt};
    const char *which[2] = {"cond", "uncond"};
    float *ctx[2] = {c->context + b_cond * row, c->context};
    float *pooled[2] = {P ? c->text_embeds + (size_t)b_cond * P : NULL, c->text_embeds};
    const int n = cfg && !(no_negative && m->zero_uncond) ? 2 : 1;
    sdw_status s = encode_all(m, n, prompts, which, ctx, c->D, pooled, truncated, err);
    if (s) goto fail;

    /* SDXL micro-conditioning: (original size, crop top-left, target size), each (h, w)/(y, x)
     * as diffusers' _get_add_time_ids lists them; the negative ids default to the same. */
    if (u->add_text_time) {
        const int nt = u->add_n_time_ids;
        if (nt != 6) {
            s = sdw_error_set(err, SDW_E_UNSUPPORTED,
                              "the UNet takes %d time ids; only SDXL base's 6 (sizes and crop) "
                              "are supported",
                              nt);
            goto fail;
        }
        const float ids[6] = {
            size_or(m, req, "original_height", req->height),
            size_or(m, req, "original_width", req->width),
            (float)sdw_request_param(req, &m->d.caps, "crop_top"),
            (float)sdw_request_param(req, &m->d.caps, "crop_left"),
            size_or(m, req, "target_height", req->height),
            size_or(m, req, "target_width", req->width),
        };
        c->time_ids = sdw_xmalloc((size_t)c->B * nt * sizeof(float));
        for (int b = 0; b < c->B; b++)
            memcpy(c->time_ids + b * nt, ids, sizeof ids);
    }
    *cond = c;
    return SDW_OK;
fail:
    sdw__sd_cond_free(c);
    return s;
}
