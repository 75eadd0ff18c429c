/* pool/gateway.c — see gateway.h. Every call takes a connection from the pool, runs one or two
 * commands (pool/protocol.h's scripts) and gives it back; the only state kept here is a short
 * cache of the registry's models, so that a burst of requests reads it once. */
#define _GNU_SOURCE
#include "pool/gateway.h"

#include "models/lora.h"
#include "pool/redis.h"
#include "sampling/rng.h"
#include "sdw/lora.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct sdw_pool_gateway {
    sdw_pool_gateway_params p;
    char prefix[SDW_POOL_PREFIX_MAX];
    sdw_redis_url url;
    sdw_redis_pool *pool;
    atomic_bool stopping;
    pthread_mutex_t mu;           /* the cache below */
    sdw_pool_gw_models *cache;    /* the last registry read (shared: refs counted by copies) */
    double cache_at;
};

sdw_pool_gateway_params sdw_pool_gateway_params_default(void) {
    return (sdw_pool_gateway_params){.queue_max = 32, .job_ttl_s = 86400, .result_ttl_s = 600,
                                     .max_payload_bytes = (size_t)128 << 20,
                                     .models_cache_s = 0.5};
}

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

sdw_status sdw_pool_gateway_create(const sdw_pool_gateway_params *params,
                                   sdw_pool_gateway **out, sdw_error *err) {
    sdw_pool_gateway_params d = sdw_pool_gateway_params_default(), p = *params;
    if (p.queue_max <= 0) p.queue_max = d.queue_max;
    if (p.job_ttl_s <= 0) p.job_ttl_s = d.job_ttl_s;
    if (p.result_ttl_s <= 0) p.result_ttl_s = d.result_ttl_s;
    if (p.max_payload_bytes == 0) p.max_payload_bytes = d.max_payload_bytes;
    if (p.models_cache_s <= 0) p.models_cache_s = d.models_cache_s;
    if (!p.redis_url)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "a gateway needs a Redis URL (--redis)");
    const char *prefix = p.prefix && *p.prefix ? p.prefix : "sdw";
    sdw_status s = sdw_pool_check_name("key prefix", prefix, err);
    if (s) return s;
    if (strlen(prefix) >= SDW_POOL_PREFIX_MAX)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "the key prefix is longer than %d bytes",
                             SDW_POOL_PREFIX_MAX - 1);
    sdw_redis_url url;
    if ((s = sdw_redis_url_parse(p.redis_url, &url, err))) return s;
    sdw_pool_gateway *g = sdw_xcalloc(1, sizeof *g);
    g->p = p;
    g->p.redis_url = NULL; /* not kept: it may hold the password (url has it, for connecting) */
    g->p.prefix = NULL;
    snprintf(g->prefix, sizeof g->prefix, "%s", prefix);
    g->url = url;
    /* Short deadlines: a gateway answers "unavailable" quickly rather than hold clients. */
    sdw_redis_params rp = sdw_redis_params_default();
    rp.connect_timeout_s = 1;
    rp.io_timeout_s = 3;
    rp.backoff_max_s = 2;
    g->pool = sdw_redis_pool_create(&g->url, &rp);
    atomic_init(&g->stopping, false);
    pthread_mutex_init(&g->mu, NULL);
    *out = g;
    return SDW_OK;
}

void sdw_pool_gateway_shutdown(sdw_pool_gateway *g) { atomic_store(&g->stopping, true); }
bool sdw_pool_gateway_stopping(const sdw_pool_gateway *g) { return atomic_load(&g->stopping); }

void sdw_pool_gateway_destroy(sdw_pool_gateway *g) {
    if (!g) return;
    sdw_pool_gw_models_free(g->cache);
    sdw_redis_pool_destroy(g->pool);
    pthread_mutex_destroy(&g->mu);
    memset(&g->url, 0, sizeof g->url); /* the password */
    free(g);
}

const char *sdw_pool_gateway_redis(const sdw_pool_gateway *g) { return g->url.redacted; }
const char *sdw_pool_gateway_prefix(const sdw_pool_gateway *g) { return g->prefix; }
int sdw_pool_gateway_queue_max(const sdw_pool_gateway *g) { return g->p.queue_max; }

int sdw_pool_gateway_retry_after(sdw_pool_gateway *g) {
    return (int)SDW_MAX(1.0, ceil(sdw_redis_pool_retry_in(g->pool)));
}

sdw_status sdw_pool_gateway_check(sdw_pool_gateway *g, sdw_error *err) {
    sdw_redis *c;
    sdw_status s = sdw_redis_pool_get(g->pool, &c, err);
    if (s) return s;
    sdw_redis_args a = {0};
    sdw_redis_args_str(&a, "PING");
    redisReply *r = NULL;
    s = sdw_redis_exec(c, &a, 0, &r, err);
    if (r) freeReplyObject(r);
    sdw_redis_args_free(&a);
    sdw_redis_pool_put(g->pool, c);
    return s;
}

/* ---- models ---- */

void sdw_pool_gw_models_free(sdw_pool_gw_models *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) {
        free(m->m[i].description);
        sdw_pool_caps_free(m->m[i].caps);
    }
    free(m->m);
    free(m);
}

sdw_status sdw_pool_gateway_workers(sdw_pool_gateway *g, sdw_pool_worker_info **out, int *n,
                                    sdw_error *err) {
    sdw_redis *c;
    sdw_status s = sdw_redis_pool_get(g->pool, &c, err);
    if (s) return s;
    s = sdw_pool_workers_read(c, g->prefix, out, n, err);
    sdw_redis_pool_put(g->pool, c);
    return s;
}

/* The registry's models: one entry per model name (workers come ordered by model), the first
 * worker's description and capabilities. */
static sdw_status read_models(sdw_pool_gateway *g, sdw_pool_gw_models **out, sdw_error *err) {
    sdw_pool_worker_info *w = NULL;
    int n = 0;
    sdw_status s = sdw_pool_gateway_workers(g, &w, &n, err);
    if (s) return s;
    sdw_pool_gw_models *ms = sdw_xcalloc(1, sizeof *ms);
    ms->m = sdw_xcalloc((size_t)SDW_MAX(n, 1), sizeof *ms->m);
    for (int i = 0; i < n; i++) {
        sdw_pool_gw_model *m = ms->n ? &ms->m[ms->n - 1] : NULL;
        if (!m || strcmp(m->name, w[i].model)) {
            sdw_pool_caps *caps = NULL;
            sdw_error e = {0};
            if (!w[i].caps_json ||
                sdw_pool_caps_parse(w[i].caps_json, strlen(w[i].caps_json), &caps, &e)) {
                SDW_WARN("gateway: worker %s's capabilities cannot be read (%s): left out",
                         w[i].id, e.msg);
                continue;
            }
            m = &ms->m[ms->n++];
            snprintf(m->name, sizeof m->name, "%s", w[i].model);
            snprintf(m->type, sizeof m->type, "%s", w[i].type);
            snprintf(m->variant, sizeof m->variant, "%s", w[i].variant);
            m->description = sdw_xstrdup(w[i].description ? w[i].description : "");
            m->caps = caps;
        }
        m->workers++;
        m->busy += !strcmp(w[i].state, "busy");
        m->queued = SDW_MAX(m->queued, w[i].queue);
    }
    sdw_pool_worker_info_free(w, n);
    *out = ms;
    return SDW_OK;
}

/* A deep copy (each caller owns its list; caps are parsed again from their JSON form). */
static sdw_pool_gw_models *copy_models(const sdw_pool_gw_models *src) {
    sdw_pool_gw_models *ms = sdw_xcalloc(1, sizeof *ms);
    ms->m = sdw_xcalloc((size_t)SDW_MAX(src->n, 1), sizeof *ms->m);
    for (int i = 0; i < src->n; i++) {
        sdw_pool_gw_model *m = &ms->m[ms->n];
        *m = src->m[i];
        char *json = sdw_pool_caps_json(sdw_pool_caps_get(src->m[i].caps));
        sdw_status s = sdw_pool_caps_parse(json, strlen(json), &m->caps, NULL);
        free(json);
        SDW_ASSERT(s == SDW_OK); /* they parsed once: their JSON form parses again */
        m->description = sdw_xstrdup(src->m[i].description);
        ms->n++;
    }
    return ms;
}

sdw_status sdw_pool_gateway_models(sdw_pool_gateway *g, sdw_pool_gw_models **out,
                                   sdw_error *err) {
    pthread_mutex_lock(&g->mu);
    if (g->cache && sdw_time_now() - g->cache_at < g->p.models_cache_s) {
        *out = copy_models(g->cache);
        pthread_mutex_unlock(&g->mu);
        return SDW_OK;
    }
    pthread_mutex_unlock(&g->mu);
    sdw_pool_gw_models *ms = NULL;
    sdw_status s = read_models(g, &ms, err);
    if (s) return s;
    pthread_mutex_lock(&g->mu);
    sdw_pool_gw_models_free(g->cache);
    g->cache = ms;
    g->cache_at = sdw_time_now();
    *out = copy_models(ms);
    pthread_mutex_unlock(&g->mu);
    return SDW_OK;
}

/* ---- jobs ---- */

/* A request resolved for the pool: against the worker's capabilities, but with its LoRAs set
 * aside. A LoRA name means a file of the worker's own --lora-dir, which the gateway has not got
 * (the registry's capabilities carry no folder): sdw_request_resolve would refuse every name
 * here. So the gateway resolves the request without them (the prompt without its <lora:...>
 * tags) and checks what it can of them: the model takes LoRAs, each is named, never a path (a
 * worker never opens a file a queue entry points at; pool/payload.h refuses one too), the
 * multipliers in range, not too many. ControlNets travel by name alike (their names resolve
 * when the worker runs them; sdw_request_resolve checks the rest). *out then holds req's own
 * prompt and LoRAs again, for the payload; the worker resolves the whole request against its
 * own capabilities, folders included. */
static sdw_status resolve_for_pool(const sdw_request *req, const sdw_capabilities *caps,
                                   sdw_request *out, sdw_error *err) {
    for (int i = 0; i < req->n_controls && req->controls; i++)
        if (req->controls[i].path)
            return sdw_error_set_field(err, "controls", SDW_E_UNSUPPORTED,
                                       "ControlNet %d is given by path (%s): a pool's workers "
                                       "load ControlNets by name, from their --controlnet-dir",
                                       i + 1, req->controls[i].path);
    if (req->n_loras < 0 || (req->n_loras > 0 && !req->loras))
        return sdw_error_set_field(err, "loras", SDW_E_INVALID_ARG, "malformed LoRA list");
    sdw_lora_tag *tags = NULL;
    int n_tags = 0;
    char *stripped = NULL;
    sdw_status s = sdw_lora_prompt_tags(req->prompt, &tags, &n_tags, &stripped, err);
    if (s) {
        if (err) err->field = "prompt";
        return s;
    }
    sdw_lora_tags_free(tags, n_tags);
    const int total = req->n_loras + n_tags;
    if (total > 0 && !caps->lora)
        s = sdw_error_set_field(err, req->n_loras ? "loras" : "prompt", SDW_E_UNSUPPORTED,
                                "this model does not take LoRAs");
    else if (total > SDW_LORA_MAX_PER_REQUEST)
        s = sdw_error_set_field(err, "loras", SDW_E_INVALID_ARG,
                                "%d LoRAs asked for: at most %d per request", total,
                                SDW_LORA_MAX_PER_REQUEST);
    for (int i = 0; i < req->n_loras && !s; i++) {
        const sdw_lora_ref *l = &req->loras[i];
        if (l->path)
            s = sdw_error_set_field(err, "loras", SDW_E_UNSUPPORTED,
                                    "LoRA %d is given by path (%s): a pool's workers load LoRAs "
                                    "by name, from their --lora-dir",
                                    i + 1, l->path);
        else if (!l->name || !*l->name)
            s = sdw_error_set_field(err, "loras", SDW_E_INVALID_ARG, "LoRA %d has no name",
                                    i + 1);
        else if (!(l->multiplier >= -SDW_LORA_MAX_MULTIPLIER &&
                   l->multiplier <= SDW_LORA_MAX_MULTIPLIER))
            s = sdw_error_set_field(err, "loras", SDW_E_INVALID_ARG,
                                    "LoRA %s: multiplier %g is not a number in [-%g, %g]",
                                    l->name, (double)l->multiplier,
                                    (double)SDW_LORA_MAX_MULTIPLIER,
                                    (double)SDW_LORA_MAX_MULTIPLIER);
    }
    if (!s) {
        sdw_request r = *req;
        r.prompt = stripped;
        r.loras = NULL;
        r.n_loras = 0;
        s = sdw_request_resolve(&r, caps, out, err);
    }
    free(stripped);
    if (s) return s;
    out->prompt = req->prompt ? req->prompt : "";
    out->loras = req->n_loras ? req->loras : NULL;
    out->n_loras = req->n_loras;
    out->resolved = NULL; /* not resolved as a whole: the worker does that */
    return SDW_OK;
}

static void new_job_id(char id[SDW_POOL_JOB_ID_LEN + 1]) {
    uint8_t b[SDW_POOL_JOB_ID_LEN / 2];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        SDW_ABORT("getrandom failed: no job id can be drawn");
    for (size_t i = 0; i < sizeof b; i++) sprintf(id + 2 * i, "%02x", b[i]);
}

sdw_status sdw_pool_gateway_submit(sdw_pool_gateway *g, const char *model,
                                   const sdw_capabilities *caps, const sdw_request *req,
                                   int n_images, char id[SDW_POOL_JOB_ID_LEN + 1],
                                   sdw_error *err) {
    SDW_ASSERT(n_images >= 1);
    sdw_request q;
    sdw_status s = resolve_for_pool(req, caps, &q, err);
    if (s) return s;
    if (q.seed >= 0 && q.seed > INT64_MAX - (n_images - 1))
        return sdw_error_set_field(err, "seed", SDW_E_INVALID_ARG,
                                   "seed %lld + %d images does not fit a 64-bit integer",
                                   (long long)q.seed, n_images);
    /* A random seed is drawn here, once, as the engine would (images use seed + i): a job run
     * again after its worker died makes the same images. */
    if (q.seed < 0) {
        uint64_t r;
        if ((s = sdw_rng_random_seed(&r, err))) return s;
        q.seed = (int64_t)(r % 4294967295u);
    }
    /* the summary every reader sees: the request as resolved (a worker resolves it again and
     * gets it back unchanged) */
    char *json = sdw_pool_request_json(&q, n_images);
    size_t bytes = strlen(json) + sdw_pool_image_bytes(q.init_image) + sdw_pool_image_bytes(q.mask);
    for (int i = 0; i < q.n_controls; i++) bytes += sdw_pool_image_bytes(q.controls[i].image);
    if (bytes > g->p.max_payload_bytes) {
        free(json);
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "the request with its images is %zu bytes: over the pool's limit "
                             "of %zu", bytes, g->p.max_payload_bytes);
    }
    int per = q.init_image ? SDW_MAX(1, (int)(q.steps * q.strength)) : q.steps;
    new_job_id(id);
    sdw_pool_enqueue_in in = {.model = model, .job_id = id, .req_json = json,
                              .init = q.init_image, .mask = q.mask, .n_images = n_images,
                              .total_steps = per * n_images, .queue_max = g->p.queue_max,
                              .job_ttl_s = g->p.job_ttl_s, .n_controls = q.n_controls};
    for (int i = 0; i < q.n_controls; i++) in.control[i] = q.controls[i].image;
    sdw_redis *c;
    if (!(s = sdw_redis_pool_get(g->pool, &c, err))) {
        s = sdw_pool_enqueue(c, g->prefix, &in, err);
        sdw_redis_pool_put(g->pool, c);
    }
    free(json);
    return s;
}

sdw_status sdw_pool_gateway_read(sdw_pool_gateway *g, const char *id, sdw_pool_job_fields *out,
                                 sdw_error *err) {
    sdw_redis *c;
    sdw_status s = sdw_redis_pool_get(g->pool, &c, err);
    if (s) return s;
    s = sdw_pool_job_read(c, g->prefix, id, out, err);
    sdw_redis_pool_put(g->pool, c);
    return s;
}

sdw_status sdw_pool_gateway_image(sdw_pool_gateway *g, const char *id, int i, uint8_t **png,
                                  size_t *png_len, char **info_json, sdw_error *err) {
    sdw_redis *c;
    sdw_status s = sdw_redis_pool_get(g->pool, &c, err);
    if (s) return s;
    s = sdw_pool_job_image(c, g->prefix, id, i, png, png_len, info_json, err);
    sdw_redis_pool_put(g->pool, c);
    return s;
}

sdw_status sdw_pool_gateway_preview(sdw_pool_gateway *g, const char *id, uint8_t **png,
                                    size_t *len, uint64_t *seq, sdw_error *err) {
    sdw_redis *c;
    sdw_status s = sdw_redis_pool_get(g->pool, &c, err);
    if (s) return s;
    s = sdw_pool_job_preview(c, g->prefix, id, png, len, seq, err);
    sdw_redis_pool_put(g->pool, c);
    return s;
}

sdw_status sdw_pool_gateway_wait(sdw_pool_gateway *g, const char *id,
                                 char last_event[SDW_POOL_ID_MAX], double block_s, bool *got,
                                 sdw_error *err) {
    *got = false;
    if (atomic_load(&g->stopping)) return SDW_OK;
    sdw_redis *c;
    sdw_status s = sdw_redis_pool_get(g->pool, &c, err);
    if (s) {
        sleep_s(block_s); /* Redis away: the caller's loop must not spin */
        return s;
    }
    s = sdw_pool_job_wait_event(c, g->prefix, id, last_event, block_s, got, err);
    sdw_redis_pool_put(g->pool, c);
    if (s == SDW_E_UNAVAILABLE) sleep_s(block_s);
    return s;
}

sdw_status sdw_pool_gateway_cancel(sdw_pool_gateway *g, const char *id, sdw_pool_cancel_mode mode,
                                   sdw_pool_cancel_result *out, sdw_error *err) {
    sdw_redis *c;
    sdw_status s = sdw_redis_pool_get(g->pool, &c, err);
    if (s) return s;
    s = sdw_pool_cancel(c, g->prefix, id, mode, g->p.result_ttl_s, out, err);
    sdw_redis_pool_put(g->pool, c);
    return s;
}
