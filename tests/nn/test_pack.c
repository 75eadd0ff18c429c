/* Packing weights straight from a checkpoint's values (issue 16, load time): the CPU backend's
 * own packer (offset tables of oneDNN's blocked layouts, one threaded pass from the stored type)
 * against oneDNN's reorder of an f32 copy (sdw_backend_cpu_params.onednn_reorder, the way it
 * was done before): for convolutions and linear layers of awkward sizes, weights stored as F32,
 * F16, BF16, F8_E4M3 and F8_E5M2, in f32 and bf16, compact and full, the two ops' products are
 * bit for bit the same (same packed weights), and the typed create of a stored tensor gives what
 * the f32 create of its widened values gives. Also: the products against a double reference
 * (a misplaced weight would show), and bind from an F16 file keeps the f32 op 16-bit. */
#include "sdw_test.h"

#include "nn/nn_impl.h"

#include <stdlib.h>
#include <unistd.h>

static uint64_t g_rng = 0x243F6A8885A308D3ull;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

/* n values of type dt (stored) and their f32 widening: random, scaled to keep fp8 in range. */
static void *stored_values(sdw_dtype dt, size_t n, float **f32) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = frand() * 0.5f;
    void *s = malloc(n * sdw_dtype_size(dt) + 1);
    if (dt == SDW_DTYPE_F32)
        memcpy(s, x, n * 4);
    else
        sdw_convert_from_f32(dt, x, s, n);
    sdw_convert_to_f32(dt, s, x, n); /* the values as stored */
    *f32 = x;
    return s;
}

/* y = op(x) for an op made one way; rows of `in` f32 inputs. */
static void run_op(const sdw_backend_op *op, bool conv, int in, int out, int B, int H, int W,
                   const float *x, float *y) {
    (void)in, (void)out;
    if (conv)
        sdw_backend_conv_forward(op, sdw_nhwc(x, B, H, W), sdw_nhwc(y, B, H, W), 0);
    else
        sdw_backend_linear_forward(op, sdw_rows(x, (int64_t)B * H * W),
                                   sdw_rows(y, (int64_t)B * H * W), 0);
}

static sdw_status make(sdw_backend *be, bool conv, sdw_precision p, const void *w, sdw_dtype dt,
                       const float *bias, int in, int out, int k, sdw_backend_op **op) {
    if (conv) {
        const sdw_conv_geom g = {in, out, k, 1, k / 2, k / 2};
        return sdw_backend_conv_create_typed(be, p, w, dt, bias, &g, op, NULL);
    }
    return sdw_backend_linear_create_typed(be, p, w, dt, bias, in, out, op, NULL);
}

/* Packed by us (typed, and f32 of the same values) and by oneDNN's reorder: equal products. */
static void check_case(bool conv, int in, int out, int k, sdw_dtype dt, sdw_precision p,
                       bool full) {
    sdw_backend *ours, *ref;
    sdw_backend_cpu_params pa = sdw_backend_cpu_params_default(), pb = pa;
    pa.full_weights = pb.full_weights = full;
    pb.onednn_reorder = true;
    ASSERT_OK(sdw_backend_cpu_create(&pa, &ours, NULL), NULL);
    ASSERT_OK(sdw_backend_cpu_create(&pb, &ref, NULL), NULL);
    const size_t n_w = (size_t)in * out * k * k;
    float *w32;
    void *w = stored_values(dt, n_w, &w32);
    /* the checkpoint's mapping need not be aligned: an odd offset */
    uint8_t *unaligned = malloc(n_w * sdw_dtype_size(dt) + 1);
    memcpy(unaligned + 1, w, n_w * sdw_dtype_size(dt));
    float *bias = malloc(sizeof(float) * (size_t)out);
    for (int i = 0; i < out; i++)
        bias[i] = frand();
    sdw_backend_op *a = NULL, *b = NULL, *c = NULL;
    ASSERT_OK(make(ours, conv, p, unaligned + 1, dt, bias, in, out, k, &a), NULL);
    ASSERT_OK(make(ours, conv, p, w32, SDW_DTYPE_F32, bias, in, out, k, &b), NULL);
    ASSERT_OK(make(ref, conv, p, w32, SDW_DTYPE_F32, bias, in, out, k, &c), NULL);
    const int B = 2, H = conv ? 7 : 5, W = conv ? 9 : 3;
    const size_t rows = (size_t)B * H * W;
    float *x = malloc(sizeof(float) * rows * in), *ya = malloc(sizeof(float) * rows * out),
          *yb = malloc(sizeof(float) * rows * out), *yc = malloc(sizeof(float) * rows * out);
    for (size_t i = 0; i < rows * in; i++)
        x[i] = frand();
    run_op(a, conv, in, out, B, H, W, x, ya);
    run_op(b, conv, in, out, B, H, W, x, yb);
    run_op(c, conv, in, out, B, H, W, x, yc);
    const bool same_ab = memcmp(ya, yb, sizeof(float) * rows * out) == 0;
    const bool same_ac = memcmp(ya, yc, sizeof(float) * rows * out) == 0;
    const size_t bytes_a = sdw_backend_op_weight_bytes(a), bytes_c = sdw_backend_op_weight_bytes(c);
    /* the product against a double reference: a misplaced weight shows as a large error */
    double err = 0, scale = 0;
    for (int bb = 0; bb < B; bb++)
        for (int yy = 0; yy < H; yy++)
            for (int xx = 0; xx < W; xx++)
                for (int o = 0; o < out; o++) {
                    double s = bias[o];
                    for (int i = 0; i < in; i++)
                        for (int dy = 0; dy < k; dy++)
                            for (int dx = 0; dx < k; dx++) {
                                const int sy = yy + dy - k / 2, sx = xx + dx - k / 2;
                                if (sy < 0 || sy >= H || sx < 0 || sx >= W) continue;
                                s += (double)w32[(((size_t)o * in + i) * k + dy) * k + dx] *
                                     x[(((size_t)bb * H + sy) * W + sx) * in + i];
                            }
                    const double got = ya[(((size_t)bb * H + yy) * W + xx) * out + o];
                    err = fmax(err, fabs(got - s));
                    scale = fmax(scale, fabs(s));
                }
    sdw_backend_op_destroy(a);
    sdw_backend_op_destroy(b);
    sdw_backend_op_destroy(c);
    sdw_backend_destroy(ours);
    sdw_backend_destroy(ref);
    free(w), free(w32), free(unaligned), free(bias), free(x), free(ya), free(yb), free(yc);
    const double tol = p == SDW_PRECISION_BF16 ? 2e-2 : 1e-5;
    if (!same_ab || !same_ac || bytes_a != bytes_c || !(err <= tol * scale))
        sdw_test_fail(__FILE__, __LINE__,
                      "%s %dx%d k%d %s %s%s: typed==f32 %d, ours==reorder %d, bytes %zu vs %zu, "
                      "error %.3g of %.3g",
                      conv ? "conv" : "linear", in, out, k, sdw_dtype_str(dt), sdw_precision_str(p),
                      full ? " full" : "", same_ab, same_ac, bytes_a, bytes_c, err, scale);
}

static int n_precisions(void) {
    return sdw_nn_cpu_has_bf16() ? 2 : 1;
}

static void test_packed_like_reorder(void) {
    static const struct {
        bool conv;
        int in, out, k;
    } shapes[] = {{true, 3, 5, 3},   {true, 64, 64, 3}, {true, 17, 33, 3},  {true, 40, 24, 1},
                  {true, 4, 320, 3}, {false, 7, 13, 1}, {false, 64, 96, 1}, {false, 33, 130, 1}};
    static const sdw_dtype dts[] = {SDW_DTYPE_F32, SDW_DTYPE_F16, SDW_DTYPE_BF16, SDW_DTYPE_F8_E4M3,
                                    SDW_DTYPE_F8_E5M2};
    for (size_t s = 0; s < SDW_ARRAY_LEN(shapes); s++)
        for (size_t d = 0; d < SDW_ARRAY_LEN(dts); d++)
            for (int pi = 0; pi < n_precisions(); pi++)
                for (int full = 0; full < 2; full++)
                    check_case(shapes[s].conv, shapes[s].in, shapes[s].out, shapes[s].k, dts[d],
                               pi ? SDW_PRECISION_BF16 : SDW_PRECISION_F32, full);
}

/* The store each source type gets: f16 / bf16 values stay 16-bit in an f32 op, fp8 8-bit in
 * both, f32 values that are not exact in a narrower type stay 32-bit. */
static void test_store_sizes(void) {
    sdw_backend *be;
    ASSERT_OK(sdw_backend_cpu_create(NULL, &be, NULL), NULL);
    const int in = 64, out = 64;
    const size_t n = (size_t)in * out;
    static const struct {
        sdw_dtype dt;
        int f32_bytes, bf16_bytes;
    } want[] = {{SDW_DTYPE_F32, 4, 2},
                {SDW_DTYPE_F16, 2, 2},
                {SDW_DTYPE_BF16, 2, 2},
                {SDW_DTYPE_F8_E4M3, 1, 1},
                {SDW_DTYPE_F8_E5M2, 1, 1}};
    for (size_t i = 0; i < SDW_ARRAY_LEN(want); i++)
        for (int pi = 0; pi < n_precisions(); pi++) {
            float *w32;
            void *w = stored_values(want[i].dt, n, &w32);
            sdw_backend_op *op;
            ASSERT_OK(sdw_backend_linear_create_typed(be,
                                                      pi ? SDW_PRECISION_BF16 : SDW_PRECISION_F32,
                                                      w, want[i].dt, NULL, in, out, &op, NULL),
                      NULL);
            const size_t bytes = sdw_backend_op_weight_bytes(op);
            sdw_backend_op_destroy(op);
            free(w), free(w32);
            ASSERT_EQ_INT(bytes, n * (size_t)(pi ? want[i].bf16_bytes : want[i].f32_bytes));
        }
    sdw_backend_destroy(be);
}

int main(void) {
    RUN(test_packed_like_reorder);
    RUN(test_store_sizes);
    return sdw_test_finish();
}
