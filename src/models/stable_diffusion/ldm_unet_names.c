/* diffusers UNet2DConditionModel names -> LDM (CompVis) / SGM (Stability) UNet names. */
#include "models/stable_diffusion/ldm_unet_names.h"

#include "models/stable_diffusion/unet_config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* snprintf into buf; NULL when it does not fit. */
static const char *put(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *put(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return (k < 0 || (size_t)k >= cap) ? NULL : buf;
}

/* ResnetBlock2D member -> LDM ResBlock member (in_layers = GroupNorm, SiLU, conv; out_layers =
 * GroupNorm, SiLU, Dropout, conv). Returns the LDM spelling and sets *tail past the member. */
static const char *resnet_member(const char *rest, const char **tail) {
    static const struct {
        const char *diffusers, *ldm;
    } map[] = {
        {"norm1.", "in_layers.0."},   {"conv1.", "in_layers.2."},
        {"time_emb_proj.", "emb_layers.1."}, {"norm2.", "out_layers.0."},
        {"conv2.", "out_layers.3."},  {"conv_shortcut.", "skip_connection."},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        size_t n = strlen(map[i].diffusers);
        if (!strncmp(rest, map[i].diffusers, n)) {
            *tail = rest + n;
            return map[i].ldm;
        }
    }
    return NULL;
}

/* First input_blocks index of down level i (input_blocks.0 is conv_in). */
static int down_start(const sdw_unet_config *c, int i) {
    int k = 1;
    for (int l = 0; l < i; l++) k += c->layers_per_block[l] + 1;
    return k;
}

/* First output_blocks index of up level i. */
static int up_start(const sdw_unet_config *c, int i) {
    int k = 0;
    for (int l = 0; l < i; l++) k += c->layers_per_block[c->n_levels - 1 - l] + 1;
    return k;
}

/* Matches "<head>%d.<mid>%d." style prefixes: returns the rest after the match or NULL. */
static const char *match2(const char *name, const char *fmt, int *a, int *b) {
    int pos = -1;
    if (b) sscanf(name, fmt, a, b, &pos);
    else sscanf(name, fmt, a, &pos);
    return pos < 0 ? NULL : name + pos;
}

static const char *starts(const char *name, const char *head) {
    size_t n = strlen(head);
    return strncmp(name, head, n) ? NULL : name + n;
}

const char *sdw_ldm_unet_name(const char *name, char *buf, size_t cap, void *user) {
    const sdw_unet_config *c = user;
    const char *rest, *tail, *m;
    int i, j;
    int n = c->n_levels;

    if ((rest = starts(name, "conv_in."))) return put(buf, cap, "input_blocks.0.0.%s", rest);
    if ((rest = starts(name, "time_embedding.linear_1."))) return put(buf, cap, "time_embed.0.%s", rest);
    if ((rest = starts(name, "time_embedding.linear_2."))) return put(buf, cap, "time_embed.2.%s", rest);
    if ((rest = starts(name, "add_embedding.linear_1."))) return put(buf, cap, "label_emb.0.0.%s", rest);
    if ((rest = starts(name, "add_embedding.linear_2."))) return put(buf, cap, "label_emb.0.2.%s", rest);
    if ((rest = starts(name, "conv_norm_out."))) return put(buf, cap, "out.0.%s", rest);
    if ((rest = starts(name, "conv_out."))) return put(buf, cap, "out.2.%s", rest);

    if ((rest = match2(name, "down_blocks.%d.resnets.%d.%n", &i, &j))) {
        if (i < 0 || i >= n || j < 0 || j >= c->layers_per_block[i]) return NULL;
        if (!(m = resnet_member(rest, &tail))) return NULL;
        return put(buf, cap, "input_blocks.%d.0.%s%s", down_start(c, i) + j, m, tail);
    }
    if ((rest = match2(name, "down_blocks.%d.attentions.%d.%n", &i, &j))) {
        if (i < 0 || i >= n || !c->down_attn[i] || j < 0 || j >= c->layers_per_block[i])
            return NULL;
        return put(buf, cap, "input_blocks.%d.1.%s", down_start(c, i) + j, rest);
    }
    if ((rest = match2(name, "down_blocks.%d.downsamplers.0.conv.%n", &i, NULL))) {
        if (i < 0 || i >= n - 1) return NULL;
        return put(buf, cap, "input_blocks.%d.0.op.%s", down_start(c, i) + c->layers_per_block[i],
                   rest);
    }

    /* middle_block = resnet, spatial transformer, resnet. */
    if ((rest = match2(name, "mid_block.resnets.%d.%n", &j, NULL))) {
        if (!c->has_mid || j < 0 || j > 1 || !(m = resnet_member(rest, &tail))) return NULL;
        return put(buf, cap, "middle_block.%d.%s%s", 2 * j, m, tail);
    }
    if ((rest = starts(name, "mid_block.attentions.0.")))
        return c->has_mid ? put(buf, cap, "middle_block.1.%s", rest) : NULL;

    /* Each output block is [resnet, (spatial transformer), (upsampler)]. */
    if ((rest = match2(name, "up_blocks.%d.resnets.%d.%n", &i, &j))) {
        if (i < 0 || i >= n || j < 0 || j > c->layers_per_block[n - 1 - i]) return NULL;
        if (!(m = resnet_member(rest, &tail))) return NULL;
        return put(buf, cap, "output_blocks.%d.0.%s%s", up_start(c, i) + j, m, tail);
    }
    if ((rest = match2(name, "up_blocks.%d.attentions.%d.%n", &i, &j))) {
        if (i < 0 || i >= n || !c->up_attn[i] || j < 0 || j > c->layers_per_block[n - 1 - i])
            return NULL;
        return put(buf, cap, "output_blocks.%d.1.%s", up_start(c, i) + j, rest);
    }
    if ((rest = match2(name, "up_blocks.%d.upsamplers.0.conv.%n", &i, NULL))) {
        if (i < 0 || i >= n - 1) return NULL;
        return put(buf, cap, "output_blocks.%d.%d.conv.%s",
                   up_start(c, i) + c->layers_per_block[n - 1 - i], c->up_attn[i] ? 2 : 1, rest);
    }
    return NULL;
}
