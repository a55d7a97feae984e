/*
 * safetensors.c: the safetensors reader (mmap + validation) and the atomic F32
 * writer (see safetensors.h).
 *
 * The reader follows the checks of the reference implementation
 * (huggingface/safetensors src/tensor.rs) in the same order: file size, header
 * length bound, header inside the file, JSON, per-tensor info, offsets contiguous
 * when sorted, byte size equal to numel * dtype size, data reaching exactly the
 * end of the file. The JSON is parsed with jansson, which rejects invalid UTF-8,
 * raw NUL bytes and (with JSON_REJECT_DUPLICATES) repeated keys.
 *
 * Tensor data is little-endian; this file assumes a little-endian host, which the
 * static assertion below enforces.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors.c copies little-endian data as host floats");

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},     [ST_I8] = {"I8", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1},
    [ST_I16] = {"I16", 2},         [ST_U16] = {"U16", 2},   [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2},       [ST_I32] = {"I32", 4},   [ST_U32] = {"U32", 4},
    [ST_F32] = {"F32", 4},         [ST_F64] = {"F64", 8},   [ST_I64] = {"I64", 8},
    [ST_U64] = {"U64", 8},
};
#define N_DTYPES ((int)(sizeof dtype_table / sizeof dtype_table[0]))

const char *safetensors_dtype_name(StDtype dtype)
{
    if ((int)dtype < 0 || (int)dtype >= N_DTYPES)
        return "?";
    return dtype_table[dtype].name;
}

size_t safetensors_dtype_size(StDtype dtype)
{
    if ((int)dtype < 0 || (int)dtype >= N_DTYPES)
        return 0;
    return dtype_table[dtype].size;
}

/* Looks a dtype name up; returns 0 and sets *out, or -1 when unknown. */
static int dtype_parse(const char *name, StDtype *out)
{
    for (int i = 0; i < N_DTYPES; i++) {
        if (strcmp(dtype_table[i].name, name) == 0) {
            *out = (StDtype)i;
            return 0;
        }
    }
    return -1;
}

int64_t safetensors_numel(const StTensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* Product of shape[0..ndim) into *out; -1 when it overflows uint64. */
static int shape_numel_checked(const int64_t *shape, int ndim, uint64_t *out)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n))
            return -1;
    }
    *out = n;
    return 0;
}

/* Writes "[d0,d1,...]" into buf (truncated to cap). */
static void shape_format(char *buf, size_t cap, const int64_t *shape, int ndim)
{
    size_t len = 0;
    len += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? "," : "",
                                (long long)shape[i]);
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
}

void safetensors_close(SafeTensors *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->n_tensors; i++)
        free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->meta_keys);
    free(st->meta_values);
    if (st->map)
        munmap(st->map, st->map_len);
    free(st->path);
    memset(st, 0, sizeof *st);
}

/* Reads a JSON integer >= 0 into *out; -1 when v is not one. */
static int json_get_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Fills t (name already set) from the header entry v of the tensor `name`. */
static int parse_tensor(const char *path, const char *name, const json_t *v, StTensor *t,
                        Error *err)
{
    if (!json_is_object(v))
        return error_set(err, "%s: tensor '%s': header entry is not a JSON object", path, name);

    const json_t *dt = json_object_get(v, "dtype");
    if (!dt)
        return error_set(err, "%s: tensor '%s': missing \"dtype\"", path, name);
    if (!json_is_string(dt))
        return error_set(err, "%s: tensor '%s': \"dtype\" is not a string", path, name);
    if (dtype_parse(json_string_value(dt), &t->dtype) != 0)
        return error_set(err, "%s: tensor '%s': unknown dtype '%s'", path, name,
                         json_string_value(dt));

    const json_t *shape = json_object_get(v, "shape");
    if (!shape)
        return error_set(err, "%s: tensor '%s': missing \"shape\"", path, name);
    if (!json_is_array(shape))
        return error_set(err, "%s: tensor '%s': \"shape\" is not an array", path, name);
    if (json_array_size(shape) > SAFETENSORS_MAX_DIMS)
        return error_set(err, "%s: tensor '%s': shape has %zu dimensions, at most %d allowed",
                         path, name, json_array_size(shape), SAFETENSORS_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    for (int i = 0; i < t->ndim; i++) {
        const json_t *d = json_array_get(shape, (size_t)i);
        uint64_t dim;
        if (json_get_u64(d, &dim) != 0)
            return error_set(err, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                             path, name, i);
        t->shape[i] = (int64_t)dim;
    }

    const json_t *offs = json_object_get(v, "data_offsets");
    if (!offs)
        return error_set(err, "%s: tensor '%s': missing \"data_offsets\"", path, name);
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        json_get_u64(json_array_get(offs, 0), &t->begin) != 0 ||
        json_get_u64(json_array_get(offs, 1), &t->end) != 0)
        return error_set(err,
                         "%s: tensor '%s': \"data_offsets\" is not [begin, end] of two "
                         "non-negative integers", path, name);
    return 0;
}

/* Copies the __metadata__ object m into st (keys and values owned). */
static int parse_metadata(SafeTensors *st, const json_t *m, Error *err)
{
    if (!json_is_object(m))
        return error_set(err, "%s: \"__metadata__\" is not a JSON object", st->path);
    size_t n = json_object_size(m);
    if (n == 0)
        return 0;
    st->meta_keys = calloc(n, sizeof *st->meta_keys);
    st->meta_values = calloc(n, sizeof *st->meta_values);
    if (!st->meta_keys || !st->meta_values)
        return error_set(err, "%s: out of memory for %zu metadata entries", st->path, n);
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)m, key, val) {
        if (!json_is_string(val))
            return error_set(err, "%s: \"__metadata__\" key '%s': value is not a string",
                             st->path, key);
        st->meta_keys[st->n_meta] = strdup(key);
        st->meta_values[st->n_meta] = strdup(json_string_value(val));
        st->n_meta++;
        if (!st->meta_keys[st->n_meta - 1] || !st->meta_values[st->n_meta - 1])
            return error_set(err, "%s: out of memory for metadata '%s'", st->path, key);
    }
    return 0;
}

/* qsort context-free comparison of tensor pointers by (begin, end), then by
 * position, so the order (and hence which tensor an error names) is deterministic. */
static int cmp_by_offsets(const void *a, const void *b)
{
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* The offset checks of the reference loader, over all tensors sorted by offset. */
static int validate_offsets(const SafeTensors *st, uint64_t header_len, Error *err)
{
    int rc = -1;
    const StTensor **order = NULL;
    if (st->n_tensors > 0) {
        order = malloc((size_t)st->n_tensors * sizeof *order);
        if (!order)
            return error_set(err, "%s: out of memory", st->path);
    }
    for (int i = 0; i < st->n_tensors; i++)
        order[i] = &st->tensors[i];
    if (st->n_tensors > 1)
        qsort(order, (size_t)st->n_tensors, sizeof *order, cmp_by_offsets);

    uint64_t prev_end = 0;
    for (int i = 0; i < st->n_tensors; i++) {
        const StTensor *t = order[i];
        if (t->begin != prev_end) {
            if (i == 0)
                error_set(err,
                          "%s: tensor '%s': data_offsets [%llu, %llu]: the first tensor of "
                          "the data section must begin at 0, not %llu",
                          st->path, t->name, (unsigned long long)t->begin,
                          (unsigned long long)t->end, (unsigned long long)t->begin);
            else if (t->begin > prev_end)
                error_set(err,
                          "%s: tensor '%s': data_offsets [%llu, %llu] begin at %llu but the "
                          "previous tensor '%s' ends at %llu: gap of %llu bytes",
                          st->path, t->name, (unsigned long long)t->begin,
                          (unsigned long long)t->end, (unsigned long long)t->begin,
                          order[i - 1]->name, (unsigned long long)prev_end,
                          (unsigned long long)(t->begin - prev_end));
            else
                error_set(err,
                          "%s: tensor '%s': data_offsets [%llu, %llu] begin at %llu but the "
                          "previous tensor '%s' ends at %llu: overlap of %llu bytes",
                          st->path, t->name, (unsigned long long)t->begin,
                          (unsigned long long)t->end, (unsigned long long)t->begin,
                          order[i - 1]->name, (unsigned long long)prev_end,
                          (unsigned long long)(prev_end - t->begin));
            goto fail;
        }
        if (t->end < t->begin) {
            error_set(err, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                      st->path, t->name, (unsigned long long)t->begin,
                      (unsigned long long)t->end);
            goto fail;
        }
        char shape[160];
        shape_format(shape, sizeof shape, t->shape, t->ndim);
        uint64_t numel, nbytes;
        if (shape_numel_checked(t->shape, t->ndim, &numel) != 0 ||
            __builtin_mul_overflow(numel, (uint64_t)safetensors_dtype_size(t->dtype), &nbytes)) {
            error_set(err, "%s: tensor '%s': shape %s %s overflows a 64-bit byte count",
                      st->path, t->name, shape, safetensors_dtype_name(t->dtype));
            goto fail;
        }
        if (t->end - t->begin != nbytes) {
            error_set(err,
                      "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape "
                      "%s %s needs %llu",
                      st->path, t->name, (unsigned long long)t->begin,
                      (unsigned long long)t->end, (unsigned long long)(t->end - t->begin),
                      shape, safetensors_dtype_name(t->dtype), (unsigned long long)nbytes);
            goto fail;
        }
        prev_end = t->end;
    }
    if (prev_end < st->data_len) {
        error_set(err,
                  "%s: tensors end at data offset %llu but the data section is %llu bytes "
                  "(file is %zu bytes = 8 + %llu header + data): %llu trailing bytes",
                  st->path, (unsigned long long)prev_end, (unsigned long long)st->data_len,
                  st->map_len, (unsigned long long)header_len,
                  (unsigned long long)(st->data_len - prev_end));
        goto fail;
    }
    if (prev_end > st->data_len) {
        error_set(err,
                  "%s: tensors end at data offset %llu (file offset %llu) but the file is "
                  "%zu bytes, a data section of %llu bytes: %llu bytes missing (truncated?)",
                  st->path, (unsigned long long)prev_end,
                  (unsigned long long)(8 + header_len + prev_end), st->map_len,
                  (unsigned long long)st->data_len,
                  (unsigned long long)(prev_end - st->data_len));
        goto fail;
    }
    rc = 0;
fail:
    free(order);
    return rc;
}

/* Parses and validates the header (st->map holds the file, header_len checked). */
static int parse_header(SafeTensors *st, uint64_t header_len, Error *err)
{
    int rc = -1;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)st->map + 8, (size_t)header_len,
                              JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return error_set(err,
                         "%s: header (file bytes 8..%llu) is not valid UTF-8 JSON: %s "
                         "(line %d, column %d, file offset %llu)",
                         st->path, (unsigned long long)(8 + header_len), jerr.text, jerr.line,
                         jerr.column, (unsigned long long)(8 + (uint64_t)jerr.position));
    if (!json_is_object(root)) {
        error_set(err, "%s: header (file bytes 8..%llu) is not a JSON object", st->path,
                  (unsigned long long)(8 + header_len));
        goto fail;
    }

    const json_t *meta = json_object_get(root, "__metadata__");
    if (meta && parse_metadata(st, meta, err) != 0)
        goto fail;

    size_t n = json_object_size(root) - (meta ? 1 : 0);
    if (n > 0) {
        st->tensors = calloc(n, sizeof *st->tensors);
        if (!st->tensors) {
            error_set(err, "%s: out of memory for %zu tensors", st->path, n);
            goto fail;
        }
    }
    const char *key;
    const json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        StTensor *t = &st->tensors[st->n_tensors];
        t->name = strdup(key);
        if (!t->name) {
            error_set(err, "%s: out of memory for tensor '%s'", st->path, key);
            goto fail;
        }
        st->n_tensors++;
        if (parse_tensor(st->path, key, val, t, err) != 0)
            goto fail;
    }
    rc = validate_offsets(st, header_len, err);
fail:
    json_decref(root);
    return rc;
}

int safetensors_open(SafeTensors *st, const char *path, Error *err)
{
    memset(st, 0, sizeof *st);
    int fd = -1;
    st->path = strdup(path);
    if (!st->path)
        return error_set(err, "%s: out of memory", path);

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error_set(err, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        error_set(err, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        error_set(err, "%s: not a regular file", path);
        goto fail;
    }
    if (sb.st_size < 8) {
        error_set(err, "%s: file is %lld bytes, shorter than the 8-byte header length",
                  path, (long long)sb.st_size);
        goto fail;
    }
    size_t file_len = (size_t)sb.st_size;
    void *map = mmap(NULL, file_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        error_set(err, "%s: cannot mmap %zu bytes: %s", path, file_len, strerror(errno));
        goto fail;
    }
    st->map = map;
    st->map_len = file_len;
    close(fd);
    fd = -1;

    const uint8_t *p = st->map;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | p[i];
    if (header_len > SAFETENSORS_MAX_HEADER) {
        error_set(err, "%s: header length %llu is over the limit of %llu bytes", path,
                  (unsigned long long)header_len, SAFETENSORS_MAX_HEADER);
        goto fail;
    }
    if (8 + header_len > file_len) {
        error_set(err, "%s: file is %zu bytes but header says 8 + %llu", path, file_len,
                  (unsigned long long)header_len);
        goto fail;
    }
    st->data = p + 8 + header_len;
    st->data_len = file_len - 8 - header_len;
    if (parse_header(st, header_len, err) != 0)
        goto fail;
    return 0;

fail:
    if (fd >= 0)
        close(fd);
    safetensors_close(st);
    return -1;
}

const StTensor *safetensors_find(const SafeTensors *st, const char *name)
{
    /* Linear: a ResNet50 file has ~320 tensors and lookups happen at load time. */
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0)
            return &st->tensors[i];
    return NULL;
}

const char *safetensors_meta(const SafeTensors *st, const char *key)
{
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0)
            return st->meta_values[i];
    return NULL;
}

/* IEEE 754 binary16 to binary32; exact for every input (subnormals, inf, NaN). */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exactly representable as a float */
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31)
        bits = sign | 0x7f800000u | (mant << 13);
    else
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

int safetensors_read_f32(const SafeTensors *st, const StTensor *t, float *out, Error *err)
{
    const char *path = st->path ? st->path : "safetensors";
    if (t->end > st->data_len || t->begin > t->end)
        return error_set(err, "%s: tensor '%s': data_offsets [%llu, %llu] outside the data "
                         "section of %llu bytes", path, t->name, (unsigned long long)t->begin,
                         (unsigned long long)t->end, (unsigned long long)st->data_len);
    const uint8_t *src = st->data + t->begin;
    size_t n = (size_t)safetensors_numel(t);
    switch (t->dtype) {
    case ST_F32:
        if (n)
            memcpy(out, src, n * sizeof(float));
        return 0;
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = half_to_float(h);
        }
        return 0;
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, sizeof(float));
        }
        return 0;
    default:
        return error_set(err, "%s: tensor '%s' has dtype %s; only F32, F16 and BF16 can be "
                         "read as float", path, t->name, safetensors_dtype_name(t->dtype));
    }
}

/* Builds the header JSON (compact, keys in order, "__metadata__" first) and
 * returns it as a malloc'd string in *out, with the data size in *data_len. */
static int build_header(const char *path, const StEntry *entries, int n_entries,
                        const char *const *meta_kv, int n_meta, char **out,
                        uint64_t *data_len, Error *err)
{
    int rc = -1;
    json_t *root = json_object();
    json_t *meta = NULL;
    if (!root)
        return error_set(err, "%s: out of memory", path);
    if (n_meta > 0) {
        meta = json_object();
        if (!meta || json_object_set(root, "__metadata__", meta) != 0) {
            error_set(err, "%s: out of memory", path);
            goto fail;
        }
        for (int i = 0; i < n_meta; i++) {
            const char *k = meta_kv[2 * i], *v = meta_kv[2 * i + 1];
            if (!k || !v) {
                error_set(err, "%s: metadata pair %d has a NULL key or value", path, i);
                goto fail;
            }
            if (json_object_get(meta, k)) {
                error_set(err, "%s: duplicate metadata key '%s'", path, k);
                goto fail;
            }
            json_t *s = json_string(v);
            if (!s || json_object_set_new(meta, k, s) != 0) {
                error_set(err, "%s: metadata '%s': key or value is not valid UTF-8", path, k);
                goto fail;
            }
        }
    }

    uint64_t off = 0;
    for (int i = 0; i < n_entries; i++) {
        const StEntry *e = &entries[i];
        if (!e->name) {
            error_set(err, "%s: tensor %d has no name", path, i);
            goto fail;
        }
        if (strcmp(e->name, "__metadata__") == 0) {
            error_set(err, "%s: a tensor may not be named '__metadata__'", path);
            goto fail;
        }
        if (json_object_get(root, e->name)) {
            error_set(err, "%s: duplicate tensor name '%s'", path, e->name);
            goto fail;
        }
        if (e->ndim < 0 || e->ndim > SAFETENSORS_MAX_DIMS) {
            error_set(err, "%s: tensor '%s': %d dimensions, must be 0..%d", path, e->name,
                      e->ndim, SAFETENSORS_MAX_DIMS);
            goto fail;
        }
        for (int d = 0; d < e->ndim; d++) {
            if (e->shape[d] < 0) {
                error_set(err, "%s: tensor '%s': shape[%d] = %lld is negative", path, e->name,
                          d, (long long)e->shape[d]);
                goto fail;
            }
        }
        uint64_t numel, nbytes;
        if (shape_numel_checked(e->shape, e->ndim, &numel) != 0 ||
            __builtin_mul_overflow(numel, (uint64_t)sizeof(float), &nbytes) ||
            nbytes > (uint64_t)INT64_MAX - off) {
            error_set(err, "%s: tensor '%s': size overflows", path, e->name);
            goto fail;
        }
        if (nbytes > 0 && !e->data) {
            error_set(err, "%s: tensor '%s': data is NULL", path, e->name);
            goto fail;
        }
        json_t *t = json_pack("{s:s, s:[], s:[I,I]}", "dtype", "F32", "shape", "data_offsets",
                              (json_int_t)off, (json_int_t)(off + nbytes));
        if (!t) {
            error_set(err, "%s: out of memory", path);
            goto fail;
        }
        json_t *shape = json_object_get(t, "shape");
        for (int d = 0; d < e->ndim; d++) {
            if (json_array_append_new(shape, json_integer((json_int_t)e->shape[d])) != 0) {
                json_decref(t);
                error_set(err, "%s: out of memory", path);
                goto fail;
            }
        }
        if (json_object_set_new(root, e->name, t) != 0) {
            error_set(err, "%s: tensor name '%s' is not valid UTF-8", path, e->name);
            goto fail;
        }
        off += nbytes;
    }
    *out = json_dumps(root, JSON_COMPACT);
    if (!*out) {
        error_set(err, "%s: cannot serialise the header", path);
        goto fail;
    }
    *data_len = off;
    rc = 0;
fail:
    json_decref(meta);
    json_decref(root);
    return rc;
}

int safetensors_write(const char *path, const StEntry *entries, int n_entries,
                      const char *const *meta_kv, int n_meta, Error *err)
{
    char *header = NULL, *tmp = NULL;
    FILE *f = NULL;
    int fd = -1;
    uint64_t data_len;
    if (n_entries < 0 || n_meta < 0)
        return error_set(err, "%s: negative entry count", path);
    if (build_header(path, entries, n_entries, meta_kv, n_meta, &header, &data_len, err) != 0)
        return -1;

    size_t hlen = strlen(header);
    size_t pad = (8 - hlen % 8) % 8;
    uint64_t n = (uint64_t)(hlen + pad);
    uint8_t len_bytes[8];
    for (int i = 0; i < 8; i++)
        len_bytes[i] = (uint8_t)(n >> (8 * i));

    size_t tmp_cap = strlen(path) + sizeof ".tmp.XXXXXX";
    tmp = malloc(tmp_cap);
    if (!tmp) {
        error_set(err, "%s: out of memory", path);
        goto fail;
    }
    snprintf(tmp, tmp_cap, "%s.tmp.XXXXXX", path);
    fd = mkstemp(tmp);
    if (fd < 0) {
        error_set(err, "%s: cannot create a temporary file: %s", path, strerror(errno));
        free(tmp);
        tmp = NULL; /* nothing to unlink */
        goto fail;
    }
    /* mkstemp creates 0600; weight files are meant to be shared like any output.
     * A fixed mode avoids umask(), which would race with other threads. */
    if (fchmod(fd, 0644) != 0) {
        error_set(err, "%s: cannot chmod %s: %s", path, tmp, strerror(errno));
        goto fail;
    }
    f = fdopen(fd, "wb");
    if (!f) {
        error_set(err, "%s: fdopen: %s", path, strerror(errno));
        goto fail;
    }
    fd = -1; /* owned by f now */

    static const char spaces[8] = "        ";
    if (fwrite(len_bytes, 1, 8, f) != 8 || fwrite(header, 1, hlen, f) != hlen ||
        fwrite(spaces, 1, pad, f) != pad)
        goto io_fail;
    for (int i = 0; i < n_entries; i++) {
        const StEntry *e = &entries[i];
        uint64_t numel = 0;
        shape_numel_checked(e->shape, e->ndim, &numel); /* overflow ruled out by build_header */
        if (numel && fwrite(e->data, sizeof(float), (size_t)numel, f) != (size_t)numel)
            goto io_fail;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        goto io_fail;
    int close_rc = fclose(f);
    f = NULL;
    if (close_rc != 0)
        goto io_fail;
    if (rename(tmp, path) != 0)
        goto io_fail;
    free(tmp);
    free(header);
    return 0;

io_fail:
    error_set(err, "%s: cannot write: %s", path, strerror(errno));
fail:
    if (f)
        fclose(f);
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(header);
    return -1;
}
