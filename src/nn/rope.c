/* nn/rope.c — rotary position embedding as FLUX uses it (diffusers 0.30.3 EmbedND / rope() /
 * apply_rope), for any number of position axes.
 *
 * The angle table is computed once per forward (positions do not change between blocks) and
 * applied to q and k of every block. rope() evaluates everything in float64 — the frequencies
 * 1 / theta^(2i/d), the angles pos·freq and their cos/sin — and casts the result to float32;
 * apply_rope then rotates each pair (x[2i], x[2i+1]) in float32 as cos·x0 − sin·x1,
 * sin·x0 + cos·x1. Both are reproduced here in the same precisions. */
#include "nn/nn_impl.h"
#include "nn/profile.h"

#include <math.h>

void sdw_rope_table(const float *pos, int64_t n, int n_axes, const int *axes_dim, double theta,
                    float *cos_out, float *sin_out) {
    SDW_ASSERT(pos && axes_dim && cos_out && sin_out && n >= 0 && n_axes > 0 && theta > 0);
    int half = 0;
    for (int a = 0; a < n_axes; a++) {
        SDW_ASSERT(axes_dim[a] > 0 && axes_dim[a] % 2 == 0);
        half += axes_dim[a] / 2;
    }
#pragma omp parallel for schedule(static) if (n * half > 32768)
    for (int64_t p = 0; p < n; p++) {
        float *c = cos_out + p * half, *s = sin_out + p * half;
        int j = 0;
        for (int a = 0; a < n_axes; a++) {
            const int d = axes_dim[a];
            const double x = pos[p * n_axes + a];
            for (int i = 0; i < d / 2; i++, j++) {
                /* torch.arange(0, d, 2, float64) / d, then 1.0 / theta**scale */
                const double omega = 1.0 / pow(theta, (double)(2 * i) / d);
                const double ang = x * omega;
                c[j] = (float)cos(ang);
                s[j] = (float)sin(ang);
            }
        }
    }
}

/* One head of D values: pairs (x[2i], x[2i+1]) rotated by angle table row (c, s) [D/2]. */
static inline void rope_head(float *x, int D, const float *c, const float *s) {
    for (int i = 0; i < D / 2; i++) {
        const float x0 = x[2 * i], x1 = x[2 * i + 1];
        /* apply_rope: freqs[..., 0] * x0 + freqs[..., 1] * x1 with rows (cos, −sin), (sin, cos) */
        x[2 * i] = c[i] * x0 + (-s[i]) * x1;
        x[2 * i + 1] = s[i] * x0 + c[i] * x1;
    }
}

void sdw_rope_apply(float *x, int B, int64_t L, int64_t stride, int H, int D, const float *cos_t,
                    const float *sin_t) {
    const double prof_t0 = sdw__prof_begin();
    SDW_ASSERT(x && cos_t && sin_t && B > 0 && L >= 0 && H > 0 && D > 0 && D % 2 == 0 &&
               stride >= (int64_t)H * D);
    const int64_t rows = (int64_t)B * L;
#pragma omp parallel for schedule(static) if (rows * H * D > 32768)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t l = r % L; /* every batch element has the same positions */
        const float *c = cos_t + l * (D / 2), *s = sin_t + l * (D / 2);
        for (int h = 0; h < H; h++)
            rope_head(x + r * stride + (int64_t)h * D, D, c, s);
    }
    sdw__prof_end(SDW_OP_ELTWISE, prof_t0, 0);
}
