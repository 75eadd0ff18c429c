/* AutoencoderKL against the diffusers goldens: decode (vae.decode.z -> vae.decode.out) and
 * encode (vae.encode.0.image -> mean/std), through diffusers folders and single files with
 * inferred configs; plus config parsing and the LDM name map. */
#include "sdw_test.h"

#include "nn/ldm_vae_names.h"
#include "nn/nn.h"
#include "nn/vae.h"
#include "nn/vae_impl.h"

#include <stdlib.h>

#define TOL 1e-4

/* A VAE loaded from a folder (config.json + safetensors) or from a single file. */
typedef struct loaded {
    sdw_st_file *file;
    sdw_weights *ws;
    sdw_vae_config cfg;
    sdw_vae *vae;
} loaded;

static void unload(loaded *l) {
    sdw_vae_destroy(l->vae);
    sdw_weights_destroy(l->ws);
    sdw_st_close(l->file);
    memset(l, 0, sizeof *l);
}

/* lazy: the encoder bound on first use (sdw_vae_create_lazy), else with the decoder. */
static sdw_status load_folder(loaded *l, const char *model, bool lazy, sdw_error *err) {
    memset(l, 0, sizeof *l);
    sdw_status st = sdw_vae_config_load(sdw_test_path("models/%s/vae/config.json", model), &l->cfg,
                                        err);
    if (st) return st;
    st = sdw_st_open(sdw_test_path("models/%s/vae/diffusion_pytorch_model.safetensors", model),
                     &l->file, err);
    if (st) return st;
    l->ws = sdw_weights_create(l->file, "", NULL, NULL);
    return (lazy ? sdw_vae_create_lazy : sdw_vae_create)(l->ws, &l->cfg, &l->vae, err);
}

static sdw_status load_single(loaded *l, const char *file, const char *prefix, bool lazy,
                              sdw_error *err) {
    memset(l, 0, sizeof *l);
    sdw_status st = sdw_st_open(sdw_test_path("models/%s", file), &l->file, err);
    if (st) return st;
    if ((st = sdw_vae_config_infer(l->file, prefix, &l->cfg, err))) return st;
    if (!sdw_vae_file_is_ldm(l->file, prefix))
        return sdw_error_set(err, SDW_E_FORMAT, "%s: expected LDM names", file);
    /* cfg must stay put while ws lives: the map reads n_levels through this pointer. */
    l->ws = sdw_weights_create(l->file, prefix, sdw_ldm_vae_name, &l->cfg);
    return (lazy ? sdw_vae_create_lazy : sdw_vae_create)(l->ws, &l->cfg, &l->vae, err);
}

/* Decodes golden vae.decode.z (batch 1) and compares with vae.decode.out. */
static void check_decode(loaded *l, const char *golden_case) {
    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g);
    const sdw_golden_tensor *z = sdw_golden_get(g, "vae.decode.z");
    const sdw_golden_tensor *ref = sdw_golden_get(g, "vae.decode.out");
    ASSERT_TRUE(z && ref && z->n_dims == 4 && ref->n_dims == 4);
    const int s = sdw_vae_downscale(l->vae);
    ASSERT_EQ_INT(z->shape[1], l->cfg.latent_channels);
    ASSERT_EQ_INT(ref->shape[2], z->shape[2] * s);
    float *zn = sdw_golden_nhwc(z), *refn = sdw_golden_nhwc(ref);
    float *out = malloc(ref->n * sizeof(float));
    sdw_vae_decode(l->vae, zn, (int)z->shape[0], (int)z->shape[2], (int)z->shape[3], out);
    double e = sdw_test_rel_err(out, refn, ref->n);
    free(zn);
    free(refn);
    free(out);
    sdw_golden_close(g);
    if (!(e <= TOL)) sdw_test_fail(__FILE__, __LINE__, "%s decode: rel err %.3g", golden_case, e);
}

/* Encodes golden vae.encode.0.image and compares mean and std. */
static void check_encode(loaded *l, const char *golden_case) {
    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g);
    const sdw_golden_tensor *img = sdw_golden_get(g, "vae.encode.0.image");
    const sdw_golden_tensor *mean = sdw_golden_get(g, "vae.encode.0.mean");
    const sdw_golden_tensor *std = sdw_golden_get(g, "vae.encode.0.std");
    ASSERT_TRUE(img && mean && std && img->n_dims == 4);
    float *imgn = sdw_golden_nhwc(img), *mref = sdw_golden_nhwc(mean), *sref = sdw_golden_nhwc(std);
    float *m = malloc(mean->n * sizeof(float)), *sd = malloc(std->n * sizeof(float));
    sdw_error err = {0};
    sdw_status st = sdw_vae_encode(l->vae, imgn, (int)img->shape[0], (int)img->shape[2],
                                   (int)img->shape[3], m, sd, &err);
    double em = st ? 1e9 : sdw_test_rel_err(m, mref, mean->n);
    double es = st ? 1e9 : sdw_test_rel_err(sd, sref, std->n);
    free(imgn);
    free(mref);
    free(sref);
    free(m);
    free(sd);
    sdw_golden_close(g);
    if (st) sdw_test_fail(__FILE__, __LINE__, "%s encode: %s", golden_case, err.msg);
    else if (!(em <= TOL && es <= TOL))
        sdw_test_fail(__FILE__, __LINE__, "%s encode: rel err mean %.3g std %.3g", golden_case,
                      em, es);
}

static void test_sd15_folder_decode(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded l;
    sdw_status st = load_folder(&l, "tiny-sd15", false, e);
    if (st) unload(&l);
    ASSERT_OK(st, e);
    check_decode(&l, "tiny-sd15/txt2img-ddim");
    unload(&l);
}

static void test_sd15_single_decode(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded l;
    sdw_status st = load_single(&l, "tiny-sd15.safetensors", "first_stage_model.", false, e);
    if (st) unload(&l);
    ASSERT_OK(st, e);
    check_decode(&l, "tiny-sd15/txt2img-ddim");
    unload(&l);
}

static void test_sd15_folder_encode(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded l;
    sdw_status st = load_folder(&l, "tiny-sd15", false, e);
    if (st) unload(&l);
    ASSERT_OK(st, e);
    check_encode(&l, "tiny-sd15/img2img-ddim");
    check_decode(&l, "tiny-sd15/img2img-ddim");
    unload(&l);
}

static void test_sd15_single_encode(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded l;
    sdw_status st = load_single(&l, "tiny-sd15.safetensors", "first_stage_model.", false, e);
    if (st) unload(&l);
    ASSERT_OK(st, e);
    check_encode(&l, "tiny-sd15/img2img-ddim");
    unload(&l);
}

/* A batch of two different latents decodes to the two single decodes (group norm, attention
 * and convs must keep images apart). */
static void test_batch_decode(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded l;
    sdw_status st = load_folder(&l, "tiny-sd15", false, e);
    if (st) unload(&l);
    ASSERT_OK(st, e);
    sdw_golden *g1 = sdw_golden_open("tiny-sd15/txt2img-ddim");
    sdw_golden *g2 = sdw_golden_open("tiny-sd15/img2img-ddim");
    const sdw_golden_tensor *z1 = g1 ? sdw_golden_get(g1, "vae.decode.z") : NULL;
    const sdw_golden_tensor *z2 = g2 ? sdw_golden_get(g2, "vae.decode.z") : NULL;
    const sdw_golden_tensor *r1 = g1 ? sdw_golden_get(g1, "vae.decode.out") : NULL;
    const sdw_golden_tensor *r2 = g2 ? sdw_golden_get(g2, "vae.decode.out") : NULL;
    bool ok = z1 && z2 && r1 && r2 && z1->n == z2->n && r1->n == r2->n;
    double e1 = 1e9, e2 = 1e9;
    if (ok) {
        float *z = malloc(2 * z1->n * sizeof(float)), *ref = malloc(2 * r1->n * sizeof(float));
        float *a = sdw_golden_nhwc(z1), *b = sdw_golden_nhwc(z2);
        memcpy(z, a, z1->n * sizeof(float));
        memcpy(z + z1->n, b, z1->n * sizeof(float));
        free(a);
        free(b);
        float *out = malloc(2 * r1->n * sizeof(float));
        sdw_vae_decode(l.vae, z, 2, (int)z1->shape[2], (int)z1->shape[3], out);
        a = sdw_golden_nhwc(r1);
        b = sdw_golden_nhwc(r2);
        e1 = sdw_test_rel_err(out, a, r1->n);
        e2 = sdw_test_rel_err(out + r1->n, b, r1->n);
        free(a);
        free(b);
        free(z);
        free(ref);
        free(out);
    }
    sdw_golden_close(g1);
    sdw_golden_close(g2);
    unload(&l);
    ASSERT_TRUE(ok);
    if (!(e1 <= TOL && e2 <= TOL))
        sdw_test_fail(__FILE__, __LINE__, "batch decode: rel err %.3g / %.3g", e1, e2);
}

static void test_sdxl(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded l;
    sdw_status st = load_folder(&l, "tiny-sdxl", false, e);
    if (st) unload(&l);
    ASSERT_OK(st, e);
    ASSERT_TRUE(fabsf(l.cfg.scaling_factor - 0.13025f) < 1e-7f);
    check_decode(&l, "tiny-sdxl/txt2img-euler");
    check_encode(&l, "tiny-sdxl/img2img-euler_a");
    unload(&l);
}

/* The float16 SGM single file, against the golden computed from those fp16 weights. */
static void test_sdxl_single_fp16(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded l;
    sdw_status st = load_single(&l, "tiny-sdxl.safetensors", "first_stage_model.", false, e);
    if (st) unload(&l);
    ASSERT_OK(st, e);
    check_decode(&l, "tiny-sdxl-single/txt2img-euler");
    unload(&l);
}

static void test_flux_folder(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded l;
    sdw_status st = load_folder(&l, "tiny-flux", false, e);
    if (st) unload(&l);
    ASSERT_OK(st, e);
    ASSERT_TRUE(!l.cfg.use_quant_conv && !l.cfg.use_post_quant_conv);
    ASSERT_TRUE(fabsf(l.cfg.shift_factor - 0.1159f) < 1e-7f);
    check_decode(&l, "tiny-flux/txt2img-flowmatch");
    unload(&l);
}

/* BFL ae.safetensors layout: LDM names, no prefix, no quant convs. */
static void test_flux_bfl_file(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded l;
    sdw_status st = load_single(&l, "flux-tiny-ae.safetensors", "", false, e);
    if (st) unload(&l);
    ASSERT_OK(st, e);
    ASSERT_TRUE(!l.cfg.use_quant_conv && !l.cfg.use_post_quant_conv);
    check_decode(&l, "tiny-flux/txt2img-flowmatch");
    unload(&l);
}

static void test_config_infer_matches_folder(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    sdw_vae_config want, got;
    ASSERT_OK(sdw_vae_config_load(sdw_test_path("models/tiny-sd15/vae/config.json"), &want, e), e);
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-sd15.safetensors"), &f, e), e);
    sdw_status st = sdw_vae_config_infer(f, "first_stage_model.", &got, e);
    sdw_status st2 = sdw_vae_config_infer(f, "model.diffusion_model.", &(sdw_vae_config){0}, NULL);
    sdw_st_close(f);
    ASSERT_OK(st, e);
    ASSERT_EQ_INT(st2, SDW_E_NOT_FOUND);
    ASSERT_EQ_INT(got.in_channels, want.in_channels);
    ASSERT_EQ_INT(got.out_channels, want.out_channels);
    ASSERT_EQ_INT(got.latent_channels, want.latent_channels);
    ASSERT_EQ_INT(got.n_levels, want.n_levels);
    for (int i = 0; i < want.n_levels; i++)
        ASSERT_EQ_INT(got.block_out_channels[i], want.block_out_channels[i]);
    ASSERT_EQ_INT(got.layers_per_block, want.layers_per_block);
    ASSERT_TRUE(got.use_quant_conv && got.use_post_quant_conv && got.mid_block_attention);

    /* The diffusers-named folder file infers the same. */
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-sd15/vae/diffusion_pytorch_model.safetensors"),
                          &f, e),
              e);
    ASSERT_TRUE(!sdw_vae_file_is_ldm(f, ""));
    st = sdw_vae_config_infer(f, "", &got, e);
    sdw_st_close(f);
    ASSERT_OK(st, e);
    ASSERT_EQ_INT(got.n_levels, 2);
    ASSERT_EQ_INT(got.block_out_channels[0], 32);
    ASSERT_EQ_INT(got.block_out_channels[1], 64);
    ASSERT_EQ_INT(got.layers_per_block, 2);
    ASSERT_EQ_INT(got.latent_channels, 4);
}

static void test_config_parse(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    sdw_vae_config c;
    ASSERT_OK(sdw_vae_config_load(sdw_test_path("models/tiny-sd15/vae/config.json"), &c, e), e);
    ASSERT_EQ_INT(c.n_levels, 2);
    ASSERT_EQ_INT(c.block_out_channels[0], 32);
    ASSERT_EQ_INT(c.block_out_channels[1], 64);
    ASSERT_EQ_INT(c.layers_per_block, 2);
    ASSERT_EQ_INT(c.latent_channels, 4);
    ASSERT_EQ_INT(c.norm_num_groups, 32);
    ASSERT_TRUE(fabsf(c.scaling_factor - 0.18215f) < 1e-7f);
    ASSERT_TRUE(c.shift_factor == 0.0f && c.use_quant_conv && c.use_post_quant_conv);
    ASSERT_TRUE(c.mid_block_attention);

    const char *d = "{\"block_out_channels\": [128, 256, 512, 512], \"latent_channels\": 16,"
                    " \"shift_factor\": null, \"use_quant_conv\": false}";
    ASSERT_OK(sdw_vae_config_parse(d, strlen(d), &c, e), e);
    ASSERT_EQ_INT(c.n_levels, 4);
    ASSERT_EQ_INT(c.block_out_channels[3], 512);
    ASSERT_EQ_INT(c.latent_channels, 16);
    ASSERT_EQ_INT(c.layers_per_block, 1); /* diffusers default */
    ASSERT_TRUE(!c.use_quant_conv && c.use_post_quant_conv && c.shift_factor == 0.0f);

    sdw_vae_config keep = c;
    const char *bad[] = {
        "{\"block_out_channels\": [32, 64], \"down_block_types\": [\"DownEncoderBlock2D\"]}",
        "{\"block_out_channels\": []}",
        "{\"latent_channels\": \"four\"}",
        "[1, 2]",
        "{\"in_channels\": 3,",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_STATUS(sdw_vae_config_parse(bad[i], strlen(bad[i]), &c, e), SDW_E_FORMAT);
        ASSERT_TRUE(c.n_levels == keep.n_levels && c.latent_channels == keep.latent_channels);
    }
    const char *unsup = "{\"block_out_channels\": [32], \"up_block_types\": "
                        "[\"AttnUpDecoderBlock2D\"]}";
    ASSERT_STATUS(sdw_vae_config_parse(unsup, strlen(unsup), &c, e), SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(err.msg, "AttnUpDecoderBlock2D");
    const char *act = "{\"act_fn\": \"gelu\"}";
    ASSERT_STATUS(sdw_vae_config_parse(act, strlen(act), &c, e), SDW_E_UNSUPPORTED);
    ASSERT_STATUS(sdw_vae_config_load(sdw_test_path("models/no-such/vae/config.json"), &c, e),
                  SDW_E_IO);
}

static void test_ldm_names(void) {
    sdw_vae_config c = sdw_vae_config_default();
    c.n_levels = 4;
    char buf[256];
    static const char *pairs[][2] = {
        {"decoder.up_blocks.0.resnets.2.conv_shortcut.weight", "decoder.up.3.block.2.nin_shortcut.weight"},
        {"decoder.up_blocks.3.resnets.0.norm1.bias", "decoder.up.0.block.0.norm1.bias"},
        {"decoder.up_blocks.1.upsamplers.0.conv.weight", "decoder.up.2.upsample.conv.weight"},
        {"encoder.down_blocks.2.resnets.1.conv2.weight", "encoder.down.2.block.1.conv2.weight"},
        {"encoder.down_blocks.0.downsamplers.0.conv.bias", "encoder.down.0.downsample.conv.bias"},
        {"encoder.mid_block.resnets.0.norm2.weight", "encoder.mid.block_1.norm2.weight"},
        {"decoder.mid_block.resnets.1.conv1.bias", "decoder.mid.block_2.conv1.bias"},
        {"decoder.mid_block.attentions.0.group_norm.weight", "decoder.mid.attn_1.norm.weight"},
        {"decoder.mid_block.attentions.0.to_q.weight", "decoder.mid.attn_1.q.weight"},
        {"encoder.mid_block.attentions.0.to_v.bias", "encoder.mid.attn_1.v.bias"},
        {"encoder.mid_block.attentions.0.to_out.0.weight", "encoder.mid.attn_1.proj_out.weight"},
        {"encoder.conv_norm_out.weight", "encoder.norm_out.weight"},
        {"decoder.conv_norm_out.bias", "decoder.norm_out.bias"},
        {"decoder.conv_in.weight", "decoder.conv_in.weight"},
        {"encoder.conv_out.bias", "encoder.conv_out.bias"},
        {"quant_conv.weight", "quant_conv.weight"},
        {"post_quant_conv.bias", "post_quant_conv.bias"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        const char *got = sdw_ldm_vae_name(pairs[i][0], buf, sizeof buf, &c);
        ASSERT_TRUE(got == buf);
        if (strcmp(got, pairs[i][1]) != 0) {
            sdw_test_fail(__FILE__, __LINE__, "%s -> %s, want %s", pairs[i][0], got, pairs[i][1]);
            return;
        }
    }
    static const char *none[] = {
        "decoder.up_blocks.4.resnets.0.conv1.weight", /* level out of range */
        "encoder.up_blocks.0.resnets.0.conv1.weight", "decoder.down_blocks.0.resnets.0.conv1.weight",
        "decoder.mid_block.resnets.2.conv1.weight",   "decoder.conv_in.weightx",
        "unet.conv_in.weight",                        "decoder.mid_block.attentions.0.to_x.weight",
    };
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
        if (sdw_ldm_vae_name(none[i], buf, sizeof buf, &c)) {
            sdw_test_fail(__FILE__, __LINE__, "%s should not map (got %s)", none[i], buf);
            return;
        }
}

/* Every LDM name in the single file is reached by mapping a diffusers name of the folder, and
 * every tensor of the file is used by the VAE (no leftovers). */
static void test_ldm_map_covers_file(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded l;
    sdw_status st = load_single(&l, "tiny-sd15.safetensors", "first_stage_model.", false, e);
    char buf[512] = "";
    int left = st ? -1 : sdw_weights_unused(l.ws, buf, sizeof buf);
    size_t np = st ? 0 : sdw_vae_n_params(l.vae);
    loaded f;
    sdw_status st2 = load_folder(&f, "tiny-sd15", false, e);
    int left2 = st2 ? -1 : sdw_weights_unused(f.ws, buf, sizeof buf);
    size_t np2 = st2 ? 0 : sdw_vae_n_params(f.vae);
    size_t n_file = 0;
    if (!st2)
        for (int i = 0; i < sdw_st_count(f.file); i++) n_file += sdw_st_at(f.file, i)->n_elems;
    unload(&l);
    unload(&f);
    ASSERT_OK(st, e);
    ASSERT_OK(st2, e);
    ASSERT_EQ_INT(left, 0);
    ASSERT_EQ_INT(left2, 0);
    ASSERT_EQ_INT(np, n_file);
    ASSERT_EQ_INT(np2, n_file);
}

/* The phase-split Upsample2D equals the literal one (nearest x2, then 3x3 conv pad 1) on a
 * non-square batch, which the square goldens cannot show. */
static void test_upsample_phase_split(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-sd15/vae/diffusion_pytorch_model.safetensors"),
                          &f, e),
              e);
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    const int B = 2, H = 5, W = 3, C = 64;
    const char *prefix = "decoder.up_blocks.0.upsamplers.0";
    float *x = malloc(sizeof(float) * B * H * W * C);
    uint32_t r = 12345;
    for (int i = 0; i < B * H * W * C; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = (float)(r >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
    }
    float *got = NULL;
    sdw__vae_upsample(ws, prefix, C, x, B, H, W, &got, e);
    float *u = malloc(sizeof(float) * B * 4 * H * W * C), *ref = malloc(sizeof(float) * B * 4 * H * W * C);
    sdw_conv2d conv;
    sdw_status st = sdw_conv2d_bind(&conv, ws, "decoder.up_blocks.0.upsamplers.0.conv", C, C, 3, 1,
                                    1, true, e);
    double rel = 1e9;
    if (got && !st) {
        sdw_upsample_nearest2x(x, B, H, W, C, u);
        sdw_conv2d_forward(&conv, sdw_nhwc(u, B, 2 * H, 2 * W), sdw_nhwc(ref, B, 2 * H, 2 * W), 0);
        rel = sdw_test_rel_err(got, ref, (size_t)B * 4 * H * W * C);
    }
    free(x);
    free(got);
    free(u);
    free(ref);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
    ASSERT_OK(st, e);
    ASSERT_TRUE(rel <= 1e-5);
}

static void test_encode_rejects_bad_size(void) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded l;
    sdw_status st = load_folder(&l, "tiny-sd15", false, e);
    if (st) unload(&l);
    ASSERT_OK(st, e);
    float img[3 * 3 * 3] = {0}, m[4], s[4];
    st = sdw_vae_encode(l.vae, img, 1, 3, 3, m, s, e);
    unload(&l);
    ASSERT_EQ_INT(st, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "multiple of 2");
}

/* sdw_vae_create_lazy: the encoder's tensors are not loaded until the first encode (fewer
 * parameters handed out, none reported unused), the parameter count is the eager one, and
 * encode (folder and LDM single file) still matches the reference. */
static void check_lazy(bool single) {
    sdw_error err = {0};
    sdw_error *e = &err;
    loaded eager = {0}, l = {0};
    sdw_status st =
        single ? load_single(&eager, "tiny-sd15.safetensors", "first_stage_model.", false, e)
               : load_folder(&eager, "tiny-sd15", false, e);
    if (!st)
        st = single ? load_single(&l, "tiny-sd15.safetensors", "first_stage_model.", true, e)
                    : load_folder(&l, "tiny-sd15", true, e);
    if (st) unload(&eager), unload(&l);
    ASSERT_OK(st, e);
    const size_t loaded_before = sdw_weights_n_params(l.ws);
    const size_t eager_loaded = sdw_weights_n_params(eager.ws);
    ASSERT_TRUE(sdw_vae_has_encoder(l.vae));
    ASSERT_EQ_INT((int)sdw_vae_n_params(l.vae), (int)sdw_vae_n_params(eager.vae));
    ASSERT_TRUE(loaded_before < eager_loaded);
    ASSERT_EQ_INT(sdw_weights_unused(l.ws, NULL, 0), sdw_weights_unused(eager.ws, NULL, 0));
    check_encode(&l, "tiny-sd15/img2img-ddim");
    ASSERT_EQ_INT((int)sdw_weights_n_params(l.ws), (int)eager_loaded); /* bound now */
    check_encode(&l, "tiny-sd15/img2img-ddim");                        /* and only once */
    ASSERT_EQ_INT((int)sdw_weights_n_params(l.ws), (int)eager_loaded);
    unload(&eager);
    unload(&l);
}

static void test_lazy_encoder(void) {
    check_lazy(false);
    check_lazy(true);
}

int main(void) {
    RUN(test_config_parse);
    RUN(test_config_infer_matches_folder);
    RUN(test_ldm_names);
    RUN(test_sd15_folder_decode);
    RUN(test_sd15_single_decode);
    RUN(test_sd15_folder_encode);
    RUN(test_sd15_single_encode);
    RUN(test_batch_decode);
    RUN(test_ldm_map_covers_file);
    RUN(test_upsample_phase_split);
    RUN(test_encode_rejects_bad_size);
    RUN(test_lazy_encoder);
    RUN(test_sdxl);
    RUN(test_sdxl_single_fp16);
    RUN(test_flux_folder);
    RUN(test_flux_bfl_file);
    return sdw_test_finish();
}
