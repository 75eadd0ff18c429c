/* models/lora_file.h — one LoRA file read into f32 modules (the formats: models/lora.h), and
 * the names a model's adaptable component goes by in such files.
 *
 *   sdw_lora_file *f;
 *   if (sdw_lora_file_load("detail.safetensors", &f, &err)) goto fail;
 *   const sdw_lora_module *mod = sdw_lora_file_find(f, &unet_part, "down_blocks.0....to_q");
 *   sdw_lora_file_merge(f, &unet_part, "down_blocks.0....to_q", 0.8f, w, out, in); // fuse_lora
 *   sdw_lora_file_destroy(f);
 *
 * Thread safety: a loaded file is read-only; every function is reentrant.
 */
#ifndef SDW_MODELS_LORA_FILE_H
#define SDW_MODELS_LORA_FILE_H

#include "core/common.h"
#include "io/weights.h"

#define SDW_LORA_MAX_NAMES 3

/* A component of a model that LoRAs adapt, with the names LoRA files give it. */
typedef struct sdw_lora_part {
    const char *component; /* "unet", "text_encoder", ...: for messages */
    /* Dotted prefixes (diffusers / PEFT: "unet" for unet.<layer>) and kohya prefixes
     * ("lora_unet" for lora_unet_<layer>), NULL-padded. */
    const char *dotted[SDW_LORA_MAX_NAMES];
    const char *kohya[SDW_LORA_MAX_NAMES];
    sdw_weights *ws; /* its bound layers (the registry of nn/lora.h); borrowed */
    /* (optional) Other names of its layers, NULL-padded: each is called with "<canonical
     * layer>.weight" and gives the alias's "<name>.weight" and the rows of it this layer is
     * (view.split / first / count, as a fused checkpoint tensor), or NULL for none. */
    sdw_name_view_fn alias[SDW_LORA_MAX_NAMES];
    void *alias_user[SDW_LORA_MAX_NAMES];
} sdw_lora_part;

/* Spelling i (0, 1, ...) that LoRA files give layer `name` (canonical, or an alias) of part,
 * into buf: the dotted ones first ("unet.<name>"), then kohya's ("lora_unet_<name, . -> _>").
 * Returns false when there is no spelling i (or it does not fit in cap). */
bool sdw_lora_key(const sdw_lora_part *part, const char *name, int i, char *buf, size_t cap);

/* ---- a LoRA file ---- */

typedef struct sdw_lora_module {
    const char *key; /* the module's name in the file (tensor name less its suffix) */
    const float *down; /* [rank, in·k·k] f32 (a lora_mid composed in) */
    const float *up;   /* [out, rank] f32 */
    int rank, out, in, k; /* k: kernel size of the down (1 for linear layers) */
    float scale;          /* alpha / rank, or 1 without alpha */
} sdw_lora_module;

typedef struct sdw_lora_file sdw_lora_file;

/* Reads and checks the LoRA file at path (every module converted to f32). *out is new: free
 * with sdw_lora_file_destroy. Errors name the file and the tensor. */
sdw_status sdw_lora_file_load(const char *path, sdw_lora_file **out, sdw_error *err);
void sdw_lora_file_destroy(sdw_lora_file *f); /* NULL ok */
int sdw_lora_file_count(const sdw_lora_file *f);
const sdw_lora_module *sdw_lora_file_module(const sdw_lora_file *f, int i); /* borrowed */
/* The module of f adapting layer `name` (canonical) of part (any of its dotted / kohya
 * spellings; aliases not consulted), or NULL. */
const sdw_lora_module *sdw_lora_file_find(const sdw_lora_file *f, const sdw_lora_part *part,
                                          const char *name);
/* The reference's fuse_lora for one layer: w [out, in·k·k] (the layer's weight, f32) +=
 * multiplier · scale · up · down of the module of f adapting `name` of part. Returns false
 * (w untouched) when no module adapts it or its shape is not w's. */
bool sdw_lora_file_merge(const sdw_lora_file *f, const sdw_lora_part *part, const char *name,
                         float multiplier, float *w, int out, int64_t in_k);

#endif
