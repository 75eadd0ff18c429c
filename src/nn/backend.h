/* nn/backend.h — the compute backend seam: what the nn/ layers ask of the machine that packs
 * their weights and runs their products (library-internal).
 *
 *   sdw_backend *be;
 *   if (sdw_backend_cpu_create(NULL, &be, &err)) goto fail;         // nn/backend_cpu.h
 *   sdw_backend_op *op;
 *   if (sdw_backend_linear_create(be, SDW_PRECISION_BF16, w, b, in, out, &op, &err)) goto fail;
 *   sdw_backend_linear_forward(op, sdw_rows(x, M), sdw_rows(y, M), SDW_ACCUMULATE); // y += x·Wᵀ+b
 *   sdw_backend_op_destroy(op);
 *   sdw_backend_destroy(be);                                          // after its last op
 *
 * An interface in the house form (as sdw_image_model): a const ops table, its pointer embedded
 * first in each implementation's instance. The CPU backend (nn/backend_cpu.c: oneDNN primitives
 * with packed weights) is the first implementation; a CUDA backend is a second table behind the
 * same calls. Model code calls no backend function: it binds and runs the layers of nn/nn.h,
 * which hold a backend op each (sdw_linear.op, sdw_conv2d.op) and dispatch through it
 * (tests/nn/test_backend_seam checks that nothing above nn/ touches oneDNN). The rest of nn/
 * (norms, attention, elementwise kernels) is CPU code of its own.
 *
 * Ownership: an op is made on a backend and refers to it: destroy every op before its backend.
 * Weights and biases handed to a create call are copied (packed); activation views are borrowed
 * for the call. Thread safety: forwards on one op, and on different ops of one backend, may run
 * concurrently; creating and destroying ops and backends may not overlap a forward on them.
 */
#ifndef SDW_NN_BACKEND_H
#define SDW_NN_BACKEND_H

#include "io/safetensors.h"
#include "nn/act.h"
#include "sdw/precision.h"

typedef struct sdw_backend sdw_backend;
/* One layer's packed weights (and bias) on a backend, ready to multiply. */
typedef struct sdw_backend_op sdw_backend_op;

/* A 2-D convolution's shape: square kernel k, zero padding `pad` before and `pad_end` after
 * each spatial dim. */
typedef struct sdw_conv_geom {
    int in, out, k, stride, pad, pad_end;
} sdw_conv_geom;

typedef struct sdw_backend_ops {
    const char *name; /* "cpu" */
    /* Packs w [out, in] (torch Linear layout; its values stored as wdt, any float type of
     * io/safetensors.h: a checkpoint's mapping as it is, not necessarily aligned) and bias
     * [out] (or NULL) for products in precision p (F32 or BF16). On success *out is a new op; a
     * backend that cannot run the layer returns SDW_E_BACKEND with err set and leaves *out
     * untouched. */
    sdw_status (*linear_create)(sdw_backend *be, sdw_precision p, const void *w, sdw_dtype wdt,
                                const float *bias, int in, int out, sdw_backend_op **out_op,
                                sdw_error *err);
    /* As linear_create for a convolution: w_oihw [out, in, k, k] (torch layout). */
    sdw_status (*conv_create)(sdw_backend *be, sdw_precision p, const void *w_oihw, sdw_dtype wdt,
                              const float *bias, const sdw_conv_geom *g, sdw_backend_op **out,
                              sdw_error *err);
    void (*op_destroy)(sdw_backend_op *op);
    sdw_precision (*op_precision)(const sdw_backend_op *op);
    size_t (*op_weight_bytes)(const sdw_backend_op *op); /* packed weights as kept */
    /* Products as sdw_backend_linear_forward / sdw_backend_conv_forward below. */
    void (*linear_forward)(const sdw_backend_op *op, sdw_act x, sdw_act y, unsigned flags);
    void (*conv_forward)(const sdw_backend_op *op, sdw_act x, sdw_act y, unsigned flags);
    /* As sdw_backend_convert. */
    void (*convert)(sdw_backend *be, sdw_act x, sdw_act y, size_t n);
    void (*destroy)(sdw_backend *be);
} sdw_backend_ops;

/* Embedded first in each implementation's backend struct. */
struct sdw_backend {
    const sdw_backend_ops *ops;
};
/* Embedded first in each implementation's op struct: the backend it was made on. */
struct sdw_backend_op {
    sdw_backend *be;
};

void sdw_backend_destroy(sdw_backend *be); /* NULL ok; after every op made on it */

/* ---- ops, dispatched through op->be->ops ---- */

/* w [out, in] f32 (torch layout), bias [out] or NULL; both copied. p: F32 or BF16. On success
 * *out is a new op (free with sdw_backend_op_destroy); SDW_E_BACKEND (err may be NULL) when
 * the backend cannot run the layer, *out untouched. */
sdw_status sdw_backend_linear_create(sdw_backend *be, sdw_precision p, const float *w,
                                     const float *bias, int in, int out, sdw_backend_op **out_op,
                                     sdw_error *err);
/* w_oihw [out, in, k, k] f32 (torch layout), bias [out] or NULL; as sdw_backend_linear_create. */
sdw_status sdw_backend_conv_create(sdw_backend *be, sdw_precision p, const float *w_oihw,
                                   const float *bias, const sdw_conv_geom *g, sdw_backend_op **out,
                                   sdw_error *err);
/* The same with the weights as a checkpoint stores them: wdt any float type (F32, F16, BF16,
 * F64, F8_E4M3, F8_E5M2), w not necessarily aligned (a file mapping); read during the call only.
 * The layers bound from a checkpoint use these: no f32 copy is made on the way (loading speed,
 * issue 16). Same packed weights as the f32 forms given the same values. */
sdw_status sdw_backend_linear_create_typed(sdw_backend *be, sdw_precision p, const void *w,
                                           sdw_dtype wdt, const float *bias, int in, int out,
                                           sdw_backend_op **out_op, sdw_error *err);
sdw_status sdw_backend_conv_create_typed(sdw_backend *be, sdw_precision p, const void *w_oihw,
                                         sdw_dtype wdt, const float *bias, const sdw_conv_geom *g,
                                         sdw_backend_op **out, sdw_error *err);
void sdw_backend_op_destroy(sdw_backend_op *op); /* NULL ok */
sdw_precision sdw_backend_op_precision(const sdw_backend_op *op);
size_t sdw_backend_op_weight_bytes(const sdw_backend_op *op);
/* x [M, in] rows (f32; bf16 only on a bf16 op) -> y [M, out] f32 rows: y = x·Wᵀ + bias, or
 * with SDW_ACCUMULATE y += x·Wᵀ + bias. x and y must not alias. */
void sdw_backend_linear_forward(const sdw_backend_op *op, sdw_act x, sdw_act y, unsigned flags);
/* x NHWC [B, H, W, in] (f32; bf16 only on a bf16 op) -> y NHWC [B, OH, OW, out] (f32; bf16
 * only from a bf16 op, the f32 sum rounded once): y = conv(x) + bias, or with SDW_ACCUMULATE
 * y += conv(x) + bias (the residual add fused into the convolution). x and y must not alias. */
void sdw_backend_conv_forward(const sdw_backend_op *op, sdw_act x, sdw_act y, unsigned flags);
/* The first n elements of x into y, converted between their types (f32 <-> bf16: round to
 * nearest even, NaN stays NaN; equal types: a copy). x and y must not overlap. */
void sdw_backend_convert(sdw_backend *be, sdw_act x, sdw_act y, size_t n);

#endif
