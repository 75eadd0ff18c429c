/* text/clip_prompt.h — a CLIP text encoder as the diffusion pipelines drive it: its tokenizer,
 * its padding token, which hidden state it contributes and whether its pooled output is
 * projected. One implementation for every family (Stable Diffusion 1.x/2.x/XL, FLUX's CLIP-L,
 * SD3's CLIP-L and CLIP-G).
 *
 *   sdw_clip_prompt te = {0};
 *   ...te.tokenizer, te.pad_id, te.w, te.enc, te.params, te.tap filled by the loader...
 *   const char *prompts[2] = {"a cat", ""}, *which[2] = {"cond", "uncond"};
 *   float *ctx[2] = {row0, row1}, *pooled[2] = {NULL, NULL};
 *   sdw_clip_prompt_encode(&te, 2, prompts, which, ctx, D, 0, pooled, &cut, tap, user, &err);
 *   sdw_clip_prompt_deinit(&te);
 *
 * Prompts are tokenized into the 77-token window (truncated with a warning, padded with pad_id)
 * and encoded as one batch. Thread safety: encode is reentrant (the encoder is read-only).
 */
#ifndef SDW_TEXT_CLIP_PROMPT_H
#define SDW_TEXT_CLIP_PROMPT_H

#include "text/clip_text.h"
#include "text/clip_tokenizer.h"

#define SDW_CLIP_WINDOW 77

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

/* Frees what p owns and zeroes it; NULL ok. */
void sdw_clip_prompt_deinit(sdw_clip_prompt *p);

/* Features per token of the hidden state, and of the pooled output as params.project_pooled
 * says. */
int sdw_clip_prompt_width(const sdw_clip_prompt *p);
int sdw_clip_prompt_pooled_width(const sdw_clip_prompt *p);

/* Encodes n prompts (1 or 2) as one batch. Prompt k (NULL = "") gets its hidden state written to
 * rows of ctx[k] (77 rows, `ld` floats apart, this encoder's columns from `col`; ctx NULL = not
 * wanted) and, when pooled[k] != NULL (pooled may be NULL), its pooled output. which[k] names
 * the prompt in warnings and taps ("cond", "uncond"). *truncated is set when a prompt was cut.
 * tap (may be NULL) receives <tap>.<which>.input_ids, the hidden state under the reference's
 * name (last_hidden_state / penultimate), and <tap>.<which>.pooled. */
sdw_status sdw_clip_prompt_encode(const sdw_clip_prompt *p, int n, const char *const *prompts,
                                  const char *const *which, float *const *ctx, int ld, int col,
                                  float *const *pooled, bool *truncated, sdw_text_tap_fn tap,
                                  void *tap_user, sdw_error *err);

#endif
