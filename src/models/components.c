/* models/components.c — see components.h. */
#include "models/components.h"

#include "nn/ldm_vae_names.h"

#include <string.h>
#include <sys/stat.h>

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

const char *sdw_component_file(const char *root, const char *sub, const char *leaf, char *buf,
                               size_t cap) {
    if (!root) return NULL;
    snprintf(buf, cap, "%s/%s/%s", root, sub, leaf);
    return is_file(buf) ? buf : NULL;
}

sdw_status sdw_component_open(sdw_diffusion *d, const sdw_component_src *src, const char *stem,
                              sdw_st_file **f, sdw_error *err) {
    if (src->file) {
        if (!is_file(src->file))
            return sdw_error_set(err, SDW_E_NOT_FOUND, "--%s %s does not exist", src->flag,
                                 src->file);
        return sdw_diffusion_open_file(d, src->file, f, err);
    }
    if (!src->root)
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "no %s: give --config DIR (a diffusers folder holding %s/) or --%s "
                             "FILE",
                             src->sub, src->sub, src->flag);
    sdw_status s = sdw_diffusion_open_component(d, src->root, src->sub, stem, f, err);
    if (s == SDW_E_NOT_FOUND) sdw_error_prefix(err, "(or give --%s FILE)", src->flag);
    return s;
}

/* The component's weights as an sdw_weights (file or checkpoint prefix), packed for d's
 * precision; *label names it in messages. */
static sdw_status open_weights(sdw_diffusion *d, const sdw_component_src *src, const char *stem,
                               sdw_weights **w, const char **label, sdw_error *err) {
    const sdw_st_file *f = src->in;
    const char *prefix = src->in ? src->prefix : "";
    if (!f) {
        sdw_st_file *opened;
        sdw_status s = sdw_component_open(d, src, stem, &opened, err);
        if (s) return s;
        f = opened;
    }
    *w = sdw_weights_create(f, prefix, NULL, NULL);
    sdw_diffusion_weights(d, *w);
    *label = sdw_st_path(f);
    return SDW_OK;
}

sdw_status sdw_component_clip(sdw_diffusion *d, const sdw_component_src *src, const char *tokenizer,
                              sdw_clip_prompt *p, sdw_error *err) {
    char q[4096];
    const char *label;
    sdw_status s;
    if (!tokenizer)
        return sdw_error_set(err, SDW_E_NOT_FOUND, "no tokenizer for %s: give --config DIR (a "
                             "diffusers folder)", src->sub);
    if ((s = sdw_clip_tokenizer_load(tokenizer, &p->tokenizer, err))) return s;
    p->pad_id = sdw_clip_tokenizer_pad(p->tokenizer);
    if ((s = open_weights(d, src, "model", &p->w, &label, err))) return s;
    /* The folder's own encoder: its config.json. Given otherwise: the shapes, with the folder's
     * heads and activation when it describes the same width, else CLIP's head size 64. */
    sdw_clip_text_config c, folder;
    const char *cfg = sdw_component_file(src->root, src->sub, "config.json", q, sizeof q);
    const bool own = !src->file && !src->in;
    const bool have_folder = cfg && sdw_clip_text_config_from_json(cfg, &folder, NULL) == SDW_OK;
    if (own && cfg) {
        s = sdw_clip_text_config_from_json(cfg, &c, err);
    } else {
        s = sdw_clip_text_config_infer(p->w, 0, SDW_CLIP_ACT_QUICK_GELU, &c, err);
        if (!s && have_folder && folder.hidden == c.hidden)
            s = sdw_clip_text_config_infer(p->w, folder.n_heads, folder.act, &c, err);
    }
    if (!s && p->params.project_pooled && c.projection_dim <= 0)
        s = sdw_error_set(err, SDW_E_NOT_FOUND, "text_projection.weight is missing: the pooled "
                          "output is projected (CLIPTextModelWithProjection)");
    if (!s && !p->params.project_pooled) { /* CLIPTextModel: the pooler output as it is */
        c.projection_dim = 0;
        sdw_weights_ignore(p->w, "text_projection.");
    }
    if (!s) s = sdw_clip_text_create(p->w, &c, &p->enc, err);
    if (s) sdw_error_prefix(err, "%s", label);
    return s;
}

sdw_status sdw_component_t5(sdw_diffusion *d, const sdw_component_src *src, const char *tokenizer,
                            sdw_t5_prompt *p, sdw_error *err) {
    char q[4096];
    const char *label;
    sdw_status s;
    if (!tokenizer)
        return sdw_error_set(err, SDW_E_NOT_FOUND, "no T5 tokenizer (spiece.model) for %s: give "
                             "--config DIR (a diffusers folder)", src->sub);
    if ((s = sdw_t5_tokenizer_load(tokenizer, &p->tokenizer, err))) return s;
    if ((s = open_weights(d, src, "model", &p->w, &label, err))) return s;
    /* The folder's own encoder: its config.json; otherwise the shapes (T5's are complete: the
     * relative-bias table tells the heads). */
    sdw_t5_text_config c;
    const char *cfg = sdw_component_file(src->root, src->sub, "config.json", q, sizeof q);
    s = cfg && !src->file && !src->in ? sdw_t5_text_config_load(cfg, &c, err)
                                       : sdw_t5_text_config_infer(p->w, &c, err);
    if (!s) s = sdw_t5_text_create(p->w, &c, &p->enc, err);
    if (!s && sdw_t5_tokenizer_vocab(p->tokenizer) > c.vocab)
        s = sdw_error_set(err, SDW_E_SHAPE,
                          "the T5 tokenizer has %d ids, the encoder's embedding only %d rows",
                          sdw_t5_tokenizer_vocab(p->tokenizer), c.vocab);
    if (s) sdw_error_prefix(err, "%s", label);
    return s;
}

sdw_status sdw_component_vae(sdw_diffusion *d, const sdw_component_src *src, float scaling,
                             float shift, sdw_weights **w, sdw_vae_config *cfg, sdw_vae **vae,
                             sdw_error *err) {
    char q[4096];
    sdw_status s;
    const sdw_st_file *f = src->in;
    const char *prefix = src->in ? src->prefix : "";
    if (!f) {
        sdw_st_file *opened;
        if ((s = sdw_component_open(d, src, "diffusion_pytorch_model", &opened, err))) return s;
        f = opened;
    }
    const char *json = sdw_component_file(src->root, src->sub, "config.json", q, sizeof q);
    if (json && !src->file && !src->in) {
        if ((s = sdw_vae_config_load(json, cfg, err))) return s;
    } else {
        if ((s = sdw_vae_config_infer(f, prefix, cfg, err))) return s;
        cfg->scaling_factor = scaling;
        cfg->shift_factor = shift;
        sdw_vae_config given; /* the folder's latent conventions, when it has them */
        if (json) {
            if ((s = sdw_vae_config_load(json, &given, err))) return s;
            cfg->scaling_factor = given.scaling_factor;
            cfg->shift_factor = given.shift_factor;
        }
    }
    *w = sdw_vae_file_is_ldm(f, prefix) ? sdw_weights_create(f, prefix, sdw_ldm_vae_name, cfg)
                                        : sdw_weights_create(f, prefix, NULL, NULL);
    sdw_diffusion_weights(d, *w);
    if ((s = sdw_vae_create_lazy(*w, cfg, vae, err))) sdw_error_prefix(err, "%s", sdw_st_path(f));
    return s;
}
