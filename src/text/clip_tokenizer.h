/* text/clip_tokenizer.h — the CLIP byte-level BPE tokenizer (SD 1.x/2.x/XL, FLUX's CLIP-L).
 *
 *   sdw_clip_tokenizer *tok;
 *   if (sdw_clip_tokenizer_load("model/tokenizer", &tok, &err) != SDW_OK) return err.code;
 *   int32_t ids[77]; bool cut;
 *   sdw_clip_tokenize_window(tok, "a photo of a cat", 77, sdw_clip_tokenizer_pad(tok), ids, &cut, &err);
 *   sdw_clip_tokenizer_destroy(tok);
 *
 * Produces exactly the ids of transformers' CLIPTokenizer (loaded with from_pretrained, with
 * ftfy installed) for valid UTF-8 text:
 *   1. the text is split at the special tokens (bos/eos/unk/pad: "<|startoftext|>",
 *      "<|endoftext|>", and whatever special_tokens_map.json names), matched case-sensitively
 *      in the raw text; each becomes its vocabulary id, each piece in between goes through 2-5.
 *      So with SD2's and SDXL's second tokenizer, whose pad token is "!", every "!" in a prompt
 *      becomes id 0, exactly as in diffusers (see diffusers issue #4153);
 *   2. ftfy.fix_text (text/text_fix.h: HTML entities, width, ligatures, quotes, NFC, ...; not
 *      its mojibake repair);
 *   3. whitespace_clean: runs of Unicode White_Space -> one space, stripped at both ends;
 *   4. Python's str.lower() (full mapping: U+0130 -> "i\u0307", final sigma);
 *   5. the pre-tokenizer regex (case-insensitive, as in the reference)
 *        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *      (IGNORECASE quirks kept: U+017F LONG S matches the 's' of "'s" and of the literals, and
 *      U+0345 matches no alternative at all, so it is dropped like whitespace);
 *      then each match's UTF-8 bytes mapped through bytes_to_unicode, "</w>" appended to the last
 *      symbol, and BPE merges applied lowest rank first; unknown results give the unk id
 *      (the id of "<|endoftext|>", CLIP's unk token).
 * Input that is not valid UTF-8 is rejected with SDW_E_INVALID_ARG (a Python str cannot hold
 * it, so the reference has no answer to match). Letter/number classes come from utf8proc; they
 * can differ from Python's for code points assigned in newer Unicode versions.
 * Cost: like the reference, BPE is quadratic in the length of one word (a 20,000-letter word
 * takes ~0.5 s); front ends should bound prompt length.
 *
 * Thread safety: a loaded tokenizer is immutable; any number of threads may tokenize with it
 * concurrently. Load and destroy are not concurrent with use.
 */
#ifndef SDW_TEXT_CLIP_TOKENIZER_H
#define SDW_TEXT_CLIP_TOKENIZER_H

#include "sdw/status.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct sdw_clip_tokenizer sdw_clip_tokenizer;

/* Loads dir/vocab.json (token -> id) and dir/merges.txt (first line is a header and is skipped,
 * then one "left right" pair per line, rank = line order; at most the first 48894 merges are
 * used, as CLIP does), and the optional dir/special_tokens_map.json (bos/eos/unk/pad token,
 * each a string or {"content": string}; defaults "<|startoftext|>" and "<|endoftext|>" for
 * the rest). Every special token must be in vocab.json.
 * On success *out is a new tokenizer (free with sdw_clip_tokenizer_destroy). On failure returns
 * SDW_E_IO (missing/unreadable file) or SDW_E_FORMAT (bad content), with a message naming the
 * file (and line for merges.txt); *out is untouched. */
sdw_status sdw_clip_tokenizer_load(const char *dir, sdw_clip_tokenizer **out, sdw_error *err);
/* As sdw_clip_tokenizer_load, with the pad token given instead of read from the folder
 * (pad_token NULL = the folder's). For single-file checkpoints, whose text encoders' tokenizers
 * are known facts while the folder supplied only has the shared vocabulary: the OpenCLIP
 * encoders of SD 2.x and SDXL use "!" (id 0; like any special token it is then also matched in
 * prompts, as diffusers does), OpenAI's CLIP "<|endoftext|>". */
sdw_status sdw_clip_tokenizer_load_ex(const char *dir, const char *pad_token,
                                      sdw_clip_tokenizer **out, sdw_error *err);

/* A byte-level demo tokenizer with no merges: every pre-token becomes its bytes. Ids follow
 * CLIP's own first 512 entries: 0..255 = the 256 byte symbols in bytes_to_unicode order (bytes
 * '!'..'~', 0xA1..0xAC, 0xAE..0xFF, then the remaining 68 bytes in increasing order), 256..511 =
 * the same symbols + "</w>" (last byte of a word), 512 = "<|startoftext|>" (BOS),
 * 513 = "<|endoftext|>" (EOS, also unk and pad). Vocabulary size 514. Never fails (aborts on
 * OOM). */
sdw_clip_tokenizer *sdw_clip_tokenizer_create_byte_level(void);

/* Destroys t; NULL is allowed. */
void sdw_clip_tokenizer_destroy(sdw_clip_tokenizer *t);

/* Number of entries in the vocabulary (49408 for CLIP). */
int sdw_clip_tokenizer_vocab_size(const sdw_clip_tokenizer *t);
/* Ids of the BOS token ("<|startoftext|>", 49406 for CLIP), the EOS token ("<|endoftext|>",
 * 49407) and the pad token the folder names (EOS by default; "!" = 0 for SD2 and SDXL's second
 * tokenizer): pass sdw_clip_tokenizer_pad(t) to sdw_clip_tokenize_window to pad as diffusers. */
int32_t sdw_clip_tokenizer_bos(const sdw_clip_tokenizer *t);
int32_t sdw_clip_tokenizer_eos(const sdw_clip_tokenizer *t);
int32_t sdw_clip_tokenizer_pad(const sdw_clip_tokenizer *t);

/* Encodes NUL-terminated UTF-8 text to ids: BOS, the tokens, EOS (never truncated). On success
 * *ids is a new array (free()) of *n ids (n >= 2). On failure (SDW_E_INVALID_ARG: invalid
 * UTF-8, with the byte offset) *ids and *n are untouched. */
sdw_status sdw_clip_tokenize(const sdw_clip_tokenizer *t, const char *utf8, int32_t **ids, int *n,
                             sdw_error *err);

/* Encodes text as AUTOMATIC1111's prompt chunker tokenizes each piece of a prompt
 * (tokenizer(texts, add_special_tokens=False); open_clip's own tokenizer for the OpenCLIP
 * encoders): no BOS/EOS added, and only the BOS and EOS literals are special tokens — a pad
 * token such as SD 2.x's and SDXL's "!" is ordinary text here, so both of SDXL's encoders see
 * the same ids. On success *ids is a new array (free(); allocated even when *n is 0). On
 * failure (SDW_E_INVALID_ARG: invalid UTF-8) *ids and *n are untouched. */
sdw_status sdw_clip_tokenize_text(const sdw_clip_tokenizer *t, const char *utf8, int32_t **ids,
                                  int *n, sdw_error *err);

/* Fills out[0..max_len) as the pipelines do (padding="max_length", truncation=True): BOS, the
 * first max_len-2 tokens, EOS, then pad_id up to max_len (CLIP pads with EOS; SDXL's second
 * tokenizer and SD2 pad with 0). *truncated (may be NULL) says whether tokens were dropped.
 * max_len must be >= 2 (asserted). On failure out and *truncated are untouched. */
sdw_status sdw_clip_tokenize_window(const sdw_clip_tokenizer *t, const char *utf8, int max_len,
                                    int32_t pad_id, int32_t *out, bool *truncated, sdw_error *err);

/* Decodes ids back to text like CLIPTokenizer.decode(ids, skip_special_tokens=True,
 * clean_up_tokenization_spaces=False): special-token ids skipped, token strings joined, symbols
 * mapped back to bytes, "</w>" -> " ", ends stripped; invalid UTF-8 (a cut multi-byte
 * character) becomes U+FFFD. Ids outside the vocabulary are skipped.
 * Returns a new NUL-terminated string (free()). */
char *sdw_clip_detokenize(const sdw_clip_tokenizer *t, const int32_t *ids, int n);

#endif
