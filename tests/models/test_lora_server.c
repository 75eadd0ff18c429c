/* LoRAs through `sdw serve --lora-dir DIR`: A1111's /sdapi/v1/loras lists the folder (and
 * refresh-loras answers), the native API's "loras" gives the reference's image (golden
 * tiny-sd15/txt2img-euler-lora) and echoes them, the <lora:NAME:M> tag in an A1111 or OpenAI
 * prompt gives the same pixels as the native field, and bad LoRAs are refused with 4xx naming
 * the field or the name. The web page carries the LoRA picker. */
#include "sdw_http.h"
#include "sdw_test.h"

#include "io/base64.h"

#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define GOLDEN "tiny-sd15/txt2img-euler-lora"
/* the golden's settings */
#define SETTINGS "\"width\":64,\"height\":64,\"steps\":4,\"seed\":42,\"guidance_scale\":7.5"

static sdw_test_server g_srv;
static int g_port;

static json_t *call(const char *method, const char *path, const char *json, int *status) {
    sdw_http_resp r;
    *status = -1;
    const int rc = json ? sdw_http_post_json(g_port, path, json, &r)
                        : sdw_http_request(g_port, method, path, NULL, NULL, 0, &r);
    if (rc != 0) return NULL;
    *status = r.status;
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    if (!j) j = json_string(r.body ? r.body : "");
    sdw_http_resp_free(&r);
    return j;
}

static uint8_t *unb64(const char *s, size_t *n) {
    uint8_t *p = NULL;
    if (!s || sdw_base64_decode(s, strlen(s), &p, n, NULL)) return NULL;
    return p;
}

/* Runs a native job to its end; *png gets its image (free), *params its parameters (decref). */
static int native_job(const char *json, uint8_t **png, size_t *n, json_t **params) {
    int st = -1;
    json_t *j = call("POST", "/v1/jobs", json, &st);
    if (st != 202) {
        fprintf(stderr, "  %d %s\n", st, j ? json_dumps(j, 0) : "");
        json_decref(j);
        return st;
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s", json_string_value(json_object_get(j, "job_id")));
    json_decref(j);
    for (int i = 0; i < 1200; i++) {
        j = call("GET", path, NULL, &st);
        const char *state = json_string_value(json_object_get(j, "state"));
        if (state && strcmp(state, "queued") && strcmp(state, "running")) break;
        json_decref(j);
        j = NULL;
        usleep(100 * 1000);
    }
    const char *state = json_string_value(json_object_get(j, "state"));
    if (!state || strcmp(state, "succeeded")) {
        fprintf(stderr, "  job: %s\n", j ? json_dumps(j, 0) : "(none)");
        json_decref(j);
        return -1;
    }
    if (params) *params = json_incref(json_object_get(j, "parameters"));
    json_decref(j);
    strcat(path, "/image.png");
    sdw_http_resp r;
    if (sdw_http_request(g_port, "GET", path, NULL, NULL, 0, &r) || r.status != 200) return -1;
    *png = malloc(r.body_len);
    memcpy(*png, r.body, r.body_len);
    *n = r.body_len;
    sdw_http_resp_free(&r);
    return 0;
}

static int golden_diff(const uint8_t *png, size_t n) {
    size_t rn = 0;
    void *ref = sdw_test_read_file(sdw_test_path("golden/%s/image.png", GOLDEN), &rn);
    const int d = ref ? sdw_test_png_bytes_max_diff(png, n, ref, rn) : 256;
    free(ref);
    return d;
}

static void test_lists(void) {
    int st;
    json_t *j = call("GET", "/sdapi/v1/loras", NULL, &st);
    ASSERT_EQ_INT(st, 200);
    json_t *e = json_array_get(j, 0);
    const bool ok = json_array_size(j) == 1 &&
                    !strcmp(json_string_value(json_object_get(e, "name")), "tiny") &&
                    !strcmp(json_string_value(json_object_get(e, "alias")), "tiny") &&
                    !strcmp(json_string_value(json_object_get(e, "path")),
                            "styles/tiny.safetensors") &&
                    json_is_object(json_object_get(e, "metadata"));
    if (!ok) fprintf(stderr, "  loras: %s\n", json_dumps(j, 0));
    json_decref(j);
    ASSERT_TRUE(ok);
    j = call("POST", "/sdapi/v1/refresh-loras", "{}", &st);
    json_decref(j);
    ASSERT_EQ_INT(st, 200);
    j = call("GET", "/v1/capabilities", NULL, &st);
    const bool lora = json_is_true(json_object_get(json_object_get(j, "features"), "lora"));
    json_decref(j);
    ASSERT_EQ_INT(st, 200);
    ASSERT_TRUE(lora);
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/", NULL, NULL, 0, &r), 0);
    const bool picker = r.body && strstr(r.body, "id=\"lora-name\"") &&
                        strstr(r.body, "/sdapi/v1/loras");
    sdw_http_resp_free(&r);
    ASSERT_TRUE(picker);
}

static uint8_t *g_native; /* the native job's image with the LoRA at 0.8 */
static size_t g_native_n;

static void test_native(void) {
    uint8_t *png = NULL, *png2 = NULL;
    size_t n = 0, n2 = 0;
    json_t *params = NULL;
    ASSERT_EQ_INT(native_job("{\"prompt\":\"a photo of a cat\",\"sampler\":\"euler\"," SETTINGS
                             ",\"loras\":[{\"name\":\"tiny\",\"multiplier\":0.8}]}",
                             &png, &n, &params),
                  0);
    const int d = golden_diff(png, n);
    json_t *l = json_array_get(json_object_get(params, "loras"), 0);
    const bool echoed = l && !strcmp(json_string_value(json_object_get(l, "name")), "tiny") &&
                        fabs(json_number_value(json_object_get(l, "multiplier")) - 0.8) < 1e-6;
    json_decref(params);
    g_native = png;
    g_native_n = n;
    printf("    native loras: %d levels from the reference image\n", d);
    ASSERT_TRUE(d <= 2);
    ASSERT_TRUE(echoed);
    /* by its path in the folder: the same file, the same pixels */
    ASSERT_EQ_INT(native_job("{\"prompt\":\"a photo of a cat\",\"sampler\":\"euler\"," SETTINGS
                             ",\"loras\":[{\"path\":\"styles/tiny.safetensors\","
                             "\"multiplier\":0.8}]}",
                             &png2, &n2, NULL),
                  0);
    const int same = sdw_test_png_bytes_max_diff(png, n, png2, n2);
    free(png2);
    ASSERT_EQ_INT(same, 0);
}

static void test_a1111_tag(void) {
    ASSERT_TRUE(g_native != NULL);
    int st;
    json_t *j = call("POST", "/sdapi/v1/txt2img",
                     "{\"prompt\":\"a photo of a cat <lora:tiny:0.8>\",\"width\":64,\"height\":64,"
                     "\"steps\":4,\"cfg_scale\":7.5,\"seed\":42,\"sampler_name\":\"Euler\"}",
                     &st);
    size_t n = 0;
    uint8_t *p = unb64(json_string_value(json_array_get(json_object_get(j, "images"), 0)), &n);
    if (st != 200) fprintf(stderr, "  %s\n", json_dumps(j, 0));
    json_decref(j);
    const int d = p ? sdw_test_png_bytes_max_diff(p, n, g_native, g_native_n) : 256;
    free(p);
    ASSERT_EQ_INT(st, 200);
    ASSERT_EQ_INT(d, 0);
}

static void test_openai_tag(void) {
    int st;
    json_t *j = call("POST", "/v1/images/generations",
                     "{\"prompt\":\"a photo of a cat <lora:tiny:0.8>\",\"size\":\"64x64\","
                     "\"steps\":4,\"seed\":42,\"response_format\":\"b64_json\"}",
                     &st);
    size_t n = 0, nn = 0;
    uint8_t *p = unb64(
        json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0),
                                          "b64_json")),
        &n);
    if (st != 200) fprintf(stderr, "  %s\n", json_dumps(j, 0));
    json_decref(j);
    uint8_t *ref = NULL;
    const int rc = native_job("{\"prompt\":\"a photo of a cat\",\"width\":64,\"height\":64,"
                              "\"steps\":4,\"seed\":42,\"loras\":[{\"name\":\"tiny\","
                              "\"multiplier\":0.8}]}",
                              &ref, &nn, NULL);
    const int d = p && ref ? sdw_test_png_bytes_max_diff(p, n, ref, nn) : 256;
    free(p);
    free(ref);
    ASSERT_EQ_INT(st, 200);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_EQ_INT(d, 0);
}

/* Refusals: 4xx naming the field or the LoRA. */
static void test_refusals(void) {
    static const struct {
        const char *path, *body, *says;
    } cases[] = {
        {"/v1/jobs", "{\"prompt\":\"x\",\"loras\":[{\"name\":\"nosuch\"}]}", "nosuch"},
        {"/v1/jobs", "{\"prompt\":\"x\",\"loras\":[{\"name\":\"tiny\",\"multiplier\":\"abc\"}]}",
         "must be a number"},
        {"/v1/jobs", "{\"prompt\":\"x\",\"loras\":[{\"path\":\"../styles/tiny\"}]}", ".."},
        {"/v1/jobs", "{\"prompt\":\"x\",\"loras\":[{\"path\":\"/etc/passwd\"}]}", "absolute"},
        {"/v1/jobs", "{\"prompt\":\"x\",\"loras\":[{\"name\":\"tiny\",\"scale\":1}]}",
         "unknown field 'scale'"},
        {"/v1/jobs", "{\"prompt\":\"x\",\"loras\":\"tiny\"}", "must be an array"},
        {"/v1/jobs", "{\"prompt\":\"x <lora:tiny:abc>\"}", "'abc'"},
        {"/sdapi/v1/txt2img", "{\"prompt\":\"x <lora:gone:1>\",\"width\":64,\"height\":64}",
         "gone"},
        {"/v1/images/generations", "{\"prompt\":\"x <lora:tiny:1:2>\",\"size\":\"64x64\"}",
         "NAME:MULTIPLIER"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st;
        json_t *j = call("POST", cases[i].path, cases[i].body, &st);
        char *text = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
        printf("    %s %s -> %d %s\n", cases[i].path, cases[i].body, st, text ? text : "");
        const bool ok = st >= 400 && st < 500 && text && strstr(text, cases[i].says);
        free(text);
        json_decref(j);
        ASSERT_TRUE(ok);
    }
}

static bool copy_file(const char *src, const char *dst) {
    size_t n;
    void *d = sdw_test_read_file(src, &n);
    FILE *f = d ? fopen(dst, "wb") : NULL;
    bool ok = f && fwrite(d, 1, n, f) == n;
    if (f) ok = fclose(f) == 0 && ok;
    free(d);
    return ok;
}

int main(void) {
    char dir[4096], sub[4200], file[4300];
    snprintf(dir, sizeof dir, "%s/loras", sdw_test_tmpdir());
    snprintf(sub, sizeof sub, "%s/styles", dir);
    snprintf(file, sizeof file, "%s/tiny.safetensors", sub);
    mkdir(dir, 0755);
    mkdir(sub, 0755);
    if (!copy_file(sdw_test_path("models/tiny-sd15-lora-kohya.safetensors"), file)) {
        fprintf(stderr, "cannot copy the LoRA fixture\n");
        return 1;
    }
    if (sdw_test_server_start(&g_srv, NULL, "-m '%s' --lora-dir '%s'",
                              sdw_test_path("models/tiny-sd15"), dir) != 0) {
        fprintf(stderr, "server did not start\n");
        return 1;
    }
    g_port = g_srv.port;
    RUN(test_lists);
    RUN(test_native);
    RUN(test_a1111_tag);
    RUN(test_openai_tag);
    RUN(test_refusals);
    free(g_native);
    const int rc = sdw_test_server_stop(&g_srv);
    if (rc != 0) fprintf(stderr, "server exit status %d\n", rc);
    return sdw_test_finish();
}
