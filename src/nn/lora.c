/* nn/lora.c — the bound-layer registry, LoRA packs and their on-the-fly application (see
 * nn/lora.h). */
#include "nn/lora.h"

#include "nn/backend.h"
#include "nn/nn_impl.h"

#include <omp.h>
#include <stdint.h>
#include <string.h>

/* ---- the registry ---- */

typedef struct layer_registry {
    sdw_layer_ref *r;
    int n, cap;
} layer_registry;

static void registry_free(void *p) {
    layer_registry *g = p;
    for (int i = 0; i < g->n; i++)
        free((char *)g->r[i].name);
    free(g->r);
    free(g);
}

void sdw__layers_note(sdw_weights *ws, const sdw_layer_ref *r) {
    SDW_ASSERT(ws && r && r->name && r->op);
    layer_registry *g = sdw_weights_layers(ws);
    if (!g) {
        g = sdw_xcalloc(1, sizeof *g);
        sdw_weights_set_layers(ws, g);
        sdw_weights_adopt(ws, g, registry_free);
    }
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 64;
        g->r = realloc(g->r, sizeof *g->r * (size_t)g->cap);
        if (!g->r) SDW_ABORT("out of memory");
    }
    g->r[g->n] = *r;
    g->r[g->n].name = sdw_xstrdup(r->name);
    g->n++;
}

int sdw_layers_count(const sdw_weights *ws) {
    const layer_registry *g = ws ? sdw_weights_layers(ws) : NULL;
    return g ? g->n : 0;
}

const sdw_layer_ref *sdw_layers_at(const sdw_weights *ws, int i) {
    const layer_registry *g = sdw_weights_layers(ws);
    SDW_ASSERT(g && i >= 0 && i < g->n);
    return &g->r[i];
}

/* ---- merging ---- */

void sdw_lora_merge(float *w, int64_t out, int64_t in_k, const float *up, const float *down,
                    int rank, float scale) {
    SDW_ASSERT(w && up && down && out > 0 && in_k > 0 && rank > 0);
#pragma omp parallel for schedule(static) if (out * in_k > 65536)
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in_k; i++) {
            double s = 0;
            for (int j = 0; j < rank; j++)
                s += (double)up[o * rank + j] * down[(int64_t)j * in_k + i];
            w[o * in_k + i] += (float)((double)scale * s);
        }
}

/* ---- packs ---- */

typedef struct module {
    sdw_layer_ref t; /* the part it adapts (name borrowed from the registry) */
    const float *down, *up;
    int rank;
    float scale;
} module;

/* One op's adapter: y += m · up(down(x)). */
typedef struct adapter {
    const sdw_backend_op *target;
    sdw_backend_op *down; /* linear [R, in], or a convolution with the target's geometry */
    sdw_backend_op *up;   /* linear [op_out, R], f32 */
    sdw_conv_geom g;      /* the down product's geometry (out = R) */
    int op_out;           /* the target's output columns (the up product's) */
    bool down_conv;
} adapter;

struct sdw_lora_pack {
    module *m; /* until finish */
    int n_m, cap_m;
    adapter *a;
    int n_a;
    int *slots; /* open addressing on the target op: adapter index + 1, 0 = empty */
    size_t n_slots;
    size_t bytes;
    bool finished;
};

sdw_lora_pack *sdw_lora_pack_create(void) { return sdw_xcalloc(1, sizeof(sdw_lora_pack)); }

void sdw_lora_pack_add(sdw_lora_pack *p, const sdw_layer_ref *t, const float *down,
                       const float *up, int rank, float scale) {
    SDW_ASSERT(p && !p->finished && t && t->op && down && up && rank > 0);
    if (p->n_m == p->cap_m) {
        p->cap_m = p->cap_m ? 2 * p->cap_m : 64;
        p->m = realloc(p->m, sizeof *p->m * (size_t)p->cap_m);
        if (!p->m) SDW_ABORT("out of memory");
    }
    p->m[p->n_m++] = (module){*t, down, up, rank, scale};
}

static size_t hash_ptr(const void *q, size_t mask) {
    uint64_t h = (uint64_t)(uintptr_t)q * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & mask;
}

static const adapter *find(const sdw_lora_pack *p, const sdw_backend_op *op) {
    if (!p->n_slots) return NULL;
    const size_t mask = p->n_slots - 1;
    for (size_t i = hash_ptr(op, mask);; i = (i + 1) & mask) {
        const int s = p->slots[i];
        if (!s) return NULL;
        if (p->a[s - 1].target == op) return &p->a[s - 1];
    }
}

static int by_target(const void *a, const void *b) {
    const uintptr_t x = (uintptr_t)((const module *)a)->t.op,
                    y = (uintptr_t)((const module *)b)->t.op;
    if (x != y) return x < y ? -1 : 1;
    const int ca = ((const module *)a)->t.col0, cb = ((const module *)b)->t.col0;
    return (ca > cb) - (ca < cb);
}

/* The adapter of the modules m[0..n), all on one op (sorted by column). */
static sdw_status build(const module *m, int n, adapter *a, size_t *bytes, sdw_error *err) {
    const sdw_layer_ref *t = &m[0].t;
    const int kk = t->conv ? t->k * t->k : 1;
    const int64_t in_k = (int64_t)t->in * kk;
    for (int i = 1; i < n; i++) {
        /* parts of one op share its input and geometry (the registry made them so) */
        SDW_ASSERT(m[i].t.in == t->in && m[i].t.op_out == t->op_out && m[i].t.conv == t->conv &&
                   m[i].t.k == t->k);
        if (m[i].t.col0 < m[i - 1].t.col0 + m[i - 1].t.out)
            return sdw_error_set(err, SDW_E_INVALID_ARG, "two LoRA modules adapt %s",
                                 m[i].t.name);
    }
    /* The distinct downs, each once in the concatenated down product: offsets in *off. */
    int R = 0;
    int *off = sdw_xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) {
        off[i] = -1;
        for (int j = 0; j < i && off[i] < 0; j++)
            if (m[j].down == m[i].down && m[j].rank == m[i].rank) off[i] = off[j];
        if (off[i] < 0) {
            off[i] = R;
            R += m[i].rank;
        }
    }
    float *down = sdw_xmalloc(sizeof(float) * (size_t)R * (size_t)in_k);
    float *up = sdw_xcalloc((size_t)t->op_out * (size_t)R, sizeof(float));
    for (int i = 0; i < n; i++) {
        memcpy(down + (size_t)off[i] * in_k, m[i].down,
               sizeof(float) * (size_t)m[i].rank * (size_t)in_k);
        for (int o = 0; o < m[i].t.out; o++)
            for (int j = 0; j < m[i].rank; j++)
                up[(size_t)(m[i].t.col0 + o) * R + off[i] + j] =
                    m[i].scale * m[i].up[(size_t)o * m[i].rank + j];
    }
    sdw_backend *be = t->op->be;
    const sdw_precision prec = sdw_backend_op_precision(t->op);
    *a = (adapter){.target = t->op};
    a->down_conv = t->conv && !(t->k == 1 && t->stride == 1 && t->pad == 0 && t->pad_end == 0);
    a->g = (sdw_conv_geom){t->in, R, t->k, t->stride, t->pad, t->pad_end};
    a->op_out = t->op_out;
    sdw_status st = a->down_conv
                        ? sdw_backend_conv_create(be, prec, down, NULL, &a->g, &a->down, err)
                        : sdw_backend_linear_create(be, prec, down, NULL, t->in, R, &a->down, err);
    if (st == SDW_OK)
        st = sdw_backend_linear_create(be, SDW_PRECISION_F32, up, NULL, R, t->op_out, &a->up, err);
    if (st == SDW_OK)
        *bytes += sdw_backend_op_weight_bytes(a->down) + sdw_backend_op_weight_bytes(a->up);
    else
        sdw_error_prefix(err, "LoRA for %s", t->name);
    free(off);
    free(down);
    free(up);
    return st;
}

static void free_adapters(sdw_lora_pack *p) {
    for (int i = 0; i < p->n_a; i++) {
        sdw_backend_op_destroy(p->a[i].down);
        sdw_backend_op_destroy(p->a[i].up);
    }
    free(p->a);
    free(p->slots);
    p->a = NULL;
    p->slots = NULL;
    p->n_a = 0;
    p->n_slots = 0;
    p->bytes = 0;
}

sdw_status sdw_lora_pack_finish(sdw_lora_pack *p, sdw_error *err) {
    SDW_ASSERT(p && !p->finished);
    p->finished = true;
    qsort(p->m, (size_t)p->n_m, sizeof *p->m, by_target);
    p->a = sdw_xcalloc((size_t)(p->n_m ? p->n_m : 1), sizeof *p->a);
    sdw_status st = SDW_OK;
    for (int i = 0, j; i < p->n_m && st == SDW_OK; i = j) {
        for (j = i + 1; j < p->n_m && p->m[j].t.op == p->m[i].t.op; j++) {
        }
        st = build(p->m + i, j - i, &p->a[p->n_a], &p->bytes, err);
        if (st == SDW_OK) p->n_a++;
    }
    free(p->m);
    p->m = NULL;
    p->n_m = p->cap_m = 0;
    if (st != SDW_OK) {
        free_adapters(p);
        return st;
    }
    p->n_slots = 16;
    while (p->n_slots < 2 * (size_t)p->n_a) p->n_slots *= 2;
    p->slots = sdw_xcalloc(p->n_slots, sizeof *p->slots);
    for (int i = 0; i < p->n_a; i++) {
        size_t k = hash_ptr(p->a[i].target, p->n_slots - 1);
        while (p->slots[k]) k = (k + 1) & (p->n_slots - 1);
        p->slots[k] = i + 1;
    }
    return SDW_OK;
}

int sdw_lora_pack_n_layers(const sdw_lora_pack *p) { return p->n_a; }
size_t sdw_lora_pack_bytes(const sdw_lora_pack *p) { return p->bytes; }

void sdw_lora_pack_destroy(sdw_lora_pack *p) {
    if (!p) return;
    free_adapters(p);
    free(p->m);
    free(p);
}

/* ---- the run ---- */

/* Thread-local by design: see lora.h. */
static _Thread_local const sdw_lora_run *t_run;

const sdw_lora_run *sdw_lora_attach(const sdw_lora_run *run) {
    const sdw_lora_run *prev = t_run;
    t_run = run;
    return prev;
}

const sdw_lora_run *sdw_lora_current(void) { return t_run; }

static int out_size(int n, const sdw_conv_geom *g) {
    return (n + g->pad + g->pad_end - g->k) / g->stride + 1;
}

/* Rows per block of a row-wise adapter: below this a block's products are too thin to be worth
 * a thread of their own. */
#define LORA_BLOCK_MIN 256

/* y[rows] += m · up(down(x[rows])) for one block of rows of a row-wise adapter (a linear layer,
 * or a 1x1 convolution without stride or padding, which is one over NHWC rows); t: scratch for
 * the block's [rows, R] down product. */
static void apply_rows(const adapter *a, float m, sdw_act x, sdw_act y, int64_t r0, int64_t rows,
                       float *t) {
    const int R = a->g.out;
    const void *xd = (const char *)x.d + (size_t)r0 * a->g.in * sdw_dt_size(x.dt);
    sdw_backend_linear_forward(a->down, sdw_rows_dt(xd, x.dt, rows), sdw_rows(t, rows), 0);
    if (m != 1.0f)
        for (size_t i = 0; i < (size_t)rows * R; i++)
            t[i] *= m;
    sdw_backend_linear_forward(a->up, sdw_rows(t, rows),
                               sdw_rows((float *)y.d + (size_t)r0 * a->op_out, rows),
                               SDW_ACCUMULATE);
}

/* Why blocks of rows, each thread running both products of its blocks on one core, rather than
 * each product threaded over all cores: the products are thin (N = R, then K = R), and each one
 * threaded is a short parallel region that ends waiting for the slowest core; on a loaded
 * machine those waits, three per adapted layer (down, the multiplier, up), cost more than the
 * arithmetic. One region per adapted layer, its blocks handed out as threads come free, waits
 * once (measured in lora.h). Inside the region oneDNN runs each product on the calling thread. */
void sdw__lora_apply(const sdw_lora_run *run, const sdw_backend_op *op, sdw_act x, sdw_act y) {
    for (int u = 0; u < run->n; u++) {
        const adapter *a = find(run->use[u].pack, op);
        const float m = run->use[u].multiplier;
        if (!a || m == 0.0f) continue;
        /* the adapted layers write f32 (the VAE's bf16 outputs are never adapted) */
        SDW_ASSERT(y.dt == SDW_DT_F32);
        const int R = a->g.out;
        const int64_t rows = y.rows;
        if (a->down_conv) { /* t NHWC [B, OH, OW, R] */
            SDW_ASSERT(x.layout == SDW_LAYOUT_NHWC);
            float *t = sdw_xmalloc(sizeof(float) * (size_t)rows * (size_t)R);
            const sdw_act tv = sdw_nhwc(t, x.b, out_size(x.h, &a->g), out_size(x.w, &a->g));
            SDW_ASSERT(tv.rows == rows);
            sdw_backend_conv_forward(a->down, x, tv, 0);
            if (m != 1.0f) {
                const size_t n = (size_t)rows * R;
#pragma omp parallel for schedule(static) if (n > 65536)
                for (size_t i = 0; i < n; i++)
                    t[i] *= m;
            }
            sdw_backend_linear_forward(a->up, sdw_rows(t, rows), sdw_rows(y.d, rows),
                                       SDW_ACCUMULATE);
            free(t);
            continue;
        }
        SDW_ASSERT(x.rows == rows);
        /* two blocks per thread, equal but the last (two shapes, two cached primitives) */
        const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
        const int64_t n_blocks = SDW_MAX(1, SDW_MIN(rows / LORA_BLOCK_MIN, 2 * (int64_t)threads));
        if (n_blocks == 1) { /* a few rows: oneDNN threads the products as it sees fit */
            float *t = sdw_xmalloc(sizeof(float) * (size_t)rows * (size_t)R);
            apply_rows(a, m, x, y, 0, rows, t);
            free(t);
            continue;
        }
        const int64_t block = (rows + n_blocks - 1) / n_blocks;
#pragma omp parallel num_threads((int)SDW_MIN(threads, n_blocks))
        {
            float *t = sdw_xmalloc(sizeof(float) * (size_t)block * (size_t)R);
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < n_blocks; b++) {
                const int64_t r0 = b * block;
                if (r0 < rows) apply_rows(a, m, x, y, r0, SDW_MIN(block, rows - r0), t);
            }
            free(t);
        }
    }
}
