/* libFuzzer target: multipart/form-data bodies (server/multipart.c, hand-written: libmicrohttpd's
 * MHD_PostProcessor was evaluated and rejected) from arbitrary bytes: the input is a
 * Content-Type line, '\n', then the body. Every input must be parsed or refused with a
 * message, and every part found must lie inside the body; never crash, leak or read out of
 * bounds (ASan + UBSan). */
#include "server/multipart.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl) return 0;
    char *ct = sdw_xmalloc((size_t)(nl - data) + 1);
    memcpy(ct, data, (size_t)(nl - data));
    ct[nl - data] = 0;
    const size_t len = size - (size_t)(nl + 1 - data);
    uint8_t *body = sdw_xmalloc(len ? len : 1); /* exactly the body: ASan sees any overread */
    memcpy(body, nl + 1, len);
    sdw_multipart mp;
    sdw_error err = {0};
    if (sdw_multipart_parse(ct, body, len, &mp, &err) != SDW_OK) {
        SDW_ASSERT(mp.n == 0 && mp.parts == NULL && err.msg[0] != 0);
    } else {
        SDW_ASSERT(mp.n >= 0 && mp.n <= SDW_MULTIPART_MAX_PARTS);
        for (int i = 0; i < mp.n; i++) {
            const sdw_multipart_part *p = &mp.parts[i];
            SDW_ASSERT(p->name != NULL);
            SDW_ASSERT(p->data >= body && p->data + p->len <= body + len);
            SDW_ASSERT(sdw_multipart_get(&mp, p->name) != NULL);
        }
        SDW_ASSERT(sdw_multipart_get(&mp, "\xff no such part") == NULL);
        sdw_multipart_deinit(&mp);
    }
    free(body);
    free(ct);
    return 0;
}
