/* text/t5_text.c — T5 encoder stack, mirroring transformers 4.30's T5EncoderModel (T5Stack with
 * is_decoder False): token embedding (unscaled) -> n_layers blocks of
 *   x += o(attention(rms_norm(x)) with the relative position bias)   (T5LayerSelfAttention)
 *   x += wo(act(wi_0 h) · wi_1 h), h = rms_norm(x)                   (T5LayerFF, gated)
 * -> final_layer_norm. The bias comes from block 0's relative_attention_bias table and is shared
 * by every block (T5Stack passes block 0's position_bias on). Dropout is off (eval). */
#include "text/t5_text.h"

#include "io/json_config.h"
#include "nn/nn.h"
#include "nn/profile.h"

#include <math.h>
#include <string.h>

typedef struct t5_layer {
    sdw_rms_norm ln_attn; /* layer.0.layer_norm [d_model] */
    sdw_linear qkv;       /* SelfAttention q|k|v stacked [3·inner, d_model], no bias */
    sdw_linear o;         /* SelfAttention.o [d_model, inner] */
    sdw_rms_norm ln_ff;   /* layer.1.layer_norm [d_model] */
    sdw_linear wi0;       /* DenseReluDense.wi_0 (gated) or .wi [d_ff, d_model] */
    sdw_linear wi1;       /* DenseReluDense.wi_1 [d_ff, d_model]; gated only */
    sdw_linear wo;        /* DenseReluDense.wo [d_model, d_ff] */
} t5_layer;

struct sdw_t5_text {
    sdw_t5_text_config cfg;
    const void *tok_emb; /* [vocab, d_model] as stored (tok_dt): rows converted on lookup, so
                            the 131M-entry XXL table is never copied */
    sdw_dtype tok_dt;
    const float *rel_emb;  /* relative_attention_bias [rel_buckets, n_heads] */
    t5_layer *layers;      /* [n_layers] */
    sdw_rms_norm final_ln; /* [d_model] */
};

/* Sanity limits for configs read from files: far above any released T5 (XXL: 4096 wide, 64
 * heads of 64, d_ff 10240, 24 layers, 32 buckets). */
#define MAX_WIDTH 65536
#define MAX_VOCAB 10000000
#define MAX_HEADS 4096
#define MAX_BUCKETS 65536
#define MAX_DISTANCE (1 << 30)

static const char *const ACT_NAMES[] = {"relu", "gelu_new", "gelu_pytorch_tanh",
                                        "gelu", "silu",     "swish"};
static const sdw_t5_act ACT_OF_NAME[] = {SDW_T5_ACT_RELU,      SDW_T5_ACT_GELU_TANH,
                                         SDW_T5_ACT_GELU_TANH, SDW_T5_ACT_GELU,
                                         SDW_T5_ACT_SILU,      SDW_T5_ACT_SILU};

static sdw_status check_config(const sdw_t5_text_config *c, sdw_error *err) {
    if (c->vocab <= 0 || c->vocab > MAX_VOCAB || c->d_model <= 0 || c->d_model > MAX_WIDTH ||
        c->d_kv <= 0 || c->d_kv > MAX_WIDTH || c->n_heads <= 0 || c->n_heads > MAX_HEADS ||
        (int64_t)c->n_heads * c->d_kv > MAX_WIDTH || c->d_ff <= 0 || c->d_ff > 8 * MAX_WIDTH ||
        c->n_layers <= 0 || c->n_layers > 1000 || !(c->eps > 0 && c->eps < 1) ||
        (unsigned)c->act > SDW_T5_ACT_SILU)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "T5 config out of range (vocab %d, d_model %d, d_kv %d, heads %d, "
                             "d_ff %d, layers %d, eps %g)",
                             c->vocab, c->d_model, c->d_kv, c->n_heads, c->d_ff, c->n_layers,
                             (double)c->eps);
    /* The bucket function needs an exact range (n_buckets/4 >= 1) and a log range above it. */
    if (c->rel_buckets < 4 || c->rel_buckets > MAX_BUCKETS ||
        c->rel_max_distance <= c->rel_buckets / 4 || c->rel_max_distance > MAX_DISTANCE)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "T5 config: relative attention buckets %d / max distance %d unusable "
                             "(want buckets >= 4 and max distance > buckets/4)",
                             c->rel_buckets, c->rel_max_distance);
    return SDW_OK;
}

/* feed_forward_proj as T5Config reads it: "<act>" or "gated-<act>"; "gated-gelu" is gelu_new. */
static sdw_status parse_ff_proj(const sdw_json_config *j, sdw_t5_text_config *c, sdw_error *err) {
    const char *ff = "relu";
    sdw_status st = sdw_json_config_string(j, "feed_forward_proj", &ff, err);
    if (st) return st;
    const char *act = ff;
    c->gated = !strncmp(ff, "gated-", 6);
    if (c->gated) act = ff + 6;
    if (c->gated && !strcmp(act, "gelu")) act = "gelu_new"; /* T5Config's backward compatibility */
    for (size_t i = 0; i < SDW_ARRAY_LEN(ACT_NAMES); i++)
        if (!strcmp(act, ACT_NAMES[i])) {
            c->act = ACT_OF_NAME[i];
            return SDW_OK;
        }
    return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: unsupported feed_forward_proj \"%s\"",
                         j->what, ff);
}

sdw_status sdw_t5_text_config_load(const char *path, sdw_t5_text_config *cfg, sdw_error *err) {
    SDW_ASSERT(path && cfg);
    sdw_json_config j;
    sdw_status st = sdw_json_config_load(path, &j, err);
    if (st) return st;
    /* T5Config's defaults (t5-small), for keys a config leaves out. */
    sdw_t5_text_config c = {.vocab = 32128,
                            .d_model = 512,
                            .d_kv = 64,
                            .n_heads = 8,
                            .d_ff = 2048,
                            .n_layers = 6,
                            .rel_buckets = 32,
                            .rel_max_distance = 128,
                            .eps = 1e-6f};
    int act = -1;
    if ((st = sdw_json_config_int(&j, "vocab_size", 1, MAX_VOCAB, &c.vocab, err)) ||
        (st = sdw_json_config_int(&j, "d_model", 1, MAX_WIDTH, &c.d_model, err)) ||
        (st = sdw_json_config_int(&j, "d_kv", 1, MAX_WIDTH, &c.d_kv, err)) ||
        (st = sdw_json_config_int(&j, "num_heads", 1, MAX_HEADS, &c.n_heads, err)) ||
        (st = sdw_json_config_int(&j, "d_ff", 1, 8 * MAX_WIDTH, &c.d_ff, err)) ||
        (st = sdw_json_config_int(&j, "num_layers", 1, 1000, &c.n_layers, err)) ||
        (st = sdw_json_config_int(&j, "relative_attention_num_buckets", 4, MAX_BUCKETS,
                                  &c.rel_buckets, err)) ||
        (st = sdw_json_config_int(&j, "relative_attention_max_distance", 1, MAX_DISTANCE,
                                  &c.rel_max_distance, err)) ||
        (st = sdw_json_config_float(&j, "layer_norm_epsilon", 1e-30, 0.5, &c.eps, err)) ||
        (st = parse_ff_proj(&j, &c, err)) ||
        (st = sdw_json_config_bool(&j, "is_gated_act", &c.gated, err)) ||
        (st = sdw_json_config_enum(&j, "dense_act_fn", ACT_NAMES, (int)SDW_ARRAY_LEN(ACT_NAMES),
                                   &act, err)))
        goto fail;
    if (act >= 0) c.act = ACT_OF_NAME[act];
    if ((st = check_config(&c, err))) {
        sdw_error_prefix(err, "%s", path);
        goto fail;
    }
    *cfg = c;
fail:
    sdw_json_config_free(&j);
    return st;
}

/* Dimension d of a rank-2 tensor as it would be loaded, or -1. */
static int64_t dim_of(const sdw_weights *ws, const char *name, int d) {
    int nd;
    int64_t shape[SDW_ST_MAX_DIMS];
    return sdw_weights_shape(ws, name, &nd, shape) && nd == 2 ? shape[d] : -1;
}

/* The embedding's name: shared.weight, else its tied copy (the random source has neither and
 * generates shared.weight). */
static const char *embedding_name(const sdw_weights *ws) {
    return !sdw_weights_has(ws, "shared.weight") &&
                   sdw_weights_has(ws, "encoder.embed_tokens.weight")
               ? "encoder.embed_tokens.weight"
               : "shared.weight";
}

#define REL_BIAS "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"

sdw_status sdw_t5_text_config_infer(const sdw_weights *ws, sdw_t5_text_config *cfg,
                                    sdw_error *err) {
    SDW_ASSERT(ws && cfg);
    const char *emb = embedding_name(ws);
    const int64_t vocab = dim_of(ws, emb, 0), d_model = dim_of(ws, emb, 1);
    const int64_t buckets = dim_of(ws, REL_BIAS, 0), heads = dim_of(ws, REL_BIAS, 1);
    const int64_t inner = dim_of(ws, "encoder.block.0.layer.0.SelfAttention.q.weight", 0);
    if (vocab <= 0 || d_model <= 0)
        return sdw_error_set(err, SDW_E_NOT_FOUND, "T5: shared.weight missing or not 2-D");
    if (buckets <= 0 || heads <= 0 || inner <= 0)
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "T5: encoder.block.0 self-attention (q, relative_attention_bias) "
                             "missing or not 2-D");
    if (inner % heads)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "T5: q's %lld rows do not split into the %lld heads of "
                             "relative_attention_bias",
                             (long long)inner, (long long)heads);
    const bool gated = sdw_weights_has(ws, "encoder.block.0.layer.1.DenseReluDense.wi_0.weight");
    const int64_t d_ff = dim_of(ws,
                                gated ? "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
                                      : "encoder.block.0.layer.1.DenseReluDense.wi.weight",
                                0);
    if (d_ff <= 0)
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "T5: encoder.block.0.layer.1.DenseReluDense.wi_0 (or wi) missing");
    char name[128];
    int n_layers = 0;
    for (;; n_layers++) {
        snprintf(name, sizeof name, "encoder.block.%d.layer.0.SelfAttention.q.weight", n_layers);
        if (n_layers > 1000 || !sdw_weights_has(ws, name)) break;
    }
    sdw_t5_text_config c = {.vocab = (int)SDW_MIN(vocab, INT32_MAX),
                            .d_model = (int)SDW_MIN(d_model, INT32_MAX),
                            .d_kv = (int)SDW_MIN(inner / heads, INT32_MAX),
                            .n_heads = (int)SDW_MIN(heads, INT32_MAX),
                            .d_ff = (int)SDW_MIN(d_ff, INT32_MAX),
                            .n_layers = n_layers,
                            .rel_buckets = (int)SDW_MIN(buckets, INT32_MAX),
                            .rel_max_distance = 128,
                            .eps = 1e-6f,
                            .gated = gated,
                            .act = gated ? SDW_T5_ACT_GELU_TANH : SDW_T5_ACT_RELU};
    sdw_status st = check_config(&c, err);
    if (st) return st;
    *cfg = c;
    return SDW_OK;
}

static sdw_status bind_layer(t5_layer *l, sdw_weights *ws, int i, const sdw_t5_text_config *c,
                             sdw_error *err) {
    char p[160], q[128], k[128], v[128], w0[128], w1[128];
#define P(suffix) (snprintf(p, sizeof p, "encoder.block.%d.layer.%s", i, suffix), p)
    snprintf(q, sizeof q, "encoder.block.%d.layer.0.SelfAttention.q", i);
    snprintf(k, sizeof k, "encoder.block.%d.layer.0.SelfAttention.k", i);
    snprintf(v, sizeof v, "encoder.block.%d.layer.0.SelfAttention.v", i);
    const char *qkv[3] = {q, k, v};
    const int inner = c->n_heads * c->d_kv;
    snprintf(w0, sizeof w0, "encoder.block.%d.layer.1.DenseReluDense.%s", i,
             c->gated ? "wi_0" : "wi");
    snprintf(w1, sizeof w1, "encoder.block.%d.layer.1.DenseReluDense.wi_1", i);
    sdw_status st;
    if ((st = sdw_rms_norm_bind(&l->ln_attn, ws, P("0.layer_norm.weight"), c->d_model, c->eps,
                                err)) ||
        (st = sdw_linear_bind_stacked(&l->qkv, ws, qkv, 3, c->d_model, inner, false, err)) ||
        (st = sdw_linear_bind(&l->o, ws, P("0.SelfAttention.o"), inner, c->d_model, false, err)) ||
        (st =
             sdw_rms_norm_bind(&l->ln_ff, ws, P("1.layer_norm.weight"), c->d_model, c->eps, err)) ||
        (st = sdw_linear_bind(&l->wi0, ws, w0, c->d_model, c->d_ff, false, err)) ||
        (c->gated && (st = sdw_linear_bind(&l->wi1, ws, w1, c->d_model, c->d_ff, false, err))) ||
        (st = sdw_linear_bind(&l->wo, ws, P("1.DenseReluDense.wo"), c->d_ff, c->d_model, false,
                              err)))
        return st;
#undef P
    return SDW_OK;
}

sdw_status sdw_t5_text_create(sdw_weights *ws, const sdw_t5_text_config *cfg, sdw_t5_text **out,
                              sdw_error *err) {
    SDW_ASSERT(ws && cfg && out);
    sdw_error local;
    if (!err) err = &local;
    sdw_status st = check_config(cfg, err);
    if (st) return st;
    const sdw_t5_text_config *c = cfg;
    sdw_t5_text *t = sdw_xcalloc(1, sizeof *t);
    t->cfg = *cfg;
    t->layers = sdw_xcalloc((size_t)c->n_layers, sizeof *t->layers);
    const char *emb = embedding_name(ws);
    size_t n_tok;
    if (!(t->tok_emb = sdw_weights_raw(ws, emb, 2, (int64_t[]){c->vocab, c->d_model}, &t->tok_dt,
                                       &n_tok, err)) ||
        !(t->rel_emb =
              sdw_weights_f32(ws, REL_BIAS, 2, (int64_t[]){c->rel_buckets, c->n_heads}, err))) {
        st = err->code;
        goto fail;
    }
    /* T5EncoderModel ties encoder.embed_tokens to shared; files saved with both hold one
     * table twice. */
    if (!strcmp(emb, "shared.weight") && sdw_weights_has(ws, "encoder.embed_tokens.weight"))
        sdw_weights_ignore(ws, "encoder.embed_tokens.weight");
    for (int i = 0; i < c->n_layers; i++)
        if ((st = bind_layer(&t->layers[i], ws, i, c, err))) goto fail;
    if ((st = sdw_rms_norm_bind(&t->final_ln, ws, "encoder.final_layer_norm.weight", c->d_model,
                                c->eps, err)))
        goto fail;
    *out = t;
    return SDW_OK;
fail:
    sdw_error_prefix(err, "T5 encoder");
    sdw_t5_text_destroy(t);
    return st;
}

void sdw_t5_text_destroy(sdw_t5_text *t) {
    if (!t) return;
    free(t->layers);
    free(t);
}

const sdw_t5_text_config *sdw_t5_text_get_config(const sdw_t5_text *t) {
    return &t->cfg;
}

int sdw_t5_relative_bucket(int rel, int n_buckets, int max_distance) {
    SDW_ASSERT(n_buckets >= 4 && max_distance > n_buckets / 4);
    /* bidirectional: half the buckets for each sign, the upper half for keys after the query */
    const int half = n_buckets / 2, max_exact = half / 2;
    const int bucket = rel > 0 ? half : 0;
    const int64_t n = rel < 0 ? -(int64_t)rel : rel;
    if (n < max_exact) return bucket + (int)n;
    /* max_exact + (log(n.float() / max_exact) / math.log(max_distance / max_exact)
     *              * (half - max_exact)).to(long), every operand float32 as torch computes it
     * (the Python double divisor becomes a float32 scalar); .to(long) truncates. The exact
     * value is an integer at n = max_exact·(max_distance/max_exact)^(k/(half−max_exact)) (16,
     * 32, 64 for T5's 32/128), where log(2^m) / float(log 16) is exactly m/4 in float32.
     * Checked equal to torch 1.13's buckets for offsets up to ±5000 and 5 bucket configs. */
    const float ratio = (float)n / (float)max_exact;
    const float log_range = (float)log((double)max_distance / max_exact);
    const float frac = logf(ratio) / log_range * (float)(half - max_exact);
    const int64_t large = max_exact + (int64_t)frac;
    return bucket + (int)SDW_MIN(large, (int64_t)half - 1);
}

typedef struct t5_scratch {
    float *h;    /* [M, d_model]: normed input of a sub-layer */
    float *qkv;  /* [M, 3·inner] */
    float *attn; /* [M, inner] */
    float *ff0;  /* [M, d_ff]: act(wi_0 h), then · wi_1 h (overlaps qkv: dead by then) */
    float *ff1;  /* [M, d_ff]: wi_1 h (gated) */
    float *rel;  /* [n_heads, 2L − 1]: bias by key − query offset */
} t5_scratch;

/* T5Attention.compute_bias for the encoder: relative_attention_bias(bucket(j − i)) permuted to
 * heads first, stored by offset j − i + L − 1 as sdw_attention_rel_bias reads it. */
static void compute_rel_bias(const sdw_t5_text *t, int L, float *rel) {
    const sdw_t5_text_config *c = &t->cfg;
    const int64_t W = 2 * (int64_t)L - 1;
    for (int64_t o = 0; o < W; o++) {
        const int b =
            sdw_t5_relative_bucket((int)(o - (L - 1)), c->rel_buckets, c->rel_max_distance);
        for (int h = 0; h < c->n_heads; h++)
            rel[h * W + o] = t->rel_emb[(size_t)b * c->n_heads + h];
    }
}

static void activation(sdw_t5_act act, float *x, size_t n) {
    switch (act) {
    case SDW_T5_ACT_RELU:
#pragma omp parallel for simd schedule(static) if (n > 32768)
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] > 0 ? x[i] : 0.0f;
        break;
    case SDW_T5_ACT_GELU_TANH:
        sdw_gelu_tanh(x, n);
        break;
    case SDW_T5_ACT_GELU:
        sdw_gelu(x, n);
        break;
    case SDW_T5_ACT_SILU:
        sdw_silu(x, n);
        break;
    }
}

/* T5Block (encoder): T5LayerSelfAttention then T5LayerFF, each pre-norm with a residual add.
 * x [M, d_model], M = B·L. */
static void t5_block(const t5_layer *l, const sdw_t5_text_config *c, float *x, int B, int L,
                     t5_scratch *s) {
    const int64_t M = (int64_t)B * L;
    const int inner = c->n_heads * c->d_kv;
    sdw_rms_norm_forward(&l->ln_attn, x, M, 1, c->d_model, s->h);
    sdw_linear_forward(&l->qkv, sdw_rows(s->h, M), sdw_rows(s->qkv, M), 0); /* [M, q|k|v] */
    /* T5Attention: scores = q·kᵀ unscaled (the 1/√d_kv lives in the initialisation) + bias */
    sdw_attention_rel_bias(s->qkv, 3 * inner, s->qkv + inner, 3 * inner, s->qkv + 2 * inner,
                           3 * inner, B, L, L, c->n_heads, c->d_kv, 1.0f, 0, s->rel, s->attn);
    sdw_linear_forward(&l->o, sdw_rows(s->attn, M), sdw_rows(x, M), SDW_ACCUMULATE); /* x += o */

    sdw_rms_norm_forward(&l->ln_ff, x, M, 1, c->d_model, s->h);
    const size_t n_ff = (size_t)M * c->d_ff;
    sdw_linear_forward(&l->wi0, sdw_rows(s->h, M), sdw_rows(s->ff0, M), 0); /* [M, d_ff] */
    activation(c->act, s->ff0, n_ff);
    if (c->gated) { /* T5DenseGatedActDense: act(wi_0 h) · wi_1 h */
        sdw_linear_forward(&l->wi1, sdw_rows(s->h, M), sdw_rows(s->ff1, M), 0);
        float *a = s->ff0;
        const float *g = s->ff1;
#pragma omp parallel for simd schedule(static) if (n_ff > 32768)
        for (size_t i = 0; i < n_ff; i++)
            a[i] *= g[i];
    }
    sdw_linear_forward(&l->wo, sdw_rows(s->ff0, M), sdw_rows(x, M), SDW_ACCUMULATE); /* x += wo */
}

sdw_status sdw_t5_text_forward(const sdw_t5_text *t, const int32_t *ids, int B, int L,
                               float *hidden, sdw_error *err) {
    SDW_ASSERT(t && ids && hidden);
    const sdw_t5_text_config *c = &t->cfg;
    if (B < 1 || L < 1)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "T5: batch %d x length %d is empty", B, L);
    const int64_t M = (int64_t)B * L;
    for (int64_t i = 0; i < M; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "T5: token id %d (position %lld) not in 0..%d", ids[i],
                                 (long long)i, c->vocab - 1);

    const int D = c->d_model, inner = c->n_heads * c->d_kv;
    /* The attention's buffers (q|k|v, out) and the feed-forward's (two d_ff) are never live
     * together: one region serves both. */
    const size_t row = (size_t)SDW_MAX(4 * (int64_t)inner, (c->gated ? 2 : 1) * (int64_t)c->d_ff);
    const size_t n_rel = (size_t)c->n_heads * (2 * (size_t)L - 1);
    size_t n_buf;
    float *buf = NULL;
    if (!sdw_size_mul((size_t)M, D + row, &n_buf) || !sdw_size_add(n_buf, n_rel, &n_buf) ||
        !sdw_size_mul(n_buf, sizeof(float), &n_buf) || !(buf = malloc(n_buf)))
        return sdw_error_set(err, SDW_E_NOMEM, "T5: no memory for batch %d x length %d", B, L);
    t5_scratch s = {.h = buf, .qkv = buf + (size_t)M * D};
    s.attn = s.qkv + (size_t)M * 3 * inner;
    s.ff0 = s.qkv;
    s.ff1 = s.ff0 + (size_t)M * c->d_ff;
    s.rel = s.qkv + (size_t)M * row;

    const sdw_prof_stage prev_stage = sdw__prof_stage(SDW_PROF_TEXT);
    compute_rel_bias(t, L, s.rel);
    /* embed_tokens (no scaling in T5); the residual stream lives in the output buffer */
    float *x = hidden;
    const size_t row_bytes = (size_t)D * sdw_dtype_size(t->tok_dt);
    for (int64_t i = 0; i < M; i++)
        sdw_convert_to_f32(t->tok_dt, (const char *)t->tok_emb + (size_t)ids[i] * row_bytes,
                           x + i * D, (size_t)D);
    for (int i = 0; i < c->n_layers; i++)
        t5_block(&t->layers[i], c, x, B, L, &s);
    sdw_rms_norm_forward(&t->final_ln, x, M, 1, D, x);
    sdw__prof_stage(prev_stage);
    free(buf);
    return SDW_OK;
}
