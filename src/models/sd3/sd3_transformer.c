/* diffusers 0.30.3 SD3Transformer2DModel forward on the nn/ building blocks, f32 activations.
 * Each static function mirrors one diffusers module and names it.
 *
 * The hidden states of both streams live in one joint buffer [B, L, D] (L = L_img + L_ctx),
 * each batch element's image rows first, as JointAttnProcessor2_0 concatenates them: the blocks
 * work on the two row ranges in place and the joint attention sees the concatenation without a
 * copy. q|k|v of both streams are written into one [B, L, 3D] buffer in the same row order, so
 * the attention runs once over it. All scratch is taken once per forward and reused by every
 * block; the MLPs run a chunk of rows at a time so their 4D-wide hidden stays a few tens of MB. */
#include "models/sd3/sd3_transformer.h"

#include "io/json_config.h"
#include "models/dit_layers.h"
#include "nn/arena.h"
#include "nn/nn.h"
#include "nn/profile.h"
#include "nn/stop.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

#define LN_EPS 1e-6f  /* every LayerNorm here: elementwise_affine=False, eps 1e-6 */
#define QK_EPS 1e-6f  /* Attention(qk_norm="rms_norm", eps=1e-6) (diffusers 0.31, SD3.5) */
#define MLP_RATIO 4   /* FeedForward(mult=4) */
#define TIME_PROJ 256 /* Timesteps(num_channels=256) */
#define MAX_WIDTH (1 << 20)
#define MAX_POS 65536 /* pos_embed_max_size bound: a table side far above any model's (192) */

/* ---------------------------------------------------------------------------------------- */
/* config                                                                                   */

sdw_sd3_config sdw_sd3_config_default(void) {
    return (sdw_sd3_config){.in_channels = 16,
                            .out_channels = 16,
                            .patch_size = 2,
                            .n_layers = 18,
                            .n_heads = 18,
                            .head_dim = 64,
                            .joint_dim = 4096,
                            .caption_dim = 1152,
                            .pooled_dim = 2048,
                            .pos_embed_max_size = 96,
                            .sample_size = 128,
                            .qk_norm = false};
}

sdw_status sdw_sd3_config_validate(const sdw_sd3_config *c, sdw_error *err) {
    const struct {
        const char *name;
        int v, lo, hi;
    } r[] = {
        {"in_channels", c->in_channels, 1, MAX_WIDTH},
        {"out_channels", c->out_channels, 1, MAX_WIDTH},
        {"patch_size", c->patch_size, 1, 64},
        {"num_layers", c->n_layers, 1, SDW_SD3_MAX_BLOCKS},
        {"num_attention_heads", c->n_heads, 1, 4096},
        {"attention_head_dim", c->head_dim, 2, 4096},
        {"joint_attention_dim", c->joint_dim, 1, MAX_WIDTH},
        {"caption_projection_dim", c->caption_dim, 1, MAX_WIDTH},
        {"pooled_projection_dim", c->pooled_dim, 1, MAX_WIDTH},
        {"pos_embed_max_size", c->pos_embed_max_size, 1, MAX_POS},
        {"sample_size", c->sample_size, 1, MAX_WIDTH},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(r); i++)
        if (r[i].v < r[i].lo || r[i].v > r[i].hi)
            return sdw_error_set(err, SDW_E_INVALID_ARG, "SD3 config: %s = %d outside [%d, %d]",
                                 r[i].name, r[i].v, r[i].lo, r[i].hi);
    const int64_t D = (int64_t)c->n_heads * c->head_dim;
    if (D > 65536)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "SD3 config: width %d x %d too large",
                             c->n_heads, c->head_dim);
    /* get_2d_sincos_pos_embed splits D in half per axis, each half in sin and cos */
    if (D % 4)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "SD3 config: width %lld (heads x head size) must be a multiple of 4 "
                             "for the 2-D sin-cos position table",
                             (long long)D);
    /* the blocks run both streams at one width: context_embedder must produce it */
    if (c->caption_dim != D)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "SD3 config: caption_projection_dim %d differs from the width %lld "
                             "(num_attention_heads x attention_head_dim)",
                             c->caption_dim, (long long)D);
    if (c->sample_size < c->patch_size) /* PatchEmbed's base_size = sample_size // patch_size */
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "SD3 config: sample_size %d smaller than patch_size %d",
                             c->sample_size, c->patch_size);
    if ((int64_t)c->pos_embed_max_size * c->pos_embed_max_size * D > ((int64_t)1 << 32))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "SD3 config: position table %d^2 x %lld too large",
                             c->pos_embed_max_size, (long long)D);
    return SDW_OK;
}

/* Settings of diffusers 0.31's SD3Transformer2DModel this forward does not run: a non-empty
 * dual_attention_layers (SD3.5 Medium's MMDiT-X blocks) and a null pos_embed_max_size (PatchEmbed
 * without cropping, which no SD3 uses). */
static sdw_status check_unsupported(const sdw_json_config *j, sdw_error *err) {
    const json_t *dual = json_object_get(j->root, "dual_attention_layers");
    if (dual && !json_is_null(dual)) {
        if (!json_is_array(dual))
            return sdw_error_set(err, SDW_E_FORMAT, "%s: \"dual_attention_layers\": want an array",
                                 j->what);
        if (json_array_size(dual) > 0)
            return sdw_error_set(err, SDW_E_UNSUPPORTED,
                                 "%s: dual_attention_layers (MMDiT-X blocks, SD3.5 Medium) are "
                                 "not supported",
                                 j->what);
    }
    const json_t *pmax = json_object_get(j->root, "pos_embed_max_size");
    if (pmax && json_is_null(pmax))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: \"pos_embed_max_size\" = null (an uncropped position table) is "
                             "not supported",
                             j->what);
    return SDW_OK;
}

sdw_status sdw_sd3_config_load(const char *path, sdw_sd3_config *cfg, sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_load(path, &j, err);
    if (st) return st;
    sdw_sd3_config c = sdw_sd3_config_default();
    static const char *const qk_norms[] = {"rms_norm"};
    int qk = -1;
    if ((st = check_unsupported(&j, err)) ||
        (st = sdw_json_config_int(&j, "sample_size", 1, MAX_WIDTH, &c.sample_size, err)) ||
        (st = sdw_json_config_int(&j, "patch_size", 1, 64, &c.patch_size, err)) ||
        (st = sdw_json_config_int(&j, "in_channels", 1, MAX_WIDTH, &c.in_channels, err)) ||
        (st = sdw_json_config_int(&j, "num_layers", 1, SDW_SD3_MAX_BLOCKS, &c.n_layers, err)) ||
        (st = sdw_json_config_int(&j, "attention_head_dim", 2, 4096, &c.head_dim, err)) ||
        (st = sdw_json_config_int(&j, "num_attention_heads", 1, 4096, &c.n_heads, err)) ||
        (st = sdw_json_config_int(&j, "joint_attention_dim", 1, MAX_WIDTH, &c.joint_dim, err)) ||
        (st = sdw_json_config_int(&j, "caption_projection_dim", 1, MAX_WIDTH, &c.caption_dim,
                                  err)) ||
        (st = sdw_json_config_int(&j, "pooled_projection_dim", 1, MAX_WIDTH, &c.pooled_dim, err)) ||
        (st = sdw_json_config_int(&j, "out_channels", 1, MAX_WIDTH, &c.out_channels, err)) ||
        (st = sdw_json_config_int(&j, "pos_embed_max_size", 1, MAX_POS, &c.pos_embed_max_size,
                                  err)) ||
        (st = sdw_json_config_enum(&j, "qk_norm", qk_norms, 1, &qk, err)))
        goto done;
    c.qk_norm = qk == 0;
    /* out_channels: null means "as in_channels" (an absent key is the default 16) */
    const json_t *oc = json_object_get(j.root, "out_channels");
    if (oc && json_is_null(oc)) c.out_channels = c.in_channels;
    if ((st = sdw_sd3_config_validate(&c, err))) {
        sdw_error_prefix(err, "%s", path);
        goto done;
    }
    *cfg = c;
done:
    sdw_json_config_free(&j);
    return st;
}

/* A canonical tensor's shape, false when absent or not of n_dims dims. */
static bool shape_of(const sdw_weights *ws, const char *name, int n_dims, int64_t *s) {
    int nd;
    int64_t sh[SDW_ST_MAX_DIMS];
    if (!sdw_weights_shape(ws, name, &nd, sh) || nd != n_dims) return false;
    memcpy(s, sh, sizeof(int64_t) * (size_t)n_dims);
    return true;
}

/* Counts the joint blocks (transformer_blocks.N.norm1.linear.weight present); a gap is an error
 * naming the missing block. */
static sdw_status count_blocks(const sdw_weights *ws, int *n, sdw_error *err) {
    char name[256], first_missing[256] = "";
    int count = 0;
    for (int i = 0; i < SDW_SD3_MAX_BLOCKS; i++) {
        snprintf(name, sizeof name, "transformer_blocks.%d.norm1.linear.weight", i);
        if (!sdw_weights_has(ws, name)) {
            if (!first_missing[0]) memcpy(first_missing, name, sizeof name);
            continue;
        }
        if (count != i)
            return sdw_error_set(err, SDW_E_NOT_FOUND,
                                 "SD3 transformer: joint block %d is missing (no %s) while joint "
                                 "block %d exists",
                                 count, first_missing, i);
        count++;
    }
    *n = count;
    return SDW_OK;
}

/* PatchEmbed's base_size from a standard position table of side n: token (row 0, column 1)
 * holds sin and cos of its column coordinate 1 / (n / base_size) in channels 0 and D/4. 0 when
 * they do not read as one (the coordinate times n not integral). */
static int table_base_size(float sin_x, float cos_x, int n) {
    const double base = atan2((double)sin_x, (double)cos_x) * n;
    const double r = floor(base + 0.5);
    return r >= 1 && r <= n && fabs(base - r) < 1e-3 ? (int)r : 0;
}

/* Element i of a stored tensor as f32. */
static float stored_at(const sdw_st_tensor *t, size_t i) {
    float v;
    sdw_convert_to_f32(t->dtype, (const char *)t->data + i * sdw_dtype_size(t->dtype), &v, 1);
    return v;
}

sdw_status sdw_sd3_config_infer(const sdw_weights *ws, int head_dim, sdw_sd3_config *cfg,
                                sdw_error *err) {
    sdw_sd3_config c = sdw_sd3_config_default();
    int64_t pe[4], ce[2], te[2], po[2], tab[3];
    const char *missing = NULL;
    if (!shape_of(ws, "pos_embed.proj.weight", 4, pe))
        missing = "pos_embed.proj.weight";
    else if (!shape_of(ws, "context_embedder.weight", 2, ce))
        missing = "context_embedder.weight";
    else if (!shape_of(ws, "time_text_embed.text_embedder.linear_1.weight", 2, te))
        missing = "time_text_embed.text_embedder.linear_1.weight";
    else if (!shape_of(ws, "proj_out.weight", 2, po))
        missing = "proj_out.weight";
    else if (!shape_of(ws, "pos_embed.pos_embed", 3, tab))
        missing = "pos_embed.pos_embed";
    if (missing)
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "SD3 transformer: no tensor %s of the expected rank (not an SD3 "
                             "transformer?)",
                             missing);
    const int64_t D = pe[0];
    if (D < 1 || D > 65536 || pe[1] < 1 || pe[1] > MAX_WIDTH || pe[2] != pe[3] || pe[2] < 1 ||
        pe[2] > 64)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "SD3 transformer: pos_embed.proj.weight [%lld, %lld, %lld, %lld] is "
                             "not a square patch convolution",
                             (long long)pe[0], (long long)pe[1], (long long)pe[2],
                             (long long)pe[3]);
    if (head_dim < 2 || D % head_dim)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "SD3 transformer: width %lld (pos_embed.proj.weight) is not a "
                             "multiple of the head size %d",
                             (long long)D, head_dim);
    const int64_t pp = pe[2] * pe[3];
    if (po[0] % pp)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "SD3 transformer: proj_out.weight has %lld outputs, not a multiple "
                             "of the %lld pixels of a patch",
                             (long long)po[0], (long long)pp);
    const int64_t n = (int64_t)floor(sqrt((double)tab[1]) + 0.5);
    if (tab[0] != 1 || n < 1 || n > MAX_POS || n * n != tab[1] || tab[2] != D)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "SD3 transformer: pos_embed.pos_embed [%lld, %lld, %lld] is not a "
                             "square table [1, n^2, %lld]",
                             (long long)tab[0], (long long)tab[1], (long long)tab[2], (long long)D);
    c.in_channels = (int)pe[1];
    c.patch_size = (int)pe[2];
    c.head_dim = head_dim;
    c.n_heads = (int)(D / head_dim);
    c.caption_dim = (int)SDW_MIN(ce[0], (int64_t)MAX_WIDTH + 1); /* validate names it if huge */
    c.joint_dim = (int)SDW_MIN(ce[1], (int64_t)MAX_WIDTH + 1);
    c.pooled_dim = (int)SDW_MIN(te[1], (int64_t)MAX_WIDTH + 1);
    c.out_channels = (int)SDW_MIN(po[0] / pp, (int64_t)MAX_WIDTH + 1);
    c.pos_embed_max_size = (int)n;
    c.qk_norm = sdw_weights_has(ws, "transformer_blocks.0.attn.norm_q.weight");
    sdw_status st = count_blocks(ws, &c.n_layers, err);
    if (st) return st;
    for (int i = 0; i < c.n_layers; i++) {
        char name[128];
        snprintf(name, sizeof name, "transformer_blocks.%d.attn2.to_q.weight", i);
        if (sdw_weights_has(ws, name))
            return sdw_error_set(err, SDW_E_UNSUPPORTED,
                                 "SD3 transformer: joint block %d has a second attention (%s: an "
                                 "MMDiT-X block, SD3.5 Medium), which is not supported",
                                 i, name);
    }
    /* sample_size only sets the table's scale, which the stored table already has: read it
     * back from the table (a table of another kind keeps diffusers' default). */
    const sdw_st_tensor *stored = sdw_weights_find(ws, "pos_embed.pos_embed");
    if (n >= 2 && stored && stored->n_elems == (size_t)(n * n * D)) {
        const int base = table_base_size(stored_at(stored, (size_t)D),
                                         stored_at(stored, (size_t)(D + D / 4)), (int)n);
        if (base) c.sample_size = base * c.patch_size;
    }
    if ((st = sdw_sd3_config_validate(&c, err))) return st;
    *cfg = c;
    return SDW_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* weights                                                                                  */

typedef struct stream {          /* one stream (image or context) of a JointTransformerBlock */
    sdw_linear mod;              /* norm1(_context).linear: AdaLayerNormZero [6D, D] (shift,
                                  * scale, gate of the attention, then of the MLP); the last
                                  * block's context: AdaLayerNormContinuous [2D, D] (scale, shift) */
    sdw_linear qkv;              /* to_q|to_k|to_v (image), add_{q,k,v}_proj (context): [3D, D] */
    sdw_rms_norm norm_q, norm_k; /* qk_norm: norm_q/norm_k (image), norm_added_q/_k [head_dim] */
    sdw_linear out;              /* to_out.0 (image), to_add_out (context; not in the last) */
    sdw_linear ff_in;            /* ff(_context).net.0.proj [4D, D] (GELU tanh after) */
    sdw_linear ff_out;           /* ff(_context).net.2 [D, 4D] */
} stream;

typedef struct joint_block { /* JointTransformerBlock */
    stream img, ctx;
    bool context_pre_only; /* the last block: the context stream only feeds the attention */
} joint_block;

struct sdw_sd3_transformer {
    sdw_sd3_config cfg;
    int D;
    unsigned attn_flags; /* sdw_attention's: the model's precision */
    size_t n_params;
    sdw_conv2d patch;            /* pos_embed.proj [D, in, p, p], stride p */
    const float *pos;            /* pos_embed.pos_embed [max², D] (owned by the weights) */
    sdw_linear context_embedder; /* [D, joint_dim] */
    sdw_dit_embedder time;       /* time_text_embed.timestep_embedder (in 256) */
    sdw_dit_embedder text;       /* time_text_embed.text_embedder (in pooled_dim) */
    joint_block *blk;            /* transformer_blocks [n_layers] */
    sdw_linear norm_out;         /* norm_out.linear [2D, D]: scale, shift */
    sdw_linear proj_out;         /* [p²·out_channels, D]: per token, (p, q, channel) order */
};

/* ---------------------------------------------------------------------------------------- */
/* binding                                                                                  */

/* An AdaLayerNormContinuous linear "<whole>" [2D, D] (scale, shift), or — where the layout
 * serves its halves "<scale>" / "<shift>" (Stability's (shift, scale) order) — the two halves
 * stacked in diffusers' order. */
static sdw_status bind_continuous(sdw_sd3_transformer *t, sdw_linear *l, sdw_dit_binder *bd,
                                  const char *whole, const char *scale, const char *shift,
                                  sdw_error *err) {
    char n[SDW_DIT_NAME_LEN];
    if (sdw_weights_has(bd->ws, sdw_dit_name(n, "%s.weight", scale))) {
        const char *const halves[2] = {scale, shift};
        return sdw_dit_bind_stacked(bd, l, halves, 2, t->D, t->D, err);
    }
    return sdw_dit_bind_linear(bd, l, whole, t->D, 2 * t->D, err);
}

/* One stream of transformer_blocks.i: the image stream's names, or the context stream's
 * (norm1_context, add_*_proj, norm_added_*, to_add_out, ff_context). */
static sdw_status bind_stream(sdw_sd3_transformer *t, stream *s, sdw_dit_binder *bd, int i,
                              bool context, bool pre_only, sdw_error *err) {
    const int D = t->D;
    char p[SDW_DIT_NAME_LEN], n[SDW_DIT_NAME_LEN], q[SDW_DIT_NAME_LEN], k[SDW_DIT_NAME_LEN],
        v[SDW_DIT_NAME_LEN];
    sdw_dit_name(p, "transformer_blocks.%d", i);
    const char *ctx = context ? "_context" : "", *add = context ? "added_" : "";
    const char *qkv[3] = {
        context ? sdw_dit_name(q, "%s.attn.add_q_proj", p) : sdw_dit_name(q, "%s.attn.to_q", p),
        context ? sdw_dit_name(k, "%s.attn.add_k_proj", p) : sdw_dit_name(k, "%s.attn.to_k", p),
        context ? sdw_dit_name(v, "%s.attn.add_v_proj", p) : sdw_dit_name(v, "%s.attn.to_v", p)};
    sdw_status st;
    if (pre_only) {
        char sc[SDW_DIT_NAME_LEN], sh[SDW_DIT_NAME_LEN];
        st = bind_continuous(t, &s->mod, bd, sdw_dit_name(n, "%s.norm1_context.linear", p),
                             sdw_dit_name(sc, "%s." SDW_SD3_CONTEXT_NORM_SCALE, p),
                             sdw_dit_name(sh, "%s." SDW_SD3_CONTEXT_NORM_SHIFT, p), err);
    } else {
        st = sdw_dit_bind_linear(bd, &s->mod, sdw_dit_name(n, "%s.norm1%s.linear", p, ctx), D,
                                 6 * D, err);
    }
    if (st || (st = sdw_dit_bind_stacked(bd, &s->qkv, qkv, 3, D, D, err))) return st;
    if (t->cfg.qk_norm &&
        ((st = sdw_dit_bind_rms(bd, &s->norm_q, sdw_dit_name(n, "%s.attn.norm_%sq.weight", p, add),
                                err)) ||
         (st = sdw_dit_bind_rms(bd, &s->norm_k, sdw_dit_name(n, "%s.attn.norm_%sk.weight", p, add),
                                err))))
        return st;
    if (pre_only) return SDW_OK; /* no to_add_out, no ff_context */
    if ((st = sdw_dit_bind_linear(bd, &s->out,
                                  context ? sdw_dit_name(n, "%s.attn.to_add_out", p)
                                          : sdw_dit_name(n, "%s.attn.to_out.0", p),
                                  D, D, err)) ||
        (st = sdw_dit_bind_linear(bd, &s->ff_in, sdw_dit_name(n, "%s.ff%s.net.0.proj", p, ctx), D,
                                  MLP_RATIO * D, err)) ||
        (st = sdw_dit_bind_linear(bd, &s->ff_out, sdw_dit_name(n, "%s.ff%s.net.2", p, ctx),
                                  MLP_RATIO * D, D, err)))
        return st;
    return SDW_OK;
}

/* pos_embed.pos_embed as stored, or computed (diffusers computes the same buffer at
 * construction; it is never trained). */
static sdw_status bind_pos_embed(sdw_sd3_transformer *t, sdw_weights *ws, sdw_error *err) {
    const int64_t n = t->cfg.pos_embed_max_size;
    if (sdw_weights_has(ws, "pos_embed.pos_embed")) {
        sdw_error local;
        if (!err) err = &local;
        t->pos = sdw_weights_f32(ws, "pos_embed.pos_embed", 3, (int64_t[]){1, n * n, t->D}, err);
        if (!t->pos) return err->code;
    } else {
        float *tab = sdw_weights_alloc(ws, (size_t)(n * n) * (size_t)t->D);
        sdw_sd3_pos_embed_table(&t->cfg, tab);
        t->pos = tab;
    }
    /* the table is a fixed buffer (diffusers registers it as one), not a parameter: not in
     * n_params, so `sdw info` agrees with the reference's count */
    return SDW_OK;
}

static sdw_status bind_all(sdw_sd3_transformer *t, sdw_weights *ws, sdw_error *err) {
    const sdw_sd3_config *c = &t->cfg;
    sdw_dit_binder binder = {
        .ws = ws, .n_params = &t->n_params, .head_dim = c->head_dim, .qk_eps = QK_EPS};
    sdw_dit_binder *bd = &binder;
    const int D = t->D, p = c->patch_size;
    sdw_status st;
    if ((st = sdw_conv2d_bind(&t->patch, ws, "pos_embed.proj", c->in_channels, D, p, p, 0, true,
                              err)))
        return st;
    t->n_params += ((size_t)c->in_channels * p * p + 1) * (size_t)D;
    if ((st = bind_pos_embed(t, ws, err)) ||
        (st = sdw_dit_bind_linear(bd, &t->context_embedder, "context_embedder", c->joint_dim,
                                  c->caption_dim, err)) ||
        (st = sdw_dit_bind_embedder(bd, &t->time, "time_text_embed.timestep_embedder", TIME_PROJ, D,
                                    err)) ||
        (st = sdw_dit_bind_embedder(bd, &t->text, "time_text_embed.text_embedder", c->pooled_dim, D,
                                    err)))
        return st;
    /* The image streams first: a block the config counts but the file lacks is then named as
     * such (its first tensor, norm1.linear, is missing), before the context stream of the
     * block before it — last in the file, not in the config — fails on its shape. */
    for (int i = 0; i < c->n_layers; i++)
        if ((st = bind_stream(t, &t->blk[i].img, bd, i, false, false, err))) {
            if (st == SDW_E_NOT_FOUND && !t->blk[i].img.mod.op)
                sdw_error_prefix(err, "joint block %d of %d (transformer_blocks.%d) is missing", i,
                                 c->n_layers, i);
            return st;
        }
    for (int i = 0; i < c->n_layers; i++) {
        joint_block *b = &t->blk[i];
        b->context_pre_only = i == c->n_layers - 1; /* SD3Transformer2DModel.__init__ */
        if ((st = bind_stream(t, &b->ctx, bd, i, true, b->context_pre_only, err))) return st;
    }
    if ((st = bind_continuous(t, &t->norm_out, bd, "norm_out.linear", SDW_SD3_NORM_OUT_SCALE,
                              SDW_SD3_NORM_OUT_SHIFT, err)) ||
        (st = sdw_dit_bind_linear(bd, &t->proj_out, "proj_out", D, p * p * c->out_channels, err)))
        return st;
    return SDW_OK;
}

void sdw_sd3_transformer_destroy(sdw_sd3_transformer *t) {
    if (!t) return;
    free(t->blk);
    free(t);
}

sdw_status sdw_sd3_transformer_create(sdw_weights *ws, const sdw_sd3_config *cfg,
                                      sdw_sd3_transformer **out, sdw_error *err) {
    SDW_ASSERT(ws && cfg && out);
    sdw_status st = sdw_sd3_config_validate(cfg, err);
    if (st != SDW_OK) return st;
    sdw_sd3_transformer *t = sdw_xcalloc(1, sizeof *t);
    t->cfg = *cfg;
    t->D = cfg->n_heads * cfg->head_dim;
    t->attn_flags = sdw_attention_precision_flag(ws);
    t->blk = sdw_xcalloc((size_t)cfg->n_layers, sizeof *t->blk);
    if ((st = bind_all(t, ws, err)) != SDW_OK) goto fail;
    *out = t;
    return SDW_OK;
fail:
    sdw_error_prefix(err, "SD3 transformer");
    sdw_sd3_transformer_destroy(t);
    return st;
}

const sdw_sd3_config *sdw_sd3_transformer_config(const sdw_sd3_transformer *t) {
    return &t->cfg;
}
size_t sdw_sd3_transformer_n_params(const sdw_sd3_transformer *t) {
    return t->n_params;
}

sdw_status sdw_sd3_check_size(const sdw_sd3_transformer *t, int h, int w, sdw_error *err) {
    const int p = t->cfg.patch_size, n = t->cfg.pos_embed_max_size;
    if (h < p || w < p || h % p || w % p)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "SD3: latent size %dx%d is not a positive multiple of the patch "
                             "size %d",
                             w, h, p);
    if (h / p > n || w / p > n)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "SD3: latent size %dx%d is %dx%d patches, more than the position "
                             "table's %d per side",
                             w, h, w / p, h / p, n);
    return SDW_OK;
}

/* get_2d_sincos_pos_embed(D, n, base_size): token (row i, column j) = [sincos(x_j) ‖
 * sincos(y_i)] (the column coordinate first: np.meshgrid(grid_w, grid_h)), each sincos(u) =
 * [sin(u·ω_k) ‖ cos(u·ω_k)] over k < D/4 with ω_k = 1 / 10000^(k / (D/4)). The coordinates are
 * numpy float32 (arange(n) / (n / base_size)), the products and sin/cos float64, then rounded
 * (`.float()`). */
void sdw_sd3_pos_embed_table(const sdw_sd3_config *cfg, float *table) {
    const int n = cfg->pos_embed_max_size, D = cfg->n_heads * cfg->head_dim, q = D / 4;
    const int base = cfg->sample_size / cfg->patch_size;
    const float step = (float)((double)n / (double)base);
    double *omega = sdw_xmalloc(sizeof(double) * (size_t)q);
    for (int k = 0; k < q; k++)
        omega[k] = 1.0 / pow(10000.0, (double)k / (double)q);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const double y = (double)((float)i / step);
        for (int j = 0; j < n; j++) {
            const double x = (double)((float)j / step);
            float *o = table + ((size_t)i * n + j) * D;
            for (int k = 0; k < q; k++) {
                o[k] = (float)sin(x * omega[k]);
                o[q + k] = (float)cos(x * omega[k]);
                o[2 * q + k] = (float)sin(y * omega[k]);
                o[3 * q + k] = (float)cos(y * omega[k]);
            }
        }
    }
    free(omega);
}

/* ---------------------------------------------------------------------------------------- */
/* forward                                                                                  */

/* One forward's scratch, taken once and reused by every block. */
typedef struct scratch {
    int B, D, H, hd;
    unsigned attn_flags; /* the transformer's */
    int64_t L, L_img, L_ctx;
    int64_t rows;  /* MLP row chunk */
    float *h;      /* [B, L, D] joint hidden states: per batch element image rows, context rows */
    float *nrm;    /* [B, L, D] modulated LayerNorm outputs */
    float *qkv;    /* [B, L, 3D] q|k|v of the joint sequence, same row order */
    float *att;    /* [B, L, D] attention output */
    float *tmp;    /* [max(L, rows), D] a projection's output before its gated add */
    float *ffh;    /* [rows, 4D] MLP hidden */
    float *mod[2]; /* [B, 6D] modulation vectors (image, context) */
    float *temb;   /* [B, D] silu(temb): the input of every modulation */
} scratch;

/* y [M, out] = l(x [M, in]), f32 rows. */
static inline void linear_rows(const sdw_linear *l, const float *x, int64_t M, float *y) {
    sdw_linear_forward(l, sdw_rows(x, M), sdw_rows(y, M), 0);
}

/* CombinedTimestepTextProjEmbeddings: temb = timestep_embedder(Timesteps(256,
 * flip_sin_to_cos=True, downscale_freq_shift=0)(t)) + text_embedder(pooled), t as the pipeline
 * passes it (0..1000); then the SiLU every modulation applies to it first. sc->temb =
 * silu(temb). */
static void time_text_embed(sdw_arena *ar, const sdw_sd3_transformer *t, scratch *sc,
                            const float *timestep, const float *pooled) {
    const int B = sc->B, D = sc->D;
    float *proj = sdw_arena_alloc(ar, sizeof(float) * (size_t)B * TIME_PROJ);
    float *tmp = sdw_arena_alloc(ar, sizeof(float) * (size_t)B * D);
    float *e = sdw_arena_alloc(ar, sizeof(float) * (size_t)B * D);
    for (int b = 0; b < B; b++)
        sdw_timestep_embedding(timestep[b], TIME_PROJ, true, 0.0f, proj + b * TIME_PROJ);
    sdw_dit_embedder_forward(&t->time, proj, B, tmp, sc->temb); // [B, D]
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

/* PatchEmbed.forward: proj (conv k = stride = p) of the NHWC latents into the image rows, plus
 * the position table cropped around its centre to the gh × gw grid (cropped_pos_embed). */
static void patch_embed(const sdw_sd3_transformer *t, scratch *sc, const float *x_nhwc, int h,
                        int w) {
    const int p = t->cfg.patch_size, n = t->cfg.pos_embed_max_size, D = sc->D;
    const int gh = h / p, gw = w / p, top = (n - gh) / 2, left = (n - gw) / 2;
    for (int b = 0; b < sc->B; b++) {
        float *hb = row_at(sc->h, sc, b, 0, D);
        sdw_conv2d_forward(&t->patch,
                           sdw_nhwc(x_nhwc + (size_t)b * h * w * t->cfg.in_channels, 1, h, w),
                           sdw_nhwc(hb, 1, gh, gw), 0); // [gh, gw, D]
        for (int r = 0; r < gh; r++)
            sdw_add(hb + (size_t)r * gw * D, t->pos + ((size_t)(top + r) * n + left) * D,
                    (size_t)gw * D);
    }
}

/* The attention input of one stream (the block's norm1(_context), then the stream's q|k|v with
 * the per-head RMS norms of q and k when qk_norm): rows [off, off + n) of every batch element.
 * mod [B, mw·D]: AdaLayerNormZero's (shift, scale, …) or, for AdaLayerNormContinuous
 * (continuous), (scale, shift). */
static void stream_qkv(const sdw_sd3_transformer *t, const stream *s, scratch *sc, const float *mod,
                       int mw, bool continuous, int64_t off, int64_t n) {
    const int D = sc->D;
    for (int b = 0; b < sc->B; b++) {
        const float *m = mod + (size_t)b * mw * D;
        const float *shift = continuous ? m + D : m, *scale = continuous ? m : m + D;
        float *nb = row_at(sc->nrm, sc, b, off, D), *qb = row_at(sc->qkv, sc, b, off, 3 * D);
        sdw_layer_norm_modulate(row_at(sc->h, sc, b, off, D), n, D, LN_EPS, shift, scale, nb);
        linear_rows(&s->qkv, nb, n, qb); // [n, q|k|v]
        if (t->cfg.qk_norm) {            // per head
            sdw_rms_norm_forward(&s->norm_q, qb, n, sc->H, 3 * D, qb);
            sdw_rms_norm_forward(&s->norm_k, qb + D, n, sc->H, 3 * D, qb + D);
        }
    }
}

/* The rest of one stream of JointTransformerBlock.forward after the attention:
 * h += gate_msa · out(att); h += gate_mlp · ff(norm2(h) · (1 + scale_mlp) + shift_mlp). */
static void stream_post(const stream *s, scratch *sc, const float *mod, int64_t off, int64_t n) {
    const int D = sc->D;
    for (int b = 0; b < sc->B; b++) {
        const float *m = mod + (size_t)b * 6 * D;
        float *hb = row_at(sc->h, sc, b, off, D), *nb = row_at(sc->nrm, sc, b, off, D);
        linear_rows(&s->out, row_at(sc->att, sc, b, off, D), n, sc->tmp);
        sdw_add_gated(hb, sc->tmp, m + 2 * D, n, D);                         // gate_msa
        sdw_layer_norm_modulate(hb, n, D, LN_EPS, m + 3 * D, m + 4 * D, nb); // shift/scale_mlp
        for (int64_t r0 = 0; r0 < n; r0 += sc->rows) { // FeedForward(gelu-approximate)
            const int64_t k = SDW_MIN(sc->rows, n - r0);
            linear_rows(&s->ff_in, nb + r0 * D, k, sc->ffh); // [k, 4D]
            sdw_gelu_tanh(sc->ffh, (size_t)k * MLP_RATIO * D);
            linear_rows(&s->ff_out, sc->ffh, k, sc->tmp);
            sdw_add_gated(hb + r0 * D, sc->tmp, m + 5 * D, k, D); // gate_mlp
        }
    }
}

/* JointTransformerBlock.forward: both streams modulated and projected, one joint attention
 * (JointAttnProcessor2_0, softmax(q kᵀ / √hd) v over [image ‖ context]), then each stream's
 * gated attention output and gated MLP. The context_pre_only block computes only the image
 * rows' attention (the context output is dropped). Image rows [0, L_img), context rows
 * [L_img, L) of sc->h, in place. */
static void joint_block_forward(const sdw_sd3_transformer *t, const joint_block *blk, scratch *sc) {
    const int B = sc->B, D = sc->D;
    const float scale = 1.0f / sqrtf((float)sc->hd);
    const bool pre = blk->context_pre_only;
    linear_rows(&blk->img.mod, sc->temb, B, sc->mod[0]); // norm1.linear(silu(temb))
    linear_rows(&blk->ctx.mod, sc->temb, B, sc->mod[1]); // norm1_context.linear
    stream_qkv(t, &blk->img, sc, sc->mod[0], 6, false, 0, sc->L_img);
    stream_qkv(t, &blk->ctx, sc, sc->mod[1], pre ? 2 : 6, pre, sc->L_img, sc->L_ctx);
    if (!pre) {
        sdw_attention(sc->qkv, 3 * D, sc->qkv + D, 3 * D, sc->qkv + 2 * D, 3 * D, B, sc->L, sc->L,
                      sc->H, sc->hd, scale, sc->attn_flags, sc->att);
    } else {
        for (int b = 0; b < B; b++) { // image queries only, over every key
            const float *qb = row_at(sc->qkv, sc, b, 0, 3 * D);
            sdw_attention(qb, 3 * D, qb + D, 3 * D, qb + 2 * D, 3 * D, 1, sc->L_img, sc->L, sc->H,
                          sc->hd, scale, sc->attn_flags, row_at(sc->att, sc, b, 0, D));
        }
    }
    stream_post(&blk->img, sc, sc->mod[0], 0, sc->L_img);
    if (!pre) stream_post(&blk->ctx, sc, sc->mod[1], sc->L_img, sc->L_ctx);
}

/* The unpatchify of SD3Transformer2DModel.forward: token (r, c) of a gh × gw grid holds its
 * p × p patch as (pi, qi, channel) -> out [C, gh·p, gw·p] (einsum "nhwpqc->nchpwq"). */
static void unpatchify(const float *tok, int gh, int gw, int p, int C, float *out) {
    const int W = gw * p;
    const size_t plane = (size_t)gh * p * W;
    for (int r = 0; r < gh; r++)
        for (int c = 0; c < gw; c++) {
            const float *tp = tok + ((size_t)r * gw + c) * p * p * C;
            for (int pi = 0; pi < p; pi++)
                for (int qi = 0; qi < p; qi++)
                    for (int ch = 0; ch < C; ch++)
                        out[ch * plane + (size_t)(r * p + pi) * W + c * p + qi] =
                            tp[(pi * p + qi) * C + ch];
        }
}

/* SD3Transformer2DModel.forward. */
void sdw_sd3_forward(const sdw_sd3_transformer *t, const float *x, int B, int h, int w,
                     const float *timestep, const float *pooled, const float *context, int L,
                     float *out) {
    SDW_ASSERT(t && x && B > 0 && timestep && pooled && context && L > 0 && out);
    SDW_ASSERT(sdw_sd3_check_size(t, h, w, NULL) == SDW_OK); /* callers check it first */
    const sdw_sd3_config *c = &t->cfg;
    const sdw_prof_stage prev_stage = sdw__prof_stage(SDW_PROF_UNET);
    sdw_arena *ar = sdw_arena_create();
    const int D = t->D, p = c->patch_size, gh = h / p, gw = w / p;
    scratch sc = {
        .B = B, .D = D, .H = c->n_heads, .hd = c->head_dim, .L_img = (int64_t)gh * gw, .L_ctx = L,
        .attn_flags = t->attn_flags};
    sc.L = sc.L_img + sc.L_ctx;
    /* MLP rows per chunk: a [rows, 4D] hidden of ~32 MB (1365 rows at D 1536), at least 256. */
    sc.rows = SDW_MIN(sc.L, SDW_MAX((int64_t)256, ((int64_t)8 << 20) / (MLP_RATIO * D)));
    const size_t BL = (size_t)B * sc.L;
    const int tok_w = p * p * c->out_channels;
#define TAKE(n) ((float *)sdw_arena_alloc(ar, sizeof(float) * (size_t)(n)))
    sc.h = TAKE(BL * D);
    sc.nrm = TAKE(BL * D);
    sc.qkv = TAKE(BL * 3 * D);
    sc.att = TAKE(BL * D);
    sc.tmp = TAKE((size_t)SDW_MAX(sc.L, sc.rows) * D);
    sc.ffh = TAKE((size_t)sc.rows * MLP_RATIO * D);
    sc.mod[0] = TAKE((size_t)B * 6 * D);
    sc.mod[1] = TAKE((size_t)B * 6 * D);
    sc.temb = TAKE((size_t)B * D);
    float *x_nhwc = TAKE((size_t)B * h * w * c->in_channels);
    float *tok = TAKE((size_t)sc.L_img * tok_w);
#undef TAKE

    sdw_nchw_to_nhwc(x, B, c->in_channels, h, w, x_nhwc);
    patch_embed(t, &sc, x_nhwc, h, w);             // image rows [B, gh·gw, D]
    time_text_embed(ar, t, &sc, timestep, pooled); // sc.temb = silu(temb) [B, D]
    for (int b = 0; b < B; b++)                    // context_embedder into the context rows
        linear_rows(&t->context_embedder, context + (size_t)b * L * c->joint_dim, L,
                    row_at(sc.h, &sc, b, sc.L_img, D));
    /* A stop (nn/stop.h) skips the remaining blocks; out is then undefined (the caller drops
     * it). */
    for (int i = 0; i < c->n_layers && !sdw_stop_requested(); i++)
        joint_block_forward(t, &t->blk[i], &sc);

    /* norm_out: AdaLayerNormContinuous ((scale, shift) = linear(silu(temb))) on the image
     * rows, then proj_out and the unpatchify. */
    linear_rows(&t->norm_out, sc.temb, B, sc.mod[0]); // [B, 2D]
    for (int b = 0; b < B; b++) {
        const float *m = sc.mod[0] + (size_t)b * 2 * D;
        float *nb = row_at(sc.nrm, &sc, b, 0, D);
        sdw_layer_norm_modulate(row_at(sc.h, &sc, b, 0, D), sc.L_img, D, LN_EPS, m + D, m, nb);
        linear_rows(&t->proj_out, nb, sc.L_img, tok); // [gh·gw, p·p·C]
        unpatchify(tok, gh, gw, p, c->out_channels, out + (size_t)b * c->out_channels * h * w);
    }

    float *bufs[] = {tok,    sc.temb, sc.mod[1], sc.mod[0], sc.ffh, sc.tmp,
                     sc.att, sc.qkv,  sc.nrm,    sc.h,      x_nhwc};
    for (size_t i = 0; i < SDW_ARRAY_LEN(bufs); i++)
        sdw_arena_free(ar, bufs[i]);
    sdw_arena_destroy(ar);
    sdw__prof_stage(prev_stage);
}
