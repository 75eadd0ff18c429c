/* The FLUX family against the reference (diffusers 0.30.3 FluxPipeline), stage by stage: CLIP
 * and T5 ids and states, every transformer call's inputs and output, every step's latents, the
 * VAE decode, then the final image within 2 levels of the reference PNG — for the diffusers
 * folders, Black Forest Labs' single transformer files completed from --config, and components
 * given as single files (--vae ae.safetensors, --clip-l, --t5xxl). Every stage the reference
 * recorded must be compared, except those listed in skipped(). Then the family's identity and
 * its refusals of bad input. */
#include "sdw_test.h"

#include "models/diffusion.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STAGE_TOL 1e-4

/* Records the pipeline does not produce as such: the float image (the PNG is compared), the
 * scheduler tables (tests/sampling/test_flow.c) and the standalone probe call
 * (tests/models/test_flux_transformer.c). */
static bool excused(const char *name, const void *ctx) {
    return strcmp(name, "image") == 0 || strncmp(name, "sched.", 6) == 0 ||
           strncmp(name, "probe.", 6) == 0;
}

/* The reference records each step's latents packed ([1, (h/2)(w/2), 4C], as FluxPipeline holds
 * them); the core holds them NCHW: pack before comparing. Everything else passes through. */
static void tap(void *user, const char *name, const float *data, int n_dims,
                const int64_t *shape) {
    int k;
    char rest[32];
    if (n_dims == 4 && sscanf(name, "step%d.%31s", &k, rest) == 2 && !strcmp(rest, "latents")) {
        const int C = (int)shape[1], h = (int)shape[2], w = (int)shape[3];
        float *p = malloc((size_t)C * h * w * sizeof *p);
        for (int r = 0; r < h / 2; r++)
            for (int q = 0; q < w / 2; q++)
                for (int c = 0; c < C; c++)
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++)
                            p[((size_t)r * (w / 2) + q) * 4 * C + c * 4 + dy * 2 + dx] =
                                data[((size_t)c * h + 2 * r + dy) * w + 2 * q + dx];
        const int64_t packed[3] = {1, (int64_t)(h / 2) * (w / 2), 4 * C};
        sdw_stage_tap(user, name, p, 3, packed);
        free(p);
        return;
    }
    sdw_stage_tap(user, name, data, n_dims, shape);
}

/* Loads model with opts, runs golden_case, compares every stage and the image. */
static void check_case(const char *model, const sdw_load_options *opts, const char *golden_case,
                       const char *want_variant) {
    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g != NULL);
    sdw_image_model *m = NULL;
    sdw_image img = {0}, init = {0}, mask = {0};
    sdw_error err = {0};
    sdw_stage_check *c = calloc(1, sizeof *c);
    c->g = g;
    c->tol = STAGE_TOL;
    sdw_status s = sdw_model_load(model, opts, &m, &err);
    sdw_request r;
    if (!s) s = sdw_golden_request(g, &r, &init, &mask, &err);
    char variant[32] = "";
    if (!s) {
        snprintf(variant, sizeof variant, "%s", sdw_model_variant(m));
        sdw_diffusion_set_tap(m, tap, c);
        s = sdw_model_generate(m, &r, NULL, NULL, &img, NULL, &err);
    }
    int maxd = 256, missing = -1;
    if (!s) maxd = sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", golden_case));
    if (!s) missing = sdw_stage_missing(c, excused, NULL);
    fprintf(stderr, "  %s (%s): %d stages compared, worst %.2g (%s), image max diff %d\n",
            golden_case, model, c->n_compared, c->worst, c->worst_name, maxd);
    sdw_image_free(&img);
    sdw_model_destroy(m);
    sdw_golden_close(g);
    const int n_compared = c->n_compared, n_failed = c->n_failed;
    free(c);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(strcmp(variant, want_variant) == 0);
    ASSERT_EQ_INT(missing, 0);
    ASSERT_EQ_INT(n_failed, 0);
    /* ids x2, states x3, init noise, 4 steps x (input, timestep, out, latents), step-0
     * conditioning x4+, decode z and out */
    ASSERT_TRUE(n_compared >= 2 + 3 + 1 + 4 * 4 + 4 + 2);
    ASSERT_TRUE(maxd <= 2);
}

static void test_dev_folder(void) {
    check_case(sdw_test_path("models/tiny-flux"), NULL, "tiny-flux/txt2img-flowmatch", "dev");
}

static void test_schnell_folder(void) {
    check_case(sdw_test_path("models/tiny-flux-schnell"), NULL, "tiny-flux-schnell/txt2img-4step",
               "schnell");
}

/* BFL's flux1-dev / flux1-schnell layout: the transformer alone; --config gives the rest. */
static void test_bfl_single_files(void) {
    sdw_load_options o = sdw_load_options_default();
    o.config_dir = sdw_test_path("models/tiny-flux");
    check_case(sdw_test_path("models/flux-tiny-dev.safetensors"), &o,
               "tiny-flux/txt2img-flowmatch", "dev");
    o.config_dir = sdw_test_path("models/tiny-flux-schnell");
    check_case(sdw_test_path("models/flux-tiny-schnell.safetensors"), &o,
               "tiny-flux-schnell/txt2img-4step", "schnell");
}

/* Components as the files ComfyUI / stable-diffusion.cpp users have: BFL's ae.safetensors for
 * the VAE, transformers weights files for CLIP-L and T5. */
static void test_component_files(void) {
    sdw_load_options o = sdw_load_options_default();
    o.config_dir = sdw_test_path("models/tiny-flux");
    char clip[1024], t5[1024];
    snprintf(clip, sizeof clip, "%s", sdw_test_path("models/tiny-flux/text_encoder/model.safetensors"));
    snprintf(t5, sizeof t5, "%s", sdw_test_path("models/tiny-flux/text_encoder_2/model.safetensors"));
    ASSERT_OK(sdw_load_options_set(&o, "vae", sdw_test_path("models/flux-tiny-ae.safetensors"), NULL),
              NULL);
    ASSERT_OK(sdw_load_options_set(&o, "clip_l", clip, NULL), NULL);
    ASSERT_OK(sdw_load_options_set(&o, "t5xxl", t5, NULL), NULL);
    check_case(sdw_test_path("models/flux-tiny-dev.safetensors"), &o,
               "tiny-flux/txt2img-flowmatch", "dev");
}

/* A diffusers folder as large models are saved: the transformer in two shards with a
 * diffusion_pytorch_model.safetensors.index.json (the other components linked from tiny-flux). */
static void test_sharded_folder(void) {
    char dir[1024], cmd[4096];
    snprintf(dir, sizeof dir, "%s/flux-sharded", sdw_test_tmpdir());
    const char *src = sdw_test_path("models/tiny-flux");
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/transformer' && for c in model_index.json scheduler text_encoder "
             "text_encoder_2 tokenizer tokenizer_2 vae; do ln -sfn '%s'/$c '%s'/$c; done && "
             "cp '%s/transformer/config.json' '%s/transformer/'",
             dir, src, dir, src, dir);
    ASSERT_EQ_INT(system(cmd), 0);
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-flux/transformer/"
                                        "diffusion_pytorch_model.safetensors"),
                          &f, NULL),
              NULL);
    const int n = sdw_st_count(f);
    char index[1 << 16];
    size_t o = (size_t)snprintf(index, sizeof index, "{\"weight_map\": {");
    for (int part = 0; part < 2; part++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/transformer/diffusion_pytorch_model-0000%d-of-00002.safetensors",
                 dir, part + 1);
        sdw_st_writer *w = NULL;
        ASSERT_OK(sdw_st_writer_create(path, &w, NULL), NULL);
        for (int pass = 0; pass < 2; pass++) {
            for (int i = part; i < n; i += 2) { /* alternate tensors between the shards */
                const sdw_st_tensor *t = sdw_st_at(f, i);
                if (pass == 0) {
                    sdw_st_writer_add(w, t->name, SDW_DTYPE_F32, t->n_dims, t->shape);
                    o += (size_t)snprintf(index + o, sizeof index - o,
                                          "%s\"%s\": \"diffusion_pytorch_model-0000%d-of-00002"
                                          ".safetensors\"",
                                          o > 16 ? ", " : "", t->name, part + 1);
                    continue;
                }
                float *v = malloc(t->n_elems * sizeof *v);
                sdw_convert_to_f32(t->dtype, t->data, v, t->n_elems);
                ASSERT_OK(sdw_st_writer_write(w, v, NULL), NULL);
                free(v);
            }
            if (pass == 0) ASSERT_OK(sdw_st_writer_begin(w, NULL), NULL);
        }
        ASSERT_OK(sdw_st_writer_finish(w, NULL), NULL);
    }
    sdw_st_close(f);
    snprintf(index + o, sizeof index - o, "}}");
    char path[1200];
    snprintf(path, sizeof path, "%s/transformer/diffusion_pytorch_model.safetensors.index.json",
             dir);
    FILE *idx = fopen(path, "w");
    ASSERT_TRUE(idx != NULL);
    fputs(index, idx);
    fclose(idx);
    check_case(dir, NULL, "tiny-flux/txt2img-flowmatch", "dev");
}

/* Identity: family, capabilities as FluxPipeline's defaults, the sequence-length option. */
static void test_identity(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-flux-schnell"), NULL, &m, &err), &err);
    const sdw_capabilities *c = sdw_model_capabilities(m);
    bool ok = !strcmp(sdw_model_type(m), "flux") && !strcmp(sdw_model_variant(m), "schnell") &&
              !c->supports_guidance && !c->supports_negative_prompt && c->default_steps == 4 &&
              c->size_multiple == 4 && c->txt2img && c->img2img && c->inpainting &&
              c->strength_rounds_start && !strcmp(c->default_sampler, "euler") &&
              c->samplers[0] && !c->samplers[1];
    /* guidance sent to schnell is ignored (resolved to 0, with a warning) */
    sdw_request r = sdw_request_default(), out;
    r.prompt = "x";
    r.guidance = 3.5f;
    ASSERT_OK(sdw_request_resolve(&r, c, &out, &err), &err);
    ok = ok && out.guidance == 0;
    /* a size off the model's step (VAE factor 2 x 2x2 packing = 4 px here, 16 px for FLUX.1) */
    r.width = 66;
    ASSERT_STATUS(sdw_request_resolve(&r, c, &out, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "not a multiple of 4");
    /* max_sequence_length within the T5 window */
    r.width = 64;
    const sdw_param p = {"max_sequence_length", 600};
    r.params = &p;
    r.n_params = 1;
    ASSERT_STATUS(sdw_request_resolve(&r, c, &out, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "max_sequence_length 600 is out of range [1, 512]");
    char desc[4096];
    sdw_model_describe(m, desc, sizeof desc);
    sdw_model_destroy(m);
    ASSERT_TRUE(ok);
    ASSERT_STR_CONTAINS(desc, "T5");
    ASSERT_STR_CONTAINS(desc, "1 double + 2 single blocks");
}

/* A shorter T5 window (schnell's 256) changes the context the transformer sees, and the
 * tokenizer/encoder follow it: the run works and differs from the 512 one. */
static void test_max_sequence_length(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-flux-schnell"), NULL, &m, &err), &err);
    sdw_request r = sdw_request_default();
    r.prompt = "a photo of a cat";
    r.seed = 42;
    r.steps = 2;
    r.width = r.height = 64;
    sdw_image a = {0}, b = {0};
    sdw_status s = sdw_model_generate(m, &r, NULL, NULL, &a, NULL, &err);
    const sdw_param p = {"max_sequence_length", 256};
    r.params = &p;
    r.n_params = 1;
    if (!s) s = sdw_model_generate(m, &r, NULL, NULL, &b, NULL, &err);
    const bool differ = !s && memcmp(a.data, b.data, (size_t)64 * 64 * 3) != 0;
    sdw_image_free(&a);
    sdw_image_free(&b);
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(differ);
}

typedef struct count {
    int calls, total;
} count;

static bool on_progress(void *user, int step, int total, const sdw_image *preview) {
    count *c = user;
    c->calls++;
    c->total = total;
    return true;
}

/* Grabs the tensors the inpainting check needs from the taps. */
typedef struct grab {
    float *mean, *std, *eps, *z; /* vae.encode.0.{mean,std}, noise.00, vae.decode.z */
    size_t n;
} grab;

static void on_grab(void *user, const char *name, const float *data, int n_dims,
                    const int64_t *shape) {
    grab *g = user;
    size_t n = 1;
    for (int i = 0; i < n_dims; i++)
        n *= (size_t)shape[i];
    float **dst = !strcmp(name, "vae.encode.0.mean") ? &g->mean
                  : !strcmp(name, "vae.encode.0.std") ? &g->std
                  : !strcmp(name, "noise.00")         ? &g->eps
                  : !strcmp(name, "vae.decode.z")     ? &g->z
                                                      : NULL;
    if (!dst || *dst) return;
    *dst = malloc(n * sizeof **dst);
    memcpy(*dst, data, n * sizeof **dst);
    g->n = n;
}

/* Image-to-image as FluxImg2ImgPipeline (0.31): the start is int(steps - steps * strength),
 * so 4 steps at strength 0.2 run 1 (Stable Diffusion's rule would run none). Inpainting as
 * FluxInpaintPipeline (0.31): after the last step the latents outside the mask are the init
 * image's posterior sample (mean + std * the first draw), so the decoder's input there is
 * exactly that sample (up to the shift and scale's rounding), and inside the mask it is not. */
static void test_img2img_and_inpaint(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-flux"), NULL, &m, &err), &err);
    sdw_image init = {64, 64, 3, malloc(64 * 64 * 3)}, mask = {64, 64, 1, malloc(64 * 64)};
    for (int i = 0; i < 64 * 64; i++) {
        init.data[i * 3] = (uint8_t)(i % 64 * 4);
        init.data[i * 3 + 1] = (uint8_t)(i / 64 * 4);
        init.data[i * 3 + 2] = 128;
        mask.data[i] = i % 64 >= 32 ? 255 : 0; /* repaint the right half */
    }
    sdw_request r = sdw_request_default();
    r.prompt = "a photo of a cat";
    r.seed = 1;
    r.steps = 4;
    r.init_image = &init;
    r.strength = 0.2;
    count c = {0};
    sdw_image out = {0}, painted = {0};
    sdw_status s = sdw_model_generate(m, &r, on_progress, &c, &out, NULL, &err);
    const int calls = c.calls;
    r.mask = &mask;
    r.strength = 1.0;
    c = (count){0};
    grab g = {0};
    sdw_diffusion_set_tap(m, on_grab, &g);
    if (!s) s = sdw_model_generate(m, &r, on_progress, &c, &painted, NULL, &err);
    /* latents 4 x 32 x 32: columns < 16 kept, >= 16 repainted */
    double kept = 0, repainted = 0, scale = 0;
    for (size_t i = 0; !s && g.z && g.mean && g.std && g.eps && i < g.n; i++) {
        const double sample = (double)g.mean[i] + (double)g.std[i] * g.eps[i];
        const double d = fabs(g.z[i] - sample);
        if (i % 32 < 16) kept = fmax(kept, d);
        else repainted = fmax(repainted, d);
        scale = fmax(scale, fabs(sample));
    }
    free(g.mean);
    free(g.std);
    free(g.eps);
    free(g.z);
    sdw_image_free(&out);
    sdw_image_free(&painted);
    sdw_image_free(&init);
    sdw_image_free(&mask);
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
    ASSERT_EQ_INT(calls, 1);
    ASSERT_EQ_INT(c.calls, 4);
    fprintf(stderr, "  inpaint: decoder input vs the init sample, max |diff| %.2g kept, %.2g "
            "repainted (scale %.2g)\n", kept, repainted, scale);
    ASSERT_TRUE(scale > 0 && kept <= 1e-5 * scale);
    ASSERT_TRUE(repainted > 0.1 * scale);
}

/* Writes the tensors of src except those whose name starts with one of drop[] into path. */
static bool copy_without(const char *src, const char *path, const char *const *drop) {
    sdw_st_file *f = NULL;
    sdw_st_writer *w = NULL;
    if (sdw_st_open(src, &f, NULL) || sdw_st_writer_create(path, &w, NULL)) return false;
    int n = sdw_st_count(f);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            const sdw_st_tensor *t = sdw_st_at(f, i);
            bool skip = false;
            for (const char *const *d = drop; *d && !skip; d++)
                skip = strncmp(t->name, *d, strlen(*d)) == 0;
            if (skip) continue;
            if (pass == 0) {
                sdw_st_writer_add(w, t->name, SDW_DTYPE_F32, t->n_dims, t->shape);
            } else {
                float *v = malloc(t->n_elems * sizeof *v);
                sdw_convert_to_f32(t->dtype, t->data, v, t->n_elems);
                sdw_status s = sdw_st_writer_write(w, v, NULL);
                free(v);
                if (s) return false;
            }
        }
        if (pass == 0 && sdw_st_writer_begin(w, NULL)) return false;
    }
    sdw_st_close(f);
    return sdw_st_writer_finish(w, NULL) == SDW_OK;
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

/* Bad input: a transformer file with a missing block, a T5 of the wrong width, a single file
 * without what completes it, an option the family does not take. */
static void test_bad_input(void) {
    char broken[1024];
    snprintf(broken, sizeof broken, "%s/flux-missing-block.safetensors", sdw_test_tmpdir());
    static const char *const drop[] = {"single_blocks.0.", NULL};
    ASSERT_TRUE(copy_without(sdw_test_path("models/flux-tiny-dev.safetensors"), broken, drop));
    sdw_load_options o = sdw_load_options_default();
    o.config_dir = sdw_test_path("models/tiny-flux");
    expect_load_error(broken, &o, "single_transformer_blocks.0");
    /* SD3's T5 is 64 wide; tiny FLUX's transformer takes 32 */
    ASSERT_OK(sdw_load_options_set(&o, "t5xxl",
                                   sdw_test_path("models/tiny-sd3/text_encoder_3/model.safetensors"),
                                   NULL),
              NULL);
    expect_load_error(sdw_test_path("models/flux-tiny-dev.safetensors"), &o,
                      "T5 encoder gives 64 features per token");
    o = sdw_load_options_default();
    expect_load_error(sdw_test_path("models/flux-tiny-dev.safetensors"), &o, "give --config DIR");
    ASSERT_OK(sdw_load_options_set(&o, "prediction", "v", NULL), NULL);
    expect_load_error(sdw_test_path("models/tiny-flux"), &o, "takes no 'prediction' option");
}

int main(void) {
    RUN(test_dev_folder);
    RUN(test_schnell_folder);
    RUN(test_bfl_single_files);
    RUN(test_component_files);
    RUN(test_sharded_folder);
    RUN(test_identity);
    RUN(test_max_sequence_length);
    RUN(test_img2img_and_inpaint);
    RUN(test_bad_input);
    return sdw_test_finish();
}
