/* Safetensors reader/writer: every fixture model opens; every malformed file is refused with the
 * right status and a message naming the file and the problem. */
#define _GNU_SOURCE
#include "io/safetensors.h"
#include "sdw_test.h"

#include <ftw.h>
#include <stdlib.h>

/* ---- helpers ---- */

static const char *tmp_file(const char *name) {
    static char bufs[4][1024];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, 1024, "%s/%s", sdw_test_tmpdir(), name);
    return b;
}

static bool write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* A safetensors file with this header text (length field = strlen(json) unless hlen_override)
 * and data_len zero bytes of data. */
static const char *write_st(const char *name, const char *json, size_t data_len,
                            uint64_t hlen_override) {
    size_t hl = strlen(json), n = 8 + hl + data_len;
    uint8_t *buf = calloc(1, n);
    uint64_t hlen = hlen_override ? hlen_override : hl;
    memcpy(buf, &hlen, 8);
    memcpy(buf + 8, json, hl);
    const char *path = tmp_file(name);
    bool ok = write_bytes(path, buf, n);
    free(buf);
    return ok ? path : NULL;
}

/* Opens path expecting failure with status want; returns the message (static). */
static const char *open_fails(const char *path, sdw_status want, bool *ok) {
    static sdw_error err;
    memset(&err, 0, sizeof err);
    sdw_st_file *f = NULL;
    sdw_status st = sdw_st_open(path, &f, &err);
    *ok = st == want && f == NULL && err.code == want;
    if (!*ok) fprintf(stderr, "  open(%s) = %d (%s), want %d\n", path, (int)st, err.msg, (int)want);
    sdw_st_close(f);
    return err.msg;
}

#define ASSERT_OPEN_FAILS(path, want, needle)                                                      \
    do {                                                                                           \
        const char *_p = (path);                                                                   \
        ASSERT_TRUE(_p != NULL);                                                                   \
        bool _ok;                                                                                  \
        const char *_m = open_fails(_p, (want), &_ok);                                             \
        ASSERT_TRUE(_ok);                                                                          \
        ASSERT_STR_CONTAINS(_m, needle);                                                           \
        ASSERT_STR_CONTAINS(_m, _p);                                                               \
    } while (0)

/* ---- real files ---- */

static int g_n_files, g_n_bad;
static int visit(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    size_t n = strlen(path);
    if (type != FTW_F || n < 12 || strcmp(path + n - 12, ".safetensors") != 0) return 0;
    sdw_error err = {0};
    sdw_st_file *f;
    if (sdw_st_open(path, &f, &err) != SDW_OK) {
        fprintf(stderr, "  %s\n", err.msg);
        g_n_bad++;
        return 0;
    }
    g_n_files++;
    /* sorted, findable, data inside the file */
    for (int i = 0; i < sdw_st_count(f); i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        if (sdw_st_find(f, t->name) != t) g_n_bad++;
        if (i && strcmp(sdw_st_at(f, i - 1)->name, t->name) >= 0) g_n_bad++;
        if (t->n_bytes != t->n_elems * sdw_dtype_size(t->dtype)) g_n_bad++;
    }
    if (sdw_st_find(f, "no.such.tensor")) g_n_bad++;
    sdw_st_close(f);
    return 0;
}

static void test_open_every_fixture_model(void) {
    g_n_files = g_n_bad = 0;
    ASSERT_EQ_INT(nftw(sdw_test_path("models"), visit, 16, FTW_PHYS), 0);
    ASSERT_EQ_INT(g_n_bad, 0);
    ASSERT_TRUE(g_n_files >= 30);
}

static void test_unet_tensor(void) {
    sdw_error err = {0};
    sdw_st_file *f;
    const char *p = sdw_test_path("models/tiny-sd15/unet/diffusion_pytorch_model.safetensors");
    ASSERT_OK(sdw_st_open(p, &f, &err), &err);
    ASSERT_STR_CONTAINS(sdw_st_path(f), "tiny-sd15/unet");
    const sdw_st_tensor *t = sdw_st_find(f, "conv_in.weight");
    ASSERT_TRUE(t != NULL);
    ASSERT_EQ_INT(t->dtype, SDW_DTYPE_F32);
    ASSERT_EQ_INT(t->n_dims, 4);
    ASSERT_EQ_INT(t->shape[0], 32);
    ASSERT_EQ_INT(t->shape[1], 4);
    ASSERT_EQ_INT(t->shape[2], 3);
    ASSERT_EQ_INT(t->n_elems, 32 * 4 * 9);
    sdw_st_close(f);
}

static void test_sdxl_single_file_is_f16(void) {
    sdw_error err = {0};
    sdw_st_file *f;
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-sdxl.safetensors"), &f, &err), &err);
    const sdw_st_tensor *t =
        sdw_st_find(f, "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight");
    ASSERT_TRUE(t != NULL);
    ASSERT_EQ_INT(t->dtype, SDW_DTYPE_F16);
    ASSERT_EQ_INT(t->shape[0], 49408);
    t = sdw_st_find(f, "conditioner.embedders.0.transformer.text_model.embeddings.position_ids");
    ASSERT_TRUE(t != NULL);
    ASSERT_EQ_INT(t->dtype, SDW_DTYPE_I64);
    t = sdw_st_find(f, "conditioner.embedders.1.model.logit_scale");
    ASSERT_TRUE(t != NULL);
    ASSERT_EQ_INT(t->n_dims, 0);
    ASSERT_EQ_INT(t->n_elems, 1);
    sdw_st_close(f);
}

/* ---- malformed files ---- */

static void test_too_short(void) {
    ASSERT_OPEN_FAILS(tmp_file("missing.safetensors"), SDW_E_IO, "cannot open");
    ASSERT_TRUE(write_bytes(tmp_file("empty.safetensors"), "", 0));
    ASSERT_OPEN_FAILS(tmp_file("empty.safetensors"), SDW_E_FORMAT, "not a safetensors file");
    ASSERT_TRUE(write_bytes(tmp_file("four.safetensors"), "\x10\0\0\0", 4));
    ASSERT_OPEN_FAILS(tmp_file("four.safetensors"), SDW_E_FORMAT, "not a safetensors file");
}

static void test_truncated_data(void) {
    const char *j = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    ASSERT_OPEN_FAILS(write_st("trunc.safetensors", j, 8, 0), SDW_E_FORMAT, "past the end");
    ASSERT_OPEN_FAILS(tmp_file("trunc.safetensors"), SDW_E_FORMAT, "tensor a");
    ASSERT_OPEN_FAILS(tmp_file("trunc.safetensors"), SDW_E_FORMAT, "truncated");
}

static void test_header_length_past_end(void) {
    const char *j = "{}";
    ASSERT_OPEN_FAILS(write_st("hlen.safetensors", j, 0, 4096), SDW_E_FORMAT,
                      "header length 4096 is past the end");
}

static void test_header_not_json(void) {
    ASSERT_OPEN_FAILS(write_st("badjson.safetensors", "{\"a\": oops}", 0, 0), SDW_E_FORMAT,
                      "not valid JSON");
    ASSERT_OPEN_FAILS(write_st("array.safetensors", "[1, 2]  ", 0, 0), SDW_E_FORMAT,
                      "not a safetensors file");
    ASSERT_OPEN_FAILS(write_st("dup.safetensors",
                               "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                               "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}",
                               8, 0),
                      SDW_E_FORMAT, "duplicate");
}

static void test_offsets_past_end(void) {
    const char *j = "{\"w\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}";
    ASSERT_OPEN_FAILS(write_st("past.safetensors", j, 12, 0), SDW_E_FORMAT,
                      "tensor w: data_offsets [8, 16] past the end of the data section (12 bytes");
    j = "{\"w\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[8,4]}}";
    ASSERT_OPEN_FAILS(write_st("backwards.safetensors", j, 12, 0), SDW_E_FORMAT,
                      "begin 8 > end 4");
    j = "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[-4,0]}}";
    ASSERT_OPEN_FAILS(write_st("negative.safetensors", j, 12, 0), SDW_E_FORMAT,
                      "non-negative integers");
}

static void test_overlapping_offsets(void) {
    const char *j = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                    "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}";
    ASSERT_OPEN_FAILS(write_st("overlap.safetensors", j, 12, 0), SDW_E_FORMAT,
                      "tensors x and y have overlapping data_offsets");
}

static void test_size_mismatch(void) {
    const char *j = "{\"w\":{\"dtype\":\"BF16\",\"shape\":[3,2],\"data_offsets\":[0,16]}}";
    ASSERT_OPEN_FAILS(write_st("size.safetensors", j, 16, 0), SDW_E_FORMAT,
                      "tensor w: shape x dtype size is 12 bytes but data_offsets span 16 bytes");
    /* 2^62 x 2^62 elements: the element count overflows before any comparison */
    j = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],"
        "\"data_offsets\":[0,0]}}";
    ASSERT_OPEN_FAILS(write_st("ovf.safetensors", j, 0, 0), SDW_E_FORMAT, "overflows");
    j = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2, 1.5],\"data_offsets\":[0,8]}}";
    ASSERT_OPEN_FAILS(write_st("realdim.safetensors", j, 8, 0), SDW_E_FORMAT,
                      "shape entries must be non-negative integers");
    j = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}";
    ASSERT_OPEN_FAILS(write_st("dims.safetensors", j, 4, 0), SDW_E_UNSUPPORTED,
                      "9 dimensions");
}

static void test_unknown_dtype(void) {
    const char *j = "{\"w\":{\"dtype\":\"F42\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    ASSERT_OPEN_FAILS(write_st("dtype.safetensors", j, 4, 0), SDW_E_FORMAT,
                      "tensor w: unknown dtype \"F42\"");
    /* a dtype safetensors defines that no model uses (fp8 is supported: test_fp8) */
    j = "{\"w\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
    ASSERT_OPEN_FAILS(write_st("u16.safetensors", j, 4, 0), SDW_E_UNSUPPORTED,
                      "dtype U16 is not supported");
    j = "{\"w\":{\"shape\":[4],\"data_offsets\":[0,4]}}";
    ASSERT_OPEN_FAILS(write_st("nodtype.safetensors", j, 4, 0), SDW_E_FORMAT, "\"dtype\"");
}

static void test_metadata(void) {
    sdw_error err = {0};
    sdw_st_file *f;
    const char *j = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"b\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[4,6]},"
                    "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}";
    const char *p = write_st("meta.safetensors", j, 6, 0);
    ASSERT_OK(sdw_st_open(p, &f, &err), &err);
    ASSERT_EQ_INT(sdw_st_count(f), 2);
    ASSERT_TRUE(strcmp(sdw_st_at(f, 0)->name, "a") == 0);
    ASSERT_TRUE(sdw_st_find(f, "__metadata__") == NULL);
    ASSERT_EQ_INT(sdw_st_find(f, "b")->n_bytes, 2);
    sdw_st_close(f);
    j = "{\"__metadata__\":{\"steps\":20}}";
    ASSERT_OPEN_FAILS(write_st("badmeta.safetensors", j, 0, 0), SDW_E_FORMAT,
                      "\"__metadata__\" entry \"steps\" must be a string");
}

static void test_png_is_not_safetensors(void) {
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13,
                                  'I',  'H', 'D', 'R', 0,    0,    0,    1,    0, 0, 0, 1};
    ASSERT_TRUE(write_bytes(tmp_file("image.safetensors"), png, sizeof png));
    ASSERT_OPEN_FAILS(tmp_file("image.safetensors"), SDW_E_FORMAT, "not a safetensors file");
}

static void test_pickle_refused(void) {
    /* protocol-2 pickle of an empty dict: what torch.save wrote before zip archives */
    static const uint8_t pkl[] = {0x80, 0x02, '}', 'q', 0x00, '.'};
    ASSERT_TRUE(write_bytes(tmp_file("model.ckpt"), pkl, sizeof pkl));
    ASSERT_OPEN_FAILS(tmp_file("model.ckpt"), SDW_E_UNSUPPORTED, "PyTorch pickle checkpoint");
    ASSERT_OPEN_FAILS(tmp_file("model.ckpt"), SDW_E_UNSUPPORTED, "arbitrary code");
    ASSERT_OPEN_FAILS(tmp_file("model.ckpt"), SDW_E_UNSUPPORTED, "Convert it to .safetensors");
    /* by magic whatever the name: a zip archive (torch >= 1.6) renamed to .safetensors */
    static const uint8_t zip[] = {'P', 'K', 3, 4, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    ASSERT_TRUE(write_bytes(tmp_file("renamed.safetensors"), zip, sizeof zip));
    ASSERT_OPEN_FAILS(tmp_file("renamed.safetensors"), SDW_E_UNSUPPORTED, "pickle");
    /* by extension, even when too short to have a magic */
    ASSERT_TRUE(write_bytes(tmp_file("tiny.pth"), "x", 1));
    ASSERT_OPEN_FAILS(tmp_file("tiny.pth"), SDW_E_UNSUPPORTED, "pickle");
    /* a real safetensors file named .bin is read: it contains no pickle */
    sdw_error err = {0};
    sdw_st_file *f;
    const char *p = write_st("model.bin", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, 0);
    ASSERT_OK(sdw_st_open(p, &f, &err), &err);
    sdw_st_close(f);
}

static void test_open_memory(void) {
    const char *j = "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t hl = strlen(j);
    uint8_t buf[256] = {0};
    uint64_t h = hl;
    memcpy(buf, &h, 8);
    memcpy(buf + 8, j, hl);
    float v[2] = {1.5f, -2.0f};
    memcpy(buf + 8 + hl, v, 8);
    sdw_error err = {0};
    sdw_st_file *f;
    ASSERT_OK(sdw_st_open_memory(buf, 8 + hl + 8, "upload", &f, &err), &err);
    const sdw_st_tensor *t = sdw_st_find(f, "t");
    ASSERT_TRUE(t && t->data == buf + 8 + hl);
    float out[2];
    sdw_convert_to_f32(t->dtype, t->data, out, 2);
    ASSERT_TRUE(out[0] == 1.5f && out[1] == -2.0f);
    sdw_st_close(f);
    ASSERT_STATUS(sdw_st_open_memory(buf, 8 + hl + 4, "upload", &f, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "upload: tensor t");
}

/* ---- conversion ---- */

static void test_convert_f16_bf16(void) {
    static const uint16_t h[] = {0x3c00, 0xc000, 0x0001, 0x03ff, 0x0400, 0x7bff,
                                 0x7c00, 0xfc00, 0x8000, 0x3555};
    const float want[] = {1.0f, -2.0f, 0x1p-24f, 0x3ffp-24f, 0x1p-14f, 65504.0f,
                          INFINITY, -INFINITY, -0.0f, 0x1.554p-2f};
    float got[10];
    sdw_convert_to_f32(SDW_DTYPE_F16, h, got, 10);
    for (int i = 0; i < 10; i++) ASSERT_TRUE(got[i] == want[i]);
    ASSERT_TRUE(signbit(got[8]));
    uint16_t nan16 = 0x7e00;
    sdw_convert_to_f32(SDW_DTYPE_F16, &nan16, got, 1);
    ASSERT_TRUE(isnan(got[0]));
    static const uint16_t b[] = {0x3f80, 0xc040, 0x7f80, 0x0001};
    sdw_convert_to_f32(SDW_DTYPE_BF16, b, got, 4);
    ASSERT_TRUE(got[0] == 1.0f && got[1] == -3.0f && isinf(got[2]) && got[3] == 0x1p-133f);
}

/* Every half value against the IEEE definition, from an odd address (tensor data need not be
 * aligned), so both the vector path and the scalar tail are covered. */
static void test_convert_all_f16_values(void) {
    enum { N = 65536 };
    uint8_t *raw = malloc(2 * N + 1);
    float *got = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) {
        uint16_t h = (uint16_t)i;
        memcpy(raw + 1 + 2 * i, &h, 2);
    }
    sdw_convert_to_f32(SDW_DTYPE_F16, raw + 1, got, N - 3); /* N - 3: leaves a scalar tail */
    sdw_convert_to_f32(SDW_DTYPE_F16, raw + 1 + 2 * (N - 3), got + N - 3, 3);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        int sign = i >> 15, e = (i >> 10) & 31, m = i & 1023;
        double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
        if (sign) v = -v;
        bool ok = isnan(v) ? isnan(got[i]) : (got[i] == (float)v && !signbit(got[i]) == !sign);
        if (!ok && bad++ < 5) fprintf(stderr, "  f16 0x%04x -> %a, want %a\n", i, got[i], v);
    }
    free(raw);
    free(got);
    ASSERT_EQ_INT(bad, 0);
}

/* Writes values through the writer as dtype and reads them back. */
static bool roundtrip(const char *name, sdw_dtype dtype, const float *in, float *out, size_t n) {
    sdw_error err = {0};
    sdw_st_writer *w;
    const char *p = tmp_file(name);
    if (sdw_st_writer_create(p, &w, &err) != SDW_OK) return false;
    int64_t shape[2] = {1, (int64_t)n};
    sdw_st_writer_add(w, "v", dtype, 2, shape);
    sdw_st_writer_add(w, "pad", SDW_DTYPE_F32, 0, NULL);
    float pad = 7;
    if (sdw_st_writer_begin(w, &err) || sdw_st_writer_write(w, in, &err) ||
        sdw_st_writer_write(w, &pad, &err)) {
        sdw_st_writer_finish(w, NULL);
        return false;
    }
    if (sdw_st_writer_finish(w, &err) != SDW_OK) return false;
    sdw_st_file *f;
    if (sdw_st_open(p, &f, &err) != SDW_OK) {
        fprintf(stderr, "  %s\n", err.msg);
        return false;
    }
    const sdw_st_tensor *t = sdw_st_find(f, "v");
    bool ok = t && t->dtype == dtype && t->n_elems == n && t->shape[1] == (int64_t)n &&
              ((uintptr_t)t->data & 7) == 0; /* header padded to 8 */
    if (ok) sdw_convert_to_f32(dtype, t->data, out, n);
    const sdw_st_tensor *tp = sdw_st_find(f, "pad");
    float padv = 0;
    if (tp) memcpy(&padv, tp->data, 4); /* after 2n bytes of f16: not 4-aligned */
    ok = ok && tp && tp->n_dims == 0 && padv == 7.0f;
    sdw_st_close(f);
    return ok;
}

static void test_writer_f16_rounding(void) {
    const float in[] = {1.0f, 65504.0f, 65520.0f /* ties up to inf */, 65519.0f,
                        0x1p-24f, 0x1p-25f /* tie: to even = 0 */, 0x1.8p-24f /* tie: to 2^-23 */,
                        0x1.001p0f /* 1 + 2^-12: below half */, 0x1.002p0f /* tie: even = 1 */,
                        0x1.006p0f /* tie: even = 1 + 2^-9 */, -0x1.ffcp-15f, NAN, -INFINITY,
                        1e-30f};
    const float want[] = {1.0f, 65504.0f, INFINITY, 65504.0f, 0x1p-24f, 0.0f, 0x1p-23f,
                          1.0f, 1.0f, 0x1.008p0f, -0x1p-14f, NAN, -INFINITY, 0.0f};
    enum { N = sizeof in / sizeof in[0] };
    float out[N];
    ASSERT_TRUE(roundtrip("f16.safetensors", SDW_DTYPE_F16, in, out, N));
    for (int i = 0; i < N; i++) {
        if (isnan(want[i])) ASSERT_TRUE(isnan(out[i]));
        else if (out[i] != want[i]) {
            sdw_test_fail(__FILE__, __LINE__, "f16(%a) = %a, want %a", in[i], out[i], want[i]);
            return;
        }
    }
}

/* Every positive finite half and every midpoint between neighbours (ties go to the even
 * pattern), negated too: f32 -> f16 -> f32 through the writer. */
static void test_writer_f16_exhaustive(void) {
    enum { H = 0x7c00, N = 4 * H };
    uint16_t *pat = malloc(2 * (H + 1));
    float *val = malloc(sizeof(float) * (H + 1)), *in = malloc(sizeof(float) * N),
          *out = malloc(sizeof(float) * N);
    for (int i = 0; i <= H; i++) pat[i] = (uint16_t)i;
    sdw_convert_to_f32(SDW_DTYPE_F16, pat, val, H + 1);
    for (int i = 0; i < H; i++) {
        in[4 * i] = val[i];
        in[4 * i + 1] = (val[i] + val[i + 1]) / 2; /* exact: 12 significant bits */
        in[4 * i + 2] = -in[4 * i];
        in[4 * i + 3] = -in[4 * i + 1];
    }
    bool ok = roundtrip("f16all.safetensors", SDW_DTYPE_F16, in, out, N);
    int bad = 0;
    for (int i = 0; ok && i < H; i++) {
        float mid = val[i + 1 - (i & 1 ? 0 : 1)]; /* even pattern of the pair (i, i+1) */
        float want[4] = {val[i], mid, -val[i], -mid};
        for (int k = 0; k < 4; k++)
            if (out[4 * i + k] != want[k] && bad++ < 5)
                fprintf(stderr, "  f16(%a) = %a, want %a\n", in[4 * i + k], out[4 * i + k], want[k]);
    }
    free(pat);
    free(val);
    free(in);
    free(out);
    ASSERT_TRUE(ok);
    ASSERT_EQ_INT(bad, 0);
}

static void test_writer_bf16_f32(void) {
    /* bf16 keeps 7 mantissa bits: ulp(1) = 2^-7 = 0x0.02p0 */
    const float in[] = {1.0f, 0x1.0101p0f /* above half */, 0x1.01p0f /* tie: even = 1 */,
                        0x1.03p0f /* tie: even = 1.04 */, -3.5f, INFINITY, NAN};
    const float want[] = {1.0f, 0x1.02p0f, 1.0f, 0x1.04p0f, -3.5f, INFINITY, NAN};
    float out[7];
    ASSERT_TRUE(roundtrip("bf16.safetensors", SDW_DTYPE_BF16, in, out, 7));
    for (int i = 0; i < 7; i++) {
        if (isnan(want[i])) ASSERT_TRUE(isnan(out[i]));
        else ASSERT_TRUE(out[i] == want[i]);
    }
    ASSERT_TRUE(roundtrip("f32.safetensors", SDW_DTYPE_F32, in, out, 7));
    for (int i = 0; i < 6; i++) ASSERT_TRUE(out[i] == in[i]);
}

static void test_writer_misuse_leaves_no_file(void) {
    sdw_error err = {0};
    sdw_st_writer *w;
    const char *p = tmp_file("partial.safetensors");
    ASSERT_OK(sdw_st_writer_create(p, &w, &err), &err);
    int64_t s[1] = {4};
    sdw_st_writer_add(w, "a", SDW_DTYPE_F32, 1, s);
    sdw_st_writer_add(w, "a", SDW_DTYPE_F32, 1, s);
    ASSERT_STATUS(sdw_st_writer_begin(w, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "tensor a added twice");
    ASSERT_STATUS(sdw_st_writer_finish(w, &err), SDW_E_INVALID_ARG);
    FILE *f = fopen(p, "rb");
    ASSERT_TRUE(f == NULL);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    f = fopen(tmp, "rb");
    ASSERT_TRUE(f == NULL);
    ASSERT_TRUE(sdw_st_writer_finish(NULL, NULL) == SDW_OK);
}

int main(void) {
    RUN(test_open_every_fixture_model);
    RUN(test_unet_tensor);
    RUN(test_sdxl_single_file_is_f16);
    RUN(test_too_short);
    RUN(test_truncated_data);
    RUN(test_header_length_past_end);
    RUN(test_header_not_json);
    RUN(test_offsets_past_end);
    RUN(test_overlapping_offsets);
    RUN(test_size_mismatch);
    RUN(test_unknown_dtype);
    RUN(test_metadata);
    RUN(test_png_is_not_safetensors);
    RUN(test_pickle_refused);
    RUN(test_open_memory);
    RUN(test_convert_f16_bf16);
    RUN(test_convert_all_f16_values);
    RUN(test_writer_f16_rounding);
    RUN(test_writer_f16_exhaustive);
    RUN(test_writer_bf16_f32);
    RUN(test_writer_misuse_leaves_no_file);
    return sdw_test_finish();
}
