/* server/server_impl.h — what the API dialects (native.c and its event stream sse.c, openai.c,
 * a1111.c, web.c) share with the core (server.c): the request, the response helpers, the route
 * tables, JSON field readers. Library-internal (sdw__ names). */
#ifndef SDW_SERVER_IMPL_H
#define SDW_SERVER_IMPL_H

#include "server/server.h"


#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <stdatomic.h>

/* Which API a route speaks decides the shape of its errors. */
typedef enum sdw_dialect { SDW_DIALECT_NATIVE, SDW_DIALECT_OPENAI, SDW_DIALECT_A1111 } sdw_dialect;

struct sdw_server {
    sdw_server_params p;
    char *api_key;
    struct MHD_Daemon *daemon;
    int port;
    _Atomic(sdw_engine *) engine; /* NULL while the model loads */
    atomic_bool stopping;
    double started_wall;
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

/* ---- responses (each returns what MHD_queue_response returned) ---- */

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
 * Retry-After, cancelled (shutdown) 503, anything else 500. */
enum MHD_Result sdw__http_status(sdw_http_req *r, sdw_status s, const char *param,
                                 const char *msg);

/* ---- request helpers ---- */

/* A query-string argument, or NULL. */
const char *sdw__http_query(sdw_http_req *r, const char *key);
const char *sdw__http_header(sdw_http_req *r, const char *name);
/* Parses the body as a JSON object. On failure returns NULL after queueing a 400 (or 415) whose
 * result is in *resp. */
json_t *sdw__http_body_json(sdw_http_req *r, enum MHD_Result *resp);
/* The engine, or NULL after queueing a 503 (model still loading) into *resp. */
sdw_engine *sdw__http_engine(sdw_http_req *r, enum MHD_Result *resp);

/* ---- JSON field readers: absent and null leave *out alone and succeed; a wrong type or a value
 * outside [lo, hi] fails with a message naming the field. lenient accepts numbers as strings
 * and integral reals as integers (what loosely typed clients send). ---- */
sdw_status sdw__json_string(json_t *o, const char *key, const char **out, sdw_error *err);
sdw_status sdw__json_int(json_t *o, const char *key, long long lo, long long hi, bool lenient,
                         long long *out, sdw_error *err);
sdw_status sdw__json_number(json_t *o, const char *key, double lo, double hi, bool lenient,
                            double *out, sdw_error *err);
sdw_status sdw__json_bool(json_t *o, const char *key, bool *out, sdw_error *err);

/* This server's own limits (max size, steps, n), the one place they apply, on top of the
 * model's checks (sdw_request_resolve), which the engine applies at submission. The dialects
 * read "steps" as any int >= 0 (0 = the model's default) and leave bounding it to these two. */
sdw_status sdw__check_limits(const sdw_server *s, const sdw_request *req, int n, sdw_error *err);

/* Decodes an image sent by a client: base64 text (a "data:image/...;base64," prefix allowed)
 * or raw bytes (raw = true), PNG, JPEG or WebP (io/image.h). field names it in errors. *out is
 * new (sdw_image_free); zeroed on failure. */
sdw_status sdw__decode_image(const char *data, size_t len, bool raw, const char *field,
                             sdw_image *out, sdw_error *err);

/* An OpenAI-style mask (transparent = edit) as ours (white = repaint): images with alpha give
 * white where alpha is 0, black elsewhere; images without alpha are taken as they are (luma).
 * *out is new. */
void sdw__mask_from_alpha(const sdw_image *in, sdw_image *out);

/* "WxH" -> width, height (OpenAI size; "auto" leaves them 0 = model default). */
sdw_status sdw__parse_size(const char *s, int *w, int *h, sdw_error *err);

/* A new base64 string of a job's image i (PNG with parameters). NULL if not finished. */
char *sdw__job_image_b64(sdw_job *j, int i);

/* ---- the native API's jobs (native.c), which its event stream (sse.c) also serves ---- */
/* The job named by the route's '*' (a new handle), or NULL after queueing a 404 / 503 into
 * *resp. */
sdw_job *sdw__native_find_job(sdw_http_req *r, enum MHD_Result *resp);
/* JSON describing a job: state, progress, result parameters or error. */
json_t *sdw__native_job_json(sdw_http_req *r, sdw_job *j, const sdw_job_status *st);

#endif
