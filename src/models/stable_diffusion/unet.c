/* diffusers UNet2DConditionModel (0.25.1) forward on the nn/ building blocks, f32 NHWC.
 * Each static function mirrors one diffusers module and names it. Activations are
 * [B, H, W, C] = [B, HW, C] token rows; scratch is malloc'd per call and freed when dead, except
 * the skip connections, which live until the up path consumes them. */
#include "models/stable_diffusion/unet.h"

#include "nn/arena.h"
#include "nn/nn.h"
#include "nn/profile.h"
#include "nn/stop.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* weights                                                                                  */

typedef struct resnet_block { /* ResnetBlock2D, time_embedding_norm "default" */
    int cin, cout;
    sdw_group_norm norm1;     /* [cin] */
    sdw_conv2d conv1;         /* [cout, cin, 3, 3] */
    sdw_linear time_emb_proj; /* [cout, temb] */
    sdw_group_norm norm2;     /* [cout] */
    sdw_conv2d conv2;         /* [cout, cout, 3, 3] */
    bool has_shortcut;        /* cin != cout */
    sdw_conv2d conv_shortcut; /* [cout, cin, 1, 1] */
} resnet_block;

typedef struct attention { /* Attention (AttnProcessor2_0), no bias on q/k/v */
    int heads, head_dim; /* heads * head_dim = C */
    bool cross;          /* k/v from the context (attn2) */
    unsigned flags;      /* sdw_attention's: the model's precision */
    sdw_linear q;        /* self: to_q|to_k|to_v stacked [3C, C]; cross: to_q [C, C] */
    sdw_linear kv;       /* cross: to_k|to_v stacked [2C, cross_dim] */
    sdw_linear to_out;   /* to_out.0 [C, C] + bias */
} attention;

typedef struct transformer_block { /* BasicTransformerBlock, norm_type "layer_norm" */
    sdw_layer_norm norm1, norm2, norm3; /* [C], eps 1e-5 */
    attention attn1;                    /* self-attention */
    attention attn2;                    /* cross-attention on the context */
    sdw_linear ff_in;                   /* ff.net.0.proj [8C, C]: GEGLU, 4C inner */
    sdw_linear ff_out;                  /* ff.net.2 [C, 4C] */
} transformer_block;

typedef struct transformer_2d { /* Transformer2DModel, continuous input */
    int c, depth;
    sdw_group_norm norm;       /* [C], eps 1e-6 */
    sdw_linear proj_in;        /* [C, C] Linear, or [C, C, 1, 1] conv (a per-pixel linear) */
    transformer_block *blocks; /* [depth] */
    sdw_linear proj_out;       /* [C, C] or [C, C, 1, 1] */
} transformer_2d;

typedef struct unet_level { /* {CrossAttn,}{Down,Up}Block2D */
    int n_layers;
    resnet_block *resnets;  /* [n_layers] */
    transformer_2d *attns;  /* [n_layers], NULL for the plain block types */
    bool has_sampler;       /* all but the last level */
    sdw_conv2d sampler;     /* downsamplers.0.conv [C, C, 3, 3] stride 2 / upsamplers.0.conv */
} unet_level;

struct sdw_unet {
    sdw_unet_config cfg;
    size_t n_params;
    int n_skips;
    bool encoder_only; /* sdw_unet_create_encoder: no up path, no conv_norm_out / conv_out */
    sdw_conv2d conv_in;                    /* [C0, in, k, k] */
    sdw_linear time_1, time_2;             /* time_embedding.linear_1 [T, C0], linear_2 [T, T] */
    sdw_linear add_1, add_2;               /* add_embedding.linear_1 [T, add_in], linear_2 [T, T] */
    unet_level down[SDW_UNET_MAX_LEVELS];  /* down_blocks.i */
    resnet_block mid_resnets[2];           /* mid_block.resnets.{0,1} [C_last] */
    transformer_2d mid_attn;               /* mid_block.attentions.0 */
    unet_level up[SDW_UNET_MAX_LEVELS];    /* up_blocks.i */
    sdw_group_norm conv_norm_out;          /* [C0] */
    sdw_conv2d conv_out;                   /* [out, C0, k, k] */
};

/* ---------------------------------------------------------------------------------------- */
/* binding                                                                                  */

#define NAME_MAX_LEN 256

static const char *cat_name(char *buf, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *cat_name(char *buf, const char *prefix, const char *fmt, ...) {
    int k = snprintf(buf, NAME_MAX_LEN, "%s", prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + k, (size_t)(NAME_MAX_LEN - k), fmt, ap);
    va_end(ap);
    return buf;
}

static sdw_status bind_linear(sdw_unet *u, sdw_linear *l, sdw_weights *ws, const char *name,
                              int in, int out, bool bias, sdw_error *err) {
    sdw_status st = sdw_linear_bind(l, ws, name, in, out, bias, err);
    if (st == SDW_OK) u->n_params += (size_t)in * out + (bias ? (size_t)out : 0);
    return st;
}

static sdw_status bind_conv(sdw_unet *u, sdw_conv2d *c, sdw_weights *ws, const char *name, int in,
                            int out, int k, int stride, sdw_error *err) {
    sdw_status st = sdw_conv2d_bind(c, ws, name, in, out, k, stride, (k - 1) / 2, true, err);
    if (st == SDW_OK) u->n_params += (size_t)in * out * k * k + (size_t)out;
    return st;
}

static sdw_status bind_gn(sdw_unet *u, sdw_group_norm *g, sdw_weights *ws, const char *name,
                          int c, float eps, sdw_error *err) {
    sdw_status st = sdw_group_norm_bind(g, ws, name, c, u->cfg.norm_num_groups, eps, err);
    if (st == SDW_OK) u->n_params += 2 * (size_t)c;
    return st;
}

static sdw_status bind_ln(sdw_unet *u, sdw_layer_norm *n, sdw_weights *ws, const char *name,
                          int c, sdw_error *err) {
    sdw_status st = sdw_layer_norm_bind(n, ws, name, c, 1e-5f, err);
    if (st == SDW_OK) u->n_params += 2 * (size_t)c;
    return st;
}

static sdw_status bind_resnet(sdw_unet *u, resnet_block *r, sdw_weights *ws, const char *p,
                              int cin, int cout, sdw_error *err) {
    char n[NAME_MAX_LEN];
    const sdw_unet_config *c = &u->cfg;
    sdw_status st;
    r->cin = cin;
    r->cout = cout;
    r->has_shortcut = cin != cout;
    if ((st = bind_gn(u, &r->norm1, ws, cat_name(n, p, ".norm1"), cin, c->norm_eps, err)) ||
        (st = bind_conv(u, &r->conv1, ws, cat_name(n, p, ".conv1"), cin, cout, 3, 1, err)) ||
        (st = bind_linear(u, &r->time_emb_proj, ws, cat_name(n, p, ".time_emb_proj"),
                          c->time_embed_dim, cout, true, err)) ||
        (st = bind_gn(u, &r->norm2, ws, cat_name(n, p, ".norm2"), cout, c->norm_eps, err)) ||
        (st = bind_conv(u, &r->conv2, ws, cat_name(n, p, ".conv2"), cout, cout, 3, 1, err)))
        return st;
    if (r->has_shortcut)
        return bind_conv(u, &r->conv_shortcut, ws, cat_name(n, p, ".conv_shortcut"), cin, cout, 1,
                         1, err);
    return SDW_OK;
}

/* q, k and v read the same input (self) or k and v do (cross): one product each, stacked. */
static sdw_status bind_attention(sdw_unet *u, attention *a, sdw_weights *ws, const char *p,
                                 int c, int kv_dim, int heads, bool cross, sdw_error *err) {
    char q[NAME_MAX_LEN], k[NAME_MAX_LEN], v[NAME_MAX_LEN], o[NAME_MAX_LEN];
    const char *qkv[3] = {cat_name(q, p, ".to_q"), cat_name(k, p, ".to_k"), cat_name(v, p, ".to_v")};
    sdw_status st;
    a->heads = heads;
    a->head_dim = c / heads;
    a->cross = cross;
    a->flags = sdw_attention_precision_flag(ws);
    if (cross) {
        if ((st = sdw_linear_bind(&a->q, ws, qkv[0], c, c, false, err)) ||
            (st = sdw_linear_bind_stacked(&a->kv, ws, qkv + 1, 2, kv_dim, c, false, err)))
            return st;
    } else if ((st = sdw_linear_bind_stacked(&a->q, ws, qkv, 3, c, c, false, err))) {
        return st;
    }
    u->n_params += (size_t)c * c + 2 * (size_t)kv_dim * c;
    return bind_linear(u, &a->to_out, ws, cat_name(o, p, ".to_out.0"), c, c, true, err);
}

static sdw_status bind_transformer(sdw_unet *u, transformer_2d *t, sdw_weights *ws,
                                   const char *p, int c, int heads, int depth, sdw_error *err) {
    char n[NAME_MAX_LEN], bp[NAME_MAX_LEN];
    sdw_status st;
    t->c = c;
    t->depth = depth;
    t->blocks = sdw_xcalloc((size_t)depth, sizeof *t->blocks);
    /* Transformer2DModel's GroupNorm uses eps 1e-6 whatever the config's norm_eps. */
    if ((st = bind_gn(u, &t->norm, ws, cat_name(n, p, ".norm"), c, 1e-6f, err)) ||
        (st = bind_linear(u, &t->proj_in, ws, cat_name(n, p, ".proj_in"), c, c, true, err)) ||
        (st = bind_linear(u, &t->proj_out, ws, cat_name(n, p, ".proj_out"), c, c, true, err)))
        return st;
    for (int d = 0; d < depth; d++) {
        transformer_block *b = &t->blocks[d];
        cat_name(bp, p, ".transformer_blocks.%d", d);
        if ((st = bind_ln(u, &b->norm1, ws, cat_name(n, bp, ".norm1"), c, err)) ||
            (st = bind_attention(u, &b->attn1, ws, cat_name(n, bp, ".attn1"), c, c, heads, false,
                                 err)) ||
            (st = bind_ln(u, &b->norm2, ws, cat_name(n, bp, ".norm2"), c, err)) ||
            (st = bind_attention(u, &b->attn2, ws, cat_name(n, bp, ".attn2"), c,
                                 u->cfg.cross_attention_dim, heads, true, err)) ||
            (st = bind_ln(u, &b->norm3, ws, cat_name(n, bp, ".norm3"), c, err)) ||
            (st = bind_linear(u, &b->ff_in, ws, cat_name(n, bp, ".ff.net.0.proj"), c, 8 * c, true,
                              err)) ||
            (st = bind_linear(u, &b->ff_out, ws, cat_name(n, bp, ".ff.net.2"), 4 * c, c, true,
                              err)))
            return st;
    }
    return SDW_OK;
}

/* down_blocks.i (get_down_block): resnets in -> out channels, optional attentions, a stride-2
 * downsampler unless last. */
static sdw_status bind_down(sdw_unet *u, int i, sdw_weights *ws, sdw_error *err) {
    const sdw_unet_config *c = &u->cfg;
    unet_level *lv = &u->down[i];
    char n[NAME_MAX_LEN];
    sdw_status st;
    int cout = c->block_out_channels[i];
    int cin = i == 0 ? c->block_out_channels[0] : c->block_out_channels[i - 1];
    lv->n_layers = c->layers_per_block[i];
    lv->resnets = sdw_xcalloc((size_t)lv->n_layers, sizeof *lv->resnets);
    if (c->down_attn[i]) lv->attns = sdw_xcalloc((size_t)lv->n_layers, sizeof *lv->attns);
    for (int j = 0; j < lv->n_layers; j++) {
        if ((st = bind_resnet(u, &lv->resnets[j], ws,
                              cat_name(n, "", "down_blocks.%d.resnets.%d", i, j),
                              j == 0 ? cin : cout, cout, err)))
            return st;
        if (lv->attns &&
            (st = bind_transformer(u, &lv->attns[j], ws,
                                   cat_name(n, "", "down_blocks.%d.attentions.%d", i, j), cout,
                                   c->heads[i], c->down_depth[i], err)))
            return st;
    }
    lv->has_sampler = i < c->n_levels - 1;
    if (lv->has_sampler)
        return bind_conv(u, &lv->sampler, ws,
                         cat_name(n, "", "down_blocks.%d.downsamplers.0.conv", i), cout, cout, 3,
                         2, err);
    return SDW_OK;
}

/* up_blocks.i (get_up_block): layers+1 resnets over [h | skip] concatenations, optional
 * attentions, an upsampler unless last. Channel bookkeeping as UNet2DConditionModel.__init__. */
static sdw_status bind_up(sdw_unet *u, int i, sdw_weights *ws, sdw_error *err) {
    const sdw_unet_config *c = &u->cfg;
    int n_lv = c->n_levels;
    unet_level *lv = &u->up[i];
    char n[NAME_MAX_LEN];
    sdw_status st;
    int prev = c->block_out_channels[n_lv - (i == 0 ? 1 : i)];
    int cout = c->block_out_channels[n_lv - 1 - i];
    int cin = c->block_out_channels[n_lv - 1 - SDW_MIN(i + 1, n_lv - 1)];
    int heads = c->heads[n_lv - 1 - i];
    lv->n_layers = c->layers_per_block[n_lv - 1 - i] + 1;
    lv->resnets = sdw_xcalloc((size_t)lv->n_layers, sizeof *lv->resnets);
    if (c->up_attn[i]) lv->attns = sdw_xcalloc((size_t)lv->n_layers, sizeof *lv->attns);
    for (int j = 0; j < lv->n_layers; j++) {
        int skip = j == lv->n_layers - 1 ? cin : cout;
        int rin = j == 0 ? prev : cout;
        if ((st = bind_resnet(u, &lv->resnets[j], ws,
                              cat_name(n, "", "up_blocks.%d.resnets.%d", i, j), rin + skip, cout,
                              err)))
            return st;
        if (lv->attns && (st = bind_transformer(u, &lv->attns[j], ws,
                                                cat_name(n, "", "up_blocks.%d.attentions.%d", i, j),
                                                cout, heads, c->up_depth[i], err)))
            return st;
    }
    lv->has_sampler = i < n_lv - 1;
    if (lv->has_sampler)
        return bind_conv(u, &lv->sampler, ws, cat_name(n, "", "up_blocks.%d.upsamplers.0.conv", i),
                         cout, cout, 3, 1, err);
    return SDW_OK;
}

static sdw_status bind_all(sdw_unet *u, sdw_weights *ws, sdw_error *err) {
    const sdw_unet_config *c = &u->cfg;
    int c0 = c->block_out_channels[0], cl = c->block_out_channels[c->n_levels - 1];
    int T = c->time_embed_dim;
    sdw_status st;
    if ((st = bind_conv(u, &u->conv_in, ws, "conv_in", c->in_channels, c0, c->conv_in_kernel, 1,
                        err)) ||
        (st = bind_linear(u, &u->time_1, ws, "time_embedding.linear_1", c0, T, true, err)) ||
        (st = bind_linear(u, &u->time_2, ws, "time_embedding.linear_2", T, T, true, err)))
        return st;
    if (c->add_text_time &&
        ((st = bind_linear(u, &u->add_1, ws, "add_embedding.linear_1", c->add_in_dim, T, true,
                           err)) ||
         (st = bind_linear(u, &u->add_2, ws, "add_embedding.linear_2", T, T, true, err))))
        return st;
    for (int i = 0; i < c->n_levels; i++)
        if ((st = bind_down(u, i, ws, err))) return st;
    if (c->has_mid &&
        ((st = bind_resnet(u, &u->mid_resnets[0], ws, "mid_block.resnets.0", cl, cl, err)) ||
         (st = bind_transformer(u, &u->mid_attn, ws, "mid_block.attentions.0", cl,
                                c->heads[c->n_levels - 1], c->mid_depth, err)) ||
         (st = bind_resnet(u, &u->mid_resnets[1], ws, "mid_block.resnets.1", cl, cl, err))))
        return st;
    if (u->encoder_only) return SDW_OK;
    for (int i = 0; i < c->n_levels; i++)
        if ((st = bind_up(u, i, ws, err))) return st;
    if ((st = bind_gn(u, &u->conv_norm_out, ws, "conv_norm_out", c0, c->norm_eps, err)) ||
        (st = bind_conv(u, &u->conv_out, ws, "conv_out", c0, c->out_channels, c->conv_out_kernel,
                        1, err)))
        return st;
    return SDW_OK;
}

static void free_level(unet_level *lv) {
    if (lv->attns)
        for (int j = 0; j < lv->n_layers; j++) free(lv->attns[j].blocks);
    free(lv->attns);
    free(lv->resnets);
}

void sdw_unet_destroy(sdw_unet *u) {
    if (!u) return;
    for (int i = 0; i < SDW_UNET_MAX_LEVELS; i++) {
        free_level(&u->down[i]);
        free_level(&u->up[i]);
    }
    free(u->mid_attn.blocks);
    free(u);
}

static sdw_status create(sdw_weights *ws, const sdw_unet_config *cfg, bool encoder_only,
                         sdw_unet **out, sdw_error *err) {
    sdw_status st = sdw_unet_config_validate(cfg, err);
    if (st != SDW_OK) return st;
    sdw_unet *u = sdw_xcalloc(1, sizeof *u);
    u->cfg = *cfg;
    u->encoder_only = encoder_only;
    u->n_skips = cfg->n_levels; /* conv_in + one downsampler per level but the last */
    for (int i = 0; i < cfg->n_levels; i++) u->n_skips += cfg->layers_per_block[i];
    if ((st = bind_all(u, ws, err)) != SDW_OK) goto fail;
    *out = u;
    return SDW_OK;
fail:
    sdw_error_prefix(err, "unet");
    sdw_unet_destroy(u);
    return st;
}

sdw_status sdw_unet_create(sdw_weights *ws, const sdw_unet_config *cfg, sdw_unet **out,
                           sdw_error *err) {
    return create(ws, cfg, false, out, err);
}

sdw_status sdw_unet_create_encoder(sdw_weights *ws, const sdw_unet_config *cfg, sdw_unet **out,
                                   sdw_error *err) {
    return create(ws, cfg, true, out, err);
}

const sdw_unet_config *sdw_unet_config_of(const sdw_unet *u) { return &u->cfg; }
size_t sdw_unet_n_params(const sdw_unet *u) { return u->n_params; }
int sdw_unet_n_skips(const sdw_unet *u) { return u->n_skips; }

/* ---------------------------------------------------------------------------------------- */
/* forward                                                                                  */

/* An activation [B, h, w, c] (B is the call's batch). */
typedef struct act {
    float *d;
    int h, w, c;
} act;

/* Activations come from the forward's arena: reused buffers, not fresh pages every time. */
static float *falloc(sdw_arena *ar, int64_t n) {
    return sdw_arena_alloc(ar, (size_t)n * sizeof(float));
}
static void ffree(sdw_arena *ar, void *p) {
    sdw_arena_free(ar, p);
}

/* ResnetBlock2D.forward: GN+SiLU, conv1, + time_emb_proj(silu(temb)) per channel, GN+SiLU,
 * (dropout), conv2, + (1x1 conv) shortcut; output_scale_factor 1. temb_act = silu(emb) [B, T].
 * Fused: the time-embedding add happens inside norm2 (never stored) and conv2 accumulates onto
 * the shortcut (the residual add inside the convolution). Returns a new [B, H, W, cout]. */
static act resnet_forward(sdw_arena *ar, const resnet_block *r, act x, int B,
                          const float *temb_act) {
    int64_t HW = (int64_t)x.h * x.w, M = B * HW;
    SDW_ASSERT(x.c == r->cin);
    float *t = falloc(ar, M * SDW_MAX(r->cin, r->cout)); /* the norms' outputs */
    float *h = falloc(ar, M * r->cout);
    act y = {falloc(ar, M * r->cout), x.h, x.w, r->cout};
    float *tp = falloc(ar, (int64_t)B * r->cout);
    const sdw_act xv = sdw_nhwc(x.d, B, x.h, x.w), hv = sdw_nhwc(h, B, x.h, x.w);
    // h = conv1(silu(norm1(x)))                                     [B, H, W, cout]
    sdw_conv2d_forward_gn(&r->conv1, &r->norm1, NULL, xv, t, hv, SDW_SILU);
    sdw_linear_forward(&r->time_emb_proj, sdw_rows(temb_act, B), sdw_rows(tp, B), 0); // [B, cout]
    if (r->has_shortcut)
        sdw_conv2d_forward(&r->conv_shortcut, xv, sdw_nhwc(y.d, B, x.h, x.w), 0);
    else memcpy(y.d, x.d, sizeof(float) * (size_t)(M * r->cout));
    // y += conv2(silu(norm2(h + tp)))
    sdw_conv2d_forward_gn(&r->conv2, &r->norm2, tp, hv, t, sdw_nhwc(y.d, B, x.h, x.w),
                          SDW_SILU | SDW_ACCUMULATE);
    ffree(ar, tp);
    ffree(ar, h);
    ffree(ar, t);
    return y;
}

/* Attention.forward (AttnProcessor2_0) on norm(h), with the block's residual: h [B, Lq, C] +=
 * to_out(softmax(q kᵀ / sqrt(head_dim)) v), q/k/v projected from norm(h) (self) or q from
 * norm(h) and k/v from ctx [B, Lk, cross_dim] (cross). tmp [B, Lq, C] scratch. */
static void attention_add(sdw_arena *ar, const attention *a, const sdw_layer_norm *norm, float *h,
                          int B, int64_t Lq, const float *ctx, int64_t Lk, float *tmp) {
    const int C = a->to_out.out;
    const int64_t M = B * Lq;
    float *o = falloc(ar, B * Lq * C);
    if (!a->cross) {
        float *qkv = falloc(ar, B * Lq * 3 * C);
        sdw_linear_forward_ln(&a->q, norm, sdw_rows(h, M), tmp, sdw_rows(qkv, M), 0); // q|k|v
        sdw_attention(qkv, 3 * C, qkv + C, 3 * C, qkv + 2 * C, 3 * C, B, Lq, Lq, a->heads,
                      a->head_dim, 1.0f / sqrtf((float)a->head_dim), a->flags, o);
        ffree(ar, qkv);
    } else {
        float *q = falloc(ar, B * Lq * C), *kv = falloc(ar, B * Lk * 2 * C);
        sdw_linear_forward_ln(&a->q, norm, sdw_rows(h, M), tmp, sdw_rows(q, M), 0); // [B, Lq, C]
        sdw_linear_forward(&a->kv, sdw_rows(ctx, B * Lk), sdw_rows(kv, B * Lk), 0); // [B, Lk, k|v]
        sdw_attention(q, C, kv, 2 * C, kv + C, 2 * C, B, Lq, Lk, a->heads, a->head_dim,
                      1.0f / sqrtf((float)a->head_dim), a->flags, o);
        ffree(ar, kv);
        ffree(ar, q);
    }
    sdw_linear_forward(&a->to_out, sdw_rows(o, M), sdw_rows(h, M),
                       SDW_ACCUMULATE); // h += to_out(o)
    ffree(ar, o);
}

/* FeedForward(GEGLU, mult 4) on norm3(h) [M, C], added into h. Rows go in chunks so the
 * [rows, 8C] projection stays a few tens of MB at SDXL sizes; LayerNorm is per row, so each
 * chunk normalises its own rows just before adding into them. */
static void feed_forward_add(sdw_arena *ar, const transformer_block *b, float *h, int64_t M) {
    int C = b->ff_out.out, F = b->ff_out.in;
    int64_t rows = SDW_MAX((int64_t)256, ((int64_t)8 << 20) / (2 * F));
    rows = SDW_MIN(rows, M);
    float *t = falloc(ar, rows * C), *p = falloc(ar, rows * 2 * F), *g = falloc(ar, rows * F);
    for (int64_t r0 = 0; r0 < M; r0 += rows) {
        int64_t m = SDW_MIN(rows, M - r0);
        const sdw_act hv = sdw_rows(h + r0 * C, m), pv = sdw_rows(p, m);
        sdw_linear_forward_ln(&b->ff_in, &b->norm3, hv, t, pv, 0);       // [m, 2F]
        sdw_linear_forward_geglu(&b->ff_out, pv, g, hv, SDW_ACCUMULATE); // h += ff_out(geglu)
    }
    ffree(ar, g);
    ffree(ar, p);
    ffree(ar, t);
}

/* BasicTransformerBlock.forward (layer_norm, no ada-norm): h += attn1(norm1 h);
 * h += attn2(norm2 h, context); h += ff(norm3 h). h [B, L, C] in place. */
static void transformer_block_forward(sdw_arena *ar, const transformer_block *b, float *h, int B,
                                      int64_t L, const float *ctx, int Lc) {
    float *t = falloc(ar, B * L * b->norm1.c);
    attention_add(ar, &b->attn1, &b->norm1, h, B, L, NULL, 0, t);
    attention_add(ar, &b->attn2, &b->norm2, h, B, L, ctx, Lc, t);
    ffree(ar, t);
    feed_forward_add(ar, b, h, B * L);
}

/* Transformer2DModel.forward (continuous): x + proj_out(blocks(proj_in(GroupNorm(x)))).
 * proj_in/out are Linear or 1x1 conv; on NHWC rows both are the same matmul. x in place. */
static void transformer_2d_forward(sdw_arena *ar, const transformer_2d *t, act x, int B,
                                   const float *ctx, int Lc) {
    int64_t L = (int64_t)x.h * x.w, M = B * L;
    SDW_ASSERT(x.c == t->c);
    float *n = falloc(ar, M * t->c), *h = falloc(ar, M * t->c);
    // [B, HW, C]
    sdw_linear_forward_gn(&t->proj_in, &t->norm, sdw_nhwc(x.d, B, x.h, x.w), n, sdw_rows(h, M), 0);
    ffree(ar, n);
    for (int d = 0; d < t->depth; d++)
        transformer_block_forward(ar, &t->blocks[d], h, B, L, ctx, Lc);
    sdw_linear_forward(&t->proj_out, sdw_rows(h, M), sdw_rows(x.d, M),
                       SDW_ACCUMULATE); // x += proj_out
    ffree(ar, h);
}

/* Downsample2D (use_conv, padding 1): 3x3 stride-2 conv. Returns a new [B, ceil(H/2), ...]. */
static act downsample_forward(sdw_arena *ar, const sdw_conv2d *conv, act x, int B) {
    act y = {NULL, sdw_conv2d_out_size(conv, x.h), sdw_conv2d_out_size(conv, x.w), conv->out};
    y.d = falloc(ar, (int64_t)B * y.h * y.w * y.c);
    sdw_conv2d_forward(conv, sdw_nhwc(x.d, B, x.h, x.w), sdw_nhwc(y.d, B, y.h, y.w), 0);
    return y;
}

/* F.interpolate(mode="nearest", size=(oh, ow)): src = min(floor(dst * (in/out)), in - 1) with
 * the scale in float, as torch's nearest kernel computes it. */
static void resize_nearest(const float *x, int B, int H, int W, int C, int oh, int ow, float *y) {
    float sh = (float)H / (float)oh, sw = (float)W / (float)ow;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < oh; i++) {
            int si = SDW_MIN((int)floorf((float)i * sh), H - 1);
            for (int j = 0; j < ow; j++) {
                int sj = SDW_MIN((int)floorf((float)j * sw), W - 1);
                memcpy(y + (((int64_t)b * oh + i) * ow + j) * C,
                       x + (((int64_t)b * H + si) * W + sj) * C, sizeof(float) * (size_t)C);
            }
        }
}

/* Upsample2D (use_conv): nearest to (oh, ow) — 2x unless the UNet passes the skip's size for
 * odd inputs (forward_upsample_size) — then a 3x3 conv. Consumes x. */
static act upsample_forward(sdw_arena *ar, const sdw_conv2d *conv, act x, int B, int oh, int ow) {
    float *u = falloc(ar, (int64_t)B * oh * ow * x.c);
    if (oh == 2 * x.h && ow == 2 * x.w) sdw_upsample_nearest2x(x.d, B, x.h, x.w, x.c, u);
    else resize_nearest(x.d, B, x.h, x.w, x.c, oh, ow, u);
    ffree(ar, x.d);
    act y = {falloc(ar, (int64_t)B * oh * ow * conv->out), oh, ow, conv->out};
    sdw_conv2d_forward(conv, sdw_nhwc(u, B, oh, ow), sdw_nhwc(y.d, B, oh, ow), 0);
    ffree(ar, u);
    return y;
}

/* Timesteps + TimestepEmbedding (+ SDXL "text_time" add_embedding), then the SiLU every
 * ResnetBlock2D applies to it first. Returns a new silu(emb) [B, T]. */
static float *time_embedding_forward(sdw_arena *ar, const sdw_unet *u, int B,
                                     const float *timesteps, const float *text_embeds,
                                     const float *time_ids) {
    const sdw_unet_config *c = &u->cfg;
    int c0 = c->block_out_channels[0], T = c->time_embed_dim;
    float *ts = falloc(ar, (int64_t)B * c0), *e1 = falloc(ar, (int64_t)B * T),
          *emb = falloc(ar, (int64_t)B * T);
    for (int b = 0; b < B; b++)
        sdw_timestep_embedding(timesteps[b], c0, c->flip_sin_to_cos, c->freq_shift, ts + b * c0);
    sdw_linear_forward(&u->time_1, sdw_rows(ts, B), sdw_rows(e1, B), 0); // [B, T]
    sdw_silu(e1, (size_t)B * T);
    sdw_linear_forward(&u->time_2, sdw_rows(e1, B), sdw_rows(emb, B), 0);
    if (c->add_text_time) {
        SDW_ASSERT(text_embeds && time_ids); /* SDXL UNets need added conditioning */
        int D = c->add_in_dim, td = c->add_text_dim, n_ids = c->add_n_time_ids;
        int ad = c->addition_time_embed_dim;
        float *in = falloc(ar, (int64_t)B * D), *aug = falloc(ar, (int64_t)B * T);
        for (int b = 0; b < B; b++) { // concat(text_embeds, sinusoid(time_ids) flattened)
            float *row = in + (int64_t)b * D;
            memcpy(row, text_embeds + (int64_t)b * td, sizeof(float) * (size_t)td);
            for (int k = 0; k < n_ids; k++)
                sdw_timestep_embedding(time_ids[b * n_ids + k], ad, c->flip_sin_to_cos,
                                       c->freq_shift, row + td + k * ad);
        }
        sdw_linear_forward(&u->add_1, sdw_rows(in, B), sdw_rows(e1, B), 0); // [B, T]
        sdw_silu(e1, (size_t)B * T);
        sdw_linear_forward(&u->add_2, sdw_rows(e1, B), sdw_rows(aug, B), 0);
        sdw_add(emb, aug, (size_t)B * T);
        ffree(ar, aug);
        ffree(ar, in);
    }
    sdw_silu(emb, (size_t)B * T);
    ffree(ar, e1);
    ffree(ar, ts);
    return emb;
}

void sdw_unet_forward(const sdw_unet *u, const float *x, int B, int H, int W,
                      const float *timesteps, const float *context, int L,
                      const float *text_embeds, const float *time_ids, float *out) {
    sdw_unet_forward_ex(u, x, B, H, W, timesteps, context, L, text_embeds, time_ids, NULL, out);
}

/* A stop (nn/stop.h) seen between blocks: frees the activations still live (the skips not yet
 * consumed and h, when it is not the newest skip) so that the forward can end early. */
static void drop_live(sdw_arena *ar, act *skips, int ns, float *h) {
    for (int k = 0; k < ns; k++)
        ffree(ar, skips[k].d);
    ffree(ar, h);
}

/* Where the encoder half's skips go: kept for the UNet's own up path (keep, n_skips entries), or
 * handed to fn as they are made (a ControlNet's zero convolutions) and freed once the next
 * block has read them. */
typedef struct skip_sink {
    act *keep;
    sdw_unet_skip_fn fn;
    void *user;
    int B;
} skip_sink;

static void sink_put(const skip_sink *s, int k, act a) {
    if (s->keep) s->keep[k] = a;
    else s->fn(s->user, k, a.d, s->B, a.h, a.w, a.c);
}

/* h is replaced by the next block's output: a skip handed out is no longer needed. */
static void sink_done(sdw_arena *ar, const skip_sink *s, act old) {
    if (!s->keep) ffree(ar, old.d);
}

/* The encoder half of UNet2DConditionModel.forward (also ControlNetModel.forward's body):
 * conv_in (+ in_add, the ControlNet's conditioning embedding, broadcast over the batch), the
 * down blocks (every block output a skip, in push order), the mid block. Returns the mid-block
 * output (a new activation the caller frees), or {NULL} when a stop was seen (everything this
 * function made is freed; skips already given to a kept sink are freed too). */
static act encoder_forward(sdw_arena *ar, const sdw_unet *u, const float *x, int B, int H, int W,
                           const float *temb, const float *context, int L, const float *in_add,
                           const skip_sink *sink) {
    const sdw_unet_config *c = &u->cfg;
    int ns = 0;
    act h = {falloc(ar, (int64_t)B * H * W * c->block_out_channels[0]), H, W,
             c->block_out_channels[0]};
    // [B, H, W, C0]
    sdw_conv2d_forward(&u->conv_in, sdw_nhwc(x, B, H, W), sdw_nhwc(h.d, B, H, W), 0);
    if (in_add) // sample = conv_in(sample) + controlnet_cond_embedding(cond)
        for (int b = 0; b < B; b++)
            sdw_add(h.d + (int64_t)b * H * W * h.c, in_add, (size_t)H * W * h.c);
    sink_put(sink, ns++, h);
    for (int i = 0; i < c->n_levels; i++) { // CrossAttnDownBlock2D / DownBlock2D
        const unet_level *lv = &u->down[i];
        for (int j = 0; j < lv->n_layers; j++) {
            act prev = h;
            h = resnet_forward(ar, &lv->resnets[j], h, B, temb);
            sink_done(ar, sink, prev);
            if (lv->attns) transformer_2d_forward(ar, &lv->attns[j], h, B, context, L);
            sink_put(sink, ns++, h);
            if (sdw_stop_requested()) { /* h is the newest skip */
                if (sink->keep) drop_live(ar, sink->keep, ns, NULL);
                else ffree(ar, h.d);
                return (act){0};
            }
        }
        if (lv->has_sampler) {
            act prev = h;
            h = downsample_forward(ar, &lv->sampler, h, B);
            sink_done(ar, sink, prev);
            sink_put(sink, ns++, h);
        }
    }
    SDW_ASSERT(ns == u->n_skips);

    /* UNetMidBlock2DCrossAttn: resnet, transformer, resnet. Without a mid block the last skip
     * doubles as the sample: copy it so each buffer has one owner. */
    act m;
    if (c->has_mid) {
        act t = resnet_forward(ar, &u->mid_resnets[0], h, B, temb);
        transformer_2d_forward(ar, &u->mid_attn, t, B, context, L);
        m = resnet_forward(ar, &u->mid_resnets[1], t, B, temb);
        ffree(ar, t.d);
    } else {
        size_t n = (size_t)B * h.h * h.w * h.c;
        m = (act){falloc(ar, (int64_t)n), h.h, h.w, h.c};
        memcpy(m.d, h.d, n * sizeof(float));
    }
    sink_done(ar, sink, h);
    return m;
}

/* UNet2DConditionModel.forward. Polls the run's stop flag between blocks: when it is set the
 * remaining blocks are skipped and out is left undefined (the caller drops it). */
void sdw_unet_forward_ex(const sdw_unet *u, const float *x, int B, int H, int W,
                         const float *timesteps, const float *context, int L,
                         const float *text_embeds, const float *time_ids,
                         const sdw_unet_extra *extra, float *out) {
    const sdw_unet_config *c = &u->cfg;
    int n_lv = c->n_levels;
    SDW_ASSERT(!u->encoder_only); /* an encoder has no up path: sdw_unet_encode */
    SDW_ASSERT(B > 0 && H > 0 && W > 0 && L > 0 && x && timesteps && context && out);
    const sdw_prof_stage prev_stage = sdw__prof_stage(SDW_PROF_UNET);
    sdw_arena *ar = sdw_arena_create();
    float *temb = time_embedding_forward(ar, u, B, timesteps, text_embeds, time_ids); // [B, T]

    /* conv_in, the down path and the mid block; every block output is a skip (kept until
     * consumed). */
    act *skips = sdw_xcalloc((size_t)u->n_skips, sizeof *skips);
    int ns = u->n_skips;
    const skip_sink keep = {.keep = skips, .B = B};
    act h = encoder_forward(ar, u, x, B, H, W, temb, context, L, NULL, &keep);
    if (!h.d) goto stopped;
    if (extra && extra->down_residuals)
        for (int k = 0; k < ns; k++)
            sdw_add(skips[k].d, extra->down_residuals[k],
                    (size_t)B * skips[k].h * skips[k].w * skips[k].c);
    if (extra && extra->mid_residual)
        sdw_add(h.d, extra->mid_residual, (size_t)B * h.h * h.w * h.c);

    /* Up path: each resnet eats the newest skip, concatenated after h. */
    for (int i = 0; i < n_lv; i++) { // CrossAttnUpBlock2D / UpBlock2D
        const unet_level *lv = &u->up[i];
        for (int j = 0; j < lv->n_layers; j++) {
            act s = skips[--ns];
            SDW_ASSERT(s.h == h.h && s.w == h.w);
            act cat = {falloc(ar, (int64_t)B * h.h * h.w * (h.c + s.c)), h.h, h.w, h.c + s.c};
            sdw_concat_channels(h.d, h.c, s.d, s.c, (int64_t)B * h.h * h.w, cat.d);
            ffree(ar, h.d);
            ffree(ar, s.d);
            h = resnet_forward(ar, &lv->resnets[j], cat, B, temb);
            ffree(ar, cat.d);
            if (lv->attns) transformer_2d_forward(ar, &lv->attns[j], h, B, context, L);
            if (sdw_stop_requested()) {
                drop_live(ar, skips, ns, h.d);
                goto stopped;
            }
        }
        if (lv->has_sampler)
            h = upsample_forward(ar, &lv->sampler, h, B, skips[ns - 1].h, skips[ns - 1].w);
    }
    SDW_ASSERT(ns == 0);

    /* conv_norm_out + SiLU, conv_out. */
    const sdw_act hv = sdw_nhwc(h.d, B, H, W);
    sdw_group_norm_forward(&u->conv_norm_out, NULL, hv, hv, SDW_SILU);
    sdw_conv2d_forward(&u->conv_out, hv, sdw_nhwc(out, B, H, W), 0); // [B, H, W, out]
    ffree(ar, h.d);
stopped:
    free(skips);
    ffree(ar, temb);
    sdw_arena_destroy(ar);
    sdw__prof_stage(prev_stage);
}

void sdw_unet_encode(const sdw_unet *u, const float *x, int B, int H, int W,
                     const float *timesteps, const float *context, int L,
                     const float *text_embeds, const float *time_ids, const float *in_add,
                     sdw_unet_skip_fn fn, void *user) {
    SDW_ASSERT(B > 0 && H > 0 && W > 0 && L > 0 && x && timesteps && context && fn);
    const sdw_prof_stage prev_stage = sdw__prof_stage(SDW_PROF_UNET);
    sdw_arena *ar = sdw_arena_create();
    float *temb = time_embedding_forward(ar, u, B, timesteps, text_embeds, time_ids); // [B, T]
    const skip_sink sink = {.fn = fn, .user = user, .B = B};
    act m = encoder_forward(ar, u, x, B, H, W, temb, context, L, in_add, &sink);
    if (m.d) fn(user, u->n_skips, m.d, B, m.h, m.w, m.c);
    ffree(ar, m.d);
    ffree(ar, temb);
    sdw_arena_destroy(ar);
    sdw__prof_stage(prev_stage);
}
