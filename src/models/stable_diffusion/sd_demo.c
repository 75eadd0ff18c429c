/* The built-in demo model: an SD 1.x-architecture pipeline at toy widths with deterministic
 * random weights and a byte-level vocabulary, made in memory at load. It lets a new user run the
 * whole tool with nothing downloaded; its images are coloured noise, and it says so. */
#include "models/stable_diffusion/sd_impl.h"

#include "nn/nn.h"

#include <string.h>

/* Toy widths chosen so a 256x256 image takes a few seconds on two cores; the VAE keeps SD's
 * factor 8 so sizes behave as with real models. */
static const char g_demo_unet[] =
    "{\"block_out_channels\": [32, 64], \"layers_per_block\": 1, \"attention_head_dim\": 4,"
    " \"cross_attention_dim\": 64, \"norm_num_groups\": 16,"
    " \"down_block_types\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\"],"
    " \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\"]}";
static const char g_demo_vae[] =
    "{\"block_out_channels\": [16, 16, 32, 32], \"layers_per_block\": 1, \"norm_num_groups\": 8,"
    " \"latent_channels\": 4, \"scaling_factor\": 0.18215,"
    " \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\","
    " \"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],"
    " \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\","
    " \"UpDecoderBlock2D\"]}";
#define DEMO_SEED 0x5d3f0a11u

sdw_status sdw__sd_load_demo(const sdw_load_options *opts, sdw_image_model **out,
                             sdw_error *err) {
    sd_model *m = sdw_xcalloc(1, sizeof *m);
    sdw_status s = sdw_diffusion_init(&m->d, &sdw__sd_ops, NULL, opts, err);
    if (s) goto fail;
    sd_text_encoder *te = &m->te[0];
    m->n_te = 1;
    m->pooled_te = -1;
    te->tokenizer = sdw_clip_tokenizer_create_byte_level();
    te->pad_id = sdw_clip_tokenizer_eos(te->tokenizer);
    te->params = sdw_clip_text_params_default();
    snprintf(te->tap, sizeof te->tap, "te");

    sdw_clip_text_config tcfg = {
        .vocab = sdw_clip_tokenizer_vocab_size(te->tokenizer),
        .hidden = 64,
        .n_layers = 2,
        .n_heads = 4,
        .intermediate = 128,
        .max_positions = SD_TEXT_WINDOW,
        .act = SDW_CLIP_ACT_QUICK_GELU,
        .eps = 1e-5f,
    };
    te->w = sdw_weights_create_random(DEMO_SEED);
    sdw_diffusion_weights(&m->d, te->w);
    m->w_unet = sdw_weights_create_random(DEMO_SEED + 1);
    sdw_diffusion_weights(&m->d, m->w_unet);
    m->w_vae = sdw_weights_create_random(DEMO_SEED + 2);
    sdw_diffusion_weights(&m->d, m->w_vae);
    if ((s = sdw_clip_text_create(te->w, &tcfg, &te->enc, err))) goto fail;
    if ((s = sdw_unet_config_parse(g_demo_unet, &m->unet_cfg, err))) goto fail;
    if ((s = sdw_unet_create(m->w_unet, &m->unet_cfg, &m->unet, err))) goto fail;
    if ((s = sdw_vae_config_parse(g_demo_vae, strlen(g_demo_vae), &m->vae_cfg, err))) goto fail;
    if ((s = sdw_vae_create(m->w_vae, &m->vae_cfg, &m->vae, err))) goto fail;
    m->d.sched = sdw_scheduler_config_sd15();
    if ((s = sdw__sd_finish_setup(m, opts, err))) goto fail;
    snprintf(m->d.variant, sizeof m->d.variant, "v1-demo");
    m->d.caps.default_width = m->d.caps.default_height = 256;
    m->d.caps.default_steps = 10; /* noise either way: keep the first run short */
    m->d.caps.default_sampler = "euler_a";
    *out = &m->d.base;
    return SDW_OK;
fail:
    sdw_error_prefix(err, "demo model");
    sdw__sd_destroy(&m->d.base);
    return s;
}
