/* The LoRA folder and the prompt's LoRA tags (sdw/lora.h). Everything a request names goes
 * through sdw_lora_resolve, which is where a name is kept inside the folder: the name's own
 * spelling is checked first (no absolute path, no "." or ".." component), then the file's real
 * path (symlinks resolved) must lie under the folder's real path. */
#define _GNU_SOURCE
#include "sdw/lora.h"

#include "core/common.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define EXT ".safetensors"
#define MAX_DEPTH 16          /* subfolder levels a listing descends */
#define MAX_ENTRIES 100000    /* files a listing returns */

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

/* ---- listing ---- */

typedef struct lister {
    const char *root_real; /* the folder's real path */
    sdw_lora_entry *e;
    int n, cap;
} lister;

static void add_entry(lister *l, const char *rel, int64_t size) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 32;
        l->e = realloc(l->e, sizeof *l->e * (size_t)l->cap);
        if (!l->e) SDW_ABORT("out of memory");
    }
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    char *name = sdw_xstrdup(base);
    name[strlen(name) - strlen(EXT)] = 0;
    l->e[l->n++] = (sdw_lora_entry){name, sdw_xstrdup(rel), size};
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
        if (S_ISDIR(st.st_mode)) {
            if (depth < MAX_DEPTH) walk(l, dir, sub, depth + 1);
            continue;
        }
        if (!ends_with(de->d_name, EXT) || strlen(de->d_name) == strlen(EXT)) continue;
        if (S_ISLNK(st.st_mode)) { /* a link counts when it leads to a file inside the folder */
            char *real = realpath(full, NULL);
            bool ok = real && inside(l->root_real, real) && stat(real, &st) == 0 &&
                      S_ISREG(st.st_mode);
            free(real);
            if (!ok) continue;
        } else if (!S_ISREG(st.st_mode)) {
            continue;
        }
        add_entry(l, sub, (int64_t)st.st_size);
    }
    closedir(d);
}

static int by_path(const void *a, const void *b) {
    return strcmp(((const sdw_lora_entry *)a)->path, ((const sdw_lora_entry *)b)->path);
}

static sdw_status check_dir(const char *dir, char **real, sdw_error *err) {
    struct stat st;
    if (!dir || !*dir)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "no LoRA folder is configured (start with --lora-dir DIR)");
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return sdw_error_set(err, SDW_E_NOT_FOUND, "LoRA folder %s is not a folder", dir);
    *real = realpath(dir, NULL);
    if (!*real)
        return sdw_error_set(err, SDW_E_IO, "LoRA folder %s: %s", dir, strerror(errno));
    return SDW_OK;
}

sdw_status sdw_lora_list(const char *dir, sdw_lora_entry **out, int *n, sdw_error *err) {
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

void sdw_lora_list_free(sdw_lora_entry *list, int n) {
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
    if (!name || !*name) return sdw_error_set(err, SDW_E_INVALID_ARG, "empty LoRA name");
    const size_t n = strlen(name);
    if (n > 1024) return sdw_error_set(err, SDW_E_INVALID_ARG, "LoRA name is too long");
    if (name[0] == '/')
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "LoRA '%s': absolute paths are refused (name a file in the LoRA "
                             "folder)",
                             name);
    for (const char *c = name; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == '\\')
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "LoRA name '%s' holds a control character or a backslash", name);
    for (const char *p = name; *p;) {
        const char *e = strchr(p, '/');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "LoRA '%s': '.', '..' and empty path components are refused (a "
                                 "name stays inside the LoRA folder)",
                                 name);
        p += len + (e != NULL);
    }
    return SDW_OK;
}

/* rel (relative to the real folder root) as a real path inside it, or an error. */
static sdw_status real_inside(const char *root, const char *rel, const char *name, char **out,
                              sdw_error *err) {
    char full[PATH_MAX];
    if (snprintf(full, sizeof full, "%s/%s", root, rel) >= (int)sizeof full)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "LoRA name '%s' is too long", name);
    char *real = realpath(full, NULL);
    struct stat st;
    if (!real) return sdw_error_set(err, SDW_E_NOT_FOUND, "LoRA '%s' not found", name);
    if (!inside(root, real)) {
        free(real);
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "LoRA '%s' leads outside the LoRA folder (a symbolic link out of "
                             "it): refused",
                             name);
    }
    if (stat(real, &st) != 0 || !S_ISREG(st.st_mode)) {
        free(real);
        return sdw_error_set(err, SDW_E_NOT_FOUND, "LoRA '%s' is not a file", name);
    }
    *out = real;
    return SDW_OK;
}

sdw_status sdw_lora_resolve(const char *dir, const char *name, char **path, sdw_error *err) {
    sdw_status s = check_name(name, err);
    if (s) return s;
    char *root = NULL;
    if ((s = check_dir(dir, &root, err))) return s;
    char rel[PATH_MAX];
    if (snprintf(rel, sizeof rel, "%s%s", name, ends_with(name, EXT) ? "" : EXT) >=
        (int)sizeof rel) {
        free(root);
        return sdw_error_set(err, SDW_E_INVALID_ARG, "LoRA name '%s' is too long", name);
    }
    s = real_inside(root, rel, name, path, err);
    if (s != SDW_E_NOT_FOUND || strchr(name, '/')) {
        free(root);
        return s;
    }
    /* A bare stem not at the top: the files of that stem in the subfolders. */
    sdw_lora_entry *list = NULL;
    int n = 0, hit = -1;
    lister l = {.root_real = root};
    walk(&l, root, "", 0);
    list = l.e;
    n = l.n;
    for (int i = 0; i < n; i++) {
        const char *base = strrchr(list[i].path, '/');
        if (!base || strcmp(base + 1, rel) != 0) continue;
        if (hit >= 0) {
            s = sdw_error_set(err, SDW_E_INVALID_ARG,
                              "LoRA '%s' is ambiguous: %s and %s; name it with its folder", name,
                              list[hit].path, list[i].path);
            break;
        }
        hit = i;
    }
    if (s == SDW_E_NOT_FOUND && hit < 0)
        s = sdw_error_set(err, SDW_E_NOT_FOUND, "LoRA '%s' not found in the LoRA folder", name);
    else if (s == SDW_E_NOT_FOUND)
        s = real_inside(root, list[hit].path, name, path, err);
    sdw_lora_list_free(list, n);
    free(root);
    return s;
}

/* ---- multipliers and tags ---- */

sdw_status sdw_lora_multiplier_parse(const char *s, size_t len, float *out, sdw_error *err) {
    char buf[64];
    /* what strtod takes beyond decimals (hex, inf, nan) is refused: only digits, sign, '.', 'e' */
    bool ok = len > 0 && len < sizeof buf;
    for (size_t i = 0; ok && i < len; i++)
        ok = isdigit((unsigned char)s[i]) || strchr("+-.eE", s[i]);
    double v = 0;
    if (ok) {
        memcpy(buf, s, len);
        buf[len] = 0;
        char *end;
        errno = 0;
        v = strtod(buf, &end);
        ok = end != buf && *end == 0 && errno == 0 && isfinite(v) &&
             fabs(v) <= SDW_LORA_MAX_MULTIPLIER;
    }
    if (!ok)
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "LoRA multiplier '%.*s' is not a number in [-%g, %g]",
                             (int)SDW_MIN(len, 40), s, (double)SDW_LORA_MAX_MULTIPLIER,
                             (double)SDW_LORA_MAX_MULTIPLIER);
    *out = (float)v;
    return SDW_OK;
}

/* The tag opening at p ("<lora:" or "<lyco:"), or NULL. */
static const char *tag_open(const char *p) {
    return (!strncmp(p, "<lora:", 6) || !strncmp(p, "<lyco:", 6)) ? p + 6 : NULL;
}

static void trim(const char **a, const char **b) {
    while (*a < *b && isspace((unsigned char)**a)) (*a)++;
    while (*b > *a && isspace((unsigned char)(*b)[-1])) (*b)--;
}

/* One tag's content [a, b) (between "<lora:" and '>'): NAME or NAME:M. */
static sdw_status parse_tag(const char *a, const char *b, sdw_lora_tag *t, sdw_error *err) {
    const char *colon = memchr(a, ':', (size_t)(b - a));
    const char *na = a, *nb = colon ? colon : b;
    trim(&na, &nb);
    if (na == nb)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "<lora:%.*s>: the LoRA name is empty",
                             (int)SDW_MIN(b - a, 80), a);
    float m = 1.0f;
    if (colon) {
        const char *ma = colon + 1, *mb = b;
        if (memchr(ma, ':', (size_t)(mb - ma)))
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "<lora:%.*s>: only NAME or NAME:MULTIPLIER is supported (no "
                                 "separate text-encoder and UNet multipliers)",
                                 (int)SDW_MIN(b - a, 80), a);
        trim(&ma, &mb);
        sdw_status s = sdw_lora_multiplier_parse(ma, (size_t)(mb - ma), &m, err);
        if (s) {
            sdw_error_prefix(err, "<lora:%.*s>", (int)SDW_MIN(b - a, 80), a);
            return s;
        }
    }
    t->name = sdw_xmalloc((size_t)(nb - na) + 1);
    memcpy(t->name, na, (size_t)(nb - na));
    t->name[nb - na] = 0;
    t->multiplier = m;
    return SDW_OK;
}

sdw_status sdw_lora_prompt_tags(const char *prompt, sdw_lora_tag **tags, int *n, char **stripped,
                                sdw_error *err) {
    if (!prompt) prompt = "";
    const size_t len = strlen(prompt);
    char *text = sdw_xmalloc(len + 1);
    size_t o = 0;
    sdw_lora_tag *t = NULL;
    int nt = 0, cap = 0;
    sdw_status s = SDW_OK;
    for (const char *p = prompt; *p && s == SDW_OK;) {
        const char *a = tag_open(p);
        if (!a) {
            text[o++] = *p++;
            continue;
        }
        const char *b = strchr(a, '>');
        if (!b) {
            s = sdw_error_set(err, SDW_E_INVALID_ARG, "unterminated LoRA tag '%.*s' (no '>')",
                              (int)SDW_MIN(strlen(p), 80), p);
            break;
        }
        if (nt == cap) {
            cap = cap ? 2 * cap : 4;
            t = realloc(t, sizeof *t * (size_t)cap);
            if (!t) SDW_ABORT("out of memory");
        }
        if ((s = parse_tag(a, b, &t[nt], err)) == SDW_OK) nt++;
        p = b + 1;
    }
    text[o] = 0;
    if (s) {
        sdw_lora_tags_free(t, nt);
        free(text);
        return s;
    }
    if (stripped) *stripped = text;
    else free(text);
    if (!nt) {
        free(t);
        t = NULL;
    }
    *tags = t;
    *n = nt;
    return SDW_OK;
}

void sdw_lora_tags_free(sdw_lora_tag *tags, int n) {
    for (int i = 0; tags && i < n; i++)
        free(tags[i].name);
    free(tags);
}
