/* server/jobs.h — the one seam between the HTTP dialects and whatever runs their jobs: a job
 * service (the models it serves, submit, find, stop, stats) and its job handles (status, wait,
 * preview, images, cancel). Two implementations: the local engine (jobs_local.c: `sdw serve -m`)
 * and a pool gateway (jobs_pool.c over pool/gateway.h: `sdw serve --redis`). The dialects call
 * only this; neither implementation knows HTTP. Library-internal (sdw__ names).
 *
 *   sdw_jobs *js = ...;                                  // the server holds it
 *   sdw_model_list *ml;
 *   if (js->ops->models(js, &ml, &err)) ...              // 503 while unreachable / loading
 *   const sdw_served_model *m = sdw__models_pick(ml, name, &err);  // NULL: 404 naming it
 *   sdw_sjob *j;
 *   if (js->ops->submit(js, m, &req, n, &j, &err)) ...   // refused before queueing
 *   sdw__sjob_wait_done(j); ...sdw__sjob_status(j, &st)...; sdw__sjob_release(j);
 *   sdw__model_list_free(ml);
 *
 * Interfaces follow the house form: the const ops pointer first in the implementation's struct.
 * Thread safety: every op may be called from any thread, concurrently; a job handle is used by
 * one thread at a time (each request has its own).
 */
#ifndef SDW_SERVER_JOBS_H
#define SDW_SERVER_JOBS_H

#include "engine/engine.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>

#define SDW_SERVED_NAME_MAX 256

/* A model the service runs jobs on. */
typedef struct sdw_served_model {
    char name[SDW_SERVED_NAME_MAX]; /* as clients name it (never a server path) */
    char type[64], variant[64];
    const char *description;        /* borrowed from the list */
    const sdw_capabilities *caps;   /* borrowed from the list */
    /* The loaded model itself (its LoRA, embedding and ControlNet folders) when it runs in this
     * process; NULL behind a gateway, where those listings are empty. */
    sdw_image_model *model;
    int workers, busy;              /* live workers serving it, and those running a job */
    int queued;                     /* jobs waiting for it (as last seen) */
} sdw_served_model;

/* What a service's models op returns: n models (at least 0), and what keeps them alive. */
typedef struct sdw_model_list {
    int n;
    sdw_served_model *m;
    void (*free_fn)(struct sdw_model_list *l); /* frees everything, l too */
} sdw_model_list;
static inline void sdw__model_list_free(sdw_model_list *l) {
    if (l) l->free_fn(l);
}
/* The model named name (NULL or "" = the only one served) in l, or NULL with err set:
 * SDW_E_NOT_FOUND naming the model and what is served, or (name NULL and several models, or
 * none) SDW_E_INVALID_ARG / SDW_E_UNAVAILABLE saying so. */
const sdw_served_model *sdw__models_pick(const sdw_model_list *l, const char *name,
                                         sdw_error *err);

/* The loaded model's name as clients see it: the last component of what was loaded (its folder
 * or file name), never the server's path. buf holds it. */
const char *sdw__served_name(const sdw_image_model *m, char buf[SDW_SERVED_NAME_MAX]);

/* ---- job handles ---- */

typedef struct sdw_sjob sdw_sjob;
typedef struct sdw_sjob_ops {
    const char *(*id)(sdw_sjob *j);    /* 32 hex digits; valid while the handle is */
    const char *(*model)(sdw_sjob *j); /* the model's name; valid while the handle is */
    /* The latest state known (a gateway reads Redis; on a failed read the last state read). */
    void (*status)(sdw_sjob *j, sdw_job_status *out);
    /* The request as resolved at submission (strings valid while the handle is). */
    const sdw_request *(*request)(sdw_sjob *j);
    /* Waits until the version exceeds seen, up to timeout_s (the service stopping ends it);
     * true when it changed. */
    bool (*wait)(sdw_sjob *j, uint64_t seen, double timeout_s);
    /* Cancels: *took = false when the job had ended already. SDW_E_UNAVAILABLE when the
     * request could not be passed on. */
    sdw_status (*cancel)(sdw_sjob *j, bool *took, sdw_error *err);
    /* As sdw_job_preview_png. */
    sdw_status (*preview_png)(sdw_sjob *j, uint8_t **png, size_t *len, uint64_t *seq,
                              sdw_error *err);
    /* A finished image's PNG / pixels / info (as sdw_job_image_png, _image, _image_info):
     * borrowed, valid while the handle is; NULL / false when not there. */
    const uint8_t *(*image_png)(sdw_sjob *j, int i, size_t *len);
    const sdw_image *(*image)(sdw_sjob *j, int i);
    bool (*image_info)(sdw_sjob *j, int i, sdw_result_info *info, const char **infotext);
    void (*release)(sdw_sjob *j);
} sdw_sjob_ops;
struct sdw_sjob {
    const sdw_sjob_ops *ops;
};

static inline const char *sdw__sjob_id(sdw_sjob *j) { return j->ops->id(j); }
static inline const char *sdw__sjob_model(sdw_sjob *j) { return j->ops->model(j); }
static inline void sdw__sjob_status(sdw_sjob *j, sdw_job_status *o) { j->ops->status(j, o); }
static inline const sdw_request *sdw__sjob_request(sdw_sjob *j) { return j->ops->request(j); }
static inline bool sdw__sjob_wait(sdw_sjob *j, uint64_t seen, double t) {
    return j->ops->wait(j, seen, t);
}
static inline sdw_status sdw__sjob_preview_png(sdw_sjob *j, uint8_t **png, size_t *len,
                                               uint64_t *seq, sdw_error *err) {
    return j->ops->preview_png(j, png, len, seq, err);
}
static inline const uint8_t *sdw__sjob_image_png(sdw_sjob *j, int i, size_t *len) {
    return j->ops->image_png(j, i, len);
}
static inline const sdw_image *sdw__sjob_image(sdw_sjob *j, int i) { return j->ops->image(j, i); }
static inline bool sdw__sjob_image_info(sdw_sjob *j, int i, sdw_result_info *info,
                                        const char **text) {
    return j->ops->image_info(j, i, info, text);
}
static inline void sdw__sjob_release(sdw_sjob *j) {
    if (j) j->ops->release(j);
}
/* Waits for a terminal state, or for the service to stop (then the state is not terminal). */
sdw_job_state sdw__sjob_wait_done(sdw_sjob *j, const atomic_bool *stopping);

/* ---- the service ---- */

typedef struct sdw_jobs sdw_jobs;
typedef struct sdw_jobs_ops {
    /* Whether jobs can be taken at all now (false while the local model loads): the dialects
     * answer 503 before reading a body. *retry_s: when to try again. */
    bool (*ready)(sdw_jobs *s, int *retry_s, char *why, size_t why_cap);
    /* The models served now (a new list). SDW_E_UNAVAILABLE when that cannot be known. */
    sdw_status (*models)(sdw_jobs *s, sdw_model_list **out, sdw_error *err);
    /* Validates req against m (from this service's list) and queues n images. Errors as
     * sdw_engine_submit, and SDW_E_UNAVAILABLE. */
    sdw_status (*submit)(sdw_jobs *s, const sdw_served_model *m, const sdw_request *req, int n,
                         sdw_sjob **out, sdw_error *err);
    /* A new handle on job id; SDW_E_NOT_FOUND when unknown or expired. */
    sdw_status (*find)(sdw_jobs *s, const char *id, sdw_sjob **out, sdw_error *err);
    /* A new handle on a running job (*out NULL when none runs). */
    sdw_status (*current)(sdw_jobs *s, sdw_sjob **out, sdw_error *err);
    /* A1111's interrupt (skip = false) or skip of what runs now. */
    sdw_status (*stop_running)(sdw_jobs *s, bool skip, sdw_error *err);
    /* Counters (what the service knows; the rest 0). */
    sdw_status (*stats)(sdw_jobs *s, sdw_engine_stats *out, sdw_error *err);
    /* Seconds for a Retry-After after SDW_E_BUSY or SDW_E_UNAVAILABLE: at least 1. */
    int (*retry_after)(sdw_jobs *s);
    /* GET /v1/workers' list ([{id, host, model, ...}]): a new array. */
    sdw_status (*workers)(sdw_jobs *s, json_t **out, sdw_error *err);
    void (*destroy)(sdw_jobs *s);
} sdw_jobs_ops;
struct sdw_jobs {
    const sdw_jobs_ops *ops;
};

/* The local engine's service: e (borrowed, may be set later) runs every job. */
sdw_jobs *sdw__jobs_local_create(void);
void sdw__jobs_local_set_engine(sdw_jobs *s, sdw_engine *e);
sdw_engine *sdw__jobs_local_engine(sdw_jobs *s); /* NULL while loading */

typedef struct sdw_pool_gateway sdw_pool_gateway;
/* A gateway's service over g (borrowed: it outlives the service). */
sdw_jobs *sdw__jobs_pool_create(sdw_pool_gateway *g);

#endif
