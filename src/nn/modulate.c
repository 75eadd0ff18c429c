/* nn/modulate.c — the gated residual of adaLN-Zero blocks (DiT, SD3's MMDiT, FLUX):
 * y += gate ⊙ x, the gate one vector per batch element, broadcast over its tokens. */
#include "nn/nn_impl.h"
#include "nn/profile.h"

#define VEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

VEC_CLONES static void gated_row(float *y, const float *x, const float *gate, int C) {
    for (int c = 0; c < C; c++)
        y[c] += gate[c] * x[c];
}

void sdw_add_gated(float *y, const float *x, const float *gate, int64_t M, int C) {
    const double prof_t0 = sdw__prof_begin();
    SDW_ASSERT(y && x && gate && C > 0 && M >= 0);
#pragma omp parallel for schedule(static) if (M * C > 32768)
    for (int64_t i = 0; i < M; i++)
        gated_row(y + (size_t)i * C, x + (size_t)i * C, gate, C);
    sdw__prof_end(SDW_OP_ELTWISE, prof_t0, 0);
}
