/* server/openai.c — the OpenAI Images API, as the official clients call it:
 * POST /v1/images/generations (JSON), POST /v1/images/edits (multipart), GET /v1/models.
 * Requests run synchronously through the engine's queue (the call returns when the images are
 * done). Errors are OpenAI-shaped: {"error": {"message", "type", "param", "code"}}.
 * Besides OpenAI's fields, generations accept this server's own (negative_prompt, steps,
 * guidance_scale, seed, sampler, scheduler) so clients can pass them as extra body fields;
 * fields OpenAI has and a diffusion model has no use for (model, quality, style, user, ...) are
 * accepted and ignored, as clients send them by default. */
#include "server/server_impl.h"

#include "core/common.h"
#include "io/base64.h"
#include "io/image_encode.h"
#include "server/multipart.h"

#include <string.h>
#include <time.h>

typedef struct oa_opts {
    int n;
    bool url; /* response_format "url": links to /v1/jobs/{id}/image.png instead of base64 */
    sdw_image_format format;
    int quality; /* output_compression for jpeg/webp */
} oa_opts;

static sdw_status parse_common(const char *size, const char *rf, const char *of, long long n,
                               long long compression, sdw_request *req, oa_opts *o,
                               const char **param, sdw_error *err) {
    sdw_status s;
    *param = "size";
    if (size && (s = sdw__parse_size(size, &req->width, &req->height, err))) return s;
    *param = "response_format";
    if (rf && strcmp(rf, "b64_json") && strcmp(rf, "url"))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "response_format '%s' must be b64_json or url", rf);
    o->url = rf && !strcmp(rf, "url");
    *param = "output_format";
    if (of && !sdw_image_format_parse(of, &o->format))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "output_format '%s' must be png, jpeg or webp",
                             of);
    if (o->url && o->format != SDW_IMAGE_PNG)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "response_format url serves PNG only; use b64_json for %s", of);
    o->n = (int)n;
    o->quality = (int)compression;
    *param = NULL;
    return SDW_OK;
}

/* Builds the response for a finished job: {created, data: [{b64_json} | {url}], ...}. */
static enum MHD_Result respond_images(sdw_http_req *r, sdw_job *j, const oa_opts *o) {
    sdw_job_status st;
    sdw_job_get_status(j, &st);
    if (st.state == SDW_JOB_FAILED) return sdw__http_error(r, 500, NULL, "generation failed: %s", st.error);
    if (st.state == SDW_JOB_CANCELLED)
        return sdw__http_error(r, 503, NULL, "generation was cancelled: %s", st.error);
    json_t *data = json_array();
    const char *host = sdw__http_header(r, "Host");
    for (int i = 0; i < st.n_done; i++) {
        if (o->url) {
            char url[512];
            snprintf(url, sizeof url, "http://%s/v1/jobs/%s/image.png?index=%d",
                     host ? host : "127.0.0.1", sdw_job_id(j), i);
            json_array_append_new(data, json_pack("{s:s}", "url", url));
            continue;
        }
        char *b64;
        if (o->format == SDW_IMAGE_PNG) {
            b64 = sdw__job_image_b64(j, i);
        } else {
            const sdw_image *img = sdw_job_image(j, i);
            uint8_t *buf = NULL;
            size_t len = 0;
            sdw_error err = {0};
            if (sdw_image_encode(img->data, img->width, img->height, img->channels, o->format,
                                 o->quality, &buf, &len, &err) != SDW_OK) {
                json_decref(data);
                return sdw__http_error(r, 500, NULL, "%s", err.msg);
            }
            b64 = sdw_base64_encode(buf, len, NULL);
            free(buf);
        }
        json_array_append_new(data, json_pack("{s:s}", "b64_json", b64));
        free(b64);
    }
    const sdw_request *q = sdw_job_request(j);
    char size[32];
    snprintf(size, sizeof size, "%dx%d", q->width, q->height);
    static const char *const fmt[] = {"png", "jpeg", "webp"};
    return sdw__http_json(r, 200, json_pack("{s:I,s:o,s:s,s:s}", "created",
                                            (json_int_t)time(NULL), "data", data, "size", size,
                                            "output_format", fmt[o->format]));
}

/* The OpenAI parameter an sdw_request field a refusal names (sdw_error.field) comes from. */
static const char *openai_param(const char *field) {
    if (!field) return NULL;
    if (!strcmp(field, "width") || !strcmp(field, "height")) return "size";
    if (!strcmp(field, "init_image")) return "image";
    return field;
}

/* Queues req and waits for it; responds with the images or the error. */
static enum MHD_Result run(sdw_http_req *r, sdw_engine *e, const sdw_request *req,
                           const oa_opts *o) {
    sdw_error err = {0};
    sdw_job *j = NULL;
    sdw_status s = sdw__check_limits(r->srv, req, o->n, &err);
    if (!s) s = sdw_engine_submit(e, req, o->n, &j, &err);
    if (s) return sdw__http_status(r, s, openai_param(err.field), err.msg);
    sdw_job_wait_done(j);
    enum MHD_Result resp = respond_images(r, j, o);
    sdw_job_release(j);
    return resp;
}

static enum MHD_Result post_generations(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    json_t *b = sdw__http_body_json(r, &resp);
    if (!b) return resp;
    sdw_request req = sdw_request_default();
    oa_opts o = {0};
    const char *size = NULL, *rf = NULL, *of = NULL, *param = NULL;
    long long n = 1, compression = 100, steps = 0, seed = -1;
    double g = -1;
    sdw_error err = {0};
    sdw_status s = SDW_OK;
#define TRY(field, expr)                                                                           \
    if (!s) {                                                                                      \
        param = field;                                                                             \
        s = (expr);                                                                                \
    }
    TRY("prompt", sdw__json_string(b, "prompt", &req.prompt, &err));
    if (!s && !req.prompt) s = sdw_error_set(&err, SDW_E_INVALID_ARG, "'prompt' is required");
    TRY("n", sdw__json_int(b, "n", 1, 1 << 20, false, &n, &err));
    TRY("size", sdw__json_string(b, "size", &size, &err));
    TRY("response_format", sdw__json_string(b, "response_format", &rf, &err));
    TRY("output_format", sdw__json_string(b, "output_format", &of, &err));
    TRY("output_compression", sdw__json_int(b, "output_compression", 0, 100, false, &compression, &err));
    TRY("negative_prompt", sdw__json_string(b, "negative_prompt", &req.negative_prompt, &err));
    TRY("steps", sdw__json_int(b, "steps", 0, INT_MAX, false, &steps, &err));
    TRY("guidance_scale", sdw__json_number(b, "guidance_scale", 0, 100, false, &g, &err));
    TRY("seed", sdw__json_int(b, "seed", -1, INT64_MAX, false, &seed, &err));
    TRY("sampler", sdw__json_string(b, "sampler", &req.sampler, &err));
    TRY("scheduler", sdw__json_string(b, "scheduler", &req.scheduler, &err));
#undef TRY
    req.steps = (int)steps;
    req.guidance = (float)g;
    req.seed = seed;
    if (!s) s = parse_common(size, rf, of, n, compression, &req, &o, &param, &err);
    resp = s ? sdw__http_status(r, s, param, err.msg) : run(r, e, &req, &o);
    json_decref(b);
    return resp;
}

/* A text part of the form as a NUL-terminated copy (or NULL if absent). */
static char *form_text(const sdw_multipart *mp, const char *name) {
    const sdw_multipart_part *p = sdw_multipart_get(mp, name);
    if (!p) return NULL;
    char *s = sdw_xmalloc(p->len + 1);
    memcpy(s, p->data, p->len);
    s[p->len] = 0;
    return s;
}

/* A number from a text form field, checked against [lo, hi]; absent leaves *out alone. */
static sdw_status form_number(const sdw_multipart *mp, const char *name, double lo, double hi,
                              double *out, sdw_error *err) {
    char *t = form_text(mp, name);
    if (!t) return SDW_OK;
    char *end;
    double x = strtod(t, &end);
    sdw_status s = SDW_OK;
    if (!*t || *end || !(x >= lo && x <= hi))
        s = sdw_error_set(err, SDW_E_INVALID_ARG, "'%s' must be a number in [%g, %g], not '%s'",
                          name, lo, hi, t);
    else *out = x;
    free(t);
    return s;
}

/* multipart/form-data: image (PNG, JPEG or WebP), optional mask (OpenAI's: transparent = edit;
 * one without alpha is read as ours: white = repaint), prompt, n, size, response_format,
 * output_format; and this server's strength, seed, steps, guidance_scale, negative_prompt,
 * sampler. With a mask the model inpaints, without one it transforms the whole image. */
static enum MHD_Result post_edits(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    sdw_multipart mp;
    sdw_error err = {0};
    if (sdw_multipart_parse(sdw__http_header(r, "Content-Type"), r->body, r->body_len, &mp,
                            &err) != SDW_OK)
        return sdw__http_error(r, 400, NULL, "%s", err.msg);
    char *prompt = form_text(&mp, "prompt"), *size = form_text(&mp, "size"),
         *rf = form_text(&mp, "response_format"), *of = form_text(&mp, "output_format"),
         *neg = form_text(&mp, "negative_prompt"), *sampler = form_text(&mp, "sampler");
    const sdw_multipart_part *image = sdw_multipart_get(&mp, "image");
    if (!image) image = sdw_multipart_get(&mp, "image[]");
    const sdw_multipart_part *mask = sdw_multipart_get(&mp, "mask");
    sdw_request req = sdw_request_default();
    req.prompt = prompt;
    req.negative_prompt = neg;
    req.sampler = sampler;
    oa_opts o = {0};
    const char *param = NULL;
    sdw_status s = SDW_OK;
    double n = 1, seed = -1, steps = 0, g = -1, strength = -1;
    if (!image) {
        param = "image";
        s = sdw_error_set(&err, SDW_E_INVALID_ARG, "'image' is required (a PNG file part)");
    } else if (!prompt) {
        param = "prompt";
        s = sdw_error_set(&err, SDW_E_INVALID_ARG, "'prompt' is required");
    }
#define FORM(name, lo, hi, var)                                                                    \
    if (!s) {                                                                                      \
        param = name;                                                                              \
        s = form_number(&mp, name, lo, hi, &var, &err);                                            \
    }
    FORM("n", 1, 1 << 20, n);
    FORM("seed", -1, 9e18, seed);
    FORM("steps", 0, INT_MAX, steps);
    FORM("guidance_scale", 0, 100, g);
    FORM("strength", 0, 1, strength);
#undef FORM
    if (!s && (n != (long)n || seed != (long long)seed || steps != (int)steps)) {
        param = NULL;
        s = sdw_error_set(&err, SDW_E_INVALID_ARG, "'n', 'seed' and 'steps' must be integers");
    }
    req.seed = (int64_t)seed;
    req.steps = (int)steps;
    req.guidance = (float)g;
    req.strength = strength > 0 ? strength : -1;
    if (!s) s = parse_common(size, rf, of, (long)n, 100, &req, &o, &param, &err);
    sdw_image img = {0}, m = {0}, m_ours = {0};
    if (!s) {
        param = "image";
        s = sdw__decode_image((const char *)image->data, image->len, true, "image", &img, &err);
        req.init_image = &img;
    }
    if (!s && mask) {
        param = "mask";
        s = sdw__decode_image((const char *)mask->data, mask->len, true, "mask", &m, &err);
        if (!s) {
            sdw__mask_from_alpha(&m, &m_ours);
            req.mask = &m_ours;
        }
    }
    if (!s) param = NULL;
    resp = s ? sdw__http_status(r, s, param, err.msg) : run(r, e, &req, &o);
    sdw_image_free(&img);
    sdw_image_free(&m);
    sdw_image_free(&m_ours);
    free(prompt);
    free(size);
    free(rf);
    free(of);
    free(neg);
    free(sampler);
    sdw_multipart_deinit(&mp);
    return resp;
}

/* OpenAI model ids are short names: the last path component of what was loaded. */
static const char *model_id(sdw_image_model *m, char buf[256]) {
    snprintf(buf, 256, "%s", m->name);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    const char *slash = strrchr(buf, '/');
    return slash ? slash + 1 : buf;
}

static json_t *model_json(sdw_engine *e, sdw_server *srv) {
    char buf[256];
    return json_pack("{s:s,s:s,s:I,s:s}", "id", model_id(sdw_engine_model(e), buf), "object", "model", "created",
                     (json_int_t)srv->started_wall, "owned_by", "sdworker");
}

static enum MHD_Result get_models(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    return sdw__http_json(r, 200, json_pack("{s:s,s:[o]}", "object", "list", "data",
                                            model_json(e, r->srv)));
}

static enum MHD_Result get_model(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_engine *e = sdw__http_engine(r, &resp);
    if (!e) return resp;
    char buf[256];
    const char *id = model_id(sdw_engine_model(e), buf);
    if (strcmp(r->param, id))
        return sdw__http_error(r, 404, "model",
                               "the model '%s' does not exist (this server has '%s')", r->param,
                               id);
    return sdw__http_json(r, 200, model_json(e, r->srv));
}

const sdw_route sdw__openai_routes[] = {
    {"POST", "/v1/images/generations", post_generations},
    {"POST", "/v1/images/edits", post_edits},
    {"GET", "/v1/models", get_models},
    {"GET", "/v1/models/*", get_model},
    {NULL, NULL, NULL},
};
