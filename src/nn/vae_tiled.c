/* nn/vae_tiled.c — tiled VAE decode and encode as diffusers 0.25.1 AutoencoderKL.enable_tiling()
 * (tiled_decode / tiled_encode, blend_v / blend_h), streamed tile by tile.
 *
 * diffusers decodes every tile first, then walks them in row-major order: each tile is blended
 * in place with the tile above (blend_v: its first e rows ramp from the above tile's last e rows)
 * and then with the tile to its left (blend_h: the same on columns), both neighbours as already
 * blended themselves; then it is cropped to row_limit x row_limit and the crops are concatenated.
 * A tile therefore needs only the last `blend` rows of the tile above and the last `blend`
 * columns of the tile to its left, as blended. So each tile is decoded, blended with those two
 * saved bands, its own bands are saved for its neighbours, and its crop goes straight into the
 * output: scratch is one tile's forward pass plus a band of blend rows across the image, however
 * large the image, and the numbers are diffusers' (same tiles, same blends, same order).
 *
 * One walk serves both directions ("in" = what is cut into tiles, "out" = what is blended):
 *   decode: in = latents, tile tile_latent, stride int(tile_latent·(1−overlap)); out = pixels,
 *           blend int(tile_sample·overlap), row limit tile_sample − blend;
 *   encode: in = pixels, tile tile_sample, stride int(tile_sample·(1−overlap)); out = latent
 *           moments (mean | logvar), blend int(tile_latent·overlap), row limit tile_latent − blend.
 */
#include "nn/vae.h"

#include "io/json_config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameters ---- */

sdw_vae_tiling sdw_vae_tiling_default(const sdw_vae *v, int sample_size) {
    /* diffusers: int(sample_size / 2 ** (len(block_out_channels) - 1)) */
    return (sdw_vae_tiling){
        .tile_sample_size = sample_size,
        .tile_latent_size = sample_size / sdw_vae_downscale(v),
        .overlap = 0.25f,
    };
}

static sdw_status sample_size_from(const sdw_json_config *j, int *sample_size, sdw_error *err) {
    int s = 32; /* AutoencoderKL's default */
    if (sdw_json_config_has(j, "sample_size")) {
        /* an integer, or a list of which diffusers takes the first entry */
        int list[2], n = 0;
        sdw_error e_int = {0}, e_list = {0};
        if (sdw_json_config_int(j, "sample_size", 1, 1 << 20, &s, &e_int) != SDW_OK) {
            if (sdw_json_config_int_list(j, "sample_size", 2, 1, 1 << 20, list, &n, &e_list) ==
                SDW_OK)
                s = list[0];
            else if (e_int.code == SDW_E_INVALID_ARG) /* a number, out of range */
                return sdw_error_set(err, e_int.code, "%s", e_int.msg);
            else if (e_list.code == SDW_E_INVALID_ARG) /* a list with a bad entry */
                return sdw_error_set(err, e_list.code, "%s", e_list.msg);
            else
                return sdw_error_set(err, SDW_E_FORMAT,
                                     "%s: \"sample_size\": want an integer or a list of one or "
                                     "two integers",
                                     j->what);
        }
    }
    *sample_size = s;
    return SDW_OK;
}

sdw_status sdw_vae_sample_size_parse(const char *json, size_t len, int *sample_size,
                                     sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_parse(json, len, "vae config", &j, err);
    if (st == SDW_OK) st = sample_size_from(&j, sample_size, err);
    sdw_json_config_free(&j);
    return st;
}

sdw_status sdw_vae_sample_size_load(const char *path, int *sample_size, sdw_error *err) {
    sdw_json_config j;
    sdw_status st = sdw_json_config_load(path, &j, err);
    if (st == SDW_OK) st = sample_size_from(&j, sample_size, err);
    sdw_json_config_free(&j);
    return st;
}

bool sdw_vae_tiling_decodes_tiled(const sdw_vae_tiling *t, int h, int w) {
    return h > t->tile_latent_size || w > t->tile_latent_size;
}

bool sdw_vae_tiling_encodes_tiled(const sdw_vae_tiling *t, int H, int W) {
    return H > t->tile_sample_size || W > t->tile_sample_size;
}

/* One direction's tile geometry (see the top of the file). up: out = in·s, else in / s. */
typedef struct geometry {
    int tile, stride;  /* in units */
    int blend, limit;  /* out units */
    int s;
    bool up;
} geometry;

static int to_out(const geometry *g, int n) { return g->up ? n * g->s : n / g->s; }

/* diffusers' numbers for one direction; refused where diffusers' concatenated crops would not
 * make an output of the input's size (a row limit that is not the stride in output units). */
static sdw_status make_geometry(const sdw_vae *v, const sdw_vae_tiling *t, bool decode,
                                geometry *g, sdw_error *err) {
    const int s = sdw_vae_downscale(v);
    const double ov = t->overlap;
    if (t->tile_latent_size < 1 || t->tile_sample_size != t->tile_latent_size * s ||
        !(ov >= 0.0 && ov < 1.0))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "VAE tiling: tile %d px / %d latents with overlap %g (want a tile of "
                             "whole latents, %d px each, and an overlap in [0, 1))",
                             t->tile_sample_size, t->tile_latent_size, ov, s);
    const int in_tile = decode ? t->tile_latent_size : t->tile_sample_size;
    const int out_tile = decode ? t->tile_sample_size : t->tile_latent_size;
    /* Python: int(tile * (1 - overlap)), int(tile * overlap) in double */
    g->tile = in_tile;
    g->stride = (int)(in_tile * (1.0 - ov));
    g->blend = (int)(out_tile * ov);
    g->limit = out_tile - g->blend;
    g->s = s;
    g->up = decode;
    if (g->stride < 1 || g->limit != to_out(g, g->stride) ||
        (!decode && g->stride % s != 0))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "VAE tiling: a %d px tile with overlap %g does not tile evenly "
                             "(stride %d %s, row limit %d %s)",
                             t->tile_sample_size, ov, g->stride, decode ? "latents" : "px",
                             g->limit, decode ? "px" : "latents");
    return SDW_OK;
}

/* ---- the streamed walk ---- */

/* Computes one tile: in [th, tw, c_in] -> out [to_out(th), to_out(tw), c_out]. */
typedef sdw_status (*tile_fn)(void *user, const float *in, int th, int tw, float *out,
                              sdw_error *err);

typedef struct walk {
    const geometry *g;
    int c_in, c_out;
    tile_fn fn;
    void *user;
} walk;

/* blend_v: b's first e rows (row width bw) from a band holding a's last `band_rows` rows. */
static void blend_rows(const float *band, int band_rows, float *b, int bh, int bw, int C,
                       int blend) {
    int e = band_rows < bh ? band_rows : bh; /* min(a.h, b.h, blend): band_rows <= min(a.h, blend) */
    e = e < blend ? e : blend;
    const size_t row = (size_t)bw * C;
    for (int y = 0; y < e; y++) {
        /* torch: a·(1 − y/e) + b·(y/e), the weights Python doubles applied in f32 */
        const float wa = (float)(1.0 - (double)y / e), wb = (float)((double)y / e);
        const float *ar = band + (size_t)(band_rows - e + y) * row;
        float *br = b + (size_t)y * row;
        for (size_t k = 0; k < row; k++) br[k] = ar[k] * wa + br[k] * wb;
    }
}

/* blend_h: b's first e columns from a band holding a's last `band_cols` columns (all bh rows). */
static void blend_cols(const float *band, int band_cols, float *b, int bh, int bw, int C,
                       int blend) {
    int e = band_cols < bw ? band_cols : bw;
    e = e < blend ? e : blend;
    for (int x = 0; x < e; x++) {
        const float wa = (float)(1.0 - (double)x / e), wb = (float)((double)x / e);
        for (int y = 0; y < bh; y++) {
            const float *ap = band + ((size_t)y * band_cols + band_cols - e + x) * C;
            float *bp = b + ((size_t)y * bw + x) * C;
            for (int c = 0; c < C; c++) bp[c] = ap[c] * wa + bp[c] * wb;
        }
    }
}

/* in [H, W, c_in] (one image) -> out [to_out(H), to_out(W), c_out]. */
static sdw_status walk_image(const walk *wk, const float *in, int H, int W, float *out,
                             sdw_error *err) {
    const geometry *g = wk->g;
    const int Ci = wk->c_in, C = wk->c_out;
    const int n_rows = (H + g->stride - 1) / g->stride, n_cols = (W + g->stride - 1) / g->stride;
    const int T = to_out(g, g->tile); /* the largest tile's output side */
    const int nb = g->blend < T ? g->blend : T; /* band depth */
    const int OW = to_out(g, W);
    float *tin = sdw_xmalloc((size_t)g->tile * g->tile * Ci * sizeof(float));
    float *tout = sdw_xmalloc((size_t)T * T * C * sizeof(float));
    /* the last nb rows of each tile of the previous tile row (as blended), and their counts */
    float *band_v = sdw_xmalloc((size_t)n_cols * (nb ? nb : 1) * T * C * sizeof(float));
    int *band_v_rows = sdw_xcalloc((size_t)n_cols, sizeof(int));
    /* the last nb columns of the previous tile in this row: [th, cols, C] */
    float *band_h = sdw_xmalloc((size_t)T * (nb ? nb : 1) * C * sizeof(float));
    int band_h_cols = 0;
    sdw_status st = SDW_OK;
    for (int i = 0; i < n_rows; i++) {
        const int y0 = i * g->stride, th = H - y0 < g->tile ? H - y0 : g->tile;
        const int oh = to_out(g, th);
        for (int j = 0; j < n_cols; j++) {
            const int x0 = j * g->stride, tw = W - x0 < g->tile ? W - x0 : g->tile;
            const int ow = to_out(g, tw);
            for (int y = 0; y < th; y++)
                memcpy(tin + (size_t)y * tw * Ci, in + ((size_t)(y0 + y) * W + x0) * Ci,
                       (size_t)tw * Ci * sizeof(float));
            if ((st = wk->fn(wk->user, tin, th, tw, tout, err)) != SDW_OK) goto done;
            float *bv = band_v + (size_t)j * nb * T * C; /* rows of width ow (same column) */
            if (i > 0) blend_rows(bv, band_v_rows[j], tout, oh, ow, C, g->blend);
            if (j > 0) blend_cols(band_h, band_h_cols, tout, oh, ow, C, g->blend);
            /* this tile as its neighbours will see it */
            const int keep_rows = oh < nb ? oh : nb, keep_cols = ow < nb ? ow : nb;
            memcpy(bv, tout + (size_t)(oh - keep_rows) * ow * C,
                   (size_t)keep_rows * ow * C * sizeof(float));
            band_v_rows[j] = keep_rows;
            for (int y = 0; y < oh; y++)
                memcpy(band_h + (size_t)y * keep_cols * C, tout + ((size_t)y * ow + ow - keep_cols) * C,
                       (size_t)keep_cols * C * sizeof(float));
            band_h_cols = keep_cols;
            /* tile[:limit, :limit] at (i·limit, j·limit) of the concatenation */
            const int ch = oh < g->limit ? oh : g->limit, cw = ow < g->limit ? ow : g->limit;
            for (int y = 0; y < ch; y++)
                memcpy(out + ((size_t)(i * g->limit + y) * OW + (size_t)j * g->limit) * C,
                       tout + (size_t)y * ow * C, (size_t)cw * C * sizeof(float));
        }
    }
done:
    free(tin);
    free(tout);
    free(band_v);
    free(band_v_rows);
    free(band_h);
    return st;
}

/* ---- decode ---- */

static sdw_status decode_tile(void *user, const float *z, int h, int w, float *img,
                              sdw_error *err) {
    (void)err;
    sdw_vae_decode(user, z, 1, h, w, img);
    return SDW_OK;
}

sdw_status sdw_vae_decode_tiled(const sdw_vae *v, const float *z, int B, int h, int w,
                                const sdw_vae_tiling *t, float *img, sdw_error *err) {
    SDW_ASSERT(v && z && t && img && B >= 1 && h >= 1 && w >= 1);
    geometry g;
    sdw_status st = make_geometry(v, t, true, &g, err);
    if (st != SDW_OK) return st;
    if (!sdw_vae_tiling_decodes_tiled(t, h, w)) { /* diffusers decodes such latents whole */
        sdw_vae_decode(v, z, B, h, w, img);
        return SDW_OK;
    }
    const sdw_vae_config *c = sdw_vae_get_config(v);
    const walk wk = {&g, c->latent_channels, c->out_channels, decode_tile, (void *)v};
    const size_t n_in = (size_t)h * w * c->latent_channels;
    const size_t n_out = (size_t)h * g.s * w * g.s * c->out_channels;
    for (int b = 0; b < B && st == SDW_OK; b++)
        st = walk_image(&wk, z + b * n_in, h, w, img + b * n_out, err);
    return st;
}

/* ---- encode ---- */

/* The moments diffusers blends: mean | logvar per pixel [h, w, 2·latent]. sdw_vae_encode hands
 * out std = exp(0.5·clamp(logvar, −30, 20)), so logvar comes back as 2·log(std) (exact but for
 * rounding, ~1e-7, inside the clamp range; outside it the clamp is applied before the blend
 * rather than after: a difference only where the encoder's logvar leaves [−30, 20]). */
typedef struct encode_ctx {
    const sdw_vae *v;
    int lat;
    float *mean, *std; /* one tile's posterior */
} encode_ctx;

static sdw_status encode_tile(void *user, const float *img, int H, int W, float *mom,
                              sdw_error *err) {
    encode_ctx *e = user;
    sdw_status st = sdw_vae_encode(e->v, img, 1, H, W, e->mean, e->std, err);
    if (st != SDW_OK) return st;
    const int s = sdw_vae_downscale(e->v);
    const size_t n_pix = (size_t)(H / s) * (W / s);
    for (size_t p = 0; p < n_pix; p++)
        for (int c = 0; c < e->lat; c++) {
            mom[p * 2 * e->lat + c] = e->mean[p * e->lat + c];
            mom[p * 2 * e->lat + e->lat + c] = 2.0f * logf(e->std[p * e->lat + c]);
        }
    return SDW_OK;
}

sdw_status sdw_vae_encode_tiled(const sdw_vae *v, const float *img, int B, int H, int W,
                                const sdw_vae_tiling *t, float *mean, float *std,
                                sdw_error *err) {
    SDW_ASSERT(v && img && t && mean && std);
    geometry g;
    sdw_status st = make_geometry(v, t, false, &g, err);
    if (st != SDW_OK) return st;
    if (!sdw_vae_tiling_encodes_tiled(t, H, W) || B < 1 || H < g.s || W < g.s || H % g.s ||
        W % g.s || !sdw_vae_has_encoder(v))
        /* whole (as diffusers), or refused by the plain encode with its message */
        return sdw_vae_encode(v, img, B, H, W, mean, std, err);
    const int lat = sdw_vae_get_config(v)->latent_channels, Ci = sdw_vae_get_config(v)->in_channels;
    const size_t n_tile = (size_t)(g.tile / g.s) * (g.tile / g.s) * lat;
    const size_t n_lat = (size_t)(H / g.s) * (W / g.s);
    encode_ctx e = {v, lat, sdw_xmalloc(n_tile * sizeof(float)),
                    sdw_xmalloc(n_tile * sizeof(float))};
    float *mom = sdw_xmalloc(n_lat * 2 * lat * sizeof(float)); /* [h, w, mean | logvar] */
    const walk wk = {&g, Ci, 2 * lat, encode_tile, &e};
    for (int b = 0; b < B; b++) {
        if ((st = walk_image(&wk, img + (size_t)b * H * W * Ci, H, W, mom, err)) != SDW_OK)
            goto done;
        /* DiagonalGaussianDistribution over the blended moments */
        float *m = mean + (size_t)b * n_lat * lat, *sd = std + (size_t)b * n_lat * lat;
        for (size_t p = 0; p < n_lat; p++)
            for (int c = 0; c < lat; c++) {
                float lv = mom[p * 2 * lat + lat + c];
                lv = lv < -30.0f ? -30.0f : lv > 20.0f ? 20.0f : lv;
                m[p * lat + c] = mom[p * 2 * lat + c];
                sd[p * lat + c] = expf(0.5f * lv);
            }
    }
done:
    free(e.mean);
    free(e.std);
    free(mom);
    return st;
}
