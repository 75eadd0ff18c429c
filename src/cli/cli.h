/* cli/cli.h — what the sdw commands share: fatal usage errors, number arguments, and the options
 * that say which model to load and how (-m, --config, --precision, -t and the family options
 * such as --tokenizer, --vae), parsed once for `generate`, `info`, `tokenize` and `serve`.
 *
 *   sdw_cli_model_args m = {0};
 *   for (int i = 0; i < argc; i++)
 *       if (!sdw_cli_model_option(argc, argv, &i, &m)) ...the command's own options...
 *   sdw_load_options opts = sdw_cli_load_options(&m);
 */
#ifndef SDW_CLI_CLI_H
#define SDW_CLI_CLI_H

#include "sdw/image_model.h"

#include <stdbool.h>

/* Prints "sdw: error: <message>" and exits with 1. Only the CLI layer exits. */
void sdw_cli_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* An integer option value in [lo, hi], or a fatal error naming the option. */
long long sdw_cli_int(const char *opt, const char *v, long long lo, long long hi);
/* An integer option value of at least lo that fits an int, or a fatal error naming the option:
 * for request fields whose upper bound is the model's, which sdw_request_resolve checks. */
int sdw_cli_count(const char *opt, const char *v, int lo);
/* argv[*i]'s value: argv[++*i], or a fatal "needs a value" error. */
const char *sdw_cli_value(int argc, char **argv, int *i);

typedef struct sdw_cli_model_args {
    const char *model, *config;
    int threads;
    sdw_precision precision;
    /* Family-specific options by their registry keys (--tokenizer -> "tokenizer", --vae ->
     * "vae", ...): the loading family checks them. */
    sdw_load_options options;
} sdw_cli_model_args;

/* Consumes argv[*i] (and its value) when it is one of the model options; false otherwise. Bad
 * values are fatal errors. */
bool sdw_cli_model_option(int argc, char **argv, int *i, sdw_cli_model_args *a);
sdw_load_options sdw_cli_load_options(const sdw_cli_model_args *a);

/* The model options' help lines (26-column option field). */
#define SDW_CLI_MODEL_USAGE                                                                        \
    "  -m, --model PATH        diffusers folder or single .safetensors file\n"                     \
    "                          (default: the built-in demo model, random weights)\n"               \
    "      --config DIR        a diffusers folder describing a single-file checkpoint\n"           \
    "                          (architecture details, schedule, VAE scaling, tokenizers,\n"        \
    "                          missing components), as diffusers' from_single_file(config=)\n"     \
    "      --tokenizer DIR     vocab.json + merges.txt for single-file checkpoints\n"              \
    "      --prediction eps|v  override the detected prediction type (Stable Diffusion)\n"         \
    "      --vae FILE          the autoencoder from this file (a diffusers VAE, an original\n"     \
    "                          checkpoint's, or FLUX's ae.safetensors)\n"                          \
    "      --clip-l FILE       FLUX, SD3: the CLIP-L text encoder (transformers weights)\n"        \
    "      --clip-g FILE       SD3: the CLIP-G text encoder (transformers weights)\n"              \
    "      --t5xxl FILE        FLUX, SD3: the T5 encoder (transformers T5EncoderModel; 16-bit\n"   \
    "                          or fp8, as ComfyUI users have them; SD3: none = no T5)\n"     \
    "      --model-option K=V  any other option of the model's family (sdw info lists them)\n"     \
    "      --precision P       auto | f32 | bf16: the precision of convolutions and matrix\n"      \
    "                          products (auto: bf16 on CPUs with AMX, else f32)\n"                 \
    "  -t, --threads N         CPU threads (default: OMP_NUM_THREADS, else the usable cores:\n"    \
    "                          the affinity mask capped by a cgroup CPU quota)\n"

#endif
