/* server/a1111.c — the AUTOMATIC1111 web UI API (/sdapi/v1/...), field names and types as A1111
 * clients expect them: txt2img/img2img answer {images: [base64 PNG], parameters: {...},
 * info: "<JSON string>"}; progress, interrupt, skip, png-info, and the lists clients read at
 * start (samplers, schedulers, sd-models, sd-vae, upscalers, latent-upscale-modes, scripts,
 * prompt-styles, embeddings, loras, memory, cmd-flags, options).
 * A1111 clients send many fields: those that change nothing here (send_images, save_images,
 * do_not_save_*, ...) pass silently; those that would change the image in a way this worker does
 * not implement (restore_faces, tiling, styles, scripts, ...) are ignored with a
 * warning in the answer's info ("warnings"), never silently; those it cannot honour at all
 * (subseeds) are refused, and a checkpoint it does not serve is a 404. Prompts are
 * read with AUTOMATIC1111's syntax (sdw_request.prompt_syntax: emphasis, BREAK, 75-token
 * chunks; "prompt_syntax": false, our extension, turns it off), clip skip comes from
 * override_settings.CLIP_stop_at_last_layers or a top-level clip_skip (SD.Next's, which wins),
 * and embeddings lists the model's --embeddings-dir. */
#include "server/server_impl.h"

#include "core/common.h"
#include "io/base64.h"
#include "io/infotext.h"
#include "io/png.h"
#include "sdw/lora.h"
#include "text/embeddings.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Our sampler name for an A1111 one ("Euler a", "DPM++ 2M Karras", or our own "euler_a").
 * A trailing " Karras" (A1111 before 1.9) selects the Karras schedule. */
static sdw_status resolve_sampler(const sdw_capabilities *c, const char *name, sdw_request *req,
                                  sdw_error *err) {
    char base[64];
    snprintf(base, sizeof base, "%s", name);
    size_t n = strlen(base);
    if (n > 7 && !strcasecmp(base + n - 7, " Karras")) {
        base[n - 7] = 0;
        req->scheduler = "karras";
    }
    for (const char *const *s = c->samplers; s && *s; s++)
        if (!strcasecmp(base, *s) || !strcasecmp(base, sdw_sampler_a1111_name(*s))) {
            req->sampler = *s;
            return SDW_OK;
        }
    char list[512] = "";
    for (const char *const *s = c->samplers; s && *s; s++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", sdw_sampler_a1111_name(*s));
    }
    return sdw_error_set(err, SDW_E_INVALID_ARG, "unknown sampler '%.64s' (available: %s)", name,
                         list);
}

static sdw_status resolve_scheduler(const char *name, sdw_request *req, sdw_error *err) {
    if (!strcasecmp(name, "automatic") || !strcasecmp(name, "default") ||
        !strcasecmp(name, "uniform"))
        req->scheduler = "default";
    else if (!strcasecmp(name, "karras")) req->scheduler = "karras";
    else
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "unknown scheduler '%.64s' (available: Automatic, Karras)", name);
    return SDW_OK;
}

/* Whether name (what a client sends as sd_model_checkpoint: A1111's title "name.safetensors
 * [hash]", its model name without extension, or our name) means the loaded model. */
static bool is_our_checkpoint(const char *name, const char *ours) {
    size_t n = strlen(ours), k = strlen(name);
    if (!strcmp(name, ours)) return true;
    if (k > n && !strncmp(name, ours, n) && name[n] == ' ' && name[n + 1] == '[') return true;
    const char *dot = strrchr(ours, '.'); /* the file stem, as A1111's model_name */
    size_t stem = dot && dot != ours ? (size_t)(dot - ours) : n;
    return k == stem && !strncmp(name, ours, stem);
}

static void warn(json_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(json_t *w, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(w, json_string(msg));
}

/* Whether field key holds something other than its A1111 default: absent, null, false, 0, "",
 * [], {} (or, for a number, the given default). */
static bool set_beyond(json_t *b, const char *key, double def) {
    json_t *v = json_object_get(b, key);
    if (!v || json_is_null(v) || json_is_false(v)) return false;
    if (json_is_number(v)) return json_number_value(v) != def;
    if (json_is_string(v)) return json_string_length(v) > 0;
    if (json_is_array(v)) return json_array_size(v) > 0;
    if (json_is_object(v)) return json_object_size(v) > 0;
    return true;
}

/* override_settings: the checkpoint must be ours (A1111 would load it: a silent run with another
 * model is never right); settings that change the image are not implemented: warnings. */
static sdw_status read_overrides(json_t *b, const char *model, json_t *w, sdw_request *req,
                                 sdw_error *err) {
    json_t *o = json_object_get(b, "override_settings");
    if (!o || json_is_null(o)) return SDW_OK;
    if (!json_is_object(o))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field 'override_settings' must be an object");
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        if (!strcmp(key, "sd_model_checkpoint")) {
            if (json_is_null(v)) continue;
            if (!json_is_string(v))
                return sdw_error_set(err, SDW_E_INVALID_ARG,
                                     "override_settings.sd_model_checkpoint must be a string");
            if (!is_our_checkpoint(json_string_value(v), model))
                return sdw_error_set(err, SDW_E_NOT_FOUND,
                                     "checkpoint '%.128s' not found: this worker serves '%s' only",
                                     json_string_value(v), model);
        } else if (!strcmp(key, "CLIP_stop_at_last_layers")) {
            /* A1111's clip skip (1 = the last layer); the request's clip_skip counts alike */
            const double x = json_is_number(v) ? json_number_value(v) : NAN;
            if (!json_is_null(v) && !(x >= 1 && x <= SDW_MAX_CLIP_SKIP && x == floor(x)))
                return sdw_error_set(err, SDW_E_INVALID_ARG,
                                     "override_settings.CLIP_stop_at_last_layers must be a whole "
                                     "number in [1, %d]",
                                     SDW_MAX_CLIP_SKIP);
            if (!json_is_null(v)) req->clip_skip = (int)x;
        } else if (!strcmp(key, "sd_vae")) {
            const char *vae = json_string_value(v);
            if (vae && strcasecmp(vae, "Automatic") && strcasecmp(vae, "None"))
                warn(w, "override_settings.sd_vae '%.64s' ignored: the model's own VAE is used",
                     vae);
        } else if (strcmp(key, "samples_format") && strcmp(key, "save_images") &&
                   strcmp(key, "enable_pnginfo")) {
            warn(w, "override_settings.%.64s ignored: not a setting of this worker", key);
        }
    }
    return SDW_OK;
}

/* Fields that would change the image and are not implemented here: a warning each. */
static void warn_ignored(json_t *b, bool img2img, bool mask, json_t *w) {
    static const struct {
        const char *key;
        double def; /* a number's A1111 default */
        const char *what;
    } fields[] = {
        {"restore_faces", 0, "face restoration is not implemented"},
        {"tiling", 0, "tiling is not implemented"},
        {"styles", 0, "prompt styles are not implemented: the prompt is used as given"},
        {"script_name", 0, "scripts are not implemented"},
        {"refiner_checkpoint", 0, "refiners are not implemented"},
        {"eta", 0, "eta is not adjustable here (the sampler's own is used)"},
        {"s_churn", 0, "sampler noise settings are not adjustable here"},
        {"s_noise", 1, "sampler noise settings are not adjustable here"},
        {"s_tmin", 0, "sampler noise settings are not adjustable here"},
        {"seed_resize_from_w", -1, "seed resize is not implemented"},
        {"seed_resize_from_h", -1, "seed resize is not implemented"},
        {"image_cfg_scale", 0, "image CFG (instruct-pix2pix) is not implemented"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(fields); i++)
        if (set_beyond(b, fields[i].key, fields[i].def))
            warn(w, "%s ignored: %s", fields[i].key, fields[i].what);
    if (img2img && set_beyond(b, "resize_mode", 0))
        warn(w, "resize_mode ignored: the image is resized to the asked size (stretched)");
    if (!mask) return;
    if (set_beyond(b, "mask_blur", 0) || set_beyond(b, "mask_blur_x", 0) ||
        set_beyond(b, "mask_blur_y", 0))
        warn(w, "mask_blur ignored: the mask is used as sent (binarised)");
    if (set_beyond(b, "inpainting_fill", 1))
        warn(w, "inpainting_fill ignored: the masked area starts from the original image");
    if (set_beyond(b, "inpaint_full_res", 0))
        warn(w, "inpaint_full_res ignored: the whole picture is inpainted");
}

/* img2img's images: the first of init_images (A1111 cycles through them over a batch; here every
 * image of the batch starts from the first), the optional mask (white = repaint; with
 * inpainting_mask_invert 1, black), denoising_strength. The images are decoded last. */
static sdw_status read_images(const sdw_server_params *p, json_t *b, sdw_request *req,
                              sdw_req_images *im, const char **param, sdw_error *err) {
    json_t *imgs = json_object_get(b, "init_images");
    *param = "init_images";
    if (!json_is_array(imgs) || json_array_size(imgs) == 0)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "'init_images' must be a non-empty array of base64 images");
    json_t *v = json_array_get(imgs, 0);
    if (!json_is_string(v))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "init_images[0] must be a string");
    const char *m = NULL;
    long long invert = 0;
    double strength = SDW_DEFAULT_STRENGTH;
    sdw_status s;
    *param = "mask";
    if ((s = sdw__json_string(b, "mask", &m, err))) return s;
    *param = "inpainting_mask_invert";
    if ((s = sdw__json_int(b, "inpainting_mask_invert", 0, 1, true, &invert, err))) return s;
    *param = "denoising_strength";
    if ((s = sdw__json_number(b, "denoising_strength", 0, 1, true, &strength, err))) return s;
    if (!(strength > 0))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "denoising_strength %g must be in (0, 1]", strength);
    req->strength = strength;
    *param = "init_images";
    if ((s = sdw__decode_image(p, json_string_value(v), json_string_length(v), false,
                               "init_images", &im->init, err)))
        return s;
    req->init_image = &im->init;
    if (m && *m) {
        *param = "mask";
        if ((s = sdw__decode_image(p, m, strlen(m), false, "mask", &im->mask, err))) return s;
        if (invert) {
            size_t n = (size_t)im->mask.width * im->mask.height * im->mask.channels;
            for (size_t i = 0; i < n; i++) im->mask.data[i] = (uint8_t)(255 - im->mask.data[i]);
        }
        req->mask = &im->mask;
    }
    *param = NULL;
    return SDW_OK;
}

/* txt2img's hires fix (enable_hr): hr_scale, hr_resize_x / hr_resize_y, hr_upscaler (A1111's
 * names; a neural upscaler's is answered as not installed), hr_second_pass_steps,
 * denoising_strength (A1111's defaults: 2, 0, 0, Latent, 0 = the steps, 0.75). The second pass's
 * own sampler, scheduler, prompts and checkpoint are A1111 options this worker has not: the
 * first pass's are used, with a warning when the request asks otherwise. */
static sdw_status read_hires(json_t *b, sdw_request *req, json_t *w, const char **param,
                             sdw_error *err) {
    double scale = SDW_HIRES_DEFAULT_SCALE, strength = SDW_HIRES_DEFAULT_STRENGTH;
    long long rx = 0, ry = 0, steps = 0;
    const char *up = NULL;
    sdw_status s;
    sdw_hires *hr = &req->hires;
#define READ(field, expr)                                                                          \
    do {                                                                                           \
        *param = field;                                                                            \
        if ((s = (expr))) return s;                                                                \
    } while (0)
    READ("hr_scale", sdw__json_number(b, "hr_scale", 0, 64, true, &scale, err));
    READ("hr_resize_x", sdw__json_int(b, "hr_resize_x", 0, 1 << 20, true, &rx, err));
    READ("hr_resize_y", sdw__json_int(b, "hr_resize_y", 0, 1 << 20, true, &ry, err));
    READ("hr_second_pass_steps",
         sdw__json_int(b, "hr_second_pass_steps", 0, INT_MAX, true, &steps, err));
    READ("denoising_strength",
         sdw__json_number(b, "denoising_strength", 0, 1, true, &strength, err));
    READ("hr_upscaler", sdw__json_string(b, "hr_upscaler", &up, err));
    if (up && *up) READ("hr_upscaler", sdw_upscaler_parse(up, &hr->upscaler, err));
#undef READ
    *param = "denoising_strength";
    if (!(strength > 0))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "denoising_strength %g must be in (0, 1] for the hires fix", strength);
    *param = "hr_scale";
    if (!(scale > 0) && !rx && !ry)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "hr_scale %g must be above 0", scale);
    *param = NULL;
    hr->enable = true;
    hr->scale = scale;
    hr->resize_width = (int)rx;
    hr->resize_height = (int)ry;
    hr->steps = (int)steps;
    hr->strength = strength;
    static const struct {
        const char *key, *same; /* the value A1111's UI sends for "as the first pass" */
    } own[] = {{"hr_sampler_name", "Use same sampler"}, {"hr_scheduler", "Use same scheduler"},
               {"hr_checkpoint_name", "Use same checkpoint"}, {"hr_prompt", NULL},
               {"hr_negative_prompt", NULL}};
    for (size_t i = 0; i < SDW_ARRAY_LEN(own); i++) {
        const char *v = json_string_value(json_object_get(b, own[i].key));
        const char *first = i == 0   ? json_string_value(json_object_get(b, "sampler_name"))
                            : i == 3 ? req->prompt
                            : i == 4 ? req->negative_prompt
                                     : NULL;
        if (v && *v && (!own[i].same || strcasecmp(v, own[i].same)) &&
            !(first && !strcmp(v, first)))
            warn(w, "%s ignored: the hires fix's second pass uses the first pass's", own[i].key);
    }
    if (set_beyond(b, "firstphase_width", 0) || set_beyond(b, "firstphase_height", 0))
        warn(w, "firstphase_width/height ignored: width and height are the first pass's size");
    return SDW_OK;
}

/* A1111 rounds sizes down to a multiple of 8 (here the model's multiple); one that would become
 * 0 stays, for the range check to name. */
static int round_down(long long v, int m) {
    if (m > 1 && v >= m) v -= v % m;
    return (int)v;
}

sdw_status sdw__a1111_parse(const sdw_server_params *p, const sdw_capabilities *caps,
                            const char *model_name, json_t *b, bool img2img, sdw_request *req,
                            int *n, sdw_req_images *im, json_t **warnings, const char **param,
                            sdw_error *err) {
    long long w = 0, h = 0, steps = 0, seed = -1, bs = 1, it = 1;
    double g = -1, sub = 0;
    const char *sampler = NULL, *sched = NULL;
    bool hr = false;
    sdw_status s = SDW_OK;
    json_t *warn_list = json_array();
    *warnings = NULL;
    *param = NULL;
#define TRY(field, expr)                                                                           \
    if (!s) {                                                                                      \
        *param = field;                                                                            \
        s = (expr);                                                                                \
    }
    TRY("prompt", sdw__json_string(b, "prompt", &req->prompt, err));
    TRY("negative_prompt", sdw__json_string(b, "negative_prompt", &req->negative_prompt, err));
    TRY("width", sdw__json_int(b, "width", 0, 1 << 20, true, &w, err));
    TRY("height", sdw__json_int(b, "height", 0, 1 << 20, true, &h, err));
    TRY("steps", sdw__json_int(b, "steps", 0, INT_MAX, true, &steps, err));
    TRY("cfg_scale", sdw__json_number(b, "cfg_scale", 0, 100, true, &g, err));
    TRY("seed", sdw__json_int(b, "seed", -1, INT64_MAX, true, &seed, err));
    TRY("batch_size", sdw__json_int(b, "batch_size", 1, 1 << 20, true, &bs, err));
    TRY("n_iter", sdw__json_int(b, "n_iter", 1, 1 << 20, true, &it, err));
    TRY("sampler_name", sdw__json_string(b, "sampler_name", &sampler, err));
    /* sampler_index: A1111's older name for it, used when sampler_name is absent or empty */
    if (!s && (!sampler || !*sampler))
        TRY("sampler_index", sdw__json_string(b, "sampler_index", &sampler, err));
    TRY("scheduler", sdw__json_string(b, "scheduler", &sched, err));
    TRY("enable_hr", sdw__json_bool(b, "enable_hr", &hr, err));
    TRY("subseed_strength", sdw__json_number(b, "subseed_strength", 0, 1, true, &sub, err));
    req->prompt_syntax = true; /* A1111 reads its prompts so */
    TRY("prompt_syntax", sdw__json_bool(b, "prompt_syntax", &req->prompt_syntax, err));
    TRY("override_settings", read_overrides(b, model_name, warn_list, req, err));
    long long clip_skip = 0; /* 0 = absent: override_settings' or the model's own */
    TRY("clip_skip", sdw__json_int(b, "clip_skip", 0, SDW_MAX_CLIP_SKIP, true, &clip_skip, err));
    if (!s && clip_skip > 0) req->clip_skip = (int)clip_skip;
    if (!s && hr && !img2img) s = read_hires(b, req, warn_list, param, err);
    if (!s && sub > 0) {
        *param = "subseed_strength";
        s = sdw_error_set(err, SDW_E_UNSUPPORTED,
                          "subseeds (subseed_strength > 0) are not supported");
    }
    if (!s && sched) {
        *param = "scheduler";
        s = resolve_scheduler(sched, req, err);
    }
    if (!s && sampler && *sampler) {
        *param = "sampler_name";
        s = resolve_sampler(caps, sampler, req, err);
    }
#undef TRY
    if (!s && bs * it > 1 << 20) {
        *param = "batch_size";
        s = sdw_error_set(err, SDW_E_INVALID_ARG, "batch_size x n_iter is too large");
    }
    if (!s) {
        req->width = round_down(w, caps->size_multiple);
        req->height = round_down(h, caps->size_multiple);
        req->steps = (int)steps;
        req->guidance = (float)g;
        req->seed = seed;
        *n = (int)(bs * it);
        *param = NULL;
        s = sdw__check_limits(p, caps, req, *n, err);
        if (!s) s = sdw__check_hires_limits(p, caps, req, err);
    }
    if (!s) {
        json_t *mask = json_object_get(b, "mask");
        warn_ignored(b, img2img, img2img && json_is_string(mask) && json_string_length(mask),
                     warn_list);
        if (img2img) s = read_images(p, b, req, im, param, err);
        if (!s) { /* sd-webui-controlnet's units: after the init image they may fall back on */
            *param = "alwayson_scripts";
            s = sdw__controls_a1111(p, caps, b, img2img, req, im, warn_list, err);
        }
    }
    if (s) {
        json_decref(warn_list);
        return s;
    }
    *warnings = warn_list;
    return SDW_OK;
}

static char *timestamp(char buf[16]) {
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, 16, "%Y%m%d%H%M%S", &tm);
    return buf;
}

/* {images, parameters, info} for a finished job. body is the request, echoed as parameters. An
 * interrupted job answers with its images so far (A1111 does); one cancelled otherwise (the
 * server shutting down) is a 503. */
static enum MHD_Result respond(sdw_http_req *r, sdw_sjob *j, json_t *body, json_t *warnings) {
    sdw_job_status st;
    sdw__sjob_status(j, &st);
    if (st.state == SDW_JOB_FAILED)
        return sdw__http_error(r, 500, NULL, "generation failed: %s", st.error);
    if (st.state == SDW_JOB_CANCELLED && !st.interrupted)
        return sdw__http_error(r, 503, NULL, "generation was cancelled: %s", st.error);
    if (!sdw_job_state_terminal(st.state)) /* a gateway stopping: the job goes on */
        return sdw__http_error(r, 503, NULL, "the server is stopping; job %s is still %s",
                               sdw__sjob_id(j), sdw_job_state_str(st.state));
    const sdw_request *q = sdw__sjob_request(j);
    json_t *images = json_array(), *seeds = json_array(), *infotexts = json_array(),
           *prompts = json_array(), *negs = json_array();
    int64_t seed0 = q->seed;
    bool tiled = false; /* a VAE decode ran in tiles (asked in no A1111 field: automatic) */
    for (int i = 0; i < st.n_done; i++) {
        sdw_result_info info;
        const char *text;
        sdw__sjob_image_info(j, i, &info, &text);
        if (i == 0) seed0 = info.seed;
        tiled |= info.vae_tiled;
        char *b64 = sdw__job_image_b64(j, i);
        json_array_append_new(images, json_string(b64));
        free(b64);
        json_array_append_new(seeds, json_integer(info.seed));
        json_array_append_new(infotexts, json_string(text));
        json_array_append_new(prompts, json_string(q->prompt));
        json_array_append_new(negs, json_string(q->negative_prompt ? q->negative_prompt : ""));
    }
    char ts[16];
    const char *name = sdw__sjob_model(j);
    json_t *info = json_object();
#define SET(k, v) json_object_set_new(info, k, v)
    SET("prompt", json_string(q->prompt));
    SET("all_prompts", prompts);
    SET("negative_prompt", json_string(q->negative_prompt ? q->negative_prompt : ""));
    SET("all_negative_prompts", negs);
    SET("seed", json_integer(seed0));
    SET("all_seeds", json_copy(seeds));
    SET("subseed", json_integer(-1));
    SET("all_subseeds", seeds);
    SET("subseed_strength", json_real(0));
    SET("width", json_integer(q->width));
    SET("height", json_integer(q->height));
    SET("sampler_name", json_string(sdw_sampler_a1111_name(q->sampler)));
    SET("scheduler", json_string(q->scheduler));
    SET("cfg_scale", json_real(q->guidance));
    SET("steps", json_integer(q->steps));
    SET("batch_size", json_integer(st.n_images));
    SET("restore_faces", json_false());
    SET("face_restoration_model", json_null());
    SET("sd_model_name", json_string(name));
    SET("sd_model_hash", json_null());
    SET("sd_vae_name", json_null());
    SET("sd_vae_hash", json_null());
    SET("seed_resize_from_w", json_integer(-1));
    SET("seed_resize_from_h", json_integer(-1));
    SET("denoising_strength",
        json_real(q->init_image ? q->strength : q->hires.enable ? q->hires.strength : 0));
    json_t *extra = json_object(); /* A1111's p.extra_generation_params, as its infotext has them */
    if (q->hires.enable) {
        if (q->hires.resize_width || q->hires.resize_height)
            json_object_set_new(extra, "Hires resize", json_sprintf("%dx%d", q->hires.resize_width,
                                                                    q->hires.resize_height));
        else
            json_object_set_new(extra, "Hires upscale", json_real(q->hires.scale));
        if (q->hires.steps) json_object_set_new(extra, "Hires steps", json_integer(q->hires.steps));
        json_object_set_new(extra, "Hires upscaler",
                            json_string(sdw_upscaler_str(q->hires.upscaler)));
    }
    SET("extra_generation_params", extra);
    SET("index_of_first_image", json_integer(0));
    SET("infotexts", infotexts);
    SET("styles", json_array());
    SET("job_timestamp", json_string(timestamp(ts)));
    SET("clip_skip", json_integer(q->clip_skip > 0 ? q->clip_skip : 1));
    SET("is_using_inpainting_conditioning", json_false());
    SET("version", json_string("sdworker"));
    SET("interrupted", json_boolean(st.interrupted));
    SET("vae_tiled", json_boolean(tiled));
    SET("warnings", json_incref(warnings));
#undef SET
    char *info_s = json_dumps(info, JSON_COMPACT);
    json_decref(info);
    json_t *params = json_deep_copy(body);
    json_object_set_new(params, "prompt", json_string(q->prompt));
    json_object_set_new(params, "negative_prompt",
                        json_string(q->negative_prompt ? q->negative_prompt : ""));
    json_object_set_new(params, "width", json_integer(q->width));
    json_object_set_new(params, "height", json_integer(q->height));
    json_object_set_new(params, "steps", json_integer(q->steps));
    json_object_set_new(params, "cfg_scale", json_real(q->guidance));
    json_object_set_new(params, "sampler_name", json_string(sdw_sampler_a1111_name(q->sampler)));
    if (!json_object_get(params, "seed")) json_object_set_new(params, "seed", json_integer(-1));
    json_t *o = json_pack("{s:o,s:o,s:s}", "images", images, "parameters", params, "info", info_s);
    free(info_s);
    return sdw__http_json(r, 200, o);
}

/* The served model a checkpoint name means (A1111's title, model name or ours), or NULL. */
static const sdw_served_model *find_checkpoint(const sdw_model_list *ml, const char *ck) {
    for (int i = 0; ck && i < ml->n; i++)
        if (is_our_checkpoint(ck, ml->m[i].name)) return &ml->m[i];
    return NULL;
}

/* The model a request runs on: the one override_settings.sd_model_checkpoint names, else the
 * only one served (then a checkpoint naming another is refused by the parser, naming it). NULL
 * after queueing the answer. */
static const sdw_served_model *request_model(sdw_http_req *r, sdw_jobs *js, json_t *b,
                                             sdw_model_list **ml, enum MHD_Result *resp) {
    sdw_error err = {0};
    *ml = NULL;
    sdw_status s = js->ops->models(js, ml, &err);
    if (s) {
        *resp = sdw__http_status(r, s, NULL, err.msg);
        return NULL;
    }
    json_t *ov = json_object_get(b, "override_settings");
    const char *ck = json_string_value(json_object_get(ov, "sd_model_checkpoint"));
    const sdw_served_model *m = find_checkpoint(*ml, ck);
    if (!m) m = sdw__models_pick(*ml, (*ml)->n == 1 ? NULL : ck, &err);
    if (!m) {
        *resp = sdw__http_status(r, err.code, ck ? "sd_model_checkpoint" : NULL, err.msg);
        sdw__model_list_free(*ml);
        *ml = NULL;
    }
    return m;
}

static enum MHD_Result generate(sdw_http_req *r, bool img2img) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    json_t *b = sdw__http_body_json(r, &resp);
    if (!b) return resp;
    sdw_model_list *ml = NULL;
    const sdw_served_model *m = request_model(r, js, b, &ml, &resp);
    if (!m) {
        json_decref(b);
        return resp;
    }
    sdw_request req = sdw_request_default();
    int n = 1;
    const char *param = NULL;
    sdw_error err = {0};
    sdw_sjob *j = NULL;
    sdw_req_images im = {0};
    json_t *warnings = NULL;
    sdw_status s = sdw__a1111_parse(&r->srv->p, m->caps, m->name, b, img2img, &req, &n, &im,
                                    &warnings, &param, &err);
    if (!s) s = js->ops->submit(js, m, &req, n, &j, &err); /* copies the images */
    sdw__req_images_free(&im);
    sdw__model_list_free(ml);
    if (s) {
        resp = sdw__http_status(r, s, param, err.msg);
    } else {
        size_t i;
        json_t *w;
        json_array_foreach(warnings, i, w) SDW_INFO("a1111 request: %s", json_string_value(w));
        sdw__sjob_wait_done(j, &r->srv->stopping);
        resp = respond(r, j, b, warnings);
        sdw__sjob_release(j);
    }
    json_decref(warnings);
    json_decref(b);
    return resp;
}

static enum MHD_Result post_txt2img(sdw_http_req *r) { return generate(r, false); }
static enum MHD_Result post_img2img(sdw_http_req *r) { return generate(r, true); }

static enum MHD_Result get_progress(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    sdw_sjob *j = NULL;
    sdw_error err = {0};
    sdw_engine_stats es = {0};
    sdw_status s = js->ops->current(js, &j, &err);
    if (!s) s = js->ops->stats(js, &es, &err);
    if (s) {
        sdw__sjob_release(j);
        return sdw__http_status(r, s, NULL, err.msg);
    }
    sdw_job_status st = {0};
    if (j) sdw__sjob_status(j, &st);
    const char *skip = sdw__http_query(r, "skip_current_image");
    json_t *img = json_null();
    if (j && !(skip && !strcasecmp(skip, "true"))) {
        uint8_t *png = NULL;
        size_t len = 0;
        if (sdw__sjob_preview_png(j, &png, &len, NULL, NULL) == SDW_OK) {
            char *b64 = sdw_base64_encode(png, len, NULL);
            json_decref(img);
            img = json_string(b64);
            free(b64);
            free(png);
        }
    }
    char ts[16];
    double progress = j ? st.percent / 100.0 : 0, eta = j && st.eta_s > 0 ? st.eta_s : 0;
    int per = j && st.n_images ? st.total / st.n_images : 0;
    json_t *o = json_pack(
        "{s:f,s:f,s:{s:b,s:b,s:b,s:s,s:i,s:s,s:i,s:i,s:i},s:o,s:n}", "progress", progress,
        "eta_relative", eta, "state", "skipped", 0, "interrupted", j && st.cancel_requested,
        "stopping_generation", 0, "job", j ? sdw__sjob_id(j) : "", "job_count",
        es.queued + es.running, "job_timestamp", timestamp(ts), "job_no", j ? st.n_done : 0,
        "sampling_step", j && per ? st.step % per : 0, "sampling_steps", per, "current_image",
        img, "textinfo");
    sdw__sjob_release(j);
    return sdw__http_json(r, 200, o);
}

static enum MHD_Result stop_running(sdw_http_req *r, bool skip) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    sdw_error err = {0};
    sdw_status s = js->ops->stop_running(js, skip, &err);
    return s ? sdw__http_status(r, s, NULL, err.msg) : sdw__http_json(r, 200, json_object());
}

static enum MHD_Result post_interrupt(sdw_http_req *r) { return stop_running(r, false); }
static enum MHD_Result post_skip(sdw_http_req *r) { return stop_running(r, true); }

/* ---- png-info ---- */

/* A1111's parse_generation_parameters: the infotext's prompt, "Negative prompt: ..." and its
 * last line of "Key: value" pairs (values quoted when they hold commas; "Size: WxH" also as
 * Size-1 / Size-2), as an object of strings. A new object; never NULL. */
/* A JSON string of n bytes at s; "" when they are not UTF-8 (a PNG's text is, once read). */
static json_t *text_json(const char *s, size_t n) {
    json_t *v = json_stringn(s, n);
    return v ? v : json_string("");
}

json_t *sdw__a1111_parse_infotext(const char *text) {
    json_t *o = json_object();
    const size_t n = strlen(text);
    /* The parameter line: the last line, when it holds at least three "Key: value" pairs
     * (A1111's test: re_param.findall(lastline) has more than 3 matches). */
    const char *last = text + n;
    while (last > text && (last[-1] == '\n' || last[-1] == '\r')) last--;
    const char *end = last;
    while (last > text && last[-1] != '\n') last--;
    int pairs = 0;
    for (const char *c = last; c < end; c++) pairs += c[0] == ':' && c + 1 < end && c[1] == ' ';
    const char *body_end = pairs >= 3 ? last : text + n;
    /* prompt, then the negative prompt from the line that starts "Negative prompt: " */
    const char *neg = NULL;
    for (const char *l = text; l < body_end; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : body_end)
        if (!strncmp(l, "Negative prompt: ", 17)) {
            neg = l;
            break;
        }
    const char *prompt_end = neg ? neg : body_end;
    while (prompt_end > text && (prompt_end[-1] == '\n' || prompt_end[-1] == '\r')) prompt_end--;
    json_object_set_new(o, "Prompt", text_json(text, (size_t)(prompt_end - text)));
    if (neg) {
        const char *ne = body_end;
        while (ne > neg + 17 && (ne[-1] == '\n' || ne[-1] == '\r')) ne--;
        json_object_set_new(o, "Negative prompt",
                            text_json(neg + 17, (size_t)(ne - neg - 17)));
    } else {
        json_object_set_new(o, "Negative prompt", json_string(""));
    }
    if (pairs < 3) return o;
    const char *c = last;
    while (c < end) {
        while (c < end && (*c == ' ' || *c == ',')) c++;
        const char *k = c;
        while (c < end && *c != ':' && *c != ',') c++;
        if (c >= end || *c != ':' || c == k) { /* not a pair: skip to the next comma */
            while (c < end && *c != ',') c++;
            continue;
        }
        const char *ke = c++;
        while (c < end && *c == ' ') c++;
        const char *v = c, *ve;
        if (c < end && *c == '"') { /* quoted: up to the closing quote (backslash escapes) */
            c++;
            while (c < end && *c != '"') c += (*c == '\\' && c + 1 < end) ? 2 : 1;
            if (c < end) c++;
            ve = c;
            if (ve - v >= 2 && ve[-1] == '"') v++, ve--;
        } else {
            while (c < end && *c != ',') c++;
            ve = c;
            while (ve > v && ve[-1] == ' ') ve--;
        }
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)SDW_MIN((size_t)(ke - k), sizeof key - 1), k);
        json_t *val = text_json(v, (size_t)(ve - v));
        int a = 0, bb = 0;
        char tail;
        const char *vs = json_string_value(val);
        if (sscanf(vs, "%dx%d%c", &a, &bb, &tail) == 2 && strchr(vs, 'x')) {
            char k1[140], k2[140];
            snprintf(k1, sizeof k1, "%s-1", key);
            snprintf(k2, sizeof k2, "%s-2", key);
            json_object_set_new(o, k1, json_sprintf("%d", a));
            json_object_set_new(o, k2, json_sprintf("%d", bb));
            json_decref(val);
        } else {
            json_object_set_new(o, key, val);
        }
    }
    return o;
}

/* POST /sdapi/v1/png-info {"image": base64 (a data URL too)}: the PNG's "parameters" text (ours
 * and A1111's are the same format), its other text chunks, and the parameters parsed. Images
 * of other formats carry no PNG text: info "". */
static enum MHD_Result post_png_info(sdw_http_req *r) {
    enum MHD_Result resp;
    json_t *b = sdw__http_body_json(r, &resp);
    if (!b) return resp;
    const char *data = NULL;
    sdw_error err = {0};
    sdw_status s = sdw__json_string(b, "image", &data, &err);
    if (!s && !data) s = sdw_error_set(&err, SDW_E_INVALID_ARG, "'image' is required");
    uint8_t *bytes = NULL;
    size_t n = 0, len = s ? 0 : strlen(data);
    if (!s && len > 5 && !strncasecmp(data, "data:", 5)) {
        const char *comma = memchr(data, ',', len);
        if (!comma) s = sdw_error_set(&err, SDW_E_FORMAT, "image: a data URL without ','");
        else len -= (size_t)(comma + 1 - data), data = comma + 1;
    }
    if (!s && (s = sdw_base64_decode(data, len, &bytes, &n, &err))) sdw_error_prefix(&err, "image");
    int w = 0, h = 0;
    static const uint8_t png_sig[4] = {0x89, 'P', 'N', 'G'};
    const bool png = !s && n >= 8 && !memcmp(bytes, png_sig, 4);
    if (!s && !sdw__image_header_size(bytes, n, &w, &h))
        s = sdw_error_set(&err, SDW_E_FORMAT, "image: not a PNG, JPEG or WebP image");
    if (!s && (unsigned long long)w * (unsigned long long)h > r->srv->p.max_input_pixels)
        s = sdw_error_set(&err, SDW_E_INVALID_ARG,
                          "image: %dx%d exceeds this server's limit of %.1f Mpixel", w, h,
                          (double)r->srv->p.max_input_pixels / 1e6);
    json_t *items = json_object();
    const char *info = "";
    sdw_png img = {0};
    if (!s && png && (s = sdw_png_read_mem(bytes, n, "image", &img, &err)) == SDW_OK) {
        for (int i = 0; i < img.n_text; i++)
            if (strcmp(img.text[2 * i], "parameters"))
                json_object_set_new(items, img.text[2 * i], json_string(img.text[2 * i + 1]));
        const char *t = sdw_png_text(&img, "parameters");
        if (t) info = t;
    }
    if (s) {
        resp = sdw__http_status(r, s, "image", err.msg);
        json_decref(items);
    } else {
        resp = sdw__http_json(r, 200,
                              json_pack("{s:s,s:o,s:o}", "info", info, "items", items,
                                        "parameters", sdw__a1111_parse_infotext(info)));
    }
    sdw_png_deinit(&img);
    free(bytes);
    json_decref(b);
    return resp;
}

/* ---- lists ---- */

/* The models served (a new list), or NULL after queueing the answer (503). */
static sdw_model_list *served(sdw_http_req *r, enum MHD_Result *resp) {
    sdw_jobs *js = sdw__http_jobs(r, resp);
    if (!js) return NULL;
    sdw_model_list *ml = NULL;
    sdw_error err = {0};
    sdw_status s = js->ops->models(js, &ml, &err);
    if (s) *resp = sdw__http_status(r, s, NULL, err.msg);
    return s ? NULL : ml;
}

/* The capabilities lists answer for: the first model served (a gateway's models are listed in
 * name order), or none (empty lists). */
static const sdw_capabilities *first_caps(const sdw_model_list *ml) {
    return ml->n ? ml->m[0].caps : NULL;
}

static enum MHD_Result get_samplers(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_model_list *ml = served(r, &resp);
    if (!ml) return resp;
    const sdw_capabilities *c = first_caps(ml);
    json_t *a = json_array();
    for (const char *const *s = c ? c->samplers : NULL; s && *s; s++)
        json_array_append_new(a, json_pack("{s:s,s:[s],s:{}}", "name", sdw_sampler_a1111_name(*s),
                                           "aliases", *s, "options"));
    sdw__model_list_free(ml);
    return sdw__http_json(r, 200, a);
}

static enum MHD_Result get_schedulers(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_model_list *ml = served(r, &resp);
    if (!ml) return resp;
    const sdw_capabilities *c = first_caps(ml);
    json_t *a = json_array();
    for (const char *const *s = c ? c->schedulers : NULL; s && *s; s++) {
        bool def = !strcmp(*s, "default");
        json_array_append_new(a, json_pack("{s:s,s:s,s:[s],s:i,s:b}", "name", def ? "automatic" : *s,
                                           "label", def ? "Automatic" : !strcmp(*s, "karras") ? "Karras" : *s,
                                           "aliases", *s, "default_rho", -1, "need_inner_model", 0));
    }
    sdw__model_list_free(ml);
    return sdw__http_json(r, 200, a);
}

/* Every model served (behind a gateway: what live workers serve). */
static enum MHD_Result get_models(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_model_list *ml = served(r, &resp);
    if (!ml) return resp;
    json_t *a = json_array();
    /* filename: the name, not the server's path (A1111 gives its path; clients show it) */
    for (int i = 0; i < ml->n; i++) {
        const char *name = ml->m[i].name;
        json_array_append_new(a, json_pack("{s:s,s:s,s:n,s:n,s:s,s:n}", "title", name,
                                           "model_name", name, "hash", "sha256", "filename", name,
                                           "config"));
    }
    sdw__model_list_free(ml);
    return sdw__http_json(r, 200, a);
}

static enum MHD_Result get_options(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_model_list *ml = served(r, &resp);
    if (!ml) return resp;
    json_t *o = json_pack("{s:s,s:n,s:s,s:b,s:i,s:s}", "sd_model_checkpoint",
                          ml->n ? ml->m[0].name : "", "sd_checkpoint_hash", "samples_format",
                          "png", "enable_pnginfo", 1, "CLIP_stop_at_last_layers", 1, "sd_vae",
                          "Automatic");
    sdw__model_list_free(ml);
    return sdw__http_json(r, 200, o);
}

/* Clients set options such as the checkpoint before generating: the one loaded model is the only
 * choice, so a different checkpoint is refused (404, as A1111 answers an unknown one) and
 * everything else accepted. */
static enum MHD_Result post_options(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_model_list *ml = served(r, &resp);
    if (!ml) return resp;
    json_t *b = sdw__http_body_json(r, &resp);
    if (!b) {
        sdw__model_list_free(ml);
        return resp;
    }
    const char *ck = NULL;
    sdw_error err = {0};
    sdw_status s = sdw__json_string(b, "sd_model_checkpoint", &ck, &err);
    if (!s && ck && !find_checkpoint(ml, ck))
        s = ml->n == 1 ? sdw_error_set(&err, SDW_E_NOT_FOUND,
                                       "checkpoint '%.128s' is not loaded (this worker serves "
                                       "'%s')", ck, ml->m[0].name)
                       : sdw_error_set(&err, SDW_E_NOT_FOUND,
                                       "checkpoint '%.128s' is not served here", ck);
    resp = s ? sdw__http_status(r, s, "sd_model_checkpoint", err.msg)
             : sdw__http_json(r, 200, json_null());
    sdw__model_list_free(ml);
    json_decref(b);
    return resp;
}

/* Lists this worker has nothing in (yet): clients read them at start and must get a list. */
static enum MHD_Result get_empty_list(sdw_http_req *r) {
    return sdw__http_json(r, 200, json_array());
}

/* The model's --lora-dir as A1111 lists its LoRA networks: [{name, alias, path, metadata}],
 * name = alias = the file's stem (what <lora:NAME:M> takes), path relative to the folder (the
 * server's own paths are not shown). Read from the folder each time, so refresh-loras has
 * nothing to rescan; empty without a folder. */
static enum MHD_Result get_loras(sdw_http_req *r) {
    sdw_jobs *js = atomic_load(&r->srv->jobs);
    sdw_model_list *ml = NULL;
    /* the folder of a model loaded here (a gateway's workers' folders are theirs) */
    if (js->ops->models(js, &ml, NULL)) ml = NULL;
    const sdw_capabilities *c = ml && ml->n && ml->m[0].model ? ml->m[0].caps : NULL;
    json_t *a = json_array();
    sdw_lora_entry *list = NULL;
    int n = 0;
    if (c && c->lora && c->lora_dir && sdw_lora_list(c->lora_dir, &list, &n, NULL) == SDW_OK) {
        for (int i = 0; i < n; i++)
            json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:{}}", "name", list[i].name,
                                               "alias", list[i].name, "path", list[i].path,
                                               "metadata"));
        sdw_lora_list_free(list, n);
    }
    sdw__model_list_free(ml);
    return sdw__http_json(r, 200, a);
}

/* refresh-checkpoints / -vae / -loras: the one model is loaded; nothing to rescan. */
static enum MHD_Result post_refresh(sdw_http_req *r) { return sdw__http_json(r, 200, json_null()); }

/* hr_upscaler's choices: A1111's built-in upscalers (None, Lanczos, Nearest; UpscalerData's
 * scale 4). Its neural ones (ESRGAN, R-ESRGAN, SwinIR, LDSR, ScuNET) are models of their own:
 * none is installed in this worker, so none is listed (and naming one is a 400 that says so). */
static enum MHD_Result get_upscalers(sdw_http_req *r) {
    json_t *a = json_array();
    for (int u = SDW_UPSCALE_NONE; u < SDW_UPSCALE_COUNT; u++)
        json_array_append_new(a, json_pack("{s:s,s:n,s:n,s:n,s:i}", "name",
                                           sdw_upscaler_str((sdw_upscaler)u), "model_name",
                                           "model_path", "model_url", "scale", 4));
    return sdw__http_json(r, 200, a);
}

/* shared.latent_upscale_modes: the latent upscalers, by name. */
static enum MHD_Result get_latent_modes(sdw_http_req *r) {
    json_t *a = json_array();
    for (int u = 0; sdw_upscaler_is_latent((sdw_upscaler)u); u++)
        json_array_append_new(a, json_pack("{s:s}", "name", sdw_upscaler_str((sdw_upscaler)u)));
    return sdw__http_json(r, 200, a);
}

static enum MHD_Result get_scripts(sdw_http_req *r) {
    /* the one alwayson script this worker runs: ControlNet (clients look for it here) */
    return sdw__http_json(r, 200, json_pack("{s:[s],s:[s]}", "txt2img", "controlnet", "img2img",
                                            "controlnet"));
}

/* The model's --embeddings-dir as A1111 lists its embedding database: {"loaded": {name: {step,
 * sd_checkpoint, sd_checkpoint_name, shape, vectors}}, "skipped": {...}}. A1111 skips files
 * made for another model here; this worker lists every usable file as loaded (a prompt using
 * one made for another model is refused, naming it) and skips what it cannot read. */
static enum MHD_Result get_embeddings(sdw_http_req *r) {
    sdw_jobs *js = atomic_load(&r->srv->jobs);
    sdw_model_list *ml = NULL;
    if (js->ops->models(js, &ml, NULL)) ml = NULL;
    const sdw_embeddings *db =
        ml && ml->n && ml->m[0].model ? sdw_model_embeddings(ml->m[0].model) : NULL;
    json_t *loaded = json_object(), *skipped = json_object();
    for (int i = 0; i < sdw_embeddings_count(db); i++) {
        const sdw_embedding_info in = sdw_embeddings_info(db, i);
        json_t *one = json_pack("{s:n,s:n,s:n,s:i,s:i}", "step", "sd_checkpoint",
                                "sd_checkpoint_name", "shape", in.width, "vectors", in.n_vectors);
        if (in.skipped) json_object_set_new(one, "reason", json_string(in.skipped));
        json_object_set_new(in.skipped ? skipped : loaded, in.name, one);
    }
    sdw__model_list_free(ml);
    return sdw__http_json(r, 200, json_pack("{s:o,s:o}", "loaded", loaded, "skipped", skipped));
}

/* The machine's memory (/proc/meminfo) and this process's resident size, in bytes. */
static enum MHD_Result get_memory(sdw_http_req *r) {
    long long total = -1, avail = -1, rss = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        long long kb;
        if (sscanf(line, "MemTotal: %lld kB", &kb) == 1) total = kb * 1024;
        else if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) avail = kb * 1024;
    }
    if (f) fclose(f);
    f = fopen("/proc/self/statm", "r");
    long long pages;
    if (f && fscanf(f, "%*s %lld", &pages) == 1) rss = pages * 4096;
    if (f) fclose(f);
    json_t *ram = json_pack("{s:I,s:I,s:I,s:I}", "free", (json_int_t)avail, "used",
                            (json_int_t)(total >= 0 && avail >= 0 ? total - avail : -1), "total",
                            (json_int_t)total, "process_rss", (json_int_t)rss);
    return sdw__http_json(r, 200, json_pack("{s:o,s:{s:s}}", "ram", ram, "cuda", "error",
                                            "no CUDA device: this worker runs on the CPU"));
}

static enum MHD_Result get_cmd_flags(sdw_http_req *r) {
    const sdw_server_params *p = &r->srv->p;
    return sdw__http_json(r, 200, json_pack("{s:b,s:b,s:i,s:b,s:b}", "api", 1, "nowebui", 0,
                                            "port", r->srv->port, "api_auth",
                                            r->srv->api_key != NULL, "cors_allow_origins",
                                            p->n_cors_origins > 0));
}

const sdw_route sdw__a1111_routes[] = {
    {"POST", "/sdapi/v1/txt2img", post_txt2img},
    {"POST", "/sdapi/v1/img2img", post_img2img},
    {"GET", "/sdapi/v1/progress", get_progress},
    {"POST", "/sdapi/v1/interrupt", post_interrupt},
    {"POST", "/sdapi/v1/skip", post_skip},
    {"POST", "/sdapi/v1/png-info", post_png_info},
    {"GET", "/sdapi/v1/samplers", get_samplers},
    {"GET", "/sdapi/v1/schedulers", get_schedulers},
    {"GET", "/sdapi/v1/sd-models", get_models},
    {"GET", "/sdapi/v1/options", get_options},
    {"POST", "/sdapi/v1/options", post_options},
    {"GET", "/sdapi/v1/sd-vae", get_empty_list},
    {"GET", "/sdapi/v1/upscalers", get_upscalers},
    {"GET", "/sdapi/v1/latent-upscale-modes", get_latent_modes},
    {"GET", "/sdapi/v1/prompt-styles", get_empty_list},
    {"GET", "/sdapi/v1/loras", get_loras},
    {"GET", "/sdapi/v1/hypernetworks", get_empty_list},
    {"GET", "/sdapi/v1/face-restorers", get_empty_list},
    {"GET", "/sdapi/v1/realesrgan-models", get_empty_list},
    {"GET", "/sdapi/v1/script-info", get_empty_list},
    {"GET", "/sdapi/v1/embeddings", get_embeddings},
    {"GET", "/sdapi/v1/scripts", get_scripts},
    {"GET", "/sdapi/v1/memory", get_memory},
    {"GET", "/sdapi/v1/cmd-flags", get_cmd_flags},
    {"GET", "/sdapi/v1/extensions", get_empty_list},
    {"POST", "/sdapi/v1/refresh-checkpoints", post_refresh},
    {"POST", "/sdapi/v1/refresh-vae", post_refresh},
    {"POST", "/sdapi/v1/refresh-loras", post_refresh},
    {NULL, NULL, NULL},
};
