/* Single-file checkpoints of the Stable Diffusion family, in the original layouts people
 * download (the file carries no config and no tokenizer):
 *   SD 1.x (CompVis)  model.diffusion_model.*, first_stage_model.*,
 *                     cond_stage_model.transformer.text_model.*   OpenAI CLIP-L, HF names
 *   SD 2.x            cond_stage_model.model.*                     OpenCLIP-H: fused in_proj
 *                     q|k|v, text_projection, logit_scale, and a last layer SD 2 never uses
 *   SDXL (SGM)        conditioner.embedders.0.transformer.text_model.*   CLIP-L, HF names
 *                     conditioner.embedders.1.model.*              OpenCLIP-bigG (as SD 2's)
 * The layout is told by these prefixes (not by widths: the tiny fixtures' encoders are all 32
 * wide). Architectures come from the tensor shapes; what shapes cannot tell comes from the
 * released models, as diffusers' from_single_file (0.25) and ComfyUI assume it, each fact
 * stated where it is applied. */
#include "models/stable_diffusion/sd_impl.h"

#include "models/stable_diffusion/ldm_unet_names.h"
#include "nn/ldm_vae_names.h"
#include "text/openclip_names.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* What one text encoder of a layout is and how the family uses it. */
typedef struct text_spec {
    const char *prefix;    /* where its tensors sit */
    bool openclip;         /* OpenCLIP names and GELU; else transformers names and quick-GELU */
    const char *pad_token; /* NULL = the tokenizer folder's */
    /* SD 2.x conditions on the penultimate layer + final layer norm: diffusers drops the last
     * layer at conversion and runs the rest with its final norm; so do we (its tensors are
     * accounted for as unused). */
    bool drop_last_layer;
    bool projection;  /* keep text_projection (SDXL's pooled text_embeds); else unused */
    bool penultimate; /* SDXL: hidden_states[-2] without the final layer norm */
} text_spec;

/* Head count of a single file's CLIP text encoder, which the shapes do not record. Every
 * released CLIP text tower uses 64-wide heads (ViT-L 768 = 12 x 64, OpenCLIP-H 1024 = 16 x 64,
 * bigG 1280 = 20 x 64); narrower encoders are test-sized models, for which the Hugging Face
 * tiny test pipelines' convention is 4 heads. */
static int text_heads_for_width(int hidden) {
    if (hidden >= 256 && hidden % 64 == 0) return hidden / 64;
    return hidden % 4 == 0 ? 4 : 1;
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* "<config_dir>/<sub>/<leaf>" when the config folder has that file, else NULL. */
static const char *config_file(const sdw_load_options *opts, const char *sub, const char *leaf,
                               char *buf, size_t size) {
    if (!opts->config_dir) return NULL;
    snprintf(buf, size, "%s/%s/%s", opts->config_dir, sub, leaf);
    return is_file(buf) ? buf : NULL;
}

/* Encoder k's vocabulary: --tokenizer, else the config folder's tokenizer/ (tokenizer_2/ for the
 * second encoder, falling back to tokenizer/). The pad token stays the layout's fact. */
static const char *tokenizer_dir(const sdw_load_options *opts, int k, char *buf, size_t size) {
    const char *given = sdw_load_option(opts, "tokenizer");
    if (given) return given;
    char f[4096];
    for (int i = k; i >= 0; i--) {
        const char *sub = i ? "tokenizer_2" : "tokenizer";
        if (config_file(opts, sub, "vocab.json", f, sizeof f)) {
            snprintf(buf, size, "%s/%s", opts->config_dir, sub);
            return buf;
        }
    }
    return NULL;
}

static sdw_status load_text(sdw_st_file *f, const text_spec *sp, const char *tok_dir,
                            const sdw_diffusion *d, sd_text_encoder *te, sdw_error *err) {
    sdw_status s;
    if ((s = sdw_clip_tokenizer_load_ex(tok_dir, sp->pad_token, &te->tokenizer, err))) return s;
    te->pad_id = sdw_clip_tokenizer_pad(te->tokenizer);
    te->w = sp->openclip ? sdw_weights_create_viewed(f, sp->prefix, sdw_openclip_text_name, NULL)
                         : sdw_weights_create(f, sp->prefix, NULL, NULL);
    sdw_diffusion_weights(d, te->w);
    const sdw_clip_act act = sp->openclip ? SDW_CLIP_ACT_GELU : SDW_CLIP_ACT_QUICK_GELU;
    sdw_clip_text_config c;
    if ((s = sdw_clip_text_config_infer(te->w, 0, act, &c, err)) ||
        (s = sdw_clip_text_config_infer(te->w, text_heads_for_width(c.hidden), act, &c, err))) {
        sdw_error_prefix(err, "%s: text encoder under %s", sdw_st_path(f), sp->prefix);
        return s;
    }
    if (sp->drop_last_layer) {
        if (c.n_layers < 2)
            return sdw_error_set(err, SDW_E_FORMAT,
                                 "%s: %s has %d layer(s); SD 2.x conditions on "
                                 "the penultimate one",
                                 sdw_st_path(f), sp->prefix, c.n_layers);
        char last[64];
        snprintf(last, sizeof last, "transformer.resblocks.%d.", --c.n_layers);
        sdw_weights_ignore(te->w, last);
    }
    if (!sp->projection) {
        c.projection_dim = 0;
        sdw_weights_ignore(te->w, sp->openclip ? "text_projection" : "text_projection.");
    }
    if (sp->openclip) sdw_weights_ignore(te->w, "logit_scale"); /* CLIP's contrastive scale */
    te->params = sdw_clip_text_params_default();
    if (sp->penultimate) {
        te->params.skip_layers = 1;
        te->params.final_norm = false;
    }
    te->params.project_pooled = sp->projection;
    return sdw_clip_text_create(te->w, &c, &te->enc, err);
}

/* An integer load option ("unet_heads", "unet_head_dim"), 0 when absent; sd_load has validated
 * it. */
static int option_int(const sdw_load_options *opts, const char *key) {
    const char *v = sdw_load_option(opts, key);
    return v ? atoi(v) : 0;
}

static int gcd(int a, int b) {
    return b ? gcd(b, a % b) : a;
}

/* Attention heads, which single files do not record. sdw_unet_config_infer applies the released
 * models' rule (conv projection, SD 1.x: 8 heads; linear projection, SD 2.x/XL: head size 64)
 * and leaves 0 where a width is not a multiple of 64. The caller can state the model's heads
 * (opts); otherwise those non-standard widths get the head size nearest the released one that
 * divides them, gcd(width, 64), with a warning, since the file cannot say. */
static sdw_status resolve_heads(sdw_unet_config *c, const sdw_load_options *opts, const char *path,
                                sdw_error *err) {
    const int heads = option_int(opts, "unet_heads"),
              head_dim = option_int(opts, "unet_head_dim");
    if (heads || head_dim) {
        sdw_status s = sdw_unet_config_set_heads(c, heads, head_dim, err);
        if (s) sdw_error_prefix(err, "%s", path);
        return s;
    }
    char buf[4096];
    const char *given_path = config_file(opts, "unet", "config.json", buf, sizeof buf);
    if (given_path) {
        /* The config folder states the heads; it must describe this checkpoint. */
        sdw_unet_config given;
        sdw_status s = sdw_unet_config_load(given_path, &given, err);
        if (s) return s;
        bool same = given.n_levels == c->n_levels && given.in_channels == c->in_channels &&
                    given.cross_attention_dim == c->cross_attention_dim;
        for (int i = 0; same && i < c->n_levels; i++)
            same = given.block_out_channels[i] == c->block_out_channels[i];
        if (!same)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "%s does not describe %s (block channels, input channels or "
                                 "cross-attention width differ from the checkpoint's)",
                                 given_path, path);
        for (int i = 0; i < c->n_levels; i++)
            c->heads[i] = given.heads[i];
        c->upcast_attention = c->upcast_attention || given.upcast_attention;
        return SDW_OK;
    }
    const int n = c->n_levels;
    for (int i = 0; i < n; i++) {
        bool used = c->down_attn[i] || c->up_attn[n - 1 - i] || (c->has_mid && i == n - 1);
        if (c->heads[i] > 0 || !used) continue;
        int ch = c->block_out_channels[i], hd = gcd(ch, 64);
        c->heads[i] = ch / hd;
        SDW_WARN("%s: level %d has %d channels, not a multiple of the released head size 64: "
                 "assuming %d heads of %d (pass --config DIR, the model's diffusers folder, if it "
                 "was trained otherwise)",
                 path, i, ch, c->heads[i], hd);
    }
    return SDW_OK;
}

/* The schedules diffusers 0.25's from_single_file builds (download_from_original_stable_
 * diffusion_ckpt): SD 2.x a DDIMScheduler, SDXL an EulerDiscreteScheduler; both leading spacing
 * with steps_offset 1 (SD 1.x: sdw_scheduler_config_sd15). */
static const char g_sched_sd2[] =
    "{\"_class_name\": \"DDIMScheduler\", \"beta_start\": 0.00085, \"beta_end\": 0.012,"
    " \"beta_schedule\": \"scaled_linear\", \"clip_sample\": false, \"num_train_timesteps\": 1000,"
    " \"prediction_type\": \"epsilon\", \"set_alpha_to_one\": false, \"skip_prk_steps\": true,"
    " \"steps_offset\": 1, \"timestep_spacing\": \"leading\"}";
static const char g_sched_xl[] =
    "{\"_class_name\": \"EulerDiscreteScheduler\", \"beta_start\": 0.00085, \"beta_end\": 0.012,"
    " \"beta_schedule\": \"scaled_linear\", \"clip_sample\": false, \"interpolation_type\":"
    " \"linear\", \"num_train_timesteps\": 1000, \"prediction_type\": \"epsilon\","
    " \"sample_max_value\": 1.0, \"set_alpha_to_one\": false, \"skip_prk_steps\": true,"
    " \"steps_offset\": 1, \"timestep_spacing\": \"leading\"}";

static sdw_status builtin_schedule(const char *json, sdw_scheduler_config *out, sdw_error *err) {
    json_t *root = json_loads(json, 0, NULL);
    SDW_ASSERT(root);
    sdw_status s = sdw_scheduler_config_from_json(root, out, err);
    json_decref(root);
    return s;
}

/* Population standard deviation of a float tensor. */
static double tensor_std(const sdw_st_tensor *t) {
    float *x = sdw_xmalloc(t->n_elems * sizeof(float));
    sdw_convert_to_f32(t->dtype, t->data, x, t->n_elems);
    double mean = 0, var = 0;
    for (size_t i = 0; i < t->n_elems; i++)
        mean += x[i];
    mean /= (double)t->n_elems;
    for (size_t i = 0; i < t->n_elems; i++)
        var += (x[i] - mean) * (x[i] - mean);
    free(x);
    return sqrt(var / (double)t->n_elems);
}

/* Prediction type of a single file, the way the common tools decide it (the first rule that
 * applies; --prediction overrides all of them, a given scheduler config all but that):
 *  1. a "v_pred" tensor (the marker v-prediction SDXL fine-tunes carry; ComfyUI reads it) -> v;
 *  2. safetensors metadata (Stability's ModelSpec, written by kohya's trainers and others):
 *     modelspec.prediction_type "v" / "v_prediction" / "epsilon", or modelspec.architecture
 *     ending in "-v" (stable-diffusion-v2-768-v) -> v;
 *  3. SD 2.x (OpenCLIP text encoder) with a 4-channel UNet: ComfyUI's test on the real SD 2
 *     layout — std of output_blocks.11.1.transformer_blocks.0.norm1.bias > 0.09 -> v, else eps;
 *     where that tensor does not exist (other layouts), v: diffusers' from_single_file loads
 *     SD 2.x files (no global_step in safetensors) as the 768-v model;
 *  4. otherwise epsilon: SD 1.x, SDXL, and SD 2 inpainting (the released 512-inpainting model
 *     is epsilon; ComfyUI assumes the same).
 * *why says which rule decided (static string). */
static sdw_prediction_type detect_prediction(const sdw_st_file *f, bool sd2, int in_channels,
                                             const char **why) {
    if (sdw_st_find(f, "v_pred")) {
        *why = "the file's v_pred marker";
        return SDW_PRED_V;
    }
    const char *p = sdw_st_metadata(f, "modelspec.prediction_type");
    if (p && (!strcmp(p, "v") || !strcmp(p, "v_prediction"))) {
        *why = "modelspec.prediction_type";
        return SDW_PRED_V;
    }
    if (p && !strcmp(p, "epsilon")) {
        *why = "modelspec.prediction_type";
        return SDW_PRED_EPSILON;
    }
    const char *arch = sdw_st_metadata(f, "modelspec.architecture");
    if (arch && strlen(arch) > 2 && !strcmp(arch + strlen(arch) - 2, "-v")) {
        *why = "modelspec.architecture";
        return SDW_PRED_V;
    }
    if (sd2 && in_channels == 4) {
        const sdw_st_tensor *b = sdw_st_find(
            f, "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias");
        if (b && b->n_dims == 1 && b->n_elems > 1 && sdw_dtype_is_float(b->dtype)) {
            *why = "the output norm statistic (ComfyUI's rule)";
            return tensor_std(b) > 0.09 ? SDW_PRED_V : SDW_PRED_EPSILON;
        }
        *why = "SD 2.x default (768-v, as diffusers' from_single_file)";
        return SDW_PRED_V;
    }
    *why = "family default";
    return SDW_PRED_EPSILON;
}

/* The UNet's sample_size (diffusers' default image size in latents), or 0. */
int sdw__sd_unet_sample_size(const char *config_path) {
    json_t *root = json_load_file(config_path, 0, NULL);
    json_t *v = json_object_get(root, "sample_size");
    int n = json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= 4096
                ? (int)json_integer_value(v)
                : 0;
    json_decref(root);
    return n;
}

sdw_status sdw__sd_load_single_file(sd_model *m, const char *path, const sdw_load_options *opts,
                                    sdw_error *err) {
    sdw_st_file *f;
    sdw_status s;
    if ((s = sdw_diffusion_open_file(&m->d, path, &f, err))) return s;
    if (!sdw_st_find(f, "model.diffusion_model.input_blocks.0.0.weight"))
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: not a Stable Diffusion checkpoint (no "
                             "model.diffusion_model.input_blocks.0.0.weight)",
                             path);
    /* The layout, by where the text encoders sit. */
    text_spec specs[SD_MAX_TEXT];
    int n_te;
    bool xl = false, sd2 = false;
    if (sdw_st_find(f, "conditioner.embedders.0.transformer.text_model.embeddings."
                       "token_embedding.weight") &&
        sdw_st_find(f, "conditioner.embedders.1.model.token_embedding.weight")) {
        /* SDXL base: CLIP-L pads with its EOS, OpenCLIP-bigG with "!" (id 0), as the two
         * tokenizers of the released diffusers pipeline. */
        xl = true;
        n_te = 2;
        specs[0] = (text_spec){.prefix = "conditioner.embedders.0.transformer.",
                               .pad_token = "<|endoftext|>",
                               .penultimate = true};
        specs[1] = (text_spec){.prefix = "conditioner.embedders.1.model.",
                               .openclip = true,
                               .pad_token = "!",
                               .projection = true,
                               .penultimate = true};
    } else if (sdw_st_find(f, "conditioner.embedders.0.model.token_embedding.weight")) {
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: an SDXL refiner (OpenCLIP only, aesthetic-score conditioning) is "
                             "not supported",
                             path);
    } else if (sdw_st_find(f, "cond_stage_model.model.token_embedding.weight")) {
        sd2 = true;
        n_te = 1;
        specs[0] = (text_spec){.prefix = "cond_stage_model.model.",
                               .openclip = true,
                               .pad_token = "!",
                               .drop_last_layer = true};
    } else if (sdw_st_find(f, "cond_stage_model.transformer.text_model.embeddings."
                              "token_embedding.weight")) {
        n_te = 1;
        specs[0] = (text_spec){.prefix = "cond_stage_model.transformer."};
    } else {
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: no text encoder found (expected cond_stage_model.transformer.*, "
                             "cond_stage_model.model.* or conditioner.embedders.*)",
                             path);
    }
    char tok_buf[4096];
    if (!tokenizer_dir(opts, 0, tok_buf, sizeof tok_buf))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "%s is a single-file checkpoint without a tokenizer: pass --tokenizer "
                             "DIR (a folder with vocab.json and merges.txt, e.g. a diffusers "
                             "model's tokenizer/ folder) or --config DIR (a diffusers folder "
                             "describing the model)",
                             path);
    m->n_te = n_te;
    m->pooled_te = xl ? 1 : -1;
    m->zero_uncond = xl; /* StableDiffusionXLPipeline's force_zeros_for_empty_prompt default */
    for (int k = 0; k < n_te; k++) {
        const char *tok = tokenizer_dir(opts, k, tok_buf, sizeof tok_buf);
        if ((s = load_text(f, &specs[k], tok, &m->d, &m->te[k], err))) return s;
        if (k)
            snprintf(m->te[k].tap, sizeof m->te[k].tap, "te%d", k + 1);
        else
            snprintf(m->te[k].tap, sizeof m->te[k].tap, "te");
    }

    /* UNet. The name map reads the config, so it lives in the model. */
    if ((s = sdw_unet_config_infer(f, "model.diffusion_model.", &m->unet_cfg, err))) return s;
    /* SD 2.1 needs attention scores in f32 (its fp16 scores overflow; diffusers' config says
     * upcast_attention). The file cannot tell 2.1 from 2.0, and upcasting never costs accuracy,
     * so every SD 2.x file gets it (the f32 path computes in f32 anyway). */
    m->unet_cfg.upcast_attention = sd2;
    if ((s = resolve_heads(&m->unet_cfg, opts, path, err))) return s;
    m->w_unet = sdw_weights_create(f, "model.diffusion_model.", sdw_ldm_unet_name, &m->unet_cfg);
    sdw_diffusion_weights(&m->d, m->w_unet);
    if ((s = sdw_unet_create(m->w_unet, &m->unet_cfg, &m->unet, err))) return s;

    /* VAE: shapes give the architecture; the latent scaling is the family's (SGM configs:
     * scale_factor 0.13025 for SDXL; LDM configs: 0.18215). */
    if ((s = sdw_vae_config_infer(f, "first_stage_model.", &m->vae_cfg, err))) return s;
    m->vae_cfg.scaling_factor = xl ? 0.13025f : 0.18215f;
    char cfg_buf[4096];
    const char *vae_json = config_file(opts, "vae", "config.json", cfg_buf, sizeof cfg_buf);
    if (vae_json) {
        sdw_vae_config given;
        if ((s = sdw_vae_config_load(vae_json, &given, err))) return s;
        m->vae_cfg.scaling_factor = given.scaling_factor;
    }
    m->w_vae = sdw_weights_create(f, "first_stage_model.", sdw_ldm_vae_name, &m->vae_cfg);
    sdw_diffusion_weights(&m->d, m->w_vae);
    if ((s = sdw_vae_create_lazy(m->w_vae, &m->vae_cfg, &m->vae, err))) return s;

    /* Schedule and prediction type. */
    const char *why = "the scheduler config given";
    const char *sched_json = sdw_load_option(opts, "scheduler_config");
    if (!sched_json)
        sched_json =
            config_file(opts, "scheduler", "scheduler_config.json", cfg_buf, sizeof cfg_buf);
    if (sched_json) {
        if ((s = sdw_scheduler_config_load(sched_json, &m->d.sched, err))) return s;
    } else {
        if (xl)
            s = builtin_schedule(g_sched_xl, &m->d.sched, err);
        else if (sd2)
            s = builtin_schedule(g_sched_sd2, &m->d.sched, err);
        else
            m->d.sched = sdw_scheduler_config_sd15();
        if (s) return s;
        m->d.sched.prediction_type = detect_prediction(f, sd2, m->unet_cfg.in_channels, &why);
    }
    const char *prediction = sdw_load_option(opts, "prediction");
    if (prediction) {
        why = "the prediction option";
        m->d.sched.prediction_type = !strcmp(prediction, "v") ? SDW_PRED_V : SDW_PRED_EPSILON;
    }
    SDW_INFO("%s: %s prediction (%s)", path, sdw_prediction_type_str(m->d.sched.prediction_type),
             why);
    /* Native sizes (the released models' unet sample_size): XL 1024 px, 768-v 768, else 512. */
    m->native_latent = xl ? 128 : sd2 && m->d.sched.prediction_type == SDW_PRED_V ? 96 : 64;
    const char *unet_json = config_file(opts, "unet", "config.json", cfg_buf, sizeof cfg_buf);
    if (unet_json && sdw__sd_unet_sample_size(unet_json) > 0)
        m->native_latent = sdw__sd_unet_sample_size(unet_json);
    return SDW_OK;
}
