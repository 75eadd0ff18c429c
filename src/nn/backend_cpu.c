/* nn/backend_cpu.c — the CPU backend: oneDNN convolution and matmul ops with packed weights and
 * a per-shape primitive cache (see backend_cpu.h), behind the ops table of nn/backend.h. The
 * only source that uses oneDNN. */
#include "nn/backend_cpu.h"

#include "core/cpu.h"
#include "nn/convert.h"
#include "nn/profile.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <string.h>

/* Primitives cached per op: a layer sees one shape per resolution and batch; past this many
 * the extra shapes get a primitive made (and freed) per call. */
#define CACHE_MAX 24
#define KEY_N 6

typedef struct prim_entry {
    int64_t key[KEY_N]; /* conv: B, H, W, xt, yt, accumulate; matmul: M, 0, 0, xt, yt, accumulate */
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src_md, wei_md, dst_md, scratch_md;
    void *w; /* the weights this primitive reads: the op's, or an own reorder of them */
    bool own_w;
} prim_entry;

/* The primitives made for one op, in the order they were first needed. */
typedef struct op_cache {
    prim_entry e[CACHE_MAX];
    int n;
} op_cache;

/* A buffer that weights kept in fewer bits are widened into for one call. */
typedef struct wide_buf {
    void *p;
    size_t bytes;
} wide_buf;

/* A CPU backend instance: everything that changes while models run lives here, not in the
 * ops (read-only once packed) and not in process globals. */
typedef struct cpu_backend {
    sdw_backend base;     /* first: the interface */
    dnnl_engine_t engine; /* immutable once made (oneDNN engines are thread-safe) */
    bool compact;         /* !params.full_weights: keep exact weights in fewer bits */
    bool reorder;         /* params.onednn_reorder: pack through oneDNN's reorder (tests) */
    /* Primitive caches, one per live op (op->slot; NULL until the op first runs). Blocks never
     * move once made, so an entry found under the lock stays valid after it. */
    pthread_mutex_t cache_lock;
    op_cache **caches;
    int n_slots, cap_slots;
    int *free_slots; /* slots of destroyed ops, for reuse */
    int n_free;
    /* Idle widening buffers (one per call that widened at the same time, each grown to the
     * largest layer it held), reused by the next calls and freed with the backend. */
    pthread_mutex_t wide_lock;
    wide_buf *idle;
    int n_idle, cap_idle;
} cpu_backend;

/* How an op keeps its packed weights (see compact()): in the op's type, or exactly in fewer
 * bits (16-bit types for f32 ops only). */
typedef enum w_store { W_FULL, W_F16, W_BF16, W_F8_E4M3, W_F8_E5M2 } w_store;

typedef struct cpu_op {
    sdw_backend_op base; /* first: base.be is the cpu_backend it was made on */
    bool is_conv;
    sdw_precision prec;
    sdw_conv_geom g; /* linear: in, out only */
    dnnl_memory_desc_t w_md, bias_md;
    void *w; /* packed weights in w_md, or (store != W_FULL) their exact 16- or 8-bit copy */
    w_store store;
    size_t w_n;  /* elements of w_md */
    float *bias; /* [out] or NULL */
    int slot;    /* its primitive cache: the backend's caches[slot] */
} cpu_op;

static cpu_backend *backend_of(const cpu_op *op) {
    return (cpu_backend *)op->base.be;
}
static dnnl_engine_t engine_of(const cpu_op *op) {
    return backend_of(op)->engine;
}

static void isa_once(void); /* caps oneDNN's ISA; before its first use (see "precision") */

static void check(dnnl_status_t s, const char *what) {
    if (s != dnnl_success) SDW_ABORT("oneDNN: %s failed (status %d)", what, (int)s);
}

static dnnl_data_type_t dnnl_dt(sdw_dt t) {
    return t == SDW_DT_BF16 ? dnnl_bf16 : dnnl_f32;
}
static sdw_dt op_dt(const cpu_op *op) {
    return op->prec == SDW_PRECISION_BF16 ? SDW_DT_BF16 : SDW_DT_F32;
}

static int conv_out_size(const sdw_conv_geom *g, int n) {
    return (n + g->pad + g->pad_end - g->k) / g->stride + 1;
}

/* Primitive descriptor for `key` with weights w_md (NULL = let oneDNN choose). */
static dnnl_status_t make_pd(const cpu_op *op, const int64_t *key, const dnnl_memory_desc_t *w_md,
                             dnnl_primitive_desc_t *pd) {
    const sdw_conv_geom *g = &op->g;
    const dnnl_data_type_t wdt = dnnl_dt(op_dt(op)), xdt = dnnl_dt((sdw_dt)key[3]),
                           ydt = dnnl_dt((sdw_dt)key[4]);
    dnnl_memory_desc_t src, wei, dst;
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po = NULL;
    check(dnnl_primitive_attr_create(&attr), "attr");
    check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad");
    if (key[5]) {
        check(dnnl_post_ops_create(&po), "post-ops");
        check(dnnl_post_ops_append_sum(po, 1.0f), "sum post-op");
        check(dnnl_primitive_attr_set_post_ops(attr, po), "set post-ops");
    }
    dnnl_status_t s;
    if (op->is_conv) {
        const int64_t B = key[0], H = key[1], W = key[2];
        const int64_t OH = conv_out_size(g, (int)H), OW = conv_out_size(g, (int)W);
        check(dnnl_memory_desc_init_by_tag(&src, 4, (dnnl_dims_t){B, g->in, H, W}, xdt, dnnl_nhwc),
              "src md");
        check(
            dnnl_memory_desc_init_by_tag(&dst, 4, (dnnl_dims_t){B, g->out, OH, OW}, ydt, dnnl_nhwc),
            "dst md");
        if (w_md)
            wei = *w_md;
        else
            check(dnnl_memory_desc_init_by_tag(&wei, 4, (dnnl_dims_t){g->out, g->in, g->k, g->k},
                                               wdt, dnnl_format_tag_any),
                  "weights md");
        dnnl_convolution_desc_t cd;
        check(dnnl_convolution_forward_desc_init(
                  &cd, dnnl_forward_inference, dnnl_convolution_direct, &src, &wei,
                  op->bias ? &op->bias_md : NULL, &dst, (dnnl_dims_t){g->stride, g->stride},
                  (dnnl_dims_t){g->pad, g->pad}, (dnnl_dims_t){g->pad_end, g->pad_end}),
              "convolution desc");
        s = dnnl_primitive_desc_create(pd, &cd, attr, engine_of(op), NULL);
    } else {
        const int64_t M = key[0];
        check(dnnl_memory_desc_init_by_tag(&src, 2, (dnnl_dims_t){M, g->in}, xdt, dnnl_ab), "src");
        check(dnnl_memory_desc_init_by_tag(&dst, 2, (dnnl_dims_t){M, g->out}, ydt, dnnl_ab), "dst");
        if (w_md)
            wei = *w_md;
        else
            check(dnnl_memory_desc_init_by_tag(&wei, 2, (dnnl_dims_t){g->in, g->out}, wdt,
                                               dnnl_format_tag_any),
                  "weights md");
        dnnl_matmul_desc_t md;
        check(dnnl_matmul_desc_init(&md, &src, &wei, op->bias ? &op->bias_md : NULL, &dst),
              "matmul desc");
        s = dnnl_primitive_desc_create(pd, &md, attr, engine_of(op), NULL);
    }
    if (po) dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

static const char *impl_name(const_dnnl_primitive_desc_t pd) {
    const char *s = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s);
    return s;
}

/* Reference kernels are correct but orders of magnitude slower: never the plan. */
static bool is_reference(const_dnnl_primitive_desc_t pd) {
    return strncmp(impl_name(pd), "ref", 3) == 0;
}

/* 64-byte aligned storage for n bytes of packed weights (free with free()). Not on transparent
 * huge pages: with the kernel's madvise defrag policy their faults compact memory
 * synchronously, which made loading SD 1.5 1.4x slower (measured). */
static void *alloc_weights(size_t n) {
    void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (!p) SDW_ABORT("out of memory (%zu bytes of packed weights)", n);
    return p;
}

static void *alloc_md(const dnnl_memory_desc_t *md) {
    return alloc_weights(dnnl_memory_desc_get_size(md));
}

/* dst (in dst_md) = src (in src_md), converting layout and type. */
static void reorder(dnnl_engine_t engine, const dnnl_memory_desc_t *src_md, const void *src,
                    const dnnl_memory_desc_t *dst_md, void *dst) {
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t r;
    dnnl_memory_t ms, md;
    dnnl_stream_t stream;
    check(dnnl_reorder_primitive_desc_create(&rpd, src_md, engine, dst_md, engine, NULL),
          "reorder desc");
    check(dnnl_primitive_create(&r, rpd), "reorder");
    check(dnnl_memory_create(&ms, src_md, engine, (void *)src), "reorder src");
    check(dnnl_memory_create(&md, dst_md, engine, dst), "reorder dst");
    check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags), "stream");
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
    check(dnnl_primitive_execute(r, stream, 2, args), "reorder execute");
    check(dnnl_stream_wait(stream), "stream wait");
    dnnl_stream_destroy(stream);
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(md);
    dnnl_primitive_destroy(r);
    dnnl_primitive_desc_destroy(rpd);
}

/* ---- weights kept in fewer bits ----
 * A checkpoint stored in f16 or bf16 holds values that f32 represents exactly, and so does
 * their packed copy (a packing only moves elements and pads with zeros). An f32 op whose packed
 * weights are all exactly f16 (or bf16) keeps them in that type, half the memory, and widens
 * them into a buffer for each call: the products see bit-identical f32 weights. An fp8
 * checkpoint (F8_E4M3 / F8_E5M2) goes further: its values are exact in f32 and in bf16, so an
 * op of either precision whose packed weights are all 8-bit values keeps them in 8 bits (a
 * quarter of f32, half of bf16) and widens them per call to its own type. */

static sdw_dtype store_dtype(w_store s) {
    static const sdw_dtype dt[] = {[W_F16] = SDW_DTYPE_F16,
                                   [W_BF16] = SDW_DTYPE_BF16,
                                   [W_F8_E4M3] = SDW_DTYPE_F8_E4M3,
                                   [W_F8_E5M2] = SDW_DTYPE_F8_E5M2};
    SDW_ASSERT(s != W_FULL);
    return dt[s];
}

/* A widening buffer of at least `bytes` from the backend's idle ones (64-byte aligned). */
static wide_buf wide_take(cpu_backend *cb, size_t bytes) {
    wide_buf b = {0};
    pthread_mutex_lock(&cb->wide_lock);
    if (cb->n_idle) b = cb->idle[--cb->n_idle];
    pthread_mutex_unlock(&cb->wide_lock);
    if (b.bytes < bytes) {
        free(b.p);
        b.p = alloc_weights(bytes);
        b.bytes = bytes;
    }
    return b;
}

static void wide_give(cpu_backend *cb, wide_buf b) {
    if (!b.p) return;
    pthread_mutex_lock(&cb->wide_lock);
    if (cb->n_idle == cb->cap_idle) {
        cb->cap_idle = cb->cap_idle ? 2 * cb->cap_idle : 4;
        cb->idle = realloc(cb->idle, sizeof *cb->idle * (size_t)cb->cap_idle);
        if (!cb->idle) SDW_ABORT("out of memory");
    }
    cb->idle[cb->n_idle++] = b;
    pthread_mutex_unlock(&cb->wide_lock);
}

/* The op's packed weights in its own type (f32 or bf16): op->w itself, or widened into a
 * buffer taken from the backend into *held (give it back with wide_give once the product has
 * run; *held stays empty for weights kept whole). */
static const void *weights_packed(const cpu_op *op, wide_buf *held) {
    *held = (wide_buf){0};
    if (op->store == W_FULL) return op->w;
    *held = wide_take(backend_of(op), op->w_n * (op_dt(op) == SDW_DT_BF16 ? 2 : 4));
    const sdw_dtype dt = store_dtype(op->store);
    if (sdw_dtype_size(dt) == 1)
        sdw__widen_8(dt, op->w, held->p, op_dt(op), op->w_n);
    else
        sdw__widen_16(dt, op->w, held->p, op->w_n);
    return held->p;
}

/* Whether chunk [lo, lo + len) of w (stored as wdt) is exactly of type dt: each value survives
 * the round trip through dt bit for bit. x, back: SDW__CONVERT_CHUNK floats; q as many dt. */
static bool exact_chunk(sdw_dtype dt, const void *w, sdw_dtype wdt, size_t lo, size_t len, float *x,
                        float *back, void *q) {
    sdw_convert_to_f32(wdt, (const uint8_t *)w + lo * sdw_dtype_size(wdt), x, len);
    sdw_convert_from_f32(dt, x, q, len);
    sdw_convert_to_f32(dt, q, back, len);
    return memcmp(back, x, len * sizeof(float)) == 0;
}

/* Whether the n values of w (stored as wdt) are all exactly dt values. The first chunk alone
 * rejects almost every layer of another checkpoint type cheaply; the rest is checked in
 * parallel (an fp8 model has billions of weights). */
static bool exact_as(sdw_dtype dt, const void *w, sdw_dtype wdt, size_t n) {
    const long n_chunks = (long)((n + SDW__CONVERT_CHUNK - 1) / SDW__CONVERT_CHUNK);
    const size_t scratch = SDW__CONVERT_CHUNK * (2 * sizeof(float) + sdw_dtype_size(dt));
    uint8_t *t = sdw_xmalloc(scratch);
    bool exact = exact_chunk(dt, w, wdt, 0, SDW_MIN((size_t)SDW__CONVERT_CHUNK, n), (float *)t,
                             (float *)t + SDW__CONVERT_CHUNK, t + 8 * SDW__CONVERT_CHUNK);
    free(t);
    if (!exact || n_chunks < 2) return exact;
#pragma omp parallel reduction(&& : exact) if (n_chunks > 4)
    {
        uint8_t *u = sdw_xmalloc(scratch);
#pragma omp for schedule(static)
        for (long c = 1; c < n_chunks; c++) {
            const size_t lo = (size_t)c * SDW__CONVERT_CHUNK;
            if (exact)
                exact = exact_chunk(dt, w, wdt, lo, SDW_MIN((size_t)SDW__CONVERT_CHUNK, n - lo),
                                    (float *)u, (float *)u + SDW__CONVERT_CHUNK,
                                    u + 8 * SDW__CONVERT_CHUNK);
        }
        free(u);
    }
    return exact;
}

/* How an op keeps weights stored as wdt (n values): the narrowest type that holds every value
 * exactly (compact backends): 8 bits for an fp8 checkpoint (or values that all are fp8 values),
 * else for f32 ops the checkpoint's 16-bit type (f16 / bf16 values are exact in f32), or for
 * f32 values that all are f16 (else bf16) values, that type; otherwise the op's own type. */
static w_store choose_store(const cpu_op *op, const void *w, sdw_dtype wdt, size_t n) {
    if (!backend_of(op)->compact) return W_FULL;
    if (wdt == SDW_DTYPE_F8_E4M3) return W_F8_E4M3;
    if (wdt == SDW_DTYPE_F8_E5M2) return W_F8_E5M2;
    if (exact_as(SDW_DTYPE_F8_E4M3, w, wdt, n)) return W_F8_E4M3;
    if (exact_as(SDW_DTYPE_F8_E5M2, w, wdt, n)) return W_F8_E5M2;
    if (op->prec == SDW_PRECISION_BF16) return W_FULL; /* no 16-bit type narrower than its own */
    if (wdt == SDW_DTYPE_F16 || (wdt != SDW_DTYPE_BF16 && exact_as(SDW_DTYPE_F16, w, wdt, n)))
        return W_F16;
    if (wdt == SDW_DTYPE_BF16 || exact_as(SDW_DTYPE_BF16, w, wdt, n)) return W_BF16;
    return W_FULL;
}

/* The element offset of index x along dimension d of a blocked layout, every other index 0
 * (oneDNN's memory_desc_wrapper::off_v for that position, less offset0). An element's offset
 * is offset0 plus the sum of these over its dimensions: every term of off_v (the inner blocks'
 * remainders and the outer strides) depends on one dimension's index only. */
static int64_t blocked_off(const dnnl_memory_desc_t *md, int d, int64_t x) {
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    int64_t off = 0, stride = 1;
    for (int k = b->inner_nblks - 1; k >= 0; k--) {
        if (b->inner_idxs[k] == d) {
            off += x % b->inner_blks[k] * stride;
            x /= b->inner_blks[k];
        }
        stride *= b->inner_blks[k];
    }
    return off + x * b->strides[d];
}

/* Whether md is a plain blocked layout the tables above describe (weights for f32 and bf16
 * products are; int8 ones carry compensation extras, and runtime formats are opaque). */
static bool packable(const dnnl_memory_desc_t *md) {
    if (md->format_kind != dnnl_blocked || md->extra.flags != 0) return false;
    for (int d = 0; d < md->ndims; d++)
        if (md->padded_offsets[d] != 0) return false;
    return true;
}

/* Packs w (torch layout [out, in(, k, k)], stored as wdt) straight into op->w_md's layout in
 * type dt: one pass over the checkpoint's values, threaded, no f32 copy and no reorder. */
static void pack_blocked(cpu_op *op, const void *w, sdw_dtype wdt, sdw_dtype dt) {
    const dnnl_memory_desc_t *md = &op->w_md;
    const int k = op->g.k, in = op->g.in, out = op->g.out;
    const int64_t row_len = (int64_t)in * k * k;
    int64_t *row_off = sdw_xmalloc(sizeof(int64_t) * (size_t)out);
    int64_t *col_off = sdw_xmalloc(sizeof(int64_t) * (size_t)row_len);
    /* conv weights md: (O, I, H, W); matmul weights md: (K = in, N = out) */
    const int d_out = op->is_conv ? 0 : 1, d_in = op->is_conv ? 1 : 0;
    for (int o = 0; o < out; o++)
        row_off[o] = md->offset0 + blocked_off(md, d_out, o);
    for (int i = 0; i < in; i++)
        for (int h = 0; h < k; h++)
            for (int x = 0; x < k; x++)
                col_off[((int64_t)i * k + h) * k + x] =
                    blocked_off(md, d_in, i) +
                    (op->is_conv ? blocked_off(md, 2, h) + blocked_off(md, 3, x) : 0);
    bool padded = false;
    for (int d = 0; d < md->ndims; d++)
        padded |= md->padded_dims[d] != md->dims[d];
    if (padded) memset(op->w, 0, op->w_n * sdw_dtype_size(dt)); /* pads must be zeros */
    sdw__pack_rows(w, wdt, out, row_len, row_off, col_off, op->w, dt);
    free(row_off);
    free(col_off);
}

/* For layouts pack_blocked cannot describe: oneDNN reorders an f32 copy of the weights, which
 * is then kept in the store type (element by element: the packing only moved the values). */
static void pack_by_reorder(cpu_op *op, const dnnl_memory_desc_t *user_md, const void *w,
                            sdw_dtype wdt, size_t n_src) {
    float *w32 = sdw_xmalloc(n_src * sizeof(float));
    sdw_convert_to_f32(wdt, w, w32, n_src);
    void *full = alloc_md(&op->w_md);
    reorder(engine_of(op), user_md, w32, &op->w_md, full);
    free(w32);
    if (op->store == W_FULL) {
        op->w = full;
        return;
    }
    /* the store type holds every value exactly (choose_store): convert the packed copy */
    const sdw_dtype dt = store_dtype(op->store);
    float *x = full;
    if (op->prec == SDW_PRECISION_BF16) {
        x = sdw_xmalloc(op->w_n * sizeof(float));
        sdw__bf16_to_f32(full, x, op->w_n);
    }
    op->w = alloc_weights(op->w_n * sdw_dtype_size(dt));
    sdw_convert_from_f32(dt, x, op->w, op->w_n);
    if (x != full) free(x);
    free(full);
}

/* Packs weights w (torch layout, user_md's shape; stored as wdt) into the layout oneDNN picks
 * for a nominal shape, kept in the type choose_store picks. */
static sdw_status pack(cpu_op *op, const dnnl_memory_desc_t *user_md, const void *w, sdw_dtype wdt,
                       const float *bias, sdw_error *err) {
    if (bias) {
        check(dnnl_memory_desc_init_by_tag(&op->bias_md, op->is_conv ? 1 : 2,
                                           op->is_conv ? (dnnl_dims_t){op->g.out}
                                                       : (dnnl_dims_t){1, op->g.out},
                                           dnnl_f32, op->is_conv ? dnnl_a : dnnl_ab),
              "bias md");
        op->bias = sdw_xmalloc(sizeof(float) * (size_t)op->g.out);
        memcpy(op->bias, bias, sizeof(float) * (size_t)op->g.out);
    }
    /* Nominal shapes: mid-sized, so the kernel family chosen is the one big shapes use. */
    const int64_t key[KEY_N] = {op->is_conv ? 2 : 256,
                                op->is_conv ? 32 : 0,
                                op->is_conv ? 32 : 0,
                                op_dt(op),
                                SDW_DT_F32,
                                0};
    dnnl_primitive_desc_t pd;
    dnnl_status_t s = make_pd(op, key, NULL, &pd);
    if (s != dnnl_success)
        return sdw_error_set(err, SDW_E_BACKEND, "oneDNN refuses a %s %s (status %d)",
                             sdw_precision_str(op->prec), op->is_conv ? "convolution" : "matmul",
                             (int)s);
    op->w_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);
    op->w_n = dnnl_memory_desc_get_size(&op->w_md) / (op->prec == SDW_PRECISION_BF16 ? 2 : 4);
    const size_t n_src = (size_t)op->g.out * op->g.in * op->g.k * op->g.k;
    op->store = choose_store(op, w, wdt, n_src);
    if (!packable(&op->w_md) || backend_of(op)->reorder) {
        pack_by_reorder(op, user_md, w, wdt, n_src);
        return SDW_OK;
    }
    const sdw_dtype dt = op->store != W_FULL              ? store_dtype(op->store)
                         : op->prec == SDW_PRECISION_BF16 ? SDW_DTYPE_BF16
                                                          : SDW_DTYPE_F32;
    op->w = alloc_weights(op->w_n * sdw_dtype_size(dt));
    pack_blocked(op, w, wdt, dt);
    return SDW_OK;
}

static cpu_op *op_new(sdw_backend *be, bool is_conv, sdw_precision p) {
    cpu_backend *cb = (cpu_backend *)be;
    cpu_op *op = sdw_xcalloc(1, sizeof *op);
    op->base.be = be;
    op->is_conv = is_conv;
    op->prec = p;
    pthread_mutex_lock(&cb->cache_lock);
    if (cb->n_free) {
        op->slot = cb->free_slots[--cb->n_free];
    } else {
        if (cb->n_slots == cb->cap_slots) {
            cb->cap_slots = cb->cap_slots ? 2 * cb->cap_slots : 256;
            cb->caches = realloc(cb->caches, sizeof *cb->caches * (size_t)cb->cap_slots);
            cb->free_slots = realloc(cb->free_slots, sizeof(int) * (size_t)cb->cap_slots);
            if (!cb->caches || !cb->free_slots) SDW_ABORT("out of memory");
        }
        op->slot = cb->n_slots++;
    }
    cb->caches[op->slot] = NULL;
    pthread_mutex_unlock(&cb->cache_lock);
    return op;
}

static void op_destroy(sdw_backend_op *bop);

static sdw_status conv_create(sdw_backend *be, sdw_precision p, const void *w_oihw, sdw_dtype wdt,
                              const float *bias, const sdw_conv_geom *g, sdw_backend_op **out,
                              sdw_error *err) {
    cpu_op *op = op_new(be, true, p);
    op->g = *g;
    dnnl_memory_desc_t user;
    check(dnnl_memory_desc_init_by_tag(&user, 4, (dnnl_dims_t){g->out, g->in, g->k, g->k}, dnnl_f32,
                                       dnnl_oihw),
          "user weights md");
    sdw_status st = pack(op, &user, w_oihw, wdt, bias, err);
    if (st != SDW_OK) {
        op_destroy(&op->base);
        return st;
    }
    *out = &op->base;
    return SDW_OK;
}

static sdw_status linear_create(sdw_backend *be, sdw_precision p, const void *w, sdw_dtype wdt,
                                const float *bias, int in, int out, sdw_backend_op **out_op,
                                sdw_error *err) {
    cpu_op *op = op_new(be, false, p);
    op->g = (sdw_conv_geom){.in = in, .out = out, .k = 1, .stride = 1};
    /* torch's [out, in] row-major is the [in, out] matrix with strides (1, in): tag "ba". */
    dnnl_memory_desc_t user;
    check(dnnl_memory_desc_init_by_tag(&user, 2, (dnnl_dims_t){in, out}, dnnl_f32, dnnl_ba),
          "user weights md");
    sdw_status st = pack(op, &user, w, wdt, bias, err);
    if (st != SDW_OK) {
        op_destroy(&op->base);
        return st;
    }
    *out_op = &op->base;
    return SDW_OK;
}

static void op_destroy(sdw_backend_op *bop) {
    cpu_op *op = (cpu_op *)bop;
    cpu_backend *cb = backend_of(op);
    pthread_mutex_lock(&cb->cache_lock);
    op_cache *c = cb->caches[op->slot];
    cb->caches[op->slot] = NULL;
    cb->free_slots[cb->n_free++] = op->slot;
    pthread_mutex_unlock(&cb->cache_lock);
    for (int i = 0; c && i < c->n; i++) {
        dnnl_primitive_destroy(c->e[i].prim);
        if (c->e[i].own_w) free(c->e[i].w);
    }
    free(c);
    free(op->w);
    free(op->bias);
    free(op);
}

static size_t op_weight_bytes(const sdw_backend_op *bop) {
    const cpu_op *op = (const cpu_op *)bop;
    if (op->store != W_FULL) return op->w_n * sdw_dtype_size(store_dtype(op->store));
    return op->w_n * (op->prec == SDW_PRECISION_BF16 ? 2 : 4);
}

static sdw_precision op_precision(const sdw_backend_op *op) {
    return ((const cpu_op *)op)->prec;
}

/* Makes the primitive for key into *e. Prefers the packed weights; if the only kernel that
 * takes them for this shape is a reference one, lets oneDNN choose and reorders a copy. */
static void make_entry(const cpu_op *op, const int64_t *key, prim_entry *e) {
    dnnl_primitive_desc_t pd;
    memcpy(e->key, key, sizeof e->key);
    e->w = NULL; /* the op's own (see weights_packed) */
    e->own_w = false;
    check(make_pd(op, key, &op->w_md, &pd), op->is_conv ? "convolution" : "matmul");
    if (is_reference(pd)) {
        dnnl_primitive_desc_t alt;
        if (make_pd(op, key, NULL, &alt) == dnnl_success && !is_reference(alt)) {
            const dnnl_memory_desc_t *md =
                dnnl_primitive_desc_query_md(alt, dnnl_query_weights_md, 0);
            e->w = alloc_md(md);
            e->own_w = true;
            wide_buf held;
            reorder(engine_of(op), &op->w_md, weights_packed(op, &held), md, e->w);
            wide_give(backend_of(op), held);
            dnnl_primitive_desc_destroy(pd);
            pd = alt;
        } else {
            if (make_pd(op, key, NULL, &alt) == dnnl_success) dnnl_primitive_desc_destroy(alt);
            SDW_DEBUG("oneDNN: only a reference kernel for this %s shape (%lld, %lld, %lld)",
                      op->is_conv ? "convolution" : "matmul", (long long)key[0], (long long)key[1],
                      (long long)key[2]);
        }
    }
    e->src_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    e->wei_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    e->dst_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (sp)
        e->scratch_md = *sp;
    else
        memset(&e->scratch_md, 0, sizeof e->scratch_md);
    check(dnnl_primitive_create(&e->prim, pd), "primitive");
    dnnl_primitive_desc_destroy(pd);
}

/* The cached entry for key (made on first use), or *tmp filled for this call only. */
static const prim_entry *get_entry(const cpu_op *op, const int64_t *key, prim_entry *tmp) {
    cpu_backend *cb = backend_of(op);
    pthread_mutex_lock(&cb->cache_lock);
    op_cache *c = cb->caches[op->slot];
    if (!c) c = cb->caches[op->slot] = sdw_xcalloc(1, sizeof *c);
    const prim_entry *found = NULL;
    for (int i = 0; i < c->n && !found; i++)
        if (memcmp(c->e[i].key, key, sizeof c->e[i].key) == 0) found = &c->e[i];
    if (!found && c->n < CACHE_MAX) {
        make_entry(op, key, &c->e[c->n]);
        found = &c->e[c->n++];
    }
    pthread_mutex_unlock(&cb->cache_lock);
    if (found) return found;
    make_entry(op, key, tmp);
    return tmp;
}

static void run(const cpu_op *op, const int64_t *key, const void *x, void *y) {
    prim_entry tmp = {0};
    const prim_entry *e = get_entry(op, key, &tmp);
    const size_t n_scratch = dnnl_memory_desc_get_size(&e->scratch_md);
    void *scratch = n_scratch ? sdw_xmalloc(n_scratch) : NULL;
    dnnl_memory_t ms, mw, mb = NULL, md, msp = NULL;
    dnnl_stream_t stream;
    check(dnnl_memory_create(&ms, &e->src_md, engine_of(op), (void *)x), "src memory");
    wide_buf held = {0};
    void *w = e->own_w ? e->w : (void *)weights_packed(op, &held);
    check(dnnl_memory_create(&mw, &e->wei_md, engine_of(op), w), "weights memory");
    check(dnnl_memory_create(&md, &e->dst_md, engine_of(op), y), "dst memory");
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}};
    int n_args = 3;
    if (op->bias) {
        check(dnnl_memory_create(&mb, &op->bias_md, engine_of(op), op->bias), "bias memory");
        args[n_args++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mb};
    }
    if (scratch) {
        check(dnnl_memory_create(&msp, &e->scratch_md, engine_of(op), scratch), "scratch memory");
        args[n_args++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, msp};
    }
    check(dnnl_stream_create(&stream, engine_of(op), dnnl_stream_default_flags), "stream");
    check(dnnl_primitive_execute(e->prim, stream, n_args, args), "execute");
    check(dnnl_stream_wait(stream), "stream wait");
    dnnl_stream_destroy(stream);
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(md);
    if (mb) dnnl_memory_destroy(mb);
    if (msp) dnnl_memory_destroy(msp);
    wide_give(backend_of(op), held);
    free(scratch);
    if (e == &tmp) {
        dnnl_primitive_destroy(tmp.prim);
        if (tmp.own_w) free(tmp.w);
    }
}

/* The activation in the op's type: x itself, or a bf16 copy in *tmp (caller frees). */
static const void *src_for(const cpu_op *op, const void *x, sdw_dt xt, size_t n, void **tmp) {
    *tmp = NULL;
    if (xt == op_dt(op)) return x;
    SDW_ASSERT(xt == SDW_DT_F32 && op_dt(op) == SDW_DT_BF16); /* never widen bf16 for an f32 op */
    uint16_t *b = sdw_xmalloc(n * sizeof(uint16_t));
    sdw__f32_to_bf16(x, b, n);
    *tmp = b;
    return b;
}

static void conv_forward(const sdw_backend_op *bop, sdw_act x, sdw_act y, unsigned flags) {
    const cpu_op *op = (const cpu_op *)bop;
    SDW_ASSERT(op->is_conv && x.d && y.d && x.d != y.d);
    SDW_ASSERT(x.layout == SDW_LAYOUT_NHWC && x.b > 0 && x.h > 0 && x.w > 0);
    SDW_ASSERT(y.dt == SDW_DT_F32 || op_dt(op) == SDW_DT_BF16); /* bf16 out only from a bf16 op */
    const double t0 = sdw__prof_begin();
    const sdw_conv_geom *g = &op->g;
    const int B = x.b, H = x.h, W = x.w;
    const int OH = conv_out_size(g, H), OW = conv_out_size(g, W);
    SDW_ASSERT(OH > 0 && OW > 0 && y.rows == (int64_t)B * OH * OW);
    void *tmp;
    const void *src = src_for(op, x.d, x.dt, (size_t)B * H * W * g->in, &tmp);
    const int64_t key[KEY_N] = {B, H, W, op_dt(op), y.dt, (flags & SDW_ACCUMULATE) != 0};
    run(op, key, src, y.d);
    free(tmp);
    sdw__prof_end(g->k == 1 ? SDW_OP_CONV1 : SDW_OP_CONV3, t0,
                  2.0 * B * OH * OW * (double)g->out * g->in * g->k * g->k);
}

static void linear_forward(const sdw_backend_op *bop, sdw_act x, sdw_act y, unsigned flags) {
    const cpu_op *op = (const cpu_op *)bop;
    SDW_ASSERT(!op->is_conv && x.d && y.d && x.d != y.d);
    SDW_ASSERT(y.dt == SDW_DT_F32 && y.rows == x.rows);
    const int64_t M = x.rows;
    if (M <= 0) return;
    const double t0 = sdw__prof_begin();
    void *tmp;
    const void *src = src_for(op, x.d, x.dt, (size_t)M * op->g.in, &tmp);
    const int64_t key[KEY_N] = {M, 0, 0, op_dt(op), SDW_DT_F32, (flags & SDW_ACCUMULATE) != 0};
    run(op, key, src, y.d);
    free(tmp);
    sdw__prof_end(SDW_OP_LINEAR, t0, 2.0 * M * (double)op->g.in * op->g.out);
}

/* ---- the backend ---- */

static void convert(sdw_backend *be, sdw_act x, sdw_act y, size_t n) {
    if (x.dt == y.dt)
        memcpy(y.d, x.d, n * sdw_dt_size(x.dt));
    else if (x.dt == SDW_DT_F32)
        sdw__f32_to_bf16(x.d, y.d, n);
    else
        sdw__bf16_to_f32(x.d, y.d, n);
}

static void backend_destroy(sdw_backend *be) {
    cpu_backend *cb = (cpu_backend *)be;
    SDW_ASSERT(cb->n_free == cb->n_slots); /* every op made on it was destroyed first */
    for (int i = 0; i < cb->n_idle; i++)
        free(cb->idle[i].p);
    free(cb->idle);
    free(cb->caches);
    free(cb->free_slots);
    pthread_mutex_destroy(&cb->wide_lock);
    pthread_mutex_destroy(&cb->cache_lock);
    dnnl_engine_destroy(cb->engine);
    free(cb);
}

static const sdw_backend_ops CPU_OPS = {
    .name = "cpu",
    .linear_create = linear_create,
    .conv_create = conv_create,
    .op_destroy = op_destroy,
    .op_precision = op_precision,
    .op_weight_bytes = op_weight_bytes,
    .linear_forward = linear_forward,
    .conv_forward = conv_forward,
    .convert = convert,
    .destroy = backend_destroy,
};

sdw_backend_cpu_params sdw_backend_cpu_params_default(void) {
    return (sdw_backend_cpu_params){0};
}

sdw_status sdw_backend_cpu_create(const sdw_backend_cpu_params *params, sdw_backend **out,
                                  sdw_error *err) {
    SDW_ASSERT(out);
    const sdw_backend_cpu_params p = params ? *params : sdw_backend_cpu_params_default();
    isa_once(); /* the ISA cap goes first */
    dnnl_engine_t engine;
    dnnl_status_t s = dnnl_engine_create(&engine, dnnl_cpu, 0);
    if (s != dnnl_success)
        return sdw_error_set(err, SDW_E_BACKEND, "oneDNN: cannot create the CPU engine (status %d)",
                             (int)s);
    cpu_backend *cb = sdw_xcalloc(1, sizeof *cb);
    cb->base.ops = &CPU_OPS;
    cb->engine = engine;
    cb->compact = !p.full_weights;
    cb->reorder = p.onednn_reorder;
    pthread_mutex_init(&cb->cache_lock, NULL);
    pthread_mutex_init(&cb->wide_lock, NULL);
    *out = &cb->base;
    return SDW_OK;
}

/* ---- hand-built layers' GEMM ---- */

void sdw__sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    isa_once();
    dnnl_status_t s = dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (s != dnnl_success)
        SDW_ABORT("dnnl_sgemm(%c%c, M=%lld N=%lld K=%lld) failed: %d", ta, tb, (long long)M,
                  (long long)N, (long long)K, (int)s);
}

/* ---- precision ---- */

/* What the CPU can do is a fact about the machine, the same for every backend and model of the
 * process: it is read once and never changes afterwards, so it stays a process-wide constant
 * rather than state of a backend instance. Before oneDNN's first use it is capped to our own
 * kernels' level (core/cpu.h: SDW_MAX_ISA), so one variable makes the whole program run as on
 * a CPU of that level. */
static dnnl_cpu_isa_t g_isa;
static char g_version[48];
static pthread_once_t g_isa_once = PTHREAD_ONCE_INIT;
static void isa_init(void) {
    static const dnnl_cpu_isa_t cap[] = {
        [SDW_ISA_BASELINE] = dnnl_cpu_isa_sse41,
        [SDW_ISA_AVX2] = dnnl_cpu_isa_avx2,
        [SDW_ISA_AVX512] = dnnl_cpu_isa_avx512_core_vnni,
        [SDW_ISA_AVX512_BF16] = dnnl_cpu_isa_avx512_core_bf16,
        [SDW_ISA_AMX] = dnnl_cpu_isa_all,
    };
    const sdw_isa isa = sdw_cpu_isa();
    if (isa < sdw_cpu_isa_hw() && dnnl_set_max_cpu_isa(cap[isa]) != dnnl_success)
        SDW_WARN("oneDNN refuses to be capped to %s (SDW_MAX_ISA): its kernels may use more",
                 sdw_isa_str(isa));
    g_isa = dnnl_get_effective_cpu_isa();
    const dnnl_version_t *v = dnnl_version();
    snprintf(g_version, sizeof g_version, "%d.%d.%d", v->major, v->minor, v->patch);
}
static void isa_once(void) {
    pthread_once(&g_isa_once, isa_init);
}

/* oneDNN's ISA values are nested bit masks: a CPU "has" an ISA when all its bits are set. */
static bool isa_has(dnnl_cpu_isa_t want) {
    isa_once();
    return ((unsigned)g_isa & (unsigned)want) == (unsigned)want;
}

bool sdw_nn_cpu_has_bf16(void) {
    return isa_has(dnnl_cpu_isa_avx512_core_bf16);
}
bool sdw_nn_cpu_has_amx(void) {
    return isa_has(dnnl_cpu_isa_avx512_core_amx);
}

const char *sdw__onednn_version(void) {
    isa_once();
    return g_version;
}
