/* nn/norm.c — GroupNorm (optionally fused with a per-(batch, channel) bias before it and SiLU
 * after it) and LayerNorm over NHWC / token rows.
 *
 * Statistics are two-pass (mean, then centred variance), as torch's kernels are accurate to
 * ~1e-7 relative and a one-pass f32 E[x²]−E[x]² would not be. GroupNorm walks NHWC memory in
 * order: per block of BLK pixels, per-channel f32 partial sums (contiguous, vectorised), which
 * are then added in double in block order — a fixed order, so results do not depend on the
 * thread count. The normalise pass is one vectorised sweep (x·scale + shift, SiLU). A bf16 input
 * is widened to f32 one block at a time, so it can be normalised in place. */
#include "core/cpu.h"
#include "nn/nn_impl.h"
#include "nn/profile.h"

#include <math.h>
#include <string.h>

#define BLK 64 /* pixels per partial sum: 64 f32 additions stay far below 1e-7 relative */

/* acc[c] = Σ_p (x[p][c] + bias[c]) over n pixels of C channels. */
SDW_VEC_BODY void block_sum_body(const float *x, const float *bias, int64_t n, int C, float *acc) {
    for (int c = 0; c < C; c++)
        acc[c] = 0.0f;
    for (int64_t p = 0; p < n; p++) {
        const float *row = x + p * C;
        for (int c = 0; c < C; c++)
            acc[c] += row[c] + bias[c];
    }
}
SDW_VEC_KERNEL(block_sum, (const float *x, const float *bias, int64_t n, int C, float *acc),
               (x, bias, n, C, acc))

/* acc[c] = Σ_p (x[p][c] + bias[c] − center[c])². */
SDW_VEC_BODY void block_sq_body(const float *x, const float *bias, const float *center, int64_t n,
                                int C, float *acc) {
    for (int c = 0; c < C; c++)
        acc[c] = 0.0f;
    for (int64_t p = 0; p < n; p++) {
        const float *row = x + p * C;
        for (int c = 0; c < C; c++) {
            const float d = row[c] + bias[c] - center[c];
            acc[c] += d * d;
        }
    }
}
SDW_VEC_KERNEL(block_sq,
               (const float *x, const float *bias, const float *center, int64_t n, int C,
                float *acc),
               (x, bias, center, n, C, acc))

/* y = (x + bias)·scale + shift, then SiLU if asked, over n pixels; y f32 or bf16. */
SDW_VEC_BODY void apply_rows_body(const float *x, const float *bias, const float *scale,
                                  const float *shift, int64_t n, int C, bool silu, float *tmp,
                                  void *y, sdw_dt yt) {
    for (int64_t p = 0; p < n; p++) {
        const float *row = x + p * C;
        float *out = yt == SDW_DT_F32 ? (float *)y + p * C : tmp;
        if (silu) {
            for (int c = 0; c < C; c++) {
                const float v = (row[c] + bias[c]) * scale[c] + shift[c];
                out[c] = v / (1.0f + sdw__expf(-v));
            }
        } else {
            for (int c = 0; c < C; c++)
                out[c] = (row[c] + bias[c]) * scale[c] + shift[c];
        }
        if (yt == SDW_DT_BF16) sdw__f32_to_bf16_row(tmp, (uint16_t *)y + p * C, (size_t)C);
    }
}
SDW_VEC_KERNEL(apply_rows,
               (const float *x, const float *bias, const float *scale, const float *shift,
                int64_t n, int C, bool silu, float *tmp, void *y, sdw_dt yt),
               (x, bias, scale, shift, n, C, silu, tmp, y, yt))

/* Block t's np pixels of x as f32: x itself, or (bf16 x) widened into buf [BLK * C]. */
static const float *block_f32(const void *x, sdw_dt xt, size_t off, int64_t np, int C, float *buf) {
    if (xt == SDW_DT_F32) return (const float *)x + off;
    sdw__bf16_to_f32_row((const uint16_t *)x + off, buf, (size_t)np * C);
    return buf;
}

void sdw_group_norm_forward(const sdw_group_norm *g, const float *bias_bc, sdw_act xa, sdw_act ya,
                            unsigned flags) {
    const double prof_t0 = sdw__prof_begin();
    SDW_ASSERT(g && g->gamma && g->beta && g->groups > 0 && g->c % g->groups == 0);
    SDW_ASSERT(xa.layout == SDW_LAYOUT_NHWC && xa.b > 0 && xa.d && ya.d && ya.rows == xa.rows);
    const void *x = xa.d;
    void *y = ya.d;
    const sdw_dt xt = xa.dt, yt = ya.dt;
    const bool silu = flags & SDW_SILU;
    const int B = xa.b;
    const int64_t HW = (int64_t)xa.h * xa.w;
    const int C = g->c, G = g->groups, cpg = C / G;
    const int64_t n_blk = (HW + BLK - 1) / BLK, total = B * n_blk;
    double *part = sdw_xmalloc(sizeof(double) * (size_t)total * C);
    /* per batch: zero bias (when none), group-mean centre per channel, scale, shift [C] each */
    float *zero = sdw_xcalloc((size_t)C, sizeof(float));
    float *center = sdw_xmalloc(sizeof(float) * (size_t)B * C * 3);
    float *scale = center + (size_t)B * C, *shift = scale + (size_t)B * C;
    double *mean = sdw_xmalloc(sizeof(double) * (size_t)B * G);
    const double n = (double)HW * cpg;

    for (int pass = 0; pass < 2; pass++) {
#pragma omp parallel
        {
            float *acc = sdw_xmalloc(sizeof(float) * (size_t)C);
            float *wide = xt == SDW_DT_BF16 ? sdw_xmalloc(sizeof(float) * BLK * (size_t)C) : NULL;
#pragma omp for schedule(dynamic, 4)
            for (int64_t t = 0; t < total; t++) {
                const int b = (int)(t / n_blk);
                const int64_t p0 = t % n_blk * BLK, np = SDW_MIN((int64_t)BLK, HW - p0);
                const float *xb = block_f32(x, xt, ((size_t)b * HW + p0) * C, np, C, wide);
                const float *bias = bias_bc ? bias_bc + (size_t)b * C : zero;
                if (pass == 0)
                    block_sum(xb, bias, np, C, acc);
                else
                    block_sq(xb, bias, center + (size_t)b * C, np, C, acc);
                double *dst = part + (size_t)t * C;
                for (int c = 0; c < C; c++)
                    dst[c] = acc[c];
            }
            free(wide);
            free(acc);
        }
        /* Reduce the blocks in order, then the channels of each group. */
        for (int b = 0; b < B; b++)
            for (int gi = 0; gi < G; gi++) {
                double s = 0;
                for (int j = 0; j < cpg; j++) {
                    const int c = gi * cpg + j;
                    double sc = 0;
                    for (int64_t k = 0; k < n_blk; k++)
                        sc += part[((size_t)b * n_blk + k) * C + c];
                    s += sc;
                }
                if (pass == 0) {
                    mean[b * G + gi] = s / n;
                    for (int j = 0; j < cpg; j++)
                        center[(size_t)b * C + gi * cpg + j] = (float)(s / n);
                } else {
                    /* Biased variance, as torch's group_norm. */
                    const double rstd = 1.0 / sqrt(s / n + (double)g->eps);
                    for (int j = 0; j < cpg; j++) {
                        const int c = gi * cpg + j;
                        const double sc = rstd * g->gamma[c];
                        scale[(size_t)b * C + c] = (float)sc;
                        shift[(size_t)b * C + c] = (float)(g->beta[c] - mean[b * G + gi] * sc);
                    }
                }
            }
    }

#pragma omp parallel
    {
        float *tmp = yt == SDW_DT_BF16 ? sdw_xmalloc(sizeof(float) * (size_t)C) : NULL;
        float *wide = xt == SDW_DT_BF16 ? sdw_xmalloc(sizeof(float) * BLK * (size_t)C) : NULL;
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < total; t++) {
            const int b = (int)(t / n_blk);
            const int64_t p0 = t % n_blk * BLK, np = SDW_MIN((int64_t)BLK, HW - p0);
            const size_t off = ((size_t)b * HW + p0) * C;
            void *yb =
                yt == SDW_DT_F32 ? (void *)((float *)y + off) : (void *)((uint16_t *)y + off);
            /* the block is read whole before it is written: y may be x's storage when xt == yt */
            apply_rows(block_f32(x, xt, off, np, C, wide), bias_bc ? bias_bc + (size_t)b * C : zero,
                       scale + (size_t)b * C, shift + (size_t)b * C, np, C, silu, tmp, yb, yt);
        }
        free(wide);
        free(tmp);
    }
    free(mean);
    free(center);
    free(zero);
    free(part);
    sdw__prof_end(SDW_OP_GROUP_NORM, prof_t0, 0);
}

/* One LayerNorm row: 16 f32 lane partials per pass, combined in double. */
SDW_VEC_BODY void ln_row_body(const float *x, int C, const float *gamma, const float *beta,
                              float eps, float *y) {
    float lane[16] = {0};
    int c = 0;
    for (; c + 16 <= C; c += 16)
        for (int k = 0; k < 16; k++)
            lane[k] += x[c + k];
    double sum = 0;
    for (int k = 0; k < 16; k++)
        sum += lane[k];
    for (; c < C; c++)
        sum += x[c];
    const double mean = sum / C;
    const float fm = (float)mean;
    float lsq[16] = {0};
    for (c = 0; c + 16 <= C; c += 16)
        for (int k = 0; k < 16; k++) {
            const float d = x[c + k] - fm;
            lsq[k] += d * d;
        }
    double ss = 0;
    for (int k = 0; k < 16; k++)
        ss += lsq[k];
    for (; c < C; c++) {
        const double d = x[c] - mean;
        ss += d * d;
    }
    const float rstd = (float)(1.0 / sqrt(ss / C + (double)eps));
    for (c = 0; c < C; c++)
        y[c] = (x[c] - fm) * rstd * gamma[c] + beta[c];
}
SDW_VEC_KERNEL(ln_row,
               (const float *x, int C, const float *gamma, const float *beta, float eps, float *y),
               (x, C, gamma, beta, eps, y))

void sdw_layer_norm_forward(const sdw_layer_norm *n, sdw_act xa, sdw_act ya) {
    const double prof_t0 = sdw__prof_begin();
    SDW_ASSERT(n && n->gamma && n->beta && n->c > 0);
    SDW_ASSERT(xa.d && ya.d && xa.dt == SDW_DT_F32 && ya.rows == xa.rows);
    const float *x = xa.d;
    void *y = ya.d;
    const sdw_dt yt = ya.dt;
    const int64_t M = xa.rows;
    const int C = n->c;
#pragma omp parallel if (M * C > 32768)
    {
        float *tmp = yt == SDW_DT_BF16 ? sdw_xmalloc(sizeof(float) * (size_t)C) : NULL;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < M; i++) {
            const float *xr = x + (size_t)i * C;
            if (yt == SDW_DT_F32) {
                ln_row(xr, C, n->gamma, n->beta, n->eps, (float *)y + (size_t)i * C);
            } else {
                ln_row(xr, C, n->gamma, n->beta, n->eps, tmp);
                sdw__f32_to_bf16_row(tmp, (uint16_t *)y + (size_t)i * C, (size_t)C);
            }
        }
        free(tmp);
    }
    sdw__prof_end(SDW_OP_LAYER_NORM, prof_t0, 0);
}

sdw_status sdw_rms_norm_bind(sdw_rms_norm *n, sdw_weights *ws, const char *name, int c, float eps,
                             sdw_error *err) {
    memset(n, 0, sizeof *n);
    const int64_t shape[1] = {c};
    sdw_status st = sdw__weights_f32(ws, name, 1, shape, &n->gamma, err);
    if (st != SDW_OK) return st;
    n->c = c;
    n->eps = eps;
    return SDW_OK;
}

/* One group: the sum of squares in double (torch reduces in f32 with a cascade; double is at
 * least as close to the exact value), the scale rsqrt in f32 as torch.rsqrt, then x·r·gamma in
 * T5's order (x·r first). */
static void rms_group(const float *x, int C, const float *gamma, float eps, float *y) {
    double ss = 0;
    for (int c = 0; c < C; c++)
        ss += (double)x[c] * x[c];
    const float var = (float)(ss / C);
    const float r = 1.0f / sqrtf(var + eps);
    for (int c = 0; c < C; c++)
        y[c] = (x[c] * r) * gamma[c];
}

void sdw_rms_norm_forward(const sdw_rms_norm *n, const float *x, int64_t M, int G, int64_t stride,
                          float *y) {
    const double prof_t0 = sdw__prof_begin();
    SDW_ASSERT(n && n->gamma && n->c > 0 && G >= 1 && stride >= (int64_t)G * n->c);
    const int C = n->c;
#pragma omp parallel for schedule(static) if (M * G * C > 32768)
    for (int64_t i = 0; i < M; i++)
        for (int g = 0; g < G; g++)
            rms_group(x + i * stride + (int64_t)g * C, C, n->gamma, n->eps,
                      y + i * stride + (int64_t)g * C);
    sdw__prof_end(SDW_OP_LAYER_NORM, prof_t0, 0);
}

/* LayerNorm without affine parameters, then AdaLayerNorm's modulation: (x − mean)·rstd is
 * scaled by (1 + scale) and shifted, in torch's order, the row statistics exactly as
 * sdw_layer_norm_forward's (one definition: ln_row with gamma = 1 + scale, beta = shift). */
void sdw_layer_norm_modulate(const float *x, int64_t M, int C, float eps, const float *shift,
                             const float *scale, float *y) {
    const double prof_t0 = sdw__prof_begin();
    SDW_ASSERT(x && shift && scale && y && C > 0 && M >= 0);
    float *gain = sdw_xmalloc(sizeof(float) * (size_t)C);
    for (int c = 0; c < C; c++)
        gain[c] = 1.0f + scale[c]; /* (1 + scale) is its own f32 tensor in torch too */
#pragma omp parallel for schedule(static) if (M * C > 32768)
    for (int64_t i = 0; i < M; i++)
        ln_row(x + (size_t)i * C, C, gain, shift, eps, y + (size_t)i * C);
    free(gain);
    sdw__prof_end(SDW_OP_LAYER_NORM, prof_t0, 0);
}
