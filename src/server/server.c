/* server/server.c — the libmicrohttpd daemon: one thread per connection (handlers may block on a
 * job, streams block waiting for progress), body collection with a size bound, auth, CORS
 * (preflights and the headers of every answer), routing, the access log, and the response
 * helpers every dialect uses. The dialects live in native.c, openai.c, a1111.c, web.c and
 * metrics.c; this file knows only their route tables. */
#define _GNU_SOURCE
#include "server/server_impl.h"

#include "core/common.h"
#include "io/base64.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

sdw_server_params sdw_server_params_default(void) {
    return (sdw_server_params){.host = "127.0.0.1", .port = 7860,
                               .max_body_bytes = (size_t)64 << 20, .max_size = 2048,
                               .max_steps = 150, .max_n = 4, .max_connections = 512,
                               .max_prompt_bytes = 65536,
                               .max_input_pixels = (size_t)4096 * 4096};
}

/* How long sdw_server_stop lets requests in progress finish before closing their connections. */
#define DRAIN_S 5.0

/* Per-request state between MHD's calls of the access handler, and what the access log says of
 * the answer. */
typedef struct conn_ctx {
    char *body;
    size_t len, cap;
    bool too_large;
    double t0;
    unsigned status;   /* 0 until an answer is queued */
    long long bytes;   /* its body; -1 for a stream */
    char method[16];
    char path[256];
} conn_ctx;

static const sdw_route *const g_tables[] = {sdw__native_routes,    sdw__sse_routes,
                                            sdw__openai_routes,    sdw__a1111_routes,
                                            sdw__web_routes,       sdw__metrics_routes,
                                            sdw__controlnet_routes};

/* The native API's own /v1 routes; every other /v1 path is OpenAI's (its clients probe
 * /v1/chat/completions and the like, and read errors in OpenAI's shape). */
static bool native_v1(const char *path) {
    static const char *const prefixes[] = {"/v1/jobs", "/v1/capabilities", "/v1/stats",
                                            "/v1/workers"};
    for (size_t i = 0; i < SDW_ARRAY_LEN(prefixes); i++) {
        size_t n = strlen(prefixes[i]);
        if (!strncmp(path, prefixes[i], n) && (path[n] == 0 || path[n] == '/')) return true;
    }
    return false;
}

static sdw_dialect dialect_of(const char *path) {
    if (!strncmp(path, "/sdapi/", 7) || !strncmp(path, "/controlnet/", 12))
        return SDW_DIALECT_A1111; /* sd-webui-controlnet's routes are A1111's extension */
    if (!strncmp(path, "/v1/", 4) && !native_v1(path)) return SDW_DIALECT_OPENAI;
    return SDW_DIALECT_NATIVE;
}

/* ---- CORS ---- */

/* The Access-Control-Allow-Origin for a request from origin (NULL: not a cross-origin browser
 * request), or NULL when that origin may not call us. */
static const char *cors_allowed(const sdw_server *s, const char *origin) {
    if (!origin) return NULL;
    for (int i = 0; i < s->p.n_cors_origins; i++) {
        const char *o = s->p.cors_origins[i];
        if (!strcmp(o, "*")) return "*";
        if (!strcasecmp(o, origin)) return origin;
    }
    return NULL;
}

void sdw__http_add_common_headers(sdw_http_req *r, struct MHD_Response *resp) {
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->cors_origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "Location, Retry-After");
    }
    /* The answer depends on the Origin whenever CORS is configured: caches must key on it. */
    if (r->srv->p.n_cors_origins > 0) MHD_add_response_header(resp, "Vary", "Origin");
}

/* Records an answer for the access log and the metrics. */
static void note_answer(sdw_http_req *r, unsigned status, long long bytes) {
    conn_ctx *c = r->log;
    if (c) {
        c->status = status;
        c->bytes = bytes;
    }
    if (status >= 100 && status < 600) atomic_fetch_add(&r->srv->http_by_class[status / 100], 1);
}

/* ---- responses ---- */

static const char *reason(unsigned status) {
    switch (status) {
    case 400: return "invalid_request";
    case 401: return "unauthorized";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 409: return "conflict";
    case 413: return "payload_too_large";
    case 415: return "unsupported_media_type";
    case 429: return "queue_full";
    case 503: return "unavailable";
    default: return status >= 500 ? "internal_error" : "error";
    }
}

enum MHD_Result sdw__http_send(sdw_http_req *r, unsigned status, const char *content_type,
                               const void *data, size_t len, const char *const *headers) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    if (content_type) MHD_add_response_header(resp, "Content-Type", content_type);
    sdw__http_add_common_headers(r, resp);
    for (; headers && headers[0]; headers += 2) MHD_add_response_header(resp, headers[0], headers[1]);
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    note_answer(r, status, (long long)len);
    SDW_INFO("%s %s -> %u (%zu bytes)", r->method, r->path, status, len);
    return ret;
}

enum MHD_Result sdw__http_queue_stream(sdw_http_req *r, struct MHD_Response *resp) {
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* proxies: do not buffer */
    sdw__http_add_common_headers(r, resp);
    enum MHD_Result ret = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    note_answer(r, 200, -1);
    SDW_INFO("%s %s -> 200 (event stream)", r->method, r->path);
    return ret;
}

static enum MHD_Result send_json_h(sdw_http_req *r, unsigned status, json_t *body,
                                   const char *const *headers) {
    char *s = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(body);
    if (!s) return MHD_NO;
    enum MHD_Result ret = sdw__http_send(r, status, "application/json", s, strlen(s), headers);
    free(s);
    return ret;
}

enum MHD_Result sdw__http_json(sdw_http_req *r, unsigned status, json_t *body) {
    return send_json_h(r, status, body, NULL);
}

static enum MHD_Result error_h(sdw_http_req *r, unsigned status, const char *param,
                               const char *const *headers, const char *msg) {
    json_t *body;
    if (r->dialect == SDW_DIALECT_OPENAI) {
        const char *type = status == 401   ? "authentication_error"
                           : status == 429 ? "rate_limit_error"
                           : status >= 500 ? "server_error"
                                           : "invalid_request_error";
        body = json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message", msg, "type", type, "param",
                         param, "code", status == 401 ? "invalid_api_key" : NULL);
    } else if (r->dialect == SDW_DIALECT_A1111) {
        /* A1111 (FastAPI) answers {"error": <exception name>, "detail": <message>, ...}. */
        body = json_pack("{s:s,s:s,s:s,s:s}", "error", reason(status), "detail", msg, "body", "",
                         "errors", msg);
    } else {
        body = json_pack("{s:{s:s,s:s,s:s?}}", "error", "code", reason(status), "message", msg,
                         "param", param);
    }
    return send_json_h(r, status, body, headers);
}

enum MHD_Result sdw__http_error(sdw_http_req *r, unsigned status, const char *param,
                                const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return error_h(r, status, param, NULL, msg);
}

enum MHD_Result sdw__http_status(sdw_http_req *r, sdw_status s, const char *param,
                                 const char *msg) {
    switch (s) {
    case SDW_E_INVALID_ARG:
    case SDW_E_UNSUPPORTED:
    case SDW_E_FORMAT:
    case SDW_E_SHAPE: return error_h(r, 400, param, NULL, msg);
    case SDW_E_NOT_FOUND: return error_h(r, 404, param, NULL, msg);
    case SDW_E_BUSY:
    case SDW_E_UNAVAILABLE: {
        char secs[16];
        sdw_jobs *js = atomic_load(&r->srv->jobs);
        snprintf(secs, sizeof secs, "%d", js->ops->retry_after(js));
        const char *h[] = {"Retry-After", secs, NULL};
        return error_h(r, s == SDW_E_BUSY ? 429 : 503, param, h, msg);
    }
    case SDW_CANCELLED: return error_h(r, 503, param, NULL, msg);
    default: return error_h(r, 500, param, NULL, msg);
    }
}

/* ---- request helpers ---- */

const char *sdw__http_query(sdw_http_req *r, const char *key) {
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *sdw__http_header(sdw_http_req *r, const char *name) {
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

json_t *sdw__http_body_json(sdw_http_req *r, enum MHD_Result *resp) {
    const char *ct = sdw__http_header(r, "Content-Type");
    /* curl -d sends application/x-www-form-urlencoded unless told otherwise: take it as JSON. */
    if (ct && strncasecmp(ct, "application/json", 16) && strncasecmp(ct, "text/plain", 10) &&
        strncasecmp(ct, "application/x-www-form-urlencoded", 33)) {
        *resp = sdw__http_error(r, 415, NULL,
                                "the body must be JSON (Content-Type: application/json), not %s",
                                ct);
        return NULL;
    }
    if (r->body_len == 0) {
        *resp = sdw__http_error(r, 400, NULL, "the request needs a JSON body");
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        *resp = sdw__http_error(r, 400, NULL, "malformed JSON at line %d, column %d: %s", je.line,
                                je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *resp = sdw__http_error(r, 400, NULL, "the JSON body must be an object {...}");
        return NULL;
    }
    return j;
}

sdw_jobs *sdw__http_jobs(sdw_http_req *r, enum MHD_Result *resp) {
    sdw_jobs *js = atomic_load(&r->srv->jobs);
    int retry = 1;
    char why[256];
    if (js->ops->ready(js, &retry, why, sizeof why)) return js;
    char secs[16];
    snprintf(secs, sizeof secs, "%d", retry);
    const char *h[] = {"Retry-After", secs, NULL};
    *resp = error_h(r, 503, NULL, h, why);
    return NULL;
}

const sdw_served_model *sdw__http_model(sdw_http_req *r, sdw_jobs *js, const char *name,
                                        const char *param, sdw_model_list **ml,
                                        enum MHD_Result *resp) {
    sdw_error err = {0};
    *ml = NULL;
    sdw_status s = js->ops->models(js, ml, &err);
    if (s) {
        *resp = sdw__http_status(r, s, NULL, err.msg);
        return NULL;
    }
    const sdw_served_model *m = sdw__models_pick(*ml, name, &err);
    if (!m) {
        *resp = sdw__http_status(r, err.code, name && *name ? param : NULL, err.msg);
        sdw__model_list_free(*ml);
        *ml = NULL;
    }
    return m;
}

/* ---- auth ---- */

static bool same(const char *a, const char *b) {
    /* Constant time in the length of the secret, so the comparison leaks nothing by timing. */
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < lb; i++) d |= (unsigned char)(i < la ? a[i] : 0) ^ (unsigned char)b[i];
    return d == 0;
}

static bool authorized(sdw_http_req *r) {
    const char *key = r->srv->api_key;
    if (!key) return true;
    const char *h = sdw__http_header(r, "Authorization");
    if (!h) return false;
    if (!strncasecmp(h, "Bearer ", 7)) return same(h + 7, key);
    if (!strncasecmp(h, "Basic ", 6)) {
        /* The web page: the browser's own login prompt sends "user:KEY" (any user name), and the
         * browser then adds it to the page's fetch and EventSource requests by itself. */
        uint8_t *dec = NULL;
        size_t n = 0;
        if (sdw_base64_decode(h + 6, strlen(h + 6), &dec, &n, NULL) != SDW_OK) return false;
        const char *colon = memchr(dec, ':', n);
        bool ok = colon && same(colon + 1, key);
        free(dec);
        return ok;
    }
    return false;
}

static enum MHD_Result unauthorized(sdw_http_req *r) {
    bool page = !strcmp(r->path, "/") || !strcmp(r->path, "/index.html");
    const char *h[] = {"WWW-Authenticate",
                       page ? "Basic realm=\"sdworker\", charset=\"UTF-8\"" : "Bearer realm=\"sdworker\"",
                       NULL};
    const char *have = sdw__http_header(r, "Authorization");
    return error_h(r, 401, NULL, h,
                   have ? "invalid API key (Authorization: Bearer KEY)"
                        : "this server needs an API key: send Authorization: Bearer KEY");
}

/* ---- routing ---- */

/* Matches path against pattern; a '*' takes one non-empty segment into param. */
static bool match(const char *pattern, const char *path, char *param) {
    while (*pattern && *path) {
        if (*pattern == '*') {
            size_t n = strcspn(path, "/");
            if (n == 0 || n >= SDW_ROUTE_PARAM_MAX) return false;
            memcpy(param, path, n);
            param[n] = 0;
            path += n;
            pattern++;
            continue;
        }
        if (*pattern++ != *path++) return false;
    }
    return !*pattern && !*path;
}

/* The methods the routes take on path, joined into allow ("" when no route matches). */
static void allowed_methods(const char *path, char *allow, size_t cap) {
    char param[SDW_ROUTE_PARAM_MAX];
    allow[0] = 0;
    for (size_t t = 0; t < SDW_ARRAY_LEN(g_tables); t++)
        for (const sdw_route *rt = g_tables[t]; rt->method; rt++) {
            if (!match(rt->pattern, path, param)) continue;
            size_t n = strlen(allow);
            snprintf(allow + n, cap - n, "%s%s", n ? ", " : "", rt->method);
        }
}

/* OPTIONS: a CORS preflight (answered without auth: browsers send no credentials with it), or
 * a plain question about the methods a path takes. */
static enum MHD_Result preflight(sdw_http_req *r) {
    char allow[128];
    allowed_methods(r->path, allow, sizeof allow);
    if (!*allow) return sdw__http_error(r, 404, NULL, "no such endpoint: %s", r->path);
    size_t n = strlen(allow);
    snprintf(allow + n, sizeof allow - n, ", OPTIONS");
    const char *want = sdw__http_header(r, "Access-Control-Request-Headers");
    const char *h[] = {"Allow", allow, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    if (r->cors_origin) {
        h[2] = "Access-Control-Allow-Methods";
        h[3] = allow;
        h[4] = "Access-Control-Allow-Headers";
        h[5] = want && *want ? want : "Authorization, Content-Type";
        h[6] = "Access-Control-Max-Age";
        h[7] = "600";
    }
    return sdw__http_send(r, 204, NULL, "", 0, h);
}

static enum MHD_Result dispatch(sdw_http_req *r) {
    char allow[128] = "";
    for (size_t t = 0; t < SDW_ARRAY_LEN(g_tables); t++)
        for (const sdw_route *rt = g_tables[t]; rt->method; rt++) {
            if (!match(rt->pattern, r->path, r->param)) continue;
            if (!strcmp(rt->method, r->method)) return rt->fn(r);
            size_t n = strlen(allow);
            snprintf(allow + n, sizeof allow - n, "%s%s", n ? ", " : "", rt->method);
        }
    if (*allow) {
        const char *h[] = {"Allow", allow, NULL};
        char msg[256];
        snprintf(msg, sizeof msg, "%s is not allowed on %s (allowed: %s)", r->method, r->path,
                 allow);
        return error_h(r, 405, NULL, h, msg);
    }
    return sdw__http_error(r, 404, NULL, "no such endpoint: %s %s", r->method, r->path);
}

/* Routes anyone may call without the API key: liveness, and what a browser fetches on its own. */
static bool public_route(const char *path) {
    return !strcmp(path, "/health") || !strcmp(path, "/favicon.ico") ||
           !strcmp(path, "/favicon.svg");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    sdw_server *srv = cls;
    conn_ctx *c = *con_cls;
    sdw_http_req r = {.conn = conn, .srv = srv, .path = url, .body = "",
                      .method = strcmp(method, "HEAD") ? method : "GET", .dialect = dialect_of(url),
                      .log = c};
    r.cors_origin = cors_allowed(srv, sdw__http_header(&r, "Origin"));
    if (!c) { /* first call: headers only */
        c = sdw_xcalloc(1, sizeof *c);
        c->t0 = sdw_time_now();
        c->bytes = -1;
        snprintf(c->method, sizeof c->method, "%s", method);
        snprintf(c->path, sizeof c->path, "%s", url);
        *con_cls = c;
        r.log = c;
        atomic_fetch_add(&srv->in_flight, 1);
        if (!strcmp(method, "OPTIONS")) return preflight(&r);
        if (!public_route(url) && !authorized(&r)) return unauthorized(&r);
        const char *cl = sdw__http_header(&r, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > srv->p.max_body_bytes)
            return sdw__http_error(&r, 413, NULL, "the body (%s bytes) exceeds the limit of %zu bytes",
                                   cl, srv->p.max_body_bytes);
        return MHD_YES;
    }
    if (*upload_size) {
        size_t need;
        if (c->too_large || !sdw_size_add(c->len, *upload_size, &need) ||
            need > srv->p.max_body_bytes) {
            c->too_large = true; /* keep reading (and dropping) so the 413 reaches the client */
        } else {
            if (need + 1 > c->cap) {
                size_t cap = c->cap ? c->cap : 16384;
                while (cap < need + 1) cap *= 2;
                char *nb = realloc(c->body, cap);
                if (!nb) {
                    c->too_large = true;
                    *upload_size = 0;
                    return MHD_YES;
                }
                c->body = nb;
                c->cap = cap;
            }
            memcpy(c->body + c->len, upload, *upload_size);
            c->len = need;
            c->body[c->len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->too_large)
        return sdw__http_error(&r, 413, NULL, "the body exceeds the limit of %zu bytes",
                               srv->p.max_body_bytes);
    if (c->body) {
        r.body = c->body;
        r.body_len = c->len;
    }
    return dispatch(&r);
}

/* One JSON line per request: when, who, what, the answer and how long it took. The path is the
 * URL's (no query string: query values may carry ids); no header is logged (Authorization). */
static void access_log(sdw_server *srv, struct MHD_Connection *conn, const conn_ctx *c,
                       enum MHD_RequestTerminationCode toe) {
    char addr[INET6_ADDRSTRLEN] = "";
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, sizeof addr);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof addr);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:f,s:b}", "time", when, "remote", addr, "method",
                          c->method, "path", c->path, "status", (int)c->status, "ms",
                          (sdw_time_now() - c->t0) * 1000.0, "complete",
                          toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    if (c->bytes >= 0) json_object_set_new(o, "bytes", json_integer(c->bytes));
    char *line = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!line) return;
    pthread_mutex_lock(&srv->log_mu);
    fprintf(srv->p.access_log, "%s\n", line);
    fflush(srv->p.access_log);
    pthread_mutex_unlock(&srv->log_mu);
    free(line);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    sdw_server *srv = cls;
    conn_ctx *c = *con_cls;
    if (!c) return;
    if (srv->p.access_log) access_log(srv, conn, c, toe);
    atomic_fetch_sub(&srv->in_flight, 1);
    free(c->body);
    free(c);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    SDW_DEBUG("microhttpd: %s", msg);
}

/* ---- lifecycle ---- */

sdw_status sdw_server_start(const sdw_server_params *params, sdw_server **out, sdw_error *err) {
    sdw_server_params p = params ? *params : sdw_server_params_default();
    sdw_server_params d = sdw_server_params_default();
    if (!p.host || !*p.host) p.host = d.host;
    if (p.port < 0 || p.port > 65535)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "port %d is out of range [0, 65535]", p.port);
    if (!p.max_body_bytes) p.max_body_bytes = d.max_body_bytes;
    if (p.max_size <= 0) p.max_size = d.max_size;
    if (p.max_steps <= 0) p.max_steps = d.max_steps;
    if (p.max_n <= 0) p.max_n = d.max_n;
    if (p.max_connections <= 0) p.max_connections = d.max_connections;
    if (!p.max_prompt_bytes) p.max_prompt_bytes = d.max_prompt_bytes;
    if (!p.max_input_pixels) p.max_input_pixels = d.max_input_pixels;
    for (int i = 0; i < p.n_cors_origins; i++) {
        const char *o = p.cors_origins[i];
        if (!o || !*o)
            return sdw_error_set(err, SDW_E_INVALID_ARG, "an empty CORS origin");
        if (!strcmp(o, "*") && p.api_key && *p.api_key)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "CORS origin '*' with an API key would let any web page that "
                                 "learns the key use this server: name the origins");
        if (strcmp(o, "*") && strncmp(o, "http://", 7) && strncmp(o, "https://", 8))
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "CORS origin '%s' must be scheme://host[:port] (as browsers send "
                                 "it) or '*'",
                                 o);
    }

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", p.port);
    int rc = getaddrinfo(p.host, port, &hints, &ai);
    if (rc != 0)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "cannot use host '%s': %s", p.host,
                             gai_strerror(rc));

    sdw_server *s = sdw_xcalloc(1, sizeof *s);
    s->p = p;
    s->api_key = p.api_key && *p.api_key ? sdw_xstrdup(p.api_key) : NULL;
    s->p.api_key = s->api_key;
    s->p.host = NULL; /* not kept: the caller's string */
    if (p.n_cors_origins > 0) {
        s->cors = sdw_xcalloc((size_t)p.n_cors_origins, sizeof *s->cors);
        for (int i = 0; i < p.n_cors_origins; i++) s->cors[i] = sdw_xstrdup(p.cors_origins[i]);
    }
    s->p.cors_origins = (const char *const *)s->cors;
    s->local = sdw__jobs_local_create();
    atomic_init(&s->jobs, s->local);
    atomic_init(&s->stopping, false);
    atomic_init(&s->load_s, 0.0);
    atomic_init(&s->in_flight, 0);
    for (int i = 0; i < 6; i++) atomic_init(&s->http_by_class[i], 0);
    pthread_mutex_init(&s->log_mu, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->started_wall = (double)ts.tv_sec;

    /* poll(), not select(): select cannot watch descriptors above FD_SETSIZE (1024). ITC: stop
     * quiesces the daemon (no new connections) while requests in progress finish. */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC |
                     (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)p.max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        s->local->ops->destroy(s->local);
        for (int i = 0; i < p.n_cors_origins; i++) free(s->cors[i]);
        free(s->cors);
        pthread_mutex_destroy(&s->log_mu);
        free(s->api_key);
        free(s);
        return sdw_error_set(err, SDW_E_IO, "cannot listen on %s port %d (in use? not an address "
                                            "of this machine?)", params && params->host ? params->host : d.host, p.port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : p.port;
    *out = s;
    return SDW_OK;
}

int sdw_server_port(const sdw_server *s) { return s->port; }

void sdw_server_set_engine(sdw_server *s, sdw_engine *e) { sdw__jobs_local_set_engine(s->local, e); }

void sdw_server_set_gateway(sdw_server *s, sdw_pool_gateway *g) {
    if (s->gateway) return; /* once */
    s->gateway = sdw__jobs_pool_create(g);
    atomic_store(&s->jobs, s->gateway);
}

void sdw_server_set_load_seconds(sdw_server *s, double seconds) {
    atomic_store(&s->load_s, seconds);
}

void sdw_server_stop(sdw_server *s) {
    if (!s) return;
    atomic_store(&s->stopping, true);
    /* No new connections; the requests in progress get DRAIN_S to finish sending their answers
     * (the engine has ended their jobs: 503s, final events), then every connection closes. */
    MHD_socket listen = MHD_quiesce_daemon(s->daemon);
    if (listen != MHD_INVALID_SOCKET) close(listen);
    const double t0 = sdw_time_now();
    while (atomic_load(&s->in_flight) > 0 && sdw_time_now() - t0 < DRAIN_S) {
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    MHD_stop_daemon(s->daemon);
    s->local->ops->destroy(s->local);
    if (s->gateway) s->gateway->ops->destroy(s->gateway);
    for (int i = 0; i < s->p.n_cors_origins; i++) free(s->cors[i]);
    free(s->cors);
    pthread_mutex_destroy(&s->log_mu);
    free(s->api_key);
    free(s);
}
