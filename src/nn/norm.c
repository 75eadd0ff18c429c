/* nn/norm.c — GroupNorm (optionally fused with SiLU) and LayerNorm over NHWC / token rows.
 * Statistics are two-pass (mean, then centred variance) accumulated in double: torch's own
 * kernels are accurate to ~1e-7 relative, and a one-pass f32 E[x²]−E[x]² would not be. */
#include "nn/nn_impl.h"
#include "nn/profile.h"

#include <math.h>

void sdw_group_norm_forward(const sdw_group_norm *g, const float *x, int B, int64_t HW, float *y,
                            bool silu) {
    const double prof_t0 = sdw__prof_begin();
    SDW_ASSERT(g && g->gamma && g->beta && g->groups > 0 && g->c % g->groups == 0);
    const int C = g->c, G = g->groups, cpg = C / G;
    const int n_stat = B * G;
    float *scale = sdw_xmalloc(sizeof(float) * 2 * (size_t)n_stat * cpg);
    float *shift = scale + (size_t)n_stat * cpg;

    /* One task per (batch, group): each reads its cpg-wide channel slice of every pixel. The
     * summation order is fixed per task, so results do not depend on the thread count. */
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < n_stat; t++) {
        const int b = t / G, gi = t % G;
        const float *xb = x + (size_t)b * HW * C + (size_t)gi * cpg;
        double sum = 0;
        for (int64_t p = 0; p < HW; p++)
            for (int j = 0; j < cpg; j++)
                sum += xb[p * C + j];
        const double n = (double)HW * cpg, mean = sum / n;
        double ss = 0;
        for (int64_t p = 0; p < HW; p++)
            for (int j = 0; j < cpg; j++) {
                double d = xb[p * C + j] - mean;
                ss += d * d;
            }
        /* Biased variance, as torch's group_norm. */
        const double rstd = 1.0 / sqrt(ss / n + (double)g->eps);
        for (int j = 0; j < cpg; j++) {
            int ch = gi * cpg + j;
            double s = rstd * g->gamma[ch];
            scale[(size_t)b * C + ch] = (float)s;
            shift[(size_t)b * C + ch] = (float)(g->beta[ch] - mean * s);
        }
    }

    const int64_t n_pix = (int64_t)B * HW;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n_pix; p++) {
        const int b = (int)(p / HW);
        const float *sc = scale + (size_t)b * C, *sh = shift + (size_t)b * C;
        const float *xp = x + (size_t)p * C;
        float *yp = y + (size_t)p * C;
        if (silu) {
            for (int ch = 0; ch < C; ch++) {
                float v = xp[ch] * sc[ch] + sh[ch];
                yp[ch] = v / (1.0f + expf(-v));
            }
        } else {
            for (int ch = 0; ch < C; ch++)
                yp[ch] = xp[ch] * sc[ch] + sh[ch];
        }
    }
    free(scale);
    sdw__prof_end(SDW_OP_GROUP_NORM, prof_t0, 0);
}

void sdw_layer_norm_forward(const sdw_layer_norm *n, const float *x, int64_t M, float *y) {
    const double prof_t0 = sdw__prof_begin();
    SDW_ASSERT(n && n->gamma && n->beta && n->c > 0);
    const int C = n->c;
#pragma omp parallel for schedule(static) if (M * C > 32768)
    for (int64_t i = 0; i < M; i++) {
        const float *xr = x + (size_t)i * C;
        float *yr = y + (size_t)i * C;
        double sum = 0;
        for (int j = 0; j < C; j++)
            sum += xr[j];
        const double mean = sum / C;
        double ss = 0;
        for (int j = 0; j < C; j++) {
            double d = xr[j] - mean;
            ss += d * d;
        }
        const double rstd = 1.0 / sqrt(ss / C + (double)n->eps);
        for (int j = 0; j < C; j++)
            yr[j] = (float)((xr[j] - mean) * rstd * n->gamma[j] + n->beta[j]);
    }
    sdw__prof_end(SDW_OP_LAYER_NORM, prof_t0, 0);
}
