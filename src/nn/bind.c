/* nn/bind.c — binding layers to named tensors of an sdw_weights. The only nn/ source that
 * touches io/: forward code works on plain pointers, so it can be used (and tested) on weights
 * from anywhere. */
#include "nn/nn_impl.h"

#include <string.h>

/* Loads "<prefix>.<suffix>" with the given shape. */
static const float *get(sdw_weights *ws, const char *prefix, const char *suffix, int n_dims,
                        const int64_t *shape, sdw_error *err) {
    char name[512];
    int n = snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    if (n < 0 || (size_t)n >= sizeof name) {
        sdw_error_set(err, SDW_E_INVALID_ARG, "tensor name too long: %s.%s", prefix, suffix);
        return NULL;
    }
    return sdw_weights_f32(ws, name, n_dims, shape, err);
}

sdw_status sdw_linear_bind(sdw_linear *l, sdw_weights *ws, const char *prefix, int in, int out,
                           bool has_bias, sdw_error *err) {
    SDW_ASSERT(l && ws && prefix && in > 0 && out > 0);
    sdw_error local;
    if (!err) err = &local;
    sdw_linear t = {.in = in, .out = out};
    if (!(t.w = get(ws, prefix, "weight", 2, (int64_t[]){out, in}, err))) return err->code;
    if (has_bias && !(t.b = get(ws, prefix, "bias", 1, (int64_t[]){out}, err))) return err->code;
    *l = t;
    return SDW_OK;
}

sdw_status sdw_conv2d_bind_pad(sdw_conv2d *c, sdw_weights *ws, const char *prefix, int in, int out,
                               int k, int stride, int pad, int pad_end, bool has_bias,
                               sdw_error *err) {
    SDW_ASSERT(c && ws && prefix && in > 0 && out > 0 && k > 0 && stride > 0 && pad >= 0 &&
               pad_end >= 0);
    sdw_error local;
    if (!err) err = &local;
    sdw_conv2d t = {.in = in, .out = out, .k = k, .stride = stride, .pad = pad, .pad_end = pad_end};
    const float *w = get(ws, prefix, "weight", 4, (int64_t[]){out, in, k, k}, err);
    if (!w) return err->code;
    if (has_bias && !(t.b = get(ws, prefix, "bias", 1, (int64_t[]){out}, err))) return err->code;
    float *packed = sdw_weights_alloc(ws, (size_t)k * k * in * out);
    if (!packed)
        return sdw_error_set(err, SDW_E_NOMEM, "%s.weight: no memory to repack %dx%dx%dx%d", prefix,
                             out, in, k, k);
    sdw_conv2d_pack_weights(w, out, in, k, packed);
    t.w = packed;
    *c = t;
    return SDW_OK;
}

sdw_status sdw_conv2d_bind(sdw_conv2d *c, sdw_weights *ws, const char *prefix, int in, int out,
                           int k, int stride, int pad, bool has_bias, sdw_error *err) {
    return sdw_conv2d_bind_pad(c, ws, prefix, in, out, k, stride, pad, pad, has_bias, err);
}

sdw_status sdw_group_norm_bind(sdw_group_norm *g, sdw_weights *ws, const char *prefix, int c,
                               int groups, float eps, sdw_error *err) {
    SDW_ASSERT(g && ws && prefix && c > 0 && groups > 0);
    sdw_error local;
    if (!err) err = &local;
    if (c % groups)
        return sdw_error_set(err, SDW_E_SHAPE, "%s: %d channels not divisible into %d groups",
                             prefix, c, groups);
    sdw_group_norm t = {.c = c, .groups = groups, .eps = eps};
    if (!(t.gamma = get(ws, prefix, "weight", 1, (int64_t[]){c}, err)) ||
        !(t.beta = get(ws, prefix, "bias", 1, (int64_t[]){c}, err)))
        return err->code;
    *g = t;
    return SDW_OK;
}

sdw_status sdw_layer_norm_bind(sdw_layer_norm *n, sdw_weights *ws, const char *prefix, int c,
                               float eps, sdw_error *err) {
    SDW_ASSERT(n && ws && prefix && c > 0);
    sdw_error local;
    if (!err) err = &local;
    sdw_layer_norm t = {.c = c, .eps = eps};
    if (!(t.gamma = get(ws, prefix, "weight", 1, (int64_t[]){c}, err)) ||
        !(t.beta = get(ws, prefix, "bias", 1, (int64_t[]){c}, err)))
        return err->code;
    *n = t;
    return SDW_OK;
}
