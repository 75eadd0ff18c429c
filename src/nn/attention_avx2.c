/* nn/attention_avx2.c — sdw_attention's AVX2 + FMA kernel, for CPUs without AVX-512 (run-time
 * dispatched from attention.c; only these functions carry the avx2,fma target).
 *
 * The AVX-512 kernel (attention_avx512.c) at half the width: same algorithm and contract
 * (flash-attention style, online softmax, one task per (batch, head, block of QB query rows),
 * fixed arithmetic order per task, so results do not depend on the thread count), same packing
 * of K into key panels and V into padded rows, register blocks sized for 16 ymm registers:
 *  - S = Q·Kᵀ in blocks of 4 rows x 16 keys (8 accumulators, 2 key vectors, 1 broadcast), K
 *    packed once per call into 16-key panels [Lkp/16][D][16];
 *  - the softmax update 8-wide, exp2 by a degree-6 polynomial and the exponent bits;
 *  - P·V in blocks of 4 rows x 16 channels.
 * With a relative position bias the raw scores become s·scale + bias before the update, as in
 * the AVX-512 kernel. */
#include "core/cpu.h"
#include "nn/nn_impl.h"
#include "nn/stop.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define T256 SDW_TARGET_AVX2
#define T256I SDW_TARGET_AVX2 __attribute__((always_inline)) static inline

enum {
    QB = 64,    /* query rows per task */
    KB = 128,   /* keys per score tile */
    PANEL = 16, /* keys per K panel (one qk block) */
    RB = 4,     /* rows per register block */
    VB = 2      /* ymm per register block: 16 keys or channels */
};

static inline int64_t round_up(int64_t n, int64_t m) {
    return (n + m - 1) / m * m;
}

/* 2^x for 8 lanes: x = n + r, |r| <= 1/2, 2^r by its degree-6 Taylor polynomial in r·ln 2
 * (relative error below 2e-7), times 2^n built in the exponent bits. x is clamped to [-126,
 * 127] so 2^n stays a normal number (below, the weights are < 1e-38 anyway); NaN stays NaN. */
T256I __m256 exp2_8(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-126.0f), x);
    x = _mm256_min_ps(_mm256_set1_ps(127.0f), x);
    const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_sub_ps(x, n);
    __m256 y = _mm256_set1_ps(1.5403530393381609e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3333558146428443e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(9.6181291076284772e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.5504108664821580e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(2.4022650695910071e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(6.9314718055994531e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

T256I float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

T256I float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Lanes j + 0 .. 7 below n: all ones. */
T256I __m256 lanes_below(int j, int n) {
    const __m256i idx =
        _mm256_add_epi32(_mm256_set1_epi32(j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx));
}

/* S[r][0 .. 16) = Σ_d q_r[d] · Kt[d][0 .. 16) for R rows (q_r = q + r·qs), Kt one 16-key panel
 * [D][16]. */
T256I void qk_block(int R, const float *q, int64_t qs, const float *kt, int D, float *s) {
    __m256 acc[RB][VB];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 2") for (int v = 0; v < VB; v++) acc[r][v] = _mm256_setzero_ps();
    for (int d = 0; d < D; d++) {
        __m256 k[VB];
        _Pragma("GCC unroll 2") for (int v = 0; v < VB; v++) k[v] =
            _mm256_load_ps(kt + d * PANEL + 8 * v);
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const __m256 qb = _mm256_broadcast_ss(q + r * qs + d);
            _Pragma("GCC unroll 2") for (int v = 0; v < VB; v++) acc[r][v] =
                _mm256_fmadd_ps(qb, k[v], acc[r][v]);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 2") for (int v = 0; v < VB; v++)
            _mm256_store_ps(s + r * KB + 8 * v, acc[r][v]);
}

/* o[r][c .. c+8·nv) += Σ_j p[r][j] · V[j][c ..] for R rows and nk keys, V rows packed with
 * stride vs (zero-padded channels). o rows have stride os. */
T256I void pv_block(int R, int nv, const float *p, const float *v, int64_t vs, int nk, float *o,
                    int64_t os) {
    __m256 acc[RB][VB];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 2") for (int i = 0; i < nv; i++) acc[r][i] = _mm256_setzero_ps();
    for (int j = 0; j < nk; j++) {
        __m256 vv[VB];
        _Pragma("GCC unroll 2") for (int i = 0; i < nv; i++) vv[i] =
            _mm256_load_ps(v + j * vs + 8 * i);
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const __m256 pb = _mm256_broadcast_ss(p + r * KB + j);
            _Pragma("GCC unroll 2") for (int i = 0; i < nv; i++) acc[r][i] =
                _mm256_fmadd_ps(pb, vv[i], acc[r][i]);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 2") for (int i = 0; i < nv; i++) {
        float *dst = o + r * os + 8 * i;
        _mm256_store_ps(dst, _mm256_add_ps(_mm256_load_ps(dst), acc[r][i]));
    }
}

/* Constant-argument instances, so the register blocks above unroll fully. */
static T256 void qk_rows(int R, const float *q, int64_t qs, const float *kt, int D, float *s) {
    if (R == RB)
        qk_block(RB, q, qs, kt, D, s);
    else
        qk_block(1, q, qs, kt, D, s);
}

static T256 void pv_rows(int R, int nv, const float *p, const float *v, int64_t vs, int nk,
                         float *o, int64_t os) {
    if (R == RB && nv == 2)
        pv_block(RB, 2, p, v, vs, nk, o, os);
    else if (R == RB)
        pv_block(RB, 1, p, v, vs, nk, o, os);
    else if (nv == 2)
        pv_block(1, 2, p, v, vs, nk, o, os);
    else
        pv_block(1, 1, p, v, vs, nk, o, os);
}

/* Online-softmax update of one row of raw scores s[0 .. nkp) of which the first n_valid count,
 * as the AVX-512 kernel's softmax_row: s becomes P = 2^((s - m)·c) (0 past n_valid); returns
 * the rescale factor for the row's accumulator. */
static T256 float softmax_row(float *s, int n_valid, int nkp, float c, float *m, float *l) {
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (int j = 0; j < n_valid; j += 8) {
        const __m256 x = _mm256_loadu_ps(s + j);
        vmax = _mm256_blendv_ps(vmax, _mm256_max_ps(vmax, x), lanes_below(j, n_valid));
    }
    const float mx = hmax8(vmax);
    const float m_new = mx > *m ? mx : *m;
    /* 0 on the first chunk (m = -inf); exactly 1 (no call) once the row's max has settled */
    const float alpha = m_new == *m ? 1.0f : exp2f((*m - m_new) * c);
    const __m256 vc = _mm256_set1_ps(c), vmc = _mm256_set1_ps(m_new * c);
    __m256 vsum = _mm256_setzero_ps();
    for (int j = 0; j < nkp; j += 8) {
        const __m256 t = _mm256_fmsub_ps(_mm256_loadu_ps(s + j), vc, vmc);
        const __m256 p = _mm256_and_ps(exp2_8(t), lanes_below(j, n_valid));
        _mm256_storeu_ps(s + j, p);
        vsum = _mm256_add_ps(vsum, p);
    }
    *l = *l * alpha + hsum8(vsum);
    *m = m_new;
    return alpha;
}

/* s[j] = s[j]·scale + b[j] for j < n (the row's valid keys; the rest are masked anyway). */
static T256 void bias_row(float *s, int n, float scale, const float *b) {
    const __m256 vs = _mm256_set1_ps(scale);
    int j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(s + j,
                         _mm256_fmadd_ps(_mm256_loadu_ps(s + j), vs, _mm256_loadu_ps(b + j)));
    for (; j < n; j++)
        s[j] = fmaf(s[j], scale, b[j]);
}

/* o[0 .. n) *= alpha (n a multiple of 8, o 32-byte aligned). A function of its own: clang
 * outlines OpenMP regions without the enclosing function's target, so the region itself must
 * hold no AVX code (the fuzz build is clang's). */
static T256 void scale_row(float *o, int n, float alpha) {
    const __m256 va = _mm256_set1_ps(alpha);
    for (int d = 0; d < n; d += 8)
        _mm256_store_ps(o + d, _mm256_mul_ps(_mm256_load_ps(o + d), va));
}

typedef struct task_buf {
    float s[QB * KB];
    float m[QB], l[QB];
} task_buf;

T256 void sdw__attention_avx2_bias(const float *q, int64_t q_stride, const float *k,
                                   int64_t k_stride, const float *v, int64_t v_stride, int B,
                                   int64_t Lq, int64_t Lk, int H, int D, float scale, bool causal,
                                   const float *rel_bias, float *out) {
    SDW_ASSERT(D <= SDW__ATTN_AVX512_MAX_D && scale > 0);
    /* scores to base-2 exponents (biased scores arrive scaled) */
    const float c = (rel_bias ? 1.0f : scale) * 1.44269504088896341f;
    const int64_t n_rel = Lq + Lk - 1; /* rel_bias entries per head */
    const int64_t Lkp = round_up(Lk, PANEL), Dp = round_up(D, 8 * VB), HD = (int64_t)H * D;
    const int64_t n_qblk = (Lq + QB - 1) / QB, n_tasks = (int64_t)B * H * n_qblk;
    const int n_dvec = (int)(Dp / 8);
    /* Per (batch, head), packed once per call: K as 16-key panels [Lkp/16][D][16] and V as rows
     * [Lk][Dp], both contiguous and zero-padded (padded keys score 0 and are masked). */
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
                    if (alpha != 1.0f) scale_row(o + r * Dp, (int)Dp, alpha);
                }
                /* O += P · V */
                for (int r0 = 0, R; r0 < nq; r0 += R) {
                    R = nq - r0 >= RB ? RB : 1;
                    for (int dv = 0; dv < n_dvec; dv += VB)
                        pv_rows(R, SDW_MIN(VB, n_dvec - dv), tb->s + r0 * KB,
                                vpp + j0 * Dp + 8 * dv, Dp, nk, o + r0 * Dp + 8 * dv, Dp);
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
