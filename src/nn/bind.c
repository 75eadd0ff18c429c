/* nn/bind.c — binding layers to named tensors of an sdw_weights. The only nn/ source that
 * touches io/: forward code works on plain pointers, so it can be used (and tested) on weights
 * from anywhere. */
#include "nn/lora.h"
#include "nn/nn_impl.h"

#include <pthread.h>
#include <string.h>

sdw_status sdw__weights_f32(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                            const float **out, sdw_error *err) {
    sdw_error local;
    if (!err) err = &local;
    const float *t = sdw_weights_f32(ws, name, n_dims, shape, err);
    if (!t) return err->code;
    *out = t;
    return SDW_OK;
}

sdw_status sdw__weights_raw(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                            const void **out, sdw_dtype *dtype, size_t *n, sdw_error *err) {
    sdw_error local;
    if (!err) err = &local;
    const void *t = sdw_weights_raw(ws, name, n_dims, shape, dtype, n, err);
    if (!t) return err->code;
    *out = t;
    return SDW_OK;
}

/* Loads "<prefix>.<suffix>" with the given shape into *out. */
static sdw_status get(sdw_weights *ws, const char *prefix, const char *suffix, int n_dims,
                      const int64_t *shape, const float **out, sdw_error *err) {
    char name[512];
    int n = snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    if (n < 0 || (size_t)n >= sizeof name)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "tensor name too long: %s.%s", prefix, suffix);
    return sdw__weights_f32(ws, name, n_dims, shape, out, err);
}

/* The stored "<prefix>.weight" as a new f32 buffer in *out (free it), without the weights
 * object keeping an f32 copy: the layer packs its own. */
static sdw_status weight_f32(sdw_weights *ws, const char *prefix, int n_dims, const int64_t *shape,
                             float **out, sdw_error *err) {
    char name[512];
    int n = snprintf(name, sizeof name, "%s.weight", prefix);
    if (n < 0 || (size_t)n >= sizeof name)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "tensor name too long: %s.weight", prefix);
    sdw_dtype dt;
    size_t count;
    const void *d = NULL;
    sdw_status st = sdw__weights_raw(ws, name, n_dims, shape, &d, &dt, &count, err);
    if (st != SDW_OK) return st;
    float *w = sdw_xmalloc(count * sizeof(float));
    sdw_convert_to_f32(dt, d, w, count);
    sdw_weights_raw_done(ws, name);
    *out = w;
    return SDW_OK;
}

/* The fallback backend, for weights that carry none (tests, tools; every model loader gives its
 * weights the model's own, sdw_weights_set_backend): the one place that names an
 * implementation (as Redis's ae.c picks ae_epoll.c). Made once; the handle is immutable
 * afterwards, and what changes inside it (primitive caches, widening buffers) is behind its own
 * locks. */
static sdw_backend *g_default;
static pthread_once_t g_default_once = PTHREAD_ONCE_INIT;

static void default_init(void) {
    sdw_error err = {0};
    if (sdw_backend_cpu_create(NULL, &g_default, &err) != SDW_OK)
        SDW_ABORT("cannot start the CPU backend: %s", err.msg);
}

sdw_backend *sdw__nn_backend(const sdw_weights *ws) {
    sdw_backend *own = ws ? sdw_weights_backend(ws) : NULL;
    if (own) return own; /* the model's (sdw_weights_set_backend) */
    pthread_once(&g_default_once, default_init);
    return g_default;
}

static void op_free(void *op) {
    sdw_backend_op_destroy(op);
}

/* Hands a new op to ws (freed with the weights) and points the layer's slot at it. */
static void adopt(sdw_weights *ws, sdw_backend_op *op, const sdw_backend_op **slot) {
    sdw_weights_adopt(ws, op, op_free);
    *slot = op;
}

sdw_status sdw_linear_init(sdw_linear *l, sdw_weights *ws, const float *w, const float *b, int in,
                           int out, sdw_error *err) {
    SDW_ASSERT(l && ws && w && in > 0 && out > 0);
    sdw_linear t = {.in = in, .out = out};
    sdw_backend_op *op;
    sdw_status st = sdw_backend_linear_create(sdw__nn_backend(ws), sdw_weights_precision(ws), w, b,
                                              in, out, &op, err);
    if (st != SDW_OK) return st;
    adopt(ws, op, &t.op);
    *l = t;
    return SDW_OK;
}

sdw_status sdw_linear_bind(sdw_linear *l, sdw_weights *ws, const char *prefix, int in, int out,
                           bool has_bias, sdw_error *err) {
    SDW_ASSERT(l && ws && prefix && in > 0 && out > 0);
    const float *b = NULL;
    float *w;
    sdw_status st = weight_f32(ws, prefix, 2, (int64_t[]){out, in}, &w, err);
    if (st != SDW_OK) return st;
    if (has_bias) st = get(ws, prefix, "bias", 1, (int64_t[]){out}, &b, err);
    if (st == SDW_OK) st = sdw_linear_init(l, ws, w, b, in, out, err);
    if (st == SDW_OK) {
        l->b = b; /* owned by ws */
        sdw__layers_note(ws, &(sdw_layer_ref){.name = prefix, .op = l->op, .in = in, .out = out,
                                               .k = 1, .stride = 1, .op_out = out});
    }
    free(w);
    if (st == SDW_E_BACKEND) sdw_error_prefix(err, "%s", prefix);
    return st;
}

sdw_status sdw_linear_bind_stacked(sdw_linear *l, sdw_weights *ws, const char *const *prefixes,
                                   int n, int in, int out, bool has_bias, sdw_error *err) {
    SDW_ASSERT(l && ws && prefixes && n > 0 && in > 0 && out > 0);
    const size_t n_w = (size_t)out * in;
    float *w = sdw_xmalloc(sizeof(float) * n_w * n);
    float *b = has_bias ? sdw_xmalloc(sizeof(float) * (size_t)out * n) : NULL;
    sdw_status st = SDW_OK;
    for (int i = 0; i < n && st == SDW_OK; i++) {
        float *wi = NULL;
        const float *bi = NULL;
        st = weight_f32(ws, prefixes[i], 2, (int64_t[]){out, in}, &wi, err);
        if (st == SDW_OK && has_bias)
            st = get(ws, prefixes[i], "bias", 1, (int64_t[]){out}, &bi, err);
        if (st == SDW_OK) {
            memcpy(w + n_w * i, wi, sizeof(float) * n_w);
            if (b) memcpy(b + (size_t)out * i, bi, sizeof(float) * (size_t)out);
        }
        free(wi);
    }
    if (st == SDW_OK) {
        st = sdw_linear_init(l, ws, w, b, in, out * n, err);
        /* .b must outlive the call (hand-built fallback reads it): keep the stacked copy. */
        if (st == SDW_OK && b) {
            sdw_weights_adopt(ws, b, free);
            l->b = b;
            b = NULL;
        }
        for (int i = 0; i < n && st == SDW_OK; i++) /* each part by its own name */
            sdw__layers_note(ws, &(sdw_layer_ref){.name = prefixes[i], .op = l->op, .in = in,
                                                   .out = out, .k = 1, .stride = 1,
                                                   .col0 = i * out, .op_out = n * out});
        if (st == SDW_E_BACKEND) sdw_error_prefix(err, "%s", prefixes[0]);
    }
    free(b);
    free(w);
    return st;
}

sdw_status sdw_conv2d_init(sdw_conv2d *c, sdw_weights *ws, const float *w_oihw, const float *b,
                           int in, int out, int k, int stride, int pad, int pad_end,
                           sdw_error *err) {
    SDW_ASSERT(c && ws && w_oihw && in > 0 && out > 0 && k > 0 && stride > 0 && pad >= 0 &&
               pad_end >= 0);
    sdw_conv2d t = {.in = in, .out = out, .k = k, .stride = stride, .pad = pad, .pad_end = pad_end};
    const sdw_conv_geom g = {in, out, k, stride, pad, pad_end};
    sdw_backend_op *op;
    sdw_status st = sdw_backend_conv_create(sdw__nn_backend(ws), sdw_weights_precision(ws), w_oihw,
                                            b, &g, &op, err);
    if (st != SDW_OK) return st;
    adopt(ws, op, &t.op);
    *c = t;
    return SDW_OK;
}

sdw_status sdw_conv2d_bind_pad(sdw_conv2d *c, sdw_weights *ws, const char *prefix, int in, int out,
                               int k, int stride, int pad, int pad_end, bool has_bias,
                               sdw_error *err) {
    SDW_ASSERT(c && ws && prefix && in > 0 && out > 0 && k > 0 && stride > 0 && pad >= 0 &&
               pad_end >= 0);
    const float *b = NULL;
    float *w;
    sdw_status st = weight_f32(ws, prefix, 4, (int64_t[]){out, in, k, k}, &w, err);
    if (st != SDW_OK) return st;
    if (has_bias) st = get(ws, prefix, "bias", 1, (int64_t[]){out}, &b, err);
    if (st == SDW_OK) st = sdw_conv2d_init(c, ws, w, b, in, out, k, stride, pad, pad_end, err);
    if (st == SDW_OK) {
        c->b = b; /* owned by ws */
        sdw__layers_note(ws, &(sdw_layer_ref){.name = prefix, .op = c->op, .conv = true, .in = in,
                                               .out = out, .k = k, .stride = stride, .pad = pad,
                                               .pad_end = pad_end, .op_out = out});
    }
    free(w);
    if (st == SDW_E_BACKEND) sdw_error_prefix(err, "%s", prefix);
    return st;
}

sdw_status sdw_conv2d_bind(sdw_conv2d *c, sdw_weights *ws, const char *prefix, int in, int out,
                           int k, int stride, int pad, bool has_bias, sdw_error *err) {
    return sdw_conv2d_bind_pad(c, ws, prefix, in, out, k, stride, pad, pad, has_bias, err);
}

sdw_status sdw_group_norm_bind(sdw_group_norm *g, sdw_weights *ws, const char *prefix, int c,
                               int groups, float eps, sdw_error *err) {
    SDW_ASSERT(g && ws && prefix && c > 0 && groups > 0);
    if (c % groups)
        return sdw_error_set(err, SDW_E_SHAPE, "%s: %d channels not divisible into %d groups",
                             prefix, c, groups);
    sdw_group_norm t = {.c = c, .groups = groups, .eps = eps};
    sdw_status st;
    if ((st = get(ws, prefix, "weight", 1, (int64_t[]){c}, &t.gamma, err)) ||
        (st = get(ws, prefix, "bias", 1, (int64_t[]){c}, &t.beta, err)))
        return st;
    *g = t;
    return SDW_OK;
}

sdw_status sdw_layer_norm_bind(sdw_layer_norm *n, sdw_weights *ws, const char *prefix, int c,
                               float eps, sdw_error *err) {
    SDW_ASSERT(n && ws && prefix && c > 0);
    sdw_layer_norm t = {.c = c, .eps = eps};
    sdw_status st;
    if ((st = get(ws, prefix, "weight", 1, (int64_t[]){c}, &t.gamma, err)) ||
        (st = get(ws, prefix, "bias", 1, (int64_t[]){c}, &t.beta, err)))
        return st;
    *n = t;
    return SDW_OK;
}
