/* pool/gateway.h — the pool's front end: what `sdw serve --redis` does with Redis. Models and
 * their capabilities from the live workers' registry entries, requests checked against them and
 * queued on their model's stream, jobs read back (state, progress, preview, images), followed
 * (their events stream) and cancelled. Stateless: everything lives in Redis (pool/protocol.h),
 * so any number of gateways may answer for the same jobs, and a restarted one reads them all.
 *
 *   sdw_pool_gateway_params p = sdw_pool_gateway_params_default();
 *   p.redis_url = "redis://:pw@10.0.0.5:6379/0";
 *   sdw_pool_gateway *g;
 *   if (sdw_pool_gateway_create(&p, &g, &err)) ...          // bad URL
 *   sdw_pool_gw_models *ms;  sdw_pool_gateway_models(g, &ms, &err);
 *   char id[SDW_POOL_JOB_ID_LEN + 1];
 *   sdw_pool_gateway_submit(g, "sd15", caps, &req, 1, id, &err);  // refused before queueing
 *   sdw_pool_job_fields f;  sdw_pool_gateway_read(g, id, &f, &err); ...
 *   sdw_pool_gateway_shutdown(g); sdw_pool_gateway_destroy(g);
 *
 * Failures: while Redis cannot be reached every call fails at once with SDW_E_UNAVAILABLE (the
 * connection pool's backoff: nothing waits on a connect that is known to fail) and the pool
 * reconnects by itself (capped exponential backoff); callers answer 503 with Retry-After
 * (sdw_pool_gateway_retry_after). Messages name Redis by its redacted URL only.
 *
 * Thread safety: every function may be called from any thread, concurrently (each call takes
 * its own connection from the pool).
 */
#ifndef SDW_POOL_GATEWAY_H
#define SDW_POOL_GATEWAY_H

#include "pool/payload.h"
#include "pool/protocol.h"

#include <stdbool.h>

#define SDW_POOL_JOB_ID_LEN 32

typedef struct sdw_pool_gateway_params {
    const char *redis_url;    /* redis://[:PASSWORD@]HOST[:PORT][/DB]; required */
    const char *prefix;       /* key prefix; NULL = "sdw" (as the workers') */
    int queue_max;            /* jobs waiting per model; 0 = 32 */
    double job_ttl_s;         /* an unfinished job's state is kept this long; 0 = 86400 s */
    double result_ttl_s;      /* a job cancelled here keeps its state this long; 0 = 600 s */
    size_t max_payload_bytes; /* a job's request JSON with its images' pixels; 0 = 128 MB */
    double models_cache_s;    /* the registry is read at most this often; 0 = 0.5 s */
} sdw_pool_gateway_params;
sdw_pool_gateway_params sdw_pool_gateway_params_default(void);

typedef struct sdw_pool_gateway sdw_pool_gateway;

/* Checks the parameters without connecting. *out is new: sdw_pool_gateway_destroy. */
sdw_status sdw_pool_gateway_create(const sdw_pool_gateway_params *params,
                                   sdw_pool_gateway **out, sdw_error *err);
/* Ends every wait in progress (sdw_pool_gateway_wait returns at once from now on). Any
 * thread; idempotent. */
void sdw_pool_gateway_shutdown(sdw_pool_gateway *g);
bool sdw_pool_gateway_stopping(const sdw_pool_gateway *g);
void sdw_pool_gateway_destroy(sdw_pool_gateway *g); /* NULL ok; after the last call ended */

const char *sdw_pool_gateway_redis(const sdw_pool_gateway *g); /* the redacted URL; borrowed */
const char *sdw_pool_gateway_prefix(const sdw_pool_gateway *g);
int sdw_pool_gateway_queue_max(const sdw_pool_gateway *g); /* waiting jobs per model */

/* One connection attempt now (PING): SDW_OK, or why Redis cannot be used. */
sdw_status sdw_pool_gateway_check(sdw_pool_gateway *g, sdw_error *err);
/* Seconds a client should wait before trying again after SDW_E_UNAVAILABLE / SDW_E_BUSY: at
 * least 1. */
int sdw_pool_gateway_retry_after(sdw_pool_gateway *g);

/* ---- models ---- */

typedef struct sdw_pool_gw_model {
    char name[SDW_POOL_NAME_MAX];
    char type[64], variant[64];
    char *description;            /* the first worker's */
    sdw_pool_caps *caps;          /* the first worker's (sdw_pool_caps_get) */
    int workers, busy;            /* live workers serving it; those running a job */
    long long queued;             /* its waiting jobs, as a worker last saw them */
} sdw_pool_gw_model;
typedef struct sdw_pool_gw_models {
    int n;
    sdw_pool_gw_model *m; /* by name */
} sdw_pool_gw_models;
/* The models live workers serve, from the registry (read at most every models_cache_s). A
 * worker whose capabilities do not parse is left out (logged once). *out new:
 * sdw_pool_gw_models_free. */
sdw_status sdw_pool_gateway_models(sdw_pool_gateway *g, sdw_pool_gw_models **out,
                                   sdw_error *err);
void sdw_pool_gw_models_free(sdw_pool_gw_models *m); /* NULL ok */

/* The registry as it is (sdw_pool_workers_read). */
sdw_status sdw_pool_gateway_workers(sdw_pool_gateway *g, sdw_pool_worker_info **out, int *n,
                                    sdw_error *err);

/* ---- jobs ---- */

/* Resolves req against caps (the model's, from the registry: a request they cannot serve is
 * refused here, naming the field, before anything is queued). LoRA and ControlNet names are
 * checked for form only (names, never paths; counts, multipliers): they resolve in each
 * worker's own --lora-dir / --controlnet-dir, and a worker lacking one fails the job naming it.
 * Then bounds the payload and queues n_images images for model. id gets the new job's id. Errors:
 * SDW_E_INVALID_ARG / SDW_E_UNSUPPORTED (the request), SDW_E_BUSY (queue_max jobs wait),
 * SDW_E_UNAVAILABLE (Redis). */
sdw_status sdw_pool_gateway_submit(sdw_pool_gateway *g, const char *model,
                                   const sdw_capabilities *caps, const sdw_request *req,
                                   int n_images, char id[SDW_POOL_JOB_ID_LEN + 1],
                                   sdw_error *err);

/* A job's fields (pool/protocol.h; out->exists false for an unknown or expired job). */
sdw_status sdw_pool_gateway_read(sdw_pool_gateway *g, const char *id, sdw_pool_job_fields *out,
                                 sdw_error *err);
/* A finished job's image i: *png and *info_json new (free()). SDW_E_NOT_FOUND when absent. */
sdw_status sdw_pool_gateway_image(sdw_pool_gateway *g, const char *id, int i, uint8_t **png,
                                  size_t *png_len, char **info_json, sdw_error *err);
/* The latest preview (new) and its sequence number; SDW_E_NOT_FOUND when none. */
sdw_status sdw_pool_gateway_preview(sdw_pool_gateway *g, const char *id, uint8_t **png,
                                    size_t *len, uint64_t *seq, sdw_error *err);
/* Waits up to block_s for an event of the job newer than last_event (updated); *got whether
 * one came. Returns at once once the gateway is shutting down. While Redis is away it sleeps
 * block_s and fails with SDW_E_UNAVAILABLE (so a follower's loop never spins). */
sdw_status sdw_pool_gateway_wait(sdw_pool_gateway *g, const char *id,
                                 char last_event[SDW_POOL_ID_MAX], double block_s, bool *got,
                                 sdw_error *err);
/* Cancels, interrupts or skips the job (sdw_pool_cancel). */
sdw_status sdw_pool_gateway_cancel(sdw_pool_gateway *g, const char *id, sdw_pool_cancel_mode mode,
                                   sdw_pool_cancel_result *out, sdw_error *err);

#endif
