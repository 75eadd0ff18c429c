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
 *   sdw_engine_shutdown(engine); sdw_server_stop(s); sdw_engine_destroy(engine);
 *
 * The server listens before the model is loaded so that /health and /ready answer during a long
 * load. It only talks to the engine (engine/engine.h) and the model interface; it never names a
 * model family. Thread safety: one thread per connection inside; set_engine may be called from
 * any thread; stop must not race with start/set_engine.
 */
#ifndef SDW_SERVER_SERVER_H
#define SDW_SERVER_SERVER_H

#include "engine/engine.h"

typedef struct sdw_server_params {
    const char *host;      /* address to bind; NULL = "127.0.0.1" (loopback only) */
    int port;              /* 0 = any free port (see sdw_server_port) */
    const char *api_key;   /* NULL or "" = no auth; else Bearer token required (not for /health) */
    size_t max_body_bytes; /* request bodies; 0 = 64 MB */
    int max_size;          /* pixels per side accepted from clients; 0 = 2048 */
    int max_steps;         /* 0 = 150 */
    int max_n;             /* images per request; 0 = 4 */
    int max_connections;   /* concurrent connections (each a thread); 0 = 512 */
} sdw_server_params;

sdw_server_params sdw_server_params_default(void);

typedef struct sdw_server sdw_server;

/* Binds and starts serving (params copied; api_key copied). *out is new: sdw_server_stop.
 * Fails with SDW_E_IO if the address cannot be bound (the message names it). */
sdw_status sdw_server_start(const sdw_server_params *params, sdw_server **out, sdw_error *err);

/* The bound port (the real one when params.port was 0). */
int sdw_server_port(const sdw_server *s);

/* Makes the server ready: generation routes use e from now on (borrowed: it must outlive the
 * server, or at least sdw_server_stop). */
void sdw_server_set_engine(sdw_server *s, sdw_engine *e);

/* Stops listening, ends open streams, waits for every connection thread, frees s. Call
 * sdw_engine_shutdown first so that requests waiting on jobs return. NULL ok. */
void sdw_server_stop(sdw_server *s);

#endif
