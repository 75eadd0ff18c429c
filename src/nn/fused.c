/* nn/fused.c — a norm or activation feeding a product, made in the product's operand type
 * (see nn.h "a producer fused into a product"). In f32 these are exactly the two steps; in bf16
 * the producer rounds its output to bf16 as it writes it, instead of writing f32 that the
 * product would convert in a second pass. */
#include "nn/nn_impl.h"

/* The element type a layer's product reads: bf16 on a bf16 layer, else f32. */
static sdw_dt operand_dt(const sdw_backend_op *op) {
    return op && sdw_backend_op_precision(op) == SDW_PRECISION_BF16 ? SDW_DT_BF16 : SDW_DT_F32;
}

/* Where a layer's operand (made from x) goes: tmp, or (f32 x made bf16 into tmp == x's storage,
 * which would overwrite rows other threads still read) a private half-size buffer in *own. The
 * result is a view of it with x's shape in the operand type. */
static sdw_act operand(const sdw_backend_op *op, sdw_act x, void *tmp, size_t n, void **own) {
    sdw_act in = x;
    in.dt = operand_dt(op);
    in.d = tmp;
    *own = NULL;
    SDW_ASSERT(x.dt == SDW_DT_F32 || in.dt == SDW_DT_BF16); /* a bf16 x only feeds bf16 layers */
    if (in.dt == SDW_DT_BF16 && x.dt == SDW_DT_F32 && tmp == x.d)
        in.d = *own = sdw_xmalloc(n * sizeof(uint16_t));
    return in;
}

sdw_dt sdw_conv2d_operand_dt(const sdw_conv2d *c) {
    return operand_dt(c->op);
}

void sdw_conv2d_forward_gn(const sdw_conv2d *c, const sdw_group_norm *g, const float *bias,
                           sdw_act x, void *tmp, sdw_act y, unsigned flags) {
    SDW_ASSERT(c && g && x.d && tmp && y.d && g->c == c->in);
    void *own;
    const sdw_act in = operand(c->op, x, tmp, (size_t)x.rows * c->in, &own);
    sdw_group_norm_forward(g, bias, x, in, flags & SDW_SILU);
    sdw_conv2d_forward(c, in, y, flags & SDW_ACCUMULATE);
    free(own);
}

void sdw_linear_forward_gn(const sdw_linear *l, const sdw_group_norm *g, sdw_act x, void *tmp,
                           sdw_act y, unsigned flags) {
    SDW_ASSERT(l && g && x.d && tmp && y.d && g->c == l->in && x.dt == SDW_DT_F32);
    void *own;
    const sdw_act in = operand(l->op, x, tmp, (size_t)x.rows * l->in, &own);
    sdw_group_norm_forward(g, NULL, x, in, 0);
    sdw_linear_forward(l, in, y, flags & SDW_ACCUMULATE);
    free(own);
}

void sdw_linear_forward_ln(const sdw_linear *l, const sdw_layer_norm *n, sdw_act x, void *tmp,
                           sdw_act y, unsigned flags) {
    SDW_ASSERT(l && n && x.d && tmp && y.d && n->c == l->in && x.dt == SDW_DT_F32);
    void *own;
    const sdw_act in = operand(l->op, x, tmp, (size_t)x.rows * l->in, &own);
    sdw_layer_norm_forward(n, x, in);
    sdw_linear_forward(l, in, y, flags & SDW_ACCUMULATE);
    free(own);
}

void sdw_linear_forward_geglu(const sdw_linear *l, sdw_act x, void *tmp, sdw_act y,
                              unsigned flags) {
    SDW_ASSERT(l && x.d && tmp && y.d && tmp != x.d && x.dt == SDW_DT_F32);
    void *own;
    const sdw_act in = operand(l->op, x, tmp, (size_t)x.rows * l->in, &own);
    sdw_geglu(x, l->in, in);
    sdw_linear_forward(l, in, y, flags & SDW_ACCUMULATE);
    free(own);
}
