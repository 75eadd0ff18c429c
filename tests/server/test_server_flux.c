/* `sdw serve` with a FLUX.1 model: the server knows nothing of families, so everything here goes
 * through the same code as Stable Diffusion — capabilities (type, variant, the family's request
 * options), a native job equal to the reference image, the family option passed through
 * ("params") and refused when out of range, and the OpenAI and AUTOMATIC1111 dialects giving the
 * native API's image (with Forge's parameters text for an embedded guidance). */
#include "sdw_http.h"
#include "sdw_test.h"

#include "io/base64.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

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

static uint8_t *unb64(const char *s, size_t *n) {
    uint8_t *b = NULL;
    if (!s || sdw_base64_decode(s, strlen(s), &b, n, NULL)) return NULL;
    return b;
}

/* The native API's final image (PNG bytes) for a job body, through its event stream. */
static uint8_t *native_png(const char *json, size_t *n) {
    int st = -1;
    json_t *j = post("/v1/jobs", json, &st);
    if (!j || st != 202) {
        json_decref(j);
        return NULL;
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s/stream",
             json_string_value(json_object_get(j, "job_id")));
    json_decref(j);
    sdw_sse *s = sdw_sse_open(g_port, path, NULL, NULL);
    char ev[64], *data;
    uint8_t *png = NULL;
    while (s && sdw_sse_next(s, ev, sizeof ev, &data, 120) == 0) {
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

static const char *const k_golden_job =
    "{\"prompt\":\"a photo of a cat\",\"width\":64,\"height\":64,\"steps\":4,"
    "\"guidance_scale\":3.5,\"seed\":42}";

static void test_capabilities(void) {
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/v1/capabilities", NULL, NULL, 0, &r), 0);
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    sdw_http_resp_free(&r);
    json_t *model = json_object_get(j, "model"), *feat = json_object_get(j, "features");
    json_t *seq = json_object_get(json_object_get(j, "params"), "max_sequence_length");
    bool ok = !strcmp(json_string_value(json_object_get(model, "type")), "flux") &&
              !strcmp(json_string_value(json_object_get(model, "variant")), "dev") &&
              json_is_true(json_object_get(feat, "guidance")) &&
              json_is_false(json_object_get(feat, "negative_prompt")) &&
              json_array_size(json_object_get(j, "samplers")) == 1 &&
              json_number_value(json_object_get(seq, "max")) == 512 &&
              json_number_value(json_object_get(seq, "default")) == 512;
    json_decref(j);
    ASSERT_TRUE(ok);
}

static void test_native_matches_reference(void) {
    size_t n = 0;
    uint8_t *png = native_png(k_golden_job, &n);
    ASSERT_TRUE(png != NULL);
    char path[1024];
    snprintf(path, sizeof path, "%s/flux-native.png", sdw_test_tmpdir());
    FILE *f = fopen(path, "wb");
    fwrite(png, 1, n, f);
    fclose(f);
    free(png);
    int d = sdw_test_png_max_diff(path, sdw_test_path("golden/tiny-flux/txt2img-flowmatch/image.png"));
    fprintf(stderr, "  native: max diff %d levels\n", d);
    ASSERT_TRUE(d <= 2);
}

static void test_family_params(void) {
    size_t n = 0;
    uint8_t *png = native_png("{\"prompt\":\"a cat\",\"width\":64,\"height\":64,\"steps\":1,"
                              "\"seed\":1,\"params\":{\"max_sequence_length\":128}}",
                              &n);
    ASSERT_TRUE(png != NULL);
    free(png);
    int st = -1;
    json_t *j = post("/v1/jobs", "{\"prompt\":\"x\",\"params\":{\"max_sequence_length\":600}}", &st);
    ASSERT_EQ_INT(st, 400);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    ASSERT_STR_CONTAINS(msg ? msg : "", "max_sequence_length 600 is out of range [1, 512]");
    json_decref(j);
    j = post("/v1/jobs", "{\"prompt\":\"x\",\"params\":{\"clip_skip\":2}}", &st);
    ASSERT_EQ_INT(st, 400);
    json_decref(j);
    j = post("/v1/jobs", "{\"prompt\":\"x\",\"params\":[1]}", &st);
    ASSERT_EQ_INT(st, 400);
    json_decref(j);
}

/* The other dialects give the native API's image for the same settings. */
static void test_openai_and_a1111(void) {
    size_t n_ref = 0, n = 0;
    uint8_t *ref = native_png(k_golden_job, &n_ref);
    ASSERT_TRUE(ref != NULL);
    int st = -1;
    json_t *j = post("/sdapi/v1/txt2img",
                     "{\"prompt\":\"a photo of a cat\",\"width\":64,\"height\":64,\"steps\":4,"
                     "\"cfg_scale\":3.5,\"seed\":42,\"sampler_name\":\"Euler\"}",
                     &st);
    ASSERT_EQ_INT(st, 200);
    uint8_t *p = unb64(json_string_value(json_array_get(json_object_get(j, "images"), 0)), &n);
    json_t *info = json_loads(json_string_value(json_object_get(j, "info")), 0, NULL);
    const char *text = json_string_value(json_array_get(json_object_get(info, "infotexts"), 0));
    char copy[2048];
    snprintf(copy, sizeof copy, "%s", text ? text : "");
    json_decref(info);
    json_decref(j);
    ASSERT_STR_CONTAINS(copy, "CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 42");
    ASSERT_TRUE(p != NULL);
    ASSERT_EQ_INT(sdw_test_png_bytes_max_diff(p, n, ref, n_ref), 0);
    free(p);
    /* OpenAI: size and prompt (no seed in that API: just a valid image of the asked size) */
    j = post("/v1/images/generations",
             "{\"prompt\":\"a photo of a cat\",\"size\":\"64x64\",\"response_format\":\"b64_json\"}",
             &st);
    ASSERT_EQ_INT(st, 200);
    p = unb64(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0),
                                                "b64_json")),
              &n);
    json_decref(j);
    ASSERT_TRUE(p != NULL && n > 8 && !memcmp(p, "\x89PNG", 4));
    free(p);
    free(ref);
}

int main(void) {
    if (sdw_test_server_start(&g_srv, NULL, "-m '%s' -q -t 1 --preview-every 1",
                              sdw_test_path("models/tiny-flux")) != 0) {
        fprintf(stderr, "cannot start sdw serve\n");
        return 1;
    }
    g_port = g_srv.port;
    RUN(test_capabilities);
    RUN(test_native_matches_reference);
    RUN(test_family_params);
    RUN(test_openai_and_a1111);
    int rc = sdw_test_server_stop(&g_srv);
    if (rc != 0) fprintf(stderr, "sdw serve exited with %d\n", rc);
    int t = sdw_test_finish();
    return rc != 0 ? 1 : t;
}
