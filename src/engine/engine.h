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

/* The step-time histogram's upper bucket bounds in seconds (sdw_engine_stats.step_hist; one more
 * bucket counts the steps over the last bound). */
#define SDW_ENGINE_STEP_BUCKETS 12
extern const double sdw_engine_step_buckets[SDW_ENGINE_STEP_BUCKETS];

sdw_engine_params sdw_engine_params_default(void);

typedef struct sdw_engine sdw_engine;
typedef struct sdw_job sdw_job;

/* Starts the worker thread. model is borrowed and must outlive the engine (the engine is its only
 * user while it lives). params may be NULL (defaults). *out is new: sdw_engine_destroy. */
sdw_status sdw_engine_create(sdw_image_model *model, const sdw_engine_params *params,
                             sdw_engine **out, sdw_error *err);

/* Stops accepting work, cancels every queued and running job (each ends `cancelled`; the running
 * one stops within one block of its current step) and wakes every waiter; returns at once.
 * Idempotent. Called by destroy; call it earlier to let waiting readers finish before tearing
 * down whatever serves them. */
void sdw_engine_shutdown(sdw_engine *e);

/* After sdw_engine_shutdown: waits up to timeout_s seconds for the worker to end (its running
 * job stopped); returns whether it has. */
bool sdw_engine_wait_stopped(sdw_engine *e, double timeout_s);

/* After sdw_engine_shutdown, when the running job has not stopped in time (it is inside an
 * operation that polls nothing): records it as cancelled now with message why, so everyone
 * waiting on it is answered, and leaves the worker running. The engine must then not be
 * destroyed, nor its model: exit the process. Nothing when the worker has ended. */
void sdw_engine_abandon(sdw_engine *e, const char *why);

/* Shuts down, joins the worker, frees every job the engine holds. NULL ok. Not after
 * sdw_engine_abandon left the worker running. */
void sdw_engine_destroy(sdw_engine *e);

/* The model (borrowed) and its resolved capabilities. */
sdw_image_model *sdw_engine_model(const sdw_engine *e);

/* Validates req against the model (sdw_request_resolve) and queues a job making n_images images
 * (seeds seed, seed+1, ...: seed + n_images - 1 must fit an int64_t; a random seed is drawn
 * once for the first image). Strings and images (init image, mask) in req are copied; the job
 * drops its image copies when it ends. req->stop is ignored (the job has its own). On success
 * *out is a new handle (sdw_job_release). Errors, with *out untouched: SDW_E_INVALID_ARG /
 * SDW_E_UNSUPPORTED (the request; the message names the field), SDW_E_BUSY (queue full),
 * SDW_CANCELLED (shutting down). */
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
    size_t bytes_kept;            /* the memory they keep (results, request copies) */
    uint64_t submitted, succeeded, failed, cancelled, rejected_busy; /* since start */
    uint64_t images_produced;     /* images finished (interrupted ones included) */
    /* Denoising step times (the gaps between consecutive steps of an image): count, sum and a
     * histogram, step_hist[k] = steps of at most sdw_engine_step_buckets[k] seconds (and over
     * the one before); step_hist[SDW_ENGINE_STEP_BUCKETS] = the longer ones. */
    uint64_t step_count;
    double step_seconds_sum;
    uint64_t step_hist[SDW_ENGINE_STEP_BUCKETS + 1];
    double mean_job_s;            /* over recent finished jobs; 0 before the first */
} sdw_engine_stats;
void sdw_engine_get_stats(sdw_engine *e, sdw_engine_stats *out);

/* Seconds until a queue slot is likely free (for Retry-After): at least 1. */
int sdw_engine_retry_after(sdw_engine *e);

/* Cancels the running job, if any, as sdw_job_cancel does (queued jobs go on); returns whether
 * there was one. */
bool sdw_engine_cancel_running(sdw_engine *e);

/* AUTOMATIC1111's interrupt: the running job, if any, stops within one block of its current step
 * and ends `cancelled` keeping its images so far, the one it was making included (its latents
 * at the last finished step, decoded; sdw_job_status.interrupted). Queued jobs go on. Returns
 * whether a job was running. */
bool sdw_engine_interrupt(sdw_engine *e);

/* AUTOMATIC1111's skip: the running job's current image stops as an interrupt would stop it
 * (kept as it is) and the job goes on with its next image. Returns whether a job was running. */
bool sdw_engine_skip(sdw_engine *e);

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
    bool interrupted;      /* cancelled by sdw_engine_interrupt: the images so far are kept */
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

/* Requests cancellation: a queued job ends `cancelled` at once, a running one within one block
 * of its current step (the model polls its stop flag between blocks and attention tiles).
 * Returns false if the job had already ended (nothing to cancel). */
bool sdw_job_cancel(sdw_job *j);

/* Latest preview as a new PNG (*png: free with free()); SDW_E_NOT_FOUND if none yet, or once the
 * job has ended (its previews are dropped then). *seq (may be NULL) gets its preview_seq. */
sdw_status sdw_job_preview_png(sdw_job *j, uint8_t **png, size_t *len, uint64_t *seq,
                               sdw_error *err);

/* A finished image (index < n_done): PNG with the A1111 "parameters" text chunk, raw pixels and
 * what the model reported. Results never change once set, so these are borrowed from the job and
 * valid while the handle is. NULL/false if index is not finished. */
const uint8_t *sdw_job_image_png(sdw_job *j, int index, size_t *len);
const sdw_image *sdw_job_image(sdw_job *j, int index);
bool sdw_job_image_info(sdw_job *j, int index, sdw_result_info *info, const char **infotext);

#endif
