/* libFuzzer target: the native API's POST /v1/jobs body (server/native.c, sdw__native_parse)
 * from arbitrary bytes: JSON parsing, every typed field reader, the server's limits, base64 and
 * image decoding of input_image / mask_image, then the model's resolve. Every input must be
 * parsed or refused with a message; never crash, leak or read out of bounds (ASan + UBSan).
 *
 *   build-fuzz/fuzz_native_request -dict=tests/fuzz/request.dict build-fuzz/fuzz_corpus/native
 */
#include "fuzz_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!body) return 0;
    if (json_is_object(body)) {
        const sdw_server_params p = fuzz_params();
        const sdw_capabilities caps = fuzz_caps();
        sdw_request req = sdw_request_default();
        sdw_req_images im = {0};
        const char *param = NULL;
        sdw_error err = {0};
        int n = 1;
        sdw_status s = sdw__native_parse(&p, &caps, body, &req, &n, &im, &param, &err);
        fuzz_check(s, &req, n, &p, &caps, &err);
        sdw__req_images_free(&im);
    }
    json_decref(body);
    return 0;
}
