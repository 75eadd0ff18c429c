/* The SD3 family's hooks into the generation core (models/diffusion.h), as diffusers 0.30.3's
 * StableDiffusion3Pipeline: encode_prompt (how SD3 joins its three encoders) and one
 * transformer call, with the reference's stage names tapped for the golden tests (te.*, te2.*,
 * te3.*, stepNN.transformer.*). */
#include "models/sd3/sd3_impl.h"

#include <string.h>

static void sd3_cond_free(void *cond) {
    sd3_cond *c = cond;
    if (!c) return;
    free(c->context);
    free(c->pooled);
    free(c);
}

/* encode_prompt: for each prompt (batch [uncond, cond]; the negative defaults to ""), CLIP-L's
 * and CLIP-G's penultimate hidden states side by side in the first 77 rows (zero-padded to the
 * context width, as torch.nn.functional.pad), T5's last hidden state in the rows after them
 * (_get_t5_prompt_embeds; without a T5, 77 rows of zeros: tokenizer_max_length), and the
 * projected pooled outputs concatenated. */
static sdw_status sd3_condition(sdw_diffusion *d, const sdw_request *req, int B, void **cond,
                                bool *truncated, sdw_error *err) {
    const sd3_model *m = (const sd3_model *)d;
    const sdw_sd3_config *tc = sdw_sd3_transformer_config(m->dit);
    const int D = tc->joint_dim, P = tc->pooled_dim;
    const int Lt = m->t5.enc ? (int)sdw_request_param(req, &d->caps, "max_sequence_length")
                             : SDW_CLIP_WINDOW;
    sd3_cond *c = sdw_xcalloc(1, sizeof *c);
    c->B = B;
    c->L = SDW_CLIP_WINDOW + Lt;
    const size_t row = (size_t)c->L * D;
    c->context = sdw_xcalloc((size_t)B * row, sizeof(float));
    c->pooled = sdw_xcalloc((size_t)B * P, sizeof(float));
    const int b_cond = B - 1;
    const char *prompts[2] = {req->prompt, req->negative_prompt ? req->negative_prompt : ""};
    const char *which[2] = {"cond", "uncond"};
    float *ctx[2] = {c->context + b_cond * row, c->context};
    float *t5ctx[2] = {ctx[0] + (size_t)SDW_CLIP_WINDOW * D, ctx[1] + (size_t)SDW_CLIP_WINDOW * D};
    sdw_status s = SDW_OK;
    int col = 0, pcol = 0;
    for (int k = 0; k < 2 && !s; k++) {
        float *pooled[2] = {c->pooled + (size_t)b_cond * P + pcol, c->pooled + pcol};
        s = sdw_clip_prompt_encode(&m->clip[k], B, prompts, which, ctx, D, col, pooled, truncated,
                                   d->tap, d->tap_user, err);
        col += sdw_clip_prompt_width(&m->clip[k]);
        pcol += sdw_clip_prompt_pooled_width(&m->clip[k]);
    }
    if (!s && m->t5.enc)
        s = sdw_t5_prompt_encode(&m->t5, B, prompts, which, Lt, t5ctx, D, truncated, d->tap,
                                 d->tap_user, err);
    if (s) {
        sd3_cond_free(c);
        return s;
    }
    *cond = c;
    return SDW_OK;
}

static sdw_status sd3_denoise(sdw_diffusion *d, const void *cond, const float *x, int B, int h,
                              int w, float t, int k, float *out, sdw_error *err) {
    const sd3_model *m = (const sd3_model *)d;
    const sd3_cond *c = cond;
    const sdw_sd3_config *tc = sdw_sd3_transformer_config(m->dit);
    sdw_status s = sdw_sd3_check_size(m->dit, h, w, err);
    if (s) return s;
    const float ts[2] = {t, t}; /* the scheduler's t, as the pipeline passes it */
    char name[64];
    if (d->tap) {
        snprintf(name, sizeof name, "step%02d.transformer.hidden_states", k);
        sdw_diffusion_tap(d, name, x, 4, (int64_t)B, (int64_t)tc->in_channels, (int64_t)h,
                          (int64_t)w);
        snprintf(name, sizeof name, "step%02d.transformer.timestep", k);
        sdw_diffusion_tap(d, name, ts, 1, (int64_t)B);
        if (k == 0) {
            sdw_diffusion_tap(d, "step00.transformer.encoder_hidden_states", c->context, 3,
                              (int64_t)B, (int64_t)c->L, (int64_t)tc->joint_dim);
            sdw_diffusion_tap(d, "step00.transformer.pooled_projections", c->pooled, 2,
                              (int64_t)B, (int64_t)tc->pooled_dim);
        }
    }
    sdw_sd3_forward(m->dit, x, B, h, w, ts, c->pooled, c->context, c->L, out);
    if (d->tap) {
        snprintf(name, sizeof name, "step%02d.transformer.out", k);
        sdw_diffusion_tap(d, name, out, 4, (int64_t)B, (int64_t)tc->out_channels, (int64_t)h,
                          (int64_t)w);
    }
    return SDW_OK;
}

const sdw_diffusion_ops sdw__sd3_hooks = {
    .condition = sd3_condition,
    .cond_free = sd3_cond_free,
    .denoise = sd3_denoise,
};
