/*
 * test_safetensors.c: unit tests of core/safetensors (cmocka).
 *
 * Round trips through the writer and reader, the exact header bytes the writer
 * produces, half and bfloat16 decoding against hand-computed values, one test per
 * malformed file the reader must reject (each also checks that the error message
 * names what is wrong), and writer failures that must leave nothing behind.
 */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------- */

/* Writes an 8-byte little-endian header length `n`, then `header` (strlen bytes),
 * then data_len bytes of data (copied from data, or zeros when data is NULL). */
static void write_raw_n(const char *path, uint64_t n, const char *header, const void *data,
                        size_t data_len)
{
    size_t hlen = strlen(header);
    size_t total = 8 + hlen + data_len;
    uint8_t *buf = calloc(1, total);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, header, hlen);
    if (data && data_len)
        memcpy(buf + 8 + hlen, data, data_len);
    testutil_write_file(path, buf, total);
    free(buf);
}

/* A file whose length prefix is the true header length. */
static void write_raw(const char *path, const char *header, const void *data, size_t data_len)
{
    write_raw_n(path, strlen(header), header, data, data_len);
}

/* Opens path expecting failure; asserts the struct is left empty and the message
 * contains every one of the NULL-terminated substrings. */
static void expect_open_error(const char *path, ...)
{
    SafeTensors st;
    memset(&st, 0x5a, sizeof st); /* garbage in: open must reset it */
    Error err = {{0}};
    assert_int_equal(safetensors_open(&st, path, &err), -1);
    print_message("  error: %s\n", err.msg);
    assert_int_equal(st.n_tensors, 0);
    assert_null(st.tensors);
    assert_int_equal(st.n_meta, 0);
    assert_null(st.map);
    assert_null(st.path);
    safetensors_close(&st);
    assert_non_null(strstr(err.msg, path));
    va_list ap;
    va_start(ap, path);
    for (const char *s; (s = va_arg(ap, const char *));) {
        if (!strstr(err.msg, s)) {
            print_error("error message \"%s\" lacks \"%s\"\n", err.msg, s);
            fail();
        }
    }
    va_end(ap);
}

/* Reads a whole file into a malloc'd buffer; *len gets its size. */
static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long sz = ftell(f);
    assert_true(sz >= 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)sz + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *len = (size_t)sz;
    return buf;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Number of entries in dir other than "." and "..". */
static int count_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static int bits_equal(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* ---- writer + reader -------------------------------------------------------- */

static void test_round_trip(void **state)
{
    (void)state;
    float a[6] = {1.5f, -2.25f, 3.0f, 0.0f, -0.0f, 1e-30f};
    float scalar[1] = {42.5f};
    float big[4 * 3 * 2 * 5];
    testutil_fill_uniform(big, 120, 7, -3.0f, 3.0f);
    float vec[3] = {INFINITY, -INFINITY, 7.0f};
    StEntry e[] = {
        {.name = "layer1.0.conv1.weight", .ndim = 2, .shape = {2, 3}, .data = a},
        {.name = "scalar", .ndim = 0, .data = scalar},
        {.name = "empty", .ndim = 2, .shape = {0, 5}, .data = NULL},
        {.name = "big", .ndim = 4, .shape = {4, 3, 2, 5}, .data = big},
        {.name = "vec", .ndim = 1, .shape = {3}, .data = vec},
    };
    const char *meta[] = {"format", "pt", "variant", "torchvision",
                          "classes", "[\"cat\",\"dog\"]"};
    const char *path = testutil_tmp_path("round_trip.safetensors");
    Error err = {{0}};
    assert_int_equal(safetensors_write(path, e, 5, meta, 3, &err), 0);

    SafeTensors st;
    assert_int_equal(safetensors_open(&st, path, &err), 0);
    assert_int_equal(st.n_tensors, 5);
    assert_string_equal(st.path, path);
    uint64_t off = 0;
    for (int i = 0; i < 5; i++) {
        const StTensor *t = &st.tensors[i];
        assert_string_equal(t->name, e[i].name); /* header order kept */
        assert_int_equal(t->dtype, ST_F32);
        assert_int_equal(t->ndim, e[i].ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(t->shape[d], e[i].shape[d]);
        assert_int_equal(t->begin, off);
        int64_t numel = safetensors_numel(t);
        assert_int_equal(t->end, off + 4 * (uint64_t)numel);
        off = t->end;
        assert_ptr_equal(safetensors_find(&st, e[i].name), t);
        float *got = malloc(4 * (size_t)numel + 4);
        assert_non_null(got);
        assert_int_equal(safetensors_read_f32(&st, t, got, &err), 0);
        for (int64_t k = 0; k < numel; k++)
            assert_true(bits_equal(got[k], e[i].data[k]));
        free(got);
    }
    assert_int_equal(off, st.data_len);
    assert_int_equal(safetensors_numel(safetensors_find(&st, "scalar")), 1);
    assert_int_equal(safetensors_numel(safetensors_find(&st, "empty")), 0);
    assert_null(safetensors_find(&st, "missing"));

    assert_int_equal(st.n_meta, 3);
    assert_string_equal(safetensors_meta(&st, "format"), "pt");
    assert_string_equal(safetensors_meta(&st, "variant"), "torchvision");
    assert_string_equal(safetensors_meta(&st, "classes"), "[\"cat\",\"dog\"]");
    assert_null(safetensors_meta(&st, "preprocess"));
    safetensors_close(&st);
    assert_null(st.map);
    assert_int_equal(st.n_tensors, 0);
    safetensors_close(&st); /* closing twice is harmless */

    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0644);
}

static void test_empty_file_round_trip(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("nothing.safetensors");
    Error err = {{0}};
    assert_int_equal(safetensors_write(path, NULL, 0, NULL, 0, &err), 0);
    size_t len;
    uint8_t *buf = read_all(path, &len);
    assert_int_equal(len, 16); /* "{}" padded to 8 */
    assert_int_equal(le64(buf), 8);
    assert_memory_equal(buf + 8, "{}      ", 8);
    free(buf);
    SafeTensors st;
    assert_int_equal(safetensors_open(&st, path, &err), 0);
    assert_int_equal(st.n_tensors, 0);
    assert_int_equal(st.n_meta, 0);
    assert_int_equal(st.data_len, 0);
    safetensors_close(&st);
}

/* The exact bytes: compact JSON, "__metadata__" first, keys in the given order,
 * space padding. tests/tools/test_converters.py checks tools/st_io.py against the
 * same literal. */
static void test_header_exact_bytes(void **state)
{
    (void)state;
    float w[2] = {1.0f, 2.0f};
    StEntry e[] = {{.name = "w", .ndim = 1, .shape = {2}, .data = w}};
    const char *meta[] = {"format", "pt"};
    const char *path = testutil_tmp_path("exact.safetensors");
    Error err = {{0}};
    assert_int_equal(safetensors_write(path, e, 1, meta, 1, &err), 0);
    size_t len;
    uint8_t *buf = read_all(path, &len);
    const char want[] =
        "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2],"
        "\"data_offsets\":[0,8]}}";
    size_t wl = strlen(want); /* 85 bytes, padded to 88 */
    assert_int_equal(wl, 85);
    assert_int_equal(le64(buf), 88);
    assert_int_equal(len, 8 + 88 + 8);
    assert_memory_equal(buf + 8, want, wl);
    assert_memory_equal(buf + 8 + wl, "   ", 3);
    assert_memory_equal(buf + 96, w, 8);
    free(buf);
}

static void test_header_padding(void **state)
{
    (void)state;
    float v = 3.0f;
    char name[32];
    int seen_pad[8] = {0};
    for (int len = 1; len <= 16; len++) {
        memset(name, 'n', (size_t)len);
        name[len] = 0;
        StEntry e = {.name = name, .ndim = 1, .shape = {1}, .data = &v};
        const char *path = testutil_tmp_path("pad.safetensors");
        Error err = {{0}};
        assert_int_equal(safetensors_write(path, &e, 1, NULL, 0, &err), 0);
        size_t flen;
        uint8_t *buf = read_all(path, &flen);
        uint64_t n = le64(buf);
        assert_int_equal(n % 8, 0);
        assert_int_equal(flen, 8 + n + 4);
        /* JSON ends with '}', then only spaces up to 8 + n */
        size_t last = 8 + (size_t)n - 1;
        while (buf[last] == ' ')
            last--;
        assert_int_equal(buf[last], '}');
        size_t pad = 8 + (size_t)n - 1 - last;
        assert_true(pad < 8);
        seen_pad[pad] = 1;
        assert_memory_equal(buf + 8 + n, &v, 4);
        free(buf);
        SafeTensors st;
        assert_int_equal(safetensors_open(&st, path, &err), 0);
        assert_string_equal(st.tensors[0].name, name);
        safetensors_close(&st);
    }
    for (int p = 0; p < 8; p++)
        assert_true(seen_pad[p]); /* every padding amount 0..7 was exercised */
}

/* The data section starts at an odd file offset: reads must not assume alignment
 * (UBSan flags a misaligned float load). */
static void test_unaligned_data(void **state)
{
    (void)state;
    const char *h = "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}";
    assert_int_equal(strlen(h) % 2, 1);
    float want[3] = {0.5f, -1.25f, 1e10f};
    const char *path = testutil_tmp_path("unaligned.safetensors");
    write_raw(path, h, want, sizeof want);
    SafeTensors st;
    Error err = {{0}};
    assert_int_equal(safetensors_open(&st, path, &err), 0);
    float got[3];
    assert_int_equal(safetensors_read_f32(&st, &st.tensors[0], got, &err), 0);
    assert_memory_equal(got, want, sizeof want);
    safetensors_close(&st);
}

/* ---- half / bfloat16 -------------------------------------------------------- */

static void test_f16_decode(void **state)
{
    (void)state;
    static const struct {
        uint16_t h;
        float f;
    } cases[] = {
        {0x3C00, 1.0f},
        {0xC000, -2.0f},
        {0x3555, 0.333251953125f},         /* 1365/4096 */
        {0x7BFF, 65504.0f},                /* largest finite */
        {0x0400, 6.103515625e-05f},        /* 2^-14, smallest normal */
        {0x0001, 5.9604644775390625e-08f}, /* 2^-24, smallest subnormal */
        {0x03FF, 6.097555160522461e-05f},  /* 1023 * 2^-24, largest subnormal */
        {0x8001, -5.9604644775390625e-08f},
        {0x0200, 3.0517578125e-05f},       /* 512 * 2^-24 */
        {0x0000, 0.0f},
        {0x8000, -0.0f},
        {0x7C00, INFINITY},
        {0xFC00, -INFINITY},
    };
    enum { N = sizeof cases / sizeof cases[0] };
    uint16_t data[N + 1];
    for (int i = 0; i < N; i++)
        data[i] = cases[i].h;
    data[N] = 0x7E00; /* NaN */
    char h[128];
    snprintf(h, sizeof h, "{\"h\":{\"dtype\":\"F16\",\"shape\":[%d],\"data_offsets\":[0,%d]}}",
             N + 1, 2 * (N + 1));
    const char *path = testutil_tmp_path("f16.safetensors");
    write_raw(path, h, data, sizeof data);
    SafeTensors st;
    Error err = {{0}};
    assert_int_equal(safetensors_open(&st, path, &err), 0);
    assert_int_equal(st.tensors[0].dtype, ST_F16);
    float got[N + 1];
    assert_int_equal(safetensors_read_f32(&st, &st.tensors[0], got, &err), 0);
    for (int i = 0; i < N; i++) {
        if (!bits_equal(got[i], cases[i].f)) {
            print_error("half 0x%04x: got %.10g want %.10g\n", cases[i].h, got[i], cases[i].f);
            fail();
        }
    }
    assert_true(isnan(got[N]));
    assert_true(signbit(got[10]) && !signbit(got[9]));
    safetensors_close(&st);
}

static void test_bf16_decode(void **state)
{
    (void)state;
    static const struct {
        uint16_t h;
        float f;
    } cases[] = {
        {0x3F80, 1.0f},
        {0xC0A0, -5.0f},
        {0x4049, 3.140625f},
        {0x0001, 9.183549615799121e-41f}, /* float subnormal 2^-133 */
        {0x8080, -1.1754943508222875e-38f}, /* -2^-126 */
        {0x7F7F, 3.3895313892515355e+38f}, /* largest finite */
        {0x7F80, INFINITY},
        {0xFF80, -INFINITY},
    };
    enum { N = sizeof cases / sizeof cases[0] };
    uint16_t data[N + 1];
    for (int i = 0; i < N; i++)
        data[i] = cases[i].h;
    data[N] = 0x7FC0; /* NaN */
    char h[128];
    snprintf(h, sizeof h, "{\"b\":{\"dtype\":\"BF16\",\"shape\":[%d],\"data_offsets\":[0,%d]}}",
             N + 1, 2 * (N + 1));
    const char *path = testutil_tmp_path("bf16.safetensors");
    write_raw(path, h, data, sizeof data);
    SafeTensors st;
    Error err = {{0}};
    assert_int_equal(safetensors_open(&st, path, &err), 0);
    float got[N + 1];
    assert_int_equal(safetensors_read_f32(&st, &st.tensors[0], got, &err), 0);
    for (int i = 0; i < N; i++) {
        if (!bits_equal(got[i], cases[i].f)) {
            print_error("bf16 0x%04x: got %.10g want %.10g\n", cases[i].h, got[i], cases[i].f);
            fail();
        }
    }
    assert_true(isnan(got[N]));
    safetensors_close(&st);
}

static void test_read_other_dtype_fails(void **state)
{
    (void)state;
    const char *h = "{\"steps\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                    "\"mask\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[8,10]}}";
    const char *path = testutil_tmp_path("i64.safetensors");
    write_raw(path, h, NULL, 10);
    SafeTensors st;
    Error err = {{0}};
    assert_int_equal(safetensors_open(&st, path, &err), 0);
    assert_int_equal(st.tensors[0].dtype, ST_I64);
    assert_int_equal(safetensors_dtype_size(ST_I64), 8);
    assert_int_equal(st.tensors[1].dtype, ST_BOOL);
    float out[2];
    assert_int_equal(safetensors_read_f32(&st, &st.tensors[0], out, &err), -1);
    assert_non_null(strstr(err.msg, "tensor 'steps' has dtype I64"));
    assert_int_equal(safetensors_read_f32(&st, &st.tensors[1], out, &err), -1);
    assert_non_null(strstr(err.msg, "'mask' has dtype BOOL"));
    safetensors_close(&st);
}

static void test_close_zeroed(void **state)
{
    (void)state;
    SafeTensors st;
    memset(&st, 0, sizeof st);
    safetensors_close(&st);
    safetensors_close(NULL);
    assert_null(safetensors_find(&st, "x"));
    assert_null(safetensors_meta(&st, "x"));
}

/* ---- malformed files: one test each ----------------------------------------- */

#define ONE_F32 "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"

static void test_bad_missing_file(void **state)
{
    (void)state;
    expect_open_error(testutil_tmp_path("does-not-exist.safetensors"), "cannot open",
                      "No such file", NULL);
}

static void test_bad_empty_file(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("empty.safetensors");
    testutil_write_file(path, "", 0);
    expect_open_error(path, "file is 0 bytes", "8-byte header length", NULL);
}

static void test_bad_7_bytes(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("seven.safetensors");
    testutil_write_file(path, "\x02\0\0\0\0\0\0", 7);
    expect_open_error(path, "file is 7 bytes", NULL);
}

static void test_bad_header_too_large(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("huge_header.safetensors");
    write_raw_n(path, 100000001ULL, "{}", NULL, 0);
    expect_open_error(path, "header length 100000001", "limit of 100000000", NULL);
}

static void test_bad_header_past_eof(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("past_eof.safetensors");
    write_raw_n(path, 5000, "{}", NULL, 0); /* file is 10 bytes */
    expect_open_error(path, "file is 10 bytes but header says 8 + 5000", NULL);
}

static void test_bad_invalid_json(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("bad_json.safetensors");
    write_raw(path, "{\"t\":{\"dtype\":\"F32\",", NULL, 0);
    expect_open_error(path, "is not valid UTF-8 JSON", "file bytes 8..28", NULL);
}

static void test_bad_invalid_utf8(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("bad_utf8.safetensors");
    write_raw(path, "{\"t\xff\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", NULL, 4);
    expect_open_error(path, "is not valid UTF-8 JSON", NULL);
}

static void test_bad_not_object(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("array.safetensors");
    write_raw(path, "[1, 2, 3]", NULL, 0);
    expect_open_error(path, "is not a JSON object", NULL);
}

static void test_bad_duplicate_names(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("dup.safetensors");
    write_raw(path,
              "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              NULL, 8);
    expect_open_error(path, "duplicate", "\"w\"", NULL);
}

static void test_bad_unknown_dtype(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("dtype.safetensors");
    write_raw(path, "{\"fc.weight\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}",
              NULL, 4);
    expect_open_error(path, "tensor 'fc.weight': unknown dtype 'F33'", NULL);
}

static void test_bad_missing_shape(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("noshape.safetensors");
    write_raw(path, "{\"b\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", NULL, 4);
    expect_open_error(path, "tensor 'b': missing \"shape\"", NULL);
}

static void test_bad_negative_dim(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("negdim.safetensors");
    write_raw(path, "{\"b\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", NULL,
              4);
    expect_open_error(path, "tensor 'b': shape[1] is not a non-negative integer", NULL);
}

static void test_bad_too_many_dims(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("ninedims.safetensors");
    write_raw(path,
              "{\"b\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
              NULL, 4);
    expect_open_error(path, "tensor 'b': shape has 9 dimensions, at most 8", NULL);
}

static void test_bad_offsets_not_pair(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("offs3.safetensors");
    write_raw(path, "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", NULL, 8);
    expect_open_error(path, "tensor 'b': \"data_offsets\" is not [begin, end]", NULL);
}

static void test_bad_size_mismatch(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("size.safetensors");
    write_raw(path,
              "{\"layer1.0.conv1.weight\":{\"dtype\":\"F32\",\"shape\":[64,64,1,1],"
              "\"data_offsets\":[0,100]}}",
              NULL, 100);
    expect_open_error(path,
                      "tensor 'layer1.0.conv1.weight': data_offsets [0, 100] hold 100 bytes "
                      "but shape [64,64,1,1] F32 needs 16384",
                      NULL);
}

static void test_bad_size_overflow(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("overflow.safetensors");
    write_raw(path,
              "{\"o\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],"
              "\"data_offsets\":[0,8]}}",
              NULL, 8);
    expect_open_error(path, "tensor 'o': shape [4294967296,4294967296] F64 overflows", NULL);
}

static void test_bad_offsets_gap(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("gap.safetensors");
    write_raw(path,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
              NULL, 12);
    expect_open_error(path, "tensor 'b': data_offsets [8, 12] begin at 8",
                      "'a' ends at 4: gap of 4 bytes", NULL);
}

static void test_bad_offsets_overlap(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("overlap.safetensors");
    /* header order differs from offset order: the reader sorts first */
    write_raw(path,
              "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
              NULL, 12);
    expect_open_error(path, "tensor 'b': data_offsets [4, 12] begin at 4",
                      "'a' ends at 8: overlap of 4 bytes", NULL);
}

static void test_bad_first_not_zero(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("first4.safetensors");
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", NULL, 8);
    expect_open_error(path, "tensor 'a': data_offsets [4, 8]", "must begin at 0, not 4", NULL);
}

static void test_bad_end_before_begin(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("backwards.safetensors");
    write_raw(path,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}",
              NULL, 4);
    expect_open_error(path, "tensor 'b': data_offsets [4, 0] end before they begin", NULL);
}

static void test_bad_trailing_bytes(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("trailing.safetensors");
    write_raw(path, ONE_F32, NULL, 7); /* data ends before EOF */
    expect_open_error(path, "tensors end at data offset 4 but the data section is 7 bytes",
                      "3 trailing bytes", NULL);
}

static void test_bad_data_past_eof(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("short_data.safetensors");
    write_raw(path, ONE_F32, NULL, 2); /* data would end after EOF */
    size_t hl = strlen(ONE_F32);
    char want[128];
    snprintf(want, sizeof want, "tensors end at data offset 4 (file offset %zu)", 8 + hl + 4);
    expect_open_error(path, want, "2 bytes missing", NULL);
}

static void test_bad_truncated(void **state)
{
    (void)state;
    float v[100];
    testutil_fill_uniform(v, 100, 3, -1.0f, 1.0f);
    StEntry e[] = {{.name = "a", .ndim = 2, .shape = {10, 5}, .data = v},
                   {.name = "b", .ndim = 1, .shape = {50}, .data = v + 50}};
    const char *path = testutil_tmp_path("truncated.safetensors");
    Error err = {{0}};
    assert_int_equal(safetensors_write(path, e, 2, NULL, 0, &err), 0);
    size_t len;
    uint8_t *buf = read_all(path, &len);
    size_t cut = len - 100; /* drop the last 100 bytes: 'b' is cut short */
    testutil_write_file(path, buf, cut);
    char want[160];
    snprintf(want, sizeof want, "tensors end at data offset 400 (file offset %zu) but the file "
             "is %zu bytes", len, cut);
    expect_open_error(path, want, "100 bytes missing", NULL);

    /* cut inside the header: the length prefix points past the end */
    testutil_write_file(path, buf, 20);
    snprintf(want, sizeof want, "file is 20 bytes but header says 8 + %llu",
             (unsigned long long)le64(buf));
    expect_open_error(path, want, NULL);
    free(buf);
}

static void test_bad_metadata_value(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("meta_int.safetensors");
    write_raw(path,
              "{\"__metadata__\":{\"format\":\"pt\",\"classes\":10},"
              "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
              NULL, 4);
    expect_open_error(path, "\"__metadata__\" key 'classes': value is not a string", NULL);
}

static void test_bad_metadata_not_object(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("meta_list.safetensors");
    write_raw(path, "{\"__metadata__\":[\"pt\"]}", NULL, 0);
    expect_open_error(path, "\"__metadata__\" is not a JSON object", NULL);
}

/* ---- writer failures -------------------------------------------------------- */

static void test_write_duplicate_names(void **state)
{
    (void)state;
    float v = 1.0f;
    StEntry e[] = {{.name = "w", .ndim = 1, .shape = {1}, .data = &v},
                   {.name = "w", .ndim = 1, .shape = {1}, .data = &v}};
    const char *path = testutil_tmp_path("dup_write.safetensors");
    Error err = {{0}};
    assert_int_equal(safetensors_write(path, e, 2, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate tensor name 'w'"));
    assert_int_equal(access(path, F_OK), -1);

    StEntry m = {.name = "__metadata__", .ndim = 0, .data = &v};
    assert_int_equal(safetensors_write(path, &m, 1, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "may not be named '__metadata__'"));
    const char *meta[] = {"k", "1", "k", "2"};
    assert_int_equal(safetensors_write(path, e, 1, meta, 2, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate metadata key 'k'"));
    StEntry neg = {.name = "n", .ndim = 2, .shape = {2, -3}, .data = &v};
    assert_int_equal(safetensors_write(path, &neg, 1, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "tensor 'n': shape[1] = -3 is negative"));
    assert_int_equal(access(path, F_OK), -1);
}

static void test_write_missing_dir(void **state)
{
    (void)state;
    float v = 1.0f;
    StEntry e = {.name = "w", .ndim = 1, .shape = {1}, .data = &v};
    char path[4096];
    snprintf(path, sizeof path, "%s/no-such-dir/out.safetensors", testutil_tmpdir());
    Error err = {{0}};
    assert_int_equal(safetensors_write(path, &e, 1, NULL, 0, &err), -1);
    print_message("  error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "No such file or directory"));
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/no-such-dir", testutil_tmpdir());
    assert_int_equal(access(dir, F_OK), -1);
}

/* rename onto a directory fails after the temporary file is written: it must be
 * removed again. */
static void test_write_rename_fails_cleans_up(void **state)
{
    (void)state;
    char dir[4096], target[4200];
    snprintf(dir, sizeof dir, "%s/renamefail", testutil_tmpdir());
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(target, sizeof target, "%s/target.safetensors", dir);
    assert_int_equal(mkdir(target, 0755), 0); /* a directory where the file should go */
    float v[4] = {1, 2, 3, 4};
    StEntry e = {.name = "w", .ndim = 1, .shape = {4}, .data = v};
    Error err = {{0}};
    assert_int_equal(safetensors_write(target, &e, 1, NULL, 0, &err), -1);
    print_message("  error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "cannot write"));
    assert_non_null(strstr(err.msg, target));
    assert_int_equal(count_dir_entries(dir), 1); /* only the directory itself */
    assert_int_equal(rmdir(target), 0);
}

/* A write that hits the file size limit (EFBIG) leaves the old file untouched
 * and no temporary file behind. */
static void test_write_io_error_keeps_old_file(void **state)
{
    (void)state;
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/iofail", testutil_tmpdir());
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    float small[2] = {5.0f, 6.0f};
    StEntry e_old = {.name = "old", .ndim = 1, .shape = {2}, .data = small};
    Error err = {{0}};
    assert_int_equal(safetensors_write(path, &e_old, 1, NULL, 0, &err), 0);

    enum { N = 1 << 16 };
    float *big = calloc(N, sizeof *big);
    assert_non_null(big);
    StEntry e_new = {.name = "new", .ndim = 1, .shape = {N}, .data = big};
    struct rlimit saved, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    lim = saved;
    lim.rlim_cur = 4096;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = safetensors_write(path, &e_new, 1, NULL, 0, &err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, old_handler);
    free(big);
    assert_int_equal(rc, -1);
    print_message("  error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "cannot write: File too large"));
    assert_int_equal(count_dir_entries(dir), 1);

    SafeTensors st;
    assert_int_equal(safetensors_open(&st, path, &err), 0);
    assert_int_equal(st.n_tensors, 1);
    assert_string_equal(st.tensors[0].name, "old");
    safetensors_close(&st);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty_file_round_trip),
        cmocka_unit_test(test_header_exact_bytes),
        cmocka_unit_test(test_header_padding),
        cmocka_unit_test(test_unaligned_data),
        cmocka_unit_test(test_f16_decode),
        cmocka_unit_test(test_bf16_decode),
        cmocka_unit_test(test_read_other_dtype_fails),
        cmocka_unit_test(test_close_zeroed),
        cmocka_unit_test(test_bad_missing_file),
        cmocka_unit_test(test_bad_empty_file),
        cmocka_unit_test(test_bad_7_bytes),
        cmocka_unit_test(test_bad_header_too_large),
        cmocka_unit_test(test_bad_header_past_eof),
        cmocka_unit_test(test_bad_invalid_json),
        cmocka_unit_test(test_bad_invalid_utf8),
        cmocka_unit_test(test_bad_not_object),
        cmocka_unit_test(test_bad_duplicate_names),
        cmocka_unit_test(test_bad_unknown_dtype),
        cmocka_unit_test(test_bad_missing_shape),
        cmocka_unit_test(test_bad_negative_dim),
        cmocka_unit_test(test_bad_too_many_dims),
        cmocka_unit_test(test_bad_offsets_not_pair),
        cmocka_unit_test(test_bad_size_mismatch),
        cmocka_unit_test(test_bad_size_overflow),
        cmocka_unit_test(test_bad_offsets_gap),
        cmocka_unit_test(test_bad_offsets_overlap),
        cmocka_unit_test(test_bad_first_not_zero),
        cmocka_unit_test(test_bad_end_before_begin),
        cmocka_unit_test(test_bad_trailing_bytes),
        cmocka_unit_test(test_bad_data_past_eof),
        cmocka_unit_test(test_bad_truncated),
        cmocka_unit_test(test_bad_metadata_value),
        cmocka_unit_test(test_bad_metadata_not_object),
        cmocka_unit_test(test_write_duplicate_names),
        cmocka_unit_test(test_write_missing_dir),
        cmocka_unit_test(test_write_rename_fails_cleans_up),
        cmocka_unit_test(test_write_io_error_keeps_old_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
