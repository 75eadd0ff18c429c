/* sdw — the command line front door: generate, info, tokenize, serve (in serve.c).
 * Only this layer may exit(); everything below returns sdw_status. */
#include "sdw/image_model.h"
#include "sdw/lora.h"

#include "cli/cli.h"
#include "cli/serve.h"
#include "cli/worker.h"
#include "core/common.h"
#include "io/image.h"
#include "io/infotext.h"
#include "io/png.h"
#include "nn/profile.h"
#include "text/embeddings.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define DEFAULT_OUTPUT "out.png"

typedef struct cli_args {
    sdw_cli_model_args m; /* -m and how to load it */
    const char *prompt, *negative, *output, *sampler, *scheduler, *rng, *init_image, *mask;
    const char *decoder;            /* --vae-decoder */
    sdw_vae_tiling_mode vae_tiling; /* --vae-tiling / --no-vae-tiling; AUTO when neither */
    sdw_hires hires;                /* --hires and --hires-*: any of them turns it on */
    double strength;
    int width, height, steps, batch;
    float cfg;
    int64_t seed;
    bool verbose, quiet, profile, json;
    sdw_param params[16]; /* --param NAME=VALUE: the model family's request options */
    int n_params;
    /* --control-net / --control-image / --control-strength / --control-start / --control-end,
     * the i-th of each going with the i-th ControlNet (one strength, start or end: all) */
    const char *control_nets[SDW_MAX_CONTROLS], *control_images[SDW_MAX_CONTROLS];
    double control_values[3][SDW_MAX_CONTROLS]; /* strength, start, end */
    int n_control_nets, n_control_images, n_control_values[3];
    bool control_guess; /* --control-guess-mode */
    bool prompt_syntax; /* --prompt-syntax */
    int clip_skip;      /* --clip-skip N; 0 = the model's own layer */
    sdw_lora_ref loras[16]; /* --lora NAME[:M] / FILE[:M] (strings point into argv) */
    int n_loras;
} cli_args;

/* Help texts: the option lines each command shows (26-column option field). */
#define GENERATE_USAGE                                                                             \
    "  -p, --prompt TEXT       prompt\n"                                                           \
    "  -n, --negative TEXT     negative prompt (also --negative-prompt)\n"                         \
    "  -W, --width N           image width in pixels (default: model's)\n"                         \
    "  -H, --height N          image height in pixels (default: model's)\n"                        \
    "      --steps N           denoising steps (default: model's)\n"                               \
    "      --cfg-scale F       classifier-free guidance (<= 1: no unconditional pass)\n"           \
    "  -s, --seed N            seed; -1 or absent = random (reported)\n"                           \
    "      --sampler NAME      ddim, pndm, euler, euler_a, dpm++2m, ... (sdw info lists the\n"    \
    "                          model's; also --sampling-method; default: model's)\n"             \
    "      --scheduler NAME    default | karras (Karras sigmas: euler, euler_a, dpm++2m)\n"        \
    "                          | trailing (the model's schedule, trailing spacing)\n"              \
    "      --rng NAME          torch (CPU torch.randn, default) | philox (torch CUDA\n"            \
    "                          randn, AUTOMATIC1111's GPU seeds)\n"                                \
    "  -i, --init-image FILE   start from this PNG/JPEG/WebP (alpha ignored; also\n"             \
    "                          --init-img); resized\n"                                            \
    "                          (Lanczos) to -W/-H when given, else its size rounded down\n"        \
    "      --strength S        how much of the init image to repaint, 0 < S <= 1\n"                \
    "                          (default 0.75; steps x S denoising steps run)\n"                    \
    "      --mask FILE         inpainting mask, same size as the init image: white =\n"           \
    "                          repaint, black = keep (grey: >= 128 repaints)\n"                    \
    "      --vae-decoder D     vae (default) | taesd: decode the image with the tiny\n"            \
    "                          autoencoder given by --taesd (a fast draft)\n"                      \
    "      --vae-tiling        decode (and encode) in overlapping tiles, as diffusers'\n"          \
    "                          enable_vae_tiling(): memory stays flat with the image size\n"       \
    "      --no-vae-tiling     never tile (default: tiled above 2048x2048 pixels, said in\n"       \
    "                          the PNG's parameters)\n"                                            \
    "      --hires             AUTOMATIC1111's hires fix: generate at -W x -H, enlarge,\n"         \
    "                          then image-to-image at the larger size (any --hires-*\n"            \
    "                          option turns it on too)\n"                                          \
    "      --hires-scale F     the larger size = -W x -H times F (default 2)\n"                    \
    "      --hires-width N, --hires-height N\n"                                                    \
    "                          the larger size instead (one: the other keeps the aspect;\n"        \
    "                          both, another aspect: enlarged to cover, middle cropped)\n"         \
    "      --hires-upscaler U  Latent (default), Latent (antialiased), Latent (bicubic),\n"        \
    "                          Latent (bicubic antialiased), Latent (nearest), Latent\n"           \
    "                          (nearest-exact): the latents, as torch's interpolate;\n"            \
    "                          None, Lanczos, Nearest: the decoded picture, as Pillow\n"           \
    "                          (case and punctuation are free: latent-bicubic)\n"                  \
    "      --hires-steps N     steps of the second pass (default: --steps)\n"                      \
    "      --hires-strength S  its denoising strength, 0 < S <= 1 (default 0.75)\n"                \
    "      --control-net NET   a ControlNet: its folder (diffusers ControlNetModel) or\n"          \
    "                          file (original layout), or its name in --controlnet-dir;\n"         \
    "                          repeatable: their effects add up\n"                                 \
    "      --control-image FILE\n"                                                                 \
    "                          the i-th ControlNet's control image, used as given: run\n"          \
    "                          the preprocessor it wants first (canny edges, a depth map,\n"       \
    "                          an OpenPose skeleton...); resized (Lanczos) to the output\n"        \
    "                          size, whose default it gives\n"                                     \
    "      --control-strength S\n"                                                                 \
    "                          its conditioning scale (default 1; one value: every net)\n"         \
    "      --control-start F, --control-end F\n"                                                   \
    "                          the fraction of the steps it acts in (default 0 and 1)\n"           \
    "      --control-guess-mode\n"                                                                 \
    "                          ControlNets on the conditional half only, their residuals\n"        \
    "                          scaled from 0.1 to 1 (diffusers' guess_mode)\n"                     \
    "      --lora NAME[:M]     apply a LoRA with multiplier M (default 1; repeatable): a\n"       \
    "                          .safetensors file, or its name in --lora-dir (as <lora:NAME:M>\n"  \
    "                          in the prompt); kohya-ss / A1111 and diffusers files\n"             \
    "      --prompt-syntax     read the prompts as AUTOMATIC1111 does: (word) x1.1,\n"         \
    "                          (word:1.3), [word] /1.1, \\( literal, BREAK, and prompts\n"       \
    "                          past 75 tokens in 75-token chunks (default: diffusers' one\n"      \
    "                          77-token window, longer prompts truncated)\n"                      \
    "      --clip-skip N       the text encoders' hidden state N layers from the end (A1111's\n"  \
    "                          CLIP_stop_at_last_layers; 2 = penultimate); default the\n"        \
    "                          model's own (SD 1.x/2.x: 1, SDXL/SD3: 2)\n"                        \
    "      --param NAME=VALUE  a request option of the model's family (repeatable;\n"             \
    "                          sdw info lists them), e.g. max_sequence_length=256\n"              \
    "      --profile           print a per-op time profile after generating\n"                     \
    "  -b, --batch-count N     make N images, seeds seed, seed+1, ... (-o NAME.png writes\n"      \
    "                          NAME.png, NAME_2.png, ...)\n"                                      \
    "  -o, --output FILE       output PNG (default " DEFAULT_OUTPUT "; - = standard output)\n"    \
    "      --json              print the result as JSON on standard output: the images'\n"       \
    "                          paths and seeds, the settings used, the timings\n"
#define LOG_USAGE "  -v, --verbose           more log output;  -q, --quiet: errors only\n"
#define EXIT_USAGE                                                                                 \
    "exit codes: 0 success, 1 failure, 2 usage error, 3 bad input (a request the model\n"        \
    "refuses, an unreadable image), 4 the model failed to load, 5 cancelled (SIGINT/SIGTERM)\n"

static void usage(FILE *f) {
    fprintf(f,
            "usage: sdw <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate   text-to-image (image-to-image with --init-image, inpainting with\n"
            "             --mask): write a PNG\n"
            "  info       describe a model: family, variant, capabilities, parameter counts\n"
            "  tokenize   show a prompt's token ids as the model's text encoder sees them\n"
            "  serve      run the HTTP worker: APIs + web page, or with --redis a pool's\n"
            "             gateway (sdw serve --help)\n"
            "  worker     take a model's jobs from a Redis pool (sdw worker --help)\n"
            "\n"
            "sdw <command> --help shows one command's options. A value follows its option as the\n"
            "next argument or after '=' (--steps 20, --steps=20).\n"
            "\n"
            "model options:\n" SDW_CLI_MODEL_USAGE
            "\n"
            "generate options:\n" GENERATE_USAGE LOG_USAGE
            "\n" EXIT_USAGE);
}

static void usage_generate(FILE *f) {
    fprintf(f, "usage: sdw generate -p TEXT [options]\n"
               "\n"
               "Text-to-image, image-to-image with --init-image, inpainting with --init-image and\n"
               "--mask: writes a PNG carrying the generation parameters (AUTOMATIC1111's text).\n"
               "ControlNets (--control-net with --control-image) steer any of them.\n"
               "\n"
               "model options:\n" SDW_CLI_MODEL_USAGE
               "\n"
               "generate options:\n" GENERATE_USAGE LOG_USAGE
               "\n" EXIT_USAGE);
}

static void usage_info(FILE *f) {
    fprintf(f, "usage: sdw info [-m MODEL] [options]\n"
               "\n"
               "Describes a model: family, variant, capabilities, defaults, samplers and\n"
               "schedulers, its components with their parameter counts, and the request options\n"
               "of its family (generate --param).\n"
               "\n"
               "model options:\n" SDW_CLI_MODEL_USAGE
               "\n"
               "other options:\n" LOG_USAGE);
}

static void usage_tokenize(FILE *f) {
    fprintf(f, "usage: sdw tokenize -p TEXT [-m MODEL] [options]\n"
               "\n"
               "Shows the prompt's token ids as the model's main text encoder sees them (special\n"
               "tokens included), and how many of them it reads.\n"
               "\n"
               "model options:\n" SDW_CLI_MODEL_USAGE
               "\n"
               "tokenize options:\n"
               "  -p, --prompt TEXT       prompt\n" LOG_USAGE);
}

static float parse_float(const char *opt, const char *v) {
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (!*v || *end || errno || !isfinite(x)) sdw_cli_die("%s: '%s' is not a number", opt, v);
    return x;
}

/* Double, as Python's float(): the step count int(steps * strength) depends on it. */
static double parse_double(const char *opt, const char *v) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x)) sdw_cli_die("%s: '%s' is not a number", opt, v);
    return x;
}

/* NAME=VALUE into a->params (the model checks the name and range). */
static void parse_param(const char *opt, char *v, cli_args *a) {
    char *eq = strchr(v, '=');
    if (!eq || eq == v) sdw_cli_die("%s: '%s' is not NAME=VALUE", opt, v);
    if (a->n_params >= (int)(sizeof a->params / sizeof a->params[0]))
        sdw_cli_die("%s: too many options", opt);
    const double x = parse_double(opt, eq + 1);
    *eq = 0; /* the name stays in argv, as --lora's */
    a->params[a->n_params++] = (sdw_param){v, x};
}

/* --lora NAME[:M] or FILE[:M]: an argument naming an existing file is that file (the CLI acts
 * for its user; servers take names only), anything else a name in --lora-dir; the multiplier is
 * what follows the last ':' (default 1). */
static void parse_lora(const char *opt, char *v, cli_args *a) {
    if (a->n_loras >= (int)(sizeof a->loras / sizeof a->loras[0]))
        sdw_cli_die("%s: at most %d LoRAs", opt, (int)(sizeof a->loras / sizeof a->loras[0]));
    sdw_lora_ref r = {.multiplier = 1.0f};
    char *colon = strrchr(v, ':');
    if (colon && access(v, F_OK) != 0) {
        sdw_error err = {0};
        if (sdw_lora_multiplier_parse(colon + 1, strlen(colon + 1), &r.multiplier, &err))
            sdw_cli_die("%s %s: %s", opt, v, err.msg);
        *colon = 0; /* argv is writable */
    }
    if (!*v) sdw_cli_die("%s: the LoRA name is empty", opt);
    if (access(v, F_OK) == 0) {
        sdw_cli_check_path(opt, v, false);
        r.path = v;
    } else {
        r.name = v;
    }
    a->loras[a->n_loras++] = r;
}

/* getopt values of the long-only options (cli.h: commands number theirs from SDW_CLI_OPT_OWN). */
enum {
    OPT_STEPS = SDW_CLI_OPT_OWN,
    OPT_PROMPT_SYNTAX,
    OPT_CLIP_SKIP,
    OPT_CFG,
    OPT_SAMPLER,
    OPT_SCHEDULER,
    OPT_RNG,
    OPT_MASK,
    OPT_STRENGTH,
    OPT_PARAM,
    OPT_PROFILE,
    OPT_JSON,
    OPT_VAE_DECODER,
    OPT_VAE_TILING,
    OPT_NO_VAE_TILING,
    OPT_HIRES,
    OPT_HIRES_SCALE,
    OPT_HIRES_WIDTH,
    OPT_HIRES_HEIGHT,
    OPT_HIRES_UPSCALER,
    OPT_HIRES_STEPS,
    OPT_HIRES_STRENGTH,
    OPT_CONTROL_NET,
    OPT_CONTROL_IMAGE,
    OPT_CONTROL_STRENGTH, /* the three values, in control_values' order */
    OPT_CONTROL_START,
    OPT_CONTROL_END,
    OPT_CONTROL_GUESS,
    OPT_LORA
};

#define LOG_LONGOPTS                                                                               \
    {"verbose", no_argument, NULL, 'v'}, {"quiet", no_argument, NULL, 'q'},                        \
        {"help", no_argument, NULL, 'h'}

static const struct option k_generate_longs[] = {
    SDW_CLI_MODEL_LONGOPTS,
    LOG_LONGOPTS,
    {"prompt", required_argument, NULL, 'p'},
    {"negative", required_argument, NULL, 'n'},
    {"negative-prompt", required_argument, NULL, 'n'}, /* stable-diffusion.cpp's name */
    {"output", required_argument, NULL, 'o'},
    {"width", required_argument, NULL, 'W'},
    {"height", required_argument, NULL, 'H'},
    {"steps", required_argument, NULL, OPT_STEPS},
    {"cfg-scale", required_argument, NULL, OPT_CFG},
    {"guidance", required_argument, NULL, OPT_CFG},
    {"seed", required_argument, NULL, 's'},
    {"sampler", required_argument, NULL, OPT_SAMPLER},
    {"sampling-method", required_argument, NULL, OPT_SAMPLER}, /* stable-diffusion.cpp's */
    {"scheduler", required_argument, NULL, OPT_SCHEDULER},
    {"rng", required_argument, NULL, OPT_RNG},
    {"init-image", required_argument, NULL, 'i'},
    {"init-img", required_argument, NULL, 'i'}, /* stable-diffusion.cpp's */
    {"batch-count", required_argument, NULL, 'b'},
    {"json", no_argument, NULL, OPT_JSON},
    {"mask", required_argument, NULL, OPT_MASK},
    {"strength", required_argument, NULL, OPT_STRENGTH},
    {"denoising-strength", required_argument, NULL, OPT_STRENGTH},
    {"param", required_argument, NULL, OPT_PARAM},
    {"profile", no_argument, NULL, OPT_PROFILE},
    {"vae-decoder", required_argument, NULL, OPT_VAE_DECODER},
    {"vae-tiling", no_argument, NULL, OPT_VAE_TILING},
    {"no-vae-tiling", no_argument, NULL, OPT_NO_VAE_TILING},
    {"hires", no_argument, NULL, OPT_HIRES},
    {"hires-scale", required_argument, NULL, OPT_HIRES_SCALE},
    {"hires-width", required_argument, NULL, OPT_HIRES_WIDTH},
    {"hires-height", required_argument, NULL, OPT_HIRES_HEIGHT},
    {"hires-upscaler", required_argument, NULL, OPT_HIRES_UPSCALER},
    {"hires-steps", required_argument, NULL, OPT_HIRES_STEPS},
    {"hires-strength", required_argument, NULL, OPT_HIRES_STRENGTH},
    {"control-net", required_argument, NULL, OPT_CONTROL_NET},
    {"control-image", required_argument, NULL, OPT_CONTROL_IMAGE},
    {"control-strength", required_argument, NULL, OPT_CONTROL_STRENGTH},
    {"control-start", required_argument, NULL, OPT_CONTROL_START},
    {"control-end", required_argument, NULL, OPT_CONTROL_END},
    {"control-guess-mode", no_argument, NULL, OPT_CONTROL_GUESS},
    {"prompt-syntax", no_argument, NULL, OPT_PROMPT_SYNTAX},
    {"clip-skip", required_argument, NULL, OPT_CLIP_SKIP},
    {"lora", required_argument, NULL, OPT_LORA},
    {0},
};
static const struct option k_info_longs[] = {SDW_CLI_MODEL_LONGOPTS, LOG_LONGOPTS, {0}};
static const struct option k_tokenize_longs[] = {
    SDW_CLI_MODEL_LONGOPTS, LOG_LONGOPTS, {"prompt", required_argument, NULL, 'p'}, {0}};

/* The commands this file runs (serve has its own parser: serve.c). */
typedef struct command {
    const char *name, *shorts;
    const struct option *longs;
    void (*usage)(FILE *f);
    int (*run)(const cli_args *a);
} command;

/* Options of cmd's table from argv (argv[0] = the command's name) into a. */
static void parse_args(const command *cmd, int argc, char **argv, cli_args *a) {
    *a = (cli_args){.cfg = -1.0f, .seed = -1, .output = DEFAULT_OUTPUT, .strength = -1.0,
                    .batch = 1};
    a->hires.strength = -1.0; /* the default, 0.75 */
    sdw_cli_opts o = sdw_cli_opts_init(cmd->name, argc, argv, cmd->shorts, cmd->longs);
    while (sdw_cli_next(&o)) {
        if (sdw_cli_model_option(&o, &a->m)) continue;
        switch (o.c) {
        case 'p': a->prompt = o.arg; break;
        case 'n': a->negative = o.arg; break;
        case 'o': a->output = o.arg; break;
        /* 0 would mean "the model's default" in a request: refused here. The upper bounds are
         * the model's, checked by sdw_request_resolve. */
        case 'W': a->width = sdw_cli_count(o.name, o.arg, 1); break;
        case 'H': a->height = sdw_cli_count(o.name, o.arg, 1); break;
        case OPT_STEPS: a->steps = sdw_cli_count(o.name, o.arg, 1); break;
        case OPT_CFG: a->cfg = parse_float(o.name, o.arg); break;
        case 's': a->seed = sdw_cli_int(o.name, o.arg, -1, LLONG_MAX); break;
        case OPT_SAMPLER: a->sampler = o.arg; break;
        case OPT_SCHEDULER: a->scheduler = o.arg; break;
        case OPT_RNG: a->rng = o.arg; break;
        case 'i':
            sdw_cli_check_path(o.name, o.arg, false);
            a->init_image = o.arg;
            break;
        case OPT_MASK:
            sdw_cli_check_path(o.name, o.arg, false);
            a->mask = o.arg;
            break;
        case 'b': a->batch = (int)sdw_cli_int(o.name, o.arg, 1, 10000); break;
        case OPT_JSON: a->json = true; break;
        case OPT_STRENGTH: a->strength = parse_double(o.name, o.arg); break;
        case OPT_PARAM: parse_param(o.name, (char *)o.arg, a); break;
        case OPT_PROFILE: a->profile = true; break;
        case OPT_VAE_DECODER: a->decoder = o.arg; break;
        case OPT_VAE_TILING: a->vae_tiling = SDW_TILING_ON; break;
        case OPT_NO_VAE_TILING: a->vae_tiling = SDW_TILING_OFF; break;
        case OPT_HIRES: a->hires.enable = true; break;
        case OPT_HIRES_SCALE:
            a->hires.enable = true;
            a->hires.scale = parse_double(o.name, o.arg);
            if (!(a->hires.scale > 0))
                sdw_cli_die("%s: %g must be above 0", o.name, a->hires.scale);
            break;
        case OPT_HIRES_WIDTH:
        case OPT_HIRES_HEIGHT:
            a->hires.enable = true;
            *(o.c == OPT_HIRES_WIDTH ? &a->hires.resize_width : &a->hires.resize_height) =
                sdw_cli_count(o.name, o.arg, 1);
            break;
        case OPT_HIRES_UPSCALER: {
            sdw_error e = {0};
            a->hires.enable = true;
            if (sdw_upscaler_parse(o.arg, &a->hires.upscaler, &e))
                sdw_cli_die("%s: %s", o.name, e.msg);
            break;
        }
        case OPT_HIRES_STEPS:
            a->hires.enable = true;
            a->hires.steps = sdw_cli_count(o.name, o.arg, 1);
            break;
        case OPT_HIRES_STRENGTH:
            a->hires.enable = true;
            a->hires.strength = parse_double(o.name, o.arg);
            if (!(a->hires.strength > 0 && a->hires.strength <= 1))
                sdw_cli_die("%s: %g is out of range (0, 1]", o.name, a->hires.strength);
            break;
        case OPT_CONTROL_NET:
            if (a->n_control_nets == SDW_MAX_CONTROLS)
                sdw_cli_die("%s: at most %d ControlNets", o.name, SDW_MAX_CONTROLS);
            a->control_nets[a->n_control_nets++] = o.arg;
            break;
        case OPT_CONTROL_IMAGE:
            sdw_cli_check_path(o.name, o.arg, false);
            if (a->n_control_images == SDW_MAX_CONTROLS)
                sdw_cli_die("%s: at most %d control images", o.name, SDW_MAX_CONTROLS);
            a->control_images[a->n_control_images++] = o.arg;
            break;
        case OPT_CONTROL_STRENGTH:
        case OPT_CONTROL_START:
        case OPT_CONTROL_END: {
            const int v = o.c - OPT_CONTROL_STRENGTH;
            if (a->n_control_values[v] == SDW_MAX_CONTROLS)
                sdw_cli_die("%s: given more than %d times", o.name, SDW_MAX_CONTROLS);
            a->control_values[v][a->n_control_values[v]++] = parse_double(o.name, o.arg);
            break;
        }
        case OPT_CONTROL_GUESS: a->control_guess = true; break;
        case OPT_PROMPT_SYNTAX: a->prompt_syntax = true; break;
        case OPT_CLIP_SKIP: /* stable-diffusion.cpp's -1 (its default) = the model's own */
            a->clip_skip = (int)sdw_cli_int(o.name, o.arg, -1, SDW_MAX_CLIP_SKIP);
            if (a->clip_skip < 0) a->clip_skip = 0;
            break;
        case OPT_LORA: parse_lora(o.name, (char *)o.arg, a); break;
        case 'v': a->verbose = true; break;
        case 'q': a->quiet = true; break;
        case 'h': cmd->usage(stdout), exit(0);
        default: SDW_ABORT("option %s is in %s's table but not handled", o.name, cmd->name);
        }
    }
    /* A negative guidance or strength means "the default" in a request, so the CLI refuses
     * the ones given here itself; sdw_request_resolve checks the rest of guidance's range.
     * Strength keeps its whole range check here: its message names the option. */
    if (a->cfg < 0 && a->cfg != -1.0f)
        sdw_cli_die("--cfg-scale: %g must not be negative", (double)a->cfg);
    if (a->strength != -1.0 && !(a->strength > 0 && a->strength <= 1))
        sdw_cli_die("--strength: %g is out of range (0, 1]", a->strength);
    if (!strcmp(a->output, "-") && a->batch > 1)
        sdw_cli_die("-o -: standard output takes one image (--batch-count %d)", a->batch);
    if (!strcmp(a->output, "-") && a->json)
        sdw_cli_die("-o - and --json both write to standard output: pick one");
    for (int i = 0; i < a->n_loras; i++)
        if (a->loras[i].name && !a->m.lora_dir)
            sdw_cli_fail(SDW_EXIT_INPUT,
                         "--lora %s: no such file (and no --lora-dir to look a name up in)",
                         a->loras[i].name);
    if (a->n_control_images != a->n_control_nets)
        sdw_cli_die("%d --control-net and %d --control-image: give each ControlNet its image",
                    a->n_control_nets, a->n_control_images);
    static const char *const value_opts[3] = {"--control-strength", "--control-start",
                                              "--control-end"};
    for (int v = 0; v < 3; v++)
        if (a->n_control_values[v] > 1 && a->n_control_values[v] != a->n_control_nets)
            sdw_cli_die("%d %s for %d --control-net: give one (for all) or one each",
                        a->n_control_values[v], value_opts[v], a->n_control_nets);
}

/* The request's ControlNets from the --control-* options, their images loaded into images
 * (freed by the caller). A --control-net that names an existing file or folder is a path;
 * anything else is a name in --controlnet-dir. */
static int control_requests(const cli_args *a, sdw_control *controls, sdw_image *images) {
    sdw_error err = {0};
    for (int i = 0; i < a->n_control_nets; i++) {
        sdw_control *c = &controls[i];
        *c = sdw_control_default();
        const double def[3] = {c->scale, c->start, c->end}, *vals[3];
        for (int v = 0; v < 3; v++) {
            const int n = a->n_control_values[v];
            vals[v] = n == 0 ? &def[v] : &a->control_values[v][n == 1 ? 0 : i];
        }
        c->scale = (float)*vals[0];
        c->start = *vals[1];
        c->end = *vals[2];
        const char *net = a->control_nets[i];
        if (access(net, F_OK) == 0) {
            sdw_cli_check_path("--control-net", net, true);
            c->path = net;
        } else if (a->m.controlnet_dir) {
            c->name = net;
        } else {
            sdw_cli_fail(SDW_EXIT_INPUT,
                         "--control-net %s: no such file or folder (and no --controlnet-dir to "
                         "look a name up in)",
                         net);
        }
        if (sdw_image_load(a->control_images[i], &images[i], &err))
            sdw_cli_fail(SDW_EXIT_INPUT, "--control-image: %s", err.msg);
        c->image = &images[i];
    }
    return a->n_control_nets;
}

static sdw_image_model *load_model(const cli_args *a) {
    sdw_load_options opts = sdw_cli_load_options(&a->m);
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    double t0 = sdw_time_now();
    if (!a->m.model)
        fprintf(stderr, "sdw: no -m given: using the built-in DEMO model (random weights, its "
                        "images are noise; pass -m MODEL for real images)\n");
    if (sdw_model_load(a->m.model, &opts, &m, &err) != SDW_OK)
        sdw_cli_fail(SDW_EXIT_MODEL, "%s", err.msg);
    SDW_INFO("loaded %s (%s %s) in %.2f s", m->name, sdw_model_type(m), sdw_model_variant(m),
             sdw_time_now() - t0);
    return m;
}

/* ---- progress bar on a terminal ---- */
typedef struct progress_state {
    double t_start, t_last;
    bool tty;
} progress_state;

static bool on_progress(void *user, int step, int total, const sdw_image *preview) {
    progress_state *p = user;
    double now = sdw_time_now();
    p->t_last = now;
    if (!p->tty) return true;
    double per = step > 0 ? (now - p->t_start) / step : 0;
    double eta = per * (total - step);
    int width = 30, fill = total > 0 ? step * width / total : width;
    fprintf(stderr, "\r%4d/%-4d |", step, total);
    for (int i = 0; i < width; i++) fputc(i < fill ? '#' : ' ', stderr);
    fprintf(stderr, "| %.2f s/it, ETA %d:%02d ", per, (int)eta / 60, (int)eta % 60);
    if (step == total) fputc('\n', stderr);
    return true;
}

/* SIGINT / SIGTERM during generate: the run's stop flag (the model stops within one block of
 * its step). A store to a lock-free atomic is async-signal-safe. The handler resets itself, so
 * a second signal ends the process at once. */
static atomic_int g_stop;

static void on_signal(int sig) { atomic_store(&g_stop, SDW_STOP_CANCEL); }

static void catch_stop_signals(void) {
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* Image i's output path: the name itself for the first, NAME_2.png, NAME_3.png ... after it
 * (stable-diffusion.cpp's batch naming). */
static void output_path(const char *out, int i, char *buf, size_t cap) {
    if (i == 0) {
        snprintf(buf, cap, "%s", out);
        return;
    }
    const char *slash = strrchr(out, '/'), *dot = strrchr(out, '.');
    if (dot && (!slash || dot > slash + 1))
        snprintf(buf, cap, "%.*s_%d%s", (int)(dot - out), out, i + 1, dot);
    else
        snprintf(buf, cap, "%s_%d", out, i + 1);
}

/* Writes the PNG to path, or to standard output for "-". */
static sdw_status write_png(const char *path, const sdw_image *img, const char *params,
                            sdw_error *err) {
    const char *text[] = {"parameters", params, NULL};
    if (strcmp(path, "-"))
        return sdw_png_write(path, img->data, img->width, img->height, img->channels, text, err);
    uint8_t *png = NULL;
    size_t len = 0;
    sdw_status s = sdw_png_write_mem(img->data, img->width, img->height, img->channels, text, &png,
                                     &len, err);
    if (s) return s;
    if (fwrite(png, 1, len, stdout) != len || fflush(stdout) != 0)
        s = sdw_error_set(err, SDW_E_IO, "standard output: %s", strerror(errno));
    free(png);
    return s;
}

static int cmd_generate(const cli_args *a) {
    if (!a->prompt) sdw_cli_die("generate needs a prompt (-p TEXT)");
    if (!strcmp(a->output, "-") && isatty(1))
        sdw_cli_die("-o -: standard output is a terminal; redirect it to a file or a pipe");
    sdw_request req = sdw_request_default();
    req.prompt = a->prompt;
    req.negative_prompt = a->negative;
    req.width = a->width;
    req.height = a->height;
    req.steps = a->steps;
    req.guidance = a->cfg;
    req.seed = a->seed;
    req.sampler = a->sampler;
    req.scheduler = a->scheduler;
    sdw_error err = {0};
    if (a->rng && sdw_rng_kind_parse(a->rng, &req.rng, &err) != SDW_OK)
        sdw_cli_die("--rng: %s", err.msg);
    if (a->seed >= 0 && a->batch - 1 > INT64_MAX - a->seed)
        sdw_cli_fail(SDW_EXIT_INPUT, "--seed %lld is too large for %d images (image i uses seed + i)",
                     (long long)a->seed, a->batch);
    req.params = a->params;
    req.n_params = a->n_params;
    req.profile = a->profile;
    req.vae_tiling = a->vae_tiling;
    req.hires = a->hires;
    if (a->decoder && sdw_decoder_parse(a->decoder, &req.decoder, &err) != SDW_OK)
        sdw_cli_die("--vae-decoder: %s", err.msg);
    /* Images are read before the (slower) model load so a bad file fails fast. */
    sdw_image init = {0}, mask = {0};
    if (a->init_image && sdw_image_load(a->init_image, &init, &err))
        sdw_cli_fail(SDW_EXIT_INPUT, "--init-image: %s", err.msg);
    if (a->mask && sdw_image_load(a->mask, &mask, &err))
        sdw_cli_fail(SDW_EXIT_INPUT, "--mask: %s", err.msg);
    req.init_image = a->init_image ? &init : NULL;
    req.mask = a->mask ? &mask : NULL;
    sdw_control controls[SDW_MAX_CONTROLS];
    sdw_image control_images[SDW_MAX_CONTROLS] = {0};
    req.n_controls = control_requests(a, controls, control_images);
    req.controls = req.n_controls ? controls : NULL;
    req.control_guess_mode = a->control_guess;
    req.prompt_syntax = a->prompt_syntax;
    req.clip_skip = a->clip_skip;
    req.loras = a->n_loras ? a->loras : NULL;
    req.n_loras = a->n_loras;
    req.strength = a->strength;
    if (req.decoder == SDW_DECODER_TAESD && !a->m.taesd)
        sdw_cli_die("--vae-decoder taesd needs a tiny autoencoder: --taesd PATH");
    sdw_image_model *m = load_model(a);
    /* Validate before any work so a bad value fails fast with the model's limits in the message. */
    sdw_request resolved;
    if (sdw_request_resolve(&req, sdw_model_capabilities(m), &resolved, &err) != SDW_OK) {
        sdw_model_destroy(m);
        sdw_cli_fail(SDW_EXIT_INPUT, "%s", err.msg);
    }
    catch_stop_signals();
    resolved.stop = &g_stop;
    json_t *images = json_array();
    sdw_result_info info = {0};
    int64_t seed = resolved.seed;
    double secs = 0, t_all = sdw_time_now();
    for (int i = 0; i < a->batch; i++) {
        sdw_request r = resolved;
        r.seed = seed < 0 ? -1 : seed + i;
        progress_state ps = {.t_start = sdw_time_now(), .tty = isatty(2) && !a->quiet};
        sdw_image img = {0};
        sdw_status s = sdw_model_generate(m, &r, on_progress, &ps, &img, &info, &err);
        if (s != SDW_OK) {
            sdw_model_destroy(m);
            json_decref(images);
            if (ps.tty) fputc('\n', stderr);
            sdw_cli_fail(sdw_cli_exit_code(s), "%s", err.msg);
        }
        secs = sdw_time_now() - ps.t_start;
        if (seed < 0) seed = info.seed - i; /* later images follow the drawn seed */
        if (a->profile)
            sdw_profile_print_entries(stderr, info.profile, info.n_profile,
                                      info.n_denoiser_calls);
        char params[4096], path[4096];
        sdw_infotext_format(&r, &info, m->name, params, sizeof params);
        output_path(a->output, i, path, sizeof path);
        if (write_png(path, &img, params, &err)) {
            sdw_image_free(&img);
            sdw_model_destroy(m);
            json_decref(images);
            sdw_cli_fail(SDW_EXIT_FAILURE, "%s", err.msg);
        }
        if (!a->quiet && strcmp(path, "-"))
            fprintf(stderr, "sdw: wrote %s (%dx%d, seed %lld, %.2f s%s%s)\n", path, img.width,
                    img.height, (long long)info.seed, secs,
                    info.taesd_decoded ? ", decoded by the TAESD" : "",
                    !info.vae_tiled                    ? ""
                    : r.vae_tiling == SDW_TILING_AUTO ? ", decoded in tiles: a large image"
                                                      : ", decoded in tiles");
        json_array_append_new(
            images, json_pack("{s:s,s:I,s:i,s:i,s:b,s:b,s:{s:f,s:f,s:f,s:f,s:f}}", "path", path,
                              "seed", (json_int_t)info.seed, "width", img.width, "height",
                              img.height, "vae_tiled", info.vae_tiled, "taesd_decoded",
                              info.taesd_decoded, "timings", "encode_s", info.seconds_encode,
                              "image_encode_s", info.seconds_image_encode, "denoise_s",
                              info.seconds_denoise, "decode_s", info.seconds_decode, "total_s",
                              secs));
        sdw_image_free(&img);
    }
    if (a->json) {
        json_t *o = json_pack(
            "{s:o,s:s,s:s,s:s,s:I,s:i,s:i,s:i,s:f,s:s,s:s,s:f}", "images", images, "model",
            m->name, "family", sdw_model_type(m), "prompt", resolved.prompt, "seed",
            (json_int_t)json_integer_value(json_object_get(json_array_get(images, 0), "seed")),
            "width", resolved.width, "height", resolved.height, "steps", resolved.steps,
            "guidance", (double)info.guidance, "sampler", resolved.sampler, "scheduler",
            resolved.scheduler, "total_s", sdw_time_now() - t_all);
        if (resolved.init_image) json_object_set_new(o, "strength", json_real(info.strength));
        if (resolved.hires.enable) /* the first pass's size and steps above, as A1111's */
            json_object_set_new(
                o, "hires",
                json_pack("{s:i,s:i,s:i,s:f,s:s}", "width", resolved.hires.width, "height",
                          resolved.hires.height, "steps",
                          resolved.hires.steps ? resolved.hires.steps : resolved.steps,
                          "strength", resolved.hires.strength, "upscaler",
                          sdw_upscaler_str(resolved.hires.upscaler)));
        char *text = json_dumps(o, JSON_INDENT(2));
        json_decref(o);
        puts(text);
        free(text);
        fflush(stdout);
    } else {
        json_decref(images);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    SDW_INFO("timing: encode %.3f s, init image %.3f s, denoise %.3f s (%d calls, %.3f s/step, "
             "first call %.3f s), decode %.3f s, peak RSS %.0f MiB",
             info.seconds_encode, info.seconds_image_encode, info.seconds_denoise,
             info.n_denoiser_calls,
             info.n_denoiser_calls ? info.seconds_denoise / info.n_denoiser_calls : 0.0,
             info.seconds_first_call, info.seconds_decode, ru.ru_maxrss / 1024.0);
    sdw_image_free(&init);
    sdw_image_free(&mask);
    for (int i = 0; i < req.n_controls; i++) sdw_image_free(&control_images[i]);
    sdw_model_destroy(m);
    return 0;
}

static void print_list(const char *label, const char *const *list) {
    printf("%s", label);
    for (int i = 0; list && list[i]; i++) printf("%s%s", i ? ", " : "", list[i]);
    printf("\n");
}

/* --embeddings-dir's contents: each embedding's token and vector count, then what was skipped
 * and why. */
static void print_embeddings(const sdw_embeddings *e) {
    if (!e) return;
    int n_ok = 0;
    for (int i = 0; i < sdw_embeddings_count(e); i++) n_ok += !sdw_embeddings_info(e, i).skipped;
    printf("embeddings:   %d", n_ok);
    for (int i = 0, k = 0; i < sdw_embeddings_count(e); i++) {
        const sdw_embedding_info in = sdw_embeddings_info(e, i);
        if (!in.skipped)
            printf("%s%s (%d vector%s, %d wide%s)", k++ ? ", " : ": ", in.name, in.n_vectors,
                   in.n_vectors == 1 ? "" : "s", in.width, in.two_encoders ? ", clip_l + clip_g" : "");
    }
    printf("\n");
    for (int i = 0; i < sdw_embeddings_count(e); i++) {
        const sdw_embedding_info in = sdw_embeddings_info(e, i);
        if (in.skipped) printf("  skipped %s: %s\n", in.file, in.skipped);
    }
}

static int cmd_info(const cli_args *a) {
    sdw_image_model *m = load_model(a);
    const sdw_capabilities *c = sdw_model_capabilities(m);
    printf("model:        %s\n", m->name);
    printf("family:       %s\n", sdw_model_type(m));
    printf("variant:      %s\n", sdw_model_variant(m));
    printf("capabilities: %s%s%s%s%s%s\n", c->txt2img ? "txt2img " : "",
           c->img2img ? "img2img " : "", c->inpainting ? "inpainting " : "", c->lora ? "lora " : "",
           c->controlnet ? "controlnet " : "", c->taesd ? "taesd (--vae-decoder taesd)" : "");
    printf("defaults:     %dx%d, %d steps, guidance %g, sampler %s\n", c->default_width,
           c->default_height, c->default_steps, (double)c->default_guidance, c->default_sampler);
    printf("sizes:        %d..%d, multiple of %d\n", c->min_size, c->max_size, c->size_multiple);
    print_list("samplers:     ", c->samplers);
    print_list("schedulers:   ", c->schedulers);
    if (c->lora) { /* what --lora and <lora:NAME:M> can name */
        sdw_lora_entry *list = NULL;
        int n = 0;
        sdw_error err = {0};
        if (!c->lora_dir) {
            printf("loras:        files (--lora FILE[:M]); --lora-dir DIR to use names\n");
        } else if (sdw_lora_list(c->lora_dir, &list, &n, &err) == SDW_OK) {
            printf("loras:        %d in %s%s", n, c->lora_dir, n ? ":" : "");
            for (int i = 0; i < n && i < 32; i++) printf(" %s", list[i].name);
            printf("%s\n", n > 32 ? " ..." : "");
            sdw_lora_list_free(list, n);
        }
    }
    char desc[4096];
    sdw_model_describe(m, desc, sizeof desc);
    if (*desc) printf("%s", desc);
    print_embeddings(sdw_model_embeddings(m));
    sdw_model_destroy(m);
    return 0;
}

static int cmd_tokenize(const cli_args *a) {
    if (!a->prompt) sdw_cli_die("tokenize needs a prompt (-p TEXT)");
    sdw_image_model *m = load_model(a);
    int32_t *ids = NULL;
    int n = 0, window = 0;
    sdw_error err = {0};
    if (sdw_model_tokenize(m, a->prompt, &ids, &n, &window, &err) != SDW_OK) {
        sdw_model_destroy(m);
        sdw_cli_fail(sdw_cli_exit_code(err.code), "%s", err.msg);
    }
    for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
    printf("\n%d tokens (window %d)\n", n, window);
    if (n > window)
        fprintf(stderr, "sdw: warning: the prompt is %d tokens long; the text encoder sees only "
                        "the first %d (the rest is truncated)\n", n, window);
    free(ids);
    sdw_model_destroy(m);
    return 0;
}

static const command k_commands[] = {
    {"generate", SDW_CLI_MODEL_SHORT "vqhp:n:o:W:H:s:i:b:", k_generate_longs, usage_generate,
     cmd_generate},
    {"info", SDW_CLI_MODEL_SHORT "vqh", k_info_longs, usage_info, cmd_info},
    {"tokenize", SDW_CLI_MODEL_SHORT "vqhp:", k_tokenize_longs, usage_tokenize, cmd_tokenize},
};

static const command *find_command(const char *name) {
    for (size_t i = 0; i < SDW_ARRAY_LEN(k_commands); i++)
        if (!strcmp(k_commands[i].name, name)) return &k_commands[i];
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
        const command *c = argc > 2 && !strcmp(name, "help") ? find_command(argv[2]) : NULL;
        if (argc > 2 && !strcmp(name, "help") && !strcmp(argv[2], "serve"))
            return sdw_cli_serve(2, (char *[]){"serve", "--help", NULL});
        if (argc > 2 && !strcmp(name, "help") && !strcmp(argv[2], "worker"))
            return sdw_cli_worker(2, (char *[]){"worker", "--help", NULL});
        c ? c->usage(stdout) : usage(stdout);
        return 0;
    }
    if (!strcmp(name, "serve")) return sdw_cli_serve(argc - 1, argv + 1);
    if (!strcmp(name, "worker")) return sdw_cli_worker(argc - 1, argv + 1);
    const command *cmd = find_command(name);
    if (!cmd) {
        fprintf(stderr, "sdw: error: unknown command '%s'\n", name);
        usage(stderr);
        return 2;
    }
    cli_args a;
    parse_args(cmd, argc - 1, argv + 1, &a);
    sdw_log_set_level(a.quiet ? SDW_LOG_ERROR : a.verbose ? SDW_LOG_DEBUG : SDW_LOG_WARN);
    return cmd->run(&a);
}
