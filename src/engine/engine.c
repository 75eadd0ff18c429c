/* engine/engine.c — see engine.h.
 *
 * One mutex guards the whole engine (the queue, the store of jobs, every job's mutable fields);
 * each job's own condition variable is broadcast when it changes (so a step wakes only that job's
 * readers, not every stream of every job), `work` wakes the worker. The model runs outside the
 * lock; its progress callback takes the lock only to publish a step. Heavy work (PNG encoding of
 * previews and results) happens outside the lock too. A job's finished images are written once,
 * before n_done grows, and never change after: readers use them without the lock. */
#define _GNU_SOURCE
#include "engine/engine.h"

#include "core/common.h"
#include "io/infotext.h"
#include "io/png.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct sdw_job {
    sdw_engine *e;
    pthread_cond_t changed; /* broadcast on every change of this job */
    int refs; /* the store's reference + handles; under e->mu */
    char id[33];
    sdw_request req; /* resolved; its strings point at the copies below */
    char *prompt, *negative, *sampler, *scheduler;
    sdw_image init_image, mask; /* copies the request points at (image-to-image, inpainting) */
    sdw_param *params;          /* copies of the family options (names owned) */
    sdw_lora_ref *loras;        /* copies of the LoRAs (name / path owned) */
    sdw_control *controls;      /* copies of the ControlNets (name / path owned) */
    sdw_image *control_images;  /* their images' copies */
    int n_images;

    /* The run's stop flag (sdw_request.stop): the model polls it inside its steps. Written
     * under e->mu, read by the running model without it. */
    atomic_int stop;

    /* mutable, under e->mu */
    sdw_job_state state;
    uint64_t version, preview_seq;
    bool cancel;    /* a stop was asked: cancel, interrupt or shutdown (not a skip) */
    bool interrupt; /* ... keeping the images so far (AUTOMATIC1111's interrupt) */
    bool skip;      /* stop the current image, keep it, go on with the next (A1111's skip) */
    bool interrupted; /* the job ended by an interrupt, with the images so far */
    double created_wall, started, finished; /* finished/started: sdw_time_now(); 0 = not yet */
    double last_step; /* sdw_time_now() of the image's last step; 0 = none yet */
    int step_in_image, total_per_image, n_done;
    uint8_t *preview_png;
    size_t preview_len;
    char error[SDW_ERROR_MSG_MAX];

    /* results: slot i written by the worker before n_done becomes > i, then immutable */
    sdw_image *images;
    uint8_t **pngs;
    size_t *png_lens;
    sdw_result_info *infos;
    char **infotexts;
    size_t bytes; /* of the results, for the memory bound */

    sdw_job *prev, *next; /* the store, in submission order */
    sdw_job *qnext;       /* the queue */
    bool in_store;
};

struct sdw_engine {
    sdw_image_model *model;
    sdw_engine_params p;
    pthread_mutex_t mu;
    pthread_cond_t work;
    pthread_cond_t idle; /* broadcast when the worker ends a job and when it exits */
    pthread_t worker;
    bool worker_started, stopping;
    bool worker_exited; /* the worker thread returned (under mu) */
    bool abandoned;     /* sdw_engine_abandon gave up on the running job: do not destroy */

    sdw_job *head, *tail;   /* every job the store holds */
    sdw_job *qhead, *qtail; /* queued jobs, FIFO */
    int n_queued;
    sdw_job *running;
    int jobs_kept; /* finished jobs in the store */
    size_t bytes_kept;
    sdw_engine_stats stats;
    double mean_job_s;
};

const double sdw_engine_step_buckets[SDW_ENGINE_STEP_BUCKETS] = {
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};

const char *sdw_job_state_str(sdw_job_state s) {
    switch (s) {
    case SDW_JOB_QUEUED: return "queued";
    case SDW_JOB_RUNNING: return "running";
    case SDW_JOB_SUCCEEDED: return "succeeded";
    case SDW_JOB_FAILED: return "failed";
    case SDW_JOB_CANCELLED: return "cancelled";
    }
    return "unknown";
}

sdw_engine_params sdw_engine_params_default(void) {
    return (sdw_engine_params){.queue_max = 32, .result_ttl_s = 600,
                               .result_max_bytes = (size_t)256 << 20, .max_jobs_kept = 4096,
                               .preview_every = 0};
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- job lifetime ---- */

static void job_free(sdw_job *j) {
    for (int i = 0; i < j->n_images; i++) {
        sdw_image_free(&j->images[i]);
        free(j->pngs[i]);
        free(j->infotexts[i]);
    }
    free(j->images);
    free(j->pngs);
    free(j->png_lens);
    free(j->infos);
    free(j->infotexts);
    free(j->preview_png);
    free(j->prompt);
    free(j->negative);
    free(j->sampler);
    free(j->scheduler);
    sdw_image_free(&j->init_image);
    sdw_image_free(&j->mask);
    for (int i = 0; i < j->req.n_params; i++)
        free((char *)j->params[i].name);
    free(j->params);
    for (int i = 0; i < j->req.n_loras; i++) {
        free((char *)j->loras[i].name);
        free((char *)j->loras[i].path);
    }
    free(j->loras);
    for (int i = 0; i < j->req.n_controls; i++) {
        free((char *)j->controls[i].name);
        free((char *)j->controls[i].path);
        sdw_image_free(&j->control_images[i]);
    }
    free(j->controls);
    free(j->control_images);
    pthread_cond_destroy(&j->changed);
    free(j);
}

sdw_job *sdw_job_retain(sdw_job *j) {
    pthread_mutex_lock(&j->e->mu);
    j->refs++;
    pthread_mutex_unlock(&j->e->mu);
    return j;
}

/* Drops a reference with e->mu held; returns true if the caller must job_free it (outside). */
static bool unref_locked(sdw_job *j) {
    SDW_ASSERT(j->refs > 0);
    return --j->refs == 0;
}

void sdw_job_release(sdw_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->e->mu);
    bool last = unref_locked(j);
    pthread_mutex_unlock(&j->e->mu);
    if (last) job_free(j);
}

const char *sdw_job_id(const sdw_job *j) { return j->id; }
const sdw_request *sdw_job_request(const sdw_job *j) { return &j->req; }

static void touch(sdw_job *j) {
    j->version++;
    pthread_cond_broadcast(&j->changed);
}

static size_t image_bytes(const sdw_image *img) {
    return img->data ? (size_t)img->width * img->height * img->channels : 0;
}

static size_t str_bytes(const char *s) { return s ? strlen(s) + 1 : 0; }

/* Everything a finished job keeps in memory, what --result-mb bounds: its results (PNG, pixels,
 * infotext), its copies of the request's strings and options, what is left of its inputs and
 * preview, and the job itself (e->mu held; the results no longer change). */
static size_t kept_bytes(const sdw_job *j) {
    size_t n = sizeof *j + (size_t)j->n_images * (sizeof *j->images + sizeof *j->pngs +
                                                  sizeof *j->png_lens + sizeof *j->infos +
                                                  sizeof *j->infotexts);
    for (int i = 0; i < j->n_done; i++)
        n += j->png_lens[i] + image_bytes(&j->images[i]) + str_bytes(j->infotexts[i]);
    n += str_bytes(j->prompt) + str_bytes(j->negative) + str_bytes(j->sampler) +
         str_bytes(j->scheduler);
    for (int i = 0; i < j->req.n_params; i++)
        n += sizeof *j->params + str_bytes(j->params[i].name);
    for (int i = 0; i < j->req.n_loras; i++)
        n += sizeof *j->loras + str_bytes(j->loras[i].name) + str_bytes(j->loras[i].path);
    for (int i = 0; i < j->req.n_controls; i++)
        n += sizeof *j->controls + sizeof *j->control_images + str_bytes(j->controls[i].name) +
             str_bytes(j->controls[i].path) + image_bytes(&j->control_images[i]);
    return n + j->preview_len + image_bytes(&j->init_image) + image_bytes(&j->mask);
}

/* Drops what only a running job needs: the request's images (the pixels; the request still
 * points at the emptied copies, so readers see which mode it ran) and the latest preview. */
static void release_inputs(sdw_job *j) {
    sdw_image_free(&j->init_image);
    sdw_image_free(&j->mask);
    for (int i = 0; i < j->req.n_controls; i++) sdw_image_free(&j->control_images[i]);
    free(j->preview_png);
    j->preview_png = NULL;
    j->preview_len = 0;
}

/* Moves a job into its terminal state (e->mu held). inputs_free: whether the job's inputs may be
 * released now (not while an abandoned run may still read them). */
static void finish_locked(sdw_engine *e, sdw_job *j, sdw_job_state st, const char *why,
                          bool inputs_free) {
    SDW_ASSERT(!sdw_job_state_terminal(j->state));
    j->state = st;
    j->finished = sdw_time_now();
    if (why) snprintf(j->error, sizeof j->error, "%s", why);
    if (st == SDW_JOB_SUCCEEDED) e->stats.succeeded++;
    else if (st == SDW_JOB_FAILED) e->stats.failed++;
    else e->stats.cancelled++;
    if (inputs_free) release_inputs(j);
    j->bytes = kept_bytes(j);
    e->jobs_kept++;
    e->bytes_kept += j->bytes;
    touch(j);
}

/* Unlinks a finished job from the store (e->mu held); returns true if it must be freed. */
static bool store_remove_locked(sdw_engine *e, sdw_job *j) {
    SDW_ASSERT(j->in_store && sdw_job_state_terminal(j->state));
    if (j->prev) j->prev->next = j->next;
    else e->head = j->next;
    if (j->next) j->next->prev = j->prev;
    else e->tail = j->prev;
    j->prev = j->next = NULL;
    j->in_store = false;
    e->jobs_kept--;
    e->bytes_kept -= j->bytes;
    return unref_locked(j);
}

/* Expires finished jobs past their time, then the oldest finished ones while over the memory or
 * count bound. Jobs to free are chained on *dead (freed by the caller outside the lock). */
static void sweep_locked(sdw_engine *e, sdw_job **dead) {
    double now = sdw_time_now();
    for (int pass = 0; pass < 2; pass++) {
        sdw_job *j = e->head;
        while (j) {
            sdw_job *next = j->next;
            bool over = e->bytes_kept > e->p.result_max_bytes || e->jobs_kept > e->p.max_jobs_kept;
            if (sdw_job_state_terminal(j->state) &&
                (pass == 0 ? now - j->finished > e->p.result_ttl_s : over)) {
                if (store_remove_locked(e, j)) {
                    j->qnext = *dead;
                    *dead = j;
                }
            }
            j = next;
        }
    }
}

static void free_dead(sdw_job *dead) {
    while (dead) {
        sdw_job *n = dead->qnext;
        job_free(dead);
        dead = n;
    }
}

/* ---- the worker ---- */

/* The step-time histogram's bucket for d seconds (SDW_ENGINE_STEP_BUCKETS = over the last). */
static int step_bucket(double d) {
    int k = 0;
    while (k < SDW_ENGINE_STEP_BUCKETS && d > sdw_engine_step_buckets[k]) k++;
    return k;
}

static bool on_progress(void *user, int step, int total, const sdw_image *preview) {
    sdw_job *j = user;
    sdw_engine *e = j->e;
    uint8_t *png = NULL;
    size_t len = 0;
    /* A failed preview is not worth failing the job over: it is only skipped. */
    if (preview && preview->data &&
        sdw_png_write_mem(preview->data, preview->width, preview->height, preview->channels, NULL,
                          &png, &len, NULL) != SDW_OK)
        png = NULL;
    const double now = sdw_time_now();
    pthread_mutex_lock(&e->mu);
    /* Step times are the gaps between consecutive steps: the first step of an image would also
     * count the text encoders. */
    if (j->last_step > 0) {
        const double d = now - j->last_step;
        e->stats.step_count++;
        e->stats.step_seconds_sum += d;
        e->stats.step_hist[step_bucket(d)]++;
    }
    j->last_step = now;
    j->step_in_image = step;
    j->total_per_image = total;
    if (png) {
        free(j->preview_png);
        j->preview_png = png;
        j->preview_len = len;
        j->preview_seq++;
    }
    touch(j);
    /* A stop is the flag's business (the model polls it inside steps too): going on here. */
    pthread_mutex_unlock(&e->mu);
    return true;
}

/* Runs image i of job j (no lock held) into result slot j->n_done (the worker's own: readers
 * see it once n_done grows). Returns the model's status; *info is what it reported. */
static sdw_status run_image(sdw_engine *e, sdw_job *j, int i, int64_t *seed,
                            sdw_result_info *info, sdw_error *err) {
    sdw_request r = j->req;
    r.seed = *seed < 0 ? -1 : *seed + i; /* submit checked that seed + n - 1 fits */
    r.preview_every = e->p.preview_every;
    r.stop = &j->stop;
    sdw_image img = {0};
    *info = (sdw_result_info){0};
    sdw_status s = sdw_model_generate(e->model, &r, on_progress, j, &img, info, err);
    if (s != SDW_OK) return s;
    if (*seed < 0) *seed = info->seed - i; /* later images follow the drawn seed */
    char text[4096];
    sdw_infotext_format(&r, info, e->model->name, text, sizeof text);
    const char *kv[] = {"parameters", text, NULL};
    uint8_t *png = NULL;
    size_t len = 0;
    if ((s = sdw_png_write_mem(img.data, img.width, img.height, img.channels, kv, &png, &len,
                               err)) != SDW_OK) {
        sdw_image_free(&img);
        return s;
    }
    const int slot = j->n_done;
    j->images[slot] = img;
    j->pngs[slot] = png;
    j->png_lens[slot] = len;
    j->infos[slot] = *info;
    j->infotexts[slot] = sdw_xstrdup(text);
    return SDW_OK;
}

/* Frees result slot i (written by run_image, never published). */
static void drop_slot(sdw_job *j, int i) {
    sdw_image_free(&j->images[i]);
    free(j->pngs[i]);
    free(j->infotexts[i]);
    j->pngs[i] = NULL;
    j->infotexts[i] = NULL;
}

static void run_job(sdw_engine *e, sdw_job *j) {
    sdw_error err = {0};
    sdw_status s = SDW_OK;
    int64_t seed = j->req.seed;
    double t0 = sdw_time_now();
    bool stopped = false; /* interrupted or cancelled between or inside images */
    for (int i = 0; i < j->n_images && !stopped; i++) {
        pthread_mutex_lock(&e->mu);
        j->step_in_image = 0; /* each image's steps count from its own start */
        j->last_step = 0;
        pthread_mutex_unlock(&e->mu);
        sdw_result_info info;
        s = run_image(e, j, i, &seed, &info, &err);
        pthread_mutex_lock(&e->mu);
        if (sdw_job_state_terminal(j->state)) {
            /* Given up by a shutdown that could not wait (sdw_engine_abandon): the job
             * is already cancelled and answered; its result is not published. */
            if (s == SDW_OK) drop_slot(j, j->n_done);
            e->running = NULL;
            pthread_cond_broadcast(&e->idle);
            pthread_mutex_unlock(&e->mu);
            return;
        }
        if (s == SDW_OK) {
            j->n_done++;
            e->stats.images_produced++;
            if (info.interrupted && j->skip && !j->cancel) {
                /* A1111's skip: this image ends where it was (kept), the next one starts. */
                j->skip = false;
                atomic_store(&j->stop, SDW_STOP_NONE);
            } else if (info.interrupted) {
                stopped = true;
                snprintf(err.msg, sizeof err.msg, "interrupted at step %d of %d of image %d",
                         info.steps_done, info.n_denoiser_calls, i + 1);
            } else if (j->cancel && i + 1 < j->n_images) {
                /* A stop that arrives after an image's last step still wins for the rest: the
                 * caller was told so. */
                stopped = true;
                snprintf(err.msg, sizeof err.msg, "%s after image %d of %d",
                         j->interrupt ? "interrupted" : "cancelled", i + 1, j->n_images);
            }
            touch(j);
        } else {
            stopped = true;
        }
        pthread_mutex_unlock(&e->mu);
    }
    pthread_mutex_lock(&e->mu);
    sdw_job_state end;
    if (s != SDW_OK && s != SDW_CANCELLED) end = SDW_JOB_FAILED;
    else if (s == SDW_CANCELLED || stopped || j->cancel) end = SDW_JOB_CANCELLED;
    else end = SDW_JOB_SUCCEEDED;
    if (end == SDW_JOB_CANCELLED) {
        j->interrupted = j->interrupt;
        if (s == SDW_OK && !stopped) /* asked after the last image's last step */
            snprintf(err.msg, sizeof err.msg, "%s", j->interrupt ? "interrupted" : "cancelled");
    }
    if (end == SDW_JOB_SUCCEEDED) {
        double d = sdw_time_now() - t0;
        e->mean_job_s = e->mean_job_s > 0 ? 0.8 * e->mean_job_s + 0.2 * d : d;
    }
    finish_locked(e, j, end, end == SDW_JOB_SUCCEEDED ? NULL : err.msg, true);
    e->running = NULL;
    pthread_cond_broadcast(&e->idle);
    /* Enforce the bounds now, so that nobody sees the store over them once the job is done. */
    sdw_job *dead = NULL;
    sweep_locked(e, &dead);
    pthread_mutex_unlock(&e->mu);
    free_dead(dead);
    if (end == SDW_JOB_FAILED) SDW_WARN("job %s failed: %s", j->id, err.msg);
}

static void *worker_main(void *arg) {
    sdw_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        sdw_job *dead = NULL;
        sweep_locked(e, &dead);
        if (dead) {
            pthread_mutex_unlock(&e->mu);
            free_dead(dead);
            pthread_mutex_lock(&e->mu);
        }
        if (e->stopping && !e->qhead) break;
        if (!e->qhead) {
            /* Wake at least once a second so finished jobs expire on time. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&e->work, &e->mu, &ts);
            continue;
        }
        sdw_job *j = e->qhead;
        e->qhead = j->qnext;
        if (!e->qhead) e->qtail = NULL;
        j->qnext = NULL;
        e->n_queued--;
        j->state = SDW_JOB_RUNNING;
        j->started = sdw_time_now();
        e->running = j;
        j->refs++; /* the worker's own, so an expiry cannot free it under us */
        touch(j);
        pthread_mutex_unlock(&e->mu);
        run_job(e, j);
        sdw_job_release(j);
#ifdef __GLIBC__
        /* A job frees hundreds of MB of activations at full size; glibc keeps freed heap
         * memory in its arenas. Hand it back, so an idle worker's footprint is its model. */
        malloc_trim(0);
#endif
        pthread_mutex_lock(&e->mu);
    }
    e->worker_exited = true;
    pthread_cond_broadcast(&e->idle);
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ---- the engine ---- */

sdw_status sdw_engine_create(sdw_image_model *model, const sdw_engine_params *params,
                             sdw_engine **out, sdw_error *err) {
    SDW_ASSERT(model && out);
    sdw_engine_params p = params ? *params : sdw_engine_params_default();
    sdw_engine_params d = sdw_engine_params_default();
    if (p.queue_max <= 0) p.queue_max = d.queue_max;
    if (p.result_ttl_s <= 0) p.result_ttl_s = d.result_ttl_s;
    if (p.result_max_bytes == 0) p.result_max_bytes = d.result_max_bytes;
    if (p.max_jobs_kept <= 0) p.max_jobs_kept = d.max_jobs_kept;
    if (p.preview_every < 0)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "preview interval %d must not be negative",
                             p.preview_every);
    sdw_engine *e = sdw_xcalloc(1, sizeof *e);
    e->model = model;
    e->p = p;
    e->stats.queue_max = p.queue_max;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->work, NULL);
    pthread_cond_init(&e->idle, NULL);
    int rc = pthread_create(&e->worker, NULL, worker_main, e);
    if (rc != 0) {
        sdw_engine_destroy(e);
        return sdw_error_set(err, SDW_E_BACKEND, "cannot start the worker thread: %s",
                             strerror(rc));
    }
    e->worker_started = true;
    *out = e;
    return SDW_OK;
}

void sdw_engine_shutdown(sdw_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    if (!e->stopping) {
        e->stopping = true;
        while (e->qhead) {
            sdw_job *j = e->qhead;
            e->qhead = j->qnext;
            j->qnext = NULL;
            e->n_queued--;
            j->cancel = true;
            finish_locked(e, j, SDW_JOB_CANCELLED, "cancelled: the server is shutting down",
                          true);
        }
        e->qtail = NULL;
        if (e->running) {
            sdw_job *j = e->running;
            j->cancel = true;
            j->interrupt = j->skip = false;
            atomic_store(&j->stop, SDW_STOP_CANCEL);
            touch(j);
        }
        pthread_cond_broadcast(&e->work);
    }
    pthread_mutex_unlock(&e->mu);
}

bool sdw_engine_wait_stopped(sdw_engine *e, double timeout_s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const double whole = floor(timeout_s);
    ts.tv_sec += (time_t)whole;
    ts.tv_nsec += (long)((timeout_s - whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&e->mu);
    SDW_ASSERT(e->stopping); /* only a shut-down engine's worker ends */
    int rc = 0;
    while (e->worker_started && !e->worker_exited && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&e->idle, &e->mu, &ts);
    bool stopped = !e->worker_started || e->worker_exited;
    pthread_mutex_unlock(&e->mu);
    return stopped;
}

void sdw_engine_abandon(sdw_engine *e, const char *why) {
    pthread_mutex_lock(&e->mu);
    SDW_ASSERT(e->stopping);
    if (e->worker_started && !e->worker_exited) {
        e->abandoned = true;
        /* The worker's inputs stay: the run may still read them. It drops its result if it
         * ever returns. */
        if (e->running && !sdw_job_state_terminal(e->running->state))
            finish_locked(e, e->running, SDW_JOB_CANCELLED, why, false);
    }
    pthread_mutex_unlock(&e->mu);
}

void sdw_engine_destroy(sdw_engine *e) {
    if (!e) return;
    sdw_engine_shutdown(e);
    SDW_ASSERT(!e->abandoned); /* its worker may still run the model: see sdw_engine_abandon */
    if (e->worker_started) pthread_join(e->worker, NULL);
    sdw_job *j = e->head;
    while (j) {
        sdw_job *next = j->next;
        /* Only the store's reference may remain: a handle outliving the engine is a bug. */
        SDW_ASSERT(j->refs == 1);
        job_free(j);
        j = next;
    }
    pthread_cond_destroy(&e->work);
    pthread_cond_destroy(&e->idle);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

sdw_image_model *sdw_engine_model(const sdw_engine *e) { return e->model; }

static void make_id(char id[33]) {
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    /* Ids are capabilities (anyone holding one can read or cancel the job): unguessable. */
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        uint64_t t = (uint64_t)(sdw_time_now() * 1e9) ^ (uint64_t)(uintptr_t)id;
        for (int i = 0; i < 16; i++) b[i] = (uint8_t)(t >> (8 * (i % 8))) ^ (uint8_t)(i * 37);
    }
    for (int i = 0; i < 16; i++) {
        id[2 * i] = hex[b[i] >> 4];
        id[2 * i + 1] = hex[b[i] & 15];
    }
    id[32] = 0;
}

static char *dup_or_null(const char *s) { return s ? sdw_xstrdup(s) : NULL; }

/* A deep copy of img into *out (the job outlives the caller's buffers); NULL if img is NULL. */
static const sdw_image *copy_image(const sdw_image *img, sdw_image *out) {
    if (!img) return NULL;
    size_t n = (size_t)img->width * img->height * img->channels; /* resolved: sizes checked */
    *out = *img;
    out->data = sdw_xmalloc(n);
    memcpy(out->data, img->data, n);
    return out;
}

sdw_status sdw_engine_submit(sdw_engine *e, const sdw_request *req, int n_images, sdw_job **out,
                             sdw_error *err) {
    SDW_ASSERT(e && req && out);
    if (n_images < 1)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "number of images %d must be at least 1",
                             n_images);
    sdw_request r;
    sdw_status s = sdw_request_resolve(req, sdw_model_capabilities(e->model), &r, err);
    if (s != SDW_OK) return s;
    /* Image i uses seed + i: the last one must still be a seed. */
    if (r.seed >= 0 && n_images - 1 > INT64_MAX - r.seed)
        return sdw_error_set_field(err, "seed", SDW_E_INVALID_ARG,
                                   "seed %lld is too large for %d images (image i uses seed + i; "
                                   "at most %lld)",
                                   (long long)r.seed, n_images,
                                   (long long)(INT64_MAX - (n_images - 1)));

    sdw_job *j = sdw_xcalloc(1, sizeof *j);
    j->e = e;
    pthread_cond_init(&j->changed, NULL);
    j->refs = 2; /* the store's and the caller's */
    make_id(j->id);
    j->prompt = dup_or_null(r.prompt);
    j->negative = dup_or_null(r.negative_prompt);
    j->sampler = dup_or_null(r.sampler);
    j->scheduler = dup_or_null(r.scheduler);
    r.prompt = j->prompt;
    r.negative_prompt = j->negative;
    r.sampler = j->sampler;
    r.scheduler = j->scheduler;
    r.init_image = copy_image(r.init_image, &j->init_image);
    r.mask = copy_image(r.mask, &j->mask);
    if (r.n_params > 0) {
        j->params = sdw_xcalloc((size_t)r.n_params, sizeof *j->params);
        for (int i = 0; i < r.n_params; i++)
            j->params[i] = (sdw_param){sdw_xstrdup(r.params[i].name), r.params[i].value};
    }
    r.params = j->params;
    if (r.n_loras > 0) { /* LoRAs: their names outlive the caller's */
        j->loras = sdw_xcalloc((size_t)r.n_loras, sizeof *j->loras);
        for (int i = 0; i < r.n_loras; i++)
            j->loras[i] = (sdw_lora_ref){dup_or_null(r.loras[i].name),
                                         dup_or_null(r.loras[i].path), r.loras[i].multiplier};
    }
    r.loras = j->loras;
    if (r.n_controls > 0) { /* ControlNets: their names and images outlive the caller's */
        j->controls = sdw_xcalloc((size_t)r.n_controls, sizeof *j->controls);
        j->control_images = sdw_xcalloc((size_t)r.n_controls, sizeof *j->control_images);
        for (int i = 0; i < r.n_controls; i++) {
            j->controls[i] = r.controls[i];
            j->controls[i].name = dup_or_null(r.controls[i].name);
            j->controls[i].path = dup_or_null(r.controls[i].path);
            j->controls[i].image = copy_image(r.controls[i].image, &j->control_images[i]);
        }
    }
    r.controls = j->controls;
    j->req = r;
    j->n_images = n_images;
    j->total_per_image = r.steps;
    j->images = sdw_xcalloc((size_t)n_images, sizeof *j->images);
    j->pngs = sdw_xcalloc((size_t)n_images, sizeof *j->pngs);
    j->png_lens = sdw_xcalloc((size_t)n_images, sizeof *j->png_lens);
    j->infos = sdw_xcalloc((size_t)n_images, sizeof *j->infos);
    j->infotexts = sdw_xcalloc((size_t)n_images, sizeof *j->infotexts);
    j->created_wall = wall_now();
    j->state = SDW_JOB_QUEUED;

    sdw_job *dead = NULL;
    pthread_mutex_lock(&e->mu);
    sweep_locked(e, &dead);
    if (e->stopping) s = sdw_error_set(err, SDW_CANCELLED, "the server is shutting down");
    else if (e->n_queued >= e->p.queue_max) {
        e->stats.rejected_busy++;
        s = sdw_error_set(err, SDW_E_BUSY, "the queue is full (%d jobs waiting); try again later",
                          e->n_queued);
    }
    if (s == SDW_OK) {
        j->prev = e->tail;
        if (e->tail) e->tail->next = j;
        else e->head = j;
        e->tail = j;
        j->in_store = true;
        if (e->qtail) e->qtail->qnext = j;
        else e->qhead = j;
        e->qtail = j;
        e->n_queued++;
        e->stats.submitted++;
        pthread_cond_signal(&e->work);
    }
    pthread_mutex_unlock(&e->mu);
    free_dead(dead);
    if (s != SDW_OK) {
        job_free(j);
        return s;
    }
    *out = j;
    return SDW_OK;
}

sdw_job *sdw_engine_find(sdw_engine *e, const char *id) {
    sdw_job *found = NULL, *dead = NULL;
    pthread_mutex_lock(&e->mu);
    sweep_locked(e, &dead);
    for (sdw_job *j = e->head; j; j = j->next)
        if (strcmp(j->id, id) == 0) {
            found = j;
            j->refs++;
            break;
        }
    pthread_mutex_unlock(&e->mu);
    free_dead(dead);
    return found;
}

sdw_job *sdw_engine_current(sdw_engine *e) {
    pthread_mutex_lock(&e->mu);
    sdw_job *j = e->running;
    if (j) j->refs++;
    pthread_mutex_unlock(&e->mu);
    return j;
}

void sdw_engine_get_stats(sdw_engine *e, sdw_engine_stats *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    out->queued = e->n_queued;
    out->running = e->running != NULL;
    out->jobs_kept = e->jobs_kept;
    out->bytes_kept = e->bytes_kept;
    out->mean_job_s = e->mean_job_s;
    pthread_mutex_unlock(&e->mu);
}

int sdw_engine_retry_after(sdw_engine *e) {
    pthread_mutex_lock(&e->mu);
    double left = e->mean_job_s;
    if (e->running) left -= sdw_time_now() - e->running->started;
    pthread_mutex_unlock(&e->mu);
    /* A slot frees when the running job ends and the head of the queue starts. */
    return (int)SDW_MIN(3600.0, SDW_MAX(1.0, ceil(left)));
}

bool sdw_engine_cancel_running(sdw_engine *e) {
    pthread_mutex_lock(&e->mu);
    sdw_job *j = e->running;
    if (j) {
        j->cancel = true;
        j->interrupt = j->skip = false;
        atomic_store(&j->stop, SDW_STOP_CANCEL);
        touch(j);
    }
    pthread_mutex_unlock(&e->mu);
    return j != NULL;
}

bool sdw_engine_interrupt(sdw_engine *e) {
    pthread_mutex_lock(&e->mu);
    sdw_job *j = e->running;
    if (j && !j->cancel) {
        j->cancel = j->interrupt = true;
        atomic_store(&j->stop, SDW_STOP_INTERRUPT);
        touch(j);
    }
    pthread_mutex_unlock(&e->mu);
    return j != NULL;
}

bool sdw_engine_skip(sdw_engine *e) {
    pthread_mutex_lock(&e->mu);
    sdw_job *j = e->running;
    if (j && !j->cancel && !j->skip) {
        j->skip = true;
        atomic_store(&j->stop, SDW_STOP_INTERRUPT);
        touch(j);
    }
    pthread_mutex_unlock(&e->mu);
    return j != NULL;
}

/* ---- job queries ---- */

void sdw_job_get_status(sdw_job *j, sdw_job_status *o) {
    sdw_engine *e = j->e;
    pthread_mutex_lock(&e->mu);
    double now = sdw_time_now();
    *o = (sdw_job_status){.state = j->state, .version = j->version,
                          .preview_seq = j->preview_seq, .queue_position = -1,
                          .n_images = j->n_images, .n_done = j->n_done,
                          .created = j->created_wall, .cancel_requested = j->cancel, .eta_s = -1,
                          .interrupted = j->interrupted};
    snprintf(o->error, sizeof o->error, "%s", j->error);
    int per = j->total_per_image > 0 ? j->total_per_image : 1;
    o->total = per * j->n_images;
    o->step = j->n_done * per + (j->state != SDW_JOB_QUEUED ? j->step_in_image : 0);
    if (j->state == SDW_JOB_SUCCEEDED || o->step > o->total) o->step = o->total;
    o->percent = 100.0 * o->step / o->total;
    if (j->started > 0) /* 0: never ran (still queued, or cancelled before its start) */
        o->elapsed_s = (sdw_job_state_terminal(j->state) ? j->finished : now) - j->started;
    if (j->state == SDW_JOB_QUEUED) {
        o->elapsed_s = 0;
        int pos = 0;
        for (sdw_job *q = e->qhead; q && q != j; q = q->qnext) pos++;
        o->queue_position = pos;
        if (e->mean_job_s > 0) {
            double left = e->running ? SDW_MAX(0.0, e->mean_job_s - (now - e->running->started))
                                     : 0;
            o->eta_s = left + (pos + 1) * e->mean_job_s;
        }
    } else if (j->state == SDW_JOB_RUNNING) {
        if (o->step > 0) o->eta_s = o->elapsed_s / o->step * (o->total - o->step);
        else if (e->mean_job_s > 0) o->eta_s = SDW_MAX(0.0, e->mean_job_s - o->elapsed_s);
    } else {
        o->eta_s = 0;
    }
    pthread_mutex_unlock(&e->mu);
}

bool sdw_job_wait(sdw_job *j, uint64_t seen, double timeout_s) {
    sdw_engine *e = j->e;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double sec = floor(timeout_s);
    ts.tv_sec += (time_t)sec;
    ts.tv_nsec += (long)((timeout_s - sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&e->mu);
    int rc = 0;
    while (j->version <= seen && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&j->changed, &e->mu, &ts);
    bool changed = j->version > seen;
    pthread_mutex_unlock(&e->mu);
    return changed;
}

sdw_job_state sdw_job_wait_done(sdw_job *j) {
    sdw_engine *e = j->e;
    pthread_mutex_lock(&e->mu);
    while (!sdw_job_state_terminal(j->state)) pthread_cond_wait(&j->changed, &e->mu);
    sdw_job_state s = j->state;
    pthread_mutex_unlock(&e->mu);
    return s;
}

bool sdw_job_cancel(sdw_job *j) {
    sdw_engine *e = j->e;
    pthread_mutex_lock(&e->mu);
    bool took = true;
    if (j->state == SDW_JOB_QUEUED) {
        sdw_job **pp = &e->qhead, *prev = NULL;
        while (*pp != j) prev = *pp, pp = &(*pp)->qnext;
        *pp = j->qnext;
        if (e->qtail == j) e->qtail = prev;
        j->qnext = NULL;
        e->n_queued--;
        j->cancel = true;
        finish_locked(e, j, SDW_JOB_CANCELLED, "cancelled before it started", true);
    } else if (j->state == SDW_JOB_RUNNING) {
        j->cancel = true;
        j->interrupt = j->skip = false;
        atomic_store(&j->stop, SDW_STOP_CANCEL);
        touch(j);
    } else {
        took = false;
    }
    pthread_mutex_unlock(&e->mu);
    return took;
}

sdw_status sdw_job_preview_png(sdw_job *j, uint8_t **png, size_t *len, uint64_t *seq,
                               sdw_error *err) {
    sdw_engine *e = j->e;
    pthread_mutex_lock(&e->mu);
    sdw_status s = SDW_OK;
    if (!j->preview_png) {
        s = sdw_error_set(err, SDW_E_NOT_FOUND,
                          sdw_job_state_terminal(j->state)
                              ? "job %s has ended: its previews are gone (its images stay)"
                              : "job %s has no preview yet",
                          j->id);
    } else {
        *png = sdw_xmalloc(j->preview_len);
        memcpy(*png, j->preview_png, j->preview_len);
        *len = j->preview_len;
        if (seq) *seq = j->preview_seq;
    }
    pthread_mutex_unlock(&e->mu);
    return s;
}

static bool image_done(sdw_job *j, int index) {
    pthread_mutex_lock(&j->e->mu);
    bool ok = index >= 0 && index < j->n_done;
    pthread_mutex_unlock(&j->e->mu);
    return ok;
}

const uint8_t *sdw_job_image_png(sdw_job *j, int index, size_t *len) {
    if (!image_done(j, index)) return NULL;
    *len = j->png_lens[index];
    return j->pngs[index];
}

const sdw_image *sdw_job_image(sdw_job *j, int index) {
    return image_done(j, index) ? &j->images[index] : NULL;
}

bool sdw_job_image_info(sdw_job *j, int index, sdw_result_info *info, const char **infotext) {
    if (!image_done(j, index)) return false;
    if (info) *info = j->infos[index];
    if (infotext) *infotext = j->infotexts[index];
    return true;
}
