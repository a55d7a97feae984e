/*
 * bench_train.c: resnetd's side of `make bench`: times ResNet50 training steps
 * (forward, loss, backward, SGD update) or inference forwards at a given batch
 * and input size, and prints one JSON object with images/s and peak memory.
 *
 *   bench_train --mode train|infer --size S --batch N [--steps K] [--warmup W]
 *               [--variant torchvision|keras] [--threads T]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "blas.h"
#include "optim.h"
#include "resnet.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    Error err;
    if (blas_select_kernel(argv, BLAS_KERNEL_ENV, &err))
        fprintf(stderr, "bench: %s\n", err.msg);
    const char *mode = "train", *variant = "torchvision";
    int size = 224, batch = 16, steps = 5, warmup = 1, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mode")) mode = argv[i + 1];
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--variant")) variant = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else { fprintf(stderr, "bench: unknown option %s\n", argv[i]); return 2; }
    }
    int nthreads = blas_set_threads(threads);
    int train = !strcmp(mode, "train");
    ResnetConfig cfg = {strcmp(variant, "keras") ? RESNET_TORCHVISION : RESNET_KERAS, 1000, 0, 0.0f};
    Resnet *m = NULL;
    if (resnet_create(&m, &cfg, &err) ||
        (train ? resnet_plan(m, batch, size, &err) : resnet_plan_inference(m, batch, size, &err))) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    resnet_init_random(m, 42);
    OptimConfig oc = optim_defaults(OPTIM_SGD);
    oc.lr = 0.01f;
    oc.momentum = 0.9f;
    Optimizer opt;
    if (train && optim_init(&opt, &oc, m, &err)) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    size_t nx = (size_t)batch * size * size * 3;
    float *x = malloc(nx * sizeof(float));
    int *labels = malloc((size_t)batch * sizeof(int));
    Rng r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < nx; i++) x[i] = rng_normal(&r);
    for (int i = 0; i < batch; i++) labels[i] = i % 1000;
    double t0 = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) t0 = now();
        if (train) {
            resnet_zero_grad(m);
            resnet_forward(m, x, batch, 1);
            resnet_loss(m, labels, NULL, 0.0f);
            resnet_backward(m);
            optim_step(&opt, m, oc.lr);
        } else {
            resnet_forward(m, x, batch, 0);
        }
    }
    double dt = now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"impl\": \"resnetd\", \"mode\": \"%s\", \"size\": %d, \"batch\": %d, \"steps\": %d, "
           "\"threads\": %d, \"blas\": \"%s\", \"images_per_s\": %.3f, \"peak_rss_mib\": %.1f}\n",
           mode, size, batch, steps, nthreads, blas_kernel_name(), steps * batch / dt,
           ru.ru_maxrss / 1024.0);
    if (train)
        optim_free(&opt);
    resnet_free(m);
    free(x);
    free(labels);
    return 0;
}
