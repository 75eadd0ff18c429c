/* The UNet's conditioning for the Stable Diffusion family, as diffusers 0.25 builds it:
 * StableDiffusionPipeline.encode_prompt (one encoder: its last hidden state) and
 * StableDiffusionXLPipeline.encode_prompt + _get_add_time_ids (two encoders: penultimate
 * states concatenated along the features; pooled text_embeds from the second encoder's
 * projection; time ids from the size fields). Which of these a model does is data in sd_model
 * (sd_impl.h), so this file has no variant tests. */
#include "models/stable_diffusion/sd_impl.h"

#include <stdarg.h>
#include <string.h>

/* The reference's name for the hidden state an encoder contributes, or NULL if it records none
 * under a name of its own. */
static const char *state_name(const sdw_clip_text_params *p) {
    if (p->skip_layers == 0 && p->final_norm) return "last_hidden_state";
    if (p->skip_layers == 1 && !p->final_norm) return "penultimate";
    return NULL;
}

/* The prompts of one generation through one encoder, batched (one forward of n rows: the
 * products run at twice the rows, which small matrices need). Prompt k's hidden state goes to
 * ctx[k] (rows of D floats, the encoder's columns starting at `col`), its pooled output (when
 * pooled[k] != NULL) to pooled[k]. which[k] names it in warnings and taps. */
static sdw_status encode_batch(const sd_model *m, const sd_text_encoder *te, int n,
                               const char *const *prompts, const char *const *which,
                               float *const *ctx, int D, int col, float *const *pooled,
                               bool *truncated, sdw_error *err) {
    const int L = SD_TEXT_WINDOW, W = sdw_clip_text_get_config(te->enc)->hidden;
    const int P = te->params.project_pooled ? sdw_clip_text_get_config(te->enc)->projection_dim : W;
    int32_t ids[2 * SD_TEXT_WINDOW];
    char name[96];
    SDW_ASSERT(n >= 1 && n <= 2);
    for (int k = 0; k < n; k++) {
        bool cut = false;
        sdw_status s = sdw_clip_tokenize_window(te->tokenizer, prompts[k] ? prompts[k] : "", L,
                                                te->pad_id, ids + k * L, &cut, err);
        if (s) return s;
        if (cut)
            SDW_WARN("the %s prompt is longer than %d tokens: the text encoder sees only the "
                     "first %d (see `sdw tokenize`)",
                     which[k], L, L - 2);
        *truncated |= cut;
        if (m->d.tap) {
            float idsf[SD_TEXT_WINDOW];
            for (int i = 0; i < L; i++)
                idsf[i] = (float)ids[k * L + i];
            snprintf(name, sizeof name, "%s.%s.input_ids", te->tap, which[k]);
            sdw_diffusion_tap(&m->d, name, idsf, 2, (int64_t)1, (int64_t)L);
        }
    }
    const bool want_pooled = pooled[0] || (n > 1 && pooled[1]);
    float *hidden = sdw_xmalloc((size_t)n * L * W * sizeof(float));
    float *pool = want_pooled ? sdw_xmalloc((size_t)n * P * sizeof(float)) : NULL;
    sdw_status s = sdw_clip_text_forward(te->enc, ids, n, L, &te->params, hidden, pool, err);
    for (int k = 0; k < n && s == SDW_OK; k++) {
        const float *hk = hidden + (size_t)k * L * W;
        const char *state = state_name(&te->params);
        if (state) {
            snprintf(name, sizeof name, "%s.%s.%s", te->tap, which[k], state);
            sdw_diffusion_tap(&m->d, name, hk, 3, (int64_t)1, (int64_t)L, (int64_t)W);
        }
        if (pooled[k]) {
            memcpy(pooled[k], pool + (size_t)k * P, (size_t)P * sizeof(float));
            snprintf(name, sizeof name, "%s.%s.pooled", te->tap, which[k]);
            sdw_diffusion_tap(&m->d, name, pooled[k], 2, (int64_t)1, (int64_t)P);
        }
        for (int i = 0; i < L; i++)
            memcpy(ctx[k] + (size_t)i * D + col, hk + (size_t)i * W, (size_t)W * sizeof(float));
    }
    free(pool);
    free(hidden);
    return s;
}

/* Every encoder on n prompts (see encode_batch): ctx[k] [L, D], pooled[k] [P] (untouched
 * without a pooled encoder). */
static sdw_status encode_all(const sd_model *m, int n, const char *const *prompts,
                             const char *const *which, float *const *ctx, int D,
                             float *const *pooled, bool *truncated, sdw_error *err) {
    int col = 0;
    float *const none[2] = {NULL, NULL};
    for (int k = 0; k < m->n_te; k++) {
        const sd_text_encoder *te = &m->te[k];
        sdw_status s = encode_batch(m, te, n, prompts, which, ctx, D, col,
                                    k == m->pooled_te ? pooled : none, truncated, err);
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
