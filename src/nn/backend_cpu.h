/* nn/backend_cpu.h — the CPU backend: oneDNN convolutions and matrix products with weights
 * packed once (library-internal; used through nn/backend.h).
 *
 *   sdw_backend *be;
 *   if (sdw_backend_cpu_create(NULL, &be, &err)) goto fail;     // defaults
 *   ... sdw_backend_linear_create(be, ...) ...
 *   sdw_backend_destroy(be);                                    // after its ops
 *
 * At creation an op's weights are packed into the layout oneDNN's kernels want
 * (format_tag::any of a nominal shape; blocked) in the op's precision (f32, or bf16 rounded to
 * nearest even), straight from the values as the checkpoint stores them (typed creates of
 * nn/backend.h: one threaded pass, no f32 copy); no other copy is kept. Packed weights that are all
 * exactly fp8 values (F8_E4M3, else F8_E5M2: an fp8 checkpoint) are kept in 8 bits, in both
 * precisions; f32 weights that are all exactly f16 (or bf16) values in that 16-bit type. Either way
 * they are widened to the op's type for each call (same numbers as the uncompressed op), into a
 * buffer the backend keeps for the next call (one per call widening at the same time, sized for the
 * largest layer it held; freed with the backend). Primitives are created on first use of each
 * (shape, source type, output type, accumulate) of an op and cached in the backend until the op is
 * destroyed. Ops are read-only once packed: what changes while models run (engine, primitive
 * caches, widening buffers, the compaction setting) is the backend instance's, not the process's.
 * Activations are NHWC / row-major views; outputs f32 (a bf16 convolution may also write bf16);
 * bias f32. Thread safety as backend.h (caches and buffers are locked; primitives and packed
 * weights are read-only once made).
 */
#ifndef SDW_NN_BACKEND_CPU_H
#define SDW_NN_BACKEND_CPU_H

#include "io/safetensors.h"
#include "nn/backend.h"

typedef struct sdw_backend_cpu_params {
    /* Keep every op's packed weights in its own type, never in fewer bits (default false: f32
     * layers holding only f16/bf16 values, and layers holding only fp8 values, are kept
     * compact; same results either way, tests compare both). */
    bool full_weights;
    /* Pack weights through oneDNN's reorder of an f32 copy, as before issue 16, instead of
     * straight from the checkpoint's values (default false; a testing aid: both must give the
     * same packed bits). */
    bool onednn_reorder;
} sdw_backend_cpu_params;
sdw_backend_cpu_params sdw_backend_cpu_params_default(void);

/* Makes a new CPU backend (free with sdw_backend_destroy, after its ops); params NULL means
 * the defaults. SDW_E_BACKEND when oneDNN cannot make its CPU engine; *out untouched then. */
sdw_status sdw_backend_cpu_create(const sdw_backend_cpu_params *params, sdw_backend **out,
                                  sdw_error *err);

/* ---- what this CPU can do (process-wide facts, read once) ----
 * oneDNN is capped to our own kernels' ISA level (core/cpu.h: SDW_MAX_ISA, or oneDNN's own
 * ONEDNN_MAX_CPU_ISA) before its first use, so the whole program runs as on a CPU of that
 * level: SDW_MAX_ISA=avx2 on an AVX-512 machine runs f32 only (no bf16 arithmetic below
 * AVX512-BF16). */
/* CPU capabilities as oneDNN sees them (after the cap). */
bool sdw_nn_cpu_has_bf16(void); /* AVX512-BF16 or AMX-BF16 */
bool sdw_nn_cpu_has_amx(void);  /* AMX-BF16 usable (also needs OS permission) */
/* oneDNN's version, "2.6.3" (static storage). */
const char *sdw__onednn_version(void);

/* ---- the precision to run in ----
 * F32 stays F32. BF16 is BF16 where the CPU has native bf16 arithmetic, else F32 with a
 * warning (oneDNN would emulate it slowly, or refuse). AUTO is decided by measurement on the
 * machine at hand (nn/backend_cpu_auto.c): the model's dominant products (its shape class) are
 * timed in f32 and in bf16, a few ms each, at the model's thread count; bf16 is chosen when
 * the model's products, weighted by their share, run at least 1.05x faster in it (bf16 costs
 * accuracy, so a tie keeps the exact path). Both rates and the choice are logged (info). The
 * decision is remembered per (CPU name, CPU flags, ISA cap, oneDNN version, threads, shape
 * class) in the user's cache folder (core/cache.h: precision.txt), so later loads decide at
 * once; a cache that cannot be read or written only costs the measurement. Models whose
 * largest product has fewer than 262144 multiply-adds per row (the tests' tiny models) run f32
 * unmeasured: they are bound by memory and overheads, bf16 would only cost accuracy. Without a
 * shape class (NULL or empty), AUTO keeps the rule measured on Intel machines: BF16 with AMX,
 * else F32. Never fails. */
#define SDW_SHAPE_CLASS_MAX 4
/* A model's dominant products: the largest groups of same-shaped layers by weight count. */
typedef struct sdw_shape_class {
    int n;
    struct sdw_shape_probe {
        int k;        /* 3: a 3x3 stride-1 convolution; 1: a linear layer (or 1x1 convolution) */
        int in, out;  /* channels / features */
        double share; /* the group's part of the class's weights (the shares add up to 1) */
    } p[SDW_SHAPE_CLASS_MAX];
} sdw_shape_class;
/* The class of the model stored in files[0 .. n) (all its components' files; NULL entries are
 * skipped): every 3x3 kernel [out, in, 3, 3] and 2-D weight [out, in] (embedding tables
 * excepted) grouped by shape, the SDW_SHAPE_CLASS_MAX groups with the most weights kept.
 * Reads only the headers. */
void sdw_shape_class_of_files(const sdw_st_file *const *files, int n, sdw_shape_class *out);
/* want resolved as above; cls: the model's class (NULL: unknown); n_threads: the threads the
 * model runs with (0: OpenMP's current default). */
sdw_precision sdw_nn_precision_resolve_model(sdw_precision want, const sdw_shape_class *cls,
                                             int n_threads);
/* sdw_nn_precision_resolve_model(want, NULL, 0). */
sdw_precision sdw_nn_precision_resolve(sdw_precision want);
/* AUTO's decision from measured rates (GFLOP/s of each of cls's products in f32 and bf16; a
 * rate <= 0 is a failed timing, left out): *rate_f32 and *rate_bf16 get the model's weighted
 * rates. Exposed for tests. */
sdw_precision sdw__precision_decide(const sdw_shape_class *cls, const double *gflops_f32,
                                    const double *gflops_bf16, double *rate_f32, double *rate_bf16);

/* Row-major C[M,N] = alpha·op(A)·op(B) + beta·C on the CPU (oneDNN's sgemm), for hand-built
 * layers and the attention kernels. Inside an OpenMP parallel region it runs on the calling
 * thread only, so callers may tile and parallelise around it. A failure means bad dimensions:
 * a programmer error (abort). */
void sdw__sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

#endif
