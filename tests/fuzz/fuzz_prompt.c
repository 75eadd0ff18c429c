/* libFuzzer target: AUTOMATIC1111's prompt syntax (text/prompt_parser.h) and the windows a CLIP
 * encoder lays a prompt out in (text/clip_prompt.h: sdw_clip_prompt_windows, both readings),
 * from arbitrary bytes, with the built-in byte-level tokenizer; then the emphasis rescale on the
 * weights found. Every input must parse or fail with a message (a weight that is not a number,
 * text that is not UTF-8); never crash, leak or read out of bounds (ASan + UBSan). Checked: the
 * pieces are non-empty, a BREAK has weight 1; every window is 77 ids starting with BOS and
 * holding an EOS, at most SDW_CLIP_MAX_CHUNKS of them, a single one in the plain reading.
 *
 * An input is the prompt; its first byte's low bit picks the reading (1 = A1111's).
 *
 *   build-fuzz/fuzz_prompt -max_len=4096 build-fuzz/fuzz_seeds/prompt   # runs until stopped
 */
#include "text/clip_prompt.h"
#include "text/prompt_parser.h"

#include "core/common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sdw_clip_prompt g_te; /* the tokenizer alone: windows need no encoder */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_te.tokenizer) {
        g_te.tokenizer = sdw_clip_tokenizer_create_byte_level();
        g_te.pad_id = sdw_clip_tokenizer_eos(g_te.tokenizer);
    }
    if (size == 0) return 0;
    const bool syntax = data[0] & 1;
    char *text = sdw_xmalloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;

    sdw_prompt_pieces pp;
    sdw_error err = {0};
    if (sdw_prompt_parse(text, &pp, &err) == SDW_OK) {
        SDW_ASSERT(pp.n >= 1);
        for (int i = 0; i < pp.n; i++)
            SDW_ASSERT(pp.v[i].text && (!pp.v[i].is_break || pp.v[i].weight == 1.0));
        free(sdw_prompt_pieces_text(&pp));
        sdw_prompt_pieces_free(&pp);
    } else {
        SDW_ASSERT(err.msg[0]);
    }

    const sdw_clip_prompt_opts o = {.syntax = syntax};
    int32_t *ids = NULL;
    float *mult = NULL;
    int n = 0;
    bool cut = false;
    err.msg[0] = 0;
    if (sdw_clip_prompt_windows(&g_te, &o, text, &ids, &mult, &n, &cut, &err) == SDW_OK) {
        const int32_t bos = sdw_clip_tokenizer_bos(g_te.tokenizer);
        const int32_t eos = sdw_clip_tokenizer_eos(g_te.tokenizer);
        SDW_ASSERT(n >= 1 && n <= (syntax ? SDW_CLIP_MAX_CHUNKS : 1));
        for (int w = 0; w < n; w++) {
            const int32_t *win = ids + (size_t)w * SDW_CLIP_WINDOW;
            bool has_eos = false;
            SDW_ASSERT(win[0] == bos);
            for (int i = 0; i < SDW_CLIP_WINDOW; i++) {
                SDW_ASSERT(win[i] >= 0 && win[i] < sdw_clip_tokenizer_vocab_size(g_te.tokenizer));
                has_eos |= win[i] == eos;
            }
            SDW_ASSERT(has_eos);
            /* the rescale: finite weights and a state of ones either apply or refuse */
            float z[SDW_CLIP_WINDOW * 2];
            for (int i = 0; i < SDW_CLIP_WINDOW * 2; i++) z[i] = 1.0f + 0.001f * (float)i;
            if (sdw_emphasis_apply(z, SDW_CLIP_WINDOW, 2, mult + (size_t)w * SDW_CLIP_WINDOW,
                                   &err) == SDW_OK)
                for (int i = 0; i < SDW_CLIP_WINDOW * 2; i++) SDW_ASSERT(isfinite(z[i]));
        }
        free(ids);
        free(mult);
    } else {
        SDW_ASSERT(err.msg[0]);
    }
    free(text);
    return 0;
}
