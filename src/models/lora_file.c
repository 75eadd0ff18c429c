/* One LoRA file read into f32 modules (models/lora_file.h). The tensor names say the format:
 * a module is the name less one of the suffixes below; its tensors are checked against each
 * other here (rank, kernel), against a model's layers when matched (models/lora.c). */
#include "models/lora_file.h"

#include "io/safetensors.h"
#include "nn/lora.h"

#include <math.h>
#include <string.h>

typedef enum kind { K_DOWN, K_UP, K_MID, K_ALPHA } kind;

/* Tensor-name suffixes of the two formats (and diffusers' older ones), longest first where one
 * ends another. */
static const struct {
    const char *suffix;
    kind k;
} k_suffixes[] = {
    {".lora_linear_layer.down.weight", K_DOWN}, /* diffusers text-encoder LoRA (< 0.21) */
    {".lora_linear_layer.up.weight", K_UP},
    {"_lora.down.weight", K_DOWN}, /* diffusers attention processors: attn1.processor.to_q_lora */
    {"_lora.up.weight", K_UP},
    {".lora.down.weight", K_DOWN}, /* diffusers' own LoRA layers (< 0.26) */
    {".lora.up.weight", K_UP},
    {".lora_down.weight", K_DOWN}, /* kohya-ss / A1111 */
    {".lora_up.weight", K_UP},
    {".lora_mid.weight", K_MID},
    {".lora_A.weight", K_DOWN}, /* PEFT */
    {".lora_B.weight", K_UP},
    {".alpha", K_ALPHA},
};

typedef struct rec {
    char *key; /* module name */
    kind k;
    const sdw_st_tensor *t;
} rec;

typedef struct lmod {
    sdw_lora_module pub;
    char *key;
    float *down, *up;
} lmod;

struct sdw_lora_file {
    char *path;
    lmod *m; /* sorted by key */
    int n;
};

static bool ends_with(const char *s, size_t n, const char *suffix) {
    size_t m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Why a tensor is no LoRA tensor, in words people search for. */
static const char *foreign(const char *name) {
    if (strstr(name, "hada_")) return "a LyCORIS LoHa tensor (LoHa is not supported)";
    if (strstr(name, "lokr_")) return "a LyCORIS LoKr tensor (LoKr is not supported)";
    if (strstr(name, "dora_scale")) return "a DoRA tensor (DoRA is not supported)";
    if (ends_with(name, strlen(name), ".diff") || ends_with(name, strlen(name), ".diff_b"))
        return "a full weight difference (not a low-rank LoRA)";
    return "not a LoRA tensor (lora_down / lora_up / alpha or lora_A / lora_B)";
}

/* The module name of tensor `name` (new string) and its kind, or NULL. Diffusers' processor
 * names (attn1.processor.to_q_lora) become the layer's (attn1.to_q; to_out -> to_out.0). */
static char *module_of(const char *name, kind *k) {
    const size_t n = strlen(name);
    for (size_t i = 0; i < SDW_ARRAY_LEN(k_suffixes); i++) {
        if (!ends_with(name, n, k_suffixes[i].suffix)) continue;
        const size_t m = n - strlen(k_suffixes[i].suffix);
        if (m == 0) return NULL;
        char *key = sdw_xmalloc(m + 8);
        memcpy(key, name, m);
        key[m] = 0;
        *k = k_suffixes[i].k;
        if (k_suffixes[i].suffix[0] == '_') { /* "...attn1.processor.to_q" */
            char *p = strstr(key, ".processor.");
            if (!p) {
                free(key);
                return NULL;
            }
            memmove(p + 1, p + 11, strlen(p + 11) + 1);
            if (ends_with(key, strlen(key), ".to_out")) strcat(key, ".0");
        }
        return key;
    }
    return NULL;
}

static int by_key(const void *a, const void *b) {
    int c = strcmp(((const rec *)a)->key, ((const rec *)b)->key);
    return c ? c : (int)((const rec *)a)->k - (int)((const rec *)b)->k;
}

static float *to_f32(const sdw_st_tensor *t) {
    float *d = sdw_xmalloc(sizeof(float) * (t->n_elems ? t->n_elems : 1));
    sdw_convert_to_f32(t->dtype, t->data, d, t->n_elems);
    return d;
}

/* The module of the records r[0..n) (one key, sorted by kind), checked and converted. */
static sdw_status make_module(const rec *r, int n, lmod *mod, sdw_error *err) {
    const sdw_st_tensor *t[4] = {0};
    for (int i = 0; i < n; i++) {
        if (t[r[i].k])
            return sdw_error_set(err, SDW_E_FORMAT, "module %s has two %s tensors", r[i].key,
                                 r[i].k == K_DOWN ? "down" : r[i].k == K_UP ? "up" : "mid/alpha");
        if (!sdw_dtype_is_float(r[i].t->dtype))
            return sdw_error_set(err, SDW_E_FORMAT, "%s is %s, not a float tensor", r[i].t->name,
                                 sdw_dtype_str(r[i].t->dtype));
        t[r[i].k] = r[i].t;
    }
    const char *key = r[0].key;
    if (!t[K_DOWN] || !t[K_UP])
        return sdw_error_set(err, SDW_E_FORMAT, "module %s has no %s weight", key,
                             t[K_DOWN] ? "up (lora_up / lora_B)" : "down (lora_down / lora_A)");
    const sdw_st_tensor *d = t[K_DOWN], *u = t[K_UP], *mid = t[K_MID], *a = t[K_ALPHA];
    /* down [r, in] or [r, in, k, k]; up [out, r] or [out, r, 1, 1]; mid [r, r, k, k] */
    const bool d_ok = (d->n_dims == 2 || (d->n_dims == 4 && d->shape[2] == d->shape[3]));
    const bool u_ok = (u->n_dims == 2 || (u->n_dims == 4 && u->shape[2] == 1 && u->shape[3] == 1));
    if (!d_ok || !u_ok)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "module %s: down has %d dims, up %d: expected [r, in] or "
                             "[r, in, k, k] and [out, r] or [out, r, 1, 1]",
                             key, d->n_dims, u->n_dims);
    const int64_t rank = d->shape[0], in = d->shape[1], out = u->shape[0];
    int64_t k = d->n_dims == 4 ? d->shape[2] : 1;
    if (rank < 1 || rank > 65536 || in < 1 || in > (1 << 20) || out < 1 || out > (1 << 20) ||
        k < 1 || k > 15 || u->shape[1] != rank)
        return sdw_error_set(err, SDW_E_SHAPE,
                             "module %s: down [%lld, %lld, ...] and up [%lld, %lld, ...] do not "
                             "form a low-rank product",
                             key, (long long)rank, (long long)in, (long long)out,
                             (long long)u->shape[1]);
    if (mid && (mid->n_dims != 4 || mid->shape[0] != rank || mid->shape[1] != rank ||
                mid->shape[2] != mid->shape[3] || mid->shape[2] > 15 || k != 1))
        return sdw_error_set(err, SDW_E_SHAPE,
                             "module %s: lora_mid must be [%lld, %lld, k, k] between a 1x1 down "
                             "and up",
                             key, (long long)rank, (long long)rank);
    float alpha = 0;
    if (a) {
        if (a->n_elems != 1)
            return sdw_error_set(err, SDW_E_SHAPE, "%s has %zu values (one expected)", a->name,
                                 a->n_elems);
        sdw_convert_to_f32(a->dtype, a->data, &alpha, 1);
        if (!isfinite(alpha))
            return sdw_error_set(err, SDW_E_FORMAT, "%s is not finite", a->name);
    }
    float *down = to_f32(d), *up = to_f32(u);
    if (mid) { /* down' [r, in, k, k] = Σ_m mid[r, m, k, k] · down[m, in] (A1111's cp rebuild) */
        k = mid->shape[2];
        float *m = to_f32(mid), *dk = sdw_xcalloc((size_t)(rank * in * k * k), sizeof(float));
        for (int64_t o = 0; o < rank; o++)
            for (int64_t j = 0; j < rank; j++)
                for (int64_t i = 0; i < in; i++)
                    for (int64_t p = 0; p < k * k; p++)
                        dk[(o * in + i) * k * k + p] += m[(o * rank + j) * k * k + p] * down[j * in + i];
        free(m);
        free(down);
        down = dk;
    }
    if (!(alpha != 0)) alpha = (float)rank; /* kohya / A1111: no alpha (or 0) = scale 1 */
    *mod = (lmod){.key = sdw_xstrdup(key), .down = down, .up = up};
    mod->pub = (sdw_lora_module){.key = mod->key, .down = down, .up = up, .rank = (int)rank,
                                 .out = (int)out, .in = (int)in, .k = (int)k,
                                 .scale = alpha / (float)rank};
    return SDW_OK;
}

void sdw_lora_file_destroy(sdw_lora_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        free(f->m[i].key);
        free(f->m[i].down);
        free(f->m[i].up);
    }
    free(f->m);
    free(f->path);
    free(f);
}

sdw_status sdw_lora_file_load(const char *path, sdw_lora_file **out, sdw_error *err) {
    sdw_st_file *st = NULL;
    sdw_status s = sdw_st_open(path, &st, err);
    if (s) { /* its message names the file */
        sdw_error_prefix(err, "LoRA");
        return s;
    }
    const int n = sdw_st_count(st);
    rec *r = sdw_xcalloc((size_t)(n ? n : 1), sizeof *r);
    int nr = 0;
    for (int i = 0; i < n && s == SDW_OK; i++) {
        const sdw_st_tensor *t = sdw_st_at(st, i);
        kind k;
        char *key = module_of(t->name, &k);
        if (!key)
            s = sdw_error_set(err, SDW_E_FORMAT, "tensor %s is %s", t->name, foreign(t->name));
        else
            r[nr++] = (rec){key, k, t};
    }
    sdw_lora_file *f = sdw_xcalloc(1, sizeof *f);
    f->path = sdw_xstrdup(path);
    if (s == SDW_OK && nr == 0)
        s = sdw_error_set(err, SDW_E_FORMAT, "no LoRA tensors in it");
    if (s == SDW_OK) {
        qsort(r, (size_t)nr, sizeof *r, by_key);
        f->m = sdw_xcalloc((size_t)nr, sizeof *f->m);
        for (int i = 0, j; i < nr && s == SDW_OK; i = j) {
            for (j = i + 1; j < nr && strcmp(r[j].key, r[i].key) == 0; j++) {
            }
            if ((s = make_module(r + i, j - i, &f->m[f->n], err)) == SDW_OK) f->n++;
        }
    }
    for (int i = 0; i < nr; i++)
        free(r[i].key);
    free(r);
    sdw_st_close(st);
    if (s) {
        sdw_error_prefix(err, "LoRA %s", path);
        sdw_lora_file_destroy(f);
        return s;
    }
    *out = f;
    return SDW_OK;
}

int sdw_lora_file_count(const sdw_lora_file *f) { return f->n; }

const sdw_lora_module *sdw_lora_file_module(const sdw_lora_file *f, int i) {
    SDW_ASSERT(i >= 0 && i < f->n);
    return &f->m[i].pub;
}

static int key_cmp(const void *key, const void *m) {
    return strcmp(key, ((const lmod *)m)->key);
}

static const sdw_lora_module *lookup(const sdw_lora_file *f, const char *key) {
    const lmod *m = bsearch(key, f->m, (size_t)f->n, sizeof *f->m, key_cmp);
    return m ? &m->pub : NULL;
}

bool sdw_lora_key(const sdw_lora_part *part, const char *name, int i, char *buf, size_t cap) {
    int n_dot = 0, n_k = 0;
    while (n_dot < SDW_LORA_MAX_NAMES && part->dotted[n_dot]) n_dot++;
    while (n_k < SDW_LORA_MAX_NAMES && part->kohya[n_k]) n_k++;
    if (i < 0 || i >= n_dot + n_k) return false;
    const bool kohya = i >= n_dot;
    const char *prefix = kohya ? part->kohya[i - n_dot] : part->dotted[i];
    const int w = snprintf(buf, cap, "%s%c%s", prefix, kohya ? '_' : '.', name);
    if (w < 0 || (size_t)w >= cap) return false;
    if (kohya)
        for (char *c = buf + strlen(prefix); *c; c++)
            if (*c == '.') *c = '_';
    return true;
}

const sdw_lora_module *sdw_lora_file_find(const sdw_lora_file *f, const sdw_lora_part *part,
                                          const char *name) {
    char key[512];
    for (int i = 0; sdw_lora_key(part, name, i, key, sizeof key); i++) {
        const sdw_lora_module *m = lookup(f, key);
        if (m) return m;
    }
    return NULL;
}

bool sdw_lora_file_merge(const sdw_lora_file *f, const sdw_lora_part *part, const char *name,
                         float multiplier, float *w, int out, int64_t in_k) {
    const sdw_lora_module *m = sdw_lora_file_find(f, part, name);
    if (!m || m->out != out || (int64_t)m->in * m->k * m->k != in_k) return false;
    sdw_lora_merge(w, out, in_k, m->up, m->down, m->rank, multiplier * m->scale);
    return true;
}
