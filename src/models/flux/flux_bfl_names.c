/* FLUX transformer: BFL single-file names <- diffusers names (see flux_bfl_names.h). */
#include "models/flux/flux_bfl_names.h"

#include "models/flux/flux_transformer.h"

#include <stdio.h>
#include <string.h>

/* One correspondence. A diffusers name ending in '.' is a module prefix: the rest of the name
 * (weight / bias) carries over. split/first/count select rows of a fused BFL tensor (0 = whole). */
typedef struct rule {
    const char *diffusers, *bfl;
    int split, first, count;
} rule;
/* clang-format off */
#define WHOLE(d, b) {d, b, 0, 0, 0}
#define PART(d, b, split, first, count) {d, b, split, first, count}
/* clang-format on */

static const rule k_top[] = {
    WHOLE("x_embedder.", "img_in."),
    WHOLE("context_embedder.", "txt_in."),
    WHOLE("time_text_embed.timestep_embedder.linear_1.", "time_in.in_layer."),
    WHOLE("time_text_embed.timestep_embedder.linear_2.", "time_in.out_layer."),
    WHOLE("time_text_embed.text_embedder.linear_1.", "vector_in.in_layer."),
    WHOLE("time_text_embed.text_embedder.linear_2.", "vector_in.out_layer."),
    WHOLE("time_text_embed.guidance_embedder.linear_1.", "guidance_in.in_layer."),
    WHOLE("time_text_embed.guidance_embedder.linear_2.", "guidance_in.out_layer."),
    WHOLE("proj_out.", "final_layer.linear."),
    /* adaLN_modulation.1's output is (shift, scale); diffusers' (scale, shift) */
    PART(SDW_FLUX_NORM_OUT_SCALE ".", "final_layer.adaLN_modulation.1.", 2, 1, 1),
    PART(SDW_FLUX_NORM_OUT_SHIFT ".", "final_layer.adaLN_modulation.1.", 2, 0, 1),
};

/* transformer_blocks.N.<rule> -> double_blocks.N.<rule> */
static const rule k_double[] = {
    WHOLE("norm1.linear.", "img_mod.lin."),
    WHOLE("norm1_context.linear.", "txt_mod.lin."),
    PART("attn.to_q.", "img_attn.qkv.", 3, 0, 1),
    PART("attn.to_k.", "img_attn.qkv.", 3, 1, 1),
    PART("attn.to_v.", "img_attn.qkv.", 3, 2, 1),
    PART("attn.add_q_proj.", "txt_attn.qkv.", 3, 0, 1),
    PART("attn.add_k_proj.", "txt_attn.qkv.", 3, 1, 1),
    PART("attn.add_v_proj.", "txt_attn.qkv.", 3, 2, 1),
    WHOLE("attn.norm_q.weight", "img_attn.norm.query_norm.scale"),
    WHOLE("attn.norm_k.weight", "img_attn.norm.key_norm.scale"),
    WHOLE("attn.norm_added_q.weight", "txt_attn.norm.query_norm.scale"),
    WHOLE("attn.norm_added_k.weight", "txt_attn.norm.key_norm.scale"),
    WHOLE("attn.to_out.0.", "img_attn.proj."),
    WHOLE("attn.to_add_out.", "txt_attn.proj."),
    WHOLE("ff.net.0.proj.", "img_mlp.0."),
    WHOLE("ff.net.2.", "img_mlp.2."),
    WHOLE("ff_context.net.0.proj.", "txt_mlp.0."),
    WHOLE("ff_context.net.2.", "txt_mlp.2."),
};

/* single_transformer_blocks.N.<rule> -> single_blocks.N.<rule>. linear1's rows are q, k, v (D
 * each) and the MLP input (4·D): seven parts of D. */
static const rule k_single[] = {
    WHOLE("norm.linear.", "modulation.lin."),
    PART("attn.to_q.", "linear1.", 7, 0, 1),
    PART("attn.to_k.", "linear1.", 7, 1, 1),
    PART("attn.to_v.", "linear1.", 7, 2, 1),
    PART("proj_mlp.", "linear1.", 7, 3, 4),
    WHOLE("attn.norm_q.weight", "norm.query_norm.scale"),
    WHOLE("attn.norm_k.weight", "norm.key_norm.scale"),
    WHOLE("proj_out.", "linear2."),
};

/* Applies the first rule of rules[0..n) matching `rest` under the BFL block prefix `head`
 * ("" or "double_blocks.N."); NULL when none matches or the name does not fit. */
static const char *apply(const rule *rules, size_t n, const char *head, const char *rest, char *buf,
                         size_t cap, sdw_weight_view *view) {
    for (size_t i = 0; i < n; i++) {
        const rule *r = &rules[i];
        const size_t len = strlen(r->diffusers);
        const bool prefix = r->diffusers[len - 1] == '.';
        if (prefix ? strncmp(rest, r->diffusers, len) != 0 : strcmp(rest, r->diffusers) != 0)
            continue;
        const int k = snprintf(buf, cap, "%s%s%s", head, r->bfl, prefix ? rest + len : "");
        if (k < 0 || (size_t)k >= cap) return NULL;
        view->split = r->split;
        view->first = r->first;
        view->count = r->count;
        return buf;
    }
    return NULL;
}

const char *sdw_flux_bfl_name(const char *name, char *buf, size_t cap, sdw_weight_view *view,
                              void *user) {
    (void)user;
    char head[64];
    int i, at = 0;
    if (sscanf(name, "transformer_blocks.%d.%n", &i, &at) == 1 && at > 0 && i >= 0) {
        snprintf(head, sizeof head, "double_blocks.%d.", i);
        return apply(k_double, sizeof k_double / sizeof *k_double, head, name + at, buf, cap, view);
    }
    at = 0;
    if (sscanf(name, "single_transformer_blocks.%d.%n", &i, &at) == 1 && at > 0 && i >= 0) {
        snprintf(head, sizeof head, "single_blocks.%d.", i);
        return apply(k_single, sizeof k_single / sizeof *k_single, head, name + at, buf, cap, view);
    }
    return apply(k_top, sizeof k_top / sizeof *k_top, "", name, buf, cap, view);
}

bool sdw_flux_bfl_detect(const sdw_st_file *f, const char **prefix) {
    static const char *const prefixes[] = {"", "model.diffusion_model."};
    /* tensors only a BFL FLUX transformer has, whatever its variant */
    static const char *const marks[] = {"img_in.weight", "txt_in.weight", "time_in.in_layer.weight",
                                        "final_layer.linear.weight"};
    for (size_t p = 0; p < sizeof prefixes / sizeof *prefixes; p++) {
        bool all = true;
        for (size_t m = 0; m < sizeof marks / sizeof *marks && all; m++) {
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
