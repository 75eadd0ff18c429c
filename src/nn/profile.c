/* nn/profile.c — counters behind sdw_profile_* (see profile.h). */
#include "nn/profile.h"

#include <stdatomic.h>

static const char *const k_stage_names[SDW_PROF_N_STAGES] = {"other", "text", "unet", "vae"};
static const char *const k_op_names[SDW_OP_N] = {"conv 3x3",   "conv 1x1",   "linear",
                                                 "attention",  "group norm", "layer norm",
                                                 "activation", "eltwise",    "layout/convert"};

typedef struct counter {
    _Atomic int64_t calls;
    _Atomic int64_t nanos;
    _Atomic int64_t mflop; /* flops / 1e6, so an int64 never overflows */
} counter;

/* Process-wide by design (see the header): a profile measures one generation at a time. */
static atomic_bool g_on;
static _Atomic int g_stage;
static counter g_ctr[SDW_PROF_N_STAGES][SDW_OP_N];

void sdw_profile_enable(bool on) {
    atomic_store(&g_on, on);
}
bool sdw_profile_enabled(void) {
    return atomic_load_explicit(&g_on, memory_order_relaxed);
}

void sdw_profile_reset(void) {
    for (int s = 0; s < SDW_PROF_N_STAGES; s++)
        for (int o = 0; o < SDW_OP_N; o++) {
            atomic_store(&g_ctr[s][o].calls, 0);
            atomic_store(&g_ctr[s][o].nanos, 0);
            atomic_store(&g_ctr[s][o].mflop, 0);
        }
}

sdw_prof_stage sdw__prof_stage(sdw_prof_stage s) {
    return (sdw_prof_stage)atomic_exchange(&g_stage, (int)s);
}

double sdw__prof_begin(void) {
    return sdw_profile_enabled() ? sdw_time_now() : 0.0;
}

void sdw__prof_end(sdw_prof_op op, double t0, double flops) {
    if (t0 == 0.0) return;
    const double dt = sdw_time_now() - t0;
    counter *c = &g_ctr[atomic_load_explicit(&g_stage, memory_order_relaxed)][op];
    atomic_fetch_add_explicit(&c->calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->nanos, (int64_t)(dt * 1e9), memory_order_relaxed);
    atomic_fetch_add_explicit(&c->mflop, (int64_t)(flops * 1e-6), memory_order_relaxed);
}

static void print_stage(FILE *f, int s, double div, const char *title) {
    double total = 0;
    for (int o = 0; o < SDW_OP_N; o++)
        total += (double)atomic_load(&g_ctr[s][o].nanos) * 1e-9;
    if (total <= 0) return;
    fprintf(f, "%s: %.3f s\n", title, total / div);
    fprintf(f, "  %-15s %8s %10s %6s %9s\n", "op", "calls", "seconds", "share", "GFLOP/s");
    for (int o = 0; o < SDW_OP_N; o++) {
        const counter *c = &g_ctr[s][o];
        const int64_t calls = atomic_load(&c->calls);
        if (!calls) continue;
        const double sec = (double)atomic_load(&c->nanos) * 1e-9;
        const double gf = (double)atomic_load(&c->mflop) * 1e-3;
        fprintf(f, "  %-15s %8.0f %10.3f %5.1f%% ", k_op_names[o], (double)calls / div, sec / div,
                100.0 * sec / total);
        if (gf > 0 && sec > 0)
            fprintf(f, "%9.1f\n", gf / sec);
        else
            fprintf(f, "%9s\n", "-");
    }
}

void sdw_profile_print(FILE *f, int n_unet_calls) {
    fprintf(f, "per-op profile (wall time; ops nest inside nothing, so the rows add up)\n");
    for (int s = 0; s < SDW_PROF_N_STAGES; s++) {
        char title[64];
        snprintf(title, sizeof title, "stage %s, total", k_stage_names[s]);
        print_stage(f, s, 1.0, title);
    }
    if (n_unet_calls > 0) print_stage(f, SDW_PROF_UNET, n_unet_calls, "one UNet step (mean)");
}
