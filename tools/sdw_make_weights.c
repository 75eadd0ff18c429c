/* sdw_make_weights — writes a full-size Stable Diffusion pipeline (SD 1.5 or SDXL base) with
 * random weights in the diffusers folder layout, for speed and memory work (speed does not
 * depend on weight values; real weights cannot be downloaded here). The architecture configs are
 * the public ones of runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-xl-base-1.0.
 *
 *   sdw_make_weights --out /tmp/sd15-random --tokenizer ../shared/fixtures/clip-tokenizer [--dtype f16]
 *   sdw_make_weights --arch sdxl --out /tmp/sdxl-random --tokenizer ../shared/fixtures/clip-tokenizer
 *   sdw_make_weights --out /tmp/sd15-fp8 --tokenizer ... --dtype bf16 --fp8 e4m3
 *
 * --fp8 e4m3|e5m2 stores every tensor of 2 or more dimensions (linear and convolution weights,
 * embedding tables: nearly all the bytes) as F8_E4M3 / F8_E5M2, the rest (biases, norm gains) in
 * --dtype; the values written are the random ones rounded to nearest even. The layers bound from
 * such a file keep those weights in 8 bits (nn/dnn.h), so it measures an fp8 model's memory and
 * speed.
 *
 * The tensor names and shapes come from binding each component against a random-weights source:
 * the same code that loads a real checkpoint decides what is written, so the two cannot drift.
 * Components are made one at a time (peak memory: the largest one in f32, 10.3 GB for SDXL's
 * UNet). */
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


/* stabilityai/stable-diffusion-xl-base-1.0 (diffusers 0.25 spelling). */
static const char g_xl_unet_json[] =
    "{\n  \"_class_name\": \"UNet2DConditionModel\",\n  \"_diffusers_version\": \"0.25.1\",\n"
    "  \"act_fn\": \"silu\",\n  \"addition_embed_type\": \"text_time\",\n"
    "  \"addition_embed_type_num_heads\": 64,\n  \"addition_time_embed_dim\": 256,\n"
    "  \"attention_head_dim\": [5, 10, 20],\n  \"block_out_channels\": [320, 640, 1280],\n"
    "  \"center_input_sample\": false,\n  \"cross_attention_dim\": 2048,\n"
    "  \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", "
    "\"CrossAttnDownBlock2D\"],\n"
    "  \"downsample_padding\": 1,\n  \"flip_sin_to_cos\": true,\n  \"freq_shift\": 0,\n"
    "  \"in_channels\": 4,\n  \"layers_per_block\": 2,\n  \"mid_block_scale_factor\": 1,\n"
    "  \"mid_block_type\": \"UNetMidBlock2DCrossAttn\",\n"
    "  \"norm_eps\": 1e-05,\n  \"norm_num_groups\": 32,\n  \"out_channels\": 4,\n"
    "  \"projection_class_embeddings_input_dim\": 2816,\n  \"sample_size\": 128,\n"
    "  \"transformer_layers_per_block\": [1, 2, 10],\n"
    "  \"up_block_types\": [\"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"UpBlock2D\"],\n"
    "  \"upcast_attention\": false,\n  \"use_linear_projection\": true\n}\n";
static const char g_xl_vae_json[] =
    "{\n  \"_class_name\": \"AutoencoderKL\",\n  \"_diffusers_version\": \"0.25.1\",\n"
    "  \"act_fn\": \"silu\",\n  \"block_out_channels\": [128, 256, 512, 512],\n"
    "  \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
    "\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],\n"
    "  \"force_upcast\": true,\n  \"in_channels\": 3,\n  \"latent_channels\": 4,\n"
    "  \"layers_per_block\": 2,\n  \"norm_num_groups\": 32,\n  \"out_channels\": 3,\n"
    "  \"sample_size\": 1024,\n  \"scaling_factor\": 0.13025,\n"
    "  \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
    "\"UpDecoderBlock2D\"]\n}\n";
/* SDXL's first encoder is SD 1.5's CLIP ViT-L (g_text_json); the second OpenCLIP ViT-bigG. */
static const char g_xl_text2_json[] =
    "{\n  \"architectures\": [\"CLIPTextModelWithProjection\"],\n  \"bos_token_id\": 0,\n"
    "  \"eos_token_id\": 2,\n  \"hidden_act\": \"gelu\",\n  \"hidden_size\": 1280,\n"
    "  \"intermediate_size\": 5120,\n  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 77,\n  \"model_type\": \"clip_text_model\",\n"
    "  \"num_attention_heads\": 20,\n  \"num_hidden_layers\": 32,\n  \"pad_token_id\": 1,\n"
    "  \"projection_dim\": 1280,\n  \"torch_dtype\": \"float32\",\n  \"vocab_size\": 49408\n}\n";
static const char g_xl_sched_json[] =
    "{\n  \"_class_name\": \"EulerDiscreteScheduler\",\n  \"_diffusers_version\": \"0.25.1\",\n"
    "  \"beta_end\": 0.012,\n  \"beta_schedule\": \"scaled_linear\",\n  \"beta_start\": 0.00085,\n"
    "  \"clip_sample\": false,\n  \"interpolation_type\": \"linear\",\n"
    "  \"num_train_timesteps\": 1000,\n  \"prediction_type\": \"epsilon\",\n"
    "  \"sample_max_value\": 1.0,\n  \"set_alpha_to_one\": false,\n"
    "  \"skip_prk_steps\": true,\n  \"steps_offset\": 1,\n  \"timestep_spacing\": \"leading\",\n"
    "  \"trained_betas\": null,\n  \"use_karras_sigmas\": false\n}\n";
static const char g_xl_index_json[] =
    "{\n  \"_class_name\": \"StableDiffusionXLPipeline\",\n  \"_diffusers_version\": \"0.25.1\",\n"
    "  \"force_zeros_for_empty_prompt\": true,\n"
    "  \"scheduler\": [\"diffusers\", \"EulerDiscreteScheduler\"],\n"
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
    "  \"text_encoder_2\": [\"transformers\", \"CLIPTextModelWithProjection\"],\n"
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"tokenizer_2\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n}\n";
/* OpenCLIP's tokenizer pads with id 0 ("!"), as the released tokenizer_2 says. */
static const char g_special_tokens_2_json[] =
    "{\"bos_token\": \"<|startoftext|>\", \"eos_token\": \"<|endoftext|>\", "
    "\"pad_token\": \"!\", \"unk_token\": \"<|endoftext|>\"}\n";

/* What one architecture writes. */
typedef struct arch {
    const char *name;
    const char *index, *unet, *vae, *text, *text2, *sched; /* text2 NULL: one encoder */
} arch;
static const arch g_archs[] = {
    {"sd15", g_index_json, g_unet_json, g_vae_json, g_text_json, NULL, g_sched_json},
    {"sdxl", g_xl_index_json, g_xl_unet_json, g_xl_vae_json, g_text_json, g_xl_text2_json,
     g_xl_sched_json},
};

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

/* The stored types: `base` for everything, except tensors of 2+ dimensions in `matrix` when
 * that is an fp8 type (--fp8). */
typedef struct storage {
    sdw_dtype base, matrix;
} storage;

static sdw_dtype pick_dtype(const char *name, int n_dims, const int64_t *shape, void *user) {
    const storage *s = user;
    return n_dims >= 2 ? s->matrix : s->base;
}

static void save(sdw_weights *ws, const char *dir, const char *file, storage dtype) {
    char p[4096];
    sdw_error err = {0};
    snprintf(p, sizeof p, "%s/%s", dir, file);
    fprintf(stderr, "writing %s (%zu parameters)\n", p, sdw_weights_n_params(ws));
    if (sdw_weights_save_mixed(ws, p, pick_dtype, &dtype, &err)) die(err.msg, NULL);
}

/* Binds a text encoder of config dir/sub/config.json against random weights and saves it. */
static void make_text(const char *out, const char *sub, uint64_t seed, storage dtype) {
    char p[4096];
    sdw_error err = {0};
    sdw_clip_text_config cfg;
    sdw_clip_text *enc = NULL;
    sdw_weights *ws = sdw_weights_create_random(seed);
    snprintf(p, sizeof p, "%s/%s/config.json", out, sub);
    if (sdw_clip_text_config_from_json(p, &cfg, &err) || sdw_clip_text_create(ws, &cfg, &enc, &err))
        die(err.msg, NULL);
    snprintf(p, sizeof p, "%s/%s", out, sub);
    save(ws, p, "model.safetensors", dtype);
    sdw_clip_text_destroy(enc);
    sdw_weights_destroy(ws);
}

static void write_tokenizer(const char *out, const char *sub, const char *tok, const char *special) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", out, sub);
    make_dir(out, sub);
    copy_file(tok, p, "vocab.json");
    copy_file(tok, p, "merges.txt");
    write_text(p, "special_tokens_map.json", special);
}

#define USAGE                                                                                      \
    "sdw_make_weights --out DIR --tokenizer DIR [--arch sd15|sdxl] [--dtype f16|bf16|f32] "        \
    "[--fp8 e4m3|e5m2]"

int main(int argc, char **argv) {
    const char *out = NULL, *tok = NULL, *dt = "f16", *arch_name = "sd15", *fp8 = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) tok = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dt = argv[++i];
        else if (!strcmp(argv[i], "--arch") && i + 1 < argc) arch_name = argv[++i];
        else if (!strcmp(argv[i], "--fp8") && i + 1 < argc) fp8 = argv[++i];
        else die("usage", USAGE);
    }
    if (!out || !tok) die("usage", USAGE);
    sdw_dtype dtype = !strcmp(dt, "f32") ? SDW_DTYPE_F32 : !strcmp(dt, "bf16") ? SDW_DTYPE_BF16
                                                                                : SDW_DTYPE_F16;
    if (strcmp(dt, "f16") && strcmp(dt, "bf16") && strcmp(dt, "f32")) die("unknown --dtype", dt);
    storage store = {dtype, dtype};
    if (fp8 && !strcmp(fp8, "e4m3")) store.matrix = SDW_DTYPE_F8_E4M3;
    else if (fp8 && !strcmp(fp8, "e5m2")) store.matrix = SDW_DTYPE_F8_E5M2;
    else if (fp8) die("unknown --fp8 (e4m3, e5m2)", fp8);
    const arch *a = NULL;
    for (size_t i = 0; i < SDW_ARRAY_LEN(g_archs); i++)
        if (!strcmp(arch_name, g_archs[i].name)) a = &g_archs[i];
    if (!a) die("unknown --arch (sd15, sdxl)", arch_name);

    char p[4096];
    sdw_error err = {0};
    make_dir(out, NULL);
    const char *subs[] = {"unet", "vae", "text_encoder", "scheduler"};
    for (size_t i = 0; i < SDW_ARRAY_LEN(subs); i++) make_dir(out, subs[i]);
    write_text(out, "model_index.json", a->index);
    write_text(out, "unet/config.json", a->unet);
    write_text(out, "vae/config.json", a->vae);
    write_text(out, "text_encoder/config.json", a->text);
    write_text(out, "scheduler/scheduler_config.json", a->sched);
    write_tokenizer(out, "tokenizer", tok, g_special_tokens_json);
    if (a->text2) {
        make_dir(out, "text_encoder_2");
        write_text(out, "text_encoder_2/config.json", a->text2);
        write_tokenizer(out, "tokenizer_2", tok, g_special_tokens_2_json);
    }

    /* Each component: parse the config just written, bind against random weights, save. */
    make_text(out, "text_encoder", 1, store);
    if (a->text2) make_text(out, "text_encoder_2", 4, store);
    {
        sdw_vae_config cfg;
        sdw_vae *vae = NULL;
        sdw_weights *ws = sdw_weights_create_random(2);
        if (sdw_vae_config_parse(a->vae, strlen(a->vae), &cfg, &err) ||
            sdw_vae_create(ws, &cfg, &vae, &err))
            die(err.msg, NULL);
        snprintf(p, sizeof p, "%s/vae", out);
        save(ws, p, "diffusion_pytorch_model.safetensors", store);
        sdw_vae_destroy(vae);
        sdw_weights_destroy(ws);
    }
    {
        sdw_unet_config cfg;
        sdw_unet *unet = NULL;
        sdw_weights *ws = sdw_weights_create_random(3);
        if (sdw_unet_config_parse(a->unet, &cfg, &err) || sdw_unet_create(ws, &cfg, &unet, &err))
            die(err.msg, NULL);
        snprintf(p, sizeof p, "%s/unet", out);
        save(ws, p, "diffusion_pytorch_model.safetensors", store);
        sdw_unet_destroy(unet);
        sdw_weights_destroy(ws);
    }
    fprintf(stderr, "done: %s\n", out);
    return 0;
}
