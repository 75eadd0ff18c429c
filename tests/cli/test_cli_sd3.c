/* The sdw command with Stable Diffusion 3: `sdw info` against the reference's parameter counts,
 * `sdw generate` against the reference PNG (CFG with a negative prompt's default ""), the
 * components as files (--clip-l, --clip-g, --t5xxl), running without T5 (--t5xxl none), and
 * bad input. */
#include "sdw_test.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *field(const char *out, const char *key, char *buf, size_t cap) {
    buf[0] = 0;
    char k[64];
    snprintf(k, sizeof k, "\n%s:", key);
    const char *p = strstr(out, k);
    if (!p) return buf;
    p += strlen(k);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, "\n");
    snprintf(buf, cap, "%.*s", (int)(n < cap - 1 ? n : cap - 1), p);
    return buf;
}

static long long count_of(const char *line) {
    const char *b = strchr(line, '[');
    return b ? atoll(b + 1) : -1;
}

static long long ref_params(const char *component) {
    json_t *j = json_load_file(sdw_test_path("models/tiny-sd3/ref_make_info.json"), 0, NULL);
    json_t *v = json_object_get(json_object_get(j, "params"), component);
    long long n = json_is_integer(v) ? (long long)json_integer_value(v) : -2;
    json_decref(j);
    return n;
}

static void test_info(void) {
    char out[8192], v[256];
    int rc = sdw_test_run_sdw(out, sizeof out, "info -m '%s'", sdw_test_path("models/tiny-sd3"));
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_TRUE(!strcmp(field(out, "family", v, sizeof v), "sd3"));
    ASSERT_TRUE(!strcmp(field(out, "variant", v, sizeof v), "3"));
    static const struct {
        const char *line, *ref;
    } parts[] = {{"transformer", "transformer"},
                 {"vae", "vae"},
                 {"text encoder", "text_encoder"},
                 {"text encoder 2", "text_encoder_2"},
                 {"text encoder 3", "text_encoder_3"}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        long long got = count_of(field(out, parts[i].line, v, sizeof v)),
                  want = ref_params(parts[i].ref);
        if (got != want) fprintf(stderr, "  %s: %lld, reference %lld\n", parts[i].line, got, want);
        ASSERT_EQ_INT(got, want);
    }
}

/* The golden through the command line, from the folder and with every text encoder given as a
 * file (the folder's own files: the same image). */
static void test_generate_matches_reference(void) {
    char out[8192], png[1024], files[4096];
    const char *m = sdw_test_path("models/tiny-sd3");
    const char *variants[2] = {"", files};
    snprintf(files, sizeof files, "--clip-l '%s/text_encoder/model.safetensors' --clip-g "
             "'%s/text_encoder_2/model.safetensors' --t5xxl '%s/text_encoder_3/model.safetensors'",
             m, m, m);
    for (int k = 0; k < 2; k++) {
        snprintf(png, sizeof png, "%s/sd3-%d.png", sdw_test_tmpdir(), k);
        int rc = sdw_test_run_sdw(out, sizeof out,
                                  "generate -m '%s' %s -p 'a photo of a cat' -W 64 -H 64 "
                                  "--steps 4 --cfg-scale 5 -s 42 -o '%s'",
                                  m, variants[k], png);
        if (rc) fprintf(stderr, "%s\n", out);
        ASSERT_EQ_INT(rc, 0);
        int d = sdw_test_png_max_diff(png,
                                      sdw_test_path("golden/tiny-sd3/txt2img-flowmatch/image.png"));
        fprintf(stderr, "  %s: max diff %d levels\n", k ? "component files" : "folder", d);
        ASSERT_TRUE(d <= 2);
    }
}

/* --t5xxl none: zeros in T5's place (a different image), and no T5 window to set. */
static void test_without_t5(void) {
    char out[8192], png[1024];
    snprintf(png, sizeof png, "%s/sd3-no-t5.png", sdw_test_tmpdir());
    const char *m = sdw_test_path("models/tiny-sd3");
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' --t5xxl none -p 'a photo of a cat' -W 64 -H 64 "
                              "--steps 4 --cfg-scale 5 -s 42 -o '%s'",
                              m, png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_TRUE(sdw_test_png_max_diff(png, sdw_test_path("golden/tiny-sd3/txt2img-flowmatch/"
                                                         "image.png")) > 2);
    rc = sdw_test_run_sdw(out, sizeof out,
                          "generate -m '%s' --t5xxl none -p cat --param max_sequence_length=77 "
                          "-o '%s'",
                          m, png);
    ASSERT_TRUE(rc != 0);
    ASSERT_STR_CONTAINS(out, "this model takes no option 'max_sequence_length'");
}

static void test_bad_input(void) {
    char out[8192];
    const char *m = sdw_test_path("models/tiny-sd3");
    int rc = sdw_test_run_sdw(out, sizeof out, "generate -m '%s' -p cat -W 256 -H 64", m);
    ASSERT_TRUE(rc != 0); /* the position table covers 32 tokens a side: 128 px */
    ASSERT_STR_CONTAINS(out, "width 256 is out of range [64, 128]");
    rc = sdw_test_run_sdw(out, sizeof out, "generate -m '%s' -p cat --param max_sequence_length=513",
                          m);
    ASSERT_TRUE(rc != 0);
    ASSERT_STR_CONTAINS(out, "max_sequence_length 513 is out of range [1, 512]");
    rc = sdw_test_run_sdw(out, sizeof out, "info -m '%s' --clip-g /nonexistent.safetensors", m);
    ASSERT_TRUE(rc != 0);
    ASSERT_STR_CONTAINS(out, "--clip-g /nonexistent.safetensors does not exist");
}

int main(void) {
    RUN(test_info);
    RUN(test_generate_matches_reference);
    RUN(test_without_t5);
    RUN(test_bad_input);
    return sdw_test_finish();
}
