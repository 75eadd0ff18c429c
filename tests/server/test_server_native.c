/* `sdw serve` with the tiny fixture model, through the native job API: submit, Server-Sent Events
 * (progress, previews, the final image; late subscribers; clients that go away), status, cancel
 * (queued and running), the image itself — equal to `sdw generate` and to the reference
 * pipeline's image for the same settings — and every kind of bad input. */
#include "sdw_http.h"
#include "sdw_test.h"

#include "io/base64.h"
#include "io/png.h"

#include <jansson.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define SDW_MAX(a, b) ((a) > (b) ? (a) : (b))

static sdw_test_server g_srv;
static int g_port;

static json_t *body_json(const sdw_http_resp *r) {
    return json_loadb(r->body, r->body_len, 0, NULL);
}

/* POSTs a job; returns its id (static buffer) or NULL. */
static const char *submit(const char *json) {
    static char id[64];
    sdw_http_resp r;
    if (sdw_http_post_json(g_port, "/v1/jobs", json, &r) != 0 || r.status != 202) {
        fprintf(stderr, "submit: %d %s\n", r.status, r.body ? r.body : "");
        sdw_http_resp_free(&r);
        return NULL;
    }
    json_t *j = body_json(&r);
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(j, "job_id")));
    json_decref(j);
    sdw_http_resp_free(&r);
    return id;
}

/* Expects status and a JSON error whose message contains want. */
static void expect_error(const sdw_http_resp *r, int status, const char *want) {
    if (r->status != status) fprintf(stderr, "got %d: %s\n", r->status, r->body);
    ASSERT_EQ_INT(r->status, status);
    json_t *j = body_json(r);
    ASSERT_TRUE(j != NULL);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", msg ? msg : "(no error.message)");
    json_decref(j);
    ASSERT_STR_CONTAINS(copy, want);
}

static void post_expect(const char *json, int status, const char *want) {
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_post_json(g_port, "/v1/jobs", json, &r), 0);
    expect_error(&r, status, want);
    sdw_http_resp_free(&r);
}

/* As post_expect, and the error's "param" names the field at fault. */
static void post_expect_param(const char *json, const char *param, const char *want) {
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_post_json(g_port, "/v1/jobs", json, &r), 0);
    expect_error(&r, 400, want);
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    const char *p = json_string_value(json_object_get(json_object_get(j, "error"), "param"));
    char got[64];
    snprintf(got, sizeof got, "%s", p ? p : "(no error.param)");
    json_decref(j);
    ASSERT_STR_CONTAINS(got, param);
}

static void test_health_ready_capabilities(void) {
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/health", NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    ASSERT_STR_CONTAINS(r.body, "\"ok\"");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/ready", NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    ASSERT_STR_CONTAINS(r.body, "\"ready\"");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/v1/capabilities", NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    json_t *c = body_json(&r);
    sdw_http_resp_free(&r);
    ASSERT_TRUE(c != NULL);
    json_t *model = json_object_get(c, "model");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(model, "type")), "stable-diffusion");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(model, "name")), "tiny-sd15");
    ASSERT_EQ_INT(json_integer_value(json_object_get(json_object_get(c, "defaults"), "width")), 64); /* unet sample_size 32 x VAE factor 2 */
    ASSERT_TRUE(json_array_size(json_object_get(c, "samplers")) >= 5);
    ASSERT_EQ_INT(json_integer_value(json_object_get(json_object_get(c, "limits"), "size_multiple")), 8);
    ASSERT_TRUE(json_is_true(json_object_get(json_object_get(c, "features"), "txt2img")));
    json_decref(c);
}

/* The acceptance check: the API's image for a seed is `sdw generate`'s, and the reference's. */
static void test_job_stream_and_image_match_cli_and_reference(void) {
    const char *id = submit("{\"prompt\":\"a photo of a cat\",\"width\":64,\"height\":64,"
                            "\"steps\":4,\"guidance_scale\":7.5,\"seed\":42,\"sampler\":\"euler\"}");
    ASSERT_TRUE(id != NULL);
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s/stream", id);
    int st = 0;
    sdw_sse *s = sdw_sse_open(g_port, path, NULL, &st);
    ASSERT_TRUE(s != NULL);
    char ev[64];
    char *data = NULL;
    int n_progress = 0, n_preview = 0, last_step = -1;
    bool complete = false;
    while (sdw_sse_next(s, ev, sizeof ev, &data, 60) == 0) {
        json_t *j = json_loads(data, 0, NULL);
        free(data);
        if (!strcmp(ev, "progress")) {
            int step = (int)json_integer_value(json_object_get(j, "step"));
            ASSERT_TRUE(step >= last_step); /* never goes back */
            last_step = step;
            ASSERT_EQ_INT(json_integer_value(json_object_get(j, "total")), 4);
            n_progress++;
        } else if (!strcmp(ev, "preview")) {
            const char *b64 = json_string_value(json_object_get(j, "image"));
            uint8_t *png;
            size_t n;
            sdw_png img;
            ASSERT_OK(sdw_base64_decode(b64, strlen(b64), &png, &n, NULL), NULL);
            ASSERT_OK(sdw_png_read_mem(png, n, "preview", &img, NULL), NULL);
            ASSERT_EQ_INT(img.w, 32); /* latent resolution: 64 / 2 for the tiny VAE */
            sdw_png_deinit(&img);
            free(png);
            n_preview++;
        } else if (!strcmp(ev, "complete")) {
            ASSERT_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "parameters"), "seed")), 42);
            ASSERT_TRUE(json_string_value(json_object_get(j, "image")) != NULL);
            complete = true;
        }
        json_decref(j);
    }
    sdw_sse_close(s);
    fprintf(stderr, "  %d progress, %d preview events\n", n_progress, n_preview);
    ASSERT_TRUE(complete);
    ASSERT_TRUE(n_progress >= 2);
    ASSERT_EQ_INT(n_preview, 4); /* --preview-every 1, 4 steps */
    ASSERT_EQ_INT(last_step, 4);

    sdw_http_resp r;
    snprintf(path, sizeof path, "/v1/jobs/%s/image.png", id);
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", path, NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    char ct[64];
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "Content-Type", ct, sizeof ct), "image/png");

    char cli[1024], cmd[3000];
    snprintf(cli, sizeof cli, "%s/cli.png", sdw_test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "'%s' generate -m '%s' -p 'a photo of a cat' -W 64 -H 64 --steps 4 --cfg-scale 7.5 "
             "-s 42 --sampler euler -t 1 -q -o '%s'",
             sdw_test_bin(), sdw_test_path("models/tiny-sd15"), cli);
    ASSERT_EQ_INT(system(cmd), 0);
    size_t n_cli = 0, n_ref = 0;
    char *png_cli = sdw_test_read_file(cli, &n_cli);
    char *png_ref = sdw_test_read_file(sdw_test_path("golden/tiny-sd15/txt2img-euler/image.png"), &n_ref);
    ASSERT_TRUE(png_cli && png_ref);
    int d_cli = sdw_test_png_bytes_max_diff(r.body, r.body_len, png_cli, n_cli);
    int d_ref = sdw_test_png_bytes_max_diff(r.body, r.body_len, png_ref, n_ref);
    fprintf(stderr, "  max diff vs sdw generate: %d, vs reference: %d levels\n", d_cli, d_ref);
    free(png_cli);
    free(png_ref);
    sdw_png img;
    ASSERT_OK(sdw_png_read_mem(r.body, r.body_len, "api", &img, NULL), NULL);
    char params[1024];
    snprintf(params, sizeof params, "%s", sdw_png_text(&img, "parameters") ? sdw_png_text(&img, "parameters") : "");
    sdw_png_deinit(&img);
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(d_cli, 0);
    ASSERT_TRUE(d_ref <= 2);
    ASSERT_STR_CONTAINS(params, "Steps: 4, Sampler: Euler, CFG scale: 7.5, Seed: 42, Size: 64x64");

    /* Status after the fact. */
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", path, NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "state")), "succeeded");
    ASSERT_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "progress"), "step")), 4);
    json_t *res = json_object_get(j, "result");
    ASSERT_EQ_INT(json_integer_value(json_object_get(res, "seed")), 42);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(res, "infotext")), "Seed: 42");
    ASSERT_TRUE(json_is_null(json_object_get(j, "error")));
    json_decref(j);
}

/* A subscriber arriving after the end first gets the current (final) state. */
static void test_late_subscriber_gets_final_state(void) {
    const char *id = submit("{\"prompt\":\"late\",\"width\":64,\"height\":64,\"steps\":1}");
    ASSERT_TRUE(id != NULL);
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s/stream", id);
    sdw_sse *s = sdw_sse_open(g_port, path, NULL, NULL);
    char ev[64], *data;
    while (sdw_sse_next(s, ev, sizeof ev, &data, 60) == 0) free(data);
    sdw_sse_close(s);
    /* Now twice more, concurrently open: both get progress(succeeded) then complete. */
    sdw_sse *a = sdw_sse_open(g_port, path, NULL, NULL), *b = sdw_sse_open(g_port, path, NULL, NULL);
    ASSERT_TRUE(a && b);
    sdw_sse *both[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        ASSERT_EQ_INT(sdw_sse_next(both[k], ev, sizeof ev, &data, 10), 0);
        ASSERT_STR_CONTAINS(ev, "progress");
        ASSERT_STR_CONTAINS(data, "\"succeeded\"");
        free(data);
        ASSERT_EQ_INT(sdw_sse_next(both[k], ev, sizeof ev, &data, 10), 0);
        ASSERT_STR_CONTAINS(ev, "complete");
        free(data);
        ASSERT_EQ_INT(sdw_sse_next(both[k], ev, sizeof ev, &data, 10), -1); /* stream ended */
    }
    sdw_sse_close(a);
    sdw_sse_close(b);
}

static json_t *get_job(const char *id) {
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    sdw_http_resp r;
    if (sdw_http_request(g_port, "GET", path, NULL, NULL, 0, &r) != 0) return NULL;
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    return j;
}

static void test_cancel_running_and_queued(void) {
    /* 200 steps at 64x64 takes far longer than the test: it can only end by cancel. */
    const char *slow = "{\"prompt\":\"slow\",\"width\":64,\"height\":64,\"steps\":150}";
    char running[64], queued[64], path[256];
    const char *id = submit(slow);
    ASSERT_TRUE(id != NULL);
    snprintf(running, sizeof running, "%s", id);
    id = submit(slow);
    ASSERT_TRUE(id != NULL);
    snprintf(queued, sizeof queued, "%s", id);

    /* Follow the running one until it has made a step, with a second client that leaves. */
    snprintf(path, sizeof path, "/v1/jobs/%s/stream", running);
    sdw_sse *s = sdw_sse_open(g_port, path, NULL, NULL), *leaver = sdw_sse_open(g_port, path, NULL, NULL);
    ASSERT_TRUE(s && leaver);
    char ev[64], *data;
    ASSERT_EQ_INT(sdw_sse_next(leaver, ev, sizeof ev, &data, 30), 0);
    free(data);
    sdw_sse_close(leaver);
    for (;;) {
        ASSERT_EQ_INT(sdw_sse_next(s, ev, sizeof ev, &data, 60), 0);
        bool stepped = !strcmp(ev, "progress") && !strstr(data, "\"step\":0,");
        free(data);
        if (stepped) break;
    }
    json_t *q = get_job(queued);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(q, "state")), "queued");
    ASSERT_EQ_INT(json_integer_value(json_object_get(q, "queue_position")), 0);
    json_decref(q);

    sdw_http_resp r;
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", queued);
    ASSERT_EQ_INT(sdw_http_request(g_port, "POST", path, NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    ASSERT_STR_CONTAINS(r.body, "\"cancelled\""); /* a queued job ends at once */
    sdw_http_resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", running);
    ASSERT_EQ_INT(sdw_http_request(g_port, "POST", path, NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    sdw_http_resp_free(&r);
    /* The running job stops at its next step; the stream says so and ends. */
    bool cancelled = false;
    while (sdw_sse_next(s, ev, sizeof ev, &data, 60) == 0) {
        if (!strcmp(ev, "cancelled")) cancelled = true;
        ASSERT_TRUE(strcmp(ev, "complete") != 0);
        free(data);
    }
    sdw_sse_close(s);
    ASSERT_TRUE(cancelled);
    json_t *j = get_job(running);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "state")), "cancelled");
    ASSERT_TRUE(json_integer_value(json_object_get(json_object_get(j, "progress"), "step")) < 150);
    json_decref(j);
    /* Cancelling again: nothing to cancel; the image does not exist. */
    ASSERT_EQ_INT(sdw_http_request(g_port, "POST", path, NULL, NULL, 0, &r), 0);
    expect_error(&r, 409, "already cancelled");
    sdw_http_resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/image.png", running);
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", path, NULL, NULL, 0, &r), 0);
    expect_error(&r, 404, "cancelled");
    sdw_http_resp_free(&r);
}

static char *file_b64(const char *path) {
    size_t n = 0;
    char *raw = sdw_test_read_file(path, &n);
    if (!raw) return NULL;
    char *b = sdw_base64_encode(raw, n, NULL);
    free(raw);
    return b;
}

/* Runs a native job to the end and returns its PNG (new) or NULL. */
static char *run_job_png(const char *json, size_t *n) {
    const char *id = submit(json);
    if (!id) return NULL;
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s/stream", id);
    sdw_sse *s = sdw_sse_open(g_port, path, NULL, NULL);
    char ev[64], *data;
    while (s && sdw_sse_next(s, ev, sizeof ev, &data, 300) == 0) free(data);
    sdw_sse_close(s);
    snprintf(path, sizeof path, "/v1/jobs/%s/image.png", id);
    sdw_http_resp r;
    if (sdw_http_request(g_port, "GET", path, NULL, NULL, 0, &r) != 0 || r.status != 200) {
        fprintf(stderr, "image: %d %s\n", r.status, r.body ? r.body : "");
        sdw_http_resp_free(&r);
        return NULL;
    }
    char *png = r.body;
    *n = r.body_len;
    r.body = NULL;
    sdw_http_resp_free(&r);
    return png;
}

/* image_transform and image_inpaint against the reference pipelines' images. */
static void test_transform_and_inpaint_match_reference(void) {
    static const struct {
        const char *golden, *op;
        bool mask;
    } cases[] = {{"img2img-ddim", "image_transform", false}, {"inpaint-ddim", "image_inpaint", true}};
    for (int i = 0; i < 2; i++) {
        char *init = file_b64(sdw_test_path("golden/tiny-sd15/%s/init_image.png", cases[i].golden));
        char *mask = cases[i].mask ? file_b64(sdw_test_path("golden/tiny-sd15/%s/mask_image.png",
                                                            cases[i].golden))
                                   : NULL;
        ASSERT_TRUE(init && (mask || !cases[i].mask));
        char *body = malloc(strlen(init) + (mask ? strlen(mask) : 0) + 512);
        sprintf(body, "{\"operation\":\"%s\",\"prompt\":\"a photo of a cat\",\"width\":64,"
                      "\"height\":64,\"steps\":4,\"guidance_scale\":7.5,\"seed\":42,\"sampler\":"
                      "\"ddim\",\"strength\":0.75,\"input_image\":\"data:image/png;base64,%s\"%s%s%s}",
                cases[i].op, init, mask ? ",\"mask_image\":\"" : "", mask ? mask : "",
                mask ? "\"" : "");
        free(init);
        free(mask);
        size_t n = 0, n_ref = 0;
        char *png = run_job_png(body, &n);
        free(body);
        char *ref = sdw_test_read_file(sdw_test_path("golden/tiny-sd15/%s/image.png", cases[i].golden), &n_ref);
        ASSERT_TRUE(png && ref);
        int d = sdw_test_png_bytes_max_diff(png, n, ref, n_ref);
        fprintf(stderr, "  %s: max diff vs reference %d levels\n", cases[i].golden, d);
        sdw_png img;
        ASSERT_OK(sdw_png_read_mem(png, n, "api", &img, NULL), NULL);
        char params[1024];
        snprintf(params, sizeof params, "%s", sdw_png_text(&img, "parameters"));
        sdw_png_deinit(&img);
        free(png);
        free(ref);
        ASSERT_TRUE(d <= 2);
        ASSERT_STR_CONTAINS(params, "Denoising strength: 0.75");
    }
}

/* A mode the model lacks is a clear 400: an inpainting model cannot draw from text alone. */
static void test_missing_mode_is_400(void) {
    sdw_test_server s;
    ASSERT_EQ_INT(sdw_test_server_start(&s, NULL, "-m '%s' -q -t 1",
                                        sdw_test_path("models/tiny-sd15-inpaint")), 0);
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_post_json(s.port, "/v1/jobs", "{\"prompt\":\"x\"}", &r), 0);
    expect_error(&r, 400, "this is an inpainting model: it needs an init image and a mask");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_request(s.port, "GET", "/v1/capabilities", NULL, NULL, 0, &r), 0);
    ASSERT_STR_CONTAINS(r.body, "\"operations\":[\"image_transform\",\"image_inpaint\"]");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_test_server_stop(&s), 0);
}

static void test_bad_input(void) {
    post_expect("{\"prompt\": \"x\", ", 400, "malformed JSON");
    post_expect("[1, 2]", 400, "must be an object");
    post_expect("", 400, "needs a JSON body");
    post_expect("{\"prompt\": 42}", 400, "field 'prompt' must be a string");
    post_expect("{\"prompt\": \"x\", \"width\": \"wide\"}", 400, "field 'width' must be an integer");
    post_expect("{\"prompt\": \"x\", \"width\": 64.5}", 400, "field 'width' must be an integer");
    post_expect("{\"prompt\": \"x\", \"guidance_scale\": \"high\"}", 400,
                "field 'guidance_scale' must be a number");
    post_expect("{\"prompt\": \"x\", \"width\": 100000, \"height\": 64}", 400,
                "width 100000 is out of range [64, 2048] (this server's limit");
    post_expect_param("{\"prompt\": \"x\", \"width\": 100, \"height\": 64}", "width",
                      "width 100 is not a multiple of 8");
    post_expect_param("{\"prompt\": \"x\", \"steps\": 100000}", "steps", "steps 100000 exceeds");
    post_expect_param("{\"prompt\": \"x\", \"sampler\": \"magic\"}", "sampler",
                      "unknown sampler 'magic' (available: ddim, pndm, euler, euler_a, dpm++2m");
    post_expect("{\"prompt\": \"x\", \"scheduler\": \"exponential\"}", 400, "unknown scheduler");
    post_expect("{\"prompt\": \"x\", \"n\": 50}", 400, "number of images 50 is out of range [1, 4]");
    post_expect("{\"prompt\": \"x\", \"promtp\": \"typo\"}", 400, "unknown field 'promtp'");
    post_expect("{\"prompt\": \"x\", \"operation\": \"dance\"}", 400, "unknown operation 'dance'");
    post_expect("{\"prompt\": \"x\", \"rng\": \"dice\"}", 400, "rng 'dice' must be torch or philox");
    post_expect("{\"prompt\": \"x\", \"seed\": -5}", 400, "field 'seed': -5 is out of range");
    post_expect("{\"prompt\": \"x\", \"operation\": \"image_transform\"}", 400,
                "needs field 'input_image'");
    post_expect("{\"prompt\": \"x\", \"operation\": \"image_transform\", \"input_image\": \"@@not"
                "base64@@\"}",
                400, "input_image: not valid base64");
    post_expect("{\"prompt\": \"x\", \"operation\": \"image_transform\", \"input_image\": "
                "\"aGVsbG8gd29ybGQ=\"}",
                400, "input_image");
    post_expect("{\"prompt\": \"x\", \"input_image\": \"aGVsbG8=\"}", 400,
                "'input_image' is not used by image_generation");
    post_expect("{\"prompt\": \"x\", \"loras\": [{\"name\": \"style\"}]}", 400,
                "the model has no LoRA folder");
    post_expect("{\"prompt\": \"x\", \"loras\": \"style\"}", 400, "field 'loras' must be an array");

    /* Images that decode but do not fit the request. */
    static uint8_t px[64 * 64 * 3];
    uint8_t *png;
    size_t n;
    ASSERT_OK(sdw_png_write_mem(px, 64, 64, 3, NULL, &png, &n, NULL), NULL);
    char *b64 = sdw_base64_encode(png, n, NULL);
    free(png);
    ASSERT_OK(sdw_png_write_mem(px, 8, 8, 3, NULL, &png, &n, NULL), NULL);
    char *b64_small = sdw_base64_encode(png, n, NULL);
    free(png);
    char *body = malloc(2 * strlen(b64) + 256);
    sprintf(body, "{\"prompt\":\"x\",\"operation\":\"image_inpaint\",\"input_image\":\"%s\","
                  "\"mask_image\":\"%s\"}", b64, b64_small);
    post_expect(body, 400, "mask size 8x8 does not match the init image size 64x64");
    sprintf(body, "{\"prompt\":\"x\",\"operation\":\"image_transform\",\"input_image\":\"%s\","
                  "\"strength\":0}", b64);
    post_expect(body, 400, "field 'strength': 0 must be in (0, 1]");
    sprintf(body, "{\"prompt\":\"x\",\"operation\":\"image_transform\",\"input_image\":\"%s\","
                  "\"strength\":0.1,\"steps\":4}", b64);
    post_expect(body, 400, "runs no denoising step");
    free(body);
    free(b64);
    free(b64_small);

    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/v1/jobs/0123456789abcdef0123456789abcdef", NULL,
                                   NULL, 0, &r), 0);
    expect_error(&r, 404, "not found");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/v1/nothing", NULL, NULL, 0, &r), 0);
    expect_error(&r, 404, "no such endpoint: GET /v1/nothing");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_request(g_port, "DELETE", "/v1/jobs", NULL, NULL, 0, &r), 0);
    expect_error(&r, 405, "DELETE is not allowed on /v1/jobs (allowed: POST)");
    char allow[64];
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "Allow", allow, sizeof allow), "POST");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_request(g_port, "POST", "/v1/jobs", "Content-Type: image/png\r\n", "x", 1, &r), 0);
    expect_error(&r, 415, "must be JSON");
    sdw_http_resp_free(&r);
}

static void test_body_limit(void) {
    sdw_test_server s;
    ASSERT_EQ_INT(sdw_test_server_start(&s, NULL, "-m '%s' -q --max-body-mb 1",
                                        sdw_test_path("models/tiny-sd15")), 0);
    size_t n = (size_t)3 << 20;
    char *big = malloc(n);
    memset(big, ' ', n);
    memcpy(big, "{\"prompt\":\"", 11);
    big[n - 2] = '"';
    big[n - 1] = '}';
    sdw_http_resp r;
    int rc = sdw_http_request(s.port, "POST", "/v1/jobs", "Content-Type: application/json\r\n", big, n, &r);
    free(big);
    ASSERT_EQ_INT(rc, 0);
    expect_error(&r, 413, "exceeds the limit of 1048576 bytes");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_test_server_stop(&s), 0);
}

int main(void) {
    if (sdw_test_server_start(&g_srv, NULL, "-m '%s' -q -t 1 --preview-every 1",
                              sdw_test_path("models/tiny-sd15")) != 0) {
        fprintf(stderr, "cannot start sdw serve\n");
        return 1;
    }
    g_port = g_srv.port;
    RUN(test_health_ready_capabilities);
    RUN(test_job_stream_and_image_match_cli_and_reference);
    RUN(test_late_subscriber_gets_final_state);
    RUN(test_cancel_running_and_queued);
    RUN(test_transform_and_inpaint_match_reference);
    RUN(test_missing_mode_is_400);
    RUN(test_bad_input);
    RUN(test_body_limit);
    int rc = sdw_test_server_stop(&g_srv);
    if (rc != 0) fprintf(stderr, "sdw serve exited with %d\n", rc);
    int t = sdw_test_finish();
    return rc != 0 ? 1 : t;
}
