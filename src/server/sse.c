/* server/sse.c — GET /v1/jobs/{id}/stream: Server-Sent Events following one job.
 *
 * Events: `progress` {job_id, state, step, total, percent, elapsed, eta, queue_position},
 * `preview` {job_id, step, total, image: base64 PNG}, then exactly one of `complete` (base64 PNG
 * images + parameters), `error` {message} or `cancelled` {message}, after which the stream ends.
 * A subscriber first gets the job's current state (a late one sees the latest progress and
 * preview, or straight away the final event). Each stream is only a reader of the job's state
 * (engine.h): it never holds up the worker, and a client that goes away only ends its stream —
 * the next write fails, libmicrohttpd closes the connection and frees the stream. A comment line
 * every few seconds finds such clients while a job is quiet. When the server stops, its engine
 * has already ended every job: a stream sends its job's final event (`cancelled`) and ends. */
#include "server/server_impl.h"

#include "core/common.h"
#include "io/base64.h"

#include <string.h>

#define SSE_KEEPALIVE_S 5.0

typedef struct sse {
    sdw_server *srv;
    sdw_http_req req; /* for sdw__native_job_json: only srv is used after the handler returns */
    sdw_sjob *job;
    char *buf; /* pending output */
    size_t len, off, cap;
    uint64_t version, preview_seq;
    int last_step;
    sdw_job_state last_state;
    bool started, done;
    double last_send;
} sse;

static void put(sse *s, const char *event, json_t *data /* stolen */) {
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    size_t need = s->len + strlen(text) + strlen(event) + 32;
    if (need > s->cap) {
        s->cap = SDW_MAX(need, s->cap * 2);
        s->buf = realloc(s->buf, s->cap);
        SDW_ASSERT(s->buf);
    }
    s->len += (size_t)sprintf(s->buf + s->len, "event: %s\ndata: %s\n\n", event, text);
    free(text);
}

/* Appends the events for everything that changed since the last call. */
static void emit(sse *s) {
    sdw_job_status st;
    sdw__sjob_status(s->job, &st);
    s->version = st.version;
    const char *id = sdw__sjob_id(s->job);
    if (!s->started || st.state != s->last_state || st.step != s->last_step) {
        json_t *p = json_pack("{s:s,s:s,s:i,s:i,s:f,s:f,s:f,s:i,s:i}", "job_id", id, "state",
                              sdw_job_state_str(st.state), "step", st.step, "total", st.total,
                              "percent", st.percent, "elapsed", st.elapsed_s, "eta", st.eta_s,
                              "n_images", st.n_images, "images_done", st.n_done);
        if (st.state == SDW_JOB_QUEUED)
            json_object_set_new(p, "queue_position", json_integer(st.queue_position));
        put(s, "progress", p);
        s->last_state = st.state;
        s->last_step = st.step;
    }
    if (st.preview_seq != s->preview_seq && !sdw_job_state_terminal(st.state)) {
        uint8_t *png = NULL;
        size_t len = 0;
        uint64_t seq = 0;
        if (sdw__sjob_preview_png(s->job, &png, &len, &seq, NULL) == SDW_OK) {
            char *b64 = sdw_base64_encode(png, len, NULL);
            put(s, "preview", json_pack("{s:s,s:i,s:i,s:s}", "job_id", id, "step", st.step,
                                        "total", st.total, "image", b64));
            free(b64);
            free(png);
            s->preview_seq = seq;
        }
    }
    s->started = true;
    if (!sdw_job_state_terminal(st.state)) return;
    if (st.state == SDW_JOB_SUCCEEDED) {
        json_t *o = sdw__native_job_json(&s->req, s->job, &st);
        json_t *imgs = json_array();
        for (int i = 0; i < st.n_done; i++) {
            char *b64 = sdw__job_image_b64(s->job, i);
            json_array_append_new(imgs, json_string(b64));
            if (i == 0) json_object_set_new(o, "image", json_string(b64));
            free(b64);
        }
        json_object_set_new(o, "images", imgs);
        put(s, "complete", o);
    } else {
        put(s, st.state == SDW_JOB_FAILED ? "error" : "cancelled",
            json_pack("{s:s,s:s,s:s}", "job_id", id, "state", sdw_job_state_str(st.state),
                      "message", st.error));
    }
    s->done = true;
}

static ssize_t reader(void *cls, uint64_t pos, char *out, size_t max) {
    sse *s = cls;
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
        if (atomic_load(&s->srv->stopping)) {
            emit(s); /* the final event, if the job has ended (it has, once the engine shut down) */
            if (!s->done) return MHD_CONTENT_READER_END_OF_STREAM;
            continue;
        }
        if (!s->started) {
            emit(s);
            continue;
        }
        /* Short waits so a stopping server is noticed within a second. */
        if (sdw__sjob_wait(s->job, s->version, 1.0)) {
            emit(s);
        } else if (sdw_time_now() - s->last_send >= SSE_KEEPALIVE_S) {
            static const char ping[] = ": keepalive\n\n";
            if (s->cap < sizeof ping) {
                s->cap = 256;
                s->buf = realloc(s->buf, s->cap);
                SDW_ASSERT(s->buf);
            }
            memcpy(s->buf, ping, sizeof ping - 1);
            s->len = sizeof ping - 1;
        }
    }
}

static void sse_free(void *cls) {
    sse *s = cls;
    sdw__sjob_release(s->job);
    free(s->buf);
    free(s);
}

static enum MHD_Result get_stream(sdw_http_req *r) {
    enum MHD_Result ret;
    sdw_sjob *job = sdw__native_find_job(r, &ret);
    if (!job) return ret;
    sse *s = sdw_xcalloc(1, sizeof *s);
    s->srv = r->srv;
    s->req = (sdw_http_req){.srv = r->srv, .dialect = r->dialect, .cors_origin = NULL};
    s->job = job;
    s->last_send = sdw_time_now();
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, reader, s, sse_free);
    if (!resp) {
        sse_free(s);
        return MHD_NO;
    }
    return sdw__http_queue_stream(r, resp);
}

const sdw_route sdw__sse_routes[] = {
    {"GET", "/v1/jobs/*/stream", get_stream},
    {NULL, NULL, NULL},
};
