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

/* The stored "<prefix>.weight" as it is stored (a view into the file mapping: *dtype, *count
 * values), for a layer to pack straight from the checkpoint: no f32 copy is made (loading
 * speed). Call sdw_weights_raw_done with the name (*name_out) once packed. */
static sdw_status weight_raw(sdw_weights *ws, const char *prefix, int n_dims, const int64_t *shape,
                             const void **out, sdw_dtype *dtype, size_t *count, char *name_out,
                             size_t cap, sdw_error *err) {
    int n = snprintf(name_out, cap, "%s.weight", prefix);
    if (n < 0 || (size_t)n >= cap)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "tensor name too long: %s.weight", prefix);
    return sdw__weights_raw(ws, name_out, n_dims, shape, out, dtype, count, err);
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

/* sdw_linear_init with the weights as stored (wdt). */
static sdw_status linear_init_typed(sdw_linear *l, sdw_weights *ws, const void *w, sdw_dtype wdt,
                                    const float *b, int in, int out, sdw_error *err) {
    sdw_linear t = {.in = in, .out = out};
    sdw_backend_op *op;
    sdw_status st = sdw_backend_linear_create_typed(sdw__nn_backend(ws), sdw_weights_precision(ws),
                                                    w, wdt, b, in, out, &op, err);
    if (st != SDW_OK) return st;
    adopt(ws, op, &t.op);
    *l = t;
    return SDW_OK;
}

sdw_status sdw_linear_bind(sdw_linear *l, sdw_weights *ws, const char *prefix, int in, int out,
                           bool has_bias, sdw_error *err) {
    SDW_ASSERT(l && ws && prefix && in > 0 && out > 0);
    const float *b = NULL;
    const void *w = NULL;
    sdw_dtype wdt = SDW_DTYPE_F32;
    size_t count;
    char name[512];
    sdw_status st =
        weight_raw(ws, prefix, 2, (int64_t[]){out, in}, &w, &wdt, &count, name, sizeof name, err);
    if (st != SDW_OK) return st;
    if (has_bias) st = get(ws, prefix, "bias", 1, (int64_t[]){out}, &b, err);
    if (st == SDW_OK) st = linear_init_typed(l, ws, w, wdt, b, in, out, err);
    sdw_weights_raw_done(ws, name);
    if (st == SDW_OK) {
        l->b = b; /* owned by ws */
        sdw__layers_note(ws, &(sdw_layer_ref){.name = prefix, .op = l->op, .in = in, .out = out,
                                               .k = 1, .stride = 1, .op_out = out});
    }
    if (st == SDW_E_BACKEND) sdw_error_prefix(err, "%s", prefix);
    return st;
}

sdw_status sdw_linear_bind_stacked(sdw_linear *l, sdw_weights *ws, const char *const *prefixes,
                                   int n, int in, int out, bool has_bias, sdw_error *err) {
    SDW_ASSERT(l && ws && prefixes && n > 0 && in > 0 && out > 0);
    const size_t n_w = (size_t)out * in;
    /* The parts stacked as stored when they share a type (a checkpoint's usual case), else as
     * f32; the stacked copy lives for the packing only. */
    sdw_dtype wdt = SDW_DTYPE_F32;
    uint8_t *w = NULL;
    float *b = has_bias ? sdw_xmalloc(sizeof(float) * (size_t)out * n) : NULL;
    sdw_status st = SDW_OK;
    for (int i = 0; i < n && st == SDW_OK; i++) {
        const void *wi = NULL;
        sdw_dtype dti;
        size_t count;
        char name[512];
        const float *bi = NULL;
        st = weight_raw(ws, prefixes[i], 2, (int64_t[]){out, in}, &wi, &dti, &count, name,
                        sizeof name, err);
        if (st == SDW_OK && has_bias)
            st = get(ws, prefixes[i], "bias", 1, (int64_t[]){out}, &bi, err);
        if (st == SDW_OK) {
            if (i == 0) {
                wdt = dti;
                w = sdw_xmalloc(sdw_dtype_size(wdt) * n_w * n);
            } else if (dti != wdt) { /* mixed types: everything as f32 from here */
                float *w32 = sdw_xmalloc(sizeof(float) * n_w * n);
                sdw_convert_to_f32(wdt, w, w32, n_w * i);
                free(w);
                w = (uint8_t *)w32;
                wdt = SDW_DTYPE_F32;
            }
            if (dti == wdt)
                memcpy(w + sdw_dtype_size(wdt) * n_w * i, wi, sdw_dtype_size(wdt) * n_w);
            else
                sdw_convert_to_f32(dti, wi, (float *)w + n_w * i, n_w);
            if (b) memcpy(b + (size_t)out * i, bi, sizeof(float) * (size_t)out);
        }
        if (wi) sdw_weights_raw_done(ws, name);
    }
    if (st == SDW_OK) {
        st = linear_init_typed(l, ws, w, wdt, b, in, out * n, err);
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
    const void *w = NULL;
    sdw_dtype wdt = SDW_DTYPE_F32;
    size_t count;
    char name[512];
    sdw_status st = weight_raw(ws, prefix, 4, (int64_t[]){out, in, k, k}, &w, &wdt, &count, name,
                               sizeof name, err);
    if (st != SDW_OK) return st;
    if (has_bias) st = get(ws, prefix, "bias", 1, (int64_t[]){out}, &b, err);
    if (st == SDW_OK) {
        sdw_conv2d t = {
            .in = in, .out = out, .k = k, .stride = stride, .pad = pad, .pad_end = pad_end};
        const sdw_conv_geom g = {in, out, k, stride, pad, pad_end};
        sdw_backend_op *op;
        st = sdw_backend_conv_create_typed(sdw__nn_backend(ws), sdw_weights_precision(ws), w, wdt,
                                           b, &g, &op, err);
        if (st == SDW_OK) {
            adopt(ws, op, &t.op);
            *c = t;
        }
    }
    sdw_weights_raw_done(ws, name);
    if (st == SDW_OK) {
        c->b = b; /* owned by ws */
        sdw__layers_note(ws, &(sdw_layer_ref){.name = prefix, .op = c->op, .conv = true, .in = in,
                                               .out = out, .k = k, .stride = stride, .pad = pad,
                                               .pad_end = pad_end, .op_out = out});
    }
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
