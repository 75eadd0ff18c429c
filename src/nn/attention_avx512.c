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
 * the bias is in score units, so the scale can no longer wait for the exponent. */
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

/* Online-softmax update of one row of raw scores s[0 .. nkp) of which the first n_valid count,
 * with c = scale·log2(e) > 0 (so the running max *m is kept in raw units and the scale is
 * applied once, inside the exponent; c = log2(e) for biased scores, which arrive scaled): s
 * becomes P = 2^((s - m)·c) (0 past n_valid); returns the rescale factor for the row's
 * accumulator. */
static T512 float softmax_row(float *s, int n_valid, int nkp, float c, float *m, float *l) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < n_valid; j += 16) {
        const __mmask16 k = n_valid - j >= 16 ? 0xffff : (__mmask16)((1u << (n_valid - j)) - 1);
        vmax = _mm512_mask_max_ps(vmax, k, vmax, _mm512_maskz_loadu_ps(k, s + j));
    }
    const float mx = _mm512_reduce_max_ps(vmax);
    const float m_new = mx > *m ? mx : *m;
    /* 0 on the first chunk (m = -inf); exactly 1 (no call) once the row's max has settled */
    const float alpha = m_new == *m ? 1.0f : exp2f((*m - m_new) * c);
    const __m512 vc = _mm512_set1_ps(c), vmc = _mm512_set1_ps(m_new * c);
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
    *m = m_new;
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

typedef struct task_buf {
    float s[QB * KB];
    float m[QB], l[QB];
} task_buf;

T512 void sdw__attention_avx512_bias(const float *q, int64_t q_stride, const float *k,
                                     int64_t k_stride, const float *v, int64_t v_stride, int B,
                                     int64_t Lq, int64_t Lk, int H, int D, float scale, bool causal,
                                     const float *rel_bias, float *out) {
    SDW_ASSERT(D <= SDW__ATTN_AVX512_MAX_D && scale > 0);
    /* scores to base-2 exponents (biased scores arrive scaled) */
    const float c = (rel_bias ? 1.0f : scale) * 1.44269504088896341f;
    const int64_t n_rel = Lq + Lk - 1; /* rel_bias entries per head */
    const int64_t Lkp = round_up(Lk, PANEL), Dp = round_up(D, 16), HD = (int64_t)H * D;
    const int64_t n_qblk = (Lq + QB - 1) / QB, n_tasks = (int64_t)B * H * n_qblk;
    const int n_dvec = (int)(Dp / 16);
    /* Per (batch, head), packed once per call: K as 64-key panels [Lkp/64][D][64] and V as
     * rows [Lk][Dp], both contiguous and zero-padded (padded keys score 0 and are masked). */
    const size_t kt_head = (size_t)Lkp * D, vp_head = (size_t)Lk * Dp;
    float *kt = aligned_alloc(64, sizeof(float) * (size_t)B * H * kt_head);
    float *vp = aligned_alloc(64, sizeof(float) * (size_t)B * H * vp_head);
    if (!kt || !vp) SDW_ABORT("out of memory");
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            float *kd = kt + ((size_t)b * H + h) * kt_head;
            float *vd = vp + ((size_t)b * H + h) * vp_head;
            const float *ks = k + (int64_t)b * Lk * k_stride + (int64_t)h * D;
            const float *vs = v + (int64_t)b * Lk * v_stride + (int64_t)h * D;
            memset(kd, 0, sizeof(float) * kt_head);
            for (int64_t j = 0; j < Lk; j++) {
                float *panel = kd + j / PANEL * PANEL * D + j % PANEL;
                for (int d = 0; d < D; d++)
                    panel[d * PANEL] = ks[j * k_stride + d];
                memcpy(vd + j * Dp, vs + j * v_stride, sizeof(float) * D);
                memset(vd + j * Dp + D, 0, sizeof(float) * (size_t)(Dp - D));
            }
        }

    /* The run's stop flag, read here: OpenMP workers do not see the caller's thread-locals. A
     * stop skips the remaining tasks (their rows stay undefined; the caller drops the output). */
    const sdw_stop_ref stop = sdw_stop_current();
#pragma omp parallel
    {
        task_buf *tb = aligned_alloc(64, sizeof *tb);
        float *o = aligned_alloc(64, sizeof(float) * QB * (size_t)Dp);
        if (!tb || !o) SDW_ABORT("out of memory");
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < n_tasks; t++) {
            if (sdw_stop_hit(stop)) continue;
            const int b = (int)(t / ((int64_t)H * n_qblk));
            const int h = (int)(t / n_qblk % H);
            const int64_t i0 = t % n_qblk * QB;
            const int nq = (int)SDW_MIN((int64_t)QB, Lq - i0);
            const float *qp = q + ((int64_t)b * Lq + i0) * q_stride + (int64_t)h * D;
            const float *ktp = kt + ((size_t)b * H + h) * kt_head;
            const float *vpp = vp + ((size_t)b * H + h) * vp_head;
            const int64_t k_end = causal ? SDW_MIN(Lk, i0 + nq) : Lk;
            for (int r = 0; r < nq; r++) {
                tb->m[r] = -INFINITY;
                tb->l[r] = 0;
            }
            memset(o, 0, sizeof(float) * (size_t)nq * Dp);
            for (int64_t j0 = 0; j0 < k_end; j0 += KB) {
                const int nk = (int)SDW_MIN((int64_t)KB, k_end - j0);
                const int nkp = (int)round_up(nk, PANEL);
                /* S = Q · Kᵀ for this key chunk (rows in blocks of RB, the tail one at a time) */
                for (int r0 = 0, R; r0 < nq; r0 += R) {
                    R = nq - r0 >= RB ? RB : 1;
                    for (int jp = 0; jp < nkp; jp += PANEL)
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
                        softmax_row(tb->s + r * KB, n_valid, nkp, c, &tb->m[r], &tb->l[r]);
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
        free(o);
        free(tb);
    }
    free(vp);
    free(kt);
}
