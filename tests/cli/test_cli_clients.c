/* The sdw command as stable-diffusion.cpp users and scripts call it (issue 15): its option names
 * as aliases (--negative-prompt, --sampling-method, --init-img, -b/--batch-count), --opt=value,
 * per-command help, -o - (the PNG on standard output), --json (a machine-readable result), the
 * documented exit codes (usage 2, bad input 3, model load failure 4, cancelled 5), and the
 * inputs that used to hang or pass silently: a FIFO given as model or image, a VAE whose
 * scaling_factor is 0, a pipeline folder without its scheduler. */
#include "sdw_test.h"

#include "io/png.h"

#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_model[1024];

/* Runs a shell command line; returns its exit status (-1 if it did not exit). */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_aliases_batch_and_opt_equals(void) {
    char out[8192], png[1024], png2[1024];
    snprintf(png, sizeof png, "%s/alias.png", sdw_test_tmpdir());
    snprintf(png2, sizeof png2, "%s/alias_2.png", sdw_test_tmpdir());
    unlink(png2);
    int rc = sdw_test_run_sdw(out, sizeof out,
                              "generate -m '%s' -p 'a cat' --negative-prompt 'blurry' -W 64 -H 64 "
                              "--steps=2 --sampling-method euler -s 41 -b 2 -o '%s'",
                              g_model, png);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
    for (int i = 0; i < 2; i++) {
        sdw_png img = {0};
        ASSERT_OK(sdw_png_read(i ? png2 : png, &img, NULL), NULL);
        char text[2048];
        snprintf(text, sizeof text, "%s", sdw_png_text(&img, "parameters"));
        sdw_png_deinit(&img);
        ASSERT_STR_CONTAINS(text, "Negative prompt: blurry\nSteps: 2, Sampler: Euler,");
        ASSERT_STR_CONTAINS(text, i ? "Seed: 42," : "Seed: 41,");
    }
    /* --init-img (sd.cpp's name) as --init-image */
    char edit[1024];
    snprintf(edit, sizeof edit, "%s/alias_edit.png", sdw_test_tmpdir());
    rc = sdw_test_run_sdw(out, sizeof out,
                          "generate -m '%s' -p x --init-img '%s' --strength 0.5 --steps 4 -o '%s'",
                          g_model, png, edit);
    if (rc) fprintf(stderr, "%s\n", out);
    ASSERT_EQ_INT(rc, 0);
}

static void test_help_and_exit_codes(void) {
    char out[16384];
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "generate --help"), 0);
    ASSERT_STR_CONTAINS(out, "-b, --batch-count N");
    ASSERT_STR_CONTAINS(out, "--json");
    ASSERT_STR_CONTAINS(out, "- = standard output");
    ASSERT_STR_CONTAINS(out, "exit codes: 0 success, 1 failure, 2 usage error, 3 bad input");
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "serve --help"), 0);
    ASSERT_STR_CONTAINS(out, "--cors-origin O");
    ASSERT_STR_CONTAINS(out, "--shutdown-grace S");
    /* usage */
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "generate -p x --no-such-option"), 2);
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "generate -p x --steps=many"), 2);
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "frobnicate"), 2);
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "generate -p x -o - --json"), 2);
    /* bad input: a request the model refuses, an unreadable image, a seed too large */
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "generate -m '%s' -p x -W 100", g_model), 3);
    ASSERT_STR_CONTAINS(out, "not a multiple of 8");
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "generate -m '%s' -p x --init-image /nonexistent.png",
                                   g_model), 3);
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out,
                                   "generate -m '%s' -p x -s 9223372036854775807 -b 2", g_model), 3);
    ASSERT_STR_CONTAINS(out, "too large for 2 images");
    /* the model does not load */
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "generate -m /nonexistent/model -p x"), 4);
    ASSERT_STR_CONTAINS(out, "does not exist");
}

/* -o - writes the PNG itself to standard output (the same bytes as a file); --json prints the
 * result for scripts. */
static void test_stdout_and_json(void) {
    char file[1024], piped[1024], json[1024];
    snprintf(file, sizeof file, "%s/file.png", sdw_test_tmpdir());
    snprintf(piped, sizeof piped, "%s/piped.png", sdw_test_tmpdir());
    snprintf(json, sizeof json, "%s/result.json", sdw_test_tmpdir());
    const char *common = "-p 'a cat' -W 64 -H 64 --steps 2 -s 5 -q";
    ASSERT_EQ_INT(sh("'%s' generate -m '%s' %s -o '%s'", sdw_test_bin(), g_model, common, file), 0);
    ASSERT_EQ_INT(sh("'%s' generate -m '%s' %s -o - > '%s'", sdw_test_bin(), g_model, common, piped),
                  0);
    size_t na = 0, nb = 0;
    char *a = sdw_test_read_file(file, &na), *b = sdw_test_read_file(piped, &nb);
    ASSERT_TRUE(a && b && na == nb && na > 8 && memcmp(a, b, na) == 0);
    free(a);
    free(b);
    ASSERT_EQ_INT(sh("'%s' generate -m '%s' %s -b 2 -o '%s' --json > '%s'", sdw_test_bin(), g_model,
                     common, file, json), 0);
    json_t *j = json_load_file(json, 0, NULL);
    ASSERT_TRUE(j != NULL);
    json_t *imgs = json_object_get(j, "images");
    ASSERT_EQ_INT(json_array_size(imgs), 2);
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(imgs, 0), "path")), "file.png");
    ASSERT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(imgs, 1), "path")), "file_2.png");
    ASSERT_EQ_INT(json_integer_value(json_object_get(json_array_get(imgs, 1), "seed")), 6);
    ASSERT_TRUE(json_is_number(json_object_get(json_object_get(json_array_get(imgs, 0), "timings"),
                                               "denoise_s")));
    ASSERT_EQ_INT(json_integer_value(json_object_get(j, "seed")), 5);
    ASSERT_EQ_INT(json_integer_value(json_object_get(j, "steps")), 2);
    json_decref(j);
}

/* SIGINT stops a long run within one block of its step: exit 5, "cancelled". */
static void test_sigint_cancels(void) {
    char log[1024];
    snprintf(log, sizeof log, "%s/sigint.log", sdw_test_tmpdir());
    pid_t pid = fork();
    if (pid == 0) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "exec '%s' generate -v -m '%s' -p x -W 512 -H 512 --steps 1 --cfg-scale 1 "
                 "-t 1 -o /dev/null > '%s' 2>&1",
                 sdw_test_bin(), g_model, log);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    /* Signal once the model has loaded (the log says so; however long that takes on a loaded
     * machine: the child is alive and working), then a moment later: inside the UNet's first
     * step (minutes of CPU at 512x512), with the handler installed right after the load. */
    int st = 0;
    bool ended = false;
    for (;;) {
        size_t len = 0;
        char *got = sdw_test_read_file(log, &len);
        const bool loaded = got && strstr(got, "loaded ");
        free(got);
        if (loaded || (ended = waitpid(pid, &st, WNOHANG) != 0)) break;
        usleep(50000);
    }
    double t0 = sdw_time_now();
    if (!ended) {
        sleep(1);
        t0 = sdw_time_now();
        kill(pid, SIGINT);
    }
    for (int i = 0; i < 600 && waitpid(pid, &st, WNOHANG) == 0; i++) usleep(50000);
    double took = sdw_time_now() - t0;
    if (waitpid(pid, &st, WNOHANG) == 0) { /* still running after 30 s */
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    size_t n = 0;
    char *out = sdw_test_read_file(log, &n);
    fprintf(stderr, "  SIGINT: exit %d after %.2f s%s: %s", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
            took, ended ? " (ended before it loaded)" : "", out ? out : "");
    const bool cancelled = out && strstr(out, "cancelled");
    free(out);
    ASSERT_TRUE(!ended);
    ASSERT_TRUE(WIFEXITED(st));
    ASSERT_EQ_INT(WEXITSTATUS(st), 5);
    ASSERT_TRUE(cancelled);
    ASSERT_TRUE(took < 20);
}

/* A FIFO given as the model or an image blocked open() forever; now refused at once (the
 * timeout's 124 would mean it still blocks). */
static void test_fifo_is_refused(void) {
    char fifo[1024], log[1024];
    snprintf(fifo, sizeof fifo, "%s/fifo", sdw_test_tmpdir());
    snprintf(log, sizeof log, "%s/fifo.log", sdw_test_tmpdir());
    unlink(fifo);
    ASSERT_EQ_INT(mkfifo(fifo, 0600), 0);
    ASSERT_EQ_INT(sh("timeout 20 '%s' info -m '%s' > '%s' 2>&1", sdw_test_bin(), fifo, log), 3);
    size_t n = 0;
    char *out = sdw_test_read_file(log, &n);
    ASSERT_STR_CONTAINS(out ? out : "", "FIFO");
    free(out);
    ASSERT_EQ_INT(sh("timeout 20 '%s' generate -m '%s' -p x --init-image '%s' > '%s' 2>&1",
                     sdw_test_bin(), g_model, fifo, log), 3);
    out = sdw_test_read_file(log, &n);
    ASSERT_STR_CONTAINS(out ? out : "", "is not a file");
    free(out);
    unlink(fifo);
}

/* A pipeline folder whose VAE has scaling_factor 0, or without scheduler/: refused at load. */
static void test_broken_folders_are_refused(void) {
    char dir[1024], out[8192];
    snprintf(dir, sizeof dir, "%s/broken", sdw_test_tmpdir());
    ASSERT_EQ_INT(sh("rm -rf '%s' && mkdir -p '%s/vae' && for c in model_index.json scheduler "
                     "text_encoder tokenizer unet; do ln -s '%s'/$c '%s'/$c; done && "
                     "ln -s '%s/vae/diffusion_pytorch_model.safetensors' '%s/vae/' && "
                     "sed 's/\"scaling_factor\": [0-9.]*/\"scaling_factor\": 0/' "
                     "'%s/vae/config.json' > '%s/vae/config.json'",
                     dir, dir, g_model, dir, g_model, dir, g_model, dir), 0);
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "info -m '%s'", dir), 4);
    ASSERT_STR_CONTAINS(out, "scaling_factor 0 would divide the latents by zero");
    ASSERT_EQ_INT(sh("rm '%s/scheduler'", dir), 0);
    ASSERT_EQ_INT(sdw_test_run_sdw(out, sizeof out, "info -m '%s'", dir), 4);
    ASSERT_STR_CONTAINS(out, "without scheduler/scheduler_config.json");
}

int main(void) {
    snprintf(g_model, sizeof g_model, "%s", sdw_test_path("models/tiny-sd15"));
    RUN(test_aliases_batch_and_opt_equals);
    RUN(test_help_and_exit_codes);
    RUN(test_stdout_and_json);
    RUN(test_fifo_is_refused);
    RUN(test_broken_folders_are_refused);
    RUN(test_sigint_cancels);
    return sdw_test_finish();
}
