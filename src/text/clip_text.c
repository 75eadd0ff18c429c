/* text/clip_text.c — CLIP text transformer, mirroring transformers 4.30's CLIPTextModel:
 * embeddings (token + position) -> n_layers pre-LN blocks with causal self-attention ->
 * final_layer_norm; pooler_output = final state at argmax(input_ids). */
#include "text/clip_text.h"

#include "io/json_config.h"
#include "nn/nn.h"
#include "nn/profile.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <string.h>

typedef struct clip_layer {
    sdw_layer_norm ln1, ln2; /* [hidden] */
    sdw_linear qkv;          /* q_proj|k_proj|v_proj stacked [3·hidden, hidden] + bias */
    sdw_linear out;          /* [hidden, hidden] + bias */
    sdw_linear fc1, fc2;     /* [intermediate, hidden], [hidden, intermediate] + bias */
} clip_layer;

struct sdw_clip_text {
    sdw_clip_text_config cfg;
    const void *tok_emb;     /* [vocab, hidden] as stored (tok_dt): rows converted on lookup,
                                so the 38M-entry table is never copied (a few rows are read) */
    sdw_dtype tok_dt;
    const float *pos_emb;    /* [max_positions, hidden] */
    clip_layer *layers;      /* [n_layers] */
    sdw_layer_norm final_ln; /* [hidden] */
    sdw_linear proj;         /* [projection_dim, hidden], no bias; valid if projection_dim */
};

/* Sanity limits for configs read from files: far above any released CLIP. */
#define MAX_WIDTH 65536
#define MAX_VOCAB 10000000

static sdw_status check_config(const sdw_clip_text_config *c, sdw_error *err) {
    if (c->vocab <= 0 || c->vocab > MAX_VOCAB || c->hidden <= 0 || c->hidden > MAX_WIDTH ||
        c->n_layers <= 0 || c->n_layers > 1000 || c->n_heads <= 0 || c->intermediate <= 0 ||
        c->intermediate > 8 * MAX_WIDTH || c->max_positions <= 0 || c->max_positions > 65536 ||
        c->projection_dim < 0 || c->projection_dim > MAX_WIDTH || !(c->eps > 0 && c->eps < 1))
        return sdw_error_set(err, SDW_E_FORMAT,
                             "CLIP text config out of range (vocab %d, hidden %d, layers %d, heads "
                             "%d, intermediate %d, positions %d, projection %d, eps %g)",
                             c->vocab, c->hidden, c->n_layers, c->n_heads, c->intermediate,
                             c->max_positions, c->projection_dim, (double)c->eps);
    if (c->hidden % c->n_heads)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "CLIP text: hidden size %d not divisible by %d heads", c->hidden,
                             c->n_heads);
    return SDW_OK;
}

/* A key every CLIPTextConfig carries (transformers writes them all): absence is an error. */
static sdw_status required_int(const sdw_json_config *j, const char *key, int *out,
                               sdw_error *err) {
    if (!sdw_json_config_has(j, key))
        return sdw_error_set(err, SDW_E_FORMAT, "%s: \"%s\" missing", j->what, key);
    return sdw_json_config_int(j, key, 0, INT32_MAX, out, err);
}

/* *cfg from the text model's config object t; root is the whole file, whose "architectures"
 * says whether the projection exists. */
static sdw_status config_from(const sdw_json_config *root, const sdw_json_config *t,
                              sdw_clip_text_config *cfg, sdw_error *err) {
    static const char *const act_names[] = {"quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh"};
    static const sdw_clip_act acts[] = {SDW_CLIP_ACT_QUICK_GELU, SDW_CLIP_ACT_GELU,
                                        SDW_CLIP_ACT_GELU_TANH, SDW_CLIP_ACT_GELU_TANH};
    sdw_clip_text_config c = {.act = SDW_CLIP_ACT_QUICK_GELU, .eps = 1e-5f};
    int act = 0;
    sdw_status st;
    if ((st = required_int(t, "vocab_size", &c.vocab, err)) ||
        (st = required_int(t, "hidden_size", &c.hidden, err)) ||
        (st = required_int(t, "num_hidden_layers", &c.n_layers, err)) ||
        (st = required_int(t, "num_attention_heads", &c.n_heads, err)) ||
        (st = required_int(t, "intermediate_size", &c.intermediate, err)) ||
        (st = required_int(t, "max_position_embeddings", &c.max_positions, err)) ||
        (st = sdw_json_config_enum(t, "hidden_act", act_names, (int)SDW_ARRAY_LEN(act_names), &act,
                                   err)) ||
        (st = sdw_json_config_float(t, "layer_norm_eps", -FLT_MAX, FLT_MAX, &c.eps, err)))
        return st;
    c.act = acts[act];
    /* projection_dim sits in every CLIPTextConfig; only the WithProjection model has the layer. */
    bool with_proj = false;
    const json_t *archs = json_object_get(root->root, "architectures");
    for (size_t i = 0; i < json_array_size(archs); i++) {
        const char *a = json_string_value(json_array_get(archs, i));
        with_proj = with_proj || (a && !strcmp(a, "CLIPTextModelWithProjection"));
    }
    if (with_proj && (st = required_int(t, "projection_dim", &c.projection_dim, err))) return st;
    if ((st = check_config(&c, err))) {
        sdw_error_prefix(err, "%s", t->what);
        return st;
    }
    *cfg = c;
    return SDW_OK;
}

sdw_status sdw_clip_text_config_from_json(const char *path, sdw_clip_text_config *cfg,
                                          sdw_error *err) {
    sdw_json_config root, text = {0};
    sdw_status st = sdw_json_config_load(path, &root, err);
    if (st == SDW_E_IO) { /* callers (and test_clip_text) have always seen SDW_E_FORMAT here */
        if (err) err->code = SDW_E_FORMAT;
        return SDW_E_FORMAT;
    }
    if (st) return st;
    json_t *tc = json_object_get(root.root, "text_config"); /* a full CLIPModel config */
    if (json_is_object(tc)) {
        char label[sizeof root.what + 16];
        snprintf(label, sizeof label, "%s: text_config", path);
        st = sdw_json_config_wrap(tc, label, &text, err);
    }
    if (st == SDW_OK) st = config_from(&root, text.root ? &text : &root, cfg, err);
    sdw_json_config_free(&text);
    sdw_json_config_free(&root);
    return st;
}

/* Dimension d of a rank-2 tensor as it would be loaded (a layout's view applied), or -1. */
static int64_t dim_of(const sdw_weights *ws, const char *name, int d) {
    int nd;
    int64_t shape[SDW_ST_MAX_DIMS];
    return sdw_weights_shape(ws, name, &nd, shape) && nd == 2 ? shape[d] : -1;
}

sdw_status sdw_clip_text_config_infer(const sdw_weights *ws, int n_heads, sdw_clip_act act,
                                      sdw_clip_text_config *cfg, sdw_error *err) {
    sdw_clip_text_config c = {.act = act, .eps = 1e-5f};
    const char *tok = "text_model.embeddings.token_embedding.weight";
    const char *pos = "text_model.embeddings.position_embedding.weight";
    int64_t vocab = dim_of(ws, tok, 0), hidden = dim_of(ws, tok, 1);
    int64_t n_pos = dim_of(ws, pos, 0);
    if (vocab <= 0 || hidden <= 0 || n_pos <= 0)
        return sdw_error_set(err, SDW_E_NOT_FOUND, "CLIP text: %s or %s missing or not 2-D", tok,
                             pos);
    char name[128];
    int n_layers = 0;
    for (;; n_layers++) {
        snprintf(name, sizeof name, "text_model.encoder.layers.%d.self_attn.q_proj.weight",
                 n_layers);
        if (!sdw_weights_has(ws, name)) break;
    }
    snprintf(name, sizeof name, "text_model.encoder.layers.0.mlp.fc1.weight");
    int64_t inter = dim_of(ws, name, 0);
    if (n_layers == 0 || inter <= 0)
        return sdw_error_set(err, SDW_E_NOT_FOUND, "CLIP text: no encoder layers found");
    int64_t proj = dim_of(ws, "text_projection.weight", 0);
    c.vocab = (int)SDW_MIN(vocab, INT32_MAX);
    c.hidden = (int)SDW_MIN(hidden, INT32_MAX);
    c.max_positions = (int)SDW_MIN(n_pos, INT32_MAX);
    c.n_layers = n_layers;
    c.intermediate = (int)SDW_MIN(inter, INT32_MAX);
    c.projection_dim = proj > 0 ? (int)SDW_MIN(proj, INT32_MAX) : 0;
    c.n_heads = n_heads > 0 ? n_heads : SDW_MAX(1, c.hidden / 64);
    sdw_status st = check_config(&c, err);
    if (st) return st;
    *cfg = c;
    return SDW_OK;
}

static sdw_status bind_layer(clip_layer *l, sdw_weights *ws, int i, const sdw_clip_text_config *c,
                             sdw_error *err) {
    char p[128];
    sdw_status st;
#define P(suffix) (snprintf(p, sizeof p, "text_model.encoder.layers.%d.%s", i, suffix), p)
    char q[128], k[128], v[128];
    snprintf(q, sizeof q, "text_model.encoder.layers.%d.self_attn.q_proj", i);
    snprintf(k, sizeof k, "text_model.encoder.layers.%d.self_attn.k_proj", i);
    snprintf(v, sizeof v, "text_model.encoder.layers.%d.self_attn.v_proj", i);
    const char *qkv[3] = {q, k, v};
    if ((st = sdw_layer_norm_bind(&l->ln1, ws, P("layer_norm1"), c->hidden, c->eps, err)) ||
        (st = sdw_linear_bind_stacked(&l->qkv, ws, qkv, 3, c->hidden, c->hidden, true, err)) ||
        (st = sdw_linear_bind(&l->out, ws, P("self_attn.out_proj"), c->hidden, c->hidden, true,
                              err)) ||
        (st = sdw_layer_norm_bind(&l->ln2, ws, P("layer_norm2"), c->hidden, c->eps, err)) ||
        (st = sdw_linear_bind(&l->fc1, ws, P("mlp.fc1"), c->hidden, c->intermediate, true, err)) ||
        (st = sdw_linear_bind(&l->fc2, ws, P("mlp.fc2"), c->intermediate, c->hidden, true, err)))
        return st;
#undef P
    return SDW_OK;
}

sdw_status sdw_clip_text_create(sdw_weights *ws, const sdw_clip_text_config *cfg,
                                sdw_clip_text **out, sdw_error *err) {
    SDW_ASSERT(ws && cfg && out);
    sdw_error local;
    if (!err) err = &local;
    sdw_status st = check_config(cfg, err);
    if (st) return st;
    const sdw_clip_text_config *c = cfg;
    sdw_clip_text *e = sdw_xcalloc(1, sizeof *e);
    e->cfg = *cfg;
    e->layers = sdw_xcalloc((size_t)c->n_layers, sizeof *e->layers);
    size_t n_tok;
    if (!(e->tok_emb = sdw_weights_raw(ws, "text_model.embeddings.token_embedding.weight", 2,
                                       (int64_t[]){c->vocab, c->hidden}, &e->tok_dt, &n_tok,
                                       err)) ||
        !(e->pos_emb = sdw_weights_f32(ws, "text_model.embeddings.position_embedding.weight", 2,
                                       (int64_t[]){c->max_positions, c->hidden}, err))) {
        st = err->code;
        goto fail;
    }
    for (int i = 0; i < c->n_layers; i++)
        if ((st = bind_layer(&e->layers[i], ws, i, c, err))) goto fail;
    if ((st = sdw_layer_norm_bind(&e->final_ln, ws, "text_model.final_layer_norm", c->hidden,
                                  c->eps, err)))
        goto fail;
    if (c->projection_dim > 0 && (st = sdw_linear_bind(&e->proj, ws, "text_projection", c->hidden,
                                                       c->projection_dim, false, err)))
        goto fail;
    *out = e;
    return SDW_OK;
fail:
    sdw_error_prefix(err, "CLIP text encoder");
    sdw_clip_text_destroy(e);
    return st;
}

void sdw_clip_text_destroy(sdw_clip_text *enc) {
    if (!enc) return;
    free(enc->layers);
    free(enc);
}

const sdw_clip_text_config *sdw_clip_text_get_config(const sdw_clip_text *enc) {
    return &enc->cfg;
}

sdw_clip_text_params sdw_clip_text_params_default(void) {
    return (sdw_clip_text_params){
        .skip_layers = 0, .final_norm = true, .project_pooled = false};
}

typedef struct clip_scratch {
    float *h, *attn; /* [BL, hidden] each */
    float *qkv;      /* [BL, 3·hidden] */
    float *mlp;      /* [BL, intermediate] */
} clip_scratch;

static void activation(sdw_clip_act act, float *x, size_t n) {
    switch (act) {
    case SDW_CLIP_ACT_QUICK_GELU:
        sdw_quick_gelu(x, n);
        break;
    case SDW_CLIP_ACT_GELU:
        sdw_gelu(x, n);
        break;
    case SDW_CLIP_ACT_GELU_TANH:
        sdw_gelu_tanh(x, n);
        break;
    }
}

/* CLIPEncoderLayer: x += out_proj(attn(LN1(x))); x += fc2(act(fc1(LN2(x)))). x [B*L, hidden]. */
static void clip_encoder_layer(const clip_layer *l, const sdw_clip_text_config *c, float *x, int B,
                               int L, clip_scratch *s) {
    const int64_t M = (int64_t)B * L;
    const int D = c->hidden / c->n_heads;
    const int C = c->hidden;
    const sdw_act xv = sdw_rows(x, M);
    sdw_linear_forward_ln(&l->qkv, &l->ln1, xv, s->h, sdw_rows(s->qkv, M), 0); /* [BL, q|k|v] */
    /* CLIPAttention scales q by head_dim^-0.5 before q·kᵀ; the causal mask hides later tokens. */
    sdw_attention(s->qkv, 3 * C, s->qkv + C, 3 * C, s->qkv + 2 * C, 3 * C, B, L, L, c->n_heads, D,
                  1.0f / sqrtf((float)D), SDW_ATTN_CAUSAL, s->attn);
    sdw_linear_forward(&l->out, sdw_rows(s->attn, M), xv, SDW_ACCUMULATE); /* x += out_proj */

    sdw_linear_forward_ln(&l->fc1, &l->ln2, xv, s->h, sdw_rows(s->mlp, M), 0);
    activation(c->act, s->mlp, (size_t)M * c->intermediate);
    sdw_linear_forward(&l->fc2, sdw_rows(s->mlp, M), xv, SDW_ACCUMULATE); /* x += fc2(act(fc1)) */
}

sdw_status sdw_clip_text_forward(const sdw_clip_text *enc, const int32_t *ids, int B, int L,
                                 const sdw_clip_text_params *params, float *hidden, float *pooled,
                                 sdw_error *err) {
    SDW_ASSERT(enc && ids && B > 0);
    const sdw_clip_text_config *c = &enc->cfg;
    const sdw_clip_text_params p = params ? *params : sdw_clip_text_params_default();
    if (L <= 0 || L > c->max_positions)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "CLIP text: sequence length %d not in 1..%d",
                             L, c->max_positions);
    if (p.skip_layers < 0 || p.skip_layers > c->n_layers)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "CLIP text: skip_layers %d not in 0..%d",
                             p.skip_layers, c->n_layers);
    if (pooled && p.project_pooled && c->projection_dim == 0)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "CLIP text: projected pooled output asked of a model without "
                             "text_projection");
    const int n_extra = p.extra_rows ? p.n_extra : 0;
    for (int64_t i = 0; i < (int64_t)B * L; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab + n_extra)
            return sdw_error_set(err, SDW_E_INVALID_ARG, "CLIP text: token id %d not in 0..%d",
                                 ids[i], c->vocab + n_extra - 1);

    const int C = c->hidden;
    const int64_t M = (int64_t)B * L;
    const size_t act_n = (size_t)M * C;
    float *x = sdw_xmalloc(sizeof(float) * (6 * act_n + (size_t)M * c->intermediate));
    clip_scratch s = {
        .h = x + act_n, .attn = x + 2 * act_n, .qkv = x + 3 * act_n, .mlp = x + 6 * act_n};

    const sdw_prof_stage prev_stage = sdw__prof_stage(SDW_PROF_TEXT);
    /* CLIPTextEmbeddings: token embedding + position embedding (positions 0..L-1). */
    const size_t row_bytes = (size_t)C * sdw_dtype_size(enc->tok_dt);
    for (int64_t i = 0; i < M; i++) {
        float *xr = x + i * C;
        if (ids[i] >= c->vocab) /* an added token: its row of extra_rows */
            memcpy(xr, p.extra_rows + (size_t)(ids[i] - c->vocab) * C, sizeof(float) * C);
        else
            sdw_convert_to_f32(enc->tok_dt,
                               (const char *)enc->tok_emb + (size_t)ids[i] * row_bytes, xr,
                               (size_t)C);
        const float *pe = enc->pos_emb + (size_t)(i % L) * C;
        for (int j = 0; j < C; j++)
            xr[j] += pe[j];
    }
    /* hidden_states[target] is the state after `target` layers; pooling needs the full stack. */
    const int target = c->n_layers - p.skip_layers;
    const int n_run = pooled ? c->n_layers : (hidden ? target : 0);
    for (int i = 0;; i++) {
        if (hidden && i == target) memcpy(hidden, x, sizeof(float) * act_n);
        if (i == n_run) break;
        clip_encoder_layer(&enc->layers[i], c, x, B, L, &s);
    }
    if (hidden && p.final_norm)
        sdw_layer_norm_forward(&enc->final_ln, sdw_rows(hidden, M), sdw_rows(hidden, M));

    if (pooled) {
        /* pooler_output: final_layer_norm(state)[b, argmax(ids[b])] — the first occurrence of
         * the largest id, as torch.argmax returns (or of pool_id); layer norm is per row, so
         * only those rows. */
        float *rows = s.h; /* [B, C] */
        for (int b = 0; b < B; b++) {
            const int32_t *r = ids + (size_t)b * L;
            int best = 0;
            for (int j = 1; j < L; j++)
                if (r[j] > r[best]) best = j;
            for (int j = L - 1; p.pool_id > 0 && j >= 0; j--)
                if (r[j] == p.pool_id) best = j;
            memcpy(rows + (size_t)b * C, x + ((size_t)b * L + best) * C, sizeof(float) * C);
        }
        sdw_layer_norm_forward(&enc->final_ln, sdw_rows(rows, B), sdw_rows(rows, B));
        if (p.project_pooled)
            sdw_linear_forward(&enc->proj, sdw_rows(rows, B), sdw_rows(pooled, B), 0);
        else
            memcpy(pooled, rows, sizeof(float) * (size_t)B * C);
    }
    free(x);
    sdw__prof_stage(prev_stage);
    return SDW_OK;
}
