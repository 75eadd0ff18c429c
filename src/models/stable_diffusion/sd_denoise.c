/* Text-to-image for the Stable Diffusion family, step for step as diffusers'
 * StableDiffusionPipeline.__call__ (0.25): encode prompt (+ negative for CFG), draw the initial
 * latents, denoise with the chosen sampler, decode with the VAE. Random draws happen in the same
 * order and shapes as the reference, so a seed gives the reference's image.
 *
 * Latents live in NCHW (torch order: every RNG draw and sampler update is elementwise over the
 * same order as the reference); the UNet and VAE take NHWC, converted at their boundary. */
#include "models/stable_diffusion/sd_impl.h"

#include "nn/nn.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* Latent -> RGB preview: a fixed linear map of SD 1.x/2.x latent channels to colour (the factors
 * ComfyUI and AUTOMATIC1111 use for their cheap previews), at latent resolution. */
static const float g_latent_rgb[4][3] = {
    {0.3512f, 0.2297f, 0.3227f},
    {0.3250f, 0.4974f, 0.2350f},
    {-0.2829f, 0.1762f, 0.2721f},
    {-0.2120f, -0.2616f, -0.7177f},
};

/* lat: [C, h, w] NCHW. img->data must hold w*h*3 bytes. */
static void latent_preview(const float *lat, int C, int h, int w, sdw_image *img) {
    const size_t hw = (size_t)h * w;
    img->width = w;
    img->height = h;
    img->channels = 3;
    for (size_t p = 0; p < hw; p++)
        for (int k = 0; k < 3; k++) {
            float v = 0;
            for (int c = 0; c < C && c < 4; c++) v += lat[c * hw + p] * g_latent_rgb[c][k];
            v = (v + 1.0f) * 127.5f;
            img->data[p * 3 + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrintf(v));
        }
}

/* The conditioning inputs of UNet call k, under the reference's names. */
static void tap_step_conditioning(const sd_model *m, int k, const sd_cond *c) {
    if (!m->tap) return;
    char name[64];
    const sdw_unet_config *u = sdw_unet_config_of(m->unet);
    snprintf(name, sizeof name, "step%02d.unet.encoder_hidden_states", k);
    sdw__sd_tap(m, name, c->context, 3, (int64_t)c->B, (int64_t)c->L, (int64_t)c->D);
    if (c->text_embeds) {
        snprintf(name, sizeof name, "step%02d.unet.text_embeds", k);
        sdw__sd_tap(m, name, c->text_embeds, 2, (int64_t)c->B, (int64_t)u->add_text_dim);
    }
    if (c->time_ids) {
        snprintf(name, sizeof name, "step%02d.unet.time_ids", k);
        sdw__sd_tap(m, name, c->time_ids, 2, (int64_t)c->B, (int64_t)u->add_n_time_ids);
    }
}

/* (image / 2 + 0.5).clamp(0, 1), then * 255 rounded, as diffusers' numpy_to_pil. */
static void to_rgb8(const float *x, size_t n, uint8_t *out) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i] / 2.0f + 0.5f;
        v = v < 0 ? 0 : v > 1 ? 1 : v;
        out[i] = (uint8_t)lrintf(v * 255.0f);
    }
}

sdw_status sdw__sd_generate(sdw_image_model *base, const sdw_request *req,
                            sdw_progress_fn progress, void *user, sdw_image *out,
                            sdw_result_info *info, sdw_error *err) {
    sd_model *m = (sd_model *)base;
    sdw_status s = SDW_OK;
    if (m->n_threads > 0) omp_set_num_threads(m->n_threads);

    const int f = m->vae_factor, C = m->latent_channels;
    const int W = req->width, H = req->height, w = W / f, h = H / f;
    const size_t n_lat = (size_t)C * h * w;
    /* UNet input channels: C, or 2C + 1 for an inpainting UNet (latents | mask | masked). */
    const int Cin = m->unet_cfg.in_channels;
    const size_t n_in = (size_t)Cin * h * w;
    const bool cfg = req->guidance > 1.0f; /* diffusers: do_classifier_free_guidance */
    const int B = cfg ? 2 : 1;
    const bool karras = strcmp(req->scheduler, "karras") == 0;
    /* "trailing": the model's schedule with trailing timestep spacing (what distilled few-step
     * models such as SDXL-Turbo ship; for single files, which carry no scheduler config). */
    sdw_scheduler_config sched = m->sched;
    if (strcmp(req->scheduler, "trailing") == 0) sched.timestep_spacing = SDW_SPACING_TRAILING;

    int64_t seed = req->seed;
    if (seed < 0) {
        uint64_t r;
        if ((s = sdw_rng_random_seed(&r, err))) return s;
        seed = (int64_t)(r % 4294967295u); /* A1111's range: seeds fit in 32 bits */
    }
    sdw_sampler *sampler = NULL;
    sd_cond cond = {0};
    float *latents = sdw_xmalloc(n_lat * sizeof(float));
    float *model_in = sdw_xmalloc(B * n_in * sizeof(float));   /* NCHW, CFG batch */
    float *unet_x = sdw_xmalloc(B * n_in * sizeof(float));     /* NHWC */
    float *unet_y = sdw_xmalloc(B * n_lat * sizeof(float));    /* NHWC */
    float *noise_pred = sdw_xmalloc(B * n_lat * sizeof(float)); /* NCHW */
    float *image = NULL;
    sdw_image preview = {0};
    sd_image_job job = {0};
    int n_noise = 0; /* noise.KK taps: every draw after the initial latents */

    double t0 = sdw_time_now(), t_text, t_loop, t_image = 0;
    /* 1. Conditioning (sd_conditioning.c): batch order [uncond, cond]. */
    if ((s = sdw__sd_condition(m, req, cfg, &cond, err))) goto done;

    t_text = sdw_time_now();
    /* 2. Sampler and initial noise: one randn of the latents' shape. */
    if (!(sampler = sdw_sampler_create(req->sampler, &sched, req->steps, karras, err))) {
        s = err ? err->code : SDW_E_INVALID_ARG;
        goto done;
    }
    sdw_rng rng;
    sdw_rng_init(&rng, req->rng == SDW_RNG_SOURCE_PHILOX ? SDW_RNG_PHILOX : SDW_RNG_TORCH,
                 (uint64_t)seed);
    if (req->init_image) { /* image-to-image / inpainting: sd_img2img.c */
        s = sdw__sd_image_prepare(m, req, sampler, &rng, latents, &job, err);
        n_noise = job.n_noise;
        if (s) goto done;
        t_image = sdw_time_now() - t_text;
    } else {
        sdw_rng_randn(&rng, latents, n_lat);
        sdw__sd_tap(m, "latents_init_noise", latents, 4, (int64_t)1, (int64_t)C, (int64_t)h, (int64_t)w);
        const float sigma0 = sdw_sampler_init_noise_sigma(sampler);
        for (size_t i = 0; i < n_lat; i++) latents[i] *= sigma0;
    }

    /* 3. Denoising loop, from the first call the strength leaves (0 for text-to-image). Stage
     * names count the calls made (stepNN of the reference's loop). */
    const int n_calls = sdw_sampler_n_calls(sampler), begin = sdw_sampler_begin(sampler);
    for (int i = begin; i < n_calls; i++) {
        char name[64];
        const int k = i - begin;
        float t = sdw_sampler_timestep(sampler, i);
        for (int b = 0; b < B; b++) {
            sdw_sampler_scale_model_input(sampler, i, latents, model_in + b * n_in, n_lat);
            if (Cin != C) sdw__sd_image_unet_extra(&job, C, h, w, model_in + b * n_in + n_lat);
        }
        snprintf(name, sizeof name, "step%02d.unet.sample", k);
        sdw__sd_tap(m, name, model_in, 4, (int64_t)B, (int64_t)Cin, (int64_t)h, (int64_t)w);
        sdw_nchw_to_nhwc(model_in, B, Cin, h, w, unet_x);
        tap_step_conditioning(m, k, &cond);
        float ts[2] = {t, t};
        sdw_unet_forward(m->unet, unet_x, B, h, w, ts, cond.context, cond.L, cond.text_embeds,
                         cond.time_ids, unet_y);
        sdw_nhwc_to_nchw(unet_y, B, h, w, C, noise_pred);
        snprintf(name, sizeof name, "step%02d.unet.out", k);
        sdw__sd_tap(m, name, noise_pred, 4, (int64_t)B, (int64_t)C, (int64_t)h, (int64_t)w);
        if (cfg) { /* noise_pred = uncond + g * (cond - uncond) */
            const float g = req->guidance;
            const float *u = noise_pred, *c = noise_pred + n_lat;
            for (size_t k = 0; k < n_lat; k++) noise_pred[k] = u[k] + g * (c[k] - u[k]);
        }
        if ((s = sdw_sampler_step(sampler, i, noise_pred, latents, n_lat, &rng, err))) goto done;
        if (sdw_sampler_last_noise(sampler)) {
            snprintf(name, sizeof name, "noise.%02d", n_noise++);
            sdw__sd_tap(m, name, sdw_sampler_last_noise(sampler), 4, (int64_t)1, (int64_t)C, (int64_t)h,
                (int64_t)w);
        }
        sdw__sd_image_after_step(&job, sampler, i, latents, n_lat, (size_t)h * w);
        snprintf(name, sizeof name, "step%02d.latents", k);
        sdw__sd_tap(m, name, latents, 4, (int64_t)1, (int64_t)C, (int64_t)h, (int64_t)w);
        const sdw_image *shown = NULL;
        if (progress && req->preview_every > 0 &&
            ((k + 1) % req->preview_every == 0 || i + 1 == n_calls)) {
            if (!preview.data) preview.data = sdw_xmalloc((size_t)w * h * 3);
            latent_preview(latents, C, h, w, &preview);
            shown = &preview;
        }
        if (progress && !progress(user, k + 1, n_calls - begin, shown)) {
            s = sdw_error_set(err, SDW_CANCELLED, "cancelled at step %d of %d", k + 1,
                              n_calls - begin);
            goto done;
        }
    }

    t_loop = sdw_time_now();
    /* 4. Decode: z = latents / scaling_factor. */
    for (size_t i = 0; i < n_lat; i++) latents[i] /= m->vae_scaling;
    sdw__sd_tap(m, "vae.decode.z", latents, 4, (int64_t)1, (int64_t)C, (int64_t)h, (int64_t)w);
    sdw_nchw_to_nhwc(latents, 1, C, h, w, unet_x);
    image = sdw_xmalloc((size_t)W * H * 3 * sizeof(float));
    sdw_vae_decode(m->vae, unet_x, 1, h, w, image);
    if (m->tap) {
        float *nchw = sdw_xmalloc((size_t)W * H * 3 * sizeof(float));
        sdw_nhwc_to_nchw(image, 1, H, W, 3, nchw);
        sdw__sd_tap(m, "vae.decode.out", nchw, 4, (int64_t)1, (int64_t)3, (int64_t)H, (int64_t)W);
        free(nchw);
    }
    out->width = W;
    out->height = H;
    out->channels = 3;
    out->data = sdw_xmalloc((size_t)W * H * 3);
    to_rgb8(image, (size_t)W * H * 3, out->data);

    *info = (sdw_result_info){.seed = seed, .width = W, .height = H, .steps = req->steps,
                              .guidance = req->guidance, .prompt_truncated = cond.truncated,
                              .seconds_encode = t_text - t0,
                              .seconds_denoise = t_loop - t_text - t_image,
                              .seconds_decode = sdw_time_now() - t_loop,
                              .n_denoiser_calls = n_calls - begin, .strength = job.strength,
                              .seconds_image_encode = t_image};
    snprintf(info->sampler, sizeof info->sampler, "%s", req->sampler);
    snprintf(info->scheduler, sizeof info->scheduler, "%s", req->scheduler);
done:
    sdw_sampler_destroy(sampler);
    sdw__sd_image_job_deinit(&job);
    sdw__sd_cond_free(&cond);
    free(latents);
    free(model_in);
    free(unet_x);
    free(unet_y);
    free(noise_pred);
    free(image);
    sdw_image_free(&preview);
    return s;
}
