#define _GNU_SOURCE
#include "sdw_test.h"

#include "core/common.h"
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
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int sdw_test_png_max_diff(const char *a, const char *b) {
    sdw_png ia = {0}, ib = {0};
    sdw_error err = {0};
    int d = 256;
    if (sdw_png_read(a, &ia, &err) || sdw_png_read(b, &ib, &err)) {
        fprintf(stderr, "png read: %s\n", err.msg);
        goto out;
    }
    if (ia.w != ib.w || ia.h != ib.h || ia.channels != ib.channels) goto out;
    d = 0;
    for (size_t i = 0; i < (size_t)ia.w * ia.h * ia.channels; i++) {
        int x = abs((int)ia.pixels[i] - (int)ib.pixels[i]);
        if (x > d) d = x;
    }
out:
    sdw_png_deinit(&ia);
    sdw_png_deinit(&ib);
    return d;
}
