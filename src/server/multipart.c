/* server/multipart.c — see multipart.h. Works on the whole body in memory (the server bounds its
 * size before it gets here). */
#define _GNU_SOURCE
#include "server/multipart.h"

#include <string.h>
#include <strings.h>

/* Copies the value of parameter `key` (key="value" or key=token) from a header line. */
static char *header_param(const char *line, size_t n, const char *key) {
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl + 1 < n; i++) {
        if (strncasecmp(line + i, key, kl) || line[i + kl] != '=') continue;
        if (i > 0 && line[i - 1] != ' ' && line[i - 1] != ';' && line[i - 1] != '\t') continue;
        const char *v = line + i + kl + 1, *end = line + n;
        if (v < end && *v == '"') {
            const char *q = memchr(v + 1, '"', (size_t)(end - v - 1));
            if (!q) return NULL;
            return strndup(v + 1, (size_t)(q - v - 1));
        }
        size_t m = 0;
        while (v + m < end && v[m] != ';' && v[m] != ' ' && v[m] != '\r') m++;
        return strndup(v, m);
    }
    return NULL;
}

static sdw_status parse_headers(const char *h, size_t n, sdw_multipart_part *p, int idx,
                                sdw_error *err) {
    while (n > 0) {
        const char *eol = memmem(h, n, "\r\n", 2);
        size_t ln = eol ? (size_t)(eol - h) : n;
        if (ln > 20 && !strncasecmp(h, "Content-Disposition:", 20)) {
            free(p->name);
            free(p->filename);
            p->name = header_param(h, ln, "name");
            p->filename = header_param(h, ln, "filename");
        } else if (ln > 13 && !strncasecmp(h, "Content-Type:", 13)) {
            const char *v = h + 13;
            while (v < h + ln && *v == ' ') v++;
            free(p->content_type);
            p->content_type = strndup(v, (size_t)(h + ln - v));
        }
        if (!eol) break;
        n -= ln + 2;
        h = eol + 2;
    }
    if (!p->name)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "multipart part %d has no Content-Disposition name", idx);
    return SDW_OK;
}

sdw_status sdw_multipart_parse(const char *content_type, const void *body, size_t len,
                               sdw_multipart *out, sdw_error *err) {
    memset(out, 0, sizeof *out);
    if (!content_type || strncasecmp(content_type, "multipart/form-data", 19))
        return sdw_error_set(err, SDW_E_FORMAT, "the body must be multipart/form-data, not %s",
                             content_type ? content_type : "(no Content-Type)");
    char *b = header_param(content_type, strlen(content_type), "boundary");
    if (!b || !*b || strlen(b) > 70) {
        free(b);
        return sdw_error_set(err, SDW_E_FORMAT, "multipart/form-data without a valid boundary");
    }
    char delim[80];
    size_t dl = (size_t)snprintf(delim, sizeof delim, "\r\n--%s", b);
    free(b);
    const char *s = body, *end = s + len;
    /* The first delimiter may start the body without the leading CRLF. */
    const char *cur;
    if (len >= dl - 2 && !memcmp(s, delim + 2, dl - 2)) cur = s + dl - 2;
    else if ((cur = memmem(s, len, delim, dl))) cur += dl;
    else return sdw_error_set(err, SDW_E_FORMAT, "multipart body without its boundary");
    sdw_multipart_part *parts = sdw_xcalloc(SDW_MULTIPART_MAX_PARTS, sizeof *parts);
    int n = 0;
    sdw_status st = SDW_OK;
    for (;;) {
        if (end - cur >= 2 && !memcmp(cur, "--", 2)) break; /* closing delimiter */
        if (end - cur < 2 || memcmp(cur, "\r\n", 2)) {
            st = sdw_error_set(err, SDW_E_FORMAT, "multipart: malformed delimiter line");
            break;
        }
        cur += 2;
        const char *hend = memmem(cur, (size_t)(end - cur), "\r\n\r\n", 4);
        if (!hend) {
            st = sdw_error_set(err, SDW_E_FORMAT, "multipart: part %d has no end of headers", n);
            break;
        }
        if (n == SDW_MULTIPART_MAX_PARTS) {
            st = sdw_error_set(err, SDW_E_FORMAT, "multipart: more than %d parts",
                               SDW_MULTIPART_MAX_PARTS);
            break;
        }
        sdw_multipart_part *p = &parts[n++];
        if ((st = parse_headers(cur, (size_t)(hend - cur), p, n - 1, err))) break;
        const char *data = hend + 4;
        const char *next = memmem(data, (size_t)(end - data), delim, dl);
        if (!next) {
            st = sdw_error_set(err, SDW_E_FORMAT, "multipart: part '%s' is not terminated",
                               p->name);
            break;
        }
        p->data = (const uint8_t *)data;
        p->len = (size_t)(next - data);
        cur = next + dl;
    }
    out->parts = parts;
    out->n = n;
    if (st != SDW_OK) sdw_multipart_deinit(out);
    return st;
}

void sdw_multipart_deinit(sdw_multipart *mp) {
    if (!mp) return;
    for (int i = 0; i < mp->n; i++) {
        free(mp->parts[i].name);
        free(mp->parts[i].filename);
        free(mp->parts[i].content_type);
    }
    free(mp->parts);
    memset(mp, 0, sizeof *mp);
}

const sdw_multipart_part *sdw_multipart_get(const sdw_multipart *mp, const char *name) {
    for (int i = 0; i < mp->n; i++)
        if (!strcmp(mp->parts[i].name, name)) return &mp->parts[i];
    return NULL;
}
