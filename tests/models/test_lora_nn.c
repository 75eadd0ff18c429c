/* LoRA adapters on bound layers (nn/lora.h) against merged weights: a layer with an adapter
 * attached computes what the same layer with W + m·scale·up·down computes (linear, stacked
 * q|k|v parts with their own and with shared downs, 3x3 strided convolutions, 1x1
 * convolutions, f32 and bf16, several packs at once), and with none attached exactly what it
 * computed before (bit for bit). Also: the bind registry, the merge function, and the refusal
 * of two modules on one part. */
#include "sdw_test.h"

#include "nn/lora.h"
#include "nn/nn.h"

#include <stdlib.h>

static uint64_t g_rng = 88172645463325252ull;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}
static float *rnd(size_t n, float scale) {
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = scale * frand();
    return p;
}

static const sdw_layer_ref *find_layer(const sdw_weights *ws, const char *name) {
    for (int i = 0; i < sdw_layers_count(ws); i++)
        if (!strcmp(sdw_layers_at(ws, i)->name, name)) return sdw_layers_at(ws, i);
    return NULL;
}

/* The bound weight as f32 [out, in·k·k] (the random source gives the same values again). */
static float *weight_copy(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                          size_t n) {
    const float *w = sdw_weights_f32(ws, name, n_dims, shape, NULL);
    float *c = malloc(sizeof(float) * n);
    memcpy(c, w, sizeof(float) * n);
    return c;
}

static void test_registry(void) {
    sdw_weights *ws = sdw_weights_create_random(1);
    sdw_error err = {0};
    sdw_linear a, qkv;
    sdw_conv2d c;
    const char *parts[3] = {"attn.to_q", "attn.to_k", "attn.to_v"};
    ASSERT_OK(sdw_linear_bind(&a, ws, "proj", 8, 6, true, &err), &err);
    ASSERT_OK(sdw_linear_bind_stacked(&qkv, ws, parts, 3, 8, 8, false, &err), &err);
    ASSERT_OK(sdw_conv2d_bind(&c, ws, "conv", 4, 5, 3, 2, 1, true, &err), &err);
    ASSERT_EQ_INT(sdw_layers_count(ws), 5);
    const sdw_layer_ref *r = find_layer(ws, "attn.to_k");
    ASSERT_TRUE(r && r->op == qkv.op && r->col0 == 8 && r->out == 8 && r->op_out == 24 &&
                !r->conv);
    r = find_layer(ws, "conv");
    ASSERT_TRUE(r && r->conv && r->k == 3 && r->stride == 2 && r->pad == 1 && r->in == 4 &&
                r->out == 5 && r->op_out == 5);
    r = find_layer(ws, "proj");
    ASSERT_TRUE(r && r->op == a.op && r->in == 8 && r->out == 6);
    sdw_weights_destroy(ws);
}

static void test_merge(void) {
    const int out = 5, in = 7, rank = 3;
    float *w = rnd((size_t)out * in, 1), *up = rnd((size_t)out * rank, 1),
          *down = rnd((size_t)rank * in, 1);
    float *ref = malloc(sizeof(float) * out * in);
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            double s = 0;
            for (int j = 0; j < rank; j++) s += (double)up[o * rank + j] * down[j * in + i];
            ref[o * in + i] = (float)(w[o * in + i] + 0.4 * s);
        }
    sdw_lora_merge(w, out, in, up, down, rank, 0.4f);
    double e = sdw_test_rel_err(w, ref, (size_t)out * in);
    free(w), free(up), free(down), free(ref);
    ASSERT_TRUE(e < 1e-6);
}

/* A linear layer with an adapter = the layer with merged weights; detached = as before. */
static void check_linear(sdw_precision p, double tol) {
    sdw_weights *ws = sdw_weights_create_random(3);
    sdw_weights_set_precision(ws, p);
    sdw_error err = {0};
    const int in = 48, out = 40, rank = 4, M = 37;
    sdw_linear l, lm;
    ASSERT_OK(sdw_linear_bind(&l, ws, "lin", in, out, true, &err), &err);
    float *down = rnd((size_t)rank * in, 0.3f), *up = rnd((size_t)out * rank, 0.3f);
    float *x = rnd((size_t)M * in, 1), *y0 = malloc(sizeof(float) * M * out),
          *y1 = malloc(sizeof(float) * M * out), *ya = malloc(sizeof(float) * M * out),
          *ym = malloc(sizeof(float) * M * out);
    sdw_linear_forward(&l, sdw_rows(x, M), sdw_rows(y0, M), 0);
    sdw_lora_pack *pack = sdw_lora_pack_create();
    sdw_lora_pack_add(pack, find_layer(ws, "lin"), down, up, rank, 0.5f);
    ASSERT_OK(sdw_lora_pack_finish(pack, &err), &err);
    ASSERT_EQ_INT(sdw_lora_pack_n_layers(pack), 1);
    const sdw_lora_use use = {pack, 0.8f};
    const sdw_lora_run run = {&use, 1};
    ASSERT_TRUE(sdw_lora_attach(&run) == NULL);
    sdw_linear_forward(&l, sdw_rows(x, M), sdw_rows(ya, M), 0);
    ASSERT_TRUE(sdw_lora_attach(NULL) == &run);
    sdw_linear_forward(&l, sdw_rows(x, M), sdw_rows(y1, M), 0);
    float *w = weight_copy(ws, "lin.weight", 2, (int64_t[]){out, in}, (size_t)out * in);
    const float *b = sdw_weights_f32(ws, "lin.bias", 1, (int64_t[]){out}, NULL);
    sdw_lora_merge(w, out, in, up, down, rank, 0.8f * 0.5f);
    ASSERT_OK(sdw_linear_init(&lm, ws, w, b, in, out, &err), &err);
    sdw_linear_forward(&lm, sdw_rows(x, M), sdw_rows(ym, M), 0);
    const double e = sdw_test_rel_err(ya, ym, (size_t)M * out);
    const double d = sdw_test_rel_err(ya, y0, (size_t)M * out);
    const bool same = !memcmp(y0, y1, sizeof(float) * M * out);
    printf("    %s linear: adapter vs merged %.3g (the LoRA changes it by %.3g)\n",
           sdw_precision_str(p), e, d);
    sdw_lora_pack_destroy(pack);
    sdw_weights_destroy(ws);
    free(down), free(up), free(x), free(y0), free(y1), free(ya), free(ym), free(w);
    ASSERT_TRUE(same);
    ASSERT_TRUE(e <= tol);
    ASSERT_TRUE(d > 10 * tol);
}

static void test_linear_f32(void) { check_linear(SDW_PRECISION_F32, 2e-6); }
static void test_linear_bf16(void) {
    if (!sdw_nn_cpu_has_bf16()) {
        sdw_test_skip("no native bf16 on this CPU");
        return;
    }
    check_linear(SDW_PRECISION_BF16, 2e-2);
}

/* q|k|v stacked: q with its own down, k and v split from one fused module (one down shared),
 * plus a second pack on q; = the stacked merged weights. Accumulating into y (a residual). */
static void test_stacked(void) {
    sdw_weights *ws = sdw_weights_create_random(5);
    sdw_error err = {0};
    const int in = 16, out = 12, rank = 3, M = 9;
    const char *names[3] = {"a.to_q", "a.to_k", "a.to_v"};
    sdw_linear l, lm;
    ASSERT_OK(sdw_linear_bind_stacked(&l, ws, names, 3, in, out, true, &err), &err);
    float *dq = rnd((size_t)rank * in, 0.3f), *uq = rnd((size_t)out * rank, 0.3f);
    float *dkv = rnd((size_t)rank * in, 0.3f), *ukv = rnd((size_t)2 * out * rank, 0.3f);
    float *d2 = rnd((size_t)2 * in, 0.3f), *u2 = rnd((size_t)out * 2, 0.3f);
    sdw_lora_pack *p1 = sdw_lora_pack_create(), *p2 = sdw_lora_pack_create();
    sdw_lora_pack_add(p1, find_layer(ws, "a.to_q"), dq, uq, rank, 0.5f);
    sdw_lora_pack_add(p1, find_layer(ws, "a.to_v"), dkv, ukv + (size_t)out * rank, rank, 1.0f);
    sdw_lora_pack_add(p1, find_layer(ws, "a.to_k"), dkv, ukv, rank, 1.0f);
    sdw_lora_pack_add(p2, find_layer(ws, "a.to_q"), d2, u2, 2, 2.0f);
    ASSERT_OK(sdw_lora_pack_finish(p1, &err), &err);
    ASSERT_OK(sdw_lora_pack_finish(p2, &err), &err);
    ASSERT_EQ_INT(sdw_lora_pack_n_layers(p1), 1); /* one op, one adapter */
    float *x = rnd((size_t)M * in, 1), *res = rnd((size_t)M * 3 * out, 1);
    float *ya = malloc(sizeof(float) * M * 3 * out), *ym = malloc(sizeof(float) * M * 3 * out);
    memcpy(ya, res, sizeof(float) * M * 3 * out);
    memcpy(ym, res, sizeof(float) * M * 3 * out);
    const sdw_lora_use use[2] = {{p1, 0.7f}, {p2, -0.25f}};
    const sdw_lora_run run = {use, 2};
    sdw_lora_attach(&run);
    sdw_linear_forward(&l, sdw_rows(x, M), sdw_rows(ya, M), SDW_ACCUMULATE);
    sdw_lora_attach(NULL);
    float *w = malloc(sizeof(float) * 3 * out * in), *b = malloc(sizeof(float) * 3 * out);
    for (int i = 0; i < 3; i++) {
        char n[32];
        snprintf(n, sizeof n, "%s.weight", names[i]);
        memcpy(w + (size_t)i * out * in, sdw_weights_f32(ws, n, 2, (int64_t[]){out, in}, NULL),
               sizeof(float) * out * in);
        snprintf(n, sizeof n, "%s.bias", names[i]);
        memcpy(b + i * out, sdw_weights_f32(ws, n, 1, (int64_t[]){out}, NULL),
               sizeof(float) * out);
    }
    sdw_lora_merge(w, out, in, uq, dq, rank, 0.7f * 0.5f);
    sdw_lora_merge(w, out, in, u2, d2, 2, -0.25f * 2.0f);
    sdw_lora_merge(w + (size_t)out * in, 2 * out, in, ukv, dkv, rank, 0.7f);
    ASSERT_OK(sdw_linear_init(&lm, ws, w, b, in, 3 * out, &err), &err);
    sdw_linear_forward(&lm, sdw_rows(x, M), sdw_rows(ym, M), SDW_ACCUMULATE);
    const double e = sdw_test_rel_err(ya, ym, (size_t)M * 3 * out);
    printf("    stacked q|k|v, two packs: adapter vs merged %.3g\n", e);
    sdw_lora_pack_destroy(p1);
    sdw_lora_pack_destroy(p2);
    sdw_weights_destroy(ws);
    free(dq), free(uq), free(dkv), free(ukv), free(d2), free(u2), free(x), free(res), free(ya),
        free(ym), free(w), free(b);
    ASSERT_TRUE(e <= 2e-6);
}

/* A convolution (k x k, stride, padding) with a LoCon adapter = the merged convolution. */
static void check_conv(int k, int stride, int pad) {
    sdw_weights *ws = sdw_weights_create_random(9);
    sdw_error err = {0};
    const int in = 6, out = 10, rank = 4, B = 2, H = 9, W = 7;
    sdw_conv2d c, cm;
    ASSERT_OK(sdw_conv2d_bind(&c, ws, "conv", in, out, k, stride, pad, true, &err), &err);
    const int OH = sdw_conv2d_out_size(&c, H), OW = sdw_conv2d_out_size(&c, W);
    const size_t n_out = (size_t)B * OH * OW * out, kk = (size_t)k * k;
    float *down = rnd(rank * in * kk, 0.3f), *up = rnd((size_t)out * rank, 0.3f);
    float *x = rnd((size_t)B * H * W * in, 1), *ya = malloc(sizeof(float) * n_out),
          *ym = malloc(sizeof(float) * n_out);
    sdw_lora_pack *pack = sdw_lora_pack_create();
    sdw_lora_pack_add(pack, find_layer(ws, "conv"), down, up, rank, 0.5f);
    ASSERT_OK(sdw_lora_pack_finish(pack, &err), &err);
    const sdw_lora_use use = {pack, 1.0f};
    const sdw_lora_run run = {&use, 1};
    sdw_lora_attach(&run);
    sdw_conv2d_forward(&c, sdw_nhwc(x, B, H, W), sdw_nhwc(ya, B, OH, OW), 0);
    sdw_lora_attach(NULL);
    float *w = weight_copy(ws, "conv.weight", 4, (int64_t[]){out, in, k, k}, out * in * kk);
    const float *b = sdw_weights_f32(ws, "conv.bias", 1, (int64_t[]){out}, NULL);
    sdw_lora_merge(w, out, (int64_t)(in * kk), up, down, rank, 0.5f);
    ASSERT_OK(sdw_conv2d_init(&cm, ws, w, b, in, out, k, stride, pad, pad, &err), &err);
    sdw_conv2d_forward(&cm, sdw_nhwc(x, B, H, W), sdw_nhwc(ym, B, OH, OW), 0);
    const double e = sdw_test_rel_err(ya, ym, n_out);
    printf("    conv %dx%d stride %d pad %d: adapter vs merged %.3g\n", k, k, stride, pad, e);
    sdw_lora_pack_destroy(pack);
    sdw_weights_destroy(ws);
    free(down), free(up), free(x), free(ya), free(ym), free(w);
    ASSERT_TRUE(e <= 2e-6);
}

static void test_conv3x3(void) { check_conv(3, 1, 1); }
static void test_conv3x3_strided(void) { check_conv(3, 2, 1); }
static void test_conv1x1(void) { check_conv(1, 1, 0); }

static void test_two_modules_one_part(void) {
    sdw_weights *ws = sdw_weights_create_random(11);
    sdw_error err = {0};
    sdw_linear l;
    ASSERT_OK(sdw_linear_bind(&l, ws, "lin", 8, 8, false, &err), &err);
    float *d = rnd(16, 1), *u = rnd(16, 1);
    sdw_lora_pack *p = sdw_lora_pack_create();
    sdw_lora_pack_add(p, find_layer(ws, "lin"), d, u, 2, 1);
    sdw_lora_pack_add(p, find_layer(ws, "lin"), d, u, 2, 1);
    ASSERT_STATUS(sdw_lora_pack_finish(p, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "lin");
    sdw_lora_pack_destroy(p);
    sdw_weights_destroy(ws);
    free(d), free(u);
}

int main(void) {
    RUN(test_registry);
    RUN(test_merge);
    RUN(test_linear_f32);
    RUN(test_linear_bf16);
    RUN(test_stacked);
    RUN(test_conv3x3);
    RUN(test_conv3x3_strided);
    RUN(test_conv1x1);
    RUN(test_two_modules_one_part);
    return sdw_test_finish();
}
