/* nn/linear.c — fully connected layer and 2-D convolution. Bound layers run on their backend op
 * (nn/backend.h); hand-built ones (.w only) on a CPU sgemm (im2col + GEMM for convolutions). */
#include "nn/lora.h"
#include "nn/nn_impl.h"
#include "nn/profile.h"

#include <string.h>

/* Writes bias (or zeros) into every row of y[M, N], so the GEMM can accumulate with beta = 1. */
static void fill_rows(float *y, int64_t M, int N, const float *b) {
#pragma omp parallel for schedule(static) if (M * N > 65536)
    for (int64_t i = 0; i < M; i++) {
        if (b)
            memcpy(y + i * N, b, (size_t)N * sizeof(float));
        else
            memset(y + i * N, 0, (size_t)N * sizeof(float));
    }
}

/* Hand-built layers (.w only, f32): y[M,out] = x·Wᵀ + b. */
static void linear_sgemm(const sdw_linear *l, const float *x, int64_t M, float *y) {
    fill_rows(y, M, l->out, l->b);
    /* y[M,out] += x[M,in] · W[out,in]ᵀ (torch's addmm order: product, then bias). */
    sdw__sgemm('N', 'T', M, l->out, l->in, 1.0f, x, l->in, l->w, l->in, 1.0f, y, l->out);
}

void sdw_linear_forward(const sdw_linear *l, sdw_act x, sdw_act y, unsigned flags) {
    SDW_ASSERT(l && (l->w || l->op) && x.d && y.d && x.d != y.d && x.rows == y.rows);
    const int64_t M = x.rows;
    if (M <= 0) return;
    if (l->op) {
        sdw_backend_linear_forward(l->op, x, y, flags);
        /* the run's LoRA adapters (nn/lora.h): none attached, nothing more happens */
        const sdw_lora_run *lora = sdw_lora_current();
        if (lora) sdw__lora_apply(lora, l->op, x, y);
        return;
    }
    SDW_ASSERT(x.dt == SDW_DT_F32 && y.dt == SDW_DT_F32); /* hand-built layers: f32 only */
    if (!(flags & SDW_ACCUMULATE)) {
        linear_sgemm(l, x.d, M, y.d);
        return;
    }
    /* The product into scratch, then the add (torch's order: (x·W + b) + y). */
    float *t = sdw_xmalloc(sizeof(float) * (size_t)M * l->out);
    linear_sgemm(l, x.d, M, t);
    sdw_add(y.d, t, (size_t)M * l->out);
    free(t);
}

void sdw_conv2d_pack_weights(const float *w_oihw, int out, int in, int k, float *w_hwio) {
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++)
                    w_hwio[(((size_t)ky * k + kx) * in + i) * out + o] =
                        w_oihw[(((size_t)o * in + i) * k + ky) * k + kx];
}

/* im2col budget: the column buffer holds at most this many floats (64 MB), so large images
 * are convolved a band of output rows at a time. */
#define COL_MAX_FLOATS ((size_t)16 << 20)

/* Fills col[(oy - oy0) * OW + ox][(ky * k + kx) * in + ci] for output rows [oy0, oy1). */
static void im2col_rows(const sdw_conv2d *c, const float *xb, int H, int W, int OW, int oy0,
                        int oy1, float *col) {
    const int k = c->k, in = c->in;
    const size_t K = (size_t)k * k * in;
    const int64_t n_pix = (int64_t)(oy1 - oy0) * OW;
#pragma omp parallel for schedule(static) if (n_pix * (int64_t)K > 65536)
    for (int64_t p = 0; p < n_pix; p++) {
        int oy = oy0 + (int)(p / OW), ox = (int)(p % OW);
        float *dst = col + (size_t)p * K;
        for (int ky = 0; ky < k; ky++) {
            int iy = oy * c->stride - c->pad + ky;
            for (int kx = 0; kx < k; kx++, dst += in) {
                int ix = ox * c->stride - c->pad + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                    memset(dst, 0, (size_t)in * sizeof(float));
                else
                    memcpy(dst, xb + ((size_t)iy * W + ix) * in, (size_t)in * sizeof(float));
            }
        }
    }
}

/* Hand-built layers (.w only, f32): y [B,OH,OW,out] = conv(x) + b by im2col + GEMM. */
static void conv_sgemm(const sdw_conv2d *c, const float *x, int B, int H, int W, float *y) {
    const int OH = sdw_conv2d_out_size(c, H), OW = sdw_conv2d_out_size(c, W);
    SDW_ASSERT(OH > 0 && OW > 0);
    const int64_t n_out = (int64_t)B * OH * OW;
    fill_rows(y, n_out, c->out, c->b);

    if (c->k == 1 && c->stride == 1 && c->pad == 0 && c->pad_end == 0) {
        /* 1x1 convolution = a GEMM over all pixels: y[P,out] += x[P,in] · W[in,out]. */
        sdw__sgemm('N', 'N', n_out, c->out, c->in, 1.0f, x, c->in, c->w, c->out, 1.0f, y, c->out);
        return;
    }
    const size_t K = (size_t)c->k * c->k * c->in;
    int band = (int)(COL_MAX_FLOATS / (K * (size_t)OW));
    band = SDW_MAX(1, SDW_MIN(band, OH));
    float *col = sdw_xmalloc(sizeof(float) * K * (size_t)OW * (size_t)band);
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * H * W * c->in;
        float *yb = y + (size_t)b * OH * OW * c->out;
        for (int oy0 = 0; oy0 < OH; oy0 += band) {
            int oy1 = SDW_MIN(OH, oy0 + band);
            im2col_rows(c, xb, H, W, OW, oy0, oy1, col);
            /* y[rows,out] += col[rows,K] · W[K,out] (HWIO flattened). */
            sdw__sgemm('N', 'N', (int64_t)(oy1 - oy0) * OW, c->out, (int64_t)K, 1.0f, col,
                       (int64_t)K, c->w, c->out, 1.0f, yb + (size_t)oy0 * OW * c->out, c->out);
        }
    }
    free(col);
}

void sdw_conv2d_forward(const sdw_conv2d *c, sdw_act x, sdw_act y, unsigned flags) {
    SDW_ASSERT(c && (c->w || c->op) && x.d && y.d && x.d != y.d);
    SDW_ASSERT(x.layout == SDW_LAYOUT_NHWC && x.b > 0 && x.h > 0 && x.w > 0);
    if (c->op) {
        sdw_backend_conv_forward(c->op, x, y, flags);
        const sdw_lora_run *lora = sdw_lora_current(); /* as sdw_linear_forward */
        if (lora) sdw__lora_apply(lora, c->op, x, y);
        return;
    }
    SDW_ASSERT(x.dt == SDW_DT_F32 && y.dt == SDW_DT_F32); /* hand-built layers: f32 only */
    const size_t n =
        (size_t)x.b * sdw_conv2d_out_size(c, x.h) * sdw_conv2d_out_size(c, x.w) * c->out;
    SDW_ASSERT((int64_t)n == y.rows * c->out);
    if (!(flags & SDW_ACCUMULATE)) {
        conv_sgemm(c, x.d, x.b, x.h, x.w, y.d);
        return;
    }
    /* The product into scratch, then the add (torch's order: (x·W + b) + y). */
    float *t = sdw_xmalloc(sizeof(float) * n);
    conv_sgemm(c, x.d, x.b, x.h, x.w, t);
    sdw_add(y.d, t, n);
    free(t);
}
