/* TAESD (diffusers AutoencoderTiny) against the goldens golden/tiny-taesd/{decode,encode}, stage
 * by stage, through the diffusers folder and the original madebyollin files; config parsing and
 * inference, layout detection, decoder-only use, and bad weights / inputs. SDW_TAESD_BENCH=1
 * also times a 512x512 decode against the full SD VAE's (random weights at the real shapes). */
#include "sdw_test.h"

#include "nn/nn.h"
#include "nn/taesd.h"
#include "nn/vae.h"

#include <stdlib.h>

#define TOL 1e-4

/* The fixture's files: the diffusers folder (one file, both halves) or the two original ones. */
typedef struct loaded {
    sdw_st_file *file, *dec_file, *enc_file;
    sdw_weights *ws, *dec, *enc; /* ws: the diffusers file (dec == enc == ws) */
    sdw_taesd_config cfg;
    sdw_taesd *t;
} loaded;

static void unload(loaded *l) {
    sdw_taesd_destroy(l->t);
    sdw_weights_destroy(l->ws);
    if (l->dec != l->ws) sdw_weights_destroy(l->dec);
    if (l->enc != l->ws) sdw_weights_destroy(l->enc);
    sdw_st_close(l->file);
    sdw_st_close(l->dec_file);
    sdw_st_close(l->enc_file);
    memset(l, 0, sizeof *l);
}

static sdw_status load_diffusers(loaded *l, sdw_error *err) {
    memset(l, 0, sizeof *l);
    sdw_status st = sdw_taesd_config_load(sdw_test_path("models/tiny-taesd/config.json"), &l->cfg,
                                          err);
    if (st) return st;
    st = sdw_st_open(sdw_test_path("models/tiny-taesd/diffusion_pytorch_model.safetensors"),
                     &l->file, err);
    if (st) return st;
    l->ws = l->dec = l->enc = sdw_weights_create(l->file, "", NULL, NULL);
    return sdw_taesd_create(l->ws, l->ws, &l->cfg, &l->t, err);
}

/* The original files, config inferred from the shapes; with_encoder false: the decoder alone. */
static sdw_status load_original(loaded *l, bool with_encoder, sdw_error *err) {
    memset(l, 0, sizeof *l);
    sdw_status st = sdw_st_open(sdw_test_path("models/tiny-taesd/taesd_decoder.safetensors"),
                                &l->dec_file, err);
    if (st) return st;
    l->dec = sdw_weights_create(l->dec_file, "", sdw_taesd_original_name, NULL);
    if (with_encoder) {
        st = sdw_st_open(sdw_test_path("models/tiny-taesd/taesd_encoder.safetensors"),
                         &l->enc_file, err);
        if (st) return st;
        l->enc = sdw_weights_create(l->enc_file, "", sdw_taesd_original_name, NULL);
    }
    if ((st = sdw_taesd_config_infer(l->dec, l->enc, &l->cfg, err))) return st;
    return sdw_taesd_create(l->dec, l->enc, &l->cfg, &l->t, err);
}

/* ---- stage-by-stage comparison: taps NHWC, goldens NCHW ---- */

typedef struct stage_check {
    sdw_golden *g;
    int n_compared, n_failed;
    double worst;
} stage_check;

static void tap(void *user, const char *name, const float *x, int B, int H, int W, int C) {
    stage_check *c = user;
    const sdw_golden_tensor *t = sdw_golden_get(c->g, name);
    if (!t) return;
    c->n_compared++;
    if (t->n_dims != 4 || t->shape[0] != B || t->shape[1] != C || t->shape[2] != H ||
        t->shape[3] != W) {
        fprintf(stderr, "  %s: [%d,%d,%d,%d] NHWC, reference [%lld,%lld,%lld,%lld] NCHW\n", name,
                B, H, W, C, (long long)t->shape[0], (long long)t->shape[1],
                (long long)t->shape[2], (long long)t->shape[3]);
        c->n_failed++;
        return;
    }
    float *ref = sdw_golden_nhwc(t);
    double e = sdw_test_rel_err(x, ref, t->n);
    free(ref);
    if (e > c->worst) c->worst = e;
    if (!(e <= TOL)) {
        fprintf(stderr, "  %s: relative error %.3g\n", name, e);
        c->n_failed++;
    }
}

/* Decodes the golden decode.z through l (batch 1) with every stage compared; *out (may be NULL)
 * receives the NHWC image [64, 64, 3] (caller frees). */
static void check_decode(loaded *l, float **out) {
    stage_check c = {.g = sdw_golden_open("tiny-taesd/decode")};
    ASSERT_TRUE(c.g);
    const sdw_golden_tensor *z = sdw_golden_get(c.g, "decode.z");
    const sdw_golden_tensor *ref = sdw_golden_get(c.g, "decode.out");
    ASSERT_TRUE(z && ref && z->n_dims == 4 && ref->n_dims == 4);
    const int h = (int)z->shape[2], w = (int)z->shape[3], s = sdw_taesd_downscale(l->t);
    ASSERT_EQ_INT(ref->shape[2], h * s);
    float *zn = sdw_golden_nhwc(z), *refn = sdw_golden_nhwc(ref);
    float *img = malloc(ref->n * sizeof(float));
    sdw_error err = {0};
    sdw_status st = sdw_taesd_decode_tap(l->t, zn, 1, h, w, img, tap, &c, &err);
    double e = st ? 1e9 : sdw_test_rel_err(img, refn, ref->n);
    free(zn);
    free(refn);
    sdw_golden_close(c.g);
    if (out) *out = img;
    else free(img);
    ASSERT_OK(st, &err);
    /* clamped + the 8 decoder layers */
    ASSERT_EQ_INT(c.n_compared, 9);
    ASSERT_EQ_INT(c.n_failed, 0);
    if (!(e <= TOL)) sdw_test_fail(__FILE__, __LINE__, "decode.out: rel err %.3g", e);
    printf("    decode: 9 stages worst rel err %.3g, decode.out %.3g\n", c.worst, e);
}

static void check_encode(loaded *l, float **out) {
    stage_check c = {.g = sdw_golden_open("tiny-taesd/encode")};
    ASSERT_TRUE(c.g);
    const sdw_golden_tensor *img = sdw_golden_get(c.g, "encode.image");
    const sdw_golden_tensor *ref = sdw_golden_get(c.g, "encode.latents");
    ASSERT_TRUE(img && ref && img->n_dims == 4);
    float *imgn = sdw_golden_nhwc(img), *refn = sdw_golden_nhwc(ref);
    float *lat = malloc(ref->n * sizeof(float));
    sdw_error err = {0};
    sdw_status st = sdw_taesd_encode_tap(l->t, imgn, 1, (int)img->shape[2], (int)img->shape[3],
                                         lat, tap, &c, &err);
    double e = st ? 1e9 : sdw_test_rel_err(lat, refn, ref->n);
    free(imgn);
    free(refn);
    sdw_golden_close(c.g);
    if (out) *out = lat;
    else free(lat);
    ASSERT_OK(st, &err);
    ASSERT_EQ_INT(c.n_compared, 6);
    ASSERT_EQ_INT(c.n_failed, 0);
    if (!(e <= TOL)) sdw_test_fail(__FILE__, __LINE__, "encode.latents: rel err %.3g", e);
    printf("    encode: 6 stages worst rel err %.3g, encode.latents %.3g\n", c.worst, e);
}

/* ---- tests ---- */

static void test_config(void) {
    sdw_error err = {0};
    sdw_taesd_config c;
    ASSERT_OK(sdw_taesd_config_load(sdw_test_path("models/tiny-taesd/config.json"), &c, &err),
              &err);
    ASSERT_EQ_INT(c.latent_channels, 4);
    ASSERT_EQ_INT(c.n_encoder_stages, 2);
    ASSERT_EQ_INT(c.num_encoder_blocks[0], 1);
    ASSERT_EQ_INT(c.num_encoder_blocks[1], 2);
    ASSERT_EQ_INT(c.n_decoder_stages, 2);
    ASSERT_EQ_INT(c.num_decoder_blocks[0], 2);
    ASSERT_EQ_INT(c.num_decoder_blocks[1], 1);
    ASSERT_EQ_INT(c.decoder_block_out_channels[1], 32);
    ASSERT_TRUE(c.scaling_factor == 1.0f && c.latent_magnitude == 3.0f && c.latent_shift == 0.5f);

    /* defaults: the real TAESD */
    const char *empty = "{}";
    ASSERT_OK(sdw_taesd_config_parse(empty, strlen(empty), &c, &err), &err);
    ASSERT_EQ_INT(c.n_decoder_stages, 4);
    ASSERT_EQ_INT(c.num_decoder_blocks[0], 3);
    ASSERT_EQ_INT(c.encoder_block_out_channels[3], 64);

    static const struct {
        const char *json;
        sdw_status want;
        const char *says;
    } bad[] = {
        {"{\"act_fn\": \"silu\"}", SDW_E_UNSUPPORTED, "act_fn"},
        {"{\"upsampling_scaling_factor\": 4}", SDW_E_UNSUPPORTED, "upsampling_scaling_factor"},
        {"{\"num_decoder_blocks\": [3, 3]}", SDW_E_FORMAT, "num_decoder_blocks"},
        {"{\"encoder_block_out_channels\": [64, \"x\"]}", SDW_E_FORMAT,
         "encoder_block_out_channels"},
        {"{\"latent_channels\": 0}", SDW_E_INVALID_ARG, "latent_channels"},
        {"{\"latent_channels\": ", SDW_E_FORMAT, "TAESD config"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(bad); i++) {
        sdw_taesd_config keep = {.latent_channels = 77};
        ASSERT_STATUS(sdw_taesd_config_parse(bad[i].json, strlen(bad[i].json), &keep, &err),
                      bad[i].want);
        ASSERT_STR_CONTAINS(err.msg, bad[i].says);
        ASSERT_EQ_INT(keep.latent_channels, 77); /* untouched */
    }
    ASSERT_STATUS(sdw_taesd_config_load("/nonexistent/config.json", &c, &err), SDW_E_IO);
}

static void test_detect(void) {
    static const struct {
        const char *file;
        sdw_taesd_layout want;
        int latent;
    } cases[] = {
        {"tiny-taesd/diffusion_pytorch_model.safetensors", SDW_TAESD_LAYOUT_DIFFUSERS, 4},
        {"tiny-taesd/taesd_decoder.safetensors", SDW_TAESD_LAYOUT_ORIG_DECODER, 4},
        {"tiny-taesd/taesd_encoder.safetensors", SDW_TAESD_LAYOUT_ORIG_ENCODER, 4},
        {"tiny-sd15/vae/diffusion_pytorch_model.safetensors", SDW_TAESD_LAYOUT_NONE, 0},
        {"tiny-sd3/vae/diffusion_pytorch_model.safetensors", SDW_TAESD_LAYOUT_NONE, 0},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(cases); i++) {
        sdw_error err = {0};
        sdw_st_file *f = NULL;
        ASSERT_OK(sdw_st_open(sdw_test_path("models/%s", cases[i].file), &f, &err), &err);
        int lat = -1;
        sdw_taesd_layout l = sdw_taesd_detect(f, &lat);
        sdw_st_close(f);
        if (l != cases[i].want || lat != cases[i].latent)
            sdw_test_fail(__FILE__, __LINE__, "%s: %s with %d latent channels", cases[i].file,
                          sdw_taesd_layout_str(l), lat);
    }
}

/* A 16-channel (taesd3 / taef1-style) decoder written by us: detected as 16 channels. */
static void test_detect_16ch(void) {
    sdw_error err = {0};
    sdw_taesd_config c;
    ASSERT_OK(sdw_taesd_config_load(sdw_test_path("models/tiny-taesd/config.json"), &c, &err),
              &err);
    c.latent_channels = 16;
    sdw_weights *rnd = sdw_weights_create_random(3);
    sdw_taesd *t = NULL;
    ASSERT_OK(sdw_taesd_create(rnd, rnd, &c, &t, &err), &err);
    ASSERT_EQ_INT(sdw_taesd_latent_channels(t), 16);
    sdw_taesd_destroy(t);
    char path[512];
    snprintf(path, sizeof path, "%s/taef.safetensors", sdw_test_tmpdir());
    sdw_status st = sdw_weights_save(rnd, path, SDW_DTYPE_F16, &err);
    sdw_weights_destroy(rnd);
    ASSERT_OK(st, &err);
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(path, &f, &err), &err);
    int lat = 0;
    sdw_taesd_layout l = sdw_taesd_detect(f, &lat);
    /* and back through inference: the same architecture */
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    sdw_taesd_config inf;
    st = sdw_taesd_config_infer(ws, ws, &inf, &err);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
    ASSERT_EQ_INT(l, SDW_TAESD_LAYOUT_DIFFUSERS);
    ASSERT_EQ_INT(lat, 16);
    ASSERT_OK(st, &err);
    ASSERT_EQ_INT(inf.latent_channels, 16);
    ASSERT_EQ_INT(inf.n_decoder_stages, 2);
    ASSERT_EQ_INT(inf.n_encoder_stages, 2);
}

static void test_original_name_map(void) {
    char buf[64];
    ASSERT_STR_CONTAINS(sdw_taesd_original_name("decoder.layers.0.weight", buf, sizeof buf, NULL),
                        "1.weight");
    ASSERT_TRUE(strcmp(buf, "1.weight") == 0);
    ASSERT_TRUE(strcmp(sdw_taesd_original_name("decoder.layers.12.conv.4.bias", buf, sizeof buf,
                                               NULL),
                       "13.conv.4.bias") == 0);
    ASSERT_TRUE(strcmp(sdw_taesd_original_name("encoder.layers.5.weight", buf, sizeof buf, NULL),
                       "5.weight") == 0);
    ASSERT_TRUE(!sdw_taesd_original_name("decoder.conv_in.weight", buf, sizeof buf, NULL));
    ASSERT_TRUE(!sdw_taesd_original_name("decoder.layers.x.weight", buf, sizeof buf, NULL));
    ASSERT_TRUE(!sdw_taesd_original_name("encoder.layers.-1.weight", buf, sizeof buf, NULL));
    ASSERT_TRUE(!sdw_taesd_original_name("decoder.layers.0.weight", buf, 4, NULL));
}

/* The config inferred from either layout equals the folder's config.json. */
static void test_infer(void) {
    sdw_error err = {0};
    loaded a, b;
    sdw_status st = load_diffusers(&a, &err);
    if (st) unload(&a);
    ASSERT_OK(st, &err);
    st = load_original(&b, true, &err);
    if (st) {
        unload(&a);
        unload(&b);
    }
    ASSERT_OK(st, &err);
    sdw_taesd_config inf;
    st = sdw_taesd_config_infer(a.ws, a.ws, &inf, &err);
    const sdw_taesd_config *c = &a.cfg, *o = &b.cfg;
    bool same = st == SDW_OK;
    for (int k = 0; k < 2 && same; k++) {
        const sdw_taesd_config *x = k ? o : &inf;
        same = x->in_channels == c->in_channels && x->out_channels == c->out_channels &&
               x->latent_channels == c->latent_channels &&
               x->n_encoder_stages == c->n_encoder_stages &&
               x->n_decoder_stages == c->n_decoder_stages;
        for (int i = 0; same && i < c->n_encoder_stages; i++)
            same = x->encoder_block_out_channels[i] == c->encoder_block_out_channels[i] &&
                   x->num_encoder_blocks[i] == c->num_encoder_blocks[i];
        for (int i = 0; same && i < c->n_decoder_stages; i++)
            same = x->decoder_block_out_channels[i] == c->decoder_block_out_channels[i] &&
                   x->num_decoder_blocks[i] == c->num_decoder_blocks[i];
    }
    ASSERT_EQ_INT(sdw_taesd_n_params(a.t), sdw_taesd_n_params(b.t));
    ASSERT_EQ_INT(sdw_taesd_n_params(a.t), sdw_weights_n_params(a.ws));
    unload(&a);
    unload(&b);
    ASSERT_OK(st, &err);
    ASSERT_TRUE(same);
}

static void test_decode_golden(void) {
    sdw_error err = {0};
    loaded l;
    sdw_status st = load_diffusers(&l, &err);
    if (st) unload(&l);
    ASSERT_OK(st, &err);
    ASSERT_TRUE(sdw_taesd_has_decoder(l.t) && sdw_taesd_has_encoder(l.t));
    ASSERT_EQ_INT(sdw_taesd_downscale(l.t), 2);
    check_decode(&l, NULL);
    unload(&l);
}

static void test_encode_golden(void) {
    sdw_error err = {0};
    loaded l;
    sdw_status st = load_diffusers(&l, &err);
    if (st) unload(&l);
    ASSERT_OK(st, &err);
    check_encode(&l, NULL);
    unload(&l);
}

/* The original files give the same numbers as the diffusers file, bit for bit. */
static void test_original_naming(void) {
    sdw_error err = {0};
    loaded a, b;
    sdw_status st = load_diffusers(&a, &err);
    if (st == SDW_OK) st = load_original(&b, true, &err);
    else memset(&b, 0, sizeof b);
    if (st) {
        unload(&a);
        unload(&b);
    }
    ASSERT_OK(st, &err);
    float *da = NULL, *db = NULL, *ea = NULL, *eb = NULL;
    check_decode(&a, &da);
    check_decode(&b, &db);
    check_encode(&a, &ea);
    check_encode(&b, &eb);
    bool same = da && db && ea && eb && memcmp(da, db, 64 * 64 * 3 * sizeof(float)) == 0 &&
                memcmp(ea, eb, 32 * 32 * 4 * sizeof(float)) == 0;
    free(da);
    free(db);
    free(ea);
    free(eb);
    unload(&a);
    unload(&b);
    ASSERT_TRUE(same);
}

/* taesd_decoder.safetensors alone: a complete decoder; encoding is refused clearly. */
static void test_decoder_only(void) {
    sdw_error err = {0};
    loaded l;
    sdw_status st = load_original(&l, false, &err);
    if (st) unload(&l);
    ASSERT_OK(st, &err);
    ASSERT_TRUE(sdw_taesd_has_decoder(l.t) && !sdw_taesd_has_encoder(l.t));
    ASSERT_EQ_INT(l.cfg.n_encoder_stages, 0);
    check_decode(&l, NULL);
    float img[4 * 4 * 3] = {0}, lat[2 * 2 * 4];
    st = sdw_taesd_encode(l.t, img, 1, 4, 4, lat, &err);
    unload(&l);
    ASSERT_STATUS(st, SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(err.msg, "no encoder");
}

/* An encoder alone (no decoder) works too; decoding is refused. */
static void test_encoder_only(void) {
    sdw_error err = {0};
    sdw_st_file *f = NULL;
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-taesd/taesd_encoder.safetensors"), &f, &err),
              &err);
    sdw_weights *ws = sdw_weights_create(f, "", sdw_taesd_original_name, NULL);
    sdw_taesd_config c;
    sdw_taesd *t = NULL;
    sdw_status st = sdw_taesd_config_infer(NULL, ws, &c, &err);
    if (st == SDW_OK) st = sdw_taesd_create(NULL, ws, &c, &t, &err);
    loaded l = {.t = t};
    if (st == SDW_OK) check_encode(&l, NULL);
    float z[4] = {0}, img[2 * 2 * 3];
    sdw_status st2 = t ? sdw_taesd_decode(t, z, 1, 1, 1, img, &err) : SDW_E_INVALID_ARG;
    sdw_taesd_destroy(t);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
    ASSERT_OK(st, &err);
    ASSERT_EQ_INT(c.n_decoder_stages, 0);
    ASSERT_STATUS(st2, SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(err.msg, "no decoder");
}

/* Two latents in one batch decode as each alone. */
static void test_batch(void) {
    sdw_error err = {0};
    loaded l;
    sdw_status st = load_diffusers(&l, &err);
    if (st) unload(&l);
    ASSERT_OK(st, &err);
    const size_t nz = 8 * 8 * 4, ni = 16 * 16 * 3;
    float z[2 * 8 * 8 * 4], one[2 * 16 * 16 * 3], both[2 * 16 * 16 * 3];
    for (size_t i = 0; i < 2 * nz; i++) z[i] = sinf(0.37f * (float)i) * 2.5f;
    st = sdw_taesd_decode(l.t, z, 1, 8, 8, one, &err);
    if (st == SDW_OK) st = sdw_taesd_decode(l.t, z + nz, 1, 8, 8, one + ni, &err);
    if (st == SDW_OK) st = sdw_taesd_decode(l.t, z, 2, 8, 8, both, &err);
    unload(&l);
    ASSERT_OK(st, &err);
    ASSERT_TRUE(memcmp(one, both, sizeof one) == 0);
}

/* Weights that do not fit the architecture: errors name the tensor. */
static void test_bad_weights(void) {
    sdw_error err = {0};
    sdw_st_file *f = NULL, *ef = NULL;
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-taesd/diffusion_pytorch_model.safetensors"),
                          &f, &err),
              &err);
    ASSERT_OK(sdw_st_open(sdw_test_path("models/tiny-taesd/taesd_encoder.safetensors"), &ef, &err),
              &err);
    sdw_taesd_config c;
    sdw_status st = sdw_taesd_config_load(sdw_test_path("models/tiny-taesd/config.json"), &c, &err);
    sdw_taesd *t = NULL;
    struct {
        sdw_status st;
        char msg[SDW_ERROR_MSG_MAX];
    } r[6];
    /* 0: a 16-channel config over the 4-channel weights */
    sdw_taesd_config c16 = c;
    c16.latent_channels = 16;
    sdw_weights *ws = sdw_weights_create(f, "", NULL, NULL);
    r[0].st = sdw_taesd_create(ws, ws, &c16, &t, &err);
    snprintf(r[0].msg, sizeof r[0].msg, "%s", err.msg);
    sdw_weights_destroy(ws);
    /* 1: a wider config */
    sdw_taesd_config c48 = c;
    c48.decoder_block_out_channels[0] = c48.decoder_block_out_channels[1] = 48;
    ws = sdw_weights_create(f, "", NULL, NULL);
    r[1].st = sdw_taesd_create(ws, ws, &c48, &t, &err);
    snprintf(r[1].msg, sizeof r[1].msg, "%s", err.msg);
    sdw_weights_destroy(ws);
    /* 2: one more decoder block than the file has */
    sdw_taesd_config cb = c;
    cb.num_decoder_blocks[1] = 2;
    ws = sdw_weights_create(f, "", NULL, NULL);
    r[2].st = sdw_taesd_create(ws, ws, &cb, &t, &err);
    snprintf(r[2].msg, sizeof r[2].msg, "%s", err.msg);
    sdw_weights_destroy(ws);
    /* 3: the diffusers file as a decoder only: its encoder tensors would go unused */
    ws = sdw_weights_create(f, "", NULL, NULL);
    r[3].st = sdw_taesd_create(ws, NULL, &c, &t, &err);
    snprintf(r[3].msg, sizeof r[3].msg, "%s", err.msg);
    sdw_weights_destroy(ws);
    /* 4: the original encoder file given as the decoder */
    ws = sdw_weights_create(ef, "", sdw_taesd_original_name, NULL);
    sdw_taesd_config inf;
    r[4].st = sdw_taesd_config_infer(ws, NULL, &inf, &err);
    snprintf(r[4].msg, sizeof r[4].msg, "%s", err.msg);
    r[5].st = sdw_taesd_create(ws, NULL, &c, &t, &err);
    snprintf(r[5].msg, sizeof r[5].msg, "%s", err.msg);
    sdw_weights_destroy(ws);
    sdw_st_close(f);
    sdw_st_close(ef);
    ASSERT_OK(st, &err);
    ASSERT_TRUE(t == NULL); /* untouched on failure */
    ASSERT_STATUS(r[0].st, SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(r[0].msg, "decoder.layers.0.weight");
    ASSERT_STR_CONTAINS(r[0].msg, "TAESD decoder");
    ASSERT_STATUS(r[1].st, SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(r[1].msg, "decoder.layers.0.weight");
    ASSERT_STATUS(r[2].st, SDW_E_NOT_FOUND); /* layers.7 is the output conv, not a block */
    ASSERT_STR_CONTAINS(r[2].msg, "decoder.layers.7.conv.0.weight");
    ASSERT_STATUS(r[3].st, SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(r[3].msg, "encoder.layers.");
    ASSERT_STATUS(r[4].st, SDW_E_NOT_FOUND);
    ASSERT_STR_CONTAINS(r[4].msg, "decoder.layers.0.weight");
    ASSERT_TRUE(r[5].st != SDW_OK);
    ASSERT_STR_CONTAINS(r[5].msg, "decoder.layers.0");
}

static void test_bad_config(void) {
    sdw_error err = {0};
    sdw_weights *rnd = sdw_weights_create_random(1);
    sdw_taesd *t = NULL;
    sdw_taesd_config c = sdw_taesd_config_default();
    c.decoder_block_out_channels[2] = 32;
    sdw_status s1 = sdw_taesd_create(rnd, NULL, &c, &t, &err);
    char m1[SDW_ERROR_MSG_MAX];
    snprintf(m1, sizeof m1, "%s", err.msg);
    c = sdw_taesd_config_default();
    c.n_encoder_stages = 3;
    sdw_status s2 = sdw_taesd_create(rnd, rnd, &c, &t, &err);
    char m2[SDW_ERROR_MSG_MAX];
    snprintf(m2, sizeof m2, "%s", err.msg);
    sdw_status s3 = sdw_taesd_create(NULL, NULL, &c, &t, &err);
    c = sdw_taesd_config_default();
    c.n_decoder_stages = 0; /* a config inferred from an encoder, given a decoder */
    sdw_status s4 = sdw_taesd_create(rnd, NULL, &c, &t, &err);
    sdw_weights_destroy(rnd);
    ASSERT_TRUE(t == NULL);
    ASSERT_STATUS(s1, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(m1, "decoder stage 2");
    ASSERT_STATUS(s2, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(m2, "downscales by 4");
    ASSERT_STATUS(s3, SDW_E_INVALID_ARG);
    ASSERT_STATUS(s4, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "decoder has 0 stages");
}

static void test_bad_input(void) {
    sdw_error err = {0};
    loaded l;
    sdw_status st = load_diffusers(&l, &err);
    if (st) unload(&l);
    ASSERT_OK(st, &err);
    float buf[8 * 8 * 4] = {0}, out[16 * 16 * 3];
    sdw_status s1 = sdw_taesd_decode(l.t, buf, 0, 8, 8, out, &err);
    sdw_status s2 = sdw_taesd_decode(l.t, buf, 1, 0, 8, out, &err);
    sdw_status s3 = sdw_taesd_encode(l.t, buf, 1, 7, 8, out, &err);
    char m3[SDW_ERROR_MSG_MAX];
    snprintf(m3, sizeof m3, "%s", err.msg);
    sdw_status s4 = sdw_taesd_encode(l.t, buf, 1, 8, 0, out, &err);
    unload(&l);
    ASSERT_STATUS(s1, SDW_E_INVALID_ARG);
    ASSERT_STATUS(s2, SDW_E_INVALID_ARG);
    ASSERT_STATUS(s3, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(m3, "multiple of 2");
    ASSERT_STATUS(s4, SDW_E_INVALID_ARG);
}

/* bf16 weights: the same image within bf16's precision. */
static void test_bf16(void) {
    if (!sdw_nn_cpu_has_bf16()) {
        sdw_test_skip("no bf16 on this CPU");
        return;
    }
    sdw_error err = {0};
    loaded l;
    sdw_status st = load_diffusers(&l, &err);
    if (st) unload(&l);
    ASSERT_OK(st, &err);
    float *ref = NULL;
    check_decode(&l, &ref);
    sdw_weights *ws = sdw_weights_create(l.file, "", NULL, NULL);
    sdw_weights_set_precision(ws, SDW_PRECISION_BF16);
    sdw_taesd *t = NULL;
    st = sdw_taesd_create(ws, ws, &l.cfg, &t, &err);
    sdw_golden *g = sdw_golden_open("tiny-taesd/decode");
    float *z = g ? sdw_golden_nhwc(sdw_golden_get(g, "decode.z")) : NULL;
    float *img = malloc(64 * 64 * 3 * sizeof(float));
    if (st == SDW_OK && z) st = sdw_taesd_decode(t, z, 1, 32, 32, img, &err);
    double e = st || !z || !ref ? 1e9 : sdw_test_rel_err(img, ref, 64 * 64 * 3);
    free(z);
    free(img);
    free(ref);
    sdw_golden_close(g);
    sdw_taesd_destroy(t);
    sdw_weights_destroy(ws);
    unload(&l);
    ASSERT_OK(st, &err);
    printf("    bf16 decode vs f32: rel err %.3g\n", e);
    ASSERT_TRUE(e < 2e-2);
}

/* ---- SDW_TAESD_BENCH: 512x512 decode, TAESD vs the SD VAE, random weights ---- */

static double time_taesd(sdw_precision p, const float *z, float *img) {
    sdw_error err = {0};
    sdw_weights *ws = sdw_weights_create_random(11);
    sdw_weights_set_precision(ws, p);
    sdw_taesd_config c = sdw_taesd_config_default(); /* 64 channels, 3 blocks per stage */
    sdw_taesd *t = NULL;
    double best = -1;
    if (sdw_taesd_create(ws, NULL, &c, &t, &err) == SDW_OK) {
        for (int r = 0; r < 3; r++) {
            double t0 = sdw_time_now();
            if (sdw_taesd_decode(t, z, 1, 64, 64, img, &err)) break;
            double dt = sdw_time_now() - t0;
            if (best < 0 || dt < best) best = dt;
        }
    } else {
        fprintf(stderr, "  %s\n", err.msg);
    }
    sdw_taesd_destroy(t);
    sdw_weights_destroy(ws);
    return best;
}

static double time_vae(sdw_precision p, const float *z, float *img) {
    sdw_error err = {0};
    sdw_weights *ws = sdw_weights_create_random(12);
    sdw_weights_set_precision(ws, p);
    sdw_vae_config c = sdw_vae_config_default();
    c.n_levels = 4;
    const int boc[4] = {128, 256, 512, 512};
    memcpy(c.block_out_channels, boc, sizeof boc);
    c.layers_per_block = 2;
    sdw_vae *v = NULL;
    double best = -1;
    if (sdw_vae_create_lazy(ws, &c, &v, &err) == SDW_OK) {
        for (int r = 0; r < 2; r++) {
            double t0 = sdw_time_now();
            sdw_vae_decode(v, z, 1, 64, 64, img);
            double dt = sdw_time_now() - t0;
            if (best < 0 || dt < best) best = dt;
        }
    } else {
        fprintf(stderr, "  %s\n", err.msg);
    }
    sdw_vae_destroy(v);
    sdw_weights_destroy(ws);
    return best;
}

static void bench_decode_512(void) {
    float *z = malloc(64 * 64 * 4 * sizeof(float));
    float *img = malloc(512 * 512 * 3 * sizeof(float));
    for (int i = 0; i < 64 * 64 * 4; i++) z[i] = sinf(0.11f * (float)i) * 1.5f;
    const sdw_precision ps[2] = {SDW_PRECISION_F32, SDW_PRECISION_BF16};
    for (int i = 0; i < 2; i++) {
        if (ps[i] == SDW_PRECISION_BF16 && !sdw_nn_cpu_has_bf16()) continue;
        double tt = time_taesd(ps[i], z, img), tv = time_vae(ps[i], z, img);
        printf("    %s, 512x512 decode: TAESD %.3f s, SD VAE %.3f s (%.0fx)\n", i ? "bf16" : "f32",
               tt, tv, tv / tt);
        if (tt < 0 || tv < 0) sdw_test_fail(__FILE__, __LINE__, "a decode failed");
    }
    free(z);
    free(img);
}

int main(void) {
    RUN(test_config);
    RUN(test_detect);
    RUN(test_detect_16ch);
    RUN(test_original_name_map);
    RUN(test_infer);
    RUN(test_decode_golden);
    RUN(test_encode_golden);
    RUN(test_original_naming);
    RUN(test_decoder_only);
    RUN(test_encoder_only);
    RUN(test_batch);
    RUN(test_bad_weights);
    RUN(test_bad_config);
    RUN(test_bad_input);
    RUN(test_bf16);
    if (getenv("SDW_TAESD_BENCH")) RUN(bench_decode_512); /* a measurement, asked for by name */
    return sdw_test_finish();
}
