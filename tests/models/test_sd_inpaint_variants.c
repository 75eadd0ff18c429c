/* A 9-channel UNet (latents + mask + masked-image latents) makes the inpainting variant of every
 * version, not only SD 1.x (tiny-sd15-inpaint has a fixture): here tiny-sd2 and tiny-sdxl are
 * widened to 9 input channels (conv_in gets 5 more input channels, config in_channels 9, the
 * other folders linked), and each must load as its `-inpaint` variant with inpainting but not
 * text-to-image capabilities, refuse text alone with a clear error, and inpaint — through the
 * same family code as SD 1.x (SDXL: with its text_time conditioning). */
#include "sdw_test.h"

#include "io/image.h"
#include "io/png.h"
#include "io/safetensors.h"

#include <dirent.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writes src's tensors to dst as f32, conv_in.weight [C, 4, 3, 3] widened to [C, 9, 3, 3] (the
 * new channels small deterministic values, so the mask and masked image matter). */
static sdw_status widen_unet(const char *src, const char *dst, sdw_error *err) {
    sdw_st_file *f = NULL;
    sdw_st_writer *w = NULL;
    sdw_status s = sdw_st_open(src, &f, err);
    if (!s) s = sdw_st_writer_create(dst, &w, err);
    if (s) {
        sdw_st_close(f);
        return s;
    }
    for (int i = 0; i < sdw_st_count(f); i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        int64_t shape[SDW_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (!strcmp(t->name, "conv_in.weight")) shape[1] = 9;
        sdw_st_writer_add(w, t->name, SDW_DTYPE_F32, t->n_dims, shape);
    }
    s = sdw_st_writer_begin(w, err);
    for (int i = 0; !s && i < sdw_st_count(f); i++) {
        const sdw_st_tensor *t = sdw_st_at(f, i);
        float *v = malloc(sizeof(float) * (t->n_elems ? t->n_elems : 1));
        sdw_convert_to_f32(t->dtype, t->data, v, t->n_elems);
        if (!strcmp(t->name, "conv_in.weight")) {
            const int64_t co = t->shape[0], k = t->shape[2] * t->shape[3];
            float *wide = malloc(sizeof(float) * (size_t)(co * 9 * k));
            for (int64_t o = 0; o < co; o++)
                for (int64_t c = 0; c < 9; c++)
                    for (int64_t j = 0; j < k; j++)
                        wide[(o * 9 + c) * k + j] =
                            c < 4 ? v[(o * 4 + c) * k + j]
                                  : 0.05f * (float)((o * 31 + c * 7 + j * 3) % 17 - 8) / 8.0f;
            free(v);
            v = wide;
        }
        s = sdw_st_writer_write(w, v, err);
        free(v);
    }
    sdw_status fs = sdw_st_writer_finish(w, err);
    sdw_st_close(f);
    return s ? s : fs;
}

/* tmp/<name>: every entry of models/<model> linked, except unet/ (widened, config in_channels 9).
 */
static const char *make_inpaint_copy(const char *model, const char *name) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", sdw_test_tmpdir(), name);
    if (mkdir(dir, 0755) != 0) return NULL;
    const char *src = sdw_test_path("models/%s", model);
    DIR *d = opendir(src);
    if (!d) return NULL;
    struct dirent *e;
    char a[2048], b[2048];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "unet")) continue;
        snprintf(a, sizeof a, "%s/%s", src, e->d_name);
        snprintf(b, sizeof b, "%s/%s", dir, e->d_name);
        if (symlink(a, b) != 0) {
            closedir(d);
            return NULL;
        }
    }
    closedir(d);
    snprintf(b, sizeof b, "%s/unet", dir);
    if (mkdir(b, 0755) != 0) return NULL;
    json_t *cfg = json_load_file(sdw_test_path("models/%s/unet/config.json", model), 0, NULL);
    if (!cfg) return NULL;
    json_object_set_new(cfg, "in_channels", json_integer(9));
    snprintf(b, sizeof b, "%s/unet/config.json", dir);
    int rc = json_dump_file(cfg, b, JSON_INDENT(1));
    json_decref(cfg);
    if (rc) return NULL;
    snprintf(a, sizeof a, "%s/unet/diffusion_pytorch_model.safetensors", src);
    snprintf(b, sizeof b, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    sdw_error err = {0};
    if (widen_unet(a, b, &err)) {
        fprintf(stderr, "widen: %s\n", err.msg);
        return NULL;
    }
    return dir;
}

static void check_inpaint_variant(const char *model, const char *golden, const char *variant) {
    char name[64];
    snprintf(name, sizeof name, "%s-inpaint", model);
    const char *dir = make_inpaint_copy(model, name);
    ASSERT_TRUE(dir != NULL);
    sdw_error err = {0};
    sdw_image_model *m = NULL;
    sdw_load_options opts = sdw_load_options_default();
    ASSERT_OK(sdw_model_load(dir, &opts, &m, &err), &err);
    fprintf(stderr, "  %s: variant %s\n", name, sdw_model_variant(m));
    const sdw_capabilities *c = sdw_model_capabilities(m);
    bool ok = !strcmp(sdw_model_variant(m), variant) && !c->txt2img && c->inpainting;

    /* Text alone is refused, naming why; inpainting runs at the golden case's settings. */
    sdw_request r = sdw_request_default();
    r.prompt = "a photo of a cat";
    r.width = r.height = 64;
    r.steps = 2;
    r.seed = 1;
    sdw_image out = {0}, init = {0}, mask = {0};
    sdw_status txt = sdw_model_generate(m, &r, NULL, NULL, &out, NULL, &err);
    bool refused = txt == SDW_E_UNSUPPORTED && strstr(err.msg, "inpainting model") != NULL;
    sdw_status s = sdw_image_load(sdw_test_path("golden/%s/init_image.png", golden), &init, &err);
    if (!s) s = sdw_image_load(sdw_test_path("golden/%s/mask_image.png", golden), &mask, &err);
    if (!s) {
        r.init_image = &init;
        r.mask = &mask;
        r.strength = 1.0;
        s = sdw_model_generate(m, &r, NULL, NULL, &out, NULL, &err);
    }
    const bool sized = !s && out.width == 64 && out.height == 64 && out.channels == 3;
    sdw_image_free(&out);
    sdw_image_free(&init);
    sdw_image_free(&mask);
    sdw_model_destroy(m);
    ASSERT_TRUE(ok);
    ASSERT_TRUE(refused);
    ASSERT_OK(s, &err);
    ASSERT_TRUE(sized);
}

static void test_sd2_inpaint(void) {
    /* tiny-sd2's scheduler config is v-prediction: the folder decides, as in diffusers. */
    check_inpaint_variant("tiny-sd2", "tiny-sd15/inpaint-ddim", "v2-v-inpaint");
}

static void test_sdxl_inpaint(void) {
    check_inpaint_variant("tiny-sdxl", "tiny-sdxl/inpaint-ddim", "xl-inpaint");
}

int main(void) {
    RUN(test_sd2_inpaint);
    RUN(test_sdxl_inpaint);
    return sdw_test_finish();
}
