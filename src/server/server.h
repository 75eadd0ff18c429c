/* server/server.h — the HTTP front door: the native job API with Server-Sent Events, the OpenAI
 * Images API, the AUTOMATIC1111 API and the web page, on libmicrohttpd.
 *
 *   sdw_server_params p = sdw_server_params_default();
 *   p.port = 7860;
 *   sdw_server *s;
 *   if (sdw_server_start(&p, &s, &err) != SDW_OK) ...        // listening; /ready says 503
 *   ... load the model, create the engine ...
 *   sdw_server_set_engine(s, engine);                           // /ready says 200
 *   ... wait for a signal ...
 *   sdw_engine_shutdown(engine);
 *   if (!sdw_engine_wait_stopped(engine, grace)) sdw_engine_abandon(engine, "...");
 *   sdw_server_stop(s); ... sdw_engine_destroy(engine) unless abandoned ...
 *
 * The server listens before the model is loaded so that /health and /ready answer during a long
 * load. Its dialects talk to one job service (server/jobs.h): the engine (engine/engine.h) with
 * its model, or a worker pool's gateway (pool/gateway.h, sdw_server_set_gateway); it never names
 * a model family. Thread safety: one thread per connection inside; set_engine may be called from
 * any thread; stop must not race with start/set_engine/set_gateway.
 */
#ifndef SDW_SERVER_SERVER_H
#define SDW_SERVER_SERVER_H

#include "engine/engine.h"

#include <stdio.h>

typedef struct sdw_server_params {
    const char *host;      /* address to bind; NULL = "127.0.0.1" (loopback only) */
    int port;              /* 0 = any free port (see sdw_server_port) */
    const char *api_key;   /* NULL or "" = no auth; else Bearer token required (not for /health) */
    size_t max_body_bytes; /* request bodies; 0 = 64 MB */
    int max_size;          /* pixels per side accepted from clients; 0 = 2048 */
    int max_steps;         /* 0 = 150 */
    int max_n;             /* images per request; 0 = 4 */
    int max_connections;   /* concurrent connections (each a thread); 0 = 512 */
    size_t max_prompt_bytes; /* prompt and negative prompt, each; 0 = 65536 (a real prompt is
                              * a few hundred bytes; every byte is kept and tokenized) */
    size_t max_input_pixels; /* an input image's width x height, checked from its header before
                              * it is decoded; 0 = 4096 x 4096 */
    /* Origins whose browser pages may call the API (CORS): exact "scheme://host[:port]"
     * strings, or "*" (any origin; refused together with an API key). Copied. */
    const char *const *cors_origins;
    int n_cors_origins;
    FILE *access_log; /* NULL, or one JSON object per request, a line each (borrowed: open until
                       * sdw_server_stop returns) */
} sdw_server_params;

sdw_server_params sdw_server_params_default(void);

typedef struct sdw_server sdw_server;
typedef struct sdw_pool_gateway sdw_pool_gateway;

/* Binds and starts serving (params copied; api_key and cors_origins copied). *out is new:
 * sdw_server_stop. Fails with SDW_E_IO if the address cannot be bound (the message names it),
 * SDW_E_INVALID_ARG for a bad parameter (a CORS origin "*" with an API key, ...). */
sdw_status sdw_server_start(const sdw_server_params *params, sdw_server **out, sdw_error *err);

/* The bound port (the real one when params.port was 0). */
int sdw_server_port(const sdw_server *s);

/* Makes the server ready: generation routes use e from now on (borrowed: it must outlive the
 * server, or at least sdw_server_stop). */
void sdw_server_set_engine(sdw_server *s, sdw_engine *e);
/* Makes the server a stateless gateway of a worker pool (pool/gateway.h): every job goes to
 * the pool's workers through Redis instead of a local engine (g borrowed: it must outlive the
 * server; call sdw_pool_gateway_shutdown before sdw_server_stop so that waiting requests
 * return). Call once, right after start and before any set_engine. */
void sdw_server_set_gateway(sdw_server *s, sdw_pool_gateway *g);
/* How long the model took to load, for /metrics (set before or with set_engine). */
void sdw_server_set_load_seconds(sdw_server *s, double seconds);

/* Stops accepting connections, lets the requests in progress finish for up to a few seconds
 * (their jobs have ended once the engine shut down: waiting callers get their answer, event
 * streams their final event), then closes every connection, waits for the connection threads
 * and frees s. Call sdw_engine_shutdown first (and wait_stopped / abandon) so that requests
 * waiting on jobs return. NULL ok. */
void sdw_server_stop(sdw_server *s);

#endif
