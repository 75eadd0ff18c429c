/* text/clip_prompt.h — a CLIP text encoder as the diffusion pipelines drive it: its tokenizer,
 * its padding token, which hidden state it contributes and whether its pooled output is
 * projected; and per request the prompt syntax, clip skip and textual-inversion embeddings.
 * One implementation for every family (Stable Diffusion 1.x/2.x/XL, FLUX's CLIP-L, SD3's
 * CLIP-L and CLIP-G).
 *
 *   sdw_clip_prompt te = {0};
 *   ...te.tokenizer, te.pad_id, te.w, te.enc, te.params, te.tap filled by the loader...
 *   const char *prompts[2] = {"a (red:1.2) cat", ""}, *which[2] = {"cond", "uncond"};
 *   sdw_clip_prompt_opts o = {.syntax = true, .clip_skip = 2};
 *   sdw_clip_encoding enc[2] = {0};
 *   sdw_clip_prompt_encode_chunks(&te, &o, 2, prompts, which, true, false, enc, &cut, tap,
 *                                 user, &err);   // enc[k].hidden [enc[k].n_chunks * 77, W]
 *   sdw_clip_encoding_deinit(&enc[0]); sdw_clip_encoding_deinit(&enc[1]);
 *   sdw_clip_prompt_deinit(&te);
 *
 * Two ways to read a prompt:
 *   - plain (opts NULL or syntax false): as diffusers' pipelines tokenize it — one 77-token
 *     window (BOS, the first 75 tokens, EOS, pad_id), longer prompts truncated with a warning;
 *   - AUTOMATIC1111's (syntax true; modules/sd_hijack_clip.py,
 *     FrozenCLIPEmbedderWithCustomWordsBase): the prompt parsed for emphasis and BREAK
 *     (text/prompt_parser.h), each piece tokenized on its own (sdw_clip_tokenize_text), the
 *     tokens laid out in chunks of 75 — a BREAK starts a new chunk; when a chunk is full and a
 *     comma sits among its last 20 tokens, the tokens after that comma move to the next chunk
 *     (A1111's default "comma_padding_backtrack" 20; an embedding that does not fit in what is
 *     left of a chunk starts the next one) — each chunk [BOS, 75 tokens padded with EOS, EOS]
 *     with everything after its first EOS replaced by pad_id, encoded as its own 77-token
 *     window; each window's hidden state z gets the "Original" emphasis (z·w rescaled to the
 *     mean of z, per window and prompt, sdw_emphasis_apply); the windows are concatenated
 *     along the sequence (77·n rows), and the pooled output is the first window's (unweighted,
 *     at its first EOS). One deliberate difference: when A1111 moves tokens after a comma to
 *     the next chunk it leaves an embedding's vectors behind at their old place (a bug); here
 *     they move with their tokens.
 * In both, a textual-inversion embedding's name (text/embeddings.h) stands for its vectors
 * wherever the prompt's tokens spell it (A1111's find_embedding_at_position: the name's token
 * ids as a run of the prompt's, longest name first), and, with an embeddings folder loaded,
 * `embedding:NAME` (ComfyUI's spelling) names one explicitly: an unknown NAME is an error. In
 * the plain mode the expansion is diffusers' (load_textual_inversion + maybe_convert_prompt):
 * the token ids it reports are vocab + the vectors' numbering in the folder (49408, 49409 ...)
 * and the pooled output lands where transformers 4.30's argmax(ids) does, on the last added
 * token.
 *
 * clip_skip (sdw_request.clip_skip): N >= 1 takes transformers' hidden_states[-N] of the
 * encoder as loaded (diffusers' layout; SD 2.x's OpenCLIP is stored without its last layer)
 * instead of the encoder's default state, never one closer to the output than the default
 * (SD 1.x/2.x: the last layer, N = 1; SDXL and SD3: the penultimate, N = 2), with the final
 * layer norm applied exactly when the default applies it (SD 1.x/2.x yes, SDXL and SD3 no), as
 * diffusers' encode_prompt does with its clip_skip = N - 1 (SD) or N - 2 (SDXL, SD3). That is
 * A1111's CLIP_stop_at_last_layers and sd.cpp's --clip-skip for SD 1.x, where people use it.
 * The pooled output is always the full stack's, as in every reference.
 *
 * Thread safety: encode is reentrant (the encoder is read-only).
 */
#ifndef SDW_TEXT_CLIP_PROMPT_H
#define SDW_TEXT_CLIP_PROMPT_H

#include "text/clip_text.h"
#include "text/clip_tokenizer.h"
#include "text/embeddings.h"

#define SDW_CLIP_WINDOW 77
#define SDW_CLIP_CHUNK 75 /* prompt tokens per window: 77 less BOS and EOS */
/* Windows one prompt may use (1200 tokens): beyond, the rest is cut with a warning. Every
 * window costs the denoiser's cross-attention as much as the first. */
#define SDW_CLIP_MAX_CHUNKS 16
/* A1111's comma_padding_backtrack default: how far back a full chunk looks for a comma. */
#define SDW_CLIP_COMMA_BACKTRACK 20

/* Receives a stage tensor under the reference's name (tests compare them with goldens). */
typedef void (*sdw_text_tap_fn)(void *user, const char *name, const float *data, int n_dims,
                                const int64_t *shape);

typedef struct sdw_clip_prompt {
    sdw_clip_tokenizer *tokenizer; /* owned */
    int32_t pad_id;                /* padding of the window (EOS for CLIP-L, 0 for OpenCLIP) */
    sdw_weights *w;                /* owned; its file belongs to the model */
    sdw_clip_text *enc;            /* owned */
    /* Which hidden state is the encoder's contribution (the last with the final layer norm, or
     * the penultimate without it) and whether its pooled output is projected. */
    sdw_clip_text_params params;
    char tap[8]; /* the reference's name prefix: "te", "te2" */
} sdw_clip_prompt;

/* How a request's prompt is read (see above); zero = plain, default state, no embeddings. */
typedef struct sdw_clip_prompt_opts {
    bool syntax;   /* AUTOMATIC1111's emphasis, BREAK and 75-token chunks */
    int clip_skip; /* 0 = the encoder's default state; N >= 1: hidden_states[-N] (see above) */
    const sdw_embeddings *embeddings; /* textual inversion; NULL = none (borrowed) */
    /* This encoder's role for two-encoder embeddings: "clip_l", "clip_g", or NULL for the one
     * CLIP encoder of a model (sdw_embeddings_vectors). */
    const char *ti_key;
    int max_chunks; /* windows per prompt with syntax; 0 = SDW_CLIP_MAX_CHUNKS */
} sdw_clip_prompt_opts;

/* One prompt's encoding by one encoder. */
typedef struct sdw_clip_encoding {
    int n_chunks;  /* 77-token windows (1 in the plain mode) */
    float *hidden; /* [n_chunks · 77, width] the hidden state (as clip_skip says, weighted), or
                    * NULL when not asked for */
    float *pooled; /* [pooled width], or NULL when not asked for */
} sdw_clip_encoding;
void sdw_clip_encoding_deinit(sdw_clip_encoding *e); /* NULL ok; zeroes it */

/* Frees what p owns and zeroes it; NULL ok. */
void sdw_clip_prompt_deinit(sdw_clip_prompt *p);

/* Features per token of the hidden state, and of the pooled output as params.project_pooled
 * says. */
int sdw_clip_prompt_width(const sdw_clip_prompt *p);
int sdw_clip_prompt_pooled_width(const sdw_clip_prompt *p);

/* Encodes n prompts (1 or 2; NULL = "") as one batch, as opts says (NULL = plain). out[k] gets
 * prompt k's hidden state when want_hidden and its pooled output when want_pooled (new
 * buffers: sdw_clip_encoding_deinit). which[k] names the prompt in warnings and taps ("cond",
 * "uncond"). *truncated is set when a prompt was cut. tap (may be NULL) receives
 * <tap>.<which>.input_ids [1, 77·n], the hidden state under the reference's name when it has
 * one (last_hidden_state / penultimate) [1, 77·n, W], and <tap>.<which>.pooled. Without
 * want_hidden only each prompt's first window is encoded. On failure (SDW_E_INVALID_ARG: text
 * that is not UTF-8, a weight that is not a number, an unknown `embedding:NAME` or one for
 * another model, a clip_skip beyond the encoder's layers) out is untouched. */
sdw_status sdw_clip_prompt_encode_chunks(const sdw_clip_prompt *p, const sdw_clip_prompt_opts *o,
                                         int n, const char *const *prompts,
                                         const char *const *which, bool want_hidden,
                                         bool want_pooled, sdw_clip_encoding *out,
                                         bool *truncated, sdw_text_tap_fn tap, void *tap_user,
                                         sdw_error *err);

/* The token windows prompt (NULL = "") becomes as opts says (NULL = plain), without encoding
 * it: what `sdw tokenize` shows. On success *ids is a new array (free()) of *n_windows x 77
 * ids, an embedding's vectors shown as the taps show them (vocab + their numbering), *mult
 * (mult may be NULL) a new array of their emphasis weights, *truncated (may be NULL) whether
 * the prompt was cut. p needs only its tokenizer and pad_id, and its encoder when
 * opts->embeddings is set. On failure (as sdw_clip_prompt_encode_chunks) nothing is set. */
sdw_status sdw_clip_prompt_windows(const sdw_clip_prompt *p, const sdw_clip_prompt_opts *o,
                                   const char *prompt, int32_t **ids, float **mult,
                                   int *n_windows, bool *truncated, sdw_error *err);

/* The windows a batch of two prompts with a and b windows is laid out in, one length for both:
 * equal counts stay; with `repeat` (a denoiser whose only use of the text is cross-attention,
 * the UNet), the least common multiple when it is at most 4 times the smaller count —
 * repeating a prompt's windows leaves cross-attention's result unchanged (duplicated keys and
 * values cancel in the softmax), so this equals AUTOMATIC1111's default of running the two
 * prompts in separate calls; ComfyUI's rule and limit — else the larger count, the shorter
 * prompt padded with windows of the empty prompt (A1111's "pad prompt/negative prompt"
 * option). */
int sdw_clip_batch_chunks(int a, int b, bool repeat);
/* Writes e's hidden state as n_out windows into rows of dst (`ld` floats apart, columns from
 * `col`): e's windows repeated when n_out is a multiple of e->n_chunks and repeat is set, else
 * e's windows then copies of empty->hidden's one window (the empty prompt's encoding; needed
 * only then, else may be NULL). */
void sdw_clip_encoding_place(const sdw_clip_encoding *e, int n_out, bool repeat,
                             const sdw_clip_encoding *empty, int width, float *dst, int ld,
                             int col);

/* The plain one-window form for callers with a fixed layout: prompt k's 77 rows written to
 * ctx[k] (`ld` floats apart, this encoder's columns from `col`; ctx NULL = not wanted) and,
 * when pooled[k] != NULL (pooled may be NULL), its pooled output. With opts->syntax only the
 * first window of each prompt is kept (taps as sdw_clip_prompt_encode_chunks). */
sdw_status sdw_clip_prompt_encode(const sdw_clip_prompt *p, const sdw_clip_prompt_opts *o, int n,
                                  const char *const *prompts, const char *const *which,
                                  float *const *ctx, int ld, int col, float *const *pooled,
                                  bool *truncated, sdw_text_tap_fn tap, void *tap_user,
                                  sdw_error *err);

#endif
