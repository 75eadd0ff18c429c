/* nn/nn.h — CPU f32 building blocks shared by every model family.
 *
 * Layout: activations are NHWC (channels last) row-major float; a (B,H,W,C) image is the
 * (B, H*W, C) token sequence, so transformer blocks and convolutions share buffers untouched.
 * Layers are plain structs bound once from an sdw_weights (weights stay owned by it); forward
 * functions take caller-provided output buffers, allocate only internal scratch, and are
 * threaded (OpenMP / oneDNN) internally. Deterministic for a given thread count.
 *
 * Precision: convolutions and linear layers bound from an sdw_weights pack their weights once,
 * at bind, on the compute backend (nn/backend.h; on the CPU backend: into oneDNN's preferred
 * layout) in the weights' precision (sdw_weights_precision: f32, or bf16 with f32
 * accumulation); only that packed copy is kept (on the CPU in fewer bits when every weight is
 * an f16, bf16 or fp8 value: nn/backend_cpu.h). Everything else (norms, softmax, activations,
 * residual sums) is f32 in both precisions. A layer built by hand with only .w set (tests,
 * derived weights) runs on plain f32 GEMMs.
 *
 *   sdw_conv2d conv;
 *   if (sdw_conv2d_bind(&conv, ws, "conv_in", 4, 320, 3, 1, 1, true, &err)) goto fail;
 *   sdw_conv2d_forward(&conv, sdw_nhwc(x, B, H, W), sdw_nhwc(y, B, H, W), 0); // y: [B, H, W, 320]
 *
 * Each product and norm is one function taking activation views (nn/act.h: storage, element
 * type, shape) and op flags (SDW_ACCUMULATE: y += result; SDW_SILU after a norm). Views are f32
 * except where a bf16 layer reads or writes bf16 (sdw_conv2d_operand_dt: the VAE keeps its
 * activations so).
 *
 * LoRA (nn/lora.h): every layer bound by name is recorded in its weights' registry; while a run
 * has adapters attached to its thread, sdw_linear_forward / sdw_conv2d_forward add the adapted
 * layers' low-rank terms after the product (y += m·up(down(x))). With none attached a forward
 * is exactly as without LoRA support (one thread-local load more).
 *
 * Thread safety: forward functions are reentrant (bound layers are read-only).
 */
#ifndef SDW_NN_H
#define SDW_NN_H

#include "io/weights.h"
#include "nn/act.h"
/* sdw_nn_precision_resolve, sdw_nn_cpu_has_bf16 / _amx: what precision this CPU runs (loaders
 * resolve --precision with it). */
#include "nn/backend_cpu.h"

struct sdw_backend_op; /* a layer's packed weights on the compute backend (nn/backend.h) */


/* ---- linear: y[M,out] = x[M,in] · Wᵀ + b ---- */
typedef struct sdw_linear {
    const float *w; /* [out, in] as stored (torch layout), for hand-built layers; NULL if bound */
    const float *b; /* [out] or NULL (NULL also for _init layers: the op holds the bias) */
    int in, out;
    const struct sdw_backend_op *op; /* bound layers: packed weights (owned by the sdw_weights) */
} sdw_linear;
/* Binds "<prefix>.weight" ([out,in], or [out,in,1,1]) and, if has_bias, "<prefix>.bias". */
sdw_status sdw_linear_bind(sdw_linear *l, sdw_weights *ws, const char *prefix, int in, int out,
                           bool has_bias, sdw_error *err);
/* One linear layer computing n layers that read the same input: binds "<prefixes[i]>.weight"
 * [out, in] (and .bias if has_bias) for each i and stacks them, so y [M, n·out] holds layer i's
 * output in columns [i·out, (i+1)·out) (attention's q|k|v in one product). Errors name the
 * tensor, as sdw_linear_bind. */
sdw_status sdw_linear_bind_stacked(sdw_linear *l, sdw_weights *ws, const char *const *prefixes,
                                   int n, int in, int out, bool has_bias, sdw_error *err);
/* A layer from f32 weights the caller computed (w [out, in], b [out] or NULL; both copied),
 * packed for ws's precision and owned by ws. */
sdw_status sdw_linear_init(sdw_linear *l, sdw_weights *ws, const float *w, const float *b, int in,
                           int out, sdw_error *err);
/* x [M, in] -> y [M, out] f32: y = x·Wᵀ + b, or with SDW_ACCUMULATE y += x·Wᵀ + b (a residual
 * add fused into the product). x and y are read as rows (any layout, same row count); x is f32,
 * or bf16 on a bf16 layer. x and y must not alias. */
void sdw_linear_forward(const sdw_linear *l, sdw_act x, sdw_act y, unsigned flags);

/* ---- 2-D convolution, NHWC, square kernel, zero padding ----
 * Padding is `pad` before and `pad_end` after each spatial dim (equal for the symmetric
 * convolutions of every model; diffusers' VAE-encoder Downsample2D pads (0,1,0,1) then convolves
 * with stride 2 and no padding: pad = 0, pad_end = 1). */
typedef struct sdw_conv2d {
    const float *w; /* [k, k, in, out] (HWIO) for hand-built layers; NULL if bound */
    const float *b; /* [out] or NULL (NULL also for _init layers: the op holds the bias) */
    int in, out, k, stride, pad;
    int pad_end;               /* padding after each spatial dim (== pad for symmetric) */
    const struct sdw_backend_op *op; /* bound layers: packed weights (owned by the sdw_weights) */
} sdw_conv2d;
/* Binds "<prefix>.weight" [out,in,k,k] and optional "<prefix>.bias" (symmetric padding). */
sdw_status sdw_conv2d_bind(sdw_conv2d *c, sdw_weights *ws, const char *prefix, int in, int out,
                           int k, int stride, int pad, bool has_bias, sdw_error *err);
/* As sdw_conv2d_bind with pad before / pad_end after each spatial dim. */
sdw_status sdw_conv2d_bind_pad(sdw_conv2d *c, sdw_weights *ws, const char *prefix, int in, int out,
                               int k, int stride, int pad, int pad_end, bool has_bias,
                               sdw_error *err);
/* A convolution from f32 weights the caller derived (torch OIHW [out,in,k,k]; b [out] or NULL;
 * both copied), packed for ws's precision and owned by ws. */
sdw_status sdw_conv2d_init(sdw_conv2d *c, sdw_weights *ws, const float *w_oihw, const float *b,
                           int in, int out, int k, int stride, int pad, int pad_end,
                           sdw_error *err);
/* Repacks torch [out,in,k,k] (OIHW) weights into HWIO [k,k,in,out] (dst: k*k*in*out floats),
 * the .w layout of a hand-built layer (tests). */
void sdw_conv2d_pack_weights(const float *w_oihw, int out, int in, int k, float *w_hwio);
static inline int sdw_conv2d_out_size(const sdw_conv2d *c, int n) {
    return (n + c->pad + c->pad_end - c->k) / c->stride + 1;
}
/* The element type a layer's product reads and may write besides f32: bf16 on a layer bound
 * for bf16, else f32. */
sdw_dt sdw_conv2d_operand_dt(const sdw_conv2d *c);
/* x NHWC [B, H, W, in] -> y NHWC [B, OH, OW, out] (OH/OW from sdw_conv2d_out_size): y =
 * conv(x) + b, or with SDW_ACCUMULATE y += conv(x) + b (the residual add fused into the
 * convolution). x and y are f32, or of the operand type (a bf16 y: the f32 sum rounded once).
 * x and y must not alias. */
void sdw_conv2d_forward(const sdw_conv2d *c, sdw_act x, sdw_act y, unsigned flags);

/* ---- normalisation ---- */
typedef struct sdw_group_norm {
    const float *gamma, *beta; /* [C] */
    int c, groups;
    float eps;
} sdw_group_norm;
sdw_status sdw_group_norm_bind(sdw_group_norm *g, sdw_weights *ws, const char *prefix, int c,
                               int groups, float eps, sdw_error *err);
/* GroupNorm of (x + bias) over x NHWC [B, H, W, C] into y (same shape): bias [B, C] broadcast
 * over pixels (a ResnetBlock2D's time embedding added just before its norm2; the sum is formed
 * on the fly, never stored) or NULL. flags: SDW_SILU applies SiLU after the affine. x and y
 * are f32 or bf16 each; y may be x's storage when their types match (in place). */
void sdw_group_norm_forward(const sdw_group_norm *g, const float *bias, sdw_act x, sdw_act y,
                            unsigned flags);

typedef struct sdw_layer_norm {
    const float *gamma, *beta; /* [C] */
    int c;
    float eps;
} sdw_layer_norm;
sdw_status sdw_layer_norm_bind(sdw_layer_norm *n, sdw_weights *ws, const char *prefix, int c,
                               float eps, sdw_error *err);
/* x [M, C] f32 -> y [M, C] f32 or bf16, read as rows; y may be x's storage (f32). */
void sdw_layer_norm_forward(const sdw_layer_norm *n, sdw_act x, sdw_act y);

/* RMSNorm (T5's T5LayerNorm, diffusers' RMSNorm): y = x / sqrt(mean(x²) + eps) · gamma, the
 * mean over c values in f32 with no centring, as both compute it (in float32 whatever the
 * weights' type). */
typedef struct sdw_rms_norm {
    const float *gamma; /* [c] */
    int c;
    float eps;
} sdw_rms_norm;
sdw_status sdw_rms_norm_bind(sdw_rms_norm *n, sdw_weights *ws, const char *name, int c, float eps,
                             sdw_error *err); /* name: the whole tensor name ("...norm_q.weight"
                                               * or T5's "...layer_norm.weight") */
/* x: M rows, `stride` floats apart, each holding G consecutive groups of c values (G = heads
 * for the per-head QK norm of attention; 1 for a plain row norm); every group is normalised
 * on its own. y has the same layout and may alias x. */
void sdw_rms_norm_forward(const sdw_rms_norm *n, const float *x, int64_t M, int G, int64_t stride,
                          float *y);

/* ---- attention ----
 * Multi-head scaled-dot-product attention, softmax(q kᵀ · scale) v, per batch and head.
 * q [B, Lq, H*D] (row stride q_stride floats), k/v [B, Lk, H*D] (strides k_stride/v_stride),
 * out [B, Lq, H*D] contiguous. Heads are interleaved in the channel dim (torch's
 * view(B,L,H,D) convention). Tiled over query rows with an online softmax: the full Lq×Lk
 * score matrix is never materialised. Scores, softmax and sums in f32. flags:
 *   SDW_ATTN_CAUSAL  mask j > i (CLIP text);
 *   SDW_ATTN_BF16    a bf16 model's attention: q, k, the probabilities and v are rounded to bf16
 *                    for the two products (as PyTorch's bf16 attention does; f32 sums), twice
 *                    the multiply rate where the CPU has AVX512-BF16. Elsewhere (or for an odd
 *                    head dim) the f32 kernel runs: the flag allows rounding, never requires it. */
enum { SDW_ATTN_CAUSAL = 1u << 0, SDW_ATTN_BF16 = 1u << 1 };
/* The precision flag of a model's attention, from the weights its layers were bound from:
 * SDW_ATTN_BF16 where those pack for bf16, else 0. */
unsigned sdw_attention_precision_flag(const sdw_weights *ws);
void sdw_attention(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                   const float *v, int64_t v_stride, int B, int64_t Lq, int64_t Lk, int H, int D,
                   float scale, unsigned flags, float *out);
/* As sdw_attention with an additive relative position bias (T5's), shared by every batch:
 *   out = softmax(q kᵀ · scale + bias) v,  bias[h][i][j] = rel_bias[h·(Lq+Lk−1) + j − i + Lq − 1]
 * rel_bias [H, Lq + Lk − 1]: per head, one value per key−query offset j − i from −(Lq−1) to
 * Lk−1 (T5's bias depends on nothing else), so the Lq×Lk bias is never formed either; NULL is
 * exactly sdw_attention (same code, same speed). T5 passes scale 1 (no 1/√D). */
void sdw_attention_rel_bias(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                            const float *v, int64_t v_stride, int B, int64_t Lq, int64_t Lk, int H,
                            int D, float scale, unsigned flags, const float *rel_bias, float *out);

/* ---- elementwise (n elements, in place unless noted) ---- */
void sdw_silu(float *x, size_t n);
void sdw_gelu(float *x, size_t n);                /* exact erf GELU (torch default) */
void sdw_gelu_tanh(float *x, size_t n);           /* tanh approximation */
void sdw_quick_gelu(float *x, size_t n);          /* x·sigmoid(1.702x) (CLIP) */
void sdw_add(float *y, const float *x, size_t n); /* y += x */
/* GEGLU: x [M, 2F] f32 -> y [M, F] f32 or bf16 = x[:, :F] · gelu(x[:, F:]) (diffusers GEGLU
 * chunk order), read as rows. */
void sdw_geglu(sdw_act x, int F, sdw_act y);
/* y [B,H,W,C] += bias per (B, C): broadcast of a per-batch channel vector (time embedding). */
void sdw_add_channel_bias(float *y, const float *bias, int B, int64_t HW, int C);

/* ---- a producer fused into a product ----
 * The normalised / activated input is made directly in the layer's operand type (bf16 for a
 * bf16 layer: no f32 copy and no conversion pass) and consumed by the product. tmp is scratch
 * for (rows x layer input) values of x's type and may be x's storage (x is then overwritten).
 * flags: SDW_ACCUMULATE (y += product, a residual add; else y = product), and SDW_SILU where
 * said. Same numbers as the two steps apart. */
/* y (+)= conv(silu?(groupnorm(x + bias))): x NHWC [B, H, W, in] f32 or of the operand type,
 * bias [B, C] per batch and channel or NULL, SiLU with SDW_SILU; y as sdw_conv2d_forward. */
void sdw_conv2d_forward_gn(const sdw_conv2d *c, const sdw_group_norm *g, const float *bias,
                           sdw_act x, void *tmp, sdw_act y, unsigned flags);
/* y (+)= linear(groupnorm(x)), x NHWC [B, H, W, in] f32 (Transformer2DModel's norm then
 * proj_in; tokens [B, L, in] as sdw_nhwc(x, B, L, 1)), y [B·H·W, out] f32. */
void sdw_linear_forward_gn(const sdw_linear *l, const sdw_group_norm *g, sdw_act x, void *tmp,
                           sdw_act y, unsigned flags);
/* y (+)= linear(layernorm(x)), x [M, in] f32 rows, y [M, out] f32. */
void sdw_linear_forward_ln(const sdw_linear *l, const sdw_layer_norm *n, sdw_act x, void *tmp,
                           sdw_act y, unsigned flags);
/* y (+)= linear(geglu(x)), x [M, 2·in] f32 rows (GEGLU halves as sdw_geglu), y [M, out] f32;
 * tmp [M, in] (not x's storage). */
void sdw_linear_forward_geglu(const sdw_linear *l, sdw_act x, void *tmp, sdw_act y, unsigned flags);

/* ---- layout helpers ---- */
/* Nearest-neighbour ×2 upsample: x [B,H,W,C] -> y [B,2H,2W,C]. */
void sdw_upsample_nearest2x(const float *x, int B, int H, int W, int C, float *y);
/* Channel concat: a [M,Ca], b [M,Cb] -> y [M, Ca+Cb]. */
void sdw_concat_channels(const float *a, int Ca, const float *b, int Cb, int64_t M, float *y);
/* NCHW <-> NHWC */
void sdw_nchw_to_nhwc(const float *x, int B, int C, int H, int W, float *y);
void sdw_nhwc_to_nchw(const float *x, int B, int H, int W, int C, float *y);

/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding:
 * out [dim]; flip_sin_to_cos puts cos first; freq_shift as in the config. */
void sdw_timestep_embedding(float t, int dim, bool flip_sin_to_cos, float freq_shift, float *out);

/* ---- rotary position embedding / adaptive modulation (FLUX; DiT-style adaLN-Zero blocks) ---- */
/* FLUX's EmbedND (diffusers rope()): for n positions of n_axes coordinates each (pos [n, n_axes]),
 * axis a owning axes_dim[a] (even) channels of a head, pair i of axis a turns by the angle
 * pos[a] · theta^(−2i / axes_dim[a]). Frequencies, angles, cos and sin in double, rounded to f32
 * as rope() does: cos_out, sin_out [n, Σ axes_dim / 2], axis 0's pairs first. */
void sdw_rope_table(const float *pos, int64_t n, int n_axes, const int *axes_dim, double theta,
                    float *cos_out, float *sin_out);
/* apply_rope, in place: x holds B·L rows (row stride `stride` floats), each with H heads of D
 * channels from its start; every head's pairs (x[2i], x[2i+1]) are rotated by row l's angles:
 * (cos·x0 − sin·x1, sin·x0 + cos·x1) in f32. Tables [L, D/2] from sdw_rope_table; row l of every
 * batch element uses table row l. */
void sdw_rope_apply(float *x, int B, int64_t L, int64_t stride, int H, int D, const float *cos_t,
                    const float *sin_t);
/* LayerNorm without affine (elementwise_affine=False) of x [M, C], modulated as AdaLayerNorm*:
 * y = norm(x) · (1 + scale) + shift, shift and scale [C] (one batch element's modulation).
 * Statistics as sdw_layer_norm_forward. y may alias x. */
void sdw_layer_norm_modulate(const float *x, int64_t M, int C, float eps, const float *shift,
                             const float *scale, float *y);
/* The gated residual: y [M, C] += gate [C] ⊙ x [M, C] (gate broadcast over the rows). */
void sdw_add_gated(float *y, const float *x, const float *gate, int64_t M, int C);

#endif
