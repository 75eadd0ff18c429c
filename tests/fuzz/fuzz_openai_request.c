/* libFuzzer target: the OpenAI Images API's readers (server/openai.c): the generations JSON body
 * (sdw__openai_parse_generation) and the edits / variations multipart form
 * (sdw__openai_parse_form: the multipart parser, text fields, numbers, image and mask
 * decoding). The first byte picks: 0 generations (the rest is JSON), 1 edits, 2 variations
 * (the rest is a Content-Type line, '\n', then the body). Every input must be parsed or
 * refused with a message; never crash, leak or read out of bounds (ASan + UBSan). */
#include "fuzz_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int mode = data[0] % 3;
    data++, size--;
    const sdw_server_params p = fuzz_params();
    const sdw_capabilities caps = fuzz_caps();
    sdw_request req = sdw_request_default();
    sdw_openai_opts o;
    const char *param = NULL;
    sdw_error err = {0};
    if (mode == 0) {
        json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
        if (!body) return 0;
        if (json_is_object(body)) {
            sdw_status s = sdw__openai_parse_generation(&p, &caps, body, &req, &o, &param, &err);
            fuzz_check(s, &req, s ? 1 : o.n, &p, &caps, &err);
            SDW_ASSERT(s || (o.partial_images >= 0 && o.partial_images <= 3));
        }
        json_decref(body);
        return 0;
    }
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl) return 0;
    char *ct = sdw_xmalloc((size_t)(nl - data) + 1);
    memcpy(ct, data, (size_t)(nl - data));
    ct[nl - data] = 0;
    /* the body as the server holds it: its own buffer, NUL-terminated */
    const size_t len = size - (size_t)(nl + 1 - data);
    char *body = sdw_xmalloc(len + 1);
    memcpy(body, nl + 1, len);
    body[len] = 0;
    sdw_openai_texts t = {0};
    sdw_req_images im = {0};
    sdw_status s = sdw__openai_parse_form(&p, &caps, ct, body, len, mode == 2, &req, &o, &t, &im,
                                          &param, &err);
    fuzz_check(s, &req, s ? 1 : o.n, &p, &caps, &err);
    SDW_ASSERT(s || req.init_image);
    sdw__req_images_free(&im);
    sdw__openai_texts_free(&t);
    free(body);
    free(ct);
    return 0;
}
