/* What belongs to one generation run and ends with it (the generation core, models/diffusion.c):
 * the profile a request asks for arrives in its result, counts that run's ops only, and two
 * runs on two threads keep theirs apart; the run's OpenMP thread count is the model's while it
 * runs and the calling thread's own afterwards. The built-in demo model: no fixture files. */
#include "sdw_test.h"

#include "sdw/image_model.h"

#include <omp.h>
#include <pthread.h>
#include <string.h>

static sdw_request tiny_request(bool profile) {
    sdw_request r = sdw_request_default();
    r.prompt = "a lighthouse";
    r.width = r.height = 64;
    r.steps = 2;
    r.seed = 1;
    r.profile = profile;
    return r;
}

static sdw_image_model *load_demo(int threads) {
    sdw_load_options o = sdw_load_options_default();
    o.n_threads = threads;
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    if (sdw_model_load(NULL, &o, &m, &err) != SDW_OK) {
        fprintf(stderr, "demo load: %s\n", err.msg);
        return NULL;
    }
    return m;
}

static sdw_status run(sdw_image_model *m, bool profile, sdw_result_info *info) {
    sdw_request r = tiny_request(profile);
    sdw_image img = {0};
    sdw_error err = {0};
    sdw_status s = sdw_model_generate(m, &r, NULL, NULL, &img, info, &err);
    if (s) fprintf(stderr, "generate: %s\n", err.msg);
    sdw_image_free(&img);
    return s;
}

static int64_t calls_of(const sdw_result_info *info, const char *stage) {
    int64_t n = 0;
    for (int i = 0; i < info->n_profile; i++)
        if (!strcmp(info->profile[i].stage, stage)) n += info->profile[i].calls;
    return n;
}

/* Every stage's calls of one run, so that runs can be compared entry by entry. */
static bool same_calls(const sdw_result_info *a, const sdw_result_info *b) {
    if (a->n_profile != b->n_profile) return false;
    for (int i = 0; i < a->n_profile; i++)
        if (strcmp(a->profile[i].stage, b->profile[i].stage) ||
            strcmp(a->profile[i].op, b->profile[i].op) || a->profile[i].calls != b->profile[i].calls)
            return false;
    return true;
}

static void test_profile_is_the_runs(void) {
    sdw_image_model *m = load_demo(1);
    ASSERT_TRUE(m != NULL);
    if (!m) return;
    sdw_result_info off, first, second;
    ASSERT_OK(run(m, false, &off), NULL);
    ASSERT_EQ_INT(off.n_profile, 0);
    ASSERT_OK(run(m, true, &first), NULL);
    ASSERT_TRUE(first.n_profile > 0 && first.n_profile <= SDW_PROFILE_MAX_ENTRIES);
    ASSERT_TRUE(calls_of(&first, "text") > 0);
    ASSERT_TRUE(calls_of(&first, "unet") > 0);
    ASSERT_TRUE(calls_of(&first, "vae") > 0);
    for (int i = 0; i < first.n_profile; i++) {
        ASSERT_TRUE(first.profile[i].calls > 0 && first.profile[i].seconds >= 0);
        ASSERT_TRUE(first.profile[i].gflop >= 0);
    }
    /* Stages in order: other, text, unet, vae. */
    static const char *const order[] = {"other", "text", "unet", "vae"};
    int last = -1;
    for (int i = 0; i < first.n_profile; i++) {
        int k = 0;
        while (k < 4 && strcmp(order[k], first.profile[i].stage)) k++;
        ASSERT_TRUE(k < 4 && k >= last);
        last = k;
    }
    /* A second run counts its own ops, not the first run's again (nothing accumulates), and a
     * run without a profile in between leaves no trace. */
    ASSERT_OK(run(m, true, &second), NULL);
    ASSERT_TRUE(same_calls(&first, &second));
    sdw_model_destroy(m);
}

typedef struct worker {
    sdw_image_model *m;
    sdw_result_info info;
    sdw_status s;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    w->s = run(w->m, true, &w->info);
    return NULL;
}

static void test_concurrent_runs_keep_their_profiles(void) {
    sdw_image_model *m = load_demo(1);
    ASSERT_TRUE(m != NULL);
    if (!m) return;
    sdw_result_info solo;
    ASSERT_OK(run(m, true, &solo), NULL);
    worker w[2] = {{.m = m}, {.m = load_demo(1)}};
    ASSERT_TRUE(w[1].m != NULL);
    if (!w[1].m) {
        sdw_model_destroy(m);
        return;
    }
    pthread_t t[2];
    for (int i = 0; i < 2; i++) ASSERT_EQ_INT(pthread_create(&t[i], NULL, work, &w[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(w[i].s, NULL);
        ASSERT_TRUE(same_calls(&solo, &w[i].info)); /* neither run counted the other's ops */
    }
    sdw_model_destroy(w[1].m);
    sdw_model_destroy(m);
}

static int g_threads_in_run;

static bool record_threads(void *user, int step, int total, const sdw_image *preview) {
    g_threads_in_run = omp_get_max_threads();
    return true;
}

static void test_thread_count_is_the_runs(void) {
    sdw_image_model *m = load_demo(1);
    ASSERT_TRUE(m != NULL);
    if (!m) return;
    omp_set_num_threads(3);
    sdw_request r = tiny_request(false);
    sdw_image img = {0};
    sdw_error err = {0};
    ASSERT_OK(sdw_model_generate(m, &r, record_threads, NULL, &img, NULL, &err), &err);
    sdw_image_free(&img);
    ASSERT_EQ_INT(g_threads_in_run, 1);        /* the model's count while it runs */
    ASSERT_EQ_INT(omp_get_max_threads(), 3); /* the caller's own afterwards */
    sdw_model_destroy(m);
}

int main(void) {
    RUN(test_profile_is_the_runs);
    RUN(test_concurrent_runs_keep_their_profiles);
    RUN(test_thread_count_is_the_runs);
    return sdw_test_finish();
}
