/* nn/fused.c — a norm or activation feeding a product, made in the product's operand type
 * (see nn.h "a producer fused into a product"). In f32 these are exactly the two steps; in bf16
 * the producer rounds its output to bf16 as it writes it, instead of writing f32 that the
 * product would convert in a second pass. */
#include "nn/dnn.h"

/* The operand type of a layer, and where its input goes: tmp, or (bf16 into tmp == x, which
 * would overwrite rows other threads still read) a private half-size buffer in *own. */
static void *operand(const struct sdw__dnn *op, const float *x, float *tmp, size_t n, sdw__dt *dt,
                     void **own) {
    *dt = op && sdw__dnn_precision(op) == SDW_PRECISION_BF16 ? SDW__BF16 : SDW__F32;
    *own = NULL;
    if (*dt == SDW__BF16 && tmp == x) return *own = sdw_xmalloc(n * sizeof(uint16_t));
    return tmp;
}

static void conv_run(const sdw_conv2d *c, const void *in, sdw__dt dt, int B, int H, int W, float *y,
                     bool accumulate) {
    if (c->op)
        sdw__dnn_conv_forward(c->op, in, dt, B, H, W, y, accumulate);
    else if (accumulate)
        sdw_conv2d_forward_add(c, in, B, H, W, y);
    else
        sdw_conv2d_forward(c, in, B, H, W, y);
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

void sdw_conv2d_forward_gn(const sdw_conv2d *c, const sdw_group_norm *g, const float *x,
                           const float *bias, bool silu, int B, int H, int W, float *tmp, float *y,
                           bool accumulate) {
    SDW_ASSERT(c && g && x && tmp && y && g->c == c->in);
    sdw__dt dt;
    void *own;
    void *in = operand(c->op, x, tmp, (size_t)B * H * W * c->in, &dt, &own);
    sdw__group_norm(g, x, bias, B, (int64_t)H * W, in, dt, silu);
    conv_run(c, in, dt, B, H, W, y, accumulate);
    free(own);
}

void sdw_linear_forward_gn(const sdw_linear *l, const sdw_group_norm *g, const float *x, int B,
                           int64_t HW, float *tmp, float *y, bool accumulate) {
    SDW_ASSERT(l && g && x && tmp && y && g->c == l->in);
    sdw__dt dt;
    void *own;
    void *in = operand(l->op, x, tmp, (size_t)B * HW * l->in, &dt, &own);
    sdw__group_norm(g, x, NULL, B, HW, in, dt, false);
    linear_run(l, in, dt, B * HW, y, accumulate);
    free(own);
}

void sdw_linear_forward_ln(const sdw_linear *l, const sdw_layer_norm *n, const float *x, int64_t M,
                           float *tmp, float *y, bool accumulate) {
    SDW_ASSERT(l && n && x && tmp && y && n->c == l->in);
    sdw__dt dt;
    void *own;
    void *in = operand(l->op, x, tmp, (size_t)M * l->in, &dt, &own);
    sdw__layer_norm(n, x, M, in, dt);
    linear_run(l, in, dt, M, y, accumulate);
    free(own);
}

void sdw_linear_forward_geglu(const sdw_linear *l, const float *x, int64_t M, float *tmp, float *y,
                              bool accumulate) {
    SDW_ASSERT(l && x && tmp && y && tmp != x);
    sdw__dt dt;
    void *own;
    void *in = operand(l->op, x, tmp, (size_t)M * l->in, &dt, &own);
    sdw__geglu(x, M, l->in, in, dt);
    linear_run(l, in, dt, M, y, accumulate);
    free(own);
}
