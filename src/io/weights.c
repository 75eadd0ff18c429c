/* io/weights.c — canonical-name tensor access over a safetensors file or a random source.
 *
 * Every tensor handed out is recorded (canonical name, shape, f32 buffer) in request order: the
 * record makes repeated requests return the same buffer, gives sdw_weights_n_params, and lets
 * sdw_weights_save write a diffusers-layout checkpoint of exactly what the model asked for. */
#define _GNU_SOURCE
#include "io/weights.h"

#include <math.h>
#include <string.h>

typedef struct w_entry {
    char *name; /* canonical */
    int n_dims;
    int64_t shape[SDW_ST_MAX_DIMS];
    size_t n;
    float *data;             /* f32 copy; NULL for a file tensor only viewed so far */
    const sdw_st_tensor *t;  /* the file tensor, NULL for the random source */
    size_t first;            /* layout view: first element of t's data that is this tensor */
    bool transpose;          /* layout view: t holds this tensor's transpose (data always set) */
} w_entry;

struct sdw_weights {
    const sdw_st_file *file; /* NULL for the random source */
    char *prefix;
    sdw_name_map_fn map;
    sdw_name_view_fn view_map; /* instead of map, for layouts with fused/transposed tensors */
    void *map_user;
    uint64_t seed;
    uint8_t *used; /* per file tensor (sorted index) */

    w_entry *e; /* handed out, in request order */
    int n, cap;
    int *slots; /* open-addressing hash: entry index + 1, 0 = empty */
    size_t n_slots;

    float **scratch; /* sdw_weights_alloc buffers */
    int n_scratch, cap_scratch;
    size_t n_params;

    struct adopted {
        void *p;
        void (*free_fn)(void *);
    } *adopted; /* sdw_weights_adopt objects */
    int n_adopted, cap_adopted;
    sdw_precision precision;
    void *backend; /* the nn backend its layers are packed by (opaque here), or NULL */
    void *layers;  /* nn/'s registry of the layers bound from it (opaque here), or NULL */
};

/* ---- creation ---- */

static sdw_weights *weights_new(void) {
    sdw_weights *ws = sdw_xcalloc(1, sizeof *ws);
    ws->n_slots = 256;
    ws->slots = sdw_xcalloc(ws->n_slots, sizeof *ws->slots);
    ws->prefix = sdw_xstrdup("");
    return ws;
}

sdw_weights *sdw_weights_create(const sdw_st_file *file, const char *prefix, sdw_name_map_fn map,
                                void *map_user) {
    SDW_ASSERT(file);
    sdw_weights *ws = weights_new();
    ws->file = file;
    free(ws->prefix);
    ws->prefix = sdw_xstrdup(prefix ? prefix : "");
    ws->map = map;
    ws->map_user = map_user;
    ws->used = sdw_xcalloc((size_t)sdw_st_count(file) + 1, 1);
    return ws;
}

sdw_weights *sdw_weights_create_viewed(const sdw_st_file *file, const char *prefix,
                                       sdw_name_view_fn map, void *map_user) {
    SDW_ASSERT(map);
    sdw_weights *ws = sdw_weights_create(file, prefix, NULL, map_user);
    ws->view_map = map;
    return ws;
}

sdw_weights *sdw_weights_create_random(uint64_t seed) {
    sdw_weights *ws = weights_new();
    ws->seed = seed;
    return ws;
}

void sdw_weights_destroy(sdw_weights *ws) {
    if (!ws) return;
    for (int i = ws->n_adopted - 1; i >= 0; i--) ws->adopted[i].free_fn(ws->adopted[i].p);
    free(ws->adopted);
    for (int i = 0; i < ws->n; i++) {
        free(ws->e[i].name);
        free(ws->e[i].data);
    }
    for (int i = 0; i < ws->n_scratch; i++) free(ws->scratch[i]);
    free(ws->scratch);
    free(ws->e);
    free(ws->slots);
    free(ws->used);
    free(ws->prefix);
    free(ws);
}

/* ---- the record of handed-out tensors ---- */

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int *slot_for(const sdw_weights *ws, const char *name) {
    size_t mask = ws->n_slots - 1, i = (size_t)fnv1a(name) & mask;
    for (;; i = (i + 1) & mask) {
        int s = ws->slots[i];
        if (!s || strcmp(ws->e[s - 1].name, name) == 0) return &ws->slots[i];
    }
}

static w_entry *lookup(const sdw_weights *ws, const char *name) {
    int s = *slot_for(ws, name);
    return s ? &ws->e[s - 1] : NULL;
}

static w_entry *record(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                       float *data, size_t n) {
    if (2 * (size_t)(ws->n + 1) > ws->n_slots) { /* keep load under 1/2 */
        free(ws->slots);
        ws->n_slots *= 2;
        ws->slots = sdw_xcalloc(ws->n_slots, sizeof *ws->slots);
        for (int i = 0; i < ws->n; i++) *slot_for(ws, ws->e[i].name) = i + 1;
    }
    if (ws->n == ws->cap) {
        ws->cap = ws->cap ? 2 * ws->cap : 256;
        ws->e = realloc(ws->e, sizeof *ws->e * (size_t)ws->cap);
        if (!ws->e) SDW_ABORT("out of memory");
    }
    w_entry *e = &ws->e[ws->n++];
    memset(e, 0, sizeof *e);
    e->name = sdw_xstrdup(name);
    e->n_dims = n_dims;
    if (n_dims) memcpy(e->shape, shape, sizeof *shape * (size_t)n_dims);
    e->n = n;
    e->data = data;
    *slot_for(ws, name) = ws->n;
    ws->n_params += n;
    return e;
}

/* Float tensors (sdw_dtype_is_float) are parameters; integer ones (position_ids) are buffers.
 * The float types a checkpoint can be written in: */
static bool is_storable(sdw_dtype dt) {
    return dt == SDW_DTYPE_F32 || dt == SDW_DTYPE_F16 || dt == SDW_DTYPE_BF16 ||
           dt == SDW_DTYPE_F8_E4M3 || dt == SDW_DTYPE_F8_E5M2;
}

/* 64-byte aligned (cache lines / AVX-512 loads); NULL when the size is absurd. */
static float *alloc_floats(size_t n) {
    size_t bytes;
    if (!sdw_size_mul(n ? n : 1, sizeof(float), &bytes) || bytes > SIZE_MAX - 64) return NULL;
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

float *sdw_weights_alloc(sdw_weights *ws, size_t n) {
    float *p = alloc_floats(n);
    if (!p) SDW_ABORT("out of memory allocating %zu floats", n);
    memset(p, 0, n * sizeof *p);
    if (ws->n_scratch == ws->cap_scratch) {
        ws->cap_scratch = ws->cap_scratch ? 2 * ws->cap_scratch : 16;
        ws->scratch = realloc(ws->scratch, sizeof *ws->scratch * (size_t)ws->cap_scratch);
        if (!ws->scratch) SDW_ABORT("out of memory");
    }
    ws->scratch[ws->n_scratch++] = p;
    return p;
}

/* ---- shapes ---- */

static void shape_str(char *buf, size_t cap, int n_dims, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n_dims && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

static bool dims_match(int na, const int64_t *a, int nb, const int64_t *b) {
    if (na != nb) return false;
    for (int i = 0; i < na; i++)
        if (a[i] != -1 && a[i] != b[i]) return false;
    return true;
}

/* want may hold -1 wildcards; have is concrete. Size-1 dimensions are ignored on both sides when
 * the plain comparison fails ([C,C,1,1] vs [C,C]; 0-d vs [1]). */
static bool shape_compatible(int nw, const int64_t *want, int nh, const int64_t *have) {
    if (dims_match(nw, want, nh, have)) return true;
    int64_t w[SDW_ST_MAX_DIMS], h[SDW_ST_MAX_DIMS];
    int mw = 0, mh = 0;
    for (int i = 0; i < nw; i++)
        if (want[i] != 1) w[mw++] = want[i];
    for (int i = 0; i < nh; i++)
        if (have[i] != 1) h[mh++] = have[i];
    return dims_match(mw, w, mh, h);
}

/* ---- name resolution ---- */

/* Writes prefix + mapped name into buf and the view into *view; NULL when the layout has no
 * such tensor. */
static const char *file_name(const sdw_weights *ws, const char *name, char *buf, size_t cap,
                             sdw_weight_view *view) {
    char mapped[512];
    const char *m = name;
    memset(view, 0, sizeof *view);
    if (ws->view_map) {
        m = ws->view_map(name, mapped, sizeof mapped, view, ws->map_user);
        if (!m) return NULL;
    } else if (ws->map) {
        m = ws->map(name, mapped, sizeof mapped, ws->map_user);
        if (!m) return NULL;
    }
    int k = snprintf(buf, cap, "%s%s", ws->prefix, m);
    return k >= 0 && (size_t)k < cap ? buf : NULL;
}

/* A canonical tensor as a part of a stored one: the stored tensor, the element range of its
 * data (contiguous: whole rows), the canonical shape, and whether it is stored transposed. */
typedef struct viewed {
    const sdw_st_tensor *t;
    size_t first, n;
    int n_dims;
    int64_t shape[SDW_ST_MAX_DIMS];
    bool transpose;
} viewed;

/* Applies view v to stored tensor t; false if it does not fit. */
static bool apply_view(const sdw_st_tensor *t, const sdw_weight_view *v, viewed *out) {
    viewed r = {.t = t, .first = 0, .n = t->n_elems, .n_dims = t->n_dims, .transpose = v->transpose};
    if (t->n_dims) memcpy(r.shape, t->shape, sizeof *r.shape * (size_t)t->n_dims);
    if (v->split > 1) {
        int count = v->count > 0 ? v->count : 1;
        if (r.n_dims < 1 || r.shape[0] % v->split || v->first < 0 || v->first + count > v->split)
            return false;
        int64_t part = r.shape[0] / v->split;
        size_t row = r.shape[0] ? t->n_elems / (size_t)r.shape[0] : 0;
        r.first = (size_t)(v->first * part) * row;
        r.shape[0] = part * count;
        r.n = (size_t)r.shape[0] * row;
    }
    if (v->transpose) {
        if (r.n_dims != 2) return false;
        int64_t x = r.shape[0];
        r.shape[0] = r.shape[1];
        r.shape[1] = x;
    }
    *out = r;
    return true;
}

const sdw_st_tensor *sdw_weights_find(const sdw_weights *ws, const char *name) {
    if (!ws->file) return NULL;
    char buf[640];
    sdw_weight_view view;
    const char *fn = file_name(ws, name, buf, sizeof buf, &view);
    return fn ? sdw_st_find(ws->file, fn) : NULL;
}

bool sdw_weights_shape(const sdw_weights *ws, const char *name, int *n_dims,
                       int64_t shape[SDW_ST_MAX_DIMS]) {
    if (!ws->file) return false;
    char buf[640];
    sdw_weight_view view;
    const char *fn = file_name(ws, name, buf, sizeof buf, &view);
    const sdw_st_tensor *t = fn ? sdw_st_find(ws->file, fn) : NULL;
    viewed r;
    if (!t || !apply_view(t, &view, &r)) return false;
    *n_dims = r.n_dims;
    if (r.n_dims) memcpy(shape, r.shape, sizeof *shape * (size_t)r.n_dims);
    return true;
}

void sdw_weights_ignore(sdw_weights *ws, const char *file_prefix) {
    if (!ws->file) return;
    size_t plen = strlen(ws->prefix), flen = strlen(file_prefix);
    for (int i = 0; i < sdw_st_count(ws->file); i++) {
        const char *n = sdw_st_at(ws->file, i)->name;
        if (!strncmp(n, ws->prefix, plen) && !strncmp(n + plen, file_prefix, flen) && !ws->used[i])
            ws->used[i] = 2; /* accounted for, not loaded */
    }
}

bool sdw_weights_has(const sdw_weights *ws, const char *name) {
    return sdw_weights_find(ws, name) != NULL;
}

/* ---- random source ---- */

static inline uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [-1, 1) with 24 random bits (exact in f32) */
static inline float uniform_pm1(uint64_t *s) {
    return (float)(splitmix64(s) >> 40) * 0x1p-23f - 1.0f;
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && memcmp(s + n - m, suf, m) == 0;
}

/* Embedding tables (token/position) are looked up, not multiplied, so they get the small normal
 * init the reference models use instead of a fan-in scale. */
static bool is_embedding_table(const char *name) {
    char last[256];
    size_t n = strlen(name);
    if (ends_with(name, ".weight")) n -= 7;
    size_t b = n;
    while (b > 0 && name[b - 1] != '.') b--;
    if (n - b >= sizeof last) return false;
    memcpy(last, name + b, n - b);
    last[n - b] = 0;
    return ends_with(last, "embedding") || ends_with(last, "embeddings");
}

typedef enum { RK_ONE_PLUS, RK_SMALL_UNIFORM, RK_SMALL_NORMAL, RK_FAN_IN } rand_kind;

/* Values chosen so untrained networks stay numerically tame at any depth: norm gains near 1,
 * biases near 0, weights with variance 1/fan_in (uniform(-1,1)·sqrt(3/fan_in)). */
static void fill_random(const char *name, uint64_t seed, int n_dims, const int64_t *shape,
                        float *dst, size_t n) {
    rand_kind kind;
    float scale = 0.02f;
    if (n_dims <= 1) {
        kind = n_dims == 1 && ends_with(name, ".weight") ? RK_ONE_PLUS : RK_SMALL_UNIFORM;
    } else if (is_embedding_table(name)) {
        kind = RK_SMALL_NORMAL;
    } else {
        double fan_in = 1;
        for (int i = 1; i < n_dims; i++) fan_in *= (double)shape[i];
        kind = RK_FAN_IN;
        scale = (float)sqrt(3.0 / (fan_in > 0 ? fan_in : 1));
    }
    uint64_t tseed = seed ^ fnv1a(name);
    (void)splitmix64(&tseed);
    /* Fixed-size chunks with their own streams: the values do not depend on the thread count. */
    enum { CHUNK = 1 << 16 };
    long n_chunks = (long)((n + CHUNK - 1) / CHUNK);
#pragma omp parallel for schedule(static) if (n_chunks > 4)
    for (long c = 0; c < n_chunks; c++) {
        uint64_t s = tseed + 0x632be59bd9b4e019ull * (uint64_t)(c + 1);
        size_t lo = (size_t)c * CHUNK, hi = SDW_MIN(n, lo + CHUNK);
        for (size_t i = lo; i < hi; i++) {
            switch (kind) {
            case RK_ONE_PLUS: dst[i] = 1.0f + scale * uniform_pm1(&s); break;
            case RK_SMALL_UNIFORM:
            case RK_FAN_IN: dst[i] = scale * uniform_pm1(&s); break;
            case RK_SMALL_NORMAL: {
                /* Box-Muller; u1 in (0, 1] keeps the log finite */
                double u1 = ((double)(splitmix64(&s) >> 11) + 1.0) * 0x1p-53;
                double u2 = (double)(splitmix64(&s) >> 11) * 0x1p-53;
                dst[i] = scale * (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
                break;
            }
            }
        }
    }
}

static const float *random_f32(sdw_weights *ws, const char *name, int n_dims,
                               const int64_t *shape, sdw_error *err) {
    size_t n = 1;
    for (int i = 0; i < n_dims; i++) {
        if (shape[i] < 0) {
            char s[160];
            shape_str(s, sizeof s, n_dims, shape);
            sdw_error_set(err, SDW_E_INVALID_ARG,
                          "tensor %s: the random weight source needs a concrete shape, got %s",
                          name, s);
            return NULL;
        }
        if (!sdw_size_mul(n, (size_t)shape[i], &n)) {
            sdw_error_set(err, SDW_E_INVALID_ARG, "tensor %s: shape too large", name);
            return NULL;
        }
    }
    float *data = alloc_floats(n);
    if (!data) {
        sdw_error_set(err, SDW_E_NOMEM, "tensor %s: out of memory (%zu floats)", name, n);
        return NULL;
    }
    fill_random(name, ws->seed, n_dims, shape, data, n);
    return record(ws, name, n_dims, shape, data, n)->data;
}

/* ---- loading ---- */

/* The file tensor for canonical `name` (its layout view applied), checked to be a float type of
 * a compatible shape; false with err set. */
static bool file_tensor(const sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                        viewed *out, sdw_error *err) {
    char want[160], have[160];
    const char *path = sdw_st_path(ws->file);
    char buf[640];
    sdw_weight_view view;
    const char *fname = file_name(ws, name, buf, sizeof buf, &view);
    if (!fname) {
        sdw_error_set(err, SDW_E_NOT_FOUND, "%s: tensor %s has no counterpart in this layout",
                      path, name);
        return false;
    }
    const sdw_st_tensor *t = sdw_st_find(ws->file, fname);
    if (!t) {
        if (strcmp(fname, name) == 0)
            sdw_error_set(err, SDW_E_NOT_FOUND, "%s: tensor %s not found", path, name);
        else
            sdw_error_set(err, SDW_E_NOT_FOUND, "%s: tensor %s not found (looked for %s)", path,
                          name, fname);
        return false;
    }
    if (!sdw_dtype_is_float(t->dtype)) {
        sdw_error_set(err, SDW_E_FORMAT,
                      "%s: tensor %s (%s) has dtype %s; expected a float type (F32, F16, BF16, "
                      "F8_E4M3, F8_E5M2)",
                      path, name, fname, sdw_dtype_str(t->dtype));
        return false;
    }
    if (!apply_view(t, &view, out)) {
        shape_str(have, sizeof have, t->n_dims, t->shape);
        sdw_error_set(err, SDW_E_SHAPE,
                      "%s: tensor %s (%s, shape %s) cannot be cut into %d parts%s", path, name,
                      fname, have, view.split, view.transpose ? " and transposed" : "");
        return false;
    }
    if (!shape_compatible(n_dims, shape, out->n_dims, out->shape)) {
        shape_str(want, sizeof want, n_dims, shape);
        shape_str(have, sizeof have, out->n_dims, out->shape);
        sdw_error_set(err, SDW_E_SHAPE, "%s: tensor %s (%s%s): expected shape %s, file has %s",
                      path, name, fname,
                      view.split > 1 || view.transpose ? ", as viewed" : "", want, have);
        return false;
    }
    return true;
}

/* Records file tensor r under `name` (data: its f32 copy, or NULL for a view) and marks it used. */
static w_entry *record_file(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                            const viewed *r, float *data) {
    ws->used[r->t - sdw_st_at(ws->file, 0)] = 1;
    bool wild = false;
    for (int i = 0; i < n_dims; i++) wild |= shape[i] < 0;
    /* the record keeps the requested layout; a wildcard can only be resolved by the file's */
    w_entry *e = wild ? record(ws, name, r->n_dims, r->shape, data, r->n)
                      : record(ws, name, n_dims, shape, data, r->n);
    e->t = r->t;
    e->first = r->first;
    e->transpose = r->transpose;
    return e;
}

/* An earlier request for `name`, checked against this one's shape: *ok false (err set) on a
 * mismatch; NULL when there was none. */
static w_entry *previous(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                         bool *ok, sdw_error *err) {
    *ok = true;
    w_entry *prev = lookup(ws, name);
    if (!prev || shape_compatible(n_dims, shape, prev->n_dims, prev->shape)) return prev;
    char want[160], have[160];
    shape_str(want, sizeof want, n_dims, shape);
    shape_str(have, sizeof have, prev->n_dims, prev->shape);
    sdw_error_set(err, SDW_E_SHAPE, "tensor %s: shape %s expected, but it was already loaded as %s",
                  name, want, have);
    *ok = false;
    return NULL;
}

/* f32 copy of the canonical tensor r (NULL with err set when out of memory). */
static float *convert_copy(const sdw_weights *ws, const char *name, const viewed *r,
                           sdw_error *err) {
    float *data = alloc_floats(r->n);
    float *tmp = r->transpose ? alloc_floats(r->n) : data;
    if (!data || !tmp) {
        free(data);
        sdw_error_set(err, SDW_E_NOMEM, "%s: tensor %s: out of memory (%zu floats)",
                      sdw_st_path(ws->file), name, r->n);
        return NULL;
    }
    const uint8_t *src = (const uint8_t *)r->t->data + r->first * sdw_dtype_size(r->t->dtype);
    sdw_convert_to_f32(r->t->dtype, src, tmp, r->n);
    if (r->transpose) { /* stored [a, b] -> canonical [b, a] = r->shape */
        const size_t a = (size_t)r->shape[1], b = (size_t)r->shape[0];
        for (size_t i = 0; i < a; i++)
            for (size_t j = 0; j < b; j++) data[j * a + i] = tmp[i * b + j];
        free(tmp);
    }
    /* The copy is what gets read from now on: the mapped pages need not stay resident. (With a
     * view this drops the whole stored tensor; its other parts are read back when asked for.) */
    sdw_st_drop_pages(ws->file, r->t);
    return data;
}

/* The view a recorded entry was made from. */
static viewed entry_view(const w_entry *e) {
    viewed r = {.t = e->t, .first = e->first, .n = e->n, .n_dims = e->n_dims,
                .transpose = e->transpose};
    if (e->n_dims) memcpy(r.shape, e->shape, sizeof *r.shape * (size_t)e->n_dims);
    return r;
}

const float *sdw_weights_f32(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                             sdw_error *err) {
    SDW_ASSERT(ws && name && n_dims >= 0 && n_dims <= SDW_ST_MAX_DIMS && (shape || !n_dims));
    for (int i = 0; i < n_dims; i++) SDW_ASSERT(shape[i] >= -1);
    bool ok;
    w_entry *prev = previous(ws, name, n_dims, shape, &ok, err);
    if (!ok) return NULL;
    if (prev) {
        if (!prev->data) { /* viewed raw before */
            viewed r = entry_view(prev);
            prev->data = convert_copy(ws, name, &r, err);
        }
        return prev->data;
    }
    if (!ws->file) return random_f32(ws, name, n_dims, shape, err);
    viewed r;
    float *data = file_tensor(ws, name, n_dims, shape, &r, err) ? convert_copy(ws, name, &r, err)
                                                                 : NULL;
    if (!data) return NULL;
    record_file(ws, name, n_dims, shape, &r, data);
    return data;
}

const void *sdw_weights_raw(sdw_weights *ws, const char *name, int n_dims, const int64_t *shape,
                             sdw_dtype *dtype, size_t *n, sdw_error *err) {
    SDW_ASSERT(ws && name && dtype && n && n_dims >= 0 && n_dims <= SDW_ST_MAX_DIMS &&
               (shape || !n_dims));
    for (int i = 0; i < n_dims; i++) SDW_ASSERT(shape[i] >= -1);
    bool ok;
    w_entry *prev = previous(ws, name, n_dims, shape, &ok, err);
    if (!ok) return NULL;
    if (prev && prev->data) {
        *dtype = SDW_DTYPE_F32;
        *n = prev->n;
        return prev->data;
    }
    viewed r;
    if (prev) {
        r = entry_view(prev);
    } else if (!ws->file) {
        const float *d = random_f32(ws, name, n_dims, shape, err);
        if (!d) return NULL;
        *dtype = SDW_DTYPE_F32;
        *n = lookup(ws, name)->n;
        return d;
    } else {
        if (!file_tensor(ws, name, n_dims, shape, &r, err)) return NULL;
        if (r.transpose) { /* no such layout in the file: hand out the f32 copy */
            float *d = convert_copy(ws, name, &r, err);
            if (!d) return NULL;
            record_file(ws, name, n_dims, shape, &r, d);
            *dtype = SDW_DTYPE_F32;
            *n = r.n;
            return d;
        }
        record_file(ws, name, n_dims, shape, &r, NULL);
    }
    *dtype = r.t->dtype;
    *n = r.n;
    return (const uint8_t *)r.t->data + r.first * sdw_dtype_size(r.t->dtype);
}

void sdw_weights_raw_done(sdw_weights *ws, const char *name) {
    const w_entry *e = lookup(ws, name);
    if (e && e->t && ws->file) sdw_st_drop_pages(ws->file, e->t);
}

void sdw_weights_adopt(sdw_weights *ws, void *p, void (*free_fn)(void *)) {
    SDW_ASSERT(ws && free_fn);
    if (ws->n_adopted == ws->cap_adopted) {
        ws->cap_adopted = ws->cap_adopted ? 2 * ws->cap_adopted : 64;
        ws->adopted = realloc(ws->adopted, sizeof *ws->adopted * (size_t)ws->cap_adopted);
        if (!ws->adopted) SDW_ABORT("out of memory");
    }
    ws->adopted[ws->n_adopted++] = (struct adopted){p, free_fn};
}

void sdw_weights_set_precision(sdw_weights *ws, sdw_precision p) { ws->precision = p; }
void sdw_weights_set_backend(sdw_weights *ws, void *backend) { ws->backend = backend; }
void *sdw_weights_backend(const sdw_weights *ws) { return ws->backend; }
void sdw_weights_set_layers(sdw_weights *ws, void *layers) { ws->layers = layers; }
void *sdw_weights_layers(const sdw_weights *ws) { return ws->layers; }
sdw_precision sdw_weights_precision(const sdw_weights *ws) {
    return ws->precision == SDW_PRECISION_BF16 ? SDW_PRECISION_BF16 : SDW_PRECISION_F32;
}

/* ---- reporting ---- */

int sdw_weights_unused(const sdw_weights *ws, char *buf, size_t cap) {
    if (buf && cap) buf[0] = 0;
    if (!ws->file) return 0;
    size_t plen = strlen(ws->prefix), o = 0;
    int count = 0;
    for (int i = 0; i < sdw_st_count(ws->file); i++) {
        const sdw_st_tensor *t = sdw_st_at(ws->file, i);
        if (ws->used[i] || strncmp(t->name, ws->prefix, plen) != 0) continue;
        /* Integer tensors are buffers (position_ids), not parameters: never "left over". */
        if (!sdw_dtype_is_float(t->dtype)) continue;
        if (buf && cap && o < cap) {
            if (count < 5)
                o += (size_t)snprintf(buf + o, cap - o, "%s%s", count ? ", " : "", t->name);
            else if (count == 5)
                o += (size_t)snprintf(buf + o, cap - o, ", ...");
        }
        count++;
    }
    return count;
}

size_t sdw_weights_n_params(const sdw_weights *ws) { return ws->n_params; }

size_t sdw_weights_stored_params(const sdw_weights *ws, const char *file_prefix) {
    if (!ws->file) return 0;
    const size_t plen = strlen(ws->prefix), flen = strlen(file_prefix);
    size_t n = 0;
    for (int i = 0; i < sdw_st_count(ws->file); i++) {
        const sdw_st_tensor *t = sdw_st_at(ws->file, i);
        if (strncmp(t->name, ws->prefix, plen) || strncmp(t->name + plen, file_prefix, flen))
            continue;
        if (!sdw_dtype_is_float(t->dtype)) continue;
        size_t k = 1;
        for (int d = 0; d < t->n_dims; d++)
            k *= (size_t)t->shape[d];
        n += k;
    }
    return n;
}

static sdw_dtype pick_one(const char *name, int n_dims, const int64_t *shape, void *user) {
    return *(const sdw_dtype *)user;
}

sdw_status sdw_weights_save(const sdw_weights *ws, const char *path, sdw_dtype dtype,
                            sdw_error *err) {
    return sdw_weights_save_mixed(ws, path, pick_one, &dtype, err);
}

sdw_status sdw_weights_save_mixed(const sdw_weights *ws, const char *path, sdw_dtype_pick_fn pick,
                                  void *user, sdw_error *err) {
    SDW_ASSERT(ws && path && pick);
    sdw_st_writer *w;
    sdw_status st = sdw_st_writer_create(path, &w, err);
    if (st != SDW_OK) return st;
    for (int i = 0; i < ws->n; i++) {
        const w_entry *e = &ws->e[i];
        const sdw_dtype dt = pick(e->name, e->n_dims, e->shape, user);
        SDW_ASSERT(is_storable(dt));
        sdw_st_writer_add(w, e->name, dt, e->n_dims, e->shape);
    }
    st = sdw_st_writer_begin(w, err);
    for (int i = 0; i < ws->n && st == SDW_OK; i++) {
        const w_entry *e = &ws->e[i];
        if (e->data) {
            st = sdw_st_writer_write(w, e->data, err);
            continue;
        }
        float *tmp = alloc_floats(e->n); /* a file tensor only viewed: convert it now */
        if (!tmp) {
            st = sdw_error_set(err, SDW_E_NOMEM, "tensor %s: out of memory", e->name);
            break;
        }
        sdw_convert_to_f32(e->t->dtype,
                           (const uint8_t *)e->t->data + e->first * sdw_dtype_size(e->t->dtype),
                           tmp, e->n);
        st = sdw_st_writer_write(w, tmp, err);
        free(tmp);
    }
    if (st != SDW_OK) {
        sdw_st_writer_finish(w, NULL); /* removes the partial file; keeps the first error */
        return st;
    }
    return sdw_st_writer_finish(w, err);
}
