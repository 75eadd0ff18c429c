/* libFuzzer target: loading a T5 tokenizer's spiece.model (text/t5_tokenizer.h: the
 * sentencepiece model through libsentencepiece, then T5Tokenizer's own checks) from arbitrary
 * bytes, then tokenizing with what loaded (whole text and the pipelines' window). Every input
 * must load or fail with a message; never crash, leak or read out of bounds (ASan + UBSan on
 * our code; libsentencepiece itself is not instrumented, its crashes still show). */
#include "fuzz_tmp.h"
#include "text/t5_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void tokenize(const sdw_t5_tokenizer *t, const char *text) {
    int32_t *ids = NULL, window[16];
    int n = 0;
    bool truncated = false;
    sdw_error err = {0};
    if (sdw_t5_tokenize(t, text, &ids, &n, &err) == SDW_OK) {
        SDW_ASSERT(n >= 1);
        for (int i = 0; i < n; i++) SDW_ASSERT(ids[i] >= 0 && ids[i] < sdw_t5_tokenizer_vocab(t));
        free(ids);
    } else {
        SDW_ASSERT(err.msg[0] != 0);
    }
    if (sdw_t5_tokenize_window(t, text, 16, window, &truncated, &err) == SDW_OK)
        SDW_ASSERT(window[0] >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_dir("spiece");
    const char *path = fuzz_put(0, "spiece.model", data, size);
    sdw_t5_tokenizer *t = NULL;
    sdw_error err = {0};
    if (sdw_t5_tokenizer_load(path, &t, &err) != SDW_OK) {
        SDW_ASSERT(t == NULL && err.msg[0] != 0);
        return 0;
    }
    SDW_ASSERT(sdw_t5_tokenizer_vocab(t) >= 1);
    tokenize(t, "a photo of an astronaut riding a horse </s> <extra_id_3> ÀΣ 2024!! 日本");
    tokenize(t, "");
    sdw_t5_tokenizer_destroy(t);
    return 0;
}
