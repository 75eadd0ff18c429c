/* io/weights.h — a model component's view of its tensors, by canonical (diffusers) name.
 *
 *   sdw_weights *ws = sdw_weights_create(file, "model.diffusion_model.", ldm_unet_map, NULL);
 *   const float *w = sdw_weights_f32(ws, "conv_in.weight", 4, (int64_t[]){320, 4, 3, 3}, &err);
 *   ...
 *   sdw_weights_destroy(ws);   // frees every buffer it handed out
 *
 * Model code always asks for the diffusers name. A name map (optional) translates it to the
 * name in the file (e.g. original LDM/CompVis names in single-file checkpoints); the prefix is
 * prepended after mapping. Tensors come back as f32 whatever the stored float dtype (F32, F16,
 * BF16, F64, F8_E4M3, F8_E5M2), in a buffer owned by the weights object. Shape and dtype are
 * checked; every error names the tensor and says expected vs actual. The object remembers which
 * tensors were used, so a loader can report leftovers. Not thread-safe while loading; the returned
 * buffers are read-only after.
 */
#ifndef SDW_IO_WEIGHTS_H
#define SDW_IO_WEIGHTS_H

#include "io/safetensors.h"
#include "sdw/precision.h"

/* Writes the file-side name for canonical name `name` into buf (cap bytes) and returns buf, or
 * returns NULL when the canonical tensor has no counterpart in this layout. */
typedef const char *(*sdw_name_map_fn)(const char *name, char *buf, size_t cap, void *user);

typedef struct sdw_weights sdw_weights;

/* file is borrowed (must outlive the weights); prefix may be "" ; map may be NULL (identity). */
sdw_weights *sdw_weights_create(const sdw_st_file *file, const char *prefix, sdw_name_map_fn map,
                                void *map_user);

/* How a canonical tensor is cut out of a stored one, for layouts that fuse or transpose what the
 * canonical layout keeps apart: OpenCLIP's attn.in_proj_weight is q, k and v stacked by rows
 * ({.split = 3, .first = 1} is k); its text_projection is applied as x @ P, i.e. stored as the
 * transpose of a Linear weight ({.transpose = true}). All zero = the stored tensor as it is. */
typedef struct sdw_weight_view {
    int split;      /* > 1: dim 0 of the stored tensor consists of `split` equal parts, */
    int first;      /*   of which parts [first, first + count) form the canonical tensor */
    int count;      /*   (0 means 1); dim 0 must be divisible by split */
    bool transpose; /* the (split) stored tensor is 2-D and holds the canonical's transpose */
} sdw_weight_view;

/* A name map that may also describe a view: like sdw_name_map_fn; *view arrives zeroed (the
 * whole tensor as stored) and is filled where the canonical tensor is only part of the stored
 * one. */
typedef const char *(*sdw_name_view_fn)(const char *name, char *buf, size_t cap,
                                        sdw_weight_view *view, void *user);

/* As sdw_weights_create with a view-aware map (must not be NULL). Views are applied at load:
 * sdw_weights_f32 checks the requested shape against the view's shape, converts only the
 * selected rows and transposes where asked; the buffer it returns is the canonical tensor. A
 * stored tensor is "used" once any view of it was loaded. */
sdw_weights *sdw_weights_create_viewed(const sdw_st_file *file, const char *prefix,
                                       sdw_name_view_fn map, void *map_user);
void sdw_weights_destroy(sdw_weights *ws); /* NULL ok */

/* A source with no file (for speed work at real shapes and for writing full-size test
 * checkpoints): every sdw_weights_f32 call returns deterministic pseudo-random values derived
 * from (seed, name) only — not from request order or thread count — with exactly the requested
 * shape (a -1 entry is SDW_E_INVALID_ARG here). Values keep untrained networks numerically sane:
 * 1-D "*.weight" (norm gains) 1 + 0.02·u, other 1-D/0-D (biases) 0.02·u, embedding tables
 * ("*embedding(s).weight") 0.02·N(0,1), other weights uniform(-1,1)·sqrt(3/fan_in) with fan_in =
 * product of the dims after the first; u is uniform in [-1,1).
 * sdw_weights_find returns NULL and sdw_weights_has false for every name, so models treat
 * optional tensors as absent; sdw_weights_unused is always 0. Free with sdw_weights_destroy. */
sdw_weights *sdw_weights_create_random(uint64_t seed);

/* The stored tensor for a canonical name, or NULL. Does not mark it used. With a view map this
 * is the whole stored tensor (e.g. the fused q|k|v): use sdw_weights_shape for the canonical
 * shape. */
const sdw_st_tensor *sdw_weights_find(const sdw_weights *ws, const char *name);
bool sdw_weights_has(const sdw_weights *ws, const char *name);

/* The shape sdw_weights_f32 would hand out for name (its view applied), without loading it.
 * Returns false (outputs untouched) when the tensor is absent or the view does not fit the
 * stored shape. */
bool sdw_weights_shape(const sdw_weights *ws, const char *name, int *n_dims,
                       int64_t shape[SDW_ST_MAX_DIMS]);

/* Declares the stored tensors whose names start with prefix + file_prefix as knowingly unused
 * (a layer the model drops, OpenCLIP's logit_scale): sdw_weights_unused no longer reports
 * them. They are not loaded and not counted as parameters. */
void sdw_weights_ignore(sdw_weights *ws, const char *file_prefix);

/* Loads canonical tensor `name` as f32 with exactly this shape (n_dims dims). Returns a buffer
 * owned by ws, or NULL with err set (missing: SDW_E_NOT_FOUND; shape: SDW_E_SHAPE; dtype not a
 * float type: SDW_E_FORMAT). A shape entry of -1 accepts any size in that dimension. Shapes that
 * differ only by size-1 dimensions are compatible ([C,C,1,1] 1x1-conv weights satisfy a request
 * for [C,C] and vice versa), since layouts store the same linear map either way. */
const float *sdw_weights_f32(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                             sdw_error *err);

/* A zeroed scratch buffer of n floats owned by ws (for repacked/derived weights). */
float *sdw_weights_alloc(sdw_weights *ws, size_t n);

/* As sdw_weights_f32 (same name resolution, shape check, errors, use marking and parameter
 * count), but without converting or copying: returns the stored elements in their file dtype
 * (*dtype: F32, F16, BF16, F64, F8_E4M3 or F8_E5M2; row-major in the file's shape, which equals the
 * requested one up to size-1 dimensions), *n elements. The pointer is into the file mapping
 * (borrowed: valid while the file is open; not necessarily aligned). The random source generates
 * the tensor as sdw_weights_f32 does and keeps it (F32). For layers that repack their weights
 * anyway, so no float32 copy is kept; call sdw_weights_raw_done after reading. */
const void *sdw_weights_raw(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                             sdw_dtype *dtype, size_t *n, sdw_error *err);
/* Done reading a viewed tensor: its mapped pages stop counting as resident memory (read back
 * from the file if touched again). No-op for names never viewed and for the random source. */
void sdw_weights_raw_done(sdw_weights *ws, const char *name);

/* Hands ws an object to free at sdw_weights_destroy (free_fn(p), in reverse order of adoption):
 * for packed weights derived at bind time, which live exactly as long as the weights. */
void sdw_weights_adopt(sdw_weights *ws, void *p, void (*free_fn)(void *));

/* The compute precision the layers bound from ws pack their weights for (a hint the nn layer
 * reads at bind time; the model loader sets it once, before binding). Default F32; AUTO is
 * treated as F32 (the loader resolves AUTO first). */
void sdw_weights_set_precision(sdw_weights *ws, sdw_precision p);
sdw_precision sdw_weights_precision(const sdw_weights *ws);

/* The nn backend (an sdw_backend *, opaque to this layer) that the layers bound from ws pack their
 * weights with and run on: the model's own, set by its loader before binding; NULL = the
 * process's default CPU backend. Borrowed: it must outlive every layer bound from ws. */
void sdw_weights_set_backend(sdw_weights *ws, void *backend);
void *sdw_weights_backend(const sdw_weights *ws);

/* The registry of the layers bound from ws (nn/lora.h: canonical name -> packed op, where LoRA
 * adapters find their layers), opaque to this layer: nn/ sets it at the first bind and hands it
 * to sdw_weights_adopt, so it is freed with ws. NULL until then. */
void sdw_weights_set_layers(sdw_weights *ws, void *layers);
void *sdw_weights_layers(const sdw_weights *ws);

/* Counts float tensors under the prefix that no sdw_weights_f32 call used (integer buffers such
 * as position_ids are not parameters and never count); writes up to a few of
 * their names into a message (buf) for a warning. */
int sdw_weights_unused(const sdw_weights *ws, char *buf, size_t cap);

/* Total number of float parameters handed out (for `sdw info`); a tensor requested twice counts
 * once (the second request returns the same buffer). */
size_t sdw_weights_n_params(const sdw_weights *ws);

/* Float elements of the stored tensors whose names start with prefix + file_prefix, loaded or
 * not (parameters a model binds later); 0 for the random source. */
size_t sdw_weights_stored_params(const sdw_weights *ws, const char *file_prefix);

/* Writes every tensor handed out so far by sdw_weights_f32 (not sdw_weights_alloc buffers) to a
 * new safetensors file at path: canonical names, in request order, requested shapes (the file's
 * shape where the request had a -1), values as handed out, stored as dtype (F32, F16, BF16,
 * F8_E4M3 or F8_E5M2; rounded as sdw_convert_from_f32 does; a finite value an 8-bit type cannot
 * hold fails with SDW_E_INVALID_ARG naming the tensor). Streams tensor by tensor; writes
 * path.tmp and renames it, so on failure no file is left. */
sdw_status sdw_weights_save(const sdw_weights *ws, const char *path, sdw_dtype dtype,
                            sdw_error *err);

/* Picks the stored dtype of one tensor (canonical name and shape as it will be written). */
typedef sdw_dtype (*sdw_dtype_pick_fn)(const char *name, int n_dims, const int64_t *shape,
                                       void *user);
/* As sdw_weights_save, with each tensor's dtype chosen by pick (one of the types above): e.g.
 * the 2-D and 4-D weights in F8_E4M3 and the biases and norm gains in BF16, as fp8 checkpoints
 * keep them. */
sdw_status sdw_weights_save_mixed(const sdw_weights *ws, const char *path, sdw_dtype_pick_fn pick,
                                  void *user, sdw_error *err);

#endif
