/* The dispatchers of sdw/image_model.h: request resolution and registry lookup. Nothing here
 * knows any family; it only reads capabilities and walks the registry table. */
#include "sdw/image_model.h"

#include "core/common.h"
#include "io/safetensors.h"
#include "models/lora.h"
#include "models/registry.h"
#include "text/embeddings.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sys/stat.h>

sdw_request sdw_request_default(void) {
    return (sdw_request){.guidance = -1.0f, .seed = -1, .rng = SDW_RNG_TORCH, .strength = -1.0};
}

sdw_control sdw_control_default(void) {
    return (sdw_control){.scale = 1.0f, .start = 0.0, .end = 1.0};
}

sdw_load_options sdw_load_options_default(void) { return (sdw_load_options){0}; }

sdw_status sdw_load_options_set(sdw_load_options *o, const char *key, const char *value,
                                sdw_error *err) {
    for (int i = 0; i < o->n_options; i++)
        if (strcmp(o->options[i].key, key) == 0) {
            o->options[i].value = value;
            return SDW_OK;
        }
    if (o->n_options >= SDW_MAX_MODEL_OPTIONS)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "too many model options (at most %d)",
                             SDW_MAX_MODEL_OPTIONS);
    o->options[o->n_options++] = (sdw_model_option){key, value};
    return SDW_OK;
}

const char *sdw_load_option(const sdw_load_options *o, const char *key) {
    for (int i = 0; o && i < o->n_options; i++)
        if (strcmp(o->options[i].key, key) == 0) return o->options[i].value;
    return NULL;
}

const char *sdw_decoder_str(sdw_decoder d) {
    return d == SDW_DECODER_TAESD ? "taesd" : d == SDW_DECODER_VAE ? "vae" : "?";
}

sdw_status sdw_decoder_parse(const char *s, sdw_decoder *out, sdw_error *err) {
    if (!strcmp(s, "vae")) *out = SDW_DECODER_VAE;
    else if (!strcmp(s, "taesd")) *out = SDW_DECODER_TAESD;
    else return sdw_error_set(err, SDW_E_INVALID_ARG, "decoder '%s' must be vae or taesd", s);
    return SDW_OK;
}

/* A1111's names, in sdw_upscaler's order (shared.latent_upscale_modes, then the built-in
 * image upscalers of shared.sd_upscalers). */
static const char *const g_upscalers[SDW_UPSCALE_COUNT] = {
    "Latent",           "Latent (antialiased)",   "Latent (bicubic)",
    "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)",
    "None",             "Lanczos",                "Nearest"};

const char *sdw_upscaler_str(sdw_upscaler u) {
    return u >= 0 && u < SDW_UPSCALE_COUNT ? g_upscalers[u] : "?";
}

bool sdw_upscaler_is_latent(sdw_upscaler u) { return u <= SDW_UPSCALE_LATENT_NEAREST_EXACT; }

/* s lowercased without anything but letters and digits, into buf. */
static void squash(const char *s, char *buf, size_t cap) {
    size_t n = 0;
    for (; *s && n + 1 < cap; s++)
        if (isalnum((unsigned char)*s)) buf[n++] = (char)tolower((unsigned char)*s);
    buf[n] = 0;
}

sdw_status sdw_upscaler_parse(const char *s, sdw_upscaler *out, sdw_error *err) {
    char a[64], b[64];
    squash(s, a, sizeof a);
    for (int u = 0; u < SDW_UPSCALE_COUNT; u++) {
        squash(g_upscalers[u], b, sizeof b);
        if (strlen(s) < 64 && !strcmp(a, b)) {
            *out = (sdw_upscaler)u;
            return SDW_OK;
        }
    }
    return sdw_error_set_field(err, "hires_upscaler", SDW_E_INVALID_ARG,
                               "unknown upscaler '%.64s' (available: Latent, Latent (antialiased), "
                               "Latent (bicubic), Latent (bicubic antialiased), Latent (nearest), "
                               "Latent (nearest-exact), None, Lanczos, Nearest; neural upscalers "
                               "such as ESRGAN are not installed in this worker)",
                               s);
}

static bool in_list(const char *const *list, const char *s) {
    for (; list && *list; list++)
        if (strcmp(*list, s) == 0) return true;
    return false;
}

static void join_list(const char *const *list, char *buf, size_t cap) {
    buf[0] = 0;
    for (size_t n = 0; list && *list; list++) {
        int w = snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", *list);
        if (w < 0 || (size_t)w >= cap - n) break;
        n += (size_t)w;
    }
}

static sdw_status check_size(const char *what, int v, const sdw_capabilities *caps,
                             sdw_error *err) {
    /* what is "width" / "height": the field's own name */
    if (v < caps->min_size || v > caps->max_size)
        return sdw_error_set_field(err, what, SDW_E_INVALID_ARG, "%s %d is out of range [%d, %d]",
                                   what, v, caps->min_size, caps->max_size);
    if (caps->size_multiple > 1 && v % caps->size_multiple != 0)
        return sdw_error_set_field(err, what, SDW_E_INVALID_ARG, "%s %d is not a multiple of %d",
                                   what, v, caps->size_multiple);
    return SDW_OK;
}

static sdw_status check_image(const char *what, const char *field, const sdw_image *img,
                              sdw_error *err) {
    if (!img->data || img->width < 1 || img->height < 1)
        return sdw_error_set_field(err, field, SDW_E_INVALID_ARG, "%s is empty (%dx%d)", what,
                                   img->width, img->height);
    if (img->channels < 1 || img->channels > 4)
        return sdw_error_set_field(err, field, SDW_E_INVALID_ARG,
                                   "%s has %d channels (1 to 4 accepted)", what, img->channels);
    return SDW_OK;
}

/* The mode (txt2img / img2img / inpainting) against the capabilities, the init image and mask,
 * the strength, and the output size an init image implies when none was asked for. */
static sdw_status resolve_mode(sdw_request *r, const sdw_capabilities *caps, sdw_error *err) {
    sdw_status s;
    if (!r->init_image) {
        if (r->mask)
            return sdw_error_set_field(err, "mask", SDW_E_INVALID_ARG,
                                       "a mask needs an init image to inpaint");
        if (!(r->strength <= 0)) /* 0: a resolved text-to-image request (resolving is idempotent) */
            return sdw_error_set_field(err, "strength", SDW_E_INVALID_ARG,
                                       "strength %g needs an init image (image-to-image)",
                                       r->strength);
        if (!caps->txt2img)
            return sdw_error_set_field(err, "init_image", SDW_E_UNSUPPORTED,
                                       caps->inpainting
                                           ? "this is an inpainting model: it needs an init "
                                             "image and a mask, not text alone"
                                           : "this model does not support text-to-image");
        r->strength = 0;
        return SDW_OK;
    }
    if ((s = check_image("init image", "init_image", r->init_image, err))) return s;
    if (r->mask && !caps->inpainting)
        return sdw_error_set_field(err, "mask", SDW_E_UNSUPPORTED,
                                   "this model does not support inpainting");
    if (!r->mask && !caps->img2img)
        return sdw_error_set_field(err, "init_image", SDW_E_UNSUPPORTED,
                                   "this model does not support image-to-image");
    if (r->mask) {
        if ((s = check_image("mask", "mask", r->mask, err))) return s;
        if (r->mask->width != r->init_image->width || r->mask->height != r->init_image->height)
            return sdw_error_set_field(err, "mask", SDW_E_INVALID_ARG,
                                       "mask size %dx%d does not match the init image size %dx%d",
                                       r->mask->width, r->mask->height, r->init_image->width,
                                       r->init_image->height);
    }
    if (r->strength < 0) r->strength = SDW_DEFAULT_STRENGTH;
    if (!(r->strength > 0 && r->strength <= 1))
        return sdw_error_set_field(err, "strength", SDW_E_INVALID_ARG,
                                   "strength %g is out of range (0, 1]", r->strength);
    /* No size asked: the image's own, rounded down to the model's multiple (diffusers'
     * VaeImageProcessor.get_default_height_width does the same with the VAE factor). */
    const int m = caps->size_multiple > 1 ? caps->size_multiple : 1;
    const int iw = r->init_image->width, ih = r->init_image->height;
    if ((r->width == 0 || r->height == 0) &&
        (iw < caps->min_size || ih < caps->min_size || iw < m || ih < m))
        return sdw_error_set_field(err, "init_image", SDW_E_INVALID_ARG,
                                   "init image %dx%d is smaller than the model's minimum %dx%d", iw,
                                   ih, SDW_MAX(caps->min_size, m), SDW_MAX(caps->min_size, m));
    if ((r->width == 0 && iw - iw % m > caps->max_size) ||
        (r->height == 0 && ih - ih % m > caps->max_size))
        return sdw_error_set_field(
            err, "init_image", SDW_E_INVALID_ARG,
            "init image %dx%d is larger than the model's maximum %d: ask for an "
            "output size and it is resized",
            iw, ih, caps->max_size);
    if (r->width == 0) r->width = iw - iw % m;
    if (r->height == 0) r->height = ih - ih % m;
    return SDW_OK;
}

/* The hires fix against the model (after the first pass's size is resolved): defaults, ranges,
 * and the second size as A1111's calculate_target_resolution computes it: int(size x scale),
 * or resize_width x resize_height (one side 0: the other by the first pass's aspect, floor
 * division; both with another aspect: the size covering them, which the second pass crops).
 * The final size is rounded down to the model's multiple, as A1111's latents are target // 8. */
static sdw_status resolve_hires(sdw_request *r, const sdw_capabilities *caps, sdw_error *err) {
    sdw_hires *hr = &r->hires;
    if (!hr->enable) return SDW_OK;
    if (r->init_image)
        return sdw_error_set_field(err, "hires", SDW_E_INVALID_ARG,
                                   "the hires fix is text-to-image only (AUTOMATIC1111's txt2img): "
                                   "not with an init image");
    if (!caps->img2img)
        return sdw_error_set_field(err, "hires", SDW_E_UNSUPPORTED,
                                   "this model cannot run the hires fix: its second pass is "
                                   "image-to-image");
    if (hr->upscaler < 0 || hr->upscaler >= SDW_UPSCALE_COUNT)
        return sdw_error_set_field(err, "hires_upscaler", SDW_E_INVALID_ARG, "unknown upscaler %d",
                                   (int)hr->upscaler);
    if (hr->scale == 0 && !hr->resize_width && !hr->resize_height)
        hr->scale = SDW_HIRES_DEFAULT_SCALE;
    if (hr->strength < 0) hr->strength = SDW_HIRES_DEFAULT_STRENGTH;
    const double W = r->width, H = r->height, lim = caps->max_size;
    if (!hr->resize_width && !hr->resize_height &&
        !(hr->scale > 0 && W * hr->scale <= lim + caps->size_multiple &&
          H * hr->scale <= lim + caps->size_multiple))
        return sdw_error_set_field(err, "hires_scale", SDW_E_INVALID_ARG,
                                   "hires scale %g is out of range: %dx%d times it must be at most "
                                   "%dx%d",
                                   hr->scale, r->width, r->height, caps->max_size, caps->max_size);
    if (hr->resize_width < 0 || hr->resize_height < 0 || hr->resize_width > caps->max_size ||
        hr->resize_height > caps->max_size)
        return sdw_error_set_field(err, "hires_resize", SDW_E_INVALID_ARG,
                                   "hires resize %dx%d is out of range [0, %d] (0 = from the "
                                   "other side)",
                                   hr->resize_width, hr->resize_height, caps->max_size);
    if (!(hr->strength > 0 && hr->strength <= 1))
        return sdw_error_set_field(err, "hires_strength", SDW_E_INVALID_ARG,
                                   "hires denoising strength %g is out of range (0, 1]",
                                   hr->strength);
    if (hr->steps < 0 || hr->steps > caps->max_steps)
        return sdw_error_set_field(err, "hires_steps", SDW_E_INVALID_ARG,
                                   "hires steps %d is out of range [0, %d] (0 = the steps of the "
                                   "first pass)",
                                   hr->steps, caps->max_steps);
    /* A1111's setup_img2img_steps with the steps given: a schedule of int(steps / strength) of
     * which the last `steps` run */
    const int n = hr->steps ? hr->steps : r->steps;
    const double schedule = floor(n / fmin(hr->strength, 0.999));
    if (schedule > caps->max_steps)
        return sdw_error_set_field(err, "hires_steps", SDW_E_INVALID_ARG,
                                   "hires steps %d at denoising strength %g need a schedule of "
                                   "%.0f steps (steps / strength; at most %d): fewer steps or "
                                   "more strength",
                                   n, hr->strength, schedule, caps->max_steps);
    const long long rx = hr->resize_width, ry = hr->resize_height;
    long long tw, th, uw, uh;
    if (!rx && !ry) {
        tw = uw = (long long)(W * hr->scale);
        th = uh = (long long)(H * hr->scale);
    } else if (!ry) {
        tw = uw = rx;
        th = uh = rx * r->height / r->width;
    } else if (!rx) {
        tw = uw = ry * r->width / r->height;
        th = uh = ry;
    } else {
        tw = rx;
        th = ry;
        if (W / H < (double)rx / (double)ry) {
            uw = rx;
            uh = rx * r->height / r->width;
        } else {
            uw = ry * r->width / r->height;
            uh = ry;
        }
    }
    const int m = caps->size_multiple > 1 ? caps->size_multiple : 1;
    tw -= tw % m;
    th -= th % m;
    if (tw < caps->min_size || th < caps->min_size || tw > caps->max_size || th > caps->max_size)
        return sdw_error_set_field(err, "hires", SDW_E_INVALID_ARG,
                                   "the hires fix's size %lldx%lld (from %dx%d) is out of the "
                                   "model's range [%d, %d]",
                                   tw, th, r->width, r->height, caps->min_size, caps->max_size);
    if (uw > caps->max_size || uh > caps->max_size)
        return sdw_error_set_field(err, "hires_resize", SDW_E_INVALID_ARG,
                                   "hires resize %lldx%lld has another aspect than %dx%d: the "
                                   "first pass would be enlarged to %lldx%lld to cover it, over "
                                   "the model's maximum %d",
                                   rx, ry, r->width, r->height, uw, uh, caps->max_size);
    hr->width = (int)tw;
    hr->height = (int)th;
    hr->up_width = (int)SDW_MAX(uw, tw);
    hr->up_height = (int)SDW_MAX(uh, th);
    return SDW_OK;
}

static const sdw_param_spec *find_param(const sdw_capabilities *caps, const char *name) {
    for (const sdw_param_spec *p = caps->params; p && p->name; p++)
        if (strcmp(p->name, name) == 0) return p;
    return NULL;
}

/* Every family option the request sets: declared by the model, a number in range, set once. */
static sdw_status resolve_params(const sdw_request *r, const sdw_capabilities *caps,
                                 sdw_error *err) {
    if (r->n_params < 0 || (r->n_params > 0 && !r->params))
        return sdw_error_set_field(err, "params", SDW_E_INVALID_ARG, "malformed option list");
    for (int i = 0; i < r->n_params; i++) {
        const sdw_param *q = &r->params[i];
        const sdw_param_spec *p = q->name ? find_param(caps, q->name) : NULL;
        if (!p) {
            char names[512] = "none";
            size_t n = 0;
            for (const sdw_param_spec *d = caps->params; d && d->name; d++) {
                int w = snprintf(names + n, sizeof names - n, "%s%s", n ? ", " : "", d->name);
                if (w < 0 || (size_t)w >= sizeof names - n) break;
                n += (size_t)w;
            }
            return sdw_error_set_field(err, "params", SDW_E_INVALID_ARG,
                                       "this model takes no option '%s' (it takes: %s)",
                                       q->name ? q->name : "(null)", names);
        }
        if (!(q->value >= p->min && q->value <= p->max) ||
            (p->integer && q->value != floor(q->value)))
            return sdw_error_set_field(err, p->name, SDW_E_INVALID_ARG,
                                       "%s %g is out of range [%g, %g]%s", p->name, q->value,
                                       p->min, p->max, p->integer ? " (a whole number)" : "");
        for (int j = 0; j < i; j++)
            if (strcmp(r->params[j].name, q->name) == 0)
                return sdw_error_set_field(err, p->name, SDW_E_INVALID_ARG, "%s is set twice",
                                           p->name);
    }
    return SDW_OK;
}

double sdw_request_param(const sdw_request *req, const sdw_capabilities *caps, const char *name) {
    for (int i = 0; i < req->n_params; i++)
        if (strcmp(req->params[i].name, name) == 0) return req->params[i].value;
    const sdw_param_spec *p = find_param(caps, name);
    return p ? p->def : NAN;
}

/* The ControlNets of a request: the model takes them, each names one ControlNet (by name or
 * path) and has a control image, its scale and window in range (diffusers' check_inputs:
 * start < end, start >= 0, end <= 1). Then text-to-image without a size takes the first
 * control image's, rounded down to the model's multiple (diffusers' control image processor
 * with height and width None). */
static sdw_status resolve_controls(sdw_request *r, const sdw_capabilities *caps,
                                   sdw_error *err) {
    if (r->n_controls == 0) return SDW_OK;
    if (r->n_controls < 0 || r->n_controls > SDW_MAX_CONTROLS || !r->controls)
        return sdw_error_set_field(err, "controls", SDW_E_INVALID_ARG,
                                   "%d ControlNets asked for (at most %d)", r->n_controls,
                                   SDW_MAX_CONTROLS);
    if (!caps->controlnet)
        return sdw_error_set_field(err, "controls", SDW_E_UNSUPPORTED,
                                   "this model does not take ControlNets");
    sdw_status s;
    for (int i = 0; i < r->n_controls; i++) {
        const sdw_control *c = &r->controls[i];
        const bool by_name = c->name && *c->name, by_path = c->path && *c->path;
        if (by_name == by_path)
            return sdw_error_set_field(err, "controls", SDW_E_INVALID_ARG,
                                       "ControlNet %d: give its name or its path (%s)", i + 1,
                                       by_name ? "not both" : "neither is set");
        if (!c->image)
            return sdw_error_set_field(err, "controls", SDW_E_INVALID_ARG,
                                       "ControlNet %d (%s) has no control image", i + 1,
                                       by_name ? c->name : c->path);
        if ((s = check_image("the control image", "controls", c->image, err))) return s;
        if (!(c->scale >= 0 && c->scale <= SDW_CONTROL_MAX_SCALE))
            return sdw_error_set_field(err, "controls", SDW_E_INVALID_ARG,
                                       "ControlNet %d: conditioning scale %g is out of range "
                                       "[0, %g]",
                                       i + 1, (double)c->scale, (double)SDW_CONTROL_MAX_SCALE);
        if (!(c->start >= 0 && c->start <= 1) || !(c->end >= 0 && c->end <= 1))
            return sdw_error_set_field(err, "controls", SDW_E_INVALID_ARG,
                                       "ControlNet %d: guidance start %g and end %g must lie in "
                                       "[0, 1] (fractions of the steps)",
                                       i + 1, c->start, c->end);
        if (!(c->start < c->end))
            return sdw_error_set_field(err, "controls", SDW_E_INVALID_ARG,
                                       "ControlNet %d: guidance start %g must be smaller than "
                                       "its end %g",
                                       i + 1, c->start, c->end);
    }
    const sdw_image *img = r->controls[0].image;
    const int m = caps->size_multiple > 1 ? caps->size_multiple : 1;
    if (!r->init_image && (r->width == 0 || r->height == 0)) {
        if (img->width - img->width % m < SDW_MAX(caps->min_size, m) ||
            img->height - img->height % m < SDW_MAX(caps->min_size, m))
            return sdw_error_set_field(err, "controls", SDW_E_INVALID_ARG,
                                       "the control image %dx%d is smaller than the model's "
                                       "minimum %dx%d: ask for an output size and it is resized",
                                       img->width, img->height, SDW_MAX(caps->min_size, m),
                                       SDW_MAX(caps->min_size, m));
        if ((r->width == 0 && img->width - img->width % m > caps->max_size) ||
            (r->height == 0 && img->height - img->height % m > caps->max_size))
            return sdw_error_set_field(err, "controls", SDW_E_INVALID_ARG,
                                       "the control image %dx%d is larger than the model's "
                                       "maximum %d: ask for an output size and it is resized",
                                       img->width, img->height, caps->max_size);
        if (r->width == 0) r->width = img->width - img->width % m;
        if (r->height == 0) r->height = img->height - img->height % m;
    }
    return SDW_OK;
}

sdw_status sdw_request_resolve(const sdw_request *req, const sdw_capabilities *caps,
                               sdw_request *out, sdw_error *err) {
    sdw_request r = *req;
    char names[512];
    sdw_status s;
    if ((s = resolve_mode(&r, caps, err))) return s;
    if ((s = resolve_controls(&r, caps, err))) return s;
    if (!r.prompt) r.prompt = "";
    if (r.width == 0) r.width = caps->default_width;
    if (r.height == 0) r.height = caps->default_height;
    if (r.steps == 0) r.steps = caps->default_steps;
    if (r.guidance < 0) r.guidance = caps->default_guidance;
    if (!r.sampler || !*r.sampler) r.sampler = caps->default_sampler;
    if (!r.scheduler || !*r.scheduler) r.scheduler = "default";
    if ((s = check_size("width", r.width, caps, err))) return s;
    if ((s = check_size("height", r.height, caps, err))) return s;
    if (r.steps < 1 || r.steps > caps->max_steps)
        return sdw_error_set_field(err, "steps", SDW_E_INVALID_ARG,
                                   "steps %d is out of range [1, %d]", r.steps, caps->max_steps);
    if (!(r.guidance >= 0 && r.guidance <= 100))
        return sdw_error_set_field(err, "guidance", SDW_E_INVALID_ARG,
                                   "guidance scale %g is out of range [0, 100]",
                                   (double)r.guidance);
    if (!caps->supports_guidance && r.guidance > 1) {
        SDW_WARN("this model is guidance-distilled: guidance scale %g ignored (using 0)",
                 (double)r.guidance);
        r.guidance = 0;
    }
    if (!in_list(caps->samplers, r.sampler)) {
        join_list(caps->samplers, names, sizeof names);
        return sdw_error_set_field(err, "sampler", SDW_E_INVALID_ARG,
                                   "unknown sampler '%s' (available: %s)", r.sampler, names);
    }
    if (!in_list(caps->schedulers, r.scheduler)) {
        join_list(caps->schedulers, names, sizeof names);
        return sdw_error_set_field(err, "scheduler", SDW_E_INVALID_ARG,
                                   "unknown scheduler '%s' (available: %s)", r.scheduler, names);
    }
    if (r.clip_skip < 0 || r.clip_skip > SDW_MAX_CLIP_SKIP)
        return sdw_error_set_field(err, "clip_skip", SDW_E_INVALID_ARG,
                                   "clip_skip %d is out of range [0, %d] (0 = the model's own "
                                   "text-encoder layer)",
                                   r.clip_skip, SDW_MAX_CLIP_SKIP);
    if (r.preview_every < 0)
        return sdw_error_set_field(err, "preview_every", SDW_E_INVALID_ARG,
                                   "preview interval %d must not be negative", r.preview_every);
    if ((s = resolve_params(&r, caps, err))) return s;
    if ((s = sdw_lora_check_request(&r, caps, err))) return s; /* names, tags, multipliers */
    if ((s = resolve_hires(&r, caps, err))) return s;
    if (r.rng != SDW_RNG_TORCH && r.rng != SDW_RNG_PHILOX)
        return sdw_error_set_field(err, "rng", SDW_E_INVALID_ARG, "unknown rng %d", (int)r.rng);
    if (r.vae_tiling < SDW_TILING_AUTO || r.vae_tiling > SDW_TILING_ON)
        return sdw_error_set_field(err, "vae_tiling", SDW_E_INVALID_ARG,
                                   "unknown VAE tiling mode %d", (int)r.vae_tiling);
    if (r.decoder != SDW_DECODER_VAE && r.decoder != SDW_DECODER_TAESD)
        return sdw_error_set_field(err, "decoder", SDW_E_INVALID_ARG, "unknown decoder %d",
                                   (int)r.decoder);
    if (r.decoder == SDW_DECODER_TAESD && !caps->taesd)
        return sdw_error_set_field(err, "decoder", SDW_E_UNSUPPORTED,
                                   "decoding with TAESD needs a tiny autoencoder loaded with the "
                                   "model (--taesd PATH)");
    /* Stable Diffusion's get_timesteps runs int(steps * strength) steps; none at all is an
     * error there (StableDiffusionInpaintPipeline raises, the img2img pipeline fails on an
     * empty slice). The flow-matching pipelines round the start instead and always run one. */
    if (r.init_image && !caps->strength_rounds_start && (int)(r.steps * r.strength) < 1)
        return sdw_error_set_field(
            err, "strength", SDW_E_INVALID_ARG,
            "strength %g with %d steps runs no denoising step (steps x strength "
            "must be at least 1)",
            r.strength, r.steps);
    r.resolved = caps;
    *out = r;
    return SDW_OK;
}

static bool path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static sdw_status loaded(sdw_image_model *m, const char *path) {
    snprintf(m->name, sizeof m->name, "%s", path);
#ifdef __GLIBC__
    /* Loading converts every tensor through temporaries; glibc keeps the freed heap pages
     * (12 MB for SD 1.5). Hand them back before the first job measures its peak. */
    malloc_trim(0);
#endif
    return SDW_OK;
}

/* Every option in opts must be one the family takes. */
static sdw_status check_options(const sdw_model_family *fam, const sdw_load_options *opts,
                                sdw_error *err) {
    for (int i = 0; i < opts->n_options; i++) {
        const char *key = opts->options[i].key;
        bool known = false;
        for (const sdw_model_option_spec *o = fam->options; o && o->key && !known; o++)
            known = strcmp(o->key, key) == 0;
        if (known) continue;
        char names[256] = "none";
        size_t n = 0;
        for (const sdw_model_option_spec *o = fam->options; o && o->key; o++) {
            int w = snprintf(names + n, sizeof names - n, "%s%s", n ? ", " : "", o->key);
            if (w < 0 || (size_t)w >= sizeof names - n) break;
            n += (size_t)w;
        }
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "a %s model takes no '%s' option (it takes: %s)", fam->name, key,
                             names);
    }
    return SDW_OK;
}

/* Nobody claimed path: say what it is not, precisely enough to act on. A file that is not
 * valid safetensors gets the reader's own explanation (a pickle, a truncated header, ...). */
static sdw_status explain_unrecognised(const char *path, sdw_error *err) {
    char kinds[1024] = "";
    size_t n = 0;
    for (const sdw_model_family *const *f = sdw_model_families(); *f; f++) {
        int w = snprintf(kinds + n, sizeof kinds - n, "\n  %s: %s", (*f)->name, (*f)->formats);
        if (w < 0 || (size_t)w >= sizeof kinds - n) break;
        n += (size_t)w;
    }
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/model_index.json", path);
        if (stat(p, &st) != 0)
            return sdw_error_set(err, SDW_E_FORMAT,
                                 "%s is not a diffusers model folder (no model_index.json); "
                                 "supported:%s",
                                 path, kinds);
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: no model family takes this pipeline (see its "
                             "model_index.json _class_name); supported:%s",
                             path, kinds);
    }
    sdw_st_file *f = NULL;
    sdw_status s = sdw_st_open(path, &f, err);
    if (s) return s;
    char first[160] = "no tensors";
    if (sdw_st_count(f) > 0)
        snprintf(first, sizeof first, "tensors such as '%s'", sdw_st_at(f, 0)->name);
    sdw_st_close(f);
    return sdw_error_set(err, SDW_E_UNSUPPORTED,
                         "%s is not a model checkpoint any family recognises (%s); supported:%s",
                         path, first, kinds);
}

/* What a model path must be before any family opens it: a file or a folder (opening a FIFO
 * blocks until a writer comes, a device never ends), and a diffusers pipeline folder must have
 * its schedule: without scheduler/scheduler_config.json a family would fall back to its
 * defaults and sample differently from the folder's own pipeline, silently. */
static sdw_status check_model_path(const char *path, sdw_error *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return sdw_error_set(err, SDW_E_NOT_FOUND, "model %s does not exist", path);
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "model %s is not a file or a folder (a FIFO, socket or device "
                             "cannot be read as a model)",
                             path);
    char p[4096];
    snprintf(p, sizeof p, "%s/model_index.json", path);
    if (!S_ISDIR(st.st_mode) || stat(p, &st) != 0) return SDW_OK;
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", path);
    if (stat(p, &st) != 0 || !S_ISREG(st.st_mode))
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "%s is a diffusers pipeline folder without "
                             "scheduler/scheduler_config.json: its schedule (sampler, timestep "
                             "spacing, prediction type) is read from there; copy the folder whole",
                             path);
    return SDW_OK;
}

static sdw_status load_model(const char *path, const sdw_load_options *opts, sdw_image_model **out,
                             sdw_error *err) {
    sdw_load_options o = opts ? *opts : sdw_load_options_default();
    if (o.n_threads <= 0) { /* families see a real count: OpenMP's variable, else the cores */
        const char *env = getenv("OMP_NUM_THREADS");
        o.n_threads = env && atoi(env) > 0 ? atoi(env) : sdw_usable_cores();
    }
    SDW_INFO("threads: %d", o.n_threads);
    opts = &o;
    sdw_status s;
    if (!path || strcmp(path, "demo") == 0) {
        const sdw_model_family *demo = sdw_model_demo_family();
        if (!demo || !demo->load_demo)
            return sdw_error_set(err, SDW_E_UNSUPPORTED, "no model family provides a demo model");
        if ((s = check_options(demo, opts, err)) || (s = demo->load_demo(opts, out, err)))
            return s;
        snprintf((*out)->name, sizeof (*out)->name, "demo");
        return SDW_OK;
    }
    if (!path_exists(path))
        return sdw_error_set(err, SDW_E_NOT_FOUND, "model %s does not exist", path);
    struct stat st;
    if ((s = check_model_path(path, err))) return s;
    if (o.config_dir && (stat(o.config_dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        return sdw_error_set(err, SDW_E_NOT_FOUND, "--config %s is not a folder", o.config_dir);
    for (const sdw_model_family *const *fam = sdw_model_families(); *fam; fam++) {
        if (!(*fam)->detect(path)) continue;
        if ((s = check_options(*fam, opts, err)) || (s = (*fam)->load(path, opts, out, err)))
            return s;
        return loaded(*out, path);
    }
    return explain_unrecognised(path, err);
}

sdw_status sdw_model_load(const char *path, const sdw_load_options *opts, sdw_image_model **out,
                          sdw_error *err) {
    sdw_embeddings *emb = NULL; /* read first: a folder that cannot be read fails fast */
    sdw_status s;
    if (opts && opts->embeddings_dir && (s = sdw_embeddings_load(opts->embeddings_dir, &emb, err)))
        return s;
    if ((s = load_model(path, opts, out, err))) {
        sdw_embeddings_destroy(emb);
        return s;
    }
    (*out)->embeddings = emb;
    return SDW_OK;
}

const struct sdw_embeddings *sdw_model_embeddings(const sdw_image_model *m) {
    return m->embeddings;
}

const char *sdw_model_type(const sdw_image_model *m) { return m->ops->model_type(m); }
const char *sdw_model_variant(const sdw_image_model *m) { return m->ops->model_variant(m); }
const sdw_capabilities *sdw_model_capabilities(const sdw_image_model *m) {
    return m->ops->capabilities(m);
}

sdw_status sdw_model_generate(sdw_image_model *m, const sdw_request *req, sdw_progress_fn progress,
                              void *user, sdw_image *out, sdw_result_info *info, sdw_error *err) {
    const sdw_capabilities *caps = sdw_model_capabilities(m);
    sdw_request r;
    if (req->resolved == caps) { /* resolved for this model already (only resolve sets it) */
        r = *req;
    } else {
        sdw_status s = sdw_request_resolve(req, caps, &r, err);
        if (s) return s;
    }
    sdw_result_info local;
    return m->ops->generate(m, &r, progress, user, out, info ? info : &local, err);
}

void sdw_model_describe(const sdw_image_model *m, char *buf, size_t cap) {
    if (m->ops->describe) m->ops->describe(m, buf, cap);
    else if (cap) buf[0] = 0;
}

sdw_status sdw_model_tokenize(const sdw_image_model *m, const char *prompt, int32_t **ids, int *n,
                              int *window, sdw_error *err) {
    if (!m->ops->tokenize)
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "this model has no tokenizer to show");
    return m->ops->tokenize(m, prompt, ids, n, window, err);
}

void sdw_model_destroy(sdw_image_model *m) {
    if (!m) return;
    sdw_embeddings_destroy(m->embeddings); /* the family frees the struct holding it */
    m->ops->destroy(m);
}
