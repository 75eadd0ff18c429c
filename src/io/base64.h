/* io/base64.h — standard base64 (RFC 4648 §4), the way images travel inside JSON bodies.
 *
 *   char *b64 = sdw_base64_encode(png, png_len, NULL);   // new, NUL-terminated
 *   uint8_t *raw; size_t n;
 *   if (sdw_base64_decode(text, strlen(text), &raw, &n, &err) != SDW_OK) ...   // free(raw)
 *
 * Decoding is what clients send, so it is lenient where clients differ and strict elsewhere:
 * ASCII whitespace (line breaks every 76 characters) is skipped, missing '=' padding is accepted,
 * and the URL-safe alphabet ('-', '_') is accepted too; any other character, or a length that
 * cannot be base64, is an error naming the offset. Thread safety: reentrant.
 */
#ifndef SDW_IO_BASE64_H
#define SDW_IO_BASE64_H

#include "core/common.h"

/* Returns a new NUL-terminated string (free with free()); *out_len (may be NULL) gets its length.
 * Aborts only if the size overflows (callers encode buffers they hold in memory). */
char *sdw_base64_encode(const void *data, size_t len, size_t *out_len);

/* Decodes text[0..len) into a new buffer *out (free with free(); one spare NUL byte after the
 * data) of *out_len bytes. On failure *out and *out_len are untouched and err says where. */
sdw_status sdw_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len,
                             sdw_error *err);

#endif
