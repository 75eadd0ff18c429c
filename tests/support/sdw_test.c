#define _GNU_SOURCE
#include "sdw_test.h"

#include "core/common.h"
#include "io/image.h"
#include "io/png.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int sdw_test_failures_in_current;
static int g_passed, g_failed, g_skipped, g_skip_current;
static char g_tmpdir[512];

void sdw_test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: FAIL: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    sdw_test_failures_in_current++;
}

void sdw_test_skip(const char *why) {
    fprintf(stderr, "  skipped: %s\n", why);
    g_skip_current = 1;
}

void sdw_test_run(const char *name, void (*fn)(void)) {
    sdw_test_failures_in_current = 0;
    g_skip_current = 0;
    fprintf(stderr, "[ RUN  ] %s\n", name);
    fn();
    if (sdw_test_failures_in_current) {
        g_failed++;
        fprintf(stderr, "[ FAIL ] %s\n", name);
    } else if (g_skip_current) {
        g_skipped++;
        fprintf(stderr, "[ SKIP ] %s\n", name);
    } else {
        g_passed++;
        fprintf(stderr, "[  OK  ] %s\n", name);
    }
}

int sdw_test_finish(void) {
    if (g_tmpdir[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_tmpdir);
    }
    printf("%d passed, %d failed, %d skipped\n", g_passed, g_failed, g_skipped);
    if (g_failed) return 1;
    if (g_passed == 0 && g_skipped > 0) return 77;
    return 0;
}

double sdw_test_rel_err(const float *got, const float *ref, size_t n) {
    double maxdiff = 0, maxref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= maxdiff)) maxdiff = d; /* NaN propagates */
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    }
    return maxref > 0 ? maxdiff / maxref : maxdiff;
}

const char *sdw_test_fixtures(void) {
    const char *e = getenv("SDW_FIXTURES");
    return e && *e ? e : SDW_FIXTURES_DEFAULT;
}

const char *sdw_test_bin(void) {
    const char *e = getenv("SDW_BIN");
    return e && *e ? e : SDW_BIN_DEFAULT;
}

const char *sdw_test_path(const char *fmt, ...) {
    static char bufs[8][1024];
    static int next;
    char *b = bufs[next++ % 8];
    int n = snprintf(b, 1024, "%s/", sdw_test_fixtures());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b + n, 1024 - n, fmt, ap);
    va_end(ap);
    return b;
}

const char *sdw_test_tmpdir(void) {
    if (!g_tmpdir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/sdwtest.XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(g_tmpdir)) {
            perror("mkdtemp");
            abort();
        }
    }
    return g_tmpdir;
}

/* ---- goldens ---- */
#define MAX_CACHED 256
struct sdw_golden {
    char dir[1024];
    json_t *manifest;
    int n_cached;
    char *names[MAX_CACHED];
    sdw_golden_tensor tensors[MAX_CACHED];
};

sdw_golden *sdw_golden_open(const char *model_case) {
    sdw_golden *g = calloc(1, sizeof *g);
    snprintf(g->dir, sizeof g->dir, "%s/golden/%s", sdw_test_fixtures(), model_case);
    char path[1100];
    snprintf(path, sizeof path, "%s/manifest.json", g->dir);
    /* Python's json writes -Infinity/Infinity/NaN (e.g. DPM-Solver's lambda_min_clipped),
     * which strict JSON parsers refuse: read them as null. */
    char *text = NULL;
    size_t len = 0;
    json_error_t je = {0};
    if (sdw_read_file(path, &text, &len, NULL) == SDW_OK) {
        static const char *const bad[] = {"-Infinity", "Infinity", "NaN"};
        for (size_t b = 0; b < 3; b++) {
            size_t bl = strlen(bad[b]);
            for (char *q = strstr(text, bad[b]); q; q = strstr(q, bad[b])) {
                memcpy(q, "null", 4);
                memset(q + 4, ' ', bl - 4);
            }
        }
        g->manifest = json_loadb(text, len, 0, &je);
        free(text);
    } else {
        snprintf(je.text, sizeof je.text, "cannot read file");
    }
    if (!g->manifest) {
        fprintf(stderr, "cannot load %s: %s\n", path, je.text);
        free(g);
        return NULL;
    }
    return g;
}

void sdw_golden_close(sdw_golden *g) {
    if (!g) return;
    for (int i = 0; i < g->n_cached; i++) {
        free(g->names[i]);
        free(g->tensors[i].data);
    }
    json_decref(g->manifest);
    free(g);
}

void *sdw_golden_manifest(const sdw_golden *g) { return g->manifest; }

/* Minimal .npy reader: v1/v2 header, little-endian <f4 / <i4 / <i8, C order. */
void *sdw_test_load_npy(const char *path, sdw_golden_tensor *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char magic[10];
    if (fread(magic, 1, 10, f) != 10 || memcmp(magic, "\x93NUMPY", 6) != 0) goto fail;
    size_t hlen;
    if (magic[6] == 1) {
        hlen = magic[8] | (magic[9] << 8);
    } else {
        unsigned char b[2];
        if (fread(b, 1, 2, f) != 2) goto fail;
        hlen = magic[8] | (magic[9] << 8) | ((size_t)b[0] << 16) | ((size_t)b[1] << 24);
    }
    char *hdr = calloc(1, hlen + 1);
    if (fread(hdr, 1, hlen, f) != hlen) {
        free(hdr);
        goto fail;
    }
    size_t esize = 4;
    int is_i8 = 0;
    if (strstr(hdr, "'<f4'")) strcpy(out->dtype, "float32");
    else if (strstr(hdr, "'<i4'")) strcpy(out->dtype, "int32");
    else if (strstr(hdr, "'<i8'")) strcpy(out->dtype, "int32"), is_i8 = 1, esize = 8;
    else if (strstr(hdr, "'|u1'")) strcpy(out->dtype, "uint8"), esize = 1;
    else {
        free(hdr);
        goto fail;
    }
    if (strstr(hdr, "'fortran_order': True")) {
        free(hdr);
        goto fail;
    }
    char *sp = strstr(hdr, "'shape': (");
    if (!sp) {
        free(hdr);
        goto fail;
    }
    sp += 10;
    out->n = 1;
    while (*sp && *sp != ')' && out->n_dims < 8) {
        char *end;
        long long d = strtoll(sp, &end, 10);
        if (end == sp) break;
        out->shape[out->n_dims++] = d;
        out->n *= (size_t)d;
        sp = end;
        while (*sp == ',' || *sp == ' ') sp++;
    }
    free(hdr);
    void *raw = malloc(out->n * esize + 1);
    if (fread(raw, esize, out->n, f) != out->n) {
        free(raw);
        goto fail;
    }
    fclose(f);
    if (is_i8) { /* ids as int32 for convenience */
        int32_t *d = malloc(out->n * 4 + 1);
        for (size_t i = 0; i < out->n; i++) d[i] = (int32_t)((int64_t *)raw)[i];
        free(raw);
        raw = d;
    }
    out->data = raw;
    return raw;
fail:
    fclose(f);
    return NULL;
}

const sdw_golden_tensor *sdw_golden_get(sdw_golden *g, const char *name) {
    for (int i = 0; i < g->n_cached; i++)
        if (strcmp(g->names[i], name) == 0) return &g->tensors[i];
    json_t *list = json_object_get(g->manifest, "tensors");
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t) {
        if (strcmp(json_string_value(json_object_get(t, "name")), name) != 0) continue;
        if (g->n_cached >= MAX_CACHED) return NULL;
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", g->dir, json_string_value(json_object_get(t, "file")));
        sdw_golden_tensor *out = &g->tensors[g->n_cached];
        if (!sdw_test_load_npy(path, out)) return NULL;
        g->names[g->n_cached++] = strdup(name);
        return out;
    }
    return NULL;
}

float *sdw_golden_nhwc(const sdw_golden_tensor *t) {
    if (t->n_dims != 4) return NULL;
    int64_t N = t->shape[0], C = t->shape[1], H = t->shape[2], W = t->shape[3];
    const float *src = t->data;
    float *dst = malloc(t->n * sizeof(float) + 1);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < H; y++)
                for (int64_t x = 0; x < W; x++)
                    dst[((n * H + y) * W + x) * C + c] = src[((n * C + c) * H + y) * W + x];
    return dst;
}

int sdw_test_run_sdw(char *out, size_t cap, const char *fmt, ...) {
    char args[4096], cmd[5000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", sdw_test_bin(), args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    /* Read the rest too: a child writing more than cap would die of SIGPIPE at pclose. */
    char sink[4096];
    while (fread(sink, 1, sizeof sink, p) > 0) {}
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Max |a - b| over two decoded images' samples; 256 when their shapes differ. */
static int pixels_max_diff(const uint8_t *a, int aw, int ah, int ac, const uint8_t *b, int bw,
                           int bh, int bc) {
    if (aw != bw || ah != bh || ac != bc) return 256;
    int d = 0;
    for (size_t i = 0; i < (size_t)aw * ah * ac; i++) {
        int x = abs((int)a[i] - (int)b[i]);
        if (x > d) d = x;
    }
    return d;
}

int sdw_test_png_bytes_max_diff(const void *a, size_t na, const void *b, size_t nb) {
    sdw_png ia = {0}, ib = {0};
    sdw_error err = {0};
    int d = 256;
    if (sdw_png_read_mem(a, na, "a", &ia, &err) || sdw_png_read_mem(b, nb, "b", &ib, &err))
        fprintf(stderr, "png read: %s\n", err.msg);
    else
        d = pixels_max_diff(ia.pixels, ia.w, ia.h, ia.channels, ib.pixels, ib.w, ib.h,
                            ib.channels);
    sdw_png_deinit(&ia);
    sdw_png_deinit(&ib);
    return d;
}

int sdw_test_png_max_diff(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *da = sdw_test_read_file(a, &na), *db = sdw_test_read_file(b, &nb);
    int d = da && db ? sdw_test_png_bytes_max_diff(da, na, db, nb) : 256;
    if (!da || !db) fprintf(stderr, "png read: cannot read %s\n", da ? b : a);
    free(da);
    free(db);
    return d;
}

int sdw_test_image_max_diff(const sdw_image *img, const char *png_path) {
    sdw_png ref = {0};
    sdw_error err = {0};
    int d = 256;
    if (sdw_png_read(png_path, &ref, &err))
        fprintf(stderr, "png read: %s\n", err.msg);
    else
        d = pixels_max_diff(img->data, img->width, img->height, img->channels, ref.pixels, ref.w,
                            ref.h, ref.channels);
    sdw_png_deinit(&ref);
    return d;
}

void *sdw_test_read_file(const char *path, size_t *n) {
    char *buf = NULL;
    return sdw_read_file(path, &buf, n, NULL) == SDW_OK ? buf : NULL;
}

/* ---- running golden cases ---- */

sdw_status sdw_golden_request(sdw_golden *g, sdw_request *req, sdw_image *init, sdw_image *mask,
                              sdw_error *err) {
    json_t *man = g->manifest;
    sdw_request r = sdw_request_default();
    r.prompt = json_string_value(json_object_get(man, "prompt"));
    r.negative_prompt = json_string_value(json_object_get(man, "negative_prompt"));
    r.width = (int)json_integer_value(json_object_get(man, "width"));
    r.height = (int)json_integer_value(json_object_get(man, "height"));
    r.steps = (int)json_integer_value(json_object_get(man, "steps"));
    r.guidance = (float)json_number_value(json_object_get(man, "guidance_scale"));
    r.seed = json_integer_value(json_object_get(man, "seed"));
    const char *name =
        json_string_value(json_object_get(json_object_get(man, "scheduler"), "name"));
    r.sampler = name && strcmp(name, "dpmpp2m") == 0 ? "dpm++2m" : name;
    if (name && strcmp(name, "default") == 0) r.sampler = NULL; /* the model's own (FLUX) */
    const char *mode = json_string_value(json_object_get(man, "mode"));
    sdw_status s = SDW_OK;
    char path[1200];
    if (mode && strcmp(mode, "txt2img") != 0) {
        r.strength = json_number_value(json_object_get(man, "strength"));
        snprintf(path, sizeof path, "%s/init_image.png", g->dir);
        s = sdw_image_load(path, init, err);
        r.init_image = init;
        if (!s && strcmp(mode, "inpaint") == 0) {
            snprintf(path, sizeof path, "%s/mask_image.png", g->dir);
            s = sdw_image_load(path, mask, err);
            r.mask = mask;
        }
    }
    *req = r;
    return s;
}

void sdw_stage_tap(void *user, const char *name, const float *data, int n_dims,
                   const int64_t *shape) {
    sdw_stage_check *c = user;
    const sdw_golden_tensor *t = sdw_golden_get(c->g, name);
    if (!t) return; /* the reference did not record this stage */
    size_t n = 1;
    for (int i = 0; i < n_dims; i++)
        n *= (size_t)shape[i];
    c->n_compared++;
    size_t k = strlen(c->seen);
    snprintf(c->seen + k, sizeof c->seen - k, " %s ", name);
    if (n != t->n) {
        fprintf(stderr, "  %s: %zu elements, reference has %zu\n", name, n, t->n);
        c->n_failed++;
        return;
    }
    double e = 0;
    if (strcmp(t->dtype, "int32") == 0) { /* token ids: exact */
        const int32_t *ref = t->data;
        for (size_t i = 0; i < n; i++)
            if ((int32_t)data[i] != ref[i]) e = 1;
    } else {
        e = sdw_test_rel_err(data, t->data, n);
    }
    if (e > c->worst) {
        c->worst = e;
        snprintf(c->worst_name, sizeof c->worst_name, "%s", name);
    }
    if (!(e <= c->tol)) {
        fprintf(stderr, "  %s: relative error %.3g\n", name, e);
        c->n_failed++;
    }
}

int sdw_stage_missing(const sdw_stage_check *c, bool (*excused)(const char *name, const void *ctx),
                      const void *ctx) {
    int missing = 0;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(c->g->manifest, "tensors"), i, t) {
        const char *name = json_string_value(json_object_get(t, "name"));
        char key[128];
        snprintf(key, sizeof key, " %s ", name);
        if (excused(name, ctx) || strstr(c->seen, key)) continue;
        fprintf(stderr, "  stage %s was not compared\n", name);
        missing++;
    }
    return missing;
}

void sdw_test_attention_ref(const float *q, int64_t qs, const float *k, int64_t ks, const float *v,
                            int64_t vs, int B, int64_t Lq, int64_t Lk, int H, int D, float scale,
                            bool causal, float *out) {
    const int64_t HD = (int64_t)H * D;
    double *p = malloc(sizeof(double) * (size_t)(Lk > 0 ? Lk : 1));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                double mx = -INFINITY, sum = 0;
                int64_t n = causal ? (i + 1 < Lk ? i + 1 : Lk) : Lk;
                for (int64_t j = 0; j < n; j++) {
                    double s = 0;
                    for (int d = 0; d < D; d++)
                        s += (double)q[(b * Lq + i) * qs + h * D + d] *
                             k[(b * Lk + j) * ks + h * D + d];
                    p[j] = s * scale;
                    if (p[j] > mx) mx = p[j];
                }
                for (int64_t j = 0; j < n; j++)
                    sum += (p[j] = exp(p[j] - mx));
                for (int d = 0; d < D; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < n; j++)
                        o += p[j] * v[(b * Lk + j) * vs + h * D + d];
                    out[(b * Lq + i) * HD + h * D + d] = (float)(o / sum);
                }
            }
    free(p);
}

void sdw_test_conv_ref(const float *x, const float *w, const float *b, int B, int H, int W, int in,
                       int out, int k, int stride, int pad, int OH, int OW, float *ref) {
    for (int bi = 0; bi < B; bi++)
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++)
                for (int o = 0; o < out; o++) {
                    double s = b ? b[o] : 0;
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            for (int ci = 0; ci < in; ci++)
                                s += (double)x[(((size_t)bi * H + iy) * W + ix) * in + ci] *
                                     w[(((size_t)o * in + ci) * k + ky) * k + kx];
                        }
                    ref[(((size_t)bi * OH + oy) * OW + ox) * out + o] = (float)s;
                }
}

void sdw_test_linear_ref(const float *x, const float *w, const float *b, int64_t M, int in, int out,
                         float *ref) {
    for (int64_t i = 0; i < M; i++)
        for (int o = 0; o < out; o++) {
            double s = b ? b[o] : 0;
            for (int j = 0; j < in; j++)
                s += (double)x[i * in + j] * w[(size_t)o * in + j];
            ref[i * out + o] = (float)s;
        }
}
