/* io/base64.c — see base64.h. */
#include "io/base64.h"

#include <string.h>

static const char g_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *sdw_base64_encode(const void *data, size_t len, size_t *out_len) {
    const uint8_t *p = data;
    size_t n = (len / 3 + (len % 3 != 0)) * 4;
    SDW_ASSERT(n / 4 >= len / 3); /* overflow: a buffer larger than memory */
    char *s = sdw_xmalloc(n + 1), *o = s;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = g_alphabet[v >> 18];
        *o++ = g_alphabet[v >> 12 & 63];
        *o++ = g_alphabet[v >> 6 & 63];
        *o++ = g_alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = g_alphabet[v >> 18];
        *o++ = g_alphabet[v >> 12 & 63];
        *o++ = i + 1 < len ? g_alphabet[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    *o = 0;
    if (out_len) *out_len = n;
    return s;
}

/* 0-63 for an alphabet character (either alphabet), -1 otherwise. */
static int digit(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

sdw_status sdw_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len,
                             sdw_error *err) {
    SDW_ASSERT(text || len == 0);
    uint8_t *buf = malloc(len / 4 * 3 + 4);
    if (!buf) return sdw_error_set(err, SDW_E_NOMEM, "base64: out of memory for %zu bytes", len);
    size_t n = 0, n_digits = 0, n_pad = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') {
            n_pad++;
            continue;
        }
        int d = digit(c);
        if (d < 0 || n_pad) {
            free(buf);
            if (d < 0)
                return sdw_error_set(err, SDW_E_FORMAT,
                                     "not valid base64: unexpected character 0x%02x at offset %zu",
                                     c, i);
            return sdw_error_set(err, SDW_E_FORMAT,
                                 "not valid base64: data after '=' padding at offset %zu", i);
        }
        acc = acc << 6 | (uint32_t)d;
        if (++n_digits % 4 == 0) {
            buf[n++] = (uint8_t)(acc >> 16);
            buf[n++] = (uint8_t)(acc >> 8);
            buf[n++] = (uint8_t)acc;
            acc = 0;
        }
    }
    size_t rem = n_digits % 4;
    if (rem == 1 || n_pad > 2 || (n_pad && (rem + n_pad) % 4 != 0)) {
        free(buf);
        return sdw_error_set(err, SDW_E_FORMAT,
                             "not valid base64: %zu data characters is not a possible length",
                             n_digits);
    }
    if (rem == 2) buf[n++] = (uint8_t)(acc >> 4);
    if (rem == 3) {
        buf[n++] = (uint8_t)(acc >> 10);
        buf[n++] = (uint8_t)(acc >> 2);
    }
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    return SDW_OK;
}
