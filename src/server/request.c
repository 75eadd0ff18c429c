/* server/request.c — reading what clients send, shared by every dialect: typed JSON fields with
 * messages that name the field, the server's limits, images in base64 or raw bytes. */
#include "server/server_impl.h"

#include "core/common.h"
#include "io/base64.h"
#include "io/image.h"
#include "io/json_config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

sdw_status sdw__json_string(json_t *o, const char *key, const char **out, sdw_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return SDW_OK;
    if (!json_is_string(v))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field '%s' must be a string, not %s", key,
                             sdw_json_type_name(v));
    *out = json_string_value(v);
    return SDW_OK;
}

/* A number from v: JSON numbers, and with lenient numeric strings. */
static bool number_of(json_t *v, bool lenient, double *x) {
    if (json_is_number(v)) {
        *x = json_number_value(v);
        return true;
    }
    if (lenient && json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        *x = strtod(s, &end);
        return *s && !*end && !errno;
    }
    return false;
}

sdw_status sdw__json_int(json_t *o, const char *key, long long lo, long long hi, bool lenient,
                         long long *out, sdw_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return SDW_OK;
    long long x;
    double d;
    if (json_is_integer(v)) x = json_integer_value(v);
    else if (lenient && number_of(v, true, &d) && d == floor(d) && fabs(d) < 9e18) x = (long long)d;
    else
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field '%s' must be an integer, not %s", key,
                             sdw_json_type_name(v));
    if (x < lo || x > hi)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field '%s': %lld is out of range [%lld, %lld]",
                             key, x, lo, hi);
    *out = x;
    return SDW_OK;
}

sdw_status sdw__json_number(json_t *o, const char *key, double lo, double hi, bool lenient,
                            double *out, sdw_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return SDW_OK;
    double x;
    if (!number_of(v, lenient, &x) || !isfinite(x))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field '%s' must be a number, not %s", key,
                             sdw_json_type_name(v));
    if (x < lo || x > hi)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field '%s': %g is out of range [%g, %g]", key,
                             x, lo, hi);
    *out = x;
    return SDW_OK;
}

sdw_status sdw__json_bool(json_t *o, const char *key, bool *out, sdw_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return SDW_OK;
    if (!json_is_boolean(v))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field '%s' must be true or false, not %s",
                             key, sdw_json_type_name(v));
    *out = json_is_true(v);
    return SDW_OK;
}

sdw_status sdw__check_limits(const sdw_server *s, const sdw_request *req, int n, sdw_error *err) {
    if (req->width > s->p.max_size || req->height > s->p.max_size)
        return sdw_error_set_field(err, req->width > s->p.max_size ? "width" : "height",
                                   SDW_E_INVALID_ARG,
                                   "size %dx%d exceeds this server's limit of %d pixels per side",
                                   req->width, req->height, s->p.max_size);
    if (req->width < 0 || req->height < 0)
        return sdw_error_set_field(err, req->width < 0 ? "width" : "height", SDW_E_INVALID_ARG,
                                   "size %dx%d must be positive", req->width, req->height);
    if (req->steps > s->p.max_steps)
        return sdw_error_set_field(err, "steps", SDW_E_INVALID_ARG,
                                   "steps %d exceeds this server's limit of %d", req->steps,
                                   s->p.max_steps);
    if (n < 1 || n > s->p.max_n)
        return sdw_error_set_field(err, "n", SDW_E_INVALID_ARG,
                                   "number of images %d is out of range [1, %d] (this server's "
                                   "limit)",
                                   n, s->p.max_n);
    return SDW_OK;
}

sdw_status sdw__decode_image(const char *data, size_t len, bool raw, const char *field,
                             sdw_image *out, sdw_error *err) {
    uint8_t *bytes = NULL;
    size_t n = len;
    sdw_status s;
    if (!raw) {
        /* Browsers and many clients send data URLs: "data:image/png;base64,...." */
        if (len > 5 && !strncasecmp(data, "data:", 5)) {
            const char *comma = memchr(data, ',', len);
            if (!comma)
                return sdw_error_set(err, SDW_E_FORMAT, "%s: a data URL without ','", field);
            len -= (size_t)(comma + 1 - data);
            data = comma + 1;
        }
        if ((s = sdw_base64_decode(data, len, &bytes, &n, err)) != SDW_OK) {
            sdw_error_prefix(err, "%s", field);
            return s;
        }
        data = (const char *)bytes;
    }
    if (n == 0) {
        free(bytes);
        return sdw_error_set(err, SDW_E_FORMAT, "%s: the image is empty", field);
    }
    s = sdw_image_decode(data, n, field, out, err);
    free(bytes);
    return s;
}

void sdw__mask_from_alpha(const sdw_image *in, sdw_image *out) {
    if (in->channels != 2 && in->channels != 4) {
        sdw_image_to_luma(in, out);
        return;
    }
    size_t n = (size_t)in->width * in->height;
    *out = (sdw_image){.width = in->width, .height = in->height, .channels = 1,
                       .data = sdw_xmalloc(n)};
    for (size_t i = 0; i < n; i++)
        out->data[i] = in->data[i * in->channels + in->channels - 1] == 0 ? 255 : 0;
}

sdw_status sdw__parse_size(const char *s, int *w, int *h, sdw_error *err) {
    if (!strcmp(s, "auto")) return SDW_OK;
    char *end;
    errno = 0;
    long a = strtol(s, &end, 10);
    if (end == s || (*end != 'x' && *end != 'X') || errno) goto bad;
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (end == p || *end || errno) goto bad;
    if (a < 1 || b < 1 || a > 1000000 || b > 1000000)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "size '%s': sides must be in [1, 1000000]", s);
    *w = (int)a;
    *h = (int)b;
    return SDW_OK;
bad:
    return sdw_error_set(err, SDW_E_INVALID_ARG, "size '%s' must be WIDTHxHEIGHT (e.g. 512x512)",
                         s);
}

char *sdw__job_image_b64(sdw_job *j, int i) {
    size_t len;
    const uint8_t *png = sdw_job_image_png(j, i, &len);
    return png ? sdw_base64_encode(png, len, NULL) : NULL;
}
