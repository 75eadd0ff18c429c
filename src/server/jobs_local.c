/* server/jobs_local.c — the job service of `sdw serve -m`: the engine in this process, one model.
 * Every op is the engine's own call; a job handle is an engine handle. Until the engine is set
 * (the model loading) the service is not ready. */
#include "server/jobs.h"

#include "core/common.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- job handles ---- */

typedef struct local_job {
    sdw_sjob base;
    sdw_job *j;
    char model[SDW_SERVED_NAME_MAX];
} local_job;

static sdw_job *J(sdw_sjob *j) { return ((local_job *)j)->j; }
static const char *lj_id(sdw_sjob *j) { return sdw_job_id(J(j)); }
static const char *lj_model(sdw_sjob *j) { return ((local_job *)j)->model; }
static void lj_status(sdw_sjob *j, sdw_job_status *o) { sdw_job_get_status(J(j), o); }
static const sdw_request *lj_request(sdw_sjob *j) { return sdw_job_request(J(j)); }
static bool lj_wait(sdw_sjob *j, uint64_t seen, double t) { return sdw_job_wait(J(j), seen, t); }
static sdw_status lj_cancel(sdw_sjob *j, bool *took, sdw_error *err) {
    (void)err;
    *took = sdw_job_cancel(J(j));
    return SDW_OK;
}
static sdw_status lj_preview(sdw_sjob *j, uint8_t **png, size_t *len, uint64_t *seq,
                             sdw_error *err) {
    return sdw_job_preview_png(J(j), png, len, seq, err);
}
static const uint8_t *lj_image_png(sdw_sjob *j, int i, size_t *len) {
    return sdw_job_image_png(J(j), i, len);
}
static const sdw_image *lj_image(sdw_sjob *j, int i) { return sdw_job_image(J(j), i); }
static bool lj_image_info(sdw_sjob *j, int i, sdw_result_info *info, const char **text) {
    return sdw_job_image_info(J(j), i, info, text);
}
static void lj_release(sdw_sjob *j) {
    sdw_job_release(J(j));
    free(j);
}

static const sdw_sjob_ops k_job_ops = {
    .id = lj_id, .model = lj_model, .status = lj_status, .request = lj_request,
    .wait = lj_wait, .cancel = lj_cancel, .preview_png = lj_preview,
    .image_png = lj_image_png, .image = lj_image, .image_info = lj_image_info,
    .release = lj_release,
};

/* ---- the service ---- */

typedef struct local_jobs {
    sdw_jobs base;
    _Atomic(sdw_engine *) engine; /* NULL while the model loads */
} local_jobs;

static sdw_engine *E(sdw_jobs *s) { return atomic_load(&((local_jobs *)s)->engine); }

static sdw_sjob *wrap(sdw_engine *e, sdw_job *j) {
    if (!j) return NULL;
    local_job *lj = sdw_xcalloc(1, sizeof *lj);
    lj->base.ops = &k_job_ops;
    lj->j = j;
    char buf[256];
    snprintf(lj->model, sizeof lj->model, "%s", sdw__served_name(sdw_engine_model(e), buf));
    return &lj->base;
}

static bool l_ready(sdw_jobs *s, int *retry_s, char *why, size_t cap) {
    if (E(s)) return true;
    *retry_s = 5;
    snprintf(why, cap, "the model is still loading; try again shortly");
    return false;
}

typedef struct local_list {
    sdw_model_list l;
    sdw_served_model m;
    char desc[4096];
} local_list;
static void local_list_free(sdw_model_list *l) { free(l); }

static sdw_status l_models(sdw_jobs *s, sdw_model_list **out, sdw_error *err) {
    sdw_engine *e = E(s);
    if (!e) return sdw_error_set(err, SDW_E_UNAVAILABLE, "the model is still loading");
    sdw_image_model *m = sdw_engine_model(e);
    local_list *ll = sdw_xcalloc(1, sizeof *ll);
    char buf[256];
    snprintf(ll->m.name, sizeof ll->m.name, "%s", sdw__served_name(m, buf));
    snprintf(ll->m.type, sizeof ll->m.type, "%s", sdw_model_type(m));
    snprintf(ll->m.variant, sizeof ll->m.variant, "%s", sdw_model_variant(m));
    sdw_model_describe(m, ll->desc, sizeof ll->desc);
    ll->m.description = ll->desc;
    ll->m.caps = sdw_model_capabilities(m);
    ll->m.model = m;
    sdw_engine_stats st;
    sdw_engine_get_stats(e, &st);
    ll->m.workers = 1;
    ll->m.busy = st.running;
    ll->m.queued = st.queued;
    ll->l = (sdw_model_list){.n = 1, .m = &ll->m, .free_fn = local_list_free};
    *out = &ll->l;
    return SDW_OK;
}

static sdw_status l_submit(sdw_jobs *s, const sdw_served_model *m, const sdw_request *req,
                           int n, sdw_sjob **out, sdw_error *err) {
    (void)m; /* the one model */
    sdw_engine *e = E(s);
    if (!e) return sdw_error_set(err, SDW_E_UNAVAILABLE, "the model is still loading");
    sdw_job *j = NULL;
    sdw_status st = sdw_engine_submit(e, req, n, &j, err);
    if (st) return st;
    *out = wrap(e, j);
    return SDW_OK;
}

static sdw_status l_find(sdw_jobs *s, const char *id, sdw_sjob **out, sdw_error *err) {
    sdw_engine *e = E(s);
    if (!e) return sdw_error_set(err, SDW_E_UNAVAILABLE, "the model is still loading");
    sdw_job *j = sdw_engine_find(e, id);
    if (!j)
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "job %s not found (unknown, or its result expired)", id);
    *out = wrap(e, j);
    return SDW_OK;
}

static sdw_status l_current(sdw_jobs *s, sdw_sjob **out, sdw_error *err) {
    sdw_engine *e = E(s);
    if (!e) return sdw_error_set(err, SDW_E_UNAVAILABLE, "the model is still loading");
    *out = wrap(e, sdw_engine_current(e));
    return SDW_OK;
}

static sdw_status l_stop_running(sdw_jobs *s, bool skip, sdw_error *err) {
    sdw_engine *e = E(s);
    if (!e) return sdw_error_set(err, SDW_E_UNAVAILABLE, "the model is still loading");
    if (skip) sdw_engine_skip(e);
    else sdw_engine_interrupt(e);
    return SDW_OK;
}

static sdw_status l_stats(sdw_jobs *s, sdw_engine_stats *out, sdw_error *err) {
    sdw_engine *e = E(s);
    if (!e) return sdw_error_set(err, SDW_E_UNAVAILABLE, "the model is still loading");
    sdw_engine_get_stats(e, out);
    return SDW_OK;
}

static int l_retry_after(sdw_jobs *s) {
    sdw_engine *e = E(s);
    return e ? sdw_engine_retry_after(e) : 5;
}

/* This process is the one worker: one entry, in the registry's shape. */
static sdw_status l_workers(sdw_jobs *s, json_t **out, sdw_error *err) {
    sdw_model_list *ml;
    sdw_status st = l_models(s, &ml, err);
    if (st) return st;
    const sdw_served_model *m = &ml->m[0];
    *out = json_pack("[{s:s,s:s,s:s,s:s,s:s,s:i,s:i}]", "id", "local", "model", m->name,
                     "type", m->type, "variant", m->variant, "state",
                     m->busy ? "busy" : "idle", "queue", m->queued, "pid", (int)getpid());
    sdw__model_list_free(ml);
    return SDW_OK;
}

static void l_destroy(sdw_jobs *s) { free(s); }

static const sdw_jobs_ops k_ops = {
    .ready = l_ready, .models = l_models, .submit = l_submit, .find = l_find,
    .current = l_current, .stop_running = l_stop_running, .stats = l_stats,
    .retry_after = l_retry_after, .workers = l_workers, .destroy = l_destroy,
};

sdw_jobs *sdw__jobs_local_create(void) {
    local_jobs *s = sdw_xcalloc(1, sizeof *s);
    s->base.ops = &k_ops;
    atomic_init(&s->engine, NULL);
    return &s->base;
}

void sdw__jobs_local_set_engine(sdw_jobs *s, sdw_engine *e) {
    atomic_store(&((local_jobs *)s)->engine, e);
}

sdw_engine *sdw__jobs_local_engine(sdw_jobs *s) { return E(s); }
