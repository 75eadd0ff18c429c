/* The backend seam (nn/backend.h) holds: model code and everything above it reach the compute
 * backend only through the nn/ layers, so no source under src/models, src/text, src/sampling,
 * src/engine, src/server or src/cli includes a oneDNN header or calls a dnnl_* function; and in
 * all of src/ and include/ only the CPU backend's implementation (src/nn/backend_cpu.c) does.
 * Sources are read from the tree this test was built from (SDW_SOURCE_DIR overrides); comments
 * and string literals are skipped, so prose that names oneDNN is not a use of it. */
#define _GNU_SOURCE
#include "sdw_test.h"

#include <ctype.h>
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>

#define MAX_HITS 16

typedef struct hits {
    int n;
    char where[MAX_HITS][512]; /* "path:line: token" */
} hits;

/* The repository root: SDW_SOURCE_DIR, else three levels above this file. */
static const char *source_dir(void) {
    static char dir[1024];
    const char *env = getenv("SDW_SOURCE_DIR");
    if (env && *env) return env;
    snprintf(dir, sizeof dir, "%s", __FILE__);
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr(dir, '/');
        if (!slash) return NULL;
        *slash = '\0';
    }
    return dir;
}

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)(len > 0 ? len : 0) + 1);
    *n = len > 0 ? fread(buf, 1, (size_t)len, f) : 0;
    buf[*n] = '\0';
    fclose(f);
    return buf;
}

static void add_hit(hits *h, const char *path, int line, const char *what, size_t len) {
    if (h->n < MAX_HITS)
        snprintf(h->where[h->n], sizeof h->where[0], "%s:%d: %.*s", path, line, (int)len, what);
    h->n++;
}

/* Scans C/C++ source text for uses of oneDNN outside comments and string literals: identifiers
 * starting dnnl_ / DNNL_ and #include lines naming a dnnl header. Returns the number found. */
static int scan_text(const char *path, const char *s, size_t n, hits *h) {
    int found = 0, line = 1;
    bool line_start = true; /* only blanks so far on this line */
    for (size_t i = 0; i < n;) {
        const char c = s[i];
        if (c == '\n') {
            line++, i++, line_start = true;
        } else if (c == '/' && i + 1 < n && s[i + 1] == '/') {
            while (i < n && s[i] != '\n')
                i++;
        } else if (c == '/' && i + 1 < n && s[i + 1] == '*') {
            for (i += 2; i < n && !(s[i] == '*' && i + 1 < n && s[i + 1] == '/'); i++)
                if (s[i] == '\n') line++;
            i += 2;
        } else if (c == '#' && line_start) { /* a directive: #include "x" / <x> is not a string */
            size_t e = i;
            while (e < n && s[e] != '\n')
                e++;
            const char *inc = memmem(s + i, e - i, "include", 7);
            if (inc && memmem(s + i, e - i, "dnnl", 4)) {
                add_hit(h, path, line, s + i, e - i);
                found++;
            }
            i = inc ? e : i + 1; /* other directives: scan their tokens (#define X dnnl_y) */
            line_start = false;
        } else if (c == '"' || c == '\'') {
            for (i++; i < n && s[i] != c && s[i] != '\n'; i++)
                if (s[i] == '\\') i++;
            i++, line_start = false;
        } else if (isalpha((unsigned char)c) || c == '_') {
            size_t e = i;
            while (e < n && (isalnum((unsigned char)s[e]) || s[e] == '_'))
                e++;
            if (e - i > 5 && (!strncmp(s + i, "dnnl_", 5) || !strncmp(s + i, "DNNL_", 5))) {
                add_hit(h, path, line, s + i, e - i);
                found++;
            }
            i = e, line_start = false;
        } else {
            if (!isspace((unsigned char)c)) line_start = false;
            i++;
        }
    }
    return found;
}

static bool is_source(const char *name) {
    static const char *const ext[] = {".c", ".h", ".cc", ".cpp", ".hpp", ".cu", ".cuh"};
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof ext / sizeof ext[0]; i++)
        if (!strcmp(dot, ext[i])) return true;
    return false;
}

/* Every source file under dir (recursively) that uses oneDNN, except `allowed` (a path relative
 * to the root, or NULL), goes into h. Returns the number of files scanned. */
static int scan_tree(const char *root, const char *rel, const char *allowed, hits *h) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    DIR *d = opendir(path);
    if (!d) return 0;
    int n_files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[1024], full[2048];
        snprintf(sub, sizeof sub, "%s/%s", rel, e->d_name);
        snprintf(full, sizeof full, "%s/%s", root, sub);
        struct stat st;
        if (stat(full, &st)) continue;
        if (S_ISDIR(st.st_mode)) {
            n_files += scan_tree(root, sub, allowed, h);
        } else if (S_ISREG(st.st_mode) && is_source(e->d_name)) {
            n_files++;
            if (allowed && !strcmp(sub, allowed)) continue;
            size_t len;
            char *text = read_file(full, &len);
            if (text) scan_text(sub, text, len, h);
            free(text);
        }
    }
    closedir(d);
    return n_files;
}

static void report(const hits *h, const char *what) {
    for (int i = 0; i < h->n && i < MAX_HITS; i++)
        sdw_test_fail(__FILE__, __LINE__, "%s: %s", what, h->where[i]);
}

/* The scanner finds what it should and nothing in comments or strings. */
static void test_scanner(void) {
    static const char text[] = "// dnnl_engine_create in a comment\n"
                               "/* #include <oneapi/dnnl/dnnl.h>\n dnnl_sgemm */\n"
                               "const char *s = \"dnnl_x\"; int undnnl_y, dnnl;\n"
                               "  #include <oneapi/dnnl/dnnl.h>\n"
                               "static void f(void) { dnnl_sgemm(0); DNNL_ARG_SRC; }\n";
    hits h = {0};
    ASSERT_EQ_INT(scan_text("t.c", text, sizeof text - 1, &h), 3);
    ASSERT_STR_CONTAINS(h.where[0], "t.c:5: #include <oneapi/dnnl/dnnl.h>");
    ASSERT_STR_CONTAINS(h.where[1], "t.c:6: dnnl_sgemm");
    ASSERT_STR_CONTAINS(h.where[2], "t.c:6: DNNL_ARG_SRC");
}

/* Model code and everything above it: no oneDNN at all. */
static void test_no_onednn_above_nn(void) {
    const char *root = source_dir();
    ASSERT_TRUE(root != NULL);
    static const char *const layers[] = {"src/models", "src/text",   "src/sampling",
                                         "src/engine", "src/server", "src/cli"};
    hits h = {0};
    int n_files = 0;
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
        n_files += scan_tree(root, layers[i], NULL, &h);
    if (n_files < 20) /* the tree was not found where this test was built from */
        sdw_test_fail(__FILE__, __LINE__, "only %d sources under %s: set SDW_SOURCE_DIR", n_files,
                      root);
    report(&h, "oneDNN used above nn/ (go through nn/nn.h and nn/backend.h)");
}

/* In all of src/ and include/, oneDNN is the CPU backend's alone, and that file does use it
 * (the scan is not vacuous). */
static void test_onednn_only_in_cpu_backend(void) {
    const char *root = source_dir();
    ASSERT_TRUE(root != NULL);
    hits h = {0};
    scan_tree(root, "src", "src/nn/backend_cpu.c", &h);
    scan_tree(root, "include", NULL, &h);
    report(&h, "oneDNN used outside src/nn/backend_cpu.c");
    char path[1024];
    snprintf(path, sizeof path, "%s/src/nn/backend_cpu.c", root);
    size_t len;
    char *text = read_file(path, &len);
    ASSERT_TRUE(text != NULL);
    hits own = {0};
    const int n = scan_text("src/nn/backend_cpu.c", text, len, &own);
    free(text);
    ASSERT_TRUE(n > 0);
}

int main(void) {
    RUN(test_scanner);
    RUN(test_no_onednn_above_nn);
    RUN(test_onednn_only_in_cpu_backend);
    return sdw_test_finish();
}
