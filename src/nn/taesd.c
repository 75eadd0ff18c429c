/* nn/taesd.c — diffusers AutoencoderTiny (0.25.1) on the nn.h building blocks.
 *
 * Module map (diffusers class -> here):
 *   AutoencoderTinyBlock (conv, ReLU, conv, ReLU, conv, + identity, ReLU) -> block_forward
 *   EncoderTiny / DecoderTiny nn.Sequential layers                     -> taesd_layer[]
 *   AutoencoderTiny.encode / decode                                    -> sdw_taesd_encode/decode
 * Each half is its nn.Sequential as a list of layers in diffusers' order, so layer k of the list
 * is the reference's layers[k] (the taps' "decode.layers.NN" and the weight names agree). Every
 * convolution is 3x3 with padding 1; the encoder's stage convolutions stride 2. Activations are
 * f32 (bf16 weights compute in bf16 inside the convolutions: the layers are 64 channels wide,
 * so the activations are small next to the big VAE's).
 */
#include "nn/taesd.h"

#include "nn/arena.h"
#include "nn/nn.h"
#include "nn/nn_impl.h"
#include "nn/profile.h"

#include "io/json_config.h"

#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 128
#define MAX_CHANNELS 65536
#define PAR_MIN (1 << 15) /* elementwise loops below this many values stay on one thread */

/* ---- config ---- */

sdw_taesd_config sdw_taesd_config_default(void) {
    return (sdw_taesd_config){
        .in_channels = 3,
        .out_channels = 3,
        .latent_channels = 4,
        .n_encoder_stages = 4,
        .encoder_block_out_channels = {64, 64, 64, 64},
        .num_encoder_blocks = {1, 3, 3, 3},
        .n_decoder_stages = 4,
        .decoder_block_out_channels = {64, 64, 64, 64},
        .num_decoder_blocks = {3, 3, 3, 1},
        .upsampling_scaling_factor = 2,
        .latent_magnitude = 3.0f,
        .latent_shift = 0.5f,
        .scaling_factor = 1.0f,
        .shift_factor = 0.0f,
    };
}

/* Two lists describing one half's stages: both may be absent (defaults), and the lengths must
 * agree (diffusers raises a ValueError otherwise). */
static sdw_status stage_lists(const sdw_json_config *j, const char *ch_key, const char *nb_key,
                              int *channels, int *blocks, int *n_stages, sdw_error *err) {
    int n_ch = *n_stages, n_nb = *n_stages;
    sdw_status st;
    if ((st = sdw_json_config_int_list(j, ch_key, SDW_TAESD_MAX_STAGES, 1, MAX_CHANNELS, channels,
                                       &n_ch, err)) ||
        (st = sdw_json_config_int_list(j, nb_key, SDW_TAESD_MAX_STAGES, 0, 64, blocks, &n_nb,
                                       err)))
        return st;
    if (n_ch != n_nb)
        return sdw_error_set(err, SDW_E_FORMAT, "%s: \"%s\" has %d entries, \"%s\" has %d", j->what,
                             ch_key, n_ch, nb_key, n_nb);
    *n_stages = n_ch;
    return SDW_OK;
}

static sdw_status config_from(const sdw_json_config *j, sdw_taesd_config *cfg, sdw_error *err) {
    static const char *const relu[] = {"relu"};
    sdw_taesd_config c = sdw_taesd_config_default();
    int act = 0;
    sdw_status st;
    if ((st = sdw_json_config_int(j, "in_channels", 1, 64, &c.in_channels, err)) ||
        (st = sdw_json_config_int(j, "out_channels", 1, 64, &c.out_channels, err)) ||
        (st = sdw_json_config_int(j, "latent_channels", 1, 1024, &c.latent_channels, err)) ||
        (st = stage_lists(j, "encoder_block_out_channels", "num_encoder_blocks",
                          c.encoder_block_out_channels, c.num_encoder_blocks,
                          &c.n_encoder_stages, err)) ||
        (st = stage_lists(j, "decoder_block_out_channels", "num_decoder_blocks",
                          c.decoder_block_out_channels, c.num_decoder_blocks,
                          &c.n_decoder_stages, err)) ||
        (st = sdw_json_config_int(j, "upsampling_scaling_factor", 1, 64,
                                  &c.upsampling_scaling_factor, err)) ||
        (st = sdw_json_config_float(j, "latent_magnitude", -FLT_MAX, FLT_MAX, &c.latent_magnitude,
                                    err)) ||
        (st = sdw_json_config_float(j, "latent_shift", -FLT_MAX, FLT_MAX, &c.latent_shift, err)) ||
        (st = sdw_json_config_float(j, "scaling_factor", -FLT_MAX, FLT_MAX, &c.scaling_factor,
                                    err)) ||
        (st = sdw_json_config_float(j, "shift_factor", -FLT_MAX, FLT_MAX, &c.shift_factor, err)) ||
        (st = sdw_json_config_enum(j, "act_fn", relu, 1, &act, err)))
        return st;
    if (c.upsampling_scaling_factor != 2)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: upsampling_scaling_factor %d (only 2 is supported)", j->what,
                             c.upsampling_scaling_factor);
    *cfg = c;
    return SDW_OK;
}

sdw_status sdw_taesd_config_parse(const char *json, size_t len, sdw_taesd_config *cfg,
                                  sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_parse(json, len, "TAESD config", &j, err);
    if (st == SDW_OK) st = config_from(&j, cfg, err);
    sdw_json_config_free(&j);
    return st;
}

sdw_status sdw_taesd_config_load(const char *path, sdw_taesd_config *cfg, sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_load(path, &j, err);
    if (st == SDW_OK) st = config_from(&j, cfg, err);
    sdw_json_config_free(&j);
    return st;
}

/* What the forward passes rely on (a parsed, inferred or hand-made config): diffusers builds
 * every block and stage convolution c -> c with c the stage's own width, so consecutive stages
 * only connect when their widths are equal (diffusers would fail at the first forward). */
static sdw_status check_half(const char *half, int n, const int *ch, const int *nb,
                             sdw_error *err) {
    if (n < 1 || n > SDW_TAESD_MAX_STAGES)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "TAESD config: %s has %d stages (want 1 to %d)",
                             half, n, SDW_TAESD_MAX_STAGES);
    for (int i = 0; i < n; i++) {
        if (ch[i] < 1 || ch[i] > MAX_CHANNELS || nb[i] < 0 || nb[i] > 64)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "TAESD config: %s stage %d has %d channels and %d blocks", half, i,
                                 ch[i], nb[i]);
        if (i > 0 && ch[i] != ch[i - 1])
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "TAESD config: %s stage %d is %d channels wide after %d "
                                 "(AutoencoderTiny needs equal widths)",
                                 half, i, ch[i], ch[i - 1]);
    }
    return SDW_OK;
}

/* ---- names and shapes ---- */

static const char *fmt_name(char *buf, const char *fmt, va_list ap) {
    int n = vsnprintf(buf, NAME_MAX_LEN, fmt, ap);
    return n > 0 && n < NAME_MAX_LEN ? buf : NULL;
}

static const sdw_st_tensor *st_find(const sdw_st_file *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static const sdw_st_tensor *st_find(const sdw_st_file *f, const char *fmt, ...) {
    char name[NAME_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    const char *n = fmt_name(name, fmt, ap);
    va_end(ap);
    return n ? sdw_st_find(f, n) : NULL;
}

static bool is_conv3(int n_dims, const int64_t *s) {
    return n_dims == 4 && s[0] >= 1 && s[0] <= MAX_CHANNELS && s[1] >= 1 && s[1] <= MAX_CHANNELS &&
           s[2] == 3 && s[3] == 3;
}

const char *sdw_taesd_layout_str(sdw_taesd_layout l) {
    switch (l) {
    case SDW_TAESD_LAYOUT_DIFFUSERS: return "diffusers AutoencoderTiny";
    case SDW_TAESD_LAYOUT_ORIG_DECODER: return "original TAESD decoder";
    case SDW_TAESD_LAYOUT_ORIG_ENCODER: return "original TAESD encoder";
    case SDW_TAESD_LAYOUT_NONE: break;
    }
    return "not a TAESD";
}

/* Output channels of the last "<prefix>N.weight" 3x3 conv: the encoder's latent convolution. */
static int last_conv_out(const sdw_st_file *f, const char *prefix) {
    int out = 0;
    /* Layers are numbered densely; a TAESD has a few dozen. Gaps (ReLU, Upsample) are short. */
    for (int i = 0, gap = 0; i < 1024 && gap < 4; i++) {
        const sdw_st_tensor *t = st_find(f, "%s%d.weight", prefix, i);
        bool block = st_find(f, "%s%d.conv.0.weight", prefix, i) != NULL;
        gap = t || block ? 0 : gap + 1;
        if (t && is_conv3(t->n_dims, t->shape)) out = (int)t->shape[0];
    }
    return out;
}

sdw_taesd_layout sdw_taesd_detect(const sdw_st_file *f, int *latent_channels) {
    sdw_taesd_layout l = SDW_TAESD_LAYOUT_NONE;
    int lat = 0;
    const sdw_st_tensor *t;
    if ((t = st_find(f, "decoder.layers.0.weight")) && is_conv3(t->n_dims, t->shape) &&
        st_find(f, "decoder.layers.2.conv.0.weight")) {
        l = SDW_TAESD_LAYOUT_DIFFUSERS;
        lat = (int)t->shape[1];
    } else if ((t = st_find(f, "encoder.layers.0.weight")) && is_conv3(t->n_dims, t->shape) &&
               st_find(f, "encoder.layers.1.conv.0.weight")) {
        l = SDW_TAESD_LAYOUT_DIFFUSERS;
        lat = last_conv_out(f, "encoder.layers.");
    } else if ((t = st_find(f, "1.weight")) && is_conv3(t->n_dims, t->shape) &&
               !st_find(f, "0.weight") && st_find(f, "3.conv.0.weight")) {
        l = SDW_TAESD_LAYOUT_ORIG_DECODER; /* 0 = Clamp, 1 = conv, 2 = ReLU, 3 = block */
        lat = (int)t->shape[1];
    } else if ((t = st_find(f, "0.weight")) && is_conv3(t->n_dims, t->shape) &&
               st_find(f, "1.conv.0.weight")) {
        l = SDW_TAESD_LAYOUT_ORIG_ENCODER;
        lat = last_conv_out(f, "");
    }
    if (l != SDW_TAESD_LAYOUT_NONE && lat < 1) l = SDW_TAESD_LAYOUT_NONE;
    if (latent_channels) *latent_channels = l == SDW_TAESD_LAYOUT_NONE ? 0 : lat;
    return l;
}

const char *sdw_taesd_original_name(const char *name, char *buf, size_t cap, void *user) {
    (void)user;
    static const char dec[] = "decoder.layers.", enc[] = "encoder.layers.";
    int off;
    const char *rest;
    if (strncmp(name, dec, sizeof dec - 1) == 0) {
        off = 1; /* the original decoder's layer 0 is the parameter-free Clamp */
        rest = name + sizeof dec - 1;
    } else if (strncmp(name, enc, sizeof enc - 1) == 0) {
        off = 0;
        rest = name + sizeof enc - 1;
    } else {
        return NULL;
    }
    if (!isdigit((unsigned char)rest[0])) return NULL;
    char *end;
    long k = strtol(rest, &end, 10);
    if (k < 0 || k > 100000 || *end != '.') return NULL;
    int n = snprintf(buf, cap, "%ld%s", k + off, end);
    return n > 0 && (size_t)n < cap ? buf : NULL;
}

/* The canonical "<half>.layers.<idx><sub>.weight" of ws: 1 when present as a 3x3 conv (shape
 * in s), 0 when absent, an SDW_E_FORMAT status (negative) when present with another shape. */
static int conv_at(const sdw_weights *ws, const char *half, int idx, const char *sub, int64_t *s,
                   sdw_error *err) {
    char name[NAME_MAX_LEN];
    snprintf(name, sizeof name, "%s.layers.%d%s.weight", half, idx, sub);
    int nd = 0;
    int64_t shape[SDW_ST_MAX_DIMS];
    if (!sdw_weights_shape(ws, name, &nd, shape)) return 0;
    if (!is_conv3(nd, shape))
        return sdw_error_set(err, SDW_E_FORMAT, "%s: not a 3x3 convolution weight", name);
    memcpy(s, shape, 4 * sizeof *s);
    return 1;
}

/* Counts the blocks from layer *idx on (advancing it). */
static int count_blocks(const sdw_weights *ws, const char *half, int *idx, int *n,
                        sdw_error *err) {
    int64_t s[4];
    int r;
    *n = 0;
    while ((r = conv_at(ws, half, *idx, ".conv.0", s, err)) > 0) {
        (*n)++;
        (*idx)++;
    }
    return r;
}

static sdw_status infer_decoder(const sdw_weights *ws, sdw_taesd_config *c, sdw_error *err) {
    int64_t s[4];
    int r = conv_at(ws, "decoder", 0, "", s, err);
    if (r < 0) return r;
    if (r == 0)
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "no TAESD decoder: decoder.layers.0.weight not found");
    c->latent_channels = (int)s[1];
    int idx = 2, n = 0; /* layers.1 is the ReLU */
    for (;;) {
        if (n == SDW_TAESD_MAX_STAGES)
            return sdw_error_set(err, SDW_E_FORMAT, "TAESD decoder: more than %d stages",
                                 SDW_TAESD_MAX_STAGES);
        if ((r = count_blocks(ws, "decoder", &idx, &c->num_decoder_blocks[n], err)) < 0) return r;
        if ((r = conv_at(ws, "decoder", idx, "", s, err)) < 0) return r;
        if (r > 0) { /* a convolution straight after the blocks: the output convolution */
            c->decoder_block_out_channels[n++] = (int)s[1];
            c->out_channels = (int)s[0];
            break;
        }
        /* layers.idx is an Upsample (no parameters); the stage's convolution follows it */
        if ((r = conv_at(ws, "decoder", idx + 1, "", s, err)) < 0) return r;
        if (r == 0)
            return sdw_error_set(err, SDW_E_FORMAT,
                                 "TAESD decoder.layers.%d: neither a block, the output "
                                 "convolution, nor an upsample followed by a convolution",
                                 idx);
        c->decoder_block_out_channels[n++] = (int)s[1];
        idx += 2;
    }
    c->n_decoder_stages = n;
    c->upsampling_scaling_factor = 2;
    return SDW_OK;
}

static sdw_status infer_encoder(const sdw_weights *ws, sdw_taesd_config *c, int *latent,
                                sdw_error *err) {
    int64_t s[4], t[4];
    int r = conv_at(ws, "encoder", 0, "", s, err);
    if (r < 0) return r;
    if (r == 0)
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "no TAESD encoder: encoder.layers.0.weight not found");
    c->in_channels = (int)s[1];
    int idx = 1, n = 0, ch = (int)s[0];
    for (;;) {
        if ((r = count_blocks(ws, "encoder", &idx, &c->num_encoder_blocks[n], err)) < 0) return r;
        c->encoder_block_out_channels[n++] = ch;
        if ((r = conv_at(ws, "encoder", idx, "", s, err)) < 0) return r;
        if (r == 0)
            return sdw_error_set(err, SDW_E_FORMAT,
                                 "TAESD encoder.layers.%d: expected a block or a convolution", idx);
        int more = conv_at(ws, "encoder", idx + 1, "", t, err);
        if (more == 0) more = conv_at(ws, "encoder", idx + 1, ".conv.0", t, err);
        if (more < 0) return more;
        if (more == 0) { /* the last layer: the latent convolution */
            *latent = (int)s[0];
            break;
        }
        if (n == SDW_TAESD_MAX_STAGES)
            return sdw_error_set(err, SDW_E_FORMAT, "TAESD encoder: more than %d stages",
                                 SDW_TAESD_MAX_STAGES);
        ch = (int)s[0]; /* the next stage's stride-2 convolution */
        idx++;
    }
    c->n_encoder_stages = n;
    return SDW_OK;
}

sdw_status sdw_taesd_config_infer(const sdw_weights *dec, const sdw_weights *enc,
                                  sdw_taesd_config *cfg, sdw_error *err) {
    SDW_ASSERT(cfg && (dec || enc));
    sdw_taesd_config c = sdw_taesd_config_default();
    c.n_encoder_stages = c.n_decoder_stages = 0;
    sdw_status st;
    int enc_latent = 0;
    if (dec && (st = infer_decoder(dec, &c, err))) return st;
    if (enc && (st = infer_encoder(enc, &c, &enc_latent, err))) return st;
    if (!dec) {
        c.latent_channels = enc_latent;
        c.out_channels = c.in_channels;
    } else if (!enc) {
        c.in_channels = c.out_channels;
    } else if (enc_latent != c.latent_channels) {
        return sdw_error_set(err, SDW_E_FORMAT,
                             "TAESD: the encoder makes %d latent channels, the decoder reads %d",
                             enc_latent, c.latent_channels);
    }
    *cfg = c;
    return SDW_OK;
}

/* ---- layers and binding ---- */

typedef enum layer_kind { LAYER_CONV, LAYER_RELU, LAYER_BLOCK, LAYER_UPSAMPLE } layer_kind;

typedef struct taesd_layer {
    layer_kind kind;
    sdw_conv2d conv[3]; /* CONV: conv[0]; BLOCK: conv.0, conv.2, conv.4 (c -> c each) */
} taesd_layer;

struct sdw_taesd {
    sdw_taesd_config cfg;
    taesd_layer *dec, *enc; /* decoder.layers[k] = dec[k]; NULL: no such half */
    int n_dec, n_enc;
    size_t n_params;
};

/* Binds "<half>.layers.<idx><sub>" (3x3, pad 1) and counts its parameters. */
static sdw_status bind_conv(sdw_conv2d *c, sdw_weights *ws, const char *half, int idx,
                            const char *sub, int in, int out, int stride, bool bias, size_t *np,
                            sdw_error *err) {
    char name[NAME_MAX_LEN];
    snprintf(name, sizeof name, "%s.layers.%d%s", half, idx, sub);
    sdw_status st = sdw_conv2d_bind(c, ws, name, in, out, 3, stride, 1, bias, err);
    if (st == SDW_OK) *np += (size_t)out * in * 9 + (bias ? (size_t)out : 0);
    return st;
}

static sdw_status bind_block(taesd_layer *l, sdw_weights *ws, const char *half, int idx, int c,
                             size_t *np, sdw_error *err) {
    static const char *const sub[3] = {".conv.0", ".conv.2", ".conv.4"};
    l->kind = LAYER_BLOCK;
    sdw_status st = SDW_OK;
    for (int i = 0; i < 3 && st == SDW_OK; i++)
        st = bind_conv(&l->conv[i], ws, half, idx, sub[i], c, c, 1, true, np, err);
    return st;
}

static int decoder_layers(const sdw_taesd_config *c) {
    int n = 2 + 2 * (c->n_decoder_stages - 1) + 1; /* conv, ReLU, upsample+conv per stage, out */
    for (int i = 0; i < c->n_decoder_stages; i++) n += c->num_decoder_blocks[i];
    return n;
}

static int encoder_layers(const sdw_taesd_config *c) {
    int n = c->n_encoder_stages + 1; /* a convolution per stage, the latent convolution */
    for (int i = 0; i < c->n_encoder_stages; i++) n += c->num_encoder_blocks[i];
    return n;
}

/* DecoderTiny's layer list (see sdw_taesd_config), bound into t->dec. */
static sdw_status bind_decoder(sdw_taesd *t, sdw_weights *ws, sdw_error *err) {
    const sdw_taesd_config *c = &t->cfg;
    t->n_dec = decoder_layers(c);
    t->dec = sdw_xcalloc((size_t)t->n_dec, sizeof *t->dec);
    const int *ch = c->decoder_block_out_channels;
    int k = 0;
    sdw_status st;
    t->dec[k].kind = LAYER_CONV;
    if ((st = bind_conv(&t->dec[k].conv[0], ws, "decoder", k, "", c->latent_channels, ch[0], 1,
                        true, &t->n_params, err)))
        return st;
    t->dec[++k].kind = LAYER_RELU;
    k++;
    for (int i = 0; i < c->n_decoder_stages; i++) {
        const bool last = i == c->n_decoder_stages - 1;
        for (int b = 0; b < c->num_decoder_blocks[i]; b++, k++)
            if ((st = bind_block(&t->dec[k], ws, "decoder", k, ch[i], &t->n_params, err)))
                return st;
        if (!last) t->dec[k++].kind = LAYER_UPSAMPLE;
        t->dec[k].kind = LAYER_CONV;
        if ((st = bind_conv(&t->dec[k].conv[0], ws, "decoder", k, "", ch[i],
                            last ? c->out_channels : ch[i], 1, last, &t->n_params, err)))
            return st;
        k++;
    }
    SDW_ASSERT(k == t->n_dec);
    return SDW_OK;
}

/* EncoderTiny's layer list, bound into t->enc. */
static sdw_status bind_encoder(sdw_taesd *t, sdw_weights *ws, sdw_error *err) {
    const sdw_taesd_config *c = &t->cfg;
    t->n_enc = encoder_layers(c);
    t->enc = sdw_xcalloc((size_t)t->n_enc, sizeof *t->enc);
    const int *ch = c->encoder_block_out_channels;
    int k = 0;
    sdw_status st;
    for (int i = 0; i < c->n_encoder_stages; i++) {
        t->enc[k].kind = LAYER_CONV;
        if ((st = bind_conv(&t->enc[k].conv[0], ws, "encoder", k, "", i ? ch[i] : c->in_channels,
                            ch[i], i ? 2 : 1, i == 0, &t->n_params, err)))
            return st;
        k++;
        for (int b = 0; b < c->num_encoder_blocks[i]; b++, k++)
            if ((st = bind_block(&t->enc[k], ws, "encoder", k, ch[i], &t->n_params, err)))
                return st;
    }
    t->enc[k].kind = LAYER_CONV;
    if ((st = bind_conv(&t->enc[k].conv[0], ws, "encoder", k, "",
                        ch[c->n_encoder_stages - 1], c->latent_channels, 1, true, &t->n_params,
                        err)))
        return st;
    k++;
    SDW_ASSERT(k == t->n_enc);
    return SDW_OK;
}

/* Every stored tensor of ws bound: anything left belongs to layers this code does not run. */
static sdw_status all_used(const sdw_weights *ws, sdw_error *err) {
    char names[256];
    int n = sdw_weights_unused(ws, names, sizeof names);
    if (n == 0) return SDW_OK;
    return sdw_error_set(err, SDW_E_UNSUPPORTED,
                         "%d stored tensor%s not part of this architecture (%s): another TAESD "
                         "version, or a file holding more than this half",
                         n, n == 1 ? " is" : "s are", names);
}

static sdw_status check_config(const sdw_taesd_config *c, bool dec, bool enc, sdw_error *err) {
    sdw_status st;
    if (c->in_channels < 1 || c->out_channels < 1 || c->latent_channels < 1)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "TAESD config: channel counts must be positive");
    if (c->upsampling_scaling_factor != 2)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "TAESD config: upsampling_scaling_factor %d (only 2 is supported)",
                             c->upsampling_scaling_factor);
    if (dec && (st = check_half("decoder", c->n_decoder_stages, c->decoder_block_out_channels,
                                c->num_decoder_blocks, err)))
        return st;
    if (enc && (st = check_half("encoder", c->n_encoder_stages, c->encoder_block_out_channels,
                                c->num_encoder_blocks, err)))
        return st;
    if (dec && enc && c->n_decoder_stages != c->n_encoder_stages)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "TAESD config: the encoder downscales by %d, the decoder upscales "
                             "by %d",
                             1 << (c->n_encoder_stages - 1), 1 << (c->n_decoder_stages - 1));
    return SDW_OK;
}

sdw_status sdw_taesd_create(sdw_weights *dec, sdw_weights *enc, const sdw_taesd_config *cfg,
                            sdw_taesd **out, sdw_error *err) {
    SDW_ASSERT(cfg && out);
    if (!dec && !enc)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "TAESD: neither a decoder nor an encoder");
    sdw_status st = check_config(cfg, dec != NULL, enc != NULL, err);
    if (st != SDW_OK) return st;
    sdw_taesd *t = sdw_xcalloc(1, sizeof *t);
    t->cfg = *cfg;
    const char *half = "TAESD decoder";
    if (dec && ((st = bind_decoder(t, dec, err)) || (dec != enc && (st = all_used(dec, err)))))
        goto fail;
    half = "TAESD encoder";
    if (enc && ((st = bind_encoder(t, enc, err)) || (st = all_used(enc, err)))) goto fail;
    *out = t;
    return SDW_OK;
fail:
    sdw_error_prefix(err, "%s", half);
    sdw_taesd_destroy(t);
    return st;
}

void sdw_taesd_destroy(sdw_taesd *t) {
    if (!t) return;
    free(t->dec);
    free(t->enc);
    free(t);
}

const sdw_taesd_config *sdw_taesd_get_config(const sdw_taesd *t) { return &t->cfg; }
int sdw_taesd_latent_channels(const sdw_taesd *t) { return t->cfg.latent_channels; }
int sdw_taesd_downscale(const sdw_taesd *t) {
    return 1 << ((t->dec ? t->cfg.n_decoder_stages : t->cfg.n_encoder_stages) - 1);
}
bool sdw_taesd_has_decoder(const sdw_taesd *t) { return t->dec != NULL; }
bool sdw_taesd_has_encoder(const sdw_taesd *t) { return t->enc != NULL; }
size_t sdw_taesd_n_params(const sdw_taesd *t) { return t->n_params; }

/* ---- forward ---- */

static float *alloc_act(sdw_arena *ar, int B, int H, int W, int C) {
    return sdw_arena_alloc(ar, (size_t)B * H * W * C * sizeof(float));
}

/* ReLU in place (branch-free, so the loop vectorises). */
static void relu(float *x, size_t n) {
    const double t0 = sdw__prof_begin();
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] = sdw__select(x[i] > 0.0f, x[i], 0.0f);
    sdw__prof_end(SDW_OP_ACT, t0, 0);
}

/* AutoencoderTinyBlock: x = relu(conv4(relu(conv2(relu(conv0(x))))) + x), x [B,H,W,C] updated
 * in place (the identity skip is the convolution's accumulate). Peak: x + 2 buffers. */
static void block_forward(sdw_arena *ar, const taesd_layer *l, float *x, int B, int H, int W) {
    const int C = l->conv[0].out;
    const size_t n = (size_t)B * H * W * C;
    float *a = alloc_act(ar, B, H, W, C), *b = alloc_act(ar, B, H, W, C);
    sdw_conv2d_forward(&l->conv[0], sdw_nhwc(x, B, H, W), sdw_nhwc(a, B, H, W), 0);
    relu(a, n);
    sdw_conv2d_forward(&l->conv[1], sdw_nhwc(a, B, H, W), sdw_nhwc(b, B, H, W), 0);
    relu(b, n);
    sdw_arena_free(ar, a);
    sdw_conv2d_forward(&l->conv[2], sdw_nhwc(b, B, H, W), sdw_nhwc(x, B, H, W), SDW_ACCUMULATE);
    sdw_arena_free(ar, b);
    relu(x, n);
}

/* One layer over x [B, *H, *W, *C]: returns its output (x itself, or a new buffer with x freed)
 * and updates the shape. */
static float *layer_forward(sdw_arena *ar, const taesd_layer *l, float *x, int B, int *H, int *W,
                            int *C) {
    switch (l->kind) {
    case LAYER_CONV: {
        const sdw_conv2d *c = &l->conv[0];
        const int oh = sdw_conv2d_out_size(c, *H), ow = sdw_conv2d_out_size(c, *W);
        float *y = alloc_act(ar, B, oh, ow, c->out);
        sdw_conv2d_forward(c, sdw_nhwc(x, B, *H, *W), sdw_nhwc(y, B, oh, ow), 0);
        sdw_arena_free(ar, x);
        *H = oh;
        *W = ow;
        *C = c->out;
        return y;
    }
    case LAYER_RELU:
        relu(x, (size_t)B * *H * *W * *C);
        return x;
    case LAYER_BLOCK:
        block_forward(ar, l, x, B, *H, *W);
        return x;
    case LAYER_UPSAMPLE: { /* nn.Upsample(scale_factor=2), mode nearest */
        float *y = alloc_act(ar, B, 2 * *H, 2 * *W, *C);
        sdw_upsample_nearest2x(x, B, *H, *W, *C, y);
        sdw_arena_free(ar, x);
        *H *= 2;
        *W *= 2;
        return y;
    }
    }
    SDW_ASSERT(!"unknown TAESD layer kind");
    return NULL;
}

/* The nn.Sequential: layers[0..n) over x (taken), tapping "<side>.layers.NN" after each. */
static float *run_layers(sdw_arena *ar, const taesd_layer *ls, int n, const char *side, float *x,
                         int B, int *H, int *W, int *C, sdw_taesd_tap_fn tap, void *tap_user) {
    for (int k = 0; k < n; k++) {
        x = layer_forward(ar, &ls[k], x, B, H, W, C);
        if (tap) {
            char name[NAME_MAX_LEN];
            snprintf(name, sizeof name, "%s.layers.%02d", side, k);
            tap(tap_user, name, x, B, *H, *W, *C);
        }
    }
    return x;
}

sdw_status sdw_taesd_decode_tap(const sdw_taesd *t, const float *z, int B, int h, int w,
                                float *img, sdw_taesd_tap_fn tap, void *tap_user, sdw_error *err) {
    SDW_ASSERT(t && z && img);
    if (!t->dec)
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "TAESD decode: this TAESD has no decoder");
    if (B < 1 || h < 1 || w < 1)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "TAESD decode: latents %dx%d (batch %d)", w,
                             h, B);
    const sdw_prof_stage prev_stage = sdw__prof_stage(SDW_PROF_VAE);
    sdw_arena *ar = sdw_arena_create();
    int H = h, W = w, C = t->cfg.latent_channels;
    const size_t n_in = (size_t)B * h * w * C;
    float *x = alloc_act(ar, B, h, w, C);
    /* DecoderTiny.forward: a soft clamp of the latents to (-3, 3) */
    for (size_t i = 0; i < n_in; i++) x[i] = tanhf(z[i] / 3.0f) * 3.0f;
    if (tap) tap(tap_user, "decode.clamped", x, B, H, W, C);
    x = run_layers(ar, t->dec, t->n_dec, "decode", x, B, &H, &W, &C, tap, tap_user);
    const size_t n_out = (size_t)B * H * W * C; /* [B, h·s, w·s, out_channels] */
    for (size_t i = 0; i < n_out; i++) img[i] = x[i] * 2.0f - 1.0f; /* [0, 1] -> [-1, 1] */
    sdw_arena_free(ar, x);
    sdw_arena_destroy(ar);
    sdw__prof_stage(prev_stage);
    return SDW_OK;
}

sdw_status sdw_taesd_decode(const sdw_taesd *t, const float *z, int B, int h, int w, float *img,
                            sdw_error *err) {
    return sdw_taesd_decode_tap(t, z, B, h, w, img, NULL, NULL, err);
}

sdw_status sdw_taesd_encode_tap(const sdw_taesd *t, const float *img, int B, int H, int W,
                                float *latents, sdw_taesd_tap_fn tap, void *tap_user,
                                sdw_error *err) {
    SDW_ASSERT(t && img && latents);
    if (!t->enc)
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "TAESD encode: this TAESD has no encoder");
    const int s = sdw_taesd_downscale(t);
    if (B < 1 || H < s || W < s || H % s || W % s)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "TAESD encode: image %dx%d (batch %d) must be a positive multiple "
                             "of %d",
                             W, H, B, s);
    const sdw_prof_stage prev_stage = sdw__prof_stage(SDW_PROF_VAE);
    sdw_arena *ar = sdw_arena_create();
    int C = t->cfg.in_channels;
    const size_t n_in = (size_t)B * H * W * C;
    float *x = alloc_act(ar, B, H, W, C);
    for (size_t i = 0; i < n_in; i++) x[i] = (img[i] + 1.0f) / 2.0f; /* [-1, 1] -> [0, 1] */
    x = run_layers(ar, t->enc, t->n_enc, "encode", x, B, &H, &W, &C, tap, tap_user);
    memcpy(latents, x, (size_t)B * H * W * C * sizeof(float));
    sdw_arena_free(ar, x);
    sdw_arena_destroy(ar);
    sdw__prof_stage(prev_stage);
    return SDW_OK;
}

sdw_status sdw_taesd_encode(const sdw_taesd *t, const float *img, int B, int H, int W,
                            float *latents, sdw_error *err) {
    return sdw_taesd_encode_tap(t, img, B, H, W, latents, NULL, NULL, err);
}
