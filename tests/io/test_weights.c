/* Weights: canonical-name access, name maps and prefixes, f16 conversion against the fp32
 * folder, shape checks, used-tracking, the random source and save/reopen. */
#define _GNU_SOURCE
#include "io/weights.h"
#include "sdw_test.h"

#include <stdlib.h>

static sdw_st_file *open_fixture(const char *rel) {
    sdw_error err = {0};
    sdw_st_file *f = NULL;
    if (sdw_st_open(sdw_test_path("%s", rel), &f, &err) != SDW_OK)
        fprintf(stderr, "  %s\n", err.msg);
    return f;
}

#define UNET "models/tiny-sd15/unet/diffusion_pytorch_model.safetensors"

static void test_load_by_canonical_name(void) {
    sdw_st_file *f = open_fixture(UNET);
    ASSERT_TRUE(f);
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    sdw_error err = {0};
    const float *w = sdw_weights_f32(ws, "conv_in.weight", 4, (int64_t[]){32, 4, 3, 3}, &err);
    ASSERT_TRUE(w != NULL);
    const sdw_st_tensor *t = sdw_st_find(f, "conv_in.weight");
    ASSERT_TRUE(memcmp(w, t->data, t->n_bytes) == 0);
    ASSERT_TRUE(((uintptr_t)w & 63) == 0);
    /* asking again returns the same buffer and does not count twice */
    ASSERT_TRUE(sdw_weights_f32(ws, "conv_in.weight", 4, (int64_t[]){32, 4, 3, 3}, &err) == w);
    ASSERT_EQ_INT(sdw_weights_n_params(ws), 32 * 4 * 9);
    ASSERT_TRUE(sdw_weights_has(ws, "conv_in.bias"));
    ASSERT_TRUE(!sdw_weights_has(ws, "conv_in.nonsense"));
    ASSERT_TRUE(sdw_weights_find(ws, "conv_in.bias") == sdw_st_find(f, "conv_in.bias"));
    /* wildcard */
    ASSERT_TRUE(sdw_weights_f32(ws, "conv_in.bias", 1, (int64_t[]){-1}, &err) != NULL);
    ASSERT_EQ_INT(sdw_weights_n_params(ws), 32 * 4 * 9 + 32);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
}

static void test_shape_mismatch_says_expected_and_actual(void) {
    sdw_st_file *f = open_fixture(UNET);
    ASSERT_TRUE(f);
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    sdw_error err = {0};
    ASSERT_TRUE(!sdw_weights_f32(ws, "conv_in.weight", 4, (int64_t[]){32, 9, 3, 3}, &err));
    ASSERT_EQ_INT(err.code, SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(err.msg, "conv_in.weight");
    ASSERT_STR_CONTAINS(err.msg, "expected shape [32, 9, 3, 3], file has [32, 4, 3, 3]");
    ASSERT_STR_CONTAINS(err.msg, "diffusion_pytorch_model.safetensors");
    /* a failed request is not marked used and is not counted */
    ASSERT_EQ_INT(sdw_weights_n_params(ws), 0);
    /* size-1 compatibility: conv_in.bias [32] as [1, 32, 1] */
    ASSERT_TRUE(sdw_weights_f32(ws, "conv_in.bias", 3, (int64_t[]){1, 32, 1}, &err));
    ASSERT_TRUE(!sdw_weights_f32(ws, "conv_in.bias", 1, (int64_t[]){33}, &err));
    ASSERT_EQ_INT(err.code, SDW_E_SHAPE);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
}

static void test_missing_tensor_names_it(void) {
    sdw_st_file *f = open_fixture(UNET);
    ASSERT_TRUE(f);
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    sdw_error err = {0};
    ASSERT_TRUE(!sdw_weights_f32(ws, "down_blocks.9.resnets.0.conv1.weight", 1, (int64_t[]){-1}, &err));
    ASSERT_EQ_INT(err.code, SDW_E_NOT_FOUND);
    ASSERT_STR_CONTAINS(err.msg, "tensor down_blocks.9.resnets.0.conv1.weight not found");
    sdw_weights_destroy(ws);
    sdw_st_close(f);
}

/* int64 position_ids are not weights */
static void test_non_float_dtype_refused(void) {
    sdw_st_file *f = open_fixture("models/tiny-sdxl.safetensors");
    ASSERT_TRUE(f);
    sdw_weights *ws =
        sdw_weights_create(f, "conditioner.embedders.0.transformer.", NULL, NULL);
    sdw_error err = {0};
    ASSERT_TRUE(!sdw_weights_f32(ws, "text_model.embeddings.position_ids", 2, (int64_t[]){1, -1}, &err));
    ASSERT_EQ_INT(err.code, SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "dtype I64");
    sdw_weights_destroy(ws);
    sdw_st_close(f);
}

/* Maps "text_model.X" to the single file's name; everything else has no counterpart. */
static const char *te_map(const char *name, char *buf, size_t cap, void *user) {
    int *calls = user;
    (*calls)++;
    if (strncmp(name, "text_model.", 11) != 0) return NULL;
    snprintf(buf, cap, "transformer.%s", name);
    return buf;
}

static void test_f16_single_file_matches_f32_folder(void) {
    sdw_st_file *single = open_fixture("models/tiny-sdxl.safetensors");
    sdw_st_file *folder = open_fixture("models/tiny-sdxl/text_encoder/model.safetensors");
    ASSERT_TRUE(single && folder);
    int calls = 0;
    sdw_weights *a = sdw_weights_create(single, "conditioner.embedders.0.", te_map, &calls);
    sdw_weights *b = sdw_weights_create(folder, "", NULL, NULL);
    sdw_error err = {0};
    const char *name = "text_model.embeddings.token_embedding.weight";
    const float *x = sdw_weights_f32(a, name, 2, (int64_t[]){49408, -1}, &err);
    ASSERT_TRUE(x != NULL);
    ASSERT_TRUE(calls > 0);
    const sdw_st_tensor *t = sdw_weights_find(a, name);
    ASSERT_TRUE(t && t->dtype == SDW_DTYPE_F16);
    const float *y = sdw_weights_f32(b, name, 2, (int64_t[]){49408, t->shape[1]}, &err);
    ASSERT_TRUE(y != NULL);
    size_t n = (size_t)t->n_elems;
    /* fp16 round-to-nearest: relative error <= 2^-11 for normals, absolute 2^-25 below 2^-14 */
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - (double)y[i]);
        double tol = fmax(fabs((double)y[i]) * 0x1p-11, 0x1p-25);
        if (d / tol > worst) worst = d / tol;
    }
    ASSERT_TRUE(worst <= 1.0);
    ASSERT_TRUE(sdw_weights_n_params(a) == n);
    /* a name the map rejects is "no counterpart", not a crash */
    ASSERT_TRUE(!sdw_weights_f32(a, "logit_scale", 0, NULL, &err));
    ASSERT_EQ_INT(err.code, SDW_E_NOT_FOUND);
    ASSERT_STR_CONTAINS(err.msg, "logit_scale has no counterpart");
    sdw_weights_destroy(a);
    sdw_weights_destroy(b);
    sdw_st_close(single);
    sdw_st_close(folder);
}

static void test_unused_counts_under_prefix(void) {
    sdw_st_file *f = open_fixture("models/tiny-sdxl.safetensors");
    ASSERT_TRUE(f);
    const char *pre = "conditioner.embedders.1.model.";
    sdw_weights *ws = sdw_weights_create(f, pre, NULL, NULL);
    int total = 0;
    for (int i = 0; i < sdw_st_count(f); i++)
        total += strncmp(sdw_st_at(f, i)->name, pre, strlen(pre)) == 0;
    char msg[256];
    ASSERT_EQ_INT(sdw_weights_unused(ws, msg, sizeof msg), total);
    ASSERT_STR_CONTAINS(msg, pre);
    sdw_error err = {0};
    ASSERT_TRUE(sdw_weights_f32(ws, "logit_scale", 1, (int64_t[]){1}, &err)); /* 0-d as [1] */
    ASSERT_TRUE(sdw_weights_f32(ws, "ln_final.weight", 1, (int64_t[]){-1}, &err));
    ASSERT_EQ_INT(sdw_weights_unused(ws, msg, sizeof msg), total - 2);
    ASSERT_TRUE(strstr(msg, "ln_final.weight") == NULL);
    ASSERT_EQ_INT(sdw_weights_unused(ws, NULL, 0), total - 2);
    float *s = sdw_weights_alloc(ws, 1000);
    for (int i = 0; i < 1000; i++) ASSERT_TRUE(s[i] == 0.0f);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
}

/* ---- random source ---- */

static void test_random_deterministic_and_shaped(void) {
    sdw_weights *a = sdw_weights_create_random(7), *b = sdw_weights_create_random(7),
                *c = sdw_weights_create_random(8);
    sdw_error err = {0};
    int64_t shape[4] = {320, 4, 3, 3};
    /* request order differs between a and b: values depend on (seed, name) only */
    const float *a2 = sdw_weights_f32(a, "conv_in.bias", 1, (int64_t[]){320}, &err);
    const float *a1 = sdw_weights_f32(a, "conv_in.weight", 4, shape, &err);
    const float *b1 = sdw_weights_f32(b, "conv_in.weight", 4, shape, &err);
    const float *b2 = sdw_weights_f32(b, "conv_in.bias", 1, (int64_t[]){320}, &err);
    const float *c1 = sdw_weights_f32(c, "conv_in.weight", 4, shape, &err);
    ASSERT_TRUE(a1 && a2 && b1 && b2 && c1);
    ASSERT_TRUE(memcmp(a1, b1, 320 * 36 * sizeof(float)) == 0);
    ASSERT_TRUE(memcmp(a2, b2, 320 * sizeof(float)) == 0);
    ASSERT_TRUE(memcmp(a1, c1, 320 * 36 * sizeof(float)) != 0);
    ASSERT_TRUE(memcmp(a1, a2, 320 * sizeof(float)) != 0);
    ASSERT_EQ_INT(sdw_weights_n_params(a), 320 * 36 + 320);
    /* fan-in scaled uniform: bound sqrt(3/36), variance 1/36 */
    double bound = sqrt(3.0 / 36), var = 0;
    for (int i = 0; i < 320 * 36; i++) {
        ASSERT_TRUE(fabs(a1[i]) <= bound);
        var += (double)a1[i] * a1[i];
    }
    var /= 320 * 36;
    ASSERT_TRUE(fabs(var * 36 - 1.0) < 0.05);
    for (int i = 0; i < 320; i++) ASSERT_TRUE(fabs(a2[i]) <= 0.02f);
    ASSERT_TRUE(!sdw_weights_has(a, "conv_in.weight"));
    ASSERT_TRUE(sdw_weights_find(a, "conv_in.weight") == NULL);
    ASSERT_EQ_INT(sdw_weights_unused(a, NULL, 0), 0);
    /* wildcards need a file */
    ASSERT_TRUE(!sdw_weights_f32(a, "x.weight", 2, (int64_t[]){-1, 4}, &err));
    ASSERT_EQ_INT(err.code, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "x.weight");
    sdw_weights_destroy(a);
    sdw_weights_destroy(b);
    sdw_weights_destroy(c);
}

static void test_random_value_kinds(void) {
    sdw_weights *ws = sdw_weights_create_random(1);
    sdw_error err = {0};
    const float *g = sdw_weights_f32(ws, "down_blocks.0.resnets.0.norm1.weight", 1, (int64_t[]){64}, &err);
    const float *e = sdw_weights_f32(ws, "text_model.embeddings.token_embedding.weight", 2,
                                     (int64_t[]){49408, 32}, &err);
    const float *t = sdw_weights_f32(ws, "time_embedding.linear_1.weight", 2,
                                     (int64_t[]){128, 32}, &err);
    const float *big = sdw_weights_f32(ws, "big.weight", 2, (int64_t[]){1000, 1000}, &err);
    ASSERT_TRUE(g && e && t && big);
    for (int i = 0; i < 64; i++) ASSERT_TRUE(g[i] >= 0.98f && g[i] <= 1.02f);
    double m = 0, v = 0;
    size_t n = 49408 * 32;
    for (size_t i = 0; i < n; i++) m += e[i], v += (double)e[i] * e[i];
    m /= (double)n;
    v = v / (double)n - m * m;
    ASSERT_TRUE(fabs(m) < 1e-3 && fabs(sqrt(v) - 0.02) < 1e-3);
    /* a linear layer inside "time_embedding" is a weight, not a table: bound sqrt(3/32) */
    double bound = sqrt(3.0 / 32), mx = 0;
    for (int i = 0; i < 128 * 32; i++) mx = fmax(mx, fabs(t[i]));
    ASSERT_TRUE(mx <= bound && mx > 0.9 * bound);
    /* multi-chunk tensor: chunks are independent streams, not copies of each other */
    ASSERT_TRUE(memcmp(big, big + 65536, 4096) != 0);
    /* same name again with a size-1-compatible shape: the same buffer */
    ASSERT_TRUE(sdw_weights_f32(ws, "time_embedding.linear_1.weight", 4,
                                (int64_t[]){128, 32, 1, 1}, &err) == t);
    ASSERT_TRUE(!sdw_weights_f32(ws, "time_embedding.linear_1.weight", 2, (int64_t[]){32, 128}, &err));
    ASSERT_EQ_INT(err.code, SDW_E_SHAPE);
    sdw_weights_destroy(ws);
}

static void test_save_roundtrip(void) {
    sdw_weights *ws = sdw_weights_create_random(3);
    sdw_error err = {0};
    const float *w = sdw_weights_f32(ws, "conv.weight", 4, (int64_t[]){8, 4, 3, 3}, &err);
    const float *b = sdw_weights_f32(ws, "conv.bias", 1, (int64_t[]){8}, &err);
    const float *s = sdw_weights_f32(ws, "scale", 0, NULL, &err);
    ASSERT_TRUE(w && b && s);
    (void)sdw_weights_alloc(ws, 10); /* scratch is not saved */
    char path[1024], path16[1024];
    snprintf(path, sizeof path, "%s/rand.safetensors", sdw_test_tmpdir());
    snprintf(path16, sizeof path16, "%s/rand16.safetensors", sdw_test_tmpdir());
    ASSERT_OK(sdw_weights_save(ws, path, SDW_DTYPE_F32, &err), &err);
    ASSERT_OK(sdw_weights_save(ws, path16, SDW_DTYPE_F16, &err), &err);

    sdw_st_file *f;
    ASSERT_OK(sdw_st_open(path, &f, &err), &err);
    ASSERT_EQ_INT(sdw_st_count(f), 3);
    sdw_weights *r = sdw_weights_create(f, "", NULL, NULL);
    const float *w2 = sdw_weights_f32(r, "conv.weight", 4, (int64_t[]){8, 4, 3, 3}, &err);
    const float *b2 = sdw_weights_f32(r, "conv.bias", 1, (int64_t[]){8}, &err);
    const float *s2 = sdw_weights_f32(r, "scale", 0, NULL, &err);
    ASSERT_TRUE(w2 && b2 && s2);
    ASSERT_TRUE(memcmp(w, w2, 8 * 36 * 4) == 0 && memcmp(b, b2, 32) == 0 && *s == *s2);
    ASSERT_EQ_INT(sdw_weights_unused(r, NULL, 0), 0);
    sdw_weights_destroy(r);
    sdw_st_close(f);

    ASSERT_OK(sdw_st_open(path16, &f, &err), &err);
    const sdw_st_tensor *t = sdw_st_find(f, "conv.weight");
    ASSERT_TRUE(t && t->dtype == SDW_DTYPE_F16 && t->n_dims == 4 && t->shape[3] == 3);
    float back[8 * 36];
    sdw_convert_to_f32(SDW_DTYPE_F16, t->data, back, 8 * 36);
    for (int i = 0; i < 8 * 36; i++) ASSERT_TRUE(fabs(back[i] - w[i]) <= fabs(w[i]) * 0x1p-11 + 0x1p-25);
    sdw_st_close(f);

    /* an unwritable path fails cleanly */
    ASSERT_STATUS(sdw_weights_save(ws, "/nonexistent-dir/x.safetensors", SDW_DTYPE_F32, &err), SDW_E_IO);
    ASSERT_STR_CONTAINS(err.msg, "/nonexistent-dir/x.safetensors");
    sdw_weights_destroy(ws);
}

/* a file-backed source saves in canonical names: single file -> diffusers layout */
static void test_save_canonical_names_from_file(void) {
    sdw_st_file *f = open_fixture("models/tiny-sdxl.safetensors");
    ASSERT_TRUE(f);
    int calls = 0;
    sdw_weights *ws = sdw_weights_create(f, "conditioner.embedders.0.", te_map, &calls);
    sdw_error err = {0};
    ASSERT_TRUE(sdw_weights_f32(ws, "text_model.final_layer_norm.weight", 1, (int64_t[]){-1}, &err));
    char path[1024];
    snprintf(path, sizeof path, "%s/te.safetensors", sdw_test_tmpdir());
    ASSERT_OK(sdw_weights_save(ws, path, SDW_DTYPE_F32, &err), &err);
    sdw_st_file *g;
    ASSERT_OK(sdw_st_open(path, &g, &err), &err);
    const sdw_st_tensor *t = sdw_st_find(g, "text_model.final_layer_norm.weight");
    ASSERT_TRUE(t && t->n_dims == 1 && t->shape[0] == 32);
    sdw_st_close(g);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
}

int main(void) {
    RUN(test_load_by_canonical_name);
    RUN(test_shape_mismatch_says_expected_and_actual);
    RUN(test_missing_tensor_names_it);
    RUN(test_non_float_dtype_refused);
    RUN(test_f16_single_file_matches_f32_folder);
    RUN(test_unused_counts_under_prefix);
    RUN(test_random_deterministic_and_shaped);
    RUN(test_random_value_kinds);
    RUN(test_save_roundtrip);
    RUN(test_save_canonical_names_from_file);
    return sdw_test_finish();
}
