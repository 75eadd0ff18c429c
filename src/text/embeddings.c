/* text/embeddings.c — see embeddings.h. The folder is walked once, every candidate file
 * collected with its path relative to the folder, the list sorted (so the numbering of vectors
 * and which of two same-named files wins do not depend on readdir's order), then each file
 * read and its vectors copied to f32: the files are closed after loading. */
#include "text/embeddings.h"

#include "core/common.h"
#include "io/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <utf8proc.h>

typedef struct emb {
    char *name, *file;
    const char *skipped; /* static reason, or NULL */
    int n, width;        /* vectors, features (single) or clip_l + clip_g */
    float *single;       /* [n, width] the one tensor, or NULL */
    float *l, *g;        /* [n, width_l], [n, width_g] of an SDXL file, or NULL */
    int width_l, width_g;
    int offset;
} emb;

struct sdw_embeddings {
    emb *v;
    int n, cap;
};

static emb *push(sdw_embeddings *e) {
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 16;
        e->v = realloc(e->v, (size_t)e->cap * sizeof *e->v);
        if (!e->v) SDW_ABORT("out of memory");
    }
    emb *x = &e->v[e->n++];
    memset(x, 0, sizeof *x);
    return x;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcasecmp(s + n - k, suffix) == 0;
}

/* The file's extension kind: 1 = safetensors, 2 = a pickle, 0 = neither (ignored). */
static int kind_of(const char *name) {
    if (ends_with(name, ".safetensors")) return 1;
    static const char *const pickles[] = {".pt", ".bin", ".ckpt", ".pth"};
    for (size_t i = 0; i < SDW_ARRAY_LEN(pickles); i++)
        if (ends_with(name, pickles[i])) return 2;
    return 0;
}

/* Whether real (a resolved path) is root or inside it. */
static bool inside(const char *root, const char *real) {
    size_t n = strlen(root);
    return strncmp(root, real, n) == 0 && (real[n] == '/' || real[n] == 0 || root[n - 1] == '/');
}

typedef struct walk {
    sdw_embeddings *e;
    const char *root_real;
    size_t n_entries;
    sdw_error *err;
} walk;

/* Records the file at abs (relative path rel) as a candidate, or as skipped when it is a link
 * out of the folder. */
static void candidate(walk *w, const char *abs, const char *rel, const char *base, bool link) {
    const int kind = kind_of(base);
    if (!kind) return;
    emb *x = push(w->e);
    x->file = sdw_xstrdup(rel);
    const char *dot = strrchr(base, '.');
    x->name = sdw_xstrdup(base);
    x->name[dot - base] = 0;
    if (kind == 2) x->skipped = "a pickle file (.pt/.bin/.ckpt/.pth) is never loaded: convert it "
                                "to .safetensors";
    /* a stem that is not UTF-8 cannot appear in a prompt */
    for (const utf8proc_uint8_t *s = (const utf8proc_uint8_t *)x->name; *s;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(s, -1, &c);
        if (k <= 0) {
            x->skipped = "the file name is not UTF-8";
            break;
        }
        s += k;
    }
    if (!x->name[0] && !x->skipped) x->skipped = "the file name has no stem";
    if (link && !x->skipped) {
        char *real = realpath(abs, NULL);
        struct stat st;
        if (!real || !inside(w->root_real, real) || stat(real, &st) || !S_ISREG(st.st_mode))
            x->skipped = "a symbolic link out of the folder (or to no regular file)";
        free(real);
    }
}

static sdw_status walk_dir(walk *w, const char *abs, const char *rel, int depth) {
    DIR *d = opendir(abs);
    if (!d) {
        if (depth == 0)
            return sdw_error_set(w->err, SDW_E_NOT_FOUND, "embeddings folder %s: %s", abs,
                                 strerror(errno));
        SDW_WARN("embeddings: cannot read the folder %s: %s", abs, strerror(errno));
        return SDW_OK;
    }
    sdw_status st = SDW_OK;
    for (struct dirent *de; st == SDW_OK && (de = readdir(d));) {
        if (de->d_name[0] == '.') continue; /* ".", "..", hidden files */
        if (++w->n_entries > SDW_EMBEDDINGS_MAX_ENTRIES) {
            st = sdw_error_set(w->err, SDW_E_INVALID_ARG,
                               "embeddings folder %s: more than %d entries", w->root_real,
                               SDW_EMBEDDINGS_MAX_ENTRIES);
            break;
        }
        char a[PATH_MAX], r[PATH_MAX];
        int na = snprintf(a, sizeof a, "%s/%s", abs, de->d_name);
        int nr = snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        if (na < 0 || (size_t)na >= sizeof a || nr < 0 || (size_t)nr >= sizeof r) continue;
        struct stat ls;
        if (lstat(a, &ls)) continue;
        if (S_ISDIR(ls.st_mode)) {
            if (depth + 1 < SDW_EMBEDDINGS_MAX_DEPTH) st = walk_dir(w, a, r, depth + 1);
        } else if (S_ISREG(ls.st_mode) || S_ISLNK(ls.st_mode)) {
            candidate(w, a, r, de->d_name, S_ISLNK(ls.st_mode));
        }
    }
    closedir(d);
    return st;
}

static int cmp_emb(const void *a, const void *b) {
    const emb *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->file, y->file);
}

/* rows [n, width] f32 of a 1-D or 2-D float tensor, or NULL with *why. */
static float *read_rows(const sdw_st_tensor *t, int *n, int *width, const char **why) {
    if (!sdw_dtype_is_float(t->dtype) || (t->n_dims != 1 && t->n_dims != 2)) {
        *why = "its tensor is not a float vector or matrix";
        return NULL;
    }
    const int64_t rows = t->n_dims == 2 ? t->shape[0] : 1, cols = t->shape[t->n_dims - 1];
    if (rows < 1 || cols < 1 || cols > 65536) {
        *why = "its tensor has no vectors (or absurdly wide ones)";
        return NULL;
    }
    if (rows > SDW_EMBEDDING_MAX_VECTORS) {
        *why = "more than 75 vectors: longer than a prompt chunk";
        return NULL;
    }
    float *v = sdw_xmalloc((size_t)(rows * cols) * sizeof *v);
    sdw_convert_to_f32(t->dtype, t->data, v, (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(v[i])) {
            free(v);
            *why = "its vectors hold NaN or infinity";
            return NULL;
        }
    *n = (int)rows;
    *width = (int)cols;
    return v;
}

/* Reads x's file (path abs) into x, or sets x->skipped. */
static void load_one(emb *x, const char *abs) {
    struct stat st;
    if (stat(abs, &st) || !S_ISREG(st.st_mode)) {
        x->skipped = "not a readable regular file";
        return;
    }
    if ((uint64_t)st.st_size > SDW_EMBEDDING_MAX_BYTES) {
        x->skipped = "larger than 64 MiB: not an embedding";
        return;
    }
    sdw_st_file *f = NULL;
    sdw_error err = {0};
    if (sdw_st_open(abs, &f, &err)) {
        SDW_WARN("embeddings: %s", err.msg);
        x->skipped = "not a valid safetensors file";
        return;
    }
    const sdw_st_tensor *l = sdw_st_find(f, "clip_l"), *g = sdw_st_find(f, "clip_g");
    const char *why = NULL;
    if (l && g) { /* SDXL: both roles, the same number of tokens */
        int nl = 0, ng = 0;
        x->l = read_rows(l, &nl, &x->width_l, &why);
        if (x->l) x->g = read_rows(g, &ng, &x->width_g, &why);
        if (x->g && nl != ng) why = "clip_l and clip_g hold different numbers of vectors";
        x->n = nl;
        x->width = x->width_l + x->width_g;
    } else if (sdw_st_count(f) == 1) {
        x->single = read_rows(sdw_st_at(f, 0), &x->n, &x->width, &why);
    } else {
        why = sdw_st_count(f) ? "several tensors: neither a textual-inversion embedding nor a "
                                "diffusers concept"
                              : "no tensors";
    }
    sdw_st_close(f);
    if (why || (!x->single && !x->g)) {
        x->skipped = why ? why : "unreadable";
        free(x->single);
        free(x->l);
        free(x->g);
        x->single = x->l = x->g = NULL;
        x->n = x->width = x->width_l = x->width_g = 0;
    }
}

sdw_status sdw_embeddings_load(const char *dir, sdw_embeddings **out, sdw_error *err) {
    SDW_ASSERT(dir && out);
    char *root = realpath(dir, NULL);
    struct stat st;
    if (!root || stat(root, &st) || !S_ISDIR(st.st_mode)) {
        free(root);
        return sdw_error_set(err, SDW_E_NOT_FOUND, "embeddings folder %s is not a folder", dir);
    }
    sdw_embeddings *e = sdw_xcalloc(1, sizeof *e);
    walk w = {e, root, 0, err};
    sdw_status s = walk_dir(&w, root, "", 0);
    if (s) {
        free(root);
        sdw_embeddings_destroy(e);
        return s;
    }
    if (e->n) qsort(e->v, (size_t)e->n, sizeof *e->v, cmp_emb);
    int offset = 0, n_ok = 0;
    for (int i = 0; i < e->n; i++) {
        emb *x = &e->v[i];
        if (!x->skipped)
            for (int j = 0; j < i; j++)
                if (!e->v[j].skipped && !strcmp(e->v[j].name, x->name)) {
                    x->skipped = "another file of the folder has the same name";
                    break;
                }
        if (!x->skipped) {
            char abs[PATH_MAX];
            snprintf(abs, sizeof abs, "%s/%s", root, x->file);
            load_one(x, abs);
        }
        if (x->skipped) {
            SDW_WARN("embeddings: %s skipped: %s", x->file, x->skipped);
            continue;
        }
        x->offset = offset;
        offset += x->n;
        n_ok++;
    }
    SDW_INFO("embeddings: %d loaded from %s%s", n_ok, dir, e->n > n_ok ? " (some skipped)" : "");
    free(root);
    *out = e;
    return SDW_OK;
}

void sdw_embeddings_destroy(sdw_embeddings *e) {
    if (!e) return;
    for (int i = 0; i < e->n; i++) {
        free(e->v[i].name);
        free(e->v[i].file);
        free(e->v[i].single);
        free(e->v[i].l);
        free(e->v[i].g);
    }
    free(e->v);
    free(e);
}

int sdw_embeddings_count(const sdw_embeddings *e) { return e ? e->n : 0; }

sdw_embedding_info sdw_embeddings_info(const sdw_embeddings *e, int i) {
    SDW_ASSERT(e && i >= 0 && i < e->n);
    const emb *x = &e->v[i];
    return (sdw_embedding_info){x->name, x->file, x->n, x->width, x->g != NULL, x->skipped};
}

int sdw_embeddings_find(const sdw_embeddings *e, const char *name) {
    for (int i = 0; e && i < e->n; i++)
        if (!e->v[i].skipped && !strcmp(e->v[i].name, name)) return i;
    return -1;
}

int sdw_embeddings_offset(const sdw_embeddings *e, int i) {
    SDW_ASSERT(e && i >= 0 && i < e->n);
    return e->v[i].offset;
}

sdw_status sdw_embeddings_vectors(const sdw_embeddings *e, int i, const char *key, int width,
                                  const float **rows, int *n, sdw_error *err) {
    SDW_ASSERT(e && i >= 0 && i < e->n && !e->v[i].skipped);
    const emb *x = &e->v[i];
    const float *v = NULL;
    int w = 0;
    if (x->g && key && !strcmp(key, "clip_l")) v = x->l, w = x->width_l;
    else if (x->g && key && !strcmp(key, "clip_g")) v = x->g, w = x->width_g;
    else if (x->single) v = x->single, w = x->width;
    else if (x->g && !key) { /* one encoder: the role whose width fits */
        if (x->width_l == width) v = x->l, w = x->width_l;
        else if (x->width_g == width) v = x->g, w = x->width_g;
    }
    if (!v || w != width) {
        if (x->g)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "embedding '%s' (%s: clip_l %d and clip_g %d wide) has no vectors "
                                 "for this model's %s text encoder (%d wide): it was made for "
                                 "another model",
                                 x->name, x->file, x->width_l, x->width_g, key ? key : "CLIP",
                                 width);
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "embedding '%s' (%s) has %d-wide vectors; this model's %s text "
                             "encoder takes %d: it was made for another model",
                             x->name, x->file, x->width, key ? key : "CLIP", width);
    }
    *rows = v;
    *n = x->n;
    return SDW_OK;
}
