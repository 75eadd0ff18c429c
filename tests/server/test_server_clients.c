/* What real clients expect of `sdw serve` beyond the core calls (issue 15), at the HTTP level
 * (tests/e2e runs the unmodified clients themselves): OpenAI's image streaming events, variations,
 * several input images refused clearly, OpenAI-shaped errors on unknown /v1 paths; the A1111
 * endpoints clients call at start (png-info, sd-vae, upscalers, latent-upscale-modes, memory,
 * cmd-flags, scripts, prompt-styles, embeddings, loras, skip), a checkpoint we do not serve as a
 * 404, warnings for options we do not implement, an interrupt answered with the partial image,
 * sampler_index, sizes rounded down to the model's multiple; CORS preflights and headers;
 * /metrics as Prometheus text; the access log. */
#include "sdw_http.h"
#include "sdw_test.h"

#include "core/common.h"
#include "io/base64.h"
#include "io/png.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static sdw_test_server g_srv;
static int g_port;
static char g_log[4096];

static json_t *body_json(const sdw_http_resp *r) { return json_loadb(r->body, r->body_len, 0, NULL); }

static json_t *post(const char *path, const char *json, int *status) {
    sdw_http_resp r;
    *status = -1;
    if (sdw_http_post_json(g_port, path, json, &r) != 0) return NULL;
    *status = r.status;
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    return j;
}

static json_t *get(const char *path, int *status) {
    sdw_http_resp r;
    *status = -1;
    if (sdw_http_request(g_port, "GET", path, NULL, NULL, 0, &r) != 0) return NULL;
    *status = r.status;
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    return j;
}

static uint8_t *unb64(const char *s, size_t *n) {
    uint8_t *b = NULL;
    if (!s || sdw_base64_decode(s, strlen(s), &b, n, NULL)) return NULL;
    return b;
}

static uint8_t *test_png(int w, int h, const char *const *text, size_t *n) {
    uint8_t *px = calloc((size_t)w * h * 3, 1), *png = NULL;
    for (int i = 0; i < w * h * 3; i++) px[i] = (uint8_t)(i * 13);
    if (sdw_png_write_mem(px, w, h, 3, text, &png, n, NULL) != SDW_OK) png = NULL;
    free(px);
    return png;
}

static int post_form(const char *path, const char *const *parts, const size_t *lens,
                     sdw_http_resp *r) {
    const char *b = "clientsBoundary42";
    size_t total = 1024;
    for (int i = 0; parts[3 * i]; i++) total += lens[i] + 256;
    char *body = malloc(total);
    size_t n = 0;
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
    int rc = sdw_http_request(g_port, "POST", path, hdr, body, n, r);
    free(body);
    return rc;
}

/* Splits an event-stream body into its events: names and data (JSON), in order. */
static int parse_events(const char *body, char names[][64], json_t **data, int cap) {
    int n = 0;
    const char *p = body;
    while (*p && n < cap) {
        const char *end = strstr(p, "\n\n");
        if (!end) break;
        names[n][0] = 0;
        data[n] = NULL;
        for (const char *l = p; l < end;) {
            const char *nl = memchr(l, '\n', (size_t)(end - l));
            if (!nl) nl = end;
            if (!strncmp(l, "event: ", 7)) snprintf(names[n], 64, "%.*s", (int)(nl - l - 7), l + 7);
            else if (!strncmp(l, "data: ", 6)) data[n] = json_loadb(l + 6, (size_t)(nl - l - 6), 0, NULL);
            l = nl + 1;
        }
        if (data[n]) n++;
        p = end + 2;
    }
    return n;
}

/* ---- OpenAI ---- */

/* stream: true answers with Server-Sent Events the SDKs iterate: partial images from the
 * previews (at most partial_images), then the completed image; edits use image_edit.*. */
static void test_openai_streaming_events(void) {
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_post_json(g_port, "/v1/images/generations",
                                     "{\"prompt\":\"a cat\",\"size\":\"64x64\",\"steps\":6,"
                                     "\"seed\":7,\"stream\":true,\"partial_images\":2}",
                                     &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    char ct[64];
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "Content-Type", ct, sizeof ct), "text/event-stream");
    char names[16][64];
    json_t *data[16];
    int n = parse_events(r.body, names, data, 16);
    sdw_http_resp_free(&r);
    int partial = 0, completed = 0;
    for (int i = 0; i < n; i++) {
        const char *type = json_string_value(json_object_get(data[i], "type"));
        ASSERT_TRUE(type && !strcmp(type, names[i])); /* event name = its type */
        size_t len = 0;
        uint8_t *png = unb64(json_string_value(json_object_get(data[i], "b64_json")), &len);
        ASSERT_TRUE(png && len > 8 && !memcmp(png, "\x89PNG", 4));
        free(png);
        ASSERT_TRUE(json_is_integer(json_object_get(data[i], "created_at")));
        ASSERT_STR_CONTAINS(json_string_value(json_object_get(data[i], "output_format")), "png");
        if (!strcmp(type, "image_generation.partial_image")) {
            ASSERT_EQ_INT(json_integer_value(json_object_get(data[i], "partial_image_index")),
                          partial);
            ASSERT_EQ_INT(completed, 0);
            partial++;
        } else {
            ASSERT_STR_CONTAINS(type, "image_generation.completed");
            ASSERT_TRUE(json_is_object(json_object_get(data[i], "usage")));
            completed++;
        }
        json_decref(data[i]);
    }
    fprintf(stderr, "  generations stream: %d partial images, %d completed\n", partial, completed);
    ASSERT_TRUE(partial >= 1 && partial <= 2); /* a slow reader may see the end first */
    ASSERT_EQ_INT(completed, 1);

    /* edits: image_edit.* events */
    size_t pn = 0;
    uint8_t *png = test_png(64, 64, NULL, &pn);
    const char *parts[] = {"image", "in.png", (const char *)png, "prompt", NULL, "a dog",
                           "stream", NULL, "true", "steps", NULL, "4", NULL};
    size_t lens[] = {pn, 5, 4, 1};
    ASSERT_EQ_INT(post_form("/v1/images/edits", parts, lens, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    n = parse_events(r.body, names, data, 16);
    sdw_http_resp_free(&r);
    free(png);
    ASSERT_TRUE(n >= 1);
    ASSERT_STR_CONTAINS(names[n - 1], "image_edit.completed");
    for (int i = 0; i < n; i++) json_decref(data[i]);

    /* a stream's failure before it starts is a plain error; url does not stream */
    int st;
    json_t *j = post("/v1/images/generations",
                     "{\"prompt\":\"x\",\"stream\":true,\"response_format\":\"url\"}", &st);
    ASSERT_EQ_INT(st, 400);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_object_get(j, "error"), "message")),
                        "does not stream");
    json_decref(j);
}

static void test_openai_variations_and_several_images(void) {
    size_t pn = 0;
    uint8_t *png = test_png(64, 64, NULL, &pn);
    sdw_http_resp r;
    const char *parts[] = {"image", "in.png", (const char *)png, "n", NULL, "1", "size", NULL,
                           "64x64", "steps", NULL, "4", NULL};
    size_t lens[] = {pn, 1, 5, 1};
    ASSERT_EQ_INT(post_form("/v1/images/variations", parts, lens, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    size_t n = 0;
    uint8_t *out = unb64(json_string_value(json_object_get(
                             json_array_get(json_object_get(j, "data"), 0), "b64_json")), &n);
    ASSERT_TRUE(out && n > 8);
    sdw_png img;
    ASSERT_OK(sdw_png_read_mem(out, n, "variation", &img, NULL), NULL);
    ASSERT_EQ_INT(img.w, 64);
    ASSERT_STR_CONTAINS(sdw_png_text(&img, "parameters"), "Denoising strength: 0.75");
    sdw_png_deinit(&img);
    free(out);
    json_decref(j);

    /* image[] with several images: refused, naming it */
    const char *two[] = {"image[]", "a.png", (const char *)png, "image[]", "b.png",
                         (const char *)png, "prompt", NULL, "x", NULL};
    size_t lens2[] = {pn, pn, 1};
    ASSERT_EQ_INT(post_form("/v1/images/edits", two, lens2, &r), 0);
    ASSERT_EQ_INT(r.status, 400);
    j = body_json(&r);
    sdw_http_resp_free(&r);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_object_get(j, "error"), "message")),
                        "edits one image at a time: the request has 2 images");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_object_get(j, "error"), "param")),
                        "image");
    json_decref(j);
    free(png);
}

/* Unknown paths under /v1 answer in OpenAI's shape (type, param, code). */
static void test_openai_unknown_routes(void) {
    int st;
    json_t *j = post("/v1/chat/completions", "{\"model\":\"x\"}", &st);
    ASSERT_EQ_INT(st, 404);
    json_t *e = json_object_get(j, "error");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(e, "type")), "invalid_request_error");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(e, "message")),
                        "no such endpoint: POST /v1/chat/completions");
    ASSERT_TRUE(json_object_get(e, "code") != NULL);
    json_decref(j);
    /* the native API keeps its own */
    j = get("/v1/jobs/0123456789abcdef0123456789abcdef", &st);
    ASSERT_EQ_INT(st, 404);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        "not_found");
    json_decref(j);
}

/* ---- AUTOMATIC1111 ---- */

static void test_a1111_png_info(void) {
    /* an A1111 image's text (an extra chunk too) */
    const char *a1111 = "a castle, (detailed:1.2)\nNegative prompt: blurry, lowres\nSteps: 28, "
                        "Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, "
                        "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned, "
                        "Lora hashes: \"a: 1, b: 2\", Version: v1.10.1";
    const char *text[] = {"parameters", a1111, "Software", "test", NULL};
    size_t n = 0;
    uint8_t *png = test_png(8, 8, text, &n);
    char *b64 = sdw_base64_encode(png, n, NULL);
    free(png);
    char *body = malloc(strlen(b64) + 64);
    sprintf(body, "{\"image\":\"data:image/png;base64,%s\"}", b64);
    free(b64);
    int st;
    json_t *j = post("/sdapi/v1/png-info", body, &st);
    free(body);
    ASSERT_EQ_INT(st, 200);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "info")), "Steps: 28");
    json_t *p = json_object_get(j, "parameters");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(p, "Prompt")), "a castle, (detailed:1.2)");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(p, "Negative prompt")), "blurry, lowres");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(p, "Steps")), "28");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(p, "Sampler")), "DPM++ 2M");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(p, "Size-1")), "512");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(p, "Size-2")), "768");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(p, "Lora hashes")), "a: 1, b: 2");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_object_get(j, "items"), "Software")),
                        "test");
    json_decref(j);

    /* our own image, from txt2img */
    j = post("/sdapi/v1/txt2img", "{\"prompt\":\"a lighthouse\",\"negative_prompt\":\"fog\","
                                  "\"width\":64,\"height\":64,\"steps\":2,\"seed\":5}", &st);
    ASSERT_EQ_INT(st, 200);
    const char *img = json_string_value(json_array_get(json_object_get(j, "images"), 0));
    body = malloc(strlen(img) + 64);
    sprintf(body, "{\"image\":\"%s\"}", img);
    json_decref(j);
    j = post("/sdapi/v1/png-info", body, &st);
    free(body);
    ASSERT_EQ_INT(st, 200);
    p = json_object_get(j, "parameters");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(p, "Prompt")), "a lighthouse");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(p, "Negative prompt")), "fog");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(p, "Seed")), "5");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(p, "Model")), "tiny-sd15");
    json_decref(j);
    j = post("/sdapi/v1/png-info", "{\"image\":\"aGVsbG8=\"}", &st);
    ASSERT_EQ_INT(st, 400);
    json_decref(j);
}

static void test_a1111_lists(void) {
    static const struct {
        const char *path;
        bool array;
    } lists[] = {{"/sdapi/v1/sd-vae", true},          {"/sdapi/v1/upscalers", true},
                 {"/sdapi/v1/latent-upscale-modes", true}, {"/sdapi/v1/prompt-styles", true},
                 {"/sdapi/v1/loras", true},           {"/sdapi/v1/embeddings", false},
                 {"/sdapi/v1/scripts", false},        {"/sdapi/v1/memory", false},
                 {"/sdapi/v1/cmd-flags", false}};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        int st;
        json_t *j = get(lists[i].path, &st);
        if (st != 200) fprintf(stderr, "%s: %d\n", lists[i].path, st);
        ASSERT_EQ_INT(st, 200);
        ASSERT_TRUE(lists[i].array ? json_is_array(j) : json_is_object(j));
        json_decref(j);
    }
    int st;
    json_t *j = get("/sdapi/v1/upscalers", &st);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(j, 0), "name")), "None");
    json_decref(j);
    j = get("/sdapi/v1/memory", &st);
    ASSERT_TRUE(json_integer_value(json_object_get(json_object_get(j, "ram"), "total")) > 0);
    json_decref(j);
    j = get("/sdapi/v1/scripts", &st);
    ASSERT_TRUE(json_is_array(json_object_get(j, "txt2img")));
    json_decref(j);
}

static void test_a1111_checkpoint_warnings_rounding(void) {
    int st;
    json_t *j = post("/sdapi/v1/txt2img",
                     "{\"prompt\":\"x\",\"override_settings\":{\"sd_model_checkpoint\":"
                     "\"sd_xl_base_1.0.safetensors [31e35c80fc]\"}}", &st);
    ASSERT_EQ_INT(st, 404);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "detail")),
                        "checkpoint 'sd_xl_base_1.0.safetensors [31e35c80fc]' not found");
    json_decref(j);
    /* ours, as A1111 titles it, runs; options not implemented come back as warnings (clip
     * skip is implemented: clip_skip and CLIP_stop_at_last_layers apply, no warning); 70x90
     * becomes 64x88 (A1111 rounds down to a multiple of 8); sampler_index counts when
     * sampler_name is empty */
    j = post("/sdapi/v1/txt2img",
             "{\"prompt\":\"x\",\"width\":70,\"height\":90,\"steps\":2,\"sampler_name\":\"\","
             "\"sampler_index\":\"DDIM\",\"restore_faces\":true,\"tiling\":true,\"clip_skip\":2,"
             "\"styles\":[\"cinematic\"],\"override_settings\":{\"sd_model_checkpoint\":"
             "\"tiny-sd15 [abc]\",\"CLIP_stop_at_last_layers\":2}}", &st);
    ASSERT_EQ_INT(st, 200);
    json_t *info = json_loads(json_string_value(json_object_get(j, "info")), 0, NULL);
    char *w = json_dumps(json_object_get(info, "warnings"), 0);
    fprintf(stderr, "  warnings: %s\n", w);
    ASSERT_STR_CONTAINS(w, "restore_faces ignored");
    ASSERT_STR_CONTAINS(w, "tiling ignored");
    ASSERT_STR_CONTAINS(w, "styles ignored");
    ASSERT_TRUE(!strstr(w, "clip_skip") && !strstr(w, "CLIP_stop_at_last_layers"));
    free(w);
    ASSERT_EQ_INT(json_integer_value(json_object_get(info, "clip_skip")), 2);
    ASSERT_EQ_INT(json_integer_value(json_object_get(info, "width")), 64);
    ASSERT_EQ_INT(json_integer_value(json_object_get(info, "height")), 88);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(info, "sampler_name")), "DDIM");
    json_decref(info);
    json_decref(j);
    j = post("/sdapi/v1/options", "{\"sd_model_checkpoint\":\"sd_xl_base_1.0\"}", &st);
    ASSERT_EQ_INT(st, 404);
    json_decref(j);
}

static void *slow_txt2img(void *arg) {
    int st;
    json_t *j = post("/sdapi/v1/txt2img", "{\"prompt\":\"slow\",\"width\":64,\"height\":64,"
                                          "\"steps\":150,\"seed\":3}", &st);
    json_t **out = arg;
    *out = st == 200 ? j : NULL;
    if (st != 200) {
        fprintf(stderr, "slow txt2img: %d\n", st);
        json_decref(j);
    }
    return NULL;
}

/* An interrupted job answers with its image so far (webuiapi's r.image raises on []). */
static void test_a1111_interrupt_returns_the_partial_image(void) {
    json_t *res = NULL;
    pthread_t t;
    pthread_create(&t, NULL, slow_txt2img, &res);
    for (int i = 0; i < 6000; i++) { /* until it has made a few steps (minutes under ASan) */
        int st;
        json_t *p = get("/sdapi/v1/progress", &st);
        long long step = json_integer_value(json_object_get(json_object_get(p, "state"),
                                                            "sampling_step"));
        json_decref(p);
        if (step >= 3) break;
        usleep(20000);
    }
    int st;
    json_decref(post("/sdapi/v1/interrupt", "{}", &st));
    pthread_join(t, NULL);
    ASSERT_TRUE(res != NULL);
    json_t *images = json_object_get(res, "images");
    ASSERT_EQ_INT(json_array_size(images), 1);
    size_t n = 0;
    uint8_t *png = unb64(json_string_value(json_array_get(images, 0)), &n);
    sdw_png img;
    ASSERT_OK(sdw_png_read_mem(png, n, "interrupted", &img, NULL), NULL);
    ASSERT_EQ_INT(img.w, 64);
    sdw_png_deinit(&img);
    free(png);
    json_t *info = json_loads(json_string_value(json_object_get(res, "info")), 0, NULL);
    ASSERT_TRUE(json_is_true(json_object_get(info, "interrupted")));
    json_decref(info);
    json_decref(res);
}

/* skip: the current image ends where it is (kept), the next one starts: two images come back. */
static void test_a1111_skip(void) {
    json_t *res = NULL;
    pthread_t t;
    pthread_create(&t, NULL, slow_txt2img, &res);
    for (int i = 0; i < 6000; i++) {
        int st;
        json_t *p = get("/sdapi/v1/progress", &st);
        long long step = json_integer_value(json_object_get(json_object_get(p, "state"),
                                                            "sampling_step"));
        json_decref(p);
        if (step >= 2) break;
        usleep(20000);
    }
    int st;
    json_decref(post("/sdapi/v1/skip", "{}", &st));
    ASSERT_EQ_INT(st, 200);
    pthread_join(t, NULL);
    ASSERT_TRUE(res != NULL);
    ASSERT_EQ_INT(json_array_size(json_object_get(res, "images")), 1);
    json_t *info = json_loads(json_string_value(json_object_get(res, "info")), 0, NULL);
    ASSERT_TRUE(json_is_false(json_object_get(info, "interrupted"))); /* a skip finishes the job */
    json_decref(info);
    json_decref(res);
}

/* ---- CORS, metrics, access log ---- */

static void test_cors(void) {
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_port, "OPTIONS", "/v1/images/generations",
                                   "Origin: http://app.example\r\n"
                                   "Access-Control-Request-Method: POST\r\n"
                                   "Access-Control-Request-Headers: authorization, content-type\r\n",
                                   NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 204);
    char v[256];
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "Access-Control-Allow-Origin", v, sizeof v),
                        "http://app.example");
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "Access-Control-Allow-Methods", v, sizeof v), "POST");
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "Access-Control-Allow-Headers", v, sizeof v),
                        "authorization");
    sdw_http_resp_free(&r);
    /* the answer itself carries the origin; another origin gets nothing */
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/sdapi/v1/samplers",
                                   "Origin: http://app.example\r\n", NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "Access-Control-Allow-Origin", v, sizeof v),
                        "http://app.example");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/sdapi/v1/samplers",
                                   "Origin: http://evil.example\r\n", NULL, 0, &r), 0);
    ASSERT_TRUE(sdw_http_header(&r, "Access-Control-Allow-Origin", v, sizeof v) == NULL);
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_request(g_port, "OPTIONS", "/nowhere", "Origin: http://app.example\r\n",
                                   NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 404);
    sdw_http_resp_free(&r);
    /* '*' with an API key is refused at start */
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' serve --port 0 --api-key k --cors-origin '*' -m '%s' "
                              ">/dev/null 2>&1", sdw_test_bin(), sdw_test_path("models/tiny-sd15"));
    int rc = system(cmd);
    ASSERT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
}

/* /metrics parses as Prometheus text: # HELP / # TYPE lines, then samples "name{labels} value",
 * every sample's family declared, histogram buckets cumulative and ending at +Inf = _count. */
static void test_metrics(void) {
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    char ct[128];
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "Content-Type", ct, sizeof ct), "text/plain; version=0.0.4");
    char declared[64][64];
    int n_decl = 0, n_samples = 0;
    double last_bucket = -1, inf_bucket = -1, count = -2;
    char *save = NULL;
    for (char *l = strtok_r(r.body, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char name[128], kind[32];
        if (sscanf(l, "# TYPE %127s %31s", name, kind) == 2) {
            ASSERT_TRUE(!strcmp(kind, "gauge") || !strcmp(kind, "counter") ||
                        !strcmp(kind, "histogram"));
            snprintf(declared[n_decl++], 64, "%s", name);
            continue;
        }
        if (l[0] == '#') continue;
        size_t nl = strcspn(l, "{ ");
        snprintf(name, sizeof name, "%.*s", (int)nl, l);
        bool known = false;
        for (int i = 0; i < n_decl && !known; i++) {
            size_t dl = strlen(declared[i]);
            known = !strcmp(name, declared[i]) ||
                    (!strncmp(name, declared[i], dl) &&
                     (!strcmp(name + dl, "_bucket") || !strcmp(name + dl, "_sum") ||
                      !strcmp(name + dl, "_count")));
        }
        if (!known) fprintf(stderr, "undeclared sample: %s\n", l);
        ASSERT_TRUE(known);
        const char *sp = strrchr(l, ' ');
        ASSERT_TRUE(sp != NULL);
        char *end;
        double v = strtod(sp + 1, &end);
        ASSERT_TRUE(*end == 0);
        if (!strncmp(l, "sdw_step_seconds_bucket", 23)) {
            ASSERT_TRUE(v >= last_bucket);
            last_bucket = v;
            if (strstr(l, "le=\"+Inf\"")) inf_bucket = v;
        }
        if (!strcmp(name, "sdw_step_seconds_count")) count = v;
        n_samples++;
    }
    sdw_http_resp_free(&r);
    fprintf(stderr, "  /metrics: %d families, %d samples, %g steps timed\n", n_decl, n_samples,
            count);
    ASSERT_TRUE(n_samples > 20);
    ASSERT_TRUE(inf_bucket == count);
    ASSERT_TRUE(count > 0); /* the jobs above made steps */
}

static void test_access_log(void) {
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/health", NULL, NULL, 0, &r), 0);
    sdw_http_resp_free(&r);
    usleep(200000);
    size_t n = 0;
    char *log = sdw_test_read_file(g_log, &n);
    ASSERT_TRUE(log != NULL);
    int lines = 0, health = 0;
    char *save = NULL;
    for (char *l = strtok_r(log, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_t *j = json_loads(l, 0, NULL);
        ASSERT_TRUE(j != NULL);
        ASSERT_TRUE(json_is_string(json_object_get(j, "time")));
        ASSERT_TRUE(json_is_integer(json_object_get(j, "status")));
        ASSERT_TRUE(json_is_number(json_object_get(j, "ms")));
        if (!strcmp(json_string_value(json_object_get(j, "path")), "/health") &&
            json_integer_value(json_object_get(j, "status")) == 200)
            health++;
        json_decref(j);
        lines++;
    }
    free(log);
    fprintf(stderr, "  access log: %d lines\n", lines);
    ASSERT_TRUE(lines > 10);
    ASSERT_TRUE(health >= 1);
}

int main(void) {
    snprintf(g_log, sizeof g_log, "%s/access.log", sdw_test_tmpdir());
    unlink(g_log);
    if (sdw_test_server_start(&g_srv, NULL,
                              "-m '%s' -q -t 1 --preview-every 1 --cors-origin http://app.example "
                              "--access-log '%s'",
                              sdw_test_path("models/tiny-sd15"), g_log) != 0)
        return 1;
    g_port = g_srv.port;
    RUN(test_openai_streaming_events);
    RUN(test_openai_variations_and_several_images);
    RUN(test_openai_unknown_routes);
    RUN(test_a1111_png_info);
    RUN(test_a1111_lists);
    RUN(test_a1111_checkpoint_warnings_rounding);
    RUN(test_a1111_interrupt_returns_the_partial_image);
    RUN(test_a1111_skip);
    RUN(test_cors);
    RUN(test_metrics);
    RUN(test_access_log);
    int rc = sdw_test_server_stop(&g_srv);
    int t = sdw_test_finish();
    return rc != 0 ? 1 : t;
}
