/* A temporary folder for fuzz targets whose parser reads files, removed at exit with the files
 * written into it (fuzz_put). One per process. */
#ifndef SDW_FUZZ_TMP_H
#define SDW_FUZZ_TMP_H

#include "core/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define FUZZ_MAX_FILES 8
static char g_fuzz_dir[256];
static char g_fuzz_files[FUZZ_MAX_FILES][64];

static void fuzz_cleanup(void) {
    char path[512];
    for (int k = 0; k < FUZZ_MAX_FILES; k++)
        if (g_fuzz_files[k][0]) {
            snprintf(path, sizeof path, "%s/%s", g_fuzz_dir, g_fuzz_files[k]);
            unlink(path);
        }
    rmdir(g_fuzz_dir);
}

/* The folder (created on first use). */
static const char *fuzz_dir(const char *name) {
    if (!g_fuzz_dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(g_fuzz_dir, sizeof g_fuzz_dir, "%s/sdw_fuzz_%s_XXXXXX", tmp && *tmp ? tmp : "/tmp",
                 name);
        if (!mkdtemp(g_fuzz_dir)) SDW_ABORT("fuzz: cannot create a folder under %s", g_fuzz_dir);
        atexit(fuzz_cleanup);
    }
    return g_fuzz_dir;
}

/* Writes file `name` (slot k) in the folder with data[0..n); returns its path (static). */
static const char *fuzz_put(int k, const char *name, const void *data, size_t n) {
    static char path[512];
    snprintf(g_fuzz_files[k], sizeof g_fuzz_files[k], "%s", name);
    snprintf(path, sizeof path, "%s/%s", g_fuzz_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0)
        SDW_ABORT("fuzz: cannot write %s", path);
    return path;
}

#endif
