/* nn/profile.c — per-run op counters behind sdw_profile_* (see profile.h). */
#include "nn/profile.h"

#include <string.h>

static const char *const k_stage_names[SDW_PROF_N_STAGES] = {"other", "text", "unet", "vae"};
static const char *const k_op_names[SDW_OP_N] = {"conv 3x3",   "conv 1x1",   "linear",
                                                 "attention",  "group norm", "layer norm",
                                                 "activation", "eltwise",    "layout/convert"};

/* The profile the calling thread's ops count into (NULL: none), and the thread's own profile for
 * sdw_profile_enable. Thread-local by design: see profile.h. */
static _Thread_local sdw_profile *t_current;
static _Thread_local sdw_profile t_own;

_Static_assert(SDW_PROFILE_MAX_ENTRIES >= SDW_PROF_N_STAGES * SDW_OP_N,
               "sdw_result_info.profile must hold every (stage, op) pair");

void sdw_profile_init(sdw_profile *p) {
    memset(p, 0, sizeof *p);
    p->stage = SDW_PROF_OTHER;
}

sdw_profile *sdw_profile_attach(sdw_profile *p) {
    sdw_profile *prev = t_current;
    t_current = p;
    return prev;
}

int sdw_profile_export(const sdw_profile *p, sdw_profile_entry *out, int cap) {
    int n = 0;
    for (int s = 0; s < SDW_PROF_N_STAGES; s++)
        for (int o = 0; o < SDW_OP_N && n < cap; o++)
            if (p->ctr[s][o].calls > 0)
                out[n++] = (sdw_profile_entry){.stage = k_stage_names[s], .op = k_op_names[o],
                                               .calls = p->ctr[s][o].calls,
                                               .seconds = p->ctr[s][o].seconds,
                                               .gflop = p->ctr[s][o].flops * 1e-9};
    return n;
}

void sdw_profile_enable(bool on) {
    t_current = on ? &t_own : NULL;
}
bool sdw_profile_enabled(void) {
    return t_current != NULL;
}
void sdw_profile_reset(void) {
    sdw_profile_init(&t_own);
}

sdw_prof_stage sdw__prof_stage(sdw_prof_stage s) {
    sdw_profile *p = t_current;
    if (!p) return SDW_PROF_OTHER;
    const sdw_prof_stage prev = p->stage;
    p->stage = s;
    return prev;
}

double sdw__prof_begin(void) {
    return t_current ? sdw_time_now() : 0.0;
}

void sdw__prof_end(sdw_prof_op op, double t0, double flops) {
    sdw_profile *p = t_current;
    if (t0 == 0.0 || !p) return;
    const double dt = sdw_time_now() - t0;
    p->ctr[p->stage][op].calls++;
    p->ctr[p->stage][op].seconds += dt;
    p->ctr[p->stage][op].flops += flops;
}

/* The rows of one stage (entries in stage order), times divided by div. */
static void print_stage(FILE *f, const sdw_profile_entry *e, int n, const char *stage, double div,
                        const char *title) {
    double total = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(e[i].stage, stage) == 0) total += e[i].seconds;
    if (total <= 0) return;
    fprintf(f, "%s: %.3f s\n", title, total / div);
    fprintf(f, "  %-15s %8s %10s %6s %9s\n", "op", "calls", "seconds", "share", "GFLOP/s");
    for (int i = 0; i < n; i++) {
        if (strcmp(e[i].stage, stage) != 0 || e[i].calls <= 0) continue;
        const double sec = e[i].seconds;
        fprintf(f, "  %-15s %8.0f %10.3f %5.1f%% ", e[i].op, (double)e[i].calls / div, sec / div,
                100.0 * sec / total);
        if (e[i].gflop > 0 && sec > 0)
            fprintf(f, "%9.1f\n", e[i].gflop / sec);
        else
            fprintf(f, "%9s\n", "-");
    }
}

void sdw_profile_print_entries(FILE *f, const sdw_profile_entry *e, int n, int n_unet_calls) {
    fprintf(f, "per-op profile (wall time; ops nest inside nothing, so the rows add up)\n");
    for (int s = 0; s < SDW_PROF_N_STAGES; s++) {
        char title[64];
        snprintf(title, sizeof title, "stage %s, total", k_stage_names[s]);
        print_stage(f, e, n, k_stage_names[s], 1.0, title);
    }
    if (n_unet_calls > 0)
        print_stage(f, e, n, k_stage_names[SDW_PROF_UNET], n_unet_calls, "one UNet step (mean)");
}

void sdw_profile_print(FILE *f, int n_unet_calls) {
    sdw_profile_entry e[SDW_PROF_N_STAGES * SDW_OP_N];
    const int n = sdw_profile_export(&t_own, e, SDW_PROF_N_STAGES * SDW_OP_N);
    sdw_profile_print_entries(f, e, n, n_unet_calls);
}
