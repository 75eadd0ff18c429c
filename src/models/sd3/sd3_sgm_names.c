/* SD3 transformer: Stability single-file names <- diffusers names (see sd3_sgm_names.h). */
#include "models/sd3/sd3_sgm_names.h"

#include "models/sd3/sd3_transformer.h"

#include <stdio.h>
#include <string.h>

/* One correspondence. A diffusers name ending in '.' is a module prefix: the rest of the name
 * (weight / bias) carries over. split/first/count select rows of a fused tensor (0 = whole). */
typedef struct rule {
    const char *diffusers, *sgm;
    int split, first, count;
} rule;
/* clang-format off */
#define WHOLE(d, s) {d, s, 0, 0, 0}
#define PART(d, s, split, first, count) {d, s, split, first, count}
/* clang-format on */

static const rule k_top[] = {
    WHOLE("pos_embed.pos_embed", "pos_embed"),
    WHOLE("pos_embed.proj.", "x_embedder.proj."),
    WHOLE("time_text_embed.timestep_embedder.linear_1.", "t_embedder.mlp.0."),
    WHOLE("time_text_embed.timestep_embedder.linear_2.", "t_embedder.mlp.2."),
    WHOLE("time_text_embed.text_embedder.linear_1.", "y_embedder.mlp.0."),
    WHOLE("time_text_embed.text_embedder.linear_2.", "y_embedder.mlp.2."),
    WHOLE("context_embedder.", "context_embedder."),
    WHOLE("proj_out.", "final_layer.linear."),
    /* adaLN_modulation.1's output is (shift, scale); diffusers' (scale, shift) */
    PART(SDW_SD3_NORM_OUT_SCALE ".", "final_layer.adaLN_modulation.1.", 2, 1, 1),
    PART(SDW_SD3_NORM_OUT_SHIFT ".", "final_layer.adaLN_modulation.1.", 2, 0, 1),
};

/* transformer_blocks.N.<rule> -> joint_blocks.N.<rule> */
static const rule k_block[] = {
    WHOLE("norm1.linear.", "x_block.adaLN_modulation.1."),
    /* AdaLayerNormZero of the context (every block but the last): same chunk order */
    WHOLE("norm1_context.linear.", "context_block.adaLN_modulation.1."),
    /* the last block's AdaLayerNormContinuous: halves swapped as final_layer's */
    PART(SDW_SD3_CONTEXT_NORM_SCALE ".", "context_block.adaLN_modulation.1.", 2, 1, 1),
    PART(SDW_SD3_CONTEXT_NORM_SHIFT ".", "context_block.adaLN_modulation.1.", 2, 0, 1),
    PART("attn.to_q.", "x_block.attn.qkv.", 3, 0, 1),
    PART("attn.to_k.", "x_block.attn.qkv.", 3, 1, 1),
    PART("attn.to_v.", "x_block.attn.qkv.", 3, 2, 1),
    PART("attn.add_q_proj.", "context_block.attn.qkv.", 3, 0, 1),
    PART("attn.add_k_proj.", "context_block.attn.qkv.", 3, 1, 1),
    PART("attn.add_v_proj.", "context_block.attn.qkv.", 3, 2, 1),
    WHOLE("attn.norm_q.weight", "x_block.attn.ln_q.weight"),
    WHOLE("attn.norm_k.weight", "x_block.attn.ln_k.weight"),
    WHOLE("attn.norm_added_q.weight", "context_block.attn.ln_q.weight"),
    WHOLE("attn.norm_added_k.weight", "context_block.attn.ln_k.weight"),
    WHOLE("attn.to_out.0.", "x_block.attn.proj."),
    WHOLE("attn.to_add_out.", "context_block.attn.proj."),
    WHOLE("ff.net.0.proj.", "x_block.mlp.fc1."),
    WHOLE("ff.net.2.", "x_block.mlp.fc2."),
    WHOLE("ff_context.net.0.proj.", "context_block.mlp.fc1."),
    WHOLE("ff_context.net.2.", "context_block.mlp.fc2."),
    /* SD3.5 Medium's second image attention (MMDiT-X): mapped so that config inference sees
     * it and refuses the architecture by name */
    PART("attn2.to_q.", "x_block.attn2.qkv.", 3, 0, 1),
    PART("attn2.to_k.", "x_block.attn2.qkv.", 3, 1, 1),
    PART("attn2.to_v.", "x_block.attn2.qkv.", 3, 2, 1),
    WHOLE("attn2.norm_q.weight", "x_block.attn2.ln_q.weight"),
    WHOLE("attn2.norm_k.weight", "x_block.attn2.ln_k.weight"),
    WHOLE("attn2.to_out.0.", "x_block.attn2.proj."),
};

/* Applies the first rule of rules[0..n) matching `rest` under the Stability block prefix
 * `head` ("" or "joint_blocks.N."); NULL when none matches or the name does not fit. */
static const char *apply(const rule *rules, size_t n, const char *head, const char *rest, char *buf,
                         size_t cap, sdw_weight_view *view) {
    for (size_t i = 0; i < n; i++) {
        const rule *r = &rules[i];
        const size_t len = strlen(r->diffusers);
        const bool prefix = r->diffusers[len - 1] == '.';
        if (prefix ? strncmp(rest, r->diffusers, len) != 0 : strcmp(rest, r->diffusers) != 0)
            continue;
        const int k = snprintf(buf, cap, "%s%s%s", head, r->sgm, prefix ? rest + len : "");
        if (k < 0 || (size_t)k >= cap) return NULL;
        view->split = r->split;
        view->first = r->first;
        view->count = r->count;
        return buf;
    }
    return NULL;
}

const char *sdw_sd3_sgm_name(const char *name, char *buf, size_t cap, sdw_weight_view *view,
                             void *user) {
    (void)user;
    int i, at = 0;
    if (sscanf(name, "transformer_blocks.%d.%n", &i, &at) == 1 && at > 0 && i >= 0) {
        char head[64];
        snprintf(head, sizeof head, "joint_blocks.%d.", i);
        return apply(k_block, SDW_ARRAY_LEN(k_block), head, name + at, buf, cap, view);
    }
    return apply(k_top, SDW_ARRAY_LEN(k_top), "", name, buf, cap, view);
}

bool sdw_sd3_sgm_detect(const sdw_st_file *f, const char **prefix) {
    static const char *const prefixes[] = {"model.diffusion_model.", ""};
    /* tensors only Stability's MMDiT has (DiT-style embedders with a context_embedder), in
     * every SD3 / SD3.5 variant; none inside a block, so that a file missing a block is still
     * recognised and its gap named by sdw_sd3_config_infer */
    static const char *const marks[] = {"x_embedder.proj.weight", "context_embedder.weight",
                                        "t_embedder.mlp.0.weight",
                                        "final_layer.adaLN_modulation.1.weight"};
    for (size_t p = 0; p < SDW_ARRAY_LEN(prefixes); p++) {
        bool all = true;
        for (size_t m = 0; m < SDW_ARRAY_LEN(marks) && all; m++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s", prefixes[p], marks[m]);
            all = sdw_st_find(f, name) != NULL;
        }
        if (all) {
            if (prefix) *prefix = prefixes[p];
            return true;
        }
    }
    return false;
}
