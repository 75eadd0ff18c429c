/* nn/backend.c — the backend seam's dispatch (see backend.h): every call goes to the ops table
 * of the backend an op was made on. */
#include "nn/backend.h"

void sdw_backend_destroy(sdw_backend *be) {
    if (be) be->ops->destroy(be);
}

sdw_status sdw_backend_linear_create_typed(sdw_backend *be, sdw_precision p, const void *w,
                                           sdw_dtype wdt, const float *bias, int in, int out,
                                           sdw_backend_op **out_op, sdw_error *err) {
    SDW_ASSERT(be && w && in > 0 && out > 0 && out_op && sdw_dtype_is_float(wdt));
    SDW_ASSERT(p == SDW_PRECISION_F32 || p == SDW_PRECISION_BF16);
    return be->ops->linear_create(be, p, w, wdt, bias, in, out, out_op, err);
}

sdw_status sdw_backend_linear_create(sdw_backend *be, sdw_precision p, const float *w,
                                     const float *bias, int in, int out, sdw_backend_op **out_op,
                                     sdw_error *err) {
    return sdw_backend_linear_create_typed(be, p, w, SDW_DTYPE_F32, bias, in, out, out_op, err);
}

sdw_status sdw_backend_conv_create_typed(sdw_backend *be, sdw_precision p, const void *w_oihw,
                                         sdw_dtype wdt, const float *bias, const sdw_conv_geom *g,
                                         sdw_backend_op **out, sdw_error *err) {
    SDW_ASSERT(be && w_oihw && g && g->in > 0 && g->out > 0 && g->k > 0 && g->stride > 0 &&
               g->pad >= 0 && g->pad_end >= 0 && out && sdw_dtype_is_float(wdt));
    SDW_ASSERT(p == SDW_PRECISION_F32 || p == SDW_PRECISION_BF16);
    return be->ops->conv_create(be, p, w_oihw, wdt, bias, g, out, err);
}

sdw_status sdw_backend_conv_create(sdw_backend *be, sdw_precision p, const float *w_oihw,
                                   const float *bias, const sdw_conv_geom *g, sdw_backend_op **out,
                                   sdw_error *err) {
    return sdw_backend_conv_create_typed(be, p, w_oihw, SDW_DTYPE_F32, bias, g, out, err);
}

void sdw_backend_op_destroy(sdw_backend_op *op) {
    if (op) op->be->ops->op_destroy(op);
}

sdw_precision sdw_backend_op_precision(const sdw_backend_op *op) {
    return op->be->ops->op_precision(op);
}

size_t sdw_backend_op_weight_bytes(const sdw_backend_op *op) {
    return op->be->ops->op_weight_bytes(op);
}

void sdw_backend_linear_forward(const sdw_backend_op *op, sdw_act x, sdw_act y, unsigned flags) {
    op->be->ops->linear_forward(op, x, y, flags);
}

void sdw_backend_conv_forward(const sdw_backend_op *op, sdw_act x, sdw_act y, unsigned flags) {
    op->be->ops->conv_forward(op, x, y, flags);
}

void sdw_backend_convert(sdw_backend *be, sdw_act x, sdw_act y, size_t n) {
    SDW_ASSERT(be && x.d && y.d);
    be->ops->convert(be, x, y, n);
}
