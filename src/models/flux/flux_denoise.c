/* The FLUX family's hooks into the generation core (models/diffusion.h), as diffusers 0.30.3's
 * FluxPipeline: encode_prompt (CLIP's pooled output, T5's last hidden state of the same
 * prompt) and one transformer call on 2x2-packed latents (_pack_latents / _unpack_latents),
 * with the reference's stage names tapped for the golden tests (te.*, te2.*,
 * stepNN.transformer.*). */
#include "models/flux/flux_impl.h"

#include "text/t5_syntax.h"

#include <string.h>

static void flux_cond_free(void *cond) {
    flux_cond *c = cond;
    if (!c) return;
    free(c->context);
    free(c->pooled);
    free(c);
}

static sdw_status flux_condition(sdw_diffusion *d, const sdw_request *req, int B, void **cond,
                                 bool *truncated, sdw_error *err) {
    const flux_model *m = (const flux_model *)d;
    const sdw_flux_config *fc = sdw_flux_transformer_config(m->dit);
    SDW_ASSERT(B == 1); /* guidance is embedded: no unconditional batch */
    flux_cond *c = sdw_xcalloc(1, sizeof *c);
    c->L = (int)sdw_request_param(req, &d->caps, "max_sequence_length");
    c->context = sdw_xmalloc((size_t)c->L * fc->joint_dim * sizeof(float));
    c->pooled = sdw_xmalloc((size_t)fc->pooled_dim * sizeof(float));
    c->guidance = req->guidance;
    /* _get_clip_prompt_embeds: CLIPTextModel's pooler output; its hidden states are unused
     * (so clip_skip changes nothing here, and with AUTOMATIC1111's syntax only the first
     * window, unweighted, counts: Forge's pooled output for FLUX is that window's) */
    const char *prompts[1] = {req->prompt}, *which[1] = {"cond"};
    float *pooled[1] = {c->pooled};
    const sdw_clip_prompt_opts o = {.syntax = req->prompt_syntax,
                                    .clip_skip = req->clip_skip,
                                    .embeddings = m->d.base.embeddings,
                                    .ti_key = "clip_l"};
    sdw_status s = sdw_clip_prompt_encode(&m->clip, &o, 1, prompts, which, NULL, 0, 0, pooled,
                                          truncated, m->d.tap, m->d.tap_user, err);
    float *ctx[1] = {c->context};
    if (!s)
        s = (req->prompt_syntax ? sdw_t5_prompt_encode_syntax : sdw_t5_prompt_encode)(
            &m->t5, 1, prompts, which, c->L, ctx, fc->joint_dim, truncated, m->d.tap,
            m->d.tap_user, err);
    if (s) {
        flux_cond_free(c);
        return s;
    }
    *cond = c;
    return SDW_OK;
}

/* _pack_latents: [C, h, w] -> [(h/2)(w/2), 4C], token (r, c) holding channel k·4 + dy·2 + dx. */
static void pack(const float *x, int C, int h, int w, float *out) {
    const int gh = h / 2, gw = w / 2;
    for (int r = 0; r < gh; r++)
        for (int q = 0; q < gw; q++) {
            float *tok = out + ((size_t)r * gw + q) * 4 * C;
            for (int k = 0; k < C; k++)
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++)
                        tok[k * 4 + dy * 2 + dx] = x[((size_t)k * h + 2 * r + dy) * w + 2 * q + dx];
        }
}

/* _unpack_latents: the inverse of pack. */
static void unpack(const float *tokens, int C, int h, int w, float *x) {
    const int gh = h / 2, gw = w / 2;
    for (int r = 0; r < gh; r++)
        for (int q = 0; q < gw; q++) {
            const float *tok = tokens + ((size_t)r * gw + q) * 4 * C;
            for (int k = 0; k < C; k++)
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++)
                        x[((size_t)k * h + 2 * r + dy) * w + 2 * q + dx] = tok[k * 4 + dy * 2 + dx];
        }
}

/* The call's inputs under the reference's names (the conditioning, ids and guidance are the
 * same at every step: the reference records them at step 0). */
static void tap_inputs(const flux_model *m, int k, const flux_cond *c, const float *tokens,
                       int gh, int gw, float timestep) {
    if (!m->d.tap) return;
    const sdw_flux_config *fc = sdw_flux_transformer_config(m->dit);
    const int64_t n = (int64_t)gh * gw;
    char name[64];
    snprintf(name, sizeof name, "step%02d.transformer.hidden_states", k);
    sdw_diffusion_tap(&m->d, name, tokens, 3, (int64_t)1, n, (int64_t)fc->in_channels);
    snprintf(name, sizeof name, "step%02d.transformer.timestep", k);
    sdw_diffusion_tap(&m->d, name, &timestep, 1, (int64_t)1);
    if (k) return;
    sdw_diffusion_tap(&m->d, "step00.transformer.encoder_hidden_states", c->context, 3,
                      (int64_t)1, (int64_t)c->L, (int64_t)fc->joint_dim);
    sdw_diffusion_tap(&m->d, "step00.transformer.pooled_projections", c->pooled, 2, (int64_t)1,
                      (int64_t)fc->pooled_dim);
    if (fc->guidance_embeds)
        sdw_diffusion_tap(&m->d, "step00.transformer.guidance", &c->guidance, 1, (int64_t)1);
    float *ids = sdw_xmalloc((size_t)n * 3 * sizeof *ids);
    sdw_flux_img_ids(gh, gw, ids);
    sdw_diffusion_tap(&m->d, "step00.transformer.img_ids", ids, 3, (int64_t)1, n, (int64_t)3);
    free(ids);
    float *txt = sdw_xcalloc((size_t)c->L * 3, sizeof *txt);
    sdw_diffusion_tap(&m->d, "step00.transformer.txt_ids", txt, 3, (int64_t)1, (int64_t)c->L,
                      (int64_t)3);
    free(txt);
}

static sdw_status flux_denoise(sdw_diffusion *d, const void *cond, const float *x, int B, int h,
                               int w, float t, int k, float *out, sdw_error *err) {
    const flux_model *m = (const flux_model *)d;
    const flux_cond *c = cond;
    const int C = d->latent_channels, gh = h / 2, gw = w / 2;
    const size_t n = (size_t)C * h * w;
    float *tokens = sdw_xmalloc(n * sizeof(float)), *v = sdw_xmalloc(n * sizeof(float));
    pack(x, C, h, w, tokens);
    /* timestep / 1000 in float32, as the pipeline hands it over */
    const float timestep = t / 1000.0f;
    tap_inputs(m, k, c, tokens, gh, gw, timestep);
    const bool guided = sdw_flux_transformer_config(m->dit)->guidance_embeds;
    sdw_flux_forward(m->dit, tokens, 1, gh, gw, &timestep, guided ? &c->guidance : NULL,
                     c->pooled, c->context, c->L, v);
    if (m->d.tap) {
        char name[64];
        snprintf(name, sizeof name, "step%02d.transformer.out", k);
        sdw_diffusion_tap(d, name, v, 3, (int64_t)1, (int64_t)gh * gw, (int64_t)(4 * C));
    }
    unpack(v, C, h, w, out);
    free(tokens);
    free(v);
    SDW_ASSERT(B == 1);
    return SDW_OK;
}

const sdw_diffusion_ops sdw__flux_hooks = {
    .condition = flux_condition,
    .cond_free = flux_cond_free,
    .denoise = flux_denoise,
};
