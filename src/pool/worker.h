/* pool/worker.h — a worker of the pool: takes the jobs of one model from Redis (pool/protocol.h)
 * and runs them on an engine, one at a time, publishing their progress and storing their
 * results; registers itself and heartbeats; takes over the jobs of workers that died.
 *
 *   sdw_engine *e;  ... sdw_engine_create(model, &ep, &e, &err) ...
 *   sdw_pool_worker_params p = sdw_pool_worker_params_default();
 *   p.redis_url = "redis://:pw@10.0.0.5:6379/0";
 *   sdw_pool_worker *w;
 *   if (sdw_pool_worker_create(e, &p, &w, &err) != SDW_OK) ...   // bad URL, bad name
 *   ... another thread, on SIGTERM: sdw_pool_worker_stop(w) ...
 *   sdw_pool_worker_run(w);                 // returns once stopped
 *   sdw_pool_worker_destroy(w); sdw_engine_destroy(e);
 *
 * The loop: claim an entry another worker left idle past the visibility timeout (XAUTOCLAIM),
 * else wait for a new one (XREADGROUP); START it (a job delivered more than max_deliveries
 * times is failed instead); submit it to the engine; while it runs, publish each step and
 * preview, extend the claim on the entry (so a job longer than the visibility timeout is not
 * taken over), and poll its stop flag (cancel, interrupt, skip from any gateway); once it ends,
 * FINISH: the terminal state and the images are stored and the entry acknowledged in one
 * script. While Redis is unreachable the loop retries with backoff; a running job goes on and
 * its result is stored once Redis is back (or, if the worker must stop first, the entry stays
 * pending and another worker runs the job again: nothing is lost).
 *
 * Stopping (sdw_pool_worker_stop): an idle worker returns within the read's wait (about 1 s); a
 * running job gets shutdown_grace_s to finish, then it is cancelled here and handed back
 * (pool/protocol.h's release: another worker takes it at once). The worker removes its
 * registry entry on the way out.
 *
 * Thread safety: run in one thread; stop (and stats) from any other. The engine is borrowed:
 * the worker is its only user while it runs.
 */
#ifndef SDW_POOL_WORKER_H
#define SDW_POOL_WORKER_H

#include "engine/engine.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sdw_pool_worker_params {
    const char *redis_url;    /* redis://[:PASSWORD@]HOST[:PORT][/DB]; required */
    const char *model_name;   /* the name jobs ask for; NULL = the loaded folder's or file's
                               * name (what `sdw serve` calls it) */
    const char *prefix;       /* key prefix; NULL = "sdw" (pools sharing a Redis differ here) */
    const char *worker_id;    /* NULL = HOST-PID-RANDOM */
    double heartbeat_s;       /* registry refresh; 0 = 2 s */
    double registry_ttl_s;    /* the entry's expiry; 0 = 3 heartbeats (at least 2) */
    double visibility_s;      /* a pending entry idle this long is taken over; 0 = 30 s. The
                               * running worker extends its claim every visibility_s / 3 */
    int max_deliveries;       /* a job handed out more often is failed; 0 = 3 */
    double result_ttl_s;      /* a finished job's state and images stay this long; 0 = 600 s */
    size_t max_payload_bytes; /* a job's request with its images; 0 = 64 MB + 64 MB */
    double block_s;           /* an idle read's wait; 0 = 1 s */
    double shutdown_grace_s;  /* after stop, how long a running job may take to finish; < 0 =
                               * 10 s */
    int threads;              /* the engine's threads, shown in the registry (0 = not known) */
    const char *version;      /* shown in the registry; NULL = "sdworker" */
} sdw_pool_worker_params;
sdw_pool_worker_params sdw_pool_worker_params_default(void);

typedef struct sdw_pool_worker sdw_pool_worker;

/* Checks the parameters (the URL, the names) without connecting. e is borrowed. *out is new:
 * sdw_pool_worker_destroy. */
sdw_status sdw_pool_worker_create(sdw_engine *e, const sdw_pool_worker_params *params,
                                  sdw_pool_worker **out, sdw_error *err);
void sdw_pool_worker_destroy(sdw_pool_worker *w); /* NULL ok; not while running */

/* Tries one connection now: SDW_OK, or why Redis cannot be used (unreachable, refused
 * password), for a clear message at start. run() retries by itself either way. */
sdw_status sdw_pool_worker_check(sdw_pool_worker *w, sdw_error *err);

/* Runs the loop until sdw_pool_worker_stop. Returns SDW_OK then. */
sdw_status sdw_pool_worker_run(sdw_pool_worker *w);
/* Asks the loop to end (see above). Any thread; idempotent. */
void sdw_pool_worker_stop(sdw_pool_worker *w);

const char *sdw_pool_worker_id(const sdw_pool_worker *w);    /* borrowed */
const char *sdw_pool_worker_model(const sdw_pool_worker *w); /* the served name; borrowed */
const char *sdw_pool_worker_redis(const sdw_pool_worker *w); /* the redacted URL; borrowed */

typedef struct sdw_pool_worker_stats {
    uint64_t started;   /* jobs it ran (STARTed) */
    uint64_t stored;    /* terminal states it stored */
    uint64_t succeeded, failed, cancelled; /* of those */
    uint64_t skipped;   /* entries it found already ended */
    uint64_t lost;      /* runs it stopped because another worker had taken the job over */
    uint64_t released;  /* jobs handed back on stop */
    uint64_t claimed;   /* entries it took over from other workers */
    uint64_t given_up;  /* jobs failed for too many deliveries */
} sdw_pool_worker_stats;
void sdw_pool_worker_get_stats(sdw_pool_worker *w, sdw_pool_worker_stats *out);

#endif
