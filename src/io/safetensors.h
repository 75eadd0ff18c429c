/* io/safetensors.h — read-only, memory-mapped safetensors files.
 *
 *   sdw_st_file *f;
 *   if (sdw_st_open("unet.safetensors", &f, &err) != SDW_OK) return err.code;
 *   const sdw_st_tensor *t = sdw_st_find(f, "conv_in.weight");
 *   sdw_st_close(f);
 *
 * The header is validated in full at open: JSON syntax, dtypes (F32, F16, BF16, the 8-bit
 * floats F8_E4M3 and F8_E5M2 of fp8 checkpoints, plus I64/I32/BOOL... accepted for
 * metadata-like tensors such as position_ids), shapes, shape × dtype size == byte length,
 * offsets inside the data section, no overlaps. Any violation fails the open with a message
 * naming the file and tensor. Data is mmap'd: tensor data pointers stay valid until close.
 * Thread safety: an open file is immutable; concurrent reads are safe.
 */
#ifndef SDW_IO_SAFETENSORS_H
#define SDW_IO_SAFETENSORS_H

#include "core/common.h"

typedef enum sdw_dtype {
    SDW_DTYPE_F32,
    SDW_DTYPE_F16,
    SDW_DTYPE_BF16,
    SDW_DTYPE_F64,
    SDW_DTYPE_I64,
    SDW_DTYPE_I32,
    SDW_DTYPE_I16,
    SDW_DTYPE_I8,
    SDW_DTYPE_U8,
    SDW_DTYPE_BOOL,
    SDW_DTYPE_F8_E4M3, /* torch.float8_e4m3fn: bias 7, no infinities, S.1111.111 NaN, max 448 */
    SDW_DTYPE_F8_E5M2, /* torch.float8_e5m2: the high byte of an IEEE binary16 */
} sdw_dtype;

const char *sdw_dtype_str(sdw_dtype t); /* "F32", ... */
size_t sdw_dtype_size(sdw_dtype t);
/* F32, F16, BF16, F64, F8_E4M3, F8_E5M2: the types sdw_convert_to_f32 reads (parameters; the
 * integer types hold buffers such as position_ids). */
bool sdw_dtype_is_float(sdw_dtype t);

#define SDW_ST_MAX_DIMS 8
typedef struct sdw_st_tensor {
    const char *name;  /* borrowed from the file */
    sdw_dtype dtype;
    int n_dims;        /* 0 for a scalar */
    int64_t shape[SDW_ST_MAX_DIMS];
    size_t n_elems;
    const void *data;  /* inside the mapping; little-endian; not necessarily aligned */
    size_t n_bytes;
} sdw_st_tensor;

typedef struct sdw_st_file sdw_st_file;

/* Opens and validates path. On success *out is a new file; close with sdw_st_close.
 * Refuses pickle checkpoints (.ckpt/.pt/.pth/.bin or a pickle/zip magic) with an explanation. */
sdw_status sdw_st_open(const char *path, sdw_st_file **out, sdw_error *err);
/* Same validation over a caller's buffer (borrowed: must outlive the file; not copied). label
 * names the buffer in error messages and is what sdw_st_path returns. */
sdw_status sdw_st_open_memory(const void *data, size_t len, const char *label, sdw_st_file **out,
                              sdw_error *err);
/* A sharded checkpoint as one file: index is a `*.safetensors.index.json` ({"weight_map":
 * {tensor: shard file}}, the layout transformers and diffusers save large models in); every
 * shard it names (files beside it, no paths) is opened and validated as above, and their
 * tensors form one table. A tensor in two shards, or not in the shard the map names, fails the
 * open. sdw_st_path is the index's path; data pointers stay valid until close. */
sdw_status sdw_st_open_sharded(const char *index, sdw_st_file **out, sdw_error *err);
void sdw_st_close(sdw_st_file *f); /* NULL ok */

const char *sdw_st_path(const sdw_st_file *f);
int sdw_st_count(const sdw_st_file *f);
const sdw_st_tensor *sdw_st_at(const sdw_st_file *f, int i);
/* NULL when absent. O(log n). */
const sdw_st_tensor *sdw_st_find(const sdw_st_file *f, const char *name);
/* The string stored under key in the header's "__metadata__" map (e.g. "modelspec.architecture"),
 * or NULL when there is no such entry. Borrowed: valid until sdw_st_close. */
const char *sdw_st_metadata(const sdw_st_file *f, const char *key);

/* Tells the kernel that t's bytes will not be read again soon: for a mapped file their pages stop
 * counting in the process's resident memory (they are read back from the file if touched
 * again). No-op for sdw_st_open_memory files. Data pointers stay valid. */
void sdw_st_drop_pages(const sdw_st_file *f, const sdw_st_tensor *t);

/* Converts n elements of a float buffer (F32, F16, BF16, F64, F8_E4M3 or F8_E5M2; data need
 * not be aligned) to f32: exact for every value of the 16- and 8-bit types. */
void sdw_convert_to_f32(sdw_dtype dtype, const void *src, float *dst, size_t n);
/* Converts n f32 values to dtype, written to dst (n elements of it: uint16_t for F16/BF16,
 * uint8_t for F8_*), rounding to nearest even as torch's .to(dtype) does. Out of range: F16 and
 * E5M2 overflow to infinity; E4M3 has no infinity: |x| > 464 (rounds past the max 448), inf and
 * NaN give NaN (torch's float8_e4m3fn cast does not saturate either). NaN stays NaN; signs
 * kept. */
void sdw_convert_from_f32(sdw_dtype dtype, const float *src, void *dst, size_t n);

/* Writing (used by the random-weight tool and tests). Tensors are written in the given order;
 * data is f32 in memory and stored as `dtype` (F32, F16, BF16, F8_E4M3 or F8_E5M2). */
typedef struct sdw_st_writer sdw_st_writer;
sdw_status sdw_st_writer_create(const char *path, sdw_st_writer **out, sdw_error *err);
/* Declares a tensor; its data is supplied later by sdw_st_writer_write in the same order. */
void sdw_st_writer_add(sdw_st_writer *w, const char *name, sdw_dtype dtype, int n_dims,
                       const int64_t *shape);
/* Writes the header; then call write() once per declared tensor, in order. */
sdw_status sdw_st_writer_begin(sdw_st_writer *w, sdw_error *err);
/* An 8-bit tensor holding a finite value its type cannot (E4M3: NaN, E5M2: infinity after
 * rounding) is refused with SDW_E_INVALID_ARG naming the tensor, the value and its index. */
sdw_status sdw_st_writer_write(sdw_st_writer *w, const float *data, sdw_error *err);
/* Finishes and frees w (also on error; NULL ok). */
sdw_status sdw_st_writer_finish(sdw_st_writer *w, sdw_error *err);

#endif
