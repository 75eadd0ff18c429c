/* sdw_peak — the machine's measured arithmetic peaks and the speed of our products at the real
 * models' shapes (issue 16: know the floor), for bench/bench.sh and by hand.
 *
 *   sdw_peak                    # peaks, then SD 1.5 UNet / VAE products at 512x512, f32 + bf16
 *   sdw_peak --threads 2 --peaks-only
 *   sdw_peak --quick            # fewer shapes, one timing each (a smoke run)
 *
 * Peaks: a register-resident loop of each multiply instruction the CPU has, on all threads, 16
 * independent accumulators per thread (enough to cover every core's FMA latency x throughput),
 * no memory traffic: vfmadd231ps on zmm (AVX-512) and ymm (AVX2), vdpbf16ps (AVX512-BF16: 2
 * products and 2 sums per lane), tdpbf16ps (AMX-BF16: a 16x16 tile += 16x32 · 32x16). Only the
 * paths of the capped level (core/cpu.h: SDW_MAX_ISA) run. A flop is a multiply or an add (one
 * FMA lane = 2).
 * Products: our CPU backend's packed convolutions and matrix products (oneDNN underneath,
 * weights f16-exact and kept 16-bit in f32 as from an f16 checkpoint), activations f32 in and
 * out as the models run them, the best of 3 timed calls after a first one that makes the
 * primitive, with their fraction of the peak of their precision. The peak lines are
 * machine-readable: "peak <path> <GFLOP/s>", "peak f32 <best f32 path>", "peak bf16 <best bf16
 * path>" (0 when the CPU has none). */
#define _GNU_SOURCE /* syscall */
#include "core/common.h"
#include "core/cpu.h"
#include "nn/nn_impl.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- peaks ---- */

enum { ITERS = 1 << 16 }; /* per timed pass: ~1-10 ms per thread whatever the width */

/* 16 chains of n FMAs each; returns a value depending on all (so nothing is optimised away). */
SDW_TARGET_AVX512 static float fma_zmm(long n) {
    __m512 a[16];
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-6f);
    for (int i = 0; i < 16; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < n; k++)
        _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
    __m512 s = a[0];
    for (int i = 1; i < 16; i++)
        s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

SDW_TARGET_AVX2 static float fma_ymm(long n) {
    __m256 a[12];
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-6f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm256_set1_ps((float)i);
    for (long k = 0; k < n; k++)
        _Pragma("GCC unroll 12") for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], x, y);
    __m256 s = a[0];
    for (int i = 1; i < 12; i++)
        s = _mm256_add_ps(s, a[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}

__attribute__((target("avx512f,avx512bf16"))) static float dpbf16_zmm(long n) {
    __m512 a[16];
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3380);
    for (int i = 0; i < 16; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < n; k++)
        _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);
    __m512 s = a[0];
    for (int i = 1; i < 16; i++)
        s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

/* AMX: the OS hands out the tile state only on request (Linux arch_prctl). */
static bool amx_permitted(void) {
#if defined(__x86_64__) && defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
#else
    return false;
#endif
}

typedef struct tile_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_cfg;

/* 4 accumulator tiles (16x16 f32) fed by 2 A tiles (16x32 bf16) and 2 B tiles (16 rows of
 * 32 bf16 pairs): 4 tdpbf16ps per pass, 16384 flops each. */
__attribute__((target("amx-tile,amx-bf16"))) static float amx_loop(long n) {
    tile_cfg cfg = {.palette = 1};
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    static const uint16_t ones[16 * 32] = {0};
    _tile_loadconfig(&cfg);
    _tile_zero(0); /* tile numbers are immediates */
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, ones, 64);
    _tile_loadd(5, ones, 64);
    _tile_loadd(6, ones, 64);
    _tile_loadd(7, ones, 64);
    for (long k = 0; k < n; k++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    float out[16 * 16];
    _tile_stored(0, out, 64);
    _tile_release();
    return out[0];
}

typedef enum path { P_ZMM, P_YMM, P_BF16, P_AMX } path;

/* Best GFLOP/s of 5 passes of the path's loop on every thread at once. */
static double peak(path p) {
    static const double flops_per_iter[] = {
        [P_ZMM] = 16 * 16 * 2, [P_YMM] = 12 * 8 * 2, [P_BF16] = 16 * 16 * 4, [P_AMX] = 4 * 16384};
    const long n = p == P_AMX ? ITERS / 16 : ITERS;
    double best = 0;
    volatile float sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        int threads = 1;
        double t0 = 0, t1 = 0;
#pragma omp parallel
        {
#pragma omp single
            threads = omp_get_num_threads();
#pragma omp barrier
#pragma omp master
            t0 = sdw_time_now();
            float v = 0;
            switch (p) {
            case P_ZMM:
                v = fma_zmm(n);
                break;
            case P_YMM:
                v = fma_ymm(n);
                break;
            case P_BF16:
                v = dpbf16_zmm(n);
                break;
            case P_AMX:
                v = amx_loop(n);
                break;
            }
#pragma omp atomic
            sink += v;
#pragma omp barrier
#pragma omp master
            t1 = sdw_time_now();
        }
        best = SDW_MAX(best, flops_per_iter[p] * (double)n * threads / (t1 - t0) * 1e-9);
    }
    (void)sink;
    return best;
}

/* ---- products ---- */

typedef struct shape {
    const char *what;
    int k;                /* 3: 3x3 convolution, stride 1, pad 1; 1: linear */
    int in, out, b, h, w; /* linear: rows = b·h·w */
} shape;

/* SD 1.5 at 512x512 with CFG (UNet batch 2; latents 64x64), its VAE decoder (batch 1, 64x64 up
 * to 512x512). */
static const shape k_shapes[] = {
    {"unet conv 64x64", 3, 320, 320, 2, 64, 64},
    {"unet conv 32x32", 3, 640, 640, 2, 32, 32},
    {"unet conv 16x16", 3, 1280, 1280, 2, 16, 16},
    {"unet conv 8x8", 3, 1280, 1280, 2, 8, 8},
    {"unet up conv 16x16", 3, 2560, 1280, 2, 16, 16},
    {"vae conv 64x64", 3, 512, 512, 1, 64, 64},
    {"vae conv 256x256", 3, 256, 256, 1, 256, 256},
    {"vae conv 512x512", 3, 128, 128, 1, 512, 512},
    {"unet attn proj 320", 1, 320, 320, 2, 64, 64},
    {"unet geglu 320", 1, 320, 2560, 2, 64, 64},
    {"unet ff out 1280", 1, 1280, 1280, 2, 16, 16},
    {"unet geglu 640", 1, 640, 5120, 2, 32, 32},
};
static const int k_quick[] = {0, 2, 8, 9};

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* n f16-exact values uniform in ±scale. */
static float *values(size_t n, float scale, uint64_t seed) {
    float *w = sdw_xmalloc(n * sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        w[i] = scale * ((float)(mix(seed + i) >> 40) / (float)(1 << 24) * 2.0f - 1.0f);
    uint16_t *h = sdw_xmalloc(n * sizeof(uint16_t));
    sdw_convert_from_f32(SDW_DTYPE_F16, w, h, n);
    sdw_convert_to_f32(SDW_DTYPE_F16, h, w, n);
    free(h);
    return w;
}

/* GFLOP/s of s in precision p (0 when the backend refuses it), best of reps timed calls. */
static double product(sdw_backend *be, const shape *s, sdw_precision p, int reps) {
    const size_t rows = (size_t)s->b * s->h * s->w, n_w = (size_t)s->in * s->out * s->k * s->k;
    float *w = values(n_w, 1.0f / sqrtf((float)s->in * s->k * s->k), 1);
    sdw_backend_op *op;
    sdw_status st;
    if (s->k == 3) {
        const sdw_conv_geom g = {s->in, s->out, 3, 1, 1, 1};
        st = sdw_backend_conv_create(be, p, w, NULL, &g, &op, NULL);
    } else {
        st = sdw_backend_linear_create(be, p, w, NULL, s->in, s->out, &op, NULL);
    }
    free(w);
    if (st != SDW_OK) return 0;
    float *x = values(rows * s->in, 1.0f, 2), *y = sdw_xcalloc(rows * s->out, sizeof(float));
    double best = INFINITY;
    for (int r = 0; r <= reps; r++) {
        const double t0 = sdw_time_now();
        if (s->k == 3)
            sdw_backend_conv_forward(op, sdw_nhwc(x, s->b, s->h, s->w),
                                     sdw_nhwc(y, s->b, s->h, s->w), 0);
        else
            sdw_backend_linear_forward(op, sdw_rows(x, (int64_t)rows), sdw_rows(y, (int64_t)rows),
                                       0);
        if (r) best = SDW_MIN(best, sdw_time_now() - t0); /* the first call makes the primitive */
    }
    sdw_backend_op_destroy(op);
    free(x);
    free(y);
    return 2.0 * (double)rows * (double)n_w / best * 1e-9;
}

static void usage(void) {
    fprintf(stderr, "usage: sdw_peak [--threads N] [--peaks-only] [--quick]\n");
    exit(2);
}

int main(int argc, char **argv) {
    bool peaks_only = false, quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            const int n = atoi(argv[++i]);
            if (n < 1) usage();
            omp_set_num_threads(n);
        } else if (strcmp(argv[i], "--peaks-only") == 0) {
            peaks_only = true;
        } else if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else {
            usage();
        }
    }
    const sdw_isa isa = sdw_cpu_isa();
    printf("cpu: %s\n", sdw_cpu_name());
    printf("cpu flags: %s\n", sdw_cpu_flags());
    printf("isa: %s (hardware %s), oneDNN %s, %d threads\n", sdw_isa_str(isa),
           sdw_isa_str(sdw_cpu_isa_hw()), sdw__onednn_version(), omp_get_max_threads());
    double best_f32 = 0, best_bf16 = 0;
    if (isa >= SDW_ISA_AVX512) {
        best_f32 = peak(P_ZMM);
        printf("peak f32-fma-avx512 %.1f\n", best_f32);
    }
    if (isa >= SDW_ISA_AVX2) {
        const double g = peak(P_YMM);
        best_f32 = SDW_MAX(best_f32, g);
        printf("peak f32-fma-avx2 %.1f\n", g);
    }
    if (isa >= SDW_ISA_AVX512_BF16) {
        best_bf16 = peak(P_BF16);
        printf("peak bf16-vdpbf16ps %.1f\n", best_bf16);
    }
    if (isa >= SDW_ISA_AMX) {
        if (amx_permitted()) {
            const double g = peak(P_AMX);
            best_bf16 = SDW_MAX(best_bf16, g);
            printf("peak bf16-amx %.1f\n", g);
        } else {
            printf("peak bf16-amx unavailable (the OS refused the tile state)\n");
        }
    }
    printf("peak f32 %.1f\npeak bf16 %.1f\n", best_f32, best_bf16);
    if (peaks_only) return 0;

    sdw_backend *be;
    sdw_error err = {0};
    if (sdw_backend_cpu_create(NULL, &be, &err) != SDW_OK) {
        fprintf(stderr, "sdw_peak: %s\n", err.msg);
        return 1;
    }
    const bool bf16 = sdw_nn_cpu_has_bf16();
    printf("\n%-22s %-22s %10s %10s %7s %7s\n", "product (GFLOP/s)", "shape", "f32", "bf16",
           "%f32pk", "%bf16pk");
    const int n = quick ? (int)SDW_ARRAY_LEN(k_quick) : (int)SDW_ARRAY_LEN(k_shapes);
    for (int i = 0; i < n; i++) {
        const shape *s = &k_shapes[quick ? k_quick[i] : i];
        const double g32 = product(be, s, SDW_PRECISION_F32, quick ? 1 : 3);
        const double g16 = bf16 ? product(be, s, SDW_PRECISION_BF16, quick ? 1 : 3) : 0;
        char dims[64];
        snprintf(dims, sizeof dims, "%s %dx%d %dx%dx%d", s->k == 3 ? "3x3" : "lin", s->in, s->out,
                 s->b, s->h, s->w);
        printf("%-22s %-22s %10.1f %10.1f %6.0f%% %6.0f%%\n", s->what, dims, g32, g16,
               best_f32 > 0 ? 100 * g32 / best_f32 : 0, best_bf16 > 0 ? 100 * g16 / best_bf16 : 0);
    }
    sdw_backend_destroy(be);
    return 0;
}
