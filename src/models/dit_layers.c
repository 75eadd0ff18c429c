/* The diffusion transformers' shared binders and embedder (models/dit_layers.h). */
#include "models/dit_layers.h"

#include <stdarg.h>
#include <stdio.h>

const char *sdw_dit_name(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, SDW_DIT_NAME_LEN, fmt, ap);
    va_end(ap);
    return buf;
}

sdw_status sdw_dit_bind_linear(sdw_dit_binder *bd, sdw_linear *l, const char *name, int in,
                               int out, sdw_error *err) {
    const sdw_status st = sdw_linear_bind(l, bd->ws, name, in, out, true, err);
    if (st == SDW_OK) *bd->n_params += ((size_t)in + 1) * (size_t)out;
    return st;
}

sdw_status sdw_dit_bind_stacked(sdw_dit_binder *bd, sdw_linear *l, const char *const *names,
                                int n, int in, int out, sdw_error *err) {
    const sdw_status st = sdw_linear_bind_stacked(l, bd->ws, names, n, in, out, true, err);
    if (st == SDW_OK) *bd->n_params += ((size_t)in + 1) * (size_t)out * (size_t)n;
    return st;
}

sdw_status sdw_dit_bind_rms(sdw_dit_binder *bd, sdw_rms_norm *r, const char *name,
                            sdw_error *err) {
    const sdw_status st = sdw_rms_norm_bind(r, bd->ws, name, bd->head_dim, bd->qk_eps, err);
    if (st == SDW_OK) *bd->n_params += (size_t)bd->head_dim;
    return st;
}

sdw_status sdw_dit_bind_embedder(sdw_dit_binder *bd, sdw_dit_embedder *e, const char *prefix,
                                 int in, int D, sdw_error *err) {
    char n[SDW_DIT_NAME_LEN];
    const sdw_status st =
        sdw_dit_bind_linear(bd, &e->linear_1, sdw_dit_name(n, "%s.linear_1", prefix), in, D, err);
    if (st) return st;
    return sdw_dit_bind_linear(bd, &e->linear_2, sdw_dit_name(n, "%s.linear_2", prefix), D, D,
                               err);
}

void sdw_dit_embedder_forward(const sdw_dit_embedder *e, const float *x, int B, float *tmp,
                              float *y) {
    sdw_linear_forward(&e->linear_1, sdw_rows(x, B), sdw_rows(tmp, B), 0);
    sdw_silu(tmp, (size_t)B * e->linear_1.out);
    sdw_linear_forward(&e->linear_2, sdw_rows(tmp, B), sdw_rows(y, B), 0);
}
