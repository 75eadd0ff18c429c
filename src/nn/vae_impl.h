/* nn/vae_impl.h — VAE internals exposed for tests only (not part of the contract). */
#ifndef SDW_NN_VAE_IMPL_H
#define SDW_NN_VAE_IMPL_H

#include "nn/vae.h"

/* Upsample2D ("<prefix>.conv" weights, c channels) as sdw_vae_decode computes it (phase-split):
 * x [B,H,W,c] -> *y a new malloc'd [B,2H,2W,c] (free it). A binding failure is returned with
 * err set, *y untouched. */
sdw_status sdw__vae_upsample(sdw_weights *ws, const char *prefix, int c, const float *x, int B,
                             int H, int W, float **y, sdw_error *err);

#endif
