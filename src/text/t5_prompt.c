/* text/t5_prompt.c — see t5_prompt.h: FluxPipeline._get_t5_prompt_embeds (0.30.3) and
 * StableDiffusion3Pipeline._get_t5_prompt_embeds, which are the same but for the window. */
#include "text/t5_prompt.h"

#include "core/common.h"

#include <string.h>

void sdw_t5_prompt_deinit(sdw_t5_prompt *p) {
    if (!p) return;
    sdw_t5_text_destroy(p->enc);
    sdw_t5_tokenizer_destroy(p->tokenizer);
    sdw_weights_destroy(p->w);
    memset(p, 0, sizeof *p);
}

int sdw_t5_prompt_width(const sdw_t5_prompt *p) { return sdw_t5_text_get_config(p->enc)->d_model; }

sdw_status sdw_t5_prompt_encode(const sdw_t5_prompt *p, int n, const char *const *prompts,
                                const char *const *which, int L, float *const *ctx, int ld,
                                bool *truncated, sdw_text_tap_fn tap, void *tap_user,
                                sdw_error *err) {
    const int W = sdw_t5_prompt_width(p);
    SDW_ASSERT(n >= 1 && n <= 2 && L >= 1 && ld >= W);
    int32_t *ids = sdw_xmalloc((size_t)n * L * sizeof *ids);
    float *hidden = NULL;
    char name[96];
    sdw_status s = SDW_OK;
    for (int k = 0; k < n && !s; k++) {
        bool cut = false;
        s = sdw_t5_tokenize_window(p->tokenizer, prompts[k] ? prompts[k] : "", L,
                                   ids + (size_t)k * L, &cut, err);
        if (s) break;
        if (cut)
            SDW_WARN("the %s prompt is longer than max_sequence_length %d T5 tokens: the rest is "
                     "truncated (see `sdw tokenize`)",
                     which[k], L);
        *truncated |= cut;
        if (tap) {
            float *f = sdw_xmalloc((size_t)L * sizeof *f);
            for (int i = 0; i < L; i++)
                f[i] = (float)ids[(size_t)k * L + i];
            snprintf(name, sizeof name, "%s.%s.input_ids", p->tap, which[k]);
            tap(tap_user, name, f, 2, (const int64_t[]){1, L});
            free(f);
        }
    }
    if (!s) {
        hidden = sdw_xmalloc((size_t)n * L * W * sizeof *hidden);
        s = sdw_t5_text_forward(p->enc, ids, n, L, hidden, err);
    }
    for (int k = 0; k < n && !s; k++) {
        const float *hk = hidden + (size_t)k * L * W;
        if (tap) {
            snprintf(name, sizeof name, "%s.%s.last_hidden_state", p->tap, which[k]);
            tap(tap_user, name, hk, 3, (const int64_t[]){1, L, W});
        }
        for (int i = 0; i < L; i++)
            memcpy(ctx[k] + (size_t)i * ld, hk + (size_t)i * W, (size_t)W * sizeof(float));
    }
    free(hidden);
    free(ids);
    return s;
}
