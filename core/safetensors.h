/*
 * safetensors.h: reading and writing the safetensors weight format.
 *
 * Format (huggingface/safetensors): 8 bytes little-endian u64 header length N,
 * N bytes of UTF-8 JSON {"name": {"dtype", "shape", "data_offsets": [b, e]}, ...,
 * "__metadata__": {"k": "v"}}, then the data section. Offsets are relative to the
 * data section. The reader validates exactly as the reference implementation does
 * and names the offending tensor or byte offset in its error.
 *
 * Ownership: safetensors_open maps the file read-only; the SafeTensors struct owns
 * the mapping, the tensor table and the metadata until safetensors_close.
 */
#ifndef RESNETD_SAFETENSORS_H
#define RESNETD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define SAFETENSORS_MAX_DIMS 8
#define SAFETENSORS_MAX_HEADER 100000000ULL

typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_I16, ST_U16, ST_F16, ST_BF16,
    ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64
} StDtype;

typedef struct {
    char *name;                       /* owned */
    StDtype dtype;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    uint64_t begin, end;              /* byte offsets relative to the data section */
} StTensor;

typedef struct {
    int n_tensors;
    StTensor *tensors;                /* in header order */
    int n_meta;
    char **meta_keys, **meta_values;  /* __metadata__ pairs, owned */
    const uint8_t *data;              /* start of the data section (inside the mapping) */
    uint64_t data_len;
    void *map;                        /* the whole file, mmapped */
    size_t map_len;
    char *path;                       /* owned copy, used in error messages */
} SafeTensors;

/* Maps and validates `path`. On failure returns -1, leaves *st empty (safe to
 * close) and says why: too short, header size out of bounds, header past the end
 * of the file, invalid JSON/UTF-8, unknown dtype, non-contiguous offsets, a size
 * that does not match the shape, data not reaching the end of the file. Every
 * message starts with "PATH: " and names the tensor and byte offsets involved.
 * Extra keys inside a tensor entry are ignored, as the reference loader does. */
int safetensors_open(SafeTensors *st, const char *path, Error *err);
void safetensors_close(SafeTensors *st);

/* Borrowed pointer into st, or NULL when there is no such tensor / key. */
const StTensor *safetensors_find(const SafeTensors *st, const char *name);
const char *safetensors_meta(const SafeTensors *st, const char *key);

/* Number of elements of t (product of the shape; 1 for a scalar). */
int64_t safetensors_numel(const StTensor *t);
const char *safetensors_dtype_name(StDtype dtype);
/* Bytes per element of dtype (1, 2, 4 or 8). */
size_t safetensors_dtype_size(StDtype dtype);

/* Copies tensor t converted to float into out (numel floats, caller-allocated).
 * Accepts F32, F16 and BF16 (every half value, subnormals, infinities and NaN
 * included); other dtypes are an error naming the tensor and the dtype. t must
 * come from st (safetensors_find or st->tensors). Thread-safe: only reads st. */
int safetensors_read_f32(const SafeTensors *st, const StTensor *t, float *out, Error *err);

/* One tensor to write: F32 data, row-major, borrowed. */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    const float *data;
} StEntry;

/* Writes entries (F32) and metadata pairs (meta_kv[2*i] key, meta_kv[2*i+1] value)
 * to path atomically: a temporary file in the same folder, fsync, rename. The
 * header lists "__metadata__" first (when n_meta > 0), then the tensors in the
 * given order, and is padded with spaces to a multiple of 8 bytes. Duplicate
 * names (tensors or metadata keys), a tensor named "__metadata__", names that are
 * not UTF-8, more than 8 dims or a negative dim are errors. data may be NULL only
 * for a 0-element tensor. The file gets mode 0644. On failure returns -1 naming
 * path (and errno's text for I/O errors); nothing new is left at path (an
 * existing file there is untouched) and the temporary file is removed. */
int safetensors_write(const char *path, const StEntry *entries, int n_entries,
                      const char *const *meta_kv, int n_meta, Error *err);

#endif
