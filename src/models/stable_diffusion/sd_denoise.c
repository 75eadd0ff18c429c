/* The Stable Diffusion family's hooks into the generation core (models/diffusion.h): the
 * conditioning (sd_conditioning.c, and the request's ControlNets: controlnet_run.c) and one UNet
 * call with the ControlNets' residuals, with the reference's stage names (stepNN.unet.*,
 * stepNN.controlnet.*) tapped for the golden tests. The UNet takes NHWC; the core's latents are
 * NCHW, converted here at the boundary. */
#include "models/stable_diffusion/sd_impl.h"

#include "nn/nn.h"

/* The conditioning inputs of UNet call k, under the reference's names. */
static void tap_conditioning(const sd_model *m, int k, const sd_cond *c) {
    if (!m->d.tap) return;
    char name[64];
    const sdw_unet_config *u = sdw_unet_config_of(m->unet);
    snprintf(name, sizeof name, "step%02d.unet.encoder_hidden_states", k);
    sdw_diffusion_tap(&m->d, name, c->context, 3, (int64_t)c->B, (int64_t)c->L, (int64_t)c->D);
    if (c->text_embeds) {
        snprintf(name, sizeof name, "step%02d.unet.text_embeds", k);
        sdw_diffusion_tap(&m->d, name, c->text_embeds, 2, (int64_t)c->B,
                          (int64_t)u->add_text_dim);
    }
    if (c->time_ids) {
        snprintf(name, sizeof name, "step%02d.unet.time_ids", k);
        sdw_diffusion_tap(&m->d, name, c->time_ids, 2, (int64_t)c->B,
                          (int64_t)u->add_n_time_ids);
    }
}

/* UNet(x, t, context [, text_embeds, time_ids]) for the batch: x [B, Cin, h, w] NCHW ->
 * out [B, C, h, w] NCHW. */
static sdw_status sd_denoise(sdw_diffusion *d, const void *cond, const float *x, int B, int h,
                             int w, float t, int k, float *out, sdw_error *err) {
    const sd_model *m = (const sd_model *)d;
    const sd_cond *c = cond;
    const int Cin = d->denoiser_in_channels, C = d->latent_channels;
    char name[64];
    snprintf(name, sizeof name, "step%02d.unet.sample", k);
    sdw_diffusion_tap(d, name, x, 4, (int64_t)B, (int64_t)Cin, (int64_t)h, (int64_t)w);
    tap_conditioning(m, k, c);
    float *x_nhwc = sdw_xmalloc((size_t)B * Cin * h * w * sizeof(float));
    float *y_nhwc = sdw_xmalloc((size_t)B * C * h * w * sizeof(float));
    float **down = NULL, *mid = NULL; /* the ControlNets' summed residuals, if any acts now */
    sdw__sd_control_residuals(m, c, x, B, h, w, t, k, &down, &mid);
    sdw_nchw_to_nhwc(x, B, Cin, h, w, x_nhwc);
    const float ts[2] = {t, t};
    const sdw_unet_extra extra = {(const float *const *)down, mid};
    sdw_unet_forward_ex(m->unet, x_nhwc, B, h, w, ts, c->context, c->L, c->text_embeds,
                        c->time_ids, &extra, y_nhwc);
    sdw_nhwc_to_nchw(y_nhwc, B, h, w, C, out);
    sdw__sd_residuals_free(m, down, mid);
    free(x_nhwc);
    free(y_nhwc);
    snprintf(name, sizeof name, "step%02d.unet.out", k);
    sdw_diffusion_tap(d, name, out, 4, (int64_t)B, (int64_t)C, (int64_t)h, (int64_t)w);
    return SDW_OK;
}

static void sd_cond_free(void *cond) {
    if (cond) sdw__sd_controls_free(cond);
    sdw__sd_cond_free(cond);
}

/* The text conditioning and the request's ControlNets (first: a ControlNet that cannot be
 * loaded fails the run before the text encoders). */
static sdw_status sd_condition(sdw_diffusion *d, const sdw_request *req, int B, void **cond,
                               bool *truncated, sdw_error *err) {
    sd_cond controls = {0};
    sdw_status s = sdw__sd_controls_prepare((sd_model *)d, req, &controls, err);
    if (!s) s = sdw__sd_condition(d, req, B, cond, truncated, err);
    if (s) {
        sdw__sd_controls_free(&controls);
        return s;
    }
    sd_cond *c = *cond;
    c->controls = controls.controls;
    c->n_controls = controls.n_controls;
    c->guess = controls.guess;
    c->control_image = controls.control_image;
    c->image_h = controls.image_h;
    c->image_w = controls.image_w;
    return SDW_OK;
}

/* A pass's calls, for the ControlNets' guidance windows. */
static sdw_status sd_begin_pass(sdw_diffusion *d, void *cond, int k0, int n, sdw_error *err) {
    sd_cond *c = cond;
    c->k0 = k0;
    c->n = n;
    return SDW_OK;
}

const sdw_diffusion_ops sdw__sd_hooks = {
    .condition = sd_condition,
    .cond_free = sd_cond_free,
    .denoise = sd_denoise,
    .begin_pass = sd_begin_pass,
};
