/* On the fly or merged? The measurement behind nn/lora.h's choice, and a check of both paths.
 *
 * A LoRA costs either a merge per request set — every adapted layer's W + m·scale·up·down
 * (one sgemm each), repacked for the backend (and the base repacked again afterwards, or kept
 * twice) — or, on the fly, two thin products per adapted layer call (down: R·in, up: R·out per
 * row). This program generates a random rank-R kohya LoRA over the layers LoRAs usually adapt
 * (attention q/k/v/out, feed-forward, proj_in/proj_out; text encoder q/k/v/out, fc1, fc2),
 * writes it, loads and packs it as a request does, then times (a) merging and repacking every
 * adapted layer and (b) one UNet call (CFG batch 2) with and without the adapters, and reports
 * what one image costs each way.
 *
 * ctest runs it on tiny-sd15 (every merged layer's product = the base product plus its adapter,
 * within 1e-5: the two paths agree). The measurement: SDW_LORA_BENCH=DIR (a diffusers SD 1.x
 * folder, e.g. bench/bench.sh's ~/.cache/sdworker/sd15-random-f16) [SDW_LORA_RANK=32]
 * [SDW_LORA_SIZE=512] [SDW_LORA_PRECISION=f32|bf16]. Timings are printed, never asserted. */
#include "sdw_test.h"

#include "io/weights.h"
#include "models/lora.h"
#include "models/stable_diffusion/unet.h"
#include "nn/backend.h"
#include "nn/backends.h"
#include "nn/nn.h"
#include "text/clip_text.h"

#include <jansson.h>
#include <stdlib.h>

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static float frand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

/* The layers a LoRA trainer adapts by default (kohya's networks.lora: attention and MLP
 * linears, and the transformers' proj_in / proj_out). */
static bool adaptable(const char *name) {
    static const char *const ends[] = {".to_q", ".to_k", ".to_v", ".to_out.0", ".ff.net.0.proj",
                                       ".ff.net.2", ".proj_in", ".proj_out", ".q_proj", ".k_proj",
                                       ".v_proj", ".out_proj", ".fc1", ".fc2"};
    const size_t n = strlen(name);
    for (size_t i = 0; i < SDW_ARRAY_LEN(ends); i++) {
        const size_t m = strlen(ends[i]);
        if (n > m && !strcmp(name + n - m, ends[i])) return true;
    }
    return false;
}

/* ---- the random LoRA file ---- */

typedef struct tensor {
    char name[256];
    int nd;
    int64_t shape[2];
    float *data;
    size_t n;
} tensor;

static int add_modules(const sdw_weights *ws, const char *kohya, int rank, tensor *t, int n) {
    for (int i = 0; i < sdw_layers_count(ws); i++) {
        const sdw_layer_ref *r = sdw_layers_at(ws, i);
        if (r->conv && r->k != 1) continue;
        if (!adaptable(r->name)) continue;
        char key[256];
        snprintf(key, sizeof key, "%s_%s", kohya, r->name);
        for (char *c = key + strlen(kohya); *c; c++)
            if (*c == '.') *c = '_';
        const float s = 0.5f / sqrtf((float)r->in);
        tensor *d = &t[n++], *u = &t[n++], *a = &t[n++];
        *d = (tensor){.nd = 2, .shape = {rank, r->in}, .n = (size_t)rank * r->in};
        *u = (tensor){.nd = 2, .shape = {r->out, rank}, .n = (size_t)r->out * rank};
        *a = (tensor){.nd = 0, .n = 1};
        snprintf(d->name, sizeof d->name, "%s.lora_down.weight", key);
        snprintf(u->name, sizeof u->name, "%s.lora_up.weight", key);
        snprintf(a->name, sizeof a->name, "%s.alpha", key);
        d->data = malloc(sizeof(float) * d->n);
        u->data = malloc(sizeof(float) * u->n);
        a->data = malloc(sizeof(float));
        for (size_t k = 0; k < d->n; k++) d->data[k] = s * frand();
        for (size_t k = 0; k < u->n; k++) u->data[k] = 0.1f * frand();
        a->data[0] = (float)rank / 2;
    }
    return n;
}

static bool write_lora(const char *path, tensor *t, int n) {
    json_t *h = json_object();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *sh = json_array();
        for (int d = 0; d < t[i].nd; d++) json_array_append_new(sh, json_integer(t[i].shape[d]));
        json_object_set_new(h, t[i].name,
                            json_pack("{s:s,s:o,s:[II]}", "dtype", "F32", "shape", sh,
                                      "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + 4 * t[i].n)));
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

/* ---- merging: W + m·scale·up·down for every adapted layer, repacked ---- */

/* The stored weight of part r as f32 [out, in·k·k] in w. */
static void read_weight(sdw_weights *ws, const sdw_layer_ref *r, float *w) {
    char name[300];
    snprintf(name, sizeof name, "%s.weight", r->name);
    sdw_dtype dt;
    size_t n;
    const int64_t shape4[4] = {r->out, r->in, r->k, r->k}, shape2[2] = {r->out, r->in};
    const void *d = sdw_weights_raw(ws, name, r->conv ? 4 : 2, r->conv ? shape4 : shape2, &dt, &n,
                                    NULL);
    SDW_ASSERT(d);
    sdw_convert_to_f32(dt, d, w, n);
    sdw_weights_raw_done(ws, name);
}

typedef struct merged {
    const sdw_backend_op *base; /* the op it replaces */
    sdw_backend_op *op;         /* base weights + every adapted part's update */
} merged;

/* Merges f (multiplier m) into every op of ws it adapts; *out gets the new ops (destroy them),
 * returns their count. This is all a merged-weights design would do per request set. */
static int merge_all(sdw_weights *ws, const sdw_lora_part *part, const sdw_lora_file *f, float m,
                     sdw_precision prec, merged **out) {
    const int n = sdw_layers_count(ws);
    merged *mg = calloc((size_t)n, sizeof *mg);
    int n_mg = 0;
    for (int i = 0; i < n; i++) {
        const sdw_layer_ref *r = sdw_layers_at(ws, i);
        if (r->col0 != 0) continue; /* each op once, from its first part */
        bool any = false;
        for (int j = i; j < n && sdw_layers_at(ws, j)->op == r->op; j++)
            any |= sdw_lora_file_find(f, part, sdw_layers_at(ws, j)->name) != NULL;
        if (!any) continue;
        const int64_t in_k = (int64_t)r->in * (r->conv ? r->k * r->k : 1);
        float *w = malloc(sizeof(float) * (size_t)r->op_out * (size_t)in_k);
        float *b = NULL;
        for (int j = i; j < n && sdw_layers_at(ws, j)->op == r->op; j++) {
            const sdw_layer_ref *p = sdw_layers_at(ws, j);
            float *wp = w + (size_t)p->col0 * in_k;
            read_weight(ws, p, wp);
            char bn[300];
            snprintf(bn, sizeof bn, "%s.bias", p->name);
            if (sdw_weights_has(ws, bn)) {
                if (!b) b = calloc((size_t)r->op_out, sizeof(float));
                memcpy(b + p->col0, sdw_weights_f32(ws, bn, 1, (int64_t[]){p->out}, NULL),
                       sizeof(float) * (size_t)p->out);
            }
            const sdw_lora_module *mod = sdw_lora_file_find(f, part, p->name);
            if (mod) /* the fast merge: one sgemm, W += (m·scale) · up · down */
                sdw__sgemm('N', 'N', p->out, in_k, mod->rank, m * mod->scale, mod->up, mod->rank,
                           mod->down, in_k, 1.0f, wp, in_k);
        }
        sdw_backend *be = r->op->be;
        sdw_status s;
        if (r->conv) {
            const sdw_conv_geom g = {r->in, r->op_out, r->k, r->stride, r->pad, r->pad_end};
            s = sdw_backend_conv_create(be, prec, w, b, &g, &mg[n_mg].op, NULL);
        } else {
            s = sdw_backend_linear_create(be, prec, w, b, r->in, r->op_out, &mg[n_mg].op, NULL);
        }
        SDW_ASSERT(s == SDW_OK);
        mg[n_mg++].base = r->op;
        free(w);
        free(b);
    }
    *out = mg;
    return n_mg;
}

/* Each merged op's product against the base op's plus the attached adapter, on random rows
 * (linear and 1x1 layers: rows; the only kind the LoRA adapts). Returns the worst error. */
static double check_merged(const sdw_weights *ws, const merged *mg, int n_mg,
                           const sdw_lora_run *run) {
    double worst = 0;
    for (int i = 0; i < n_mg; i++) {
        const sdw_layer_ref *r = NULL;
        for (int j = 0; j < sdw_layers_count(ws) && !r; j++)
            if (sdw_layers_at(ws, j)->op == mg[i].base) r = sdw_layers_at(ws, j);
        if (r->conv) continue; /* the LoRA adapts linear layers only */
        const int M = 7;
        float *x = malloc(sizeof(float) * M * r->in), *y1 = malloc(sizeof(float) * M * r->op_out),
              *y2 = malloc(sizeof(float) * M * r->op_out);
        for (int k = 0; k < M * r->in; k++) x[k] = frand();
        sdw_backend_linear_forward(mg[i].op, sdw_rows(x, M), sdw_rows(y1, M), 0);
        const sdw_linear l = {.in = r->in, .out = r->op_out, .op = mg[i].base};
        const sdw_lora_run *prev = sdw_lora_attach(run);
        sdw_linear_forward(&l, sdw_rows(x, M), sdw_rows(y2, M), 0);
        sdw_lora_attach(prev);
        const double e = sdw_test_rel_err(y1, y2, (size_t)M * r->op_out);
        if (e > worst) worst = e;
        free(x), free(y1), free(y2);
    }
    return worst;
}

/* ---- the model parts ---- */

typedef struct parts {
    sdw_backend *be;
    sdw_st_file *fu, *ft;
    sdw_weights *wu, *wt;
    sdw_unet_config ucfg;
    sdw_unet *unet;
    sdw_clip_text *te;
} parts;

static sdw_status load_parts(const char *dir, sdw_precision prec, parts *p, sdw_error *err) {
    memset(p, 0, sizeof *p);
    char path[4096];
    sdw_clip_text_config tcfg;
    sdw_status s = sdw_backend_create(&p->be, err);
    if (!s) snprintf(path, sizeof path, "%s/unet/config.json", dir);
    if (!s) s = sdw_unet_config_load(path, &p->ucfg, err);
    if (!s) snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    if (!s) s = sdw_st_open(path, &p->fu, err);
    if (!s) snprintf(path, sizeof path, "%s/text_encoder/config.json", dir);
    if (!s) s = sdw_clip_text_config_from_json(path, &tcfg, err);
    if (!s) snprintf(path, sizeof path, "%s/text_encoder/model.safetensors", dir);
    if (!s) s = sdw_st_open(path, &p->ft, err);
    if (s) return s;
    p->wu = sdw_weights_create(p->fu, "", NULL, NULL);
    p->wt = sdw_weights_create(p->ft, "", NULL, NULL);
    sdw_weights *w[2] = {p->wu, p->wt};
    for (int i = 0; i < 2; i++) {
        sdw_weights_set_precision(w[i], prec);
        sdw_weights_set_backend(w[i], p->be);
    }
    s = sdw_unet_create(p->wu, &p->ucfg, &p->unet, err);
    if (!s) s = sdw_clip_text_create(p->wt, &tcfg, &p->te, err);
    return s;
}

static void unload_parts(parts *p) {
    sdw_unet_destroy(p->unet);
    sdw_clip_text_destroy(p->te);
    sdw_weights_destroy(p->wu);
    sdw_weights_destroy(p->wt);
    sdw_st_close(p->fu);
    sdw_st_close(p->ft);
    sdw_backend_destroy(p->be);
}

static const sdw_lora_part k_unet = {.component = "unet", .dotted = {"unet"},
                                     .kohya = {"lora_unet"}};
static const sdw_lora_part k_te = {.component = "text_encoder", .dotted = {"text_encoder"},
                                   .kohya = {"lora_te"}};

/* One UNet call at size px (latents px/8, CFG batch 2), seconds. */
static double unet_call(const parts *p, int px, const float *x, const float *ctx, float *out) {
    const float t[2] = {500, 500};
    const double t0 = sdw_time_now();
    sdw_unet_forward(p->unet, x, 2, px / 8, px / 8, t, ctx, 77, NULL, NULL, out);
    return sdw_time_now() - t0;
}

static void run(const char *dir, int rank, int px, sdw_precision prec, bool measure) {
    parts p;
    sdw_error err = {0};
    double t0 = sdw_time_now();
    sdw_status s = load_parts(dir, prec, &p, &err);
    if (s) {
        unload_parts(&p);
        ASSERT_OK(s, &err);
    }
    if (measure) printf("    loaded %s (%s) in %.1f s\n", dir, sdw_precision_str(prec), sdw_time_now() - t0);
    /* the LoRA: every adaptable layer of both parts */
    const int cap = 3 * (sdw_layers_count(p.wu) + sdw_layers_count(p.wt));
    tensor *t = calloc((size_t)cap, sizeof *t);
    int n = add_modules(p.wu, "lora_unet", rank, t, 0);
    n = add_modules(p.wt, "lora_te", rank, t, n);
    char path[4096];
    snprintf(path, sizeof path, "%s/bench-lora.safetensors", sdw_test_tmpdir());
    const bool wrote = write_lora(path, t, n);
    size_t lora_params = 0;
    for (int i = 0; i < n; i++) {
        lora_params += t[i].n;
        free(t[i].data);
    }
    free(t);
    ASSERT_TRUE(wrote);
    /* as a request does: read, match, pack (once per file; cached after) */
    sdw_lora_host *h = sdw_lora_host_create();
    sdw_lora_part pu = k_unet, pt = k_te;
    pu.ws = p.wu;
    pt.ws = p.wt;
    sdw_lora_host_add_part(h, &pu);
    sdw_lora_host_add_part(h, &pt);
    sdw_lora_file *f = NULL;
    sdw_lora_pack *pack = NULL;
    t0 = sdw_time_now();
    s = sdw_lora_file_load(path, &f, &err);
    const double t_read = sdw_time_now() - t0;
    if (!s) s = sdw_lora_host_pack(h, f, "bench", &pack, &err);
    const double t_pack = sdw_time_now() - t0 - t_read;
    const sdw_lora_use use = {pack, 0.8f};
    const sdw_lora_run lrun = {&use, 1};
    /* merging: every adapted op of both parts, W + ΔW, repacked */
    merged *mu = NULL, *mt = NULL;
    int nu = 0, nt = 0;
    double t_merge = 0;
    if (!s) {
        t0 = sdw_time_now();
        nu = merge_all(p.wu, &pu, f, 0.8f, prec, &mu);
        nt = merge_all(p.wt, &pt, f, 0.8f, prec, &mt);
        t_merge = sdw_time_now() - t0;
    }
    const double worst = s ? 1 : SDW_MAX(check_merged(p.wu, mu, nu, &lrun),
                                         check_merged(p.wt, mt, nt, &lrun));
    for (int i = 0; i < nu; i++) sdw_backend_op_destroy(mu[i].op);
    for (int i = 0; i < nt; i++) sdw_backend_op_destroy(mt[i].op);
    free(mu);
    free(mt);
    /* the per-step cost: UNet calls without and with the adapters, alternating, best of 3 */
    double base = 1e30, with = 1e30;
    if (!s && measure) {
        const size_t nx = (size_t)2 * (px / 8) * (px / 8) * 4;
        float *x = malloc(sizeof(float) * nx), *o = malloc(sizeof(float) * nx),
              *ctx = malloc(sizeof(float) * 2 * 77 * p.ucfg.cross_attention_dim);
        for (size_t i = 0; i < nx; i++) x[i] = frand();
        for (int i = 0; i < 2 * 77 * p.ucfg.cross_attention_dim; i++) ctx[i] = frand();
        unet_call(&p, px, x, ctx, o); /* warm-up: primitive caches */
        sdw_lora_attach(&lrun);
        unet_call(&p, px, x, ctx, o);
        sdw_lora_attach(NULL);
        for (int r = 0; r < 3; r++) { /* each call timed once (SDW_MIN evaluates twice) */
            const double tb = unet_call(&p, px, x, ctx, o);
            base = SDW_MIN(base, tb);
            sdw_lora_attach(&lrun);
            const double tw = unet_call(&p, px, x, ctx, o);
            with = SDW_MIN(with, tw);
            sdw_lora_attach(NULL);
        }
        free(x), free(o), free(ctx);
    }
    const int n_layers = s ? 0 : sdw_lora_pack_n_layers(pack);
    const double mb = s ? 0 : sdw_lora_pack_bytes(pack) / 1e6;
    sdw_lora_pack_destroy(pack);
    sdw_lora_file_destroy(f);
    sdw_lora_host_destroy(h);
    unload_parts(&p);
    ASSERT_OK(s, &err);
    printf("    rank %d LoRA: %zu parameters over %d ops (%d UNet + %d text encoder); merged "
           "products vs base + adapter: worst %.2g\n",
           rank, lora_params, n_layers, nu, nt, worst);
    ASSERT_TRUE(worst <= 1e-5 * (prec == SDW_PRECISION_BF16 ? 1000 : 1));
    if (!measure) return;
    const double step = with - base;
    printf("    on the fly: read %.2f s + pack %.2f s (%.0f MB), once per file; per UNet call "
           "%.3f s -> %.3f s (+%.3f s, +%.1f%%)\n",
           t_read, t_pack, mb, base, with, step, 100 * step / base);
    printf("    merged:     %.2f s to merge and repack every adapted op (and as much again to "
           "put the base back, or the memory of both)\n",
           t_merge);
    const int steps[3] = {4, 20, 30};
    for (int i = 0; i < 3; i++)
        printf("    one %dx%d image of %d steps: on the fly +%.2f s (first request +%.2f s), "
               "merged +%.2f s (+%.2f s with the restore) -> %s\n",
               px, px, steps[i], steps[i] * step, steps[i] * step + t_read + t_pack, t_merge,
               2 * t_merge, steps[i] * step < t_merge ? "on the fly" : "merged");
}

static void test_tiny(void) {
    run(sdw_test_path("models/tiny-sd15"), 4, 64, SDW_PRECISION_F32, false);
}

static void test_measure(void) {
    const char *dir = getenv("SDW_LORA_BENCH");
    const char *r = getenv("SDW_LORA_RANK"), *px = getenv("SDW_LORA_SIZE"),
               *pr = getenv("SDW_LORA_PRECISION");
    sdw_precision prec = SDW_PRECISION_F32;
    if (pr && sdw_precision_parse(pr, &prec)) prec = SDW_PRECISION_F32;
    run(dir, r ? atoi(r) : 32, px ? atoi(px) : 512, prec, true);
}

int main(void) {
    RUN(test_tiny);
    if (getenv("SDW_LORA_BENCH")) RUN(test_measure); /* a measurement, asked for by name */
    return sdw_test_finish();
}
