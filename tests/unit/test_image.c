/*
 * test_image.c: unit tests of core/image (cmocka).
 *
 * Every fixture is made here with libpng's and libjpeg's own encoders (small
 * writers below), so the tests know every pixel that was written:
 * - PNG: each colour type and bit depth (gray 1/2/4/8/16, gray+alpha 8/16,
 *   palette 1/2/4/8 with and without tRNS, RGB 8/16 with and without tRNS,
 *   RGBA 8/16, Adam7-interlaced) at 1x1, 7x5, 33x17 and 64x64, decoded pixels
 *   compared exactly against an independent expansion of the written samples
 *   (low depths scaled by 255/(2^d-1), 16-bit to the high byte);
 * - JPEG: gray, RGB baseline (YCbCr and RGB-stored), progressive, CMYK with and
 *   without the Adobe marker, YCCK, compared with a tolerance (lossy);
 * - broken input: truncated and corrupted files, decompression bombs (a header
 *   announcing 10^10 pixels must be refused at once), wrong or missing files,
 *   each with the expected words in the error and an empty Image afterwards;
 * - image_probe on headers and file prefixes, and image_write_png round trips.
 */
#include <dirent.h>
#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h>

#include "image.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------- */

typedef struct {
    uint8_t *data;
    size_t len, cap;
} Buf;

static void buf_put(Buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->data = realloc(b->data, cap);
        assert_non_null(b->data);
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static Buf buf_copy(const uint8_t *p, size_t n)
{
    Buf b = {0};
    buf_put(&b, p, n);
    return b;
}

static void buf_free(Buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Fails unless msg contains every one of the NULL-terminated substrings. */
static void assert_msg_has_v(const char *msg, va_list ap)
{
    for (const char *s; (s = va_arg(ap, const char *));) {
        if (!strstr(msg, s)) {
            print_error("error message \"%s\" lacks \"%s\"\n", msg, s);
            fail();
        }
    }
}

static void assert_image_empty(const Image *img)
{
    assert_null(img->rgb);
    assert_int_equal(img->width, 0);
    assert_int_equal(img->height, 0);
    assert_int_equal(img->format, IMAGE_UNKNOWN);
    assert_int_equal(img->source_channels, 0);
    assert_int_equal(img->had_alpha, 0);
    assert_int_equal(img->was_gray, 0);
    assert_int_equal(img->bit_depth, 0);
}

/* Decodes expecting failure: the Image must come back empty and the message must
 * hold every NULL-terminated substring. */
static void expect_decode_error(const uint8_t *data, size_t len, uint64_t max_pixels, ...)
{
    Image img;
    memset(&img, 0x5a, sizeof img); /* garbage in: decode must reset it */
    Error err = {{0}};
    assert_int_equal(image_decode(&img, data, len, max_pixels, &err), -1);
    print_message("  error: %s\n", err.msg);
    assert_image_empty(&img);
    va_list ap;
    va_start(ap, max_pixels);
    assert_msg_has_v(err.msg, ap);
    va_end(ap);
    image_free(&img);
}

/* Same for image_load; the message must also start with the path. */
static void expect_load_error(const char *path, ...)
{
    Image img;
    memset(&img, 0x5a, sizeof img);
    Error err = {{0}};
    assert_int_equal(image_load(&img, path, 0, &err), -1);
    print_message("  error: %s\n", err.msg);
    assert_image_empty(&img);
    assert_int_equal(strncmp(err.msg, path, strlen(path)), 0);
    va_list ap;
    va_start(ap, path);
    assert_msg_has_v(err.msg, ap);
    va_end(ap);
}

static void expect_probe_error(const uint8_t *data, size_t len, ...)
{
    ImageFormat f = IMAGE_PNG;
    int w = 7, h = 7;
    Error err = {{0}};
    assert_int_equal(image_probe(data, len, &f, &w, &h, &err), -1);
    print_message("  error: %s\n", err.msg);
    assert_int_equal(f, IMAGE_UNKNOWN);
    assert_int_equal(w, 0);
    assert_int_equal(h, 0);
    va_list ap;
    va_start(ap, len);
    assert_msg_has_v(err.msg, ap);
    va_end(ap);
}

static const int sizes[][2] = {{1, 1}, {7, 5}, {33, 17}, {64, 64}};
#define N_SIZES ((int)(sizeof sizes / sizeof sizes[0]))

/* ---- PNG fixtures ----------------------------------------------------------- */

typedef struct {
    int width, height, color_type, bit_depth, interlace;
    const uint16_t *samples; /* width*height*channels, each < 2^bit_depth (palette: index) */
    const png_color *palette;
    int n_palette;
    const png_byte *trans; /* palette alphas */
    int n_trans;
    const png_color_16 *trans_color; /* gray or RGB tRNS */
} PngSpec;

static int png_spec_channels(int color_type)
{
    switch (color_type) {
    case PNG_COLOR_TYPE_GRAY: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_PALETTE: return 1;
    case PNG_COLOR_TYPE_RGB: return 3;
    default: return 4;
    }
}

static void png_put(png_structp png, png_bytep p, size_t n)
{
    buf_put(png_get_io_ptr(png), p, n);
}

static void png_noflush(png_structp png)
{
    (void)png;
}

/* Encodes s with libpng. Samples below 8 bits go one per byte (png_set_packing),
 * 16-bit ones big-endian. */
static Buf png_encode(const PngSpec *s)
{
    Buf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    assert_non_null(png);
    png_infop info = png_create_info_struct(png);
    assert_non_null(info);
    int ch = png_spec_channels(s->color_type);
    size_t n_row = (size_t)s->width * ch;
    uint8_t *row = malloc(n_row * 2);
    assert_non_null(row);
    if (setjmp(png_jmpbuf(png))) /* nothing is read after the jump: no clobbering */
        fail_msg("libpng could not write the fixture");
    png_set_write_fn(png, &b, png_put, png_noflush);
    png_set_IHDR(png, info, (png_uint_32)s->width, (png_uint_32)s->height, s->bit_depth,
                 s->color_type, s->interlace, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (s->palette)
        png_set_PLTE(png, info, s->palette, s->n_palette);
    if (s->trans || s->trans_color)
        png_set_tRNS(png, info, s->trans, s->n_trans, s->trans_color);
    png_write_info(png, info);
    if (s->bit_depth < 8)
        png_set_packing(png);
    int passes = png_set_interlace_handling(png);
    for (int pass = 0; pass < passes; pass++) {
        for (int y = 0; y < s->height; y++) {
            const uint16_t *src = s->samples + n_row * y;
            for (size_t i = 0; i < n_row; i++) {
                if (s->bit_depth == 16) {
                    row[2 * i] = (uint8_t)(src[i] >> 8);
                    row[2 * i + 1] = (uint8_t)src[i];
                } else {
                    row[i] = (uint8_t)src[i];
                }
            }
            png_write_row(png, row);
        }
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(row);
    return b;
}

/* A gray level of bit depth d as 8 bits, as the PNG spec's expansion does. */
static uint8_t png_scale(unsigned v, int depth)
{
    if (depth == 16)
        return (uint8_t)(v >> 8);
    if (depth == 8)
        return (uint8_t)v;
    return (uint8_t)(v * 255 / ((1u << depth) - 1));
}

/* The RGB8 image a PNG of spec s must decode to (alpha and tRNS dropped). */
static uint8_t *png_expected(const PngSpec *s)
{
    size_t n = (size_t)s->width * s->height;
    int ch = png_spec_channels(s->color_type);
    uint8_t *rgb = malloc(3 * n);
    assert_non_null(rgb);
    for (size_t i = 0; i < n; i++) {
        const uint16_t *p = s->samples + ch * i;
        uint8_t *o = rgb + 3 * i;
        if (s->color_type == PNG_COLOR_TYPE_PALETTE) {
            assert_true(p[0] < s->n_palette);
            o[0] = s->palette[p[0]].red;
            o[1] = s->palette[p[0]].green;
            o[2] = s->palette[p[0]].blue;
        } else if (ch <= 2) {
            o[0] = o[1] = o[2] = png_scale(p[0], s->bit_depth);
        } else {
            for (int c = 0; c < 3; c++)
                o[c] = png_scale(p[c], s->bit_depth);
        }
    }
    return rgb;
}

/* width*height*channels random samples below `bound`. */
static uint16_t *random_samples(int w, int h, int ch, unsigned bound, uint64_t seed)
{
    size_t n = (size_t)w * h * ch;
    uint16_t *v = malloc(n * sizeof *v);
    assert_non_null(v);
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < n; i++)
        v[i] = (uint16_t)(rng_next(&s) % bound);
    return v;
}

static void compare_exact(const uint8_t *got, const uint8_t *want, int w, int h, const char *what)
{
    size_t n = (size_t)w * h * 3;
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            print_error("%s %dx%d: byte %zu (pixel %zu channel %zu) is %d, want %d\n", what, w, h,
                        i, i / 3, i % 3, got[i], want[i]);
            fail();
        }
    }
}

/* Encodes s, decodes it and checks every pixel and flag; also probes it. */
static void check_png(const PngSpec *s, int want_gray, int want_alpha, int want_channels,
                      const char *what)
{
    Buf b = png_encode(s);
    Image img;
    Error err = {{0}};
    if (image_decode(&img, b.data, b.len, 0, &err) != 0)
        fail_msg("%s %dx%d: %s", what, s->width, s->height, err.msg);
    assert_int_equal(img.format, IMAGE_PNG);
    assert_int_equal(img.width, s->width);
    assert_int_equal(img.height, s->height);
    assert_int_equal(img.bit_depth, s->bit_depth);
    assert_int_equal(img.was_gray, want_gray);
    assert_int_equal(img.had_alpha, want_alpha);
    assert_int_equal(img.source_channels, want_channels);
    uint8_t *want = png_expected(s);
    compare_exact(img.rgb, want, s->width, s->height, what);
    free(want);
    image_free(&img);
    assert_null(img.rgb);

    ImageFormat f;
    int w, h;
    assert_int_equal(image_probe(b.data, b.len, &f, &w, &h, &err), 0);
    assert_int_equal(f, IMAGE_PNG);
    assert_int_equal(w, s->width);
    assert_int_equal(h, s->height);
    buf_free(&b);
}

/* A random palette of n entries. */
static png_color *random_palette(int n, uint64_t seed)
{
    png_color *p = malloc(sizeof *p * (size_t)n);
    assert_non_null(p);
    uint64_t s = seed + 77;
    for (int i = 0; i < n; i++) {
        uint64_t r = rng_next(&s);
        p[i].red = (png_byte)r;
        p[i].green = (png_byte)(r >> 8);
        p[i].blue = (png_byte)(r >> 16);
    }
    return p;
}

/* Offset of the first chunk of the given type (its length field). */
static size_t png_find_chunk(const Buf *b, const char *type)
{
    size_t pos = 8;
    while (pos + 12 <= b->len) {
        uint32_t n = be32(b->data + pos);
        if (memcmp(b->data + pos + 4, type, 4) == 0)
            return pos;
        pos += 12 + (size_t)n;
    }
    fail_msg("no %s chunk", type);
    return 0;
}

/* Recomputes the CRC of the chunk at off. */
static void png_fix_crc(Buf *b, size_t off)
{
    uint32_t n = be32(b->data + off);
    uint32_t crc = (uint32_t)crc32(crc32(0, NULL, 0), b->data + off + 4, 4 + n);
    put_be32(b->data + off + 8 + n, crc);
}

/* Appends a chunk with its CRC. */
static void png_put_chunk(Buf *b, const char *type, const uint8_t *data, uint32_t n)
{
    uint8_t hdr[8];
    put_be32(hdr, n);
    memcpy(hdr + 4, type, 4);
    size_t off = b->len;
    buf_put(b, hdr, 8);
    if (n)
        buf_put(b, data, n);
    uint8_t crc[4] = {0};
    buf_put(b, crc, 4);
    png_fix_crc(b, off);
}

/* A PNG that is only a signature, an IHDR and a few bytes of (garbage) IDAT. */
static Buf png_header_only(uint32_t w, uint32_t h, int depth, int ctype)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    Buf b = {0};
    buf_put(&b, sig, 8);
    uint8_t ihdr[13] = {0};
    put_be32(ihdr, w);
    put_be32(ihdr + 4, h);
    ihdr[8] = (uint8_t)depth;
    ihdr[9] = (uint8_t)ctype;
    png_put_chunk(&b, "IHDR", ihdr, 13);
    static const uint8_t idat[16] = {0x78, 0x9c, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
    png_put_chunk(&b, "IDAT", idat, sizeof idat);
    png_put_chunk(&b, "IEND", NULL, 0);
    return b;
}

/* A 33x17 RGB8 PNG of random pixels (the base of the broken-file tests). */
static Buf png_rgb_fixture(int w, int h, uint16_t **samples_out)
{
    uint16_t *v = random_samples(w, h, 3, 256, 99);
    PngSpec s = {.width = w, .height = h, .color_type = PNG_COLOR_TYPE_RGB, .bit_depth = 8,
                 .samples = v};
    Buf b = png_encode(&s);
    if (samples_out)
        *samples_out = v;
    else
        free(v);
    return b;
}

/* ---- PNG: every colour type and depth ----------------------------------------- */

static void test_sniff_and_names(void **state)
{
    (void)state;
    static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    static const uint8_t jpg[3] = {0xff, 0xd8, 0xff};
    assert_int_equal(image_sniff(png, 8), IMAGE_PNG);
    assert_int_equal(image_sniff(png, 7), IMAGE_UNKNOWN);
    assert_int_equal(image_sniff(jpg, 3), IMAGE_JPEG);
    assert_int_equal(image_sniff(jpg, 2), IMAGE_UNKNOWN);
    assert_int_equal(image_sniff((const uint8_t *)"GIF89a", 6), IMAGE_UNKNOWN);
    assert_int_equal(image_sniff(NULL, 0), IMAGE_UNKNOWN);
    assert_string_equal(image_format_name(IMAGE_PNG), "PNG");
    assert_string_equal(image_format_name(IMAGE_JPEG), "JPEG");
    assert_string_equal(image_format_name(IMAGE_UNKNOWN), "unknown");
    image_free(NULL);
}

static void test_png_gray(void **state)
{
    (void)state;
    static const int depths[] = {1, 2, 4, 8, 16};
    for (int d = 0; d < 5; d++) {
        for (int k = 0; k < N_SIZES; k++) {
            int w = sizes[k][0], h = sizes[k][1], depth = depths[d];
            uint16_t *v = random_samples(w, h, 1, 1u << depth, (uint64_t)(d * 10 + k));
            PngSpec s = {.width = w, .height = h, .color_type = PNG_COLOR_TYPE_GRAY,
                         .bit_depth = depth, .samples = v};
            check_png(&s, 1, 0, 1, "gray");
            free(v);
        }
    }
}

/* 16-bit samples become their high byte, not round(v * 255 / 65535): values
 * chosen where the two differ. */
static void test_png_16bit_is_high_byte(void **state)
{
    (void)state;
    static const uint16_t v[4] = {0x80ff, 0x7f80, 0xffff, 0x00ff};
    PngSpec s = {.width = 4, .height = 1, .color_type = PNG_COLOR_TYPE_GRAY, .bit_depth = 16,
                 .samples = v};
    Buf b = png_encode(&s);
    Image img;
    Error err = {{0}};
    assert_int_equal(image_decode(&img, b.data, b.len, 0, &err), 0);
    static const uint8_t want[12] = {0x80, 0x80, 0x80, 0x7f, 0x7f, 0x7f,
                                     0xff, 0xff, 0xff, 0x00, 0x00, 0x00};
    assert_memory_equal(img.rgb, want, 12);
    image_free(&img);
    buf_free(&b);
}

static void test_png_gray_alpha(void **state)
{
    (void)state;
    for (int depth = 8; depth <= 16; depth += 8) {
        for (int k = 0; k < N_SIZES; k++) {
            int w = sizes[k][0], h = sizes[k][1];
            uint16_t *v = random_samples(w, h, 2, 1u << depth, (uint64_t)(depth + k));
            PngSpec s = {.width = w, .height = h, .color_type = PNG_COLOR_TYPE_GRAY_ALPHA,
                         .bit_depth = depth, .samples = v};
            check_png(&s, 1, 1, 2, "gray+alpha");
            free(v);
        }
    }
}

/* A tRNS colour key counts as alpha (had_alpha, 2 or 4 source channels). */
static void test_png_colour_key_trns(void **state)
{
    (void)state;
    for (int depth = 8; depth <= 16; depth += 8) {
        for (int k = 0; k < N_SIZES; k++) {
            int w = sizes[k][0], h = sizes[k][1];
            unsigned bound = 1u << depth;
            uint16_t *g = random_samples(w, h, 1, bound, (uint64_t)(depth * 3 + k));
            png_color_16 key = {.gray = g[0]}; /* the first pixel is transparent */
            PngSpec s = {.width = w, .height = h, .color_type = PNG_COLOR_TYPE_GRAY,
                         .bit_depth = depth, .samples = g, .trans_color = &key};
            check_png(&s, 1, 1, 2, "gray+tRNS");
            free(g);
            uint16_t *c = random_samples(w, h, 3, bound, (uint64_t)(depth * 5 + k));
            png_color_16 rgb_key = {.red = c[0], .green = c[1], .blue = c[2]};
            PngSpec t = {.width = w, .height = h, .color_type = PNG_COLOR_TYPE_RGB,
                         .bit_depth = depth, .samples = c, .trans_color = &rgb_key};
            check_png(&t, 0, 1, 4, "RGB+tRNS");
            free(c);
        }
    }
}

static void test_png_palette(void **state)
{
    (void)state;
    static const int depths[] = {1, 2, 4, 8};
    for (int d = 0; d < 4; d++) {
        for (int with_trns = 0; with_trns < 2; with_trns++) {
            for (int k = 0; k < N_SIZES; k++) {
                int w = sizes[k][0], h = sizes[k][1], depth = depths[d];
                int n_pal = depth == 8 ? 200 : 1 << depth; /* 8-bit: a partial palette */
                png_color *pal = random_palette(n_pal, (uint64_t)(d * 7 + k));
                uint16_t *idx = random_samples(w, h, 1, (unsigned)n_pal, (uint64_t)(d + 5 * k));
                png_byte alphas[256];
                for (int i = 0; i < 256; i++)
                    alphas[i] = (png_byte)(i * 37);
                PngSpec s = {.width = w, .height = h, .color_type = PNG_COLOR_TYPE_PALETTE,
                             .bit_depth = depth, .samples = idx, .palette = pal,
                             .n_palette = n_pal, .trans = with_trns ? alphas : NULL,
                             .n_trans = with_trns ? (n_pal + 1) / 2 : 0};
                check_png(&s, 0, with_trns, with_trns ? 4 : 3,
                          with_trns ? "palette+tRNS" : "palette");
                free(idx);
                free(pal);
            }
        }
    }
}

static void test_png_rgb_and_rgba(void **state)
{
    (void)state;
    for (int depth = 8; depth <= 16; depth += 8) {
        for (int k = 0; k < N_SIZES; k++) {
            int w = sizes[k][0], h = sizes[k][1];
            uint16_t *c = random_samples(w, h, 3, 1u << depth, (uint64_t)(depth * 11 + k));
            PngSpec s = {.width = w, .height = h, .color_type = PNG_COLOR_TYPE_RGB,
                         .bit_depth = depth, .samples = c};
            check_png(&s, 0, 0, 3, "RGB");
            free(c);
            uint16_t *a = random_samples(w, h, 4, 1u << depth, (uint64_t)(depth * 13 + k));
            PngSpec t = {.width = w, .height = h, .color_type = PNG_COLOR_TYPE_RGB_ALPHA,
                         .bit_depth = depth, .samples = a};
            check_png(&t, 0, 1, 4, "RGBA");
            free(a);
        }
    }
}

static void test_png_interlaced(void **state)
{
    (void)state;
    static const struct {
        int ctype, depth, ch;
    } kinds[] = {
        {PNG_COLOR_TYPE_RGB, 8, 3},
        {PNG_COLOR_TYPE_GRAY, 1, 1},
        {PNG_COLOR_TYPE_PALETTE, 4, 1},
        {PNG_COLOR_TYPE_RGB_ALPHA, 16, 4},
    };
    for (int t = 0; t < 4; t++) {
        for (int k = 0; k < N_SIZES; k++) {
            int w = sizes[k][0], h = sizes[k][1];
            int pal = kinds[t].ctype == PNG_COLOR_TYPE_PALETTE;
            png_color *palette = pal ? random_palette(16, (uint64_t)k) : NULL;
            unsigned bound = pal ? 16u : 1u << kinds[t].depth;
            uint16_t *v = random_samples(w, h, kinds[t].ch, bound, (uint64_t)(t * 17 + k));
            PngSpec s = {.width = w, .height = h, .color_type = kinds[t].ctype,
                         .bit_depth = kinds[t].depth, .interlace = PNG_INTERLACE_ADAM7,
                         .samples = v, .palette = palette, .n_palette = pal ? 16 : 0};
            int gray = kinds[t].ctype == PNG_COLOR_TYPE_GRAY;
            int alpha = kinds[t].ctype == PNG_COLOR_TYPE_RGB_ALPHA;
            check_png(&s, gray, alpha, gray ? 1 : alpha ? 4 : 3, "interlaced");
            free(v);
            free(palette);
        }
    }
}

/* Ancillary chunks other than tRNS are skipped unread: a malformed gAMA (which
 * libpng would report as a benign error, fatal here) and a tEXt do not matter. */
static void test_png_ignores_ancillary_chunks(void **state)
{
    (void)state;
    uint16_t *v;
    Buf good = png_rgb_fixture(7, 5, &v);
    Buf b = {0};
    buf_put(&b, good.data, 33); /* signature + IHDR */
    static const uint8_t bad_gama[3] = {1, 2, 3};
    png_put_chunk(&b, "gAMA", bad_gama, 3);
    png_put_chunk(&b, "tEXt", (const uint8_t *)"Comment\0hello", 13);
    buf_put(&b, good.data + 33, good.len - 33);
    Image img;
    Error err = {{0}};
    if (image_decode(&img, b.data, b.len, 0, &err) != 0)
        fail_msg("%s", err.msg);
    PngSpec s = {.width = 7, .height = 5, .color_type = PNG_COLOR_TYPE_RGB, .bit_depth = 8,
                 .samples = v};
    uint8_t *want = png_expected(&s);
    compare_exact(img.rgb, want, 7, 5, "with extra chunks");
    free(want);
    image_free(&img);
    buf_free(&b);
    buf_free(&good);
    free(v);
}

/* The pixel limit: exactly max_pixels passes, one more fails and names both. */
static void test_max_pixels_boundary(void **state)
{
    (void)state;
    Buf b = png_rgb_fixture(7, 5, NULL);
    Image img;
    Error err = {{0}};
    assert_int_equal(image_decode(&img, b.data, b.len, 35, &err), 0);
    image_free(&img);
    expect_decode_error(b.data, b.len, 34, "PNG: image is 7x5 = 35 pixels, over the limit of 34",
                        NULL);
    buf_free(&b);
}

/* ---- PNG: broken files -------------------------------------------------------- */

static void test_png_truncated(void **state)
{
    (void)state;
    Buf b = png_rgb_fixture(64, 64, NULL);
    size_t idat = png_find_chunk(&b, "IDAT");
    size_t idat_len = be32(b.data + idat);
    assert_true(idat_len > 100);
    size_t iend = png_find_chunk(&b, "IEND");
    const size_t cuts[] = {
        8,                       /* signature only */
        20,                      /* inside IHDR */
        33,                      /* signature + IHDR: header only */
        idat + 4,                /* inside the IDAT length/type */
        idat + 8 + idat_len / 2, /* mid-IDAT */
        idat + 8 + idat_len,     /* IDAT without its CRC */
        iend,                    /* no IEND */
        b.len - 1,               /* IEND's CRC short by one byte */
    };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        print_message("  cut at %zu of %zu\n", cuts[i], b.len);
        expect_decode_error(b.data, cuts[i], 0, "PNG: Read Error: truncated", NULL);
    }
    /* a 4-byte prefix is no longer recognisable as a PNG */
    expect_decode_error(b.data, 4, 0, "not a PNG or JPEG file (first bytes: 89 50 4e 47)", NULL);
    buf_free(&b);
}

/* A wrong CRC on intact data is an error; so is damaged data under the old CRC,
 * which zlib may notice before libpng reaches the CRC. */
static void test_png_idat_crc(void **state)
{
    (void)state;
    Buf b = png_rgb_fixture(33, 17, NULL);
    size_t idat = png_find_chunk(&b, "IDAT");
    uint32_t n = be32(b.data + idat);
    Buf c = buf_copy(b.data, b.len);
    c.data[idat + 8 + n] ^= 0x10;
    expect_decode_error(c.data, c.len, 0, "PNG: IDAT: CRC error", NULL);
    buf_free(&c);
    c = buf_copy(b.data, b.len);
    c.data[idat + 8 + n / 2] ^= 0x10;
    expect_decode_error(c.data, c.len, 0, "PNG: IDAT: ", NULL);
    buf_free(&c);
    buf_free(&b);
}

/* Damaged zlib data behind a valid CRC: zlib's own messages come through. */
static void test_png_idat_data(void **state)
{
    (void)state;
    Buf b = png_rgb_fixture(33, 17, NULL);
    size_t idat = png_find_chunk(&b, "IDAT");
    uint32_t n = be32(b.data + idat);

    Buf c = buf_copy(b.data, b.len); /* Adler-32 trailer wrong */
    c.data[idat + 8 + n - 1] ^= 0x01;
    png_fix_crc(&c, idat);
    expect_decode_error(c.data, c.len, 0, "PNG: IDAT: incorrect data check", NULL);
    buf_free(&c);

    /* The Adler-32 trailer alone in a last IDAT chunk: libpng meets it after the
     * last row, where it is only a "benign" error unless those are made fatal. */
    c = (Buf){0};
    buf_put(&c, b.data, idat);
    png_put_chunk(&c, "IDAT", b.data + idat + 8, n - 4);
    uint8_t adler[4];
    memcpy(adler, b.data + idat + 8 + n - 4, 4);
    adler[3] ^= 0x01;
    png_put_chunk(&c, "IDAT", adler, 4);
    png_put_chunk(&c, "IEND", NULL, 0);
    expect_decode_error(c.data, c.len, 0, "PNG: IDAT: incorrect data check", NULL);
    adler[3] ^= 0x01; /* the same split with the right trailer decodes */
    memcpy(c.data + idat + 12 + n - 4 + 8, adler, 4);
    png_fix_crc(&c, idat + 12 + n - 4);
    Image img;
    Error err = {{0}};
    if (image_decode(&img, c.data, c.len, 0, &err) != 0)
        fail_msg("%s", err.msg);
    image_free(&img);
    buf_free(&c);

    c = buf_copy(b.data, b.len); /* a deflate block type that does not exist */
    c.data[idat + 8 + 2] |= 0x06;
    png_fix_crc(&c, idat);
    expect_decode_error(c.data, c.len, 0, "PNG: IDAT: invalid block type", NULL);
    buf_free(&c);
    buf_free(&b);
}

static void test_png_bomb(void **state)
{
    (void)state;
    Buf b = png_header_only(100000, 100000, 8, PNG_COLOR_TYPE_RGB);
    double t0 = now_s();
    expect_decode_error(b.data, b.len, 50000000,
                        "PNG: image is 100000x100000 = 10000000000 pixels, over the limit of "
                        "50000000",
                        NULL);
    double dt = now_s() - t0;
    print_message("  refused in %.2f ms\n", dt * 1e3);
    assert_true(dt < 0.25);

    /* the header alone is enough for a probe, which does not apply max_pixels */
    ImageFormat f;
    int w, h;
    Error err = {{0}};
    assert_int_equal(image_probe(b.data, 33, &f, &w, &h, &err), 0);
    assert_int_equal(f, IMAGE_PNG);
    assert_int_equal(w, 100000);
    assert_int_equal(h, 100000);
    buf_free(&b);
}

static void test_png_bad_sizes(void **state)
{
    (void)state;
    Buf b = png_header_only(2000000, 1, 8, PNG_COLOR_TYPE_GRAY); /* past the side limit */
    expect_decode_error(b.data, b.len, 0,
                        "PNG: invalid image size 2000000x1 (each side must be 1..1048576)", NULL);
    expect_probe_error(b.data, b.len, "PNG: invalid image size 2000000x1", NULL);
    buf_free(&b);
    b = png_header_only(0, 5, 8, PNG_COLOR_TYPE_GRAY); /* libpng's own check */
    expect_decode_error(b.data, b.len, 0, "PNG: Invalid IHDR data", NULL);
    expect_probe_error(b.data, b.len, "PNG: invalid image size 0x5", NULL);
    buf_free(&b);
    b = png_header_only(5, 5, 3, PNG_COLOR_TYPE_GRAY); /* no 3-bit depth */
    expect_decode_error(b.data, b.len, 0, "PNG: Invalid IHDR data", NULL);
    buf_free(&b);
}

/* ---- JPEG fixtures ------------------------------------------------------------ */

typedef struct {
    int width, height, components;
    J_COLOR_SPACE in_space;
    J_COLOR_SPACE jpeg_space; /* JCS_UNKNOWN: the library's default for in_space */
    int quality, progressive;
    int adobe; /* -1 the library's default, 0 no Adobe marker, 1 one */
    const uint8_t *pixels; /* width*height*components */
} JpegSpec;

static void jpeg_test_error(j_common_ptr c)
{
    char msg[JMSG_LENGTH_MAX];
    c->err->format_message(c, msg);
    fail_msg("libjpeg could not write the fixture: %s", msg);
}

static Buf jpeg_encode(const JpegSpec *s)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jerr.error_exit = jpeg_test_error;
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    unsigned long out_len = 0;
    jpeg_mem_dest(&c, &out, &out_len);
    c.image_width = (JDIMENSION)s->width;
    c.image_height = (JDIMENSION)s->height;
    c.input_components = s->components;
    c.in_color_space = s->in_space;
    jpeg_set_defaults(&c);
    if (s->jpeg_space != JCS_UNKNOWN)
        jpeg_set_colorspace(&c, s->jpeg_space);
    if (s->adobe >= 0)
        c.write_Adobe_marker = (boolean)s->adobe;
    jpeg_set_quality(&c, s->quality, TRUE);
    if (s->progressive)
        jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    size_t stride = (size_t)s->width * s->components;
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(s->pixels + stride * c.next_scanline);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    Buf b = {out, out_len, out_len}; /* malloc'd by jpeg_mem_dest */
    return b;
}

/* Smooth gradients, a different one per channel, at most about 4 levels per
 * pixel (JPEG keeps them well, chroma subsampling included). */
static uint8_t *smooth_pixels(int w, int h, int ch)
{
    uint8_t *p = malloc((size_t)w * h * ch);
    assert_non_null(p);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            double fx = w > 1 ? (double)x / (w - 1 > 40 ? w - 1 : 40) : 0.5;
            double fy = h > 1 ? (double)y / (h - 1 > 40 ? h - 1 : 40) : 0.5;
            for (int c = 0; c < ch; c++) {
                double t = c == 0 ? fx : c == 1 ? fy : c == 2 ? (fx + fy) / 2 : 1 - fx / 2;
                if (ch == 1)
                    t = (fx + fy) / 2;
                p[((size_t)y * w + x) * ch + c] = (uint8_t)(40 + 170 * t + 0.5);
            }
        }
    }
    return p;
}

/* Mean and max |got - want| over n bytes, asserted <= the bounds. */
static void assert_near(const uint8_t *got, const uint8_t *want, size_t n, double mean_tol,
                        int max_tol, const char *what)
{
    double sum = 0;
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)want[i]);
        sum += d;
        if (d > worst)
            worst = d;
    }
    double mean = sum / (double)n;
    print_message("  %-28s mean |err| %.3f, max %d\n", what, mean, worst);
    if (!(mean <= mean_tol) || worst > max_tol) {
        print_error("%s: mean |err| %.3f (tolerance %.1f), max %d (tolerance %d)\n", what, mean,
                    mean_tol, worst, max_tol);
        fail();
    }
}

/* The RGB a CMYK JPEG of these stored values must give (see image.h). */
static uint8_t *cmyk_expected(const uint8_t *cmyk, size_t n, int adobe)
{
    uint8_t *rgb = malloc(3 * n);
    assert_non_null(rgb);
    for (size_t i = 0; i < n; i++) {
        double k = adobe ? cmyk[4 * i + 3] : 255 - cmyk[4 * i + 3];
        for (int c = 0; c < 3; c++) {
            double v = adobe ? cmyk[4 * i + c] : 255 - cmyk[4 * i + c];
            rgb[3 * i + c] = (uint8_t)(v * k / 255.0 + 0.5);
        }
    }
    return rgb;
}

/* Encodes s at every test size, decodes, checks the flags and the pixels against
 * want (the RGB the written pixels stand for) within the tolerances. */
static void check_jpeg(JpegSpec s, int want_channels, int want_gray, const char *what)
{
    for (int k = 0; k < N_SIZES; k++) {
        s.width = sizes[k][0];
        s.height = sizes[k][1];
        size_t n = (size_t)s.width * s.height;
        uint8_t *px = smooth_pixels(s.width, s.height, s.components);
        s.pixels = px;
        uint8_t *want;
        if (s.components == 4) {
            want = cmyk_expected(px, n, s.adobe != 0);
        } else {
            want = malloc(3 * n);
            assert_non_null(want);
            for (size_t i = 0; i < n; i++)
                for (int c = 0; c < 3; c++)
                    want[3 * i + c] = px[i * s.components + (s.components == 1 ? 0 : c)];
        }
        Buf b = jpeg_encode(&s);
        Image img;
        Error err = {{0}};
        if (image_decode(&img, b.data, b.len, 0, &err) != 0)
            fail_msg("%s %dx%d: %s", what, s.width, s.height, err.msg);
        assert_int_equal(img.format, IMAGE_JPEG);
        assert_int_equal(img.width, s.width);
        assert_int_equal(img.height, s.height);
        assert_int_equal(img.bit_depth, 8);
        assert_int_equal(img.source_channels, want_channels);
        assert_int_equal(img.was_gray, want_gray);
        assert_int_equal(img.had_alpha, 0);
        char label[64];
        snprintf(label, sizeof label, "%s %dx%d", what, s.width, s.height);
        assert_near(img.rgb, want, 3 * n, 3.0, 8, label);
        if (want_gray)
            for (size_t i = 0; i < n; i++) /* gray is replicated, exactly */
                assert_true(img.rgb[3 * i] == img.rgb[3 * i + 1] &&
                            img.rgb[3 * i] == img.rgb[3 * i + 2]);
        ImageFormat f;
        int w, h;
        assert_int_equal(image_probe(b.data, b.len, &f, &w, &h, &err), 0);
        assert_int_equal(f, IMAGE_JPEG);
        assert_int_equal(w, s.width);
        assert_int_equal(h, s.height);
        image_free(&img);
        buf_free(&b);
        free(want);
        free(px);
    }
}

/* Offset of the first marker m (0xFFm) found by walking the segments after SOI. */
static size_t jpeg_find_marker(const Buf *b, int m)
{
    size_t pos = 2;
    while (pos + 4 <= b->len) {
        assert_int_equal(b->data[pos], 0xff);
        if (b->data[pos + 1] == m)
            return pos;
        pos += 2 + ((size_t)b->data[pos + 2] << 8 | b->data[pos + 3]);
    }
    fail_msg("no marker 0xff%02x", m);
    return 0;
}

static Buf jpeg_rgb_fixture(int w, int h, int progressive)
{
    uint8_t *px = smooth_pixels(w, h, 3);
    JpegSpec s = {.width = w, .height = h, .components = 3, .in_space = JCS_RGB, .quality = 95,
                  .progressive = progressive, .adobe = -1, .pixels = px};
    Buf b = jpeg_encode(&s);
    free(px);
    return b;
}

/* ---- JPEG: colour spaces ------------------------------------------------------ */

static void test_jpeg_gray(void **state)
{
    (void)state;
    JpegSpec s = {.components = 1, .in_space = JCS_GRAYSCALE, .quality = 95, .adobe = -1};
    check_jpeg(s, 1, 1, "gray");
}

static void test_jpeg_rgb_baseline(void **state)
{
    (void)state;
    JpegSpec s = {.components = 3, .in_space = JCS_RGB, .quality = 95, .adobe = -1};
    check_jpeg(s, 3, 0, "YCbCr 4:2:0");
    s.jpeg_space = JCS_RGB; /* stored as RGB (Adobe transform 0) */
    check_jpeg(s, 3, 0, "RGB-stored");
}

static void test_jpeg_progressive(void **state)
{
    (void)state;
    JpegSpec s = {.components = 3, .in_space = JCS_RGB, .quality = 95, .progressive = 1,
                  .adobe = -1};
    check_jpeg(s, 3, 0, "progressive");
    s.components = 1;
    s.in_space = JCS_GRAYSCALE;
    check_jpeg(s, 1, 1, "progressive gray");
}

static void test_jpeg_cmyk_adobe(void **state)
{
    (void)state;
    JpegSpec s = {.components = 4, .in_space = JCS_CMYK, .quality = 98, .adobe = 1};
    check_jpeg(s, 4, 0, "CMYK, Adobe (inverted)");
}

static void test_jpeg_cmyk_plain(void **state)
{
    (void)state;
    JpegSpec s = {.components = 4, .in_space = JCS_CMYK, .quality = 98, .adobe = 0};
    check_jpeg(s, 4, 0, "CMYK, no Adobe marker");
}

static void test_jpeg_ycck(void **state)
{
    (void)state;
    JpegSpec s = {.components = 4, .in_space = JCS_CMYK, .jpeg_space = JCS_YCCK, .quality = 98,
                  .adobe = 1};
    check_jpeg(s, 4, 0, "YCCK");
}

/* ---- JPEG: broken files ------------------------------------------------------- */

static void test_jpeg_truncated(void **state)
{
    (void)state;
    for (int progressive = 0; progressive < 2; progressive++) {
        Buf b = jpeg_rgb_fixture(64, 64, progressive);
        size_t sof = jpeg_find_marker(&b, progressive ? 0xc2 : 0xc0);
        size_t sos = jpeg_find_marker(&b, 0xda);
        const size_t cuts[] = {
            sof + 6,                   /* inside the frame header */
            sos + 2 + (b.len - sos) / 2, /* mid-scan */
            b.len - 2,                 /* everything but EOI */
        };
        for (size_t i = 0; i < 3; i++) {
            print_message("  %s, cut at %zu of %zu\n", progressive ? "progressive" : "baseline",
                          cuts[i], b.len);
            expect_decode_error(b.data, cuts[i], 0, "JPEG: Premature end of JPEG file", NULL);
        }
        buf_free(&b);
    }
}

/* An EOI marker in the middle of the entropy-coded data. */
static void test_jpeg_corrupt_scan(void **state)
{
    (void)state;
    Buf b = jpeg_rgb_fixture(64, 64, 0);
    size_t sos = jpeg_find_marker(&b, 0xda);
    size_t mid = sos + (b.len - sos) / 2;
    b.data[mid] = 0xff;
    b.data[mid + 1] = 0xd9;
    expect_decode_error(b.data, b.len, 0, "JPEG: Corrupt JPEG data: premature end of data segment",
                        NULL);
    buf_free(&b);
}

/* Stray bytes before EOI (common in camera files) only warn, and the pixels are
 * those of the clean file. */
static void test_jpeg_extraneous_bytes_tolerated(void **state)
{
    (void)state;
    Buf b = jpeg_rgb_fixture(33, 17, 0);
    Buf c = buf_copy(b.data, b.len - 2);
    static const uint8_t junk[5] = {0x11, 0x22, 0x33, 0x44, 0x55};
    buf_put(&c, junk, 5);
    buf_put(&c, b.data + b.len - 2, 2);
    Image clean, padded;
    Error err = {{0}};
    assert_int_equal(image_decode(&clean, b.data, b.len, 0, &err), 0);
    if (image_decode(&padded, c.data, c.len, 0, &err) != 0)
        fail_msg("%s", err.msg);
    assert_memory_equal(clean.rgb, padded.rgb, 33 * 17 * 3);
    image_free(&clean);
    image_free(&padded);
    buf_free(&b);
    buf_free(&c);
}

static void test_jpeg_garbage_after_soi(void **state)
{
    (void)state;
    uint8_t data[300] = {0xff, 0xd8, 0xff, 0x13}; /* 0x13: not a marker libjpeg knows */
    uint64_t s = 12345;
    for (size_t i = 4; i < sizeof data; i++)
        data[i] = (uint8_t)rng_next(&s);
    expect_decode_error(data, sizeof data, 0, "JPEG: Unsupported marker type 0x13", NULL);
    for (int seed = 1; seed <= 20; seed++) { /* whatever the garbage, a clean error */
        s = (uint64_t)seed;
        for (size_t i = 3; i < sizeof data; i++)
            data[i] = (uint8_t)rng_next(&s);
        expect_decode_error(data, sizeof data, 0, "JPEG: ", NULL);
    }
    static const uint8_t soi_only[3] = {0xff, 0xd8, 0xff};
    expect_decode_error(soi_only, 3, 0, "JPEG: ", NULL);
}

/* A real 16x16 JPEG whose frame header claims 60000x60000. */
static void test_jpeg_bomb(void **state)
{
    (void)state;
    Buf b = jpeg_rgb_fixture(16, 16, 0);
    size_t sof = jpeg_find_marker(&b, 0xc0);
    uint8_t *p = b.data + sof + 5; /* FF C0, length (2), precision (1), height, width */
    p[0] = 60000 >> 8;
    p[1] = 60000 & 0xff;
    p[2] = 60000 >> 8;
    p[3] = 60000 & 0xff;
    double t0 = now_s();
    expect_decode_error(b.data, b.len, 50000000,
                        "JPEG: image is 60000x60000 = 3600000000 pixels, over the limit of "
                        "50000000",
                        NULL);
    double dt = now_s() - t0;
    print_message("  refused in %.2f ms\n", dt * 1e3);
    assert_true(dt < 0.25);

    ImageFormat f;
    int w, h;
    Error err = {{0}};
    assert_int_equal(image_probe(b.data, sof + 12, &f, &w, &h, &err), 0);
    assert_int_equal(f, IMAGE_JPEG);
    assert_int_equal(w, 60000);
    assert_int_equal(h, 60000);
    buf_free(&b);
}

/* ---- other input -------------------------------------------------------------- */

static void test_unknown_formats(void **state)
{
    (void)state;
    uint8_t random[256];
    uint64_t s = 4242;
    for (size_t i = 0; i < sizeof random; i++)
        random[i] = (uint8_t)rng_next(&s);
    random[0] = 0x42; /* neither PNG's 0x89 nor JPEG's 0xff */
    expect_decode_error(random, sizeof random, 0, "not a PNG or JPEG file (first bytes: 42 ",
                        NULL);
    const char *text = "hello, world\n";
    expect_decode_error((const uint8_t *)text, strlen(text), 0,
                        "not a PNG or JPEG file (first bytes: 68 65 6c 6c 6f 2c 20 77)", NULL);
    expect_decode_error((const uint8_t *)"GIF89a\1\0\1\0", 10, 0,
                        "unsupported image format GIF", NULL);
    expect_decode_error((const uint8_t *)"RIFF\0\0\0\0WEBPVP8 ", 16, 0,
                        "unsupported image format WebP", NULL);
    expect_decode_error((const uint8_t *)"", 0, 0, "empty input", NULL);
    expect_decode_error(NULL, 0, 0, "empty input", NULL);
    expect_probe_error((const uint8_t *)text, strlen(text), "not a PNG or JPEG file", NULL);
}

static void test_probe(void **state)
{
    (void)state;
    ImageFormat f;
    int w, h;
    Error err = {{0}};
    Buf p = png_rgb_fixture(33, 17, NULL);
    assert_int_equal(image_probe(p.data, 33, &f, &w, &h, &err), 0); /* the header is enough */
    assert_int_equal(f, IMAGE_PNG);
    assert_int_equal(w, 33);
    assert_int_equal(h, 17);
    assert_int_equal(image_probe(p.data, 33, NULL, NULL, NULL, NULL), 0);
    expect_probe_error(p.data, 32, "PNG: Read Error: truncated", NULL);
    p.data[20] ^= 1; /* height changed, CRC not */
    expect_probe_error(p.data, p.len, "PNG: IHDR: CRC error", NULL);
    memcpy(p.data + 12, "IDAT", 4);
    expect_probe_error(p.data, p.len, "PNG: the first chunk is not a 13-byte IHDR", NULL);
    buf_free(&p);

    Buf j = jpeg_rgb_fixture(7, 5, 1);
    size_t sof = jpeg_find_marker(&j, 0xc2);
    assert_int_equal(image_probe(j.data, sof + 9, &f, &w, &h, &err), 0); /* up to SOF's width */
    assert_int_equal(f, IMAGE_JPEG);
    assert_int_equal(w, 7);
    assert_int_equal(h, 5);
    expect_probe_error(j.data, sof + 8, "JPEG: Premature end of JPEG file", NULL);
    static const uint8_t no_sof[] = {0xff, 0xd8, 0xff, 0xfe, 0x00, 0x04, 'h', 'i', 0xff, 0xd9};
    expect_probe_error(no_sof, sizeof no_sof, "JPEG: no frame header (SOF) before EOI", NULL);
    buf_free(&j);
}

/* ---- files ---------------------------------------------------------------------- */

static void write_buf(const char *path, const Buf *b)
{
    testutil_write_file(path, b->data, b->len);
}

static void test_load_png_named_jpg(void **state)
{
    (void)state;
    uint16_t *v;
    Buf b = png_rgb_fixture(7, 5, &v);
    char path[4096];
    snprintf(path, sizeof path, "%s", testutil_tmp_path("really_a_png.jpg"));
    write_buf(path, &b);
    Image img;
    Error err = {{0}};
    if (image_load(&img, path, 0, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(img.format, IMAGE_PNG);
    PngSpec s = {.width = 7, .height = 5, .color_type = PNG_COLOR_TYPE_RGB, .bit_depth = 8,
                 .samples = v};
    uint8_t *want = png_expected(&s);
    compare_exact(img.rgb, want, 7, 5, "loaded");
    free(want);
    image_free(&img);
    buf_free(&b);
    free(v);

    Buf j = jpeg_rgb_fixture(7, 5, 0); /* and a JPEG named .png */
    snprintf(path, sizeof path, "%s", testutil_tmp_path("really_a_jpeg.png"));
    write_buf(path, &j);
    assert_int_equal(image_load(&img, path, 0, &err), 0);
    assert_int_equal(img.format, IMAGE_JPEG);
    image_free(&img);
    buf_free(&j);
}

static void test_load_errors(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s", testutil_tmp_path("empty.png"));
    testutil_write_file(path, "", 0);
    expect_load_error(path, ": empty file", NULL);

    snprintf(path, sizeof path, "%s", testutil_tmp_path("notes.txt"));
    testutil_write_file(path, "just some text\n", 15);
    expect_load_error(path, ": not a PNG or JPEG file (first bytes: 6a 75 73 74", NULL);

    snprintf(path, sizeof path, "%s", testutil_tmp_path("does_not_exist.png"));
    expect_load_error(path, ": cannot open: No such file or directory", NULL);

    snprintf(path, sizeof path, "%s", testutil_tmpdir());
    expect_load_error(path, ": not a regular file", NULL);

    Buf b = png_rgb_fixture(33, 17, NULL);
    snprintf(path, sizeof path, "%s", testutil_tmp_path("cut.png"));
    testutil_write_file(path, b.data, b.len / 2);
    expect_load_error(path, ": PNG: Read Error: truncated", NULL);
    buf_free(&b);

    /* over 256 MiB: refused from its size, without reading (a sparse file) */
    snprintf(path, sizeof path, "%s", testutil_tmp_path("huge.jpg"));
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), (off_t)IMAGE_MAX_FILE_BYTES + 1), 0);
    assert_int_equal(fclose(f), 0);
    double t0 = now_s();
    expect_load_error(path, ": file too large (268435457 bytes, the limit is 268435456)", NULL);
    assert_true(now_s() - t0 < 0.25);
    assert_int_equal(unlink(path), 0);
}

/* Names in the scratch dir that contain ".tmp." (writer leftovers). */
static int count_temp_files(void)
{
    DIR *d = opendir(testutil_tmpdir());
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp."))
            n++;
    closedir(d);
    return n;
}

static void test_write_png_round_trip(void **state)
{
    (void)state;
    static const int chans[3] = {1, 3, 4};
    for (int c = 0; c < 3; c++) {
        for (int k = 0; k < N_SIZES; k++) {
            int w = sizes[k][0], h = sizes[k][1], ch = chans[c];
            size_t n = (size_t)w * h;
            uint8_t *px = malloc(n * ch);
            assert_non_null(px);
            uint64_t s = (uint64_t)(c * 31 + k + 1);
            for (size_t i = 0; i < n * ch; i++)
                px[i] = (uint8_t)rng_next(&s);
            char path[4096];
            snprintf(path, sizeof path, "%s", testutil_tmp_path("written.png"));
            Error err = {{0}};
            if (image_write_png(path, px, w, h, ch, &err) != 0) /* overwrites the last one */
                fail_msg("%s", err.msg);
            struct stat st;
            assert_int_equal(stat(path, &st), 0);
            assert_int_equal(st.st_mode & 0777, 0644);
            Image img;
            if (image_load(&img, path, 0, &err) != 0)
                fail_msg("%s", err.msg);
            assert_int_equal(img.format, IMAGE_PNG);
            assert_int_equal(img.width, w);
            assert_int_equal(img.height, h);
            assert_int_equal(img.bit_depth, 8);
            assert_int_equal(img.source_channels, ch);
            assert_int_equal(img.was_gray, ch == 1);
            assert_int_equal(img.had_alpha, ch == 4);
            for (size_t i = 0; i < n; i++)
                for (int j = 0; j < 3; j++)
                    assert_int_equal(img.rgb[3 * i + j], px[i * ch + (ch == 1 ? 0 : j)]);
            image_free(&img);
            free(px);
        }
    }
    assert_int_equal(count_temp_files(), 0);
}

static void test_write_png_errors(void **state)
{
    (void)state;
    uint8_t px[12] = {0};
    Error err = {{0}};
    char path[4096];
    snprintf(path, sizeof path, "%s", testutil_tmp_path("bad.png"));
    assert_int_equal(image_write_png(path, px, 2, 2, 2, &err), -1);
    assert_non_null(strstr(err.msg, "cannot write 2 channels (1, 3 or 4)"));
    assert_int_equal(image_write_png(path, px, 0, 2, 3, &err), -1);
    assert_non_null(strstr(err.msg, "invalid image size 0x2"));
    assert_int_equal(image_write_png(path, NULL, 2, 2, 3, &err), -1);
    assert_non_null(strstr(err.msg, "no pixels"));
    assert_int_equal(access(path, F_OK), -1);

    snprintf(path, sizeof path, "%s", testutil_tmp_path("no_such_dir/x.png"));
    assert_int_equal(image_write_png(path, px, 2, 2, 3, &err), -1);
    print_message("  error: %s\n", err.msg);
    assert_int_equal(strncmp(err.msg, path, strlen(path)), 0);
    assert_non_null(strstr(err.msg, "cannot create a temporary file: No such file or directory"));
    assert_int_equal(count_temp_files(), 0);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff_and_names),
        cmocka_unit_test(test_png_gray),
        cmocka_unit_test(test_png_16bit_is_high_byte),
        cmocka_unit_test(test_png_gray_alpha),
        cmocka_unit_test(test_png_colour_key_trns),
        cmocka_unit_test(test_png_palette),
        cmocka_unit_test(test_png_rgb_and_rgba),
        cmocka_unit_test(test_png_interlaced),
        cmocka_unit_test(test_png_ignores_ancillary_chunks),
        cmocka_unit_test(test_max_pixels_boundary),
        cmocka_unit_test(test_png_truncated),
        cmocka_unit_test(test_png_idat_crc),
        cmocka_unit_test(test_png_idat_data),
        cmocka_unit_test(test_png_bomb),
        cmocka_unit_test(test_png_bad_sizes),
        cmocka_unit_test(test_jpeg_gray),
        cmocka_unit_test(test_jpeg_rgb_baseline),
        cmocka_unit_test(test_jpeg_progressive),
        cmocka_unit_test(test_jpeg_cmyk_adobe),
        cmocka_unit_test(test_jpeg_cmyk_plain),
        cmocka_unit_test(test_jpeg_ycck),
        cmocka_unit_test(test_jpeg_truncated),
        cmocka_unit_test(test_jpeg_corrupt_scan),
        cmocka_unit_test(test_jpeg_extraneous_bytes_tolerated),
        cmocka_unit_test(test_jpeg_garbage_after_soi),
        cmocka_unit_test(test_jpeg_bomb),
        cmocka_unit_test(test_unknown_formats),
        cmocka_unit_test(test_probe),
        cmocka_unit_test(test_load_png_named_jpg),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_write_png_round_trip),
        cmocka_unit_test(test_write_png_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
