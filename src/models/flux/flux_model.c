/* Loading the FLUX family — a diffusers FluxPipeline folder, or a single transformer file
 * (Black Forest Labs' flux1-dev / flux1-schnell layout, or a diffusers transformer file)
 * completed from --config DIR as diffusers' from_single_file(config=...) — with single
 * components replaced by files people have (--vae: BFL ae.safetensors or a diffusers VAE;
 * --clip-l / --t5xxl: transformers CLIPTextModel / T5EncoderModel weights), and the model's
 * identity (variant, capabilities, description). Generation is the shared core
 * (models/diffusion.c) with this family's hooks (flux_denoise.c). */
#include "models/flux/flux_impl.h"

#include "models/components.h"
#include "models/flux/flux_bfl_names.h"
#include "models/lora.h"
#include "nn/nn.h"

#include <jansson.h>
#include <string.h>
#include <sys/stat.h>

static const char *const g_schedulers[] = {"default", NULL};

/* max_sequence_length: FluxPipeline's T5 window (512 by default, its limit); schnell was
 * trained with 256, which users may ask for. */
static const sdw_param_spec g_params[] = {
    {"max_sequence_length", 1, FLUX_T5_MAX, FLUX_T5_MAX, true,
     "T5 tokens the prompt is padded / truncated to (FluxPipeline's max_sequence_length)"},
    {NULL, 0, 0, 0, false, NULL},
};

/* ComfyUI's latent_rgb_factors for FLUX's 16-channel latents (latent_formats.Flux): a cheap
 * linear preview. */
static const float g_latent_rgb[16][3] = {
    {-0.0346f, 0.0244f, 0.0681f},  {0.0034f, 0.0210f, 0.0687f},   {0.0275f, -0.0668f, -0.0433f},
    {-0.0174f, 0.0160f, 0.0617f},  {0.0859f, 0.0721f, 0.0329f},   {0.0004f, 0.0383f, 0.0115f},
    {0.0405f, 0.0861f, 0.0915f},   {-0.0236f, -0.0185f, -0.0259f}, {-0.0245f, 0.0250f, 0.1180f},
    {0.1008f, 0.0755f, -0.0421f},  {-0.0515f, 0.0201f, 0.0011f},  {0.0428f, -0.0012f, -0.0036f},
    {0.0817f, 0.0765f, 0.0749f},   {-0.1264f, -0.0522f, -0.1103f}, {-0.0280f, -0.0881f, -0.0499f},
    {-0.1262f, -0.0982f, -0.0778f},
};
static const float g_latent_rgb_bias[3] = {-0.0329f, -0.0718f, -0.0851f};

/* BFL's autoencoder scaling when no config says otherwise (diffusers' FLUX vae/config.json). */
#define FLUX_VAE_SCALING 0.3611f
#define FLUX_VAE_SHIFT 0.1159f

/* ---- small path helpers ---- */

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* ---- detection ---- */

static const char *model_index_class(const char *dir, char *buf, size_t cap) {
    char p[4096];
    snprintf(p, sizeof p, "%s/model_index.json", dir);
    json_t *idx = json_load_file(p, 0, NULL);
    const char *cls = json_string_value(json_object_get(idx, "_class_name"));
    snprintf(buf, cap, "%s", cls ? cls : "");
    json_decref(idx);
    return buf;
}

/* A diffusers FluxTransformer2DModel saved as one file. */
static bool is_diffusers_transformer(const sdw_st_file *f) {
    return sdw_st_find(f, "x_embedder.weight") &&
           sdw_st_find(f, "single_transformer_blocks.0.proj_out.weight");
}

static bool flux_detect(const char *path) {
    char cls[128];
    if (is_dir(path)) {
        model_index_class(path, cls, sizeof cls);
        return strcmp(cls, "FluxPipeline") == 0 || strcmp(cls, "FluxImg2ImgPipeline") == 0 ||
               strcmp(cls, "FluxInpaintPipeline") == 0;
    }
    if (!ends_with(path, ".safetensors")) return false;
    sdw_st_file *f = NULL;
    if (sdw_st_open(path, &f, NULL) != SDW_OK) return false;
    bool ok = sdw_flux_bfl_detect(f, NULL) || is_diffusers_transformer(f);
    sdw_st_close(f);
    return ok;
}

/* ---- components ---- */

/* The text encoders and the autoencoder (models/components.h): a folder's own, or the files
 * given by --clip-l, --t5xxl, --vae. CLIP's tokenizer may come from --tokenizer; T5's
 * (spiece.model) only from the folder. */
static sdw_status load_parts(flux_model *m, const char *root, const sdw_load_options *opts,
                             sdw_error *err) {
    char tok[4096], tok2[4096];
    const char *clip_tok = sdw_load_option(opts, "tokenizer");
    if (!clip_tok && root) {
        snprintf(tok, sizeof tok, "%s/tokenizer", root);
        clip_tok = tok;
    }
    snprintf(tok2, sizeof tok2, "%s/tokenizer_2", root);
    const sdw_component_src clip = {.root = root, .sub = "text_encoder", .flag = "clip-l",
                                    .file = sdw_load_option(opts, "clip_l")};
    const sdw_component_src t5 = {.root = root, .sub = "text_encoder_2", .flag = "t5xxl",
                                  .file = sdw_load_option(opts, "t5xxl")};
    const sdw_component_src vae = {.root = root, .sub = "vae", .flag = "vae",
                                   .file = sdw_load_option(opts, "vae")};
    m->clip.params = sdw_clip_text_params_default(); /* last state, final norm, pooler output */
    snprintf(m->clip.tap, sizeof m->clip.tap, "te");
    snprintf(m->t5.tap, sizeof m->t5.tap, "te2");
    sdw_status s = sdw_component_clip(&m->d, &clip, clip_tok, &m->clip, err);
    if (!s) s = sdw_component_t5(&m->d, &t5, tok2, &m->t5, err);
    if (!s)
        s = sdw_component_vae(&m->d, &vae, FLUX_VAE_SCALING, FLUX_VAE_SHIFT, &m->w_vae,
                              &m->vae_cfg, &m->vae, err);
    return s;
}

/* The schedule: <root>/scheduler/scheduler_config.json, else the released model's (dev:
 * shift 3 with dynamic shifting; schnell: shift 1, static) as diffusers ships them. */
static sdw_status load_schedule(flux_model *m, const char *root, bool dev, sdw_error *err) {
    char q[4096];
    const char *cfg = sdw_component_file(root, "scheduler", "scheduler_config.json", q, sizeof q);
    sdw_scheduler_config *c = &m->d.sched;
    if (cfg) {
        sdw_status s = sdw_scheduler_config_load(cfg, c, err);
        if (s) return s;
        if (!c->flow_matching)
            return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: %s is not a flow-matching "
                                 "scheduler (FLUX runs FlowMatchEulerDiscreteScheduler)",
                                 cfg, c->class_name[0] ? c->class_name : "(no class)");
    } else {
        *c = sdw_scheduler_config_default();
        snprintf(c->class_name, sizeof c->class_name, "FlowMatchEulerDiscreteScheduler");
        c->flow_matching = true;
        c->shift = dev ? 3.0 : 1.0;
        c->use_dynamic_shifting = dev;
    }
    c->flow_pipeline_sigmas = true; /* FluxPipeline passes linspace(1, 1/n, n) */
    return SDW_OK;
}

/* The transformer: a folder's transformer/ (config.json + weights), or a single file (BFL names
 * through their map, or diffusers names; the architecture from the shapes, heads from
 * <config>/transformer/config.json when there is one). */
static sdw_status load_transformer(flux_model *m, const char *path, const char *root,
                                   bool single, sdw_error *err) {
    char q[4096];
    sdw_status s;
    sdw_st_file *f;
    s = single ? sdw_diffusion_open_file(&m->d, path, &f, err)
               : sdw_diffusion_open_component(&m->d, root, "transformer",
                                              "diffusion_pytorch_model", &f, err);
    if (s) return s;
    path = sdw_st_path(f);
    const char *prefix = NULL;
    if (single && sdw_flux_bfl_detect(f, &prefix))
        m->w_dit = sdw_weights_create_viewed(f, prefix, sdw_flux_bfl_name, NULL);
    else
        m->w_dit = sdw_weights_create(f, "", NULL, NULL);
    sdw_diffusion_weights(&m->d, m->w_dit);
    sdw_flux_config c;
    const char *cfg = sdw_component_file(root, "transformer", "config.json", q, sizeof q);
    if (cfg) {
        if ((s = sdw_flux_config_load(cfg, &c, err))) return s;
        if (single) { /* the config gives the heads; the file must match its widths */
            sdw_flux_config shapes;
            if ((s = sdw_flux_config_infer_heads(m->w_dit, c.head_dim, c.axes_dim, &shapes, err)))
                goto fail;
            shapes.theta = c.theta;
            if (shapes.n_heads != c.n_heads || shapes.n_layers != c.n_layers ||
                shapes.n_single_layers != c.n_single_layers || shapes.in_channels != c.in_channels)
                SDW_WARN("%s: the transformer's shapes (%d + %d blocks, %d heads) differ from "
                         "%s; using the file's",
                         path, shapes.n_layers, shapes.n_single_layers, shapes.n_heads, cfg);
            c = shapes;
        }
    } else if ((s = sdw_flux_config_infer(m->w_dit, &c, err))) {
        goto fail;
    }
    if ((s = sdw_flux_transformer_create(m->w_dit, &c, &m->dit, err))) goto fail;
    return SDW_OK;
fail:
    sdw_error_prefix(err, "%s", path);
    return s;
}

/* ---- consistency and identity ---- */

static sdw_status check_parts(const flux_model *m, sdw_error *err) {
    const sdw_flux_config *fc = sdw_flux_transformer_config(m->dit);
    const sdw_t5_text_config *t5 = sdw_t5_text_get_config(m->t5.enc);
    const sdw_clip_text_config *clip = sdw_clip_text_get_config(m->clip.enc);
    const sdw_vae_config *v = sdw_vae_get_config(m->vae);
    if (t5->d_model != fc->joint_dim)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "the T5 encoder gives %d features per token, the transformer's "
                             "context_embedder takes %d (a T5 of another size?)",
                             t5->d_model, fc->joint_dim);
    if (clip->hidden != fc->pooled_dim)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "the CLIP encoder's pooled output has %d features, the "
                             "transformer's text embedder takes %d",
                             clip->hidden, fc->pooled_dim);
    if (v->latent_channels * 4 != fc->in_channels)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "the VAE has %d latent channels (%d per 2x2 patch), the transformer "
                             "takes %d per token%s",
                             v->latent_channels, v->latent_channels * 4, fc->in_channels,
                             fc->in_channels > v->latent_channels * 4
                                 ? " (FLUX Fill / Canny / Depth models are not supported)"
                                 : "");
    return SDW_OK;
}

static const char *flux_type(const sdw_image_model *m) { return "flux"; }
static const char *flux_variant(const sdw_image_model *m) {
    return ((const flux_model *)m)->d.variant;
}
static const sdw_capabilities *flux_caps(const sdw_image_model *m) {
    return &((const flux_model *)m)->d.caps;
}

/* diffusers' norm_out.linear, (scale | shift) rows, for a transformer bound from a layout that
 * stores the two halves apart (bind_norm_out). */
static const char *norm_out_alias(const char *name, char *buf, size_t cap, sdw_weight_view *view,
                                  void *user) {
    (void)user;
    const bool scale = strcmp(name, SDW_FLUX_NORM_OUT_SCALE ".weight") == 0;
    if (!scale && strcmp(name, SDW_FLUX_NORM_OUT_SHIFT ".weight") != 0) return NULL;
    *view = (sdw_weight_view){.split = 2, .first = scale ? 0 : 1};
    return snprintf(buf, cap, "norm_out.linear.weight") < (int)cap ? buf : NULL;
}

/* What LoRAs adapt: the transformer (diffusers names under transformer., kohya's and BFL's
 * under lora_unet_ / diffusion_model.: double_blocks_0_img_attn_qkv is split over the stacked
 * to_q | to_k | to_v) and the two text encoders (kohya's lora_te1 = CLIP-L, lora_te2 = T5). */
static void declare_lora_parts(flux_model *m) {
    sdw_diffusion_lora_part(
        &m->d, &(sdw_lora_part){.component = "transformer",
                                .dotted = {"transformer", "diffusion_model"},
                                .kohya = {"lora_unet", "lora_transformer"},
                                .ws = m->w_dit,
                                .alias = {sdw_flux_bfl_name, norm_out_alias}});
    sdw_diffusion_lora_part(&m->d, &(sdw_lora_part){.component = "text_encoder",
                                                    .dotted = {"text_encoder"},
                                                    .kohya = {"lora_te1", "lora_te"},
                                                    .ws = m->clip.w});
    sdw_diffusion_lora_part(&m->d, &(sdw_lora_part){.component = "text_encoder_2",
                                                    .dotted = {"text_encoder_2"},
                                                    .kohya = {"lora_te2"},
                                                    .ws = m->t5.w});
}

/* Capabilities as FluxPipeline's defaults: dev 28 steps, guidance 3.5 (embedded); schnell 4
 * steps, no guidance; default size default_sample_size (64) x vae_scale_factor (2^levels: the
 * VAE's factor x 2), 1024 px for the released models; sizes in steps of the VAE factor x the
 * 2x2 packing (16 px). */
static sdw_status finish_setup(flux_model *m, const sdw_load_options *opts, sdw_error *err) {
    const sdw_flux_config *fc = sdw_flux_transformer_config(m->dit);
    const bool dev = fc->guidance_embeds;
    snprintf(m->d.variant, sizeof m->d.variant, "%s", dev ? "dev" : "schnell");
    m->d.hooks = &sdw__flux_hooks;
    m->d.vae = m->vae;
    m->d.vae_factor = sdw_vae_downscale(m->vae);
    m->d.vae_scaling = m->vae_cfg.scaling_factor;
    m->d.vae_shift = m->vae_cfg.shift_factor;
    m->d.latent_channels = m->vae_cfg.latent_channels;
    m->d.denoiser_in_channels = m->d.latent_channels;
    m->d.guidance = SDW_GUIDANCE_EMBEDDED;
    m->d.patch = 2;
    if (m->d.latent_channels == 16) {
        m->d.preview_rgb = g_latent_rgb;
        m->d.preview_bias = g_latent_rgb_bias;
    }
    sdw_capabilities *c = &m->d.caps;
    *c = (sdw_capabilities){0};
    c->txt2img = true;
    c->img2img = c->inpainting = sdw_vae_has_encoder(m->vae);
    c->supports_guidance = dev;
    c->supports_negative_prompt = false;
    c->size_multiple = m->d.vae_factor * 2;
    c->min_size = SDW_MAX(64, c->size_multiple);
    c->max_size = 4096;
    c->max_steps = 1000;
    c->default_width = c->default_height = 64 * m->d.vae_factor * 2;
    c->default_steps = dev ? 28 : 4;
    c->default_guidance = dev ? 3.5f : 0.0f;
    c->schedulers = g_schedulers;
    c->params = g_params;
    declare_lora_parts(m);
    return sdw_diffusion_finish(&m->d, opts, err);
}

static void fmt_params(char *buf, size_t cap, size_t n) {
    if (n >= 1000000000) snprintf(buf, cap, "%.2fB [%zu]", n / 1e9, n);
    else if (n >= 1000000) snprintf(buf, cap, "%.1fM [%zu]", n / 1e6, n);
    else snprintf(buf, cap, "%.1fK [%zu]", n / 1e3, n);
}

static void flux_describe(const sdw_image_model *base, char *buf, size_t cap) {
    const flux_model *m = (const flux_model *)base;
    const sdw_flux_config *fc = sdw_flux_transformer_config(m->dit);
    const sdw_t5_text_config *t5 = sdw_t5_text_get_config(m->t5.enc);
    const sdw_clip_text_config *clip = sdw_clip_text_get_config(m->clip.enc);
    const sdw_scheduler_config *sc = &m->d.sched;
    char a[48];
    size_t o = 0, total = 0, n;
#define OUT(...) (o += (size_t)snprintf(buf + SDW_MIN(o, cap), o < cap ? cap - o : 0, __VA_ARGS__))
    if (sc->use_dynamic_shifting)
        OUT("scheduler:    flow matching, dynamic shift (mu %g..%g over %d..%d tokens)\n",
            sc->base_shift, sc->max_shift, sc->base_image_seq_len, sc->max_image_seq_len);
    else
        OUT("scheduler:    flow matching, shift %g\n", sc->shift);
    n = sdw_weights_n_params(m->clip.w);
    total += n;
    fmt_params(a, sizeof a, n);
    OUT("text encoder: CLIP, %d layers x %d (pooled output), %s parameters\n", clip->n_layers,
        clip->hidden, a);
    n = sdw_weights_n_params(m->t5.w);
    total += n;
    fmt_params(a, sizeof a, n);
    OUT("text encoder 2: T5, %d layers x %d, %s parameters\n", t5->n_layers, t5->d_model, a);
    n = sdw_flux_transformer_n_params(m->dit);
    total += n;
    fmt_params(a, sizeof a, n);
    OUT("transformer:  %d double + %d single blocks, %d heads x %d, %s parameters%s\n",
        fc->n_layers, fc->n_single_layers, fc->n_heads, fc->head_dim, a,
        fc->guidance_embeds ? " (guidance embedding)" : "");
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

/* `sdw tokenize` shows what T5 reads: its ids of the prompt, in a window of 512. */
static sdw_status flux_tokenize(const sdw_image_model *base, const char *prompt, int32_t **ids,
                                int *n, int *window, sdw_error *err) {
    const flux_model *m = (const flux_model *)base;
    *window = FLUX_T5_MAX;
    return sdw_t5_tokenize(m->t5.tokenizer, prompt, ids, n, err);
}

static void flux_destroy(sdw_image_model *base) {
    flux_model *m = (flux_model *)base;
    if (!m) return;
    sdw_vae_destroy(m->vae);
    sdw_flux_transformer_destroy(m->dit);
    sdw_t5_prompt_deinit(&m->t5);
    sdw_clip_prompt_deinit(&m->clip);
    sdw_weights_destroy(m->w_vae);
    sdw_weights_destroy(m->w_dit);
    sdw_diffusion_deinit(&m->d);
    free(m);
}

static const sdw_image_model_ops g_ops = {
    .model_type = flux_type,
    .model_variant = flux_variant,
    .capabilities = flux_caps,
    .generate = sdw_diffusion_generate,
    .describe = flux_describe,
    .tokenize = flux_tokenize,
    .destroy = flux_destroy,
};

/* A folder is its own root; a single transformer file takes the rest from --config. */
static sdw_status flux_load(const char *path, const sdw_load_options *opts, sdw_image_model **out,
                            sdw_error *err) {
    flux_model *m = sdw_xcalloc(1, sizeof *m);
    sdw_status s = sdw_diffusion_init(&m->d, &g_ops, path, opts, err);
    if (s) goto fail;
    const bool single = !is_dir(path);
    if (!single && opts->config_dir)
        SDW_WARN("--config is for single-file checkpoints; %s is a diffusers folder with its own "
                 "configs: ignored",
                 path);
    const char *root = single ? opts->config_dir : path;
    if (!root) { /* T5's tokenizer (spiece.model) exists only in a diffusers folder */
        s = sdw_error_set(err, SDW_E_NOT_FOUND,
                          "%s is a single FLUX transformer file: give --config DIR, a diffusers "
                          "FLUX folder with the tokenizers, scheduler and any component not "
                          "given as a file (--vae, --clip-l, --t5xxl)",
                          path);
        goto fail;
    }
    if ((s = load_transformer(m, path, root, single, err)) || (s = load_parts(m, root, opts, err)) ||
        (s = load_schedule(m, root, sdw_flux_transformer_config(m->dit)->guidance_embeds, err)) ||
        (s = check_parts(m, err)))
        goto fail;
    sdw_diffusion_warn_unused("transformer", m->w_dit);
    sdw_diffusion_warn_unused("text encoder", m->clip.w);
    sdw_diffusion_warn_unused("text encoder 2", m->t5.w);
    sdw_diffusion_warn_unused("vae", m->w_vae);
    if ((s = finish_setup(m, opts, err))) goto fail;
    *out = &m->d.base;
    return SDW_OK;
fail:
    flux_destroy(&m->d.base);
    return s;
}

static const sdw_model_option_spec g_options[] = {
    {"vae", "the autoencoder: BFL ae.safetensors or a diffusers VAE file"},
    {"clip_l", "the CLIP-L text encoder: transformers CLIPTextModel weights"},
    {"t5xxl", "the T5 encoder: transformers T5EncoderModel weights (16-bit or fp8)"},
    {"tokenizer", "the CLIP tokenizer folder (vocab.json + merges.txt)"},
    {NULL, NULL},
};

const sdw_model_family sdw_flux_family = {
    .name = "flux",
    .formats = "diffusers FluxPipeline folders; single transformer files "
               "(flux1-dev/flux1-schnell.safetensors, BFL or diffusers names) with --config DIR",
    .detect = flux_detect,
    .load = flux_load,
    .options = g_options,
};
