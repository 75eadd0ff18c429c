/* FluxTransformer2DModel against diffusers 0.30.3 goldens: the probe call and every sampler
 * step of tiny-flux (guidance embedding, "dev") and tiny-flux-schnell, from the diffusers
 * folders and from the Black Forest Labs single files (which hold the same weights); config
 * loading and inference; the BFL name map and its detection (bare and ComfyUI-prefixed); the
 * bf16 path; and broken files (a missing block, a missing tensor, wrong widths).
 * SDW_FLUX_BENCH=1 also times one double and one single block at FLUX.1's real width. */
#include "io/weights.h"
#include "models/flux/flux_bfl_names.h"
#include "models/flux/flux_transformer.h"
#include "nn/nn.h"
#include "sdw_test.h"

#include <stdlib.h>
#include <time.h>

/* Forward-pass tolerance of the task: max|a-b| / max|ref|. */
#define FLUX_TOL 1e-4
/* bf16 products (weights and activations rounded to bf16, f32 accumulation) against the f32
 * reference: measured 2.8e-3 .. 4.6e-3 over these calls; the bound leaves ~2x margin. */
#define FLUX_BF16_TOL 1e-2
/* The tiny models: 2 heads of 16, RoPE axes (4, 6, 6) (their config.json). */
#define TINY_HEAD_DIM 16
static const int k_tiny_axes[3] = {4, 6, 6};

typedef struct loaded {
    sdw_st_file *f;
    sdw_weights *ws;
    sdw_flux_transformer *t;
    sdw_flux_config cfg;
} loaded;

static void unload(loaded *m) {
    sdw_flux_transformer_destroy(m->t);
    sdw_weights_destroy(m->ws);
    sdw_st_close(m->f);
    memset(m, 0, sizeof *m);
}

/* models/<model>/transformer: config.json + diffusion_pytorch_model.safetensors. */
static sdw_status load_folder(const char *model, sdw_precision p, loaded *m, sdw_error *err) {
    memset(m, 0, sizeof *m);
    sdw_status st;
    if ((st = sdw_flux_config_load(sdw_test_path("models/%s/transformer/config.json", model),
                                   &m->cfg, err)) ||
        (st = sdw_st_open(
             sdw_test_path("models/%s/transformer/diffusion_pytorch_model.safetensors", model),
             &m->f, err)))
        return st;
    m->ws = sdw_weights_create(m->f, "", NULL, NULL);
    sdw_weights_set_precision(m->ws, p);
    return sdw_flux_transformer_create(m->ws, &m->cfg, &m->t, err);
}

/* A BFL single file at path: detected, its config inferred (tiny head size and axes). */
static sdw_status load_bfl(const char *path, loaded *m, sdw_error *err) {
    memset(m, 0, sizeof *m);
    sdw_status st = sdw_st_open(path, &m->f, err);
    if (st) return st;
    const char *prefix = NULL;
    if (!sdw_flux_bfl_detect(m->f, &prefix))
        return sdw_error_set(err, SDW_E_FORMAT, "%s: not a BFL FLUX file", path);
    m->ws = sdw_weights_create_viewed(m->f, prefix, sdw_flux_bfl_name, NULL);
    if ((st = sdw_flux_config_infer_heads(m->ws, TINY_HEAD_DIM, k_tiny_axes, &m->cfg, err)))
        return st;
    return sdw_flux_transformer_create(m->ws, &m->cfg, &m->t, err);
}

/* The golden tensor `<call>.<what>`, falling back to step00's (the pipeline records the
 * conditioning once; later steps reuse it). */
static const sdw_golden_tensor *cond(sdw_golden *g, const char *call, const char *what) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", call, what);
    const sdw_golden_tensor *t = sdw_golden_get(g, name);
    if (!t) {
        snprintf(name, sizeof name, "step00.transformer.%s", what);
        t = sdw_golden_get(g, name);
    }
    return t;
}

/* The packed grid of a recorded call, from its img_ids (which must be exactly what
 * sdw_flux_img_ids generates, and its txt_ids zeros). False when they are not. */
static bool grid_of(sdw_golden *g, const char *call, int *gh, int *gw) {
    const sdw_golden_tensor *ii = cond(g, call, "img_ids"), *ti = cond(g, call, "txt_ids");
    if (!ii || !ti || ii->n_dims != 3 || ii->shape[2] != 3) return false;
    const float *ids = ii->data;
    const int64_t n = ii->shape[1];
    int rows = 0, cols = 0;
    for (int64_t i = 0; i < n; i++) {
        rows = SDW_MAX(rows, (int)ids[i * 3 + 1] + 1);
        cols = SDW_MAX(cols, (int)ids[i * 3 + 2] + 1);
    }
    if ((int64_t)rows * cols != n) return false;
    float *mine = malloc(sizeof(float) * (size_t)n * 3);
    sdw_flux_img_ids(rows, cols, mine);
    bool same = memcmp(mine, ids, sizeof(float) * (size_t)n * 3) == 0;
    free(mine);
    for (size_t i = 0; i < ti->n; i++)
        same = same && ((const float *)ti->data)[i] == 0.0f;
    *gh = rows;
    *gw = cols;
    return same;
}

/* Runs recorded call `call` ("probe" or "stepNN.transformer"); returns the relative error
 * against its .out (or -1 when its inputs are missing or inconsistent). out_copy (optional,
 * [n] floats, malloc'd) receives the output. */
static double run_call(const sdw_flux_transformer *t, sdw_golden *g, const char *call,
                       float **out_copy) {
    const sdw_flux_config *c = sdw_flux_transformer_config(t);
    const sdw_golden_tensor *x = cond(g, call, "hidden_states"), *ts = cond(g, call, "timestep");
    const sdw_golden_tensor *ctx = cond(g, call, "encoder_hidden_states");
    const sdw_golden_tensor *pooled = cond(g, call, "pooled_projections");
    const sdw_golden_tensor *gd = c->guidance_embeds ? cond(g, call, "guidance") : NULL;
    const sdw_golden_tensor *ref = cond(g, call, "out");
    int gh, gw;
    if (!x || !ts || !ctx || !pooled || !ref || (c->guidance_embeds && !gd)) return -1;
    if (!grid_of(g, call, &gh, &gw)) return -1;
    const int B = (int)x->shape[0], L_txt = (int)ctx->shape[1];
    if (x->shape[1] != (int64_t)gh * gw || x->shape[2] != c->in_channels ||
        ctx->shape[2] != c->joint_dim || pooled->shape[1] != c->pooled_dim)
        return -1;
    float *out = malloc(sizeof(float) * ref->n);
    sdw_flux_forward(t, x->data, B, gh, gw, ts->data, gd ? gd->data : NULL, pooled->data, ctx->data,
                     L_txt, out);
    double e = sdw_test_rel_err(out, ref->data, ref->n);
    if (out_copy)
        *out_copy = out;
    else
        free(out);
    return e;
}

/* Every recorded transformer call of a golden case (probe + steps) within tol. */
static void check_case(const loaded *m, const char *golden_case, double tol) {
    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g);
    char call[64];
    int n = 0;
    double worst = 0;
    for (int s = -1; s < 100; s++) {
        if (s < 0)
            snprintf(call, sizeof call, "probe");
        else
            snprintf(call, sizeof call, "step%02d.transformer", s);
        char out_name[96];
        snprintf(out_name, sizeof out_name, "%s.out", call);
        if (!sdw_golden_get(g, out_name)) {
            if (s < 0) continue;
            break;
        }
        double e = run_call(m->t, g, call, NULL);
        if (e < 0) {
            sdw_test_fail(__FILE__, __LINE__, "%s %s: inputs missing or ids differ", golden_case,
                          call);
            sdw_golden_close(g);
            return;
        }
        printf("    %s %s: rel err %.3g\n", golden_case, call, e);
        worst = SDW_MAX(worst, e);
        n++;
    }
    sdw_golden_close(g);
    ASSERT_TRUE(n >= 5); /* probe + 4 steps */
    if (!(worst <= tol))
        sdw_test_fail(__FILE__, __LINE__, "%s: worst relative error %.3g > %.3g", golden_case,
                      worst, tol);
}

static void test_folder_dev(void) {
    loaded m;
    sdw_error err = {0};
    ASSERT_OK(load_folder("tiny-flux", SDW_PRECISION_F32, &m, &err), &err);
    ASSERT_TRUE(m.cfg.guidance_embeds && m.cfg.n_layers == 1 && m.cfg.n_single_layers == 2);
    check_case(&m, "tiny-flux/txt2img-flowmatch", FLUX_TOL);
    unload(&m);
}

static void test_folder_schnell(void) {
    loaded m;
    sdw_error err = {0};
    ASSERT_OK(load_folder("tiny-flux-schnell", SDW_PRECISION_F32, &m, &err), &err);
    ASSERT_TRUE(!m.cfg.guidance_embeds);
    check_case(&m, "tiny-flux-schnell/txt2img-4step", FLUX_TOL);
    unload(&m);
}

/* A batch of two different calls (the probe and step 1: other latents, timestep, same text)
 * gives each call's own output: the per-batch rows, modulations and positions are kept apart. */
static void test_batch(void) {
    loaded m;
    sdw_error err = {0};
    ASSERT_OK(load_folder("tiny-flux", SDW_PRECISION_F32, &m, &err), &err);
    sdw_golden *g = sdw_golden_open("tiny-flux/txt2img-flowmatch");
    ASSERT_TRUE(g);
    const char *calls[2] = {"probe", "step01.transformer"};
    const sdw_golden_tensor *x[2], *ts[2], *gd[2], *ctx[2], *pooled[2];
    for (int i = 0; i < 2; i++) {
        x[i] = cond(g, calls[i], "hidden_states");
        ts[i] = cond(g, calls[i], "timestep");
        gd[i] = cond(g, calls[i], "guidance");
        ctx[i] = cond(g, calls[i], "encoder_hidden_states");
        pooled[i] = cond(g, calls[i], "pooled_projections");
        ASSERT_TRUE(x[i] && ts[i] && gd[i] && ctx[i] && pooled[i]);
    }
    int gh, gw;
    ASSERT_TRUE(grid_of(g, "probe", &gh, &gw));
    const size_t nx = x[0]->n, nc = ctx[0]->n, np = pooled[0]->n;
    float *xb = malloc(sizeof(float) * 2 * nx), *cb = malloc(sizeof(float) * 2 * nc);
    float *pb = malloc(sizeof(float) * 2 * np), *ob = malloc(sizeof(float) * 2 * nx);
    float *o1 = malloc(sizeof(float) * nx);
    float tb[2], gb[2];
    for (int i = 0; i < 2; i++) {
        memcpy(xb + i * nx, x[i]->data, sizeof(float) * nx);
        memcpy(cb + i * nc, ctx[i]->data, sizeof(float) * nc);
        memcpy(pb + i * np, pooled[i]->data, sizeof(float) * np);
        tb[i] = *(const float *)ts[i]->data;
        gb[i] = *(const float *)gd[i]->data;
    }
    const int L_txt = (int)ctx[0]->shape[1];
    sdw_flux_forward(m.t, xb, 2, gh, gw, tb, gb, pb, cb, L_txt, ob);
    double worst = 0;
    for (int i = 0; i < 2; i++) {
        sdw_flux_forward(m.t, xb + i * nx, 1, gh, gw, tb + i, gb + i, pb + i * np, cb + i * nc,
                         L_txt, o1);
        worst = SDW_MAX(worst, sdw_test_rel_err(ob + i * nx, o1, nx));
    }
    printf("    batch of 2 vs one by one: rel diff %.3g\n", worst);
    free(o1);
    free(ob);
    free(pb);
    free(cb);
    free(xb);
    sdw_golden_close(g);
    unload(&m);
    ASSERT_TRUE(worst <= 1e-6);
}

static bool config_equal(const sdw_flux_config *a, const sdw_flux_config *b) {
    return a->in_channels == b->in_channels && a->n_layers == b->n_layers &&
           a->n_single_layers == b->n_single_layers && a->n_heads == b->n_heads &&
           a->head_dim == b->head_dim && a->joint_dim == b->joint_dim &&
           a->pooled_dim == b->pooled_dim && a->patch_size == b->patch_size &&
           !memcmp(a->axes_dim, b->axes_dim, sizeof a->axes_dim) && a->theta == b->theta &&
           a->guidance_embeds == b->guidance_embeds;
}

/* The BFL file: config inferred = the folder's config.json; every golden call within the
 * tolerance; and the same outputs as the folder (same weights, same products). */
static void check_bfl(const char *file, const char *model, const char *golden_case) {
    loaded b, f;
    sdw_error err = {0};
    ASSERT_OK(load_bfl(sdw_test_path("models/%s", file), &b, &err), &err);
    ASSERT_OK(load_folder(model, SDW_PRECISION_F32, &f, &err), &err);
    ASSERT_TRUE(config_equal(&b.cfg, &f.cfg));
    ASSERT_EQ_INT(sdw_flux_transformer_n_params(b.t), sdw_flux_transformer_n_params(f.t));
    char left[256];
    ASSERT_EQ_INT(sdw_weights_unused(b.ws, left, sizeof left), 0);
    check_case(&b, golden_case, FLUX_TOL);

    sdw_golden *g = sdw_golden_open(golden_case);
    ASSERT_TRUE(g);
    float *ob = NULL, *of = NULL;
    double eb = run_call(b.t, g, "probe", &ob), ef = run_call(f.t, g, "probe", &of);
    const sdw_golden_tensor *ref = sdw_golden_get(g, "probe.out");
    double d = ob && of ? sdw_test_rel_err(ob, of, ref->n) : 1.0;
    printf("    %s vs folder: rel diff %.3g (golden: %.3g / %.3g)\n", file, d, eb, ef);
    free(ob);
    free(of);
    sdw_golden_close(g);
    unload(&b);
    unload(&f);
    ASSERT_TRUE(d <= 1e-6);
}

static void test_bfl_dev(void) {
    check_bfl("flux-tiny-dev.safetensors", "tiny-flux", "tiny-flux/txt2img-flowmatch");
}

static void test_bfl_schnell(void) {
    check_bfl("flux-tiny-schnell.safetensors", "tiny-flux-schnell",
              "tiny-flux-schnell/txt2img-4step");
}

/* The released models' head rule (128) cannot split the tiny width 32: a clear error. A
 * diffusers folder file is not a BFL file. */
static void test_infer_rules(void) {
    sdw_st_file *f = NULL, *d = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_st_open(sdw_test_path("models/flux-tiny-dev.safetensors"), &f, &err), &err);
    sdw_weights *ws = sdw_weights_create_viewed(f, "", sdw_flux_bfl_name, NULL);
    sdw_flux_config cfg = sdw_flux_config_default();
    ASSERT_STATUS(sdw_flux_config_infer(ws, &cfg, &err), SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(err.msg, "head size 128");
    ASSERT_EQ_INT(cfg.n_layers, 19); /* untouched */
    sdw_weights_destroy(ws);
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-flux/transformer/"
                                        "diffusion_pytorch_model.safetensors"),
                          &d, &err),
              &err);
    const char *prefix = "x";
    ASSERT_TRUE(sdw_flux_bfl_detect(f, &prefix));
    ASSERT_TRUE(!strcmp(prefix, ""));
    ASSERT_TRUE(!sdw_flux_bfl_detect(d, NULL));
    /* the folder's names through the plain weights: infer works on any layout */
    ws = sdw_weights_create(d, "", NULL, NULL);
    ASSERT_OK(sdw_flux_config_infer_heads(ws, TINY_HEAD_DIM, k_tiny_axes, &cfg, &err), &err);
    ASSERT_TRUE(cfg.guidance_embeds && cfg.n_layers == 1 && cfg.n_single_layers == 2);
    sdw_weights_destroy(ws);
    sdw_st_close(d);
    sdw_st_close(f);
}

/* ---- edited copies of a BFL file (bad input, prefixes) ---- */

typedef struct edit {
    const char *prefix;    /* prepended to every name */
    const char *drop;      /* a tensor left out */
    const char *from, *to; /* names starting with `from` renamed to start with `to` */
    const char *reshape;   /* this tensor written with reshape_rows rows (values 0.01) */
    int64_t reshape_rows;
} edit;

/* Writes an edited copy of models/<src> to <tmpdir>/<dst>; returns its path (static buffer). */
static const char *write_edited(const char *src, const char *dst, const edit *e, sdw_error *err) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", sdw_test_tmpdir(), dst);
    sdw_st_file *f = NULL;
    sdw_st_writer *w = NULL;
    if (sdw_st_open(sdw_test_path("models/%s", src), &f, err) ||
        sdw_st_writer_create(path, &w, err)) {
        sdw_st_close(f);
        return NULL;
    }
    const int n = sdw_st_count(f);
    char **names = calloc((size_t)n, sizeof *names);
    int64_t *rows = calloc((size_t)n, sizeof *rows);
    for (int i = 0; i < n; i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        if (e->drop && !strcmp(t->name, e->drop)) continue;
        char name[512];
        if (e->from && !strncmp(t->name, e->from, strlen(e->from)))
            snprintf(name, sizeof name, "%s%s%s", e->prefix ? e->prefix : "", e->to,
                     t->name + strlen(e->from));
        else
            snprintf(name, sizeof name, "%s%s", e->prefix ? e->prefix : "", t->name);
        int64_t shape[SDW_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        rows[i] = e->reshape && !strcmp(t->name, e->reshape) ? e->reshape_rows : shape[0];
        shape[0] = rows[i];
        names[i] = strdup(name);
        sdw_st_writer_add(w, names[i], SDW_DTYPE_F32, t->n_dims, shape);
    }
    sdw_status st = sdw_st_writer_begin(w, err);
    for (int i = 0; i < n && st == SDW_OK; i++) {
        if (!names[i]) continue;
        const sdw_st_tensor *t = sdw_st_at(f, i);
        const size_t per_row = t->n_dims ? t->n_elems / (size_t)t->shape[0] : 1;
        const size_t cnt = t->n_dims ? per_row * (size_t)rows[i] : 1;
        float *data = malloc(sizeof(float) * SDW_MAX(cnt, t->n_elems));
        if (t->n_dims && rows[i] != t->shape[0])
            for (size_t k = 0; k < cnt; k++)
                data[k] = 0.01f;
        else
            sdw_convert_to_f32(t->dtype, t->data, data, t->n_elems);
        st = sdw_st_writer_write(w, data, err);
        free(data);
    }
    sdw_status fin = sdw_st_writer_finish(w, st ? NULL : err);
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(rows);
    sdw_st_close(f);
    return st || fin ? NULL : path;
}

/* A ComfyUI-style full checkpoint ("model.diffusion_model." + BFL names): detected with its
 * prefix, same outputs as the bare file. */
static void test_bfl_prefixed(void) {
    sdw_error err = {0};
    const edit e = {.prefix = "model.diffusion_model."};
    const char *path = write_edited("flux-tiny-dev.safetensors", "comfy.safetensors", &e, &err);
    ASSERT_TRUE(path);
    loaded m;
    ASSERT_OK(load_bfl(path, &m, &err), &err);
    const char *prefix = NULL;
    ASSERT_TRUE(sdw_flux_bfl_detect(m.f, &prefix) && !strcmp(prefix, "model.diffusion_model."));
    sdw_golden *g = sdw_golden_open("tiny-flux/txt2img-flowmatch");
    ASSERT_TRUE(g);
    double e0 = run_call(m.t, g, "probe", NULL);
    sdw_golden_close(g);
    unload(&m);
    printf("    prefixed probe: rel err %.3g\n", e0);
    ASSERT_TRUE(e0 >= 0 && e0 <= FLUX_TOL);
}

/* A block index gap (single block 1 absent, 2 present; double block 0 absent, 1 present):
 * inference names the missing block. */
static void test_missing_block(void) {
    sdw_error err = {0};
    const struct {
        const char *from, *to, *want;
    } cases[] = {
        {"single_blocks.1.", "single_blocks.2.", "single block 1 is missing"},
        {"double_blocks.0.", "double_blocks.1.", "double block 0 is missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const edit e = {.from = cases[i].from, .to = cases[i].to};
        const char *path = write_edited("flux-tiny-dev.safetensors", "gap.safetensors", &e, &err);
        ASSERT_TRUE(path);
        loaded m;
        ASSERT_STATUS(load_bfl(path, &m, &err), SDW_E_NOT_FOUND);
        printf("    %s\n", err.msg);
        ASSERT_STR_CONTAINS(err.msg, cases[i].want);
        unload(&m);
    }
    /* a config asking for more blocks than the file holds: the first absent tensor */
    loaded m;
    memset(&m, 0, sizeof m);
    ASSERT_OK(sdw_flux_config_load(sdw_test_path("models/tiny-flux/transformer/config.json"),
                                   &m.cfg, &err),
              &err);
    m.cfg.n_single_layers = 3;
    ASSERT_OK(sdw_st_open(sdw_test_path("models/flux-tiny-dev.safetensors"), &m.f, &err), &err);
    m.ws = sdw_weights_create_viewed(m.f, "", sdw_flux_bfl_name, NULL);
    ASSERT_STATUS(sdw_flux_transformer_create(m.ws, &m.cfg, &m.t, &err), SDW_E_NOT_FOUND);
    printf("    %s\n", err.msg);
    ASSERT_STR_CONTAINS(err.msg, "single_transformer_blocks.2.norm.linear.weight");
    ASSERT_STR_CONTAINS(err.msg, "single_blocks.2.modulation.lin.weight");
    unload(&m);
}

/* One tensor absent: creation names it (both names). */
static void test_missing_tensor(void) {
    sdw_error err = {0};
    const edit e = {.drop = "double_blocks.0.txt_mlp.2.weight"};
    const char *path = write_edited("flux-tiny-dev.safetensors", "drop.safetensors", &e, &err);
    ASSERT_TRUE(path);
    loaded m;
    ASSERT_STATUS(load_bfl(path, &m, &err), SDW_E_NOT_FOUND);
    printf("    %s\n", err.msg);
    ASSERT_STR_CONTAINS(err.msg, "transformer_blocks.0.ff_context.net.2.weight");
    ASSERT_STR_CONTAINS(err.msg, "double_blocks.0.txt_mlp.2.weight");
    unload(&m);
    /* guidance_in gone: a schnell-like config (inferred), but the dev golden needs it: the
     * config says so */
    const edit e2 = {.from = "guidance_in.", .to = "unused_guidance_in."};
    path = write_edited("flux-tiny-dev.safetensors", "noguid.safetensors", &e2, &err);
    ASSERT_TRUE(path);
    ASSERT_OK(load_bfl(path, &m, &err), &err);
    ASSERT_TRUE(!m.cfg.guidance_embeds);
    unload(&m);
}

/* Wrong widths: an MLP with 120 rows instead of 128, a fused linear1 whose rows do not split
 * into seven parts: shape errors naming the tensor. */
static void test_wrong_widths(void) {
    sdw_error err = {0};
    const struct {
        const char *tensor;
        int64_t rows;
        const char *want;
    } cases[] = {
        {"double_blocks.0.img_mlp.0.weight", 120, "double_blocks.0.img_mlp.0.weight"},
        {"single_blocks.1.linear1.weight", 220, "single_blocks.1.linear1.weight"},
        {"double_blocks.0.txt_attn.qkv.bias", 93, "double_blocks.0.txt_attn.qkv.bias"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const edit e = {.reshape = cases[i].tensor, .reshape_rows = cases[i].rows};
        const char *path = write_edited("flux-tiny-dev.safetensors", "shape.safetensors", &e, &err);
        ASSERT_TRUE(path);
        loaded m;
        ASSERT_STATUS(load_bfl(path, &m, &err), SDW_E_SHAPE);
        printf("    %s\n", err.msg);
        ASSERT_STR_CONTAINS(err.msg, cases[i].want);
        unload(&m);
    }
    /* a config inconsistent with the file: heads x head size != the stored width */
    loaded m;
    memset(&m, 0, sizeof m);
    ASSERT_OK(sdw_flux_config_load(sdw_test_path("models/tiny-flux/transformer/config.json"),
                                   &m.cfg, &err),
              &err);
    m.cfg.n_heads = 3;
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-flux/transformer/"
                                        "diffusion_pytorch_model.safetensors"),
                          &m.f, &err),
              &err);
    m.ws = sdw_weights_create(m.f, "", NULL, NULL);
    ASSERT_STATUS(sdw_flux_transformer_create(m.ws, &m.cfg, &m.t, &err), SDW_E_SHAPE);
    printf("    %s\n", err.msg);
    ASSERT_STR_CONTAINS(err.msg, "x_embedder.weight");
    unload(&m);
}

static void test_config_validation(void) {
    sdw_error err = {0};
    sdw_flux_config c = sdw_flux_config_default();
    ASSERT_OK(sdw_flux_config_validate(&c, &err), &err);
    c.axes_dim[0] = 14;
    ASSERT_STATUS(sdw_flux_config_validate(&c, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "axes_dims_rope");
    c = sdw_flux_config_default();
    c.patch_size = 2;
    ASSERT_STATUS(sdw_flux_config_validate(&c, &err), SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(err.msg, "patch_size");
    ASSERT_OK(sdw_flux_config_load(sdw_test_path("models/tiny-flux-schnell/transformer/"
                                                 "config.json"),
                                   &c, &err),
              &err);
    ASSERT_TRUE(c.in_channels == 16 && c.n_heads == 2 && c.head_dim == 16 && c.joint_dim == 32 &&
                c.pooled_dim == 32 && !c.guidance_embeds && c.axes_dim[1] == 6);
}

/* bf16 products against the f32 goldens: measured error, within FLUX_BF16_TOL. */
static void test_bf16(void) {
    if (!sdw_nn_cpu_has_bf16()) {
        sdw_test_skip("no native bf16 arithmetic on this CPU");
        return;
    }
    loaded m;
    sdw_error err = {0};
    ASSERT_OK(load_folder("tiny-flux", SDW_PRECISION_BF16, &m, &err), &err);
    check_case(&m, "tiny-flux/txt2img-flowmatch", FLUX_BF16_TOL);
    unload(&m);
    ASSERT_OK(load_folder("tiny-flux-schnell", SDW_PRECISION_BF16, &m, &err), &err);
    check_case(&m, "tiny-flux-schnell/txt2img-4step", FLUX_BF16_TOL);
    unload(&m);
}

/* ---- speed at FLUX.1's width (SDW_FLUX_BENCH=1): random weights, 1024 image + 512 text
 * tokens. The time of one block = a forward with that one block − a forward with none. ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Uniform in [-0.5, 0.5): inputs whose values do not matter for speed. */
static float lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 16777216.0f - 0.5f;
}

/* Best of n forwards of a real-width model with n_double / n_single blocks. */
static double time_forward(int n_double, int n_single, int n, sdw_precision p) {
    sdw_flux_config c = sdw_flux_config_default();
    c.guidance_embeds = true;
    c.n_layers = n_double;
    c.n_single_layers = n_single;
    sdw_weights *ws = sdw_weights_create_random(7);
    sdw_weights_set_precision(ws, p);
    sdw_flux_transformer *t = NULL;
    sdw_error err = {0};
    if (sdw_flux_transformer_create(ws, &c, &t, &err)) {
        printf("    create: %s\n", err.msg);
        sdw_weights_destroy(ws);
        return -1;
    }
    const int gh = 32, gw = 32, L_txt = 512;
    const size_t nx = (size_t)gh * gw * c.in_channels, nc = (size_t)L_txt * c.joint_dim;
    float *x = malloc(sizeof(float) * nx), *ctx = malloc(sizeof(float) * nc);
    float *pooled = malloc(sizeof(float) * (size_t)c.pooled_dim), *out = malloc(sizeof(float) * nx);
    uint32_t s = 1;
    for (size_t i = 0; i < nx; i++)
        x[i] = lcg(&s);
    for (size_t i = 0; i < nc; i++)
        ctx[i] = lcg(&s);
    for (int i = 0; i < c.pooled_dim; i++)
        pooled[i] = 0.1f;
    const float ts = 0.75f, g = 3.5f;
    double best = 1e30;
    for (int r = 0; r < n; r++) {
        double t0 = now_s();
        sdw_flux_forward(t, x, 1, gh, gw, &ts, &g, pooled, ctx, L_txt, out);
        best = SDW_MIN(best, now_s() - t0);
    }
    bool finite = true;
    for (size_t i = 0; i < nx; i++)
        finite = finite && isfinite(out[i]);
    if (!finite) printf("    non-finite output\n");
    free(x);
    free(ctx);
    free(pooled);
    free(out);
    sdw_flux_transformer_destroy(t);
    sdw_weights_destroy(ws);
    return finite ? best : -1;
}

static void bench_blocks(void) {
    const sdw_precision ps[2] = {SDW_PRECISION_F32, SDW_PRECISION_BF16};
    for (int i = 0; i < 2; i++) {
        if (ps[i] == SDW_PRECISION_BF16 && !sdw_nn_cpu_has_bf16()) continue;
        const double t0 = time_forward(0, 0, 3, ps[i]);
        const double td = time_forward(1, 0, 3, ps[i]);
        const double tsg = time_forward(0, 1, 3, ps[i]);
        ASSERT_TRUE(t0 >= 0 && td >= 0 && tsg >= 0);
        printf("    %s, D 3072, 1024 image + 512 text tokens: embed+final %.3f s, double block "
               "%.3f s, single block %.3f s -> 19 + 38 blocks ~ %.1f s/step\n",
               i ? "bf16" : "f32", t0, td - t0, tsg - t0, t0 + 19 * (td - t0) + 38 * (tsg - t0));
    }
}

int main(void) {
    RUN(test_config_validation);
    RUN(test_folder_dev);
    RUN(test_folder_schnell);
    RUN(test_batch);
    RUN(test_bfl_dev);
    RUN(test_bfl_schnell);
    RUN(test_infer_rules);
    RUN(test_bfl_prefixed);
    RUN(test_missing_block);
    RUN(test_missing_tensor);
    RUN(test_wrong_widths);
    RUN(test_bf16);
    if (getenv("SDW_FLUX_BENCH")) RUN(bench_blocks); /* a measurement, asked for by name */
    return sdw_test_finish();
}
