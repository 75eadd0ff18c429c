/* nn/attention_avx512.c — sdw_attention's AVX-512 kernel (run-time dispatched from attention.c;
 * the build stays baseline x86-64, only these functions carry the avx512f target).
 *
 * Same algorithm and contract as the generic path (flash-attention style, online softmax, one
 * task per (batch, head, block of QB query rows), fixed arithmetic order per task: results do
 * not depend on the thread count). What makes it fast:
 *  - K is transposed once per call into Kt [B, H, D, Lk (padded to 16)], so a score tile
 *    S = Q·Kᵀ is register-blocked FMAs of broadcast q values against contiguous key vectors
 *    (4 rows x 64 keys per block) with no per-tile packing;
 *  - the softmax update is 16-wide: one pass for the row max over the raw scores, one for
 *    2^(s·c - m·c) (the scale folded into the exponent's FMA) with an exp2 built on vscalefps;
 *  - P·V accumulates 4 rows x 64 channels in registers per pass over the chunk's keys.
 * With a relative position bias, each row's raw scores become s·scale + bias (one FMA pass over
 * the row's contiguous run of the head's table) before the update, which then uses c = log2(e):
 * the bias is in score units, so the scale can no longer wait for the exponent.
 *
 * bf16 products (a bf16 model's attention; the functions with the avx512bf16 target, called only
 * where the CPU has it): the same tasks and softmax, with q, k, the probabilities and v rounded
 * to bf16 and both products on vdpbf16ps (pairs of bf16 along the reduced dimension, f32 sums):
 * twice the multiply rate. K panels hold (k[2p], k[2p+1]) pairs per key, V rows (v[i][c],
 * v[i+1][c]) pairs per channel; the probabilities are rounded as the softmax writes them. */
#include "nn/nn_impl.h"
#include "nn/stop.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define T512 __attribute__((target("avx512f")))
#define T512I __attribute__((target("avx512f"), always_inline)) static inline

enum {
    QB = 64,    /* query rows per task */
    KB = 128,   /* keys per score tile */
    PANEL = 64, /* keys per K panel (one qk block) */
    RB = 4,     /* rows per register block */
    VB = 4      /* zmm per register block: 64 keys or channels */
};

static inline int64_t round_up(int64_t n, int64_t m) {
    return (n + m - 1) / m * m;
}

/* 2^x for 16 lanes: x = n + r, |r| <= 1/2; 2^r by its degree-6 Taylor polynomial in r·ln 2
 * (relative error below 2e-7), times 2^n by vscalefps. x is clamped to [-127, 128] (NaN stays
 * NaN: max/min return their second operand when one is NaN). */
T512I __m512 exp2_16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-127.0f), x);
    x = _mm512_min_ps(_mm512_set1_ps(128.0f), x);
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(x, n);
    __m512 y = _mm512_set1_ps(1.5403530393381609e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3333558146428443e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(9.6181291076284772e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.5504108664821580e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(2.4022650695910071e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(6.9314718055994531e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, n);
}

/* S[r][0 .. 64) = Σ_d q_r[d] · Kt[d][0 .. 64) for R rows (q_r = q + r·qs), Kt one 64-key panel
 * [D][64] (contiguous: one stream, no page hopping). */
T512I void qk_block(int R, const float *q, int64_t qs, const float *kt, int D, float *s) {
    __m512 acc[RB][VB];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int v = 0; v < VB; v++) acc[r][v] = _mm512_setzero_ps();
    for (int d = 0; d < D; d++) {
        __m512 k[VB];
        _Pragma("GCC unroll 4") for (int v = 0; v < VB; v++) k[v] =
            _mm512_load_ps(kt + d * PANEL + 16 * v);
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const __m512 qb = _mm512_set1_ps(q[r * qs + d]);
            _Pragma("GCC unroll 4") for (int v = 0; v < VB; v++) acc[r][v] =
                _mm512_fmadd_ps(qb, k[v], acc[r][v]);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int v = 0; v < VB; v++)
            _mm512_store_ps(s + r * KB + 16 * v, acc[r][v]);
}

/* o[r][c .. c+16·nv) += Σ_j p[r][j] · V[j][c ..] for R rows and nk keys, V rows packed with
 * stride vs (zero-padded channels). o rows have stride os. */
T512I void pv_block(int R, int nv, const float *p, const float *v, int64_t vs, int nk, float *o,
                    int64_t os) {
    __m512 acc[RB][VB];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int i = 0; i < nv; i++) acc[r][i] = _mm512_setzero_ps();
    for (int j = 0; j < nk; j++) {
        __m512 vv[VB];
        _Pragma("GCC unroll 4") for (int i = 0; i < nv; i++) vv[i] =
            _mm512_load_ps(v + j * vs + 16 * i);
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const __m512 pb = _mm512_set1_ps(p[r * KB + j]);
            _Pragma("GCC unroll 4") for (int i = 0; i < nv; i++) acc[r][i] =
                _mm512_fmadd_ps(pb, vv[i], acc[r][i]);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int i = 0; i < nv; i++) {
        float *dst = o + r * os + 16 * i;
        _mm512_store_ps(dst, _mm512_add_ps(_mm512_load_ps(dst), acc[r][i]));
    }
}

/* Constant-argument instances, so the register blocks above unroll fully. */
static T512 void qk_rows(int R, const float *q, int64_t qs, const float *kt, int D, float *s) {
    if (R == RB)
        qk_block(RB, q, qs, kt, D, s);
    else
        qk_block(1, q, qs, kt, D, s);
}

static T512 void pv_rows(int R, int nv, const float *p, const float *v, int64_t vs, int nk,
                         float *o, int64_t os) {
#define PV(r, n)                                                                                   \
    case (r)*8 + (n):                                                                              \
        pv_block(r, n, p, v, vs, nk, o, os);                                                       \
        break;
    switch (R * 8 + nv) {
        PV(4, 4)
        PV(4, 3) PV(4, 2) PV(4, 1) PV(1, 4) PV(1, 3) PV(1, 2) PV(1, 1) default
            : SDW_ABORT("pv_rows(%d, %d)", R, nv);
    }
#undef PV
}

/* The first half of a row's online-softmax update: the running max *m (raw units) takes in the
 * row's scores s[0 .. n_valid), or lane_max (their 16-lane max, when the product took it);
 * returns the rescale factor 2^((m_old - m_new)·c) for the row's sums: 0 on the first chunk
 * (m = -inf), exactly 1 (no call) once the row's max has settled. */
T512I float row_max_update(const float *s, int n_valid, const float *lane_max, float c, float *m) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    if (lane_max)
        vmax = _mm512_load_ps(lane_max);
    else
        for (int j = 0; j < n_valid; j += 16) {
            const __mmask16 k =
                n_valid - j >= 16 ? 0xffff : (__mmask16)((1u << (n_valid - j)) - 1);
            vmax = _mm512_mask_max_ps(vmax, k, vmax, _mm512_maskz_loadu_ps(k, s + j));
        }
    const float mx = _mm512_reduce_max_ps(vmax);
    const float m_new = mx > *m ? mx : *m;
    const float alpha = m_new == *m ? 1.0f : exp2f((*m - m_new) * c);
    *m = m_new;
    return alpha;
}

/* Online-softmax update of one row of raw scores s[0 .. nkp) of which the first n_valid count,
 * with c = scale·log2(e) > 0 (so the running max *m is kept in raw units and the scale is
 * applied once, inside the exponent; c = log2(e) for biased scores, which arrive scaled): s
 * becomes P = 2^((s - m)·c) (0 past n_valid); returns the rescale factor for the row's
 * accumulator. */
static T512 float softmax_row(float *s, int n_valid, int nkp, float c, float *m, float *l) {
    const float alpha = row_max_update(s, n_valid, NULL, c, m);
    const __m512 vc = _mm512_set1_ps(c), vmc = _mm512_set1_ps(*m * c);
    __m512 vsum = _mm512_setzero_ps();
    for (int j = 0; j < nkp; j += 16) {
        const int left = n_valid - j;
        const __mmask16 k = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
        const __m512 t = _mm512_fmsub_ps(_mm512_loadu_ps(s + j), vc, vmc);
        const __m512 p = _mm512_maskz_mov_ps(k, exp2_16(t));
        _mm512_storeu_ps(s + j, p);
        vsum = _mm512_add_ps(vsum, p);
    }
    *l = *l * alpha + _mm512_reduce_add_ps(vsum);
    return alpha;
}

/* s[j] = s[j]·scale + b[j] for j < n (the row's valid keys; the rest are masked anyway). */
static T512 void bias_row(float *s, int n, float scale, const float *b) {
    const __m512 vs = _mm512_set1_ps(scale);
    for (int j = 0; j < n; j += 16) {
        const __mmask16 k = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(k, s + j);
        _mm512_mask_storeu_ps(s + j, k, _mm512_fmadd_ps(x, vs, _mm512_maskz_loadu_ps(k, b + j)));
    }
}

/* ---- the bf16 products (AVX512-BF16): vdpbf16ps takes pairs of bf16 along the reduced dim.
 * QK reduces over d: q as 32-bit (q[2p], q[2p+1]) broadcasts, K panels [D/2][64 keys] of
 * (k[j][2p], k[j][2p+1]) pairs. PV reduces over keys: p as (p[2i], p[2i+1]) broadcasts, V as
 * [key pairs][Dp channels] of (v[2i][c], v[2i+1][c]). Accumulation stays f32. ---- */
#define TBF __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define TBFI                                                                                       \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"), always_inline)) static inline

/* One head's row x[0 .. n) to bf16 with vcvtneps2bf16 (nearest even, as nn/convert's rounding;
 * denormal inputs flush to zero): rows are short (SD's 40), where the generic converter's
 * dispatch and scalar tail cost as much as its vector part (8% of the kernel's time). */
TBFI void row_to_bf16(const float *x, uint16_t *y, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(y + i, k,
                                 (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

/* S[r][0 .. 64) for R rows against one 64-key panel; mx (or NULL): each row's 16-lane running
 * max [R][16] takes the new scores in too (the panel's keys all valid). */
TBFI void qk_block_bf16(int R, const uint32_t *q, int64_t qs, const uint32_t *kt, int np,
                        float *s, float *mx) {
    __m512 acc[RB][VB];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int v = 0; v < VB; v++) acc[r][v] = _mm512_setzero_ps();
    for (int p = 0; p < np; p++) {
        __m512i k[VB];
        _Pragma("GCC unroll 4") for (int v = 0; v < VB; v++) k[v] =
            _mm512_load_si512(kt + p * PANEL + 16 * v);
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const __m512i qb = _mm512_set1_epi32((int)q[r * qs + p]);
            _Pragma("GCC unroll 4") for (int v = 0; v < VB; v++) acc[r][v] =
                _mm512_dpbf16_ps(acc[r][v], (__m512bh)qb, (__m512bh)k[v]);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int v = 0; v < VB; v++)
            _mm512_store_ps(s + r * KB + 16 * v, acc[r][v]);
    if (mx)
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const __m512 m = _mm512_max_ps(_mm512_max_ps(acc[r][0], acc[r][1]),
                                           _mm512_max_ps(acc[r][2], acc[r][3]));
            _mm512_store_ps(mx + 16 * r, _mm512_max_ps(_mm512_load_ps(mx + 16 * r), m));
        }
}

/* o[r][c ..] += Σ_i p[r][i] · V[i][c ..] over npairs key pairs, for R rows: nz full vectors of
 * 16 channels, then (tail) 8 more in a ymm, the head's last 8 when D % 16 is 1..8 (SD's 40:
 * 16 + 16 + 8, where a third zmm would multiply 8 padded zeros per key). */
TBFI void pv_block_bf16(int R, int nz, bool tail, const uint32_t *p, const uint32_t *v, int64_t vs,
                        int npairs, float *o, int64_t os) {
    __m512 acc[RB][VB];
    __m256 acct[RB];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
        _Pragma("GCC unroll 4") for (int i = 0; i < nz; i++) acc[r][i] = _mm512_setzero_ps();
        if (tail) acct[r] = _mm256_setzero_ps();
    }
    for (int j = 0; j < npairs; j++) {
        __m512i vv[VB];
        __m256i vt = _mm256_setzero_si256();
        _Pragma("GCC unroll 4") for (int i = 0; i < nz; i++) vv[i] =
            _mm512_load_si512(v + j * vs + 16 * i);
        if (tail) vt = _mm256_load_si256((const __m256i *)(v + j * vs + 16 * nz));
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const __m512i pb = _mm512_set1_epi32((int)p[r * (KB / 2) + j]);
            _Pragma("GCC unroll 4") for (int i = 0; i < nz; i++) acc[r][i] =
                _mm512_dpbf16_ps(acc[r][i], (__m512bh)pb, (__m512bh)vv[i]);
            if (tail)
                acct[r] = _mm256_dpbf16_ps(acct[r], (__m256bh)_mm512_castsi512_si256(pb),
                                           (__m256bh)vt);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
        _Pragma("GCC unroll 4") for (int i = 0; i < nz; i++) {
            float *dst = o + r * os + 16 * i;
            _mm512_store_ps(dst, _mm512_add_ps(_mm512_load_ps(dst), acc[r][i]));
        }
        if (tail) {
            float *dst = o + r * os + 16 * nz;
            _mm256_store_ps(dst, _mm256_add_ps(_mm256_load_ps(dst), acct[r]));
        }
    }
}

static TBF void qk_rows_bf16(int R, const uint32_t *q, int64_t qs, const uint32_t *kt, int np,
                             float *s, float *mx) {
    if (R == RB)
        qk_block_bf16(RB, q, qs, kt, np, s, mx);
    else
        qk_block_bf16(1, q, qs, kt, np, s, mx);
}

/* nv vectors of 16 channels, the last one 8 wide when tail. */
static TBF void pv_rows_bf16(int R, int nv, bool tail, const uint32_t *p, const uint32_t *v,
                             int64_t vs, int npairs, float *o, int64_t os) {
#define PV(r, n, t)                                                                                \
    case (r)*16 + (n)*2 + (t):                                                                     \
        pv_block_bf16(r, (n) - (t), t, p, v, vs, npairs, o, os);                                   \
        break;
    switch (R * 16 + nv * 2 + tail) {
        PV(4, 4, 0)
        PV(4, 3, 0) PV(4, 2, 0) PV(4, 1, 0) PV(4, 4, 1) PV(4, 3, 1) PV(4, 2, 1) PV(4, 1, 1)
        PV(1, 4, 0) PV(1, 3, 0) PV(1, 2, 0) PV(1, 1, 0) PV(1, 4, 1) PV(1, 3, 1) PV(1, 2, 1)
        PV(1, 1, 1) default : SDW_ABORT("pv_rows_bf16(%d, %d, %d)", R, nv, tail);
    }
#undef PV
}

/* 2^x for 16 lanes, x <= 0 (or NaN): softmax_row's exponent with a degree-4 polynomial for 2^r
 * (relative error 4e-5, far below the bf16 rounding of the result, 2^-9). */
TBFI __m512 exp2_16_bf16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-127.0f), x);
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(x, n);
    __m512 y = _mm512_set1_ps(9.6181291076284772e-3f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.5504108664821580e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(2.4022650695910071e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(6.9314718055994531e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, n);
}

/* softmax_row for the bf16 products: the probabilities go to p (bf16, zero past n_valid up to
 * nkp) instead of back into s; lane_max: NULL, or the row's scores' 16-lane max, taken by
 * the product. */
static TBF float softmax_row_bf16(const float *s, int n_valid, int nkp, float c, float *m, float *l,
                                  const float *lane_max, uint16_t *p) {
    const float alpha = row_max_update(s, n_valid, lane_max, c, m);
    const __m512 vc = _mm512_set1_ps(c), vmc = _mm512_set1_ps(*m * c);
    __m512 vsum = _mm512_setzero_ps();
    for (int j = 0; j < nkp; j += 16) {
        const int left = n_valid - j;
        const __mmask16 k = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
        const __m512 t = _mm512_fmsub_ps(_mm512_load_ps(s + j), vc, vmc);
        const __m512 e = _mm512_maskz_mov_ps(k, exp2_16_bf16(t));
        _mm256_store_si256((__m256i *)(p + j), (__m256i)_mm512_cvtneps_pbh(e));
        vsum = _mm512_add_ps(vsum, e);
    }
    *l = *l * alpha + _mm512_reduce_add_ps(vsum);
    return alpha;
}

/* A task's nq query rows (stride qs) to bf16 rows of D. */
static TBF void q_to_bf16(const float *q, int64_t qs, int nq, int D, uint16_t *y) {
    for (int r = 0; r < nq; r++)
        row_to_bf16(q + r * qs, y + (size_t)r * D, D);
}

typedef struct task_buf {
    float s[QB * KB];
    float m[QB], l[QB];
    uint16_t p16[QB * KB]; /* bf16 products: the probabilities rounded */
    float mx[QB * 16];     /* bf16 products: each row's 16-lane score max, from the product */
} task_buf;

/* Per (batch, head), packed once per call: K as 64-key panels and V as rows, both contiguous and
 * zero-padded (padded keys score 0 and are masked). f32: panels [D][64], V [Lk][Dp]. bf16:
 * panels [D/2][64] of d-pairs, V [Lk/2 rounded up][Dp] of key pairs. */
static TBF void pack_kv_bf16(const float *ks, int64_t k_stride, const float *vs, int64_t v_stride,
                             int64_t Lk, int D, int64_t Dp, uint32_t *kd, uint32_t *vd,
                             size_t kt_head, size_t vp_head) {
    uint32_t r0[SDW__ATTN_AVX512_MAX_D / 2];
    uint16_t a[SDW__ATTN_AVX512_MAX_D], b[SDW__ATTN_AVX512_MAX_D];
    memset(kd, 0, sizeof(uint32_t) * kt_head);
    memset(vd, 0, sizeof(uint32_t) * vp_head);
    for (int64_t j = 0; j < Lk; j++) {
        uint32_t *panel = kd + j / PANEL * PANEL * (D / 2) + j % PANEL;
        row_to_bf16(ks + j * k_stride, (uint16_t *)r0, D);
        for (int p = 0; p < D / 2; p++)
            panel[p * PANEL] = r0[p];
    }
    memset(b, 0, sizeof b);
    for (int64_t j = 0; j < Lk; j += 2) {
        row_to_bf16(vs + j * v_stride, a, D);
        if (j + 1 < Lk) row_to_bf16(vs + (j + 1) * v_stride, b, D);
        else memset(b, 0, sizeof b);
        uint32_t *row = vd + j / 2 * Dp;
        for (int c = 0; c < D; c++)
            row[c] = (uint32_t)a[c] | (uint32_t)b[c] << 16;
    }
}

static T512 void pack_kv_f32(const float *ks, int64_t k_stride, const float *vs, int64_t v_stride,
                             int64_t Lk, int D, int64_t Dp, float *kd, float *vd, size_t kt_head) {
    memset(kd, 0, sizeof(float) * kt_head);
    for (int64_t j = 0; j < Lk; j++) {
        float *panel = kd + j / PANEL * PANEL * D + j % PANEL;
        for (int d = 0; d < D; d++)
            panel[d * PANEL] = ks[j * k_stride + d];
        memcpy(vd + j * Dp, vs + j * v_stride, sizeof(float) * D);
        memset(vd + j * Dp + D, 0, sizeof(float) * (size_t)(Dp - D));
    }
}

/* Both precisions' driver: bf16 rounds q, k, p and v for the products (vdpbf16ps, f32 sums);
 * scores, softmax and the accumulators are f32 either way. */
static T512 void attention_run(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                               const float *v, int64_t v_stride, int B, int64_t Lq, int64_t Lk,
                               int H, int D, float scale, bool causal, const float *rel_bias,
                               bool bf16, float *out) {
    SDW_ASSERT(D <= SDW__ATTN_AVX512_MAX_D && scale > 0 && (!bf16 || D % 2 == 0));
    /* scores to base-2 exponents (biased scores arrive scaled) */
    const float c = (rel_bias ? 1.0f : scale) * 1.44269504088896341f;
    const int64_t n_rel = Lq + Lk - 1; /* rel_bias entries per head */
    const int64_t Lkp = round_up(Lk, PANEL), Dp = round_up(D, 16), HD = (int64_t)H * D;
    const int64_t n_qblk = (Lq + QB - 1) / QB, n_tasks = (int64_t)B * H * n_qblk;
    const int n_dvec = (int)(Dp / 16);
    /* elements of 4 bytes per head: f32 values, or bf16 pairs */
    const size_t kt_head = bf16 ? (size_t)Lkp * D / 2 : (size_t)Lkp * D;
    const size_t vp_head = bf16 ? (size_t)(Lk + 1) / 2 * Dp : (size_t)Lk * Dp;
    float *kt = aligned_alloc(64, sizeof(float) * (size_t)B * H * kt_head);
    float *vp = aligned_alloc(64, sizeof(float) * (size_t)B * H * vp_head);
    if (!kt || !vp) SDW_ABORT("out of memory");
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const size_t bh = (size_t)b * H + h;
            const float *ks = k + (int64_t)b * Lk * k_stride + (int64_t)h * D;
            const float *vs = v + (int64_t)b * Lk * v_stride + (int64_t)h * D;
            if (bf16)
                pack_kv_bf16(ks, k_stride, vs, v_stride, Lk, D, Dp, (uint32_t *)kt + bh * kt_head,
                             (uint32_t *)vp + bh * vp_head, kt_head, vp_head);
            else
                pack_kv_f32(ks, k_stride, vs, v_stride, Lk, D, Dp, kt + bh * kt_head,
                            vp + bh * vp_head, kt_head);
        }

    /* The run's stop flag, read here: OpenMP workers do not see the caller's thread-locals. A
     * stop skips the remaining tasks (their rows stay undefined; the caller drops the output). */
    const sdw_stop_ref stop = sdw_stop_current();
#pragma omp parallel
    {
        task_buf *tb = aligned_alloc(64, sizeof *tb);
        float *o = aligned_alloc(64, sizeof(float) * QB * (size_t)Dp);
        uint32_t *q16 = bf16 ? aligned_alloc(64, sizeof(uint32_t) * QB * (size_t)D / 2) : NULL;
        if (!tb || !o || (bf16 && !q16)) SDW_ABORT("out of memory");
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < n_tasks; t++) {
            if (sdw_stop_hit(stop)) continue;
            const int b = (int)(t / ((int64_t)H * n_qblk));
            const int h = (int)(t / n_qblk % H);
            const int64_t i0 = t % n_qblk * QB;
            const int nq = (int)SDW_MIN((int64_t)QB, Lq - i0);
            const float *qp = q + ((int64_t)b * Lq + i0) * q_stride + (int64_t)h * D;
            const size_t bh = (size_t)b * H + h;
            const float *ktp = kt + bh * kt_head, *vpp = vp + bh * vp_head;
            const int64_t k_end = causal ? SDW_MIN(Lk, i0 + nq) : Lk;
            for (int r = 0; r < nq; r++) {
                tb->m[r] = -INFINITY;
                tb->l[r] = 0;
            }
            memset(o, 0, sizeof(float) * (size_t)nq * Dp);
            if (bf16) q_to_bf16(qp, q_stride, nq, D, (uint16_t *)q16);
            for (int64_t j0 = 0; j0 < k_end; j0 += KB) {
                const int nk = (int)SDW_MIN((int64_t)KB, k_end - j0);
                const int nkp = (int)round_up(nk, PANEL);
                /* every score of the chunk counts: the product takes each row's max too */
                float *mx = bf16 && nk == nkp && !causal && !rel_bias ? tb->mx : NULL;
                if (mx)
                    for (int i = 0; i < nq * 16; i += 16)
                        _mm512_store_ps(mx + i, _mm512_set1_ps(-INFINITY));
                /* S = Q · Kᵀ for this key chunk (rows in blocks of RB, the tail one at a time) */
                for (int r0 = 0, R; r0 < nq; r0 += R) {
                    R = nq - r0 >= RB ? RB : 1;
                    for (int jp = 0; jp < nkp; jp += PANEL)
                        if (bf16)
                            qk_rows_bf16(R, q16 + r0 * D / 2, D / 2,
                                         (const uint32_t *)ktp + (j0 + jp) * D / 2, D / 2,
                                         tb->s + r0 * KB + jp, mx ? mx + 16 * r0 : NULL);
                        else
                            qk_rows(R, qp + r0 * q_stride, q_stride, ktp + (j0 + jp) * D, D,
                                    tb->s + r0 * KB + jp);
                }
                /* softmax update, rescale the accumulators */
                for (int r = 0; r < nq; r++) {
                    int n_valid = nk;
                    if (causal) n_valid = (int)SDW_MAX(0, SDW_MIN((int64_t)nk, i0 + r - j0 + 1));
                    if (rel_bias) /* bias of (query i0 + r, key j0): offset j0 - i0 - r */
                        bias_row(tb->s + r * KB, n_valid, scale,
                                 rel_bias + h * n_rel + (j0 - i0 - r + Lq - 1));
                    const float alpha =
                        bf16 ? softmax_row_bf16(tb->s + r * KB, n_valid, nkp, c, &tb->m[r],
                                                &tb->l[r], mx ? mx + 16 * r : NULL,
                                                tb->p16 + r * KB)
                             : softmax_row(tb->s + r * KB, n_valid, nkp, c, &tb->m[r], &tb->l[r]);
                    if (alpha != 1.0f) {
                        const __m512 va = _mm512_set1_ps(alpha);
                        float *orow = o + r * Dp;
                        for (int d = 0; d < Dp; d += 16)
                            _mm512_store_ps(orow + d, _mm512_mul_ps(_mm512_load_ps(orow + d), va));
                    }
                }
                /* O += P · V */
                for (int r0 = 0, R; r0 < nq; r0 += R) {
                    R = nq - r0 >= RB ? RB : 1;
                    for (int dv = 0; dv < n_dvec; dv += VB)
                        if (bf16)
                            pv_rows_bf16(R, SDW_MIN(VB, n_dvec - dv),
                                         dv + VB >= n_dvec && D % 16 != 0 && D % 16 <= 8,
                                         (const uint32_t *)tb->p16 + r0 * KB / 2,
                                         (const uint32_t *)vpp + j0 / 2 * Dp + 16 * dv, Dp,
                                         (nk + 1) / 2, o + r0 * Dp + 16 * dv, Dp);
                        else
                            pv_rows(R, SDW_MIN(VB, n_dvec - dv), tb->s + r0 * KB,
                                    vpp + j0 * Dp + 16 * dv, Dp, nk, o + r0 * Dp + 16 * dv, Dp);
                }
            }
            for (int r = 0; r < nq; r++) {
                const float inv = 1.0f / tb->l[r];
                float *dst = out + ((int64_t)b * Lq + i0 + r) * HD + (int64_t)h * D;
                for (int d = 0; d < D; d++)
                    dst[d] = o[(size_t)r * Dp + d] * inv;
            }
        }
        free(q16);
        free(o);
        free(tb);
    }
    free(vp);
    free(kt);
}

T512 void sdw__attention_avx512_bias(const float *q, int64_t q_stride, const float *k,
                                     int64_t k_stride, const float *v, int64_t v_stride, int B,
                                     int64_t Lq, int64_t Lk, int H, int D, float scale, bool causal,
                                     const float *rel_bias, float *out) {
    attention_run(q, q_stride, k, k_stride, v, v_stride, B, Lq, Lk, H, D, scale, causal, rel_bias,
                  false, out);
}

T512 void sdw__attention_avx512bf16_bias(const float *q, int64_t q_stride, const float *k,
                                         int64_t k_stride, const float *v, int64_t v_stride, int B,
                                         int64_t Lq, int64_t Lk, int H, int D, float scale,
                                         bool causal, const float *rel_bias, float *out) {
    attention_run(q, q_stride, k, k_stride, v, v_stride, B, Lq, Lk, H, D, scale, causal, rel_bias,
                  true, out);
}
