/* nn/attention.c — multi-head scaled-dot-product attention, flash-attention style.
 *
 * Work is split into tasks of (batch, head, block of QB query rows). A task walks the keys in
 * chunks of KB: S = scale·Q_blk·K_chunkᵀ (a QB×KB tile), then the online softmax update
 *   m' = max(m, rowmax S);  P = exp(S − m');  l' = l·e^(m−m') + ΣP;  O' = O·e^(m−m') + P·V_chunk
 * and finally out = O / l. Only QB×KB scores exist at a time per thread. Each task's arithmetic
 * order is fixed, so results do not depend on the thread count at all.
 *
 * A relative position bias (T5) is added to each score tile before its softmax update: row i's
 * biases for keys j0.. are one contiguous run of the head's table (index j − i + Lq − 1), so
 * the Lq×Lk bias matrix never exists either. */
#include "core/cpu.h"
#include "nn/nn_impl.h"
#include "nn/profile.h"
#include "nn/stop.h"

#include <math.h>
#include <string.h>

enum { QB = 64, KB = 256 };

typedef struct attn_scratch {
    float s[QB * KB]; /* scores, then probabilities */
    float m[QB], l[QB];
    float *o; /* [QB, D] accumulator */
} attn_scratch;

/* Softmax-update rows of the score tile for keys [j0, j0 + nk) and rescale the accumulator.
 * causal: row r (query i0 + r) sees keys j <= i0 + r only. rb: NULL, or the bias of row 0's
 * key j0 (row r's run starts r floats earlier), added to the scores first. */
SDW_VEC_BODY void online_softmax_tile_body(attn_scratch *sc, int nq, int nk, int64_t i0, int64_t j0,
                                           int D, bool causal, const float *rb) {
    for (int r = 0; r < nq; r++) {
        float *s = sc->s + (size_t)r * KB;
        int n_valid = nk;
        if (causal) {
            int64_t lim = i0 + r - j0 + 1; /* keys visible in this chunk */
            n_valid = (int)SDW_MAX(0, SDW_MIN((int64_t)nk, lim));
        }
        if (n_valid == 0) { /* whole chunk masked for this row: contributes nothing */
            memset(s, 0, sizeof(float) * (size_t)nk);
            continue;
        }
        if (rb) {
            const float *br = rb - r;
#pragma omp simd
            for (int j = 0; j < n_valid; j++)
                s[j] += br[j];
        }
        float mx = s[0];
#pragma omp simd reduction(max : mx)
        for (int j = 1; j < n_valid; j++)
            mx = sdw__select(s[j] > mx, s[j], mx);
        const float m_new = mx > sc->m[r] ? mx : sc->m[r];
        const float alpha = expf(sc->m[r] - m_new); /* 0 on the first chunk (m = -inf) */
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < n_valid; j++) {
            s[j] = sdw__expf(s[j] - m_new);
            sum += s[j];
        }
        for (int j = n_valid; j < nk; j++)
            s[j] = 0;
        sc->l[r] = sc->l[r] * alpha + sum;
        sc->m[r] = m_new;
        if (alpha != 1.0f) {
            float *o = sc->o + (size_t)r * D;
            for (int d = 0; d < D; d++)
                o[d] *= alpha;
        }
    }
}
SDW_VEC_KERNEL(online_softmax_tile,
               (attn_scratch * sc, int nq, int nk, int64_t i0, int64_t j0, int D, bool causal,
                const float *rb),
               (sc, nq, nk, i0, j0, D, causal, rb))

unsigned sdw_attention_precision_flag(const sdw_weights *ws) {
    return sdw_weights_precision(ws) == SDW_PRECISION_BF16 ? SDW_ATTN_BF16 : 0;
}

void sdw_attention(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                   const float *v, int64_t v_stride, int B, int64_t Lq, int64_t Lk, int H, int D,
                   float scale, unsigned flags, float *out) {
    sdw_attention_rel_bias(q, q_stride, k, k_stride, v, v_stride, B, Lq, Lk, H, D, scale, flags,
                           NULL, out);
}

void sdw_attention_rel_bias(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                            const float *v, int64_t v_stride, int B, int64_t Lq, int64_t Lk, int H,
                            int D, float scale, unsigned flags, const float *rel_bias,
                            float *out) {
    const double prof_t0 = sdw__prof_begin();
    SDW_ASSERT(q && k && v && out && B > 0 && H > 0 && D > 0 && Lq > 0 && Lk > 0);
    SDW_ASSERT(q_stride >= (int64_t)H * D && k_stride >= (int64_t)H * D &&
               v_stride >= (int64_t)H * D);
    const bool fast = D <= SDW__ATTN_AVX512_MAX_D && scale > 0;
    const bool causal = flags & SDW_ATTN_CAUSAL;
    if (fast && (flags & SDW_ATTN_BF16) && D % 2 == 0 && sdw_cpu_isa() >= SDW_ISA_AVX512_BF16)
        sdw__attention_avx512bf16_bias(q, q_stride, k, k_stride, v, v_stride, B, Lq, Lk, H, D,
                                       scale, causal, rel_bias, out);
    else if (fast && sdw_cpu_isa() >= SDW_ISA_AVX512)
        sdw__attention_avx512_bias(q, q_stride, k, k_stride, v, v_stride, B, Lq, Lk, H, D, scale,
                                   causal, rel_bias, out);
    else if (fast && sdw_cpu_isa() >= SDW_ISA_AVX2)
        sdw__attention_avx2_bias(q, q_stride, k, k_stride, v, v_stride, B, Lq, Lk, H, D, scale,
                                 causal, rel_bias, out);
    else
        sdw__attention_generic_bias(q, q_stride, k, k_stride, v, v_stride, B, Lq, Lk, H, D, scale,
                                    causal, rel_bias, out);
    sdw__prof_end(SDW_OP_ATTENTION, prof_t0, 4.0 * B * H * (double)Lq * Lk * D);
}

/* Baseline x86-64: the tiles' products on oneDNN's sgemm (single-threaded inside the parallel
 * loop), the softmax update vectorised by the compiler. */
void sdw__attention_generic_bias(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                                 const float *v, int64_t v_stride, int B, int64_t Lq, int64_t Lk,
                                 int H, int D, float scale, bool causal, const float *rel_bias,
                                 float *out) {
    const int64_t n_qblk = (Lq + QB - 1) / QB;
    const int64_t n_tasks = (int64_t)B * H * n_qblk;
    const int64_t HD = (int64_t)H * D;
    const int64_t n_rel = Lq + Lk - 1; /* rel_bias entries per head */

    /* The run's stop flag, read here: OpenMP workers do not see the caller's thread-locals. A
     * stop skips the remaining tasks (their rows stay undefined; the caller drops the output). */
    const sdw_stop_ref stop = sdw_stop_current();
#pragma omp parallel
    {
        attn_scratch *sc = sdw_xmalloc(sizeof *sc);
        sc->o = sdw_xmalloc(sizeof(float) * QB * (size_t)D);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < n_tasks; t++) {
            if (sdw_stop_hit(stop)) continue;
            const int b = (int)(t / ((int64_t)H * n_qblk));
            const int h = (int)(t / n_qblk % H);
            const int64_t i0 = t % n_qblk * QB;
            const int nq = (int)SDW_MIN((int64_t)QB, Lq - i0);
            const float *qp = q + ((int64_t)b * Lq + i0) * q_stride + (int64_t)h * D;
            const float *kp = k + (int64_t)b * Lk * k_stride + (int64_t)h * D;
            const float *vp = v + (int64_t)b * Lk * v_stride + (int64_t)h * D;
            /* Causal: the last query row of the block sees keys up to i0 + nq - 1. */
            const int64_t k_end = causal ? SDW_MIN(Lk, i0 + nq) : Lk;

            for (int r = 0; r < nq; r++) {
                sc->m[r] = -INFINITY;
                sc->l[r] = 0;
            }
            memset(sc->o, 0, sizeof(float) * (size_t)nq * D);
            for (int64_t j0 = 0; j0 < k_end; j0 += KB) {
                const int nk = (int)SDW_MIN((int64_t)KB, k_end - j0);
                sdw__sgemm('N', 'T', nq, nk, D, scale, qp, q_stride, kp + j0 * k_stride, k_stride,
                           0.0f, sc->s, KB);
                /* bias of (query i0, key j0): offset j0 - i0 */
                const float *rb = rel_bias ? rel_bias + h * n_rel + (j0 - i0 + Lq - 1) : NULL;
                online_softmax_tile(sc, nq, nk, i0, j0, D, causal, rb);
                sdw__sgemm('N', 'N', nq, D, nk, 1.0f, sc->s, KB, vp + j0 * v_stride, v_stride, 1.0f,
                           sc->o, D);
            }
            for (int r = 0; r < nq; r++) {
                const float inv = 1.0f / sc->l[r];
                float *dst = out + ((int64_t)b * Lq + i0 + r) * HD + (int64_t)h * D;
                for (int d = 0; d < D; d++)
                    dst[d] = sc->o[(size_t)r * D + d] * inv;
            }
        }
        free(sc->o);
        free(sc);
    }
}
