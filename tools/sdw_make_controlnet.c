/* sdw_make_controlnet — writes a full-size ControlNet with random weights in the diffusers
 * ControlNetModel folder layout (config.json + diffusion_pytorch_model.safetensors), for speed
 * and memory work with the full-size pipelines of sdw_make_weights (speed does not depend on
 * weight values; real weights cannot be downloaded here). The configs are the public ones of
 * lllyasviel/sd-controlnet-canny (SD 1.5) and diffusers/controlnet-canny-sdxl-1.0 (SDXL).
 *
 *   sdw_make_controlnet --out /tmp/sd15-controlnet [--arch sd15|sdxl] [--dtype f16|bf16|f32]
 *   sdw generate -m /tmp/sd15-random --control-net /tmp/sd15-controlnet --control-image e.png ...
 *
 * The tensor names and shapes come from binding the config against a random-weights source:
 * the code that loads a real ControlNet decides what is written. The folder is then loaded back
 * from disk (every tensor used). */
#include "core/common.h"
#include "io/weights.h"
#include "models/stable_diffusion/controlnet.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#define USAGE "sdw_make_controlnet --out DIR [--arch sd15|sdxl] [--dtype f16|bf16|f32]"

static const char g_sd15_json[] =
    "{\n  \"_class_name\": \"ControlNetModel\",\n  \"_diffusers_version\": \"0.25.1\",\n"
    "  \"act_fn\": \"silu\",\n  \"attention_head_dim\": 8,\n"
    "  \"block_out_channels\": [320, 640, 1280, 1280],\n  \"class_embed_type\": null,\n"
    "  \"conditioning_embedding_out_channels\": [16, 32, 96, 256],\n"
    "  \"controlnet_conditioning_channel_order\": \"rgb\",\n  \"cross_attention_dim\": 768,\n"
    "  \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", "
    "\"CrossAttnDownBlock2D\", \"DownBlock2D\"],\n"
    "  \"downsample_padding\": 1,\n  \"flip_sin_to_cos\": true,\n  \"freq_shift\": 0,\n"
    "  \"in_channels\": 4,\n  \"layers_per_block\": 2,\n  \"mid_block_scale_factor\": 1,\n"
    "  \"norm_eps\": 1e-05,\n  \"norm_num_groups\": 32,\n  \"num_class_embeds\": null,\n"
    "  \"only_cross_attention\": false,\n  \"projection_class_embeddings_input_dim\": null,\n"
    "  \"resnet_time_scale_shift\": \"default\",\n  \"upcast_attention\": false,\n"
    "  \"use_linear_projection\": false\n}\n";
static const char g_sdxl_json[] =
    "{\n  \"_class_name\": \"ControlNetModel\",\n  \"_diffusers_version\": \"0.25.1\",\n"
    "  \"act_fn\": \"silu\",\n  \"addition_embed_type\": \"text_time\",\n"
    "  \"addition_embed_type_num_heads\": 64,\n  \"addition_time_embed_dim\": 256,\n"
    "  \"attention_head_dim\": [5, 10, 20],\n  \"block_out_channels\": [320, 640, 1280],\n"
    "  \"conditioning_embedding_out_channels\": [16, 32, 96, 256],\n"
    "  \"controlnet_conditioning_channel_order\": \"rgb\",\n  \"cross_attention_dim\": 2048,\n"
    "  \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", "
    "\"CrossAttnDownBlock2D\"],\n"
    "  \"downsample_padding\": 1,\n  \"flip_sin_to_cos\": true,\n  \"freq_shift\": 0,\n"
    "  \"in_channels\": 4,\n  \"layers_per_block\": 2,\n  \"mid_block_scale_factor\": 1,\n"
    "  \"norm_eps\": 1e-05,\n  \"norm_num_groups\": 32,\n"
    "  \"projection_class_embeddings_input_dim\": 2816,\n"
    "  \"resnet_time_scale_shift\": \"default\",\n"
    "  \"transformer_layers_per_block\": [1, 2, 10],\n  \"upcast_attention\": null,\n"
    "  \"use_linear_projection\": true\n}\n";

static void die(const char *what, const char *detail) {
    fprintf(stderr, "sdw_make_controlnet: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    exit(1);
}

int main(int argc, char **argv) {
    const char *out = NULL, *arch = "sd15", *dt = "f16";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--arch") && i + 1 < argc) arch = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dt = argv[++i];
        else die("usage", USAGE);
    }
    if (!out) die("usage", USAGE);
    const char *json = !strcmp(arch, "sd15") ? g_sd15_json : !strcmp(arch, "sdxl") ? g_sdxl_json
                                                                                  : NULL;
    if (!json) die("unknown --arch (sd15, sdxl)", arch);
    const sdw_dtype dtype = !strcmp(dt, "f32")    ? SDW_DTYPE_F32
                            : !strcmp(dt, "bf16") ? SDW_DTYPE_BF16
                            : !strcmp(dt, "f16")  ? SDW_DTYPE_F16
                                                  : (die("unknown --dtype (f16, bf16, f32)", dt),
                                                     SDW_DTYPE_F16);
    if (mkdir(out, 0755) != 0 && errno != EEXIST) die(strerror(errno), out);
    char cfg_path[4096], w_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", out);
    snprintf(w_path, sizeof w_path, "%s/diffusion_pytorch_model.safetensors", out);
    FILE *f = fopen(cfg_path, "w");
    if (!f || fputs(json, f) < 0 || fclose(f) != 0) die("cannot write", cfg_path);

    sdw_error err = {0};
    sdw_controlnet_config cfg;
    if (sdw_controlnet_config_load(cfg_path, &cfg, &err)) die(err.msg, NULL);
    sdw_weights *ws = sdw_weights_create_random(0x5eed);
    sdw_controlnet *cn = NULL;
    if (sdw_controlnet_create(ws, &cfg, &cn, &err)) die(err.msg, NULL);
    const size_t n = sdw_controlnet_n_params(cn);
    sdw_controlnet_destroy(cn);
    if (sdw_weights_save(ws, w_path, dtype, &err)) die(err.msg, NULL);
    sdw_weights_destroy(ws);

    /* load it back: every tensor bound, none left over */
    sdw_st_file *file = NULL;
    if (sdw_st_open(w_path, &file, &err)) die(err.msg, NULL);
    ws = sdw_weights_create(file, "", NULL, NULL);
    if (sdw_controlnet_create(ws, &cfg, &cn, &err)) die(err.msg, NULL);
    char unused[256];
    if (sdw_weights_unused(ws, unused, sizeof unused)) die("tensors left unused", unused);
    sdw_controlnet_destroy(cn);
    sdw_weights_destroy(ws);
    sdw_st_close(file);
    fprintf(stderr, "wrote %s: %s ControlNet, %zu parameters (%s)\n", out, arch, n, dt);
    return 0;
}
