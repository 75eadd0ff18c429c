/* server/jobs_pool.c — the job service of `sdw serve --redis`: a pool gateway (pool/gateway.h).
 * The models are what live workers serve (their registry entries' capabilities); a job handle
 * reads its job's hash in Redis on every status call, follows its events stream to wait, and
 * fetches its images once (kept in the handle while it lives). Nothing about a job is kept in
 * the process between requests: any gateway answers for any job. */
#include "server/jobs.h"

#include "core/common.h"
#include "io/png.h"
#include "pool/gateway.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

typedef struct pool_jobs {
    sdw_jobs base;
    sdw_pool_gateway *g;
} pool_jobs;

static sdw_pool_gateway *G(sdw_jobs *s) { return ((pool_jobs *)s)->g; }

/* ---- job handles ---- */

typedef struct pool_job {
    sdw_sjob base;
    sdw_pool_gateway *g;
    char id[SDW_POOL_JOB_ID_LEN + 1];
    sdw_pool_job_fields f;           /* the last read (req_json: the first read's) */
    char last_event[SDW_POOL_ID_MAX];
    sdw_pool_request summary;        /* req_json parsed (images without pixels) */
    sdw_request fallback;            /* when the summary does not parse */
    int n;                           /* the arrays' size: f.n */
    uint8_t **png;
    size_t *png_len;
    sdw_image *pixels;
    sdw_result_info *info;
    char **infotext;
    bool *have_info;
} pool_job;

static pool_job *PJ(sdw_sjob *j) { return (pool_job *)j; }
static const char *pj_id(sdw_sjob *j) { return PJ(j)->id; }
static const char *pj_model(sdw_sjob *j) { return PJ(j)->f.model; }

/* Reads the job's hash again; keeps the last state when the read fails or the job expired. */
static void refresh(pool_job *j) {
    sdw_pool_job_fields f;
    if (sdw_pool_gateway_read(j->g, j->id, &f, NULL) != SDW_OK) return;
    free(f.req_json);
    if (!f.exists) return;
    f.req_json = j->f.req_json;
    j->f = f;
}

static void pj_status(sdw_sjob *js, sdw_job_status *o) {
    pool_job *j = PJ(js);
    refresh(j);
    const sdw_pool_job_fields *f = &j->f;
    *o = (sdw_job_status){.state = f->state, .version = f->version,
                          .preview_seq = f->preview_seq,
                          .queue_position = f->state == SDW_JOB_QUEUED ? f->queue_position : -1,
                          .n_images = f->n, .n_done = f->n_done, .step = f->step,
                          .total = f->total, .created = f->created,
                          .cancel_requested = f->cancel_requested,
                          .interrupted = f->interrupted};
    o->percent = f->state == SDW_JOB_SUCCEEDED ? 100
                 : f->total > 0               ? 100.0 * f->step / f->total
                                              : 0;
    double end = f->finished > 0 ? f->finished : f->now;
    o->elapsed_s = f->started > 0 ? SDW_MAX(0.0, end - f->started) : 0;
    if (sdw_job_state_terminal(f->state)) o->eta_s = 0;
    else if (f->state == SDW_JOB_RUNNING && f->step > 0 && f->total > 0)
        o->eta_s = o->elapsed_s * (f->total - f->step) / f->step;
    else if (f->mean_job_s > 0)
        o->eta_s = f->state == SDW_JOB_RUNNING ? SDW_MAX(0.0, f->mean_job_s - o->elapsed_s)
                                               : f->mean_job_s * (f->queue_position + 1);
    else o->eta_s = -1;
    snprintf(o->error, sizeof o->error, "%s", f->error);
}

static const sdw_request *pj_request(sdw_sjob *js) {
    pool_job *j = PJ(js);
    return j->summary.req.prompt ? &j->summary.req : &j->fallback;
}

static bool pj_wait(sdw_sjob *js, uint64_t seen, double timeout_s) {
    pool_job *j = PJ(js);
    const double t0 = sdw_time_now();
    for (;;) {
        if (j->f.version > seen) return true;
        double left = timeout_s - (sdw_time_now() - t0);
        if (left <= 0.001 || sdw_pool_gateway_stopping(j->g)) return false;
        bool got = false;
        if (sdw_pool_gateway_wait(j->g, j->id, j->last_event, left, &got, NULL) == SDW_OK &&
            got)
            refresh(j);
    }
}

static sdw_status pj_cancel(sdw_sjob *js, bool *took, sdw_error *err) {
    pool_job *j = PJ(js);
    sdw_pool_cancel_result r;
    sdw_status s = sdw_pool_gateway_cancel(j->g, j->id, SDW_POOL_CANCEL, &r, err);
    if (s) return s;
    if (r == SDW_POOL_CANCEL_UNKNOWN)
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "job %s not found (unknown, or its result expired)", j->id);
    *took = r == SDW_POOL_CANCEL_DONE || r == SDW_POOL_CANCEL_REQUESTED;
    refresh(j);
    return SDW_OK;
}

static sdw_status pj_preview(sdw_sjob *js, uint8_t **png, size_t *len, uint64_t *seq,
                             sdw_error *err) {
    uint64_t q = 0;
    sdw_status s = sdw_pool_gateway_preview(PJ(js)->g, PJ(js)->id, png, len, &q, err);
    if (!s && seq) *seq = q;
    return s;
}

/* Fetches image i and its info once. */
static bool fetch(pool_job *j, int i) {
    if (i < 0 || i >= j->n) return false;
    if (j->png[i]) return true;
    char *info = NULL;
    if (sdw_pool_gateway_image(j->g, j->id, i, &j->png[i], &j->png_len[i], &info, NULL))
        return false;
    j->have_info[i] = info && sdw_pool_info_parse(info, strlen(info), &j->info[i],
                                                  &j->infotext[i], NULL) == SDW_OK;
    free(info);
    return true;
}

static const uint8_t *pj_image_png(sdw_sjob *js, int i, size_t *len) {
    pool_job *j = PJ(js);
    if (!fetch(j, i)) return NULL;
    *len = j->png_len[i];
    return j->png[i];
}

static const sdw_image *pj_image(sdw_sjob *js, int i) {
    pool_job *j = PJ(js);
    if (!fetch(j, i)) return NULL;
    if (!j->pixels[i].data) {
        sdw_png p;
        if (sdw_png_read_mem(j->png[i], j->png_len[i], "result", &p, NULL)) return NULL;
        j->pixels[i] = (sdw_image){.width = p.w, .height = p.h, .channels = p.channels,
                                   .data = p.pixels};
        p.pixels = NULL;
        sdw_png_deinit(&p);
    }
    return &j->pixels[i];
}

static bool pj_image_info(sdw_sjob *js, int i, sdw_result_info *info, const char **text) {
    pool_job *j = PJ(js);
    if (!fetch(j, i) || !j->have_info[i]) return false;
    *info = j->info[i];
    if (text) *text = j->infotext[i];
    return true;
}

static void pj_release(sdw_sjob *js) {
    pool_job *j = PJ(js);
    for (int i = 0; i < j->n; i++) {
        free(j->png[i]);
        sdw_image_free(&j->pixels[i]);
        free(j->infotext[i]);
    }
    free(j->png);
    free(j->png_len);
    free(j->pixels);
    free(j->info);
    free(j->infotext);
    free(j->have_info);
    sdw_pool_request_free(&j->summary);
    free(j->f.req_json);
    free(j);
}

static const sdw_sjob_ops k_job_ops = {
    .id = pj_id, .model = pj_model, .status = pj_status, .request = pj_request,
    .wait = pj_wait, .cancel = pj_cancel, .preview_png = pj_preview,
    .image_png = pj_image_png, .image = pj_image, .image_info = pj_image_info,
    .release = pj_release,
};

static bool is_job_id(const char *id) {
    size_t n = 0;
    for (; id[n]; n++)
        if (!((id[n] >= '0' && id[n] <= '9') || (id[n] >= 'a' && id[n] <= 'f'))) return false;
    return n == SDW_POOL_JOB_ID_LEN;
}

static sdw_status p_find(sdw_jobs *s, const char *id, sdw_sjob **out, sdw_error *err) {
    if (!is_job_id(id))
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "job %.64s not found (unknown, or its result expired)", id);
    sdw_pool_job_fields f;
    sdw_status st = sdw_pool_gateway_read(G(s), id, &f, err);
    if (st) return st;
    if (!f.exists) {
        free(f.req_json);
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "job %s not found (unknown, or its result expired)", id);
    }
    pool_job *j = sdw_xcalloc(1, sizeof *j);
    j->base.ops = &k_job_ops;
    j->g = G(s);
    snprintf(j->id, sizeof j->id, "%s", id);
    j->f = f;
    snprintf(j->last_event, sizeof j->last_event, "%s", f.last_event);
    j->fallback = sdw_request_default();
    j->fallback.prompt = "";
    if (f.req_json &&
        sdw_pool_request_parse(f.req_json, strlen(f.req_json), NULL, 0, &j->summary,
                               NULL) != SDW_OK)
        j->summary = (sdw_pool_request){0};
    j->n = SDW_MAX(f.n, 0);
    size_t n = (size_t)SDW_MAX(j->n, 1);
    j->png = sdw_xcalloc(n, sizeof *j->png);
    j->png_len = sdw_xcalloc(n, sizeof *j->png_len);
    j->pixels = sdw_xcalloc(n, sizeof *j->pixels);
    j->info = sdw_xcalloc(n, sizeof *j->info);
    j->infotext = sdw_xcalloc(n, sizeof *j->infotext);
    j->have_info = sdw_xcalloc(n, sizeof *j->have_info);
    *out = &j->base;
    return SDW_OK;
}

/* ---- the service ---- */

static bool p_ready(sdw_jobs *s, int *retry_s, char *why, size_t cap) {
    if (!sdw_pool_gateway_stopping(G(s))) return true;
    *retry_s = 5;
    snprintf(why, cap, "the gateway is stopping");
    return false;
}

typedef struct pool_list {
    sdw_model_list l;
    sdw_pool_gw_models *ms;
} pool_list;

static void pool_list_free(sdw_model_list *l) {
    pool_list *pl = (pool_list *)l;
    sdw_pool_gw_models_free(pl->ms);
    free(l->m);
    free(pl);
}

static sdw_status p_models(sdw_jobs *s, sdw_model_list **out, sdw_error *err) {
    sdw_pool_gw_models *ms = NULL;
    sdw_status st = sdw_pool_gateway_models(G(s), &ms, err);
    if (st) return st;
    pool_list *pl = sdw_xcalloc(1, sizeof *pl);
    pl->ms = ms;
    pl->l.n = ms->n;
    pl->l.m = sdw_xcalloc((size_t)SDW_MAX(ms->n, 1), sizeof *pl->l.m);
    pl->l.free_fn = pool_list_free;
    for (int i = 0; i < ms->n; i++) {
        sdw_served_model *m = &pl->l.m[i];
        const sdw_pool_gw_model *g = &ms->m[i];
        snprintf(m->name, sizeof m->name, "%s", g->name);
        snprintf(m->type, sizeof m->type, "%s", g->type);
        snprintf(m->variant, sizeof m->variant, "%s", g->variant);
        m->description = g->description;
        m->caps = sdw_pool_caps_get(g->caps);
        m->workers = g->workers;
        m->busy = g->busy;
        m->queued = (int)SDW_MIN(g->queued, (long long)INT_MAX);
    }
    *out = &pl->l;
    return SDW_OK;
}

static sdw_status p_submit(sdw_jobs *s, const sdw_served_model *m, const sdw_request *req, int n,
                           sdw_sjob **out, sdw_error *err) {
    char id[SDW_POOL_JOB_ID_LEN + 1];
    sdw_status st = sdw_pool_gateway_submit(G(s), m->name, m->caps, req, n, id, err);
    if (st) return st;
    return p_find(s, id, out, err);
}

/* The jobs the registry shows running (workers' current jobs). */
static sdw_status running_jobs(sdw_jobs *s, char (**ids)[SDW_POOL_JOB_ID_LEN + 1], int *n,
                               sdw_error *err) {
    sdw_pool_worker_info *w = NULL;
    int nw = 0;
    sdw_status st = sdw_pool_gateway_workers(G(s), &w, &nw, err);
    if (st) return st;
    *ids = sdw_xcalloc((size_t)SDW_MAX(nw, 1), sizeof **ids);
    *n = 0;
    for (int i = 0; i < nw; i++)
        if (!strcmp(w[i].state, "busy") && is_job_id(w[i].job))
            snprintf((*ids)[(*n)++], SDW_POOL_JOB_ID_LEN + 1, "%s", w[i].job);
    sdw_pool_worker_info_free(w, nw);
    return SDW_OK;
}

static sdw_status p_current(sdw_jobs *s, sdw_sjob **out, sdw_error *err) {
    char(*ids)[SDW_POOL_JOB_ID_LEN + 1] = NULL;
    int n = 0;
    *out = NULL;
    sdw_status st = running_jobs(s, &ids, &n, err);
    for (int i = 0; !st && i < n && !*out; i++)
        if (p_find(s, ids[i], out, NULL)) *out = NULL; /* ended meanwhile: the next one */
    free(ids);
    return st;
}

/* A1111's interrupt and skip reach every job running in the pool: its API has one user. */
static sdw_status p_stop_running(sdw_jobs *s, bool skip, sdw_error *err) {
    char(*ids)[SDW_POOL_JOB_ID_LEN + 1] = NULL;
    int n = 0;
    sdw_status st = running_jobs(s, &ids, &n, err);
    for (int i = 0; !st && i < n; i++) {
        sdw_pool_cancel_result r;
        st = sdw_pool_gateway_cancel(G(s), ids[i], skip ? SDW_POOL_SKIP : SDW_POOL_INTERRUPT,
                                     &r, err);
    }
    free(ids);
    return st;
}

static sdw_status p_stats(sdw_jobs *s, sdw_engine_stats *out, sdw_error *err) {
    sdw_model_list *ml;
    sdw_status st = p_models(s, &ml, err);
    if (st) return st;
    *out = (sdw_engine_stats){0};
    for (int i = 0; i < ml->n; i++) {
        out->queued += ml->m[i].queued;
        out->running += ml->m[i].busy;
    }
    out->queue_max = sdw_pool_gateway_queue_max(G(s));
    sdw__model_list_free(ml);
    return SDW_OK;
}

static int p_retry_after(sdw_jobs *s) { return sdw_pool_gateway_retry_after(G(s)); }

static sdw_status p_workers(sdw_jobs *s, json_t **out, sdw_error *err) {
    sdw_pool_worker_info *w = NULL;
    int n = 0;
    sdw_status st = sdw_pool_gateway_workers(G(s), &w, &n, err);
    if (st) return st;
    json_t *a = json_array();
    for (int i = 0; i < n; i++) {
        json_t *caps = w[i].caps_json ? json_loads(w[i].caps_json, 0, NULL) : NULL;
        json_array_append_new(
            a, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s?,s:s,s:i,s:i,s:I,s:I,s:I,s:f,s:f,s:o}",
                         "id", w[i].id, "host", w[i].host, "model", w[i].model, "type",
                         w[i].type, "variant", w[i].variant, "state", w[i].state, "job",
                         *w[i].job ? w[i].job : NULL, "version", w[i].version, "pid", w[i].pid,
                         "threads", w[i].threads, "jobs_done", (json_int_t)w[i].jobs_done,
                         "jobs_failed", (json_int_t)w[i].jobs_failed, "queue",
                         (json_int_t)w[i].queue, "started", w[i].started, "heartbeat",
                         w[i].heartbeat, "capabilities", caps ? caps : json_null()));
    }
    sdw_pool_worker_info_free(w, n);
    *out = a;
    return SDW_OK;
}

static void p_destroy(sdw_jobs *s) { free(s); }

static const sdw_jobs_ops k_ops = {
    .ready = p_ready, .models = p_models, .submit = p_submit, .find = p_find,
    .current = p_current, .stop_running = p_stop_running, .stats = p_stats,
    .retry_after = p_retry_after, .workers = p_workers, .destroy = p_destroy,
};

sdw_jobs *sdw__jobs_pool_create(sdw_pool_gateway *g) {
    pool_jobs *s = sdw_xcalloc(1, sizeof *s);
    s->base.ops = &k_ops;
    s->g = g;
    return &s->base;
}
