/* Weight views (row blocks of a fused tensor, transposed storage), sdw_weights_shape,
 * sdw_weights_ignore and safetensors metadata: on a hand-made file whose values say where they
 * came from, stored as F32 and as F16. */
#define _GNU_SOURCE
#include "io/weights.h"
#include "sdw_test.h"

#include <stdlib.h>

/* fused [6, 2] = rows q0 q1 k0 k1 v0 v1 (value = 10 * row + col); bias [6] = 0..5;
 * proj [2, 3] (value = 10 * row + col), applied as x @ proj, i.e. the transpose of a Linear. */
static const char *view_map(const char *name, char *buf, size_t cap, sdw_weight_view *v,
                            void *user) {
    (void)user;
    static const struct {
        const char *canon, *stored;
        int split, first, count;
        bool transpose;
    } k_map[] = {
        {"q.weight", "fused", 3, 0, 0, false},   {"k.weight", "fused", 3, 1, 0, false},
        {"v.weight", "fused", 3, 2, 0, false},   {"kv.weight", "fused", 3, 1, 2, false},
        {"v.bias", "bias", 3, 2, 0, false},      {"lin.weight", "proj", 0, 0, 0, true},
        {"bad.weight", "fused", 4, 0, 0, false}, {"plain.bias", "bias", 0, 0, 0, false},
    };
    for (size_t i = 0; i < sizeof k_map / sizeof k_map[0]; i++) {
        if (strcmp(name, k_map[i].canon)) continue;
        v->split = k_map[i].split;
        v->first = k_map[i].first;
        v->count = k_map[i].count;
        v->transpose = k_map[i].transpose;
        snprintf(buf, cap, "%s", k_map[i].stored);
        return buf;
    }
    return NULL;
}

/* Writes the test file with the given dtype; returns its path. */
static const char *write_file(sdw_dtype dt) {
    static char p[1024];
    snprintf(p, sizeof p, "%s/views-%s.safetensors", sdw_test_tmpdir(), sdw_dtype_str(dt));
    float fused[12], bias[6], proj[6];
    for (int r = 0; r < 6; r++)
        for (int c = 0; c < 2; c++)
            fused[r * 2 + c] = (float)(10 * r + c);
    for (int i = 0; i < 6; i++)
        bias[i] = (float)i;
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 3; c++)
            proj[r * 3 + c] = (float)(10 * r + c);
    sdw_st_writer *w = NULL;
    sdw_error err = {0};
    if (sdw_st_writer_create(p, &w, &err)) return NULL;
    sdw_st_writer_add(w, "fused", dt, 2, (int64_t[]){6, 2});
    sdw_st_writer_add(w, "bias", dt, 1, (int64_t[]){6});
    sdw_st_writer_add(w, "proj", dt, 2, (int64_t[]){2, 3});
    sdw_st_writer_add(w, "unused.a", dt, 1, (int64_t[]){2});
    sdw_st_writer_add(w, "unused.b", dt, 1, (int64_t[]){2});
    const float two[2] = {1, 2};
    if (sdw_st_writer_begin(w, &err) || sdw_st_writer_write(w, fused, &err) ||
        sdw_st_writer_write(w, bias, &err) || sdw_st_writer_write(w, proj, &err) ||
        sdw_st_writer_write(w, two, &err) || sdw_st_writer_write(w, two, &err)) {
        sdw_st_writer_finish(w, NULL);
        return NULL;
    }
    return sdw_st_writer_finish(w, &err) == SDW_OK ? p : NULL;
}

static void check_views(sdw_dtype dt) {
    const char *p = write_file(dt);
    ASSERT_TRUE(p != NULL);
    sdw_st_file *f = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_st_open(p, &f, &err), &err);
    sdw_weights *ws = sdw_weights_create_viewed(f, "", view_map, NULL);

    int nd = 0;
    int64_t sh[SDW_ST_MAX_DIMS];
    ASSERT_TRUE(sdw_weights_shape(ws, "k.weight", &nd, sh));
    ASSERT_TRUE(nd == 2 && sh[0] == 2 && sh[1] == 2);
    ASSERT_TRUE(sdw_weights_shape(ws, "kv.weight", &nd, sh) && sh[0] == 4);
    ASSERT_TRUE(sdw_weights_shape(ws, "lin.weight", &nd, sh) && sh[0] == 3 && sh[1] == 2);
    ASSERT_TRUE(!sdw_weights_shape(ws, "bad.weight", &nd, sh)); /* 6 rows in 4 parts */
    ASSERT_TRUE(!sdw_weights_shape(ws, "nothing", &nd, sh));
    /* find gives the stored (whole) tensor */
    ASSERT_TRUE(sdw_weights_find(ws, "k.weight") == sdw_st_find(f, "fused"));

    const float *k = sdw_weights_f32(ws, "k.weight", 2, (int64_t[]){2, 2}, &err);
    ASSERT_TRUE(k != NULL);
    ASSERT_TRUE(k[0] == 20 && k[1] == 21 && k[2] == 30 && k[3] == 31);
    const float *kv = sdw_weights_f32(ws, "kv.weight", 2, (int64_t[]){4, 2}, &err);
    ASSERT_TRUE(kv != NULL);
    ASSERT_TRUE(kv[0] == 20 && kv[7] == 51);
    const float *vb = sdw_weights_f32(ws, "v.bias", 1, (int64_t[]){2}, &err);
    ASSERT_TRUE(vb != NULL && vb[0] == 4 && vb[1] == 5);
    const float *lin = sdw_weights_f32(ws, "lin.weight", 2, (int64_t[]){3, 2}, &err);
    ASSERT_TRUE(lin != NULL);
    for (int r = 0; r < 3; r++) /* lin[r][c] = proj[c][r] */
        for (int c = 0; c < 2; c++)
            ASSERT_TRUE(lin[r * 2 + c] == (float)(10 * c + r));
    ASSERT_EQ_INT(sdw_weights_n_params(ws), 4 + 8 + 2 + 6);

    /* the view's shape is what requests are checked against, and errors say so */
    ASSERT_TRUE(!sdw_weights_f32(ws, "q.weight", 2, (int64_t[]){6, 2}, &err));
    ASSERT_EQ_INT(err.code, SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(err.msg, "as viewed");
    ASSERT_STR_CONTAINS(err.msg, "[2, 2]");
    ASSERT_TRUE(!sdw_weights_f32(ws, "bad.weight", 2, (int64_t[]){-1, 2}, &err));
    ASSERT_EQ_INT(err.code, SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(err.msg, "cannot be cut into 4 parts");

    /* fused, bias, proj used; the two unused.* left, until declared */
    char names[256];
    ASSERT_EQ_INT(sdw_weights_unused(ws, names, sizeof names), 2);
    sdw_weights_ignore(ws, "unused.a");
    ASSERT_EQ_INT(sdw_weights_unused(ws, names, sizeof names), 1);
    ASSERT_STR_CONTAINS(names, "unused.b");
    sdw_weights_ignore(ws, "unused.");
    ASSERT_EQ_INT(sdw_weights_unused(ws, names, sizeof names), 0);
    ASSERT_EQ_INT(sdw_weights_n_params(ws), 20); /* ignoring loads and counts nothing */

    /* a view-less map still works through the plain name */
    const float *b = sdw_weights_f32(ws, "plain.bias", 1, (int64_t[]){6}, &err);
    ASSERT_TRUE(b != NULL && b[5] == 5);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
}

static void test_views_f32(void) {
    check_views(SDW_DTYPE_F32);
}
static void test_views_f16(void) {
    check_views(SDW_DTYPE_F16);
}

/* Viewed tensors are saved in their canonical layout. */
static void test_save_writes_canonical_layout(void) {
    const char *p = write_file(SDW_DTYPE_F32);
    ASSERT_TRUE(p != NULL);
    sdw_st_file *f = NULL, *g = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_st_open(p, &f, &err), &err);
    sdw_weights *ws = sdw_weights_create_viewed(f, "", view_map, NULL);
    ASSERT_TRUE(sdw_weights_f32(ws, "v.weight", 2, (int64_t[]){2, 2}, &err));
    ASSERT_TRUE(sdw_weights_f32(ws, "lin.weight", 2, (int64_t[]){3, 2}, &err));
    char out[1024];
    snprintf(out, sizeof out, "%s/canonical.safetensors", sdw_test_tmpdir());
    sdw_status s = sdw_weights_save(ws, out, SDW_DTYPE_F32, &err);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
    ASSERT_OK(s, &err);
    ASSERT_OK(sdw_st_open(out, &g, &err), &err);
    const sdw_st_tensor *v = sdw_st_find(g, "v.weight"), *l = sdw_st_find(g, "lin.weight");
    bool ok = v && l && v->shape[0] == 2 && l->shape[0] == 3 && l->shape[1] == 2 &&
              ((const float *)v->data)[0] == 40 && ((const float *)l->data)[1] == 10;
    sdw_st_close(g);
    ASSERT_TRUE(ok);
}

/* "__metadata__" entries are readable; absent keys and metadata-less files give NULL. */
static void test_metadata(void) {
    static const char hdr[] = "{\"__metadata__\":{\"modelspec.prediction_type\":\"v\","
                              "\"format\":\"pt\"},\"x\":{\"dtype\":\"F32\",\"shape\":[1],"
                              "\"data_offsets\":[0,4]}}";
    size_t hl = sizeof hdr - 1, len = 8 + hl + 4;
    uint8_t *buf = calloc(1, len);
    ASSERT_TRUE(buf != NULL);
    uint64_t n = hl;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, hdr, hl);
    sdw_st_file *f = NULL;
    sdw_error err = {0};
    sdw_status s = sdw_st_open_memory(buf, len, "mem", &f, &err);
    if (s) free(buf);
    ASSERT_OK(s, &err);
    const char *p = sdw_st_metadata(f, "modelspec.prediction_type");
    bool ok = p && !strcmp(p, "v") && !strcmp(sdw_st_metadata(f, "format"), "pt") &&
              sdw_st_metadata(f, "nope") == NULL;
    sdw_st_close(f);
    free(buf);
    ASSERT_TRUE(ok);
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-sd2.safetensors"), &f, &err), &err);
    ok = sdw_st_metadata(f, "modelspec.prediction_type") == NULL;
    sdw_st_close(f);
    ASSERT_TRUE(ok);
}

int main(void) {
    RUN(test_views_f32);
    RUN(test_views_f16);
    RUN(test_save_writes_canonical_layout);
    RUN(test_metadata);
    return sdw_test_finish();
}
