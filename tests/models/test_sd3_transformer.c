/* SD3Transformer2DModel against diffusers 0.30.3 goldens (tiny-sd3/txt2img-flowmatch): the probe
 * call and every sampler step (CFG batch 2); config loading, validation and inference; the
 * position table; Stability's single-file names, proven by writing the fixture's weights under
 * them (the inverse of diffusers' convert_sd3_transformer_checkpoint_to_diffusers, spelled out
 * here apart from the map under test) and getting the same outputs; the bf16 path; broken files
 * and configs (a missing joint block, wrong widths, MMDiT-X). SDW_SD3_BENCH=1 also times a joint
 * block at SD3 medium's width. */
#include "io/weights.h"
#include "models/sd3/sd3_sgm_names.h"
#include "models/sd3/sd3_transformer.h"
#include "nn/nn.h"
#include "sdw_test.h"

#include <stdlib.h>
#include <time.h>

/* Forward-pass tolerance of the task: max|a-b| / max|ref|. */
#define SD3_TOL 1e-4
/* bf16 products (weights and activations rounded to bf16, f32 accumulation) against the f32
 * reference: measured 3.3e-3 .. 4.1e-3 over these calls; the bound leaves ~2.4x margin. */
#define SD3_BF16_TOL 1e-2
#define TINY_HEAD_DIM 16 /* the tiny model: 2 heads of 16 (its config.json) */
#define GOLDEN "tiny-sd3/txt2img-flowmatch"
#define FOLDER_FILE "models/tiny-sd3/transformer/diffusion_pytorch_model.safetensors"
#define FOLDER_CONFIG "models/tiny-sd3/transformer/config.json"
#define SGM_PREFIX "model.diffusion_model."

typedef struct loaded {
    sdw_st_file *f;
    sdw_weights *ws;
    sdw_sd3_transformer *t;
    sdw_sd3_config cfg;
} loaded;

static void unload(loaded *m) {
    sdw_sd3_transformer_destroy(m->t);
    sdw_weights_destroy(m->ws);
    sdw_st_close(m->f);
    memset(m, 0, sizeof *m);
}

/* A diffusers-named transformer file with the fixture's config.json. */
static sdw_status load_folder_file(const char *path, sdw_precision p, loaded *m, sdw_error *err) {
    memset(m, 0, sizeof *m);
    sdw_status st;
    if ((st = sdw_sd3_config_load(sdw_test_path(FOLDER_CONFIG), &m->cfg, err)) ||
        (st = sdw_st_open(path, &m->f, err)))
        return st;
    m->ws = sdw_weights_create(m->f, "", NULL, NULL);
    sdw_weights_set_precision(m->ws, p);
    return sdw_sd3_transformer_create(m->ws, &m->cfg, &m->t, err);
}

static sdw_status load_folder(sdw_precision p, loaded *m, sdw_error *err) {
    return load_folder_file(sdw_test_path(FOLDER_FILE), p, m, err);
}

/* A Stability single file at path: detected, its config inferred (tiny head size). */
static sdw_status load_sgm(const char *path, loaded *m, sdw_error *err) {
    memset(m, 0, sizeof *m);
    sdw_status st = sdw_st_open(path, &m->f, err);
    if (st) return st;
    const char *prefix = NULL;
    if (!sdw_sd3_sgm_detect(m->f, &prefix))
        return sdw_error_set(err, SDW_E_FORMAT, "%s: not a Stability SD3 file", path);
    m->ws = sdw_weights_create_viewed(m->f, prefix, sdw_sd3_sgm_name, NULL);
    if ((st = sdw_sd3_config_infer(m->ws, TINY_HEAD_DIM, &m->cfg, err))) return st;
    return sdw_sd3_transformer_create(m->ws, &m->cfg, &m->t, err);
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

/* Runs recorded call `call` ("probe" or "stepNN.transformer"); returns the relative error
 * against its .out (or -1 when its inputs are missing or of other widths). out_copy
 * (optional, malloc'd) receives the output. */
static double run_call(const sdw_sd3_transformer *t, sdw_golden *g, const char *call,
                       float **out_copy) {
    const sdw_sd3_config *c = sdw_sd3_transformer_config(t);
    const sdw_golden_tensor *x = cond(g, call, "hidden_states"), *ts = cond(g, call, "timestep");
    const sdw_golden_tensor *ctx = cond(g, call, "encoder_hidden_states");
    const sdw_golden_tensor *pooled = cond(g, call, "pooled_projections");
    const sdw_golden_tensor *ref = cond(g, call, "out");
    if (!x || !ts || !ctx || !pooled || !ref || x->n_dims != 4 || ctx->n_dims != 3) return -1;
    const int B = (int)x->shape[0], h = (int)x->shape[2], w = (int)x->shape[3];
    const int L = (int)ctx->shape[1];
    if (x->shape[1] != c->in_channels || ctx->shape[2] != c->joint_dim ||
        pooled->shape[1] != c->pooled_dim || ts->n != (size_t)B || ref->n != x->n ||
        sdw_sd3_check_size(t, h, w, NULL))
        return -1;
    float *out = malloc(sizeof(float) * ref->n);
    sdw_sd3_forward(t, x->data, B, h, w, ts->data, pooled->data, ctx->data, L, out);
    double e = sdw_test_rel_err(out, ref->data, ref->n);
    if (out_copy)
        *out_copy = out;
    else
        free(out);
    return e;
}

/* Every recorded transformer call (probe + steps) within tol; returns the worst error. */
static double check_case(const loaded *m, const char *label, double tol) {
    sdw_golden *g = sdw_golden_open(GOLDEN);
    if (!g) {
        sdw_test_fail(__FILE__, __LINE__, "golden %s missing", GOLDEN);
        return 1;
    }
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
            sdw_test_fail(__FILE__, __LINE__, "%s: inputs missing or of other widths", call);
            sdw_golden_close(g);
            return 1;
        }
        printf("    %s %s: rel err %.3g\n", label, call, e);
        worst = SDW_MAX(worst, e);
        n++;
    }
    sdw_golden_close(g);
    if (n < 5) sdw_test_fail(__FILE__, __LINE__, "%d golden calls, want probe + 4 steps", n);
    if (!(worst <= tol))
        sdw_test_fail(__FILE__, __LINE__, "%s: worst relative error %.3g > %.3g", label, worst,
                      tol);
    return worst;
}

static bool config_equal(const sdw_sd3_config *a, const sdw_sd3_config *b) {
    return a->in_channels == b->in_channels && a->out_channels == b->out_channels &&
           a->patch_size == b->patch_size && a->n_layers == b->n_layers &&
           a->n_heads == b->n_heads && a->head_dim == b->head_dim && a->joint_dim == b->joint_dim &&
           a->caption_dim == b->caption_dim && a->pooled_dim == b->pooled_dim &&
           a->pos_embed_max_size == b->pos_embed_max_size && a->sample_size == b->sample_size &&
           a->qk_norm == b->qk_norm;
}

/* ---- writing transformer files (the Stability layout, edited copies) ---- */

typedef struct tensor {
    char name[192];
    int n_dims;
    int64_t shape[4];
    float *data;
} tensor;

typedef struct tset {
    tensor t[512];
    int n;
} tset;

static tensor *tset_add(tset *s, const char *name, int n_dims, const int64_t *shape) {
    SDW_ASSERT(s->n < (int)SDW_ARRAY_LEN(s->t));
    tensor *t = &s->t[s->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    size_t count = 1;
    for (int d = 0; d < n_dims; d++)
        count *= (size_t)(t->shape[d] = shape[d]);
    t->data = malloc(sizeof(float) * SDW_MAX(count, (size_t)1));
    return t;
}

static void tset_free(tset *s) {
    for (int i = 0; i < s->n; i++)
        free(s->t[i].data);
    s->n = 0;
}

/* Writes s to <tmpdir>/<file>; returns the path (static buffer) or NULL. */
static const char *tset_save(const tset *s, const char *file, sdw_error *err) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", sdw_test_tmpdir(), file);
    sdw_st_writer *w = NULL;
    if (sdw_st_writer_create(path, &w, err)) return NULL;
    for (int i = 0; i < s->n; i++)
        sdw_st_writer_add(w, s->t[i].name, SDW_DTYPE_F32, s->t[i].n_dims, s->t[i].shape);
    sdw_status st = sdw_st_writer_begin(w, err);
    for (int i = 0; i < s->n && st == SDW_OK; i++)
        st = sdw_st_writer_write(w, s->t[i].data, err);
    sdw_status fin = sdw_st_writer_finish(w, st ? NULL : err);
    return st || fin ? NULL : path;
}

/* Every tensor of a file into s (names with `prefix` prepended). */
static void tset_read(tset *s, const sdw_st_file *f, const char *prefix) {
    for (int i = 0; i < sdw_st_count(f); i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        char name[192];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        tensor *o = tset_add(s, name, t->n_dims, t->shape);
        sdw_convert_to_f32(t->dtype, t->data, o->data, t->n_elems);
    }
}

static tensor *tset_find(tset *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}

/* Removes the tensors whose names start with prefix (or equal it). */
static void tset_drop(tset *s, const char *prefix) {
    int k = 0;
    for (int i = 0; i < s->n; i++) {
        if (!strncmp(s->t[i].name, prefix, strlen(prefix))) {
            free(s->t[i].data);
            continue;
        }
        s->t[k++] = s->t[i];
    }
    s->n = k;
}

/* ---- the Stability layout, written from the diffusers file ----
 * convert_sd3_transformer_checkpoint_to_diffusers read backwards: each Stability tensor is the
 * concatenation (dim 0) of diffusers tensors, for the AdaLayerNormContinuous linears with the
 * two halves exchanged (diffusers' swap_scale_shift undone). */

typedef struct sgm_writer {
    const sdw_st_file *src; /* diffusers names */
    tset *out;
    int used; /* source tensors consumed */
    const char *prefix;
} sgm_writer;

/* out <prefix><sgm><suffix> = cat(src <names[i]><suffix>), halves exchanged if swap. False when
 * a source tensor is absent. */
static bool sgm_emit(sgm_writer *w, const char *sgm, const char *suffix, const char *const *names,
                     int n, bool swap) {
    const sdw_st_tensor *parts[3];
    int64_t rows = 0;
    for (int i = 0; i < n; i++) {
        char name[192];
        snprintf(name, sizeof name, "%s%s", names[i], suffix);
        if (!(parts[i] = sdw_st_find(w->src, name))) return false;
        rows += parts[i]->shape[0];
    }
    char out_name[192];
    snprintf(out_name, sizeof out_name, "%s%s%s", w->prefix, sgm, suffix);
    int64_t shape[4];
    memcpy(shape, parts[0]->shape, sizeof(int64_t) * (size_t)parts[0]->n_dims);
    shape[0] = rows;
    tensor *o = tset_add(w->out, out_name, parts[0]->n_dims, shape);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        sdw_convert_to_f32(parts[i]->dtype, parts[i]->data, o->data + at, parts[i]->n_elems);
        at += parts[i]->n_elems;
    }
    if (swap) { /* (scale, shift) -> (shift, scale) */
        const size_t half = at / 2;
        float *tmp = malloc(sizeof(float) * half);
        memcpy(tmp, o->data, sizeof(float) * half);
        memmove(o->data, o->data + half, sizeof(float) * half);
        memcpy(o->data + half, tmp, sizeof(float) * half);
        free(tmp);
    }
    w->used += n;
    return true;
}

/* A Linear module: .weight and .bias. */
static bool sgm_linear(sgm_writer *w, const char *sgm, const char *const *names, int n, bool swap) {
    return sgm_emit(w, sgm, ".weight", names, n, swap) && sgm_emit(w, sgm, ".bias", names, n, swap);
}
#define ONE(x) ((const char *const[]){x})

/* The whole transformer of the diffusers file f in Stability's names under prefix; false when a
 * tensor is missing or some source tensor is left over (the layout must be complete). */
static bool sgm_from_diffusers(const sdw_st_file *f, int n_layers, const char *prefix, tset *out) {
    sgm_writer w = {.src = f, .out = out, .prefix = prefix};
    bool ok = sgm_emit(&w, "pos_embed", "", ONE("pos_embed.pos_embed"), 1, false) &&
              sgm_linear(&w, "x_embedder.proj", ONE("pos_embed.proj"), 1, false) &&
              sgm_linear(&w, "t_embedder.mlp.0", ONE("time_text_embed.timestep_embedder.linear_1"),
                         1, false) &&
              sgm_linear(&w, "t_embedder.mlp.2", ONE("time_text_embed.timestep_embedder.linear_2"),
                         1, false) &&
              sgm_linear(&w, "y_embedder.mlp.0", ONE("time_text_embed.text_embedder.linear_1"), 1,
                         false) &&
              sgm_linear(&w, "y_embedder.mlp.2", ONE("time_text_embed.text_embedder.linear_2"), 1,
                         false) &&
              sgm_linear(&w, "context_embedder", ONE("context_embedder"), 1, false);
    for (int i = 0; i < n_layers && ok; i++) {
        const bool last = i == n_layers - 1;
        char p[64], s[128], a[96], b[96], c[96];
        snprintf(p, sizeof p, "transformer_blocks.%d.", i);
#define D_(buf, x) (snprintf(buf, sizeof buf, "%s%s", p, x), buf)
#define S_(x) (snprintf(s, sizeof s, "joint_blocks.%d.%s", i, x), s)
        ok = sgm_linear(&w, S_("x_block.adaLN_modulation.1"), ONE(D_(a, "norm1.linear")), 1,
                        false) &&
             sgm_linear(
                 &w, S_("x_block.attn.qkv"),
                 (const char *const[]){D_(a, "attn.to_q"), D_(b, "attn.to_k"), D_(c, "attn.to_v")},
                 3, false) &&
             sgm_linear(&w, S_("x_block.attn.proj"), ONE(D_(a, "attn.to_out.0")), 1, false) &&
             sgm_linear(&w, S_("x_block.mlp.fc1"), ONE(D_(a, "ff.net.0.proj")), 1, false) &&
             sgm_linear(&w, S_("x_block.mlp.fc2"), ONE(D_(a, "ff.net.2")), 1, false) &&
             sgm_linear(&w, S_("context_block.adaLN_modulation.1"),
                        ONE(D_(a, "norm1_context.linear")), 1, last) &&
             sgm_linear(&w, S_("context_block.attn.qkv"),
                        (const char *const[]){D_(a, "attn.add_q_proj"), D_(b, "attn.add_k_proj"),
                                              D_(c, "attn.add_v_proj")},
                        3, false);
        if (ok && !last)
            ok = sgm_linear(&w, S_("context_block.attn.proj"), ONE(D_(a, "attn.to_add_out")), 1,
                            false) &&
                 sgm_linear(&w, S_("context_block.mlp.fc1"), ONE(D_(a, "ff_context.net.0.proj")), 1,
                            false) &&
                 sgm_linear(&w, S_("context_block.mlp.fc2"), ONE(D_(a, "ff_context.net.2")), 1,
                            false);
        /* qk norms (SD3.5): weights only */
        if (ok && sdw_st_find(f, D_(a, "attn.norm_q.weight")))
            ok = sgm_emit(&w, S_("x_block.attn.ln_q.weight"), "", ONE(D_(a, "attn.norm_q.weight")),
                          1, false) &&
                 sgm_emit(&w, S_("x_block.attn.ln_k.weight"), "", ONE(D_(a, "attn.norm_k.weight")),
                          1, false) &&
                 sgm_emit(&w, S_("context_block.attn.ln_q.weight"), "",
                          ONE(D_(a, "attn.norm_added_q.weight")), 1, false) &&
                 sgm_emit(&w, S_("context_block.attn.ln_k.weight"), "",
                          ONE(D_(a, "attn.norm_added_k.weight")), 1, false);
#undef D_
#undef S_
    }
    ok = ok && sgm_linear(&w, "final_layer.linear", ONE("proj_out"), 1, false) &&
         sgm_linear(&w, "final_layer.adaLN_modulation.1", ONE("norm_out.linear"), 1, true);
    return ok && w.used == sdw_st_count(f);
}

/* Writes the transformer of the diffusers file `src` in Stability's layout to <tmpdir>/<file>
 * (prefix before every name; extra: also a tensor of another component, as full checkpoints
 * hold). */
static const char *write_sgm_from(const char *src, const char *file, const char *prefix, bool extra,
                                  sdw_error *err) {
    sdw_st_file *f = NULL;
    if (sdw_st_open(src, &f, err)) return NULL;
    tset *s = calloc(1, sizeof *s);
    const char *path = NULL;
    if (!sgm_from_diffusers(f, 2, prefix, s)) {
        sdw_error_set(err, SDW_E_FORMAT, "the fixture does not convert completely");
    } else {
        if (extra) {
            tensor *t = tset_add(s,
                                 "text_encoders.clip_l.transformer.text_model.final_layer_norm."
                                 "weight",
                                 1, (int64_t[]){8});
            for (int i = 0; i < 8; i++)
                t->data[i] = 1.0f;
        }
        path = tset_save(s, file, err);
    }
    tset_free(s);
    free(s);
    sdw_st_close(f);
    return path;
}

/* The fixture's transformer in Stability's layout. */
static const char *write_sgm(const char *file, const char *prefix, bool extra, sdw_error *err) {
    return write_sgm_from(sdw_test_path(FOLDER_FILE), file, prefix, extra, err);
}

/* ---- tests ---- */

/* A config.json written to <tmpdir>/config.json. */
static const char *write_config(const char *json) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/config.json", sdw_test_tmpdir());
    FILE *fp = fopen(path, "w");
    if (!fp) return NULL;
    fputs(json, fp);
    fclose(fp);
    return path;
}

static void test_config(void) {
    sdw_error err = {0};
    sdw_sd3_config c = sdw_sd3_config_default();
    ASSERT_OK(sdw_sd3_config_validate(&c, &err), &err);
    ASSERT_OK(sdw_sd3_config_load(sdw_test_path(FOLDER_CONFIG), &c, &err), &err);
    ASSERT_TRUE(c.in_channels == 16 && c.out_channels == 16 && c.patch_size == 2 &&
                c.n_layers == 2 && c.n_heads == 2 && c.head_dim == 16 && c.joint_dim == 64 &&
                c.caption_dim == 32 && c.pooled_dim == 64 && c.pos_embed_max_size == 32 &&
                c.sample_size == 32 && !c.qk_norm);
    /* SD3.5 Large's keys as diffusers 0.31 writes them */
    const char *p = write_config("{\"num_attention_heads\": 2, \"attention_head_dim\": 16, "
                                 "\"caption_projection_dim\": 32, \"qk_norm\": \"rms_norm\", "
                                 "\"dual_attention_layers\": [], \"out_channels\": null, "
                                 "\"in_channels\": 8}");
    ASSERT_TRUE(p);
    ASSERT_OK(sdw_sd3_config_load(p, &c, &err), &err);
    ASSERT_TRUE(c.qk_norm && c.out_channels == 8);
    const struct {
        const char *json, *want;
        sdw_status st;
    } bad[] = {
        {"{\"qk_norm\": \"layer_norm\"}", "qk_norm", SDW_E_UNSUPPORTED},
        {"{\"dual_attention_layers\": [0, 1]}", "dual_attention_layers", SDW_E_UNSUPPORTED},
        {"{\"pos_embed_max_size\": null}", "pos_embed_max_size", SDW_E_UNSUPPORTED},
        {"{\"caption_projection_dim\": 1536}", "caption_projection_dim", SDW_E_INVALID_ARG},
        {"{\"num_layers\": 0}", "num_layers", SDW_E_INVALID_ARG},
        {"{\"patch_size\": \"2\"}", "patch_size", SDW_E_FORMAT},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(bad); i++) {
        sdw_sd3_config before = c;
        ASSERT_TRUE((p = write_config(bad[i].json)));
        ASSERT_STATUS(sdw_sd3_config_load(p, &c, &err), bad[i].st);
        printf("    %s\n", err.msg);
        ASSERT_STR_CONTAINS(err.msg, bad[i].want);
        ASSERT_TRUE(config_equal(&c, &before)); /* untouched */
    }
}

static void test_folder(void) {
    loaded m;
    sdw_error err = {0};
    ASSERT_OK(load_folder(SDW_PRECISION_F32, &m, &err), &err);
    char left[256];
    ASSERT_EQ_INT(sdw_weights_unused(m.ws, left, sizeof left), 0);
    /* the reference's parameter count (ref_make_info.json): the stored position table
     * (1024 x 32) is a buffer, not a parameter */
    ASSERT_EQ_INT(sdw_sd3_transformer_n_params(m.t), 82816);
    check_case(&m, "folder", SD3_TOL);
    unload(&m);
}

/* Each element of the CFG batch (uncond, cond: other context and pooled) alone gives its row of
 * the batch-2 output: per-batch rows and modulations are kept apart. */
static void test_batch(void) {
    loaded m;
    sdw_error err = {0};
    ASSERT_OK(load_folder(SDW_PRECISION_F32, &m, &err), &err);
    sdw_golden *g = sdw_golden_open(GOLDEN);
    ASSERT_TRUE(g);
    const sdw_golden_tensor *x = cond(g, "probe", "hidden_states"),
                            *ts = cond(g, "probe", "timestep");
    const sdw_golden_tensor *ctx = cond(g, "probe", "encoder_hidden_states");
    const sdw_golden_tensor *pooled = cond(g, "probe", "pooled_projections");
    ASSERT_TRUE(x && ts && ctx && pooled && x->shape[0] == 2);
    const int h = (int)x->shape[2], w = (int)x->shape[3], L = (int)ctx->shape[1];
    const size_t nx = x->n / 2, nc = ctx->n / 2, np = pooled->n / 2;
    float *ob = malloc(sizeof(float) * x->n), *o1 = malloc(sizeof(float) * nx);
    sdw_sd3_forward(m.t, x->data, 2, h, w, ts->data, pooled->data, ctx->data, L, ob);
    double worst = 0;
    for (int i = 0; i < 2; i++) {
        sdw_sd3_forward(m.t, (const float *)x->data + i * nx, 1, h, w, (const float *)ts->data + i,
                        (const float *)pooled->data + i * np, (const float *)ctx->data + i * nc, L,
                        o1);
        worst = SDW_MAX(worst, sdw_test_rel_err(ob + i * nx, o1, nx));
    }
    printf("    batch of 2 vs one by one: rel diff %.3g\n", worst);
    free(o1);
    free(ob);
    sdw_golden_close(g);
    unload(&m);
    ASSERT_TRUE(worst <= 1e-6);
}

/* The table computed as get_2d_sincos_pos_embed does = the fixture's stored buffer; a file
 * without the buffer (computed table) gives the same outputs. */
static void test_pos_table(void) {
    sdw_error err = {0};
    sdw_sd3_config c;
    ASSERT_OK(sdw_sd3_config_load(sdw_test_path(FOLDER_CONFIG), &c, &err), &err);
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(sdw_test_path(FOLDER_FILE), &f, &err), &err);
    const sdw_st_tensor *stored = sdw_st_find(f, "pos_embed.pos_embed");
    ASSERT_TRUE(stored && stored->dtype == SDW_DTYPE_F32 && stored->n_elems == 1024 * 32);
    float *mine = malloc(sizeof(float) * stored->n_elems);
    float *ref = malloc(sizeof(float) * stored->n_elems);
    sdw_sd3_pos_embed_table(&c, mine);
    sdw_convert_to_f32(stored->dtype, stored->data, ref, stored->n_elems);
    double worst = 0;
    size_t exact = 0;
    for (size_t i = 0; i < stored->n_elems; i++) {
        worst = SDW_MAX(worst, fabs((double)mine[i] - ref[i]));
        exact += mine[i] == ref[i];
    }
    printf("    computed table: max abs diff %.3g, %zu of %zu values bit-equal\n", worst, exact,
           stored->n_elems);
    free(mine);
    free(ref);
    ASSERT_TRUE(worst <= 1e-7);

    tset *s = calloc(1, sizeof *s);
    tset_read(s, f, "");
    tset_drop(s, "pos_embed.pos_embed");
    const char *path = tset_save(s, "nopos.safetensors", &err);
    tset_free(s);
    free(s);
    sdw_st_close(f);
    ASSERT_TRUE(path);
    loaded m;
    ASSERT_OK(load_folder_file(path, SDW_PRECISION_F32, &m, &err), &err);
    check_case(&m, "computed table", SD3_TOL);
    unload(&m);
}

/* Inference from the diffusers file's shapes = its config.json. */
static void test_infer(void) {
    sdw_error err = {0};
    sdw_sd3_config want, got = sdw_sd3_config_default();
    ASSERT_OK(sdw_sd3_config_load(sdw_test_path(FOLDER_CONFIG), &want, &err), &err);
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(sdw_test_path(FOLDER_FILE), &f, &err), &err);
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    ASSERT_OK(sdw_sd3_config_infer(ws, TINY_HEAD_DIM, &got, &err), &err);
    ASSERT_TRUE(config_equal(&got, &want));
    /* a head size that does not divide the width 32 */
    sdw_sd3_config before = got;
    ASSERT_STATUS(sdw_sd3_config_infer(ws, 64, &got, &err), SDW_E_SHAPE);
    printf("    %s\n", err.msg);
    ASSERT_STR_CONTAINS(err.msg, "head size 64");
    ASSERT_TRUE(config_equal(&got, &before));
    ASSERT_TRUE(!sdw_sd3_sgm_detect(f, NULL)); /* diffusers names are not Stability's */
    sdw_weights_destroy(ws);
    sdw_st_close(f);
}

/* The Stability layout written from the fixture: detected (under model.diffusion_model. with
 * another component beside it, and bare), its config inferred = config.json, nothing left
 * unused, and the same outputs as the diffusers file. */
static void test_sgm(void) {
    sdw_error err = {0};
    const char *path = write_sgm("sd3_sgm.safetensors", SGM_PREFIX, true, &err);
    ASSERT_TRUE(path);
    loaded s, f;
    ASSERT_OK(load_sgm(path, &s, &err), &err);
    ASSERT_OK(load_folder(SDW_PRECISION_F32, &f, &err), &err);
    const char *prefix = NULL;
    ASSERT_TRUE(sdw_sd3_sgm_detect(s.f, &prefix) && !strcmp(prefix, SGM_PREFIX));
    ASSERT_TRUE(config_equal(&s.cfg, &f.cfg));
    ASSERT_EQ_INT(sdw_sd3_transformer_n_params(s.t), sdw_sd3_transformer_n_params(f.t));
    char left[256];
    ASSERT_EQ_INT(sdw_weights_unused(s.ws, left, sizeof left), 0);
    check_case(&s, "sgm", SD3_TOL);

    sdw_golden *g = sdw_golden_open(GOLDEN);
    ASSERT_TRUE(g);
    double worst = 0;
    for (int k = -1; k < 4; k++) {
        char call[64];
        if (k < 0)
            snprintf(call, sizeof call, "probe");
        else
            snprintf(call, sizeof call, "step%02d.transformer", k);
        float *os = NULL, *of = NULL;
        run_call(s.t, g, call, &os);
        run_call(f.t, g, call, &of);
        const sdw_golden_tensor *ref = cond(g, call, "out");
        worst = SDW_MAX(worst, os && of ? sdw_test_rel_err(os, of, ref->n) : 1.0);
        free(os);
        free(of);
    }
    printf("    Stability layout vs diffusers file, 5 calls: rel diff %.3g\n", worst);
    sdw_golden_close(g);
    unload(&s);
    unload(&f);
    ASSERT_TRUE(worst == 0);

    /* bare names (no model.diffusion_model.) */
    ASSERT_TRUE((path = write_sgm("sd3_bare.safetensors", "", false, &err)));
    ASSERT_OK(load_sgm(path, &s, &err), &err);
    ASSERT_TRUE(sdw_sd3_sgm_detect(s.f, &prefix) && !strcmp(prefix, ""));
    unload(&s);
}

/* SD3.5's qk norms: the fixture with RMSNorm gains added (diffusers names) against the same
 * weights in Stability's (ln_q / ln_k): inferred as qk_norm, identical outputs, and the norms
 * change the output (they are applied). The computation itself was checked once against a torch
 * transcription of diffusers 0.31's JointAttnProcessor2_0 (rel err 3.8e-7); no golden has it. */
static void test_sgm_qk_norm(void) {
    sdw_error err = {0};
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(sdw_test_path(FOLDER_FILE), &f, &err), &err);
    tset *s = calloc(1, sizeof *s);
    tset_read(s, f, "");
    sdw_st_close(f);
    static const char *const norms[] = {"norm_q", "norm_k", "norm_added_q", "norm_added_k"};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) {
            char name[128];
            snprintf(name, sizeof name, "transformer_blocks.%d.attn.%s.weight", i, norms[k]);
            tensor *t = tset_add(s, name, 1, (int64_t[]){TINY_HEAD_DIM});
            for (int j = 0; j < TINY_HEAD_DIM; j++)
                t->data[j] = 1.0f + 0.5f * sinf((float)(j + 16 * k + 64 * i));
        }
    const char *dpath = tset_save(s, "qk.safetensors", &err);
    tset_free(s);
    free(s);
    ASSERT_TRUE(dpath);
    char dcopy[1024];
    snprintf(dcopy, sizeof dcopy, "%s", dpath);
    const char *spath = write_sgm_from(dcopy, "qk_sgm.safetensors", SGM_PREFIX, false, &err);
    ASSERT_TRUE(spath);
    loaded d, g, plain;
    ASSERT_OK(load_sgm(spath, &g, &err), &err);
    ASSERT_TRUE(g.cfg.qk_norm);
    char left[256];
    ASSERT_EQ_INT(sdw_weights_unused(g.ws, left, sizeof left), 0);
    memset(&d, 0, sizeof d);
    ASSERT_OK(sdw_sd3_config_load(sdw_test_path(FOLDER_CONFIG), &d.cfg, &err), &err);
    d.cfg.qk_norm = true;
    ASSERT_TRUE(config_equal(&d.cfg, &g.cfg));
    ASSERT_OK(sdw_st_open(dcopy, &d.f, &err), &err);
    d.ws = sdw_weights_create(d.f, "", NULL, NULL);
    ASSERT_OK(sdw_sd3_transformer_create(d.ws, &d.cfg, &d.t, &err), &err);
    ASSERT_EQ_INT(sdw_sd3_transformer_n_params(d.t), sdw_sd3_transformer_n_params(g.t));
    ASSERT_OK(load_folder(SDW_PRECISION_F32, &plain, &err), &err);
    sdw_golden *gd = sdw_golden_open(GOLDEN);
    ASSERT_TRUE(gd);
    float *od = NULL, *og = NULL, *op = NULL;
    run_call(d.t, gd, "probe", &od);
    run_call(g.t, gd, "probe", &og);
    run_call(plain.t, gd, "probe", &op);
    const size_t n = cond(gd, "probe", "out")->n;
    const double same = od && og ? sdw_test_rel_err(og, od, n) : 1.0;
    const double moved = od && op ? sdw_test_rel_err(od, op, n) : 0.0;
    printf("    qk norms: Stability vs diffusers names rel diff %.3g; vs no qk norm %.3g\n", same,
           moved);
    free(od);
    free(og);
    free(op);
    sdw_golden_close(gd);
    unload(&d);
    unload(&g);
    unload(&plain);
    ASSERT_TRUE(same == 0);
    ASSERT_TRUE(moved > 1e-3);
}

/* The map itself: fused q|k|v rows, the swapped halves, names without a counterpart. */
static void test_sgm_names(void) {
    char buf[256];
    sdw_weight_view v = {0};
    ASSERT_TRUE(
        sdw_sd3_sgm_name("transformer_blocks.7.attn.add_k_proj.bias", buf, sizeof buf, &v, NULL));
    ASSERT_TRUE(!strcmp(buf, "joint_blocks.7.context_block.attn.qkv.bias") && v.split == 3 &&
                v.first == 1);
    memset(&v, 0, sizeof v);
    ASSERT_TRUE(sdw_sd3_sgm_name("transformer_blocks.23." SDW_SD3_CONTEXT_NORM_SCALE ".weight", buf,
                                 sizeof buf, &v, NULL));
    ASSERT_TRUE(!strcmp(buf, "joint_blocks.23.context_block.adaLN_modulation.1.weight") &&
                v.split == 2 && v.first == 1);
    memset(&v, 0, sizeof v);
    ASSERT_TRUE(sdw_sd3_sgm_name("transformer_blocks.3.attn.norm_added_q.weight", buf, sizeof buf,
                                 &v, NULL));
    ASSERT_TRUE(!strcmp(buf, "joint_blocks.3.context_block.attn.ln_q.weight") && v.split == 0);
    ASSERT_TRUE(sdw_sd3_sgm_name("pos_embed.pos_embed", buf, sizeof buf, &v, NULL));
    ASSERT_TRUE(!strcmp(buf, "pos_embed"));
    ASSERT_TRUE(!sdw_sd3_sgm_name("norm_out.linear.weight", buf, sizeof buf, &v, NULL));
    ASSERT_TRUE(
        !sdw_sd3_sgm_name("transformer_blocks.0.nonsense.weight", buf, sizeof buf, &v, NULL));
    ASSERT_TRUE(!sdw_sd3_sgm_name("transformer_blocks.0.norm1.linear.weight", buf, 8, &v, NULL));
}

/* A config asking for a block the file lacks, a file with a block gap: the block is named. */
static void test_missing_block(void) {
    sdw_error err = {0};
    loaded m;
    /* config num_layers 3 on the 2-block file */
    memset(&m, 0, sizeof m);
    ASSERT_OK(sdw_sd3_config_load(sdw_test_path(FOLDER_CONFIG), &m.cfg, &err), &err);
    m.cfg.n_layers = 3;
    ASSERT_OK(sdw_st_open(sdw_test_path(FOLDER_FILE), &m.f, &err), &err);
    m.ws = sdw_weights_create(m.f, "", NULL, NULL);
    ASSERT_STATUS(sdw_sd3_transformer_create(m.ws, &m.cfg, &m.t, &err), SDW_E_NOT_FOUND);
    printf("    %s\n", err.msg);
    ASSERT_STR_CONTAINS(err.msg, "joint block 2 of 3");
    ASSERT_STR_CONTAINS(err.msg, "transformer_blocks.2.norm1.linear.weight");
    unload(&m);

    /* the Stability file without joint block 0 (block 1 kept): inference names it; with the
     * folder's config, creation names it with both names */
    const char *path = write_sgm("gap.safetensors", SGM_PREFIX, false, &err);
    ASSERT_TRUE(path);
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(path, &f, &err), &err);
    tset *s = calloc(1, sizeof *s);
    tset_read(s, f, "");
    sdw_st_close(f);
    tset_drop(s, SGM_PREFIX "joint_blocks.0.");
    path = tset_save(s, "gap.safetensors", &err);
    tset_free(s);
    free(s);
    ASSERT_TRUE(path);
    ASSERT_STATUS(load_sgm(path, &m, &err), SDW_E_NOT_FOUND);
    printf("    %s\n", err.msg);
    ASSERT_STR_CONTAINS(err.msg, "joint block 0 is missing");
    ASSERT_TRUE(m.ws);
    ASSERT_OK(sdw_sd3_config_load(sdw_test_path(FOLDER_CONFIG), &m.cfg, &err), &err);
    ASSERT_STATUS(sdw_sd3_transformer_create(m.ws, &m.cfg, &m.t, &err), SDW_E_NOT_FOUND);
    printf("    %s\n", err.msg);
    ASSERT_STR_CONTAINS(err.msg, "joint block 0 of 2");
    ASSERT_STR_CONTAINS(err.msg, "joint_blocks.0.x_block.adaLN_modulation.1.weight");
    unload(&m);
}

/* SD3.5 Medium's MMDiT-X blocks (a second image attention, attn2) are refused by name. */
static void test_mmditx_refused(void) {
    sdw_error err = {0};
    const char *path = write_sgm("x.safetensors", SGM_PREFIX, false, &err);
    ASSERT_TRUE(path);
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(path, &f, &err), &err);
    tset *s = calloc(1, sizeof *s);
    tset_read(s, f, "");
    sdw_st_close(f);
    tensor *t =
        tset_add(s, SGM_PREFIX "joint_blocks.1.x_block.attn2.qkv.weight", 2, (int64_t[]){96, 32});
    for (int i = 0; i < 96 * 32; i++)
        t->data[i] = 0.01f;
    path = tset_save(s, "x.safetensors", &err);
    tset_free(s);
    free(s);
    ASSERT_TRUE(path);
    loaded m;
    ASSERT_STATUS(load_sgm(path, &m, &err), SDW_E_UNSUPPORTED);
    printf("    %s\n", err.msg);
    ASSERT_STR_CONTAINS(err.msg, "joint block 1");
    ASSERT_STR_CONTAINS(err.msg, "MMDiT-X");
    unload(&m);
}

/* Widths that do not match: a config's joint_dim against the file's context_embedder, a fused
 * qkv whose rows do not split in three, a truncated MLP: shape errors naming the tensor. */
static void test_wrong_widths(void) {
    sdw_error err = {0};
    loaded m;
    memset(&m, 0, sizeof m);
    ASSERT_OK(sdw_sd3_config_load(sdw_test_path(FOLDER_CONFIG), &m.cfg, &err), &err);
    m.cfg.joint_dim = 4096;
    ASSERT_OK(sdw_st_open(sdw_test_path(FOLDER_FILE), &m.f, &err), &err);
    m.ws = sdw_weights_create(m.f, "", NULL, NULL);
    ASSERT_STATUS(sdw_sd3_transformer_create(m.ws, &m.cfg, &m.t, &err), SDW_E_SHAPE);
    printf("    %s\n", err.msg);
    ASSERT_STR_CONTAINS(err.msg, "context_embedder.weight");
    unload(&m);

    const struct {
        const char *tensor;
        int64_t rows;
        sdw_status st;
        const char *want;
    } cases[] = {
        {SGM_PREFIX "joint_blocks.0.x_block.attn.qkv.weight", 95, SDW_E_SHAPE,
         "joint_blocks.0.x_block.attn.qkv.weight"},
        {SGM_PREFIX "joint_blocks.1.x_block.mlp.fc1.weight", 120, SDW_E_SHAPE,
         "joint_blocks.1.x_block.mlp.fc1.weight"},
        {SGM_PREFIX "joint_blocks.1.context_block.adaLN_modulation.1.bias", 63, SDW_E_SHAPE,
         "joint_blocks.1.context_block.adaLN_modulation.1.bias"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(cases); i++) {
        const char *path = write_sgm("shape.safetensors", SGM_PREFIX, false, &err);
        ASSERT_TRUE(path);
        sdw_st_file *f = NULL;
        ASSERT_OK(sdw_st_open(path, &f, &err), &err);
        tset *s = calloc(1, sizeof *s);
        tset_read(s, f, "");
        sdw_st_close(f);
        tensor *t = tset_find(s, cases[i].tensor);
        ASSERT_TRUE(t);
        t->shape[0] = cases[i].rows; /* fewer rows: the data is cut short */
        path = tset_save(s, "shape.safetensors", &err);
        tset_free(s);
        free(s);
        ASSERT_TRUE(path);
        ASSERT_STATUS(load_sgm(path, &m, &err), cases[i].st);
        printf("    %s\n", err.msg);
        ASSERT_STR_CONTAINS(err.msg, cases[i].want);
        unload(&m);
    }
}

/* Latent sizes the model cannot take: named before any forward. */
static void test_check_size(void) {
    loaded m;
    sdw_error err = {0};
    ASSERT_OK(load_folder(SDW_PRECISION_F32, &m, &err), &err);
    ASSERT_OK(sdw_sd3_check_size(m.t, 64, 32, &err), &err);
    ASSERT_OK(sdw_sd3_check_size(m.t, 64, 64, &err), &err); /* 32 patches = the table */
    ASSERT_STATUS(sdw_sd3_check_size(m.t, 33, 32, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "patch size 2");
    ASSERT_STATUS(sdw_sd3_check_size(m.t, 32, 66, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "position table");
    unload(&m);
}

/* bf16 products against the f32 goldens: measured error, within SD3_BF16_TOL. */
static void test_bf16(void) {
    if (!sdw_nn_cpu_has_bf16()) {
        sdw_test_skip("no native bf16 arithmetic on this CPU");
        return;
    }
    loaded m;
    sdw_error err = {0};
    ASSERT_OK(load_folder(SDW_PRECISION_BF16, &m, &err), &err);
    check_case(&m, "bf16", SD3_BF16_TOL);
    unload(&m);
}

/* ---- speed at SD3 medium's width (SDW_SD3_BENCH=1): random weights, 1024x1024 (128x128
 * latents: 4096 image tokens) + 333 context tokens, batch 1. The time of one block = a forward
 * with two blocks - a forward with one (the last block is the lighter context_pre_only one). */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best of n forwards of an SD3-medium-width model with n_layers blocks. */
static double time_forward(int n_layers, int n, sdw_precision p) {
    sdw_sd3_config c = sdw_sd3_config_default();
    c.n_layers = n_layers;
    c.n_heads = 24; /* SD3 medium: 24 x 64 = 1536, table 192 */
    c.caption_dim = 1536;
    c.pos_embed_max_size = 192;
    sdw_weights *ws = sdw_weights_create_random(7);
    sdw_weights_set_precision(ws, p);
    sdw_sd3_transformer *t = NULL;
    sdw_error err = {0};
    if (sdw_sd3_transformer_create(ws, &c, &t, &err)) {
        printf("    create: %s\n", err.msg);
        sdw_weights_destroy(ws);
        return -1;
    }
    const int h = 128, w = 128, L = 333;
    const size_t nx = (size_t)c.in_channels * h * w, nc = (size_t)L * c.joint_dim;
    float *x = malloc(sizeof(float) * nx), *ctx = malloc(sizeof(float) * nc);
    float *pooled = malloc(sizeof(float) * (size_t)c.pooled_dim), *out = malloc(sizeof(float) * nx);
    uint32_t s = 1;
    for (size_t i = 0; i < nx; i++)
        x[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (size_t i = 0; i < nc; i++)
        ctx[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int i = 0; i < c.pooled_dim; i++)
        pooled[i] = 0.1f;
    const float ts = 750.0f;
    double best = 1e30;
    for (int r = 0; r < n; r++) {
        double t0 = now_s();
        sdw_sd3_forward(t, x, 1, h, w, &ts, pooled, ctx, L, out);
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
    sdw_sd3_transformer_destroy(t);
    sdw_weights_destroy(ws);
    return finite ? best : -1;
}

static void bench_blocks(void) {
    const sdw_precision ps[2] = {SDW_PRECISION_F32, SDW_PRECISION_BF16};
    for (int i = 0; i < 2; i++) {
        if (ps[i] == SDW_PRECISION_BF16 && !sdw_nn_cpu_has_bf16()) continue;
        const double t1 = time_forward(1, 2, ps[i]), t2 = time_forward(2, 2, ps[i]);
        ASSERT_TRUE(t1 >= 0 && t2 >= 0);
        printf("    %s, D 1536, 4096 image + 333 context tokens: one block + rest %.3f s, joint "
               "block %.3f s -> 24 blocks ~ %.1f s/call\n",
               i ? "bf16" : "f32", t1, t2 - t1, t1 + 23 * (t2 - t1));
    }
}

int main(void) {
    RUN(test_config);
    RUN(test_folder);
    RUN(test_batch);
    RUN(test_pos_table);
    RUN(test_infer);
    RUN(test_sgm_names);
    RUN(test_sgm);
    RUN(test_sgm_qk_norm);
    RUN(test_missing_block);
    RUN(test_mmditx_refused);
    RUN(test_wrong_widths);
    RUN(test_check_size);
    RUN(test_bf16);
    if (getenv("SDW_SD3_BENCH")) RUN(bench_blocks); /* a measurement, asked for by name */
    return sdw_test_finish();
}
