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

#endif
