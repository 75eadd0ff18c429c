/* Security and limits of `sdw serve`: the API key on everything but /health (Bearer for APIs,
 * Basic for the web page), each dialect's 401 shape, a full queue answering 429 + Retry-After,
 * and readiness: 503 while no model is loaded (the server library in-process), 200 after. */
#include "sdw_http.h"
#include "sdw_test.h"

#include "engine/engine.h"
#include "io/base64.h"
#include "server/server.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static sdw_test_server g_srv;
static const char *const AUTH = "Authorization: Bearer s3cret-key\r\n";

static int request(const char *method, const char *path, const char *headers, const char *body,
                   sdw_http_resp *r) {
    return sdw_http_request(g_srv.port, method, path, headers, body, body ? strlen(body) : 0, r);
}

static void test_health_needs_no_key(void) {
    sdw_http_resp r;
    ASSERT_EQ_INT(request("GET", "/health", NULL, NULL, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    sdw_http_resp_free(&r);
}

static void test_native_needs_key(void) {
    sdw_http_resp r;
    char h[128];
    ASSERT_EQ_INT(request("GET", "/v1/capabilities", NULL, NULL, &r), 0);
    ASSERT_EQ_INT(r.status, 401);
    ASSERT_STR_CONTAINS(r.body, "needs an API key");
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "WWW-Authenticate", h, sizeof h), "Bearer");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(request("GET", "/ready", "Authorization: Bearer wrong\r\n", NULL, &r), 0);
    ASSERT_EQ_INT(r.status, 401);
    ASSERT_STR_CONTAINS(r.body, "invalid API key");
    sdw_http_resp_free(&r);
    /* Refused before the body is read: a job is not queued. */
    ASSERT_EQ_INT(request("POST", "/v1/jobs", "Content-Type: application/json\r\n",
                          "{\"prompt\":\"x\"}", &r), 0);
    ASSERT_EQ_INT(r.status, 401);
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(request("GET", "/v1/capabilities", AUTH, NULL, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(request("GET", "/v1/stats", AUTH, NULL, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    ASSERT_STR_CONTAINS(r.body, "\"submitted\":0");
    sdw_http_resp_free(&r);
}

static void test_dialect_shapes_of_401(void) {
    sdw_http_resp r;
    ASSERT_EQ_INT(request("GET", "/v1/models", NULL, NULL, &r), 0);
    ASSERT_EQ_INT(r.status, 401);
    json_t *j = json_loads(r.body, 0, NULL);
    sdw_http_resp_free(&r);
    json_t *e = json_object_get(j, "error");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(e, "type")), "authentication_error");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(e, "code")), "invalid_api_key");
    json_decref(j);
    ASSERT_EQ_INT(request("GET", "/sdapi/v1/samplers", NULL, NULL, &r), 0);
    ASSERT_EQ_INT(r.status, 401);
    j = json_loads(r.body, 0, NULL);
    sdw_http_resp_free(&r);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(j, "detail")), "API key");
    json_decref(j);
}

/* The page: a browser gets a Basic challenge; "any-user:KEY" opens it. */
static void test_web_page_basic_auth(void) {
    sdw_http_resp r;
    char h[128];
    ASSERT_EQ_INT(request("GET", "/", NULL, NULL, &r), 0);
    ASSERT_EQ_INT(r.status, 401);
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "WWW-Authenticate", h, sizeof h), "Basic");
    sdw_http_resp_free(&r);
    char *b64 = sdw_base64_encode("me:s3cret-key", 13, NULL);
    char hdr[256];
    snprintf(hdr, sizeof hdr, "Authorization: Basic %s\r\n", b64);
    free(b64);
    ASSERT_EQ_INT(request("GET", "/", hdr, NULL, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    ASSERT_STR_CONTAINS(sdw_http_header(&r, "Content-Type", h, sizeof h), "text/html");
    ASSERT_STR_CONTAINS(r.body, "<title>sdworker</title>");
    ASSERT_STR_CONTAINS(r.body, "id=\"generate\"");
    ASSERT_STR_CONTAINS(r.body, "id=\"cancel\"");
    sdw_http_resp_free(&r);
    /* The same credentials work for the API (the page's fetch and EventSource send them). */
    ASSERT_EQ_INT(request("GET", "/v1/capabilities", hdr, NULL, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    sdw_http_resp_free(&r);
}

static void test_full_queue_is_429_with_retry_after(void) {
    const char *slow = "{\"prompt\":\"slow\",\"width\":64,\"height\":64,\"steps\":150}";
    char hdr[256];
    snprintf(hdr, sizeof hdr, "%sContent-Type: application/json\r\n", AUTH);
    char ids[2][64];
    sdw_http_resp r;
    for (int i = 0; i < 2; i++) {
        ASSERT_EQ_INT(request("POST", "/v1/jobs", hdr, slow, &r), 0);
        ASSERT_EQ_INT(r.status, 202);
        json_t *j = json_loads(r.body, 0, NULL);
        snprintf(ids[i], sizeof ids[i], "%s", json_string_value(json_object_get(j, "job_id")));
        json_decref(j);
        sdw_http_resp_free(&r);
        if (i == 0) { /* let the worker take the first, so the one queue slot is free */
            char path[128];
            snprintf(path, sizeof path, "/v1/jobs/%s/stream", ids[0]);
            sdw_sse *s = sdw_sse_open(g_srv.port, path, AUTH, NULL);
            char ev[32], *data = NULL;
            while (s && sdw_sse_next(s, ev, sizeof ev, &data, 30) == 0) {
                bool running = strstr(data, "\"running\"") != NULL;
                free(data);
                if (running) break;
            }
            sdw_sse_close(s);
        }
    }
    ASSERT_EQ_INT(request("POST", "/v1/jobs", hdr, slow, &r), 0);
    ASSERT_EQ_INT(r.status, 429);
    char ra[32];
    ASSERT_TRUE(sdw_http_header(&r, "Retry-After", ra, sizeof ra) != NULL);
    ASSERT_TRUE(atoi(ra) >= 1);
    ASSERT_STR_CONTAINS(r.body, "the queue is full");
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(request("POST", "/v1/images/generations", hdr, "{\"prompt\":\"x\"}", &r), 0);
    ASSERT_EQ_INT(r.status, 429);
    ASSERT_STR_CONTAINS(r.body, "rate_limit_error");
    ASSERT_TRUE(sdw_http_header(&r, "Retry-After", ra, sizeof ra) != NULL);
    sdw_http_resp_free(&r);
    for (int i = 1; i >= 0; i--) {
        char path[128];
        snprintf(path, sizeof path, "/v1/jobs/%s/cancel", ids[i]);
        ASSERT_EQ_INT(request("POST", path, AUTH, NULL, &r), 0);
        ASSERT_EQ_INT(r.status, 200);
        sdw_http_resp_free(&r);
    }
}

/* The library without a model: /ready 503 (and the APIs), then 200 once the engine is set. */
static void test_ready_only_with_a_model(void) {
    sdw_server_params p = sdw_server_params_default();
    p.port = 0;
    sdw_server *s;
    sdw_error err = {0};
    ASSERT_OK(sdw_server_start(&p, &s, &err), &err);
    int port = sdw_server_port(s);
    ASSERT_TRUE(port > 0);
    sdw_http_resp r;
    char ra[16];
    ASSERT_EQ_INT(sdw_http_request(port, "GET", "/ready", NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 503);
    ASSERT_STR_CONTAINS(r.body, "loading");
    ASSERT_TRUE(sdw_http_header(&r, "Retry-After", ra, sizeof ra) != NULL);
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_request(port, "GET", "/health", NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    sdw_http_resp_free(&r);
    ASSERT_EQ_INT(sdw_http_post_json(port, "/v1/jobs", "{\"prompt\":\"x\"}", &r), 0);
    ASSERT_EQ_INT(r.status, 503);
    ASSERT_STR_CONTAINS(r.body, "still loading");
    sdw_http_resp_free(&r);

    sdw_image_model *m;
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), NULL, &m, &err), &err);
    sdw_engine *e;
    ASSERT_OK(sdw_engine_create(m, NULL, &e, &err), &err);
    sdw_server_set_engine(s, e);
    ASSERT_EQ_INT(sdw_http_request(port, "GET", "/ready", NULL, NULL, 0, &r), 0);
    ASSERT_EQ_INT(r.status, 200);
    sdw_http_resp_free(&r);
    sdw_engine_shutdown(e);
    sdw_server_stop(s);
    sdw_engine_destroy(e);
    sdw_model_destroy(m);

    /* A port in use is a clear error. */
    sdw_server *a, *b;
    ASSERT_OK(sdw_server_start(&p, &a, &err), &err);
    p.port = sdw_server_port(a);
    ASSERT_STATUS(sdw_server_start(&p, &b, &err), SDW_E_IO);
    ASSERT_STR_CONTAINS(err.msg, "cannot listen on 127.0.0.1 port");
    sdw_server_stop(a);
}

int main(void) {
    if (sdw_test_server_start(&g_srv, "s3cret-key", "-m '%s' -q -t 1 --api-key s3cret-key --queue 1",
                              sdw_test_path("models/tiny-sd15")) != 0)
        return 1;
    RUN(test_health_needs_no_key);
    RUN(test_native_needs_key);
    RUN(test_dialect_shapes_of_401);
    RUN(test_web_page_basic_auth);
    RUN(test_full_queue_is_429_with_retry_after);
    int rc = sdw_test_server_stop(&g_srv);
    RUN(test_ready_only_with_a_model);
    int t = sdw_test_finish();
    return rc != 0 ? 1 : t;
}
