/* ControlNets through `sdw serve --controlnet-dir DIR`: the native API's "controlnets" and
 * AUTOMATIC1111's alwayson_scripts.controlnet.args (sd-webui-controlnet's units) both give the
 * reference's image (golden tiny-sd15/txt2img-ddim-controlnet), the extension's routes answer
 * as clients expect, and bad units are refused with 4xx naming the field. */
#include "sdw_http.h"
#include "sdw_test.h"

#include "io/base64.h"

#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

#define CASE "tiny-sd15/txt2img-ddim-controlnet"

static sdw_test_server g_srv;
static int g_port;
static char *g_hint_b64; /* the golden's control image, base64 PNG */

static json_t *body_json(const sdw_http_resp *r) {
    return json_loadb(r->body, r->body_len, 0, NULL);
}

/* The bytes of a base64 PNG into a file, compared with the golden's image. */
static int diff_b64_png(const char *b64) {
    uint8_t *png = NULL;
    size_t n = 0;
    sdw_error err = {0};
    if (sdw_base64_decode(b64, strlen(b64), &png, &n, &err)) return 256;
    size_t ref_n = 0;
    void *ref = sdw_test_read_file(sdw_test_path("golden/%s/image.png", CASE), &ref_n);
    const int d = ref ? sdw_test_png_bytes_max_diff(png, n, ref, ref_n) : 256;
    free(ref);
    free(png);
    return d;
}

static void test_extension_routes(void) {
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/controlnet/model_list", NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    json_t *list = json_object_get(j, "model_list");
    /* the fixtures' models folder: the ControlNet folder only (not the UNet or TAESD folders) */
    const bool ok = json_array_size(list) == 1 &&
                    !strcmp(json_string_value(json_array_get(list, 0)), "tiny-sd15-controlnet");
    if (!ok) fprintf(stderr, "  model_list: %s\n", json_dumps(j, 0));
    json_decref(j);
    ASSERT_TRUE(ok);
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/controlnet/version", NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    ASSERT_STR_CONTAINS(r.body, "version");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/controlnet/module_list", NULL, NULL, 0, &r), 0);
    ASSERT_STR_CONTAINS(r.body, "\"none\"");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/sdapi/v1/scripts", NULL, NULL, 0, &r), 0);
    ASSERT_STR_CONTAINS(r.body, "controlnet");
    sdw_http_resp_free(&r);
}

/* The native API: a job with "controlnets" gives the reference's image. */
static void test_native_job(void) {
    json_t *req = json_pack("{s:s,s:i,s:i,s:i,s:f,s:i,s:s,s:[{s:s,s:s,s:f}]}", "prompt",
                            "a photo of a cat", "width", 64, "height", 64, "steps", 4,
                            "guidance_scale", 7.5, "seed", 42, "sampler", "ddim", "controlnets",
                            "model", "tiny-sd15-controlnet", "image", g_hint_b64, "scale", 1.0);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_post_json(g_port, "/v1/jobs", text, &r), 0);
    free(text);
    if (r.status != 202) fprintf(stderr, "  %d %s\n", r.status, r.body);
    ASSERT_EQ_INT(r.status, 202);
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    char path[256], id[64];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(j, "job_id")));
    json_decref(j);
    /* wait for it, then fetch the image */
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    const char *state = NULL;
    for (int i = 0; i < 600; i++) {
        ASSERT_EQ_INT(sdw_http_request(g_port, "GET", path, NULL, NULL, 0, &r), 0);
        j = body_json(&r);
        sdw_http_resp_free(&r);
        state = json_string_value(json_object_get(j, "state"));
        const bool done = state && (!strcmp(state, "succeeded") || !strcmp(state, "failed") ||
                                    !strcmp(state, "cancelled"));
        if (done) {
            const bool ok = !strcmp(state, "succeeded");
            json_t *cns = json_object_get(json_object_get(j, "parameters"), "controlnets");
            const bool echoed = json_array_size(cns) == 1;
            if (!ok) fprintf(stderr, "  job: %s\n", json_dumps(j, 0));
            json_decref(j);
            ASSERT_TRUE(ok);
            ASSERT_TRUE(echoed);
            break;
        }
        json_decref(j);
        usleep(100 * 1000);
    }
    snprintf(path, sizeof path, "/v1/jobs/%s/image.png", id);
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", path, NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    size_t ref_n = 0;
    void *ref = sdw_test_read_file(sdw_test_path("golden/%s/image.png", CASE), &ref_n);
    const int d = sdw_test_png_bytes_max_diff(r.body, r.body_len, ref, ref_n);
    free(ref);
    sdw_http_resp_free(&r);
    fprintf(stderr, "  native: max diff %d\n", d);
    ASSERT_TRUE(d <= 2);
}

/* AUTOMATIC1111: a txt2img with one sd-webui-controlnet unit (hashed model name, module none,
 * Just Resize) gives the reference's image; a disabled unit is no unit. */
static void test_a1111_txt2img(void) {
    json_t *unit = json_pack("{s:b,s:s,s:s,s:f,s:s,s:s,s:f,s:f,s:s,s:b}", "enabled", 1, "module",
                             "none", "model", "tiny-sd15-controlnet [0123abcd]", "weight", 1.0,
                             "image", g_hint_b64, "resize_mode", "Just Resize", "guidance_start",
                             0.0, "guidance_end", 1.0, "control_mode", "Balanced",
                             "pixel_perfect", 0);
    json_t *off = json_pack("{s:b,s:s}", "enabled", 0, "model", "whatever");
    json_t *req = json_pack("{s:s,s:i,s:i,s:i,s:f,s:i,s:s,s:{s:{s:[o,o]}}}", "prompt",
                            "a photo of a cat", "width", 64, "height", 64, "steps", 4, "cfg_scale",
                            7.5, "seed", 42, "sampler_name", "DDIM", "alwayson_scripts",
                            "ControlNet", "args", unit, off);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_post_json(g_port, "/sdapi/v1/txt2img", text, &r), 0);
    free(text);
    if (r.status != 200) fprintf(stderr, "  %d %.500s\n", r.status, r.body);
    ASSERT_EQ_INT(r.status, 200);
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    const char *img = json_string_value(json_array_get(json_object_get(j, "images"), 0));
    const int d = img ? diff_b64_png(img) : 256;
    json_decref(j);
    fprintf(stderr, "  a1111: max diff %d\n", d);
    ASSERT_TRUE(d <= 2);
}

static void expect(const char *path, const char *json, int status, const char *says) {
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_post_json(g_port, path, json, &r), 0);
    if (r.status != status || !strstr(r.body, says))
        fprintf(stderr, "  %s: %d %.400s\n", path, r.status, r.body);
    ASSERT_EQ_INT(r.status, status);
    ASSERT_STR_CONTAINS(r.body, says);
    sdw_http_resp_free(&r);
}

static void test_refusals(void) {
    char body[2048];
    static const struct {
        const char *unit, *says;
        int status;
    } native[] = {
        {"{\"model\":\"../tiny-sd15\",\"image\":\"%s\"}", "'..'", 400},
        {"{\"model\":\"nothing-here\",\"image\":\"%s\"}", "not found", 404},
        {"{\"model\":\"tiny-sd15-controlnet\",\"image\":\"%s\",\"start\":0.8,\"end\":0.5}",
         "smaller than end", 400},
        {"{\"model\":\"tiny-sd15-controlnet\",\"image\":\"%s\",\"scale\":-1}", "scale", 400},
        {"{\"model\":\"tiny-sd15-controlnet\",\"image\":\"%s\",\"weight\":1}", "unknown field",
         400},
        {"{\"model\":\"tiny-sd15-controlnet\"%.0s}", "needs 'image'", 400},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(native); i++) {
        char unit[512];
        snprintf(unit, sizeof unit, native[i].unit, "iVBORw0KGgo=");
        snprintf(body, sizeof body, "{\"prompt\":\"x\",\"controlnets\":[%s]}", unit);
        expect("/v1/jobs", body, native[i].status, native[i].says);
        if (sdw_test_failures_in_current) return;
    }
    /* an image that does not decode, after every other check */
    expect("/v1/jobs",
           "{\"prompt\":\"x\",\"controlnets\":[{\"model\":\"tiny-sd15-controlnet\","
           "\"image\":\"bm90IGFuIGltYWdl\"}]}",
           400, "controlnets[0].image");
    static const struct {
        const char *unit, *says;
    } a1111[] = {
        {"{\"module\":\"canny\",\"model\":\"tiny-sd15-controlnet\",\"image\":\"x\"}",
         "preprocessor"},
        {"{\"model\":\"tiny-sd15-controlnet\",\"image\":\"x\",\"control_mode\":2}",
         "ControlNet is more important"},
        {"{\"model\":\"tiny-sd15-controlnet\"}", "has no image"},
        {"{\"model\":\"None\",\"image\":\"x\"}", "names no ControlNet"},
        {"{\"model\":\"tiny-sd15-controlnet\",\"image\":\"x\",\"guidance_start\":0.9,"
         "\"guidance_end\":0.1}",
         "guidance_start"},
        {"{\"model\":\"tiny-sd15-controlnet\",\"image\":\"x\",\"resize_mode\":7}", "resize_mode"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(a1111); i++) {
        snprintf(body, sizeof body,
                 "{\"prompt\":\"x\",\"alwayson_scripts\":{\"controlnet\":{\"args\":[%s]}}}",
                 a1111[i].unit);
        expect("/sdapi/v1/txt2img", body, 400, a1111[i].says);
        if (sdw_test_failures_in_current) return;
    }
}

int main(void) {
    size_t n = 0;
    void *png = sdw_test_read_file(sdw_test_path("golden/%s/control_image.png", CASE), &n);
    if (!png) return 1;
    g_hint_b64 = sdw_base64_encode(png, n, NULL);
    free(png);
    if (sdw_test_server_start(&g_srv, NULL, "-m '%s' --controlnet-dir '%s'",
                              sdw_test_path("models/tiny-sd15"), sdw_test_path("models")) != 0) {
        fprintf(stderr, "server did not start\n");
        return 1;
    }
    g_port = g_srv.port;
    RUN(test_extension_routes);
    RUN(test_native_job);
    RUN(test_a1111_txt2img);
    RUN(test_refusals);
    const int rc = sdw_test_server_stop(&g_srv);
    free(g_hint_b64);
    if (rc != 0) fprintf(stderr, "server exit status %d\n", rc);
    return sdw_test_finish();
}
