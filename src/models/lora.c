/* A model's LoRA host (models/lora.h): which file module adapts which bound layer, the packed
 * files kept between requests, and one run's session. */
#define _GNU_SOURCE /* realpath, st_mtim */
#include "models/lora.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_PARTS 4

/* One spelling a LoRA file may give a layer (or a row range of it, for a fused alias). */
typedef struct target {
    char *key;
    int part;
    const sdw_layer_ref *ref;
    sdw_weight_view view; /* the layer's rows within the module (all zero: the whole module) */
} target;

/* A packed file, keyed by what identifies its contents on disk. */
typedef struct cached {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    sdw_lora_pack *pack;
    uint64_t used; /* the request that used it last */
} cached;

struct sdw_lora_host {
    sdw_lora_part parts[MAX_PARTS];
    int n_parts;
    target *t; /* sorted by key; built at the first file */
    int n_t;
    bool indexed;
    cached c[SDW_LORA_CACHE_FILES];
    int n_c;
    uint64_t clock;
};

sdw_lora_host *sdw_lora_host_create(void) { return sdw_xcalloc(1, sizeof(sdw_lora_host)); }

void sdw_lora_host_add_part(sdw_lora_host *h, const sdw_lora_part *part) {
    SDW_ASSERT(h && part && part->ws && h->n_parts < MAX_PARTS && !h->indexed);
    h->parts[h->n_parts++] = *part;
}

static void drop(cached *c) {
    sdw_lora_pack_destroy(c->pack);
    free(c->path);
    memset(c, 0, sizeof *c);
}

void sdw_lora_host_destroy(sdw_lora_host *h) {
    if (!h) return;
    for (int i = 0; i < h->n_c; i++)
        drop(&h->c[i]);
    for (int i = 0; i < h->n_t; i++)
        free(h->t[i].key);
    free(h->t);
    free(h);
}

/* ---- the index of spellings ---- */

static void add_target(sdw_lora_host *h, int *cap, const char *key, int part,
                       const sdw_layer_ref *ref, sdw_weight_view view) {
    if (h->n_t == *cap) {
        *cap = *cap ? 2 * *cap : 1024;
        h->t = realloc(h->t, sizeof *h->t * (size_t)*cap);
        if (!h->t) SDW_ABORT("out of memory");
    }
    h->t[h->n_t++] = (target){sdw_xstrdup(key), part, ref, view};
}

/* Every spelling of name (canonical or alias) under part p. */
static void add_spellings(sdw_lora_host *h, int *cap, int p, const char *name,
                          const sdw_layer_ref *ref, sdw_weight_view view) {
    char key[512];
    for (int i = 0; sdw_lora_key(&h->parts[p], name, i, key, sizeof key); i++)
        add_target(h, cap, key, p, ref, view);
}

static int by_key(const void *a, const void *b) {
    return strcmp(((const target *)a)->key, ((const target *)b)->key);
}

static void build_index(sdw_lora_host *h) {
    int cap = 0;
    for (int p = 0; p < h->n_parts; p++) {
        const sdw_lora_part *part = &h->parts[p];
        for (int i = 0; i < sdw_layers_count(part->ws); i++) {
            const sdw_layer_ref *r = sdw_layers_at(part->ws, i);
            add_spellings(h, &cap, p, r->name, r, (sdw_weight_view){0});
            char w[512];
            if (snprintf(w, sizeof w, "%s.weight", r->name) >= (int)sizeof w) continue;
            for (int k = 0; k < SDW_LORA_MAX_NAMES && part->alias[k]; k++) {
                char buf[512];
                sdw_weight_view view = {0};
                const char *a = part->alias[k](w, buf, sizeof buf, &view, part->alias_user[k]);
                const size_t n = a ? strlen(a) : 0;
                if (n <= 7 || strcmp(a + n - 7, ".weight") != 0) continue;
                buf[n - 7] = 0; /* the alias's layer name */
                if (strcmp(buf, r->name) != 0) add_spellings(h, &cap, p, buf, r, view);
            }
        }
    }
    if (h->n_t) qsort(h->t, (size_t)h->n_t, sizeof *h->t, by_key);
    h->indexed = true;
}

/* The targets spelled key: [*lo, *hi). */
static void find_targets(const sdw_lora_host *h, const char *key, int *lo, int *hi) {
    int a = 0, b = h->n_t;
    while (a < b) {
        int m = (a + b) / 2;
        if (strcmp(h->t[m].key, key) < 0) a = m + 1;
        else b = m;
    }
    *lo = a;
    while (a < h->n_t && strcmp(h->t[a].key, key) == 0) a++;
    *hi = a;
}

/* ---- matching a file ---- */

/* Adds module m's share for target t to pack (rows of a fused module split over its layers). */
static sdw_status add_module(const sdw_lora_host *h, const target *t, const sdw_lora_module *m,
                             const char *label, sdw_lora_pack *pack, int *rows, sdw_error *err) {
    const sdw_layer_ref *r = t->ref;
    int row0 = 0, n_rows = m->out;
    if (t->view.split > 1) {
        const int count = t->view.count ? t->view.count : 1;
        if (m->out % t->view.split) n_rows = -1;
        else {
            row0 = t->view.first * (m->out / t->view.split);
            n_rows = count * (m->out / t->view.split);
        }
    }
    const bool kernel_ok = r->conv ? m->k == r->k : m->k == 1;
    if (n_rows != r->out || m->in != r->in || !kernel_ok)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "LoRA %s: module %s is [%d, %d, %dx%d] but the %s layer %s is "
                             "[%d, %d, %dx%d]: the LoRA is for another model",
                             label, m->key, n_rows < 0 ? m->out : n_rows, m->in, m->k, m->k,
                             h->parts[t->part].component, r->name, r->out, r->in,
                             r->conv ? r->k : 1, r->conv ? r->k : 1);
    sdw_lora_pack_add(pack, r, m->down, m->up + (size_t)row0 * m->rank, m->rank, m->scale);
    *rows += n_rows;
    return SDW_OK;
}

sdw_status sdw_lora_host_pack(sdw_lora_host *h, const sdw_lora_file *f, const char *label,
                              sdw_lora_pack **out, sdw_error *err) {
    if (!h->indexed) build_index(h);
    sdw_lora_pack *pack = sdw_lora_pack_create();
    int n_match = 0, n_miss = 0;
    char missed[256] = "";
    sdw_status s = SDW_OK;
    for (int i = 0; i < sdw_lora_file_count(f) && s == SDW_OK; i++) {
        const sdw_lora_module *m = sdw_lora_file_module(f, i);
        int lo, hi, rows = 0;
        find_targets(h, m->key, &lo, &hi);
        if (lo == hi) {
            if (n_miss++ < 3)
                snprintf(missed + strlen(missed), sizeof missed - strlen(missed), "%s%s",
                         n_miss > 1 ? ", " : "", m->key);
            continue;
        }
        for (int j = lo; j < hi && s == SDW_OK; j++)
            s = add_module(h, &h->t[j], m, label, pack, &rows, err);
        if (s == SDW_OK && rows != m->out)
            s = sdw_error_set(err, SDW_E_SHAPE,
                              "LoRA %s: module %s has %d output rows, the layers it names have "
                              "%d: the LoRA is for another model",
                              label, m->key, m->out, rows);
        n_match++;
    }
    if (s == SDW_OK && n_match == 0)
        s = sdw_error_set(err, SDW_E_INVALID_ARG,
                          "LoRA %s: none of its %d modules names a layer of this model (%s%s): "
                          "it is for another kind of model",
                          label, n_miss, missed, n_miss > 3 ? ", ..." : "");
    if (s == SDW_OK && (s = sdw_lora_pack_finish(pack, err)) != SDW_OK)
        sdw_error_prefix(err, "LoRA %s", label);
    if (s == SDW_OK && n_miss)
        SDW_WARN("LoRA %s: %d of its %d modules name no layer of this model and are skipped (%s%s)",
                 label, n_miss, n_miss + n_match, missed, n_miss > 3 ? ", ..." : "");
    if (s) {
        sdw_lora_pack_destroy(pack);
        return s;
    }
    *out = pack;
    return SDW_OK;
}

/* ---- the cache ---- */

static size_t cached_bytes(const sdw_lora_host *h) {
    size_t n = 0;
    for (int i = 0; i < h->n_c; i++)
        n += sdw_lora_pack_bytes(h->c[i].pack);
    return n;
}

/* Drops least recently used files not used by request `stamp` until the cache has room for one
 * more file within its bounds. */
static void evict(sdw_lora_host *h, uint64_t stamp, size_t incoming) {
    while (h->n_c > 0 &&
           (h->n_c >= SDW_LORA_CACHE_FILES || cached_bytes(h) + incoming > SDW_LORA_CACHE_BYTES)) {
        int lru = -1;
        for (int i = 0; i < h->n_c; i++)
            if (h->c[i].used < stamp && (lru < 0 || h->c[i].used < h->c[lru].used)) lru = i;
        if (lru < 0) return; /* all in use by this request */
        drop(&h->c[lru]);
        h->c[lru] = h->c[--h->n_c];
        memset(&h->c[h->n_c], 0, sizeof h->c[h->n_c]);
    }
}

/* The pack of the file at path (a real path), from the cache or loaded now. */
static sdw_status get_pack(sdw_lora_host *h, const char *path, uint64_t stamp,
                           const sdw_lora_pack **out, sdw_error *err) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return sdw_error_set(err, SDW_E_NOT_FOUND, "LoRA file %s is not a readable file", path);
    for (int i = 0; i < h->n_c; i++) {
        cached *c = &h->c[i];
        if (strcmp(c->path, path) == 0 && c->dev == st.st_dev && c->ino == st.st_ino &&
            c->size == st.st_size && c->mtime.tv_sec == st.st_mtim.tv_sec &&
            c->mtime.tv_nsec == st.st_mtim.tv_nsec) {
            c->used = stamp;
            *out = c->pack;
            return SDW_OK;
        }
    }
    const double t0 = sdw_time_now();
    sdw_lora_file *f = NULL;
    sdw_lora_pack *pack = NULL;
    sdw_status s = sdw_lora_file_load(path, &f, err);
    if (s == SDW_OK) s = sdw_lora_host_pack(h, f, path, &pack, err);
    sdw_lora_file_destroy(f);
    if (s) return s;
    /* a changed file replaces its older version */
    for (int i = 0; i < h->n_c; i++)
        if (strcmp(h->c[i].path, path) == 0 && h->c[i].used < stamp) {
            drop(&h->c[i]);
            h->c[i] = h->c[--h->n_c];
            memset(&h->c[h->n_c], 0, sizeof h->c[h->n_c]);
            break;
        }
    evict(h, stamp, sdw_lora_pack_bytes(pack));
    if (h->n_c == SDW_LORA_CACHE_FILES) { /* every slot in use by this request: cannot happen */
        sdw_lora_pack_destroy(pack);
        return sdw_error_set(err, SDW_E_INVALID_ARG, "too many LoRA files in one request");
    }
    SDW_INFO("LoRA %s: %d layers adapted, %.1f MB packed (%.2f s)", path,
             sdw_lora_pack_n_layers(pack), sdw_lora_pack_bytes(pack) / 1e6,
             sdw_time_now() - t0);
    h->c[h->n_c++] = (cached){.path = sdw_xstrdup(path), .dev = st.st_dev, .ino = st.st_ino,
                              .size = st.st_size, .mtime = st.st_mtim, .pack = pack,
                              .used = stamp};
    *out = pack;
    return SDW_OK;
}

/* ---- a request's LoRAs ---- */

/* The files and multipliers a request asks for: req->loras, then its prompt's tags, each as a
 * real path (resolved in lora_dir, or the caller's path). */
typedef struct wanted {
    char *path[SDW_LORA_MAX_PER_REQUEST];
    float m[SDW_LORA_MAX_PER_REQUEST];
    int n;
    char *prompt; /* the prompt without its tags */
} wanted;

static void wanted_free(wanted *w) {
    for (int i = 0; i < w->n; i++)
        free(w->path[i]);
    free(w->prompt);
    memset(w, 0, sizeof *w);
}

static sdw_status file_path(const char *path, char **out, sdw_error *err) {
    struct stat st;
    if (!*path) return sdw_error_set_field(err, "loras", SDW_E_INVALID_ARG, "empty LoRA path");
    if (stat(path, &st) != 0)
        return sdw_error_set_field(err, "loras", SDW_E_NOT_FOUND, "LoRA file %s does not exist",
                                   path);
    if (!S_ISREG(st.st_mode))
        return sdw_error_set_field(err, "loras", SDW_E_INVALID_ARG, "LoRA %s is not a file", path);
    *out = realpath(path, NULL);
    if (!*out)
        return sdw_error_set_field(err, "loras", SDW_E_IO, "LoRA file %s cannot be resolved",
                                   path);
    return SDW_OK;
}

static sdw_status by_name(const char *dir, const char *name, const char *field, char **out,
                          sdw_error *err) {
    if (!dir)
        return sdw_error_set_field(err, field, SDW_E_INVALID_ARG,
                                   "LoRA '%s' is named, but the model has no LoRA folder (load it "
                                   "with --lora-dir DIR)",
                                   name);
    sdw_status s = sdw_lora_resolve(dir, name, out, err);
    if (s && err) err->field = field;
    return s;
}

static sdw_status collect(const sdw_request *req, bool lora_ok, const char *dir, wanted *w,
                          sdw_error *err) {
    memset(w, 0, sizeof *w);
    if (req->n_loras < 0 || (req->n_loras > 0 && !req->loras))
        return sdw_error_set_field(err, "loras", SDW_E_INVALID_ARG, "malformed LoRA list");
    sdw_lora_tag *tags = NULL;
    int nt = 0;
    sdw_status s = sdw_lora_prompt_tags(req->prompt, &tags, &nt, &w->prompt, err);
    if (s) {
        if (err) err->field = "prompt";
        return s;
    }
    const int total = req->n_loras + nt;
    if (total > 0 && !lora_ok)
        s = sdw_error_set_field(err, req->n_loras ? "loras" : "prompt", SDW_E_UNSUPPORTED,
                                "this model does not take LoRAs");
    else if (total > SDW_LORA_MAX_PER_REQUEST)
        s = sdw_error_set_field(err, "loras", SDW_E_INVALID_ARG,
                                "%d LoRAs asked for: at most %d per request", total,
                                SDW_LORA_MAX_PER_REQUEST);
    for (int i = 0; i < req->n_loras && s == SDW_OK; i++) {
        const sdw_lora_ref *r = &req->loras[i];
        const bool has_name = r->name && *r->name, has_path = r->path != NULL;
        if (has_name == has_path)
            s = sdw_error_set_field(err, "loras", SDW_E_INVALID_ARG,
                                    "LoRA %d needs a name or a path (one of them)", i + 1);
        else if (!(r->multiplier >= -SDW_LORA_MAX_MULTIPLIER &&
                   r->multiplier <= SDW_LORA_MAX_MULTIPLIER))
            s = sdw_error_set_field(err, "loras", SDW_E_INVALID_ARG,
                                    "LoRA %s: multiplier %g is not a number in [-%g, %g]",
                                    has_name ? r->name : r->path, (double)r->multiplier,
                                    (double)SDW_LORA_MAX_MULTIPLIER,
                                    (double)SDW_LORA_MAX_MULTIPLIER);
        else if (has_name)
            s = by_name(dir, r->name, "loras", &w->path[w->n], err);
        else
            s = file_path(r->path, &w->path[w->n], err);
        if (s == SDW_OK) w->m[w->n++] = r->multiplier;
    }
    for (int i = 0; i < nt && s == SDW_OK; i++) {
        s = by_name(dir, tags[i].name, "prompt", &w->path[w->n], err);
        if (s == SDW_OK) w->m[w->n++] = tags[i].multiplier;
    }
    sdw_lora_tags_free(tags, nt);
    if (s) wanted_free(w);
    return s;
}

sdw_status sdw_lora_check_request(const sdw_request *req, const sdw_capabilities *caps,
                                  sdw_error *err) {
    wanted w;
    sdw_status s = collect(req, caps->lora, caps->lora_dir, &w, err);
    if (s == SDW_OK) wanted_free(&w);
    return s;
}

sdw_status sdw_lora_begin(sdw_lora_host *h, const char *lora_dir, const sdw_request *req,
                          sdw_lora_session *s, sdw_error *err) {
    memset(s, 0, sizeof *s);
    wanted w;
    sdw_status st = collect(req, h != NULL, lora_dir, &w, err);
    if (st) return st;
    const uint64_t stamp = h ? ++h->clock : 0;
    for (int i = 0; i < w.n && st == SDW_OK; i++) {
        st = get_pack(h, w.path[i], stamp, &s->use[i].pack, err);
        s->use[i].multiplier = w.m[i];
        if (st == SDW_OK) s->n_layers += sdw_lora_pack_n_layers(s->use[i].pack);
    }
    if (st) {
        wanted_free(&w);
        memset(s, 0, sizeof *s);
        return st;
    }
    if (w.n) { /* the prompt the encoders see: without its tags */
        s->prompt_own = w.prompt;
        w.prompt = NULL;
        s->prompt = s->prompt_own;
        s->run = (sdw_lora_run){s->use, w.n};
        s->prev = sdw_lora_attach(&s->run);
        s->attached = true;
    } else {
        s->prompt = req->prompt;
    }
    wanted_free(&w);
    return SDW_OK;
}

void sdw_lora_end(sdw_lora_session *s) {
    if (s->attached) sdw_lora_attach(s->prev);
    free(s->prompt_own);
    memset(s, 0, sizeof *s);
}
