/* Image-to-image and inpainting for every family on the generation core: the parts of
 * diffusers' StableDiffusionImg2ImgPipeline / StableDiffusionInpaintPipeline (0.25.1) and
 * FluxImg2ImgPipeline / FluxInpaintPipeline (0.31) that differ from text-to-image — image/mask
 * preprocessing (VaeImageProcessor), the VAE posterior sample, the initial latents at the
 * strength's timestep, the 9-channel denoiser input, and the per-step blend of 4-channel
 * inpainting. The two families' pipelines do these identically, up to the latent shift (FLUX
 * subtracts its shift_factor before scaling; SD's is 0) and how the strength rounds (the
 * sampler's rule). diffusion.c calls these at its latent-preparation, denoiser-input and
 * after-step points; random draws happen here in exactly the references' order:
 *
 *   img2img:            vae sample (init) | prepare_latents noise
 *   inpaint, 4-channel: vae sample (init) | prepare_latents noise | vae sample (masked image)
 *   inpaint, 9-channel: [vae sample (init), only when strength < 1] | prepare_latents noise |
 *                       vae sample (masked image)
 *
 * The masked image's latents of a 4-channel inpaint are computed by the references and never
 * used: only their random draw is reproduced here (it shifts every later draw), the VAE pass is
 * skipped. */
#include "models/diffusion.h"

#include "io/image.h"
#include "nn/nn.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"

#include <math.h>
#include <string.h>

static void tap4(const sdw_diffusion *d, const char *name, const float *x, int64_t b, int64_t c,
                 int64_t h, int64_t w) {
    sdw_diffusion_tap(d, name, x, 4, b, c, h, w);
}

/* One N(0,1) draw of n values from the job's generator, tapped as noise.KK. */
static void draw(const sdw_diffusion *m, sdw_image_job *job, sdw_rng *rng, float *x, int C, int h,
                 int w) {
    sdw_rng_randn(rng, x, (size_t)C * h * w);
    char name[32];
    snprintf(name, sizeof name, "noise.%02d", job->n_noise++);
    tap4(m, name, x, 1, C, h, w);
}

/* VaeImageProcessor.preprocess for the init image: RGB (load_image's convert("RGB") drops
 * alpha), Pillow Lanczos resize to W x H when the size differs, to float in [-1, 1]:
 * 2 * (v / 255) - 1 in float32 as numpy/torch compute it. out: [3, H, W] NCHW. */
static void preprocess_image(const sdw_image *img, int W, int H, float *out) {
    sdw_image rgb, sized;
    sdw_image_to_rgb(img, &rgb);
    if (rgb.width != W || rgb.height != H) {
        SDW_WARN("init image %dx%d resized to %dx%d (Lanczos, as diffusers' image processor)",
                 rgb.width, rgb.height, W, H);
        sdw_image_resize(&rgb, W, H, &sized);
        sdw_image_free(&rgb);
        rgb = sized;
    }
    const size_t hw = (size_t)W * H;
    for (size_t p = 0; p < hw; p++)
        for (int c = 0; c < 3; c++) out[c * hw + p] = 2.0f * ((float)rgb.data[p * 3 + c] / 255.0f) - 1.0f;
    sdw_image_free(&rgb);
}

/* The mask processor (do_normalize False, do_binarize True, do_convert_grayscale True): RGB,
 * Lanczos resize (its default resample too), then Pillow's convert("L"), v / 255 binarised at
 * 0.5: luma >= 128 repaints. NULL mask (a 9-channel model asked for plain img2img) = repaint
 * everything. out: [H, W] of 0/1. */
static void preprocess_mask(const sdw_image *mask, int W, int H, float *out) {
    const size_t hw = (size_t)W * H;
    if (!mask) {
        for (size_t p = 0; p < hw; p++) out[p] = 1.0f;
        return;
    }
    sdw_image rgb, sized, luma;
    sdw_image_to_rgb(mask, &rgb);
    if (rgb.width != W || rgb.height != H) {
        sdw_image_resize(&rgb, W, H, &sized);
        sdw_image_free(&rgb);
        rgb = sized;
    }
    sdw_image_to_luma(&rgb, &luma);
    for (size_t p = 0; p < hw; p++) out[p] = (float)luma.data[p] / 255.0f >= 0.5f ? 1.0f : 0.0f;
    sdw_image_free(&luma);
    sdw_image_free(&rgb);
}

/* _encode_vae_image: posterior sample mean + std * eps (eps from the generator), minus the
 * shift factor, times the scaling factor. image: [3, H, W] NCHW; out: [C, h, w] NCHW. Tapped as vae.encode.N.*. */
static sdw_status encode_sample(const sdw_diffusion *m, sdw_image_job *job, sdw_rng *rng,
                                const float *image, int W, int H, float *out, sdw_error *err) {
    const int f = m->vae_factor, C = m->latent_channels, w = W / f, h = H / f;
    const size_t n = (size_t)C * h * w;
    float *nhwc = sdw_xmalloc((size_t)W * H * 3 * sizeof(float));
    float *mean = sdw_xmalloc(n * sizeof(float)), *std = sdw_xmalloc(n * sizeof(float));
    float *mean_c = sdw_xmalloc(n * sizeof(float)), *std_c = sdw_xmalloc(n * sizeof(float));
    char name[48];
    const int k = job->n_encode++;
    snprintf(name, sizeof name, "vae.encode.%d.image", k);
    tap4(m, name, image, 1, 3, H, W);
    sdw_nchw_to_nhwc(image, 1, 3, H, W, nhwc);
    const sdw_vae_tiling tiling = sdw__codec_tiling(m);
    sdw_status s = job->tiled ? sdw_vae_encode_tiled(m->vae, nhwc, 1, H, W, &tiling, mean, std, err)
                              : sdw_vae_encode(m->vae, nhwc, 1, H, W, mean, std, err);
    if (s) goto done;
    sdw_nhwc_to_nchw(mean, 1, h, w, C, mean_c);
    sdw_nhwc_to_nchw(std, 1, h, w, C, std_c);
    snprintf(name, sizeof name, "vae.encode.%d.mean", k);
    tap4(m, name, mean_c, 1, C, h, w);
    snprintf(name, sizeof name, "vae.encode.%d.std", k);
    tap4(m, name, std_c, 1, C, h, w);
    draw(m, job, rng, out, C, h, w);
    for (size_t i = 0; i < n; i++)
        out[i] = (mean_c[i] + std_c[i] * out[i] - m->vae_shift) * m->vae_scaling;
done:
    free(nhwc);
    free(mean);
    free(std);
    free(mean_c);
    free(std_c);
    return s;
}

sdw_status sdw__image_prepare(const sdw_diffusion *m, const sdw_request *req, sdw_sampler *sampler,
                              sdw_rng *rng, float *latents, sdw_image_job *job, sdw_error *err) {
    const int f = m->vae_factor, C = m->latent_channels;
    const int W = req->width, H = req->height, w = W / f, h = H / f;
    const size_t n_lat = (size_t)C * h * w, hw = (size_t)W * H;
    const bool nine = m->denoiser_in_channels == C + 1 + C;
    float *image = NULL, *mask = NULL, *masked = NULL;
    sdw_status s = SDW_OK;

    memset(job, 0, sizeof *job);
    job->inpaint = req->mask != NULL || nine;
    job->blend = job->inpaint && !nine;
    job->strength = req->strength;
    job->tiled = sdw__codec_tiled(m, req, W, H);
    /* get_timesteps: skip the first calls of the schedule, rounding as the family's reference
     * pipeline does (sdw_capabilities.strength_rounds_start). */
    const int begin = m->caps.strength_rounds_start
                          ? sdw_sampler_begin_for_strength_flow(req->steps, req->strength)
                          : sdw_sampler_begin_for_strength(req->steps, req->strength);
    /* diffusers starts at timesteps[t_start * scheduler.order] (heun lists two calls a step) */
    if ((s = sdw_sampler_set_begin(sampler, begin * sdw_sampler_order(sampler), err))) return s;

    image = sdw_xmalloc(hw * 3 * sizeof(float));
    preprocess_image(req->init_image, W, H, image);
    float *noise = sdw_xmalloc(n_lat * sizeof(float));
    job->noise = noise;

    if (!job->inpaint) { /* StableDiffusionImg2ImgPipeline.prepare_latents */
        if ((s = encode_sample(m, job, rng, image, W, H, latents, err))) goto done;
        draw(m, job, rng, noise, C, h, w);
        sdw_sampler_add_noise(sampler, latents, noise, latents, n_lat);
        goto done;
    }

    /* StableDiffusionInpaintPipeline.prepare_latents: the init image is encoded when its
     * latents are needed (4-channel blend) or the start is not pure noise (strength < 1). */
    const bool strength_max = req->strength == 1.0;
    if (job->blend || !strength_max) {
        job->image_latents = sdw_xmalloc(n_lat * sizeof(float));
        if ((s = encode_sample(m, job, rng, image, W, H, job->image_latents, err))) goto done;
    }
    draw(m, job, rng, noise, C, h, w);
    if (strength_max) {
        const float sigma0 = sdw_sampler_init_noise_sigma(sampler);
        for (size_t i = 0; i < n_lat; i++) latents[i] = noise[i] * sigma0;
    } else {
        sdw_sampler_add_noise(sampler, job->image_latents, noise, latents, n_lat);
    }

    /* Mask and masked image: masked = image * (mask < 0.5). */
    mask = sdw_xmalloc(hw * sizeof(float));
    preprocess_mask(req->mask, W, H, mask);
    masked = sdw_xmalloc(n_lat * sizeof(float));
    if (nine) {
        for (int c = 0; c < 3; c++)
            for (size_t p = 0; p < hw; p++) image[c * hw + p] *= mask[p] < 0.5f ? 1.0f : 0.0f;
        if ((s = encode_sample(m, job, rng, image, W, H, masked, err))) goto done;
        job->masked_latents = masked;
        masked = NULL;
    } else { /* computed and unused by the reference: keep only its draw */
        draw(m, job, rng, masked, C, h, w);
        job->n_encode++;
    }
    /* prepare_mask_latents: F.interpolate(mode="nearest") to the latent size: source index
     * floor(dst * (in / out)) in float32, as torch's nearest kernel. */
    job->mask = sdw_xmalloc((size_t)h * w * sizeof(float));
    const float sy = (float)H / (float)h, sx = (float)W / (float)w;
    for (int y = 0; y < h; y++) {
        int iy = SDW_MIN((int)floorf((float)y * sy), H - 1);
        for (int x = 0; x < w; x++) {
            int ix = SDW_MIN((int)floorf((float)x * sx), W - 1);
            job->mask[(size_t)y * w + x] = mask[(size_t)iy * W + ix];
        }
    }
done:
    free(image);
    free(mask);
    free(masked);
    return s;
}

void sdw__image_denoiser_extra(const sdw_image_job *job, int C, int h, int w, float *out) {
    const size_t hw = (size_t)h * w;
    memcpy(out, job->mask, hw * sizeof(float));
    memcpy(out + hw, job->masked_latents, (size_t)C * hw * sizeof(float));
}

void sdw__image_after_step(const sdw_image_job *job, const sdw_sampler *sampler, int i,
                           float *latents, size_t n_lat, size_t hw) {
    if (!job->blend) return;
    /* init_latents_proper = image latents re-noised to the next timestep (the clean latents
     * after the last step); latents = (1 - mask) * proper + mask * latents. */
    float *proper = sdw_xmalloc(n_lat * sizeof(float));
    if (i + 1 < sdw_sampler_n_calls(sampler))
        sdw_sampler_add_noise_at(sampler, i + 1, job->image_latents, job->noise, proper, n_lat);
    else
        memcpy(proper, job->image_latents, n_lat * sizeof(float));
    for (size_t k = 0; k < n_lat; k++) {
        const float mk = job->mask[k % hw];
        latents[k] = (1.0f - mk) * proper[k] + mk * latents[k];
    }
    free(proper);
}

void sdw__image_job_deinit(sdw_image_job *job) {
    free(job->image_latents);
    free(job->noise);
    free(job->mask);
    free(job->masked_latents);
    memset(job, 0, sizeof *job);
}
