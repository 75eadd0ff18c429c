/* nn/fused.c — a norm or activation feeding a product, made in the product's operand type
 * (see nn.h "a producer fused into a product"). In f32 these are exactly the two steps; in bf16
 * the producer rounds its output to bf16 as it writes it, instead of writing f32 that the
 * product would convert in a second pass. */
#include "nn/dnn.h"

/* The element type a layer's product reads: bf16 on a bf16 oneDNN layer, else f32. */
static sdw__dt operand_dt(const struct sdw__dnn *op) {
    return op && sdw__dnn_precision(op) == SDW_PRECISION_BF16 ? SDW__BF16 : SDW__F32;
}

/* The operand type of a layer, and where its input (of type xt) goes: tmp, or (f32 x made
 * bf16 into tmp == x, which would overwrite rows other threads still read) a private half-size
 * buffer in *own. */
static void *operand(const struct sdw__dnn *op, const void *x, sdw__dt xt, void *tmp, size_t n,
                     sdw__dt *dt, void **own) {
    *dt = operand_dt(op);
    *own = NULL;
    SDW_ASSERT(xt == SDW__F32 || *dt == SDW__BF16); /* a bf16 x only feeds bf16 layers */
    if (*dt == SDW__BF16 && xt == SDW__F32 && tmp == x)
        return *own = sdw_xmalloc(n * sizeof(uint16_t));
    return tmp;
}

sdw__dt sdw__conv2d_operand_dt(const sdw_conv2d *c) {
    return operand_dt(c->op);
}

void sdw__conv2d_forward_typed(const sdw_conv2d *c, const void *x, sdw__dt xt, int B, int H, int W,
                               void *y, sdw__dt yt, bool accumulate) {
    SDW_ASSERT(c->op || (xt == SDW__F32 && yt == SDW__F32));
    if (c->op)
        sdw__dnn_conv_forward(c->op, x, xt, B, H, W, y, yt, accumulate);
    else if (accumulate)
        sdw_conv2d_forward_add(c, x, B, H, W, y); /* hand-built layers: f32 only */
    else
        sdw_conv2d_forward(c, x, B, H, W, y);
}

static void linear_run(const sdw_linear *l, const void *in, sdw__dt dt, int64_t M, float *y,
                       bool accumulate) {
    if (l->op)
        sdw__dnn_linear_forward(l->op, in, dt, M, y, accumulate);
    else if (accumulate)
        sdw_linear_forward_add(l, in, M, y);
    else
        sdw_linear_forward(l, in, M, y);
}

void sdw__conv2d_forward_gn_typed(const sdw_conv2d *c, const sdw_group_norm *g, const void *x,
                                  sdw__dt xt, const float *bias, bool silu, int B, int H, int W,
                                  void *tmp, void *y, sdw__dt yt, bool accumulate) {
    SDW_ASSERT(c && g && x && tmp && y && g->c == c->in);
    sdw__dt dt;
    void *own;
    void *in = operand(c->op, x, xt, tmp, (size_t)B * H * W * c->in, &dt, &own);
    sdw__group_norm(g, x, xt, bias, B, (int64_t)H * W, in, dt, silu);
    sdw__conv2d_forward_typed(c, in, dt, B, H, W, y, yt, accumulate);
    free(own);
}

void sdw_conv2d_forward_gn(const sdw_conv2d *c, const sdw_group_norm *g, const float *x,
                           const float *bias, bool silu, int B, int H, int W, float *tmp, float *y,
                           bool accumulate) {
    sdw__conv2d_forward_gn_typed(c, g, x, SDW__F32, bias, silu, B, H, W, tmp, y, SDW__F32,
                                 accumulate);
}

void sdw_linear_forward_gn(const sdw_linear *l, const sdw_group_norm *g, const float *x, int B,
                           int64_t HW, float *tmp, float *y, bool accumulate) {
    SDW_ASSERT(l && g && x && tmp && y && g->c == l->in);
    sdw__dt dt;
    void *own;
    void *in = operand(l->op, x, SDW__F32, tmp, (size_t)B * HW * l->in, &dt, &own);
    sdw__group_norm(g, x, SDW__F32, NULL, B, HW, in, dt, false);
    linear_run(l, in, dt, B * HW, y, accumulate);
    free(own);
}

void sdw_linear_forward_ln(const sdw_linear *l, const sdw_layer_norm *n, const float *x, int64_t M,
                           float *tmp, float *y, bool accumulate) {
    SDW_ASSERT(l && n && x && tmp && y && n->c == l->in);
    sdw__dt dt;
    void *own;
    void *in = operand(l->op, x, SDW__F32, tmp, (size_t)M * l->in, &dt, &own);
    sdw__layer_norm(n, x, M, in, dt);
    linear_run(l, in, dt, M, y, accumulate);
    free(own);
}

void sdw_linear_forward_geglu(const sdw_linear *l, const float *x, int64_t M, float *tmp, float *y,
                              bool accumulate) {
    SDW_ASSERT(l && x && tmp && y && tmp != x);
    sdw__dt dt;
    void *own;
    void *in = operand(l->op, x, SDW__F32, tmp, (size_t)M * l->in, &dt, &own);
    sdw__geglu(x, M, l->in, in, dt);
    linear_run(l, in, dt, M, y, accumulate);
    free(own);
}
