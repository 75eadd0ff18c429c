/* models/flux/flux_impl.h — the FLUX family's private model struct, shared by its loader
 * (flux_model.c: folders, single files, identity) and its hooks into the generation core
 * (flux_denoise.c: conditioning and the transformer call). The run itself is the shared core
 * (models/diffusion.c).
 *
 * A FLUX model is: CLIP-L (its pooled output only), T5 (its last hidden state is the
 * transformer's context), the MMDiT-style transformer over 2x2-packed latents, a 16-channel
 * VAE with a latent shift, and a flow-matching schedule. dev embeds the guidance value (no CFG
 * pass); schnell takes no guidance at all. */
#ifndef SDW_FLUX_IMPL_H
#define SDW_FLUX_IMPL_H

#include "models/diffusion.h"
#include "models/flux/flux_model.h"
#include "models/flux/flux_transformer.h"
#include "nn/vae.h"
#include "text/clip_prompt.h"
#include "text/t5_prompt.h"

#define FLUX_T5_MAX 512 /* FluxPipeline's max_sequence_length: its default and its limit */

typedef struct flux_model {
    sdw_diffusion d; /* first: the shared core */

    sdw_clip_prompt clip; /* CLIP-L: its pooled output only */

    sdw_t5_prompt t5; /* its last hidden state is the transformer's context */

    sdw_weights *w_dit;
    sdw_flux_transformer *dit;

    sdw_weights *w_vae;
    sdw_vae_config vae_cfg; /* kept: the LDM name map of a BFL ae file reads it */
    sdw_vae *vae;           /* owned (d.vae borrows it) */
} flux_model;

/* The conditioning of one request (FluxPipeline.encode_prompt): CLIP's pooled output and T5's
 * hidden states of the prompt (one batch row: FLUX runs no unconditional pass), the guidance. */
typedef struct flux_cond {
    int L;            /* T5 tokens (the request's max_sequence_length) */
    float *context;   /* [1, L, joint_dim] */
    float *pooled;    /* [1, pooled_dim] */
    float guidance;   /* the embedded guidance value (dev) */
} flux_cond;

extern const sdw_diffusion_ops sdw__flux_hooks;

#endif
