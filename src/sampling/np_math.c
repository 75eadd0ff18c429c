/* sampling/np_math.c — numpy float32 math that the reference computations ran through. */
#include "sampling/np_math.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

/* Plain a*b+c must round twice here; only the fmaf() calls are fused, as in numpy's source. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static float f32_from_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* numpy's float32 SIMD log (simd_log_FLOAT, loops_exponent_log.dispatch.c.src, AVX2/AVX512F):
 * mantissa in [sqrt(1/2), sqrt(2)), rational minimax P5/Q5, + k*ln2; max error 3.83 ulp. */
float sdw__numpy_logf(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b); /* x is a positive normal number here */
    float e = (float)((int32_t)(b >> 23) - 126);
    float m = f32_from_bits((b & 0x7fffffu) | (126u << 23)); /* [0.5, 1) */
    if (m <= 0.707106781186547524400844362104849039f) {
        m = m + m;
        e = e - 1.0f;
    }
    m = m - 1.0f;
    float num = fmaf(2.589979117907922693523e-02f, m, 3.808837741388407920751e-01f);
    num = fmaf(num, m, 1.480000633576506585156e+00f);
    num = fmaf(num, m, 2.112677543073053063722e+00f);
    num = fmaf(num, m, 9.999999999999998702752e-01f);
    num = fmaf(num, m, 0.0f);
    float den = fmaf(5.875095403124574342950e-03f, m, 1.546476374983906719538e-01f);
    den = fmaf(den, m, 9.864942958519418960339e-01f);
    den = fmaf(den, m, 2.453006071784736363091e+00f);
    den = fmaf(den, m, 2.612677543073109236779e+00f);
    den = fmaf(den, m, 1.0f);
    return fmaf(e, 0.693147182464599609375f, num / den);
}

/* numpy's float32 SIMD sine (simd_sincos_f32, loops_trigonometric.dispatch.c.src) for
 * |x| <= 117435.992: Cody-Waite reduction by pi/2, polynomials on [-pi/4, pi/4]. */
float sdw__numpy_sinf(float x) {
    const float magic = 0x1.800000p+23f; /* (q + magic) - magic rounds to nearest even */
    float q = x * 0x1.45f306p-1f;        /* 2/pi */
    q = (q + magic) - magic;
    float r = fmaf(q, -0x1.921fb0p+00f, x);
    r = fmaf(q, -0x1.5110b4p-22f, r);
    r = fmaf(q, -0x1.846988p-48f, r);
    float r2 = r * r;
    float cs = fmaf(0x1.98e616p-16f, r2, -0x1.6c06dcp-10f);
    cs = fmaf(cs, r2, 0x1.55553cp-05f);
    cs = fmaf(cs, r2, -0x1.000000p-01f);
    cs = fmaf(cs, r2, 1.0f);
    float sn = fmaf(0x1.7d3bbcp-19f, r2, -0x1.a06bbap-13f);
    sn = fmaf(sn, r2, 0x1.11119ap-07f);
    sn = fmaf(sn, r2, -0x1.555556p-03f);
    sn = fmaf(sn, r2, 0.0f);
    sn = fmaf(sn, r, r);
    int32_t quadrant = (int32_t)q; /* q is integral already */
    float v = (quadrant & 1) ? cs : sn;
    return (quadrant & 2) ? 0.0f - v : v;
}

/* ---- torch's float32 log / expm1: Sleef 3.5 (xlogf_u1, xexpm1f) with FMA ----
 * Sleef computes in "double-float" pairs (hi, lo): each helper below is one of its df.h
 * operations in the ENABLE_FMA_SP form the AVX2/AVX-512 builds use, operation for operation. */

typedef struct df2 {
    float x, y;
} df2;

static float f32_bits_add_exp(float d, int32_t e) { /* vldexp3: add e to the exponent field */
    uint32_t b;
    memcpy(&b, &d, sizeof b);
    b += (uint32_t)e << 23;
    return f32_from_bits(b);
}

static float pow2i(int32_t q) {
    return f32_from_bits((uint32_t)(q + 0x7f) << 23);
}

static float ldexp2k(float d, int32_t e) { /* vldexp2: two half-exponent scalings */
    return (d * pow2i(e >> 1)) * pow2i(e - (e >> 1));
}

static df2 df_add2_ff(float x, float y) {
    const float s = x + y, v = s - x;
    return (df2){s, (x - (s - v)) + (y - v)};
}
static df2 df_add2_f2f(df2 x, float y) {
    const float s = x.x + y, v = s - x.x;
    const float t = (x.x - (s - v)) + (y - v);
    return (df2){s, t + x.y};
}
static df2 df_add2_f2f2(df2 x, df2 y) {
    const float s = x.x + y.x, v = s - x.x;
    const float t = (x.x - (s - v)) + (y.x - v);
    return (df2){s, t + (x.y + y.y)};
}
static df2 df_add_f2f(df2 x, float y) { /* |x| >= |y| */
    const float s = x.x + y;
    return (df2){s, ((x.x - s) + y) + x.y};
}
static df2 df_add_ff2(float x, df2 y) {
    const float s = x + y.x;
    return (df2){s, ((x - s) + y.x) + y.y};
}
static df2 df_add_f2f2(df2 x, df2 y) { /* |x| >= |y| */
    const float s = x.x + y.x;
    return (df2){s, (((x.x - s) + y.x) + x.y) + y.y};
}
static df2 df_scale(df2 d, float s) {
    return (df2){d.x * s, d.y * s};
}
static df2 df_mul_f2f(df2 x, float y) {
    const float s = x.x * y;
    return (df2){s, fmaf(x.y, y, fmaf(x.x, y, -s))};
}
static df2 df_mul_f2f2(df2 x, df2 y) {
    const float s = x.x * y.x;
    return (df2){s, fmaf(x.x, y.y, fmaf(x.y, y.x, fmaf(x.x, y.x, -s)))};
}
static df2 df_squ(df2 x) {
    const float s = x.x * x.x;
    return (df2){s, fmaf(x.x + x.x, x.y, fmaf(x.x, x.x, -s))};
}
static df2 df_div(df2 n, df2 d) {
    const float t = 1.0f / d.x, s = n.x * t;
    const float u = fmaf(t, n.x, -s);
    const float v = fmaf(-d.y, t, fmaf(-d.x, t, 1.0f));
    return (df2){s, fmaf(s, v, fmaf(n.y, t, u))};
}

float sdw__torch_logf(float d) {
    if (isnan(d) || d < 0) return NAN;
    if (d == 0) return -INFINITY;
    if (isinf(d)) return INFINITY;
    const bool tiny = d < 0x1p-126f; /* FLT_MIN: scale subnormals by 2^64 first */
    if (tiny) d = d * (0x1p32f * 0x1p32f);
    uint32_t b;
    const float d43 = d * (1.0f / 0.75f);
    memcpy(&b, &d43, sizeof b);
    int32_t e = (int32_t)((b >> 23) & 0xff) - 0x7f; /* vilogb2k */
    const float m = f32_bits_add_exp(d, -e);       /* d / 2^e in [0.75, 1.5) */
    if (tiny) e -= 64;
    df2 s = df_mul_f2f((df2){0.69314718246459960938f, -1.904654323148236017e-09f}, (float)e);
    const df2 x = df_div(df_add2_ff(-1.0f, m), df_add2_ff(1.0f, m));
    const float x2 = x.x * x.x;
    float t = +0.3027294874e+0f;
    t = fmaf(t, x2, +0.3996108174e+0f);
    t = fmaf(t, x2, +0.6666694880e+0f);
    s = df_add_f2f2(s, df_scale(x, 2.0f));
    s = df_add_f2f(s, (x2 * x.x) * t);
    return s.x + s.y;
}

/* Sleef's expk2f: e^(d.x + d.y) as a double-float. */
static df2 expk2f(df2 d) {
    const float R_LN2f = 1.442695040888963407359924681001892137426645954152985934135449406931f;
    const float L2Uf = 0.693145751953125f, L2Lf = 1.428606765330187045e-06f;
    const float u0 = (d.x + d.y) * R_LN2f;
    const int32_t q = (int32_t)nearbyintf(u0); /* cvtps2dq: round to nearest even */
    df2 s = df_add2_f2f(d, (float)q * -L2Uf);
    s = df_add2_f2f(s, (float)q * -L2Lf);
    float u = +0.1980960224e-3f;
    u = fmaf(u, s.x, +0.1394256484e-2f);
    u = fmaf(u, s.x, +0.8333456703e-2f);
    u = fmaf(u, s.x, +0.4166637361e-1f);
    df2 t = df_add2_f2f(df_mul_f2f(s, u), +0.166666659414234244790680580464e+0f);
    t = df_add2_f2f(df_mul_f2f2(s, t), 0.5f);
    t = df_add2_f2f2(s, df_mul_f2f2(df_squ(s), t));
    t = df_add_ff2(1.0f, t);
    t.x = ldexp2k(t.x, q);
    t.y = ldexp2k(t.y, q);
    if (d.x < -104.0f) t = (df2){0.0f, 0.0f};
    return t;
}

float sdw__torch_expm1f(float a) {
    if (isnan(a)) return a;
    if (a > 88.72283172607421875f) return INFINITY;
    if (a < -16.635532333438687426013570f) return -1.0f;
    if (a == 0 && signbit(a)) return -0.0f;
    const df2 d = df_add2_f2f(expk2f((df2){a, 0.0f}), -1.0f);
    return d.x + d.y;
}
