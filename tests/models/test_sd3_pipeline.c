/* The SD3 family against the reference (diffusers 0.30.3 StableDiffusion3Pipeline), stage by
 * stage: the three encoders' ids, states and pooled outputs, the 333-token joint context, every
 * transformer call (CFG batch [uncond, cond]), every step's latents, the VAE decode, then the
 * final image within 2 levels of the reference PNG — for the diffusers folder and for the same
 * weights written as one Stability single file (sd3_medium_incl_clips_t5xxlfp16 naming: the
 * mapping proven on the fixture). Then running without T5, the family's identity, image-to-image
 * and bad input. */
#include "sdw_test.h"

#include "io/image.h"
#include "models/diffusion.h"
#include "models/sd3/sd3_sgm_names.h"
#include "models/sd3/sd3_transformer.h"
#include "nn/ldm_vae_names.h"
#include "nn/vae.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STAGE_TOL 1e-4
#define GOLDEN "tiny-sd3/txt2img-flowmatch"

/* Recorded stages the pipeline does not produce as such: the CLIPs' final-layer states (SD3
 * uses the penultimate ones), the float image (the PNG is compared), the scheduler tables
 * (tests/sampling/test_flow.c) and the standalone probe (tests/models/test_sd3_transformer.c). */
static bool excused(const char *name, const void *ctx) {
    return ((strncmp(name, "te.", 3) == 0 || strncmp(name, "te2.", 4) == 0) &&
            strstr(name, ".last_hidden_state")) ||
           strcmp(name, "image") == 0 || strncmp(name, "sched.", 6) == 0 ||
           strncmp(name, "probe.", 6) == 0;
}

static void check_case(const char *model, const sdw_load_options *opts) {
    sdw_golden *g = sdw_golden_open(GOLDEN);
    ASSERT_TRUE(g != NULL);
    sdw_image_model *m = NULL;
    sdw_image img = {0}, init = {0}, mask = {0};
    sdw_error err = {0};
    sdw_stage_check *c = calloc(1, sizeof *c);
    c->g = g;
    c->tol = STAGE_TOL;
    sdw_request r;
    sdw_status s = sdw_model_load(model, opts, &m, &err);
    if (!s) s = sdw_golden_request(g, &r, &init, &mask, &err);
    if (!s) {
        sdw_diffusion_set_tap(m, sdw_stage_tap, c);
        s = sdw_model_generate(m, &r, NULL, NULL, &img, NULL, &err);
    }
    int maxd = 256, missing = -1;
    if (!s) maxd = sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", GOLDEN));
    if (!s) missing = sdw_stage_missing(c, excused, NULL);
    fprintf(stderr, "  %s: %d stages compared, worst %.2g (%s), image max diff %d\n", model,
            c->n_compared, c->worst, c->worst_name, maxd);
    const int n_compared = c->n_compared, n_failed = c->n_failed;
    sdw_image_free(&img);
    sdw_model_destroy(m);
    sdw_golden_close(g);
    free(c);
    ASSERT_OK(s, &err);
    ASSERT_EQ_INT(missing, 0);
    ASSERT_EQ_INT(n_failed, 0);
    /* 3 encoders x 2 prompts (ids + state) + 4 pooled, init noise, 4 steps x 4, context, decode */
    ASSERT_TRUE(n_compared >= 12 + 4 + 1 + 16 + 2 + 2);
    ASSERT_TRUE(maxd <= 2);
}

static void test_folder(void) {
    check_case(sdw_test_path("models/tiny-sd3"), NULL);
}

/* ---- a Stability single file from the fixture's weights ---- */

/* One tensor of the file being written: name, shape, f32 data. */
typedef struct out_tensor {
    char name[256];
    int n_dims;
    int64_t shape[4];
    float *data;
    size_t n;
} out_tensor;

typedef struct out_file {
    out_tensor t[2048];
    int n;
} out_file;

static out_tensor *out_get(out_file *o, const char *name, int n_dims, const int64_t *shape) {
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->t[i].name, name)) return &o->t[i];
    out_tensor *t = &o->t[o->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->n = 1;
    for (int d = 0; d < n_dims; d++)
        t->n *= (size_t)(t->shape[d] = shape[d]);
    t->data = calloc(t->n ? t->n : 1, sizeof(float));
    return t;
}

/* Places diffusers tensor (name, shape, v) where Stability's map says it lives: the stored
 * tensor stacks `split` parts of the canonical rows, this one being parts [first, first+count). */
static void place_sgm(out_file *o, const char *name, int n_dims, const int64_t *shape,
                      const float *v, size_t n) {
    char buf[256], full[300];
    sdw_weight_view view = {0};
    const char *sgm = sdw_sd3_sgm_name(name, buf, sizeof buf, &view, NULL);
    ASSERT_TRUE(sgm != NULL);
    snprintf(full, sizeof full, "model.diffusion_model.%s", sgm);
    const int split = view.split > 1 ? view.split : 1, count = view.count ? view.count : 1;
    int64_t st[4] = {0};
    SDW_ASSERT(n_dims >= 1 && n_dims <= 4);
    memcpy(st, shape, (size_t)n_dims * sizeof *st);
    st[0] = shape[0] / count * split;
    ASSERT_TRUE(!view.transpose);
    out_tensor *t = out_get(o, full, n_dims, st);
    const size_t row = n / (size_t)shape[0];
    memcpy(t->data + (size_t)view.first * (size_t)(shape[0] / count) * row, v, n * sizeof *v);
}

/* Adds every tensor of file (f32 copies) under the new name from map (NULL = the same),
 * prefixed. */
static void add_file(out_file *o, const char *path, const char *prefix,
                     const char *(*map)(const char *, char *, size_t, void *), void *user) {
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(path, &f, NULL), NULL);
    for (int i = 0; i < sdw_st_count(f); i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        if (!sdw_dtype_is_float(t->dtype)) continue;
        char buf[256], full[512];
        const char *name = map ? map(t->name, buf, sizeof buf, user) : t->name;
        ASSERT_TRUE(name != NULL);
        snprintf(full, sizeof full, "%s%s", prefix, name);
        out_tensor *o_t = out_get(o, full, t->n_dims, t->shape);
        sdw_convert_to_f32(t->dtype, t->data, o_t->data, t->n_elems);
    }
    sdw_st_close(f);
}

/* diffusers VAE name -> LDM name (the inverse direction of what sdw_ldm_vae_name reads). */
static const sdw_vae_config *g_vae_cfg;
static const char *vae_to_ldm(const char *name, char *buf, size_t cap, void *user) {
    return sdw_ldm_vae_name(name, buf, cap, (void *)g_vae_cfg);
}

/* The fixture's pipeline as Stability's sd3_medium_incl_clips_t5xxlfp16.safetensors lays it
 * out: the MMDiT under model.diffusion_model. (fused qkv, (shift, scale) halves), the VAE
 * under first_stage_model. (LDM names), the encoders under text_encoders.*.transformer. */
static void write_sgm(const char *path) {
    out_file *o = calloc(1, sizeof *o);
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-sd3/transformer/"
                                        "diffusion_pytorch_model.safetensors"),
                          &f, NULL),
              NULL);
    int last = -1; /* the last joint block: its norm1_context is AdaLayerNormContinuous */
    for (int i = 0; i < sdw_st_count(f); i++) {
        int b;
        if (sscanf(sdw_st_at(f, i)->name, "transformer_blocks.%d.", &b) == 1 && b > last) last = b;
    }
    for (int i = 0; i < sdw_st_count(f); i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        float *v = malloc(t->n_elems * sizeof *v);
        sdw_convert_to_f32(t->dtype, t->data, v, t->n_elems);
        char ctx_w[96], ctx_b[96];
        snprintf(ctx_w, sizeof ctx_w, "transformer_blocks.%d.norm1_context.linear.weight", last);
        snprintf(ctx_b, sizeof ctx_b, "transformer_blocks.%d.norm1_context.linear.bias", last);
        const bool out_w = !strcmp(t->name, "norm_out.linear.weight"),
                   out_b = !strcmp(t->name, "norm_out.linear.bias");
        const bool cw = !strcmp(t->name, ctx_w), cb = !strcmp(t->name, ctx_b);
        if (out_w || out_b || cw || cb) { /* (scale, shift) halves under their own names */
            char s_name[128], h_name[128];
            if (cw || cb) /* "transformer_blocks.N." + SDW_SD3_CONTEXT_NORM_SCALE */
                snprintf(s_name, sizeof s_name, "transformer_blocks.%d.%s.%s", last,
                         SDW_SD3_CONTEXT_NORM_SCALE, cw ? "weight" : "bias");
            else
                snprintf(s_name, sizeof s_name, "%s.%s", SDW_SD3_NORM_OUT_SCALE,
                         out_w ? "weight" : "bias");
            snprintf(h_name, sizeof h_name, "%s", s_name);
            memcpy(strstr(h_name, "_scale"), "_shift", 6);
            int64_t half[2] = {t->shape[0] / 2, t->n_dims > 1 ? t->shape[1] : 0};
            const size_t hn = t->n_elems / 2;
            place_sgm(o, s_name, t->n_dims, half, v, hn);
            place_sgm(o, h_name, t->n_dims, half, v + hn, hn);
        } else {
            place_sgm(o, t->name, t->n_dims, t->shape, v, t->n_elems);
        }
        free(v);
    }
    sdw_st_close(f);
    /* the VAE in LDM names (1x1 attention convolutions stored [C, C, 1, 1] as the real files) */
    sdw_vae_config vc;
    ASSERT_OK(sdw_vae_config_load(sdw_test_path("models/tiny-sd3/vae/config.json"), &vc, NULL),
              NULL);
    g_vae_cfg = &vc;
    const int before = o->n;
    add_file(o, sdw_test_path("models/tiny-sd3/vae/diffusion_pytorch_model.safetensors"),
             "first_stage_model.", vae_to_ldm, NULL);
    for (int i = before; i < o->n; i++)
        if (strstr(o->t[i].name, ".attn_1.") && o->t[i].n_dims == 2) {
            o->t[i].n_dims = 4;
            o->t[i].shape[2] = o->t[i].shape[3] = 1;
        }
    add_file(o, sdw_test_path("models/tiny-sd3/text_encoder/model.safetensors"),
             "text_encoders.clip_l.transformer.", NULL, NULL);
    add_file(o, sdw_test_path("models/tiny-sd3/text_encoder_2/model.safetensors"),
             "text_encoders.clip_g.transformer.", NULL, NULL);
    add_file(o, sdw_test_path("models/tiny-sd3/text_encoder_3/model.safetensors"),
             "text_encoders.t5xxl.transformer.", NULL, NULL);
    sdw_st_writer *w = NULL;
    ASSERT_OK(sdw_st_writer_create(path, &w, NULL), NULL);
    for (int i = 0; i < o->n; i++)
        sdw_st_writer_add(w, o->t[i].name, SDW_DTYPE_F32, o->t[i].n_dims, o->t[i].shape);
    ASSERT_OK(sdw_st_writer_begin(w, NULL), NULL);
    for (int i = 0; i < o->n; i++) {
        ASSERT_OK(sdw_st_writer_write(w, o->t[i].data, NULL), NULL);
        free(o->t[i].data);
    }
    ASSERT_OK(sdw_st_writer_finish(w, NULL), NULL);
    free(o);
}

static void test_stability_single_file(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/sd3_tiny_incl_clips_t5xxl.safetensors", sdw_test_tmpdir());
    write_sgm(path);
    if (sdw_test_failures_in_current) return;
    sdw_load_options o = sdw_load_options_default();
    o.config_dir = sdw_test_path("models/tiny-sd3");
    check_case(path, &o);
}

/* ---- without T5 ---- */

typedef struct ctx_grab {
    int64_t B, L, D;
    double t5_abs; /* sum of |context| in T5's rows */
} ctx_grab;

static void on_ctx(void *user, const char *name, const float *data, int n_dims,
                   const int64_t *shape) {
    ctx_grab *g = user;
    if (strcmp(name, "step00.transformer.encoder_hidden_states")) return;
    g->B = shape[0];
    g->L = shape[1];
    g->D = shape[2];
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t i = 77; i < g->L; i++)
            for (int64_t d = 0; d < g->D; d++)
                g->t5_abs += fabs(data[(b * g->L + i) * g->D + d]);
}

/* diffusers' text_encoder_3=None: 77 zero rows in T5's place (tokenizer_max_length), on purpose
 * (--t5xxl none) or because the folder has no text_encoder_3 (with a warning). */
static void test_without_t5(void) {
    char dir[1024], cmd[4096];
    snprintf(dir, sizeof dir, "%s/sd3-no-t5", sdw_test_tmpdir());
    const char *src = sdw_test_path("models/tiny-sd3");
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && for c in scheduler text_encoder text_encoder_2 tokenizer "
             "tokenizer_2 tokenizer_3 transformer vae; do ln -sfn '%s'/$c '%s'/$c; done && "
             "sed 's/\"T5EncoderModel\"/null/; s/\"transformers\",\\s*null/null, null/' "
             "'%s/model_index.json' > '%s/model_index.json'",
             dir, src, dir, src, dir);
    ASSERT_EQ_INT(system(cmd), 0);
    sdw_load_options none = sdw_load_options_default();
    ASSERT_OK(sdw_load_options_set(&none, "t5xxl", "none", NULL), NULL);
    const struct {
        const char *model;
        const sdw_load_options *opts;
    } runs[2] = {{dir, NULL}, {src, &none}};
    for (int k = 0; k < 2; k++) {
        sdw_image_model *m = NULL;
        sdw_error err = {0};
        ASSERT_OK(sdw_model_load(runs[k].model, runs[k].opts, &m, &err), &err);
        ctx_grab g = {0};
        sdw_diffusion_set_tap(m, on_ctx, &g);
        sdw_request r = sdw_request_default();
        r.prompt = "a photo of a cat";
        r.seed = 42;
        r.steps = 1;
        r.guidance = 5.0f;
        sdw_image img = {0};
        sdw_status s = sdw_model_generate(m, &r, NULL, NULL, &img, NULL, &err);
        const bool no_params = sdw_model_capabilities(m)->params == NULL;
        sdw_image_free(&img);
        sdw_model_destroy(m);
        ASSERT_OK(s, &err);
        ASSERT_TRUE(g.B == 2 && g.L == 77 + 77 && g.D == 64 && g.t5_abs == 0);
        ASSERT_TRUE(no_params); /* no T5, no window to set */
    }
}

/* ---- identity, image-to-image, bad input ---- */

static void test_identity_and_img2img(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd3"), NULL, &m, &err), &err);
    const sdw_capabilities *c = sdw_model_capabilities(m);
    bool ok = !strcmp(sdw_model_type(m), "sd3") && !strcmp(sdw_model_variant(m), "3") &&
              c->supports_guidance && c->supports_negative_prompt && c->default_steps == 28 &&
              c->default_guidance == 7.0f && c->size_multiple == 4 && c->img2img &&
              c->strength_rounds_start && c->params && !strcmp(c->params[0].name,
                                                              "max_sequence_length") &&
              c->params[0].def == 256;
    char desc[4096];
    sdw_model_describe(m, desc, sizeof desc);
    /* StableDiffusion3Img2ImgPipeline: 4 steps at strength 0.2 start at int(3.2) = 3 */
    sdw_image init = {64, 64, 3, malloc(64 * 64 * 3)}, out = {0};
    for (int i = 0; i < 64 * 64 * 3; i++)
        init.data[i] = (uint8_t)(i * 7);
    sdw_request r = sdw_request_default();
    r.prompt = "a cat";
    r.seed = 3;
    r.steps = 4;
    r.init_image = &init;
    r.strength = 0.2;
    sdw_result_info info = {0};
    sdw_status s = sdw_model_generate(m, &r, NULL, NULL, &out, &info, &err);
    sdw_image_free(&out);
    sdw_image_free(&init);
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(ok);
    ASSERT_EQ_INT(info.n_denoiser_calls, 1);
    ASSERT_STR_CONTAINS(desc, "2 joint blocks");
    ASSERT_STR_CONTAINS(desc, "text encoder 3: T5");
}

static void expect_load_error(const char *model, const sdw_load_options *o, const char *needle) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    sdw_status s = sdw_model_load(model, o, &m, &err);
    sdw_model_destroy(m);
    ASSERT_TRUE(s != SDW_OK);
    if (!strstr(err.msg, needle)) fprintf(stderr, "  got: %s\n", err.msg);
    ASSERT_STR_CONTAINS(err.msg, needle);
}

static void test_bad_input(void) {
    /* FLUX's T5 is 32 wide; tiny SD3's joint_attention_dim is 64 */
    sdw_load_options o = sdw_load_options_default();
    ASSERT_OK(sdw_load_options_set(&o, "t5xxl",
                                   sdw_test_path("models/tiny-flux/text_encoder_2/model.safetensors"),
                                   NULL),
              NULL);
    expect_load_error(sdw_test_path("models/tiny-sd3"), &o,
                      "the T5 encoder gives 32 features per token, the transformer's "
                      "joint_attention_dim is 64");
    o = sdw_load_options_default();
    ASSERT_OK(sdw_load_options_set(&o, "t5xxl", "/nonexistent/t5.safetensors", NULL), NULL);
    expect_load_error(sdw_test_path("models/tiny-sd3"), &o, "--t5xxl /nonexistent/t5.safetensors");
    o = sdw_load_options_default();
    ASSERT_OK(sdw_load_options_set(&o, "prediction", "v", NULL), NULL);
    expect_load_error(sdw_test_path("models/tiny-sd3"), &o, "a sd3 model takes no 'prediction'");
}

int main(void) {
    RUN(test_folder);
    RUN(test_stability_single_file);
    RUN(test_without_t5);
    RUN(test_identity_and_img2img);
    RUN(test_bad_input);
    return sdw_test_finish();
}
