/* OpenCLIP text tower names <- transformers CLIPTextModel names (see openclip_names.h). The
 * correspondence is the one diffusers' convert_open_clip_checkpoint and the SGM -> diffusers
 * converters apply. */
#include "text/openclip_names.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Per-layer suffixes: transformers name -> OpenCLIP name. */
static const struct {
    const char *hf, *oc;
} k_layer[] = {
    {"layer_norm1.", "ln_1."},
    {"layer_norm2.", "ln_2."},
    {"self_attn.out_proj.", "attn.out_proj."},
    {"mlp.fc1.", "mlp.c_fc."},
    {"mlp.fc2.", "mlp.c_proj."},
};

static const char *put(char *buf, size_t cap, const char *s) {
    return strlen(s) < cap ? strcpy(buf, s) : NULL;
}

static const char *put_layer(char *buf, size_t cap, int layer, const char *a, const char *b) {
    int k = snprintf(buf, cap, "transformer.resblocks.%d.%s%s", layer, a, b);
    return k >= 0 && (size_t)k < cap ? buf : NULL;
}

const char *sdw_openclip_text_name(const char *name, char *buf, size_t cap, sdw_weight_view *view,
                                   void *user) {
    (void)user;
    static const struct {
        const char *hf, *oc;
    } whole[] = {
        {"text_model.embeddings.token_embedding.weight", "token_embedding.weight"},
        {"text_model.embeddings.position_embedding.weight", "positional_embedding"},
        {"text_model.final_layer_norm.weight", "ln_final.weight"},
        {"text_model.final_layer_norm.bias", "ln_final.bias"},
    };
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++)
        if (!strcmp(name, whole[i].hf)) return put(buf, cap, whole[i].oc);
    if (!strcmp(name, "text_projection.weight")) {
        view->transpose = true;
        return put(buf, cap, "text_projection");
    }
    int layer, at = 0;
    if (sscanf(name, "text_model.encoder.layers.%d.%n", &layer, &at) != 1 || at == 0 || layer < 0)
        return NULL;
    const char *rest = name + at;
    for (size_t i = 0; i < sizeof k_layer / sizeof k_layer[0]; i++) {
        size_t n = strlen(k_layer[i].hf);
        if (!strncmp(rest, k_layer[i].hf, n))
            return put_layer(buf, cap, layer, k_layer[i].oc, rest + n);
    }
    /* q, k, v are row blocks 0, 1, 2 of the fused input projection */
    static const char qkv[] = "qkv";
    for (int j = 0; j < 3; j++) {
        char w[32], b[32];
        snprintf(w, sizeof w, "self_attn.%c_proj.weight", qkv[j]);
        snprintf(b, sizeof b, "self_attn.%c_proj.bias", qkv[j]);
        bool is_w = !strcmp(rest, w), is_b = !strcmp(rest, b);
        if (!is_w && !is_b) continue;
        view->split = 3;
        view->first = j;
        return put_layer(buf, cap, layer, is_w ? "attn.in_proj_weight" : "attn.in_proj_bias", "");
    }
    return NULL;
}
