/* io/image.c — PNG (io/png.h), JPEG (libjpeg-turbo) and WebP (libwebp) decoding, EXIF
 * orientation, and Pillow-exact Lanczos resizing / colour conversion.
 *
 * libjpeg reports errors by longjmp: the JPEG session runs in one function holding the setjmp,
 * and what must survive a longjmp (the pixel buffer, the message) lives in a context struct
 * owned by its caller, never in locals changed after setjmp. */
#include "io/image.h"

#include "io/png.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h> /* jpeglib.h needs FILE */
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>
#include <webp/decode.h>
#include <webp/demux.h>

void sdw_image_free(sdw_image *img) {
    if (!img) return;
    free(img->data);
    memset(img, 0, sizeof *img);
}

static const char *label_or_default(const char *label) { return label ? label : "image"; }

/* Refuses empty and oversized images before anything is allocated for their pixels. */
static sdw_status check_dims(const char *label, const char *fmt, long long w, long long h,
                             sdw_error *err) {
    if (w <= 0 || h <= 0)
        return sdw_error_set(err, SDW_E_FORMAT, "%s: %s image has no pixels (%lldx%lld)", label,
                             fmt, w, h);
    if (w > SDW_IMAGE_MAX_DIM || h > SDW_IMAGE_MAX_DIM ||
        (size_t)w * (size_t)h > SDW_IMAGE_MAX_PIXELS)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: %s image %lldx%lld is too large (at most %d pixels a side and "
                             "%zu pixels in all)",
                             label, fmt, w, h, SDW_IMAGE_MAX_DIM, SDW_IMAGE_MAX_PIXELS);
    return SDW_OK;
}

/* ---- EXIF orientation (TIFF IFD0 tag 0x0112) ---- */

static unsigned rd16(const uint8_t *p, bool be) {
    return be ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}
static uint32_t rd32(const uint8_t *p, bool be) {
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
              : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* The orientation (1-8) in an EXIF blob ("Exif\0\0" prefix optional), 1 when absent or
 * malformed: a broken EXIF block never fails a decode, as it does not in Pillow. */
static int exif_orientation(const uint8_t *p, size_t n) {
    if (n >= 6 && memcmp(p, "Exif\0\0", 6) == 0) p += 6, n -= 6;
    if (n < 8) return 1;
    bool be;
    if (memcmp(p, "II*\0", 4) == 0) be = false;
    else if (memcmp(p, "MM\0*", 4) == 0) be = true;
    else return 1;
    uint32_t ifd = rd32(p + 4, be);
    if (ifd > n - 2) return 1;
    unsigned count = rd16(p + ifd, be);
    for (unsigned i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > n) return 1;
        if (rd16(p + e, be) != 0x0112) continue;
        unsigned type = rd16(p + e + 2, be), v = rd16(p + e + 8, be);
        return type == 3 && v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* Applies PIL.ImageOps.exif_transpose's transform for orientation o to img, in place. */
static void apply_orientation(sdw_image *img, int o) {
    if (o <= 1) return;
    const int W = img->width, H = img->height, C = img->channels;
    const bool swap = o >= 5; /* transpose, rotate 270, transverse, rotate 90 */
    const int ow = swap ? H : W, oh = swap ? W : H;
    uint8_t *dst = sdw_xmalloc((size_t)W * H * C);
    for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++) {
            int sx, sy;
            switch (o) {
            case 2: sx = W - 1 - ox, sy = oy; break;           /* FLIP_LEFT_RIGHT */
            case 3: sx = W - 1 - ox, sy = H - 1 - oy; break;   /* ROTATE_180 */
            case 4: sx = ox, sy = H - 1 - oy; break;           /* FLIP_TOP_BOTTOM */
            case 5: sx = oy, sy = ox; break;                   /* TRANSPOSE */
            case 6: sx = oy, sy = H - 1 - ox; break;           /* ROTATE_270 (clockwise 90) */
            case 7: sx = W - 1 - oy, sy = H - 1 - ox; break;   /* TRANSVERSE */
            default: sx = W - 1 - oy, sy = ox; break;          /* 8: ROTATE_90 (counter-cw) */
            }
            memcpy(dst + ((size_t)oy * ow + ox) * C, img->data + ((size_t)sy * W + sx) * C,
                   (size_t)C);
        }
    free(img->data);
    img->data = dst;
    img->width = ow;
    img->height = oh;
}

/* ---- PNG ---- */

static sdw_status decode_png(const void *data, size_t len, const char *label, sdw_image *out,
                             sdw_error *err) {
    /* The size from IHDR first (always the first chunk), for the same messages as the other
     * formats; libpng would also refuse both, with "Invalid IHDR data" for a zero size. */
    const uint8_t *p = data;
    if (len >= 24 && memcmp(p + 12, "IHDR", 4) == 0) {
        sdw_status s = check_dims(label, "PNG", rd32(p + 16, true), rd32(p + 20, true), err);
        if (s) return s;
    }
    sdw_png png;
    sdw_status s = sdw_png_read_mem(data, len, label, &png, err);
    if (s) return s;
    *out = (sdw_image){.width = png.w, .height = png.h, .channels = png.channels,
                       .data = png.pixels};
    png.pixels = NULL;
    sdw_png_deinit(&png);
    return SDW_OK;
}

/* ---- JPEG ---- */

typedef struct jpeg_ctx {
    struct jpeg_error_mgr mgr; /* first: libjpeg hands us a pointer to it */
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX];
    uint8_t *pixels; /* owned until handed to the image */
    int orientation;
} jpeg_ctx;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    cinfo->err->format_message(cinfo, c->msg);
    longjmp(c->jmp, 1);
}

/* Warnings (level -1) are mostly harmless oddities (extraneous bytes between markers), ignored
 * as Pillow ignores them; scan data that stops early (file truncated, or a marker in the middle
 * of the entropy-coded data) would leave grey rows, so it is an error here. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    int code = cinfo->err->msg_code;
    if (level == -1 && (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER)) jpeg_on_error(cinfo);
}

static bool jpeg_session(jpeg_ctx *c, const uint8_t *data, size_t len, const char *label,
                         sdw_image *out, sdw_error *err) {
    struct jpeg_decompress_struct cinfo;
    cinfo.err = jpeg_std_error(&c->mgr);
    c->mgr.error_exit = jpeg_on_error;
    c->mgr.emit_message = jpeg_on_message;
    if (setjmp(c->jmp)) {
        jpeg_destroy_decompress(&cinfo);
        sdw_error_set(err, SDW_E_FORMAT, "%s: corrupt JPEG data: %s", label, c->msg);
        return false;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(&cinfo, TRUE);
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 &&
            memcmp(m->data, "Exif\0\0", 6) == 0)
            c->orientation = exif_orientation(m->data, m->data_length);
    int ch;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE: cinfo.out_color_space = JCS_GRAYSCALE, ch = 1; break;
    case JCS_CMYK:
    case JCS_YCCK:
        jpeg_destroy_decompress(&cinfo);
        sdw_error_set(err, SDW_E_UNSUPPORTED,
                      "%s: CMYK JPEG images are not supported (convert it to RGB)", label);
        return false;
    default: cinfo.out_color_space = JCS_RGB, ch = 3; break;
    }
    if (check_dims(label, "JPEG", cinfo.image_width, cinfo.image_height, err)) {
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    jpeg_start_decompress(&cinfo);
    const size_t stride = (size_t)cinfo.output_width * (size_t)ch;
    c->pixels = sdw_xmalloc(stride * cinfo.output_height);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = c->pixels + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    *out = (sdw_image){.width = (int)cinfo.output_width, .height = (int)cinfo.output_height,
                       .channels = ch, .data = c->pixels};
    c->pixels = NULL;
    jpeg_destroy_decompress(&cinfo);
    return true;
}

static sdw_status decode_jpeg(const uint8_t *data, size_t len, const char *label, sdw_image *out,
                              sdw_error *err) {
    jpeg_ctx c = {.orientation = 1};
    if (!jpeg_session(&c, data, len, label, out, err)) {
        free(c.pixels);
        return err ? err->code : SDW_E_FORMAT;
    }
    apply_orientation(out, c.orientation);
    return SDW_OK;
}

/* ---- WebP ---- */

static const char *webp_status_str(VP8StatusCode st) {
    switch (st) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "truncated data";
    default: return "decoder error";
    }
}

static int webp_orientation(const uint8_t *data, size_t len) {
    WebPData wd = {data, len};
    WebPDemuxer *dmx = WebPDemux(&wd);
    if (!dmx) return 1;
    int o = 1;
    WebPChunkIterator it;
    if (WebPDemuxGetChunk(dmx, "EXIF", 1, &it)) {
        o = exif_orientation(it.chunk.bytes, it.chunk.size);
        WebPDemuxReleaseChunkIterator(&it);
    }
    WebPDemuxDelete(dmx);
    return o;
}

static sdw_status decode_webp(const uint8_t *data, size_t len, const char *label, sdw_image *out,
                              sdw_error *err) {
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(data, len, &f);
    if (st != VP8_STATUS_OK)
        return sdw_error_set(err, SDW_E_FORMAT, "%s: corrupt WebP data: %s", label,
                             webp_status_str(st));
    if (f.has_animation)
        return sdw_error_set(err, SDW_E_UNSUPPORTED,
                             "%s: animated WebP images are not supported (use one frame)", label);
    sdw_status s = check_dims(label, "WebP", f.width, f.height, err);
    if (s) return s;
    const int ch = f.has_alpha ? 4 : 3;
    const size_t stride = (size_t)f.width * ch, size = stride * (size_t)f.height;
    uint8_t *px = sdw_xmalloc(size);
    uint8_t *ok = ch == 4 ? WebPDecodeRGBAInto(data, len, px, size, (int)stride)
                          : WebPDecodeRGBInto(data, len, px, size, (int)stride);
    if (!ok) {
        free(px);
        return sdw_error_set(err, SDW_E_FORMAT, "%s: corrupt WebP data: the image data does not "
                                                "decode", label);
    }
    *out = (sdw_image){.width = f.width, .height = f.height, .channels = ch, .data = px};
    apply_orientation(out, webp_orientation(data, len));
    return SDW_OK;
}

/* ---- entry points ---- */

sdw_status sdw_image_decode(const void *data, size_t len, const char *label, sdw_image *out,
                            sdw_error *err) {
    const uint8_t *p = data;
    label = label_or_default(label);
    memset(out, 0, sizeof *out);
    if (!p || len == 0) return sdw_error_set(err, SDW_E_FORMAT, "%s: empty image data", label);
    if (len >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return decode_png(p, len, label, out, err);
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return decode_jpeg(p, len, label, out, err);
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return decode_webp(p, len, label, out, err);
    return sdw_error_set(err, SDW_E_FORMAT, "%s: not a PNG, JPEG or WebP image", label);
}

sdw_status sdw_image_load(const char *path, sdw_image *out, sdw_error *err) {
    char *buf = NULL;
    size_t len = 0;
    memset(out, 0, sizeof *out);
    sdw_status s = sdw_read_file(path, &buf, &len, err);
    if (s) return s;
    s = sdw_image_decode(buf, len, path, out, err);
    free(buf);
    return s;
}

/* ---- Pillow's resampling (libImaging/Resample.c), Lanczos, 8 bits per channel ---- */

#define PIL_PRECISION_BITS (32 - 8 - 2)

static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double lanczos(double x) {
    return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc for in_size -> out_size over the whole
 * input (box 0..in_size): per output index, the first input index (bounds[2i]), the tap count
 * (bounds[2i+1]) and ksize fixed-point weights. Returns ksize; *kk and *bounds are new. */
static int pil_coeffs(int in_size, int out_size, int32_t **kk_out, int **bounds_out) {
    double scale = (double)(float)in_size / out_size, filterscale = scale;
    if (filterscale < 1.0) filterscale = 1.0;
    const double support = 3.0 * filterscale;
    const int ksize = (int)ceil(support) * 2 + 1;
    int32_t *kk = sdw_xcalloc((size_t)out_size * ksize, sizeof *kk);
    int *bounds = sdw_xmalloc((size_t)out_size * 2 * sizeof *bounds);
    double *k = sdw_xmalloc((size_t)ksize * sizeof *k);
    for (int xx = 0; xx < out_size; xx++) {
        const double center = (xx + 0.5) * scale, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            k[x] = lanczos((x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? k[x] / ww : k[x];
            kk[(size_t)xx * ksize + x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PIL_PRECISION_BITS))
                                               : (int32_t)(0.5 + v * (1 << PIL_PRECISION_BITS));
        }
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    free(k);
    *kk_out = kk;
    *bounds_out = bounds;
    return ksize;
}

/* Pillow's clip8: the sum carries 22 fraction bits; out-of-range values saturate. */
static uint8_t pil_clip8(int64_t v) {
    if (v < 0) return 0;
    v >>= PIL_PRECISION_BITS;
    return (uint8_t)(v > 255 ? 255 : v);
}

/* One pass along x (step = channels, line stride = row bytes) or y (step = row bytes). Output
 * element o of line l reads input elements bounds..bounds+n along the pass direction. */
static void pil_pass(const uint8_t *in, uint8_t *out, int C, int n_lines, int out_len,
                     size_t in_line, size_t in_step, size_t out_line, size_t out_step,
                     int in_len) {
    int32_t *kk;
    int *bounds;
    const int ksize = pil_coeffs(in_len, out_len, &kk, &bounds);
#pragma omp parallel for schedule(static)
    for (int l = 0; l < n_lines; l++)
        for (int o = 0; o < out_len; o++) {
            const int32_t *k = kk + (size_t)o * ksize;
            const int xmin = bounds[2 * o], n = bounds[2 * o + 1];
            for (int c = 0; c < C; c++) {
                const uint8_t *src = in + (size_t)l * in_line + (size_t)xmin * in_step + c;
                int64_t ss = 1 << (PIL_PRECISION_BITS - 1);
                for (int x = 0; x < n; x++) ss += (int64_t)src[(size_t)x * in_step] * k[x];
                out[(size_t)l * out_line + (size_t)o * out_step + c] = pil_clip8(ss);
            }
        }
    free(kk);
    free(bounds);
}

void sdw_image_resize(const sdw_image *in, int w, int h, sdw_image *out) {
    SDW_ASSERT(w >= 1 && h >= 1 && in->width >= 1 && in->height >= 1);
    const int W = in->width, H = in->height, C = in->channels;
    const uint8_t *src = in->data;
    uint8_t *tmp = NULL;
    if (w != W) { /* horizontal pass first, as Pillow */
        tmp = sdw_xmalloc((size_t)w * H * C);
        pil_pass(src, tmp, C, H, w, (size_t)W * C, (size_t)C, (size_t)w * C, (size_t)C, W);
        src = tmp;
    }
    const int cw = w; /* width of src now */
    uint8_t *dst = sdw_xmalloc((size_t)w * h * C);
    if (h != H)
        pil_pass(src, dst, C, cw, h, (size_t)C, (size_t)cw * C, (size_t)C, (size_t)cw * C, H);
    else
        memcpy(dst, src, (size_t)w * h * C);
    free(tmp);
    *out = (sdw_image){.width = w, .height = h, .channels = C, .data = dst};
}

/* ---- colour conversions (libImaging/Convert.c) ---- */

void sdw_image_to_rgb(const sdw_image *in, sdw_image *out) {
    const size_t n = (size_t)in->width * in->height;
    const int C = in->channels;
    uint8_t *d = sdw_xmalloc(n * 3);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = in->data + i * C;
        for (int k = 0; k < 3; k++) d[i * 3 + k] = C >= 3 ? p[k] : p[0];
    }
    *out = (sdw_image){.width = in->width, .height = in->height, .channels = 3, .data = d};
}

void sdw_image_to_luma(const sdw_image *in, sdw_image *out) {
    const size_t n = (size_t)in->width * in->height;
    const int C = in->channels;
    uint8_t *d = sdw_xmalloc(n);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = in->data + i * C;
        d[i] = C >= 3 ? (uint8_t)(((uint32_t)p[0] * 19595 + (uint32_t)p[1] * 38470 +
                                   (uint32_t)p[2] * 7471 + 0x8000) >> 16)
                      : p[0];
    }
    *out = (sdw_image){.width = in->width, .height = in->height, .channels = 1, .data = d};
}
