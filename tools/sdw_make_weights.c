/* sdw_make_weights — writes a full-size Stable Diffusion 1.5 pipeline with random weights in the
 * diffusers folder layout, for speed and memory work (speed does not depend on weight values;
 * real weights cannot be downloaded here). The architecture configs are the public SD 1.5 ones.
 *
 *   sdw_make_weights --out /tmp/sd15-random --tokenizer ../shared/fixtures/clip-tokenizer [--dtype f16]
 *
 * The tensor names and shapes come from binding each component against a random-weights source:
 * the same code that loads a real checkpoint decides what is written, so the two cannot drift. */
#include "core/common.h"
#include "io/weights.h"
#include "models/stable_diffusion/unet.h"
#include "nn/vae.h"
#include "text/clip_text.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

static const char g_unet_json[] =
    "{\n  \"_class_name\": \"UNet2DConditionModel\",\n  \"_diffusers_version\": \"0.25.1\",\n"
    "  \"act_fn\": \"silu\",\n  \"attention_head_dim\": 8,\n"
    "  \"block_out_channels\": [320, 640, 1280, 1280],\n  \"center_input_sample\": false,\n"
    "  \"cross_attention_dim\": 768,\n"
    "  \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", "
    "\"CrossAttnDownBlock2D\", \"DownBlock2D\"],\n"
    "  \"downsample_padding\": 1,\n  \"flip_sin_to_cos\": true,\n  \"freq_shift\": 0,\n"
    "  \"in_channels\": 4,\n  \"layers_per_block\": 2,\n  \"mid_block_scale_factor\": 1,\n"
    "  \"norm_eps\": 1e-05,\n  \"norm_num_groups\": 32,\n  \"out_channels\": 4,\n"
    "  \"sample_size\": 64,\n"
    "  \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", "
    "\"CrossAttnUpBlock2D\"]\n}\n";
static const char g_vae_json[] =
    "{\n  \"_class_name\": \"AutoencoderKL\",\n  \"_diffusers_version\": \"0.25.1\",\n"
    "  \"act_fn\": \"silu\",\n  \"block_out_channels\": [128, 256, 512, 512],\n"
    "  \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
    "\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],\n"
    "  \"in_channels\": 3,\n  \"latent_channels\": 4,\n  \"layers_per_block\": 2,\n"
    "  \"norm_num_groups\": 32,\n  \"out_channels\": 3,\n  \"sample_size\": 512,\n"
    "  \"scaling_factor\": 0.18215,\n"
    "  \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
    "\"UpDecoderBlock2D\"]\n}\n";
static const char g_text_json[] =
    "{\n  \"architectures\": [\"CLIPTextModel\"],\n  \"bos_token_id\": 0,\n"
    "  \"eos_token_id\": 2,\n  \"hidden_act\": \"quick_gelu\",\n  \"hidden_size\": 768,\n"
    "  \"intermediate_size\": 3072,\n  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 77,\n  \"model_type\": \"clip_text_model\",\n"
    "  \"num_attention_heads\": 12,\n  \"num_hidden_layers\": 12,\n  \"pad_token_id\": 1,\n"
    "  \"projection_dim\": 768,\n  \"torch_dtype\": \"float32\",\n  \"vocab_size\": 49408\n}\n";
static const char g_sched_json[] =
    "{\n  \"_class_name\": \"PNDMScheduler\",\n  \"_diffusers_version\": \"0.25.1\",\n"
    "  \"beta_end\": 0.012,\n  \"beta_schedule\": \"scaled_linear\",\n  \"beta_start\": 0.00085,\n"
    "  \"clip_sample\": false,\n  \"num_train_timesteps\": 1000,\n"
    "  \"prediction_type\": \"epsilon\",\n  \"set_alpha_to_one\": false,\n"
    "  \"skip_prk_steps\": true,\n  \"steps_offset\": 1,\n  \"timestep_spacing\": \"leading\",\n"
    "  \"trained_betas\": null\n}\n";
static const char g_index_json[] =
    "{\n  \"_class_name\": \"StableDiffusionPipeline\",\n  \"_diffusers_version\": \"0.25.1\",\n"
    "  \"requires_safety_checker\": false,\n"
    "  \"scheduler\": [\"diffusers\", \"PNDMScheduler\"],\n"
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n}\n";
static const char g_special_tokens_json[] =
    "{\"bos_token\": \"<|startoftext|>\", \"eos_token\": \"<|endoftext|>\", "
    "\"pad_token\": \"<|endoftext|>\", \"unk_token\": \"<|endoftext|>\"}\n";

static void die(const char *what, const char *detail) {
    fprintf(stderr, "sdw_make_weights: error: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    exit(1);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) die(p, strerror(errno));
}

static void make_dir(const char *dir, const char *sub) {
    char p[4096];
    snprintf(p, sizeof p, "%s%s%s", dir, sub ? "/" : "", sub ? sub : "");
    if (mkdir(p, 0755) != 0 && errno != EEXIST) die(p, strerror(errno));
}

static void copy_file(const char *src_dir, const char *dst_dir, const char *name) {
    char s[4096], d[4096];
    snprintf(s, sizeof s, "%s/%s", src_dir, name);
    snprintf(d, sizeof d, "%s/%s", dst_dir, name);
    char *buf = NULL;
    size_t len = 0;
    sdw_error err = {0};
    if (sdw_read_file(s, &buf, &len, &err)) die(err.msg, NULL);
    FILE *f = fopen(d, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) die(d, strerror(errno));
    free(buf);
}

static void save(sdw_weights *ws, const char *dir, const char *file, sdw_dtype dtype) {
    char p[4096];
    sdw_error err = {0};
    snprintf(p, sizeof p, "%s/%s", dir, file);
    fprintf(stderr, "writing %s (%.0fM parameters)\n", p, sdw_weights_n_params(ws) / 1e6);
    if (sdw_weights_save(ws, p, dtype, &err)) die(err.msg, NULL);
}

int main(int argc, char **argv) {
    const char *out = NULL, *tok = NULL, *dt = "f16";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) tok = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dt = argv[++i];
        else die("usage", "sdw_make_weights --out DIR --tokenizer DIR [--dtype f16|bf16|f32]");
    }
    if (!out || !tok) die("usage", "sdw_make_weights --out DIR --tokenizer DIR [--dtype f16|bf16|f32]");
    sdw_dtype dtype = !strcmp(dt, "f32") ? SDW_DTYPE_F32 : !strcmp(dt, "bf16") ? SDW_DTYPE_BF16
                                                                                : SDW_DTYPE_F16;
    if (strcmp(dt, "f16") && strcmp(dt, "bf16") && strcmp(dt, "f32")) die("unknown --dtype", dt);

    char p[4096];
    sdw_error err = {0};
    make_dir(out, NULL);
    const char *subs[] = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"};
    for (size_t i = 0; i < SDW_ARRAY_LEN(subs); i++) make_dir(out, subs[i]);
    write_text(out, "model_index.json", g_index_json);
    write_text(out, "unet/config.json", g_unet_json);
    write_text(out, "vae/config.json", g_vae_json);
    write_text(out, "text_encoder/config.json", g_text_json);
    write_text(out, "scheduler/scheduler_config.json", g_sched_json);
    snprintf(p, sizeof p, "%s/tokenizer", out);
    copy_file(tok, p, "vocab.json");
    copy_file(tok, p, "merges.txt");
    write_text(p, "special_tokens_map.json", g_special_tokens_json);

    /* Each component: parse the config just written, bind against random weights, save. */
    {
        sdw_clip_text_config cfg;
        sdw_clip_text *enc = NULL;
        sdw_weights *ws = sdw_weights_create_random(1);
        snprintf(p, sizeof p, "%s/text_encoder/config.json", out);
        if (sdw_clip_text_config_from_json(p, &cfg, &err) || sdw_clip_text_create(ws, &cfg, &enc, &err))
            die(err.msg, NULL);
        snprintf(p, sizeof p, "%s/text_encoder", out);
        save(ws, p, "model.safetensors", dtype);
        sdw_clip_text_destroy(enc);
        sdw_weights_destroy(ws);
    }
    {
        sdw_vae_config cfg;
        sdw_vae *vae = NULL;
        sdw_weights *ws = sdw_weights_create_random(2);
        if (sdw_vae_config_parse(g_vae_json, strlen(g_vae_json), &cfg, &err) ||
            sdw_vae_create(ws, &cfg, &vae, &err))
            die(err.msg, NULL);
        snprintf(p, sizeof p, "%s/vae", out);
        save(ws, p, "diffusion_pytorch_model.safetensors", dtype);
        sdw_vae_destroy(vae);
        sdw_weights_destroy(ws);
    }
    {
        sdw_unet_config cfg;
        sdw_unet *unet = NULL;
        sdw_weights *ws = sdw_weights_create_random(3);
        if (sdw_unet_config_parse(g_unet_json, &cfg, &err) || sdw_unet_create(ws, &cfg, &unet, &err))
            die(err.msg, NULL);
        snprintf(p, sizeof p, "%s/unet", out);
        save(ws, p, "diffusion_pytorch_model.safetensors", dtype);
        sdw_unet_destroy(unet);
        sdw_weights_destroy(ws);
    }
    fprintf(stderr, "done: %s\n", out);
    return 0;
}
