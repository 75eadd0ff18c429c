/* cli/cli.h — what the sdw commands share: fatal usage errors, number arguments, option parsing
 * (getopt_long: "--steps 20" and "--steps=20", per-command --help), and the options that say
 * which model to load and how (-m, --config, --precision, -t and the family options such as
 * --tokenizer, --vae), parsed the same way by `generate`, `info`, `tokenize` and `serve`.
 *
 *   static const struct option longs[] = {SDW_CLI_MODEL_LONGOPTS, {"prompt", 1, NULL, 'p'}, {0}};
 *   sdw_cli_model_args m = {0};
 *   sdw_cli_opts o = sdw_cli_opts_init("tokenize", argc, argv, SDW_CLI_MODEL_SHORT "p:", longs);
 *   while (sdw_cli_next(&o))
 *       if (!sdw_cli_model_option(&o, &m)) ...the command's own options (o.c, o.name, o.arg)...
 *   sdw_load_options opts = sdw_cli_load_options(&m);
 */
#ifndef SDW_CLI_CLI_H
#define SDW_CLI_CLI_H

#include "sdw/image_model.h"

#include <getopt.h>
#include <stdbool.h>

/* sdw's exit codes (README "Exit codes", sdw --help): scripts tell a mistake in the command
 * line from bad input, a model that would not load, and a run the user cancelled. */
enum {
    SDW_EXIT_OK = 0,
    SDW_EXIT_FAILURE = 1,  /* anything else: the generation failed, the output not written */
    SDW_EXIT_USAGE = 2,    /* unknown option, missing or malformed value */
    SDW_EXIT_INPUT = 3,    /* bad input: a request the model refuses, an unreadable image */
    SDW_EXIT_MODEL = 4,    /* the model (or a component) failed to load */
    SDW_EXIT_CANCELLED = 5 /* SIGINT / SIGTERM stopped the run */
};

/* Prints "sdw: error: <message>" and exits with code. Only the CLI layer exits. */
void sdw_cli_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
/* A usage error: sdw_cli_fail(SDW_EXIT_USAGE, ...). */
void sdw_cli_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define sdw_cli_usage sdw_cli_die
/* The exit code for a failed library call's status: SDW_CANCELLED -> SDW_EXIT_CANCELLED, a
 * refused request or bad data -> SDW_EXIT_INPUT, anything else -> SDW_EXIT_FAILURE. */
int sdw_cli_exit_code(sdw_status s);
/* A path given to opt must name a regular file (or, with dir_ok, a folder) when it exists: a
 * FIFO, socket or device would block the open or never end. Missing paths are left to the
 * reader's own message. A usage error otherwise. */
void sdw_cli_check_path(const char *opt, const char *path, bool dir_ok);
/* An integer option value in [lo, hi], or a fatal error naming the option. */
long long sdw_cli_int(const char *opt, const char *v, long long lo, long long hi);
/* An integer option value of at least lo that fits an int, or a fatal error naming the option:
 * for request fields whose upper bound is the model's, which sdw_request_resolve checks. */
int sdw_cli_count(const char *opt, const char *v, int lo);
/* ---- option parsing ---- */

/* A command's option parser over getopt_long. */
typedef struct sdw_cli_opts {
    const char *command; /* "generate": in messages */
    int argc;
    char **argv; /* argv[0] is the command's name; options follow */
    const char *shorts;
    const struct option *longs;
    /* the option sdw_cli_next returned */
    int c;            /* its getopt value: the short letter, or the long option's val */
    const char *name; /* as given, for messages: "-W", "--width" (also for --width=64) */
    const char *arg;  /* its value, or NULL */
    char name_buf[64];
    bool started;
} sdw_cli_opts;

/* A parser over argv[1..argc-1] (argv[0]: the command's name). shorts without getopt's leading
 * flags; longs ends with a zero entry. */
sdw_cli_opts sdw_cli_opts_init(const char *command, int argc, char **argv, const char *shorts,
                               const struct option *longs);
/* The next option into o (c, name, arg); false at the end. A value may follow its option as the
 * next argument or after '=' (--steps=20; short options also as -W64). An unknown option, a
 * missing value, a value given to an option that takes none, or an argument that is not an
 * option is a fatal error naming it. Options abbreviated to a unique prefix are accepted, as
 * getopt_long does. */
bool sdw_cli_next(sdw_cli_opts *o);

typedef struct sdw_cli_model_args {
    const char *model, *config;
    const char *taesd; /* --taesd: a tiny autoencoder loaded with the model */
    const char *embeddings_dir; /* --embeddings-dir: textual-inversion embeddings */
    const char *controlnet_dir; /* --controlnet-dir: the folder ControlNets are named in */
    const char *lora_dir;       /* --lora-dir: the folder LoRAs are named in */
    int threads;
    sdw_precision precision;
    /* Family-specific options by their registry keys (--tokenizer -> "tokenizer", --vae ->
     * "vae", ...): the loading family checks them. */
    sdw_load_options options;
} sdw_cli_model_args;

/* getopt values of the model options without a short letter; a command numbers its own long-only
 * options from SDW_CLI_OPT_OWN. */
enum {
    SDW_CLI_OPT_CONFIG = 0x100,
    SDW_CLI_OPT_MODEL_OPTION,
    SDW_CLI_OPT_PRECISION,
    SDW_CLI_OPT_TAESD,
    SDW_CLI_OPT_EMBEDDINGS_DIR,
    SDW_CLI_OPT_CONTROLNET_DIR,
    SDW_CLI_OPT_LORA_DIR,
    SDW_CLI_OPT_FAMILY, /* the family flags, in the order of SDW_CLI_MODEL_LONGOPTS: */
    SDW_CLI_OPT_FAMILY_END = SDW_CLI_OPT_FAMILY + 6,
    SDW_CLI_OPT_OWN = 0x200
};
/* The model options, for a command's short-option string and long-option table. The family
 * flags are family load options under their own names (--clip-l -> "clip_l"): the CLI passes
 * them on without knowing which family takes them (sdw_model_load refuses one the loading
 * family does not). */
#define SDW_CLI_MODEL_SHORT "m:t:"
#define SDW_CLI_MODEL_LONGOPTS                                                                     \
    {"model", required_argument, NULL, 'm'}, {"threads", required_argument, NULL, 't'},            \
        {"config", required_argument, NULL, SDW_CLI_OPT_CONFIG},                                   \
        {"model-option", required_argument, NULL, SDW_CLI_OPT_MODEL_OPTION},                       \
        {"precision", required_argument, NULL, SDW_CLI_OPT_PRECISION},                             \
        {"taesd", required_argument, NULL, SDW_CLI_OPT_TAESD},                                     \
        {"embeddings-dir", required_argument, NULL, SDW_CLI_OPT_EMBEDDINGS_DIR},                   \
        {"embd-dir", required_argument, NULL, SDW_CLI_OPT_EMBEDDINGS_DIR}, /* sd.cpp's */          \
        {"controlnet-dir", required_argument, NULL, SDW_CLI_OPT_CONTROLNET_DIR},                   \
        {"lora-dir", required_argument, NULL, SDW_CLI_OPT_LORA_DIR},                               \
        {"tokenizer", required_argument, NULL, SDW_CLI_OPT_FAMILY + 0},                            \
        {"prediction", required_argument, NULL, SDW_CLI_OPT_FAMILY + 1},                           \
        {"vae", required_argument, NULL, SDW_CLI_OPT_FAMILY + 2},                                  \
        {"clip-l", required_argument, NULL, SDW_CLI_OPT_FAMILY + 3},                               \
        {"clip-g", required_argument, NULL, SDW_CLI_OPT_FAMILY + 4},                               \
        {"t5xxl", required_argument, NULL, SDW_CLI_OPT_FAMILY + 5}

/* Takes o's option into a when it is one of the model options (true); false otherwise. Bad
 * values are fatal errors. */
bool sdw_cli_model_option(const sdw_cli_opts *o, sdw_cli_model_args *a);
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
    "      --taesd PATH        a tiny autoencoder (TAESD: a diffusers AutoencoderTiny folder,\n"   \
    "                          or taesd*_decoder.safetensors) for the model's latents: live\n"     \
    "                          previews decode with it; generate --vae-decoder taesd drafts\n"     \
    "      --embeddings-dir DIR\n"                                                                 \
    "                          textual-inversion embeddings (.safetensors, subfolders too;\n"     \
    "                          also --embd-dir): a file's stem in a prompt stands for its\n"     \
    "                          vectors, as in AUTOMATIC1111 (sdw info lists them)\n"              \
    "      --controlnet-dir DIR\n"                                                                 \
    "                          the ControlNets requests name (diffusers ControlNetModel\n"         \
    "                          folders, original .safetensors files): loaded on first use\n"       \
    "      --lora-dir DIR      the LoRAs requests name (.safetensors, subfolders too: --lora\n"     \
    "                          NAME, <lora:NAME:M> in a prompt; sdw info lists them)\n"           \
    "      --precision P       auto | f32 | bf16: the precision of convolutions and matrix\n"      \
    "                          products (auto: the faster of the two, timed on this CPU\n"        \
    "                          at load and remembered)\n"                                       \
    "  -t, --threads N         CPU threads (default: OMP_NUM_THREADS, else the usable cores:\n"    \
    "                          the affinity mask capped by a cgroup CPU quota)\n"

#endif
