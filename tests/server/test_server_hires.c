/* `sdw serve` with the hires fix, a TAESD and VAE tiling (issue 13): AUTOMATIC1111's txt2img
 * fields (enable_hr, hr_scale, hr_upscaler, hr_second_pass_steps, denoising_strength,
 * hr_resize_x/y) and its answer (the first pass's size, extra_generation_params, the
 * infotext), the same image as `sdw generate --hires-*`; the native API's "hires", "decoder"
 * and "vae_tiling" and what a job reports; the upscaler lists and capabilities; refusals (a
 * neural upscaler, the server's size limit, hires on image-to-image, bad fields). */
#include "sdw_http.h"
#include "sdw_test.h"

#include "io/base64.h"
#include "io/png.h"

#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

static sdw_test_server g_srv;
static int g_port;

static json_t *request(const char *method, const char *path, const char *json, int *status) {
    sdw_http_resp r;
    if (json ? sdw_http_post_json(g_port, path, json, &r)
             : sdw_http_request(g_port, method, path, NULL, NULL, 0, &r)) {
        *status = -1;
        return NULL;
    }
    *status = r.status;
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    if (!j) fprintf(stderr, "%s %s: %d %s\n", method, path, r.status, r.body);
    sdw_http_resp_free(&r);
    return j;
}

/* A base64 PNG into *png (sdw_png_deinit). */
static bool decode_png(const char *b64, sdw_png *png) {
    uint8_t *raw = NULL;
    size_t n = 0;
    bool ok = b64 && !sdw_base64_decode(b64, strlen(b64), &raw, &n, NULL) &&
              !sdw_png_read_mem(raw, n, "image", png, NULL);
    free(raw);
    return ok;
}

static void test_lists_and_capabilities(void) {
    int st;
    json_t *j = request("GET", "/sdapi/v1/upscalers", NULL, &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_EQ_INT(json_array_size(j), 3);
    static const char *const image_ups[] = {"None", "Lanczos", "Nearest"};
    for (int i = 0; i < 3; i++)
        ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(j, i), "name")),
                            image_ups[i]);
    json_decref(j);
    j = request("GET", "/sdapi/v1/latent-upscale-modes", NULL, &st);
    ASSERT_EQ_INT(json_array_size(j), 6);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(j, 3), "name")),
                        "Latent (bicubic antialiased)");
    json_decref(j);
    j = request("GET", "/v1/capabilities", NULL, &st);
    json_t *f = json_object_get(j, "features");
    ASSERT_TRUE(json_is_true(json_object_get(f, "taesd")));
    ASSERT_TRUE(json_is_true(json_object_get(f, "hires")));
    ASSERT_EQ_INT(json_array_size(json_object_get(j, "upscalers")), 9);
    json_decref(j);
}

/* The request's settings, without hr_scale, hr_upscaler and denoising_strength. */
#define A1111_BASE                                                                                 \
    "{\"prompt\":\"a photo of a cat\",\"width\":64,\"height\":64,\"steps\":3,\"cfg_scale\":7.5,"   \
    "\"seed\":42,\"sampler_name\":\"Euler\",\"enable_hr\":true,\"hr_second_pass_steps\":2,"       \
    "\"hr_sampler_name\":\"DPM++ 2M\",\"hr_prompt\":\"\""
#define A1111_HIRES                                                                                \
    A1111_BASE ",\"hr_scale\":1.5,\"hr_upscaler\":\"Latent (bicubic antialiased)\","              \
               "\"denoising_strength\":0.5"

static void test_a1111_hires(void) {
    int st;
    json_t *j = request("POST", "/sdapi/v1/txt2img", A1111_HIRES "}", &st);
    ASSERT_EQ_INT(st, 200);
    sdw_png png = {0};
    ASSERT_TRUE(decode_png(json_string_value(json_array_get(json_object_get(j, "images"), 0)),
                           &png));
    json_t *info = json_loads(json_string_value(json_object_get(j, "info")), 0, NULL);
    json_decref(j);
    ASSERT_TRUE(info != NULL);
    const bool sized = png.w == 96 && png.h == 96;
    /* A1111's answer: the first pass's size, the hires fields as its infotext has them */
    json_t *extra = json_object_get(info, "extra_generation_params");
    const bool fields = json_integer_value(json_object_get(info, "width")) == 64 &&
                        json_real_value(json_object_get(info, "denoising_strength")) == 0.5 &&
                        json_real_value(json_object_get(extra, "Hires upscale")) == 1.5 &&
                        json_integer_value(json_object_get(extra, "Hires steps")) == 2;
    char text[2048], warnings[1024];
    snprintf(text, sizeof text, "%s",
             json_string_value(json_array_get(json_object_get(info, "infotexts"), 0)));
    char *w = json_dumps(json_object_get(info, "warnings"), 0);
    snprintf(warnings, sizeof warnings, "%s", w);
    free(w);
    json_decref(info);
    /* the same image as the CLI's */
    char out[8192], path[1024];
    snprintf(path, sizeof path, "%s/cli.png", sdw_test_tmpdir());
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' -p 'a photo of a cat' -W 64 -H 64 --steps 3 "
                              "--cfg-scale 7.5 -s 42 --sampler euler --hires-scale 1.5 "
                              "--hires-upscaler latent-bicubic-antialiased --hires-steps 2 "
                              "--hires-strength 0.5 -o '%s'",
                              sdw_test_path("models/tiny-sd15"), path);
    sdw_png cli = {0};
    const bool read = rc == 0 && !sdw_png_read(path, &cli, NULL);
    int d = read && cli.w == png.w && cli.h == png.h ? 0 : 256;
    for (size_t i = 0; d < 256 && i < (size_t)png.w * png.h * 3; i++) {
        const int di = abs((int)png.pixels[i] - (int)cli.pixels[i]);
        if (di > d) d = di;
    }
    fprintf(stderr, "  A1111 API vs sdw generate: max diff %d levels\n", d);
    sdw_png_deinit(&cli);
    sdw_png_deinit(&png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_TRUE(sized && fields);
    ASSERT_STR_CONTAINS(text, "Size: 64x64");
    ASSERT_STR_CONTAINS(text, "Denoising strength: 0.5");
    ASSERT_STR_CONTAINS(text, "Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Latent "
                              "(bicubic antialiased)");
    ASSERT_STR_CONTAINS(warnings, "hr_sampler_name ignored");
    ASSERT_TRUE(strstr(warnings, "hr_prompt") == NULL); /* empty: the same prompt */
    /* the A1111 API reads prompts with A1111's syntax, the CLI with the pipelines' plain
     * reading: the same embedding for this prompt, up to float rounding */
    ASSERT_TRUE(d <= 2);
}

static void expect_a1111_error(const char *body, int want, const char *msg) {
    int st;
    json_t *j = request("POST", "/sdapi/v1/txt2img", body, &st);
    const char *detail = json_string_value(json_object_get(j, "detail"));
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", detail ? detail : "(none)");
    json_decref(j);
    if (st != want) fprintf(stderr, "  %s -> %d %s\n", body, st, copy);
    ASSERT_EQ_INT(st, want);
    ASSERT_STR_CONTAINS(copy, msg);
}

static void test_a1111_refusals(void) {
    expect_a1111_error(A1111_BASE ",\"hr_upscaler\":\"R-ESRGAN 4x+\"}", 400,
                       "neural upscalers such as ESRGAN are not installed");
    if (sdw_test_failures_in_current) return;
    expect_a1111_error(A1111_BASE ",\"denoising_strength\":0}", 400,
                       "denoising_strength 0 must be in (0, 1] for the hires fix");
    if (sdw_test_failures_in_current) return;
    /* 64 x 2 = 128 is over this server's --max-size 96 */
    expect_a1111_error(A1111_BASE ",\"hr_scale\":2}", 400,
                       "enlarges 64x64 to 128x128: over this server's limit of 96");
    if (sdw_test_failures_in_current) return;
    expect_a1111_error("{\"prompt\":\"x\",\"enable_hr\":true,\"hr_second_pass_steps\":-1}", 400,
                       "field 'hr_second_pass_steps'");
}

/* Polls a native job until it ends; its JSON (new) or NULL. */
static json_t *wait_job(const char *id) {
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    for (int i = 0; i < 2400; i++) {
        int st;
        json_t *j = request("GET", path, NULL, &st);
        const char *state = json_string_value(json_object_get(j, "state"));
        if (state && strcmp(state, "queued") && strcmp(state, "running")) return j;
        json_decref(j);
        usleep(50000);
    }
    return NULL;
}

static json_t *run_native(const char *body) {
    int st;
    json_t *j = request("POST", "/v1/jobs", body, &st);
    if (st != 202) {
        json_decref(j);
        return NULL;
    }
    char id[64];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(j, "job_id")));
    json_decref(j);
    return wait_job(id);
}

static void test_native(void) {
    json_t *j = run_native("{\"prompt\":\"a cat\",\"width\":64,\"height\":64,\"steps\":3,"
                           "\"seed\":7,\"sampler\":\"euler\",\"decoder\":\"taesd\","
                           "\"hires\":{\"scale\":1.5,\"steps\":2,\"strength\":0.5,"
                           "\"upscaler\":\"Lanczos\"}}");
    ASSERT_TRUE(j != NULL);
    json_t *res = json_object_get(j, "result"), *params = json_object_get(j, "parameters");
    json_t *img = json_array_get(json_object_get(res, "images"), 0);
    const bool ok = json_integer_value(json_object_get(img, "width")) == 96 &&
                    json_is_true(json_object_get(res, "hires")) &&
                    json_is_true(json_object_get(res, "taesd_decoded")) &&
                    json_is_false(json_object_get(res, "vae_tiled")) &&
                    json_integer_value(json_object_get(params, "width")) == 64 &&
                    json_integer_value(json_object_get(json_object_get(params, "hires"),
                                                       "height")) == 96 &&
                    !strcmp(json_string_value(json_object_get(params, "decoder")), "taesd") &&
                    json_is_null(json_object_get(params, "vae_tiling"));
    char text[2048];
    snprintf(text, sizeof text, "%s", json_string_value(json_object_get(res, "infotext")));
    json_decref(j);
    ASSERT_TRUE(ok);
    ASSERT_STR_CONTAINS(text, "Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Lanczos");
    ASSERT_STR_CONTAINS(text, "VAE Decoder: TAESD");
    /* tiled on request; an empty "hires" is A1111's defaults (64 x 2 = 128: over --max-size) */
    j = run_native("{\"prompt\":\"a cat\",\"width\":64,\"height\":64,\"steps\":2,\"seed\":7,"
                   "\"vae_tiling\":true}");
    ASSERT_TRUE(j != NULL);
    res = json_object_get(j, "result");
    const bool tiled = json_is_true(json_object_get(res, "vae_tiled")) &&
                       json_is_true(json_object_get(json_object_get(j, "parameters"),
                                                    "vae_tiling"));
    json_decref(j);
    ASSERT_TRUE(tiled);
    static const struct {
        const char *body, *param, *msg;
    } bad[] = {
        {"{\"prompt\":\"x\",\"width\":64,\"height\":64,\"hires\":{}}", "hires",
         "over this server's limit of 96"},
        {"{\"prompt\":\"x\",\"hires\":{\"scale\":1.5,\"bogus\":1}}", "hires",
         "hires: unknown field 'bogus'"},
        {"{\"prompt\":\"x\",\"hires\":{\"upscaler\":\"ESRGAN_4x\"}}", "hires",
         "not installed in this worker"},
        {"{\"prompt\":\"x\",\"hires\":{\"strength\":0}}", "hires", "strength 0 must be in (0, 1]"},
        {"{\"prompt\":\"x\",\"hires\":2}", "hires", "must be an object"},
        {"{\"prompt\":\"x\",\"operation\":\"image_transform\",\"hires\":{}}", "hires",
         "is for image_generation"},
        {"{\"prompt\":\"x\",\"decoder\":\"tiny\"}", "decoder", "must be vae or taesd"},
        {"{\"prompt\":\"x\",\"vae_tiling\":\"yes\"}", "vae_tiling", "must be true or false"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(bad); i++) {
        sdw_http_resp r;
        ASSERT_EQ_INT(sdw_http_post_json(g_port, "/v1/jobs", bad[i].body, &r), 0);
        json_t *e = json_loadb(r.body, r.body_len, 0, NULL);
        const int status = r.status;
        sdw_http_resp_free(&r);
        json_t *err = json_object_get(e, "error");
        char msg[1024], param[64];
        snprintf(msg, sizeof msg, "%s", json_string_value(json_object_get(err, "message")));
        snprintf(param, sizeof param, "%s", json_string_value(json_object_get(err, "param")));
        json_decref(e);
        if (status != 400) fprintf(stderr, "  %s -> %d %s\n", bad[i].body, status, msg);
        ASSERT_EQ_INT(status, 400);
        ASSERT_STR_CONTAINS(msg, bad[i].msg);
        ASSERT_STR_CONTAINS(param, bad[i].param);
    }
}

int main(void) {
    if (sdw_test_server_start(&g_srv, NULL, "-m '%s' -q -t 2 --taesd '%s' --max-size 96",
                              sdw_test_path("models/tiny-sd15"),
                              sdw_test_path("models/tiny-taesd")) != 0) {
        fprintf(stderr, "could not start sdw serve\n");
        return 1;
    }
    g_port = g_srv.port;
    RUN(test_lists_and_capabilities);
    RUN(test_a1111_hires);
    RUN(test_a1111_refusals);
    RUN(test_native);
    int rc = sdw_test_server_stop(&g_srv);
    if (rc != 0) fprintf(stderr, "sdw serve exited with %d\n", rc);
    return sdw_test_finish();
}
