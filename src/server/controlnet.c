/* ControlNets in the APIs: the native "controlnets" field, AUTOMATIC1111's
 * alwayson_scripts.controlnet.args (the sd-webui-controlnet extension's units, which its API
 * clients send) and the extension's own routes (/controlnet/model_list, module_list, version,
 * settings). A request names ControlNets by name only (in the worker's --controlnet-dir; the
 * model resolves them and refuses names leading out of it), never by path. Control images are
 * decoded last, after every other check, and fitted to the output size as the unit's resize
 * mode says: "Just Resize" stretches (diffusers' control image processor, which the model then
 * applies), "Crop and Resize" (the extension's default) crops the centre to the output's aspect
 * first, "Resize and Fill" pads to it with the median colour of the image's border. */
#include "server/server_impl.h"

#include "sdw/controlnet.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum resize_mode { RESIZE_JUST = 0, RESIZE_CROP = 1, RESIZE_FILL = 2 } resize_mode;

/* One unit as read, its image decoded later. */
typedef struct unit {
    const char *model;
    json_t *image; /* the base64 string, or NULL: the init image (A1111 img2img) */
    double scale, start, end;
    resize_mode resize;
} unit;

static sdw_status fail(const char *where, sdw_status code, sdw_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static sdw_status fail(const char *where, sdw_status code, sdw_error *err, const char *fmt, ...) {
    char msg[SDW_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sdw_error_set(err, code, "%s: %s", where, msg);
}

/* ---- fitting the control image to the output ---- */

/* The centre of img with the aspect of W x H (the extension's INNER_FIT: scale to cover, crop
 * the overflow). *out is new. */
static void crop_to_aspect(const sdw_image *img, int W, int H, sdw_image *out) {
    int cw = img->width, ch = img->height;
    if ((long long)cw * H > (long long)ch * W) cw = (int)(((long long)ch * W + H / 2) / H);
    else ch = (int)(((long long)cw * H + W / 2) / W);
    cw = cw < 1 ? 1 : cw;
    ch = ch < 1 ? 1 : ch;
    const int x0 = (img->width - cw) / 2, y0 = (img->height - ch) / 2, c = img->channels;
    *out = (sdw_image){.width = cw, .height = ch, .channels = c};
    out->data = sdw_xmalloc((size_t)cw * ch * c);
    for (int y = 0; y < ch; y++)
        memcpy(out->data + (size_t)y * cw * c,
               img->data + ((size_t)(y0 + y) * img->width + x0) * c, (size_t)cw * c);
}

static int cmp_u8(const void *a, const void *b) {
    return (int)*(const uint8_t *)a - (int)*(const uint8_t *)b;
}

/* img padded to the aspect of W x H, centred, the padding of the median colour of its border
 * pixels, per channel (the extension's OUTER_FIT background). *out is new. */
static void pad_to_aspect(const sdw_image *img, int W, int H, sdw_image *out) {
    const int w = img->width, h = img->height, c = img->channels;
    int pw = w, ph = h;
    if ((long long)w * H > (long long)h * W) ph = (int)(((long long)w * H + W / 2) / W);
    else pw = (int)(((long long)h * W + H / 2) / H);
    const size_t nb = 2 * (size_t)w + 2 * (size_t)h;
    uint8_t *border = sdw_xmalloc(nb), fill[4] = {0};
    for (int k = 0; k < c; k++) {
        size_t n = 0;
        for (int x = 0; x < w; x++) {
            border[n++] = img->data[(size_t)x * c + k];
            border[n++] = img->data[((size_t)(h - 1) * w + x) * c + k];
        }
        for (int y = 0; y < h; y++) {
            border[n++] = img->data[((size_t)y * w) * c + k];
            border[n++] = img->data[((size_t)y * w + w - 1) * c + k];
        }
        qsort(border, n, 1, cmp_u8);
        fill[k] = border[n / 2];
    }
    free(border);
    *out = (sdw_image){.width = pw, .height = ph, .channels = c};
    out->data = sdw_xmalloc((size_t)pw * ph * c);
    for (size_t p = 0; p < (size_t)pw * ph; p++) memcpy(out->data + p * c, fill, (size_t)c);
    const int x0 = (pw - w) / 2, y0 = (ph - h) / 2;
    for (int y = 0; y < h; y++)
        memcpy(out->data + ((size_t)(y0 + y) * pw + x0) * c, img->data + (size_t)y * w * c,
               (size_t)w * c);
}

/* Decodes each unit's image (or takes the init image) into im and fills req->controls. The
 * output size is req's, else the model's default. */
static sdw_status finish(const sdw_server_params *p, const sdw_capabilities *caps,
                         const unit *units, int n, sdw_request *req, sdw_req_images *im,
                         const char *field, sdw_error *err) {
    const int W = req->width ? req->width : caps->default_width;
    const int H = req->height ? req->height : caps->default_height;
    /* The names first, so a request naming an unknown ControlNet fails fast. Only where the
     * folder is known here: behind a pool gateway each worker resolves the names in its own
     * --controlnet-dir (a job naming one it lacks fails there, naming it); a local model
     * without a folder refuses the names when the job runs. */
    for (int i = 0; caps->controlnet_dir && i < n; i++) {
        char *path = NULL;
        sdw_status s = sdw_controlnet_resolve(caps->controlnet_dir, units[i].model, &path, err);
        free(path);
        if (s) {
            sdw_error_prefix(err, "%s[%d].model", field, i);
            return s;
        }
    }
    for (int i = 0; i < n; i++) {
        char where[64];
        snprintf(where, sizeof where, "%s[%d].image", field, i);
        sdw_image decoded = {0}, *img = &im->control_images[i];
        sdw_status s;
        if (units[i].image) {
            s = sdw__decode_image(p, json_string_value(units[i].image),
                                  json_string_length(units[i].image), false, where, &decoded, err);
            if (s) return s;
        } else { /* A1111 img2img: the unit without an image controls with the init image */
            const sdw_image *init = req->init_image;
            decoded = (sdw_image){.width = init->width, .height = init->height,
                                  .channels = init->channels};
            const size_t bytes = (size_t)init->width * init->height * init->channels;
            decoded.data = sdw_xmalloc(bytes);
            memcpy(decoded.data, init->data, bytes);
        }
        /* Without a size the pipeline takes the first control image's: nothing to fit. */
        const bool sized = req->width && req->height;
        if (units[i].resize == RESIZE_CROP && sized) crop_to_aspect(&decoded, W, H, img);
        else if (units[i].resize == RESIZE_FILL && sized) pad_to_aspect(&decoded, W, H, img);
        else *img = decoded, decoded.data = NULL;
        sdw_image_free(&decoded);
        sdw_control *c = &im->controls[i];
        *c = sdw_control_default();
        c->name = units[i].model;
        c->image = img;
        c->scale = (float)units[i].scale;
        c->start = units[i].start;
        c->end = units[i].end;
    }
    req->controls = n ? im->controls : NULL;
    req->n_controls = n;
    return SDW_OK;
}

/* ---- the native API ---- */

static sdw_status resize_by_name(const char *s, resize_mode *out) {
    static const char *const names[] = {"just_resize", "crop_and_resize", "resize_and_fill"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, names[i])) {
            *out = (resize_mode)i;
            return SDW_OK;
        }
    return SDW_E_INVALID_ARG;
}

/* "controlnets": [{"model": NAME, "image": BASE64, "scale": 1, "start": 0, "end": 1,
 * "resize_mode": "just_resize"}], "control_guess_mode": false. */
sdw_status sdw__controls_native(const sdw_server_params *p, const sdw_capabilities *caps,
                                json_t *body, sdw_request *req, sdw_req_images *im,
                                sdw_error *err) {
    json_t *arr = json_object_get(body, "controlnets");
    bool guess = false;
    sdw_status s = sdw__json_bool(body, "control_guess_mode", &guess, err);
    if (s) return s;
    req->control_guess_mode = guess;
    if (!arr || json_is_null(arr)) return SDW_OK;
    if (!json_is_array(arr))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "field 'controlnets' must be an array of {\"model\", \"image\", "
                             "\"scale\", \"start\", \"end\", \"resize_mode\"}");
    if (json_array_size(arr) > SDW_MAX_CONTROLS)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field 'controlnets' has more than %d entries",
                             SDW_MAX_CONTROLS);
    if (json_array_size(arr) && !caps->controlnet)
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "this model does not take ControlNets");
    unit units[SDW_MAX_CONTROLS];
    const int n = (int)json_array_size(arr);
    for (int i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, (size_t)i);
        char where[32];
        snprintf(where, sizeof where, "controlnets[%d]", i);
        if (!json_is_object(o))
            return fail(where, SDW_E_INVALID_ARG, err, "must be an object");
        const char *key;
        json_t *v;
        json_object_foreach(o, key, v) {
            static const char *const known[] = {"model", "image", "scale", "start", "end",
                                                "resize_mode"};
            bool ok = false;
            for (size_t k = 0; k < SDW_ARRAY_LEN(known) && !ok; k++) ok = !strcmp(key, known[k]);
            if (!ok)
                return fail(where, SDW_E_INVALID_ARG, err,
                            "unknown field '%.64s' (known: model, image, scale, start, end, "
                            "resize_mode)",
                            key);
        }
        unit *u = &units[i];
        *u = (unit){.scale = 1.0, .start = 0.0, .end = 1.0, .resize = RESIZE_JUST};
        const char *resize = NULL;
        if ((s = sdw__json_string(o, "model", &u->model, err)) ||
            (s = sdw__json_number(o, "scale", 0, SDW_CONTROL_MAX_SCALE, false, &u->scale, err)) ||
            (s = sdw__json_number(o, "start", 0, 1, false, &u->start, err)) ||
            (s = sdw__json_number(o, "end", 0, 1, false, &u->end, err)) ||
            (s = sdw__json_string(o, "resize_mode", &resize, err))) {
            sdw_error_prefix(err, "%s", where);
            return s;
        }
        if (!u->model || !*u->model)
            return fail(where, SDW_E_INVALID_ARG, err,
                        "needs 'model': a ControlNet's name (GET /controlnet/model_list)");
        u->image = json_object_get(o, "image");
        if (!json_is_string(u->image))
            return fail(where, SDW_E_INVALID_ARG, err, "needs 'image': the control image (base64)");
        if (resize && resize_by_name(resize, &u->resize))
            return fail(where, SDW_E_INVALID_ARG, err,
                        "resize_mode '%.32s' must be just_resize, crop_and_resize or "
                        "resize_and_fill",
                        resize);
        if (!(u->start < u->end))
            return fail(where, SDW_E_INVALID_ARG, err, "start %g must be smaller than end %g",
                        u->start, u->end);
    }
    return finish(p, caps, units, n, req, im, "controlnets", err);
}

/* ---- AUTOMATIC1111: the sd-webui-controlnet extension's units ---- */

static void warn(json_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(json_t *w, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(w, json_string(msg));
}

typedef struct label {
    const char *text;
    int value;
} label;

/* An enum the extension takes as its index (0 .. n-1) or as one of its labels; -1 if neither. */
static int enum_value(json_t *v, const label *labels, size_t n_labels, int n) {
    if (json_is_integer(v)) {
        const json_int_t i = json_integer_value(v);
        return i >= 0 && i < n ? (int)i : -1;
    }
    const char *s = json_string_value(v);
    for (size_t i = 0; s && i < n_labels; i++)
        if (!strcasecmp(s, labels[i].text)) return labels[i].value;
    return -1;
}

/* ResizeMode's values and the aliases its validator still takes. */
static const label k_resize[] = {
    {"Just Resize", RESIZE_JUST},          {"Crop and Resize", RESIZE_CROP},
    {"Resize and Fill", RESIZE_FILL},      {"Inner Fit (Scale to Fit)", RESIZE_CROP},
    {"Scale to Fit (Inner Fit)", RESIZE_CROP}, {"Outer Fit (Shrink to Fit)", RESIZE_FILL},
    {"Envelope (Outer Fit)", RESIZE_FILL},
};
static const label k_control[] = {
    {"Balanced", 0}, {"My prompt is more important", 1}, {"ControlNet is more important", 2}};

/* One unit of args: an object of the extension's ControlNetUnit fields. false = disabled. */
static sdw_status read_unit(json_t *o, const char *where, bool img2img, unit *u, bool *enabled,
                            json_t *w, sdw_error *err) {
    if (!json_is_object(o)) return fail(where, SDW_E_INVALID_ARG, err, "must be an object");
    sdw_status s;
    *enabled = true; /* the extension's API units were enabled unless they said otherwise */
    if ((s = sdw__json_bool(o, "enabled", enabled, err))) {
        sdw_error_prefix(err, "%s", where);
        return s;
    }
    if (!*enabled) return SDW_OK;
    *u = (unit){.scale = 1.0, .start = 0.0, .end = 1.0, .resize = RESIZE_CROP};
    const char *module = NULL;
    if ((s = sdw__json_string(o, "module", &module, err)) ||
        (s = sdw__json_string(o, "model", &u->model, err)) ||
        (s = sdw__json_number(o, "weight", 0, SDW_CONTROL_MAX_SCALE, true, &u->scale, err)) ||
        (s = sdw__json_number(o, "guidance_start", 0, 1, true, &u->start, err)) ||
        (s = sdw__json_number(o, "guidance_end", 0, 1, true, &u->end, err))) {
        sdw_error_prefix(err, "%s", where);
        return s;
    }
    if (module && *module && strcasecmp(module, "none"))
        return fail(where, SDW_E_UNSUPPORTED, err,
                    "preprocessor (module) '%.64s' is not available in this worker: run it "
                    "yourself and send its output with module \"none\"",
                    module);
    if (!u->model || !*u->model || !strcasecmp(u->model, "None"))
        return fail(where, SDW_E_INVALID_ARG, err,
                    "names no ControlNet model (GET /controlnet/model_list lists them)");
    json_t *rm = json_object_get(o, "resize_mode");
    if (rm && !json_is_null(rm)) {
        const int r = enum_value(rm, k_resize, SDW_ARRAY_LEN(k_resize), 3);
        if (r < 0)
            return fail(where, SDW_E_INVALID_ARG, err,
                        "resize_mode must be 0-2 or Just Resize, Crop and Resize, Resize and Fill");
        u->resize = (resize_mode)r;
    }
    json_t *cm = json_object_get(o, "control_mode");
    if (cm && !json_is_null(cm)) {
        const int c = enum_value(cm, k_control, SDW_ARRAY_LEN(k_control), 3);
        if (c < 0)
            return fail(where, SDW_E_INVALID_ARG, err,
                        "control_mode must be 0-2 or Balanced, My prompt is more important, "
                        "ControlNet is more important");
        if (c != 0)
            return fail(where, SDW_E_UNSUPPORTED, err,
                        "control_mode '%s' is not supported (only Balanced: the ControlNet "
                        "acts on both halves of classifier-free guidance, as diffusers)",
                        k_control[c].text);
    }
    /* image: base64, {"image", "mask"}, [image, mask]; older clients: input_image */
    json_t *img = json_object_get(o, "image");
    if (!img || json_is_null(img)) img = json_object_get(o, "input_image");
    if (json_is_object(img)) img = json_object_get(img, "image");
    else if (json_is_array(img)) img = json_array_get(img, 0);
    if (img && !json_is_null(img) && !json_is_string(img))
        return fail(where, SDW_E_INVALID_ARG, err, "image must be a base64 image");
    u->image = json_is_string(img) && json_string_length(img) ? img : NULL;
    if (!u->image && !img2img)
        return fail(where, SDW_E_INVALID_ARG, err,
                    "has no image (txt2img units need their control image)");
    if (!(u->start < u->end))
        return fail(where, SDW_E_INVALID_ARG, err,
                    "guidance_start %g must be smaller than guidance_end %g", u->start, u->end);
    static const char *const ignored[] = {"mask", "pixel_perfect", "processor_res",
                                          "threshold_a", "threshold_b", "low_vram",
                                          "lowvram", "guessmode"};
    for (size_t k = 0; k < SDW_ARRAY_LEN(ignored); k++) {
        json_t *v = json_object_get(o, ignored[k]);
        if (v && !json_is_null(v) && !json_is_false(v) &&
            !(json_is_number(v) && json_number_value(v) == -1))
            warn(w, "%s.%s ignored: the control image is used as sent", where, ignored[k]);
    }
    return SDW_OK;
}

sdw_status sdw__controls_a1111(const sdw_server_params *p, const sdw_capabilities *caps,
                               json_t *body, bool img2img, sdw_request *req, sdw_req_images *im,
                               json_t *warnings, sdw_error *err) {
    json_t *scripts = json_object_get(body, "alwayson_scripts");
    if (!scripts || json_is_null(scripts)) return SDW_OK;
    if (!json_is_object(scripts))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field 'alwayson_scripts' must be an object");
    json_t *cn = NULL;
    const char *key;
    json_t *v;
    json_object_foreach(scripts, key, v) {
        if (!strcasecmp(key, "controlnet")) cn = v; /* A1111 matches script titles so */
        else warn(warnings, "alwayson_scripts.%.64s ignored: not implemented", key);
    }
    if (!cn || json_is_null(cn)) return SDW_OK;
    json_t *args = json_is_object(cn) ? json_object_get(cn, "args") : NULL;
    if (!json_is_array(args))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "alwayson_scripts.controlnet must be {\"args\": [units]}");
    unit units[SDW_MAX_CONTROLS];
    int n = 0;
    for (size_t i = 0; i < json_array_size(args); i++) {
        char where[64];
        snprintf(where, sizeof where, "alwayson_scripts.controlnet.args[%zu]", i);
        bool enabled = false;
        if (n == SDW_MAX_CONTROLS)
            return fail(where, SDW_E_INVALID_ARG, err, "more than %d enabled units",
                        SDW_MAX_CONTROLS);
        sdw_status s = read_unit(json_array_get(args, i), where, img2img, &units[n], &enabled,
                                 warnings, err);
        if (s) return s;
        n += enabled;
    }
    if (n && !caps->controlnet)
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "this model does not take ControlNets");
    return finish(p, caps, units, n, req, im, "alwayson_scripts.controlnet.args", err);
}

/* ---- the extension's routes ---- */

static enum MHD_Result get_model_list(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    sdw_model_list *ml = NULL;
    sdw_error e = {0};
    sdw_status st = js->ops->models(js, &ml, &e);
    if (st) return sdw__http_status(r, st, NULL, e.msg);
    /* the folder of a model loaded here (a gateway's workers' folders are theirs) */
    const char *dir = ml->n && ml->m[0].model ? ml->m[0].caps->controlnet_dir : NULL;
    json_t *list = json_array();
    sdw_controlnet_entry *entries = NULL;
    int n = 0;
    sdw_error err = {0};
    if (dir && sdw_controlnet_list(dir, &entries, &n, &err) == SDW_OK)
        for (int i = 0; i < n; i++) json_array_append_new(list, json_string(entries[i].name));
    sdw_controlnet_list_free(entries, n);
    sdw__model_list_free(ml);
    return sdw__http_json(r, 200, json_pack("{s:o}", "model_list", list));
}

static enum MHD_Result get_module_list(sdw_http_req *r) {
    /* No preprocessors: control images are used as sent. */
    return sdw__http_json(r, 200, json_pack("{s:[s],s:{}}", "module_list", "none",
                                            "module_detail"));
}

static enum MHD_Result get_version(sdw_http_req *r) {
    return sdw__http_json(r, 200, json_pack("{s:i}", "version", 2));
}

static enum MHD_Result get_settings(sdw_http_req *r) {
    return sdw__http_json(r, 200, json_pack("{s:i}", "control_net_unit_count", SDW_MAX_CONTROLS));
}

const sdw_route sdw__controlnet_routes[] = {
    {"GET", "/controlnet/model_list", get_model_list},
    {"GET", "/controlnet/module_list", get_module_list},
    {"GET", "/controlnet/version", get_version},
    {"GET", "/controlnet/settings", get_settings},
    {NULL, NULL, NULL},
};
