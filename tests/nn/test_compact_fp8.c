/* Layers whose weights are all fp8 values (an F8_E4M3 / F8_E5M2 checkpoint) keep their packed
 * weights in 8 bits and widen them per call, in f32 and in bf16: bit-identical outputs to the
 * same layer kept uncompressed, a quarter (f32) or half (bf16) of its weight bytes; layers with
 * one non-fp8 value stay as before; a layer bound from an fp8 file gives the same numbers as
 * one bound from an f32 file holding the same values. */
#define _GNU_SOURCE
#include "sdw_test.h"

#include "nn/nn_impl.h"

/* The backends the ops made directly (not bound from weights) live on: [0] keeps packed
 * weights whole (full_weights), [1] has the defaults (exact weights kept in fewer bits). */
static sdw_backend *g_be[2];
#include "nn/nn.h"

#include <stdlib.h>

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static uint32_t rand32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 32);
}
static float *rand_buf(size_t n) { /* uniform in [-1, 1) */
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((double)rand32() / 4294967296.0 * 2.0 - 1.0);
    return p;
}

static int n_precisions(void) {
    return sdw_nn_cpu_has_bf16() ? 2 : 1;
}
static sdw_precision precision_at(int i) {
    return i ? SDW_PRECISION_BF16 : SDW_PRECISION_F32;
}

/* n weights that are values of dt: random finite codes with magnitudes up to 2^3 (products
 * stay moderate), including subnormals and signed zeros. */
static float *fp8_weights(sdw_dtype dt, size_t n) {
    const int man = dt == SDW_DTYPE_F8_E4M3 ? 3 : 2, bias = dt == SDW_DTYPE_F8_E4M3 ? 7 : 15;
    const int max_code = (bias + 3) << man; /* exponent field bias + 3: 2^3 */
    uint8_t *c = malloc(n);
    for (size_t i = 0; i < n; i++) {
        c[i] = (uint8_t)(rand32() % (uint32_t)max_code) | (rand32() & 0x80u);
        if (i % 53 == 0) c[i] = (uint8_t)(i % 7 + 1); /* subnormals */
        if (i % 59 == 0) c[i] = 0x80;                 /* -0 */
    }
    float *w = malloc(n * sizeof(float));
    sdw_convert_to_f32(dt, c, w, n);
    free(c);
    return w;
}

static sdw_backend_op *make_op(sdw_backend *be, bool conv, sdw_precision p, const float *w,
                               const float *b, int in, int out, int k) {
    sdw_conv_geom g = {.in = in, .out = out, .k = k, .stride = 1, .pad = 1, .pad_end = 1};
    sdw_backend_op *op = NULL;
    if (conv)
        sdw_backend_conv_create(be, p, w, b, &g, &op, NULL);
    else
        sdw_backend_linear_create(be, p, w, b, in, out, &op, NULL);
    return op;
}

/* y of op (plain, then accumulating into the result) for input x. */
static void forward2(const sdw_backend_op *op, bool conv, const float *x, int B, int H, int W,
                     float *y) {
    for (int acc = 0; acc < 2; acc++) {
        if (conv)
            sdw_backend_conv_forward(op, sdw_nhwc(x, B, H, W), sdw_nhwc(y, B, H, W),
                                     acc ? SDW_ACCUMULATE : 0);
        else
            sdw_backend_linear_forward(op, sdw_rows(x, (int64_t)B * H * W),
                                       sdw_rows(y, (int64_t)B * H * W), acc ? SDW_ACCUMULATE : 0);
    }
}

/* One layer built with compaction off and on from the same weights: the bytes each keeps
 * (*full, *small) and whether their outputs agree bit for bit. */
static bool compare(bool conv, sdw_precision p, const float *w, size_t *full, size_t *small) {
    const int B = 2, H = 6, W = 5, in = 24, out = 20, k = conv ? 3 : 1;
    float *b = rand_buf(out);
    sdw_backend_op *op[2];
    for (int c = 0; c < 2; c++) {
        op[c] = make_op(g_be[c], conv, p, w, b, in, out, k);
    }
    if (!op[0] || !op[1]) {
        sdw_backend_op_destroy(op[0]), sdw_backend_op_destroy(op[1]), free(b);
        return false;
    }
    *full = sdw_backend_op_weight_bytes(op[0]);
    *small = sdw_backend_op_weight_bytes(op[1]);
    const size_t n_x = (size_t)B * H * W * in, n_y = (size_t)B * H * W * out;
    float *x = rand_buf(n_x), *y[2] = {rand_buf(n_y), malloc(n_y * 4)};
    memcpy(y[1], y[0], n_y * 4);
    for (int c = 0; c < 2; c++)
        forward2(op[c], conv, x, B, H, W, y[c]);
    const bool same = memcmp(y[0], y[1], n_y * 4) == 0;
    sdw_backend_op_destroy(op[0]), sdw_backend_op_destroy(op[1]);
    free(b), free(x), free(y[0]), free(y[1]);
    return same;
}

static void check_fp8(bool conv, sdw_precision p, sdw_dtype dt) {
    const int in = 24, out = 20, k = conv ? 3 : 1;
    const size_t nw = (size_t)out * in * k * k;
    float *w = fp8_weights(dt, nw);
    size_t full = 0, small = 0;
    const bool same = compare(conv, p, w, &full, &small);
    free(w);
    const size_t elem = p == SDW_PRECISION_BF16 ? 2 : 4;
    if (!same || full < nw * elem || small * elem != full)
        sdw_test_fail(__FILE__, __LINE__,
                      "%s %s with %s weights: outputs %s, %zu bytes kept of %zu (want 1/%zu)",
                      sdw_precision_str(p), conv ? "conv" : "matmul", sdw_dtype_str(dt),
                      same ? "identical" : "DIFFER", small, full, elem);
}

static void test_fp8_layers_identical(void) {
    const sdw_dtype dts[] = {SDW_DTYPE_F8_E4M3, SDW_DTYPE_F8_E5M2};
    for (int i = 0; i < n_precisions(); i++)
        for (int d = 0; d < 2; d++) {
            check_fp8(false, precision_at(i), dts[d]);
            check_fp8(true, precision_at(i), dts[d]);
        }
}

/* One value that is not an fp8 value keeps the layer out of 8 bits: an f32 layer goes to 16
 * bits when the value is f16 (as before), stays full when it is no 16-bit value either; a bf16
 * layer stays bf16. */
static void test_one_non_fp8_value(void) {
    const size_t nw = 20 * 24;
    for (int i = 0; i < n_precisions(); i++) {
        const sdw_precision p = precision_at(i);
        const size_t elem = p == SDW_PRECISION_BF16 ? 2 : 4;
        /* (a bf16 layer sees its weights rounded to bf16 first: these stay non-fp8 there) */
        const float odd[] = {0x1.04p0f /* f16 and bf16, not fp8 */, 0.1f /* no 16-bit value */};
        for (int k = 0; k < 2; k++) {
            float *w = fp8_weights(SDW_DTYPE_F8_E4M3, nw);
            w[nw - 1] = odd[k]; /* in the last chunk: the whole layer is checked */
            size_t full = 0, small = 0;
            const bool same = compare(false, p, w, &full, &small);
            free(w);
            ASSERT_TRUE(same);
            const size_t want = p == SDW_PRECISION_F32 && k == 0 ? full / 2 : full;
            if (small != want || full < nw * elem)
                sdw_test_fail(__FILE__, __LINE__, "%s layer with %a: %zu bytes of %zu, want %zu",
                              sdw_precision_str(p), odd[k], small, full, want);
        }
    }
}

/* A layer larger than one widening chunk on many threads' worth of chunks, so the threaded
 * check and widening (and the vector kernel's tails) are exercised: 300 x 301 weights. */
static void test_large_layer(void) {
    const int in = 301, out = 300, M = 7;
    const size_t nw = (size_t)in * out;
    for (int i = 0; i < n_precisions(); i++) {
        const sdw_precision p = precision_at(i);
        float *w = fp8_weights(SDW_DTYPE_F8_E4M3, nw), *x = rand_buf((size_t)M * in);
        float *y[2] = {calloc((size_t)M * out, 4), calloc((size_t)M * out, 4)};
        sdw_backend_op *op[2];
        for (int c = 0; c < 2; c++) {
            op[c] = NULL;
            sdw_backend_linear_create(g_be[c], p, w, NULL, in, out, &op[c], NULL);
        }
        bool ok = op[0] && op[1];
        if (ok) {
            for (int c = 0; c < 2; c++)
                sdw_backend_linear_forward(op[c], sdw_rows(x, M), sdw_rows(y[c], M), 0);
            ok = memcmp(y[0], y[1], (size_t)M * out * 4) == 0 &&
                 sdw_backend_op_weight_bytes(op[1]) * (p == SDW_PRECISION_BF16 ? 2 : 4) ==
                     sdw_backend_op_weight_bytes(op[0]);
        }
        sdw_backend_op_destroy(op[0]), sdw_backend_op_destroy(op[1]);
        free(w), free(x), free(y[0]), free(y[1]);
        if (!ok) sdw_test_fail(__FILE__, __LINE__, "%s 300x301 fp8 layer", sdw_precision_str(p));
    }
}

/* A layer whose widened weights are too large for the cache (64 MiB in f32, 32 MiB in bf16)
 * is widened with streaming stores: same numbers. */
static void test_streamed_widening(void) {
    const int in = 4096, out = 4096, M = 3;
    const size_t nw = (size_t)in * out;
    float *w = fp8_weights(SDW_DTYPE_F8_E5M2, nw), *x = rand_buf((size_t)M * in);
    for (int i = 0; i < n_precisions(); i++) {
        const sdw_precision p = precision_at(i);
        float *y[2] = {calloc((size_t)M * out, 4), calloc((size_t)M * out, 4)};
        sdw_backend_op *op[2];
        for (int c = 0; c < 2; c++) {
            op[c] = NULL;
            sdw_backend_linear_create(g_be[c], p, w, NULL, in, out, &op[c], NULL);
        }
        bool ok = op[0] && op[1] && sdw_backend_op_weight_bytes(op[1]) == nw;
        for (int c = 0; ok && c < 2; c++)
            sdw_backend_linear_forward(op[c], sdw_rows(x, M), sdw_rows(y[c], M), 0);
        ok = ok && memcmp(y[0], y[1], (size_t)M * out * 4) == 0;
        sdw_backend_op_destroy(op[0]), sdw_backend_op_destroy(op[1]);
        free(y[0]), free(y[1]);
        if (!ok) sdw_test_fail(__FILE__, __LINE__, "%s 4096x4096 fp8 layer", sdw_precision_str(p));
    }
    free(w), free(x);
}

/* Writes "l.weight" [out, in] as wdt and "l.bias" [out] as BF16 from w, b. */
static sdw_status write_layer(const char *path, sdw_dtype wdt, const float *w, const float *b,
                              int in, int out, sdw_error *err) {
    sdw_st_writer *wr;
    sdw_status st = sdw_st_writer_create(path, &wr, err);
    if (st) return st;
    sdw_st_writer_add(wr, "l.weight", wdt, 2, (int64_t[]){out, in});
    sdw_st_writer_add(wr, "l.bias", SDW_DTYPE_BF16, 1, (int64_t[]){out});
    if ((st = sdw_st_writer_begin(wr, err)) || (st = sdw_st_writer_write(wr, w, err)) ||
        (st = sdw_st_writer_write(wr, b, err))) {
        sdw_st_writer_finish(wr, NULL);
        return st;
    }
    return sdw_st_writer_finish(wr, err);
}

/* The loader's path: an F8_E4M3 file bound with sdw_linear_bind keeps 1 byte per weight and
 * computes exactly what the same values from an F32 file compute. */
static void test_bind_from_fp8_file(void) {
    const int in = 40, out = 24, M = 5;
    float *w = fp8_weights(SDW_DTYPE_F8_E4M3, (size_t)in * out);
    float *b = fp8_weights(SDW_DTYPE_F8_E4M3, (size_t)out);
    float *x = rand_buf((size_t)M * in);
    char p8[1024], p32[1024];
    snprintf(p8, sizeof p8, "%s/l8.safetensors", sdw_test_tmpdir());
    snprintf(p32, sizeof p32, "%s/l32.safetensors", sdw_test_tmpdir());
    sdw_error err = {0};
    ASSERT_OK(write_layer(p8, SDW_DTYPE_F8_E4M3, w, b, in, out, &err), &err);
    ASSERT_OK(write_layer(p32, SDW_DTYPE_F32, w, b, in, out, &err), &err);
    for (int i = 0; i < n_precisions(); i++) {
        const sdw_precision p = precision_at(i);
        float *y[2];
        size_t bytes[2] = {0, 0};
        const char *paths[2] = {p32, p8};
        for (int f = 0; f < 2; f++) {
            sdw_st_file *file;
            ASSERT_OK(sdw_st_open(paths[f], &file, &err), &err);
            sdw_weights *ws = sdw_weights_create(file, "", NULL, NULL);
            sdw_weights_set_precision(ws, p);
            sdw_linear l;
            sdw_status st = sdw_linear_bind(&l, ws, "l", in, out, true, &err);
            y[f] = calloc((size_t)M * out, sizeof(float));
            if (st == SDW_OK) {
                sdw_linear_forward(&l, sdw_rows(x, M), sdw_rows(y[f], M), 0);
                bytes[f] = sdw_backend_op_weight_bytes(l.op);
            }
            sdw_weights_destroy(ws);
            sdw_st_close(file);
            ASSERT_OK(st, &err);
        }
        const bool same = memcmp(y[0], y[1], (size_t)M * out * sizeof(float)) == 0;
        free(y[0]), free(y[1]);
        /* both files hold fp8 values: both layers keep 1 byte per packed weight */
        sdw_backend_op *full = NULL;
        sdw_backend_linear_create(g_be[0], p, w, b, in, out, &full, NULL);
        ASSERT_TRUE(full != NULL);
        const size_t full_bytes = sdw_backend_op_weight_bytes(full);
        sdw_backend_op_destroy(full);
        const size_t elem = p == SDW_PRECISION_BF16 ? 2 : 4;
        if (!same || bytes[1] * elem != full_bytes || bytes[0] != bytes[1])
            sdw_test_fail(__FILE__, __LINE__,
                          "%s: f32 file vs fp8 file: %s, bytes %zu / %zu (uncompressed %zu)",
                          sdw_precision_str(p), same ? "same" : "DIFFER", bytes[0], bytes[1],
                          full_bytes);
    }
    free(w), free(b), free(x);
}

int main(void) {
    sdw_error err = {0};
    const sdw_backend_cpu_params full = {.full_weights = true};
    if (sdw_backend_cpu_create(&full, &g_be[0], &err) ||
        sdw_backend_cpu_create(NULL, &g_be[1], &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    RUN(test_fp8_layers_identical);
    RUN(test_one_non_fp8_value);
    RUN(test_large_layer);
    RUN(test_streamed_widening);
    RUN(test_bind_from_fp8_file);
    sdw_backend_destroy(g_be[0]);
    sdw_backend_destroy(g_be[1]);
    return sdw_test_finish();
}
