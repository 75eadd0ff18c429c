/* The OpenCLIP name map: every tensor of the diffusers text encoders (tiny-sd2's text_encoder,
 * tiny-sdxl's text_encoder_2) read through the map and its views (q|k|v rows of in_proj,
 * transposed text_projection) from the single files equals the folder's; every OpenCLIP tensor
 * of the files is either read that way or one the family knowingly leaves unused. */
#include "io/weights.h"
#include "sdw_test.h"
#include "text/openclip_names.h"

#include <stdlib.h>

static void check_against_folder(const char *file, const char *prefix, const char *folder_file,
                                 double tol, const char *const *unused) {
    sdw_error err = {0};
    sdw_st_file *f = NULL, *d = NULL;
    ASSERT_OK(sdw_st_open(sdw_test_path("models/%s", file), &f, &err), &err);
    sdw_status s = sdw_st_open(sdw_test_path("models/%s", folder_file), &d, &err);
    if (s) sdw_st_close(f);
    ASSERT_OK(s, &err);
    sdw_weights *ws = sdw_weights_create_viewed(f, prefix, sdw_openclip_text_name, NULL);
    int n_checked = 0, n_bad = 0;
    for (int i = 0; i < sdw_st_count(d); i++) {
        const sdw_st_tensor *t = sdw_st_at(d, i);
        if (t->dtype != SDW_DTYPE_F32) continue; /* position_ids */
        const float *got = sdw_weights_f32(ws, t->name, t->n_dims, t->shape, &err);
        if (!got) {
            fprintf(stderr, "  %s: %s\n", t->name, err.msg);
            n_bad++;
            continue;
        }
        double e = sdw_test_rel_err(got, t->data, t->n_elems);
        if (!(e <= tol)) {
            fprintf(stderr, "  %s: relative error %.3g\n", t->name, e);
            n_bad++;
        }
        n_checked++;
    }
    for (const char *const *u = unused; *u; u++)
        sdw_weights_ignore(ws, *u);
    char names[512];
    int left = sdw_weights_unused(ws, names, sizeof names);
    if (left) fprintf(stderr, "  unmatched in %s: %s\n", file, names);
    sdw_weights_destroy(ws);
    sdw_st_close(d);
    sdw_st_close(f);
    ASSERT_EQ_INT(n_bad, 0);
    ASSERT_TRUE(n_checked > 5 * 12);
    ASSERT_EQ_INT(left, 0);
}

/* SD 2.x: 6 layers in the file, 5 in the folder (diffusers drops the last), no projection. */
static void test_sd2_single_file(void) {
    static const char *const unused[] = {"transformer.resblocks.5.", "text_projection",
                                         "logit_scale", NULL};
    check_against_folder("tiny-sd2.safetensors", "cond_stage_model.model.",
                         "tiny-sd2/text_encoder/model.safetensors", 0, unused);
}

/* SDXL's OpenCLIP-bigG: all layers, text_projection transposed; fp16 file vs fp32 folder. */
static void test_sdxl_single_file(void) {
    static const char *const unused[] = {"logit_scale", NULL};
    check_against_folder("tiny-sdxl.safetensors", "conditioner.embedders.1.model.",
                         "tiny-sdxl/text_encoder_2/model.safetensors", 1e-3, unused);
}

static void test_names(void) {
    char buf[256];
    sdw_weight_view v = {0};
    const char *n = sdw_openclip_text_name("text_model.encoder.layers.12.self_attn.v_proj.bias",
                                           buf, sizeof buf, &v, NULL);
    ASSERT_TRUE(n && !strcmp(n, "transformer.resblocks.12.attn.in_proj_bias"));
    ASSERT_TRUE(v.split == 3 && v.first == 2 && !v.transpose);
    v = (sdw_weight_view){0};
    n = sdw_openclip_text_name("text_projection.weight", buf, sizeof buf, &v, NULL);
    ASSERT_TRUE(n && !strcmp(n, "text_projection") && v.transpose && v.split == 0);
    v = (sdw_weight_view){0};
    n = sdw_openclip_text_name("text_model.encoder.layers.3.mlp.fc2.weight", buf, sizeof buf, &v,
                               NULL);
    ASSERT_TRUE(n && !strcmp(n, "transformer.resblocks.3.mlp.c_proj.weight") && v.split == 0);
    ASSERT_TRUE(
        !sdw_openclip_text_name("text_model.embeddings.position_ids", buf, sizeof buf, &v, NULL));
    ASSERT_TRUE(!sdw_openclip_text_name("text_model.encoder.layers.x.mlp.fc2.weight", buf,
                                        sizeof buf, &v, NULL));
    ASSERT_TRUE(!sdw_openclip_text_name("text_model.encoder.layers.1.self_attn.q_proj.scale", buf,
                                        sizeof buf, &v, NULL));
    /* too small a buffer: no name rather than a cut one */
    ASSERT_TRUE(!sdw_openclip_text_name("text_model.encoder.layers.1.layer_norm1.weight", buf, 8,
                                        &v, NULL));
}

int main(void) {
    RUN(test_names);
    RUN(test_sd2_single_file);
    RUN(test_sdxl_single_file);
    return sdw_test_finish();
}
