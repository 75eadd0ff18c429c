/* nn/dnn.h — convolutions and matrix products on oneDNN primitives, weights packed once
 * (library-internal; the public face is sdw_conv2d / sdw_linear in nn.h).
 *
 *   sdw__dnn *op;
 *   if (sdw__dnn_conv_create(SDW_PRECISION_BF16, w_oihw, bias, &geom, &op, &err)) goto fail;
 *   sdw__dnn_conv_forward(op, sdw_nhwc(x, B, H, W), sdw_nhwc(y, B, OH, OW), 0); // y = conv(x) + b
 *   sdw__dnn_destroy(op);
 *
 * At creation the weights are reordered into the layout oneDNN's kernels want (format_tag::any
 * of a nominal shape; blocked) in the op's precision (f32, or bf16 rounded to nearest even);
 * no other copy is kept. Packed weights that are all exactly fp8 values (F8_E4M3, else F8_E5M2:
 * an fp8 checkpoint) are kept in 8 bits, in both precisions; f32 weights that are all exactly f16
 * (or bf16) values in that 16-bit type. Either way they are widened to the op's type into a
 * per-thread buffer for each call (same numbers as the uncompressed op). Primitives
 * are created on first use of each (shape, source type, output type, accumulate) and cached in the
 * op. Activations are NHWC / row-major views (nn/act.h); outputs f32 (a bf16 convolution may also
 * write bf16); bias f32. Thread safety: forwards on one op may run concurrently (the cache is
 * locked; primitives and packed weights are read-only once made).
 */
#ifndef SDW_NN_DNN_H
#define SDW_NN_DNN_H

#include "nn/nn.h"

typedef struct sdw__dnn sdw__dnn;

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

/* x NHWC [B, H, W, in] (an f32 x is rounded to bf16 first on a bf16 op; a bf16 x on an f32 op
 * is a programmer error) -> y NHWC [B, OH, OW, out] (bf16 only on a bf16 op; the f32 sum is
 * rounded once). SDW_ACCUMULATE: y += conv(x) + bias (the residual add fused into the
 * convolution), else y = conv(x) + bias. x and y must not alias. */
void sdw__dnn_conv_forward(const sdw__dnn *op, sdw_act x, sdw_act y, unsigned flags);
/* x [M, in] rows -> y [M, out] f32 rows, as above. */
void sdw__dnn_linear_forward(const sdw__dnn *op, sdw_act x, sdw_act y, unsigned flags);

/* f32 <-> bf16 (round to nearest even; NaN stays NaN), threaded and vectorised. */
void sdw__f32_to_bf16(const float *x, uint16_t *y, size_t n);
void sdw__bf16_to_f32(const uint16_t *x, float *y, size_t n);
/* The same on the calling thread only (inside a parallel loop). */
void sdw__f32_to_bf16_row(const float *x, uint16_t *y, size_t n);
void sdw__bf16_to_f32_row(const uint16_t *x, float *y, size_t n);

#endif
