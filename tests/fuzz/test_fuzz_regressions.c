/* What the fuzz targets found, replayed in the ordinary build (the fuzz build is clang's and runs
 * apart). Each case is built from a well-formed input, corrupted the way the crashing input was,
 * so no binary file lives in the repository.
 *
 * fuzz_t5_spiece: a spiece.model whose normalizer charsmap (a double-array trie) points outside
 * itself loaded fine, and libsentencepiece read out of bounds on the first text that walked into
 * the bad unit (a SEGV in Normalizer::NormalizePrefix). It must be refused at load, naming the
 * problem.
 *
 * fuzz_native_request: a 165-byte PNG whose tEXt chunk claims 600 MB made libpng allocate 600 MB
 * before finding the bytes missing (its own chunk limit only warns). It must be refused before
 * libpng sees it. */
#include "sdw_test.h"

#include "io/image.h"
#include "text/t5_tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Protocol-buffer wire format: the length-delimited field `field` at or after p (below end):
 * its data in [*data, *data + *len). Fails on anything else than varint and length fields. */
static bool find_field(const uint8_t *p, const uint8_t *end, uint64_t field, uint8_t **data,
                       size_t *len) {
    while (p < end) {
        uint64_t key = 0, v = 0;
        for (int s = 0; p < end; s += 7) {
            key |= (uint64_t)(*p & 0x7F) << s;
            if (!(*p++ & 0x80)) break;
        }
        const int wire = (int)(key & 7);
        if (wire == 5) { p += 4; continue; }
        if (wire == 1) { p += 8; continue; }
        for (int s = 0; p < end; s += 7) {
            v |= (uint64_t)(*p & 0x7F) << s;
            if (!(*p++ & 0x80)) break;
        }
        if (wire == 0) continue;
        if (wire != 2) return false;
        if (key >> 3 == field) {
            *data = (uint8_t *)p;
            *len = (size_t)v;
            return true;
        }
        p += v;
    }
    return false;
}

static void test_corrupt_spiece_charsmap_is_refused(void) {
    size_t n = 0;
    uint8_t *model = sdw_test_read_file(sdw_test_path("models/tiny-flux/tokenizer_2/spiece.model"), &n);
    if (!model) {
        fprintf(stderr, "  no fixture spiece.model: skipped\n");
        return;
    }
    uint8_t *spec = NULL, *cm = NULL;
    size_t spec_len = 0, cm_len = 0;
    ASSERT_TRUE(find_field(model, model + n, 3, &spec, &spec_len)); /* normalizer_spec */
    ASSERT_TRUE(find_field(spec, spec + spec_len, 2, &cm, &cm_len)); /* precompiled_charsmap */
    ASSERT_TRUE(cm_len > 8);
    /* the root unit (after the u32 trie size): an offset far past the trie */
    const uint32_t bad_root = 0x7FFFFC00u;
    memcpy(cm + 4, &bad_root, 4);
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/corrupt-spiece", sdw_test_tmpdir());
    snprintf(path, sizeof path, "%s/spiece.model", dir);
    mkdir(dir, 0755);
    FILE *f = fopen(path, "wb");
    ASSERT_TRUE(f && fwrite(model, 1, n, f) == n);
    fclose(f);
    free(model);
    sdw_t5_tokenizer *t = NULL;
    sdw_error err = {0};
    sdw_status s = sdw_t5_tokenizer_load(dir, &t, &err);
    if (s == SDW_OK) { /* before the fix: this encode read out of bounds */
        int32_t *ids = NULL;
        int n_ids = 0;
        sdw_t5_tokenize(t, "a photo of a cat", &ids, &n_ids, NULL);
        free(ids);
        sdw_t5_tokenizer_destroy(t);
    }
    ASSERT_TRUE(s != SDW_OK);
    ASSERT_STR_CONTAINS(err.msg, "precompiled_charsmap is corrupt");
    unlink(path);
    rmdir(dir);
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* The PNG chunk CRC (CRC-32 over type and data), bit by bit. */
static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

static void test_png_chunk_claiming_more_than_the_file_is_refused(void) {
    uint8_t png[64] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t n = 8;
    put_be32(png + n, 13), memcpy(png + n + 4, "IHDR", 4);
    put_be32(png + n + 8, 8), put_be32(png + n + 12, 8); /* 8x8 */
    png[n + 16] = 8, png[n + 17] = 2;                     /* 8-bit RGB */
    put_be32(png + n + 8 + 13, crc32_of(png + n + 4, 4 + 13));
    n += 8 + 13 + 4;
    put_be32(png + n, 603979864u), memcpy(png + n + 4, "tEXt", 4);
    memcpy(png + n + 8, "parameters\0a cat", 17);
    n += 8 + 17;
    sdw_image img;
    sdw_error err = {0};
    ASSERT_TRUE(sdw_image_decode(png, n, "bomb", &img, &err) != SDW_OK);
    ASSERT_STR_CONTAINS(err.msg, "a chunk claims more bytes than the file has");
}

int main(void) {
    RUN(test_corrupt_spiece_charsmap_is_refused);
    RUN(test_png_chunk_claiming_more_than_the_file_is_refused);
    return sdw_test_finish();
}
