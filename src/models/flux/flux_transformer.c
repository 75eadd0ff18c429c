/* diffusers 0.30.3 FluxTransformer2DModel forward on the nn/ building blocks, f32 activations.
 * Each static function mirrors one diffusers module and names it.
 *
 * The hidden states of both streams live in one joint buffer [B, L, D] (L = L_txt + L_img), each
 * batch element's text rows first: the double blocks work on the two row ranges in place, the
 * joint attention and the single blocks see the concatenation diffusers builds with torch.cat
 * without a copy. q|k|v of both streams are written into one [B, L, 3D] buffer in the same row
 * order, so RoPE and attention run once over it. All scratch is taken once per forward and
 * reused by every block; the MLPs run a chunk of rows at a time so their 4D-wide hidden stays a
 * few tens of MB at FLUX's width. */
#include "models/flux/flux_transformer.h"

#include "io/json_config.h"
#include "models/dit_layers.h"
#include "nn/arena.h"
#include "nn/nn.h"
#include "nn/profile.h"
#include "nn/stop.h"

#include <math.h>
#include <string.h>

#define LN_EPS 1e-6f  /* every LayerNorm here is LayerNorm(D, elementwise_affine=False, 1e-6) */
#define QK_EPS 1e-6f  /* Attention(qk_norm="rms_norm", eps=1e-6) */
#define MLP_RATIO 4   /* FeedForward(mult=4) and FluxSingleTransformerBlock(mlp_ratio=4.0) */
#define TIME_PROJ 256 /* Timesteps(num_channels=256) */
#define MAX_WIDTH (1 << 20)

/* ---------------------------------------------------------------------------------------- */
/* config                                                                                   */

sdw_flux_config sdw_flux_config_default(void) {
    return (sdw_flux_config){.in_channels = 64,
                             .n_layers = 19,
                             .n_single_layers = 38,
                             .n_heads = 24,
                             .head_dim = 128,
                             .joint_dim = 4096,
                             .pooled_dim = 768,
                             .patch_size = 1,
                             .axes_dim = {16, 56, 56},
                             .theta = 10000.0f,
                             .guidance_embeds = false};
}

sdw_status sdw_flux_config_validate(const sdw_flux_config *c, sdw_error *err) {
    const struct {
        const char *name;
        int v, lo, hi;
    } r[] = {
        {"in_channels", c->in_channels, 1, MAX_WIDTH},
        {"num_layers", c->n_layers, 0, SDW_FLUX_MAX_BLOCKS},
        {"num_single_layers", c->n_single_layers, 0, SDW_FLUX_MAX_BLOCKS},
        {"num_attention_heads", c->n_heads, 1, 4096},
        {"attention_head_dim", c->head_dim, 2, 4096},
        {"joint_attention_dim", c->joint_dim, 1, MAX_WIDTH},
        {"pooled_projection_dim", c->pooled_dim, 1, MAX_WIDTH},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (r[i].v < r[i].lo || r[i].v > r[i].hi)
            return sdw_error_set(err, SDW_E_INVALID_ARG, "FLUX config: %s = %d outside [%d, %d]",
                                 r[i].name, r[i].v, r[i].lo, r[i].hi);
    if ((int64_t)c->n_heads * c->head_dim > 65536)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "FLUX config: width %d x %d too large",
                             c->n_heads, c->head_dim);
    if (c->patch_size != 1)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "FLUX config: patch_size %d (only 1: the pipeline packs the 2x2 "
                             "patches itself, and every FLUX model uses 1)",
                             c->patch_size);
    int sum = 0;
    for (int a = 0; a < 3; a++) {
        if (c->axes_dim[a] <= 0 || c->axes_dim[a] % 2)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "FLUX config: axes_dims_rope[%d] = %d must be positive and even",
                                 a, c->axes_dim[a]);
        sum += c->axes_dim[a];
    }
    if (sum != c->head_dim)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "FLUX config: axes_dims_rope (%d, %d, %d) sum to %d, not the head "
                             "size %d",
                             c->axes_dim[0], c->axes_dim[1], c->axes_dim[2], sum, c->head_dim);
    if (!(c->theta > 0.0f) || !isfinite(c->theta))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "FLUX config: RoPE theta %g", c->theta);
    return SDW_OK;
}

sdw_status sdw_flux_config_load(const char *path, sdw_flux_config *cfg, sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_load(path, &j, err);
    if (st) return st;
    sdw_flux_config c = sdw_flux_config_default();
    int axes[3], n_axes = 3;
    memcpy(axes, c.axes_dim, sizeof axes);
    if ((st = sdw_json_config_int(&j, "patch_size", 1, 64, &c.patch_size, err)) ||
        (st = sdw_json_config_int(&j, "in_channels", 1, MAX_WIDTH, &c.in_channels, err)) ||
        (st = sdw_json_config_int(&j, "num_layers", 0, SDW_FLUX_MAX_BLOCKS, &c.n_layers, err)) ||
        (st = sdw_json_config_int(&j, "num_single_layers", 0, SDW_FLUX_MAX_BLOCKS,
                                  &c.n_single_layers, err)) ||
        (st = sdw_json_config_int(&j, "attention_head_dim", 2, 4096, &c.head_dim, err)) ||
        (st = sdw_json_config_int(&j, "num_attention_heads", 1, 4096, &c.n_heads, err)) ||
        (st = sdw_json_config_int(&j, "joint_attention_dim", 1, MAX_WIDTH, &c.joint_dim, err)) ||
        (st = sdw_json_config_int(&j, "pooled_projection_dim", 1, MAX_WIDTH, &c.pooled_dim, err)) ||
        (st = sdw_json_config_bool(&j, "guidance_embeds", &c.guidance_embeds, err)) ||
        (st = sdw_json_config_int_list(&j, "axes_dims_rope", 3, 1, 4096, axes, &n_axes, err)))
        goto done;
    /* EmbedND is called with ids of 3 coordinates (FluxPipeline's (0, row, col)). */
    if (n_axes != 3) {
        st = sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: axes_dims_rope has %d entries, not 3", path,
                           n_axes);
        goto done;
    }
    memcpy(c.axes_dim, axes, sizeof axes);
    if ((st = sdw_flux_config_validate(&c, err))) {
        sdw_error_prefix(err, "%s", path);
        goto done;
    }
    *cfg = c;
done:
    sdw_json_config_free(&j);
    return st;
}

/* A canonical 2-D tensor's shape, false when absent or not 2-D. */
static bool shape2(const sdw_weights *ws, const char *name, int64_t *rows, int64_t *cols) {
    int nd;
    int64_t s[SDW_ST_MAX_DIMS];
    if (!sdw_weights_shape(ws, name, &nd, s) || nd != 2) return false;
    *rows = s[0];
    *cols = s[1];
    return true;
}

/* Counts the blocks whose tensor `fmt` (%d = index) exists; a gap is an error naming it. */
static sdw_status count_blocks(const sdw_weights *ws, const char *fmt, const char *what, int *n,
                               sdw_error *err) {
    char name[256], first_missing[256] = "";
    int count = 0;
    for (int i = 0; i < SDW_FLUX_MAX_BLOCKS; i++) {
        snprintf(name, sizeof name, fmt, i);
        if (!sdw_weights_has(ws, name)) {
            if (!first_missing[0]) memcpy(first_missing, name, sizeof name);
            continue;
        }
        if (count != i)
            return sdw_error_set(err, SDW_E_NOT_FOUND,
                                 "FLUX transformer: %s %d is missing (no %s) while %s %d exists",
                                 what, count, first_missing, what, i);
        count++;
    }
    *n = count;
    return SDW_OK;
}

sdw_status sdw_flux_config_infer_heads(const sdw_weights *ws, int head_dim, const int axes_dim[3],
                                       sdw_flux_config *cfg, sdw_error *err) {
    sdw_flux_config c = sdw_flux_config_default();
    int64_t D, in, d2, joint, pooled, out, d3;
    const char *missing = NULL;
    if (!shape2(ws, "x_embedder.weight", &D, &in))
        missing = "x_embedder.weight";
    else if (!shape2(ws, "context_embedder.weight", &d2, &joint))
        missing = "context_embedder.weight";
    else if (!shape2(ws, "time_text_embed.text_embedder.linear_1.weight", &d3, &pooled))
        missing = "time_text_embed.text_embedder.linear_1.weight";
    else if (!shape2(ws, "proj_out.weight", &out, &d2))
        missing = "proj_out.weight";
    if (missing)
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "FLUX transformer: no 2-D tensor %s (not a FLUX transformer?)",
                             missing);
    if (D < 1 || D > 65536 || in < 1 || in > MAX_WIDTH)
        return sdw_error_set(err, SDW_E_SHAPE, "FLUX transformer: x_embedder.weight [%lld, %lld]",
                             (long long)D, (long long)in);
    if (head_dim < 2 || D % head_dim)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "FLUX transformer: width %lld (x_embedder.weight) is not a multiple "
                             "of the head size %d",
                             (long long)D, head_dim);
    if (out != in)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "FLUX transformer: proj_out.weight has %lld outputs for %lld input "
                             "channels (patch_size 1 needs them equal)",
                             (long long)out, (long long)in);
    c.in_channels = (int)in;
    c.head_dim = head_dim;
    c.n_heads = (int)(D / head_dim);
    c.joint_dim = (int)SDW_MIN(joint, (int64_t)MAX_WIDTH + 1); /* validate names it if huge */
    c.pooled_dim = (int)SDW_MIN(pooled, (int64_t)MAX_WIDTH + 1);
    memcpy(c.axes_dim, axes_dim, sizeof c.axes_dim);
    c.guidance_embeds = sdw_weights_has(ws, "time_text_embed.guidance_embedder.linear_1.weight");
    sdw_status st;
    if ((st = count_blocks(ws, "transformer_blocks.%d.norm1.linear.weight", "double block",
                           &c.n_layers, err)) ||
        (st = count_blocks(ws, "single_transformer_blocks.%d.norm.linear.weight", "single block",
                           &c.n_single_layers, err)))
        return st;
    if ((st = sdw_flux_config_validate(&c, err))) return st;
    *cfg = c;
    return SDW_OK;
}

sdw_status sdw_flux_config_infer(const sdw_weights *ws, sdw_flux_config *cfg, sdw_error *err) {
    static const int axes[3] = {16, 56, 56}; /* FLUX.1's axes_dims_rope (head size 128) */
    return sdw_flux_config_infer_heads(ws, 128, axes, cfg, err);
}

/* ---------------------------------------------------------------------------------------- */
/* weights                                                                                  */

typedef struct stream {          /* one stream (image or text) of a FluxTransformerBlock */
    sdw_linear mod;              /* norm1(_context).linear [6D, D]: shift, scale, gate of the
                                  * attention, then shift, scale, gate of the MLP */
    sdw_linear qkv;              /* to_q|to_k|to_v (image), add_{q,k,v}_proj (text): [3D, D] */
    sdw_rms_norm norm_q, norm_k; /* norm_q/norm_k (image), norm_added_q/_k (text): [head_dim] */
    sdw_linear out;              /* to_out.0 (image), to_add_out (text): [D, D] */
    sdw_linear ff_in;            /* ff(_context).net.0.proj [4D, D] (GELU tanh after) */
    sdw_linear ff_out;           /* ff(_context).net.2 [D, 4D] */
} stream;

typedef struct double_block { /* FluxTransformerBlock */
    stream img, txt;
} double_block;

typedef struct single_block {    /* FluxSingleTransformerBlock */
    sdw_linear mod;              /* norm.linear [3D, D]: shift, scale, gate */
    sdw_linear qkv;              /* attn.to_q|to_k|to_v [3D, D] */
    sdw_rms_norm norm_q, norm_k; /* attn.norm_q / norm_k [head_dim] */
    sdw_linear mlp;              /* proj_mlp [4D, D] (GELU tanh after) */
    sdw_linear out;              /* proj_out [D, 5D] over [attention ‖ mlp] */
} single_block;

struct sdw_flux_transformer {
    sdw_flux_config cfg;
    int D;
    unsigned attn_flags; /* sdw_attention's: the model's precision */
    size_t n_params;
    sdw_linear x_embedder;       /* [D, in_channels] */
    sdw_linear context_embedder; /* [D, joint_dim] */
    sdw_dit_embedder time;     /* time_text_embed.timestep_embedder (in 256) */
    sdw_dit_embedder guidance; /* time_text_embed.guidance_embedder (in 256), if guidance_embeds */
    sdw_dit_embedder text;     /* time_text_embed.text_embedder (in pooled_dim) */
    double_block *dbl;   /* transformer_blocks [n_layers] */
    single_block *sgl;   /* single_transformer_blocks [n_single_layers] */
    sdw_linear norm_out; /* norm_out.linear [2D, D]: scale, shift */
    sdw_linear proj_out; /* [in_channels, D] */
};

/* ---------------------------------------------------------------------------------------- */
/* binding                                                                                  */

/* One stream of transformer_blocks.i: the image stream's names, or the text stream's
 * (norm1_context, add_*_proj, norm_added_*, to_add_out, ff_context). */
static sdw_status bind_stream(sdw_flux_transformer *t, stream *s, sdw_dit_binder *bd, int i,
                              bool text, sdw_error *err) {
    const int D = t->D;
    char p[SDW_DIT_NAME_LEN], n[SDW_DIT_NAME_LEN], q[SDW_DIT_NAME_LEN], k[SDW_DIT_NAME_LEN],
        v[SDW_DIT_NAME_LEN], o[SDW_DIT_NAME_LEN];
    sdw_dit_name(p, "transformer_blocks.%d", i);
    const char *ctx = text ? "_context" : "", *add = text ? "added_" : "";
    const char *qkv[3] = {
        text ? sdw_dit_name(q, "%s.attn.add_q_proj", p) : sdw_dit_name(q, "%s.attn.to_q", p),
        text ? sdw_dit_name(k, "%s.attn.add_k_proj", p) : sdw_dit_name(k, "%s.attn.to_k", p),
        text ? sdw_dit_name(v, "%s.attn.add_v_proj", p) : sdw_dit_name(v, "%s.attn.to_v", p)};
    const char *out =
        text ? sdw_dit_name(o, "%s.attn.to_add_out", p) : sdw_dit_name(o, "%s.attn.to_out.0", p);
    sdw_status st;
    if ((st = sdw_dit_bind_linear(bd, &s->mod, sdw_dit_name(n, "%s.norm1%s.linear", p, ctx), D,
                                  6 * D, err)) ||
        (st = sdw_dit_bind_stacked(bd, &s->qkv, qkv, 3, D, D, err)) ||
        (st = sdw_dit_bind_rms(bd, &s->norm_q, sdw_dit_name(n, "%s.attn.norm_%sq.weight", p, add),
                               err)) ||
        (st = sdw_dit_bind_rms(bd, &s->norm_k, sdw_dit_name(n, "%s.attn.norm_%sk.weight", p, add),
                               err)) ||
        (st = sdw_dit_bind_linear(bd, &s->out, out, D, D, err)) ||
        (st = sdw_dit_bind_linear(bd, &s->ff_in, sdw_dit_name(n, "%s.ff%s.net.0.proj", p, ctx), D,
                                  MLP_RATIO * D, err)) ||
        (st = sdw_dit_bind_linear(bd, &s->ff_out, sdw_dit_name(n, "%s.ff%s.net.2", p, ctx),
                                  MLP_RATIO * D, D, err)))
        return st;
    return SDW_OK;
}

static sdw_status bind_single(sdw_flux_transformer *t, single_block *b, sdw_dit_binder *bd, int i,
                              sdw_error *err) {
    const int D = t->D;
    char p[SDW_DIT_NAME_LEN], n[SDW_DIT_NAME_LEN], q[SDW_DIT_NAME_LEN], k[SDW_DIT_NAME_LEN],
        v[SDW_DIT_NAME_LEN];
    sdw_dit_name(p, "single_transformer_blocks.%d", i);
    const char *qkv[3] = {sdw_dit_name(q, "%s.attn.to_q", p), sdw_dit_name(k, "%s.attn.to_k", p),
                          sdw_dit_name(v, "%s.attn.to_v", p)};
    sdw_status st;
    if ((st = sdw_dit_bind_linear(bd, &b->mod, sdw_dit_name(n, "%s.norm.linear", p), D, 3 * D,
                                  err)) ||
        (st = sdw_dit_bind_stacked(bd, &b->qkv, qkv, 3, D, D, err)) ||
        (st = sdw_dit_bind_rms(bd, &b->norm_q, sdw_dit_name(n, "%s.attn.norm_q.weight", p), err)) ||
        (st = sdw_dit_bind_rms(bd, &b->norm_k, sdw_dit_name(n, "%s.attn.norm_k.weight", p), err)) ||
        (st = sdw_dit_bind_linear(bd, &b->mlp, sdw_dit_name(n, "%s.proj_mlp", p), D, MLP_RATIO * D,
                                  err)) ||
        (st = sdw_dit_bind_linear(bd, &b->out, sdw_dit_name(n, "%s.proj_out", p),
                                  (MLP_RATIO + 1) * D, D, err)))
        return st;
    return SDW_OK;
}

/* norm_out.linear whole, or (a layout storing its halves swapped) the two halves stacked in
 * diffusers' (scale, shift) order: see SDW_FLUX_NORM_OUT_SCALE. */
static sdw_status bind_norm_out(sdw_flux_transformer *t, sdw_dit_binder *bd, sdw_error *err) {
    if (!sdw_weights_has(bd->ws, "norm_out.linear.weight") &&
        sdw_weights_has(bd->ws, SDW_FLUX_NORM_OUT_SCALE ".weight")) {
        static const char *const halves[2] = {SDW_FLUX_NORM_OUT_SCALE, SDW_FLUX_NORM_OUT_SHIFT};
        return sdw_dit_bind_stacked(bd, &t->norm_out, halves, 2, t->D, t->D, err);
    }
    return sdw_dit_bind_linear(bd, &t->norm_out, "norm_out.linear", t->D, 2 * t->D, err);
}

static sdw_status bind_all(sdw_flux_transformer *t, sdw_weights *ws, sdw_error *err) {
    const sdw_flux_config *c = &t->cfg;
    sdw_dit_binder binder = {
        .ws = ws, .n_params = &t->n_params, .head_dim = c->head_dim, .qk_eps = QK_EPS};
    sdw_dit_binder *bd = &binder;
    const int D = t->D;
    sdw_status st;
    if ((st = sdw_dit_bind_linear(bd, &t->x_embedder, "x_embedder", c->in_channels, D, err)) ||
        (st = sdw_dit_bind_linear(bd, &t->context_embedder, "context_embedder", c->joint_dim, D,
                                  err)) ||
        (st = sdw_dit_bind_embedder(bd, &t->time, "time_text_embed.timestep_embedder", TIME_PROJ, D,
                                    err)) ||
        (c->guidance_embeds &&
         (st = sdw_dit_bind_embedder(bd, &t->guidance, "time_text_embed.guidance_embedder",
                                     TIME_PROJ, D, err))) ||
        (st = sdw_dit_bind_embedder(bd, &t->text, "time_text_embed.text_embedder", c->pooled_dim, D,
                                    err)))
        return st;
    for (int i = 0; i < c->n_layers; i++)
        if ((st = bind_stream(t, &t->dbl[i].img, bd, i, false, err)) ||
            (st = bind_stream(t, &t->dbl[i].txt, bd, i, true, err)))
            return st;
    for (int i = 0; i < c->n_single_layers; i++)
        if ((st = bind_single(t, &t->sgl[i], bd, i, err))) return st;
    if ((st = bind_norm_out(t, bd, err)) ||
        (st = sdw_dit_bind_linear(bd, &t->proj_out, "proj_out", D, c->in_channels, err)))
        return st;
    return SDW_OK;
}

void sdw_flux_transformer_destroy(sdw_flux_transformer *t) {
    if (!t) return;
    free(t->dbl);
    free(t->sgl);
    free(t);
}

sdw_status sdw_flux_transformer_create(sdw_weights *ws, const sdw_flux_config *cfg,
                                       sdw_flux_transformer **out, sdw_error *err) {
    SDW_ASSERT(ws && cfg && out);
    sdw_status st = sdw_flux_config_validate(cfg, err);
    if (st != SDW_OK) return st;
    sdw_flux_transformer *t = sdw_xcalloc(1, sizeof *t);
    t->cfg = *cfg;
    t->D = cfg->n_heads * cfg->head_dim;
    t->attn_flags = sdw_attention_precision_flag(ws);
    t->dbl = sdw_xcalloc((size_t)SDW_MAX(cfg->n_layers, 1), sizeof *t->dbl);
    t->sgl = sdw_xcalloc((size_t)SDW_MAX(cfg->n_single_layers, 1), sizeof *t->sgl);
    if ((st = bind_all(t, ws, err)) != SDW_OK) goto fail;
    *out = t;
    return SDW_OK;
fail:
    sdw_error_prefix(err, "FLUX transformer");
    sdw_flux_transformer_destroy(t);
    return st;
}

const sdw_flux_config *sdw_flux_transformer_config(const sdw_flux_transformer *t) {
    return &t->cfg;
}
size_t sdw_flux_transformer_n_params(const sdw_flux_transformer *t) {
    return t->n_params;
}

void sdw_flux_img_ids(int gh, int gw, float *ids) {
    for (int r = 0; r < gh; r++)
        for (int c = 0; c < gw; c++) {
            float *p = ids + ((size_t)r * gw + c) * 3;
            p[0] = 0.0f;
            p[1] = (float)r;
            p[2] = (float)c;
        }
}

/* ---------------------------------------------------------------------------------------- */
/* forward                                                                                  */

/* One forward's scratch, taken once and reused by every block. */
typedef struct scratch {
    int B, D, H, hd;
    unsigned attn_flags; /* the transformer's */
    int64_t L, L_txt, L_img;
    int64_t rows;     /* MLP row chunk */
    float *h;         /* [B, L, D] joint hidden states: per batch element text rows, image rows */
    float *nrm;       /* [B, L, D] modulated LayerNorm outputs */
    float *qkv;       /* [B, L, 3D] q|k|v of the joint sequence, same row order */
    float *att;       /* [B, L, D] attention output */
    float *tmp;       /* [max(L, rows), D] a projection's output before its gated add */
    float *ffh;       /* [rows, 4D] MLP hidden */
    float *cat;       /* [rows, 5D] single blocks: [attention ‖ gelu(mlp)] */
    float *mod[2];    /* [B, 6D] modulation vectors (two streams) */
    float *temb;      /* [B, D] silu(temb): the input of every modulation */
    float *cos, *sin; /* [L, hd/2] RoPE angles */
} scratch;

/* CombinedTimestep(Guidance)TextProjEmbeddings, after FluxTransformer2DModel scales timestep
 * and guidance by 1000 (`timestep.to(dtype) * 1000`, in f32): temb = emb(t) [+ emb(g)] +
 * text(pooled); then the SiLU every modulation applies to it first. sc->temb = silu(temb). */
static void time_text_embed(sdw_arena *ar, const sdw_flux_transformer *t, scratch *sc,
                            const float *timestep, const float *guidance, const float *pooled) {
    const int B = sc->B, D = sc->D;
    float *proj = sdw_arena_alloc(ar, sizeof(float) * (size_t)B * TIME_PROJ);
    float *tmp = sdw_arena_alloc(ar, sizeof(float) * (size_t)B * D);
    float *e = sdw_arena_alloc(ar, sizeof(float) * (size_t)B * D);
    for (int b = 0; b < B; b++) // Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        sdw_timestep_embedding(timestep[b] * 1000.0f, TIME_PROJ, true, 0.0f, proj + b * TIME_PROJ);
    sdw_dit_embedder_forward(&t->time, proj, B, tmp, sc->temb); // [B, D]
    if (t->cfg.guidance_embeds) {
        for (int b = 0; b < B; b++)
            sdw_timestep_embedding(guidance[b] * 1000.0f, TIME_PROJ, true, 0.0f,
                                   proj + b * TIME_PROJ);
        sdw_dit_embedder_forward(&t->guidance, proj, B, tmp, e);
        sdw_add(sc->temb, e, (size_t)B * D); // time_guidance_emb
    }
    sdw_dit_embedder_forward(&t->text, pooled, B, tmp, e);
    sdw_add(sc->temb, e, (size_t)B * D); // + pooled projection
    sdw_silu(sc->temb, (size_t)B * D);
    sdw_arena_free(ar, e);
    sdw_arena_free(ar, tmp);
    sdw_arena_free(ar, proj);
}

/* Row r of batch element b in a [B, L, w] buffer. */
static inline float *row_at(float *buf, const scratch *sc, int b, int64_t r, int w) {
    return buf + ((size_t)b * sc->L + r) * w;
}

/* The attention input of one stream (AdaLayerNormZero, then the stream's q|k|v with the
 * per-head RMS norms of q and k): rows [off, off + n) of every batch element. mod [B, 6D]. */
static void stream_qkv(const stream *s, scratch *sc, const float *mod, int64_t off, int64_t n) {
    const int D = sc->D;
    for (int b = 0; b < sc->B; b++) {
        const float *m = mod + (size_t)b * 6 * D; // shift_msa, scale_msa, ...
        float *nb = row_at(sc->nrm, sc, b, off, D), *qb = row_at(sc->qkv, sc, b, off, 3 * D);
        sdw_layer_norm_modulate(row_at(sc->h, sc, b, off, D), n, D, LN_EPS, m, m + D, nb);
        sdw_linear_forward(&s->qkv, sdw_rows(nb, n), sdw_rows(qb, n), 0); // [n, q|k|v]
        sdw_rms_norm_forward(&s->norm_q, qb, n, sc->H, 3 * D, qb); // per head
        sdw_rms_norm_forward(&s->norm_k, qb + D, n, sc->H, 3 * D, qb + D);
    }
}

/* RoPE on q and k, then softmax(q kᵀ / √hd) v over the whole joint sequence -> sc->att. */
static void joint_attention(scratch *sc) {
    const int D = sc->D;
    sdw_rope_apply(sc->qkv, sc->B, sc->L, 3 * D, sc->H, sc->hd, sc->cos, sc->sin);
    sdw_rope_apply(sc->qkv + D, sc->B, sc->L, 3 * D, sc->H, sc->hd, sc->cos, sc->sin);
    sdw_attention(sc->qkv, 3 * D, sc->qkv + D, 3 * D, sc->qkv + 2 * D, 3 * D, sc->B, sc->L, sc->L,
                  sc->H, sc->hd, 1.0f / sqrtf((float)sc->hd), sc->attn_flags, sc->att);
}

/* The rest of one stream of FluxTransformerBlock.forward after the attention:
 * h += gate_msa · out(att); h += gate_mlp · ff(norm2(h) · (1 + scale_mlp) + shift_mlp). */
static void stream_post(const stream *s, scratch *sc, const float *mod, int64_t off, int64_t n) {
    const int D = sc->D;
    for (int b = 0; b < sc->B; b++) {
        const float *m = mod + (size_t)b * 6 * D;
        float *hb = row_at(sc->h, sc, b, off, D), *nb = row_at(sc->nrm, sc, b, off, D);
        sdw_linear_forward(&s->out, sdw_rows(row_at(sc->att, sc, b, off, D), n),
                           sdw_rows(sc->tmp, n), 0);
        sdw_add_gated(hb, sc->tmp, m + 2 * D, n, D);                         // gate_msa
        sdw_layer_norm_modulate(hb, n, D, LN_EPS, m + 3 * D, m + 4 * D, nb); // shift/scale_mlp
        for (int64_t r0 = 0; r0 < n; r0 += sc->rows) { // FeedForward(gelu-approximate)
            const int64_t k = SDW_MIN(sc->rows, n - r0);
            sdw_linear_forward(&s->ff_in, sdw_rows(nb + r0 * D, k), sdw_rows(sc->ffh, k), 0);
            sdw_gelu_tanh(sc->ffh, (size_t)k * MLP_RATIO * D); // [k, 4D]
            sdw_linear_forward(&s->ff_out, sdw_rows(sc->ffh, k), sdw_rows(sc->tmp, k), 0);
            sdw_add_gated(hb + r0 * D, sc->tmp, m + 5 * D, k, D); // gate_mlp
        }
    }
}

/* FluxTransformerBlock.forward: both streams modulated and projected, one joint attention,
 * then each stream's gated attention output and gated MLP. Text rows [0, L_txt), image rows
 * [L_txt, L) of sc->h, in place. */
static void double_block_forward(const double_block *blk, scratch *sc) {
    const int B = sc->B;
    const sdw_act temb = sdw_rows(sc->temb, B);
    sdw_linear_forward(&blk->img.mod, temb, sdw_rows(sc->mod[0], B), 0); // norm1.linear(temb)
    sdw_linear_forward(&blk->txt.mod, temb, sdw_rows(sc->mod[1], B), 0); // norm1_context.linear
    stream_qkv(&blk->txt, sc, sc->mod[1], 0, sc->L_txt);
    stream_qkv(&blk->img, sc, sc->mod[0], sc->L_txt, sc->L_img);
    joint_attention(sc);
    stream_post(&blk->img, sc, sc->mod[0], sc->L_txt, sc->L_img);
    stream_post(&blk->txt, sc, sc->mod[1], 0, sc->L_txt);
}

/* FluxSingleTransformerBlock.forward over the joint sequence:
 * h += gate · proj_out([attn(n) ‖ gelu(proj_mlp(n))]), n = norm(h) · (1 + scale) + shift. */
static void single_block_forward(const single_block *blk, scratch *sc) {
    const int B = sc->B, D = sc->D;
    const int64_t L = sc->L;
    // [B, 3D]: shift, scale, gate
    sdw_linear_forward(&blk->mod, sdw_rows(sc->temb, B), sdw_rows(sc->mod[0], B), 0);
    for (int b = 0; b < B; b++) {
        const float *m = sc->mod[0] + (size_t)b * 3 * D;
        sdw_layer_norm_modulate(row_at(sc->h, sc, b, 0, D), L, D, LN_EPS, m, m + D,
                                row_at(sc->nrm, sc, b, 0, D));
    }
    const int64_t BL = B * L;
    sdw_linear_forward(&blk->qkv, sdw_rows(sc->nrm, BL), sdw_rows(sc->qkv, BL), 0); // q|k|v
    sdw_rms_norm_forward(&blk->norm_q, sc->qkv, B * L, sc->H, 3 * D, sc->qkv);
    sdw_rms_norm_forward(&blk->norm_k, sc->qkv + D, B * L, sc->H, 3 * D, sc->qkv + D);
    joint_attention(sc);
    for (int b = 0; b < B; b++) {
        const float *gate = sc->mod[0] + (size_t)b * 3 * D + 2 * D;
        for (int64_t r0 = 0; r0 < L; r0 += sc->rows) {
            const int64_t k = SDW_MIN(sc->rows, L - r0);
            sdw_linear_forward(&blk->mlp, sdw_rows(row_at(sc->nrm, sc, b, r0, D), k),
                               sdw_rows(sc->ffh, k), 0); // [k, 4D]
            sdw_gelu_tanh(sc->ffh, (size_t)k * MLP_RATIO * D);
            sdw_concat_channels(row_at(sc->att, sc, b, r0, D), D, sc->ffh, MLP_RATIO * D, k,
                                sc->cat); // [k, 5D]
            sdw_linear_forward(&blk->out, sdw_rows(sc->cat, k), sdw_rows(sc->tmp, k), 0);
            sdw_add_gated(row_at(sc->h, sc, b, r0, D), sc->tmp, gate, k, D);
        }
    }
}

/* FluxTransformer2DModel.forward. */
void sdw_flux_forward(const sdw_flux_transformer *t, const float *x, int B, int gh, int gw,
                      const float *timestep, const float *guidance, const float *pooled,
                      const float *context, int L_txt, float *out) {
    SDW_ASSERT(t && x && B > 0 && gh > 0 && gw > 0 && timestep && pooled && context && L_txt > 0 &&
               out);
    const sdw_flux_config *c = &t->cfg;
    SDW_ASSERT(guidance || !c->guidance_embeds); /* a guidance-distilled model needs it */
    const sdw_prof_stage prev_stage = sdw__prof_stage(SDW_PROF_UNET);
    sdw_arena *ar = sdw_arena_create();
    const int D = t->D, hd = c->head_dim;
    scratch sc = {
        .B = B, .D = D, .H = c->n_heads, .hd = hd, .L_txt = L_txt, .L_img = (int64_t)gh * gw,
        .attn_flags = t->attn_flags};
    sc.L = sc.L_txt + sc.L_img;
    /* MLP rows per chunk: a [rows, 4D] hidden of ~32 MB (682 rows at D 3072), at least 256. */
    sc.rows = SDW_MIN(sc.L, SDW_MAX((int64_t)256, ((int64_t)8 << 20) / (MLP_RATIO * D)));
    const size_t BL = (size_t)B * sc.L;
#define TAKE(n) ((float *)sdw_arena_alloc(ar, sizeof(float) * (size_t)(n)))
    sc.h = TAKE(BL * D);
    sc.nrm = TAKE(BL * D);
    sc.qkv = TAKE(BL * 3 * D);
    sc.att = TAKE(BL * D);
    sc.tmp = TAKE((size_t)SDW_MAX(sc.L, sc.rows) * D);
    sc.ffh = TAKE((size_t)sc.rows * MLP_RATIO * D);
    sc.cat = TAKE((size_t)sc.rows * (MLP_RATIO + 1) * D);
    sc.mod[0] = TAKE((size_t)B * 6 * D);
    sc.mod[1] = TAKE((size_t)B * 6 * D);
    sc.temb = TAKE((size_t)B * D);
    sc.cos = TAKE((size_t)sc.L * hd / 2);
    sc.sin = TAKE((size_t)sc.L * hd / 2);

    /* EmbedND over ids = cat(txt_ids (zeros), img_ids (0, row, col)). */
    float *ids = TAKE((size_t)sc.L * 3);
    memset(ids, 0, sizeof(float) * (size_t)L_txt * 3);
    sdw_flux_img_ids(gh, gw, ids + (size_t)L_txt * 3);
    sdw_rope_table(ids, sc.L, 3, c->axes_dim, (double)c->theta, sc.cos, sc.sin);
    sdw_arena_free(ar, ids);
#undef TAKE

    time_text_embed(ar, t, &sc, timestep, guidance, pooled); // sc.temb = silu(temb) [B, D]
    for (int b = 0; b < B; b++) { // context_embedder, x_embedder into the joint rows
        sdw_linear_forward(&t->context_embedder,
                           sdw_rows(context + (size_t)b * L_txt * c->joint_dim, L_txt),
                           sdw_rows(row_at(sc.h, &sc, b, 0, D), L_txt), 0);
        sdw_linear_forward(&t->x_embedder,
                           sdw_rows(x + (size_t)b * sc.L_img * c->in_channels, sc.L_img),
                           sdw_rows(row_at(sc.h, &sc, b, L_txt, D), sc.L_img), 0);
    }
    /* A stop (nn/stop.h) skips the remaining blocks; out is then undefined (the caller drops
     * it). */
    for (int i = 0; i < c->n_layers && !sdw_stop_requested(); i++)
        double_block_forward(&t->dbl[i], &sc);
    for (int i = 0; i < c->n_single_layers && !sdw_stop_requested(); i++)
        single_block_forward(&t->sgl[i], &sc);

    /* AdaLayerNormContinuous on the image rows ((scale, shift) = linear(silu(temb))), then
     * proj_out. */
    sdw_linear_forward(&t->norm_out, sdw_rows(sc.temb, B), sdw_rows(sc.mod[0], B), 0); // [B, 2D]
    for (int b = 0; b < B; b++) {
        const float *m = sc.mod[0] + (size_t)b * 2 * D;
        float *nb = row_at(sc.nrm, &sc, b, L_txt, D);
        sdw_layer_norm_modulate(row_at(sc.h, &sc, b, L_txt, D), sc.L_img, D, LN_EPS, m + D, m, nb);
        sdw_linear_forward(&t->proj_out, sdw_rows(nb, sc.L_img),
                           sdw_rows(out + (size_t)b * sc.L_img * c->in_channels, sc.L_img), 0);
    }

    float *bufs[] = {sc.sin, sc.cos, sc.temb, sc.mod[1], sc.mod[0], sc.cat,
                     sc.ffh, sc.tmp, sc.att,  sc.qkv,    sc.nrm,    sc.h};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        sdw_arena_free(ar, bufs[i]);
    sdw_arena_destroy(ar);
    sdw__prof_stage(prev_stage);
}
