/* server/native.c — the native job API: POST /v1/jobs -> 202 + links; job status, cancel, the
 * finished image; capabilities, health and readiness. The event stream (sse.c) builds on this
 * file's job lookup and job JSON. */
#include "server/server_impl.h"

#include "core/common.h"
#include "io/base64.h"
#include "io/infotext.h"

#include <string.h>

static const char *const g_fields[] = {
    "controlnets", "control_guess_mode", /* ControlNets: controlnet.c */
    "prompt_syntax", "clip_skip",        /* how the text encoders read the prompt */
    "operation", "prompt",      "negative_prompt", "width",      "height", "steps",
    "guidance_scale", "seed",   "sampler",         "scheduler",  "input_image", "mask_image",
    "strength",  "loras",       "n",               "rng",        "params",      "decoder",
    "vae_tiling", "hires", "model", NULL};

/* The native name of an sdw_request field a refusal names (sdw_error.field). */
static const char *native_param(const char *field) {
    if (!field) return NULL;
    if (!strcmp(field, "guidance")) return "guidance_scale";
    if (!strcmp(field, "init_image")) return "input_image";
    if (!strcmp(field, "mask")) return "mask_image";
    if (!strncmp(field, "hires", 5)) return "hires";
    return field;
}

static sdw_status check_known(json_t *body, sdw_error *err) {
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        bool ok = false;
        for (const char *const *f = g_fields; *f && !ok; f++) ok = !strcmp(*f, key);
        if (!ok)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "unknown field '%s' (known: controlnets, control_guess_mode, "
                                 "prompt_syntax, clip_skip, "
                                 "operation, prompt, negative_prompt, "
                                 "width, height, steps, guidance_scale, seed, sampler, scheduler, "
                                 "input_image, mask_image, strength, loras, n, rng, params, "
                                 "decoder, vae_tiling, hires, model)",
                                 key);
    }
    return SDW_OK;
}

/* "params": {"max_sequence_length": 256, ...}: the model family's request options, passed
 * through by name (sdw_request_resolve checks them against the model). */
static sdw_status read_params(json_t *body, sdw_request *req, sdw_req_images *im,
                              sdw_error *err) {
    json_t *o = json_object_get(body, "params");
    if (!o || json_is_null(o)) return SDW_OK;
    if (!json_is_object(o))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "field 'params' must be an object of named numbers");
    const size_t cap = sizeof im->params / sizeof im->params[0];
    if (json_object_size(o) > cap)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field 'params' has more than %zu entries",
                             cap);
    const char *key;
    json_t *v;
    int n = 0;
    json_object_foreach(o, key, v) {
        if (!json_is_number(v))
            return sdw_error_set(err, SDW_E_INVALID_ARG, "params.%s must be a number", key);
        im->params[n++] = (sdw_param){key, json_number_value(v)};
    }
    req->params = im->params;
    req->n_params = n;
    return SDW_OK;
}

/* "hires": {"scale", "width", "height", "upscaler", "steps", "strength"}: AUTOMATIC1111's hires
 * fix (sdw_hires; an empty object turns it on with A1111's defaults: scale 2, "Latent", the
 * request's steps, strength 0.75). */
static sdw_status read_hires(json_t *body, sdw_request *req, sdw_error *err) {
    static const char *const keys[] = {"scale", "width", "height", "upscaler", "steps",
                                       "strength", NULL};
    json_t *o = json_object_get(body, "hires"), *v;
    if (!o || json_is_null(o)) return SDW_OK;
    if (!json_is_object(o))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "field 'hires' must be an object {scale, width, height, upscaler, "
                             "steps, strength}");
    const char *key;
    json_object_foreach(o, key, v) {
        bool ok = false;
        for (const char *const *k = keys; *k && !ok; k++) ok = !strcmp(*k, key);
        if (!ok)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "hires: unknown field '%s' (known: scale, width, height, "
                                 "upscaler, steps, strength)",
                                 key);
    }
    sdw_hires *hr = &req->hires;
    double scale = 0, strength = -1;
    long long w = 0, h = 0, steps = 0;
    const char *up = NULL;
    sdw_status s;
    if ((s = sdw__json_number(o, "scale", 0, 64, false, &scale, err)) ||
        (s = sdw__json_int(o, "width", 0, 1 << 20, false, &w, err)) ||
        (s = sdw__json_int(o, "height", 0, 1 << 20, false, &h, err)) ||
        (s = sdw__json_int(o, "steps", 0, INT_MAX, false, &steps, err)) ||
        (s = sdw__json_number(o, "strength", 0, 1, false, &strength, err)) ||
        (s = sdw__json_string(o, "upscaler", &up, err)) ||
        (up && (s = sdw_upscaler_parse(up, &hr->upscaler, err)))) {
        sdw_error_prefix(err, "hires");
        return s;
    }
    if (json_object_get(o, "strength") && !(strength > 0))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "hires: strength %g must be in (0, 1]",
                             strength);
    if (json_object_get(o, "scale") && !(scale > 0))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "hires: scale %g must be above 0", scale);
    hr->enable = true;
    hr->scale = scale;
    hr->resize_width = (int)w;
    hr->resize_height = (int)h;
    hr->steps = (int)steps;
    hr->strength = strength;
    return SDW_OK;
}

/* The strength of an image_transform / image_inpaint request (read before its images). */
static sdw_status read_strength(json_t *body, sdw_request *req, sdw_error *err) {
    double strength = -1;
    sdw_status s = sdw__json_number(body, "strength", 0, 1, false, &strength, err);
    if (s) return s;
    if (json_object_get(body, "strength") && !json_is_null(json_object_get(body, "strength")) &&
        !(strength > 0))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field 'strength': %g must be in (0, 1]",
                             strength);
    req->strength = strength;
    return SDW_OK;
}

/* Decodes the image fields of an image_transform / image_inpaint request into req: the last
 * thing a request does, so a request refused for any other reason decodes nothing. */
static sdw_status read_images(const sdw_server_params *p, json_t *body, bool mask,
                              sdw_request *req, sdw_req_images *im, const char **param,
                              sdw_error *err) {
    const char *names[2] = {"input_image", "mask_image"};
    const char *b64[2] = {NULL, NULL};
    sdw_image *dst[2] = {&im->init, &im->mask};
    for (int i = 0; i < 1 + mask; i++) {
        *param = names[i];
        sdw_status s = sdw__json_string(body, names[i], &b64[i], err);
        if (s) return s;
        if (!b64[i])
            return sdw_error_set(err, SDW_E_INVALID_ARG, "%s needs field '%s' (base64 image)",
                                 mask ? "image_inpaint" : "image_transform", names[i]);
    }
    for (int i = 0; i < 1 + mask; i++) {
        *param = names[i];
        sdw_status s = sdw__decode_image(p, b64[i], strlen(b64[i]), false, names[i], dst[i], err);
        if (s) return s;
    }
    req->init_image = &im->init;
    req->mask = mask ? &im->mask : NULL;
    *param = NULL;
    return SDW_OK;
}

/* "loras": [{"name": "detail", "multiplier": 0.8}, ...]: LoRAs of the model's --lora-dir, by
 * name (the file's stem) or "path" (relative to that folder; never leaving it); the multiplier
 * defaults to 1. Strings are borrowed from the body; the model resolves the names. */
static sdw_status read_loras(const sdw_capabilities *caps, json_t *body, sdw_request *req,
                             sdw_req_images *im, sdw_error *err) {
    json_t *l = json_object_get(body, "loras");
    if (!l || json_is_null(l)) return SDW_OK;
    if (!json_is_array(l))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "field 'loras' must be an array of {\"name\" or \"path\", "
                             "\"multiplier\"}");
    if (json_array_size(l) == 0) return SDW_OK;
    if (!caps->lora) return sdw_error_set(err, SDW_E_UNSUPPORTED, "this model does not take LoRAs");
    const size_t cap = sizeof im->loras / sizeof im->loras[0];
    if (json_array_size(l) > cap)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field 'loras' has more than %zu entries",
                             cap);
    size_t i;
    json_t *v;
    json_array_foreach(l, i, v) {
        const char *key, *name = NULL;
        json_t *x;
        double m = 1;
        if (!json_is_object(v))
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "loras[%zu] must be an object {\"name\" or \"path\", "
                                 "\"multiplier\"}",
                                 i);
        json_object_foreach(v, key, x) {
            if (!strcmp(key, "name") || !strcmp(key, "path")) {
                if (name || !json_is_string(x) || !*json_string_value(x))
                    return sdw_error_set(err, SDW_E_INVALID_ARG,
                                         "loras[%zu] needs one non-empty string 'name' or "
                                         "'path'",
                                         i);
                name = json_string_value(x);
            } else if (!strcmp(key, "multiplier") || !strcmp(key, "weight")) {
                if (!json_is_number(x))
                    return sdw_error_set(err, SDW_E_INVALID_ARG,
                                         "loras[%zu].%s must be a number", i, key);
                m = json_number_value(x);
            } else {
                return sdw_error_set(err, SDW_E_INVALID_ARG,
                                     "loras[%zu]: unknown field '%s' (name, path, multiplier)",
                                     i, key);
            }
        }
        if (!name)
            return sdw_error_set(err, SDW_E_INVALID_ARG, "loras[%zu] needs 'name' or 'path'", i);
        im->loras[i] = (sdw_lora_ref){.name = name, .multiplier = (float)m};
    }
    req->loras = im->loras;
    req->n_loras = (int)json_array_size(l);
    return SDW_OK;
}

sdw_status sdw__native_parse(const sdw_server_params *p, const sdw_capabilities *caps,
                             json_t *body, sdw_request *req, int *n, sdw_req_images *im,
                             const char **param, sdw_error *err) {
    sdw_status s;
    *param = NULL;
    if ((s = check_known(body, err))) return s;
    const char *op = "image_generation", *rng = NULL, *decoder = NULL;
    bool tiling = false;
    long long w = 0, h = 0, steps = 0, seed = -1, nn = 1;
    double g = -1;
#define TRY(field, expr)                                                                           \
    do {                                                                                           \
        *param = field;                                                                            \
        if ((s = (expr))) return s;                                                                \
    } while (0)
    TRY("operation", sdw__json_string(body, "operation", &op, err));
    TRY("prompt", sdw__json_string(body, "prompt", &req->prompt, err));
    TRY("negative_prompt", sdw__json_string(body, "negative_prompt", &req->negative_prompt, err));
    TRY("width", sdw__json_int(body, "width", 0, 1 << 20, false, &w, err));
    TRY("height", sdw__json_int(body, "height", 0, 1 << 20, false, &h, err));
    TRY("steps", sdw__json_int(body, "steps", 0, INT_MAX, false, &steps, err));
    TRY("guidance_scale", sdw__json_number(body, "guidance_scale", 0, 100, false, &g, err));
    TRY("seed", sdw__json_int(body, "seed", -1, INT64_MAX, false, &seed, err));
    TRY("sampler", sdw__json_string(body, "sampler", &req->sampler, err));
    TRY("scheduler", sdw__json_string(body, "scheduler", &req->scheduler, err));
    TRY("n", sdw__json_int(body, "n", 1, 1 << 20, false, &nn, err));
    TRY("rng", sdw__json_string(body, "rng", &rng, err));
    TRY("decoder", sdw__json_string(body, "decoder", &decoder, err));
    json_t *vt = json_object_get(body, "vae_tiling");
    const bool has_tiling = vt && !json_is_null(vt);
    TRY("vae_tiling", sdw__json_bool(body, "vae_tiling", &tiling, err));
    TRY("hires", read_hires(body, req, err));
    TRY("loras", read_loras(caps, body, req, im, err));
    TRY("params", read_params(body, req, im, err));
    /* prompt_syntax: AUTOMATIC1111's (emphasis, BREAK, 75-token chunks); default false, the
     * pipelines' plain reading. clip_skip: 0 = the model's own layer. */
    TRY("prompt_syntax", sdw__json_bool(body, "prompt_syntax", &req->prompt_syntax, err));
    long long clip_skip = 0;
    TRY("clip_skip", sdw__json_int(body, "clip_skip", 0, SDW_MAX_CLIP_SKIP, false, &clip_skip, err));
    req->clip_skip = (int)clip_skip;
#undef TRY
    req->width = (int)w;
    req->height = (int)h;
    req->steps = (int)steps;
    req->guidance = (float)g;
    req->seed = seed;
    *n = (int)nn;
    *param = "rng";
    if (rng && (s = sdw_rng_kind_parse(rng, &req->rng, err))) return s;
    *param = "decoder";
    if (decoder && (s = sdw_decoder_parse(decoder, &req->decoder, err))) return s;
    /* vae_tiling: true / false; absent (null) = automatic, tiled above SDW_TILING_AUTO_PIXELS */
    if (has_tiling) req->vae_tiling = tiling ? SDW_TILING_ON : SDW_TILING_OFF;
    *param = "operation";
    const bool transform = !strcmp(op, "image_transform"), inpaint = !strcmp(op, "image_inpaint");
    if (!transform && !inpaint && strcmp(op, "image_generation"))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "unknown operation '%s' (image_generation, image_transform, "
                             "image_inpaint)",
                             op);
    if (!transform && !inpaint)
        for (int i = 0; i < 3; i++) {
            const char *f = i == 2 ? "strength" : i ? "mask_image" : "input_image";
            *param = f;
            if (json_object_get(body, f) && !json_is_null(json_object_get(body, f)))
                return sdw_error_set(err, SDW_E_INVALID_ARG,
                                     "field '%s' is not used by image_generation (use operation "
                                     "image_transform or image_inpaint)",
                                     f);
        }
    *param = "strength";
    if ((transform || inpaint) && (s = read_strength(body, req, err))) return s;
    *param = "hires";
    if ((transform || inpaint) && req->hires.enable)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "field 'hires' is for image_generation (the hires fix is "
                             "text-to-image)");
    if ((s = sdw__check_hires_limits(p, caps, req, err))) return s;
    *param = NULL;
    if ((s = sdw__check_limits(p, caps, req, *n, err))) return s;
    if ((transform || inpaint) && (s = read_images(p, body, inpaint, req, im, param, err)))
        return s;
    *param = "controlnets"; /* their images are decoded last too */
    if ((s = sdw__controls_native(p, caps, body, req, im, err))) return s;
    *param = NULL;
    return SDW_OK;
}

static enum MHD_Result post_job(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    json_t *body = sdw__http_body_json(r, &resp);
    if (!body) return resp;
    /* "model": the model to run it (NULL = the only one served) */
    json_t *mv = json_object_get(body, "model");
    if (mv && !json_is_string(mv) && !json_is_null(mv)) {
        json_decref(body);
        return sdw__http_error(r, 400, "model", "field 'model' must be a string");
    }
    sdw_model_list *ml = NULL;
    const sdw_served_model *m =
        sdw__http_model(r, js, json_string_value(mv), "model", &ml, &resp);
    if (!m) {
        json_decref(body);
        return resp;
    }
    sdw_request req = sdw_request_default();
    int n = 1;
    const char *param = NULL;
    sdw_error err = {0};
    sdw_sjob *job = NULL;
    sdw_req_images im = {0};
    sdw_status s = sdw__native_parse(&r->srv->p, m->caps, body, &req, &n, &im, &param, &err);
    if (!s) s = js->ops->submit(js, m, &req, n, &job, &err); /* copies the images */
    sdw__req_images_free(&im);
    sdw__model_list_free(ml);
    json_decref(body);
    if (s) return sdw__http_status(r, s, param ? param : native_param(err.field), err.msg);
    const char *id = sdw__sjob_id(job);
    char status_url[128], sse_url[128], image_url[128];
    snprintf(status_url, sizeof status_url, "/v1/jobs/%s", id);
    snprintf(sse_url, sizeof sse_url, "/v1/jobs/%s/stream", id);
    snprintf(image_url, sizeof image_url, "/v1/jobs/%s/image.png", id);
    json_t *out = json_pack("{s:s,s:s,s:s,s:s,s:s}", "job_id", id, "state", "queued", "sse_url",
                            sse_url, "status_url", status_url, "image_url", image_url);
    sdw__sjob_release(job);
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    const char *h[] = {"Location", status_url, NULL};
    resp = sdw__http_send(r, 202, "application/json", text, strlen(text), h);
    free(text);
    return resp;
}

static const char *operation_of(const sdw_request *q) {
    return q->mask ? "image_inpaint" : q->init_image ? "image_transform" : "image_generation";
}

json_t *sdw__native_job_json(sdw_http_req *r, sdw_sjob *j, const sdw_job_status *st) {
    (void)r;
    const sdw_request *q = sdw__sjob_request(j);
    sdw_result_info info;
    const char *infotext = NULL;
    bool have = sdw__sjob_image_info(j, 0, &info, &infotext);
    json_t *params = json_pack(
        "{s:s,s:s?,s:i,s:i,s:i,s:f,s:s,s:s,s:s,s:i}", "prompt", q->prompt, "negative_prompt",
        q->negative_prompt, "width", q->width, "height", q->height, "steps", q->steps,
        "guidance_scale", (double)q->guidance, "sampler", q->sampler, "scheduler", q->scheduler,
        "rng", sdw_rng_kind_str(q->rng), "n", st->n_images);
    json_object_set_new(params, "seed", have ? json_integer(info.seed)
                                        : q->seed >= 0 ? json_integer(q->seed) : json_null());
    if (q->init_image) json_object_set_new(params, "strength", json_real(q->strength));
    json_object_set_new(params, "prompt_syntax", json_boolean(q->prompt_syntax));
    json_object_set_new(params, "clip_skip", json_integer(q->clip_skip));
    if (q->n_controls) {
        json_t *cns = json_array();
        for (int i = 0; i < q->n_controls; i++) {
            const sdw_control *c = &q->controls[i];
            json_array_append_new(cns, json_pack("{s:s,s:f,s:f,s:f}", "model",
                                                 c->name ? c->name : "", "scale",
                                                 (double)c->scale, "start", c->start, "end",
                                                 c->end));
        }
        json_object_set_new(params, "controlnets", cns);
    }
    json_object_set_new(params, "decoder", json_string(sdw_decoder_str(q->decoder)));
    json_object_set_new(params, "vae_tiling", q->vae_tiling == SDW_TILING_AUTO
                                                  ? json_null()
                                                  : json_boolean(q->vae_tiling == SDW_TILING_ON));
    if (q->hires.enable) /* as resolved: the final size; width and height are the first pass's */
        json_object_set_new(
            params, "hires",
            json_pack("{s:f,s:i,s:i,s:s,s:i,s:f}", "scale", q->hires.scale, "width",
                      q->hires.width, "height", q->hires.height, "upscaler",
                      sdw_upscaler_str(q->hires.upscaler), "steps",
                      q->hires.steps ? q->hires.steps : q->steps, "strength", q->hires.strength));
    if (q->n_loras) {
        json_t *ls = json_array();
        for (int i = 0; i < q->n_loras; i++)
            json_array_append_new(ls, json_pack("{s:s,s:f}", "name",
                                                q->loras[i].name ? q->loras[i].name : "",
                                                "multiplier", (double)q->loras[i].multiplier));
        json_object_set_new(params, "loras", ls);
    }
    json_object_set_new(params, "model", json_string(sdw__sjob_model(j)));
    json_t *o = json_pack("{s:s,s:s,s:s,s:f,s:{s:i,s:i,s:f,s:f,s:f},s:o}", "job_id", sdw__sjob_id(j),
                          "operation", operation_of(q), "state", sdw_job_state_str(st->state),
                          "created", st->created, "progress", "step", st->step, "total", st->total,
                          "percent", st->percent, "elapsed", st->elapsed_s, "eta", st->eta_s,
                          "parameters", params);
    if (st->state == SDW_JOB_QUEUED)
        json_object_set_new(o, "queue_position", json_integer(st->queue_position));
    if (st->n_done > 0) {
        json_t *imgs = json_array();
        for (int i = 0; i < st->n_done; i++) {
            char url[128];
            sdw_result_info ii;
            sdw__sjob_image_info(j, i, &ii, NULL);
            snprintf(url, sizeof url, "/v1/jobs/%s/image.png?index=%d", sdw__sjob_id(j), i);
            json_array_append_new(imgs, json_pack("{s:s,s:I,s:i,s:i}", "url", url, "seed",
                                                  (json_int_t)ii.seed, "width",
                                                  ii.hires ? ii.hires_width : ii.width, "height",
                                                  ii.hires ? ii.hires_height : ii.height));
        }
        /* vae_tiled: the decode ran in tiles (asked, or automatically for a large image) */
        json_object_set_new(o, "result",
                            json_pack("{s:o,s:s,s:I,s:b,s:b,s:b}", "images", imgs, "infotext",
                                      infotext, "seed", (json_int_t)info.seed, "vae_tiled",
                                      info.vae_tiled, "taesd_decoded", info.taesd_decoded,
                                      "hires", info.hires));
    } else {
        json_object_set_new(o, "result", json_null());
    }
    json_object_set_new(o, "error", st->state == SDW_JOB_FAILED || st->state == SDW_JOB_CANCELLED
                                        ? json_pack("{s:s}", "message", st->error)
                                        : json_null());
    return o;
}

sdw_sjob *sdw__native_find_job(sdw_http_req *r, enum MHD_Result *resp) {
    sdw_jobs *js = sdw__http_jobs(r, resp);
    if (!js) return NULL;
    sdw_sjob *j = NULL;
    sdw_error err = {0};
    sdw_status s = js->ops->find(js, r->param, &j, &err);
    if (s) *resp = sdw__http_status(r, s, NULL, err.msg);
    return s ? NULL : j;
}

static enum MHD_Result get_job(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_sjob *j = sdw__native_find_job(r, &resp);
    if (!j) return resp;
    sdw_job_status st;
    sdw__sjob_status(j, &st);
    json_t *o = sdw__native_job_json(r, j, &st);
    sdw__sjob_release(j);
    return sdw__http_json(r, 200, o);
}

static enum MHD_Result post_cancel(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_sjob *j = sdw__native_find_job(r, &resp);
    if (!j) return resp;
    bool took = false;
    sdw_error err = {0};
    sdw_status s = j->ops->cancel(j, &took, &err);
    sdw_job_status st;
    sdw__sjob_status(j, &st);
    if (s) {
        resp = sdw__http_status(r, s, NULL, err.msg);
    } else if (!took) {
        resp = sdw__http_error(r, 409, NULL, "job %s already %s: nothing to cancel",
                               sdw__sjob_id(j), sdw_job_state_str(st.state));
    } else {
        json_t *o = sdw__native_job_json(r, j, &st);
        /* A running job stops at its next step: its state says "running" until then. */
        json_object_set_new(o, "cancel_requested", json_true());
        resp = sdw__http_json(r, 200, o);
    }
    sdw__sjob_release(j);
    return resp;
}

static enum MHD_Result get_image(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_sjob *j = sdw__native_find_job(r, &resp);
    if (!j) return resp;
    const char *idx = sdw__http_query(r, "index");
    char *end = NULL;
    long i = idx ? strtol(idx, &end, 10) : 0;
    sdw_job_status st;
    sdw__sjob_status(j, &st);
    size_t len = 0;
    const uint8_t *png = NULL;
    if (idx && (!*idx || *end || i < 0 || i >= st.n_images))
        resp = sdw__http_error(r, 400, "index", "index '%s' must be an integer in [0, %d]", idx,
                               st.n_images - 1);
    else if (!(png = sdw__sjob_image_png(j, (int)i, &len)))
        resp = sdw__http_error(r, st.state == SDW_JOB_QUEUED || st.state == SDW_JOB_RUNNING ? 409
                                                                                             : 404,
                               NULL, "job %s has no image %ld: it is %s%s%s", sdw__sjob_id(j), i,
                               sdw_job_state_str(st.state), *st.error ? ": " : "", st.error);
    else
        resp = sdw__http_send(r, 200, "image/png", png, len, NULL);
    sdw__sjob_release(j);
    return resp;
}

static enum MHD_Result get_preview(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_sjob *j = sdw__native_find_job(r, &resp);
    if (!j) return resp;
    uint8_t *png = NULL;
    size_t len = 0;
    sdw_error err = {0};
    sdw_status s = sdw__sjob_preview_png(j, &png, &len, NULL, &err);
    resp = s ? sdw__http_status(r, s, NULL, err.msg)
             : sdw__http_send(r, 200, "image/png", png, len, NULL);
    free(png);
    sdw__sjob_release(j);
    return resp;
}

static json_t *str_list(const char *const *l) {
    json_t *a = json_array();
    for (; l && *l; l++) json_array_append_new(a, json_string(*l));
    return a;
}

/* ?model=NAME: one of several models a gateway serves (the only one by default). */
static enum MHD_Result get_capabilities(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    sdw_model_list *ml = NULL;
    const sdw_served_model *m =
        sdw__http_model(r, js, sdw__http_query(r, "model"), "model", &ml, &resp);
    if (!m) return resp;
    const sdw_capabilities *c = m->caps;
    const sdw_server_params *p = &r->srv->p;
    sdw_engine_stats st = {0};
    js->ops->stats(js, &st, NULL);
    json_t *ops = json_array();
    if (c->txt2img) json_array_append_new(ops, json_string("image_generation"));
    if (c->img2img) json_array_append_new(ops, json_string("image_transform"));
    if (c->inpainting) json_array_append_new(ops, json_string("image_inpaint"));
    json_t *o = json_pack(
        "{s:{s:s,s:s,s:s,s:s},s:o,s:{s:b,s:b,s:b,s:b,s:b,s:b,s:b,s:b,s:b},"
        "s:{s:i,s:i,s:i,s:f,s:s},s:{s:i,s:i,s:i,s:i,s:i,s:i,s:I,s:i},s:o,s:o}",
        "model", "name", m->name, "type", m->type, "variant", m->variant,
        "description", m->description, "operations", ops, "features", "txt2img", c->txt2img, "img2img",
        c->img2img, "inpainting", c->inpainting, "lora", c->lora, "controlnet", c->controlnet,
        "guidance", c->supports_guidance, "negative_prompt", c->supports_negative_prompt, "taesd",
        c->taesd, "hires", c->txt2img && c->img2img,
        "defaults", "width", c->default_width, "height", c->default_height, "steps",
        c->default_steps, "guidance_scale", (double)c->default_guidance, "sampler",
        c->default_sampler, "limits", "min_size", c->min_size, "max_size",
        SDW_MIN(c->max_size, p->max_size), "size_multiple", c->size_multiple, "max_steps",
        SDW_MIN(c->max_steps, p->max_steps), "max_n", p->max_n, "queue_max", st.queue_max,
        "max_body_bytes", (json_int_t)p->max_body_bytes, "max_connections", p->max_connections,
        "samplers", str_list(c->samplers), "schedulers", str_list(c->schedulers));
    json_t *names = json_object();
    for (const char *const *s = c->samplers; s && *s; s++)
        json_object_set_new(names, *s, json_string(sdw_sampler_a1111_name(*s)));
    json_object_set_new(o, "sampler_display_names", names);
    /* the hires fix's upscalers (A1111's built-in ones; no neural upscaler is installed) */
    json_t *ups = json_array();
    for (int u = 0; u < SDW_UPSCALE_COUNT; u++)
        json_array_append_new(ups, json_string(sdw_upscaler_str((sdw_upscaler)u)));
    json_object_set_new(o, "upscalers", ups);
    /* the family's request options ("params" of a job) */
    json_t *params = json_object();
    for (const sdw_param_spec *q = c->params; q && q->name; q++)
        json_object_set_new(params, q->name,
                            json_pack("{s:f,s:f,s:f,s:b,s:s}", "min", q->min, "max", q->max,
                                      "default", q->def, "integer", q->integer, "help", q->help));
    json_object_set_new(o, "params", params);
    sdw__model_list_free(ml);
    return sdw__http_json(r, 200, o);
}

static enum MHD_Result get_stats(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    sdw_engine_stats s = {0};
    sdw_error err = {0};
    sdw_status st = js->ops->stats(js, &s, &err);
    if (st) return sdw__http_status(r, st, NULL, err.msg);
    return sdw__http_json(
        r, 200,
        json_pack("{s:i,s:i,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "queued", s.queued, "running",
                  s.running, "queue_max", s.queue_max, "jobs_kept", s.jobs_kept, "bytes_kept",
                  (json_int_t)s.bytes_kept, "submitted", (json_int_t)s.submitted, "succeeded",
                  (json_int_t)s.succeeded, "failed", (json_int_t)s.failed, "cancelled",
                  (json_int_t)s.cancelled, "rejected_busy", (json_int_t)s.rejected_busy,
                  "mean_job_seconds", s.mean_job_s));
}

static enum MHD_Result get_health(sdw_http_req *r) {
    return sdw__http_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

/* 200 once jobs are taken: {status, model, type, variant} of the model served (the first of
 * several behind a gateway, all of them in "models"); 503 while the model loads or the pool
 * cannot be reached. */
static enum MHD_Result get_ready(sdw_http_req *r) {
    sdw_jobs *js = atomic_load(&r->srv->jobs);
    int retry = 5;
    char why[256];
    sdw_model_list *ml = NULL;
    sdw_error err = {0};
    bool ok = js->ops->ready(js, &retry, why, sizeof why);
    if (ok && js->ops->models(js, &ml, &err)) {
        ok = false;
        retry = js->ops->retry_after(js);
        snprintf(why, sizeof why, "%s", err.msg);
    }
    if (!ok) {
        char secs[16];
        snprintf(secs, sizeof secs, "%d", retry);
        const char *h[] = {"Retry-After", secs, NULL};
        bool loading = js == r->srv->local;
        json_t *o = json_pack("{s:s,s:s}", "status", loading ? "loading" : "unavailable",
                              "message", loading ? "the model is still loading" : why);
        char *t = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        enum MHD_Result resp = sdw__http_send(r, 503, "application/json", t, strlen(t), h);
        free(t);
        return resp;
    }
    json_t *o = json_pack("{s:s}", "status", "ready");
    if (ml->n > 0)
        json_object_update_new(o, json_pack("{s:s,s:s,s:s}", "model", ml->m[0].name, "type",
                                            ml->m[0].type, "variant", ml->m[0].variant));
    if (js != r->srv->local) {
        json_t *names = json_array();
        for (int i = 0; i < ml->n; i++) json_array_append_new(names, json_string(ml->m[i].name));
        json_object_set_new(o, "models", names);
    }
    sdw__model_list_free(ml);
    return sdw__http_json(r, 200, o);
}

/* The workers running this server's jobs: a gateway's registry (pool/protocol.h), or this
 * process as the one worker of `sdw serve -m`. */
static enum MHD_Result get_workers(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    json_t *list = NULL;
    sdw_error err = {0};
    sdw_status s = js->ops->workers(js, &list, &err);
    if (s) return sdw__http_status(r, s, NULL, err.msg);
    return sdw__http_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", list));
}

const sdw_route sdw__native_routes[] = {
    {"POST", "/v1/jobs", post_job},
    {"GET", "/v1/jobs/*", get_job},
    {"POST", "/v1/jobs/*/cancel", post_cancel},
    {"GET", "/v1/jobs/*/image.png", get_image},
    {"GET", "/v1/jobs/*/preview.png", get_preview},
    {"GET", "/v1/capabilities", get_capabilities},
    {"GET", "/v1/stats", get_stats},
    {"GET", "/v1/workers", get_workers},
    {"GET", "/health", get_health},
    {"GET", "/ready", get_ready},
    {NULL, NULL, NULL},
};
