/* nn/backend_cpu_auto.c — the precision to run in (part of the CPU backend, see backend_cpu.h):
 * forced choices checked against the CPU, and AUTO decided by timing the model's own dominant
 * products in each precision the CPU runs natively, the decision remembered in the user's cache.
 *
 * Why measure: whether bf16 beats f32 is not a property of the instruction set. On a Sapphire
 * Rapids VM without AMX, vdpbf16ps retired at a quarter of the FMA rate and oneDNN's bf16
 * convolutions ran at half the f32 speed; on a Zen 4 EPYC (AVX512-BF16, no AMX) the same SD 1.5
 * step ran 1.63x faster in bf16. Only the machine at hand can tell. */
#include "nn/backend_cpu.h"

#include "core/cache.h"
#include "core/cpu.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define CACHE_FILE "precision.txt"
/* bf16 must win by this much: it costs accuracy (within 2 levels of 255 on the goldens), so a
 * tie, or a difference inside the measurement's noise, keeps the exact path. */
#define MIN_SPEEDUP 1.05
/* Models whose largest product has fewer multiply-adds per row than this are bound by memory
 * and call overheads, not by arithmetic: f32, unmeasured. The test fixtures' tiny models reach
 * 128000 (tiny-llama's 64x2000 head; tiny-sd's 3x3 128->64: 73728), the smallest real ones
 * 589824 (CLIP-L's 768x768). */
#define MIN_MACS_PER_ROW (1 << 18)
/* Each timed call does about this many flops (at least 64 rows): ~5-10 ms at the rates of a
 * few cores, long enough for the kernels' steady state, short enough that a whole measurement
 * (the products' packing included) stays well under a second on an idle machine. */
#define PROBE_FLOPS 2.0e9
#define PROBE_REPS 3

/* ---- the shape class ---- */

/* Adds `params` weights of a product of kind k (3 or 1) in -> out to cls's groups. */
static void add_group(int k, int in, int out, double params, int *n_all,
                      struct sdw_shape_probe *all, int cap) {
    for (int i = 0; i < *n_all; i++)
        if (all[i].k == k && all[i].in == in && all[i].out == out) {
            all[i].share += params;
            return;
        }
    if (*n_all < cap) all[(*n_all)++] = (struct sdw_shape_probe){k, in, out, params};
}

static int by_share_desc(const void *a, const void *b) {
    const double x = ((const struct sdw_shape_probe *)a)->share,
                 y = ((const struct sdw_shape_probe *)b)->share;
    return (x < y) - (x > y);
}

void sdw_shape_class_of_files(const sdw_st_file *const *files, int n_files, sdw_shape_class *out) {
    enum { CAP = 256 };
    struct sdw_shape_probe all[CAP];
    int n_all = 0;
    for (int f = 0; f < n_files; f++)
        for (int i = 0; files[f] && i < sdw_st_count(files[f]); i++) {
            const sdw_st_tensor *t = sdw_st_at(files[f], i);
            if (!sdw_dtype_is_float(t->dtype)) continue;
            /* embedding tables are looked up, not multiplied */
            if (strstr(t->name, "embed") || strstr(t->name, "shared.weight")) continue;
            if (t->n_dims == 4 && t->shape[2] == 3 && t->shape[3] == 3)
                add_group(3, (int)t->shape[1], (int)t->shape[0], (double)t->n_elems, &n_all, all,
                          CAP);
            else if ((t->n_dims == 2 || (t->n_dims == 4 && t->shape[2] == 1 && t->shape[3] == 1)) &&
                     t->shape[0] >= 8 && t->shape[1] >= 8)
                add_group(1, (int)t->shape[1], (int)t->shape[0], (double)t->n_elems, &n_all, all,
                          CAP);
        }
    qsort(all, (size_t)n_all, sizeof all[0], by_share_desc);
    memset(out, 0, sizeof *out);
    double total = 0;
    for (int i = 0; i < n_all && i < SDW_SHAPE_CLASS_MAX; i++)
        total += all[i].share;
    for (int i = 0; i < n_all && i < SDW_SHAPE_CLASS_MAX; i++) {
        out->p[i] = all[i];
        out->p[i].share /= total;
        out->n++;
    }
}

/* The class as text, for the cache key and the log: "3:1280x1280 1:320x1280 ...". */
static void class_name(const sdw_shape_class *cls, char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < cls->n && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%d:%dx%d", i ? " " : "", cls->p[i].k,
                                cls->p[i].in, cls->p[i].out);
}

/* ---- the decision ---- */

sdw_precision sdw__precision_decide(const sdw_shape_class *cls, const double *gflops_f32,
                                    const double *gflops_bf16, double *rate_f32,
                                    double *rate_bf16) {
    /* the model's time per flop in each precision: its products' shares at their rates */
    double t32 = 0, t16 = 0, total = 0;
    for (int i = 0; i < cls->n; i++) {
        if (!(gflops_f32[i] > 0) || !(gflops_bf16[i] > 0)) continue; /* a failed timing */
        t32 += cls->p[i].share / gflops_f32[i];
        t16 += cls->p[i].share / gflops_bf16[i];
        total += cls->p[i].share;
    }
    *rate_f32 = t32 > 0 ? total / t32 : 0;
    *rate_bf16 = t16 > 0 ? total / t16 : 0;
    return t16 > 0 && t32 >= MIN_SPEEDUP * t16 ? SDW_PRECISION_BF16 : SDW_PRECISION_F32;
}

/* ---- the measurement ---- */

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* n values uniform in ±scale, rounded to f16 values (as the f16 checkpoints most models ship:
 * an f32 layer then keeps them 16-bit and widens them per call, which the timing includes). */
static float *random_f16_values(size_t n, float scale, uint64_t seed) {
    float *w = sdw_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        w[i] = scale * ((float)(mix(seed + i) >> 40) / (float)(1 << 24) * 2.0f - 1.0f);
    uint16_t *h = sdw_xmalloc(n * sizeof(uint16_t));
    sdw_convert_from_f32(SDW_DTYPE_F16, w, h, n);
    sdw_convert_to_f32(SDW_DTYPE_F16, h, w, n);
    free(h);
    return w;
}

/* One product of the class, ready to time in one precision. */
typedef struct probe {
    sdw_backend_op *op;
    float *x, *y;
    int side; /* conv: the square image's side (batch 1); linear: 0 */
    int64_t rows;
    double flops;
} probe;

static sdw_status probe_make(sdw_backend *be, const struct sdw_shape_probe *s, sdw_precision p,
                             probe *pr, sdw_error *err) {
    memset(pr, 0, sizeof *pr);
    const double macs_row = (double)s->in * s->out * s->k * s->k;
    int64_t rows = (int64_t)ceil(PROBE_FLOPS / (2 * macs_row));
    rows = SDW_MAX(rows, 64);
    const size_t n_w = (size_t)s->in * s->out * s->k * s->k;
    float *w = random_f16_values(n_w, 1.0f / sqrtf((float)s->in * s->k * s->k), 1);
    sdw_status st;
    if (s->k == 3) {
        pr->side = (int)ceil(sqrt((double)rows));
        rows = (int64_t)pr->side * pr->side;
        const sdw_conv_geom g = {s->in, s->out, 3, 1, 1, 1};
        st = sdw_backend_conv_create(be, p, w, NULL, &g, &pr->op, err);
    } else {
        st = sdw_backend_linear_create(be, p, w, NULL, s->in, s->out, &pr->op, err);
    }
    free(w);
    if (st != SDW_OK) return st;
    pr->rows = rows;
    pr->flops = 2 * macs_row * (double)rows;
    pr->x = random_f16_values((size_t)rows * s->in, 1.0f, 2);
    pr->y = sdw_xcalloc((size_t)rows * s->out, sizeof(float));
    return SDW_OK;
}

static void probe_free(probe *pr) {
    sdw_backend_op_destroy(pr->op);
    free(pr->x);
    free(pr->y);
}

/* Seconds of one call. */
static double probe_run(const probe *pr) {
    const double t0 = sdw_time_now();
    if (pr->side)
        sdw_backend_conv_forward(pr->op, sdw_nhwc(pr->x, 1, pr->side, pr->side),
                                 sdw_nhwc(pr->y, 1, pr->side, pr->side), 0);
    else
        sdw_backend_linear_forward(pr->op, sdw_rows(pr->x, pr->rows), sdw_rows(pr->y, pr->rows), 0);
    return sdw_time_now() - t0;
}

/* GFLOP/s of each of cls's products in f32 and bf16 (0 where one could not run). The two
 * precisions' calls alternate and each keeps its fastest of PROBE_REPS, so a machine busy
 * with other work for a moment slows one call of each, not one precision. */
static void measure(const sdw_shape_class *cls, double *g32, double *g16) {
    sdw_backend *be;
    if (sdw_backend_cpu_create(NULL, &be, NULL) != SDW_OK) return;
    for (int i = 0; i < cls->n; i++) {
        probe pr[2];
        const sdw_precision ps[2] = {SDW_PRECISION_F32, SDW_PRECISION_BF16};
        bool ok = true;
        for (int k = 0; k < 2; k++)
            ok = probe_make(be, &cls->p[i], ps[k], &pr[k], NULL) == SDW_OK && ok;
        double best[2] = {INFINITY, INFINITY};
        if (ok) {
            probe_run(&pr[0]); /* first calls make the primitives */
            probe_run(&pr[1]);
            for (int r = 0; r < PROBE_REPS; r++)
                for (int k = 0; k < 2; k++)
                    best[k] = SDW_MIN(best[k], probe_run(&pr[k]));
        }
        g32[i] = ok ? pr[0].flops / best[0] * 1e-9 : 0;
        g16[i] = ok ? pr[1].flops / best[1] * 1e-9 : 0;
        for (int k = 0; k < 2; k++)
            if (pr[k].op || pr[k].x) probe_free(&pr[k]);
    }
    sdw_backend_destroy(be);
}

/* ---- resolving ---- */

sdw_precision sdw_nn_precision_resolve(sdw_precision want) {
    return sdw_nn_precision_resolve_model(want, NULL, 0);
}

sdw_precision sdw_nn_precision_resolve_model(sdw_precision want, const sdw_shape_class *cls,
                                             int n_threads) {
    switch (want) {
    case SDW_PRECISION_F32:
        return SDW_PRECISION_F32;
    case SDW_PRECISION_BF16:
        if (sdw_nn_cpu_has_bf16()) return SDW_PRECISION_BF16;
        SDW_WARN("precision bf16: this CPU has no native bf16 arithmetic (AVX512-BF16 / AMX): "
                 "running f32 instead");
        return SDW_PRECISION_F32;
    case SDW_PRECISION_AUTO:
        break;
    }
    if (!sdw_nn_cpu_has_bf16()) return SDW_PRECISION_F32; /* oneDNN would emulate bf16 slowly */
    if (!cls || cls->n == 0)
        /* Nothing known of the model: the rule measured on Intel machines (AMX makes bf16 the
         * fast path; AVX512-BF16 alone was slower there). */
        return sdw_nn_cpu_has_amx() ? SDW_PRECISION_BF16 : SDW_PRECISION_F32;
    double biggest = 0;
    for (int i = 0; i < cls->n; i++)
        biggest =
            SDW_MAX(biggest, (double)cls->p[i].in * cls->p[i].out * cls->p[i].k * cls->p[i].k);
    if (biggest < MIN_MACS_PER_ROW) {
        SDW_INFO("precision auto: f32 (products this small gain nothing from bf16)");
        return SDW_PRECISION_F32;
    }

    const int threads = n_threads > 0 ? n_threads : omp_get_max_threads();
    char shapes[256], key[1024], val[256];
    class_name(cls, shapes, sizeof shapes);
    snprintf(key, sizeof key, "cpu=%s|flags=%s|isa=%s|onednn=%s|threads=%d|products=%s",
             sdw_cpu_name(), sdw_cpu_flags(), sdw_isa_str(sdw_cpu_isa()), sdw__onednn_version(),
             threads, shapes);
    char got[16];
    double r32, r16;
    if (sdw_cache_get(CACHE_FILE, key, val, sizeof val) &&
        sscanf(val, "%15s f32=%lf bf16=%lf", got, &r32, &r16) == 3 &&
        (strcmp(got, "f32") == 0 || strcmp(got, "bf16") == 0)) {
        SDW_INFO("precision auto: %s (remembered: f32 %.0f, bf16 %.0f GFLOP/s at %s)", got, r32,
                 r16, shapes);
        return strcmp(got, "bf16") == 0 ? SDW_PRECISION_BF16 : SDW_PRECISION_F32;
    }

    const double t0 = sdw_time_now();
    double g32[SDW_SHAPE_CLASS_MAX] = {0}, g16[SDW_SHAPE_CLASS_MAX] = {0};
    const int caller = omp_get_max_threads();
    omp_set_num_threads(threads);
    measure(cls, g32, g16);
    omp_set_num_threads(caller);
    const sdw_precision p = sdw__precision_decide(cls, g32, g16, &r32, &r16);
    SDW_INFO("precision auto: %s; measured f32 %.0f, bf16 %.0f GFLOP/s (%.2fx) at the model's "
             "products %s, %d threads, in %.2f s",
             sdw_precision_str(p), r32, r16, r32 > 0 ? r16 / r32 : 0, shapes, threads,
             sdw_time_now() - t0);
    if (r32 > 0 && r16 > 0) {
        snprintf(val, sizeof val, "%s f32=%.1f bf16=%.1f", sdw_precision_str(p), r32, r16);
        sdw_error err = {0};
        if (sdw_cache_put(CACHE_FILE, key, val, &err) != SDW_OK)
            SDW_DEBUG("precision auto: not remembered (%s)", err.msg);
    }
    return p;
}
