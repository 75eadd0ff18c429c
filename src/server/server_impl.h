/* server/server_impl.h — what the API dialects (native.c and its event stream sse.c, openai.c,
 * a1111.c, web.c) share with the core (server.c): the request, the response helpers, the route
 * tables, JSON field readers. Library-internal (sdw__ names). */
#ifndef SDW_SERVER_IMPL_H
#define SDW_SERVER_IMPL_H

#include "server/jobs.h"
#include "server/server.h"

#include "io/image_encode.h"

#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

/* Which API a route speaks decides the shape of its errors. */
typedef enum sdw_dialect { SDW_DIALECT_NATIVE, SDW_DIALECT_OPENAI, SDW_DIALECT_A1111 } sdw_dialect;

struct sdw_server {
    sdw_server_params p;
    char *api_key;
    char **cors; /* p.cors_origins' copies (p.cors_origins points here) */
    struct MHD_Daemon *daemon;
    int port;
    sdw_jobs *local;              /* the engine's service (its engine NULL while loading) */
    sdw_jobs *gateway;            /* a pool gateway's service (sdw_server_set_gateway), or NULL */
    _Atomic(sdw_jobs *) jobs;     /* what runs the jobs: local or gateway */
    atomic_bool stopping;
    double started_wall;
    _Atomic double load_s;          /* the model's load time; 0 = not known */
    atomic_int in_flight;           /* requests begun and not completed (stop drains them) */
    atomic_ullong http_by_class[6]; /* responses by status class: [2] = 2xx ... [5] = 5xx */
    pthread_mutex_t log_mu;         /* one access log line at a time */
};

#define SDW_ROUTE_PARAM_MAX 64

typedef struct sdw_http_req {
    struct MHD_Connection *conn;
    sdw_server *srv;
    const char *method; /* HEAD arrives as GET */
    const char *path;
    char param[SDW_ROUTE_PARAM_MAX]; /* the '*' segment of the route pattern, if any */
    const char *body;                /* NUL-terminated; "" if none */
    size_t body_len;
    sdw_dialect dialect;
    const char *cors_origin; /* the Access-Control-Allow-Origin to answer, or NULL */
    void *log;               /* the connection's record of the response (server.c) */
} sdw_http_req;

typedef enum MHD_Result (*sdw_route_fn)(sdw_http_req *r);
typedef struct sdw_route {
    const char *method;
    const char *pattern; /* literal path; one '*' matches a single non-empty segment */
    sdw_route_fn fn;
} sdw_route;

/* Route tables, each ended by a {NULL} entry. */
extern const sdw_route sdw__native_routes[];
extern const sdw_route sdw__sse_routes[]; /* GET /v1/jobs/{id}/stream */
extern const sdw_route sdw__openai_routes[];
extern const sdw_route sdw__a1111_routes[];
extern const sdw_route sdw__web_routes[];
extern const sdw_route sdw__metrics_routes[]; /* GET /metrics */
extern const sdw_route sdw__controlnet_routes[]; /* sd-webui-controlnet's GET /controlnet/... */

/* ---- responses (each returns what MHD_queue_response returned) ---- */

/* Adds the headers every response carries (Cache-Control, CORS) to resp. */
void sdw__http_add_common_headers(sdw_http_req *r, struct MHD_Response *resp);
/* Queues resp (a 200 stream: Server-Sent Events) with the common headers and records it. */
enum MHD_Result sdw__http_queue_stream(sdw_http_req *r, struct MHD_Response *resp);

/* headers: NULL or a NULL-terminated list name, value, name, value ... */
enum MHD_Result sdw__http_send(sdw_http_req *r, unsigned status, const char *content_type,
                               const void *data, size_t len, const char *const *headers);
/* Sends body (reference stolen) as JSON. */
enum MHD_Result sdw__http_json(sdw_http_req *r, unsigned status, json_t *body);
/* An error in the request's dialect: native {"error":{"code","message"}}, OpenAI
 * {"error":{"message","type","param","code"}}, A1111 {"error","detail"}. param may be NULL. */
enum MHD_Result sdw__http_error(sdw_http_req *r, unsigned status, const char *param,
                                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Maps a status to HTTP: invalid/unsupported/format 400, not found 404, busy 429 with
 * Retry-After, cancelled (shutdown) 503, unavailable (Redis away, no worker) 503 with
 * Retry-After, anything else 500. */
enum MHD_Result sdw__http_status(sdw_http_req *r, sdw_status s, const char *param,
                                 const char *msg);

/* ---- request helpers ---- */

/* A query-string argument, or NULL. */
const char *sdw__http_query(sdw_http_req *r, const char *key);
const char *sdw__http_header(sdw_http_req *r, const char *name);
/* Parses the body as a JSON object. On failure returns NULL after queueing a 400 (or 415) whose
 * result is in *resp. */
json_t *sdw__http_body_json(sdw_http_req *r, enum MHD_Result *resp);
/* The job service, or NULL after queueing a 503 (model still loading) into *resp. */
sdw_jobs *sdw__http_jobs(sdw_http_req *r, enum MHD_Result *resp);
/* The service's models (*ml, new: sdw__model_list_free) and the one named name (NULL = the
 * only one served), or NULL after queueing the answer (503 unavailable, 404 unknown model, 400
 * several and none named) into *resp; *ml is then NULL. param: the field naming the model. */
const sdw_served_model *sdw__http_model(sdw_http_req *r, sdw_jobs *js, const char *name,
                                        const char *param, sdw_model_list **ml,
                                        enum MHD_Result *resp);

/* ---- JSON field readers: absent and null leave *out alone and succeed; a wrong type or a value
 * outside [lo, hi] fails with a message naming the field. lenient accepts numbers as strings
 * and integral reals as integers (what loosely typed clients send). ---- */
sdw_status sdw__json_string(json_t *o, const char *key, const char **out, sdw_error *err);
sdw_status sdw__json_int(json_t *o, const char *key, long long lo, long long hi, bool lenient,
                         long long *out, sdw_error *err);
sdw_status sdw__json_number(json_t *o, const char *key, double lo, double hi, bool lenient,
                            double *out, sdw_error *err);
sdw_status sdw__json_bool(json_t *o, const char *key, bool *out, sdw_error *err);

/* This server's own limits (max size, steps, n, prompt length), the one place they apply, on
 * top of the model's checks (sdw_request_resolve), which the engine applies at submission. A
 * size out of range is reported with the range this server and the model (caps) accept
 * together. The dialects read "steps" as any int >= 0 (0 = the model's default) and leave
 * bounding it to these two. */
sdw_status sdw__check_limits(const sdw_server_params *p, const sdw_capabilities *caps,
                             const sdw_request *req, int n, sdw_error *err);
/* The hires fix's second size and steps (sdw_request.hires, as the model resolves them)
 * against this server's --max-size and --max-steps: a request that enlarges past them is
 * refused like one that asks for that size. A request the model refuses passes here (the
 * engine's resolve names its fault). */
sdw_status sdw__check_hires_limits(const sdw_server_params *p, const sdw_capabilities *caps,
                                   const sdw_request *req, sdw_error *err);
/* A text field (prompt, negative prompt) against p->max_prompt_bytes; field names it. */
sdw_status sdw__check_text(const sdw_server_params *p, const char *field, const char *text,
                           sdw_error *err);

/* The pixel size a PNG, JPEG or WebP file declares in its header, without decoding it; false
 * when the bytes are none of those (or too short to tell). */
bool sdw__image_header_size(const uint8_t *data, size_t len, int *w, int *h);

/* Decodes an image sent by a client: base64 text (a "data:image/...;base64," prefix allowed)
 * or raw bytes (raw = true), PNG, JPEG or WebP (io/image.h). Its declared size is checked
 * against p->max_input_pixels before anything is decoded. field names it in errors. *out is
 * new (sdw_image_free); zeroed on failure. */
sdw_status sdw__decode_image(const sdw_server_params *p, const char *data, size_t len, bool raw,
                             const char *field, sdw_image *out, sdw_error *err);

/* An OpenAI-style mask (transparent = edit) as ours (white = repaint): images with alpha give
 * white where alpha is 0, black elsewhere; images without alpha are taken as they are (luma).
 * *out is new. */
void sdw__mask_from_alpha(const sdw_image *in, sdw_image *out);

/* "WxH" -> width, height (OpenAI size; "auto" leaves them 0 = model default). */
sdw_status sdw__parse_size(const char *s, int *w, int *h, sdw_error *err);


/* A new base64 string of a job's image i (PNG with parameters). NULL if not finished. */
char *sdw__job_image_b64(sdw_sjob *j, int i);

/* ---- request parsers: a dialect's body -> sdw_request (what the fuzz targets call) ---- */

/* What a parsed request owns beyond its body: decoded images and family options (names
 * borrowed from the body). Free with sdw__req_images_free. */
typedef struct sdw_req_images {
    sdw_image init, mask;
    sdw_param params[16];
    sdw_lora_ref loras[16]; /* the request's LoRAs (names borrowed from the body) */
    sdw_control controls[SDW_MAX_CONTROLS];       /* the request's ControlNets (controlnet.c) */
    sdw_image control_images[SDW_MAX_CONTROLS];   /* their images, decoded and fitted */
} sdw_req_images;
void sdw__req_images_free(sdw_req_images *im);

/* The native API's POST /v1/jobs body into req and *n (images per request); caps: the loaded
 * model's (LoRA support). On failure *param names the field at fault (or NULL). */
sdw_status sdw__native_parse(const sdw_server_params *p, const sdw_capabilities *caps,
                             json_t *body, sdw_request *req, int *n, sdw_req_images *im,
                             const char **param, sdw_error *err);

/* OpenAI's options besides the request. */
typedef struct sdw_openai_opts {
    int n;
    bool url;    /* response_format "url": links to /v1/jobs/{id}/image.png instead of base64 */
    sdw_image_format format;
    int quality; /* output_compression for jpeg/webp */
    bool stream; /* stream: true: Server-Sent Events (partial images, then completed) */
    int partial_images; /* 0-3 */
} sdw_openai_opts;
/* POST /v1/images/generations' JSON body, checked against this server's limits (and the sizes
 * caps, the loaded model's, allow). req's strings point into body. */
sdw_status sdw__openai_parse_generation(const sdw_server_params *p,
                                        const sdw_capabilities *caps, json_t *body,
                                        sdw_request *req, sdw_openai_opts *o, const char **param,
                                        sdw_error *err);
/* POST /v1/images/edits' (variation = false) or /v1/images/variations' multipart form.
 * content_type: the request's header. req's strings are in *texts (free with
 * sdw__openai_texts_free). */
typedef struct sdw_openai_texts {
    char *prompt, *size, *rf, *of, *neg, *sampler, *stream;
} sdw_openai_texts;
void sdw__openai_texts_free(sdw_openai_texts *t);
sdw_status sdw__openai_parse_form(const sdw_server_params *p, const sdw_capabilities *caps,
                                  const char *content_type, const char *body, size_t len,
                                  bool variation, sdw_request *req, sdw_openai_opts *o,
                                  sdw_openai_texts *texts, sdw_req_images *im, const char **param,
                                  sdw_error *err);

/* AUTOMATIC1111's txt2img / img2img body (img2img: init_images, mask, denoising_strength).
 * model_name: the loaded checkpoint's short name (override_settings.sd_model_checkpoint must
 * name it). *warnings gets a new JSON array of the fields that were ignored (or NULL). A field
 * naming a model this worker does not serve is SDW_E_NOT_FOUND. */
sdw_status sdw__a1111_parse(const sdw_server_params *p, const sdw_capabilities *caps,
                            const char *model_name, json_t *body, bool img2img, sdw_request *req,
                            int *n, sdw_req_images *im, json_t **warnings, const char **param,
                            sdw_error *err);

/* ---- ControlNets in the requests (controlnet.c): names only, never paths; the images decoded
 * last into im (sdw__req_images_free), fitted to the output size as each unit's resize mode
 * says. On failure err names the field. ---- */

/* The native body's "controlnets" ([{"model", "image", "scale", "start", "end",
 * "resize_mode"}]) and "control_guess_mode" into req. */
sdw_status sdw__controls_native(const sdw_server_params *p, const sdw_capabilities *caps,
                                json_t *body, sdw_request *req, sdw_req_images *im,
                                sdw_error *err);
/* AUTOMATIC1111's alwayson_scripts.controlnet.args (sd-webui-controlnet units: enabled, module
 * "none" only, model, weight, image / input_image, resize_mode, guidance_start / _end,
 * control_mode Balanced only) into req; img2img units without an image take the init image
 * (read it first). Other alwayson scripts and unit fields without effect here go to warnings. */
sdw_status sdw__controls_a1111(const sdw_server_params *p, const sdw_capabilities *caps,
                               json_t *body, bool img2img, sdw_request *req, sdw_req_images *im,
                               json_t *warnings, sdw_error *err);

/* A1111's parse_generation_parameters over an infotext (a PNG's "parameters"): {"Prompt",
 * "Negative prompt", "Steps", "Size-1", "Size-2", ...} as strings. A new object. */
json_t *sdw__a1111_parse_infotext(const char *text);

/* ---- the native API's jobs (native.c), which its event stream (sse.c) also serves ---- */
/* The job named by the route's '*' (a new handle), or NULL after queueing a 404 / 503 into
 * *resp. */
sdw_sjob *sdw__native_find_job(sdw_http_req *r, enum MHD_Result *resp);
/* JSON describing a job: state, progress, result parameters or error. */
json_t *sdw__native_job_json(sdw_http_req *r, sdw_sjob *j, const sdw_job_status *st);

#endif
