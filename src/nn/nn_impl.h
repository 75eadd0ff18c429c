/* nn/nn_impl.h — helpers shared by the nn/ sources (not a public contract). */
#ifndef SDW_NN_IMPL_H
#define SDW_NN_IMPL_H

#include "nn/nn.h"

#include "nn/backend_cpu.h"
#include "nn/convert.h"

/* sdw_weights_f32 / sdw_weights_raw in the constructor form every nn/ binder uses: the status is
 * returned, the tensor comes through *out (untouched on failure), err may be NULL. */
sdw_status sdw__weights_f32(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                            const float **out, sdw_error *err);
sdw_status sdw__weights_raw(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                            const void **out, sdw_dtype *dtype, size_t *n, sdw_error *err);

/* The backend the layers bound from ws pack their weights on and run on (borrowed: it outlives
 * ws). Today every ws gets the process's default CPU backend (made on first use, never
 * destroyed); when an sdw_weights carries its model's backend, as it carries the precision,
 * this is where it is read. Never fails (a CPU backend that cannot start is fatal). */
sdw_backend *sdw__nn_backend(const sdw_weights *ws);

/* cond ? a : b as bit operations. GCC will not if-convert a float ?: under the default
 * -ftrapping-math, and a branch in a loop body stops vectorisation. */
static inline float sdw__select(int32_t cond, float a, float b) {
    union {
        float f;
        int32_t i;
    } ua = {a}, ub = {b};
    const int32_t m = -cond;
    ua.i = (ua.i & m) | (ub.i & ~m);
    return ua.f;
}

/* exp(x) in f32, branch-free so loops over it vectorise (glibc's expf does not without
 * -ffast-math). Cephes' expf: x = n·ln2 + r with |r| <= ln2/2 (n rounded to nearest), e^r by a
 * degree-6 polynomial, 2^n through the exponent bits; within 3 ulp over [-87.3, 88.3] (torch's
 * vectorised exp is ~1 ulp). x is clamped to that range, so the result saturates at ~2e38 above
 * it and is ~1e-38 (not a denormal or 0) below: harmless for softmax weights. NaN stays NaN. */
static inline float sdw__expf(float x) {
    float c = sdw__select(x > 88.3f, 88.3f, x);
    c = sdw__select(c < -87.3f, -87.3f, c);
    /* n = round(c·log2 e) by the 1.5·2^23 trick: floorf is a libm call without SSE4.1. */
    const float fx = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = c - fx * 0.693359375f - fx * -2.12194440e-4f; /* ln2 split hi + lo */
    const float z = r * r;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    /* 2^n with n in [-126, 127]; a NaN x leaves y NaN, so n just has to be a defined int. */
    const int32_t n = (int32_t)sdw__select(fx == fx, fx, 0.0f);
    union {
        uint32_t i;
        float f;
    } u = {.i = (uint32_t)(n + 127) << 23};
    return y * u.f;
}

/* erf(x) in f32, branch-free (vectorises): the odd/even rational minimax approximation on
 * [-4, 4] used by Eigen and XLA (erf is ±1 in f32 outside); max error ~2e-7 absolute, against
 * glibc's erff which no compiler vectorises. */
static inline float sdw__erff(float x) {
    x = x < -4.0f ? -4.0f : x;
    x = x > 4.0f ? 4.0f : x;
    const float x2 = x * x;
    float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
    p = x2 * p + -2.10102402082508e-06f;
    p = x2 * p + -5.69250639462346e-05f;
    p = x2 * p + -7.34990630326855e-04f;
    p = x2 * p + -2.95459980854025e-03f;
    p = x2 * p + -1.60960333262415e-02f;
    p = x * p;
    float q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
    q = x2 * q + -1.68282697438203e-03f;
    q = x2 * q + -7.37332916720468e-03f;
    q = x2 * q + -1.42647390514189e-02f;
    return p / q;
}

/* sdw_attention_rel_bias's kernels (rel_bias NULL = sdw_attention); tests call them directly
 * to cover them all. Baseline: any x86-64. AVX-512 (attention_avx512.c): call only where the CPU
 * has AVX-512 (core/cpu.h: SDW_ISA_AVX512), D <= SDW__ATTN_AVX512_MAX_D and scale > 0. */
void sdw__attention_generic_bias(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                                 const float *v, int64_t v_stride, int B, int64_t Lq, int64_t Lk,
                                 int H, int D, float scale, bool causal, const float *rel_bias,
                                 float *out);
#define SDW__ATTN_AVX512_MAX_D 1024
void sdw__attention_avx512_bias(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                                const float *v, int64_t v_stride, int B, int64_t Lq, int64_t Lk,
                                int H, int D, float scale, bool causal, const float *rel_bias,
                                float *out);
/* The same kernel with bf16 products (q, k, the probabilities and v rounded to bf16 for
 * vdpbf16ps; f32 scores, softmax and sums): call only where the CPU has AVX512-BF16
 * (SDW_ISA_AVX512_BF16), D even, D <= SDW__ATTN_AVX512_MAX_D and scale > 0. */
void sdw__attention_avx512bf16_bias(const float *q, int64_t q_stride, const float *k,
                                    int64_t k_stride, const float *v, int64_t v_stride, int B,
                                    int64_t Lq, int64_t Lk, int H, int D, float scale, bool causal,
                                    const float *rel_bias, float *out);
/* AVX2 + FMA (attention_avx2.c): call only where the CPU has them (core/cpu.h: SDW_ISA_AVX2),
 * D <= SDW__ATTN_AVX512_MAX_D and scale > 0. */
void sdw__attention_avx2_bias(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                              const float *v, int64_t v_stride, int B, int64_t Lq, int64_t Lk,
                              int H, int D, float scale, bool causal, const float *rel_bias,
                              float *out);
/* The same without a bias (sdw_attention's contract). */
static inline void sdw__attention_generic(const float *q, int64_t q_stride, const float *k,
                                          int64_t k_stride, const float *v, int64_t v_stride, int B,
                                          int64_t Lq, int64_t Lk, int H, int D, float scale,
                                          bool causal, float *out) {
    sdw__attention_generic_bias(q, q_stride, k, k_stride, v, v_stride, B, Lq, Lk, H, D, scale,
                                causal, NULL, out);
}
static inline void sdw__attention_avx512(const float *q, int64_t q_stride, const float *k,
                                         int64_t k_stride, const float *v, int64_t v_stride, int B,
                                         int64_t Lq, int64_t Lk, int H, int D, float scale,
                                         bool causal, float *out) {
    sdw__attention_avx512_bias(q, q_stride, k, k_stride, v, v_stride, B, Lq, Lk, H, D, scale,
                               causal, NULL, out);
}
static inline void sdw__attention_avx512bf16(const float *q, int64_t q_stride, const float *k,
                                             int64_t k_stride, const float *v, int64_t v_stride,
                                             int B, int64_t Lq, int64_t Lk, int H, int D,
                                             float scale, bool causal, float *out) {
    sdw__attention_avx512bf16_bias(q, q_stride, k, k_stride, v, v_stride, B, Lq, Lk, H, D, scale,
                                   causal, NULL, out);
}

#endif
