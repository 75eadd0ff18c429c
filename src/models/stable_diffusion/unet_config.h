/* models/stable_diffusion/unet_config.h — hyperparameters of diffusers' UNet2DConditionModel.
 *
 *   sdw_unet_config cfg;
 *   if (sdw_unet_config_load("model/unet/config.json", &cfg, &err)) goto fail;   // diffusers folder
 *   // or, for a single-file checkpoint (heads are not in the shapes, see below):
 *   if (sdw_unet_config_infer(file, "model.diffusion_model.", &cfg, &err)) goto fail;
 *   if (sdw_unet_config_set_heads(&cfg, 0, 64, &err)) goto fail;   // optional override
 *
 * One config covers SD 1.x, SD 2.x, SDXL (base) and inpainting UNets: everything that varies
 * between them is a field here; nothing downstream is hard-coded to one of them. Values the CPU
 * path does not implement are refused with SDW_E_UNSUPPORTED naming the key and its value.
 *
 * Level indexing: "down level i" is down_blocks.i (i = 0 is full resolution); "up level i" is
 * up_blocks.i (i = 0 is the deepest), as in diffusers. Up level i has the channels of down level
 * n_levels-1-i and layers_per_block[n_levels-1-i] + 1 resnets.
 *
 * Thread safety: plain data; the functions touch only their arguments.
 */
#ifndef SDW_MODELS_SD_UNET_CONFIG_H
#define SDW_MODELS_SD_UNET_CONFIG_H

#include "io/safetensors.h"

#define SDW_UNET_MAX_LEVELS 8

typedef struct sdw_unet_config {
    int in_channels;  /* 4; 9 for inpainting models (latents, mask, masked-image latents) */
    int out_channels; /* 4 */
    int n_levels;     /* len(block_out_channels) */
    int block_out_channels[SDW_UNET_MAX_LEVELS];
    int layers_per_block[SDW_UNET_MAX_LEVELS]; /* resnets per down level */
    bool down_attn[SDW_UNET_MAX_LEVELS];       /* CrossAttnDownBlock2D (else DownBlock2D) */
    bool up_attn[SDW_UNET_MAX_LEVELS];         /* CrossAttnUpBlock2D (else UpBlock2D), up order */
    /* Attention heads per down level (diffusers' num_attention_heads, which for SD models is
     * spelled `attention_head_dim` in config.json). Up level i uses heads[n_levels-1-i], the mid
     * block heads[n_levels-1]. 0 = unknown (single-file inference could not tell): create fails. */
    int heads[SDW_UNET_MAX_LEVELS];
    int down_depth[SDW_UNET_MAX_LEVELS]; /* transformer_layers_per_block, down order */
    int up_depth[SDW_UNET_MAX_LEVELS];   /* reverse_transformer_layers_per_block, up order */
    bool has_mid;                        /* UNetMidBlock2DCrossAttn (false: mid_block_type null) */
    int mid_depth;                       /* transformer layers of the mid block */
    int cross_attention_dim;             /* width of encoder_hidden_states */
    bool use_linear_projection;          /* proj_in/out Linear (SD2, SDXL) vs 1x1 conv (SD1) */
    bool upcast_attention;               /* recorded only: attention runs in f32 anyway */
    int norm_num_groups;                 /* GroupNorm groups (32) */
    float norm_eps;                      /* resnet / output GroupNorm eps (1e-5) */
    bool flip_sin_to_cos;                /* timestep embedding: cos half first */
    float freq_shift;                    /* timestep embedding downscale_freq_shift */
    int time_embed_dim;                  /* time_embedding_dim, default block_out_channels[0]*4 */
    int conv_in_kernel, conv_out_kernel; /* odd kernel sizes, padding (k-1)/2 */
    /* SDXL "text_time" added conditioning: emb += add_embedding(concat(text_embeds,
     * sinusoid(time_ids) of addition_time_embed_dim each)). */
    bool add_text_time;
    int addition_time_embed_dim; /* 256 in SDXL */
    int add_in_dim;              /* projection_class_embeddings_input_dim (2816 in SDXL base) */
    int add_text_dim;            /* width of text_embeds (pooled text projection, 1280) */
    int add_n_time_ids;          /* entries of time_ids (6 base, 5 refiner) */
} sdw_unet_config;

/* Parses a diffusers unet/config.json text. On success fills *cfg; on failure *cfg is
 * unspecified and err names the offending key and value (SDW_E_FORMAT for malformed JSON or
 * types, SDW_E_UNSUPPORTED for valid settings this implementation does not run).
 * With addition_embed_type "text_time", the text_embeds width is assumed to leave room for 6
 * time ids (SDXL base); a caller that knows the pooled width (e.g. 1280 for the refiner, which
 * sends 5 ids) sets add_text_dim / add_n_time_ids afterwards and re-validates. */
sdw_status sdw_unet_config_parse(const char *json_text, sdw_unet_config *cfg, sdw_error *err);
/* Reads and parses a config.json file (as sdw_unet_config_parse; errors prefixed by the path). */
sdw_status sdw_unet_config_load(const char *path, sdw_unet_config *cfg, sdw_error *err);

/* Infers the config of an original-layout (LDM / SGM) UNet from the tensor shapes under
 * `prefix` (e.g. "model.diffusion_model.") in a single-file checkpoint: channels from the
 * resnet and conv shapes, layers per block from the input_blocks layout, attention presence and
 * transformer depth per level, cross-attention width from attn2.to_k, linear vs conv projection
 * from proj_in's rank, in/out channels from the first/last conv, SDXL added conditioning from
 * label_emb. Fixed LDM facts: 32 groups, eps 1e-5, flip_sin_to_cos, freq_shift 0.
 *
 * Heads are NOT recorded in the shapes. Rule (what the released models use): conv projection
 * (SD 1.x) -> 8 heads in every block; linear projection (SD 2.x, SDXL) -> head size 64, i.e.
 * heads = channels / 64. Where the rule does not divide a level's channels, its heads stay 0
 * (unknown) and sdw_unet_create refuses until the caller sets them (sdw_unet_config_set_heads).
 * SDXL's addition_time_embed_dim comes from the pooled text projection found in the same file
 * (conditioner.embedders.N.model.text_projection), else 256 (the released value).
 * On failure *cfg is unspecified. */
sdw_status sdw_unet_config_infer(const sdw_st_file *f, const char *prefix, sdw_unet_config *cfg,
                                 sdw_error *err);

/* Overrides the heads of every level: exactly one of n_heads (same head count everywhere, SD 1
 * style) or head_dim (same head size, SD 2 / SDXL style) is non-zero. Fails with
 * SDW_E_INVALID_ARG, leaving cfg untouched, if a level with attention is not divisible. */
sdw_status sdw_unet_config_set_heads(sdw_unet_config *cfg, int n_heads, int head_dim,
                                     sdw_error *err);

/* Checks internal consistency (positive sizes, divisibility by groups and heads, the
 * text_time split). SDW_E_INVALID_ARG / SDW_E_UNSUPPORTED with a message on failure. */
sdw_status sdw_unet_config_validate(const sdw_unet_config *cfg, sdw_error *err);

#endif
