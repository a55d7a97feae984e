/*
 * test_dataset.c: unit tests of core/dataset (cmocka).
 *
 * Every fixture is a small folder tree built in the scratch dir with
 * image_write_png (and raw bytes for broken files). Covered: both layouts (val/
 * and validation/), class order by bytes, nested folders, hidden entries, the
 * stratified split against an independent re-implementation of the documented
 * rule, every report field on a hand-built set, bad files skipped with their
 * reason, each error that stops a scan, symlink confinement and loops, and equal
 * results for 1 and 2 decode threads.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "dataset.h"
#include "image.h"
#include "rng.h"
#include "testutil.h"

/* ---- fixtures ------------------------------------------------------------------ */

/* mkdir -p */
static void make_dirs(const char *path)
{
    char buf[4096];
    assert_true(strlen(path) < sizeof buf);
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                fail_msg("mkdir %s: %s", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", buf, strerror(errno));
}

/* ROOT/rel as a fresh string (static ring of buffers, so a few can be live). */
static const char *join(const char *root, const char *rel)
{
    static char ring[8][4096];
    static int next;
    char *b = ring[next++ % 8];
    if (snprintf(b, sizeof ring[0], "%s/%s", root, rel) >= (int)sizeof ring[0])
        fail_msg("path too long: %s/%s", root, rel);
    return b;
}

/* A fresh folder in the scratch dir for one test (a ring of buffers, so a test
 * can hold a few). */
static const char *fixture(const char *name)
{
    static char ring[4][4096];
    static int next;
    char *buf = ring[next++ % 4];
    snprintf(buf, sizeof ring[0], "%s", testutil_tmp_path(name));
    make_dirs(buf);
    return buf;
}

/* Pixels that differ from image to image: byte i of image `seed`. */
static uint8_t pattern(int seed, size_t i)
{
    return (uint8_t)(seed * 37 + i * 11 + (i * i) % 7);
}

/* Writes ROOT/rel (creating folders) as a w x h PNG with `channels` channels; the
 * pixels are pattern(seed, i), or px when not NULL. */
static void put_png(const char *root, const char *rel, int w, int h, int channels, int seed,
                    const uint8_t *px)
{
    const char *path = join(root, rel);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    make_dirs(dir);
    size_t n = (size_t)w * h * channels;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = px ? px[i] : pattern(seed, i);
    Error err = {{0}};
    if (image_write_png(path, buf, w, h, channels, &err) != 0)
        fail_msg("image_write_png: %s", err.msg);
    free(buf);
}

static void put_bytes(const char *root, const char *rel, const void *data, size_t len)
{
    const char *path = join(root, rel);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    make_dirs(dir);
    testutil_write_file(path, data, len);
}

static void put_link(const char *target, const char *root, const char *rel)
{
    const char *path = join(root, rel);
    if (symlink(target, path) != 0)
        fail_msg("symlink %s -> %s: %s", path, target, strerror(errno));
}

/* Options with one thread and the default limits. */
static DatasetOptions opts(void)
{
    DatasetOptions o = dataset_default_options();
    o.threads = 1;
    return o;
}

static void scan_ok(Dataset *ds, const char *root, const DatasetOptions *o)
{
    Error err = {{0}};
    if (dataset_scan(ds, root, o, &err) != 0)
        fail_msg("dataset_scan(%s): %s", root, err.msg);
}

/* Scans expecting failure; the message must contain every NULL-terminated
 * substring, and the Dataset must come back empty. */
static void expect_scan_error(const char *root, const DatasetOptions *o, ...)
{
    Dataset ds;
    memset(&ds, 0x5a, sizeof ds);
    Error err = {{0}};
    assert_int_equal(dataset_scan(&ds, root, o, &err), -1);
    print_message("  error: %s\n", err.msg);
    Dataset zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&ds, &zero, sizeof ds);
    va_list ap;
    va_start(ap, o);
    for (const char *want; (want = va_arg(ap, const char *));)
        if (!strstr(err.msg, want))
            fail_msg("error '%s' lacks '%s'", err.msg, want);
    va_end(ap);
}

/* The item's path relative to the dataset root. */
static const char *rel_path(const Dataset *ds, int i)
{
    const char *p = ds->items[i].path;
    size_t n = strlen(ds->root);
    assert_memory_equal(p, ds->root, n);
    assert_int_equal(p[n], '/');
    return p + n + 1;
}

static int find_item(const Dataset *ds, const char *rel)
{
    for (int i = 0; i < ds->n_items; i++)
        if (strcmp(rel_path(ds, i), rel) == 0)
            return i;
    return -1;
}

/* ---- layouts ------------------------------------------------------------------- */

static void build_split_tree(const char *root, const char *val_name)
{
    char rel[256];
    put_png(root, "train/cat/c1.png", 4, 3, 3, 1, NULL);
    put_png(root, "train/cat/c2.png", 4, 3, 3, 2, NULL);
    put_png(root, "train/dog/d1.png", 5, 2, 3, 3, NULL);
    snprintf(rel, sizeof rel, "%s/cat/v1.png", val_name);
    put_png(root, rel, 2, 2, 3, 4, NULL);
    snprintf(rel, sizeof rel, "%s/dog/v2.png", val_name);
    put_png(root, rel, 2, 2, 3, 5, NULL);
    snprintf(rel, sizeof rel, "%s/dog/v3.png", val_name);
    put_png(root, rel, 2, 2, 3, 6, NULL);
    put_bytes(root, "README.txt", "not data", 8);   /* next to train/: ignored */
    make_dirs(join(root, "test/cat"));               /* other folders: ignored */
}

static void check_split_tree(const Dataset *ds, const char *val_name)
{
    char rel[256];
    assert_int_equal(ds->split_layout, 1);
    assert_int_equal(ds->n_classes, 2);
    assert_string_equal(ds->classes[0], "cat");
    assert_string_equal(ds->classes[1], "dog");
    assert_int_equal(ds->n_items, 6);
    assert_int_equal(ds->n_problems, 0);
    static const char *train_rel[] = {"train/cat/c1.png", "train/cat/c2.png", "train/dog/d1.png"};
    static const int label[] = {0, 0, 1, 0, 1, 1};
    for (int i = 0; i < 3; i++)
        assert_string_equal(rel_path(ds, i), train_rel[i]);
    snprintf(rel, sizeof rel, "%s/cat/v1.png", val_name);
    assert_string_equal(rel_path(ds, 3), rel);
    snprintf(rel, sizeof rel, "%s/dog/v2.png", val_name);
    assert_string_equal(rel_path(ds, 4), rel);
    snprintf(rel, sizeof rel, "%s/dog/v3.png", val_name);
    assert_string_equal(rel_path(ds, 5), rel);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(ds->items[i].label, label[i]);
        assert_int_equal(ds->items[i].split, i < 3 ? SPLIT_TRAIN : SPLIT_VAL);
        assert_int_equal(ds->items[i].path[0], '/');
    }
    assert_int_equal(ds->items[2].width, 5);
    assert_int_equal(ds->items[2].height, 2);
    assert_int_equal(ds->counts[0].count[SPLIT_TRAIN], 2);
    assert_int_equal(ds->counts[0].count[SPLIT_VAL], 1);
    assert_int_equal(ds->counts[1].count[SPLIT_TRAIN], 1);
    assert_int_equal(ds->counts[1].count[SPLIT_VAL], 2);
}

static void test_split_layout_val(void **state)
{
    (void)state;
    const char *root = fixture("split_val");
    build_split_tree(root, "val");
    Dataset ds;
    scan_ok(&ds, root, NULL);   /* NULL options: the defaults */
    check_split_tree(&ds, "val");
    char *real = realpath(root, NULL);
    assert_string_equal(ds.root, real);
    free(real);
    dataset_free(&ds);
}

static void test_split_layout_validation(void **state)
{
    (void)state;
    const char *root = fixture("split_validation");
    build_split_tree(root, "validation");
    Dataset ds;
    DatasetOptions o = opts();
    o.val_fraction = 0.5; /* ignored in this layout */
    scan_ok(&ds, root, &o);
    check_split_tree(&ds, "validation");
    dataset_free(&ds);
}

/* A relative root comes back resolved and absolute. */
static void test_relative_root(void **state)
{
    (void)state;
    const char *root = fixture("relative/data");
    put_png(root, "a/x.png", 2, 2, 3, 1, NULL);
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(testutil_tmp_path("relative")), 0);
    Dataset ds;
    DatasetOptions o = opts();
    Error err = {{0}};
    int rc = dataset_scan(&ds, "./data/../data", &o, &err);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc, 0);
    assert_int_equal(ds.root[0], '/');
    assert_non_null(strstr(ds.root, "/relative/data"));
    assert_string_equal(ds.items[0].path + strlen(ds.root), "/a/x.png");
    dataset_free(&ds);
}

static void test_class_order_is_byte_order(void **state)
{
    (void)state;
    const char *root = fixture("order");
    put_png(root, "b/1.png", 2, 2, 3, 1, NULL);
    put_png(root, "a/1.png", 2, 2, 3, 2, NULL);
    put_png(root, "B/1.png", 2, 2, 3, 3, NULL);
    put_png(root, "_x/1.png", 2, 2, 3, 4, NULL);
    put_png(root, "10/1.png", 2, 2, 3, 5, NULL);
    put_png(root, "9/1.png", 2, 2, 3, 6, NULL);
    Dataset ds;
    DatasetOptions o = opts();
    o.val_fraction = 0;
    scan_ok(&ds, root, &o);
    static const char *want[] = {"10", "9", "B", "_x", "a", "b"};   /* Python's sorted() */
    assert_int_equal(ds.n_classes, 6);
    for (int c = 0; c < 6; c++) {
        assert_string_equal(ds.classes[c], want[c]);
        assert_int_equal(dataset_class_index(&ds, want[c]), c);
        assert_int_equal(ds.items[c].label, c);
    }
    assert_int_equal(dataset_class_index(&ds, "c"), -1);
    assert_int_equal(dataset_class_index(&ds, ""), -1);
    assert_int_equal(ds.split_layout, 0);
    dataset_free(&ds);
}

/* Files in nested folders are found, hidden entries are not, and paths sort by
 * bytes over the whole relative path ("x.png" < "x/..." since '.' < '/'). */
static void test_nested_and_hidden(void **state)
{
    (void)state;
    const char *root = fixture("nested");
    put_png(root, "cls/z.png", 2, 2, 3, 1, NULL);
    put_png(root, "cls/sub/deeper/a.png", 2, 2, 3, 2, NULL);
    put_png(root, "cls/sub.png", 2, 2, 3, 3, NULL);
    put_png(root, "cls/sub/b.png", 2, 2, 3, 4, NULL);
    put_png(root, "cls/.hidden.png", 2, 2, 3, 5, NULL);
    put_png(root, "cls/.git/c.png", 2, 2, 3, 6, NULL);
    put_png(root, ".cache/d.png", 2, 2, 3, 7, NULL);   /* a hidden class folder */
    put_png(root, "cls/sub/.e.png", 2, 2, 3, 8, NULL);
    put_png(root, "cls/with space \xc3\xa9.png", 2, 2, 3, 9, NULL);
    Dataset ds;
    DatasetOptions o = opts();
    o.val_fraction = 0;
    scan_ok(&ds, root, &o);
    assert_int_equal(ds.n_classes, 1);
    assert_string_equal(ds.classes[0], "cls");
    assert_int_equal(ds.n_items, 5);
    assert_string_equal(rel_path(&ds, 0), "cls/sub.png");
    assert_string_equal(rel_path(&ds, 1), "cls/sub/b.png");
    assert_string_equal(rel_path(&ds, 2), "cls/sub/deeper/a.png");
    assert_string_equal(rel_path(&ds, 3), "cls/with space \xc3\xa9.png");
    assert_string_equal(rel_path(&ds, 4), "cls/z.png");
    assert_int_equal(ds.n_problems, 0);
    dataset_free(&ds);
}

/* ---- the stratified split ------------------------------------------------------- */

/* The documented rule, re-implemented: class c's usable files sorted by path,
 * shuffled (Fisher-Yates from the end) with an Rng seeded by
 * seed ^ (c + 1) * 0xD1B54A32D192ED03; the first round(n * f) go to val, at most
 * n - 1. want_val[i] = 1 when file i (in sorted order) goes to val. */
static int expected_val(int n, double f, uint64_t seed, int c, int *want_val)
{
    int idx[64];
    assert_true(n <= 64);
    for (int i = 0; i < n; i++) {
        idx[i] = i;
        want_val[i] = 0;
    }
    Rng r;
    rng_stream(&r, seed, RNG_SPLIT, (uint64_t)c, 0); /* the class's split stream */
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(&r, (uint64_t)i + 1);
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
    int n_val = (int)round(n * f);
    if (n_val > n - 1)
        n_val = n - 1;
    for (int i = 0; i < n_val; i++)
        want_val[idx[i]] = 1;
    return n_val;
}

static const int split_sizes[] = {10, 7, 1, 3, 2};
static const char *split_classes[] = {"a", "b", "c", "d", "e"};

static const char *split_fixture(void)
{
    static char root[4096];
    if (root[0])
        return root;
    snprintf(root, sizeof root, "%s", fixture("stratified"));
    int seed = 100;
    for (int c = 0; c < 5; c++)
        for (int i = 0; i < split_sizes[c]; i++) {
            char rel[64];
            snprintf(rel, sizeof rel, "%s/f%02d.png", split_classes[c], i);
            put_png(root, rel, 3, 2, 3, seed++, NULL);
        }
    /* one broken file: it must not take part in the split */
    put_bytes(root, "a/f99.png", "broken", 6);
    return root;
}

/* Checks ds against expected_val for every class. */
static void check_split(const Dataset *ds, double f, uint64_t seed)
{
    for (int c = 0; c < 5; c++) {
        int want_val[64];
        int n = split_sizes[c];
        int n_val = expected_val(n, f, seed, c, want_val);
        assert_int_equal(ds->counts[c].count[SPLIT_VAL], n_val);
        assert_int_equal(ds->counts[c].count[SPLIT_TRAIN], n - n_val);
        for (int i = 0; i < n; i++) {
            char rel[64];
            snprintf(rel, sizeof rel, "%s/f%02d.png", split_classes[c], i);
            int k = find_item(ds, rel);
            assert_true(k >= 0);
            assert_int_equal(ds->items[k].label, c);
            assert_int_equal(ds->items[k].split, want_val[i] ? SPLIT_VAL : SPLIT_TRAIN);
        }
    }
}

static void test_stratified_split(void **state)
{
    (void)state;
    const char *root = split_fixture();
    DatasetOptions o = opts();
    o.val_fraction = 0.2;
    o.seed = 7;
    Dataset ds;
    scan_ok(&ds, root, &o);
    assert_int_equal(ds.split_layout, 0);
    assert_int_equal(ds.n_items, 23);
    assert_int_equal(ds.n_problems, 1);
    /* round(10*.2)=2, round(7*.2)=1, 1 -> 0 (one stays in train), round(3*.2)=1,
     * round(2*.2)=0 */
    static const int n_val[] = {2, 1, 0, 1, 0};
    for (int c = 0; c < 5; c++)
        assert_int_equal(ds.counts[c].count[SPLIT_VAL], n_val[c]);
    assert_int_equal(ds.report.total[SPLIT_TRAIN], 19);
    assert_int_equal(ds.report.total[SPLIT_VAL], 4);
    check_split(&ds, 0.2, 7);
    /* items: train before val, by label then path within each */
    for (int i = 1; i < ds.n_items; i++) {
        const DatasetItem *p = &ds.items[i - 1], *q = &ds.items[i];
        int order = p->split != q->split   ? p->split - q->split
                    : p->label != q->label ? p->label - q->label
                                           : strcmp(p->path, q->path);
        assert_true(order < 0);
    }

    /* the same seed again: the same split */
    Dataset again;
    scan_ok(&again, root, &o);
    assert_int_equal(again.n_items, ds.n_items);
    for (int i = 0; i < ds.n_items; i++) {
        assert_string_equal(again.items[i].path, ds.items[i].path);
        assert_int_equal(again.items[i].split, ds.items[i].split);
    }
    dataset_free(&again);

    /* another seed: the same counts, another choice */
    o.seed = 8;
    Dataset other;
    scan_ok(&other, root, &o);
    check_split(&other, 0.2, 8);
    int differ = 0;
    for (int i = 0; i < ds.n_items; i++)
        differ += strcmp(other.items[i].path, ds.items[i].path) != 0;
    assert_true(differ > 0);
    dataset_free(&other);
    dataset_free(&ds);
}

/* A large fraction still leaves one image of each class in train; 0 puts none in val. */
static void test_split_extremes(void **state)
{
    (void)state;
    const char *root = split_fixture();
    DatasetOptions o = opts();
    o.val_fraction = 0.95;
    o.seed = 3;
    Dataset ds;
    scan_ok(&ds, root, &o);
    for (int c = 0; c < 5; c++) {
        assert_int_equal(ds.counts[c].count[SPLIT_TRAIN], 1);
        assert_int_equal(ds.counts[c].count[SPLIT_VAL], split_sizes[c] - 1);
    }
    check_split(&ds, 0.95, 3);
    dataset_free(&ds);

    o.val_fraction = 0;
    scan_ok(&ds, root, &o);
    assert_int_equal(ds.report.total[SPLIT_VAL], 0);
    assert_true(ds.report.imbalance[SPLIT_VAL] == 0.0);
    assert_true(ds.report.imbalance[SPLIT_TRAIN] == 10.0);
    assert_true(ds.report.mean[SPLIT_VAL][0] == 0.0);
    dataset_free(&ds);

    o.val_fraction = 1.0;
    expect_scan_error(root, &o, "val_fraction", NULL);
    o.val_fraction = -0.1;
    expect_scan_error(root, &o, "val_fraction", NULL);
    o.val_fraction = NAN;
    expect_scan_error(root, &o, "val_fraction", NULL);
}

/* ---- the report ------------------------------------------------------------------ */

typedef struct {
    const char *rel;
    int w, h, channels;
    int split;
    const uint8_t *px;   /* NULL: pattern(seed) */
    int seed;
} Spec;

static void test_report_fields(void **state)
{
    (void)state;
    const char *root = fixture("report");
    /* a1 and its copy share pixels; a3 has the same 18 bytes as 3x2 instead of 2x3 */
    static const uint8_t p1[18] = {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110,
                                   120, 130, 140, 150, 160, 255};
    static const Spec spec[] = {
        {"train/a/a1.png", 2, 3, 3, SPLIT_TRAIN, p1, 0},
        {"train/a/a2.png", 4, 1, 1, SPLIT_TRAIN, NULL, 1},    /* gray */
        {"train/a/a5.png", 5, 2, 3, SPLIT_TRAIN, NULL, 2},
        {"train/b/b1.png", 3, 3, 4, SPLIT_TRAIN, NULL, 3},    /* RGBA */
        {"train/b/b3.png", 6, 4, 3, SPLIT_TRAIN, NULL, 4},
        {"val/a/a1dup.png", 2, 3, 3, SPLIT_VAL, p1, 0},
        {"val/a/a3.png", 3, 2, 3, SPLIT_VAL, p1, 0},
        {"val/b/b2.png", 7, 1, 1, SPLIT_VAL, NULL, 5},        /* gray */
    };
    enum { N = sizeof spec / sizeof spec[0] };
    /* the expected channel statistics, from the pixels as the decoder returns
     * them (gray replicated, alpha dropped), two-pass */
    double sum[2][3] = {{0}}, n_px[2] = {0};
    uint8_t *rgb[N];
    for (int i = 0; i < N; i++) {
        const Spec *s = &spec[i];
        put_png(root, s->rel, s->w, s->h, s->channels, s->seed, s->px);
        rgb[i] = malloc((size_t)s->w * s->h * 3);
        assert_non_null(rgb[i]);
        for (int p = 0; p < s->w * s->h; p++)
            for (int c = 0; c < 3; c++) {
                size_t at = (size_t)p * s->channels + (s->channels == 1 ? 0 : c);
                uint8_t v = s->px ? s->px[at] : pattern(s->seed, at);
                rgb[i][p * 3 + c] = v;
                sum[s->split][c] += v;
            }
        n_px[s->split] += s->w * s->h;
    }
    double mean[2][3], sd[2][3];
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < 3; c++) {
            mean[k][c] = sum[k][c] / n_px[k];
            double ss = 0;
            for (int i = 0; i < N; i++)
                if (spec[i].split == k)
                    for (int p = 0; p < spec[i].w * spec[i].h; p++) {
                        double d = rgb[i][p * 3 + c] - mean[k][c];
                        ss += d * d;
                    }
            sd[k][c] = sqrt(ss / n_px[k]);
        }
    /* per split: the spread of the images' own means, grayscale files, and the
     * lower median of the shorter sides */
    double img_sd[2][3];
    int gray[2] = {0, 0}, side_median[2];
    for (int k = 0; k < 2; k++) {
        int sides[N], ns = 0;
        for (int i = 0; i < N; i++)
            if (spec[i].split == k) {
                sides[ns++] = spec[i].w < spec[i].h ? spec[i].w : spec[i].h;
                gray[k] += spec[i].channels <= 2;
            }
        for (int a = 0; a < ns; a++) /* insertion sort: a handful of sides */
            for (int b = a; b > 0 && sides[b - 1] > sides[b]; b--) {
                int t = sides[b]; sides[b] = sides[b - 1]; sides[b - 1] = t;
            }
        side_median[k] = sides[(ns - 1) / 2];
        for (int c = 0; c < 3; c++) {
            double m1 = 0, m2 = 0;
            for (int i = 0; i < N; i++)
                if (spec[i].split == k) {
                    double m = 0;
                    for (int p = 0; p < spec[i].w * spec[i].h; p++)
                        m += rgb[i][p * 3 + c];
                    m /= spec[i].w * spec[i].h;
                    m1 += m;
                    m2 += m * m;
                }
            m1 /= ns;
            img_sd[k][c] = sqrt(fmax(0, m2 / ns - m1 * m1));
        }
    }
    for (int i = 0; i < N; i++)
        free(rgb[i]);
    /* a hand check of one number: the val split's red channel is the red bytes
     * of p1 twice over (a1dup, and a3 which reads p1 in the same byte order) plus
     * the 7 gray values of b2 */
    double red = 2 * (0 + 30 + 60 + 90 + 120 + 150);
    for (int p = 0; p < 7; p++)
        red += pattern(5, (size_t)p);
    assert_true(fabs(mean[SPLIT_VAL][0] - red / 19) < 1e-12);

    Dataset ds;
    DatasetOptions o = opts();
    scan_ok(&ds, root, &o);
    const DatasetReport *r = &ds.report;
    assert_int_equal(ds.n_items, N);
    for (int i = 0; i < N; i++) {
        assert_string_equal(rel_path(&ds, i), spec[i].rel);
        assert_int_equal(ds.items[i].width, spec[i].w);
        assert_int_equal(ds.items[i].height, spec[i].h);
    }
    assert_int_equal(r->total[SPLIT_TRAIN], 5);
    assert_int_equal(r->total[SPLIT_VAL], 3);
    assert_true(r->imbalance[SPLIT_TRAIN] == 1.5);   /* a 3, b 2 */
    assert_true(r->imbalance[SPLIT_VAL] == 2.0);     /* a 2, b 1 */
    /* widths 2 4 5 3 6 2 3 7 -> 2 2 3 3 4 5 6 7: lower median 3 (the upper is 4) */
    assert_int_equal(r->width_min, 2);
    assert_int_equal(r->width_median, 3);
    assert_int_equal(r->width_max, 7);
    /* heights 3 1 2 3 4 3 2 1 -> 1 1 2 2 3 3 3 4: lower median 2 (the upper is 3) */
    assert_int_equal(r->height_min, 1);
    assert_int_equal(r->height_median, 2);
    assert_int_equal(r->height_max, 4);
    assert_int_equal(r->n_gray, 2);
    assert_int_equal(r->n_alpha, 1);
    /* a1dup duplicates a1; a3 holds the same bytes at another size: not a duplicate */
    assert_int_equal(r->n_cross_duplicates, 1);
    assert_int_equal(ds.n_duplicates, 1);
    assert_int_equal(ds.duplicates[0][0], 0);
    assert_int_equal(ds.duplicates[0][1], 5);
    assert_true(ds.items[0].hash == ds.items[5].hash);
    assert_true(ds.items[0].hash != ds.items[6].hash);
    assert_int_equal(r->n_problems, 0);
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < 3; c++) {
            print_message("  split %d channel %d: mean %.6f (want %.6f) std %.6f (want %.6f)\n",
                          k, c, r->mean[k][c], mean[k][c], r->std[k][c], sd[k][c]);
            assert_true(fabs(r->mean[k][c] - mean[k][c]) < 1e-9);
            assert_true(fabs(r->std[k][c] - sd[k][c]) < 1e-9);
            assert_true(fabs(r->image_mean_std[k][c] - img_sd[k][c]) < 1e-9);
        }
    for (int k = 0; k < 2; k++) {
        assert_int_equal(r->gray[k], gray[k]);
        assert_int_equal(r->side_median[k], side_median[k]);
    }
    assert_int_equal(r->gray[SPLIT_TRAIN] + r->gray[SPLIT_VAL], r->n_gray);
    dataset_free(&ds);
}

/* The lower median of an odd count is the middle; one image gives min = max. */
static void test_report_single_image(void **state)
{
    (void)state;
    const char *root = fixture("single");
    static const uint8_t px[4 * 3] = {10, 20, 30, 10, 20, 30, 50, 60, 70, 50, 60, 70};
    put_png(root, "only/x.png", 2, 2, 3, 0, px);
    Dataset ds;
    DatasetOptions o = opts();
    scan_ok(&ds, root, &o);
    const DatasetReport *r = &ds.report;
    assert_int_equal(ds.n_items, 1);
    assert_int_equal(r->total[SPLIT_TRAIN], 1);   /* the one image stays in train */
    assert_int_equal(r->total[SPLIT_VAL], 0);
    assert_int_equal(r->width_min, 2);
    assert_int_equal(r->width_median, 2);
    assert_int_equal(r->height_max, 2);
    assert_true(r->imbalance[SPLIT_TRAIN] == 1.0);
    assert_true(r->imbalance[SPLIT_VAL] == 0.0);
    assert_true(r->image_mean_std[SPLIT_TRAIN][0] == 0.0); /* one image: no spread */
    assert_int_equal(r->side_median[SPLIT_TRAIN], 2);
    assert_int_equal(r->gray[SPLIT_TRAIN], 0);
    /* red 10,10,50,50: mean 30, std 20; green mean 40; blue mean 50 */
    assert_true(fabs(r->mean[SPLIT_TRAIN][0] - 30) < 1e-12);
    assert_true(fabs(r->mean[SPLIT_TRAIN][1] - 40) < 1e-12);
    assert_true(fabs(r->mean[SPLIT_TRAIN][2] - 50) < 1e-12);
    for (int c = 0; c < 3; c++)
        assert_true(fabs(r->std[SPLIT_TRAIN][c] - 20) < 1e-12);
    assert_int_equal(r->n_cross_duplicates, 0);
    assert_int_equal(ds.n_duplicates, 0);
    assert_null(ds.duplicates);
    dataset_free(&ds);
}

/* ---- bad files ------------------------------------------------------------------- */

/* Appends a PNG chunk (length, type, data, CRC) at out; returns its size. */
static size_t png_chunk(uint8_t *out, const char *type, const uint8_t *data, uint32_t len)
{
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(len >> (24 - 8 * i));
    memcpy(out + 4, type, 4);
    if (len)
        memcpy(out + 8, data, len);
    uint32_t crc = (uint32_t)crc32(0, out + 4, 4 + len);
    for (int i = 0; i < 4; i++)
        out[8 + len + i] = (uint8_t)(crc >> (24 - 8 * i));
    return 12 + len;
}

/* A PNG that announces w x h RGB in its IHDR and carries a few bytes of IDAT:
 * enough for a decoder to read the header, far too little for the pixels. */
static size_t png_bomb(uint8_t *out, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(out, sig, 8);
    uint8_t ihdr[13];
    for (int i = 0; i < 4; i++) {
        ihdr[i] = (uint8_t)(w >> (24 - 8 * i));
        ihdr[4 + i] = (uint8_t)(h >> (24 - 8 * i));
    }
    ihdr[8] = 8, ihdr[9] = 2, ihdr[10] = 0, ihdr[11] = 0, ihdr[12] = 0;
    static const uint8_t idat[8] = {0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00};
    size_t n = 8;
    n += png_chunk(out + n, "IHDR", ihdr, 13);
    n += png_chunk(out + n, "IDAT", idat, 8);
    n += png_chunk(out + n, "IEND", NULL, 0);
    return n;
}

static void read_file(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    *data = malloc((size_t)n);
    assert_non_null(*data);
    assert_int_equal(fread(*data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
}

static void test_bad_files_skipped(void **state)
{
    (void)state;
    const char *root = fixture("bad_files");
    put_png(root, "a/good1.png", 8, 8, 3, 1, NULL);
    put_png(root, "a/good2.png", 8, 8, 3, 2, NULL);
    put_png(root, "b/good3.png", 8, 8, 3, 3, NULL);
    put_bytes(root, "a/zero.png", "", 0);
    uint8_t *png;
    size_t len;
    read_file(join(root, "a/good1.png"), &png, &len);
    put_bytes(root, "a/truncated.png", png, len / 2);
    free(png);
    put_bytes(root, "b/text.png", "hello, this is text\n", 20);
    uint8_t hdr[128];
    size_t n = png_bomb(hdr, 10000, 10000);   /* 100 M pixels > the 50 M default */
    put_bytes(root, "b/bomb.png", hdr, n);
    put_link("nowhere.png", root, "b/dangling.png");
    /* a FIFO would block a reader forever: it must not be opened */
    assert_int_equal(mkfifo(join(root, "b/fifo.png"), 0644), 0);
    Dataset ds;
    DatasetOptions o = opts();
    o.val_fraction = 0;
    scan_ok(&ds, root, &o);
    assert_int_equal(ds.n_items, 3);
    assert_int_equal(ds.report.total[SPLIT_TRAIN], 3);
    /* sorted by path */
    static const struct {
        const char *rel, *reason;
    } want[] = {
        {"a/truncated.png", "PNG"},
        {"a/zero.png", "empty file"},
        {"b/bomb.png", "over the limit"},
        {"b/dangling.png", "broken symlink"},
        {"b/fifo.png", "not a regular file"},
        {"b/text.png", "not a PNG or JPEG"},
    };
    assert_int_equal(ds.n_problems, 6);
    assert_int_equal(ds.report.n_problems, 6);
    for (int i = 0; i < 6; i++) {
        print_message("  problem: %s: %s\n", ds.problems[i].path, ds.problems[i].reason);
        assert_string_equal(ds.problems[i].path, join(ds.root, want[i].rel));
        assert_non_null(strstr(ds.problems[i].reason, want[i].reason));
        /* the path is not repeated in the reason */
        assert_null(strstr(ds.problems[i].reason, ds.root));
    }
    dataset_free(&ds);

    /* a small limit skips the good 8x8 images of b, leaving b with none */
    o.max_pixels = 63;
    expect_scan_error(root, &o, "class 'a' has no usable image", "4 files skipped",
                      "over the limit", NULL);
}

/* ---- errors ---------------------------------------------------------------------- */

static void test_error_missing_root(void **state)
{
    (void)state;
    DatasetOptions o = opts();
    expect_scan_error(testutil_tmp_path("no/such/dir"), &o, "does not exist", "no/such/dir",
                      NULL);
    expect_scan_error("", &o, "no data root", NULL);
}

static void test_error_root_is_file(void **state)
{
    (void)state;
    const char *root = fixture("root_file");
    put_bytes(root, "file.png", "x", 1);
    DatasetOptions o = opts();
    expect_scan_error(join(root, "file.png"), &o, "is not a folder", NULL);
}

static void test_error_class_with_only_bad_files(void **state)
{
    (void)state;
    const char *root = fixture("only_bad");
    put_png(root, "cat/ok.png", 2, 2, 3, 1, NULL);
    put_bytes(root, "dog/a.png", "", 0);
    put_bytes(root, "dog/b.jpg", "GIF89a", 6);
    put_bytes(root, "dog/c.png", "text", 4);
    DatasetOptions o = opts();
    expect_scan_error(root, &o, "class 'dog' has no usable image", "3 files skipped",
                      "dog/a.png: empty file", "dog/b.jpg", NULL);
    /* an empty class folder, in the split layout */
    const char *split = fixture("only_bad_split");
    put_png(split, "train/cat/x.png", 2, 2, 3, 1, NULL);
    put_png(split, "train/dog/x.png", 2, 2, 3, 2, NULL);
    put_png(split, "val/cat/x.png", 2, 2, 3, 3, NULL);
    make_dirs(join(split, "val/dog"));
    expect_scan_error(split, &o, "class 'dog' in val/ has no usable image (no files)", NULL);
}

static void test_error_empty_dataset(void **state)
{
    (void)state;
    DatasetOptions o = opts();
    const char *root = fixture("empty");
    expect_scan_error(root, &o, "is empty", "no class folder", NULL);
    /* images straight in the root, not in class folders */
    put_png(root, "x.png", 2, 2, 3, 1, NULL);
    put_png(root, ".hidden/y.png", 2, 2, 3, 1, NULL);
    expect_scan_error(root, &o, "is empty", "1 file lies", NULL);
    const char *split = fixture("empty_split");
    make_dirs(join(split, "train"));
    make_dirs(join(split, "val"));
    expect_scan_error(split, &o, "is empty", "/train", NULL);
}

static void test_error_layout(void **state)
{
    (void)state;
    DatasetOptions o = opts();
    const char *root = fixture("train_only");
    put_png(root, "train/cat/x.png", 2, 2, 3, 1, NULL);
    expect_scan_error(root, &o, "train/", "no val/ or validation/", NULL);
    put_png(root, "val/cat/x.png", 2, 2, 3, 2, NULL);
    put_png(root, "validation/cat/x.png", 2, 2, 3, 3, NULL);
    expect_scan_error(root, &o, "both val/ and validation/", NULL);
}

static void test_error_class_mismatch(void **state)
{
    (void)state;
    DatasetOptions o = opts();
    const char *root = fixture("mismatch");
    put_png(root, "train/cat/x.png", 2, 2, 3, 1, NULL);
    put_png(root, "train/dog/x.png", 2, 2, 3, 2, NULL);
    put_png(root, "val/cat/x.png", 2, 2, 3, 3, NULL);
    expect_scan_error(root, &o, "class 'dog' is in train/ but not in val/", NULL);
    put_png(root, "val/dog/x.png", 2, 2, 3, 4, NULL);
    put_png(root, "val/emu/x.png", 2, 2, 3, 5, NULL);
    expect_scan_error(root, &o, "class 'emu' is in val/ but not in train/", NULL);
}

static void test_error_outside_allowed_root(void **state)
{
    (void)state;
    const char *allowed = fixture("allowed");
    put_png(allowed, "data/cat/x.png", 2, 2, 3, 1, NULL);
    const char *other = fixture("allowed_other");   /* shares the prefix "allowed" */
    put_png(other, "cat/x.png", 2, 2, 3, 2, NULL);
    DatasetOptions o = opts();
    char allowed_copy[4096];
    snprintf(allowed_copy, sizeof allowed_copy, "%s", allowed);
    o.allowed_root = allowed_copy;

    Dataset ds;
    scan_ok(&ds, join(allowed_copy, "data"), &o);
    assert_int_equal(ds.n_items, 1);
    dataset_free(&ds);
    scan_ok(&ds, allowed_copy, &o);   /* the allowed root itself: a class 'data' */
    dataset_free(&ds);

    expect_scan_error(other, &o, "is outside the allowed data root", NULL);
    expect_scan_error(join(allowed_copy, "data/../../allowed_other"), &o,
                      "is outside the allowed data root", NULL);
    expect_scan_error("/etc", &o, "is outside the allowed data root", NULL);
    /* a missing path outside gets the same answer as an existing one */
    expect_scan_error("/no/such/place", &o, "is outside the allowed data root", NULL);
    expect_scan_error(join(allowed_copy, "missing"), &o, "does not exist", NULL);
    /* a link inside the allowed root that leads out of it */
    put_link(other, allowed_copy, "escape");
    expect_scan_error(join(allowed_copy, "escape"), &o, "is outside the allowed data root",
                      NULL);
    o.allowed_root = testutil_tmp_path("no_such_allowed_root");
    expect_scan_error(join(allowed_copy, "data"), &o, "allowed data root", NULL);
}

static void test_error_symlink_escape(void **state)
{
    (void)state;
    DatasetOptions o = opts();
    char outside[4096];
    snprintf(outside, sizeof outside, "%s", fixture("outside"));
    put_png(outside, "secret.png", 2, 2, 3, 9, NULL);

    const char *r1 = fixture("escape_etc");
    put_png(r1, "cat/x.png", 2, 2, 3, 1, NULL);
    put_link("/etc", r1, "cat/etc");
    expect_scan_error(r1, &o, "symlink", "cat/etc", "resolves outside the data root", NULL);

    const char *r2 = fixture("escape_file");
    put_png(r2, "cat/x.png", 2, 2, 3, 1, NULL);
    put_link(join(outside, "secret.png"), r2, "cat/secret.png");
    expect_scan_error(r2, &o, "cat/secret.png", "resolves outside the data root", NULL);

    const char *r3 = fixture("escape_class");
    put_png(r3, "cat/x.png", 2, 2, 3, 1, NULL);
    put_link("../outside", r3, "dog");   /* a relative link as a class folder */
    expect_scan_error(r3, &o, "dog", "resolves outside the data root", NULL);

    const char *r4 = fixture("escape_train");
    put_png(r4, "val/cat/x.png", 2, 2, 3, 1, NULL);
    put_link(outside, r4, "train");
    expect_scan_error(r4, &o, "train", "resolves outside the data root", NULL);
}

/* Links that stay inside the root are followed; a folder reached twice is walked
 * once, and a loop ends. */
static void test_symlinks_inside_and_loops(void **state)
{
    (void)state;
    const char *root = fixture("links");
    put_png(root, "cat/x.png", 2, 2, 3, 1, NULL);
    put_png(root, "shared/s.png", 2, 2, 3, 2, NULL);
    put_png(root, "dog/y.png", 2, 2, 3, 3, NULL);
    put_link("../shared/s.png", root, "cat/link.png");   /* file link inside */
    put_link("../shared", root, "dog/more");             /* folder link inside */
    put_png(root, "cat/sub/z.png", 2, 2, 3, 4, NULL);
    put_link("..", root, "cat/sub/up");                  /* back to cat/: a loop */
    put_link(".", root, "dog/self");                     /* dog/ again */
    put_link("self2", root, "dog/self2");                /* a link to itself: broken */
    Dataset ds;
    DatasetOptions o = opts();
    o.val_fraction = 0;
    alarm(60);   /* a walk that loops ends the test binary instead of hanging it */
    scan_ok(&ds, root, &o);
    alarm(0);
    assert_int_equal(ds.n_classes, 3);
    assert_string_equal(ds.classes[0], "cat");
    assert_string_equal(ds.classes[1], "dog");
    assert_string_equal(ds.classes[2], "shared");
    assert_int_equal(ds.n_items, 6);
    assert_string_equal(rel_path(&ds, 0), "cat/link.png");
    assert_string_equal(rel_path(&ds, 1), "cat/sub/z.png");
    assert_string_equal(rel_path(&ds, 2), "cat/x.png");
    assert_string_equal(rel_path(&ds, 3), "dog/more/s.png");
    assert_string_equal(rel_path(&ds, 4), "dog/y.png");
    assert_string_equal(rel_path(&ds, 5), "shared/s.png");
    assert_int_equal(ds.n_problems, 3);
    assert_string_equal(ds.problems[0].path, join(ds.root, "cat/sub/up"));
    assert_non_null(strstr(ds.problems[0].reason, "already walked"));
    assert_string_equal(ds.problems[1].path, join(ds.root, "dog/self"));
    assert_non_null(strstr(ds.problems[1].reason, "already walked"));
    assert_string_equal(ds.problems[2].path, join(ds.root, "dog/self2"));
    assert_non_null(strstr(ds.problems[2].reason, "broken symlink"));
    dataset_free(&ds);
}

/* ---- threads, options, free ------------------------------------------------------ */

static void test_threads_agree(void **state)
{
    (void)state;
    const char *root = fixture("threads");
    for (int i = 0; i < 40; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "%c/img%02d.png", 'a' + i % 3, i);
        put_png(root, rel, 5 + i % 7, 3 + i % 5, i % 2 ? 3 : 1, i, NULL);
    }
    put_png(root, "c/dup.png", 5, 3, 1, 0, NULL);   /* the same pixels as a/img00.png */
    put_bytes(root, "b/bad.png", "nope", 4);
    Dataset ds[3];
    int threads[3] = {1, 2, 0};
    for (int t = 0; t < 3; t++) {
        DatasetOptions o = opts();
        o.threads = threads[t];
        o.seed = 11;
        o.val_fraction = 0.3;
        scan_ok(&ds[t], root, &o);
    }
    for (int t = 1; t < 3; t++) {
        assert_int_equal(ds[t].n_items, ds[0].n_items);
        for (int i = 0; i < ds[0].n_items; i++) {
            const DatasetItem *a = &ds[0].items[i], *b = &ds[t].items[i];
            assert_string_equal(a->path, b->path);
            assert_int_equal(a->label, b->label);
            assert_int_equal(a->split, b->split);
            assert_int_equal(a->width, b->width);
            assert_int_equal(a->height, b->height);
            assert_true(a->hash == b->hash);
        }
        assert_int_equal(ds[t].n_problems, ds[0].n_problems);
        for (int i = 0; i < ds[0].n_problems; i++) {
            assert_string_equal(ds[t].problems[i].path, ds[0].problems[i].path);
            assert_string_equal(ds[t].problems[i].reason, ds[0].problems[i].reason);
        }
        assert_int_equal(ds[t].n_duplicates, ds[0].n_duplicates);
        if (ds[0].n_duplicates)
            assert_memory_equal(ds[t].duplicates, ds[0].duplicates,
                                sizeof ds[0].duplicates[0] * (size_t)ds[0].n_duplicates);
        /* the same sums in the same order: bit-identical doubles */
        assert_memory_equal(&ds[t].report, &ds[0].report, sizeof ds[0].report);
    }
    assert_int_equal(ds[0].n_items, 41);
    assert_int_equal(ds[0].n_problems, 1);
    dataset_free(&ds[0]);
    dataset_free(&ds[1]);
    dataset_free(&ds[2]);
}

static void test_defaults_and_free(void **state)
{
    (void)state;
    DatasetOptions o = dataset_default_options();
    assert_null(o.allowed_root);
    assert_true(o.val_fraction == 0.2);
    assert_int_equal(o.seed, 0);
    assert_int_equal(o.max_pixels, 50000000);
    assert_int_equal(o.threads, 0);
    Dataset ds;
    memset(&ds, 0, sizeof ds);
    dataset_free(&ds);
    dataset_free(&ds);
    dataset_free(NULL);
    assert_int_equal(dataset_class_index(&ds, "x"), -1);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_layout_val),
        cmocka_unit_test(test_split_layout_validation),
        cmocka_unit_test(test_relative_root),
        cmocka_unit_test(test_class_order_is_byte_order),
        cmocka_unit_test(test_nested_and_hidden),
        cmocka_unit_test(test_stratified_split),
        cmocka_unit_test(test_split_extremes),
        cmocka_unit_test(test_report_fields),
        cmocka_unit_test(test_report_single_image),
        cmocka_unit_test(test_bad_files_skipped),
        cmocka_unit_test(test_error_missing_root),
        cmocka_unit_test(test_error_root_is_file),
        cmocka_unit_test(test_error_class_with_only_bad_files),
        cmocka_unit_test(test_error_empty_dataset),
        cmocka_unit_test(test_error_layout),
        cmocka_unit_test(test_error_class_mismatch),
        cmocka_unit_test(test_error_outside_allowed_root),
        cmocka_unit_test(test_error_symlink_escape),
        cmocka_unit_test(test_symlinks_inside_and_loops),
        cmocka_unit_test(test_threads_agree),
        cmocka_unit_test(test_defaults_and_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
