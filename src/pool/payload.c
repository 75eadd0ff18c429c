/* pool/payload.c — see payload.h. */
#include "pool/payload.h"

#include "core/common.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

static const char *tiling_str(sdw_vae_tiling_mode m) {
    return m == SDW_TILING_OFF ? "off" : m == SDW_TILING_ON ? "on" : "auto";
}

size_t sdw_pool_image_bytes(const sdw_image *img) {
    return img ? (size_t)img->width * (size_t)img->height * (size_t)img->channels : 0;
}

static json_t *image_json(const sdw_image *img) {
    return json_pack("{s:i,s:i,s:i}", "width", img->width, "height", img->height, "channels",
                     img->channels);
}

static char *dump(json_t *o /* stolen */) {
    /* JSON_REAL_PRECISION(17): every double reads back bit-exactly */
    char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(o);
    SDW_ASSERT(text);
    return text;
}

char *sdw_pool_request_json(const sdw_request *q, int n_images) {
    SDW_ASSERT(n_images >= 1);
    json_t *o = json_pack("{s:i,s:i,s:s,s:i,s:i,s:i,s:f,s:I,s:s,s:f,s:s,s:s,s:b}", "v",
                          SDW_POOL_PAYLOAD_VERSION, "n", n_images, "prompt",
                          q->prompt ? q->prompt : "", "width", q->width, "height", q->height,
                          "steps", q->steps, "guidance", (double)q->guidance, "seed",
                          (json_int_t)q->seed, "rng", sdw_rng_kind_str(q->rng), "strength",
                          q->strength, "vae_tiling", tiling_str(q->vae_tiling), "decoder",
                          sdw_decoder_str(q->decoder), "profile", q->profile);
    SDW_ASSERT(o); /* only fails on invalid UTF-8, which every front end has refused */
    if (q->negative_prompt) json_object_set_new(o, "negative_prompt", json_string(q->negative_prompt));
    if (q->sampler) json_object_set_new(o, "sampler", json_string(q->sampler));
    if (q->scheduler) json_object_set_new(o, "scheduler", json_string(q->scheduler));
    if (q->n_params > 0) {
        json_t *p = json_object();
        for (int i = 0; i < q->n_params; i++)
            json_object_set_new(p, q->params[i].name, json_real(q->params[i].value));
        json_object_set_new(o, "params", p);
    }
    if (q->init_image) json_object_set_new(o, "init_image", image_json(q->init_image));
    if (q->mask) json_object_set_new(o, "mask", image_json(q->mask));
    /* the later fields: written only when set, so that older workers read what they can run */
    if (q->prompt_syntax) json_object_set_new(o, "prompt_syntax", json_true());
    if (q->clip_skip) json_object_set_new(o, "clip_skip", json_integer(q->clip_skip));
    if (q->hires.enable) {
        const sdw_hires *h = &q->hires;
        json_t *hr = json_pack("{s:f,s:i,s:i,s:s,s:i,s:f}", "scale", h->scale, "resize_width",
                               h->resize_width, "resize_height", h->resize_height, "upscaler",
                               sdw_upscaler_str(h->upscaler), "steps", h->steps, "strength",
                               h->strength);
        SDW_ASSERT(hr); /* finite numbers: resolved, or parsed from a payload */
        json_object_set_new(o, "hires", hr);
    }
    if (q->n_loras > 0) {
        json_t *a = json_array();
        for (int i = 0; i < q->n_loras; i++) {
            const sdw_lora_ref *l = &q->loras[i];
            json_t *e = json_pack("{s:f}", "multiplier", (double)l->multiplier);
            SDW_ASSERT(e);
            if (l->name) json_object_set_new(e, "name", json_string(l->name));
            /* written as it is so that a reader refuses it by name (a gateway never sends one) */
            if (l->path) json_object_set_new(e, "path", json_string(l->path));
            json_array_append_new(a, e);
        }
        json_object_set_new(o, "loras", a);
    }
    if (q->n_controls > 0) {
        json_t *a = json_array();
        for (int i = 0; i < q->n_controls; i++) {
            const sdw_control *c = &q->controls[i];
            json_t *e = json_pack("{s:f,s:f,s:f}", "scale", (double)c->scale, "start", c->start,
                                  "end", c->end);
            SDW_ASSERT(e);
            if (c->name) json_object_set_new(e, "name", json_string(c->name));
            if (c->path) json_object_set_new(e, "path", json_string(c->path));
            if (c->image) json_object_set_new(e, "image", image_json(c->image));
            json_array_append_new(a, e);
        }
        json_object_set_new(o, "controls", a);
    }
    if (q->control_guess_mode) json_object_set_new(o, "control_guess_mode", json_true());
    return dump(o);
}

/* ---- strict reading ---- */

/* Refuses members of o not in known (NULL-terminated); what names o in the message. */
static sdw_status only_known(json_t *o, const char *const *known, const char *what,
                             sdw_error *err) {
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        const char *const *k = known;
        while (*k && strcmp(*k, key)) k++;
        if (!*k)
            return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: unknown field '%.64s'", what, key);
    }
    return SDW_OK;
}

static sdw_status get_int(json_t *o, const char *key, long long lo, long long hi, bool need,
                          long long *out, const char *what, sdw_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (need) return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: field '%s' is missing", what, key);
        return SDW_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: field '%s' must be an integer in "
                             "[%lld, %lld]", what, key, lo, hi);
    *out = json_integer_value(v);
    return SDW_OK;
}

static sdw_status get_num(json_t *o, const char *key, bool need, double *out, const char *what,
                          sdw_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (need) return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: field '%s' is missing", what, key);
        return SDW_OK;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: field '%s' must be a number", what, key);
    *out = json_number_value(v);
    return SDW_OK;
}

static sdw_status get_bool(json_t *o, const char *key, bool *out, const char *what,
                           sdw_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return SDW_OK;
    if (!json_is_boolean(v))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: field '%s' must be true or false", what, key);
    *out = json_is_true(v);
    return SDW_OK;
}

/* A string member as a new copy in *out (NULL when absent). */
static sdw_status get_str(json_t *o, const char *key, bool need, char **out, const char *what,
                          sdw_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (need) return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: field '%s' is missing", what, key);
        return SDW_OK;
    }
    if (!json_is_string(v))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: field '%s' must be a string", what, key);
    *out = sdw_xstrdup(json_string_value(v));
    return SDW_OK;
}

static json_t *parse_object(const char *text, size_t len, const char *what, sdw_error *err) {
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) {
        sdw_error_set(err, SDW_E_FORMAT, "%s is not valid JSON: %s (line %d, column %d)", what,
                      je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        sdw_error_set(err, SDW_E_FORMAT, "%s is not a JSON object", what);
        return NULL;
    }
    return o;
}

/* The image description o[key] ({"width","height","channels"}) into img; pixels (NULL =
 * summary) must hold exactly its bytes. what names the field in messages. */
static sdw_status read_image(json_t *o, const char *key, const char *what, const void *pixels,
                             size_t len, sdw_image *img, sdw_error *err) {
    static const char *const known[] = {"width", "height", "channels", NULL};
    json_t *d = json_object_get(o, key);
    if (!d) {
        if (pixels)
            return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: pixels came without its description",
                                 what);
        return SDW_OK;
    }
    if (!json_is_object(d))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "%s must be an object", what);
    sdw_status s;
    long long w = 0, h = 0, c = 0;
    if ((s = only_known(d, known, what, err)) ||
        (s = get_int(d, "width", 1, 1 << 16, true, &w, what, err)) ||
        (s = get_int(d, "height", 1, 1 << 16, true, &h, what, err)) ||
        (s = get_int(d, "channels", 1, 4, true, &c, what, err)))
        return s;
    img->width = (int)w;
    img->height = (int)h;
    img->channels = (int)c;
    if (!pixels) return SDW_OK;
    if (len != sdw_pool_image_bytes(img))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: %zu pixel bytes for a %lldx%lld "
                             "image of %lld channels (%zu expected)", what, len, w, h, c,
                             sdw_pool_image_bytes(img));
    img->data = sdw_xmalloc(len);
    memcpy(img->data, pixels, len);
    return SDW_OK;
}

/* A LoRA's or ControlNet's name from the queue: a name inside a folder, never a way out of it
 * (the worker's resolvers refuse these too; a payload is refused before any folder is read). */
static sdw_status check_name(const char *name, const char *what, sdw_error *err) {
    bool dotdot = false;
    for (const char *p = name; p; p = strchr(p, '/'), p = p ? p + 1 : NULL)
        dotdot |= p[0] == '.' && p[1] == '.' && (p[2] == '/' || !p[2]);
    if (!*name || name[0] == '/' || dotdot)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: '%.128s' is not a name inside a "
                             "worker's folder (empty, absolute, or with a '..' component)",
                             what, name);
    return SDW_OK;
}

/* The member "path" of a LoRA or ControlNet entry: never accepted from the queue. */
static sdw_status refuse_path(json_t *o, const char *what, const char *dir_option,
                              sdw_error *err) {
    if (!json_object_get(o, "path")) return SDW_OK;
    return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: a file given by path is not accepted from "
                         "the queue (a worker loads it by name, from its own %s)", what,
                         dir_option);
}

static sdw_status read_hires(json_t *o, sdw_hires *h, sdw_error *err) {
    static const char *const known[] = {"scale", "resize_width", "resize_height", "upscaler",
                                        "steps", "strength", NULL};
    const char *what = "job request: hires";
    json_t *d = json_object_get(o, "hires");
    if (!d) return SDW_OK;
    if (!json_is_object(d))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "%s must be an object", what);
    long long rw = 0, rh = 0, steps = 0;
    double scale = 0, strength = -1;
    char *up = NULL;
    sdw_status s;
    if ((s = only_known(d, known, what, err)) ||
        (s = get_num(d, "scale", false, &scale, what, err)) ||
        (s = get_int(d, "resize_width", 0, 1 << 20, false, &rw, what, err)) ||
        (s = get_int(d, "resize_height", 0, 1 << 20, false, &rh, what, err)) ||
        (s = get_int(d, "steps", 0, 1 << 20, false, &steps, what, err)) ||
        (s = get_num(d, "strength", false, &strength, what, err)) ||
        (s = get_str(d, "upscaler", false, &up, what, err)))
        return s;
    sdw_upscaler u = SDW_UPSCALE_LATENT;
    s = up ? sdw_upscaler_parse(up, &u, err) : SDW_OK;
    free(up);
    if (s) return s;
    *h = (sdw_hires){.enable = true, .scale = scale, .resize_width = (int)rw,
                     .resize_height = (int)rh, .upscaler = u, .steps = (int)steps,
                     .strength = strength};
    return SDW_OK;
}

static sdw_status read_loras(json_t *o, sdw_pool_request *r, sdw_error *err) {
    static const char *const known[] = {"name", "multiplier", NULL};
    json_t *a = json_object_get(o, "loras");
    if (!a) return SDW_OK;
    if (!json_is_array(a) || json_array_size(a) > SDW_LORA_MAX_PER_REQUEST)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "job request: 'loras' must be an array of "
                             "at most %d LoRAs", SDW_LORA_MAX_PER_REQUEST);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        char what[64];
        snprintf(what, sizeof what, "job request: loras[%zu]", i);
        if (!json_is_object(v))
            return sdw_error_set(err, SDW_E_INVALID_ARG, "%s must be an object", what);
        double m = 0;
        sdw_status s;
        if ((s = refuse_path(v, what, "--lora-dir", err)) ||
            (s = only_known(v, known, what, err)) ||
            (s = get_str(v, "name", true, &r->lora_names[i], what, err)) ||
            (s = check_name(r->lora_names[i], what, err)) ||
            (s = get_num(v, "multiplier", true, &m, what, err)))
            return s;
        r->loras[i] = (sdw_lora_ref){.name = r->lora_names[i], .multiplier = (float)m};
    }
    r->req.loras = r->loras;
    r->req.n_loras = (int)json_array_size(a);
    return SDW_OK;
}

/* The ControlNets, each with its image (pixels px->control[i] unless a summary is read). */
static sdw_status read_controls(json_t *o, const sdw_pool_pixels *px, sdw_pool_request *r,
                                sdw_error *err) {
    static const char *const known[] = {"name", "scale", "start", "end", "image", NULL};
    json_t *a = json_object_get(o, "controls");
    size_t n = a ? json_array_size(a) : 0;
    if (a && (!json_is_array(a) || n > SDW_MAX_CONTROLS))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "job request: 'controls' must be an array "
                             "of at most %d ControlNets", SDW_MAX_CONTROLS);
    for (size_t i = n; px && i < SDW_MAX_CONTROLS; i++)
        if (px->control[i])
            return sdw_error_set(err, SDW_E_INVALID_ARG, "job request: pixels of control image "
                                 "%zu came, but it declares %zu ControlNets", i, n);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        char what[64];
        snprintf(what, sizeof what, "job request: controls[%zu]", i);
        if (!json_is_object(v))
            return sdw_error_set(err, SDW_E_INVALID_ARG, "%s must be an object", what);
        sdw_control *c = &r->controls[i];
        *c = sdw_control_default();
        double scale = c->scale;
        sdw_status s;
        if ((s = refuse_path(v, what, "--controlnet-dir", err)) ||
            (s = only_known(v, known, what, err)) ||
            (s = get_str(v, "name", true, &r->control_names[i], what, err)) ||
            (s = check_name(r->control_names[i], what, err)) ||
            (s = get_num(v, "scale", false, &scale, what, err)) ||
            (s = get_num(v, "start", false, &c->start, what, err)) ||
            (s = get_num(v, "end", false, &c->end, what, err)))
            return s;
        c->name = r->control_names[i];
        c->scale = (float)scale;
        char iwhat[80];
        snprintf(iwhat, sizeof iwhat, "%s.image", what);
        if (!json_object_get(v, "image"))
            return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: field 'image' is missing", what);
        if (px && !px->control[i])
            return sdw_error_set(err, SDW_E_INVALID_ARG, "%s came without its pixels", iwhat);
        if ((s = read_image(v, "image", iwhat, px ? px->control[i] : NULL,
                            px ? px->control_len[i] : 0, &r->control_images[i], err)))
            return s;
        c->image = &r->control_images[i];
    }
    r->req.controls = n ? r->controls : NULL;
    r->req.n_controls = (int)n;
    return SDW_OK;
}

static sdw_status read_params(json_t *o, sdw_pool_request *r, sdw_error *err) {
    json_t *p = json_object_get(o, "params");
    if (!p) return SDW_OK;
    if (!json_is_object(p))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "job request: 'params' must be an object");
    if (json_object_size(p) > SDW_POOL_MAX_PARAMS)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "job request: more than %d params",
                             SDW_POOL_MAX_PARAMS);
    const char *key;
    json_t *v;
    int n = 0;
    json_object_foreach(p, key, v) {
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return sdw_error_set(err, SDW_E_INVALID_ARG, "job request: params.%.64s must be a "
                                 "number", key);
        r->param_names[n] = sdw_xstrdup(key);
        r->params[n] = (sdw_param){r->param_names[n], json_number_value(v)};
        n++;
    }
    r->req.params = r->params;
    r->req.n_params = n;
    return SDW_OK;
}

static sdw_status read_request(json_t *o, const sdw_pool_pixels *px, sdw_pool_request *r,
                               sdw_error *err) {
    static const char *const known[] = {
        "v", "n", "prompt", "negative_prompt", "width", "height", "steps", "guidance", "seed",
        "sampler", "scheduler", "rng", "strength", "params", "vae_tiling", "decoder", "profile",
        "init_image", "mask", "prompt_syntax", "clip_skip", "hires", "loras", "controls",
        "control_guess_mode", NULL};
    const char *what = "job request";
    sdw_status s;
    long long v = 0, n = 0, w = 0, h = 0, steps = 0, seed = -1, clip_skip = 0;
    double g = -1, strength = -1;
    if ((s = get_int(o, "v", 1, 1 << 20, true, &v, what, err))) return s;
    if (v != SDW_POOL_PAYLOAD_VERSION)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "job request: version %lld, but this worker "
                             "reads version %d (upgrade the older side)", v,
                             SDW_POOL_PAYLOAD_VERSION);
    if ((s = only_known(o, known, what, err)) ||
        (s = get_int(o, "n", 1, 1 << 20, true, &n, what, err)) ||
        (s = get_str(o, "prompt", true, &r->prompt, what, err)) ||
        (s = get_str(o, "negative_prompt", false, &r->negative, what, err)) ||
        (s = get_int(o, "width", 0, 1 << 20, false, &w, what, err)) ||
        (s = get_int(o, "height", 0, 1 << 20, false, &h, what, err)) ||
        (s = get_int(o, "steps", 0, 1 << 20, false, &steps, what, err)) ||
        (s = get_num(o, "guidance", false, &g, what, err)) ||
        (s = get_int(o, "seed", -1, INT64_MAX, false, &seed, what, err)) ||
        (s = get_str(o, "sampler", false, &r->sampler, what, err)) ||
        (s = get_str(o, "scheduler", false, &r->scheduler, what, err)) ||
        (s = get_num(o, "strength", false, &strength, what, err)) ||
        (s = get_bool(o, "profile", &r->req.profile, what, err)) ||
        (s = get_bool(o, "prompt_syntax", &r->req.prompt_syntax, what, err)) ||
        (s = get_int(o, "clip_skip", 0, SDW_MAX_CLIP_SKIP, false, &clip_skip, what, err)) ||
        (s = get_bool(o, "control_guess_mode", &r->req.control_guess_mode, what, err)) ||
        (s = read_params(o, r, err)) || (s = read_hires(o, &r->req.hires, err)) ||
        (s = read_loras(o, r, err)))
        return s;
    sdw_request *q = &r->req;
    r->n_images = (int)n;
    q->prompt = r->prompt;
    q->negative_prompt = r->negative;
    q->sampler = r->sampler;
    q->scheduler = r->scheduler;
    q->width = (int)w;
    q->height = (int)h;
    q->steps = (int)steps;
    q->guidance = (float)g;
    q->seed = seed;
    q->strength = strength;
    q->clip_skip = (int)clip_skip;
    json_t *t;
    if ((t = json_object_get(o, "rng")) &&
        (!json_is_string(t) || (s = sdw_rng_kind_parse(json_string_value(t), &q->rng, err))))
        return json_is_string(t) ? s : sdw_error_set(err, SDW_E_INVALID_ARG,
                                                     "job request: 'rng' must be a string");
    if ((t = json_object_get(o, "decoder")) &&
        (!json_is_string(t) || (s = sdw_decoder_parse(json_string_value(t), &q->decoder, err))))
        return json_is_string(t) ? s : sdw_error_set(err, SDW_E_INVALID_ARG,
                                                     "job request: 'decoder' must be a string");
    if ((t = json_object_get(o, "vae_tiling"))) {
        const char *m = json_string_value(t);
        if (m && !strcmp(m, "auto")) q->vae_tiling = SDW_TILING_AUTO;
        else if (m && !strcmp(m, "off")) q->vae_tiling = SDW_TILING_OFF;
        else if (m && !strcmp(m, "on")) q->vae_tiling = SDW_TILING_ON;
        else return sdw_error_set(err, SDW_E_INVALID_ARG, "job request: 'vae_tiling' must be "
                                  "\"auto\", \"off\" or \"on\"");
    }
    /* A summary (no pixels) may describe images; a payload must carry every one it declares. */
    if (px && ((json_object_get(o, "init_image") && !px->init) ||
               (json_object_get(o, "mask") && !px->mask)))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "job request: the %s it declares came "
                             "without its pixels", px->init ? "mask" : "init image");
    if ((s = read_image(o, "init_image", "job request: init_image", px ? px->init : NULL,
                        px ? px->init_len : 0, &r->init, err)) ||
        (s = read_image(o, "mask", "job request: mask", px ? px->mask : NULL,
                        px ? px->mask_len : 0, &r->mask, err)) ||
        (s = read_controls(o, px, r, err)))
        return s;
    if (json_object_get(o, "init_image")) q->init_image = &r->init;
    if (json_object_get(o, "mask")) q->mask = &r->mask;
    return SDW_OK;
}

sdw_status sdw_pool_request_parse(const char *json, size_t json_len, const sdw_pool_pixels *px,
                                  size_t max_bytes, sdw_pool_request *out, sdw_error *err) {
    *out = (sdw_pool_request){0};
    size_t total = json_len;
    bool fits = true;
    if (px) {
        fits = sdw_size_add(total, px->init ? px->init_len : 0, &total) &&
               sdw_size_add(total, px->mask ? px->mask_len : 0, &total);
        for (int i = 0; i < SDW_MAX_CONTROLS && fits; i++)
            fits = sdw_size_add(total, px->control[i] ? px->control_len[i] : 0, &total);
    }
    if (!fits || (max_bytes && total > max_bytes))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "job request of %zu bytes (with its "
                             "images) is over the limit of %zu bytes", total, max_bytes);
    json_t *o = parse_object(json, json_len, "the job request", err);
    if (!o) return err ? err->code : SDW_E_FORMAT;
    out->req = sdw_request_default();
    sdw_status s = read_request(o, px, out, err);
    json_decref(o);
    if (s) sdw_pool_request_free(out);
    return s;
}

void sdw_pool_request_free(sdw_pool_request *r) {
    if (!r) return;
    free(r->prompt);
    free(r->negative);
    free(r->sampler);
    free(r->scheduler);
    sdw_image_free(&r->init);
    sdw_image_free(&r->mask);
    for (int i = 0; i < SDW_POOL_MAX_PARAMS; i++) free(r->param_names[i]);
    for (int i = 0; i < SDW_LORA_MAX_PER_REQUEST; i++) free(r->lora_names[i]);
    for (int i = 0; i < SDW_MAX_CONTROLS; i++) {
        free(r->control_names[i]);
        sdw_image_free(&r->control_images[i]);
    }
    *r = (sdw_pool_request){0};
}

/* ---- capabilities ---- */

static json_t *str_list(const char *const *l) {
    json_t *a = json_array();
    for (; l && *l; l++) json_array_append_new(a, json_string(*l));
    return a;
}

char *sdw_pool_caps_json(const sdw_capabilities *c) {
    json_t *o = json_pack(
        "{s:b,s:b,s:b,s:b,s:b,s:b,s:b,s:i,s:i,s:i,s:f,s:i,s:i,s:i,s:i,s:o,s:s?,s:o,s:b,s:b}",
        "txt2img", c->txt2img, "img2img", c->img2img, "inpainting", c->inpainting, "lora",
        c->lora, "controlnet", c->controlnet, "supports_guidance", c->supports_guidance,
        "supports_negative_prompt", c->supports_negative_prompt, "default_width",
        c->default_width, "default_height", c->default_height, "default_steps", c->default_steps,
        "default_guidance", (double)c->default_guidance, "size_multiple", c->size_multiple,
        "min_size", c->min_size, "max_size", c->max_size, "max_steps", c->max_steps, "samplers",
        str_list(c->samplers), "default_sampler", c->default_sampler, "schedulers",
        str_list(c->schedulers), "strength_rounds_start", c->strength_rounds_start, "taesd",
        c->taesd);
    SDW_ASSERT(o);
    json_t *params = json_array();
    for (const sdw_param_spec *p = c->params; p && p->name; p++)
        json_array_append_new(params, json_pack("{s:s,s:f,s:f,s:f,s:b,s:s}", "name", p->name,
                                                "min", p->min, "max", p->max, "default", p->def,
                                                "integer", p->integer, "help",
                                                p->help ? p->help : ""));
    json_object_set_new(o, "params", params);
    return dump(o);
}

struct sdw_pool_caps {
    sdw_capabilities caps;
    char **samplers, **schedulers; /* NULL-terminated */
    char *default_sampler;
    sdw_param_spec *params;        /* {NULL}-terminated */
    int n_params;
};

void sdw_pool_caps_free(sdw_pool_caps *c) {
    if (!c) return;
    for (char **s = c->samplers; s && *s; s++) free(*s);
    for (char **s = c->schedulers; s && *s; s++) free(*s);
    free(c->samplers);
    free(c->schedulers);
    free(c->default_sampler);
    for (int i = 0; i < c->n_params; i++) {
        free((char *)c->params[i].name);
        free((char *)c->params[i].help);
    }
    free(c->params);
    free(c);
}

const sdw_capabilities *sdw_pool_caps_get(const sdw_pool_caps *c) { return &c->caps; }

static sdw_status read_list(json_t *o, const char *key, char ***out, sdw_error *err) {
    json_t *a = json_object_get(o, key);
    if (!json_is_array(a) || json_array_size(a) > 256)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "capabilities: '%s' must be an array of "
                             "at most 256 names", key);
    *out = sdw_xcalloc(json_array_size(a) + 1, sizeof **out);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        if (!json_is_string(v))
            return sdw_error_set(err, SDW_E_INVALID_ARG, "capabilities: %s[%zu] must be a string",
                                 key, i);
        (*out)[i] = sdw_xstrdup(json_string_value(v));
    }
    return SDW_OK;
}

static sdw_status read_param_specs(json_t *o, sdw_pool_caps *c, sdw_error *err) {
    static const char *const known[] = {"name", "min", "max", "default", "integer", "help", NULL};
    json_t *a = json_object_get(o, "params");
    if (!json_is_array(a) || json_array_size(a) > 256)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "capabilities: 'params' must be an array");
    c->params = sdw_xcalloc(json_array_size(a) + 1, sizeof *c->params);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        const char *what = "capabilities: a params entry";
        if (!json_is_object(v))
            return sdw_error_set(err, SDW_E_INVALID_ARG, "%s must be an object", what);
        sdw_param_spec *p = &c->params[i];
        char *name = NULL, *help = NULL;
        sdw_status s;
        if ((s = only_known(v, known, what, err)) ||
            (s = get_str(v, "name", true, &name, what, err)))
            return s;
        p->name = name;
        c->n_params = (int)i + 1;
        if ((s = get_str(v, "help", false, &help, what, err))) return s;
        p->help = help;
        if ((s = get_num(v, "min", true, &p->min, what, err)) ||
            (s = get_num(v, "max", true, &p->max, what, err)) ||
            (s = get_num(v, "default", true, &p->def, what, err)) ||
            (s = get_bool(v, "integer", &p->integer, what, err)))
            return s;
    }
    c->caps.params = c->params;
    return SDW_OK;
}

sdw_status sdw_pool_caps_parse(const char *json, size_t len, sdw_pool_caps **out,
                               sdw_error *err) {
    static const char *const known[] = {
        "txt2img", "img2img", "inpainting", "lora", "controlnet", "supports_guidance",
        "supports_negative_prompt", "default_width", "default_height", "default_steps",
        "default_guidance", "size_multiple", "min_size", "max_size", "max_steps", "samplers",
        "default_sampler", "schedulers", "strength_rounds_start", "params", "taesd", NULL};
    const char *what = "capabilities";
    json_t *o = parse_object(json, len, "a worker's capabilities", err);
    if (!o) return err ? err->code : SDW_E_FORMAT;
    sdw_pool_caps *c = sdw_xcalloc(1, sizeof *c);
    sdw_capabilities *k = &c->caps;
    long long dw = 0, dh = 0, ds = 0, mult = 0, mn = 0, mx = 0, msteps = 0;
    double dg = 0;
    sdw_status s;
    if ((s = only_known(o, known, what, err)) ||
        (s = get_bool(o, "txt2img", &k->txt2img, what, err)) ||
        (s = get_bool(o, "img2img", &k->img2img, what, err)) ||
        (s = get_bool(o, "inpainting", &k->inpainting, what, err)) ||
        (s = get_bool(o, "lora", &k->lora, what, err)) ||
        (s = get_bool(o, "controlnet", &k->controlnet, what, err)) ||
        (s = get_bool(o, "supports_guidance", &k->supports_guidance, what, err)) ||
        (s = get_bool(o, "supports_negative_prompt", &k->supports_negative_prompt, what, err)) ||
        (s = get_bool(o, "strength_rounds_start", &k->strength_rounds_start, what, err)) ||
        (s = get_bool(o, "taesd", &k->taesd, what, err)) ||
        (s = get_int(o, "default_width", 1, 1 << 20, true, &dw, what, err)) ||
        (s = get_int(o, "default_height", 1, 1 << 20, true, &dh, what, err)) ||
        (s = get_int(o, "default_steps", 1, 1 << 20, true, &ds, what, err)) ||
        (s = get_num(o, "default_guidance", true, &dg, what, err)) ||
        (s = get_int(o, "size_multiple", 1, 1 << 20, true, &mult, what, err)) ||
        (s = get_int(o, "min_size", 1, 1 << 20, true, &mn, what, err)) ||
        (s = get_int(o, "max_size", 1, 1 << 20, true, &mx, what, err)) ||
        (s = get_int(o, "max_steps", 1, 1 << 20, true, &msteps, what, err)) ||
        (s = get_str(o, "default_sampler", false, &c->default_sampler, what, err)) ||
        (s = read_list(o, "samplers", &c->samplers, err)) ||
        (s = read_list(o, "schedulers", &c->schedulers, err)) ||
        (s = read_param_specs(o, c, err)))
        goto fail;
    k->default_width = (int)dw;
    k->default_height = (int)dh;
    k->default_steps = (int)ds;
    k->default_guidance = (float)dg;
    k->size_multiple = (int)mult;
    k->min_size = (int)mn;
    k->max_size = (int)mx;
    k->max_steps = (int)msteps;
    k->samplers = (const char *const *)c->samplers;
    k->schedulers = (const char *const *)c->schedulers;
    k->default_sampler = c->default_sampler;
    json_decref(o);
    *out = c;
    return SDW_OK;
fail:
    json_decref(o);
    sdw_pool_caps_free(c);
    return s;
}

/* ---- result info ---- */

char *sdw_pool_info_json(const sdw_result_info *i, const char *infotext) {
    json_t *o = json_pack(
        "{s:I,s:i,s:i,s:i,s:f,s:s,s:s,s:b,s:f,s:f,s:f,s:f,s:i,s:f,s:f,s:b,s:b,s:i,s:b,s:b,s:s}",
        "seed", (json_int_t)i->seed, "width", i->width, "height", i->height, "steps", i->steps,
        "guidance", (double)i->guidance, "sampler", i->sampler, "scheduler", i->scheduler,
        "prompt_truncated", i->prompt_truncated, "seconds_encode", i->seconds_encode,
        "seconds_denoise", i->seconds_denoise, "seconds_first_call", i->seconds_first_call,
        "seconds_decode", i->seconds_decode, "n_denoiser_calls", i->n_denoiser_calls,
        "strength", i->strength, "seconds_image_encode", i->seconds_image_encode,
        "guidance_embedded", i->guidance_embedded, "interrupted", i->interrupted, "steps_done",
        i->steps_done, "vae_tiled", i->vae_tiled, "taesd_decoded", i->taesd_decoded, "infotext",
        infotext ? infotext : "");
    SDW_ASSERT(o);
    return dump(o);
}

sdw_status sdw_pool_info_parse(const char *json, size_t len, sdw_result_info *info,
                               char **infotext, sdw_error *err) {
    static const char *const known[] = {
        "seed", "width", "height", "steps", "guidance", "sampler", "scheduler",
        "prompt_truncated", "seconds_encode", "seconds_denoise", "seconds_first_call",
        "seconds_decode", "n_denoiser_calls", "strength", "seconds_image_encode",
        "guidance_embedded", "interrupted", "steps_done", "vae_tiled", "taesd_decoded", "infotext",
        NULL};
    const char *what = "result info";
    json_t *o = parse_object(json, len, "a job's result info", err);
    if (!o) return err ? err->code : SDW_E_FORMAT;
    sdw_result_info i = {0};
    long long seed = 0, w = 0, h = 0, steps = 0, calls = 0, done = 0;
    double g = 0;
    char *sampler = NULL, *scheduler = NULL, *text = NULL;
    sdw_status s;
    if ((s = only_known(o, known, what, err)) ||
        (s = get_int(o, "seed", 0, INT64_MAX, true, &seed, what, err)) ||
        (s = get_int(o, "width", 0, 1 << 20, true, &w, what, err)) ||
        (s = get_int(o, "height", 0, 1 << 20, true, &h, what, err)) ||
        (s = get_int(o, "steps", 0, 1 << 20, true, &steps, what, err)) ||
        (s = get_num(o, "guidance", true, &g, what, err)) ||
        (s = get_str(o, "sampler", true, &sampler, what, err)) ||
        (s = get_str(o, "scheduler", true, &scheduler, what, err)) ||
        (s = get_str(o, "infotext", true, &text, what, err)) ||
        (s = get_bool(o, "prompt_truncated", &i.prompt_truncated, what, err)) ||
        (s = get_num(o, "seconds_encode", false, &i.seconds_encode, what, err)) ||
        (s = get_num(o, "seconds_denoise", false, &i.seconds_denoise, what, err)) ||
        (s = get_num(o, "seconds_first_call", false, &i.seconds_first_call, what, err)) ||
        (s = get_num(o, "seconds_decode", false, &i.seconds_decode, what, err)) ||
        (s = get_int(o, "n_denoiser_calls", 0, 1 << 24, false, &calls, what, err)) ||
        (s = get_num(o, "strength", false, &i.strength, what, err)) ||
        (s = get_num(o, "seconds_image_encode", false, &i.seconds_image_encode, what, err)) ||
        (s = get_bool(o, "guidance_embedded", &i.guidance_embedded, what, err)) ||
        (s = get_bool(o, "interrupted", &i.interrupted, what, err)) ||
        (s = get_int(o, "steps_done", 0, 1 << 24, false, &done, what, err)) ||
        (s = get_bool(o, "vae_tiled", &i.vae_tiled, what, err)) ||
        (s = get_bool(o, "taesd_decoded", &i.taesd_decoded, what, err)))
        goto done;
    i.seed = seed;
    i.width = (int)w;
    i.height = (int)h;
    i.steps = (int)steps;
    i.guidance = (float)g;
    snprintf(i.sampler, sizeof i.sampler, "%s", sampler);
    snprintf(i.scheduler, sizeof i.scheduler, "%s", scheduler);
    i.n_denoiser_calls = (int)calls;
    i.steps_done = (int)done;
    *info = i;
    *infotext = text;
    text = NULL;
done:
    free(sampler);
    free(scheduler);
    free(text);
    json_decref(o);
    return s;
}
