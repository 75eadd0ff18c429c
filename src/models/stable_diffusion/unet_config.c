/* UNet2DConditionModel config: diffusers config.json parsing, inference from LDM shapes. */
#include "models/stable_diffusion/unet_config.h"

#include "io/json_config.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* config.json                                                                              */

/* diffusers' "int or per-block list" fields: an int is broadcast to n entries, a list must have
 * exactly n positive ints (nested per-layer lists are not supported). Absent or null keeps out. */
static sdw_status get_int_list(const sdw_json_config *j, const char *key, int n, int *out,
                               sdw_error *err) {
    const json_t *v = json_object_get(j->root, key);
    if (!json_is_array(v)) {
        int x = 0;
        sdw_status st = sdw_json_config_int(j, key, 1, 1 << 20, &x, err);
        if (st == SDW_OK && sdw_json_config_has(j, key))
            for (int i = 0; i < n; i++)
                out[i] = x;
        return st;
    }
    for (size_t i = 0; i < json_array_size(v); i++)
        if (json_is_array(json_array_get(v, i)))
            return sdw_error_set(err, SDW_E_UNSUPPORTED,
                                 "%s: \"%s\" with per-layer lists is not supported", j->what, key);
    int got[SDW_UNET_MAX_LEVELS], m = 0;
    sdw_status st = sdw_json_config_int_list(j, key, SDW_UNET_MAX_LEVELS, 1, 1 << 20, got, &m, err);
    if (st) return st;
    if (m != n)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: \"%s\" has %d entries, block_out_channels has %d", j->what, key,
                             m, n);
    memcpy(out, got, (size_t)n * sizeof *out);
    return SDW_OK;
}

/* Block type names of one path (required); attn[i] = the CrossAttn variant. */
static sdw_status get_block_types(const sdw_json_config *j, const char *key, int n,
                                  const char *cross_name, const char *plain_name, bool *attn,
                                  sdw_error *err) {
    const char *names[SDW_UNET_MAX_LEVELS];
    int m = 0;
    sdw_status st = sdw_json_config_string_list(j, key, SDW_UNET_MAX_LEVELS, names, &m, err);
    if (st) return st;
    if (m == 0) return sdw_error_set(err, SDW_E_FORMAT, "%s: \"%s\" missing", j->what, key);
    if (m != n)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: \"%s\" has %d entries, block_out_channels has %d", j->what, key,
                             m, n);
    for (int i = 0; i < n; i++) {
        if (!strcmp(names[i], cross_name))
            attn[i] = true;
        else if (!strcmp(names[i], plain_name))
            attn[i] = false;
        else
            return sdw_error_set(err, SDW_E_UNSUPPORTED,
                                 "%s: %s[%d] = \"%s\" is not supported (only %s, %s)", j->what, key,
                                 i, names[i], cross_name, plain_name);
    }
    return SDW_OK;
}

/* Settings of UNet2DConditionModel that change the computation in ways not implemented here:
 * each must be absent/null/false (or equal to the one value we run). */
static sdw_status check_unsupported(const sdw_json_config *j, sdw_error *err) {
    sdw_status st;
    static const char *const must_be_null[] = {
        "class_embed_type",   "num_class_embeds",      "encoder_hid_dim",   "encoder_hid_dim_type",
        "time_cond_proj_dim", "time_embedding_act_fn", "timestep_post_act", "cross_attention_norm",
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(must_be_null); i++) {
        if (!sdw_json_config_has(j, must_be_null[i])) continue;
        char *s =
            json_dumps(json_object_get(j->root, must_be_null[i]), JSON_ENCODE_ANY | JSON_COMPACT);
        st = sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: \"%s\" = %s is not supported", j->what,
                           must_be_null[i], s ? s : "?");
        free(s);
        return st;
    }
    static const char *const must_be_false[] = {"dual_cross_attention", "center_input_sample",
                                                "class_embeddings_concat", "resnet_skip_time_act"};
    for (size_t i = 0; i < SDW_ARRAY_LEN(must_be_false); i++) {
        bool b = false;
        if ((st = sdw_json_config_bool(j, must_be_false[i], &b, err))) return st;
        if (b)
            return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: \"%s\" = true is not supported",
                                 j->what, must_be_false[i]);
    }
    /* only_cross_attention: bool or per-block list of bools. */
    const json_t *oca = json_object_get(j->root, "only_cross_attention");
    bool any = json_is_true(oca);
    for (size_t i = 0; i < json_array_size(oca); i++)
        any = any || json_is_true(json_array_get(oca, i));
    if (any)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: \"only_cross_attention\" = true is not supported", j->what);
    static const struct {
        const char *key, *want;
    } fixed_str[] = {
        {"_class_name", "UNet2DConditionModel"}, {"act_fn", "silu"},
        {"time_embedding_type", "positional"},   {"resnet_time_scale_shift", "default"},
        {"attention_type", "default"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(fixed_str); i++) {
        int which;
        if ((st = sdw_json_config_enum(j, fixed_str[i].key, &fixed_str[i].want, 1, &which, err)))
            return st;
    }
    static const struct {
        const char *key;
        double want;
    } fixed_num[] = {
        {"mid_block_scale_factor", 1.0},
        {"resnet_out_scale_factor", 1.0},
        {"downsample_padding", 1.0},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(fixed_num); i++) {
        double d = fixed_num[i].want;
        if ((st = sdw_json_config_number(j, fixed_num[i].key, -INFINITY, INFINITY, &d, err)))
            return st;
        if (d != fixed_num[i].want)
            return sdw_error_set(err, SDW_E_UNSUPPORTED,
                                 "%s: \"%s\" = %g is not supported (only %g)", j->what,
                                 fixed_num[i].key, d, fixed_num[i].want);
    }
    return SDW_OK;
}

/* Mirrors the argument handling of UNet2DConditionModel.__init__ (diffusers 0.25.1). */
static sdw_status config_from(const sdw_json_config *j, sdw_unet_config *c, sdw_error *err) {
    sdw_status st;
    memset(c, 0, sizeof *c);
    if ((st = check_unsupported(j, err))) return st;

    if (json_array_size(json_object_get(j->root, "block_out_channels")) > SDW_UNET_MAX_LEVELS)
        return sdw_error_set(
            err, SDW_E_UNSUPPORTED, "%s: %zu levels in \"block_out_channels\" (max %d)", j->what,
            json_array_size(json_object_get(j->root, "block_out_channels")), SDW_UNET_MAX_LEVELS);
    if ((st = sdw_json_config_int_list(j, "block_out_channels", SDW_UNET_MAX_LEVELS, 1, 1 << 20,
                                       c->block_out_channels, &c->n_levels, err)))
        return st;
    int n = c->n_levels;
    if (n == 0)
        return sdw_error_set(err, SDW_E_FORMAT, "%s: \"block_out_channels\" missing", j->what);
    if ((st = get_block_types(j, "down_block_types", n, "CrossAttnDownBlock2D", "DownBlock2D",
                              c->down_attn, err)))
        return st;
    if ((st = get_block_types(j, "up_block_types", n, "CrossAttnUpBlock2D", "UpBlock2D", c->up_attn,
                              err)))
        return st;

    static const char *const mid_names[] = {"UNetMidBlock2DCrossAttn"};
    int mid;
    if ((st = sdw_json_config_enum(j, "mid_block_type", mid_names, 1, &mid, err))) return st;
    /* A missing key means diffusers' default (the CrossAttn mid block); only an explicit null
     * removes it. */
    c->has_mid = !json_is_null(json_object_get(j->root, "mid_block_type"));

    for (int i = 0; i < n; i++)
        c->layers_per_block[i] = 2;
    if ((st = get_int_list(j, "layers_per_block", n, c->layers_per_block, err))) return st;

    /* Heads: diffusers 0.25 `num_attention_heads = num_attention_heads or attention_head_dim`,
     * and the blocks build Transformer2DModel(heads, channels // heads): for SD models the
     * config's `attention_head_dim` is the NUMBER of heads. (diffusers itself refuses an explicit
     * num_attention_heads; we accept it with the same meaning.) */
    for (int i = 0; i < n; i++)
        c->heads[i] = 8;
    if ((st = get_int_list(j, "attention_head_dim", n, c->heads, err))) return st;
    if ((st = get_int_list(j, "num_attention_heads", n, c->heads, err))) return st;

    for (int i = 0; i < n; i++)
        c->down_depth[i] = 1;
    if ((st = get_int_list(j, "transformer_layers_per_block", n, c->down_depth, err))) return st;
    for (int i = 0; i < n; i++)
        c->up_depth[i] = c->down_depth[n - 1 - i];
    if ((st = get_int_list(j, "reverse_transformer_layers_per_block", n, c->up_depth, err)))
        return st;
    c->mid_depth = c->down_depth[n - 1];

    if (json_is_array(json_object_get(j->root, "cross_attention_dim")))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: per-block \"cross_attention_dim\" is not supported", j->what);
    c->in_channels = 4;
    c->out_channels = 4;
    c->cross_attention_dim = 1280;
    c->norm_num_groups = 32;
    c->norm_eps = 1e-5f;
    c->flip_sin_to_cos = true;
    c->time_embed_dim = c->block_out_channels[0] * 4;
    c->conv_in_kernel = c->conv_out_kernel = 3;
    if ((st = sdw_json_config_int(j, "in_channels", 0, 1 << 20, &c->in_channels, err)) ||
        (st = sdw_json_config_int(j, "out_channels", 0, 1 << 20, &c->out_channels, err)) ||
        (st = sdw_json_config_int(j, "cross_attention_dim", 0, 1 << 20, &c->cross_attention_dim,
                                  err)) ||
        (st = sdw_json_config_bool(j, "use_linear_projection", &c->use_linear_projection, err)) ||
        (st = sdw_json_config_bool(j, "upcast_attention", &c->upcast_attention, err)) ||
        (st = sdw_json_config_int(j, "norm_num_groups", 0, 1 << 20, &c->norm_num_groups, err)) ||
        (st = sdw_json_config_float(j, "norm_eps", -FLT_MAX, FLT_MAX, &c->norm_eps, err)) ||
        (st = sdw_json_config_bool(j, "flip_sin_to_cos", &c->flip_sin_to_cos, err)) ||
        (st = sdw_json_config_float(j, "freq_shift", -FLT_MAX, FLT_MAX, &c->freq_shift, err)) ||
        (st = sdw_json_config_int(j, "time_embedding_dim", 0, 1 << 20, &c->time_embed_dim, err)) ||
        (st = sdw_json_config_int(j, "conv_in_kernel", 0, 1 << 20, &c->conv_in_kernel, err)) ||
        (st = sdw_json_config_int(j, "conv_out_kernel", 0, 1 << 20, &c->conv_out_kernel, err)))
        return st;

    static const char *const add_names[] = {"text_time"};
    int add = -1;
    if ((st = sdw_json_config_enum(j, "addition_embed_type", add_names, 1, &add, err))) return st;
    if (add == 0) {
        c->add_text_time = true;
        if ((st = sdw_json_config_int(j, "addition_time_embed_dim", 0, 1 << 20,
                                      &c->addition_time_embed_dim, err)) ||
            (st = sdw_json_config_int(j, "projection_class_embeddings_input_dim", 0, 1 << 20,
                                      &c->add_in_dim, err)))
            return st;
        if (c->addition_time_embed_dim <= 0 || c->add_in_dim <= 0)
            return sdw_error_set(
                err, SDW_E_FORMAT,
                "%s: addition_embed_type \"text_time\" needs "
                "addition_time_embed_dim and projection_class_embeddings_input_dim",
                j->what);
        /* SDXL base sends 6 time ids (original size, crop top-left, target size). */
        c->add_n_time_ids = 6;
        c->add_text_dim = c->add_in_dim - 6 * c->addition_time_embed_dim;
    }
    return sdw_unet_config_validate(c, err);
}

sdw_status sdw_unet_config_parse(const char *json_text, sdw_unet_config *cfg, sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_parse(json_text, strlen(json_text), "unet config", &j, err);
    if (st == SDW_OK) st = config_from(&j, cfg, err);
    sdw_json_config_free(&j);
    return st;
}

sdw_status sdw_unet_config_load(const char *path, sdw_unet_config *cfg, sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_load(path, &j, err);
    if (st == SDW_OK) st = config_from(&j, cfg, err);
    sdw_json_config_free(&j);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* validation, heads                                                                        */

static int up_channels(const sdw_unet_config *c, int i) {
    return c->block_out_channels[c->n_levels - 1 - i];
}

sdw_status sdw_unet_config_validate(const sdw_unet_config *c, sdw_error *err) {
    int n = c->n_levels;
    if (n < 1 || n > SDW_UNET_MAX_LEVELS)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "unet config: %d levels", n);
    if (c->in_channels <= 0 || c->out_channels <= 0 || c->cross_attention_dim <= 0 ||
        c->time_embed_dim <= 0 || c->norm_num_groups <= 0 || !(c->norm_eps > 0))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "unet config: in/out channels, cross_attention_dim, time embedding, "
                             "norm groups and eps must be positive");
    if (c->conv_in_kernel <= 0 || c->conv_in_kernel % 2 == 0 || c->conv_out_kernel <= 0 ||
        c->conv_out_kernel % 2 == 0)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "unet config: conv_in_kernel %d / conv_out_kernel %d must be odd",
                             c->conv_in_kernel, c->conv_out_kernel);
    if (c->block_out_channels[0] % 2)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "unet config: block_out_channels[0] = %d must be even (sinusoid)",
                             c->block_out_channels[0]);
    for (int i = 0; i < n; i++) {
        int ch = c->block_out_channels[i];
        if (ch <= 0 || ch % c->norm_num_groups)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "unet config: block_out_channels[%d] = %d is not a positive "
                                 "multiple of norm_num_groups %d",
                                 i, ch, c->norm_num_groups);
        if (c->layers_per_block[i] <= 0 || c->down_depth[i] <= 0 || c->up_depth[i] <= 0)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "unet config: level %d: layers and transformer depth must be "
                                 "positive", i);
    }
    /* Every attention block (down level i, up level i, mid) needs a known head count that
     * divides its channels. */
    for (int i = 0; i < n; i++) {
        for (int path = 0; path < 3; path++) {
            bool used = path == 0 ? c->down_attn[i]
                      : path == 1 ? c->up_attn[i]
                                  : (c->has_mid && i == n - 1);
            if (!used) continue;
            int ch = path == 1 ? up_channels(c, i) : c->block_out_channels[i];
            int h = path == 1 ? c->heads[n - 1 - i] : c->heads[i];
            const char *where = path == 0 ? "down" : path == 1 ? "up" : "mid";
            if (h <= 0)
                return sdw_error_set(err, SDW_E_UNSUPPORTED,
                                     "unet config: attention head count of the %s block at "
                                     "level %d (%d channels) is unknown: set it with "
                                     "sdw_unet_config_set_heads",
                                     where, i, ch);
            if (ch % h)
                return sdw_error_set(err, SDW_E_INVALID_ARG,
                                     "unet config: %s level %d: %d channels not divisible by "
                                     "%d heads",
                                     where, i, ch, h);
        }
    }
    if (c->add_text_time) {
        if (c->addition_time_embed_dim <= 0 || c->addition_time_embed_dim % 2 ||
            c->add_n_time_ids <= 0 || c->add_text_dim <= 0 ||
            c->add_text_dim + c->add_n_time_ids * c->addition_time_embed_dim != c->add_in_dim)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "unet config: text_time split inconsistent: text_embeds %d + "
                                 "%d time ids x %d != projection_class_embeddings_input_dim %d",
                                 c->add_text_dim, c->add_n_time_ids,
                                 c->addition_time_embed_dim, c->add_in_dim);
    }
    return SDW_OK;
}

sdw_status sdw_unet_config_set_heads(sdw_unet_config *cfg, int n_heads, int head_dim,
                                     sdw_error *err) {
    if ((n_heads > 0) == (head_dim > 0) || n_heads < 0 || head_dim < 0)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "unet heads: give exactly one of a head count or a head size "
                             "(got %d, %d)",
                             n_heads, head_dim);
    int heads[SDW_UNET_MAX_LEVELS];
    for (int i = 0; i < cfg->n_levels; i++) {
        int ch = cfg->block_out_channels[i];
        int h = n_heads ? n_heads : ch / head_dim;
        bool used = cfg->down_attn[i] || cfg->up_attn[cfg->n_levels - 1 - i] ||
                    (cfg->has_mid && i == cfg->n_levels - 1);
        if (used && (h <= 0 || ch % h || (head_dim && ch % head_dim)))
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "unet heads: level %d has %d channels, not divisible by %s %d",
                                 i, ch, n_heads ? "head count" : "head size",
                                 n_heads ? n_heads : head_dim);
        heads[i] = used ? h : (h > 0 ? h : 1);
    }
    memcpy(cfg->heads, heads, sizeof(int) * (size_t)cfg->n_levels);
    return SDW_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* inference from an LDM / SGM single file                                                  */

/* Tensor `prefix` + printf(fmt, ...), or NULL. */
static const sdw_st_tensor *findf(const sdw_st_file *f, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const sdw_st_tensor *findf(const sdw_st_file *f, const char *prefix, const char *fmt,
                                  ...) {
    char name[512];
    int k = snprintf(name, sizeof name, "%s", prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name + k, sizeof name - (size_t)k, fmt, ap);
    va_end(ap);
    return sdw_st_find(f, name);
}

/* Number of transformer_blocks.K under `<block>.1.` (0 when the block has no attention). */
static int count_depth(const sdw_st_file *f, const char *prefix, const char *block) {
    int d = 0;
    while (findf(f, prefix, "%s.1.transformer_blocks.%d.norm1.weight", block, d)) d++;
    return d;
}

/* Reads attention facts (cross dim, projection kind) from one LDM SpatialTransformer. */
static sdw_status infer_attention(const sdw_st_file *f, const char *prefix, const char *block,
                                  sdw_unet_config *c, bool *seen, sdw_error *err) {
    const sdw_st_tensor *k = findf(f, prefix, "%s.1.transformer_blocks.0.attn2.to_k.weight",
                                   block);
    const sdw_st_tensor *p = findf(f, prefix, "%s.1.proj_in.weight", block);
    if (!k || !p || k->n_dims != 2)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "unet: %s%s.1: spatial transformer without attn2.to_k / proj_in",
                             prefix, block);
    bool linear = p->n_dims == 2;
    int cross = (int)k->shape[1];
    if (*seen && (linear != c->use_linear_projection || cross != c->cross_attention_dim))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "unet: %s%s.1: projection kind / cross-attention width differs "
                             "between blocks",
                             prefix, block);
    c->use_linear_projection = linear;
    c->cross_attention_dim = cross;
    *seen = true;
    return SDW_OK;
}

sdw_status sdw_unet_config_infer(const sdw_st_file *f, const char *prefix, sdw_unet_config *cfg,
                                 sdw_error *err) {
    sdw_unet_config c;
    memset(&c, 0, sizeof c);
    sdw_status st;
    const sdw_st_tensor *t = findf(f, prefix, "input_blocks.0.0.weight");
    if (!t || t->n_dims != 4)
        return sdw_error_set(err, SDW_E_FORMAT, "unet: %sinput_blocks.0.0.weight not found in %s",
                             prefix, sdw_st_path(f));
    c.in_channels = (int)t->shape[1];
    c.conv_in_kernel = (int)t->shape[2];
    t = findf(f, prefix, "out.2.weight");
    if (!t || t->n_dims != 4)
        return sdw_error_set(err, SDW_E_FORMAT, "unet: %sout.2.weight not found", prefix);
    c.out_channels = (int)t->shape[0];
    c.conv_out_kernel = (int)t->shape[2];
    t = findf(f, prefix, "time_embed.0.weight");
    if (!t || t->n_dims != 2)
        return sdw_error_set(err, SDW_E_FORMAT, "unet: %stime_embed.0.weight not found", prefix);
    c.time_embed_dim = (int)t->shape[0];

    /* input_blocks: 0 = conv_in, then per level its resnets (".0.in_layers"), each optionally
     * with a spatial transformer (".1"), then a downsampler (".0.op") except after the last. */
    bool seen_attn = false;
    int lvl = 0, k = 1, nres = 0;
    char blk[64];
    for (;; k++) {
        if (findf(f, prefix, "input_blocks.%d.0.op.weight", k)) {
            if (nres == 0)
                return sdw_error_set(err, SDW_E_FORMAT, "unet: input_blocks.%d: downsampler "
                                     "with no resnet before it", k);
            c.layers_per_block[lvl++] = nres;
            nres = 0;
            if (lvl >= SDW_UNET_MAX_LEVELS)
                return sdw_error_set(err, SDW_E_UNSUPPORTED, "unet: more than %d levels",
                                     SDW_UNET_MAX_LEVELS);
            continue;
        }
        t = findf(f, prefix, "input_blocks.%d.0.out_layers.3.weight", k);
        if (!t) break;
        int ch = (int)t->shape[0];
        snprintf(blk, sizeof blk, "input_blocks.%d", k);
        int depth = count_depth(f, prefix, blk);
        if (nres == 0) {
            c.block_out_channels[lvl] = ch;
            c.down_attn[lvl] = depth > 0;
            c.down_depth[lvl] = depth > 0 ? depth : 1;
        } else if (ch != c.block_out_channels[lvl] || (depth > 0) != c.down_attn[lvl] ||
                   (depth > 0 && depth != c.down_depth[lvl])) {
            return sdw_error_set(err, SDW_E_UNSUPPORTED,
                                 "unet: input_blocks.%d differs from the rest of its level", k);
        }
        if (depth > 0 && (st = infer_attention(f, prefix, blk, &c, &seen_attn, err))) return st;
        nres++;
    }
    if (nres == 0)
        return sdw_error_set(err, SDW_E_FORMAT, "unet: no resnet after input_blocks.%d", k - 1);
    c.layers_per_block[lvl++] = nres;
    c.n_levels = lvl;
    int n = c.n_levels;

    /* output_blocks: up level i has layers_per_block[n-1-i] + 1 entries. */
    int ob = 0;
    for (int i = 0; i < n; i++) {
        int cnt = c.layers_per_block[n - 1 - i] + 1;
        for (int j = 0; j < cnt; j++, ob++) {
            if (!findf(f, prefix, "output_blocks.%d.0.out_layers.3.weight", ob))
                return sdw_error_set(err, SDW_E_FORMAT,
                                     "unet: %soutput_blocks.%d.0 missing (up level %d)", prefix,
                                     ob, i);
            snprintf(blk, sizeof blk, "output_blocks.%d", ob);
            int depth = count_depth(f, prefix, blk);
            if (j == 0) {
                c.up_attn[i] = depth > 0;
                c.up_depth[i] = depth > 0 ? depth : 1;
            } else if ((depth > 0) != c.up_attn[i] || (depth > 0 && depth != c.up_depth[i])) {
                return sdw_error_set(err, SDW_E_UNSUPPORTED,
                                     "unet: output_blocks.%d differs from the rest of its level",
                                     ob);
            }
            if (depth > 0 && (st = infer_attention(f, prefix, blk, &c, &seen_attn, err)))
                return st;
        }
    }
    if (findf(f, prefix, "output_blocks.%d.0.out_layers.3.weight", ob))
        return sdw_error_set(err, SDW_E_FORMAT, "unet: unexpected %soutput_blocks.%d", prefix, ob);

    /* middle_block: resnet, spatial transformer, resnet. */
    c.has_mid = findf(f, prefix, "middle_block.0.out_layers.3.weight") != NULL;
    if (c.has_mid) {
        c.mid_depth = count_depth(f, prefix, "middle_block");
        if (c.mid_depth == 0)
            return sdw_error_set(err, SDW_E_UNSUPPORTED,
                                 "unet: middle block without attention is not supported");
        if ((st = infer_attention(f, prefix, "middle_block", &c, &seen_attn, err))) return st;
    }
    if (!seen_attn)
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "unet: no cross-attention block found");

    c.norm_num_groups = 32; /* every LDM / SGM UNet */
    c.norm_eps = 1e-5f;
    c.flip_sin_to_cos = true;
    c.freq_shift = 0;
    c.upcast_attention = false;

    /* SDXL: label_emb.0.0 = add_embedding.linear_1 [time_embed_dim, adm_in]. */
    t = findf(f, prefix, "label_emb.0.0.weight");
    if (t) {
        if (t->n_dims != 2)
            return sdw_error_set(err, SDW_E_FORMAT, "unet: label_emb.0.0.weight not 2-D");
        c.add_text_time = true;
        c.add_in_dim = (int)t->shape[1];
        c.addition_time_embed_dim = 256;
        c.add_n_time_ids = 6;
        /* The pooled text width (text_embeds) is the projection of the last text embedder. */
        int pooled = 0;
        for (int e = 0; e < 4; e++) {
            const sdw_st_tensor *p =
                findf(f, "", "conditioner.embedders.%d.model.text_projection", e);
            if (p && p->n_dims == 2) pooled = (int)p->shape[1];
        }
        if (pooled > 0 && pooled < c.add_in_dim) {
            /* Base sends 6 time ids, the refiner 5 (with an aesthetic score). */
            for (int ids = 6; ids >= 5; ids--) {
                int rest = c.add_in_dim - pooled;
                if (rest % ids == 0 && (rest / ids) % 2 == 0) {
                    c.add_n_time_ids = ids;
                    c.addition_time_embed_dim = rest / ids;
                    break;
                }
            }
        }
        c.add_text_dim = c.add_in_dim - c.add_n_time_ids * c.addition_time_embed_dim;
    }

    /* Heads (not in the shapes): see the header for the rule. */
    for (int i = 0; i < n; i++) {
        int ch = c.block_out_channels[i];
        c.heads[i] = c.use_linear_projection ? (ch % 64 == 0 ? ch / 64 : 0) : 8;
    }
    /* Validate everything except the heads, which a caller may still have to supply. */
    sdw_unet_config probe = c;
    for (int i = 0; i < n; i++) probe.heads[i] = 1;
    if ((st = sdw_unet_config_validate(&probe, err))) return st;
    *cfg = c;
    return SDW_OK;
}
