/* io/image_encode.c — JPEG through libjpeg(-turbo)'s memory destination, WebP through libwebp's
 * one-call encoders. libjpeg reports errors by calling error_exit, which must not return: it
 * longjmps back to the one function holding the setjmp, whose cleanup state lives in a struct
 * that the longjmp cannot leave indeterminate. */
#include "io/image_encode.h"

#include "io/png.h"

#include <jpeglib.h>
#include <setjmp.h>
#include <string.h>
#include <strings.h>
#include <webp/encode.h>

bool sdw_image_format_parse(const char *name, sdw_image_format *out) {
    if (!name) return false;
    if (!strcasecmp(name, "png")) *out = SDW_IMAGE_PNG;
    else if (!strcasecmp(name, "jpeg") || !strcasecmp(name, "jpg")) *out = SDW_IMAGE_JPEG;
    else if (!strcasecmp(name, "webp")) *out = SDW_IMAGE_WEBP;
    else return false;
    return true;
}

const char *sdw_image_format_mime(sdw_image_format f) {
    switch (f) {
    case SDW_IMAGE_JPEG: return "image/jpeg";
    case SDW_IMAGE_WEBP: return "image/webp";
    case SDW_IMAGE_PNG: break;
    }
    return "image/png";
}

typedef struct jpeg_ctx {
    struct jpeg_error_mgr mgr; /* first: libjpeg hands us a pointer to it */
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX];
    unsigned char *buf; /* jpeg_mem_dest's buffer: malloc'd by libjpeg, ours to free */
    unsigned long len;
    uint8_t *row;       /* RGBA -> RGB conversion row */
} jpeg_ctx;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    c->mgr.format_message(cinfo, c->msg);
    longjmp(c->jmp, 1);
}

static bool encode_jpeg(jpeg_ctx *c, const uint8_t *px, int w, int h, int channels, int quality) {
    struct jpeg_compress_struct ci;
    ci.err = jpeg_std_error(&c->mgr);
    c->mgr.error_exit = jpeg_on_error;
    if (setjmp(c->jmp)) {
        jpeg_destroy_compress(&ci);
        return false;
    }
    jpeg_create_compress(&ci);
    jpeg_mem_dest(&ci, &c->buf, &c->len);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = 3;
    ci.in_color_space = JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        const uint8_t *src = px + (size_t)ci.next_scanline * w * channels;
        JSAMPROW row = (JSAMPROW)src;
        if (channels == 4) {
            for (int x = 0; x < w; x++) memcpy(c->row + 3 * x, src + 4 * x, 3);
            row = c->row;
        }
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    return true;
}

sdw_status sdw_image_encode(const uint8_t *pixels, int w, int h, int channels,
                            sdw_image_format format, int quality, uint8_t **out, size_t *out_len,
                            sdw_error *err) {
    SDW_ASSERT(pixels && out && out_len);
    if (format == SDW_IMAGE_PNG)
        return sdw_png_write_mem(pixels, w, h, channels, NULL, out, out_len, err);
    /* WebP's limit is 16383 per side; JPEG's 65500. */
    if (w <= 0 || h <= 0 || w > 16383 || h > 16383 || (channels != 3 && channels != 4))
        return sdw_error_set(err, SDW_E_INVALID_ARG, "cannot encode %dx%d with %d channels as %s",
                             w, h, channels, format == SDW_IMAGE_JPEG ? "JPEG" : "WebP");
    quality = SDW_MAX(1, SDW_MIN(100, quality));
    if (format == SDW_IMAGE_JPEG) {
        jpeg_ctx c = {0};
        c.row = sdw_xmalloc((size_t)w * 3);
        bool ok = encode_jpeg(&c, pixels, w, h, channels, quality);
        free(c.row);
        if (!ok) {
            free(c.buf);
            return sdw_error_set(err, SDW_E_BACKEND, "jpeg: encoding failed: %s", c.msg);
        }
        /* Hand out a buffer from our own allocator, as the header promises free() works. */
        *out = sdw_xmalloc(c.len);
        memcpy(*out, c.buf, c.len);
        *out_len = c.len;
        free(c.buf);
        return SDW_OK;
    }
    uint8_t *buf = NULL;
    size_t n = channels == 4 ? WebPEncodeRGBA(pixels, w, h, w * 4, (float)quality, &buf)
                             : WebPEncodeRGB(pixels, w, h, w * 3, (float)quality, &buf);
    if (n == 0) {
        WebPFree(buf);
        return sdw_error_set(err, SDW_E_BACKEND, "webp: encoding %dx%d failed", w, h);
    }
    *out = sdw_xmalloc(n);
    memcpy(*out, buf, n);
    *out_len = n;
    WebPFree(buf);
    return SDW_OK;
}
