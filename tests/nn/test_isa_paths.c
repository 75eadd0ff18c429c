/* Our kernels' AVX2 paths (issue 16: CPUs without AVX-512) on any machine with AVX2: the
 * process caps itself with SDW_MAX_ISA=avx2 before anything reads the CPU, as a user on an
 * AVX-512 machine would, and checks that the cap holds everywhere (our dispatch, oneDNN, bf16
 * refused) and that the AVX2 kernels compute what the references do: attention (plain, causal,
 * biased; against a double reference), fp8 widening (every code of both formats, NaN groups
 * and tails; against a scalar decoding written here), bf16 rounding, GroupNorm and LayerNorm.
 * test_avx2_goldens runs the model goldens under the same cap. */
#include "sdw_test.h"

#include "core/cpu.h"
#include "nn/nn_impl.h"

#include <stdlib.h>

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
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

static void test_cap_holds(void) {
    ASSERT_EQ_INT(sdw_cpu_isa(), SDW_ISA_AVX2);
    ASSERT_TRUE(sdw_cpu_isa_hw() >= SDW_ISA_AVX2);
    ASSERT_TRUE(!sdw_nn_cpu_has_bf16()); /* oneDNN capped to AVX2: no bf16 arithmetic */
    ASSERT_TRUE(!sdw_nn_cpu_has_amx());
    ASSERT_EQ_INT(sdw_nn_precision_resolve(SDW_PRECISION_BF16), SDW_PRECISION_F32);
    ASSERT_EQ_INT(sdw_nn_precision_resolve(SDW_PRECISION_AUTO), SDW_PRECISION_F32);
    const sdw_shape_class big = {.n = 1, .p = {{3, 1280, 1280, 1.0}}};
    ASSERT_EQ_INT(sdw_nn_precision_resolve_model(SDW_PRECISION_AUTO, &big, 0), SDW_PRECISION_F32);
    sdw_isa isa;
    ASSERT_TRUE(sdw_isa_parse("AVX512_BF16", &isa) && isa == SDW_ISA_AVX512_BF16);
    ASSERT_TRUE(!sdw_isa_parse("sse9", &isa) && isa == SDW_ISA_AVX512_BF16);
    ASSERT_TRUE(strcmp(sdw_isa_str(SDW_ISA_AVX2), "avx2") == 0);
}

typedef void (*attn_bias_fn)(const float *, int64_t, const float *, int64_t, const float *, int64_t,
                             int, int64_t, int64_t, int, int, float, bool, const float *, float *);

/* softmax(q kᵀ · scale + bias) v in double; bias as sdw_attention_rel_bias's (or NULL). */
static void ref_attention(const float *q, int64_t st, const float *k, const float *v, int B,
                          int64_t Lq, int64_t Lk, int H, int D, float scale, bool causal,
                          const float *rel, float *out) {
    double *p = malloc(sizeof(double) * (size_t)Lk);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                const float *qi = q + (b * Lq + i) * st + h * D;
                double mx = -INFINITY, sum = 0;
                const int64_t n = causal ? SDW_MIN(Lk, i + 1) : Lk;
                for (int64_t j = 0; j < n; j++) {
                    const float *kj = k + (b * Lk + j) * st + h * D;
                    double s = 0;
                    for (int d = 0; d < D; d++)
                        s += (double)qi[d] * kj[d];
                    s *= scale;
                    if (rel) s += rel[h * (Lq + Lk - 1) + j - i + Lq - 1];
                    p[j] = s;
                    mx = s > mx ? s : mx;
                }
                for (int64_t j = 0; j < n; j++)
                    sum += p[j] = exp(p[j] - mx);
                for (int d = 0; d < D; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < n; j++)
                        o += p[j] * v[(b * Lk + j) * st + h * D + d];
                    out[(b * Lq + i) * H * D + h * D + d] = (float)(o / sum);
                }
            }
    free(p);
}

static double attention_err(attn_bias_fn fn, int B, int64_t Lq, int64_t Lk, int H, int D,
                            int64_t st, bool causal, bool bias) {
    const size_t n_out = (size_t)(B * Lq * H * D);
    float *q = rand_buf((size_t)(B * Lq * st), 2), *k = rand_buf((size_t)(B * Lk * st), 2);
    float *v = rand_buf((size_t)(B * Lk * st), 1);
    float *rel = bias ? rand_buf((size_t)(H * (Lq + Lk - 1)), 3) : NULL;
    float *out = calloc(n_out, 4), *ref = calloc(n_out, 4);
    const float scale = 1.0f / sqrtf((float)D);
    ref_attention(q, st, k, v, B, Lq, Lk, H, D, scale, causal, rel, ref);
    fn(q, st, k, st, v, st, B, Lq, Lk, H, D, scale, causal, rel, out);
    const double e = sdw_test_rel_err(out, ref, n_out);
    free(q), free(k), free(v), free(rel), free(out), free(ref);
    return e;
}

/* The public entry with a bf16 model's flag: under the cap it must run the f32 AVX2 kernel
 * (the flag allows rounding where the CPU has AVX512-BF16; it never requires it). */
static void public_bf16(const float *q, int64_t qs, const float *k, int64_t ks, const float *v,
                        int64_t vs, int B, int64_t Lq, int64_t Lk, int H, int D, float scale,
                        bool causal, const float *rel, float *out) {
    sdw_attention_rel_bias(q, qs, k, ks, v, vs, B, Lq, Lk, H, D, scale,
                           (causal ? SDW_ATTN_CAUSAL : 0) | SDW_ATTN_BF16, rel, out);
}

static void check_attention(int B, int64_t Lq, int64_t Lk, int H, int D, int64_t st, bool causal,
                            bool bias) {
    const double e2 = attention_err(sdw__attention_avx2_bias, B, Lq, Lk, H, D, st, causal, bias);
    const double ed = attention_err(public_bf16, B, Lq, Lk, H, D, st, causal, bias);
    if (!(e2 <= 1e-5) || !(ed <= 1e-5))
        sdw_test_fail(__FILE__, __LINE__,
                      "attention B%d Lq%lld Lk%lld H%d D%d causal %d bias %d: avx2 %.3g, "
                      "dispatched %.3g",
                      B, (long long)Lq, (long long)Lk, H, D, causal, bias, e2, ed);
}

static void test_attention_avx2(void) {
    check_attention(2, 130, 130, 3, 40, 3 * 3 * 40, false, false); /* fused qkv row stride */
    check_attention(1, 300, 77, 2, 80, 160, false, false);         /* cross, Lk not a multiple */
    check_attention(2, 77, 77, 4, 16, 64, true, false);            /* CLIP causal */
    check_attention(1, 333, 333, 1, 8, 8, true, false);            /* causal across key chunks */
    check_attention(1, 70, 70, 1, 200, 200, false, false);         /* wide head (VAE-like) */
    check_attention(1, 5, 3, 2, 3, 6, false, false);               /* tiny everything */
    check_attention(2, 40, 60, 2, 24, 48, false, true);            /* T5's relative bias */
    check_attention(1, 150, 150, 2, 20, 40, true, true);           /* causal + bias */
}

/* The value of an fp8 code, decoded by the formats' definitions (torch's float8 types). */
static float fp8_value(sdw_dtype dt, uint8_t c) {
    const bool e4m3 = dt == SDW_DTYPE_F8_E4M3;
    const int mbits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15;
    const int e = (c & 0x7f) >> mbits, m = c & ((1 << mbits) - 1);
    const float sign = c & 0x80 ? -1.0f : 1.0f;
    if (e4m3 && (c & 0x7f) == 0x7f) return NAN;
    if (!e4m3 && e == 31) return m ? NAN : sign * INFINITY;
    if (e == 0) return sign * ldexpf((float)m, 1 - bias - mbits);
    return sign * ldexpf(1.0f + (float)m / (float)(1 << mbits), e - bias);
}

static void test_fp8_widening_avx2(void) {
    const sdw_dtype dts[] = {SDW_DTYPE_F8_E4M3, SDW_DTYPE_F8_E5M2};
    /* every code, in an order that puts NaN codes inside vector groups and at odd offsets; a
     * length that leaves a tail */
    enum { N = 256 * 5 + 13 };
    uint8_t *x = malloc(N);
    for (int i = 0; i < N; i++)
        x[i] = (uint8_t)((i * 37 + i / 256) & 0xff);
    /* aligned_alloc wants a multiple of the alignment */
    float *y32 = aligned_alloc(64, (N * 4 + 127) / 64 * 64);
    uint16_t *y16 = aligned_alloc(64, (N * 2 + 127) / 64 * 64);
    for (int t = 0; t < 2; t++) {
        sdw__widen_8(dts[t], x, y32, SDW_DT_F32, N);
        sdw__widen_8(dts[t], x, y16, SDW_DT_BF16, N);
        for (int i = 0; i < N; i++) {
            const float want = fp8_value(dts[t], x[i]);
            uint32_t u;
            memcpy(&u, &y32[i], 4);
            const bool same =
                isnan(want) ? isnan(y32[i]) : y32[i] == want && signbit(y32[i]) == signbit(want);
            if (!same || (u >> 16) != y16[i] || (u & 0xffff)) {
                sdw_test_fail(__FILE__, __LINE__,
                              "%s code 0x%02x at %d: f32 %g (bf16 0x%04x), want %g",
                              sdw_dtype_str(dts[t]), x[i], i, (double)y32[i], y16[i], (double)want);
                break;
            }
        }
    }
    free(x), free(y32), free(y16);
}

static void test_bf16_rounding_avx2(void) {
    enum { N = 1000 };
    float *x = rand_buf(N, 100), *back = malloc(N * 4);
    uint16_t *h = malloc(N * 2);
    x[3] = 1.00390625f; /* a tie: to even (1.0) */
    x[4] = NAN;
    sdw__f32_to_bf16(x, h, N);
    sdw__bf16_to_f32(h, back, N);
    ASSERT_EQ_INT(h[3], 0x3f80);
    ASSERT_TRUE(isnan(back[4]));
    for (int i = 5; i < N; i++)
        ASSERT_TRUE(fabsf(back[i] - x[i]) <= fabsf(x[i]) * (1.0f / 256));
    free(x), free(back), free(h);
}

static void test_norms_avx2(void) {
    const int B = 2, HW = 150, C = 64, G = 32;
    const size_t n = (size_t)B * HW * C;
    float *x = rand_buf(n, 3), *gamma = rand_buf(C, 1), *beta = rand_buf(C, 1);
    float *y = malloc(n * 4), *ref = malloc(n * 4);
    sdw_group_norm g = {.gamma = gamma, .beta = beta, .c = C, .groups = G, .eps = 1e-5f};
    sdw_group_norm_forward(&g, NULL, sdw_nhwc(x, B, HW, 1), sdw_nhwc(y, B, HW, 1), SDW_SILU);
    for (int b = 0; b < B; b++)
        for (int gi = 0; gi < G; gi++) {
            const int cg = C / G;
            double s = 0, ss = 0;
            for (int p = 0; p < HW; p++)
                for (int c = gi * cg; c < (gi + 1) * cg; c++)
                    s += x[((size_t)b * HW + p) * C + c];
            const double mean = s / (HW * cg);
            for (int p = 0; p < HW; p++)
                for (int c = gi * cg; c < (gi + 1) * cg; c++) {
                    const double d = x[((size_t)b * HW + p) * C + c] - mean;
                    ss += d * d;
                }
            const double rstd = 1 / sqrt(ss / (HW * cg) + 1e-5);
            for (int p = 0; p < HW; p++)
                for (int c = gi * cg; c < (gi + 1) * cg; c++) {
                    const size_t i = ((size_t)b * HW + p) * C + c;
                    const double v = (x[i] - mean) * rstd * gamma[c] + beta[c];
                    ref[i] = (float)(v / (1 + exp(-v)));
                }
        }
    ASSERT_CLOSE_REL(y, ref, n, 1e-6, "group norm + silu (avx2)");
    sdw_layer_norm ln = {.gamma = gamma, .beta = beta, .c = C, .eps = 1e-5f};
    sdw_layer_norm_forward(&ln, sdw_rows(x, B * HW), sdw_rows(y, B * HW));
    for (int r = 0; r < B * HW; r++) {
        double s = 0, ss = 0;
        for (int c = 0; c < C; c++)
            s += x[(size_t)r * C + c];
        const double mean = s / C;
        for (int c = 0; c < C; c++)
            ss += (x[(size_t)r * C + c] - mean) * (x[(size_t)r * C + c] - mean);
        const double rstd = 1 / sqrt(ss / C + 1e-5);
        for (int c = 0; c < C; c++)
            ref[(size_t)r * C + c] =
                (float)((x[(size_t)r * C + c] - mean) * rstd * gamma[c] + beta[c]);
    }
    ASSERT_CLOSE_REL(y, ref, n, 1e-6, "layer norm (avx2)");
    free(x), free(gamma), free(beta), free(y), free(ref);
}

int main(void) {
    /* the cap must be in place before anything reads the CPU */
    setenv("SDW_MAX_ISA", "avx2", 1);
    if (sdw_cpu_isa_hw() < SDW_ISA_AVX2) {
        fprintf(stderr, "skipped: this CPU has no AVX2 (%s)\n", sdw_cpu_flags());
        return 77;
    }
    RUN(test_cap_holds);
    RUN(test_attention_avx2);
    RUN(test_fp8_widening_avx2);
    RUN(test_bf16_rounding_avx2);
    RUN(test_norms_avx2);
    return sdw_test_finish();
}
