/* nn/dnn.h — convolutions and matrix products on oneDNN primitives, weights packed once
 * (library-internal; the public face is sdw_conv2d / sdw_linear in nn.h).
 *
 *   sdw__dnn *op;
 *   if (sdw__dnn_conv_create(SDW_PRECISION_BF16, w_oihw, bias, &geom, &op, &err)) goto fail;
 *   sdw__dnn_conv_forward(op, x, SDW__F32, B, H, W, y, SDW__F32, false); // y = conv(x) + bias
 *   sdw__dnn_destroy(op);
 *
 * At creation the weights are reordered into the layout oneDNN's kernels want (format_tag::any
 * of a nominal shape; blocked) in the op's precision (f32, or bf16 rounded to nearest even);
 * no other copy is kept. Packed weights that are all exactly fp8 values (F8_E4M3, else F8_E5M2:
 * an fp8 checkpoint) are kept in 8 bits, in both precisions; f32 weights that are all exactly f16
 * (or bf16) values in that 16-bit type. Either way they are widened to the op's type into a
 * per-thread buffer for each call (same numbers as the uncompressed op). Primitives
 * are created on first use of each (shape, source type, output type, accumulate) and cached in the
 * op. Activations are NHWC / row-major; outputs f32 (a bf16 convolution may also write bf16); bias
 * f32. Thread safety: forwards on one op may run concurrently (the cache is locked; primitives and
 * packed weights are read-only once made).
 */
#ifndef SDW_NN_DNN_H
#define SDW_NN_DNN_H

#include "nn/nn.h"

typedef struct sdw__dnn sdw__dnn;

/* Element type of an activation handed to a forward. */
typedef enum sdw__dt { SDW__F32, SDW__BF16 } sdw__dt;

typedef struct sdw__conv_geom {
    int in, out, k, stride, pad, pad_end;
} sdw__conv_geom;

/* w_oihw [out, in, k, k] f32 (torch layout); bias [out] f32 or NULL (both copied/packed; the
 * caller keeps ownership). p is F32 or BF16. On success *out is a new op (free with
 * sdw__dnn_destroy); SDW_E_BACKEND with err set (err may be NULL) when oneDNN refuses the layer,
 * *out untouched. */
sdw_status sdw__dnn_conv_create(sdw_precision p, const float *w_oihw, const float *bias,
                                const sdw__conv_geom *g, sdw__dnn **out, sdw_error *err);
/* w [out, in] f32 (torch Linear layout); bias [out] or NULL; as sdw__dnn_conv_create. */
sdw_status sdw__dnn_linear_create(sdw_precision p, const float *w, const float *bias, int in,
                                  int out, sdw__dnn **out_op, sdw_error *err);
void sdw__dnn_destroy(void *op); /* NULL ok; void * so it can be an sdw_weights_adopt callback */

sdw_precision sdw__dnn_precision(const sdw__dnn *op);
/* Bytes the packed weights occupy: 4 per element in f32, 2 in bf16 or for f32 weights kept in
 * 16 bits, 1 for weights kept in 8 bits (see sdw_nn_set_compact_weights; the per-thread widening
 * buffer, one per calling thread sized for the largest layer, is not counted). */
size_t sdw__dnn_weight_bytes(const sdw__dnn *op);

/* x [B, H, W, in] of type xt (an f32 x is rounded to bf16 first on a bf16 op; a bf16 x on an
 * f32 op is a programmer error) -> y [B, OH, OW, out] of type yt (bf16 only on a bf16 op; the
 * f32 sum is rounded once). accumulate: y += conv(x) + bias (the residual add fused into the
 * convolution), else y = conv(x) + bias. x and y must not alias. */
void sdw__dnn_conv_forward(const sdw__dnn *op, const void *x, sdw__dt xt, int B, int H, int W,
                           void *y, sdw__dt yt, bool accumulate);
/* x [M, in] (row-major, type xt) -> y [M, out] f32, as above. */
void sdw__dnn_linear_forward(const sdw__dnn *op, const void *x, sdw__dt xt, int64_t M, float *y,
                             bool accumulate);

/* f32 <-> bf16 (round to nearest even; NaN stays NaN), threaded and vectorised. */
void sdw__f32_to_bf16(const float *x, uint16_t *y, size_t n);
void sdw__bf16_to_f32(const uint16_t *x, float *y, size_t n);
/* The same on the calling thread only (inside a parallel loop). */
void sdw__f32_to_bf16_row(const float *x, uint16_t *y, size_t n);
void sdw__bf16_to_f32_row(const uint16_t *x, float *y, size_t n);

/* ---- kernels that can write their output straight in a product's input type ---- */
/* GroupNorm of x of type xt (+ bias_bc [B, C] per batch and channel, or NULL) into y of type
 * yt; y may be x's storage when xt == yt (in place). */
void sdw__group_norm(const sdw_group_norm *g, const void *x, sdw__dt xt, const float *bias_bc,
                     int B, int64_t HW, void *y, sdw__dt yt, bool silu);
void sdw__layer_norm(const sdw_layer_norm *n, const float *x, int64_t M, void *y, sdw__dt yt);
void sdw__geglu(const float *x, int64_t M, int F, void *y, sdw__dt yt);

/* ---- typed activations (bf16 storage between bf16 layers, as the VAE keeps it) ---- */
/* The element type a layer's operand has: bf16 on a bf16 oneDNN layer, else f32. */
sdw__dt sdw__conv2d_operand_dt(const sdw_conv2d *c);
/* y (+)= conv(x), x of type xt, y of type yt (bf16 types only on a bf16 layer). */
void sdw__conv2d_forward_typed(const sdw_conv2d *c, const void *x, sdw__dt xt, int B, int H, int W,
                               void *y, sdw__dt yt, bool accumulate);
/* sdw_conv2d_forward_gn with typed x and y: tmp holds the operand and may be x's storage. */
void sdw__conv2d_forward_gn_typed(const sdw_conv2d *c, const sdw_group_norm *g, const void *x,
                                  sdw__dt xt, const float *bias, bool silu, int B, int H, int W,
                                  void *tmp, void *y, sdw__dt yt, bool accumulate);

#endif
