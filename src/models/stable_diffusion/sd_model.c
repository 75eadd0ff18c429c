/* Loading the Stable Diffusion family (SD 1.x, 2.x, XL, XL-Turbo, inpainting) from a diffusers
 * folder, dispatch to the single-file loader (sd_single_file.c), and the model's identity
 * (variant, capabilities, description). Generation is the shared core (models/diffusion.c)
 * with this family's hooks (sd_denoise.c). */
#include "models/stable_diffusion/sd_impl.h"

#include "models/lora.h"
#include "models/stable_diffusion/ldm_unet_names.h"
#include "nn/ldm_vae_names.h"
#include "nn/nn.h"
#include "sampling/sampler.h"

#include <jansson.h>
#include <string.h>
#include <sys/stat.h>

/* "trailing" runs the model's schedule with trailing timestep spacing (models/diffusion.c). */
static const char *const g_schedulers[] = {"default", "karras", "trailing", NULL};

/* ---- small path helpers ---- */

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* ---- detection ---- */

static bool sd_detect(const char *path) {
    char p[4096];
    if (is_dir(path)) {
        snprintf(p, sizeof p, "%s/model_index.json", path);
        json_t *idx = json_load_file(p, 0, NULL);
        const char *cls = json_string_value(json_object_get(idx, "_class_name"));
        /* StableDiffusion[XL][Inpaint|Img2Img]Pipeline; SD3's MMDiT pipelines are another
         * family. */
        bool ok = cls && strncmp(cls, "StableDiffusion", 15) == 0 &&
                  strncmp(cls, "StableDiffusion3", 16) != 0;
        json_decref(idx);
        return ok;
    }
    if (!ends_with(path, ".safetensors")) return false;
    sdw_st_file *f = NULL;
    if (sdw_st_open(path, &f, NULL) != SDW_OK) return false;
    bool ok = sdw_st_find(f, "model.diffusion_model.input_blocks.0.0.weight") != NULL;
    sdw_st_close(f);
    return ok;
}

/* ---- component loading ---- */

/* True when model_index.json lists component `name` (a [library, class] pair, not [null, null]). */
static bool has_component(json_t *idx, const char *name) {
    json_t *v = json_object_get(idx, name);
    return json_is_array(v) && json_is_string(json_array_get(v, 1));
}

/* One text encoder of a folder: <dir>/<tok_sub> (its own pad token), <dir>/<te_sub>. A folder
 * without the tokenizer falls back to the "tokenizer" option. */
static sdw_status load_folder_text(sd_model *m, const char *dir, const char *tok_sub,
                                   const char *te_sub, const sdw_load_options *opts,
                                   sd_text_encoder *te, sdw_error *err) {
    char p[4096];
    sdw_status s;
    snprintf(p, sizeof p, "%s/%s", dir, tok_sub);
    const char *given = sdw_load_option(opts, "tokenizer");
    const char *tok_dir = is_dir(p) || !given ? p : given;
    if ((s = sdw_clip_tokenizer_load(tok_dir, &te->tokenizer, err))) return s;
    te->pad_id = sdw_clip_tokenizer_pad(te->tokenizer);
    sdw_clip_text_config tcfg;
    snprintf(p, sizeof p, "%s/%s/config.json", dir, te_sub);
    if ((s = sdw_clip_text_config_from_json(p, &tcfg, err))) return s;
    sdw_st_file *f;
    if ((s = sdw_diffusion_open_component(&m->d, dir, te_sub, "model", &f, err))) return s;
    te->w = sdw_weights_create(f, "", NULL, NULL);
    sdw_diffusion_weights(&m->d, te->w);
    return sdw_clip_text_create(te->w, &tcfg, &te->enc, err);
}

/* A diffusers pipeline folder: StableDiffusion[Inpaint]Pipeline (SD 1.x/2.x: one encoder, its
 * last hidden state) or StableDiffusionXL[Inpaint]Pipeline (two encoders, penultimate states,
 * pooled projection of the second, text_time UNet conditioning). */
static sdw_status load_folder(sd_model *m, const char *dir, const sdw_load_options *opts,
                              sdw_error *err) {
    char p[4096], q[4096];
    sdw_status s;
    snprintf(p, sizeof p, "%s/model_index.json", dir);
    json_error_t je;
    json_t *idx = json_load_file(p, 0, &je);
    if (!idx)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s is not a diffusers model folder (model_index.json: %s)", dir,
                             je.text);
    const char *cls = json_string_value(json_object_get(idx, "_class_name"));
    char cls_copy[128];
    snprintf(cls_copy, sizeof cls_copy, "%s", cls ? cls : "(none)");
    const bool known = cls && strncmp(cls, "StableDiffusion", 15) == 0;
    const bool xl = cls && strncmp(cls, "StableDiffusionXL", 17) == 0;
    const bool has_te1 = has_component(idx, "text_encoder");
    const bool has_te2 = has_component(idx, "text_encoder_2");
    /* StableDiffusionXLPipeline's constructor default is true. */
    json_t *fz = json_object_get(idx, "force_zeros_for_empty_prompt");
    m->zero_uncond = xl && (fz ? json_is_true(fz) : true);
    json_decref(idx);
    if (!known)
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: pipeline class %s is not Stable Diffusion",
                             p, cls_copy);
    if (!has_te1)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: %s without text_encoder (an SDXL refiner) is not supported", dir,
                             cls_copy);
    if (has_te2 && !xl)
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: %s with a text_encoder_2 is not "
                             "supported", dir, cls_copy);
    if (xl && !has_te2)
        return sdw_error_set(err, SDW_E_FORMAT, "%s: %s needs text_encoder_2", dir, cls_copy);

    /* text encoders: SDXL takes both encoders' penultimate states (hidden_states[-2], no final
     * layer norm) and the second one's projected pooled output. */
    m->n_te = xl ? 2 : 1;
    m->pooled_te = xl ? 1 : -1;
    for (int k = 0; k < m->n_te; k++) {
        sd_text_encoder *te = &m->te[k];
        te->params = sdw_clip_text_params_default();
        if (xl) {
            te->params.skip_layers = 1;
            te->params.final_norm = false;
            te->params.project_pooled = k == m->pooled_te;
        }
        if (k) snprintf(te->tap, sizeof te->tap, "te%d", k + 1); /* the reference's "te2" */
        else snprintf(te->tap, sizeof te->tap, "te");
        if ((s = load_folder_text(m, dir, k ? "tokenizer_2" : "tokenizer",
                                  k ? "text_encoder_2" : "text_encoder", opts, te, err)))
            return s;
    }

    /* UNet */
    sdw_st_file *f;
    snprintf(p, sizeof p, "%s/unet/config.json", dir);
    if ((s = sdw_unet_config_load(p, &m->unet_cfg, err))) return s;
    m->native_latent = sdw__sd_unet_sample_size(p);
    if ((s = sdw_diffusion_open_component(&m->d, dir, "unet", "diffusion_pytorch_model", &f, err))) return s;
    m->w_unet = sdw_weights_create(f, "", NULL, NULL);
    sdw_diffusion_weights(&m->d, m->w_unet);
    if ((s = sdw_unet_create(m->w_unet, &m->unet_cfg, &m->unet, err))) return s;

    /* VAE */
    snprintf(p, sizeof p, "%s/vae/config.json", dir);
    if ((s = sdw_vae_config_load(p, &m->vae_cfg, err)) ||
        (s = sdw_vae_sample_size_load(p, &m->d.vae_sample_size, err))) /* tiled decoding's tile */
        return s;
    if ((s = sdw_diffusion_open_component(&m->d, dir, "vae", "diffusion_pytorch_model", &f, err))) return s;
    m->w_vae = sdw_weights_create(f, "", NULL, NULL);
    sdw_diffusion_weights(&m->d, m->w_vae);
    if ((s = sdw_vae_create_lazy(m->w_vae, &m->vae_cfg, &m->vae, err))) return s;

    /* scheduler */
    snprintf(q, sizeof q, "%s/scheduler/scheduler_config.json", dir);
    if (is_file(q)) {
        if ((s = sdw_scheduler_config_load(q, &m->d.sched, err))) return s;
    } else {
        m->d.sched = sdw_scheduler_config_sd15();
    }
    return SDW_OK;
}

sdw_status sdw__sd_check_parts(const sd_model *m, sdw_error *err) {
    const sdw_unet_config *u = sdw_unet_config_of(m->unet);
    int width = 0;
    for (int k = 0; k < m->n_te; k++) width += sdw_clip_text_get_config(m->te[k].enc)->hidden;
    if (width != u->cross_attention_dim)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "the text encoders give %d features per token, the UNet's "
                             "cross-attention takes %d",
                             width, u->cross_attention_dim);
    if (u->add_text_time != (m->pooled_te >= 0))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "the UNet %s text_time conditioning but the text side %s a pooled "
                             "embedding",
                             u->add_text_time ? "takes" : "does not take",
                             m->pooled_te >= 0 ? "gives" : "has no");
    if (m->pooled_te >= 0) {
        const sdw_clip_text_config *c = sdw_clip_text_get_config(m->te[m->pooled_te].enc);
        int pooled = m->te[m->pooled_te].params.project_pooled ? c->projection_dim : c->hidden;
        if (pooled != u->add_text_dim)
            return sdw_error_set(err, SDW_E_SHAPE,
                                 "the pooled text embedding has %d features, the UNet's text_time "
                                 "conditioning takes %d",
                                 pooled, u->add_text_dim);
    }
    return SDW_OK;
}

/* ---- identity ---- */

static const char *sd_type(const sdw_image_model *m) { return "stable-diffusion"; }
static const char *sd_variant(const sdw_image_model *m) { return ((const sd_model *)m)->d.variant; }
static const sdw_capabilities *sd_caps(const sdw_image_model *m) {
    return &((const sd_model *)m)->d.caps;
}

/* SDXL's micro-conditioning (the UNet's text_time ids: diffusers' original_size,
 * crops_coords_top_left, target_size), in pixels; 0 = diffusers' default (the image size, crop
 * at 0). */
static const sdw_param_spec g_xl_params[] = {
    {"original_width", 0, 65536, 0, true, "SDXL: original image width the UNet is told (0: the image's)"},
    {"original_height", 0, 65536, 0, true, "SDXL: original image height (0: the image's)"},
    {"crop_left", 0, 65536, 0, true, "SDXL: crop coordinate left"},
    {"crop_top", 0, 65536, 0, true, "SDXL: crop coordinate top"},
    {"target_width", 0, 65536, 0, true, "SDXL: target width (0: the image's)"},
    {"target_height", 0, 65536, 0, true, "SDXL: target height (0: the image's)"},
    {NULL, 0, 0, 0, false, NULL},
};

/* Latent -> RGB for previews: the factors ComfyUI and AUTOMATIC1111 use for SD 1.x/2.x/XL
 * latents' cheap previews. */
static const float g_latent_rgb[4][3] = {
    {0.3512f, 0.2297f, 0.3227f},
    {0.3250f, 0.4974f, 0.2350f},
    {-0.2829f, 0.1762f, 0.2721f},
    {-0.2120f, -0.2616f, -0.7177f},
};

/* Variant names, from the loaded parts (never from a file name):
 *   "xl"  the UNet takes text_time conditioning (SDXL); "xl-turbo" when its schedule uses
 *         trailing timestep spacing — the few-step, guidance-distilled schedule SDXL-Turbo ships
 *         (Turbo's weights cannot be told from base's; its scheduler config says it);
 *   "v2"  the (first) text encoder is OpenCLIP (GELU; OpenAI's CLIP uses quick-GELU), with
 *         "-v" for v-prediction (768-v) — SD 2.x;
 *   "v1"  otherwise (OpenAI CLIP-L, SD 1.x);
 * and "-inpaint" for a 9-channel UNet (latents + mask + masked-image latents). */
static void name_variant(sd_model *m, bool inpaint, bool xl, bool turbo) {
    const sdw_clip_text_config *t = sdw_clip_text_get_config(m->te[0].enc);
    const char *base = xl ? (turbo ? "xl-turbo" : "xl")
                     : t->act == SDW_CLIP_ACT_GELU
                         ? (m->d.sched.prediction_type == SDW_PRED_V ? "v2-v" : "v2")
                         : "v1";
    snprintf(m->d.variant, sizeof m->d.variant, "%s%s", base, inpaint ? "-inpaint" : "");
}

/* The UNet's other names in LoRA files: kohya's SDXL LoRAs spell its layers as the SGM
 * checkpoint does (input_blocks.4.1.transformer_blocks.0.attn1.to_q), the LDM map's names. */
static const char *ldm_alias(const char *name, char *buf, size_t cap, sdw_weight_view *view,
                             void *user) {
    (void)view;
    return sdw_ldm_unet_name(name, buf, cap, user);
}

/* What LoRAs adapt: the UNet and every text encoder, under the names kohya-ss and diffusers
 * give them (SDXL: lora_te1 / text_encoder is CLIP-L, lora_te2 / text_encoder_2 OpenCLIP-G). */
static void declare_lora_parts(sd_model *m) {
    sdw_diffusion_lora_part(&m->d, &(sdw_lora_part){.component = "unet",
                                                    .dotted = {"unet"},
                                                    .kohya = {"lora_unet"},
                                                    .ws = m->w_unet,
                                                    .alias = {ldm_alias},
                                                    .alias_user = {&m->unet_cfg}});
    for (int k = 0; k < m->n_te; k++)
        sdw_diffusion_lora_part(
            &m->d, &(sdw_lora_part){.component = k ? "text_encoder_2" : "text_encoder",
                                    .dotted = {k ? "text_encoder_2" : "text_encoder"},
                                    .kohya = {k ? "lora_te2" : "lora_te", k ? NULL : "lora_te1"},
                                    .ws = m->te[k].w});
}

sdw_status sdw__sd_finish_setup(sd_model *m, const sdw_load_options *opts, sdw_error *err) {
    const sdw_unet_config *u = sdw_unet_config_of(m->unet);
    const sdw_vae_config *v = sdw_vae_get_config(m->vae);
    m->d.vae_factor = sdw_vae_downscale(m->vae);
    m->d.vae_scaling = v->scaling_factor;
    m->d.latent_channels = v->latent_channels;
    const bool inpaint = u->in_channels == 9;
    const bool xl = u->add_text_time;
    const bool turbo = xl && m->d.sched.timestep_spacing == SDW_SPACING_TRAILING;
    name_variant(m, inpaint, xl, turbo);

    m->d.vae = m->vae;
    m->d.vae_shift = v->shift_factor;
    m->d.denoiser_in_channels = u->in_channels;
    m->d.guidance = SDW_GUIDANCE_CFG;
    m->d.patch = 1;
    m->d.preview_rgb = g_latent_rgb;
    m->d.hooks = &sdw__sd_hooks;

    sdw_capabilities *c = &m->d.caps;
    *c = (sdw_capabilities){0};
    /* A 9-channel inpainting UNet needs a masked image: diffusers has no text-to-image for it
     * (StableDiffusionPipeline fails on its conv_in; the inpainting pipeline requires an image
     * and a mask), so neither has sdworker. Image-to-image on it runs as inpainting with an
     * all-white mask (what the inpainting pipeline does given one). Both image modes need
     * the VAE's encoder. */
    c->txt2img = !inpaint;
    c->img2img = c->inpainting = sdw_vae_has_encoder(m->vae);
    c->supports_guidance = true;
    c->supports_negative_prompt = true;
    /* diffusers checks multiples of 8 whatever the VAE factor; the UNet copes with odd latent
     * sizes like diffusers does (upsample to the skip's size). */
    c->size_multiple = SDW_MAX(8, m->d.vae_factor);
    c->min_size = 64;
    c->max_size = 4096;
    c->max_steps = 1000;
    /* diffusers' default size: unet sample_size latents (SD 1.x/2-base 64 = 512 px, 768-v 96,
     * XL 128 = 1024 px; the tiny fixtures' 32 with factor 2 = 64 px). */
    c->default_width = c->default_height = (m->native_latent > 0 ? m->native_latent : 64) *
                                           m->d.vae_factor;
    c->default_steps = 20;
    c->default_guidance = xl ? 5.0f : 7.5f; /* the pipelines' defaults */
    /* diffusers runs the scheduler class the folder ships; unknown classes fall back to PNDM,
     * diffusers' SD 1.x default. */
    c->default_sampler = sdw_scheduler_config_sampler_name(&m->d.sched);
    if (!c->default_sampler) c->default_sampler = "pndm";
    c->schedulers = g_schedulers;
    c->params = xl ? g_xl_params : NULL;
    /* ControlNets: loaded when a request names one, and kept (controlnet_run.c) */
    c->controlnet = true;
    if (opts && opts->controlnet_dir) {
        if (!is_dir(opts->controlnet_dir))
            return sdw_error_set(err, SDW_E_NOT_FOUND, "ControlNet folder %s is not a folder",
                                 opts->controlnet_dir);
        m->controlnet_dir = sdw_xstrdup(opts->controlnet_dir);
        c->controlnet_dir = m->controlnet_dir;
    }
    if (turbo) {
        /* Guidance-distilled: one UNet call of batch 1 per step, no negative prompt; 1 step is
         * its model card's setting (1-4 are what it was distilled for). */
        c->supports_guidance = false;
        c->supports_negative_prompt = false;
        c->default_guidance = 0.0f;
        c->default_steps = 1;
    }
    declare_lora_parts(m);
    return sdw_diffusion_finish(&m->d, opts, err);
}

/* "2.57B [2567463684]": rounded for people, exact for comparing with other tools. */
static void fmt_params(char *buf, size_t cap, size_t n) {
    if (n >= 1000000000) snprintf(buf, cap, "%.2fB [%zu]", n / 1e9, n);
    else if (n >= 1000000) snprintf(buf, cap, "%.1fM [%zu]", n / 1e6, n);
    else snprintf(buf, cap, "%.1fK [%zu]", n / 1e3, n);
}

static void sd_describe(const sd_model *m, char *buf, size_t cap) {
    char a[48];
    size_t o = 0, total = 0;
#define OUT(...) (o += (size_t)snprintf(buf + SDW_MIN(o, cap), o < cap ? cap - o : 0, __VA_ARGS__))
    OUT("prediction:   %s\n", sdw_prediction_type_str(m->d.sched.prediction_type));
    OUT("scheduler:    %s (%s spacing, steps offset %d)\n",
        m->d.sched.class_name[0] ? m->d.sched.class_name : "SD 1.x default (PNDM)",
        sdw_timestep_spacing_str(m->d.sched.timestep_spacing), m->d.sched.steps_offset);
    for (int k = 0; k < m->n_te; k++) {
        const sdw_clip_text_config *t = sdw_clip_text_get_config(m->te[k].enc);
        size_t n = sdw_weights_n_params(m->te[k].w);
        total += n;
        fmt_params(a, sizeof a, n);
        OUT("%s %s, %d layers x %d%s, %s parameters\n", k ? "text encoder 2:" : "text encoder:",
            t->act == SDW_CLIP_ACT_GELU ? "OpenCLIP" : "CLIP", t->n_layers, t->hidden,
            m->te[k].params.skip_layers ? " (penultimate state)" : "", a);
    }
    size_t nu = sdw_weights_n_params(m->w_unet), nv = sdw_vae_n_params(m->vae);
    total += nu + nv;
    fmt_params(a, sizeof a, nu);
    OUT("unet:         %s parameters (%d input channels%s)\n", a,
        sdw_unet_config_of(m->unet)->in_channels,
        sdw_unet_config_of(m->unet)->add_text_time ? ", text_time conditioning" : "");
    fmt_params(a, sizeof a, nv);
    OUT("vae:          %s parameters (scale factor %d, scaling %g)\n", a, m->d.vae_factor,
        (double)m->d.vae_scaling);
    fmt_params(a, sizeof a, total);
    OUT("total:        %s parameters\n", a);
#undef OUT
}

static void sd_describe_op(const sdw_image_model *base, char *buf, size_t cap) {
    sd_describe((const sd_model *)base, buf, cap);
}

static sdw_status sd_tokenize(const sdw_image_model *base, const char *prompt, int32_t **ids,
                              int *n, int *window, sdw_error *err) {
    const sd_model *m = (const sd_model *)base;
    *window = SD_TEXT_WINDOW;
    return sdw_clip_tokenize(m->te[0].tokenizer, prompt, ids, n, err);
}

void sdw__sd_destroy(sdw_image_model *base) {
    sd_model *m = (sd_model *)base;
    if (!m) return;
    sdw__sd_controlnets_unload(m); /* bound on the model's backend: before it goes */
    free(m->controlnet_dir);
    sdw_vae_destroy(m->vae);
    sdw_unet_destroy(m->unet);
    for (int k = 0; k < SD_MAX_TEXT; k++)
        sdw_clip_prompt_deinit(&m->te[k]);
    sdw_weights_destroy(m->w_vae);
    sdw_weights_destroy(m->w_unet);
    sdw_diffusion_deinit(&m->d);
    free(m);
}

const sdw_image_model_ops sdw__sd_ops = {
    .model_type = sd_type,
    .model_variant = sd_variant,
    .capabilities = sd_caps,
    .generate = sdw_diffusion_generate,
    .describe = sd_describe_op,
    .tokenize = sd_tokenize,
    .destroy = sdw__sd_destroy,
};

/* Warns about tensors a checkpoint carries that no component used (EMA copies, extra heads): a
 * wrong-architecture guess shows up here first. */
/* The family's load options: values checked here, once, before anything is read. */
static sdw_status check_options(const sdw_load_options *opts, sdw_error *err) {
    const char *p = sdw_load_option(opts, "prediction");
    if (p && strcmp(p, "eps") != 0 && strcmp(p, "v") != 0)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "prediction '%s' must be eps or v", p);
    static const char *const ints[] = {"unet_heads", "unet_head_dim"};
    for (size_t i = 0; i < SDW_ARRAY_LEN(ints); i++) {
        const char *v = sdw_load_option(opts, ints[i]);
        char *end;
        long x = v ? strtol(v, &end, 10) : 0;
        if (v && (!*v || *end || x < 1 || x > 1024))
            return sdw_error_set(err, SDW_E_INVALID_ARG, "%s '%s' must be a whole number in "
                                 "[1, 1024]", ints[i], v);
    }
    return SDW_OK;
}

static sdw_status sd_load(const char *path, const sdw_load_options *opts, sdw_image_model **out,
                          sdw_error *err) {
    sdw_status s = check_options(opts, err);
    if (s) return s;
    sd_model *m = sdw_xcalloc(1, sizeof *m);
    if ((s = sdw_diffusion_init(&m->d, &sdw__sd_ops, path, opts, err))) goto fail;
    if (is_dir(path)) {
        if (opts->config_dir)
            SDW_WARN("--config is for single-file checkpoints; %s is a diffusers folder with its "
                     "own configs: ignored",
                     path);
        s = load_folder(m, path, opts, err);
    } else {
        s = sdw__sd_load_single_file(m, path, opts, err);
    }
    if (!s) s = sdw__sd_check_parts(m, err);
    if (s) goto fail;
    const char *prediction = sdw_load_option(opts, "prediction");
    if (prediction)
        m->d.sched.prediction_type = strcmp(prediction, "v") == 0 ? SDW_PRED_V : SDW_PRED_EPSILON;
    for (int k = 0; k < m->n_te; k++)
        sdw_diffusion_warn_unused(k ? "text encoder 2" : "text encoder", m->te[k].w);
    sdw_diffusion_warn_unused("unet", m->w_unet);
    sdw_diffusion_warn_unused("vae", m->w_vae);
    if ((s = sdw__sd_finish_setup(m, opts, err))) goto fail;
    *out = &m->d.base;
    return SDW_OK;
fail:
    sdw__sd_destroy(&m->d.base);
    return s;
}

static const sdw_model_option_spec g_options[] = {
    {"tokenizer", "folder with vocab.json + merges.txt (single files carry no tokenizer)"},
    {"prediction", "eps | v: override the detected prediction type"},
    {"scheduler_config", "a diffusers scheduler_config.json for a single file"},
    {"unet_heads", "attention heads of every UNet block (single files do not record them)"},
    {"unet_head_dim", "attention head size of every UNet block (single files)"},
    {NULL, NULL},
};

const sdw_model_family sdw_stable_diffusion_family = {
    .name = "stable-diffusion",
    .formats = "diffusers StableDiffusion[XL][Inpaint]Pipeline folders; single .safetensors "
               "checkpoints with model.diffusion_model.* (SD 1.x, 2.x, SDXL)",
    .detect = sd_detect,
    .load = sd_load,
    .load_demo = sdw__sd_load_demo,
    .options = g_options,
};
