/* SD 2.x, SDXL and SDXL-Turbo against the reference, stage by stage: every tensor the pipeline
 * taps (token ids of both tokenizers, each encoder's hidden state, the pooled embedding, every
 * UNet call's sample / context / text_embeds / time_ids / output, each step's latents, the VAE
 * input and output) against the golden of the same name, then the final image within 2 levels.
 * Diffusers folders and the single files people download (tiny-sd2.safetensors with OpenCLIP
 * names, tiny-sdxl.safetensors in SGM names, float16). Also the variants and capabilities each
 * load reports. */
#include "sdw_test.h"

#include "io/image.h"
#include "models/diffusion.h"
#include "models/stable_diffusion/unet_config.h"

#include <jansson.h>
#include <stdlib.h>

/* The "unet_head_dim" load option (single files), or none when head_dim is 0. */
static void set_head_dim(sdw_load_options *opts, int head_dim) {
    static char buf[4][16];
    static int k;
    if (head_dim <= 0) return;
    char *b = buf[k++ % 4];
    snprintf(b, 16, "%d", head_dim);
    sdw_load_options_set(opts, "unet_head_dim", b, NULL);
}

#define STAGE_TOL 1e-4

/* The head size a tiny fixture's UNet was built with (its folder config: channels / heads of a
 * level with attention). Single files do not record it; the loader takes it as an option. */
static int fixture_head_dim(const char *folder) {
    sdw_unet_config c;
    sdw_error err = {0};
    if (sdw_unet_config_load(sdw_test_path("models/%s/unet/config.json", folder), &c, &err))
        return -1;
    int i = c.n_levels - 1; /* the mid block's level always has attention */
    return c.block_out_channels[i] / c.heads[i];
}

/* Records the pipeline does not produce as such, so not every recorded stage is compared: the
 * raw input pixels (seen through vae.encode.N.image), per-call timesteps (the schedule), the
 * scheduler tables, the standalone probe, the float image (the PNG is compared), the first
 * encoder's pooled output (SD 1/2 use none; SDXL's pooled embedding is te2's), a last hidden
 * state where the model conditions on the penultimate one, and in 4-channel inpainting the
 * masked image the reference encodes and never uses (its random draw is compared). */
static bool not_produced(json_t *man, const char *name, bool four_channel_inpaint) {
    static const char *const sub[] = {"init_image_u8", "mask_image_u8", ".unet.timestep", NULL};
    for (const char *const *p = sub; *p; p++)
        if (strstr(name, *p)) return true;
    if (!strncmp(name, "sched.", 6) || !strncmp(name, "probe.", 6) || !strcmp(name, "image"))
        return true;
    if (!strcmp(name, "te.cond.pooled") || !strcmp(name, "te.uncond.pooled")) return true;
    const char *lhs = strstr(name, ".last_hidden_state");
    if (lhs) { /* te2.cond.last_hidden_state -> te2.cond.penultimate recorded? */
        char pen[96];
        snprintf(pen, sizeof pen, "%.*s.penultimate", (int)(lhs - name), name);
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(man, "tensors"), i, t) {
            if (!strcmp(json_string_value(json_object_get(t, "name")), pen)) return true;
        }
    }
    return four_channel_inpaint && !strncmp(name, "vae.encode.1.", 13);
}

/* not_produced() for sdw_stage_missing. */
typedef struct excuse_ctx {
    json_t *man;
    bool four_channel_inpaint;
} excuse_ctx;

static bool excused(const char *name, const void *ctx) {
    const excuse_ctx *x = ctx;
    return not_produced(x->man, name, x->four_channel_inpaint);
}

typedef struct case_opts {
    const char *tokenizer; /* single files */
    int head_dim;          /* single files: the fixture's head size */
    const char *scheduler_config;
    const char *want_variant;
    const char *must_see[8]; /* stage names that have to be among the compared */
} case_opts;

static void check_case(const char *model, const char *golden_case, const case_opts *o) {
    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g != NULL);
    sdw_load_options opts = sdw_load_options_default();
    sdw_load_options_set(&opts, "tokenizer", o->tokenizer, NULL);
    set_head_dim(&opts, o->head_dim);
    sdw_load_options_set(&opts, "scheduler_config", o->scheduler_config, NULL);
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    sdw_status s = sdw_model_load(model, &opts, &m, &err);
    if (s) {
        sdw_golden_close(g);
        ASSERT_OK(s, &err);
    }
    char variant[32];
    snprintf(variant, sizeof variant, "%s", sdw_model_variant(m));
    sdw_stage_check c = {.g = g, .tol = STAGE_TOL};
    sdw_diffusion_set_tap(m, sdw_stage_tap, &c);
    json_t *man = sdw_golden_manifest(g);
    sdw_request req;
    sdw_image img = {0}, init = {0}, mask = {0};
    sdw_result_info info = {0};
    /* image-to-image / inpainting: the reference's input images and strength */
    s = sdw_golden_request(g, &req, &init, &mask, &err);
    const bool four_channel_inpaint = mask.data && !strstr(variant, "inpaint");
    if (!s) s = sdw_model_generate(m, &req, NULL, NULL, &img, &info, &err);
    const excuse_ctx x = {man, four_channel_inpaint};
    const int missing = s ? -1 : sdw_stage_missing(&c, excused, &x);
    sdw_model_destroy(m);
    sdw_image_free(&init);
    sdw_image_free(&mask);
    const int maxd =
        s ? 256 : sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", golden_case));
    sdw_image_free(&img);
    sdw_golden_close(g);
    ASSERT_OK(s, &err);
    fprintf(stderr, "  %s on %s: %d stages compared, worst %.2g (%s), image max diff %d\n",
            golden_case, model, c.n_compared, c.worst, c.worst_name, maxd);
    ASSERT_EQ_INT(c.n_failed, 0);
    ASSERT_EQ_INT(missing, 0);
    for (int i = 0; i < 8 && o->must_see[i]; i++) {
        char key[80];
        snprintf(key, sizeof key, " %s ", o->must_see[i]);
        if (!strstr(c.seen, key)) fprintf(stderr, "  stage %s was not compared\n", o->must_see[i]);
        ASSERT_TRUE(strstr(c.seen, key) != NULL);
    }
    /* per step: sample, context, output, latents (+ text_embeds, time_ids for XL) */
    char last[64];
    snprintf(last, sizeof last, " step%02d.latents ", info.n_denoiser_calls - 1);
    ASSERT_TRUE(strstr(c.seen, last) != NULL);
    ASSERT_EQ_INT(info.n_denoiser_calls,
                  req.init_image ? (int)(req.steps * req.strength) : req.steps);
    ASSERT_TRUE(strcmp(variant, o->want_variant) == 0);
    ASSERT_TRUE(maxd <= 2);
}

#define XL_STAGES                                                                                  \
    {                                                                                              \
        "te.cond.penultimate", "te2.cond.penultimate", "te2.cond.pooled",                          \
            "step00.unet.text_embeds", "step00.unet.time_ids",                                     \
            "step00.unet.encoder_hidden_states", "vae.decode.out"                                  \
    }

static void test_sd2_folder(void) {
    case_opts o = {.want_variant = "v2-v",
                   .must_see = {"te.cond.last_hidden_state", "te.uncond.last_hidden_state",
                                "step00.unet.encoder_hidden_states", "step00.unet.out",
                                "vae.decode.out"}};
    check_case(sdw_test_path("models/tiny-sd2"), "tiny-sd2/txt2img-ddim", &o);
    if (sdw_test_failures_in_current) return;
    check_case(sdw_test_path("models/tiny-sd2"), "tiny-sd2/txt2img-euler_a", &o);
}

/* OpenCLIP names, fused q|k|v, the unused last layer, v-prediction detected from the file. */
static void test_sd2_single_file(void) {
    case_opts o = {.tokenizer = sdw_test_path("clip-tokenizer"),
                   .head_dim = fixture_head_dim("tiny-sd2"),
                   .want_variant = "v2-v",
                   .must_see = {"te.cond.input_ids", "te.cond.last_hidden_state",
                                "te.uncond.last_hidden_state", "step00.unet.out",
                                "vae.decode.out"}};
    ASSERT_EQ_INT(o.head_dim, 8);
    check_case(sdw_test_path("models/tiny-sd2.safetensors"), "tiny-sd2/txt2img-ddim", &o);
    if (sdw_test_failures_in_current) return;
    check_case(sdw_test_path("models/tiny-sd2.safetensors"), "tiny-sd2/txt2img-euler_a", &o);
}

static void test_sdxl_folder(void) {
    case_opts o = {.want_variant = "xl", .must_see = XL_STAGES};
    check_case(sdw_test_path("models/tiny-sdxl"), "tiny-sdxl/txt2img-euler", &o);
    if (sdw_test_failures_in_current) return;
    check_case(sdw_test_path("models/tiny-sdxl"), "tiny-sdxl/txt2img-euler_a", &o);
}

/* SGM names, f16, CLIP-L + OpenCLIP-bigG, label_emb, VAE scaling 0.13025 from the family. */
static void test_sdxl_single_file(void) {
    case_opts o = {.tokenizer = sdw_test_path("clip-tokenizer"),
                   .head_dim = fixture_head_dim("tiny-sdxl"),
                   .want_variant = "xl",
                   .must_see = XL_STAGES};
    ASSERT_EQ_INT(o.head_dim, 16);
    check_case(sdw_test_path("models/tiny-sdxl.safetensors"), "tiny-sdxl-single/txt2img-euler", &o);
}

/* Guidance 0: one UNet call of batch 1 per step, trailing spacing from the folder's config. */
static void test_turbo_folder(void) {
    case_opts o = {.want_variant = "xl-turbo", .must_see = XL_STAGES};
    check_case(sdw_test_path("models/tiny-sdxl-turbo"), "tiny-sdxl/turbo-euler_a-1step", &o);
    if (sdw_test_failures_in_current) return;
    check_case(sdw_test_path("models/tiny-sdxl-turbo"), "tiny-sdxl/turbo-euler_a-4step", &o);
}

/* SDXL image-to-image (StableDiffusionXLImg2ImgPipeline) and inpainting with the 4-channel base
 * model (StableDiffusionXLInpaintPipeline): the img2img path with SDXL's conditioning. */
static void test_sdxl_img2img_inpaint(void) {
    case_opts o = {.want_variant = "xl",
                   .must_see = {"vae.encode.0.mean", "noise.01", "step00.unet.time_ids",
                                "step00.unet.text_embeds", "te2.cond.pooled", "vae.decode.out"}};
    check_case(sdw_test_path("models/tiny-sdxl"), "tiny-sdxl/img2img-euler_a", &o);
    if (sdw_test_failures_in_current) return;
    check_case(sdw_test_path("models/tiny-sdxl"), "tiny-sdxl/inpaint-ddim", &o);
}

/* Runs a small txt2img; *out gets the image (free with sdw_image_free). */
static sdw_status run_small(sdw_image_model *m, const char *scheduler, sdw_image *out,
                            sdw_error *err) {
    sdw_request r = sdw_request_default();
    r.prompt = "a photo of a cat";
    r.width = r.height = 64;
    r.steps = 2;
    r.guidance = 0;
    r.seed = 7;
    r.sampler = "euler_a";
    r.scheduler = scheduler;
    return sdw_model_generate(m, &r, NULL, NULL, out, NULL, err);
}

/* A Turbo single file is base weights: the scheduler config given at load (sdxl-turbo's) makes
 * it the Turbo variant with Turbo's capabilities; a plain load with the request's "trailing"
 * scheduler runs the very same schedule (same image, byte for byte). */
static void test_turbo_single_file(void) {
    sdw_load_options opts = sdw_load_options_default();
    sdw_load_options_set(&opts, "tokenizer", sdw_test_path("clip-tokenizer"), NULL);
    set_head_dim(&opts, fixture_head_dim("tiny-sdxl"));
    sdw_load_options_set(&opts, "scheduler_config", sdw_test_path("models/tiny-sdxl-turbo/scheduler/scheduler_config.json"), NULL);
    sdw_image_model *t = NULL, *b = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sdxl.safetensors"), &opts, &t, &err), &err);
    sdw_load_options_set(&opts, "scheduler_config", NULL, NULL);
    sdw_status s = sdw_model_load(sdw_test_path("models/tiny-sdxl.safetensors"), &opts, &b, &err);
    if (s) sdw_model_destroy(t);
    ASSERT_OK(s, &err);
    const sdw_capabilities *ct = sdw_model_capabilities(t), *cb = sdw_model_capabilities(b);
    bool caps_ok = !strcmp(sdw_model_variant(t), "xl-turbo") &&
                   !strcmp(sdw_model_variant(b), "xl") && !ct->supports_guidance &&
                   !ct->supports_negative_prompt && ct->default_steps == 1 &&
                   ct->default_guidance == 0 && !strcmp(ct->default_sampler, "euler_a") &&
                   cb->supports_guidance && !strcmp(cb->default_sampler, "euler");
    sdw_image it = {0}, ib = {0};
    s = run_small(t, NULL, &it, &err);
    if (!s) s = run_small(b, "trailing", &ib, &err);
    bool same = s == SDW_OK && it.width == ib.width &&
                !memcmp(it.data, ib.data, (size_t)it.width * it.height * 3);
    /* and "trailing" is not a no-op: the base schedule (leading) gives another image */
    sdw_image il = {0};
    if (!s) s = run_small(b, "default", &il, &err);
    bool differs = s == SDW_OK && memcmp(il.data, ib.data, (size_t)il.width * il.height * 3);
    sdw_image_free(&it);
    sdw_image_free(&ib);
    sdw_image_free(&il);
    sdw_model_destroy(t);
    sdw_model_destroy(b);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(caps_ok);
    ASSERT_TRUE(same);
    ASSERT_TRUE(differs);
}

/* Writes a copy of fixture `file` into the temp dir with extra "__metadata__" entries
 * (key, value pairs; NULL-terminated) and, if add_v_pred, an empty "v_pred" tensor. */
static const char *copy_with(const char *file, const char *const *meta, bool add_v_pred) {
    static char path[1024];
    char *data = NULL;
    size_t len = 0;
    FILE *f = fopen(sdw_test_path("models/%s", file), "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc(len);
    if (!data || fread(data, 1, len, f) != len) {
        fclose(f);
        free(data);
        return NULL;
    }
    fclose(f);
    uint64_t hl;
    memcpy(&hl, data, 8);
    json_t *h = json_loadb(data + 8, (size_t)hl, 0, NULL);
    json_t *md = json_object();
    for (int i = 0; meta && meta[i]; i += 2)
        json_object_set_new(md, meta[i], json_string(meta[i + 1]));
    json_object_set_new(h, "__metadata__", md);
    if (add_v_pred)
        json_object_set_new(
            h, "v_pred",
            json_pack("{s:s, s:[i], s:[i, i]}", "dtype", "F32", "shape", 0, "data_offsets", 0, 0));
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    snprintf(path, sizeof path, "%s/%s", sdw_test_tmpdir(), file);
    FILE *o = fopen(path, "wb");
    uint64_t nl = strlen(text);
    bool ok = o && fwrite(&nl, 8, 1, o) == 1 && fwrite(text, 1, nl, o) == nl &&
              fwrite(data + 8 + hl, 1, len - 8 - hl, o) == len - 8 - hl;
    if (o) ok = fclose(o) == 0 && ok;
    free(text);
    free(data);
    return ok ? path : NULL;
}

/* The prediction type a single file loads with (NULL on a load failure). */
static const char *loaded_prediction(const char *path, const char *folder, char *desc, size_t cap) {
    sdw_load_options opts = sdw_load_options_default();
    sdw_load_options_set(&opts, "tokenizer", sdw_test_path("clip-tokenizer"), NULL);
    set_head_dim(&opts, fixture_head_dim(folder));
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    if (sdw_model_load(path, &opts, &m, &err)) {
        fprintf(stderr, "  %s\n", err.msg);
        return NULL;
    }
    sdw_model_describe(m, desc, cap);
    sdw_model_destroy(m);
    char *p = strstr(desc, "prediction:");
    if (!p) return NULL;
    p += strlen("prediction:");
    while (*p == ' ')
        p++;
    p[strcspn(p, "\n")] = 0;
    return p;
}

/* The documented detection rules, in order: v_pred marker, ModelSpec metadata (prediction type,
 * then a "-v" architecture), SD 2.x default v, everything else epsilon. */
static void test_single_file_prediction_rules(void) {
    char d[4096];
    const char *p;
    static const char *const eps_meta[] = {"modelspec.prediction_type", "epsilon", NULL};
    static const char *const v_meta[] = {"modelspec.prediction_type", "v", NULL};
    static const char *const arch_v[] = {"modelspec.architecture", "stable-diffusion-v2-768-v",
                                         NULL};
    static const char *const arch_512[] = {"modelspec.architecture", "stable-diffusion-v2-512",
                                           NULL};
    p = loaded_prediction(sdw_test_path("models/tiny-sdxl.safetensors"), "tiny-sdxl", d, sizeof d);
    ASSERT_TRUE(p && !strcmp(p, "epsilon"));
    p = loaded_prediction(copy_with("tiny-sdxl.safetensors", NULL, true), "tiny-sdxl", d, sizeof d);
    ASSERT_TRUE(p && !strcmp(p, "v_prediction"));
    p = loaded_prediction(copy_with("tiny-sdxl.safetensors", v_meta, false), "tiny-sdxl", d,
                          sizeof d);
    ASSERT_TRUE(p && !strcmp(p, "v_prediction"));
    p = loaded_prediction(copy_with("tiny-sd2.safetensors", eps_meta, false), "tiny-sd2", d,
                          sizeof d);
    ASSERT_TRUE(p && !strcmp(p, "epsilon"));
    p = loaded_prediction(copy_with("tiny-sd2.safetensors", arch_v, false), "tiny-sd2", d,
                          sizeof d);
    ASSERT_TRUE(p && !strcmp(p, "v_prediction"));
    /* an architecture without "-v" says nothing: the SD 2.x default (v) stands */
    p = loaded_prediction(copy_with("tiny-sd2.safetensors", arch_512, false), "tiny-sd2", d,
                          sizeof d);
    ASSERT_TRUE(p && !strcmp(p, "v_prediction"));
    p = loaded_prediction(sdw_test_path("models/tiny-sd15.safetensors"), "tiny-sd15", d, sizeof d);
    ASSERT_TRUE(p && !strcmp(p, "epsilon"));
}

int main(void) {
    RUN(test_sd2_folder);
    RUN(test_sd2_single_file);
    RUN(test_sdxl_folder);
    RUN(test_sdxl_single_file);
    RUN(test_turbo_folder);
    RUN(test_sdxl_img2img_inpaint);
    RUN(test_turbo_single_file);
    RUN(test_single_file_prediction_rules);
    return sdw_test_finish();
}
