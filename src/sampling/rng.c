/* sampling/rng.c — torch CPU randn (mt19937) and torch CUDA randn as Philox4x32-10.
 * Every formula below mirrors a specific reference routine, named in its comment; the order and
 * precision of each operation matter because the goal is bit-identical float32 output. */
#include "sampling/rng.h"

#include "core/common.h"
#include "sampling/np_math.h"

#include <errno.h>
#include <math.h>
#include <string.h>

/* Bit-exactness needs every a*b+c below to round twice unless written as fmaf(): forbid the
 * compiler from fusing on its own (it would on FMA-capable -march settings). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

const char *sdw_rng_kind_str(sdw_rng_kind kind) {
    switch (kind) {
    case SDW_RNG_TORCH:
        return "torch";
    case SDW_RNG_PHILOX:
        return "philox";
    }
    return "?";
}

sdw_status sdw_rng_kind_parse(const char *name, sdw_rng_kind *out, sdw_error *err) {
    if (strcmp(name, "torch") == 0) {
        *out = SDW_RNG_TORCH;
        return SDW_OK;
    }
    if (strcmp(name, "philox") == 0) {
        *out = SDW_RNG_PHILOX;
        return SDW_OK;
    }
    return sdw_error_set(err, SDW_E_INVALID_ARG, "rng '%s' must be torch or philox", name);
}

/* ---- mt19937, seeded like at::mt19937 (aten/src/ATen/core/MT19937RNGEngine.h) ---- */

static void mt_seed(sdw_rng *r, uint32_t seed) {
    r->mt[0] = seed;
    for (int j = 1; j < SDW_MT19937_N; j++)
        r->mt[j] = 1812433253u * (r->mt[j - 1] ^ (r->mt[j - 1] >> 30)) + (uint32_t)j;
    r->mt_index = SDW_MT19937_N; /* twist before the first output */
}

static void mt_twist(sdw_rng *r) {
    enum { N = SDW_MT19937_N, M = 397 };
    for (int i = 0; i < N; i++) {
        uint32_t y = (r->mt[i] & 0x80000000u) | (r->mt[(i + 1) % N] & 0x7fffffffu);
        r->mt[i] = r->mt[(i + M) % N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
    }
    r->mt_index = 0;
}

static uint32_t mt_next(sdw_rng *r) {
    if (r->mt_index >= SDW_MT19937_N) mt_twist(r);
    uint32_t y = r->mt[r->mt_index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* at::uniform_real_distribution<float>(0, 1): 24 random bits scaled by 2^-24, in float. */
static float torch_uniform_f32(sdw_rng *r) {
    return (float)(mt_next(r) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* at::uniform_real_distribution<double>(0, 1) on CPUGeneratorImpl::random64(): the first
 * 32-bit draw is the high word; 53 bits scaled by 2^-53. */
static double torch_uniform_f64(sdw_rng *r) {
    uint64_t hi = mt_next(r), lo = mt_next(r);
    uint64_t v = (hi << 32) | lo;
    return (double)(v & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* at::normal_distribution<double>(0, 1): Box-Muller in double; the sine half is cached in the
 * generator and returned by the next scalar call. Used by torch for tensors of < 16 elements. */
static double torch_normal_f64(sdw_rng *r) {
    if (r->has_cached_normal) {
        r->has_cached_normal = false;
        return r->cached_normal;
    }
    double u1 = torch_uniform_f64(r);
    double u2 = torch_uniform_f64(r);
    double radius = sqrt(-2.0 * log(1.0 - u2));
    double theta = 2.0 * M_PI * u1;
    r->cached_normal = radius * sin(theta);
    r->has_cached_normal = true;
    return radius * cos(theta);
}

/* ---- torch's AVX2 Box-Muller (normal_fill_16_AVX2, aten/src/ATen/native/cpu/
 * DistributionTemplates.h) with log256_ps / sincos256_ps from aten's avx_mathfun.h (Cephes
 * polynomials). The reference build (GCC, -mavx2 -mfma, -ffp-contract=fast) fuses a multiply
 * into the following add/sub when that is its only use, scanning statements forward; the
 * fmaf() calls below are exactly those fusions, every other operation rounds on its own.
 * With this, all 41565 reference draws in fixtures/rng/randn.json match bit for bit (the
 * unfused source or glibc's logf/cosf/sinf differ by 1-2 ulp on ~1% of values). ---- */

static float f32_from_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}
static uint32_t f32_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* log256_ps for x in (0, 1]: Cephes logf on the mantissa in [sqrt(1/2), sqrt(2)). */
static float avx_mathfun_log(float x) {
    static const float p[9] = {7.0376836292E-2f,  -1.1514610310E-1f, 1.1676998740E-1f,
                               -1.2420140846E-1f, +1.4249322787E-1f, -1.6668057665E-1f,
                               +2.0000714765E-1f, -2.4999993993E-1f, +3.3333331174E-1f};
    int32_t exponent = (int32_t)(f32_bits(x) >> 23) - 0x7f;
    x = f32_from_bits((f32_bits(x) & ~0x7f800000u) | f32_bits(0.5f)); /* mantissa in [0.5,1) */
    float e = (float)exponent + 1.0f;
    bool below = x < 0.707106781186547524f; /* cephes_SQRTHF */
    float tmp = below ? x : 0.0f;
    x = x - 1.0f;
    e = e - (below ? 1.0f : 0.0f);
    x = x + tmp;
    float z = x * x;
    float y = p[0];
    for (int i = 1; i < 9; i++)
        y = fmaf(y, x, p[i]);
    y = y * x;
    y = fmaf(y, z, e * -2.12194440e-4f); /* y*z + e*q1: the first multiply is the fused one */
    y = y - z * 0.5f;                    /* z*0.5 is exact, fused or not */
    x = x + y;
    return fmaf(e, 0.693359375f, x); /* + e*q2 */
}

/* sincos256_ps: Cody-Waite reduction by pi/4 (three-part constant), then the Cephes sine and
 * cosine polynomials, selected and signed by octant. */
static void avx_mathfun_sincos(float x, float *s, float *c) {
    uint32_t sign_sin = f32_bits(x) & 0x80000000u;
    x = fabsf(x);
    float y = x * 1.27323954473516f; /* 4/pi */
    int32_t j = (int32_t)y;          /* cvttps: truncation */
    j = (j + 1) & ~1;
    y = (float)j;
    uint32_t swap_sign_sin = (uint32_t)(j & 4) << 29;
    bool poly_sin = (j & 2) == 0;
    x = fmaf(y, -0.78515625f, x);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    uint32_t sign_cos = (uint32_t)(~(j - 2) & 4) << 29;
    sign_sin ^= swap_sign_sin;
    float z = x * x;
    float yc = fmaf(2.443315711809948E-005f, z, -1.388731625493765E-003f);
    yc = fmaf(yc, z, 4.166664568298827E-002f);
    yc = yc * z;
    yc = fmaf(yc, z, -(z * 0.5f));
    yc = yc + 1.0f;
    float ys = fmaf(-1.9515295891E-4f, z, 8.3321608736E-3f);
    ys = fmaf(ys, z, -1.6666654611E-1f);
    ys = ys * z;
    ys = fmaf(ys, x, x);
    float rs = poly_sin ? ys : yc, rc = poly_sin ? yc : ys;
    *s = f32_from_bits(f32_bits(rs) ^ sign_sin);
    *c = f32_from_bits(f32_bits(rc) ^ sign_cos);
}

/* normal_fill_16_AVX2: data[0..16) holds uniforms; pairs (j, j+8) become (r cos, r sin). */
static void torch_normal_fill_16(float *data) {
    const float two_pi = (float)(2.0f * M_PI);
    for (int j = 0; j < 8; j++) {
        const float u1 = 1.0f - data[j]; /* [0,1) -> (0,1] for log */
        const float u2 = data[j + 8];
        const float radius = sqrtf(-2.0f * avx_mathfun_log(u1));
        float sin_t, cos_t;
        avx_mathfun_sincos(two_pi * u2, &sin_t, &cos_t);
        data[j] = radius * cos_t; /* fmadd(n, std = 1, mean = 0) is exact */
        data[j + 8] = radius * sin_t;
    }
}

/* normal_fill: all uniforms first, Box-Muller per block of 16, and when n is not a multiple of
 * 16 the last 16 outputs are recomputed from 16 fresh uniforms (overlapping the previous block). */
static void torch_randn_vectorised(sdw_rng *r, float *out, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = torch_uniform_f32(r);
    for (size_t i = 0; i + 16 <= n; i += 16)
        torch_normal_fill_16(out + i);
    if (n % 16 != 0) {
        float *tail = out + n - 16;
        for (int i = 0; i < 16; i++)
            tail[i] = torch_uniform_f32(r);
        torch_normal_fill_16(tail);
    }
}

static void torch_randn(sdw_rng *r, float *out, size_t n) {
    if (n >= 16) {
        torch_randn_vectorised(r, out, n);
    } else {
        for (size_t i = 0; i < n; i++)
            out[i] = (float)torch_normal_f64(r);
    }
}

/* ---- Philox4x32-10 + Box-Muller: torch's CUDA randn as AUTOMATIC1111's modules/rng_philox.py
 * reproduces it (same counter/key layout and constants) ---- */

typedef struct philox_ctr {
    uint32_t c[4];
} philox_ctr;

static philox_ctr philox4x32_10(philox_ctr ctr, uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        uint64_t v1 = (uint64_t)ctr.c[0] * 0xD2511F53u;
        uint64_t v2 = (uint64_t)ctr.c[2] * 0xCD9E8D57u;
        philox_ctr n;
        n.c[0] = (uint32_t)(v2 >> 32) ^ ctr.c[1] ^ k0;
        n.c[1] = (uint32_t)v2;
        n.c[2] = (uint32_t)(v1 >> 32) ^ ctr.c[3] ^ k1;
        n.c[3] = (uint32_t)v1;
        ctr = n;
    }
    return ctr;
}

/* Box-Muller on two 32-bit words, first output only, in float32 as the reference generator
 * evaluated it (numpy float32 arrays, so numpy's SIMD log and sin). With these, all 41565
 * reference values match bit for bit; with glibc's logf/sinf ~20% differ by 1-4 ulp, and
 * AUTOMATIC1111's float64 evaluation differs more. */
static float philox_box_muller(uint32_t x, uint32_t y) {
    const float two_pow32_inv = 2.3283064e-10f;
    const float two_pow32_inv_2pi = (float)(2.3283064e-10 * 6.2831855);
    float u = (float)x * two_pow32_inv + two_pow32_inv / 2;
    float v = (float)y * two_pow32_inv_2pi + two_pow32_inv_2pi / 2;
    float s = sqrtf(-2.0f * sdw__numpy_logf(u));
    return s * sdw__numpy_sinf(v);
}

static void philox_randn(sdw_rng *r, float *out, size_t n) {
    uint32_t k0 = (uint32_t)r->seed, k1 = (uint32_t)(r->seed >> 32);
    /* The reference keeps the element index in one 32-bit word (counter[2]). */
    SDW_ASSERT(n <= UINT32_MAX);
    for (size_t i = 0; i < n; i++) {
        philox_ctr ctr = {{(uint32_t)r->philox_offset, 0, (uint32_t)i, 0}};
        philox_ctr g = philox4x32_10(ctr, k0, k1);
        out[i] = philox_box_muller(g.c[0], g.c[1]);
    }
    r->philox_offset++;
}

/* ---- public ---- */

void sdw_rng_init(sdw_rng *r, sdw_rng_kind kind, uint64_t seed) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->seed = seed;
    /* torch's mt19937 constructor keeps only the low 32 bits of the 64-bit seed */
    if (kind == SDW_RNG_TORCH) mt_seed(r, (uint32_t)seed);
}

void sdw_rng_randn(sdw_rng *r, float *out, size_t n) {
    if (n == 0) return;
    switch (r->kind) {
    case SDW_RNG_TORCH:
        torch_randn(r, out, n);
        return;
    case SDW_RNG_PHILOX:
        philox_randn(r, out, n);
        return;
    }
    SDW_ABORT("sdw_rng_randn: uninitialised rng (kind %d)", (int)r->kind);
}

sdw_status sdw_rng_random_seed(uint64_t *out, sdw_error *err) {
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f) return sdw_error_set(err, SDW_E_IO, "cannot open /dev/urandom: %s", strerror(errno));
    uint32_t v;
    size_t got = fread(&v, sizeof v, 1, f);
    fclose(f);
    if (got != 1) return sdw_error_set(err, SDW_E_IO, "short read from /dev/urandom");
    *out = v;
    return SDW_OK;
}
