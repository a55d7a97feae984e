/*
 * image.h: decoding PNG (libpng) and JPEG (libjpeg-turbo) into 8-bit RGB.
 *
 * Files are recognised by their content (magic bytes), never by extension. Every
 * PNG colour type and bit depth (gray, gray+alpha, palette, RGB, RGBA; 1..16 bits)
 * and every JPEG colour space libjpeg reads (gray, RGB/YCbCr, CMYK/YCCK, baseline
 * and progressive) becomes interleaved RGB8; alpha is dropped (and reported).
 * The image's size is read from its header and checked against max_pixels before
 * any pixel buffer is allocated, so a decompression bomb costs nothing.
 * Decoder errors (libpng's and libjpeg's own messages) come back in the Error; a
 * broken file never aborts the process.
 *
 * Thread safety: every function may be called from several threads at once on
 * different images.
 */
#ifndef RESNETD_IMAGE_H
#define RESNETD_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum { IMAGE_UNKNOWN = 0, IMAGE_PNG, IMAGE_JPEG } ImageFormat;

typedef struct {
    int width, height;
    uint8_t *rgb;          /* width * height * 3 bytes, row-major, owned */
    ImageFormat format;
    int source_channels;   /* channels in the file: 1 gray, 2 gray+alpha, 3, 4 (RGBA or CMYK) */
    int had_alpha;         /* the file carried an alpha channel (dropped) */
    int was_gray;          /* the file was grayscale */
    int bit_depth;         /* bits per sample in the file (PNG 1..16, JPEG 8) */
} Image;

/* Details of the Image fields:
 * - source_channels counts the channels of the file's image fully expanded:
 *   gray 1, gray+alpha 2, RGB or palette 3, RGBA 4; a PNG tRNS chunk counts as an
 *   alpha channel (gray+tRNS 2, palette or RGB + tRNS 4), so for PNG
 *   had_alpha == (source_channels is 2 or 4). JPEG: 1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK.
 * - bit_depth is the IHDR bit depth; for a palette PNG that is the index depth
 *   (1, 2, 4 or 8), the palette itself being 8-bit.
 * - 16-bit PNG samples become their high byte (v >> 8, png_set_strip_16).
 * - CMYK JPEGs: with an Adobe APP14 marker the stored values are inverted
 *   (Photoshop), R = round(C*K/255); without it R = round((255-C)*(255-K)/255);
 *   likewise G from M and B from Y. */

/* Limits applied to every image whatever max_pixels says. */
#define IMAGE_MAX_SIDE (1 << 20)                 /* pixels per side */
#define IMAGE_MAX_FILE_BYTES ((size_t)256 << 20) /* image_load refuses larger files */

/* The format the first bytes announce (needs at most 8 bytes). */
ImageFormat image_sniff(const uint8_t *data, size_t len);
const char *image_format_name(ImageFormat f);

/* Decodes data[0..len) into img (owned by the caller: image_free). Fails, naming
 * the reason, on an unknown format, a header announcing more than max_pixels
 * pixels (0 = no limit), truncated or corrupt data. On failure img is empty.
 * Strict: any truncation (even a missing IEND or EOI), a CRC or Adler-32
 * mismatch, or a libjpeg warning about damaged data is an error; the messages are
 * listed at the top of image.c. */
int image_decode(Image *img, const uint8_t *data, size_t len, uint64_t max_pixels, Error *err);

/* Reads the file and decodes it; errors start with the path. Zero-byte files
 * and files over 256 MiB are errors. */
int image_load(Image *img, const char *path, uint64_t max_pixels, Error *err);

/* Reads only the header: format, width and height, without decoding pixels.
 * Needs only the bytes up to the end of the PNG IHDR chunk (33 bytes) or the JPEG
 * frame header (SOF), so a prefix of the file is enough. The side limits apply
 * (1..IMAGE_MAX_SIDE), max_pixels does not: the caller compares. Output pointers
 * may be NULL; on failure they get IMAGE_UNKNOWN and 0. */
int image_probe(const uint8_t *data, size_t len, ImageFormat *format, int *width, int *height,
                Error *err);

/* Frees img->rgb and zeroes *img; img may be NULL or already freed. */
void image_free(Image *img);

/* Writes 8-bit pixels (channels 1 = gray, 3 = RGB, 4 = RGBA) as a PNG, atomically
 * (temporary file + rename). For tools and tests. */
int image_write_png(const char *path, const uint8_t *pixels, int width, int height, int channels,
                    Error *err);

#endif
