/* Sharded checkpoints (*.safetensors.index.json, as transformers and diffusers save large
 * models): the shards open as one file whose tensors are the union, each readable where its
 * shard holds it; a malformed index, a tensor in two shards, a map that names the wrong shard,
 * a shard path that leaves the folder, or a missing shard fail with a message naming it. */
#include "sdw_test.h"

#include "io/safetensors.h"

#include <stdlib.h>
#include <string.h>

static const char *tmp(const char *name) {
    static char b[4][1024];
    static int k;
    char *p = b[k++ % 4];
    snprintf(p, 1024, "%s/%s", sdw_test_tmpdir(), name);
    return p;
}

/* A shard holding tensors names[0..n) of 2 floats each, value = base + index. */
static void write_shard(const char *file, const char *const *names, int n, float base) {
    sdw_st_writer *w = NULL;
    ASSERT_OK(sdw_st_writer_create(tmp(file), &w, NULL), NULL);
    for (int i = 0; i < n; i++)
        sdw_st_writer_add(w, names[i], SDW_DTYPE_F32, 1, (const int64_t[]){2});
    ASSERT_OK(sdw_st_writer_begin(w, NULL), NULL);
    for (int i = 0; i < n; i++)
        ASSERT_OK(sdw_st_writer_write(w, (const float[]){base + i, base + i}, NULL), NULL);
    ASSERT_OK(sdw_st_writer_finish(w, NULL), NULL);
}

static const char *write_index(const char *name, const char *json) {
    const char *p = tmp(name);
    FILE *f = fopen(p, "w");
    fputs(json, f);
    fclose(f);
    return p;
}

static void expect_fail(const char *index, const char *needle) {
    sdw_st_file *f = NULL;
    sdw_error err = {0};
    ASSERT_TRUE(sdw_st_open_sharded(index, &f, &err) != SDW_OK);
    ASSERT_TRUE(f == NULL);
    ASSERT_STR_CONTAINS(err.msg, needle);
}

static void test_union_of_shards(void) {
    static const char *const a[] = {"b.weight", "d.weight"}, *const b[] = {"a.weight", "c.weight"};
    write_shard("m-1.safetensors", a, 2, 10);
    write_shard("m-2.safetensors", b, 2, 20);
    const char *index = write_index(
        "m.safetensors.index.json",
        "{\"metadata\": {\"total_size\": 32}, \"weight_map\": {\"b.weight\": \"m-1.safetensors\","
        " \"d.weight\": \"m-1.safetensors\", \"a.weight\": \"m-2.safetensors\","
        " \"c.weight\": \"m-2.safetensors\"}}");
    sdw_st_file *f = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_st_open_sharded(index, &f, &err), &err);
    ASSERT_EQ_INT(sdw_st_count(f), 4);
    /* sorted by name across shards; data from the shard that holds it */
    static const char *const order[] = {"a.weight", "b.weight", "c.weight", "d.weight"};
    static const float want[] = {20, 10, 21, 11};
    for (int i = 0; i < 4; i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        float v[2];
        sdw_convert_to_f32(t->dtype, t->data, v, 2);
        ASSERT_TRUE(strcmp(t->name, order[i]) == 0 && v[0] == want[i] && v[1] == want[i]);
        ASSERT_TRUE(sdw_st_find(f, order[i]) == t);
        sdw_st_drop_pages(f, t); /* harmless on shard mappings */
    }
    ASSERT_TRUE(sdw_st_find(f, "e.weight") == NULL);
    ASSERT_TRUE(strcmp(sdw_st_path(f), index) == 0);
    sdw_st_close(f);
}

static void test_bad_indexes(void) {
    static const char *const a[] = {"x.weight"}, *const b[] = {"x.weight", "y.weight"};
    write_shard("dup-1.safetensors", a, 1, 0);
    write_shard("dup-2.safetensors", b, 2, 0);
    expect_fail(write_index("dup.index.json",
                            "{\"weight_map\": {\"x.weight\": \"dup-1.safetensors\","
                            " \"y.weight\": \"dup-2.safetensors\"}}"),
                "tensor x.weight is in two shards");
    expect_fail(write_index("wrong.index.json",
                            "{\"weight_map\": {\"y.weight\": \"dup-1.safetensors\"}}"),
                "tensor y.weight is not in dup-1.safetensors");
    expect_fail(write_index("escape.index.json",
                            "{\"weight_map\": {\"x.weight\": \"../dup-1.safetensors\"}}"),
                "must name a file beside the index");
    expect_fail(write_index("missing.index.json",
                            "{\"weight_map\": {\"x.weight\": \"nowhere.safetensors\"}}"),
                "nowhere.safetensors");
    expect_fail(write_index("nomap.index.json", "{\"metadata\": {}}"), "weight_map");
    expect_fail(write_index("broken.index.json", "{\"weight_map\": "), "not a valid shard index");
}

int main(void) {
    RUN(test_union_of_shards);
    RUN(test_bad_indexes);
    return sdw_test_finish();
}
