/* text/t5_syntax.h — a T5 encoder reading prompts with AUTOMATIC1111's syntax, as Forge's T5
 * engine does for FLUX (backend/text_processing/t5_engine.py): emphasis on T5 too, where the
 * weights are the only ones FLUX sees (its CLIP contributes a pooled vector, unweighted).
 *
 *   float *ctx[1] = {rows};
 *   sdw_t5_prompt_encode_syntax(&t5, 1, prompts, which, 512, ctx, D, &cut, tap, user, &err);
 *
 * The prompt is parsed (text/prompt_parser.h); each piece is tokenized on its own
 * (T5Tokenizer without its EOS, so "a (red:1.2) cat" is "▁a", "▁red", "▁cat"), the tokens
 * carry their piece's weight, and they fill the pipeline's window (max_sequence_length: the
 * first L-1 tokens, EOS, then the pad id, weight 1) — one window, as diffusers' pipelines read
 * T5, where Forge grows the sequence in chunks of 256 padded with EOS; a BREAK only separates
 * the pieces. The window's last hidden state z gets the "Original" emphasis (z·w rescaled to
 * the mean of z, sdw_emphasis_apply), as Forge applies it to T5's output. A prompt without
 * markup gives exactly sdw_t5_prompt_encode's result.
 *
 * Thread safety: reentrant (the encoder is read-only).
 */
#ifndef SDW_TEXT_T5_SYNTAX_H
#define SDW_TEXT_T5_SYNTAX_H

#include "text/t5_prompt.h"

/* As sdw_t5_prompt_encode (same arguments, taps and truncation warning), reading the prompts
 * as above. On failure (SDW_E_INVALID_ARG: not UTF-8, a weight that is not a number, weights
 * that make the state non-finite) ctx is untouched. */
sdw_status sdw_t5_prompt_encode_syntax(const sdw_t5_prompt *p, int n, const char *const *prompts,
                                       const char *const *which, int L, float *const *ctx, int ld,
                                       bool *truncated, sdw_text_tap_fn tap, void *tap_user,
                                       sdw_error *err);

#endif
