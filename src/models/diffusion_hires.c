/* AUTOMATIC1111's "hires fix" for every family on the generation core (models/diffusion.h):
 * StableDiffusionProcessingTxt2Img.sample / sample_hr_pass (modules/processing.py). The first
 * pass is text-to-image at the request's size; its latents are then enlarged —
 *
 *   latent upscalers   torch.nn.functional.interpolate(samples, size=(H2 // f, W2 // f), mode,
 *                      antialias) with the modes of shared.latent_upscale_modes;
 *   image upscalers    decode, (x + 1) / 2 clamped, 255 x truncated to uint8 (A1111's
 *                      astype(np.uint8)), images.resize_image(0, ..., upscaler) with Pillow,
 *                      v / 255 · 2 − 1, VAE encode: the posterior's sample (mean + std · eps),
 *                      scaled —
 *
 * cropped to the second size when both resize sides were given with another aspect (A1111's
 * truncate_x / truncate_y: the middle, the odd latent at the end), and image-to-image runs at
 * the second size from them (sdw__diffusion_pass with given latents): the last hires steps of a
 * schedule of int(steps / min(strength, 0.999)), from the latents noised at the first of them.
 *
 * Noise, as A1111 draws it: the second pass's ImageRNG is created afresh with the image's seed,
 * so its start noise is the first randn of that seed at the second pass's latent shape, and the
 * sampler's later draws (ancestral samplers) continue that generator. The image upscalers'
 * posterior sample comes from torch's global CPU generator (ldm's
 * DiagonalGaussianDistribution.sample: torch.randn(shape) without a generator), which A1111's
 * rng.randn(seed) seeded with torch.manual_seed(seed) when the first pass drew its noise and
 * nothing draws from in between: the first CPU randn of the seed, whichever generator (CPU or
 * GPU) the request's noise uses.
 *
 * The samplers are this project's (diffusers' schedules), not A1111's k-diffusion ones, so an
 * image matches A1111's only as far as the first pass does; the second pass is, by definition,
 * this image-to-image run of the enlarged first pass (tests/models/test_hires.c). */
#include "models/diffusion.h"

#include "io/image.h"
#include "nn/nn.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"

#include <math.h>
#include <string.h>

/* ---- torch.nn.functional.interpolate (align_corners=False), CPU float32 ---- */

/* One dimension's resampling: for output i, n[i] taps from input index idx[i·k + j] with
 * weight wt[i·k + j], k taps at most. */
typedef struct taps {
    int k;
    int *n, *idx;
    float *wt;
} taps;

static void taps_alloc(taps *t, int out, int k) {
    t->k = k;
    t->n = sdw_xmalloc((size_t)out * sizeof(int));
    t->idx = sdw_xmalloc((size_t)out * k * sizeof(int));
    t->wt = sdw_xmalloc((size_t)out * k * sizeof(float));
}

static void taps_free(taps *t) {
    free(t->n);
    free(t->idx);
    free(t->wt);
}

/* area_pixel_compute_scale without a scale factor (size given): input / output in float. */
static float pixel_scale(int in, int out) { return (float)in / (float)out; }

/* area_pixel_compute_source_index (align_corners False): scale·(i + 0.5) − 0.5 in float,
 * clamped at 0 except for cubic. torch's x86 builds compile these kernels with fused
 * multiply-adds (its AVX2/AVX-512 kernels, what A1111 runs): a·b + c is fmaf(a, b, c) here,
 * wherever the compiler fuses it there, so the results are torch's to the bit. */
static float source_index(float scale, int i, bool cubic) {
    const float src = fmaf(scale, (float)i + 0.5f, -0.5f);
    return !cubic && src < 0 ? 0.0f : src;
}

/* upsample_nearest2d (nearest_idx: copies and exact doubling special-cased) and
 * _upsample_nearest_exact2d. */
static void nearest_taps(int in, int out, bool exact, taps *t) {
    taps_alloc(t, out, 1);
    const float scale = pixel_scale(in, out);
    for (int i = 0; i < out; i++) {
        int src;
        if (exact)
            src = (int)floorf((float)((i + 0.5) * (double)scale));
        else if (out == in)
            src = i;
        else if (out == 2 * in)
            src = i >> 1;
        else
            src = (int)floorf((float)i * scale);
        t->n[i] = 1;
        t->idx[i] = SDW_MIN(src, in - 1);
        t->wt[i] = 1.0f;
    }
}

/* upsample_bilinear2d: compute_source_index_and_lambda. */
static void linear_taps(int in, int out, taps *t) {
    taps_alloc(t, out, 2);
    const float scale = pixel_scale(in, out);
    for (int i = 0; i < out; i++) {
        int i0 = i, i1 = i;
        float l1 = 0.0f;
        if (out != in) {
            const float src = source_index(scale, i, false);
            i0 = SDW_MIN((int)floorf(src), in - 1);
            i1 = i0 + (i0 < in - 1 ? 1 : 0);
            l1 = fminf(fmaxf(src - (float)i0, 0.0f), 1.0f);
        }
        t->n[i] = 2;
        t->idx[2 * i] = i0;
        t->idx[2 * i + 1] = i1;
        t->wt[2 * i] = 1.0f - l1;
        t->wt[2 * i + 1] = l1;
    }
}

/* cubic_convolution1 / 2 in float, A = −0.75 (fused as compiled: see source_index). */
static float cubic1(float x, float A) { return fmaf(fmaf(A + 2, x, -(A + 3)) * x, x, 1.0f); }
static float cubic2(float x, float A) {
    return fmaf(fmaf(fmaf(A, x, -(5 * A)), x, 8 * A), x, -(4 * A));
}

/* upsample_bicubic2d: four taps around floor(src), indices clamped to the edge. */
static void cubic_taps(int in, int out, taps *t) {
    taps_alloc(t, out, 4);
    const float scale = pixel_scale(in, out), A = -0.75f;
    for (int i = 0; i < out; i++) {
        const float src = source_index(scale, i, true);
        const int i0 = SDW_MIN((int)floorf(src), in - 1);
        const float l = fminf(fmaxf(src - (float)i0, 0.0f), 1.0f), r = (float)(1.0 - l);
        const float w[4] = {cubic2((float)(l + 1.0), A), cubic1(l, A), cubic1(r, A),
                            cubic2((float)(r + 1.0), A)};
        t->n[i] = 4;
        for (int j = 0; j < 4; j++) {
            t->idx[4 * i + j] = SDW_MAX(SDW_MIN(i0 - 1 + j, in - 1), 0);
            t->wt[4 * i + j] = w[j];
        }
    }
}

/* The antialiasing filters (HelperInterpLinear / HelperInterpCubic::aa_filter), with their mix
 * of float and double arithmetic; the cubic is Keys' a = −0.5, as Pillow's. */
static float aa_linear(float x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? (float)(1.0 - x) : 0.0f;
}

static float aa_cubic(float x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return (float)(((a + 2.0) * x - (a + 3.0)) * x * x + 1);
    if (x < 2.0) return (float)((double)fmaf(fmaf(x - 5, x, 8), x, -4) * a);
    return 0.0f;
}

/* _compute_indices_min_size_weights_aa: the filter stretched by the scale when shrinking,
 * centred on scale·(i + 0.5), its taps normalised to sum 1. */
static void aa_taps(int in, int out, bool cubic, taps *t) {
    const float scale = pixel_scale(in, out);
    const int interp = cubic ? 4 : 2;
    const float support = (float)(scale >= 1.0 ? (interp * 0.5) * scale : interp * 0.5);
    const int k = (int)ceilf(support) * 2 + 1;
    const float invscale = (float)(scale >= 1.0 ? 1.0 / scale : 1.0);
    taps_alloc(t, out, k);
    for (int i = 0; i < out; i++) {
        const float center = (float)(scale * (i + 0.5));
        const int xmin = (int)SDW_MAX((int64_t)(center - support + 0.5), (int64_t)0);
        int n = (int)SDW_MIN((int64_t)(center + support + 0.5), (int64_t)in) - xmin;
        n = SDW_MAX(SDW_MIN(n, k), 0);
        float total = 0.0f, *w = t->wt + (size_t)i * k;
        for (int j = 0; j < n; j++) {
            const float x = (float)(((float)(j + xmin) - center + 0.5) * invscale);
            w[j] = cubic ? aa_cubic(x) : aa_linear(x);
            total += w[j];
            t->idx[(size_t)i * k + j] = xmin + j;
        }
        if (total != 0.0f)
            for (int j = 0; j < n; j++) w[j] /= total;
        t->n[i] = n;
    }
}

static void make_taps(int in, int out, sdw_upscaler u, taps *t) {
    switch (u) {
    case SDW_UPSCALE_LATENT_NEAREST: nearest_taps(in, out, false, t); break;
    case SDW_UPSCALE_LATENT_NEAREST_EXACT: nearest_taps(in, out, true, t); break;
    case SDW_UPSCALE_LATENT_BICUBIC: cubic_taps(in, out, t); break;
    case SDW_UPSCALE_LATENT_ANTIALIASED: aa_taps(in, out, false, t); break;
    case SDW_UPSCALE_LATENT_BICUBIC_ANTIALIASED: aa_taps(in, out, true, t); break;
    default: linear_taps(in, out, t); break;
    }
}

/* out[o] = Σ_j x[idx_j · stride] · w_j over o's taps, as torch's Interpolate::eval: the
 * two-tap (linear) kernel returns t0·w0 + t1·w1, the others (and interpolate_aa_single_dim)
 * start at t0·w0 and add tj·wj in tap order; fused as compiled (see source_index). */
static float apply_taps(const taps *t, int o, const float *x, size_t stride) {
    const int *idx = t->idx + (size_t)o * t->k;
    const float *w = t->wt + (size_t)o * t->k;
    if (t->k == 2)
        return fmaf(x[(size_t)idx[0] * stride], w[0], x[(size_t)idx[1] * stride] * w[1]);
    float acc = x[(size_t)idx[0] * stride] * w[0];
    for (int j = 1; j < t->n[o]; j++) acc = fmaf(x[(size_t)idx[j] * stride], w[j], acc);
    return acc;
}

void sdw__latent_upscale(const float *x, int C, int h, int w, int oh, int ow, sdw_upscaler u,
                         float *out) {
    SDW_ASSERT(sdw_upscaler_is_latent(u) && h > 0 && w > 0 && oh > 0 && ow > 0);
    /* Separable: along the width, then the height. torch's nested 2-D kernels compute each
     * output's row sums first and weight them by the height taps: the same float operations
     * in the same order; the antialiased kernel runs these two passes itself (a dimension
     * whose size does not change is skipped there, and is an exact copy here). */
    taps tw, th;
    make_taps(w, ow, u, &tw);
    make_taps(h, oh, u, &th);
    float *tmp = sdw_xmalloc((size_t)C * h * ow * sizeof(float));
    for (int r = 0; r < C * h; r++)
        for (int o = 0; o < ow; o++)
            tmp[(size_t)r * ow + o] = apply_taps(&tw, o, x + (size_t)r * w, 1);
    for (int c = 0; c < C; c++)
        for (int o = 0; o < oh; o++)
            for (int q = 0; q < ow; q++)
                out[((size_t)c * oh + o) * ow + q] =
                    apply_taps(&th, o, tmp + (size_t)c * h * ow + q, (size_t)ow);
    free(tmp);
    taps_free(&tw);
    taps_free(&th);
}

/* ---- A1111's image upscalers (modules/images.py resize_image, modules/upscaler.py) ---- */

/* Pillow's Image.resize(size, NEAREST): ImagingScaleAffine's source coordinates, a running
 * double sum from half a step (truncated to int). */
static void resize_nearest(const sdw_image *in, int w, int h, sdw_image *out) {
    const int c = in->channels;
    *out = (sdw_image){.width = w, .height = h, .channels = c,
                       .data = sdw_xmalloc((size_t)w * h * c)};
    int *xs = sdw_xmalloc((size_t)w * sizeof(int));
    const double ax = (double)in->width / w, ay = (double)in->height / h;
    double xo = ax * 0.5, yo = ay * 0.5;
    for (int x = 0; x < w; x++, xo += ax) xs[x] = SDW_MIN((int)xo, in->width - 1);
    for (int y = 0; y < h; y++, yo += ay) {
        const uint8_t *row = in->data + (size_t)SDW_MIN((int)yo, in->height - 1) * in->width * c;
        for (int x = 0; x < w; x++) memcpy(out->data + ((size_t)y * w + x) * c, row + xs[x] * c, c);
    }
    free(xs);
}

void sdw__image_upscale(const sdw_image *im, int w, int h, sdw_upscaler u, sdw_image *out) {
    SDW_ASSERT(!sdw_upscaler_is_latent(u));
    /* resize(): "None" is one Lanczos resize. An upscaler runs only when enlarging, by
     * scale = max(w / width, h / height): Upscaler.upscale does one do_upscale to
     * int(side · scale) (dest = int(side · scale // 8 · 8) is reached at once), then Lanczos
     * to dest when that differs; resize() finishes with Lanczos to w x h when needed. */
    const double scale = fmax((double)w / im->width, (double)h / im->height);
    if (u == SDW_UPSCALE_NONE || scale <= 1.0) {
        sdw_image_resize(im, w, h, out);
        return;
    }
    sdw_image a, b;
    const int sw = (int)(im->width * scale), sh = (int)(im->height * scale);
    if (u == SDW_UPSCALE_NEAREST) resize_nearest(im, sw, sh, &a);
    else sdw_image_resize(im, sw, sh, &a);
    const int dw = (int)(floor(im->width * scale / 8) * 8);
    const int dh = (int)(floor(im->height * scale / 8) * 8);
    if (a.width != dw || a.height != dh) {
        sdw_image_resize(&a, dw, dh, &b);
        sdw_image_free(&a);
        a = b;
    }
    if (a.width != w || a.height != h) {
        sdw_image_resize(&a, w, h, &b);
        sdw_image_free(&a);
        a = b;
    }
    *out = a;
}

/* ---- the second pass ---- */

/* A1111's setup_img2img_steps with the steps given: (calls that run, schedule). */
static void hires_steps(const sdw_request *req, int *steps, int *schedule) {
    *steps = req->hires.steps ? req->hires.steps : req->steps;
    *schedule = (int)(*steps / fmin(req->hires.strength, 0.999));
}

/* The second pass's request: the second size and steps, the rest the first's. */
static sdw_request second_request(const sdw_request *req) {
    sdw_request r = *req;
    int schedule;
    hires_steps(req, &r.steps, &schedule);
    r.width = req->hires.width;
    r.height = req->hires.height;
    r.hires.enable = false;
    return r;
}

sdw_status sdw__hires_calls(const sdw_diffusion *d, const sdw_request *req, int *calls,
                            sdw_error *err) {
    int steps, schedule;
    hires_steps(req, &steps, &schedule);
    const int f = d->vae_factor;
    const sdw_request r = second_request(req);
    sdw_sampler *s = NULL;
    sdw_status st = sdw__diffusion_sampler(d, &r, schedule, r.height / f, r.width / f, &s, err);
    if (!st) st = sdw_sampler_set_begin(s, (schedule - steps) * sdw_sampler_order(s), err);
    if (!st) *calls = sdw_sampler_n_calls(s) - sdw_sampler_begin(s);
    sdw_sampler_destroy(s);
    return st;
}

/* The image upscalers: the first pass's latents [C, h, w] decoded as A1111 does (VAE, tiled
 * by the request's rule at the first size), resized to the enlarged size, the second size's
 * window cut at (x0, y0) pixels, encoded and sampled into start [C, th, tw] (scaled). */
static sdw_status image_upscale(const sdw_diffusion *d, const sdw_request *req, const float *lat,
                                int h, int w, int x0, int y0, int64_t seed, float *start,
                                sdw_error *err) {
    const int f = d->vae_factor, C = d->latent_channels;
    const int W = w * f, H = h * f, TW = req->hires.width, TH = req->hires.height;
    const int th = TH / f, tw = TW / f;
    const size_t n_lat = (size_t)C * h * w, n_start = (size_t)C * th * tw;
    sdw_status s = SDW_OK;
    /* decode_first_stage: z = latents / scaling + shift */
    float *z = sdw_xmalloc(n_lat * sizeof(float)), *zn = sdw_xmalloc(n_lat * sizeof(float));
    for (size_t i = 0; i < n_lat; i++) z[i] = lat[i] / d->vae_scaling + d->vae_shift;
    sdw_nchw_to_nhwc(z, 1, C, h, w, zn);
    float *pix = sdw_xmalloc((size_t)W * H * 3 * sizeof(float));
    if (sdw__codec_tiled(d, req, W, H)) {
        const sdw_vae_tiling t = sdw__codec_tiling(d);
        s = sdw_vae_decode_tiled(d->vae, zn, 1, h, w, &t, pix, err);
    } else {
        sdw_vae_decode(d->vae, zn, 1, h, w, pix);
    }
    free(z);
    free(zn);
    if (s) {
        free(pix);
        return s;
    }
    /* torch.clamp((x + 1) / 2, 0, 1), then 255 · x astype(uint8): truncated, not rounded */
    sdw_image first = {.width = W, .height = H, .channels = 3,
                       .data = sdw_xmalloc((size_t)W * H * 3)};
    for (size_t i = 0; i < (size_t)W * H * 3; i++) {
        float v = (pix[i] + 1.0f) / 2.0f;
        v = v < 0 ? 0 : v > 1 ? 1 : v;
        first.data[i] = (uint8_t)(255.0f * v);
    }
    free(pix);
    sdw_image big;
    sdw__image_upscale(&first, req->hires.up_width, req->hires.up_height, req->hires.upscaler,
                       &big);
    sdw_image_free(&first);
    /* the window, as float NHWC v / 255 · 2 − 1 (images_tensor_to_samples), tapped NCHW */
    float *img = sdw_xmalloc((size_t)TW * TH * 3 * sizeof(float));
    for (int y = 0; y < TH; y++)
        for (int x = 0; x < TW; x++)
            for (int c = 0; c < 3; c++) {
                const uint8_t v = big.data[((size_t)(y0 + y) * big.width + x0 + x) * 3 + c];
                img[((size_t)y * TW + x) * 3 + c] = (float)v / 255.0f * 2.0f - 1.0f;
            }
    sdw_image_free(&big);
    if (d->tap) {
        float *nchw = sdw_xmalloc((size_t)TW * TH * 3 * sizeof(float));
        sdw_nhwc_to_nchw(img, 1, TH, TW, 3, nchw);
        for (size_t i = 0; i < (size_t)TW * TH * 3; i++)
            nchw[i] = roundf((nchw[i] + 1.0f) / 2.0f * 255.0f);
        sdw_diffusion_tap(d, "hires.image", nchw, 4, (int64_t)1, (int64_t)3, (int64_t)TH,
                          (int64_t)TW);
        free(nchw);
    }
    /* encode_first_stage + get_first_stage_encoding: (mean + std · eps − shift) · scaling, eps
     * from torch's global CPU generator as A1111 left it (seeded with the seed, untouched) */
    float *mean = sdw_xmalloc(n_start * sizeof(float)), *std = sdw_xmalloc(n_start * sizeof(float));
    float *eps = sdw_xmalloc(n_start * sizeof(float));
    const sdw_vae_tiling tiling = sdw__codec_tiling(d);
    s = sdw__codec_tiled(d, req, TW, TH)
            ? sdw_vae_encode_tiled(d->vae, img, 1, TH, TW, &tiling, mean, std, err)
            : sdw_vae_encode(d->vae, img, 1, TH, TW, mean, std, err);
    if (!s) {
        sdw_rng g;
        sdw_rng_init(&g, SDW_RNG_TORCH, (uint64_t)seed);
        sdw_rng_randn(&g, eps, n_start);
        float *mc = sdw_xmalloc(n_start * sizeof(float));
        float *sc = sdw_xmalloc(n_start * sizeof(float));
        sdw_nhwc_to_nchw(mean, 1, th, tw, C, mc);
        sdw_nhwc_to_nchw(std, 1, th, tw, C, sc);
        for (size_t i = 0; i < n_start; i++)
            start[i] = (mc[i] + sc[i] * eps[i] - d->vae_shift) * d->vae_scaling;
        free(mc);
        free(sc);
    }
    free(img);
    free(mean);
    free(std);
    free(eps);
    return s;
}

sdw_status sdw__hires_pass(sdw_diffusion *d, const sdw_request *req, sdw_run *run,
                           float **latents, sdw_error *err) {
    const sdw_hires *hr = &req->hires;
    const int f = d->vae_factor, C = d->latent_channels;
    const int h = req->height / f, w = req->width / f;
    const int th = hr->height / f, tw = hr->width / f;
    /* the enlarged latents (A1111: hr_upscale_to // 8) and the window of the second size in
     * them: truncate // 2 from the start */
    const int uh = hr->up_height / f, uw = hr->up_width / f;
    const int y0 = (uh - th) / 2, x0 = (uw - tw) / 2;
    SDW_ASSERT(uh >= th && uw >= tw);
    const size_t n_start = (size_t)C * th * tw;
    float *start = sdw_xmalloc(n_start * sizeof(float));
    sdw_status s = SDW_OK;
    const double t0 = sdw_time_now();
    if (sdw_upscaler_is_latent(hr->upscaler)) {
        float *up = sdw_xmalloc((size_t)C * uh * uw * sizeof(float));
        sdw__latent_upscale(*latents, C, h, w, uh, uw, hr->upscaler, up);
        for (int c = 0; c < C; c++)
            for (int y = 0; y < th; y++)
                memcpy(start + ((size_t)c * th + y) * tw,
                       up + ((size_t)c * uh + y0 + y) * uw + x0, (size_t)tw * sizeof(float));
        free(up);
    } else {
        s = image_upscale(d, req, *latents, h, w, x0 * f, y0 * f, run->seed, start, err);
    }
    run->seconds_image_encode += sdw_time_now() - t0;
    if (s) goto done;
    sdw_diffusion_tap(d, "hires.latents", start, 4, (int64_t)1, (int64_t)C, (int64_t)th,
                      (int64_t)tw);
    SDW_INFO("hires fix: %dx%d -> %dx%d (%s), %d steps at strength %g", req->width, req->height,
             hr->width, hr->height, sdw_upscaler_str(hr->upscaler),
             hr->steps ? hr->steps : req->steps, hr->strength);

    const sdw_request r = second_request(req);
    sdw_latent_start from = {.latents = start};
    hires_steps(req, &from.steps, &from.schedule);
    run->calls_after = 0;
    float *out = NULL;
    if ((s = sdw__diffusion_pass(d, &r, &from, run, &out, err))) goto done;
    free(*latents);
    *latents = out;
done:
    free(start);
    return s;
}
