/* LoRA on Stable Diffusion against the reference (diffusers 0.25.1): the merged weights of
 * golden/tiny-sd15/lora-merge (W + 0.8·0.5·up·down for all 102 modules, from the kohya and the
 * diffusers file), the UNet probe and the whole txt2img-euler-lora pipeline stage by stage
 * (te.* with the LoRA'd text encoder) with both files, by request list and by prompt tag, two
 * LoRAs summing to the golden's multiplier, kohya's SGM names on the single-file model, bf16.
 * Then what must never happen: a request leaving anything behind (base, LoRA, base gives the
 * base image bit for bit, after failed requests too), a LoRA for another model or a broken file
 * passing silently, a name leaving the LoRA folder. */
#include "sdw_test.h"

#include "engine/engine.h"
#include "io/weights.h"
#include "models/diffusion.h"
#include "models/lora.h"
#include "models/stable_diffusion/ldm_unet_names.h"
#include "models/stable_diffusion/unet.h"
#include "nn/nn.h"
#include "sdw/lora.h"

#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define STAGE_TOL 1e-4
#define KOHYA "models/tiny-sd15-lora-kohya.safetensors"
#define DIFFUSERS "models/tiny-sd15-lora-diffusers.safetensors"
#define GOLDEN "tiny-sd15/txt2img-euler-lora"

static const sdw_lora_part g_unet = {.component = "unet", .dotted = {"unet"},
                                     .kohya = {"lora_unet"}};
static const sdw_lora_part g_te = {.component = "text_encoder", .dotted = {"text_encoder"},
                                   .kohya = {"lora_te", "lora_te1"}};

/* ---- a small safetensors writer (f32 tensors) for files the fixtures do not have ---- */

typedef struct st_out {
    char *name;
    int nd;
    int64_t shape[4];
    float *data; /* owned */
    size_t n;
} st_out;

static bool write_st(const char *path, const st_out *t, int n) {
    json_t *h = json_object();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *e = json_object(), *sh = json_array();
        for (int d = 0; d < t[i].nd; d++) json_array_append_new(sh, json_integer(t[i].shape[d]));
        json_object_set_new(e, "dtype", json_string("F32"));
        json_object_set_new(e, "shape", sh);
        json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)off,
                                                         (json_int_t)(off + 4 * t[i].n)));
        json_object_set_new(h, t[i].name, e);
        off += 4 * t[i].n;
    }
    char *js = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    size_t hn = strlen(js), pad = (8 - hn % 8) % 8;
    uint64_t len = hn + pad;
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(&len, 8, 1, f) == 1 && fwrite(js, 1, hn, f) == hn;
    for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    for (int i = 0; ok && i < n; i++) ok = fwrite(t[i].data, 4, t[i].n, f) == t[i].n;
    if (f) ok = fclose(f) == 0 && ok;
    free(js);
    return ok;
}

static void st_free(st_out *t, int n) {
    for (int i = 0; i < n; i++) {
        free(t[i].name);
        free(t[i].data);
    }
    free(t);
}

/* Every tensor of a safetensors file as st_out, names renamed by fn (NULL = drop it). */
typedef char *(*rename_fn)(const char *name, void *user);
static st_out *read_renamed(const char *path, rename_fn fn, void *user, int *n_out) {
    sdw_st_file *f = NULL;
    if (sdw_st_open(path, &f, NULL)) return NULL;
    st_out *t = calloc((size_t)sdw_st_count(f), sizeof *t);
    int n = 0;
    for (int i = 0; i < sdw_st_count(f); i++) {
        const sdw_st_tensor *s = sdw_st_at(f, i);
        char *name = fn(s->name, user);
        if (!name) continue;
        t[n] = (st_out){.name = name, .nd = s->n_dims, .n = s->n_elems};
        memcpy(t[n].shape, s->shape, sizeof(int64_t) * (size_t)s->n_dims);
        t[n].data = malloc(4 * (s->n_elems ? s->n_elems : 1));
        sdw_convert_to_f32(s->dtype, s->data, t[n].data, s->n_elems);
        n++;
    }
    sdw_st_close(f);
    *n_out = n;
    return t;
}

static char *underscored(const char *prefix, const char *name, const char *suffix) {
    char *s = malloc(strlen(prefix) + strlen(name) + strlen(suffix) + 2);
    sprintf(s, "%s_%s", prefix, name);
    for (char *c = s + strlen(prefix) + 1; *c; c++)
        if (*c == '.') *c = '_';
    strcat(s, suffix);
    return s;
}

/* The diffusers file in kohya's SDXL spelling: UNet layers by their SGM (LDM) names, the text
 * encoder as lora_te1_ (what kohya writes for SDXL's first encoder). */
static char *to_sgm(const char *name, void *user) {
    const char *suffix = strstr(name, ".lora_A.weight") ? ".lora_down.weight" : ".lora_up.weight";
    char layer[256], w[300], ldm[300];
    const char *end = strstr(name, ".lora_");
    if (!strncmp(name, "unet.", 5)) {
        snprintf(layer, sizeof layer, "%.*s", (int)(end - name - 5), name + 5);
        snprintf(w, sizeof w, "%s.weight", layer);
        if (!sdw_ldm_unet_name(w, ldm, sizeof ldm, user)) return NULL;
        ldm[strlen(ldm) - 7] = 0;
        return underscored("lora_unet", ldm, suffix);
    }
    snprintf(layer, sizeof layer, "%.*s", (int)(end - name - 13), name + 13);
    return underscored("lora_te1", layer, suffix);
}

/* ---- the merged weights (golden lora-merge) ---- */

static void check_merge(const char *lora_file) {
    sdw_golden *g = sdw_golden_open("tiny-sd15/lora-merge");
    ASSERT_TRUE(g);
    sdw_error err = {0};
    sdw_lora_file *f = NULL;
    sdw_st_file *unet = NULL, *te = NULL;
    sdw_status s = sdw_lora_file_load(sdw_test_path("%s", lora_file), &f, &err);
    if (!s) s = sdw_st_open(sdw_test_path("models/tiny-sd15/unet/diffusion_pytorch_model.safetensors"), &unet, &err);
    if (!s) s = sdw_st_open(sdw_test_path("models/tiny-sd15/text_encoder/model.safetensors"), &te, &err);
    json_t *tensors = json_object_get(sdw_golden_manifest(g), "tensors");
    int n = 0, merged = 0;
    double worst = 0;
    for (size_t i = 0; !s && i < json_array_size(tensors); i++) {
        const char *name = json_string_value(json_object_get(json_array_get(tensors, i), "name"));
        const bool is_unet = !strncmp(name, "merged.unet.", 12);
        const char *w_name = name + (is_unet ? 12 : 20); /* "<layer>.weight" */
        char layer[256];
        snprintf(layer, sizeof layer, "%.*s", (int)(strlen(w_name) - 7), w_name);
        const sdw_st_tensor *t = sdw_st_find(is_unet ? unet : te, w_name);
        const sdw_golden_tensor *ref = sdw_golden_get(g, name);
        if (!t || !ref || t->n_elems != ref->n) break;
        float *w = malloc(sizeof(float) * t->n_elems);
        sdw_convert_to_f32(t->dtype, t->data, w, t->n_elems);
        const int out = (int)t->shape[0];
        merged += sdw_lora_file_merge(f, is_unet ? &g_unet : &g_te, layer, 0.8f, w, out,
                                      (int64_t)(t->n_elems / (size_t)out));
        const double e = sdw_test_rel_err(w, ref->data, ref->n);
        if (e > worst) worst = e;
        free(w);
        n++;
    }
    sdw_st_close(unet);
    sdw_st_close(te);
    sdw_lora_file_destroy(f);
    sdw_golden_close(g);
    ASSERT_OK(s, &err);
    printf("    %s: %d of %d layers merged, worst relative error %.3g\n", lora_file, merged, n,
           worst);
    ASSERT_EQ_INT(n, 102);
    ASSERT_EQ_INT(merged, 102);
    ASSERT_TRUE(worst <= 1e-6);
}

static void test_merge_kohya(void) { check_merge(KOHYA); }
static void test_merge_diffusers(void) { check_merge(DIFFUSERS); }

/* ---- the UNet probe ---- */

/* probe.* through the UNet alone with the LoRA's UNet modules at 0.8 (the probe's
 * cross_attention_kwargs scale). */
static void check_probe(const char *lora_file) {
    sdw_golden *g = sdw_golden_open(GOLDEN);
    ASSERT_TRUE(g);
    sdw_error err = {0};
    sdw_st_file *f = NULL;
    sdw_weights *ws = NULL;
    sdw_unet *u = NULL;
    sdw_unet_config cfg;
    sdw_lora_file *lf = NULL;
    sdw_lora_pack *pack = NULL;
    sdw_lora_host *h = NULL;
    float *x = NULL, *want = NULL, *got = NULL;
    double e = -1;
    sdw_status s =
        sdw_unet_config_load(sdw_test_path("models/tiny-sd15/unet/config.json"), &cfg, &err);
    if (!s)
        s = sdw_st_open(sdw_test_path("models/tiny-sd15/unet/diffusion_pytorch_model.safetensors"),
                        &f, &err);
    if (!s) ws = sdw_weights_create(f, "", NULL, NULL);
    if (!s) s = sdw_unet_create(ws, &cfg, &u, &err);
    if (!s) s = sdw_lora_file_load(lora_file, &lf, &err);
    if (!s) {
        h = sdw_lora_host_create();
        sdw_lora_part part = g_unet;
        part.ws = ws;
        sdw_lora_host_add_part(h, &part);
        s = sdw_lora_host_pack(h, lf, "probe", &pack, &err);
    }
    if (!s) {
        const sdw_golden_tensor *xs = sdw_golden_get(g, "probe.sample"),
                                *ts = sdw_golden_get(g, "probe.timestep"),
                                *ctx = sdw_golden_get(g, "probe.encoder_hidden_states"),
                                *ref = sdw_golden_get(g, "probe.out");
        const int B = (int)xs->shape[0], H = (int)xs->shape[2], W = (int)xs->shape[3];
        x = sdw_golden_nhwc(xs);
        want = sdw_golden_nhwc(ref);
        got = malloc(sizeof(float) * ref->n);
        const float t[2] = {((float *)ts->data)[0], ((float *)ts->data)[0]};
        const sdw_lora_use use = {pack, 0.8f};
        const sdw_lora_run run = {&use, 1};
        sdw_lora_attach(&run);
        sdw_unet_forward(u, x, B, H, W, t, ctx->data, (int)ctx->shape[1], NULL, NULL, got);
        sdw_lora_attach(NULL);
        e = sdw_test_rel_err(got, want, ref->n);
    }
    free(x), free(want), free(got);
    sdw_lora_pack_destroy(pack);
    sdw_lora_host_destroy(h);
    sdw_lora_file_destroy(lf);
    sdw_unet_destroy(u);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
    sdw_golden_close(g);
    ASSERT_OK(s, &err);
    printf("    probe: relative error %.3g\n", e);
    ASSERT_TRUE(e >= 0 && e <= STAGE_TOL);
}

static void test_probe_kohya(void) { check_probe(sdw_test_path(KOHYA)); }
static void test_probe_diffusers(void) { check_probe(sdw_test_path(DIFFUSERS)); }

/* ---- the pipeline ---- */

/* Runs the golden case on model (folder or single file) with the request's loras / prompt
 * replaced; every stage within STAGE_TOL, the image within 2 levels. */
static void check_pipeline(const char *model, const char *lora_dir, const sdw_lora_ref *loras,
                           int n, const char *prompt) {
    sdw_golden *g = sdw_golden_open(GOLDEN);
    ASSERT_TRUE(g);
    sdw_load_options opts = sdw_load_options_default();
    sdw_load_options_set(&opts, "tokenizer", sdw_test_path("clip-tokenizer"), NULL);
    opts.lora_dir = lora_dir;
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    sdw_status s = sdw_model_load(model, &opts, &m, &err);
    sdw_stage_check c = {.g = g, .tol = STAGE_TOL};
    sdw_request req;
    sdw_image img = {0}, init = {0}, mask = {0};
    if (!s) {
        sdw_diffusion_set_tap(m, sdw_stage_tap, &c);
        s = sdw_golden_request(g, &req, &init, &mask, &err);
    }
    if (!s) {
        req.loras = loras;
        req.n_loras = n;
        if (prompt) req.prompt = prompt;
        s = sdw_model_generate(m, &req, NULL, NULL, &img, NULL, &err);
    }
    sdw_model_destroy(m);
    const int maxd = s ? 256 : sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", GOLDEN));
    sdw_image_free(&img);
    sdw_golden_close(g);
    ASSERT_OK(s, &err);
    printf("    %d stages compared, worst %.2g (%s), image max diff %d\n", c.n_compared, c.worst,
           c.worst_name, maxd);
    ASSERT_TRUE(c.n_compared >= 2 + 2 + 1 + 3 * 4 + 2);
    ASSERT_EQ_INT(c.n_failed, 0);
    ASSERT_TRUE(maxd <= 2);
}

static void test_pipeline_kohya(void) {
    const sdw_lora_ref l = {.path = sdw_test_path(KOHYA), .multiplier = 0.8f};
    check_pipeline(sdw_test_path("models/tiny-sd15"), NULL, &l, 1, NULL);
}

static void test_pipeline_diffusers(void) {
    const sdw_lora_ref l = {.path = sdw_test_path(DIFFUSERS), .multiplier = 0.8f};
    check_pipeline(sdw_test_path("models/tiny-sd15"), NULL, &l, 1, NULL);
}

/* 0.5 of one file and 0.3 of the other: the same update as 0.8 of either. */
static void test_pipeline_two_loras(void) {
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s", sdw_test_path(KOHYA));
    snprintf(b, sizeof b, "%s", sdw_test_path(DIFFUSERS));
    const sdw_lora_ref l[2] = {{.path = a, .multiplier = 0.5f}, {.path = b, .multiplier = 0.3f}};
    check_pipeline(sdw_test_path("models/tiny-sd15"), NULL, l, 2, NULL);
}

/* Copies src to dir/name. */
static bool copy_file(const char *src, const char *dir, const char *name) {
    size_t n;
    void *d = sdw_test_read_file(src, &n);
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = d ? fopen(p, "wb") : NULL;
    bool ok = f && fwrite(d, 1, n, f) == n;
    if (f) ok = fclose(f) == 0 && ok;
    free(d);
    return ok;
}

/* The A1111 tag, resolved in the LoRA folder (a subfolder, by stem), removed from the prompt
 * the text encoder sees: the golden's token ids. */
static void test_pipeline_prompt_tag(void) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/loras", sdw_test_tmpdir());
    mkdir(dir, 0755);
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/styles", dir);
    mkdir(sub, 0755);
    ASSERT_TRUE(copy_file(sdw_test_path(KOHYA), sub, "tinylora.safetensors"));
    check_pipeline(sdw_test_path("models/tiny-sd15"), dir, NULL, 0,
                   "a photo of <lora:tinylora:0.8>a cat");
}

/* The single-file model (LDM names) with the LoRA in kohya's SDXL spelling (SGM UNet names,
 * lora_te1_): the family's LDM alias. */
static void test_pipeline_sgm_names(void) {
    sdw_st_file *f = NULL;
    sdw_unet_config cfg;
    sdw_error err = {0};
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-sd15.safetensors"), &f, &err), &err);
    sdw_status s = sdw_unet_config_infer(f, "model.diffusion_model.", &cfg, &err);
    sdw_st_close(f);
    ASSERT_OK(s, &err);
    int n = 0;
    st_out *t = read_renamed(sdw_test_path(DIFFUSERS), to_sgm, &cfg, &n);
    ASSERT_TRUE(t && n == 204);
    char path[4096];
    snprintf(path, sizeof path, "%s/sgm.safetensors", sdw_test_tmpdir());
    bool ok = write_st(path, t, n);
    bool sgm = false;
    for (int i = 0; i < n; i++) sgm |= strstr(t[i].name, "lora_unet_input_blocks_") != NULL;
    st_free(t, n);
    ASSERT_TRUE(ok && sgm);
    const sdw_lora_ref l = {.path = path, .multiplier = 0.8f};
    check_pipeline(sdw_test_path("models/tiny-sd15.safetensors"), NULL, &l, 1, NULL);
}

/* bf16: the image within a mean of 2 levels of the reference (issue 5's bar for the fast path). */
static void test_pipeline_bf16(void) {
    if (!sdw_nn_cpu_has_bf16()) {
        sdw_test_skip("no native bf16 on this CPU");
        return;
    }
    sdw_golden *g = sdw_golden_open(GOLDEN);
    ASSERT_TRUE(g);
    sdw_load_options opts = sdw_load_options_default();
    opts.precision = SDW_PRECISION_BF16;
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    sdw_request req;
    sdw_image img = {0}, init = {0}, mask = {0};
    const sdw_lora_ref l = {.path = sdw_test_path(KOHYA), .multiplier = 0.8f};
    sdw_status s = sdw_model_load(sdw_test_path("models/tiny-sd15"), &opts, &m, &err);
    if (!s) s = sdw_golden_request(g, &req, &init, &mask, &err);
    if (!s) {
        req.loras = &l;
        req.n_loras = 1;
        s = sdw_model_generate(m, &req, NULL, NULL, &img, NULL, &err);
    }
    sdw_model_destroy(m);
    const sdw_golden_tensor *ref = s ? NULL : sdw_golden_get(g, "image"); /* [H, W, 3] in [0, 1] */
    double mae = 1e9;
    if (ref && ref->n == (size_t)img.width * img.height * img.channels) {
        mae = 0;
        for (size_t i = 0; i < ref->n; i++)
            mae += fabs(img.data[i] - floor(((const float *)ref->data)[i] * 255 + 0.5));
        mae /= (double)ref->n;
    }
    sdw_golden_close(g);
    sdw_image_free(&img);
    ASSERT_OK(s, &err);
    printf("    bf16: image mean absolute difference %.3f levels\n", mae);
    ASSERT_TRUE(mae <= 2);
}

/* ---- a request never affects the next ---- */

static sdw_status gen(sdw_image_model *m, const sdw_lora_ref *l, int n, const char *prompt,
                      sdw_image *img, sdw_error *err) {
    sdw_request r = sdw_request_default();
    r.prompt = prompt ? prompt : "a photo of a cat";
    r.steps = 2;
    r.seed = 7;
    r.sampler = "euler";
    r.loras = l;
    r.n_loras = n;
    return sdw_model_generate(m, &r, NULL, NULL, img, NULL, err);
}

static bool same(const sdw_image *a, const sdw_image *b) {
    return a->width == b->width && a->height == b->height && a->channels == b->channels &&
           !memcmp(a->data, b->data, (size_t)a->width * a->height * a->channels);
}

static void test_base_lora_base(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), NULL, &m, &err), &err);
    ASSERT_TRUE(sdw_model_capabilities(m)->lora);
    const sdw_lora_ref l = {.path = sdw_test_path(KOHYA), .multiplier = 1.0f};
    sdw_image a = {0}, b = {0}, c = {0}, d = {0};
    sdw_status s = gen(m, NULL, 0, NULL, &a, &err);
    double t0 = sdw_time_now(), t1 = 0, t2 = 0;
    if (!s) s = gen(m, &l, 1, NULL, &b, &err);
    t1 = sdw_time_now();
    if (!s) s = gen(m, NULL, 0, NULL, &c, &err);
    t2 = sdw_time_now();
    if (!s) s = gen(m, &l, 1, NULL, &d, &err); /* the packed file again, from the cache */
    const double t3 = sdw_time_now();
    sdw_model_destroy(m);
    const bool base_again = !s && same(&a, &c), lora_differs = !s && !same(&a, &b),
               lora_again = !s && same(&b, &d);
    sdw_image_free(&a), sdw_image_free(&b), sdw_image_free(&c), sdw_image_free(&d);
    ASSERT_OK(s, &err);
    printf("    base %.2f s; LoRA first %.2f s, cached %.2f s\n", t2 - t1, t1 - t0, t3 - t2);
    ASSERT_TRUE(base_again);
    ASSERT_TRUE(lora_differs);
    ASSERT_TRUE(lora_again);
}

/* A queued job keeps its own copies of the LoRA names: the caller's buffers may go at once,
 * and the job's image is the direct generate's. An unknown name is refused before queueing. */
static void test_engine_copies(void) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/engine", sdw_test_tmpdir());
    mkdir(dir, 0755);
    ASSERT_TRUE(copy_file(sdw_test_path(KOHYA), dir, "eng.safetensors"));
    sdw_load_options opts = sdw_load_options_default();
    opts.lora_dir = dir;
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), &opts, &m, &err), &err);
    sdw_engine *e = NULL;
    sdw_status s = sdw_engine_create(m, NULL, &e, &err);
    char *name = strdup("eng");
    sdw_lora_ref *l = malloc(sizeof *l);
    *l = (sdw_lora_ref){.name = name, .multiplier = 0.7f};
    sdw_request r = sdw_request_default();
    r.prompt = "a photo of a cat";
    r.steps = 2;
    r.seed = 5;
    r.sampler = "euler";
    r.loras = l;
    r.n_loras = 1;
    sdw_job *j = NULL;
    if (!s) s = sdw_engine_submit(e, &r, 1, &j, &err);
    strcpy(name, "xyz");
    free(l);
    const sdw_job_state st = j ? sdw_job_wait_done(j) : SDW_JOB_FAILED;
    const sdw_lora_ref direct_l = {.name = "eng", .multiplier = 0.7f};
    r.loras = &direct_l;
    sdw_image direct = {0};
    if (!s) s = sdw_model_generate(m, &r, NULL, NULL, &direct, NULL, &err);
    const sdw_image *img = j ? sdw_job_image(j, 0) : NULL;
    const bool equal = img && !s && same(img, &direct);
    sdw_error e2 = {0};
    sdw_job *bad = NULL;
    const sdw_lora_ref unknown = {.name = "nope", .multiplier = 1};
    r.loras = &unknown;
    const sdw_status refused = e ? sdw_engine_submit(e, &r, 1, &bad, &e2) : SDW_OK;
    sdw_image_free(&direct);
    sdw_job_release(j);
    sdw_engine_destroy(e);
    sdw_model_destroy(m);
    free(name);
    ASSERT_OK(s, &err);
    ASSERT_EQ_INT(st, SDW_JOB_SUCCEEDED);
    ASSERT_TRUE(equal);
    ASSERT_EQ_INT(refused, SDW_E_NOT_FOUND);
    ASSERT_STR_CONTAINS(e2.msg, "nope");
}

/* The CLI, as the hidden cases run it: `sdw generate --lora FILE:M` gives the golden image;
 * `--lora NAME:M` with --lora-dir and the prompt tag give the same pixels; a multiplier that
 * is not a number is a usage error, an unknown name bad input; `sdw info` lists the folder. */
static void test_cli(void) {
    const char *tmp = sdw_test_tmpdir();
    char dir[4096], out[8192];
    snprintf(dir, sizeof dir, "%s/cli", tmp);
    mkdir(dir, 0755);
    ASSERT_TRUE(copy_file(sdw_test_path(KOHYA), dir, "tiny.safetensors"));
    char model[4096], file[4096];
    snprintf(model, sizeof model, "%s", sdw_test_path("models/tiny-sd15"));
    snprintf(file, sizeof file, "%s", sdw_test_path(KOHYA));
    const char *common = "--steps 4 --sampler euler -s 42 --cfg-scale 7.5 -q";
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' -p 'a photo of a cat' %s --lora '%s:0.8' "
                              "-o '%s/file.png'",
                              model, common, file, dir);
    ASSERT_EQ_INT(rc, 0);
    char a[4200], b[4200], c[4200];
    snprintf(a, sizeof a, "%s/file.png", dir);
    const int d_golden =
        sdw_test_png_max_diff(a, sdw_test_path("golden/%s/image.png", GOLDEN));
    rc = sdw_test_run_sdw(out, sizeof out,
                          "generate -m '%s' -p 'a photo of a cat' %s --lora-dir '%s' "
                          "--lora tiny:0.8 -o '%s/name.png'",
                          model, common, dir, dir);
    ASSERT_EQ_INT(rc, 0);
    rc = sdw_test_run_sdw(out, sizeof out,
                          "generate -m '%s' -p 'a photo of a cat <lora:tiny:0.8>' %s "
                          "--lora-dir '%s' -o '%s/tag.png'",
                          model, common, dir, dir);
    ASSERT_EQ_INT(rc, 0);
    snprintf(b, sizeof b, "%s/name.png", dir);
    snprintf(c, sizeof c, "%s/tag.png", dir);
    printf("    --lora FILE:0.8 vs the golden image: %d levels\n", d_golden);
    ASSERT_TRUE(d_golden <= 2);
    ASSERT_EQ_INT(sdw_test_png_max_diff(a, b), 0);
    ASSERT_EQ_INT(sdw_test_png_max_diff(a, c), 0);
    rc = sdw_test_run_sdw(out, sizeof out,
                          "generate -m '%s' -p cat --lora '%s:much' -o '%s/x.png'", model, file,
                          dir);
    ASSERT_EQ_INT(rc, 2);
    ASSERT_STR_CONTAINS(out, "'much' is not a number");
    rc = sdw_test_run_sdw(out, sizeof out,
                          "generate -m '%s' -p cat --lora-dir '%s' --lora nosuch -o '%s/x.png'",
                          model, dir, dir);
    ASSERT_EQ_INT(rc, 3);
    ASSERT_STR_CONTAINS(out, "'nosuch' not found");
    rc = sdw_test_run_sdw(out, sizeof out,
                          "generate -m '%s' -p cat --lora nosuch -o '%s/x.png'", model, dir);
    ASSERT_EQ_INT(rc, 3);
    ASSERT_STR_CONTAINS(out, "no --lora-dir");
    rc = sdw_test_run_sdw(out, sizeof out, "info -m '%s' --lora-dir '%s' -q", model, dir);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_STR_CONTAINS(out, "lora ");
    ASSERT_STR_CONTAINS(out, "1 in ");
    ASSERT_STR_CONTAINS(out, ": tiny");
}

/* ---- bad input: clear errors, and the model unchanged afterwards ---- */

static char *rename_keep(const char *name, void *user) {
    (void)user;
    return strdup(name);
}

/* A copy of the kohya file with every down of one module made [4, wrong_in] (and its alpha). */
static bool write_wrong_shape(const char *path) {
    int n = 0;
    st_out *t = read_renamed(sdw_test_path(KOHYA), rename_keep, NULL, &n);
    if (!t) return false;
    for (int i = 0; i < n; i++)
        if (strstr(t[i].name, "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down")) {
            t[i].shape[1] = 48; /* the layer takes 32 */
            free(t[i].data);
            t[i].n = (size_t)4 * 48;
            t[i].data = calloc(t[i].n, 4);
        }
    bool ok = write_st(path, t, n);
    st_free(t, n);
    return ok;
}

static void test_bad_input(void) {
    const char *tmp = sdw_test_tmpdir();
    char dir[4096], p_shape[4200], p_trunc[4200], p_other[4200], p_loha[4200], p_noup[4200];
    snprintf(dir, sizeof dir, "%s/bad", tmp);
    mkdir(dir, 0755);
    snprintf(p_shape, sizeof p_shape, "%s/shape.safetensors", dir);
    snprintf(p_trunc, sizeof p_trunc, "%s/trunc.safetensors", dir);
    snprintf(p_other, sizeof p_other, "%s/other.safetensors", dir);
    snprintf(p_loha, sizeof p_loha, "%s/loha.safetensors", dir);
    snprintf(p_noup, sizeof p_noup, "%s/noup.safetensors", dir);
    ASSERT_TRUE(write_wrong_shape(p_shape));
    size_t n;
    char *bytes = sdw_test_read_file(sdw_test_path(KOHYA), &n);
    FILE *f = fopen(p_trunc, "wb");
    ASSERT_TRUE(bytes && f && fwrite(bytes, 1, n / 2, f) == n / 2);
    fclose(f);
    free(bytes);
    float one[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    st_out other[2] = {{.name = "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
                        .nd = 2, .shape = {2, 4}, .data = one, .n = 8},
                       {.name = "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight",
                        .nd = 2, .shape = {4, 2}, .data = one, .n = 8}};
    ASSERT_TRUE(write_st(p_other, other, 2));
    st_out loha[1] = {{.name = "lora_unet_conv_in.hada_w1_a", .nd = 2, .shape = {2, 4},
                       .data = one, .n = 8}};
    ASSERT_TRUE(write_st(p_loha, loha, 1));
    ASSERT_TRUE(write_st(p_noup, other, 1));

    sdw_image_model *m = NULL;
    sdw_error err = {0};
    sdw_load_options opts = sdw_load_options_default();
    opts.lora_dir = dir;
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), &opts, &m, &err), &err);
    sdw_image base = {0}, again = {0};
    sdw_status s = gen(m, NULL, 0, NULL, &base, &err);
    struct {
        const char *what;
        sdw_lora_ref ref;
        const char *prompt;
        sdw_status want;
        const char *says;
    } cases[] = {
        {"shape", {.name = "shape", .multiplier = 1}, NULL, SDW_E_SHAPE, "another model"},
        {"corrupt", {.name = "trunc", .multiplier = 1}, NULL, SDW_E_FORMAT, "trunc"},
        {"other model", {.name = "other", .multiplier = 1}, NULL, SDW_E_INVALID_ARG,
         "another kind of model"},
        {"loha", {.name = "loha", .multiplier = 1}, NULL, SDW_E_FORMAT, "LoHa"},
        {"no up", {.name = "noup", .multiplier = 1}, NULL, SDW_E_FORMAT, "no up"},
        {"unknown name", {.name = "nosuch", .multiplier = 1}, NULL, SDW_E_NOT_FOUND, "nosuch"},
        {"unknown tag", {0}, "a cat <lora:missing:0.5>", SDW_E_NOT_FOUND, "missing"},
        {"tag multiplier", {0}, "a cat <lora:shape:abc>", SDW_E_INVALID_ARG, "'abc'"},
        {"nan multiplier", {.name = "shape", .multiplier = NAN}, NULL, SDW_E_INVALID_ARG,
         "not a number"},
        {"name and path", {.name = "shape", .path = p_shape, .multiplier = 1}, NULL,
         SDW_E_INVALID_ARG, "one of them"},
        {"outside", {.name = "../bad/shape", .multiplier = 1}, NULL, SDW_E_INVALID_ARG, ".."},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(cases) && !s; i++) {
        sdw_image img = {0};
        const bool listed = cases[i].ref.name || cases[i].ref.path;
        sdw_error e = {0};
        const sdw_status got = gen(m, listed ? &cases[i].ref : NULL, listed, cases[i].prompt,
                                   &img, &e);
        printf("    %-15s -> %s\n", cases[i].what, e.msg);
        sdw_image_free(&img);
        if (got != cases[i].want || !strstr(e.msg, cases[i].says)) {
            sdw_model_destroy(m);
            sdw_image_free(&base);
            ASSERT_EQ_INT(got, cases[i].want);
            ASSERT_STR_CONTAINS(e.msg, cases[i].says);
        }
    }
    if (!s) s = gen(m, NULL, 0, NULL, &again, &err);
    sdw_model_destroy(m);
    const bool unchanged = !s && same(&base, &again);
    sdw_image_free(&base);
    sdw_image_free(&again);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(unchanged);
}

/* A model whose capabilities say it takes no LoRAs (a family that declares no LoRA parts; every
 * family today declares some) refuses LoRAs, and a prompt tag, by name before anything runs. */
static void test_unsupported_model(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd3"), NULL, &m, &err), &err);
    sdw_capabilities caps = *sdw_model_capabilities(m);
    caps.lora = false;
    sdw_request r = sdw_request_default();
    r.prompt = "a cat <lora:x:1>";
    sdw_request out;
    const sdw_status s = sdw_request_resolve(&r, &caps, &out, &err);
    sdw_model_destroy(m);
    ASSERT_EQ_INT(s, SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(err.msg, "does not take LoRAs");
}

/* ---- the LoRA folder ---- */

static void touch(const char *dir, const char *rel) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    FILE *f = fopen(p, "wb");
    if (f) fclose(f);
}

static void test_folder(void) {
    const char *tmp = sdw_test_tmpdir();
    char dir[4096], p[4300], q[4300];
    snprintf(dir, sizeof dir, "%s/folder", tmp);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/sub", dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/sub2", dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/outside", tmp), mkdir(p, 0755);
    touch(dir, "a.safetensors");
    touch(dir, "sub/b.safetensors");
    touch(dir, "sub/c.safetensors");
    touch(dir, "sub2/b.safetensors");
    touch(dir, "notes.txt");
    touch(dir, ".hidden.safetensors");
    touch(tmp, "outside/secret.safetensors");
    snprintf(p, sizeof p, "%s/outside/secret.safetensors", tmp);
    snprintf(q, sizeof q, "%s/out.safetensors", dir);
    ASSERT_TRUE(symlink(p, q) == 0);
    snprintf(p, sizeof p, "%s/outside", tmp);
    snprintf(q, sizeof q, "%s/outdir", dir);
    ASSERT_TRUE(symlink(p, q) == 0);
    snprintf(q, sizeof q, "%s/in.safetensors", dir);
    ASSERT_TRUE(symlink("sub/c.safetensors", q) == 0);

    sdw_lora_entry *list = NULL;
    int n = 0;
    sdw_error err = {0};
    ASSERT_OK(sdw_lora_list(dir, &list, &n, &err), &err);
    char seen[512] = "";
    for (int i = 0; i < n; i++)
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s=%s ", list[i].name,
                 list[i].path);
    sdw_lora_list_free(list, n);
    printf("    listed: %s\n", seen);
    ASSERT_TRUE(!strcmp(seen, "a=a.safetensors in=in.safetensors b=sub/b.safetensors "
                              "c=sub/c.safetensors b=sub2/b.safetensors "));

    struct {
        const char *name;
        sdw_status want;
        const char *says; /* the message, or the resolved path's end */
    } cases[] = {
        {"a", SDW_OK, "/folder/a.safetensors"},
        {"a.safetensors", SDW_OK, "/folder/a.safetensors"},
        {"c", SDW_OK, "/folder/sub/c.safetensors"},   /* a stem in a subfolder */
        {"sub/b", SDW_OK, "/folder/sub/b.safetensors"},
        {"in", SDW_OK, "/folder/sub/c.safetensors"},  /* a link inside the folder */
        {"b", SDW_E_INVALID_ARG, "ambiguous"},
        {"nosuch", SDW_E_NOT_FOUND, "not found"},
        {"../outside/secret", SDW_E_INVALID_ARG, "'..'"},
        {"sub/../a", SDW_E_INVALID_ARG, "'..'"},
        {"/etc/passwd", SDW_E_INVALID_ARG, "absolute"},
        {"out", SDW_E_INVALID_ARG, "outside the LoRA folder"}, /* a link out of it */
        {"outdir/secret", SDW_E_INVALID_ARG, "outside the LoRA folder"},
        {"notes.txt", SDW_E_NOT_FOUND, "not found"},
        {"", SDW_E_INVALID_ARG, "empty"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(cases); i++) {
        char *path = NULL;
        sdw_error e = {0};
        const sdw_status s = sdw_lora_resolve(dir, cases[i].name, &path, &e);
        const char *said = s ? e.msg : path;
        printf("    '%s' -> %s\n", cases[i].name, said);
        const bool ok = s == cases[i].want && strstr(said, cases[i].says) &&
                        (s || strlen(said) >= strlen(cases[i].says));
        free(path);
        ASSERT_TRUE(ok);
    }
    ASSERT_STATUS(sdw_lora_list("/nonexistent-lora-dir", &list, &n, &err), SDW_E_NOT_FOUND);
}

static void test_tags(void) {
    sdw_lora_tag *t = NULL;
    int n = 0;
    char *text = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_lora_prompt_tags("a <lora:one> cat, <lyco: sub/two :-0.5>dog <hypernet:x:1>",
                                   &t, &n, &text, &err),
              &err);
    const bool ok = n == 2 && !strcmp(t[0].name, "one") && t[0].multiplier == 1.0f &&
                    !strcmp(t[1].name, "sub/two") && t[1].multiplier == -0.5f &&
                    !strcmp(text, "a  cat, dog <hypernet:x:1>");
    sdw_lora_tags_free(t, n);
    free(text);
    ASSERT_TRUE(ok);
    ASSERT_OK(sdw_lora_prompt_tags("no tags <here>", &t, &n, NULL, &err), &err);
    ASSERT_TRUE(n == 0 && t == NULL);
    ASSERT_OK(sdw_lora_prompt_tags(NULL, &t, &n, NULL, &err), &err);
    ASSERT_TRUE(n == 0);
    static const char *const bad[] = {"<lora:x:abc>", "<lora::1>", "<lora:x:1:2>",
                                      "<lora:x:0.5", "<lora:x:nan>", "<lora:x:1e9>",
                                      "<lora:x:0x10>", "<lora:x:>"};
    for (size_t i = 0; i < SDW_ARRAY_LEN(bad); i++) {
        sdw_error e = {0};
        ASSERT_STATUS(sdw_lora_prompt_tags(bad[i], &t, &n, NULL, &e), SDW_E_INVALID_ARG);
        printf("    %-14s -> %s\n", bad[i], e.msg);
    }
    float m = 0;
    ASSERT_OK(sdw_lora_multiplier_parse("1.5e-1", 6, &m, &err), &err);
    ASSERT_TRUE(m == 0.15f);
}

/* lora_mid (kohya LoCon's CP decomposition) is composed into a k x k down: the module equals
 * A1111's rebuild up · (mid ⊗ down). */
static void test_lora_mid(void) {
    float down[2 * 3], mid[2 * 2 * 9], up[4 * 2], alpha = 1.0f;
    for (int i = 0; i < 6; i++) down[i] = (float)(i + 1) / 7;
    for (int i = 0; i < 36; i++) mid[i] = (float)((i * 5) % 11 - 5) / 9;
    for (int i = 0; i < 8; i++) up[i] = (float)(i - 3) / 5;
    st_out t[4] = {
        {.name = "lora_unet_x.lora_down.weight", .nd = 4, .shape = {2, 3, 1, 1}, .data = down, .n = 6},
        {.name = "lora_unet_x.lora_mid.weight", .nd = 4, .shape = {2, 2, 3, 3}, .data = mid, .n = 36},
        {.name = "lora_unet_x.lora_up.weight", .nd = 4, .shape = {4, 2, 1, 1}, .data = up, .n = 8},
        {.name = "lora_unet_x.alpha", .nd = 0, .data = &alpha, .n = 1},
    };
    char path[4096];
    snprintf(path, sizeof path, "%s/mid.safetensors", sdw_test_tmpdir());
    ASSERT_TRUE(write_st(path, t, 4));
    sdw_lora_file *f = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_lora_file_load(path, &f, &err), &err);
    const sdw_lora_module *m = sdw_lora_file_find(f, &g_unet, "x");
    bool ok = m && m->rank == 2 && m->in == 3 && m->k == 3 && m->out == 4 && m->scale == 0.5f;
    for (int o = 0; ok && o < 2; o++)
        for (int i = 0; i < 3; i++)
            for (int p = 0; p < 9; p++) {
                double s = 0;
                for (int j = 0; j < 2; j++) s += (double)mid[(o * 2 + j) * 9 + p] * down[j * 3 + i];
                ok &= fabs(m->down[(o * 3 + i) * 9 + p] - s) < 1e-6;
            }
    sdw_lora_file_destroy(f);
    ASSERT_TRUE(ok);
}

int main(void) {
    RUN(test_merge_kohya);
    RUN(test_merge_diffusers);
    RUN(test_probe_kohya);
    RUN(test_probe_diffusers);
    RUN(test_pipeline_kohya);
    RUN(test_pipeline_diffusers);
    RUN(test_pipeline_two_loras);
    RUN(test_pipeline_prompt_tag);
    RUN(test_pipeline_sgm_names);
    RUN(test_pipeline_bf16);
    RUN(test_base_lora_base);
    RUN(test_engine_copies);
    RUN(test_cli);
    RUN(test_bad_input);
    RUN(test_unsupported_model);
    RUN(test_folder);
    RUN(test_tags);
    RUN(test_lora_mid);
    return sdw_test_finish();
}
