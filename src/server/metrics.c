/* server/metrics.c — GET /metrics in the Prometheus text exposition format (version 0.0.4):
 * jobs by state, the queue, images made, a histogram of denoising step times, results kept,
 * the model's load time, HTTP answers by status class, and the process's resident memory and
 * start time. Answers while the model loads too (sdw_model_loaded 0), like /health; it needs
 * the API key when one is set (scrapers send it as a bearer token). */
#include "server/server_impl.h"

#include "core/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct text {
    char *s;
    size_t len, cap;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) SDW_ABORT("metrics: bad format");
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        t->cap = SDW_MAX(t->cap * 2, t->len + (size_t)n + 1);
        t->s = realloc(t->s, t->cap);
        if (!t->s) SDW_ABORT("out of memory");
    }
}

/* One metric family's header. */
static void family(text *t, const char *name, const char *type, const char *help) {
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* This process's resident memory in bytes (/proc/self/statm), or -1. */
static long long rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long long pages = -1;
    if (f && fscanf(f, "%*s %lld", &pages) != 1) pages = -1;
    if (f) fclose(f);
    return pages < 0 ? -1 : pages * 4096;
}

static enum MHD_Result get_metrics(sdw_http_req *r) {
    text t = {.cap = 4096};
    t.s = sdw_xmalloc(t.cap);
    t.s[0] = 0;
    sdw_server *srv = r->srv;
    sdw_jobs *js = atomic_load(&srv->jobs);
    int retry;
    char why[256];
    sdw_engine_stats s = {0};
    bool ready = js->ops->ready(js, &retry, why, sizeof why) &&
                 js->ops->stats(js, &s, NULL) == SDW_OK;
    family(&t, "sdw_model_loaded", "gauge", "1 once the model is loaded and jobs are accepted.");
    put(&t, "sdw_model_loaded %d\n", ready);
    family(&t, "sdw_model_load_seconds", "gauge", "Seconds the model took to load.");
    put(&t, "sdw_model_load_seconds %.6g\n", atomic_load(&srv->load_s));
    if (ready) {
        family(&t, "sdw_jobs", "gauge", "Jobs now, by state.");
        put(&t, "sdw_jobs{state=\"queued\"} %d\nsdw_jobs{state=\"running\"} %d\n", s.queued,
            s.running);
        family(&t, "sdw_jobs_total", "counter",
               "Jobs since start: accepted (submitted) and ended, by how they ended.");
        put(&t,
            "sdw_jobs_total{state=\"submitted\"} %llu\nsdw_jobs_total{state=\"succeeded\"} %llu\n"
            "sdw_jobs_total{state=\"failed\"} %llu\nsdw_jobs_total{state=\"cancelled\"} %llu\n",
            (unsigned long long)s.submitted, (unsigned long long)s.succeeded,
            (unsigned long long)s.failed, (unsigned long long)s.cancelled);
        family(&t, "sdw_jobs_rejected_total", "counter", "Jobs refused because the queue was full.");
        put(&t, "sdw_jobs_rejected_total %llu\n", (unsigned long long)s.rejected_busy);
        family(&t, "sdw_queue_depth", "gauge", "Jobs waiting to run.");
        put(&t, "sdw_queue_depth %d\n", s.queued);
        family(&t, "sdw_queue_capacity", "gauge", "Jobs that may wait (--queue).");
        put(&t, "sdw_queue_capacity %d\n", s.queue_max);
        family(&t, "sdw_images_total", "counter", "Images produced.");
        put(&t, "sdw_images_total %llu\n", (unsigned long long)s.images_produced);
        family(&t, "sdw_step_seconds", "histogram",
               "Seconds per denoising step (the gap between consecutive steps of an image).");
        unsigned long long cum = 0;
        for (int k = 0; k < SDW_ENGINE_STEP_BUCKETS; k++) {
            cum += s.step_hist[k];
            put(&t, "sdw_step_seconds_bucket{le=\"%g\"} %llu\n", sdw_engine_step_buckets[k], cum);
        }
        cum += s.step_hist[SDW_ENGINE_STEP_BUCKETS];
        put(&t, "sdw_step_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
        put(&t, "sdw_step_seconds_sum %.9g\nsdw_step_seconds_count %llu\n", s.step_seconds_sum,
            (unsigned long long)s.step_count);
        family(&t, "sdw_job_seconds_mean", "gauge",
               "Recent jobs' mean duration (exponentially weighted); 0 before the first.");
        put(&t, "sdw_job_seconds_mean %.6g\n", s.mean_job_s);
        family(&t, "sdw_results_kept", "gauge", "Finished jobs still readable.");
        put(&t, "sdw_results_kept %d\n", s.jobs_kept);
        family(&t, "sdw_results_kept_bytes", "gauge", "Memory their results take.");
        put(&t, "sdw_results_kept_bytes %zu\n", s.bytes_kept);
    }
    family(&t, "sdw_http_responses_total", "counter", "HTTP answers by status class.");
    for (int c = 1; c < 6; c++)
        put(&t, "sdw_http_responses_total{code=\"%dxx\"} %llu\n", c,
            (unsigned long long)atomic_load(&srv->http_by_class[c]));
    family(&t, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    put(&t, "process_resident_memory_bytes %lld\n", rss_bytes());
    family(&t, "process_start_time_seconds", "gauge", "Start time since the Unix epoch.");
    put(&t, "process_start_time_seconds %.0f\n", srv->started_wall);
    enum MHD_Result ret =
        sdw__http_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", t.s, t.len, NULL);
    free(t.s);
    return ret;
}

const sdw_route sdw__metrics_routes[] = {
    {"GET", "/metrics", get_metrics},
    {NULL, NULL, NULL},
};
