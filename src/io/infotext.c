/* io/infotext.c — see infotext.h. */
#include "io/infotext.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *ours, *a1111;
} g_sampler_names[] = {
    {"ddim", "DDIM"},       {"pndm", "PLMS"},         {"euler", "Euler"},
    {"euler_a", "Euler a"}, {"dpm++2m", "DPM++ 2M"},  {"heun", "Heun"},
    {"lms", "LMS"},         {"unipc", "UniPC"},       {"lcm", "LCM"},
};

const char *sdw_sampler_a1111_name(const char *sampler) {
    for (size_t i = 0; i < sizeof g_sampler_names / sizeof g_sampler_names[0]; i++)
        if (strcmp(g_sampler_names[i].ours, sampler) == 0) return g_sampler_names[i].a1111;
    return sampler;
}

/* Appends printf output at *n, keeping buf terminated when it runs out. */
static void put(char *buf, size_t cap, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t cap, size_t *n, const char *fmt, ...) {
    if (*n >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (w > 0) *n += (size_t)w < cap - *n ? (size_t)w : cap - *n - 1;
}

void sdw_infotext_format(const sdw_request *req, const sdw_result_info *info, const char *model,
                         char *buf, size_t cap) {
    size_t n = 0;
    if (!cap) return;
    buf[0] = 0;
    put(buf, cap, &n, "%s\n", req->prompt ? req->prompt : "");
    if (req->negative_prompt && *req->negative_prompt)
        put(buf, cap, &n, "Negative prompt: %s\n", req->negative_prompt);
    put(buf, cap, &n, "Steps: %d, Sampler: %s, ", info->steps, sdw_sampler_a1111_name(info->sampler));
    if (strcmp(info->scheduler, "karras") == 0) put(buf, cap, &n, "Schedule type: Karras, ");
    /* A guidance-embedding model (FLUX.1 dev) runs no CFG: Forge writes CFG scale 1 and the
     * embedded value as "Distilled CFG Scale". */
    if (info->guidance_embedded)
        put(buf, cap, &n, "CFG scale: 1, Distilled CFG Scale: %g, ", (double)info->guidance);
    else
        put(buf, cap, &n, "CFG scale: %g, ", (double)info->guidance);
    put(buf, cap, &n, "Seed: %lld, Size: %dx%d", (long long)info->seed, info->width, info->height);
    if (model && *model) { /* A1111 names the checkpoint by its file stem */
        const char *base = strrchr(model, '/');
        base = base && base[1] ? base + 1 : model;
        const char *dot = strrchr(base, '.');
        int len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
        if (base != model && !base[0]) len = 0;
        put(buf, cap, &n, ", Model: %.*s", len, base);
    }
    if (info->strength > 0) put(buf, cap, &n, ", Denoising strength: %g", info->strength);
    /* A1111 draws noise on the GPU (Philox) by default and labels CPU draws. */
    if (req->rng == SDW_RNG_TORCH) put(buf, cap, &n, ", RNG: CPU");
    /* A1111's name for a decode by the tiny autoencoder (its sd_vae_decode_method). A1111 has
     * no VAE tiling of its own: ours is named, saying when the size chose it. */
    if (info->taesd_decoded) put(buf, cap, &n, ", VAE Decoder: TAESD");
    if (info->vae_tiled)
        put(buf, cap, &n, ", VAE tiling: %s", req->vae_tiling == SDW_TILING_AUTO ? "auto" : "on");
    /* The hires fix as A1111's extra_generation_params has it ("Size" above is the first
     * pass's, "Denoising strength" the second's): the scale or the resize, the second pass's
     * steps when they were given, the upscaler. */
    if (info->hires) {
        const sdw_hires *hr = &req->hires;
        if (hr->resize_width || hr->resize_height)
            put(buf, cap, &n, ", Hires resize: %dx%d", hr->resize_width, hr->resize_height);
        else
            put(buf, cap, &n, ", Hires upscale: %g", hr->scale);
        if (hr->steps) put(buf, cap, &n, ", Hires steps: %d", hr->steps);
        put(buf, cap, &n, ", Hires upscaler: %s", sdw_upscaler_str(hr->upscaler));
    }
}
