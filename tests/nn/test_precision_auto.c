/* AUTO precision by measurement (nn/backend_cpu_auto.c) and the cache it remembers decisions in
 * (core/cache.h): the decision from injected rates, the shape class of a file, the cache's round
 * trip, a damaged cache file, a cache folder that cannot be written, and a real measurement
 * remembered (second resolve instant) and re-measured when its entry is damaged. */
#include "sdw_test.h"

#include "core/cache.h"
#include "core/cpu.h"
#include "nn/nn_impl.h"

#include <sys/stat.h>
#include <unistd.h>

static char g_dir[256]; /* this test's XDG_CACHE_HOME */

static void cache_file_path(char *buf, size_t cap) {
    snprintf(buf, cap, "%s/sdworker/precision.txt", g_dir);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

__attribute__((noinline)) static char *read_text(const char *path) {
    char *t = NULL;
    return sdw_read_file(path, &t, NULL, NULL) == SDW_OK ? t : NULL;
}

/* SD 1.5's UNet-like class: wide 3x3 convolutions and the transformer blocks' products. */
static sdw_shape_class sd_class(void) {
    sdw_shape_class c = {.n = 3};
    c.p[0] = (struct sdw_shape_probe){3, 1280, 1280, 0.5};
    c.p[1] = (struct sdw_shape_probe){3, 640, 640, 0.25};
    c.p[2] = (struct sdw_shape_probe){1, 640, 5120, 0.25};
    return c;
}

static void test_decide_from_rates(void) {
    const sdw_shape_class c = sd_class();
    double r32, r16;
    /* bf16 1.6x faster everywhere */
    ASSERT_EQ_INT(
        sdw__precision_decide(&c, (double[]){200, 200, 150}, (double[]){320, 320, 240}, &r32, &r16),
        SDW_PRECISION_BF16);
    ASSERT_TRUE(fabs(r16 / r32 - 1.6) < 1e-9);
    /* bf16 at half the speed (AVX512-BF16 on a machine where vdpbf16ps is slow) */
    ASSERT_EQ_INT(
        sdw__precision_decide(&c, (double[]){70, 70, 70}, (double[]){38, 38, 38}, &r32, &r16),
        SDW_PRECISION_F32);
    /* a tie within the noise keeps the exact path */
    ASSERT_EQ_INT(
        sdw__precision_decide(&c, (double[]){100, 100, 100}, (double[]){103, 103, 103}, &r32, &r16),
        SDW_PRECISION_F32);
    /* shares weigh the products: the big one faster in bf16 outweighs the small one slower */
    ASSERT_EQ_INT(
        sdw__precision_decide(&c, (double[]){100, 100, 100}, (double[]){200, 60, 100}, &r32, &r16),
        SDW_PRECISION_BF16);
    /* a failed timing is left out; all failed: f32 */
    ASSERT_EQ_INT(
        sdw__precision_decide(&c, (double[]){100, 0, 100}, (double[]){300, 300, 300}, &r32, &r16),
        SDW_PRECISION_BF16);
    ASSERT_EQ_INT(sdw__precision_decide(&c, (double[]){0, 0, 0}, (double[]){0, 0, 0}, &r32, &r16),
                  SDW_PRECISION_F32);
    ASSERT_TRUE(r32 == 0 && r16 == 0);
}

static void test_shape_class_of_file(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/class.safetensors", g_dir);
    sdw_error err = {0};
    sdw_st_writer *w;
    ASSERT_OK(sdw_st_writer_create(path, &w, &err), &err);
    const int64_t conv[] = {64, 64, 3, 3}, lin[] = {256, 64}, emb[] = {1000, 64}, bias[] = {64},
                  pw[] = {128, 64, 1, 1};
    sdw_st_writer_add(w, "a.conv.weight", SDW_DTYPE_F16, 4, conv);
    sdw_st_writer_add(w, "b.conv.weight", SDW_DTYPE_F16, 4, conv);
    sdw_st_writer_add(w, "a.conv.bias", SDW_DTYPE_F16, 1, bias);
    sdw_st_writer_add(w, "ff.weight", SDW_DTYPE_F16, 2, lin);
    sdw_st_writer_add(w, "shortcut.weight", SDW_DTYPE_F16, 4, pw);
    sdw_st_writer_add(w, "token_embedding.weight", SDW_DTYPE_F16, 2, emb);
    ASSERT_OK(sdw_st_writer_begin(w, &err), &err);
    float *zeros = calloc(1000 * 64, sizeof(float));
    for (int i = 0; i < 6; i++)
        sdw_st_writer_write(w, zeros, &err);
    free(zeros);
    ASSERT_OK(sdw_st_writer_finish(w, &err), &err);
    sdw_st_file *f;
    ASSERT_OK(sdw_st_open(path, &f, &err), &err);
    sdw_shape_class c;
    sdw_shape_class_of_files((const sdw_st_file *const[]){f, NULL}, 2, &c);
    sdw_st_close(f);
    /* the two 3x3 kernels are one group (73728 weights), then the linear, then the 1x1 conv;
     * the embedding table and the bias are not products */
    ASSERT_EQ_INT(c.n, 3);
    ASSERT_TRUE(c.p[0].k == 3 && c.p[0].in == 64 && c.p[0].out == 64);
    ASSERT_TRUE(c.p[1].k == 1 && c.p[1].in == 64 && c.p[1].out == 256);
    ASSERT_TRUE(c.p[2].k == 1 && c.p[2].in == 64 && c.p[2].out == 128);
    ASSERT_TRUE(fabs(c.p[0].share + c.p[1].share + c.p[2].share - 1) < 1e-12);
    ASSERT_TRUE(fabs(c.p[0].share - 73728.0 / (73728 + 16384 + 8192)) < 1e-12);
}

static void test_cache_round_trip(void) {
    char v[64];
    ASSERT_TRUE(!sdw_cache_get("t.txt", "k1", v, sizeof v)); /* no folder yet */
    ASSERT_OK(sdw_cache_put("t.txt", "k1", "one", NULL), NULL);
    ASSERT_OK(sdw_cache_put("t.txt", "k2\twith tab", "two\nlines", NULL), NULL);
    ASSERT_OK(sdw_cache_put("t.txt", "k1", "uno", NULL), NULL); /* replaces */
    ASSERT_TRUE(sdw_cache_get("t.txt", "k1", v, sizeof v) && strcmp(v, "uno") == 0);
    ASSERT_TRUE(sdw_cache_get("t.txt", "k2\twith tab", v, sizeof v) && strcmp(v, "two lines") == 0);
    ASSERT_TRUE(!sdw_cache_get("t.txt", "k", v, sizeof v)); /* a prefix is not a key */
    char path[300];
    snprintf(path, sizeof path, "%s/sdworker/t.txt", g_dir);
    char *text = read_text(path);
    ASSERT_TRUE(text && strcmp(text, "sdworker cache 1\nk2 with tab\ttwo lines\nk1\tuno\n") == 0);
    free(text);
}

static void test_damaged_cache_file(void) {
    char path[300], v[64];
    snprintf(path, sizeof path, "%s/sdworker/d.txt", g_dir);
    mkdir(g_dir, 0700);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/sdworker", g_dir);
    mkdir(dir, 0700);
    static const char *const bad[] = {
        "",                                      /* empty */
        "garbage\nk\tv\n",                       /* not ours */
        "sdworker cache 1\nk\tv",                /* truncated: no final newline */
        "sdworker cache 1\nno tab here\nk\tv\n", /* a line without a tab */
        "sdworker cache 1\nk\tv\tw\n",           /* two tabs */
        "sdworker cache 1\n\tv\n",               /* empty key */
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(bad); i++) {
        write_text(path, bad[i]);
        ASSERT_TRUE(!sdw_cache_get("d.txt", "k", v, sizeof v));
        ASSERT_OK(sdw_cache_put("d.txt", "k2", "v2", NULL), NULL); /* replaces the whole file */
        ASSERT_TRUE(sdw_cache_get("d.txt", "k2", v, sizeof v) && strcmp(v, "v2") == 0);
        ASSERT_TRUE(!sdw_cache_get("d.txt", "k", v, sizeof v));
    }
    /* a NUL byte inside */
    FILE *f = fopen(path, "wb");
    ASSERT_TRUE(f != NULL);
    fwrite("sdworker cache 1\nk\tv\0\n", 1, 22, f);
    fclose(f);
    ASSERT_TRUE(!sdw_cache_get("d.txt", "k", v, sizeof v));
    /* a folder where the file should be */
    unlink(path);
    mkdir(path, 0700);
    ASSERT_TRUE(!sdw_cache_get("d.txt", "k", v, sizeof v));
    ASSERT_STATUS(sdw_cache_put("d.txt", "k", "v", NULL), SDW_E_IO);
    rmdir(path);
}

static void test_unwritable_cache_folder(void) {
    char v[64], file[300], bad[320];
    /* a regular file in the way of the folder: mkdir fails even for root */
    snprintf(file, sizeof file, "%s/plainfile", g_dir);
    write_text(file, "x");
    snprintf(bad, sizeof bad, "%s/sub", file);
    setenv("XDG_CACHE_HOME", bad, 1);
    sdw_error err = {0};
    ASSERT_STATUS(sdw_cache_put("t.txt", "k", "v", &err), SDW_E_IO);
    ASSERT_STR_CONTAINS(err.msg, "cannot create");
    ASSERT_TRUE(!sdw_cache_get("t.txt", "k", v, sizeof v));
    /* no HOME and no XDG_CACHE_HOME: no folder at all, and a relative XDG_CACHE_HOME is none */
    const char *home = getenv("HOME");
    char *saved = home ? strdup(home) : NULL;
    unsetenv("HOME");
    setenv("XDG_CACHE_HOME", "relative/dir", 1);
    ASSERT_TRUE(!sdw_cache_dir(v, sizeof v));
    ASSERT_STATUS(sdw_cache_put("t.txt", "k", "v", NULL), SDW_E_IO);
    /* AUTO still resolves (measuring, nothing remembered) */
    const sdw_shape_class c = sd_class();
    const sdw_precision p = sdw_nn_precision_resolve_model(SDW_PRECISION_AUTO, &c, 0);
    ASSERT_TRUE(p == SDW_PRECISION_F32 || p == SDW_PRECISION_BF16);
    if (saved) setenv("HOME", saved, 1);
    free(saved);
    setenv("XDG_CACHE_HOME", g_dir, 1);
}

static void test_forced_and_tiny(void) {
    ASSERT_EQ_INT(sdw_nn_precision_resolve(SDW_PRECISION_F32), SDW_PRECISION_F32);
    ASSERT_EQ_INT(sdw_nn_precision_resolve(SDW_PRECISION_BF16),
                  sdw_nn_cpu_has_bf16() ? SDW_PRECISION_BF16 : SDW_PRECISION_F32);
    /* a tiny model: f32 without measuring, nothing cached */
    const sdw_shape_class tiny = {.n = 1, .p = {{3, 32, 64, 1.0}}};
    char path[300];
    cache_file_path(path, sizeof path);
    unlink(path);
    ASSERT_EQ_INT(sdw_nn_precision_resolve_model(SDW_PRECISION_AUTO, &tiny, 0), SDW_PRECISION_F32);
    ASSERT_EQ_INT(sdw_nn_precision_resolve_model(SDW_PRECISION_BF16, &tiny, 0),
                  sdw_nn_cpu_has_bf16() ? SDW_PRECISION_BF16 : SDW_PRECISION_F32);
    ASSERT_TRUE(access(path, F_OK) != 0);
}

/* The real thing: measured once, remembered, instant the second time; a damaged entry is
 * measured again and replaced. */
static void test_measured_and_remembered(void) {
    if (!sdw_nn_cpu_has_bf16()) {
        /* nothing to choose from: f32, unmeasured */
        const sdw_shape_class c = sd_class();
        ASSERT_EQ_INT(sdw_nn_precision_resolve_model(SDW_PRECISION_AUTO, &c, 0), SDW_PRECISION_F32);
        return;
    }
    char path[300];
    cache_file_path(path, sizeof path);
    unlink(path);
    const sdw_shape_class c = sd_class();
    double t0 = sdw_time_now();
    const sdw_precision p = sdw_nn_precision_resolve_model(SDW_PRECISION_AUTO, &c, 2);
    const double first = sdw_time_now() - t0;
    char *text = read_text(path);
    ASSERT_TRUE(text != NULL);
    ASSERT_STR_CONTAINS(text, sdw_cpu_name());
    ASSERT_STR_CONTAINS(text, "threads=2|products=3:1280x1280 3:640x640 1:640x5120\t");
    ASSERT_STR_CONTAINS(text, p == SDW_PRECISION_BF16 ? "\tbf16 f32=" : "\tf32 f32=");
    t0 = sdw_time_now();
    ASSERT_EQ_INT(sdw_nn_precision_resolve_model(SDW_PRECISION_AUTO, &c, 2), p);
    const double second = sdw_time_now() - t0;
    fprintf(stderr, "  auto: %s, measured in %.3f s, remembered in %.4f s\n", sdw_precision_str(p),
            first, second);
    ASSERT_TRUE(second < 0.05 && second < first);
    /* another thread count is another entry */
    ASSERT_TRUE(sdw_nn_precision_resolve_model(SDW_PRECISION_AUTO, &c, 1) != SDW_PRECISION_AUTO);
    free(text);
    text = read_text(path);
    ASSERT_STR_CONTAINS(text, "threads=1|");
    ASSERT_STR_CONTAINS(text, "threads=2|");
    /* damage the 2-thread entry's value: measured again, a valid value written back */
    char *tab = strstr(strstr(text, "threads=2|"), "\t");
    ASSERT_TRUE(tab != NULL);
    memcpy(tab + 1, "fast", 4);
    write_text(path, text);
    free(text);
    ASSERT_TRUE(sdw_nn_precision_resolve_model(SDW_PRECISION_AUTO, &c, 2) != SDW_PRECISION_AUTO);
    text = read_text(path);
    ASSERT_TRUE(text && !strstr(text, "\tfast"));
    const char *val = strchr(strstr(text, "threads=2|"), '\t') + 1;
    ASSERT_TRUE(strncmp(val, "bf16 f32=", 9) == 0 || strncmp(val, "f32 f32=", 8) == 0);
    free(text);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/sdw_test_precision_%ld", (long)getpid());
    mkdir(g_dir, 0700);
    setenv("XDG_CACHE_HOME", g_dir, 1);
    sdw_log_set_level(SDW_LOG_INFO);
    RUN(test_decide_from_rates);
    RUN(test_shape_class_of_file);
    RUN(test_cache_round_trip);
    RUN(test_damaged_cache_file);
    RUN(test_unwritable_cache_folder);
    RUN(test_forced_and_tiny);
    RUN(test_measured_and_remembered);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return sdw_test_finish();
}
