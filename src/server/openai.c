/* server/openai.c — the OpenAI Images API, as the official clients call it:
 * POST /v1/images/generations (JSON), POST /v1/images/edits and /v1/images/variations
 * (multipart), GET /v1/models. Requests run through the engine's queue; the call returns when
 * the images are done, or, with "stream": true, answers at once with Server-Sent Events in
 * OpenAI's shape: up to partial_images `image_generation.partial_image` (`image_edit.*` for
 * edits) events from the job's previews, then one `...completed` event per image. Errors are
 * OpenAI-shaped: {"error": {"message", "type", "param", "code"}} (in a stream: a data line with
 * that object, which the SDKs raise). Besides OpenAI's fields, requests accept this server's
 * own (negative_prompt, steps, guidance_scale, seed, sampler, scheduler, strength) so clients
 * can pass them as extra body fields; fields OpenAI has and a diffusion model has no use for
 * (model, quality, style, user, ...) are accepted and ignored, as clients send them by default.
 * Unknown /v1 paths answer in OpenAI's error shape too (server.c's dialect_of). */
#define _GNU_SOURCE
#include "server/server_impl.h"

#include "core/common.h"
#include "io/base64.h"
#include "io/png.h"
#include "server/multipart.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define KEEPALIVE_S 5.0

static sdw_status parse_common(const char *size, const char *rf, const char *of, long long n,
                               long long compression, sdw_request *req, sdw_openai_opts *o,
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
    *param = "stream";
    if (o->url && o->stream)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "a stream sends images as b64_json; response_format url does not "
                             "stream");
    o->n = (int)n;
    o->quality = (int)compression;
    *param = NULL;
    return SDW_OK;
}

/* ---- answers ---- */

/* Base64 of image i of a finished job in format o->format (new), or NULL with *err set. */
static char *image_b64(sdw_sjob *j, int i, const sdw_openai_opts *o, sdw_error *err) {
    if (o->format == SDW_IMAGE_PNG) return sdw__job_image_b64(j, i);
    const sdw_image *img = sdw__sjob_image(j, i);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (sdw_image_encode(img->data, img->width, img->height, img->channels, o->format, o->quality,
                         &buf, &len, err) != SDW_OK)
        return NULL;
    char *b64 = sdw_base64_encode(buf, len, NULL);
    free(buf);
    return b64;
}

static const char *const k_formats[] = {"png", "jpeg", "webp"};

/* Builds the response for a finished job: {created, data: [{b64_json} | {url}], ...}. */
static enum MHD_Result respond_images(sdw_http_req *r, sdw_sjob *j, const sdw_openai_opts *o) {
    sdw_job_status st;
    sdw__sjob_status(j, &st);
    if (st.state == SDW_JOB_FAILED) return sdw__http_error(r, 500, NULL, "generation failed: %s", st.error);
    if (st.state == SDW_JOB_CANCELLED)
        return sdw__http_error(r, 503, NULL, "generation was cancelled: %s", st.error);
    if (!sdw_job_state_terminal(st.state)) /* a gateway stopping: the job goes on */
        return sdw__http_error(r, 503, NULL, "the server is stopping; job %s is still %s",
                               sdw__sjob_id(j), sdw_job_state_str(st.state));
    json_t *data = json_array();
    const char *host = sdw__http_header(r, "Host");
    for (int i = 0; i < st.n_done; i++) {
        if (o->url) {
            /* As long as the Host header is: a URL cut short would be a wrong link. */
            char *url = NULL;
            if (asprintf(&url, "http://%s/v1/jobs/%s/image.png?index=%d",
                         host ? host : "127.0.0.1", sdw__sjob_id(j), i) < 0)
                SDW_ABORT("out of memory");
            json_array_append_new(data, json_pack("{s:s}", "url", url));
            free(url);
            continue;
        }
        sdw_error err = {0};
        char *b64 = image_b64(j, i, o, &err);
        if (!b64) {
            json_decref(data);
            return sdw__http_error(r, 500, NULL, "%s", err.msg);
        }
        json_array_append_new(data, json_pack("{s:s}", "b64_json", b64));
        free(b64);
    }
    const sdw_request *q = sdw__sjob_request(j);
    char size[32];
    snprintf(size, sizeof size, "%dx%d", q->width, q->height);
    return sdw__http_json(r, 200, json_pack("{s:I,s:o,s:s,s:s}", "created",
                                            (json_int_t)time(NULL), "data", data, "size", size,
                                            "output_format", k_formats[o->format]));
}

/* ---- streaming ---- */

typedef struct oa_stream {
    sdw_http_req req; /* srv, dialect and CORS for the answer; nothing else after the handler */
    sdw_sjob *job;
    sdw_openai_opts o;
    const char *kind; /* "image_generation" or "image_edit": the events' prefix */
    char *buf;
    size_t len, off, cap;
    uint64_t version, preview_seq;
    int partials; /* partial images sent */
    bool done;
    double last_send;
} oa_stream;

static void put_event(oa_stream *s, const char *suffix, json_t *data /* stolen */) {
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!text) SDW_ABORT("out of memory");
    char *ev = NULL;
    int n = asprintf(&ev, "event: %s%s\ndata: %s\n\n", suffix ? s->kind : "error",
                     suffix ? suffix : "", text);
    free(text);
    if (n < 0) SDW_ABORT("out of memory");
    if (s->len + (size_t)n > s->cap) {
        s->cap = SDW_MAX(s->len + (size_t)n, s->cap * 2);
        s->buf = realloc(s->buf, s->cap);
        if (!s->buf) SDW_ABORT("out of memory");
    }
    memcpy(s->buf + s->len, ev, (size_t)n);
    s->len += (size_t)n;
    free(ev);
}

/* The fields every image event carries besides its own. */
static json_t *event_json(oa_stream *s, const char *type, const char *b64) {
    const sdw_request *q = sdw__sjob_request(s->job);
    char size[32];
    snprintf(size, sizeof size, "%dx%d", q->width, q->height);
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:s}", "type", type, "b64_json", b64, "created_at",
                     (json_int_t)time(NULL), "size", size, "quality", "auto", "background",
                     "opaque", "output_format", k_formats[s->o.format]);
}

/* The latest preview as base64 in the stream's format (new), or NULL. */
static char *preview_b64(oa_stream *s, uint64_t *seq) {
    uint8_t *png = NULL;
    size_t len = 0;
    if (sdw__sjob_preview_png(s->job, &png, &len, seq, NULL) != SDW_OK) return NULL;
    char *b64 = NULL;
    if (s->o.format == SDW_IMAGE_PNG) {
        b64 = sdw_base64_encode(png, len, NULL);
    } else {
        sdw_png img;
        uint8_t *enc = NULL;
        size_t n = 0;
        if (sdw_png_read_mem(png, len, "preview", &img, NULL) == SDW_OK) {
            if (sdw_image_encode(img.pixels, img.w, img.h, img.channels, s->o.format,
                                 s->o.quality, &enc, &n, NULL) == SDW_OK)
                b64 = sdw_base64_encode(enc, n, NULL);
            free(enc);
            sdw_png_deinit(&img);
        }
    }
    free(png);
    return b64;
}

/* Appends the events for what changed: a partial image when the job has passed the next of
 * partial_images evenly spaced points and has a new preview; at the end the completed images
 * or an error. */
static void emit(oa_stream *s) {
    sdw_job_status st;
    sdw__sjob_status(s->job, &st);
    s->version = st.version;
    if (!sdw_job_state_terminal(st.state) && s->partials < s->o.partial_images &&
        st.preview_seq != s->preview_seq &&
        st.step * (s->o.partial_images + 1) >= (s->partials + 1) * st.total) {
        uint64_t seq = 0;
        char *b64 = preview_b64(s, &seq);
        if (b64) {
            char type[64];
            snprintf(type, sizeof type, "%s.partial_image", s->kind);
            json_t *e = event_json(s, type, b64);
            json_object_set_new(e, "partial_image_index", json_integer(s->partials++));
            put_event(s, ".partial_image", e);
            free(b64);
            s->preview_seq = seq;
        }
    }
    if (!sdw_job_state_terminal(st.state)) return;
    if (st.state == SDW_JOB_SUCCEEDED) {
        char type[64];
        snprintf(type, sizeof type, "%s.completed", s->kind);
        for (int i = 0; i < st.n_done; i++) {
            sdw_error err = {0};
            char *b64 = image_b64(s->job, i, &s->o, &err);
            if (!b64) {
                put_event(s, NULL, json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message",
                                             err.msg, "type", "server_error", "param", "code"));
                break;
            }
            json_t *e = event_json(s, type, b64);
            json_object_set_new(e, "usage",
                                json_pack("{s:i,s:{s:i,s:i},s:i,s:i}", "input_tokens", 0,
                                          "input_tokens_details", "image_tokens", 0,
                                          "text_tokens", 0, "output_tokens", 0, "total_tokens",
                                          0));
            put_event(s, ".completed", e);
            free(b64);
        }
    } else {
        char msg[SDW_ERROR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "generation %s: %s",
                 st.state == SDW_JOB_FAILED ? "failed" : "was cancelled", st.error);
        put_event(s, NULL, json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message", msg, "type",
                                     "server_error", "param", "code"));
    }
    s->done = true;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max) {
    oa_stream *s = cls;
    for (;;) {
        if (s->off < s->len) {
            size_t n = SDW_MIN(max, s->len - s->off);
            memcpy(out, s->buf + s->off, n);
            s->off += n;
            s->last_send = sdw_time_now();
            return (ssize_t)n;
        }
        s->len = s->off = 0;
        if (s->done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (atomic_load(&s->req.srv->stopping)) {
            emit(s); /* the job has ended by now (the engine shut down first) */
            if (!s->done) return MHD_CONTENT_READER_END_OF_STREAM;
            continue;
        }
        if (sdw__sjob_wait(s->job, s->version, 1.0)) {
            emit(s);
        } else if (sdw_time_now() - s->last_send >= KEEPALIVE_S) {
            static const char ping[] = ": keepalive\n\n";
            if (s->cap < sizeof ping) {
                s->cap = 256;
                s->buf = realloc(s->buf, s->cap);
                if (!s->buf) SDW_ABORT("out of memory");
            }
            memcpy(s->buf, ping, sizeof ping - 1);
            s->len = sizeof ping - 1;
        }
    }
}

static void stream_free(void *cls) {
    oa_stream *s = cls;
    sdw__sjob_release(s->job);
    free(s->buf);
    free(s);
}

/* Answers with the job's event stream (takes the handle). */
static enum MHD_Result respond_stream(sdw_http_req *r, sdw_sjob *j, const sdw_openai_opts *o,
                                      bool edit) {
    oa_stream *s = sdw_xcalloc(1, sizeof *s);
    s->req = (sdw_http_req){.srv = r->srv, .dialect = r->dialect};
    s->job = j;
    s->o = *o;
    s->kind = edit ? "image_edit" : "image_generation";
    s->last_send = sdw_time_now();
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, stream_reader, s,
                                          stream_free);
    if (!resp) {
        stream_free(s);
        return MHD_NO;
    }
    return sdw__http_queue_stream(r, resp);
}

/* The OpenAI parameter an sdw_request field a refusal names (sdw_error.field) comes from. */
static const char *openai_param(const char *field) {
    if (!field) return NULL;
    if (!strcmp(field, "width") || !strcmp(field, "height")) return "size";
    if (!strcmp(field, "init_image")) return "image";
    return field;
}

/* Queues req and answers: the images when done, or at once the event stream. */
static enum MHD_Result run(sdw_http_req *r, sdw_jobs *js, const sdw_served_model *m,
                           const sdw_request *req, const sdw_openai_opts *o, bool edit) {
    sdw_error err = {0};
    sdw_sjob *j = NULL;
    sdw_status s = js->ops->submit(js, m, req, o->n, &j, &err);
    if (s) return sdw__http_status(r, s, openai_param(err.field), err.msg);
    if (o->stream) return respond_stream(r, j, o, edit);
    sdw__sjob_wait_done(j, &r->srv->stopping);
    enum MHD_Result resp = respond_images(r, j, o);
    sdw__sjob_release(j);
    return resp;
}

/* The model a request's "model" names, when one served has that name; else the only one
 * served (OpenAI clients send their own model names, "dall-e-3" and the like: ignored when
 * one model is served). NULL after queueing the answer. */
static const sdw_served_model *pick_model(sdw_http_req *r, sdw_jobs *js, const char *name,
                                          sdw_model_list **ml, enum MHD_Result *resp) {
    sdw_error err = {0};
    *ml = NULL;
    sdw_status s = js->ops->models(js, ml, &err);
    if (s) {
        *resp = sdw__http_status(r, s, NULL, err.msg);
        return NULL;
    }
    const sdw_served_model *m = NULL;
    for (int i = 0; name && i < (*ml)->n && !m; i++)
        if (!strcmp((*ml)->m[i].name, name)) m = &(*ml)->m[i];
    if (!m) m = sdw__models_pick(*ml, (*ml)->n == 1 ? NULL : name, &err);
    if (!m) {
        *resp = sdw__http_status(r, err.code, "model", err.msg);
        sdw__model_list_free(*ml);
        *ml = NULL;
    }
    return m;
}

/* ---- generations ---- */

sdw_status sdw__openai_parse_generation(const sdw_server_params *p, const sdw_capabilities *caps,
                                        json_t *b, sdw_request *req, sdw_openai_opts *o,
                                        const char **param, sdw_error *err) {
    const char *size = NULL, *rf = NULL, *of = NULL;
    long long n = 1, compression = 100, steps = 0, seed = -1, partial = 0;
    double g = -1;
    sdw_status s = SDW_OK;
    *o = (sdw_openai_opts){0};
#define TRY(field, expr)                                                                           \
    if (!s) {                                                                                      \
        *param = field;                                                                            \
        s = (expr);                                                                                \
    }
    TRY("prompt", sdw__json_string(b, "prompt", &req->prompt, err));
    if (!s && !req->prompt) s = sdw_error_set(err, SDW_E_INVALID_ARG, "'prompt' is required");
    TRY("n", sdw__json_int(b, "n", 1, 1 << 20, false, &n, err));
    TRY("size", sdw__json_string(b, "size", &size, err));
    TRY("response_format", sdw__json_string(b, "response_format", &rf, err));
    TRY("output_format", sdw__json_string(b, "output_format", &of, err));
    TRY("output_compression", sdw__json_int(b, "output_compression", 0, 100, false, &compression, err));
    TRY("stream", sdw__json_bool(b, "stream", &o->stream, err));
    TRY("partial_images", sdw__json_int(b, "partial_images", 0, 3, false, &partial, err));
    TRY("negative_prompt", sdw__json_string(b, "negative_prompt", &req->negative_prompt, err));
    TRY("steps", sdw__json_int(b, "steps", 0, INT_MAX, false, &steps, err));
    TRY("guidance_scale", sdw__json_number(b, "guidance_scale", 0, 100, false, &g, err));
    TRY("seed", sdw__json_int(b, "seed", -1, INT64_MAX, false, &seed, err));
    TRY("sampler", sdw__json_string(b, "sampler", &req->sampler, err));
    TRY("scheduler", sdw__json_string(b, "scheduler", &req->scheduler, err));
#undef TRY
    if (s) return s;
    req->steps = (int)steps;
    req->guidance = (float)g;
    req->seed = seed;
    o->partial_images = (int)partial;
    if ((s = parse_common(size, rf, of, n, compression, req, o, param, err))) return s;
    if ((s = sdw__check_limits(p, caps, req, o->n, err))) *param = openai_param(err->field);
    return s;
}

static enum MHD_Result post_generations(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    json_t *b = sdw__http_body_json(r, &resp);
    if (!b) return resp;
    sdw_model_list *ml = NULL;
    const sdw_served_model *m =
        pick_model(r, js, json_string_value(json_object_get(b, "model")), &ml, &resp);
    if (!m) {
        json_decref(b);
        return resp;
    }
    sdw_request req = sdw_request_default();
    sdw_openai_opts o;
    const char *param = NULL;
    sdw_error err = {0};
    sdw_status s = sdw__openai_parse_generation(&r->srv->p, m->caps, b, &req, &o, &param, &err);
    resp = s ? sdw__http_status(r, s, param ? param : openai_param(err.field), err.msg)
             : run(r, js, m, &req, &o, false);
    sdw__model_list_free(ml);
    json_decref(b);
    return resp;
}

/* ---- edits and variations (multipart) ---- */

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
        s = sdw_error_set(err, SDW_E_INVALID_ARG, "'%s' must be a number in [%g, %g], not '%.40s'",
                          name, lo, hi, t);
    else *out = x;
    free(t);
    return s;
}

void sdw__openai_texts_free(sdw_openai_texts *t) {
    free(t->prompt);
    free(t->size);
    free(t->rf);
    free(t->of);
    free(t->neg);
    free(t->sampler);
    free(t->stream);
    memset(t, 0, sizeof *t);
}

/* How many parts carry an input image: OpenAI's newer models take several (image[]). */
static int count_images(const sdw_multipart *mp) {
    int n = 0;
    for (int i = 0; i < mp->n; i++)
        n += !strcmp(mp->parts[i].name, "image") || !strcmp(mp->parts[i].name, "image[]");
    return n;
}

/* multipart/form-data: image (PNG, JPEG or WebP; one), optional mask (OpenAI's: transparent =
 * edit; one without alpha is read as ours: white = repaint), prompt, n, size, response_format,
 * output_format, stream, partial_images; and this server's strength, seed, steps,
 * guidance_scale, negative_prompt, sampler. With a mask the model inpaints, without one it
 * transforms the whole image. A variation is an edit without a prompt (image-to-image from the
 * image alone; a prompt may still be given) and without a mask. */
sdw_status sdw__openai_parse_form(const sdw_server_params *p, const sdw_capabilities *caps,
                                  const char *content_type, const char *body, size_t len,
                                  bool variation, sdw_request *req, sdw_openai_opts *o,
                                  sdw_openai_texts *t, sdw_req_images *im, const char **param,
                                  sdw_error *err) {
    sdw_multipart mp;
    *o = (sdw_openai_opts){0};
    *param = NULL;
    sdw_status s = sdw_multipart_parse(content_type, body, len, &mp, err);
    if (s) return s;
    t->prompt = form_text(&mp, "prompt");
    t->size = form_text(&mp, "size");
    t->rf = form_text(&mp, "response_format");
    t->of = form_text(&mp, "output_format");
    t->neg = form_text(&mp, "negative_prompt");
    t->sampler = form_text(&mp, "sampler");
    t->stream = form_text(&mp, "stream");
    const sdw_multipart_part *image = sdw_multipart_get(&mp, "image");
    if (!image) image = sdw_multipart_get(&mp, "image[]");
    const sdw_multipart_part *mask = sdw_multipart_get(&mp, "mask");
    req->prompt = t->prompt ? t->prompt : variation ? "" : NULL;
    req->negative_prompt = t->neg;
    req->sampler = t->sampler;
    const int n_images = count_images(&mp);
    double n = 1, seed = -1, steps = 0, g = -1, strength = -1, partial = 0;
    if (!image) {
        *param = "image";
        s = sdw_error_set(err, SDW_E_INVALID_ARG, "'image' is required (an image file part)");
    } else if (n_images > 1) {
        *param = "image";
        s = sdw_error_set(err, SDW_E_INVALID_ARG,
                          "this server edits one image at a time: the request has %d images "
                          "(image[]); send one",
                          n_images);
    } else if (!req->prompt) {
        *param = "prompt";
        s = sdw_error_set(err, SDW_E_INVALID_ARG, "'prompt' is required");
    } else if (variation && mask) {
        *param = "mask";
        s = sdw_error_set(err, SDW_E_INVALID_ARG,
                          "a variation takes no mask (use /v1/images/edits to inpaint)");
    }
#define FORM(name, lo, hi, var)                                                                    \
    if (!s) {                                                                                      \
        *param = name;                                                                             \
        s = form_number(&mp, name, lo, hi, &var, err);                                             \
    }
    FORM("n", 1, 1 << 20, n);
    FORM("seed", -1, 9e18, seed);
    FORM("steps", 0, INT_MAX, steps);
    FORM("guidance_scale", 0, 100, g);
    FORM("strength", 0, 1, strength);
    FORM("partial_images", 0, 3, partial);
#undef FORM
    if (!s && (n != (long)n || seed != (long long)seed || steps != (int)steps ||
               partial != (int)partial)) {
        *param = NULL;
        s = sdw_error_set(err, SDW_E_INVALID_ARG,
                          "'n', 'seed', 'steps' and 'partial_images' must be integers");
    }
    if (!s && strength == 0) { /* 0 would run nothing: the other APIs refuse it too */
        *param = "strength";
        s = sdw_error_set(err, SDW_E_INVALID_ARG, "'strength' 0 must be in (0, 1]");
    }
    if (!s && t->stream && strcmp(t->stream, "true") && strcmp(t->stream, "false")) {
        *param = "stream";
        s = sdw_error_set(err, SDW_E_INVALID_ARG, "'stream' must be true or false, not '%.20s'",
                          t->stream);
    }
    o->stream = t->stream && !strcmp(t->stream, "true");
    o->partial_images = (int)partial;
    req->seed = (int64_t)seed;
    req->steps = (int)steps;
    req->guidance = (float)g;
    req->strength = strength > 0 ? strength : -1;
    if (!s) s = parse_common(t->size, t->rf, t->of, (long)n, 100, req, o, param, err);
    if (!s && (s = sdw__check_limits(p, caps, req, o->n, err))) *param = openai_param(err->field);
    /* The images last: a request refused for anything else decodes nothing. */
    if (!s) {
        *param = "image";
        s = sdw__decode_image(p, (const char *)image->data, image->len, true, "image", &im->init,
                              err);
        req->init_image = &im->init;
    }
    if (!s && mask) {
        sdw_image m = {0};
        *param = "mask";
        s = sdw__decode_image(p, (const char *)mask->data, mask->len, true, "mask", &m, err);
        if (!s) {
            sdw__mask_from_alpha(&m, &im->mask);
            req->mask = &im->mask;
        }
        sdw_image_free(&m);
    }
    if (!s) *param = NULL;
    sdw_multipart_deinit(&mp);
    return s;
}

static enum MHD_Result post_form(sdw_http_req *r, bool variation) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    /* the form's model field is not read: the only model served (several: 400 naming them) */
    sdw_model_list *ml = NULL;
    const sdw_served_model *m = pick_model(r, js, NULL, &ml, &resp);
    if (!m) return resp;
    sdw_request req = sdw_request_default();
    sdw_openai_opts o;
    sdw_openai_texts t = {0};
    sdw_req_images im = {0};
    const char *param = NULL;
    sdw_error err = {0};
    sdw_status s =
        sdw__openai_parse_form(&r->srv->p, m->caps, sdw__http_header(r, "Content-Type"), r->body,
                               r->body_len, variation, &req, &o, &t, &im, &param, &err);
    resp = s ? sdw__http_status(r, s, param ? param : openai_param(err.field), err.msg)
             : run(r, js, m, &req, &o, true);
    sdw__model_list_free(ml);
    sdw__req_images_free(&im);
    sdw__openai_texts_free(&t);
    return resp;
}

static enum MHD_Result post_edits(sdw_http_req *r) { return post_form(r, false); }
static enum MHD_Result post_variations(sdw_http_req *r) { return post_form(r, true); }

/* ---- models ---- */

static json_t *model_json(const sdw_served_model *m, sdw_server *srv) {
    return json_pack("{s:s,s:s,s:I,s:s}", "id", m->name, "object", "model", "created",
                     (json_int_t)srv->started_wall, "owned_by", "sdworker");
}

/* Every model served (behind a gateway: what live workers serve). */
static enum MHD_Result get_models(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    sdw_model_list *ml = NULL;
    sdw_error err = {0};
    sdw_status s = js->ops->models(js, &ml, &err);
    if (s) return sdw__http_status(r, s, NULL, err.msg);
    json_t *data = json_array();
    for (int i = 0; i < ml->n; i++) json_array_append_new(data, model_json(&ml->m[i], r->srv));
    sdw__model_list_free(ml);
    return sdw__http_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

static enum MHD_Result get_model(sdw_http_req *r) {
    enum MHD_Result resp;
    sdw_jobs *js = sdw__http_jobs(r, &resp);
    if (!js) return resp;
    sdw_model_list *ml = NULL;
    sdw_error err = {0};
    sdw_status s = js->ops->models(js, &ml, &err);
    if (s) return sdw__http_status(r, s, NULL, err.msg);
    const sdw_served_model *m = NULL;
    for (int i = 0; i < ml->n && !m; i++)
        if (!strcmp(ml->m[i].name, r->param)) m = &ml->m[i];
    if (!m) {
        resp = ml->n == 1 ? sdw__http_error(r, 404, "model",
                                            "the model '%s' does not exist (this server has "
                                            "'%s')", r->param, ml->m[0].name)
                          : sdw__http_error(r, 404, "model", "the model '%s' does not exist",
                                            r->param);
    } else {
        resp = sdw__http_json(r, 200, model_json(m, r->srv));
    }
    sdw__model_list_free(ml);
    return resp;
}

const sdw_route sdw__openai_routes[] = {
    {"POST", "/v1/images/generations", post_generations},
    {"POST", "/v1/images/edits", post_edits},
    {"POST", "/v1/images/variations", post_variations},
    {"GET", "/v1/models", get_models},
    {"GET", "/v1/models/*", get_model},
    {NULL, NULL, NULL},
};
