/* 8-bit float tensors (F8_E4M3 = torch.float8_e4m3fn, F8_E5M2 = torch.float8_e5m2): every code
 * decoded against the formats' definitions, f32 -> fp8 rounding against a brute-force nearest
 * search, writer round trips and range refusals, fp8 files opened and validated, and the
 * weights layer handing fp8 tensors out as f32 / raw / saved. */
#define _GNU_SOURCE
#include "io/weights.h"
#include "sdw_test.h"

#include <stdlib.h>
#include <unistd.h>

/* ---- the formats, from their definitions (independent of the library's converters) ---- */

typedef struct f8_format {
    sdw_dtype dtype;
    int man_bits, bias;
    bool ieee;          /* E5M2: all-ones exponent is inf (mantissa 0) / NaN, as IEEE */
    double overflow_at; /* the step above the largest finite value: rounding reaches it -> */
    uint8_t overflow;   /*   this code (E4M3: NaN, no infinities; E5M2: infinity) */
} f8_format;

static const f8_format k_e4m3 = {SDW_DTYPE_F8_E4M3, 3, 7, false, 480.0, 0x7f};
static const f8_format k_e5m2 = {SDW_DTYPE_F8_E5M2, 2, 15, true, 65536.0, 0x7c};

/* The value of code c (NaN for NaN codes), by ldexp: exponent field 0 holds m * 2^(1-bias-M);
 * others (1.m) * 2^(e-bias); E4M3's only special code is S.1111.111 (NaN). */
static double f8_decode(const f8_format *f, int c) {
    const int M = f->man_bits, E = 7 - M;
    const int sign = c >> 7, e = (c >> M) & ((1 << E) - 1), m = c & ((1 << M) - 1);
    double v;
    if (f->ieee && e == (1 << E) - 1)
        v = m ? NAN : INFINITY;
    else if (!f->ieee && e == (1 << E) - 1 && m == (1 << M) - 1)
        v = NAN;
    else if (e == 0)
        v = ldexp(m, 1 - f->bias - M);
    else
        v = ldexp((1 << M) + m, e - f->bias - M);
    return sign ? -v : v;
}

/* The code x rounds to, found by search: the nearest of the finite non-negative codes and the
 * overflow step (which stands for the overflow code), ties to the even mantissa; NaN -> 0x7f.
 * The overflow step's mantissa parity: 480 = 1.111b x 2^8 would be odd, 65536 = 1.00b x 2^16
 * even. */
static int f8_nearest(const f8_format *f, float x) {
    const int sign = signbit(x) ? 0x80 : 0;
    if (isnan(x)) return sign | 0x7f;
    const double a = fabs((double)x);
    int best = -1;
    double best_d = INFINITY;
    const int n_finite = f->ieee ? 0x7c : 0x7f; /* codes 0 .. n_finite-1 are finite */
    for (int c = 0; c <= n_finite; c++) {
        const double v = c == n_finite ? f->overflow_at : f8_decode(f, c);
        const double d = fabs(v - a);
        const bool even = (c & 1) == 0; /* mantissa LSB is the code's LSB (n_finite: see above) */
        if (d < best_d || (d == best_d && even)) best = c, best_d = d;
    }
    if (a > f->overflow_at) best = n_finite; /* beyond the step: overflow as well */
    return sign | (best == n_finite ? f->overflow : best);
}

static const char *tmp_file(const char *name) {
    static char bufs[4][1024];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, 1024, "%s/%s", sdw_test_tmpdir(), name);
    return b;
}

/* ---- decoding ---- */

static void check_all_codes(const f8_format *f) {
    uint8_t raw[257];
    float got[256];
    for (int i = 0; i < 256; i++)
        raw[1 + i] = (uint8_t)i; /* from an odd address; vector body and scalar tail */
    sdw_convert_to_f32(f->dtype, raw + 1, got, 253);
    sdw_convert_to_f32(f->dtype, raw + 1 + 253, got + 253, 3);
    int bad = 0;
    for (int c = 0; c < 256; c++) {
        const double v = f8_decode(f, c);
        const bool ok = isnan(v) ? isnan(got[c]) && !signbit(got[c]) == !(c & 0x80)
                                 : got[c] == (float)v && !signbit(got[c]) == !(c & 0x80);
        if (!ok && bad++ < 5)
            fprintf(stderr, "  %s 0x%02x -> %a, want %a\n", sdw_dtype_str(f->dtype), c, got[c], v);
    }
    ASSERT_EQ_INT(bad, 0);
}

static void test_e4m3_every_code(void) {
    check_all_codes(&k_e4m3);
    /* landmarks of the format: max 448, smallest normal 2^-6, smallest subnormal 2^-9 */
    const uint8_t c[] = {0x7e, 0x08, 0x01, 0x38, 0xfe, 0x80};
    float v[6];
    sdw_convert_to_f32(SDW_DTYPE_F8_E4M3, c, v, 6);
    ASSERT_TRUE(v[0] == 448.0f && v[1] == 0x1p-6f && v[2] == 0x1p-9f && v[3] == 1.0f &&
                v[4] == -448.0f && v[5] == 0.0f && signbit(v[5]));
}

static void test_e5m2_every_code(void) {
    check_all_codes(&k_e5m2);
    const uint8_t c[] = {0x7b, 0x7c, 0xfc, 0x01, 0x3c};
    float v[5];
    sdw_convert_to_f32(SDW_DTYPE_F8_E5M2, c, v, 5);
    ASSERT_TRUE(v[0] == 57344.0f && v[1] == INFINITY && v[2] == -INFINITY && v[3] == 0x1p-16f &&
                v[4] == 1.0f);
}

static void test_dtype_names(void) {
    ASSERT_TRUE(strcmp(sdw_dtype_str(SDW_DTYPE_F8_E4M3), "F8_E4M3") == 0);
    ASSERT_TRUE(strcmp(sdw_dtype_str(SDW_DTYPE_F8_E5M2), "F8_E5M2") == 0);
    ASSERT_EQ_INT(sdw_dtype_size(SDW_DTYPE_F8_E4M3), 1);
    ASSERT_EQ_INT(sdw_dtype_size(SDW_DTYPE_F8_E5M2), 1);
    ASSERT_TRUE(sdw_dtype_is_float(SDW_DTYPE_F8_E4M3) && sdw_dtype_is_float(SDW_DTYPE_F8_E5M2));
    ASSERT_TRUE(sdw_dtype_is_float(SDW_DTYPE_BF16) && !sdw_dtype_is_float(SDW_DTYPE_U8) &&
                !sdw_dtype_is_float(SDW_DTYPE_I64));
}

/* ---- rounding f32 -> fp8 ---- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rand32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 32);
}

/* Inputs: every value, every midpoint between neighbours, one f32 ulp either side of both,
 * special values, and random f32 patterns whose exponents span the format and beyond. */
static size_t rounding_inputs(const f8_format *f, float *in, size_t cap) {
    size_t n = 0;
    const int n_finite = f->ieee ? 0x7c : 0x7f;
    for (int c = 0; c < n_finite; c++) {
        const float v = (float)f8_decode(f, c);
        const float next = (float)(c + 1 == n_finite ? f->overflow_at : f8_decode(f, c + 1));
        const float mid = (v + next) / 2; /* exact: a few significant bits */
        const float list[] = {v,   nextafterf(v, 0),   nextafterf(v, INFINITY),
                              mid, nextafterf(mid, 0), nextafterf(mid, INFINITY)};
        for (size_t k = 0; k < 6; k++) {
            in[n++] = list[k];
            in[n++] = -list[k];
        }
    }
    const float special[] = {INFINITY,
                             -INFINITY,
                             NAN,
                             -NAN,
                             1e30f,
                             -1e30f,
                             0x1p-149f,
                             1e-40f,
                             (float)f->overflow_at,
                             -(float)f->overflow_at,
                             0.0f,
                             -0.0f};
    for (size_t k = 0; k < sizeof special / sizeof *special; k++)
        in[n++] = special[k];
    while (n < cap) {
        /* exponents 2^-20 .. 2^20 around the format's range, random mantissa and sign */
        const uint32_t u = (rand32() & 0x807fffffu) | ((uint32_t)(107 + rand32() % 41) << 23);
        memcpy(&in[n++], &u, 4);
    }
    return n;
}

static void check_rounding(const f8_format *f) {
    enum { CAP = 20000 };
    float *in = malloc(sizeof(float) * CAP);
    uint8_t *got = malloc(CAP);
    const size_t n = rounding_inputs(f, in, CAP);
    sdw_convert_from_f32(f->dtype, in, got, n);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const int want = f8_nearest(f, in[i]);
        if (got[i] != want && bad++ < 5)
            fprintf(stderr, "  %s(%a) = 0x%02x, want 0x%02x\n", sdw_dtype_str(f->dtype), in[i],
                    got[i], want);
    }
    free(in);
    free(got);
    ASSERT_EQ_INT(bad, 0);
}

static void test_e4m3_rounding(void) {
    check_rounding(&k_e4m3);
    /* the rule at the top, spelled out: 464 ties to 448, above it NaN (no saturation) */
    const float in[] = {448.0f, 464.0f, 464.5f, 479.0f, 1e6f, -500.0f, INFINITY};
    const uint8_t want[] = {0x7e, 0x7e, 0x7f, 0x7f, 0x7f, 0xff, 0x7f};
    uint8_t got[7];
    sdw_convert_from_f32(SDW_DTYPE_F8_E4M3, in, got, 7);
    ASSERT_TRUE(memcmp(got, want, 7) == 0);
}

static void test_e5m2_rounding(void) {
    check_rounding(&k_e5m2);
    const float in[] = {57344.0f, 61439.0f, 61440.0f, -70000.0f, 0x1p-17f, 0x1.8p-17f};
    const uint8_t want[] = {0x7b, 0x7b, 0x7c, 0xfc, 0x00, 0x01}; /* ties: to even */
    uint8_t got[6];
    sdw_convert_from_f32(SDW_DTYPE_F8_E5M2, in, got, 6);
    ASSERT_TRUE(memcmp(got, want, 6) == 0);
}

/* Every code's value converts back to that code (NaN codes to the canonical NaN). */
static void test_code_round_trip(void) {
    const f8_format *fs[] = {&k_e4m3, &k_e5m2};
    for (int k = 0; k < 2; k++) {
        uint8_t codes[256], back[256];
        float v[256];
        for (int i = 0; i < 256; i++)
            codes[i] = (uint8_t)i;
        sdw_convert_to_f32(fs[k]->dtype, codes, v, 256);
        sdw_convert_from_f32(fs[k]->dtype, v, back, 256);
        for (int i = 0; i < 256; i++) {
            if (isnan(v[i]))
                ASSERT_EQ_INT(back[i] & 0x7f, 0x7f);
            else
                ASSERT_EQ_INT(back[i], i);
        }
    }
}

/* ---- files ---- */

/* Writes tensors "a" (F8_E4M3, [n]) and "b" (F8_E5M2, [n]) and "c" (BF16, [2]) from in. */
static sdw_status write_fp8_file(const char *path, const float *a, const float *b, size_t n,
                                 sdw_error *err) {
    sdw_st_writer *w;
    sdw_status st = sdw_st_writer_create(path, &w, err);
    if (st) return st;
    sdw_st_writer_add(w, "a", SDW_DTYPE_F8_E4M3, 1, (int64_t[]){(int64_t)n});
    sdw_st_writer_add(w, "b", SDW_DTYPE_F8_E5M2, 1, (int64_t[]){(int64_t)n});
    sdw_st_writer_add(w, "c", SDW_DTYPE_BF16, 1, (int64_t[]){2});
    const float c[2] = {1.5f, -2.0f};
    if ((st = sdw_st_writer_begin(w, err)) || (st = sdw_st_writer_write(w, a, err)) ||
        (st = sdw_st_writer_write(w, b, err)) || (st = sdw_st_writer_write(w, c, err))) {
        sdw_st_writer_finish(w, NULL);
        return st;
    }
    return sdw_st_writer_finish(w, err);
}

/* Every finite value of both formats through the writer and back, bit for bit. */
static void test_writer_round_trip(void) {
    enum { N = 254 };
    float a[N], b[N], got[N];
    int na = 0, nb = 0;
    for (int c = 0; c < 256; c++) {
        const double va = f8_decode(&k_e4m3, c), vb = f8_decode(&k_e5m2, c);
        if (isfinite(va)) a[na++] = (float)va;
        if (isfinite(vb) && nb < N) b[nb++] = (float)vb;
    }
    ASSERT_EQ_INT(na, N);
    while (nb < N)
        b[nb++] = 0.25f; /* E5M2 has 248 finite codes */
    sdw_error err = {0};
    const char *p = tmp_file("fp8.safetensors");
    ASSERT_OK(write_fp8_file(p, a, b, N, &err), &err);
    sdw_st_file *f;
    ASSERT_OK(sdw_st_open(p, &f, &err), &err);
    const sdw_st_tensor *ta = sdw_st_find(f, "a"), *tb = sdw_st_find(f, "b"),
                        *tc = sdw_st_find(f, "c");
    ASSERT_TRUE(ta && tb && tc);
    ASSERT_EQ_INT(ta->dtype, SDW_DTYPE_F8_E4M3);
    ASSERT_EQ_INT(tb->dtype, SDW_DTYPE_F8_E5M2);
    ASSERT_EQ_INT(ta->n_bytes, N);
    ASSERT_EQ_INT(tb->n_bytes, N);
    ASSERT_EQ_INT(tc->dtype, SDW_DTYPE_BF16);
    sdw_convert_to_f32(ta->dtype, ta->data, got, N);
    ASSERT_TRUE(memcmp(got, a, sizeof a) == 0);
    sdw_convert_to_f32(tb->dtype, tb->data, got, N);
    ASSERT_TRUE(memcmp(got, b, sizeof b) == 0);
    sdw_convert_to_f32(tc->dtype, tc->data, got, 2); /* after 2 x 254 bytes: not aligned */
    ASSERT_TRUE(got[0] == 1.5f && got[1] == -2.0f);
    sdw_st_close(f);
}

/* A finite value the format cannot hold is refused (torch would store NaN / inf), naming the
 * tensor and the value; no file is left behind. */
static void test_writer_refuses_out_of_range(void) {
    float a[4] = {1.0f, 464.0f /* ties down to 448: fine */, 2.0f, 3.0f}, b[4] = {0};
    sdw_error err = {0};
    const char *p = tmp_file("ok.safetensors");
    ASSERT_OK(write_fp8_file(p, a, b, 4, &err), &err);
    a[2] = 500.0f;
    p = tmp_file("bad_a.safetensors");
    ASSERT_STATUS(write_fp8_file(p, a, b, 4, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "tensor a");
    ASSERT_STR_CONTAINS(err.msg, "500");
    ASSERT_STR_CONTAINS(err.msg, "F8_E4M3");
    ASSERT_TRUE(access(p, F_OK) != 0);
    a[2] = 2.0f;
    b[3] = -61440.0f; /* rounds to -inf */
    p = tmp_file("bad_b.safetensors");
    ASSERT_STATUS(write_fp8_file(p, a, b, 4, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "tensor b");
    ASSERT_STR_CONTAINS(err.msg, "F8_E5M2");
    ASSERT_TRUE(access(p, F_OK) != 0);
    /* NaN and infinities are not "out of range": they are stored as what they are */
    b[3] = INFINITY;
    a[3] = NAN;
    p = tmp_file("special.safetensors");
    ASSERT_OK(write_fp8_file(p, a, b, 4, &err), &err);
}

/* A file with this header text and data_len bytes of data (0x38 = 1.0 in E4M3). */
static const char *write_raw(const char *name, const char *json, size_t data_len) {
    size_t hl = strlen(json), n = 8 + hl + data_len;
    uint8_t *buf = malloc(n);
    uint64_t hlen = hl;
    memcpy(buf, &hlen, 8);
    memcpy(buf + 8, json, hl);
    memset(buf + 8 + hl, 0x38, data_len);
    const char *path = tmp_file(name);
    FILE *fp = fopen(path, "wb");
    bool ok = fp && fwrite(buf, 1, n, fp) == n;
    if (fp && fclose(fp) != 0) ok = false;
    free(buf);
    return ok ? path : NULL;
}

static void test_open_validates_fp8(void) {
    sdw_error err = {0};
    sdw_st_file *f = NULL;
    const char *j = "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,3],\"data_offsets\":[0,6]},"
                    "\"v\":{\"dtype\":\"F8_E5M2\",\"shape\":[2],\"data_offsets\":[6,8]}}";
    const char *p = write_raw("ok8.safetensors", j, 8);
    ASSERT_TRUE(p);
    ASSERT_OK(sdw_st_open(p, &f, &err), &err);
    const sdw_st_tensor *t = sdw_st_find(f, "w");
    ASSERT_TRUE(t && t->dtype == SDW_DTYPE_F8_E4M3 && t->n_elems == 6 && t->n_bytes == 6 &&
                t->n_dims == 2 && t->shape[1] == 3);
    float v[6];
    sdw_convert_to_f32(t->dtype, t->data, v, 6);
    ASSERT_TRUE(v[0] == 1.0f && v[5] == 1.0f);
    t = sdw_st_find(f, "v");
    ASSERT_TRUE(t && t->dtype == SDW_DTYPE_F8_E5M2 && t->n_bytes == 2);
    sdw_st_close(f);
    f = NULL;

    /* one byte per element: [2,3] spanning 12 bytes (as if 2-byte) is refused */
    j = "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,3],\"data_offsets\":[0,12]}}";
    p = write_raw("size8.safetensors", j, 12);
    ASSERT_STATUS(sdw_st_open(p, &f, &err), SDW_E_FORMAT);
    ASSERT_TRUE(f == NULL);
    ASSERT_STR_CONTAINS(err.msg, "tensor w: shape x dtype size is 6 bytes but data_offsets span "
                                 "12 bytes");
    /* a truncated data section */
    j = "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,3],\"data_offsets\":[0,6]}}";
    p = write_raw("trunc8.safetensors", j, 4);
    ASSERT_STATUS(sdw_st_open(p, &f, &err), SDW_E_FORMAT);
    ASSERT_TRUE(f == NULL);
    ASSERT_STR_CONTAINS(err.msg, "trunc8.safetensors: tensor w: data_offsets [0, 6] past the end "
                                 "of the data section (4 bytes; file truncated?)");
}

/* ---- weights ---- */

static void test_weights_from_fp8_file(void) {
    /* w [3, 4] E4M3, b [3] BF16, ids [2] I64 */
    const char *p = tmp_file("w8.safetensors");
    sdw_error err = {0};
    sdw_st_writer *wr;
    float w[12], b[3] = {0.5f, -1, 2};
    for (int i = 0; i < 12; i++)
        w[i] = (float)f8_decode(&k_e4m3, 3 * i + 1); /* a spread of codes */
    ASSERT_OK(sdw_st_writer_create(p, &wr, &err), &err);
    sdw_st_writer_add(wr, "l.weight", SDW_DTYPE_F8_E4M3, 2, (int64_t[]){3, 4});
    sdw_st_writer_add(wr, "l.bias", SDW_DTYPE_BF16, 1, (int64_t[]){3});
    sdw_st_writer_add(wr, "other.weight", SDW_DTYPE_F8_E5M2, 1, (int64_t[]){3});
    ASSERT_OK(sdw_st_writer_begin(wr, &err), &err);
    ASSERT_OK(sdw_st_writer_write(wr, w, &err), &err);
    ASSERT_OK(sdw_st_writer_write(wr, b, &err), &err);
    ASSERT_OK(sdw_st_writer_write(wr, b, &err), &err);
    ASSERT_OK(sdw_st_writer_finish(wr, &err), &err);

    sdw_st_file *f;
    ASSERT_OK(sdw_st_open(p, &f, &err), &err);
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    ASSERT_EQ_INT(sdw_weights_stored_params(ws, ""), 12 + 3 + 3);
    sdw_dtype dt;
    size_t n;
    const void *raw = sdw_weights_raw(ws, "l.weight", 2, (int64_t[]){3, 4}, &dt, &n, &err);
    ASSERT_TRUE(raw != NULL);
    ASSERT_EQ_INT(dt, SDW_DTYPE_F8_E4M3);
    ASSERT_EQ_INT(n, 12);
    ASSERT_TRUE(raw == sdw_st_find(f, "l.weight")->data);
    const float *wf = sdw_weights_f32(ws, "l.weight", 2, (int64_t[]){3, 4}, &err);
    ASSERT_TRUE(wf && memcmp(wf, w, sizeof w) == 0);
    ASSERT_EQ_INT(sdw_weights_n_params(ws), 12);
    char msg[256];
    ASSERT_EQ_INT(sdw_weights_unused(ws, msg, sizeof msg), 2); /* fp8 tensors are parameters */
    ASSERT_STR_CONTAINS(msg, "other.weight");
    ASSERT_TRUE(sdw_weights_f32(ws, "l.bias", 1, (int64_t[]){3}, &err));

    /* saved again, everything in E4M3 */
    const char *p8 = tmp_file("w8_saved.safetensors");
    ASSERT_OK(sdw_weights_save(ws, p8, SDW_DTYPE_F8_E4M3, &err), &err);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
    ASSERT_OK(sdw_st_open(p8, &f, &err), &err);
    const sdw_st_tensor *t = sdw_st_find(f, "l.weight"), *tb = sdw_st_find(f, "l.bias");
    ASSERT_TRUE(t && t->dtype == SDW_DTYPE_F8_E4M3 && tb && tb->dtype == SDW_DTYPE_F8_E4M3);
    float back[12];
    sdw_convert_to_f32(t->dtype, t->data, back, 12);
    ASSERT_TRUE(memcmp(back, w, sizeof w) == 0);
    sdw_convert_to_f32(tb->dtype, tb->data, back, 3);
    ASSERT_TRUE(back[0] == 0.5f && back[1] == -1 && back[2] == 2);
    sdw_st_close(f);
}

static sdw_dtype pick_2d_e5m2(const char *name, int n_dims, const int64_t *shape, void *user) {
    (void)name, (void)shape;
    ++*(int *)user;
    return n_dims >= 2 ? SDW_DTYPE_F8_E5M2 : SDW_DTYPE_F32;
}

static void test_weights_save_mixed(void) {
    sdw_weights *ws = sdw_weights_create_random(5);
    sdw_error err = {0};
    const float *w = sdw_weights_f32(ws, "lin.weight", 2, (int64_t[]){8, 16}, &err);
    const float *b = sdw_weights_f32(ws, "lin.bias", 1, (int64_t[]){8}, &err);
    ASSERT_TRUE(w && b);
    const char *p = tmp_file("mixed.safetensors");
    int calls = 0;
    ASSERT_OK(sdw_weights_save_mixed(ws, p, pick_2d_e5m2, &calls, &err), &err);
    ASSERT_EQ_INT(calls, 2);
    sdw_st_file *f;
    ASSERT_OK(sdw_st_open(p, &f, &err), &err);
    const sdw_st_tensor *tw = sdw_st_find(f, "lin.weight"), *tb = sdw_st_find(f, "lin.bias");
    ASSERT_TRUE(tw && tw->dtype == SDW_DTYPE_F8_E5M2 && tw->n_bytes == 128);
    ASSERT_TRUE(tb && tb->dtype == SDW_DTYPE_F32 && memcmp(tb->data, b, 32) == 0);
    /* the stored values are the random ones rounded to E5M2 */
    float got[128];
    uint8_t q[128];
    float want[128];
    sdw_convert_to_f32(tw->dtype, tw->data, got, 128);
    sdw_convert_from_f32(SDW_DTYPE_F8_E5M2, w, q, 128);
    sdw_convert_to_f32(SDW_DTYPE_F8_E5M2, q, want, 128);
    ASSERT_TRUE(memcmp(got, want, sizeof got) == 0);
    sdw_st_close(f);
    sdw_weights_destroy(ws);
}

/* An integer tensor still is not a weight; the message lists the float types, fp8 included. */
static void test_weights_int_dtype_message(void) {
    const char *j = "{\"ids\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}";
    const char *p = write_raw("ids.safetensors", j, 4);
    sdw_error err = {0};
    sdw_st_file *f;
    ASSERT_OK(sdw_st_open(p, &f, &err), &err);
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    ASSERT_TRUE(!sdw_weights_f32(ws, "ids", 1, (int64_t[]){4}, &err));
    ASSERT_EQ_INT(err.code, SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "F8_E4M3, F8_E5M2");
    ASSERT_EQ_INT(sdw_weights_unused(ws, NULL, 0), 0);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
}

int main(void) {
    RUN(test_e4m3_every_code);
    RUN(test_e5m2_every_code);
    RUN(test_dtype_names);
    RUN(test_e4m3_rounding);
    RUN(test_e5m2_rounding);
    RUN(test_code_round_trip);
    RUN(test_writer_round_trip);
    RUN(test_writer_refuses_out_of_range);
    RUN(test_open_validates_fp8);
    RUN(test_weights_from_fp8_file);
    RUN(test_weights_save_mixed);
    RUN(test_weights_int_dtype_message);
    return sdw_test_finish();
}
