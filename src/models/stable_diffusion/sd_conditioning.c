/* The UNet's conditioning for the Stable Diffusion family, as diffusers 0.25 builds it:
 * StableDiffusionPipeline.encode_prompt (one encoder: its last hidden state) and
 * StableDiffusionXLPipeline.encode_prompt + _get_add_time_ids (two encoders: penultimate
 * states concatenated along the features; pooled text_embeds from the second encoder's
 * projection; time ids from the size fields). Which of these a model does is data in sd_model
 * (sd_impl.h), so this file has no variant tests. */
#include "models/stable_diffusion/sd_impl.h"

#include <stdarg.h>
#include <string.h>

void sdw__sd_tap(const sd_model *m, const char *name, const float *data, int n_dims, ...) {
    if (!m->tap) return;
    int64_t shape[8];
    va_list ap;
    va_start(ap, n_dims);
    for (int i = 0; i < n_dims; i++)
        shape[i] = va_arg(ap, int64_t);
    va_end(ap);
    m->tap(m->tap_user, name, data, n_dims, shape);
}

/* The reference's name for the hidden state an encoder contributes, or NULL if it records none
 * under a name of its own. */
static const char *state_name(const sdw_clip_text_params *p) {
    if (p->skip_layers == 0 && p->final_norm) return "last_hidden_state";
    if (p->skip_layers == 1 && !p->final_norm) return "penultimate";
    return NULL;
}

/* One prompt through one encoder: its hidden state goes to ctx (rows of D floats, the encoder's
 * columns starting at `col`), its pooled output (if pooled != NULL) to pooled. */
static sdw_status encode_one(const sd_model *m, const sd_text_encoder *te, const char *prompt,
                             const char *which, float *ctx, int D, int col, float *pooled,
                             bool *truncated, sdw_error *err) {
    const int L = SD_TEXT_WINDOW, W = sdw_clip_text_get_config(te->enc)->hidden;
    int32_t ids[SD_TEXT_WINDOW];
    bool cut = false;
    char name[96];
    sdw_status s = sdw_clip_tokenize_window(te->tokenizer, prompt ? prompt : "", L, te->pad_id, ids,
                                            &cut, err);
    if (s) return s;
    if (cut)
        SDW_WARN("the %s prompt is longer than %d tokens: the text encoder sees only the first "
                 "%d (see `sdw tokenize`)",
                 which, L, L - 2);
    *truncated |= cut;
    if (m->tap) {
        float idsf[SD_TEXT_WINDOW];
        for (int i = 0; i < L; i++)
            idsf[i] = (float)ids[i];
        snprintf(name, sizeof name, "%s.%s.input_ids", te->tap, which);
        sdw__sd_tap(m, name, idsf, 2, (int64_t)1, (int64_t)L);
    }
    float *hidden = sdw_xmalloc((size_t)L * W * sizeof(float));
    s = sdw_clip_text_forward(te->enc, ids, 1, L, &te->params, hidden, pooled, err);
    if (s == SDW_OK) {
        const char *state = state_name(&te->params);
        if (state) {
            snprintf(name, sizeof name, "%s.%s.%s", te->tap, which, state);
            sdw__sd_tap(m, name, hidden, 3, (int64_t)1, (int64_t)L, (int64_t)W);
        }
        if (pooled) {
            int P =
                te->params.project_pooled ? sdw_clip_text_get_config(te->enc)->projection_dim : W;
            snprintf(name, sizeof name, "%s.%s.pooled", te->tap, which);
            sdw__sd_tap(m, name, pooled, 2, (int64_t)1, (int64_t)P);
        }
        for (int i = 0; i < L; i++)
            memcpy(ctx + (size_t)i * D + col, hidden + (size_t)i * W, (size_t)W * sizeof(float));
    }
    free(hidden);
    return s;
}

/* Every encoder on one prompt: ctx [L, D], pooled [P] (may stay untouched without a pooled
 * encoder). */
static sdw_status encode_all(const sd_model *m, const char *prompt, const char *which, float *ctx,
                             int D, float *pooled, bool *truncated, sdw_error *err) {
    int col = 0;
    for (int k = 0; k < m->n_te; k++) {
        const sd_text_encoder *te = &m->te[k];
        sdw_status s = encode_one(m, te, prompt, which, ctx, D, col,
                                  k == m->pooled_te ? pooled : NULL, truncated, err);
        if (s) return s;
        col += sdw_clip_text_get_config(te->enc)->hidden;
    }
    return SDW_OK;
}

void sdw__sd_cond_free(sd_cond *c) {
    if (!c) return;
    free(c->context);
    free(c->text_embeds);
    free(c->time_ids);
    memset(c, 0, sizeof *c);
}

sdw_status sdw__sd_condition(const sd_model *m, const sdw_request *req, bool cfg, sd_cond *c,
                             sdw_error *err) {
    const sdw_unet_config *u = sdw_unet_config_of(m->unet);
    memset(c, 0, sizeof *c);
    c->B = cfg ? 2 : 1;
    c->L = SD_TEXT_WINDOW;
    c->D = u->cross_attention_dim;
    const size_t row = (size_t)c->L * c->D;
    const int P = u->add_text_time ? u->add_text_dim : 0;
    c->context = sdw_xcalloc((size_t)c->B * row, sizeof(float));
    if (P) c->text_embeds = sdw_xcalloc((size_t)c->B * P, sizeof(float));

    /* Batch order [uncond, cond], as the reference concatenates it. */
    const int b_cond = c->B - 1;
    sdw_status s = encode_all(m, req->prompt, "cond", c->context + b_cond * row, c->D,
                              P ? c->text_embeds + (size_t)b_cond * P : NULL, &c->truncated, err);
    if (s) goto fail;
    const bool no_negative = !req->negative_prompt || !*req->negative_prompt;
    if (cfg && !(no_negative && m->zero_uncond)) {
        s = encode_all(m, no_negative ? "" : req->negative_prompt, "uncond", c->context, c->D,
                       c->text_embeds, &c->truncated, err);
        if (s) goto fail;
    }
    if (!cfg && !no_negative)
        SDW_WARN(
            "guidance scale %g <= 1 runs no unconditional pass: the negative prompt is ignored",
            (double)req->guidance);

    /* SDXL micro-conditioning: (original size, crop top-left, target size), each (h, w)/(y, x)
     * as diffusers' _get_add_time_ids lists them; the negative ids default to the same. */
    if (u->add_text_time) {
        const int n = u->add_n_time_ids;
        if (n != 6) {
            s = sdw_error_set(err, SDW_E_UNSUPPORTED,
                              "the UNet takes %d time ids; only SDXL base's 6 (sizes and crop) "
                              "are supported",
                              n);
            goto fail;
        }
        const float ids[6] = {
            (float)(req->original_height > 0 ? req->original_height : req->height),
            (float)(req->original_width > 0 ? req->original_width : req->width),
            (float)req->crop_top,
            (float)req->crop_left,
            (float)(req->target_height > 0 ? req->target_height : req->height),
            (float)(req->target_width > 0 ? req->target_width : req->width),
        };
        c->time_ids = sdw_xmalloc((size_t)c->B * n * sizeof(float));
        for (int b = 0; b < c->B; b++)
            memcpy(c->time_ids + b * n, ids, sizeof ids);
    }
    return SDW_OK;
fail:
    sdw__sd_cond_free(c);
    return s;
}
