/* sdw_http.h — what the server tests need to talk to `sdw serve`: start/stop it on a free
 * loopback port, plain blocking HTTP/1.1 requests, and a Server-Sent Events reader.
 *
 *   sdw_test_server s;
 *   if (sdw_test_server_start(&s, "-m '%s' --queue 4", model) != 0) FAIL;
 *   sdw_http_resp r;
 *   sdw_http_request(s.port, "GET", "/health", NULL, NULL, 0, &r);  // r.status == 200
 *   sdw_http_resp_free(&r); sdw_test_server_stop(&s);
 *
 * Each request opens its own connection (Connection: close), so requests from several threads
 * are independent.
 */
#ifndef SDW_TEST_HTTP_H
#define SDW_TEST_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct sdw_http_resp {
    int status;
    char *headers; /* raw header block, NUL-terminated */
    char *body;    /* de-chunked, NUL-terminated */
    size_t body_len;
} sdw_http_resp;

/* extra_headers: NULL or "Name: value\r\n" lines. Returns 0 on success (any HTTP status), -1 if
 * the connection failed; r is always initialised (free with sdw_http_resp_free). */
int sdw_http_request(int port, const char *method, const char *path, const char *extra_headers,
                     const void *body, size_t body_len, sdw_http_resp *r);
/* JSON POST shorthand (Content-Type: application/json). */
int sdw_http_post_json(int port, const char *path, const char *json, sdw_http_resp *r);
void sdw_http_resp_free(sdw_http_resp *r);
/* Value of a response header (case-insensitive name) copied into buf, or NULL. */
const char *sdw_http_header(const sdw_http_resp *r, const char *name, char *buf, size_t cap);

typedef struct sdw_test_server {
    pid_t pid;
    int port;
    int out_fd; /* the server's stdout */
} sdw_test_server;

/* Starts `sdw serve --port 0 ARGS` (args: a printf format, shell-quoted by the caller), waits for
 * its port and for /ready (Bearer $key if key_for_ready is set). Returns 0 or -1. */
int sdw_test_server_start(sdw_test_server *s, const char *key_for_ready, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* SIGTERM, then waits; returns the exit status (or -1 if it had to be killed / crashed). */
int sdw_test_server_stop(sdw_test_server *s);
/* Resident memory of the server in kB (/proc), or -1. */
long sdw_test_server_rss_kb(const sdw_test_server *s);

/* ---- Server-Sent Events ---- */
typedef struct sdw_sse sdw_sse;
/* Opens GET path as an event stream; NULL if the connection failed or the status was not 200
 * (then *status, if given, gets the status). */
sdw_sse *sdw_sse_open(int port, const char *path, const char *extra_headers, int *status);
/* Next event: its name into event, its data into a new *data (free). Returns 0, or -1 on end of
 * stream / timeout. Comment lines (keepalives) are skipped. */
int sdw_sse_next(sdw_sse *s, char *event, size_t cap, char **data, double timeout_s);
/* Closes the connection (a client going away mid-stream). NULL ok. */
void sdw_sse_close(sdw_sse *s);

#endif
