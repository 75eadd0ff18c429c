/* models/components.h — the pipeline components the transformer families share, loaded one way:
 * a CLIP or T5 text encoder with its tokenizer, and the autoencoder, each from a diffusers
 * folder's subfolder, from a weights file the user gave instead (--clip-l, --t5xxl, --vae), or
 * from a prefix inside an already open single checkpoint (Stability's SD3 files).
 *
 *   sdw_component_src src = {.root = dir, .sub = "text_encoder_2", .flag = "t5xxl",
 *                            .file = sdw_load_option(opts, "t5xxl")};
 *   if (sdw_component_t5(&m->d, &src, tokenizer_dir, &m->t5, &err)) goto fail;
 *
 * Configs: a folder's own component is described by its config.json; a component given as a
 * file (or inside a checkpoint) by its tensor shapes, with the folder's head count when the
 * folder describes the same widths (shapes cannot tell heads). Files are opened into the model
 * (d->files). Errors name the file and, when a component is missing, the option that would give
 * it. */
#ifndef SDW_MODELS_COMPONENTS_H
#define SDW_MODELS_COMPONENTS_H

#include "models/diffusion.h"
#include "text/clip_prompt.h"
#include "text/t5_prompt.h"

typedef struct sdw_component_src {
    const char *root;     /* a diffusers pipeline folder, or NULL */
    const char *sub;      /* the component's subfolder: "text_encoder", "vae" ... */
    const char *file;     /* a weights file given instead of the folder's, or NULL */
    const sdw_st_file *in; /* or: an open checkpoint holding it under `prefix` (NULL: none) */
    const char *prefix;   /* with `in`: the tensors' prefix ("text_encoders.clip_l.transformer.") */
    const char *flag;     /* the command-line option that gives `file` ("clip-l"), for messages */
} sdw_component_src;

/* Opens the component's weights: src->file, else <root>/<sub>/<stem> (sdw_diffusion_open_component).
 * Not for src->in. */
sdw_status sdw_component_open(sdw_diffusion *d, const sdw_component_src *src, const char *stem,
                              sdw_st_file **f, sdw_error *err);

/* A CLIP text encoder (transformers CLIPTextModel[WithProjection] names). tokenizer: the folder
 * with vocab.json/merges.txt. p->params and p->tap are the caller's (set them first); the
 * projection is kept when p->params.project_pooled, else ignored. */
sdw_status sdw_component_clip(sdw_diffusion *d, const sdw_component_src *src, const char *tokenizer,
                              sdw_clip_prompt *p, sdw_error *err);

/* A T5 encoder (transformers T5EncoderModel names); tokenizer: the folder with spiece.model.
 * p->tap is the caller's. */
sdw_status sdw_component_t5(sdw_diffusion *d, const sdw_component_src *src, const char *tokenizer,
                            sdw_t5_prompt *p, sdw_error *err);

/* The autoencoder (diffusers AutoencoderKL names, or LDM / BFL ae names detected from the
 * file), bound lazily (the encoder on first use). Its latent scaling and shift come from the
 * folder's vae/config.json when there is one, else scaling / shift (the family's released
 * values). *w, *cfg, *vae are the caller's to keep (destroy *vae, then *w). */
sdw_status sdw_component_vae(sdw_diffusion *d, const sdw_component_src *src, float scaling,
                             float shift, sdw_weights **w, sdw_vae_config *cfg, sdw_vae **vae,
                             sdw_error *err);

/* "<root>/<sub>/<leaf>" in buf when that file exists, else NULL (root may be NULL). */
const char *sdw_component_file(const char *root, const char *sub, const char *leaf, char *buf,
                               size_t cap);

#endif
