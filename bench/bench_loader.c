/*
 * bench_loader.c: the loader's side of `make bench`. On a class-folder dataset:
 *   1. images/s decoded and preprocessed (no cache) with 1 and 2 threads;
 *   2. images/s of a cached epoch;
 *   3. one epoch of real training steps fed by the loader, and the share of
 *      that time the training thread waited for data;
 *   4. milliseconds per image to resize a 500x375 image for a 224 centre crop,
 *      and to crop and normalise it (caffe).
 * Prints one JSON object.
 *
 *   bench_loader --data DIR [--size S] [--batch N] [--train-steps K]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "dataset.h"
#include "loader.h"
#include "optim.h"
#include "preprocess.h"
#include "resnet.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int die(const char *what, const Error *err)
{
    fprintf(stderr, "bench_loader: %s: %s\n", what, err->msg);
    return 1;
}

/* Milliseconds per call of the two preprocessing stages for one 500x375 image
 * made into a 224x224 centre crop with caffe normalisation. */
static void preprocess_ms(double *resize_ms, double *finish_ms)
{
    Preprocess p;
    Error err;
    memset(&p, 0, sizeof p);
    p.size = 224;
    p.resize = RESIZE_CROP;
    preprocess_norm_from_name(&p.norm, "caffe", &err);
    const int w = 500, h = 375, reps = 50;
    uint8_t *img = malloc((size_t)w * h * 3);
    int bw, bh;
    preprocess_base_size(&p, w, h, &bw, &bh);
    uint8_t *scratch = malloc((size_t)bw * bh * 3);
    float *out = malloc((size_t)224 * 224 * 3 * sizeof(float));
    if (!img || !scratch || !out) {
        *resize_ms = *finish_ms = -1;
    } else {
        for (size_t i = 0; i < (size_t)w * h * 3; i++)
            img[i] = (uint8_t)(i * 2654435761u >> 24);
        double t0 = now();
        for (int i = 0; i < reps; i++)
            preprocess_resize(scratch, bw, bh, img, w, h);
        double t1 = now();
        for (int i = 0; i < reps; i++)
            preprocess_finish(out, scratch, bw, bh, &p, NULL);
        *resize_ms = (t1 - t0) * 1e3 / reps;
        *finish_ms = (now() - t1) * 1e3 / reps;
    }
    free(img);
    free(scratch);
    free(out);
}

/* Images/s of one epoch (the consumer only takes batches). */
static double epoch_rate(Loader *l, int epoch, Error *err)
{
    Batch b;
    int rc, n = 0;
    double t0 = now();
    if (loader_start_epoch(l, epoch, err))
        return -1;
    while ((rc = loader_next(l, &b, err)) == 1)
        n += b.n;
    return rc < 0 ? -1 : n / (now() - t0);
}

int main(int argc, char **argv)
{
    Error err;
    blas_select_kernel(argv, BLAS_KERNEL_ENV, NULL);
    const char *data = NULL;
    int size = 64, batch = 32, train_steps = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--data")) data = argv[i + 1];
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--train-steps")) train_steps = atoi(argv[i + 1]);
        else { fprintf(stderr, "bench_loader: unknown option %s\n", argv[i]); return 2; }
    }
    if (!data) {
        fprintf(stderr, "usage: bench_loader --data DIR [--size S] [--batch N] [--train-steps K]\n");
        return 2;
    }
    blas_set_threads(0);
    Dataset ds;
    DatasetOptions dopt = dataset_default_options();
    dopt.val_fraction = 0.1;
    if (dataset_scan(&ds, data, &dopt, &err))
        return die("scan", &err);
    Preprocess p;
    memset(&p, 0, sizeof p);
    p.size = size;
    p.resize = RESIZE_SQUASH;
    preprocess_norm_from_name(&p.norm, "torch", &err);
    p.augment.hflip = 1;

    double rate[3];
    for (int t = 1; t <= 2; t++) {
        LoaderOptions o = loader_default_options();
        o.batch = batch;
        o.shuffle = 1;
        o.augment = 1;
        o.cache_bytes = 0;
        o.threads = t;
        Loader *l;
        if (loader_create(&l, &ds, SPLIT_TRAIN, &p, &o, &err))
            return die("loader", &err);
        rate[t - 1] = epoch_rate(l, 0, &err);
        loader_free(l);
        if (rate[t - 1] < 0)
            return die("epoch", &err);
    }
    LoaderOptions o = loader_default_options();
    o.batch = batch;
    o.shuffle = 1;
    o.augment = 1;
    o.threads = 2;
    Loader *l;
    if (loader_create(&l, &ds, SPLIT_TRAIN, &p, &o, &err))
        return die("loader", &err);
    if (epoch_rate(l, 0, &err) < 0)
        return die("epoch", &err);
    rate[2] = epoch_rate(l, 1, &err);

    /* training steps fed by the loader (cache warm, as from epoch 2 on) */
    ResnetConfig cfg = {RESNET_TORCHVISION, ds.n_classes, 0, 0.0f};
    Resnet *m;
    if (resnet_create(&m, &cfg, &err) || resnet_plan(m, batch, size, &err))
        return die("model", &err);
    resnet_init_random(m, 1);
    OptimConfig oc = optim_defaults(OPTIM_SGD);
    oc.lr = 0.01f;
    Optimizer opt;
    if (optim_init(&opt, &oc, m, &err))
        return die("optimizer", &err);
    loader_start_epoch(l, 2, &err);
    double wait0 = loader_stats(l).wait_seconds, t0 = now();
    Batch b;
    int steps = 0, rc;
    while (steps < train_steps && (rc = loader_next(l, &b, &err)) == 1) {
        resnet_zero_grad(m);
        resnet_forward(m, b.x, b.n, 1);
        resnet_loss(m, b.labels, NULL, 0.0f);
        resnet_backward(m);
        optim_step(&opt, m, oc.lr);
        steps++;
    }
    double total = now() - t0, waited = loader_stats(l).wait_seconds - wait0;
    double resize_ms, finish_ms;
    preprocess_ms(&resize_ms, &finish_ms);
    printf("{\"images\": %d, \"size\": %d, \"batch\": %d, \"decode_images_per_s_1_thread\": %.1f, "
           "\"decode_images_per_s_2_threads\": %.1f, \"cached_images_per_s\": %.1f, "
           "\"train_steps\": %d, \"train_seconds\": %.2f, \"waited_seconds\": %.3f, "
           "\"waiting_share\": %.4f, \"preprocess_224_resize_ms\": %.3f, "
           "\"preprocess_224_crop_caffe_ms\": %.3f}\n",
           loader_size(l), size, batch, rate[0], rate[1], rate[2], steps, total, waited,
           total > 0 ? waited / total : 0.0, resize_ms, finish_ms);
    optim_free(&opt);
    resnet_free(m);
    loader_free(l);
    dataset_free(&ds);
    return 0;
}
