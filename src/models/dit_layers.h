/* models/dit_layers.h — what the diffusion transformers (FLUX: flux_transformer.c, SD3:
 * sd3_transformer.c) bind the same way: layers bound by their diffusers names while the
 * transformer counts its parameters as the reference does (torch's model.parameters(): every
 * weight and bias of what it binds, for `sdw info`), and the timestep / pooled-text embedder
 * both have (diffusers' TimestepEmbedding and PixArtAlphaTextProjection, act "silu").
 *
 *   sdw_dit_binder bd = {.ws = ws, .n_params = &t->n_params, .head_dim = 64, .qk_eps = 1e-6f};
 *   char n[SDW_DIT_NAME_LEN];
 *   if ((st = sdw_dit_bind_linear(&bd, &l, sdw_dit_name(n, "%s.attn.to_out.0", p), D, D, err)))
 *       return st;
 *   if ((st = sdw_dit_bind_embedder(&bd, &t->time, "time_text_embed.timestep_embedder", 256, D,
 *                                   err)))
 *       return st;
 *   sdw_dit_embedder_forward(&t->time, proj, B, tmp, temb); // [B, 256] -> [B, D]
 *
 * Every binder adds to *bd->n_params only on success; errors are sdw_linear_bind's /
 * sdw_rms_norm_bind's (they name the tensor). Linear layers here all have a bias.
 * Thread safety: binding is single-threaded (as sdw_weights); the forward is reentrant.
 */
#ifndef SDW_MODELS_DIT_LAYERS_H
#define SDW_MODELS_DIT_LAYERS_H

#include "nn/nn.h"

/* Room for any tensor-name prefix the transformers format. */
#define SDW_DIT_NAME_LEN 256

/* printf into buf (SDW_DIT_NAME_LEN bytes; truncated, always terminated); returns buf, so a
 * name can be formatted in an argument list. */
const char *sdw_dit_name(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Where the layers come from, and what they add up to. */
typedef struct sdw_dit_binder {
    sdw_weights *ws;
    size_t *n_params; /* the transformer's count: each bound layer's parameters added */
    int head_dim;     /* the attention's qk RMSNorms: width */
    float qk_eps;     /*   and epsilon */
} sdw_dit_binder;

/* "<name>.weight" [out, in] and "<name>.bias" [out]: (in + 1)·out parameters. */
sdw_status sdw_dit_bind_linear(sdw_dit_binder *bd, sdw_linear *l, const char *name, int in,
                               int out, sdw_error *err);
/* n layers of [out, in] (with biases) reading one input, stacked into one product (q|k|v:
 * sdw_linear_bind_stacked): n·(in + 1)·out parameters. */
sdw_status sdw_dit_bind_stacked(sdw_dit_binder *bd, sdw_linear *l, const char *const *names,
                                int n, int in, int out, sdw_error *err);
/* A qk RMSNorm's gain `name` [head_dim]: head_dim parameters. */
sdw_status sdw_dit_bind_rms(sdw_dit_binder *bd, sdw_rms_norm *r, const char *name,
                            sdw_error *err);

/* Linear -> SiLU -> linear: "<prefix>.linear_1" [D, in], "<prefix>.linear_2" [D, D]. */
typedef struct sdw_dit_embedder {
    sdw_linear linear_1; /* [D, in] */
    sdw_linear linear_2; /* [D, D] */
} sdw_dit_embedder;

sdw_status sdw_dit_bind_embedder(sdw_dit_binder *bd, sdw_dit_embedder *e, const char *prefix,
                                 int in, int D, sdw_error *err);
/* y [B, D] = linear_2(silu(linear_1(x [B, in]))); tmp [B, D] scratch. */
void sdw_dit_embedder_forward(const sdw_dit_embedder *e, const float *x, int B, float *tmp,
                              float *y);

#endif
