/* The Stable Diffusion family's ControlNets (sdw_request.controls), as diffusers 0.25.1's
 * StableDiffusionControlNetPipeline runs them: each ControlNet named by a request is loaded once
 * into one of the model's slots and kept; per run its control image goes through the control
 * image processor (RGB, Lanczos resize to the output size, / 255, no normalisation) and the
 * conditioning embedding (once: it depends on the image alone); per denoiser call the ControlNets
 * whose guidance window holds the call run on the UNet's batch (both halves under classifier-free
 * guidance; only the conditional one in guess mode) and their residuals are summed
 * (MultiControlNetModel). */
#define _GNU_SOURCE
#include "models/stable_diffusion/sd_impl.h"

#include "io/image.h"
#include "models/stable_diffusion/controlnet.h"
#include "nn/nn.h"
#include "sdw/controlnet.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- loading ---- */

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The base model a cross-attention width belongs to, for messages. */
static const char *base_of(int cross) {
    return cross == 768 ? " (SD 1.x)" : cross == 1024 ? " (SD 2.x)" : cross == 2048 ? " (SDXL)" : "";
}

/* A ControlNet fits the model when its residuals have the UNet's skip shapes, it reads the
 * model's latents and text conditioning, and its control image comes down to the latent size. */
static sdw_status check_fit(const sd_model *m, const sdw_controlnet_config *c, sdw_error *err) {
    const sdw_unet_config *u = sdw_unet_config_of(m->unet), *e = &c->unet;
    if (e->cross_attention_dim != u->cross_attention_dim)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "it is for another base model: its cross-attention takes %d features "
                             "per token%s, this model's UNet %d%s",
                             e->cross_attention_dim, base_of(e->cross_attention_dim),
                             u->cross_attention_dim, base_of(u->cross_attention_dim));
    if (e->in_channels != m->d.latent_channels)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "it takes %d latent channels, this model's latents have %d",
                             e->in_channels, m->d.latent_channels);
    bool same = e->n_levels == u->n_levels;
    for (int i = 0; same && i < u->n_levels; i++)
        same = e->block_out_channels[i] == u->block_out_channels[i] &&
               e->layers_per_block[i] == u->layers_per_block[i];
    if (!same)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "it is for another base model: its blocks (%d levels, %d channels "
                             "first, %d last) are not this UNet's (%d levels, %d first, %d last)",
                             e->n_levels, e->block_out_channels[0],
                             e->block_out_channels[e->n_levels - 1], u->n_levels,
                             u->block_out_channels[0], u->block_out_channels[u->n_levels - 1]);
    if (e->add_text_time != u->add_text_time ||
        (e->add_text_time && (e->add_text_dim != u->add_text_dim ||
                              e->add_n_time_ids != u->add_n_time_ids ||
                              e->addition_time_embed_dim != u->addition_time_embed_dim)))
        return sdw_error_set(err, SDW_E_SHAPE,
                             "it is for another base model: it %s SDXL's text_time conditioning "
                             "(pooled text %d, %d time ids), this UNet %s it (%d, %d)",
                             e->add_text_time ? "takes" : "does not take", e->add_text_dim,
                             e->add_n_time_ids, u->add_text_time ? "takes" : "does not take",
                             u->add_text_dim, u->add_n_time_ids);
    if (sdw_controlnet_downscale(c) != m->d.vae_factor)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "its control image embedding goes down by %d, this model's latents "
                             "are 1/%d of the image",
                             sdw_controlnet_downscale(c), m->d.vae_factor);
    if (c->conditioning_channels != 3)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "it takes %d-channel control images (only RGB ones are supported)",
                             c->conditioning_channels);
    return SDW_OK;
}

/* The weights file of a diffusers ControlNet folder (pickled .bin weights are refused by
 * sdw_st_open with the explanation). */
static sdw_status open_folder_weights(const char *dir, sdw_st_file **f, sdw_error *err) {
    static const char *const names[] = {"diffusion_pytorch_model.safetensors",
                                        "diffusion_pytorch_model.fp16.safetensors",
                                        "diffusion_pytorch_model.bin"};
    char p[PATH_MAX];
    for (size_t i = 0; i < SDW_ARRAY_LEN(names); i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        if (is_file(p)) return sdw_st_open(p, f, err);
    }
    return sdw_error_set(err, SDW_E_NOT_FOUND, "%s/diffusion_pytorch_model.safetensors is missing",
                         dir);
}

/* Loads the ControlNet at real path into slot s: a diffusers folder, the weights file inside
 * one (its folder has the config), or an original-layout file (its architecture is the model
 * UNet's encoder). */
static sdw_status load_slot(sd_model *m, const char *path, sd_controlnet_slot *s,
                            sdw_error *err) {
    sdw_controlnet_config cfg;
    sdw_status st;
    char dir[PATH_MAX] = "";
    const char *prefix = "";
    if (is_dir(path)) {
        snprintf(dir, sizeof dir, "%s", path);
    } else {
        const char *slash = strrchr(path, '/');
        char cfg_path[PATH_MAX];
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
        const char *base = slash ? slash + 1 : path;
        if (!(strncmp(base, "diffusion_pytorch_model.", 24) == 0 && is_file(cfg_path)))
            dir[0] = 0; /* a file of its own: the original layout */
    }
    if (dir[0]) {
        char cfg_path[PATH_MAX];
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
        if ((st = sdw_controlnet_config_load(cfg_path, &cfg, err)) ||
            (st = is_dir(path) ? open_folder_weights(dir, &s->file, err)
                               : sdw_st_open(path, &s->file, err)))
            return st;
        s->w = sdw_weights_create(s->file, "", NULL, NULL);
    } else {
        if ((st = sdw_st_open(path, &s->file, err))) return st;
        prefix = sdw_controlnet_original_prefix(s->file);
        if (!prefix)
            return sdw_error_set(err, SDW_E_FORMAT,
                                 "%s is not a ControlNet: neither a diffusers ControlNetModel "
                                 "folder (config.json + diffusion_pytorch_model.safetensors) nor "
                                 "an original ControlNet file (input_hint_block.*)",
                                 path);
        if ((st = sdw_controlnet_config_for_original(s->file, prefix, sdw_unet_config_of(m->unet),
                                                     &cfg, err)))
            return st;
    }
    if ((st = check_fit(m, &cfg, err))) return st;
    s->cfg = sdw_xmalloc(sizeof *s->cfg);
    *s->cfg = cfg;
    if (!dir[0]) /* the name map reads the config (kept in the slot as long as the weights) */
        s->w = sdw_weights_create(s->file, prefix, sdw_controlnet_original_name, s->cfg);
    sdw_diffusion_weights(&m->d, s->w);
    if ((st = sdw_controlnet_create(s->w, &cfg, &s->net, err))) return st;
    char unused[256];
    const int n = sdw_weights_unused(s->w, unused, sizeof unused);
    if (n) SDW_WARN("ControlNet %s: %d tensors were not used (%s)", path, n, unused);
    s->path = sdw_xstrdup(path);
    SDW_INFO("ControlNet %s loaded (%zu parameters)", path, sdw_controlnet_n_params(s->net));
    return SDW_OK;
}

static void free_slot(sd_controlnet_slot *s) {
    sdw_controlnet_destroy(s->net);
    sdw_weights_destroy(s->w);
    sdw_st_close(s->file);
    free(s->cfg);
    free(s->path);
    free(s->label);
    memset(s, 0, sizeof *s);
}

void sdw__sd_controlnets_unload(sd_model *m) {
    for (int i = 0; i < SD_MAX_CONTROLNETS; i++) free_slot(&m->controlnets[i]);
}

/* The slot holding the ControlNet at real path, loading it (into a free slot, else in place of
 * the least recently used one this run does not use) when none does. */
static sdw_status find_slot(sd_model *m, const char *path, const char *label,
                            sd_controlnet_slot **out, sdw_error *err) {
    sd_controlnet_slot *victim = NULL;
    for (int i = 0; i < SD_MAX_CONTROLNETS; i++) {
        sd_controlnet_slot *s = &m->controlnets[i];
        if (s->net && !strcmp(s->path, path)) {
            *out = s;
            return SDW_OK;
        }
        if (!s->net) {
            if (!victim || victim->net) victim = s;
        } else if (s->used != m->runs && (!victim || (victim->net && s->used < victim->used))) {
            victim = s;
        }
    }
    if (!victim)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "more than %d different ControlNets in one "
                             "request", SD_MAX_CONTROLNETS);
    if (victim->net) {
        SDW_INFO("ControlNet %s unloaded (least recently used of %d)", victim->path,
                 SD_MAX_CONTROLNETS);
        free_slot(victim);
    }
    sdw_status st = load_slot(m, path, victim, err);
    if (st) {
        free_slot(victim);
        sdw_error_prefix(err, "ControlNet %s", label);
        return st;
    }
    victim->label = sdw_xstrdup(label);
    *out = victim;
    return SDW_OK;
}

/* The real path a request's control names: in the ControlNet folder by name, or a path. */
static sdw_status control_path(const sd_model *m, const sdw_control *ctl, char **path,
                               sdw_error *err) {
    if (ctl->name && *ctl->name) return sdw_controlnet_resolve(m->controlnet_dir, ctl->name, path, err);
    *path = realpath(ctl->path, NULL);
    if (!*path)
        return sdw_error_set(err, SDW_E_NOT_FOUND, "ControlNet %s: %s", ctl->path,
                             strerror(errno));
    return SDW_OK;
}

/* ---- per run ---- */

/* The control image processor (VaeImageProcessor, do_convert_rgb, do_normalize False): RGB,
 * Pillow Lanczos resize to W x H when the size differs, v / 255 in float32. out [H, W, 3]. */
static void preprocess(const sdw_image *img, int W, int H, float *out) {
    sdw_image rgb, sized;
    sdw_image_to_rgb(img, &rgb);
    if (rgb.width != W || rgb.height != H) {
        SDW_INFO("control image %dx%d resized to %dx%d (Lanczos, as diffusers' control image "
                 "processor)",
                 rgb.width, rgb.height, W, H);
        sdw_image_resize(&rgb, W, H, &sized);
        sdw_image_free(&rgb);
        rgb = sized;
    }
    const size_t n = (size_t)W * H * 3;
    for (size_t i = 0; i < n; i++) out[i] = (float)rgb.data[i] / 255.0f;
    sdw_image_free(&rgb);
}

sdw_status sdw__sd_controls_prepare(sd_model *m, const sdw_request *req, sd_cond *c,
                                    sdw_error *err) {
    if (req->n_controls <= 0) return SDW_OK;
    m->runs++;
    const int W = req->width, H = req->height, f = m->d.vae_factor;
    c->controls = sdw_xcalloc((size_t)req->n_controls, sizeof *c->controls);
    c->guess = req->control_guess_mode;
    float *image = sdw_xmalloc((size_t)W * H * 3 * sizeof(float));
    sdw_status st = SDW_OK;
    for (int j = 0; j < req->n_controls && !st; j++) {
        const sdw_control *ctl = &req->controls[j];
        const char *label = ctl->name && *ctl->name ? ctl->name : ctl->path;
        char *path = NULL;
        sd_controlnet_slot *slot = NULL;
        if ((st = control_path(m, ctl, &path, err)) ||
            (st = find_slot(m, path, label, &slot, err))) {
            free(path);
            break;
        }
        free(path);
        slot->used = m->runs;
        sd_control *sc = &c->controls[c->n_controls++];
        sc->net = slot->net;
        sc->scale = ctl->scale;
        sc->start = ctl->start;
        sc->end = ctl->end;
        /* diffusers: guess_mode = guess_mode or controlnet's global_pool_conditions (the first
         * one's, for several) */
        if (j == 0 && sdw_controlnet_config_of(slot->net)->global_pool) c->guess = true;
        preprocess(ctl->image, W, H, image);
        const int C0 = sdw_controlnet_config_of(slot->net)->unet.block_out_channels[0];
        sc->emb = sdw_xmalloc((size_t)(H / f) * (W / f) * C0 * sizeof(float));
        sdw_controlnet_embed(slot->net, image, H, W, sc->emb);
        if (j == 0 && m->d.tap) {
            c->control_image = image;
            c->image_h = H;
            c->image_w = W;
            image = sdw_xmalloc((size_t)W * H * 3 * sizeof(float));
        }
    }
    free(image);
    return st;
}

void sdw__sd_controls_free(sd_cond *c) {
    for (int j = 0; j < c->n_controls; j++) free(c->controls[j].emb);
    free(c->controls);
    free(c->control_image);
    c->controls = NULL;
    c->control_image = NULL;
    c->n_controls = 0;
}

/* diffusers' controlnet_keep: 1 - (i / len(timesteps) < s or (i + 1) / len(timesteps) > e), in
 * Python floats (double). */
bool sdw__sd_control_active(const sd_cond *c, int j, int k) {
    const int i = k - c->k0, n = c->n > 0 ? c->n : 1;
    const sd_control *sc = &c->controls[j];
    return !((double)i / n < sc->start || (double)(i + 1) / n > sc->end);
}

/* NHWC [B, h, w, ch] -> the reference's NCHW, tapped as stepNN.controlnet.<what>. */
static void tap_nhwc(const sd_model *m, int k, const char *what, const float *x, int B, int h,
                     int w, int ch) {
    char name[64];
    snprintf(name, sizeof name, "step%02d.controlnet.%s", k, what);
    float *t = sdw_xmalloc((size_t)B * h * w * ch * sizeof(float));
    sdw_nhwc_to_nchw(x, B, h, w, ch, t);
    sdw_diffusion_tap(&m->d, name, t, 4, (int64_t)B, (int64_t)ch, (int64_t)h, (int64_t)w);
    free(t);
}

/* The inputs of call k as the reference records them. */
static void tap_inputs(const sd_model *m, const sd_cond *c, const float *x, int B, int h, int w,
                       float t, int k, float scale) {
    char name[64];
    const int C = m->d.latent_channels;
    snprintf(name, sizeof name, "step%02d.controlnet.sample", k);
    sdw_diffusion_tap(&m->d, name, x, 4, (int64_t)B, (int64_t)C, (int64_t)h, (int64_t)w);
    snprintf(name, sizeof name, "step%02d.controlnet.timestep", k);
    sdw_diffusion_tap(&m->d, name, &t, 1, (int64_t)1);
    snprintf(name, sizeof name, "step%02d.controlnet.encoder_hidden_states", k);
    sdw_diffusion_tap(&m->d, name, c->context, 3, (int64_t)B, (int64_t)c->L, (int64_t)c->D);
    snprintf(name, sizeof name, "step%02d.controlnet.conditioning_scale", k);
    sdw_diffusion_tap(&m->d, name, &scale, 1, (int64_t)1);
    if (c->control_image) { /* the image for every batch element, as the pipeline repeats it */
        const size_t n = (size_t)c->image_h * c->image_w * 3;
        float *rep = sdw_xmalloc((size_t)B * n * sizeof(float));
        for (int b = 0; b < B; b++) memcpy(rep + b * n, c->control_image, n * sizeof(float));
        tap_nhwc(m, k, "controlnet_cond", rep, B, c->image_h, c->image_w, 3);
        free(rep);
    }
}

void sdw__sd_residuals_free(const sd_model *m, float **down, float *mid) {
    const int n = sdw_unet_n_skips(m->unet);
    for (int i = 0; down && i < n; i++) free(down[i]);
    free(down);
    free(mid);
}

void sdw__sd_control_residuals(const sd_model *m, const sd_cond *c, const float *x, int B, int h,
                               int w, float t, int k, float ***down_out, float **mid_out) {
    *down_out = NULL;
    *mid_out = NULL;
    int first = -1;
    for (int j = 0; j < c->n_controls && first < 0; j++)
        if (sdw__sd_control_active(c, j, k)) first = j;
    if (first < 0) return;
    const sdw_unet_config *u = sdw_unet_config_of(m->unet);
    const int C = m->d.latent_channels, Cin = m->d.denoiser_in_channels, n = sdw_unet_n_skips(m->unet);
    /* guess mode under CFG: the ControlNets run on the conditional half alone; the
     * unconditional half's residuals are zeros */
    const bool half = c->guess && B == 2;
    const int b0 = half ? 1 : 0, Bc = B - b0;
    float **down = sdw_xcalloc((size_t)n, sizeof *down), *mid = NULL;
    float *dst[64 + 1];
    SDW_ASSERT(n < 64);
    for (int r = 0; r <= n; r++) {
        int rh, rw, rc;
        sdw_controlnet_residual_shape(c->controls[first].net, r, h, w, &rh, &rw, &rc);
        const size_t per = (size_t)rh * rw * rc;
        float *buf = sdw_xcalloc((size_t)B * per, sizeof(float)); /* zeros: guess mode's uncond */
        if (r < n) down[r] = buf;
        else mid = buf;
        dst[r] = buf + b0 * per;
    }
    /* the ControlNet's input: the latents (an inpainting UNet's mask and masked-image latents
     * are not its), NHWC */
    float *xc = sdw_xmalloc((size_t)Bc * h * w * C * sizeof(float));
    for (int b = 0; b < Bc; b++)
        sdw_nchw_to_nhwc(x + (size_t)(b0 + b) * Cin * h * w, 1, C, h, w, xc + (size_t)b * h * w * C);
    const float ts[2] = {t, t};
    const size_t row = (size_t)c->L * c->D;
    const int P = u->add_text_time ? u->add_text_dim : 0, nt = u->add_n_time_ids;
    bool written = false;
    for (int j = first; j < c->n_controls; j++) {
        if (!sdw__sd_control_active(c, j, k)) continue;
        const sd_control *sc = &c->controls[j];
        if (!written && m->d.tap) tap_inputs(m, c, x, B, h, w, t, k, sc->scale);
        sdw_controlnet_forward(sc->net, xc, Bc, h, w, ts, c->context + b0 * row, c->L,
                               c->text_embeds ? c->text_embeds + (size_t)b0 * P : NULL,
                               c->time_ids ? c->time_ids + (size_t)b0 * nt : NULL, sc->emb,
                               sc->scale, c->guess, dst, dst[n], written);
        written = true;
    }
    free(xc);
    if (m->d.tap)
        for (int r = 0; r <= n; r++) {
            int rh, rw, rc;
            char what[16];
            sdw_controlnet_residual_shape(c->controls[first].net, r, h, w, &rh, &rw, &rc);
            if (r < n) snprintf(what, sizeof what, "down.%02d", r);
            else snprintf(what, sizeof what, "mid");
            tap_nhwc(m, k, what, r < n ? down[r] : mid, B, rh, rw, rc);
        }
    *down_out = down;
    *mid_out = mid;
}
