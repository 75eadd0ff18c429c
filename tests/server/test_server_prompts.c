/* Prompt syntax, clip skip and textual-inversion embeddings through `sdw serve` (tiny-sd15 with
 * --embeddings-dir holding the fixture as tinyemb.safetensors): A1111's /sdapi/v1/embeddings
 * lists the folder; its txt2img reads prompts with A1111's syntax by default and gives the
 * reference's image (golden tiny-sd15/txt2img-euler-embedding), takes clip skip from
 * override_settings.CLIP_stop_at_last_layers or clip_skip; the native API's prompt_syntax and
 * clip_skip fields, echoed in the job; bad values refused naming the field. */
#include "sdw_http.h"
#include "sdw_test.h"

#include "core/common.h"
#include "io/base64.h"

#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>

static sdw_test_server g_srv;
static int g_port;

static json_t *call(const char *method, const char *path, const char *json, int *status) {
    sdw_http_resp r;
    *status = -1;
    if ((json ? sdw_http_post_json(g_port, path, json, &r)
              : sdw_http_request(g_port, method, path, NULL, NULL, 0, &r)) != 0)
        return NULL;
    *status = r.status;
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    if (!j) fprintf(stderr, "not JSON: %s\n", r.body);
    sdw_http_resp_free(&r);
    return j;
}

static const char *emb_dir(void) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/embeddings", sdw_test_tmpdir());
    SDW_ASSERT(mkdir(dir, 0700) == 0);
    size_t n;
    void *data = sdw_test_read_file(sdw_test_path("models/tiny-sd15-embedding-tinyemb.safetensors"),
                                    &n);
    char path[1100];
    snprintf(path, sizeof path, "%s/tinyemb.safetensors", dir);
    FILE *f = fopen(path, "wb");
    SDW_ASSERT(data && f && fwrite(data, 1, n, f) == n && fclose(f) == 0);
    free(data);
    snprintf(path, sizeof path, "%s/old.pt", dir); /* a pickle: listed as skipped */
    f = fopen(path, "wb");
    SDW_ASSERT(f && fputs("PK", f) >= 0 && fclose(f) == 0);
    return dir;
}

static void test_a1111_embeddings_list(void) {
    int st;
    json_t *j = call("GET", "/sdapi/v1/embeddings", NULL, &st);
    ASSERT_EQ_INT(st, 200);
    json_t *t = json_object_get(json_object_get(j, "loaded"), "tinyemb");
    ASSERT_TRUE(json_is_object(t));
    ASSERT_EQ_INT(json_integer_value(json_object_get(t, "vectors")), 2);
    ASSERT_EQ_INT(json_integer_value(json_object_get(t, "shape")), 32);
    ASSERT_TRUE(json_is_null(json_object_get(t, "step")));
    json_t *old = json_object_get(json_object_get(j, "skipped"), "old");
    ASSERT_TRUE(json_is_object(old));
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(old, "reason")), "pickle");
    json_decref(j);
}

/* The golden's settings through txt2img; returns the max level difference to its image. */
static int a1111_golden(const char *extra, int *clip_skip) {
    char body[1024];
    snprintf(body, sizeof body,
             "{\"prompt\":\"a photo of tinyemb, detailed\",\"seed\":42,\"steps\":4,\"cfg_scale\":7.5,"
             "\"width\":64,\"height\":64,\"sampler_name\":\"Euler\"%s}",
             extra);
    int st;
    json_t *j = call("POST", "/sdapi/v1/txt2img", body, &st);
    if (st != 200) {
        char *s = json_dumps(j, 0);
        fprintf(stderr, "  %d: %s\n", st, s);
        free(s);
        json_decref(j);
        return 256;
    }
    json_t *info = json_loads(json_string_value(json_object_get(j, "info")), 0, NULL);
    *clip_skip = (int)json_integer_value(json_object_get(info, "clip_skip"));
    json_decref(info);
    const char *b64 = json_string_value(json_array_get(json_object_get(j, "images"), 0));
    uint8_t *png = NULL;
    size_t n = 0;
    int d = 256;
    if (b64 && sdw_base64_decode(b64, strlen(b64), &png, &n, NULL) == SDW_OK) {
        size_t ng;
        void *golden =
            sdw_test_read_file(sdw_test_path("golden/tiny-sd15/txt2img-euler-embedding/image.png"), &ng);
        d = golden ? sdw_test_png_bytes_max_diff(png, n, golden, ng) : 256;
        free(golden);
    }
    free(png);
    json_decref(j);
    fprintf(stderr, "  txt2img%s: max diff %d levels\n", extra, d);
    return d;
}

static void test_a1111_golden(void) {
    int cs = 0;
    ASSERT_TRUE(a1111_golden("", &cs) <= 1);
    ASSERT_EQ_INT(cs, 1);
    ASSERT_TRUE(a1111_golden(",\"override_settings\":{\"CLIP_stop_at_last_layers\":1}", &cs) <= 1);
    ASSERT_TRUE(a1111_golden(",\"override_settings\":{\"CLIP_stop_at_last_layers\":2}", &cs) > 1);
    ASSERT_EQ_INT(cs, 2);
    ASSERT_TRUE(a1111_golden(",\"clip_skip\":2,\"override_settings\":{\"CLIP_stop_at_last_layers\":1}",
                             &cs) > 1);
    ASSERT_EQ_INT(cs, 2);
    ASSERT_TRUE(a1111_golden(",\"prompt_syntax\":false", &cs) <= 1);
}

static void test_refusals(void) {
    int st;
    json_t *j = call("POST", "/sdapi/v1/txt2img",
                     "{\"prompt\":\"x\",\"steps\":1,\"override_settings\":"
                     "{\"CLIP_stop_at_last_layers\":\"two\"}}",
                     &st);
    ASSERT_EQ_INT(st, 400);
    json_decref(j);
    j = call("POST", "/v1/jobs", "{\"prompt\":\"x\",\"clip_skip\":-1}", &st);
    ASSERT_EQ_INT(st, 400);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_object_get(j, "error"), "param")),
                        "clip_skip");
    json_decref(j);
    j = call("POST", "/v1/jobs", "{\"prompt\":\"x\",\"prompt_syntax\":\"yes\"}", &st);
    ASSERT_EQ_INT(st, 400);
    json_decref(j);
}

/* A job's parameters as GET /v1/jobs/ID answers them (NULL when the POST failed). */
static json_t *job_params(const char *body) {
    int st;
    json_t *j = call("POST", "/v1/jobs", body, &st);
    const char *id = json_string_value(json_object_get(j, "job_id"));
    json_t *p = NULL;
    if (st == 202 && id) {
        char path[128];
        snprintf(path, sizeof path, "/v1/jobs/%s", id);
        json_t *g = call("GET", path, NULL, &st);
        p = json_incref(json_object_get(g, "parameters"));
        json_decref(g);
    }
    json_decref(j);
    return p;
}

/* The native API: off by default, echoed in the job. */
static void test_native_fields(void) {
    json_t *p = job_params("{\"prompt\":\"a (cat:1.2) BREAK tinyemb\",\"steps\":1,\"width\":64,"
                           "\"height\":64,\"prompt_syntax\":true,\"clip_skip\":2}");
    ASSERT_TRUE(p != NULL);
    const bool syntax = json_is_true(json_object_get(p, "prompt_syntax"));
    const long long skip = json_integer_value(json_object_get(p, "clip_skip"));
    json_decref(p);
    ASSERT_TRUE(syntax);
    ASSERT_EQ_INT(skip, 2);
    p = job_params("{\"prompt\":\"x\",\"steps\":1,\"width\":64,\"height\":64}");
    ASSERT_TRUE(p != NULL);
    const bool off = json_is_false(json_object_get(p, "prompt_syntax"));
    json_decref(p);
    ASSERT_TRUE(off);
}

int main(void) {
    if (sdw_test_server_start(&g_srv, NULL, "-m '%s' -q -t 1 --embeddings-dir '%s'",
                              sdw_test_path("models/tiny-sd15"), emb_dir()) != 0)
        return 1;
    g_port = g_srv.port;
    RUN(test_a1111_embeddings_list);
    RUN(test_a1111_golden);
    RUN(test_refusals);
    RUN(test_native_fields);
    int rc = sdw_test_server_stop(&g_srv);
    int t = sdw_test_finish();
    return rc != 0 ? 1 : t;
}
