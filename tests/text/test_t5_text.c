/* T5 encoder (transformers 4.30.2 T5EncoderModel) against the reference pipelines' goldens:
 * FLUX's text_encoder_2 (tiny-flux, tiny-flux-schnell) and SD3's text_encoder_3, from the
 * recorded input ids (no tokenizer needed); the relative-position buckets against an exact
 * integer derivation; config.json vs shapes; the bf16 path; bad input. */
#include "sdw_test.h"

#include "nn/nn.h"
#include "text/t5_text.h"

#include <jansson.h>
#include <stdlib.h>

/* The bar; observed 3.1e-6 (FLUX) and 2.5e-6 (SD3): f32 rounding only (torch 1.13 re-running
 * the FLUX case by hand differs from the golden by 6.6e-6 itself). */
#define TOL 1e-4
/* bf16 operands (8 significant bits) in every product, f32 elsewhere: measured 7.7e-3 on the
 * FLUX golden and 5.1e-3 on SD3's (AVX512-BF16 CPU); the bound is test_nn_backend's bf16 one. */
#define TOL_BF16 2e-2

typedef struct loaded {
    sdw_st_file *file;
    sdw_weights *ws;
    sdw_t5_text *enc;
} loaded;

static void unload(loaded *m) {
    sdw_t5_text_destroy(m->enc);
    sdw_weights_destroy(m->ws);
    sdw_st_close(m->file);
    memset(m, 0, sizeof *m);
}

/* Opens models/<dir>/model.safetensors with its config.json at precision p. */
static sdw_status load_folder(const char *dir, sdw_precision p, loaded *m, sdw_error *err) {
    sdw_t5_text_config cfg;
    sdw_status st = sdw_st_open(sdw_test_path("models/%s/model.safetensors", dir), &m->file, err);
    if (st) return st;
    m->ws = sdw_weights_create(m->file, "", NULL, NULL);
    sdw_weights_set_precision(m->ws, p);
    if ((st = sdw_t5_text_config_load(sdw_test_path("models/%s/config.json", dir), &cfg, err)))
        return st;
    return sdw_t5_text_create(m->ws, &cfg, &m->enc, err);
}

/* Runs the encoder on the golden's <te>.<which>.input_ids for each `which` (one batch) and
 * returns the relative error against the <te>.<which>.last_hidden_state rows; INFINITY when
 * something is missing or fails. */
static double golden_err(const char *model_case, const sdw_t5_text *enc, const char *te,
                         const char *const *which, int B) {
    sdw_golden *g = sdw_golden_open(model_case);
    if (!g) return INFINITY;
    int32_t *ids = NULL;
    float *out = NULL, *ref = NULL;
    double e = INFINITY;
    size_t L = 0, n_row = 0;
    char key[128];
    for (int b = 0; b < B; b++) {
        snprintf(key, sizeof key, "%s.%s.input_ids", te, which[b]);
        const sdw_golden_tensor *id = sdw_golden_get(g, key);
        snprintf(key, sizeof key, "%s.%s.last_hidden_state", te, which[b]);
        const sdw_golden_tensor *h = sdw_golden_get(g, key);
        if (!id || !h || strcmp(id->dtype, "int32") || id->n_dims != 2 || id->shape[0] != 1 ||
            h->n != id->n * (size_t)sdw_t5_text_get_config(enc)->d_model)
            goto done;
        if (b == 0) {
            L = id->n, n_row = h->n;
            ids = calloc(B * L, 4), out = calloc(B * n_row, 4), ref = calloc(B * n_row, 4);
        }
        if (id->n != L) goto done;
        memcpy(ids + b * L, id->data, L * 4);
        memcpy(ref + b * n_row, h->data, n_row * 4);
    }
    sdw_error err = {0};
    if (sdw_t5_text_forward(enc, ids, B, (int)L, out, &err) == SDW_OK)
        e = sdw_test_rel_err(out, ref, B * n_row);
    else
        fprintf(stderr, "  forward: %s\n", err.msg);
done:
    free(ids), free(out), free(ref);
    sdw_golden_close(g);
    return e;
}

static const char *const COND[] = {"cond"};

/* ---- relative position buckets ---- */

/* T5's 32 buckets / max distance 128, derived exactly: offsets below 8 in magnitude have a
 * bucket each; above, bucket 8 + k for the largest k with 2·log2(n/8) >= k, i.e. n² >= 64·2^k
 * (integers only), at most 15; keys after the query (rel > 0) use the upper 16. */
static int bucket_exact(int rel) {
    const int64_t n = rel < 0 ? -(int64_t)rel : rel;
    int b;
    if (n < 8)
        b = (int)n;
    else {
        int k = 0;
        while (k < 7 && n * n >= (int64_t)64 << (k + 1))
            k++;
        b = 8 + k;
    }
    return (rel > 0 ? 16 : 0) + b;
}

static void test_relative_buckets(void) {
    for (int rel = -4096; rel <= 4096; rel++)
        if (sdw_t5_relative_bucket(rel, 32, 128) != bucket_exact(rel)) {
            sdw_test_fail(__FILE__, __LINE__, "offset %d: bucket %d, want %d", rel,
                          sdw_t5_relative_bucket(rel, 32, 128), bucket_exact(rel));
            return;
        }
    /* the boundaries, as torch 1.13 computes them: exact integers at 16, 32, 64 */
    ASSERT_EQ_INT(sdw_t5_relative_bucket(-15, 32, 128), 9);
    ASSERT_EQ_INT(sdw_t5_relative_bucket(-16, 32, 128), 10);
    ASSERT_EQ_INT(sdw_t5_relative_bucket(32, 32, 128), 28);
    ASSERT_EQ_INT(sdw_t5_relative_bucket(63, 32, 128), 29);
    ASSERT_EQ_INT(sdw_t5_relative_bucket(64, 32, 128), 30);
    ASSERT_EQ_INT(sdw_t5_relative_bucket(0, 32, 128), 0);
    ASSERT_EQ_INT(sdw_t5_relative_bucket(1, 32, 128), 17);
    ASSERT_EQ_INT(sdw_t5_relative_bucket(-2000000000, 32, 128), 15);
    ASSERT_EQ_INT(sdw_t5_relative_bucket(2000000000, 32, 128), 31);
}

/* ---- config ---- */

static void test_config_load(void) {
    sdw_t5_text_config c;
    sdw_error err = {0};
    ASSERT_OK(sdw_t5_text_config_load(sdw_test_path("models/tiny-flux/text_encoder_2/config.json"),
                                      &c, &err),
              &err);
    ASSERT_EQ_INT(c.vocab, 1100);
    ASSERT_EQ_INT(c.d_model, 32);
    ASSERT_EQ_INT(c.d_kv, 8);
    ASSERT_EQ_INT(c.n_heads, 4);
    ASSERT_EQ_INT(c.d_ff, 37);
    ASSERT_EQ_INT(c.n_layers, 2);
    ASSERT_EQ_INT(c.rel_buckets, 32);
    ASSERT_EQ_INT(c.rel_max_distance, 128);
    ASSERT_TRUE(c.eps == 1e-6f);
    ASSERT_TRUE(c.gated);
    ASSERT_EQ_INT(c.act, SDW_T5_ACT_GELU_TANH);
}

/* config_infer on each folder's safetensors gives its config.json's values. */
static void check_infer(const char *dir) {
    sdw_t5_text_config want, got;
    sdw_error err = {0};
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_t5_text_config_load(sdw_test_path("models/%s/config.json", dir), &want, &err),
              &err);
    ASSERT_OK(sdw_st_open(sdw_test_path("models/%s/model.safetensors", dir), &f, &err), &err);
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    sdw_status st = sdw_t5_text_config_infer(ws, &got, &err);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
    ASSERT_OK(st, &err);
    ASSERT_EQ_INT(got.vocab, want.vocab);
    ASSERT_EQ_INT(got.d_model, want.d_model);
    ASSERT_EQ_INT(got.d_kv, want.d_kv);
    ASSERT_EQ_INT(got.n_heads, want.n_heads);
    ASSERT_EQ_INT(got.d_ff, want.d_ff);
    ASSERT_EQ_INT(got.n_layers, want.n_layers);
    ASSERT_EQ_INT(got.rel_buckets, want.rel_buckets);
    ASSERT_EQ_INT(got.rel_max_distance, want.rel_max_distance);
    ASSERT_TRUE(got.eps == want.eps);
    ASSERT_EQ_INT(got.gated, want.gated);
    ASSERT_EQ_INT(got.act, want.act);
}

static void test_config_infer(void) {
    check_infer("tiny-flux/text_encoder_2");
    check_infer("tiny-sd3/text_encoder_3");
}

/* A config.json with the given text in the test's temp folder; returns its path. */
static const char *write_config(const char *name, const char *text) {
    static char path[4][512];
    static int slot;
    char *p = path[slot++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", sdw_test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    if (f) fputs(text, f), fclose(f);
    return p;
}

static void test_config_bad(void) {
    sdw_t5_text_config c = {.vocab = -7};
    sdw_error err = {0};
    ASSERT_TRUE(sdw_t5_text_config_load(sdw_test_path("models/nonexistent.json"), &c, &err) != 0);
    ASSERT_STATUS(
        sdw_t5_text_config_load(
            write_config("mish.json", "{\"feed_forward_proj\": \"gated-mish\"}"), &c, &err),
        SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(err.msg, "gated-mish");
    ASSERT_STATUS(
        sdw_t5_text_config_load(write_config("heads.json", "{\"num_heads\": -4}"), &c, &err),
        SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "num_heads");
    ASSERT_TRUE(sdw_t5_text_config_load(write_config("eps.json", "{\"layer_norm_epsilon\": \"x\"}"),
                                        &c, &err) != SDW_OK);
    ASSERT_STR_CONTAINS(err.msg, "layer_norm_epsilon");
    ASSERT_EQ_INT(c.vocab, -7); /* untouched on failure */
    /* T5Config's defaults for absent keys; relu unless gated */
    ASSERT_OK(sdw_t5_text_config_load(write_config("empty.json", "{}"), &c, &err), &err);
    ASSERT_EQ_INT(c.d_model, 512);
    ASSERT_EQ_INT(c.n_heads, 8);
    ASSERT_TRUE(!c.gated && c.act == SDW_T5_ACT_RELU);
    /* dense_act_fn / is_gated_act, where given, win over feed_forward_proj (T5Config keeps them) */
    ASSERT_OK(sdw_t5_text_config_load(
                  write_config("act.json", "{\"feed_forward_proj\": \"gated-gelu\", "
                                           "\"dense_act_fn\": \"gelu\", \"is_gated_act\": false}"),
                  &c, &err),
              &err);
    ASSERT_TRUE(!c.gated && c.act == SDW_T5_ACT_GELU);
}

/* ---- the goldens ---- */

static void test_flux_goldens(void) {
    loaded m = {0};
    sdw_error err = {0};
    sdw_status st = load_folder("tiny-flux/text_encoder_2", SDW_PRECISION_F32, &m, &err);
    double e_dev = INFINITY, e_schnell = INFINITY;
    int unused = -1;
    if (!st) {
        e_dev = golden_err("tiny-flux/txt2img-flowmatch", m.enc, "te2", COND, 1);
        e_schnell = golden_err("tiny-flux-schnell/txt2img-4step", m.enc, "te2", COND, 1);
        unused = sdw_weights_unused(m.ws, NULL, 0);
    }
    unload(&m);
    ASSERT_OK(st, &err);
    fprintf(stderr, "  tiny-flux te2 rel err %.3g, tiny-flux-schnell %.3g\n", e_dev, e_schnell);
    ASSERT_TRUE(e_dev <= TOL);
    ASSERT_TRUE(e_schnell <= TOL);
    ASSERT_EQ_INT(unused, 0); /* every tensor of the file bound */
}

/* SD3's T5 (d_model 64, L 256): uncond and cond in one batch of 2 (the pipeline's CFG batch). */
static void test_sd3_golden_batch(void) {
    loaded m = {0};
    sdw_error err = {0};
    sdw_status st = load_folder("tiny-sd3/text_encoder_3", SDW_PRECISION_F32, &m, &err);
    const char *const both[] = {"uncond", "cond"};
    double e = INFINITY;
    if (!st) e = golden_err("tiny-sd3/txt2img-flowmatch", m.enc, "te3", both, 2);
    unload(&m);
    ASSERT_OK(st, &err);
    fprintf(stderr, "  tiny-sd3 te3 (batch of 2) rel err %.3g\n", e);
    ASSERT_TRUE(e <= TOL);
}

/* bf16 weights and product operands (f32 norms, softmax, residuals): within TOL_BF16. */
static void test_bf16(void) {
    if (sdw_nn_precision_resolve(SDW_PRECISION_BF16) != SDW_PRECISION_BF16) {
        sdw_test_skip("no native bf16 arithmetic on this CPU");
        return;
    }
    loaded m = {0};
    sdw_error err = {0};
    sdw_status st = load_folder("tiny-flux/text_encoder_2", SDW_PRECISION_BF16, &m, &err);
    double e_flux = INFINITY, e_sd3 = INFINITY;
    if (!st) e_flux = golden_err("tiny-flux/txt2img-flowmatch", m.enc, "te2", COND, 1);
    unload(&m);
    ASSERT_OK(st, &err);
    st = load_folder("tiny-sd3/text_encoder_3", SDW_PRECISION_BF16, &m, &err);
    if (!st) e_sd3 = golden_err("tiny-sd3/txt2img-flowmatch", m.enc, "te3", COND, 1);
    unload(&m);
    ASSERT_OK(st, &err);
    fprintf(stderr, "  bf16: tiny-flux te2 rel err %.3g, tiny-sd3 te3 %.3g\n", e_flux, e_sd3);
    ASSERT_TRUE(e_flux <= TOL_BF16 && e_sd3 <= TOL_BF16);
    ASSERT_TRUE(e_flux > 1e-6); /* bf16 really in use */
}

/* ---- single-file layouts: the tied embedding copy ---- */

/* The FLUX folder's file with its header rewritten: shared.weight renamed to `emb_name`, and
 * with `copy` also a second table under the other name (appended bytes). In memory. */
static void *rewrite_file(const char *emb_name, bool copy, size_t *n_out) {
    size_t n;
    uint8_t *src =
        sdw_test_read_file(sdw_test_path("models/tiny-flux/text_encoder_2/model.safetensors"), &n);
    if (!src || n < 8) return free(src), NULL;
    uint64_t hlen;
    memcpy(&hlen, src, 8);
    json_t *h = json_loadb((const char *)src + 8, hlen, 0, NULL);
    json_t *emb = json_incref(json_object_get(h, "shared.weight"));
    json_t *offs = json_object_get(emb, "data_offsets");
    const size_t lo = json_integer_value(json_array_get(offs, 0)),
                 hi = json_integer_value(json_array_get(offs, 1)), data_n = n - 8 - hlen;
    json_object_del(h, "shared.weight");
    json_object_set(h, emb_name, emb);
    if (copy) {
        json_t *dup = json_deep_copy(emb);
        json_array_set_new(json_object_get(dup, "data_offsets"), 0, json_integer(data_n));
        json_array_set_new(json_object_get(dup, "data_offsets"), 1, json_integer(data_n + hi - lo));
        json_object_set_new(
            h, strcmp(emb_name, "shared.weight") ? "shared.weight" : "encoder.embed_tokens.weight",
            dup);
    }
    char *text = json_dumps(h, JSON_COMPACT);
    const uint64_t new_hlen = strlen(text);
    *n_out = 8 + new_hlen + data_n + (copy ? hi - lo : 0);
    uint8_t *dst = malloc(*n_out);
    memcpy(dst, &new_hlen, 8);
    memcpy(dst + 8, text, new_hlen);
    memcpy(dst + 8 + new_hlen, src + 8 + hlen, data_n);
    if (copy) memcpy(dst + 8 + new_hlen + data_n, src + 8 + hlen + lo, hi - lo);
    free(text), json_decref(emb), json_decref(h), free(src);
    return dst;
}

/* encoder.embed_tokens.weight alone, or both names (the copy declared unused): same outputs. */
static void check_embedding_names(const char *emb_name, bool copy) {
    size_t n = 0;
    void *bytes = rewrite_file(emb_name, copy, &n);
    ASSERT_TRUE(bytes);
    loaded m = {0};
    sdw_error err = {0};
    sdw_t5_text_config cfg;
    sdw_status st = sdw_st_open_memory(bytes, n, "rewritten.safetensors", &m.file, &err);
    double e = INFINITY;
    int unused = -1;
    if (!st) {
        m.ws = sdw_weights_create(m.file, "", NULL, NULL);
        st = sdw_t5_text_config_infer(m.ws, &cfg, &err);
    }
    if (!st) st = sdw_t5_text_create(m.ws, &cfg, &m.enc, &err);
    if (!st) {
        e = golden_err("tiny-flux/txt2img-flowmatch", m.enc, "te2", COND, 1);
        unused = sdw_weights_unused(m.ws, NULL, 0);
    }
    unload(&m);
    free(bytes);
    ASSERT_OK(st, &err);
    ASSERT_TRUE(e <= TOL);
    ASSERT_EQ_INT(unused, 0);
}

static void test_embedding_names(void) {
    check_embedding_names("encoder.embed_tokens.weight", false);
    check_embedding_names("shared.weight", true);
    check_embedding_names("encoder.embed_tokens.weight", true);
}

/* ---- bad input ---- */

static void test_bad_input(void) {
    loaded m = {0};
    sdw_error err = {0};
    sdw_t5_text_config cfg;
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-flux/text_encoder_2/model.safetensors"),
                          &m.file, &err),
              &err);
    ASSERT_OK(sdw_t5_text_config_load(sdw_test_path("models/tiny-flux/text_encoder_2/config.json"),
                                      &cfg, &err),
              &err);
    sdw_t5_text *enc = NULL;
    /* widths that do not fit the file: each error names the tensor */
    sdw_t5_text_config c = cfg;
    c.d_ff = 40;
    m.ws = sdw_weights_create(m.file, "", NULL, NULL);
    sdw_status st_ff = sdw_t5_text_create(m.ws, &c, &enc, &err);
    sdw_error err_ff = err;
    sdw_weights_destroy(m.ws);
    c = cfg;
    c.d_model = 64; /* SD3's width with FLUX's file */
    m.ws = sdw_weights_create(m.file, "", NULL, NULL);
    sdw_status st_w = sdw_t5_text_create(m.ws, &c, &enc, &err);
    sdw_error err_w = err;
    sdw_weights_destroy(m.ws);
    c = cfg;
    c.n_heads = 8, c.d_kv = 4; /* same inner width, other head count */
    m.ws = sdw_weights_create(m.file, "", NULL, NULL);
    sdw_status st_h = sdw_t5_text_create(m.ws, &c, &enc, &err);
    sdw_error err_h = err;
    sdw_weights_destroy(m.ws);
    c = cfg;
    c.n_layers = 3;
    m.ws = sdw_weights_create(m.file, "", NULL, NULL);
    sdw_status st_l = sdw_t5_text_create(m.ws, &c, &enc, &err);
    sdw_error err_l = err;
    sdw_weights_destroy(m.ws);
    m.ws = NULL;
    ASSERT_TRUE(enc == NULL);
    ASSERT_EQ_INT(st_ff, SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(err_ff.msg, "encoder.block.0.layer.1.DenseReluDense.wi_0.weight");
    ASSERT_EQ_INT(st_w, SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(err_w.msg, "shared.weight");
    ASSERT_EQ_INT(st_h, SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(err_h.msg, "relative_attention_bias.weight");
    ASSERT_EQ_INT(st_l, SDW_E_NOT_FOUND);
    ASSERT_STR_CONTAINS(err_l.msg, "encoder.block.2.");

    /* out-of-range token ids: an error, hidden untouched */
    m.ws = sdw_weights_create(m.file, "", NULL, NULL);
    ASSERT_OK(sdw_t5_text_create(m.ws, &cfg, &m.enc, &err), &err);
    int32_t ids[4] = {5, 1099, 1100, 0};
    float hidden[4 * 32];
    for (int i = 0; i < 4 * 32; i++)
        hidden[i] = 42.0f;
    sdw_status st_big = sdw_t5_text_forward(m.enc, ids, 1, 4, hidden, &err);
    sdw_error err_big = err;
    bool untouched = true;
    for (int i = 0; i < 4 * 32; i++)
        untouched = untouched && hidden[i] == 42.0f;
    ids[2] = -1;
    sdw_status st_neg = sdw_t5_text_forward(m.enc, ids, 2, 2, hidden, &err);
    sdw_status st_empty = sdw_t5_text_forward(m.enc, ids, 1, 0, hidden, &err);
    ids[2] = 1099;
    sdw_status st_ok = sdw_t5_text_forward(m.enc, ids, 1, 4, hidden, &err);
    unload(&m);
    ASSERT_EQ_INT(st_big, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err_big.msg, "1100");
    ASSERT_TRUE(untouched);
    ASSERT_EQ_INT(st_neg, SDW_E_INVALID_ARG);
    ASSERT_EQ_INT(st_empty, SDW_E_INVALID_ARG);
    ASSERT_EQ_INT(st_ok, SDW_OK);
    ASSERT_TRUE(hidden[0] != 42.0f && isfinite(hidden[4 * 32 - 1]));
}

int main(void) {
    RUN(test_relative_buckets);
    RUN(test_config_load);
    RUN(test_config_infer);
    RUN(test_config_bad);
    RUN(test_flux_goldens);
    RUN(test_sd3_golden_batch);
    RUN(test_bf16);
    RUN(test_embedding_names);
    RUN(test_bad_input);
    return sdw_test_finish();
}
