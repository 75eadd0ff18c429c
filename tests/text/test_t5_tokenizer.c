/* Tests for text/t5_tokenizer: the T5 input_ids the FLUX and SD3 goldens recorded (transformers
 * 4.30.2 T5Tokenizer over the fixtures' spiece.model), and the rules of T5Tokenizer around them.
 *
 * Expected ids come from the goldens, or from the rules applied to golden ids: "a photo of a
 * cat" is [59 247 111 40 83 35 59 4 257] (te2.cond.input_ids), so "a photo" is its first five
 * ids and "of a cat" its last four (sentencepiece cuts at each "▁": no piece of this vocabulary
 * holds one inside). Where a value needs the vocabulary itself (an unknown character is <unk>
 * = 2, "▁" alone is 4), it was computed with python3-sentencepiece over the same spiece.model
 * and the rules of transformers 4.30.2's tokenization_t5.py / tokenization_utils.py, as noted. */
#include "sdw_test.h"
#include "core/common.h"
#include "text/t5_tokenizer.h"

#include <dirent.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define EOS 1
#define PAD 0
#define UNK 2
static const int32_t k_cat[] = {59, 247, 111, 40, 83, 35, 59, 4, 257}; /* "a photo of a cat" */

static sdw_t5_tokenizer *g_tok; /* models/tiny-flux/tokenizer_2 */

static const char *flux_dir(void) {
    return sdw_test_path("models/tiny-flux/tokenizer_2");
}

/* Tokenizes text fully and compares with want[0..n). */
static bool ids_are(sdw_t5_tokenizer *t, const char *text, const int32_t *want, int n) {
    sdw_error err = {0};
    int32_t *got = NULL;
    int m = 0;
    if (sdw_t5_tokenize(t, text, &got, &m, &err) != SDW_OK) {
        fprintf(stderr, "  \"%s\": %s\n", text, err.msg);
        return false;
    }
    bool same = m == n && !memcmp(got, want, (size_t)n * sizeof *want);
    if (!same) {
        fprintf(stderr, "  \"%s\"\n   got:", text);
        for (int i = 0; i < m; i++)
            fprintf(stderr, " %d", got[i]);
        fprintf(stderr, "\n  want:");
        for (int i = 0; i < n; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
    }
    free(got);
    return same;
}

/* A new folder dir (under the test's temporary directory) holding a copy of the fixture's
 * spiece.model; name is its name. */
static bool make_model_dir(char *dir, size_t cap, const char *name) {
    snprintf(dir, cap, "%s/%s", sdw_test_tmpdir(), name);
    size_t n = 0;
    void *model =
        sdw_test_read_file(sdw_test_path("models/tiny-flux/tokenizer_2/spiece.model"), &n);
    char path[700];
    snprintf(path, sizeof path, "%s/spiece.model", dir);
    FILE *f = model && mkdir(dir, 0700) == 0 ? fopen(path, "wb") : NULL;
    bool ok = f && fwrite(model, 1, n, f) == n;
    if (f) ok &= fclose(f) == 0;
    free(model);
    return ok;
}

/* Writes text to dir/name. */
static bool put_file(const char *dir, const char *name, const void *data, size_t n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(data, 1, n, f) == n;
    if (f) ok &= fclose(f) == 0;
    return ok;
}

/* One golden's input_ids from its manifest's prompt (or negative prompt; None means "", as the
 * pipelines pass it) and the model's tokenizer folder; the window is the recorded length. */
static bool golden_matches(const char *model_case, const char *name, const char *folder) {
    sdw_golden *g = sdw_golden_open(model_case);
    if (!g) {
        fprintf(stderr, "  golden %s missing\n", model_case);
        return false;
    }
    const sdw_golden_tensor *want = sdw_golden_get(g, name);
    json_t *man = sdw_golden_manifest(g);
    json_t *p = json_object_get(man, strstr(name, ".uncond.") ? "negative_prompt" : "prompt");
    const char *prompt = json_is_string(p) ? json_string_value(p) : "";
    const char *model = json_string_value(json_object_get(man, "model"));
    bool ok =
        want && !strcmp(want->dtype, "int32") && want->n_dims == 2 && want->shape[0] == 1 && model;
    sdw_t5_tokenizer *t = NULL;
    sdw_error err = {0};
    int32_t *got = NULL;
    bool cut = true;
    if (ok) {
        got = calloc(want->n, sizeof *got);
        ok = sdw_t5_tokenizer_load(sdw_test_path("%s/%s", model, folder), &t, &err) == SDW_OK &&
             sdw_t5_tokenize_window(t, prompt, (int)want->n, got, &cut, &err) == SDW_OK;
        if (!ok) fprintf(stderr, "  %s %s: %s\n", model_case, name, err.msg);
    }
    if (ok && (memcmp(got, want->data, want->n * sizeof *got) || cut)) {
        fprintf(stderr, "  %s %s: ids differ\n", model_case, name);
        ok = false;
    }
    free(got);
    sdw_t5_tokenizer_destroy(t);
    sdw_golden_close(g);
    return ok;
}

/* The three pipelines' T5 ids: FLUX.1-dev style and schnell (tokenizer_2, 512), SD3
 * (tokenizer_3, 256), and SD3's unconditional pass, whose prompt is the empty string. */
static void test_goldens(void) {
    ASSERT_TRUE(golden_matches("tiny-flux/txt2img-flowmatch", "te2.cond.input_ids", "tokenizer_2"));
    ASSERT_TRUE(
        golden_matches("tiny-flux-schnell/txt2img-4step", "te2.cond.input_ids", "tokenizer_2"));
    ASSERT_TRUE(golden_matches("tiny-sd3/txt2img-flowmatch", "te3.cond.input_ids", "tokenizer_3"));
    ASSERT_TRUE(
        golden_matches("tiny-sd3/txt2img-flowmatch", "te3.uncond.input_ids", "tokenizer_3"));
    sdw_golden *g = sdw_golden_open("tiny-sd3/txt2img-flowmatch");
    ASSERT_TRUE(g != NULL);
    const sdw_golden_tensor *t = sdw_golden_get(g, "te3.cond.input_ids");
    ASSERT_TRUE(t && t->shape[1] == 256); /* SD3's max_sequence_length */
    sdw_golden_close(g);
}

/* Every T5 input_ids any golden recorded (a te*.input_ids whose model's tokenizer folder holds a
 * spiece.model), so cases added later are covered too. */
static void test_all_goldens(void) {
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
            struct stat st;
            if (stat(sdw_test_path("golden/%s/manifest.json", model_case), &st) != 0) continue;
            sdw_golden *g = sdw_golden_open(model_case);
            if (!g) continue;
            const char *model = json_string_value(json_object_get(sdw_golden_manifest(g), "model"));
            static const char *const k_enc[][2] = {{"te2", "tokenizer_2"}, {"te3", "tokenizer_3"}};
            for (size_t e = 0; e < SDW_ARRAY_LEN(k_enc) && model; e++) {
                if (stat(sdw_test_path("%s/%s/spiece.model", model, k_enc[e][1]), &st) != 0)
                    continue;
                for (int u = 0; u < 2; u++) {
                    char name[64];
                    snprintf(name, sizeof name, "%s.%s.input_ids", k_enc[e][0],
                             u ? "uncond" : "cond");
                    if (!sdw_golden_get(g, name)) continue;
                    failures += !golden_matches(model_case, name, k_enc[e][1]);
                    n_checked++;
                }
            }
            sdw_golden_close(g);
        }
        if (cases) closedir(cases);
    }
    closedir(models);
    printf("  %d T5 input_ids checked, %d failing\n", n_checked, failures);
    ASSERT_TRUE(n_checked >= 4);
    ASSERT_EQ_INT(failures, 0);
}

static void test_ids_and_accessors(void) {
    ASSERT_EQ_INT(sdw_t5_tokenizer_eos(g_tok), EOS); /* "</s>" */
    ASSERT_EQ_INT(sdw_t5_tokenizer_pad(g_tok), PAD); /* "<pad>" */
    int32_t want[SDW_ARRAY_LEN(k_cat) + 1];
    memcpy(want, k_cat, sizeof k_cat);
    want[SDW_ARRAY_LEN(k_cat)] = EOS;
    ASSERT_TRUE(ids_are(g_tok, "a photo of a cat", want, (int)SDW_ARRAY_LEN(want)));
    /* Extra ids count down from the top: "<extra_id_N>" = vocab - 1 - N. */
    int v = sdw_t5_tokenizer_vocab(g_tok);
    ASSERT_TRUE(ids_are(g_tok, "<extra_id_0>", (const int32_t[]){v - 1, EOS}, 2));
    ASSERT_TRUE(ids_are(g_tok, "<extra_id_99>", (const int32_t[]){v - 100, EOS}, 2));
    /* The same tokenizer from the spiece.model file alone (T5Tokenizer's defaults). */
    sdw_t5_tokenizer *f = NULL;
    sdw_error err = {0};
    ASSERT_OK(
        sdw_t5_tokenizer_load(sdw_test_path("models/tiny-flux/tokenizer_2/spiece.model"), &f, &err),
        &err);
    ASSERT_EQ_INT(sdw_t5_tokenizer_vocab(f), v);
    ASSERT_TRUE(ids_are(f, "a photo of a cat <extra_id_7>",
                        (const int32_t[]){59, 247, 111, 40, 83, 35, 59, 4, 257, v - 8, EOS}, 11));
    sdw_t5_tokenizer_destroy(f);
}

/* padding="max_length", truncation=True: the first max_len-1 tokens, EOS, then pad. */
static void test_truncation_and_padding(void) {
    sdw_error err = {0};
    int32_t w[512];
    bool cut = true;
    /* 9 tokens + EOS fit 10 exactly; 9 do not. */
    ASSERT_OK(sdw_t5_tokenize_window(g_tok, "a photo of a cat", 10, w, &cut, &err), &err);
    ASSERT_TRUE(!cut && !memcmp(w, k_cat, sizeof k_cat) && w[9] == EOS);
    ASSERT_OK(sdw_t5_tokenize_window(g_tok, "a photo of a cat", 9, w, &cut, &err), &err);
    ASSERT_TRUE(cut && !memcmp(w, k_cat, 8 * sizeof *w) && w[8] == EOS);
    ASSERT_OK(sdw_t5_tokenize_window(g_tok, "a photo of a cat", 2, w, &cut, &err), &err);
    ASSERT_TRUE(cut && w[0] == 59 && w[1] == EOS);
    /* 100 repetitions: 900 tokens, cut to 511 + EOS (the 9-token pattern repeats). */
    char *text = calloc(100 * 17 + 1, 1);
    for (int i = 0; i < 100; i++)
        strcat(text, i ? " a photo of a cat" : "a photo of a cat");
    ASSERT_OK(sdw_t5_tokenize_window(g_tok, text, 512, w, &cut, &err), &err);
    ASSERT_TRUE(cut);
    for (int i = 0; i < 511; i++)
        ASSERT_EQ_INT(w[i], k_cat[i % 9]);
    ASSERT_EQ_INT(w[511], EOS);
    int32_t *all = NULL;
    int n = 0;
    ASSERT_OK(sdw_t5_tokenize(g_tok, text, &all, &n, &err), &err);
    ASSERT_EQ_INT(n, 901);
    for (int i = 0; i < 900; i++)
        ASSERT_EQ_INT(all[i], k_cat[i % 9]);
    free(all);
    free(text);
    /* Short: the tokens, EOS, pad to the end. */
    ASSERT_OK(sdw_t5_tokenize_window(g_tok, "a photo", 512, w, &cut, &err), &err);
    ASSERT_TRUE(!cut && !memcmp(w, k_cat, 5 * sizeof *w) && w[5] == EOS);
    for (int i = 6; i < 512; i++)
        ASSERT_EQ_INT(w[i], PAD);
}

/* Special tokens typed in a prompt are matched in the raw text and become their ids; the text
 * beside them loses its whitespace (str.strip's, which includes U+0085); the ids get no second
 * EOS when they already end with one, also where truncation leaves one last. */
static void test_special_token_literals(void) {
    int v = sdw_t5_tokenizer_vocab(g_tok);
    ASSERT_TRUE(ids_are(g_tok, "a photo <extra_id_0> of a cat",
                        (const int32_t[]){59, 247, 111, 40, 83, v - 1, 35, 59, 4, 257, EOS}, 11));
    ASSERT_TRUE(ids_are(g_tok, "a photo<pad>of a cat<unk>",
                        (const int32_t[]){59, 247, 111, 40, 83, PAD, 35, 59, 4, 257, UNK, EOS},
                        12));
    ASSERT_TRUE(ids_are(g_tok, "a photo of a cat</s>",
                        (const int32_t[]){59, 247, 111, 40, 83, 35, 59, 4, 257, EOS},
                        10)); /* no second EOS */
    ASSERT_TRUE(ids_are(g_tok, "</s></s>", (const int32_t[]){EOS, EOS}, 2));
    /* "a" + U+0085: stripped before "</s>", so just "a" (59); U+0085 alone would be unknown. */
    ASSERT_TRUE(ids_are(g_tok,
                        "a\xc2\x85</s>\xc2\x85"
                        "a",
                        (const int32_t[]){59, EOS, 59, EOS}, 4));
    /* Longest match first: "<extra_id_10>" is not "<extra_id_1>" followed by "0>". */
    ASSERT_TRUE(
        ids_are(g_tok, "<extra_id_10><extra_id_1>", (const int32_t[]){v - 11, v - 2, EOS}, 3));
    /* Truncation that keeps an EOS literal last adds none: [59, EOS] then pad. */
    int32_t w[4];
    bool cut = false;
    sdw_error err = {0};
    ASSERT_OK(sdw_t5_tokenize_window(g_tok, "a </s> photo of a cat", 3, w, &cut, &err), &err);
    ASSERT_TRUE(cut && w[0] == 59 && w[1] == EOS && w[2] == PAD);
    /* "<extra_id_100>" is no special token (100 extra ids): plain text, computed with
     * python3-sentencepiece: ▁ < extra _ id _ 1 0 0 > (rules: no special match, so
     * sp_model.encode(text, out_type=str) and PieceToId). */
    ASSERT_TRUE(ids_are(g_tok, "<extra_id_100>",
                        (const int32_t[]){4, 509, 579, 3, 223, 3, 87, 570, 874, EOS}, 10));
}

/* An object in special_tokens_map.json is an AddedToken: stripping only as its flags say. */
static void test_added_token_flags(void) {
    char dir[600];
    ASSERT_TRUE(make_model_dir(dir, sizeof dir, "t5_added"));
    const char *map =
        "{\"eos_token\": {\"content\": \"</s>\", \"lstrip\": false, \"rstrip\": false,"
        " \"normalized\": false, \"single_word\": false}, \"pad_token\": \"<pad>\"}";
    ASSERT_TRUE(put_file(dir, "special_tokens_map.json", map, strlen(map)));
    sdw_t5_tokenizer *t = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_t5_tokenizer_load(dir, &t, &err), &err);
    /* Nothing is stripped, so "a\u0085" reaches sentencepiece: ▁a (59) and U+0085, unknown
     * (python3-sentencepiece). */
    ASSERT_TRUE(ids_are(t, "a\xc2\x85</s>", (const int32_t[]){59, UNK, EOS}, 3));
    sdw_t5_tokenizer_destroy(t);
}

/* Characters the vocabulary lacks become <unk>, a run of them one <unk> (sentencepiece joins
 * unknown pieces): "字 cat" is ▁ 字 ▁ cat = 4 2 4 257 (python3-sentencepiece), and 30,000 字
 * are still one <unk> (the join is linear here; the library's own is quadratic). */
static void test_unknown_characters(void) {
    ASSERT_TRUE(ids_are(g_tok, "\xe5\xad\x97 cat", (const int32_t[]){4, UNK, 4, 257, EOS}, 5));
    size_t n = 30000;
    char *text = malloc(3 * n + 8);
    for (size_t i = 0; i < n; i++)
        memcpy(text + 3 * i, "\xe5\xad\x97", 3);
    strcpy(text + 3 * n, " cat");
    ASSERT_TRUE(ids_are(g_tok, text, (const int32_t[]){4, UNK, 4, 257, EOS}, 5));
    free(text);
}

static void test_empty_and_blank(void) {
    ASSERT_TRUE(ids_are(g_tok, "", (const int32_t[]){EOS}, 1));
    ASSERT_TRUE(ids_are(g_tok, "   \t ", (const int32_t[]){EOS}, 1));
    int32_t w[8];
    bool cut = true;
    sdw_error err = {0};
    ASSERT_OK(sdw_t5_tokenize_window(g_tok, "", 8, w, &cut, &err), &err);
    ASSERT_TRUE(!cut && w[0] == EOS);
    for (int i = 1; i < 8; i++)
        ASSERT_EQ_INT(w[i], PAD);
}

static void test_invalid_utf8(void) {
    static const char *const bad[] = {"a \xff b", "\xc0\xaf", "\xed\xa0\x80", "cat \xe5\xad"};
    for (size_t i = 0; i < SDW_ARRAY_LEN(bad); i++) {
        sdw_error err = {0};
        int32_t *ids = (int32_t *)0x1, w[16];
        int n = -7;
        ASSERT_STATUS(sdw_t5_tokenize(g_tok, bad[i], &ids, &n, &err), SDW_E_INVALID_ARG);
        ASSERT_TRUE(ids == (int32_t *)0x1 && n == -7);
        ASSERT_STR_CONTAINS(err.msg, "UTF-8");
        ASSERT_STATUS(sdw_t5_tokenize_window(g_tok, bad[i], 16, w, NULL, &err), SDW_E_INVALID_ARG);
    }
}

/* The window stops encoding early; its ids must still be those of the whole text. Long prompts
 * of varied text (spaces, runs of spaces, unknown characters, special tokens) are compared with
 * the full tokenization cut by the rules. */
static void test_window_equals_full_on_long_text(void) {
    static const char *const words[] = {"photo",
                                        "cat",
                                        "a",
                                        "of",
                                        "landscape",
                                        "highly",
                                        "detailed,",
                                        "4k",
                                        "\xe5\xad\x97\xe5\xad\x97",
                                        "  ",
                                        "<extra_id_3>",
                                        "\xef\xbc\xa1",
                                        "caf\xc3\xa9",
                                        "\t"};
    static const int lens[] = {2, 77, 256, 512};
    unsigned r = 7;
    for (int round = 0; round < 12; round++) {
        size_t n_words = round % 3 == 0 ? 200 : round % 3 == 1 ? 3000 : 20000;
        char *text = malloc(n_words * 16 + 1);
        size_t k = 0;
        for (size_t i = 0; i < n_words; i++) {
            r = r * 1103515245u + 12345u;
            const char *w = words[(r >> 16) % SDW_ARRAY_LEN(words)];
            size_t l = strlen(w);
            memcpy(text + k, w, l);
            k += l;
            if ((r >> 8) & 1) text[k++] = ' ';
        }
        text[k] = 0;
        sdw_error err = {0};
        int32_t *all = NULL;
        int n = 0;
        ASSERT_OK(sdw_t5_tokenize(g_tok, text, &all, &n, &err), &err);
        int L = lens[round % 4];
        int32_t w[512];
        bool cut = false;
        ASSERT_OK(sdw_t5_tokenize_window(g_tok, text, L, w, &cut, &err), &err);
        int n_tok = all[n - 1] == EOS ? n - 1 : n; /* tokens before the appended EOS */
        int keep = SDW_MIN(n_tok, L - 1);
        ASSERT_EQ_INT(cut, n_tok > L - 1);
        for (int i = 0; i < keep; i++)
            ASSERT_EQ_INT(w[i], all[i]);
        if (keep == 0 || all[keep - 1] != EOS) ASSERT_EQ_INT(w[keep++], EOS);
        for (int i = keep; i < L; i++)
            ASSERT_EQ_INT(w[i], PAD);
        free(all);
        free(text);
    }
}

static void test_bad_files(void) {
    sdw_t5_tokenizer *t = (sdw_t5_tokenizer *)0x1;
    sdw_error err = {0};
    /* Missing path. */
    ASSERT_STATUS(sdw_t5_tokenizer_load("/nonexistent/tokenizer_2", &t, &err), SDW_E_IO);
    ASSERT_STR_CONTAINS(err.msg, "/nonexistent/tokenizer_2");
    ASSERT_TRUE(t == (sdw_t5_tokenizer *)0x1);
    /* A folder without spiece.model (a CLIP tokenizer folder). */
    const char *clip = sdw_test_path("models/tiny-flux/tokenizer");
    ASSERT_STATUS(sdw_t5_tokenizer_load(clip, &t, &err), SDW_E_IO);
    ASSERT_STR_CONTAINS(err.msg, "spiece.model");
    ASSERT_STR_CONTAINS(err.msg, clip);
    /* A corrupt spiece.model, and an empty one. */
    char dir[600], model[700];
    ASSERT_TRUE(make_model_dir(dir, sizeof dir, "t5_bad"));
    snprintf(model, sizeof model, "%s/spiece.model", dir);
    unsigned char junk[1000];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)(i * 151u + 7u);
    ASSERT_TRUE(put_file(dir, "spiece.model", junk, sizeof junk));
    ASSERT_STATUS(sdw_t5_tokenizer_load(dir, &t, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, model);
    ASSERT_STR_CONTAINS(err.msg, "not a sentencepiece model");
    ASSERT_TRUE(put_file(dir, "spiece.model", "", 0));
    ASSERT_STATUS(sdw_t5_tokenizer_load(model, &t, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, model);
    ASSERT_TRUE(t == (sdw_t5_tokenizer *)0x1);
}

/* Configurations transformers refuses, or that add tokens beyond the vocabulary. */
static void test_bad_configs(void) {
    static const struct {
        const char *file, *json;
        sdw_status want;
        const char *says;
    } k_cases[] = {
        {"tokenizer_config.json",
         "{\"extra_ids\": 100, \"additional_special_tokens\": [\"<extra_id_0>\"]}", SDW_E_FORMAT,
         "extra_ids"},
        {"tokenizer_config.json", "{\"extra_ids\": 0, \"additional_special_tokens\": [\"<foo>\"]}",
         SDW_E_UNSUPPORTED, "<foo>"},
        {"tokenizer_config.json", "{\"eos_token\": 5}", SDW_E_FORMAT, "eos_token"},
        {"tokenizer_config.json", "{\"eos_token\": {\"content\": \"</s>\"}}", SDW_E_FORMAT,
         "AddedToken"},
        {"tokenizer_config.json", "{\"sp_model_kwargs\": {\"enable_sampling\": true}}",
         SDW_E_UNSUPPORTED, "sp_model_kwargs"},
        {"tokenizer_config.json", "{\"pad_token\": null}", SDW_E_FORMAT, "pad_token"},
        {"tokenizer_config.json", "{\"eos_token\": \"</s>\",", SDW_E_FORMAT, "invalid JSON"},
        {"special_tokens_map.json", "{\"additional_special_tokens\": [\"<extra_id_x>\"]}",
         SDW_E_FORMAT, "<extra_id_x>"},
        {"added_tokens.json", "{\"<new>\": 1100}", SDW_E_UNSUPPORTED, "added_tokens.json"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(k_cases); i++) {
        char dir[600], name[32]; /* every message names the file, or the folder */
        snprintf(name, sizeof name, "t5_cfg%zu", i);
        ASSERT_TRUE(make_model_dir(dir, sizeof dir, name));
        ASSERT_TRUE(put_file(dir, k_cases[i].file, k_cases[i].json, strlen(k_cases[i].json)));
        sdw_t5_tokenizer *t = NULL;
        sdw_error err = {0};
        sdw_status st = sdw_t5_tokenizer_load(dir, &t, &err);
        if (st != k_cases[i].want || !strstr(err.msg, k_cases[i].says) || !strstr(err.msg, dir)) {
            fprintf(stderr, "  %s %s: got %d \"%s\"\n", k_cases[i].file, k_cases[i].json, (int)st,
                    err.msg);
            sdw_t5_tokenizer_destroy(t);
            ASSERT_TRUE(!"wrong error");
        }
    }
}

int main(void) {
    struct stat st;
    if (stat(sdw_test_path("models/tiny-flux/tokenizer_2/spiece.model"), &st) != 0) {
        fprintf(stderr, "fixtures missing: %s\n", flux_dir());
        return 1; /* the fixtures are part of the test setup: missing is a failure */
    }
    sdw_error err = {0};
    if (sdw_t5_tokenizer_load(flux_dir(), &g_tok, &err) != SDW_OK) {
        fprintf(stderr, "cannot load %s: %s\n", flux_dir(), err.msg);
        return 1;
    }
    RUN(test_goldens);
    RUN(test_all_goldens);
    RUN(test_ids_and_accessors);
    RUN(test_truncation_and_padding);
    RUN(test_special_token_literals);
    RUN(test_added_token_flags);
    RUN(test_unknown_characters);
    RUN(test_empty_and_blank);
    RUN(test_invalid_utf8);
    RUN(test_window_equals_full_on_long_text);
    RUN(test_bad_files);
    RUN(test_bad_configs);
    sdw_t5_tokenizer_destroy(g_tok);
    return sdw_test_finish();
}
