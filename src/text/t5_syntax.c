/* text/t5_syntax.c — see t5_syntax.h. */
#include "text/t5_syntax.h"

#include "core/common.h"
#include "text/prompt_parser.h"

#include <string.h>

/* Prompt k's window: ids [L] and weights [L]; *cut when tokens were dropped. */
static sdw_status window(const sdw_t5_prompt *p, const char *prompt, int L, int32_t *ids,
                         float *mult, bool *cut, sdw_error *err) {
    sdw_prompt_pieces pp;
    sdw_status s = sdw_prompt_parse(prompt, &pp, err);
    if (s) return s;
    const int32_t eos = sdw_t5_tokenizer_eos(p->tokenizer), pad = sdw_t5_tokenizer_pad(p->tokenizer);
    int n = 0;
    *cut = false;
    for (int i = 0; i < pp.n && !s; i++) {
        if (pp.v[i].is_break || !pp.v[i].text[0]) continue;
        int32_t *t;
        int k;
        if ((s = sdw_t5_tokenize(p->tokenizer, pp.v[i].text, &t, &k, err))) break;
        if (k > 0 && t[k - 1] == eos) k--; /* the EOS T5Tokenizer appends to every text */
        for (int j = 0; j < k; j++) {
            if (n == L - 1) { /* truncation=True: the first L-1 tokens, then EOS */
                *cut = true;
                break;
            }
            ids[n] = t[j];
            mult[n++] = (float)pp.v[i].weight;
        }
        free(t);
    }
    sdw_prompt_pieces_free(&pp);
    if (s) return s;
    if (n == 0 || ids[n - 1] != eos) { /* _add_eos_if_not_present */
        ids[n] = eos;
        mult[n++] = 1.0f;
    }
    for (; n < L; n++) {
        ids[n] = pad;
        mult[n] = 1.0f;
    }
    return SDW_OK;
}

sdw_status sdw_t5_prompt_encode_syntax(const sdw_t5_prompt *p, int n, const char *const *prompts,
                                       const char *const *which, int L, float *const *ctx, int ld,
                                       bool *truncated, sdw_text_tap_fn tap, void *tap_user,
                                       sdw_error *err) {
    const int W = sdw_t5_prompt_width(p);
    SDW_ASSERT(n >= 1 && n <= 2 && L >= 2 && ld >= W);
    int32_t *ids = sdw_xmalloc((size_t)n * L * sizeof *ids);
    float *mult = sdw_xmalloc((size_t)n * L * sizeof *mult);
    float *hidden = NULL;
    char name[96];
    sdw_status s = SDW_OK;
    for (int k = 0; k < n && !s; k++) {
        bool cut = false;
        s = window(p, prompts[k] ? prompts[k] : "", L, ids + (size_t)k * L, mult + (size_t)k * L,
                   &cut, err);
        if (s) break;
        if (cut)
            SDW_WARN("the %s prompt is longer than max_sequence_length %d T5 tokens: the rest is "
                     "truncated (see `sdw tokenize`)",
                     which[k], L);
        *truncated |= cut;
        if (tap) {
            float *f = sdw_xmalloc((size_t)L * sizeof *f);
            for (int i = 0; i < L; i++) f[i] = (float)ids[(size_t)k * L + i];
            snprintf(name, sizeof name, "%s.%s.input_ids", p->tap, which[k]);
            tap(tap_user, name, f, 2, (const int64_t[]){1, L});
            free(f);
        }
    }
    if (!s) {
        hidden = sdw_xmalloc((size_t)n * L * W * sizeof *hidden);
        s = sdw_t5_text_forward(p->enc, ids, n, L, hidden, err);
    }
    for (int k = 0; k < n && !s; k++)
        s = sdw_emphasis_apply(hidden + (size_t)k * L * W, L, W, mult + (size_t)k * L, err);
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
    free(mult);
    free(ids);
    return s;
}
