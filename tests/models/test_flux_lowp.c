/* FLUX in reduced precision against the reference goldens: the bf16 compute path (within a mean
 * absolute error of 2 levels of 255, the bar of the other families), and fp8 checkpoints — the
 * transformer and T5 written as F8_E4M3 (2-D weights; biases and norm gains f32, as the
 * flux1-dev-fp8 / t5xxl_fp8_e4m3fn files people run) — in f32 and bf16 compute. An fp8 file is
 * another model (its weights are rounded to 3 mantissa bits), so its distance to the reference
 * is the quantisation's: it is printed, and bounded loosely so a broken fp8 path (garbage
 * weights, wrong scale) still fails. bf16 cases are skipped (not failed) on CPUs without native
 * bf16 arithmetic, where bf16 runs as f32 by design. */
#include "sdw_test.h"

#include "io/image.h"
#include "models/diffusion.h"
#include "nn/nn.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAE_BF16 2.0 /* levels of 255: the bf16 bar of every family */
#define MAE_FP8 3.0 /* levels: fp8 weight rounding of the tiny model (measured 0.75-0.82) */

/* Copies the safetensors file src to dst with every tensor of 2+ dimensions stored as F8_E4M3. */
static bool write_fp8(const char *src, const char *dst) {
    sdw_st_file *f = NULL;
    sdw_st_writer *w = NULL;
    if (sdw_st_open(src, &f, NULL) || sdw_st_writer_create(dst, &w, NULL)) return false;
    const int n = sdw_st_count(f);
    bool ok = true;
    for (int i = 0; i < n; i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        const bool fl = sdw_dtype_is_float(t->dtype);
        sdw_st_writer_add(w, t->name, fl && t->n_dims >= 2 ? SDW_DTYPE_F8_E4M3 : SDW_DTYPE_F32,
                          t->n_dims, t->shape);
    }
    ok = sdw_st_writer_begin(w, NULL) == SDW_OK;
    for (int i = 0; ok && i < n; i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        float *v = malloc((t->n_elems ? t->n_elems : 1) * sizeof *v);
        if (sdw_dtype_is_float(t->dtype)) {
            sdw_convert_to_f32(t->dtype, t->data, v, t->n_elems);
        } else { /* integer metadata tensors (none in these files; kept for safety) */
            for (size_t k = 0; k < t->n_elems; k++)
                v[k] = 0;
        }
        ok = sdw_st_writer_write(w, v, NULL) == SDW_OK;
        free(v);
    }
    sdw_st_close(f);
    return sdw_st_writer_finish(w, NULL) == SDW_OK && ok;
}

/* MAE (levels) of golden_case generated from model at precision p against its reference PNG;
 * -1 on a failure (printed). */
static double run(const char *model, const sdw_load_options *base, sdw_precision p,
                  const char *golden_case) {
    sdw_golden *g = sdw_golden_open(golden_case);
    if (!g) return -1;
    sdw_load_options o = base ? *base : sdw_load_options_default();
    o.precision = p;
    sdw_image_model *m = NULL;
    sdw_image img = {0}, init = {0}, mask = {0};
    sdw_error err = {0};
    sdw_request r;
    sdw_status s = sdw_model_load(model, &o, &m, &err);
    if (!s) s = sdw_golden_request(g, &r, &init, &mask, &err);
    if (!s) s = sdw_model_generate(m, &r, NULL, NULL, &img, NULL, &err);
    double mae = -1;
    sdw_image ref = {0};
    if (!s && sdw_image_load(sdw_test_path("golden/%s/image.png", golden_case), &ref, &err) == SDW_OK &&
        ref.width == img.width && ref.height == img.height && ref.channels == img.channels) {
        const size_t n = (size_t)img.width * img.height * img.channels;
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += fabs((double)img.data[i] - ref.data[i]);
        mae = sum / (double)n;
    }
    if (s) fprintf(stderr, "  %s: %s\n", golden_case, err.msg);
    sdw_image_free(&ref);
    sdw_image_free(&img);
    sdw_model_destroy(m);
    sdw_golden_close(g);
    return mae;
}

static void test_bf16(void) {
    if (!sdw_nn_cpu_has_bf16()) {
        sdw_test_skip("no native bf16 on this CPU");
        return;
    }
    const double dev = run(sdw_test_path("models/tiny-flux"), NULL, SDW_PRECISION_BF16,
                           "tiny-flux/txt2img-flowmatch");
    const double schnell = run(sdw_test_path("models/tiny-flux-schnell"), NULL,
                               SDW_PRECISION_BF16, "tiny-flux-schnell/txt2img-4step");
    fprintf(stderr, "  bf16: MAE dev %.3f, schnell %.3f levels\n", dev, schnell);
    ASSERT_TRUE(dev >= 0 && dev <= MAE_BF16);
    ASSERT_TRUE(schnell >= 0 && schnell <= MAE_BF16);
}

static void test_fp8_checkpoints(void) {
    char dit[1024], t5[1024];
    snprintf(dit, sizeof dit, "%s/flux-tiny-dev-fp8.safetensors", sdw_test_tmpdir());
    snprintf(t5, sizeof t5, "%s/t5-fp8.safetensors", sdw_test_tmpdir());
    ASSERT_TRUE(write_fp8(sdw_test_path("models/flux-tiny-dev.safetensors"), dit));
    ASSERT_TRUE(write_fp8(sdw_test_path("models/tiny-flux/text_encoder_2/model.safetensors"), t5));
    sdw_load_options o = sdw_load_options_default();
    o.config_dir = sdw_test_path("models/tiny-flux");
    const char *golden = "tiny-flux/txt2img-flowmatch";
    const double f32 = run(dit, &o, SDW_PRECISION_F32, golden);
    ASSERT_OK(sdw_load_options_set(&o, "t5xxl", t5, NULL), NULL);
    const double f32_t5 = run(dit, &o, SDW_PRECISION_F32, golden);
    fprintf(stderr, "  fp8 transformer: MAE %.3f levels; + fp8 T5: %.3f (f32 compute)\n", f32,
            f32_t5);
    ASSERT_TRUE(f32 >= 0 && f32 <= MAE_FP8);
    ASSERT_TRUE(f32_t5 >= 0 && f32_t5 <= MAE_FP8);
    if (sdw_nn_cpu_has_bf16()) {
        const double bf16 = run(dit, &o, SDW_PRECISION_BF16, golden);
        fprintf(stderr, "  fp8 transformer + T5, bf16 compute: MAE %.3f levels\n", bf16);
        ASSERT_TRUE(bf16 >= 0 && bf16 <= MAE_FP8);
    }
}

int main(void) {
    RUN(test_bf16);
    RUN(test_fp8_checkpoints);
    return sdw_test_finish();
}
