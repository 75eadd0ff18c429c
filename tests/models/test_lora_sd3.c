/* LoRA on Stable Diffusion 3 (tiny-sd3). No reference LoRA golden exists for SD3, so the
 * reference's own definition is checked instead: a random diffusers / PEFT LoRA (transformer.*
 * on every kind of linear the MMDiT has, its patch convolution, and text_encoder.*,
 * text_encoder_2.*, text_encoder_3.*; alpha 2 of rank 4; multiplier 0.8) applied on the fly
 * gives the image of the same folder with the LoRA merged into its weights (W + m·alpha/rank·
 * B·A, diffusers' fuse_lora, by sdw_lora_merge). The same LoRA in kohya's spelling (sd-scripts'
 * networks/lora_sd3.py: lora_unet_ + Stability's MMDiT names, fused qkv rows, adaLN_modulation.1
 * with (shift, scale) halves; lora_te1/2/3) gives the image of its diffusers twin; base, LoRA,
 * base gives the base image bit for bit; a LoRA for another shape is refused naming the module;
 * `sdw generate --lora` gives the library's image. */
#include "sdw_test.h"

#include "io/safetensors.h"
#include "models/lora.h"
#include "models/sd3/sd3_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RANK 4
#define ALPHA 2.0f
#define MULT 0.8f

static const char *const k_comp[4] = {"transformer", "text_encoder", "text_encoder_2",
                                      "text_encoder_3"};
static const char *const k_file[4] = {"diffusion_pytorch_model.safetensors", "model.safetensors",
                                      "model.safetensors", "model.safetensors"};

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float *rnd(size_t n, float scale) {
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) {
        g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
        p[i] = scale * (float)((double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
    }
    return p;
}

/* ---- the diffusers / PEFT LoRA and the merged folder ---- */

/* One module: a layer of a component, its shape read from the fixture. */
typedef struct module {
    int comp;
    const char *layer;
    int out, in, k; /* k: kernel (1 for linear layers) */
    float *down, *up; /* [RANK, in·k·k], [out, RANK] */
} module;

static module g_mod[] = {
    {.comp = 0, .layer = "transformer_blocks.0.attn.to_q"},
    {.comp = 0, .layer = "transformer_blocks.0.attn.to_k"},
    {.comp = 0, .layer = "transformer_blocks.0.attn.to_v"},
    {.comp = 0, .layer = "transformer_blocks.0.attn.to_out.0"},
    {.comp = 0, .layer = "transformer_blocks.0.attn.add_q_proj"},
    {.comp = 0, .layer = "transformer_blocks.0.attn.add_k_proj"},
    {.comp = 0, .layer = "transformer_blocks.0.attn.add_v_proj"},
    {.comp = 0, .layer = "transformer_blocks.0.attn.to_add_out"},
    {.comp = 0, .layer = "transformer_blocks.0.ff.net.0.proj"},
    {.comp = 0, .layer = "transformer_blocks.0.ff.net.2"},
    {.comp = 0, .layer = "transformer_blocks.0.ff_context.net.0.proj"},
    {.comp = 0, .layer = "transformer_blocks.0.ff_context.net.2"},
    {.comp = 0, .layer = "transformer_blocks.0.norm1.linear"},
    {.comp = 0, .layer = "transformer_blocks.0.norm1_context.linear"},
    {.comp = 0, .layer = "transformer_blocks.1.attn.to_v"},
    /* the last block's context norm and norm_out: bound as (scale, shift) halves */
    {.comp = 0, .layer = "transformer_blocks.1.norm1_context.linear"},
    {.comp = 0, .layer = "norm_out.linear"},
    {.comp = 0, .layer = "proj_out"},
    {.comp = 0, .layer = "context_embedder"},
    {.comp = 0, .layer = "time_text_embed.timestep_embedder.linear_1"},
    {.comp = 0, .layer = "time_text_embed.text_embedder.linear_2"},
    {.comp = 0, .layer = "pos_embed.proj"}, /* the 2x2 patch convolution */
    {.comp = 1, .layer = "text_model.encoder.layers.0.self_attn.q_proj"},
    {.comp = 1, .layer = "text_model.encoder.layers.1.mlp.fc1"},
    {.comp = 2, .layer = "text_model.encoder.layers.0.self_attn.out_proj"},
    {.comp = 3, .layer = "encoder.block.0.layer.0.SelfAttention.q"},
    {.comp = 3, .layer = "encoder.block.1.layer.1.DenseReluDense.wi_0"},
};
#define N_MOD (int)(sizeof g_mod / sizeof *g_mod)
/* the ops they adapt: to_q|k|v, add_q|k|v_proj and norm_out's halves are one product each, the
 * rest one each (block 0: 10, block 1: 2, top level 6, encoders 5) */
#define N_OPS 23

static const char *fixture_file(int comp) {
    return sdw_test_path("models/tiny-sd3/%s/%s", k_comp[comp], k_file[comp]);
}

static bool make_modules(void) {
    for (int i = 0; i < N_MOD; i++) {
        module *m = &g_mod[i];
        sdw_st_file *f = NULL;
        if (sdw_st_open(fixture_file(m->comp), &f, NULL) != SDW_OK) return false;
        char name[256];
        snprintf(name, sizeof name, "%s.weight", m->layer);
        const sdw_st_tensor *t = sdw_st_find(f, name);
        if (t) {
            m->out = (int)t->shape[0];
            m->in = (int)t->shape[1];
            m->k = t->n_dims == 4 ? (int)t->shape[2] : 1;
        }
        sdw_st_close(f);
        if (!t) return false;
        const int in_k = m->in * m->k * m->k;
        m->down = rnd((size_t)RANK * in_k, 1.0f / sqrtf((float)in_k));
        m->up = rnd((size_t)m->out * RANK, 0.4f);
    }
    return true;
}

static void free_modules(void) {
    for (int i = 0; i < N_MOD; i++) {
        free(g_mod[i].down), free(g_mod[i].up);
        g_mod[i].down = g_mod[i].up = NULL;
    }
}

static bool write_diffusers(const char *path) {
    sdw_st_writer *w = NULL;
    if (sdw_st_writer_create(path, &w, NULL) != SDW_OK) return false;
    for (int i = 0; i < N_MOD; i++) {
        const module *m = &g_mod[i];
        char a[256], b[256], al[256];
        snprintf(a, sizeof a, "%s.%s.lora_A.weight", k_comp[m->comp], m->layer);
        snprintf(b, sizeof b, "%s.%s.lora_B.weight", k_comp[m->comp], m->layer);
        snprintf(al, sizeof al, "%s.%s.alpha", k_comp[m->comp], m->layer);
        const bool conv = m->k > 1;
        sdw_st_writer_add(w, a, SDW_DTYPE_F32, conv ? 4 : 2,
                          (int64_t[]){RANK, m->in, m->k, m->k});
        sdw_st_writer_add(w, b, SDW_DTYPE_F32, conv ? 4 : 2, (int64_t[]){m->out, RANK, 1, 1});
        sdw_st_writer_add(w, al, SDW_DTYPE_F32, 0, NULL);
    }
    sdw_status s = sdw_st_writer_begin(w, NULL);
    const float alpha = ALPHA;
    for (int i = 0; i < N_MOD && s == SDW_OK; i++)
        if ((s = sdw_st_writer_write(w, g_mod[i].down, NULL)) == SDW_OK &&
            (s = sdw_st_writer_write(w, g_mod[i].up, NULL)) == SDW_OK)
            s = sdw_st_writer_write(w, &alpha, NULL);
    return sdw_st_writer_finish(w, NULL) == SDW_OK && s == SDW_OK;
}

/* dir/<comp>/<file>: the fixture's float tensors (f32) with every module of comp merged in. */
static bool write_merged(const char *dir, int comp) {
    sdw_st_file *f = NULL;
    if (sdw_st_open(fixture_file(comp), &f, NULL) != SDW_OK) return false;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", dir, k_comp[comp], k_file[comp]);
    sdw_st_writer *w = NULL;
    sdw_status s = sdw_st_writer_create(path, &w, NULL);
    for (int i = 0; i < sdw_st_count(f) && s == SDW_OK; i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        if (sdw_dtype_is_float(t->dtype))
            sdw_st_writer_add(w, t->name, SDW_DTYPE_F32, t->n_dims, t->shape);
    }
    if (s == SDW_OK) s = sdw_st_writer_begin(w, NULL);
    for (int i = 0; i < sdw_st_count(f) && s == SDW_OK; i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        if (!sdw_dtype_is_float(t->dtype)) continue; /* position_ids: nobody reads them */
        float *v = malloc(sizeof(float) * (t->n_elems ? t->n_elems : 1));
        sdw_convert_to_f32(t->dtype, t->data, v, t->n_elems);
        for (int j = 0; j < N_MOD; j++) {
            const module *m = &g_mod[j];
            char name[256];
            snprintf(name, sizeof name, "%s.weight", m->layer);
            if (m->comp == comp && !strcmp(name, t->name))
                sdw_lora_merge(v, m->out, (int64_t)m->in * m->k * m->k, m->up, m->down, RANK,
                               MULT * ALPHA / RANK);
        }
        s = sdw_st_writer_write(w, v, NULL);
        free(v);
    }
    s = sdw_st_writer_finish(w, NULL) || s;
    sdw_st_close(f);
    return s == SDW_OK;
}

/* dir: tiny-sd3 with its transformer and text encoders merged, the rest linked. */
static bool make_merged_folder(const char *dir) {
    static const char *const linked[] = {"model_index.json", "scheduler", "tokenizer",
                                         "tokenizer_2", "tokenizer_3", "vae"};
    char a[4096], b[4096];
    if (mkdir(dir, 0755)) return false;
    for (size_t i = 0; i < SDW_ARRAY_LEN(linked); i++) {
        snprintf(b, sizeof b, "%s/%s", dir, linked[i]);
        if (symlink(sdw_test_path("models/tiny-sd3/%s", linked[i]), b)) return false;
    }
    for (int c = 0; c < 4; c++) {
        snprintf(a, sizeof a, "%s/%s", dir, k_comp[c]);
        snprintf(b, sizeof b, "%s/%s/config.json", dir, k_comp[c]);
        if (mkdir(a, 0755) ||
            symlink(sdw_test_path("models/tiny-sd3/%s/config.json", k_comp[c]), b) ||
            !write_merged(dir, c))
            return false;
    }
    return true;
}

/* ---- generating ---- */

static sdw_status gen(sdw_image_model *m, const char *lora, sdw_image *img, sdw_error *err) {
    sdw_request r = sdw_request_default();
    r.prompt = "a photo of a cat";
    r.width = r.height = 64;
    r.steps = 2;
    r.guidance = 5.0f;
    r.seed = 3;
    const sdw_lora_ref l = {.path = lora, .multiplier = MULT};
    r.loras = lora ? &l : NULL;
    r.n_loras = lora != NULL;
    return sdw_model_generate(m, &r, NULL, NULL, img, NULL, err);
}

static int max_diff(const sdw_image *a, const sdw_image *b) {
    if (a->width != b->width || a->height != b->height || a->channels != b->channels) return 256;
    int d = 0;
    for (size_t i = 0; i < (size_t)a->width * a->height * a->channels; i++)
        if (abs((int)a->data[i] - (int)b->data[i]) > d) d = abs((int)a->data[i] - (int)b->data[i]);
    return d;
}

static sdw_status load(const char *path, sdw_image_model **m, sdw_error *err) {
    sdw_load_options o = sdw_load_options_default();
    o.precision = SDW_PRECISION_F32; /* the comparison is of the algebra, not of bf16 rounding */
    return sdw_model_load(path, &o, m, err);
}

/* On the fly = merged; every module found its layer; base, LoRA, base; the CLI. */
static void test_on_the_fly_is_merged(void) {
    char lora[4096], merged[4096], png[4096], out[16384];
    snprintf(lora, sizeof lora, "%s/sd3-diffusers.safetensors", sdw_test_tmpdir());
    snprintf(merged, sizeof merged, "%s/tiny-sd3-merged", sdw_test_tmpdir());
    snprintf(png, sizeof png, "%s/sd3-lora-cli.png", sdw_test_tmpdir());
    ASSERT_TRUE(make_modules());
    ASSERT_TRUE(write_diffusers(lora));
    ASSERT_TRUE(make_merged_folder(merged));
    sdw_error err = {0};
    sdw_image_model *m = NULL, *mm = NULL;
    ASSERT_OK(load(sdw_test_path("models/tiny-sd3"), &m, &err), &err);
    sdw_status s = load(merged, &mm, &err);
    const bool caps = sdw_model_capabilities(m)->lora;
    /* the modules each adapt their layer (none skipped as unknown) */
    int n_ops = -1;
    sdw_lora_file *f = NULL;
    sdw_lora_pack *pack = NULL;
    if (!s) s = sdw_lora_file_load(lora, &f, &err);
    if (!s) s = sdw_lora_host_pack(((sd3_model *)m)->d.lora, f, lora, &pack, &err);
    if (!s) n_ops = sdw_lora_pack_n_layers(pack);
    sdw_lora_pack_destroy(pack);
    sdw_lora_file_destroy(f);
    sdw_image base = {0}, fly = {0}, fused = {0}, again = {0};
    if (!s) s = gen(m, NULL, &base, &err);
    if (!s) s = gen(m, lora, &fly, &err);
    if (!s) s = gen(mm, NULL, &fused, &err);
    if (!s) s = gen(m, NULL, &again, &err);
    sdw_model_destroy(m);
    sdw_model_destroy(mm);
    free_modules();
    int rc = -1, d_cli = 256;
    if (!s) {
        rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' --precision f32 --lora '%s:%g' -p 'a photo of a "
                              "cat' -W 64 -H 64 --steps 2 --cfg-scale 5 -s 3 -o '%s'",
                              sdw_test_path("models/tiny-sd3"), lora, (double)MULT, png);
        if (rc) fprintf(stderr, "%s\n", out);
        d_cli = sdw_test_image_max_diff(&fly, png);
    }
    const int d_merged = max_diff(&fly, &fused), d_lora = max_diff(&base, &fly),
              d_base = max_diff(&base, &again);
    sdw_image_free(&base), sdw_image_free(&fly), sdw_image_free(&fused), sdw_image_free(&again);
    ASSERT_OK(s, &err);
    printf("    %d ops adapted; on the fly vs merged: %d levels; LoRA vs base: %d; base again: "
           "%d; CLI vs library: %d\n",
           n_ops, d_merged, d_lora, d_base, d_cli);
    ASSERT_TRUE(caps);
    ASSERT_EQ_INT(n_ops, N_OPS);
    ASSERT_TRUE(d_merged <= 1);
    ASSERT_TRUE(d_lora >= 8);
    ASSERT_EQ_INT(d_base, 0);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_EQ_INT(d_cli, 0);
}

/* ---- kohya's spelling ---- */

/* A kohya module and the diffusers layers its up rows go to: part p takes the rows of
 * segments seg[p][..] (row0, rows) in order. */
typedef struct kmodule {
    const char *kohya;
    int in, out, k;
    const char *parts[3];
    int seg[3][2][2];
} kmodule;

static const kmodule k_kohya[] = {
    {"lora_unet_joint_blocks_0_x_block_attn_qkv", 32, 96, 1,
     {"transformer.transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.0.attn.to_k",
      "transformer.transformer_blocks.0.attn.to_v"},
     {{{0, 32}}, {{32, 32}}, {{64, 32}}}},
    {"lora_unet_joint_blocks_0_context_block_attn_qkv", 32, 96, 1,
     {"transformer.transformer_blocks.0.attn.add_q_proj",
      "transformer.transformer_blocks.0.attn.add_k_proj",
      "transformer.transformer_blocks.0.attn.add_v_proj"},
     {{{0, 32}}, {{32, 32}}, {{64, 32}}}},
    {"lora_unet_joint_blocks_0_context_block_mlp_fc2", 128, 32, 1,
     {"transformer.transformer_blocks.0.ff_context.net.2"}, {{{0, 32}}}},
    {"lora_unet_joint_blocks_0_x_block_adaLN_modulation_1", 32, 192, 1,
     {"transformer.transformer_blocks.0.norm1.linear"}, {{{0, 192}}}},
    /* (shift, scale) in Stability's order: diffusers' (scale, shift) is the halves swapped */
    {"lora_unet_joint_blocks_1_context_block_adaLN_modulation_1", 32, 64, 1,
     {"transformer.transformer_blocks.1.norm1_context.linear"}, {{{32, 32}, {0, 32}}}},
    {"lora_unet_final_layer_adaLN_modulation_1", 32, 64, 1,
     {"transformer.norm_out.linear"}, {{{32, 32}, {0, 32}}}},
    {"lora_unet_final_layer_linear", 32, 64, 1, {"transformer.proj_out"}, {{{0, 64}}}},
    {"lora_unet_x_embedder_proj", 16, 32, 2, {"transformer.pos_embed.proj"}, {{{0, 32}}}},
    {"lora_unet_t_embedder_mlp_0", 256, 32, 1,
     {"transformer.time_text_embed.timestep_embedder.linear_1"}, {{{0, 32}}}},
    {"lora_unet_y_embedder_mlp_2", 32, 32, 1,
     {"transformer.time_text_embed.text_embedder.linear_2"}, {{{0, 32}}}},
    {"lora_unet_context_embedder", 64, 32, 1, {"transformer.context_embedder"}, {{{0, 32}}}},
    {"lora_te1_text_model_encoder_layers_0_self_attn_v_proj", 32, 32, 1,
     {"text_encoder.text_model.encoder.layers.0.self_attn.v_proj"}, {{{0, 32}}}},
    {"lora_te2_text_model_encoder_layers_1_mlp_fc2", 37, 32, 1,
     {"text_encoder_2.text_model.encoder.layers.1.mlp.fc2"}, {{{0, 32}}}},
    {"lora_te3_encoder_block_0_layer_0_SelfAttention_k", 64, 64, 1,
     {"text_encoder_3.encoder.block.0.layer.0.SelfAttention.k"}, {{{0, 64}}}},
};
#define N_KOHYA (int)(sizeof k_kohya / sizeof *k_kohya)

/* The kohya file and its diffusers twin (lora_B = the part's up rows · alpha/rank). */
static bool write_kohya_pair(const char *kohya_path, const char *diffusers_path) {
    sdw_st_writer *wk = NULL, *wd = NULL;
    if (sdw_st_writer_create(kohya_path, &wk, NULL) ||
        sdw_st_writer_create(diffusers_path, &wd, NULL)) {
        sdw_st_writer_finish(wk, NULL);
        return false;
    }
    float *down[N_KOHYA], *up[N_KOHYA];
    for (int i = 0; i < N_KOHYA; i++) {
        const kmodule *m = &k_kohya[i];
        const int in_k = m->in * m->k * m->k;
        const bool conv = m->k > 1;
        down[i] = rnd((size_t)RANK * in_k, 1.0f / sqrtf((float)in_k));
        up[i] = rnd((size_t)m->out * RANK, 0.4f);
        char n[256];
        snprintf(n, sizeof n, "%s.lora_down.weight", m->kohya);
        sdw_st_writer_add(wk, n, SDW_DTYPE_F32, conv ? 4 : 2, (int64_t[]){RANK, m->in, m->k, m->k});
        snprintf(n, sizeof n, "%s.lora_up.weight", m->kohya);
        sdw_st_writer_add(wk, n, SDW_DTYPE_F32, conv ? 4 : 2, (int64_t[]){m->out, RANK, 1, 1});
        snprintf(n, sizeof n, "%s.alpha", m->kohya);
        sdw_st_writer_add(wk, n, SDW_DTYPE_F32, 0, NULL);
        for (int p = 0; p < 3 && m->parts[p]; p++) {
            const int rows = m->seg[p][0][1] + m->seg[p][1][1];
            snprintf(n, sizeof n, "%s.lora_A.weight", m->parts[p]);
            sdw_st_writer_add(wd, n, SDW_DTYPE_F32, conv ? 4 : 2,
                              (int64_t[]){RANK, m->in, m->k, m->k});
            snprintf(n, sizeof n, "%s.lora_B.weight", m->parts[p]);
            sdw_st_writer_add(wd, n, SDW_DTYPE_F32, conv ? 4 : 2, (int64_t[]){rows, RANK, 1, 1});
        }
    }
    sdw_status s = sdw_st_writer_begin(wk, NULL);
    if (!s) s = sdw_st_writer_begin(wd, NULL);
    const float alpha = ALPHA;
    for (int i = 0; i < N_KOHYA && !s; i++) {
        const kmodule *m = &k_kohya[i];
        if ((s = sdw_st_writer_write(wk, down[i], NULL)) ||
            (s = sdw_st_writer_write(wk, up[i], NULL)) ||
            (s = sdw_st_writer_write(wk, &alpha, NULL)))
            break;
        for (int p = 0; p < 3 && m->parts[p] && !s; p++) {
            float *b = malloc(sizeof(float) * (size_t)m->out * RANK);
            size_t o = 0;
            for (int g = 0; g < 2; g++)
                for (int r = 0; r < m->seg[p][g][1] * RANK; r++)
                    b[o++] = ALPHA / RANK * up[i][(size_t)m->seg[p][g][0] * RANK + r];
            if (!(s = sdw_st_writer_write(wd, down[i], NULL))) s = sdw_st_writer_write(wd, b, NULL);
            free(b);
        }
    }
    for (int i = 0; i < N_KOHYA; i++)
        free(down[i]), free(up[i]);
    const sdw_status sk = sdw_st_writer_finish(wk, NULL), sd = sdw_st_writer_finish(wd, NULL);
    return !s && !sk && !sd;
}

static void test_kohya_names(void) {
    char kohya[4096], diffusers[4096];
    snprintf(kohya, sizeof kohya, "%s/sd3-kohya.safetensors", sdw_test_tmpdir());
    snprintf(diffusers, sizeof diffusers, "%s/sd3-kohya-twin.safetensors", sdw_test_tmpdir());
    ASSERT_TRUE(write_kohya_pair(kohya, diffusers));
    sdw_error err = {0};
    sdw_image_model *m = NULL;
    ASSERT_OK(load(sdw_test_path("models/tiny-sd3"), &m, &err), &err);
    int n_ops = -1;
    sdw_lora_file *f = NULL;
    sdw_lora_pack *pack = NULL;
    sdw_status s = sdw_lora_file_load(kohya, &f, &err);
    if (!s) s = sdw_lora_host_pack(((sd3_model *)m)->d.lora, f, kohya, &pack, &err);
    if (!s) n_ops = sdw_lora_pack_n_layers(pack);
    sdw_lora_pack_destroy(pack);
    sdw_lora_file_destroy(f);
    sdw_image base = {0}, a = {0}, b = {0};
    if (!s) s = gen(m, NULL, &base, &err);
    if (!s) s = gen(m, kohya, &a, &err);
    if (!s) s = gen(m, diffusers, &b, &err);
    sdw_model_destroy(m);
    const int d_formats = max_diff(&a, &b), d_lora = max_diff(&base, &a);
    sdw_image_free(&base), sdw_image_free(&a), sdw_image_free(&b);
    ASSERT_OK(s, &err);
    printf("    kohya: %d ops adapted; kohya vs diffusers: %d levels; LoRA vs base: %d\n", n_ops,
           d_formats, d_lora);
    ASSERT_EQ_INT(n_ops, N_KOHYA);
    ASSERT_TRUE(d_formats <= 1);
    ASSERT_TRUE(d_lora >= 8);
}

/* A LoRA for another shape fails the request naming the module; the model is untouched. */
static void test_wrong_shape(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/sd3-wrong.safetensors", sdw_test_tmpdir());
    sdw_st_writer *w = NULL;
    ASSERT_OK(sdw_st_writer_create(path, &w, NULL), NULL);
    sdw_st_writer_add(w, "transformer.transformer_blocks.0.attn.to_out.0.lora_A.weight",
                      SDW_DTYPE_F32, 2, (int64_t[]){RANK, 48});
    sdw_st_writer_add(w, "transformer.transformer_blocks.0.attn.to_out.0.lora_B.weight",
                      SDW_DTYPE_F32, 2, (int64_t[]){32, RANK});
    float *a = rnd(RANK * 48, 0.1f), *b = rnd(32 * RANK, 0.1f);
    sdw_status s = sdw_st_writer_begin(w, NULL);
    if (!s) s = sdw_st_writer_write(w, a, NULL);
    if (!s) s = sdw_st_writer_write(w, b, NULL);
    free(a), free(b);
    ASSERT_OK(sdw_st_writer_finish(w, NULL), NULL);
    ASSERT_OK(s, NULL);
    sdw_error err = {0};
    sdw_image_model *m = NULL;
    ASSERT_OK(load(sdw_test_path("models/tiny-sd3"), &m, &err), &err);
    sdw_image base = {0}, img = {0}, again = {0};
    s = gen(m, NULL, &base, &err);
    const sdw_status bad = s ? s : gen(m, path, &img, &err);
    char msg[sizeof err.msg];
    snprintf(msg, sizeof msg, "%s", err.msg);
    if (!s) s = gen(m, NULL, &again, &err);
    sdw_model_destroy(m);
    const int d_base = max_diff(&base, &again);
    sdw_image_free(&base), sdw_image_free(&img), sdw_image_free(&again);
    ASSERT_OK(s, &err);
    printf("    %s\n", msg);
    ASSERT_EQ_INT(bad, SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(msg, "transformer.transformer_blocks.0.attn.to_out.0");
    ASSERT_STR_CONTAINS(msg, "another model");
    ASSERT_EQ_INT(d_base, 0);
}

int main(void) {
    RUN(test_on_the_fly_is_merged);
    RUN(test_kohya_names);
    RUN(test_wrong_shape);
    return sdw_test_finish();
}
