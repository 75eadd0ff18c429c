/* The hires fix (models/diffusion_hires.c) by its definition, as no reference tool output
 * exists for it here:
 *   - the latent upscalers are torch.nn.functional.interpolate(align_corners=False): checked
 *     against values computed by the kernels' rules in double, and against torch's own output
 *     for one small tensor per mode;
 *   - the image upscalers are Pillow's resizes in A1111's order (sdw_image_resize);
 *   - the second pass is image-to-image of the enlarged first pass as A1111's sample_hr_pass
 *     runs it: the last hires-steps steps of a schedule of int(steps / min(strength, 0.999)),
 *     the start noise the first draw of a generator seeded with the seed (then the ancestral
 *     draws), rebuilt here from the family's hooks and a sampler, and compared bit for bit;
 *   - the image upscalers' picture and posterior sample (eps: the seed's first CPU randn);
 *   - A1111's second-size rules (scale, one or both resize sides, the crop), its refusals,
 *     progress over both passes, an interrupt in the first pass, the infotext. */
#include "sdw_test.h"

#include "io/image.h"
#include "io/infotext.h"
#include "models/diffusion.h"
#include "nn/nn.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"

#include <stdlib.h>
#include <string.h>

/* ---- latent upscale ---- */

/* The reference rules in double (torch's UpSample kernels, align_corners False; antialiased:
 * _compute_indices_min_size_weights_aa with PIL's filters). One dimension: out = W · in. */
static void rule_weights(int in, int out, sdw_upscaler u, double *wm /* [out][in] */) {
    memset(wm, 0, sizeof(double) * out * in);
    const double scale = (double)in / out;
    for (int i = 0; i < out; i++) {
        double *w = wm + (size_t)i * in;
        if (u == SDW_UPSCALE_LATENT_NEAREST) {
            w[SDW_MIN((int)floor(i * scale), in - 1)] = 1;
        } else if (u == SDW_UPSCALE_LATENT_NEAREST_EXACT) {
            w[SDW_MIN((int)floor((i + 0.5) * scale), in - 1)] = 1;
        } else if (u == SDW_UPSCALE_LATENT) {
            double src = fmax(scale * (i + 0.5) - 0.5, 0);
            int i0 = (int)floor(src), i1 = SDW_MIN(i0 + 1, in - 1);
            w[i0] += 1 - (src - i0);
            w[i1] += src - i0;
        } else if (u == SDW_UPSCALE_LATENT_BICUBIC) {
            const double A = -0.75, src = scale * (i + 0.5) - 0.5;
            const int i0 = (int)floor(src);
            const double t = src - i0, d[4] = {t + 1, t, 1 - t, 2 - t};
            for (int j = 0; j < 4; j++) {
                const double x = d[j];
                const double c = x <= 1 ? ((A + 2) * x - (A + 3)) * x * x + 1
                                        : ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
                w[SDW_MAX(SDW_MIN(i0 - 1 + j, in - 1), 0)] += c;
            }
        } else { /* antialiased: the filter stretched when shrinking, normalised over the taps */
            const bool cubic = u == SDW_UPSCALE_LATENT_BICUBIC_ANTIALIASED;
            const double support = (cubic ? 2.0 : 1.0) * fmax(scale, 1.0);
            const double center = scale * (i + 0.5), inv = 1 / fmax(scale, 1.0);
            const int lo = SDW_MAX((int)(center - support + 0.5), 0);
            const int hi = SDW_MIN((int)(center + support + 0.5), in);
            double total = 0;
            for (int j = lo; j < hi; j++) {
                double x = fabs((j - center + 0.5) * inv), f;
                if (cubic) /* Keys, a = -0.5 */
                    f = x < 1 ? (1.5 * x - 2.5) * x * x + 1
                              : x < 2 ? (((x - 5) * x + 8) * x - 4) * -0.5 : 0;
                else
                    f = x < 1 ? 1 - x : 0;
                w[j] = f;
                total += f;
            }
            for (int j = lo; j < hi; j++) w[j] /= total;
        }
    }
}

static float test_value(int c, int y, int x) {
    return (float)(((c * 7 + y * 3 + x * 5) % 11) - 5) / 3.0f;
}

/* Max |ours - rule| over an upscale of a C x h x w test tensor, relative to max |x|. */
static double rule_error(int C, int h, int w, int oh, int ow, sdw_upscaler u) {
    float *x = malloc(sizeof(float) * C * h * w), *y = malloc(sizeof(float) * C * oh * ow);
    double *wh = malloc(sizeof(double) * oh * h), *ww = malloc(sizeof(double) * ow * w);
    double worst = 0, mx = 0;
    for (int c = 0; c < C; c++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++) {
                x[(c * h + i) * w + j] = test_value(c, i, j);
                mx = fmax(mx, fabs(test_value(c, i, j)));
            }
    sdw__latent_upscale(x, C, h, w, oh, ow, u, y);
    rule_weights(h, oh, u, wh);
    rule_weights(w, ow, u, ww);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < oh; i++)
            for (int j = 0; j < ow; j++) {
                double ref = 0;
                for (int a = 0; a < h; a++)
                    for (int b = 0; b < w; b++)
                        ref += wh[i * h + a] * ww[j * w + b] * x[(c * h + a) * w + b];
                worst = fmax(worst, fabs(y[(c * oh + i) * ow + j] - ref));
            }
    free(x);
    free(y);
    free(wh);
    free(ww);
    return worst / mx;
}

static void test_latent_upscale_is_interpolate(void) {
    static const struct {
        int C, h, w, oh, ow;
    } sizes[] = {{4, 8, 8, 16, 16}, {2, 5, 7, 11, 13}, {1, 9, 6, 13, 9}, {3, 12, 10, 12, 10},
                 {2, 9, 9, 4, 5} /* shrinking: the antialiased filters widen */};
    for (int u = 0; u <= SDW_UPSCALE_LATENT_NEAREST_EXACT; u++)
        for (size_t k = 0; k < SDW_ARRAY_LEN(sizes); k++) {
            const double e = rule_error(sizes[k].C, sizes[k].h, sizes[k].w, sizes[k].oh,
                                        sizes[k].ow, (sdw_upscaler)u);
            if (e > 2e-6)
                fprintf(stderr, "  %s %dx%d -> %dx%d: relative error %.3g\n",
                        sdw_upscaler_str((sdw_upscaler)u), sizes[k].h, sizes[k].w, sizes[k].oh,
                        sizes[k].ow, e);
            /* nearest is a copy; the others' float32 rounding of indices and weights */
            ASSERT_TRUE(u >= SDW_UPSCALE_LATENT_NEAREST ? e == 0 : e <= 2e-6);
        }
    /* torch 1.13's F.interpolate of test_value(0, y, x) 3x4 -> 5x6, in sdw_upscaler's order */
    static const float torch_ref[6][30] = {
        {-1.6666666f, -0.83333331f, 0.27777785f, 1.388889f, 0.66666639f, -0.33333334f,
         -1.2666667f, -0.43333328f, 0.43333337f, 0.5666666f, 0.33333325f, 0.066666715f,
         -0.66666663f, 0.16666661f, 0.66666639f, -0.66666675f, -0.16666642f, 0.66666675f,
         -0.066666588f, -0.3333334f, -0.56666678f, -0.43333328f, 0.43333358f, 1.2666668f,
         0.33333334f, -0.66666663f, -1.3888887f, -0.2777777f, 0.83333349f, 1.6666666f},
        {-1.6666666f, -0.83333331f, 0.27777791f, 1.3888891f, 0.66666663f, -0.33333334f,
         -1.2666667f, -0.43333331f, 0.43333337f, 0.56666654f, 0.33333328f, 0.066666707f,
         -0.66666669f, 0.16666666f, 0.66666651f, -0.66666698f, -0.16666666f, 0.66666669f,
         -0.066666536f, -0.33333343f, -0.5666669f, -0.43333325f, 0.43333346f, 1.2666668f,
         0.33333334f, -0.66666663f, -1.3888887f, -0.27777749f, 0.83333331f, 1.6666666f},
        {-1.907343f, -1.1185834f, 0.37922496f, 1.8660523f, 0.93591648f, -0.63349956f,
         -1.5182588f, -0.38345817f, 0.75474465f, 0.64650369f, 0.26945817f, -0.0674484f,
         -0.81134272f, 0.3541666f, 0.82870346f, -0.82870388f, -0.35416639f, 0.81134242f,
         0.067448772f, -0.26945859f, -0.64650464f, -0.75474501f, 0.38345879f, 1.5182588f,
         0.63350016f, -0.93591672f, -1.8660526f, -0.37922531f, 1.1185836f, 1.9073426f},
        {-1.8517872f, -1.072142f, 0.28125766f, 1.7850422f, 0.77691448f, -0.55859011f,
         -1.4811467f, -0.5118525f, 0.61041462f, 0.72302234f, 0.32133448f, -0.074332371f,
         -0.77631557f, 0.2352941f, 0.83641976f, -0.83641994f, -0.23529412f, 0.77631599f,
         0.074332274f, -0.32133469f, -0.72302318f, -0.61041397f, 0.51185268f, 1.4811472f,
         0.55858946f, -0.77691454f, -1.7850429f, -0.28125679f, 1.072142f, 1.8517876f},
        {-1.6666666f, -1.6666666f, 0.0f, 1.6666666f, 1.6666666f, -0.33333334f, -1.6666666f,
         -1.6666666f, 0.0f, 1.6666666f, 1.6666666f, -0.33333334f, -0.66666669f, -0.66666669f,
         1.0f, -1.0f, -1.0f, 0.66666669f, -0.66666669f, -0.66666669f, 1.0f, -1.0f, -1.0f,
         0.66666669f, 0.33333334f, 0.33333334f, -1.6666666f, 0.0f, 0.0f, 1.6666666f},
        {-1.6666666f, 0.0f, 0.0f, 1.6666666f, -0.33333334f, -0.33333334f, -1.6666666f, 0.0f,
         0.0f, 1.6666666f, -0.33333334f, -0.33333334f, -0.66666669f, 1.0f, 1.0f, -1.0f,
         0.66666669f, 0.66666669f, 0.33333334f, -1.6666666f, -1.6666666f, 0.0f, 1.6666666f,
         1.6666666f, 0.33333334f, -1.6666666f, -1.6666666f, 0.0f, 1.6666666f, 1.6666666f},
    };
    float x[12], y[30];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) x[i * 4 + j] = test_value(0, i, j);
    for (int u = 0; u <= SDW_UPSCALE_LATENT_NEAREST_EXACT; u++) {
        sdw__latent_upscale(x, 1, 3, 4, 5, 6, (sdw_upscaler)u, y);
        double worst = 0;
        for (int i = 0; i < 30; i++) worst = fmax(worst, fabs(y[i] - torch_ref[u][i]));
        fprintf(stderr, "  %-28s vs torch: max |diff| %.3g\n", sdw_upscaler_str((sdw_upscaler)u),
                worst);
        ASSERT_TRUE(u >= SDW_UPSCALE_LATENT_NEAREST ? worst == 0 : worst <= 1e-6);
    }
}

/* ---- image upscalers ---- */

static bool same_image(const sdw_image *a, const sdw_image *b) {
    return a->width == b->width && a->height == b->height && a->channels == b->channels &&
           !memcmp(a->data, b->data, (size_t)a->width * a->height * a->channels);
}

static void test_image_upscalers(void) {
    sdw_image im = {.width = 64, .height = 48, .channels = 3, .data = malloc(64 * 48 * 3)};
    for (int i = 0; i < 64 * 48 * 3; i++) im.data[i] = (uint8_t)((i * 37 + (i / 192) * 11) % 256);
    sdw_image got, a, b, c;
    /* "None": one Lanczos resize */
    sdw__image_upscale(&im, 83, 62, SDW_UPSCALE_NONE, &got);
    sdw_image_resize(&im, 83, 62, &a);
    ASSERT_TRUE(same_image(&got, &a));
    sdw_image_free(&got);
    sdw_image_free(&a);
    /* "Lanczos" to 83x62: scale max(83/64, 62/48) = 1.296875 -> int(64 s) x int(48 s) = 83x62,
     * then to the multiple of 8 below (80x56), then to the size */
    sdw__image_upscale(&im, 83, 62, SDW_UPSCALE_LANCZOS, &got);
    sdw_image_resize(&im, 83, 62, &a);
    sdw_image_resize(&a, 80, 56, &b);
    sdw_image_resize(&b, 83, 62, &c);
    ASSERT_TRUE(same_image(&got, &c));
    ASSERT_TRUE(!same_image(&got, &a)); /* the detour shows */
    sdw_image_free(&got);
    sdw_image_free(&a);
    sdw_image_free(&b);
    sdw_image_free(&c);
    /* by 2 the chain is one resize */
    sdw__image_upscale(&im, 128, 96, SDW_UPSCALE_LANCZOS, &got);
    sdw_image_resize(&im, 128, 96, &a);
    ASSERT_TRUE(same_image(&got, &a));
    sdw_image_free(&got);
    sdw_image_free(&a);
    /* "Nearest" by 2: Pillow's nearest neighbour, source (x + 0.5) / 2 */
    sdw__image_upscale(&im, 128, 96, SDW_UPSCALE_NEAREST, &got);
    bool ok = got.width == 128 && got.height == 96;
    for (int y = 0; ok && y < 96; y++)
        for (int x = 0; ok && x < 128; x++)
            ok = !memcmp(got.data + (y * 128 + x) * 3, im.data + ((y / 2) * 64 + x / 2) * 3, 3);
    ASSERT_TRUE(ok);
    sdw_image_free(&got);
    /* shrinking: every upscaler is the plain Lanczos resize */
    sdw__image_upscale(&im, 40, 30, SDW_UPSCALE_NEAREST, &got);
    sdw_image_resize(&im, 40, 30, &a);
    ASSERT_TRUE(same_image(&got, &a));
    sdw_image_free(&got);
    sdw_image_free(&a);
    sdw_image_free(&im);
}

/* ---- the second size ---- */

static const char *const k_samplers[] = {"euler", NULL};
static const char *const k_schedulers[] = {"default", NULL};

static sdw_capabilities test_caps(void) {
    return (sdw_capabilities){.txt2img = true, .img2img = true, .supports_guidance = true,
                              .default_width = 512, .default_height = 512, .default_steps = 20,
                              .default_guidance = 7.5f, .size_multiple = 8, .min_size = 64,
                              .max_size = 4096, .max_steps = 1000, .samplers = k_samplers,
                              .default_sampler = "euler", .schedulers = k_schedulers};
}

static sdw_status resolve_hires(int w, int h, double scale, int rx, int ry, sdw_request *out,
                                sdw_error *err) {
    const sdw_capabilities caps = test_caps();
    sdw_request r = sdw_request_default();
    r.prompt = "x";
    r.width = w;
    r.height = h;
    r.hires = (sdw_hires){.enable = true, .scale = scale, .resize_width = rx,
                          .resize_height = ry, .strength = -1};
    return sdw_request_resolve(&r, &caps, out, err);
}

static void test_second_size(void) {
    static const struct {
        int w, h;
        double scale;
        int rx, ry, want_w, want_h, up_w, up_h;
    } cases[] = {
        {512, 768, 0, 0, 0, 1024, 1536, 1024, 1536},     /* default scale 2 */
        {512, 512, 1.3, 0, 0, 664, 664, 665, 665},       /* int(665.6), rounded to 8 */
        {512, 768, 0, 1024, 0, 1024, 1536, 1024, 1536},  /* x only: y = 1024 * 768 // 512 */
        {512, 768, 0, 0, 1000, 664, 1000, 666, 1000},    /* y only: x = 1000 * 512 // 768 */
        {512, 768, 0, 1024, 1024, 1024, 1024, 1024, 1536}, /* cover 1024 wide, crop */
        {512, 768, 0, 1536, 1024, 1536, 1024, 1536, 2304}, /* src 0.67 < 1.5: by width */
        {768, 512, 0, 1024, 1024, 1024, 1024, 1536, 1024}, /* src 1.5 >= 1: by height */
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(cases); i++) {
        sdw_request r;
        sdw_error err = {0};
        ASSERT_OK(resolve_hires(cases[i].w, cases[i].h, cases[i].scale, cases[i].rx, cases[i].ry,
                                &r, &err),
                  &err);
        ASSERT_EQ_INT(r.hires.width, cases[i].want_w);
        ASSERT_EQ_INT(r.hires.height, cases[i].want_h);
        ASSERT_EQ_INT(r.hires.up_width, cases[i].up_w);
        ASSERT_EQ_INT(r.hires.up_height, cases[i].up_h);
        ASSERT_TRUE(r.hires.strength == SDW_HIRES_DEFAULT_STRENGTH);
        /* resolving again changes nothing */
        sdw_request again;
        const sdw_capabilities caps = test_caps();
        ASSERT_OK(sdw_request_resolve(&r, &caps, &again, &err), &err);
        ASSERT_EQ_INT(again.hires.width, r.hires.width);
    }
}

static void test_refusals(void) {
    const sdw_capabilities caps = test_caps();
    sdw_request r = sdw_request_default(), out;
    sdw_error err = {0};
    r.prompt = "x";
    r.hires = (sdw_hires){.enable = true, .strength = 0};
    ASSERT_STATUS(sdw_request_resolve(&r, &caps, &out, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "hires denoising strength 0 is out of range (0, 1]");
    r.hires = (sdw_hires){.enable = true, .strength = 0.01, .steps = 20};
    ASSERT_STATUS(sdw_request_resolve(&r, &caps, &out, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "need a schedule of 2000 steps");
    r.hires = (sdw_hires){.enable = true, .scale = 9, .strength = -1};
    ASSERT_STATUS(sdw_request_resolve(&r, &caps, &out, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "hires scale 9 is out of range");
    r.hires = (sdw_hires){.enable = true, .scale = -1, .strength = -1};
    ASSERT_STATUS(sdw_request_resolve(&r, &caps, &out, &err), SDW_E_INVALID_ARG);
    r.hires = (sdw_hires){.enable = true, .scale = 0.1, .strength = -1};
    ASSERT_STATUS(sdw_request_resolve(&r, &caps, &out, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "out of the model's range [64, 4096]");
    r.width = 512;
    r.height = 768;
    r.hires = (sdw_hires){.enable = true, .resize_width = 4096, .resize_height = 1024,
                          .strength = -1};
    ASSERT_STATUS(sdw_request_resolve(&r, &caps, &out, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "would be enlarged to 4096x6144");
    r.width = r.height = 0;
    r.hires = (sdw_hires){.enable = true, .upscaler = SDW_UPSCALE_COUNT, .strength = -1};
    ASSERT_STATUS(sdw_request_resolve(&r, &caps, &out, &err), SDW_E_INVALID_ARG);
    /* text-to-image only, on a model that can run image-to-image */
    sdw_image img = {.width = 64, .height = 64, .channels = 3, .data = (uint8_t[64 * 64 * 3]){0}};
    r.hires = (sdw_hires){.enable = true, .strength = -1};
    r.init_image = &img;
    ASSERT_STATUS(sdw_request_resolve(&r, &caps, &out, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "text-to-image only");
    r.init_image = NULL;
    sdw_capabilities no_i2i = caps;
    no_i2i.img2img = false;
    ASSERT_STATUS(sdw_request_resolve(&r, &no_i2i, &out, &err), SDW_E_UNSUPPORTED);
    /* off: the other fields are not looked at */
    r.hires = (sdw_hires){.enable = false, .strength = 7, .scale = -3};
    ASSERT_OK(sdw_request_resolve(&r, &caps, &out, &err), &err);
    /* names */
    sdw_upscaler u = SDW_UPSCALE_LATENT;
    ASSERT_OK(sdw_upscaler_parse("latent-bicubic-antialiased", &u, &err), &err);
    ASSERT_EQ_INT(u, SDW_UPSCALE_LATENT_BICUBIC_ANTIALIASED);
    ASSERT_OK(sdw_upscaler_parse("Latent (nearest-exact)", &u, &err), &err);
    ASSERT_EQ_INT(u, SDW_UPSCALE_LATENT_NEAREST_EXACT);
    ASSERT_OK(sdw_upscaler_parse("lanczos", &u, &err), &err);
    ASSERT_EQ_INT(u, SDW_UPSCALE_LANCZOS);
    ASSERT_STATUS(sdw_upscaler_parse("R-ESRGAN 4x+", &u, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "neural upscalers such as ESRGAN are not installed");
    ASSERT_EQ_INT(u, SDW_UPSCALE_LANCZOS); /* untouched */
}

/* ---- the two passes on tiny-sd15 ---- */

#define MAX_TAPS 64

typedef struct tapped {
    int n;
    char name[MAX_TAPS][40];
    float *data[MAX_TAPS];
    size_t len[MAX_TAPS];
} tapped;

static void keep_tap(void *user, const char *name, const float *data, int n_dims,
                     const int64_t *shape) {
    tapped *t = user;
    if (strncmp(name, "hires.", 6) && !strstr(name, ".latents") && strncmp(name, "noise.", 6))
        return;
    if (t->n >= MAX_TAPS) return;
    size_t n = 1;
    for (int i = 0; i < n_dims; i++) n *= (size_t)shape[i];
    snprintf(t->name[t->n], sizeof t->name[t->n], "%s", name);
    t->data[t->n] = malloc(n * sizeof(float));
    memcpy(t->data[t->n], data, n * sizeof(float));
    t->len[t->n++] = n;
}

static const float *find_tap(const tapped *t, const char *name, size_t *len) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->name[i], name)) {
            if (len) *len = t->len[i];
            return t->data[i];
        }
    return NULL;
}

static void tapped_free(tapped *t) {
    for (int i = 0; i < t->n; i++) free(t->data[i]);
    t->n = 0;
}

typedef struct steps_seen {
    int n, last, total;
    atomic_int *stop;
    int stop_at;
} steps_seen;

static bool count_steps(void *user, int step, int total, const sdw_image *preview) {
    steps_seen *s = user;
    (void)preview;
    s->n++;
    s->last = step;
    s->total = total;
    if (s->stop && step == s->stop_at) atomic_store(s->stop, SDW_STOP_INTERRUPT);
    return true;
}

static sdw_request hires_request(sdw_upscaler u) {
    sdw_request r = sdw_request_default();
    r.prompt = "a photo of a cat";
    r.width = r.height = 64;
    r.steps = 4;
    r.guidance = 7.5f;
    r.seed = 42;
    r.sampler = "euler_a"; /* ancestral: the second pass's generator is also the sampler's */
    r.hires = (sdw_hires){.enable = true, .scale = 1.5, .upscaler = u, .steps = 3,
                          .strength = 0.6};
    return r;
}

/* The second pass rebuilt from its definition: cond at the second size, a sampler of
 * int(3 / 0.6) = 5 steps started at step 2, x = add_noise(start, randn(seed)), 3 steps with
 * classifier-free guidance, the ancestral noise from the same generator. */
static sdw_status img2img_by_definition(sdw_image_model *m, const sdw_request *resolved,
                                        const float *start, float *x, sdw_error *err) {
    sdw_diffusion *d = (sdw_diffusion *)m;
    const int C = d->latent_channels, h = 48, w = 48;
    const size_t n = (size_t)C * h * w;
    sdw_request r = *resolved;
    r.width = r.height = 96;
    r.steps = 3;
    r.hires.enable = false;
    void *cond = NULL;
    bool truncated = false; /* the hook ORs into it */
    sdw_sampler *s = NULL;
    float *in = malloc(2 * n * sizeof(float)), *eps = malloc(2 * n * sizeof(float));
    sdw_status st = d->hooks->condition(d, &r, 2, &cond, &truncated, err);
    if (!st)
        st = sdw_sampler_create("euler_a", &d->sched, &(sdw_sampler_params){.steps = 5}, &s, err);
    if (!st) st = sdw_sampler_set_begin(s, 2, err);
    if (!st) {
        sdw_rng rng;
        sdw_rng_init(&rng, SDW_RNG_TORCH, 42);
        sdw_rng_randn(&rng, eps, n);
        sdw_sampler_add_noise(s, start, eps, x, n);
        for (int i = 2; i < 5 && !st; i++) {
            sdw_sampler_scale_model_input(s, i, x, in, n);
            memcpy(in + n, in, n * sizeof(float));
            st = d->hooks->denoise(d, cond, in, 2, h, w, sdw_sampler_timestep(s, i), 0, eps, err);
            for (size_t j = 0; j < n && !st; j++) eps[j] = eps[j] + 7.5f * (eps[n + j] - eps[j]);
            if (!st) st = sdw_sampler_step(s, i, eps, x, n, &rng, err);
        }
    }
    d->hooks->cond_free(cond);
    sdw_sampler_destroy(s);
    free(in);
    free(eps);
    return st;
}

static void test_latent_second_pass_is_img2img(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), NULL, &m, &err), &err);
    tapped t = {0};
    sdw_diffusion_set_tap(m, keep_tap, &t);
    sdw_request req = hires_request(SDW_UPSCALE_LATENT), r;
    sdw_image img = {0};
    sdw_result_info info = {0};
    steps_seen seen = {0};
    sdw_status s = sdw_request_resolve(&req, sdw_model_capabilities(m), &r, &err);
    if (!s) s = sdw_model_generate(m, &r, count_steps, &seen, &img, &info, &err);
    float *x = malloc(4 * 48 * 48 * sizeof(float)), *up = malloc(4 * 48 * 48 * sizeof(float));
    size_t n = 0;
    const float *first = find_tap(&t, "step03.latents", NULL);
    const float *start = find_tap(&t, "hires.latents", &n);
    const float *last = find_tap(&t, "step06.latents", NULL);
    const float *noise = find_tap(&t, "noise.04", NULL); /* after the first pass's four */
    if (!s && first && start) sdw__latent_upscale(first, 4, 32, 32, 48, 48, SDW_UPSCALE_LATENT, up);
    sdw_diffusion_set_tap(m, NULL, NULL);
    if (!s && start) s = img2img_by_definition(m, &r, start, x, &err);
    double dx = 0, du = 0, dn = 0;
    float *eps = malloc(4 * 48 * 48 * sizeof(float));
    sdw_rng rng;
    sdw_rng_init(&rng, SDW_RNG_TORCH, 42);
    sdw_rng_randn(&rng, eps, 4 * 48 * 48);
    for (size_t i = 0; !s && last && start && noise && i < 4 * 48 * 48; i++) {
        dx = fmax(dx, fabs(x[i] - last[i]));
        du = fmax(du, fabs(up[i] - start[i]));
        dn = fmax(dn, fabs(eps[i] - noise[i]));
    }
    fprintf(stderr, "  latent: upscale %g, start noise %g, second pass %g (max |diff|)\n", du, dn,
                dx);
    const bool sized = img.width == 96 && img.height == 96;
    sdw_image_free(&img);
    tapped_free(&t);
    free(x);
    free(up);
    free(eps);
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(first && start && last && noise && n == 4 * 48 * 48);
    ASSERT_TRUE(du == 0 && dn == 0 && dx == 0);
    ASSERT_TRUE(sized);
    ASSERT_TRUE(info.hires && info.hires_width == 96 && info.hires_height == 96);
    ASSERT_TRUE(info.width == 64 && info.steps == 4 && info.hires_calls == 3);
    ASSERT_EQ_INT(info.n_denoiser_calls, 7);
    ASSERT_EQ_INT(info.steps_done, 7);
    /* the first pass's first call, one of the seven the denoising time counts */
    ASSERT_TRUE(info.seconds_first_call > 0 && info.seconds_first_call < info.seconds_denoise);
    ASSERT_TRUE(info.strength == 0.6);
    /* progress counts both passes */
    ASSERT_EQ_INT(seen.n, 7);
    ASSERT_EQ_INT(seen.total, 7);
    ASSERT_EQ_INT(seen.last, 7);
    char text[1024];
    sdw_infotext_format(&r, &info, "models/tiny-sd15", text, sizeof text);
    ASSERT_STR_CONTAINS(text, "Size: 64x64, Model: tiny-sd15, Denoising strength: 0.6, RNG: CPU, "
                              "Hires upscale: 1.5, Hires steps: 3, Hires upscaler: Latent");
}

static void test_image_second_pass_start(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), NULL, &m, &err), &err);
    sdw_diffusion *d = (sdw_diffusion *)m;
    tapped t = {0};
    sdw_diffusion_set_tap(m, keep_tap, &t);
    sdw_request req = hires_request(SDW_UPSCALE_LANCZOS);
    req.sampler = "euler";
    sdw_image img = {0};
    sdw_result_info info = {0};
    sdw_status s = sdw_model_generate(m, &req, NULL, NULL, &img, &info, &err);
    const float *first = find_tap(&t, "step03.latents", NULL);
    const float *picture = find_tap(&t, "hires.image", NULL);
    const float *start = find_tap(&t, "hires.latents", NULL);
    /* the picture: VAE decode, (x + 1) / 2 clamped, 255 x truncated, Lanczos 64 -> 96 */
    int dp = -1;
    double ds = -1;
    if (!s && first && picture && start) {
        float z[4 * 32 * 32], zn[4 * 32 * 32];
        for (int i = 0; i < 4 * 32 * 32; i++) z[i] = first[i] / d->vae_scaling + d->vae_shift;
        sdw_nchw_to_nhwc(z, 1, 4, 32, 32, zn);
        float *pix = malloc(64 * 64 * 3 * sizeof(float));
        sdw_vae_decode(d->vae, zn, 1, 32, 32, pix);
        sdw_image small = {.width = 64, .height = 64, .channels = 3, .data = malloc(64 * 64 * 3)};
        for (int i = 0; i < 64 * 64 * 3; i++) {
            float v = (pix[i] + 1.0f) / 2.0f;
            small.data[i] = (uint8_t)(255.0f * (v < 0 ? 0 : v > 1 ? 1 : v));
        }
        sdw_image big;
        sdw_image_resize(&small, 96, 96, &big);
        dp = 0;
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 96 * 96; p++)
                dp = SDW_MAX(dp, abs((int)picture[c * 96 * 96 + p] - big.data[p * 3 + c]));
        /* the start: (mean + std · eps − shift) · scaling, eps the seed's first CPU randn */
        float *in = malloc(96 * 96 * 3 * sizeof(float));
        for (int i = 0; i < 96 * 96 * 3; i++) in[i] = (float)big.data[i] / 255.0f * 2.0f - 1.0f;
        float mean[4 * 48 * 48], std[4 * 48 * 48], mc[4 * 48 * 48], sc[4 * 48 * 48],
            eps[4 * 48 * 48];
        s = sdw_vae_encode(d->vae, in, 1, 96, 96, mean, std, &err);
        sdw_nhwc_to_nchw(mean, 1, 48, 48, 4, mc);
        sdw_nhwc_to_nchw(std, 1, 48, 48, 4, sc);
        sdw_rng rng;
        sdw_rng_init(&rng, SDW_RNG_TORCH, 42);
        sdw_rng_randn(&rng, eps, 4 * 48 * 48);
        ds = 0;
        for (int i = 0; i < 4 * 48 * 48; i++)
            ds = fmax(ds, fabs((mc[i] + sc[i] * eps[i] - d->vae_shift) * d->vae_scaling -
                               start[i]));
        free(in);
        free(pix);
        sdw_image_free(&small);
        sdw_image_free(&big);
    }
    fprintf(stderr, "  Lanczos: picture %d levels, start latents %g (max |diff|)\n", dp, ds);
    const bool sized = img.width == 96 && img.height == 96;
    sdw_image_free(&img);
    tapped_free(&t);
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(dp == 0 && ds == 0);
    ASSERT_TRUE(sized && info.hires_calls == 3);
}

/* Both resize sides with another aspect: the first pass covers them (64x64 -> 96x96) and the
 * middle rows are kept (A1111's truncate_y // 2 from the top). */
static void test_resize_crop(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), NULL, &m, &err), &err);
    tapped t = {0};
    sdw_diffusion_set_tap(m, keep_tap, &t);
    sdw_request req = hires_request(SDW_UPSCALE_LATENT_BICUBIC_ANTIALIASED);
    req.sampler = "euler";
    req.hires.scale = 0;
    req.hires.resize_width = 96;
    req.hires.resize_height = 64;
    sdw_image img = {0};
    sdw_result_info info = {0};
    sdw_status s = sdw_model_generate(m, &req, NULL, NULL, &img, &info, &err);
    const float *first = find_tap(&t, "step03.latents", NULL);
    const float *start = find_tap(&t, "hires.latents", NULL);
    double worst = -1;
    if (!s && first && start) {
        float *up = malloc(4 * 48 * 48 * sizeof(float));
        sdw__latent_upscale(first, 4, 32, 32, 48, 48, SDW_UPSCALE_LATENT_BICUBIC_ANTIALIASED, up);
        worst = 0;
        for (int c = 0; c < 4; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 48; x++)
                    worst = fmax(worst, fabs(start[(c * 32 + y) * 48 + x] -
                                             up[(c * 48 + y + 8) * 48 + x]));
        free(up);
    }
    const bool sized = img.width == 96 && img.height == 64;
    char text[1024];
    sdw_request r;
    sdw_request_resolve(&req, sdw_model_capabilities(m), &r, NULL);
    sdw_infotext_format(&r, &info, NULL, text, sizeof text);
    sdw_image_free(&img);
    tapped_free(&t);
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(worst == 0 && sized);
    ASSERT_STR_CONTAINS(text, "Hires resize: 96x64, Hires steps: 3, Hires upscaler: Latent "
                              "(bicubic antialiased)");
}

/* An interrupt in the first pass skips the second, as A1111's sample_hr_pass: the image is the
 * first pass's, at the first size. */
static void test_interrupt_in_first_pass(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), NULL, &m, &err), &err);
    atomic_int stop = SDW_STOP_NONE;
    sdw_request req = hires_request(SDW_UPSCALE_NONE);
    req.stop = &stop;
    steps_seen seen = {.stop = &stop, .stop_at = 2};
    sdw_image img = {0};
    sdw_result_info info = {0};
    sdw_status s = sdw_model_generate(m, &req, count_steps, &seen, &img, &info, &err);
    const bool small = img.width == 64 && img.height == 64;
    sdw_image_free(&img);
    sdw_model_destroy(m);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(small && info.interrupted && !info.hires);
    ASSERT_EQ_INT(info.steps_done, 2);
    ASSERT_EQ_INT(seen.total, 7);
}

int main(void) {
    RUN(test_latent_upscale_is_interpolate);
    RUN(test_image_upscalers);
    RUN(test_second_size);
    RUN(test_refusals);
    RUN(test_latent_second_pass_is_img2img);
    RUN(test_image_second_pass_start);
    RUN(test_resize_crop);
    RUN(test_interrupt_in_first_pass);
    return sdw_test_finish();
}
