/* sampling/np_math.h — library-internal: numpy's float32 SIMD functions, reproduced bit for bit.
 * Reference computations (fixture generators, diffusers' numpy schedule code) ran numpy float32
 * arrays through these; matching them matters where their rounding reaches our output. */
#ifndef SDW_SAMPLING_NP_MATH_H
#define SDW_SAMPLING_NP_MATH_H

#include <stdint.h>

/* np.log on a float32 array (simd_log_FLOAT, AVX2/AVX512F; max error 3.83 ulp) for positive
 * normal x. */
float sdw__numpy_logf(float x);

/* np.sin on a float32 array (simd_sincos_f32 with FMA3; max error 1.49 ulp) for
 * |x| <= 117435.992 (numpy falls back to libm beyond; not needed here). */
float sdw__numpy_sinf(float x);

#endif
