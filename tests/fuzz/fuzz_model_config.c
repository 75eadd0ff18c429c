/* libFuzzer target: the model config readers (io/json_config.h underneath): a diffusers VAE,
 * UNet, tiny autoencoder (TAESD) and scheduler config, a transformers CLIP text / T5 encoder
 * config, a FLUX and an SD3 transformer config, each with the family's validation. The first
 * byte picks the reader; the rest is the file's text. Every input must load or fail with a
 * message naming the file and the key; never crash, leak or read out of bounds (ASan + UBSan). */
#include "fuzz_tmp.h"
#include "models/flux/flux_transformer.h"
#include "models/sd3/sd3_transformer.h"
#include "models/stable_diffusion/unet_config.h"
#include "nn/taesd.h"
#include "nn/vae.h"
#include "sampling/scheduler.h"
#include "text/clip_text.h"
#include "text/t5_text.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { VAE, UNET, TAESD, SCHEDULER, CLIP, T5, FLUX, SD3, N_READERS };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int which = data[0] % N_READERS;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    fuzz_dir("config");
    /* the parsers that take text get it NUL-terminated, the file readers a file */
    char *z = sdw_xmalloc(len + 1);
    memcpy(z, text, len);
    z[len] = 0;
    const char *path = fuzz_put(0, "config.json", text, len);
    sdw_error err = {0};
    sdw_status s;
    switch (which) {
    case VAE: {
        sdw_vae_config c;
        s = sdw_vae_config_parse(z, len, &c, &err);
        break;
    }
    case UNET: {
        sdw_unet_config c;
        s = sdw_unet_config_parse(z, &c, &err);
        if (!s) s = sdw_unet_config_validate(&c, &err);
        break;
    }
    case TAESD: {
        sdw_taesd_config c;
        s = sdw_taesd_config_parse(z, len, &c, &err);
        break;
    }
    case SCHEDULER: {
        sdw_scheduler_config c;
        s = sdw_scheduler_config_load(path, &c, &err);
        break;
    }
    case CLIP: {
        sdw_clip_text_config c;
        s = sdw_clip_text_config_from_json(path, &c, &err);
        break;
    }
    case T5: {
        sdw_t5_text_config c;
        s = sdw_t5_text_config_load(path, &c, &err);
        break;
    }
    case FLUX: {
        sdw_flux_config c;
        s = sdw_flux_config_load(path, &c, &err);
        if (!s) s = sdw_flux_config_validate(&c, &err);
        break;
    }
    default: {
        sdw_sd3_config c;
        s = sdw_sd3_config_load(path, &c, &err);
        if (!s) s = sdw_sd3_config_validate(&c, &err);
        break;
    }
    }
    SDW_ASSERT(s == SDW_OK || err.msg[0] != 0);
    free(z);
    return 0;
}
