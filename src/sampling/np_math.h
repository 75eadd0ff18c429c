/* sampling/np_math.h — library-internal: numpy's and torch's float32 math functions, reproduced
 * bit for bit. Reference computations (fixture generators, diffusers' numpy schedule code and
 * its 0-dim torch tensor scalars) ran float32 values through these; matching them matters where
 * their rounding reaches our output. */
#ifndef SDW_SAMPLING_NP_MATH_H
#define SDW_SAMPLING_NP_MATH_H

#include <stdint.h>

/* np.log on a float32 array (simd_log_FLOAT, AVX2/AVX512F; max error 3.83 ulp) for positive
 * normal x. */
float sdw__numpy_logf(float x);

/* np.sin on a float32 array (simd_sincos_f32 with FMA3; max error 1.49 ulp) for
 * |x| <= 117435.992 (numpy falls back to libm beyond; not needed here). */
float sdw__numpy_sinf(float x);

/* torch.log on a float32 tensor (ATen's vectorised kernel: Sleef_logf8_u10, the FMA build;
 * max error 1.0 ulp). Differs from glibc's logf by an ulp on ~1% of inputs. */
float sdw__torch_logf(float x);

/* torch.expm1 on a float32 tensor (Sleef_expm1f8_u10, the FMA build). */
float sdw__torch_expm1f(float x);

#endif
