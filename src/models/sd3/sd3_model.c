/* Loading the Stable Diffusion 3 family — a diffusers StableDiffusion3Pipeline folder, or a
 * single file as Stability ships them (sd3_medium*.safetensors: the MMDiT under
 * model.diffusion_model., the VAE under first_stage_model., and in the _incl_clips files the
 * text encoders under text_encoders.{clip_l,clip_g,t5xxl}.transformer.) completed from
 * --config DIR — with components replaced by files (--clip-l, --clip-g, --t5xxl, --vae) and
 * T5 optional (diffusers' text_encoder_3=None: zeros in its place), and the model's identity.
 * Generation is the shared core (models/diffusion.c) with this family's hooks
 * (sd3_denoise.c). */
#include "models/sd3/sd3_impl.h"

#include "models/components.h"
#include "models/lora.h"
#include "models/sd3/sd3_sgm_names.h"
#include "nn/nn.h"

#include <jansson.h>
#include <string.h>
#include <sys/stat.h>

static const char *const g_schedulers[] = {"default", NULL};

/* max_sequence_length: T5's window (StableDiffusion3Pipeline: 256 by default, at most 512). */
static const sdw_param_spec g_params[] = {
    {"max_sequence_length", 1, SD3_T5_MAX, SD3_T5_DEFAULT, true,
     "T5 tokens the prompt is padded / truncated to (StableDiffusion3Pipeline's "
     "max_sequence_length)"},
    {NULL, 0, 0, 0, false, NULL},
};

/* SD3's VAE latent conventions when no config says (diffusers' SD3 vae/config.json). */
#define SD3_VAE_SCALING 1.5305f
#define SD3_VAE_SHIFT 0.0609f
#define SD3_HEAD_DIM 64 /* every released SD3 / SD3.5 */

/* ComfyUI's latent_rgb_factors for SD3's 16-channel latents (latent_formats.SD3): a cheap
 * linear preview. */
static const float g_latent_rgb[16][3] = {
    {-0.0922f, -0.0175f, 0.0749f}, {0.0311f, 0.0633f, 0.0954f},   {0.1994f, 0.0927f, 0.0458f},
    {0.0856f, 0.0339f, 0.0902f},   {0.0587f, 0.0272f, -0.0496f},  {-0.0006f, 0.1104f, 0.0309f},
    {0.0978f, 0.0306f, 0.0427f},   {-0.0042f, 0.1038f, 0.1358f},  {-0.0194f, 0.0020f, 0.0669f},
    {-0.0488f, 0.0130f, -0.0268f}, {0.0922f, 0.0988f, 0.0951f},   {-0.0278f, 0.0524f, -0.0542f},
    {0.0332f, 0.0456f, 0.0895f},   {-0.0069f, -0.0030f, -0.0810f}, {-0.0596f, -0.0465f, -0.0293f},
    {-0.1448f, -0.1463f, -0.1189f},
};
static const float g_latent_rgb_bias[3] = {0.2394f, 0.2135f, 0.1925f};

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* ---- detection ---- */

static json_t *model_index(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/model_index.json", dir);
    return json_load_file(p, 0, NULL);
}

static bool sd3_detect(const char *path) {
    if (is_dir(path)) {
        json_t *idx = model_index(path);
        const char *cls = json_string_value(json_object_get(idx, "_class_name"));
        bool ok = cls && (!strcmp(cls, "StableDiffusion3Pipeline") ||
                          !strcmp(cls, "StableDiffusion3Img2ImgPipeline") ||
                          !strcmp(cls, "StableDiffusion3InpaintPipeline"));
        json_decref(idx);
        return ok;
    }
    if (!ends_with(path, ".safetensors")) return false;
    sdw_st_file *f = NULL;
    if (sdw_st_open(path, &f, NULL) != SDW_OK) return false;
    bool ok = sdw_sd3_sgm_detect(f, NULL);
    sdw_st_close(f);
    return ok;
}

/* ---- components ---- */

/* model_index.json names text_encoder_3 as [library, class] (not [null, null]). */
static bool folder_has_t5(const char *root) {
    json_t *idx = model_index(root);
    json_t *v = json_object_get(idx, "text_encoder_3");
    bool has = json_is_array(v) && json_is_string(json_array_get(v, 1));
    json_decref(idx);
    char p[4096];
    snprintf(p, sizeof p, "%s/text_encoder_3", root);
    return has && is_dir(p);
}

/* The three text encoders: each from its file option, else from inside the single checkpoint
 * (`in`, Stability's text_encoders.* prefixes, when it holds them), else the folder's. T5 is
 * optional: "--t5xxl none" runs without it on purpose; a folder without text_encoder_3 runs
 * without it with a warning, as diffusers allows. */
static sdw_status load_text(sd3_model *m, const char *root, const sdw_st_file *in,
                            const sdw_load_options *opts, sdw_error *err) {
    static const struct {
        const char *sub, *tok, *option, *flag, *prefix, *tap;
    } clip[2] = {{"text_encoder", "tokenizer", "clip_l", "clip-l",
                  "text_encoders.clip_l.transformer.", "te"},
                 {"text_encoder_2", "tokenizer_2", "clip_g", "clip-g",
                  "text_encoders.clip_g.transformer.", "te2"}};
    char tok[4096], probe[512];
    sdw_status s;
    for (int k = 0; k < 2; k++) {
        sdw_component_src src = {.root = root, .sub = clip[k].sub, .flag = clip[k].flag,
                                 .file = sdw_load_option(opts, clip[k].option)};
        snprintf(probe, sizeof probe, "%stext_model.embeddings.token_embedding.weight",
                 clip[k].prefix);
        if (!src.file && in && sdw_st_find(in, probe)) {
            src.in = in;
            src.prefix = clip[k].prefix;
        }
        snprintf(tok, sizeof tok, "%s/%s", root ? root : ".", clip[k].tok);
        sdw_clip_prompt *p = &m->clip[k];
        /* SD3: hidden_states[-2] (no final norm) and the projected pooled output */
        p->params = sdw_clip_text_params_default();
        p->params.skip_layers = 1;
        p->params.final_norm = false;
        p->params.project_pooled = true;
        snprintf(p->tap, sizeof p->tap, "%s", clip[k].tap);
        if ((s = sdw_component_clip(&m->d, &src, root ? tok : NULL, p, err))) return s;
    }
    const char *t5file = sdw_load_option(opts, "t5xxl");
    sdw_component_src src = {.root = root, .sub = "text_encoder_3", .flag = "t5xxl",
                             .file = t5file};
    const bool in_file = !t5file && in && sdw_st_find(in, "text_encoders.t5xxl.transformer.shared.weight");
    if (in_file) {
        src.in = in;
        src.prefix = "text_encoders.t5xxl.transformer.";
    }
    if (t5file && !strcmp(t5file, "none")) {
        SDW_INFO("running without T5 (--t5xxl none): zeros in its place");
        return SDW_OK;
    }
    if (!t5file && !in_file && !(root && folder_has_t5(root))) {
        SDW_WARN("no T5 text encoder (text_encoder_3): running without it, zeros in its place, as "
                 "diffusers' text_encoder_3=None (give --t5xxl FILE to use one)");
        return SDW_OK;
    }
    snprintf(tok, sizeof tok, "%s/tokenizer_3", root ? root : ".");
    snprintf(m->t5.tap, sizeof m->t5.tap, "te3");
    return sdw_component_t5(&m->d, &src, root ? tok : NULL, &m->t5, err);
}

/* The halves of an AdaLayerNormContinuous linear (norm_out.linear, the last block's
 * norm1_context.linear: sd3_transformer.h's SDW_SD3_*_SCALE / _SHIFT) as rows of the whole
 * diffusers tensor (scale first); every other name as it is. An sdw_name_view_fn. The folder's
 * transformer is viewed through it so that it binds those layers as halves, as a single file
 * does (the same product, stacked), and as the LoRA alias of the halves, so that a LoRA module
 * of either spelling finds them: Stability's and kohya's adaLN_modulation.1 has the halves the
 * other way round, (shift, scale), so no row range of such a module fits the whole layer, but
 * one fits each half. */
static const char *halves_name(const char *name, char *buf, size_t cap, sdw_weight_view *view,
                               void *user) {
    (void)user;
    static const char *const half[2] = {".linear_scale.", ".linear_shift."};
    for (int k = 0; k < 2; k++) {
        const char *p = strstr(name, half[k]);
        if (!p) continue;
        const size_t head = (size_t)(p - name);
        if (!(head >= 8 && !strncmp(p - 8, "norm_out", 8)) &&
            !(head >= 13 && !strncmp(p - 13, "norm1_context", 13)))
            continue;
        *view = (sdw_weight_view){.split = 2, .first = k};
        const int n = snprintf(buf, cap, "%.*s.linear.%s", (int)head, name, p + strlen(half[k]));
        return n >= 0 && (size_t)n < cap ? buf : NULL;
    }
    return snprintf(buf, cap, "%s", name) < (int)cap ? buf : NULL;
}

/* The MMDiT: a folder's transformer/ (config.json + weights, viewed through halves_name), or
 * the single file's model.diffusion_model.* through Stability's name map (the architecture
 * from the shapes). */
static sdw_status load_transformer(sd3_model *m, const char *root, const sdw_st_file *in,
                                   sdw_error *err) {
    char q[4096];
    sdw_status s;
    const sdw_st_file *f = in;
    if (!in) {
        sdw_st_file *opened;
        if ((s = sdw_diffusion_open_component(&m->d, root, "transformer",
                                              "diffusion_pytorch_model", &opened, err)))
            return s;
        f = opened;
    }
    const char *prefix = "";
    if (in && !sdw_sd3_sgm_detect(in, &prefix))
        return sdw_error_set(err, SDW_E_FORMAT, "%s holds no SD3 transformer", sdw_st_path(in));
    m->w_dit = in ? sdw_weights_create_viewed(f, prefix, sdw_sd3_sgm_name, NULL)
                  : sdw_weights_create_viewed(f, "", halves_name, NULL);
    sdw_diffusion_weights(&m->d, m->w_dit);
    sdw_sd3_config c;
    const char *cfg = sdw_component_file(root, "transformer", "config.json", q, sizeof q);
    if (!in && cfg) {
        s = sdw_sd3_config_load(cfg, &c, err);
    } else {
        int head_dim = SD3_HEAD_DIM; /* the config folder's, when it describes one */
        sdw_sd3_config given;
        if (cfg && sdw_sd3_config_load(cfg, &given, NULL) == SDW_OK) head_dim = given.head_dim;
        s = sdw_sd3_config_infer(m->w_dit, head_dim, &c, err);
    }
    if (!s) s = sdw_sd3_transformer_create(m->w_dit, &c, &m->dit, err);
    if (s) sdw_error_prefix(err, "%s", sdw_st_path(f));
    return s;
}

/* <root>/scheduler/scheduler_config.json, else SD3's released one (shift 3, static). The
 * pipeline lets the scheduler make its own sigmas. */
static sdw_status load_schedule(sd3_model *m, const char *root, sdw_error *err) {
    char q[4096];
    const char *cfg = sdw_component_file(root, "scheduler", "scheduler_config.json", q, sizeof q);
    sdw_scheduler_config *c = &m->d.sched;
    if (cfg) {
        sdw_status s = sdw_scheduler_config_load(cfg, c, err);
        if (s) return s;
        if (!c->flow_matching)
            return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: %s is not a flow-matching "
                                 "scheduler (SD3 runs FlowMatchEulerDiscreteScheduler)",
                                 cfg, c->class_name[0] ? c->class_name : "(no class)");
    } else {
        *c = sdw_scheduler_config_default();
        snprintf(c->class_name, sizeof c->class_name, "FlowMatchEulerDiscreteScheduler");
        c->flow_matching = true;
        c->shift = 3.0;
    }
    c->flow_pipeline_sigmas = false;
    return SDW_OK;
}

/* ---- consistency and identity ---- */

static sdw_status check_parts(const sd3_model *m, sdw_error *err) {
    const sdw_sd3_config *tc = sdw_sd3_transformer_config(m->dit);
    const int clip_w = sdw_clip_prompt_width(&m->clip[0]) + sdw_clip_prompt_width(&m->clip[1]);
    const int pooled = sdw_clip_prompt_pooled_width(&m->clip[0]) +
                       sdw_clip_prompt_pooled_width(&m->clip[1]);
    if (clip_w > tc->joint_dim)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "CLIP-L and CLIP-G give %d features per token, more than the "
                             "transformer's joint_attention_dim %d",
                             clip_w, tc->joint_dim);
    if (m->t5.enc && sdw_t5_prompt_width(&m->t5) != tc->joint_dim)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "the T5 encoder gives %d features per token, the transformer's "
                             "joint_attention_dim is %d",
                             sdw_t5_prompt_width(&m->t5), tc->joint_dim);
    if (pooled != tc->pooled_dim)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "the pooled CLIP-L + CLIP-G embedding has %d features, the "
                             "transformer's pooled_projection_dim is %d",
                             pooled, tc->pooled_dim);
    if (m->vae_cfg.latent_channels != tc->in_channels)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "the VAE has %d latent channels, the transformer takes %d",
                             m->vae_cfg.latent_channels, tc->in_channels);
    return SDW_OK;
}

static const char *sd3_type(const sdw_image_model *m) { return "sd3"; }
static const char *sd3_variant(const sdw_image_model *m) {
    return ((const sd3_model *)m)->d.variant;
}
static const sdw_capabilities *sd3_caps(const sdw_image_model *m) {
    return &((const sd3_model *)m)->d.caps;
}

/* What LoRAs adapt: the transformer (diffusers / PEFT names under transformer.; kohya's
 * sd-scripts (networks/lora_sd3.py) names Stability's MMDiT modules under lora_unet_:
 * joint_blocks_0_x_block_attn_qkv is split over the stacked to_q | to_k | to_v) and the three
 * text encoders (diffusers' text_encoder / text_encoder_2, kohya's lora_te1 = CLIP-L, lora_te2 =
 * CLIP-G, lora_te3 = T5). */
static void declare_lora_parts(sd3_model *m) {
    sdw_diffusion_lora_part(&m->d,
                            &(sdw_lora_part){.component = "transformer",
                                             .dotted = {"transformer"},
                                             .kohya = {"lora_unet"},
                                             .ws = m->w_dit,
                                             .alias = {sdw_sd3_sgm_name, halves_name}});
    for (int k = 0; k < 2; k++)
        sdw_diffusion_lora_part(
            &m->d, &(sdw_lora_part){.component = k ? "text_encoder_2" : "text_encoder",
                                    .dotted = {k ? "text_encoder_2" : "text_encoder"},
                                    .kohya = {k ? "lora_te2" : "lora_te1"},
                                    .ws = m->clip[k].w});
    if (m->t5.w)
        sdw_diffusion_lora_part(&m->d, &(sdw_lora_part){.component = "text_encoder_3",
                                                        .dotted = {"text_encoder_3"},
                                                        .kohya = {"lora_te3"},
                                                        .ws = m->t5.w});
}

/* Capabilities as StableDiffusion3Pipeline's defaults: 28 steps, guidance 7.0 (CFG), default
 * size sample_size latents (1024 px for the released models), sizes in steps of the VAE factor
 * x the patch, up to the position table's reach. */
static sdw_status finish_setup(sd3_model *m, const sdw_load_options *opts, sdw_error *err) {
    const sdw_sd3_config *tc = sdw_sd3_transformer_config(m->dit);
    snprintf(m->d.variant, sizeof m->d.variant, "%s", tc->qk_norm ? "3.5" : "3");
    m->d.hooks = &sdw__sd3_hooks;
    m->d.vae = m->vae;
    m->d.vae_factor = sdw_vae_downscale(m->vae);
    m->d.vae_scaling = m->vae_cfg.scaling_factor;
    m->d.vae_shift = m->vae_cfg.shift_factor;
    m->d.latent_channels = m->vae_cfg.latent_channels;
    m->d.denoiser_in_channels = m->d.latent_channels;
    m->d.guidance = SDW_GUIDANCE_CFG;
    m->d.patch = tc->patch_size;
    if (m->d.latent_channels == 16) {
        m->d.preview_rgb = g_latent_rgb;
        m->d.preview_bias = g_latent_rgb_bias;
    }
    sdw_capabilities *c = &m->d.caps;
    *c = (sdw_capabilities){0};
    c->txt2img = true;
    c->img2img = c->inpainting = sdw_vae_has_encoder(m->vae);
    c->supports_guidance = true;
    c->supports_negative_prompt = true;
    c->size_multiple = m->d.vae_factor * tc->patch_size;
    c->min_size = SDW_MAX(64, c->size_multiple);
    c->max_size = SDW_MIN(4096, tc->pos_embed_max_size * tc->patch_size * m->d.vae_factor);
    c->max_steps = 1000;
    c->default_width = c->default_height = tc->sample_size * m->d.vae_factor;
    c->default_steps = 28;
    c->default_guidance = 7.0f;
    c->schedulers = g_schedulers;
    c->params = m->t5.enc ? g_params : NULL; /* the window is T5's */
    declare_lora_parts(m);
    return sdw_diffusion_finish(&m->d, opts, err);
}

static void fmt_params(char *buf, size_t cap, size_t n) {
    if (n >= 1000000000) snprintf(buf, cap, "%.2fB [%zu]", n / 1e9, n);
    else if (n >= 1000000) snprintf(buf, cap, "%.1fM [%zu]", n / 1e6, n);
    else snprintf(buf, cap, "%.1fK [%zu]", n / 1e3, n);
}

static void sd3_describe(const sdw_image_model *base, char *buf, size_t cap) {
    const sd3_model *m = (const sd3_model *)base;
    const sdw_sd3_config *tc = sdw_sd3_transformer_config(m->dit);
    char a[48];
    size_t o = 0, total = 0, n;
#define OUT(...) (o += (size_t)snprintf(buf + SDW_MIN(o, cap), o < cap ? cap - o : 0, __VA_ARGS__))
    OUT("scheduler:    flow matching, shift %g\n", m->d.sched.shift);
    for (int k = 0; k < 2; k++) {
        const sdw_clip_text_config *t = sdw_clip_text_get_config(m->clip[k].enc);
        n = sdw_weights_n_params(m->clip[k].w);
        total += n;
        fmt_params(a, sizeof a, n);
        OUT("%s CLIP, %d layers x %d (penultimate state, projected pooled), %s parameters\n",
            k ? "text encoder 2:" : "text encoder:", t->n_layers, t->hidden, a);
    }
    if (m->t5.enc) {
        const sdw_t5_text_config *t = sdw_t5_text_get_config(m->t5.enc);
        n = sdw_weights_n_params(m->t5.w);
        total += n;
        fmt_params(a, sizeof a, n);
        OUT("text encoder 3: T5, %d layers x %d, %s parameters\n", t->n_layers, t->d_model, a);
    } else {
        OUT("text encoder 3: none (zeros in T5's place)\n");
    }
    n = sdw_sd3_transformer_n_params(m->dit);
    total += n;
    fmt_params(a, sizeof a, n);
    OUT("transformer:  %d joint blocks, %d heads x %d%s, %s parameters\n", tc->n_layers,
        tc->n_heads, tc->head_dim, tc->qk_norm ? ", qk norm" : "", a);
    n = sdw_vae_n_params(m->vae);
    total += n;
    fmt_params(a, sizeof a, n);
    OUT("vae:          %s parameters (%d latent channels, scale factor %d, scaling %g, shift "
        "%g)\n",
        a, m->d.latent_channels, m->d.vae_factor, (double)m->d.vae_scaling,
        (double)m->d.vae_shift);
    fmt_params(a, sizeof a, total);
    OUT("total:        %s parameters\n", a);
#undef OUT
}

/* `sdw tokenize` shows CLIP-L's ids (the first encoder, 77 tokens). */
static sdw_status sd3_tokenize(const sdw_image_model *base, const char *prompt, int32_t **ids,
                               int *n, int *window, sdw_error *err) {
    const sd3_model *m = (const sd3_model *)base;
    *window = SDW_CLIP_WINDOW;
    return sdw_clip_tokenize(m->clip[0].tokenizer, prompt, ids, n, err);
}

static void sd3_destroy(sdw_image_model *base) {
    sd3_model *m = (sd3_model *)base;
    if (!m) return;
    sdw_vae_destroy(m->vae);
    sdw_sd3_transformer_destroy(m->dit);
    sdw_t5_prompt_deinit(&m->t5);
    sdw_clip_prompt_deinit(&m->clip[0]);
    sdw_clip_prompt_deinit(&m->clip[1]);
    sdw_weights_destroy(m->w_vae);
    sdw_weights_destroy(m->w_dit);
    sdw_diffusion_deinit(&m->d);
    free(m);
}

static const sdw_image_model_ops g_ops = {
    .model_type = sd3_type,
    .model_variant = sd3_variant,
    .capabilities = sd3_caps,
    .generate = sdw_diffusion_generate,
    .describe = sd3_describe,
    .tokenize = sd3_tokenize,
    .destroy = sd3_destroy,
};

static sdw_status sd3_load(const char *path, const sdw_load_options *opts, sdw_image_model **out,
                           sdw_error *err) {
    sd3_model *m = sdw_xcalloc(1, sizeof *m);
    sdw_status s = sdw_diffusion_init(&m->d, &g_ops, path, opts, err);
    if (s) goto fail;
    const bool single = !is_dir(path);
    if (!single && opts->config_dir)
        SDW_WARN("--config is for single-file checkpoints; %s is a diffusers folder with its own "
                 "configs: ignored",
                 path);
    const char *root = single ? opts->config_dir : path;
    sdw_st_file *in = NULL;
    if (single && !root) {
        s = sdw_error_set(err, SDW_E_NOT_FOUND,
                          "%s is a single SD3 checkpoint: give --config DIR, a diffusers SD3 "
                          "folder with the tokenizers, scheduler and any component the file "
                          "lacks (--clip-l, --clip-g, --t5xxl, --vae give them as files)",
                          path);
        goto fail;
    }
    if (single && (s = sdw_diffusion_open_file(&m->d, path, &in, err))) goto fail;
    const sdw_component_src vae = {
        .root = root, .sub = "vae", .flag = "vae", .file = sdw_load_option(opts, "vae"),
        .in = !sdw_load_option(opts, "vae") && in &&
                      sdw_vae_file_is_ldm(in, "first_stage_model.")
                  ? in
                  : NULL,
        .prefix = "first_stage_model."};
    if ((s = load_transformer(m, root, in, err)) || (s = load_text(m, root, in, opts, err)) ||
        (s = sdw_component_vae(&m->d, &vae, SD3_VAE_SCALING, SD3_VAE_SHIFT, &m->w_vae,
                               &m->vae_cfg, &m->vae, err)) ||
        (s = load_schedule(m, root, err)) || (s = check_parts(m, err)))
        goto fail;
    sdw_diffusion_warn_unused("transformer", m->w_dit);
    sdw_diffusion_warn_unused("vae", m->w_vae);
    sdw_diffusion_warn_unused("text encoder", m->clip[0].w);
    sdw_diffusion_warn_unused("text encoder 2", m->clip[1].w);
    sdw_diffusion_warn_unused("text encoder 3", m->t5.w);
    if ((s = finish_setup(m, opts, err))) goto fail;
    *out = &m->d.base;
    return SDW_OK;
fail:
    sd3_destroy(&m->d.base);
    return s;
}

static const sdw_model_option_spec g_options[] = {
    {"vae", "the autoencoder: a diffusers VAE file or an original (LDM-named) one"},
    {"clip_l", "CLIP-L: transformers CLIPTextModelWithProjection weights"},
    {"clip_g", "CLIP-G: transformers CLIPTextModelWithProjection weights"},
    {"t5xxl", "T5: transformers T5EncoderModel weights (16-bit or fp8), or 'none' to run "
              "without it"},
    {NULL, NULL},
};

const sdw_model_family sdw_sd3_family = {
    .name = "sd3",
    .formats = "diffusers StableDiffusion3Pipeline folders; Stability's single files "
               "(sd3_medium*.safetensors) with --config DIR",
    .detect = sd3_detect,
    .load = sd3_load,
    .options = g_options,
};
