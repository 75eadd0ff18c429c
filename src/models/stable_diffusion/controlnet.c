/* diffusers ControlNetModel (0.25.1) on the UNet's encoder (unet.c) and the nn/ building blocks,
 * f32 NHWC: config parsing, the original lllyasviel layout's names, binding and the forward. */
#include "models/stable_diffusion/controlnet.h"

#include "io/json_config.h"
#include "models/stable_diffusion/ldm_unet_names.h"
#include "models/stable_diffusion/unet.h"
#include "nn/nn.h"
#include "nn/profile.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

struct sdw_controlnet {
    sdw_controlnet_config cfg;
    size_t n_params;
    sdw_unet *enc; /* conv_in, time_embedding (+ add_embedding), down_blocks, mid_block */
    int n_down;    /* = enc's skips */
    /* controlnet_cond_embedding (ControlNetConditioningEmbedding) */
    sdw_conv2d hint_in;                                  /* conv_in [e0, cond_ch, 3, 3] */
    sdw_conv2d hint_blocks[2 * SDW_CONTROLNET_MAX_EMBED]; /* blocks.2i [ei, ei, 3, 3],
                                                          * blocks.2i+1 [ei+1, ei, 3, 3] stride 2 */
    sdw_conv2d hint_out;                                 /* conv_out [C0, e_last, 3, 3] */
    sdw_conv2d *zero_down; /* controlnet_down_blocks.k [c_k, c_k, 1, 1], n_down of them */
    sdw_conv2d zero_mid;   /* controlnet_mid_block [C_last, C_last, 1, 1] */
};

/* ---------------------------------------------------------------------------------------- */
/* config                                                                                   */

/* ControlNetModel's own keys: read here, removed before the rest goes to the UNet parser. */
static sdw_status read_own_keys(const sdw_json_config *j, sdw_controlnet_config *c,
                                sdw_error *err) {
    sdw_status st;
    c->conditioning_channels = 3;
    c->n_embed = 4;
    const int def[4] = {16, 32, 96, 256};
    memcpy(c->embed_channels, def, sizeof def);
    if ((st = sdw_json_config_int(j, "conditioning_channels", 1, 64, &c->conditioning_channels,
                                  err)) ||
        (st = sdw_json_config_bool(j, "global_pool_conditions", &c->global_pool, err)))
        return st;
    if (sdw_json_config_has(j, "conditioning_embedding_out_channels") &&
        (st = sdw_json_config_int_list(j, "conditioning_embedding_out_channels",
                                       SDW_CONTROLNET_MAX_EMBED, 1, 1 << 16, c->embed_channels,
                                       &c->n_embed, err)))
        return st;
    static const char *const orders[] = {"rgb", "bgr"};
    int order = 0;
    if ((st = sdw_json_config_enum(j, "controlnet_conditioning_channel_order", orders, 2, &order,
                                   err)))
        return st;
    c->bgr = order == 1;
    return SDW_OK;
}

/* The UNet2DConditionModel config a ControlNetModel config describes the encoder of: its own
 * keys removed, the class renamed and an up path mirroring the down path (the UNet parser wants
 * one; a ControlNet has none). Returns a new object. */
static json_t *as_unet_config(json_t *root) {
    json_t *u = json_deep_copy(root);
    static const char *const own[] = {"conditioning_channels", "conditioning_embedding_out_channels",
                                      "controlnet_conditioning_channel_order",
                                      "global_pool_conditions", "_class_name"};
    for (size_t i = 0; i < SDW_ARRAY_LEN(own); i++) json_object_del(u, own[i]);
    json_object_set_new(u, "_class_name", json_string("UNet2DConditionModel"));
    json_t *down = json_object_get(u, "down_block_types"), *up = json_array();
    for (size_t i = json_array_size(down); i-- > 0;) {
        const char *t = json_string_value(json_array_get(down, i));
        json_array_append_new(up, json_string(t && !strcmp(t, "CrossAttnDownBlock2D")
                                                  ? "CrossAttnUpBlock2D"
                                                  : "UpBlock2D"));
    }
    json_object_set_new(u, "up_block_types", up);
    return u;
}

static sdw_status config_from(const sdw_json_config *j, sdw_controlnet_config *cfg,
                              sdw_error *err) {
    sdw_controlnet_config c;
    memset(&c, 0, sizeof c);
    sdw_status st;
    json_t *root = j->root;
    const char *cls = json_string_value(json_object_get(root, "_class_name"));
    if (cls && strcmp(cls, "ControlNetModel") != 0)
        return sdw_error_set(err, SDW_E_FORMAT, "%s: _class_name \"%s\" is not ControlNetModel",
                             j->what, cls);
    const char *mid = json_string_value(json_object_get(root, "mid_block_type"));
    if (mid && strcmp(mid, "UNetMidBlock2DCrossAttn") != 0)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: mid_block_type \"%s\" is not supported (only "
                             "UNetMidBlock2DCrossAttn)",
                             j->what, mid);
    if ((st = read_own_keys(j, &c, err))) return st;
    json_t *u = as_unet_config(root);
    char *text = json_dumps(u, JSON_COMPACT);
    json_decref(u);
    if (!text) return sdw_error_set(err, SDW_E_FORMAT, "%s: cannot be re-encoded", j->what);
    st = sdw_unet_config_parse(text, &c.unet, err);
    free(text);
    if (st) {
        sdw_error_prefix(err, "%s", j->what);
        return st;
    }
    *cfg = c;
    return SDW_OK;
}

sdw_status sdw_controlnet_config_parse(const char *json_text, size_t len, const char *label,
                                       sdw_controlnet_config *cfg, sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_parse(json_text, len, label, &j, err);
    if (st == SDW_OK) st = config_from(&j, cfg, err);
    sdw_json_config_free(&j);
    return st;
}

sdw_status sdw_controlnet_config_load(const char *path, sdw_controlnet_config *cfg,
                                      sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_load(path, &j, err);
    if (st == SDW_OK) st = config_from(&j, cfg, err);
    sdw_json_config_free(&j);
    return st;
}

int sdw_controlnet_downscale(const sdw_controlnet_config *cfg) {
    return 1 << (cfg->n_embed - 1);
}

/* ---------------------------------------------------------------------------------------- */
/* the original (lllyasviel) layout                                                         */

static const sdw_st_tensor *findf(const sdw_st_file *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static const sdw_st_tensor *findf(const sdw_st_file *f, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return sdw_st_find(f, name);
}

const char *sdw_controlnet_original_prefix(const sdw_st_file *f) {
    /* ControlNet 1.0 files hold the whole cldm model (control_model.*); 1.1 files only the
     * control model, unprefixed. */
    if (findf(f, "control_model.input_hint_block.0.weight")) return "control_model.";
    if (findf(f, "input_hint_block.0.weight")) return "";
    return NULL;
}

/* cldm.py's input_hint_block is a Sequential of convs with SiLUs between them: the convs sit at
 * the even indices, conv_in at 0, the blocks after it, conv_out last. */
sdw_status sdw_controlnet_config_for_original(const sdw_st_file *f, const char *prefix,
                                              const sdw_unet_config *base,
                                              sdw_controlnet_config *cfg, sdw_error *err) {
    sdw_controlnet_config c;
    memset(&c, 0, sizeof c);
    c.unet = *base;
    const sdw_st_tensor *t = findf(f, "%sinput_hint_block.0.weight", prefix);
    if (!t || t->n_dims != 4)
        return sdw_error_set(err, SDW_E_FORMAT, "%s: no %sinput_hint_block.0.weight [C, 3, 3, 3]",
                             sdw_st_path(f), prefix);
    c.conditioning_channels = (int)t->shape[1];
    int n_convs = 0;
    const sdw_st_tensor *convs[4 * SDW_CONTROLNET_MAX_EMBED];
    while (n_convs < (int)SDW_ARRAY_LEN(convs) &&
           (t = findf(f, "%sinput_hint_block.%d.weight", prefix, 2 * n_convs)))
        convs[n_convs++] = t;
    /* conv_in, 2 per later stage, conv_out: an even count of at least 2 */
    if (n_convs < 2 || n_convs % 2 || n_convs / 2 > SDW_CONTROLNET_MAX_EMBED)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: %sinput_hint_block has %d convolutions (expected conv_in, two "
                             "per downsampling stage, conv_out)",
                             sdw_st_path(f), prefix, n_convs);
    c.n_embed = n_convs / 2;
    for (int i = 0; i < c.n_embed; i++) {
        t = convs[2 * i]; /* conv_in, then each stage's stride-1 conv: the stage's width */
        if (t->n_dims != 4)
            return sdw_error_set(err, SDW_E_FORMAT, "%s: %sinput_hint_block.%d is not a conv",
                                 sdw_st_path(f), prefix, 4 * i);
        c.embed_channels[i] = (int)t->shape[0];
    }
    *cfg = c;
    return SDW_OK;
}

static const char *put(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *put(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return (k < 0 || (size_t)k >= cap) ? NULL : buf;
}

const char *sdw_controlnet_original_name(const char *name, char *buf, size_t cap, void *user) {
    const sdw_controlnet_config *c = user;
    int i = -1, pos = -1;
    if (!strncmp(name, "controlnet_cond_embedding.conv_in.", 34))
        return put(buf, cap, "input_hint_block.0.%s", name + 34);
    if (!strncmp(name, "controlnet_cond_embedding.conv_out.", 35))
        return put(buf, cap, "input_hint_block.%d.%s", 2 * (2 * (c->n_embed - 1) + 1), name + 35);
    if (sscanf(name, "controlnet_cond_embedding.blocks.%d.%n", &i, &pos) == 1 && pos > 0)
        return i < 0 ? NULL : put(buf, cap, "input_hint_block.%d.%s", 2 * (i + 1), name + pos);
    if (sscanf(name, "controlnet_down_blocks.%d.%n", &i, &pos) == 1 && pos > 0)
        return i < 0 ? NULL : put(buf, cap, "zero_convs.%d.0.%s", i, name + pos);
    if (!strncmp(name, "controlnet_mid_block.", 21))
        return put(buf, cap, "middle_block_out.0.%s", name + 21);
    /* the encoder: the UNet's LDM names (input_blocks, middle_block, time_embed, label_emb) */
    return sdw_ldm_unet_name(name, buf, cap, (void *)&c->unet);
}

/* ---------------------------------------------------------------------------------------- */
/* binding                                                                                  */

static sdw_status bind_conv(sdw_controlnet *cn, sdw_conv2d *c, sdw_weights *ws, const char *name,
                            int in, int out, int k, int stride, sdw_error *err) {
    sdw_status st = sdw_conv2d_bind(c, ws, name, in, out, k, stride, (k - 1) / 2, true, err);
    if (st == SDW_OK) cn->n_params += (size_t)in * out * k * k + (size_t)out;
    return st;
}

/* ControlNetConditioningEmbedding.__init__: conv_in, per stage i > 0 a conv keeping the
 * previous width and a stride-2 conv to the stage's width, conv_out to C0. */
static sdw_status bind_hint(sdw_controlnet *cn, sdw_weights *ws, sdw_error *err) {
    const sdw_controlnet_config *c = &cn->cfg;
    const int *e = c->embed_channels;
    char name[96];
    sdw_status st;
    if ((st = bind_conv(cn, &cn->hint_in, ws, "controlnet_cond_embedding.conv_in",
                        c->conditioning_channels, e[0], 3, 1, err)))
        return st;
    for (int i = 0; i + 1 < c->n_embed; i++) {
        snprintf(name, sizeof name, "controlnet_cond_embedding.blocks.%d", 2 * i);
        if ((st = bind_conv(cn, &cn->hint_blocks[2 * i], ws, name, e[i], e[i], 3, 1, err)))
            return st;
        snprintf(name, sizeof name, "controlnet_cond_embedding.blocks.%d", 2 * i + 1);
        if ((st = bind_conv(cn, &cn->hint_blocks[2 * i + 1], ws, name, e[i], e[i + 1], 3, 2,
                            err)))
            return st;
    }
    return bind_conv(cn, &cn->hint_out, ws, "controlnet_cond_embedding.conv_out",
                     e[c->n_embed - 1], c->unet.block_out_channels[0], 3, 1, err);
}

/* controlnet_down_blocks: one per skip, of the skip's width (conv_in's C0, then each level's
 * resnets and its downsampler at the level's width); controlnet_mid_block at C_last. */
static sdw_status bind_zero_convs(sdw_controlnet *cn, sdw_weights *ws, sdw_error *err) {
    const sdw_unet_config *u = &cn->cfg.unet;
    char name[64];
    sdw_status st;
    cn->zero_down = sdw_xcalloc((size_t)cn->n_down, sizeof *cn->zero_down);
    int k = 0;
    for (int i = -1; i < u->n_levels; i++) {
        int ch = u->block_out_channels[i < 0 ? 0 : i];
        int n = i < 0 ? 1 : u->layers_per_block[i] + (i < u->n_levels - 1 ? 1 : 0);
        for (int j = 0; j < n; j++, k++) {
            snprintf(name, sizeof name, "controlnet_down_blocks.%d", k);
            if ((st = bind_conv(cn, &cn->zero_down[k], ws, name, ch, ch, 1, 1, err))) return st;
        }
    }
    SDW_ASSERT(k == cn->n_down);
    const int cl = u->block_out_channels[u->n_levels - 1];
    return bind_conv(cn, &cn->zero_mid, ws, "controlnet_mid_block", cl, cl, 1, 1, err);
}

void sdw_controlnet_destroy(sdw_controlnet *cn) {
    if (!cn) return;
    sdw_unet_destroy(cn->enc);
    free(cn->zero_down);
    free(cn);
}

sdw_status sdw_controlnet_create(sdw_weights *ws, const sdw_controlnet_config *cfg,
                                 sdw_controlnet **out, sdw_error *err) {
    if (cfg->n_embed < 1 || cfg->n_embed > SDW_CONTROLNET_MAX_EMBED ||
        cfg->conditioning_channels < 1)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "controlnet config: %d conditioning embedding stages, %d "
                             "conditioning channels",
                             cfg->n_embed, cfg->conditioning_channels);
    sdw_controlnet *cn = sdw_xcalloc(1, sizeof *cn);
    cn->cfg = *cfg;
    sdw_status st = sdw_unet_create_encoder(ws, &cfg->unet, &cn->enc, err);
    if (st) goto fail;
    cn->n_down = sdw_unet_n_skips(cn->enc);
    cn->n_params = sdw_unet_n_params(cn->enc);
    if ((st = bind_hint(cn, ws, err)) || (st = bind_zero_convs(cn, ws, err))) {
        sdw_error_prefix(err, "controlnet");
        goto fail;
    }
    *out = cn;
    return SDW_OK;
fail:
    sdw_controlnet_destroy(cn);
    return st;
}

const sdw_controlnet_config *sdw_controlnet_config_of(const sdw_controlnet *cn) {
    return &cn->cfg;
}
size_t sdw_controlnet_n_params(const sdw_controlnet *cn) { return cn->n_params; }
int sdw_controlnet_n_down(const sdw_controlnet *cn) { return cn->n_down; }

void sdw_controlnet_residual_shape(const sdw_controlnet *cn, int k, int H, int W, int *h, int *w,
                                   int *c) {
    const sdw_unet_config *u = &cn->cfg.unet;
    SDW_ASSERT(k >= 0 && k <= cn->n_down);
    /* push order: conv_in; per level its resnets, then (but the last) its downsampler, whose
     * output is the next level's size (ceil halving: 3x3, stride 2, padding 1) */
    int lv = 0, left = k, hh = H, ww = W;
    if (left > 0 && k < cn->n_down) {
        left--; /* conv_in's */
        for (;; lv++) {
            const int n = u->layers_per_block[lv];
            if (left < n) break;
            left -= n;
            hh = (hh + 1) / 2, ww = (ww + 1) / 2;
            if (left == 0) break; /* the downsampler's: level lv's width at the next size */
            left--;
        }
    } else if (k == cn->n_down) {
        for (lv = 0; lv < u->n_levels - 1; lv++) hh = (hh + 1) / 2, ww = (ww + 1) / 2;
    }
    *h = hh;
    *w = ww;
    *c = u->block_out_channels[lv];
}

/* ---------------------------------------------------------------------------------------- */
/* forward                                                                                  */

/* One 3x3 conv of the embedding, SiLU after it unless last. Returns a new [1, oh, ow, out]. */
static float *hint_conv(const sdw_conv2d *c, float *x, int *h, int *w, bool silu) {
    const int oh = sdw_conv2d_out_size(c, *h), ow = sdw_conv2d_out_size(c, *w);
    float *y = sdw_xmalloc((size_t)oh * ow * c->out * sizeof(float));
    sdw_conv2d_forward(c, sdw_nhwc(x, 1, *h, *w), sdw_nhwc(y, 1, oh, ow), 0);
    if (silu) sdw_silu(y, (size_t)oh * ow * c->out);
    free(x);
    *h = oh;
    *w = ow;
    return y;
}

/* ControlNetConditioningEmbedding.forward: conv_in, SiLU, (conv, SiLU) per block, conv_out. */
void sdw_controlnet_embed(const sdw_controlnet *cn, const float *image, int Hc, int Wc,
                          float *emb) {
    const sdw_controlnet_config *c = &cn->cfg;
    const sdw_prof_stage prev_stage = sdw__prof_stage(SDW_PROF_UNET);
    const size_t n = (size_t)Hc * Wc * c->conditioning_channels;
    float *x = sdw_xmalloc(n * sizeof(float));
    memcpy(x, image, n * sizeof(float));
    if (c->bgr) /* torch.flip(controlnet_cond, dims=[1]) */
        for (size_t p = 0; p < n; p += (size_t)c->conditioning_channels)
            for (int a = 0, b = c->conditioning_channels - 1; a < b; a++, b--) {
                float t = x[p + a];
                x[p + a] = x[p + b];
                x[p + b] = t;
            }
    int h = Hc, w = Wc;
    x = hint_conv(&cn->hint_in, x, &h, &w, true);
    for (int i = 0; i < 2 * (c->n_embed - 1); i++)
        x = hint_conv(&cn->hint_blocks[i], x, &h, &w, true);
    x = hint_conv(&cn->hint_out, x, &h, &w, false); // [h, w, C0]
    memcpy(emb, x, (size_t)h * w * c->unet.block_out_channels[0] * sizeof(float));
    free(x);
    sdw__prof_stage(prev_stage);
}

typedef struct residual_sink {
    const sdw_controlnet *cn;
    float *const *down;
    float *mid;
    bool accumulate;
    const float *scales; /* per residual, the mid one last */
    float *tmp;          /* room for the largest residual */
} residual_sink;

/* One skip (k < n_down) or the mid output (k = n_down) through its zero convolution, scaled
 * (and pooled) into its residual. */
static void on_skip(void *user, int k, const float *x, int B, int h, int w, int c) {
    residual_sink *s = user;
    const sdw_controlnet *cn = s->cn;
    const sdw_conv2d *conv = k < cn->n_down ? &cn->zero_down[k] : &cn->zero_mid;
    float *out = k < cn->n_down ? s->down[k] : s->mid;
    const size_t hw = (size_t)h * w, n = (size_t)B * hw * c;
    sdw_conv2d_forward(conv, sdw_nhwc(x, B, h, w), sdw_nhwc(s->tmp, B, h, w), 0);
    const float scale = s->scales[k];
    for (size_t i = 0; i < n; i++) s->tmp[i] *= scale; // sample * conditioning_scale
    if (cn->cfg.global_pool) { /* torch.mean(sample, dim=(2, 3), keepdim=True), broadcast */
        for (int b = 0; b < B; b++)
            for (int ch = 0; ch < c; ch++) {
                float *p = s->tmp + (size_t)b * hw * c + ch;
                double sum = 0;
                for (size_t q = 0; q < hw; q++) sum += p[q * c];
                const float mean = (float)(sum / (double)hw);
                for (size_t q = 0; q < hw; q++) p[q * c] = mean;
            }
    }
    if (s->accumulate) sdw_add(out, s->tmp, n);
    else memcpy(out, s->tmp, n * sizeof(float));
}

/* Floats in the largest residual of a B x H x W call: level i's skips are H and W after i
 * stride-2 convolutions (ceil halvings) at the level's width. */
static size_t largest_residual(const sdw_unet_config *u, int B, int H, int W) {
    size_t most = 0;
    for (int i = 0, h = H, w = W; i < u->n_levels; i++, h = (h + 1) / 2, w = (w + 1) / 2)
        most = SDW_MAX(most, (size_t)B * h * w * u->block_out_channels[i]);
    return most;
}

void sdw_controlnet_forward(const sdw_controlnet *cn, const float *x, int B, int H, int W,
                            const float *timesteps, const float *context, int L,
                            const float *text_embeds, const float *time_ids, const float *emb,
                            float scale, bool guess_mode, float *const *down, float *mid,
                            bool accumulate) {
    const int n = cn->n_down + 1;
    float *scales = sdw_xmalloc((size_t)n * sizeof(float));
    for (int k = 0; k < n; k++) {
        scales[k] = scale;
        if (guess_mode && !cn->cfg.global_pool) {
            /* torch.logspace(-1, 0, n) (0.1 to 1.0) in float32, times the scale: torch fills
             * the first half stepping from the start, the second stepping back from the end. */
            const float step = 1.0f / (float)(n - 1);
            const float e = k < n / 2 ? -1.0f + step * (float)k : 0.0f - step * (float)(n - 1 - k);
            scales[k] = powf(10.0f, e) * scale;
        }
    }
    residual_sink s = {.cn = cn, .down = down, .mid = mid, .accumulate = accumulate,
                       .scales = scales};
    s.tmp = sdw_xmalloc(largest_residual(&cn->cfg.unet, B, H, W) * sizeof(float));
    sdw_unet_encode(cn->enc, x, B, H, W, timesteps, context, L, text_embeds, time_ids, emb,
                    on_skip, &s);
    free(s.tmp);
    free(scales);
}
