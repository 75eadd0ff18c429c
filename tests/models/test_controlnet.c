/* ControlNetModel against diffusers 0.25.1 (golden tiny-sd15/txt2img-ddim-controlnet, model
 * tiny-sd15-controlnet): config parsing, every recorded residual of the step-0 call, the
 * original lllyasviel layout (the fixture's weights renamed into it, both prefixes) giving the
 * same residuals, and the refusals of broken configs. */
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/stable_diffusion/controlnet.h"
#include "models/stable_diffusion/unet.h"
#include "models/stable_diffusion/unet_config.h"
#include "nn/nn.h"
#include "sdw_test.h"

#include <jansson.h>
#include <stdlib.h>

#define CN_TOL 1e-4

typedef struct loaded {
    sdw_st_file *f;
    sdw_weights *ws;
    sdw_controlnet *cn;
    sdw_controlnet_config cfg;
} loaded;

static void unload(loaded *m) {
    sdw_controlnet_destroy(m->cn);
    sdw_weights_destroy(m->ws);
    sdw_st_close(m->f);
    memset(m, 0, sizeof *m);
}

static sdw_status load_fixture(loaded *m, sdw_error *err) {
    memset(m, 0, sizeof *m);
    sdw_status st = sdw_controlnet_config_load(
        sdw_test_path("models/tiny-sd15-controlnet/config.json"), &m->cfg, err);
    if (!st)
        st = sdw_st_open(
            sdw_test_path("models/tiny-sd15-controlnet/diffusion_pytorch_model.safetensors"),
            &m->f, err);
    if (st) return st;
    m->ws = sdw_weights_create(m->f, "", NULL, NULL);
    return sdw_controlnet_create(m->ws, &m->cfg, &m->cn, err);
}

static void test_config(void) {
    sdw_error err = {0};
    sdw_controlnet_config c;
    ASSERT_OK(sdw_controlnet_config_load(
                  sdw_test_path("models/tiny-sd15-controlnet/config.json"), &c, &err),
              &err);
    ASSERT_EQ_INT(c.unet.n_levels, 2);
    ASSERT_EQ_INT(c.unet.block_out_channels[1], 64);
    ASSERT_EQ_INT(c.unet.in_channels, 4);
    ASSERT_EQ_INT(c.unet.cross_attention_dim, 32);
    ASSERT_TRUE(c.unet.down_attn[0] && !c.unet.down_attn[1] && c.unet.has_mid);
    ASSERT_EQ_INT(c.n_embed, 2);
    ASSERT_EQ_INT(c.embed_channels[0], 16);
    ASSERT_EQ_INT(c.embed_channels[1], 32);
    ASSERT_EQ_INT(c.conditioning_channels, 3);
    ASSERT_EQ_INT(sdw_controlnet_downscale(&c), 2);
    ASSERT_TRUE(!c.bgr && !c.global_pool);

    /* the diffusers defaults when the ControlNet keys are absent; bgr */
    const char *minimal = "{\"_class_name\": \"ControlNetModel\", \"block_out_channels\": [32, 64],"
                          " \"down_block_types\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\"],"
                          " \"cross_attention_dim\": 32,"
                          " \"controlnet_conditioning_channel_order\": \"bgr\"}";
    ASSERT_OK(sdw_controlnet_config_parse(minimal, strlen(minimal), "minimal", &c, &err), &err);
    ASSERT_EQ_INT(c.n_embed, 4);
    ASSERT_EQ_INT(c.embed_channels[3], 256);
    ASSERT_EQ_INT(sdw_controlnet_downscale(&c), 8);
    ASSERT_TRUE(c.bgr);
}

/* Broken or unsupported configs are refused naming the key. */
static void test_config_refusals(void) {
    static const struct {
        const char *json, *says;
        sdw_status code;
    } cases[] = {
        {"{\"_class_name\": \"UNet2DConditionModel\", \"block_out_channels\": [32],"
         " \"down_block_types\": [\"DownBlock2D\"]}",
         "is not ControlNetModel", SDW_E_FORMAT},
        {"{\"block_out_channels\": [32], \"down_block_types\": [\"DownBlock2D\"],"
         " \"mid_block_type\": \"UNetMidBlock2D\"}",
         "UNetMidBlock2D", SDW_E_UNSUPPORTED},
        {"{\"block_out_channels\": [32], \"down_block_types\": [\"DownBlock2D\"],"
         " \"controlnet_conditioning_channel_order\": \"grb\"}",
         "controlnet_conditioning_channel_order", SDW_E_UNSUPPORTED},
        {"{\"block_out_channels\": [32], \"down_block_types\": [\"DownBlock2D\"],"
         " \"class_embed_type\": \"timestep\"}",
         "class_embed_type", SDW_E_UNSUPPORTED},
        {"{\"block_out_channels\": [32, 64], \"down_block_types\": [\"DownBlock2D\"]}",
         "down_block_types", SDW_E_FORMAT},
        {"[1, 2]", "", SDW_E_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sdw_controlnet_config c;
        sdw_error err = {0};
        sdw_status s = sdw_controlnet_config_parse(cases[i].json, strlen(cases[i].json), "cfg",
                                                   &c, &err);
        if (s != cases[i].code) fprintf(stderr, "  case %zu: %d %s\n", i, (int)s, err.msg);
        ASSERT_EQ_INT(s, cases[i].code);
        ASSERT_STR_CONTAINS(err.msg, cases[i].says);
    }
}

/* The step-0 call of the golden: inputs as recorded, every residual within CN_TOL. Returns the
 * worst error (or -1 when the golden is incomplete). */
static double check_step0(const sdw_controlnet *cn, sdw_golden *g, float scale, bool verbose) {
    const sdw_golden_tensor *xs = sdw_golden_get(g, "step00.controlnet.sample");
    const sdw_golden_tensor *ts = sdw_golden_get(g, "step00.controlnet.timestep");
    const sdw_golden_tensor *ctx = sdw_golden_get(g, "step00.controlnet.encoder_hidden_states");
    const sdw_golden_tensor *img = sdw_golden_get(g, "step00.controlnet.controlnet_cond");
    if (!xs || !ts || !ctx || !img) return -1;
    const int B = (int)xs->shape[0], C = (int)xs->shape[1], H = (int)xs->shape[2],
              W = (int)xs->shape[3];
    const int Hc = (int)img->shape[2], Wc = (int)img->shape[3];
    const int C0 = sdw_controlnet_config_of(cn)->unet.block_out_channels[0];
    float *x = sdw_golden_nhwc(xs), *hint = sdw_golden_nhwc(img);
    float *emb = malloc(sizeof(float) * (size_t)H * W * C0);
    /* the control image is the same for both CFG halves: embed batch 0 once */
    sdw_controlnet_embed(cn, hint, Hc, Wc, emb);
    const int n = sdw_controlnet_n_down(cn);
    float *down[16] = {0}, *mid = NULL;
    const sdw_golden_tensor *want[17];
    double worst = 0;
    for (int k = 0; k <= n && k < 16; k++) {
        char name[64];
        if (k < n) snprintf(name, sizeof name, "step00.controlnet.down.%02d", k);
        else snprintf(name, sizeof name, "step00.controlnet.mid");
        want[k] = sdw_golden_get(g, name);
        if (!want[k]) worst = -1;
        else if (k < n) down[k] = malloc(sizeof(float) * want[k]->n);
        else mid = malloc(sizeof(float) * want[k]->n);
    }
    if (worst == 0) {
        float t[2] = {((const float *)ts->data)[0], ((const float *)ts->data)[0]};
        sdw_controlnet_forward(cn, x, B, H, W, t, ctx->data, (int)ctx->shape[1], NULL, NULL, emb,
                               scale, false, down, mid, false);
        for (int k = 0; k <= n; k++) {
            float *ref = sdw_golden_nhwc(want[k]);
            double e = sdw_test_rel_err(k < n ? down[k] : mid, ref, want[k]->n);
            if (verbose) printf("  residual %d: rel err %.3g\n", k, e);
            worst = SDW_MAX(worst, e);
            free(ref);
        }
    }
    (void)C;
    for (int k = 0; k < 16; k++) free(down[k]);
    free(mid), free(emb), free(hint), free(x);
    return worst;
}

static void test_step0_residuals(void) {
    sdw_error err = {0};
    loaded m;
    sdw_status s = load_fixture(&m, &err);
    if (s) unload(&m);
    ASSERT_OK(s, &err);
    ASSERT_EQ_INT(sdw_controlnet_n_down(m.cn), 6);
    char unused[256];
    ASSERT_EQ_INT(sdw_weights_unused(m.ws, unused, sizeof unused), 0);
    sdw_golden *g = sdw_golden_open("tiny-sd15/txt2img-ddim-controlnet");
    double e = g ? check_step0(m.cn, g, 1.0f, true) : -1;
    sdw_golden_close(g);
    unload(&m);
    printf("  step00 residuals: worst rel err %.3g\n", e);
    ASSERT_TRUE(e >= 0 && e <= CN_TOL);
}

/* ---- the original (lllyasviel) layout ----
 * The fixture's weights are written into cldm's names and loaded back through the original-layout
 * path: the residuals must be those of the diffusers folder, and every tensor used. The names
 * come from outside the code under test: the encoder's from the fixture's own single-file
 * checkpoint (tiny-sd15.safetensors, LDM names written by the fixture generator) — each
 * diffusers UNet tensor is the single-file tensor with the same values (the ControlNet's encoder
 * has the UNet's names) — and the ControlNet parts from diffusers' convert_from_ckpt (0.25.1):
 * input_hint_block.{0, 2, 4, ...} = conv_in, blocks.0, blocks.1, ..., conv_out; zero_convs.K.0 =
 * controlnet_down_blocks.K; middle_block_out.0 = controlnet_mid_block. Norm gains and biases of
 * the fixture UNet are all ones / zeros, so their values cannot tell them apart: for those the
 * map's name must be one of the same-valued tensors of the single file. */

/* The cldm name of ControlNet tensor `name`, or NULL when it has none. */
static const char *cldm_name(const char *name, const sdw_st_file *unet, const sdw_st_file *single,
                             const sdw_controlnet_config *cfg, char *buf, size_t cap) {
    static const struct {
        const char *diffusers, *cldm;
    } table[] = {
        {"controlnet_cond_embedding.conv_in.", "input_hint_block.0."},
        {"controlnet_cond_embedding.blocks.0.", "input_hint_block.2."},
        {"controlnet_cond_embedding.blocks.1.", "input_hint_block.4."},
        {"controlnet_cond_embedding.conv_out.", "input_hint_block.6."}, /* 2 stages */
        {"controlnet_mid_block.", "middle_block_out.0."},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        size_t n = strlen(table[i].diffusers);
        if (!strncmp(name, table[i].diffusers, n)) {
            snprintf(buf, cap, "%s%s", table[i].cldm, name + n);
            return buf;
        }
    }
    int k, pos = -1;
    if (sscanf(name, "controlnet_down_blocks.%d.%n", &k, &pos) == 1 && pos > 0) {
        snprintf(buf, cap, "zero_convs.%d.0.%s", k, name + pos);
        return buf;
    }
    const sdw_st_tensor *u = sdw_st_find(unet, name);
    if (!u) return NULL;
    char mapped[256];
    const char *ours = sdw_controlnet_original_name(name, mapped, sizeof mapped, (void *)cfg);
    const char *found = NULL;
    int same = 0;
    bool ours_same = false;
    for (int i = 0; i < sdw_st_count(single); i++) {
        const sdw_st_tensor *t = sdw_st_at(single, i);
        if (strncmp(t->name, "model.diffusion_model.", 22) || t->n_bytes != u->n_bytes ||
            memcmp(t->data, u->data, u->n_bytes))
            continue;
        same++;
        found = t->name + 22;
        if (ours && !strcmp(found, ours)) ours_same = true;
    }
    if (same == 0) return NULL;
    if (same > 1) { /* indistinguishable by value: the map's name, if it is one of them */
        if (!ours_same) return NULL;
        found = ours;
    }
    snprintf(buf, cap, "%s", found);
    return buf;
}

/* Writes the ControlNet fixture under cldm names (after prefix) to path. */
static sdw_status write_original(const char *path, const char *prefix, sdw_error *err) {
    sdw_st_file *cn = NULL, *unet = NULL, *single = NULL;
    sdw_st_writer *w = NULL;
    sdw_controlnet_config cfg;
    sdw_status s = sdw_controlnet_config_load(
        sdw_test_path("models/tiny-sd15-controlnet/config.json"), &cfg, err);
    if (!s) s = sdw_st_open(sdw_test_path("models/tiny-sd15-controlnet/"
                                          "diffusion_pytorch_model.safetensors"), &cn, err);
    if (!s) s = sdw_st_open(sdw_test_path("models/tiny-sd15/unet/"
                                          "diffusion_pytorch_model.safetensors"), &unet, err);
    if (!s) s = sdw_st_open(sdw_test_path("models/tiny-sd15.safetensors"), &single, err);
    if (!s) s = sdw_st_writer_create(path, &w, err);
    for (int i = 0; !s && i < sdw_st_count(cn); i++) {
        const sdw_st_tensor *t = sdw_st_at(cn, i);
        char name[256], full[300];
        if (!cldm_name(t->name, unet, single, &cfg, name, sizeof name)) {
            s = sdw_error_set(err, SDW_E_NOT_FOUND, "no cldm name for %s", t->name);
            break;
        }
        snprintf(full, sizeof full, "%s%s", prefix, name);
        sdw_st_writer_add(w, full, SDW_DTYPE_F32, t->n_dims, t->shape);
    }
    if (!s) s = sdw_st_writer_begin(w, err);
    for (int i = 0; !s && i < sdw_st_count(cn); i++) {
        const sdw_st_tensor *t = sdw_st_at(cn, i);
        float *v = malloc(sizeof(float) * t->n_elems);
        sdw_convert_to_f32(t->dtype, t->data, v, t->n_elems);
        s = sdw_st_writer_write(w, v, err);
        free(v);
    }
    sdw_status s2 = sdw_st_writer_finish(w, s ? NULL : err);
    if (!s) s = s2;
    sdw_st_close(single);
    sdw_st_close(unet);
    sdw_st_close(cn);
    return s;
}

static void check_original(const char *prefix) {
    sdw_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/control_tiny%s.safetensors", sdw_test_tmpdir(),
             *prefix ? "_full" : "");
    ASSERT_OK(write_original(path, prefix, &err), &err);
    sdw_unet_config base;
    ASSERT_OK(sdw_unet_config_load(sdw_test_path("models/tiny-sd15/unet/config.json"), &base,
                                   &err),
              &err);
    loaded m = {0};
    ASSERT_OK(sdw_st_open(path, &m.f, &err), &err);
    const char *found = sdw_controlnet_original_prefix(m.f);
    sdw_status s = found ? SDW_OK : SDW_E_FORMAT;
    if (found && strcmp(found, prefix)) s = SDW_E_FORMAT;
    if (!s) s = sdw_controlnet_config_for_original(m.f, prefix, &base, &m.cfg, &err);
    if (!s) {
        m.ws = sdw_weights_create(m.f, prefix, sdw_controlnet_original_name, &m.cfg);
        s = sdw_controlnet_create(m.ws, &m.cfg, &m.cn, &err);
    }
    if (s) unload(&m);
    ASSERT_OK(s, &err);
    ASSERT_EQ_INT(m.cfg.n_embed, 2);
    ASSERT_EQ_INT(m.cfg.embed_channels[1], 32);
    char unused[256] = "";
    const int n_unused = sdw_weights_unused(m.ws, unused, sizeof unused);
    sdw_golden *g = sdw_golden_open("tiny-sd15/txt2img-ddim-controlnet");
    double e = g ? check_step0(m.cn, g, 1.0f, false) : -1;
    sdw_golden_close(g);
    unload(&m);
    printf("  original layout, prefix '%s': worst rel err %.3g, %d unused %s\n", prefix, e,
           n_unused, unused);
    ASSERT_EQ_INT(n_unused, 0);
    ASSERT_TRUE(e >= 0 && e <= CN_TOL);
}

static void test_original_layout(void) {
    check_original("control_model."); /* ControlNet 1.0: the whole cldm model's names */
    if (sdw_test_failures_in_current) return;
    check_original(""); /* ControlNet 1.1 files: the control model alone */
}

/* ---- an SDXL ControlNet: the encoder's added (text_time) conditioning ----
 * No reference recorded one, so the check is against the UNet itself: a ControlNet holding the
 * tiny SDXL UNet's own encoder weights, a conditioning embedding ending in a zero convolution
 * and identity 1x1 convolutions as its zero convolutions returns exactly the UNet's skips and
 * mid-block output (sdw_unet_encode) on the golden's step-0 inputs, text_embeds and time_ids
 * included — and differs once time_ids change. */

typedef struct captured {
    float *x[16];
    size_t n[16];
} captured;

static void capture(void *user, int k, const float *x, int B, int h, int w, int c) {
    captured *cap = user;
    if (k >= 16) return;
    cap->n[k] = (size_t)B * h * w * c;
    cap->x[k] = malloc(cap->n[k] * sizeof(float));
    memcpy(cap->x[k], x, cap->n[k] * sizeof(float));
}

/* The ControlNet file: encoder tensors from the UNet's file, the rest made here. */
static sdw_status write_sdxl_controlnet(const char *dir, const sdw_controlnet_config *cfg,
                                        sdw_error *err) {
    char path[1024];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    sdw_st_file *unet = NULL;
    sdw_status s = sdw_st_open(sdw_test_path("models/tiny-sdxl/unet/"
                                             "diffusion_pytorch_model.safetensors"), &unet, err);
    if (s) return s;
    /* the names a ControlNet binds, from a random source */
    sdw_weights *rnd = sdw_weights_create_random(7);
    sdw_controlnet *probe = NULL;
    s = sdw_controlnet_create(rnd, cfg, &probe, err);
    sdw_controlnet_destroy(probe);
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s/random.safetensors", dir);
    if (!s) s = sdw_weights_save(rnd, tmp, SDW_DTYPE_F32, err);
    sdw_weights_destroy(rnd);
    sdw_st_file *names = NULL;
    if (!s) s = sdw_st_open(tmp, &names, err);
    sdw_st_writer *w = NULL;
    if (!s) s = sdw_st_writer_create(path, &w, err);
    for (int i = 0; !s && i < sdw_st_count(names); i++) {
        const sdw_st_tensor *t = sdw_st_at(names, i);
        sdw_st_writer_add(w, t->name, SDW_DTYPE_F32, t->n_dims, t->shape);
    }
    if (!s) s = sdw_st_writer_begin(w, err);
    for (int i = 0; !s && i < sdw_st_count(names); i++) {
        const sdw_st_tensor *t = sdw_st_at(names, i), *u = sdw_st_find(unet, t->name);
        float *v = calloc(t->n_elems, sizeof(float));
        if (u) { /* the UNet's encoder */
            sdw_convert_to_f32(u->dtype, u->data, v, t->n_elems);
        } else if (!strncmp(t->name, "controlnet_down_blocks.", 23) ||
                   !strncmp(t->name, "controlnet_mid_block.", 21)) {
            if (t->n_dims == 4) /* identity [C, C, 1, 1] weight; the bias stays 0 */
                for (int64_t c = 0; c < t->shape[0]; c++) v[c * t->shape[1] + c] = 1.0f;
        } else if (strncmp(t->name, "controlnet_cond_embedding.conv_out.", 35)) {
            sdw_convert_to_f32(t->dtype, t->data, v, t->n_elems); /* random: unused after 0 */
        }
        s = sdw_st_writer_write(w, v, err);
        free(v);
    }
    sdw_status s2 = sdw_st_writer_finish(w, s ? NULL : err);
    if (!s) s = s2;
    sdw_st_close(names);
    sdw_st_close(unet);
    return s;
}

static void test_sdxl_encoder_identity(void) {
    sdw_error err = {0};
    /* the ControlNet config from_unet would make of the tiny SDXL UNet's */
    json_t *cfg_json = json_load_file(sdw_test_path("models/tiny-sdxl/unet/config.json"), 0, NULL);
    ASSERT_TRUE(cfg_json != NULL);
    json_object_set_new(cfg_json, "_class_name", json_string("ControlNetModel"));
    json_object_del(cfg_json, "up_block_types");
    json_object_set_new(cfg_json, "conditioning_embedding_out_channels", json_pack("[i,i]", 16, 32));
    char *text = json_dumps(cfg_json, 0);
    json_decref(cfg_json);
    sdw_controlnet_config cfg;
    sdw_status s = sdw_controlnet_config_parse(text, strlen(text), "sdxl controlnet", &cfg, &err);
    free(text);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(cfg.unet.add_text_time);
    const char *dir = sdw_test_tmpdir();
    ASSERT_OK(write_sdxl_controlnet(dir, &cfg, &err), &err);

    loaded m = {0}, u = {0};
    char path[1024];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    s = sdw_st_open(path, &m.f, &err);
    if (!s) {
        m.ws = sdw_weights_create(m.f, "", NULL, NULL);
        s = sdw_controlnet_create(m.ws, &cfg, &m.cn, &err);
    }
    sdw_unet_config ucfg;
    sdw_unet *unet = NULL;
    if (!s) s = sdw_unet_config_load(sdw_test_path("models/tiny-sdxl/unet/config.json"), &ucfg, &err);
    if (!s) s = sdw_st_open(sdw_test_path("models/tiny-sdxl/unet/diffusion_pytorch_model.safetensors"),
                            &u.f, &err);
    if (!s) {
        u.ws = sdw_weights_create(u.f, "", NULL, NULL);
        s = sdw_unet_create(u.ws, &ucfg, &unet, &err);
    }
    sdw_golden *g = s ? NULL : sdw_golden_open("tiny-sdxl/txt2img-euler");
    const sdw_golden_tensor *xs = g ? sdw_golden_get(g, "step00.unet.sample") : NULL;
    const sdw_golden_tensor *ts = g ? sdw_golden_get(g, "step00.unet.timestep") : NULL;
    const sdw_golden_tensor *ctx = g ? sdw_golden_get(g, "step00.unet.encoder_hidden_states") : NULL;
    const sdw_golden_tensor *te = g ? sdw_golden_get(g, "step00.unet.text_embeds") : NULL;
    const sdw_golden_tensor *ti = g ? sdw_golden_get(g, "step00.unet.time_ids") : NULL;
    double worst = -1, moved = 0;
    if (xs && ts && ctx && te && ti) {
        const int B = (int)xs->shape[0], H = (int)xs->shape[2], W = (int)xs->shape[3];
        const int n = sdw_controlnet_n_down(m.cn);
        float *x = sdw_golden_nhwc(xs), t[2] = {((float *)ts->data)[0], ((float *)ts->data)[0]};
        float *emb = calloc((size_t)H * W * 32, sizeof(float)), *hint = calloc((size_t)4 * H * W * 3, sizeof(float));
        sdw_controlnet_embed(m.cn, hint, 2 * H, 2 * W, emb); /* zero conv_out: emb = bias 0 */
        captured cap = {0};
        sdw_unet_encode(unet, x, B, H, W, t, ctx->data, (int)ctx->shape[1], te->data, ti->data,
                        NULL, capture, &cap);
        float *down[16] = {0}, *mid = NULL;
        for (int k = 0; k < n; k++) down[k] = malloc(cap.n[k] * sizeof(float));
        mid = malloc(cap.n[n] * sizeof(float));
        sdw_controlnet_forward(m.cn, x, B, H, W, t, ctx->data, (int)ctx->shape[1], te->data,
                               ti->data, emb, 1.0f, false, down, mid, false);
        worst = 0;
        for (int k = 0; k <= n; k++)
            worst = SDW_MAX(worst, sdw_test_rel_err(k < n ? down[k] : mid, cap.x[k], cap.n[k]));
        /* other time ids (another size): the mid output moves */
        float *ids = malloc(ti->n * sizeof(float));
        for (size_t i = 0; i < ti->n; i++) ids[i] = ((float *)ti->data)[i] * 1.5f;
        sdw_controlnet_forward(m.cn, x, B, H, W, t, ctx->data, (int)ctx->shape[1], te->data, ids,
                               emb, 1.0f, false, down, mid, false);
        moved = sdw_test_rel_err(mid, cap.x[n], cap.n[n]);
        free(ids);
        for (int k = 0; k < 16; k++) free(down[k]), free(cap.x[k]);
        free(mid), free(x), free(emb), free(hint);
    }
    printf("  sdxl controlnet = the unet's encoder: rel err %.3g (other time ids: %.3g)\n", worst,
           moved);
    sdw_golden_close(g);
    sdw_unet_destroy(unet);
    unload(&u);
    unload(&m);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(worst >= 0 && worst <= 1e-6);
    ASSERT_TRUE(moved > 1e-3);
}

int main(void) {
    RUN(test_config);
    RUN(test_config_refusals);
    RUN(test_step0_residuals);
    RUN(test_original_layout);
    RUN(test_sdxl_encoder_identity);
    return sdw_test_finish();
}
