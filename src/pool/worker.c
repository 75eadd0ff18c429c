/* pool/worker.c — see worker.h. One thread does everything with one Redis connection: the
 * engine's own thread runs the model, so this one is free to publish, extend the claim, poll the
 * stop flag and heartbeat while a job runs. */
#define _GNU_SOURCE
#include "pool/worker.h"

#include "pool/payload.h"
#include "pool/protocol.h"
#include "pool/redis.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define PRUNE_EVERY_S 60.0     /* how often a worker deletes the consumers of gone workers */
#define PRUNE_IDLE_S 600.0     /* ... idle this long and holding nothing */

struct sdw_pool_worker {
    sdw_engine *e;
    sdw_pool_worker_params p;
    sdw_redis_url url;
    sdw_redis_pool *pool;
    sdw_redis *c; /* the connection in use; NULL while there is none */
    char id[SDW_POOL_ID_MAX], model[SDW_POOL_NAME_MAX], prefix[SDW_POOL_PREFIX_MAX];
    char host[256], version[64];
    char *caps_json, *description;
    atomic_bool stop;
    double stop_at; /* sdw_time_now() of the stop request (under mu) */
    double next_heartbeat, next_prune;
    char cursor[SDW_POOL_ID_MAX]; /* XAUTOCLAIM's */
    bool registered;
    pthread_mutex_t mu; /* stats, stop_at */
    sdw_pool_worker_stats stats;
};

sdw_pool_worker_params sdw_pool_worker_params_default(void) {
    return (sdw_pool_worker_params){.heartbeat_s = 2, .visibility_s = 30, .max_deliveries = 3,
                                    .result_ttl_s = 600,
                                    .max_payload_bytes = (size_t)128 << 20, .block_s = 1,
                                    .shutdown_grace_s = 10};
}

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* The last component of what was loaded, as `sdw serve` names its model. */
static void default_name(const char *loaded, char *buf, size_t cap) {
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", loaded);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
    const char *slash = strrchr(tmp, '/');
    snprintf(buf, cap, "%s", slash ? slash + 1 : tmp);
}

sdw_status sdw_pool_worker_create(sdw_engine *e, const sdw_pool_worker_params *params,
                                  sdw_pool_worker **out, sdw_error *err) {
    sdw_pool_worker_params d = sdw_pool_worker_params_default(), p = *params;
    if (p.heartbeat_s <= 0) p.heartbeat_s = d.heartbeat_s;
    if (p.registry_ttl_s <= 0) p.registry_ttl_s = 3 * p.heartbeat_s;
    p.registry_ttl_s = SDW_MAX(p.registry_ttl_s, 2 * p.heartbeat_s);
    if (p.visibility_s <= 0) p.visibility_s = d.visibility_s;
    if (p.max_deliveries <= 0) p.max_deliveries = d.max_deliveries;
    if (p.result_ttl_s <= 0) p.result_ttl_s = d.result_ttl_s;
    if (p.max_payload_bytes == 0) p.max_payload_bytes = d.max_payload_bytes;
    if (p.block_s <= 0) p.block_s = d.block_s;
    if (p.shutdown_grace_s < 0) p.shutdown_grace_s = d.shutdown_grace_s;
    if (!p.redis_url)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "a worker needs a Redis URL (--redis)");
    sdw_redis_url url;
    sdw_status s = sdw_redis_url_parse(p.redis_url, &url, err);
    if (s) return s;
    sdw_pool_worker *w = sdw_xcalloc(1, sizeof *w);
    w->e = e;
    w->url = url;
    sdw_image_model *m = sdw_engine_model(e);
    if (p.model_name) snprintf(w->model, sizeof w->model, "%s", p.model_name);
    else default_name(m->name, w->model, sizeof w->model);
    snprintf(w->prefix, sizeof w->prefix, "%s", p.prefix ? p.prefix : "sdw");
    if ((s = sdw_pool_check_name("the model name", w->model, err)) ||
        (s = sdw_pool_check_name("the key prefix", w->prefix, err)))
        goto fail;
    if (p.prefix && strlen(p.prefix) >= SDW_POOL_PREFIX_MAX) {
        s = sdw_error_set(err, SDW_E_INVALID_ARG, "the key prefix is longer than %d bytes",
                          SDW_POOL_PREFIX_MAX - 1);
        goto fail;
    }
    if (gethostname(w->host, sizeof w->host) != 0) snprintf(w->host, sizeof w->host, "unknown");
    w->host[sizeof w->host - 1] = 0;
    if (p.worker_id) {
        snprintf(w->id, sizeof w->id, "%s", p.worker_id);
    } else {
        uint16_t r = 0;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint16_t)(sdw_time_now() * 1e6);
        snprintf(w->id, sizeof w->id, "%.64s-%d-%04x", w->host, (int)getpid(), r);
    }
    if ((s = sdw_pool_check_name("the worker id", w->id, err))) goto fail;
    snprintf(w->version, sizeof w->version, "%s", p.version ? p.version : "sdworker");
    w->p = p;
    w->p.redis_url = NULL; /* the URL (and its password) lives in w->url only */
    w->p.model_name = w->model;
    w->p.prefix = w->prefix;
    w->p.worker_id = w->id;
    w->p.version = w->version;
    w->caps_json = sdw_pool_caps_json(sdw_model_capabilities(m));
    w->description = sdw_xmalloc(4096);
    sdw_model_describe(m, w->description, 4096);
    snprintf(w->cursor, sizeof w->cursor, "0-0");
    /* connections: short waits, so that a stop or an outage is noticed quickly */
    sdw_redis_params rp = sdw_redis_params_default();
    rp.backoff_min_s = 0.1;
    rp.backoff_max_s = 5;
    rp.max_idle = 1;
    w->pool = sdw_redis_pool_create(&w->url, &rp);
    pthread_mutex_init(&w->mu, NULL);
    *out = w;
    return SDW_OK;
fail:
    free(w);
    return s;
}

void sdw_pool_worker_destroy(sdw_pool_worker *w) {
    if (!w) return;
    if (w->c) sdw_redis_pool_put(w->pool, w->c);
    sdw_redis_pool_destroy(w->pool);
    free(w->caps_json);
    free(w->description);
    memset(&w->url, 0, sizeof w->url);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

const char *sdw_pool_worker_id(const sdw_pool_worker *w) { return w->id; }
const char *sdw_pool_worker_model(const sdw_pool_worker *w) { return w->model; }
const char *sdw_pool_worker_redis(const sdw_pool_worker *w) { return w->url.redacted; }

void sdw_pool_worker_stop(sdw_pool_worker *w) {
    pthread_mutex_lock(&w->mu);
    if (!atomic_load(&w->stop)) w->stop_at = sdw_time_now();
    atomic_store(&w->stop, true);
    pthread_mutex_unlock(&w->mu);
}

void sdw_pool_worker_get_stats(sdw_pool_worker *w, sdw_pool_worker_stats *out) {
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->mu);
}

#define COUNT(w, field)                                                                            \
    do {                                                                                           \
        pthread_mutex_lock(&(w)->mu);                                                              \
        (w)->stats.field++;                                                                        \
        pthread_mutex_unlock(&(w)->mu);                                                            \
    } while (0)

sdw_status sdw_pool_worker_check(sdw_pool_worker *w, sdw_error *err) {
    sdw_redis *c = NULL;
    sdw_status s = sdw_redis_pool_get(w->pool, &c, err);
    if (!s) s = sdw_pool_ensure_group(c, w->prefix, w->model, err);
    sdw_redis_pool_put(w->pool, c);
    return s;
}

/* ---- the connection ---- */

/* The connection, connecting when there is none; NULL while Redis is unreachable (the pool's
 * backoff decides when the next attempt is). A new connection makes sure the group exists: a
 * Redis that lost its data (no persistence) gets it back. */
static sdw_redis *conn(sdw_pool_worker *w) {
    if (w->c) return w->c;
    sdw_error err = {0};
    if (sdw_redis_pool_get(w->pool, &w->c, &err) != SDW_OK) return NULL;
    if (sdw_pool_ensure_group(w->c, w->prefix, w->model, &err) != SDW_OK) {
        SDW_WARN("worker %s: %s", w->id, err.msg);
        sdw_redis_pool_put(w->pool, w->c);
        w->c = NULL;
        return NULL;
    }
    w->next_heartbeat = 0; /* register at once */
    return w->c;
}

/* After a failed command: a broken connection is dropped (the next conn() reconnects). */
static void after_error(sdw_pool_worker *w, sdw_status s, const sdw_error *err, const char *what) {
    if (s == SDW_E_UNAVAILABLE || (w->c && sdw_redis_broken(w->c))) {
        sdw_redis_pool_put(w->pool, w->c);
        w->c = NULL;
    } else {
        SDW_WARN("worker %s: %s: %s", w->id, what, err->msg);
    }
}

/* Waits a little before the next attempt while Redis is unreachable. */
static void wait_for_redis(sdw_pool_worker *w) {
    sleep_s(SDW_MIN(0.2, SDW_MAX(0.01, sdw_redis_pool_retry_in(w->pool))));
}

static void heartbeat(sdw_pool_worker *w, const char *state, const char *job) {
    const double now = sdw_time_now();
    if (now < w->next_heartbeat || !conn(w)) return;
    sdw_pool_worker_stats st;
    sdw_pool_worker_get_stats(w, &st);
    sdw_pool_heartbeat_in hb = {.id = w->id, .host = w->host, .model = w->model,
                                .type = sdw_model_type(sdw_engine_model(w->e)),
                                .variant = sdw_model_variant(sdw_engine_model(w->e)),
                                .description = w->description, .caps_json = w->caps_json,
                                .state = state, .job = job, .version = w->version,
                                .pid = (int)getpid(), .threads = w->p.threads,
                                .jobs_done = (long long)st.succeeded,
                                .jobs_failed = (long long)st.failed,
                                .ttl_s = w->p.registry_ttl_s};
    sdw_error err = {0};
    sdw_status s = sdw_pool_heartbeat(w->c, w->prefix, &hb, &err);
    if (s) {
        after_error(w, s, &err, "heartbeat");
        return;
    }
    if (!w->registered)
        SDW_INFO("worker %s: registered for model %s at %s", w->id, w->model, w->url.redacted);
    w->registered = true;
    w->next_heartbeat = now + w->p.heartbeat_s;
}

/* ---- running one job ---- */

typedef struct run {
    sdw_pool_worker *w;
    sdw_pool_entry *entry;
    sdw_job *job;
    sdw_job_status st;
    uint64_t seen, preview_seq;
    double last_claim;
    bool dropped;  /* stopped because it ended elsewhere or was taken over: store nothing */
    bool released; /* cancelled here because the worker stops: hand it back */
    bool cancel_sent, interrupt_sent;
} run;

/* Acts on the stop flag a gateway set. */
static void apply_stop(run *r, const char *stop) {
    sdw_pool_worker *w = r->w;
    if (!strcmp(stop, "cancel") && !r->cancel_sent) {
        sdw_job_cancel(r->job);
        r->cancel_sent = true;
    } else if (!strcmp(stop, "interrupt") && !r->interrupt_sent && !r->cancel_sent) {
        sdw_engine_interrupt(w->e); /* the engine runs this job only */
        r->interrupt_sent = true;
    } else if (!strcmp(stop, "skip")) {
        sdw_engine_skip(w->e);
    }
}

/* Publishes the job's progress (or only extends the claim), and reacts to the answer. */
static void publish(run *r, bool changed) {
    sdw_pool_worker *w = r->w;
    if (!conn(w)) return; /* Redis is away: the job goes on; its result waits for Redis */
    sdw_pool_progress_in in = {.changed = changed, .step = r->st.step, .total = r->st.total,
                               .n_done = r->st.n_done};
    uint8_t *png = NULL;
    if (changed && r->st.preview_seq != r->preview_seq &&
        sdw_job_preview_png(r->job, &png, &in.preview_len, &in.preview_seq, NULL) == SDW_OK)
        in.preview = png;
    sdw_pool_verdict v = SDW_POOL_RUN;
    char stop[16] = "";
    sdw_error err = {0};
    sdw_status s = sdw_pool_progress(w->c, w->prefix, w->model, r->entry->job, r->entry->id,
                                     w->id, &in, &v, stop, &err);
    free(png);
    if (s) {
        after_error(w, s, &err, "progress");
        return;
    }
    if (in.preview) r->preview_seq = in.preview_seq;
    r->last_claim = sdw_time_now();
    if (v != SDW_POOL_RUN) {
        if (!r->dropped)
            SDW_WARN("worker %s: job %s %s: stopping its run", w->id, r->entry->job,
                     v == SDW_POOL_LOST ? "was taken over by another worker"
                                        : "ended elsewhere (cancelled, or expired)");
        if (v == SDW_POOL_LOST && !r->dropped) COUNT(w, lost);
        r->dropped = true;
        sdw_job_cancel(r->job);
        return;
    }
    apply_stop(r, stop);
}

/* Follows the running job until it ends. */
static void follow(run *r) {
    sdw_pool_worker *w = r->w;
    const double tick = SDW_MIN(0.25, w->p.visibility_s / 4);
    for (;;) {
        sdw_job_get_status(r->job, &r->st);
        if (sdw_job_state_terminal(r->st.state)) return;
        const bool changed = r->st.version != r->seen;
        r->seen = r->st.version;
        if (changed || sdw_time_now() - r->last_claim >= w->p.visibility_s / 3)
            publish(r, changed);
        heartbeat(w, "busy", r->entry->job);
        if (atomic_load(&w->stop) && !r->released) {
            pthread_mutex_lock(&w->mu);
            const bool over = sdw_time_now() - w->stop_at >= w->p.shutdown_grace_s;
            pthread_mutex_unlock(&w->mu);
            if (over) {
                r->released = true;
                sdw_job_cancel(r->job);
            }
        }
        sdw_job_wait(r->job, r->seen, tick);
    }
}

/* Stores the terminal state (retrying while Redis is away; giving up only when the worker must
 * stop, which leaves the entry pending for another worker). */
static void store(sdw_pool_worker *w, sdw_pool_entry *e, sdw_job_state state, const char *why,
                  bool interrupted, sdw_job *job, int n_done) {
    const uint8_t **pngs = sdw_xcalloc((size_t)SDW_MAX(n_done, 1), sizeof *pngs);
    size_t *lens = sdw_xcalloc((size_t)SDW_MAX(n_done, 1), sizeof *lens);
    char **infos = sdw_xcalloc((size_t)SDW_MAX(n_done, 1), sizeof *infos);
    for (int i = 0; i < n_done; i++) {
        sdw_result_info info;
        const char *text = NULL;
        pngs[i] = sdw_job_image_png(job, i, &lens[i]);
        SDW_ASSERT(pngs[i] && sdw_job_image_info(job, i, &info, &text));
        infos[i] = sdw_pool_info_json(&info, text);
    }
    sdw_pool_finish_in in = {.state = state, .error = why, .interrupted = interrupted,
                             .n_done = n_done, .pngs = pngs, .png_lens = lens,
                             .infos = (const char *const *)infos,
                             .result_ttl_s = w->p.result_ttl_s};
    bool warned = false;
    char msg[SDW_ERROR_MSG_MAX + 64];
    for (;;) {
        sdw_error err = {0};
        bool stored = false;
        sdw_status s = conn(w) ? sdw_pool_finish(w->c, w->prefix, w->model, e->job, e->id, &in,
                                                 &stored, &err)
                               : SDW_E_UNAVAILABLE;
        if (s == SDW_OK) {
            if (stored) {
                COUNT(w, stored);
                if (in.state == SDW_JOB_SUCCEEDED) COUNT(w, succeeded);
                else if (in.state == SDW_JOB_FAILED) COUNT(w, failed);
                else COUNT(w, cancelled);
            }
            SDW_INFO("worker %s: job %s %s%s", w->id, e->job, sdw_job_state_str(in.state),
                     stored ? "" : " (it had already ended: nothing stored)");
            break;
        }
        if (s != SDW_E_UNAVAILABLE) {
            /* Redis refused the result (out of memory, a value over its limits): store the
             * failure instead, which is small. */
            after_error(w, s, &err, "storing a result");
            if (in.n_done == 0) break;
            snprintf(msg, sizeof msg, "the result could not be stored: %s", err.msg);
            in = (sdw_pool_finish_in){.state = SDW_JOB_FAILED, .error = msg,
                                      .result_ttl_s = w->p.result_ttl_s};
            continue;
        }
        if (s == SDW_E_UNAVAILABLE && w->c) after_error(w, s, &err, "storing a result");
        if (!warned)
            SDW_WARN("worker %s: job %s ended but Redis is unreachable: its result is stored "
                     "once Redis is back", w->id, e->job);
        warned = true;
        if (atomic_load(&w->stop)) {
            pthread_mutex_lock(&w->mu);
            const bool over = sdw_time_now() - w->stop_at >= w->p.shutdown_grace_s;
            pthread_mutex_unlock(&w->mu);
            if (over) {
                SDW_WARN("worker %s: stopping without storing job %s: another worker will run "
                         "it again", w->id, e->job);
                break;
            }
        }
        wait_for_redis(w);
    }
    for (int i = 0; i < n_done; i++) free(infos[i]);
    free(infos);
    free(lens);
    free(pngs);
}

/* Hands a job back (the worker stops): another worker takes it at once. */
static void release(sdw_pool_worker *w, sdw_pool_entry *e) {
    sdw_error err = {0};
    sdw_status s = conn(w) ? sdw_pool_release(w->c, w->prefix, w->model, e->job, e->id, w->id,
                                              &err)
                           : SDW_E_UNAVAILABLE;
    if (s) after_error(w, s, &err, "handing a job back");
    else COUNT(w, released);
    SDW_WARN("worker %s: job %s handed back unfinished (the worker is stopping)%s", w->id,
             e->job, s ? ": it runs again after the visibility timeout" : "");
}

/* An entry field's bytes (NULL when the field is absent or not a string). */
static void entry_bytes(const redisReply *r, const void **p, size_t *n) {
    bool str = r && r->type == REDIS_REPLY_STRING;
    *p = str ? r->str : NULL;
    *n = str ? r->len : 0;
}

static void run_entry(sdw_pool_worker *w, sdw_pool_entry *e) {
    sdw_error err = {0};
    sdw_pool_start_out so;
    sdw_status s = sdw_pool_start(w->c, w->prefix, w->model, e, w->id, w->p.max_deliveries,
                                  w->p.result_ttl_s, &so, &err);
    if (s) {
        /* not started: the entry stays pending and comes back after the visibility timeout */
        after_error(w, s, &err, "starting a job");
        return;
    }
    if (so.verdict == SDW_POOL_SKIPPED) {
        COUNT(w, skipped);
        return;
    }
    if (so.verdict == SDW_POOL_FAILED) {
        COUNT(w, given_up);
        SDW_WARN("worker %s: job %s failed: delivered %d times without finishing", w->id, e->job,
                 so.deliveries - 1);
        return;
    }
    COUNT(w, started);
    SDW_INFO("worker %s: job %s started (delivery %d)", w->id, e->job, so.deliveries);
    heartbeat(w, "busy", e->job);
    if (so.stop[0]) {
        store(w, e, SDW_JOB_CANCELLED, "cancelled while it was being handed to a worker", false,
              NULL, 0);
        return;
    }
    sdw_pool_request pr;
    const redisReply *req = e->req;
    if (!req || req->type != REDIS_REPLY_STRING) {
        s = sdw_error_set(&err, SDW_E_INVALID_ARG, "the queue entry holds no request");
    } else {
        sdw_pool_pixels px = {0};
        entry_bytes(e->init, &px.init, &px.init_len);
        entry_bytes(e->mask, &px.mask, &px.mask_len);
        for (int i = 0; i < SDW_MAX_CONTROLS; i++)
            entry_bytes(e->control[i], &px.control[i], &px.control_len[i]);
        s = sdw_pool_request_parse(req->str, req->len, &px, w->p.max_payload_bytes, &pr, &err);
    }
    sdw_job *job = NULL;
    if (!s) {
        s = sdw_engine_submit(w->e, &pr.req, pr.n_images, &job, &err);
        sdw_pool_request_free(&pr);
    }
    if (s) {
        char why[SDW_ERROR_MSG_MAX + 64];
        snprintf(why, sizeof why, "worker %s cannot run the request: %s", w->id, err.msg);
        store(w, e, SDW_JOB_FAILED, why, false, NULL, 0);
        return;
    }
    run r = {.w = w, .entry = e, .job = job, .last_claim = sdw_time_now()};
    follow(&r);
    if (r.released && r.st.state == SDW_JOB_CANCELLED) release(w, e);
    else if (!r.dropped)
        store(w, e, r.st.state, r.st.error, r.st.interrupted, job, r.st.n_done);
    sdw_job_release(job);
}

/* ---- the loop ---- */

sdw_status sdw_pool_worker_run(sdw_pool_worker *w) {
    bool was_down = false;
    while (!atomic_load(&w->stop)) {
        if (!conn(w)) {
            if (!was_down) SDW_WARN("worker %s: waiting for Redis at %s", w->id, w->url.redacted);
            was_down = true;
            wait_for_redis(w);
            continue;
        }
        was_down = false;
        heartbeat(w, "idle", "");
        if (!w->c) continue;
        sdw_error err = {0};
        sdw_status s;
        const double now = sdw_time_now();
        if (now >= w->next_prune) {
            w->next_prune = now + PRUNE_EVERY_S;
            if ((s = sdw_pool_prune_consumers(w->c, w->prefix, w->model, PRUNE_IDLE_S, &err)))
                after_error(w, s, &err, "pruning consumers");
            if (!w->c) continue;
        }
        sdw_pool_entry e = {0};
        bool got = false;
        /* entries of workers that died come first: they have waited longest */
        s = sdw_pool_claim_stale(w->c, w->prefix, w->model, w->id, w->p.visibility_s, w->cursor,
                                 &e, &got, &err);
        if (!s && got) COUNT(w, claimed);
        if (!s && got)
            SDW_WARN("worker %s: took over job %s (its worker stopped answering, or handed it "
                     "back)", w->id, e.job);
        if (!s && !got)
            s = sdw_pool_read_new(w->c, w->prefix, w->model, w->id, w->p.block_s, &e, &got,
                                  &err);
        if (s) {
            if (strstr(err.msg, "NOGROUP")) {
                /* the stream went away (a Redis without persistence restarted): make it again */
                sdw_redis_pool_put(w->pool, w->c);
                w->c = NULL;
            } else {
                after_error(w, s, &err, "reading the queue");
                if (w->c) sleep_s(0.2); /* a refusal: not in a tight loop */
            }
            continue;
        }
        if (got) run_entry(w, &e);
        sdw_pool_entry_free(&e);
    }
    if (w->registered && conn(w)) {
        sdw_error err = {0};
        sdw_status s = sdw_pool_deregister(w->c, w->prefix, w->model, w->id, &err);
        if (s) after_error(w, s, &err, "deregistering");
    }
    return SDW_OK;
}
