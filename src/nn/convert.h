/* nn/convert.h — element type conversions on the CPU: f32 <-> bf16 for activations, and
 * weights kept in fewer bits widened back to an op's type (library-internal). Vectorised
 * (AVX-512, AVX2 or baseline by core/cpu.h's level: SDW_MAX_ISA obeyed) and threaded in chunks
 * of SDW__CONVERT_CHUNK elements, except the _row forms, which run on the calling thread (for
 * use inside a parallel loop).
 *
 *   sdw__f32_to_bf16(x, h, n);   // h = bf16(x), round to nearest even
 */
#ifndef SDW_NN_CONVERT_H
#define SDW_NN_CONVERT_H

#include "io/safetensors.h"
#include "nn/act.h"

/* Elements per chunk of the threaded conversions (a chunk is one thread's unit of work). */
#define SDW__CONVERT_CHUNK 16384

/* f32 <-> bf16 (round to nearest even; NaN stays NaN). */
void sdw__f32_to_bf16(const float *x, uint16_t *y, size_t n);
void sdw__bf16_to_f32(const uint16_t *x, float *y, size_t n);
void sdw__f32_to_bf16_row(const float *x, uint16_t *y, size_t n);
void sdw__bf16_to_f32_row(const uint16_t *x, float *y, size_t n);
/* n F16 or BF16 values widened to f32. */
void sdw__widen_16(sdw_dtype dt, const uint16_t *x, float *y, size_t n);
/* n F8_E4M3 / F8_E5M2 values widened to yt (f32 or bf16; every fp8 value is exact in both) by
 * a 256-entry table; past 32 MiB of output (a layer that cannot stay in cache) with streaming
 * stores when y is 64-byte aligned. */
void sdw__widen_8(sdw_dtype dt, const uint8_t *x, void *y, sdw_dt yt, size_t n);

/* A tensor packed into a blocked layout: row r of src (n_rows rows of row_len values of type
 * sdt, contiguous: a checkpoint's [out, in(, k, k)]) goes to dst, of type ddt, at element
 * offsets row_off[r] + col_off[j]; positions no row reaches are left as they are. Values are
 * converted from sdt to ddt (sdt: any float type; ddt: F32, F16, BF16, F8_E4M3 or F8_E5M2;
 * a narrower ddt rounds to nearest even: bf16 for a bf16 layer; callers keep f16 / fp8 for
 * values they checked to be exact). Threaded over rows; the offsets say nothing of the source
 * layout, so this serves any oneDNN blocking (backend_cpu.c builds the tables). */
void sdw__pack_rows(const void *src, sdw_dtype sdt, int64_t n_rows, int64_t row_len,
                    const int64_t *row_off, const int64_t *col_off, void *dst, sdw_dtype ddt);

#endif
