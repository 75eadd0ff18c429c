/* T5 reading AUTOMATIC1111's syntax (text/t5_syntax.h), on the tiny FLUX T5: a prompt without
 * markup is read exactly as the plain reading reads it; a weighted one gets its pieces'
 * tokens (each piece tokenized alone, without its EOS) and the emphasis rule on the window's
 * state. Expected values from the rules: ids from the tokenizer laid out by hand, states from
 * sdw_t5_text_forward, weighted by the formula. */
#include "sdw_test.h"

#include "io/safetensors.h"
#include "text/t5_syntax.h"

#include <stdlib.h>

enum { L = 16 };

typedef struct t5 {
    sdw_st_file *f;
    sdw_t5_prompt p;
} t5;

static sdw_status t5_load(t5 *t, sdw_error *err) {
    memset(t, 0, sizeof *t);
    sdw_t5_text_config cfg;
    sdw_status s;
    if ((s = sdw_t5_tokenizer_load(sdw_test_path("models/tiny-flux/tokenizer_2"), &t->p.tokenizer,
                                   err)) ||
        (s = sdw_st_open(sdw_test_path("models/tiny-flux/text_encoder_2/model.safetensors"), &t->f,
                         err)) ||
        (s = sdw_t5_text_config_load(sdw_test_path("models/tiny-flux/text_encoder_2/config.json"),
                                     &cfg, err)))
        return s;
    t->p.w = sdw_weights_create(t->f, "", NULL, NULL);
    snprintf(t->p.tap, sizeof t->p.tap, "te2");
    return sdw_t5_text_create(t->p.w, &cfg, &t->p.enc, err);
}

static void t5_free(t5 *t) {
    sdw_t5_prompt_deinit(&t->p);
    sdw_st_close(t->f);
}

typedef struct seen {
    int32_t ids[L];
} seen;

static void tap(void *user, const char *name, const float *data, int n_dims,
                const int64_t *shape) {
    if (!strstr(name, "input_ids")) return;
    for (int i = 0; i < L; i++) ((seen *)user)->ids[i] = (int32_t)data[i];
}

/* The tokens of text without T5's EOS. */
static int tokens(const t5 *t, const char *text, int32_t *out) {
    int32_t *ids;
    int n;
    SDW_ASSERT(sdw_t5_tokenize(t->p.tokenizer, text, &ids, &n, NULL) == SDW_OK);
    memcpy(out, ids, (size_t)(n - 1) * sizeof *out);
    free(ids);
    return n - 1;
}

static void test_plain_prompt_unchanged(void) {
    t5 t;
    sdw_error err = {0};
    ASSERT_OK(t5_load(&t, &err), &err);
    const int W = sdw_t5_prompt_width(&t.p);
    float *a = malloc(sizeof(float) * L * W), *b = malloc(sizeof(float) * L * W);
    const char *prompts[1] = {"a photo of a cat"}, *which[1] = {"cond"};
    bool cut = false;
    sdw_status s1 = sdw_t5_prompt_encode(&t.p, 1, prompts, which, L, &a, W, &cut, NULL, NULL, &err);
    sdw_status s2 =
        sdw_t5_prompt_encode_syntax(&t.p, 1, prompts, which, L, &b, W, &cut, NULL, NULL, &err);
    const bool same = !memcmp(a, b, sizeof(float) * L * W);
    free(a);
    free(b);
    t5_free(&t);
    ASSERT_OK(s1, &err);
    ASSERT_OK(s2, &err);
    ASSERT_TRUE(same);
}

static void test_weighted_prompt(void) {
    t5 t;
    sdw_error err = {0};
    ASSERT_OK(t5_load(&t, &err), &err);
    const int W = sdw_t5_prompt_width(&t.p);
    /* "a " (1), "red" (1.5), " cat" (1), then EOS and the pad */
    int32_t want[L];
    float m[L];
    int n = tokens(&t, "a ", want);
    for (int i = 0; i < n; i++) m[i] = 1.0f;
    int k = tokens(&t, "red", want + n);
    for (int i = n; i < n + k; i++) m[i] = 1.5f;
    n += k;
    k = tokens(&t, " cat", want + n);
    for (int i = n; i < n + k; i++) m[i] = 1.0f;
    n += k;
    want[n] = sdw_t5_tokenizer_eos(t.p.tokenizer);
    m[n++] = 1.0f;
    for (; n < L; n++) {
        want[n] = sdw_t5_tokenizer_pad(t.p.tokenizer);
        m[n] = 1.0f;
    }
    float *z = malloc(sizeof(float) * L * W), *ref = malloc(sizeof(float) * L * W);
    float *got = malloc(sizeof(float) * L * W);
    sdw_status s = sdw_t5_text_forward(t.p.enc, want, 1, L, z, &err);
    double before = 0, after = 0;
    for (int i = 0; i < L * W; i++) {
        before += z[i];
        after += (double)z[i] * m[i / W];
    }
    for (int i = 0; i < L * W; i++) ref[i] = (float)(z[i] * m[i / W] * before / after);
    const char *prompts[1] = {"a (red:1.5) cat BREAK"}, *which[1] = {"cond"};
    bool cut = false;
    seen sn;
    if (!s)
        s = sdw_t5_prompt_encode_syntax(&t.p, 1, prompts, which, L, &got, W, &cut, tap, &sn, &err);
    const double e = s ? 1 : sdw_test_rel_err(got, ref, (size_t)L * W);
    const bool ids_ok = !memcmp(sn.ids, want, sizeof want);
    free(z);
    free(ref);
    free(got);
    /* a long prompt is cut to L - 1 tokens and EOS */
    char longp[2048] = "";
    for (int i = 0; i < 40; i++) strcat(longp, "(cat) ");
    const char *lp[1] = {longp};
    float *h = malloc(sizeof(float) * L * W);
    sdw_status s2 = sdw_t5_prompt_encode_syntax(&t.p, 1, lp, which, L, &h, W, &cut, tap, &sn, &err);
    free(h);
    const int32_t eos = sdw_t5_tokenizer_eos(t.p.tokenizer);
    t5_free(&t);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(ids_ok);
    ASSERT_TRUE(e < 1e-5);
    ASSERT_OK(s2, &err);
    ASSERT_TRUE(cut);
    ASSERT_EQ_INT(sn.ids[L - 1], eos);
}

int main(void) {
    RUN(test_plain_prompt_unchanged);
    RUN(test_weighted_prompt);
    return sdw_test_finish();
}
