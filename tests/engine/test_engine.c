/* The job engine in-process with the tiny fixture model: every job reaches exactly one terminal
 * state, the queue bound answers busy, cancel works queued and running, several images follow
 * seeds seed, seed+1, results expire by time and by memory, and the engine's images are the
 * model's own (same seed, same pixels). */
#include "sdw_test.h"

#include "core/common.h"
#include "engine/engine.h"

#include <string.h>
#include <unistd.h>

static sdw_image_model *g_model;

static sdw_request small(int steps, int64_t seed) {
    sdw_request r = sdw_request_default();
    r.prompt = "a photo of a cat";
    r.width = r.height = 64;
    r.steps = steps;
    r.seed = seed;
    r.sampler = "euler";
    return r;
}

static void test_job_equals_direct_generate(void) {
    sdw_engine_params p = sdw_engine_params_default();
    p.preview_every = 1;
    sdw_engine *e;
    sdw_error err = {0};
    ASSERT_OK(sdw_engine_create(g_model, &p, &e, &err), &err);
    sdw_request r = small(2, 7);
    sdw_job *j;
    ASSERT_OK(sdw_engine_submit(e, &r, 2, &j, &err), &err);
    ASSERT_EQ_INT(strlen(sdw_job_id(j)), 32);
    ASSERT_EQ_INT(sdw_job_wait_done(j), SDW_JOB_SUCCEEDED);
    sdw_job_status st;
    sdw_job_get_status(j, &st);
    ASSERT_EQ_INT(st.n_done, 2);
    ASSERT_EQ_INT(st.step, st.total);
    ASSERT_TRUE(st.preview_seq >= 2);
    for (int i = 0; i < 2; i++) {
        sdw_result_info info;
        const char *text;
        ASSERT_TRUE(sdw_job_image_info(j, i, &info, &text));
        ASSERT_EQ_INT(info.seed, 7 + i);
        ASSERT_STR_CONTAINS(text, i ? "Seed: 8" : "Seed: 7");
        sdw_image direct = {0};
        sdw_request d = small(2, 7 + i);
        ASSERT_OK(sdw_model_generate(g_model, &d, NULL, NULL, &direct, NULL, &err), &err);
        const sdw_image *img = sdw_job_image(j, i);
        ASSERT_TRUE(img && img->width == direct.width && img->height == direct.height);
        ASSERT_TRUE(memcmp(img->data, direct.data, (size_t)64 * 64 * 3) == 0);
        sdw_image_free(&direct);
        size_t len = 0;
        ASSERT_TRUE(sdw_job_image_png(j, i, &len) && len > 8);
    }
    ASSERT_TRUE(sdw_job_image(j, 2) == NULL);
    sdw_job_release(j);
    sdw_engine_destroy(e);
}

static void test_invalid_request_is_not_queued(void) {
    sdw_engine *e;
    sdw_error err = {0};
    ASSERT_OK(sdw_engine_create(g_model, NULL, &e, &err), &err);
    sdw_request r = small(1, 1);
    r.sampler = "nope";
    sdw_job *j = NULL;
    ASSERT_STATUS(sdw_engine_submit(e, &r, 1, &j, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "unknown sampler 'nope'");
    r = small(1, 1);
    r.width = 100;
    ASSERT_STATUS(sdw_engine_submit(e, &r, 1, &j, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "not a multiple of 8");
    ASSERT_TRUE(j == NULL);
    sdw_engine_stats s;
    sdw_engine_get_stats(e, &s);
    ASSERT_EQ_INT(s.submitted, 0);
    sdw_engine_destroy(e);
}

/* A full queue says busy; cancelling queued and running jobs ends each exactly once. */
static void test_queue_bound_and_cancel(void) {
    sdw_engine_params p = sdw_engine_params_default();
    p.queue_max = 2;
    sdw_engine *e;
    sdw_error err = {0};
    ASSERT_OK(sdw_engine_create(g_model, &p, &e, &err), &err);
    sdw_request slow = small(1000, 1);
    slow.width = slow.height = 64;
    sdw_job *run, *q1, *q2, *extra = NULL;
    ASSERT_OK(sdw_engine_submit(e, &slow, 1, &run, &err), &err);
    sdw_job_status st;
    do { /* wait until the worker has taken it, so the queue is empty again */
        sdw_job_wait(run, 0, 0.05);
        sdw_job_get_status(run, &st);
    } while (st.state == SDW_JOB_QUEUED);
    ASSERT_OK(sdw_engine_submit(e, &slow, 1, &q1, &err), &err);
    ASSERT_OK(sdw_engine_submit(e, &slow, 1, &q2, &err), &err);
    ASSERT_STATUS(sdw_engine_submit(e, &slow, 1, &extra, &err), SDW_E_BUSY);
    ASSERT_STR_CONTAINS(err.msg, "queue is full");
    ASSERT_TRUE(sdw_engine_retry_after(e) >= 1);
    sdw_job_get_status(q2, &st);
    ASSERT_EQ_INT(st.queue_position, 1);

    ASSERT_TRUE(sdw_job_cancel(q1));
    sdw_job_get_status(q1, &st);
    ASSERT_EQ_INT(st.state, SDW_JOB_CANCELLED); /* at once */
    sdw_job_get_status(q2, &st);
    ASSERT_EQ_INT(st.queue_position, 0);
    ASSERT_TRUE(!sdw_job_cancel(q1)); /* already ended */

    /* The running job stops at its next step. */
    sdw_job *cur = sdw_engine_current(e);
    ASSERT_TRUE(cur == run);
    sdw_job_release(cur);
    ASSERT_TRUE(sdw_engine_cancel_running(e));
    ASSERT_EQ_INT(sdw_job_wait_done(run), SDW_JOB_CANCELLED);
    sdw_job_get_status(run, &st);
    ASSERT_TRUE(st.step < 1000);
    ASSERT_STR_CONTAINS(st.error, "cancelled at step");
    /* q2 runs next; shutting down cancels it. */
    sdw_engine_shutdown(e);
    ASSERT_EQ_INT(sdw_job_wait_done(q2), SDW_JOB_CANCELLED);
    ASSERT_STATUS(sdw_engine_submit(e, &slow, 1, &extra, &err), SDW_CANCELLED);
    sdw_engine_stats s;
    sdw_engine_get_stats(e, &s);
    ASSERT_EQ_INT(s.submitted, 3);
    ASSERT_EQ_INT(s.cancelled, 3);
    ASSERT_EQ_INT(s.succeeded + s.failed, 0);
    ASSERT_EQ_INT(s.rejected_busy, 1);
    sdw_job_release(run);
    sdw_job_release(q1);
    sdw_job_release(q2);
    sdw_engine_destroy(e);
}

static void test_results_expire_by_time_and_memory(void) {
    sdw_engine_params p = sdw_engine_params_default();
    p.result_ttl_s = 1;
    sdw_engine *e;
    sdw_error err = {0};
    ASSERT_OK(sdw_engine_create(g_model, &p, &e, &err), &err);
    sdw_request r = small(1, 1);
    sdw_job *j;
    ASSERT_OK(sdw_engine_submit(e, &r, 1, &j, &err), &err);
    char id[33];
    snprintf(id, sizeof id, "%s", sdw_job_id(j));
    ASSERT_EQ_INT(sdw_job_wait_done(j), SDW_JOB_SUCCEEDED);
    sdw_job *again = sdw_engine_find(e, id);
    ASSERT_TRUE(again == j);
    sdw_job_release(again);
    sdw_engine_stats s;
    sdw_engine_get_stats(e, &s);
    size_t one = s.bytes_kept; /* what one 64x64 result costs */
    ASSERT_TRUE(one > 64 * 64 * 3);
    usleep(2200000); /* past the 1 s time to live (the worker sweeps every second) */
    ASSERT_TRUE(sdw_engine_find(e, id) == NULL);
    /* The handle still works after expiry. */
    size_t len;
    ASSERT_TRUE(sdw_job_image_png(j, 0, &len) != NULL);
    sdw_job_release(j);
    sdw_engine_destroy(e);

    /* Memory bound: room for two and a half results; the oldest is dropped first. */
    p = sdw_engine_params_default();
    p.result_max_bytes = one * 5 / 2;
    ASSERT_OK(sdw_engine_create(g_model, &p, &e, &err), &err);
    char ids[3][33];
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(sdw_engine_submit(e, &r, 1, &j, &err), &err);
        snprintf(ids[i], 33, "%s", sdw_job_id(j));
        sdw_job_wait_done(j);
        sdw_job_release(j);
    }
    sdw_engine_get_stats(e, &s);
    fprintf(stderr, "  one result %zu bytes; kept %d jobs, %zu bytes\n", one, s.jobs_kept,
            s.bytes_kept);
    ASSERT_EQ_INT(s.jobs_kept, 2);
    ASSERT_TRUE(s.bytes_kept <= p.result_max_bytes);
    ASSERT_TRUE(sdw_engine_find(e, ids[0]) == NULL);
    for (int i = 1; i < 3; i++) {
        j = sdw_engine_find(e, ids[i]);
        ASSERT_TRUE(j != NULL);
        sdw_job_release(j);
    }
    sdw_engine_destroy(e);
}

int main(void) {
    sdw_error err = {0};
    if (sdw_model_load(sdw_test_path("models/tiny-sd15"), NULL, &g_model, &err) != SDW_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    RUN(test_job_equals_direct_generate);
    RUN(test_invalid_request_is_not_queued);
    RUN(test_queue_bound_and_cancel);
    RUN(test_results_expire_by_time_and_memory);
    sdw_model_destroy(g_model);
    return sdw_test_finish();
}
