/* server/request.c — reading what clients send, shared by every dialect: typed JSON fields with
 * messages that name the field, the server's limits, images in base64 or raw bytes (their size
 * checked from their header before they are decoded). */
#include "server/server_impl.h"

#include "core/common.h"
#include "io/base64.h"
#include "io/image.h"
#include "io/json_config.h"

#include <errno.h>
#include <math.h>
#include <webp/decode.h>
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
    if (!number_of(v, lenient, &x))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "field '%s' must be a number, not %s", key,
                             sdw_json_type_name(v));
    if (!isfinite(x)) /* only a string gets here: "nan", "inf", "1e999" */
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "field '%s' must be a finite number in [%g, %g], not '%.40s'", key,
                             lo, hi, json_string_value(v));
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

sdw_status sdw__check_text(const sdw_server_params *p, const char *field, const char *text,
                           sdw_error *err) {
    size_t n = text ? strlen(text) : 0;
    if (n > p->max_prompt_bytes)
        return sdw_error_set_field(err, field, SDW_E_INVALID_ARG,
                                   "%s is %zu bytes long: this server takes at most %zu "
                                   "(--max-prompt-bytes); a text encoder reads only the first "
                                   "few hundred",
                                   field, n, p->max_prompt_bytes);
    return SDW_OK;
}

/* One side (what: "width" / "height", 0 = the model's default) against the sizes this server
 * and the model take together. */
static sdw_status check_side(const sdw_server_params *p, const sdw_capabilities *caps,
                             const char *what, int v, sdw_error *err) {
    const int lo = SDW_MAX(caps->min_size, 1), hi = SDW_MIN(caps->max_size, p->max_size);
    if (v == 0 || (v >= lo && v <= hi)) return SDW_OK;
    return sdw_error_set_field(err, what, SDW_E_INVALID_ARG,
                               "%s %d is out of range [%d, %d]%s", what, v, lo, hi,
                               v > p->max_size ? " (this server's limit, --max-size)" : "");
}

sdw_status sdw__check_limits(const sdw_server_params *p, const sdw_capabilities *caps,
                             const sdw_request *req, int n, sdw_error *err) {
    sdw_status s;
    if ((s = check_side(p, caps, "width", req->width, err)) ||
        (s = check_side(p, caps, "height", req->height, err)))
        return s;
    if (req->steps > p->max_steps)
        return sdw_error_set_field(err, "steps", SDW_E_INVALID_ARG,
                                   "steps %d exceeds this server's limit of %d", req->steps,
                                   p->max_steps);
    if (n < 1 || n > p->max_n)
        return sdw_error_set_field(err, "n", SDW_E_INVALID_ARG,
                                   "number of images %d is out of range [1, %d] (this server's "
                                   "limit)",
                                   n, p->max_n);
    if ((s = sdw__check_text(p, "prompt", req->prompt, err)) ||
        (s = sdw__check_text(p, "negative_prompt", req->negative_prompt, err)))
        return s;
    return SDW_OK;
}

sdw_status sdw__check_hires_limits(const sdw_server_params *p, const sdw_capabilities *caps,
                                   const sdw_request *req, sdw_error *err) {
    sdw_request r;
    if (!req->hires.enable || sdw_request_resolve(req, caps, &r, NULL) != SDW_OK) return SDW_OK;
    const int steps = r.hires.steps ? r.hires.steps : r.steps;
    if (r.hires.up_width > p->max_size || r.hires.up_height > p->max_size)
        return sdw_error_set_field(err, "hires", SDW_E_INVALID_ARG,
                                   "the hires fix enlarges %dx%d to %dx%d: over this server's "
                                   "limit of %d (--max-size)",
                                   r.width, r.height, r.hires.up_width, r.hires.up_height,
                                   p->max_size);
    if (steps > p->max_steps)
        return sdw_error_set_field(err, "hires", SDW_E_INVALID_ARG,
                                   "hires steps %d exceed this server's limit of %d", steps,
                                   p->max_steps);
    return SDW_OK;
}

static uint32_t be32(const uint8_t *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* A JPEG's frame size: the first SOFn segment's height and width, walking the segments from
 * SOI as a decoder does (every SOFn precedes the scan data). */
static bool jpeg_size(const uint8_t *d, size_t n, int *w, int *h) {
    size_t i = 2;
    while (i + 4 <= n) {
        if (d[i] != 0xFF) return false;
        const uint8_t m = d[i + 1];
        if (m == 0xFF) { /* fill byte */
            i++;
            continue;
        }
        if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) { /* no length */
            i += 2;
            continue;
        }
        if (m == 0xD9 || m == 0xDA) return false; /* end, or scan data before any frame */
        const size_t len = (size_t)d[i + 2] << 8 | d[i + 3];
        if (len < 2) return false;
        const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
        if (sof) {
            if (i + 9 > n || len < 7) return false;
            *h = d[i + 5] << 8 | d[i + 6];
            *w = d[i + 7] << 8 | d[i + 8];
            return true;
        }
        i += 2 + len;
    }
    return false;
}

bool sdw__image_header_size(const uint8_t *d, size_t n, int *w, int *h) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (n >= 24 && !memcmp(d, png_sig, 8) && !memcmp(d + 12, "IHDR", 4)) {
        const uint32_t pw = be32(d + 16), ph = be32(d + 20);
        if (pw > INT_MAX || ph > INT_MAX) return false;
        *w = (int)pw;
        *h = (int)ph;
        return true;
    }
    if (n >= 4 && d[0] == 0xFF && d[1] == 0xD8) return jpeg_size(d, n, w, h);
    if (n >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4)) {
        int ww = 0, hh = 0;
        if (!WebPGetInfo(d, n, &ww, &hh)) return false;
        *w = ww;
        *h = hh;
        return true;
    }
    return false;
}

/* The pixels an image may have here: its header's claim, checked before decoding, and again
 * after (a header the probe could not read is the decoder's to judge). */
static sdw_status check_pixels(const sdw_server_params *p, const char *field, long long w,
                               long long h, sdw_error *err) {
    if ((unsigned long long)w * (unsigned long long)h <= p->max_input_pixels) return SDW_OK;
    return sdw_error_set_field(err, field, SDW_E_INVALID_ARG,
                               "%s: the image is %lldx%lld (%.1f Mpixel); this server takes "
                               "input images of at most %.1f Mpixel (--max-input-mp)",
                               field, w, h, (double)w * (double)h / 1e6,
                               (double)p->max_input_pixels / 1e6);
}

sdw_status sdw__decode_image(const sdw_server_params *p, const char *data, size_t len, bool raw,
                             const char *field, sdw_image *out, sdw_error *err) {
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
    int w = 0, h = 0;
    if (sdw__image_header_size((const uint8_t *)data, n, &w, &h) &&
        (s = check_pixels(p, field, w, h, err))) {
        free(bytes);
        *out = (sdw_image){0};
        return s;
    }
    s = sdw_image_decode(data, n, field, out, err);
    free(bytes);
    if (s == SDW_OK && (s = check_pixels(p, field, out->width, out->height, err)))
        sdw_image_free(out);
    return s;
}

void sdw__req_images_free(sdw_req_images *im) {
    sdw_image_free(&im->init);
    sdw_image_free(&im->mask);
    for (int i = 0; i < SDW_MAX_CONTROLS; i++) sdw_image_free(&im->control_images[i]);
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

char *sdw__job_image_b64(sdw_sjob *j, int i) {
    size_t len;
    const uint8_t *png = sdw__sjob_image_png(j, i, &len);
    return png ? sdw_base64_encode(png, len, NULL) : NULL;
}
