/* `sdw generate --embeddings-dir / --prompt-syntax / --clip-skip` and `sdw info` end to end: the
 * reference's textual-inversion image (golden tiny-sd15/txt2img-euler-embedding: diffusers'
 * load_textual_inversion of the fixture as token "tinyemb") reproduced through the CLI in both
 * prompt readings; the folder listed by `sdw info`; refusals with their exit codes. */
#include "sdw_test.h"

#include "core/common.h"

#include <stdlib.h>
#include <sys/stat.h>

static const char *tmp(const char *name) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", sdw_test_tmpdir(), name);
    return buf[k];
}

/* A folder with the fixture as tinyemb.safetensors (the token is the stem, as in A1111). */
static const char *emb_dir(void) {
    static const char *dir;
    if (dir) return dir;
    dir = tmp("embeddings");
    static char keep[1024];
    snprintf(keep, sizeof keep, "%s", dir);
    dir = keep;
    SDW_ASSERT(mkdir(dir, 0700) == 0);
    size_t n;
    void *data = sdw_test_read_file(sdw_test_path("models/tiny-sd15-embedding-tinyemb.safetensors"),
                                    &n);
    char path[1100];
    snprintf(path, sizeof path, "%s/tinyemb.safetensors", dir);
    FILE *f = fopen(path, "wb");
    SDW_ASSERT(data && f && fwrite(data, 1, n, f) == n && fclose(f) == 0);
    free(data);
    return dir;
}

#define CASE "tiny-sd15/txt2img-euler-embedding"
/* The case's settings (manifest: seed 42, 4 steps, guidance 7.5, euler, 64x64). */
#define CASE_ARGS                                                                                  \
    "-p 'a photo of tinyemb, detailed' --steps 4 --cfg-scale 7.5 -s 42 --sampler euler -W 64 "   \
    "-H 64"

static int run(char *out, size_t cap, const char *extra, const char *png) {
    return sdw_test_run_sdw(out, cap, "generate -m '%s' --embeddings-dir '%s' " CASE_ARGS " %s -o '%s'",
                            sdw_test_path("models/tiny-sd15"), emb_dir(), extra, png);
}

static void check_golden(const char *extra, const char *png) {
    char out[8192];
    const int rc = run(out, sizeof out, extra, png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    const int d = sdw_test_png_max_diff(png, sdw_test_path("golden/%s/image.png", CASE));
    fprintf(stderr, "  %s (%s): max diff %d levels\n", CASE, *extra ? extra : "plain", d);
    ASSERT_TRUE(d <= 1);
}

static void test_embedding_golden(void) {
    check_golden("", tmp("plain.png"));
}

static void test_embedding_golden_a1111(void) {
    check_golden("--prompt-syntax", tmp("a1111.png"));
}

/* clip skip 1 (and sd.cpp's -1) is the model's own layer: the golden; 2 is another image. */
static void test_clip_skip(void) {
    check_golden("--clip-skip 1", tmp("skip1.png"));
    check_golden("--clip-skip -1", tmp("skipm1.png"));
    char out[8192];
    ASSERT_EQ_INT(run(out, sizeof out, "--clip-skip 2", tmp("skip2.png")), 0);
    ASSERT_TRUE(sdw_test_png_max_diff(tmp("skip2.png"), sdw_test_path("golden/%s/image.png", CASE)) > 1);
}

static void test_info_lists_embeddings(void) {
    char out[8192];
    const int rc = sdw_test_run_sdw(out, sizeof out, "info -m '%s' --embeddings-dir '%s'",
                                    sdw_test_path("models/tiny-sd15"), emb_dir());
    ASSERT_EQ_INT(rc, 0);
    ASSERT_STR_CONTAINS(out, "embeddings:   1: tinyemb (2 vectors, 32 wide)");
}

/* Bad input: each a one-line error with its exit code (2 usage, 3 bad input, 4 load). */
static void test_refusals(void) {
    char out[8192];
    int rc = run(out, sizeof out, "--clip-skip x", tmp("x.png"));
    ASSERT_EQ_INT(rc, 2);
    ASSERT_STR_CONTAINS(out, "--clip-skip");
    rc = run(out, sizeof out, "--clip-skip 99", tmp("x.png"));
    ASSERT_EQ_INT(rc, 2);
    rc = run(out, sizeof out, "--clip-skip 9", tmp("x.png"));
    ASSERT_EQ_INT(rc, 3);
    ASSERT_STR_CONTAINS(out, "5 layers");
    rc = sdw_test_run_sdw(out, sizeof out,
                          "generate -m '%s' --embeddings-dir '%s' -p 'embedding:nothere' --steps 1 "
                          "-o '%s'",
                          sdw_test_path("models/tiny-sd15"), emb_dir(), tmp("x.png"));
    ASSERT_EQ_INT(rc, 3);
    ASSERT_STR_CONTAINS(out, "unknown embedding 'nothere'");
    rc = sdw_test_run_sdw(out, sizeof out,
                          "generate -m '%s' --prompt-syntax -p '(cat:1.2.3)' --steps 1 -o '%s'",
                          sdw_test_path("models/tiny-sd15"), tmp("x.png"));
    ASSERT_EQ_INT(rc, 3);
    ASSERT_STR_CONTAINS(out, "not a number");
    rc = sdw_test_run_sdw(out, sizeof out, "info -m '%s' --embeddings-dir '%s'",
                          sdw_test_path("models/tiny-sd15"), tmp("nothere"));
    ASSERT_TRUE(rc != 0);
    ASSERT_STR_CONTAINS(out, "nothere");
}

int main(void) {
    RUN(test_embedding_golden);
    RUN(test_embedding_golden_a1111);
    RUN(test_clip_skip);
    RUN(test_info_lists_embeddings);
    RUN(test_refusals);
    return sdw_test_finish();
}
