/* The ControlNet folder (sdw/controlnet.h). Everything a request names goes through
 * sdw_controlnet_resolve, which is where a name is kept inside the folder: the name's own
 * spelling is checked first (relative, no "." or ".." component), then the real path of what it
 * names (symlinks resolved) must lie under the folder's real path. */
#define _GNU_SOURCE
#include "sdw/controlnet.h"

#include "core/common.h"
#include "io/safetensors.h"

#include <jansson.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define EXT ".safetensors"
#define MAX_DEPTH 8        /* subfolder levels a listing descends */
#define MAX_ENTRIES 10000  /* ControlNets a listing returns */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Whether real (a resolved path) is root (resolved) or below it. */
static bool inside(const char *root, const char *real) {
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/') return real[0] == '/';
    return strncmp(root, real, n) == 0 && (real[n] == '/' || real[n] == 0);
}

/* A diffusers ControlNet folder: one holding a config.json. */
static bool is_model_folder(const char *path) {
    char p[PATH_MAX];
    struct stat st;
    return snprintf(p, sizeof p, "%s/config.json", path) < (int)sizeof p && stat(p, &st) == 0 &&
           S_ISREG(st.st_mode);
}

/* What a listing shows: a folder whose config.json is a ControlNetModel's, a .safetensors file
 * in the original layout (its input_hint_block, with or without the control_model. prefix).
 * Resolution does not look inside: the loader says what is wrong with a file a name picks. */
static bool is_controlnet_folder(const char *path) {
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s/config.json", path) >= (int)sizeof p) return false;
    json_t *cfg = json_load_file(p, 0, NULL);
    const char *cls = json_string_value(json_object_get(cfg, "_class_name"));
    const bool ok = cls && !strcmp(cls, "ControlNetModel");
    json_decref(cfg);
    return ok;
}

static bool is_controlnet_file(const char *path) {
    sdw_st_file *f = NULL;
    if (sdw_st_open(path, &f, NULL) != SDW_OK) return false;
    const bool ok = sdw_st_find(f, "control_model.input_hint_block.0.weight") ||
                    sdw_st_find(f, "input_hint_block.0.weight");
    sdw_st_close(f);
    return ok;
}

/* ---- listing ---- */

typedef struct lister {
    const char *root_real;
    sdw_controlnet_entry *e;
    int n, cap;
} lister;

static void add_entry(lister *l, const char *rel, bool file) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->e = realloc(l->e, sizeof *l->e * (size_t)l->cap);
        if (!l->e) SDW_ABORT("out of memory");
    }
    const char *base = strrchr(rel, '/');
    char *name = sdw_xstrdup(base ? base + 1 : rel);
    if (file) name[strlen(name) - strlen(EXT)] = 0;
    l->e[l->n++] = (sdw_controlnet_entry){name, sdw_xstrdup(rel)};
}

/* Walks dir/rel (rel "" = the folder itself). */
static void walk(lister *l, const char *dir, const char *rel, int depth) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s%s%s", dir, *rel ? "/" : "", rel) >= (int)sizeof path)
        return;
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) && l->n < MAX_ENTRIES) {
        if (de->d_name[0] == '.') continue; /* ".", "..", hidden */
        char sub[PATH_MAX], full[PATH_MAX];
        if (snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", de->d_name) >=
                (int)sizeof sub ||
            snprintf(full, sizeof full, "%s/%s", dir, sub) >= (int)sizeof full)
            continue;
        struct stat st;
        if (lstat(full, &st) != 0) continue;
        if (S_ISLNK(st.st_mode)) { /* a link counts when it leads inside the folder */
            char *real = realpath(full, NULL);
            bool ok = real && inside(l->root_real, real) && stat(real, &st) == 0;
            free(real);
            if (!ok) continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (is_model_folder(full)) {
                if (is_controlnet_folder(full)) add_entry(l, sub, false);
            } else if (depth < MAX_DEPTH) {
                walk(l, dir, sub, depth + 1);
            }
        } else if (S_ISREG(st.st_mode) && ends_with(de->d_name, EXT) &&
                   strlen(de->d_name) > strlen(EXT) && is_controlnet_file(full)) {
            add_entry(l, sub, true);
        }
    }
    closedir(d);
}

static int by_path(const void *a, const void *b) {
    return strcmp(((const sdw_controlnet_entry *)a)->path,
                  ((const sdw_controlnet_entry *)b)->path);
}

static sdw_status check_dir(const char *dir, char **real, sdw_error *err) {
    struct stat st;
    if (!dir || !*dir)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "no ControlNet folder is configured (start with --controlnet-dir "
                             "DIR)");
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return sdw_error_set(err, SDW_E_NOT_FOUND, "ControlNet folder %s is not a folder", dir);
    *real = realpath(dir, NULL);
    if (!*real)
        return sdw_error_set(err, SDW_E_IO, "ControlNet folder %s: %s", dir, strerror(errno));
    return SDW_OK;
}

sdw_status sdw_controlnet_list(const char *dir, sdw_controlnet_entry **out, int *n,
                               sdw_error *err) {
    char *root = NULL;
    sdw_status s = check_dir(dir, &root, err);
    if (s) return s;
    lister l = {.root_real = root};
    walk(&l, root, "", 0);
    free(root);
    if (l.n) qsort(l.e, (size_t)l.n, sizeof *l.e, by_path);
    *out = l.e;
    *n = l.n;
    return SDW_OK;
}

void sdw_controlnet_list_free(sdw_controlnet_entry *list, int n) {
    for (int i = 0; list && i < n; i++) {
        free(list[i].name);
        free(list[i].path);
    }
    free(list);
}

/* ---- names ---- */

/* A name's own spelling: relative, no "." / ".." / empty component, no control character, no
 * backslash (a Windows separator would be a file name character here: refused as surprising). */
static sdw_status check_name(const char *name, sdw_error *err) {
    if (!*name) return sdw_error_set(err, SDW_E_INVALID_ARG, "empty ControlNet name");
    if (name[0] == '/')
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "ControlNet '%s': absolute paths are refused (name a ControlNet of "
                             "the ControlNet folder)",
                             name);
    for (const char *c = name; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == '\\')
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "ControlNet name '%s' holds a control character or a backslash",
                                 name);
    for (const char *p = name; *p;) {
        const char *e = strchr(p, '/');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "ControlNet '%s': '.', '..' and empty path components are "
                                 "refused (a name stays inside the ControlNet folder)",
                                 name);
        p += len + (e != NULL);
    }
    return SDW_OK;
}

/* root/rel as a real path inside root naming a ControlNet (a model folder or a file), or an
 * error (SDW_E_NOT_FOUND when there is nothing there). */
static sdw_status real_inside(const char *root, const char *rel, const char *name, char **out,
                              sdw_error *err) {
    char full[PATH_MAX];
    if (snprintf(full, sizeof full, "%s/%s", root, rel) >= (int)sizeof full)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "ControlNet name '%s' is too long", name);
    char *real = realpath(full, NULL);
    struct stat st;
    if (!real) return sdw_error_set(err, SDW_E_NOT_FOUND, "ControlNet '%s' not found", name);
    if (!inside(root, real) || !strcmp(root, real)) {
        free(real);
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "ControlNet '%s' leads outside the ControlNet folder (a symbolic "
                             "link out of it): refused",
                             name);
    }
    const bool ok = stat(real, &st) == 0 &&
                    ((S_ISDIR(st.st_mode) && is_model_folder(real)) || S_ISREG(st.st_mode));
    if (!ok) {
        free(real);
        return sdw_error_set(err, SDW_E_NOT_FOUND,
                             "ControlNet '%s' is neither a ControlNet folder (with a config.json) "
                             "nor a file",
                             name);
    }
    *out = real;
    return SDW_OK;
}

/* name without AUTOMATIC1111's " [hash]" suffix, into buf. */
static const char *strip_hash(const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", name);
    size_t n = strlen(buf);
    if (n > 3 && buf[n - 1] == ']') {
        char *open = strrchr(buf, '[');
        if (open && open > buf && open[-1] == ' ') {
            open[-1] = 0;
            return buf;
        }
    }
    return buf;
}

sdw_status sdw_controlnet_resolve(const char *dir, const char *name_in, char **path,
                                  sdw_error *err) {
    if (!name_in) return sdw_error_set(err, SDW_E_INVALID_ARG, "no ControlNet named");
    if (strlen(name_in) > 1024)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "ControlNet name is too long");
    char name[1100];
    strip_hash(name_in, name, sizeof name);
    sdw_status s = check_name(name, err);
    if (s) return s;
    char *root = NULL;
    if ((s = check_dir(dir, &root, err))) return s;
    s = real_inside(root, name, name_in, path, err);
    if (s == SDW_E_NOT_FOUND && !ends_with(name, EXT)) {
        char rel[PATH_MAX];
        snprintf(rel, sizeof rel, "%s%s", name, EXT);
        s = real_inside(root, rel, name_in, path, err);
    }
    if (s != SDW_E_NOT_FOUND || strchr(name, '/')) {
        free(root);
        return s;
    }
    /* A bare name not at the top: the ControlNets of that name in the subfolders. */
    lister l = {.root_real = root};
    walk(&l, root, "", 0);
    int found = -1, other = -1;
    for (int i = 0; i < l.n; i++)
        if (!strcmp(l.e[i].name, name)) {
            if (found < 0) found = i;
            else if (other < 0) other = i;
        }
    if (found >= 0 && other >= 0)
        s = sdw_error_set(err, SDW_E_INVALID_ARG,
                          "ControlNet '%s' is ambiguous: %s and %s (name it by its path)",
                          name_in, l.e[found].path, l.e[other].path);
    else if (found >= 0)
        s = real_inside(root, l.e[found].path, name_in, path, err);
    else
        s = sdw_error_set(err, SDW_E_NOT_FOUND, "ControlNet '%s' not found in %s", name_in, dir);
    sdw_controlnet_list_free(l.e, l.n);
    free(root);
    return s;
}
