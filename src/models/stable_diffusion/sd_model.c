/* Loading the Stable Diffusion family from a diffusers folder or a single-file checkpoint, and
 * the model's identity (variant, capabilities, description). Generation is in sd_pipeline.c. */
#include "models/stable_diffusion/sd_impl.h"

#include "models/stable_diffusion/ldm_unet_names.h"
#include "nn/ldm_vae_names.h"
#include "nn/nn.h"
#include "sampling/sampler.h"

#include <jansson.h>
#include <string.h>
#include <sys/stat.h>

static const char *const g_schedulers[] = {"default", "karras", NULL};

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
        bool ok = cls && strncmp(cls, "StableDiffusion", 15) == 0;
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

static sdw_status open_file(sd_model *m, const char *path, sdw_st_file **out, sdw_error *err) {
    SDW_ASSERT(m->n_files < SD_MAX_FILES);
    sdw_status s = sdw_st_open(path, out, err);
    if (s == SDW_OK) m->files[m->n_files++] = *out;
    return s;
}

/* diffusers stores a component's weights as <dir>/<stem>.safetensors, or .fp16.safetensors for
 * the fp16 variant; a .bin there is a pickle, which sdw_st_open refuses with an explanation. */
static sdw_status open_component(sd_model *m, const char *root, const char *sub, const char *stem,
                                 sdw_st_file **out, sdw_error *err) {
    static const char *const exts[] = {".safetensors", ".fp16.safetensors", ".bin"};
    char p[4096];
    for (size_t i = 0; i < SDW_ARRAY_LEN(exts); i++) {
        snprintf(p, sizeof p, "%s/%s/%s%s", root, sub, stem, exts[i]);
        if (is_file(p)) return open_file(m, p, out, err);
    }
    return sdw_error_set(err, SDW_E_NOT_FOUND, "%s/%s/%s.safetensors is missing", root, sub, stem);
}

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
    bool is_xl = cls && strstr(cls, "XL") != NULL;
    bool known = cls && strncmp(cls, "StableDiffusion", 15) == 0;
    char cls_copy[128];
    snprintf(cls_copy, sizeof cls_copy, "%s", cls ? cls : "(none)");
    json_decref(idx);
    if (!known)
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: pipeline class %s is not Stable Diffusion",
                             p, cls_copy);
    if (is_xl)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: %s (SDXL) is not supported by this version of sdworker yet", dir,
                             cls_copy);

    /* tokenizer */
    snprintf(p, sizeof p, "%s/tokenizer", dir);
    if ((s = sdw_clip_tokenizer_load(opts->tokenizer_dir ? opts->tokenizer_dir : p, &m->tokenizer,
                                     err)))
        return s;
    m->pad_id = sdw_clip_tokenizer_pad(m->tokenizer);

    /* text encoder */
    sdw_st_file *f;
    sdw_clip_text_config tcfg;
    snprintf(p, sizeof p, "%s/text_encoder/config.json", dir);
    if ((s = sdw_clip_text_config_from_json(p, &tcfg, err))) return s;
    if ((s = open_component(m, dir, "text_encoder", "model", &f, err))) return s;
    m->w_text = sdw_weights_create(f, "", NULL, NULL);
    sdw_weights_set_precision(m->w_text, m->precision);
    if ((s = sdw_clip_text_create(m->w_text, &tcfg, &m->text, err))) return s;

    /* UNet */
    snprintf(p, sizeof p, "%s/unet/config.json", dir);
    if ((s = sdw_unet_config_load(p, &m->unet_cfg, err))) return s;
    if ((s = open_component(m, dir, "unet", "diffusion_pytorch_model", &f, err))) return s;
    m->w_unet = sdw_weights_create(f, "", NULL, NULL);
    sdw_weights_set_precision(m->w_unet, m->precision);
    if ((s = sdw_unet_create(m->w_unet, &m->unet_cfg, &m->unet, err))) return s;

    /* VAE */
    snprintf(p, sizeof p, "%s/vae/config.json", dir);
    if ((s = sdw_vae_config_load(p, &m->vae_cfg, err))) return s;
    if ((s = open_component(m, dir, "vae", "diffusion_pytorch_model", &f, err))) return s;
    m->w_vae = sdw_weights_create(f, "", NULL, NULL);
    sdw_weights_set_precision(m->w_vae, m->precision);
    if ((s = sdw_vae_create(m->w_vae, &m->vae_cfg, &m->vae, err))) return s;

    /* scheduler */
    snprintf(q, sizeof q, "%s/scheduler/scheduler_config.json", dir);
    if (is_file(q)) {
        if ((s = sdw_scheduler_config_load(q, &m->sched, err))) return s;
    } else {
        m->sched = sdw_scheduler_config_sd15();
    }
    return SDW_OK;
}

/* Head count of a single file's CLIP text encoder, which the shapes do not record. Every
 * released CLIP text tower uses 64-wide heads (ViT-L 768 = 12 x 64); narrower encoders are
 * test-sized models, for which the Hugging Face tiny test pipelines' convention is 4 heads. */
static int text_heads_for_width(int hidden) {
    if (hidden >= 256 && hidden % 64 == 0) return hidden / 64;
    return hidden % 4 == 0 ? 4 : 1;
}

/* Original (CompVis/LDM) single-file checkpoint: UNet under model.diffusion_model., VAE under
 * first_stage_model., CLIP ViT-L text model under cond_stage_model.transformer. (Hugging Face
 * names). Architecture comes from tensor shapes; the tokenizer must be supplied. */
static sdw_status load_single_file(sd_model *m, const char *path, const sdw_load_options *opts,
                                   sdw_error *err) {
    sdw_st_file *f;
    sdw_status s;
    if ((s = open_file(m, path, &f, err))) return s;
    if (!sdw_st_find(f, "model.diffusion_model.input_blocks.0.0.weight"))
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: not a Stable Diffusion checkpoint (no "
                             "model.diffusion_model.input_blocks.0.0.weight)",
                             path);
    if (sdw_st_find(f, "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding."
                       "weight"))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: SDXL single-file checkpoints are not supported by this version "
                             "of sdworker yet",
                             path);
    if (sdw_st_find(f, "cond_stage_model.model.token_embedding.weight"))
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: SD 2.x (OpenCLIP) single-file checkpoints are not supported by "
                             "this version of sdworker yet",
                             path);
    const char *text_prefix = "cond_stage_model.transformer.";
    if (!sdw_st_find(f, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"))
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: no text encoder found (expected "
                             "cond_stage_model.transformer.text_model.*)",
                             path);
    if (!opts->tokenizer_dir)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "%s is a single-file checkpoint without a tokenizer: pass --tokenizer "
                             "DIR (a folder with vocab.json and merges.txt, e.g. a diffusers "
                             "model's tokenizer/ folder)",
                             path);
    if ((s = sdw_clip_tokenizer_load(opts->tokenizer_dir, &m->tokenizer, err))) return s;
    m->pad_id = sdw_clip_tokenizer_pad(m->tokenizer);

    sdw_clip_text_config tcfg;
    m->w_text = sdw_weights_create(f, text_prefix, NULL, NULL);
    sdw_weights_set_precision(m->w_text, m->precision);
    if ((s = sdw_clip_text_config_infer(m->w_text, 0, SDW_CLIP_ACT_QUICK_GELU, &tcfg, err)))
        return s;
    if ((s = sdw_clip_text_config_infer(m->w_text, text_heads_for_width(tcfg.hidden),
                                        SDW_CLIP_ACT_QUICK_GELU, &tcfg, err)))
        return s;
    if ((s = sdw_clip_text_create(m->w_text, &tcfg, &m->text, err))) return s;

    /* The name maps read the configs, so these live in the model. */
    if ((s = sdw_unet_config_infer(f, "model.diffusion_model.", &m->unet_cfg, err))) return s;
    m->w_unet = sdw_weights_create(f, "model.diffusion_model.", sdw_ldm_unet_name, &m->unet_cfg);
    sdw_weights_set_precision(m->w_unet, m->precision);
    if ((s = sdw_unet_create(m->w_unet, &m->unet_cfg, &m->unet, err))) return s;

    if ((s = sdw_vae_config_infer(f, "first_stage_model.", &m->vae_cfg, err))) return s;
    m->w_vae = sdw_weights_create(f, "first_stage_model.", sdw_ldm_vae_name, &m->vae_cfg);
    sdw_weights_set_precision(m->w_vae, m->precision);
    if ((s = sdw_vae_create(m->w_vae, &m->vae_cfg, &m->vae, err))) return s;

    m->sched = sdw_scheduler_config_sd15();
    return SDW_OK;
}

/* ---- identity ---- */

static const char *sd_type(const sdw_image_model *m) { return "stable-diffusion"; }
static const char *sd_variant(const sdw_image_model *m) { return ((const sd_model *)m)->variant; }
static const sdw_capabilities *sd_caps(const sdw_image_model *m) {
    return &((const sd_model *)m)->caps;
}

void sdw__sd_finish_setup(sd_model *m) {
    const sdw_unet_config *u = sdw_unet_config_of(m->unet);
    const sdw_vae_config *v = sdw_vae_get_config(m->vae);
    m->vae_factor = sdw_vae_downscale(m->vae);
    m->vae_scaling = v->scaling_factor;
    m->latent_channels = v->latent_channels;
    bool inpaint = u->in_channels == 9;
    const char *base = u->cross_attention_dim >= 1024 ? "v2" : "v1";
    snprintf(m->variant, sizeof m->variant, "%s%s", base, inpaint ? "-inpaint" : "");

    int n = 0;
    for (const char *const *s = sdw_sampler_names(); *s && n < 15; s++) m->samplers[n++] = *s;
    m->samplers[n] = NULL;

    sdw_capabilities *c = &m->caps;
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
    c->size_multiple = SDW_MAX(8, m->vae_factor);
    c->min_size = 64;
    c->max_size = 4096;
    c->max_steps = 1000;
    /* SD 1.x/2.x-base are trained at 64x64 latents (512 px; the tiny fixtures' factor 2 gives
     * 128). */
    int native = 64 * m->vae_factor;
    c->default_width = c->default_height = native;
    c->default_steps = 20;
    c->default_guidance = 7.5f;
    c->samplers = m->samplers;
    /* diffusers runs the scheduler class the folder ships; unknown classes fall back to PNDM,
     * diffusers' SD 1.x default. */
    c->default_sampler = sdw_scheduler_config_sampler_name(&m->sched);
    if (!c->default_sampler) c->default_sampler = "pndm";
    c->schedulers = g_schedulers;
}

static void fmt_params(char *buf, size_t cap, size_t n) {
    if (n >= 1000000000) snprintf(buf, cap, "%.2fB", n / 1e9);
    else if (n >= 1000000) snprintf(buf, cap, "%.1fM", n / 1e6);
    else snprintf(buf, cap, "%.1fK", n / 1e3);
}

static void sd_describe(const sdw_image_model *base, char *buf, size_t cap) {
    const sd_model *m = (const sd_model *)base;
    char a[32], b[32], c[32], d[32];
    size_t nt = sdw_weights_n_params(m->w_text), nu = sdw_weights_n_params(m->w_unet),
           nv = sdw_weights_n_params(m->w_vae);
    fmt_params(a, sizeof a, nt);
    fmt_params(b, sizeof b, nu);
    fmt_params(c, sizeof c, nv);
    fmt_params(d, sizeof d, nt + nu + nv);
    snprintf(buf, cap,
             "prediction:   %s\n"
             "scheduler:    %s (%s spacing, steps offset %d)\n"
             "text encoder: CLIP, %s parameters\n"
             "unet:         %s parameters (%d input channels)\n"
             "vae:          %s parameters (scale factor %d, scaling %g)\n"
             "total:        %s parameters\n",
             sdw_prediction_type_str(m->sched.prediction_type),
             m->sched.class_name[0] ? m->sched.class_name : "SD 1.x default (PNDM)",
             sdw_timestep_spacing_str(m->sched.timestep_spacing),
             m->sched.steps_offset, a, b, sdw_unet_config_of(m->unet)->in_channels, c,
             m->vae_factor, (double)m->vae_scaling, d);
}

static sdw_status sd_tokenize(const sdw_image_model *base, const char *prompt, int32_t **ids,
                              int *n, int *window, sdw_error *err) {
    const sd_model *m = (const sd_model *)base;
    *window = SD_TEXT_WINDOW;
    return sdw_clip_tokenize(m->tokenizer, prompt, ids, n, err);
}

void sdw__sd_destroy(sdw_image_model *base) {
    sd_model *m = (sd_model *)base;
    if (!m) return;
    sdw_vae_destroy(m->vae);
    sdw_unet_destroy(m->unet);
    sdw_clip_text_destroy(m->text);
    sdw_clip_tokenizer_destroy(m->tokenizer);
    sdw_weights_destroy(m->w_vae);
    sdw_weights_destroy(m->w_unet);
    sdw_weights_destroy(m->w_text);
    for (int i = 0; i < m->n_files; i++) sdw_st_close(m->files[i]);
    free(m);
}

const sdw_image_model_ops sdw__sd_ops = {
    .model_type = sd_type,
    .model_variant = sd_variant,
    .capabilities = sd_caps,
    .generate = sdw__sd_generate,
    .describe = sd_describe,
    .tokenize = sd_tokenize,
    .destroy = sdw__sd_destroy,
};

/* Warns about tensors a checkpoint carries that no component used (EMA copies, extra heads): a
 * wrong-architecture guess shows up here first. */
static void warn_unused(const char *what, const sdw_weights *ws) {
    char names[512];
    int n = ws ? sdw_weights_unused(ws, names, sizeof names) : 0;
    if (n) SDW_WARN("%s: %d tensors were not used (%s)", what, n, names);
}

static sdw_status sd_load(const char *path, const sdw_load_options *opts, sdw_image_model **out,
                          sdw_error *err) {
    sd_model *m = sdw_xcalloc(1, sizeof *m);
    m->base.ops = &sdw__sd_ops;
    m->n_threads = opts->n_threads;
    m->precision = sdw_nn_precision_resolve(opts->precision);
    sdw_status s;
    if (is_dir(path)) {
        s = load_folder(m, path, opts, err);
    } else {
        s = load_single_file(m, path, opts, err);
    }
    if (s) goto fail;
    if (opts->prediction) {
        m->sched.prediction_type = strcmp(opts->prediction, "v") == 0 ? SDW_PRED_V : SDW_PRED_EPSILON;
    }
    warn_unused("text encoder", m->w_text);
    warn_unused("unet", m->w_unet);
    warn_unused("vae", m->w_vae);
    sdw__sd_finish_setup(m);
    *out = &m->base;
    return SDW_OK;
fail:
    sdw__sd_destroy(&m->base);
    return s;
}

void sdw_sd_set_tap(sdw_image_model *base, sdw_sd_tap_fn fn, void *user) {
    SDW_ASSERT(base->ops == &sdw__sd_ops);
    sd_model *m = (sd_model *)base;
    m->tap = fn;
    m->tap_user = user;
}

const sdw_model_family sdw_stable_diffusion_family = {
    .name = "stable-diffusion",
    .detect = sd_detect,
    .load = sd_load,
    .load_demo = sdw__sd_load_demo,
};
