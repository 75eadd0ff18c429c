/* nn/elementwise.c — activations, broadcasts, layout shuffles and the timestep embedding. */
#include "core/cpu.h"
#include "nn/nn_impl.h"
#include "nn/profile.h"

#include <math.h>
#include <string.h>

/* Below this many elements threading costs more than it saves. */
#define PAR_MIN 32768
/* Elementwise loops go in chunks, dynamically scheduled: on a shared machine a descheduled
 * thread then delays the others by one chunk, not by half the work. */
#define CHUNK 16384

typedef enum { ACT_SILU, ACT_GELU, ACT_GELU_TANH, ACT_QUICK_GELU } act_kind;

/* torch's default GELU: 0.5·x·(1 + erf(x/√2)). */
static inline float gelu1(float x) {
    return 0.5f * x * (1.0f + sdw__erff(x * (float)M_SQRT1_2));
}

SDW_VEC_BODY void act_block_body(act_kind k, float *x, size_t n) {
    switch (k) {
    case ACT_SILU:
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] / (1.0f + sdw__expf(-x[i]));
        break;
    case ACT_GELU:
        for (size_t i = 0; i < n; i++)
            x[i] = gelu1(x[i]);
        break;
    case ACT_GELU_TANH: {
        const float c = 0.7978845608028654f; /* √(2/π) */
        /* tanh(u) = 1 − 2/(e^{2u} + 1), exact in the limits (e^{2u} saturates or vanishes) */
        for (size_t i = 0; i < n; i++) {
            const float v = x[i], u = c * (v + 0.044715f * v * v * v);
            x[i] = 0.5f * v * (2.0f - 2.0f / (sdw__expf(2.0f * u) + 1.0f));
        }
        break;
    }
    case ACT_QUICK_GELU: /* transformers' QuickGELU: x·sigmoid(1.702·x) */
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] / (1.0f + sdw__expf(-1.702f * x[i]));
        break;
    }
}
SDW_VEC_KERNEL(act_block, (act_kind k, float *x, size_t n), (k, x, n))

static void act(act_kind k, float *x, size_t n) {
    const double prof_t0 = sdw__prof_begin();
    const long n_chunks = (long)((n + CHUNK - 1) / CHUNK);
#pragma omp parallel for schedule(dynamic, 1) if (n > PAR_MIN)
    for (long c = 0; c < n_chunks; c++) {
        const size_t lo = (size_t)c * CHUNK;
        act_block(k, x + lo, SDW_MIN((size_t)CHUNK, n - lo));
    }
    sdw__prof_end(SDW_OP_ACT, prof_t0, 0);
}

void sdw_silu(float *x, size_t n) {
    act(ACT_SILU, x, n);
}
void sdw_gelu(float *x, size_t n) {
    act(ACT_GELU, x, n);
}
void sdw_gelu_tanh(float *x, size_t n) {
    act(ACT_GELU_TANH, x, n);
}
void sdw_quick_gelu(float *x, size_t n) {
    act(ACT_QUICK_GELU, x, n);
}

void sdw_add(float *y, const float *x, size_t n) {
    const double prof_t0 = sdw__prof_begin();
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
    sdw__prof_end(SDW_OP_ELTWISE, prof_t0, 0);
}

SDW_VEC_BODY void geglu_row_body(const float *hidden, const float *gate, int F, float *y) {
    for (int j = 0; j < F; j++)
        y[j] = hidden[j] * gelu1(gate[j]);
}
SDW_VEC_KERNEL(geglu_row, (const float *hidden, const float *gate, int F, float *y),
               (hidden, gate, F, y))

void sdw_geglu(sdw_act xa, int F, sdw_act ya) {
    const double prof_t0 = sdw__prof_begin();
    SDW_ASSERT(xa.d && ya.d && xa.dt == SDW_DT_F32 && ya.rows == xa.rows && F > 0);
    const float *x = xa.d;
    void *y = ya.d;
    const sdw_dt yt = ya.dt;
    const int64_t M = xa.rows;
#pragma omp parallel if (M * F > PAR_MIN)
    {
        float *row = yt == SDW_DT_BF16 ? sdw_xmalloc(sizeof(float) * (size_t)F) : NULL;
#pragma omp for schedule(dynamic, 4)
        for (int64_t i = 0; i < M; i++) {
            const float *xr = x + (size_t)i * 2 * F;
            if (yt == SDW_DT_F32) {
                geglu_row(xr, xr + F, F, (float *)y + (size_t)i * F);
            } else {
                geglu_row(xr, xr + F, F, row);
                sdw__f32_to_bf16_row(row, (uint16_t *)y + (size_t)i * F, (size_t)F);
            }
        }
        free(row);
    }
    sdw__prof_end(SDW_OP_ACT, prof_t0, 0);
}

void sdw_add_channel_bias(float *y, const float *bias, int B, int64_t HW, int C) {
    const double prof_t0 = sdw__prof_begin();
    const int64_t n_pix = (int64_t)B * HW;
#pragma omp parallel for schedule(static) if (n_pix * C > PAR_MIN)
    for (int64_t p = 0; p < n_pix; p++) {
        const float *bb = bias + (size_t)(p / HW) * C;
        float *yp = y + (size_t)p * C;
        for (int c = 0; c < C; c++)
            yp[c] += bb[c];
    }
    sdw__prof_end(SDW_OP_ELTWISE, prof_t0, 0);
}

void sdw_upsample_nearest2x(const float *x, int B, int H, int W, int C, float *y) {
    const double prof_t0 = sdw__prof_begin();
    const int64_t rows = (int64_t)B * H;
    const size_t px = (size_t)C * sizeof(float);
#pragma omp parallel for schedule(static) if (rows * W * C > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * W * C;
        float *y0 = y + (size_t)r * 2 * (2 * W) * C, *y1 = y0 + (size_t)2 * W * C;
        for (int j = 0; j < W; j++) {
            memcpy(y0 + (size_t)(2 * j) * C, xr + (size_t)j * C, px);
            memcpy(y0 + (size_t)(2 * j + 1) * C, xr + (size_t)j * C, px);
        }
        memcpy(y1, y0, (size_t)2 * W * px);
    }
    sdw__prof_end(SDW_OP_LAYOUT, prof_t0, 0);
}

void sdw_concat_channels(const float *a, int Ca, const float *b, int Cb, int64_t M, float *y) {
    const double prof_t0 = sdw__prof_begin();
    const int C = Ca + Cb;
#pragma omp parallel for schedule(static) if (M * C > PAR_MIN)
    for (int64_t i = 0; i < M; i++) {
        memcpy(y + (size_t)i * C, a + (size_t)i * Ca, (size_t)Ca * sizeof(float));
        memcpy(y + (size_t)i * C + Ca, b + (size_t)i * Cb, (size_t)Cb * sizeof(float));
    }
    sdw__prof_end(SDW_OP_LAYOUT, prof_t0, 0);
}

void sdw_nchw_to_nhwc(const float *x, int B, int C, int H, int W, float *y) {
    const double prof_t0 = sdw__prof_begin();
    const int64_t HW = (int64_t)H * W;
#pragma omp parallel for collapse(2) schedule(static) if (B * HW * C > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int64_t p = 0; p < HW; p++)
            for (int c = 0; c < C; c++)
                y[((size_t)b * HW + p) * C + c] = x[((size_t)b * C + c) * HW + p];
    sdw__prof_end(SDW_OP_LAYOUT, prof_t0, 0);
}

void sdw_nhwc_to_nchw(const float *x, int B, int H, int W, int C, float *y) {
    const double prof_t0 = sdw__prof_begin();
    const int64_t HW = (int64_t)H * W;
#pragma omp parallel for collapse(2) schedule(static) if (B * HW * C > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int64_t p = 0; p < HW; p++)
                y[((size_t)b * C + c) * HW + p] = x[((size_t)b * HW + p) * C + c];
    sdw__prof_end(SDW_OP_LAYOUT, prof_t0, 0);
}

/* diffusers' get_timestep_embedding (max_period 10000, scale 1), step by step in float32 as
 * torch evaluates it: exponent = -ln(10000)·i / (half − freq_shift); emb = t·exp(exponent);
 * [sin, cos] (or [cos, sin] with flip_sin_to_cos); an odd dim gets a trailing zero. */
void sdw_timestep_embedding(float t, int dim, bool flip_sin_to_cos, float freq_shift, float *out) {
    const int half = dim / 2;
    const float neg_log_period = (float)-log(10000.0);
    const float denom = (float)((double)half - (double)freq_shift);
    for (int i = 0; i < half; i++) {
        float exponent = neg_log_period * (float)i / denom;
        float arg = t * expf(exponent);
        float s = sinf(arg), c = cosf(arg);
        out[i] = flip_sin_to_cos ? c : s;
        out[half + i] = flip_sin_to_cos ? s : c;
    }
    if (dim % 2) out[dim - 1] = 0.0f;
}
