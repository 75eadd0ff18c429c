/* nn/convert.c — element type conversions on the CPU (see convert.h). */
#include "nn/convert.h"

#include "core/cpu.h"

#include <string.h>

/* ---- bf16 conversion ---- */

/* Round to nearest even on the bit pattern; a NaN keeps its sign and stays a (quiet) NaN.
 * Written branch-free so the loops vectorise (16 at a time with AVX-512, 8 with AVX2). */
static inline uint16_t f32_to_bf16_1(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet = (u >> 16) | 0x40u;
    const uint32_t m = 0u - nan;
    return (uint16_t)((quiet & m) | (rounded & ~m));
}

SDW_VEC_BODY void to_bf16_block_body(const float *x, uint16_t *y, size_t n) {
    for (size_t i = 0; i < n; i++)
        y[i] = f32_to_bf16_1(x[i]);
}
SDW_VEC_KERNEL(to_bf16_block, (const float *x, uint16_t *y, size_t n), (x, y, n))

SDW_VEC_BODY void from_bf16_block_body(const uint16_t *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)x[i] << 16;
        memcpy(&y[i], &u, 4);
    }
}
SDW_VEC_KERNEL(from_bf16_block, (const uint16_t *x, float *y, size_t n), (x, y, n))

void sdw__f32_to_bf16_row(const float *x, uint16_t *y, size_t n) {
    to_bf16_block(x, y, n);
}

void sdw__bf16_to_f32_row(const uint16_t *x, float *y, size_t n) {
    from_bf16_block(x, y, n);
}

void sdw__f32_to_bf16(const float *x, uint16_t *y, size_t n) {
    const long n_chunks = (long)((n + SDW__CONVERT_CHUNK - 1) / SDW__CONVERT_CHUNK);
#pragma omp parallel for schedule(static) if (n_chunks > 2)
    for (long c = 0; c < n_chunks; c++) {
        size_t lo = (size_t)c * SDW__CONVERT_CHUNK;
        to_bf16_block(x + lo, y + lo, SDW_MIN((size_t)SDW__CONVERT_CHUNK, n - lo));
    }
}

void sdw__widen_16(sdw_dtype dt, const uint16_t *x, float *y, size_t n) {
    const long n_chunks = (long)((n + SDW__CONVERT_CHUNK - 1) / SDW__CONVERT_CHUNK);
#pragma omp parallel for schedule(static) if (n_chunks > 2)
    for (long c = 0; c < n_chunks; c++) {
        const size_t lo = (size_t)c * SDW__CONVERT_CHUNK,
                     len = SDW_MIN((size_t)SDW__CONVERT_CHUNK, n - lo);
        if (dt == SDW_DTYPE_BF16)
            from_bf16_block(x + lo, y + lo, len);
        else
            sdw_convert_to_f32(dt, x + lo, y + lo, len); /* F16: F16C where the CPU has it */
    }
}

void sdw__bf16_to_f32(const uint16_t *x, float *y, size_t n) {
    sdw__widen_16(SDW_DTYPE_BF16, x, y, n);
}

/* ---- 8-bit weights widened by table lookup ----
 * Every E4M3 / E5M2 value is a bf16 value (at most 3 significant bits, exponents well inside
 * bf16's range), and its f32 pattern is that bf16 pattern followed by 16 zero bits. So one
 * 256-entry table of bf16 patterns, made from io's exact converter, widens to either type. Both
 * formats are sign-magnitude (code | 0x80 is the negation), so the vector kernel looks up the
 * 128 magnitudes with two 64-entry word permutes and ORs the sign back in. */

static void f8_table(sdw_dtype dt, uint16_t lut[256]) {
    uint8_t codes[256];
    float v[256];
    for (int i = 0; i < 256; i++)
        codes[i] = (uint8_t)i;
    sdw_convert_to_f32(dt, codes, v, 256);
    for (int i = 0; i < 256; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        SDW_ASSERT((u & 0xffffu) == 0); /* a bf16 value: the assumption above */
        lut[i] = (uint16_t)(u >> 16);
    }
    for (int i = 0; i < 128; i++)
        SDW_ASSERT(lut[i | 0x80] == (lut[i] | 0x8000u)); /* sign-magnitude */
}

#if defined(__x86_64__)
#include <immintrin.h>
/* 32 codes -> 32 bf16 patterns: permutex2var picks a word of t0:t1 (or t2:t3; 64 entries) by the
 * index's low 6 bits; bit 6 chooses between the two halves of the 128 magnitudes. */
__attribute__((target("avx512f,avx512bw"))) static inline __m512i
lut8_32(const __m256i *p, __m512i t0, __m512i t1, __m512i t2, __m512i t3) {
    const __m512i c = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p));
    const __m512i lo = _mm512_permutex2var_epi16(t0, c, t1),
                  hi = _mm512_permutex2var_epi16(t2, c, t3);
    const __m512i v =
        _mm512_mask_blend_epi16(_mm512_test_epi16_mask(c, _mm512_set1_epi16(0x40)), lo, hi);
    return _mm512_or_si512(v, _mm512_slli_epi16(_mm512_and_si512(c, _mm512_set1_epi16(0x80)), 8));
}

/* n codes widened (bf16 patterns to y16, or f32 to y32; the other NULL); returns how many were
 * done (a multiple of 32; the caller does the tail). stream: non-temporal stores (y 64-byte
 * aligned), for a widened layer too large to stay in cache anyway: they skip reading each line
 * before writing it (3072x12288 to f32, 2 threads on a shared VM: median 8-10 ms with them,
 * 9-16 ms without). */
__attribute__((target("avx512f,avx512bw"))) static size_t widen_8_avx512(const uint16_t *lut,
                                                                         const uint8_t *x,
                                                                         uint16_t *y16, float *y32,
                                                                         size_t n, bool stream) {
    const __m512i t0 = _mm512_loadu_si512(lut), t1 = _mm512_loadu_si512(lut + 32),
                  t2 = _mm512_loadu_si512(lut + 64), t3 = _mm512_loadu_si512(lut + 96);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512i v = lut8_32((const __m256i *)(x + i), t0, t1, t2, t3);
        if (y16) {
            if (stream)
                _mm512_stream_si512((void *)(y16 + i), v);
            else
                _mm512_storeu_si512(y16 + i, v);
            continue;
        }
        /* f32: each bf16 pattern zero-extended and moved to the high half */
        __m512i a = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(v)),
                b = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(v, 1));
        a = _mm512_slli_epi32(a, 16);
        b = _mm512_slli_epi32(b, 16);
        if (stream) {
            _mm512_stream_si512((void *)(y32 + i), a);
            _mm512_stream_si512((void *)(y32 + i + 16), b);
        } else {
            _mm512_storeu_si512(y32 + i, a);
            _mm512_storeu_si512(y32 + i + 16, b);
        }
    }
    if (stream) _mm_sfence(); /* the streamed lines are visible before the product reads them */
    return i;
}

/* The same on AVX2 + F16C, 8 codes at a time, by arithmetic instead of a table: an E5M2 code is
 * the high byte of an IEEE half; an E4M3 code's magnitude bits shifted left by 7 are a half of
 * 2^-8 its value (exponent bias 15 against 7, subnormals included), so VCVTPH2PS and an exact
 * scaling by 256 give its f32. A group holding a NaN code (never in real weights) is left to
 * the table, so NaN payloads stay exactly the table's. bf16 is the f32's high half (exact: every
 * fp8 value is a bf16 value). */
SDW_TARGET_AVX2 static size_t widen_8_avx2(sdw_dtype dt, const uint8_t *x, uint16_t *y16,
                                           float *y32, size_t n, bool stream) {
    const bool e4m3 = dt == SDW_DTYPE_F8_E4M3;
    const __m128i mag_mask = _mm_set1_epi16(0x7f), sign_mask = _mm_set1_epi16(0x80);
    /* NaN codes: E4M3 S.1111.111; E5M2 S.11111.xx with xx != 0 (magnitude > 0x7c) */
    const __m128i nan_from = _mm_set1_epi16(e4m3 ? 0x7e : 0x7c);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i c = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(x + i)));
        if (_mm_movemask_epi8(_mm_cmpgt_epi16(_mm_and_si128(c, mag_mask), nan_from))) break;
        __m256 f;
        if (e4m3) {
            const __m128i h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(c, mag_mask), 7),
                                           _mm_slli_epi16(_mm_and_si128(c, sign_mask), 8));
            f = _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(256.0f));
        } else {
            f = _mm256_cvtph_ps(_mm_slli_epi16(c, 8));
        }
        if (y32) {
            if (stream)
                _mm256_stream_ps(y32 + i, f);
            else
                _mm256_storeu_ps(y32 + i, f);
            continue;
        }
        /* the high halves of the 8 f32 patterns, in order */
        const __m256i hi = _mm256_srli_epi32(_mm256_castps_si256(f), 16);
        const __m128i b =
            _mm_packus_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
        if (stream)
            _mm_stream_si128((__m128i *)(y16 + i), b);
        else
            _mm_storeu_si128((__m128i *)(y16 + i), b);
    }
    if (stream) _mm_sfence();
    return i;
}
#endif

/* Past this many widened bytes a layer cannot stay in cache between widening and product. */
#define STREAM_BYTES ((size_t)32 << 20)

static void widen_8_block(sdw_dtype dt, const uint16_t *lut, const uint8_t *x, void *y, sdw_dt yt,
                          size_t n, sdw_isa isa, bool stream) {
    uint16_t *y16 = yt == SDW_DT_BF16 ? y : NULL;
    float *y32 = yt == SDW_DT_BF16 ? NULL : y;
    size_t i = 0;
    while (i < n) {
        /* the vector kernels stop before a group they leave to the table */
#if defined(__x86_64__)
        if (isa >= SDW_ISA_AVX512)
            i += widen_8_avx512(lut, x + i, y16 ? y16 + i : NULL, y32 ? y32 + i : NULL, n - i,
                                stream && (i & 15) == 0);
        else if (isa >= SDW_ISA_AVX2)
            i += widen_8_avx2(dt, x + i, y16 ? y16 + i : NULL, y32 ? y32 + i : NULL, n - i,
                              stream && (i & 15) == 0);
#endif
        /* the tail, or one group of 8 with a NaN code (the avx2 kernel's) */
        for (const size_t end = SDW_MIN(n, i + 8); i < end; i++) {
            if (y16) {
                y16[i] = lut[x[i]];
            } else {
                const uint32_t u = (uint32_t)lut[x[i]] << 16;
                memcpy(&y32[i], &u, 4);
            }
        }
    }
}

void sdw__widen_8(sdw_dtype dt, const uint8_t *x, void *y, sdw_dt yt, size_t n) {
    uint16_t lut[256];
    f8_table(dt, lut); /* 256 conversions: nothing next to a layer's weights */
    const sdw_isa isa = sdw_cpu_isa();
    const size_t esize = yt == SDW_DT_BF16 ? 2 : 4;
    /* y is 64-byte aligned and chunks start at multiples of 64 bytes, as streaming needs */
    const bool stream = n * esize >= STREAM_BYTES && ((uintptr_t)y & 63) == 0;
    const long n_chunks = (long)((n + SDW__CONVERT_CHUNK - 1) / SDW__CONVERT_CHUNK);
#pragma omp parallel for schedule(static) if (n_chunks > 2)
    for (long c = 0; c < n_chunks; c++) {
        const size_t lo = (size_t)c * SDW__CONVERT_CHUNK,
                     len = SDW_MIN((size_t)SDW__CONVERT_CHUNK, n - lo);
        widen_8_block(dt, lut, x + lo, (uint8_t *)y + lo * esize, yt, len, isa, stream);
    }
}

/* ---- packing ---- */

/* Rows per tile of sdw__pack_rows: oneDNN's weight layouts keep 16 (or 8, 4) output channels
 * innermost, so the tile's values for one input position land next to each other. */
enum { PACK_TILE = 16 };

/* Copies tile rows [0, nr) (each row_len values of size es, in t) to d at offsets ro[r] +
 * col_off[j], column by column: consecutive rows are consecutive destinations in oneDNN's
 * layouts, so the writes fill whole cache lines instead of one element per line per row. */
#define SCATTER(T)                                                                                 \
    do {                                                                                           \
        T *d = dst;                                                                                \
        const T *v = t;                                                                            \
        for (int64_t j = 0; j < row_len; j++) {                                                    \
            const int64_t c = col_off[j];                                                          \
            for (int r = 0; r < nr; r++)                                                           \
                d[ro[r] + c] = v[(size_t)r * row_len + j];                                         \
        }                                                                                          \
    } while (0)

void sdw__pack_rows(const void *src, sdw_dtype sdt, int64_t n_rows, int64_t row_len,
                    const int64_t *row_off, const int64_t *col_off, void *dst, sdw_dtype ddt) {
    const size_t ss = sdw_dtype_size(sdt), ds = sdw_dtype_size(ddt);
    SDW_ASSERT(ds == 1 || ds == 2 || ds == 4);
    const int64_t n_tiles = (n_rows + PACK_TILE - 1) / PACK_TILE;
#pragma omp parallel if (n_rows * row_len > 65536)
    {
        /* a tile of rows in ddt, and one row in f32 on the way (src, a file mapping, need not
         * be aligned: it is only read through memcpy and the converters, which allow that) */
        float *f = sdw_xmalloc((size_t)row_len * 4);
        void *t = sdw_xmalloc((size_t)row_len * ds * PACK_TILE);
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < n_tiles; tile++) {
            const int64_t r0 = tile * PACK_TILE;
            const int nr = (int)SDW_MIN((int64_t)PACK_TILE, n_rows - r0);
            for (int r = 0; r < nr; r++) {
                const void *in = (const uint8_t *)src + (size_t)((r0 + r) * row_len) * ss;
                void *row = (uint8_t *)t + (size_t)r * row_len * ds;
                if (sdt == ddt) {
                    memcpy(row, in, (size_t)row_len * ds);
                } else if (ddt == SDW_DTYPE_F32) {
                    sdw_convert_to_f32(sdt, in, row, (size_t)row_len);
                } else {
                    if (sdt == SDW_DTYPE_F32)
                        memcpy(f, in, (size_t)row_len * 4);
                    else
                        sdw_convert_to_f32(sdt, in, f, (size_t)row_len);
                    sdw_convert_from_f32(ddt, f, row, (size_t)row_len);
                }
            }
            const int64_t *ro = row_off + r0;
            if (ds == 2)
                SCATTER(uint16_t);
            else if (ds == 4)
                SCATTER(uint32_t);
            else
                SCATTER(uint8_t);
        }
        free(f);
        free(t);
    }
}
