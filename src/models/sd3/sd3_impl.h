/* models/sd3/sd3_impl.h — the SD3 family's private model struct, shared by its loader
 * (sd3_model.c) and its hooks into the generation core (sd3_denoise.c).
 *
 * An SD3 model is: CLIP-L and CLIP-G (penultimate hidden states side by side, zero-padded to
 * T5's width; their projected pooled outputs concatenated), T5 (its hidden states follow the
 * CLIP tokens along the sequence; zeros when run without it), the MMDiT transformer
 * (sd3_transformer.h), a 16-channel VAE with a latent shift, and a flow-matching schedule run
 * with classifier-free guidance. Everything but the transformer is shared with the other
 * families (text/clip_prompt.h, text/t5_prompt.h, models/components.h, nn/vae.h). */
#ifndef SDW_SD3_IMPL_H
#define SDW_SD3_IMPL_H

#include "models/diffusion.h"
#include "models/sd3/sd3_model.h"
#include "models/sd3/sd3_transformer.h"
#include "nn/vae.h"
#include "text/clip_prompt.h"
#include "text/t5_prompt.h"

#define SD3_T5_DEFAULT 256 /* StableDiffusion3Pipeline's max_sequence_length */
#define SD3_T5_MAX 512     /* its limit */

typedef struct sd3_model {
    sdw_diffusion d; /* first: the shared core */
    sdw_clip_prompt clip[2]; /* CLIP-L, CLIP-G (CLIPTextModelWithProjection) */
    sdw_t5_prompt t5;        /* t5.enc NULL: run without T5 (zeros in its place) */
    sdw_weights *w_dit;
    sdw_sd3_transformer *dit;
    sdw_weights *w_vae;
    sdw_vae_config vae_cfg; /* kept: an LDM-named VAE's name map reads it */
    sdw_vae *vae;           /* owned (d.vae borrows it) */
} sd3_model;

/* One request's conditioning, batch [uncond, cond] under CFG. */
typedef struct sd3_cond {
    int B, L;       /* batch; tokens: 77 CLIP + T5's window (or 77 zeros without T5) */
    float *context; /* [B, L, joint_dim] */
    float *pooled;  /* [B, pooled_dim] */
} sd3_cond;

extern const sdw_diffusion_ops sdw__sd3_hooks;

#endif
