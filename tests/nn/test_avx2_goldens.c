/* The model goldens on an AVX2-only CPU (issue 16): runs the golden tests built beside this one
 * (test_sd_pipeline, test_sd_variants, test_sd_img2img, test_flux_pipeline, test_sd3_pipeline)
 * and the kernel tests (test_nn, test_nn_backend, test_attention_bias, test_compact_fp8,
 * test_vae) with SDW_MAX_ISA=avx2 in their environment: every kernel of ours and oneDNN's then
 * runs as on a CPU without AVX-512 (core/cpu.h), and each must pass as it does uncapped: f32
 * exact on every golden. bf16 is refused under the cap (no bf16 arithmetic below AVX512-BF16),
 * so the bf16 tests have nothing to run there. */
#include "sdw_test.h"

#include "core/common.h"
#include "core/cpu.h"

#include <libgen.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[4096];

/* Runs g_dir/name with SDW_MAX_ISA=avx2, its output into the file `log`; its exit status (-1
 * when it could not run). */
static int run_capped(const char *name, const char *log) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    if (access(path, X_OK) != 0) return -1;
    fflush(NULL);
    const pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        setenv("SDW_MAX_ISA", "avx2", 1);
        FILE *f = fopen(log, "w");
        if (f) {
            dup2(fileno(f), 1);
            dup2(fileno(f), 2);
        }
        execl(path, name, (char *)NULL);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The last `tail` bytes of the file to stderr. */
static void show_tail(const char *log, long tail) {
    FILE *f = fopen(log, "r");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, size > tail ? size - tail : 0, SEEK_SET);
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, got, stderr);
    fclose(f);
}

static void check(const char *name) {
    char log[256];
    snprintf(log, sizeof log, "/tmp/sdw_avx2_%s_%ld.log", name, (long)getpid());
    const double t0 = sdw_time_now();
    const int rc = run_capped(name, log);
    fprintf(stderr, "  %s under SDW_MAX_ISA=avx2: exit %d (%.1f s)\n", name, rc,
            sdw_time_now() - t0);
    if (rc != 0 && rc != 77) {
        show_tail(log, 3000);
        sdw_test_fail(__FILE__, __LINE__, "%s failed under the AVX2 cap (exit %d)", name, rc);
    }
    unlink(log);
}

static void test_sd_goldens_avx2(void) {
    check("test_sd_pipeline");
    check("test_sd_variants");
    check("test_sd_img2img");
}

static void test_flux_sd3_goldens_avx2(void) {
    check("test_flux_pipeline");
    check("test_sd3_pipeline");
}

static void test_kernels_avx2(void) {
    check("test_nn");
    check("test_nn_backend");
    check("test_attention_bias");
    check("test_compact_fp8");
    check("test_vae");
}

int main(int argc, char **argv) {
    (void)argc;
    if (sdw_cpu_isa_hw() < SDW_ISA_AVX2) {
        fprintf(stderr, "skipped: this CPU has no AVX2 (%s)\n", sdw_cpu_flags());
        return 77;
    }
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    snprintf(g_dir, sizeof g_dir, "%s", dirname(n > 0 ? (self[n] = 0, self) : argv[0]));
    RUN(test_sd_goldens_avx2);
    RUN(test_flux_sd3_goldens_avx2);
    RUN(test_kernels_avx2);
    return sdw_test_finish();
}
