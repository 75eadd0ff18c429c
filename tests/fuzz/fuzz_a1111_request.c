/* libFuzzer target: the AUTOMATIC1111 API's readers (server/a1111.c): the txt2img / img2img body
 * (sdw__a1111_parse: lenient numbers, sampler names, override_settings, ignored-option
 * warnings, init_images / mask decoding) and the infotext parser behind /sdapi/v1/png-info
 * (sdw__a1111_parse_infotext). The first byte picks which: 0 txt2img, 1 img2img, 2 an
 * infotext; the rest is the body or the text. Every input must be parsed or refused with a
 * message; never crash, leak or read out of bounds (ASan + UBSan). */
#include "fuzz_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int mode = data[0] % 3;
    data++, size--;
    if (mode == 2) {
        char *text = sdw_xmalloc(size + 1);
        memcpy(text, data, size);
        text[size] = 0;
        json_t *o = sdw__a1111_parse_infotext(text);
        SDW_ASSERT(json_is_object(o) && json_object_get(o, "Prompt"));
        char *dump = json_dumps(o, JSON_COMPACT); /* every value is valid UTF-8 */
        SDW_ASSERT(dump != NULL);
        free(dump);
        json_decref(o);
        free(text);
        return 0;
    }
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!body) return 0;
    if (json_is_object(body)) {
        const sdw_server_params p = fuzz_params();
        const sdw_capabilities caps = fuzz_caps();
        sdw_request req = sdw_request_default();
        sdw_req_images im = {0};
        const char *param = NULL;
        json_t *warnings = NULL;
        sdw_error err = {0};
        int n = 1;
        sdw_status s = sdw__a1111_parse(&p, &caps, "tiny-sd15", body, mode == 1, &req, &n, &im,
                                        &warnings, &param, &err);
        SDW_ASSERT(s != SDW_OK || json_is_array(warnings));
        fuzz_check(s, &req, n, &p, &caps, &err);
        json_decref(warnings);
        sdw__req_images_free(&im);
    }
    json_decref(body);
    return 0;
}
