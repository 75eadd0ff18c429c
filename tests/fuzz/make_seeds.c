/* Writes the seed corpora of the parser fuzz targets (every one but fuzz_image_decode's, which
 * make_corpus.c writes, and fuzz_clip_vocab's, from CMake) under OUT/<target>/: requests of the
 * three APIs as their clients send them (with small images inline), multipart bodies, small
 * safetensors files, the fixtures' model configs and T5 sentencepiece model, and a hand-built
 * sentencepiece model of a few hundred bytes (what the fuzzer mutates fastest). Generated at
 * build time so no binary seed lives in the repository.
 *
 *   make_seeds OUT FIXTURES */
#define _GNU_SOURCE
#include "io/base64.h"
#include "io/png.h"
#include "io/safetensors.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

static const char *g_out;

static void put(const char *target, const char *name, const void *data, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_out, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_seeds: cannot create %s\n", path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s/%s", g_out, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        exit(1);
    }
}

/* A seed of a selector byte followed by printf text. */
static void putf(const char *target, const char *name, int selector, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void putf(const char *target, const char *name, int selector, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    if (vasprintf(&text, fmt, ap) < 0) exit(1);
    va_end(ap);
    size_t n = strlen(text);
    char *buf = malloc(n + 1);
    size_t off = 0;
    if (selector >= 0) buf[off++] = (char)selector;
    memcpy(buf + off, text, n);
    put(target, name, buf, off + n);
    free(buf);
    free(text);
}

/* A file of the fixtures, behind a selector byte (or none: -1). */
static void put_fixture(const char *fixtures, const char *rel, const char *target,
                        const char *name, int selector) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", fixtures, rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "make_seeds: no %s (fixtures missing?): skipped\n", path);
        return;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t off = 0;
    if (selector >= 0) buf[off++] = (char)selector;
    if (fread(buf + off, 1, (size_t)n, f) != (size_t)n) exit(1);
    fclose(f);
    put(target, name, buf, off + (size_t)n);
    free(buf);
}

/* ---- a hand-built sentencepiece model (protocol buffers wire format) ---- */

typedef struct pb {
    uint8_t b[4096];
    size_t n;
} pb;

static void varint(pb *p, uint64_t v) {
    do {
        p->b[p->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}
static void key(pb *p, int field, int wire) { varint(p, (uint64_t)field << 3 | (uint64_t)wire); }
static void bytes(pb *p, int field, const void *d, size_t n) {
    key(p, field, 2);
    varint(p, n);
    memcpy(p->b + p->n, d, n);
    p->n += n;
}
static void f32(pb *p, int field, float v) {
    key(p, field, 5);
    memcpy(p->b + p->n, &v, 4);
    p->n += 4;
}
static void num(pb *p, int field, int64_t v) {
    key(p, field, 0);
    varint(p, (uint64_t)v);
}

/* ModelProto {pieces (1), trainer_spec (2), normalizer_spec (3)}: a unigram model with T5's
 * special pieces (<pad> 0, </s> 1, <unk> 2) and a few words. */
static void spiece_model(void) {
#define WS "\xe2\x96\x81" /* U+2581, sentencepiece's word boundary */
    static const char *const words[] = {WS "a", WS "photo", WS "of", WS "an", WS "horse", WS,
                                        "a", "o", "r", "s", "e", "t", "h", "!", "2", "0"};
#undef WS
    pb m = {0};
    static const struct {
        const char *piece;
        int type; /* NORMAL 1, UNKNOWN 2, CONTROL 3 */
    } special[] = {{"<pad>", 3}, {"</s>", 3}, {"<unk>", 2}};
    for (int i = 0; i < 3 + (int)(sizeof words / sizeof words[0]); i++) {
        pb sp = {0};
        const char *piece = i < 3 ? special[i].piece : words[i - 3];
        bytes(&sp, 1, piece, strlen(piece));
        f32(&sp, 2, i < 3 ? 0.0f : -1.0f - 0.5f * (float)i);
        if (i < 3) num(&sp, 3, special[i].type);
        bytes(&m, 1, sp.b, sp.n);
    }
    pb tr = {0};
    num(&tr, 3, 1); /* model_type UNIGRAM */
    num(&tr, 40, 2); /* unk_id */
    num(&tr, 41, -1); /* bos_id */
    num(&tr, 42, 1); /* eos_id */
    num(&tr, 43, 0); /* pad_id */
    bytes(&m, 2, tr.b, tr.n);
    pb nm = {0};
    bytes(&nm, 1, "identity", 8);
    num(&nm, 3, 1); /* add_dummy_prefix */
    num(&nm, 4, 1); /* remove_extra_whitespaces */
    num(&nm, 5, 1); /* escape_whitespaces */
    bytes(&m, 3, nm.b, nm.n);
    put("spiece", "tiny.model", m.b, m.n);
}

/* ---- requests ---- */

static char *png_b64(int w, int h, int ch) {
    uint8_t px[32 * 32 * 4];
    for (int i = 0; i < w * h * ch; i++) px[i] = (uint8_t)(i * 29 + 7);
    uint8_t *png = NULL;
    size_t n = 0;
    const char *kv[] = {"parameters", "a cat\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, "
                                      "Size: 8x8, Model: tiny",
                        NULL};
    if (sdw_png_write_mem(px, w, h, ch, kv, &png, &n, NULL) != SDW_OK) exit(1);
    char *b = sdw_base64_encode(png, n, NULL);
    free(png);
    return b;
}

static uint8_t *png_raw(int w, int h, int ch, size_t *n) {
    uint8_t px[32 * 32 * 4], *png = NULL;
    for (int i = 0; i < w * h * ch; i++) px[i] = (uint8_t)(i * 31 + 3);
    if (sdw_png_write_mem(px, w, h, ch, NULL, &png, n, NULL) != SDW_OK) exit(1);
    return png;
}

/* A multipart body: parts name, filename|NULL, data, len ... NULL name ends. */
typedef struct part {
    const char *name, *filename;
    const void *data;
    size_t len;
} part;

static void put_form(const char *target, const char *name, int selector, const char *boundary,
                     const part *parts) {
    size_t cap = 256;
    for (const part *p = parts; p->name; p++) cap += p->len + 256;
    char *buf = malloc(cap);
    size_t n = 0;
    if (selector >= 0) buf[n++] = (char)selector;
    n += (size_t)sprintf(buf + n, "multipart/form-data; boundary=%s\n", boundary);
    for (const part *p = parts; p->name; p++) {
        n += (size_t)sprintf(buf + n, "--%s\r\nContent-Disposition: form-data; name=\"%s\"",
                             boundary, p->name);
        if (p->filename)
            n += (size_t)sprintf(buf + n, "; filename=\"%s\"\r\nContent-Type: image/png",
                                 p->filename);
        n += (size_t)sprintf(buf + n, "\r\n\r\n");
        memcpy(buf + n, p->data, p->len);
        n += p->len;
        n += (size_t)sprintf(buf + n, "\r\n");
    }
    n += (size_t)sprintf(buf + n, "--%s--\r\n", boundary);
    put(target, name, buf, n);
    free(buf);
}

#define T(s) s, sizeof s - 1

static void requests(void) {
    char *img = png_b64(8, 8, 3), *mask = png_b64(8, 8, 4);
    putf("native", "txt2img.json", -1,
         "{\"operation\": \"image_generation\", \"prompt\": \"a lighthouse\", \"negative_prompt\": "
         "\"blurry\", \"width\": 512, \"height\": 512, \"steps\": 20, \"guidance_scale\": 7.5, "
         "\"seed\": 42, \"sampler\": \"euler_a\", \"scheduler\": \"karras\", \"n\": 2, \"rng\": "
         "\"philox\", \"params\": {\"original_width\": 1024}}");
    putf("native", "minimal.json", -1, "{\"prompt\": \"x\"}");
    putf("native", "transform.json", -1,
         "{\"operation\": \"image_transform\", \"prompt\": \"x\", \"strength\": 0.6, "
         "\"input_image\": \"data:image/png;base64,%s\"}", img);
    putf("native", "inpaint.json", -1,
         "{\"operation\": \"image_inpaint\", \"prompt\": \"x\", \"width\": 64, \"height\": 64, "
         "\"input_image\": \"%s\", \"mask_image\": \"%s\", \"loras\": [{\"name\": \"a\", "
         "\"weight\": 0.5}]}", img, mask);
    putf("a1111", "txt2img.json", 0,
         "{\"prompt\": \"a castle\", \"negative_prompt\": \"\", \"width\": 70, \"height\": 64, "
         "\"steps\": \"20\", \"cfg_scale\": 7, \"seed\": -1, \"sampler_name\": \"DPM++ 2M Karras\", "
         "\"scheduler\": \"Automatic\", \"batch_size\": 2, \"n_iter\": 1, \"styles\": [\"s\"], "
         "\"restore_faces\": false, \"tiling\": true, \"override_settings\": "
         "{\"sd_model_checkpoint\": \"tiny-sd15 [abc]\", \"CLIP_stop_at_last_layers\": 2}, "
         "\"alwayson_scripts\": {}, \"enable_hr\": false, \"subseed_strength\": 0}");
    putf("a1111", "index.json", 0,
         "{\"prompt\": \"x\", \"sampler_name\": \"\", \"sampler_index\": \"Euler a\"}");
    putf("a1111", "img2img.json", 1,
         "{\"prompt\": \"x\", \"init_images\": [\"data:image/png;base64,%s\"], \"mask\": \"%s\", "
         "\"inpainting_mask_invert\": 1, \"denoising_strength\": 0.5, \"mask_blur\": 4, "
         "\"inpainting_fill\": 0, \"resize_mode\": 1}", img, mask);
    putf("a1111", "infotext.txt", 2,
         "a castle, (detailed:1.2)\nNegative prompt: blurry\nSteps: 28, Sampler: DPM++ 2M, "
         "Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, Model: v1-5, "
         "Lora hashes: \"a: 1, b: 2\", Version: v1.10.1");
    putf("openai", "generation.json", 0,
         "{\"model\": \"dall-e-2\", \"prompt\": \"a cat\", \"n\": 2, \"size\": \"64x64\", "
         "\"response_format\": \"b64_json\", \"output_format\": \"webp\", "
         "\"output_compression\": 80, \"stream\": true, \"partial_images\": 2, \"seed\": 42, "
         "\"steps\": 4, \"guidance_scale\": 5, \"sampler\": \"euler\", \"user\": \"u\"}");
    size_t ni = 0, nm = 0;
    uint8_t *raw = png_raw(8, 8, 3, &ni), *raw_mask = png_raw(8, 8, 4, &nm);
    const part edit[] = {{"image", "in.png", raw, ni},     {"mask", "mask.png", raw_mask, nm},
                         {"prompt", NULL, T("a dog")},     {"n", NULL, T("1")},
                         {"size", NULL, T("64x64")},       {"strength", NULL, T("0.5")},
                         {"stream", NULL, T("true")},      {"partial_images", NULL, T("1")},
                         {"response_format", NULL, T("url")}, {NULL, NULL, NULL, 0}};
    put_form("openai", "edit.form", 1, "Xy7Boundary", edit);
    const part var[] = {{"image", "in.png", raw, ni}, {"n", NULL, T("2")},
                        {"size", NULL, T("auto")},    {NULL, NULL, NULL, 0}};
    put_form("openai", "variation.form", 2, "----WebKitFormBoundary7MA4YWxk", var);
    const part several[] = {{"image[]", "a.png", raw, ni}, {"image[]", "b.png", raw, ni},
                            {"prompt", NULL, T("x")},     {NULL, NULL, NULL, 0}};
    put_form("openai", "several.form", 1, "b", several);
    put_form("multipart", "edit.form", -1, "Xy7Boundary", edit);
    put_form("multipart", "quoted.form", -1, "\"q;b\"", var);
    putf("multipart", "empty.form", -1, "multipart/form-data; boundary=abc\n--abc--\r\n");
    putf("multipart", "nocrlf.form", -1,
         "multipart/form-data; charset=utf-8; boundary=zz\n\r\n--zz\r\nContent-Disposition: "
         "form-data; name=a; filename=x\r\nContent-Type: text/plain\r\n\r\nvalue\r\n--zz--");
    free(raw);
    free(raw_mask);
    free(img);
    free(mask);
}

/* ---- safetensors ---- */

static void safetensors(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/safetensors", g_out);
    mkdir(path, 0755);
    static const sdw_dtype types[] = {SDW_DTYPE_F32, SDW_DTYPE_F16, SDW_DTYPE_BF16};
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/safetensors/seed%d.safetensors", g_out, k);
        sdw_st_writer *w = NULL;
        sdw_error err = {0};
        if (sdw_st_writer_create(path, &w, &err) != SDW_OK) exit(1);
        const int64_t s1[2] = {2, 3}, s2[1] = {4};
        sdw_st_writer_add(w, "model.diffusion_model.conv_in.weight", types[k], 2, s1);
        sdw_st_writer_add(w, "first_stage_model.scale", SDW_DTYPE_F32, 1, s2);
        sdw_st_writer_add(w, "scalar", types[k], 0, NULL);
        const float a[6] = {1, -2, 3.5f, 0, 1e-3f, 65504}, b[4] = {0.5f, 1, 2, 4}, c[1] = {7};
        if (sdw_st_writer_begin(w, &err) || sdw_st_writer_write(w, a, &err) ||
            sdw_st_writer_write(w, b, &err) || sdw_st_writer_write(w, c, &err) ||
            sdw_st_writer_finish(w, &err)) {
            fprintf(stderr, "make_seeds: %s\n", err.msg);
            exit(1);
        }
    }
    /* by hand: metadata, an 8-bit float type */
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},\"x\":{\"dtype\":\"F8_E4M3\","
                      "\"shape\":[2,2],\"data_offsets\":[0,4]}}";
    uint8_t buf[256];
    const uint64_t hl = strlen(hdr);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hl >> (8 * i)); /* little-endian u64 */
    memcpy(buf + 8, hdr, hl);
    memcpy(buf + 8 + hl, "\x01\x02\x03\x04", 4);
    put("safetensors", "metadata.safetensors", buf, 8 + hl + 4);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: make_seeds OUT FIXTURES\n");
        return 2;
    }
    g_out = argv[1];
    const char *fx = argv[2];
    mkdir(g_out, 0755);
    requests();
    safetensors();
    spiece_model();
    put_fixture(fx, "models/tiny-flux/tokenizer_2/spiece.model", "spiece", "tiny-flux.model", -1);
    static const struct {
        const char *rel;
        int selector; /* fuzz_model_config's reader */
    } configs[] = {
        {"models/tiny-sd15/vae/config.json", 0},
        {"models/tiny-flux/vae/config.json", 0},
        {"models/tiny-sd15/unet/config.json", 1},
        {"models/tiny-sdxl/unet/config.json", 1},
        {"models/tiny-taesd/config.json", 2},
        {"models/tiny-sd15/scheduler/scheduler_config.json", 3},
        {"models/tiny-flux/scheduler/scheduler_config.json", 3},
        {"models/tiny-sd15/text_encoder/config.json", 4},
        {"models/tiny-sdxl/text_encoder_2/config.json", 4},
        {"models/tiny-flux/text_encoder_2/config.json", 5},
        {"models/tiny-flux/transformer/config.json", 6},
        {"models/tiny-sd3/transformer/config.json", 7},
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "config%02zu.json", i);
        put_fixture(fx, configs[i].rel, "config", name, configs[i].selector);
    }
    return 0;
}
