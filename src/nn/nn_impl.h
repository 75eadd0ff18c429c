/* nn/nn_impl.h — helpers shared by the nn/ sources (not a public contract). */
#ifndef SDW_NN_IMPL_H
#define SDW_NN_IMPL_H

#include "nn/nn.h"

#include <oneapi/dnnl/dnnl.h>

/* Row-major C[M,N] = alpha·op(A)·op(B) + beta·C through oneDNN. Inside an OpenMP parallel
 * region oneDNN runs it on the calling thread only, so callers may tile and parallelise
 * around it. A oneDNN failure here means bad dimensions: a programmer error. */
static inline void sdw__sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha,
                              const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                              float *C, int64_t ldc) {
    dnnl_status_t s = dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (s != dnnl_success)
        SDW_ABORT("dnnl_sgemm(%c%c, M=%lld N=%lld K=%lld) failed: %d", ta, tb, (long long)M,
                  (long long)N, (long long)K, (int)s);
}

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

#endif
