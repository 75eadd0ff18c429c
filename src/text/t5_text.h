/* text/t5_text.h — T5 text encoder (transformers' T5EncoderModel), the second text encoder of
 * FLUX.1 and the third of Stable Diffusion 3 (T5 v1.1 XXL).
 *
 *   sdw_t5_text_config cfg;
 *   if (sdw_t5_text_config_load("text_encoder_2/config.json", &cfg, &err)) goto fail;
 *   if (sdw_t5_text_create(ws, &cfg, &t5, &err)) goto fail;
 *   sdw_t5_text_forward(t5, ids, 1, 512, hidden, &err);       // hidden: [1, 512, d_model]
 *   sdw_t5_text_destroy(t5);
 *
 * Weights are read by transformers' names through an sdw_weights (its prefix handles files that
 * nest the encoder, e.g. "text_encoders.t5xxl.transformer."): shared.weight (or
 * encoder.embed_tokens.weight) [vocab, d_model];
 * encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight [rel_buckets, n_heads]
 * (block 0 only; every block uses it); per block N: encoder.block.N.layer.0.layer_norm.weight,
 * encoder.block.N.layer.0.SelfAttention.{q,k,v}.weight [n_heads·d_kv, d_model],
 * ...SelfAttention.o.weight [d_model, n_heads·d_kv], encoder.block.N.layer.1.layer_norm.weight,
 * encoder.block.N.layer.1.DenseReluDense.{wi_0,wi_1}.weight [d_ff, d_model] (gated) or .wi,
 * and ...DenseReluDense.wo.weight [d_model, d_ff]; encoder.final_layer_norm.weight. No biases.
 * Thread safety: a created encoder is read-only; forward is reentrant.
 */
#ifndef SDW_TEXT_T5_TEXT_H
#define SDW_TEXT_T5_TEXT_H

#include "io/weights.h"

/* The feed-forward activation (transformers' dense_act_fn). */
typedef enum sdw_t5_act {
    SDW_T5_ACT_RELU,      /* "relu": original T5 */
    SDW_T5_ACT_GELU_TANH, /* "gelu_new" / "gelu_pytorch_tanh": T5 v1.1, FLAN-T5 ("gated-gelu") */
    SDW_T5_ACT_GELU,      /* "gelu": exact erf GELU */
    SDW_T5_ACT_SILU,      /* "silu" / "swish" */
} sdw_t5_act;

typedef struct sdw_t5_text_config {
    int vocab;            /* embedding rows (32128 for T5 v1.1) */
    int d_model;          /* residual width (4096 XXL) */
    int d_kv;             /* per-head width (64) */
    int n_heads;          /* attention heads (64 XXL); inner width n_heads·d_kv */
    int d_ff;             /* feed-forward width (10240 XXL) */
    int n_layers;         /* encoder blocks (24 XXL) */
    int rel_buckets;      /* relative_attention_num_buckets (32) */
    int rel_max_distance; /* relative_attention_max_distance (128) */
    float eps;            /* layer_norm_epsilon (1e-6) */
    bool gated;           /* feed-forward act(wi_0 x) · wi_1 x (T5 v1.1) instead of act(wi x) */
    sdw_t5_act act;
} sdw_t5_text_config;

/* Parses a transformers T5 config.json: vocab_size, d_model, d_kv, num_heads, d_ff,
 * num_layers, relative_attention_num_buckets, relative_attention_max_distance,
 * layer_norm_epsilon, feed_forward_proj ("relu", "gated-gelu", "[gated-]<act>"; "gated-gelu"
 * means gelu_new, as T5Config says) and, where present, is_gated_act and dense_act_fn, which
 * override what feed_forward_proj implies (T5Config stores them as given). Absent keys take
 * T5Config's defaults, as transformers does. On failure *cfg is untouched and err names the
 * file and the key. */
sdw_status sdw_t5_text_config_load(const char *path, sdw_t5_text_config *cfg, sdw_error *err);

/* Infers the config from tensor shapes, for single files (T5EncoderModel weights as ComfyUI /
 * stable-diffusion.cpp users have them, e.g. t5xxl_fp16.safetensors): vocab and d_model from
 * the embedding, rel_buckets and n_heads from relative_attention_bias [buckets, heads], d_kv =
 * q's rows / n_heads, n_layers by counting blocks, d_ff and gated from wi_0 (or wi). What
 * shapes cannot say takes T5 v1.1's values: gelu_new (gated) or relu (not gated), eps 1e-6,
 * rel_max_distance 128. On failure *cfg is untouched. */
sdw_status sdw_t5_text_config_infer(const sdw_weights *ws, sdw_t5_text_config *cfg, sdw_error *err);

typedef struct sdw_t5_text sdw_t5_text;

/* Binds every tensor, shape-checked against cfg (a misfit is SDW_E_SHAPE naming the tensor).
 * ws is borrowed and must outlive the encoder; the linear layers pack their weights for ws's
 * precision (sdw_weights_set_precision before this call). A file carrying both shared.weight
 * and its tied copy encoder.embed_tokens.weight uses the first and declares the copy
 * knowingly unused. On success *out is a new encoder; free with sdw_t5_text_destroy. On
 * failure *out is untouched. */
sdw_status sdw_t5_text_create(sdw_weights *ws, const sdw_t5_text_config *cfg, sdw_t5_text **out,
                              sdw_error *err);
void sdw_t5_text_destroy(sdw_t5_text *t); /* NULL ok */
const sdw_t5_text_config *sdw_t5_text_get_config(const sdw_t5_text *t);

/* ids [B, L] -> hidden [B, L, d_model] (caller-owned) = last_hidden_state, the final layer norm
 * applied. No attention mask: FluxPipeline and SD3 call the encoder without one, so padding
 * tokens are attended. Any L works (the relative position bias has no length limit). Returns
 * SDW_E_INVALID_ARG for a token id outside 0..vocab-1 or B, L < 1 (hidden untouched). Scratch:
 * about B·L·(d_model + max(4·n_heads·d_kv, 2·d_ff)) floats, reused across layers. */
sdw_status sdw_t5_text_forward(const sdw_t5_text *t, const int32_t *ids, int B, int L,
                               float *hidden, sdw_error *err);

/* transformers' T5Attention._relative_position_bucket for the encoder (bidirectional): the
 * bucket of key-query offset rel = key position - query position, with float32 arithmetic as
 * torch does it (log of a float32 ratio, truncated): offsets below n_buckets/4 in magnitude get
 * a bucket each, larger ones logarithmic bins up to max_distance, positive offsets the upper
 * half. Needs n_buckets >= 4 and max_distance > n_buckets/4 (as sdw_t5_text_create checks). */
int sdw_t5_relative_bucket(int rel, int n_buckets, int max_distance);

#endif
