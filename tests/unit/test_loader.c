/*
 * test_loader.c: the threaded loader hands out exactly what the one
 * preprocessing path computes, in a reproducible order, whatever the threads
 * and the cache; it decodes each image once when the cache holds the set.
 */
#include "testutil.h"

#include <math.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "image.h"
#include "loader.h"
#include "preprocess.h"

#define CLASSES 3
#define PER_CLASS 7

static char root[4096];
static Dataset ds;

/* 3 classes x 7 RGB images of varied sizes with distinct content. */
static int setup(void **state)
{
    (void)state;
    Error err;
    snprintf(root, sizeof root, "%s", testutil_tmp_path("loader-set"));
    mkdir(root, 0755);
    static const char *names[CLASSES] = {"ant", "bee", "cat"};
    for (int c = 0; c < CLASSES; c++) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/%s", root, names[c]);
        mkdir(dir, 0755);
        for (int i = 0; i < PER_CLASS; i++) {
            int w = 20 + 3 * i, h = 16 + 2 * c;
            uint8_t *px = malloc((size_t)w * h * 3);
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    uint8_t *p = px + ((size_t)y * w + x) * 3;
                    p[0] = (uint8_t)(x * 7 + i * 30);
                    p[1] = (uint8_t)(y * 11 + c * 80);
                    p[2] = (uint8_t)((x + y) * 5 + i);
                }
            char path[4300];
            snprintf(path, sizeof path, "%s/img%d.png", dir, i);
            if (image_write_png(path, px, w, h, 3, &err))
                fail_msg("%s", err.msg);
            free(px);
        }
    }
    DatasetOptions o = dataset_default_options();
    o.val_fraction = 2.0 / 7.0;
    o.seed = 1;
    if (dataset_scan(&ds, root, &o, &err))
        fail_msg("%s", err.msg);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dataset_free(&ds);
    return 0;
}

static Preprocess prep(int augment)
{
    Preprocess p;
    memset(&p, 0, sizeof p);
    p.size = 32;
    p.resize = RESIZE_CROP;
    Error err;
    if (preprocess_norm_from_name(&p.norm, "torch", &err))
        fail_msg("%s", err.msg);
    if (augment) {
        p.augment.hflip = 1;
        p.augment.crop_min = 0.5f;
        p.augment.crop_max = 1.0f;
    }
    return p;
}

static Loader *make(int split, int batch, int shuffle, int augment, uint64_t seed, size_t cache,
                    int threads)
{
    Error err;
    LoaderOptions o = loader_default_options();
    o.batch = batch;
    o.shuffle = shuffle;
    o.augment = augment;
    o.seed = seed;
    o.cache_bytes = cache;
    o.threads = threads;
    Preprocess p = prep(augment);
    Loader *l = NULL;
    if (loader_create(&l, &ds, split, &p, &o, &err))
        fail_msg("%s", err.msg);
    return l;
}

/* One epoch into contiguous arrays: x (n x 32x32x3) and item order. */
static int run_epoch(Loader *l, int epoch, float *x, int *items, int *labels)
{
    Error err;
    Batch b;
    int got = 0, rc;
    if (loader_start_epoch(l, epoch, &err))
        fail_msg("%s", err.msg);
    while ((rc = loader_next(l, &b, &err)) == 1) {
        memcpy(x + (size_t)got * 32 * 32 * 3, b.x, (size_t)b.n * 32 * 32 * 3 * sizeof(float));
        memcpy(items + got, b.items, (size_t)b.n * sizeof(int));
        if (labels) memcpy(labels + got, b.labels, (size_t)b.n * sizeof(int));
        got += b.n;
    }
    if (rc < 0)
        fail_msg("%s", err.msg);
    return got;
}

static void test_matches_the_one_preprocessing_path(void **state)
{
    (void)state;
    Loader *l = make(SPLIT_TRAIN, 4, 0, 0, 0, 0, 2);
    int n = loader_size(l);
    assert_int_equal(n, CLASSES * (PER_CLASS - 2));
    assert_int_equal(loader_batches_per_epoch(l), (n + 3) / 4);
    float *x = malloc((size_t)n * 32 * 32 * 3 * sizeof(float));
    int *items = malloc((size_t)n * sizeof(int)), *labels = malloc((size_t)n * sizeof(int));
    assert_int_equal(run_epoch(l, 0, x, items, labels), n);
    Preprocess p = prep(0);
    float *want = malloc((size_t)32 * 32 * 3 * sizeof(float));
    for (int i = 0, k = 0; i < ds.n_items; i++) {
        if (ds.items[i].split != SPLIT_TRAIN) continue;
        assert_int_equal(items[k], i); /* no shuffle: dataset order */
        assert_int_equal(labels[k], ds.items[i].label);
        Image img;
        Error err;
        if (image_load(&img, ds.items[i].path, 0, &err))
            fail_msg("%s", err.msg);
        int bw, bh;
        preprocess_base_size(&p, img.width, img.height, &bw, &bh);
        uint8_t *scratch = malloc((size_t)bw * bh * 3);
        preprocess_image(want, img.rgb, img.width, img.height, &p, NULL, scratch);
        assert_memory_equal(x + (size_t)k * 32 * 32 * 3, want, (size_t)32 * 32 * 3 * sizeof(float));
        free(scratch);
        image_free(&img);
        k++;
    }
    free(want); free(x); free(items); free(labels);
    loader_free(l);
}

/* Same seed: same batches, whatever threads or cache; epochs differ. */
static void test_reproducible(void **state)
{
    (void)state;
    size_t per = (size_t)32 * 32 * 3;
    int n = CLASSES * (PER_CLASS - 2);
    float *x[4];
    int *it[4];
    for (int i = 0; i < 4; i++) {
        x[i] = malloc((size_t)n * per * sizeof(float));
        it[i] = malloc((size_t)n * sizeof(int));
    }
    Loader *a = make(SPLIT_TRAIN, 4, 1, 1, 42, 1 << 20, 1);
    Loader *b = make(SPLIT_TRAIN, 4, 1, 1, 42, 0, 2);
    Loader *c = make(SPLIT_TRAIN, 4, 1, 1, 43, 1 << 20, 2);
    for (int epoch = 0; epoch < 2; epoch++) {
        run_epoch(a, epoch, x[0], it[0], NULL);
        run_epoch(b, epoch, x[1], it[1], NULL);
        assert_memory_equal(it[0], it[1], (size_t)n * sizeof(int));
        assert_memory_equal(x[0], x[1], (size_t)n * per * sizeof(float));
        if (epoch == 0) {
            memcpy(x[2], x[0], (size_t)n * per * sizeof(float));
            memcpy(it[2], it[0], (size_t)n * sizeof(int));
        }
    }
    /* epoch 1 differs from epoch 0 in order and augmentation */
    assert_true(memcmp(it[2], it[0], (size_t)n * sizeof(int)) != 0);
    run_epoch(c, 0, x[3], it[3], NULL);
    assert_true(memcmp(it[3], it[2], (size_t)n * sizeof(int)) != 0 ||
                memcmp(x[3], x[2], (size_t)n * per * sizeof(float)) != 0);
    /* every item exactly once per epoch */
    int seen[CLASSES * PER_CLASS] = {0};
    for (int i = 0; i < n; i++) seen[it[0][i]]++;
    for (int i = 0; i < ds.n_items; i++)
        assert_int_equal(seen[i], ds.items[i].split == SPLIT_TRAIN);
    loader_free(a); loader_free(b); loader_free(c);
    for (int i = 0; i < 4; i++) { free(x[i]); free(it[i]); }
}

static void test_cache_avoids_decoding(void **state)
{
    (void)state;
    int n = CLASSES * (PER_CLASS - 2);
    float *x = malloc((size_t)n * 32 * 32 * 3 * sizeof(float));
    int *items = malloc((size_t)n * sizeof(int));
    Loader *l = make(SPLIT_TRAIN, 5, 1, 0, 3, 64 << 20, 2);
    for (int e = 0; e < 3; e++) run_epoch(l, e, x, items, NULL);
    LoaderStats s = loader_stats(l);
    assert_int_equal(s.images, 3 * n);
    assert_int_equal(s.decoded, n);
    assert_int_equal(s.cached_images, n);
    loader_free(l);
    l = make(SPLIT_TRAIN, 5, 1, 0, 3, 0, 2);
    for (int e = 0; e < 2; e++) run_epoch(l, e, x, items, NULL);
    s = loader_stats(l);
    assert_int_equal(s.decoded, 2 * n);
    assert_int_equal(s.cached_images, 0);
    loader_free(l);
    free(x); free(items);
}

static void test_input_stats_and_val_split(void **state)
{
    (void)state;
    Loader *l = make(SPLIT_VAL, 2, 0, 0, 0, 0, 1);
    int n = loader_size(l);
    assert_int_equal(n, CLASSES * 2);
    float *x = malloc((size_t)n * 32 * 32 * 3 * sizeof(float));
    int *items = malloc((size_t)n * sizeof(int));
    run_epoch(l, 0, x, items, NULL);
    /* stats over the first 4 batches = the first 8 images, here all 6 */
    const InputStats *st = loader_input_stats(l);
    assert_int_equal(st->count, (int64_t)n * 32 * 32);
    double mean[3], std[3];
    input_stats_get(st, mean, std);
    for (int c = 0; c < 3; c++) {
        double s = 0;
        for (int64_t i = 0; i < (int64_t)n * 32 * 32; i++) s += x[i * 3 + c];
        assert_true(fabs(mean[c] - s / ((double)n * 32 * 32)) < 1e-6);
        assert_true(std[c] > 0.1);
    }
    free(x); free(items);
    loader_free(l);
}

static void test_restart_mid_epoch_and_missing_file(void **state)
{
    (void)state;
    Error err;
    Batch b;
    Loader *l = make(SPLIT_TRAIN, 2, 1, 0, 9, 0, 2);
    assert_int_equal(loader_next(l, &b, &err), -1); /* no epoch started */
    assert_int_equal(loader_start_epoch(l, 0, &err), 0);
    assert_int_equal(loader_next(l, &b, &err), 1);
    assert_int_equal(loader_start_epoch(l, 1, &err), 0); /* abandon epoch 0 */
    int total = 0, rc;
    while ((rc = loader_next(l, &b, &err)) == 1) total += b.n;
    assert_int_equal(rc, 0);
    assert_int_equal(total, loader_size(l));
    /* a file removed after the scan fails the epoch with its path */
    const char *victim = NULL;
    for (int i = 0; i < ds.n_items; i++)
        if (ds.items[i].split == SPLIT_TRAIN) { victim = ds.items[i].path; break; }
    char saved[4400];
    snprintf(saved, sizeof saved, "%s.moved", victim);
    assert_int_equal(rename(victim, saved), 0);
    assert_int_equal(loader_start_epoch(l, 2, &err), 0);
    while ((rc = loader_next(l, &b, &err)) == 1) {}
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err.msg, victim));
    assert_int_equal(rename(saved, victim), 0);
    loader_free(l);
}

/* A real set, not written here: Debian's Fashion-MNIST through the tool, made
 * imbalanced on purpose; scanned, reported and loaded. */
static void test_fashion_mnist_real_set(void **state)
{
    (void)state;
    const char *build = getenv("RESNETD_BUILD_DIR");
    char tool[4096], out[4400], cmd[9000];
    snprintf(tool, sizeof tool, "%s/tools/fmnist_to_png", build && *build ? build : "build");
    snprintf(out, sizeof out, "%s", testutil_tmp_path("fmnist"));
    snprintf(cmd, sizeof cmd, "'%s' '%s' --counts 0:30,1:10,7:20 --size 32 "
             "> /dev/null 2>&1", tool, out);
    if (system(cmd) != 0)
        fail_msg("%s failed (build it with make)", cmd);
    Dataset fm;
    Error err;
    DatasetOptions o = dataset_default_options();
    o.val_fraction = 0.2;
    o.seed = 5;
    if (dataset_scan(&fm, out, &o, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(fm.n_classes, 3);
    assert_string_equal(fm.classes[0], "sneaker");     /* byte order, not label order */
    assert_string_equal(fm.classes[1], "t-shirt_top");
    assert_string_equal(fm.classes[2], "trouser");
    assert_int_equal(fm.counts[1].count[SPLIT_TRAIN] + fm.counts[1].count[SPLIT_VAL], 30);
    assert_int_equal(fm.counts[1].count[SPLIT_VAL], 6);
    assert_int_equal(fm.counts[2].count[SPLIT_VAL], 2);
    assert_int_equal(fm.report.total[SPLIT_TRAIN], 48);
    assert_int_equal(fm.report.total[SPLIT_VAL], 12);
    assert_true(fabs(fm.report.imbalance[SPLIT_TRAIN] - 24.0 / 8.0) < 1e-9);
    assert_int_equal(fm.report.n_gray, 60);
    assert_int_equal(fm.report.n_alpha, 0);
    assert_int_equal(fm.report.width_min, 32);
    assert_int_equal(fm.report.width_max, 32);
    assert_int_equal(fm.n_problems, 0);
    /* Fashion-MNIST: dark background, gray pixels: R = G = B */
    assert_true(fm.report.mean[SPLIT_TRAIN][0] > 30 && fm.report.mean[SPLIT_TRAIN][0] < 130);
    assert_true(fabs(fm.report.mean[SPLIT_TRAIN][0] - fm.report.mean[SPLIT_TRAIN][2]) < 1e-9);

    LoaderOptions lo = loader_default_options();
    lo.batch = 16;
    lo.shuffle = 1;
    Preprocess p = prep(0);
    Loader *l;
    if (loader_create(&l, &fm, SPLIT_TRAIN, &p, &lo, &err))
        fail_msg("%s", err.msg);
    Batch b;
    int n = 0, per_class[3] = {0}, rc;
    loader_start_epoch(l, 0, &err);
    while ((rc = loader_next(l, &b, &err)) == 1)
        for (int i = 0; i < b.n; i++, n++)
            per_class[b.labels[i]]++;
    assert_int_equal(rc, 0);
    assert_int_equal(n, 48);
    assert_int_equal(per_class[0], 16);
    assert_int_equal(per_class[1], 24);
    assert_int_equal(per_class[2], 8);
    loader_free(l);
    dataset_free(&fm);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_the_one_preprocessing_path),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_cache_avoids_decoding),
        cmocka_unit_test(test_input_stats_and_val_split),
        cmocka_unit_test(test_restart_mid_epoch_and_missing_file),
        cmocka_unit_test(test_fashion_mnist_real_set),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
