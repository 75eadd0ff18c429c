/* nn/profile.h — a per-op wall-time profile of one run's forward passes (sdw_request.profile;
 * `sdw generate --profile`).
 *
 *   sdw_profile prof;
 *   sdw_profile_init(&prof);
 *   sdw_profile *prev = sdw_profile_attach(&prof); // this thread's ops count into prof
 *   ... text encoders, denoiser, VAE ...
 *   sdw_profile_attach(prev);
 *   info->n_profile = sdw_profile_export(&prof, info->profile, SDW_PROFILE_MAX_ENTRIES);
 *
 * Each nn op adds its wall time (and the flops of its matrix products) to the counter of its
 * (stage, op) pair in the profile attached to the calling thread; a model's forward names its
 * stage. The profile belongs to the run that attached it: the generation core attaches one on
 * the thread running a request that asks for it, and two runs on two threads (two engines) keep
 * apart. Why the current profile is a thread-local pointer rather than an argument of every op:
 * the ops are called from the models' forwards, several layers below the run, with signatures
 * that carry no run context; and a run's ops are all called from the one thread running it
 * (OpenMP workers run inside the ops, they do not call them), so that thread names the run.
 * With no profile attached an op costs one thread-local load and no clock read.
 * Thread safety: a profile is written only by the thread it is attached to; attach it to one
 * thread at a time.
 */
#ifndef SDW_NN_PROFILE_H
#define SDW_NN_PROFILE_H

#include "core/common.h"
#include "sdw/image_model.h"

typedef enum sdw_prof_stage {
    SDW_PROF_OTHER,
    SDW_PROF_TEXT, /* text encoders */
    SDW_PROF_UNET, /* the denoiser */
    SDW_PROF_VAE,  /* VAE decode / encode */
    SDW_PROF_N_STAGES
} sdw_prof_stage;

typedef enum sdw_prof_op {
    SDW_OP_CONV3,      /* 3x3 (and other spatial) convolutions */
    SDW_OP_CONV1,      /* 1x1 convolutions */
    SDW_OP_LINEAR,     /* linear layers (q/k/v/out projections, feed-forward, proj_in/out) */
    SDW_OP_ATTENTION,  /* softmax(q kᵀ) v */
    SDW_OP_GROUP_NORM, /* GroupNorm (+ fused SiLU) */
    SDW_OP_LAYER_NORM,
    SDW_OP_ACT,     /* GEGLU, GELU, SiLU */
    SDW_OP_ELTWISE, /* residual adds, broadcasts */
    SDW_OP_LAYOUT,  /* upsample, concat, layout shuffles, precision conversions */
    SDW_OP_N
} sdw_prof_op;

/* One run's counters. Plain data: the caller owns the storage (a run keeps it on its stack). */
typedef struct sdw_profile {
    struct {
        int64_t calls;
        double seconds, flops;
    } ctr[SDW_PROF_N_STAGES][SDW_OP_N];
    sdw_prof_stage stage; /* the stage later ops count under */
} sdw_profile;

/* Zeroes p's counters; its stage is SDW_PROF_OTHER. */
void sdw_profile_init(sdw_profile *p);
/* Makes p (NULL = none) the profile the calling thread's ops count into; returns the one it
 * replaces, to attach again when done. p must stay valid while attached. */
sdw_profile *sdw_profile_attach(sdw_profile *p);
/* p's counters as result entries (sdw_result_info.profile): one per (stage, op) that ran, stages
 * in order (other, text, unet, vae), at most cap. Returns how many were written. */
int sdw_profile_export(const sdw_profile *p, sdw_profile_entry *out, int cap);
/* Prints entries as a table: per stage and op, calls, seconds, share of the stage and GFLOP/s;
 * when n_unet_calls > 0 also the denoiser rows divided by it (the profile of one step). */
void sdw_profile_print_entries(FILE *f, const sdw_profile_entry *e, int n, int n_unet_calls);

/* A profile owned by the calling thread, for measuring ops outside a run (tests, tools):
 * enable(true) attaches it, enable(false) detaches whatever is attached; print shows it as
 * sdw_profile_print_entries does; reset zeroes it. */
void sdw_profile_enable(bool on);
bool sdw_profile_enabled(void); /* whether the calling thread has a profile attached */
void sdw_profile_reset(void);
void sdw_profile_print(FILE *f, int n_unet_calls);

/* ---- for the ops and forwards (library-internal) ---- */
/* Sets the stage later ops count under; returns the previous one (restore it when done). With no
 * profile attached: nothing, SDW_PROF_OTHER. */
sdw_prof_stage sdw__prof_stage(sdw_prof_stage s);
/* Start time, or 0 when the calling thread has no profile attached. */
double sdw__prof_begin(void);
/* Adds the time since t0 (a sdw__prof_begin value; 0 = off, nothing recorded) and flops. */
void sdw__prof_end(sdw_prof_op op, double t0, double flops);

#endif
