/*
 * image.c: PNG (libpng 1.6) and JPEG (libjpeg-turbo through the libjpeg API)
 * decoding into interleaved RGB8, header probing, and an atomic PNG writer
 * (see image.h).
 *
 * Both libraries report errors by calling back into us; the callbacks copy the
 * library's message and longjmp. Each setjmp sits in a small "*_run" function
 * whose resources (library structures, pixel buffers) all live in a context
 * struct owned by its caller. After a longjmp the caller frees what the context
 * holds; nothing that must be freed is an automatic variable of the function that
 * called setjmp, whose values C11 7.13.2.1p3 would leave indeterminate.
 *
 * Error texts (others match on them):
 *   "PNG: <libpng's message>"    e.g. "PNG: IDAT: incorrect data check",
 *                                "PNG: IDAT: CRC error", "PNG: Read Error: truncated"
 *   "JPEG: <libjpeg's message>"  e.g. "JPEG: Premature end of JPEG file",
 *                                "JPEG: Corrupt JPEG data: premature end of data segment"
 *   "<FMT>: invalid image size WxH (each side must be 1..1048576)"
 *   "<FMT>: image is WxH = N pixels, over the limit of M"
 *   "not a PNG or JPEG file (first bytes: 68 65 6c 6c)", "unsupported image format GIF ..."
 *   image_load: "<path>: " + any of the above, or "<path>: empty file",
 *   "<path>: cannot open: <strerror>", "<path>: file too large (...)".
 *
 * Strictness: a training set should not silently hold damaged images, so
 * - libpng's "benign" errors are errors (an Adler-32 mismatch at the end of the
 *   image data is one), and a missing IEND (JPEG: EOI) is an error; ancillary
 *   chunks other than tRNS are skipped unread (so broken metadata such as a bad
 *   iCCP profile, which libpng would report, does not cost an otherwise good
 *   image);
 * - libjpeg warnings are errors (libjpeg merely warns about a truncated file or
 *   damaged entropy data and fills the rest of the image with gray), except the
 *   ones that leave the pixels intact: extraneous bytes before a marker (common
 *   in camera files, e.g. a few bytes of padding before EOI), an unknown JFIF
 *   revision or Adobe transform code, and a malformed ICC marker.
 */
#include "image.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h>
#include <jerror.h>

#define MSG_MAX 320 /* a decoder message, before the format prefix is added */

static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

ImageFormat image_sniff(const uint8_t *data, size_t len)
{
    if (!data)
        return IMAGE_UNKNOWN;
    if (len >= 8 && memcmp(data, png_signature, 8) == 0)
        return IMAGE_PNG;
    if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        return IMAGE_JPEG;
    return IMAGE_UNKNOWN;
}

const char *image_format_name(ImageFormat f)
{
    switch (f) {
    case IMAGE_PNG: return "PNG";
    case IMAGE_JPEG: return "JPEG";
    default: return "unknown";
    }
}

void image_free(Image *img)
{
    if (!img)
        return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* Checks a header's size against the fixed side limit and max_pixels (0 = none).
 * Returns 0, or -1 with the reason in msg[MSG_MAX]. */
static int check_size(char *msg, uint32_t w, uint32_t h, uint64_t max_pixels)
{
    if (w == 0 || h == 0 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE) {
        snprintf(msg, MSG_MAX, "invalid image size %ux%u (each side must be 1..%d)", w, h,
                 IMAGE_MAX_SIDE);
        return -1;
    }
    uint64_t n = (uint64_t)w * h;
    if (max_pixels && n > max_pixels) {
        snprintf(msg, MSG_MAX, "image is %ux%u = %llu pixels, over the limit of %llu", w, h,
                 (unsigned long long)n, (unsigned long long)max_pixels);
        return -1;
    }
    return 0;
}

/* The reason for refusing data that is neither PNG nor JPEG: names a few common
 * other formats, otherwise shows the first bytes. */
static int unknown_format_error(const uint8_t *data, size_t len, Error *err)
{
    if (!data || len == 0)
        return error_set(err, "empty input");
    static const struct {
        const char *name;
        size_t off;
        const char *magic;
        size_t n;
    } others[] = {
        {"GIF", 0, "GIF8", 4},       {"BMP", 0, "BM", 2},          {"WebP", 8, "WEBP", 4},
        {"TIFF", 0, "II*\0", 4},     {"TIFF", 0, "MM\0*", 4},      {"HEIF/AVIF", 4, "ftyp", 4},
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if (len >= others[i].off + others[i].n &&
            memcmp(data + others[i].off, others[i].magic, others[i].n) == 0)
            return error_set(err, "unsupported image format %s (only PNG and JPEG are decoded)",
                             others[i].name);
    char hex[3 * 8] = "";
    size_t at = 0;
    for (size_t i = 0; i < len && i < 8; i++)
        at += (size_t)snprintf(hex + at, sizeof hex - at, i ? " %02x" : "%02x", data[i]);
    return error_set(err, "not a PNG or JPEG file (first bytes: %s)", hex);
}

/* ---- PNG -------------------------------------------------------------------- */

/* Ancillary chunks the decoder never reads (tRNS is the one it needs). libpng
 * skips them unparsed, CRC still checked (a bad one only warns). */
static const png_byte png_skipped_chunks[] =
    "bKGD\0cHRM\0eXIf\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0pCAL\0pHYs\0sBIT\0sCAL\0sPLT\0sRGB\0"
    "sTER\0tEXt\0tIME\0zTXt";
_Static_assert(sizeof png_skipped_chunks % 5 == 0, "chunk names are 4 bytes + NUL");

typedef struct {
    const uint8_t *data; /* borrowed */
    size_t len, pos;
    uint64_t max_pixels;
    Image *img; /* receives the fields, and rgb once decoded */
    png_structp png;
    png_infop info;
    png_bytep *rows;
    char msg[MSG_MAX];
} PngDecoder;

/* libpng error callback (error_ptr is a char[MSG_MAX]): keeps the message, unwinds. */
static void png_on_error(png_structp png, png_const_charp msg)
{
    char *buf = png_get_error_ptr(png);
    snprintf(buf, MSG_MAX, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* libpng read callback over the in-memory file. */
static void png_read_mem(png_structp png, png_bytep out, size_t n)
{
    PngDecoder *d = png_get_io_ptr(png);
    if (n > d->len - d->pos)
        png_error(png, "Read Error: truncated");
    memcpy(out, d->data + d->pos, n);
    d->pos += n;
}

/* Reads the header into d->img and, unless header_only, the pixels as RGB8 into
 * d->img->rgb. Returns 0, or -1 with the reason in d->msg; the caller releases
 * d->png, d->info, d->rows and (on failure) d->img->rgb. */
static int png_decode_run(PngDecoder *d, int header_only)
{
    if (setjmp(png_jmpbuf(d->png)))
        return -1;
    png_set_read_fn(d->png, d, png_read_mem);
    /* Our own side limit applies (check_size), with a message naming the size. */
    png_set_user_limits(d->png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
    png_set_benign_errors(d->png, 0);
    png_set_keep_unknown_chunks(d->png, PNG_HANDLE_CHUNK_NEVER, png_skipped_chunks,
                                (int)(sizeof png_skipped_chunks / 5));
    png_read_info(d->png, d->info);

    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(d->png, d->info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    if (check_size(d->msg, w, h, d->max_pixels) != 0)
        return -1;
    Image *img = d->img;
    img->width = (int)w;
    img->height = (int)h;
    img->format = IMAGE_PNG;
    img->bit_depth = depth;
    img->was_gray = !(ctype & PNG_COLOR_MASK_COLOR);
    img->had_alpha =
        (ctype & PNG_COLOR_MASK_ALPHA) || png_get_valid(d->png, d->info, PNG_INFO_tRNS);
    img->source_channels = (img->was_gray ? 1 : 3) + img->had_alpha;
    if (header_only)
        return 0;

    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(d->png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(d->png);
    if (png_get_valid(d->png, d->info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(d->png);
    if (depth == 16)
        png_set_strip_16(d->png);
    if (img->was_gray)
        png_set_gray_to_rgb(d->png);
    png_set_strip_alpha(d->png);
    png_set_interlace_handling(d->png);
    png_read_update_info(d->png, d->info);
    size_t row_bytes = (size_t)w * 3;
    if (png_get_channels(d->png, d->info) != 3 || png_get_bit_depth(d->png, d->info) != 8 ||
        png_get_rowbytes(d->png, d->info) != row_bytes) {
        snprintf(d->msg, MSG_MAX, "transforms gave %d channels of %d bits, not RGB8",
                 png_get_channels(d->png, d->info), png_get_bit_depth(d->png, d->info));
        return -1;
    }

    img->rgb = malloc(row_bytes * h);
    d->rows = malloc(sizeof *d->rows * h);
    if (!img->rgb || !d->rows) {
        snprintf(d->msg, MSG_MAX, "out of memory for %ux%u pixels", w, h);
        return -1;
    }
    for (png_uint_32 y = 0; y < h; y++)
        d->rows[y] = img->rgb + row_bytes * y;
    png_read_image(d->png, d->rows);
    png_read_end(d->png, NULL);
    return 0;
}

/* Decodes (or, with header_only, reads the header of) a PNG into img, which the
 * caller has zeroed. Errors: "PNG: ..." into err; img->rgb freed on failure. */
static int png_decode(Image *img, const uint8_t *data, size_t len, uint64_t max_pixels,
                      int header_only, Error *err)
{
    PngDecoder d;
    memset(&d, 0, sizeof d);
    d.data = data;
    d.len = len;
    d.max_pixels = max_pixels;
    d.img = img;
    d.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d.msg, png_on_error, png_on_warning);
    if (d.png)
        d.info = png_create_info_struct(d.png);
    int rc;
    if (!d.png || !d.info) {
        snprintf(d.msg, sizeof d.msg, "cannot create the decoder (out of memory)");
        rc = -1;
    } else {
        rc = png_decode_run(&d, header_only);
    }
    png_destroy_read_struct(&d.png, &d.info, NULL);
    free(d.rows);
    if (rc != 0) {
        free(img->rgb);
        memset(img, 0, sizeof *img);
        return error_set(err, "PNG: %s", d.msg);
    }
    return 0;
}

/* ---- JPEG ------------------------------------------------------------------- */

typedef struct {
    struct jpeg_error_mgr pub; /* first: libjpeg hands back a pointer to it */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} JpegError;

typedef struct {
    struct jpeg_decompress_struct cinfo;
    JpegError jerr;
    const uint8_t *data; /* borrowed */
    size_t len;
    uint64_t max_pixels;
    Image *img;
    uint8_t *row; /* one CMYK scanline */
    char msg[MSG_MAX];
} JpegDecoder;

static void jpeg_on_error(j_common_ptr c)
{
    JpegError *e = (JpegError *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jump, 1);
}

/* Warnings that leave every pixel intact; any other warning ends the decode. */
static int jpeg_warning_is_harmless(int code)
{
    return code == JWRN_EXTRANEOUS_DATA || code == JWRN_JFIF_MAJOR ||
           code == JWRN_ADOBE_XFORM || code == JWRN_BOGUS_ICC;
}

/* level -1 is a warning, >= 0 a trace message (ignored). */
static void jpeg_on_message(j_common_ptr c, int level)
{
    if (level >= 0)
        return;
    c->err->num_warnings++;
    if (!jpeg_warning_is_harmless(c->err->msg_code))
        jpeg_on_error(c);
}

static void jpeg_on_output(j_common_ptr c)
{
    (void)c;
}

/* Adobe CMYK (cmyk_inverted) stores 255 - ink, as libjpeg-turbo's cmyk.h
 * (used by TurboJPEG) assumes: R = round(C*K/255). Plain CMYK stores ink:
 * R = round((255-C)*(255-K)/255), which is Pillow's conversion. Same for G/M, B/Y.
 * (v + 127) / 255 is round(v / 255) for integers v >= 0. */
static void cmyk_to_rgb(uint8_t *rgb, const uint8_t *cmyk, size_t n, int cmyk_inverted)
{
    for (size_t i = 0; i < n; i++, rgb += 3, cmyk += 4) {
        unsigned c = cmyk[0], m = cmyk[1], y = cmyk[2], k = cmyk[3];
        if (!cmyk_inverted) {
            c = 255 - c; m = 255 - m; y = 255 - y; k = 255 - k;
        }
        rgb[0] = (uint8_t)((c * k + 127) / 255);
        rgb[1] = (uint8_t)((m * k + 127) / 255);
        rgb[2] = (uint8_t)((y * k + 127) / 255);
    }
}

/* Like png_decode_run: fills d->img; the caller destroys d->cinfo, frees d->row
 * and (on failure) d->img->rgb. Returns 0, or -1 with the reason in d->jerr.msg
 * (libjpeg's) or d->msg (ours, when d->msg[0] is set). */
static int jpeg_decode_run(JpegDecoder *d, int header_only)
{
    struct jpeg_decompress_struct *ci = &d->cinfo;
    ci->err = jpeg_std_error(&d->jerr.pub);
    d->jerr.pub.error_exit = jpeg_on_error;
    d->jerr.pub.emit_message = jpeg_on_message;
    d->jerr.pub.output_message = jpeg_on_output;
    if (setjmp(d->jerr.jump))
        return -1;
    jpeg_create_decompress(ci);
    jpeg_mem_src(ci, d->data, (unsigned long)d->len);
    jpeg_read_header(ci, TRUE);
    if (check_size(d->msg, ci->image_width, ci->image_height, d->max_pixels) != 0)
        return -1;

    Image *img = d->img;
    img->width = (int)ci->image_width;
    img->height = (int)ci->image_height;
    img->format = IMAGE_JPEG;
    img->bit_depth = ci->data_precision;
    img->source_channels = ci->num_components;
    img->was_gray = ci->jpeg_color_space == JCS_GRAYSCALE;
    img->had_alpha = 0;
    if (header_only)
        return 0;

    int cmyk = 0;
    switch (ci->jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        ci->out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        ci->out_color_space = JCS_CMYK;
        cmyk = 1;
        break;
    default:
        snprintf(d->msg, MSG_MAX, "unsupported colour space (%d components)", ci->num_components);
        return -1;
    }
    jpeg_start_decompress(ci);
    size_t w = ci->output_width;
    if (ci->output_width != ci->image_width || ci->output_height != ci->image_height ||
        ci->output_components != (cmyk ? 4 : 3)) {
        snprintf(d->msg, MSG_MAX, "decoder gave %ux%u x %d, expected %ux%u x %d",
                 ci->output_width, ci->output_height, ci->output_components, ci->image_width,
                 ci->image_height, cmyk ? 4 : 3);
        return -1;
    }
    img->rgb = malloc(w * 3 * ci->output_height);
    if (cmyk)
        d->row = malloc(w * 4);
    if (!img->rgb || (cmyk && !d->row)) {
        snprintf(d->msg, MSG_MAX, "out of memory for %zux%u pixels", w, ci->output_height);
        return -1;
    }
    while (ci->output_scanline < ci->output_height) {
        uint8_t *dst = img->rgb + w * 3 * ci->output_scanline;
        JSAMPROW row = cmyk ? d->row : dst;
        if (jpeg_read_scanlines(ci, &row, 1) != 1) { /* only a suspending source returns 0 */
            snprintf(d->msg, MSG_MAX, "decoder returned no scanline");
            return -1;
        }
        if (cmyk)
            cmyk_to_rgb(dst, d->row, w, ci->saw_Adobe_marker);
    }
    jpeg_finish_decompress(ci);
    return 0;
}

/* JPEG counterpart of png_decode. Errors: "JPEG: ..." into err. */
static int jpeg_decode(Image *img, const uint8_t *data, size_t len, uint64_t max_pixels,
                       int header_only, Error *err)
{
    JpegDecoder *d = calloc(1, sizeof *d); /* ~1 KiB with the jmp_buf and messages */
    if (!d)
        return error_set(err, "JPEG: out of memory");
    d->data = data;
    d->len = len;
    d->max_pixels = max_pixels;
    d->img = img;
    int rc = jpeg_decode_run(d, header_only);
    jpeg_destroy_decompress(&d->cinfo); /* safe on a zeroed or half-created struct */
    free(d->row);
    if (rc != 0) {
        free(img->rgb);
        memset(img, 0, sizeof *img);
        error_set(err, "JPEG: %s", d->msg[0] ? d->msg : d->jerr.msg);
    }
    free(d);
    return rc;
}

/* ---- public decoding API ------------------------------------------------------ */

int image_decode(Image *img, const uint8_t *data, size_t len, uint64_t max_pixels, Error *err)
{
    memset(img, 0, sizeof *img);
    switch (image_sniff(data, len)) {
    case IMAGE_PNG: return png_decode(img, data, len, max_pixels, 0, err);
    case IMAGE_JPEG: return jpeg_decode(img, data, len, max_pixels, 0, err);
    default: return unknown_format_error(data, len, err);
    }
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* PNG: the first chunk must be a 13-byte IHDR with a good CRC. */
static int png_probe(const uint8_t *data, size_t len, uint32_t *w, uint32_t *h, char *msg)
{
    if (len < 33) {
        snprintf(msg, MSG_MAX, "Read Error: truncated (%zu bytes, the header needs 33)", len);
        return -1;
    }
    if (be32(data + 8) != 13 || memcmp(data + 12, "IHDR", 4) != 0) {
        snprintf(msg, MSG_MAX, "the first chunk is not a 13-byte IHDR");
        return -1;
    }
    if ((uint32_t)crc32(crc32(0, NULL, 0), data + 12, 17) != be32(data + 29)) {
        snprintf(msg, MSG_MAX, "IHDR: CRC error");
        return -1;
    }
    *w = be32(data + 16);
    *h = be32(data + 20);
    return 0;
}

/* JPEG: walks the markers after SOI, as libjpeg's next_marker does (skipping
 * stray bytes and fill 0xFF bytes), up to the first SOF. */
static int jpeg_probe(const uint8_t *data, size_t len, uint32_t *w, uint32_t *h, char *msg)
{
    size_t pos = 2;
    for (;;) {
        while (pos < len && data[pos] != 0xff)
            pos++;
        while (pos < len && data[pos] == 0xff)
            pos++;
        if (pos >= len)
            break;
        int m = data[pos++];
        if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd8))
            continue; /* stuffed zero, TEM, RSTn, SOI: no segment */
        if (m == 0xd9 || m == 0xda) {
            snprintf(msg, MSG_MAX, "no frame header (SOF) before %s",
                     m == 0xd9 ? "EOI" : "the first scan");
            return -1;
        }
        if (len - pos < 2)
            break;
        size_t seg = (size_t)data[pos] << 8 | data[pos + 1];
        if (seg < 2) {
            snprintf(msg, MSG_MAX, "bogus marker length %zu", seg);
            return -1;
        }
        if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
            if (len - pos < 7)
                break;
            *h = (uint32_t)data[pos + 3] << 8 | data[pos + 4];
            *w = (uint32_t)data[pos + 5] << 8 | data[pos + 6];
            return 0;
        }
        if (len - pos < seg)
            break;
        pos += seg;
    }
    snprintf(msg, MSG_MAX, "Premature end of JPEG file (no frame header in %zu bytes)", len);
    return -1;
}

int image_probe(const uint8_t *data, size_t len, ImageFormat *format, int *width, int *height,
                Error *err)
{
    if (format) *format = IMAGE_UNKNOWN;
    if (width) *width = 0;
    if (height) *height = 0;
    ImageFormat f = image_sniff(data, len);
    if (f == IMAGE_UNKNOWN)
        return unknown_format_error(data, len, err);
    char msg[MSG_MAX];
    uint32_t w = 0, h = 0;
    int rc = f == IMAGE_PNG ? png_probe(data, len, &w, &h, msg)
                            : jpeg_probe(data, len, &w, &h, msg);
    if (rc == 0)
        rc = check_size(msg, w, h, 0);
    if (rc != 0)
        return error_set(err, "%s: %s", image_format_name(f), msg);
    if (format) *format = f;
    if (width) *width = (int)w;
    if (height) *height = (int)h;
    return 0;
}

/* ---- files ---------------------------------------------------------------------- */

/* Reads the whole regular file at path into *out (malloc'd, caller frees).
 * Errors start with the path. */
static int read_file(const char *path, uint8_t **out, size_t *out_len, Error *err)
{
    *out = NULL;
    *out_len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return error_set(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    uint8_t *buf = NULL;
    if (fstat(fileno(f), &st) != 0) {
        error_set(err, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        error_set(err, "%s: not a regular file", path);
        goto fail;
    }
    if (st.st_size == 0) {
        error_set(err, "%s: empty file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > IMAGE_MAX_FILE_BYTES) {
        error_set(err, "%s: file too large (%lld bytes, the limit is %zu)", path,
                  (long long)st.st_size, IMAGE_MAX_FILE_BYTES);
        goto fail;
    }
    size_t len = (size_t)st.st_size;
    buf = malloc(len);
    if (!buf) {
        error_set(err, "%s: out of memory (%zu bytes)", path, len);
        goto fail;
    }
    size_t got = fread(buf, 1, len, f);
    if (got != len) {
        if (ferror(f))
            error_set(err, "%s: read error: %s", path, strerror(errno));
        else
            error_set(err, "%s: file shrank while reading (%zu of %zu bytes)", path, got, len);
        goto fail;
    }
    fclose(f);
    *out = buf;
    *out_len = len;
    return 0;
fail:
    free(buf);
    fclose(f);
    return -1;
}

int image_load(Image *img, const char *path, uint64_t max_pixels, Error *err)
{
    memset(img, 0, sizeof *img);
    uint8_t *data;
    size_t len;
    if (read_file(path, &data, &len, err) != 0)
        return -1;
    int rc = image_decode(img, data, len, max_pixels, err);
    free(data);
    if (rc != 0)
        return error_wrap(err, "%s", path);
    return 0;
}

/* ---- PNG writer ----------------------------------------------------------------- */

typedef struct {
    png_structp png;
    png_infop info;
    FILE *f; /* borrowed: the caller closes it */
    const uint8_t *pixels;
    int width, height, channels;
    char msg[MSG_MAX];
} PngWriter;

/* Writes the whole image to w->f. Returns 0, or -1 with the reason in w->msg; the
 * caller destroys w->png and w->info. */
static int png_write_run(PngWriter *w)
{
    if (setjmp(png_jmpbuf(w->png)))
        return -1;
    static const int ctype[5] = {0, PNG_COLOR_TYPE_GRAY, 0, PNG_COLOR_TYPE_RGB,
                                 PNG_COLOR_TYPE_RGB_ALPHA};
    png_init_io(w->png, w->f);
    png_set_IHDR(w->png, w->info, (png_uint_32)w->width, (png_uint_32)w->height, 8,
                 ctype[w->channels], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(w->png, w->info);
    size_t row_bytes = (size_t)w->width * w->channels;
    for (int y = 0; y < w->height; y++)
        png_write_row(w->png, w->pixels + row_bytes * y);
    png_write_end(w->png, NULL);
    return 0;
}

int image_write_png(const char *path, const uint8_t *pixels, int width, int height, int channels,
                    Error *err)
{
    if (channels != 1 && channels != 3 && channels != 4)
        return error_set(err, "%s: cannot write %d channels (1, 3 or 4)", path, channels);
    if (width < 1 || height < 1 || width > IMAGE_MAX_SIDE || height > IMAGE_MAX_SIDE)
        return error_set(err, "%s: invalid image size %dx%d", path, width, height);
    if (!pixels)
        return error_set(err, "%s: no pixels", path);

    PngWriter w;
    memset(&w, 0, sizeof w);
    w.pixels = pixels;
    w.width = width;
    w.height = height;
    w.channels = channels;
    int fd = -1;
    size_t tmp_cap = strlen(path) + sizeof ".tmp.XXXXXX";
    char *tmp = malloc(tmp_cap);
    if (!tmp)
        return error_set(err, "%s: out of memory", path);
    snprintf(tmp, tmp_cap, "%s.tmp.XXXXXX", path);
    fd = mkstemp(tmp);
    if (fd < 0) {
        error_set(err, "%s: cannot create a temporary file: %s", path, strerror(errno));
        free(tmp);
        return -1;
    }
    /* mkstemp creates 0600; a fixed mode avoids umask(), which would race with
     * other threads. */
    if (fchmod(fd, 0644) != 0) {
        error_set(err, "%s: cannot chmod %s: %s", path, tmp, strerror(errno));
        goto fail;
    }
    w.f = fdopen(fd, "wb");
    if (!w.f) {
        error_set(err, "%s: fdopen: %s", path, strerror(errno));
        goto fail;
    }
    fd = -1; /* owned by w.f now */

    w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, w.msg, png_on_error, png_on_warning);
    if (w.png)
        w.info = png_create_info_struct(w.png);
    if (!w.png || !w.info) {
        png_destroy_write_struct(&w.png, &w.info);
        error_set(err, "%s: cannot create the PNG encoder (out of memory)", path);
        goto fail;
    }
    int rc = png_write_run(&w);
    png_destroy_write_struct(&w.png, &w.info);
    if (rc != 0) {
        error_set(err, "%s: PNG: %s", path, w.msg);
        goto fail;
    }
    if (fflush(w.f) != 0 || fsync(fileno(w.f)) != 0)
        goto io_fail;
    int close_rc = fclose(w.f);
    w.f = NULL;
    if (close_rc != 0)
        goto io_fail;
    if (rename(tmp, path) != 0)
        goto io_fail;
    free(tmp);
    return 0;

io_fail:
    error_set(err, "%s: cannot write: %s", path, strerror(errno));
fail:
    if (w.f)
        fclose(w.f);
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(tmp);
    return -1;
}
