/* nn/profile.h — a per-op wall-time profile of the forward passes (`sdw generate --profile`).
 *
 *   sdw_profile_enable(true);
 *   ... generate ...
 *   sdw_profile_print(stderr, n_unet_calls);   // table per stage (text / unet / vae) and op
 *   sdw_profile_reset();
 *
 * Each nn op adds its wall time (and the flops of its matrix products) to a counter of its
 * (stage, op) pair; a model's forward names its stage. Disabled by default; when disabled an
 * op costs one relaxed atomic load. Like the log level, the counters are process-wide state:
 * with several models generating at once the numbers mix (a profile is a measurement tool for
 * one generation at a time, not a per-job report). Counter updates are atomic.
 */
#ifndef SDW_NN_PROFILE_H
#define SDW_NN_PROFILE_H

#include "core/common.h"

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

void sdw_profile_enable(bool on);
bool sdw_profile_enabled(void);
void sdw_profile_reset(void);
/* Prints the table: per stage and op, calls, seconds, share of the stage and GFLOP/s; when
 * n_unet_calls > 0 also the UNet rows divided by it (the profile of one step). */
void sdw_profile_print(FILE *f, int n_unet_calls);

/* ---- for the ops and forwards (library-internal) ---- */
/* Sets the stage later ops count under; returns the previous one (restore it when done). */
sdw_prof_stage sdw__prof_stage(sdw_prof_stage s);
/* Start time, or 0 when profiling is off. */
double sdw__prof_begin(void);
/* Adds the time since t0 (a sdw__prof_begin value; 0 = off, nothing recorded) and flops. */
void sdw__prof_end(sdw_prof_op op, double t0, double flops);

#endif
