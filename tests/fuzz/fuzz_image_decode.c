/* libFuzzer target: the user-image decoders' entry point (io/image.h) — signature sniffing, PNG,
 * JPEG (with EXIF orientation) and WebP (with its EXIF chunk) on arbitrary bytes. Every input
 * must either decode to a consistent image or fail with a message; never crash, leak or read
 * out of bounds (built with ASan + UBSan). A decoded image is also resized and converted, the
 * operations the pipelines apply next.
 *
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DSDW_FUZZ=ON && cmake --build build-fuzz
 *   build-fuzz/fuzz_image_decode -max_len=65536 build-fuzz/fuzz_corpus   # runs until stopped
 */
#include "io/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sdw_image img;
    sdw_error err = {0};
    if (sdw_image_decode(data, size, "fuzz", &img, &err) != SDW_OK) {
        SDW_ASSERT(img.data == NULL && err.msg[0] != 0);
        return 0;
    }
    SDW_ASSERT(img.width >= 1 && img.height >= 1 && img.channels >= 1 && img.channels <= 4);
    SDW_ASSERT(img.width <= SDW_IMAGE_MAX_DIM && img.height <= SDW_IMAGE_MAX_DIM);
    /* Keep the follow-up work small: the point is the decoders, not resize speed. */
    if ((size_t)img.width * img.height <= 4096) {
        sdw_image rgb, small, luma;
        sdw_image_to_rgb(&img, &rgb);
        sdw_image_resize(&rgb, 1 + img.height % 17, 1 + img.width % 13, &small);
        sdw_image_to_luma(&small, &luma);
        free(luma.data);
        free(small.data);
        free(rgb.data);
    }
    free(img.data); /* sdw_image_free lives in the model layer, not part of this build */
    return 0;
}
