/* server/a1111.c — the AUTOMATIC1111 web UI API (/sdapi/v1/...), field names and types as A1111
 * clients expect them: txt2img/img2img answer {images: [base64 PNG], parameters: {...},
 * info: "<JSON string>"}; progress, interrupt, samplers, schedulers, sd-models, options.
 * A1111 clients send many fields this worker has no use for (styles, override_settings,
 * alwayson_scripts, save_images ...): they are ignored, except those that would change the image
 * in a way this worker cannot honour (hires fix, subseeds), which are refused. */
#include "server/server_impl.h"

#include "core/common.h"
#include "io/base64.h"
#include "io/infotext.h"

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
    return sdw_error_set(err, SDW_E_INVALID_ARG, "unknown sampler '%s' (available: %s)", name,
                         list);
}

static sdw_status resolve_scheduler(const char *name, sdw_request *req, sdw_error *err) {
    if (!strcasecmp(name, "automatic") || !strcasecmp(name, "default") ||
        !strcasecmp(name, "uniform"))
        req->scheduler = "default";
    else if (!strcasecmp(name, "karras")) req->scheduler = "karras";
    else
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "unknown scheduler '%s' (available: Automatic, Karras)", name);
    return SDW_OK;
}

/* Reads the fields txt2img and img2img share. */
static sdw_status parse_common(sdw_engine *e, json_t *b, sdw_request *req, int *n,
                               const char **param, sdw_error *err) {
    const sdw_capabilities *c = sdw_model_capabilities(sdw_engine_model(e));
    long long w = 0, h = 0, steps = 0, seed = -1, bs = 1, it = 1;
    double g = -1, sub = 0;
    const char *sampler = NULL, *sched = NULL;
    bool hr = false;
    sdw_status s = SDW_OK;
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
    if (!sampler) TRY("sampler_index", sdw__json_string(b, "sampler_index", &sampler, err));
    TRY("scheduler", sdw__json_string(b, "scheduler", &sched, err));
    TRY("enable_hr", sdw__json_bool(b, "enable_hr", &hr, err));
    TRY("subseed_strength", sdw__json_number(b, "subseed_strength", 0, 1, true, &sub, err));
    if (!s && hr)
        s = sdw_error_set(err, SDW_E_UNSUPPORTED, "enable_hr (hires fix) is not supported");
    if (!s && sub > 0)
        s = sdw_error_set(err, SDW_E_UNSUPPORTED, "subseeds (subseed_strength > 0) are not supported");
    if (!s && sched) {
        *param = "scheduler";
        s = resolve_scheduler(sched, req, err);
    }
    if (!s && sampler && *sampler) {
        *param = "sampler_name";
        s = resolve_sampler(c, sampler, req, err);
    }
#undef TRY
    if (s) return s;
    req->width = (int)w;
    req->height = (int)h;
    req->steps = (int)steps;
    req->guidance = (float)g;
    req->seed = seed;
    *param = "batch_size";
    if (bs * it > 1 << 20) return sdw_error_set(err, SDW_E_INVALID_ARG, "batch_size x n_iter is too large");
    *n = (int)(bs * it);
    *param = NULL;
    return SDW_OK;
}

static char *timestamp(char buf[16]) {
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, 16, "%Y%m%d%H%M%S", &tm);
    return buf;
}

/* {images, parameters, info} for a finished job. body is the request, echoed as parameters. */
static enum MHD_Result respond(sdw_http_req *r, sdw_job *j, json_t *body) {
    sdw_job_status st;
    sdw_job_get_status(j, &st);
    if (st.state == SDW_JOB_FAILED)
        return sdw__http_error(r, 500, NULL, "generation failed: %s", st.error);
    const sdw_request *q = sdw_job_request(j);
    sdw_engine *e = atomic_load(&r->srv->engine);
    json_t *images = json_array(), *seeds = json_array(), *infotexts = json_array(),
           *prompts = json_array(), *negs = json_array();
    int64_t seed0 = q->seed;
    for (int i = 0; i < st.n_done; i++) {
        sdw_result_info info;
        const char *text;
        sdw_job_image_info(j, i, &info, &text);
        if (i == 0) seed0 = info.seed;
        char *b64 = sdw__job_image_b64(j, i);
        json_array_append_new(images, json_string(b64));
        free(b64);
        json_array_append_new(seeds, json_integer(info.seed));
        json_array_append_new(infotexts, json_string(text));
        json_array_append_new(prompts, json_string(q->prompt));
        json_array_append_new(negs, json_string(q->negative_prompt ? q->negative_prompt : ""));
    }
    char ts[16];
    const char *name = sdw_engine_model(e)->name;
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
    SET("denoising_strength", json_real(q->init_image ? q->strength : 0));
    SET("extra_generation_params", json_object());
    SET("index_of_first_image", json_integer(0));
    SET("infotexts", infotexts);
    SET("styles", json_array());
    SET("job_timestamp", json_string(timestamp(ts)));
    SET("clip_skip", json_integer(1));
    SET("is_using_inpainting_conditioning", json_false());
    SET("version", json_string("sdworker"));
    SET("interrupted", json_boolean(st.state == SDW_JOB_CANCELLED));
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

/* img2img's images: the first of init_images (A1111 cycles through them over a batch; here every
 * image of the batch starts from the first), the optional mask (white = repaint; with
 * inpainting_mask_invert 1, black), denoising_strength. */
static sdw_status read_images(json_t *b, sdw_request *req, sdw_image *init, sdw_image *mask,
                              const char **param, sdw_error *err) {
    json_t *imgs = json_object_get(b, "init_images");
    *param = "init_images";
    if (!json_is_array(imgs) || json_array_size(imgs) == 0)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "'init_images' must be a non-empty array of base64 images");
    json_t *v = json_array_get(imgs, 0);
    if (!json_is_string(v))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "init_images[0] must be a string");
    sdw_status s = sdw__decode_image(json_string_value(v), json_string_length(v), false,
                                     "init_images", init, err);
    if (s) return s;
    req->init_image = init;
    const char *m = NULL;
    long long invert = 0;
    double strength = SDW_DEFAULT_STRENGTH;
    *param = "mask";
    if ((s = sdw__json_string(b, "mask", &m, err))) return s;
    *param = "inpainting_mask_invert";
    if ((s = sdw__json_int(b, "inpainting_mask_invert", 0, 1, true, &invert, err))) return s;
    if (m && *m) {
        *param = "mask";
        if ((s = sdw__decode_image(m, strlen(m), false, "mask", mask, err))) return s;
        if (invert) {
            size_t n = (size_t)mask->width * mask->height * mask->channels;
            for (size_t i = 0; i < n; i++) mask->data[i] = (uint8_t)(255 - mask->data[i]);
        }
        req->mask = mask;
    }
    *param = "denoising_strength";
    if ((s = sdw__json_number(b, "denoising_strength", 0, 1, true, &strength, err))) return s;
    if (!(strength > 0))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "denoising_strength %g must be in (0, 1]", strength);
    req->strength = strength;
    *param = NULL;
    return SDW_OK;
}

static enum MHD_Result generate(sdw_http_req *r, bool img2img) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    json_t *b = sdw__http_body_json(r, &resp);
    if (!b) return resp;
    sdw_request req = sdw_request_default();
    int n = 1;
    const char *param = NULL;
    sdw_error err = {0};
    sdw_job *j = NULL;
    sdw_status s = parse_common(e, b, &req, &n, &param, &err);
    sdw_image init = {0}, mask = {0};
    if (!s && img2img) s = read_images(b, &req, &init, &mask, &param, &err);
    if (!s) s = sdw__check_limits(r->srv, &req, n, &err);
    if (!s) s = sdw_engine_submit(e, &req, n, &j, &err); /* copies the images */
    sdw_image_free(&init);
    sdw_image_free(&mask);
    if (s) {
        resp = sdw__http_status(r, s, param, err.msg);
    } else {
        sdw_job_wait_done(j);
        resp = respond(r, j, b);
        sdw_job_release(j);
    }
    json_decref(b);
    return resp;
}

static enum MHD_Result post_txt2img(sdw_http_req *r) { return generate(r, false); }
static enum MHD_Result post_img2img(sdw_http_req *r) { return generate(r, true); }

static enum MHD_Result get_progress(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    sdw_job *j = sdw_engine_current(e);
    sdw_engine_stats es;
    sdw_engine_get_stats(e, &es);
    sdw_job_status st = {0};
    if (j) sdw_job_get_status(j, &st);
    const char *skip = sdw__http_query(r, "skip_current_image");
    json_t *img = json_null();
    if (j && !(skip && !strcasecmp(skip, "true"))) {
        uint8_t *png = NULL;
        size_t len = 0;
        if (sdw_job_preview_png(j, &png, &len, NULL, NULL) == SDW_OK) {
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
        "stopping_generation", 0, "job", j ? sdw_job_id(j) : "", "job_count",
        es.queued + es.running, "job_timestamp", timestamp(ts), "job_no", j ? st.n_done : 0,
        "sampling_step", j && per ? st.step % per : 0, "sampling_steps", per, "current_image",
        img, "textinfo");
    sdw_job_release(j);
    return sdw__http_json(r, 200, o);
}

static enum MHD_Result post_interrupt(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    sdw_engine_cancel_running(e);
    return sdw__http_json(r, 200, json_object());
}

static enum MHD_Result get_samplers(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    const sdw_capabilities *c = sdw_model_capabilities(sdw_engine_model(e));
    json_t *a = json_array();
    for (const char *const *s = c->samplers; s && *s; s++)
        json_array_append_new(a, json_pack("{s:s,s:[s],s:{}}", "name", sdw_sampler_a1111_name(*s),
                                           "aliases", *s, "options"));
    return sdw__http_json(r, 200, a);
}

static enum MHD_Result get_schedulers(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    const sdw_capabilities *c = sdw_model_capabilities(sdw_engine_model(e));
    json_t *a = json_array();
    for (const char *const *s = c->schedulers; s && *s; s++) {
        bool def = !strcmp(*s, "default");
        json_array_append_new(a, json_pack("{s:s,s:s,s:[s],s:i,s:b}", "name", def ? "automatic" : *s,
                                           "label", def ? "Automatic" : !strcmp(*s, "karras") ? "Karras" : *s,
                                           "aliases", *s, "default_rho", -1, "need_inner_model", 0));
    }
    return sdw__http_json(r, 200, a);
}

static const char *short_name(const char *path, char buf[256]) {
    snprintf(buf, 256, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    const char *slash = strrchr(buf, '/');
    return slash ? slash + 1 : buf;
}

static enum MHD_Result get_models(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    char buf[256];
    const char *path = sdw_engine_model(e)->name, *name = short_name(path, buf);
    return sdw__http_json(r, 200, json_pack("[{s:s,s:s,s:n,s:n,s:s,s:n}]", "title", name,
                                            "model_name", name, "hash", "sha256", "filename",
                                            path, "config"));
}

static enum MHD_Result get_options(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    char buf[256];
    const char *name = short_name(sdw_engine_model(e)->name, buf);
    return sdw__http_json(r, 200, json_pack("{s:s,s:n,s:s,s:b,s:i}", "sd_model_checkpoint", name,
                                            "sd_checkpoint_hash", "samples_format", "png",
                                            "enable_pnginfo", 1, "CLIP_stop_at_last_layers", 1));
}

/* Clients set options such as the checkpoint before generating: the one loaded model is the only
 * choice, so a different checkpoint is refused and everything else accepted. */
static enum MHD_Result post_options(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    json_t *b = sdw__http_body_json(r, &resp);
    if (!b) return resp;
    const char *ck = NULL;
    sdw_error err = {0};
    char buf[256];
    const char *name = short_name(sdw_engine_model(e)->name, buf);
    sdw_status s = sdw__json_string(b, "sd_model_checkpoint", &ck, &err);
    if (!s && ck && strcmp(ck, name) && strcmp(ck, sdw_engine_model(e)->name))
        s = sdw_error_set(&err, SDW_E_INVALID_ARG,
                          "checkpoint '%s' is not loaded (this worker serves '%s')", ck, name);
    resp = s ? sdw__http_status(r, s, "sd_model_checkpoint", err.msg)
             : sdw__http_json(r, 200, json_null());
    json_decref(b);
    return resp;
}

const sdw_route sdw__a1111_routes[] = {
    {"POST", "/sdapi/v1/txt2img", post_txt2img},
    {"POST", "/sdapi/v1/img2img", post_img2img},
    {"GET", "/sdapi/v1/progress", get_progress},
    {"POST", "/sdapi/v1/interrupt", post_interrupt},
    {"GET", "/sdapi/v1/samplers", get_samplers},
    {"GET", "/sdapi/v1/schedulers", get_schedulers},
    {"GET", "/sdapi/v1/sd-models", get_models},
    {"GET", "/sdapi/v1/options", get_options},
    {"POST", "/sdapi/v1/options", post_options},
    {NULL, NULL, NULL},
};
