/* nn/backend_cpu.h — the CPU backend: oneDNN convolutions and matrix products with weights
 * packed once (library-internal; used through nn/backend.h).
 *
 *   sdw_backend *be;
 *   if (sdw_backend_cpu_create(NULL, &be, &err)) goto fail;     // defaults
 *   ... sdw_backend_linear_create(be, ...) ...
 *   sdw_backend_destroy(be);                                    // after its ops
 *
 * At creation an op's weights are reordered into the layout oneDNN's kernels want
 * (format_tag::any of a nominal shape; blocked) in the op's precision (f32, or bf16 rounded to
 * nearest even); no other copy is kept. Packed weights that are all exactly fp8 values
 * (F8_E4M3, else F8_E5M2: an fp8 checkpoint) are kept in 8 bits, in both precisions; f32 weights
 * that are all exactly f16 (or bf16) values in that 16-bit type. Either way they are widened to
 * the op's type for each call (same numbers as the uncompressed op), into a buffer the backend
 * keeps for the next call (one per call widening at the same time, sized for the largest layer
 * it held; freed with the backend). Primitives are created on first use of each (shape, source
 * type, output type, accumulate) of an op and cached in the backend until the op is destroyed.
 * Ops are read-only once packed: what changes while models run (engine, primitive caches,
 * widening buffers, the compaction setting) is the backend instance's, not the process's.
 * Activations are NHWC / row-major views; outputs f32 (a bf16 convolution may also write bf16);
 * bias f32. Thread safety as backend.h (caches and buffers are locked; primitives and packed
 * weights are read-only once made).
 */
#ifndef SDW_NN_BACKEND_CPU_H
#define SDW_NN_BACKEND_CPU_H

#include "nn/backend.h"

typedef struct sdw_backend_cpu_params {
    /* Keep every op's packed weights in its own type, never in fewer bits (default false: f32
     * layers holding only f16/bf16 values, and layers holding only fp8 values, are kept
     * compact; same results either way, tests compare both). */
    bool full_weights;
} sdw_backend_cpu_params;
sdw_backend_cpu_params sdw_backend_cpu_params_default(void);

/* Makes a new CPU backend (free with sdw_backend_destroy, after its ops); params NULL means
 * the defaults. SDW_E_BACKEND when oneDNN cannot make its CPU engine; *out untouched then. */
sdw_status sdw_backend_cpu_create(const sdw_backend_cpu_params *params, sdw_backend **out,
                                  sdw_error *err);

/* ---- what this CPU can do (process-wide facts, read once) ---- */
/* The precision to run in: `want` with AUTO resolved (BF16 where the CPU has Intel AMX, else
 * F32: on CPUs with only AVX512-BF16, bf16 dot products run at half the f32 FMA rate, so
 * bf16 would be slower there), and BF16 downgraded to F32 with a warning where the CPU has no
 * native bf16 arithmetic (oneDNN would emulate it slowly, or refuse). Never fails. */
sdw_precision sdw_nn_precision_resolve(sdw_precision want);
/* CPU capabilities as oneDNN sees them. */
bool sdw_nn_cpu_has_bf16(void); /* AVX512-BF16 or AMX-BF16 */
bool sdw_nn_cpu_has_amx(void);  /* AMX-BF16 usable (also needs OS permission) */

/* Row-major C[M,N] = alpha·op(A)·op(B) + beta·C on the CPU (oneDNN's sgemm), for hand-built
 * layers and the attention kernels. Inside an OpenMP parallel region it runs on the calling
 * thread only, so callers may tile and parallelise around it. A failure means bad dimensions:
 * a programmer error (abort). */
void sdw__sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

#endif
