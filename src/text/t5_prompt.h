/* text/t5_prompt.h — a T5 encoder as the flow-matching pipelines drive it (FluxPipeline's
 * text_encoder_2, StableDiffusion3Pipeline's text_encoder_3): its tokenizer, the window it pads
 * and truncates the prompt to (max_sequence_length), the last hidden state. One implementation
 * for every family.
 *
 *   sdw_t5_prompt t5 = {0};   // .tokenizer, .w, .enc, .tap filled by the loader
 *   float *ctx[1] = {rows};
 *   sdw_t5_prompt_encode(&t5, 1, prompts, which, 512, ctx, D, &cut, tap, user, &err);
 *   sdw_t5_prompt_deinit(&t5);
 *
 * Thread safety: encode is reentrant (the encoder is read-only). */
#ifndef SDW_TEXT_T5_PROMPT_H
#define SDW_TEXT_T5_PROMPT_H

#include "text/clip_prompt.h" /* sdw_text_tap_fn */
#include "text/t5_text.h"
#include "text/t5_tokenizer.h"

typedef struct sdw_t5_prompt {
    sdw_t5_tokenizer *tokenizer; /* owned */
    sdw_weights *w;              /* owned; its file belongs to the model */
    sdw_t5_text *enc;            /* owned */
    char tap[8];                 /* the reference's name prefix: "te2" (FLUX), "te3" (SD3) */
} sdw_t5_prompt;

void sdw_t5_prompt_deinit(sdw_t5_prompt *p); /* NULL ok; zeroes it */
int sdw_t5_prompt_width(const sdw_t5_prompt *p); /* d_model */

/* Encodes n prompts (NULL = "") as one batch of L tokens each (padding="max_length",
 * truncation=True, as the pipelines tokenize; no attention mask, as they encode): prompt k's
 * last hidden state goes to L rows of ctx[k], `ld` floats apart. which[k] names the prompt in
 * warnings and taps (<tap>.<which>.input_ids, <tap>.<which>.last_hidden_state). *truncated is
 * set when a prompt was cut. tap may be NULL. */
sdw_status sdw_t5_prompt_encode(const sdw_t5_prompt *p, int n, const char *const *prompts,
                                const char *const *which, int L, float *const *ctx, int ld,
                                bool *truncated, sdw_text_tap_fn tap, void *tap_user,
                                sdw_error *err);

#endif
