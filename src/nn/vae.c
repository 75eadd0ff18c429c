/* nn/vae.c — diffusers AutoencoderKL (0.25.1) forward passes on the nn.h building blocks.
 *
 * Module map (diffusers class -> function here):
 *   ResnetBlock2D (temb None, output_scale_factor 1)  -> resnet_forward
 *   Attention (VAE mid-block: 1 head of dim C)        -> attn_forward
 *   UNetMidBlock2D                                    -> mid_forward
 *   Upsample2D (nearest x2 + conv)                    -> upsample_forward (phase-split)
 *   Downsample2D (pad (0,1,0,1) + conv s2 p0)         -> downsample_forward
 *   Encoder / Decoder / AutoencoderKL.encode|decode   -> sdw_vae_encode / sdw_vae_decode
 * Every GroupNorm in the VAE uses eps 1e-6 (diffusers passes resnet_eps=1e-6 throughout).
 *
 * Memory: each stage takes ownership of its input buffer and returns a new one, freeing
 * everything dead as early as possible, so the peak is a few activations of one stage, not
 * the whole network (a 512x512 SD decode runs 128-512 channels at up to full resolution), and
 * activations are bf16 when the weights are (see "forward" below).
 */
#include "nn/vae.h"

#include "nn/arena.h"
#include "nn/nn.h"
#include "nn/nn_impl.h"
#include "nn/profile.h"
#include "nn/vae_impl.h"

#include "io/json_config.h"

#include <float.h>
#include <pthread.h>
#include <math.h>
#include <string.h>

#define VAE_EPS 1e-6f
#define NAME_MAX_LEN 256

/* ---- config ---- */

sdw_vae_config sdw_vae_config_default(void) {
    return (sdw_vae_config){
        .in_channels = 3,
        .out_channels = 3,
        .latent_channels = 4,
        .n_levels = 1,
        .block_out_channels = {64},
        .layers_per_block = 1,
        .norm_num_groups = 32,
        .scaling_factor = 0.18215f,
        .shift_factor = 0.0f,
        .use_quant_conv = true,
        .use_post_quant_conv = true,
        .mid_block_attention = true,
    };
}

/* down_block_types / up_block_types: optional; when present one entry per level, all `want`. */
static sdw_status block_types(const sdw_json_config *j, const char *key, const char *want,
                              int n_levels, sdw_error *err) {
    const char *names[SDW_VAE_MAX_LEVELS];
    int n = 0; /* stays 0 when the key is absent or null */
    sdw_status st = sdw_json_config_string_list(j, key, SDW_VAE_MAX_LEVELS, names, &n, err);
    if (st != SDW_OK || n == 0) return st;
    if (n != n_levels)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: \"%s\" has %d entries, block_out_channels has %d", j->what, key,
                             n, n_levels);
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], want) != 0)
            return sdw_error_set(err, SDW_E_UNSUPPORTED,
                                 "%s: \"%s\"[%d] is \"%s\"; only %s is supported", j->what, key, i,
                                 names[i], want);
    return SDW_OK;
}

/* *cfg from a parsed vae/config.json: absent keys keep diffusers' defaults. */
static sdw_status config_from(const sdw_json_config *j, sdw_vae_config *cfg, sdw_error *err) {
    static const char *const silu[] = {"silu"};
    sdw_vae_config c = sdw_vae_config_default();
    int act = 0;
    sdw_status st;
    if ((st = sdw_json_config_int(j, "in_channels", 1, 64, &c.in_channels, err)) ||
        (st = sdw_json_config_int(j, "out_channels", 1, 64, &c.out_channels, err)) ||
        (st = sdw_json_config_int(j, "latent_channels", 1, 1024, &c.latent_channels, err)) ||
        (st = sdw_json_config_int(j, "layers_per_block", 1, 64, &c.layers_per_block, err)) ||
        (st = sdw_json_config_int(j, "norm_num_groups", 1, 1024, &c.norm_num_groups, err)) ||
        (st = sdw_json_config_float(j, "scaling_factor", -FLT_MAX, FLT_MAX, &c.scaling_factor,
                                    err)) ||
        (st = sdw_json_config_float(j, "shift_factor", -FLT_MAX, FLT_MAX, &c.shift_factor, err)) ||
        (st = sdw_json_config_bool(j, "use_quant_conv", &c.use_quant_conv, err)) ||
        (st = sdw_json_config_bool(j, "use_post_quant_conv", &c.use_post_quant_conv, err)) ||
        (st = sdw_json_config_bool(j, "mid_block_add_attention", &c.mid_block_attention, err)) ||
        (st = sdw_json_config_int_list(j, "block_out_channels", SDW_VAE_MAX_LEVELS, 1, 65536,
                                       c.block_out_channels, &c.n_levels, err)) ||
        (st = block_types(j, "down_block_types", "DownEncoderBlock2D", c.n_levels, err)) ||
        (st = block_types(j, "up_block_types", "UpDecoderBlock2D", c.n_levels, err)) ||
        (st = sdw_json_config_enum(j, "act_fn", silu, 1, &act, err)))
        return st;
    /* Decoding divides the latents by it: 0 gives an image of infinities, silently. */
    if (c.scaling_factor == 0.0f)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "%s: scaling_factor 0 would divide the latents by zero "
                             "(SD 1.x: 0.18215, SDXL: 0.13025)",
                             j->what);
    *cfg = c;
    return SDW_OK;
}

sdw_status sdw_vae_config_parse(const char *json, size_t len, sdw_vae_config *cfg, sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_parse(json, len, "vae config", &j, err);
    if (st == SDW_OK) st = config_from(&j, cfg, err);
    sdw_json_config_free(&j);
    return st;
}

sdw_status sdw_vae_config_load(const char *path, sdw_vae_config *cfg, sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_load(path, &j, err);
    if (st == SDW_OK) st = config_from(&j, cfg, err);
    sdw_json_config_free(&j);
    return st;
}

/* ---- architecture from tensor shapes ---- */

static const sdw_st_tensor *find_fmt(const sdw_st_file *f, const char *prefix, const char *fmt,
                                     ...) __attribute__((format(printf, 3, 4)));
static const sdw_st_tensor *find_fmt(const sdw_st_file *f, const char *prefix, const char *fmt,
                                     ...) {
    char name[NAME_MAX_LEN];
    int n = snprintf(name, sizeof name, "%s", prefix);
    if (n < 0 || (size_t)n >= sizeof name) return NULL;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(name + n, sizeof name - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)m >= sizeof name - (size_t)n) return NULL;
    return sdw_st_find(f, name);
}

bool sdw_vae_file_is_ldm(const sdw_st_file *f, const char *prefix) {
    return find_fmt(f, prefix, "decoder.mid.block_1.conv1.weight") ||
           find_fmt(f, prefix, "encoder.mid.block_1.conv1.weight");
}

static bool is_conv_weight(const sdw_st_tensor *t) {
    return t && t->n_dims == 4 && t->shape[0] > 0 && t->shape[0] <= 65536 && t->shape[1] > 0 &&
           t->shape[1] <= 65536;
}

/* Decoder level l (0 = full resolution, as block_out_channels[l]) resnet m's conv1. */
static const sdw_st_tensor *dec_conv1(const sdw_st_file *f, const char *prefix, bool ldm,
                                      int n_levels, int l, int m) {
    return ldm ? find_fmt(f, prefix, "decoder.up.%d.block.%d.conv1.weight", l, m)
               : find_fmt(f, prefix, "decoder.up_blocks.%d.resnets.%d.conv1.weight",
                          n_levels - 1 - l, m);
}

sdw_status sdw_vae_config_infer(const sdw_st_file *f, const char *prefix, sdw_vae_config *cfg,
                                sdw_error *err) {
    const sdw_st_tensor *conv_in = find_fmt(f, prefix, "decoder.conv_in.weight");
    const sdw_st_tensor *conv_out = find_fmt(f, prefix, "decoder.conv_out.weight");
    if (!conv_in || !conv_out)
        return sdw_error_set(err, SDW_E_NOT_FOUND, "no VAE decoder under \"%s\" in %s", prefix,
                             sdw_st_path(f));
    if (!is_conv_weight(conv_in) || !is_conv_weight(conv_out))
        return sdw_error_set(err, SDW_E_FORMAT, "%sdecoder.conv_in/conv_out: not conv weights",
                             prefix);
    bool ldm = sdw_vae_file_is_ldm(f, prefix);
    sdw_vae_config c = sdw_vae_config_default();

    /* Levels: count decoder up levels by their first resnet (numbering style independent). */
    c.n_levels = 0;
    while (c.n_levels <= SDW_VAE_MAX_LEVELS &&
           (ldm ? find_fmt(f, prefix, "decoder.up.%d.block.0.conv1.weight", c.n_levels)
                : find_fmt(f, prefix, "decoder.up_blocks.%d.resnets.0.conv1.weight", c.n_levels)))
        c.n_levels++;
    if (c.n_levels < 1 || c.n_levels > SDW_VAE_MAX_LEVELS)
        return sdw_error_set(err, SDW_E_FORMAT, "%sdecoder: %d up levels (want 1 to %d)", prefix,
                             c.n_levels, SDW_VAE_MAX_LEVELS);
    for (int l = 0; l < c.n_levels; l++) {
        const sdw_st_tensor *t = dec_conv1(f, prefix, ldm, c.n_levels, l, 0);
        if (!is_conv_weight(t))
            return sdw_error_set(err, SDW_E_FORMAT, "%sdecoder level %d: bad resnet conv1", prefix, l);
        c.block_out_channels[l] = (int)t->shape[0];
    }
    int n_dec = 0;
    while (n_dec < 64 && dec_conv1(f, prefix, ldm, c.n_levels, 0, n_dec)) n_dec++;
    if (n_dec < 2)
        return sdw_error_set(err, SDW_E_FORMAT, "%sdecoder: %d resnets per level (want >= 2)",
                             prefix, n_dec);
    c.layers_per_block = n_dec - 1;

    c.latent_channels = (int)conv_in->shape[1];
    c.out_channels = (int)conv_out->shape[0];
    const sdw_st_tensor *enc_in = find_fmt(f, prefix, "encoder.conv_in.weight");
    c.in_channels = is_conv_weight(enc_in) ? (int)enc_in->shape[1] : c.out_channels;
    c.use_quant_conv = find_fmt(f, prefix, "quant_conv.weight") != NULL;
    c.use_post_quant_conv = find_fmt(f, prefix, "post_quant_conv.weight") != NULL;
    c.mid_block_attention =
        ldm ? find_fmt(f, prefix, "decoder.mid.attn_1.q.weight") != NULL
            : (find_fmt(f, prefix, "decoder.mid_block.attentions.0.to_q.weight") ||
               find_fmt(f, prefix, "decoder.mid_block.attentions.0.query.weight"));
    if (conv_in->shape[0] != c.block_out_channels[c.n_levels - 1])
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%sdecoder.conv_in makes %lld channels but the lowest level has %d",
                             prefix, (long long)conv_in->shape[0],
                             c.block_out_channels[c.n_levels - 1]);
    *cfg = c;
    return SDW_OK;
}

/* ---- layers and binding ---- */

typedef struct vae_resnet {
    sdw_group_norm norm1, norm2; /* [cin], [cout] */
    sdw_conv2d conv1, conv2;     /* 3x3 pad 1: cin->cout, cout->cout */
    sdw_conv2d shortcut;         /* 1x1 cin->cout, only when cin != cout */
    int cin, cout;
} vae_resnet;

typedef struct vae_attn {
    sdw_group_norm norm;     /* [c] */
    sdw_linear qkv;          /* q|k|v stacked [3c, c] (1x1 convs in LDM files) */
    sdw_linear out;          /* [c, c] */
    int c;
} vae_attn;

/* Upsample2D = nearest x2 then a 3x3 conv, computed without the upsampled tensor: each output
 * row parity py sees only 2 distinct input rows, each column parity px only 2 columns, so the
 * 3x3 kernel folds into four 2x2 kernels over the low-resolution input (2.25x fewer
 * multiply-adds, and no 4x-size intermediate). phase[py] stacks the px = 0, 1 kernels along
 * the output channels; pad 1 before and after makes its output index (i+py, j+px) hold output
 * pixel (2i+py, 2j+px). */
typedef struct vae_upsample {
    sdw_conv2d phase[2]; /* k 2, pad 1/1: c -> 2c, weights derived at bind */
    int c;
} vae_upsample;

typedef struct vae_mid {
    vae_resnet res[2];
    vae_attn attn;
    bool has_attn;
} vae_mid;

struct sdw_vae {
    sdw_vae_config cfg;
    size_t n_params;
    bool has_encoder;
    /* sdw_vae_create_lazy: the encoder is bound from ws on the first encode, under enc_mu */
    sdw_weights *ws;
    bool enc_pending;
    pthread_mutex_t enc_mu;
    /* decoder, in execution order */
    sdw_conv2d post_quant_conv; /* 1x1 latent->latent (if cfg.use_post_quant_conv) */
    sdw_conv2d dec_conv_in;     /* 3x3 latent -> boc[L-1] */
    vae_mid dec_mid;
    vae_resnet *up_res;         /* [L][layers_per_block+1]; up_blocks.i = level L-1-i */
    vae_upsample upsample[SDW_VAE_MAX_LEVELS]; /* up_blocks.i, i < L-1 */
    sdw_group_norm dec_norm_out;             /* [boc[0]] */
    sdw_conv2d dec_conv_out;                 /* 3x3 boc[0] -> out_channels */
    /* encoder, in execution order */
    sdw_conv2d enc_conv_in;                    /* 3x3 in_channels -> boc[0] */
    vae_resnet *down_res;                      /* [L][layers_per_block] */
    sdw_conv2d downsample[SDW_VAE_MAX_LEVELS]; /* 3x3 stride 2 pad 0, i < L-1 */
    vae_mid enc_mid;
    sdw_group_norm enc_norm_out; /* [boc[L-1]] */
    sdw_conv2d enc_conv_out;     /* 3x3 boc[L-1] -> 2·latent (mean, logvar) */
    sdw_conv2d quant_conv;       /* 1x1 2·latent -> 2·latent (if cfg.use_quant_conv) */
};

static size_t conv_params(const sdw_conv2d *c) {
    return (size_t)c->out * c->in * c->k * c->k + (c->b ? (size_t)c->out : 0);
}

/* Bind helpers: name = "<prefix>.<sub>"; they add the bound parameter count to *np. */
static void join(char *name, const char *prefix, const char *sub) {
    int n = sub[0] ? snprintf(name, NAME_MAX_LEN, "%s.%s", prefix, sub)
                   : snprintf(name, NAME_MAX_LEN, "%s", prefix);
    SDW_ASSERT(n > 0 && n < NAME_MAX_LEN);
}

static sdw_status bind_conv_pad(sdw_conv2d *c, sdw_weights *ws, const char *prefix,
                                const char *sub, int in, int out, int k, int stride, int pad,
                                int pad_end, size_t *np, sdw_error *err) {
    char name[NAME_MAX_LEN];
    join(name, prefix, sub);
    sdw_status st = sdw_conv2d_bind_pad(c, ws, name, in, out, k, stride, pad, pad_end, true, err);
    if (st == SDW_OK) *np += conv_params(c);
    return st;
}

static sdw_status bind_conv(sdw_conv2d *c, sdw_weights *ws, const char *prefix, const char *sub,
                            int in, int out, int k, int stride, int pad, size_t *np,
                            sdw_error *err) {
    return bind_conv_pad(c, ws, prefix, sub, in, out, k, stride, pad, pad, np, err);
}

static sdw_status bind_norm(sdw_group_norm *g, sdw_weights *ws, const char *prefix,
                            const char *sub, int c, int groups, size_t *np, sdw_error *err) {
    char name[NAME_MAX_LEN];
    join(name, prefix, sub);
    sdw_status st = sdw_group_norm_bind(g, ws, name, c, groups, VAE_EPS, err);
    if (st == SDW_OK) *np += 2 * (size_t)c;
    return st;
}

static sdw_status bind_linear(sdw_linear *l, sdw_weights *ws, const char *prefix,
                              const char *sub, int c, size_t *np, sdw_error *err) {
    char name[NAME_MAX_LEN];
    join(name, prefix, sub);
    sdw_status st = sdw_linear_bind(l, ws, name, c, c, true, err);
    if (st == SDW_OK) *np += (size_t)c * c + (size_t)c;
    return st;
}

static sdw_status bind_resnet(vae_resnet *r, sdw_weights *ws, const char *prefix, int cin,
                              int cout, int groups, size_t *np, sdw_error *err) {
    r->cin = cin;
    r->cout = cout;
    sdw_status st;
    if ((st = bind_norm(&r->norm1, ws, prefix, "norm1", cin, groups, np, err)) ||
        (st = bind_conv(&r->conv1, ws, prefix, "conv1", cin, cout, 3, 1, 1, np, err)) ||
        (st = bind_norm(&r->norm2, ws, prefix, "norm2", cout, groups, np, err)) ||
        (st = bind_conv(&r->conv2, ws, prefix, "conv2", cout, cout, 3, 1, 1, np, err)))
        return st;
    if (cin != cout)
        return bind_conv(&r->shortcut, ws, prefix, "conv_shortcut", cin, cout, 1, 1, 0, np, err);
    return SDW_OK;
}

static sdw_status bind_attn(vae_attn *a, sdw_weights *ws, const char *prefix, int c, int groups,
                            size_t *np, sdw_error *err) {
    /* diffusers < 0.14 saved the VAE attention as query/key/value/proj_attn; some published
     * folders still carry those names (diffusers renames them at load). */
    static const char *now[] = {"to_q", "to_k", "to_v", "to_out.0"};
    static const char *old[] = {"query", "key", "value", "proj_attn"};
    char name[NAME_MAX_LEN];
    join(name, prefix, "to_q.weight");
    const char **sub = now;
    if (!sdw_weights_has(ws, name)) {
        join(name, prefix, "query.weight");
        if (sdw_weights_has(ws, name)) sub = old;
    }
    a->c = c;
    char q[NAME_MAX_LEN], k[NAME_MAX_LEN], v[NAME_MAX_LEN];
    join(q, prefix, sub[0]);
    join(k, prefix, sub[1]);
    join(v, prefix, sub[2]);
    const char *qkv[3] = {q, k, v};
    sdw_status st;
    if ((st = bind_norm(&a->norm, ws, prefix, "group_norm", c, groups, np, err)) ||
        (st = sdw_linear_bind_stacked(&a->qkv, ws, qkv, 3, c, c, true, err)) ||
        (st = bind_linear(&a->out, ws, prefix, sub[3], c, np, err)))
        return st;
    *np += 3 * ((size_t)c * c + (size_t)c);
    return SDW_OK;
}

static sdw_status bind_mid(vae_mid *m, sdw_weights *ws, const char *side, int c, int groups,
                           bool attn, size_t *np, sdw_error *err) {
    char prefix[NAME_MAX_LEN];
    sdw_status st;
    for (int i = 0; i < 2; i++) {
        snprintf(prefix, sizeof prefix, "%s.mid_block.resnets.%d", side, i);
        if ((st = bind_resnet(&m->res[i], ws, prefix, c, c, groups, np, err))) return st;
    }
    m->has_attn = attn;
    if (!attn) return SDW_OK;
    snprintf(prefix, sizeof prefix, "%s.mid_block.attentions.0", side);
    return bind_attn(&m->attn, ws, prefix, c, groups, np, err);
}

/* Taps of the 3x3 kernel (dy or dx) that land on tap a of the 2x2 kernel for parity p: output
 * 2i+p reads upsampled rows 2i+p-1 .. 2i+p+1, i.e. input rows i-1, i, i (p = 0) or i, i, i+1. */
static bool folds_into(int p, int a, int d) {
    static const int first[2][2] = {{0, 1}, {0, 2}}, last[2][2] = {{0, 2}, {1, 2}};
    return d >= first[p][a] && d <= last[p][a];
}

static sdw_status bind_upsample(vae_upsample *u, sdw_weights *ws, const char *prefix, int c,
                                size_t *np, sdw_error *err) {
    char name[NAME_MAX_LEN];
    join(name, prefix, "conv.weight");
    /* Viewed, not kept: only the folded 2x2 kernels below are packed. */
    sdw_dtype dt;
    size_t n_w;
    const void *wv = NULL;
    sdw_status st =
        sdw__weights_raw(ws, name, 4, (const int64_t[]){c, c, 3, 3}, &wv, &dt, &n_w, err);
    if (st != SDW_OK) return st;
    float *w = sdw_xmalloc(sizeof(float) * n_w); /* OIHW */
    sdw_convert_to_f32(dt, wv, w, n_w);
    sdw_weights_raw_done(ws, name);
    join(name, prefix, "conv.bias");
    const float *b = NULL;
    if ((st = sdw__weights_f32(ws, name, 1, (const int64_t[]){c}, &b, err)) != SDW_OK) {
        free(w);
        return st;
    }
    *np += (size_t)c * c * 9 + (size_t)c;
    u->c = c;
    float *oihw = sdw_xmalloc(sizeof(float) * 2 * (size_t)c * c * 4); /* [2c, c, 2, 2] */
    float *bias = sdw_xmalloc(sizeof(float) * 2 * (size_t)c);
    memcpy(bias, b, sizeof(float) * c);
    memcpy(bias + c, b, sizeof(float) * c);
    for (int py = 0; py < 2 && st == SDW_OK; py++) {
        for (int px = 0; px < 2; px++)
            for (int o = 0; o < c; o++)
                for (int i = 0; i < c; i++) {
                    const float *k = w + ((size_t)o * c + i) * 9;
                    float *dst = oihw + (((size_t)px * c + o) * c + i) * 4;
                    for (int a = 0; a < 2; a++)
                        for (int bb = 0; bb < 2; bb++) {
                            double sum = 0;
                            for (int dy = 0; dy < 3; dy++)
                                for (int dx = 0; dx < 3; dx++)
                                    if (folds_into(py, a, dy) && folds_into(px, bb, dx))
                                        sum += k[dy * 3 + dx];
                            dst[a * 2 + bb] = (float)sum;
                        }
                }
        st = sdw_conv2d_init(&u->phase[py], ws, oihw, bias, c, 2 * c, 2, 1, 1, 1, err);
    }
    free(bias);
    free(oihw);
    free(w);
    return st;
}

static sdw_status check_config(const sdw_vae_config *c, sdw_error *err) {
    if (c->n_levels < 1 || c->n_levels > SDW_VAE_MAX_LEVELS)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "VAE config: n_levels %d not in [1, %d]",
                             c->n_levels, SDW_VAE_MAX_LEVELS);
    if (c->in_channels < 1 || c->out_channels < 1 || c->latent_channels < 1 ||
        c->layers_per_block < 1 || c->norm_num_groups < 1)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "VAE config: channel counts, layers_per_block and norm_num_groups "
                             "must be positive");
    for (int i = 0; i < c->n_levels; i++)
        if (c->block_out_channels[i] < 1 || c->block_out_channels[i] % c->norm_num_groups)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "VAE config: block_out_channels[%d] = %d is not a positive "
                                 "multiple of norm_num_groups %d",
                                 i, c->block_out_channels[i], c->norm_num_groups);
    return SDW_OK;
}

static sdw_status bind_decoder(sdw_vae *v, sdw_weights *ws, size_t *np, sdw_error *err) {
    const sdw_vae_config *c = &v->cfg;
    const int L = c->n_levels, G = c->norm_num_groups, n_res = c->layers_per_block + 1;
    const int *boc = c->block_out_channels;
    char prefix[NAME_MAX_LEN];
    sdw_status st;
    if (c->use_post_quant_conv &&
        (st = bind_conv(&v->post_quant_conv, ws, "post_quant_conv", "", c->latent_channels,
                        c->latent_channels, 1, 1, 0, np, err)))
        return st;
    if ((st = bind_conv(&v->dec_conv_in, ws, "decoder", "conv_in", c->latent_channels, boc[L - 1],
                        3, 1, 1, np, err)) ||
        (st = bind_mid(&v->dec_mid, ws, "decoder", boc[L - 1], G, c->mid_block_attention, np, err)))
        return st;
    v->up_res = sdw_xcalloc((size_t)L * n_res, sizeof *v->up_res);
    int prev = boc[L - 1];
    for (int i = 0; i < L; i++) {
        int cout = boc[L - 1 - i];
        for (int j = 0; j < n_res; j++) {
            snprintf(prefix, sizeof prefix, "decoder.up_blocks.%d.resnets.%d", i, j);
            if ((st = bind_resnet(&v->up_res[i * n_res + j], ws, prefix, j ? cout : prev, cout, G,
                                  np, err)))
                return st;
        }
        if (i < L - 1) {
            snprintf(prefix, sizeof prefix, "decoder.up_blocks.%d.upsamplers.0", i);
            if ((st = bind_upsample(&v->upsample[i], ws, prefix, cout, np, err)))
                return st;
        }
        prev = cout;
    }
    if ((st = bind_norm(&v->dec_norm_out, ws, "decoder", "conv_norm_out", boc[0], G, np, err)) ||
        (st = bind_conv(&v->dec_conv_out, ws, "decoder", "conv_out", boc[0], c->out_channels, 3, 1,
                        1, np, err)))
        return st;
    return SDW_OK;
}

static sdw_status bind_encoder(sdw_vae *v, sdw_weights *ws, size_t *np, sdw_error *err) {
    const sdw_vae_config *c = &v->cfg;
    const int L = c->n_levels, G = c->norm_num_groups, n_res = c->layers_per_block;
    const int *boc = c->block_out_channels;
    char prefix[NAME_MAX_LEN];
    /* The encoder is optional: a missing encoder.conv_in means a decode-only file. Probing by
     * binding (not sdw_weights_has) keeps sources that list no names, like random weights. */
    sdw_error probe = {0};
    sdw_status st = bind_conv(&v->enc_conv_in, ws, "encoder", "conv_in", c->in_channels, boc[0],
                              3, 1, 1, np, &probe);
    if (st == SDW_E_NOT_FOUND) return SDW_OK;
    if (st != SDW_OK) {
        if (err) *err = probe;
        return st;
    }
    v->has_encoder = true;
    v->down_res = sdw_xcalloc((size_t)L * n_res, sizeof *v->down_res);
    int prev = boc[0];
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < n_res; j++) {
            snprintf(prefix, sizeof prefix, "encoder.down_blocks.%d.resnets.%d", i, j);
            if ((st = bind_resnet(&v->down_res[i * n_res + j], ws, prefix, j ? boc[i] : prev,
                                  boc[i], G, np, err)))
                return st;
        }
        if (i < L - 1) {
            snprintf(prefix, sizeof prefix, "encoder.down_blocks.%d.downsamplers.0", i);
            /* Downsample2D pads (0,1,0,1): nothing before, one row/column after. */
            if ((st = bind_conv_pad(&v->downsample[i], ws, prefix, "conv", boc[i], boc[i], 3, 2, 0,
                                    1, np, err)))
                return st;
        }
        prev = boc[i];
    }
    if ((st = bind_mid(&v->enc_mid, ws, "encoder", boc[L - 1], G, c->mid_block_attention, np,
                       err)) ||
        (st = bind_norm(&v->enc_norm_out, ws, "encoder", "conv_norm_out", boc[L - 1], G, np, err)) ||
        (st = bind_conv(&v->enc_conv_out, ws, "encoder", "conv_out", boc[L - 1],
                        2 * c->latent_channels, 3, 1, 1, np, err)))
        return st;
    if (c->use_quant_conv &&
        (st = bind_conv(&v->quant_conv, ws, "quant_conv", "", 2 * c->latent_channels,
                        2 * c->latent_channels, 1, 1, 0, np, err)))
        return st;
    return SDW_OK;
}

/* The stored tensors the encoder binds (in both naming styles): encoder.* and quant_conv.*. */
static const char *const ENCODER_PREFIXES[] = {"encoder.", "quant_conv."};

static sdw_status create(sdw_weights *ws, const sdw_vae_config *cfg, bool lazy, sdw_vae **out,
                         sdw_error *err) {
    SDW_ASSERT(ws && cfg && out);
    sdw_status st = check_config(cfg, err);
    if (st != SDW_OK) return st;
    sdw_vae *v = sdw_xcalloc(1, sizeof *v);
    v->cfg = *cfg;
    pthread_mutex_init(&v->enc_mu, NULL);
    size_t np = 0;
    if ((st = bind_decoder(v, ws, &np, err))) goto fail;
    if (lazy) {
        v->has_encoder = v->enc_pending = sdw_weights_has(ws, "encoder.conv_in.weight");
        v->ws = ws;
        for (size_t i = 0; v->enc_pending && i < SDW_ARRAY_LEN(ENCODER_PREFIXES); i++) {
            np += sdw_weights_stored_params(ws, ENCODER_PREFIXES[i]);
            sdw_weights_ignore(ws, ENCODER_PREFIXES[i]); /* bound later, not left over */
        }
    } else if ((st = bind_encoder(v, ws, &np, err))) {
        goto fail;
    }
    v->n_params = np;
    *out = v;
    return SDW_OK;
fail:
    sdw_error_prefix(err, "VAE");
    sdw_vae_destroy(v);
    return st;
}

sdw_status sdw_vae_create(sdw_weights *ws, const sdw_vae_config *cfg, sdw_vae **out,
                          sdw_error *err) {
    return create(ws, cfg, false, out, err);
}

sdw_status sdw_vae_create_lazy(sdw_weights *ws, const sdw_vae_config *cfg, sdw_vae **out,
                               sdw_error *err) {
    return create(ws, cfg, true, out, err);
}

/* Binds a lazily created VAE's encoder on its first use. A failure (a damaged file) is
 * reported to that request and tried again by the next. */
static sdw_status encoder_ready(const sdw_vae *cv, sdw_error *err) {
    sdw_vae *v = (sdw_vae *)cv; /* the pending encoder is the one mutable part, behind the lock */
    sdw_status st = SDW_OK;
    pthread_mutex_lock(&v->enc_mu);
    if (v->enc_pending) {
        size_t np = 0;
        st = bind_encoder(v, v->ws, &np, err);
        if (st == SDW_OK && !v->down_res) /* its probe found no conv_in after all */
            st = sdw_error_set(err, SDW_E_NOT_FOUND, "encoder.conv_in.weight: not found");
        if (st == SDW_OK) {
            v->enc_pending = false;
        } else {
            sdw_error_prefix(err, "VAE encoder");
            free(v->down_res);
            v->down_res = NULL;
        }
    }
    pthread_mutex_unlock(&v->enc_mu);
    return st;
}

void sdw_vae_destroy(sdw_vae *v) {
    if (!v) return;
    pthread_mutex_destroy(&v->enc_mu);
    free(v->up_res);
    free(v->down_res);
    free(v);
}

const sdw_vae_config *sdw_vae_get_config(const sdw_vae *v) { return &v->cfg; }
int sdw_vae_downscale(const sdw_vae *v) { return 1 << (v->cfg.n_levels - 1); }
bool sdw_vae_has_encoder(const sdw_vae *v) { return v->has_encoder; }
size_t sdw_vae_n_params(const sdw_vae *v) { return v->n_params; }

/* ---- forward ----
 * Activations are stored in the convolutions' operand type: f32, or bf16 when the weights are
 * bf16 (every conv reads bf16 then, so f32 storage would only be converted again; norms widen
 * each block to f32 and accumulate in f32). bf16 storage halves the full-resolution tensors
 * that set the decoder's peak memory. */

/* Activations come from the call's arena (nn/arena.h): reused, not fresh pages each time. */
static void *alloc_act(sdw_arena *ar, sdw_dt dt, int B, int H, int W, int C) {
    return sdw_arena_alloc(ar, (size_t)B * H * W * C * sdw_dt_size(dt));
}

/* ResnetBlock2D: out = shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))).
 * Takes x [B,H,W,cin] (freed), returns a new [B,H,W,cout], both of type dt. With a 1x1 shortcut
 * the shortcut runs first, so x is dead once norm1 has read it and norm1 overwrites it; norm2
 * overwrites conv1's output. Peak cin + 2·cout channels (the 256->128 block at full resolution
 * sets the peak of a 512x512 SD decode). */
static void *resnet_forward(sdw_arena *ar, const vae_resnet *r, sdw_dt dt, void *x, int B, int H,
                            int W) {
    void *res = x; /* the residual branch: x itself, or its 1x1 projection */
    void *a = x;   /* norm1's output: over x when x is not needed afterwards */
    const sdw_act xv = sdw_nhwc_dt(x, dt, B, H, W);
    if (r->cin != r->cout) {
        res = alloc_act(ar, dt, B, H, W, r->cout);
        sdw_conv2d_forward(&r->shortcut, xv, sdw_nhwc_dt(res, dt, B, H, W), 0);
    } else {
        a = alloc_act(ar, dt, B, H, W, r->cin);
    }
    void *b = alloc_act(ar, dt, B, H, W, r->cout); /* conv1's output */
    const sdw_act bv = sdw_nhwc_dt(b, dt, B, H, W);
    sdw_conv2d_forward_gn(&r->conv1, &r->norm1, NULL, xv, a, bv, SDW_SILU);
    sdw_arena_free(ar, a); /* the norm1 buffer, or x itself when res holds the projection */
    /* res += conv2(silu(norm2(b))), norm2 over b itself: the output is the residual buffer */
    sdw_conv2d_forward_gn(&r->conv2, &r->norm2, NULL, bv, b, sdw_nhwc_dt(res, dt, B, H, W),
                          SDW_SILU | SDW_ACCUMULATE);
    sdw_arena_free(ar, b);
    return res;
}

/* diffusers Attention in the VAE mid block (AttnProcessor2_0, residual_connection, one head of
 * dim C, scale 1/sqrt(C)): x += to_out(softmax(q kᵀ/√C) v), q/k/v = to_*(group_norm(x)) over
 * the H·W tokens of each image. x [B, HW, C] of type dt updated in place (at the lowest
 * resolution: a bf16 x is widened to f32 around it; the attention's products are bf16 too). */
static void attn_forward(sdw_arena *ar, const vae_attn *a, sdw_dt dt, void *x, int B, int64_t HW) {
    const int C = a->c;
    const int64_t M = B * HW;
    const size_t n = (size_t)M * C;
    sdw_backend *be = a->qkv.op->be; /* the layers' backend converts their activations */
    float *xf = dt == SDW_DT_F32 ? x : sdw_arena_alloc(ar, n * sizeof(float));
    if (dt == SDW_DT_BF16) sdw_backend_convert(be, sdw_rows_dt(x, dt, M), sdw_rows(xf, M), n);
    float *h = sdw_arena_alloc(ar, n * sizeof(float));
    float *qkv = sdw_arena_alloc(ar, 3 * n * sizeof(float));
    /* [M, q|k|v] */
    sdw_linear_forward_gn(&a->qkv, &a->norm, sdw_nhwc(xf, B, (int)HW, 1), h, sdw_rows(qkv, M), 0);
    sdw_attention(qkv, 3 * C, qkv + C, 3 * C, qkv + 2 * C, 3 * C, B, HW, HW, 1, C,
                  1.0f / sqrtf((float)C), dt == SDW_DT_BF16 ? SDW_ATTN_BF16 : 0, h);
    sdw_arena_free(ar, qkv);
    sdw_linear_forward(&a->out, sdw_rows(h, M), sdw_rows(xf, M), SDW_ACCUMULATE); /* x += to_out */
    sdw_arena_free(ar, h);
    if (dt == SDW_DT_BF16) {
        sdw_backend_convert(be, sdw_rows(xf, M), sdw_rows_dt(x, dt, M), n);
        sdw_arena_free(ar, xf);
    }
}

/* UNetMidBlock2D: resnet, attention (optional), resnet. Channel count unchanged. */
static void *mid_forward(sdw_arena *ar, const vae_mid *m, sdw_dt dt, void *x, int B, int H, int W) {
    x = resnet_forward(ar, &m->res[0], dt, x, B, H, W);
    if (m->has_attn) attn_forward(ar, &m->attn, dt, x, B, (int64_t)H * W);
    return resnet_forward(ar, &m->res[1], dt, x, B, H, W);
}

/* Upsample2D (see vae_upsample). Takes x [B,H,W,C] (freed), returns [B,2H,2W,C], type dt.
 * Peak: x + y + one phase output (half of y). */
static void *upsample_forward(sdw_arena *ar, const vae_upsample *u, sdw_dt dt, void *x, int B,
                              int H, int W) {
    const int C = u->c;
    const size_t es = sdw_dt_size(dt), row = (size_t)C * es;
    char *y = alloc_act(ar, dt, B, 2 * H, 2 * W, C);
    char *p = alloc_act(ar, dt, B, H + 1, W + 1, 2 * C); /* [B, H+1, W+1, (px, C)] */
    for (int py = 0; py < 2; py++) {
        sdw_conv2d_forward(&u->phase[py], sdw_nhwc_dt(x, dt, B, H, W),
                           sdw_nhwc_dt(p, dt, B, H + 1, W + 1), 0);
#pragma omp parallel for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < H; i++) {
                const char *src = p + (((size_t)b * (H + 1) + i + py) * (W + 1)) * 2 * row;
                char *dst = y + (((size_t)b * 2 * H + 2 * i + py) * 2 * W) * row;
                for (int j = 0; j < W; j++) {
                    memcpy(dst + (size_t)(2 * j) * row, src + (size_t)j * 2 * row, row);
                    memcpy(dst + (size_t)(2 * j + 1) * row, src + (size_t)(j + 1) * 2 * row + row,
                           row);
                }
            }
    }
    sdw_arena_free(ar, p);
    sdw_arena_free(ar, x);
    return y;
}

/* Downsample2D (padding 0): F.pad(x, (0,1,0,1)) — one zero column right, one zero row at the
 * bottom — then 3x3 conv stride 2 without padding; the conv is bound with pad 0 / pad_end 1,
 * which is the same thing. Takes x (freed); *H, *W become the output size. */
static void *downsample_forward(sdw_arena *ar, const sdw_conv2d *conv, sdw_dt dt, void *x, int B,
                                int *H, int *W) {
    const int oh = sdw_conv2d_out_size(conv, *H), ow = sdw_conv2d_out_size(conv, *W);
    void *y = alloc_act(ar, dt, B, oh, ow, conv->out);
    sdw_conv2d_forward(conv, sdw_nhwc_dt(x, dt, B, *H, *W), sdw_nhwc_dt(y, dt, B, oh, ow), 0);
    sdw_arena_free(ar, x);
    *H = oh;
    *W = ow;
    return y;
}

sdw_status sdw__vae_upsample(sdw_weights *ws, const char *prefix, int c, const float *x, int B,
                             int H, int W, float **y_out, sdw_error *err) {
    vae_upsample u;
    size_t np = 0;
    sdw_status st = bind_upsample(&u, ws, prefix, c, &np, err);
    if (st != SDW_OK) return st;
    const sdw_dt dt = sdw_conv2d_operand_dt(&u.phase[0]);
    const size_t n_in = (size_t)B * H * W * c, n_out = 4 * n_in;
    sdw_arena *ar = sdw_arena_create();
    sdw_backend *be = u.phase[0].op->be;
    void *copy = alloc_act(ar, dt, B, H, W, c);
    sdw_backend_convert(be, sdw_nhwc(x, B, H, W), sdw_nhwc_dt(copy, dt, B, H, W), n_in);
    void *y = upsample_forward(ar, &u, dt, copy, B, H, W);
    float *out = sdw_xmalloc(sizeof(float) * n_out);
    sdw_backend_convert(be, sdw_nhwc_dt(y, dt, B, 2 * H, 2 * W), sdw_nhwc(out, B, 2 * H, 2 * W),
                        n_out);
    sdw_arena_free(ar, y); /* small buffers are malloc'd: destroy does not see them */
    sdw_arena_destroy(ar);
    *y_out = out;
    return SDW_OK;
}

void sdw_vae_decode(const sdw_vae *v, const float *z, int B, int h, int w, float *img) {
    SDW_ASSERT(v && z && img && B >= 1 && h >= 1 && w >= 1);
    const sdw_prof_stage prev_stage = sdw__prof_stage(SDW_PROF_VAE);
    sdw_arena *ar = sdw_arena_create();
    const sdw_vae_config *c = &v->cfg;
    const sdw_dt dt = sdw_conv2d_operand_dt(&v->dec_conv_in);
    const int L = c->n_levels, n_res = c->layers_per_block + 1;
    const float *in = z;
    float *pq = NULL;
    if (c->use_post_quant_conv) {
        pq = alloc_act(ar, SDW_DT_F32, B, h, w, c->latent_channels);
        sdw_conv2d_forward(&v->post_quant_conv, sdw_nhwc(z, B, h, w), sdw_nhwc(pq, B, h, w), 0);
        in = pq;
    }
    void *x = alloc_act(ar, dt, B, h, w, v->dec_conv_in.out); // [B, h, w, boc[L-1]]
    sdw_conv2d_forward(&v->dec_conv_in, sdw_nhwc(in, B, h, w), sdw_nhwc_dt(x, dt, B, h, w), 0);
    sdw_arena_free(ar, pq);
    x = mid_forward(ar, &v->dec_mid, dt, x, B, h, w);
    int H = h, W = w;
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < n_res; j++)
            x = resnet_forward(ar, &v->up_res[i * n_res + j], dt, x, B, H, W);
        if (i < L - 1) {
            x = upsample_forward(ar, &v->upsample[i], dt, x, B, H, W); // [B, 2H, 2W, boc[L-1-i]]
            H *= 2;
            W *= 2;
        }
    }
    // img = conv_out(silu(norm_out(x)))                        [B, H, W, out_channels]
    sdw_conv2d_forward_gn(&v->dec_conv_out, &v->dec_norm_out, NULL, sdw_nhwc_dt(x, dt, B, H, W), x,
                          sdw_nhwc(img, B, H, W), SDW_SILU);
    sdw_arena_free(ar, x);
    sdw_arena_destroy(ar);
    sdw__prof_stage(prev_stage);
}

sdw_status sdw_vae_encode(const sdw_vae *v, const float *img, int B, int H, int W, float *mean,
                          float *std, sdw_error *err) {
    SDW_ASSERT(v && img && mean && std);
    const sdw_vae_config *c = &v->cfg;
    const int s = sdw_vae_downscale(v);
    if (!v->has_encoder)
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "this VAE has no encoder weights");
    if (B < 1 || H < s || W < s || H % s || W % s)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "VAE encode: image %dx%d (batch %d) must be a positive multiple of %d",
                             W, H, B, s);
    sdw_status st = encoder_ready(v, err);
    if (st != SDW_OK) return st;
    const int L = c->n_levels, n_res = c->layers_per_block, lat = c->latent_channels;
    const sdw_prof_stage prev_stage = sdw__prof_stage(SDW_PROF_VAE);
    sdw_arena *ar = sdw_arena_create();
    const sdw_dt dt = sdw_conv2d_operand_dt(&v->enc_conv_in);
    void *x = alloc_act(ar, dt, B, H, W, v->enc_conv_in.out); // [B, H, W, boc[0]]
    sdw_conv2d_forward(&v->enc_conv_in, sdw_nhwc(img, B, H, W), sdw_nhwc_dt(x, dt, B, H, W), 0);
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < n_res; j++)
            x = resnet_forward(ar, &v->down_res[i * n_res + j], dt, x, B, H, W);
        if (i < L - 1) x = downsample_forward(ar, &v->downsample[i], dt, x, B, &H, &W);
    }
    x = mid_forward(ar, &v->enc_mid, dt, x, B, H, W); // [B, h, w, boc[L-1]]
    // [B, h, w, 2·latent]: (mean, logvar) per pixel
    float *mom = alloc_act(ar, SDW_DT_F32, B, H, W, 2 * lat);
    sdw_conv2d_forward_gn(&v->enc_conv_out, &v->enc_norm_out, NULL, sdw_nhwc_dt(x, dt, B, H, W), x,
                          sdw_nhwc(mom, B, H, W), SDW_SILU);
    sdw_arena_free(ar, x);
    if (c->use_quant_conv) {
        float *q = alloc_act(ar, SDW_DT_F32, B, H, W, 2 * lat);
        sdw_conv2d_forward(&v->quant_conv, sdw_nhwc(mom, B, H, W), sdw_nhwc(q, B, H, W), 0);
        sdw_arena_free(ar, mom);
        mom = q;
    }
    /* DiagonalGaussianDistribution: torch.chunk(moments, 2, dim=1) splits channels. */
    const size_t n_pix = (size_t)B * H * W;
    for (size_t p = 0; p < n_pix; p++) {
        for (int ch = 0; ch < lat; ch++) {
            float lv = mom[p * 2 * lat + lat + ch];
            lv = lv < -30.0f ? -30.0f : lv > 20.0f ? 20.0f : lv;
            mean[p * lat + ch] = mom[p * 2 * lat + ch];
            std[p * lat + ch] = expf(0.5f * lv);
        }
    }
    sdw_arena_free(ar, mom);
    sdw_arena_destroy(ar);
    sdw__prof_stage(prev_stage);
    return SDW_OK;
}
