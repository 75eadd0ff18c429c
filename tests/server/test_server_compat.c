/* The OpenAI Images API and the AUTOMATIC1111 API of `sdw serve` (tiny fixture model): field
 * names and types as their clients expect, images equal to the native API's for the same seed,
 * and their own error shapes for bad input. */
#include "sdw_http.h"
#include "sdw_test.h"

#include "io/base64.h"
#include "io/png.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static sdw_test_server g_srv;
static int g_port;

static json_t *post(const char *path, const char *json, int *status) {
    sdw_http_resp r;
    *status = -1;
    if (sdw_http_post_json(g_port, path, json, &r) != 0) return NULL;
    *status = r.status;
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    if (!j) fprintf(stderr, "not JSON: %s\n", r.body);
    sdw_http_resp_free(&r);
    return j;
}

static json_t *get(const char *path, int *status) {
    sdw_http_resp r;
    *status = -1;
    if (sdw_http_request(g_port, "GET", path, NULL, NULL, 0, &r) != 0) return NULL;
    *status = r.status;
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    sdw_http_resp_free(&r);
    return j;
}

/* Decodes base64 image text into raw bytes (new) and, for PNGs, pixels. */
static uint8_t *unb64(const char *s, size_t *n) {
    uint8_t *b = NULL;
    if (!s || sdw_base64_decode(s, strlen(s), &b, n, NULL)) return NULL;
    return b;
}

/* The native API's image for these settings (reference for the other dialects). */
static uint8_t *native_png(const char *json, size_t *n) {
    int st = -1;
    json_t *j = post("/v1/jobs", json, &st);
    if (!j || st != 202) return NULL;
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s/stream", json_string_value(json_object_get(j, "job_id")));
    json_decref(j);
    sdw_sse *s = sdw_sse_open(g_port, path, NULL, NULL);
    char ev[64], *data;
    uint8_t *png = NULL;
    while (s && sdw_sse_next(s, ev, sizeof ev, &data, 60) == 0) {
        if (!strcmp(ev, "complete")) {
            json_t *c = json_loads(data, 0, NULL);
            png = unb64(json_string_value(json_object_get(c, "image")), n);
            json_decref(c);
        }
        free(data);
    }
    sdw_sse_close(s);
    return png;
}

static void expect_openai_error(json_t *j, int st, int want, const char *param, const char *msg) {
    ASSERT_EQ_INT(st, want);
    json_t *e = json_object_get(j, "error");
    ASSERT_TRUE(json_is_object(e));
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(e, "type")),
                        want == 401 ? "authentication_error" : "invalid_request_error");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(e, "message")), msg);
    if (param) ASSERT_STR_CONTAINS(json_string_value(json_object_get(e, "param")), param);
}

static void test_openai_generations(void) {
    int st = -1;
    json_t *j = post("/v1/images/generations",
                     "{\"model\":\"dall-e-2\",\"prompt\":\"a photo of a cat\",\"n\":2,"
                     "\"size\":\"64x64\",\"response_format\":\"b64_json\",\"seed\":42,"
                     "\"steps\":4,\"sampler\":\"euler\",\"user\":\"tester\"}",
                     &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_TRUE(json_is_integer(json_object_get(j, "created")));
    json_t *data = json_object_get(j, "data");
    ASSERT_EQ_INT(json_array_size(data), 2);
    size_t n0, n1, nn;
    uint8_t *p0 = unb64(json_string_value(json_object_get(json_array_get(data, 0), "b64_json")), &n0);
    uint8_t *p1 = unb64(json_string_value(json_object_get(json_array_get(data, 1), "b64_json")), &n1);
    json_decref(j);
    ASSERT_TRUE(p0 && p1);
    sdw_png img;
    ASSERT_OK(sdw_png_read_mem(p0, n0, "openai", &img, NULL), NULL);
    ASSERT_EQ_INT(img.w, 64);
    ASSERT_EQ_INT(img.h, 64);
    sdw_png_deinit(&img);
    /* Image 0 has seed 42, image 1 seed 43: each equals the native API's for that seed. */
    uint8_t *n42 = native_png("{\"prompt\":\"a photo of a cat\",\"width\":64,\"height\":64,"
                              "\"steps\":4,\"seed\":42,\"sampler\":\"euler\"}", &nn);
    ASSERT_EQ_INT(sdw_test_png_bytes_max_diff(p0, n0, n42, nn), 0);
    free(n42);
    n42 = native_png("{\"prompt\":\"a photo of a cat\",\"width\":64,\"height\":64,"
                     "\"steps\":4,\"seed\":43,\"sampler\":\"euler\"}", &nn);
    ASSERT_EQ_INT(sdw_test_png_bytes_max_diff(p1, n1, n42, nn), 0);
    free(n42);
    free(p0);
    free(p1);
}

static void test_openai_output_formats_and_url(void) {
    int st = -1;
    static const struct { const char *fmt; const char *magic; size_t off; } f[] = {
        {"jpeg", "\xff\xd8\xff", 0}, {"webp", "WEBP", 8}, {"png", "\x89PNG", 0}};
    for (size_t i = 0; i < 3; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"prompt\":\"x\",\"size\":\"64x64\",\"steps\":1,"
                                    "\"output_format\":\"%s\",\"output_compression\":80}", f[i].fmt);
        json_t *j = post("/v1/images/generations", body, &st);
        ASSERT_EQ_INT(st, 200);
        size_t n;
        uint8_t *b = unb64(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "b64_json")), &n);
        ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "output_format")), f[i].fmt);
        json_decref(j);
        ASSERT_TRUE(b && n > 12);
        ASSERT_TRUE(memcmp(b + f[i].off, f[i].magic, strlen(f[i].magic)) == 0);
        free(b);
    }
    json_t *j = post("/v1/images/generations",
                     "{\"prompt\":\"x\",\"size\":\"64x64\",\"steps\":1,\"response_format\":\"url\"}", &st);
    ASSERT_EQ_INT(st, 200);
    const char *url = json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "url"));
    ASSERT_STR_CONTAINS(url, "/v1/jobs/");
    const char *path = strstr(url + 7, "/");
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", path, NULL, NULL, 0, &r), 0);
    json_decref(j);
    ASSERT_EQ_INT(r.status, 200);
    ASSERT_TRUE(r.body_len > 8 && !memcmp(r.body, "\x89PNG", 4));
    sdw_http_resp_free(&r);
}

static void test_openai_errors_and_models(void) {
    int st = -1;
    json_t *j = post("/v1/images/generations", "{\"prompt\":\"x\",\"size\":\"big\"}", &st);
    expect_openai_error(j, st, 400, "size", "size 'big' must be WIDTHxHEIGHT");
    json_decref(j);
    j = post("/v1/images/generations", "{\"size\":\"64x64\"}", &st);
    expect_openai_error(j, st, 400, "prompt", "'prompt' is required");
    json_decref(j);
    j = post("/v1/images/generations", "{\"prompt\":\"x\",\"n\":9}", &st);
    expect_openai_error(j, st, 400, "n", "number of images 9 is out of range [1, 4]");
    json_decref(j);
    j = post("/v1/images/generations", "{\"prompt\":\"x\",\"size\":\"99999x64\"}", &st);
    expect_openai_error(j, st, 400, "size", "(this server's limit");
    json_decref(j);
    j = post("/v1/images/generations", "{\"prompt\":\"x\",\"size\":\"100x64\"}", &st);
    expect_openai_error(j, st, 400, "size", "width 100 is not a multiple of 8");
    json_decref(j);
    j = post("/v1/images/generations", "{\"prompt\":\"x\",\"output_format\":\"gif\"}", &st);
    expect_openai_error(j, st, 400, "output_format", "must be png, jpeg or webp");
    json_decref(j);
    j = post("/v1/images/generations", "{\"prompt\":\"x\",\"n\":\"two\"}", &st);
    expect_openai_error(j, st, 400, "n", "field 'n' must be an integer");
    json_decref(j);
    j = post("/v1/images/generations", "{\"prompt\":", &st);
    expect_openai_error(j, st, 400, NULL, "malformed JSON");
    json_decref(j);

    j = get("/v1/models", &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "object")), "list");
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(m, "id")), "tiny-sd15");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(m, "object")), "model");
    json_decref(j);
    j = get("/v1/models/tiny-sd15", &st);
    ASSERT_EQ_INT(st, 200);
    json_decref(j);
    j = get("/v1/models/gpt-image-1", &st);
    expect_openai_error(j, st, 404, "model", "'gpt-image-1' does not exist");
    json_decref(j);
}

/* multipart/form-data as the openai clients send it. */
static int post_edit(const char *const *parts /* name, filename|NULL, data, ... NULL */,
                     const size_t *lens, json_t **out) {
    const char *b = "sdwBoundary7MA4YWxkTrZu0gW";
    size_t cap = 1 << 20, n = 0;
    char *body = malloc(cap);
    for (int i = 0; parts[3 * i]; i++) {
        n += (size_t)sprintf(body + n, "--%s\r\nContent-Disposition: form-data; name=\"%s\"", b,
                             parts[3 * i]);
        if (parts[3 * i + 1])
            n += (size_t)sprintf(body + n, "; filename=\"%s\"\r\nContent-Type: image/png",
                                 parts[3 * i + 1]);
        n += (size_t)sprintf(body + n, "\r\n\r\n");
        memcpy(body + n, parts[3 * i + 2], lens[i]);
        n += lens[i];
        n += (size_t)sprintf(body + n, "\r\n");
    }
    n += (size_t)sprintf(body + n, "--%s--\r\n", b);
    char hdr[128];
    snprintf(hdr, sizeof hdr, "Content-Type: multipart/form-data; boundary=%s\r\n", b);
    sdw_http_resp r;
    int rc = sdw_http_request(g_port, "POST", "/v1/images/edits", hdr, body, n, &r);
    free(body);
    int st = rc == 0 ? r.status : -1;
    *out = json_loadb(r.body, r.body_len, 0, NULL);
    sdw_http_resp_free(&r);
    return st;
}

static void test_openai_edits(void) {
    uint8_t px[16 * 16 * 3] = {0}, *png;
    size_t n;
    ASSERT_OK(sdw_png_write_mem(px, 16, 16, 3, NULL, &png, &n, NULL), NULL);
    json_t *j;
    const char *p1[] = {"prompt", NULL, "a cat", NULL};
    size_t l1[] = {5};
    int st = post_edit(p1, l1, &j);
    expect_openai_error(j, st, 400, "image", "'image' is required");
    json_decref(j);
    const char *p2[] = {"image", "x.png", "not a png at all", "prompt", NULL, "a cat", NULL};
    size_t l2[] = {16, 5};
    st = post_edit(p2, l2, &j);
    expect_openai_error(j, st, 400, "image", "not a PNG");
    json_decref(j);
    const char *p3[] = {"image", "x.png", (const char *)png, "prompt", NULL, "a cat", NULL};
    size_t l3[] = {n, 5};
    st = post_edit(p3, l3, &j);
    expect_openai_error(j, st, 400, NULL, "init image 16x16 is smaller than the model's minimum 64x64");
    json_decref(j);
    free(png);
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_port, "POST", "/v1/images/edits",
                                   "Content-Type: application/json\r\n", "{}", 2, &r), 0);
    ASSERT_EQ_INT(r.status, 400);
    ASSERT_STR_CONTAINS(r.body, "multipart/form-data");
    sdw_http_resp_free(&r);
}

/* OpenAI edits run image-to-image without a mask and inpainting with one (a mask without alpha
 * is white = repaint; OpenAI's RGBA masks, transparent = repaint, give the same): each equals
 * the reference pipeline's image for the same settings. */
static void test_openai_edits_match_reference(void) {
    static const struct { const char *golden; int mask; } cases[] = {
        {"img2img-ddim", 0}, {"inpaint-ddim", 1}, {"inpaint-ddim", 2}};
    for (int c = 0; c < 3; c++) {
        size_t ni = 0, nm = 0, nr = 0;
        uint8_t *init = sdw_test_read_file(sdw_test_path("golden/tiny-sd15/%s/init_image.png", cases[c].golden), &ni);
        uint8_t *mask = cases[c].mask ? sdw_test_read_file(sdw_test_path("golden/tiny-sd15/%s/mask_image.png", cases[c].golden), &nm) : NULL;
        uint8_t *ref = sdw_test_read_file(sdw_test_path("golden/tiny-sd15/%s/image.png", cases[c].golden), &nr);
        ASSERT_TRUE(init && ref && (mask || !cases[c].mask));
        if (cases[c].mask == 2) { /* as OpenAI's: RGBA, alpha 0 where the mask is white */
            sdw_png g;
            ASSERT_OK(sdw_png_read_mem(mask, nm, "mask", &g, NULL), NULL);
            uint8_t *rgba = malloc((size_t)g.w * g.h * 4);
            for (int i = 0; i < g.w * g.h; i++) {
                memset(rgba + 4 * i, 90, 3);
                rgba[4 * i + 3] = g.pixels[i * g.channels] >= 128 ? 0 : 255;
            }
            free(mask);
            ASSERT_OK(sdw_png_write_mem(rgba, g.w, g.h, 4, NULL, &mask, &nm, NULL), NULL);
            free(rgba);
            sdw_png_deinit(&g);
        }
        const char *parts[] = {"image", "in.png", (const char *)init,
                               "prompt", NULL, "a photo of a cat",
                               "size", NULL, "64x64",
                               "steps", NULL, "4",
                               "seed", NULL, "42",
                               "sampler", NULL, "ddim",
                               "strength", NULL, "0.75",
                               cases[c].mask ? "mask" : NULL, "mask.png", (const char *)mask,
                               NULL};
        size_t lens[] = {ni, 16, 5, 1, 2, 4, 4, nm};
        json_t *j;
        int st = post_edit(parts, lens, &j);
        if (st != 200) fprintf(stderr, "%s\n", json_dumps(j, 0));
        ASSERT_EQ_INT(st, 200);
        size_t n;
        uint8_t *png = unb64(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "b64_json")), &n);
        json_decref(j);
        int d = sdw_test_png_bytes_max_diff(png, n, ref, nr);
        fprintf(stderr, "  edits (%s, mask %d): max diff vs reference %d levels\n", cases[c].golden,
                cases[c].mask, d);
        free(png);
        free(init);
        free(mask);
        free(ref);
        ASSERT_TRUE(d <= 2);
    }
}

/* A1111 img2img (with and without a mask) against the reference pipelines. */
static void test_a1111_img2img_matches_reference(void) {
    for (int c = 0; c < 2; c++) {
        const char *golden = c ? "inpaint-ddim" : "img2img-ddim";
        size_t ni = 0, nm = 0, nr = 0;
        uint8_t *init = sdw_test_read_file(sdw_test_path("golden/tiny-sd15/%s/init_image.png", golden), &ni);
        uint8_t *mask = c ? sdw_test_read_file(sdw_test_path("golden/tiny-sd15/%s/mask_image.png", golden), &nm) : NULL;
        uint8_t *ref = sdw_test_read_file(sdw_test_path("golden/tiny-sd15/%s/image.png", golden), &nr);
        ASSERT_TRUE(init && ref);
        char *bi = sdw_base64_encode(init, ni, NULL), *bm = mask ? sdw_base64_encode(mask, nm, NULL) : NULL;
        char *body = malloc(strlen(bi) + (bm ? strlen(bm) : 0) + 512);
        sprintf(body, "{\"init_images\":[\"%s\"],%s%s%s\"prompt\":\"a photo of a cat\",\"width\":64,"
                      "\"height\":64,\"steps\":4,\"cfg_scale\":7.5,\"seed\":42,\"sampler_name\":"
                      "\"DDIM\",\"denoising_strength\":0.75,\"mask_blur\":4,\"inpainting_fill\":1}",
                bi, bm ? "\"mask\":\"" : "", bm ? bm : "", bm ? "\"," : "");
        int st;
        json_t *j = post("/sdapi/v1/img2img", body, &st);
        free(body);
        free(bi);
        free(bm);
        ASSERT_EQ_INT(st, 200);
        size_t n;
        uint8_t *png = unb64(json_string_value(json_array_get(json_object_get(j, "images"), 0)), &n);
        json_t *info = json_loads(json_string_value(json_object_get(j, "info")), 0, NULL);
        ASSERT_TRUE(json_real_value(json_object_get(info, "denoising_strength")) == 0.75);
        json_decref(info);
        json_decref(j);
        int d = sdw_test_png_bytes_max_diff(png, n, ref, nr);
        fprintf(stderr, "  img2img (%s): max diff vs reference %d levels\n", golden, d);
        free(png);
        free(init);
        free(mask);
        free(ref);
        ASSERT_TRUE(d <= 2);
    }
}

static void test_a1111_txt2img(void) {
    int st = -1;
    /* What A1111 clients send, including fields this worker ignores. */
    json_t *j = post("/sdapi/v1/txt2img",
                     "{\"prompt\":\"a photo of a cat\",\"negative_prompt\":\"\",\"width\":64,"
                     "\"height\":64,\"steps\":2,\"cfg_scale\":7.5,\"seed\":42,\"sampler_name\":"
                     "\"Euler\",\"batch_size\":2,\"n_iter\":1,\"styles\":[],\"restore_faces\":false,"
                     "\"override_settings\":{},\"send_images\":true,\"save_images\":false,"
                     "\"alwayson_scripts\":{}}",
                     &st);
    ASSERT_EQ_INT(st, 200);
    json_t *images = json_object_get(j, "images");
    ASSERT_EQ_INT(json_array_size(images), 2);
    ASSERT_TRUE(json_is_object(json_object_get(j, "parameters")));
    ASSERT_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "parameters"), "steps")), 2);
    const char *info_s = json_string_value(json_object_get(j, "info"));
    ASSERT_TRUE(info_s != NULL); /* A1111's info is a JSON *string* */
    json_t *info = json_loads(info_s, 0, NULL);
    ASSERT_EQ_INT(json_integer_value(json_object_get(info, "seed")), 42);
    ASSERT_EQ_INT(json_integer_value(json_array_get(json_object_get(info, "all_seeds"), 1)), 43);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(info, "sampler_name")), "Euler");
    ASSERT_STR_CONTAINS(json_string_value(json_array_get(json_object_get(info, "infotexts"), 0)),
                        "Steps: 2, Sampler: Euler, CFG scale: 7.5, Seed: 42");
    json_decref(info);
    size_t n, nn;
    uint8_t *p = unb64(json_string_value(json_array_get(images, 0)), &n);
    json_decref(j);
    uint8_t *ref = native_png("{\"prompt\":\"a photo of a cat\",\"width\":64,\"height\":64,"
                              "\"steps\":2,\"seed\":42,\"sampler\":\"euler\"}", &nn);
    ASSERT_EQ_INT(sdw_test_png_bytes_max_diff(p, n, ref, nn), 0);
    free(p);
    free(ref);

    /* seed -1 = random: the seed used is reported. Old-style "DPM++ 2M Karras" is understood. */
    j = post("/sdapi/v1/txt2img", "{\"prompt\":\"x\",\"width\":64,\"height\":64,\"steps\":2,"
                                  "\"seed\":-1,\"sampler_name\":\"DPM++ 2M Karras\"}", &st);
    ASSERT_EQ_INT(st, 200);
    info = json_loads(json_string_value(json_object_get(j, "info")), 0, NULL);
    ASSERT_TRUE(json_integer_value(json_object_get(info, "seed")) >= 0);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(info, "scheduler")), "karras");
    json_decref(info);
    json_decref(j);
}

static void expect_a1111_error(json_t *j, int st, int want, const char *msg) {
    ASSERT_EQ_INT(st, want);
    ASSERT_TRUE(json_is_string(json_object_get(j, "error")));
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "detail")), msg);
}

static void test_a1111_errors_and_img2img(void) {
    int st = -1;
    json_t *j = post("/sdapi/v1/txt2img", "{\"prompt\":\"x\",\"sampler_name\":\"DPM++ SDE\"}", &st);
    expect_a1111_error(j, st, 400, "unknown sampler 'DPM++ SDE' (available: DDIM, PLMS, Euler, Euler a, DPM++ 2M");
    json_decref(j);
    j = post("/sdapi/v1/txt2img", "{\"prompt\":\"x\",\"steps\":\"many\"}", &st);
    expect_a1111_error(j, st, 400, "field 'steps' must be an integer");
    json_decref(j);
    j = post("/sdapi/v1/txt2img", "{\"prompt\":\"x\",\"enable_hr\":true,\"hr_upscaler\":\"ESRGAN_4x\"}",
             &st);
    expect_a1111_error(j, st, 400, "neural upscalers such as ESRGAN are not installed");
    json_decref(j);
    j = post("/sdapi/v1/txt2img", "{\"prompt\":\"x\",\"width\":5000,\"height\":64}", &st);
    expect_a1111_error(j, st, 400, "(this server's limit");
    json_decref(j);
    j = post("/sdapi/v1/img2img", "{\"prompt\":\"x\"}", &st);
    expect_a1111_error(j, st, 400, "'init_images' must be a non-empty array");
    json_decref(j);
    j = post("/sdapi/v1/img2img", "{\"prompt\":\"x\",\"init_images\":[\"%%%\"]}", &st);
    expect_a1111_error(j, st, 400, "init_images: not valid base64");
    json_decref(j);
    uint8_t px[16 * 16 * 3] = {0}, *png;
    size_t n;
    ASSERT_OK(sdw_png_write_mem(px, 16, 16, 3, NULL, &png, &n, NULL), NULL);
    char *b64 = sdw_base64_encode(png, n, NULL);
    free(png);
    char *body = malloc(strlen(b64) + 200);
    sprintf(body, "{\"prompt\":\"x\",\"init_images\":[\"data:image/png;base64,%s\"],"
                  "\"denoising_strength\":0.5}", b64);
    j = post("/sdapi/v1/img2img", body, &st);
    expect_a1111_error(j, st, 400, "init image 16x16 is smaller than the model's minimum 64x64");
    json_decref(j);
    free(body);
    free(b64);
}

static void test_a1111_lists(void) {
    int st = -1;
    json_t *j = get("/sdapi/v1/samplers", &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_TRUE(json_array_size(j) >= 5);
    bool euler_a = false;
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) {
        if (!strcmp(json_string_value(json_object_get(v, "name")), "Euler a")) euler_a = true;
        ASSERT_TRUE(json_is_array(json_object_get(v, "aliases")));
        ASSERT_TRUE(json_is_object(json_object_get(v, "options")));
    }
    json_decref(j);
    ASSERT_TRUE(euler_a);
    j = get("/sdapi/v1/sd-models", &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(j, 0), "title")), "tiny-sd15");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(j, 0), "model_name")), "tiny-sd15");
    json_decref(j);
    j = get("/sdapi/v1/options", &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "sd_model_checkpoint")), "tiny-sd15");
    json_decref(j);
    j = get("/sdapi/v1/schedulers", &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(j, 1), "label")), "Karras");
    json_decref(j);
    j = post("/sdapi/v1/options", "{\"sd_model_checkpoint\":\"sd_xl_base_1.0\"}", &st);
    expect_a1111_error(j, st, 404, "is not loaded"); /* A1111: an unknown checkpoint is a 404 */
    json_decref(j);
    j = post("/sdapi/v1/options", "{\"sd_model_checkpoint\":\"tiny-sd15\",\"samples_format\":\"png\"}", &st);
    ASSERT_EQ_INT(st, 200);
    json_decref(j);
}

static void *slow_txt2img(void *arg) {
    int st = -1;
    json_t *j = post("/sdapi/v1/txt2img", "{\"prompt\":\"slow\",\"width\":64,\"height\":64,"
                                          "\"steps\":150}", &st);
    *(int *)arg = st;
    json_t *info = json_loads(json_string_value(json_object_get(j, "info")), 0, NULL);
    if (!json_is_true(json_object_get(info, "interrupted"))) *(int *)arg = -1;
    json_decref(info);
    json_decref(j);
    return NULL;
}

/* progress while a job runs (with the live preview), then interrupt stops it. */
static void test_a1111_progress_and_interrupt(void) {
    int st = -1, result = 0;
    json_t *j = get("/sdapi/v1/progress", &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_TRUE(json_real_value(json_object_get(j, "progress")) == 0);
    ASSERT_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "state"), "job_count")), 0);
    json_decref(j);
    pthread_t t;
    pthread_create(&t, NULL, slow_txt2img, &result);
    bool seen = false;
    for (int i = 0; i < 2400 && !seen; i++) { /* up to 2 min: sanitizer builds are slow */
        usleep(50000);
        j = get("/sdapi/v1/progress", &st);
        json_t *state = json_object_get(j, "state");
        if (json_integer_value(json_object_get(state, "sampling_step")) >= 1 &&
            json_is_string(json_object_get(j, "current_image"))) {
            seen = true;
            ASSERT_TRUE(json_real_value(json_object_get(j, "progress")) > 0);
            ASSERT_TRUE(json_real_value(json_object_get(j, "progress")) < 1);
            ASSERT_EQ_INT(json_integer_value(json_object_get(state, "sampling_steps")), 151);
            ASSERT_TRUE(json_is_number(json_object_get(j, "eta_relative")));
        }
        json_decref(j);
    }
    j = post("/sdapi/v1/interrupt", "{}", &st);
    json_decref(j);
    pthread_join(t, NULL);
    ASSERT_TRUE(seen);
    ASSERT_EQ_INT(st, 200);
    ASSERT_EQ_INT(result, 200); /* A1111 answers an interrupted generation with what it has */
}

int main(void) {
    if (sdw_test_server_start(&g_srv, NULL, "-m '%s' -q -t 1", sdw_test_path("models/tiny-sd15")) != 0)
        return 1;
    g_port = g_srv.port;
    RUN(test_openai_generations);
    RUN(test_openai_output_formats_and_url);
    RUN(test_openai_errors_and_models);
    RUN(test_openai_edits);
    RUN(test_openai_edits_match_reference);
    RUN(test_a1111_txt2img);
    RUN(test_a1111_errors_and_img2img);
    RUN(test_a1111_img2img_matches_reference);
    RUN(test_a1111_lists);
    RUN(test_a1111_progress_and_interrupt);
    int rc = sdw_test_server_stop(&g_srv);
    int t = sdw_test_finish();
    return rc != 0 ? 1 : t;
}
