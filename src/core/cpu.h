/* core/cpu.h — what this x86 CPU can do, as our own kernels see it: the vector ISA level they
 * dispatch on (read once from CPUID and XGETBV, capped by SDW_MAX_ISA), the CPU's name and a
 * short flags string (for logs and cache keys).
 *
 *   switch (sdw_cpu_isa()) {               // the level kernels may use
 *   case SDW_ISA_AVX512: ...               // AVX-512 F/BW/VL/DQ
 *   case SDW_ISA_AVX2: ...                 // AVX2 + FMA + F16C
 *   default: ...                           // baseline x86-64 (SSE2)
 *   }
 *
 * SDW_MAX_ISA (environment, read once per process) caps the level, so a machine with AVX-512
 * runs the code an AVX2-only desktop would: baseline | avx2 | avx512 | avx512_bf16 | amx
 * (unknown values are ignored with a warning). oneDNN's own ONEDNN_MAX_CPU_ISA (or
 * DNNL_MAX_CPU_ISA: SSE41, AVX2, AVX512_CORE, AVX512_CORE_BF16, ...) caps it too, and the CPU
 * backend caps oneDNN to the resulting level (nn/backend_cpu.h): either variable makes every
 * kernel, ours and oneDNN's, run as on a CPU of that level.
 *
 * SDW_VEC_KERNEL defines a kernel once and compiles it three times (AVX-512, AVX2+FMA+F16C,
 * baseline), with a dispatcher that picks by sdw_cpu_isa(): unlike GCC's target_clones, whose
 * choice is the hardware's alone, this one obeys SDW_MAX_ISA, so the AVX2 code paths run (and
 * are tested) on AVX-512 machines too.
 *
 * Thread safety: every function is safe from any thread (the facts are read once).
 */
#ifndef SDW_CORE_CPU_H
#define SDW_CORE_CPU_H

#include <stdbool.h>

/* Vector ISA levels, each a superset of the one before. */
typedef enum sdw_isa {
    SDW_ISA_BASELINE,    /* x86-64 (SSE2) */
    SDW_ISA_AVX2,        /* AVX2 + FMA + F16C */
    SDW_ISA_AVX512,      /* AVX-512 F + BW + VL + DQ (Skylake-SP, Zen 4) */
    SDW_ISA_AVX512_BF16, /* + AVX512_BF16 (Cooper Lake, Zen 4, Sapphire Rapids) */
    SDW_ISA_AMX,         /* + AMX-BF16 tiles usable (the OS granted them) */
} sdw_isa;

/* The level our kernels may use: the CPU's (OS support of the register state included), capped
 * by SDW_MAX_ISA. */
sdw_isa sdw_cpu_isa(void);
/* The CPU's own level, before the SDW_MAX_ISA cap. */
sdw_isa sdw_cpu_isa_hw(void);
/* "baseline", "avx2", "avx512", "avx512_bf16", "amx". */
const char *sdw_isa_str(sdw_isa isa);
/* Parses one of those names (case-insensitive); false (out untouched) otherwise. */
bool sdw_isa_parse(const char *s, sdw_isa *out);
/* The CPUID brand string ("AMD EPYC 9R14 96-Core Processor"), trimmed; static storage. */
const char *sdw_cpu_name(void);
/* The flags that decide our speed paths, as a space-separated string of /proc/cpuinfo's names
 * ("avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512_bf16"); static storage. */
const char *sdw_cpu_flags(void);

/* ---- kernels compiled per level (see above) ----
 * SDW_VEC_KERNEL(name, (params), (args)) defines `static void name(params)` calling one of three
 * compilations of `name##_body(args)`, a static inline function the caller defined before; the
 * body's loops are vectorised for each target (the compiler inlines the body into each). */
#define SDW_TARGET_AVX512                                                                          \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define SDW_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SDW_VEC_KERNEL(name, params, args)                                                         \
    SDW_TARGET_AVX512 static void name##_avx512 params {                                           \
        name##_body args;                                                                          \
    }                                                                                              \
    SDW_TARGET_AVX2 static void name##_avx2 params {                                               \
        name##_body args;                                                                          \
    }                                                                                              \
    static void name##_base params {                                                               \
        name##_body args;                                                                          \
    }                                                                                              \
    static void name params {                                                                      \
        const sdw_isa isa_ = sdw_cpu_isa();                                                        \
        if (isa_ >= SDW_ISA_AVX512)                                                                \
            name##_avx512 args;                                                                    \
        else if (isa_ == SDW_ISA_AVX2)                                                             \
            name##_avx2 args;                                                                      \
        else                                                                                       \
            name##_base args;                                                                      \
    }
/* The body's attributes: always inlined into the three compilations. */
#define SDW_VEC_BODY static inline __attribute__((always_inline))

#endif
