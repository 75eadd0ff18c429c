/* Textual inversion, prompt syntax and clip skip through the Stable Diffusion pipeline:
 * golden/tiny-sd15/txt2img-euler-embedding (diffusers' load_textual_inversion of
 * models/tiny-sd15-embedding-tinyemb.safetensors as token "tinyemb") stage by stage, te.* ids
 * 49408 and 49409 included, in both prompt readings; the embeddings folder's scan; refusals;
 * and the UNet context of a long prompt laid out as the rules say. */
#include "sdw_test.h"

#include "io/safetensors.h"
#include "models/diffusion.h"
#include "text/embeddings.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define STAGE_TOL 1e-4
#define CASE "tiny-sd15/txt2img-euler-embedding"

static void copy_file(const char *from, const char *to) {
    size_t n;
    void *data = sdw_test_read_file(from, &n);
    SDW_ASSERT(data);
    FILE *f = fopen(to, "wb");
    SDW_ASSERT(f && fwrite(data, 1, n, f) == n && fclose(f) == 0);
    free(data);
}

/* A folder holding the fixture as tinyemb.safetensors (A1111: the token is the stem). */
static const char *emb_dir(void) {
    static char dir[512];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/embeddings", sdw_test_tmpdir());
    SDW_ASSERT(mkdir(dir, 0700) == 0);
    char to[600];
    snprintf(to, sizeof to, "%s/tinyemb.safetensors", dir);
    copy_file(sdw_test_path("models/tiny-sd15-embedding-tinyemb.safetensors"), to);
    return dir;
}

static sdw_status load(const char *model, const char *dir, sdw_image_model **m, sdw_error *err) {
    sdw_load_options opts = sdw_load_options_default();
    opts.embeddings_dir = dir;
    return sdw_model_load(sdw_test_path("models/%s", model), &opts, m, err);
}

/* The stage check, without te.*.pooled when `skip_pooled` (A1111's reading pools at the EOS,
 * diffusers' at the added token's argmax; SD 1.x's UNet does not use it). */
typedef struct filter {
    sdw_stage_check c;
    bool skip_pooled;
} filter;

static void filtered_tap(void *user, const char *name, const float *data, int n_dims,
                         const int64_t *shape) {
    filter *f = user;
    if (f->skip_pooled && strstr(name, ".pooled")) return;
    sdw_stage_tap(&f->c, name, data, n_dims, shape);
}

/* Stages the pipeline does not tap: the probe, the schedule, the timesteps, the float image
 * (its PNG is compared), and SD 1.x's unused pooled outputs (test_prompt_encode compares them
 * with this golden). */
static bool excused(const char *name, const void *ctx) {
    (void)ctx;
    return !strncmp(name, "probe.", 6) || !strncmp(name, "sched.", 6) ||
           strstr(name, ".timestep") || !strcmp(name, "image") || strstr(name, ".pooled");
}

static void run_golden(bool syntax) {
    sdw_golden *g = sdw_golden_open(CASE);
    ASSERT_TRUE(g != NULL);
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    sdw_status s = load("tiny-sd15", emb_dir(), &m, &err);
    if (s) {
        sdw_golden_close(g);
        ASSERT_OK(s, &err);
    }
    filter f = {.c = {.g = g, .tol = STAGE_TOL}, .skip_pooled = syntax};
    sdw_diffusion_set_tap(m, filtered_tap, &f);
    sdw_request req;
    sdw_image img = {0}, init = {0}, mask = {0};
    sdw_result_info info;
    s = sdw_golden_request(g, &req, &init, &mask, &err);
    req.prompt_syntax = syntax;
    if (!s) s = sdw_model_generate(m, &req, NULL, NULL, &img, &info, &err);
    sdw_model_destroy(m);
    const int maxd = s ? 256 : sdw_test_image_max_diff(&img, sdw_test_path("golden/%s/image.png", CASE));
    sdw_image_free(&img);
    const int missing = sdw_stage_missing(&f.c, excused, &f);
    sdw_golden_close(g);
    ASSERT_OK(s, &err);
    fprintf(stderr, "  %s (%s): %d stages compared, worst %.2g (%s), image max diff %d\n", CASE,
            syntax ? "A1111 syntax" : "plain", f.c.n_compared, f.c.worst, f.c.worst_name, maxd);
    ASSERT_EQ_INT(f.c.n_failed, 0);
    ASSERT_EQ_INT(missing, 0);
    ASSERT_TRUE(f.c.n_compared >= 20);
    ASSERT_TRUE(maxd <= 1);
}

/* diffusers' expansion: te.cond.input_ids holds 49408, 49409; every stage as the reference. */
static void test_golden_plain(void) {
    run_golden(false);
}

/* The same prompt read with A1111's syntax (no markup, one window): the same stages. */
static void test_golden_a1111(void) {
    run_golden(true);
}

/* What the scan lists: usable files by stem, pickles and broken files as skipped, no links out
 * of the folder, subfolders read, hidden and unrelated files ignored; duplicates skipped. */
static void test_folder_scan(void) {
    char dir[512], p[700], q[700];
    snprintf(dir, sizeof dir, "%s/scan", sdw_test_tmpdir());
    SDW_ASSERT(mkdir(dir, 0700) == 0);
    const char *fixture = sdw_test_path("models/tiny-sd15-embedding-tinyemb.safetensors");
    snprintf(p, sizeof p, "%s/good.safetensors", dir);
    copy_file(fixture, p);
    snprintf(p, sizeof p, "%s/sub", dir);
    SDW_ASSERT(mkdir(p, 0700) == 0);
    snprintf(p, sizeof p, "%s/sub/deep.SAFETENSORS", dir);
    copy_file(fixture, p);
    snprintf(p, sizeof p, "%s/sub/good.safetensors", dir); /* the same stem again */
    copy_file(fixture, p);
    snprintf(p, sizeof p, "%s/old.pt", dir);
    FILE *f = fopen(p, "wb");
    fputs("PK\x03\x04 not unpickled", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/broken.safetensors", dir);
    f = fopen(p, "wb");
    fputs("\x10\x00\x00\x00\x00\x00\x00\x00{not json", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/.hidden.safetensors", dir);
    copy_file(fixture, p);
    snprintf(p, sizeof p, "%s/good.preview.png", dir);
    copy_file(fixture, p);
    /* links: one to a file inside (kept), one out of the folder (skipped) */
    snprintf(p, sizeof p, "%s/inside.safetensors", dir);
    snprintf(q, sizeof q, "%s/good.safetensors", dir);
    SDW_ASSERT(symlink(q, p) == 0);
    snprintf(p, sizeof p, "%s/outside.safetensors", dir);
    SDW_ASSERT(symlink(fixture, p) == 0);
    snprintf(p, sizeof p, "%s/looped", dir);
    SDW_ASSERT(symlink(dir, p) == 0); /* a link to a folder is not followed */

    sdw_embeddings *e = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_embeddings_load(dir, &e, &err), &err);
    struct {
        const char *name, *file, *skipped; /* skipped: a word of the reason, or NULL */
    } want[] = {
        {"broken", "broken.safetensors", "safetensors"},
        {"deep", "sub/deep.SAFETENSORS", NULL},
        {"good", "good.safetensors", NULL},
        {"good", "sub/good.safetensors", "same name"},
        {"inside", "inside.safetensors", NULL},
        {"old", "old.pt", "pickle"},
        {"outside", "outside.safetensors", "link"},
    };
    const int n = sdw_embeddings_count(e);
    for (int i = 0; i < n; i++) {
        sdw_embedding_info in = sdw_embeddings_info(e, i);
        fprintf(stderr, "  %s (%s): %d x %d %s\n", in.name, in.file, in.n_vectors, in.width,
                in.skipped ? in.skipped : "");
    }
    ASSERT_EQ_INT(n, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < n; i++) {
        sdw_embedding_info in = sdw_embeddings_info(e, i);
        ASSERT_TRUE(!strcmp(in.name, want[i].name) && !strcmp(in.file, want[i].file));
        if (want[i].skipped) {
            ASSERT_STR_CONTAINS(in.skipped, want[i].skipped);
            ASSERT_EQ_INT(in.n_vectors, 0);
        } else {
            ASSERT_TRUE(in.skipped == NULL && in.n_vectors == 2 && in.width == 32);
        }
    }
    ASSERT_EQ_INT(sdw_embeddings_find(e, "good"), 2);
    ASSERT_EQ_INT(sdw_embeddings_find(e, "old"), -1);
    ASSERT_EQ_INT(sdw_embeddings_find(e, "Good"), -1);
    ASSERT_EQ_INT(sdw_embeddings_offset(e, 4), 4); /* deep 0-1, good 2-3, inside 4-5 */
    sdw_embeddings_destroy(e);
    /* a folder that is not one fails the load, naming it */
    sdw_image_model *m = NULL;
    snprintf(p, sizeof p, "%s/nothere", dir);
    ASSERT_STATUS(load("tiny-sd15", p, &m, &err), SDW_E_NOT_FOUND);
    ASSERT_STR_CONTAINS(err.msg, "nothere");
    ASSERT_TRUE(m == NULL);
}

static bool first_step_only(void *user, int step, int total, const sdw_image *preview) {
    return false; /* cancel: the conditioning and one UNet call are what these tests look at */
}

/* Refusals through the model, and the model unchanged after them: an unknown embedding:NAME,
 * a clip_skip past the encoder, a weight that is not a number. */
static void test_refusals(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(load("tiny-sd15", emb_dir(), &m, &err), &err);
    sdw_request r = sdw_request_default();
    r.steps = 1;
    r.seed = 1;
    sdw_image a = {0}, b = {0};
    r.prompt = "a photo of embedding:nothere";
    sdw_status s1 = sdw_model_generate(m, &r, NULL, NULL, &a, NULL, &err);
    char msg1[sizeof err.msg];
    snprintf(msg1, sizeof msg1, "%s", err.msg);
    r.prompt = "a cat";
    r.clip_skip = 9;
    sdw_status s2 = sdw_model_generate(m, &r, NULL, NULL, &a, NULL, &err);
    char msg2[sizeof err.msg];
    snprintf(msg2, sizeof msg2, "%s", err.msg);
    r.clip_skip = 0;
    r.prompt = "a (cat:1.2.3)";
    r.prompt_syntax = true;
    sdw_status s3 = sdw_model_generate(m, &r, NULL, NULL, &a, NULL, &err);
    char msg3[sizeof err.msg];
    snprintf(msg3, sizeof msg3, "%s", err.msg);
    r.clip_skip = SDW_MAX_CLIP_SKIP + 1;
    sdw_request resolved;
    sdw_status s4 = sdw_request_resolve(&r, sdw_model_capabilities(m), &resolved, &err);
    r.clip_skip = 0;
    r.prompt = "a cat";
    r.prompt_syntax = false;
    sdw_status s5 = sdw_model_generate(m, &r, NULL, NULL, &a, NULL, &err);
    sdw_model_destroy(m);
    ASSERT_STATUS(s1, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(msg1, "unknown embedding 'nothere'");
    ASSERT_STATUS(s2, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(msg2, "clip_skip 9");
    ASSERT_STATUS(s3, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(msg3, "not a number");
    ASSERT_STATUS(s4, SDW_E_INVALID_ARG);
    ASSERT_OK(s5, &err);
    /* the same request on a fresh model gives the same image: nothing was left behind */
    ASSERT_OK(load("tiny-sd15", emb_dir(), &m, &err), &err);
    ASSERT_OK(sdw_model_generate(m, &r, NULL, NULL, &b, NULL, &err), &err);
    sdw_model_destroy(m);
    ASSERT_TRUE(a.width == b.width && !memcmp(a.data, b.data, (size_t)a.width * a.height * 3));
    sdw_image_free(&a);
    sdw_image_free(&b);
}

/* The tap of the first UNet call's context and the te.* states. */
typedef struct grab {
    float *ctx;
    int64_t B, L, D;
    float *cond, *uncond; /* te.{cond,uncond}.last_hidden_state */
    int64_t Lc, Lu;
} grab;

static void grab_tap(void *user, const char *name, const float *data, int n_dims,
                     const int64_t *shape) {
    grab *g = user;
    float **dst = NULL;
    size_t n = 1;
    for (int i = 0; i < n_dims; i++) n *= (size_t)shape[i];
    if (!strcmp(name, "step00.unet.encoder_hidden_states")) {
        dst = &g->ctx;
        g->B = shape[0], g->L = shape[1], g->D = shape[2];
    } else if (!strcmp(name, "te.cond.last_hidden_state")) {
        dst = &g->cond;
        g->Lc = shape[1];
    } else if (!strcmp(name, "te.uncond.last_hidden_state")) {
        dst = &g->uncond;
        g->Lu = shape[1];
    }
    if (!dst || *dst) return;
    *dst = malloc(n * sizeof(float));
    memcpy(*dst, data, n * sizeof(float));
}

/* A long prompt (2 windows) against a short negative (1): the UNet context is 154 rows, the
 * negative's window repeated (exact for cross-attention), the prompt's windows as encoded. */
static void test_long_prompt_context(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(load("tiny-sd15", NULL, &m, &err), &err);
    grab g = {0};
    sdw_diffusion_set_tap(m, grab_tap, &g);
    char prompt[1024] = "";
    for (int i = 0; i < 90; i++) strcat(prompt, "cat ");
    sdw_request r = sdw_request_default();
    r.prompt = prompt;
    r.negative_prompt = "(blurry:1.3)";
    r.prompt_syntax = true;
    r.steps = 2;
    r.seed = 3;
    sdw_image img = {0};
    sdw_result_info info;
    sdw_status s = sdw_model_generate(m, &r, first_step_only, NULL, &img, &info, &err);
    sdw_model_destroy(m);
    sdw_image_free(&img);
    ASSERT_STATUS(s, SDW_CANCELLED);
    ASSERT_TRUE(g.ctx && g.cond && g.uncond);
    const int64_t W = 77 * g.D; /* one window */
    ASSERT_EQ_INT(g.B, 2);
    ASSERT_EQ_INT(g.L, 154);
    ASSERT_EQ_INT(g.Lc, 154);
    ASSERT_EQ_INT(g.Lu, 77);
    /* batch [uncond, cond]: uncond's window twice, then the prompt's two windows */
    ASSERT_TRUE(!memcmp(g.ctx, g.uncond, sizeof(float) * W));
    ASSERT_TRUE(!memcmp(g.ctx + W, g.uncond, sizeof(float) * W));
    ASSERT_TRUE(!memcmp(g.ctx + 2 * W, g.cond, sizeof(float) * 2 * W));
    ASSERT_TRUE(!info.prompt_truncated);
    free(g.ctx);
    free(g.cond);
    free(g.uncond);
}

/* clip_skip through the pipeline: 1 is the model's own state (the golden still holds), 2
 * changes the context. */
static void test_clip_skip_context(void) {
    float *ctx[3] = {NULL, NULL, NULL};
    for (int k = 0; k < 3; k++) {
        sdw_image_model *m = NULL;
        sdw_error err = {0};
        ASSERT_OK(load("tiny-sd15", NULL, &m, &err), &err);
        grab g = {0};
        sdw_diffusion_set_tap(m, grab_tap, &g);
        sdw_request r = sdw_request_default();
        r.prompt = "a photo of a cat";
        r.clip_skip = k; /* 0, 1, 2 */
        r.steps = 2;
        r.seed = 3;
        sdw_image img = {0};
        sdw_status s = sdw_model_generate(m, &r, first_step_only, NULL, &img, NULL, &err);
        sdw_model_destroy(m);
        ASSERT_STATUS(s, SDW_CANCELLED);
        ctx[k] = g.ctx;
        free(g.cond);
        free(g.uncond);
    }
    const size_t n = 2 * 77 * 32;
    ASSERT_TRUE(!memcmp(ctx[0], ctx[1], n * sizeof(float)));
    ASSERT_TRUE(memcmp(ctx[0], ctx[2], n * sizeof(float)) != 0);
    for (int k = 0; k < 3; k++) free(ctx[k]);
}

/* The te.{cond}.input_ids / te2.cond.input_ids and the first UNet call's context and
 * text_embeds of an SDXL run. */
typedef struct xl_grab {
    int32_t ids[2][4 * 77];
    int n_ids[2];
    int64_t L, D;
    float *ctx, *embeds;
} xl_grab;

static void xl_tap(void *user, const char *name, const float *data, int n_dims,
                   const int64_t *shape) {
    xl_grab *g = user;
    const int k = !strcmp(name, "te.cond.input_ids") ? 0 : !strcmp(name, "te2.cond.input_ids") ? 1 : -1;
    if (k >= 0 && shape[1] <= 4 * 77) {
        g->n_ids[k] = (int)shape[1];
        for (int i = 0; i < g->n_ids[k]; i++) g->ids[k][i] = (int32_t)data[i];
    }
    size_t n = 1;
    for (int i = 0; i < n_dims; i++) n *= (size_t)shape[i];
    if (!strcmp(name, "step00.unet.encoder_hidden_states") && !g->ctx) {
        g->L = shape[1], g->D = shape[2];
        g->ctx = malloc(n * sizeof(float));
        memcpy(g->ctx, data, n * sizeof(float));
    }
}

/* SDXL with A1111's syntax and an SDXL embedding (clip_l and clip_g, 2 vectors each): both
 * encoders expand it, the prompt takes two windows in both, the context is 154 rows of both
 * encoders' states, the empty negative is zeros (force_zeros_for_empty_prompt, as A1111 too). */
static void test_sdxl_two_encoders(void) {
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/xl", sdw_test_tmpdir());
    SDW_ASSERT(mkdir(dir, 0700) == 0);
    snprintf(path, sizeof path, "%s/xlemb.safetensors", dir);
    sdw_st_writer *w;
    sdw_error err = {0};
    SDW_ASSERT(sdw_st_writer_create(path, &w, &err) == SDW_OK);
    sdw_st_writer_add(w, "clip_g", SDW_DTYPE_F32, 2, (int64_t[]){2, 32});
    sdw_st_writer_add(w, "clip_l", SDW_DTYPE_F32, 2, (int64_t[]){2, 32});
    SDW_ASSERT(sdw_st_writer_begin(w, &err) == SDW_OK);
    float v[64];
    for (int i = 0; i < 64; i++) v[i] = 0.01f * (float)i;
    SDW_ASSERT(sdw_st_writer_write(w, v, &err) == SDW_OK);
    SDW_ASSERT(sdw_st_writer_write(w, v, &err) == SDW_OK);
    SDW_ASSERT(sdw_st_writer_finish(w, &err) == SDW_OK);
    sdw_image_model *m = NULL;
    ASSERT_OK(load("tiny-sdxl", dir, &m, &err), &err);
    xl_grab g = {0};
    sdw_diffusion_set_tap(m, xl_tap, &g);
    char prompt[1024] = "xlemb,";
    for (int i = 0; i < 80; i++) strcat(prompt, " cat");
    sdw_request r = sdw_request_default();
    r.prompt = prompt;
    r.prompt_syntax = true;
    r.steps = 2;
    r.seed = 1;
    r.width = r.height = 64;
    sdw_image img = {0};
    sdw_status s = sdw_model_generate(m, &r, first_step_only, NULL, &img, NULL, &err);
    sdw_model_destroy(m);
    ASSERT_STATUS(s, SDW_CANCELLED);
    ASSERT_TRUE(g.ctx != NULL);
    ASSERT_EQ_INT(g.L, 154);
    ASSERT_EQ_INT(g.D, 64);
    for (int k = 0; k < 2; k++) {
        ASSERT_EQ_INT(g.n_ids[k], 154);
        ASSERT_EQ_INT(g.ids[k][1], 49408);
        ASSERT_EQ_INT(g.ids[k][2], 49409);
    }
    bool zeros = true; /* batch [uncond, cond]: the uncond half */
    for (int64_t i = 0; i < g.L * g.D; i++) zeros &= g.ctx[i] == 0.0f;
    bool cond_set = false;
    for (int64_t i = g.L * g.D; i < 2 * g.L * g.D; i++) cond_set |= g.ctx[i] != 0.0f;
    free(g.ctx);
    ASSERT_TRUE(zeros && cond_set);
}

int main(void) {
    RUN(test_golden_plain);
    RUN(test_golden_a1111);
    RUN(test_folder_scan);
    RUN(test_refusals);
    RUN(test_long_prompt_context);
    RUN(test_clip_skip_context);
    RUN(test_sdxl_two_encoders);
    return sdw_test_finish();
}
