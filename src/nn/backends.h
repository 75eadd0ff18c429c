/* nn/backends.h — which compute backend a model gets: the one place that selects an
 * implementation of nn/backend.h (as Redis's ae.c picks ae_epoll.c), so model code never names
 * one. The CPU backend (nn/backend_cpu.h) today; a CUDA one is chosen here when it exists.
 *
 *   sdw_backend *be;
 *   if (sdw_backend_create(&be, &err)) goto fail;
 *   sdw_weights_set_backend(ws, be);        // the layers bound from ws pack on it
 *   ...destroy the weights, then sdw_backend_destroy(be);
 *
 * Thread safety: creating backends is reentrant. */
#ifndef SDW_NN_BACKENDS_H
#define SDW_NN_BACKENDS_H

#include "nn/backend.h"

/* A new backend for one model (free with sdw_backend_destroy after its ops). SDW_E_BACKEND when
 * it cannot start; *out untouched then. */
sdw_status sdw_backend_create(sdw_backend **out, sdw_error *err);

#endif
