/* text/clip_prompt.c — see clip_prompt.h. The pipelines' encode_prompt for one CLIP encoder:
 * diffusers' StableDiffusion(XL)Pipeline (0.25), FluxPipeline and StableDiffusion3Pipeline
 * (0.30.3) tokenize with padding="max_length", truncation, and run the encoder without an
 * attention mask; they differ only in the hidden state and pooled output they take. */
#include "text/clip_prompt.h"

#include "core/common.h"

#include <string.h>

void sdw_clip_prompt_deinit(sdw_clip_prompt *p) {
    if (!p) return;
    sdw_clip_text_destroy(p->enc);
    sdw_clip_tokenizer_destroy(p->tokenizer);
    sdw_weights_destroy(p->w);
    memset(p, 0, sizeof *p);
}

int sdw_clip_prompt_width(const sdw_clip_prompt *p) {
    return sdw_clip_text_get_config(p->enc)->hidden;
}

int sdw_clip_prompt_pooled_width(const sdw_clip_prompt *p) {
    const sdw_clip_text_config *c = sdw_clip_text_get_config(p->enc);
    return p->params.project_pooled ? c->projection_dim : c->hidden;
}

/* The reference's name for the hidden state an encoder contributes, or NULL if it records none
 * under a name of its own. */
static const char *state_name(const sdw_clip_text_params *p) {
    if (p->skip_layers == 0 && p->final_norm) return "last_hidden_state";
    if (p->skip_layers == 1 && !p->final_norm) return "penultimate";
    return NULL;
}

static void tap_tensor(sdw_text_tap_fn tap, void *user, const char *name, const float *x,
                       int n_dims, int64_t a, int64_t b, int64_t c) {
    const int64_t shape[3] = {a, b, c};
    tap(user, name, x, n_dims, shape);
}

sdw_status sdw_clip_prompt_encode(const sdw_clip_prompt *p, int n, const char *const *prompts,
                                  const char *const *which, float *const *ctx, int ld, int col,
                                  float *const *pooled, bool *truncated, sdw_text_tap_fn tap,
                                  void *tap_user, sdw_error *err) {
    const int L = SDW_CLIP_WINDOW, W = sdw_clip_prompt_width(p);
    const int P = sdw_clip_prompt_pooled_width(p);
    int32_t ids[2 * SDW_CLIP_WINDOW];
    char name[96];
    SDW_ASSERT(n >= 1 && n <= 2);
    for (int k = 0; k < n; k++) {
        bool cut = false;
        sdw_status s = sdw_clip_tokenize_window(p->tokenizer, prompts[k] ? prompts[k] : "", L,
                                                p->pad_id, ids + k * L, &cut, err);
        if (s) return s;
        if (cut)
            SDW_WARN("the %s prompt is longer than %d tokens: the text encoder sees only the "
                     "first %d (see `sdw tokenize`)",
                     which[k], L, L - 2);
        *truncated |= cut;
        if (tap) {
            float idsf[SDW_CLIP_WINDOW];
            for (int i = 0; i < L; i++)
                idsf[i] = (float)ids[k * L + i];
            snprintf(name, sizeof name, "%s.%s.input_ids", p->tap, which[k]);
            tap_tensor(tap, tap_user, name, idsf, 2, 1, L, 0);
        }
    }
    const bool want_pooled = pooled && (pooled[0] || (n > 1 && pooled[1]));
    const bool want_hidden = ctx || tap;
    float *hidden = want_hidden ? sdw_xmalloc((size_t)n * L * W * sizeof(float)) : NULL;
    float *pool = want_pooled ? sdw_xmalloc((size_t)n * P * sizeof(float)) : NULL;
    sdw_status s = sdw_clip_text_forward(p->enc, ids, n, L, &p->params, hidden, pool, err);
    for (int k = 0; k < n && s == SDW_OK; k++) {
        const float *hk = hidden ? hidden + (size_t)k * L * W : NULL;
        const char *state = state_name(&p->params);
        if (tap && state) {
            snprintf(name, sizeof name, "%s.%s.%s", p->tap, which[k], state);
            tap_tensor(tap, tap_user, name, hk, 3, 1, L, W);
        }
        if (pooled && pooled[k]) {
            memcpy(pooled[k], pool + (size_t)k * P, (size_t)P * sizeof(float));
            if (tap) {
                snprintf(name, sizeof name, "%s.%s.pooled", p->tap, which[k]);
                tap_tensor(tap, tap_user, name, pooled[k], 2, 1, P, 0);
            }
        }
        if (ctx)
            for (int i = 0; i < L; i++)
                memcpy(ctx[k] + (size_t)i * ld + col, hk + (size_t)i * W, (size_t)W * sizeof(float));
    }
    free(pool);
    free(hidden);
    return s;
}
