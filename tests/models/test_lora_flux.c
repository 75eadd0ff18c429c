/* LoRA on FLUX (tiny-flux-schnell): one random LoRA written twice, in kohya's BFL spelling
 * (lora_unet_double_blocks_0_img_attn_qkv: q, k and v rows in one module; single_blocks_0_linear1:
 * q, k, v and the MLP input; lora_te1_ for CLIP-L; alpha 2 of rank 4) and in diffusers / PEFT's
 * (transformer.transformer_blocks.0.attn.to_q ... with lora_B = up · alpha/rank), gives the
 * same image on the diffusers folder and on the BFL single file, different from the base
 * image; base, LoRA, base gives the base image bit for bit. No reference LoRA golden exists for
 * FLUX: the diffusers spelling maps one module to one layer by name, so the fused BFL modules
 * are checked against it. */
#include "sdw_test.h"

#include <jansson.h>
#include <stdlib.h>

typedef struct st_out {
    const char *name;
    int nd;
    int64_t shape[2];
    float *data;
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

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float *rnd(size_t n, float scale) {
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) {
        g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
        p[i] = scale * (float)((double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
    }
    return p;
}

/* rows [r0, r0 + n) of up [*, rank], times s (a new buffer). */
static float *rows(const float *up, int r0, int n, int rank, float s) {
    float *p = malloc(sizeof(float) * (size_t)n * rank);
    for (int i = 0; i < n * rank; i++) p[i] = s * up[(size_t)r0 * rank + i];
    return p;
}

/* The kohya-BFL file and its diffusers twin. */
typedef struct module {
    const char *kohya;           /* lora_unet_<BFL name> */
    int in, out;                 /* the fused module's shape */
    const char *parts[4];        /* diffusers layers (transformer.*), rows in order */
    int part_rows[4];
} module;

static const module k_modules[] = {
    {"lora_unet_double_blocks_0_img_attn_qkv", 32, 96,
     {"transformer.transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.0.attn.to_k",
      "transformer.transformer_blocks.0.attn.to_v"}, {32, 32, 32}},
    {"lora_unet_double_blocks_0_txt_attn_proj", 32, 32,
     {"transformer.transformer_blocks.0.attn.to_add_out"}, {32}},
    {"lora_unet_double_blocks_0_img_mlp_0", 32, 128,
     {"transformer.transformer_blocks.0.ff.net.0.proj"}, {128}},
    {"lora_unet_single_blocks_0_linear1", 32, 224,
     {"transformer.single_transformer_blocks.0.attn.to_q",
      "transformer.single_transformer_blocks.0.attn.to_k",
      "transformer.single_transformer_blocks.0.attn.to_v",
      "transformer.single_transformer_blocks.0.proj_mlp"}, {32, 32, 32, 128}},
    {"lora_unet_single_blocks_1_linear2", 160, 32,
     {"transformer.single_transformer_blocks.1.proj_out"}, {32}},
    {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 32, 32,
     {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj"}, {32}},
};
#define N_MOD (int)(sizeof k_modules / sizeof *k_modules)

static bool write_loras(const char *kohya_path, const char *diffusers_path) {
    static char kd[N_MOD][3][160];
    st_out k[3 * N_MOD], d[2 * 4 * N_MOD];
    int nk = 0, nd = 0;
    char names[2 * 4 * N_MOD][160];
    float alpha = 2.0f;
    const int rank = 4;
    for (int i = 0; i < N_MOD; i++) {
        const module *m = &k_modules[i];
        float *down = rnd((size_t)rank * m->in, 0.5f), *up = rnd((size_t)m->out * rank, 0.5f);
        snprintf(kd[i][0], 160, "%s.lora_down.weight", m->kohya);
        snprintf(kd[i][1], 160, "%s.lora_up.weight", m->kohya);
        snprintf(kd[i][2], 160, "%s.alpha", m->kohya);
        k[nk++] = (st_out){kd[i][0], 2, {rank, m->in}, down, (size_t)rank * m->in};
        k[nk++] = (st_out){kd[i][1], 2, {m->out, rank}, up, (size_t)m->out * rank};
        k[nk++] = (st_out){kd[i][2], 0, {0}, &alpha, 1};
        for (int p = 0, r0 = 0; p < 4 && m->parts[p]; r0 += m->part_rows[p], p++) {
            snprintf(names[nd], 160, "%s.lora_A.weight", m->parts[p]);
            d[nd] = (st_out){names[nd], 2, {rank, m->in}, down, (size_t)rank * m->in};
            nd++;
            snprintf(names[nd], 160, "%s.lora_B.weight", m->parts[p]);
            d[nd] = (st_out){names[nd], 2, {m->part_rows[p], rank},
                             rows(up, r0, m->part_rows[p], rank, alpha / rank),
                             (size_t)m->part_rows[p] * rank};
            nd++;
        }
    }
    const bool ok = write_st(kohya_path, k, nk) && write_st(diffusers_path, d, nd);
    for (int i = 0; i < nk; i++)
        if (k[i].nd) free(k[i].data);
    for (int i = 1; i < nd; i += 2) free(d[i].data);
    return ok;
}

static sdw_status gen(sdw_image_model *m, const char *lora, sdw_image *img, sdw_error *err) {
    sdw_request r = sdw_request_default();
    r.prompt = "a photo of a cat";
    r.steps = 2;
    r.seed = 3;
    const sdw_lora_ref l = {.path = lora, .multiplier = 1.0f};
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

static void test_flux(void) {
    char kohya[4096], diffusers[4096];
    snprintf(kohya, sizeof kohya, "%s/flux-kohya.safetensors", sdw_test_tmpdir());
    snprintf(diffusers, sizeof diffusers, "%s/flux-diffusers.safetensors", sdw_test_tmpdir());
    ASSERT_TRUE(write_loras(kohya, diffusers));
    sdw_error err = {0};
    sdw_image_model *m = NULL, *single = NULL;
    sdw_load_options o = sdw_load_options_default();
    o.config_dir = sdw_test_path("models/tiny-flux-schnell");
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-flux-schnell"), NULL, &m, &err), &err);
    sdw_status s = sdw_model_load(sdw_test_path("models/flux-tiny-schnell.safetensors"), &o,
                                  &single, &err);
    const bool caps = sdw_model_capabilities(m)->lora;
    sdw_image base = {0}, a = {0}, b = {0}, c = {0}, again = {0};
    if (!s) s = gen(m, NULL, &base, &err);
    if (!s) s = gen(m, kohya, &a, &err);
    if (!s) s = gen(m, diffusers, &b, &err);
    if (!s) s = gen(single, kohya, &c, &err); /* BFL-named weights, BFL-named LoRA */
    if (!s) s = gen(m, NULL, &again, &err);
    sdw_model_destroy(m);
    sdw_model_destroy(single);
    const int d_formats = max_diff(&a, &b), d_single = max_diff(&a, &c),
              d_lora = max_diff(&base, &a), d_base = max_diff(&base, &again);
    sdw_image_free(&base), sdw_image_free(&a), sdw_image_free(&b), sdw_image_free(&c),
        sdw_image_free(&again);
    ASSERT_OK(s, &err);
    printf("    kohya/BFL vs diffusers: %d levels; single file: %d; LoRA vs base: %d; base again: "
           "%d\n",
           d_formats, d_single, d_lora, d_base);
    ASSERT_TRUE(caps);
    ASSERT_TRUE(d_formats <= 1);
    ASSERT_TRUE(d_single <= 1);
    ASSERT_TRUE(d_lora >= 8);
    ASSERT_EQ_INT(d_base, 0);
}

int main(void) {
    RUN(test_flux);
    return sdw_test_finish();
}
