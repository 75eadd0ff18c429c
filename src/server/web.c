/* server/web.c — the web page at "/": one self-contained HTML file (src/server/web/index.html,
 * turned into a C array by CMake at build time, no other build step), talking to the native API;
 * and its icon (an inline SVG, also at /favicon.ico, which browsers fetch on their own: both are
 * served without the API key). */
#include "server/server_impl.h"

#include "web_index_html.h" /* generated: sdw_web_index_html[], sdw_web_index_html_len */

#include <string.h>

static enum MHD_Result get_index(sdw_http_req *r) {
    const char *h[] = {"Content-Security-Policy",
                       "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; "
                       "script-src 'unsafe-inline'; connect-src 'self'",
                       "X-Content-Type-Options", "nosniff", NULL};
    return sdw__http_send(r, 200, "text/html; charset=utf-8", sdw_web_index_html,
                          sdw_web_index_html_len, h);
}

/* A rounded square with a four-point spark: readable at 16 px. */
static const char k_icon[] =
    "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 64 64\">"
    "<rect width=\"64\" height=\"64\" rx=\"14\" fill=\"#4f8cff\"/>"
    "<path d=\"M32 9 L37 27 L55 32 L37 37 L32 55 L27 37 L9 32 L27 27 Z\" fill=\"#fff\"/>"
    "</svg>";

static enum MHD_Result get_icon(sdw_http_req *r) {
    const char *h[] = {"X-Content-Type-Options", "nosniff", NULL};
    return sdw__http_send(r, 200, "image/svg+xml", k_icon, sizeof k_icon - 1, h);
}

const sdw_route sdw__web_routes[] = {
    {"GET", "/", get_index},
    {"GET", "/index.html", get_index},
    {"GET", "/favicon.svg", get_icon},
    {"GET", "/favicon.ico", get_icon},
    {NULL, NULL, NULL},
};
