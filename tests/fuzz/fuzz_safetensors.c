/* libFuzzer target: the safetensors reader (io/safetensors.h) on arbitrary bytes: the 8-byte
 * header length, the JSON header (dtypes, shapes, data offsets, __metadata__), the checks that
 * every tensor lies inside the data and none overlap; then every tensor found is read (its first
 * elements converted to f32, as the binders do). Every input must open or fail with a message;
 * never crash, leak or read out of bounds (ASan + UBSan). */
#include "io/safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Exactly the input's bytes: ASan sees a read past them. */
    uint8_t *copy = sdw_xmalloc(size ? size : 1);
    memcpy(copy, data, size);
    sdw_st_file *f = NULL;
    sdw_error err = {0};
    if (sdw_st_open_memory(copy, size, "fuzz", &f, &err) != SDW_OK) {
        SDW_ASSERT(f == NULL && err.msg[0] != 0);
        free(copy);
        return 0;
    }
    const int n = sdw_st_count(f);
    SDW_ASSERT(n >= 0);
    float buf[16];
    for (int i = 0; i < n; i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        SDW_ASSERT(t && t->name && sdw_st_find(f, t->name) == t);
        const uint8_t *p = t->data;
        SDW_ASSERT(t->n_bytes == 0 || (p >= copy && p + t->n_bytes <= copy + size));
        SDW_ASSERT(t->n_bytes == t->n_elems * sdw_dtype_size(t->dtype));
        if (sdw_dtype_is_float(t->dtype) && t->n_elems)
            sdw_convert_to_f32(t->dtype, t->data, buf, t->n_elems < 16 ? t->n_elems : 16);
    }
    (void)sdw_st_metadata(f, "format");
    sdw_st_close(f);
    free(copy);
    return 0;
}
