/* `sdw serve --redis` (the pool's stateless gateway) against a real redis-server, with a worker
 * of the tiny model running in this process (pool/worker.h): the same image for the same request
 * as `sdw serve -m` and `sdw generate`; a native job followed by Server-Sent Events to its end;
 * OpenAI and A1111 text-to-image; what the payload carries beyond the basics (A1111's prompt
 * syntax, clip skip, the hires fix, LoRAs by name and tag, ControlNets with their images) gives
 * the same image as `sdw serve -m`; /v1/workers, /v1/models and A1111's sd-models list the
 * worker; requests the model cannot serve refused before queueing; 503 with Retry-After while
 * Redis is down and recovery once it is back; a job still readable through a restarted gateway;
 * two gateways answering for the same job. Waits follow progress (events, states), with wide
 * safety nets only. */
#include "pool_support.h"

#include "sdw_http.h"

#include "io/base64.h"
#include "io/png.h"
#include "pool/gateway.h"
#include "pool/worker.h"

#include <jansson.h>
#include <pthread.h>
#include <sys/stat.h>

#define PREFIX "gwtest"
/* a request without its seed */
#define REQ_BASE                                                                                 \
    "\"prompt\":\"a photo of a cat\",\"width\":64,\"height\":64,\"steps\":4,"                   \
    "\"guidance_scale\":7.5,\"sampler\":\"euler\""
#define REQ REQ_BASE ",\"seed\":42"

static pool_redis g_rs;
static bool g_have_redis;
static char g_lora_dir[4096]; /* the worker's and the local server's LoRA folder */

/* ---- the worker, in a thread ---- */

typedef struct tworker {
    sdw_image_model *m;
    sdw_engine *e;
    sdw_pool_worker *w;
    pthread_t t;
    bool running;
} tworker;
static tworker g_w;

static void *tworker_main(void *arg) {
    sdw_pool_worker_run(((tworker *)arg)->w);
    return NULL;
}

static int tworker_start(tworker *t) {
    *t = (tworker){0};
    sdw_error err = {0};
    sdw_load_options o = sdw_load_options_default();
    o.n_threads = 1;
    o.lora_dir = g_lora_dir;
    o.controlnet_dir = sdw_test_path("models");
    sdw_engine_params ep = sdw_engine_params_default();
    ep.preview_every = 1;
    sdw_pool_worker_params p = sdw_pool_worker_params_default();
    p.redis_url = g_rs.url;
    p.prefix = PREFIX;
    p.heartbeat_s = 0.5;
    p.block_s = 0.2;
    if (sdw_model_load(sdw_test_path("models/tiny-sd15"), &o, &t->m, &err) ||
        sdw_engine_create(t->m, &ep, &t->e, &err) ||
        sdw_pool_worker_create(t->e, &p, &t->w, &err)) {
        fprintf(stderr, "worker: %s\n", err.msg);
        return -1;
    }
    if (pthread_create(&t->t, NULL, tworker_main, t)) return -1;
    t->running = true;
    return 0;
}

static void tworker_stop(tworker *t) {
    if (t->running) {
        sdw_pool_worker_stop(t->w);
        pthread_join(t->t, NULL);
    }
    sdw_pool_worker_destroy(t->w);
    sdw_engine_destroy(t->e);
    sdw_model_destroy(t->m);
    *t = (tworker){0};
}

/* ---- gateways ---- */

/* Starts `sdw serve --redis` (the URL from the environment, as a deployment would keep a
 * password off the command line) and waits for its ready line; its port, or -1. */
static int gateway_start(pool_proc *p) {
    char env[256];
    snprintf(env, sizeof env, "SDW_REDIS_URL='%s'", g_rs.url);
    if (pool_spawn(p, env, "serve --port 0 --pool-prefix " PREFIX) != 0) return -1;
    int port = pool_port(p);
    if (port < 0 || !pool_log_wait(p, "ready: gateway", 60)) {
        char *log = pool_log(p);
        fprintf(stderr, "gateway did not start:\n%s\n", log);
        free(log);
        return -1;
    }
    return port;
}

static json_t *body_json(const sdw_http_resp *r) {
    return json_loadb(r->body, r->body_len, 0, NULL);
}

static json_t *get_json(int port, const char *path, int *status) {
    sdw_http_resp r;
    if (sdw_http_request(port, "GET", path, NULL, NULL, 0, &r) != 0) {
        sdw_http_resp_free(&r);
        *status = -1;
        return NULL;
    }
    *status = r.status;
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    return j;
}

/* POSTs a native job; its id (static) or NULL. */
static const char *submit(int port, const char *json) {
    static char id[64];
    sdw_http_resp r;
    if (sdw_http_post_json(port, "/v1/jobs", json, &r) != 0 || r.status != 202) {
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

/* Follows the job's event stream to its end: the final event's name into final, and the
 * counts of progress and preview events. Each event has 60 s to come (a safety net). */
static void follow(int port, const char *id, char final[64], int *n_progress, int *n_preview,
                   int *last_step) {
    char path[128], ev[64];
    snprintf(path, sizeof path, "/v1/jobs/%s/stream", id);
    int st = 0;
    sdw_sse *s = sdw_sse_open(port, path, NULL, &st);
    final[0] = 0;
    *n_progress = *n_preview = 0;
    *last_step = -1;
    if (!s) {
        fprintf(stderr, "stream: status %d\n", st);
        return;
    }
    char *data = NULL;
    while (sdw_sse_next(s, ev, 64, &data, 60) == 0) {
        json_t *j = json_loads(data, 0, NULL);
        free(data);
        if (!strcmp(ev, "progress")) {
            int step = (int)json_integer_value(json_object_get(j, "step"));
            if (step < *last_step) fprintf(stderr, "progress went back: %d\n", step);
            *last_step = SDW_MAX(*last_step, step);
            (*n_progress)++;
        } else if (!strcmp(ev, "preview")) {
            (*n_preview)++;
        } else {
            snprintf(final, 64, "%s", ev);
        }
        json_decref(j);
    }
    sdw_sse_close(s);
}

/* The job's image as PNG bytes (new) or NULL. */
static char *job_png(int port, const char *id, size_t *n) {
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/image.png", id);
    sdw_http_resp r;
    if (sdw_http_request(port, "GET", path, NULL, NULL, 0, &r) != 0 || r.status != 200) {
        fprintf(stderr, "image: %d %s\n", r.status, r.body ? r.body : "");
        sdw_http_resp_free(&r);
        return NULL;
    }
    char *png = malloc(r.body_len);
    memcpy(png, r.body, r.body_len);
    *n = r.body_len;
    sdw_http_resp_free(&r);
    return png;
}

/* Waits (following the job's state) until it is terminal; its state string (static). */
static const char *wait_terminal(int port, const char *id) {
    static char state[32];
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    const double t0 = sdw_time_now();
    for (;;) {
        int st;
        json_t *j = get_json(port, path, &st);
        snprintf(state, sizeof state, "%s",
                 j && st == 200 ? json_string_value(json_object_get(j, "state")) : "?");
        json_decref(j);
        if (!strcmp(state, "succeeded") || !strcmp(state, "failed") ||
            !strcmp(state, "cancelled") || sdw_time_now() - t0 > 120)
            return state;
        pool_sleep(0.05);
    }
}

static uint8_t *unb64(const char *s, size_t *n) {
    uint8_t *out = NULL;
    if (!s || sdw_base64_decode(s, strlen(s), &out, n, NULL) != SDW_OK) return NULL;
    return out;
}

/* ---- the tests ---- */

static int g_port; /* the gateway the tests share */
static pool_proc g_gw;
static char *g_png; /* the gateway's image for REQ */
static size_t g_png_len;

/* The native API through the gateway: the job's events to its end, then its image equals
 * `sdw generate`'s and `sdw serve -m`'s for the same request (max diff 0). */
static void test_native_job_same_image(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    const char *id = submit(g_port, "{" REQ "}");
    ASSERT_TRUE(id != NULL);
    char job_id[64], final[64];
    snprintf(job_id, sizeof job_id, "%s", id);
    int n_progress, n_preview, last_step;
    follow(g_port, job_id, final, &n_progress, &n_preview, &last_step);
    fprintf(stderr, "  %d progress, %d preview events, final %s\n", n_progress, n_preview, final);
    ASSERT_STR_CONTAINS(final, "complete");
    ASSERT_TRUE(n_progress >= 2);
    ASSERT_TRUE(n_preview >= 1);
    ASSERT_EQ_INT(last_step, 4);
    g_png = job_png(g_port, job_id, &g_png_len);
    ASSERT_TRUE(g_png != NULL);

    /* the job's status: the worker's seed and infotext, the model named */
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", job_id);
    int st;
    json_t *j = get_json(g_port, path, &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "state")), "succeeded");
    json_t *res = json_object_get(j, "result");
    ASSERT_EQ_INT(json_integer_value(json_object_get(res, "seed")), 42);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(res, "infotext")), "Seed: 42");
    ASSERT_STR_CONTAINS(
        json_string_value(json_object_get(json_object_get(j, "parameters"), "model")),
        "tiny-sd15");
    json_decref(j);

    /* sdw generate */
    char cli[1024], cmd[3000];
    snprintf(cli, sizeof cli, "%s/gw-cli.png", sdw_test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "'%s' generate -m '%s' -p 'a photo of a cat' -W 64 -H 64 --steps 4 --cfg-scale 7.5 "
             "-s 42 --sampler euler -t 1 -q -o '%s'",
             sdw_test_bin(), sdw_test_path("models/tiny-sd15"), cli);
    ASSERT_EQ_INT(system(cmd), 0);
    size_t n_cli = 0;
    char *png_cli = sdw_test_read_file(cli, &n_cli);
    ASSERT_TRUE(png_cli != NULL);
    int d_cli = sdw_test_png_bytes_max_diff(g_png, g_png_len, png_cli, n_cli);
    free(png_cli);

    /* sdw serve -m */
    sdw_test_server local;
    ASSERT_EQ_INT(sdw_test_server_start(&local, NULL, "-m '%s' -t 1",
                                        sdw_test_path("models/tiny-sd15")),
                  0);
    const char *lid = submit(local.port, "{" REQ "}");
    int d_local = -1;
    if (lid) {
        snprintf(job_id, sizeof job_id, "%s", lid);
        follow(local.port, job_id, final, &n_progress, &n_preview, &last_step);
        size_t n_local = 0;
        char *png_local = job_png(local.port, job_id, &n_local);
        if (png_local) d_local = sdw_test_png_bytes_max_diff(g_png, g_png_len, png_local, n_local);
        free(png_local);
    }
    sdw_test_server_stop(&local);
    fprintf(stderr, "  max diff vs sdw generate %d, vs sdw serve -m %d\n", d_cli, d_local);
    ASSERT_EQ_INT(d_cli, 0);
    ASSERT_EQ_INT(d_local, 0);
}

/* OpenAI's and A1111's text-to-image through the gateway: the same image as the native job. */
static void test_openai_and_a1111(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    ASSERT_TRUE(g_png != NULL);
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_post_json(g_port, "/v1/images/generations",
                                     "{\"model\":\"dall-e-3\",\"prompt\":\"a photo of a cat\","
                                     "\"size\":\"64x64\",\"steps\":4,\"guidance_scale\":7.5,"
                                     "\"seed\":42,\"sampler\":\"euler\"}",
                                     &r),
                  0);
    if (r.status != 200) fprintf(stderr, "openai: %s\n", r.body);
    ASSERT_EQ_INT(r.status, 200);
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    size_t n = 0;
    uint8_t *png = unb64(json_string_value(json_object_get(
                             json_array_get(json_object_get(j, "data"), 0), "b64_json")),
                         &n);
    json_decref(j);
    ASSERT_TRUE(png != NULL);
    int d_openai = sdw_test_png_bytes_max_diff(g_png, g_png_len, png, n);
    free(png);

    ASSERT_EQ_INT(sdw_http_post_json(g_port, "/sdapi/v1/txt2img",
                                     "{\"prompt\":\"a photo of a cat\",\"width\":64,"
                                     "\"height\":64,\"steps\":4,\"cfg_scale\":7.5,\"seed\":42,"
                                     "\"sampler_name\":\"Euler\",\"prompt_syntax\":false,"
                                     "\"override_settings\":{\"sd_model_checkpoint\":"
                                     "\"tiny-sd15\"}}",
                                     &r),
                  0);
    if (r.status != 200) fprintf(stderr, "a1111: %s\n", r.body);
    ASSERT_EQ_INT(r.status, 200);
    j = body_json(&r);
    sdw_http_resp_free(&r);
    png = unb64(json_string_value(json_array_get(json_object_get(j, "images"), 0)), &n);
    json_t *info = json_loads(json_string_value(json_object_get(j, "info")), 0, NULL);
    json_decref(j);
    ASSERT_TRUE(png != NULL);
    int d_a1111 = sdw_test_png_bytes_max_diff(g_png, g_png_len, png, n);
    free(png);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(info, "sd_model_name")), "tiny-sd15");
    json_decref(info);
    fprintf(stderr, "  max diff vs the native job: OpenAI %d, A1111 %d\n", d_openai, d_a1111);
    ASSERT_EQ_INT(d_openai, 0);
    ASSERT_EQ_INT(d_a1111, 0);

    /* OpenAI's streaming: partial images from the worker's previews, then the image */
    ASSERT_EQ_INT(sdw_http_post_json(g_port, "/v1/images/generations",
                                     "{\"prompt\":\"a cat\",\"size\":\"64x64\",\"steps\":4,"
                                     "\"seed\":7,\"stream\":true,\"partial_images\":1}",
                                     &r),
                  0);
    ASSERT_EQ_INT(r.status, 200);
    char ct[64];
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "Content-Type", ct, sizeof ct), "text/event-stream");
    ASSERT_STR_CONTAINS(r.body, "image_generation.completed");
    sdw_http_resp_free(&r);

}

/* An A1111 route's first image (PNG bytes, new) or NULL. */
static uint8_t *a1111_png(int port, const char *route, const char *body, size_t *n) {
    sdw_http_resp r;
    if (sdw_http_post_json(port, route, body, &r) != 0 || r.status != 200) {
        fprintf(stderr, "  %s on port %d: %d %s\n", route, port, r.status, r.body ? r.body : "");
        sdw_http_resp_free(&r);
        return NULL;
    }
    json_t *j = body_json(&r);
    sdw_http_resp_free(&r);
    uint8_t *png = unb64(json_string_value(json_array_get(json_object_get(j, "images"), 0)), n);
    json_decref(j);
    return png;
}

/* A native job's image (PNG bytes, new) or NULL when it is refused or does not succeed. */
static uint8_t *native_png(int port, const char *body, size_t *n) {
    const char *id = submit(port, body);
    if (!id) return NULL;
    char job_id[64];
    snprintf(job_id, sizeof job_id, "%s", id);
    const char *state = wait_terminal(port, job_id);
    if (strcmp(state, "succeeded")) {
        char path[128];
        snprintf(path, sizeof path, "/v1/jobs/%s", job_id);
        int st;
        json_t *j = get_json(port, path, &st);
        fprintf(stderr, "  job %s: %s (%s)\n", job_id, state,
                json_string_value(json_object_get(json_object_get(j, "error"), "message")));
        json_decref(j);
        return NULL;
    }
    return (uint8_t *)job_png(port, job_id, n);
}

/* The max difference between a golden image and png; 256 when either is missing. */
static int golden_diff(const char *golden_case, const uint8_t *png, size_t n) {
    size_t rn = 0;
    void *ref = sdw_test_read_file(sdw_test_path("golden/%s/image.png", golden_case), &rn);
    const int d = ref && png ? sdw_test_png_bytes_max_diff(png, n, ref, rn) : 256;
    free(ref);
    return d;
}

/* An A1111 request whose image depends on its prompt syntax and clip skip (without its "}") */
#define SYNTAX_BODY                                                                              \
    "{\"prompt\":\"a photo of a (cat:1.2), ((fluffy)) BREAK [dog]\",\"width\":64,"          \
    "\"height\":64,\"steps\":4,\"cfg_scale\":7.5,\"seed\":42,\"sampler_name\":\"Euler\","    \
    "\"override_settings\":{\"CLIP_stop_at_last_layers\":2}"

/* A request through a gateway of this process (pool/gateway.h: resolved against the registry's
 * capabilities, queued with its images' pixels, run by the worker): the image (PNG bytes, new)
 * or NULL. */
static uint8_t *pool_png(const sdw_request *q, size_t *n) {
    sdw_pool_gateway_params p = sdw_pool_gateway_params_default();
    p.redis_url = g_rs.url;
    p.prefix = PREFIX;
    sdw_pool_gateway *g = NULL;
    sdw_pool_gw_models *ms = NULL;
    sdw_error err = {0};
    uint8_t *png = NULL;
    char id[SDW_POOL_JOB_ID_LEN + 1];
    if (sdw_pool_gateway_create(&p, &g, &err) || sdw_pool_gateway_models(g, &ms, &err)) goto done;
    const sdw_capabilities *caps = NULL;
    for (int i = 0; i < ms->n; i++)
        if (!strcmp(ms->m[i].name, "tiny-sd15")) caps = sdw_pool_caps_get(ms->m[i].caps);
    if (!caps) {
        sdw_error_set(&err, SDW_E_NOT_FOUND, "no worker serves tiny-sd15");
        goto done;
    }
    if (sdw_pool_gateway_submit(g, "tiny-sd15", caps, q, 1, id, &err)) goto done;
    sdw_pool_job_fields f = {0};
    for (const double t0 = sdw_time_now(); sdw_time_now() - t0 < 120; pool_sleep(0.05)) {
        if (sdw_pool_gateway_read(g, id, &f, &err)) goto done;
        free(f.req_json);
        if (sdw_job_state_terminal(f.state)) break;
    }
    if (f.state != SDW_JOB_SUCCEEDED) {
        sdw_error_set(&err, SDW_E_BACKEND, "job %s ended %s: %s", id, sdw_pool_state_str(f.state),
                      f.error);
        goto done;
    }
    char *info = NULL;
    if (sdw_pool_gateway_image(g, id, 0, &png, n, &info, &err) == SDW_OK) free(info);
done:
    if (!png) fprintf(stderr, "  through the pool: %s\n", err.msg);
    sdw_pool_gw_models_free(ms);
    sdw_pool_gateway_destroy(g);
    return png;
}

/* A native request with ControlNets: the control image (base64) once or twice. */
static char *controlnet_body(const char *b64, bool two) {
    const size_t cap = 2 * strlen(b64) + 1024;
    char *body = sdw_xmalloc(cap);
    if (!two)
        snprintf(body, cap,
                 "{\"prompt\":\"a photo of a cat\",\"width\":64,\"height\":64,\"steps\":4,"
                 "\"guidance_scale\":7.5,\"seed\":42,\"sampler\":\"ddim\",\"controlnets\":"
                 "[{\"model\":\"tiny-sd15-controlnet\",\"image\":\"%s\",\"scale\":1.0}]}",
                 b64);
    else
        snprintf(body, cap,
                 "{\"prompt\":\"a photo of a cat\",\"width\":64,\"height\":64,\"steps\":4,"
                 "\"guidance_scale\":7.5,\"seed\":42,\"sampler\":\"euler\","
                 "\"control_guess_mode\":true,\"controlnets\":["
                 "{\"model\":\"tiny-sd15-controlnet\",\"image\":\"%s\",\"scale\":0.7,"
                 "\"start\":0.25,\"end\":0.75},"
                 "{\"model\":\"tiny-sd15-controlnet\",\"image\":\"%s\",\"scale\":1.3}]}",
                 b64, b64);
    return body;
}

/* What the payload carries beyond the basics, through the gateway and through a local
 * `sdw serve -m` with the same folders: the same image, to the last bit. A1111's default
 * prompt syntax (emphasis, BREAK) with a clip skip; the hires fix with a bicubic latent
 * upscaler; a LoRA by name (native) and by tag (A1111); ControlNets with their images (one,
 * then two with guidance windows and guess mode). The LoRA and the one-ControlNet images are
 * also the reference's (their goldens). The ControlNet requests go through the pool's gateway
 * API rather than its HTTP front: the server's ControlNet parsing (server/controlnet.c) checks
 * names against a ControlNet folder of the serving process, which a gateway has not got. */
static void test_features_same_image(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    struct {
        const char *name, *route, *body, *golden;
    } cases[] = {
        {"A1111 prompt syntax + clip skip", "/sdapi/v1/txt2img", SYNTAX_BODY "}", NULL},
        {"A1111 hires fix", "/sdapi/v1/txt2img",
         "{\"prompt\":\"a photo of a (cat:1.2)\",\"width\":64,\"height\":64,\"steps\":2,"
         "\"cfg_scale\":7.5,\"seed\":42,\"sampler_name\":\"Euler\",\"enable_hr\":true,"
         "\"hr_scale\":1.5,\"hr_upscaler\":\"Latent (bicubic antialiased)\","
         "\"hr_second_pass_steps\":2,\"denoising_strength\":0.6}",
         NULL},
        {"native LoRA by name", "/v1/jobs",
         "{\"prompt\":\"a photo of a cat\",\"sampler\":\"euler\",\"width\":64,"
         "\"height\":64,\"steps\":4,\"seed\":42,\"guidance_scale\":7.5,"
         "\"loras\":[{\"name\":\"tiny\",\"multiplier\":0.8}]}",
         "tiny-sd15/txt2img-euler-lora"},
        {"A1111 LoRA tag", "/sdapi/v1/txt2img",
         "{\"prompt\":\"a photo of a cat <lora:tiny:0.8>\",\"width\":64,\"height\":64,"
         "\"steps\":4,\"cfg_scale\":7.5,\"seed\":42,\"sampler_name\":\"Euler\"}",
         NULL},
    };
    const char *hint_path =
        sdw_test_path("golden/tiny-sd15/txt2img-ddim-controlnet/control_image.png");
    size_t hn = 0;
    void *hint = sdw_test_read_file(hint_path, &hn);
    ASSERT_TRUE(hint != NULL);
    char *hint_b64 = sdw_base64_encode(hint, hn, NULL);
    free(hint);
    char *cn_http[2] = {controlnet_body(hint_b64, false), controlnet_body(hint_b64, true)};
    free(hint_b64);
    /* the same requests as sdw_requests, the control image's pixels as decoded */
    sdw_png hp = {0};
    sdw_error err = {0};
    ASSERT_OK(sdw_png_read(hint_path, &hp, &err), &err);
    const sdw_image himg = {hp.w, hp.h, hp.channels, hp.pixels};
    sdw_control ctl = sdw_control_default();
    ctl.name = "tiny-sd15-controlnet";
    ctl.image = &himg;
    sdw_request cn_req[2];
    for (int i = 0; i < 2; i++) {
        cn_req[i] = sdw_request_default();
        cn_req[i].prompt = "a photo of a cat";
        cn_req[i].width = cn_req[i].height = 64;
        cn_req[i].steps = 4;
        cn_req[i].guidance = 7.5f;
        cn_req[i].seed = 42;
    }
    cn_req[0].sampler = "ddim";
    cn_req[0].controls = &ctl;
    cn_req[0].n_controls = 1;
    sdw_control two[2] = {ctl, ctl};
    two[0].scale = 0.7f;
    two[0].start = 0.25;
    two[0].end = 0.75;
    two[1].scale = 1.3f;
    cn_req[1].sampler = "euler";
    cn_req[1].controls = two;
    cn_req[1].n_controls = 2;
    cn_req[1].control_guess_mode = true;

    sdw_test_server local;
    ASSERT_EQ_INT(sdw_test_server_start(&local, NULL,
                                        "-m '%s' -t 1 --lora-dir '%s' --controlnet-dir '%s'",
                                        sdw_test_path("models/tiny-sd15"), g_lora_dir,
                                        sdw_test_path("models")),
                  0);
    const char *cn_names[2] = {"ControlNet", "two ControlNets, windows, guess mode"};
    const char *cn_golden[2] = {"tiny-sd15/txt2img-ddim-controlnet", NULL};
    enum { N_HTTP = SDW_ARRAY_LEN(cases), N = N_HTTP + 2 };
    int d[N], dg[N], w[N], h[N];
    uint8_t *syntax_png = NULL; /* case 0's image through the gateway */
    size_t syntax_n = 0;
    for (int i = 0; i < N; i++) {
        const bool http = i < N_HTTP;
        const char *route = http ? cases[i].route : "/v1/jobs";
        const char *golden = http ? cases[i].golden : cn_golden[i - N_HTTP];
        const bool native = !strcmp(route, "/v1/jobs");
        size_t ng = 0, nl = 0;
        uint8_t *pg = !http    ? pool_png(&cn_req[i - N_HTTP], &ng)
                      : native ? native_png(g_port, cases[i].body, &ng)
                               : a1111_png(g_port, route, cases[i].body, &ng);
        const char *body = http ? cases[i].body : cn_http[i - N_HTTP];
        uint8_t *pl = native ? native_png(local.port, body, &nl)
                             : a1111_png(local.port, route, body, &nl);
        d[i] = pg && pl ? sdw_test_png_bytes_max_diff(pg, ng, pl, nl) : -1;
        dg[i] = golden ? golden_diff(golden, pg, ng) : 0;
        sdw_png im = {0};
        if (pg) sdw_png_read_mem(pg, ng, "the gateway's image", &im, NULL);
        w[i] = im.w;
        h[i] = im.h;
        sdw_png_deinit(&im);
        fprintf(stderr, "  %s: %dx%d, max diff vs sdw serve -m %d",
                http ? cases[i].name : cn_names[i - N_HTTP], w[i], h[i], d[i]);
        if (golden) fprintf(stderr, ", vs the reference %d", dg[i]);
        fprintf(stderr, "\n");
        if (i == 0) syntax_png = pg, syntax_n = ng;
        else free(pg);
        free(pl);
    }
    sdw_test_server_stop(&local);
    /* the fields made a difference: the plain reading and the last layer give another image */
    size_t n_plain = 0, n_last = 0;
    uint8_t *plain = a1111_png(g_port, "/sdapi/v1/txt2img",
                               SYNTAX_BODY ",\"prompt_syntax\":false}", &n_plain);
    uint8_t *last = a1111_png(g_port, "/sdapi/v1/txt2img", SYNTAX_BODY ",\"clip_skip\":1}",
                              &n_last);
    const int d_plain = syntax_png && plain
                            ? sdw_test_png_bytes_max_diff(syntax_png, syntax_n, plain, n_plain)
                            : -1;
    const int d_last = syntax_png && last
                           ? sdw_test_png_bytes_max_diff(syntax_png, syntax_n, last, n_last)
                           : -1;
    fprintf(stderr, "  without the prompt syntax: max diff %d; with clip skip 1: %d\n", d_plain,
            d_last);
    free(syntax_png);
    free(plain);
    free(last);
    sdw_png_deinit(&hp);
    free(cn_http[0]);
    free(cn_http[1]);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ_INT(d[i], 0);
        ASSERT_TRUE(dg[i] <= 2);
    }
    ASSERT_TRUE(w[1] == 96 && h[1] == 96); /* the hires fix's second pass ran */
    ASSERT_TRUE(d_plain > 0 && d_last > 0);

    /* a LoRA the worker's folder has not got: the job fails on the worker, naming it */
    const char *id = submit(g_port, "{\"prompt\":\"x\",\"steps\":1,\"width\":64,\"height\":64,"
                                    "\"loras\":[{\"name\":\"no-such-lora\",\"multiplier\":1}]}");
    ASSERT_TRUE(id != NULL);
    char job_id[64], path[128];
    snprintf(job_id, sizeof job_id, "%s", id);
    ASSERT_STR_CONTAINS(wait_terminal(g_port, job_id), "failed");
    snprintf(path, sizeof path, "/v1/jobs/%s", job_id);
    int st;
    json_t *j = get_json(g_port, path, &st);
    ASSERT_STR_CONTAINS(
        json_string_value(json_object_get(json_object_get(j, "error"), "message")),
        "no-such-lora");
    json_decref(j);
}

/* The lists: /v1/workers (the registry), /v1/models and A1111's sd-models (what live workers
 * serve), /ready, and the web page. */
static void test_lists(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    int st;
    json_t *j = get_json(g_port, "/v1/workers", &st);
    ASSERT_EQ_INT(st, 200);
    json_t *data = json_object_get(j, "data");
    ASSERT_EQ_INT((int)json_array_size(data), 1);
    json_t *w = json_array_get(data, 0);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(w, "model")), "tiny-sd15");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(w, "id")),
                        sdw_pool_worker_id(g_w.w));
    ASSERT_TRUE(json_is_true(json_object_get(json_object_get(w, "capabilities"), "txt2img")));
    json_decref(j);

    j = get_json(g_port, "/v1/models", &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_EQ_INT((int)json_array_size(json_object_get(j, "data")), 1);
    ASSERT_STR_CONTAINS(
        json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "id")),
        "tiny-sd15");
    json_decref(j);

    j = get_json(g_port, "/sdapi/v1/sd-models", &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_EQ_INT((int)json_array_size(j), 1);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(j, 0), "model_name")),
                        "tiny-sd15");
    json_decref(j);

    j = get_json(g_port, "/v1/capabilities?model=tiny-sd15", &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "defaults"), "width")),
                  64);
    json_decref(j);

    j = get_json(g_port, "/ready", &st);
    ASSERT_EQ_INT(st, 200);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "model")), "tiny-sd15");
    json_decref(j);

    /* metrics: the pool's jobs now */
    sdw_http_resp m;
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/metrics", NULL, NULL, 0, &m), 0);
    ASSERT_EQ_INT(m.status, 200);
    ASSERT_STR_CONTAINS(m.body, "sdw_model_loaded 1");
    ASSERT_STR_CONTAINS(m.body, "sdw_jobs{state=\"queued\"}");
    sdw_http_resp_free(&m);

    /* the web page, whose first call is /v1/capabilities (above) */
    sdw_http_resp r;
    char ct[64];
    ASSERT_EQ_INT(sdw_http_request(g_port, "GET", "/", NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "Content-Type", ct, sizeof ct), "text/html");
    sdw_http_resp_free(&r);
}

/* Requests the model cannot serve are refused at the gateway: nothing reaches the queue. */
static void test_refusals_before_queueing(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    long long before = pool_redis_int(&g_rs, "GET %s:seq", PREFIX);
    struct {
        const char *body, *want;
        int status;
    } cases[] = {
        {"{\"prompt\":\"x\",\"steps\":2,\"decoder\":\"taesd\"}", "taesd", 400},
        {"{\"prompt\":\"x\",\"steps\":2,\"sampler\":\"no-such-sampler\"}", "sampler", 400},
        {"{\"prompt\":\"x\",\"steps\":2,\"model\":\"no-such-model\"}", "no-such-model", 404},
        {"{\"prompt\":\"x\",\"steps\":2,\"clip_skip\":49}", "clip_skip", 400},
        {"{\"prompt\":\"x\",\"steps\":2,\"loras\":[{\"name\":\"tiny\",\"multiplier\":1000}]}",
         "multiplier", 400},
        {"{\"prompt\":\"x <lora:tiny:abc>\",\"steps\":2}", "'abc'", 400},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(cases); i++) {
        sdw_http_resp r;
        ASSERT_EQ_INT(sdw_http_post_json(g_port, "/v1/jobs", cases[i].body, &r), 0);
        if (r.status != cases[i].status) fprintf(stderr, "%s -> %d %s\n", cases[i].body,
                                                 r.status, r.body);
        ASSERT_EQ_INT(r.status, cases[i].status);
        ASSERT_STR_CONTAINS(r.body, cases[i].want);
        sdw_http_resp_free(&r);
    }
    ASSERT_EQ_INT(pool_redis_int(&g_rs, "GET %s:seq", PREFIX), before);
    ASSERT_EQ_INT(pool_redis_int(&g_rs, "XLEN %s:queue:tiny-sd15", PREFIX), 0);
}

/* Two models: a `sdw worker` process serves the tiny model under a second name. Jobs go to the
 * model they name (native "model", A1111's checkpoint), a request naming none is refused
 * listing both, and the models list follows the workers as they come and go. */
static int n_models(void) {
    int st;
    json_t *j = get_json(g_port, "/v1/models", &st);
    int n = st == 200 ? (int)json_array_size(json_object_get(j, "data")) : -1;
    json_decref(j);
    return n;
}

static void test_two_models(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    char env[256];
    snprintf(env, sizeof env, "SDW_REDIS_URL='%s'", g_rs.url);
    pool_proc wp;
    ASSERT_EQ_INT(pool_spawn(&wp, env,
                             "worker -m '%s' --model-name tiny-sd15-b --pool-prefix " PREFIX
                             " -t 1 --heartbeat 0.5",
                             sdw_test_path("models/tiny-sd15")),
                  0);
    bool up = pool_log_wait(&wp, "ready: worker", 120);
    if (!up) {
        char *log = pool_log(&wp);
        fprintf(stderr, "worker did not start:\n%s\n", log);
        free(log);
    }
    ASSERT_TRUE(up);
    for (double t0 = sdw_time_now(); n_models() != 2 && sdw_time_now() - t0 < 30;)
        pool_sleep(0.05); /* the registry entry and the gateway's short cache */
    ASSERT_EQ_INT(n_models(), 2);

    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_post_json(g_port, "/v1/jobs", "{" REQ "}", &r), 0);
    ASSERT_EQ_INT(r.status, 400);
    ASSERT_STR_CONTAINS(r.body, "tiny-sd15-b");
    sdw_http_resp_free(&r);

    sdw_pool_worker_stats before, after;
    sdw_pool_worker_get_stats(g_w.w, &before);
    const char *id = submit(g_port, "{" REQ ",\"model\":\"tiny-sd15-b\"}");
    ASSERT_TRUE(id != NULL);
    char job_id[64], final[64], path[128];
    snprintf(job_id, sizeof job_id, "%s", id);
    int n_progress, n_preview, last_step;
    follow(g_port, job_id, final, &n_progress, &n_preview, &last_step);
    ASSERT_STR_CONTAINS(final, "complete");
    snprintf(path, sizeof path, "/v1/jobs/%s", job_id);
    int st;
    json_t *j = get_json(g_port, path, &st);
    ASSERT_STR_CONTAINS(
        json_string_value(json_object_get(json_object_get(j, "parameters"), "model")),
        "tiny-sd15-b");
    json_decref(j);
    size_t n = 0;
    char *png = job_png(g_port, job_id, &n);
    ASSERT_TRUE(png != NULL);
    ASSERT_EQ_INT(sdw_test_png_bytes_max_diff(g_png, g_png_len, png, n), 0);
    free(png);

    ASSERT_EQ_INT(sdw_http_post_json(g_port, "/sdapi/v1/txt2img",
                                     "{\"prompt\":\"a cat\",\"width\":64,\"height\":64,"
                                     "\"steps\":2,\"prompt_syntax\":false,"
                                     "\"override_settings\":{\"sd_model_checkpoint\":"
                                     "\"tiny-sd15-b\"}}",
                                     &r),
                  0);
    ASSERT_EQ_INT(r.status, 200);
    j = body_json(&r);
    sdw_http_resp_free(&r);
    json_t *info = json_loads(json_string_value(json_object_get(j, "info")), 0, NULL);
    json_decref(j);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(info, "sd_model_name")),
                        "tiny-sd15-b");
    json_decref(info);
    sdw_pool_worker_get_stats(g_w.w, &after);
    ASSERT_EQ_INT((int)(after.started - before.started), 0); /* both ran on the other worker */

    ASSERT_EQ_INT(pool_stop(&wp, SIGTERM), 0);
    for (double t0 = sdw_time_now(); n_models() != 1 && sdw_time_now() - t0 < 30;)
        pool_sleep(0.05);
    ASSERT_EQ_INT(n_models(), 1);
}

/* A job submitted through one gateway is followed through another; after the first gateway
 * is stopped and a new one started, the job and its image are still there. */
static void test_two_gateways_and_restart(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    pool_proc other;
    int port2 = gateway_start(&other);
    ASSERT_TRUE(port2 > 0);
    const char *id = submit(g_port, "{" REQ_BASE ",\"seed\":43}");
    ASSERT_TRUE(id != NULL);
    char job_id[64], final[64];
    snprintf(job_id, sizeof job_id, "%s", id);
    int n_progress, n_preview, last_step;
    follow(port2, job_id, final, &n_progress, &n_preview, &last_step);
    ASSERT_STR_CONTAINS(final, "complete");
    size_t n1 = 0, n2 = 0;
    char *a = job_png(g_port, job_id, &n1), *b = job_png(port2, job_id, &n2);
    ASSERT_TRUE(a && b && n1 == n2 && !memcmp(a, b, n1));
    free(b);

    /* restart the first gateway */
    ASSERT_EQ_INT(pool_stop(&g_gw, SIGTERM), 0);
    g_port = gateway_start(&g_gw);
    ASSERT_TRUE(g_port > 0);
    ASSERT_STR_CONTAINS(wait_terminal(g_port, job_id), "succeeded");
    b = job_png(g_port, job_id, &n2);
    ASSERT_TRUE(b && n1 == n2 && !memcmp(a, b, n1));
    free(a);
    free(b);
    /* and a cancel through one is seen through the other */
    id = submit(port2, "{\"prompt\":\"x\",\"width\":64,\"height\":64,\"steps\":40}");
    ASSERT_TRUE(id != NULL);
    snprintf(job_id, sizeof job_id, "%s", id);
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", job_id);
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_request(g_port, "POST", path, NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    sdw_http_resp_free(&r);
    ASSERT_STR_CONTAINS(wait_terminal(port2, job_id), "cancelled");
    ASSERT_EQ_INT(pool_stop(&other, SIGTERM), 0);
}

/* Redis stopped: answers are 503 with Retry-After, quickly; once it is back, the same gateway
 * answers again and runs jobs (nothing accepted before is lost: AOF). */
static void test_redis_down_503_and_recovery(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    const char *id = submit(g_port, "{" REQ_BASE ",\"seed\":44}");
    ASSERT_TRUE(id != NULL);
    char job_id[64], path[128];
    snprintf(job_id, sizeof job_id, "%s", id);
    ASSERT_STR_CONTAINS(wait_terminal(g_port, job_id), "succeeded");
    pool_redis_stop(&g_rs);
    usleep(700 * 1000); /* past the gateway's registry cache (models_cache_s, 0.5 s) */
    snprintf(path, sizeof path, "/v1/jobs/%s", job_id);
    const char *paths[] = {path, "/v1/models", "/ready", "/v1/workers"};
    for (size_t i = 0; i < SDW_ARRAY_LEN(paths); i++) {
        sdw_http_resp r;
        double t0 = sdw_time_now();
        ASSERT_EQ_INT(sdw_http_request(g_port, "GET", paths[i], NULL, NULL, 0, &r), 0);
        double dt = sdw_time_now() - t0;
        char ra[32];
        if (r.status != 503) fprintf(stderr, "%s -> %d %s\n", paths[i], r.status, r.body);
        ASSERT_EQ_INT(r.status, 503);
        ASSERT_TRUE(sdw_http_header(&r, "Retry-After", ra, sizeof ra) != NULL);
        ASSERT_TRUE(dt < 10); /* the Redis client's deadlines, not a hang */
        sdw_http_resp_free(&r);
    }
    sdw_http_resp r;
    ASSERT_EQ_INT(sdw_http_post_json(g_port, "/v1/jobs", "{" REQ "}", &r), 0);
    ASSERT_EQ_INT(r.status, 503);
    ASSERT_TRUE(strstr(r.body, g_rs.password[0] ? g_rs.password : "\x01") == NULL);
    sdw_http_resp_free(&r);

    ASSERT_EQ_INT(pool_redis_restart(&g_rs), 0);
    /* the gateway reconnects by itself (its backoff is at most a few seconds) */
    const double t0 = sdw_time_now();
    int st = 0;
    while (sdw_time_now() - t0 < 60) {
        json_t *j = get_json(g_port, path, &st);
        json_decref(j);
        if (st == 200) break;
        pool_sleep(0.1);
    }
    ASSERT_EQ_INT(st, 200);
    ASSERT_STR_CONTAINS(wait_terminal(g_port, job_id), "succeeded");
    /* and the worker, back too, runs a new job (once its registry entry is back) */
    const char *id2 = NULL;
    for (double t1 = sdw_time_now(); !id2 && sdw_time_now() - t1 < 60; pool_sleep(0.1)) {
        ASSERT_EQ_INT(sdw_http_post_json(g_port, "/v1/jobs", "{" REQ_BASE ",\"seed\":45}", &r), 0);
        if (r.status == 202) {
            json_t *j = body_json(&r);
            snprintf(job_id, sizeof job_id, "%s", json_string_value(json_object_get(j, "job_id")));
            json_decref(j);
            id2 = job_id;
        }
        sdw_http_resp_free(&r);
    }
    ASSERT_TRUE(id2 != NULL);
    ASSERT_STR_CONTAINS(wait_terminal(g_port, id2), "succeeded");
}

/* -m with --redis is a usage error that says what a worker is. */
static void test_usage(void) {
    pool_proc p;
    ASSERT_EQ_INT(pool_spawn(&p, NULL, "serve -m '%s' --redis redis://:secret@127.0.0.1:1/0",
                             sdw_test_path("models/tiny-sd15")),
                  0);
    ASSERT_EQ_INT(pool_wait_exit(&p, 60), 2);
    char *log = pool_log(&p);
    ASSERT_STR_CONTAINS(log, "sdw worker");
    ASSERT_TRUE(strstr(log, "secret") == NULL);
    free(log);
    ASSERT_EQ_INT(pool_spawn(&p, NULL, "serve --redis 'redis://:secret@127.0.0.1:99999/0'"), 0);
    ASSERT_EQ_INT(pool_wait_exit(&p, 60), 2);
    log = pool_log(&p);
    ASSERT_STR_CONTAINS(log, "port");
    ASSERT_TRUE(strstr(log, "secret") == NULL);
    free(log);
}

/* The gateway's log never shows the Redis password (it came in the URL). */
static void test_password_not_logged(void) {
    ASSERT_TRUE(g_have_redis); /* a redis-server of its own (bootstrap.sh installs it) */
    char *log = pool_log(&g_gw);
    ASSERT_STR_CONTAINS(log, ":***@");
    ASSERT_TRUE(strstr(log, "gw-pass-9") == NULL);
    free(log);
}

/* The LoRA folder: the fixture's LoRA as styles/tiny.safetensors (named "tiny"). */
static bool make_lora_dir(void) {
    char sub[4200], file[4300];
    snprintf(g_lora_dir, sizeof g_lora_dir, "%s/gw-loras", sdw_test_tmpdir());
    snprintf(sub, sizeof sub, "%s/styles", g_lora_dir);
    snprintf(file, sizeof file, "%s/tiny.safetensors", sub);
    mkdir(g_lora_dir, 0755);
    mkdir(sub, 0755);
    size_t n = 0;
    void *d = sdw_test_read_file(sdw_test_path("models/tiny-sd15-lora-kohya.safetensors"), &n);
    FILE *f = d ? fopen(file, "wb") : NULL;
    bool ok = f && fwrite(d, 1, n, f) == n;
    if (f) ok = fclose(f) == 0 && ok;
    free(d);
    return ok;
}

int main(void) {
    if (!make_lora_dir()) {
        fprintf(stderr, "cannot write the LoRA folder\n");
        return 1;
    }
    g_have_redis = pool_redis_start(&g_rs, "gw-pass-9") == 0;
    if (g_have_redis && tworker_start(&g_w) != 0) g_have_redis = false;
    if (g_have_redis && (g_port = gateway_start(&g_gw)) < 0) g_have_redis = false;
    RUN(test_native_job_same_image);
    RUN(test_openai_and_a1111);
    RUN(test_features_same_image);
    RUN(test_lists);
    RUN(test_refusals_before_queueing);
    RUN(test_two_models);
    RUN(test_two_gateways_and_restart);
    RUN(test_redis_down_503_and_recovery);
    RUN(test_usage);
    RUN(test_password_not_logged);
    if (g_gw.pid > 0) pool_stop(&g_gw, SIGTERM);
    tworker_stop(&g_w);
    free(g_png);
    pool_redis_destroy(&g_rs);
    return sdw_test_finish();
}
