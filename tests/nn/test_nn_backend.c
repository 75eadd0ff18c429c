/* The CPU backend under the nn layers: packed oneDNN convolutions / products in f32 and bf16
 * against a double reference, fused residual accumulation, stacked projections, both attention
 * kernels, GroupNorm with a fused bias, bf16 rounding, the precision rule and the profile. */
#include "sdw_test.h"

#include "nn/arena.h"
#include "nn/nn_impl.h"

/* The backends the ops made directly (not bound from weights) live on: [0] keeps packed
 * weights whole (full_weights), [1] has the defaults (exact weights kept in fewer bits). */
static sdw_backend *g_be[2];
#include "nn/convert.h"
#include "nn/nn.h"
#include "nn/nn_impl.h"
#include "nn/profile.h"

#include <stdlib.h>

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}
static float *rand_buf(size_t n, float scale) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}

/* Tolerances: f32 products differ from the double reference by accumulation order only; bf16
 * rounds both operands to 8 significant bits (relative 2^-9 each), which over K-term sums of
 * random signs leaves ~1e-2 of the output's range. */
#define TOL_F32 1e-5
#define TOL_BF16 2e-2

static double tol_for(sdw_precision p) {
    return p == SDW_PRECISION_BF16 ? TOL_BF16 : TOL_F32;
}

static int n_precisions(void) {
    return sdw_nn_cpu_has_bf16() ? 2 : 1;
}
static sdw_precision precision_at(int i) {
    return i ? SDW_PRECISION_BF16 : SDW_PRECISION_F32;
}

/* A packed (sdw_conv2d_init) convolution against the reference, plain and accumulating. */
static void check_conv(sdw_precision p, int B, int H, int W, int in, int out, int k, int stride,
                       int pad, int pad_end, bool bias) {
    sdw_weights *ws = sdw_weights_create_random(1);
    sdw_weights_set_precision(ws, p);
    float *w = rand_buf((size_t)out * in * k * k, 0.3f), *b = bias ? rand_buf(out, 1) : NULL;
    sdw_conv2d c;
    sdw_error err = {0};
    sdw_status st = sdw_conv2d_init(&c, ws, w, b, in, out, k, stride, pad, pad_end, &err);
    double e = INFINITY, e_add = INFINITY;
    if (st == SDW_OK) {
        const int OH = sdw_conv2d_out_size(&c, H), OW = sdw_conv2d_out_size(&c, W);
        const size_t n = (size_t)B * OH * OW * out;
        float *x = rand_buf((size_t)B * H * W * in, 1), *y = calloc(n, sizeof(float));
        float *ref = calloc(n, sizeof(float)), *y0 = rand_buf(n, 1);
        sdw_test_conv_ref(x, w, b, B, H, W, in, out, k, stride, pad, OH, OW, ref);
        sdw_conv2d_forward(&c, sdw_nhwc(x, B, H, W), sdw_nhwc(y, B, OH, OW), 0);
        e = sdw_test_rel_err(y, ref, n);
        memcpy(y, y0, n * sizeof(float));
        sdw_conv2d_forward(&c, sdw_nhwc(x, B, H, W), sdw_nhwc(y, B, OH, OW), SDW_ACCUMULATE);
        for (size_t i = 0; i < n; i++)
            ref[i] += y0[i];
        e_add = sdw_test_rel_err(y, ref, n);
        free(x), free(y), free(ref), free(y0);
    }
    free(w), free(b);
    sdw_weights_destroy(ws);
    ASSERT_OK(st, &err);
    if (!(e <= tol_for(p)) || !(e_add <= tol_for(p)))
        sdw_test_fail(__FILE__, __LINE__, "%s conv %dx%dx%d->%d k%d s%d p%d/%d: %.3g / add %.3g",
                      sdw_precision_str(p), H, W, in, out, k, stride, pad, pad_end, e, e_add);
}

static void test_packed_conv(void) {
    for (int i = 0; i < n_precisions(); i++) {
        sdw_precision p = precision_at(i);
        check_conv(p, 2, 9, 11, 5, 7, 3, 1, 1, 1, true);    /* 3x3, odd sizes */
        check_conv(p, 2, 10, 13, 6, 4, 3, 2, 1, 1, true);   /* UNet downsampler */
        check_conv(p, 1, 9, 9, 6, 4, 3, 2, 0, 1, true);     /* VAE-encoder pad (0,1,0,1) */
        check_conv(p, 2, 7, 5, 12, 9, 1, 1, 0, 0, true);    /* 1x1 */
        check_conv(p, 1, 8, 8, 3, 5, 2, 1, 1, 1, false);    /* VAE upsample phase (2x2) */
        check_conv(p, 1, 33, 40, 64, 48, 3, 1, 1, 1, true); /* above the nominal packing shape */
        check_conv(p, 3, 4, 4, 40, 40, 3, 1, 1, 1, true);   /* below it */
    }
}

/* One op used at several shapes: each gets its own cached primitive, all from one packing. */
static void test_conv_many_shapes(void) {
    sdw_weights *ws = sdw_weights_create_random(1);
    float *w = rand_buf(16 * 8 * 9, 0.3f), *b = rand_buf(16, 1);
    sdw_conv2d c;
    sdw_error err = {0};
    ASSERT_OK(sdw_conv2d_init(&c, ws, w, b, 8, 16, 3, 1, 1, 1, &err), &err);
    double worst = 0;
    for (int s = 1; s <= 30; s++) { /* more shapes than the op caches */
        const int H = s, W = 31 - s, n = H * W * 16;
        float *x = rand_buf((size_t)H * W * 8, 1), *y = calloc(n, 4), *ref = calloc(n, 4);
        sdw_test_conv_ref(x, w, b, 1, H, W, 8, 16, 3, 1, 1, H, W, ref);
        sdw_conv2d_forward(&c, sdw_nhwc(x, 1, H, W), sdw_nhwc(y, 1, H, W), 0);
        double e = sdw_test_rel_err(y, ref, (size_t)n);
        if (e > worst) worst = e;
        free(x), free(y), free(ref);
    }
    free(w), free(b);
    sdw_weights_destroy(ws);
    ASSERT_TRUE(worst <= TOL_F32);
}

static void check_linear(sdw_precision p, int64_t M, int in, int out, bool bias) {
    sdw_weights *ws = sdw_weights_create_random(1);
    sdw_weights_set_precision(ws, p);
    float *w = rand_buf((size_t)out * in, 0.2f), *b = bias ? rand_buf(out, 1) : NULL;
    float *x = rand_buf((size_t)M * in, 1), *y = calloc((size_t)M * out, 4);
    float *ref = calloc((size_t)M * out, 4), *y0 = rand_buf((size_t)M * out, 1);
    sdw_linear l;
    sdw_error err = {0};
    sdw_status st = sdw_linear_init(&l, ws, w, b, in, out, &err);
    double e = INFINITY, e_add = INFINITY;
    if (st == SDW_OK) {
        sdw_test_linear_ref(x, w, b, M, in, out, ref);
        sdw_linear_forward(&l, sdw_rows(x, M), sdw_rows(y, M), 0);
        e = sdw_test_rel_err(y, ref, (size_t)M * out);
        memcpy(y, y0, sizeof(float) * (size_t)M * out);
        sdw_linear_forward(&l, sdw_rows(x, M), sdw_rows(y, M), SDW_ACCUMULATE);
        for (int64_t i = 0; i < M * out; i++)
            ref[i] += y0[i];
        e_add = sdw_test_rel_err(y, ref, (size_t)M * out);
    }
    free(w), free(b), free(x), free(y), free(ref), free(y0);
    sdw_weights_destroy(ws);
    ASSERT_OK(st, &err);
    if (!(e <= tol_for(p)) || !(e_add <= tol_for(p)))
        sdw_test_fail(__FILE__, __LINE__, "%s linear %lldx%d->%d: %.3g / add %.3g",
                      sdw_precision_str(p), (long long)M, in, out, e, e_add);
}

static void test_packed_linear(void) {
    for (int i = 0; i < n_precisions(); i++) {
        check_linear(precision_at(i), 37, 70, 53, true);
        check_linear(precision_at(i), 2, 1280, 320, true); /* time embedding: tiny M */
        check_linear(precision_at(i), 154, 32, 96, false);
        check_linear(precision_at(i), 1000, 64, 17, true);
    }
}

/* A hand-built layer (plain .w) accumulates the same way as a packed one. */
static void test_hand_built_add(void) {
    const int64_t M = 9;
    const int in = 6, out = 5;
    float *w = rand_buf((size_t)in * out, 1), *b = rand_buf(out, 1), *x = rand_buf(M * in, 1);
    float *y = rand_buf(M * out, 1), *ref = malloc(sizeof(float) * M * out);
    sdw_test_linear_ref(x, w, b, M, in, out, ref);
    for (int64_t i = 0; i < M * out; i++)
        ref[i] += y[i];
    sdw_linear l = {.w = w, .b = b, .in = in, .out = out};
    sdw_linear_forward(&l, sdw_rows(x, M), sdw_rows(y, M), SDW_ACCUMULATE);
    double e = sdw_test_rel_err(y, ref, (size_t)(M * out));
    free(w), free(b), free(x), free(y), free(ref);
    ASSERT_TRUE(e <= TOL_F32);
}

/* Stacked projections compute exactly what the separate layers do, side by side. */
static void test_bind_stacked(void) {
    sdw_weights *ws = sdw_weights_create_random(3);
    const char *names[3] = {"blk.q", "blk.k", "blk.v"};
    sdw_linear one[3], all;
    sdw_error err = {0};
    for (int i = 0; i < 3; i++)
        ASSERT_OK(sdw_linear_bind(&one[i], ws, names[i], 24, 16, true, &err), &err);
    ASSERT_OK(sdw_linear_bind_stacked(&all, ws, names, 3, 24, 16, true, &err), &err);
    ASSERT_EQ_INT(all.out, 48);
    const int64_t M = 13;
    float *x = rand_buf(M * 24, 1), *y = calloc(M * 48, 4), *yi = calloc(M * 16, 4);
    sdw_linear_forward(&all, sdw_rows(x, M), sdw_rows(y, M), 0);
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        sdw_linear_forward(&one[i], sdw_rows(x, M), sdw_rows(yi, M), 0);
        for (int64_t r = 0; r < M; r++)
            for (int c = 0; c < 16; c++)
                bad += fabsf(y[r * 48 + i * 16 + c] - yi[r * 16 + c]) > 1e-5f;
    }
    free(x), free(y), free(yi);
    sdw_weights_destroy(ws);
    ASSERT_EQ_INT(bad, 0);
}

/* Binding from a real file through the raw path: the same numbers as the f32 copy gives. */
static void test_bind_from_file(void) {
    sdw_st_file *f = NULL;
    sdw_error err = {0};
    ASSERT_OK(
        sdw_st_open(sdw_test_path("models/tiny-sd15/text_encoder/model.safetensors"), &f, &err),
        &err);
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    const char *q = "text_model.encoder.layers.0.self_attn.q_proj";
    sdw_linear l;
    sdw_status st = sdw_linear_bind(&l, ws, q, 32, 32, true, &err);
    const float *w = sdw_weights_f32(ws, "text_model.encoder.layers.0.self_attn.q_proj.weight", 2,
                                     (int64_t[]){32, 32}, &err);
    double e = INFINITY;
    if (st == SDW_OK && w) {
        float *x = rand_buf(5 * 32, 1), *y = calloc(5 * 32, 4), *ref = calloc(5 * 32, 4);
        sdw_test_linear_ref(x, w, l.b, 5, 32, 32, ref);
        sdw_linear_forward(&l, sdw_rows(x, 5), sdw_rows(y, 5), 0);
        e = sdw_test_rel_err(y, ref, 5 * 32);
        free(x), free(y), free(ref);
    }
    int unused = sdw_weights_unused(ws, NULL, 0);
    /* a stacked layer with a missing part fails naming the part */
    sdw_linear l2;
    sdw_error err2 = {0};
    sdw_status s_missing = sdw_linear_bind_stacked(
        &l2, ws, (const char *const[]){q, "text_model.encoder.layers.0.self_attn.nope"}, 2, 32, 32,
        true, &err2);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
    ASSERT_EQ_INT(s_missing, SDW_E_NOT_FOUND);
    ASSERT_STR_CONTAINS(err2.msg, "self_attn.nope.weight");
    ASSERT_OK(st, &err);
    ASSERT_TRUE(w != NULL);
    ASSERT_TRUE(e <= TOL_F32);
    ASSERT_TRUE(unused > 0); /* only one layer was bound */
}

/* ---- attention: every kernel against a double reference ---- */

typedef void (*attn_fn)(const float *, int64_t, const float *, int64_t, const float *, int64_t, int,
                        int64_t, int64_t, int, int, float, bool, float *);

/* x rounded to bf16 in place (what the bf16 kernel multiplies). */
static void round_bf16(float *x, size_t n) {
    uint16_t *h = malloc(n * sizeof *h);
    sdw__f32_to_bf16(x, h, n);
    sdw__bf16_to_f32(h, x, n);
    free(h);
}

/* fn's relative error against the double reference; bf16: on q, k, v rounded to bf16 (what
 * that kernel multiplies), so only the probabilities' rounding (relative 2^-9) is left. */
static double attention_err(attn_fn fn, int B, int64_t Lq, int64_t Lk, int H, int D, int64_t st,
                            bool causal, bool bf16) {
    const int64_t HD = (int64_t)H * D;
    float *q = rand_buf((size_t)(B * Lq * st), 2), *k = rand_buf((size_t)(B * Lk * st), 2);
    float *v = rand_buf((size_t)(B * Lk * st), 1);
    if (bf16) {
        round_bf16(q, (size_t)(B * Lq * st));
        round_bf16(k, (size_t)(B * Lk * st));
        round_bf16(v, (size_t)(B * Lk * st));
    }
    float *out = calloc((size_t)(B * Lq * HD), 4), *ref = calloc((size_t)(B * Lq * HD), 4);
    const float scale = 1.0f / sqrtf((float)D);
    sdw_test_attention_ref(q, st, k, st, v, st, B, Lq, Lk, H, D, scale, causal, ref);
    fn(q, st, k, st, v, st, B, Lq, Lk, H, D, scale, causal, out);
    double e = sdw_test_rel_err(out, ref, (size_t)(B * Lq * HD));
    free(q), free(k), free(v), free(out), free(ref);
    return e;
}

static void check_both_kernels(int B, int64_t Lq, int64_t Lk, int H, int D, int64_t st,
                               bool causal) {
    double e_gen = attention_err(sdw__attention_generic, B, Lq, Lk, H, D, st, causal, false);
    double e_512 = 0;
    if (__builtin_cpu_supports("avx512f"))
        e_512 = attention_err(sdw__attention_avx512, B, Lq, Lk, H, D, st, causal, false);
    double e_bf16 = 0;
    if (__builtin_cpu_supports("avx512bf16") && D % 2 == 0)
        e_bf16 = attention_err(sdw__attention_avx512bf16, B, Lq, Lk, H, D, st, causal, true);
    if (!(e_gen <= 1e-5) || !(e_512 <= 1e-5) || !(e_bf16 <= 4e-3))
        sdw_test_fail(__FILE__, __LINE__,
                      "attention B%d Lq%lld Lk%lld H%d D%d causal %d: "
                      "generic %.3g, avx512 %.3g, avx512-bf16 %.3g",
                      B, (long long)Lq, (long long)Lk, H, D, causal, e_gen, e_512, e_bf16);
}

static void test_attention_kernels(void) {
    check_both_kernels(2, 130, 130, 3, 40, 3 * 3 * 40, false); /* fused qkv row stride */
    check_both_kernels(1, 300, 77, 2, 80, 160, false);         /* cross, Lk not a multiple */
    check_both_kernels(2, 77, 77, 4, 16, 64, true);            /* CLIP causal */
    check_both_kernels(1, 333, 333, 1, 8, 8, true);            /* causal across key chunks */
    check_both_kernels(1, 70, 70, 1, 200, 200, false);         /* wide head (VAE-like) */
    check_both_kernels(1, 5, 3, 2, 3, 6, false);               /* tiny everything */
    check_both_kernels(1, 9, 7, 2, 2, 4, false);               /* tiny, odd key count (bf16) */
    check_both_kernels(2, 200, 131, 2, 128, 256, false);       /* FLUX's head dim, odd Lk */
}

/* ---- GroupNorm with a fused per-(batch, channel) bias ---- */

static void test_group_norm_bias(void) {
    const int B = 2, HW = 150, C = 64, G = 32; /* HW spans several partial-sum blocks */
    const size_t n = (size_t)B * HW * C;
    float *x = rand_buf(n, 3), *bias = rand_buf((size_t)B * C, 5), *gamma = rand_buf(C, 1);
    float *beta = rand_buf(C, 1), *xb = malloc(n * 4), *ref = malloc(n * 4), *y = malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        xb[i] = x[i] + bias[(i / ((size_t)HW * C)) * C + i % C];
    sdw_group_norm g = {.gamma = gamma, .beta = beta, .c = C, .groups = G, .eps = 1e-5f};
    sdw_group_norm_forward(&g, NULL, sdw_nhwc(xb, B, HW, 1), sdw_nhwc(ref, B, HW, 1), SDW_SILU);
    sdw_group_norm_forward(&g, bias, sdw_nhwc(x, B, HW, 1), sdw_nhwc(y, B, HW, 1), SDW_SILU);
    double e = sdw_test_rel_err(y, ref, n);
    sdw_group_norm_forward(&g, bias, sdw_nhwc(x, B, HW, 1), sdw_nhwc(x, B, HW, 1),
                           SDW_SILU); /* in place */
    double e_alias = sdw_test_rel_err(x, ref, n);
    free(x), free(bias), free(gamma), free(beta), free(xb), free(ref), free(y);
    ASSERT_TRUE(e <= 1e-6);
    ASSERT_TRUE(e_alias <= 1e-6);
}

/* ---- bf16 ---- */

static void test_bf16_rounding(void) {
    const float in[] = {1.0f,
                        -2.5f,
                        1.00390625f /* tie: rounds to even (1.0) */,
                        1.01171875f /* tie: rounds up to even (1.015625) */,
                        3.0e38f,
                        1e-40f,
                        INFINITY,
                        -0.0f};
    const uint16_t want[] = {0x3f80, 0xc020, 0x3f80, 0x3f82, 0x7f62, 0x0001, 0x7f80, 0x8000};
    uint16_t out[8];
    sdw__f32_to_bf16(in, out, 8);
    for (int i = 0; i < 8; i++)
        ASSERT_EQ_INT(out[i], want[i]);
    float nan = NAN;
    uint16_t bn;
    sdw__f32_to_bf16(&nan, &bn, 1);
    float back;
    sdw__bf16_to_f32(&bn, &back, 1);
    ASSERT_TRUE(isnan(back));
    /* large buffers go through the threaded path: round trip of exactly representable values */
    const size_t n = 100003;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((int)(i % 511) - 255) * 0.25f;
    sdw__f32_to_bf16(x, h, n);
    sdw__bf16_to_f32(h, y, n);
    int bad = memcmp(x, y, n * 4) != 0;
    free(x), free(y), free(h);
    ASSERT_EQ_INT(bad, 0);
}

/* bf16 activations between bf16 layers (the VAE's storage): GroupNorm reading bf16 (in place)
 * computes exactly what it computes on the widened values; a bf16 convolution writing bf16
 * (plain and accumulating) is its f32 output rounded once. */
static void test_bf16_activations(void) {
    const int B = 2, H = 9, W = 7, C = 32, G = 8, O = 24;
    const size_t n = (size_t)B * H * W * C, n_out = (size_t)B * H * W * O;
    float *xf = rand_buf(n, 2), *gamma = rand_buf(C, 1), *beta = rand_buf(C, 1);
    float *ref = malloc(n * 4), *yf = malloc(n * 4);
    uint16_t *xh = malloc(n * 2), *refh = malloc(n * 2);
    sdw__f32_to_bf16(xf, xh, n);
    sdw__bf16_to_f32(xh, xf, n); /* xf = the bf16 values exactly */
    sdw_group_norm g = {.gamma = gamma, .beta = beta, .c = C, .groups = G, .eps = 1e-6f};
    const sdw_act xhv = sdw_nhwc_dt(xh, SDW_DT_BF16, B, H, W);
    sdw_group_norm_forward(&g, NULL, sdw_nhwc(xf, B, H, W), sdw_nhwc(ref, B, H, W), SDW_SILU);
    sdw__f32_to_bf16(ref, refh, n);
    sdw_group_norm_forward(&g, NULL, xhv, sdw_nhwc(yf, B, H, W), SDW_SILU);
    const int wide_same = memcmp(yf, ref, n * 4) == 0;
    sdw_group_norm_forward(&g, NULL, xhv, xhv, SDW_SILU); /* in place */
    const int bf16_same = memcmp(xh, refh, n * 2) == 0;
    ASSERT_TRUE(wide_same);
    ASSERT_TRUE(bf16_same);

    double worst = 0, worst_add = 0;
    if (sdw_nn_cpu_has_bf16()) {
        sdw_weights *ws = sdw_weights_create_random(1);
        sdw_weights_set_precision(ws, SDW_PRECISION_BF16);
        float *w = rand_buf((size_t)O * C * 9, 0.3f), *b = rand_buf(O, 1);
        sdw_conv2d c;
        sdw_error err = {0};
        ASSERT_OK(sdw_conv2d_init(&c, ws, w, b, C, O, 3, 1, 1, 1, &err), &err);
        float *y = malloc(n_out * 4), *y0 = rand_buf(n_out, 4), *back = malloc(n_out * 4);
        uint16_t *yh = malloc(n_out * 2), *y0h = malloc(n_out * 2);
        sdw__f32_to_bf16(y0, y0h, n_out);
        sdw__bf16_to_f32(y0h, y0, n_out);
        sdw_conv2d_forward(&c, xhv, sdw_nhwc(y, B, H, W), 0);
        sdw_conv2d_forward(&c, xhv, sdw_nhwc_dt(yh, SDW_DT_BF16, B, H, W), 0);
        sdw__bf16_to_f32(yh, back, n_out);
        /* one rounding: within half a bf16 step, 2^-8 of the value (plus summation-order noise) */
        for (size_t i = 0; i < n_out; i++)
            worst = fmax(worst, fabs(back[i] - y[i]) / fmax(fabs(y[i]), 1e-3));
        sdw_conv2d_forward(&c, xhv, sdw_nhwc_dt(y0h, SDW_DT_BF16, B, H, W), SDW_ACCUMULATE);
        sdw__bf16_to_f32(y0h, back, n_out);
        for (size_t i = 0; i < n_out; i++)
            worst_add =
                fmax(worst_add, fabs(back[i] - (y0[i] + y[i])) / fmax(fabs(y0[i] + y[i]), 1e-3));
        free(w), free(b), free(y), free(y0), free(back), free(yh), free(y0h);
        sdw_weights_destroy(ws);
    }
    free(xf), free(gamma), free(beta), free(ref), free(yf), free(xh), free(refh);
    if (!(worst <= 1.0 / 256 + 1e-4) || !(worst_add <= 1.0 / 256 + 1e-4))
        sdw_test_fail(__FILE__, __LINE__, "bf16 output: relative error %.3g, accumulating %.3g",
                      worst, worst_add);
}

/* f32 layers from a 16-bit checkpoint keep their packed weights in 16 bits (half the bytes)
 * and compute exactly what full f32 weights compute; weights with more precision than that
 * stay f32. Covered: f16 values (incl. subnormals and signed zeros), bf16-only values (out of
 * f16's range), and plain f32 values; convolution and matmul, plain and accumulating. */
static void round_to(float *w, size_t n, int kind) { /* 0 f16 grid, 1 bf16 grid, 2 as is */
    for (size_t i = 0; i < n; i++) {
        if (kind == 0) {
            w[i] = ldexpf(roundf(ldexpf(w[i], 10)), -10);           /* |w| <= 1: 10 fraction bits */
            if (i % 97 == 0) w[i] = ldexpf((float)(i % 1023), -24); /* f16 subnormals */
            if (i % 89 == 0) w[i] = -0.0f;
        } else if (kind == 1) {
            uint16_t h;
            sdw__f32_to_bf16(&w[i], &h, 1);
            sdw__bf16_to_f32(&h, &w[i], 1);
            if (i % 31 == 0) w[i] = ldexpf(1.0f, -30); /* a bf16 value no f16 holds */
        }
    }
}

static void check_compact(bool conv, int kind) {
    const int B = 2, H = 6, W = 5, in = 24, out = 20, k = conv ? 3 : 1;
    const size_t nw = (size_t)out * in * k * k;
    float *w = rand_buf(nw, 1), *b = rand_buf(out, 1);
    round_to(w, nw, kind);
    sdw_backend_op *op[2];
    for (int c = 0; c < 2; c++) {
        sdw_conv_geom g = {.in = in, .out = out, .k = k, .stride = 1, .pad = 1, .pad_end = 1};
        op[c] = NULL;
        if (conv)
            sdw_backend_conv_create(g_be[c], SDW_PRECISION_F32, w, b, &g, &op[c], NULL);
        else
            sdw_backend_linear_create(g_be[c], SDW_PRECISION_F32, w, b, in, out, &op[c], NULL);
        ASSERT_TRUE(op[c] != NULL);
    }
    const size_t full = sdw_backend_op_weight_bytes(op[0]),
                 small = sdw_backend_op_weight_bytes(op[1]);
    ASSERT_TRUE(full >= nw * 4);
    ASSERT_EQ_INT((int)(small * (kind == 2 ? 1 : 2)), (int)full); /* half, unless f32 values */
    const size_t n_x = (size_t)B * H * W * in, n_y = (size_t)B * H * W * out;
    float *x = rand_buf(n_x, 1), *y[2] = {rand_buf(n_y, 1), malloc(n_y * 4)};
    memcpy(y[1], y[0], n_y * 4);
    for (int acc = 0; acc < 2; acc++)
        for (int c = 0; c < 2; c++) {
            if (conv)
                sdw_backend_conv_forward(op[c], sdw_nhwc(x, B, H, W), sdw_nhwc(y[c], B, H, W),
                                         acc ? SDW_ACCUMULATE : 0);
            else
                sdw_backend_linear_forward(op[c], sdw_rows(x, (int64_t)B * H * W),
                                           sdw_rows(y[c], (int64_t)B * H * W),
                                           acc ? SDW_ACCUMULATE : 0);
        }
    const int same = memcmp(y[0], y[1], n_y * 4) == 0;
    sdw_backend_op_destroy(op[0]), sdw_backend_op_destroy(op[1]);
    free(w), free(b), free(x), free(y[0]), free(y[1]);
    if (!same)
        sdw_test_fail(__FILE__, __LINE__, "%s with %s weights: compact and full f32 differ",
                      conv ? "conv" : "matmul",
                      kind == 0   ? "f16"
                      : kind == 1 ? "bf16"
                                  : "f32");
}

static void test_compact_weights(void) {
    for (int kind = 0; kind < 3; kind++) {
        check_compact(true, kind);
        check_compact(false, kind);
    }
}

static void test_precision_names_and_rule(void) {
    sdw_precision p = SDW_PRECISION_F32;
    ASSERT_OK(sdw_precision_parse("bf16", &p), NULL);
    ASSERT_EQ_INT(p, SDW_PRECISION_BF16);
    ASSERT_STATUS(sdw_precision_parse("fp16", &p), SDW_E_INVALID_ARG);
    ASSERT_EQ_INT(p, SDW_PRECISION_BF16); /* untouched on failure */
    ASSERT_TRUE(strcmp(sdw_precision_str(SDW_PRECISION_AUTO), "auto") == 0);
    ASSERT_EQ_INT(sdw_nn_precision_resolve(SDW_PRECISION_F32), SDW_PRECISION_F32);
    ASSERT_EQ_INT(sdw_nn_precision_resolve(SDW_PRECISION_BF16),
                  sdw_nn_cpu_has_bf16() ? SDW_PRECISION_BF16 : SDW_PRECISION_F32);
    ASSERT_EQ_INT(sdw_nn_precision_resolve(SDW_PRECISION_AUTO),
                  sdw_nn_cpu_has_amx() ? SDW_PRECISION_BF16 : SDW_PRECISION_F32);
    ASSERT_TRUE(!sdw_nn_cpu_has_amx() || sdw_nn_cpu_has_bf16());
}

/* ---- arena ---- */

/* Freed buffers come back for requests that fit; a request nothing fits first returns the free
 * buffers, so the mapped total never exceeds the most that was live at once. */
static void test_arena(void) {
    sdw_arena *a = sdw_arena_create();
    const size_t MB = 1 << 20;
    char *p1 = sdw_arena_alloc(a, 3 * MB), *p2 = sdw_arena_alloc(a, 5 * MB);
    char *small = sdw_arena_alloc(a, 1000);
    ASSERT_TRUE(((uintptr_t)p1 & 63) == 0 && ((uintptr_t)small & 63) == 0);
    memset(p1, 1, 3 * MB), memset(p2, 2, 5 * MB), memset(small, 3, 1000);
    sdw_arena_free(a, p1);
    char *p3 = sdw_arena_alloc(a, 2 * MB); /* fits p1's block */
    ASSERT_TRUE(p3 == p1);
    sdw_arena_free(a, p3);
    sdw_arena_free(a, p2);
    const size_t peak = sdw_arena_peak(a);
    char *p4 = sdw_arena_alloc(a, 7 * MB); /* fits neither: both freed blocks are returned */
    memset(p4, 4, 7 * MB);
    ASSERT_TRUE(sdw_arena_peak(a) == peak); /* 4 + 6 MiB mapped before, 8 MiB now */
    sdw_arena_free(a, small);
    sdw_arena_free(a, p4);
    sdw_arena_free(a, NULL);
    sdw_arena_destroy(a);
    sdw_arena_destroy(NULL);
}

/* A request nothing fits gives back only as many free buffers (smallest first) as keep the
 * mapped total within the most that was live at once: 4 x 4 MiB live (16), all freed, a 2 MiB
 * request takes one of them; a 6 MiB one then needs two of the three free ones given back (4 +
 * 4 + 6 = 14 <= 16) and keeps the third, which a later 3 MiB request gets without a mapping. */
static void test_arena_keeps_within_peak(void) {
    sdw_arena *a = sdw_arena_create();
    const size_t MB = 1 << 20;
    char *p[4];
    for (int i = 0; i < 4; i++)
        memset(p[i] = sdw_arena_alloc(a, 4 * MB), i, 4 * MB);
    for (int i = 0; i < 4; i++)
        sdw_arena_free(a, p[i]);
    const size_t peak = sdw_arena_peak(a);
    ASSERT_TRUE(peak == 16 * MB);
    char *e = sdw_arena_alloc(a, 2 * MB);
    char *f = sdw_arena_alloc(a, 6 * MB);
    memset(f, 5, 6 * MB);
    char *g = sdw_arena_alloc(a, 3 * MB);
    int kept = 0;
    for (int i = 0; i < 4; i++)
        kept += (g == p[i]) + (e == p[i]);
    ASSERT_EQ_INT(kept, 2); /* e and g both in the first four blocks */
    ASSERT_TRUE(g != e);
    ASSERT_TRUE(sdw_arena_peak(a) == peak);
    sdw_arena_destroy(a);
}

/* In a keep scope a destroyed arena is parked and the next create takes it back, buffers still
 * mapped (the same block comes back, no new mapping); a second arena destroyed meanwhile is
 * unmapped; ending the scope returns the previous setting and releases the parked one. */
static void test_arena_keep_scope(void) {
    const size_t MB = 1 << 20;
    const bool was = sdw_arena_keep(true);
    ASSERT_TRUE(!was);
    sdw_arena *a = sdw_arena_create();
    char *p = sdw_arena_alloc(a, 6 * MB);
    memset(p, 1, 6 * MB);
    sdw_arena *other = sdw_arena_create(); /* alive at once: destroyed normally below */
    memset(sdw_arena_alloc(other, 2 * MB), 2, 2 * MB);
    sdw_arena_destroy(a); /* parked, p still mapped */
    sdw_arena_destroy(other);
    sdw_arena *b = sdw_arena_create();
    ASSERT_TRUE(b == a);
    char *q = sdw_arena_alloc(b, 5 * MB);
    ASSERT_TRUE(q == p);
    ASSERT_TRUE(sdw_arena_peak(b) == 6 * MB);
    sdw_arena_destroy(b);
    ASSERT_TRUE(sdw_arena_keep(was)); /* releases the parked arena (ASan: no leak) */
    sdw_arena *c = sdw_arena_create(); /* outside the scope: a fresh one */
    ASSERT_TRUE(sdw_arena_peak(c) == 0);
    sdw_arena_destroy(c);
}

/* ---- profile ---- */

static void test_profile(void) {
    sdw_profile_reset();
    sdw_profile_enable(true);
    sdw_prof_stage prev = sdw__prof_stage(SDW_PROF_UNET);
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)i;
    sdw_silu(x, 64);
    sdw__prof_stage(prev);
    sdw_profile_enable(false);
    sdw_silu(x, 64); /* not counted */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    sdw_profile_print(f, 1);
    fclose(f);
    sdw_profile_reset();
    ASSERT_STR_CONTAINS(buf, "stage unet");
    ASSERT_STR_CONTAINS(buf, "activation");
    ASSERT_STR_CONTAINS(buf, "one UNet step");
    ASSERT_TRUE(strstr(buf, "stage vae") == NULL);
    free(buf);
}

int main(void) {
    sdw_error err = {0};
    const sdw_backend_cpu_params full = {.full_weights = true};
    if (sdw_backend_cpu_create(&full, &g_be[0], &err) ||
        sdw_backend_cpu_create(NULL, &g_be[1], &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    RUN(test_packed_conv);
    RUN(test_conv_many_shapes);
    RUN(test_packed_linear);
    RUN(test_hand_built_add);
    RUN(test_bind_stacked);
    RUN(test_bind_from_file);
    RUN(test_attention_kernels);
    RUN(test_group_norm_bias);
    RUN(test_bf16_rounding);
    RUN(test_bf16_activations);
    RUN(test_compact_weights);
    RUN(test_precision_names_and_rule);
    RUN(test_arena);
    RUN(test_arena_keeps_within_peak);
    RUN(test_arena_keep_scope);
    RUN(test_profile);
    sdw_backend_destroy(g_be[0]);
    sdw_backend_destroy(g_be[1]);
    return sdw_test_finish();
}
