/* nn/act.h — activation views and op flags: how a layer or a kernel is handed its input and
 * output (library-internal; used by nn.h and the backends).
 *
 *   sdw_conv2d_forward(&conv, sdw_nhwc(x, B, H, W), sdw_nhwc(y, B, H, W), SDW_ACCUMULATE);
 *   sdw_linear_forward(&proj, sdw_rows(h, M), sdw_rows(out, M), 0);
 *   sdw_conv2d_forward_gn(&conv2, &norm2, temb, sdw_nhwc(h, B, H, W), tmp,
 *                         sdw_nhwc(y, B, H, W), SDW_SILU | SDW_ACCUMULATE);
 *
 * A view is plain data passed by value: storage, element type and shape. It borrows its storage
 * (the caller owns it) and says nothing about channels: those are the layer's (in, out). An
 * input view is only read, even though its pointer is not const (one view type serves inputs and
 * outputs). NHWC images [B, H, W, C] are also the token sequences [B, L, C] of the transformer
 * blocks: sdw_nhwc(x, B, L, 1).
 */
#ifndef SDW_NN_ACT_H
#define SDW_NN_ACT_H

#include "core/common.h"

/* Element type of an activation: f32, or bf16 (the storage between bf16 layers: round to nearest
 * even from the f32 a kernel computes). */
typedef enum sdw_dt { SDW_DT_F32, SDW_DT_BF16 } sdw_dt;

typedef enum sdw_layout {
    SDW_LAYOUT_NHWC, /* [b, h, w, C], channels last */
    SDW_LAYOUT_ROWS, /* [rows, C]: rows with no batch or image structure */
} sdw_layout;

typedef struct sdw_act {
    void *d; /* storage, borrowed */
    sdw_dt dt;
    sdw_layout layout;
    int b, h, w;  /* NHWC dims; 0 for ROWS */
    int64_t rows; /* rows of C values: b·h·w for NHWC */
} sdw_act;

/* Op flags, OR-ed together (0: none). Each op says which it takes. */
typedef enum sdw_op_flag {
    SDW_ACCUMULATE = 1u << 0, /* y += result (a residual add fused into the op); else y = result */
    SDW_SILU = 1u << 1,       /* SiLU applied to a normalisation's output */
} sdw_op_flag;

static inline size_t sdw_dt_size(sdw_dt dt) {
    return dt == SDW_DT_BF16 ? sizeof(uint16_t) : sizeof(float);
}

static inline sdw_act sdw_nhwc_dt(const void *d, sdw_dt dt, int b, int h, int w) {
    return (sdw_act){(void *)d, dt, SDW_LAYOUT_NHWC, b, h, w, (int64_t)b * h * w};
}
static inline sdw_act sdw_rows_dt(const void *d, sdw_dt dt, int64_t rows) {
    return (sdw_act){(void *)d, dt, SDW_LAYOUT_ROWS, 0, 0, 0, rows};
}
/* The f32 views every model passes. */
static inline sdw_act sdw_nhwc(const float *d, int b, int h, int w) {
    return sdw_nhwc_dt(d, SDW_DT_F32, b, h, w);
}
static inline sdw_act sdw_rows(const float *d, int64_t rows) {
    return sdw_rows_dt(d, SDW_DT_F32, rows);
}

#endif
