/* sdw_attention_rel_bias: the shared tiled attention with T5's additive relative position bias,
 * both kernels (generic, and AVX-512 where the CPU has avx512f) against a double-precision
 * reference of the definition, the offset convention (j − i) checked by its effect, and a NULL
 * bias being exactly sdw_attention. */
#include "sdw_test.h"

#include "nn/convert.h"
#include "nn/nn.h"
#include "nn/nn_impl.h"

#include <stdlib.h>

#define TOL 1e-5 /* f32 scores and online softmax against double: rounding only */
/* bf16 products against a reference on the same bf16-rounded q, k, v: what is left is the
 * probabilities' rounding (relative 2^-9) */
#define TOL_BF16 4e-3

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

/* The definition, in double: out[b, i, h] = Σ_j softmax_j(scale·q_i·k_j + bias(h, j − i)) v_j,
 * bias(h, j − i) = rel[h·(Lq+Lk−1) + j − i + Lq − 1] (0 without rel); causal: j <= i only. */
static void ref_attention(const float *q, int64_t qs, const float *k, int64_t ks, const float *v,
                          int64_t vs, int B, int64_t Lq, int64_t Lk, int H, int D, float scale,
                          bool causal, const float *rel, float *out) {
    const int64_t HD = (int64_t)H * D, n_rel = Lq + Lk - 1;
    double *p = malloc(sizeof(double) * (size_t)Lk);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                const int64_t n = causal ? SDW_MIN(i + 1, Lk) : Lk;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < n; j++) {
                    double s = 0;
                    for (int d = 0; d < D; d++)
                        s += (double)q[(b * Lq + i) * qs + h * D + d] *
                             k[(b * Lk + j) * ks + h * D + d];
                    p[j] = s * scale + (rel ? rel[h * n_rel + j - i + Lq - 1] : 0.0);
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int64_t j = 0; j < n; j++)
                    sum += (p[j] = exp(p[j] - mx));
                for (int d = 0; d < D; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < n; j++)
                        o += p[j] * v[(b * Lk + j) * vs + h * D + d];
                    out[(b * Lq + i) * HD + h * D + d] = (float)(o / sum);
                }
            }
    free(p);
}

typedef void (*attn_bias_fn)(const float *, int64_t, const float *, int64_t, const float *, int64_t,
                             int, int64_t, int64_t, int, int, float, bool, const float *, float *);

typedef struct attn_case {
    int B;
    int64_t Lq, Lk;
    int H, D;
    int64_t stride; /* q, k, v row stride (>= H·D: a fused q|k|v buffer) */
    float scale;
    bool causal;
    float bias_range; /* rel_bias uniform in ±bias_range */
} attn_case;

/* x rounded to bf16 in place (what the bf16 kernel multiplies). */
static void round_bf16(float *x, size_t n) {
    uint16_t *h = malloc(n * sizeof *h);
    sdw__f32_to_bf16(x, h, n);
    sdw__bf16_to_f32(h, x, n);
    free(h);
}

/* fn's relative error against the double reference; bf16: q, k, v rounded to bf16 first. */
static double attention_err_in(attn_bias_fn fn, const attn_case *c, bool bf16) {
    const int64_t HD = (int64_t)c->H * c->D, st = c->stride;
    const size_t n_out = (size_t)(c->B * c->Lq * HD);
    float *q = rand_buf((size_t)(c->B * c->Lq * st), 2),
          *k = rand_buf((size_t)(c->B * c->Lk * st), 2);
    float *v = rand_buf((size_t)(c->B * c->Lk * st), 1);
    float *rel = rand_buf((size_t)(c->H * (c->Lq + c->Lk - 1)), c->bias_range);
    if (bf16) {
        round_bf16(q, (size_t)(c->B * c->Lq * st));
        round_bf16(k, (size_t)(c->B * c->Lk * st));
        round_bf16(v, (size_t)(c->B * c->Lk * st));
    }
    float *out = calloc(n_out, 4), *ref = calloc(n_out, 4);
    ref_attention(q, st, k, st, v, st, c->B, c->Lq, c->Lk, c->H, c->D, c->scale, c->causal, rel,
                  ref);
    fn(q, st, k, st, v, st, c->B, c->Lq, c->Lk, c->H, c->D, c->scale, c->causal, rel, out);
    double e = sdw_test_rel_err(out, ref, n_out);
    free(q), free(k), free(v), free(rel), free(out), free(ref);
    return e;
}
static double attention_err(attn_bias_fn fn, const attn_case *c) {
    return attention_err_in(fn, c, false);
}

/* The public entry with the kernels' signature (f32: no precision flag). */
static void public_rel_bias(const float *q, int64_t qs, const float *k, int64_t ks, const float *v,
                            int64_t vs, int B, int64_t Lq, int64_t Lk, int H, int D, float scale,
                            bool causal, const float *rel, float *out) {
    sdw_attention_rel_bias(q, qs, k, ks, v, vs, B, Lq, Lk, H, D, scale,
                           causal ? SDW_ATTN_CAUSAL : 0, rel, out);
}

static void check_kernels(attn_case c) {
    double e_gen = attention_err(sdw__attention_generic_bias, &c);
    double e_512 = 0, e_pub = attention_err(public_rel_bias, &c), e_bf16 = 0;
    if (__builtin_cpu_supports("avx512f")) e_512 = attention_err(sdw__attention_avx512_bias, &c);
    if (__builtin_cpu_supports("avx512bf16") && c.D % 2 == 0)
        e_bf16 = attention_err_in(sdw__attention_avx512bf16_bias, &c, true);
    if (!(e_gen <= TOL) || !(e_512 <= TOL) || !(e_pub <= TOL) || !(e_bf16 <= TOL_BF16))
        sdw_test_fail(__FILE__, __LINE__,
                      "biased attention B%d Lq%lld Lk%lld H%d D%d scale %g causal %d: generic "
                      "%.3g, avx512 %.3g, dispatched %.3g, avx512-bf16 %.3g",
                      c.B, (long long)c.Lq, (long long)c.Lk, c.H, c.D, (double)c.scale, c.causal,
                      e_gen, e_512, e_pub, e_bf16);
}

static void test_against_reference(void) {
    /* T5 self-attention: scale 1, fused q|k|v rows, query blocks and key chunks split */
    check_kernels((attn_case){2, 130, 130, 3, 8, 3 * 3 * 8, 1.0f, false, 4.0f});
    /* T5-XXL's head size at a FLUX-length sequence, several key chunks of either kernel */
    check_kernels((attn_case){1, 512, 512, 2, 64, 128, 1.0f, false, 8.0f});
    /* Lq != Lk both ways: the offset table spans -(Lq-1) .. Lk-1 */
    check_kernels((attn_case){1, 300, 77, 2, 16, 32, 1.0f, false, 2.0f});
    check_kernels((attn_case){2, 5, 333, 2, 24, 48, 1.0f, false, 2.0f});
    /* a scale applies to q·kᵀ only, not to the bias */
    check_kernels((attn_case){1, 70, 90, 4, 40, 160, 0.125f, false, 3.0f});
    /* with the causal mask */
    check_kernels((attn_case){1, 333, 333, 1, 8, 8, 1.0f, true, 2.0f});
    /* a bias that dominates the scores (softmax nearly one-hot) */
    check_kernels((attn_case){1, 200, 200, 2, 16, 32, 1.0f, false, 60.0f});
    /* tiny everything, odd D */
    check_kernels((attn_case){1, 3, 2, 2, 3, 6, 1.0f, false, 1.0f});
}

/* rel_bias index t = j − i + Lq − 1: a large bias at offset +1 only makes query i attend to key
 * i + 1 (the last query, with no key i + 1, spreads over all keys). */
static void check_offset_convention(attn_bias_fn fn, double tol) {
    enum { L = 150, H = 2, D = 4 };
    float *q = rand_buf(L * H * D, 0.1f), *k = rand_buf(L * H * D, 0.1f),
          *v = rand_buf(L * H * D, 1);
    float *rel = calloc(H * (2 * L - 1), 4), *out = calloc(L * H * D, 4);
    for (int h = 0; h < H; h++)
        rel[h * (2 * L - 1) + 1 + L - 1] = 50.0f; /* offset j − i = +1 */
    fn(q, H * D, k, H * D, v, H * D, 1, L, L, H, D, 1.0f, false, rel, out);
    double worst = 0;
    for (int i = 0; i + 1 < L; i++)
        for (int c = 0; c < H * D; c++)
            worst = fmax(worst, fabs(out[i * H * D + c] - v[(i + 1) * H * D + c]));
    free(q), free(k), free(v), free(rel), free(out);
    if (!(worst < tol)) sdw_test_fail(__FILE__, __LINE__, "offset +1 not attended: %.3g", worst);
}

static void test_offset_convention(void) {
    check_offset_convention(sdw__attention_generic_bias, 1e-5);
    if (__builtin_cpu_supports("avx512f")) check_offset_convention(sdw__attention_avx512_bias, 1e-5);
    if (__builtin_cpu_supports("avx512bf16")) /* v comes back rounded to bf16 */
        check_offset_convention(sdw__attention_avx512bf16_bias, 1e-2);
}

/* A NULL bias is sdw_attention, bit for bit, in both kernels (the unbiased path is unchanged). */
static void test_null_bias_is_plain(void) {
    enum { B = 2, L = 97, H = 3, D = 40, N = B * L * H * D };
    float *q = rand_buf(N, 2), *k = rand_buf(N, 2), *v = rand_buf(N, 1);
    float *a = calloc(N, 4), *b = calloc(N, 4), *c = calloc(N, 4), *d = calloc(N, 4);
    const float scale = 1.0f / sqrtf((float)D);
    sdw_attention(q, H * D, k, H * D, v, H * D, B, L, L, H, D, scale, 0, a);
    sdw_attention_rel_bias(q, H * D, k, H * D, v, H * D, B, L, L, H, D, scale, 0, NULL, b);
    sdw__attention_generic(q, H * D, k, H * D, v, H * D, B, L, L, H, D, scale, true, c);
    sdw__attention_generic_bias(q, H * D, k, H * D, v, H * D, B, L, L, H, D, scale, true, NULL, d);
    bool same = !memcmp(a, b, N * 4) && !memcmp(c, d, N * 4);
    free(q), free(k), free(v), free(a), free(b), free(c), free(d);
    ASSERT_TRUE(same);
}

int main(void) {
    RUN(test_against_reference);
    RUN(test_offset_convention);
    RUN(test_null_bias_is_plain);
    return sdw_test_finish();
}
