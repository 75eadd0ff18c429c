/* sdw_vae_peak — the time and peak memory of one VAE decode at large sizes, untiled and tiled
 * (issue 13: README's VAE tiling numbers), without the UNet a whole generate would spend hours
 * in at 2048x2048. Each decode runs in a child process of its own, so its peak RSS (the child's
 * getrusage ru_maxrss) is that decode's alone: the weights, the latents, the image and the
 * decode's scratch, as a worker that decodes one image holds them.
 *
 *   sdw_vae_peak ~/.cache/sdworker/sd15-random-f16 [--sizes 1024,2048] [--precision auto]
 *                [--mode both|untiled|tiled]
 *
 * DIR is a model folder (its vae/ is used) or a diffusers AutoencoderKL folder (config.json +
 * diffusion_pytorch_model.safetensors). --precision auto resolves as `sdw generate` does for
 * the folder (by its UNet's products), so the numbers are those of a generate's decode. The
 * latents are smooth deterministic values (the speed and memory do not depend on them). One line per decode:
 *   vae_peak 1024x1024 tiled bf16: decode 9.81 s, peak RSS 612 MiB (after load 180 MiB)
 * A child that dies (killed for memory) is reported with its signal and the others still run. */
#define _GNU_SOURCE /* wait4, strsignal */
#include "core/common.h"
#include "nn/nn.h"
#include "nn/vae.h"

#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define USAGE                                                                                   \
    "sdw_vae_peak DIR [--sizes 1024,2048] [--precision auto|f32|bf16] [--mode both|untiled|tiled]"

static void die(const char *what, const char *detail) {
    fprintf(stderr, "sdw_vae_peak: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

/* VmHWM of this process in KiB (-1 when /proc cannot tell). */
static long vm_hwm_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

/* What a child reports to its parent through the pipe. */
typedef struct child_result {
    double seconds;  /* the decode alone */
    long loaded_kib; /* VmHWM once the VAE is loaded, before the decode */
    int tiled;       /* whether the tiled path really cut the latents into tiles */
} child_result;

/* The child: load the VAE from `dir`, decode [1, W/8, W/8, C] latents once; 0 on success. */
static int decode_once(const char *dir, int size, bool tiled, sdw_precision p, int fd) {
    char cfg_path[4096], w_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    snprintf(w_path, sizeof w_path, "%s/diffusion_pytorch_model.safetensors", dir);
    sdw_error err = {0};
    sdw_vae_config cfg;
    int ss = 0;
    sdw_st_file *file = NULL;
    sdw_weights *ws = NULL;
    sdw_vae *vae = NULL;
    float *z = NULL, *img = NULL;
    int rc = 1;
    if (sdw_vae_config_load(cfg_path, &cfg, &err) ||
        sdw_vae_sample_size_load(cfg_path, &ss, &err) || sdw_st_open(w_path, &file, &err))
        goto fail;
    ws = sdw_weights_create(file, "", NULL, NULL);
    sdw_weights_set_precision(ws, p);
    if (sdw_vae_create_lazy(ws, &cfg, &vae, &err)) goto fail; /* the decoder: as the pipelines */
    const int s = sdw_vae_downscale(vae), h = size / s, w = size / s, c = cfg.latent_channels;
    z = malloc((size_t)h * w * c * sizeof *z);                  /* [1, h, w, c] */
    img = malloc((size_t)size * size * cfg.out_channels * sizeof *img); /* [1, H, W, 3] */
    if (!z || !img) {
        snprintf(err.msg, sizeof err.msg, "out of memory for the latents or the image");
        goto fail;
    }
    for (size_t i = 0; i < (size_t)h * w * c; i++)
        z[i] = 1.5f * sinf(0.11f * (float)i);
    child_result r = {.loaded_kib = vm_hwm_kib()};
    const sdw_vae_tiling t = sdw_vae_tiling_default(vae, ss);
    r.tiled = tiled && sdw_vae_tiling_decodes_tiled(&t, h, w);
    const double t0 = sdw_time_now();
    if (tiled) {
        if (sdw_vae_decode_tiled(vae, z, 1, h, w, &t, img, &err)) goto fail;
    } else {
        sdw_vae_decode(vae, z, 1, h, w, img);
    }
    r.seconds = sdw_time_now() - t0;
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r) snprintf(err.msg, sizeof err.msg, "pipe");
    else rc = 0;
fail:
    if (rc) fprintf(stderr, "sdw_vae_peak: %s\n", err.msg);
    free(z);
    free(img);
    sdw_vae_destroy(vae);
    sdw_weights_destroy(ws);
    sdw_st_close(file);
    return rc;
}

/* One decode in a child; prints its line. False when the child failed or died. */
static bool measure(const char *dir, int size, bool tiled, sdw_precision p) {
    int fds[2];
    if (pipe(fds) != 0) die("pipe", NULL);
    fflush(stdout);
    const pid_t pid = fork();
    if (pid < 0) die("fork", NULL);
    if (pid == 0) {
        close(fds[0]);
        _exit(decode_once(dir, size, tiled, p, fds[1]));
    }
    close(fds[1]);
    child_result r = {0};
    const bool got = read(fds[0], &r, sizeof r) == (ssize_t)sizeof r;
    close(fds[0]);
    int wst = 0;
    struct rusage ru = {0};
    if (wait4(pid, &wst, 0, &ru) != pid) die("wait4", NULL);
    printf("vae_peak %dx%d %s %s: ", size, size, tiled ? (r.tiled ? "tiled" : "tiled(1 tile)")
                                                        : "untiled",
           sdw_precision_str(p));
    if (WIFSIGNALED(wst)) {
        printf("child killed by signal %d (%s) at peak RSS %ld MiB\n", WTERMSIG(wst),
               WTERMSIG(wst) == SIGKILL ? "out of memory?" : strsignal(WTERMSIG(wst)),
               ru.ru_maxrss / 1024);
        return false;
    }
    if (!got || WEXITSTATUS(wst) != 0) {
        printf("failed (exit %d)\n", WEXITSTATUS(wst));
        return false;
    }
    printf("decode %.2f s, peak RSS %ld MiB (after load %ld MiB)\n", r.seconds,
           ru.ru_maxrss / 1024, r.loaded_kib / 1024);
    return true;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *sizes = "1024,2048", *mode = "both";
    sdw_precision want = SDW_PRECISION_AUTO;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc) sizes = argv[++i];
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc) mode = argv[++i];
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
            if (sdw_precision_parse(argv[++i], &want)) die("bad --precision", argv[i]);
        } else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else die("usage", USAGE);
    }
    if (!dir) die("usage", USAGE);
    const bool untiled = strcmp(mode, "tiled") != 0, tiled = strcmp(mode, "untiled") != 0;
    if (strcmp(mode, "both") && strcmp(mode, "tiled") && strcmp(mode, "untiled"))
        die("unknown --mode (both, untiled, tiled)", mode);

    /* a model folder's vae/, or the VAE folder itself */
    char vae_dir[4096], probe[4200];
    snprintf(vae_dir, sizeof vae_dir, "%s/vae", dir);
    snprintf(probe, sizeof probe, "%s/config.json", vae_dir);
    struct stat sb;
    if (stat(probe, &sb) != 0) snprintf(vae_dir, sizeof vae_dir, "%s", dir);

    /* auto as a generate resolves it (models/diffusion.c): by the class of the denoiser's
     * products (the UNet's: what every step runs) when DIR is a model folder, else the VAE's */
    sdw_shape_class cls = {0};
    if (want == SDW_PRECISION_AUTO) {
        char unet[4200];
        snprintf(unet, sizeof unet, "%s/unet/diffusion_pytorch_model.safetensors", dir);
        snprintf(probe, sizeof probe, "%s/diffusion_pytorch_model.safetensors", vae_dir);
        sdw_error e = {0};
        sdw_st_file *f = NULL;
        if (sdw_st_open(unet, &f, &e) == SDW_OK || sdw_st_open(probe, &f, &e) == SDW_OK) {
            sdw_shape_class_of_files((const sdw_st_file *const *)&f, 1, &cls);
            sdw_st_close(f);
        }
    }
    const sdw_precision p = sdw_nn_precision_resolve_model(want, &cls, 0);
    printf("sdw_vae_peak %s: precision %s (asked %s), %d threads\n", vae_dir,
           sdw_precision_str(p), sdw_precision_str(want), omp_get_max_threads());
    bool ok = true;
    for (const char *s = sizes; *s;) {
        char *end;
        const long size = strtol(s, &end, 10);
        if (end == s || size < 8 || size > 16384 || size % 8 || (*end && *end != ','))
            die("--sizes: a list of multiples of 8 in [8, 16384] separated by commas", s);
        if (untiled) ok &= measure(vae_dir, (int)size, false, p);
        if (tiled) ok &= measure(vae_dir, (int)size, true, p);
        s = *end ? end + 1 : end;
    }
    return ok ? 0 : 1;
}
