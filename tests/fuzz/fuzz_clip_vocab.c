/* libFuzzer target: loading a CLIP tokenizer folder (text/clip_tokenizer.h) — vocab.json through
 * jansson, merges.txt, special_tokens_map.json — from arbitrary bytes, then tokenizing and
 * detokenizing with what loaded. Every input must either load or fail with a message; never
 * crash, leak or read out of bounds (built with ASan + UBSan).
 *
 * An input is the folder's files joined by form feeds: vocab.json \f merges.txt [\f
 * special_tokens_map.json]. A form feed never occurs in a well-formed vocab.json (nor, as a
 * separator, in merges.txt), so every real folder has a spelling. The loader reads a folder, so
 * each input is written to one temporary folder (removed at exit).
 *
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DSDW_FUZZ=ON && cmake --build build-fuzz
 *   build-fuzz/fuzz_clip_vocab -max_len=8192 build-fuzz/fuzz_clip_corpus   # runs until stopped
 */
#include "text/clip_tokenizer.h"

#include "core/common.h"

#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[256];
static const char *const k_files[] = {"vocab.json", "merges.txt", "special_tokens_map.json"};

static const char *file_path(int k) {
    static char path[sizeof g_dir + 32];
    snprintf(path, sizeof path, "%s/%s", g_dir, k_files[k]);
    return path;
}

static void remove_folder(void) {
    for (int k = 0; k < 3; k++)
        unlink(file_path(k));
    rmdir(g_dir);
}

static void make_folder(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/sdw_fuzz_clip_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) SDW_ABORT("fuzz_clip_vocab: cannot create a folder under %s", g_dir);
    atexit(remove_folder);
}

/* Writes file k with data[0..n), or removes it when absent (n == SIZE_MAX). */
static void put(int k, const uint8_t *data, size_t n) {
    const char *path = file_path(k);
    if (n == SIZE_MAX) {
        unlink(path);
        return;
    }
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0)
        SDW_ABORT("fuzz_clip_vocab: cannot write %s", path);
}

/* Tokenizes text (NUL-terminated) and checks the ids frame it and decode back to a string. */
static void tokenize(const sdw_clip_tokenizer *t, const char *text) {
    int32_t *ids = NULL;
    int n = 0;
    sdw_error err = {0};
    if (sdw_clip_tokenize(t, text, &ids, &n, &err) != SDW_OK) {
        SDW_ASSERT(ids == NULL && err.code == SDW_E_INVALID_ARG && err.msg[0] != 0);
        return;
    }
    SDW_ASSERT(n >= 2 && ids[0] == sdw_clip_tokenizer_bos(t) &&
               ids[n - 1] == sdw_clip_tokenizer_eos(t));
    char *back = sdw_clip_detokenize(t, ids, n);
    SDW_ASSERT(back != NULL);
    free(back);
    int32_t window[8];
    bool truncated;
    SDW_ASSERT(sdw_clip_tokenize_window(t, text, 8, sdw_clip_tokenizer_pad(t), window, &truncated,
                                        NULL) == SDW_OK);
    SDW_ASSERT(window[0] == ids[0] && truncated == (n > 8));
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) make_folder();
    /* Split at the first two form feeds: vocab.json, merges.txt, special_tokens_map.json. */
    const uint8_t *part[3] = {data, NULL, NULL};
    size_t len[3] = {size, SIZE_MAX, SIZE_MAX};
    for (int k = 1; k < 3; k++) {
        const uint8_t *ff = len[k - 1] ? memchr(part[k - 1], '\f', len[k - 1]) : NULL;
        if (!ff) break;
        part[k] = ff + 1;
        len[k] = len[k - 1] - (size_t)(part[k] - part[k - 1]);
        len[k - 1] = (size_t)(ff - part[k - 1]);
    }
    if (len[1] == SIZE_MAX) len[1] = 0; /* merges.txt is required: an empty one has no merges */
    for (int k = 0; k < 3; k++)
        put(k, part[k], len[k]);

    sdw_clip_tokenizer *t = NULL;
    sdw_error err = {0};
    if (sdw_clip_tokenizer_load(g_dir, &t, &err) != SDW_OK) {
        SDW_ASSERT(t == NULL && err.msg[0] != 0);
        SDW_ASSERT(err.code == SDW_E_FORMAT || err.code == SDW_E_IO);
        return 0;
    }
    SDW_ASSERT(sdw_clip_tokenizer_vocab_size(t) >= 1);
    tokenize(t, "a photo of an astronaut riding a horse, <|startoftext|>'ll ÀΣ\u0345 2024!!");
    /* The merges' own text (as a C string: up to its first NUL) meets the merges that loaded. */
    if (len[1] > 0 && len[1] < 4096) {
        char *text = sdw_xmalloc(len[1] + 1);
        memcpy(text, part[1], len[1]);
        text[len[1]] = 0;
        tokenize(t, text);
        free(text);
    }
    sdw_clip_tokenizer_destroy(t);
    return 0;
}
