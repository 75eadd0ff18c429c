/* Tests for text/clip_tokenizer: every prompt of fixtures/clip-tokenizer/golden.json (produced by
 * transformers' CLIPTokenizer with ftfy) must give its ids, ids_77 and ids_77_pad0 exactly. */
#include "sdw_test.h"
#include "core/common.h"
#include "text/clip_tokenizer.h"
#include "text/text_fix.h"

#include <dirent.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static sdw_clip_tokenizer *g_tok; /* the real CLIP vocabulary, loaded once */

static const char *tok_dir(void) { return sdw_test_path("clip-tokenizer"); }

static bool ids_equal(const int32_t *got, int n_got, json_t *want, const char *prompt,
                      const char *field) {
    int n = (int)json_array_size(want);
    bool same = n == n_got;
    for (int i = 0; same && i < n; i++) same = got[i] == json_integer_value(json_array_get(want, i));
    if (!same) {
        fprintf(stderr, "  %s mismatch for prompt \"%s\"\n   got:", field, prompt);
        for (int i = 0; i < n_got; i++) fprintf(stderr, " %d", got[i]);
        fprintf(stderr, "\n  want:");
        for (int i = 0; i < n; i++) fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(want, i)));
        fprintf(stderr, "\n");
    }
    return same;
}

static void test_load_speed_and_size(void) {
    sdw_error err_ = {0}, *err = &err_;
    sdw_clip_tokenizer *t = NULL;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ASSERT_OK(sdw_clip_tokenizer_load(tok_dir(), &t, err), err);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    printf("  load: %.1f ms\n", ms); /* reported, not asserted: timing is no test */
    ASSERT_EQ_INT(sdw_clip_tokenizer_vocab_size(t), 49408);
    ASSERT_EQ_INT(sdw_clip_tokenizer_bos(t), 49406);
    ASSERT_EQ_INT(sdw_clip_tokenizer_eos(t), 49407);
    sdw_clip_tokenizer_destroy(t);
}

static void test_golden(void) {
    json_error_t jerr;
    json_t *root = json_load_file(sdw_test_path("clip-tokenizer/golden.json"), 0, &jerr);
    ASSERT_TRUE(root && json_is_array(root) && json_array_size(root) > 0);
    size_t i;
    json_t *c;
    int failures = 0, n_cases = 0;
    json_array_foreach(root, i, c) {
        const char *prompt = json_string_value(json_object_get(c, "prompt"));
        json_t *ids = json_object_get(c, "ids"), *ids77 = json_object_get(c, "ids_77"),
               *pad0 = json_object_get(c, "ids_77_pad0");
        if (!prompt || !json_is_array(ids) || !json_is_array(ids77) || !json_is_array(pad0)) {
            json_decref(root);
            ASSERT_TRUE(!"golden case lacks prompt/ids/ids_77/ids_77_pad0");
        }
        n_cases++;
        sdw_error err_ = {0}, *err = &err_;
        int32_t *got = NULL, win[77], win0[77];
        int n = 0;
        bool cut = false, cut0 = false;
        if (sdw_clip_tokenize(g_tok, prompt, &got, &n, err) != SDW_OK ||
            sdw_clip_tokenize_window(g_tok, prompt, 77, sdw_clip_tokenizer_eos(g_tok), win, &cut, err) != SDW_OK ||
            sdw_clip_tokenize_window(g_tok, prompt, 77, 0, win0, &cut0, err) != SDW_OK) {
            fprintf(stderr, "  \"%s\": %s\n", prompt, err->msg);
            failures++;
            free(got);
            continue;
        }
        bool ok = ids_equal(got, n, ids, prompt, "ids") & ids_equal(win, 77, ids77, prompt, "ids_77") &
                  ids_equal(win0, 77, pad0, prompt, "ids_77_pad0");
        if (cut != (n > 77) || cut0 != cut) {
            fprintf(stderr, "  truncated flag wrong for \"%s\"\n", prompt);
            ok = false;
        }
        failures += !ok;
        free(got);
    }
    json_decref(root);
    printf("  %d golden prompts, %d failing\n", n_cases, failures);
    ASSERT_EQ_INT(failures, 0);
}

/* The demo model: ids are CLIP's own first 512 + BOS/EOS, and decode inverts encode. */
static void test_byte_level_round_trip(void) {
    sdw_clip_tokenizer *t = sdw_clip_tokenizer_create_byte_level();
    sdw_error err_ = {0}, *err = &err_;
    ASSERT_EQ_INT(sdw_clip_tokenizer_vocab_size(t), 514);
    ASSERT_EQ_INT(sdw_clip_tokenizer_bos(t), 512);
    ASSERT_EQ_INT(sdw_clip_tokenizer_eos(t), 513);
    int32_t *ids = NULL;
    int n = 0;
    ASSERT_OK(sdw_clip_tokenize(t, "Hi, caf\xc3\xa9!", &ids, &n, err), err);
    /* hi , café ! -> h i</w> ,</w> c a f Ã ©</w> !</w> (é = bytes C3 A9, shown as Ã ©); the ids
     * are those of the same strings in the real CLIP vocab.json. */
    const int32_t want[] = {512, 71, 328, 267, 66, 64, 69, 127, 358, 256, 513};
    ASSERT_EQ_INT(n, (int)SDW_ARRAY_LEN(want));
    for (int i = 0; i < n; i++) ASSERT_EQ_INT(ids[i], want[i]);
    char *back = sdw_clip_detokenize(t, ids, n);
    ASSERT_TRUE(!strcmp(back, "hi , caf\xc3\xa9 !"));
    free(back);
    free(ids);

    /* Every byte value 0x20..0xFF that survives cleaning round-trips through the byte tokens. */
    char text[512];
    size_t k = 0;
    for (unsigned c = 0x21; c < 0x7F; c++) if (c < 'A' || c > 'Z') text[k++] = (char)c;
    memcpy(text + k, " \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x90\xb6", 12); /* " 東京 🐶" */
    k += 12;
    text[k] = 0;
    ASSERT_OK(sdw_clip_tokenize(t, text, &ids, &n, err), err);
    back = sdw_clip_detokenize(t, ids, n);
    /* decode() puts a space after every word; compare with spaces removed */
    char a[512], b[512];
    size_t na = 0, nb = 0;
    for (const char *p = text; *p; p++) if (*p != ' ') a[na++] = *p;
    for (const char *p = back; *p; p++) if (*p != ' ') b[nb++] = *p;
    a[na] = b[nb] = 0;
    ASSERT_TRUE(!strcmp(a, b));
    free(back);
    free(ids);
    sdw_clip_tokenizer_destroy(t);
}

static void test_real_vocab_decode(void) {
    sdw_error err_ = {0}, *err = &err_;
    int32_t *ids = NULL;
    int n = 0;
    ASSERT_OK(sdw_clip_tokenize(g_tok, "An Astronaut, riding a horse!", &ids, &n, err), err);
    char *back = sdw_clip_detokenize(g_tok, ids, n);
    ASSERT_TRUE(!strcmp(back, "an astronaut , riding a horse !"));
    free(back);
    free(ids);
}

static void test_window_truncation(void) {
    sdw_error err_ = {0}, *err = &err_;
    int32_t win[8];
    bool cut = true;
    ASSERT_OK(sdw_clip_tokenize_window(g_tok, "a photo of a cat", 8, 0, win, &cut, err), err);
    const int32_t want[8] = {49406, 320, 1125, 539, 320, 2368, 49407, 0};
    for (int i = 0; i < 8; i++) ASSERT_EQ_INT(win[i], want[i]);
    ASSERT_TRUE(!cut);
    ASSERT_OK(sdw_clip_tokenize_window(g_tok, "a photo of a cat", 5, 0, win, &cut, err), err);
    const int32_t want5[5] = {49406, 320, 1125, 539, 49407};
    for (int i = 0; i < 5; i++) ASSERT_EQ_INT(win[i], want5[i]);
    ASSERT_TRUE(cut);
}

static void test_invalid_utf8(void) {
    static const char *const bad[] = {
        "caf\xc3",             /* truncated 2-byte sequence */
        "\xff\xfe",            /* never valid */
        "a\xc0\xaf",           /* overlong '/' */
        "x\xed\xa0\x80y",      /* UTF-16 surrogate */
        "\xf4\x90\x80\x80",    /* above U+10FFFF */
        "ok \x80 continuation", /* stray continuation byte */
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(bad); i++) {
        sdw_error err_ = {0}, *err = &err_;
        int32_t *ids = (int32_t *)0x1, win[77];
        int n = -7;
        bool cut = false;
        ASSERT_STATUS(sdw_clip_tokenize(g_tok, bad[i], &ids, &n, err), SDW_E_INVALID_ARG);
        ASSERT_STR_CONTAINS(err->msg, "invalid UTF-8 at byte offset");
        ASSERT_TRUE(ids == (int32_t *)0x1 && n == -7); /* outputs untouched */
        ASSERT_STATUS(sdw_clip_tokenize_window(g_tok, bad[i], 77, 0, win, &cut, err), SDW_E_INVALID_ARG);
    }
    sdw_error err_ = {0}, *err = &err_;
    int32_t *ids;
    int n;
    ASSERT_STATUS(sdw_clip_tokenize(g_tok, "caf\xc3", &ids, &n, err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err->msg, "offset 3");
}

/* A fresh folder under the test's temporary directory. */
static const char *subdir(const char *name) {
    static char dir[2][1024];
    static int k;
    char *d = dir[k++ & 1];
    snprintf(d, sizeof dir[0], "%s/%s", sdw_test_tmpdir(), name);
    mkdir(d, 0700);
    return d;
}

static void test_missing_and_bad_files(void) {
    sdw_error err_ = {0}, *err = &err_;
    sdw_clip_tokenizer *t = (sdw_clip_tokenizer *)0x1;
    ASSERT_STATUS(sdw_clip_tokenizer_load("/nonexistent/tokenizer", &t, err), SDW_E_IO);
    ASSERT_STR_CONTAINS(err->msg, "/nonexistent/tokenizer/vocab.json");
    ASSERT_TRUE(t == (sdw_clip_tokenizer *)0x1);

    const char *dir = subdir("bad");
    char path[1024];
    /* vocab.json present, merges.txt missing */
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    FILE *f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("{\"a\": 0, \"<|startoftext|>\": 1, \"<|endoftext|>\": 2}", f);
    fclose(f);
    ASSERT_STATUS(sdw_clip_tokenizer_load(dir, &t, err), SDW_E_IO);
    ASSERT_STR_CONTAINS(err->msg, "merges.txt");

    /* a malformed merges line names the file and line */
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("#version: 0.2\na b\nthree parts here\n", f);
    fclose(f);
    ASSERT_STATUS(sdw_clip_tokenizer_load(dir, &t, err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err->msg, "merges.txt:3");

    /* a good merges file, but vocab.json is broken JSON, then lacks the special tokens */
    f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("#version: 0.2\na b\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("{\"a\": 0,", f);
    fclose(f);
    ASSERT_STATUS(sdw_clip_tokenizer_load(dir, &t, err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err->msg, "vocab.json");
    f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("{\"a\": 0, \"b\": \"one\"}", f);
    fclose(f);
    ASSERT_STATUS(sdw_clip_tokenizer_load(dir, &t, err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err->msg, "not an integer");
    f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("{\"a\": 0, \"b\": 1}", f);
    fclose(f);
    ASSERT_STATUS(sdw_clip_tokenizer_load(dir, &t, err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err->msg, "<|startoftext|>");
    ASSERT_TRUE(t == (sdw_clip_tokenizer *)0x1);
}

/* A tiny hand-written vocabulary pins down the BPE rules: lowest rank first, every occurrence
 * merged left to right, "</w>" on the last symbol, unknown results -> unk (= EOS). */
static void test_bpe_rules(void) {
    const char *dir = subdir("bpe");
    char path[1024];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    FILE *f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("{\"a\": 0, \"b\": 1, \"a</w>\": 2, \"aa\": 3, \"aa</w>\": 4, \"ab\": 5,"
          " \"<|startoftext|>\": 6, \"<|endoftext|>\": 7}", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    /* rank 0: a a; rank 1: a b; rank 2: a a</w>; rank 3 makes "b a</w>" (not in the vocab) */
    fputs("#version: 0.2\na a\na b\na a</w>\nb a</w>\n", f);
    fclose(f);
    sdw_error err_ = {0}, *err = &err_;
    sdw_clip_tokenizer *t = NULL;
    ASSERT_OK(sdw_clip_tokenizer_load(dir, &t, err), err);
    ASSERT_EQ_INT(sdw_clip_tokenizer_vocab_size(t), 8);
    int32_t *ids;
    int n;
    /* "aaa": a a a</w> -> (a a) first: aa a</w>; no "aa a</w>" merge -> [3, 2] */
    ASSERT_OK(sdw_clip_tokenize(t, "aaa", &ids, &n, err), err);
    ASSERT_EQ_INT(n, 4);
    ASSERT_EQ_INT(ids[1], 3);
    ASSERT_EQ_INT(ids[2], 2);
    free(ids);
    /* "aab ba": a a b</w> -> aa b</w> (b</w> not in vocab: unk 7); b a</w> -> "ba</w>": unk */
    ASSERT_OK(sdw_clip_tokenize(t, "aab ba", &ids, &n, err), err);
    ASSERT_EQ_INT(n, 5);
    ASSERT_EQ_INT(ids[1], 3);
    ASSERT_EQ_INT(ids[2], 7);
    ASSERT_EQ_INT(ids[3], 7);
    free(ids);
    sdw_clip_tokenizer_destroy(t);
}

/* ftfy steps that the golden prompts do not all reach, against ftfy's documented examples. */
static void test_text_fix_examples(void) {
    static const struct { const char *in, *out; } cases[] = {
        {"Broken text&hellip; it&#x2019;s \xef\xac\x82ubberi\xef\xac\x81""c!", "Broken text\xe2\x80\xa6 it's flubberific!"},
        {"&lt;tag&gt;", "<tag>"},
        {"<em>HTML &lt;3</em>", "<em>HTML &lt;3</em>"}, /* '<' present: entities left alone */
        {"P&EACUTE;REZ &ntilde; &NTILDE; &nTILDE;", "P\xc3\x89REZ \xc3\xb1 \xc3\x91 &nTILDE;"},
        {"BUNDESSTRA&SZLIG;E", "BUNDESSTRASSE"},
        {"&amp;lt;", "<"},                                            /* repeated to a fixed point */
        {"&#65;&#x42;&#X43;&#59;&#65a;&#;&#0;", "ABC&#59;&#65a;&#;\xef\xbf\xbd"},
        {"\xef\xbc\xac\xef\xbc\xaf\xef\xbc\xb5\xef\xbc\xa4\xe3\x80\x80\xef\xbc\xae\xef\xbc\xaf", "LOUD NO"},
        {"\xe2\x80\x9chere\xe2\x80\x99s a test\xe2\x80\x9d", "\"here's a test\""},
        {"\x1b[36;44mI'm blue\x1b[0m\x01\x7f", "I'm blue"},
        {"a\r\nb\rc\xe2\x80\xa8" "d", "a\nb\nc\nd"},
        {"e\xcc\x81", "\xc3\xa9"},                                    /* NFC */
        {"\xc2\x85 \xc2\x80", "\xe2\x80\xa6 \xe2\x82\xac"},           /* C1 -> Windows-1252 */
        {"line &amp; one\n<b> &amp;\n&amp;", "line & one\n<b> &amp;\n&amp;"}, /* '<' sticks */
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(cases); i++) {
        uint32_t *cp, *fixed;
        size_t n, nf;
        sdw_error err_ = {0}, *err = &err_;
        ASSERT_OK(sdw_utf8_decode(cases[i].in, strlen(cases[i].in), &cp, &n, err), err);
        sdw_text_fix(cp, n, &fixed, &nf);
        char *s = sdw_utf8_encode(fixed, nf, NULL);
        if (strcmp(s, cases[i].out)) {
            sdw_test_fail(__FILE__, __LINE__, "fix_text(\"%s\") = \"%s\", want \"%s\"", cases[i].in, s,
                          cases[i].out);
            free(s), free(cp), free(fixed);
            return;
        }
        free(s), free(cp), free(fixed);
    }
}

/* The pipelines' own tokenizer folders: every te*.{cond,uncond}.input_ids of 77 tokens recorded
 * by the diffusers goldens (which pad with the folder's pad token: EOS for SD1.x, "!" = 0 for
 * SD2 and SDXL's second tokenizer) is reproduced from the manifest's prompt. */
static void test_pipeline_goldens(void) {
    DIR *models = opendir(sdw_test_path("golden"));
    ASSERT_TRUE(models != NULL);
    int n_checked = 0, failures = 0;
    struct dirent *m;
    while ((m = readdir(models))) {
        if (m->d_name[0] == '.') continue;
        DIR *cases = opendir(sdw_test_path("golden/%s", m->d_name));
        struct dirent *c;
        while (cases && (c = readdir(cases))) {
            if (c->d_name[0] == '.') continue;
            char model_case[600];
            snprintf(model_case, sizeof model_case, "%s/%s", m->d_name, c->d_name);
            sdw_golden *g = sdw_golden_open(model_case);
            if (!g) continue;
            json_t *man = sdw_golden_manifest(g);
            const char *model = json_string_value(json_object_get(man, "model"));
            /* A textual-inversion case's ids hold the embedding's added tokens (49408, ...),
             * which the folder's tokenizer alone does not know: the embedding test covers it. */
            if (json_object_get(man, "embedding")) model = NULL;
            static const char *const k_enc[2][2] = {{"te", "tokenizer"}, {"te2", "tokenizer_2"}};
            for (int e = 0; e < 2 && model; e++) {
                const char *dir = sdw_test_path("%s/%s", model, k_enc[e][1]);
                struct stat st;
                if (stat(dir, &st) != 0) continue; /* single-file model, or T5 / no 2nd CLIP */
                for (int u = 0; u < 2; u++) {
                    char name[64];
                    snprintf(name, sizeof name, "%s.%s.input_ids", k_enc[e][0], u ? "uncond" : "cond");
                    const sdw_golden_tensor *want = sdw_golden_get(g, name);
                    if (!want || want->n != 77 || strcmp(want->dtype, "int32")) continue;
                    json_t *p = json_object_get(man, u ? "negative_prompt" : "prompt");
                    const char *prompt = json_is_string(p) ? json_string_value(p) : "";
                    sdw_clip_tokenizer *t = NULL;
                    sdw_error err_ = {0}, *err = &err_;
                    int32_t got[77];
                    if (sdw_clip_tokenizer_load(dir, &t, err) != SDW_OK ||
                        sdw_clip_tokenize_window(t, prompt, 77, sdw_clip_tokenizer_pad(t), got, NULL, err) != SDW_OK) {
                        fprintf(stderr, "  %s %s: %s\n", model_case, name, err->msg);
                        failures++;
                    } else if (memcmp(got, want->data, sizeof got)) {
                        fprintf(stderr, "  %s %s: ids differ\n", model_case, name);
                        failures++;
                    }
                    n_checked++;
                    sdw_clip_tokenizer_destroy(t);
                }
            }
            sdw_golden_close(g);
        }
        if (cases) closedir(cases);
    }
    closedir(models);
    printf("  %d pipeline input_ids checked, %d failing\n", n_checked, failures);
    ASSERT_TRUE(n_checked >= 20);
    ASSERT_EQ_INT(failures, 0);
}

/* SD2 / SDXL second tokenizer: its pad token "!" is a special token, so every "!" becomes id 0.
 * Expected ids from diffusers issue #4153 (transformers' output for this prompt, and open_clip's
 * for the ordinary CLIP tokenizer, which the SD1.x folder matches). */
static void test_exclamation_pad_token(void) {
    sdw_error err_ = {0}, *err = &err_;
    sdw_clip_tokenizer *t2 = NULL, *t1 = NULL;
    ASSERT_OK(sdw_clip_tokenizer_load(sdw_test_path("models/tiny-sdxl/tokenizer_2"), &t2, err), err);
    ASSERT_EQ_INT(sdw_clip_tokenizer_pad(t2), 0);
    int32_t *ids;
    int n;
    ASSERT_OK(sdw_clip_tokenize(t2, "! !! !!!", &ids, &n, err), err);
    const int32_t want2[] = {49406, 0, 0, 0, 0, 0, 0, 49407};
    ASSERT_EQ_INT(n, 8);
    for (int i = 0; i < n; i++) ASSERT_EQ_INT(ids[i], want2[i]);
    free(ids);
    sdw_clip_tokenizer_destroy(t2);
    ASSERT_OK(sdw_clip_tokenizer_load(sdw_test_path("models/tiny-sd15/tokenizer"), &t1, err), err);
    ASSERT_EQ_INT(sdw_clip_tokenizer_pad(t1), 49407);
    ASSERT_OK(sdw_clip_tokenize(t1, "! !! !!!", &ids, &n, err), err);
    const int32_t want1[] = {49406, 256, 748, 995, 49407};
    ASSERT_EQ_INT(n, 5);
    for (int i = 0; i < n; i++) ASSERT_EQ_INT(ids[i], want1[i]);
    free(ids);
    sdw_clip_tokenizer_destroy(t1);
}

int main(void) {
    sdw_error err_ = {0}, *err = &err_;
    struct stat st;
    if (stat(sdw_test_path("clip-tokenizer/vocab.json"), &st) != 0) {
        fprintf(stderr, "fixtures missing: %s\n", tok_dir());
        return 1; /* the fixtures are part of the test setup: missing is a failure */
    }
    if (sdw_clip_tokenizer_load(tok_dir(), &g_tok, err) != SDW_OK) {
        fprintf(stderr, "cannot load %s: %s\n", tok_dir(), err->msg);
        return 1;
    }
    RUN(test_load_speed_and_size);
    RUN(test_golden);
    RUN(test_byte_level_round_trip);
    RUN(test_real_vocab_decode);
    RUN(test_window_truncation);
    RUN(test_invalid_utf8);
    RUN(test_missing_and_bad_files);
    RUN(test_bpe_rules);
    RUN(test_text_fix_examples);
    RUN(test_pipeline_goldens);
    RUN(test_exclamation_pad_token);
    sdw_clip_tokenizer_destroy(g_tok);
    return sdw_test_finish();
}
