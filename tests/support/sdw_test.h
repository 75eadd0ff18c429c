/* sdw_test.h — the tiny test harness: ASSERT_* macros, a runner, fixture paths and goldens.
 *
 *   static void test_something(void) { ASSERT_EQ_INT(1 + 1, 2); }
 *   int main(void) { RUN(test_something); return sdw_test_finish(); }
 *
 * A failed ASSERT reports file:line and marks the current test failed, then returns from it.
 * sdw_test_finish() prints "N passed, N failed" and returns the exit code (77 = all skipped).
 */
#ifndef SDW_TEST_H
#define SDW_TEST_H

#include "sdw/image_model.h"
#include "sdw/status.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern int sdw_test_failures_in_current;
void sdw_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sdw_test_run(const char *name, void (*fn)(void));
void sdw_test_skip(const char *why); /* call from a test: counts it as skipped, then return */
int sdw_test_finish(void);

#define RUN(fn) sdw_test_run(#fn, fn)

#define ASSERT_TRUE(c)                                                                             \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            sdw_test_fail(__FILE__, __LINE__, "expected true: %s", #c);                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define ASSERT_EQ_INT(a, b)                                                                        \
    do {                                                                                           \
        long long _a = (long long)(a), _b = (long long)(b);                                        \
        if (_a != _b) {                                                                            \
            sdw_test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, _a, _b);           \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define ASSERT_OK(expr, errp)                                                                      \
    do {                                                                                           \
        sdw_status _s = (expr);                                                                    \
        const sdw_error *_ep = (errp); /* `&err` would warn: always true */                        \
        if (_s != SDW_OK) {                                                                        \
            sdw_test_fail(__FILE__, __LINE__, "%s failed (%d): %s", #expr, (int)_s,                \
                          _ep ? _ep->msg : "");                                                    \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define ASSERT_STATUS(expr, want)                                                                  \
    do {                                                                                           \
        sdw_status _s = (expr);                                                                    \
        if (_s != (want)) {                                                                        \
            sdw_test_fail(__FILE__, __LINE__, "%s returned %d, want %d", #expr, (int)_s,           \
                          (int)(want));                                                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define ASSERT_STR_CONTAINS(hay, needle)                                                           \
    do {                                                                                           \
        const char *_h = (hay), *_n = (needle);                                                    \
        if (!_h || !strstr(_h, _n)) {                                                              \
            sdw_test_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"", _h ? _h : "(null)", \
                          _n);                                                                     \
            return;                                                                                \
        }                                                                                          \
    } while (0)
/* Relative error as the bar defines it: max|a-b| / max|ref|. */
#define ASSERT_CLOSE_REL(got, ref, n, tol, what)                                                   \
    do {                                                                                           \
        double _e = sdw_test_rel_err((got), (ref), (n));                                           \
        if (!(_e <= (tol))) {                                                                      \
            sdw_test_fail(__FILE__, __LINE__, "%s: relative error %.3g > %.3g", (what), _e,        \
                          (double)(tol));                                                          \
            return;                                                                                \
        }                                                                                          \
    } while (0)

double sdw_test_rel_err(const float *got, const float *ref, size_t n);

/* References for the nn kernels, in double. Convolution: x NHWC [B,H,W,in], w OIHW (torch),
 * b [out] or NULL, zero padding pad before (OH, OW give the extent after), ref NHWC. */
void sdw_test_conv_ref(const float *x, const float *w, const float *b, int B, int H, int W, int in,
                       int out, int k, int stride, int pad, int OH, int OW, float *ref);
/* Linear: ref [M, out] = x [M, in] · wᵀ (w [out, in]) + b (or NULL). */
void sdw_test_linear_ref(const float *x, const float *w, const float *b, int64_t M, int in, int out,
                         float *ref);
/* Attention as its definition says it, in double: out [B, Lq, H*D] = softmax(q kᵀ · scale) v
 * per batch and head, q/k/v rows of the given strides (head h at channels h*D..), causal = key j
 * only for query i >= j. The reference the attention kernels are checked against. */
void sdw_test_attention_ref(const float *q, int64_t qs, const float *k, int64_t ks, const float *v,
                            int64_t vs, int B, int64_t Lq, int64_t Lk, int H, int D, float scale,
                            bool causal, float *out);

/* Fixtures folder: $SDW_FIXTURES, else ../shared/fixtures of the source tree. */
const char *sdw_test_fixtures(void);
/* Path of the built sdw binary: $SDW_BIN, else the build's. */
const char *sdw_test_bin(void);
/* snprintf into a static rotating buffer: fixture path joined with fmt. */
const char *sdw_test_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A new temporary directory (mkdtemp under $TMPDIR or /tmp); removed by sdw_test_finish. */
const char *sdw_test_tmpdir(void);

/* Runs the sdw binary with args (a shell fragment, printf-style); captures stdout + stderr into
 * out (NUL-terminated, truncated to cap). Returns the exit status, -1 if it did not exit. */
int sdw_test_run_sdw(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Max |a - b| over two PNGs' 8-bit samples; 256 when unreadable or of different sizes. */
int sdw_test_png_max_diff(const char *a, const char *b);
/* The same for two PNGs in memory. */
int sdw_test_png_bytes_max_diff(const void *a, size_t na, const void *b, size_t nb);
/* The same between an image and the PNG file at png_path. */
int sdw_test_image_max_diff(const sdw_image *img, const char *png_path);
/* A whole file into a new buffer (free()); NULL if it cannot be read. */
void *sdw_test_read_file(const char *path, size_t *n);

/* ---- goldens: ../shared/fixtures/golden/<model>/<case>/manifest.json ---- */
typedef struct sdw_golden sdw_golden;
typedef struct sdw_golden_tensor {
    char dtype[16];    /* "float32", "int32", ... */
    int n_dims;
    int64_t shape[8];
    size_t n;          /* element count */
    void *data;        /* owned by the golden; float or int32 as dtype says */
} sdw_golden_tensor;

/* Opens a case ("tiny-sd15/txt2img-ddim"); NULL if missing (test should skip/fail). */
sdw_golden *sdw_golden_open(const char *model_case);
void sdw_golden_close(sdw_golden *g);
/* The parsed manifest (a borrowed jansson json_t *). */
void *sdw_golden_manifest(const sdw_golden *g);
/* Loads tensor `name` (cached; borrowed until close). NULL if absent. */
const sdw_golden_tensor *sdw_golden_get(sdw_golden *g, const char *name);
/* Goldens are NCHW; our activations are NHWC. Returns a new malloc'd NHWC copy of a 4-D tensor. */
float *sdw_golden_nhwc(const sdw_golden_tensor *t);
/* Reads an .npy file's float32/int32 payload into a new buffer; NULL on error. */
void *sdw_test_load_npy(const char *path, sdw_golden_tensor *out);

/* ---- running golden cases through a model ---- */

/* The request a golden case ran: prompt, negative prompt, size, steps, guidance, seed, sampler
 * (the reference's "dpmpp2m" is dpm++2m); for image-to-image / inpainting cases also the
 * strength and the case's init_image.png (and mask_image.png), loaded into *init (*mask) and
 * pointed at by the request (free them with sdw_image_free). Strings are the manifest's. */
sdw_status sdw_golden_request(sdw_golden *g, sdw_request *req, sdw_image *init, sdw_image *mask,
                              sdw_error *err);

/* Stage-by-stage comparison: give sdw_stage_tap and a check to a pipeline's tap hook. Each
 * tapped tensor the reference recorded is compared (int32 token ids exactly, floats by relative
 * error within tol); mismatches are printed. */
typedef struct sdw_stage_check {
    sdw_golden *g;
    double tol;
    int n_compared, n_failed;
    double worst;
    char worst_name[64];
    char seen[16384]; /* " name " for every compared stage */
} sdw_stage_check;
void sdw_stage_tap(void *user, const char *name, const float *data, int n_dims,
                   const int64_t *shape);
/* Recorded stages that were neither compared nor excused (excused(name, ctx) true); each is
 * printed. */
int sdw_stage_missing(const sdw_stage_check *c, bool (*excused)(const char *name, const void *ctx),
                      const void *ctx);

#endif
