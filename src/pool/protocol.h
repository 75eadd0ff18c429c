/* pool/protocol.h — the worker pool's data in Redis, and every change of a job's state: the one
 * place the gateway and the workers agree on. Each change is one Lua script (atomic in Redis, so
 * a crash or a concurrent caller never sees half a transition); the functions here run them.
 *
 * Keys (P = the pool's prefix, "sdw" by default; M = a model name; J = a job id, 32 hex digits;
 * W = a worker id):
 *   P:queue:M       stream of M's jobs, consumer group "workers". An entry: job = J, req = the
 *                   request JSON (pool/payload.h), init / mask / control0, control1, ... = the
 *                   images' pixels (the ControlNets' in the request's order). Entries are
 *                   deleted once their job has a terminal state; so the stream holds exactly the
 *                   jobs waiting or running.
 *   P:waiting:M     sorted set of M's jobs not yet started, by submission order (queue position).
 *   P:seq           the submission counter behind those positions.
 *   P:job:J         hash: the job's state (below); expires job_ttl after submission, result_ttl
 *                   after its terminal state.
 *   P:job:J:events  stream of its changes (v = version, state, step, total, n_done, and preview =
 *                   a PNG when a new preview came), capped by MAXLEN ~ SDW_POOL_EVENTS_MAX, for
 *                   any front end to follow; expires with the hash.
 *   P:worker:W      hash: a worker's registry entry, refreshed every heartbeat, expiring after a
 *                   few missed ones.
 *   P:workers       set of the worker ids that registered (entries whose hash expired are removed
 *                   by whoever lists them).
 *   P:model:M       hash: mean_s, the running mean of M's job durations (for estimates).
 *
 * A job's hash: model, state (queued | running | succeeded | failed | cancelled), version (grows
 * with every change: readers wait on it), created / started / finished (Redis' clock, Unix
 * seconds), n (images), step and total (denoising steps over all images), n_done, worker (the
 * worker running it), deliveries (how often it was handed to a worker), entry (its stream
 * entry), seq, req (the request JSON: its summary), stop (cancel | interrupt | skip, asked while
 * it runs), cancel_requested, interrupted, error, preview_seq + preview (the latest preview PNG),
 * and once finished img:I (PNG) and info:I (pool/payload.h's info JSON) per finished image.
 *
 * A job's life: ENQUEUE (queued) -> START by a worker (running; deliveries counted by the
 * stream's own delivery counter) -> PROGRESS while it runs (also extends the worker's claim on
 * the entry) -> FINISH (terminal, results stored, then the entry acknowledged and deleted, in the
 * same script). CANCEL ends a queued job at once or asks a running one to stop. A worker that
 * dies leaves its entry pending; after the visibility timeout another worker of the model claims
 * it (XAUTOCLAIM) and STARTs it again, or fails it once it was delivered more than the allowed
 * times. Every terminal state is written once: a second FINISH (a worker that was presumed dead
 * and was not) finds it and only acknowledges.
 *
 * Thread safety: the functions use the connection they are given (one thread at a time each).
 */
#ifndef SDW_POOL_PROTOCOL_H
#define SDW_POOL_PROTOCOL_H

#include "engine/engine.h"
#include "pool/redis.h"

#include <stdbool.h>

#define SDW_POOL_PROTOCOL 1
#define SDW_POOL_GROUP "workers"
#define SDW_POOL_EVENTS_MAX 64
#define SDW_POOL_ID_MAX 128    /* worker ids, stream entry ids (with their NUL) */
#define SDW_POOL_NAME_MAX 128  /* model names (with their NUL) */
#define SDW_POOL_PREFIX_MAX 64 /* key prefixes (with their NUL) */

/* A model name as it may appear in keys and requests: 1-127 bytes, no control characters, no
 * spaces (a path's last component always qualifies). SDW_E_INVALID_ARG naming it otherwise. */
sdw_status sdw_pool_check_name(const char *what, const char *name, sdw_error *err);

/* Formats P:<part1>[:<part2>] into buf. */
const char *sdw_pool_key(char *buf, size_t cap, const char *prefix, const char *part1,
                         const char *part2);

/* sdw_job_state <-> the hash's state string; false for an unknown string. */
const char *sdw_pool_state_str(sdw_job_state s);
bool sdw_pool_state_parse(const char *s, sdw_job_state *out);

/* ---- the gateway's side ---- */

typedef struct sdw_pool_enqueue_in {
    const char *model, *job_id;
    const char *req_json;            /* pool/payload.h */
    const sdw_image *init, *mask;    /* NULL when absent: their pixels travel as they are */
    const sdw_image *control[SDW_MAX_CONTROLS]; /* the ControlNets' images, n_controls of them:
                                                 * entry fields control0, control1, ... */
    int n_controls;
    int n_images, total_steps;       /* for the progress of a job that has not started */
    int queue_max;                   /* jobs waiting for this model; 0 = no bound */
    double job_ttl_s;                /* how long an unfinished job's state is kept */
} sdw_pool_enqueue_in;
/* Queues a job. SDW_E_BUSY (message with the count) when queue_max jobs already wait. */
sdw_status sdw_pool_enqueue(sdw_redis *c, const char *prefix, const sdw_pool_enqueue_in *in,
                            sdw_error *err);

typedef enum sdw_pool_cancel_mode {
    SDW_POOL_CANCEL,    /* a queued job ends at once; a running one stops at its next block */
    SDW_POOL_INTERRUPT, /* A1111's interrupt: a running job stops keeping its images so far */
    SDW_POOL_SKIP,      /* A1111's skip: a running job's current image ends, the next starts */
} sdw_pool_cancel_mode;
typedef enum sdw_pool_cancel_result {
    SDW_POOL_CANCEL_DONE,      /* a queued job is now cancelled */
    SDW_POOL_CANCEL_REQUESTED, /* the running job's worker was asked to stop */
    SDW_POOL_CANCEL_NOT_RUNNING, /* interrupt or skip of a job that is not running */
    SDW_POOL_CANCEL_ENDED,     /* the job had already ended: nothing to do */
    SDW_POOL_CANCEL_UNKNOWN,   /* no such job (or it expired) */
} sdw_pool_cancel_result;
sdw_status sdw_pool_cancel(sdw_redis *c, const char *prefix, const char *job_id,
                           sdw_pool_cancel_mode mode, double result_ttl_s,
                           sdw_pool_cancel_result *out, sdw_error *err);

/* A job's hash as read (without its images and preview). */
typedef struct sdw_pool_job_fields {
    bool exists;
    char model[SDW_POOL_NAME_MAX];
    sdw_job_state state;
    uint64_t version, preview_seq;
    int n, n_done, step, total, deliveries;
    double created, started, finished, now; /* Redis' clock; started/finished 0 = not yet */
    bool cancel_requested, interrupted;
    char worker[SDW_POOL_ID_MAX];
    char error[SDW_ERROR_MSG_MAX];
    int queue_position;      /* among the model's waiting jobs; -1 when not waiting */
    double mean_job_s;       /* the model's mean job duration; 0 = not known yet */
    char last_event[SDW_POOL_ID_MAX]; /* the id of its newest event ("0-0" = none) */
    char *req_json;          /* new (free()); NULL when the job does not exist */
} sdw_pool_job_fields;
/* Reads a job in one round trip. A job that does not exist gives exists = false (SDW_OK). */
sdw_status sdw_pool_job_read(sdw_redis *c, const char *prefix, const char *job_id,
                             sdw_pool_job_fields *out, sdw_error *err);

/* Image i of a finished job: *png (new, free()) and *info_json (new, free()).
 * SDW_E_NOT_FOUND when it is not there (not finished, or expired). */
sdw_status sdw_pool_job_image(sdw_redis *c, const char *prefix, const char *job_id, int i,
                              uint8_t **png, size_t *png_len, char **info_json, sdw_error *err);
/* The latest preview (new, free()) and its sequence number; SDW_E_NOT_FOUND when none. */
sdw_status sdw_pool_job_preview(sdw_redis *c, const char *prefix, const char *job_id,
                                uint8_t **png, size_t *len, uint64_t *seq, sdw_error *err);
/* Waits up to block_s for an event of the job newer than *last_event (updated to the newest
 * one seen); *got says whether one came. */
sdw_status sdw_pool_job_wait_event(sdw_redis *c, const char *prefix, const char *job_id,
                                   char last_event[SDW_POOL_ID_MAX], double block_s, bool *got,
                                   sdw_error *err);

/* A worker's registry entry as read. */
typedef struct sdw_pool_worker_info {
    char id[SDW_POOL_ID_MAX], host[256], model[SDW_POOL_NAME_MAX];
    char type[64], variant[64], state[16], job[64], version[64];
    char *caps_json;    /* new (free()): pool/payload.h's capabilities */
    char *description;  /* new (free()): the model's description */
    int pid, threads, protocol;
    long long jobs_done, jobs_failed, queue; /* queue: the model's waiting jobs it last saw */
    double started, heartbeat;               /* Redis' clock */
} sdw_pool_worker_info;
void sdw_pool_worker_info_free(sdw_pool_worker_info *w, int n); /* frees the array too */
/* Every live worker (registry entries that have not expired), ordered by model then id; those
 * whose entry expired are dropped from the set. *out is a new array of *n (may be 0). */
sdw_status sdw_pool_workers_read(sdw_redis *c, const char *prefix, sdw_pool_worker_info **out,
                                 int *n, sdw_error *err);

/* ---- the workers' side ---- */

/* Creates the model's stream and consumer group if missing (idempotent). */
sdw_status sdw_pool_ensure_group(sdw_redis *c, const char *prefix, const char *model,
                                 sdw_error *err);

/* One stream entry handed to a worker. */
typedef struct sdw_pool_entry {
    char id[SDW_POOL_ID_MAX];
    char job[64];
    const redisReply *req, *init, *mask; /* borrowed from reply; NULL when absent */
    const redisReply *control[SDW_MAX_CONTROLS]; /* control0 ...: as init */
    redisReply *reply;                   /* owned: the whole reply */
} sdw_pool_entry;
void sdw_pool_entry_free(sdw_pool_entry *e); /* zeroes it */

/* The next new entry of the model's stream for this worker (XREADGROUP, waiting up to block_s);
 * *got = false when none came. */
sdw_status sdw_pool_read_new(sdw_redis *c, const char *prefix, const char *model,
                             const char *worker, double block_s, sdw_pool_entry *out, bool *got,
                             sdw_error *err);
/* Claims one entry idle longer than min_idle_s (XAUTOCLAIM from *cursor, "0-0" to start;
 * updated). *got = false when none is. */
sdw_status sdw_pool_claim_stale(sdw_redis *c, const char *prefix, const char *model,
                                const char *worker, double min_idle_s, char cursor[SDW_POOL_ID_MAX],
                                sdw_pool_entry *out, bool *got, sdw_error *err);

typedef enum sdw_pool_verdict {
    SDW_POOL_RUN,    /* run it (START), or go on running it (PROGRESS) */
    SDW_POOL_SKIPPED, /* START: it had ended already, or expired: acknowledged, nothing to do */
    SDW_POOL_FAILED, /* START: delivered too often: failed with a message and acknowledged */
    SDW_POOL_STOP,   /* PROGRESS: it ended or expired meanwhile (a cancel while queued): stop */
    SDW_POOL_LOST,   /* PROGRESS: another worker has taken it over: stop, store nothing */
} sdw_pool_verdict;

typedef struct sdw_pool_start_out {
    sdw_pool_verdict verdict;
    int deliveries;  /* this delivery's number (1 = first) */
    char stop[16];   /* "cancel" when a cancel was asked before this delivery; else "" */
} sdw_pool_start_out;
sdw_status sdw_pool_start(sdw_redis *c, const char *prefix, const char *model,
                          const sdw_pool_entry *e, const char *worker, int max_deliveries,
                          double result_ttl_s, sdw_pool_start_out *out, sdw_error *err);

typedef struct sdw_pool_progress_in {
    bool changed;        /* publish step/total/n_done (and the preview, if any); false = only
                          * extend the claim and read the stop flag */
    int step, total, n_done;
    uint64_t preview_seq;
    const uint8_t *preview; /* NULL = no new preview */
    size_t preview_len;
} sdw_pool_progress_in;
/* *verdict RUN, STOP or LOST; stop gets "cancel", "interrupt", "skip" (a skip is consumed) or
 * "". */
sdw_status sdw_pool_progress(sdw_redis *c, const char *prefix, const char *model,
                             const char *job_id, const char *entry, const char *worker,
                             const sdw_pool_progress_in *in, sdw_pool_verdict *verdict,
                             char stop[16], sdw_error *err);

typedef struct sdw_pool_finish_in {
    sdw_job_state state; /* terminal */
    const char *error;   /* "" or why it failed / was cancelled */
    bool interrupted;
    int n_done;
    const uint8_t *const *pngs; /* n_done images */
    const size_t *png_lens;
    const char *const *infos;   /* n_done info JSON texts */
    double result_ttl_s;
} sdw_pool_finish_in;
/* Stores the terminal state and results, then acknowledges and deletes the entry. *stored =
 * false when the job already had a terminal state (or expired): nothing was written but the
 * acknowledgement. */
sdw_status sdw_pool_finish(sdw_redis *c, const char *prefix, const char *model,
                           const char *job_id, const char *entry, const sdw_pool_finish_in *in,
                           bool *stored, sdw_error *err);

/* A worker going away gracefully: its running job goes back to waiting, and its entry is made
 * claimable at once (idle past any visibility timeout, its delivery count given back). */
sdw_status sdw_pool_release(sdw_redis *c, const char *prefix, const char *model,
                            const char *job_id, const char *entry, const char *worker,
                            sdw_error *err);

/* The registry entry's fields (all borrowed for the call). */
typedef struct sdw_pool_heartbeat_in {
    const char *id, *host, *model, *type, *variant, *description, *caps_json, *state, *job,
        *version;
    int pid, threads;
    long long jobs_done, jobs_failed;
    double ttl_s;
} sdw_pool_heartbeat_in;
/* Writes (or refreshes) the registry entry with its expiry. */
sdw_status sdw_pool_heartbeat(sdw_redis *c, const char *prefix, const sdw_pool_heartbeat_in *in,
                              sdw_error *err);
/* Removes the entry at once (a clean exit), and the worker's consumer when it holds no
 * pending entry. */
sdw_status sdw_pool_deregister(sdw_redis *c, const char *prefix, const char *model,
                               const char *worker, sdw_error *err);
/* Deletes consumers of the model's group that hold nothing and were idle longer than
 * idle_s (workers that went away): a consumer with pending entries is never deleted. */
sdw_status sdw_pool_prune_consumers(sdw_redis *c, const char *prefix, const char *model,
                                    double idle_s, sdw_error *err);

#endif
