/* server/web.c — the web page at "/": one self-contained HTML file (src/server/web/index.html,
 * turned into a C array by CMake at build time, no other build step), talking to the native API. */
#include "server/server_impl.h"

#include "web_index_html.h" /* generated: sdw_web_index_html[], sdw_web_index_html_len */

static enum MHD_Result get_index(sdw_http_req *r) {
    const char *h[] = {"Content-Security-Policy",
                       "default-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; "
                       "script-src 'unsafe-inline'; connect-src 'self'",
                       "X-Content-Type-Options", "nosniff", NULL};
    return sdw__http_send(r, 200, "text/html; charset=utf-8", sdw_web_index_html,
                          sdw_web_index_html_len, h);
}

const sdw_route sdw__web_routes[] = {
    {"GET", "/", get_index},
    {"GET", "/index.html", get_index},
    {NULL, NULL, NULL},
};
