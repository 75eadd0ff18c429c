/* The UNet's conditioning for the Stable Diffusion family, as diffusers 0.25 builds it:
 * StableDiffusionPipeline.encode_prompt (one encoder: its last hidden state) and
 * StableDiffusionXLPipeline.encode_prompt + _get_add_time_ids (two encoders: penultimate
 * states concatenated along the features; pooled text_embeds from the second encoder's
 * projection; time ids from the size fields). Which of these a model does is data in sd_model
 * (sd_impl.h), so this file has no variant tests. */
#include "models/stable_diffusion/sd_impl.h"

#include <stdarg.h>
#include <string.h>

/* How encoder k reads this request's prompts: its syntax, clip skip and embeddings (an SDXL
 * embedding's clip_l vectors for the first encoder, clip_g for the second). */
static sdw_clip_prompt_opts prompt_opts(const sd_model *m, const sdw_request *req, int k) {
    static const char *const roles[2] = {"clip_l", "clip_g"};
    return (sdw_clip_prompt_opts){.syntax = req->prompt_syntax,
                                  .clip_skip = req->clip_skip,
                                  .embeddings = m->d.base.embeddings,
                                  .ti_key = m->n_te == 2 ? roles[k] : NULL};
}

/* Every encoder on n prompts (one batch each; sdw_clip_prompt_encode_chunks), laid out as the
 * context of a batch of c->B: each encoder's columns after the previous one's, prompt k's rows
 * at ctx_of[k]; pooled[k] [P] from the pooled encoder (untouched without one). Prompts read with
 * AUTOMATIC1111's syntax may take several 77-token windows: the context is then 77 x that many
 * rows, the two prompts of a batch brought to one count by sdw_clip_batch_chunks (the UNet
 * only cross-attends to the text, so repeating windows is exact). Sets c->L and c->context. */
static sdw_status encode_all(const sd_model *m, const sdw_request *req, int n,
                             const char *const *prompts, const char *const *which, sd_cond *c,
                             int b_cond, float *const *pooled, bool *truncated, sdw_error *err) {
    sdw_clip_encoding enc[SD_MAX_TEXT][2] = {{{0}}}, empty[SD_MAX_TEXT] = {{0}};
    sdw_status s = SDW_OK;
    for (int k = 0; k < m->n_te && !s; k++) {
        const sdw_clip_prompt_opts o = prompt_opts(m, req, k);
        s = sdw_clip_prompt_encode_chunks(&m->te[k], &o, n, prompts, which, true,
                                          k == m->pooled_te, enc[k], truncated, m->d.tap,
                                          m->d.tap_user, err);
    }
    for (int k = 1; k < m->n_te && !s; k++) /* the same tokens: A1111 reads "!" alike in both */
        for (int j = 0; j < n; j++)
            if (enc[k][j].n_chunks != enc[0][j].n_chunks)
                s = sdw_error_set(err, SDW_E_INVALID_ARG,
                                  "the %s prompt takes %d windows in one text encoder and %d in "
                                  "the other",
                                  which[j], enc[0][j].n_chunks, enc[k][j].n_chunks);
    const int n_cond = s ? 1 : enc[0][0].n_chunks, n_un = n == 2 && !s ? enc[0][1].n_chunks : n_cond;
    const int n_out = sdw_clip_batch_chunks(n_cond, n_un, true);
    const bool need_empty = n_out % n_cond || n_out % n_un;
    for (int k = 0; k < m->n_te && !s && need_empty; k++) {
        const sdw_clip_prompt_opts o = prompt_opts(m, req, k);
        const char *none[1] = {""}, *label[1] = {"empty"};
        bool cut = false;
        s = sdw_clip_prompt_encode_chunks(&m->te[k], &o, 1, none, label, true, false, &empty[k],
                                          &cut, NULL, NULL, err);
    }
    if (!s) {
        c->L = SD_TEXT_WINDOW * n_out;
        const size_t row = (size_t)c->L * c->D;
        c->context = sdw_xcalloc((size_t)c->B * row, sizeof(float));
        float *ctx_of[2] = {c->context + (size_t)b_cond * row, c->context};
        int col = 0;
        for (int k = 0; k < m->n_te; k++) {
            const int W = sdw_clip_prompt_width(&m->te[k]);
            for (int j = 0; j < n; j++) {
                sdw_clip_encoding_place(&enc[k][j], n_out, true, &empty[k], W, ctx_of[j], c->D,
                                        col);
                if (pooled[j] && enc[k][j].pooled)
                    memcpy(pooled[j], enc[k][j].pooled,
                           (size_t)sdw_clip_prompt_pooled_width(&m->te[k]) * sizeof(float));
            }
            col += W;
        }
    }
    for (int k = 0; k < m->n_te; k++) {
        sdw_clip_encoding_deinit(&empty[k]);
        for (int j = 0; j < 2; j++) sdw_clip_encoding_deinit(&enc[k][j]);
    }
    return s;
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
    c->D = u->cross_attention_dim;
    const int P = u->add_text_time ? u->add_text_dim : 0;
    if (P) c->text_embeds = sdw_xcalloc((size_t)c->B * P, sizeof(float));

    /* Batch order [uncond, cond], as the reference concatenates it; both encoded in one
     * batch. An unneeded uncond (no guidance, or an empty negative prompt on a model whose
     * reference zeroes it) stays zero. */
    const int b_cond = c->B - 1;
    const bool no_negative = !req->negative_prompt || !*req->negative_prompt;
    const char *prompts[2] = {req->prompt, no_negative ? "" : req->negative_prompt};
    const char *which[2] = {"cond", "uncond"};
    float *pooled[2] = {P ? c->text_embeds + (size_t)b_cond * P : NULL, c->text_embeds};
    const int n = cfg && !(no_negative && m->zero_uncond) ? 2 : 1;
    sdw_status s = encode_all(m, req, n, prompts, which, c, b_cond, pooled, truncated, err);
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
