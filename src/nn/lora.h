/* nn/lora.h — low-rank adapters (LoRA) on bound layers, applied on the fly, and the registry of
 * bound layers they find their targets in (library-internal).
 *
 *   // at bind time, nothing to do: every sdw_linear / sdw_conv2d bound by name is recorded
 *   const sdw_layer_ref *t = sdw_layers_at(ws, i);          // "down_blocks.0....attn1.to_q"
 *   sdw_lora_pack *p = sdw_lora_pack_create();
 *   sdw_lora_pack_add(p, t, down, up, rank, alpha / rank);  // one module per adapted layer part
 *   if (sdw_lora_pack_finish(p, &err)) goto fail;           // packed on the layers' backend
 *   const sdw_lora_use use = {p, 0.8f};                     // the request's multiplier
 *   const sdw_lora_run run = {&use, 1}, *prev = sdw_lora_attach(&run);
 *   ... forwards: every adapted layer computes y = x·Wᵀ + b + 0.8·(alpha/rank)·up·down·x ...
 *   sdw_lora_attach(prev);
 *   sdw_lora_pack_destroy(p);
 *
 * Why on the fly, not merged: the base weights are packed once at load (oneDNN layout, bf16,
 * compact fp8/f16 storage) and never touched again, so a request cannot leave anything behind
 * (base, LoRA, base gives the base image bit for bit) and a LoRA costs no repack per request;
 * the low-rank product costs R·(in + out) per row against the layer's in·out (diffusers' PEFT
 * layers compute the same sum: base(x) + scale·lora_B(lora_A(x))), and runs with different
 * LoRAs can share one set of weights at once. The price, measured with
 * tests/models/test_lora_bench.c (SD 1.5, f32, rank 32 over its 144 UNet linears, one UNet call
 * = CFG batch 2) on a 2-core AMD EPYC VM shared with other jobs (load 13-19: identical calls
 * differ by up to ±30%, so figures are medians of calls alternated in one run): the adapters
 * are 3.9% of a call's FLOPs (14 of 360 GFLOP at 256²) and cost that on one thread
 * (OMP_NUM_THREADS=1, CPU time, best of 6: 3.85 s -> 4.07 s at 256²); on two threads at 256²
 * base 41.9 s, with the adapters 46.2 s (+10%; it was 48.8 s, +16%, with each product threaded
 * on its own, see lora.c), at 512² 43.1 s -> 48.9 s (+13%, best of 3 +4%; threaded on its own
 * 47.0 s, +9%: at 512² the two ways differ by less than the noise). Merging and
 * repacking the adapted layers instead cost 32.6 s at 512² f32 in a run whose calls took 73.5 s
 * (16.0 s bf16; twice that with the restore): for one 20-step 512² image merging is cheaper
 * (about 0.9 call with the restore, against 20 × 4-13% = 0.8-2.6 calls on the fly), on the fly
 * keeps the base untouched and shared. The 512² bench's own best-of-3 could not resolve this
 * under that load (f32 73.5 s -> 67.4 s, bf16 45.1 s -> 31.6 s with the LoRA).
 *
 * The registry: each layer bound by name (sdw_linear_bind, sdw_linear_bind_stacked,
 * sdw_conv2d_bind[_pad]) is recorded in its sdw_weights under its canonical name, with its op and
 * geometry; each part of a stacked layer (attention's q|k|v) is its own entry naming the output
 * columns it owns. Layers made from derived weights (sdw_*_init) have no name and no entry.
 *
 * Packs: the modules of one LoRA file for one model, grouped by the op they adapt. All modules
 * on one op become one pair of products: down [R, in] (or a convolution with the layer's kernel,
 * stride and padding) then up [op_out, R], R the sum of the distinct downs' ranks, each module's
 * up rows placed at its part's columns with alpha/rank folded in (so a stacked q|k|v layer runs
 * one adapter; parts split from one fused module, e.g. BFL's qkv, share their down). The down
 * product runs in the layer's precision (it reads the layer's operand: bf16 on a bf16 layer);
 * the up product in f32.
 *
 * The run: a list of (pack, multiplier) attached to the calling thread for the run, as
 * nn/profile.h's profile and nn/stop.h's stop flag (the forwards are called from the run's one
 * thread, layers below anything that knows the request). With nothing attached a layer's forward
 * costs one thread-local load more. A pack is read-only once finished: any number of runs on
 * any threads may use it at once.
 */
#ifndef SDW_NN_LORA_H
#define SDW_NN_LORA_H

#include "io/weights.h"
#include "nn/act.h"

struct sdw_backend_op;

/* ---- the registry of bound layers ---- */

/* One bound layer, or one part of a stacked one: what a LoRA module needs to adapt it. */
typedef struct sdw_layer_ref {
    const char *name;                /* canonical prefix ("...attn1.to_q"), owned by the registry */
    const struct sdw_backend_op *op; /* the layer's packed product (owned by the weights) */
    bool conv;                       /* a convolution (geometry below), else a linear layer */
    int in, out;                     /* input channels; output channels of this part */
    int k, stride, pad, pad_end;     /* convolutions; linear layers 1, 1, 0, 0 */
    int col0, op_out;                /* this part is output columns [col0, col0 + out) of op_out */
} sdw_layer_ref;

/* The layers bound from ws so far, in bind order; entries are borrowed from ws (valid until
 * sdw_weights_destroy). 0 / NULL-free for weights nothing was bound from. */
int sdw_layers_count(const sdw_weights *ws);
const sdw_layer_ref *sdw_layers_at(const sdw_weights *ws, int i);

/* Records r (its name copied) in ws's registry: nn/bind.c calls it for every named bind. */
void sdw__layers_note(sdw_weights *ws, const sdw_layer_ref *r);

/* ---- merging (the reference's fuse_lora; used by tests and measurements) ---- */

/* w [out, in_k] += scale · up [out, rank] · down [rank, in_k], in f32 with each dot product
 * summed in double: diffusers' fuse_lora (W + m·(alpha/rank)·up·down) for scale = m·alpha/rank.
 * in_k = in·k·k for a convolution (torch OIHW flattened). */
void sdw_lora_merge(float *w, int64_t out, int64_t in_k, const float *up, const float *down,
                    int rank, float scale);

/* ---- packs ---- */

typedef struct sdw_lora_pack sdw_lora_pack;

/* A new empty pack; free with sdw_lora_pack_destroy. */
sdw_lora_pack *sdw_lora_pack_create(void);
/* Adds a module adapting part t (copied) by scale · up · down: down [rank, t->in, k, k] f32 (k
 * = t->k; [rank, in] for a linear layer), up [t->out, rank] f32, both borrowed until
 * sdw_lora_pack_finish. Modules of one op given the same down pointer share its product. */
void sdw_lora_pack_add(sdw_lora_pack *p, const sdw_layer_ref *t, const float *down,
                       const float *up, int rank, float scale);
/* Packs every op's adapter on that op's backend. On failure (SDW_E_BACKEND: the backend refused
 * a product; SDW_E_INVALID_ARG: two modules adapt the same part) err names the layer and p
 * holds no adapter (destroy it). Call once. */
sdw_status sdw_lora_pack_finish(sdw_lora_pack *p, sdw_error *err);
int sdw_lora_pack_n_layers(const sdw_lora_pack *p); /* adapted ops, after finish */
size_t sdw_lora_pack_bytes(const sdw_lora_pack *p); /* packed adapter weights, after finish */
void sdw_lora_pack_destroy(sdw_lora_pack *p);        /* NULL ok; before the ops' backend */

/* ---- the run's adapters ---- */

typedef struct sdw_lora_use {
    const sdw_lora_pack *pack; /* finished */
    float multiplier;          /* the request's m: y += m · (pack's scale·up·down) · x */
} sdw_lora_use;
typedef struct sdw_lora_run {
    const sdw_lora_use *use; /* borrowed while attached */
    int n;
} sdw_lora_run;

/* Makes run the calling thread's adapters (NULL: none) and returns the one it replaces, to
 * attach again when done. run (and its packs) must stay valid while attached. */
const sdw_lora_run *sdw_lora_attach(const sdw_lora_run *run);
/* The calling thread's adapters, or NULL. */
const sdw_lora_run *sdw_lora_current(void);
/* Adds every attached adapter of op to y (the layer's output, f32): nn/linear.c calls it after
 * the layer's own product when a run is attached. x is the layer's input view. */
void sdw__lora_apply(const sdw_lora_run *run, const struct sdw_backend_op *op, sdw_act x,
                     sdw_act y);

#endif
