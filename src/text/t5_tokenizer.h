/* text/t5_tokenizer.h — the T5 tokenizer (FLUX.1's tokenizer_2, Stable Diffusion 3's
 * tokenizer_3): transformers' slow T5Tokenizer over a sentencepiece unigram model.
 *
 *   sdw_t5_tokenizer *tok;
 *   if (sdw_t5_tokenizer_load("model/tokenizer_2", &tok, &err) != SDW_OK) return err.code;
 *   int32_t ids[512]; bool cut;
 *   sdw_t5_tokenize_window(tok, "a photo of a cat", 512, ids, &cut, &err);
 *   sdw_t5_tokenizer_destroy(tok);
 *
 * Produces exactly the input_ids of transformers 4.30.2's T5Tokenizer (the slow one; its
 * behaviour is what later versions call legacy=True, and 4.30.2 ignores a "legacy" key) for
 * valid UTF-8 text, with sentencepiece itself (libsentencepiece) doing the encoding:
 *   1. the text is split at the special tokens: eos, unk and pad ("</s>", "<unk>", "<pad>"),
 *      every additional special token (the 100 sentinels "<extra_id_0>".."<extra_id_99>"), and
 *      bos/sep/cls/mask where a config names them; matched case-sensitively in the raw text
 *      by transformers' Trie.split (longest match first, with its quirks);
 *   2. around each special token the neighbouring text loses its whitespace (Python's
 *      str.isspace) on the side facing the token: both sides for a token configured as a plain
 *      string; only the sides its lstrip/rstrip flags name for one configured as an object
 *      ({"content": ..., "lstrip": ..., "rstrip": ...}, an AddedToken); text left empty is
 *      dropped;
 *   3. each remaining piece of text is encoded by sentencepiece (encode(text, out_type=str):
 *      its normalizer, e.g. NFKC, runs of spaces, the "▁" prefix, then Viterbi);
 *   4. every token becomes an id: "<extra_id_N>" -> vocab - 1 - N (vocab = model pieces +
 *      extra_ids), anything else sentencepiece's PieceToId (unknown text -> unk, 2 for T5);
 *   5. EOS is appended unless the ids already end with it (T5's _add_eos_if_not_present).
 * So a prompt that types "</s>" or "<extra_id_0>" gets those ids, and the empty prompt is [EOS].
 * Input that is not valid UTF-8 is rejected with SDW_E_INVALID_ARG (a Python str cannot hold it).
 * Tokenizers that add tokens beyond the model's vocabulary (added_tokens.json, or special
 * tokens sentencepiece does not know) are refused at load with SDW_E_UNSUPPORTED.
 *
 * Thread safety: a loaded tokenizer is immutable; any number of threads may tokenize with it
 * concurrently. Load and destroy are not concurrent with use.
 */
#ifndef SDW_TEXT_T5_TOKENIZER_H
#define SDW_TEXT_T5_TOKENIZER_H

#include "sdw/status.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct sdw_t5_tokenizer sdw_t5_tokenizer;

/* path: a spiece.model file (with T5Tokenizer's defaults: eos "</s>", unk "<unk>", pad
 * "<pad>", 100 extra ids), or a folder holding spiece.model (a diffusers tokenizer_2/ or
 * tokenizer_3/), whose optional tokenizer_config.json (eos_token, unk_token, pad_token,
 * extra_ids, additional_special_tokens, sp_model_kwargs, bos/sep/cls/mask_token) and
 * special_tokens_map.json (overriding the former, as from_pretrained does) are read as
 * transformers 4.30.2 reads them.
 * On success *out is a new tokenizer (free with sdw_t5_tokenizer_destroy). On failure *out is
 * untouched and the error names the file: SDW_E_IO (missing or unreadable), SDW_E_FORMAT (not
 * a sentencepiece model, bad JSON, or a config transformers would reject), SDW_E_UNSUPPORTED
 * (added tokens, sp_model_kwargs). */
sdw_status sdw_t5_tokenizer_load(const char *path, sdw_t5_tokenizer **out, sdw_error *err);

/* NULL is allowed. */
void sdw_t5_tokenizer_destroy(sdw_t5_tokenizer *t);

/* Encodes NUL-terminated UTF-8 text to every id T5Tokenizer(text).input_ids gives: the
 * tokens, then EOS (steps 1-5 above; never truncated). On success *ids is a new array (free())
 * of *n ids (n >= 1). On failure (SDW_E_INVALID_ARG: invalid UTF-8, with the byte offset) *ids
 * and *n are untouched.
 * Cost: linear in the text (sentencepiece encodes 2-3 MB/s here); sdw_t5_tokenize_window
 * stops early. */
sdw_status sdw_t5_tokenize(const sdw_t5_tokenizer *t, const char *text, int32_t **ids, int *n,
                           sdw_error *err);

/* As the pipelines call the tokenizer (padding="max_length", max_length=max_len,
 * truncation=True): ids[0..max_len) = the first max_len-1 tokens, then EOS (not repeated when
 * the kept tokens already end with it), then the pad id up to max_len. *truncated (may be NULL)
 * says whether tokens were cut. max_len must be >= 2 (asserted). On failure ids and
 * *truncated are untouched.
 * Cost: only as much of the text as the window needs is encoded (a few KB for 512 tokens of
 * ordinary text: an 8 MB prompt takes ~50 ms here, mostly the scan for special tokens), and the
 * result is still exactly the reference's (the proof is at t5_tokenizer.c's encode_prefix).
 * Text with no place to cut within the window, i.e. one giant run of characters the vocabulary
 * lacks (megabytes of Chinese for T5), is encoded whole: ~0.4 s per MB. Front ends should bound
 * prompt length anyway. */
sdw_status sdw_t5_tokenize_window(const sdw_t5_tokenizer *t, const char *text, int max_len,
                                  int32_t *ids, bool *truncated, sdw_error *err);

/* The pad token's id ("<pad>" = 0 for T5): what the window pads with. */
int32_t sdw_t5_tokenizer_pad(const sdw_t5_tokenizer *t);
/* The EOS token's id ("</s>" = 1 for T5). */
int32_t sdw_t5_tokenizer_eos(const sdw_t5_tokenizer *t);
/* T5Tokenizer.vocab_size: model pieces + extra_ids (32100 for T5 v1.1). Every id the tokenizer
 * produces is below it: check it against the text encoder's embedding rows (32128 for T5 v1.1,
 * padded). */
int sdw_t5_tokenizer_vocab(const sdw_t5_tokenizer *t);

#endif
