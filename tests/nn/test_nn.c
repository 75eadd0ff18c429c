/* Each nn op against a naive double-precision reference written here. Sizes are odd on purpose
 * (not multiples of the tile sizes) so edge tiles are exercised. */
#include "sdw_test.h"

#include "nn/nn.h"
#include "nn/nn_impl.h"

#include <stdlib.h>

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}
static float *rand_buf(size_t n, float scale, float offset) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale + offset;
    return p;
}
static float *zeros(size_t n) {
    return calloc(n ? n : 1, sizeof(float));
}

/* ---------------- linear ---------------- */

static void check_linear(int64_t M, int in, int out, bool bias) {
    float *x = rand_buf((size_t)M * in, 1, 0), *w = rand_buf((size_t)out * in, 0.2f, 0);
    float *b = bias ? rand_buf((size_t)out, 1, 0) : NULL;
    float *y = zeros((size_t)M * out), *ref = zeros((size_t)M * out);
    sdw_linear l = {.w = w, .b = b, .in = in, .out = out};
    sdw_linear_forward(&l, sdw_rows(x, M), sdw_rows(y, M), 0);
    sdw_test_linear_ref(x, w, b, M, in, out, ref);
    double e = sdw_test_rel_err(y, ref, (size_t)M * out);
    free(x), free(w), free(b), free(y), free(ref);
    if (!(e <= 1e-5))
        sdw_test_fail(__FILE__, __LINE__, "linear %lldx%d->%d: rel err %.3g", (long long)M, in, out,
                      e);
}

static void test_linear(void) {
    check_linear(37, 70, 53, true);
    check_linear(1, 768, 3072, false);
    check_linear(154, 32, 32, true);
}

/* ---------------- conv ---------------- */

static void check_conv(int B, int H, int W, int in, int out, int k, int stride, int pad,
                       int pad_end, bool bias) {
    float *x = rand_buf((size_t)B * H * W * in, 1, 0);
    float *w = rand_buf((size_t)out * in * k * k, 0.2f, 0);
    float *b = bias ? rand_buf((size_t)out, 1, 0) : NULL;
    float *wp = zeros((size_t)out * in * k * k);
    sdw_conv2d_pack_weights(w, out, in, k, wp);
    sdw_conv2d c = {.w = wp,
                    .b = b,
                    .in = in,
                    .out = out,
                    .k = k,
                    .stride = stride,
                    .pad = pad,
                    .pad_end = pad_end};
    int OH = sdw_conv2d_out_size(&c, H), OW = sdw_conv2d_out_size(&c, W);
    /* torch's output size: floor((n + pad_total - k) / stride) + 1 */
    int want_oh = (H + pad + pad_end - k) / stride + 1;
    size_t n_out = (size_t)B * OH * OW * out;
    float *y = zeros(n_out), *ref = zeros(n_out);
    sdw_conv2d_forward(&c, sdw_nhwc(x, B, H, W), sdw_nhwc(y, B, OH, OW), 0);
    sdw_test_conv_ref(x, w, b, B, H, W, in, out, k, stride, pad, OH, OW, ref);
    double e = sdw_test_rel_err(y, ref, n_out);
    free(x), free(w), free(b), free(wp), free(y), free(ref);
    if (OH != want_oh) sdw_test_fail(__FILE__, __LINE__, "conv out size %d, want %d", OH, want_oh);
    if (!(e <= 1e-5))
        sdw_test_fail(__FILE__, __LINE__, "conv %dx%dx%d k%d s%d p%d/%d: rel err %.3g", H, W, in, k,
                      stride, pad, pad_end, e);
}

static void test_conv(void) {
    check_conv(2, 9, 11, 5, 7, 3, 1, 1, 1, true);  /* SD conv 3x3 */
    check_conv(2, 10, 13, 6, 4, 3, 2, 1, 1, true); /* UNet downsampler */
    check_conv(1, 9, 9, 6, 4, 3, 2, 0, 1, true);   /* VAE-encoder downsampler pad (0,1,0,1) */
    check_conv(2, 7, 5, 12, 9, 1, 1, 0, 0, true);  /* 1x1 = GEMM */
    check_conv(1, 7, 5, 12, 9, 1, 1, 0, 0, false);
    check_conv(1, 8, 8, 3, 5, 5, 1, 2, 2, false); /* larger kernel */
    check_conv(1, 9, 9, 3, 5, 1, 2, 0, 0, true);  /* strided 1x1 goes through im2col */
}

/* Large enough that the im2col buffer is split into bands of output rows. */
static void test_conv_banded(void) {
    check_conv(1, 90, 90, 256, 8, 3, 1, 1, 1, true);
}

/* ---------------- norms ---------------- */

static void ref_group_norm(const float *x, int B, int HW, int C, int G, const float *gamma,
                           const float *beta, float eps, bool silu, float *ref) {
    int cpg = C / G;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            double s = 0, ss = 0, n = (double)HW * cpg;
            for (int p = 0; p < HW; p++)
                for (int j = 0; j < cpg; j++)
                    s += x[((size_t)b * HW + p) * C + g * cpg + j];
            double mean = s / n;
            for (int p = 0; p < HW; p++)
                for (int j = 0; j < cpg; j++) {
                    double d = x[((size_t)b * HW + p) * C + g * cpg + j] - mean;
                    ss += d * d;
                }
            double rstd = 1 / sqrt(ss / n + eps);
            for (int p = 0; p < HW; p++)
                for (int j = 0; j < cpg; j++) {
                    size_t i = ((size_t)b * HW + p) * C + g * cpg + j;
                    double v = (x[i] - mean) * rstd * gamma[g * cpg + j] + beta[g * cpg + j];
                    if (silu) v = v / (1 + exp(-v));
                    ref[i] = (float)v;
                }
        }
}

static void check_group_norm(int B, int HW, int C, int G, float eps, bool silu, float offset) {
    size_t n = (size_t)B * HW * C;
    float *x = rand_buf(n, 3, offset), *gamma = rand_buf((size_t)C, 1, 1),
          *beta = rand_buf((size_t)C, 1, 0);
    float *y = zeros(n), *ref = zeros(n);
    sdw_group_norm g = {.gamma = gamma, .beta = beta, .c = C, .groups = G, .eps = eps};
    ref_group_norm(x, B, HW, C, G, gamma, beta, eps, silu, ref);
    const unsigned act = silu ? SDW_SILU : 0;
    sdw_group_norm_forward(&g, NULL, sdw_nhwc(x, B, HW, 1), sdw_nhwc(y, B, HW, 1), act);
    double e = sdw_test_rel_err(y, ref, n);
    sdw_group_norm_forward(&g, NULL, sdw_nhwc(x, B, HW, 1), sdw_nhwc(x, B, HW, 1),
                           act); /* in place */
    double e_alias = sdw_test_rel_err(x, ref, n);
    free(x), free(gamma), free(beta), free(y), free(ref);
    if (!(e <= 1e-5) || !(e_alias <= 1e-5))
        sdw_test_fail(__FILE__, __LINE__, "group_norm C%d G%d silu%d: rel err %.3g / %.3g", C, G,
                      silu, e, e_alias);
}

static void test_group_norm(void) {
    check_group_norm(2, 50, 64, 32, 1e-5f, false, 0);
    check_group_norm(2, 37, 96, 32, 1e-6f, true, 0);
    check_group_norm(1, 64, 40, 8, 1e-5f, true, 100); /* large mean: needs two-pass stats */
}

static void test_layer_norm(void) {
    const int M = 77, C = 96;
    for (int pass = 0; pass < 2; pass++) {
        float offset = pass ? 50.f : 0.f;
        float *x = rand_buf((size_t)M * C, 2, offset), *gamma = rand_buf(C, 1, 1),
              *beta = rand_buf(C, 1, 0);
        float *y = zeros((size_t)M * C), *ref = zeros((size_t)M * C);
        for (int i = 0; i < M; i++) {
            double s = 0, ss = 0;
            for (int j = 0; j < C; j++)
                s += x[i * C + j];
            double mean = s / C;
            for (int j = 0; j < C; j++)
                ss += (x[i * C + j] - mean) * (x[i * C + j] - mean);
            double rstd = 1 / sqrt(ss / C + 1e-5);
            for (int j = 0; j < C; j++)
                ref[i * C + j] = (float)((x[i * C + j] - mean) * rstd * gamma[j] + beta[j]);
        }
        sdw_layer_norm ln = {.gamma = gamma, .beta = beta, .c = C, .eps = 1e-5f};
        sdw_layer_norm_forward(&ln, sdw_rows(x, M), sdw_rows(y, M));
        double e = sdw_test_rel_err(y, ref, (size_t)M * C);
        sdw_layer_norm_forward(&ln, sdw_rows(x, M), sdw_rows(x, M));
        double e2 = sdw_test_rel_err(x, ref, (size_t)M * C);
        free(x), free(gamma), free(beta), free(y), free(ref);
        ASSERT_TRUE(e <= 1e-5);
        ASSERT_TRUE(e2 <= 1e-5);
    }
}

/* ---------------- attention ---------------- */

/* q/k/v laid out with the given row strides (channels beyond H*D are ignored junk). */
static void check_attention(int B, int64_t Lq, int64_t Lk, int H, int D, int64_t qs, int64_t ks,
                            int64_t vs, bool causal) {
    const int64_t HD = (int64_t)H * D;
    float *q = rand_buf((size_t)(B * Lq * qs), 2, 0), *k = rand_buf((size_t)(B * Lk * ks), 2, 0),
          *v = rand_buf((size_t)(B * Lk * vs), 1, 0);
    float *out = zeros((size_t)(B * Lq * HD)), *ref = zeros((size_t)(B * Lq * HD));
    const float scale = 1.0f / sqrtf((float)D);
    sdw_test_attention_ref(q, qs, k, ks, v, vs, B, Lq, Lk, H, D, scale, causal, ref);
    sdw_attention(q, qs, k, ks, v, vs, B, Lq, Lk, H, D, scale, causal ? SDW_ATTN_CAUSAL : 0, out);
    double e = sdw_test_rel_err(out, ref, (size_t)(B * Lq * HD));
    free(q), free(k), free(v), free(out), free(ref);
    if (!(e <= 1e-5))
        sdw_test_fail(__FILE__, __LINE__, "attention B%d Lq%lld Lk%lld H%d D%d causal%d: %.3g", B,
                      (long long)Lq, (long long)Lk, H, D, causal, e);
}

static void test_attention_self(void) {
    check_attention(2, 130, 130, 3, 40, 120, 120, 120, false);
    check_attention(1, 600, 600, 2, 16, 32, 32, 32, false); /* several key chunks */
}

static void test_attention_cross(void) {
    check_attention(2, 130, 77, 3, 40, 120, 120, 120, false); /* Lq != Lk */
    check_attention(1, 5, 300, 2, 8, 16, 16, 16, false);      /* Lk > Lq, several chunks */
}

static void test_attention_causal(void) {
    check_attention(2, 77, 77, 4, 8, 32, 32, 32, true);   /* CLIP text */
    check_attention(1, 333, 333, 2, 8, 16, 16, 16, true); /* causal across key chunks */
}

static void test_attention_many_heads_strided(void) {
    check_attention(1, 100, 100, 20, 64, 1280, 1280, 1280, false);
    /* fused qkv buffer: each of q, k, v reads a [L, 3·H·D] buffer at its own offset */
    check_attention(2, 70, 70, 5, 8, 3 * 40, 3 * 40, 3 * 40, false);
}

/* ---------------- elementwise ---------------- */

static void test_activations(void) {
    const size_t n = 100003;
    float *x = rand_buf(n, 8, 0), *y = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
    for (int which = 0; which < 4; which++) {
        memcpy(y, x, n * sizeof(float));
        for (size_t i = 0; i < n; i++) {
            double v = x[i];
            switch (which) {
            case 0:
                ref[i] = (float)(v / (1 + exp(-v)));
                break;
            case 1:
                ref[i] = (float)(0.5 * v * (1 + erf(v / sqrt(2.0))));
                break;
            case 2:
                ref[i] = (float)(0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))));
                break;
            default:
                ref[i] = (float)(v / (1 + exp(-1.702 * v)));
                break;
            }
        }
        if (which == 0) sdw_silu(y, n);
        if (which == 1) sdw_gelu(y, n);
        if (which == 2) sdw_gelu_tanh(y, n);
        if (which == 3) sdw_quick_gelu(y, n);
        double e = sdw_test_rel_err(y, ref, n);
        if (!(e <= 1e-6))
            sdw_test_fail(__FILE__, __LINE__, "activation %d: rel err %.3g", which, e);
    }
    free(x), free(y), free(ref);
}

static void test_geglu(void) {
    const int64_t M = 77;
    const int F = 130;
    float *x = rand_buf((size_t)(M * 2 * F), 4, 0), *y = zeros((size_t)(M * F)),
          *ref = zeros((size_t)(M * F));
    for (int64_t i = 0; i < M; i++)
        for (int j = 0; j < F; j++) {
            double h = x[i * 2 * F + j], g = x[i * 2 * F + F + j];
            ref[i * F + j] = (float)(h * 0.5 * g * (1 + erf(g / sqrt(2.0))));
        }
    sdw_geglu(sdw_rows(x, M), F, sdw_rows(y, M));
    double e = sdw_test_rel_err(y, ref, (size_t)(M * F));
    free(x), free(y), free(ref);
    ASSERT_TRUE(e <= 1e-6);
}

static void test_add_and_bias(void) {
    const int B = 2, HW = 15, C = 7;
    size_t n = (size_t)B * HW * C;
    float *y = rand_buf(n, 1, 0), *x = rand_buf(n, 1, 0), *bias = rand_buf((size_t)B * C, 1, 0);
    float *ref = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        int b = (int)(i / ((size_t)HW * C)), c = (int)(i % C);
        ref[i] = (y[i] + x[i]) + bias[b * C + c];
    }
    sdw_add(y, x, n);
    sdw_add_channel_bias(y, bias, B, HW, C);
    double e = sdw_test_rel_err(y, ref, n);
    free(y), free(x), free(bias), free(ref);
    ASSERT_TRUE(e == 0);
}

static void test_layout(void) {
    const int B = 2, H = 3, W = 5, C = 4;
    size_t n = (size_t)B * H * W * C;
    float *nchw = rand_buf(n, 1, 0), *nhwc = zeros(n), *back = zeros(n);
    sdw_nchw_to_nhwc(nchw, B, C, H, W, nhwc);
    int bad = 0;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    bad +=
                        nchw[((b * C + c) * H + y) * W + x] != nhwc[((b * H + y) * W + x) * C + c];
    sdw_nhwc_to_nchw(nhwc, B, H, W, C, back);
    bad += memcmp(back, nchw, n * sizeof(float)) != 0;

    float *up = zeros(n * 4);
    sdw_upsample_nearest2x(nhwc, B, H, W, C, up);
    for (int b = 0; b < B; b++)
        for (int y = 0; y < 2 * H; y++)
            for (int x = 0; x < 2 * W; x++)
                for (int c = 0; c < C; c++)
                    bad += up[((b * 2 * H + y) * 2 * W + x) * C + c] !=
                           nhwc[((b * H + y / 2) * W + x / 2) * C + c];

    const int64_t M = 11;
    float *a = rand_buf(M * 3, 1, 0), *bb = rand_buf(M * 5, 1, 0), *cat = zeros(M * 8);
    sdw_concat_channels(a, 3, bb, 5, M, cat);
    for (int64_t i = 0; i < M; i++)
        for (int j = 0; j < 8; j++)
            bad += cat[i * 8 + j] != (j < 3 ? a[i * 3 + j] : bb[i * 5 + j - 3]);
    free(nchw), free(nhwc), free(back), free(up), free(a), free(bb), free(cat);
    ASSERT_EQ_INT(bad, 0);
}

/* Reference in double. torch evaluates it in float32, whose argument t·freq carries a rounding
 * error of a few ulp of t (~1e-4 at t = 999), so large t gets an absolute tolerance to match. */
static void check_timestep(float t, int dim, bool flip, float shift, double tol) {
    float *out = zeros((size_t)dim);
    sdw_timestep_embedding(t, dim, flip, shift, out);
    int half = dim / 2;
    double maxerr = 0;
    for (int i = 0; i < half; i++) {
        double arg = t * exp(-log(10000.0) * i / (half - shift));
        double s = sin(arg), c = cos(arg);
        double e0 = fabs(out[i] - (flip ? c : s)), e1 = fabs(out[half + i] - (flip ? s : c));
        maxerr = fmax(maxerr, fmax(e0, e1));
    }
    if (dim % 2 && out[dim - 1] != 0) maxerr = 1;
    free(out);
    if (!(maxerr <= tol))
        sdw_test_fail(__FILE__, __LINE__, "timestep t=%g dim %d flip %d shift %g: err %.3g", t, dim,
                      flip, shift, maxerr);
}

static void test_timestep_embedding(void) {
    check_timestep(1.0f, 320, true, 0.0f, 1e-6); /* SD UNet: flip, shift 0 */
    check_timestep(999.0f, 320, true, 0.0f, 5e-4);
    check_timestep(981.0f, 256, false, 1.0f, 5e-4); /* shift 1 (e.g. SDXL add_time / FLUX) */
    check_timestep(3.0f, 33, false, 1.0f, 1e-6);    /* odd dim: zero pad */
}

/* The vectorisable exp used by the softmax: within a few ulp of exp over its whole range. */
static void test_fast_exp(void) {
    double worst = 0;
    for (int i = 0; i <= 2000000; i++) {
        float x = -87.0f + 175.0f * (float)i / 2000000.0f;
        double ref = exp((double)x), got = sdw__expf(x);
        double rel = fabs(got - ref) / ref;
        if (rel > worst) worst = rel;
    }
    ASSERT_TRUE(worst < 3.0 * 5.96e-8); /* < 3 ulp */
    ASSERT_TRUE(sdw__expf(0.0f) == 1.0f);
    ASSERT_TRUE(sdw__expf(-1000.0f) < 1.5e-38f && sdw__expf(-INFINITY) >= 0.0f);
    ASSERT_TRUE(isnan(sdw__expf(NAN)));
}

/* ---------------- binding ---------------- */

/* Binding from a weight source: conv weights come back repacked, and the bound layer computes
 * the convolution of the stored OIHW tensor. */
static void test_bind_conv(void) {
    sdw_weights *ws = sdw_weights_create_random(7);
    sdw_conv2d c;
    sdw_error err = {0};
    sdw_status st = sdw_conv2d_bind_pad(&c, ws, "down.conv", 6, 5, 3, 2, 0, 1, true, &err);
    const float *w =
        st ? NULL : sdw_weights_f32(ws, "down.conv.weight", 4, (int64_t[]){5, 6, 3, 3}, &err);
    double e = INFINITY;
    if (w) {
        const int B = 2, H = 9, W = 8;
        int OH = sdw_conv2d_out_size(&c, H), OW = sdw_conv2d_out_size(&c, W);
        float *x = rand_buf((size_t)B * H * W * 6, 1, 0);
        float *y = zeros((size_t)B * OH * OW * 5), *ref = zeros((size_t)B * OH * OW * 5);
        sdw_conv2d_forward(&c, sdw_nhwc(x, B, H, W), sdw_nhwc(y, B, OH, OW), 0);
        sdw_test_conv_ref(x, w, c.b, B, H, W, 6, 5, 3, 2, 0, OH, OW, ref);
        e = sdw_test_rel_err(y, ref, (size_t)B * OH * OW * 5);
        free(x), free(y), free(ref);
    }
    sdw_weights_destroy(ws);
    ASSERT_OK(st, &err);
    ASSERT_TRUE(w != NULL);
    ASSERT_TRUE(e <= 1e-5);
}

/* Shape errors from a real file name the tensor; bad group counts are refused. */
static void test_bind_errors(void) {
    sdw_st_file *f = NULL;
    sdw_error err = {0};
    ASSERT_OK(
        sdw_st_open(sdw_test_path("models/tiny-sd15/text_encoder/model.safetensors"), &f, &err),
        &err);
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    sdw_linear l;
    sdw_layer_norm ln;
    sdw_group_norm gn;
    const char *q = "text_model.encoder.layers.0.self_attn.q_proj";
    sdw_status s_ok = sdw_linear_bind(&l, ws, q, 32, 32, true, &err);
    sdw_status s_shape = sdw_linear_bind(&l, ws, q, 32, 33, true, &err);
    char msg[SDW_ERROR_MSG_MAX];
    memcpy(msg, err.msg, sizeof msg);
    sdw_status s_missing = sdw_layer_norm_bind(&ln, ws, "nope", 32, 1e-5f, NULL);
    sdw_status s_groups =
        sdw_group_norm_bind(&gn, ws, "text_model.final_layer_norm", 32, 5, 1e-5f, &err);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
    ASSERT_EQ_INT(s_ok, SDW_OK);
    ASSERT_EQ_INT(s_shape, SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(msg, "q_proj.weight");
    ASSERT_EQ_INT(s_missing, SDW_E_NOT_FOUND);
    ASSERT_EQ_INT(s_groups, SDW_E_SHAPE);
}

int main(void) {
    RUN(test_linear);
    RUN(test_conv);
    RUN(test_conv_banded);
    RUN(test_group_norm);
    RUN(test_layer_norm);
    RUN(test_attention_self);
    RUN(test_attention_cross);
    RUN(test_attention_causal);
    RUN(test_attention_many_heads_strided);
    RUN(test_activations);
    RUN(test_geglu);
    RUN(test_add_and_bias);
    RUN(test_layout);
    RUN(test_timestep_embedding);
    RUN(test_fast_exp);
    RUN(test_bind_conv);
    RUN(test_bind_errors);
    return sdw_test_finish();
}
