/* io/png.c — PNG encode/decode on libpng's low-level API (the simplified API cannot write or
 * read text chunks).
 *
 * libpng reports errors by longjmp. Each libpng session therefore runs in its own small function
 * holding the setjmp, and everything that must survive a longjmp (buffers to free, the message)
 * lives in a context struct owned by the caller of that function, never in locals changed after
 * setjmp (whose values a longjmp leaves indeterminate). */
#define _GNU_SOURCE
#include "io/png.h"

#include <errno.h>
#include <png.h> /* libpng's: angle brackets, so not this folder's io/png.h */
#include <setjmp.h>
#include <string.h>
#include <unistd.h>

static void on_error(png_structp png, png_const_charp msg);
static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

/* ---- encoding ---- */

typedef struct png_wctx {
    uint8_t *buf;
    size_t len, cap;
    char msg[256];
} png_wctx;

static void on_error(png_structp png, png_const_charp msg) {
    char *dst = png_get_error_ptr(png); /* the context's msg[256] */
    snprintf(dst, 256, "%s", msg);
    png_longjmp(png, 1);
}

static void write_cb(png_structp png, png_bytep data, size_t n) {
    png_wctx *c = png_get_io_ptr(png);
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 65536;
        while (cap < c->len + n) cap *= 2;
        uint8_t *nb = realloc(c->buf, cap);
        if (!nb) png_error(png, "out of memory");
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, data, n);
    c->len += n;
}

static void flush_cb(png_structp png) { (void)png; }

static bool encode(png_wctx *c, const uint8_t *pixels, int w, int h, int channels,
                   png_text *texts, int n_text) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c->msg, on_error, on_warning);
    if (!png) {
        snprintf(c->msg, sizeof c->msg, "out of memory");
        return false;
    }
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(png_jmpbuf(png))) {
        if (!info) snprintf(c->msg, sizeof c->msg, "out of memory");
        png_destroy_write_struct(&png, &info);
        return false;
    }
    png_set_write_fn(png, c, write_cb, flush_cb);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 channels == 4 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (n_text) png_set_text(png, info, texts, n_text);
    png_write_info(png, info);
    size_t stride = (size_t)w * (size_t)channels;
    for (int y = 0; y < h; y++) png_write_row(png, pixels + (size_t)y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return true;
}

static bool is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return false;
    return true;
}

/* PNG keywords: 1-79 Latin-1 printable characters; we accept the ASCII subset. */
static bool valid_key(const char *k) {
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ') return false;
    for (size_t i = 0; i < n; i++)
        if (k[i] < 32 || k[i] > 126) return false;
    return true;
}

sdw_status sdw_png_write_mem(const uint8_t *pixels, int w, int h, int channels,
                             const char *const *text_kv, uint8_t **out, size_t *out_len,
                             sdw_error *err) {
    SDW_ASSERT(pixels && out && out_len);
    size_t npix;
    if (w <= 0 || h <= 0 || w > INT32_MAX / 4 || (channels != 3 && channels != 4) ||
        !sdw_size_mul((size_t)w * (size_t)channels, (size_t)h, &npix))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "png: cannot encode %dx%d with %d channels",
                             w, h, channels);
    int n_text = 0;
    while (text_kv && text_kv[2 * n_text]) {
        SDW_ASSERT(text_kv[2 * n_text + 1]); /* a key without a value: caller bug */
        n_text++;
    }
    png_text *texts = sdw_xcalloc((size_t)n_text + 1, sizeof *texts);
    for (int i = 0; i < n_text; i++) {
        const char *k = text_kv[2 * i], *v = text_kv[2 * i + 1];
        if (!valid_key(k)) {
            free(texts);
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "png: invalid text key \"%s\" (1-79 printable ASCII characters)",
                                 k);
        }
        texts[i].key = (png_charp)k; /* libpng copies; the cast only drops const */
        texts[i].text = (png_charp)v;
        texts[i].text_length = strlen(v);
        texts[i].compression = is_ascii(v) ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
    }
    png_wctx c = {0};
    bool ok = encode(&c, pixels, w, h, channels, texts, n_text);
    free(texts);
    if (!ok) {
        free(c.buf);
        return sdw_error_set(err, strstr(c.msg, "out of memory") ? SDW_E_NOMEM : SDW_E_BACKEND,
                             "png: encoding failed: %s", c.msg);
    }
    *out = c.buf;
    *out_len = c.len;
    return SDW_OK;
}

sdw_status sdw_png_write(const char *path, const uint8_t *pixels, int w, int h, int channels,
                         const char *const *text_kv, sdw_error *err) {
    uint8_t *buf;
    size_t len;
    sdw_status st = sdw_png_write_mem(pixels, w, h, channels, text_kv, &buf, &len, err);
    if (st != SDW_OK) {
        sdw_error_prefix(err, "%s", path);
        return st;
    }
    /* temporary name + rename: a reader never sees a half-written image */
    size_t n = strlen(path) + 5;
    char *tmp = sdw_xmalloc(n);
    snprintf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = sdw_error_set(err, SDW_E_IO, "cannot create %s: %s", tmp, strerror(errno));
        goto done;
    }
    bool ok = fwrite(buf, 1, len, f) == len;
    if (fclose(f) != 0) ok = false;
    if (!ok) st = sdw_error_set(err, SDW_E_IO, "error writing %s: %s", tmp, strerror(errno));
    else if (rename(tmp, path) != 0)
        st = sdw_error_set(err, SDW_E_IO, "cannot rename %s to %s: %s", tmp, path,
                           strerror(errno));
    if (st != SDW_OK) unlink(tmp);
done:
    free(tmp);
    free(buf);
    return st;
}

/* ---- decoding ---- */

typedef struct png_rctx {
    char msg[256];
    const uint8_t *data;
    size_t len, pos;
    sdw_status code; /* set when we stop the decode ourselves */
    uint8_t *pixels;
    png_bytep *rows;
} png_rctx;

static void read_cb(png_structp png, png_bytep out, size_t n) {
    png_rctx *c = png_get_io_ptr(png);
    if (n > c->len - c->pos) png_error(png, "file is truncated");
    memcpy(out, c->data + c->pos, n);
    c->pos += n;
}

/* tEXt/zTXt are Latin-1 by the PNG spec; iTXt (and our keys) are UTF-8 already. */
static char *latin1_to_utf8(const char *s) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) n += *p >= 0x80 ? 2 : 1;
    char *o = sdw_xmalloc(n + 1), *q = o;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x80) {
            *q++ = (char)*p;
        } else {
            *q++ = (char)(0xc0 | (*p >> 6));
            *q++ = (char)(0x80 | (*p & 0x3f));
        }
    }
    *q = 0;
    return o;
}

static void copy_text(png_structp png, png_infop info, sdw_png *out) {
    png_textp t;
    int n = 0;
    png_get_text(png, info, &t, &n);
    if (n <= 0) return;
    out->text = sdw_xcalloc(2 * (size_t)n, sizeof *out->text);
    for (int i = 0; i < n; i++) {
        bool utf8 = t[i].compression >= PNG_ITXT_COMPRESSION_NONE;
        out->text[2 * i] = latin1_to_utf8(t[i].key);
        out->text[2 * i + 1] = utf8 ? sdw_xstrdup(t[i].text ? t[i].text : "")
                                    : latin1_to_utf8(t[i].text ? t[i].text : "");
    }
    out->n_text = n;
}

/* libpng buffers an ancillary chunk (text, ICC profile) whole, at the length its header
 * claims, before it finds the data is not there: a 1 KB file whose tEXt claims 600 MB made it
 * allocate 600 MB (fuzz_native_request; its chunk size limit only warns, and allocates anyway).
 * So every chunk's length is checked against the bytes that follow it first. */
static bool chunks_fit(const png_rctx *c) {
    size_t pos = 8;
    while (c->len - pos >= 12) {
        const uint8_t *h = c->data + pos;
        const size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (n > c->len - pos - 12) return false;
        if (!memcmp(h + 4, "IEND", 4)) return true;
        pos += 12 + n;
    }
    return true; /* a few bytes short: libpng says "truncated" itself */
}

static bool decode(png_rctx *c, sdw_png *out) {
    if (!chunks_fit(c)) {
        snprintf(c->msg, sizeof c->msg, "a chunk claims more bytes than the file has (truncated "
                                        "or corrupt)");
        return false;
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c->msg, on_error, on_warning);
    if (!png) {
        c->code = SDW_E_NOMEM;
        return false;
    }
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(png_jmpbuf(png))) {
        if (!info) c->code = SDW_E_NOMEM;
        png_destroy_read_struct(&png, &info, NULL);
        return false;
    }
    png_set_read_fn(png, c, read_cb);
    /* our own size check below gives the clearer message; libpng's limit is only a backstop */
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ctype;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    if (w > SDW_PNG_MAX_DIM || h > SDW_PNG_MAX_DIM || (size_t)w * h > SDW_PNG_MAX_PIXELS) {
        snprintf(c->msg, sizeof c->msg, "image is %ux%u; the limit is %d per side and %zu pixels",
                 (unsigned)w, (unsigned)h, SDW_PNG_MAX_DIM, SDW_PNG_MAX_PIXELS);
        c->code = SDW_E_UNSUPPORTED;
        png_destroy_read_struct(&png, &info, NULL);
        return false;
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (depth == 16) png_set_scale_16(png);
    if (!(ctype & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    size_t stride = (size_t)w * (size_t)ch;
    if ((ch != 3 && ch != 4) || png_get_rowbytes(png, info) != stride)
        png_error(png, "unexpected pixel layout after conversion");
    c->pixels = malloc(stride * h);
    c->rows = malloc(sizeof *c->rows * h);
    if (!c->pixels || !c->rows) {
        c->code = SDW_E_NOMEM;
        png_error(png, "out of memory");
    }
    for (png_uint_32 y = 0; y < h; y++) c->rows[y] = c->pixels + y * stride;
    png_read_image(png, c->rows);
    png_read_end(png, info); /* text chunks may follow the image data */
    out->w = (int)w;
    out->h = (int)h;
    out->channels = ch;
    copy_text(png, info, out);
    png_destroy_read_struct(&png, &info, NULL);
    return true;
}

sdw_status sdw_png_read_mem(const void *data, size_t len, const char *label, sdw_png *out,
                            sdw_error *err) {
    SDW_ASSERT(out && (data || !len));
    memset(out, 0, sizeof *out);
    if (!label) label = "(memory)";
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 8 || memcmp(data, sig, 8) != 0)
        return sdw_error_set(err, SDW_E_FORMAT, "%s: not a PNG file", label);
    png_rctx c = {.data = data, .len = len};
    if (!decode(&c, out)) {
        free(c.pixels);
        free(c.rows);
        sdw_png_deinit(out);
        sdw_status code = c.code ? c.code : SDW_E_FORMAT;
        if (code == SDW_E_NOMEM) return sdw_error_set(err, code, "%s: out of memory decoding", label);
        return sdw_error_set(err, code, "%s: cannot decode PNG: %s", label, c.msg);
    }
    free(c.rows);
    out->pixels = c.pixels;
    return SDW_OK;
}

sdw_status sdw_png_read(const char *path, sdw_png *out, sdw_error *err) {
    SDW_ASSERT(out);
    memset(out, 0, sizeof *out);
    char *buf;
    size_t len;
    sdw_status st = sdw_read_file(path, &buf, &len, err);
    if (st != SDW_OK) return st;
    st = sdw_png_read_mem(buf, len, path, out, err);
    free(buf);
    return st;
}

void sdw_png_deinit(sdw_png *img) {
    if (!img) return;
    for (int i = 0; i < 2 * img->n_text; i++) free(img->text[i]);
    free(img->text);
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

const char *sdw_png_text(const sdw_png *img, const char *key) {
    for (int i = 0; i < img->n_text; i++)
        if (strcmp(img->text[2 * i], key) == 0) return img->text[2 * i + 1];
    return NULL;
}
