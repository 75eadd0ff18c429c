/* sampling/np_math.c — numpy float32 math that the reference computations ran through. */
#include "sampling/np_math.h"

#include <math.h>
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
