/* nn/ldm_vae_names.c — see ldm_vae_names.h. A small hand-written parser over the dotted name:
 * the diffusers layout has only a handful of module paths, so a table of patterns would be
 * longer than the code. */
#include "nn/ldm_vae_names.h"

#include "core/common.h"
#include "nn/vae.h"

#include <stdarg.h>
#include <string.h>

/* Consumes literal `lit` at *p. */
static bool eat(const char **p, const char *lit) {
    size_t n = strlen(lit);
    if (strncmp(*p, lit, n) != 0) return false;
    *p += n;
    return true;
}

/* Consumes a small decimal index followed by '.'. */
static bool eat_index(const char **p, int *out) {
    const char *s = *p;
    int v = 0, digits = 0;
    while (*s >= '0' && *s <= '9' && digits < 4) v = v * 10 + (*s++ - '0'), digits++;
    if (digits == 0 || *s != '.') return false;
    *out = v;
    *p = s + 1;
    return true;
}

/* A resnet's sub-module, "conv1.weight" etc.; returns the LDM spelling of the part before the
 * final ".weight"/".bias" and leaves *p at that part's end. */
static const char *resnet_part(const char **p) {
    static const char *same[] = {"norm1", "conv1", "norm2", "conv2"};
    for (size_t i = 0; i < SDW_ARRAY_LEN(same); i++)
        if (eat(p, same[i])) return same[i];
    if (eat(p, "conv_shortcut")) return "nin_shortcut";
    return NULL;
}

/* Attention sub-module; old diffusers names (query/key/value/proj_attn) map the same way. */
static const char *attn_part(const char **p) {
    static const char *map[][2] = {
        {"group_norm", "norm"}, {"to_q", "q"},     {"to_k", "k"},         {"to_v", "v"},
        {"to_out.0", "proj_out"}, {"query", "q"},  {"key", "k"},          {"value", "v"},
        {"proj_attn", "proj_out"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(map); i++)
        if (eat(p, map[i][0])) return map[i][1];
    return NULL;
}

/* Only ".weight" / ".bias" may follow a module path. */
static bool valid_tail(const char *t) { return !strcmp(t, ".weight") || !strcmp(t, ".bias"); }

static const char *emit(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *emit(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    SDW_ASSERT(n >= 0 && (size_t)n < cap); /* callers pass name buffers of ample size */
    return buf;
}

const char *sdw_ldm_vae_name(const char *name, char *buf, size_t cap, void *user) {
    const sdw_vae_config *cfg = user;
    SDW_ASSERT(cfg && name && buf);
    const char *p = name;

    if (eat(&p, "quant_conv") || eat(&p, "post_quant_conv"))
        return valid_tail(p) ? emit(buf, cap, "%s", name) : NULL;

    const char *side;
    bool is_enc;
    if (eat(&p, "encoder.")) side = "encoder", is_enc = true;
    else if (eat(&p, "decoder.")) side = "decoder", is_enc = false;
    else return NULL;

    const char *part;
    int n, m;
    if (eat(&p, "conv_in") || eat(&p, "conv_out")) {
        return valid_tail(p) ? emit(buf, cap, "%s", name) : NULL;
    } else if (eat(&p, "conv_norm_out")) {
        return valid_tail(p) ? emit(buf, cap, "%s.norm_out%s", side, p) : NULL;
    } else if (eat(&p, "mid_block.resnets.")) {
        if (!eat_index(&p, &n) || n > 1 || !(part = resnet_part(&p)) || !valid_tail(p)) return NULL;
        return emit(buf, cap, "%s.mid.block_%d.%s%s", side, n + 1, part, p);
    } else if (eat(&p, "mid_block.attentions.0.")) {
        if (!(part = attn_part(&p)) || !valid_tail(p)) return NULL;
        return emit(buf, cap, "%s.mid.attn_1.%s%s", side, part, p);
    } else if (is_enc && eat(&p, "down_blocks.")) {
        if (!eat_index(&p, &n) || n >= cfg->n_levels) return NULL;
        if (eat(&p, "downsamplers.0.conv"))
            return valid_tail(p) ? emit(buf, cap, "encoder.down.%d.downsample.conv%s", n, p) : NULL;
        if (!eat(&p, "resnets.") || !eat_index(&p, &m) || !(part = resnet_part(&p)) ||
            !valid_tail(p))
            return NULL;
        return emit(buf, cap, "encoder.down.%d.block.%d.%s%s", n, m, part, p);
    } else if (!is_enc && eat(&p, "up_blocks.")) {
        if (!eat_index(&p, &n) || n >= cfg->n_levels) return NULL;
        int level = cfg->n_levels - 1 - n; /* LDM counts from the full-resolution level */
        if (eat(&p, "upsamplers.0.conv"))
            return valid_tail(p) ? emit(buf, cap, "decoder.up.%d.upsample.conv%s", level, p)
                                 : NULL;
        if (!eat(&p, "resnets.") || !eat_index(&p, &m) || !(part = resnet_part(&p)) ||
            !valid_tail(p))
            return NULL;
        return emit(buf, cap, "decoder.up.%d.block.%d.%s%s", level, m, part, p);
    }
    return NULL;
}
