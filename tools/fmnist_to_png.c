/*
 * fmnist_to_png.c: turns the Fashion-MNIST IDX files (Debian's dataset-fashion-mnist
 * package, /usr/share/datasets/fashion-mnist) into a class-folder PNG dataset that
 * dataset_scan reads: small, real, reproducible data for tests and demos.
 *
 *   fmnist_to_png OUT_DIR [--classes 0,1,2|all] [--per-class N | --counts 0:500,1:50]
 *                 [--size S] [--split train|test|both] [--layout flat|split]
 *                 [--source DIR] [--seed K] [--val-fraction F] [--force]
 *
 * Selection is deterministic: the first N images of each class in file order, or,
 * with --seed, the first N of a per-class shuffle (rng.h, seeded by K and the class).
 * Files are named after their source and index (train-00042.png is image 42 of the
 * train file), so every PNG can be traced back to the IDX data.
 * Exit status: 0 done, 2 usage error, 1 any other error (the message names the file
 * and, for a malformed IDX file, the byte offset).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <zlib.h>

#include "error.h"
#include "image.h"
#include "rng.h"

#define N_CLASSES 10
#define MAX_SIZE 1024
#define IDX_MAX_DIM 4096

static const char *const class_names[N_CLASSES] = {
    "t-shirt_top", "trouser", "pullover", "dress", "coat",
    "sandal",      "shirt",   "sneaker",  "bag",   "ankle_boot",
};

enum { SRC_TRAIN = 0, SRC_TEST = 1 };
static const char *const src_prefix[2] = {"train", "t10k"};

typedef struct {
    const char *out_dir;
    const char *source;
    int use_class[N_CLASSES];
    long want[N_CLASSES];        /* images per class; -1: all available */
    int size;
    int split;                   /* 0 train, 1 test, 2 both */
    int layout_split;
    int have_seed;
    uint64_t seed;
    int have_val_fraction;
    double val_fraction;
    int force;
} Args;

/* One IDX image file and its labels, fully in memory. */
typedef struct {
    int count, rows, cols;
    uint8_t *pixels;             /* count * rows * cols */
    uint8_t *labels;             /* count */
} IdxSet;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fmnist_to_png OUT_DIR [--classes 0,1,2|all] [--per-class N | --counts "
            "0:500,1:50]\n"
            "                     [--size S] [--split train|test|both] [--layout flat|split]\n"
            "                     [--source DIR] [--seed K] [--val-fraction F] [--force]\n"
            "  --classes      Fashion-MNIST labels to keep (default all)\n"
            "  --per-class N  images per class (default: every image of the class)\n"
            "  --counts L:N,  images per listed class (an imbalanced set; sets the classes)\n"
            "  --size S       output side in pixels, 1..%d (default 28); bilinear, or nearest\n"
            "                 when S is a multiple of 28\n"
            "  --split        which IDX files to read (default train; both = train then t10k)\n"
            "  --layout       flat: OUT/<class>/; split: OUT/train/<class>/ + OUT/val/<class>/\n"
            "                 (with --split both: train file -> train/, t10k file -> val/;\n"
            "                 otherwise the last round(n*F) of each class go to val/)\n"
            "  --source DIR   IDX folder (default /usr/share/datasets/fashion-mnist)\n"
            "  --seed K       choose images by a seeded shuffle instead of file order\n"
            "  --val-fraction F  for --layout split from one file (default 0.2)\n"
            "  --force        write into a non-empty OUT_DIR\n",
            MAX_SIZE);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "fmnist_to_png: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    usage(stderr);
    return 2;
}

/* Parses a whole decimal integer in [lo, hi]. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_classes(const char *s, Args *a)
{
    if (strcmp(s, "all") == 0) {
        for (int c = 0; c < N_CLASSES; c++)
            a->use_class[c] = 1;
        return 0;
    }
    char buf[256];
    if (snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf || !buf[0])
        return -1;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long c;
        if (parse_long(tok, 0, N_CLASSES - 1, &c) || a->use_class[c])
            return -1;
        a->use_class[c] = 1;
    }
    return 0;
}

static int parse_counts(const char *s, Args *a)
{
    char buf[512];
    if (snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf || !buf[0])
        return -1;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        if (!colon)
            return -1;
        *colon = '\0';
        long c, n;
        if (parse_long(tok, 0, N_CLASSES - 1, &c) || parse_long(colon + 1, 1, INT_MAX, &n) ||
            a->use_class[c])
            return -1;
        a->use_class[c] = 1;
        a->want[c] = n;
    }
    return 0;
}

/* A number in [0, 1); *ok says whether v was one. */
static double parse_fraction(const char *v, int *ok)
{
    char *end;
    errno = 0;
    double f = strtod(v, &end);
    *ok = !errno && end != v && !*end && f >= 0.0 && f < 1.0;
    return f;
}

/* Returns 0 when parsed, 2 on a usage error, 3 when --help was printed. */
static int parse_args(int argc, char **argv, Args *a)
{
    memset(a, 0, sizeof *a);
    a->source = "/usr/share/datasets/fashion-mnist";
    a->size = 28;
    a->val_fraction = 0.2;
    for (int c = 0; c < N_CLASSES; c++)
        a->want[c] = -1;
    const char *classes = NULL, *counts = NULL;
    long per_class = -1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            usage(stdout);
            return 3;
        }
        if (strcmp(o, "--force") == 0) {
            a->force = 1;
            continue;
        }
        if (strncmp(o, "--", 2) != 0) {
            if (a->out_dir)
                return usage_error("more than one OUT_DIR given ('%s')", o);
            a->out_dir = o;
            continue;
        }
        static const char *const valued[] = {"--classes", "--per-class", "--counts",
                                             "--size",    "--split",     "--layout",
                                             "--source",  "--seed",      "--val-fraction"};
        int known = 0;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
            known |= strcmp(o, valued[k]) == 0;
        if (!known)
            return usage_error("unknown option %s", o);
        if (i + 1 >= argc)
            return usage_error("option %s needs a value", o);
        const char *v = argv[++i];
        long n;
        if (strcmp(o, "--classes") == 0) {
            classes = v;
        } else if (strcmp(o, "--per-class") == 0) {
            if (parse_long(v, 1, INT_MAX, &per_class))
                return usage_error("--per-class wants a positive integer, not '%s'", v);
        } else if (strcmp(o, "--counts") == 0) {
            counts = v;
        } else if (strcmp(o, "--size") == 0) {
            if (parse_long(v, 1, MAX_SIZE, &n))
                return usage_error("--size wants an integer in 1..1024, not '%s'", v);
            a->size = (int)n;
        } else if (strcmp(o, "--split") == 0) {
            if (strcmp(v, "train") == 0)
                a->split = 0;
            else if (strcmp(v, "test") == 0)
                a->split = 1;
            else if (strcmp(v, "both") == 0)
                a->split = 2;
            else
                return usage_error("--split wants train, test or both, not '%s'", v);
        } else if (strcmp(o, "--layout") == 0) {
            if (strcmp(v, "flat") == 0)
                a->layout_split = 0;
            else if (strcmp(v, "split") == 0)
                a->layout_split = 1;
            else
                return usage_error("--layout wants flat or split, not '%s'", v);
        } else if (strcmp(o, "--source") == 0) {
            a->source = v;
        } else if (strcmp(o, "--seed") == 0) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-')
                return usage_error("--seed wants a non-negative integer, not '%s'", v);
            a->seed = s;
            a->have_seed = 1;
        } else {
            a->val_fraction = parse_fraction(v, &a->have_val_fraction);
            if (!a->have_val_fraction)
                return usage_error("--val-fraction wants a number in [0, 1), not '%s'", v);
        }
    }
    if (!a->out_dir)
        return usage_error("%s", "no OUT_DIR given");
    if (counts && (classes || per_class > 0))
        return usage_error("%s", "--counts sets the classes and counts: do not combine it with "
                                 "--classes or --per-class");
    if (counts) {
        if (parse_counts(counts, a))
            return usage_error("--counts wants LABEL:N pairs (labels 0..9, each once, N >= 1), "
                               "not '%s'", counts);
    } else {
        if (parse_classes(classes ? classes : "all", a))
            return usage_error("--classes wants 'all' or distinct labels 0..9 separated by "
                               "commas, not '%s'", classes);
        for (int c = 0; c < N_CLASSES; c++)
            a->want[c] = per_class;
    }
    if (a->have_val_fraction && !(a->layout_split && a->split != 2))
        return usage_error("%s", "--val-fraction applies only to --layout split with --split "
                                 "train or test");
    return 0;
}

/* ---- IDX reading ------------------------------------------------------------- */

/* Reads exactly len bytes at offset *off of the (gzip) file; errors name the file
 * and the offset. */
static int gz_read_exact(gzFile f, const char *path, uint8_t *dst, size_t len, size_t *off,
                         const char *what, Error *err)
{
    size_t done = 0;
    while (done < len) {
        unsigned chunk = len - done > (1u << 20) ? (1u << 20) : (unsigned)(len - done);
        int got = gzread(f, dst + done, chunk);
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            return error_set(err, "%s: read error at offset %zu (%s): %s", path, *off + done,
                             what, zerr == Z_ERRNO ? strerror(errno) : msg);
        }
        if (got == 0)
            return error_set(err, "%s: truncated at offset %zu: %s needs %zu bytes, the file "
                                  "ends after %zu",
                             path, *off + done, what, len, done);
        done += (size_t)got;
    }
    *off += len;
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Checks that nothing follows the expected data. */
static int gz_expect_end(gzFile f, const char *path, size_t off, Error *err)
{
    uint8_t b;
    int got = gzread(f, &b, 1);
    if (got < 0)
        return error_set(err, "%s: read error at offset %zu", path, off);
    if (got > 0)
        return error_set(err, "%s: unexpected data at offset %zu, after the last item", path, off);
    return 0;
}

static int idx_read_images(IdxSet *set, const char *path, Error *err)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return error_set(err, "%s: cannot open: %s", path, errno ? strerror(errno) : "gzopen failed");
    uint8_t h[16];
    size_t off = 0;
    int rc = -1;
    if (gz_read_exact(f, path, h, 16, &off, "the IDX image header", err))
        goto out;
    uint32_t magic = be32(h), count = be32(h + 4), rows = be32(h + 8), cols = be32(h + 12);
    if (magic != 2051) {
        error_set(err, "%s: offset 0: magic number %u, expected 2051 (IDX3 unsigned-byte images)",
                  path, magic);
        goto out;
    }
    if (count == 0 || count > (1u << 24)) {
        error_set(err, "%s: offset 4: image count %u is outside 1..%u", path, count, 1u << 24);
        goto out;
    }
    if (rows == 0 || rows > IDX_MAX_DIM || cols == 0 || cols > IDX_MAX_DIM) {
        error_set(err, "%s: offset 8: image size %ux%u is outside 1..%d", path, rows, cols,
                  IDX_MAX_DIM);
        goto out;
    }
    size_t bytes = (size_t)count * rows * cols;
    set->pixels = malloc(bytes);
    if (!set->pixels) {
        error_set(err, "%s: out of memory for %zu bytes of pixels", path, bytes);
        goto out;
    }
    if (gz_read_exact(f, path, set->pixels, bytes, &off, "the pixel data", err) ||
        gz_expect_end(f, path, off, err))
        goto out;
    set->count = (int)count;
    set->rows = (int)rows;
    set->cols = (int)cols;
    rc = 0;
out:
    gzclose(f);
    return rc;
}

static int idx_read_labels(IdxSet *set, const char *path, Error *err)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return error_set(err, "%s: cannot open: %s", path, errno ? strerror(errno) : "gzopen failed");
    uint8_t h[8];
    size_t off = 0;
    int rc = -1;
    if (gz_read_exact(f, path, h, 8, &off, "the IDX label header", err))
        goto out;
    uint32_t magic = be32(h), count = be32(h + 4);
    if (magic != 2049) {
        error_set(err, "%s: offset 0: magic number %u, expected 2049 (IDX1 unsigned-byte labels)",
                  path, magic);
        goto out;
    }
    if (count != (uint32_t)set->count) {
        error_set(err, "%s: offset 4: %u labels for %d images", path, count, set->count);
        goto out;
    }
    set->labels = malloc(count);
    if (!set->labels) {
        error_set(err, "%s: out of memory", path);
        goto out;
    }
    if (gz_read_exact(f, path, set->labels, count, &off, "the labels", err) ||
        gz_expect_end(f, path, off, err))
        goto out;
    for (uint32_t i = 0; i < count; i++)
        if (set->labels[i] >= N_CLASSES) {
            error_set(err, "%s: offset %u: label %u is outside 0..9", path, 8 + i,
                      set->labels[i]);
            goto out;
        }
    rc = 0;
out:
    gzclose(f);
    return rc;
}

static void idx_free(IdxSet *set)
{
    free(set->pixels);
    free(set->labels);
    memset(set, 0, sizeof *set);
}

static int idx_load(IdxSet *set, const char *dir, int src, Error *err)
{
    char img[4096], lab[4096];
    snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte.gz", dir, src_prefix[src]);
    snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte.gz", dir, src_prefix[src]);
    if (idx_read_images(set, img, err) || idx_read_labels(set, lab, err)) {
        idx_free(set);
        return -1;
    }
    return 0;
}

/* ---- resize ------------------------------------------------------------------ */

/* Resizes gray src (h x w) to dst (s x s). Nearest (pixel replication, exact) when s
 * is a multiple of both sides; otherwise bilinear with half-pixel centres and no
 * antialiasing, as torch's interpolate(mode="bilinear", align_corners=False),
 * rounded to the nearest integer. */
static void resize_gray(uint8_t *dst, int s, const uint8_t *src, int h, int w)
{
    if (s % h == 0 && s % w == 0) {
        for (int y = 0; y < s; y++)
            for (int x = 0; x < s; x++)
                dst[y * s + x] = src[(y / (s / h)) * w + x / (s / w)];
        return;
    }
    for (int y = 0; y < s; y++) {
        double sy = (y + 0.5) * h / s - 0.5;
        if (sy < 0)
            sy = 0;
        int y0 = (int)sy;
        int y1 = y0 + (y0 < h - 1);
        double fy = sy - y0;
        for (int x = 0; x < s; x++) {
            double sx = (x + 0.5) * w / s - 0.5;
            if (sx < 0)
                sx = 0;
            int x0 = (int)sx;
            int x1 = x0 + (x0 < w - 1);
            double fx = sx - x0;
            double top = src[y0 * w + x0] * (1 - fx) + src[y0 * w + x1] * fx;
            double bot = src[y1 * w + x0] * (1 - fx) + src[y1 * w + x1] * fx;
            double v = top * (1 - fy) + bot * fy;
            dst[y * s + x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : floor(v + 0.5));
        }
    }
}

/* ---- output ------------------------------------------------------------------ */

static int make_dir(const char *path, Error *err)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            return 0;
        return error_set(err, "%s exists and is not a folder", path);
    }
    return error_set(err, "cannot create folder %s: %s", path, strerror(errno));
}

/* OUT_DIR: created when missing; an existing one must be empty unless --force. */
static int prepare_out_dir(const Args *a, Error *err)
{
    struct stat st;
    if (stat(a->out_dir, &st) != 0) {
        if (errno != ENOENT)
            return error_set(err, "%s: %s", a->out_dir, strerror(errno));
        return make_dir(a->out_dir, err);
    }
    if (!S_ISDIR(st.st_mode))
        return error_set(err, "%s exists and is not a folder", a->out_dir);
    DIR *d = opendir(a->out_dir);
    if (!d)
        return error_set(err, "cannot read %s: %s", a->out_dir, strerror(errno));
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            empty = 0;
            break;
        }
    closedir(d);
    if (!empty && !a->force)
        return error_set(err, "%s is not empty (use --force to write into it anyway)",
                         a->out_dir);
    return 0;
}

/* The indices of class c in set, in file order or shuffled with the seed, cut to
 * want (-1: all). Fails when the set holds fewer. */
static int select_class(const IdxSet *set, const char *file, int c, long want, const Args *a,
                        int **out, int *n_out, Error *err)
{
    int n = 0;
    for (int i = 0; i < set->count; i++)
        n += set->labels[i] == c;
    if (want > n)
        return error_set(err, "%s has %d images of class %d (%s), %ld were asked for", file, n, c,
                         class_names[c], want);
    int *idx = malloc((size_t)(n ? n : 1) * sizeof *idx);
    if (!idx)
        return error_set(err, "out of memory");
    n = 0;
    for (int i = 0; i < set->count; i++)
        if (set->labels[i] == c)
            idx[n++] = i;
    if (a->have_seed) {
        Rng r;
        rng_seed(&r, a->seed ^ ((uint64_t)(c + 1) * 0xD1B54A32D192ED03ULL));
        for (int i = n - 1; i > 0; i--) {
            int j = (int)rng_below(&r, (uint64_t)i + 1);
            int t = idx[i];
            idx[i] = idx[j];
            idx[j] = t;
        }
    }
    *out = idx;
    *n_out = want >= 0 ? (int)want : n;
    return 0;
}

typedef struct {
    long written, total;
    long per_class[N_CLASSES][2];   /* [class][0 train/flat, 1 val] */
} Progress;

static int write_image(const Args *a, const IdxSet *set, int src, int i, int c, const char *sub,
                       uint8_t *buf, Progress *p, Error *err)
{
    char dir[4096], path[4200];
    if (sub)
        snprintf(dir, sizeof dir, "%s/%s/%s", a->out_dir, sub, class_names[c]);
    else
        snprintf(dir, sizeof dir, "%s/%s", a->out_dir, class_names[c]);
    snprintf(path, sizeof path, "%s/%s-%05d.png", dir, src_prefix[src], i);
    const uint8_t *img = set->pixels + (size_t)i * set->rows * set->cols;
    resize_gray(buf, a->size, img, set->rows, set->cols);
    if (image_write_png(path, buf, a->size, a->size, 1, err))
        return -1;
    p->per_class[c][sub && strcmp(sub, "val") == 0]++;
    if (++p->written % 1000 == 0)
        fprintf(stderr, "fmnist_to_png: %ld of %ld images written\n", p->written, p->total);
    return 0;
}

/* Writes the selection of one IDX set. sub: NULL (flat), "train" or "val"; with
 * split_by_fraction the last round(n*F) of each class go to val/ instead (at
 * least one stays in train/). */
static int write_set(const Args *a, const IdxSet *set, int src, const char *file, const char *sub,
                     int split_by_fraction, Progress *p, Error *err)
{
    uint8_t *buf = malloc((size_t)a->size * a->size);
    if (!buf)
        return error_set(err, "out of memory");
    int rc = -1;
    for (int c = 0; c < N_CLASSES; c++) {
        if (!a->use_class[c])
            continue;
        int *idx = NULL, n = 0;
        if (select_class(set, file, c, a->want[c], a, &idx, &n, err))
            goto out;
        int n_val = 0;
        if (split_by_fraction) {
            n_val = (int)round(n * a->val_fraction);
            if (n_val > n - 1)
                n_val = n > 0 ? n - 1 : 0;
        }
        for (int k = 0; k < n; k++) {
            const char *where = split_by_fraction ? (k >= n - n_val ? "val" : "train") : sub;
            if (write_image(a, set, src, idx[k], c, where, buf, p, err)) {
                free(idx);
                goto out;
            }
        }
        free(idx);
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

/* Adds the number of images the selection takes from set to *total; fails, before
 * anything is written, when a class has fewer images than asked for. */
static int count_selected(const Args *a, const IdxSet *set, const char *file, long *total,
                          Error *err)
{
    for (int c = 0; c < N_CLASSES; c++) {
        if (!a->use_class[c])
            continue;
        long n = 0;
        for (int i = 0; i < set->count; i++)
            n += set->labels[i] == c;
        if (a->want[c] > n)
            return error_set(err, "%s has %ld images of class %d (%s), %ld were asked for",
                             file, n, c, class_names[c], a->want[c]);
        *total += a->want[c] >= 0 ? a->want[c] : n;
    }
    return 0;
}

static int run(const Args *a, Progress *p, Error *err)
{
    struct stat st;
    if (stat(a->source, &st) != 0)
        return error_set(err, "source folder %s: %s", a->source, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return error_set(err, "source %s is not a folder", a->source);

    IdxSet sets[2];
    memset(sets, 0, sizeof sets);
    int use[2] = {a->split != 1, a->split != 0};
    int rc = -1;
    for (int s = 0; s < 2; s++)
        if (use[s] && idx_load(&sets[s], a->source, s, err))
            goto out;
    char files[2][4200];
    for (int s = 0; s < 2; s++) {
        snprintf(files[s], sizeof files[s], "%s/%s-images-idx3-ubyte.gz", a->source,
                 src_prefix[s]);
        if (use[s] && count_selected(a, &sets[s], files[s], &p->total, err))
            goto out;
    }
    if (prepare_out_dir(a, err))
        goto out;

    /* class folders first, so an empty class still has its folder */
    const char *subs[2] = {"train", "val"};
    for (int k = 0; k < (a->layout_split ? 2 : 1); k++) {
        char dir[4096];
        if (a->layout_split) {
            snprintf(dir, sizeof dir, "%s/%s", a->out_dir, subs[k]);
            if (make_dir(dir, err))
                goto out;
        }
        for (int c = 0; c < N_CLASSES; c++) {
            if (!a->use_class[c])
                continue;
            if (a->layout_split)
                snprintf(dir, sizeof dir, "%s/%s/%s", a->out_dir, subs[k], class_names[c]);
            else
                snprintf(dir, sizeof dir, "%s/%s", a->out_dir, class_names[c]);
            if (make_dir(dir, err))
                goto out;
        }
    }
    for (int s = 0; s < 2; s++) {
        if (!use[s])
            continue;
        const char *sub = NULL;
        int by_fraction = 0;
        if (a->layout_split) {
            if (a->split == 2)
                sub = s == SRC_TRAIN ? "train" : "val";
            else
                by_fraction = 1;
        }
        if (write_set(a, &sets[s], s, files[s], sub, by_fraction, p, err))
            goto out;
    }
    rc = 0;
out:
    idx_free(&sets[0]);
    idx_free(&sets[1]);
    return rc;
}

int main(int argc, char **argv)
{
    Args a;
    int rc = parse_args(argc, argv, &a);
    if (rc == 3)
        return 0;
    if (rc)
        return rc;
    Progress p;
    memset(&p, 0, sizeof p);
    Error err = {{0}};
    if (run(&a, &p, &err)) {
        fprintf(stderr, "fmnist_to_png: %s\n", err.msg);
        return 1;
    }
    static const char *const split_names[3] = {"train", "test", "both"};
    printf("wrote %ld images of %dx%d gray to %s (layout %s, source %s, selection %s)\n",
           p.written, a.size, a.size, a.out_dir, a.layout_split ? "split" : "flat",
           split_names[a.split], a.have_seed ? "seeded shuffle" : "file order");
    for (int c = 0; c < N_CLASSES; c++) {
        if (!a.use_class[c])
            continue;
        if (a.layout_split)
            printf("  %d %-12s train %ld, val %ld\n", c, class_names[c], p.per_class[c][0],
                   p.per_class[c][1]);
        else
            printf("  %d %-12s %ld\n", c, class_names[c], p.per_class[c][0]);
    }
    return 0;
}
