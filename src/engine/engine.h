/* engine/engine.h — the job engine: a bounded queue in front of one loaded model, one worker
 * thread running its jobs one at a time, live progress any number of readers can follow, cancel,
 * and finished results kept for a while.
 *
 *   sdw_engine *e;
 *   sdw_engine_create(model, NULL, &e, &err);             // model borrowed: outlives e
 *   sdw_job *job;
 *   if (sdw_engine_submit(e, &req, 1, &job, &err) != SDW_OK) ... // invalid / busy (queue full)
 *   sdw_job_status st; uint64_t seen = 0;
 *   do { sdw_job_wait(job, seen, 1.0); sdw_job_get_status(job, &st); seen = st.version; }
 *   while (!sdw_job_state_terminal(st.state));
 *   sdw_job_release(job); sdw_engine_destroy(e);
 *
 * Every accepted job reaches exactly one terminal state (succeeded, failed or cancelled); nothing
 * is dropped. Readers never block the worker: progress is state (the latest step and preview, a
 * version number that grows with every change), not a queue of events, so a slow or vanished
 * reader costs nothing and a late one starts from the current state.
 *
 * Nothing here knows a model family: it only uses include/sdw/image_model.h.
 * Thread safety: every function may be called from any thread, concurrently. A job handle stays
 * valid until released, even after its job expires from the engine's store; all handles must be
 * released before sdw_engine_destroy.
 */
#ifndef SDW_ENGINE_ENGINE_H
#define SDW_ENGINE_ENGINE_H

#include "sdw/image_model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sdw_job_state {
    SDW_JOB_QUEUED,
    SDW_JOB_RUNNING,
    SDW_JOB_SUCCEEDED,
    SDW_JOB_FAILED,
    SDW_JOB_CANCELLED,
} sdw_job_state;

const char *sdw_job_state_str(sdw_job_state s); /* "queued", "running", ... */
static inline bool sdw_job_state_terminal(sdw_job_state s) { return s >= SDW_JOB_SUCCEEDED; }

typedef struct sdw_engine_params {
    int queue_max;           /* jobs waiting (not counting the running one); 0 = 32 */
    double result_ttl_s;     /* how long a finished job stays readable; 0 = 600 s */
    size_t result_max_bytes; /* images of finished jobs kept in memory, oldest dropped; 0 = 256 MB */
    int max_jobs_kept;       /* finished jobs kept (failures hold no image); 0 = 4096 */
    int preview_every;       /* progress preview every N steps; 0 = none */
} sdw_engine_params;

sdw_engine_params sdw_engine_params_default(void);

typedef struct sdw_engine sdw_engine;
typedef struct sdw_job sdw_job;

/* Starts the worker thread. model is borrowed and must outlive the engine (the engine is its only
 * user while it lives). params may be NULL (defaults). *out is new: sdw_engine_destroy. */
sdw_status sdw_engine_create(sdw_image_model *model, const sdw_engine_params *params,
                             sdw_engine **out, sdw_error *err);

/* Stops accepting work, cancels every queued and running job (each ends `cancelled`) and wakes
 * every waiter; returns at once. Idempotent. Called by destroy; call it earlier to let waiting
 * readers finish before tearing down whatever serves them. */
void sdw_engine_shutdown(sdw_engine *e);

/* Shuts down, joins the worker, frees every job the engine holds. NULL ok. */
void sdw_engine_destroy(sdw_engine *e);

/* The model (borrowed) and its resolved capabilities. */
sdw_image_model *sdw_engine_model(const sdw_engine *e);

/* Validates req against the model (sdw_request_resolve) and queues a job making n_images images
 * (seeds seed, seed+1, ...; a random seed is drawn once for the first image). Strings and images
 * (init image, mask) in req are copied. On success *out is a new handle (sdw_job_release). Errors, with *out untouched:
 * SDW_E_INVALID_ARG / SDW_E_UNSUPPORTED (the request; the message names the field),
 * SDW_E_BUSY (queue full), SDW_CANCELLED (shutting down). */
sdw_status sdw_engine_submit(sdw_engine *e, const sdw_request *req, int n_images, sdw_job **out,
                             sdw_error *err);

/* A new handle on the job with this id, or NULL if unknown or expired. */
sdw_job *sdw_engine_find(sdw_engine *e, const char *id);

/* A new handle on the running job, or NULL when idle. */
sdw_job *sdw_engine_current(sdw_engine *e);

typedef struct sdw_engine_stats {
    int queued, running;          /* now */
    int queue_max;
    int jobs_kept;                /* finished jobs still readable */
    size_t bytes_kept;            /* their images */
    uint64_t submitted, succeeded, failed, cancelled, rejected_busy; /* since start */
    double mean_job_s;            /* over recent finished jobs; 0 before the first */
} sdw_engine_stats;
void sdw_engine_get_stats(sdw_engine *e, sdw_engine_stats *out);

/* Seconds until a queue slot is likely free (for Retry-After): at least 1. */
int sdw_engine_retry_after(sdw_engine *e);

/* Cancels the running job, if any (A1111's interrupt: queued jobs go on); returns whether there
 * was one. */
bool sdw_engine_cancel_running(sdw_engine *e);

/* ---- jobs ---- */

sdw_job *sdw_job_retain(sdw_job *j);
void sdw_job_release(sdw_job *j); /* NULL ok */
const char *sdw_job_id(const sdw_job *j); /* 32 hex characters; valid while the handle is */

typedef struct sdw_job_status {
    sdw_job_state state;
    uint64_t version;      /* grows with every change: pass to sdw_job_wait */
    uint64_t preview_seq;  /* grows with every new preview; 0 = none yet */
    int queue_position;    /* 0 = next to run; -1 when not queued */
    int n_images, n_done;  /* images asked for, images finished */
    int step, total;       /* denoising steps over all images */
    double percent;        /* 0-100 */
    double created;        /* wall-clock (Unix) time of submission */
    double elapsed_s;      /* since it started running (0 while queued) */
    double eta_s;          /* estimated seconds to finish (includes waiting in the queue); -1 if unknown */
    bool cancel_requested;
    char error[SDW_ERROR_MSG_MAX]; /* failed/cancelled: why */
} sdw_job_status;
void sdw_job_get_status(sdw_job *j, sdw_job_status *out);

/* The request as resolved at submission (every default filled in; seed < 0 = random). Strings
 * borrowed from the job: valid while the handle is. */
const sdw_request *sdw_job_request(const sdw_job *j);

/* Waits until the job's version exceeds seen, the engine shuts down, or timeout_s passes.
 * Returns true if the version changed. */
bool sdw_job_wait(sdw_job *j, uint64_t seen, double timeout_s);

/* Waits (without a deadline) for a terminal state; returns it. */
sdw_job_state sdw_job_wait_done(sdw_job *j);

/* Requests cancellation: a queued job ends `cancelled` at once, a running one at its next step.
 * Returns false if the job had already ended (nothing to cancel). */
bool sdw_job_cancel(sdw_job *j);

/* Latest preview as a new PNG (*png: free with free()); SDW_E_NOT_FOUND if none yet. *seq
 * (may be NULL) gets its preview_seq. */
sdw_status sdw_job_preview_png(sdw_job *j, uint8_t **png, size_t *len, uint64_t *seq,
                               sdw_error *err);

/* A finished image (index < n_done): PNG with the A1111 "parameters" text chunk, raw pixels and
 * what the model reported. Results never change once set, so these are borrowed from the job and
 * valid while the handle is. NULL/false if index is not finished. */
const uint8_t *sdw_job_image_png(sdw_job *j, int index, size_t *len);
const sdw_image *sdw_job_image(sdw_job *j, int index);
bool sdw_job_image_info(sdw_job *j, int index, sdw_result_info *info, const char **infotext);

#endif
