/* The SD3 family's hooks into the generation core (models/diffusion.h), as diffusers 0.30.3's
 * StableDiffusion3Pipeline: encode_prompt (how SD3 joins its three encoders) and one
 * transformer call, with the reference's stage names tapped for the golden tests (te.*, te2.*,
 * te3.*, stepNN.transformer.*). */
#include "models/sd3/sd3_impl.h"

#include "text/t5_syntax.h"

#include <string.h>

static void sd3_cond_free(void *cond) {
    sd3_cond *c = cond;
    if (!c) return;
    free(c->context);
    free(c->pooled);
    free(c);
}

/* How CLIP encoder k (0: CLIP-L, 1: CLIP-G) reads this request's prompts. */
static sdw_clip_prompt_opts clip_opts(const sd3_model *m, const sdw_request *req, int k) {
    return (sdw_clip_prompt_opts){.syntax = req->prompt_syntax,
                                  .clip_skip = req->clip_skip,
                                  .embeddings = m->d.base.embeddings,
                                  .ti_key = k ? "clip_g" : "clip_l"};
}

/* encode_prompt: for each prompt (batch [uncond, cond]; the negative defaults to ""), CLIP-L's
 * and CLIP-G's penultimate hidden states side by side in the first 77 rows (zero-padded to the
 * context width, as torch.nn.functional.pad), T5's last hidden state in the rows after them
 * (_get_t5_prompt_embeds; without a T5, 77 rows of zeros: tokenizer_max_length), and the
 * projected pooled outputs concatenated. With AUTOMATIC1111's prompt syntax the CLIP part is
 * 77 rows per window (as ComfyUI joins SD3's chunked CLIP output with T5's); the two prompts of
 * a batch get the same count, the shorter padded with windows of the empty prompt: the
 * transformer attends jointly over text and image, so repeating windows (exact for a UNet's
 * cross-attention) would change it. T5 reads the prompt as text/t5_prompt.h says. */
static sdw_status sd3_condition(sdw_diffusion *d, const sdw_request *req, int B, void **cond,
                                bool *truncated, sdw_error *err) {
    const sd3_model *m = (const sd3_model *)d;
    const sdw_sd3_config *tc = sdw_sd3_transformer_config(m->dit);
    const int D = tc->joint_dim, P = tc->pooled_dim;
    const int Lt = m->t5.enc ? (int)sdw_request_param(req, &d->caps, "max_sequence_length")
                             : SDW_CLIP_WINDOW;
    sd3_cond *c = sdw_xcalloc(1, sizeof *c);
    c->B = B;
    const int b_cond = B - 1;
    const char *prompts[2] = {req->prompt, req->negative_prompt ? req->negative_prompt : ""};
    const char *which[2] = {"cond", "uncond"};
    sdw_clip_encoding enc[2][2] = {{{0}}}, empty[2] = {{0}};
    sdw_status s = SDW_OK;
    for (int k = 0; k < 2 && !s; k++) {
        const sdw_clip_prompt_opts o = clip_opts(m, req, k);
        s = sdw_clip_prompt_encode_chunks(&m->clip[k], &o, B, prompts, which, true, true, enc[k],
                                          truncated, d->tap, d->tap_user, err);
    }
    for (int j = 0; j < B && !s; j++)
        if (enc[0][j].n_chunks != enc[1][j].n_chunks)
            s = sdw_error_set(err, SDW_E_INVALID_ARG,
                              "the %s prompt takes %d windows in CLIP-L and %d in CLIP-G",
                              which[j], enc[0][j].n_chunks, enc[1][j].n_chunks);
    const int n_cond = s ? 1 : enc[0][0].n_chunks, n_un = B == 2 && !s ? enc[0][1].n_chunks : n_cond;
    const int n_out = sdw_clip_batch_chunks(n_cond, n_un, false);
    for (int k = 0; k < 2 && !s && n_cond != n_un; k++) {
        const sdw_clip_prompt_opts o = clip_opts(m, req, k);
        const char *none[1] = {""}, *label[1] = {"empty"};
        bool cut = false;
        s = sdw_clip_prompt_encode_chunks(&m->clip[k], &o, 1, none, label, true, false,
                                          &empty[k], &cut, NULL, NULL, err);
    }
    const int Lc = SDW_CLIP_WINDOW * n_out;
    c->L = Lc + Lt;
    const size_t row = (size_t)c->L * D;
    if (!s) {
        c->context = sdw_xcalloc((size_t)B * row, sizeof(float));
        c->pooled = sdw_xcalloc((size_t)B * P, sizeof(float));
        float *ctx[2] = {c->context + b_cond * row, c->context};
        int col = 0, pcol = 0;
        for (int k = 0; k < 2; k++) {
            const int W = sdw_clip_prompt_width(&m->clip[k]);
            const int Pk = sdw_clip_prompt_pooled_width(&m->clip[k]);
            for (int j = 0; j < B; j++) {
                sdw_clip_encoding_place(&enc[k][j], n_out, false, &empty[k], W, ctx[j], D, col);
                float *pj = j ? c->pooled : c->pooled + (size_t)b_cond * P;
                memcpy(pj + pcol, enc[k][j].pooled, (size_t)Pk * sizeof(float));
            }
            col += W;
            pcol += Pk;
        }
        float *t5ctx[2] = {ctx[0] + (size_t)Lc * D, ctx[1] + (size_t)Lc * D};
        if (m->t5.enc)
            s = (req->prompt_syntax ? sdw_t5_prompt_encode_syntax : sdw_t5_prompt_encode)(
                &m->t5, B, prompts, which, Lt, t5ctx, D, truncated, d->tap, d->tap_user, err);
    }
    for (int k = 0; k < 2; k++) {
        sdw_clip_encoding_deinit(&empty[k]);
        sdw_clip_encoding_deinit(&enc[k][0]);
        sdw_clip_encoding_deinit(&enc[k][1]);
    }
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
