/* The generation core's latent codecs (models/diffusion.h): the model's autoencoder, untiled or
 * in diffusers' tiles (enable_vae_tiling), and an optional tiny autoencoder (TAESD) for previews
 * and draft decodes, loaded for any family whose latent space it fits. */
#include "models/diffusion.h"

#include "io/safetensors.h"
#include "nn/nn.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

/* ---- loading a TAESD ---- */

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The original release's file of the other half: taesd_decoder.safetensors <->
 * taesd_encoder.safetensors (same folder, same prefix: taesdxl_, taesd3_, taef1_). */
static bool sibling(const char *path, const char *from, const char *to, char *buf, size_t cap) {
    const char *at = strstr(path, from);
    if (!at) return false;
    snprintf(buf, cap, "%.*s%s%s", (int)(at - path), path, to, at + strlen(from));
    return is_file(buf);
}

/* Opens one original-layout half into slot k (0 decoder, 1 encoder). */
static sdw_status open_original(sdw_diffusion *d, const char *path, int k, sdw_error *err) {
    sdw_st_file *f;
    sdw_status s = sdw_diffusion_open_file(d, path, &f, err);
    if (s) return s;
    d->w_taesd[k] = sdw_weights_create(f, "", sdw_taesd_original_name, NULL);
    sdw_diffusion_weights(d, d->w_taesd[k]);
    return SDW_OK;
}

sdw_status sdw__codec_load_taesd(sdw_diffusion *d, const char *path, sdw_error *err) {
    char p[4096], q[4096];
    struct stat st;
    sdw_status s;
    sdw_taesd_config cfg;
    if (stat(path, &st) != 0)
        return sdw_error_set(err, SDW_E_NOT_FOUND, "--taesd %s does not exist", path);
    const bool dir = S_ISDIR(st.st_mode);
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", path);
    snprintf(q, sizeof q, "%s/config.json", path);
    if (dir && is_file(p)) { /* a diffusers AutoencoderTiny folder: both halves in one file */
        sdw_st_file *f;
        if ((s = sdw_diffusion_open_file(d, p, &f, err))) return s;
        d->w_taesd[0] = sdw_weights_create(f, "", NULL, NULL);
        sdw_diffusion_weights(d, d->w_taesd[0]);
        s = is_file(q) ? sdw_taesd_config_load(q, &cfg, err)
                       : sdw_taesd_config_infer(d->w_taesd[0], d->w_taesd[0], &cfg, err);
        if (!s) s = sdw_taesd_create(d->w_taesd[0], d->w_taesd[0], &cfg, &d->taesd, err);
    } else {
        /* the original files: a decoder (needed), its encoder sibling when there is one */
        const char *dec = path;
        if (dir) {
            static const char *const names[] = {"taesd_decoder", "taesdxl_decoder",
                                                "taesd3_decoder", "taef1_decoder"};
            dec = NULL;
            for (size_t i = 0; i < SDW_ARRAY_LEN(names) && !dec; i++) {
                snprintf(p, sizeof p, "%s/%s.safetensors", path, names[i]);
                if (is_file(p)) dec = p;
            }
            if (!dec)
                return sdw_error_set(err, SDW_E_NOT_FOUND,
                                     "--taesd %s holds neither a diffusers AutoencoderTiny "
                                     "(diffusion_pytorch_model.safetensors) nor a "
                                     "taesd*_decoder.safetensors",
                                     path);
        }
        if ((s = open_original(d, dec, 0, err))) return s;
        if (sibling(dec, "_decoder", "_encoder", q, sizeof q) && (s = open_original(d, q, 1, err)))
            return s;
        s = sdw_taesd_config_infer(d->w_taesd[0], d->w_taesd[1], &cfg, err);
        if (!s) s = sdw_taesd_create(d->w_taesd[0], d->w_taesd[1], &cfg, &d->taesd, err);
    }
    if (s) {
        sdw_error_prefix(err, "--taesd %s", path);
        return s;
    }
    if (!sdw_taesd_has_decoder(d->taesd))
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "--taesd %s has no decoder", path);
    if (sdw_taesd_latent_channels(d->taesd) != d->latent_channels ||
        sdw_taesd_downscale(d->taesd) != d->vae_factor)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "--taesd %s is for another latent space: %d channels at 1/%d of the "
                             "image, this model's latents have %d at 1/%d",
                             path, sdw_taesd_latent_channels(d->taesd),
                             sdw_taesd_downscale(d->taesd), d->latent_channels, d->vae_factor);
    return SDW_OK;
}

/* ---- decoding ---- */

bool sdw__codec_tiled(const sdw_diffusion *d, const sdw_request *req, int W, int H) {
    if (req->vae_tiling == SDW_TILING_ON) return true;
    return req->vae_tiling == SDW_TILING_AUTO && (int64_t)W * H > SDW_TILING_AUTO_PIXELS;
}

/* (image / 2 + 0.5).clamp(0, 1), then * 255 rounded, as diffusers' numpy_to_pil. */
static void to_rgb8(const float *x, size_t n, uint8_t *out) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i] / 2.0f + 0.5f;
        v = v < 0 ? 0 : v > 1 ? 1 : v;
        out[i] = (uint8_t)lrintf(v * 255.0f);
    }
}

sdw_vae_tiling sdw__codec_tiling(const sdw_diffusion *d) {
    const int ss = d->vae_sample_size > 0 ? d->vae_sample_size : d->caps.default_width;
    return sdw_vae_tiling_default(d->vae, ss);
}

sdw_status sdw__codec_decode(const sdw_diffusion *d, const sdw_request *req, float *latents,
                             int h, int w, sdw_image *out, bool *tiled, bool *taesd,
                             sdw_error *err) {
    const int C = d->latent_channels, f = d->vae_factor, W = w * f, H = h * f;
    const size_t n_lat = (size_t)C * h * w;
    *taesd = req->decoder == SDW_DECODER_TAESD;
    *tiled = !*taesd && sdw__codec_tiled(d, req, W, H);
    /* z = latents / scaling_factor + shift_factor, of the decoder that runs (AutoencoderTiny's
     * are 1 and 0: it decodes the model's latents as they are) */
    const sdw_taesd_config *tc = *taesd ? sdw_taesd_get_config(d->taesd) : NULL;
    const float scaling = tc ? tc->scaling_factor : d->vae_scaling;
    const float shift = tc ? tc->shift_factor : d->vae_shift;
    for (size_t i = 0; i < n_lat; i++)
        latents[i] = latents[i] / scaling + shift;
    sdw_diffusion_tap(d, "vae.decode.z", latents, 4, (int64_t)1, (int64_t)C, (int64_t)h,
                      (int64_t)w);
    float *z = sdw_xmalloc(n_lat * sizeof(float));
    sdw_nchw_to_nhwc(latents, 1, C, h, w, z);
    float *image = sdw_xmalloc((size_t)W * H * 3 * sizeof(float));
    sdw_status s = SDW_OK;
    if (*taesd) {
        s = sdw_taesd_decode(d->taesd, z, 1, h, w, image, err);
    } else if (*tiled) {
        const sdw_vae_tiling t = sdw__codec_tiling(d);
        s = sdw_vae_decode_tiled(d->vae, z, 1, h, w, &t, image, err);
    } else {
        sdw_vae_decode(d->vae, z, 1, h, w, image);
    }
    free(z);
    if (!s && d->tap) {
        float *nchw = sdw_xmalloc((size_t)W * H * 3 * sizeof(float));
        sdw_nhwc_to_nchw(image, 1, H, W, 3, nchw);
        sdw_diffusion_tap(d, "vae.decode.out", nchw, 4, (int64_t)1, (int64_t)3, (int64_t)H,
                          (int64_t)W);
        free(nchw);
    }
    if (!s) {
        out->width = W;
        out->height = H;
        out->channels = 3;
        out->data = sdw_xmalloc((size_t)W * H * 3);
        to_rgb8(image, (size_t)W * H * 3, out->data);
    }
    free(image);
    return s;
}

/* ---- previews ---- */

/* Latent -> RGB at latent resolution: a fixed linear map of the latent channels (the factors
 * ComfyUI and AUTOMATIC1111 use for their cheap previews), mapped from [-1, 1]. */
static void latent_preview(const sdw_diffusion *d, const float *lat, int h, int w,
                           sdw_image *img) {
    const size_t hw = (size_t)h * w;
    const int C = d->latent_channels;
    for (size_t p = 0; p < hw; p++)
        for (int k = 0; k < 3; k++) {
            float v = d->preview_bias ? d->preview_bias[k] : 0.0f;
            if (d->preview_rgb)
                for (int c = 0; c < C; c++)
                    v += lat[c * hw + p] * d->preview_rgb[c][k];
            else
                v += lat[p];
            v = (v + 1.0f) * 127.5f;
            img->data[p * 3 + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrintf(v));
        }
}

void sdw__codec_preview(const sdw_diffusion *d, const float *latents, int h, int w,
                        sdw_image *img) {
    const int f = d->taesd ? d->vae_factor : 1, W = w * f, H = h * f;
    if (!img->data || img->width != W || img->height != H) {
        free(img->data);
        img->data = sdw_xmalloc((size_t)W * H * 3);
    }
    img->width = W;
    img->height = H;
    img->channels = 3;
    if (!d->taesd) {
        latent_preview(d, latents, h, w, img);
        return;
    }
    /* TAESD on the current latents: the full-size image, in a few convolutions */
    const int C = d->latent_channels;
    const size_t n_lat = (size_t)C * h * w;
    float *z = sdw_xmalloc(n_lat * sizeof(float));
    float *pix = sdw_xmalloc((size_t)W * H * 3 * sizeof(float));
    sdw_nchw_to_nhwc(latents, 1, C, h, w, z);
    if (sdw_taesd_decode(d->taesd, z, 1, h, w, pix, NULL) == SDW_OK)
        to_rgb8(pix, (size_t)W * H * 3, img->data);
    else /* (a decoder-carrying TAESD of this latent space cannot fail here) */
        memset(img->data, 0, (size_t)W * H * 3);
    free(z);
    free(pix);
}
