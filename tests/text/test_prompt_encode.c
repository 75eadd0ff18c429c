/* How a CLIP encoder reads prompts (text/clip_prompt.h) on the tiny models' text encoders:
 * AUTOMATIC1111's 75-token chunks, BREAK, the comma backtrack, emphasis rescaled per window,
 * the pad after the first EOS, clip skip, textual-inversion embeddings in windows. Expected
 * values are written from the rules: the ids from the tokenizer's plain output laid out by
 * hand, the states from sdw_clip_text_forward on those ids (the encoder the goldens check),
 * weighted by the formula. */
#include "sdw_test.h"

#include "io/safetensors.h"
#include "text/clip_prompt.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOL 1e-5

typedef struct te {
    sdw_st_file *f;
    sdw_clip_prompt p;
} te;

static void te_free(te *t) {
    sdw_clip_prompt_deinit(&t->p);
    sdw_st_close(t->f);
}

/* A diffusers folder's tokenizer and text encoder as an sdw_clip_prompt (default state). */
static sdw_status te_load(const char *model, const char *tok, const char *enc, te *t,
                          sdw_error *err) {
    memset(t, 0, sizeof *t);
    sdw_clip_text_config cfg;
    sdw_status s;
    if ((s = sdw_clip_tokenizer_load(sdw_test_path("models/%s/%s", model, tok), &t->p.tokenizer,
                                     err)) ||
        (s = sdw_st_open(sdw_test_path("models/%s/%s/model.safetensors", model, enc), &t->f,
                         err)) ||
        (s = sdw_clip_text_config_from_json(sdw_test_path("models/%s/%s/config.json", model, enc),
                                            &cfg, err)))
        return s;
    t->p.pad_id = sdw_clip_tokenizer_pad(t->p.tokenizer);
    t->p.w = sdw_weights_create(t->f, "", NULL, NULL);
    t->p.params = sdw_clip_text_params_default();
    snprintf(t->p.tap, sizeof t->p.tap, "te");
    return sdw_clip_text_create(t->p.w, &cfg, &t->p.enc, err);
}

/* The tap: the last input_ids seen, as ints. */
typedef struct seen {
    int32_t ids[SDW_CLIP_MAX_CHUNKS * SDW_CLIP_WINDOW];
    int n_ids;
} seen;

static void tap(void *user, const char *name, const float *data, int n_dims,
                const int64_t *shape) {
    seen *s = user;
    if (!strstr(name, "input_ids")) return;
    s->n_ids = (int)shape[1];
    for (int i = 0; i < s->n_ids; i++) s->ids[i] = (int32_t)data[i];
}

/* One prompt encoded with opts: its encoding and ids. */
static sdw_status encode(const te *t, const sdw_clip_prompt_opts *o, const char *prompt,
                         sdw_clip_encoding *e, seen *ids, sdw_error *err) {
    const char *prompts[1] = {prompt}, *which[1] = {"cond"};
    bool cut = false;
    memset(e, 0, sizeof *e);
    return sdw_clip_prompt_encode_chunks(&t->p, o, 1, prompts, which, true, true, e, &cut, tap,
                                         ids, err);
}

/* The id of a one-token word. */
static int32_t id_of(const te *t, const char *word) {
    int32_t *ids;
    int n;
    if (sdw_clip_tokenize(t->p.tokenizer, word, &ids, &n, NULL) || n != 3) return -1;
    int32_t id = ids[1];
    free(ids);
    return id;
}

/* Window w of ids[] encoded alone, default params (or p), into out [77, W]. */
static void forward_window(const te *t, const int32_t *ids, const sdw_clip_text_params *p,
                           float *out) {
    sdw_error err = {0};
    sdw_clip_text_params q = p ? *p : t->p.params;
    SDW_ASSERT(sdw_clip_text_forward(t->p.enc, ids, 1, SDW_CLIP_WINDOW, &q, out, NULL, &err) ==
               SDW_OK);
}

/* ids of a window: BOS, the tokens, EOS up to 77 (SD 1.x pads with EOS). */
static void window(const te *t, const int32_t *tokens, int n, int32_t *out) {
    const int32_t bos = sdw_clip_tokenizer_bos(t->p.tokenizer), eos = sdw_clip_tokenizer_eos(t->p.tokenizer);
    out[0] = bos;
    for (int i = 0; i < n; i++) out[1 + i] = tokens[i];
    for (int i = n + 1; i < SDW_CLIP_WINDOW; i++) out[i] = eos;
}

static char *repeat(const char *word, int n) {
    char *s = calloc((size_t)n * (strlen(word) + 1) + 1, 1); /* n times "word ", and the NUL */
    for (int i = 0; i < n; i++) {
        strcat(s, word);
        strcat(s, " ");
    }
    return s;
}

/* 80 tokens: two windows, 75 + 5, each encoded alone; the plain reading cuts at 75. */
static void test_long_prompt_chunks(void) {
    te t;
    sdw_error err = {0};
    ASSERT_OK(te_load("tiny-sd15", "tokenizer", "text_encoder", &t, &err), &err);
    const int32_t a = id_of(&t, "a");
    char *prompt = repeat("a", 80);
    int32_t toks[80], want[2 * SDW_CLIP_WINDOW];
    for (int i = 0; i < 80; i++) toks[i] = a;
    window(&t, toks, 75, want);
    window(&t, toks, 5, want + SDW_CLIP_WINDOW);
    const sdw_clip_prompt_opts o = {.syntax = true};
    sdw_clip_encoding e;
    seen s;
    sdw_status st = encode(&t, &o, prompt, &e, &s, &err);
    float ref[2][SDW_CLIP_WINDOW * 32];
    forward_window(&t, want, NULL, ref[0]);
    forward_window(&t, want + SDW_CLIP_WINDOW, NULL, ref[1]);
    ASSERT_OK(st, &err);
    ASSERT_EQ_INT(e.n_chunks, 2);
    ASSERT_EQ_INT(s.n_ids, 2 * SDW_CLIP_WINDOW);
    ASSERT_TRUE(!memcmp(s.ids, want, sizeof want));
    ASSERT_CLOSE_REL(e.hidden, ref[0], SDW_CLIP_WINDOW * 32, TOL, "window 0");
    ASSERT_CLOSE_REL(e.hidden + SDW_CLIP_WINDOW * 32, ref[1], SDW_CLIP_WINDOW * 32, TOL,
                     "window 1");
    /* pooled: the first window's, at its EOS */
    float pooled[32];
    sdw_clip_text_params q = t.p.params;
    SDW_ASSERT(sdw_clip_text_forward(t.p.enc, want, 1, SDW_CLIP_WINDOW, &q, NULL, pooled, &err) ==
               SDW_OK);
    ASSERT_CLOSE_REL(e.pooled, pooled, 32, TOL, "pooled");
    sdw_clip_encoding_deinit(&e);
    /* plain: one window, cut (and said so) */
    const char *prompts[1] = {prompt}, *which[1] = {"cond"};
    bool cut = false;
    ASSERT_OK(sdw_clip_prompt_encode_chunks(&t.p, NULL, 1, prompts, which, true, false, &e, &cut,
                                            tap, &s, &err),
              &err);
    ASSERT_TRUE(cut);
    ASSERT_EQ_INT(e.n_chunks, 1);
    ASSERT_TRUE(!memcmp(s.ids, want, SDW_CLIP_WINDOW * sizeof *want));
    sdw_clip_encoding_deinit(&e);
    /* the windows alone (what `sdw tokenize` shows), without an encoder run */
    int32_t *wids = NULL;
    float *wm = NULL;
    int nw = 0;
    ASSERT_OK(sdw_clip_prompt_windows(&t.p, &o, prompt, &wids, &wm, &nw, &cut, &err), &err);
    const bool same = nw == 2 && !memcmp(wids, want, sizeof want) && wm[1] == 1.0f;
    free(wids);
    free(wm);
    ASSERT_TRUE(same && !cut);
    /* beyond max_chunks: cut */
    const sdw_clip_prompt_opts one = {.syntax = true, .max_chunks = 1};
    cut = false;
    ASSERT_OK(sdw_clip_prompt_encode_chunks(&t.p, &one, 1, prompts, which, true, false, &e, &cut,
                                            NULL, NULL, &err),
              &err);
    ASSERT_TRUE(cut && e.n_chunks == 1);
    sdw_clip_encoding_deinit(&e);
    free(prompt);
    te_free(&t);
}

/* BREAK ends a window; a BREAK first gives an empty window; nothing after it adds none. */
static void test_break_windows(void) {
    te t;
    sdw_error err = {0};
    ASSERT_OK(te_load("tiny-sd15", "tokenizer", "text_encoder", &t, &err), &err);
    const int32_t a = id_of(&t, "a"), cat = id_of(&t, "cat"), dog = id_of(&t, "dog");
    const sdw_clip_prompt_opts o = {.syntax = true};
    sdw_clip_encoding e;
    seen s;
    int32_t want[3 * SDW_CLIP_WINDOW];
    window(&t, (int32_t[]){a, cat}, 2, want);
    window(&t, (int32_t[]){a, dog}, 2, want + SDW_CLIP_WINDOW);
    ASSERT_OK(encode(&t, &o, "a cat BREAK a dog", &e, &s, &err), &err);
    ASSERT_EQ_INT(e.n_chunks, 2);
    ASSERT_TRUE(!memcmp(s.ids, want, 2 * SDW_CLIP_WINDOW * sizeof *want));
    sdw_clip_encoding_deinit(&e);
    window(&t, NULL, 0, want);
    window(&t, (int32_t[]){cat}, 1, want + SDW_CLIP_WINDOW);
    ASSERT_OK(encode(&t, &o, "BREAK cat BREAK", &e, &s, &err), &err);
    ASSERT_EQ_INT(e.n_chunks, 2); /* the last BREAK closes "cat"; nothing follows */
    ASSERT_TRUE(!memcmp(s.ids, want, 2 * SDW_CLIP_WINDOW * sizeof *want));
    sdw_clip_encoding_deinit(&e);
    te_free(&t);
}

/* A full window moves the tokens after a comma within its last 20 to the next one. */
static void test_comma_backtrack(void) {
    te t;
    sdw_error err = {0};
    ASSERT_OK(te_load("tiny-sd15", "tokenizer", "text_encoder", &t, &err), &err);
    const int32_t a = id_of(&t, "a"), b = id_of(&t, "b"), comma = id_of(&t, ",");
    const sdw_clip_prompt_opts o = {.syntax = true};
    sdw_clip_encoding e;
    seen s;
    /* 70 a, ",", 10 b: the window fills at the 5th b; the comma is 5 back -> 4 b move */
    char *as = repeat("a", 70), *bs = repeat("b", 10), prompt[512];
    snprintf(prompt, sizeof prompt, "%s, %s", as, bs);
    int32_t first[71], second[10], want[2 * SDW_CLIP_WINDOW];
    for (int i = 0; i < 70; i++) first[i] = a;
    first[70] = comma;
    for (int i = 0; i < 10; i++) second[i] = b;
    window(&t, first, 71, want);
    window(&t, second, 10, want + SDW_CLIP_WINDOW);
    ASSERT_OK(encode(&t, &o, prompt, &e, &s, &err), &err);
    ASSERT_EQ_INT(e.n_chunks, 2);
    ASSERT_TRUE(!memcmp(s.ids, want, sizeof want));
    sdw_clip_encoding_deinit(&e);
    /* 50 a, ",", 30 a: the comma is 25 back when the window fills: no move */
    free(as);
    free(bs);
    as = repeat("a", 50);
    bs = repeat("a", 30);
    snprintf(prompt, sizeof prompt, "%s, %s", as, bs);
    int32_t all[81];
    for (int i = 0; i < 81; i++) all[i] = i == 50 ? comma : a;
    window(&t, all, 75, want);
    window(&t, all + 75, 6, want + SDW_CLIP_WINDOW);
    ASSERT_OK(encode(&t, &o, prompt, &e, &s, &err), &err);
    ASSERT_TRUE(!memcmp(s.ids, want, sizeof want));
    sdw_clip_encoding_deinit(&e);
    free(as);
    free(bs);
    te_free(&t);
}

/* z·w rescaled to the mean of z, per window: "(cat:1.5)" against the rule on the plain state. */
static void test_emphasis_rule(void) {
    te t;
    sdw_error err = {0};
    ASSERT_OK(te_load("tiny-sd15", "tokenizer", "text_encoder", &t, &err), &err);
    enum { L = SDW_CLIP_WINDOW, W = 32 };
    const int32_t a = id_of(&t, "a"), cat = id_of(&t, "cat");
    int32_t ids[L];
    window(&t, (int32_t[]){a, cat}, 2, ids);
    float z[L * W], ref[L * W];
    forward_window(&t, ids, NULL, z);
    double before = 0, after = 0;
    for (int i = 0; i < L * W; i++) {
        const double m = i / W == 2 ? 1.5 : 1.0;
        before += z[i];
        after += z[i] * m;
    }
    for (int i = 0; i < L * W; i++) ref[i] = (float)(z[i] * (i / W == 2 ? 1.5 : 1.0) * before / after);
    const sdw_clip_prompt_opts o = {.syntax = true};
    sdw_clip_encoding e;
    seen s;
    ASSERT_OK(encode(&t, &o, "a (cat:1.5)", &e, &s, &err), &err);
    ASSERT_TRUE(!memcmp(s.ids, ids, sizeof ids));
    ASSERT_CLOSE_REL(e.hidden, ref, L * W, TOL, "weighted");
    /* the pooled output is not weighted */
    float pooled[W];
    sdw_clip_text_params q = t.p.params;
    SDW_ASSERT(sdw_clip_text_forward(t.p.enc, ids, 1, L, &q, NULL, pooled, &err) == SDW_OK);
    ASSERT_CLOSE_REL(e.pooled, pooled, W, TOL, "pooled");
    sdw_clip_encoding_deinit(&e);
    /* the plain reading keeps the brackets as text */
    ASSERT_OK(encode(&t, NULL, "a (cat:1.5)", &e, &s, &err), &err);
    ASSERT_TRUE(s.ids[2] != cat);
    sdw_clip_encoding_deinit(&e);
    /* window by window: weights in the second window leave the first as encoded alone */
    char *as = repeat("a", 75), prompt[512];
    snprintf(prompt, sizeof prompt, "%s [cat]", as);
    free(as);
    ASSERT_OK(encode(&t, &o, prompt, &e, &s, &err), &err);
    ASSERT_EQ_INT(e.n_chunks, 2);
    forward_window(&t, s.ids, NULL, z);
    ASSERT_CLOSE_REL(e.hidden, z, L * W, TOL, "unweighted window");
    forward_window(&t, s.ids + L, NULL, z);
    before = after = 0;
    const double m = 1 / 1.1;
    for (int i = 0; i < L * W; i++) {
        before += z[i];
        after += z[i] * (i / W == 1 ? (float)m : 1.0);
    }
    for (int i = 0; i < L * W; i++)
        ref[i] = (float)(z[i] * (i / W == 1 ? (float)m : 1.0) * before / after);
    ASSERT_CLOSE_REL(e.hidden + L * W, ref, L * W, TOL, "weighted window");
    sdw_clip_encoding_deinit(&e);
    te_free(&t);
}

/* An encoder padding with 0 (SD 2.x): everything after a window's first EOS is the pad. */
static void test_pad_after_eos(void) {
    te t;
    sdw_error err = {0};
    ASSERT_OK(te_load("tiny-sd2", "tokenizer", "text_encoder", &t, &err), &err);
    ASSERT_EQ_INT(t.p.pad_id, 0);
    const int32_t a = id_of(&t, "a"), eos = sdw_clip_tokenizer_eos(t.p.tokenizer);
    const sdw_clip_prompt_opts o = {.syntax = true};
    sdw_clip_encoding e;
    seen s;
    ASSERT_OK(encode(&t, &o, "a a", &e, &s, &err), &err);
    ASSERT_EQ_INT(s.ids[1], a);
    ASSERT_EQ_INT(s.ids[2], a);
    ASSERT_EQ_INT(s.ids[3], eos);
    for (int i = 4; i < SDW_CLIP_WINDOW; i++) ASSERT_EQ_INT(s.ids[i], 0);
    sdw_clip_encoding_deinit(&e);
    /* "!" is text in A1111's reading (its BPE token), the pad token in the plain one */
    ASSERT_OK(encode(&t, &o, "a!!", &e, &s, &err), &err);
    const int32_t bang2 = s.ids[2];
    sdw_clip_encoding_deinit(&e);
    ASSERT_OK(encode(&t, NULL, "a!!", &e, &s, &err), &err);
    ASSERT_EQ_INT(s.ids[2], 0);
    ASSERT_EQ_INT(s.ids[3], 0);
    ASSERT_TRUE(bang2 != 0);
    sdw_clip_encoding_deinit(&e);
    te_free(&t);
}

/* clip_skip N: hidden_states[-N] of the loaded encoder, never past the default, its final
 * norm kept; beyond the layers: an error. */
static void test_clip_skip(void) {
    te t;
    sdw_error err = {0};
    ASSERT_OK(te_load("tiny-sd15", "tokenizer", "text_encoder", &t, &err), &err);
    enum { L = SDW_CLIP_WINDOW, W = 32 };
    int32_t ids[L];
    window(&t, (int32_t[]){id_of(&t, "a"), id_of(&t, "cat")}, 2, ids);
    float ref[L * W];
    sdw_clip_encoding e;
    seen s;
    for (int n = 0; n <= 5; n++) {
        sdw_clip_text_params q = t.p.params;
        q.skip_layers = n > 1 ? n - 1 : 0; /* SD 1.x: hidden_states[-n] + final_layer_norm */
        forward_window(&t, ids, &q, ref);
        const sdw_clip_prompt_opts o = {.clip_skip = n};
        ASSERT_OK(encode(&t, &o, "a cat", &e, &s, &err), &err);
        ASSERT_CLOSE_REL(e.hidden, ref, L * W, TOL, "clip skip");
        sdw_clip_encoding_deinit(&e);
    }
    const sdw_clip_prompt_opts deep = {.clip_skip = 6};
    ASSERT_STATUS(encode(&t, &deep, "a cat", &e, &s, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "5 layers");
    te_free(&t);
    /* SDXL's first encoder: penultimate, no final norm; N = 1, 2 are that, N = 3 one more */
    ASSERT_OK(te_load("tiny-sdxl", "tokenizer", "text_encoder", &t, &err), &err);
    t.p.params.skip_layers = 1;
    t.p.params.final_norm = false;
    window(&t, (int32_t[]){id_of(&t, "a"), id_of(&t, "cat")}, 2, ids);
    for (int n = 0; n <= 4; n++) {
        sdw_clip_text_params q = t.p.params;
        q.skip_layers = n > 2 ? n - 1 : 1;
        forward_window(&t, ids, &q, ref);
        const sdw_clip_prompt_opts o = {.clip_skip = n};
        ASSERT_OK(encode(&t, &o, "a cat", &e, &s, &err), &err);
        ASSERT_CLOSE_REL(e.hidden, ref, L * W, TOL, "clip skip (SDXL)");
        sdw_clip_encoding_deinit(&e);
    }
    te_free(&t);
}

/* The batch layout: repetition (exact for cross-attention) within ComfyUI's limit, else the
 * empty prompt's windows. */
static void test_batch_layout(void) {
    ASSERT_EQ_INT(sdw_clip_batch_chunks(1, 1, true), 1);
    ASSERT_EQ_INT(sdw_clip_batch_chunks(1, 3, true), 3);
    ASSERT_EQ_INT(sdw_clip_batch_chunks(2, 3, true), 6);
    ASSERT_EQ_INT(sdw_clip_batch_chunks(3, 4, true), 12);
    ASSERT_EQ_INT(sdw_clip_batch_chunks(4, 5, true), 5); /* lcm 20 = 5 x 4: too many */
    ASSERT_EQ_INT(sdw_clip_batch_chunks(2, 3, false), 3);
    enum { L = SDW_CLIP_WINDOW, W = 2 };
    float two[2 * L * W], none[L * W], out[6 * L * W];
    for (int i = 0; i < 2 * L * W; i++) two[i] = (float)i;
    for (int i = 0; i < L * W; i++) none[i] = -1.0f;
    const sdw_clip_encoding e = {2, two, NULL}, empty = {1, none, NULL};
    sdw_clip_encoding_place(&e, 6, true, NULL, W, out, W, 0);
    for (int c = 0; c < 6; c++)
        ASSERT_TRUE(!memcmp(out + c * L * W, two + (c % 2) * L * W, sizeof(float) * L * W));
    sdw_clip_encoding_place(&e, 3, false, &empty, W, out, W, 0);
    ASSERT_TRUE(!memcmp(out, two, sizeof two));
    ASSERT_TRUE(!memcmp(out + 2 * L * W, none, sizeof none));
}

/* ---- textual inversion ---- */

/* Writes an embedding file name (in dir) holding tensors (name, rows x width) of values v0 + k. */
static void write_emb(const char *dir, const char *file, int n_t, const char *const *names,
                      const int *rows, const int *width, float v0) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    sdw_st_writer *w;
    sdw_error err = {0};
    SDW_ASSERT(sdw_st_writer_create(path, &w, &err) == SDW_OK);
    for (int i = 0; i < n_t; i++)
        sdw_st_writer_add(w, names[i], SDW_DTYPE_F32, 2, (int64_t[]){rows[i], width[i]});
    SDW_ASSERT(sdw_st_writer_begin(w, &err) == SDW_OK);
    for (int i = 0; i < n_t; i++) {
        float *v = malloc(sizeof(float) * (size_t)(rows[i] * width[i]));
        for (int k = 0; k < rows[i] * width[i]; k++) v[k] = v0 + 0.01f * (float)(k % 97) - 0.3f * i;
        SDW_ASSERT(sdw_st_writer_write(w, v, &err) == SDW_OK);
        free(v);
    }
    SDW_ASSERT(sdw_st_writer_finish(w, &err) == SDW_OK);
}

/* The fixture's embedding as <dir>/tinyemb.safetensors. */
static const char *emb_dir(void) {
    static char dir[512];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/emb", sdw_test_tmpdir());
    SDW_ASSERT(mkdir(dir, 0700) == 0);
    size_t n;
    void *data = sdw_test_read_file(sdw_test_path("models/tiny-sd15-embedding-tinyemb.safetensors"),
                                    &n);
    SDW_ASSERT(data);
    char path[600];
    snprintf(path, sizeof path, "%s/tinyemb.safetensors", dir);
    FILE *f = fopen(path, "wb");
    SDW_ASSERT(f && fwrite(data, 1, n, f) == n && fclose(f) == 0);
    free(data);
    /* a second, wider one (for another model) and an SDXL-style pair */
    write_emb(dir, "wide.safetensors", 1, (const char *[]){"emb_params"}, (int[]){1}, (int[]){48},
              0.5f);
    write_emb(dir, "pair.safetensors", 2, (const char *[]){"clip_g", "clip_l"}, (int[]){3, 3},
              (int[]){32, 32}, 0.25f);
    return dir;
}

/* The embedding's vectors where its name is, in both readings: ids 49408 + its numbering in
 * the folder (pair: 0..2, tinyemb: 3, 4 — names sorted), the state equal to the encoder's on
 * those rows; `embedding:NAME` the same; unknown names and other models' embeddings refused. */
static void test_embedding_tokens(void) {
    te t;
    sdw_error err = {0};
    ASSERT_OK(te_load("tiny-sd15", "tokenizer", "text_encoder", &t, &err), &err);
    sdw_embeddings *db = NULL;
    ASSERT_OK(sdw_embeddings_load(emb_dir(), &db, &err), &err);
    const int i_tiny = sdw_embeddings_find(db, "tinyemb");
    ASSERT_TRUE(i_tiny >= 0);
    ASSERT_EQ_INT(sdw_embeddings_offset(db, i_tiny), 3);
    const float *rows;
    int nv;
    ASSERT_OK(sdw_embeddings_vectors(db, i_tiny, NULL, 32, &rows, &nv, &err), &err);
    ASSERT_EQ_INT(nv, 2);
    enum { L = SDW_CLIP_WINDOW, W = 32 };
    const int32_t a = id_of(&t, "a"), cat = id_of(&t, "cat");
    const int32_t V = 49408;
    /* what the encoder must see: a, the two rows, cat (compact rows after the vocabulary) */
    int32_t fwd[L];
    window(&t, (int32_t[]){a, V, V + 1, cat}, 4, fwd);
    float ref[L * W];
    sdw_clip_text_params q = t.p.params;
    q.extra_rows = rows;
    q.n_extra = 2;
    forward_window(&t, fwd, &q, ref);
    const char *prompts[] = {"a tinyemb cat", "a embedding:tinyemb cat", "a embedding:tinyemb, cat"};
    for (int r = 0; r < 2; r++)
        for (size_t k = 0; k < 3; k++) {
            const sdw_clip_prompt_opts o = {.syntax = r == 1, .embeddings = db};
            sdw_clip_encoding e;
            seen s;
            ASSERT_OK(encode(&t, &o, prompts[k], &e, &s, &err), &err);
            ASSERT_EQ_INT(s.ids[1], a);
            ASSERT_EQ_INT(s.ids[2], V + 3);
            ASSERT_EQ_INT(s.ids[3], V + 4);
            if (k < 2) {
                ASSERT_EQ_INT(s.ids[4], cat);
                ASSERT_CLOSE_REL(e.hidden, ref, L * W, TOL, "embedding");
            }
            sdw_clip_encoding_deinit(&e);
        }
    /* A1111's reading keeps an embedding in one window: 74 tokens, then its 2 vectors */
    char *as = repeat("a", 74), prompt[512];
    snprintf(prompt, sizeof prompt, "%s tinyemb", as);
    free(as);
    const sdw_clip_prompt_opts o = {.syntax = true, .embeddings = db};
    sdw_clip_encoding e;
    seen s;
    ASSERT_OK(encode(&t, &o, prompt, &e, &s, &err), &err);
    ASSERT_EQ_INT(e.n_chunks, 2);
    ASSERT_EQ_INT(s.ids[75], sdw_clip_tokenizer_eos(t.p.tokenizer));
    ASSERT_EQ_INT(s.ids[L + 1], V + 3);
    ASSERT_EQ_INT(s.ids[L + 2], V + 4);
    sdw_clip_encoding_deinit(&e);
    /* "tinyemb" inside another word is no embedding */
    ASSERT_OK(encode(&t, &o, "tinyembx", &e, &s, &err), &err);
    ASSERT_TRUE(s.ids[1] < V && s.ids[2] < V);
    sdw_clip_encoding_deinit(&e);
    /* an SDXL file on a one-encoder model: the tensor of its width (both are 32 here: the
     * first role, clip_l) */
    ASSERT_OK(encode(&t, &o, "pair", &e, &s, &err), &err);
    ASSERT_EQ_INT(s.ids[1], V);
    ASSERT_EQ_INT(s.ids[3], V + 2);
    sdw_clip_encoding_deinit(&e);
    /* refusals, nothing written */
    memset(&e, 0, sizeof e);
    ASSERT_STATUS(encode(&t, &o, "a embedding:nothere cat", &e, &s, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "unknown embedding 'nothere'");
    ASSERT_STR_CONTAINS(err.msg, "tinyemb");
    ASSERT_TRUE(e.hidden == NULL);
    ASSERT_STATUS(encode(&t, &o, "a wide cat", &e, &s, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "another model");
    /* without a folder, embedding: is text */
    const sdw_clip_prompt_opts bare = {.syntax = true};
    ASSERT_OK(encode(&t, &bare, "a embedding:nothere tinyemb", &e, &s, &err), &err);
    for (int i = 0; i < s.n_ids; i++) ASSERT_TRUE(s.ids[i] < V);
    sdw_clip_encoding_deinit(&e);
    sdw_embeddings_destroy(db);
    te_free(&t);
}

/* golden/tiny-sd15/txt2img-euler-embedding's text stages, pooled outputs included: diffusers'
 * ids (49408, 49409 for the added tokens) and pooling at their argmax in the plain reading;
 * A1111's reading gives the same ids and states and pools at the EOS. */
static void test_embedding_golden(void) {
    sdw_golden *g = sdw_golden_open("tiny-sd15/txt2img-euler-embedding");
    ASSERT_TRUE(g != NULL);
    te t;
    sdw_error err = {0};
    sdw_embeddings *db = NULL;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/golden", sdw_test_tmpdir());
    SDW_ASSERT(mkdir(dir, 0700) == 0);
    size_t n;
    void *data = sdw_test_read_file(sdw_test_path("models/tiny-sd15-embedding-tinyemb.safetensors"),
                                    &n);
    char path[700];
    snprintf(path, sizeof path, "%s/tinyemb.safetensors", dir);
    FILE *f = fopen(path, "wb");
    SDW_ASSERT(data && f && fwrite(data, 1, n, f) == n && fclose(f) == 0);
    free(data);
    sdw_status s = te_load("tiny-sd15", "tokenizer", "text_encoder", &t, &err);
    if (!s) s = sdw_embeddings_load(dir, &db, &err);
    if (s) sdw_golden_close(g);
    ASSERT_OK(s, &err);
    const char *prompts[2] = {"a photo of tinyemb, detailed", ""}, *which[2] = {"cond", "uncond"};
    for (int syntax = 0; syntax < 2; syntax++) {
        sdw_stage_check c = {.g = g, .tol = 1e-5};
        const sdw_clip_prompt_opts o = {.syntax = syntax, .embeddings = db};
        sdw_clip_encoding e[2];
        bool cut = false;
        s = sdw_clip_prompt_encode_chunks(&t.p, &o, 2, prompts, which, true, true, e, &cut,
                                          syntax ? NULL : sdw_stage_tap, &c, &err);
        if (s) break;
        if (!syntax) {
            fprintf(stderr, "  plain: %d stages, worst %.2g (%s)\n", c.n_compared, c.worst,
                    c.worst_name);
            ASSERT_EQ_INT(c.n_compared, 6); /* ids, state, pooled x cond/uncond */
            ASSERT_EQ_INT(c.n_failed, 0);
        } else {
            const sdw_golden_tensor *ref = sdw_golden_get(g, "te.cond.last_hidden_state");
            ASSERT_CLOSE_REL(e[0].hidden, (const float *)ref->data, ref->n, 1e-5, "A1111 state");
            /* pooled at the first EOS: position 8 (BOS a photo of v0 v1 , detailed EOS) */
            const sdw_golden_tensor *ids = sdw_golden_get(g, "te.cond.input_ids");
            ASSERT_EQ_INT(((const int32_t *)ids->data)[8], 49407);
            sdw_clip_text_params q = t.p.params;
            const float *rows;
            int nv;
            ASSERT_OK(sdw_embeddings_vectors(db, 0, NULL, 32, &rows, &nv, &err), &err);
            q.extra_rows = rows;
            q.n_extra = nv;
            q.pool_id = 49407;
            float pooled[32];
            ASSERT_OK(sdw_clip_text_forward(t.p.enc, ids->data, 1, 77, &q, NULL, pooled, &err),
                      &err);
            ASSERT_CLOSE_REL(e[0].pooled, pooled, 32, 1e-6, "A1111 pooled");
            const sdw_golden_tensor *gp = sdw_golden_get(g, "te.cond.pooled");
            ASSERT_TRUE(sdw_test_rel_err(e[0].pooled, gp->data, 32) > 1e-2); /* not argmax's */
        }
        for (int k = 0; k < 2; k++) sdw_clip_encoding_deinit(&e[k]);
    }
    sdw_golden_close(g);
    sdw_embeddings_destroy(db);
    te_free(&t);
    ASSERT_OK(s, &err);
}

/* SDXL embeddings: each encoder takes the tensor of its role. */
static void test_embedding_roles(void) {
    sdw_embeddings *db = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_embeddings_load(emb_dir(), &db, &err), &err);
    const int i = sdw_embeddings_find(db, "pair");
    ASSERT_TRUE(i >= 0);
    sdw_embedding_info info = sdw_embeddings_info(db, i);
    ASSERT_TRUE(info.two_encoders && info.n_vectors == 3 && info.width == 64);
    const float *l, *g;
    int n;
    ASSERT_OK(sdw_embeddings_vectors(db, i, "clip_l", 32, &l, &n, &err), &err);
    ASSERT_OK(sdw_embeddings_vectors(db, i, "clip_g", 32, &g, &n, &err), &err);
    /* write_emb: tensor k holds v0 + 0.01 (j % 97) - 0.3 k; clip_g was written first */
    ASSERT_TRUE(fabsf(g[0] - 0.25f) < 1e-6f && fabsf(l[0] - (0.25f - 0.3f)) < 1e-6f);
    ASSERT_STATUS(sdw_embeddings_vectors(db, i, "clip_g", 1280, &g, &n, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "clip_g");
    const int w = sdw_embeddings_find(db, "wide");
    ASSERT_OK(sdw_embeddings_vectors(db, w, "clip_l", 48, &l, &n, &err), &err);
    ASSERT_STATUS(sdw_embeddings_vectors(db, w, "clip_g", 32, &g, &n, &err), SDW_E_INVALID_ARG);
    sdw_embeddings_destroy(db);
}

int main(void) {
    RUN(test_long_prompt_chunks);
    RUN(test_break_windows);
    RUN(test_comma_backtrack);
    RUN(test_emphasis_rule);
    RUN(test_pad_after_eos);
    RUN(test_clip_skip);
    RUN(test_batch_layout);
    RUN(test_embedding_tokens);
    RUN(test_embedding_golden);
    RUN(test_embedding_roles);
    return sdw_test_finish();
}
